//! A hand-driven network for scenario tests that need control the simulator does not give:
//! frames between one server and several clients, delivered at once and in order, with a
//! filter on what reaches each client, clients that stop reading, and raw connections that
//! send whatever bytes a test writes (an attacker's).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crdt_sync::wire::{Message, decode_frame, encode_frame};
use crdt_sync::{
    ClientConfig, ClientEvent, ClientSession, ConnectionId, Document, PeerId, Server, ServerEvent,
};

/// Rewrites the messages of a frame to a client (drop some, say) before it arrives.
pub type Filter = Box<dyn FnMut(Vec<Message>) -> Vec<Message>>;

pub struct NetClient {
    pub session: ClientSession,
    pub connection: Option<ConnectionId>,
    pub events: Vec<ClientEvent>,
    /// Frames from the server wait here while the client does not read.
    pub stalled: bool,
    held: VecDeque<Vec<u8>>,
    pub filter: Option<Filter>,
}

impl NetClient {
    /// A client session the network drives from now on (its transport events included).
    pub fn new(session: ClientSession) -> Self {
        NetClient {
            session,
            connection: None,
            events: Vec::new(),
            stalled: false,
            held: VecDeque::new(),
            filter: None,
        }
    }
}

/// A connection driven by the test: frames it gets from the server pile up in `received`.
pub struct RawConnection {
    pub id: ConnectionId,
    pub received: Vec<Vec<Message>>,
    pub open: bool,
}

pub struct Net {
    pub now: Instant,
    pub server: Server,
    pub clients: Vec<NetClient>,
    pub raw: Vec<RawConnection>,
    pub server_events: Vec<ServerEvent>,
    pub address: IpAddr,
}

impl Net {
    pub fn new(server: Server) -> Self {
        #[allow(clippy::disallowed_methods)] // the test's epoch; everything after is relative
        let now = Instant::now();
        Net {
            now,
            server,
            clients: Vec::new(),
            raw: Vec::new(),
            server_events: Vec::new(),
            address: IpAddr::from([127, 0, 0, 1]),
        }
    }

    /// A client (replica `peer`) subscribed to `documents`, connected and synced.
    pub fn add_client(&mut self, peer: u64, config: ClientConfig, documents: &[&str]) -> usize {
        let peer = PeerId::new(peer);
        let mut session = ClientSession::new(peer, config.with_rng_seed(peer.get()));
        for name in documents {
            session.subscribe(*name, Document::new(peer));
        }
        session.connect(self.now);
        self.clients.push(NetClient::new(session));
        self.pump();
        self.clients.len() - 1
    }

    /// A raw connection from [`Net::address`]: `None` if the server refuses it.
    pub fn add_raw(&mut self) -> Option<usize> {
        let id = self.server.accept_from(self.now, self.address).ok()?;
        self.raw.push(RawConnection { id, received: Vec::new(), open: true });
        Some(self.raw.len() - 1)
    }

    pub fn send_raw(&mut self, raw: usize, frame: &[u8]) {
        let id = self.raw[raw].id;
        self.server.handle_input(self.now, id, frame);
        self.pump();
    }

    pub fn session(&mut self, client: usize) -> &mut ClientSession {
        &mut self.clients[client].session
    }

    pub fn edit(&mut self, client: usize, doc: &str, text: &str) {
        let document = self.clients[client].session.document_mut(doc).unwrap();
        let len = document.text("t").len();
        document.transact().text("t").insert(len, text).unwrap();
        self.pump();
    }

    pub fn text(&self, client: usize, doc: &str) -> String {
        self.clients[client].session.document(doc).map(|d| d.text("t").to_string()).unwrap_or_default()
    }

    pub fn server_text(&self, doc: &str) -> Option<String> {
        self.server.document(doc).map(|d| d.text("t").to_string())
    }

    pub fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        loop {
            let next = self
                .clients
                .iter()
                .filter_map(|c| c.session.poll_timeout())
                .chain(self.server.poll_timeout())
                .filter(|t| *t <= until)
                .min();
            let Some(next) = next else { break };
            self.now = self.now.max(next);
            self.server.handle_timeout(self.now);
            for client in &mut self.clients {
                client.session.handle_timeout(self.now);
            }
            self.pump();
        }
        self.now = until;
        self.server.handle_timeout(self.now);
        for client in &mut self.clients {
            client.session.handle_timeout(self.now);
        }
        self.pump();
    }

    /// Let a stalled client read what waited for it.
    pub fn resume(&mut self, client: usize) {
        self.clients[client].stalled = false;
        self.pump();
    }

    /// Move frames and events until nothing moves.
    pub fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for i in 0..self.clients.len() {
                let client = &mut self.clients[i];
                while let Some(frame) = client.session.poll_transmit() {
                    moved = true;
                    if let Some(id) = client.connection {
                        self.server.handle_input(self.now, id, &frame);
                    }
                }
                while let Some(event) = client.session.poll_event() {
                    moved = true;
                    match &event {
                        ClientEvent::OpenTransport => {
                            let id = self.server.accept_from(self.now, self.address);
                            client.connection = id.as_ref().ok().copied();
                            match id {
                                Ok(_) => client.session.handle_connected(self.now),
                                Err(_) => client.session.handle_disconnected(self.now),
                            }
                        }
                        ClientEvent::CloseTransport => {
                            if let Some(id) = client.connection.take() {
                                self.server.handle_disconnected(self.now, id);
                            }
                            client.held.clear();
                        }
                        _ => {}
                    }
                    client.events.push(event);
                }
                if !client.stalled {
                    while let Some(frame) = client.held.pop_front() {
                        moved = true;
                        client.session.handle_input(self.now, &frame);
                    }
                }
            }
            while let Some(transmit) = self.server.poll_transmit() {
                moved = true;
                if let Some(client) =
                    self.clients.iter_mut().find(|c| c.connection == Some(transmit.connection))
                {
                    let frame = match client.filter.as_mut() {
                        Some(filter) => {
                            let messages = decode_frame(&transmit.frame, &Default::default()).unwrap();
                            encode_frame(&filter(messages))
                        }
                        None => transmit.frame,
                    };
                    client.held.push_back(frame);
                } else if let Some(raw) = self.raw.iter_mut().find(|r| r.id == transmit.connection) {
                    raw.received.push(decode_frame(&transmit.frame, &Default::default()).unwrap());
                }
            }
            while let Some(event) = self.server.poll_event() {
                moved = true;
                if let ServerEvent::ConnectionClosed { connection, .. } = &event {
                    if let Some(client) = self.clients.iter_mut().find(|c| c.connection == Some(*connection))
                    {
                        client.connection = None;
                        // What was sent before the close still arrives.
                        if !client.stalled {
                            while let Some(frame) = client.held.pop_front() {
                                client.session.handle_input(self.now, &frame);
                            }
                        }
                        client.held.clear();
                        client.session.handle_disconnected(self.now);
                    }
                    if let Some(raw) = self.raw.iter_mut().find(|r| r.id == *connection) {
                        raw.open = false;
                    }
                }
                self.server_events.push(event);
            }
            if !moved {
                return;
            }
        }
        panic!("the network never went quiet");
    }

    /// Every message the raw connection received, flattened.
    pub fn raw_messages(&self, raw: usize) -> Vec<Message> {
        self.raw[raw].received.iter().flatten().cloned().collect()
    }
}
