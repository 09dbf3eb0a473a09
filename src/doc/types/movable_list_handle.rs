//! Typed handles of `MovableList<T>`; the CRDT itself is in `movable_list.rs`.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::movable_list::MovableListState;
use crate::doc::id::OpId;
use crate::doc::op::{ContainerId, ContainerKind, Element, OpContent};
use crate::doc::transaction::Transaction;
use crate::doc::value::Value;
use crate::{Document, Error};

/// Read access to a movable list of `T`.
///
/// Every element keeps its identity (an [`OpId`]) across moves and in-place updates; concurrent
/// moves of one element never duplicate it: the last move (by timestamp) decides where it ends.
pub struct MovableListRef<'a, T> {
    state: Option<&'a MovableListState>,
    _item: PhantomData<fn() -> T>,
}

impl<'a, T> MovableListRef<'a, T> {
    pub(crate) fn new(doc: &'a Document, id: &ContainerId) -> Self {
        MovableListRef { state: doc.state.movable_list(id), _item: PhantomData }
    }
}

impl<'a, T: DeserializeOwned> MovableListRef<'a, T> {
    /// The number of items.
    pub fn len(&self) -> usize {
        self.state.map_or(0, MovableListState::len)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The item at `index`; `None` if out of bounds or a nested container.
    pub fn get(&self, index: usize) -> Result<Option<T>, Error> {
        match self.state.and_then(|s| s.get(index)) {
            Some((_, Element::Value(v))) => v.to_deserialize().map(Some),
            _ => Ok(None),
        }
    }

    /// The nested container at `index`, if the item is one. Its id is that of the write that
    /// stored it (the insert, or a later in-place update).
    pub fn get_container(&self, index: usize) -> Option<ContainerId> {
        let state = self.state?;
        match state.get(index)? {
            (_, Element::Container(kind)) => {
                Some(ContainerId::Child { id: state.value_op_at(index)?, kind: *kind })
            }
            _ => None,
        }
    }

    /// The stable identity of the element at `index`.
    pub fn elem_id(&self, index: usize) -> Option<OpId> {
        self.state?.elem_at(index)
    }

    /// The current index of the element with identity `elem`; `None` if deleted or unknown.
    pub fn index_of(&self, elem: OpId) -> Option<usize> {
        self.state?.position_of_elem(elem)
    }

    /// Every plain-value item in order.
    pub fn to_vec(&self) -> Result<Vec<T>, Error> {
        let mut out = Vec::with_capacity(self.len());
        let mut error = None;
        if let Some(state) = self.state {
            state.for_each(|_, item| {
                if let Element::Value(v) = item {
                    match v.to_deserialize() {
                        Ok(t) => out.push(t),
                        Err(e) => error = error.take().or(Some(e)),
                    }
                }
            });
        }
        error.map_or(Ok(out), Err)
    }
}

/// Write access to a movable list of `T`, inside a [`Transaction`].
pub struct MovableListMut<'t, 'd, T> {
    txn: &'t mut Transaction<'d>,
    id: ContainerId,
    _item: PhantomData<fn() -> T>,
}

impl<'t, 'd, T> MovableListMut<'t, 'd, T> {
    pub(crate) fn new(txn: &'t mut Transaction<'d>, id: ContainerId) -> Self {
        MovableListMut { txn, id, _item: PhantomData }
    }
}

impl<'t, 'd, T: Serialize + DeserializeOwned> MovableListMut<'t, 'd, T> {
    fn state(&self) -> Option<&MovableListState> {
        self.txn.doc().state.movable_list(&self.id)
    }

    /// Read the list as it is now, inside the transaction.
    pub fn read(&self) -> MovableListRef<'_, T> {
        MovableListRef { state: self.state(), _item: PhantomData }
    }

    fn insert_elements(&mut self, index: usize, items: Vec<Element>) -> Result<OpId, Error> {
        let len = self.read().len();
        if index > len {
            return Err(Error::OutOfBounds { index, len });
        }
        let anchor = match self.state() {
            Some(state) => state.local_insert_anchor(index),
            None => MovableListState::default().local_insert_anchor(0),
        };
        self.txn.push_op(self.id.clone(), OpContent::MovableInsert { anchor, items })
    }

    /// Insert `item` at `index`; returns the new element's identity.
    pub fn insert(&mut self, index: usize, item: &T) -> Result<OpId, Error> {
        let value = Element::Value(Value::from_serialize(item)?);
        self.insert_elements(index, vec![value])
    }

    /// Append `item`; returns the new element's identity.
    pub fn push(&mut self, item: &T) -> Result<OpId, Error> {
        let len = self.read().len();
        self.insert(len, item)
    }

    /// Insert a new nested container at `index` and return its id.
    pub fn insert_container(&mut self, index: usize, kind: ContainerKind) -> Result<ContainerId, Error> {
        let id = self.insert_elements(index, vec![Element::Container(kind)])?;
        Ok(ContainerId::Child { id, kind })
    }

    /// Move the item at `from` so that it ends up at index `to`.
    pub fn move_item(&mut self, from: usize, to: usize) -> Result<(), Error> {
        let len = self.read().len();
        if from >= len || to >= len {
            return Err(Error::OutOfBounds { index: from.max(to), len });
        }
        if from == to {
            return Ok(());
        }
        let (elem, anchor) = self
            .state()
            .and_then(|s| s.local_move_anchor(from, to))
            .ok_or(Error::OutOfBounds { index: from, len })?;
        self.txn.push_op(self.id.clone(), OpContent::MovableMove { elem, anchor })?;
        Ok(())
    }

    /// Replace the value at `index`, keeping the element's identity and position.
    pub fn set(&mut self, index: usize, item: &T) -> Result<(), Error> {
        let len = self.read().len();
        let elem = self.read().elem_id(index).ok_or(Error::OutOfBounds { index, len })?;
        let value = Element::Value(Value::from_serialize(item)?);
        self.txn.push_op(self.id.clone(), OpContent::MovableSet { elem, value })?;
        Ok(())
    }

    /// Replace the value at `index` with a new nested container, keeping the element's
    /// identity and position, and return the container's id.
    pub fn set_container(&mut self, index: usize, kind: ContainerKind) -> Result<ContainerId, Error> {
        let len = self.read().len();
        let elem = self.read().elem_id(index).ok_or(Error::OutOfBounds { index, len })?;
        let op = self
            .txn
            .push_op(self.id.clone(), OpContent::MovableSet { elem, value: Element::Container(kind) })?;
        Ok(ContainerId::Child { id: op, kind })
    }

    /// Delete `len` items starting at `index`.
    pub fn delete(&mut self, index: usize, len: usize) -> Result<(), Error> {
        let total = self.read().len();
        let end = super::checked_range(index, len, total)?;
        if len == 0 {
            return Ok(());
        }
        let elems: Vec<OpId> = (index..end).filter_map(|i| self.read().elem_id(i)).collect();
        self.txn.push_op(self.id.clone(), OpContent::MovableDelete { elems })?;
        Ok(())
    }

    /// The item at `index`.
    pub fn get(&self, index: usize) -> Result<Option<T>, Error> {
        self.read().get(index)
    }
}
