//! The CRDT document: identity, clocks, versions, the change log, state and the types.

pub(crate) mod change;
pub(crate) mod change_log;
pub(crate) mod clock;
pub(crate) mod codec;
pub(crate) mod columnar;
pub(crate) mod config;
pub(crate) mod deletion;
pub(crate) mod document;
pub(crate) mod edit_prediction;
pub(crate) mod event;
pub(crate) mod frozen_history;
pub(crate) mod id;
pub(crate) mod intake;
pub(crate) mod op;
pub(crate) mod state;
pub(crate) mod state_section;
pub(crate) mod transaction;
pub(crate) mod types;
pub(crate) mod value;
pub(crate) mod version;
