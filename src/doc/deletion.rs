//! What a delete operation removes: runs of element ids in the order it removed them.
//!
//! A delete takes one id per element it removes, and its `i`-th id names its `i`-th element.
//! That is what lets consecutive deletes (a run of backspaces or forward deletes) grow one
//! operation, as typing grows one insert: an operation that grows keeps the meaning of the ids
//! it had, so a replica that received its first part and then the rest (an export cut inside
//! it) ends with the same deletions as one that received it whole.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::id::{Counter, IdSpan, OpId, PeerId};

/// Consecutive element ids removed one after the other, upwards (forward deletes, a deleted
/// range) or downwards (backspaces).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct DeleteRun {
    /// The ids, lowest first.
    pub(crate) span: IdSpan,
    /// Whether they were removed highest first. Never set on a run of one id, so that each
    /// deletion has one form.
    pub(crate) backward: bool,
}

/// A delete's runs, in the order they were removed; inline when there is one, which is what
/// backspacing and forward deleting make.
pub(crate) type DeleteRuns = SmallVec<[DeleteRun; 1]>;

impl DeleteRun {
    /// Ids `span` removed upwards.
    pub(crate) const fn forward(span: IdSpan) -> Self {
        DeleteRun { span, backward: false }
    }

    /// A run of `span` removed backwards if `backward`; a run of one id is never backward.
    pub(crate) fn new(span: IdSpan, backward: bool) -> Self {
        DeleteRun { span, backward: backward && span.len > 1 }
    }

    /// The id removed first.
    pub(crate) fn first(&self) -> OpId {
        if self.backward { self.span.last().unwrap_or(self.span.start) } else { self.span.start }
    }

    /// The id removed last.
    pub(crate) fn last(&self) -> OpId {
        if self.backward { self.span.start } else { self.span.last().unwrap_or(self.span.start) }
    }

    /// The part of the run removed `from..to` in its order (`from < to <= len`).
    fn slice(&self, from: Counter, to: Counter) -> DeleteRun {
        let (peer, lo) = (self.span.start.peer, self.span.start.counter);
        // Saturating: a run from a peer is only sliced once validated, but ids near the end
        // of the counter space must not wrap even so.
        let start =
            if self.backward { lo.saturating_add(self.span.len - to) } else { lo.saturating_add(from) };
        DeleteRun::new(IdSpan::new(OpId::new(peer, start), to - from), self.backward)
    }

    /// Take `next`, removed right after this run, into it if it continues the run in its
    /// direction (or, for a run of one id, in either); whether it did.
    fn absorb(&mut self, next: &DeleteRun) -> bool {
        let (span, next_span) = (self.span, next.span);
        if span.start.peer != next_span.start.peer || span.len == 0 || next_span.len == 0 {
            return false;
        }
        let up = !self.backward && !next.backward && span.end_counter() == next_span.start.counter;
        let down = (self.backward || span.len == 1)
            && (next.backward || next_span.len == 1)
            && next_span.end_counter() == span.start.counter;
        let Some(len) = span.len.checked_add(next_span.len) else { return false };
        if up {
            self.span.len = len;
        } else if down {
            *self = DeleteRun { span: IdSpan::new(next_span.start, len), backward: true };
        }
        up || down
    }
}

/// Append `more`, removed after `runs`, joining runs that continue each other.
pub(crate) fn push_runs(runs: &mut DeleteRuns, more: impl IntoIterator<Item = DeleteRun>) {
    for run in more {
        if !runs.last_mut().is_some_and(|last| last.absorb(&run)) {
            runs.push(run);
        }
    }
}

/// The elements removed `from..to` in order (`from < to <=` the number of ids in `runs`).
pub(crate) fn slice_runs(runs: &[DeleteRun], from: Counter, to: Counter) -> DeleteRuns {
    let mut out = DeleteRuns::new();
    let mut at: Counter = 0;
    for run in runs {
        let end = at.saturating_add(run.span.len);
        if end > from && at < to {
            out.push(run.slice(from.max(at) - at, to.min(end) - at));
        }
        if end >= to {
            break;
        }
        at = end;
    }
    out
}

/// The run that binary formats write as the id it removed first (`first` of `peer`) and
/// `len << 1 | backward`; `None` if the run is empty (which would give a delete a second
/// form), a backward run would start below counter 0, or the length does not fit a counter.
/// (A forward run past the end of the counter space is kept: spans saturate, and the change
/// that holds it fails validation.)
pub(crate) fn decoded_run(peer: PeerId, first: Counter, len_and_direction: u64) -> Option<DeleteRun> {
    let len = Counter::try_from(len_and_direction >> 1).ok().filter(|&len| len > 0)?;
    let backward = len_and_direction & 1 == 1 && len > 1;
    let start = if backward { first.checked_sub(len - 1)? } else { first };
    Some(DeleteRun::new(IdSpan::new(OpId::new(peer, start), len), backward))
}

/// [`decoded_run`]'s input for `run`: its length and direction.
pub(crate) fn encoded_len(run: &DeleteRun) -> u64 {
    u64::from(run.span.len) << 1 | u64::from(run.backward)
}

/// Runs removing `spans` upwards, one after the other.
pub(crate) fn forward_runs(spans: impl IntoIterator<Item = IdSpan>) -> DeleteRuns {
    let mut runs = DeleteRuns::new();
    push_runs(&mut runs, spans.into_iter().map(DeleteRun::forward));
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(counter: Counter) -> OpId {
        OpId::new(PeerId::new(1), counter)
    }

    fn one(counter: Counter) -> DeleteRun {
        DeleteRun::forward(IdSpan::new(id(counter), 1))
    }

    /// The ids of `runs` in the order they were removed.
    fn order(runs: &[DeleteRun]) -> Vec<Counter> {
        runs.iter()
            .flat_map(|r| {
                let ids: Vec<Counter> = (r.span.start.counter..r.span.end_counter()).collect();
                if r.backward { ids.into_iter().rev().collect::<Vec<_>>() } else { ids }
            })
            .collect()
    }

    #[test]
    fn backspaces_and_forward_deletes_each_make_one_run() {
        let mut back = DeleteRuns::new();
        push_runs(&mut back, [10, 9, 8, 7].map(one));
        assert_eq!(back.as_slice(), [DeleteRun::new(IdSpan::new(id(7), 4), true)]);
        assert_eq!(order(&back), [10, 9, 8, 7]);

        let mut forward = DeleteRuns::new();
        push_runs(&mut forward, [3, 4, 5].map(one));
        assert_eq!(forward.as_slice(), [DeleteRun::forward(IdSpan::new(id(3), 3))]);

        // A forward delete after backspaces starts a new run: the order is kept.
        push_runs(&mut back, [one(11)]);
        assert_eq!(order(&back), [10, 9, 8, 7, 11]);
        assert_eq!(back.len(), 2);
    }

    #[test]
    fn slices_keep_the_order_of_removal() {
        let mut runs = DeleteRuns::new();
        push_runs(&mut runs, [20, 19, 18, 17].map(one));
        push_runs(&mut runs, [DeleteRun::forward(IdSpan::new(id(30), 3))]);
        let all = order(&runs);
        assert_eq!(all.len(), 7);
        for from in 0..7 {
            for to in from + 1..=7 {
                let part = slice_runs(&runs, from, to);
                assert_eq!(order(&part), all[from as usize..to as usize], "{from}..{to}");
                assert!(part.iter().all(|r| !(r.backward && r.span.len == 1)));
            }
        }
        // The parts joined again are the whole.
        let mut joined = slice_runs(&runs, 0, 2);
        push_runs(&mut joined, slice_runs(&runs, 2, 7));
        assert_eq!(joined, runs);
    }

    #[test]
    fn binary_forms_give_back_the_run_and_refuse_runs_below_counter_zero() {
        for run in [
            DeleteRun::new(IdSpan::new(id(7), 4), true),
            DeleteRun::forward(IdSpan::new(id(7), 4)),
            DeleteRun::forward(IdSpan::new(id(0), 1)),
        ] {
            assert_eq!(decoded_run(PeerId::new(1), run.first().counter, encoded_len(&run)), Some(run));
        }
        // Three ids removed downwards from 1 would start at -1.
        assert_eq!(decoded_run(PeerId::new(1), 1, 3 << 1 | 1), None);
        assert_eq!(decoded_run(PeerId::new(1), 0, u64::MAX), None);
        // A run of one id has one form.
        assert_eq!(decoded_run(PeerId::new(1), 5, 1 << 1 | 1), Some(one(5)));
        // An empty run removes nothing and would give a delete a second form.
        assert_eq!(decoded_run(PeerId::new(1), 5, 0), None);
        assert_eq!(decoded_run(PeerId::new(1), 5, 1), None);
    }

    #[test]
    fn runs_of_other_peers_or_gaps_stay_apart() {
        let other = DeleteRun::forward(IdSpan::new(OpId::new(PeerId::new(2), 4), 1));
        let mut runs = DeleteRuns::new();
        push_runs(&mut runs, [one(3), other, one(6)]);
        assert_eq!(runs.len(), 3);
        assert_eq!(order(&runs), [3, 4, 6]);
    }
}
