//! The new pipeline's name, made from its folder's name: what a pipeline
//! name allows (a lower-case letter, then lower-case letters, digits, `_`
//! or `-`; at most 64 characters).

/// The name when the folder's name has nothing usable.
const FALLBACK: &str = "pipeline";

/// Longest pipeline name (the file's rule).
const MAX: usize = 64;

/// A pipeline name from a folder's name: lower-cased, every other
/// character (and runs of them) one `-`, starting at its first letter;
/// `pipeline` when it has no letter.
pub fn from_folder(folder: &str) -> String {
    let mut name = String::new();
    for c in folder.chars().map(|c| c.to_ascii_lowercase()) {
        let keep = c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
        if name.is_empty() && !c.is_ascii_lowercase() {
            continue;
        }
        if keep {
            name.push(c);
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    name.truncate(MAX);
    let name = name.trim_end_matches(['-', '_']);
    if name.is_empty() {
        FALLBACK.to_owned()
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::from_folder;

    #[test]
    fn a_good_name_stays() {
        assert_eq!(from_folder("hello"), "hello");
        assert_eq!(from_folder("shop_orders-2"), "shop_orders-2");
    }

    #[test]
    fn other_characters_become_one_dash() {
        assert_eq!(from_folder("My Shop"), "my-shop");
        assert_eq!(from_folder("a.b  c"), "a-b-c");
        assert_eq!(from_folder("café"), "caf");
    }

    #[test]
    fn it_starts_with_a_letter() {
        assert_eq!(from_folder("2024-reports"), "reports");
        assert_eq!(from_folder("_x"), "x");
        assert_eq!(from_folder("123"), "pipeline");
        assert_eq!(from_folder(""), "pipeline");
    }

    #[test]
    fn it_is_at_most_64_characters() {
        let name = from_folder(&"a".repeat(100));
        assert_eq!(name.len(), 64);
        assert_eq!(
            from_folder(&format!("{}-b", "a".repeat(63))),
            "a".repeat(63)
        );
    }
}
