//! How large a gathered message may be (pure): one over RabbitMQ 4's
//! default `max_message_size` would never be taken, so it is refused
//! before it is built, with its size.

/// The largest gathered message released: RabbitMQ 4's default
/// `max_message_size` (16 MiB; 3.x allows 128 MiB). A larger one is refused
/// before it is built.
pub const MAX_GATHERED: usize = 16 * 1024 * 1024;

/// Why a gathered message of `size` bytes is not published, if it is not.
pub fn too_large(size: usize) -> Option<String> {
    const MIB: f64 = 1024.0 * 1024.0;
    (size > MAX_GATHERED).then(|| {
        format!(
            "the gathered message would be {:.1} MiB, over the {} MiB a message may have (RabbitMQ 4's max_message_size): its items are dead-lettered",
            size as f64 / MIB,
            MAX_GATHERED / (1024 * 1024)
        )
    })
}

/// The size of `value` as JSON, without building it.
pub fn json_size(value: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("gathered items are JSON");
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren::jobs::Gathered;

    #[test]
    fn a_gathered_message_over_the_limit_is_refused_with_its_size() {
        assert_eq!(too_large(MAX_GATHERED), None);
        let reason = too_large(MAX_GATHERED + 1).unwrap();
        assert!(reason.contains("16.0 MiB, over the 16 MiB"), "{reason}");
        let reason = too_large(20 * 1024 * 1024).unwrap();
        assert!(reason.contains("20.0 MiB"), "{reason}");
    }

    #[test]
    fn the_size_is_counted_without_building_the_message() {
        let gathered = Gathered {
            job: "j".into(),
            items: vec![serde_json::json!({"n": 1}), serde_json::json!("x")],
            dead_letters: Vec::new(),
        };
        assert_eq!(
            json_size(&gathered),
            serde_json::to_vec(&gathered).unwrap().len()
        );
    }
}
