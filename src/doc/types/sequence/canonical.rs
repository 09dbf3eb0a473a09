//! The canonical serialized form of a [`Sequence`]: maximal runs in document order.
//!
//! Replicas holding the same inserts and deletes encode to the same bytes however the operations
//! were batched or ordered; decoding ([`rebuild`]) rebuilds the tree and checks
//! that the runs are in the order it implies, so hostile bytes are an error, never a corrupt
//! sequence.

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

    /// The in-order traversal of the tree, as merged id ranges `(peer, start, end)`, computed
    /// from the maps editing uses: what tests compare the document order with.
    #[cfg(test)]
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

/// Append the range `from..to` of `peer`, extending the last range when they touch.
#[cfg(test)]
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
