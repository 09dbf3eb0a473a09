//! `Counter`: increments and decrements that commute.

use serde::{Deserialize, Serialize};

use crate::doc::op::{ContainerId, OpContent};
use crate::doc::transaction::Transaction;
use crate::{Document, Error};

/// State of a counter: the sum of every delta applied.
///
/// Remote deltas are added with wrapping arithmetic, which is commutative and associative, so
/// replicas converge whatever the order; local increments that would overflow are refused
/// with [`Error::ValueOverflow`], so honest replicas never wrap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CounterState {
    value: i64,
}

impl CounterState {
    pub(crate) fn apply_add(&mut self, delta: i64) {
        self.value = self.value.wrapping_add(delta);
    }

    pub(crate) fn value(&self) -> i64 {
        self.value
    }
}

/// Read access to a counter.
pub struct CounterRef<'a> {
    state: Option<&'a CounterState>,
}

impl<'a> CounterRef<'a> {
    pub(crate) fn new(doc: &'a Document, id: &ContainerId) -> Self {
        CounterRef { state: doc.state.counter(id) }
    }

    /// The current value (zero if never changed).
    pub fn get(&self) -> i64 {
        self.state.map_or(0, CounterState::value)
    }
}

/// Write access to a counter, inside a [`Transaction`].
pub struct CounterMut<'t, 'd> {
    txn: &'t mut Transaction<'d>,
    id: ContainerId,
}

impl<'t, 'd> CounterMut<'t, 'd> {
    pub(crate) fn new(txn: &'t mut Transaction<'d>, id: ContainerId) -> Self {
        CounterMut { txn, id }
    }

    /// Add `delta` (negative to decrement).
    pub fn add(&mut self, delta: i64) -> Result<(), Error> {
        self.get().checked_add(delta).ok_or(Error::ValueOverflow)?;
        self.txn.push_op(self.id.clone(), OpContent::CounterAdd { delta })?;
        Ok(())
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        CounterRef::new(self.txn.doc(), &self.id).get()
    }
}
