//! What the fuzz targets share: each target is one call into this harness, so that a crash
//! reproduces from a plain test too (`harness::server_session(&bytes)`).
//!
//! The session targets run a small network in memory (one server, a few real clients, frame
//! queues in between) driven by a script the fuzzer writes: connect, deliver, edit, let time
//! pass, disconnect; and on the side under test, frames that are valid, mutated or random.
//! Every frame a session sends must decode: a session never emits garbage, whatever it got.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use crdt_sync::auth::{AuthDecision, AuthRequest, Authenticator, Identity, Permission};
use crdt_sync::wire::{FrameReader, WireLimits, decode_frame, encode_frame, length_prefixed};
use crdt_sync::{
    ClientConfig, ClientEvent, ClientSession, ConnectionId, ConnectionStatus, Document, MemoryStorage,
    PeerId, Server, ServerConfig, perform_storage,
};

const DOCS: [&str; 2] = ["a", "b"];

/// The fuzzers' clock: a fixed epoch moved only by the script.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    #[allow(clippy::disallowed_methods)] // the harness's only reading; time then moves by script
    *EPOCH.get_or_init(Instant::now)
}

/// Any bytes into the frame decoder and the stream reader; what decodes re-encodes to the
/// same messages.
pub fn decode_frame_bytes(data: &[u8]) {
    let limits = WireLimits::default();
    if let Ok(messages) = decode_frame(data, &limits) {
        let again = decode_frame(&encode_frame(&messages), &limits).expect("a re-encoded frame decodes");
        assert_eq!(again, messages, "re-encoding changed the messages");
    }
    // The same bytes as a stream, in chunks whose sizes the input picks.
    let mut reader = FrameReader::new(&limits);
    let mut rest = data;
    while !rest.is_empty() {
        let take = usize::from(rest[0] % 17) + 1;
        let (chunk, tail) = rest.split_at(take.min(rest.len()));
        reader.push(chunk);
        rest = tail;
        while let Ok(Some(frame)) = reader.next_frame() {
            let _ = decode_frame(&frame, &limits);
        }
    }
    // And a length-prefixed copy reads back whole.
    let mut reader = FrameReader::new(&limits);
    reader.push(&length_prefixed(data));
    if data.len() <= limits.max_frame_bytes {
        assert_eq!(reader.next_frame().ok().flatten().as_deref(), Some(data));
    }
}

/// Any bytes into every document decoder: never a panic, and a failed import leaves the
/// document exactly as it was.
pub fn decode_document_bytes(data: &[u8]) {
    let _ = Document::load(data, PeerId::new(9));
    let mut doc = Document::new(PeerId::new(1));
    doc.transact().text("text").insert(0, "seed").expect("inserting into a fresh text");
    let before = doc.encode();
    if doc.import(data).is_err() {
        assert_eq!(doc.encode(), before, "a failed import changed the document");
    }
}

/// One client of the in-memory network.
struct Peer {
    session: ClientSession,
    connection: Option<ConnectionId>,
    /// Frames on their way to the server, and from it.
    up: VecDeque<Vec<u8>>,
    down: VecDeque<Vec<u8>>,
}

/// A server, its storage and a few clients, with frame queues in between.
struct Net {
    now: Instant,
    server: Server,
    storage: Option<MemoryStorage>,
    config: ServerConfig,
    peers: Vec<Peer>,
    limits: WireLimits,
    /// A client the server lets only read `DOCS[0]` and not use `DOCS[1]`.
    reader: Option<usize>,
    /// The reader's copy of `DOCS[0]` gave up following the server: it holds edits it may
    /// not push and the server trimmed the history they would merge into.
    reader_gave_up: bool,
}

/// Read-only and denied access for the client whose token is `reader`; full access for
/// everyone else.
#[derive(Debug)]
struct Roles;

impl Authenticator for Roles {
    fn authenticate(&mut self, _now: Instant, request: &AuthRequest<'_>) -> AuthDecision {
        AuthDecision::Accept(match request.token {
            b"reader" => Identity::new("reader")
                .with_default(Permission::ReadOnly)
                .with_rule(DOCS[1], Permission::Denied),
            _ => Identity::new("writer"),
        })
    }
}

impl Net {
    fn new(clients: usize, durable: bool, compact: bool) -> Net {
        let mut config = ServerConfig::default().with_ack_delay(Duration::from_millis(5));
        if durable {
            config = config.with_durable(Duration::from_secs(5));
        }
        if compact {
            config = config.with_compact_after_ops(Some(8));
        }
        let storage = durable.then(|| MemoryStorage::new(config.peer, config.document.clone()));
        let now = epoch();
        let peers = (0..clients)
            .map(|i| {
                let peer = PeerId::new(1 + i as u64);
                let config = ClientConfig::default().with_rng_seed(i as u64).with_reconnect(
                    Duration::from_millis(10),
                    Duration::from_millis(100),
                    None,
                );
                let mut session = ClientSession::new(peer, config);
                for name in DOCS {
                    session.subscribe(name, Document::new(peer));
                }
                session.connect(now);
                Peer { session, connection: None, up: VecDeque::new(), down: VecDeque::new() }
            })
            .collect();
        Net {
            now,
            server: Server::in_memory(config.clone()),
            storage,
            config,
            peers,
            limits: WireLimits::default(),
            reader: None,
            reader_gave_up: false,
        }
    }

    /// Put the server behind [`Roles`], with the last client a reader.
    fn with_reader(mut self) -> Net {
        let last = self.peers.len() - 1;
        self.server.set_authenticator(Roles);
        self.peers[last].session.set_token(self.now, b"reader".to_vec());
        self.reader = Some(last);
        self
    }

    /// Drain every session's output into the queues; every frame must decode.
    fn drain(&mut self) {
        for (i, peer) in self.peers.iter_mut().enumerate() {
            while let Some(frame) = peer.session.poll_transmit() {
                decode_frame(&frame, &self.limits).expect("a client sent a frame that does not decode");
                if peer.connection.is_some() {
                    peer.up.push_back(frame);
                }
            }
            while let Some(event) = peer.session.poll_event() {
                match event {
                    ClientEvent::OpenTransport => {
                        peer.connection = Some(self.server.accept(self.now));
                        peer.session.handle_connected(self.now);
                    }
                    ClientEvent::CloseTransport => {
                        if let Some(id) = peer.connection.take() {
                            self.server.handle_disconnected(self.now, id);
                        }
                        peer.up.clear();
                        peer.down.clear();
                    }
                    ClientEvent::DocumentRefused { document, error: crdt_sync::Error::HistoryTrimmed }
                        if Some(i) == self.reader && &*document == DOCS[0] =>
                    {
                        self.reader_gave_up = true;
                    }
                    _ => {}
                }
            }
        }
        // Storage answers at once: what the server asked for is what it gets.
        if let Some(storage) = self.storage.as_mut() {
            while let Some(request) = self.server.poll_storage() {
                let outcome = perform_storage(storage, request);
                self.server.handle_storage(self.now, outcome);
            }
        }
        while let Some(transmit) = self.server.poll_transmit() {
            decode_frame(&transmit.frame, &self.limits)
                .expect("the server sent a frame that does not decode");
            if let Some(peer) = self.peers.iter_mut().find(|p| p.connection == Some(transmit.connection)) {
                peer.down.push_back(transmit.frame);
            }
        }
        while self.server.poll_event().is_some() {}
    }

    fn deliver_up(&mut self, i: usize) {
        let peer = &mut self.peers[i];
        if let (Some(id), Some(frame)) = (peer.connection, peer.up.pop_front()) {
            self.server.handle_input(self.now, id, &frame);
        }
    }

    fn deliver_down(&mut self, i: usize) {
        let peer = &mut self.peers[i];
        if let Some(frame) = peer.down.pop_front() {
            peer.session.handle_input(self.now, &frame);
        }
    }

    fn tick(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        for peer in &mut self.peers {
            peer.session.handle_timeout(self.now);
        }
        self.server.handle_timeout(self.now);
    }

    fn disconnect(&mut self, i: usize) {
        let peer = &mut self.peers[i];
        if let Some(id) = peer.connection.take() {
            self.server.handle_disconnected(self.now, id);
            peer.session.handle_disconnected(self.now);
            peer.up.clear();
            peer.down.clear();
        }
    }

    /// The server crashes and comes back from storage (or empty, in memory).
    fn restart_server(&mut self) {
        for i in 0..self.peers.len() {
            self.disconnect(i);
        }
        self.server = Server::in_memory(self.config.clone());
        if self.reader.is_some() {
            self.server.set_authenticator(Roles);
        }
    }

    fn edit(&mut self, i: usize, kind: u8, at: u16, value: u16) {
        let Some(doc) = self.peers[i].session.document_mut(DOCS[usize::from(value) % 2]) else { return };
        edit_document(doc, kind, at, value);
    }

    /// Let everything settle on a healthy network: every client connected and saved,
    /// nothing in flight. False if it does not within a bounded number of rounds.
    /// The reader is connected and holds what the server has of the document it may read
    /// (or gave that copy up).
    fn reader_caught_up(&self) -> bool {
        let Some(reader) = self.reader else { return true };
        let session = &self.peers[reader].session;
        let caught_up = match (self.server.document(DOCS[0]), session.document(DOCS[0])) {
            (Some(server), Some(copy)) => copy.version().includes(server.version()),
            _ => true,
        };
        session.status() == ConnectionStatus::Connected && (caught_up || self.reader_gave_up)
    }

    fn settle(&mut self) -> bool {
        for _ in 0..400 {
            self.drain();
            let mut moved = false;
            for i in 0..self.peers.len() {
                while !self.peers[i].up.is_empty() || !self.peers[i].down.is_empty() {
                    moved = true;
                    self.deliver_up(i);
                    self.drain();
                    self.deliver_down(i);
                    self.drain();
                }
            }
            // A reader's own edits are never saved, and its denied document never syncs.
            let saved = self
                .peers
                .iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != self.reader)
                .all(|(_, p)| DOCS.iter().all(|d| p.session.is_saved(d)));
            if !moved && saved && self.reader_caught_up() {
                return true;
            }
            // Reconnect timers, pings, acks that wait for company.
            self.tick(50);
        }
        false
    }
}

/// One edit of any container type, placed by `at`, shaped by `value`. Edits that do not
/// apply (an index past the end, say) are skipped: only their effect on convergence matters.
fn edit_document(doc: &mut Document, kind: u8, at: u16, value: u16) {
    let (at, value_index) = (usize::from(at), usize::from(value));
    let text_len = doc.text("text").len();
    let list_len = doc.list::<u16>("list").len();
    let moves_len = doc.movable_list::<u16>("moves").len();
    let mut txn = doc.transact();
    let _ = match kind % 8 {
        0 => txn.text("text").insert(at % (text_len + 1), &format!("{value:x}")),
        1 if text_len > 0 => {
            let pos = at % text_len;
            txn.text("text").delete(pos, (value_index % 4).min(text_len - pos))
        }
        2 if value.is_multiple_of(5) => {
            txn.map::<String, u16>("map").remove(&format!("k{}", at % 8)).map(drop)
        }
        2 => txn.map::<String, u16>("map").insert(&format!("k{}", at % 8), &value),
        3 => txn.counter("count").add(i64::from(value) - 32_768),
        4 if list_len > 0 && value.is_multiple_of(3) => txn.list::<u16>("list").delete(at % list_len, 1),
        4 => txn.list::<u16>("list").insert(at % (list_len + 1), &value),
        5 if moves_len > 1 && value.is_multiple_of(2) => {
            txn.movable_list::<u16>("moves").move_item(at % moves_len, value_index % moves_len)
        }
        5 if moves_len > 0 && value.is_multiple_of(3) => {
            txn.movable_list::<u16>("moves").set(at % moves_len, &value)
        }
        5 => txn.movable_list::<u16>("moves").insert(at % (moves_len + 1), &value).map(drop),
        6 => txn.register::<u16>("register").set(&value),
        _ if value.is_multiple_of(2) => txn.or_set::<u16>("set").remove(&((at % 16) as u16)).map(drop),
        _ => txn.or_set::<u16>("set").insert(&((at % 16) as u16)),
    };
}

/// Mutate `frame` as the script says: flip, cut, splice or extend.
fn mutate(frame: &mut Vec<u8>, u: &mut Unstructured<'_>) {
    let Ok(how) = u.int_in_range(0u8..=3) else { return };
    let at = u.int_in_range(0..=frame.len()).unwrap_or(0);
    match how {
        0 if at < frame.len() => frame[at] ^= u.arbitrary::<u8>().unwrap_or(1).max(1),
        1 => frame.truncate(at),
        2 => {
            let junk: Vec<u8> = u.arbitrary().unwrap_or_default();
            frame.splice(at..at, junk);
        }
        _ => frame.extend_from_slice(u.bytes(u.len().min(16)).unwrap_or_default()),
    }
}

/// Which side the script attacks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Bad frames reach the server; the clients are honest.
    Server,
    /// Bad frames reach client 0; the server is honest.
    Client,
}

/// A script of network steps with valid, mutated and random frames on `side`. Nothing may
/// panic, every frame sent decodes; when the script ends and the network heals, the honest
/// parties converge.
pub fn session_script(data: &[u8], side: Side) {
    let mut u = Unstructured::new(data);
    let flags = u.arbitrary::<u8>().unwrap_or(0);
    let mut net = Net::new(2 + usize::from(flags & 1), flags & 2 != 0, flags & 4 != 0);
    if flags & 16 != 0 {
        net = net.with_reader();
    }
    net.drain();
    let mut tampered = false;
    for _ in 0..512 {
        if u.is_empty() {
            break;
        }
        let Ok(op) = u.int_in_range(0u8..=9) else { break };
        let i = usize::from(u.arbitrary::<u8>().unwrap_or(0)) % net.peers.len();
        match op {
            0 | 1 => net.deliver_up(i),
            2 | 3 => net.deliver_down(i),
            4 => {
                let (kind, at, value) =
                    (u.arbitrary().unwrap_or(0), u.arbitrary().unwrap_or(0), u.arbitrary().unwrap_or(0));
                net.edit(i, kind, at, value);
            }
            5 => net.tick(u.int_in_range(0..=20_000).unwrap_or(0)),
            6 => net.disconnect(i),
            7 | 8 => {
                // A valid frame, mutated, to the side under test.
                tampered = true;
                let queue = match side {
                    Side::Server => &mut net.peers[i].up,
                    Side::Client => &mut net.peers[0].down,
                };
                if let Some(mut frame) = queue.pop_front() {
                    mutate(&mut frame, &mut u);
                    queue.push_front(frame);
                }
            }
            _ => {
                tampered = true;
                let len = u.int_in_range(0..=64).unwrap_or(0);
                let junk = u.bytes(len.min(u.len())).unwrap_or_default().to_vec();
                match side {
                    Side::Server => net.peers[i].up.push_front(junk),
                    Side::Client => net.peers[0].down.push_front(junk),
                }
            }
        }
        net.drain();
        if op == 6 && flags & 8 != 0 && i == 0 {
            net.restart_server();
            net.drain();
        }
    }
    // Heal: honest traffic only from here. A tampered frame that still decodes may carry
    // forged changes that a replica rightly refuses; without tampering, everyone converges.
    let settled = net.settle();
    if !tampered {
        assert!(settled, "the network healed but did not settle");
        assert_converged(&net);
    }
}

/// Every client holds exactly what the server holds; nothing of a reader's reached the
/// server, and the reader holds everything the server has of the document it may read.
fn assert_converged(net: &Net) {
    if let Some(reader) = net.reader {
        let peer = net.peers[reader].session.peer();
        for name in DOCS {
            let held = net.server.document(name).map_or(0, |d| d.version().get(peer));
            assert_eq!(held, 0, "a reader's edits of {name} reached the server");
        }
        if let (Some(server), Some(copy), false) =
            (net.server.document(DOCS[0]), net.peers[reader].session.document(DOCS[0]), net.reader_gave_up)
        {
            assert!(copy.version().includes(server.version()), "the reader lacks what the server has");
        }
    }
    for name in DOCS {
        let server = net.server.document(name).map(|d| d.encode_state());
        for (i, peer) in net.peers.iter().enumerate() {
            if Some(i) == net.reader {
                continue;
            }
            let client = peer.session.document(name).map(|d| d.encode_state());
            assert_eq!(client, server, "client {i} differs from the server on {name}");
        }
    }
}

/// One step of the convergence target.
#[derive(Arbitrary, Debug, Clone)]
pub enum Action {
    /// Edit a client's copy of a document.
    Edit { client: u8, kind: u8, at: u16, value: u16 },
    /// Deliver one frame up or down on a client's connection.
    Deliver { client: u8, up: bool },
    /// Let time pass.
    Tick { ms: u16 },
    /// A client loses its connection (it reconnects by itself).
    Disconnect { client: u8 },
    /// The server crashes and comes back.
    RestartServer,
    /// A client replaces its copy with a copy loaded from its own encoding.
    Reload { client: u8 },
    /// A client forks its copy at an earlier version (a new replica), edits the fork, and
    /// merges the fork's edit back.
    Fork { client: u8, back: u8, kind: u8, at: u16, value: u16 },
    /// Two clients exchange what they lack directly, past the server.
    SyncPair { a: u8, b: u8 },
}

/// A run of the convergence target.
#[derive(Arbitrary, Debug)]
pub struct Run {
    pub clients: u8,
    pub durable: bool,
    pub compact: bool,
    pub actions: Vec<Action>,
}

/// Replicas edit any type while the network misbehaves; once it heals, every replica, the
/// server's included, is the same, and every edit a client made is in it.
pub fn convergence(run: Run) {
    let mut net = Net::new(2 + usize::from(run.clients % 3), run.durable, run.compact);
    net.drain();
    // Each client's versions of each document so far, for forks at an earlier one.
    let mut history: Vec<[Vec<crdt_sync::Frontier>; 2]> = vec![[Vec::new(), Vec::new()]; net.peers.len()];
    let mut forks = 0u64;
    for action in run.actions.into_iter().take(400) {
        let n = net.peers.len();
        match action {
            Action::Edit { client, kind, at, value } => {
                let i = usize::from(client) % n;
                net.edit(i, kind, at, value);
                let d = usize::from(value) % 2;
                if let Some(doc) = net.peers[i].session.document(DOCS[d]) {
                    history[i][d].push(doc.frontier().clone());
                }
            }
            Action::Deliver { client, up: true } => net.deliver_up(usize::from(client) % n),
            Action::Deliver { client, up: false } => net.deliver_down(usize::from(client) % n),
            Action::Tick { ms } => net.tick(u64::from(ms)),
            Action::Disconnect { client } => net.disconnect(usize::from(client) % n),
            Action::RestartServer => net.restart_server(),
            Action::Fork { client, back, kind, at, value } => {
                let i = usize::from(client) % n;
                let d = usize::from(value) % 2;
                let name = DOCS[d];
                forks += 1;
                let history = &history[i][d];
                let Some(doc) = net.peers[i].session.document_mut(name) else { continue };
                let frontier = if history.is_empty() {
                    doc.frontier().clone()
                } else {
                    history[history.len() - 1 - usize::from(back) % history.len()].clone()
                };
                if let Ok(mut fork) = doc.fork_at(&frontier, PeerId::new(1000 + forks)) {
                    edit_document(&mut fork, kind, at, value);
                    let update = fork.export_since(doc.version()).expect("a fork exports what it added");
                    doc.import(&update).expect("a fork's edit merges back");
                }
            }
            Action::SyncPair { a, b } => {
                let (a, b) = (usize::from(a) % n, usize::from(b) % n);
                for name in DOCS {
                    for (from, to) in [(a, b), (b, a)] {
                        let Some(since) = net.peers[to].session.document(name).map(|d| d.version().clone())
                        else {
                            continue;
                        };
                        let Some(Ok(update)) =
                            net.peers[from].session.document(name).map(|d| d.export_since(&since))
                        else {
                            continue;
                        };
                        if let Some(doc) = net.peers[to].session.document_mut(name) {
                            // A replica may lack what the update builds on (trimmed history):
                            // it waits or is refused; the server brings the rest.
                            let _ = doc.import(&update);
                        }
                    }
                }
            }
            Action::Reload { client } => {
                let i = usize::from(client) % n;
                let session = &mut net.peers[i].session;
                let peer = session.peer();
                for name in DOCS {
                    let Some(doc) = session.document(name) else { continue };
                    let copy =
                        Document::load(&doc.encode(), peer).expect("a document loads its own encoding");
                    assert_eq!(copy.encode_state(), doc.encode_state(), "reload changed the state");
                    *session.document_mut(name).expect("subscribed") = copy;
                }
            }
        }
        net.drain();
    }
    assert!(net.settle(), "the network healed but did not settle");
    assert_converged(&net);
}

/// Seeds for the decoders: every frame of an honest session (handshake, subscriptions, a
/// late joiner's sync, changes, acknowledgements, pings) on a network that runs until quiet.
pub fn captured_frames() -> Vec<Vec<u8>> {
    let mut net = Net::new(3, true, false);
    let mut frames = Vec::new();
    net.drain();
    for step in 0..60u16 {
        net.edit(usize::from(step % 3), (step % 4) as u8, step * 7, step);
        net.drain();
        for i in 0..3 {
            frames.extend(net.peers[i].up.iter().cloned());
            frames.extend(net.peers[i].down.iter().cloned());
            net.deliver_up(i);
            net.drain();
            net.deliver_down(i);
            net.drain();
        }
        net.tick(u64::from(step) * 40);
    }
    assert!(net.settle(), "an honest session settles");
    frames.sort();
    frames.dedup();
    frames
}

/// Seeds for the document decoder: a document typed from `text` (a trace fragment, say) in
/// `steps` transactions, as a whole encoding, a state snapshot, and each step's update.
pub fn document_seeds(text: &str, steps: usize) -> Vec<Vec<u8>> {
    let mut doc = Document::new(PeerId::new(3));
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    for chunk in chars.chunks(chars.len().div_ceil(steps.max(1)).max(1)) {
        let before = doc.version().clone();
        let at = doc.text("text").len();
        let _ = doc.transact().text("text").insert(at / 2, &chunk.iter().collect::<String>());
        if let Ok(update) = doc.export_since(&before) {
            out.push(update);
        }
    }
    let _ = doc.transact().map::<String, u16>("map").insert(&"key".to_owned(), &7);
    let _ = doc.transact().counter("count").add(-3);
    out.push(doc.encode());
    out.push(doc.encode_state());
    out
}
