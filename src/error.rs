//! The crate's error type.

use crate::doc::clock::ClockError;
use crate::doc::id::OpId;
use crate::doc::op::ContainerKind;

/// Everything that can go wrong in `crdt-sync`.
///
/// Errors from bad input (a corrupt buffer, a hostile change) never leave a document half
/// changed: the operation that returned the error had no effect.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Encoded bytes could not be decoded.
    #[error("decode error: {0}")]
    Decode(#[from] DecodeError),
    /// A decoded change is well-formed but cannot belong to this document.
    #[error("invalid change {change}: {reason}")]
    InvalidChange {
        /// The first id of the offending change.
        change: OpId,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A change reuses ids that this document already holds with different content: two
    /// replicas share a peer id.
    #[error("change {0} conflicts with a known change using the same ids (peer id reused?)")]
    ConflictingChange(OpId),
    /// The hybrid logical clock refused a timestamp.
    #[error(transparent)]
    Clock(#[from] ClockError),
    /// This peer has used up its operation counter.
    #[error("operation counter of this peer is exhausted; use a new peer id")]
    CounterOverflow,
    /// Too many changes are waiting for missing dependencies.
    #[error("{pending} changes wait for missing dependencies (limit {limit})")]
    TooManyPending {
        /// Changes already waiting.
        pending: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A position or length lies outside the container.
    #[error("index {index} out of bounds (length {len})")]
    OutOfBounds {
        /// The requested index (or end of range).
        index: usize,
        /// The container's length.
        len: usize,
    },
    /// A UTF-16 or UTF-8 offset falls inside a character.
    #[error("offset {offset} is inside a character")]
    NotCharBoundary {
        /// The offset asked for.
        offset: usize,
    },
    /// A container was used as a kind it is not.
    #[error("container is a {actual:?}, not a {expected:?}")]
    WrongKind {
        /// The kind the caller asked for.
        expected: ContainerKind,
        /// The kind it is.
        actual: ContainerKind,
    },
    /// A child container id that this document does not know.
    #[error("unknown container")]
    UnknownContainer,
    /// The requested history was trimmed away.
    #[error("history before the requested version has been trimmed")]
    HistoryTrimmed,
    /// A version (frontier) names operations this document does not have, or cuts a change in
    /// the middle.
    #[error("unknown version")]
    UnknownVersion,
    /// A value could not be converted through serde.
    #[error("value conversion failed: {0}")]
    InvalidValue(String),
    /// A counter increment would overflow `i64`.
    #[error("counter overflow")]
    ValueOverflow,
}

/// Why bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is shorter than its header or a length it declares.
    #[error("input truncated")]
    Truncated,
    /// The input does not start with the crdt-sync magic bytes.
    #[error("not a crdt-sync encoding")]
    BadMagic,
    /// The encoding version is newer than this library understands.
    #[error("unsupported encoding version {0}")]
    UnsupportedVersion(u8),
    /// The bytes encode something else (changes where a snapshot was expected, ...).
    #[error("expected {expected}, found {found}")]
    WrongKind {
        /// What the caller asked to decode.
        expected: &'static str,
        /// What the bytes hold.
        found: &'static str,
    },
    /// Unknown flag bits are set.
    #[error("unknown flags {0:#04x}")]
    UnknownFlags(u8),
    /// The checksum does not match: the bytes were corrupted.
    #[error("checksum mismatch")]
    ChecksumMismatch,
    /// A declared size exceeds the configured limit; nothing was allocated for it.
    #[error("declared size {size} exceeds the limit {limit}")]
    TooLarge {
        /// The declared size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The lz4 block is corrupt.
    #[error("corrupt lz4 data")]
    Lz4,
    /// The payload does not follow the format.
    #[error("malformed payload: {0}")]
    Malformed(String),
}

/// What went wrong in a sync session. Sessions report these as events and carry on, close
/// the connection, or (client side) reconnect; see each variant.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame could not be decoded; the connection is closed.
    #[error("undecodable frame: {0}")]
    Decode(#[from] DecodeError),
    /// No protocol version in common; the connection is closed and the client does not retry.
    #[error("no protocol version in common: ours {ours:?}, theirs {theirs:?}")]
    UnsupportedVersion {
        /// The range this side speaks.
        ours: (u8, u8),
        /// The range the other side speaks (as far as known).
        theirs: (u8, u8),
    },
    /// A message the protocol does not allow at this point; the connection is closed.
    #[error("unexpected {0} message")]
    UnexpectedMessage(&'static str),
    /// A document slot that is not subscribed on this connection.
    #[error("unknown document slot {0}")]
    UnknownDocument(u32),
    /// The other side refused a request.
    #[error("refused ({code:?}): {detail}")]
    Refused {
        /// The reason code.
        code: crate::wire::ErrorCode,
        /// The other side's explanation.
        detail: String,
    },
    /// A document refused received changes.
    #[error("document error: {0}")]
    Document(#[from] Error),
    /// A configured limit was exceeded.
    #[error("limit exceeded: {0}")]
    LimitExceeded(&'static str),
    /// The other side did not answer in time; the connection is closed.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The other side closed the connection.
    #[error("connection closed by the other side: {0:?}")]
    Closed(crate::wire::CloseReason),
    /// A plugin did not accept a message from the other side (which was told so); the
    /// connection carries on.
    #[error("plugin {}: {error}", plugin.0)]
    Plugin {
        /// The plugin.
        plugin: crate::PluginId,
        /// What it said.
        error: crate::plugin::PluginError,
    },
}
