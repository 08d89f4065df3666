//! The file as one JSON value, with the environment's overrides laid over
//! it: `WARREN_<PATH>` where `__` separates the path's parts
//! (`WARREN_DEFAULTS__PREFETCH=8`), then `AMQP_URL` for `broker.url`.
//!
//! The YAML is read by the same parser that maps lines
//! ([`super::lines`]); an override's text is read as a whole number, a
//! decimal number or `true`/`false` when it is one, and as text otherwise,
//! so `WARREN_DEFAULTS__PREFETCH=8` is the number 8.

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// The file with the environment laid over it. `overrides` maps each field
/// path to the variable that sets it (see `super::overrides`).
pub(super) fn layered(
    text: &str,
    env: &[(String, String)],
    overrides: &BTreeMap<String, String>,
) -> Result<Value, String> {
    let documents = YamlLoader::load_from_str(text)
        .map_err(|error| format!("is not valid YAML: {}", error.info()))?;
    let mut value = match documents.as_slice() {
        [] => Value::Null,
        [document] => to_json(document)?,
        _ => return Err("holds several YAML documents (`---`); keep one".into()),
    };
    if !(value.is_object() || value.is_null()) {
        return Err("must be a mapping with `pipeline:` and `stages:`".into());
    }
    for (path, var) in overrides {
        let Some((_, text)) = env.iter().find(|(name, _)| name == var) else {
            continue;
        };
        if var == "AMQP_URL" {
            // One URL, or several separated by commas: it replaces
            // whichever of `broker.url` and `broker.urls` the file gives.
            let broker = entry(&mut value, &["broker"])?;
            if let Value::Object(broker) = broker {
                broker.remove("urls");
            }
            *entry(&mut value, &["broker", "url"])? = Value::String(text.clone());
        } else {
            let parts: Vec<&str> = path.split('.').collect();
            *entry(&mut value, &parts)? = scalar(text);
        }
    }
    Ok(value)
}

/// The value at `path`, made (as mappings) where missing.
fn entry<'v>(value: &'v mut Value, path: &[&str]) -> Result<&'v mut Value, String> {
    let mut at = value;
    for (depth, part) in path.iter().enumerate() {
        if at.is_null() {
            *at = Value::Object(Map::new());
        }
        at = match at {
            Value::Object(map) => map.entry(part.to_string()).or_insert(Value::Null),
            _ => {
                return Err(format!(
                    "`{}` is not a mapping, so the environment cannot set `{}` in it",
                    path[..depth].join("."),
                    path.join(".")
                ));
            }
        };
    }
    Ok(at)
}

/// An override's text as the value it spells.
fn scalar(text: &str) -> Value {
    if let Ok(whole) = text.parse::<i64>() {
        return Value::Number(whole.into());
    }
    if let Some(number) = text.parse::<f64>().ok().and_then(Number::from_f64) {
        return Value::Number(number);
    }
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(text.to_string()),
    }
}

/// A YAML value as JSON. Keys are text (a number or `true` as a key is its
/// text); aliases were expanded by the loader.
fn to_json(yaml: &Yaml) -> Result<Value, String> {
    Ok(match yaml {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::Number((*i).into()),
        Yaml::Real(text) => match yaml.as_f64().and_then(Number::from_f64) {
            Some(number) => Value::Number(number),
            None => Value::String(text.clone()),
        },
        Yaml::String(text) => Value::String(text.clone()),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Yaml::Hash(map) => {
            let mut object = Map::new();
            for (key, value) in map {
                object.insert(key_text(key)?, to_json(value)?);
            }
            Value::Object(object)
        }
        Yaml::Alias(_) | Yaml::BadValue => {
            return Err("holds a value that cannot be read".into());
        }
    })
}

fn key_text(key: &Yaml) -> Result<String, String> {
    Ok(match key {
        Yaml::String(text) | Yaml::Real(text) => text.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Null => "null".into(),
        _ => return Err("uses a list or a mapping as a key; keys are names".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn overrides_set_typed_values_and_make_missing_mappings() {
        let env = env(&[
            ("WARREN_DEFAULTS__PREFETCH", "8"),
            ("WARREN_STAGES__GRADE__TIMEOUT", "5s"),
            ("WARREN_JOBS__TRACK", "true"),
        ]);
        let overrides = BTreeMap::from([
            (
                "defaults.prefetch".into(),
                "WARREN_DEFAULTS__PREFETCH".into(),
            ),
            (
                "stages.grade.timeout".into(),
                "WARREN_STAGES__GRADE__TIMEOUT".into(),
            ),
            ("jobs.track".into(), "WARREN_JOBS__TRACK".into()),
        ]);
        let value = layered(
            "pipeline: p\nstages:\n  grade: { http: { url: 'http://x' } }\n",
            &env,
            &overrides,
        )
        .unwrap();
        assert_eq!(value["defaults"]["prefetch"], Value::from(8));
        assert_eq!(value["stages"]["grade"]["timeout"], Value::from("5s"));
        assert_eq!(
            value["stages"]["grade"]["http"]["url"],
            Value::from("http://x")
        );
        assert_eq!(value["jobs"]["track"], Value::from(true));
    }

    #[test]
    fn amqp_url_replaces_both_broker_fields() {
        let env = env(&[("AMQP_URL", "amqp://a,amqp://b")]);
        let overrides = BTreeMap::from([("broker.url".into(), "AMQP_URL".into())]);
        let value = layered(
            "pipeline: p\nbroker: { urls: [amqp://x, amqp://y] }\n",
            &env,
            &overrides,
        )
        .unwrap();
        assert_eq!(
            value["broker"],
            serde_json::json!({"url": "amqp://a,amqp://b"})
        );
    }

    #[test]
    fn an_override_inside_a_scalar_is_refused_by_name() {
        let env = env(&[("WARREN_PIPELINE__X", "1")]);
        let overrides = BTreeMap::from([("pipeline.x".into(), "WARREN_PIPELINE__X".into())]);
        let error = layered("pipeline: p\n", &env, &overrides).unwrap_err();
        assert!(error.contains("`pipeline` is not a mapping"), "{error}");
    }

    #[test]
    fn yaml_scalars_keep_their_types() {
        let value = layered(
            "a: 1\nb: 1.5\nc: yes\nd: true\ne: ~\n1: x\nf: 1e3\n",
            &[],
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(value["a"], Value::from(1));
        assert_eq!(value["b"], Value::from(1.5));
        assert_eq!(value["c"], Value::from("yes"));
        assert_eq!(value["d"], Value::from(true));
        assert_eq!(value["e"], Value::Null);
        assert_eq!(value["1"], Value::from("x"));
        assert_eq!(value["f"], Value::from(1000.0));
    }
}
