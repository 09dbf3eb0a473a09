//! Durable storage, kept outside the state machine.
//!
//! A durable [`crate::Server`] (see [`crate::ServerConfig::durable`]) never touches a disk.
//! It asks for what it needs through [`crate::Server::poll_storage`]. Each
//! [`StorageRequest`] is either a document to load or a batch of writes to commit. The
//! runtime performs it wherever it likes (a thread, a blocking pool) and reports the
//! result with [`crate::Server::handle_storage`]. Meanwhile the server serves everyone
//! else. A client's changes are acknowledged only once a commit that holds them is
//! reported, so "saved" on the client means "on disk".
//!
//! [`DurableStorage`] is what such a runtime calls: `crdt_sync::sqlite::SqliteStorage`
//! (feature `sqlite`) on disk, [`MemoryStorage`] for tests and simulations. [`perform_storage`]
//! runs one request against either.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::session::SyncDocument;
use crate::{Document, DocumentConfig, PeerId, VersionVector};

/// What a durable server asks of its storage.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum StorageRequest {
    /// Load the stored document `document` (clients are waiting to subscribe to it).
    /// Answer with [`StorageOutcome::Loaded`].
    Load {
        /// The document's name.
        document: Arc<str>,
    },
    /// Commit `writes` atomically, in order. Answer with [`StorageOutcome::Committed`]
    /// once they are on disk. The server has at most one commit in flight; whatever changes
    /// meanwhile goes into the next one, so one commit carries many frames' changes.
    Commit {
        /// Identifies the commit in the answer.
        ticket: CommitTicket,
        /// What to write, at most one write per document.
        writes: Vec<StorageWrite>,
    },
}

/// Identifies one [`StorageRequest::Commit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommitTicket(pub u64);

/// One document's part of a commit.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StorageWrite {
    /// The document's name.
    pub document: Arc<str>,
    /// What to store.
    pub data: StoredData,
    /// The document's version once this write is stored.
    pub version: VersionVector,
}

impl StorageWrite {
    /// A write of `data` for `document`, which is at `version` once it is stored.
    pub fn new(document: impl Into<Arc<str>>, data: StoredData, version: VersionVector) -> Self {
        StorageWrite { document: document.into(), data, version }
    }
}

/// The bytes of a [`StorageWrite`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum StoredData {
    /// An update (as from [`Document::export_since`]) holding the changes since the
    /// document's previous write: append it after what is stored. A document with nothing
    /// stored starts empty.
    Append(Vec<u8>),
    /// The whole document (as from [`Document::encode`]): it replaces everything stored.
    /// Sent when an append cannot say what changed, after the server trimmed the history.
    Replace(Vec<u8>),
}

/// The answer to a [`StorageRequest`].
#[derive(Debug)]
#[non_exhaustive]
pub enum StorageOutcome<D> {
    /// The answer to [`StorageRequest::Load`]: the document, `None` when nothing is stored
    /// under that name, or why it could not be read. An error is never taken for "not
    /// stored": the server then refuses the subscription rather than start an empty
    /// document that would later overwrite the stored one.
    Loaded {
        /// The document's name.
        document: Arc<str>,
        /// What storage found.
        result: Result<Option<D>, StorageError>,
    },
    /// The answer to [`StorageRequest::Commit`]: `Ok` only once every write is durable.
    Committed {
        /// The request's ticket.
        ticket: CommitTicket,
        /// Whether the commit is on disk.
        result: Result<(), StorageError>,
    },
}

/// Storage failed: a disk error, or stored bytes that do not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
#[non_exhaustive]
pub struct StorageError(pub String);

impl StorageError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        StorageError(message.into())
    }
}

/// Durable storage as a runtime calls it, off the server's thread: blocking calls are fine.
pub trait DurableStorage {
    /// The documents it loads.
    type Document: SyncDocument;
    /// The stored document `name`, or `None` when nothing is stored under it.
    fn load(&mut self, name: &str) -> Result<Option<Self::Document>, StorageError>;
    /// Write all of `writes` durably, or none of them.
    fn commit(&mut self, writes: &[StorageWrite]) -> Result<(), StorageError>;
}

/// Run `request` against `storage`, giving the answer for [`crate::Server::handle_storage`].
pub fn perform_storage<T: DurableStorage>(
    storage: &mut T,
    request: StorageRequest,
) -> StorageOutcome<T::Document> {
    match request {
        StorageRequest::Load { document } => {
            let result = storage.load(&document);
            StorageOutcome::Loaded { document, result }
        }
        StorageRequest::Commit { ticket, writes } => {
            StorageOutcome::Committed { ticket, result: storage.commit(&writes) }
        }
    }
}

/// Storage in memory, in the same layout a disk store uses (a snapshot and the updates
/// appended since), for tests and simulations: a server restarted on it comes back with
/// exactly what it committed. It can be told to fail, to test what clients see then.
#[derive(Clone, Debug)]
pub struct MemoryStorage {
    peer: PeerId,
    config: DocumentConfig,
    documents: BTreeMap<String, Vec<Vec<u8>>>,
    failing: Option<String>,
}

impl MemoryStorage {
    /// Empty storage whose documents load with replica id `peer` and `config` (the
    /// server's: [`crate::ServerConfig::peer`] and [`crate::ServerConfig::document`]).
    pub fn new(peer: PeerId, config: DocumentConfig) -> Self {
        MemoryStorage { peer, config, documents: BTreeMap::new(), failing: None }
    }

    /// Make every call fail with `message` from now on, or (`None`) work again.
    pub fn set_failing(&mut self, message: Option<&str>) {
        self.failing = message.map(str::to_owned);
    }

    /// The names of the stored documents, sorted.
    pub fn names(&self) -> Vec<String> {
        self.documents.keys().cloned().collect()
    }

    /// The stored entries of `name`: its snapshot (or first update) and the updates after it.
    pub fn entries(&self, name: &str) -> usize {
        self.documents.get(name).map_or(0, Vec::len)
    }

    fn check(&self) -> Result<(), StorageError> {
        match &self.failing {
            Some(message) => Err(StorageError::new(message.clone())),
            None => Ok(()),
        }
    }
}

impl DurableStorage for MemoryStorage {
    type Document = Document;

    fn load(&mut self, name: &str) -> Result<Option<Document>, StorageError> {
        self.check()?;
        let Some(entries) = self.documents.get(name) else { return Ok(None) };
        load_stored_entries(self.peer, &self.config, entries.iter().map(Vec::as_slice)).map(Some)
    }

    fn commit(&mut self, writes: &[StorageWrite]) -> Result<(), StorageError> {
        self.check()?;
        for write in writes {
            let entries = self.documents.entry(write.document.to_string()).or_default();
            match &write.data {
                StoredData::Append(update) => entries.push(update.clone()),
                StoredData::Replace(whole) => *entries = vec![whole.clone()],
            }
        }
        Ok(())
    }
}

/// A document from its stored entries: a whole document or an update first, then updates.
/// Every entry must apply completely: one that leaves changes waiting for others means the
/// store lost something, which is an error rather than a quietly shorter document.
pub fn load_stored_entries<'a>(
    peer: PeerId,
    config: &DocumentConfig,
    entries: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Document, StorageError> {
    let mut entries = entries.into_iter().enumerate().peekable();
    // A whole document loads without replaying its history; an update cannot.
    let mut doc = match entries.peek() {
        Some((_, first)) => match Document::load_with_config(first, peer, config.clone()) {
            Ok(doc) => {
                entries.next();
                doc
            }
            Err(_) => Document::with_config(peer, config.clone()),
        },
        None => Document::with_config(peer, config.clone()),
    };
    for (index, entry) in entries {
        let status = doc
            .import(entry)
            .map_err(|e| StorageError::new(format!("stored entry {index} does not decode: {e}")))?;
        if status.pending > 0 {
            return Err(StorageError::new(format!(
                "stored entry {index} depends on changes that are not stored"
            )));
        }
    }
    Ok(doc)
}
