//! Awareness: who else is in a document and where their cursor is.
//!
//! Each replica publishes one state per document, any serde value (a name, a colour, a
//! [`crate::Cursor`] and a selection, which stay on their characters while others edit), keyed
//! by its replica id. [`Awareness`] is the client plugin, [`AwarenessServer`] the server's;
//! register both. What keeps the traffic small where Yjs-style awareness is chatty:
//!
//! - **Throttled at the source**: a client sends its state at most once per
//!   [`AwarenessConfig::throttle`] (leading and trailing edge: the first change leaves at
//!   once, the last one of a burst when the interval ends, the ones between never).
//! - **Coalesced at the server**: changes to a document's states are gathered and sent at
//!   most once per [`AwarenessConfig::flush_interval`], one message per subscriber holding
//!   every change since the last one (and not the subscriber's own).
//! - **Expired**: a state goes when its replica unsubscribes or disconnects, or when it was
//!   not renewed for [`AwarenessConfig::timeout`]; clients renew theirs every
//!   [`AwarenessConfig::renew_interval`], and a renewal that changes nothing is not forwarded.
//! - **A joiner gets the full state** of the document once it subscribes, and can ask for it
//!   again with [`Awareness::query`].
//!
//! The clients' states travel as opaque bytes through the server, which never decodes them;
//! it refuses states larger than [`AwarenessConfig::max_state_bytes`].

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::PeerId;

mod client;
mod server;

pub use client::Awareness;
pub use server::AwarenessServer;

/// Timing and limits of awareness, for both sides.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AwarenessConfig {
    /// Client: shortest time between two sends of the local state of one document.
    pub throttle: Duration,
    /// Client: how often an unchanged local state is sent again so that it does not expire.
    pub renew_interval: Duration,
    /// Server: how long a state lives without renewal. Client: how long remote states are
    /// kept while the server is unreachable.
    pub timeout: Duration,
    /// Server: shortest time between two messages about one document's states.
    pub flush_interval: Duration,
    /// Server: the largest encoded state accepted.
    pub max_state_bytes: usize,
}

impl Default for AwarenessConfig {
    fn default() -> Self {
        AwarenessConfig {
            throttle: Duration::from_millis(50),
            renew_interval: Duration::from_secs(15),
            timeout: Duration::from_secs(30),
            flush_interval: Duration::from_millis(50),
            max_state_bytes: 16 * 1024,
        }
    }
}

impl AwarenessConfig {
    /// Set [`AwarenessConfig::throttle`].
    pub fn with_throttle(mut self, throttle: Duration) -> Self {
        self.throttle = throttle;
        self
    }

    /// Set [`AwarenessConfig::timeout`] and [`AwarenessConfig::renew_interval`] (at most
    /// half the timeout, so that one lost renewal does not expire a live state).
    pub fn with_timeout(mut self, timeout: Duration, renew_interval: Duration) -> Self {
        self.timeout = timeout;
        self.renew_interval = renew_interval.min(timeout / 2);
        self
    }

    /// Set [`AwarenessConfig::flush_interval`].
    pub fn with_flush_interval(mut self, flush_interval: Duration) -> Self {
        self.flush_interval = flush_interval;
        self
    }

    /// Set [`AwarenessConfig::max_state_bytes`].
    pub fn with_max_state_bytes(mut self, max_state_bytes: usize) -> Self {
        self.max_state_bytes = max_state_bytes;
        self
    }
}

/// A change in who is present in a document, from [`Awareness::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AwarenessEvent {
    /// A replica's state appeared.
    Joined {
        /// The document.
        document: Arc<str>,
        /// The replica.
        peer: PeerId,
    },
    /// A replica's state changed.
    Updated {
        /// The document.
        document: Arc<str>,
        /// The replica.
        peer: PeerId,
    },
    /// A replica's state is gone (it left, cleared it, or expired).
    Left {
        /// The document.
        document: Arc<str>,
        /// The replica.
        peer: PeerId,
    },
}

/// Every awareness message concerns one document.
fn document_of(document: Option<&Arc<str>>) -> Result<&Arc<str>, crate::plugin::PluginError> {
    document
        .ok_or_else(|| crate::plugin::PluginError::Malformed("awareness message without a document".into()))
}

/// The awareness plugin's messages (postcard, inside a `Plugin` message whose document slot
/// names the document). Variants are only appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum WireMessage {
    /// Client to server: this replica's state (`None`: cleared). `clock` grows with every
    /// change; a renewal repeats it.
    Set { clock: u64, state: Option<Vec<u8>> },
    /// Client to server: send me every state of the document.
    Query,
    /// Server to client: states that changed (`full`: every state; any replica missing
    /// from it has left).
    States { full: bool, entries: Vec<WireEntry> },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct WireEntry {
    peer: PeerId,
    clock: u64,
    /// `None`: the replica left.
    state: Option<Vec<u8>>,
}

#[cfg(test)]
mod tests;
