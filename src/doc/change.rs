//! A change: the unit of history, of sync and of causality.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::clock::Timestamp;
use super::id::{Counter, IdSpan, OpId, PeerId};
use super::op::{ContainerId, LocalEdit, Op, OpContent, ops_id_len};
use super::types::sequence::worth_trimming;
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

/// Whether a local operation appended to its change may join the operation before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Join {
    /// It may: join it if it continues that operation.
    Try,
    /// The caller already found that it does not continue it ([`Op::extend_local`] refused
    /// it, and joining follows the same rule), so the check is skipped.
    Never,
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

    /// The container each operation edits, in order (repeats included): what a server
    /// plugin checks to allow edits to some containers and not others.
    pub fn containers(&self) -> impl Iterator<Item = &ContainerId> {
        self.ops.iter().map(|op| &op.container)
    }

    /// Lamport time one past the change's last operation.
    pub(crate) fn lamport_end(&self) -> u32 {
        self.lamport.saturating_add(self.len)
    }

    /// Recompute the derived length and check what can be checked without a document:
    /// at least one op, ids that fit a counter, a canonical dependency list that does not point
    /// into the change itself, and Lamport time that does not overflow.
    pub(crate) fn validate_shape(&mut self) -> Result<(), &'static str> {
        (self.len, self.uses_timestamp) = self.shape()?;
        Ok(())
    }

    /// [`Change::validate_shape`] without storing what it derives: the length and whether an
    /// operation reads the timestamp.
    pub(crate) fn shape(&self) -> Result<(Counter, bool), &'static str> {
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
        Ok((len, !self.ops.iter().all(Op::ignores_timestamp)))
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
        // Walk in from the nearer end: exports cut the tail of a long merged change, checkouts
        // its head, and neither should cost a pass over the whole change.
        let piece = |id: OpId, op: &Op, op_end: Counter| {
            let (a, b) = (from.max(id.counter) - id.counter, to.min(op_end) - id.counter);
            if a == 0 && b == op_end - id.counter { op.clone() } else { op.slice(id, a as usize, b as usize) }
        };
        let mut ops = Vec::new();
        if from - self.id.counter <= end - to {
            let mut at = self.id.counter;
            for op in &self.ops {
                let op_end = at + op.content.id_len() as Counter;
                if at >= to {
                    break;
                }
                if op_end > from {
                    ops.push(piece(OpId::new(self.id.peer, at), op, op_end));
                }
                at = op_end;
            }
        } else {
            let mut op_end = end;
            for op in self.ops.iter().rev() {
                let at = op_end - op.content.id_len() as Counter;
                if op_end <= from {
                    break;
                }
                if at < to {
                    ops.push(piece(OpId::new(self.id.peer, at), op, op_end));
                }
                op_end = at;
            }
            ops.reverse();
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
    pub(crate) fn absorb<'a>(&mut self, next: Cow<'a, Change>) -> Result<(), Cow<'a, Change>> {
        if !self.continued_by(&next) {
            return Err(next);
        }
        self.take_header(&next);
        match next {
            Cow::Owned(next) => self.join_ops(next.id, next.ops.into_iter().map(Cow::Owned)),
            Cow::Borrowed(next) => self.join_ops(next.id, next.ops.iter().map(Cow::Borrowed)),
        }
        Ok(())
    }

    /// Append local operation `op`, with first id `id` and `len` ids, made at `timestamp`, to
    /// this change, whose ids end right before `id`: the transaction that made `op` started
    /// this change or continues it (see [`super::change_log::ChangeLog::local_continues`]).
    /// `op` is joined into the last operation if it continues it, unless `join` says that the
    /// caller already knows it does not.
    pub(crate) fn append_local(&mut self, op: Op, id: OpId, len: Counter, timestamp: Timestamp, join: Join) {
        // The last operation stops growing: give back the room its text took for typing on.
        if let Some(Op { content: OpContent::TextInsert { text, .. }, .. }) = self.ops.last_mut()
            && worth_trimming(text)
        {
            text.shrink_to_fit();
        }
        self.take_header_parts(len, timestamp, !op.ignores_timestamp());
        if join == Join::Try {
            self.join_ops(id, std::iter::once(Cow::Owned(op)));
        } else {
            debug_assert!(self.ops.last().is_none_or(|last| !last.joined_by(&op, id)), "{op:?} joins");
            self.ops.push(op);
        }
    }

    /// [`Change::append_local`] of an edit that continues this change's last operation (typing
    /// on, backspacing), appended to that operation in place without building one; whether it
    /// did.
    pub(crate) fn append_local_edit(
        &mut self,
        edit: LocalEdit<'_>,
        id: OpId,
        len: Counter,
        timestamp: Timestamp,
    ) -> bool {
        let Some(last) = self.ops.last_mut() else { return false };
        if !last.extend_local(edit, id) {
            return false;
        }
        self.take_header_parts(len, timestamp, false);
        true
    }

    /// Whether `next` may be merged into this change (see [`Change::absorb`]).
    fn continued_by(&self, next: &Change) -> bool {
        let self_ignores = !self.uses_timestamp;
        next.id.peer == self.id.peer
            && next.id.counter == self.id.counter + self.len
            && next.lamport == self.lamport_end()
            && next.deps.ids() == [self.last_id()]
            && (self_ignores || next.timestamp == self.timestamp)
    }

    /// Take the length and timestamp of `next`, which continues this change.
    fn take_header(&mut self, next: &Change) {
        self.take_header_parts(next.len, next.timestamp, next.uses_timestamp);
    }

    /// Take `len` more ids, made at `timestamp`, which they depend on if `uses_timestamp`.
    fn take_header_parts(&mut self, len: Counter, timestamp: Timestamp, uses_timestamp: bool) {
        if uses_timestamp {
            self.timestamp = timestamp;
            self.uses_timestamp = true;
        } else if !self.uses_timestamp {
            self.timestamp = self.timestamp.max(timestamp);
        }
        self.len += len;
    }

    /// Append operations starting at id `next_id`, each joined onto the last one if it
    /// continues it.
    fn join_ops<'a>(&mut self, mut next_id: OpId, ops: impl Iterator<Item = Cow<'a, Op>>) {
        for op in ops {
            let len = op.content.id_len() as Counter;
            match self.ops.last_mut() {
                Some(last) => {
                    if let Err(op) = last.absorb(op, next_id) {
                        self.ops.push(op.into_owned());
                    }
                }
                None => self.ops.push(op.into_owned()),
            }
            next_id.counter += len;
        }
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

#[cfg(test)]
mod tests {
    use crate::{Document, PeerId, VersionVector};

    /// One stored change: typing, a delete and a list insert, each op several ids long.
    fn long_change() -> super::Change {
        let mut doc = Document::new(PeerId::new(1));
        {
            let mut txn = doc.transact();
            txn.text("t").insert(0, "héllo").unwrap();
            txn.text("t").delete(1, 2).unwrap();
            txn.list::<i64>("l").insert_many(0, &[1, 2, 3]).unwrap();
            txn.text("t").insert(3, "wörld").unwrap();
        }
        let mut changes = doc.changes_since(&VersionVector::new()).unwrap();
        assert_eq!(changes.len(), 1);
        changes.remove(0)
    }

    #[test]
    fn every_cut_of_a_change_reassembles_to_it() {
        let change = long_change();
        let (start, end) = (change.id.counter, change.id.counter + change.len);
        for from in start..end {
            for to in from + 1..=end {
                let part = change.slice(from, to);
                assert_eq!((part.id.counter, part.len), (from, to - from));
                // The part is the same as cutting a longer part further.
                assert_eq!(change.slice(start, to).slice(from, to), part, "{from}..{to}");
                assert_eq!(change.slice(from, end).slice(from, to), part, "{from}..{to}");
            }
            // Head and tail join back into the whole, ops and all.
            if from > start {
                let mut head = change.slice(start, from);
                head.absorb(std::borrow::Cow::Owned(change.slice(from, end))).unwrap();
                let mut normal = change.clone();
                normal.ops = super::super::intake::normalized_for_tests(&change);
                head.ops = super::super::intake::normalized_for_tests(&head);
                assert_eq!(head, normal, "joined at {from}");
            }
        }
    }
}
