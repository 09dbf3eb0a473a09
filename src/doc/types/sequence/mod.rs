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
//! The document order is a B-tree of pieces (consecutive ids of one chain, all visible or all
//! deleted) in [`tree`]: leaves hold pieces, and every node caches its visible and total element
//! counts, so finding a visible position and counting the elements before an element take
//! O(log n); each leaf keeps its pieces' visible lengths side by side, so that the scan inside
//! a leaf reads a few cache lines. An index of which leaf holds each id ([`leaf_index`], runs
//! of counters per leaf in sorted chunks ([`run_map`]), touched only when ids change leaves)
//! finds an id in O(log n) too. Edits cluster, so the
//! tree also keeps a cursor at the last edit (its leaf, and how many visible elements precede
//! that leaf), and the positions the last edit left known: typing or deleting next to it
//! needs neither a descent from the root nor an index lookup. A keystroke that continues the
//! piece before it is appended to that piece in place, and a backspace or forward delete next
//! to a tombstone grows that tombstone; a delete over several pieces tombstones the whole
//! ones of a leaf together and compacts the leaf once. Tombstones keep their ids and place
//! but not their content.
//!
//! Local edits ([`Sequence::insert_local`], [`Sequence::delete_local`]) find their position
//! once and apply there; the anchor or the ids they return are what the operation records. A
//! local insert goes right after the visible element before it whatever its anchor, so it
//! needs none of the sibling placement a remote insert needs.
//!
//! Chains are kept per peer as a vector of 24-byte records sorted by first counter: a peer's
//! ids arrive in counter order, so a new chain is pushed at the end. Explicit children are kept
//! per parent, ordered by the parent's counter, and the elements where the largest right child
//! is not the chain child are indexed too, so that finding the last element of a subtree jumps
//! from branch to branch instead of walking a chain element by element. Per-peer maps are sorted
//! vectors ([`peer_map`]), since peers are few.
//!
//! Memory is dominated by the pieces, then the per-element indexes. Pieces are 48 bytes; leaves
//! grow a few pieces at a time rather than doubling, and content the cursor leaves behind is
//! trimmed of the spare room that typing (doubling) and deleting (truncating) left in it.
//! Decoding builds every map in one go, so B-tree nodes start full.
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
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::doc::id::{Counter, IdSpan, IdSpans, OpId, PeerId};
pub(crate) use content::{SeqContent, byte_offset_counted, push_typed, worth_trimming};
use peer_map::PeerMap;
use tree::{Loc, Piece, Pieces};

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
#[inline]
pub(crate) fn continues_chain(id: OpId, anchor: &Anchor) -> bool {
    id.counter.checked_sub(1).is_some_and(|c| *anchor == Anchor::after(OpId::new(id.peer, c)))
}

/// Explicit children of one parent, ascending by id. Nearly every parent has one (a second
/// comes only from concurrent inserts at one place), and an inline capacity of one keeps the
/// value, stored per parent in B-tree nodes with room for eleven, at 24 bytes instead of 40.
type Kids = SmallVec<[OpId; 1]>;

/// Per-peer maps keyed by counter: ordered so that a chain's counters can be scanned as a range.
type ByCounter<T> = PeerMap<BTreeMap<Counter, T>>;

/// A maximal chain: ids `start..end` of one peer, each the right child of the one before.
///
/// The anchor is stored flattened: an [`Anchor`] alone takes 32 bytes (an `Option<OpId>` pads
/// to 24), the whole record flattened 24, and there is one per chain.
#[derive(Clone, Copy, Debug)]
struct Segment {
    start: Counter,
    end: Counter,
    /// The anchor parent's counter (0 for the root).
    parent_counter: Counter,
    /// The anchor parent's peer (meaningless for the root).
    parent_peer: PeerId,
    /// Whether the anchor has a parent (bit 1) and hangs on its right (bit 0).
    shape: u8,
}

impl Segment {
    fn new(start: Counter, end: Counter, anchor: Anchor) -> Self {
        let (parent_peer, parent_counter) =
            anchor.parent.map_or((PeerId::new(0), 0), |p| (p.peer, p.counter));
        let shape = u8::from(anchor.parent.is_some()) << 1 | u8::from(anchor.side == Side::Right);
        Segment { start, end, parent_counter, parent_peer, shape }
    }

    /// The anchor of the chain's first element.
    fn anchor(&self) -> Anchor {
        let parent = (self.shape & 2 != 0).then(|| OpId::new(self.parent_peer, self.parent_counter));
        Anchor { parent, side: if self.shape & 1 != 0 { Side::Right } else { Side::Left } }
    }
}

/// One peer's chains, ascending by first counter. A sorted vector rather than a B-tree: a peer's
/// ids arrive in counter order, so a new chain is nearly always pushed at the end, and records
/// packed back to back take about half the room of B-tree nodes, which inserts in key order
/// leave about half full.
#[derive(Clone, Debug, Default)]
struct Chains(Vec<Segment>);

impl Chains {
    /// The index of the chain with the greatest start at most `at`. The last is tried first:
    /// edits mostly concern a peer's latest ids.
    fn floor_index(&self, at: Counter) -> Option<usize> {
        match self.0.last() {
            Some(last) if last.start <= at => Some(self.0.len() - 1),
            _ => self.0.partition_point(|s| s.start <= at).checked_sub(1),
        }
    }

    /// The chain with the greatest start at most `at`.
    fn floor(&self, at: Counter) -> Option<&Segment> {
        self.floor_index(at).map(|i| &self.0[i])
    }

    /// [`Self::floor`], to modify the chain.
    fn floor_mut(&mut self, at: Counter) -> Option<&mut Segment> {
        let i = self.floor_index(at)?;
        Some(&mut self.0[i])
    }

    /// The chain starting at `start`.
    fn get(&self, start: Counter) -> Option<&Segment> {
        self.floor(start).filter(|s| s.start == start)
    }

    /// Add a chain whose ids are all absent.
    fn insert(&mut self, segment: Segment) {
        if self.0.len() == self.0.capacity() {
            // Grow by a quarter, not double: the slack stays small and growing stays amortized.
            self.0.reserve_exact(self.0.len() / 4 + 1);
        }
        // A peer's new ids come after all its others: a search would only find the end.
        if self.0.last().is_none_or(|last| last.start < segment.start) {
            self.0.push(segment);
            return;
        }
        let at = self.0.partition_point(|s| s.start < segment.start);
        self.0.insert(at, segment);
    }

    /// The first chain start in `from + 1..to`.
    fn next_start(&self, from: Counter, to: Counter) -> Option<Counter> {
        let i = self.0.partition_point(|s| s.start <= from);
        self.0.get(i).map(|s| s.start).filter(|&start| start < to)
    }
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
    /// The document order.
    pieces: Pieces<C>,
    /// Chains by first counter; they cover exactly the present ids.
    segments: PeerMap<Chains>,
    left_kids: ByCounter<Kids>,
    right_kids: ByCounter<Kids>,
    root_kids: Kids,
    /// Elements whose largest right child is an explicit one rather than the chain child:
    /// where the walk to the end of a subtree leaves a chain.
    branches: PeerMap<BTreeSet<Counter>>,
    /// Where the author's next keystroke goes if it types on again, set by one that typed on.
    /// Every other edit clears it: it may move the piece, or hang something after its end.
    typing: Option<TypingOn>,
}

/// The state a keystroke that typed on leaves: the next one at visible index `pos`, whose id
/// continues piece `piece` of leaf `leaf`, types on too and extends that piece with no lookup.
#[derive(Clone, Copy, Debug)]
struct TypingOn {
    pos: usize,
    leaf: usize,
    piece: usize,
}

impl<C> Default for Sequence<C> {
    fn default() -> Self {
        Sequence {
            pieces: Pieces::default(),
            segments: PeerMap::default(),
            left_kids: PeerMap::default(),
            right_kids: PeerMap::default(),
            root_kids: Kids::new(),
            branches: PeerMap::default(),
            typing: None,
        }
    }
}

/// The explicit children of `parent` in `map`, ascending. The last parent is tried first: a
/// local edit asks about the author's latest elements, which have no child or the last one.
fn kids_of(map: &ByCounter<Kids>, parent: OpId) -> &[OpId] {
    let Some(by_counter) = map.get(parent.peer) else { return &[] };
    match by_counter.last_key_value() {
        Some((&last, kids)) if last == parent.counter => kids,
        Some((&last, _)) if last > parent.counter => {
            by_counter.get(&parent.counter).map_or(&[], |k| k.as_slice())
        }
        _ => &[],
    }
}

/// The explicit children of `parent` in `map`, created empty if needed.
fn kids_mut(map: &mut ByCounter<Kids>, parent: OpId) -> &mut Kids {
    map.entry(parent.peer).entry(parent.counter).or_default()
}

/// Whether `id` starts a chain (has an explicit anchor) according to `segments`.
#[cfg(test)]
fn starts_chain(segments: &PeerMap<Chains>, id: OpId) -> bool {
    segments.get(id.peer).is_some_and(|m| m.get(id.counter).is_some())
}

/// Append span `start..start + len` to `out`, extending the last span when they touch.
fn push_span(out: &mut IdSpans, start: OpId, len: Counter) {
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
        self.pieces.visible()
    }

    /// Whether there are no visible elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of elements, tombstones included.
    pub fn total_len(&self) -> usize {
        self.pieces.total()
    }

    /// The anchor for a local insert at visible index `pos` (clamped to [`Self::len`]); see the
    /// module docs for the convention.
    pub fn local_anchor(&self, pos: usize) -> Anchor {
        self.local_place(pos).0
    }

    /// [`Self::local_anchor`], with the element the new run follows in the full order (none
    /// at the start): the new run goes right after it whatever the anchor.
    fn local_place(&self, pos: usize) -> (Anchor, Option<Loc>) {
        let pos = pos.min(self.len());
        self.local_place_after(pos.checked_sub(1).and_then(|p| self.pieces.find_visible(p)))
    }

    /// [`Self::local_place`] for an insert right after `left`, the visible element before it
    /// (none at the start), already found.
    fn local_place_after(&self, left: Option<Loc>) -> (Anchor, Option<Loc>) {
        let Some(left) = left else {
            // The root always has right children once anything exists, so go before the first
            // element of the full order.
            let anchor = match self.pieces.first() {
                Some(first) => Anchor { parent: Some(self.pieces.id_at(first)), side: Side::Left },
                None => Anchor { parent: None, side: Side::Right },
            };
            return (anchor, None);
        };
        let left_id = self.pieces.id_at(left);
        // Inside a piece, the next element continues `left`'s chain: a right child, found
        // without searching the chains (a cache miss on a large document).
        let inside = left.offset + 1 < self.pieces.piece(left).len;
        if !inside && !self.has_right_kids(left_id) {
            return (Anchor::after(left_id), Some(left));
        }
        // The element after `left` is the first of `left`'s right subtree, so it has no left
        // children: the run hung on its left lands right after `left`.
        match self.pieces.after(left) {
            Some(next) => (Anchor { parent: Some(self.pieces.id_at(next)), side: Side::Left }, Some(left)),
            None => (Anchor::after(left_id), Some(left)),
        }
    }

    /// Insert `content`, with ids from `id`, at visible index `pos` (clamped to
    /// [`Self::len`]) as a local edit, hung by the local insert convention (see the module
    /// docs); returns the anchor, which the operation records. `id` is the author's next id,
    /// and `len` the number of elements of `content`, which the caller has counted.
    pub fn insert_local(&mut self, pos: usize, id: OpId, content: &C::Slice, len: usize) -> Anchor {
        debug_assert_eq!(len, C::slice_len(content));
        let pos = pos.min(self.len());
        let anchor = match self.type_on(pos, id, content, len) {
            Ok(anchor) => anchor,
            Err(left) => self.jump_to(pos, left, id, content, len),
        };
        // The next keystroke most likely types on after the last element.
        if let Some(last) = len.checked_sub(1).and_then(|n| Counter::try_from(n).ok()) {
            self.pieces.remember(pos + len - 1, OpId::new(id.peer, id.counter + last));
        }
        anchor
    }

    /// The commonest local insert, typing on: the visible element right before `pos` is
    /// `id - 1`, the author's latest element, which ends its piece and its chain and has no
    /// other right child. The run then continues that chain and extends that piece in place,
    /// with one position lookup and no search among siblings. Having done nothing when the
    /// insert is anything else, it gives back the visible element before `pos` if it looked
    /// it up, so that the jump does not look it up again.
    fn type_on(
        &mut self,
        pos: usize,
        id: OpId,
        content: &C::Slice,
        len: usize,
    ) -> Result<Anchor, Option<Loc>> {
        let typing = self.typing.take();
        let prev = OpId::new(id.peer, id.counter.checked_sub(1).ok_or(None)?);
        let len = Counter::try_from(len).ok().filter(|&n| n > 0).ok_or(None)?;
        let end = id.counter.checked_add(len).ok_or(None)?;
        let (leaf, piece, found) = match typing {
            // Nothing changed since the last keystroke typed on, right before `pos`, if the
            // piece it extended still ends right before `id`. Were an edit ever to leave the
            // record stale, typing falls back to the lookups below instead of extending
            // another piece.
            Some(t) if t.pos == pos && self.pieces.visible_ends_before(t.leaf, t.piece, id) => {
                (t.leaf, t.piece, None)
            }
            _ => {
                let loc = self.pieces.seek_visible(pos.checked_sub(1).ok_or(None)?).ok_or(None)?;
                if self.pieces.id_at(loc) != prev
                    || loc.offset + 1 != self.pieces.piece(loc).len
                    || !kids_of(&self.right_kids, prev).is_empty()
                {
                    return Err(Some(loc));
                }
                (loc.leaf, loc.piece, Some(loc))
            }
        };
        // The peer's last chain ending at `id` holds `prev`, and no id from `id` on is present.
        let last_chain = self.segments.get_mut(id.peer).and_then(|chains| chains.0.last_mut());
        let Some(chain) = last_chain.filter(|chain| chain.end == id.counter) else {
            return Err(found);
        };
        chain.end = end;
        self.pieces.extend(leaf, piece, len, Cow::Borrowed(content));
        self.typing = Some(TypingOn { pos: pos + len as usize, leaf, piece });
        Ok(Anchor::after(prev))
    }

    /// A local insert that does not type on: a new chain hung by the local insert convention.
    /// The position lookup that finds the anchor also finds the slot, right after the visible
    /// element `pos - 1`, so the placement among siblings and the id lookup of the general
    /// path are skipped; so are its validity checks, since `id` is the author's next id.
    /// `left` is that element if the caller found it already.
    fn jump_to(&mut self, pos: usize, left: Option<Loc>, id: OpId, content: &C::Slice, len: usize) -> Anchor {
        self.typing = None;
        let (anchor, left) = match left {
            Some(left) => self.local_place_after(Some(left)),
            None => self.local_place(pos),
        };
        let content = Cow::Owned(C::to_owned_with_room(content));
        let Some(left) = left else {
            // At the start: rare, and the general path knows the first slot.
            self.insert_counted(id, anchor, content, len);
            return anchor;
        };
        let Some(n) = Counter::try_from(len).ok().filter(|&n| n > 0) else { return anchor };
        debug_assert!(self.can_insert(id, &anchor, len), "{id:?} is not the author's next id");
        self.pieces.split(left.leaf, left.piece, left.offset + 1);
        let (leaf, at) = self.pieces.slot(left.leaf, left.piece + 1);
        let joins = !self.record_tree(id, n, anchor);
        self.pieces.insert(leaf, at, id, n, content, joins);
        anchor
    }

    /// Tombstone the visible elements `pos..pos + len` (clamped to the sequence) as a local
    /// edit; returns their ids, which the operation records, as [`Self::visible_spans`] gives
    /// them.
    pub fn delete_local(&mut self, pos: usize, len: usize) -> IdSpans {
        self.typing = None;
        let mut out = IdSpans::new();
        let mut left = len;
        // The elements on either side of the deletion, when they are in the same pieces as
        // its ends: where a backspace or a forward delete goes next.
        let (mut before, mut after) = (None, None);
        while left > 0 {
            // What is deleted stops being visible, so the rest starts at `pos` again.
            let Some(loc) = self.pieces.seek_visible(pos) else { break };
            let rest = (self.pieces.piece(loc).len - loc.offset) as usize;
            // A delete that goes on past a whole piece takes the whole pieces together, as
            // many as the leaf holds in a row.
            if loc.offset == 0 && rest < left {
                let whole = self.pieces.delete_whole(loc, left, |id, len| push_span(&mut out, id, len));
                // The first piece fits, so it went.
                debug_assert!(whole > 0, "a whole piece that fits was not deleted");
                after = None;
                left -= whole;
                continue;
            }
            let take = Counter::try_from(rest.min(left)).unwrap_or(Counter::MAX);
            let first = self.pieces.id_at(loc);
            if out.is_empty() && loc.offset > 0 {
                before = Some(OpId::new(first.peer, first.counter - 1));
            }
            let rest_after = take < self.pieces.piece(loc).len - loc.offset;
            push_span(&mut out, first, take);
            let deleted = self.pieces.delete(loc, take);
            if deleted == 0 {
                break;
            }
            after = rest_after.then(|| OpId::new(first.peer, first.counter + take));
            left -= deleted;
        }
        if let Some(after) = after {
            self.pieces.remember(pos, after);
        }
        if let (Some(before), Some(at)) = (before, pos.checked_sub(1)) {
            self.pieces.remember(at, before);
        }
        out
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
        match self.insert_content(id, anchor, Cow::Owned(content)) {
            Some(loc) => self.pieces.visible_before(loc),
            None => self.len(),
        }
    }

    /// [`Sequence::insert`] of content the caller keeps (a change's operation, a local edit's
    /// argument), copied into the sequence (appended when it continues a run), without
    /// working out the position, which applying a change does not need.
    pub fn insert_copy(&mut self, id: OpId, anchor: Anchor, content: &C::Slice) {
        self.insert_content(id, anchor, Cow::Borrowed(content));
    }

    /// Where the content went, or `None` if it was not inserted.
    fn insert_content(&mut self, id: OpId, anchor: Anchor, content: Cow<'_, C::Slice>) -> Option<Loc> {
        let n = C::slice_len(&content);
        self.insert_counted(id, anchor, content, n)
    }

    /// [`Self::insert_content`] of content known to hold `n` elements.
    fn insert_counted(
        &mut self,
        id: OpId,
        anchor: Anchor,
        content: Cow<'_, C::Slice>,
        n: usize,
    ) -> Option<Loc> {
        self.typing = None;
        let len = Counter::try_from(n).ok()?;
        if let Some((leaf, at)) = self.chain_end_slot(id, &anchor, len) {
            // Only `chain_end_slot`'s case: the chain grows, no tree edge is added.
            if let Some(chain) = self.segments.get_mut(id.peer).and_then(|c| c.0.last_mut()) {
                chain.end = id.counter + len;
            }
            return Some(self.pieces.insert(leaf, at, id, len, content, true));
        }
        if !self.can_insert(id, &anchor, n) {
            return None;
        }
        let point = self.placement(id, &anchor);
        let (leaf, at) = self.open_slot(point)?;
        let joins = !self.record_tree(id, len, anchor);
        Some(self.pieces.insert(leaf, at, id, len, content, joins))
    }

    /// The ids of the visible elements `pos..pos + len`, in document order, merged into maximal
    /// spans of consecutive counters of one peer.
    pub fn visible_spans(&self, pos: usize, len: usize) -> IdSpans {
        let mut out = IdSpans::new();
        self.visit_visible(pos, len, |piece, from, to| {
            push_span(&mut out, OpId::new(piece.peer, piece.counter + from), to - from);
        });
        out
    }

    /// Tombstone every present element of `spans` (absent ids are ignored, deleting twice is
    /// harmless); returns how many visible elements were deleted.
    pub fn delete<'a>(&mut self, spans: impl IntoIterator<Item = &'a IdSpan>) -> usize {
        self.typing = None;
        let mut deleted = 0;
        for span in spans {
            let (peer, lo, hi) = (span.start.peer, span.start.counter, span.end_counter());
            // Walk the span element run by element run: each step tombstones (at most) the rest
            // of one piece and lands on the next id.
            let mut counter = lo;
            while counter < hi {
                let Some(loc) = self.pieces.locate(OpId::new(peer, counter)) else {
                    // Absent ids: skip to the next present one.
                    match self.next_present(peer, counter, hi) {
                        Some(next) => counter = next,
                        None => break,
                    }
                    continue;
                };
                let rest = self.pieces.piece(loc).len - loc.offset;
                let take = rest.min(hi - counter);
                deleted += self.pieces.delete(loc, take);
                counter += take;
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
        let loc = self.pieces.locate(id)?;
        Some(self.pieces.piece(loc).content.is_none())
    }

    /// The number of visible elements before `id` in the order (also for tombstones).
    pub fn position_of(&self, id: OpId) -> Option<usize> {
        Some(self.pieces.visible_before(self.pieces.locate(id)?))
    }

    /// The id of the visible element at `pos`.
    pub fn id_at(&self, pos: usize) -> Option<OpId> {
        Some(self.pieces.id_at(self.pieces.find_visible(pos)?))
    }

    /// The visible element at `pos`: its own id (not the piece's first), the content of the
    /// piece holding it, and its offset in that content.
    pub fn visible_piece_at(&self, pos: usize) -> Option<(OpId, &C, usize)> {
        let loc = self.pieces.find_visible(pos)?;
        let content = self.pieces.piece(loc).content.as_ref()?;
        Some((self.pieces.id_at(loc), content, loc.offset as usize))
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
        for piece in self.pieces.iter() {
            if let Some(content) = &piece.content {
                f(piece.start(), content);
            }
        }
    }

    /// All visible content, concatenated.
    pub fn to_content(&self) -> C {
        let mut out = C::empty();
        self.for_each_visible(|_, content| out.append(content.clone()));
        out
    }

    /// Check the tree's invariants, and that each piece knows whether it starts a chain.
    #[cfg(test)]
    pub(super) fn check(&self) {
        self.pieces.check();
        for piece in self.pieces.iter() {
            assert_eq!(piece.starts_chain, starts_chain(&self.segments, piece.start()), "{piece:?}");
        }
    }

    // ---- tree ------------------------------------------------------------------------------

    /// The chain holding `id`, with its first counter.
    fn segment_of(&self, id: OpId) -> Option<(Counter, &Segment)> {
        let segment = self.segments.get(id.peer)?.floor(id.counter)?;
        (id.counter < segment.end).then_some((segment.start, segment))
    }

    /// Whether any id of `lo..hi` of `peer` is present.
    fn overlaps(&self, peer: PeerId, lo: Counter, hi: Counter) -> bool {
        let Some(segments) = self.segments.get(peer) else { return false };
        let Some(last) = hi.checked_sub(1) else { return false };
        segments.floor(last).is_some_and(|segment| segment.end > lo)
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
            let branch = self.branches.get(id.peer).and_then(|b| b.range(id.counter..=last).next());
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
        let branches = self.branches.entry(parent.peer);
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

    /// Record the tree edges of a new run (ids validated by [`Self::can_insert`]); returns
    /// whether it starts a chain (rather than extending one).
    fn record_tree(&mut self, id: OpId, len: Counter, anchor: Anchor) -> bool {
        let end = id.counter.saturating_add(len);
        let segments = self.segments.entry(id.peer);
        if continues_chain(id, &anchor)
            && let Some(segment) = segments.floor_mut(id.counter - 1)
            && segment.end == id.counter
        {
            segment.end = end;
            // Without explicit right children the parent was no branch and stays none: the
            // common case of typing forwards skips the lookups.
            let parent = OpId::new(id.peer, id.counter - 1);
            if !kids_of(&self.right_kids, parent).is_empty() {
                self.refresh_branch(parent);
            }
            return false;
        }
        segments.insert(Segment::new(id.counter, end, anchor));
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
        true
    }

    // ---- document order --------------------------------------------------------------------

    /// The first present counter of `peer` in `from + 1..to`, for skipping an absent `from`.
    fn next_present(&self, peer: PeerId, from: Counter, to: Counter) -> Option<Counter> {
        self.segments.get(peer)?.next_start(from, to)
    }

    /// Call `f(piece, from, to)` for the visible parts of `pos..pos + len`, in order.
    fn visit_visible(&self, pos: usize, len: usize, mut f: impl FnMut(&Piece<C>, Counter, Counter)) {
        if len == 0 {
            return;
        }
        let Some(loc) = self.pieces.find_visible(pos) else { return };
        let mut need = len;
        let mut offset = loc.offset;
        for piece in self.pieces.iter_from(loc.leaf, loc.piece) {
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

    /// The slot for the commonest remote insert, a peer typing on: ids `id..id + len` hung
    /// right after `id - 1`, the last id the document holds of that peer, which has no
    /// explicit right children. The run then just extends that chain and lands right after
    /// it, with none of the sibling and subtree lookups of the general path. `None` when the
    /// insert is anything else (the general path decides), or is invalid.
    fn chain_end_slot(&mut self, id: OpId, anchor: &Anchor, len: Counter) -> Option<(usize, usize)> {
        let prev = OpId::new(id.peer, id.counter.checked_sub(1)?);
        if len == 0 || *anchor != Anchor::after(prev) || id.counter.checked_add(len).is_none() {
            return None;
        }
        // The peer's last chain ends right at `id`: `prev` is present, and no id of the new
        // run is (a peer's chains are sorted, and none starts after the last).
        let last = self.segments.get(id.peer)?.0.last()?;
        if last.end != id.counter || !kids_of(&self.right_kids, prev).is_empty() {
            return None;
        }
        self.open_slot(Point::After(prev))
    }

    /// Make room for a piece at `point`, splitting the piece there; returns leaf and index.
    fn open_slot(&mut self, point: Point) -> Option<(usize, usize)> {
        let (leaf, piece) = match point {
            Point::Start => return Some(self.pieces.start_slot()),
            Point::After(id) => {
                let loc = self.pieces.locate(id)?;
                self.pieces.split(loc.leaf, loc.piece, loc.offset + 1);
                (loc.leaf, loc.piece + 1)
            }
            Point::Before(id) => {
                let loc = self.pieces.locate(id)?;
                if loc.offset == 0 {
                    (loc.leaf, loc.piece)
                } else {
                    self.pieces.split(loc.leaf, loc.piece, loc.offset);
                    (loc.leaf, loc.piece + 1)
                }
            }
        };
        Some(self.pieces.slot(leaf, piece))
    }
}

mod canonical;
mod compact;
mod content;
#[cfg(test)]
mod differential;
mod leaf_index;
#[cfg(test)]
mod oracle;
mod peer_map;
mod rebuild;
mod run_map;
#[cfg(test)]
mod tests;
mod tree;
