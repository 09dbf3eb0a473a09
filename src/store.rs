//! Where a server keeps its documents.

use std::collections::BTreeMap;

use crate::Document;

/// The server's document registry (the seed's `ServerRegistry`): get, create, list, remove.
///
/// The in-memory [`MemoryStore`] is the default. Calls are synchronous and must not block on
/// IO: a durable store keeps documents in memory while they are in use and persists them
/// outside the state machine.
pub trait DocumentStore {
    /// The document named `name`, if it exists.
    fn get(&self, name: &str) -> Option<&Document>;
    /// The document named `name`, for applying changes.
    fn get_mut(&mut self, name: &str) -> Option<&mut Document>;
    /// Add or replace a document.
    fn insert(&mut self, name: &str, doc: Document);
    /// Remove a document, giving it back.
    fn remove(&mut self, name: &str) -> Option<Document>;
    /// The names of all documents, sorted.
    fn names(&self) -> Vec<String>;
}

/// Documents in memory, gone when the process ends.
#[derive(Debug, Default)]
pub struct MemoryStore {
    documents: BTreeMap<String, Document>,
}

impl DocumentStore for MemoryStore {
    fn get(&self, name: &str) -> Option<&Document> {
        self.documents.get(name)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Document> {
        self.documents.get_mut(name)
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
