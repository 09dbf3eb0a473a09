//! A durable server's side of storage: loading documents on first subscribe, committing
//! what changed in batches, holding acknowledgements until their commit is reported, and
//! unloading documents nobody uses.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::Server;
use crate::session::SyncDocument;
use crate::storage::{CommitTicket, StorageOutcome, StorageRequest, StorageWrite, StoredData};
use crate::store::DocumentStore;
use crate::wire::{DocSlot, ErrorCode, Message};
use crate::{ConnectionId, ServerEvent, VersionVector};

/// The documents of a commit and the version each will be at once it lands.
type Stored = Vec<(Arc<str>, VersionVector)>;

/// What a durable server tracks about storage.
#[derive(Debug, Default)]
pub(super) struct Durability {
    /// Subscriptions waiting for their document to load: connection, slot, and the version
    /// the client said it holds.
    loading: BTreeMap<Arc<str>, Vec<(ConnectionId, DocSlot, VersionVector)>>,
    /// Loads not handed to the runtime yet.
    loads: VecDeque<Arc<str>>,
    /// Per document in memory, how much of it storage has.
    documents: BTreeMap<Arc<str>, Persisted>,
    /// Documents that changed since their last commit request.
    changed: BTreeSet<Arc<str>>,
    /// The commit storage is working on: its ticket and the versions it stores.
    in_flight: Option<(CommitTicket, Stored)>,
    next_ticket: u64,
    /// After a failed commit, no new one before this.
    retry_at: Option<Instant>,
}

#[derive(Debug)]
struct Persisted {
    /// Handed to storage in a commit (maybe not committed yet).
    requested: VersionVector,
    /// Reported committed: what may be acknowledged.
    committed: VersionVector,
    /// Since when nobody subscribes to it.
    idle_since: Option<Instant>,
}

impl Persisted {
    fn stored(version: VersionVector) -> Self {
        Persisted { requested: version.clone(), committed: version, idle_since: None }
    }
}

impl Durability {
    /// What may be acknowledged of `name`: `None` if the document is not tracked (a
    /// server that is not durable acknowledges what it applied).
    pub(super) fn committed(&self, name: &str) -> Option<&VersionVector> {
        self.documents.get(name).map(|p| &p.committed)
    }

    /// `name` changed in memory.
    pub(super) fn mark_changed(&mut self, name: &Arc<str>) {
        if self.documents.contains_key(name) {
            self.changed.insert(name.clone());
        }
    }

    /// `name` has a subscriber again, or lost its last one at `now`.
    pub(super) fn set_idle(&mut self, name: &str, idle_since: Option<Instant>) {
        if let Some(p) = self.documents.get_mut(name) {
            p.idle_since = idle_since;
        }
    }

    /// Wait for `name` to load for this subscription, asking for the load if nobody else
    /// already waits for it.
    fn wait_for_load(&mut self, name: Arc<str>, waiter: (ConnectionId, DocSlot, VersionVector)) {
        let waiting = self.loading.entry(name.clone()).or_default();
        if waiting.is_empty() {
            self.loads.push_back(name);
        }
        waiting.push(waiter);
    }

    /// When a failed commit may be retried.
    pub(super) fn retry_at(&self) -> Option<Instant> {
        self.retry_at.filter(|_| self.in_flight.is_none() && !self.changed.is_empty())
    }

    /// Nothing is waiting to be committed or being committed.
    pub(super) fn settled(&self) -> bool {
        self.changed.is_empty() && self.in_flight.is_none()
    }
}

impl<S: DocumentStore> Server<S> {
    /// The next request for durable storage ([`crate::ServerConfig::durable`]; a server
    /// that is not durable has none). Drain after every call into the server, as with
    /// [`Server::poll_transmit`], perform each request (off the thread that drives the
    /// server, if it blocks), and report the result with [`Server::handle_storage`].
    ///
    /// Loads come first. At most one commit is in flight: changes made meanwhile go into
    /// the next, so a busy server commits many frames' changes at once.
    pub fn poll_storage(&mut self) -> Option<StorageRequest> {
        if let Some(document) = self.durability.loads.pop_front() {
            return Some(StorageRequest::Load { document });
        }
        let d = &mut self.durability;
        if d.in_flight.is_some()
            || d.changed.is_empty()
            || d.retry_at.is_some_and(|at| self.last_now.is_none_or(|now| now < at))
        {
            return None;
        }
        d.retry_at = None;
        let mut writes = Vec::new();
        let mut versions = Vec::new();
        for name in std::mem::take(&mut d.changed) {
            let (Some(doc), Some(persisted)) = (self.store.get(&name), d.documents.get_mut(&name)) else {
                continue;
            };
            let version = doc.version();
            if persisted.requested == *version {
                continue;
            }
            // What changed since the last write, or everything if the history that says so
            // is trimmed away.
            let data = match doc.export_since(&persisted.requested) {
                Ok(update) => StoredData::Append(update),
                Err(_) => StoredData::Replace(doc.encode()),
            };
            persisted.requested = version.clone();
            versions.push((name.clone(), version.clone()));
            writes.push(StorageWrite { document: name, data, version: version.clone() });
        }
        if writes.is_empty() {
            return None;
        }
        let ticket = CommitTicket(d.next_ticket);
        d.next_ticket += 1;
        d.in_flight = Some((ticket, versions));
        Some(StorageRequest::Commit { ticket, writes })
    }

    /// Storage answered a [`StorageRequest`].
    ///
    /// A loaded document serves the subscriptions that waited for it; one not stored is
    /// created (if [`crate::ServerConfig::create_on_subscribe`]); a load that failed
    /// refuses them with [`ErrorCode::StorageFailed`], and the next subscribe tries again.
    /// A commit acknowledges the changes it holds; a failed one is retried after
    /// [`crate::ServerConfig::commit_retry_delay`], its changes still unacknowledged.
    pub fn handle_storage(&mut self, now: Instant, outcome: StorageOutcome<S::Document>) {
        self.last_now = Some(now);
        match outcome {
            StorageOutcome::Loaded { document, result } => self.on_loaded(document, result),
            StorageOutcome::Committed { ticket, result } => {
                let d = &mut self.durability;
                // An answer for a commit this server did not ask for (a stale one): ignored.
                let Some((_, versions)) = d.in_flight.take_if(|(t, _)| *t == ticket) else {
                    return;
                };
                match result {
                    Ok(()) => {
                        for (name, version) in &versions {
                            if let Some(p) = d.documents.get_mut(name) {
                                p.committed.merge(version);
                            }
                        }
                        for (name, _) in versions {
                            self.settle(&name);
                        }
                    }
                    Err(error) => {
                        for (name, _) in versions {
                            if let Some(p) = d.documents.get_mut(&name) {
                                p.requested = p.committed.clone();
                                d.changed.insert(name.clone());
                            }
                        }
                        d.retry_at = Some(now + self.config.commit_retry_delay);
                        self.events.push_back(ServerEvent::StorageFailed { document: None, error });
                    }
                }
            }
        }
    }

    /// Nothing is waiting to be committed or being committed: every change applied is on
    /// disk (always true when the server is not durable). A runtime stopping the server
    /// drains [`Server::poll_storage`] until this holds.
    pub fn storage_settled(&self) -> bool {
        self.durability.settled()
    }

    /// A subscription to a document that is not in memory: wait for storage.
    pub(super) fn load_for(
        &mut self,
        id: ConnectionId,
        slot: DocSlot,
        name: Arc<str>,
        version: VersionVector,
    ) {
        if let Some(conn) = self.connections.get_mut(&id) {
            conn.loading.insert(slot, name.clone());
            self.durability.wait_for_load(name, (id, slot, version));
        }
    }

    fn on_loaded(&mut self, name: Arc<str>, result: Result<Option<S::Document>, crate::StorageError>) {
        let waiters = self.durability.loading.remove(&name).unwrap_or_default();
        // Still waiting on this connection and slot (not unsubscribed or closed since).
        let waiting: Vec<(ConnectionId, DocSlot, VersionVector)> = waiters
            .into_iter()
            .filter(|(id, slot, _)| {
                let Some(conn) = self.connections.get_mut(id) else { return false };
                let still = conn.loading.get(slot) == Some(&name);
                if still {
                    conn.loading.remove(slot);
                }
                still
            })
            .collect();
        if self.store.get(&name).is_none() {
            match result {
                Ok(Some(doc)) => {
                    let version = doc.version().clone();
                    self.store.insert(&name, doc);
                    self.durability.documents.insert(name.clone(), Persisted::stored(version));
                    self.events.push_back(ServerEvent::DocumentLoaded { document: name.clone() });
                }
                Ok(None) if self.config.create_on_subscribe => {
                    self.store.create(&name);
                    self.durability.documents.insert(name.clone(), Persisted::stored(VersionVector::new()));
                    self.events.push_back(ServerEvent::DocumentCreated { document: name.clone() });
                }
                Ok(None) => {
                    return self.refuse_waiting(waiting, ErrorCode::DocumentNotFound, name.to_string());
                }
                Err(error) => {
                    let detail = format!("document {name:?} cannot be loaded: {error}");
                    self.refuse_waiting(waiting, ErrorCode::StorageFailed, detail);
                    self.events.push_back(ServerEvent::StorageFailed { document: Some(name), error });
                    return;
                }
            }
        }
        if waiting.is_empty() {
            // Everyone left while it loaded: it may go again after the grace period.
            self.durability.set_idle(&name, self.last_now);
        }
        for (id, slot, version) in waiting {
            self.attach(id, slot, name.clone(), version);
        }
    }

    fn refuse_waiting(
        &mut self,
        waiting: Vec<(ConnectionId, DocSlot, VersionVector)>,
        code: ErrorCode,
        detail: String,
    ) {
        for (id, slot, _) in waiting {
            if let Some(conn) = self.connections.get_mut(&id) {
                conn.outbox.push(Message::Error { doc: Some(slot), code, detail: detail.clone() });
            }
        }
    }

    /// Unload the documents idle for [`crate::ServerConfig::unload_after`] whose every
    /// change is committed.
    pub(super) fn unload_idle(&mut self, now: Instant) {
        let due: Vec<Arc<str>> = self
            .durability
            .documents
            .iter()
            .filter(|(name, p)| self.unload_due(name, p).is_some_and(|at| now >= at))
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            self.durability.documents.remove(&name);
            self.store.remove(&name);
            self.recent.remove(&name);
            self.events.push_back(ServerEvent::DocumentUnloaded { document: name });
        }
    }

    /// The earliest time an idle document may unload.
    pub(super) fn next_unload(&self) -> Option<Instant> {
        self.durability.documents.iter().filter_map(|(name, p)| self.unload_due(name, p)).min()
    }

    /// When `name` may unload: idle, and everything in memory committed.
    fn unload_due(&self, name: &Arc<str>, p: &Persisted) -> Option<Instant> {
        let since = p.idle_since?;
        let doc = self.store.get(name)?;
        let in_flight =
            self.durability.in_flight.as_ref().is_some_and(|(_, v)| v.iter().any(|(n, _)| n == name));
        let stored = p.committed == *doc.version() && !in_flight && !self.durability.changed.contains(name);
        (stored && !self.subscribers.contains_key(name)).then(|| since + self.config.unload_after)
    }
}
