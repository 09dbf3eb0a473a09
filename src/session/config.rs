//! Configuration of the sessions: timers, limits, policies.

use std::time::Duration;

use crate::wire::WireLimits;
use crate::{DocumentConfig, PeerId};

/// Configuration of a [`crate::ClientSession`]. Start from [`Default`] and the `with_*` methods.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// A name for the server's logs and events.
    pub client_name: String,
    /// Seed of the generator that jitters reconnection delays. Give each client its own (for
    /// example from your RNG), so that clients dropped together do not come back together.
    pub rng_seed: u64,
    /// How long the server may take to answer the handshake.
    pub handshake_timeout: Duration,
    /// Ping the server after this long without sending anything.
    pub ping_interval: Duration,
    /// Consider the connection dead when nothing was heard for this long after a ping.
    pub ping_timeout: Duration,
    /// First reconnection delay; doubled after each failed attempt.
    pub reconnect_initial_delay: Duration,
    /// Longest reconnection delay.
    pub reconnect_max_delay: Duration,
    /// Give up after this many attempts in a row (`None`: never give up).
    pub max_reconnect_attempts: Option<u32>,
    /// Limits on frames received from the server.
    pub limits: WireLimits,
    /// The credential sent in the handshake (empty: none); see [`crate::auth`]. Change it on
    /// a live session with [`crate::ClientSession::set_token`].
    pub token: Vec<u8>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            client_name: String::new(),
            rng_seed: 0,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            ping_timeout: Duration::from_secs(10),
            reconnect_initial_delay: Duration::from_millis(250),
            reconnect_max_delay: Duration::from_secs(30),
            max_reconnect_attempts: None,
            limits: WireLimits::default(),
            token: Vec::new(),
        }
    }
}

impl ClientConfig {
    /// Set [`ClientConfig::client_name`].
    pub fn with_client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = name.into();
        self
    }

    /// Set [`ClientConfig::rng_seed`].
    pub fn with_rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = seed;
        self
    }

    /// Set [`ClientConfig::handshake_timeout`].
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Set [`ClientConfig::ping_interval`] and [`ClientConfig::ping_timeout`].
    pub fn with_ping(mut self, interval: Duration, timeout: Duration) -> Self {
        self.ping_interval = interval;
        self.ping_timeout = timeout;
        self
    }

    /// Set the reconnection backoff: first delay, longest delay, and attempts before giving
    /// up (`None`: never).
    pub fn with_reconnect(mut self, initial: Duration, max: Duration, attempts: Option<u32>) -> Self {
        self.reconnect_initial_delay = initial;
        self.reconnect_max_delay = max;
        self.max_reconnect_attempts = attempts;
        self
    }

    /// Set [`ClientConfig::limits`].
    pub fn with_limits(mut self, limits: WireLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Set [`ClientConfig::token`].
    pub fn with_token(mut self, token: impl Into<Vec<u8>>) -> Self {
        self.token = token.into();
        self
    }
}

/// Configuration of a [`crate::Server`]. Start from [`Default`] and the `with_*` methods.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The peer id of documents [`crate::Server::in_memory`] creates (the server itself never
    /// edits them).
    pub peer: PeerId,
    /// Configuration of documents [`crate::Server::in_memory`] creates.
    pub document: DocumentConfig,
    /// Create a document when a client subscribes to one that does not exist.
    pub create_on_subscribe: bool,
    /// Close connections that have not finished the handshake after this long.
    pub handshake_timeout: Duration,
    /// Close connections that sent nothing for this long (clients ping more often).
    pub idle_timeout: Duration,
    /// The ping interval the server asks clients to use.
    pub ping_interval: Duration,
    /// Most documents one connection may subscribe at once.
    pub max_documents_per_connection: usize,
    /// How long an acknowledgement may wait for another frame to the same client to ride
    /// along with, before it is sent on its own. A client typing fast then gets one ack frame
    /// per delay instead of one per keystroke; "all changes saved" shows at most this late.
    /// Zero sends every ack at once.
    pub ack_delay: Duration,
    /// Flow-control window per connection: document data sent beyond what the client has
    /// reported receiving. A client that reads slowly gets its changes later, merged, and
    /// the server holds nothing for it but a version vector per document. Zero turns flow
    /// control off.
    pub window_bytes: u32,
    /// Close a connection whose window stayed full this long (`None`: wait forever, catching
    /// it up whenever it reads again).
    pub slow_consumer_timeout: Option<Duration>,
    /// Trim a document's history once every subscriber holds a version at least this many
    /// operations past the last trim (`None`: keep the whole history). Replicas that come
    /// back from further behind get a snapshot instead of the changes they miss, and their
    /// offline edits still merge.
    pub compact_after_ops: Option<u64>,
    /// Documents are durable: the server loads them from storage on first subscribe,
    /// hands every change to storage, and acknowledges a change only once storage reports
    /// it committed (see [`crate::Server::poll_storage`]; the runtime must then drain
    /// those requests). Off: documents live only in the [`crate::DocumentStore`].
    pub durable: bool,
    /// With [`ServerConfig::durable`]: a document nobody subscribes to leaves memory after
    /// this long, once all of it is committed, and loads again on the next subscribe. What
    /// idle documents hold in memory is bounded by the documents used within this time.
    pub unload_after: Duration,
    /// With [`ServerConfig::durable`]: how long to wait before retrying a commit that failed.
    pub commit_retry_delay: Duration,
    /// Limits on frames received from clients.
    pub limits: WireLimits,
    /// Sustained rate a connection may send messages at, per second: each batch of changes
    /// (a client sends at most one per document and poll) and each other message (pings,
    /// subscriptions, presence) counts one. What one batch may hold is bounded by
    /// [`ServerConfig::limits`] instead, so that offline edits pushed on reconnect arrive
    /// whole. A connection past the rate, beyond [`ServerConfig::message_burst`], is closed
    /// with [`crate::wire::CloseReason::LimitExceeded`]. Zero turns the limit off.
    pub max_messages_per_second: u32,
    /// How far above the sustained rate a connection may go for a while: the bucket of the
    /// token-bucket limiter.
    pub message_burst: u32,
    /// Most connections from one address that have not finished the handshake (including
    /// authentication); more are refused by [`crate::Server::accept_from`]. Behind a proxy
    /// every client shares its address: raise this there.
    pub max_unauthenticated_per_address: usize,
    /// Most frame bytes sent to a connection beyond what it reported receiving. Document
    /// data waits for the flow-control window; this bounds the rest (plugin messages,
    /// answers) for a client that stops reading: past it the connection is closed with
    /// [`crate::wire::CloseReason::SlowConsumer`]. One frame larger than this (a large
    /// document's first sync) still goes out when nothing else is pending.
    pub max_pending_outbound_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            peer: PeerId::new(0),
            document: DocumentConfig::default().with_max_decoded_bytes(256 * 1024 * 1024),
            create_on_subscribe: true,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(45),
            ping_interval: Duration::from_secs(15),
            max_documents_per_connection: 1024,
            ack_delay: Duration::from_millis(20),
            window_bytes: 1024 * 1024,
            slow_consumer_timeout: Some(Duration::from_secs(60)),
            compact_after_ops: None,
            durable: false,
            unload_after: Duration::from_secs(30),
            commit_retry_delay: Duration::from_secs(1),
            limits: WireLimits::default(),
            max_messages_per_second: 1_000,
            message_burst: 10_000,
            max_unauthenticated_per_address: 16,
            max_pending_outbound_bytes: 32 * 1024 * 1024,
        }
    }
}

impl ServerConfig {
    /// Set [`ServerConfig::window_bytes`] and [`ServerConfig::slow_consumer_timeout`].
    pub fn with_flow_control(mut self, window_bytes: u32, slow_consumer_timeout: Option<Duration>) -> Self {
        self.window_bytes = window_bytes;
        self.slow_consumer_timeout = slow_consumer_timeout;
        self
    }

    /// Set [`ServerConfig::ack_delay`].
    pub fn with_ack_delay(mut self, delay: Duration) -> Self {
        self.ack_delay = delay;
        self
    }

    /// Set [`ServerConfig::compact_after_ops`].
    pub fn with_compact_after_ops(mut self, ops: Option<u64>) -> Self {
        self.compact_after_ops = ops;
        self
    }

    /// Make documents durable ([`ServerConfig::durable`]), unloading idle ones after
    /// `unload_after`.
    pub fn with_durable(mut self, unload_after: Duration) -> Self {
        self.durable = true;
        self.unload_after = unload_after;
        self
    }

    /// Set [`ServerConfig::create_on_subscribe`].
    pub fn with_create_on_subscribe(mut self, create: bool) -> Self {
        self.create_on_subscribe = create;
        self
    }

    /// Set [`ServerConfig::handshake_timeout`].
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Set [`ServerConfig::idle_timeout`].
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Set [`ServerConfig::ping_interval`].
    pub fn with_ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Set [`ServerConfig::max_documents_per_connection`].
    pub fn with_max_documents_per_connection(mut self, max: usize) -> Self {
        self.max_documents_per_connection = max;
        self
    }

    /// Set [`ServerConfig::limits`].
    pub fn with_limits(mut self, limits: WireLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Set [`ServerConfig::max_messages_per_second`] and [`ServerConfig::message_burst`].
    pub fn with_rate_limit(mut self, per_second: u32, burst: u32) -> Self {
        self.max_messages_per_second = per_second;
        self.message_burst = burst;
        self
    }

    /// Set [`ServerConfig::max_unauthenticated_per_address`].
    pub fn with_max_unauthenticated_per_address(mut self, max: usize) -> Self {
        self.max_unauthenticated_per_address = max;
        self
    }

    /// Set [`ServerConfig::max_pending_outbound_bytes`].
    pub fn with_max_pending_outbound_bytes(mut self, bytes: u64) -> Self {
        self.max_pending_outbound_bytes = bytes;
        self
    }
}
