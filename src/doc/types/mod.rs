//! The container types, one file each.

pub(crate) mod counter;
pub(crate) mod list;
pub(crate) mod map;
pub(crate) mod movable_list;
pub(crate) mod movable_list_handle;
pub(crate) mod or_set;
pub(crate) mod register;
pub(crate) mod sequence;
pub(crate) mod text;

/// Check that `index .. index + len` lies inside a container of `total` items; returns the end.
pub(crate) fn checked_range(index: usize, len: usize, total: usize) -> Result<usize, crate::Error> {
    match index.checked_add(len) {
        Some(end) if end <= total => Ok(end),
        _ => Err(crate::Error::OutOfBounds { index: index.saturating_add(len), len: total }),
    }
}

pub use counter::{CounterMut, CounterRef};
pub use list::{ListMut, ListRef};
pub use map::{MapMut, MapRef};
pub use movable_list_handle::{MovableListMut, MovableListRef};
pub use or_set::{OrSetMut, OrSetRef};
pub use register::{RegisterMut, RegisterRef};
pub use text::{Cursor, TextMut, TextRef};

/// A tiny deterministic xorshift generator for the types' unit tests, so failures replay exactly.
#[cfg(test)]
pub(crate) mod test_rng {
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        pub(crate) fn below(&mut self, n: usize) -> usize {
            if n == 0 { 0 } else { (self.next() % n as u64) as usize }
        }

        pub(crate) fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
    }
}
