//! An ordered map from counters to leaves, for [`super::leaf_index`]: sorted entries in chunks.
//!
//! The leaf index is rewritten every time a leaf splits, once per run of ids that moves, and
//! that was a twelfth of a local replay of `sveltecomponent` with a `BTreeMap`: a range walk
//! and two inserts, each a descent through nodes of eleven keys. Here a lookup is two binary
//! searches, one over the first key of each chunk and one inside a chunk of at most
//! [`CHUNK`] entries, and an insert shifts at most a chunk. Entries are 8 bytes back to back.
//! Rewriting the range of one moved run ([`RunMap::assign`]) is one pass over the chunk that
//! holds it.
//!
//! A chunk that overflows splits, and its new half is inserted into the list of chunks, which
//! shifts that list: linear in the number of chunks, a sixty-fourth of the entries. At a million
//! entries that is some hundred kilobytes moved once every few dozen inserts; past that, the
//! list of chunks would want a level of its own.

use smallvec::SmallVec;

use crate::doc::id::Counter;

/// Entries a chunk may hold before it splits. Tests use tiny chunks so that small cases split.
const CHUNK: usize = if cfg!(test) { 4 } else { 64 };

/// Sorted `(key, leaf)` entries, in chunks of 1 to [`CHUNK`] entries.
#[derive(Clone, Debug, Default)]
pub(super) struct RunMap {
    /// The first key of each chunk, ascending.
    firsts: Vec<Counter>,
    /// The entries, ascending by key across chunks; no chunk is empty.
    chunks: Vec<Vec<(Counter, u32)>>,
}

impl RunMap {
    /// A map of `entries`, ascending by key with no key twice, in full chunks.
    pub(super) fn from_sorted(entries: Vec<(Counter, u32)>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0), "unsorted entries");
        let chunks: Vec<Vec<(Counter, u32)>> = entries.chunks(CHUNK).map(<[_]>::to_vec).collect();
        let firsts = chunks.iter().map(|chunk| chunk[0].0).collect();
        RunMap { firsts, chunks }
    }

    /// How many entries there are.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }

    /// The chunk that holds `at` or would: the last whose first key is at most `at`, or the
    /// first chunk.
    fn chunk_of(&self, at: Counter) -> usize {
        self.firsts.partition_point(|&first| first <= at).saturating_sub(1)
    }

    /// The entry with the greatest key at most `at`. The last entry is tried first: edits
    /// mostly concern a peer's latest ids, and checking it costs no search.
    pub(super) fn floor(&self, at: Counter) -> Option<(Counter, u32)> {
        if let Some(last) = self.last().filter(|&(key, _)| key <= at) {
            return Some(last);
        }
        let c = self.firsts.partition_point(|&first| first <= at).checked_sub(1)?;
        let chunk = &self.chunks[c];
        // At least the chunk's first entry is at most `at`.
        Some(chunk[chunk.partition_point(|&(key, _)| key <= at) - 1])
    }

    /// The entry with the greatest key.
    pub(super) fn last(&self) -> Option<(Counter, u32)> {
        self.chunks.last().and_then(|chunk| chunk.last()).copied()
    }

    /// Map `key` to `leaf`, replacing what it mapped to.
    pub(super) fn insert(&mut self, key: Counter, leaf: u32) {
        if self.chunks.is_empty() {
            self.firsts.push(key);
            self.chunks.push(vec![(key, leaf)]);
            return;
        }
        let c = self.chunk_of(key);
        let chunk = &mut self.chunks[c];
        let i = match chunk.binary_search_by_key(&key, |&(k, _)| k) {
            Ok(i) => {
                chunk[i].1 = leaf;
                return;
            }
            Err(i) => i,
        };
        chunk.insert(i, (key, leaf));
        if i == 0 {
            // Only before the first key of all: any other key goes after its chunk's first.
            self.firsts[c] = key;
        }
        if chunk.len() > CHUNK {
            let tail = chunk.split_off(chunk.len() / 2);
            self.firsts.insert(c + 1, tail[0].0);
            self.chunks.insert(c + 1, tail);
        }
    }

    /// Make every key in `from..to` (not empty) fall in an entry for `leaf`, keeping what the
    /// keys around the range fall in: keys below `from` always, and keys from `to` on when
    /// `keep_after` (those that fell in no entry, below the first key, then fall in `leaf`'s).
    /// Redundant entries (one that repeats the leaf of the entry before it) are not added.
    ///
    /// A leaf split calls this once per run of ids it moves. Most runs lie inside one chunk,
    /// and then one pass over that chunk replaces four searches and two shifts.
    pub(super) fn assign(&mut self, from: Counter, to: Counter, leaf: u32, keep_after: bool) {
        debug_assert!(from < to, "an empty range");
        let c = self.chunk_of(from);
        let Some(chunk) = self.chunks.get(c) else {
            self.assign_across(from, to, leaf, keep_after);
            return;
        };
        let lo = chunk.partition_point(|&(key, _)| key < from);
        let hi = lo + chunk[lo..].partition_point(|&(key, _)| key < to);
        if hi == chunk.len() && c + 1 < self.chunks.len() {
            // The range may go on into the next chunk.
            self.assign_across(from, to, leaf, keep_after);
            return;
        }
        // The entry before the range, in this chunk or at the end of the one before.
        let previous = |i: usize| match i.checked_sub(1) {
            Some(i) => Some(chunk[i].1),
            None => c.checked_sub(1).and_then(|p| self.chunks[p].last()).map(|&(_, l)| l),
        };
        let before = previous(lo);
        let at_to = chunk.get(hi).is_some_and(|&(key, _)| key == to);
        // The leaf `to` fell in, unless an entry starts there.
        let after = if at_to { None } else { previous(hi) };
        let mut replacement: SmallVec<[(Counter, u32); 2]> = SmallVec::new();
        if before != Some(leaf) {
            replacement.push((from, leaf));
        }
        if keep_after && let Some(after) = after.filter(|&l| l != leaf) {
            replacement.push((to, after));
        }
        let chunk = &mut self.chunks[c];
        chunk.splice(lo..hi, replacement);
        if chunk.is_empty() {
            self.chunks.remove(c);
            self.firsts.remove(c);
            return;
        }
        self.firsts[c] = chunk[0].0;
        if chunk.len() > CHUNK {
            let tail = chunk.split_off(chunk.len() / 2);
            self.firsts.insert(c + 1, tail[0].0);
            self.chunks.insert(c + 1, tail);
        }
    }

    /// [`Self::assign`] in general: a range over several chunks, or an empty map.
    fn assign_across(&mut self, from: Counter, to: Counter, leaf: u32, keep_after: bool) {
        let after = self.floor(to);
        let at_to = after.is_some_and(|(key, _)| key == to);
        let before = from.checked_sub(1).and_then(|c| self.floor(c)).map(|(_, l)| l);
        self.remove_range(from, to);
        if keep_after
            && !at_to
            && let Some((_, after)) = after.filter(|&(_, l)| l != leaf)
        {
            self.insert(to, after);
        }
        if before != Some(leaf) {
            self.insert(from, leaf);
        }
    }

    /// Remove every entry whose key is in `from..to`.
    pub(super) fn remove_range(&mut self, from: Counter, to: Counter) {
        let mut c = self.chunk_of(from);
        while let Some(chunk) = self.chunks.get_mut(c) {
            let lo = chunk.partition_point(|&(key, _)| key < from);
            let hi = chunk.partition_point(|&(key, _)| key < to);
            // Every key of the chunk from `lo` on is below `to`: the next chunk may hold more.
            let more = hi == chunk.len();
            chunk.drain(lo..hi);
            if chunk.is_empty() {
                self.chunks.remove(c);
                self.firsts.remove(c);
            } else {
                self.firsts[c] = chunk[0].0;
                c += 1;
            }
            if !more {
                break;
            }
        }
    }

    /// Every entry, ascending.
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = (Counter, u32)> + '_ {
        self.chunks.iter().flatten().copied()
    }

    /// Check that chunks are non-empty, not over-full, sorted and named by their first keys.
    #[cfg(test)]
    pub(super) fn check(&self) {
        assert_eq!(self.firsts.len(), self.chunks.len());
        for (first, chunk) in self.firsts.iter().zip(&self.chunks) {
            assert!(!chunk.is_empty() && chunk.len() <= CHUNK, "chunk of {}", chunk.len());
            assert_eq!(*first, chunk[0].0);
        }
        let keys: Vec<Counter> = self.iter().map(|(key, _)| key).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys out of order: {keys:?}");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Step {
        Insert(Counter, u32),
        RemoveRange(Counter, Counter),
        Assign { from: Counter, to: Counter, leaf: u32, keep_after: bool },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0..64 as Counter, 0..4u32).prop_map(|(key, leaf)| Step::Insert(key, leaf)),
            1 => (0..64 as Counter, 0..8 as Counter).prop_map(|(from, n)| Step::RemoveRange(from, from + n)),
            3 => (0..64 as Counter, 1..24 as Counter, 0..4u32, any::<bool>())
                .prop_map(|(from, n, leaf, keep_after)| Step::Assign { from, to: from + n, leaf, keep_after }),
        ]
    }

    proptest! {
        /// Any mix of inserts and range removals leaves the same entries, floors and last
        /// entry as a `BTreeMap` given the same steps.
        #[test]
        fn behaves_like_a_btree_map(
            start in proptest::collection::btree_map(0..64 as Counter, 0..4u32, 0..24),
            steps in proptest::collection::vec(step(), 0..60),
        ) {
            let mut map = RunMap::from_sorted(start.iter().map(|(&k, &v)| (k, v)).collect());
            let mut want = start;
            for step in steps {
                match step {
                    Step::Insert(key, leaf) => {
                        map.insert(key, leaf);
                        want.insert(key, leaf);
                    }
                    Step::RemoveRange(from, to) => {
                        map.remove_range(from, to);
                        want.retain(|&key, _| !(from..to).contains(&key));
                    }
                    Step::Assign { from, to, leaf, keep_after } => {
                        let floor = |m: &BTreeMap<Counter, u32>, at: Counter| m.range(..=at).next_back().map(|(_, &l)| l);
                        let was: Vec<Option<u32>> = (0..96).map(|at| floor(&want, at)).collect();
                        let had_to = want.contains_key(&to);
                        map.assign(from, to, leaf, keep_after);
                        want = map.iter().collect();
                        // What a user of the map sees: the range falls in `leaf`, the keys
                        // before it are untouched, and so are those after it that fell in an
                        // entry, if asked.
                        for at in 0..96 {
                            let now = floor(&want, at);
                            if (from..to).contains(&at) {
                                prop_assert_eq!(now, Some(leaf), "key {} in the range", at);
                            } else if at < from || (keep_after && was[at as usize].is_some()) {
                                prop_assert_eq!(now, was[at as usize], "key {} outside the range", at);
                            }
                        }
                        // And the entries it added do not repeat the leaf before them.
                        let before = |key: Counter| want.range(..key).next_back().map(|(_, &l)| l);
                        if let Some(&l) = want.get(&from) {
                            prop_assert!(before(from) != Some(l), "redundant entry at {}", from);
                        }
                        if !had_to && let Some(&l) = want.get(&to) {
                            prop_assert!(before(to) != Some(l), "redundant entry at {}", to);
                        }
                    }
                }
                map.check();
                prop_assert_eq!(map.iter().collect::<Vec<_>>(), want.iter().map(|(&k, &v)| (k, v)).collect::<Vec<_>>());
                prop_assert_eq!(map.len(), want.len());
                prop_assert_eq!(map.last(), want.last_key_value().map(|(&k, &v)| (k, v)));
                for at in 0..72 {
                    let floor = want.range(..=at).next_back().map(|(&k, &v)| (k, v));
                    prop_assert_eq!(map.floor(at), floor, "floor({})", at);
                }
            }
        }
    }

    #[test]
    fn a_key_before_every_other_renames_the_first_chunk() {
        let mut map = RunMap::from_sorted(vec![(10, 0), (20, 1)]);
        map.insert(5, 2);
        map.check();
        assert_eq!(map.floor(7), Some((5, 2)));
        assert_eq!(map.floor(4), None);
    }
}
