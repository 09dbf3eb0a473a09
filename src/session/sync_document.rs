//! The seam between the sync engine and a document.

use crate::{Change, Document, Error, ImportStatus, VersionVector};

/// What the sync sessions need from a document: its version, the changes another version
/// lacks, applying changes, and whole-document updates for first syncs.
///
/// [`Document`] implements it. Wrap a document in your own type to observe or persist what
/// the engine applies (a durable store journals every batch `apply_changes` accepts), or
/// adapt another CRDT whose history maps onto version vectors and [`Change`]s.
pub trait SyncDocument {
    /// The operations this replica holds, per peer.
    fn version(&self) -> &VersionVector;
    /// The changes that `since` lacks, in causal order. `Err(Error::HistoryTrimmed)` if some
    /// are no longer kept; the engine then sends [`SyncDocument::encode`] instead.
    fn changes_since(&self, since: &VersionVector) -> Result<Vec<Change>, Error>;
    /// Apply changes from a peer: idempotent, order-free; changes whose dependencies are
    /// missing wait (see [`SyncDocument::pending_count`]). On error nothing changed.
    fn apply_changes(&mut self, changes: Vec<Change>) -> Result<ImportStatus, Error>;
    /// [`SyncDocument::apply_changes`] for changes the caller keeps (the server forwards what
    /// it applied to the other subscribers). The default applies a copy.
    fn apply_changes_from(&mut self, changes: &[Change]) -> Result<ImportStatus, Error> {
        self.apply_changes(changes.to_vec())
    }
    /// How many received changes wait for missing dependencies.
    fn pending_count(&self) -> usize;
    /// An update a replica at `since` can import to catch up.
    fn export_since(&self, since: &VersionVector) -> Result<Vec<u8>, Error>;
    /// The whole document (snapshot and kept history), for a replica starting from nothing
    /// or from behind the trimmed history.
    fn encode(&self) -> Vec<u8>;
    /// Import what [`SyncDocument::export_since`] or [`SyncDocument::encode`] produced.
    fn import(&mut self, update: &[u8]) -> Result<ImportStatus, Error>;
    /// Where the kept history starts.
    fn trimmed_version(&self) -> &VersionVector;
    /// Drop history before `version`.
    fn trim_history(&mut self, version: &VersionVector) -> Result<(), Error>;
}

impl SyncDocument for Document {
    fn version(&self) -> &VersionVector {
        Document::version(self)
    }

    fn changes_since(&self, since: &VersionVector) -> Result<Vec<Change>, Error> {
        Document::changes_since(self, since)
    }

    fn apply_changes(&mut self, changes: Vec<Change>) -> Result<ImportStatus, Error> {
        Document::apply_changes(self, changes)
    }

    fn apply_changes_from(&mut self, changes: &[Change]) -> Result<ImportStatus, Error> {
        Document::apply_changes_from(self, changes)
    }

    fn pending_count(&self) -> usize {
        Document::pending_count(self)
    }

    fn export_since(&self, since: &VersionVector) -> Result<Vec<u8>, Error> {
        Document::export_since(self, since)
    }

    fn encode(&self) -> Vec<u8> {
        Document::encode(self)
    }

    fn import(&mut self, update: &[u8]) -> Result<ImportStatus, Error> {
        Document::import(self, update)
    }

    fn trimmed_version(&self) -> &VersionVector {
        Document::trimmed_version(self)
    }

    fn trim_history(&mut self, version: &VersionVector) -> Result<(), Error> {
        Document::trim_history(self, version)
    }
}
