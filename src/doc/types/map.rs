//! `Map<K, V>`: last-writer-wins per key, ordered by hybrid timestamp, deletes included.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::doc::clock::Timestamp;
use crate::doc::id::OpId;
use crate::doc::op::{ContainerId, ContainerKind, Element, OpContent, Stamp};
use crate::doc::transaction::Transaction;
use crate::doc::value::Value;
use crate::{Document, Error};

/// State of a map: per key, the winning write. A delete is a write of `None`, kept as a
/// tombstone so that an older concurrent set arriving later still loses to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct MapState {
    entries: BTreeMap<Value, (Stamp, Option<Element>)>,
}

impl MapState {
    pub(crate) fn apply_set(&mut self, id: OpId, ts: Timestamp, key: Value, value: Option<Element>) {
        let stamp = (ts, id);
        match self.entries.get_mut(&key) {
            Some(entry) if entry.0 >= stamp => {}
            Some(entry) => *entry = (stamp, value),
            None => {
                self.entries.insert(key, (stamp, value));
            }
        }
    }

    /// The live value of `key` and the id of the write that set it.
    pub(crate) fn get(&self, key: &Value) -> Option<(OpId, &Element)> {
        self.entries.get(key).and_then(|((_, id), v)| v.as_ref().map(|v| (*id, v)))
    }

    /// Live entries in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Value, OpId, &Element)> {
        self.entries.iter().filter_map(|(k, ((_, id), v))| v.as_ref().map(|v| (k, *id, v)))
    }
}

/// Read access to a map from `K` to `V`.
pub struct MapRef<'a, K, V> {
    state: Option<&'a MapState>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<'a, K, V> MapRef<'a, K, V> {
    pub(crate) fn new(doc: &'a Document, id: &ContainerId) -> Self {
        MapRef { state: doc.state.map(id), _types: PhantomData }
    }
}

impl<'a, K: Serialize + DeserializeOwned, V: DeserializeOwned> MapRef<'a, K, V> {
    fn element(&self, key: &K) -> Result<Option<(OpId, &'a Element)>, Error> {
        let key = Value::from_serialize(key)?;
        Ok(self.state.and_then(|s| s.get(&key)))
    }

    /// The value of `key`; `None` if absent or if the key holds a nested container.
    pub fn get(&self, key: &K) -> Result<Option<V>, Error> {
        match self.element(key)? {
            Some((_, Element::Value(v))) => v.to_deserialize().map(Some),
            _ => Ok(None),
        }
    }

    /// The nested container stored under `key`, if any.
    pub fn get_container(&self, key: &K) -> Result<Option<ContainerId>, Error> {
        Ok(match self.element(key)? {
            Some((id, Element::Container(kind))) => Some(ContainerId::Child { id, kind: *kind }),
            _ => None,
        })
    }

    /// Whether `key` is present (with a value or a container).
    pub fn contains_key(&self, key: &K) -> Result<bool, Error> {
        Ok(self.element(key)?.is_some())
    }

    /// The number of live keys.
    pub fn len(&self) -> usize {
        self.state.map_or(0, |s| s.iter().count())
    }

    /// Whether no key is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key with a plain value, in key order, with its value.
    pub fn entries(&self) -> Result<Vec<(K, V)>, Error> {
        let Some(state) = self.state else { return Ok(Vec::new()) };
        state
            .iter()
            .filter_map(|(k, _, e)| match e {
                Element::Value(v) => Some((k, v)),
                Element::Container(_) => None,
            })
            .map(|(k, v)| Ok((k.to_deserialize()?, v.to_deserialize()?)))
            .collect()
    }
}

/// Write access to a map from `K` to `V`, inside a [`Transaction`].
pub struct MapMut<'t, 'd, K, V> {
    txn: &'t mut Transaction<'d>,
    id: ContainerId,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<'t, 'd, K, V> MapMut<'t, 'd, K, V> {
    pub(crate) fn new(txn: &'t mut Transaction<'d>, id: ContainerId) -> Self {
        MapMut { txn, id, _types: PhantomData }
    }
}

impl<'t, 'd, K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> MapMut<'t, 'd, K, V> {
    /// Set `key` to `value`.
    pub fn insert(&mut self, key: &K, value: &V) -> Result<(), Error> {
        let key = Value::from_serialize(key)?;
        let value = Element::Value(Value::from_serialize(value)?);
        self.txn.push_op(self.id.clone(), OpContent::MapSet { key, value: Some(value) })?;
        Ok(())
    }

    /// Store a new nested container under `key` and return its id.
    pub fn insert_container(&mut self, key: &K, kind: ContainerKind) -> Result<ContainerId, Error> {
        let key = Value::from_serialize(key)?;
        let content = OpContent::MapSet { key, value: Some(Element::Container(kind)) };
        let op = self.txn.push_op(self.id.clone(), content)?;
        Ok(ContainerId::Child { id: op, kind })
    }

    /// Delete `key`. Returns whether it was present.
    pub fn remove(&mut self, key: &K) -> Result<bool, Error> {
        let present = MapRef::<K, V>::new(self.txn.doc(), &self.id).contains_key(key)?;
        if present {
            let key = Value::from_serialize(key)?;
            self.txn.push_op(self.id.clone(), OpContent::MapSet { key, value: None })?;
        }
        Ok(present)
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Result<Option<V>, Error> {
        MapRef::<K, V>::new(self.txn.doc(), &self.id).get(key)
    }
}
