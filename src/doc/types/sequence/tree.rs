//! The document order: pieces in a B-tree whose nodes cache visible and total element counts,
//! plus an index from each id to its leaf ([`LeafIndex`]).
//!
//! Nodes live in two arenas (leaves and inner nodes) and name each other by index, which keeps
//! the tree free of `unsafe` and of reference counting. Nothing is ever removed from the order
//! (deleting makes tombstones), so nodes are never freed: leaves only split, and leaf 0 is always
//! the first one.

use std::borrow::Cow;

use super::SeqContent;
use super::leaf_index::LeafIndex;
use crate::doc::id::{Counter, OpId, PeerId};

/// Pieces a leaf may hold before it splits: small enough that scanning a leaf is cheap, large
/// enough that the tree stays shallow. Tests use tiny nodes so that small cases grow deep trees.
const MAX_PIECES: usize = if cfg!(test) { 8 } else { 64 };

/// Children an inner node may hold before it splits.
const MAX_KIDS: usize = if cfg!(test) { 4 } else { 32 };

/// Consecutive ids of one chain, adjacent in document order, all visible or all deleted.
///
/// The first id is kept as its two parts, packed with `len` and the chain flag: a piece takes
/// 48 bytes, and pieces are most of a sequence's memory.
#[derive(Clone, Debug)]
pub(super) struct Piece<C> {
    /// The peer of the ids.
    pub(super) peer: PeerId,
    /// The first counter.
    pub(super) counter: Counter,
    pub(super) len: Counter,
    /// `None` once deleted: tombstones keep their ids and place, not their content.
    pub(super) content: Option<C>,
    /// Whether the first element starts a chain (has an explicit anchor), so that the piece
    /// never merges into the one before. Kept here because deleting asks it of neighbouring
    /// pieces all the time, and the chains, a long sorted vector, answer it with a search
    /// that misses the cache.
    pub(super) starts_chain: bool,
}

impl<C> Piece<C> {
    /// How many visible elements the piece holds.
    fn vis(&self) -> Counter {
        if self.content.is_some() { self.len } else { 0 }
    }

    pub(super) fn new(start: OpId, len: Counter, content: Option<C>, starts_chain: bool) -> Self {
        Piece { peer: start.peer, counter: start.counter, len, content, starts_chain }
    }

    /// The first id.
    pub(super) fn start(&self) -> OpId {
        OpId::new(self.peer, self.counter)
    }

    /// One past the last counter.
    pub(super) fn end(&self) -> Counter {
        self.counter.saturating_add(self.len)
    }
}

/// An element's place: piece `piece` of leaf `leaf`, `offset` elements in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Loc {
    pub(super) leaf: usize,
    pub(super) piece: usize,
    pub(super) offset: Counter,
}

#[derive(Clone, Debug)]
struct Leaf<C> {
    pieces: Vec<Piece<C>>,
    /// The visible length of each piece, side by side: finding a position scans a leaf's
    /// pieces, and reading 4 bytes a piece instead of a 48-byte piece each touches a twelfth
    /// of the memory (the scan was most of a position lookup's time on `sveltecomponent`).
    vis: Vec<Counter>,
    /// The inner node holding this leaf.
    parent: usize,
    /// Neighbours in document order, for walks that cross leaves.
    prev: Option<usize>,
    next: Option<usize>,
    visible: usize,
    total: usize,
}

#[derive(Clone, Debug)]
struct Inner {
    kids: Vec<usize>,
    /// Whether `kids` index leaves rather than inner nodes (all kids of a node are alike).
    leaf_kids: bool,
    parent: Option<usize>,
    visible: usize,
    total: usize,
}

/// The pieces of a sequence in document order.
#[derive(Clone, Debug)]
pub(super) struct Pieces<C> {
    leaves: Vec<Leaf<C>>,
    inners: Vec<Inner>,
    /// The root inner node; meaningless while there are no leaves.
    root: usize,
    /// The leaf of each id.
    index: LeafIndex,
    /// Where the last edit was: typing and deleting mostly happen next to the previous edit.
    cursor: Cursor,
    /// Visible elements whose position the last edit left known, the likely places of the
    /// next one: `(position, id)`. Any change of counts forgets them.
    hints: [Option<(usize, OpId)>; 2],
}

/// The place of the last edit, so that the next one nearby needs neither an index lookup nor a
/// descent from the root.
#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    leaf: usize,
    /// A piece of `leaf` at or next to the edit; may be stale, so it is checked before use.
    piece: usize,
    /// How many visible elements precede `leaf`, while known: edits inside the leaf keep it,
    /// edits elsewhere forget it.
    start: Option<usize>,
}

/// Room for `extra` more pieces in a leaf's `pieces`. Leaves are the sequence's largest cost and
/// most stop being edited well before they fill, so capacity grows by a few pieces at a time
/// rather than doubling: a leaf gets some hundred inserts in all, and growing costs one copy
/// of the leaf every few of them, about what an insert's shift of the pieces after it costs.
fn make_room<C>(leaf: &mut Leaf<C>, extra: usize) {
    const STEP: usize = 8;
    let need = leaf.pieces.len() + extra;
    if need > leaf.pieces.capacity() {
        let target = (leaf.pieces.capacity() + STEP).min(MAX_PIECES).max(need);
        leaf.pieces.reserve_exact(target - leaf.pieces.len());
    }
    if need > leaf.vis.capacity() {
        // Four bytes a piece: doubling wastes little, and growing by a step each time the
        // pieces do cost as much time again as the pieces' own growth.
        let doubled = (leaf.vis.capacity() * 2).max(16);
        let target = doubled.min(MAX_PIECES + 1).max(need);
        leaf.vis.reserve_exact(target - leaf.vis.len());
    }
}

impl<C> Leaf<C> {
    /// A leaf of `pieces`, not linked yet.
    fn of(pieces: Vec<Piece<C>>, parent: usize, prev: Option<usize>, next: Option<usize>) -> Self {
        let vis: Vec<Counter> = pieces.iter().map(Piece::vis).collect();
        let visible = vis.iter().map(|&v| v as usize).sum();
        let total = pieces.iter().map(|p| p.len as usize).sum();
        Leaf { pieces, vis, parent, prev, next, visible, total }
    }

    /// Insert `piece` at index `pi`, room made.
    fn insert_piece(&mut self, pi: usize, piece: Piece<C>) {
        self.vis.insert(pi, piece.vis());
        self.pieces.insert(pi, piece);
    }
}

impl<C> Default for Pieces<C> {
    fn default() -> Self {
        Pieces {
            leaves: Vec::new(),
            inners: Vec::new(),
            root: 0,
            index: LeafIndex::default(),
            cursor: Cursor::default(),
            hints: [None; 2],
        }
    }
}

impl<C: SeqContent> Pieces<C> {
    /// Build from pieces in document order, leaves and nodes half full so that edits anywhere
    /// have room before splitting. `id_order` lists the pieces' indexes ascending by first id,
    /// which the caller has already sorted.
    pub(super) fn from_pieces(pieces: Vec<Piece<C>>, id_order: &[u32]) -> Self {
        let mut tree = Self::default();
        // Leaf `i / per_leaf` holds piece `i`.
        let per_leaf = MAX_PIECES / 2;
        tree.index = LeafIndex::from_sorted(id_order.iter().map(|&i| {
            let piece = &pieces[i as usize];
            (piece.start(), piece.end(), (i as usize / per_leaf) as u32)
        }));
        let mut pieces = pieces.into_iter().peekable();
        while pieces.peek().is_some() {
            let leaf = tree.leaves.len();
            let chunk: Vec<Piece<C>> = pieces.by_ref().take(per_leaf).collect();
            let prev = leaf.checked_sub(1);
            tree.leaves.push(Leaf::of(chunk, 0, prev, None));
            if let Some(prev) = prev {
                tree.leaves[prev].next = Some(leaf);
            }
        }
        if tree.leaves.is_empty() {
            return tree;
        }
        let mut level: Vec<usize> = (0..tree.leaves.len()).collect();
        let mut leaf_kids = true;
        loop {
            let mut up = Vec::with_capacity(level.len() / (MAX_KIDS / 2) + 1);
            for group in level.chunks(MAX_KIDS / 2) {
                let node = tree.inners.len();
                let (mut visible, mut total) = (0, 0);
                for &kid in group {
                    let (v, t) = tree.adopt(kid, leaf_kids, node);
                    visible += v;
                    total += t;
                }
                tree.inners.push(Inner { kids: group.to_vec(), leaf_kids, parent: None, visible, total });
                up.push(node);
            }
            leaf_kids = false;
            if let [root] = up[..] {
                tree.root = root;
                return tree;
            }
            level = up;
        }
    }

    /// The number of visible elements.
    pub(super) fn visible(&self) -> usize {
        if self.leaves.is_empty() { 0 } else { self.inners[self.root].visible }
    }

    /// The number of elements, tombstones included.
    pub(super) fn total(&self) -> usize {
        if self.leaves.is_empty() { 0 } else { self.inners[self.root].total }
    }

    /// The piece at `loc`, which must come from this tree as it is now.
    pub(super) fn piece(&self, loc: Loc) -> &Piece<C> {
        &self.leaves[loc.leaf].pieces[loc.piece]
    }

    /// The id of the element at `loc`.
    pub(super) fn id_at(&self, loc: Loc) -> OpId {
        let start = self.piece(loc).start();
        OpId::new(start.peer, start.counter + loc.offset)
    }

    /// Whether piece `piece` of `leaf` exists, is visible and ends right before `next` (its
    /// last element is `next`'s predecessor of the same peer).
    pub(super) fn visible_ends_before(&self, leaf: usize, piece: usize, next: OpId) -> bool {
        let piece = self.leaves.get(leaf).and_then(|l| l.pieces.get(piece));
        piece.is_some_and(|p| p.content.is_some() && p.peer == next.peer && p.end() == next.counter)
    }

    /// Where element `id` is, if present.
    pub(super) fn locate(&self, id: OpId) -> Option<Loc> {
        let Cursor { leaf, piece: hinted, .. } = self.cursor;
        if let Some(pieces) = self.leaves.get(leaf).map(|l| &l.pieces) {
            // The hinted piece or a neighbour: ids are unique, so a piece holding `id` is it.
            // The hinted piece first: typing on and backspacing find the element there.
            for piece in [hinted, hinted.wrapping_sub(1), hinted.wrapping_add(1)] {
                if let Some(p) = pieces.get(piece)
                    && p.peer == id.peer
                    && p.counter <= id.counter
                    && id.counter < p.end()
                {
                    return Some(Loc { leaf, piece, offset: id.counter - p.counter });
                }
            }
        }
        let leaf = self.index.leaf_of(id)?;
        let pieces = &self.leaves.get(leaf)?.pieces;
        let piece = pieces
            .iter()
            .position(|p| p.peer == id.peer && p.counter <= id.counter && id.counter < p.end())?;
        Some(Loc { leaf, piece, offset: id.counter - pieces[piece].counter })
    }

    /// Note that the visible element `id` is at position `pos`, until counts change: the
    /// caller knows where its edit left elements, and the next edit is most likely there.
    pub(super) fn remember(&mut self, pos: usize, id: OpId) {
        self.hints = [Some((pos, id)), self.hints[0]];
    }

    /// The location of the visible element at `pos`: one descent from the root, unless the
    /// last edit left it known.
    pub(super) fn find_visible(&self, pos: usize) -> Option<Loc> {
        if pos >= self.visible() {
            return None;
        }
        self.find_near(pos).or_else(|| self.descend(pos).map(|(loc, _)| loc))
    }

    /// [`Self::find_visible`] for an edit about to be made there. A descent from the root also
    /// moves the cursor to the leaf it found, with the count of the elements before that
    /// leaf, which the descent knows: the edit would otherwise climb the tree again for it.
    pub(super) fn seek_visible(&mut self, pos: usize) -> Option<Loc> {
        if pos >= self.visible() {
            return None;
        }
        if let Some(loc) = self.find_near(pos) {
            return Some(loc);
        }
        let (loc, start) = self.descend(pos)?;
        self.move_cursor(loc.leaf, loc.piece, Some(start));
        Some(loc)
    }

    /// The visible element at `pos` (below [`Self::visible`]) if the last edit left it known:
    /// a hint, or inside the cursor's leaf.
    fn find_near(&self, pos: usize) -> Option<Loc> {
        for &(at, id) in self.hints.iter().flatten() {
            if at == pos
                && let Some(loc) = self.locate(id)
            {
                return Some(loc);
            }
        }
        if let Some(start) = self.cursor.start
            && let Some(rest) = pos.checked_sub(start)
            && rest < self.leaves[self.cursor.leaf].visible
        {
            return self.find_in_leaf(self.cursor.leaf, rest);
        }
        None
    }

    /// The visible element at `pos` (below [`Self::visible`]), found from the root, and how
    /// many visible elements precede its leaf.
    fn descend(&self, pos: usize) -> Option<(Loc, usize)> {
        let mut rest = pos;
        let mut node = &self.inners[self.root];
        loop {
            let mut found = None;
            for &kid in &node.kids {
                let visible = self.counts(kid, node.leaf_kids).0;
                if rest < visible {
                    found = Some(kid);
                    break;
                }
                rest -= visible;
            }
            let kid = found?;
            if !node.leaf_kids {
                node = &self.inners[kid];
                continue;
            }
            return self.find_in_leaf(kid, rest).map(|loc| (loc, pos - rest));
        }
    }

    /// The location of visible element `rest` of `leaf`, scanning from the nearer end of the
    /// leaf: finding a position is a part of every local edit, and a leaf holds dozens of pieces.
    fn find_in_leaf(&self, leaf: usize, mut rest: usize) -> Option<Loc> {
        let l = &self.leaves[leaf];
        if rest < l.visible / 2 {
            for (piece, &visible) in l.vis.iter().enumerate() {
                let visible = visible as usize;
                if rest < visible {
                    return Some(Loc { leaf, piece, offset: rest as Counter });
                }
                rest -= visible;
            }
            return None;
        }
        // The element is the `from_end`-th visible one counting back from the leaf's end.
        let mut from_end = l.visible.checked_sub(rest).filter(|&n| n > 0)?;
        for (piece, &visible) in l.vis.iter().enumerate().rev() {
            let visible = visible as usize;
            if from_end <= visible {
                return Some(Loc { leaf, piece, offset: (visible - from_end) as Counter });
            }
            from_end -= visible;
        }
        None
    }

    /// The first element of the document order.
    pub(super) fn first(&self) -> Option<Loc> {
        self.first_from(0)
    }

    /// The first element of leaf `leaf` or the leaves after it.
    fn first_from(&self, mut leaf: usize) -> Option<Loc> {
        loop {
            let l = self.leaves.get(leaf)?;
            if !l.pieces.is_empty() {
                return Some(Loc { leaf, piece: 0, offset: 0 });
            }
            leaf = l.next?;
        }
    }

    /// The element after `loc` in the document order.
    pub(super) fn after(&self, loc: Loc) -> Option<Loc> {
        let leaf = &self.leaves[loc.leaf];
        if loc.offset + 1 < leaf.pieces[loc.piece].len {
            return Some(Loc { offset: loc.offset + 1, ..loc });
        }
        if loc.piece + 1 < leaf.pieces.len() {
            return Some(Loc { piece: loc.piece + 1, offset: 0, ..loc });
        }
        self.first_from(leaf.next?)
    }

    /// How many visible elements precede `loc`.
    pub(super) fn visible_before(&self, loc: Loc) -> usize {
        let leaf = &self.leaves[loc.leaf];
        let mut inside: usize = leaf.vis[..loc.piece].iter().map(|&v| v as usize).sum();
        if leaf.pieces[loc.piece].content.is_some() {
            inside += loc.offset as usize;
        }
        inside + self.leaf_start(loc.leaf)
    }

    /// How many visible elements precede `leaf`.
    fn leaf_start(&self, leaf: usize) -> usize {
        if self.cursor.leaf == leaf
            && let Some(start) = self.cursor.start
        {
            return start;
        }
        self.climb(leaf)
    }

    /// How many visible elements precede `leaf`, from the counts of the earlier siblings of
    /// each node on the way to the root.
    fn climb(&self, leaf: usize) -> usize {
        let mut before = 0;
        let (mut child, mut parent, mut leaf_kids) = (leaf, Some(self.leaves[leaf].parent), true);
        while let Some(node) = parent {
            let inner = &self.inners[node];
            for &kid in inner.kids.iter().take_while(|&&k| k != child) {
                before += self.counts(kid, leaf_kids).0;
            }
            (child, parent, leaf_kids) = (node, inner.parent, false);
        }
        before
    }

    /// The pieces from piece `piece` of leaf `leaf` on, in document order.
    pub(super) fn iter_from(&self, leaf: usize, piece: usize) -> impl Iterator<Item = &Piece<C>> {
        let leaves = std::iter::successors(self.leaves.get(leaf).map(|_| leaf), |&l| self.leaves[l].next);
        leaves.enumerate().flat_map(move |(i, l)| &self.leaves[l].pieces[if i == 0 { piece } else { 0 }..])
    }

    /// Every piece in document order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Piece<C>> {
        self.iter_from(0, 0)
    }

    /// The slot for a new piece at the very start, creating the first leaf if needed.
    pub(super) fn start_slot(&mut self) -> (usize, usize) {
        if self.leaves.is_empty() {
            self.leaves.push(Leaf::of(Vec::new(), 0, None, None));
            self.inners.push(Inner { kids: vec![0], leaf_kids: true, parent: None, visible: 0, total: 0 });
            self.root = 0;
        }
        (0, 0)
    }

    /// Where a new piece going before piece `piece` of `leaf` should be inserted: at the start
    /// of a leaf, at the end of the previous one instead, so that a continued chain can merge
    /// with the piece it continues.
    pub(super) fn slot(&self, leaf: usize, piece: usize) -> (usize, usize) {
        match self.leaves[leaf].prev {
            Some(prev) if piece == 0 => (prev, self.leaves[prev].pieces.len()),
            _ => (leaf, piece),
        }
    }

    /// Split piece `pi` of `leaf` before offset `at` (no-op at its ends). The leaf may be left
    /// over-full; the caller fixes it.
    pub(super) fn split(&mut self, leaf: usize, pi: usize, at: Counter) {
        let l = &mut self.leaves[leaf];
        let piece = &mut l.pieces[pi];
        if at == 0 || at >= piece.len {
            return;
        }
        let content = piece.content.as_mut().map(|c| c.split_off_counted(at as usize, piece.len as usize));
        let tail = Piece::new(OpId::new(piece.peer, piece.counter + at), piece.len - at, content, false);
        piece.len = at;
        l.vis[pi] = piece.vis();
        make_room(l, 1);
        l.insert_piece(pi + 1, tail);
    }

    /// Insert `piece` at index `pi` of `leaf`; returns where its first element ends up. It
    /// merges into the piece before it if `joins` (it does not start a chain) and it continues
    /// that piece: the common case of typing, which then costs no allocation and no index update.
    ///
    /// The content is copied only if it does not join the piece before: typing extends the
    /// piece it continues.
    pub(super) fn insert(
        &mut self,
        leaf: usize,
        pi: usize,
        start: OpId,
        len: Counter,
        content: Cow<'_, C::Slice>,
        joins: bool,
    ) -> Loc {
        let (visible, total) = (len as isize, len as isize);
        let l = &mut self.leaves[leaf];
        if joins
            && let Some(prev) = pi.checked_sub(1).and_then(|i| l.pieces.get(i))
            && prev.peer == start.peer
            && prev.end() == start.counter
            && prev.content.is_some()
        {
            return self.extend(leaf, pi - 1, len, content);
        }
        let piece = Piece::new(start, len, Some(content.into_owned()), !joins);
        self.index.place(start.peer, start.counter, start.counter.saturating_add(len), leaf);
        make_room(l, 1);
        l.insert_piece(pi, piece);
        self.adjust(leaf, visible, total);
        self.edited(leaf, pi);
        match self.fix(leaf) {
            Some((new, mid)) if pi >= mid => {
                // The new right half starts where the left half ends.
                let start = self.cursor.start.map(|s| s + self.leaves[leaf].visible);
                self.cursor = Cursor { leaf: new, piece: pi - mid, start };
                Loc { leaf: new, piece: pi - mid, offset: 0 }
            }
            _ => Loc { leaf, piece: pi, offset: 0 },
        }
    }

    /// Append `len` elements of `content` to visible piece `pi` of `leaf`, whose ids they
    /// continue; returns where the first of them is.
    pub(super) fn extend(&mut self, leaf: usize, pi: usize, len: Counter, content: Cow<'_, C::Slice>) -> Loc {
        let l = &mut self.leaves[leaf];
        l.vis[pi] += len;
        let piece = &mut l.pieces[pi];
        // The content first, before the piece's length and the index are written: after those
        // stores, the load of the content's own length stalled in some builds and not others
        // (a fifth of a replay of `automerge-paper`, from unrelated code changes elsewhere).
        if let Some(have) = piece.content.as_mut() {
            match content {
                Cow::Owned(content) => have.append(content),
                Cow::Borrowed(content) => have.append_copy(content),
            }
        }
        let offset = piece.len;
        let from = piece.end();
        piece.len += len;
        self.index.extend(piece.peer, from, piece.end(), leaf);
        self.adjust(leaf, len as isize, len as isize);
        self.edited(leaf, pi);
        Loc { leaf, piece: pi, offset }
    }

    /// Move the cursor to piece `piece` of `leaf`, just edited. Counts changed inside `leaf`
    /// only, so its start still holds if the cursor was there, and is worked out otherwise
    /// (the caller needs the position of the edit anyway).
    fn edited(&mut self, leaf: usize, piece: usize) {
        self.move_cursor(leaf, piece, None);
    }

    /// Move the cursor to piece `piece` of `leaf`, after `start` visible elements if known
    /// (else kept if the cursor stays in `leaf`, or counted).
    fn move_cursor(&mut self, leaf: usize, piece: usize, start: Option<usize>) {
        let Cursor { leaf: was_leaf, piece: was_piece, .. } = self.cursor;
        if (was_leaf, was_piece) != (leaf, piece)
            && let Some(content) = self
                .leaves
                .get_mut(was_leaf)
                .and_then(|l| l.pieces.get_mut(was_piece))
                .and_then(|p| p.content.as_mut())
        {
            // Edits moved on from that piece (typing grew it, deleting cut it), so its spare
            // room is dead weight. A stale cursor may name another piece: trimming it is harmless.
            content.shrink_to_fit();
        }
        let start = start.or(if self.cursor.leaf == leaf { self.cursor.start } else { None });
        self.cursor = Cursor { leaf, piece, start };
        if start.is_none() {
            self.cursor.start = Some(self.leaf_start(leaf));
        }
    }

    /// Tombstone `len` elements from `loc` on, all in its piece, if the piece is visible;
    /// returns how many were deleted.
    pub(super) fn delete(&mut self, loc: Loc, len: Counter) -> usize {
        if let Some(n) = self.grow_tombstone(loc, len) {
            return n;
        }
        let (leaf, mut pi) = (loc.leaf, loc.piece);
        let l = &mut self.leaves[leaf];
        let piece = &mut l.pieces[pi];
        let (start, whole, from) = (piece.start(), piece.len, loc.offset);
        let to = from.saturating_add(len).min(whole);
        let Some(content) = piece.content.as_mut().filter(|_| from < to) else { return 0 };
        let n = to - from;
        // Cut the piece into head (kept), tombstone and tail (kept) with one copy of the tail;
        // splitting twice would copy it twice.
        let tail = (to < whole).then(|| {
            let content = content.cut(from as usize, to as usize, whole as usize);
            Piece::new(OpId::new(start.peer, start.counter + to), whole - to, Some(content), false)
        });
        let starts = from == 0 && piece.starts_chain;
        let tombstone = Piece::new(OpId::new(start.peer, start.counter + from), to - from, None, starts);
        if from == 0 {
            *piece = tombstone;
            l.vis[pi] = 0;
        } else {
            if tail.is_none() {
                content.cut(from as usize, whole as usize, whole as usize);
            }
            piece.len = from;
            l.vis[pi] = from;
            pi += 1;
            make_room(l, 1);
            l.insert_piece(pi, tombstone);
        }
        if let Some(tail) = tail {
            make_room(l, 1);
            l.insert_piece(pi + 1, tail);
        }
        let n = n as usize;
        self.adjust(leaf, -(n as isize), 0);
        self.merge(leaf, pi);
        if pi > 0 {
            self.merge(leaf, pi - 1);
        }
        self.edited(leaf, pi.saturating_sub(1));
        self.fix(leaf);
        n
    }

    /// Tombstone the visible piece that starts at `loc`, and the visible pieces after it in
    /// its leaf, as long as each fits whole in `max` elements; tombstones between them are
    /// passed over. Reports each piece's ids to `deleted`, and returns how many elements it
    /// deleted: none if the first piece does not fit or `loc` is inside a piece.
    ///
    /// A long delete crosses many pieces. One by one, each cost a lookup, a walk up the tree
    /// and two merges that shift the leaf; here the leaf is compacted once and the counts
    /// climb once. A delete of one piece, or of part of one, is cheaper through
    /// [`Self::delete`].
    pub(super) fn delete_whole(
        &mut self,
        loc: Loc,
        max: usize,
        mut deleted: impl FnMut(OpId, Counter),
    ) -> usize {
        let l = &mut self.leaves[loc.leaf];
        if loc.offset != 0 {
            return 0;
        }
        let (mut n, mut last) = (0, None);
        for pi in loc.piece..l.pieces.len() {
            if n == max {
                break;
            }
            let piece = &mut l.pieces[pi];
            if piece.content.is_none() {
                continue;
            }
            if n + piece.len as usize > max {
                break;
            }
            piece.content = None;
            l.vis[pi] = 0;
            n += piece.len as usize;
            deleted(piece.start(), piece.len);
            last = Some(pi);
        }
        let Some(last) = last else { return 0 };
        // The new tombstones may join each other, the tombstones between them, and those on
        // either side: one pass, joined pieces swapped to the end of the range and dropped.
        let (lo, hi) = (loc.piece.saturating_sub(1), (last + 1).min(l.pieces.len() - 1));
        let mut w = lo;
        for r in lo + 1..=hi {
            let (a, b) = (&l.pieces[w], &l.pieces[r]);
            let joins = a.peer == b.peer
                && a.end() == b.counter
                && a.content.is_some() == b.content.is_some()
                && !b.starts_chain;
            if joins {
                let b = &mut l.pieces[r];
                let (len, content) = (b.len, b.content.take());
                l.vis[w] += l.vis[r];
                let a = &mut l.pieces[w];
                a.len += len;
                if let (Some(a), Some(b)) = (a.content.as_mut(), content) {
                    a.append(b);
                }
            } else {
                w += 1;
                l.pieces.swap(w, r);
                l.vis.swap(w, r);
            }
        }
        l.pieces.drain(w + 1..=hi);
        l.vis.drain(w + 1..=hi);
        self.adjust(loc.leaf, -(n as isize), 0);
        self.edited(loc.leaf, lo);
        n
    }

    /// [`Self::delete`] of the elements at one end of a visible piece, next to a tombstone
    /// that they continue: backspacing and forward deleting. The tombstone takes them, with no
    /// piece added or removed. `None`, having done nothing, for any other delete.
    fn grow_tombstone(&mut self, loc: Loc, len: Counter) -> Option<usize> {
        let (leaf, pi, from) = (loc.leaf, loc.piece, loc.offset);
        let l = &mut self.leaves[leaf];
        let pieces = &mut l.pieces;
        let piece = &pieces[pi];
        let (start, whole) = (piece.start(), piece.len);
        let to = from.saturating_add(len).min(whole);
        if from >= to || piece.content.is_none() {
            return None;
        }
        let n = to - from;
        if from > 0 && to == whole {
            // The tombstone after the piece, continuing its ids, grows backwards.
            let next = pieces.get(pi + 1)?;
            if next.content.is_some()
                || next.peer != start.peer
                || next.counter != start.counter + whole
                || next.starts_chain
            {
                return None;
            }
            let piece = &mut pieces[pi];
            piece.len = from;
            if let Some(content) = piece.content.as_mut() {
                content.cut(from as usize, whole as usize, whole as usize);
            }
            let next = &mut pieces[pi + 1];
            next.counter -= n;
            next.len += n;
            l.vis[pi] = from;
        } else if from == 0 && to < whole {
            // The tombstone before the piece, which the piece's ids continue, grows forwards.
            let prev = pieces.get(pi.checked_sub(1)?)?;
            if prev.content.is_some()
                || prev.peer != start.peer
                || prev.end() != start.counter
                || piece.starts_chain
            {
                return None;
            }
            let piece = &mut pieces[pi];
            piece.counter += n;
            piece.len -= n;
            if let Some(content) = piece.content.as_mut() {
                content.remove_front(n as usize, whole as usize);
            }
            pieces[pi - 1].len += n;
            l.vis[pi] -= n;
        } else {
            return None;
        }
        self.adjust(leaf, -(n as isize), 0);
        self.edited(leaf, pi);
        Some(n as usize)
    }

    /// Merge piece `pi + 1` of `leaf` into piece `pi` if they continue one chain with the same
    /// status.
    fn merge(&mut self, leaf: usize, pi: usize) {
        let l = &mut self.leaves[leaf];
        let pieces = &mut l.pieces;
        let (Some(a), Some(b)) = (pieces.get(pi), pieces.get(pi + 1)) else { return };
        let joins = a.peer == b.peer
            && a.end() == b.counter
            && a.content.is_some() == b.content.is_some()
            && !b.starts_chain;
        if !joins {
            return;
        }
        let b = pieces.remove(pi + 1);
        let b_vis = l.vis.remove(pi + 1);
        l.vis[pi] += b_vis;
        let a = &mut l.pieces[pi];
        a.len += b.len;
        if let (Some(a), Some(b)) = (a.content.as_mut(), b.content) {
            a.append(b);
        }
    }

    /// The cached counts of a child: a leaf if `leaf`, else an inner node.
    fn counts(&self, kid: usize, leaf: bool) -> (usize, usize) {
        if leaf {
            let l = &self.leaves[kid];
            (l.visible, l.total)
        } else {
            let n = &self.inners[kid];
            (n.visible, n.total)
        }
    }

    /// Make `parent` the parent of a child (a leaf if `leaf`); returns the child's counts.
    fn adopt(&mut self, kid: usize, leaf: bool, parent: usize) -> (usize, usize) {
        if leaf {
            let l = &mut self.leaves[kid];
            l.parent = parent;
            (l.visible, l.total)
        } else {
            let n = &mut self.inners[kid];
            n.parent = Some(parent);
            (n.visible, n.total)
        }
    }

    /// Add to the counts of `leaf` and of every node above it.
    fn adjust(&mut self, leaf: usize, visible: isize, total: isize) {
        // Positions may have moved.
        self.hints = [None; 2];
        let l = &mut self.leaves[leaf];
        l.visible = l.visible.wrapping_add_signed(visible);
        l.total = l.total.wrapping_add_signed(total);
        let mut node = Some(l.parent);
        while let Some(n) = node {
            let inner = &mut self.inners[n];
            inner.visible = inner.visible.wrapping_add_signed(visible);
            inner.total = inner.total.wrapping_add_signed(total);
            node = inner.parent;
        }
    }

    /// Split `leaf` in two if it is over-full; returns the new right half and how many pieces
    /// stayed left.
    fn fix(&mut self, leaf: usize) -> Option<(usize, usize)> {
        let new = self.leaves.len();
        let l = &mut self.leaves[leaf];
        if l.pieces.len() <= MAX_PIECES {
            return None;
        }
        let mid = l.pieces.len() / 2;
        let tail = l.pieces.split_off(mid);
        l.vis.truncate(mid);
        // Both halves now have room to grow to a full leaf, and most leaves stop being edited
        // long before: spare room is the leaves' largest cost, so keep none.
        l.pieces.shrink_to_fit();
        l.vis.shrink_to_fit();
        let (parent, next) = (l.parent, l.next);
        let right = Leaf::of(tail, parent, Some(leaf), next);
        l.visible -= right.visible;
        l.total -= right.total;
        l.next = Some(new);
        if let Some(next) = next {
            self.leaves[next].prev = Some(new);
        }
        // The moved ids, as few ranges as possible: a leaf's pieces are mostly cut from a few
        // runs of consecutive ids.
        let mut moved: Vec<(PeerId, Counter, Counter)> =
            right.pieces.iter().map(|p| (p.peer, p.counter, p.end())).collect();
        moved.sort_unstable();
        moved.dedup_by(|next, run| {
            let joins = next.0 == run.0 && next.1 == run.2;
            if joins {
                run.2 = next.2;
            }
            joins
        });
        for (peer, from, to) in moved {
            self.index.place(peer, from, to, new);
        }
        self.leaves.push(right);
        self.add_kid(parent, leaf, new);
        Some((new, mid))
    }

    /// Put child `new` right after its sibling `after` in inner node `node`, splitting the node
    /// if it overflows. `new`'s elements came from `after`, so counts above stay right.
    fn add_kid(&mut self, node: usize, after: usize, new: usize) {
        let inner = &mut self.inners[node];
        let at = inner.kids.iter().position(|&k| k == after).map_or(inner.kids.len(), |i| i + 1);
        inner.kids.insert(at, new);
        if inner.kids.len() <= MAX_KIDS {
            return;
        }
        let leaf_kids = inner.leaf_kids;
        let parent = inner.parent;
        let tail = inner.kids.split_off(inner.kids.len() / 2);
        let sibling = self.inners.len();
        let (mut visible, mut total) = (0, 0);
        for &kid in &tail {
            let (v, t) = self.adopt(kid, leaf_kids, sibling);
            visible += v;
            total += t;
        }
        let inner = &mut self.inners[node];
        inner.visible -= visible;
        inner.total -= total;
        let (left_visible, left_total) = (inner.visible, inner.total);
        self.inners.push(Inner { kids: tail, leaf_kids, parent, visible, total });
        match parent {
            Some(parent) => self.add_kid(parent, node, sibling),
            None => {
                let root = self.inners.len();
                self.inners.push(Inner {
                    kids: vec![node, sibling],
                    leaf_kids: false,
                    parent: None,
                    visible: left_visible + visible,
                    total: left_total + total,
                });
                self.inners[node].parent = Some(root);
                self.inners[sibling].parent = Some(root);
                self.root = root;
            }
        }
    }
}

#[cfg(test)]
impl<C: SeqContent> Pieces<C> {
    /// How many leaves the tree has.
    pub(super) fn leaf_count(&self) -> usize {
        self.leaves.len()
    }

    /// Check every cached count, link, parent and index entry against the pieces.
    pub(super) fn check(&self) {
        if self.leaves.is_empty() {
            assert!(self.inners.is_empty());
            return;
        }
        assert_eq!(self.inners[self.root].parent, None);
        let mut pieces = 0;
        // Walk the tree in order, checking that the leaves met are the linked list.
        let mut order = Vec::new();
        let mut stack = vec![self.root];
        while let Some(node) = stack.pop() {
            let inner = &self.inners[node];
            assert!(!inner.kids.is_empty() && inner.kids.len() <= MAX_KIDS);
            let (mut visible, mut total) = (0, 0);
            for &kid in &inner.kids {
                let (v, t) = self.counts(kid, inner.leaf_kids);
                visible += v;
                total += t;
                if inner.leaf_kids {
                    assert_eq!(self.leaves[kid].parent, node);
                } else {
                    assert_eq!(self.inners[kid].parent, Some(node));
                }
            }
            assert_eq!((visible, total), (inner.visible, inner.total));
            if inner.leaf_kids {
                order.extend(inner.kids.iter().copied());
            } else {
                stack.extend(inner.kids.iter().rev().copied());
            }
        }
        let linked: Vec<usize> = std::iter::successors(Some(0), |&l| self.leaves[l].next).collect();
        assert_eq!(order, linked);
        assert_eq!(linked.len(), self.leaves.len());
        for (i, &leaf) in linked.iter().enumerate() {
            let l = &self.leaves[leaf];
            assert_eq!(l.prev, i.checked_sub(1).map(|p| linked[p]));
            assert!(!l.pieces.is_empty() && l.pieces.len() <= MAX_PIECES);
            assert_eq!(l.visible, l.pieces.iter().map(|p| p.vis() as usize).sum::<usize>());
            assert_eq!(l.vis, l.pieces.iter().map(Piece::vis).collect::<Vec<_>>(), "visible lengths");
            assert_eq!(l.total, l.pieces.iter().map(|p| p.len as usize).sum::<usize>());
            for piece in &l.pieces {
                assert!(piece.len > 0);
                if let Some(content) = &piece.content {
                    assert_eq!(content.len(), piece.len as usize);
                }
                for counter in piece.counter..piece.end() {
                    assert_eq!(
                        self.index.leaf_of(OpId::new(piece.peer, counter)),
                        Some(leaf),
                        "index of {piece:?}"
                    );
                }
                pieces += 1;
            }
        }
        assert!(self.index.run_count() <= 2 * pieces);
        self.index.check_ends();
        if let Some(start) = self.cursor.start {
            assert_eq!(start, self.climb(self.cursor.leaf), "stale cursor");
        }
        for &(pos, id) in self.hints.iter().flatten() {
            let loc = self.locate(id).expect("hint at an absent element");
            assert!(self.piece(loc).content.is_some(), "hint at a deleted element");
            assert_eq!(self.visible_before(loc), pos, "stale hint");
        }
    }
}
