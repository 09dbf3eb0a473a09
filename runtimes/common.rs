//! What the WebSocket runtimes share: the clock, socket settings, traffic counters, and the
//! runtime-independent halves of their drive loops (routing the session's frames and events,
//! answering commands, waking "saved" waiters). Each runtime keeps only its waiting: on what,
//! and how.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tungstenite::protocol::WebSocketConfig;

use crate::store::DocumentStore;
use crate::{
    ClientEvent, ClientSession, ConnectionId, ConnectionStatus, DurableStorage, Server, ServerEvent,
    StorageOutcome, StorageRequest, SyncDocument, perform_storage,
};

/// How many events a slow `events()` receiver may fall behind before it misses some (it is
/// told how many).
pub(crate) const EVENT_BUFFER: usize = 1024;
/// Frames a server may have read and not yet handed to the session: a connection's socket
/// is not read further until there is room, which pushes back on a flooding client.
pub(crate) const INBOUND_FRAMES: usize = 64;
/// How long a graceful shutdown waits for connections to send what is queued.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a new connection may take over its WebSocket handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The runtimes' clock: the only place they read time.
pub(crate) fn now() -> Instant {
    #[allow(clippy::disallowed_methods)] // runtimes feed the sans-IO core its time
    Instant::now()
}

/// WebSocket settings matching the session's frame limit, so that an oversized message is
/// refused by the socket layer before it is buffered whole.
///
/// The read buffer is 4 KiB instead of tungstenite's 128 KiB: tungstenite zeroes that much
/// on every read attempt, which cost 10% of the CPU of a loopback trace replay where frames
/// are a few bytes, and at 16 KiB still 5.6% of the server's in the 1,000-client load run
/// (`perf`; below 1.5% at 4 KiB). Large frames only take more reads.
pub(crate) fn ws_config(max_frame_bytes: usize) -> WebSocketConfig {
    let max = max_frame_bytes.saturating_add(64);
    WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .read_buffer_size(4 * 1024)
}

/// Where a WebSocket request goes.
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `wss://`.
    pub(crate) tls: bool,
}

impl Target {
    pub(crate) fn of(
        request: &tungstenite::handshake::client::Request,
    ) -> Result<Target, tungstenite::Error> {
        use tungstenite::error::UrlError;
        let uri = request.uri();
        let (tls, port) = match uri.scheme_str() {
            Some("ws") => (false, 80),
            Some("wss") => (true, 443),
            _ => return Err(tungstenite::Error::Url(UrlError::UnsupportedUrlScheme)),
        };
        let host = uri.host().ok_or(tungstenite::Error::Url(UrlError::NoHostName))?;
        // An IPv6 literal comes in brackets.
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(Target { host, port: uri.port_u16().unwrap_or(port), tls })
    }

    /// The name the server's certificate must carry (a DNS name or an IP address).
    pub(crate) fn server_name(&self) -> Result<rustls_pki_types::ServerName<'static>, tungstenite::Error> {
        rustls_pki_types::ServerName::try_from(self.host.clone()).map_err(|e| {
            tungstenite::Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{}: {e}", self.host),
            ))
        })
    }
}

// ---- traffic -------------------------------------------------------------------------------

/// What crossed a server's sockets since it started: protocol frames (WebSocket binary
/// messages) and their payload bytes, both ways, all connections together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Traffic {
    /// Frames received from clients.
    pub frames_in: u64,
    /// Their bytes.
    pub bytes_in: u64,
    /// Frames sent to clients.
    pub frames_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
}

#[derive(Debug, Default)]
pub(crate) struct TrafficCounters {
    frames_in: AtomicU64,
    bytes_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_out: AtomicU64,
}

impl TrafficCounters {
    pub(crate) fn received(&self, len: usize) {
        self.frames_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
    }

    pub(crate) fn sent(&self, len: usize) {
        self.frames_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(len as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Traffic {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Traffic {
            frames_in: load(&self.frames_in),
            bytes_in: load(&self.bytes_in),
            frames_out: load(&self.frames_out),
            bytes_out: load(&self.bytes_out),
        }
    }
}

// ---- server loop ---------------------------------------------------------------------------

pub(crate) type ServerJob<S> = Box<dyn FnOnce(&mut Server<S>) + Send>;

/// What a server handle asks of its drive loop.
pub(crate) enum ServerCommand<S: DocumentStore> {
    Run(ServerJob<S>),
    Shutdown,
}

impl<S: DocumentStore> std::fmt::Debug for ServerCommand<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerCommand::Run(_) => "Run",
            ServerCommand::Shutdown => "Shutdown",
        })
    }
}

/// From a connection's socket to the drive loop.
pub(crate) enum Inbound {
    Frame(ConnectionId, Vec<u8>),
    Closed(ConnectionId),
}

/// From the drive loop to a connection's socket.
pub(crate) enum Outbound {
    Frame(QueuedFrame),
    /// The session closed the connection: send the close handshake and stop.
    Close,
}

/// A frame waiting for its connection's writer. Its bytes count against the connection's
/// queue until the writer takes them (or the queue is dropped with it).
pub(crate) struct QueuedFrame {
    bytes: Vec<u8>,
    len: u64,
    queued: Arc<AtomicU64>,
}

impl QueuedFrame {
    fn new(bytes: Vec<u8>, queued: &Arc<AtomicU64>) -> Self {
        let len = bytes.len() as u64;
        queued.fetch_add(len, Ordering::Relaxed);
        QueuedFrame { bytes, len, queued: queued.clone() }
    }

    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The bytes, for the socket: they leave the queue now.
    pub(crate) fn into_bytes(mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }
}

impl Drop for QueuedFrame {
    fn drop(&mut self) {
        self.queued.fetch_sub(self.len, Ordering::Relaxed);
    }
}

/// The drive loop's end of one connection: a channel to the task or thread writing it, and
/// the bytes queued on it.
pub(crate) struct Outlet<T> {
    pub(crate) tx: T,
    pub(crate) queued: Arc<AtomicU64>,
}

impl<T> Outlet<T> {
    pub(crate) fn new(tx: T) -> Self {
        Outlet { tx, queued: Arc::default() }
    }
}

/// How a runtime's channel queues one output for its connection's writer.
pub(crate) trait OutletSend {
    /// Queue `out`; a connection that is gone ignores it.
    fn send(&self, out: Outbound);
}

/// The connections a server drive loop writes to.
pub(crate) type Outlets<T> = HashMap<ConnectionId, Outlet<T>>;

/// Hand one input from a connection to the server.
pub(crate) fn handle_inbound<S: DocumentStore, O>(
    server: &mut Server<S>,
    connections: &mut Outlets<O>,
    input: Inbound,
) {
    match input {
        Inbound::Frame(id, frame) => server.handle_input(now(), id, &frame),
        Inbound::Closed(id) => {
            connections.remove(&id);
            server.handle_disconnected(now(), id);
        }
    }
}

/// Queue every frame the server has for its connections and publish its events; a
/// connection the server closed is told to close its socket.
///
/// The session bounds what it sends beyond what a client reports receiving; a client that
/// reports more than it reads would still fill the writer's queue, so the queue itself is
/// bounded too: past `max_pending_outbound_bytes` the connection is closed as a slow
/// consumer.
pub(crate) fn flush_server<S: DocumentStore, T: OutletSend>(
    server: &mut Server<S>,
    connections: &mut Outlets<T>,
    mut publish: impl FnMut(ServerEvent),
) {
    let limit = server.config().max_pending_outbound_bytes;
    while let Some(transmit) = server.poll_transmit() {
        if let Some(outlet) = connections.get(&transmit.connection) {
            let queued = outlet.queued.load(Ordering::Relaxed);
            if queued > 0 && queued + transmit.frame.len() as u64 > limit {
                server.close_with_reason(transmit.connection, crate::wire::CloseReason::SlowConsumer);
                continue;
            }
            outlet.tx.send(Outbound::Frame(QueuedFrame::new(transmit.frame, &outlet.queued)));
        }
    }
    while let Some(event) = server.poll_event() {
        if let ServerEvent::ConnectionClosed { connection, .. } = &event
            && let Some(outlet) = connections.remove(connection)
        {
            outlet.tx.send(Outbound::Close);
        }
        publish(event);
    }
}

// ---- client loop ---------------------------------------------------------------------------

pub(crate) type ClientJob<D> = Box<dyn FnOnce(&mut ClientSession<D>) + Send>;
/// Called once the document it waits for is saved (or the client stops).
pub(crate) type SavedWaiter = Box<dyn FnOnce() + Send>;

/// What a client handle asks of its drive loop.
pub(crate) enum ClientCommand<D: SyncDocument> {
    Run(ClientJob<D>),
    WaitSaved(String, SavedWaiter),
    Close,
}

impl<D: SyncDocument> std::fmt::Debug for ClientCommand<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientCommand::Run(_) => "Run",
            ClientCommand::WaitSaved(..) => "WaitSaved",
            ClientCommand::Close => "Close",
        })
    }
}

/// A client drive loop's state besides its socket: the session and who waits for "saved".
pub(crate) struct ClientCore<D: SyncDocument> {
    pub(crate) session: ClientSession<D>,
    waiters: Vec<(String, SavedWaiter)>,
    closing: bool,
}

/// What the session asks of the transport.
pub(crate) enum TransportRequest {
    Open,
    Close,
}

impl<D: SyncDocument> ClientCore<D> {
    pub(crate) fn new(session: ClientSession<D>) -> Self {
        ClientCore { session, waiters: Vec::new(), closing: false }
    }

    /// Whether a `Close` command was taken: the loop flushes once more and stops.
    pub(crate) fn closing(&self) -> bool {
        self.closing
    }

    /// Carry out one command; `None` (every handle dropped) closes as `Close` does.
    pub(crate) fn command(&mut self, command: Option<ClientCommand<D>>) {
        match command {
            Some(ClientCommand::Run(job)) => job(&mut self.session),
            Some(ClientCommand::WaitSaved(name, waiter)) => self.waiters.push((name, waiter)),
            Some(ClientCommand::Close) | None => {
                self.session.close(now());
                self.closing = true;
            }
        }
        self.wake_saved();
    }

    /// Wake the waiters whose documents are saved now.
    pub(crate) fn wake_saved(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        let session = &self.session;
        let (saved, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.waiters).into_iter().partition(|(name, _)| session.is_saved(name));
        self.waiters = waiting;
        for (_, waiter) in saved {
            waiter();
        }
    }

    /// Publish the session's events; the transport requests among them (which the client
    /// handles itself and does not publish) are returned in order.
    pub(crate) fn drain_events(
        &mut self,
        mut publish: impl FnMut(ClientEvent),
        mut status: impl FnMut(ConnectionStatus),
    ) -> Vec<TransportRequest> {
        let mut requests = Vec::new();
        while let Some(event) = self.session.poll_event() {
            match event {
                ClientEvent::OpenTransport => requests.push(TransportRequest::Open),
                ClientEvent::CloseTransport => requests.push(TransportRequest::Close),
                other => {
                    if let ClientEvent::StatusChanged(s) = &other {
                        status(*s);
                    }
                    publish(other);
                }
            }
        }
        requests
    }

    /// Stop, giving the session back; waiters still waiting are released (they would never
    /// be woken otherwise).
    pub(crate) fn finish(self) -> ClientSession<D> {
        for (_, waiter) in self.waiters {
            waiter();
        }
        self.session
    }
}

// ---- handles of the async-io and blocking runtimes -------------------------------------------

#[cfg(any(feature = "async-io", feature = "tungstenite"))]
pub(crate) use handles::{EventHub, StatusCell};

#[cfg(any(feature = "async-io", feature = "tungstenite"))]
mod handles {
    use std::sync::Mutex;

    use event_listener::Event;
    #[cfg(feature = "tungstenite")]
    use event_listener::Listener;

    use crate::ConnectionStatus;

    /// A broadcast of events to every receiver that exists when it is sent; a receiver that
    /// falls [`EVENT_BUFFER`](super::EVENT_BUFFER) behind loses the oldest and is told how
    /// many.
    #[derive(Debug)]
    pub(crate) struct EventHub<T> {
        sender: async_broadcast::Sender<T>,
        // Keeps the channel open while nobody listens, without buffering for anyone.
        _keep_open: async_broadcast::InactiveReceiver<T>,
    }

    impl<T: Clone> EventHub<T> {
        pub(crate) fn new() -> Self {
            let (mut sender, receiver) = async_broadcast::broadcast(super::EVENT_BUFFER);
            sender.set_overflow(true);
            sender.set_await_active(false);
            EventHub { sender, _keep_open: receiver.deactivate() }
        }

        pub(crate) fn publish(&self, event: T) {
            // Full cannot happen in overflow mode; no active receiver is fine.
            let _ = self.sender.try_broadcast(event);
        }

        pub(crate) fn subscribe(&self) -> async_broadcast::Receiver<T> {
            self.sender.new_receiver()
        }
    }

    /// The connection status, readable from any thread, with waits for a given status.
    #[derive(Debug)]
    pub(crate) struct StatusCell {
        status: Mutex<ConnectionStatus>,
        changed: Event,
    }

    impl StatusCell {
        pub(crate) fn new(status: ConnectionStatus) -> Self {
            StatusCell { status: Mutex::new(status), changed: Event::new() }
        }

        pub(crate) fn get(&self) -> ConnectionStatus {
            *self.status.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
        }

        pub(crate) fn set(&self, status: ConnectionStatus) {
            *self.status.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = status;
            self.changed.notify(usize::MAX);
        }

        #[cfg(feature = "async-io")]
        pub(crate) async fn wait_for(&self, status: ConnectionStatus) {
            loop {
                // Listen before looking, so that a change in between is not missed.
                let listener = self.changed.listen();
                if self.get() == status {
                    return;
                }
                listener.await;
            }
        }

        /// Block until the status is `status` (true) or `deadline` passes (false).
        #[cfg(feature = "tungstenite")]
        pub(crate) fn wait_for_blocking(
            &self,
            status: ConnectionStatus,
            deadline: Option<std::time::Instant>,
        ) -> bool {
            loop {
                let listener = self.changed.listen();
                if self.get() == status {
                    return true;
                }
                match deadline {
                    Some(deadline) => {
                        if listener.wait_deadline(deadline).is_none() && self.get() != status {
                            return false;
                        }
                    }
                    None => listener.wait(),
                }
            }
        }
    }
}

// ---- durable storage -----------------------------------------------------------------------

/// A durable server's storage, on a thread of its own: the server's loop hands it each
/// [`StorageRequest`] and gets each answer back through `deliver`, so a commit's fsync or a
/// large document's load never holds up the connections.
pub(crate) struct StorageThread {
    requests: Option<std::sync::mpsc::Sender<StorageRequest>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StorageThread {
    /// Run `storage` on a new thread; `deliver` gets every answer, in order.
    pub(crate) fn spawn<T>(
        mut storage: T,
        deliver: impl Fn(StorageOutcome<T::Document>) + Send + 'static,
    ) -> std::io::Result<Self>
    where
        T: DurableStorage + Send + 'static,
    {
        let (requests, inbox) = std::sync::mpsc::channel::<StorageRequest>();
        let thread = std::thread::Builder::new().name("crdt-sync storage".into()).spawn(move || {
            for request in inbox {
                deliver(perform_storage(&mut storage, request));
            }
        })?;
        Ok(StorageThread { requests: Some(requests), thread: Some(thread) })
    }

    /// Hand the thread every request the server has.
    pub(crate) fn submit_from<S: DocumentStore>(&self, server: &mut Server<S>) {
        while let Some(request) = server.poll_storage() {
            if let Some(requests) = &self.requests {
                let _ = requests.send(request);
            }
        }
    }
}

impl Drop for StorageThread {
    /// Finish the requests already handed over, then stop.
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The error for a durable server started without storage.
pub(crate) fn check_storage<S: DocumentStore>(server: &Server<S>, has_storage: bool) -> std::io::Result<()> {
    if server.config().durable && !has_storage {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a durable server (ServerConfig::durable) needs storage: start it with serve_durable",
        ));
    }
    Ok(())
}
