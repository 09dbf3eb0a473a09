//! A change: the unit of history, of sync and of causality.

use serde::{Deserialize, Serialize};

use super::clock::Timestamp;
use super::id::{Counter, IdSpan, OpId, PeerId};
use super::op::{Op, ops_id_len};
use super::version::Frontier;

/// Consecutive operations of one replica: one transaction, or several that continue each other
/// (see [`crate::DocumentConfig::merge_changes`]), or a part of those; with the ids they
/// occupy, what they depend on and when they were made.
///
/// The operations of a change occupy the consecutive ids `id() .. id() + len()` of one peer, so
/// a change of a thousand typed characters costs one id span, not a thousand ids. `deps` is the
/// frontier the author had when it started the change; a change is applied only after all of
/// them. Replicas may hold the same operations cut into changes differently: import takes
/// whatever part of a change it lacks and checks that the rest agrees.
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
    /// Whether an operation's effect depends on the timestamp; derived from `ops` like `len`,
    /// and kept so that merging ([`Change::absorb`]) need not scan a long run's operations.
    #[serde(skip)]
    pub(crate) uses_timestamp: bool,
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
        self.uses_timestamp = !self.ops.iter().all(Op::ignores_timestamp);
        Ok(())
    }

    /// The part of the change holding the ids `from..to` (absolute counters, clamped to the
    /// change; `from < to` after clamping). The part keeps the change's timestamp, and its
    /// Lamport time and dependencies follow from where it starts: a part that starts inside the
    /// change depends on the id right before it, which brings in everything before.
    pub(crate) fn slice(&self, from: Counter, to: Counter) -> Change {
        let end = self.id.counter + self.len;
        let (from, to) = (from.clamp(self.id.counter, end), to.clamp(self.id.counter, end));
        if from == self.id.counter && to == end {
            return self.clone();
        }
        let mut ops = Vec::new();
        for (id, op) in self.op_ids() {
            let op_end = id.counter + op.content.id_len() as Counter;
            if op_end <= from || id.counter >= to {
                continue;
            }
            let (a, b) = (from.max(id.counter) - id.counter, to.min(op_end) - id.counter);
            if a == 0 && b == op_end - id.counter {
                ops.push(op.clone());
            } else {
                ops.push(op.slice(id, a as usize, b as usize));
            }
        }
        let deps = if from == self.id.counter {
            self.deps.clone()
        } else {
            Frontier::from(OpId::new(self.id.peer, from - 1))
        };
        let uses_timestamp = !ops.iter().all(Op::ignores_timestamp);
        Change {
            id: OpId::new(self.id.peer, from),
            deps,
            lamport: self.lamport + (from - self.id.counter),
            timestamp: self.timestamp,
            ops,
            len: to - from,
            uses_timestamp,
        }
    }

    /// Append `next` to this change if it continues it: the same peer's next change, made
    /// right on top of this one and nothing else, after a change whose operations ignore the
    /// timestamp or with the same timestamp (two parts of one change). The merged change keeps
    /// the timestamp of whichever part has operations that use it (last-writer-wins writes), so
    /// those keep the timestamp they were made with; text and list edits do not use it, and a
    /// change of only those takes the later timestamp. Gives `next` back otherwise.
    ///
    /// Merging keeps a peer's typing one stored change instead of one per keystroke; any id can
    /// be a version ([`ChangeLog::version_of`](super::change_log::ChangeLog::version_of)), so no
    /// version is lost by it. The rule looks only at what every replica sees the same way:
    /// replicas that received a peer's changes cut in different places (and with timestamps
    /// taken at different times) end up storing the same changes and encoding the same bytes.
    pub(crate) fn absorb(&mut self, next: Change) -> Result<(), Change> {
        let end = self.id.counter + self.len;
        let self_ignores = !self.uses_timestamp;
        let continues = next.id.peer == self.id.peer
            && next.id.counter == end
            && next.lamport == self.lamport_end()
            && next.deps.ids() == [self.last_id()]
            && (self_ignores || next.timestamp == self.timestamp);
        if !continues {
            return Err(next);
        }
        if next.uses_timestamp {
            self.timestamp = next.timestamp;
            self.uses_timestamp = true;
        } else if self_ignores {
            self.timestamp = self.timestamp.max(next.timestamp);
        }
        let mut next_id = next.id;
        for op in next.ops {
            let len = op.content.id_len() as Counter;
            match self.ops.last_mut() {
                Some(last) => {
                    if let Err(op) = last.absorb(op, next_id) {
                        self.ops.push(op);
                    }
                }
                None => self.ops.push(op),
            }
            next_id.counter += len;
        }
        self.len += next.len;
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
