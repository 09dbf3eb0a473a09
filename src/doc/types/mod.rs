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

pub use counter::{CounterMut, CounterRef};
pub use list::{ListMut, ListRef};
pub use map::{MapMut, MapRef};
pub use movable_list_handle::{MovableListMut, MovableListRef};
pub use or_set::{OrSetMut, OrSetRef};
pub use register::{RegisterMut, RegisterRef};
pub use text::{Cursor, TextMut, TextRef};
