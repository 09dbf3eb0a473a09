//! `Register<T>`: one value, last writer wins.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::doc::clock::Timestamp;
use crate::doc::id::OpId;
use crate::doc::op::{ContainerId, ContainerKind, Element, OpContent, Stamp};
use crate::doc::transaction::Transaction;
use crate::doc::value::Value;
use crate::{Document, Error};

/// State of a register: the winning write, if any.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RegisterState {
    current: Option<(Stamp, Element)>,
}

impl RegisterState {
    pub(crate) fn apply_set(&mut self, id: OpId, ts: Timestamp, value: Element) {
        if self.current.as_ref().is_none_or(|(stamp, _)| (ts, id) > *stamp) {
            self.current = Some(((ts, id), value));
        }
    }

    pub(crate) fn get(&self) -> Option<(OpId, &Element)> {
        self.current.as_ref().map(|((_, id), element)| (*id, element))
    }
}

/// Read access to a register holding `T`.
pub struct RegisterRef<'a, T> {
    state: Option<&'a RegisterState>,
    _item: PhantomData<fn() -> T>,
}

impl<'a, T> RegisterRef<'a, T> {
    pub(crate) fn new(doc: &'a Document, id: &ContainerId) -> Self {
        RegisterRef { state: doc.state.register(id), _item: PhantomData }
    }
}

impl<'a, T: DeserializeOwned> RegisterRef<'a, T> {
    /// The current value, `None` if never set or if it holds a container.
    pub fn get(&self) -> Result<Option<T>, Error> {
        match self.state.and_then(RegisterState::get) {
            Some((_, Element::Value(v))) => v.to_deserialize().map(Some),
            _ => Ok(None),
        }
    }

    /// The current value as a [`Value`].
    pub fn get_value(&self) -> Option<&'a Value> {
        match self.state.and_then(RegisterState::get) {
            Some((_, Element::Value(v))) => Some(v),
            _ => None,
        }
    }

    /// The nested container the register holds, if it holds one.
    pub fn get_container(&self) -> Option<ContainerId> {
        match self.state.and_then(RegisterState::get) {
            Some((id, Element::Container(kind))) => Some(ContainerId::Child { id, kind: *kind }),
            _ => None,
        }
    }
}

/// Write access to a register holding `T`, inside a [`Transaction`].
pub struct RegisterMut<'t, 'd, T> {
    txn: &'t mut Transaction<'d>,
    id: ContainerId,
    _item: PhantomData<fn() -> T>,
}

impl<'t, 'd, T> RegisterMut<'t, 'd, T> {
    pub(crate) fn new(txn: &'t mut Transaction<'d>, id: ContainerId) -> Self {
        RegisterMut { txn, id, _item: PhantomData }
    }
}

impl<'t, 'd, T: Serialize + DeserializeOwned> RegisterMut<'t, 'd, T> {
    /// Set the value.
    pub fn set(&mut self, value: &T) -> Result<(), Error> {
        let value = Value::from_serialize(value)?;
        self.txn.push_op(self.id.clone(), OpContent::RegisterSet { value: Element::Value(value) })?;
        Ok(())
    }

    /// Make the register hold a new nested container and return its id.
    pub fn set_container(&mut self, kind: ContainerKind) -> Result<ContainerId, Error> {
        let op =
            self.txn.push_op(self.id.clone(), OpContent::RegisterSet { value: Element::Container(kind) })?;
        Ok(ContainerId::Child { id: op, kind })
    }

    /// The current value.
    pub fn get(&self) -> Result<Option<T>, Error> {
        RegisterRef::new(self.txn.doc(), &self.id).get()
    }
}
