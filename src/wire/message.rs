//! The messages of the sync protocol.
//!
//! Messages are postcard-encoded: the variant index is the message tag (a varint), fields
//! follow in declaration order. New variants are only ever appended, so tags stay stable;
//! `docs/PROTOCOL.md` lists them with their byte layout.

use serde::{Deserialize, Serialize};

use crate::{PeerId, VersionVector};

/// A document's number on one connection, chosen by the client when it subscribes, so that
/// a document's name travels once per connection rather than in every frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DocSlot(pub u32);

/// One protocol message. A frame carries one or more.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// Tag 0, client to server, first message of a connection. Its layout never changes, so
    /// that any server can read the versions and answer a mismatch with a clear error.
    Hello {
        /// Oldest protocol version the client speaks.
        min_version: u8,
        /// Newest protocol version the client speaks.
        max_version: u8,
        /// The client's replica id: the peer of the changes it makes.
        peer: PeerId,
        /// A name for logs and events.
        client_name: String,
        /// An opaque credential (empty: none), checked by the server's authenticator
        /// ([`crate::auth`]).
        #[serde(with = "byte_string")]
        token: Vec<u8>,
    },
    /// Tag 1, server to client: the handshake succeeded.
    Welcome {
        /// The protocol version both sides now speak.
        version: u8,
        /// How often the client should ping, in milliseconds.
        ping_interval_ms: u32,
        /// Flow-control window: the server sends at most this many bytes of document data
        /// beyond what the client reported with `Received`.
        window_bytes: u32,
    },
    /// Tag 2, client to server: start syncing a document under `doc`.
    Subscribe {
        /// The slot the client chose for the document on this connection.
        doc: DocSlot,
        /// The document's name.
        name: String,
        /// The client's version of the document.
        version: VersionVector,
    },
    /// Tag 3, client to server: stop syncing a document.
    Unsubscribe {
        /// The document's slot.
        doc: DocSlot,
    },
    /// Tag 4, server to client: answer to `Subscribe`: the server's version and everything the
    /// client lacks, as an update [`crate::Document::import`] accepts (changes since the client's
    /// version, or the whole document, snapshot and tail, for a late joiner).
    Sync {
        /// The document's slot.
        doc: DocSlot,
        /// The server's version of the document.
        version: VersionVector,
        /// What the client lacks.
        #[serde(with = "byte_string")]
        update: Vec<u8>,
    },
    /// Tag 5, both ways: changes, encoded with the connection's change codec (stateful per
    /// direction, see `docs/PROTOCOL.md`).
    Changes {
        /// The document's slot.
        doc: DocSlot,
        /// The encoded changes.
        #[serde(with = "byte_string")]
        changes: Vec<u8>,
    },
    /// Tag 6, server to client: every `Changes` batch this client sent for `doc` up to and
    /// including number `batch` (counted from 1 per document and connection) is applied.
    Ack {
        /// The document's slot.
        doc: DocSlot,
        /// The last applied batch.
        batch: u32,
    },
    /// Tag 7, both ways: the sender could not apply changes because it lacks their
    /// dependencies; it holds `version` and asks for everything after it.
    NeedChanges {
        /// The document's slot.
        doc: DocSlot,
        /// The sender's version.
        version: VersionVector,
    },
    /// Tag 8, both ways: liveness probe.
    Ping {
        /// Echoed in the pong.
        nonce: u32,
    },
    /// Tag 9, both ways: answer to a ping.
    Pong {
        /// The ping's nonce.
        nonce: u32,
    },
    /// Tag 10, both ways: a request was refused; the connection stays open unless a `Close`
    /// follows.
    Error {
        /// The document concerned, if any.
        doc: Option<DocSlot>,
        /// What went wrong.
        code: ErrorCode,
        /// Human-readable detail.
        detail: String,
    },
    /// Tag 11, both ways: the sender closes the connection; nothing follows.
    Close {
        /// Why.
        reason: CloseReason,
    },
    /// Tag 12, client to server: flow control. The client has received `bytes` bytes of
    /// frames on this connection in total; the server may send up to its window beyond that.
    Received {
        /// Total frame bytes received on this connection.
        bytes: u64,
    },
    /// Tag 13, both ways: a message of a plugin ([`crate::plugin`]). A receiver without the
    /// plugin answers `Error` with [`ErrorCode::UnknownPlugin`] and carries on.
    Plugin {
        /// The plugin's wire id.
        plugin: crate::PluginId,
        /// The document the message concerns, if any.
        doc: Option<DocSlot>,
        /// The plugin's encoding of its message.
        #[serde(with = "byte_string")]
        body: Vec<u8>,
    },
    /// Tag 14, client to server, after the handshake: a new credential (a refreshed token).
    /// The server checks it as in `Hello`: accepted, it replaces the connection's identity
    /// and every subscription's permission is decided again; refused, the connection closes
    /// with [`CloseReason::Unauthorized`].
    Authenticate {
        /// The credential.
        #[serde(with = "byte_string")]
        token: Vec<u8>,
    },
    /// Tag 15, server to client: what the client may do with a subscribed document, sent
    /// after `Sync` when it is not read-write, and whenever it changes. `Denied` never
    /// travels here: a denied subscription is refused or evicted with
    /// [`ErrorCode::Forbidden`].
    Access {
        /// The document's slot.
        doc: DocSlot,
        /// The permission now.
        permission: crate::auth::Permission,
    },
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// No protocol version in common.
    UnsupportedVersion,
    /// A message arrived that the protocol does not allow at this point.
    UnexpectedMessage,
    /// A frame or message could not be decoded.
    Malformed,
    /// A slot that is not subscribed.
    UnknownDocument,
    /// The document does not exist and the server does not create documents on subscribe.
    DocumentNotFound,
    /// Changes were refused by the document (invalid, conflicting or too many pending).
    ChangesRefused,
    /// A configured limit was exceeded.
    LimitExceeded,
    /// A `Plugin` message for a plugin the receiver does not have.
    UnknownPlugin,
    /// A server plugin vetoed the changes of a batch: none of it was applied or forwarded.
    ChangesVetoed,
    /// A plugin refused one of its messages.
    PluginRefused,
    /// The server cannot load the document from its storage; subscribing again retries.
    StorageFailed,
    /// The credential was refused (missing, malformed, badly signed or expired); a `Close`
    /// with [`CloseReason::Unauthorized`] follows.
    Unauthorized,
    /// The client may not use this document: the subscription was refused, or evicted after
    /// a permission change.
    Forbidden,
    /// The client may only read this document: what it sent for it was refused and reached
    /// no one.
    ReadOnly,
}

/// Why a connection was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CloseReason {
    /// The application closed it.
    Normal,
    /// No protocol version in common.
    UnsupportedVersion,
    /// The handshake did not finish in time.
    HandshakeTimeout,
    /// Nothing was heard from the peer for too long.
    IdleTimeout,
    /// The peer sent something that is not valid protocol.
    ProtocolViolation,
    /// The peer exceeded a configured limit.
    LimitExceeded,
    /// The server is shutting down.
    ServerShutdown,
    /// The client did not keep up with the document's changes for too long.
    SlowConsumer,
    /// The client's credential was refused.
    Unauthorized,
    /// The client's identity expired and it did not authenticate again in time.
    AuthenticationExpired,
}

/// Byte fields as one block: the same bytes on the wire as a sequence of `u8` (length, then
/// the bytes), but postcard copies them in one go instead of visiting them one by one, which
/// showed up in profiles of live typing.
pub(crate) mod byte_string {
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};
    use serde::ser::Serializer;

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // Formats without a bytes type (JSON in logs, say) send a sequence.
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(byte) = seq.next_element()? {
                bytes.push(byte);
            }
            Ok(bytes)
        }
    }
}
