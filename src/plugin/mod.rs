//! Plugins: behaviour added to the client and server sessions, with message types of their own.
//!
//! A plugin is a small sans-IO state machine next to the session, in the session's own shape:
//! the session calls its hooks (`on_*`, with the current time), its
//! [`handle_timeout`](ClientPlugin::handle_timeout) when its
//! [`poll_timeout`](ClientPlugin::poll_timeout) passes, and drains its `poll_message` into the
//! next frame. The application talks to a plugin directly through
//! [`crate::ClientSession::plugin_mut`] / [`crate::Server::plugin_mut`]: commands in, its
//! own events out.
//!
//! On the wire a plugin message is a `Plugin` message (tag 13): the plugin's [`PluginId`],
//! the document slot it concerns (if any), and a body the plugin encodes as it likes;
//! [`encode_message`] and [`decode_message`] do it with serde and postcard. A message for a
//! plugin the receiver does not have is answered with
//! [`ErrorCode::UnknownPlugin`](crate::wire::ErrorCode::UnknownPlugin); the connection stays.
//!
//! A server plugin may also veto the changes a client sends
//! ([`ServerPlugin::check_changes`]): the server applies none of the batch, forwards none of
//! it, and tells the author, which stops syncing that document (see
//! [`crate::ClientEvent::ChangesVetoed`]).
//!
//! A client that may only read a document ([`crate::auth::Permission::ReadOnly`]) sends
//! no plugin message about it, and the server refuses any that arrives: presence from a
//! reader reaches no one.
//!
//! [`awareness`] is built on this: presence (who is here, where their cursor is) per document.

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::{Change, ConnectionId, PeerId};

pub mod awareness;

/// A plugin's number on the wire; both sides of a connection must agree on it. Ids below 64
/// are reserved for plugins of this crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PluginId(pub u16);

impl PluginId {
    /// The built-in [`awareness`] plugin.
    pub const AWARENESS: PluginId = PluginId(1);
}

/// Why a plugin did not accept a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The body could not be decoded as one of the plugin's messages.
    #[error("malformed plugin message: {0}")]
    Malformed(String),
    /// The plugin understood the message and refused it.
    #[error("refused by the plugin: {0}")]
    Refused(String),
}

/// Encode one of a plugin's messages (postcard).
pub fn encode_message<T: Serialize>(message: &T) -> Vec<u8> {
    // Serializing plain data into a Vec cannot fail; a type whose `Serialize` fails (a map
    // with non-string keys is fine in postcard) would be a bug in the plugin.
    postcard::to_allocvec(message).unwrap_or_default()
}

/// Decode one of a plugin's messages; a typed error, never a panic, on any input.
pub fn decode_message<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, PluginError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((message, [])) => Ok(message),
        Ok((_, rest)) => Err(PluginError::Malformed(format!("{} bytes after the message", rest.len()))),
        Err(e) => Err(PluginError::Malformed(e.to_string())),
    }
}

/// A message a client plugin sends to the server.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientPluginMessage {
    /// The document it concerns (it travels as the document's slot), or `None`.
    pub document: Option<Arc<str>>,
    /// The plugin's encoding of the message.
    pub body: Vec<u8>,
}

impl ClientPluginMessage {
    /// A message about `document` (or about none).
    pub fn new(document: Option<Arc<str>>, body: Vec<u8>) -> Self {
        ClientPluginMessage { document, body }
    }
}

/// Who gets a server plugin's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recipients {
    /// One connection.
    Connection(ConnectionId),
    /// Every subscriber of the message's document, except one connection if given.
    Subscribers {
        /// A connection to leave out (typically the one the message came from).
        except: Option<ConnectionId>,
    },
    /// Every connection past its handshake, except one if given.
    Everyone {
        /// A connection to leave out.
        except: Option<ConnectionId>,
    },
}

/// A message a server plugin sends.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerPluginMessage {
    /// Who gets it.
    pub to: Recipients,
    /// The document it concerns, or `None`. A recipient that has not subscribed to the
    /// document does not get the message.
    pub document: Option<Arc<str>>,
    /// The plugin's encoding of the message.
    pub body: Vec<u8>,
}

impl ServerPluginMessage {
    /// A message to `to` about `document` (or about none).
    pub fn new(to: Recipients, document: Option<Arc<str>>, body: Vec<u8>) -> Self {
        ServerPluginMessage { to, document, body }
    }
}

/// A plugin of a [`crate::ClientSession`]. Every hook has a default that does nothing.
///
/// Messages the plugin queues (drained by [`ClientPlugin::poll_message`]) leave only while
/// connected, and only for documents synced on the current connection; others are dropped.
/// A plugin with state the server must hold sends it again from
/// [`ClientPlugin::on_subscribed`], which runs for every document on every connection.
pub trait ClientPlugin: Any + Send + Debug {
    /// The plugin's wire id.
    fn id(&self) -> PluginId;
    /// The handshake finished on a new connection.
    fn on_connected(&mut self, _now: Instant) {}
    /// The connection was lost or closed; the session may reconnect.
    fn on_disconnected(&mut self, _now: Instant) {}
    /// A document finished its first sync on the current connection.
    fn on_subscribed(&mut self, _now: Instant, _document: &Arc<str>) {}
    /// A document stopped syncing (unsubscribed, refused or vetoed).
    fn on_unsubscribed(&mut self, _now: Instant, _document: &Arc<str>) {}
    /// The application closed the session ([`crate::ClientSession::close`]).
    fn on_closed(&mut self, _now: Instant) {}
    /// A message for this plugin arrived from the server.
    fn on_message(
        &mut self,
        now: Instant,
        document: Option<&Arc<str>>,
        body: &[u8],
    ) -> Result<(), PluginError>;
    /// Time passed; handle whatever is due.
    fn handle_timeout(&mut self, _now: Instant) {}
    /// When [`ClientPlugin::handle_timeout`] should next be called.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    /// The next message to send.
    fn poll_message(&mut self) -> Option<ClientPluginMessage>;
}

/// A plugin of a [`crate::Server`]. Every hook has a default that does nothing.
pub trait ServerPlugin: Any + Send + Debug {
    /// The plugin's wire id.
    fn id(&self) -> PluginId;
    /// A client finished its handshake.
    fn on_connected(&mut self, _now: Instant, _connection: ConnectionId, _peer: PeerId) {}
    /// A client's connection ended (closed, lost or timed out); its subscriptions end with it,
    /// without an [`ServerPlugin::on_unsubscribed`] each.
    fn on_disconnected(&mut self, _now: Instant, _connection: ConnectionId, _peer: PeerId) {}
    /// A client subscribed to a document.
    fn on_subscribed(
        &mut self,
        _now: Instant,
        _connection: ConnectionId,
        _peer: PeerId,
        _document: &Arc<str>,
    ) {
    }
    /// A client unsubscribed from a document.
    fn on_unsubscribed(
        &mut self,
        _now: Instant,
        _connection: ConnectionId,
        _peer: PeerId,
        _document: &Arc<str>,
    ) {
    }
    /// A message for this plugin arrived from a client.
    fn on_message(
        &mut self,
        now: Instant,
        from: ConnectionId,
        peer: PeerId,
        document: Option<&Arc<str>>,
        body: &[u8],
    ) -> Result<(), PluginError>;
    /// Changes a client sent, before they are applied: `Err(reason)` vetoes the whole batch.
    fn check_changes(
        &mut self,
        _connection: ConnectionId,
        _peer: PeerId,
        _document: &Arc<str>,
        _changes: &[Change],
    ) -> Result<(), String> {
        Ok(())
    }
    /// The server is shutting down ([`crate::Server::shutdown`]).
    fn on_shutdown(&mut self) {}
    /// Time passed; handle whatever is due.
    fn handle_timeout(&mut self, _now: Instant) {}
    /// When [`ServerPlugin::handle_timeout`] should next be called.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    /// The next message to send.
    fn poll_message(&mut self) -> Option<ServerPluginMessage>;
}
