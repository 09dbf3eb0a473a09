//! The sync sessions: sans-IO state machines for the client and the server.
//!
//! Both take the same shape (quinn-proto's): inputs are `handle_*` calls with the current
//! time, commands are `&mut self` methods, outputs are drained with `poll_transmit`,
//! `poll_event` and `poll_timeout` after every input or command.

mod client;
mod codec;
mod config;
mod event;
mod random;
mod server;
mod sync_document;

pub use client::ClientSession;
pub use config::{ClientConfig, ServerConfig};
pub use event::{ClientEvent, ConnectionId, ConnectionStatus, ServerEvent, Transmit};
pub use server::{AcceptError, Server};
pub use sync_document::SyncDocument;
