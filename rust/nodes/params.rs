//! Reading a node's manifest `params` object: every field under each spelling a client
//! may send (`chunk_size` from Python and manifests, `chunkSize` from JavaScript), each
//! value parsed by serde, and every error an [`Error::Manifest`] whose path is the key as
//! the manifest wrote it (`params.chunkSize`), so a user finds the field they typed.
//! Unknown keys are errors too: a misspelt parameter must not silently mean the default.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The manifest error for the parameter written as `key`.
pub fn invalid(key: &str, message: impl Into<String>) -> Error {
    Error::Manifest {
        path: format!("params.{key}"),
        message: message.into(),
    }
}

/// One field as the manifest gave it: the key it used, and the parsed value.
pub struct Field<'a, T> {
    pub key: &'a str,
    pub value: T,
}

/// A node's params, checked against the fields it knows.
pub struct Params<'a> {
    map: Option<&'a Map<String, Value>>,
}

impl<'a> Params<'a> {
    /// `fields` lists every field's spellings, the canonical (snake_case) one first. A
    /// missing or `null` params means no parameters.
    pub fn new(node_type: &'static str, params: &'a Value, fields: &[&[&str]]) -> Result<Self> {
        let map = match params {
            Value::Null => None,
            Value::Object(map) => Some(map),
            other => {
                return Err(Error::Manifest {
                    path: "params".into(),
                    message: format!(
                        "{node_type} params must be an object, got {}",
                        type_name(other)
                    ),
                })
            }
        };
        for key in map.into_iter().flat_map(|m| m.keys()) {
            let Some(spellings) = fields.iter().find(|names| names.contains(&key.as_str())) else {
                let known: Vec<&str> = fields.iter().map(|names| names[0]).collect();
                let accepted = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                return Err(invalid(
                    key,
                    format!("unknown parameter of {node_type} (it accepts: {accepted})"),
                ));
            };
            let given: Vec<&str> = spellings
                .iter()
                .copied()
                .filter(|name| map.is_some_and(|m| m.contains_key(*name)))
                .collect();
            if given.len() > 1 {
                return Err(invalid(
                    key,
                    format!("given more than once, as {}", given.join(" and ")),
                ));
            }
        }
        Ok(Params { map })
    }

    /// The field under any of its `names`, parsed as `T`; `None` when absent or `null`.
    pub fn get<T: DeserializeOwned>(&self, names: &[&str]) -> Result<Option<Field<'a, T>>> {
        let Some((key, value)) = self.raw(names) else {
            return Ok(None);
        };
        let value = T::deserialize(value).map_err(|e| invalid(key, e.to_string()))?;
        Ok(Some(Field { key, value }))
    }

    /// The raw JSON of a field, for values serde alone cannot describe (`"auto"` or a
    /// number).
    pub fn raw(&self, names: &[&str]) -> Option<(&'a str, &'a Value)> {
        let map = self.map?;
        names.iter().find_map(|name| {
            map.get_key_value(*name)
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.as_str(), v))
        })
    }
}

/// An integer field that must lie in `min..=max`.
pub fn ranged<T>(field: &Field<'_, T>, min: T, max: T, unit: &str) -> Result<()>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if field.value < min || field.value > max {
        return Err(invalid(
            field.key,
            format!(
                "{} is out of range: expected {min} to {max}{unit}",
                field.value
            ),
        ));
    }
    Ok(())
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FIELDS: &[&[&str]] = &[&["chunk_size", "chunkSize"], &["pad_last", "padLast"]];

    fn path_of(err: Error) -> String {
        match err {
            Error::Manifest { path, .. } => path,
            other => panic!("expected a manifest error, got {other:?}"),
        }
    }

    #[test]
    fn either_spelling_and_the_key_as_written() {
        let params = json!({"chunkSize": 480});
        let p = Params::new("T", &params, FIELDS).unwrap();
        let field = p.get::<u32>(&["chunk_size", "chunkSize"]).unwrap().unwrap();
        assert_eq!((field.key, field.value), ("chunkSize", 480));
        assert!(p.get::<bool>(&["pad_last", "padLast"]).unwrap().is_none());
    }

    #[test]
    fn errors_name_the_field() {
        let bad = json!({"chunkSize": "many"});
        let p = Params::new("T", &bad, FIELDS).unwrap();
        let err = p.get::<u32>(&["chunk_size", "chunkSize"]).err().unwrap();
        assert!(err.to_string().contains("params.chunkSize: invalid type"));

        let unknown = json!({"chunk_sise": 3});
        let err = Params::new("T", &unknown, FIELDS).err().unwrap();
        assert!(err.to_string().contains("accepts: chunk_size, pad_last"));
        assert_eq!(path_of(err), "params.chunk_sise");

        let twice = json!({"chunk_size": 3, "chunkSize": 4});
        let err = Params::new("T", &twice, FIELDS).err().unwrap();
        assert!(err.to_string().contains("more than once"));

        let err = Params::new("T", &json!([1]), FIELDS).err().unwrap();
        assert_eq!(path_of(err), "params");
    }

    #[test]
    fn null_params_and_null_values_are_absent() {
        let p = Params::new("T", &Value::Null, FIELDS).unwrap();
        assert!(p.get::<u32>(&["chunk_size"]).unwrap().is_none());
        let params = json!({"chunk_size": null});
        let p = Params::new("T", &params, FIELDS).unwrap();
        assert!(p.get::<u32>(&["chunk_size"]).unwrap().is_none());
    }
}
