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
    /// Where the author's latest delete op ended (the counter after its last id) and the
    /// element it removed last, with the direction of that removal: a delete right after it
    /// most likely removes the next element that way (another backspace or forward delete).
    last_delete: Option<(Counter, OpId, bool)>,
}

impl EditPrediction {
    /// The most likely first id deleted by `author`'s delete op with counter `op`, as a peer
    /// and a counter that may be -1: the element next to the one the previous delete removed
    /// last, or the author's own previous id (deleting what was just typed).
    pub(crate) fn predicted_delete(&self, author: PeerId, op: Counter) -> (PeerId, i64) {
        match self.last_delete {
            Some((end, last, forward)) if end == op => {
                (last.peer, i64::from(last.counter) + if forward { 1 } else { -1 })
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
                let end = Counter::try_from(content.id_len()).ok().and_then(|n| id.counter.checked_add(n));
                if let (Some(run), Some(end)) = (spans.last(), end) {
                    // After backspaces the cursor is left of the lowest element removed, after
                    // forward deletes left of the first one: the run's lowest either way.
                    self.cursor = Some(Anchor { parent: Some(run.span.start), side: Side::Left });
                    let forward = !run.backward && run.span.len > 1;
                    self.last_delete = Some((end, run.last(), forward));
                }
            }
            _ => {}
        }
    }
}
