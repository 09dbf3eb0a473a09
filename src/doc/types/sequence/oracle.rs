//! The chunked-vector storage that the B-tree replaced, kept as a test oracle: the differential
//! tests drive it and [`Sequence`](super::Sequence) with the same edits and compare every
//! observable result, including the canonical bytes.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Serialize, Serializer};
use smallvec::SmallVec;

use super::canonical::{Body, Run};
use super::{Anchor, SeqContent, Side, continues_chain, push_span};
use crate::doc::id::{Counter, IdSpan, OpId, PeerId};

/// Pieces a chunk may hold before it is split in two: scanning a chunk stays cheap and the
/// chunk list stays short.
const MAX_PIECES: usize = 128;

/// Explicit children of one parent, ascending by id.
type Kids = SmallVec<[OpId; 2]>;

/// Per-peer maps keyed by counter: ordered so that a chain's counters can be scanned as a range.
type ByCounter<T> = HashMap<PeerId, BTreeMap<Counter, T>>;

/// Consecutive ids of one chain, adjacent in document order, all visible or all deleted.
#[derive(Clone, Debug)]
struct Piece<C> {
    start: OpId,
    len: Counter,
    /// `None` once deleted: tombstones keep their ids and place, not their content.
    content: Option<C>,
}

impl<C> Piece<C> {
    /// One past the last counter.
    fn end(&self) -> Counter {
        self.start.counter.saturating_add(self.len)
    }

    /// How many visible elements the piece holds.
    fn visible_len(&self) -> usize {
        if self.content.is_some() { self.len as usize } else { 0 }
    }
}

/// A run of pieces in document order, with cached counts.
#[derive(Clone, Debug)]
struct Chunk<C> {
    /// Stable name of the chunk, for the id index; its place in the list is `chunk_pos[key]`.
    key: usize,
    pieces: Vec<Piece<C>>,
    visible: usize,
    total: usize,
}

/// A maximal chain: ids `start..end` of one peer, each the right child of the one before.
#[derive(Clone, Copy, Debug)]
struct Segment {
    end: Counter,
    /// The anchor of the chain's first element.
    anchor: Anchor,
}

/// An element's place in the chunked vector.
#[derive(Clone, Copy, Debug)]
struct Loc {
    chunk: usize,
    piece: usize,
    offset: Counter,
}

/// Where a new run goes in the document order.
#[derive(Clone, Copy, Debug)]
enum Point {
    /// At the very beginning (the sequence is empty).
    Start,
    After(OpId),
    Before(OpId),
}

/// A Fugue sequence of runs of content `C`, with tombstones.
#[derive(Clone, Debug)]
pub(crate) struct OracleSequence<C> {
    chunks: Vec<Chunk<C>>,
    /// Chunk key to index in `chunks`.
    chunk_pos: Vec<usize>,
    /// Piece start to chunk key.
    pieces: ByCounter<usize>,
    /// Chains by first counter; they cover exactly the present ids.
    segments: ByCounter<Segment>,
    left_kids: ByCounter<Kids>,
    right_kids: ByCounter<Kids>,
    root_kids: Kids,
    /// Elements whose largest right child is an explicit one rather than the chain child:
    /// where the walk to the end of a subtree leaves a chain.
    branches: HashMap<PeerId, BTreeSet<Counter>>,
    visible: usize,
    total: usize,
}

impl<C> Default for OracleSequence<C> {
    fn default() -> Self {
        OracleSequence {
            chunks: Vec::new(),
            chunk_pos: Vec::new(),
            pieces: HashMap::new(),
            segments: HashMap::new(),
            left_kids: HashMap::new(),
            right_kids: HashMap::new(),
            root_kids: Kids::new(),
            branches: HashMap::new(),
            visible: 0,
            total: 0,
        }
    }
}

/// The explicit children of `parent` in `map`, ascending.
fn kids_of(map: &ByCounter<Kids>, parent: OpId) -> &[OpId] {
    map.get(&parent.peer).and_then(|m| m.get(&parent.counter)).map_or(&[], |k| k.as_slice())
}

/// The explicit children of `parent` in `map`, created empty if needed.
fn kids_mut(map: &mut ByCounter<Kids>, parent: OpId) -> &mut Kids {
    map.entry(parent.peer).or_default().entry(parent.counter).or_default()
}

impl<C: SeqContent> OracleSequence<C> {
    /// An empty sequence.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of visible elements.
    pub fn len(&self) -> usize {
        self.visible
    }

    /// Whether there are no visible elements.
    pub fn is_empty(&self) -> bool {
        self.visible == 0
    }

    /// The number of elements, tombstones included.
    pub fn total_len(&self) -> usize {
        self.total
    }

    /// The anchor for a local insert at visible index `pos` (clamped to [`Self::len`]); see the
    /// module docs for the convention.
    pub fn local_anchor(&self, pos: usize) -> Anchor {
        let pos = pos.min(self.visible);
        let left = pos.checked_sub(1).and_then(|p| self.find_visible(p));
        let Some(left) = left else {
            // The root always has right children once anything exists, so go before the first
            // element of the full order.
            return match self.loc_first() {
                Some(first) => Anchor { parent: Some(self.id_at_loc(first)), side: Side::Left },
                None => Anchor { parent: None, side: Side::Right },
            };
        };
        let left_id = self.id_at_loc(left);
        if !self.has_right_kids(left_id) {
            return Anchor::after(left_id);
        }
        match self.loc_after(left) {
            Some(next) => Anchor { parent: Some(self.id_at_loc(next)), side: Side::Left },
            None => Anchor::after(left_id),
        }
    }

    /// Whether a run of `len` elements with ids from `id` may be inserted at `anchor`: the
    /// parent exists (the root only on the right), `len > 0`, the ids fit a counter and none is
    /// present yet.
    pub fn can_insert(&self, id: OpId, anchor: &Anchor, len: usize) -> bool {
        let Ok(len) = Counter::try_from(len) else { return false };
        let Some(end) = id.counter.checked_add(len) else { return false };
        len > 0
            && !self.overlaps(id.peer, id.counter, end)
            && match anchor.parent {
                None => anchor.side == Side::Right,
                Some(parent) => self.contains(parent),
            }
    }

    /// Insert a run; returns the visible index of its first element. Does nothing (and returns
    /// [`Self::len`]) if [`Self::can_insert`] says no.
    pub fn insert(&mut self, id: OpId, anchor: Anchor, content: C) -> usize {
        let n = content.len();
        if !self.can_insert(id, &anchor, n) {
            return self.visible;
        }
        let Ok(len) = Counter::try_from(n) else { return self.visible };
        let point = self.placement(id, &anchor);
        let Some((chunk, piece)) = self.open_slot(point) else { return self.visible };
        self.record_tree(id, len, anchor);
        self.insert_piece(chunk, piece, Piece { start: id, len, content: Some(content) });
        self.position_of(id).unwrap_or(self.visible)
    }

    /// The ids of the visible elements `pos..pos + len`, in document order, merged into maximal
    /// spans of consecutive counters of one peer.
    pub fn visible_spans(&self, pos: usize, len: usize) -> Vec<IdSpan> {
        let mut out = crate::doc::id::IdSpans::new();
        self.visit_visible(pos, len, |piece, from, to| {
            push_span(&mut out, OpId::new(piece.start.peer, piece.start.counter + from), to - from);
        });
        out.into_vec()
    }

    /// Tombstone every present element of `spans` (absent ids are ignored, deleting twice is
    /// harmless); returns how many visible elements were deleted.
    pub fn delete(&mut self, spans: &[IdSpan]) -> usize {
        let mut deleted = 0;
        for span in spans {
            let (peer, lo, hi) = (span.start.peer, span.start.counter, span.end_counter());
            let Some(index) = self.pieces.get(&peer) else { continue };
            if lo >= hi {
                continue;
            }
            let mut starts: Vec<Counter> =
                index.range(..lo).next_back().map(|(&s, _)| s).into_iter().collect();
            starts.extend(index.range(lo..hi).map(|(&s, _)| s));
            for start in starts {
                deleted += self.delete_in_piece(OpId::new(peer, start.max(lo)), hi);
            }
        }
        deleted
    }

    /// Whether `id` is present, visible or not.
    pub fn contains(&self, id: OpId) -> bool {
        self.segment_of(id).is_some()
    }

    /// Whether every id of `span` is present (vacuously true for an empty span).
    pub fn contains_span(&self, span: &IdSpan) -> bool {
        let Some(end) = span.start.counter.checked_add(span.len) else { return false };
        let mut counter = span.start.counter;
        while counter < end {
            match self.segment_of(OpId::new(span.start.peer, counter)) {
                Some((_, segment)) => counter = segment.end,
                None => return false,
            }
        }
        true
    }

    /// Whether `id` is deleted; `None` if it is not present.
    pub fn is_deleted(&self, id: OpId) -> Option<bool> {
        let loc = self.locate(id)?;
        Some(self.piece(loc).content.is_none())
    }

    /// The number of visible elements before `id` in the order (also for tombstones).
    pub fn position_of(&self, id: OpId) -> Option<usize> {
        Some(self.visible_before(self.locate(id)?))
    }

    /// The id of the visible element at `pos`.
    pub fn id_at(&self, pos: usize) -> Option<OpId> {
        Some(self.id_at_loc(self.find_visible(pos)?))
    }

    /// The visible element at `pos`: its own id (not the piece's first), the content of the
    /// piece holding it, and its offset in that content.
    pub fn visible_piece_at(&self, pos: usize) -> Option<(OpId, &C, usize)> {
        let loc = self.find_visible(pos)?;
        let content = self.piece(loc).content.as_ref()?;
        Some((self.id_at_loc(loc), content, loc.offset as usize))
    }

    /// The visible content of `pos..pos + len` (clamped to the sequence).
    pub fn slice(&self, pos: usize, len: usize) -> C {
        let mut out = C::empty();
        self.visit_visible(pos, len, |piece, from, to| {
            if let Some(content) = &piece.content {
                out.append(content.slice(from as usize, to as usize));
            }
        });
        out
    }

    /// Call `f` with the first id and the content of each visible piece, in order. Pieces are
    /// not necessarily maximal: consecutive calls may continue one run.
    pub fn for_each_visible(&self, mut f: impl FnMut(OpId, &C)) {
        for piece in self.chunks.iter().flat_map(|c| &c.pieces) {
            if let Some(content) = &piece.content {
                f(piece.start, content);
            }
        }
    }

    /// All visible content, concatenated.
    pub fn to_content(&self) -> C {
        let mut out = C::empty();
        self.for_each_visible(|_, content| out.append(content.clone()));
        out
    }

    // ---- tree ------------------------------------------------------------------------------

    /// The chain holding `id`, with its first counter.
    fn segment_of(&self, id: OpId) -> Option<(Counter, &Segment)> {
        let (&start, segment) = self.segments.get(&id.peer)?.range(..=id.counter).next_back()?;
        (id.counter < segment.end).then_some((start, segment))
    }

    /// Whether `id` starts a chain (has an explicit anchor).
    fn is_segment_start(&self, id: OpId) -> bool {
        self.segments.get(&id.peer).is_some_and(|m| m.contains_key(&id.counter))
    }

    /// Whether any id of `lo..hi` of `peer` is present.
    fn overlaps(&self, peer: PeerId, lo: Counter, hi: Counter) -> bool {
        let Some(segments) = self.segments.get(&peer) else { return false };
        segments.range(..hi).next_back().is_some_and(|(_, segment)| segment.end > lo)
    }

    /// The next element of `id`'s chain, which is one of its right children.
    fn chain_child(&self, id: OpId) -> Option<OpId> {
        let (_, segment) = self.segment_of(id)?;
        (segment.end - id.counter > 1).then(|| OpId::new(id.peer, id.counter + 1))
    }

    /// Whether `id` has any right child, chained or explicit.
    fn has_right_kids(&self, id: OpId) -> bool {
        self.chain_child(id).is_some() || !kids_of(&self.right_kids, id).is_empty()
    }

    /// The first element of the subtree of `id` in document order.
    fn subtree_first(&self, mut id: OpId) -> OpId {
        // Descends through smallest left children; the tree is finite and acyclic because a
        // parent always exists before its children.
        while let Some(&first) = kids_of(&self.left_kids, id).first() {
            id = first;
        }
        id
    }

    /// The last element of the subtree of `id` in document order: follow the largest right
    /// child, jumping along chains from branch to branch.
    fn subtree_last(&self, mut id: OpId) -> OpId {
        loop {
            let Some((_, segment)) = self.segment_of(id) else { return id };
            let last = segment.end - 1;
            let branch = self.branches.get(&id.peer).and_then(|b| b.range(id.counter..=last).next());
            match branch.and_then(|&c| kids_of(&self.right_kids, OpId::new(id.peer, c)).last()) {
                Some(&next) => id = next,
                None => return OpId::new(id.peer, last),
            }
        }
    }

    /// Update whether `parent` is a branch after its right children or its chain changed.
    fn refresh_branch(&mut self, parent: OpId) {
        let largest = kids_of(&self.right_kids, parent).last().copied();
        let branch = largest.is_some_and(|k| self.chain_child(parent).is_none_or(|c| k > c));
        let branches = self.branches.entry(parent.peer).or_default();
        if branch {
            branches.insert(parent.counter);
        } else {
            branches.remove(&parent.counter);
        }
    }

    /// Where a new run `id` with a valid `anchor` goes among its siblings.
    fn placement(&self, id: OpId, anchor: &Anchor) -> Point {
        match (anchor.parent, anchor.side) {
            (None, _) => self.place_right(id, &self.root_kids, None, Point::Start),
            (Some(parent), Side::Right) => {
                let kids = kids_of(&self.right_kids, parent);
                self.place_right(id, kids, self.chain_child(parent), Point::After(parent))
            }
            (Some(parent), Side::Left) => {
                let kids = kids_of(&self.left_kids, parent);
                match kids.get(kids.partition_point(|&k| k < id)) {
                    Some(&next) => Point::Before(self.subtree_first(next)),
                    None => Point::Before(parent),
                }
            }
        }
    }

    /// Placement among right children: `kids` (explicit, ascending) plus the chain child.
    fn place_right(&self, id: OpId, kids: &[OpId], chain: Option<OpId>, alone: Point) -> Point {
        let bigger = kids.get(kids.partition_point(|&k| k < id)).copied();
        let bigger = match (bigger, chain.filter(|&c| c > id)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(next) = bigger {
            return Point::Before(self.subtree_first(next));
        }
        match kids.last().copied().max(chain) {
            Some(largest) => Point::After(self.subtree_last(largest)),
            None => alone,
        }
    }

    /// Record the tree edges of a new run (ids validated by [`Self::can_insert`]).
    fn record_tree(&mut self, id: OpId, len: Counter, anchor: Anchor) {
        let end = id.counter.saturating_add(len);
        let segments = self.segments.entry(id.peer).or_default();
        if continues_chain(id, &anchor)
            && let Some((_, segment)) = segments.range_mut(..id.counter).next_back()
            && segment.end == id.counter
        {
            segment.end = end;
            self.refresh_branch(OpId::new(id.peer, id.counter - 1));
            return;
        }
        segments.insert(id.counter, Segment { end, anchor });
        let kids = match (anchor.parent, anchor.side) {
            (None, _) => &mut self.root_kids,
            (Some(p), Side::Left) => kids_mut(&mut self.left_kids, p),
            (Some(p), Side::Right) => kids_mut(&mut self.right_kids, p),
        };
        let at = kids.partition_point(|&k| k < id);
        kids.insert(at, id);
        if let (Some(parent), Side::Right) = (anchor.parent, anchor.side) {
            self.refresh_branch(parent);
        }
    }

    // ---- pieces and chunks -----------------------------------------------------------------

    /// The piece at `loc`, which must come from this sequence as it is now.
    fn piece(&self, loc: Loc) -> &Piece<C> {
        &self.chunks[loc.chunk].pieces[loc.piece]
    }

    /// The id of the element at `loc`.
    fn id_at_loc(&self, loc: Loc) -> OpId {
        let start = self.piece(loc).start;
        OpId::new(start.peer, start.counter + loc.offset)
    }

    /// Where element `id` is, if present.
    fn locate(&self, id: OpId) -> Option<Loc> {
        let (&start, &key) = self.pieces.get(&id.peer)?.range(..=id.counter).next_back()?;
        let chunk = *self.chunk_pos.get(key)?;
        let pieces = &self.chunks.get(chunk)?.pieces;
        let piece = pieces.iter().position(|p| p.start == OpId::new(id.peer, start))?;
        let offset = id.counter - start;
        (offset < pieces[piece].len).then_some(Loc { chunk, piece, offset })
    }

    /// The location of the visible element at `pos`.
    fn find_visible(&self, pos: usize) -> Option<Loc> {
        let mut rest = pos;
        for (ci, chunk) in self.chunks.iter().enumerate() {
            if rest >= chunk.visible {
                rest -= chunk.visible;
                continue;
            }
            for (pi, piece) in chunk.pieces.iter().enumerate() {
                let visible = piece.visible_len();
                if rest < visible {
                    return Some(Loc { chunk: ci, piece: pi, offset: rest as Counter });
                }
                rest -= visible;
            }
            return None;
        }
        None
    }

    /// The first element of the full order.
    fn loc_first(&self) -> Option<Loc> {
        let chunk = self.chunks.iter().position(|c| !c.pieces.is_empty())?;
        Some(Loc { chunk, piece: 0, offset: 0 })
    }

    /// The element after `loc` in the full order.
    fn loc_after(&self, loc: Loc) -> Option<Loc> {
        if loc.offset + 1 < self.piece(loc).len {
            return Some(Loc { offset: loc.offset + 1, ..loc });
        }
        if loc.piece + 1 < self.chunks[loc.chunk].pieces.len() {
            return Some(Loc { piece: loc.piece + 1, offset: 0, ..loc });
        }
        let chunk =
            loc.chunk + 1 + self.chunks.get(loc.chunk + 1..)?.iter().position(|c| !c.pieces.is_empty())?;
        Some(Loc { chunk, piece: 0, offset: 0 })
    }

    /// How many visible elements precede `loc`.
    fn visible_before(&self, loc: Loc) -> usize {
        let chunk = &self.chunks[loc.chunk];
        let before: usize = self.chunks[..loc.chunk].iter().map(|c| c.visible).sum();
        let inside: usize = chunk.pieces[..loc.piece].iter().map(Piece::visible_len).sum();
        let own = if chunk.pieces[loc.piece].content.is_some() { loc.offset as usize } else { 0 };
        before + inside + own
    }

    /// Call `f(piece, from, to)` for the visible parts of `pos..pos + len`, in order.
    fn visit_visible(&self, pos: usize, len: usize, mut f: impl FnMut(&Piece<C>, Counter, Counter)) {
        if len == 0 {
            return;
        }
        let Some(loc) = self.find_visible(pos) else { return };
        let mut need = len;
        let mut offset = loc.offset;
        let pieces = self.chunks[loc.chunk..].iter().flat_map(|c| &c.pieces).skip(loc.piece);
        for piece in pieces {
            if need == 0 {
                break;
            }
            if piece.content.is_some() {
                let available = (piece.len - offset) as usize;
                let take = available.min(need);
                f(piece, offset, offset + take as Counter);
                need -= take;
            }
            offset = 0;
        }
    }

    /// Make room for a piece at `point`, splitting the piece there; returns chunk and index.
    fn open_slot(&mut self, point: Point) -> Option<(usize, usize)> {
        let (chunk, piece) = match point {
            Point::Start => {
                if self.chunks.is_empty() {
                    let key = self.chunk_pos.len();
                    self.chunk_pos.push(0);
                    self.chunks.push(Chunk { key, pieces: Vec::new(), visible: 0, total: 0 });
                }
                (0, 0)
            }
            Point::After(id) => {
                let loc = self.locate(id)?;
                self.split_piece(loc.chunk, loc.piece, loc.offset + 1);
                (loc.chunk, loc.piece + 1)
            }
            Point::Before(id) => {
                let loc = self.locate(id)?;
                if loc.offset == 0 {
                    (loc.chunk, loc.piece)
                } else {
                    self.split_piece(loc.chunk, loc.piece, loc.offset);
                    (loc.chunk, loc.piece + 1)
                }
            }
        };
        // At the start of a chunk, append to the previous one instead, so that a continued
        // chain can merge with the piece it continues.
        if piece == 0 && chunk > 0 {
            return Some((chunk - 1, self.chunks[chunk - 1].pieces.len()));
        }
        Some((chunk, piece))
    }

    /// Split piece `pi` of chunk `ci` before offset `at` (no-op at its ends).
    fn split_piece(&mut self, ci: usize, pi: usize, at: Counter) {
        let chunk = &mut self.chunks[ci];
        let piece = &mut chunk.pieces[pi];
        if at == 0 || at >= piece.len {
            return;
        }
        let content = piece.content.as_mut().map(|c| c.split_off(at as usize));
        let tail = Piece {
            start: OpId::new(piece.start.peer, piece.start.counter + at),
            len: piece.len - at,
            content,
        };
        piece.len = at;
        self.pieces.entry(tail.start.peer).or_default().insert(tail.start.counter, chunk.key);
        chunk.pieces.insert(pi + 1, tail);
    }

    /// Insert `piece` at index `pi` of chunk `ci`, merging it into its predecessor if it
    /// continues it.
    fn insert_piece(&mut self, ci: usize, pi: usize, piece: Piece<C>) {
        let (visible, total) = (piece.visible_len(), piece.len as usize);
        let chunk = &mut self.chunks[ci];
        self.pieces.entry(piece.start.peer).or_default().insert(piece.start.counter, chunk.key);
        chunk.pieces.insert(pi, piece);
        chunk.visible += visible;
        chunk.total += total;
        self.visible += visible;
        self.total += total;
        if pi > 0 {
            self.merge_pieces(ci, pi - 1);
        }
        self.fix_chunk(ci);
    }

    /// Merge piece `pi + 1` into piece `pi` of chunk `ci` if they continue one chain with the
    /// same status.
    fn merge_pieces(&mut self, ci: usize, pi: usize) {
        let Some(chunk) = self.chunks.get(ci) else { return };
        let (Some(a), Some(b)) = (chunk.pieces.get(pi), chunk.pieces.get(pi + 1)) else { return };
        let joins = a.start.peer == b.start.peer
            && a.end() == b.start.counter
            && a.content.is_some() == b.content.is_some()
            && !self.is_segment_start(b.start);
        if !joins {
            return;
        }
        let chunk = &mut self.chunks[ci];
        let b = chunk.pieces.remove(pi + 1);
        let a = &mut chunk.pieces[pi];
        a.len += b.len;
        if let (Some(a), Some(b)) = (a.content.as_mut(), b.content) {
            a.append(b);
        }
        if let Some(index) = self.pieces.get_mut(&b.start.peer) {
            index.remove(&b.start.counter);
        }
    }

    /// Split chunk `ci` in two if it grew too large.
    fn fix_chunk(&mut self, ci: usize) {
        let Some(chunk) = self.chunks.get_mut(ci) else { return };
        if chunk.pieces.len() <= MAX_PIECES {
            return;
        }
        let tail = chunk.pieces.split_off(chunk.pieces.len() / 2);
        let visible: usize = tail.iter().map(Piece::visible_len).sum();
        let total: usize = tail.iter().map(|p| p.len as usize).sum();
        chunk.visible -= visible;
        chunk.total -= total;
        let key = self.chunk_pos.len();
        for piece in &tail {
            self.pieces.entry(piece.start.peer).or_default().insert(piece.start.counter, key);
        }
        self.chunks.insert(ci + 1, Chunk { key, pieces: tail, visible, total });
        self.chunk_pos.push(0);
        for (i, chunk) in self.chunks.iter().enumerate().skip(ci + 1) {
            self.chunk_pos[chunk.key] = i;
        }
    }

    /// Tombstone the visible part of the piece holding `from` that lies before counter `hi`.
    fn delete_in_piece(&mut self, from: OpId, hi: Counter) -> usize {
        let Some(loc) = self.locate(from) else { return 0 };
        let (ci, mut pi) = (loc.chunk, loc.piece);
        if self.piece(loc).content.is_none() {
            return 0;
        }
        if loc.offset > 0 {
            self.split_piece(ci, pi, loc.offset);
            pi += 1;
        }
        self.split_piece(ci, pi, hi.saturating_sub(from.counter));
        let chunk = &mut self.chunks[ci];
        let piece = &mut chunk.pieces[pi];
        piece.content = None;
        let n = piece.len as usize;
        chunk.visible -= n;
        self.visible -= n;
        self.merge_pieces(ci, pi);
        if pi > 0 {
            self.merge_pieces(ci, pi - 1);
        }
        self.fix_chunk(ci);
        n
    }
}

impl<C: SeqContent> OracleSequence<C> {
    /// Maximal runs in document order, exactly as the canonical form had them.
    fn canonical_runs(&self) -> Vec<Run<Cow<'_, C>>> {
        let mut out: Vec<Run<Cow<'_, C>>> = Vec::new();
        let mut last_end = None;
        for piece in self.chunks.iter().flat_map(|c| &c.pieces) {
            let explicit = self.segments.get(&piece.start.peer).and_then(|m| m.get(&piece.start.counter));
            let continues = explicit.is_none() && last_end == Some(piece.start);
            last_end = Some(OpId::new(piece.start.peer, piece.end()));
            if continues && let Some(run) = out.last_mut() {
                match (&mut run.body, &piece.content) {
                    (Body::Visible(content), Some(more)) => {
                        content.to_mut().append(more.clone());
                        continue;
                    }
                    (Body::Deleted(len), None) => {
                        *len += piece.len;
                        continue;
                    }
                    _ => {}
                }
            }
            let body = match &piece.content {
                Some(content) => Body::Visible(Cow::Borrowed(content)),
                None => Body::Deleted(piece.len),
            };
            out.push(Run { start: piece.start, anchor: explicit.map(|s| s.anchor), body });
        }
        out
    }
}

impl<C: SeqContent> Serialize for OracleSequence<C> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.canonical_runs().serialize(serializer)
    }
}
