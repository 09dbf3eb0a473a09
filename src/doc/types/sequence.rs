//! A Fugue sequence CRDT over runs: the ordering core of text, lists and movable-list positions.
//!
//! # Model
//!
//! Every element has an [`OpId`] and an [`Anchor`]: a parent element (or the virtual root) and a
//! side. The document order is the in-order traversal of that tree: the subtrees of a node's left
//! children (ascending by id), the node, then the subtrees of its right children (ascending by
//! id). This is Fugue (Weidner & Kleppmann), under which two runs typed concurrently at the same
//! place never interleave.
//!
//! Element `(p, c + 1)` anchored as the right child of `(p, c)` *continues the chain* of
//! `(p, c)`. The elements of one insert are such a chain implicitly, and so are the keystrokes of
//! one peer typing forwards, one op each. Chains are the unit of tree bookkeeping: only the first
//! element of a chain (a [`Segment`]) carries an explicit anchor, so the structure, and with it
//! the serialized form, is the same however the ops were batched.
//!
//! # Storage
//!
//! The document order is a chunked vector of pieces (consecutive ids of one chain, all visible or
//! all deleted); each chunk caches its visible and total element counts, so position lookups cost
//! O(chunks + chunk size). An index from piece start to chunk finds an id in O(log n). Explicit
//! children are kept per parent, ordered by the parent's counter, and the elements where the
//! largest right child is not the chain child are indexed too, so that finding the last element
//! of a subtree jumps from branch to branch instead of walking a chain element by element.
//! Tombstones keep their ids and place but not their content.
//!
//! # Canonical form
//!
//! A sequence serializes as its maximal runs in document order (split only where the chain or the
//! deleted status changes), each with its first id, the anchor of its first element unless it
//! continues a chain, and its content or tombstone count. Replicas with the same inserts and
//! deletes therefore encode to the same bytes, however ops were batched or ordered. Decoding
//! rebuilds the tree and checks that the runs are in the order it implies.
//!
//! # Local insert convention
//!
//! Inserting at visible index `pos` hangs the new run right after the *visible* element `pos - 1`
//! (the root when `pos == 0`), as in the Fugue paper: as that element's right child if it has
//! none, otherwise as the left child of the element (visible or not) that follows it in the
//! full order, which never has left children. Either way the run lands right after that
//! element, at visible index `pos`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;

use crate::doc::id::{Counter, IdSpan, OpId, PeerId};

/// Which side of its parent an element hangs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) enum Side {
    /// Before the parent.
    Left,
    /// After the parent.
    Right,
}

/// Where a new run hangs in the Fugue tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct Anchor {
    /// The parent element; `None` is the virtual root, which only has right children.
    pub parent: Option<OpId>,
    /// Which side of the parent the run hangs on.
    pub side: Side,
}

impl Anchor {
    /// The anchor of the element typed right after `prev` (its right child).
    pub(crate) const fn after(prev: OpId) -> Self {
        Anchor { parent: Some(prev), side: Side::Right }
    }
}

/// Whether `anchor` makes `id` continue the chain of the element just before it.
fn continues_chain(id: OpId, anchor: &Anchor) -> bool {
    id.counter.checked_sub(1).is_some_and(|c| *anchor == Anchor::after(OpId::new(id.peer, c)))
}

/// The content of a run of elements: characters of a text, items of a list.
pub(crate) trait SeqContent: Clone + Debug + PartialEq + Serialize + DeserializeOwned {
    /// Content without elements.
    fn empty() -> Self;

    /// The number of elements (Unicode scalar values for text).
    fn len(&self) -> usize;

    /// Remove and return the elements from `at` on (`at` is clamped to the length).
    fn split_off(&mut self, at: usize) -> Self;

    /// Append `other` at the end.
    fn append(&mut self, other: Self);

    /// A copy of the elements `from..to` (clamped to the length).
    fn slice(&self, from: usize, to: usize) -> Self {
        let mut middle = self.clone().split_off(from);
        middle.split_off(to.saturating_sub(from));
        middle
    }
}

/// The byte offset of char `chars` of `s` (the end if there are fewer chars).
fn byte_offset(s: &str, chars: usize) -> usize {
    s.char_indices().nth(chars).map_or(s.len(), |(b, _)| b)
}

impl SeqContent for String {
    fn empty() -> Self {
        String::new()
    }

    fn len(&self) -> usize {
        self.chars().count()
    }

    fn split_off(&mut self, at: usize) -> Self {
        let at = byte_offset(self, at);
        String::split_off(self, at)
    }

    fn append(&mut self, other: Self) {
        self.push_str(&other);
    }

    fn slice(&self, from: usize, to: usize) -> Self {
        let start = byte_offset(self, from);
        let rest = &self[start..];
        rest[..byte_offset(rest, to.saturating_sub(from))].to_owned()
    }
}

impl<T: Clone + Debug + PartialEq + Serialize + DeserializeOwned> SeqContent for Vec<T> {
    fn empty() -> Self {
        Vec::new()
    }

    fn len(&self) -> usize {
        <[T]>::len(self)
    }

    fn split_off(&mut self, at: usize) -> Self {
        let at = at.min(<[T]>::len(self));
        Vec::split_off(self, at)
    }

    fn append(&mut self, mut other: Self) {
        Vec::append(self, &mut other);
    }

    fn slice(&self, from: usize, to: usize) -> Self {
        let from = from.min(<[T]>::len(self));
        let to = to.clamp(from, <[T]>::len(self));
        self[from..to].to_vec()
    }
}

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
pub(crate) struct Sequence<C> {
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

impl<C> Default for Sequence<C> {
    fn default() -> Self {
        Sequence {
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

/// Append span `start..start + len` to `out`, extending the last span when they touch.
fn push_span(out: &mut Vec<IdSpan>, start: OpId, len: Counter) {
    if let Some(last) = out.last_mut()
        && last.start.peer == start.peer
        && last.end_counter() == start.counter
    {
        last.len += len;
    } else {
        out.push(IdSpan::new(start, len));
    }
}

impl<C: SeqContent> Sequence<C> {
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
        let mut out = Vec::new();
        self.visit_visible(pos, len, |piece, from, to| {
            push_span(&mut out, OpId::new(piece.start.peer, piece.start.counter + from), to - from);
        });
        out
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

    /// The visible element at `pos`: its id, the content of the piece holding it, and its offset
    /// in that content.
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

    // ---- canonical form --------------------------------------------------------------------

    /// Maximal runs in document order: what is serialized and compared.
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

    /// Rebuild from decoded runs, checking everything a hostile encoder could get wrong.
    fn from_runs(runs: Vec<Run<C>>) -> Result<Self, &'static str> {
        // Pieces in document order, merged where the canonical form would have merged them.
        let mut pieces: Vec<(Piece<C>, Option<Anchor>)> = Vec::with_capacity(runs.len());
        for run in runs {
            let (len, content) = match run.body {
                Body::Visible(content) => {
                    (Counter::try_from(content.len()).map_err(|_| "run too long")?, Some(content))
                }
                Body::Deleted(len) => (len, None),
            };
            if len == 0 {
                return Err("empty run");
            }
            if run.start.counter.checked_add(len).is_none() {
                return Err("run ids overflow the counter");
            }
            let anchor = run.anchor.filter(|a| !continues_chain(run.start, a));
            let piece = Piece { start: run.start, len, content };
            if anchor.is_none()
                && let Some((prev, _)) = pieces.last_mut()
                && prev.start.peer == piece.start.peer
                && prev.end() == piece.start.counter
                && prev.content.is_some() == piece.content.is_some()
            {
                prev.len += piece.len;
                if let (Some(a), Some(b)) = (prev.content.as_mut(), piece.content) {
                    a.append(b);
                }
                continue;
            }
            pieces.push((piece, anchor));
        }

        // Chains, from the runs in id order.
        let mut by_id: Vec<(OpId, Counter, Option<Anchor>)> =
            pieces.iter().map(|(p, a)| (p.start, p.end(), *a)).collect();
        by_id.sort_unstable_by_key(|r| r.0);
        let mut seq = Sequence::<C>::default();
        for (i, &(start, end, anchor)) in by_id.iter().enumerate() {
            if i > 0 && by_id[i - 1].0.peer == start.peer && by_id[i - 1].1 > start.counter {
                return Err("duplicate element id");
            }
            let segments = seq.segments.entry(start.peer).or_default();
            match anchor {
                Some(anchor) => {
                    segments.insert(start.counter, Segment { end, anchor });
                }
                None => match segments.range_mut(..start.counter).next_back() {
                    Some((_, segment)) if segment.end == start.counter => segment.end = end,
                    _ => return Err("run continues a chain whose previous element is missing"),
                },
            }
        }
        // Explicit anchors name existing parents; children are pushed in ascending id order.
        for &(start, _, anchor) in &by_id {
            let Some(anchor) = anchor else { continue };
            let kids = match (anchor.parent, anchor.side) {
                (None, Side::Right) => &mut seq.root_kids,
                (None, Side::Left) => return Err("left child of the root"),
                (Some(p), _) if !seq.contains(p) => return Err("anchor names a missing element"),
                (Some(p), Side::Left) => kids_mut(&mut seq.left_kids, p),
                (Some(p), Side::Right) => kids_mut(&mut seq.right_kids, p),
            };
            kids.push(start);
        }
        let parents: Vec<OpId> =
            seq.right_kids.iter().flat_map(|(&p, kids)| kids.keys().map(move |&c| OpId::new(p, c))).collect();
        for parent in parents {
            seq.refresh_branch(parent);
        }

        // The runs must be in the order the tree implies (which also rules out cycles, whose
        // elements the traversal never reaches).
        let mut stored: Vec<(PeerId, Counter, Counter)> = Vec::with_capacity(pieces.len());
        for (piece, _) in &pieces {
            push_range(&mut stored, piece.start.peer, piece.start.counter, piece.end());
        }
        if seq.tree_order() != stored {
            return Err("runs are not in the order their anchors imply");
        }

        let mut pieces = pieces.into_iter().map(|(p, _)| p).peekable();
        while pieces.peek().is_some() {
            let key = seq.chunks.len();
            let chunk_pieces: Vec<Piece<C>> = pieces.by_ref().take(MAX_PIECES / 2).collect();
            let visible: usize = chunk_pieces.iter().map(Piece::visible_len).sum();
            let total: usize = chunk_pieces.iter().map(|p| p.len as usize).sum();
            for piece in &chunk_pieces {
                seq.pieces.entry(piece.start.peer).or_default().insert(piece.start.counter, key);
            }
            seq.chunks.push(Chunk { key, pieces: chunk_pieces, visible, total });
            seq.chunk_pos.push(key);
            seq.visible += visible;
            seq.total += total;
        }
        Ok(seq)
    }

    /// The in-order traversal of the tree, as merged id ranges `(peer, start, end)`.
    fn tree_order(&self) -> Vec<(PeerId, Counter, Counter)> {
        enum Task {
            /// Visit the subtree of an element.
            Subtree(OpId),
            /// Emit an element and what follows it on its chain, then its right subtrees.
            Emit(OpId),
        }
        let mut out = Vec::new();
        let mut stack: Vec<Task> = self.root_kids.iter().rev().map(|&k| Task::Subtree(k)).collect();
        while let Some(task) = stack.pop() {
            match task {
                Task::Subtree(id) => {
                    stack.push(Task::Emit(id));
                    stack.extend(kids_of(&self.left_kids, id).iter().rev().map(|&k| Task::Subtree(k)));
                }
                Task::Emit(id) => {
                    let Some((_, segment)) = self.segment_of(id) else { continue };
                    let (peer, from, end) = (id.peer, id.counter, segment.end);
                    // The chain runs on uninterrupted until an element with left children or
                    // one whose predecessor has explicit right children.
                    let left = self.left_kids.get(&peer).and_then(|m| m.range(from + 1..end).next());
                    let right = self.right_kids.get(&peer).and_then(|m| m.range(from..end).next());
                    let to = end.min(left.map_or(end, |(&c, _)| c)).min(right.map_or(end, |(&c, _)| c + 1));
                    push_range(&mut out, peer, from, to);
                    let last = OpId::new(peer, to - 1);
                    let mut next: Kids = kids_of(&self.right_kids, last).iter().copied().collect();
                    if to < end {
                        let chain = OpId::new(peer, to);
                        next.insert(next.partition_point(|&k| k < chain), chain);
                    }
                    stack.extend(next.iter().rev().map(|&k| Task::Subtree(k)));
                }
            }
        }
        out
    }
}

/// Append the range `from..to` of `peer`, extending the last range when they touch.
fn push_range(out: &mut Vec<(PeerId, Counter, Counter)>, peer: PeerId, from: Counter, to: Counter) {
    match out.last_mut() {
        Some(last) if last.0 == peer && last.2 == from => last.2 = to,
        _ => out.push((peer, from, to)),
    }
}

/// A serialized run's elements: the content, or only how many tombstones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Body<C> {
    Visible(C),
    Deleted(Counter),
}

/// One maximal run of the canonical form, in document order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Run<C> {
    start: OpId,
    /// The anchor of the first element; `None` when it continues the chain of `start - 1`.
    anchor: Option<Anchor>,
    body: Body<C>,
}

impl<C: SeqContent> PartialEq for Sequence<C> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self.total_len() == other.total_len()
            && self.canonical_runs() == other.canonical_runs()
    }
}

impl<C: SeqContent> Serialize for Sequence<C> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.canonical_runs().serialize(serializer)
    }
}

impl<'de, C: SeqContent> Deserialize<'de> for Sequence<C> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let runs = Vec::<Run<C>>::deserialize(deserializer)?;
        Sequence::from_runs(runs).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    use super::super::test_rng::Rng;

    trait TextRng {
        fn text(&mut self, max: usize) -> String;
    }

    impl TextRng for Rng {
        /// Between 1 and `max` characters, some of them outside ASCII.
        fn text(&mut self, max: usize) -> String {
            let len = 1 + self.below(max);
            (0..len).map(|_| ['a', 'b', 'é', '字', '🦀', 'z'][self.below(6)]).collect()
        }
    }

    fn id(peer: u64, counter: Counter) -> OpId {
        OpId::new(PeerId::new(peer), counter)
    }

    /// Every id in document order, tombstones included.
    fn full_order<C: SeqContent>(seq: &Sequence<C>) -> Vec<OpId> {
        let pieces = seq.chunks.iter().flat_map(|c| &c.pieces);
        pieces.flat_map(|p| (p.start.counter..p.end()).map(move |c| OpId::new(p.start.peer, c))).collect()
    }

    /// Check the internal bookkeeping against the pieces and the tree.
    fn check<C: SeqContent>(seq: &Sequence<C>) {
        let mut visible = 0;
        let mut total = 0;
        let mut stored = Vec::new();
        for (ci, chunk) in seq.chunks.iter().enumerate() {
            assert_eq!(seq.chunk_pos[chunk.key], ci);
            assert!(!chunk.pieces.is_empty() && chunk.pieces.len() <= MAX_PIECES);
            assert_eq!(chunk.visible, chunk.pieces.iter().map(Piece::visible_len).sum::<usize>());
            assert_eq!(chunk.total, chunk.pieces.iter().map(|p| p.len as usize).sum::<usize>());
            for piece in &chunk.pieces {
                assert!(piece.len > 0);
                if let Some(content) = &piece.content {
                    assert_eq!(content.len(), piece.len as usize);
                }
                assert_eq!(seq.pieces[&piece.start.peer][&piece.start.counter], chunk.key);
                push_range(&mut stored, piece.start.peer, piece.start.counter, piece.end());
            }
            visible += chunk.visible;
            total += chunk.total;
        }
        assert_eq!((visible, total), (seq.visible, seq.total));
        assert_eq!(
            seq.pieces.values().map(BTreeMap::len).sum::<usize>(),
            seq.chunks.iter().map(|c| c.pieces.len()).sum::<usize>()
        );
        assert_eq!(seq.tree_order(), stored, "pieces are not in tree order");
        let mut fresh = seq.clone();
        fresh.branches.clear();
        let parents: Vec<OpId> =
            seq.right_kids.iter().flat_map(|(&p, kids)| kids.keys().map(move |&c| OpId::new(p, c))).collect();
        parents.into_iter().for_each(|p| fresh.refresh_branch(p));
        let nonempty = |b: &HashMap<PeerId, BTreeSet<Counter>>| {
            b.iter().filter(|(_, s)| !s.is_empty()).map(|(p, s)| (*p, s.clone())).collect::<BTreeMap<_, _>>()
        };
        assert_eq!(nonempty(&fresh.branches), nonempty(&seq.branches));
    }

    fn round_trip<C: SeqContent>(seq: &Sequence<C>) -> Vec<u8> {
        let bytes = postcard::to_allocvec(seq).unwrap();
        let back: Sequence<C> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(&back, seq);
        assert_eq!(back.to_content(), seq.to_content());
        check(&back);
        assert_eq!(postcard::to_allocvec(&back).unwrap(), bytes);
        bytes
    }

    /// The document order straight from the Fugue definition, by recursion over all elements.
    fn naive_order(inserts: &[(OpId, Anchor, usize)]) -> Vec<OpId> {
        let mut kids: HashMap<(Option<OpId>, Side), Vec<OpId>> = HashMap::new();
        for &(start, anchor, len) in inserts {
            for i in 0..len as Counter {
                let element = OpId::new(start.peer, start.counter + i);
                let parent = if i == 0 {
                    (anchor.parent, anchor.side)
                } else {
                    (Some(id_before(element)), Side::Right)
                };
                kids.entry(parent).or_default().push(element);
            }
        }
        kids.values_mut().for_each(|k| k.sort());
        fn visit(node: OpId, kids: &HashMap<(Option<OpId>, Side), Vec<OpId>>, out: &mut Vec<OpId>) {
            for &k in kids.get(&(Some(node), Side::Left)).into_iter().flatten() {
                visit(k, kids, out);
            }
            out.push(node);
            for &k in kids.get(&(Some(node), Side::Right)).into_iter().flatten() {
                visit(k, kids, out);
            }
        }
        let mut out = Vec::new();
        for &k in kids.get(&(None, Side::Right)).into_iter().flatten() {
            visit(k, &kids, &mut out);
        }
        out
    }

    fn id_before(id: OpId) -> OpId {
        OpId::new(id.peer, id.counter - 1)
    }

    #[derive(Clone, Debug)]
    enum Edit {
        Insert(OpId, Anchor, String),
        Delete(Vec<IdSpan>),
    }

    fn apply(seq: &mut Sequence<String>, edit: &Edit) {
        match edit {
            Edit::Insert(id, anchor, text) => {
                assert!(seq.can_insert(*id, anchor, text.chars().count()), "{edit:?}");
                seq.insert(*id, *anchor, text.clone());
            }
            Edit::Delete(spans) => {
                assert!(spans.iter().all(|s| seq.contains_span(s)));
                seq.delete(spans);
            }
        }
    }

    /// One replica of a simulated network with causal delivery.
    struct Replica {
        seq: Sequence<String>,
        peer: u64,
        counter: Counter,
        /// How many ops of each replica this one has applied.
        applied: Vec<usize>,
    }

    /// An op as broadcast: who made it, what its maker had applied, what it does.
    struct Logged {
        deps: Vec<usize>,
        edit: Edit,
    }

    impl Replica {
        fn new(peer: u64, replicas: usize) -> Self {
            Replica { seq: Sequence::new(), peer, counter: 0, applied: vec![0; replicas] }
        }

        /// A random local edit, applied and appended to this replica's log.
        fn edit(&mut self, me: usize, rng: &mut Rng, log: &mut [Vec<Logged>]) {
            let len = self.seq.len();
            if rng.chance(10) {
                // Ids spent on other containers break chains without breaking anything else.
                self.counter += 1 + rng.below(3) as Counter;
            }
            let edits = if len > 0 && rng.chance(35) {
                let pos = rng.below(len);
                let n = 1 + rng.below((len - pos).min(4));
                vec![Edit::Delete(self.seq.visible_spans(pos, n))]
            } else {
                let pos = rng.below(len + 1);
                let text = rng.text(4);
                if rng.chance(50) {
                    let anchor = self.seq.local_anchor(pos);
                    let id = id(self.peer, self.counter);
                    self.counter += text.chars().count() as Counter;
                    vec![Edit::Insert(id, anchor, text)]
                } else {
                    // One op per keystroke: each op sees the previous one applied.
                    let mut edits = Vec::new();
                    for (i, ch) in text.chars().enumerate() {
                        let anchor = self.seq.local_anchor(pos + i);
                        let edit = Edit::Insert(id(self.peer, self.counter), anchor, ch.to_string());
                        self.counter += 1;
                        let at = self.seq.insert(id(self.peer, self.counter - 1), anchor, ch.to_string());
                        assert_eq!(at, pos + i);
                        edits.push(edit);
                    }
                    for edit in edits {
                        log[me].push(Logged { deps: self.applied.clone(), edit });
                        self.applied[me] += 1;
                    }
                    return;
                }
            };
            for edit in edits {
                let before = self.seq.to_content();
                apply(&mut self.seq, &edit);
                if let Edit::Insert(_, _, text) = &edit {
                    assert_eq!(self.seq.len(), before.chars().count() + text.chars().count());
                }
                log[me].push(Logged { deps: self.applied.clone(), edit });
                self.applied[me] += 1;
            }
        }

        /// Apply one deliverable op of another replica, if any; returns whether it did.
        fn receive(&mut self, rng: &mut Rng, log: &[Vec<Logged>]) -> bool {
            let ready: Vec<usize> = (0..log.len())
                .filter(|&r| {
                    log[r]
                        .get(self.applied[r])
                        .is_some_and(|op| op.deps.iter().zip(&self.applied).all(|(d, a)| d <= a))
                })
                .collect();
            if ready.is_empty() {
                return false;
            }
            let r = ready[rng.below(ready.len())];
            apply(&mut self.seq, &log[r][self.applied[r]].edit);
            self.applied[r] += 1;
            true
        }
    }

    fn simulate(seed: u64, replicas: usize, steps: usize) -> (Vec<Replica>, Vec<Vec<Logged>>) {
        let mut rng = Rng(seed);
        let mut log: Vec<Vec<Logged>> = (0..replicas).map(|_| Vec::new()).collect();
        let mut reps: Vec<Replica> =
            (0..replicas).map(|r| Replica::new(r as u64 * 7 + 3, replicas)).collect();
        for _ in 0..steps {
            let r = rng.below(replicas);
            if rng.chance(55) {
                reps[r].edit(r, &mut rng, &mut log);
            } else {
                reps[r].receive(&mut rng, &log);
            }
        }
        for rep in &mut reps {
            while rep.receive(&mut rng, &log) {}
        }
        (reps, log)
    }

    #[test]
    fn local_edits_match_a_vec_model() {
        for seed in 1..60u64 {
            let mut rng = Rng(seed * 0x9E37_79B9);
            let mut seq: Sequence<String> = Sequence::new();
            let mut model: Vec<char> = Vec::new();
            let mut counter = 0;
            for step in 0..300 {
                if !model.is_empty() && rng.chance(40) {
                    let pos = rng.below(model.len());
                    let n = 1 + rng.below((model.len() - pos).min(6));
                    let spans = seq.visible_spans(pos, n);
                    assert_eq!(spans.iter().map(|s| s.len as usize).sum::<usize>(), n);
                    assert_eq!(seq.delete(&spans), n);
                    assert_eq!(seq.delete(&spans), 0);
                    model.drain(pos..pos + n);
                } else {
                    let pos = rng.below(model.len() + 1);
                    let text = rng.text(5);
                    let anchor = seq.local_anchor(pos);
                    let n = text.chars().count();
                    assert_eq!(seq.insert(id(1, counter), anchor, text.clone()), pos);
                    counter += n as Counter + rng.below(2) as Counter;
                    model.splice(pos..pos, text.chars());
                }
                assert_eq!(seq.len(), model.len());
                if step % 25 == 0 {
                    check(&seq);
                    let text: String = model.iter().collect();
                    assert_eq!(seq.to_content(), text);
                    if !model.is_empty() {
                        let pos = rng.below(model.len());
                        let n = rng.below(model.len() - pos + 1);
                        assert_eq!(seq.slice(pos, n), model[pos..pos + n].iter().collect::<String>());
                        let at = seq.id_at(pos).unwrap();
                        assert_eq!(seq.position_of(at), Some(pos));
                        assert_eq!(seq.is_deleted(at), Some(false));
                        let (piece_id, content, offset) = seq.visible_piece_at(pos).unwrap();
                        assert_eq!(piece_id, at);
                        assert_eq!(content.chars().nth(offset), Some(model[pos]));
                    }
                }
            }
            let text: String = model.iter().collect();
            assert_eq!(seq.to_content(), text);
            check(&seq);
            round_trip(&seq);
        }
    }

    #[test]
    fn list_content_and_queries() {
        let mut seq: Sequence<Vec<u32>> = Sequence::new();
        assert_eq!(seq.local_anchor(0), Anchor { parent: None, side: Side::Right });
        seq.insert(id(1, 0), seq.local_anchor(0), vec![1, 2, 3, 4]);
        seq.insert(id(1, 10), seq.local_anchor(2), vec![9]);
        assert_eq!(seq.to_content(), vec![1, 2, 9, 3, 4]);
        assert_eq!(seq.delete(&[IdSpan::new(id(1, 1), 2)]), 2);
        assert_eq!(seq.to_content(), vec![1, 9, 4]);
        assert_eq!(seq.is_deleted(id(1, 2)), Some(true));
        assert_eq!(seq.position_of(id(1, 2)), Some(2));
        assert_eq!(seq.is_deleted(id(1, 7)), None);
        assert!(seq.contains_span(&IdSpan::new(id(1, 0), 4)));
        assert!(!seq.contains_span(&IdSpan::new(id(1, 0), 5)));
        assert!(seq.contains_span(&IdSpan::new(id(1, 10), 1)));
        assert_eq!((seq.len(), seq.total_len()), (3, 5));
        assert_eq!(
            seq.visible_spans(0, 3),
            vec![IdSpan::new(id(1, 0), 1), IdSpan::new(id(1, 10), 1), IdSpan::new(id(1, 3), 1)]
        );
        let mut pieces = Vec::new();
        seq.for_each_visible(|start, items| pieces.push((start, items.clone())));
        assert_eq!(pieces, vec![(id(1, 0), vec![1]), (id(1, 10), vec![9]), (id(1, 3), vec![4])]);
        // Invalid inserts change nothing.
        assert!(!seq.can_insert(id(1, 3), &Anchor::after(id(1, 0)), 1));
        assert!(!seq.can_insert(id(2, 0), &Anchor::after(id(5, 0)), 1));
        assert!(!seq.can_insert(id(2, 0), &Anchor { parent: None, side: Side::Left }, 1));
        assert!(!seq.can_insert(id(2, Counter::MAX), &Anchor::after(id(1, 0)), 1));
        assert!(!seq.can_insert(id(2, 0), &Anchor::after(id(1, 0)), 0));
        let before = seq.clone();
        assert_eq!(seq.insert(id(1, 2), Anchor::after(id(1, 0)), vec![7]), 3);
        assert_eq!(seq.insert(id(2, 0), Anchor::after(id(5, 5)), vec![7]), 3);
        assert_eq!(seq, before);
        check(&seq);
        round_trip(&seq);
    }

    #[test]
    fn concurrent_replicas_converge_to_identical_bytes() {
        for seed in 1..42u64 {
            let replicas = 2 + (seed % 2) as usize;
            // The last two runs are long enough to split chunks.
            let steps = if seed > 39 { 4_000 } else { 400 };
            let (reps, log) = simulate(seed * 0x2545_F491, replicas, steps);
            let bytes = round_trip(&reps[0].seq);
            assert!(steps < 4_000 || reps.iter().all(|r| r.seq.chunks.len() > 2), "seed {seed}");
            for rep in &reps {
                check(&rep.seq);
                assert_eq!(rep.seq.to_content(), reps[0].seq.to_content(), "seed {seed}");
                assert_eq!(postcard::to_allocvec(&rep.seq).unwrap(), bytes, "seed {seed}");
            }
            // The order is the Fugue order of the whole tree, whatever the delivery order was.
            let inserts: Vec<(OpId, Anchor, usize)> = log
                .iter()
                .flatten()
                .filter_map(|op| match &op.edit {
                    Edit::Insert(id, anchor, text) => Some((*id, *anchor, text.chars().count())),
                    Edit::Delete(_) => None,
                })
                .collect();
            assert_eq!(full_order(&reps[0].seq), naive_order(&inserts), "seed {seed}");
        }
    }

    #[test]
    fn batching_does_not_change_the_state() {
        // Typed one op per character on one replica, received as one run on another.
        let mut typed: Sequence<String> = Sequence::new();
        for (i, ch) in "hello".chars().enumerate() {
            typed.insert(id(4, i as Counter), typed.local_anchor(i), ch.to_string());
        }
        let mut batched: Sequence<String> = Sequence::new();
        batched.insert(id(4, 0), Anchor { parent: None, side: Side::Right }, "hello".into());
        assert_eq!(postcard::to_allocvec(&typed).unwrap(), postcard::to_allocvec(&batched).unwrap());
        // Then a concurrent insert in the middle, and a deletion spanning both.
        for seq in [&mut typed, &mut batched] {
            seq.insert(id(2, 0), Anchor::after(id(4, 1)), "XY".into());
            seq.delete(&[IdSpan::new(id(4, 1), 3), IdSpan::new(id(2, 1), 1)]);
            check(seq);
        }
        assert_eq!(typed.to_content(), "hXo");
        assert_eq!(postcard::to_allocvec(&typed).unwrap(), postcard::to_allocvec(&batched).unwrap());
        assert_eq!(typed, batched);
    }

    /// Type `text` at visible `pos` on a copy of `base`, one op per char or as one run.
    fn type_at(base: &Sequence<String>, peer: u64, pos: usize, text: &str, per_char: bool) -> Vec<Edit> {
        let mut seq = base.clone();
        let mut edits = Vec::new();
        if per_char {
            for (i, ch) in text.chars().enumerate() {
                let edit =
                    Edit::Insert(id(peer, 100 + i as Counter), seq.local_anchor(pos + i), ch.to_string());
                apply(&mut seq, &edit);
                edits.push(edit);
            }
        } else {
            edits.push(Edit::Insert(id(peer, 100), seq.local_anchor(pos), text.to_owned()));
        }
        edits
    }

    #[test]
    fn concurrent_runs_at_one_place_never_interleave() {
        let mut with_tombstone: Sequence<String> = Sequence::new();
        with_tombstone.insert(id(9, 0), Anchor { parent: None, side: Side::Right }, "12345".into());
        with_tombstone.delete(&[IdSpan::new(id(9, 2), 1)]);
        let mut middle: Sequence<String> = Sequence::new();
        middle.insert(id(9, 0), Anchor { parent: None, side: Side::Right }, "1245".into());
        let cases: [(Sequence<String>, usize); 5] = [
            (Sequence::new(), 0),
            (middle.clone(), 0),
            (middle.clone(), 2),
            (middle, 4),
            (with_tombstone, 2),
        ];
        for (base, pos) in cases {
            for (per_char_a, per_char_b) in [(false, false), (true, true), (true, false), (false, true)] {
                let a = type_at(&base, 1, pos, "abc", per_char_a);
                let b = type_at(&base, 2, pos, "xyz", per_char_b);
                let mut results = Vec::new();
                for first_a in [true, false] {
                    let mut seq = base.clone();
                    let (first, second) = if first_a { (&a, &b) } else { (&b, &a) };
                    first.iter().chain(second).for_each(|e| apply(&mut seq, e));
                    check(&seq);
                    results.push(seq);
                }
                assert_eq!(results[0], results[1]);
                let text = results[0].to_content();
                let around: String = base.to_content().chars().take(pos).collect();
                let inserted: String = text.chars().skip(pos).take(6).collect();
                assert!(text.starts_with(&around));
                assert!(inserted == "abcxyz" || inserted == "xyzabc", "{text}");
            }
        }
    }

    #[test]
    fn deep_chains_and_backward_typing_stay_iterative() {
        // Typing backwards builds a deep chain of left children; forwards a long right chain
        // that other peers branch off everywhere.
        let mut seq: Sequence<String> = Sequence::new();
        for i in 0..20_000 {
            seq.insert(id(1, i), seq.local_anchor(0), "b".into());
        }
        let mut forward: Sequence<String> = Sequence::new();
        for i in 0..20_000 {
            forward.insert(id(3, i), forward.local_anchor(i as usize), "f".into());
        }
        for i in 0..2_000 {
            let parent = id(3, i * 10);
            seq.insert(id(1, 100_000 + i), seq.local_anchor(seq.len() / 2), "x".into());
            forward.insert(id(5, i), Anchor::after(parent), "r".into());
            forward.insert(id(2, i), Anchor::after(parent), "l".into());
        }
        assert_eq!(forward.len(), 24_000);
        // A right child larger than the chain child goes after the chain's whole subtree.
        let text = forward.to_content();
        assert!(text.starts_with(&format!("fl{}l", "f".repeat(10))), "{}", &text[..20]);
        assert!(text.ends_with(&format!("ff{}", "r".repeat(2_000))));
        check(&seq);
        check(&forward);
        round_trip(&seq);
        round_trip(&forward);
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let (reps, _) = simulate(77, 3, 300);
        let bytes = postcard::to_allocvec(&reps[0].seq).unwrap();
        let mut rng = Rng(99);
        for cut in 0..bytes.len() {
            assert!(postcard::from_bytes::<Sequence<String>>(&bytes[..cut]).is_err() || cut == bytes.len());
        }
        for _ in 0..1_500 {
            let mut bad = bytes.clone();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(bad.len());
                bad[at] ^= 1 << rng.below(8);
            }
            if let Ok(seq) = postcard::from_bytes::<Sequence<String>>(&bad) {
                // Whatever decodes is a consistent sequence.
                check(&seq);
                let again = postcard::to_allocvec(&seq).unwrap();
                assert_eq!(postcard::from_bytes::<Sequence<String>>(&again).unwrap(), seq);
            }
        }
    }

    fn decode(runs: &[Run<String>]) -> Result<Sequence<String>, postcard::Error> {
        postcard::from_bytes(&postcard::to_allocvec(runs).unwrap())
    }

    #[test]
    fn inconsistent_encodings_are_errors() {
        let root = Some(Anchor { parent: None, side: Side::Right });
        let run = |start, anchor, body| Run { start, anchor, body };
        let text = |s: &str| Body::Visible(s.to_owned());
        let ok = [run(id(1, 0), root, text("ab")), run(id(2, 0), Some(Anchor::after(id(1, 1))), text("c"))];
        assert_eq!(decode(&ok).unwrap().to_content(), "abc");
        let bad: Vec<Vec<Run<String>>> = vec![
            // Duplicate ids.
            vec![run(id(1, 0), root, text("ab")), run(id(1, 1), Some(Anchor::after(id(1, 0))), text("c"))],
            // Missing parent.
            vec![run(id(1, 0), Some(Anchor::after(id(3, 0))), text("a"))],
            // Empty runs.
            vec![run(id(1, 0), root, text(""))],
            vec![run(id(1, 0), root, Body::Deleted(0))],
            // Counter overflow.
            vec![run(id(1, Counter::MAX), root, text("a"))],
            vec![run(id(1, 5), root, Body::Deleted(Counter::MAX))],
            // Not in document order.
            vec![run(id(2, 0), Some(Anchor::after(id(1, 1))), text("c")), run(id(1, 0), root, text("ab"))],
            vec![run(id(1, 0), root, text("a")), run(id(2, 0), root, text("b"))].into_iter().rev().collect(),
            // Chain continuation without its predecessor.
            vec![run(id(1, 3), None, text("a"))],
            // Left child of the root.
            vec![run(id(1, 0), Some(Anchor { parent: None, side: Side::Left }), text("a"))],
            // A cycle: each is the parent of the other.
            vec![
                run(id(1, 0), Some(Anchor::after(id(2, 0))), text("a")),
                run(id(2, 0), Some(Anchor::after(id(1, 0))), text("b")),
            ],
        ];
        for runs in bad {
            assert!(decode(&runs).is_err(), "{runs:?}");
        }
        // Non-maximal runs and explicit chain anchors are accepted and normalized.
        let split = [
            run(id(1, 0), root, text("a")),
            run(id(1, 1), Some(Anchor::after(id(1, 0))), text("b")),
            run(id(2, 0), Some(Anchor::after(id(1, 1))), text("c")),
        ];
        assert_eq!(decode(&split).unwrap(), decode(&ok).unwrap());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Ok(seq) = postcard::from_bytes::<Sequence<String>>(&bytes) {
                check(&seq);
            }
            if let Ok(seq) = postcard::from_bytes::<Sequence<Vec<u8>>>(&bytes) {
                check(&seq);
            }
        }
    }
}
