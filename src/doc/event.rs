//! Document events: what changed, once per transaction or import.

use super::id::IdSpan;
use super::op::ContainerId;

/// Whether a change was made on this replica or received from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Origin {
    /// Made by a transaction on this document.
    Local,
    /// Imported from another replica. Sync layers must not send these back as local edits.
    Remote,
}

/// One committed transaction, or one import that applied at least one change.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DocEvent {
    /// Local or remote.
    pub origin: Origin,
    /// The containers whose content changed, sorted and without repeats.
    pub containers: Vec<ContainerId>,
    /// The id spans of the changes applied.
    pub changes: Vec<IdSpan>,
}
