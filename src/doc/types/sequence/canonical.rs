//! The canonical serialized form of a [`Sequence`]: maximal runs in document order.
//!
//! Replicas holding the same inserts and deletes encode to the same bytes however the operations
//! were batched or ordered; decoding rebuilds the tree and checks that the runs are in the order
//! it implies, so hostile bytes are an error, never a corrupt sequence.

use std::borrow::Cow;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::*;

impl<C: SeqContent> Sequence<C> {
    /// Maximal runs in document order: what is serialized and compared.
    pub(super) fn canonical_runs(&self) -> Vec<Run<Cow<'_, C>>> {
        let mut out: Vec<Run<Cow<'_, C>>> = Vec::new();
        let mut last_end = None;
        for piece in self.pieces.iter() {
            let explicit = self.segments.get(piece.peer).and_then(|m| m.get(piece.counter));
            let continues = explicit.is_none() && last_end == Some(piece.start());
            last_end = Some(OpId::new(piece.peer, piece.end()));
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
            out.push(Run { start: piece.start(), anchor: explicit.map(Segment::anchor), body });
        }
        out
    }

    /// Rebuild from decoded runs, checking everything a hostile encoder could get wrong.
    pub(super) fn from_runs(runs: Vec<Run<C>>) -> Result<Self, &'static str> {
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
            let piece = Piece::new(run.start, len, content);
            if anchor.is_none()
                && let Some((prev, _)) = pieces.last_mut()
                && prev.peer == piece.peer
                && prev.end() == piece.counter
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
            pieces.iter().map(|(p, a)| (p.start(), p.end(), *a)).collect();
        by_id.sort_unstable_by_key(|r| r.0);
        let mut chains: Vec<(PeerId, Chains)> = Vec::new();
        for (i, &(start, end, anchor)) in by_id.iter().enumerate() {
            if i > 0 && by_id[i - 1].0.peer == start.peer && by_id[i - 1].1 > start.counter {
                return Err("duplicate element id");
            }
            let last = chains.last_mut().filter(|(peer, _)| *peer == start.peer);
            match anchor {
                Some(anchor) => {
                    let segment = Segment::new(start.counter, end, anchor);
                    match last {
                        Some((_, list)) => list.0.push(segment),
                        None => chains.push((start.peer, Chains(vec![segment]))),
                    }
                }
                None => match last.and_then(|(_, list)| list.0.last_mut()) {
                    Some(segment) if segment.end == start.counter => segment.end = end,
                    _ => return Err("run continues a chain whose previous element is missing"),
                },
            }
        }
        for (_, list) in &mut chains {
            list.0.shrink_to_fit();
        }
        let mut seq = Sequence::<C> { segments: PeerMap::from_entries(chains), ..Sequence::default() };
        // Explicit anchors name existing parents; children are gathered in ascending id order.
        let (mut left, mut right) = (Vec::new(), Vec::new());
        for &(start, _, anchor) in &by_id {
            let Some(anchor) = anchor else { continue };
            match (anchor.parent, anchor.side) {
                (None, Side::Right) => seq.root_kids.push(start),
                (None, Side::Left) => return Err("left child of the root"),
                (Some(p), _) if !seq.contains(p) => return Err("anchor names a missing element"),
                (Some(p), Side::Left) => left.push((p, start)),
                (Some(p), Side::Right) => right.push((p, start)),
            }
        }
        seq.left_kids = group_kids(left);
        seq.right_kids = group_kids(right);
        let parents: Vec<OpId> =
            seq.right_kids.iter().flat_map(|(p, kids)| kids.keys().map(move |&c| OpId::new(p, c))).collect();
        for parent in parents {
            seq.refresh_branch(parent);
        }

        // The runs must be in the order the tree implies (which also rules out cycles, whose
        // elements the traversal never reaches).
        let mut stored: Vec<(PeerId, Counter, Counter)> = Vec::with_capacity(pieces.len());
        for (piece, _) in &pieces {
            push_range(&mut stored, piece.peer, piece.counter, piece.end());
        }
        if seq.tree_order() != stored {
            return Err("runs are not in the order their anchors imply");
        }

        seq.pieces = Pieces::from_pieces(pieces.into_iter().map(|(p, _)| p).collect());
        Ok(seq)
    }

    /// The in-order traversal of the tree, as merged id ranges `(peer, start, end)`.
    pub(super) fn tree_order(&self) -> Vec<(PeerId, Counter, Counter)> {
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
                    let left = self.left_kids.get(peer).and_then(|m| m.range(from + 1..end).next());
                    let right = self.right_kids.get(peer).and_then(|m| m.range(from..end).next());
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

/// Per-parent children from `(parent, child)` edges listed in ascending child order.
fn group_kids(mut edges: Vec<(OpId, OpId)>) -> ByCounter<Kids> {
    // Stable, so each parent's children stay ascending.
    edges.sort_by_key(|&(parent, _)| parent);
    let mut grouped: Vec<(OpId, Kids)> = Vec::new();
    for (parent, kid) in edges {
        match grouped.last_mut() {
            Some((p, kids)) if *p == parent => kids.push(kid),
            _ => grouped.push((parent, Kids::from_elem(kid, 1))),
        }
    }
    PeerMap::from_sorted(grouped)
}

/// Append the range `from..to` of `peer`, extending the last range when they touch.
pub(super) fn push_range(
    out: &mut Vec<(PeerId, Counter, Counter)>,
    peer: PeerId,
    from: Counter,
    to: Counter,
) {
    match out.last_mut() {
        Some(last) if last.0 == peer && last.2 == from => last.2 = to,
        _ => out.push((peer, from, to)),
    }
}

/// A serialized run's elements: the content, or only how many tombstones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) enum Body<C> {
    Visible(C),
    Deleted(Counter),
}

/// One maximal run of the canonical form, in document order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Run<C> {
    pub(super) start: OpId,
    /// The anchor of the first element; `None` when it continues the chain of `start - 1`.
    pub(super) anchor: Option<Anchor>,
    pub(super) body: Body<C>,
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
