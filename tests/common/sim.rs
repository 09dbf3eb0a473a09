//! A deterministic network of one server and N clients, driven by a simulated clock.
//!
//! Every transport is an ordered, reliable link (like TCP or a WebSocket) with its own
//! latency; links reorder against each other, drop everything in flight when they break,
//! and may be broken at random, partitioned for a while, or lost all at once when the server
//! restarts from its store. Time jumps straight to the next delivery or deadline, so a
//! simulated minute costs microseconds. Same seed, same run.
//!
//! With a durable server ([`ServerConfig::durable`]) the simulator plays the runtime's
//! storage too: requests reach a [`MemoryStorage`] after a simulated disk latency, and a
//! restart is a crash: the server comes back with nothing in memory, commits in flight
//! either land or not (at random), and documents load again from storage.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant};

use crdt_sync::{
    ClientConfig, ClientEvent, ClientSession, ConnectionId, ConnectionStatus, Document, DocumentStore,
    DurableStorage, MemoryStorage, MemoryStore, PeerId, Server, ServerConfig, ServerEvent, StorageRequest,
    perform_storage,
};

/// SplitMix64, so that the simulator depends on nothing but its seed.
#[derive(Clone, Debug)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> Self {
        SimRng(seed ^ 0x5EED_0000_0000_0001)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// What can go wrong on the network, per simulated step.
#[derive(Clone, Debug)]
pub struct Faults {
    /// One-way latency range of a frame, in milliseconds.
    pub latency_ms: (u64, u64),
    /// Chance per delivered frame that its link breaks right after.
    pub break_link: f64,
    /// Chance per delivered frame that the receiving client gets partitioned for a while.
    pub partition: f64,
    /// Chance per delivered frame that the server restarts.
    pub restart_server: f64,
    /// Chance per delivered frame that old changes of the client reach the server again (a
    /// stale copy from an earlier connection or another path): everything the client made
    /// since a random earlier point, applied to the server's document once more.
    pub duplicate: f64,
}

impl Faults {
    /// A perfect network with a little latency.
    pub fn none() -> Self {
        Faults { latency_ms: (1, 5), break_link: 0.0, partition: 0.0, restart_server: 0.0, duplicate: 0.0 }
    }

    /// A hostile network.
    pub fn heavy() -> Self {
        Faults {
            latency_ms: (1, 80),
            break_link: 0.02,
            partition: 0.005,
            restart_server: 0.003,
            duplicate: 0.01,
        }
    }
}

#[derive(Debug)]
enum Delivery {
    /// The transport a client asked for opens (or fails, if the server is down then).
    Open {
        client: usize,
    },
    /// A frame on link `link`.
    ToServer {
        link: u64,
        frame: Vec<u8>,
    },
    ToClient {
        link: u64,
        frame: Vec<u8>,
    },
    /// The other side closed link `link` (after its last frame).
    ClosedByClient {
        link: u64,
    },
    ClosedByServer {
        link: u64,
    },
    /// A storage request reaches the disk; the answer goes back to the server of
    /// `generation` (lost if it crashed since).
    Storage {
        generation: u32,
        request: StorageRequest,
    },
}

#[derive(Debug)]
struct Link {
    client: usize,
    connection: ConnectionId,
    /// Deliveries on a link keep their order: each is due no earlier than the one before.
    last_up: Instant,
    last_down: Instant,
}

/// One simulated client.
pub struct SimClient {
    pub session: ClientSession,
    link: Option<u64>,
    partitioned_until: Option<Instant>,
    /// The client reads nothing until then (a stalled reader): frames to it wait.
    stalled_until: Option<Instant>,
    /// Gone without a word (a laptop lid closed): never driven again, nothing reaches it,
    /// and the server is not told.
    vanished: bool,
    /// Frames and bytes this client sent (`up`) and the server sent to it (`down`), counted
    /// when sent, lost ones included.
    pub wire: WireStats,
    /// Frames and bytes that reached this client.
    pub frames_received: u64,
    pub bytes_received: u64,
}

impl SimClient {
    /// A client to add to [`Sim::clients`]; call `connect` on it, then [`Sim::drain`].
    pub fn new(session: ClientSession) -> Self {
        SimClient {
            session,
            link: None,
            partitioned_until: None,
            stalled_until: None,
            vanished: false,
            wire: WireStats::default(),
            frames_received: 0,
            bytes_received: 0,
        }
    }
}

/// Counts of what crossed the network.
#[derive(Clone, Debug, Default)]
pub struct WireStats {
    pub frames_up: u64,
    pub bytes_up: u64,
    pub frames_down: u64,
    pub bytes_down: u64,
}

/// What [`Sim::set_server_setup`] keeps.
type ServerSetup = Box<dyn Fn(&mut Server)>;

/// The simulated network.
pub struct Sim {
    pub now: Instant,
    pub rng: SimRng,
    pub faults: Faults,
    server: Option<Server>,
    server_config: ServerConfig,
    server_down_until: Option<Instant>,
    /// The store while the server is down.
    parked_store: Option<MemoryStore>,
    pub clients: Vec<SimClient>,
    links: BTreeMap<u64, Link>,
    next_link: u64,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: BTreeMap<u64, Delivery>,
    next_seq: u64,
    /// What crossed the network, all clients together (per client: [`SimClient::wire`]).
    pub stats: WireStats,
    pub server_events: Vec<ServerEvent>,
    pub client_events: Vec<(usize, ClientEvent)>,
    pub restarts: u32,
    /// Applied to the server now and after every restart (plugins, say).
    server_setup: Option<ServerSetup>,
    /// A durable server's disk.
    pub storage: Option<MemoryStorage>,
    /// How long a storage request takes (with a durable server).
    pub storage_latency_ms: (u64, u64),
    /// Every storage answer carries the generation of the server that asked: bumped at
    /// each restart.
    server_generation: u32,
    /// Times a crash found a client saved whose own changes storage did not hold: must
    /// stay empty (the durability contract).
    pub lost_acknowledged: Vec<String>,
}

impl Sim {
    /// A server and `clients` clients, each subscribed to `documents` (empty documents) and
    /// connecting at once.
    pub fn new(seed: u64, clients: usize, documents: &[&str], faults: Faults) -> Self {
        Self::with_configs(seed, clients, documents, faults, ServerConfig::default(), |_| {
            ClientConfig::default()
        })
    }

    pub fn with_configs(
        seed: u64,
        clients: usize,
        documents: &[&str],
        faults: Faults,
        server_config: ServerConfig,
        client_config: impl Fn(usize) -> ClientConfig,
    ) -> Self {
        #[allow(clippy::disallowed_methods)] // the simulation's epoch; everything after is simulated
        let now = Instant::now();
        let mut rng = SimRng::new(seed);
        let storage = server_config
            .durable
            .then(|| MemoryStorage::new(server_config.peer, server_config.document.clone()));
        let mut sim = Sim {
            now,
            faults,
            server: Some(Server::in_memory(server_config.clone())),
            storage,
            storage_latency_ms: (2, 60),
            server_generation: 0,
            lost_acknowledged: Vec::new(),
            server_config,
            server_down_until: None,
            parked_store: None,
            clients: Vec::new(),
            links: BTreeMap::new(),
            next_link: 0,
            queue: BinaryHeap::new(),
            pending: BTreeMap::new(),
            next_seq: 0,
            stats: WireStats::default(),
            server_events: Vec::new(),
            client_events: Vec::new(),
            restarts: 0,
            server_setup: None,
            rng: SimRng::new(0),
        };
        for i in 0..clients {
            let peer = PeerId::new(1 + i as u64);
            let config =
                client_config(i).with_rng_seed(rng.next_u64()).with_client_name(format!("client{i}"));
            let mut session = ClientSession::new(peer, config);
            for name in documents {
                session.subscribe(*name, Document::new(peer));
            }
            sim.clients.push(SimClient::new(session));
        }
        sim.rng = rng;
        for i in 0..clients {
            sim.clients[i].session.connect(sim.now);
        }
        sim.drain();
        sim
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server is up")
    }

    pub fn server_mut(&mut self) -> &mut Server {
        self.server.as_mut().expect("server is up")
    }

    /// Set the server up with `setup` (add plugins, say), now and after every restart.
    pub fn set_server_setup(&mut self, setup: impl Fn(&mut Server) + 'static) {
        if let Some(server) = self.server.as_mut() {
            setup(server);
        }
        self.server_setup = Some(Box::new(setup));
        self.drain();
    }

    /// The client disappears without a word: it is never driven again, nothing reaches it,
    /// and the server only notices by its timeouts.
    pub fn vanish_client(&mut self, client: usize) {
        self.clients[client].vanished = true;
    }

    pub fn server_is_up(&self) -> bool {
        self.server.is_some()
    }

    pub fn client(&self, i: usize) -> &ClientSession {
        &self.clients[i].session
    }

    /// Add a client (a late joiner); it connects at once. Returns its index.
    pub fn add_client(&mut self, session: ClientSession) -> usize {
        self.clients.push(SimClient::new(session));
        let index = self.clients.len() - 1;
        let now = self.now;
        self.clients[index].session.connect(now);
        self.drain();
        index
    }

    /// A client, for commands; call [`Sim::drain`] after.
    pub fn client_mut(&mut self, i: usize) -> &mut ClientSession {
        &mut self.clients[i].session
    }

    /// The client stops reading for `duration`: frames to it wait in the network.
    pub fn stall_client(&mut self, client: usize, duration: Duration) {
        self.clients[client].stalled_until = Some(self.now + duration);
    }

    /// Bytes on their way from the server to `client`, not yet read.
    pub fn bytes_in_flight_to(&self, client: usize) -> u64 {
        self.pending
            .values()
            .map(|d| match d {
                Delivery::ToClient { link, frame }
                    if self.links.get(link).is_some_and(|l| l.client == client) =>
                {
                    frame.len() as u64
                }
                _ => 0,
            })
            .sum()
    }

    /// Edit a client's document; the change leaves at the next drain.
    pub fn edit<R>(&mut self, client: usize, document: &str, edit: impl FnOnce(&mut Document) -> R) -> R {
        let doc = self.clients[client].session.document_mut(document).expect("subscribed document");
        let result = edit(doc);
        self.drain();
        result
    }

    fn schedule(&mut self, at: Instant, delivery: Delivery) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.insert(seq, delivery);
        self.queue.push(Reverse((at, seq)));
    }

    fn latency(&mut self) -> Duration {
        let (lo, hi) = self.faults.latency_ms;
        Duration::from_millis(lo + self.rng.below(hi.saturating_sub(lo) + 1))
    }

    /// Move every session's output onto the network, until nothing is left.
    pub fn drain(&mut self) {
        // Draining takes no input, so a session's output must run dry: one that keeps
        // producing would spin a real event loop. Fail here rather than grow the event log
        // until memory runs out.
        for round in 0.. {
            assert!(
                round < 1_000_000,
                "a session keeps producing output without input; last events: {:?}",
                self.client_events.iter().rev().take(8).collect::<Vec<_>>(),
            );
            let mut progressed = false;
            for i in 0..self.clients.len() {
                if self.clients[i].vanished {
                    continue;
                }
                while let Some(frame) = self.clients[i].session.poll_transmit() {
                    progressed = true;
                    if let Some(link_id) = self.clients[i].link {
                        let at = self.now + self.latency();
                        let link = self.links.get_mut(&link_id).expect("live link");
                        let at = at.max(link.last_up);
                        link.last_up = at;
                        self.stats.frames_up += 1;
                        self.stats.bytes_up += frame.len() as u64;
                        self.clients[i].wire.frames_up += 1;
                        self.clients[i].wire.bytes_up += frame.len() as u64;
                        self.schedule(at, Delivery::ToServer { link: link_id, frame });
                    }
                }
                while let Some(event) = self.clients[i].session.poll_event() {
                    progressed = true;
                    match event {
                        ClientEvent::OpenTransport => {
                            let at = self.now + self.latency();
                            self.schedule(at, Delivery::Open { client: i });
                        }
                        ClientEvent::CloseTransport => {
                            if let Some(link_id) = self.clients[i].link.take() {
                                let at = self.now + self.latency();
                                let link = self.links.get_mut(&link_id).expect("live link");
                                let at = at.max(link.last_up);
                                link.last_up = at;
                                self.schedule(at, Delivery::ClosedByClient { link: link_id });
                            }
                        }
                        other => self.client_events.push((i, other)),
                    }
                }
            }
            let mut transmits = Vec::new();
            let mut events = Vec::new();
            let mut requests = Vec::new();
            if let Some(server) = self.server.as_mut() {
                while let Some(transmit) = server.poll_transmit() {
                    transmits.push(transmit);
                }
                while let Some(event) = server.poll_event() {
                    events.push(event);
                }
                while let Some(request) = server.poll_storage() {
                    requests.push(request);
                }
            }
            progressed |= !transmits.is_empty() || !events.is_empty() || !requests.is_empty();
            for request in requests {
                let (lo, hi) = self.storage_latency_ms;
                let at = self.now + Duration::from_millis(lo + self.rng.below(hi.saturating_sub(lo) + 1));
                let generation = self.server_generation;
                self.schedule(at, Delivery::Storage { generation, request });
            }
            for transmit in transmits {
                let Some((&link_id, _)) =
                    self.links.iter().find(|(_, l)| l.connection == transmit.connection)
                else {
                    continue;
                };
                let at = self.now + self.latency();
                let link = self.links.get_mut(&link_id).expect("live link");
                let at = at.max(link.last_down);
                link.last_down = at;
                let client = link.client;
                self.stats.frames_down += 1;
                self.stats.bytes_down += transmit.frame.len() as u64;
                self.clients[client].wire.frames_down += 1;
                self.clients[client].wire.bytes_down += transmit.frame.len() as u64;
                self.schedule(at, Delivery::ToClient { link: link_id, frame: transmit.frame });
            }
            for event in events {
                if let ServerEvent::ConnectionClosed { connection, .. } = &event
                    && let Some((&link_id, link)) =
                        self.links.iter().find(|(_, l)| l.connection == *connection)
                {
                    let at = (self.now + Duration::from_millis(self.faults.latency_ms.0)).max(link.last_down);
                    self.schedule(at, Delivery::ClosedByServer { link: link_id });
                }
                self.server_events.push(event);
            }
            if !progressed {
                break;
            }
        }
    }

    /// The next moment something happens: a delivery, a session deadline or the server's
    /// return.
    fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.queue.peek().map(|Reverse((at, _))| *at);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        for client in self.clients.iter().filter(|c| !c.vanished) {
            consider(client.session.poll_timeout());
        }
        if let Some(server) = &self.server {
            consider(server.poll_timeout());
        }
        consider(self.server_down_until);
        next
    }

    /// Run until `deadline` (simulated).
    pub fn run_until(&mut self, deadline: Instant) {
        let mut stall = Stall::default();
        while let Some(next) = self.next_deadline() {
            if next > deadline {
                break;
            }
            self.now = self.now.max(next);
            stall.check(self);
            self.step();
        }
        self.now = self.now.max(deadline);
    }

    /// Who asks to be woken at or before now, for a stall report.
    fn due_now(&self) -> String {
        let now = self.now;
        let mut due = Vec::new();
        for (i, client) in self.clients.iter().enumerate().filter(|(_, c)| !c.vanished) {
            if client.session.poll_timeout().is_some_and(|t| t <= now) {
                due.push(format!("client {i} ({:?})", client.session.status()));
            }
        }
        if self.server.as_ref().and_then(Server::poll_timeout).is_some_and(|t| t <= now) {
            due.push("the server".to_owned());
        }
        if self.queue.peek().is_some_and(|Reverse((at, _))| *at <= now) {
            due.push("a delivery".to_owned());
        }
        due.join(", ")
    }

    pub fn run_for(&mut self, duration: Duration) {
        let deadline = self.now + duration;
        self.run_until(deadline);
    }

    fn step(&mut self) {
        let now = self.now;
        if self.server_down_until.is_some_and(|t| now >= t) {
            self.server_down_until = None;
            let store = self.parked_store.take().unwrap_or_default();
            // A durable server crashed: nothing in memory survives, storage has the rest.
            let store = if self.storage.is_some() {
                MemoryStore::new(self.server_config.peer, self.server_config.document.clone())
            } else {
                store
            };
            let mut server = Server::new(self.server_config.clone(), store);
            if let Some(setup) = &self.server_setup {
                setup(&mut server);
            }
            self.server = Some(server);
        }
        while let Some(Reverse((at, seq))) = self.queue.peek().copied() {
            if at > now {
                break;
            }
            self.queue.pop();
            let delivery = self.pending.remove(&seq).expect("scheduled delivery");
            self.deliver(delivery);
            self.drain();
        }
        for i in 0..self.clients.len() {
            if !self.clients[i].vanished {
                self.clients[i].session.handle_timeout(now);
            }
        }
        if let Some(server) = self.server.as_mut() {
            server.handle_timeout(now);
        }
        self.drain();
    }

    fn deliver(&mut self, delivery: Delivery) {
        let now = self.now;
        match delivery {
            Delivery::Open { client } => {
                let partitioned = self.clients[client].partitioned_until.is_some_and(|t| now < t);
                match self.server.as_mut() {
                    Some(server) if !partitioned => {
                        let connection = server.accept(now);
                        let id = self.next_link;
                        self.next_link += 1;
                        self.links.insert(id, Link { client, connection, last_up: now, last_down: now });
                        self.clients[client].link = Some(id);
                        self.clients[client].session.handle_connected(now);
                    }
                    _ => self.clients[client].session.handle_disconnected(now),
                }
            }
            Delivery::ToServer { link, frame } => {
                let Some(l) = self.links.get(&link) else { return };
                let connection = l.connection;
                let client = l.client;
                if let Some(server) = self.server.as_mut() {
                    server.handle_input(now, connection, &frame);
                }
                self.maybe_fault(client);
            }
            Delivery::ToClient { link, frame } => {
                let Some(l) = self.links.get(&link) else { return };
                let client = l.client;
                if let Some(until) = self.clients[client].stalled_until.filter(|t| now < *t) {
                    // Rescheduled in arrival order, so the link stays ordered.
                    self.schedule(until, Delivery::ToClient { link, frame });
                    return;
                }
                if self.clients[client].link == Some(link) && !self.clients[client].vanished {
                    self.clients[client].frames_received += 1;
                    self.clients[client].bytes_received += frame.len() as u64;
                    self.clients[client].session.handle_input(now, &frame);
                }
                self.maybe_fault(client);
            }
            Delivery::ClosedByClient { link } => {
                if let Some(l) = self.links.remove(&link)
                    && let Some(server) = self.server.as_mut()
                {
                    server.handle_disconnected(now, l.connection);
                }
            }
            Delivery::Storage { generation, request } => {
                let Some(storage) = self.storage.as_mut() else { return };
                let current = generation == self.server_generation && self.server.is_some();
                // A crash may leave a commit on disk or not; its server never hears back.
                let lands =
                    current || matches!(request, StorageRequest::Commit { .. }) && self.rng.chance(0.5);
                if !lands {
                    return;
                }
                let outcome = perform_storage(storage, request);
                if current && let Some(server) = self.server.as_mut() {
                    server.handle_storage(now, outcome);
                }
            }
            Delivery::ClosedByServer { link } => {
                if let Some(l) = self.links.remove(&link)
                    && self.clients[l.client].link == Some(link)
                {
                    self.clients[l.client].link = None;
                    self.clients[l.client].session.handle_disconnected(now);
                }
            }
        }
    }

    fn maybe_fault(&mut self, client: usize) {
        if self.rng.chance(self.faults.restart_server) {
            let downtime = Duration::from_millis(50 + self.rng.below(2000));
            self.restart_server(downtime);
        } else if self.rng.chance(self.faults.partition) {
            let until = self.now + Duration::from_millis(100 + self.rng.below(5000));
            self.clients[client].partitioned_until = Some(until);
            self.break_client_link(client);
        } else if self.rng.chance(self.faults.break_link) {
            self.break_client_link(client);
        } else if self.rng.chance(self.faults.duplicate) {
            self.duplicate_changes(client);
        }
    }

    /// Deliver once more, to the server's copy, the changes `client` made after a random
    /// point of its history: the server must recognise every one of them.
    fn duplicate_changes(&mut self, client: usize) {
        let Some(server) = self.server.as_mut() else { return };
        let session = &self.clients[client].session;
        let peer = session.peer();
        let names: Vec<String> = session.document_names().map(str::to_owned).collect();
        for name in names {
            let Some(doc) = session.document(&name) else { continue };
            let mut since = doc.version().clone();
            let own = since.get(peer);
            since.set(peer, own - (self.rng.below(u64::from(own) + 1) as u32).min(own));
            let Ok(changes) = doc.changes_since(&since) else { continue };
            if let Some(copy) = server.store_mut().get_mut(&name) {
                // Changes whose dependencies the server lacks wait, like any early arrival.
                let _ = copy.apply_changes(changes);
                server.document_changed(&name);
            }
        }
    }

    /// Break a client's link at once: both ends notice, frames in flight are lost.
    pub fn break_client_link(&mut self, client: usize) {
        if let Some(link_id) = self.clients[client].link.take() {
            if let Some(link) = self.links.remove(&link_id)
                && let Some(server) = self.server.as_mut()
            {
                server.handle_disconnected(self.now, link.connection);
            }
            self.clients[client].session.handle_disconnected(self.now);
        }
    }

    /// Stop the server for `downtime`; it comes back from its store. Every link breaks.
    pub fn restart_server(&mut self, downtime: Duration) {
        let Some(server) = self.server.take() else { return };
        self.restarts += 1;
        self.server_generation += 1;
        self.check_acknowledged_are_stored();
        self.parked_store = Some(server.into_store());
        self.server_down_until = Some(self.now + downtime);
        for client in 0..self.clients.len() {
            if let Some(link_id) = self.clients[client].link.take() {
                self.links.remove(&link_id);
                self.clients[client].session.handle_disconnected(self.now);
            }
        }
        self.links.clear();
    }

    /// The durability contract at a crash: whatever the server confirmed to a client
    /// ([`ClientSession::acknowledged`]) is in storage (commits still in flight do not
    /// count: they may never land).
    fn check_acknowledged_are_stored(&mut self) {
        let Some(storage) = self.storage.as_mut() else { return };
        for (i, client) in self.clients.iter().enumerate() {
            let peer = client.session.peer();
            let names: Vec<String> = client.session.document_names().map(str::to_owned).collect();
            for name in names {
                let acknowledged = client.session.acknowledged(&name).unwrap_or(0);
                if acknowledged == 0 {
                    continue;
                }
                let stored = match storage.load(&name) {
                    Ok(Some(stored)) => stored.version().get(peer),
                    Ok(None) => 0,
                    Err(e) => {
                        self.lost_acknowledged.push(format!("client {i}, {name}: storage fails: {e}"));
                        continue;
                    }
                };
                if stored < acknowledged {
                    self.lost_acknowledged.push(format!(
                        "client {i}, {name}: {acknowledged} own ops acknowledged, storage has {stored}"
                    ));
                }
            }
        }
    }

    /// Turn faults off and end partitions: the network heals.
    pub fn heal(&mut self) {
        self.faults = Faults { latency_ms: self.faults.latency_ms, ..Faults::none() };
        for client in &mut self.clients {
            client.partitioned_until = None;
        }
    }

    /// Whether every client is connected, in sync and saved, and nothing is in flight.
    pub fn settled(&self, documents: &[&str]) -> bool {
        self.server.as_ref().is_some_and(Server::storage_settled)
            && self.queue.is_empty()
            && self.clients.iter().all(|c| {
                c.session.status() == ConnectionStatus::Connected
                    && documents.iter().all(|d| c.session.is_saved(d))
            })
    }

    /// Run until [`Sim::settled`], at most `limit` of simulated time; returns whether it settled.
    pub fn run_until_settled(&mut self, documents: &[&str], limit: Duration) -> bool {
        self.run_until_with(limit, |sim| sim.settled(documents))
    }

    /// Run until `done` holds (checked before every step), at most `limit` of simulated
    /// time; returns whether it held. Time jumps from event to event, so waiting for one
    /// replica to catch up costs no more than the deliveries it takes.
    pub fn run_until_with(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let deadline = self.now + limit;
        let mut stall = Stall::default();
        while self.now < deadline {
            if done(self) {
                return true;
            }
            let step = self.next_deadline().map_or(deadline, |n| n.min(deadline));
            self.now = self.now.max(step);
            stall.check(self);
            self.step();
        }
        done(self)
    }
}

/// Catches a simulation whose time stops: some session keeps asking to be woken now and
/// handling the wake-up does not move its deadline, which a real event loop would spin on.
/// Without this the run never ends and the event log grows until memory runs out.
#[derive(Default)]
struct Stall {
    at: Option<Instant>,
    steps: u32,
}

impl Stall {
    /// Steps at one instant before it counts as a stall: far more than any burst of
    /// deliveries due at once.
    const LIMIT: u32 = 100_000;

    fn check(&mut self, sim: &Sim) {
        if self.at == Some(sim.now) {
            self.steps += 1;
            assert!(
                self.steps < Self::LIMIT,
                "simulated time stopped: {} steps at one instant; due now: {}; last events: {:?}",
                self.steps,
                sim.due_now(),
                sim.client_events.iter().rev().take(8).collect::<Vec<_>>(),
            );
        } else {
            self.at = Some(sim.now);
            self.steps = 0;
        }
    }
}
