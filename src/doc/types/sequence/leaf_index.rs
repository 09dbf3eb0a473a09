//! Which leaf of the piece tree holds each id, kept as runs of counters.
//!
//! Ids only change leaves when a leaf splits. Cutting, merging and growing pieces inside a leaf,
//! which every keystroke and every delete does, therefore leaves this index alone, and a
//! peer's consecutive ids in one leaf take one entry however many pieces they span.

use super::peer_map::PeerMap;
use super::run_map::RunMap;
use crate::doc::id::{Counter, OpId, PeerId};

/// Per peer, the leaf of every present id, as runs.
#[derive(Clone, Debug, Default)]
pub(super) struct LeafIndex {
    peers: PeerMap<PeerRuns>,
}

/// One peer's runs: an entry `counter → leaf` says that the present ids from `counter` up to
/// the next entry are in `leaf`. Absent counters (the peer's ids used by other containers or
/// not received yet) may fall in any run.
#[derive(Clone, Debug, Default)]
struct PeerRuns {
    runs: RunMap,
    /// One past the greatest counter placed. No entry is at or above it, so ids placed from
    /// here on fall in the last run: a peer typing on needs no entry.
    end: Counter,
}

impl LeafIndex {
    /// An index of ids listed ascending, each run `(first id, end counter, leaf)`.
    pub(super) fn from_sorted(runs: impl IntoIterator<Item = (OpId, Counter, u32)>) -> Self {
        // Per peer: the runs so far, and the end.
        type Building = (PeerId, Vec<(Counter, u32)>, Counter);
        let mut peers: Vec<Building> = Vec::new();
        for (start, end, leaf) in runs {
            match peers.last_mut() {
                Some((peer, list, last_end)) if *peer == start.peer => {
                    if list.last().is_none_or(|&(_, l)| l != leaf) {
                        list.push((start.counter, leaf));
                    }
                    *last_end = end;
                }
                _ => peers.push((start.peer, vec![(start.counter, leaf)], end)),
            }
        }
        let peers = peers
            .into_iter()
            .map(|(peer, list, end)| (peer, PeerRuns { runs: RunMap::from_sorted(list), end }))
            .collect();
        LeafIndex { peers: PeerMap::from_entries(peers) }
    }

    /// The leaf holding `id`, if `id` is present (for an absent id, any leaf or none).
    pub(super) fn leaf_of(&self, id: OpId) -> Option<usize> {
        let runs = self.peers.get(id.peer)?;
        runs.runs.floor(id.counter).map(|(_, leaf)| leaf as usize)
    }

    /// Record that new ids `from..to` of `peer` joined a piece of `leaf` that holds `from - 1`.
    pub(super) fn extend(&mut self, peer: PeerId, from: Counter, to: Counter, leaf: usize) {
        match self.peers.get_mut(peer) {
            // `from - 1`'s run is the last one and covers them.
            Some(runs) if from >= runs.end => runs.end = to,
            _ => self.place(peer, from, to, leaf),
        }
    }

    /// Record that ids `from..to` of `peer` are now in `leaf`: new ids, or ids that moved.
    pub(super) fn place(&mut self, peer: PeerId, from: Counter, to: Counter, leaf: usize) {
        let runs = self.peers.entry(peer);
        let leaf = leaf as u32;
        if from >= runs.end {
            // New ids after every placed one: only the last run may already cover them.
            if runs.runs.last().is_none_or(|(_, l)| l != leaf) {
                runs.runs.insert(from, leaf);
            }
            runs.end = to;
            return;
        }
        // Ids from `to` on, if any are present, keep their leaf.
        runs.runs.assign(from, to, leaf, to < runs.end);
        runs.end = runs.end.max(to);
    }

    /// How many runs the index holds.
    #[cfg(test)]
    pub(super) fn run_count(&self) -> usize {
        self.peers.iter().map(|(_, runs)| runs.runs.len()).sum()
    }

    /// Check that no entry is at or above its peer's end.
    #[cfg(test)]
    pub(super) fn check_ends(&self) {
        for (peer, runs) in self.peers.iter() {
            runs.runs.check();
            if let Some((last, _)) = runs.runs.last() {
                assert!(last < runs.end, "run of {peer:?} at {last} past the end {}", runs.end);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(counter: Counter) -> OpId {
        OpId::new(PeerId::new(1), counter)
    }

    #[test]
    fn placing_ids_keeps_the_leaf_of_those_after_them() {
        let mut index = LeafIndex::default();
        index.place(id(0).peer, 0, 10, 0);
        index.extend(id(0).peer, 10, 20, 0);
        assert_eq!(index.run_count(), 1, "typing on needs no entry");
        // Ids 5..8 move to leaf 1; those around them stay in leaf 0.
        index.place(id(0).peer, 5, 8, 1);
        assert_eq!((0..20).map(|c| index.leaf_of(id(c)).unwrap()).collect::<Vec<_>>(), {
            let mut want = vec![0; 20];
            want[5..8].fill(1);
            want
        });
        // Moving them back merges nothing away that is still needed.
        index.place(id(0).peer, 5, 8, 0);
        assert!((0..20).all(|c| index.leaf_of(id(c)) == Some(0)));
        // A range covering several runs takes one leaf.
        index.place(id(0).peer, 3, 6, 2);
        index.place(id(0).peer, 0, 20, 3);
        assert!((0..20).all(|c| index.leaf_of(id(c)) == Some(3)));
        assert_eq!(index.run_count(), 1);
        index.check_ends();
    }

    #[test]
    fn built_from_sorted_runs_merges_runs_of_one_leaf() {
        let p = PeerId::new(2);
        let index =
            LeafIndex::from_sorted([(id(0), 4, 0), (id(4), 9, 0), (id(9), 12, 1), (OpId::new(p, 0), 3, 1)]);
        assert_eq!(index.run_count(), 3);
        assert_eq!(index.leaf_of(id(8)), Some(0));
        assert_eq!(index.leaf_of(id(11)), Some(1));
        assert_eq!(index.leaf_of(OpId::new(p, 2)), Some(1));
        assert_eq!(index.leaf_of(OpId::new(PeerId::new(3), 0)), None);
        index.check_ends();
    }
}
