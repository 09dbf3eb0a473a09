//! Where a server keeps its documents.

use std::collections::BTreeMap;

use crate::session::SyncDocument;
use crate::{Document, DocumentConfig, PeerId};

/// The server's document registry (the seed's `ServerRegistry`): get, create, list, remove.
///
/// It holds the documents in memory, the in-memory [`MemoryStore`] by default. Calls are
/// synchronous and never block on IO. A durable server
/// ([`crate::ServerConfig::durable`]) keeps here only the documents in use: it loads others
/// and commits changes through [`crate::Server::poll_storage`], which the runtime performs
/// outside the state machine (see [`crate::DurableStorage`]).
pub trait DocumentStore {
    /// The documents it holds.
    type Document: SyncDocument;
    /// The document named `name`, if it exists.
    fn get(&self, name: &str) -> Option<&Self::Document>;
    /// The document named `name`, for applying changes.
    fn get_mut(&mut self, name: &str) -> Option<&mut Self::Document>;
    /// Create an empty document named `name` (replacing any) and return it.
    fn create(&mut self, name: &str) -> &mut Self::Document;
    /// Add or replace a document.
    fn insert(&mut self, name: &str, doc: Self::Document);
    /// Remove a document, giving it back.
    fn remove(&mut self, name: &str) -> Option<Self::Document>;
    /// The names of all documents, sorted.
    fn names(&self) -> Vec<String>;
}

/// Documents in memory, gone when the process ends.
#[derive(Debug, Default)]
pub struct MemoryStore {
    documents: BTreeMap<String, Document>,
    peer: Option<PeerId>,
    config: DocumentConfig,
}

impl MemoryStore {
    /// A store that creates documents with replica id `peer` (the server never edits them, so
    /// any id no client uses will do) and `config`.
    pub fn new(peer: PeerId, config: DocumentConfig) -> Self {
        MemoryStore { documents: BTreeMap::new(), peer: Some(peer), config }
    }
}

impl DocumentStore for MemoryStore {
    type Document = Document;

    fn get(&self, name: &str) -> Option<&Document> {
        self.documents.get(name)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Document> {
        self.documents.get_mut(name)
    }

    fn create(&mut self, name: &str) -> &mut Document {
        let doc = Document::with_config(self.peer.unwrap_or(PeerId::new(0)), self.config.clone());
        self.documents.insert(name.to_owned(), doc);
        self.documents.get_mut(name).expect("just inserted")
    }

    fn insert(&mut self, name: &str, doc: Document) {
        self.documents.insert(name.to_owned(), doc);
    }

    fn remove(&mut self, name: &str) -> Option<Document> {
        self.documents.remove(name)
    }

    fn names(&self) -> Vec<String> {
        self.documents.keys().cloned().collect()
    }
}
