//! The check every edit passes before it is returned: the edited text, read back as JSON,
//! must be the original text's JSON with the change made, and nothing else. A splice that
//! would read back otherwise (a YAML corner the engine did not foresee) is refused, never
//! returned.

use serde_json::{Map, Number, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// `text` (one YAML document) as JSON: mappings' keys as strings, aliases resolved.
pub(super) fn read(text: &str) -> Result<Value, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    match docs.as_slice() {
        [] => Ok(Value::Null),
        [doc] => json(doc),
        _ => Err("more than one YAML document".into()),
    }
}

fn json(yaml: &Yaml) -> Result<Value, String> {
    Ok(match yaml {
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or_else(|| Value::String(r.clone()), Value::Number),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Null => Value::Null,
        Yaml::Array(items) => Value::Array(items.iter().map(json).collect::<Result<_, _>>()?),
        Yaml::Hash(hash) => {
            let mut map = Map::new();
            for (k, v) in hash {
                let key = match json(k)? {
                    Value::String(s) => s,
                    Value::Null => "null".into(),
                    other => other.to_string(),
                };
                map.insert(key, json(v)?);
            }
            Value::Object(map)
        }
        Yaml::Alias(_) | Yaml::BadValue => return Err("a value YAML cannot read".into()),
    })
}

/// A rule's JSON, found by name in a rules file's JSON.
pub(super) fn rule_mut<'v>(doc: &'v mut Value, name: &str) -> Option<&'v mut Map<String, Value>> {
    rules_mut(doc)?
        .iter_mut()
        .filter_map(Value::as_object_mut)
        .find(|r| r.get("name").and_then(Value::as_str) == Some(name))
}

pub(super) fn rules_mut(doc: &mut Value) -> Option<&mut Vec<Value>> {
    match doc.get_mut("rules")? {
        v @ Value::Null => {
            *v = Value::Array(Vec::new());
            v.as_array_mut()
        }
        v => v.as_array_mut(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_yaml_as_json() {
        assert_eq!(
            read("a: 1\nb: [x, 1.5, true, ~]\n1: one\nc: &x { d: e }\nf: *x\n").unwrap(),
            json!({"a": 1, "b": ["x", 1.5, true, null], "1": "one", "c": {"d": "e"}, "f": {"d": "e"}})
        );
        assert_eq!(read("").unwrap(), Value::Null);
        assert!(read("a: [").is_err());
    }
}
