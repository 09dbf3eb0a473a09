//! The client session: one replica's documents kept in sync with one server.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::codec::DocumentCodec;
use super::config::ClientConfig;
use super::event::{ClientEvent, ConnectionStatus};
use super::random::SplitMix64;
use super::sync_document::SyncDocument;
use crate::auth::Permission;
use crate::plugin::{ClientPlugin, PluginError};
use crate::wire::{
    CloseReason, DocSlot, ErrorCode, Message, PROTOCOL_VERSION, decode_frame_into, encode_frame,
};
use crate::{Document, PeerId, ProtocolError, VersionVector};

/// The client side of the sync protocol, without IO.
///
/// The session owns the documents it syncs. Edit them through
/// [`ClientSession::document_mut`]; the next [`ClientSession::poll_transmit`] sends what
/// changed, batched into one frame. Drive it like this:
///
/// 1. [`ClientSession::connect`], then open a transport whenever
///    [`ClientEvent::OpenTransport`] says so and call [`ClientSession::handle_connected`]
///    once it is open;
/// 2. feed every frame received to [`ClientSession::handle_input`], a lost transport to
///    [`ClientSession::handle_disconnected`], and call [`ClientSession::handle_timeout`] when
///    [`ClientSession::poll_timeout`]'s deadline passes;
/// 3. after each of those calls and each command, drain [`ClientSession::poll_transmit`]
///    (send each frame), then [`ClientSession::poll_event`], then read
///    [`ClientSession::poll_timeout`].
///
/// The session survives connections: after a disconnect it backs off (exponentially, with
/// jitter from [`ClientConfig::rng_seed`]), asks for a new transport, resubscribes every
/// document and pushes whatever the server lacks, so no local edit is lost.
#[derive(Debug)]
pub struct ClientSession<D: SyncDocument = Document> {
    config: ClientConfig,
    peer: PeerId,
    rng: SplitMix64,
    status: ConnectionStatus,
    /// Whether the application wants to be connected (between `connect` and `close`).
    wanted: bool,
    documents: BTreeMap<String, ClientDocument<D>>,
    /// Which document each live slot stands for: every received message names a slot.
    slots: BTreeMap<DocSlot, Arc<str>>,
    next_slot: u32,
    link: Option<Link>,
    /// Failed attempts since the last successful handshake.
    attempts: u32,
    reconnect_at: Option<Instant>,
    /// Messages for the next frame.
    outbox: Vec<Message>,
    frames: VecDeque<Vec<u8>>,
    events: VecDeque<ClientEvent>,
    /// The latest time passed in, for stamping frames that commands produce.
    last_now: Option<Instant>,
    /// Messages of the frame being handled, a buffer kept between frames.
    inbox: Vec<Message>,
    plugins: Vec<Box<dyn ClientPlugin>>,
    /// The server refused the token: stay down until the application gives another.
    auth_failed: bool,
}

#[derive(Debug)]
struct ClientDocument<D> {
    doc: D,
    /// The document's name, shared with the events that mention it.
    name: Arc<str>,
    slot: DocSlot,
    /// Got the server's `Sync` on the current connection.
    synced: bool,
    /// What the server holds or has been sent on this connection: local changes beyond it are
    /// sent at the next poll.
    sent: VersionVector,
    /// `Changes` batches sent on this subscription (numbered from 1), and the last one the
    /// server acknowledged: acks are cumulative, so the two counts say what is unsaved.
    batches_sent: u32,
    batches_acked: u32,
    /// A `NeedChanges` is in flight; do not ask again until changes arrive.
    asked: bool,
    /// Whether `Saved` was reported for the current state.
    saved: bool,
    /// The change codec of this document on the current connection.
    codec: DocumentCodec,
    /// The document refused what the server holds; it no longer syncs until subscribed again.
    refused: bool,
    /// Batches not yet acknowledged: number, and how many of this replica's own operations
    /// the document held once it was sent.
    in_flight: VecDeque<(u32, u32)>,
    /// This replica's own operations the server confirmed holding.
    acknowledged: u32,
    /// What the server lets this client do with the document on the current connection.
    permission: Permission,
    /// This copy holds edits the server lacks and the server trimmed the history they would
    /// merge into, so its `Sync` could not bring this copy up to date. Pushing them resolves
    /// it; a reader cannot push.
    behind_trim: bool,
    /// What was sent and what the document held when it could not give the changes the
    /// server lacks: reported once, tried again only when either moves, so that polling a
    /// failing document does not report the same error forever.
    failed_push: Option<(VersionVector, VersionVector)>,
}

#[derive(Debug)]
struct Link {
    opened_at: Instant,
    welcomed: bool,
    last_heard: Instant,
    last_sent: Instant,
    ping_sent: Option<Instant>,
    next_nonce: u32,
    /// Flow control: frame bytes received on this link, and the total last reported.
    received: u64,
    reported: u64,
    window: u32,
    /// The client's ping interval, or the server's if that is shorter (it closes idle
    /// connections on its own schedule).
    ping_interval: Duration,
    /// The application gave a new token after this link's `Hello` left with the old one.
    token_changed: bool,
}

impl ClientSession<Document> {
    /// A session for the replica `peer`, syncing [`Document`]s. Nothing happens until
    /// [`ClientSession::connect`].
    pub fn new(peer: PeerId, config: ClientConfig) -> Self {
        Self::for_document_type(peer, config)
    }
}

impl<D: SyncDocument> ClientSession<D> {
    /// A session syncing documents of your own [`SyncDocument`] type (for example a wrapper
    /// that observes what the engine applies).
    pub fn for_document_type(peer: PeerId, config: ClientConfig) -> Self {
        ClientSession {
            rng: SplitMix64::new(config.rng_seed),
            config,
            peer,
            status: ConnectionStatus::Disconnected,
            wanted: false,
            documents: BTreeMap::new(),
            slots: BTreeMap::new(),
            next_slot: 0,
            link: None,
            attempts: 0,
            reconnect_at: None,
            outbox: Vec::new(),
            frames: VecDeque::new(),
            events: VecDeque::new(),
            last_now: None,
            inbox: Vec::new(),
            plugins: Vec::new(),
            auth_failed: false,
        }
    }

    /// Add a plugin, replacing (and returning) one with the same id. A plugin added while
    /// connected is told about the connection and the documents already synced on it.
    pub fn add_plugin(&mut self, plugin: impl ClientPlugin) -> Option<Box<dyn ClientPlugin>> {
        let mut plugin: Box<dyn ClientPlugin> = Box::new(plugin);
        if let Some(now) = self.last_now
            && self.link.as_ref().is_some_and(|l| l.welcomed)
        {
            plugin.on_connected(now);
            for entry in self.documents.values().filter(|d| d.synced) {
                plugin.on_subscribed(now, &entry.name);
            }
        }
        match self.plugins.iter_mut().find(|p| p.id() == plugin.id()) {
            Some(old) => Some(std::mem::replace(old, plugin)),
            None => {
                self.plugins.push(plugin);
                None
            }
        }
    }

    /// The plugin of type `P`, for reading its state.
    pub fn plugin<P: ClientPlugin>(&self) -> Option<&P> {
        self.plugins.iter().find_map(|p| (&**p as &dyn std::any::Any).downcast_ref::<P>())
    }

    /// The plugin of type `P`, for commands; what it queues leaves at the next
    /// [`ClientSession::poll_transmit`].
    pub fn plugin_mut<P: ClientPlugin>(&mut self) -> Option<&mut P> {
        self.plugins.iter_mut().find_map(|p| (&mut **p as &mut dyn std::any::Any).downcast_mut::<P>())
    }

    /// The configuration the session runs with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The replica id of this client.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The connection status.
    pub fn status(&self) -> ConnectionStatus {
        self.status
    }

    // ---- commands ----------------------------------------------------------------------

    /// Start connecting (and stay connected, reconnecting as needed, until
    /// [`ClientSession::close`]).
    pub fn connect(&mut self, now: Instant) {
        self.last_now = Some(now);
        if self.wanted {
            return;
        }
        self.wanted = true;
        self.attempts = 0;
        self.reconnect_at = None;
        if self.link.is_none() {
            self.set_status(ConnectionStatus::Connecting);
            self.events.push_back(ClientEvent::OpenTransport);
        }
    }

    /// Close the connection and stop reconnecting. Documents stay, with their local edits;
    /// a later [`ClientSession::connect`] pushes them.
    pub fn close(&mut self, now: Instant) {
        self.last_now = Some(now);
        self.wanted = false;
        self.reconnect_at = None;
        if self.link.is_some() {
            self.outbox.push(Message::Close { reason: CloseReason::Normal });
            self.flush_outbox();
            self.drop_link();
            self.events.push_back(ClientEvent::CloseTransport);
        }
        for plugin in &mut self.plugins {
            plugin.on_closed(now);
        }
        self.set_status(ConnectionStatus::Disconnected);
    }

    /// Sync `doc` under `name`; replaces (and returns) a document already there.
    pub fn subscribe(&mut self, name: impl Into<String>, doc: D) -> Option<D> {
        let name = name.into();
        let slot = DocSlot(self.next_slot);
        self.next_slot = self.next_slot.wrapping_add(1);
        let entry = ClientDocument {
            doc,
            name: Arc::from(name.as_str()),
            slot,
            synced: false,
            sent: VersionVector::new(),
            batches_sent: 0,
            batches_acked: 0,
            asked: false,
            saved: false,
            codec: DocumentCodec::new(),
            refused: false,
            in_flight: VecDeque::new(),
            acknowledged: 0,
            permission: Permission::ReadWrite,
            behind_trim: false,
            failed_push: None,
        };
        self.slots.insert(slot, entry.name.clone());
        let old = self.documents.insert(name.clone(), entry).map(|old| {
            self.slots.remove(&old.slot);
            self.send_unsubscribe(old.slot);
            old.doc
        });
        if self.link.as_ref().is_some_and(|l| l.welcomed) {
            self.send_subscribe(&name);
        }
        old
    }

    /// Stop syncing `name` and give the document back.
    pub fn unsubscribe(&mut self, name: &str) -> Option<D> {
        let entry = self.documents.remove(name)?;
        self.slots.remove(&entry.slot);
        self.send_unsubscribe(entry.slot);
        if entry.synced {
            self.plugins_unsubscribed(&entry.name);
        }
        Some(entry.doc)
    }

    /// A synced document, for reading.
    pub fn document(&self, name: &str) -> Option<&D> {
        self.documents.get(name).map(|d| &d.doc)
    }

    /// A synced document, for editing: what changes is sent at the next
    /// [`ClientSession::poll_transmit`].
    pub fn document_mut(&mut self, name: &str) -> Option<&mut D> {
        self.documents.get_mut(name).map(|d| &mut d.doc)
    }

    /// The names of the synced documents.
    pub fn document_names(&self) -> impl Iterator<Item = &str> {
        self.documents.keys().map(String::as_str)
    }

    /// Whether the server has acknowledged every local change of `name` (the "all changes
    /// saved" signal). False while disconnected with unsent edits.
    pub fn is_saved(&self, name: &str) -> bool {
        self.documents.get(name).is_some_and(|d| {
            d.synced && d.batches_acked == d.batches_sent && d.sent.includes(d.doc.version())
        })
    }

    /// How many of this replica's own operations on `name` the server has confirmed holding,
    /// by acknowledgement or in its `Sync`. On a durable server they are on disk: they
    /// survive a crash of the server. Unlike [`ClientSession::is_saved`] this keeps its
    /// value across reconnects and while new edits are on their way.
    pub fn acknowledged(&self, name: &str) -> Option<crate::Counter> {
        self.documents.get(name).map(|d| d.acknowledged)
    }

    /// What the server lets this client do with a document: `None` for a document not
    /// subscribed; read-write until the server says otherwise.
    pub fn permission(&self, name: &str) -> Option<Permission> {
        self.documents.get(name).map(|d| d.permission)
    }

    /// Use `token` from now on ([`ClientConfig::token`]): on a live connection the server
    /// checks it at once and decides every document's permission again; after
    /// [`ClientEvent::AuthenticationFailed`] the session connects again with it.
    pub fn set_token(&mut self, now: Instant, token: impl Into<Vec<u8>>) {
        self.last_now = Some(now);
        self.config.token = token.into();
        if self.link.as_ref().is_some_and(|l| l.welcomed) {
            self.outbox.push(Message::Authenticate { token: self.config.token.clone() });
        } else if let Some(link) = self.link.as_mut() {
            // Mid-handshake: should the old token be refused, the next attempt uses this one.
            link.token_changed = true;
        } else if self.status == ConnectionStatus::Error && self.auth_failed {
            self.auth_failed = false;
            self.connect(now);
        }
    }

    // ---- inputs ------------------------------------------------------------------------

    /// The transport the session asked for ([`ClientEvent::OpenTransport`]) is open.
    pub fn handle_connected(&mut self, now: Instant) {
        self.last_now = Some(now);
        if !self.wanted {
            self.events.push_back(ClientEvent::CloseTransport);
            return;
        }
        self.drop_link();
        self.link = Some(Link {
            opened_at: now,
            welcomed: false,
            last_heard: now,
            last_sent: now,
            ping_sent: None,
            next_nonce: 0,
            received: 0,
            reported: 0,
            window: 0,
            ping_interval: self.config.ping_interval,
            token_changed: false,
        });
        self.reconnect_at = None;
        self.outbox.push(Message::Hello {
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            peer: self.peer,
            client_name: self.config.client_name.clone(),
            token: self.config.token.clone(),
        });
    }

    /// The transport was lost (or could not be opened).
    pub fn handle_disconnected(&mut self, now: Instant) {
        self.last_now = Some(now);
        // Already given up (a fatal error): the transport closing after it changes nothing.
        if self.link.is_none() && (self.reconnect_at.is_some() || self.status == ConnectionStatus::Error) {
            return;
        }
        self.drop_link();
        self.schedule_reconnect(now);
    }

    /// The transport failed with an error, or could not be opened: as
    /// [`handle_disconnected`](Self::handle_disconnected), and the session reports
    /// [`ClientEvent::TransportFailed`] with `detail` so that the application can say why
    /// it is reconnecting.
    pub fn handle_transport_error(&mut self, now: Instant, detail: impl Into<String>) {
        self.events.push_back(ClientEvent::TransportFailed { detail: detail.into() });
        self.handle_disconnected(now);
    }

    /// A frame arrived from the server.
    pub fn handle_input(&mut self, now: Instant, frame: &[u8]) {
        self.last_now = Some(now);
        let Some(link) = self.link.as_mut() else { return };
        link.last_heard = now;
        link.ping_sent = None;
        link.received += frame.len() as u64;
        let mut messages = std::mem::take(&mut self.inbox);
        if let Err(e) = decode_frame_into(frame, &self.config.limits, &mut messages) {
            return self.fail(now, ProtocolError::Decode(e), CloseReason::ProtocolViolation);
        }
        for message in messages.drain(..) {
            if self.link.is_none() {
                break;
            }
            self.handle_message(now, message);
        }
        messages.clear();
        self.inbox = messages;
        // Report receipt a few times per window, so the server never stalls on a client
        // that keeps up.
        if let Some(link) = self.link.as_mut()
            && link.window > 0
            && link.received - link.reported >= u64::from(link.window / 4).max(1)
        {
            link.reported = link.received;
            self.outbox.push(Message::Received { bytes: link.received });
        }
    }

    /// Time passed: handle whatever deadline is due. Early or repeated calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = Some(now);
        for plugin in &mut self.plugins {
            if plugin.poll_timeout().is_some_and(|at| now >= at) {
                plugin.handle_timeout(now);
            }
        }
        if let Some(at) = self.reconnect_at
            && now >= at
        {
            self.reconnect_at = None;
            if self.wanted {
                self.events.push_back(ClientEvent::OpenTransport);
            }
        }
        let Some(link) = self.link.as_mut() else { return };
        if !link.welcomed {
            if now >= link.opened_at + self.config.handshake_timeout {
                self.fail(now, ProtocolError::Timeout("the handshake"), CloseReason::HandshakeTimeout);
            }
            return;
        }
        if let Some(sent) = link.ping_sent {
            if now >= sent + self.config.ping_timeout {
                self.fail(now, ProtocolError::Timeout("a pong"), CloseReason::IdleTimeout);
            }
        } else if now >= link.last_sent.min(link.last_heard) + link.ping_interval {
            let nonce = link.next_nonce;
            link.next_nonce = nonce.wrapping_add(1);
            link.ping_sent = Some(now);
            self.outbox.push(Message::Ping { nonce });
        }
    }

    // ---- outputs -----------------------------------------------------------------------

    /// The next frame to send to the server. Local edits made since the last call are
    /// gathered here, so that a burst of edits travels as one frame.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.push_local_changes();
        self.push_plugin_messages();
        self.flush_outbox();
        self.frames.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`ClientSession::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let link_deadline = self.link.as_ref().map(|link| {
            if !link.welcomed {
                link.opened_at + self.config.handshake_timeout
            } else if let Some(sent) = link.ping_sent {
                sent + self.config.ping_timeout
            } else {
                link.last_sent.min(link.last_heard) + link.ping_interval
            }
        });
        [link_deadline, self.reconnect_at]
            .into_iter()
            .chain(self.plugins.iter().map(|p| p.poll_timeout()))
            .flatten()
            .min()
    }

    // ---- internals ---------------------------------------------------------------------

    fn handle_message(&mut self, now: Instant, message: Message) {
        let welcomed = self.link.as_ref().is_some_and(|l| l.welcomed);
        match message {
            Message::Welcome { version, window_bytes, ping_interval_ms } if !welcomed => {
                if version != PROTOCOL_VERSION {
                    let error = ProtocolError::UnsupportedVersion {
                        ours: (PROTOCOL_VERSION, PROTOCOL_VERSION),
                        theirs: (version, version),
                    };
                    return self.fatal(error);
                }
                if let Some(link) = self.link.as_mut() {
                    link.welcomed = true;
                    link.window = window_bytes;
                    let asked = Duration::from_millis(u64::from(ping_interval_ms).max(100));
                    link.ping_interval = link.ping_interval.min(asked);
                }
                if self.documents.is_empty() {
                    self.attempts = 0;
                }
                self.set_status(ConnectionStatus::Connected);
                for plugin in &mut self.plugins {
                    plugin.on_connected(now);
                }
                let names: Vec<String> =
                    self.documents.iter().filter(|(_, d)| !d.refused).map(|(n, _)| n.clone()).collect();
                for name in names {
                    self.send_subscribe(&name);
                }
            }
            Message::Error { code: ErrorCode::UnsupportedVersion, .. } => {
                self.fatal(ProtocolError::UnsupportedVersion {
                    ours: (PROTOCOL_VERSION, PROTOCOL_VERSION),
                    theirs: (0, 0),
                });
            }
            Message::Error { doc: Some(slot), code: ErrorCode::ChangesVetoed, detail } if welcomed => {
                self.on_vetoed(slot, detail);
            }
            // A refusal of a token already replaced is not news: the new one is tried next.
            Message::Error { code: ErrorCode::Unauthorized, .. }
                if self.link.as_ref().is_some_and(|l| l.token_changed) => {}
            Message::Error { code: ErrorCode::Unauthorized, detail, .. } => {
                self.auth_failed = true;
                self.events.push_back(ClientEvent::AuthenticationFailed { detail });
            }
            Message::Error { doc: Some(slot), code: ErrorCode::Forbidden, detail } if welcomed => {
                self.on_forbidden(slot, detail);
            }
            Message::Error { doc: Some(slot), code: ErrorCode::ReadOnly, detail } if welcomed => {
                self.set_permission(slot, Permission::ReadOnly);
                let error = ProtocolError::Refused { code: ErrorCode::ReadOnly, detail };
                self.events.push_back(ClientEvent::Error(error));
            }
            Message::Error { code, detail, .. } => {
                self.events.push_back(ClientEvent::Error(ProtocolError::Refused { code, detail }));
            }
            Message::Close { reason: CloseReason::Unauthorized }
                if self.link.as_ref().is_some_and(|l| l.token_changed) =>
            {
                // Refused the token the application has since replaced: try the new one.
                self.auth_failed = false;
                self.events.push_back(ClientEvent::CloseTransport);
                self.drop_link();
                self.schedule_reconnect(now);
            }
            Message::Close { reason: reason @ CloseReason::Unauthorized } => {
                if !self.auth_failed {
                    self.auth_failed = true;
                    let detail = "the server refused the credential".to_owned();
                    self.events.push_back(ClientEvent::AuthenticationFailed { detail });
                }
                // The same token would be refused again: wait for `set_token`.
                self.fatal(ProtocolError::Closed(reason));
            }
            Message::Close { reason } => {
                self.events.push_back(ClientEvent::Error(ProtocolError::Closed(reason)));
                self.events.push_back(ClientEvent::CloseTransport);
                self.drop_link();
                self.schedule_reconnect(now);
            }
            Message::Ping { nonce } => self.outbox.push(Message::Pong { nonce }),
            Message::Pong { .. } => {}
            _ if !welcomed => self.fail(
                now,
                ProtocolError::UnexpectedMessage("pre-handshake"),
                CloseReason::ProtocolViolation,
            ),
            Message::Sync { doc, version, update } => self.on_sync(doc, version, &update),
            Message::Changes { doc, changes } => self.on_changes(now, doc, &changes),
            Message::Ack { doc, batch } => self.on_ack(doc, batch),
            Message::Access { doc, permission } => self.set_permission(doc, permission),
            Message::Plugin { plugin, doc, body } => self.on_plugin_message(now, plugin, doc, &body),
            Message::NeedChanges { doc, version } => {
                if let Some(entry) = self.by_slot(doc) {
                    entry.sent = version;
                }
            }
            _ => self.fail(
                now,
                ProtocolError::UnexpectedMessage("server-bound"),
                CloseReason::ProtocolViolation,
            ),
        }
    }

    fn by_slot(&mut self, slot: DocSlot) -> Option<&mut ClientDocument<D>> {
        let name = self.slots.get(&slot)?;
        self.documents.get_mut(&**name)
    }

    fn name_of(&self, slot: DocSlot) -> Option<Arc<str>> {
        self.slots.get(&slot).cloned()
    }

    fn on_sync(&mut self, slot: DocSlot, version: VersionVector, update: &[u8]) {
        // A slot from an earlier subscription under the same name: stale, ignore.
        let Some(name) = self.name_of(slot) else { return };
        let Some(entry) = self.documents.get_mut(&*name) else { return };
        // `HistoryTrimmed`: the update is the server's snapshot, and this copy holds edits the
        // server had not applied when it made it (edits made offline, or typed while the
        // snapshot was on its way), so the snapshot cannot replace it. Push those edits, then
        // ask again from this copy's version: the server answers with a snapshot that holds
        // them. The request leaves first but the server acts on it only once it has them.
        let retry = match entry.doc.import(update) {
            Ok(_) => false,
            Err(crate::Error::HistoryTrimmed) => true,
            Err(e) => return self.refuse_document(&name, e),
        };
        entry.synced = true;
        // Behind a trim: the import failed, or the server sent nothing because what it has
        // can only reach this copy as a snapshot once it holds this copy's own edits.
        entry.behind_trim = retry || !entry.doc.version().includes(&version);
        // A document synced: the connection works, so the next loss backs off from the
        // start (not at `Welcome`: a server that accepts and then fails every subscription
        // would otherwise be retried at full speed forever).
        self.attempts = 0;
        // The server holds `version`; everything else local is pushed at the next poll.
        // The server acknowledges the subscription as batch 0 once what it held at its first
        // `Sync` is stored (at once, unless it is durable and still committing). A later
        // `Sync` of the same subscription (after a history trim) holds nothing of ours that
        // our batches did not carry: their acknowledgements cover it.
        if entry.batches_sent == 0 && entry.in_flight.is_empty() {
            let own = version.get(self.peer).min(entry.doc.version().get(self.peer));
            entry.in_flight.push_back((0, own));
        }
        entry.sent = version;
        entry.asked = retry;
        if let Some(now) = self.last_now {
            for plugin in &mut self.plugins {
                plugin.on_subscribed(now, &name);
            }
        }
        let Some(entry) = self.documents.get_mut(&*name) else { return };
        if retry {
            let version = entry.doc.version().clone();
            self.outbox.push(Message::NeedChanges { doc: slot, version });
        } else {
            self.events.push_back(ClientEvent::Synced { document: name.clone() });
            self.events.push_back(ClientEvent::RemoteChanges { document: name });
        }
    }

    /// Our copy refuses what the server holds (a change from a clock too far ahead, a peer id
    /// reused with different content). Reconnecting would fetch the same changes again, so
    /// stop syncing this document and say so; the connection and the other documents carry
    /// on, and subscribing the document again retries.
    fn refuse_document(&mut self, name: &str, error: crate::Error) {
        let Some(document) = self.stop_syncing(name, true) else { return };
        self.events.push_back(ClientEvent::DocumentRefused { document, error });
    }

    /// Stop syncing `name` until the application subscribes it again; it keeps its local
    /// edits. `tell_server`: unsubscribe its slot (not when the server already dropped it).
    fn stop_syncing(&mut self, name: &str, tell_server: bool) -> Option<Arc<str>> {
        let entry = self.documents.get_mut(name)?;
        let (slot, was_synced, name) = (entry.slot, entry.synced, entry.name.clone());
        entry.synced = false;
        entry.refused = true;
        entry.batches_acked = entry.batches_sent;
        if tell_server {
            self.send_unsubscribe(slot);
        }
        if was_synced {
            self.plugins_unsubscribed(&name);
        }
        Some(name)
    }

    /// A server plugin vetoed changes of this document. This copy holds them and every later
    /// edit depends on them, so the server would take nothing more from it: stop syncing the
    /// document, as for a refused one.
    fn on_vetoed(&mut self, slot: DocSlot, reason: String) {
        let Some(name) = self.name_of(slot) else { return };
        let Some(document) = self.stop_syncing(&name, true) else { return };
        self.events.push_back(ClientEvent::ChangesVetoed { document, reason });
    }

    /// The server refused or evicted a subscription this client may not have: stop syncing
    /// the document (the server already forgot the slot).
    fn on_forbidden(&mut self, slot: DocSlot, detail: String) {
        let Some(name) = self.name_of(slot) else { return };
        let Some(name) = self.stop_syncing(&name, false) else { return };
        if let Some(entry) = self.documents.get_mut(&*name) {
            entry.permission = Permission::Denied;
            entry.in_flight.clear();
        }
        self.events
            .push_back(ClientEvent::PermissionChanged { document: name, permission: Permission::Denied });
        let error = ProtocolError::Refused { code: ErrorCode::Forbidden, detail };
        self.events.push_back(ClientEvent::Error(error));
    }

    /// The server says what this client may do with a document.
    fn set_permission(&mut self, slot: DocSlot, permission: Permission) {
        let Some(name) = self.name_of(slot) else { return };
        let Some(entry) = self.documents.get_mut(&*name) else { return };
        let before = entry.permission;
        if before == permission || permission == Permission::Denied {
            return;
        }
        entry.permission = permission;
        let stuck = entry.behind_trim && permission == Permission::ReadOnly;
        self.events.push_back(ClientEvent::PermissionChanged { document: name.clone(), permission });
        if stuck {
            // Its own edits can never reach the server, and the server's snapshot cannot be
            // merged without them: this copy can no longer follow the document.
            return self.refuse_document(&name, crate::Error::HistoryTrimmed);
        }
        if before == Permission::ReadOnly && permission == Permission::ReadWrite {
            // Changes sent while read-only were refused, and what the server holds is not
            // known here: subscribe afresh, its `Sync` says, and the rest is pushed.
            self.resubscribe(&name);
        }
    }

    /// Subscribe a document again on a new slot.
    fn resubscribe(&mut self, name: &str) {
        let Some(entry) = self.documents.get_mut(name) else { return };
        let old = entry.slot;
        let slot = DocSlot(self.next_slot);
        self.next_slot = self.next_slot.wrapping_add(1);
        entry.slot = slot;
        let shared = entry.name.clone();
        self.slots.remove(&old);
        self.slots.insert(slot, shared);
        self.send_unsubscribe(old);
        self.send_subscribe(name);
    }

    fn plugins_unsubscribed(&mut self, name: &Arc<str>) {
        if let Some(now) = self.last_now {
            for plugin in &mut self.plugins {
                plugin.on_unsubscribed(now, name);
            }
        }
    }

    fn on_plugin_message(&mut self, now: Instant, id: crate::PluginId, slot: Option<DocSlot>, body: &[u8]) {
        let document = match slot {
            Some(slot) => match self.name_of(slot) {
                Some(name) => Some(name),
                None => return, // a slot given up since: stale, like its changes
            },
            None => None,
        };
        let Some(plugin) = self.plugins.iter_mut().find(|p| p.id() == id) else {
            self.outbox.push(Message::Error {
                doc: slot,
                code: ErrorCode::UnknownPlugin,
                detail: format!("no plugin {} on this client", id.0),
            });
            return;
        };
        if let Err(error) = plugin.on_message(now, document.as_ref(), body) {
            let code = match error {
                PluginError::Malformed(_) => ErrorCode::Malformed,
                _ => ErrorCode::PluginRefused,
            };
            self.outbox.push(Message::Error { doc: slot, code, detail: error.to_string() });
            self.events.push_back(ClientEvent::Error(ProtocolError::Plugin { plugin: id, error }));
        }
    }

    /// Queue what the plugins have to say, for documents subscribed on this connection;
    /// dropped while disconnected (plugins send their state again on the next subscription).
    fn push_plugin_messages(&mut self) {
        let welcomed = self.link.as_ref().is_some_and(|l| l.welcomed);
        for plugin in &mut self.plugins {
            while let Some(message) = plugin.poll_message() {
                if !welcomed {
                    continue;
                }
                let slot = match &message.document {
                    None => None,
                    Some(name) => match self.documents.get(&**name) {
                        // A reader's presence would be refused: it stays here.
                        Some(entry) if !entry.refused && entry.permission == Permission::ReadWrite => {
                            Some(entry.slot)
                        }
                        _ => continue,
                    },
                };
                self.outbox.push(Message::Plugin { plugin: plugin.id(), doc: slot, body: message.body });
            }
        }
    }

    fn on_changes(&mut self, now: Instant, slot: DocSlot, bytes: &[u8]) {
        // Changes for a slot we no longer hold (unsubscribed, in flight): ignore.
        let Some(name) = self.name_of(slot) else { return };
        let Some(entry) = self.documents.get_mut(&*name) else { return };
        let changes = match entry.codec.decode(bytes) {
            Ok(changes) => changes,
            Err(e) => return self.fail(now, ProtocolError::Decode(e), CloseReason::ProtocolViolation),
        };
        let Some(entry) = self.documents.get_mut(&*name) else { return };
        if !entry.synced {
            return;
        }
        for change in &changes {
            entry.sent.extend_to(&change.span());
        }
        match entry.doc.apply_changes(changes) {
            Ok(status) => {
                if status.applied > 0 {
                    self.events.push_back(ClientEvent::RemoteChanges { document: name.clone() });
                }
                self.ask_if_behind(&name);
            }
            Err(e) => self.refuse_document(&name, e),
        }
    }

    fn ask_if_behind(&mut self, name: &str) {
        let Some(entry) = self.documents.get_mut(name) else { return };
        if entry.doc.pending_count() == 0 {
            entry.asked = false;
        } else if !entry.asked {
            entry.asked = true;
            let message = Message::NeedChanges { doc: entry.slot, version: entry.doc.version().clone() };
            self.outbox.push(message);
            self.events.push_back(ClientEvent::OutOfSync { document: entry.name.clone() });
        }
    }

    fn on_ack(&mut self, slot: DocSlot, batch: u32) {
        let Some(name) = self.name_of(slot) else { return };
        let Some(entry) = self.documents.get_mut(&*name) else { return };
        // Only an ack of a batch actually sent counts (counting with wrap-around).
        if batch.wrapping_sub(entry.batches_acked) <= entry.batches_sent.wrapping_sub(entry.batches_acked) {
            entry.batches_acked = batch;
            while let Some(&(sent, own)) = entry.in_flight.front() {
                if entry.batches_acked.wrapping_sub(sent) > u32::MAX / 2 {
                    break; // sent after the acknowledged batch (counting with wrap-around)
                }
                entry.acknowledged = entry.acknowledged.max(own);
                entry.in_flight.pop_front();
            }
        }
        self.report_saved(&name);
    }

    fn report_saved(&mut self, name: &str) {
        let saved = self.is_saved(name);
        let Some(entry) = self.documents.get_mut(name) else { return };
        if saved && !entry.saved {
            self.events.push_back(ClientEvent::Saved { document: entry.name.clone() });
        }
        entry.saved = saved;
    }

    fn push_local_changes(&mut self) {
        if !self.link.as_ref().is_some_and(|l| l.welcomed) {
            return;
        }
        let mut failures = Vec::new();
        let peer = self.peer;
        for (name, entry) in &mut self.documents {
            if !entry.synced
                || entry.permission != Permission::ReadWrite
                || entry.sent.includes(entry.doc.version())
                || entry
                    .failed_push
                    .as_ref()
                    .is_some_and(|(sent, version)| *sent == entry.sent && version == entry.doc.version())
            {
                continue;
            }
            // What the server lacks can include changes this copy holds only in its trimmed
            // history: a snapshot the server sent and then lost (it crashed before storing
            // them, or its store was restored from a backup). They cannot go as changes from
            // here; their authors send them again when they resubscribe. Send what follows
            // them, or this push would fail at every poll and this copy's edits never leave.
            let trimmed = entry.doc.trimmed_version();
            let since = if entry.sent.includes(trimmed) {
                Cow::Borrowed(&entry.sent)
            } else {
                let mut since = entry.sent.clone();
                since.merge(trimmed);
                Cow::Owned(since)
            };
            match entry.doc.changes_since(&since) {
                Ok(changes) if !changes.is_empty() => {
                    let batches = entry.codec.encode(&changes);
                    entry.sent.merge(entry.doc.version());
                    entry.saved = false;
                    for bytes in batches {
                        entry.batches_sent = entry.batches_sent.wrapping_add(1);
                        self.outbox.push(Message::Changes { doc: entry.slot, changes: bytes });
                    }
                    // Acknowledging the last batch confirms all of these.
                    entry.in_flight.push_back((entry.batches_sent, entry.doc.version().get(peer)));
                }
                Ok(_) => entry.sent.merge(entry.doc.version()),
                Err(e) => {
                    entry.failed_push = Some((entry.sent.clone(), entry.doc.version().clone()));
                    failures.push((name.clone(), e));
                }
            }
        }
        for (_, e) in failures {
            self.events.push_back(ClientEvent::Error(ProtocolError::Document(e)));
        }
    }

    fn flush_outbox(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        if let Some(link) = self.link.as_mut() {
            if let Some(now) = self.last_now {
                link.last_sent = link.last_sent.max(now);
            }
            self.frames.push_back(encode_frame(&self.outbox));
        }
        // Cleared, not replaced: the buffer is reused by the next frame.
        self.outbox.clear();
    }

    fn send_subscribe(&mut self, name: &str) {
        let Some(entry) = self.documents.get_mut(name) else { return };
        entry.synced = false;
        entry.batches_sent = 0;
        entry.batches_acked = 0;
        entry.in_flight.clear();
        entry.asked = false;
        // The server starts a fresh codec with each subscription, and says again if the
        // document is read-only.
        entry.codec = DocumentCodec::new();
        entry.permission = Permission::ReadWrite;
        let message = Message::Subscribe {
            doc: entry.slot,
            name: name.to_owned(),
            version: entry.doc.version().clone(),
        };
        self.outbox.push(message);
    }

    fn send_unsubscribe(&mut self, slot: DocSlot) {
        if self.link.as_ref().is_some_and(|l| l.welcomed) {
            self.outbox.push(Message::Unsubscribe { doc: slot });
        }
    }

    /// A recoverable failure: tell the server, drop the connection, reconnect.
    fn fail(&mut self, now: Instant, error: ProtocolError, reason: CloseReason) {
        self.events.push_back(ClientEvent::Error(error));
        if self.link.is_some() {
            self.outbox.push(Message::Close { reason });
            self.flush_outbox();
            self.events.push_back(ClientEvent::CloseTransport);
        }
        self.drop_link();
        self.schedule_reconnect(now);
    }

    /// An unrecoverable failure: no retry.
    fn fatal(&mut self, error: ProtocolError) {
        self.events.push_back(ClientEvent::Error(error));
        if self.link.is_some() {
            self.events.push_back(ClientEvent::CloseTransport);
        }
        self.drop_link();
        self.wanted = false;
        self.reconnect_at = None;
        self.set_status(ConnectionStatus::Error);
    }

    fn drop_link(&mut self) {
        let was_welcomed = self.link.take().is_some_and(|l| l.welcomed);
        if was_welcomed && let Some(now) = self.last_now {
            for plugin in &mut self.plugins {
                plugin.on_disconnected(now);
            }
        }
        self.outbox.clear();
        for entry in self.documents.values_mut() {
            entry.synced = false;
            // Unacknowledged work is resent after the next `Sync`, which says what the server has.
            entry.batches_acked = entry.batches_sent;
            entry.in_flight.clear();
            entry.asked = false;
        }
    }

    fn schedule_reconnect(&mut self, now: Instant) {
        if !self.wanted {
            self.set_status(ConnectionStatus::Disconnected);
            return;
        }
        self.attempts = self.attempts.saturating_add(1);
        if self.config.max_reconnect_attempts.is_some_and(|max| self.attempts > max) {
            self.wanted = false;
            self.reconnect_at = None;
            self.set_status(ConnectionStatus::Disconnected);
            return;
        }
        self.reconnect_at = Some(now + self.backoff(self.attempts));
        self.set_status(ConnectionStatus::Reconnecting);
    }

    /// Exponential backoff with "equal jitter": half the delay is fixed, half random, so
    /// attempts spread out but never come back sooner than half the nominal delay.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let initial = self.config.reconnect_initial_delay.as_millis() as u64;
        let max = self.config.reconnect_max_delay.as_millis() as u64;
        let nominal = initial.saturating_mul(1u64 << attempt.saturating_sub(1).min(32)).min(max);
        let half = nominal / 2;
        Duration::from_millis(half + self.rng.up_to(nominal - half))
    }

    fn set_status(&mut self, status: ConnectionStatus) {
        if self.status != status {
            self.status = status;
            self.events.push_back(ClientEvent::StatusChanged(status));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let config =
            ClientConfig::default().with_reconnect(Duration::from_millis(100), Duration::from_secs(2), None);
        let mut client = ClientSession::new(PeerId::new(1), config.with_rng_seed(7));
        for attempt in 1..20u32 {
            let nominal = (100u64 << (attempt - 1).min(20)).min(2000);
            let delay = client.backoff(attempt).as_millis() as u64;
            assert!(delay >= nominal / 2 && delay <= nominal, "attempt {attempt}: {delay} ms vs {nominal}");
        }
    }
}
