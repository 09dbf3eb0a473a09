//! Replica and operation identity.
//!
//! Every operation a replica makes consumes one or more consecutive counter values of its
//! [`PeerId`]; a run of `n` characters typed by one peer therefore occupies the ids
//! `counter..counter + n` and is stored and sent as one [`IdSpan`], never as `n` ids.

use serde::{Deserialize, Serialize};

/// The identity of one replica (one editing session of one device or user).
///
/// Two replicas must never share a `PeerId`: their operations would collide. Generate one from
/// an RNG you own with [`PeerId::from_rng`], or pass a value you already manage to [`PeerId::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId(u64);

impl PeerId {
    /// A peer id from an explicit value.
    pub const fn new(value: u64) -> Self {
        PeerId(value)
    }

    /// A random peer id drawn from `rng`. The crate never reads an RNG of its own, so that
    /// simulations and fuzzers stay deterministic.
    pub fn from_rng<R: rand_core::Rng + ?Sized>(rng: &mut R) -> Self {
        PeerId(rng.next_u64())
    }

    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A per-peer operation counter. `u32` keeps ids small on the wire; running out is a typed
/// error ([`crate::Error::CounterOverflow`]), never a silent wrap.
pub type Counter = u32;

/// The id of one operation (or one element of a run): which peer made it and its counter.
///
/// Ids order by peer first, then counter; sequence types use this order to place concurrent
/// siblings deterministically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId {
    /// The replica that made the operation.
    pub peer: PeerId,
    /// Its position in that replica's sequence of operations.
    pub counter: Counter,
}

impl OpId {
    /// An id from its parts.
    pub const fn new(peer: PeerId, counter: Counter) -> Self {
        OpId { peer, counter }
    }

    /// The id `n` places later in the same peer's run, or `None` if the counter would overflow.
    pub fn checked_add(self, n: Counter) -> Option<OpId> {
        Some(OpId { peer: self.peer, counter: self.counter.checked_add(n)? })
    }
}

impl std::fmt::Display for OpId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.counter, self.peer)
    }
}

/// Spans of ids, inline when there is one: a delete of typed text nearly always names a
/// single span, and it should not cost an allocation.
pub(crate) type IdSpans = smallvec::SmallVec<[IdSpan; 1]>;

/// A run of consecutive ids of one peer: `start.counter .. start.counter + len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IdSpan {
    /// The first id of the run.
    pub start: OpId,
    /// How many ids the run holds (at least one in every span the crate produces).
    pub len: Counter,
}

impl IdSpan {
    /// A span from its first id and length.
    pub const fn new(start: OpId, len: Counter) -> Self {
        IdSpan { start, len }
    }

    /// The peer that owns the span.
    pub const fn peer(&self) -> PeerId {
        self.start.peer
    }

    /// One past the last counter of the span (saturating, so hostile spans cannot wrap).
    pub const fn end_counter(&self) -> Counter {
        self.start.counter.saturating_add(self.len)
    }

    /// The last id of the span, if it holds any.
    pub fn last(&self) -> Option<OpId> {
        self.len.checked_sub(1).map(|n| OpId::new(self.start.peer, self.start.counter + n))
    }

    /// Whether `id` lies inside the span.
    pub fn contains(&self, id: OpId) -> bool {
        id.peer == self.start.peer && id.counter >= self.start.counter && id.counter < self.end_counter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn peer_ids_come_from_the_injected_rng_deterministically() {
        let a = PeerId::from_rng(&mut rand::rngs::StdRng::seed_from_u64(7));
        let b = PeerId::from_rng(&mut rand::rngs::StdRng::seed_from_u64(7));
        let c = PeerId::from_rng(&mut rand::rngs::StdRng::seed_from_u64(8));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn spans_do_not_wrap_at_the_end_of_the_counter_space() {
        let span = IdSpan::new(OpId::new(PeerId::new(1), Counter::MAX - 1), 5);
        assert_eq!(span.end_counter(), Counter::MAX);
        assert!(OpId::new(PeerId::new(1), Counter::MAX).checked_add(1).is_none());
        assert!(span.contains(OpId::new(PeerId::new(1), Counter::MAX - 1)));
    }
}
