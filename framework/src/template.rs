//! Templates of the http stage: `{field}` (or `{a.b}` for a nested field)
//! is replaced by the message's value; `{{` and `}}` are literal braces.
//! Validation checks them ([`check_url`], [`check_body`]); the `warren`
//! binary's http stage fills them for each message ([`url()`], [`body()`]).
//!
//! In a URL, values are percent-encoded. In a body, a string that is exactly
//! `"{field}"` becomes the field's JSON value (a number stays a number, an
//! object stays an object); placeholders inside a longer string become text.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// Everything but RFC 3986's unreserved characters is encoded.
const URL_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The value at `path` (`a.b.c`) of `message`.
fn lookup<'a>(message: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(message, |value, key| match value {
        Value::Object(map) => map.get(key),
        Value::Array(items) => items.get(key.parse::<usize>().ok()?),
        _ => None,
    })
}

/// A scalar as text; objects, arrays and null are refused.
fn scalar(value: &Value, path: &str, role: &str) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Err(format!("the field `{path}` needed by the {role} is null")),
        _ => Err(format!(
            "the field `{path}` needed by the {role} is not text or a number"
        )),
    }
}

/// Splits a template into literal text and placeholders.
fn parts(template: &str) -> Result<Vec<Part<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("{{") {
            out.push(Part::Text("{"));
            rest = after;
        } else if let Some(after) = rest.strip_prefix("}}") {
            out.push(Part::Text("}"));
            rest = after;
        } else if let Some(after) = rest.strip_prefix('{') {
            let end = after
                .find('}')
                .ok_or_else(|| format!("`{template}` has a `{{` without its `}}`"))?;
            out.push(Part::Field(after[..end].trim()));
            rest = &after[end + 1..];
        } else {
            let end = rest.find(['{', '}']).unwrap_or(rest.len()).max(1);
            out.push(Part::Text(&rest[..end]));
            rest = &rest[end..];
        }
    }
    Ok(out)
}

enum Part<'a> {
    Text(&'a str),
    Field(&'a str),
}

/// Checks a template's syntax (at start, so a bad file fails early).
pub fn check(template: &str) -> Result<(), String> {
    parts(template).map(|_| ())
}

/// Checks a URL template: its syntax, and that it is an `http` or `https`
/// URL with a host once its placeholders are filled.
pub fn check_url(template: &str) -> Result<(), String> {
    let mut sample = String::new();
    for part in parts(template)? {
        match part {
            Part::Text(text) => sample.push_str(text),
            Part::Field(_) => sample.push('x'),
        }
    }
    // Its password is never repeated.
    let shown = crate::broker::redact(template);
    let parsed =
        url::Url::parse(&sample).map_err(|error| format!("`{shown}` is not a URL: {error}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("`{shown}` must start with http:// or https://"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{shown}` has no host"));
    }
    Ok(())
}

/// Checks every string of a body template (at start, like [`check`]).
pub fn check_body(template: &Value) -> Result<(), String> {
    match template {
        Value::String(text) => check(text),
        Value::Array(items) => items.iter().try_for_each(check_body),
        Value::Object(map) => map.values().try_for_each(check_body),
        _ => Ok(()),
    }
}

/// Fills a URL template; values are percent-encoded.
pub fn url(template: &str, message: &Value) -> Result<String, String> {
    fill(template, message, "URL", |text| {
        utf8_percent_encode(&text, URL_VALUE).to_string()
    })
}

fn fill(
    template: &str,
    message: &Value,
    role: &str,
    encode: impl Fn(String) -> String,
) -> Result<String, String> {
    let mut out = String::new();
    for part in parts(template)? {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Field(path) => {
                let value = lookup(message, path).ok_or_else(|| {
                    format!("the message has no field `{path}`, needed by the {role}")
                })?;
                out.push_str(&encode(scalar(value, path, role)?));
            }
        }
    }
    Ok(out)
}

/// Fills a JSON body template.
pub fn body(template: &Value, message: &Value) -> Result<Value, String> {
    Ok(match template {
        Value::String(text) => {
            let trimmed = text.trim();
            let whole = trimmed
                .strip_prefix('{')
                .and_then(|t| t.strip_suffix('}'))
                .filter(|inner| !inner.contains(['{', '}']));
            match whole {
                Some(path) if !trimmed.starts_with("{{") => {
                    lookup(message, path.trim()).cloned().ok_or_else(|| {
                        format!(
                            "the message has no field `{}`, needed by the body",
                            path.trim()
                        )
                    })?
                }
                _ => Value::String(fill(text, message, "body", |text| text)?),
            }
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| body(item, message))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), body(v, message)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_take_fields_percent_encoded() {
        let message =
            json!({"company": "Ünïcode & Sons/Co", "id": 42, "site": {"host": "a.example"}});
        assert_eq!(
            url("http://api/grade/{id}", &message).unwrap(),
            "http://api/grade/42"
        );
        assert_eq!(
            url("http://api/search?q={company}", &message).unwrap(),
            "http://api/search?q=%C3%9Cn%C3%AFcode%20%26%20Sons%2FCo"
        );
        assert_eq!(
            url("http://{site.host}/{{literal}}", &message).unwrap(),
            "http://a.example/{literal}"
        );
    }

    #[test]
    fn missing_or_unusable_fields_are_named() {
        let message = json!({"id": null, "tags": [1]});
        assert!(
            url("http://x/{name}", &message)
                .unwrap_err()
                .contains("no field `name`")
        );
        assert!(
            url("http://x/{id}", &message)
                .unwrap_err()
                .contains("`id` needed by the URL is null")
        );
        assert!(
            url("http://x/{tags}", &message)
                .unwrap_err()
                .contains("not text or a number")
        );
        assert!(check("http://x/{oops").unwrap_err().contains("without its"));
        assert!(check_url("http://api/{id}?q={company}").is_ok());
        assert!(check_url("ftp://api/x").unwrap_err().contains("http://"));
        assert!(
            check_url("http://exa mple/")
                .unwrap_err()
                .contains("not a URL")
        );
        assert!(
            check_url("/relative/path")
                .unwrap_err()
                .contains("not a URL")
        );
        let body = serde_json::json!({"site": "{website}", "tags": ["ok", "{bad"]});
        assert!(check_body(&body).unwrap_err().contains("without its"));
        assert!(check_body(&serde_json::json!({"site": "{website}"})).is_ok());
    }

    #[test]
    fn bodies_keep_json_types_and_interpolate_text() {
        let message = json!({"company": "Acme", "size": 12, "meta": {"a": [1, 2]}});
        let template = json!({"name": "{company}", "n": "{size}", "meta": "{meta}", "label": "{company} ({size})", "fixed": true});
        assert_eq!(
            body(&template, &message).unwrap(),
            json!({"name": "Acme", "n": 12, "meta": {"a": [1, 2]}, "label": "Acme (12)", "fixed": true})
        );
        assert!(
            body(&json!({"x": "{nope}"}), &message)
                .unwrap_err()
                .contains("`nope`")
        );
    }
}
