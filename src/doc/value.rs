//! Plain values stored in containers, and conversion from and to any serde type.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Error;

/// A self-describing value: what list items, map values, registers and set members hold.
///
/// Typed handles convert your `T: Serialize + DeserializeOwned` through this type; you only
/// meet it directly when reading a container without knowing its item type. Values have a
/// total order (floats by [`f64::total_cmp`]) so they can be map keys and set members.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Value {
    /// No value (JSON `null`).
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer too large for [`Value::Int`].
    Uint(u64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    String(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// An ordered sequence of values.
    List(Vec<Value>),
    /// String-keyed values, sorted by key.
    Map(BTreeMap<String, Value>),
}

impl Value {
    /// Convert any serializable value.
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Value, Error> {
        let json = serde_json::to_value(value).map_err(|e| Error::InvalidValue(e.to_string()))?;
        Ok(Value::from_json(json))
    }

    /// Convert into any deserializable type.
    pub fn to_deserialize<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_value(self.to_json()).map_err(|e| Error::InvalidValue(e.to_string()))
    }

    /// Convert from a JSON value.
    pub fn from_json(json: serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::Uint(u)
                } else {
                    Value::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            serde_json::Value::String(s) => Value::String(s),
            serde_json::Value::Array(items) => Value::List(items.into_iter().map(Value::from_json).collect()),
            serde_json::Value::Object(map) => {
                Value::Map(map.into_iter().map(|(k, v)| (k, Value::from_json(v))).collect())
            }
        }
    }

    /// Convert to a JSON value. Bytes become an array of numbers; non-finite floats `null`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => (*i).into(),
            Value::Uint(u) => (*u).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Bytes(b) => b.iter().map(|&x| serde_json::Value::from(x)).collect(),
            Value::List(items) => items.iter().map(Value::to_json).collect(),
            Value::Map(map) => map.iter().map(|(k, v)| (k.clone(), v.to_json())).collect(),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) => 2,
            Value::Uint(_) => 3,
            Value::Float(_) => 4,
            Value::String(_) => 5,
            Value::Bytes(_) => 6,
            Value::List(_) => 7,
            Value::Map(_) => 8,
        }
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Uint(a), Value::Uint(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::String(a), Value::String(b)) => a.cmp(b),
            (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
            (Value::List(a), Value::List(b)) => a.cmp(b),
            (Value::Map(a), Value::Map(b)) => a.iter().cmp(b.iter()),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Todo {
        title: String,
        done: bool,
        tags: Vec<String>,
        big: u64,
    }

    #[test]
    fn serde_types_round_trip() {
        let todo = Todo { title: "ship".into(), done: false, tags: vec!["a".into()], big: u64::MAX };
        let value = Value::from_serialize(&todo).unwrap();
        assert_eq!(value.to_deserialize::<Todo>().unwrap(), todo);
    }

    #[test]
    fn values_round_trip_through_postcard() {
        let value = Value::List(vec![Value::Float(1.5), Value::Bytes(vec![1, 2]), Value::Null]);
        let bytes = postcard::to_allocvec(&value).unwrap();
        assert_eq!(postcard::from_bytes::<Value>(&bytes).unwrap(), value);
    }

    #[test]
    fn order_is_total_even_for_nan() {
        let nan = Value::Float(f64::NAN);
        assert_eq!(nan.cmp(&nan), Ordering::Equal);
        assert!(Value::Int(3) < Value::String("a".into()));
    }
}
