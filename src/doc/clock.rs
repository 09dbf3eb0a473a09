//! A hybrid logical clock (HLC): wall-clock metadata that never runs backwards and orders
//! last-writer-wins conflicts consistently with causality.
//!
//! A [`Timestamp`] packs milliseconds since the Unix epoch (48 bits) and a logical counter
//! (16 bits) into one `u64`, so comparing timestamps is comparing integers. When the logical
//! part fills up it carries into the millisecond part, which is exactly what the packed
//! representation does; only the exhaustion of the whole `u64` is an error, and it is reported,
//! never wrapped.

use serde::{Deserialize, Serialize};

const LOGICAL_BITS: u32 = 16;
/// The largest wall time a timestamp can carry (about the year 10889).
pub const MAX_WALL_MS: u64 = (1 << (64 - LOGICAL_BITS)) - 1;

/// A hybrid logical timestamp: wall-clock milliseconds plus a logical counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The zero timestamp, before every other.
    pub const ZERO: Timestamp = Timestamp(0);

    /// A timestamp from its parts; `None` if `wall_ms` exceeds [`MAX_WALL_MS`].
    pub fn new(wall_ms: u64, logical: u16) -> Option<Timestamp> {
        (wall_ms <= MAX_WALL_MS).then_some(Timestamp((wall_ms << LOGICAL_BITS) | u64::from(logical)))
    }

    /// A timestamp from its packed representation.
    pub const fn from_raw(raw: u64) -> Timestamp {
        Timestamp(raw)
    }

    /// The packed representation.
    pub const fn as_raw(self) -> u64 {
        self.0
    }

    /// Wall-clock milliseconds since the Unix epoch.
    pub const fn wall_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The logical counter that orders events within one millisecond.
    pub const fn logical(self) -> u16 {
        (self.0 & ((1 << LOGICAL_BITS) - 1)) as u16
    }

    fn next(self) -> Result<Timestamp, ClockError> {
        self.0.checked_add(1).map(Timestamp).ok_or(ClockError::Exhausted)
    }
}

/// Why the clock refused to produce or accept a timestamp.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClockError {
    /// A remote timestamp is further ahead of our wall clock than the configured maximum drift.
    #[error("remote timestamp is {ahead_ms} ms ahead of the local wall clock (max drift {max_drift_ms} ms)")]
    DriftExceeded {
        /// How far ahead the remote timestamp is.
        ahead_ms: u64,
        /// The configured limit.
        max_drift_ms: u64,
    },
    /// The timestamp space is used up (only reachable with hostile timestamps).
    #[error("hybrid logical clock exhausted")]
    Exhausted,
}

/// The local hybrid logical clock of a document.
///
/// The wall clock is an input: call [`HybridClock::set_wall_ms`] from your runtime (the
/// document never reads the system clock). Without any wall-clock input the clock still
/// advances logically, and the drift check is skipped, because there is nothing to compare with.
#[derive(Clone, Debug)]
pub struct HybridClock {
    last: Timestamp,
    wall_ms: Option<u64>,
    max_drift_ms: Option<u64>,
}

impl HybridClock {
    /// A clock that refuses remote timestamps more than `max_drift_ms` ahead of the wall clock
    /// (`None`: never refuse).
    pub fn new(max_drift_ms: Option<u64>) -> Self {
        HybridClock { last: Timestamp::ZERO, wall_ms: None, max_drift_ms }
    }

    /// Feed the current wall-clock time. Going backwards is allowed and harmless: timestamps
    /// stay monotonic.
    pub fn set_wall_ms(&mut self, wall_ms: u64) {
        self.wall_ms = Some(wall_ms.min(MAX_WALL_MS));
    }

    /// The last wall-clock time fed in, if any.
    pub fn wall_ms(&self) -> Option<u64> {
        self.wall_ms
    }

    /// The greatest timestamp issued or observed so far.
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// Issue a timestamp greater than every one issued or observed before.
    pub fn tick(&mut self) -> Result<Timestamp, ClockError> {
        let wall = Timestamp::new(self.wall_ms.unwrap_or(0), 0).unwrap_or(Timestamp::ZERO);
        let next = if wall > self.last { wall } else { self.last.next()? };
        self.last = next;
        Ok(next)
    }

    /// Check a remote timestamp against the maximum drift without changing the clock.
    pub fn check(&self, remote: Timestamp) -> Result<(), ClockError> {
        if let (Some(wall), Some(max_drift_ms)) = (self.wall_ms, self.max_drift_ms) {
            let ahead_ms = remote.wall_ms().saturating_sub(wall);
            if ahead_ms > max_drift_ms {
                return Err(ClockError::DriftExceeded { ahead_ms, max_drift_ms });
            }
        }
        Ok(())
    }

    /// Observe a remote timestamp (already [checked](Self::check)), so that the next local
    /// timestamp is greater: this is what makes last-writer-wins respect causality.
    pub fn observe(&mut self, remote: Timestamp) {
        self.last = self.last.max(remote);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_monotonic_when_wall_clock_goes_backwards() {
        let mut clock = HybridClock::new(None);
        clock.set_wall_ms(1_000);
        let a = clock.tick().unwrap();
        clock.set_wall_ms(500);
        let b = clock.tick().unwrap();
        assert!(b > a);
        assert_eq!(b.wall_ms(), 1_000);
        assert_eq!(b.logical(), 1);
    }

    #[test]
    fn logical_counter_carries_instead_of_wrapping() {
        let mut clock = HybridClock::new(None);
        clock.set_wall_ms(7);
        let mut prev = clock.tick().unwrap();
        for _ in 0..70_000 {
            let t = clock.tick().unwrap();
            assert!(t > prev);
            prev = t;
        }
        assert_eq!(prev.wall_ms(), 8);
    }

    #[test]
    fn exhausted_clock_is_an_error() {
        let mut clock = HybridClock::new(None);
        clock.observe(Timestamp::from_raw(u64::MAX));
        assert_eq!(clock.tick(), Err(ClockError::Exhausted));
    }

    #[test]
    fn drift_is_refused_only_with_a_wall_clock() {
        let mut clock = HybridClock::new(Some(1_000));
        let far = Timestamp::new(10_000_000, 0).unwrap();
        assert!(clock.check(far).is_ok());
        clock.set_wall_ms(5_000);
        assert!(matches!(clock.check(far), Err(ClockError::DriftExceeded { .. })));
        assert!(clock.check(Timestamp::new(5_900, 3).unwrap()).is_ok());
    }

    #[test]
    fn observed_time_orders_later_local_ticks() {
        let mut clock = HybridClock::new(None);
        clock.set_wall_ms(10);
        let remote = Timestamp::new(20, 4).unwrap();
        clock.observe(remote);
        assert!(clock.tick().unwrap() > remote);
    }
}
