//! Version vectors and frontiers: two ways to name a version of a document.
//!
//! A [`VersionVector`] says, for every peer, how many of its operations a version contains
//! (counters `0..n`). A [`Frontier`] names the same version by its heads: the last operations
//! that no other operation in the version depends on. Frontiers are tiny (usually one id) and
//! are what changes store as dependencies; version vectors make "what does the other side
//! lack" a per-peer comparison.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::id::{Counter, IdSpan, OpId, PeerId};

/// For each peer, the number of its operations contained in a version.
///
/// Entries are kept sorted by peer, so equal versions have equal encodings. A document has few
/// peers and asks its version on every edit, so the entries are a sorted inline array searched
/// by bisection rather than a tree; it encodes as a map from peer to count.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VersionVector(SmallVec<[(PeerId, Counter); 4]>);

impl VersionVector {
    /// The empty version (no operations).
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    fn find(&self, peer: PeerId) -> Result<usize, usize> {
        self.0.binary_search_by_key(&peer, |&(p, _)| p)
    }

    /// How many operations of `peer` the version contains.
    #[inline]
    pub fn get(&self, peer: PeerId) -> Counter {
        self.find(peer).map_or(0, |at| self.0[at].1)
    }

    /// Set the number of operations of `peer` (zero removes the entry).
    #[inline]
    pub fn set(&mut self, peer: PeerId, end: Counter) {
        match (self.find(peer), end) {
            (Ok(at), 0) => {
                self.0.remove(at);
            }
            (Ok(at), _) => self.0[at].1 = end,
            (Err(_), 0) => {}
            (Err(at), _) => self.0.insert(at, (peer, end)),
        }
    }

    /// Whether the version contains operation `id`.
    pub fn contains(&self, id: OpId) -> bool {
        id.counter < self.get(id.peer)
    }

    /// Whether the version contains every id of `span`.
    pub fn contains_span(&self, span: &IdSpan) -> bool {
        span.len == 0 || span.end_counter() <= self.get(span.peer())
    }

    /// Grow the version to include `span` (and, implicitly, everything before it of that peer).
    pub fn extend_to(&mut self, span: &IdSpan) {
        let end = span.end_counter();
        if end > self.get(span.peer()) {
            self.set(span.peer(), end);
        }
    }

    /// Include everything `other` includes.
    pub fn merge(&mut self, other: &VersionVector) {
        for &(peer, end) in &other.0 {
            if end > self.get(peer) {
                self.set(peer, end);
            }
        }
    }

    /// Whether this version contains every operation of `other`.
    pub fn includes(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|&(peer, end)| self.get(peer) >= end)
    }

    /// The spans this version has and `other` lacks, one per peer.
    pub fn spans_missing_from(&self, other: &VersionVector) -> Vec<IdSpan> {
        self.0
            .iter()
            .filter_map(|&(peer, end)| {
                let from = other.get(peer);
                (end > from).then(|| IdSpan::new(OpId::new(peer, from), end - from))
            })
            .collect()
    }

    /// Iterate `(peer, number of operations)` in peer order.
    pub fn iter(&self) -> impl Iterator<Item = (PeerId, Counter)> + '_ {
        self.0.iter().copied()
    }

    /// Whether the version holds no operation.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The total number of operations in the version.
    pub fn total_ops(&self) -> u64 {
        self.0.iter().map(|&(_, c)| u64::from(c)).sum()
    }
}

impl Serialize for VersionVector {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(p, c)| (p, c)))
    }
}

impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Through a map, which sorts and deduplicates whatever order the input used.
        let map = BTreeMap::<PeerId, Counter>::deserialize(deserializer)?;
        Ok(VersionVector(map.into_iter().filter(|&(_, c)| c > 0).collect()))
    }
}

impl FromIterator<(PeerId, Counter)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (PeerId, Counter)>>(iter: I) -> Self {
        let mut vv = VersionVector::new();
        for (peer, end) in iter {
            if end > vv.get(peer) {
                vv.set(peer, end);
            }
        }
        vv
    }
}

/// The heads of a version: operations that nothing else in the version depends on.
///
/// Ids are kept sorted and unique, so equal frontiers compare and encode equally.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Frontier(SmallVec<[OpId; 2]>);

impl Frontier {
    /// The frontier of the empty document.
    pub fn new() -> Self {
        Self::default()
    }

    /// A frontier from any ids; they are sorted and deduplicated.
    pub fn from_ids(ids: impl IntoIterator<Item = OpId>) -> Self {
        let mut ids: SmallVec<[OpId; 2]> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        Frontier(ids)
    }

    /// The head ids, sorted.
    pub fn ids(&self) -> &[OpId] {
        &self.0
    }

    /// Whether this is the empty document's frontier.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Advance the frontier past a new change whose last id is `last` and whose dependencies
    /// were `deps`: the dependencies stop being heads and `last` becomes one.
    pub(crate) fn advance(&mut self, deps: &Frontier, last: OpId) {
        if self.0 == deps.0 {
            // The commonest case, a peer typing on: made on top of all heads, it replaces them.
            self.0.clear();
            self.0.push(last);
            return;
        }
        self.0.retain(|id| !(deps.0.contains(id) || (id.peer == last.peer && id.counter < last.counter)));
        if let Err(at) = self.0.binary_search(&last) {
            self.0.insert(at, last);
        }
    }

    /// Whether the frontier is well-formed: sorted, unique (a decoded frontier may not be).
    pub(crate) fn is_canonical(&self) -> bool {
        self.0.windows(2).all(|w| w[0] < w[1])
    }

    /// Make `id` the only head, in place when there is one head already.
    #[inline]
    pub(crate) fn move_only_head(&mut self, id: OpId) {
        match self.0.as_mut_slice() {
            [only] => *only = id,
            _ => *self = Frontier::from(id),
        }
    }
}

impl From<OpId> for Frontier {
    fn from(id: OpId) -> Self {
        Frontier(smallvec::smallvec![id])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(p: u64, c: Counter) -> OpId {
        OpId::new(PeerId::new(p), c)
    }

    #[test]
    fn missing_spans_are_per_peer_differences() {
        let a: VersionVector = [(PeerId::new(1), 10), (PeerId::new(2), 3)].into_iter().collect();
        let b: VersionVector = [(PeerId::new(1), 4), (PeerId::new(3), 9)].into_iter().collect();
        assert_eq!(a.spans_missing_from(&b), vec![IdSpan::new(id(1, 4), 6), IdSpan::new(id(2, 0), 3)]);
        assert!(!a.includes(&b));
        let mut c = a.clone();
        c.merge(&b);
        assert!(c.includes(&a) && c.includes(&b));
    }

    #[test]
    fn version_vectors_encode_as_maps_and_decode_canonically() {
        let v: VersionVector = [(PeerId::new(9), 2), (PeerId::new(1), 5)].into_iter().collect();
        let bytes = postcard::to_allocvec(&v).unwrap();
        let map: BTreeMap<PeerId, Counter> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(map.into_iter().collect::<Vec<_>>(), v.iter().collect::<Vec<_>>());
        assert_eq!(postcard::from_bytes::<VersionVector>(&bytes).unwrap(), v);
        // A zero entry means nothing: it decodes to the version without it.
        let with_zero: BTreeMap<PeerId, Counter> =
            [(PeerId::new(1), 5), (PeerId::new(3), 0), (PeerId::new(9), 2)].into();
        let decoded: VersionVector =
            postcard::from_bytes(&postcard::to_allocvec(&with_zero).unwrap()).unwrap();
        assert_eq!(decoded, v);
    }

    #[test]
    fn frontier_advance_replaces_dependencies() {
        let mut f = Frontier::from_ids([id(1, 4), id(2, 7)]);
        f.advance(&Frontier::from(id(1, 4)), id(3, 0));
        assert_eq!(f.ids(), &[id(2, 7), id(3, 0)]);
        f.advance(&Frontier::from_ids([id(2, 7), id(3, 0)]), id(3, 5));
        assert_eq!(f.ids(), &[id(3, 5)]);
    }
}
