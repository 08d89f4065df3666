//! A broker object that exists with other arguments than the pipeline
//! wants (RabbitMQ refuses to redeclare it): read from the broker's
//! PRECONDITION_FAILED text, and explained so that a user can act.

/// A broker object that exists with other arguments than the pipeline's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// `queue` or `exchange`.
    pub object: String,
    /// Its name.
    pub name: String,
    /// The argument that differs.
    pub argument: String,
    /// What the broker has.
    pub existing: String,
    /// What the pipeline wants.
    pub wanted: String,
    /// The virtual host.
    pub vhost: String,
}

impl Mismatch {
    /// Reads RabbitMQ's PRECONDITION_FAILED text: "inequivalent arg
    /// 'x-queue-type' for queue 'p.a' in vhost '/': received 'classic' but
    /// current is 'quorum'".
    pub fn parse(text: &str) -> Option<Mismatch> {
        let between = |text: &str, start: &str, end: &str| -> Option<String> {
            let from = text.find(start)? + start.len();
            let len = text[from..].find(end)?;
            Some(text[from..from + len].to_string())
        };
        let argument = between(text, "inequivalent arg '", "'")?;
        let (object, name) = match between(text, "for queue '", "'") {
            Some(name) => ("queue", name),
            None => ("exchange", between(text, "for exchange '", "'")?),
        };
        let vhost = between(text, "in vhost '", "'").unwrap_or_else(|| "/".into());
        let values = &text[text.find(": received ")? + ": received ".len()..];
        let (received, current) = values.split_once(" but current is ")?;
        let clean = |side: &str| -> String {
            let side = side.trim();
            if side == "none" {
                return "(not set)".into();
            }
            if side.starts_with("the value ''") || side == "''" {
                return "\"\"".into();
            }
            between(side, "the value '", "'")
                .or_else(|| {
                    side.strip_prefix('\'')
                        .and_then(|s| s.strip_suffix('\''))
                        .map(str::to_string)
                })
                .unwrap_or_else(|| side.to_string())
        };
        Some(Mismatch {
            object: object.into(),
            name,
            argument,
            existing: clean(current),
            wanted: clean(received),
            vhost,
        })
    }

    /// What to tell the user.
    pub fn describe(&self) -> String {
        let field = match self.argument.as_str() {
            "x-queue-type" => " (queue.type in the pipeline file)",
            "x-delivery-limit" => " (queue.delivery_limit in the pipeline file)",
            _ => "",
        };
        let vhost = if self.vhost == "/" {
            String::new()
        } else {
            format!(" -p {}", self.vhost)
        };
        let delete = if self.object == "queue" {
            format!("rabbitmqctl delete_queue{vhost} {}", self.name)
        } else {
            format!("rabbitmqadmin delete exchange name={}", self.name)
        };
        format!(
            "{} `{}` already exists with {} = {}, but the pipeline wants {}{field}. \
             RabbitMQ cannot change the arguments of an existing {}: either set the pipeline back to {}, \
             or move its messages elsewhere, delete it (`{delete}`) and run `warren declare` again.",
            self.object,
            self.name,
            self.argument,
            self.existing,
            self.wanted,
            self.object,
            self.existing
        )
    }

    /// All mismatches, one per line.
    pub fn describe_all(all: &[Mismatch]) -> String {
        all.iter()
            .map(Mismatch::describe)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rabbitmq_precondition_texts() {
        let m = Mismatch::parse("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'p.a' in vhost '/': received 'classic' but current is 'quorum'").unwrap();
        assert_eq!(
            (m.object.as_str(), m.name.as_str(), m.argument.as_str()),
            ("queue", "p.a", "x-queue-type")
        );
        assert_eq!(
            (m.existing.as_str(), m.wanted.as_str()),
            ("quorum", "classic")
        );
        let text = m.describe();
        assert!(text.contains("queue `p.a` already exists with x-queue-type = quorum, but the pipeline wants classic (queue.type"), "{text}");
        assert!(text.contains("rabbitmqctl delete_queue p.a"), "{text}");

        let m = Mismatch::parse("PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'p.b' in vhost 'prod': received the value '5' of type 'long' but current is none").unwrap();
        assert_eq!((m.existing.as_str(), m.wanted.as_str()), ("(not set)", "5"));
        assert!(m.describe().contains("delete_queue -p prod p.b"));

        let m = Mismatch::parse("PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue 'p.a' in vhost '/': received the value '' of type 'longstr' but current is none").unwrap();
        assert_eq!(
            (m.existing.as_str(), m.wanted.as_str()),
            ("(not set)", "\"\"")
        );

        let m = Mismatch::parse("PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'p' in vhost '/': received 'direct' but current is 'topic'").unwrap();
        assert_eq!(
            (m.object.as_str(), m.existing.as_str()),
            ("exchange", "topic")
        );
        assert!(Mismatch::parse("PRECONDITION_FAILED - something else").is_none());
    }
}
