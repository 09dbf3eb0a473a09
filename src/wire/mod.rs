//! The wire format of the sync protocol.

#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod change_codec;
