//! The server: many connections, each subscribed to any number of documents.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

mod access;
mod connections;
mod durability;
mod fan_out;
mod plugins;

pub use access::AcceptError;
use access::{PendingHello, RateLimiter};

use connections::Connections;
use durability::Durability;

use fan_out::Recent;

use super::codec::DocumentCodec;
use super::config::ServerConfig;
use super::event::{ConnectionId, ServerEvent, Transmit};
use super::sync_document::SyncDocument;
use crate::auth::{Authenticator, Identity, Permission};
use crate::plugin::ServerPlugin;
use crate::store::{DocumentStore, MemoryStore};
use crate::wire::{
    CloseReason, DocSlot, ErrorCode, Message, PROTOCOL_VERSION, decode_frame_into, encode_frame,
};
use crate::{DecodeError, PeerId, ProtocolError, VersionVector};

/// The server side of the sync protocol, without IO.
///
/// The runtime calls [`Server::accept`] for every new transport and passes what happens on
/// it to [`Server::handle_input`] and [`Server::handle_disconnected`], calls
/// [`Server::handle_timeout`] when [`Server::poll_timeout`]'s deadline passes, and after each
/// call drains [`Server::poll_transmit`] (send each frame on its connection), then
/// [`Server::poll_event`] (close the transport on [`ServerEvent::ConnectionClosed`]).
///
/// Documents live in a [`DocumentStore`]. Each change a client sends is applied once and
/// fanned out to the other subscribers of the document at the next poll, merged with
/// whatever else they lack, and never back to its author.
#[derive(Debug)]
pub struct Server<S: DocumentStore = MemoryStore> {
    config: ServerConfig,
    store: S,
    connections: Connections,
    next_connection: u64,
    /// Subscribers of each document.
    subscribers: BTreeMap<Arc<str>, BTreeSet<(ConnectionId, DocSlot)>>,
    /// Documents that changed since the last fan-out.
    dirty: Vec<Arc<str>>,
    /// Per changed document, the changes applied since the last fan-out, as long as they are
    /// all that changed: most subscribers lack exactly these, so the fan-out sends them as
    /// they arrived instead of cutting them out of the document's history again.
    recent: BTreeMap<Arc<str>, Recent>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ServerEvent>,
    /// The latest time passed in, for deadlines that outputs start.
    last_now: Option<Instant>,
    /// Messages of the frame being handled, a buffer kept between frames.
    inbox: Vec<Message>,
    plugins: Vec<Box<dyn ServerPlugin>>,
    /// Loads, commits and unloads of a durable server.
    durability: Durability,
    /// Decides who clients are and what they may do; `None`: everyone may do everything.
    authenticator: Option<Box<dyn Authenticator>>,
    /// Connections that have not finished the handshake, per address.
    unauthenticated: BTreeMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Connection {
    opened_at: Instant,
    last_heard: Instant,
    /// The client, once the handshake is done.
    peer: Option<PeerId>,
    subscriptions: BTreeMap<DocSlot, Subscription>,
    /// Subscriptions waiting for their document to load from storage.
    loading: BTreeMap<DocSlot, Arc<str>>,
    outbox: Vec<Message>,
    /// Flow control: frame bytes sent, and the total the client reported receiving.
    sent: u64,
    acked: u64,
    /// Since when document data waits for the window to open.
    window_full_since: Option<Instant>,
    /// Acknowledgements not sent yet, per slot, and when they are due: they ride along with
    /// the next frame to this client, or leave on their own after `ack_delay`, so that a
    /// client typing fast is not answered with one frame per keystroke.
    acks: BTreeMap<DocSlot, u32>,
    ack_due: Option<Instant>,
    /// Where the transport comes from, if the runtime said ([`Server::accept_from`]).
    address: Option<IpAddr>,
    /// Who the client is, once authenticated.
    identity: Option<Identity>,
    /// The handshake waits for [`Server::complete_authentication`].
    pending_hello: Option<PendingHello>,
    /// A refreshed token waits for [`Server::complete_authentication`].
    reauthenticating: bool,
    rate: RateLimiter,
}

#[derive(Debug)]
struct Subscription {
    document: Arc<str>,
    /// What the client holds or has been sent on this connection.
    remote: VersionVector,
    batches_received: u32,
    /// Received batches not yet acknowledged because some of their changes wait for
    /// dependencies: number and the version they complete.
    unacked: VecDeque<(u32, VersionVector)>,
    /// A `NeedChanges` is in flight.
    asked: bool,
    /// The change codec of this document on this connection.
    codec: DocumentCodec,
    /// A plugin vetoed changes of this subscription: it takes no more (the client stops
    /// syncing the document when told).
    vetoed: bool,
    /// What the client may do with the document.
    permission: Permission,
}

impl Server<MemoryStore> {
    /// A server keeping documents in memory.
    pub fn in_memory(config: ServerConfig) -> Self {
        let store = MemoryStore::new(config.peer, config.document.clone());
        Server::new(config, store)
    }
}

impl<S: DocumentStore> Server<S> {
    /// A server over `store`.
    pub fn new(config: ServerConfig, store: S) -> Self {
        Server {
            config,
            store,
            connections: Connections::default(),
            next_connection: 0,
            subscribers: BTreeMap::new(),
            dirty: Vec::new(),
            recent: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            last_now: None,
            inbox: Vec::new(),
            plugins: Vec::new(),
            durability: Durability::default(),
            authenticator: None,
            unauthenticated: BTreeMap::new(),
        }
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The document store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The document store, for changes made outside the protocol. Documents edited here are
    /// not fanned out until a client sends something for them; prefer
    /// [`Server::document_changed`] after editing.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Tell the server that `name` changed in the store, so subscribers get the change.
    pub fn document_changed(&mut self, name: &str) {
        if let Some(recent) = self.recent.get_mut(name) {
            recent.invalidate();
        }
        let name: Arc<str> = Arc::from(name);
        self.durability.mark_changed(&name);
        self.mark_dirty(name);
    }

    /// Give the store back (for example to start a new server on it).
    pub fn into_store(self) -> S {
        self.store
    }

    /// A document, for reading.
    pub fn document(&self, name: &str) -> Option<&S::Document> {
        self.store.get(name)
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    // ---- inputs ------------------------------------------------------------------------

    /// A transport was accepted; returns the id to pass with its input. Runtimes that know
    /// the peer's address call [`Server::accept_from`] instead, which limits unfinished
    /// handshakes per address.
    pub fn accept(&mut self, now: Instant) -> ConnectionId {
        let id = ConnectionId(self.next_connection);
        self.next_connection += 1;
        let connection = Connection {
            opened_at: now,
            last_heard: now,
            peer: None,
            subscriptions: BTreeMap::new(),
            loading: BTreeMap::new(),
            outbox: Vec::new(),
            sent: 0,
            acked: 0,
            window_full_since: None,
            acks: BTreeMap::new(),
            ack_due: None,
            address: None,
            identity: None,
            pending_hello: None,
            reauthenticating: false,
            rate: RateLimiter::new(now, self.config.message_burst),
        };
        self.last_now = Some(now);
        self.connections.insert(id, connection);
        id
    }

    /// A frame arrived on `connection`. Unknown or closed connections are ignored.
    pub fn handle_input(&mut self, now: Instant, connection: ConnectionId, frame: &[u8]) {
        self.last_now = Some(now);
        let Some(conn) = self.connections.get_mut(&connection) else { return };
        conn.last_heard = now;
        let mut messages = std::mem::take(&mut self.inbox);
        match decode_frame_into(frame, &self.config.limits, &mut messages) {
            Ok(()) => {}
            Err(DecodeError::UnsupportedVersion(v)) if conn.peer.is_none() => {
                return self.refuse_version(connection, (v, v));
            }
            Err(e) => {
                let code = match e {
                    DecodeError::TooLarge { .. } => ErrorCode::LimitExceeded,
                    _ => ErrorCode::Malformed,
                };
                let reason = match code {
                    ErrorCode::LimitExceeded => CloseReason::LimitExceeded,
                    _ => CloseReason::ProtocolViolation,
                };
                return self.violation(connection, code, ProtocolError::Decode(e), reason);
            }
        }
        if !self.charge(connection, now, messages.len()) {
            messages.clear();
            self.inbox = messages;
            return;
        }
        for message in messages.drain(..) {
            if !self.connections.contains_key(&connection) {
                break;
            }
            self.handle_message(connection, message);
        }
        messages.clear();
        self.inbox = messages;
    }

    /// The transport of `connection` closed.
    pub fn handle_disconnected(&mut self, now: Instant, connection: ConnectionId) {
        self.last_now = Some(now);
        if self.remove_connection(connection) {
            self.events.push_back(ServerEvent::ConnectionClosed { connection, reason: CloseReason::Normal });
        }
    }

    /// Time passed: close connections whose handshake or silence lasted too long. Early or
    /// repeated calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = Some(now);
        for plugin in &mut self.plugins {
            if plugin.poll_timeout().is_some_and(|at| now >= at) {
                plugin.handle_timeout(now);
            }
        }
        let slow = self.config.slow_consumer_timeout;
        let expired: Vec<(ConnectionId, CloseReason)> = self
            .connections
            .iter()
            .filter_map(|(id, conn)| {
                if conn.peer.is_none() && now >= conn.opened_at + self.config.handshake_timeout {
                    Some((*id, CloseReason::HandshakeTimeout))
                } else if now >= conn.last_heard + self.config.idle_timeout {
                    Some((*id, CloseReason::IdleTimeout))
                } else if let (Some(since), Some(limit)) = (conn.window_full_since, slow)
                    && now >= since + limit
                {
                    Some((*id, CloseReason::SlowConsumer))
                } else {
                    None
                }
            })
            .collect();
        for (id, reason) in expired {
            self.close_with(id, reason);
        }
        self.expire_identities(now);
        self.unload_idle(now);
    }

    /// Close one connection (telling the client why).
    pub fn close(&mut self, connection: ConnectionId) {
        self.close_with(connection, CloseReason::Normal);
    }

    /// Close one connection, telling the client `reason` (a runtime whose own queue for the
    /// connection overflowed closes it as a [`CloseReason::SlowConsumer`], say).
    pub fn close_with_reason(&mut self, connection: ConnectionId, reason: CloseReason) {
        self.close_with(connection, reason);
    }

    /// Close every connection, telling clients the server shuts down.
    pub fn shutdown(&mut self) {
        for plugin in &mut self.plugins {
            plugin.on_shutdown();
        }
        let ids: Vec<ConnectionId> = self.connections.keys().copied().collect();
        for id in ids {
            self.close_with(id, CloseReason::ServerShutdown);
        }
    }

    // ---- outputs -----------------------------------------------------------------------

    /// The next frame to send. Fan-out of changes applied since the last call happens here,
    /// so that a subscriber gets one frame per poll, whatever it missed merged.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if self.transmits.is_empty() {
            self.fan_out();
            self.route_plugin_messages();
            self.flush_outboxes();
        }
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// When [`Server::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.connections
            .values()
            .map(|conn| {
                let mut next = conn.last_heard + self.config.idle_timeout;
                if conn.peer.is_none() {
                    next = next.min(conn.opened_at + self.config.handshake_timeout);
                }
                if let (Some(since), Some(limit)) =
                    (conn.window_full_since, self.config.slow_consumer_timeout)
                {
                    next = next.min(since + limit);
                }
                if let Some(due) = conn.ack_due {
                    next = next.min(due);
                }
                if let Some(at) = conn.identity.as_ref().and_then(Identity::expires_at) {
                    next = next.min(at);
                }
                next
            })
            .chain(self.plugins.iter().filter_map(|p| p.poll_timeout()))
            .chain(self.next_unload())
            .chain(self.durability.retry_at())
            .min()
    }

    // ---- internals ---------------------------------------------------------------------

    fn handle_message(&mut self, id: ConnectionId, message: Message) {
        let Some(conn) = self.connections.get_mut(&id) else { return };
        let welcomed = conn.peer.is_some();
        match message {
            Message::Hello { min_version, max_version, peer, client_name, token }
                if !welcomed && conn.pending_hello.is_none() =>
            {
                if !(min_version..=max_version).contains(&PROTOCOL_VERSION) {
                    return self.refuse_version(id, (min_version, max_version));
                }
                self.on_hello(id, peer, client_name, &token);
            }
            Message::Ping { nonce } => conn.outbox.push(Message::Pong { nonce }),
            Message::Pong { .. } => {}
            Message::Received { bytes } => {
                // A client cannot have received more than was sent; clamp a lie.
                conn.acked = conn.acked.max(bytes.min(conn.sent));
                if conn.window_full_since.is_some()
                    && conn.sent - conn.acked < u64::from(self.config.window_bytes)
                {
                    conn.window_full_since = None;
                    for sub in conn.subscriptions.values() {
                        if !self.dirty.contains(&sub.document) {
                            self.dirty.push(sub.document.clone());
                        }
                    }
                }
            }
            Message::Close { .. } => {
                if self.remove_connection(id) {
                    self.events.push_back(ServerEvent::ConnectionClosed {
                        connection: id,
                        reason: CloseReason::Normal,
                    });
                }
            }
            Message::Error { code, detail, .. } => {
                let error = ProtocolError::Refused { code, detail };
                self.events.push_back(ServerEvent::Error { connection: id, error });
            }
            _ if !welcomed => self.violation(
                id,
                ErrorCode::UnexpectedMessage,
                ProtocolError::UnexpectedMessage("pre-handshake"),
                CloseReason::ProtocolViolation,
            ),
            Message::Authenticate { token } => self.on_authenticate(id, &token),
            Message::Subscribe { doc, name, version } => self.on_subscribe(id, doc, name, version),
            Message::Unsubscribe { doc } => {
                conn.loading.remove(&doc);
                if let Some(sub) = conn.subscriptions.remove(&doc) {
                    let peer = conn.peer;
                    self.forget_subscriber(&sub.document, id, doc);
                    if let (Some(now), Some(peer)) = (self.last_now, peer) {
                        for plugin in &mut self.plugins {
                            plugin.on_unsubscribed(now, id, peer, &sub.document);
                        }
                    }
                    self.events
                        .push_back(ServerEvent::Unsubscribed { connection: id, document: sub.document });
                }
            }
            Message::Changes { doc, changes } => self.on_changes(id, doc, &changes),
            Message::Plugin { plugin, doc, body } => self.on_plugin_message(id, plugin, doc, &body),
            Message::NeedChanges { doc, version } => {
                if let Some(sub) = conn.subscriptions.get_mut(&doc) {
                    sub.remote = version;
                    if !self.dirty.contains(&sub.document) {
                        self.dirty.push(sub.document.clone());
                    }
                }
            }
            _ => self.violation(
                id,
                ErrorCode::UnexpectedMessage,
                ProtocolError::UnexpectedMessage("client-bound"),
                CloseReason::ProtocolViolation,
            ),
        }
    }

    fn on_subscribe(&mut self, id: ConnectionId, slot: DocSlot, name: String, version: VersionVector) {
        let name: Arc<str> = name.into();
        let Some(conn) = self.connections.get_mut(&id) else { return };
        if conn.subscriptions.contains_key(&slot) || conn.loading.contains_key(&slot) {
            return self.violation(
                id,
                ErrorCode::UnexpectedMessage,
                ProtocolError::UnexpectedMessage("subscribe on a slot in use"),
                CloseReason::ProtocolViolation,
            );
        }
        if conn.subscriptions.len() + conn.loading.len() >= self.config.max_documents_per_connection {
            conn.outbox.push(Message::Error {
                doc: Some(slot),
                code: ErrorCode::LimitExceeded,
                detail: format!(
                    "at most {} documents per connection",
                    self.config.max_documents_per_connection
                ),
            });
            return;
        }
        if self.permission_for(id, &name) == Permission::Denied {
            return self.refuse_forbidden(id, slot, name);
        }
        let Some(conn) = self.connections.get_mut(&id) else { return };
        if self.store.get(&name).is_none() {
            if self.config.durable {
                return self.load_for(id, slot, name, version);
            }
            if !self.config.create_on_subscribe {
                conn.outbox.push(Message::Error {
                    doc: Some(slot),
                    code: ErrorCode::DocumentNotFound,
                    detail: name.to_string(),
                });
                return;
            }
            self.store.create(&name);
            self.events.push_back(ServerEvent::DocumentCreated { document: name.clone() });
        }
        self.attach(id, slot, name, version);
    }

    /// Subscribe `slot` of connection `id` to `name`, which is in the store: send the
    /// client what it lacks.
    fn attach(&mut self, id: ConnectionId, slot: DocSlot, name: Arc<str>, version: VersionVector) {
        // Decided again: a load may have taken long enough for permissions to change.
        let permission = self.permission_for(id, &name);
        if permission == Permission::Denied {
            return self.refuse_forbidden(id, slot, name);
        }
        let Some(conn) = self.connections.get_mut(&id) else { return };
        let Some(doc) = self.store.get(&name) else { return };
        // A replica that starts empty gets the whole document in its compact form; one
        // whose missing history the server trimmed gets the same (snapshot plus tail), once
        // the snapshot can hold everything it has: a state snapshot cannot be merged with
        // edits it lacks, so such a replica first pushes its offline edits (it gets an empty
        // update), and the fan-out sends it the snapshot with them included.
        let server_version = doc.version().clone();
        // Batch 0 stands for what both sides held at subscribe: acknowledged once stored,
        // so that a client learns its earlier edits are safe even if their own
        // acknowledgements were lost with the previous connection.
        let held = fan_out::meet(&server_version, &version);
        let stored = self.durability.committed(&name).unwrap_or(&server_version).includes(&held);
        let (update, remote) = if version.is_empty() {
            (doc.encode(), server_version.clone())
        } else {
            match doc.export_since(&version) {
                Ok(update) => {
                    let mut remote = version;
                    remote.merge(&server_version);
                    (update, remote)
                }
                Err(_) if server_version.includes(&version) => (doc.encode(), server_version.clone()),
                // The empty update; should even that fail, the whole document, which such a
                // client cannot import either and so also answers by pushing and asking again.
                Err(_) => (doc.export_since(&server_version).unwrap_or_else(|_| doc.encode()), version),
            }
        };
        conn.outbox.push(Message::Sync { doc: slot, version: server_version, update });
        if permission != Permission::ReadWrite {
            conn.outbox.push(Message::Access { doc: slot, permission });
        }
        conn.subscriptions.insert(
            slot,
            Subscription {
                document: name.clone(),
                remote,
                batches_received: 0,
                unacked: if stored { VecDeque::new() } else { VecDeque::from([(0, held)]) },
                asked: false,
                codec: DocumentCodec::new(),
                vetoed: false,
                permission,
            },
        );
        if stored {
            conn.acks.insert(slot, 0);
        }
        let peer = conn.peer;
        self.subscribers.entry(name.clone()).or_default().insert((id, slot));
        self.durability.set_idle(&name, None);
        if let (Some(now), Some(peer)) = (self.last_now, peer) {
            for plugin in &mut self.plugins {
                plugin.on_subscribed(now, id, peer, &name);
            }
        }
        self.events.push_back(ServerEvent::Subscribed { connection: id, document: name });
    }

    fn on_changes(&mut self, id: ConnectionId, slot: DocSlot, bytes: &[u8]) {
        let Some(conn) = self.connections.get_mut(&id) else { return };
        let Some(sub) = conn.subscriptions.get_mut(&slot) else {
            conn.outbox.push(Message::Error {
                doc: Some(slot),
                code: ErrorCode::UnknownDocument,
                detail: "changes for a slot that is not subscribed".into(),
            });
            return;
        };
        let changes = match sub.codec.decode(bytes) {
            Ok(changes) => changes,
            Err(e) => {
                return self.violation(
                    id,
                    ErrorCode::Malformed,
                    ProtocolError::Decode(e),
                    CloseReason::ProtocolViolation,
                );
            }
        };
        let Some(conn) = self.connections.get_mut(&id) else { return };
        let Some(sub) = conn.subscriptions.get_mut(&slot) else { return };
        if sub.vetoed {
            return;
        }
        if sub.permission != Permission::ReadWrite {
            let document = sub.document.clone();
            return self.refuse_read_only(id, slot, document, "changes");
        }
        if let Some(peer) = conn.peer
            && let Some((plugin, reason)) = self.plugins.iter_mut().find_map(|p| {
                p.check_changes(id, peer, &sub.document, &changes).err().map(|reason| (p.id(), reason))
            })
        {
            sub.vetoed = true;
            let document = sub.document.clone();
            conn.outbox.push(Message::Error {
                doc: Some(slot),
                code: ErrorCode::ChangesVetoed,
                detail: reason.clone(),
            });
            self.events.push_back(ServerEvent::ChangesVetoed { connection: id, document, plugin, reason });
            return;
        }
        sub.batches_received = sub.batches_received.wrapping_add(1);
        let batch = sub.batches_received;
        let mut completes = VersionVector::new();
        for change in &changes {
            completes.extend_to(&change.span());
            sub.remote.extend_to(&change.span());
        }
        let name = sub.document.clone();
        let Some(doc) = self.store.get_mut(&name) else { return };
        let others = self.subscribers.get(&name).is_some_and(|s| s.len() > 1);
        let before = doc.version().clone();
        // The others get these very changes: apply them borrowed and keep them.
        let (applied, copy) = if others {
            (doc.apply_changes_from(&changes), Some(changes))
        } else {
            (doc.apply_changes(changes), None)
        };
        match applied {
            Ok(status) => {
                // The copy is what the others lack only if it is exactly what changed.
                let mut expected = before.clone();
                expected.merge(&completes);
                let exact = *doc.version() == expected;
                if let Some(sub) = conn.subscriptions.get_mut(&slot) {
                    sub.unacked.push_back((batch, completes));
                }
                match (copy, exact) {
                    (Some(copy), true) if status.applied > 0 => {
                        let recent = self.recent.entry(name.clone()).or_insert_with(|| Recent {
                            valid: false,
                            base: VersionVector::new(),
                            changes: Vec::new(),
                        });
                        if !recent.valid {
                            recent.valid = true;
                            recent.base = before;
                            recent.changes.clear();
                        }
                        recent.changes.extend(copy);
                    }
                    _ => {
                        if let Some(recent) = self.recent.get_mut(&name) {
                            recent.invalidate();
                        }
                    }
                }
                if status.applied > 0 {
                    self.durability.mark_changed(&name);
                    self.mark_dirty(name.clone());
                    self.events.push_back(ServerEvent::ChangesApplied {
                        connection: id,
                        document: name.clone(),
                        applied: status.applied,
                    });
                }
                self.settle(&name);
            }
            Err(e) => {
                conn.outbox.push(Message::Error {
                    doc: Some(slot),
                    code: ErrorCode::ChangesRefused,
                    detail: e.to_string(),
                });
                self.events
                    .push_back(ServerEvent::Error { connection: id, error: ProtocolError::Document(e) });
            }
        }
    }

    /// After `name` changed: acknowledge every batch now complete, and ask for what is
    /// still missing from the subscribers whose batches wait.
    fn settle(&mut self, name: &str) {
        let Some(doc) = self.store.get(name) else { return };
        // A durable server acknowledges what is committed, not merely applied.
        let version = self.durability.committed(name).unwrap_or(doc.version());
        let behind = doc.pending_count() > 0;
        let Some(subscribers) = self.subscribers.get(name) else { return };
        for (id, slot) in subscribers {
            // Most subscribers of a busy document only read: nothing to acknowledge or to ask
            // for. A look through a shared borrow skips them without marking them touched.
            let idle = |conn: &Connection| {
                conn.subscriptions.get(slot).is_none_or(|sub| sub.unacked.is_empty() && !sub.asked)
            };
            if self.connections.get(id).is_none_or(idle) {
                continue;
            }
            let Some(conn) = self.connections.get_mut(id) else { continue };
            let Some(sub) = conn.subscriptions.get_mut(slot) else { continue };
            let mut acked = None;
            while let Some((batch, completes)) = sub.unacked.front() {
                if !version.includes(completes) {
                    break;
                }
                acked = Some(*batch);
                sub.unacked.pop_front();
            }
            if let Some(batch) = acked {
                conn.acks.insert(*slot, batch);
                let now = self.last_now.unwrap_or(conn.last_heard);
                conn.ack_due.get_or_insert(now + self.config.ack_delay);
            }
            if sub.unacked.is_empty() || !behind {
                sub.asked = false;
            } else if !sub.asked {
                sub.asked = true;
                conn.outbox.push(Message::NeedChanges { doc: *slot, version: version.clone() });
                self.events.push_back(ServerEvent::OutOfSync { connection: *id, document: Arc::from(name) });
            }
        }
    }

    fn flush_outboxes(&mut self) {
        let now = self.last_now;
        // Clients report what they received only under flow control.
        let limit = (self.config.window_bytes > 0).then_some(self.config.max_pending_outbound_bytes);
        let mut overflowing = Vec::new();
        let touched = self.connections.take_touched();
        for &id in &touched {
            // Untouched connections have nothing to send: nothing could have reached them.
            let Some(conn) = self.connections.get_mut(&id) else { continue };
            let id = &id;
            let due = conn.ack_due.is_some_and(|t| now.is_some_and(|now| now >= t));
            if !conn.acks.is_empty() && (due || !conn.outbox.is_empty()) {
                conn.ack_due = None;
                for (doc, batch) in std::mem::take(&mut conn.acks) {
                    conn.outbox.push(Message::Ack { doc, batch });
                }
            }
            if !conn.outbox.is_empty() {
                let frame = encode_frame(&conn.outbox);
                // Cleared, not replaced: the buffer is reused by the next frame.
                conn.outbox.clear();
                let pending = conn.sent - conn.acked;
                if limit.is_some_and(|limit| pending > 0 && pending + frame.len() as u64 > limit) {
                    overflowing.push(*id);
                    continue;
                }
                conn.sent += frame.len() as u64;
                self.transmits.push_back(Transmit { connection: *id, frame });
            }
        }
        // `get_mut` above touched every visited connection again: only those whose
        // acknowledgements wait for their delay or for company stay touched, to be looked at
        // again.
        self.connections.clear_touched();
        for id in &touched {
            if self.connections.get(id).is_some_and(|conn| !conn.acks.is_empty()) {
                self.connections.touch(*id);
            }
        }
        self.connections.recycle(touched);
        for id in overflowing {
            let error = ProtocolError::LimitExceeded("pending outbound bytes");
            self.events.push_back(ServerEvent::Error { connection: id, error });
            self.close_with(id, CloseReason::SlowConsumer);
        }
    }

    fn refuse_version(&mut self, id: ConnectionId, theirs: (u8, u8)) {
        let error = ProtocolError::UnsupportedVersion { ours: (PROTOCOL_VERSION, PROTOCOL_VERSION), theirs };
        let detail = format!("this server speaks protocol version {PROTOCOL_VERSION}");
        self.send_now(
            id,
            vec![
                Message::Error { doc: None, code: ErrorCode::UnsupportedVersion, detail },
                Message::Close { reason: CloseReason::UnsupportedVersion },
            ],
        );
        self.events.push_back(ServerEvent::Error { connection: id, error });
        self.finish(id, CloseReason::UnsupportedVersion);
    }

    /// The client broke the protocol: tell it, close the connection, carry on with the others.
    fn violation(&mut self, id: ConnectionId, code: ErrorCode, error: ProtocolError, reason: CloseReason) {
        let detail = error.to_string();
        self.send_now(id, vec![Message::Error { doc: None, code, detail }, Message::Close { reason }]);
        self.events.push_back(ServerEvent::Error { connection: id, error });
        self.finish(id, reason);
    }

    fn close_with(&mut self, id: ConnectionId, reason: CloseReason) {
        if self.connections.contains_key(&id) {
            self.send_now(id, vec![Message::Close { reason }]);
            self.finish(id, reason);
        }
    }

    /// Queue `messages` after whatever the connection had pending, as its last frame.
    fn send_now(&mut self, id: ConnectionId, mut messages: Vec<Message>) {
        let Some(conn) = self.connections.get_mut(&id) else { return };
        // Acknowledgements waiting for company leave now: a client told that the server
        // shuts down still learns what it saved.
        conn.ack_due = None;
        for (doc, batch) in std::mem::take(&mut conn.acks) {
            conn.outbox.push(Message::Ack { doc, batch });
        }
        let mut all = std::mem::take(&mut conn.outbox);
        all.append(&mut messages);
        let frame = encode_frame(&all);
        conn.sent += frame.len() as u64;
        self.transmits.push_back(Transmit { connection: id, frame });
    }

    fn finish(&mut self, id: ConnectionId, reason: CloseReason) {
        if self.remove_connection(id) {
            self.events.push_back(ServerEvent::ConnectionClosed { connection: id, reason });
        }
    }

    fn remove_connection(&mut self, id: ConnectionId) -> bool {
        let Some(conn) = self.connections.remove(&id) else { return false };
        if conn.peer.is_none()
            && let Some(address) = conn.address
        {
            self.release_unauthenticated(address);
        }
        for (slot, sub) in conn.subscriptions {
            self.forget_subscriber(&sub.document, id, slot);
        }
        if let (Some(now), Some(peer)) = (self.last_now, conn.peer) {
            for plugin in &mut self.plugins {
                plugin.on_disconnected(now, id, peer);
            }
        }
        true
    }

    /// Drop one subscription from the document's list, and the document's fan-out state
    /// with its last subscriber.
    fn forget_subscriber(&mut self, name: &Arc<str>, id: ConnectionId, slot: DocSlot) {
        if let Some(set) = self.subscribers.get_mut(name) {
            set.remove(&(id, slot));
            if set.is_empty() {
                self.subscribers.remove(name);
                self.recent.remove(name);
                self.durability.set_idle(name, self.last_now);
            }
        }
    }
}
