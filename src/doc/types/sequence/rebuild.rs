//! Rebuilding a [`Sequence`] from its canonical runs, checking everything a hostile encoder
//! could get wrong.
//!
//! Loading a document spends most of its time here, so the work is done on flat vectors sorted
//! once, not on the B-tree maps editing uses: the chains in id order, and the explicit tree
//! edges sorted by parent. A chain's edges are then one contiguous slice, and the check that
//! the runs are in the order their anchors imply walks each slice once with a cursor, since
//! a traversal of the tree reaches the elements of a chain in counter order. The maps are
//! built at the end, each in one go from sorted entries.

use super::canonical::{Body, Run};
use super::*;

/// A chain found while decoding: ids `start..end`, the first hung at `anchor`.
#[derive(Clone, Copy)]
struct FlatChain {
    start: OpId,
    end: Counter,
    anchor: Anchor,
}

/// An explicit tree edge: the chain `child_chain` (its index in id order), whose first element
/// is `child`, hangs on `side` of `parent`.
#[derive(Clone, Copy)]
struct Edge {
    parent: OpId,
    side: Side,
    child: OpId,
    child_chain: u32,
}

/// The explicit anchor of each piece's first element, by piece.
type Anchors = Vec<Option<Anchor>>;

/// The root's children, ascending, each with its chain number.
type RootKids = Vec<(OpId, u32)>;

/// A step of the traversal that checks the order.
enum Task {
    /// Visit the subtree of element `(chain, counter)`: its left children, then itself.
    Subtree(u32, Counter),
    /// Emit element `(chain, counter)` and what follows it on its chain, then right subtrees.
    Emit(u32, Counter),
}

const NOT_IN_ORDER: &str = "runs are not in the order their anchors imply";

impl<C: SeqContent> Sequence<C> {
    /// Rebuild from decoded runs, checking everything a hostile encoder could get wrong.
    pub(super) fn from_runs(runs: Vec<Run<C>>) -> Result<Self, &'static str> {
        let mut list = PieceList::with_capacity(runs.len());
        for run in runs {
            let (len, content) = match run.body {
                Body::Visible(content) => {
                    (Counter::try_from(content.len()).map_err(|_| "run too long")?, Some(content))
                }
                Body::Deleted(len) => (len, None),
            };
            list.push(run.start, len, content, run.anchor)?;
        }
        Self::from_piece_list(list)
    }

    /// [`Self::from_runs`] of runs already gathered into pieces.
    pub(super) fn from_piece_list(list: PieceList<C>) -> Result<Self, &'static str> {
        let PieceList { pieces, anchors } = list;
        if u32::try_from(pieces.len()).is_err() {
            return Err("too many runs");
        }
        let peers = peers_of(&pieces);
        let id_order = id_order(&pieces, &peers);
        let chains = chains_in_id_order(&pieces, &anchors, &id_order)?;
        let (root_kids, edges) = edges_by_parent(&chains, &peers)?;
        let first_edge = edge_ranges(&chains, &edges)?;

        check_order(&pieces, &chains, &edges, &first_edge, &root_kids)?;

        let mut seq = Sequence::<C> {
            segments: segments_by_peer(&chains),
            root_kids: root_kids.iter().map(|&(id, _)| id).collect(),
            ..Sequence::default()
        };
        seq.set_kids(&chains, &edges, &first_edge);
        seq.pieces = Pieces::from_pieces(pieces, &id_order);
        Ok(seq)
    }

    /// Fill the children maps and the branch index from the sorted edges.
    fn set_kids(&mut self, chains: &[FlatChain], edges: &[Edge], first_edge: &[usize]) {
        let mut left: Vec<(OpId, Kids)> = Vec::new();
        let mut right: Vec<(OpId, Kids)> = Vec::new();
        let mut branches: Vec<(PeerId, Vec<Counter>)> = Vec::new();
        for (chain, bounds) in chains.iter().zip(first_edge.windows(2)) {
            let mut group = &edges[bounds[0]..bounds[1]];
            while let Some(first) = group.first() {
                let n = group.iter().take_while(|e| e.parent == first.parent && e.side == first.side).count();
                let kids: Kids = group[..n].iter().map(|e| e.child).collect();
                let parent = first.parent;
                if first.side == Side::Right {
                    // A branch: the largest right child is explicit, not the chain child.
                    let largest = kids[kids.len() - 1];
                    let chain_child = parent.counter + 1 < chain.end;
                    if !chain_child || largest > OpId::new(parent.peer, parent.counter + 1) {
                        match branches.last_mut() {
                            Some((peer, list)) if *peer == parent.peer => list.push(parent.counter),
                            _ => branches.push((parent.peer, vec![parent.counter])),
                        }
                    }
                    right.push((parent, kids));
                } else {
                    left.push((parent, kids));
                }
                group = &group[n..];
            }
        }
        self.left_kids = PeerMap::from_sorted(left);
        self.right_kids = PeerMap::from_sorted(right);
        self.branches = PeerMap::from_entries(
            branches.into_iter().map(|(peer, list)| (peer, list.into_iter().collect())).collect(),
        );
    }
}

/// Decoded runs gathered into pieces in document order, merged where the canonical form would
/// have merged them, with the explicit anchor of each piece's first element.
pub(super) struct PieceList<C> {
    pieces: Vec<Piece<C>>,
    anchors: Anchors,
}

impl<C: SeqContent> PieceList<C> {
    pub(super) fn with_capacity(runs: usize) -> Self {
        PieceList { pieces: Vec::with_capacity(runs), anchors: Vec::with_capacity(runs) }
    }

    /// Add the run of `len` elements from `start`, with `content` (`None` for tombstones)
    /// holding exactly `len` elements, and `anchor` for its first element unless it continues
    /// a chain.
    pub(super) fn push(
        &mut self,
        start: OpId,
        len: Counter,
        content: Option<C>,
        anchor: Option<Anchor>,
    ) -> Result<(), &'static str> {
        if len == 0 {
            return Err("empty run");
        }
        if start.counter.checked_add(len).is_none() {
            return Err("run ids overflow the counter");
        }
        let anchor = anchor.filter(|a| !continues_chain(start, a));
        if anchor.is_none()
            && let Some(prev) = self.pieces.last_mut()
            && prev.peer == start.peer
            && prev.end() == start.counter
            && prev.content.is_some() == content.is_some()
        {
            prev.len += len;
            if let (Some(a), Some(b)) = (prev.content.as_mut(), content) {
                a.append(b);
            }
            return Ok(());
        }
        self.pieces.push(Piece::new(start, len, content, anchor.is_some()));
        self.anchors.push(anchor);
        Ok(())
    }
}

/// The distinct peers of the pieces, ascending. An id packs into an integer as its peer's
/// rank here and its counter, so that sorting ids compares integers.
fn peers_of<C>(pieces: &[Piece<C>]) -> Vec<PeerId> {
    let mut peers: Vec<PeerId> = Vec::new();
    let mut last = None;
    for piece in pieces {
        if last != Some(piece.peer) {
            last = Some(piece.peer);
            if let Err(at) = peers.binary_search(&piece.peer) {
                peers.insert(at, piece.peer);
            }
        }
    }
    peers
}

/// `id` packed as `(rank of its peer, counter)`, which orders as ids do; `None` if its peer has
/// no element.
fn packed_id(peers: &[PeerId], id: OpId) -> Option<u64> {
    let rank = match peers {
        [only] if *only == id.peer => 0,
        _ => peers.binary_search(&id.peer).ok()?,
    };
    Some((rank as u64) << 32 | u64::from(id.counter))
}

/// The indexes of the pieces, ascending by first id.
fn id_order<C>(pieces: &[Piece<C>], peers: &[PeerId]) -> Vec<u32> {
    // Every piece's peer is in `peers`, so none is left out.
    let mut keyed: Vec<(u64, u32)> =
        pieces.iter().zip(0u32..).filter_map(|(p, i)| Some((packed_id(peers, p.start())?, i))).collect();
    radix_sort(&mut keyed);
    keyed.into_iter().map(|(_, i)| i).collect()
}

/// Sort by key, stably: least significant byte first, skipping the bytes on which every key
/// agrees. Keys are packed ids, whose high bytes (large counters, peer ranks) rarely vary, so
/// this takes two or three linear passes where a comparison sort took most of the load time.
fn radix_sort(items: &mut Vec<(u64, u32)>) {
    let (mut any, mut all) = (0u64, u64::MAX);
    for &(key, _) in items.iter() {
        any |= key;
        all &= key;
    }
    let varying = any ^ all;
    let mut scratch = vec![(0u64, 0u32); items.len()];
    for shift in (0..64).step_by(8) {
        if (varying >> shift) & 0xff == 0 {
            continue;
        }
        let mut starts = [0usize; 256];
        for &(key, _) in items.iter() {
            starts[(key >> shift & 0xff) as usize] += 1;
        }
        let mut sum = 0;
        for start in &mut starts {
            (*start, sum) = (sum, sum + *start);
        }
        for &item in items.iter() {
            let digit = (item.0 >> shift & 0xff) as usize;
            scratch[starts[digit]] = item;
            starts[digit] += 1;
        }
        std::mem::swap(items, &mut scratch);
    }
}

/// The chains, ascending by id: pieces with an anchor start one, the others continue the
/// chain ending right before them.
fn chains_in_id_order<C>(
    pieces: &[Piece<C>],
    anchors: &[Option<Anchor>],
    id_order: &[u32],
) -> Result<Vec<FlatChain>, &'static str> {
    let mut chains: Vec<FlatChain> = Vec::new();
    let mut prev: Option<(PeerId, Counter)> = None;
    for &i in id_order {
        let (piece, anchor) = (&pieces[i as usize], anchors[i as usize]);
        let (start, end) = (piece.start(), piece.end());
        if prev.is_some_and(|(peer, prev_end)| peer == start.peer && prev_end > start.counter) {
            return Err("duplicate element id");
        }
        prev = Some((start.peer, end));
        match anchor {
            Some(anchor) => chains.push(FlatChain { start, end, anchor }),
            None => match chains.last_mut() {
                Some(chain) if chain.start.peer == start.peer && chain.end == start.counter => {
                    chain.end = end
                }
                _ => return Err("run continues a chain whose previous element is missing"),
            },
        }
    }
    Ok(chains)
}

/// The root's children (with their chain numbers), and the explicit edges sorted by parent,
/// each parent's left children first, then its right ones, each side ascending by id.
fn edges_by_parent(chains: &[FlatChain], peers: &[PeerId]) -> Result<(RootKids, Vec<Edge>), &'static str> {
    let mut root_kids = Vec::new();
    // (packed parent, child chain): left edges first, then right ones, each in chain order,
    // which is id order; a stable sort by parent then leaves them as wanted.
    let (mut left, mut right) = (Vec::new(), Vec::new());
    for (chain, index) in chains.iter().zip(0u32..) {
        match (chain.anchor.parent, chain.anchor.side) {
            (None, Side::Right) => root_kids.push((chain.start, index)),
            (None, Side::Left) => return Err("left child of the root"),
            (Some(parent), side) => {
                let parent = packed_id(peers, parent).ok_or("anchor names a missing element")?;
                match side {
                    Side::Left => left.push((parent, index)),
                    Side::Right => right.push((parent, index)),
                }
            }
        }
    }
    left.append(&mut right);
    radix_sort(&mut left);
    let edges = left
        .into_iter()
        .map(|(parent, child_chain)| {
            let child = &chains[child_chain as usize];
            Edge {
                parent: OpId::new(peers[(parent >> 32) as usize], parent as u32),
                side: child.anchor.side,
                child: child.start,
                child_chain,
            }
        })
        .collect();
    Ok((root_kids, edges))
}

/// For each chain (and one past the last), the index of the first edge whose parent is in it
/// or a later chain: the edges of chain `i` are `first_edge[i]..first_edge[i + 1]`. Fails if an
/// edge's parent is in no chain.
fn edge_ranges(chains: &[FlatChain], edges: &[Edge]) -> Result<Vec<usize>, &'static str> {
    let mut first_edge = Vec::with_capacity(chains.len() + 1);
    let mut e = 0;
    for chain in chains {
        if edges.get(e).is_some_and(|edge| edge.parent < chain.start) {
            return Err("anchor names a missing element");
        }
        first_edge.push(e);
        while edges
            .get(e)
            .is_some_and(|edge| edge.parent.peer == chain.start.peer && edge.parent.counter < chain.end)
        {
            e += 1;
        }
    }
    if e < edges.len() {
        return Err("anchor names a missing element");
    }
    first_edge.push(e);
    Ok(first_edge)
}

/// Check that the pieces hold the elements in the in-order traversal of the tree. Elements in
/// a cycle are never reached, so a cyclic tree shows as pieces left over.
///
/// Every element is visited once and each chain's elements in counter order (a chain's next
/// element is its first right child), so each chain's edges are consumed front to back: a
/// cursor per chain replaces the lookups of children by parent. The traversal is compared
/// with the pieces as it goes.
fn check_order<C>(
    pieces: &[Piece<C>],
    chains: &[FlatChain],
    edges: &[Edge],
    first_edge: &[usize],
    root_kids: &[(OpId, u32)],
) -> Result<(), &'static str> {
    let mut cursor: Vec<usize> = first_edge[..chains.len()].to_vec();
    let mut stored = StoredOrder { pieces, next: 0, offset: 0 };
    let mut stack: Vec<Task> =
        root_kids.iter().rev().map(|&(id, chain)| Task::Subtree(chain, id.counter)).collect();
    while let Some(task) = stack.pop() {
        match task {
            Task::Subtree(chain, counter) => {
                let g = chain as usize;
                stack.push(Task::Emit(chain, counter));
                let (from, limit) = (cursor[g], first_edge[g + 1]);
                let mut to = from;
                while to < limit && edges[to].parent.counter == counter && edges[to].side == Side::Left {
                    to += 1;
                }
                cursor[g] = to;
                stack.extend(
                    edges[from..to].iter().rev().map(|e| Task::Subtree(e.child_chain, e.child.counter)),
                );
            }
            Task::Emit(chain, from) => {
                let g = chain as usize;
                let (peer, end) = (chains[g].start.peer, chains[g].end);
                let (first, limit) = (cursor[g], first_edge[g + 1]);
                // The chain runs on until an element with left children, or up to and
                // including one with explicit right children.
                let to = match edges[first..limit].first() {
                    Some(e) if e.side == Side::Left => e.parent.counter,
                    Some(e) => e.parent.counter.saturating_add(1),
                    None => end,
                };
                if to <= from {
                    // Children left behind by an earlier element: only a malformed tree.
                    return Err(NOT_IN_ORDER);
                }
                stored.expect(peer, from, to)?;
                let mut last = first;
                while last < limit && edges[last].side == Side::Right && edges[last].parent.counter == to - 1
                {
                    last += 1;
                }
                cursor[g] = last;
                // Right subtrees ascending by id, the chain's next element among them.
                let mut next = (to < end).then_some(to);
                for e in edges[first..last].iter().rev() {
                    if let Some(c) = next
                        && e.child < OpId::new(peer, c)
                    {
                        stack.push(Task::Subtree(chain, c));
                        next = None;
                    }
                    stack.push(Task::Subtree(e.child_chain, e.child.counter));
                }
                if let Some(c) = next {
                    stack.push(Task::Subtree(chain, c));
                }
            }
        }
    }
    if stored.next == pieces.len() { Ok(()) } else { Err(NOT_IN_ORDER) }
}

/// The pieces' elements, consumed in document order.
struct StoredOrder<'a, C> {
    pieces: &'a [Piece<C>],
    /// The piece holding the next element, and how far into it.
    next: usize,
    offset: Counter,
}

impl<C> StoredOrder<'_, C> {
    /// Consume elements `from..to` of `peer`, which must come next.
    fn expect(&mut self, peer: PeerId, mut from: Counter, to: Counter) -> Result<(), &'static str> {
        while from < to {
            let piece = self.pieces.get(self.next).ok_or(NOT_IN_ORDER)?;
            if piece.peer != peer || piece.counter + self.offset != from {
                return Err(NOT_IN_ORDER);
            }
            let take = (to - from).min(piece.len - self.offset);
            from += take;
            self.offset += take;
            if self.offset == piece.len {
                (self.next, self.offset) = (self.next + 1, 0);
            }
        }
        Ok(())
    }
}

/// The chains as each peer's [`Chains`].
fn segments_by_peer(chains: &[FlatChain]) -> PeerMap<Chains> {
    let mut out: Vec<(PeerId, Chains)> = Vec::new();
    for chain in chains {
        let segment = Segment::new(chain.start.counter, chain.end, chain.anchor);
        match out.last_mut() {
            Some((peer, list)) if *peer == chain.start.peer => list.0.push(segment),
            _ => out.push((chain.start.peer, Chains(vec![segment]))),
        }
    }
    for (_, list) in &mut out {
        list.0.shrink_to_fit();
    }
    PeerMap::from_entries(out)
}

#[cfg(test)]
mod tests {
    use super::radix_sort;

    #[test]
    fn radix_sort_is_a_stable_sort_by_key() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Keys varying in the low bytes (with many repeats), in a high byte only, everywhere,
        // or not at all.
        let keys: [&mut dyn FnMut(u64) -> u64; 4] =
            [&mut |r| (r % 300) | (7 << 40), &mut |r| (r % 50) << 48, &mut |r| r, &mut |_| 42];
        for (case, key) in keys.into_iter().enumerate() {
            let mut items: Vec<(u64, u32)> = (0..2_000).map(|i| (key(next()), i)).collect();
            let mut expected = items.clone();
            expected.sort_by_key(|&(key, _)| key);
            radix_sort(&mut items);
            assert_eq!(items, expected, "case {case}");
        }
    }
}
