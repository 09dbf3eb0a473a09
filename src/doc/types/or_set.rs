//! `OrSet<T>`: an observed-remove set where an add wins over a concurrent remove.

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::doc::id::OpId;
use crate::doc::op::{ContainerId, OpContent};
use crate::doc::transaction::Transaction;
use crate::doc::value::Value;
use crate::{Document, Error};

/// State of a set: each member with the tags (add operation ids) not yet removed.
///
/// A remove only deletes the tags its author had seen, so an add made concurrently keeps its
/// tag and the member stays: add wins.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct OrSetState {
    members: BTreeMap<Value, BTreeSet<OpId>>,
}

impl OrSetState {
    pub(crate) fn apply_add(&mut self, tag: OpId, value: Value) {
        self.members.entry(value).or_default().insert(tag);
    }

    pub(crate) fn apply_remove(&mut self, value: &Value, tags: &[OpId]) {
        if let Some(live) = self.members.get_mut(value) {
            for tag in tags {
                live.remove(tag);
            }
            if live.is_empty() {
                self.members.remove(value);
            }
        }
    }

    pub(crate) fn tags(&self, value: &Value) -> Vec<OpId> {
        self.members.get(value).map(|t| t.iter().copied().collect()).unwrap_or_default()
    }

    pub(crate) fn members(&self) -> impl Iterator<Item = &Value> {
        self.members.keys()
    }

    pub(crate) fn is_consistent(&self) -> bool {
        self.members.values().all(|tags| !tags.is_empty())
    }
}

/// Read access to a set of `T`.
pub struct OrSetRef<'a, T> {
    state: Option<&'a OrSetState>,
    _item: PhantomData<fn() -> T>,
}

impl<'a, T> OrSetRef<'a, T> {
    pub(crate) fn new(doc: &'a Document, id: &ContainerId) -> Self {
        OrSetRef { state: doc.state.or_set(id), _item: PhantomData }
    }
}

impl<'a, T: Serialize + DeserializeOwned> OrSetRef<'a, T> {
    /// Whether `value` is a member.
    pub fn contains(&self, value: &T) -> Result<bool, Error> {
        let value = Value::from_serialize(value)?;
        Ok(self.state.is_some_and(|s| s.members.contains_key(&value)))
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.state.map_or(0, |s| s.members.len())
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every member, in the order of their [`Value`]s.
    pub fn to_vec(&self) -> Result<Vec<T>, Error> {
        self.state.into_iter().flat_map(OrSetState::members).map(Value::to_deserialize).collect()
    }
}

/// Write access to a set of `T`, inside a [`Transaction`].
pub struct OrSetMut<'t, 'd, T> {
    txn: &'t mut Transaction<'d>,
    id: ContainerId,
    _item: PhantomData<fn() -> T>,
}

impl<'t, 'd, T> OrSetMut<'t, 'd, T> {
    pub(crate) fn new(txn: &'t mut Transaction<'d>, id: ContainerId) -> Self {
        OrSetMut { txn, id, _item: PhantomData }
    }
}

impl<'t, 'd, T: Serialize + DeserializeOwned> OrSetMut<'t, 'd, T> {
    /// Add a member.
    pub fn insert(&mut self, value: &T) -> Result<(), Error> {
        let value = Value::from_serialize(value)?;
        self.txn.push_op(self.id.clone(), OpContent::SetAdd { value })?;
        Ok(())
    }

    /// Remove a member (every add of it this replica has seen). Returns whether it was present.
    pub fn remove(&mut self, value: &T) -> Result<bool, Error> {
        let value = Value::from_serialize(value)?;
        let tags = self.txn.doc().state.or_set(&self.id).map(|s| s.tags(&value)).unwrap_or_default();
        if tags.is_empty() {
            return Ok(false);
        }
        self.txn.push_op(self.id.clone(), OpContent::SetRemove { value, tags })?;
        Ok(true)
    }

    /// Whether `value` is a member.
    pub fn contains(&self, value: &T) -> Result<bool, Error> {
        OrSetRef::new(self.txn.doc(), &self.id).contains(value)
    }
}
