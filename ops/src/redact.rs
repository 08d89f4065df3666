//! What of a URL may be shown in a log line, a dead letter's reason or a
//! job's state: never its password (`user:***@`; a user alone, which may be
//! a token, is `***@`) and never its query string (`?...`), where keys
//! hide.

/// `text` as it may be shown.
pub fn url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        // Not a URL: cut what could be a query, hide what could be a
        // password.
        let base = text.split(['?', '#']).next().unwrap_or(text);
        return match base.split_once("://") {
            Some((scheme, rest)) => match rest.split('/').next().and_then(|a| a.rfind('@')) {
                Some(at) => format!("{scheme}://***{}", &rest[at..]),
                None => base.to_string(),
            },
            None => base.to_string(),
        };
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    } else if !url.username().is_empty() {
        let _ = url.set_username("***");
    }
    let query = url.query().is_some();
    url.set_query(None);
    url.set_fragment(None);
    let mut shown = url.to_string();
    if query {
        shown.push_str("?...");
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn passwords_and_queries_are_never_shown() {
        assert_eq!(
            url("https://app:s3cret@api.example/x?key=k#frag"),
            "https://app:***@api.example/x?..."
        );
        assert_eq!(
            url("https://tok3n@api.example/x"),
            "https://***@api.example/x"
        );
        assert_eq!(url("http://app/done"), "http://app/done");
        assert_eq!(url("http://api/x?key=secret"), "http://api/x?...");
        let broken = url("http://u:s3cret@host:notaport/x?key=k");
        assert!(
            !broken.contains("s3cret") && !broken.contains("key"),
            "{broken}"
        );
    }
}
