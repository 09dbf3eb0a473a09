//! A map keyed by peer for the sequence's per-peer indexes.
//!
//! A document has few peers and every edit looks one up several times, so a sorted vector
//! searched by bisection beats hashing the key (SipHash was a visible share of edit time).

use std::collections::BTreeMap;

use crate::doc::id::{Counter, OpId, PeerId};

/// Values per peer, sorted by peer.
#[derive(Clone, Debug)]
pub(super) struct PeerMap<T> {
    entries: Vec<(PeerId, T)>,
}

impl<T> Default for PeerMap<T> {
    fn default() -> Self {
        PeerMap { entries: Vec::new() }
    }
}

impl<T> PeerMap<T> {
    /// A map from entries ascending by peer, peers distinct.
    pub(super) fn from_entries(entries: Vec<(PeerId, T)>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0), "entries not sorted by peer");
        PeerMap { entries }
    }

    fn find(&self, peer: PeerId) -> Result<usize, usize> {
        // The peer of the previous edit is by far the most frequent, and often the only one.
        match self.entries.first() {
            Some((first, _)) if *first == peer => Ok(0),
            _ => self.entries.binary_search_by_key(&peer, |(p, _)| *p),
        }
    }

    /// The value of `peer`, if any.
    pub(super) fn get(&self, peer: PeerId) -> Option<&T> {
        self.find(peer).ok().map(|i| &self.entries[i].1)
    }

    /// The value of `peer`, if any, to modify.
    pub(super) fn get_mut(&mut self, peer: PeerId) -> Option<&mut T> {
        self.find(peer).ok().map(|i| &mut self.entries[i].1)
    }

    /// The value of `peer`, created with `T::default()` if absent.
    pub(super) fn entry(&mut self, peer: PeerId) -> &mut T
    where
        T: Default,
    {
        let i = match self.find(peer) {
            Ok(i) => i,
            Err(i) => {
                self.entries.insert(i, (peer, T::default()));
                i
            }
        };
        &mut self.entries[i].1
    }

    /// Every peer and its value, ascending by peer.
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = (PeerId, &T)> {
        self.entries.iter().map(|(p, v)| (*p, v))
    }

    /// Every value, to modify.
    #[cfg(test)]
    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.entries.iter_mut().map(|(_, v)| v)
    }
}

impl<T> PeerMap<BTreeMap<Counter, T>> {
    /// Per-peer maps from entries ascending by id, ids distinct. Built in one go, the B-trees
    /// have full nodes, where inserting keys in order leaves each node about half full.
    pub(super) fn from_sorted(entries: impl IntoIterator<Item = (OpId, T)>) -> Self {
        let mut groups: Vec<(PeerId, Vec<(Counter, T)>)> = Vec::new();
        for (id, value) in entries {
            match groups.last_mut() {
                Some((peer, list)) if *peer == id.peer => list.push((id.counter, value)),
                _ => groups.push((id.peer, vec![(id.counter, value)])),
            }
        }
        PeerMap::from_entries(
            groups.into_iter().map(|(peer, list)| (peer, list.into_iter().collect())).collect(),
        )
    }
}
