//! What the columns predict from: per author, the changes and ops seen so far in the buffer.
//!
//! Encoder and decoder keep this state identically (both update it after every op and change
//! with the same values), so a column only stores how far the truth is from the prediction,
//! which for one person typing is almost always zero.

use smallvec::SmallVec;

use crate::doc::edit_prediction::EditPrediction;
use crate::doc::id::{Counter, OpId};
use crate::doc::op::OpContent;
use crate::doc::types::sequence::Anchor;

/// One author's state.
#[derive(Clone, Debug, Default)]
struct PeerState {
    /// One past the last counter of the peer's latest change (0 before any).
    next_counter: Counter,
    /// Lamport time one past the latest change.
    lamport_end: u32,
    /// Id ranges `(start, end, lamport)` of the peer's changes, sorted and disjoint (a change
    /// that would break the order starts a new list), to find a dependency's Lamport time.
    spans: SmallVec<[(Counter, Counter, u32); 2]>,
    /// Where the author's next edit most likely goes.
    edit: EditPrediction,
}

/// Per-author prediction state, indexed like the peer table. Inline for the one or two
/// authors of a message, which would otherwise cost an allocation per peer and per encode.
#[derive(Debug, Default)]
pub(super) struct History {
    peers: SmallVec<[PeerState; 2]>,
}

impl History {
    pub(super) fn with_peers(count: usize) -> Self {
        let mut peers = SmallVec::with_capacity(count);
        peers.resize_with(count, PeerState::default);
        History { peers }
    }

    fn peer(&self, index: usize) -> Option<&PeerState> {
        self.peers.get(index)
    }

    fn peer_mut(&mut self, index: usize) -> &mut PeerState {
        if self.peers.len() <= index {
            self.peers.resize_with(index + 1, PeerState::default);
        }
        &mut self.peers[index]
    }

    /// One past the last counter of the peer's latest change so far.
    pub(super) fn next_counter(&self, index: usize) -> Counter {
        self.peer(index).map_or(0, |p| p.next_counter)
    }

    fn lamport_of(&self, index: usize, counter: Counter) -> Option<u32> {
        let spans = &self.peer(index)?.spans;
        let at = spans.partition_point(|&(start, _, _)| start <= counter).checked_sub(1)?;
        let (start, end, lamport) = spans[at];
        (counter < end).then(|| lamport.checked_add(counter - start)).flatten()
    }

    /// The Lamport time a change most likely has: one past everything it depends on (that the
    /// buffer holds) and past the author's previous change.
    pub(super) fn expected_lamport(&self, index: usize, deps: &[(usize, Counter)]) -> u32 {
        let own = self.peer(index).map_or(0, |p| p.lamport_end);
        deps.iter()
            .filter_map(|&(peer, counter)| self.lamport_of(peer, counter))
            .map(|l| l.saturating_add(1))
            .fold(own, u32::max)
    }

    /// Record a change of `len` ids (after its ops).
    pub(super) fn record_change(&mut self, index: usize, counter: Counter, len: Counter, lamport: u32) {
        let peer = self.peer_mut(index);
        if peer.spans.last().is_some_and(|&(_, end, _)| counter < end) {
            peer.spans.clear();
        }
        let end = counter.saturating_add(len);
        match peer.spans.last_mut() {
            // A change that continues the previous one in ids and Lamport time extends its
            // span: `lamport_of` answers the same, and a long history keeps few spans.
            Some((start, last_end, last_lamport))
                if *last_end == counter && last_lamport.checked_add(counter - *start) == Some(lamport) =>
            {
                *last_end = end;
            }
            _ => peer.spans.push((counter, end, lamport)),
        }
        peer.next_counter = end;
        peer.lamport_end = lamport.saturating_add(len);
    }

    pub(super) fn cursor(&self, index: usize) -> Option<Anchor> {
        self.peer(index)?.edit.cursor
    }

    /// The most likely counter of the first id a delete op with id `op` removes.
    pub(super) fn predicted_delete_start(&self, index: usize, op: OpId) -> i64 {
        let edit = self.peer(index).map(|p| p.edit).unwrap_or_default();
        edit.predicted_delete(op.peer, op.counter).1
    }

    /// Update the predictions after the author's op with first id `id`.
    pub(super) fn record_op(&mut self, index: usize, id: OpId, content: &OpContent) {
        self.peer_mut(index).edit.record_op(id, content);
    }
}
