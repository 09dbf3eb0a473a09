//! Sorting out which part of a received change is new.
//!
//! Replicas store changes with different boundaries: a peer's consecutive changes merge in the
//! log ([`Change::absorb`]), and an export cuts a stored change where the receiver's version
//! ends ([`Change::slice`]). So a received change may overlap what a replica already holds, in
//! its log or among the changes waiting for dependencies, without matching any stored change
//! exactly. The overlap must say the same thing (otherwise two replicas used one peer id), and
//! only the rest is new.

use std::collections::BTreeMap;

use super::change::Change;
use super::change_log::ChangeLog;
use super::id::{Counter, OpId};
use super::op::Op;
use crate::Error;

/// The parts of `change` that neither the log nor `waiting` (changes held back, keyed by
/// first id, disjoint per peer) hold yet, each cut from `change`. Empty if it is a duplicate.
///
/// Fails with [`Error::ConflictingChange`] if an overlap says something else.
pub(crate) fn unseen_parts(
    log: &ChangeLog,
    waiting: &[&BTreeMap<OpId, Change>],
    change: Change,
) -> Result<Vec<Change>, Error> {
    let peer = change.id.peer;
    let (start, end) = (change.id.counter, change.id.counter + change.len);
    let have = log.version().get(peer);
    let overlaps_waiting = |map: &BTreeMap<OpId, Change>| {
        map.range(..OpId::new(peer, end))
            .next_back()
            .is_some_and(|(id, c)| id.peer == peer && id.counter + c.len > start)
    };
    // The common case: the next change of its peer, overlapping nothing.
    if start >= have && !waiting.iter().any(|m| overlaps_waiting(m)) {
        return Ok(vec![change]);
    }

    // Ranges already held, each checked against the change.
    let mut held: Vec<(Counter, Counter)> = Vec::new();
    if start < have {
        let to = end.min(have);
        // Trimmed history cannot be compared; the state already holds its effect.
        let from = start.max(log.trimmed().get(peer));
        for ours in log.overlapping(peer, from, to) {
            check_same(ours, &change, from, to)?;
        }
        held.push((0, have));
    }
    for map in waiting {
        // Disjoint and sorted by start, so also by end: stop at the first that ends too early.
        for (id, ours) in map.range(OpId::new(peer, 0)..OpId::new(peer, end)).rev() {
            let ours_end = id.counter + ours.len;
            if ours_end <= start {
                break;
            }
            check_same(ours, &change, start, end)?;
            held.push((id.counter, ours_end));
        }
    }
    held.sort_unstable();

    let mut parts = Vec::new();
    let mut at = start;
    for (from, to) in held {
        if from > at {
            parts.push(change.slice(at, from.min(end)));
        }
        at = at.max(to);
        if at >= end {
            break;
        }
    }
    if at < end {
        parts.push(change.slice(at, end));
    }
    Ok(parts)
}

/// Check that `ours` and `theirs` say the same about the ids they share within `from..to`:
/// the same operations (whatever their batching), dependencies and Lamport time. Timestamps may
/// differ: merged changes keep their first part's, and only operations that ignore timestamps
/// are ever merged.
fn check_same(ours: &Change, theirs: &Change, from: Counter, to: Counter) -> Result<(), Error> {
    let from = from.max(ours.id.counter).max(theirs.id.counter);
    let to = to.min(ours.id.counter + ours.len).min(theirs.id.counter + theirs.len);
    if from >= to {
        return Ok(());
    }
    let (a, b) = (ours.slice(from, to), theirs.slice(from, to));
    if a.lamport == b.lamport && a.deps == b.deps && normalized(a) == normalized(b) {
        Ok(())
    } else {
        Err(Error::ConflictingChange(theirs.id))
    }
}

/// The change's operations with runs of typing joined, so that two batchings of the same edits
/// compare equal.
fn normalized(change: Change) -> Vec<Op> {
    let mut out: Vec<Op> = Vec::with_capacity(change.ops.len());
    let mut next = change.id;
    for op in change.ops {
        let len = op.content.id_len() as Counter;
        let op = match out.last_mut() {
            Some(last) => {
                last.absorb(std::borrow::Cow::Owned(op), next).err().map(std::borrow::Cow::into_owned)
            }
            None => Some(op),
        };
        out.extend(op);
        next.counter += len;
    }
    out
}

/// [`normalized`] for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) fn normalized_for_tests(change: &Change) -> Vec<Op> {
    normalized(change.clone())
}
