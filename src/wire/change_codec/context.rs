//! The state both ends of one direction of a connection keep in lock-step: the peer and
//! container tables and, per author, what the next change most likely looks like.
//!
//! The encoder and the decoder update it at the same points with the same values (after each
//! op, after each change), so the bytes only say where a change departs from the prediction.

use crate::doc::clock::Timestamp;
use crate::doc::edit_prediction::EditPrediction;
use crate::doc::id::{Counter, OpId, PeerId};
use crate::doc::op::{ContainerId, OpContent};

/// The author of a change: interned (`index`), or written literally because the table is full
/// (then nothing is remembered about it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Author {
    pub(super) peer: PeerId,
    pub(super) index: Option<usize>,
}

/// What is known about one peer's changes in this direction.
#[derive(Clone, Copy, Debug)]
pub(super) struct PeerState {
    pub(super) peer: PeerId,
    /// Whether a change of this peer was seen; the fields below mean nothing before.
    pub(super) seen: bool,
    /// One past the last counter of the peer's latest change.
    pub(super) end: Counter,
    /// Lamport time one past the latest change.
    pub(super) lamport_end: u32,
    pub(super) timestamp: Option<Timestamp>,
    /// The table index of the container of the peer's latest op (none if written literally).
    pub(super) container: Option<usize>,
    /// Where the peer's next edit most likely goes.
    pub(super) edit: EditPrediction,
}

impl PeerState {
    pub(super) fn new(peer: PeerId) -> Self {
        PeerState {
            peer,
            seen: false,
            end: 0,
            lamport_end: 0,
            timestamp: None,
            container: None,
            edit: EditPrediction::default(),
        }
    }

    /// The last id of the peer's latest change, which a continuing change depends on.
    pub(super) fn last_id(&self) -> Option<OpId> {
        let last = self.end.checked_sub(1).filter(|_| self.seen)?;
        Some(OpId::new(self.peer, last))
    }

    /// The most likely first id deleted by a delete op with counter `op` (as a peer and a
    /// counter that may be -1).
    pub(super) fn predicted_delete(&self, op: Counter) -> (PeerId, i64) {
        self.edit.predicted_delete(self.peer, op)
    }

    /// Update the predictions after this peer's op with first id `id`.
    pub(super) fn record_op(&mut self, id: OpId, content: &OpContent, container: Option<usize>) {
        self.container = container;
        self.edit.record_op(id, content);
    }
}

/// The tables and predictions of one direction.
#[derive(Clone, Debug, Default)]
pub(super) struct Context {
    /// Interned peers, in order of first mention.
    pub(super) peers: Vec<PeerState>,
    /// Interned containers, in order of first mention.
    pub(super) containers: Vec<ContainerId>,
    /// Bytes of root container names in `containers`.
    pub(super) name_bytes: usize,
    /// The author of the previous change.
    pub(super) prev_author: Option<Author>,
    /// The previous change's timestamp (zero before any).
    pub(super) prev_timestamp: Timestamp,
    /// The previous change's Lamport end (zero before any).
    pub(super) prev_lamport_end: u32,
}

impl Context {
    /// A copy of what is known about `author`, to work on during one change.
    pub(super) fn state_of(&self, author: Author) -> PeerState {
        author.index.and_then(|i| self.peers.get(i)).copied().unwrap_or_else(|| PeerState::new(author.peer))
    }

    /// The timestamp a change's is written against: its author's previous one, or the previous
    /// change's for a new author.
    pub(super) fn timestamp_reference(&self, state: &PeerState) -> Timestamp {
        state.timestamp.unwrap_or(self.prev_timestamp)
    }

    /// The Lamport time a change that does not continue its author's previous one is written
    /// against.
    pub(super) fn lamport_reference(&self, state: &PeerState) -> u32 {
        if state.seen { state.lamport_end } else { self.prev_lamport_end }
    }

    /// Record a change of `len` ids (after its ops, which updated `state`).
    pub(super) fn finish_change(
        &mut self,
        author: Author,
        mut state: PeerState,
        counter: Counter,
        len: Counter,
        lamport: u32,
        timestamp: Timestamp,
    ) {
        state.seen = true;
        state.end = counter.saturating_add(len);
        state.lamport_end = lamport.saturating_add(len);
        state.timestamp = Some(timestamp);
        if let Some(slot) = author.index.and_then(|i| self.peers.get_mut(i)) {
            *slot = state;
        }
        self.prev_author = Some(author);
        self.prev_timestamp = timestamp;
        self.prev_lamport_end = state.lamport_end;
    }
}
