//! A change: the unit of history, of sync and of causality.

use serde::{Deserialize, Serialize};

use super::clock::Timestamp;
use super::id::{Counter, IdSpan, OpId, PeerId};
use super::op::{Op, ops_id_len};
use super::version::Frontier;

/// One transaction of one replica: its operations, the ids they occupy, what they depend on
/// and when they were made.
///
/// The operations of a change occupy the consecutive ids `id() .. id() + len()` of one peer, so
/// a change of a thousand typed characters costs one id span, not a thousand ids. `deps` is the
/// frontier the author had when it started the transaction; a change is applied only after
/// all of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub(crate) id: OpId,
    pub(crate) deps: Frontier,
    pub(crate) lamport: u32,
    pub(crate) timestamp: Timestamp,
    pub(crate) ops: Vec<Op>,
    /// Derived from `ops` (never trusted from the wire); see [`Change::validate_shape`].
    #[serde(skip)]
    pub(crate) len: Counter,
}

impl Change {
    /// The id of the first operation.
    pub fn id(&self) -> OpId {
        self.id
    }

    /// The peer that made the change.
    pub fn peer(&self) -> PeerId {
        self.id.peer
    }

    /// How many ids the change occupies.
    pub fn len(&self) -> Counter {
        self.len
    }

    /// Whether the change occupies no ids (never true for a change the crate accepted).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The ids the change occupies.
    pub fn span(&self) -> IdSpan {
        IdSpan::new(self.id, self.len)
    }

    /// The id of the last operation.
    pub fn last_id(&self) -> OpId {
        OpId::new(self.id.peer, self.id.counter + self.len.saturating_sub(1))
    }

    /// The versions this change was made on top of.
    pub fn deps(&self) -> &Frontier {
        &self.deps
    }

    /// The hybrid logical timestamp of the change (wall-clock metadata, last-writer-wins order).
    pub fn timestamp(&self) -> Timestamp {
        self.timestamp
    }

    /// The Lamport time of the first operation: greater than that of every dependency.
    pub fn lamport(&self) -> u32 {
        self.lamport
    }

    /// The number of operations.
    pub fn op_count(&self) -> usize {
        self.ops.len()
    }

    /// Lamport time one past the change's last operation.
    pub(crate) fn lamport_end(&self) -> u32 {
        self.lamport.saturating_add(self.len)
    }

    /// Recompute the derived length and check what can be checked without a document:
    /// at least one op, ids that fit a counter, a canonical dependency list that does not point
    /// into the change itself, and Lamport time that does not overflow.
    pub(crate) fn validate_shape(&mut self) -> Result<(), &'static str> {
        let len = ops_id_len(&self.ops).ok_or("operation lengths overflow")?;
        if self.ops.is_empty() || len == 0 {
            return Err("change has no operations");
        }
        if self.ops.iter().any(|op| op.content.id_len() == 0) {
            return Err("empty operation");
        }
        if self.id.counter.checked_add(len).is_none() || self.lamport.checked_add(len).is_none() {
            return Err("ids overflow the counter space");
        }
        if !self.deps.is_canonical() {
            return Err("dependencies not sorted");
        }
        if self.deps.ids().iter().any(|d| d.peer == self.id.peer && d.counter >= self.id.counter) {
            return Err("change depends on itself or its future");
        }
        self.len = len;
        Ok(())
    }

    /// The id of each op, in order.
    pub(crate) fn op_ids(&self) -> impl Iterator<Item = (OpId, &Op)> {
        let mut next = self.id.counter;
        self.ops.iter().map(move |op| {
            let id = OpId::new(self.id.peer, next);
            next += op.content.id_len() as Counter;
            (id, op)
        })
    }
}
