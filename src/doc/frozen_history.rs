//! History kept encoded until something needs its operations.
//!
//! A loaded document has its state (from the encoding's state section, or, for documents
//! written before it had one, by applying the history); after that the operations are only
//! needed to export them, check out an old version or compare a duplicate. Holding
//! them decoded costs tens of bytes per operation (a paper typed keystroke by keystroke is
//! tens of megabytes), while their columnar encoding is a few bytes per operation. So the log
//! keeps the bytes it was loaded from and decodes them on first use, with a small index for the
//! one question every remote change asks: the Lamport time of its dependencies.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use super::change::Change;
use super::columnar;
use super::id::{Counter, OpId, PeerId};
use super::state_section::{LamportIndex, StateSection};

/// Changes grouped per peer, each peer's in counter order (a tree: peers are few and compare
/// as integers, cheaper than hashing them on every change).
pub(crate) type ChangesByPeer = BTreeMap<PeerId, Vec<Change>>;

/// The encoded form of every change a log holds.
#[derive(Clone, Debug)]
pub(crate) struct FrozenHistory {
    /// `columnar::encode_changes` of exactly the changes the log holds, or, with `held`,
    /// `columnar::encode_changes_eliding` the visible text that state section holds.
    bytes: Vec<u8>,
    /// The encoded state section the history's visible text is kept in.
    held: Option<Arc<[u8]>>,
    /// The limit the bytes were first decoded under (they are known to fit it).
    max_decoded_bytes: usize,
    /// Per peer, `(first counter, end counter, Lamport time)` of each change.
    lamports: BTreeMap<PeerId, Vec<(Counter, Counter, u32)>>,
    change_count: usize,
    thawed: OnceLock<ChangesByPeer>,
}

impl FrozenHistory {
    /// Freeze `changes`, whose columnar encoding is `bytes` (the caller decoded them from it).
    pub(crate) fn new(bytes: Vec<u8>, max_decoded_bytes: usize, changes: &ChangesByPeer) -> Self {
        let lamports = changes
            .iter()
            .map(|(peer, list)| {
                (*peer, list.iter().map(|c| (c.id.counter, c.id.counter + c.len, c.lamport)).collect())
            })
            .collect();
        let change_count = changes.values().map(Vec::len).sum();
        FrozenHistory {
            bytes,
            held: None,
            max_decoded_bytes,
            lamports,
            change_count,
            thawed: OnceLock::new(),
        }
    }

    /// Changes never decoded: `bytes` leaves out the visible text the encoded state section
    /// `held` holds, and `lamports` (checked against the version) indexes them.
    pub(crate) fn with_state(
        bytes: Vec<u8>,
        held: Arc<[u8]>,
        max_decoded_bytes: usize,
        lamports: LamportIndex,
    ) -> Self {
        let change_count = lamports.values().map(Vec::len).sum();
        FrozenHistory {
            bytes,
            held: Some(held),
            max_decoded_bytes,
            lamports,
            change_count,
            thawed: OnceLock::new(),
        }
    }

    /// The encoded state section the bytes leave the visible text to, if any.
    pub(crate) fn held(&self) -> Option<&Arc<[u8]>> {
        self.held.as_ref()
    }

    pub(crate) fn lamport_index(&self) -> &LamportIndex {
        &self.lamports
    }

    /// The encoded changes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn change_count(&self) -> usize {
        self.change_count
    }

    /// Lamport time of `id`, if a frozen change holds it.
    pub(crate) fn lamport_of(&self, id: OpId) -> Option<u32> {
        let runs = self.lamports.get(&id.peer)?;
        let at = runs.partition_point(|&(_, end, _)| end <= id.counter);
        let &(start, _, lamport) = runs.get(at).filter(|&&(start, _, _)| start <= id.counter)?;
        Some(lamport + (id.counter - start))
    }

    /// The changes, decoded on first use.
    pub(crate) fn changes(&self) -> &ChangesByPeer {
        self.thawed.get_or_init(|| self.decode())
    }

    /// The changes, decoded unless they already were, taking them out.
    pub(crate) fn into_changes(self) -> ChangesByPeer {
        match self.thawed.into_inner() {
            Some(changes) => changes,
            None => decode(&self.bytes, self.held.as_deref(), self.max_decoded_bytes),
        }
    }

    fn decode(&self) -> ChangesByPeer {
        decode(&self.bytes, self.held.as_deref(), self.max_decoded_bytes)
    }
}

fn decode(bytes: &[u8], held: Option<&[u8]>, max_decoded_bytes: usize) -> ChangesByPeer {
    // Without a state section these exact bytes decoded under this limit when the document
    // was loaded, and decoding is deterministic, so this cannot fail. With one, the history
    // was not decoded at load (that is the point) and bytes that lie about it fail here: an
    // empty history is the harmless answer, as for any other failure.
    let decoded = match held {
        None => columnar::decode_changes(bytes, max_decoded_bytes),
        Some(section) => StateSection::decode_history(section, bytes, max_decoded_bytes),
    };
    debug_assert!(held.is_some() || decoded.is_ok(), "frozen history no longer decodes");
    let mut out = ChangesByPeer::new();
    for change in decoded.unwrap_or_default() {
        out.entry(change.id.peer).or_default().push(change);
    }
    for list in out.values_mut() {
        list.sort_unstable_by_key(|c| c.id.counter);
    }
    out
}
