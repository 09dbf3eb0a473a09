//! # crdt-sync
//!
//! A local-first CRDT document and a sans-IO sync protocol around it. Any number of replicas
//! edit a [`Document`] independently, offline or online; once they have exchanged their
//! changes, in any order and with any duplication, they hold identical state. A
//! [`ClientSession`] keeps a replica's documents in sync with a [`Server`] over any transport
//! you drive yourself.
//!
//! ## Two replicas, synced by hand
//!
//! ```
//! use crdt_sync::{Document, PeerId};
//!
//! # fn main() -> Result<(), crdt_sync::Error> {
//! let mut alice = Document::new(PeerId::new(1));
//! let mut bob = Document::new(PeerId::new(2));
//!
//! // Alice writes a title and a todo list.
//! {
//!     let mut txn = alice.transact();
//!     txn.text("title").insert(0, "Groceries")?;
//!     txn.list::<String>("todo").push(&"milk".to_string())?;
//! } // dropping the transaction commits it as one change
//!
//! // Bob gets everything he lacks: export against his version, import on his side.
//! let update = alice.export_since(bob.version())?;
//! bob.import(&update)?;
//! assert_eq!(bob.text("title").to_string(), "Groceries");
//!
//! // Both edit concurrently, without talking to each other.
//! alice.transact().text("title").insert(0, "Weekly ")?;
//! bob.transact().list::<String>("todo").push(&"eggs".to_string())?;
//! bob.transact().counter("visits").add(1)?;
//!
//! // Exchange changes both ways; order and duplicates do not matter.
//! let to_bob = alice.export_since(bob.version())?;
//! let to_alice = bob.export_since(alice.version())?;
//! bob.import(&to_bob)?;
//! alice.import(&to_alice)?;
//! alice.import(&to_alice)?; // a duplicate is ignored
//!
//! assert_eq!(alice.text("title").to_string(), "Weekly Groceries");
//! assert_eq!(alice.list::<String>("todo").to_vec()?, ["milk", "eggs"]);
//! assert_eq!(alice.encode_state(), bob.encode_state()); // identical state, byte for byte
//! # Ok(())
//! # }
//! ```
//!
//! ## A client over a plain TCP stream, driven by hand
//!
//! The sessions never touch a socket, a clock or a thread: you feed them bytes and the time,
//! and they give back frames to send, events and the next deadline. This is the whole loop of
//! a client over a blocking [`std::net::TcpStream`] (frames are length-prefixed on byte
//! streams; on WebSocket, send each frame as one binary message). The server loop, hidden
//! here, has the same shape.
//!
//! ```
//! use std::io::{ErrorKind, Read, Write};
//! use std::net::TcpStream;
//! use std::time::{Duration, Instant};
//!
//! use crdt_sync::wire::{FrameReader, WireLimits, length_prefixed};
//! use crdt_sync::{ClientConfig, ClientEvent, ClientSession, Document, PeerId};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let (addr, server) = tcp_server::spawn()?;
//!
//! let peer = PeerId::new(1);
//! let mut client = ClientSession::new(peer, ClientConfig::default().with_rng_seed(7));
//! client.subscribe("notes", Document::new(peer));
//! client.document_mut("notes").unwrap().transact().text("body").insert(0, "typed offline")?;
//! client.connect(Instant::now());
//!
//! let mut stream: Option<TcpStream> = None;
//! let mut reader = FrameReader::new(&WireLimits::default());
//! let mut buf = vec![0; 64 * 1024];
//! let mut saved = false;
//! while !saved {
//!     // 1. Outputs: frames first, then events (which may ask for a transport).
//!     while let Some(frame) = client.poll_transmit() {
//!         let sent = stream.as_mut().map(|s| s.write_all(&length_prefixed(&frame)));
//!         if let Some(Err(_)) = sent {
//!             stream = None;
//!             client.handle_disconnected(Instant::now());
//!         }
//!     }
//!     let mut acted = false;
//!     while let Some(event) = client.poll_event() {
//!         acted = true;
//!         match event {
//!             ClientEvent::OpenTransport => match TcpStream::connect(addr) {
//!                 Ok(s) => {
//!                     stream = Some(s);
//!                     reader = FrameReader::new(&WireLimits::default());
//!                     client.handle_connected(Instant::now());
//!                 }
//!                 Err(_) => client.handle_disconnected(Instant::now()),
//!             },
//!             ClientEvent::CloseTransport => stream = None,
//!             ClientEvent::Saved { .. } => saved = true,
//!             _ => {}
//!         }
//!     }
//!     if acted {
//!         continue; // events may have produced frames
//!     }
//!     // 2. Wait for input, at most until the session's next deadline.
//!     let wait = client
//!         .poll_timeout()
//!         .map_or(Duration::from_secs(1), |t| t.saturating_duration_since(Instant::now()))
//!         .max(Duration::from_millis(1));
//!     match stream.as_mut() {
//!         Some(s) => {
//!             s.set_read_timeout(Some(wait))?;
//!             match s.read(&mut buf) {
//!                 Ok(0) => {
//!                     stream = None;
//!                     client.handle_disconnected(Instant::now());
//!                 }
//!                 Ok(n) => {
//!                     reader.push(&buf[..n]);
//!                     while let Some(frame) = reader.next_frame()? {
//!                         client.handle_input(Instant::now(), &frame);
//!                     }
//!                 }
//!                 Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
//!                 Err(_) => {
//!                     stream = None;
//!                     client.handle_disconnected(Instant::now());
//!                 }
//!             }
//!         }
//!         None => std::thread::sleep(wait),
//!     }
//!     // 3. Deadlines: early calls are harmless.
//!     client.handle_timeout(Instant::now());
//! }
//! // The server holds the edit: close cleanly.
//! client.close(Instant::now());
//! while let Some(frame) = client.poll_transmit() {
//!     if let Some(s) = stream.as_mut() {
//!         s.write_all(&length_prefixed(&frame))?;
//!     }
//! }
//! # drop(stream);
//! # assert_eq!(server.join().unwrap(), "typed offline");
//! # Ok(())
//! # }
//! # mod tcp_server {
//! #     use std::io::{ErrorKind, Read, Write};
//! #     use std::net::{SocketAddr, TcpListener};
//! #     use std::time::{Duration, Instant};
//! #     use crdt_sync::wire::{FrameReader, WireLimits, length_prefixed};
//! #     use crdt_sync::{Server, ServerConfig, ServerEvent};
//! #     /// One connection, served until it closes; returns the text of `notes`.
//! #     pub fn spawn() -> std::io::Result<(SocketAddr, std::thread::JoinHandle<String>)> {
//! #         let listener = TcpListener::bind("127.0.0.1:0")?;
//! #         let addr = listener.local_addr()?;
//! #         let handle = std::thread::spawn(move || {
//! #             let mut server = Server::in_memory(ServerConfig::default());
//! #             let (mut socket, _) = listener.accept().unwrap();
//! #             let conn = server.accept(Instant::now());
//! #             let mut reader = FrameReader::new(&WireLimits::default());
//! #             let mut buf = vec![0; 64 * 1024];
//! #             socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
//! #             loop {
//! #                 while let Some(t) = server.poll_transmit() {
//! #                     let _ = socket.write_all(&length_prefixed(&t.frame));
//! #                 }
//! #                 while let Some(event) = server.poll_event() {
//! #                     if let ServerEvent::ConnectionClosed { .. } = event {
//! #                         let doc = server.document("notes").unwrap();
//! #                         return doc.text("body").to_string();
//! #                     }
//! #                 }
//! #                 match socket.read(&mut buf) {
//! #                     Ok(0) => server.handle_disconnected(Instant::now(), conn),
//! #                     Ok(n) => {
//! #                         reader.push(&buf[..n]);
//! #                         while let Ok(Some(frame)) = reader.next_frame() {
//! #                             server.handle_input(Instant::now(), conn, &frame);
//! #                         }
//! #                     }
//! #                     Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
//! #                     Err(_) => server.handle_disconnected(Instant::now(), conn),
//! #                 }
//! #                 server.handle_timeout(Instant::now());
//! #             }
//! #         });
//! #         Ok((addr, handle))
//! #     }
//! # }
//! ```
//!
//! ## What the document gives you
//!
//! * **Types**: text ([`TextRef`]/[`TextMut`]), [`ListRef`], [`MovableListRef`], [`MapRef`],
//!   [`RegisterRef`], [`CounterRef`], [`OrSetRef`], nestable through [`ContainerId`]s.
//! * **Causality**: [`VersionVector`]s, [`Frontier`]s, a causal change log that exports
//!   exactly what a version lacks; changes whose dependencies are missing wait in a buffer
//!   ([`Document::missing_dependencies`]).
//! * **Time**: a hybrid logical clock ([`Timestamp`]) orders last-writer-wins writes
//!   consistently with causality; the wall clock is an input ([`Document::set_wall_clock`]),
//!   never read by the crate.
//! * **History**: [`Document::encode`] / [`Document::load`], state snapshots without history,
//!   [`Document::trim_history`], [`Document::fork_at`] any past version and
//!   [`Document::merge`] back.
//! * **Events**: one [`DocEvent`] per transaction or import, local or remote.
//!
//! ## Plugins
//!
//! [`ClientPlugin`]s and [`ServerPlugin`]s add behaviour and message types of their own to
//! the sessions, in the same sans-IO shape ([`plugin`] has the details); a server plugin can
//! veto changes. [`Awareness`] / [`AwarenessServer`] are the built-in presence plugin:
//! throttled, coalesced, expiring per-document states such as names and [`Cursor`]s.
//!
//! ## Who may do what
//!
//! A [`Server`] with an [`Authenticator`] ([`Server::set_authenticator`]) checks the token
//! each client sends ([`ClientConfig::with_token`]) and gives every subscription a
//! [`Permission`]: read-write, read-only (what the client sends for the document is refused
//! and reaches no one) or denied. Permissions change on live connections; [`auth`] has the
//! details and [`HmacAuthenticator`] checks signed tokens. Abuse limits (frame and
//! decompressed sizes, message rate, documents per connection, unfinished handshakes per
//! address, bytes pending for a client that stopped reading) are fields of [`ServerConfig`].
//!
//! ## Runtimes
//!
//! If you would rather not write the loop, a cargo feature gives you WebSocket servers and
//! clients built on it, with the same handles everywhere (connect, subscribe, edit, wait until
//! saved, watch status and events, close), reconnection, and `ws://` or `wss://` (rustls):
//! `tokio` (`tokio::TokioServer`, `tokio::TokioClient`), `async-io` for smol or any executor
//! and `async-std` (`async_io::AsyncServer`, `async_io::AsyncClient`), and `tungstenite` for
//! plain threads (`blocking::BlockingServer`, `blocking::BlockingClient`). They live in
//! `runtimes/`, outside the sans-IO core; `cli` builds the `crdt-sync` server binary.
//!
//! ## Policies
//!
//! * No panic on any input: bytes from a peer are decoded with checked lengths, a checksum
//!   and a size limit, and a bad buffer or change returns an [`Error`] with the document
//!   unchanged.
//! * No clock, RNG, socket, thread or file in the crate: time and randomness are arguments.
//!   The same seed gives the same session, which is what makes the network simulator
//!   (`tests/common/sim.rs`) and the fuzzers deterministic.
//! * Sessions never panic on what a peer sends: a malformed frame is an error event and a
//!   clean close of that connection only; every size is checked against [`wire::WireLimits`]
//!   before anything is allocated for it.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "async-io")]
#[path = "../runtimes/async_io.rs"]
pub mod async_io;
pub mod auth;
#[cfg(feature = "tungstenite")]
#[path = "../runtimes/blocking.rs"]
pub mod blocking;
mod bytes;
mod doc;
mod error;
pub mod plugin;
#[cfg(any(feature = "tokio", feature = "async-io", feature = "tungstenite"))]
#[path = "../runtimes/common.rs"]
mod runtime_common;
mod session;
#[cfg(feature = "sqlite")]
#[path = "../runtimes/sqlite.rs"]
pub mod sqlite;
mod storage;
mod store;
#[cfg(test)]
mod test_cases;
#[cfg(any(feature = "tokio", feature = "async-io", feature = "tungstenite"))]
#[path = "../runtimes/tls.rs"]
mod tls;
#[cfg(feature = "tokio")]
#[path = "../runtimes/tokio.rs"]
pub mod tokio;
pub mod wire;

pub use auth::{
    AuthDecision, AuthRequest, Authenticator, HmacAuthenticator, Identity, Permission, TokenClaims,
    TokenError,
};
pub use doc::change::Change;
pub use doc::clock::{ClockError, HybridClock, MAX_WALL_MS, Timestamp};
pub use doc::codec::EncodeOptions;
pub use doc::config::DocumentConfig;
pub use doc::document::{Document, ImportStatus};
pub use doc::event::{DocEvent, Origin};
pub use doc::id::{Counter, IdSpan, OpId, PeerId};
pub use doc::op::{ContainerId, ContainerKind};
pub use doc::transaction::Transaction;
pub use doc::types::{
    CounterMut, CounterRef, Cursor, ListMut, ListRef, MapMut, MapRef, MovableListMut, MovableListRef,
    OrSetMut, OrSetRef, RegisterMut, RegisterRef, TextMut, TextRef,
};
pub use doc::value::Value;
pub use doc::version::{Frontier, VersionVector};
pub use error::{DecodeError, Error, ProtocolError};
pub use plugin::awareness::{Awareness, AwarenessConfig, AwarenessEvent, AwarenessServer};
pub use plugin::{
    ClientPlugin, ClientPluginMessage, PluginError, PluginId, Recipients, ServerPlugin, ServerPluginMessage,
};
#[cfg(any(feature = "tokio", feature = "async-io", feature = "tungstenite"))]
pub use runtime_common::Traffic;
pub use session::{
    AcceptError, ClientConfig, ClientEvent, ClientSession, ConnectionId, ConnectionStatus, Server,
    ServerConfig, ServerEvent, SyncDocument, Transmit,
};
pub use storage::{
    CommitTicket, DurableStorage, MemoryStorage, StorageError, StorageOutcome, StorageRequest, StorageWrite,
    StoredData, load_stored_entries, perform_storage,
};
pub use store::{DocumentStore, MemoryStore};
#[cfg(any(feature = "tokio", feature = "async-io", feature = "tungstenite"))]
pub use tls::{ClientTls, ServerTls, ServerUrl};

/// The README's examples are compiled and run as doc tests, so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
