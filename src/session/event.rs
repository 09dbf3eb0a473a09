//! What the sessions report.

use std::sync::Arc;

use crate::wire::CloseReason;
use crate::{PeerId, ProtocolError};

/// A connection's number on a [`crate::Server`], given by [`crate::Server::accept`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub u64);

/// A frame for the runtime to send on one server connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transmit {
    /// The connection to send it on.
    pub connection: ConnectionId,
    /// One whole frame: one WebSocket binary message, or one length-prefixed record on a
    /// byte stream ([`crate::wire::length_prefixed`]).
    pub frame: Vec<u8>,
}

/// Where a client stands with the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectionStatus {
    /// Not connected and not trying to be (before `connect`, after `close`, or after giving
    /// up reconnecting).
    Disconnected,
    /// Opening the first connection or handshaking on it.
    Connecting,
    /// Handshake done: changes flow.
    Connected,
    /// The connection was lost; waiting for the next attempt or handshaking on it.
    Reconnecting,
    /// A fatal error (no protocol version in common); no further attempts.
    Error,
}

/// Something a [`crate::ClientSession`] reports. Drain with `poll_event`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The runtime should open a transport to the server now and call `handle_connected`
    /// once it is open (or `handle_disconnected` if opening fails).
    OpenTransport,
    /// The runtime should close the current transport (its frames up to now may still be
    /// flushed); the session already considers it gone.
    CloseTransport,
    /// The connection status changed.
    StatusChanged(ConnectionStatus),
    /// A document is in sync with the server: its state and the server's have been exchanged
    /// on this connection.
    Synced {
        /// The document's name.
        document: Arc<str>,
    },
    /// Changes from other replicas were applied to a document.
    RemoteChanges {
        /// The document's name.
        document: Arc<str>,
    },
    /// Every local change of a document has been acknowledged by the server.
    Saved {
        /// The document's name.
        document: Arc<str>,
    },
    /// Received changes wait for missing dependencies; the session asked for them.
    OutOfSync {
        /// The document's name.
        document: Arc<str>,
    },
    /// The local copy of a document refused what the server sent (see the error: a
    /// timestamp too far ahead of this replica's wall clock, a peer id reused with different
    /// content). The document stopped syncing; the connection and the other documents carry
    /// on. Fix the cause and subscribe the document again to retry.
    DocumentRefused {
        /// The document's name.
        document: Arc<str>,
        /// Why it refused.
        error: crate::Error,
    },
    /// A server plugin vetoed local changes of a document (for example the user may only
    /// read it). None of the batch reached the server or another replica; this copy keeps
    /// them, and since every later edit depends on them the document stopped syncing.
    /// Subscribe a fresh copy to sync again.
    ChangesVetoed {
        /// The document's name.
        document: Arc<str>,
        /// The plugin's reason.
        reason: String,
    },
    /// The transport failed: the connection could not be opened (refused, unreachable, a
    /// TLS certificate not trusted, a WebSocket handshake refused) or broke with an error.
    /// The session reconnects as usual; this says why it has to.
    TransportFailed {
        /// What the runtime reported, for logs and users.
        detail: String,
    },
    /// The server refused the credential ([`crate::ClientConfig::token`]): the status is
    /// [`ConnectionStatus::Error`] and the session does not retry until
    /// [`crate::ClientSession::set_token`] gives it another.
    AuthenticationFailed {
        /// The server's reason.
        detail: String,
    },
    /// What this client may do with a document changed (told at subscribe when it is not
    /// read-write, and whenever the server changes it). `ReadOnly`: local edits stay local
    /// (and leave if write access comes back); should the copy hold such edits while the
    /// server has trimmed the history they would merge into, it can no longer follow the
    /// document and is refused ([`ClientEvent::DocumentRefused`] with
    /// [`crate::Error::HistoryTrimmed`]): subscribe a fresh copy. `Denied`: the document
    /// stopped syncing, as when it is refused; subscribe it again to retry.
    PermissionChanged {
        /// The document's name.
        document: Arc<str>,
        /// The permission now.
        permission: crate::auth::Permission,
    },
    /// Something went wrong; the session carries on (or reconnects) unless the status says
    /// otherwise.
    Error(ProtocolError),
}

/// Something a [`crate::Server`] reports. Drain with `poll_event`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A client finished the handshake.
    Handshake {
        /// The connection.
        connection: ConnectionId,
        /// The client's replica id.
        peer: PeerId,
        /// The name the client gave.
        client_name: String,
    },
    /// A document was created for a subscription.
    DocumentCreated {
        /// The document's name.
        document: Arc<str>,
    },
    /// A durable server loaded a stored document for a subscription.
    DocumentLoaded {
        /// The document's name.
        document: Arc<str>,
    },
    /// A durable server dropped an idle document from memory (all of it committed); the
    /// next subscribe loads it again.
    DocumentUnloaded {
        /// The document's name.
        document: Arc<str>,
    },
    /// Durable storage failed: a document that cannot be loaded (its subscribers were
    /// refused) or a commit that failed (retried; its changes stay unacknowledged).
    StorageFailed {
        /// The document, for a failed load.
        document: Option<Arc<str>>,
        /// What storage said.
        error: crate::StorageError,
    },
    /// A client subscribed to a document.
    Subscribed {
        /// The connection.
        connection: ConnectionId,
        /// The document's name.
        document: Arc<str>,
    },
    /// A client unsubscribed from a document.
    Unsubscribed {
        /// The connection.
        connection: ConnectionId,
        /// The document's name.
        document: Arc<str>,
    },
    /// Changes from a client were applied.
    ChangesApplied {
        /// The connection they came from.
        connection: ConnectionId,
        /// The document's name.
        document: Arc<str>,
        /// How many changes were applied (including earlier ones they unblocked).
        applied: usize,
    },
    /// Changes from a client wait for missing dependencies; the server asked for them.
    OutOfSync {
        /// The connection.
        connection: ConnectionId,
        /// The document's name.
        document: Arc<str>,
    },
    /// A server plugin vetoed a batch of changes: none of it was applied or forwarded, the
    /// author was told, and the subscription takes no more changes.
    ChangesVetoed {
        /// The connection they came from.
        connection: ConnectionId,
        /// The document's name.
        document: Arc<str>,
        /// The plugin that vetoed.
        plugin: crate::PluginId,
        /// Its reason.
        reason: String,
    },
    /// A document's history was trimmed up to `version`, which every subscriber had passed
    /// (see [`crate::ServerConfig::compact_after_ops`]): the seed's "snapshot created".
    HistoryCompacted {
        /// The document's name.
        document: Arc<str>,
        /// The new start of the kept history.
        version: crate::VersionVector,
    },
    /// A connection ended: the runtime should close its transport after sending the frames
    /// already polled. Nothing more is sent or expected on it.
    ConnectionClosed {
        /// The connection.
        connection: ConnectionId,
        /// Why.
        reason: CloseReason,
    },
    /// An [`crate::auth::Authenticator`] answered
    /// [`crate::auth::AuthDecision::Pending`]: check the credential, then call
    /// [`crate::Server::complete_authentication`] (within the handshake timeout).
    AuthenticationRequested {
        /// The connection.
        connection: ConnectionId,
        /// The replica id the client claims.
        peer: PeerId,
        /// The name the client gave (empty for a refreshed token).
        client_name: String,
        /// The credential.
        token: Vec<u8>,
    },
    /// A client authenticated, in its handshake or with a refreshed token.
    Authenticated {
        /// The connection.
        connection: ConnectionId,
        /// Who it is.
        subject: Arc<str>,
    },
    /// A client's credential was refused, or its identity expired; the connection closes.
    AuthenticationFailed {
        /// The connection.
        connection: ConnectionId,
        /// Why.
        reason: String,
    },
    /// A client asked for more than its permission allows: a subscription it may not have
    /// (`Denied`), or changes or plugin messages for a document it may only read
    /// (`ReadOnly`). It was told; nothing reached anyone.
    AccessRefused {
        /// The connection.
        connection: ConnectionId,
        /// The document's name.
        document: Arc<str>,
        /// The client's permission on it.
        permission: crate::auth::Permission,
    },
    /// A live subscription's permission changed (a refreshed token, or
    /// [`crate::Server::set_identity`] / [`crate::Server::refresh_permissions`]); `Denied`
    /// evicted it.
    PermissionChanged {
        /// The connection.
        connection: ConnectionId,
        /// The document's name.
        document: Arc<str>,
        /// The permission now.
        permission: crate::auth::Permission,
    },
    /// A client sent something wrong; see the error (the connection may carry on).
    Error {
        /// The connection.
        connection: ConnectionId,
        /// What went wrong.
        error: ProtocolError,
    },
}
