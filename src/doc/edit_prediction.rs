//! Where an author's next edit most likely goes. Both binary formats (the columnar history
//! and the wire's change codec) encode an op's anchor and a delete's target against this
//! prediction, so that typing and backspacing cost almost nothing.

use super::id::{Counter, OpId, PeerId};
use super::op::OpContent;
use super::types::sequence::{Anchor, Side};

/// One author's editing position, updated after each of its ops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct EditPrediction {
    /// Where the author's next insert most likely hangs: right of the last element they
    /// inserted, or left of the first element they deleted (where Fugue puts text typed after
    /// a backspace).
    pub(crate) cursor: Option<Anchor>,
    /// The counter of the author's latest delete op and the first id it deleted: a delete
    /// right after it most likely removes the element before (another backspace).
    last_delete: Option<(Counter, OpId)>,
}

impl EditPrediction {
    /// The most likely first id deleted by `author`'s delete op with counter `op`, as a peer
    /// and a counter that may be -1: the element before the previous backspace's, or the
    /// author's own previous id (deleting what was just typed).
    pub(crate) fn predicted_delete(&self, author: PeerId, op: Counter) -> (PeerId, i64) {
        match self.last_delete {
            Some((last_op, start)) if last_op.checked_add(1) == Some(op) => {
                (start.peer, i64::from(start.counter) - 1)
            }
            _ => (author, i64::from(op) - 1),
        }
    }

    /// Update the prediction after the author's op with first id `id`.
    pub(crate) fn record_op(&mut self, id: OpId, content: &OpContent) {
        match content {
            OpContent::TextInsert { .. } | OpContent::ListInsert { .. } | OpContent::MovableInsert { .. } => {
                let last = Counter::try_from(content.id_len())
                    .ok()
                    .and_then(|len| len.checked_sub(1))
                    .and_then(|n| id.counter.checked_add(n));
                if let Some(last) = last {
                    self.cursor = Some(Anchor::after(OpId::new(id.peer, last)));
                }
            }
            OpContent::SeqDelete { spans } => {
                if let Some(first) = spans.first() {
                    self.cursor = Some(Anchor { parent: Some(first.start), side: Side::Left });
                    self.last_delete = Some((id.counter, first.start));
                }
            }
            _ => {}
        }
    }
}
