//! Blocking WebSocket server and client on std threads over tungstenite (feature
//! `tungstenite`), for programs without an async runtime.
//!
//! The loops are those of the async runtimes, with threads for tasks. One thread owns the
//! state machine and waits on a channel for a frame or a command, with the wait's timeout
//! taken from the session's `poll_timeout`; then it drains the session's frames and events.
//! Each connection has a thread that reads its socket, blocking, and hands frames to that
//! channel; the server gives each connection a writer thread too, so that a slow socket
//! never stalls the others. Reading happens off the session's thread so that a command or
//! a frame from another connection never waits for a socket read to time out.
//!
//! ```no_run
//! use crdt_sync::blocking::{BlockingClient, BlockingServer};
//! use crdt_sync::{ClientConfig, ClientSession, Document, PeerId, ServerConfig};
//!
//! let server = BlockingServer::bind("127.0.0.1:0", ServerConfig::default())?;
//! let url = format!("ws://{}", server.local_addr());
//! let client = BlockingClient::connect(url, ClientSession::new(PeerId::new(1), ClientConfig::default()));
//! client.subscribe("notes", Document::new(PeerId::new(1)));
//! client.edit("notes", |doc| doc.transact().text("body").insert(0, "hello").map(drop));
//! client.wait_saved("notes");
//! let session = client.close();
//! let server = server.shutdown();
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message as WsMessage, WebSocket};

pub use crate::runtime_common::Traffic;
use crate::runtime_common::{
    ClientCommand, ClientCore, ClientJob, EventHub, HANDSHAKE_TIMEOUT, INBOUND_FRAMES, Inbound, Outbound,
    Outlet, OutletSend, Outlets, SHUTDOWN_GRACE, ServerCommand, ServerJob, StatusCell, StorageThread, Target,
    TrafficCounters, TransportRequest, check_storage, flush_server, handle_inbound, now, ws_config,
};
use crate::store::{DocumentStore, MemoryStore};
use crate::{
    ClientEvent, ClientSession, ConnectionId, ConnectionStatus, Document, DurableStorage, Server,
    ServerConfig, ServerEvent, ServerTls, ServerUrl, StorageOutcome, SyncDocument,
};

/// Receives [`ServerEvent`]s or [`ClientEvent`]s (`recv_blocking()`). One that falls behind
/// loses the oldest and is told how many.
pub type EventReceiver<T> = async_broadcast::Receiver<T>;

/// How long a write may block before the connection counts as lost: the peer stopped
/// reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection shared by a reading and a writing WebSocket. Every write puts a whole
/// buffer on the wire under a lock, and tungstenite only ever writes whole frames, so the
/// writer's frames and the reader's automatic replies (pong, close) never interleave.
#[derive(Clone, Debug)]
enum SharedStream {
    Plain { tcp: Arc<TcpStream>, write_lock: Arc<Mutex<()>> },
    Tls(Arc<TlsStream>),
}

/// TLS over TCP for two threads. Neither thread holds the TLS state while it waits on the
/// socket: the reader waits for bytes and then locks the state to feed it what arrived and
/// take plaintext out; the writer locks it to seal, then sends without it. So a write
/// blocked on a full socket never stops the reader from draining the other direction
/// (two peers writing large frames at each other would otherwise deadlock).
#[derive(Debug)]
struct TlsStream {
    tcp: Arc<TcpStream>,
    tls: Mutex<rustls::Connection>,
    /// Taken before the TLS lock is released and held while sending, so that records reach
    /// the wire in the order they were sealed (TLS numbers them).
    send: Mutex<()>,
    incoming: Mutex<Incoming>,
}

impl SharedStream {
    fn plain(tcp: Arc<TcpStream>) -> Self {
        SharedStream::Plain { tcp, write_lock: Arc::new(Mutex::new(())) }
    }

    /// Finish the TLS handshake on `tcp` (within its read timeout), then share it.
    fn tls(tcp: Arc<TcpStream>, tls: impl Into<rustls::Connection>) -> io::Result<Self> {
        let mut tls = tls.into();
        while tls.is_handshaking() {
            tls.complete_io(&mut &*tcp)?;
        }
        let incoming = Incoming { bytes: vec![0; 16 * 1024].into_boxed_slice(), start: 0, end: 0 };
        Ok(SharedStream::Tls(Arc::new(TlsStream {
            tcp,
            tls: Mutex::new(tls),
            send: Mutex::new(()),
            incoming: Mutex::new(incoming),
        })))
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            SharedStream::Plain { tcp, .. } => tcp,
            SharedStream::Tls(tls) => &tls.tcp,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Read for SharedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            SharedStream::Plain { tcp, .. } => (&**tcp).read(buf),
            SharedStream::Tls(stream) => stream.read(buf),
        }
    }
}

impl Write for SharedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            SharedStream::Plain { tcp, write_lock } => {
                let _whole = lock(write_lock);
                (&**tcp).write_all(buf)?;
            }
            SharedStream::Tls(stream) => stream.write(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsStream {
    /// Seal all of `buf` and send it. rustls takes plaintext only up to its buffer limit,
    /// so a large frame goes in several rounds, each sent before the next is sealed.
    fn write(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let mut tls = lock(&self.tls);
            let taken = tls.writer().write(buf)?;
            buf = &buf[taken..];
            let sent_something = tls.wants_write();
            self.send_sealed(tls)?;
            if taken == 0 && !sent_something {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "TLS accepted no more plaintext"));
            }
        }
        Ok(())
    }

    /// Send what the TLS state has sealed, releasing the state before the socket write.
    fn send_sealed(&self, mut tls: std::sync::MutexGuard<'_, rustls::Connection>) -> io::Result<()> {
        let mut sealed = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut sealed)?;
        }
        if sealed.is_empty() {
            return Ok(());
        }
        let _in_order = lock(&self.send);
        drop(tls);
        (&*self.tcp).write_all(&sealed)
    }

    fn read(&self, out: &mut [u8]) -> io::Result<usize> {
        // Only the reader thread reads: this lock is never contended.
        let mut incoming = lock(&self.incoming);
        let mut ended = false;
        loop {
            let mut tls = lock(&self.tls);
            match tls.reader().read(out) {
                // Plaintext, or 0 after the peer's close_notify.
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if ended {
                return Ok(0);
            }
            if incoming.start < incoming.end {
                // Fed only as much as rustls takes: it refuses more while it holds
                // plaintext nobody read, which is why leftovers wait here.
                let mut pending = &incoming.bytes[incoming.start..incoming.end];
                let before = pending.len();
                tls.read_tls(&mut pending)?;
                let taken = before - pending.len();
                incoming.start += taken;
                let state =
                    tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                if taken == 0 && state.plaintext_bytes_to_read() == 0 {
                    return Err(io::Error::other("TLS took no bytes and gave no plaintext"));
                }
                // TLS may answer by itself (a key update, an alert).
                self.send_sealed(tls)?;
                continue;
            }
            drop(tls);
            let Incoming { bytes, start, end } = &mut *incoming;
            let n = (&*self.tcp).read(bytes)?;
            (*start, *end) = (0, n);
            if n == 0 {
                // `read_tls` of nothing tells rustls the TCP stream ended.
                let mut tls = lock(&self.tls);
                tls.read_tls(&mut &[][..])?;
                tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                ended = true;
            }
        }
    }
}

/// Ciphertext read from the socket and not yet taken by rustls.
#[derive(Debug)]
struct Incoming {
    bytes: Box<[u8]>,
    start: usize,
    end: usize,
}

/// Wait on `inputs` until the next input or until `deadline`.
fn recv_until<T>(inputs: &Receiver<T>, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
    match deadline {
        Some(at) => inputs.recv_timeout(at.saturating_duration_since(now())),
        None => inputs.recv().map_err(|_| RecvTimeoutError::Disconnected),
    }
}

fn spawn_named<T: Send + 'static>(name: String, body: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    thread::Builder::new().name(name).spawn(body).expect("the system refused a new thread")
}

// ---- server --------------------------------------------------------------------------------

enum ServerInput<S: DocumentStore> {
    Accepted(TcpStream),
    Connection(Inbound),
    Command(ServerCommand<S>),
    Storage(StorageOutcome<S::Document>),
}

struct ConnectionOutlet {
    frames: Sender<Outbound>,
    tcp: Arc<TcpStream>,
}

impl OutletSend for ConnectionOutlet {
    fn send(&self, out: Outbound) {
        let _ = self.frames.send(out);
    }
}

/// A crdt-sync server on a TCP port, speaking WebSocket (one binary message per frame),
/// with a thread per connection.
///
/// Dropping it shuts the server down as [`BlockingServer::shutdown`] does, in the
/// background; `shutdown` also waits for it and gives the store back.
#[derive(Debug)]
pub struct BlockingServer<S: DocumentStore + Send + 'static = MemoryStore> {
    addr: SocketAddr,
    inputs: SyncSender<ServerInput<S>>,
    events: Arc<EventHub<ServerEvent>>,
    traffic: Arc<TrafficCounters>,
    thread: Option<JoinHandle<Server<S>>>,
}

impl<S: DocumentStore> std::fmt::Debug for ServerInput<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerInput::Accepted(_) => "Accepted",
            ServerInput::Connection(_) => "Connection",
            ServerInput::Command(_) => "Command",
            ServerInput::Storage(_) => "Storage",
        })
    }
}

impl BlockingServer<MemoryStore> {
    /// Listen on `addr` with documents kept in memory.
    pub fn bind(addr: impl ToSocketAddrs, config: ServerConfig) -> io::Result<Self> {
        Self::serve(addr, Server::in_memory(config))
    }
}

impl<S> BlockingServer<S>
where
    S: DocumentStore + Send + 'static,
    S::Document: Send,
{
    /// Listen on `addr` and serve `server` (any store, plugins already added). A durable
    /// server needs [`serve_durable`](Self::serve_durable).
    pub fn serve(addr: impl ToSocketAddrs, server: Server<S>) -> io::Result<Self> {
        check_storage(&server, false)?;
        let (inputs, input_rx) = mpsc::sync_channel(INBOUND_FRAMES);
        Self::start(addr, server, None, None, inputs, input_rx)
    }

    /// [`serve`](Self::serve) over TLS: clients connect to `wss://`.
    pub fn serve_tls(addr: impl ToSocketAddrs, server: Server<S>, tls: ServerTls) -> io::Result<Self> {
        check_storage(&server, false)?;
        let (inputs, input_rx) = mpsc::sync_channel(INBOUND_FRAMES);
        Self::start(addr, server, Some(tls), None, inputs, input_rx)
    }

    /// Serve a durable `server` ([`ServerConfig::durable`]) on `addr` (over TLS if `tls` is
    /// given), its documents in `storage` (`crdt_sync::sqlite::SqliteStorage`, say), which
    /// runs on a thread of its own. A client's changes are acknowledged once committed
    /// there, and [`shutdown`](Self::shutdown) commits everything applied before it says
    /// goodbye.
    pub fn serve_durable<T>(
        addr: impl ToSocketAddrs,
        server: Server<S>,
        storage: T,
        tls: Option<ServerTls>,
    ) -> io::Result<Self>
    where
        T: DurableStorage<Document = S::Document> + Send + 'static,
    {
        let (inputs, input_rx) = mpsc::sync_channel(INBOUND_FRAMES);
        let answers = inputs.clone();
        let thread =
            StorageThread::spawn(storage, move |outcome| drop(answers.send(ServerInput::Storage(outcome))))?;
        Self::start(addr, server, tls, Some(thread), inputs, input_rx)
    }

    fn start(
        addr: impl ToSocketAddrs,
        server: Server<S>,
        tls: Option<ServerTls>,
        storage: Option<StorageThread>,
        inputs: SyncSender<ServerInput<S>>,
        input_rx: Receiver<ServerInput<S>>,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let events = Arc::new(EventHub::new());
        let traffic = Arc::new(TrafficCounters::default());
        let stopping = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (inputs, stopping) = (inputs.clone(), stopping.clone());
            spawn_named(format!("crdt-sync accept {addr}"), move || accept_loop(listener, inputs, &stopping))
        };
        let driver = ServerDriver {
            addr,
            tls,
            inputs: inputs.clone(),
            events: events.clone(),
            traffic: traffic.clone(),
            stopping,
            acceptor: Some(acceptor),
            storage,
        };
        let thread = spawn_named(format!("crdt-sync server {addr}"), move || driver.run(server, input_rx));
        Ok(BlockingServer { addr, inputs, events, traffic, thread: Some(thread) })
    }

    /// Frames and bytes through the server's sockets so far.
    pub fn traffic(&self) -> Traffic {
        self.traffic.snapshot()
    }

    /// The address it listens on (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every [`ServerEvent`] from now on.
    pub fn events(&self) -> EventReceiver<ServerEvent> {
        self.events.subscribe()
    }

    /// Run `job` on the server, between two inputs: read a document, add a plugin. `None` if
    /// the server has stopped.
    pub fn with<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Server<S>) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: ServerJob<S> = Box::new(move |server| {
            let _ = tx.send(job(server));
        });
        self.inputs.send(ServerInput::Command(ServerCommand::Run(job))).ok()?;
        rx.recv().ok()
    }

    /// Stop: apply what already arrived, tell every client the server shuts down, send every
    /// queued frame (waiting up to a few seconds for slow sockets), and give the server back
    /// with its store.
    pub fn shutdown(mut self) -> Server<S> {
        let _ = self.inputs.send(ServerInput::Command(ServerCommand::Shutdown));
        let thread = self.thread.take().expect("only shutdown and drop take the thread");
        match thread.join() {
            Ok(server) => server,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl<S: DocumentStore + Send + 'static> Drop for BlockingServer<S> {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.inputs.send(ServerInput::Command(ServerCommand::Shutdown));
        }
    }
}

fn accept_loop<S: DocumentStore>(
    listener: TcpListener,
    inputs: SyncSender<ServerInput<S>>,
    stopping: &AtomicBool,
) {
    for stream in listener.incoming() {
        if stopping.load(Ordering::Acquire) {
            return;
        }
        // A failed accept (out of file descriptors, say) is the listener's problem, not a
        // reason to stop serving the connections we have.
        let Ok(stream) = stream else { continue };
        // Not a blocking send: a full channel must not keep the acceptor from seeing the
        // shutdown (which joins it).
        let mut input = ServerInput::Accepted(stream);
        loop {
            match inputs.try_send(input) {
                Ok(()) => break,
                Err(mpsc::TrySendError::Full(back)) if !stopping.load(Ordering::Acquire) => {
                    input = back;
                    thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return,
            }
        }
    }
}

struct ServerDriver<S: DocumentStore> {
    addr: SocketAddr,
    tls: Option<ServerTls>,
    inputs: SyncSender<ServerInput<S>>,
    events: Arc<EventHub<ServerEvent>>,
    traffic: Arc<TrafficCounters>,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    /// A durable server's storage; its answers arrive as [`ServerInput::Storage`].
    storage: Option<StorageThread>,
}

impl<S> ServerDriver<S>
where
    S: DocumentStore + Send + 'static,
    S::Document: Send,
{
    fn run(mut self, mut server: Server<S>, input_rx: Receiver<ServerInput<S>>) -> Server<S> {
        let mut connections: Outlets<ConnectionOutlet> = Outlets::new();
        // Every writer thread holds a sender; the channel disconnects once they all ended.
        let (alive, alive_rx) = mpsc::channel::<()>();
        let ws = ws_config(server.config().limits.max_frame_bytes);
        loop {
            match recv_until(&input_rx, server.poll_timeout()) {
                Ok(ServerInput::Accepted(tcp)) => {
                    // An address with too many unfinished handshakes is dropped before its
                    // TLS or WebSocket handshake costs anything.
                    let Some(id) = tcp.peer_addr().ok().and_then(|a| server.accept_from(now(), a.ip()).ok())
                    else {
                        continue;
                    };
                    let (frames, frame_rx) = mpsc::channel();
                    let tcp = Arc::new(tcp);
                    connections.insert(id, Outlet::new(ConnectionOutlet { frames, tcp: tcp.clone() }));
                    let connection = Connection {
                        id,
                        tcp,
                        tls: self.tls.clone(),
                        config: ws,
                        inputs: self.inputs.clone(),
                        traffic: self.traffic.clone(),
                        alive: alive.clone(),
                    };
                    spawn_named(format!("crdt-sync connection {}", id.0), move || connection.serve(frame_rx));
                }
                Ok(ServerInput::Connection(input)) => handle_inbound(&mut server, &mut connections, input),
                Ok(ServerInput::Command(ServerCommand::Run(job))) => job(&mut server),
                Ok(ServerInput::Command(ServerCommand::Shutdown)) | Err(RecvTimeoutError::Disconnected) => {
                    break;
                }
                Ok(ServerInput::Storage(outcome)) => server.handle_storage(now(), outcome),
                Err(RecvTimeoutError::Timeout) => server.handle_timeout(now()),
            }
            flush_server(&mut server, &mut connections, |event| self.events.publish(event));
            if let Some(storage) = &self.storage {
                storage.submit_from(&mut server);
            }
        }
        self.stop_accepting();
        // What already arrived was sent before the shutdown: apply it (and ack it) first, for
        // a bounded time (a client flooding on would hold the shutdown up forever).
        let until = now() + SHUTDOWN_GRACE;
        while now() < until
            && let Ok(input) = input_rx.try_recv()
        {
            match input {
                ServerInput::Connection(input) => handle_inbound(&mut server, &mut connections, input),
                // Accepted after the shutdown: never served.
                ServerInput::Accepted(tcp) => drop(tcp.shutdown(Shutdown::Both)),
                ServerInput::Command(ServerCommand::Run(job)) => job(&mut server),
                ServerInput::Command(ServerCommand::Shutdown) => {}
                ServerInput::Storage(outcome) => server.handle_storage(now(), outcome),
            }
        }
        // Commit everything applied, so that the goodbye carries its acknowledgements.
        if let Some(storage) = &self.storage {
            let until = now() + SHUTDOWN_GRACE;
            loop {
                storage.submit_from(&mut server);
                if server.storage_settled() {
                    break;
                }
                match input_rx.recv_timeout(until.saturating_duration_since(now())) {
                    Ok(ServerInput::Storage(outcome)) => server.handle_storage(now(), outcome),
                    Ok(ServerInput::Accepted(tcp)) => drop(tcp.shutdown(Shutdown::Both)),
                    Ok(_) => {} // late frames and commands: the server is stopping
                    Err(_) => break,
                }
            }
        }
        server.shutdown();
        flush_server(&mut server, &mut connections, |event| self.events.publish(event));
        // Closing the frame channels tells every writer to close its connection.
        let sockets: Vec<Arc<TcpStream>> = connections.drain().map(|(_, outlet)| outlet.tx.tcp).collect();
        drop(alive);
        let deadline = now() + SHUTDOWN_GRACE;
        while alive_rx.recv_timeout(deadline.saturating_duration_since(now())).is_ok() {}
        // Past the grace, sockets still writing are cut.
        for tcp in sockets {
            let _ = tcp.shutdown(Shutdown::Both);
        }
        drop(input_rx);
        // Joining the storage thread waits for its last request.
        drop(self.storage.take());
        server
    }

    fn stop_accepting(&mut self) {
        self.stopping.store(true, Ordering::Release);
        // Wake the acceptor out of `accept` with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        // The acceptor sees the flag on that connection and drops the listener: the port is
        // free once the shutdown returns.
        if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok()
            && let Some(acceptor) = self.acceptor.take()
        {
            let _ = acceptor.join();
        }
    }
}

/// One server connection's threads: this one reads, a second one writes.
struct Connection<S: DocumentStore> {
    id: ConnectionId,
    tcp: Arc<TcpStream>,
    tls: Option<ServerTls>,
    config: WebSocketConfig,
    inputs: SyncSender<ServerInput<S>>,
    traffic: Arc<TrafficCounters>,
    alive: Sender<()>,
}

impl<S: DocumentStore> Connection<S> {
    fn serve(self, frames: Receiver<Outbound>) {
        let Connection { id, tcp, tls, config, inputs, traffic, alive } = self;
        let closed = || drop(inputs.send(ServerInput::Connection(Inbound::Closed(id))));
        let _ = tcp.set_nodelay(true);
        let _ = tcp.set_write_timeout(Some(WRITE_TIMEOUT));
        let _ = tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
        let stream = match tls {
            None => Ok(SharedStream::plain(tcp.clone())),
            Some(tls) => rustls::ServerConnection::new(tls.config().clone())
                .map_err(io::Error::other)
                .and_then(|connection| SharedStream::tls(tcp.clone(), connection)),
        };
        let Ok(mut reader) = stream.and_then(|stream| {
            tungstenite::accept_with_config(stream, Some(config))
                .map_err(|_| io::ErrorKind::InvalidData.into())
        }) else {
            closed();
            return;
        };
        let stream = reader.get_ref().clone();
        let _ = tcp.set_read_timeout(None);
        let writer = WebSocket::from_raw_socket(stream, Role::Server, Some(config));
        {
            let (tcp, traffic) = (tcp.clone(), traffic.clone());
            spawn_named(format!("crdt-sync connection {} writer", id.0), move || {
                write_frames(writer, frames, &tcp, &traffic);
                drop(alive);
            });
        }
        loop {
            match reader.read() {
                Ok(WsMessage::Binary(frame)) => {
                    traffic.received(frame.len());
                    if inputs.send(ServerInput::Connection(Inbound::Frame(id, frame.into()))).is_err() {
                        return;
                    }
                }
                // Pings are answered by tungstenite; text is not part of the protocol.
                Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Text(_) | WsMessage::Frame(_)) => {}
                Ok(WsMessage::Close(_)) | Err(_) => break,
            }
        }
        closed();
    }
}

/// A server connection's writer: every queued frame, one flush per burst, until the session
/// closes the connection (or the server stops).
fn write_frames(
    mut ws: WebSocket<SharedStream>,
    frames: Receiver<Outbound>,
    tcp: &TcpStream,
    traffic: &TrafficCounters,
) {
    let mut next = frames.recv();
    while let Ok(Outbound::Frame(frame)) = next {
        traffic.sent(frame.len());
        if ws.write(WsMessage::Binary(frame.into_bytes().into())).is_err() {
            let _ = tcp.shutdown(Shutdown::Both);
            return;
        }
        next = frames.try_recv().map_err(|_| mpsc::RecvError);
        if next.is_err() {
            if ws.flush().is_err() {
                let _ = tcp.shutdown(Shutdown::Both);
                return;
            }
            next = frames.recv();
        }
    }
    // Closed by the session (or the server stopped): send the close handshake; the reader
    // ends when the client answers (or the read times out).
    let _ = ws.close(None);
    let _ = ws.flush();
    let _ = tcp.set_read_timeout(Some(SHUTDOWN_GRACE));
    let _ = tcp.shutdown(Shutdown::Write);
}

// ---- client --------------------------------------------------------------------------------

enum ClientInput<D: SyncDocument> {
    Command(ClientCommand<D>),
    /// Connection attempt `attempt` finished.
    Opened(u64, Result<Box<WebSocket<SharedStream>>, tungstenite::Error>),
    Frame(u64, Vec<u8>),
    /// The connection of attempt `attempt` ended, with the error if it broke.
    Lost(u64, Option<String>),
}

/// A crdt-sync client over WebSocket: a [`ClientSession`] driven on a thread of its own,
/// connected to `url` (`ws://host:port` or `wss://host:port`) and reconnecting by itself, with backoff, whenever
/// the connection is lost, for as long as it lives.
#[derive(Debug)]
pub struct BlockingClient<D: SyncDocument + Send + 'static = Document> {
    inputs: Sender<ClientInput<D>>,
    events: Arc<EventHub<ClientEvent>>,
    status: Arc<StatusCell>,
    thread: Option<JoinHandle<ClientSession<D>>>,
}

impl<D: SyncDocument> std::fmt::Debug for ClientInput<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientInput::Command(command) => command.fmt(f),
            ClientInput::Opened(attempt, result) => write!(f, "Opened({attempt}, ok: {})", result.is_ok()),
            ClientInput::Frame(attempt, frame) => write!(f, "Frame({attempt}, {} bytes)", frame.len()),
            ClientInput::Lost(attempt, error) => write!(f, "Lost({attempt}, {error:?})"),
        }
    }
}

impl<D: SyncDocument + Send + 'static> BlockingClient<D> {
    /// Start `session` on a thread of its own and connect it to `url`.
    pub fn connect(url: impl Into<ServerUrl>, session: ClientSession<D>) -> Self {
        let (inputs, input_rx) = mpsc::channel();
        let events = Arc::new(EventHub::new());
        let status = Arc::new(StatusCell::new(session.status()));
        let driver = ClientDriver {
            url: url.into(),
            config: ws_config(session.config().limits.max_frame_bytes),
            inputs: inputs.clone(),
            events: events.clone(),
            status: status.clone(),
            attempt: 0,
            socket: None,
        };
        let thread = spawn_named("crdt-sync client".into(), move || driver.run(session, input_rx));
        BlockingClient { inputs, events, status, thread: Some(thread) }
    }

    /// Run `job` on the session between two inputs (any command or query). `None` if the
    /// client has stopped.
    pub fn with<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut ClientSession<D>) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: ClientJob<D> = Box::new(move |session| {
            let _ = tx.send(job(session));
        });
        self.inputs.send(ClientInput::Command(ClientCommand::Run(job))).ok()?;
        rx.recv().ok()
    }

    /// Sync `doc` under `name` (see [`ClientSession::subscribe`]).
    pub fn subscribe(&self, name: impl Into<String>, doc: D) {
        let name = name.into();
        self.with(move |session| drop(session.subscribe(name, doc)));
    }

    /// Edit a synced document; what changed leaves at once. `None` if there is no such
    /// document (or the client stopped).
    pub fn edit<R: Send + 'static>(
        &self,
        name: &str,
        edit: impl FnOnce(&mut D) -> R + Send + 'static,
    ) -> Option<R> {
        let name = name.to_owned();
        self.with(move |session| session.document_mut(&name).map(edit)).flatten()
    }

    /// Read a synced document.
    pub fn read<R: Send + 'static>(
        &self,
        name: &str,
        read: impl FnOnce(&D) -> R + Send + 'static,
    ) -> Option<R> {
        let name = name.to_owned();
        self.with(move |session| session.document(&name).map(read)).flatten()
    }

    /// Wait until the server has acknowledged every local change of `name` made so far
    /// ("all changes saved"); returns at once if it has. Waits through reconnections.
    pub fn wait_saved(&self, name: &str) {
        self.wait_saved_timeout(name, Duration::MAX);
    }

    /// [`wait_saved`](Self::wait_saved) for at most `timeout`: whether it is saved.
    pub fn wait_saved_timeout(&self, name: &str, timeout: Duration) -> bool {
        let (tx, rx) = mpsc::sync_channel(1);
        let waiter = Box::new(move || {
            let _ = tx.send(());
        });
        if self.inputs.send(ClientInput::Command(ClientCommand::WaitSaved(name.to_owned(), waiter))).is_err()
        {
            return false;
        }
        match now().checked_add(timeout) {
            Some(deadline) => rx.recv_timeout(deadline.saturating_duration_since(now())).is_ok(),
            None => rx.recv().is_ok(),
        }
    }

    /// The connection status now.
    pub fn status(&self) -> ConnectionStatus {
        self.status.get()
    }

    /// Wait until the status is `status`.
    pub fn wait_status(&self, status: ConnectionStatus) {
        self.status.wait_for_blocking(status, None);
    }

    /// [`wait_status`](Self::wait_status) for at most `timeout`: whether it is `status`.
    pub fn wait_status_timeout(&self, status: ConnectionStatus, timeout: Duration) -> bool {
        self.status.wait_for_blocking(status, now().checked_add(timeout))
    }

    /// Every [`ClientEvent`] from now on (transport requests, which the client handles
    /// itself, are not included).
    pub fn events(&self) -> EventReceiver<ClientEvent> {
        self.events.subscribe()
    }

    /// Close the connection (telling the server), stop, and give the session back with its
    /// documents, unsaved edits included.
    pub fn close(mut self) -> ClientSession<D> {
        let _ = self.inputs.send(ClientInput::Command(ClientCommand::Close));
        let thread = self.thread.take().expect("only close and drop take the thread");
        match thread.join() {
            Ok(session) => session,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl<D: SyncDocument + Send + 'static> Drop for BlockingClient<D> {
    fn drop(&mut self) {
        // The connection threads hold senders too: dropping ours does not end the loop.
        if self.thread.is_some() {
            let _ = self.inputs.send(ClientInput::Command(ClientCommand::Close));
        }
    }
}

struct ClientDriver<D: SyncDocument> {
    url: ServerUrl,
    config: WebSocketConfig,
    inputs: Sender<ClientInput<D>>,
    events: Arc<EventHub<ClientEvent>>,
    status: Arc<StatusCell>,
    /// The current connection attempt; inputs from older ones are stale.
    attempt: u64,
    socket: Option<WebSocket<SharedStream>>,
}

impl<D: SyncDocument + Send + 'static> ClientDriver<D> {
    fn run(mut self, session: ClientSession<D>, input_rx: Receiver<ClientInput<D>>) -> ClientSession<D> {
        let mut core = ClientCore::new(session);
        core.session.connect(now());
        loop {
            self.flush(&mut core);
            if core.closing() {
                break;
            }
            let session = &mut core.session;
            match recv_until(&input_rx, session.poll_timeout()) {
                Ok(ClientInput::Command(command)) => core.command(Some(command)),
                Ok(ClientInput::Opened(attempt, result)) if attempt == self.attempt => match result {
                    Ok(ws) => {
                        self.socket = Some(*ws);
                        session.handle_connected(now());
                    }
                    Err(e) => session.handle_transport_error(now(), e.to_string()),
                },
                // A socket nobody waits for any more: close it.
                Ok(ClientInput::Opened(_, Ok(ws))) => close_socket(*ws),
                Ok(ClientInput::Frame(attempt, frame)) if attempt == self.attempt => {
                    session.handle_input(now(), &frame)
                }
                Ok(ClientInput::Lost(attempt, error)) if attempt == self.attempt && self.socket.is_some() => {
                    self.socket = None;
                    match error {
                        Some(detail) => session.handle_transport_error(now(), detail),
                        None => session.handle_disconnected(now()),
                    }
                }
                Ok(ClientInput::Opened(..) | ClientInput::Frame(..) | ClientInput::Lost(..)) => {}
                Err(RecvTimeoutError::Timeout) => session.handle_timeout(now()),
                // Cannot happen (this loop holds a sender); stop as if closed.
                Err(RecvTimeoutError::Disconnected) => core.command(None),
            }
            core.wake_saved();
        }
        if let Some(ws) = self.socket.take() {
            close_socket(ws);
        }
        core.finish()
    }

    /// Send what the session has to send and act on its events, until it has nothing more.
    fn flush(&mut self, core: &mut ClientCore<D>) {
        loop {
            let mut busy = false;
            let mut sent = false;
            while let Some(frame) = core.session.poll_transmit() {
                busy = true;
                // Frames polled without a socket belong to a connection already gone.
                if let Some(ws) = self.socket.as_mut() {
                    sent = true;
                    if let Err(e) = ws.write(WsMessage::Binary(frame.into())) {
                        self.lose_socket(core, e);
                    }
                }
            }
            if sent
                && let Some(ws) = self.socket.as_mut()
                && let Err(e) = ws.flush()
            {
                self.lose_socket(core, e);
            }
            let (events, status) = (&self.events, &self.status);
            for request in core.drain_events(|event| events.publish(event), |s| status.set(s)) {
                busy = true;
                // Whatever was in flight is stale from here on.
                self.attempt += 1;
                if let Some(ws) = self.socket.take() {
                    close_socket(ws);
                }
                if let TransportRequest::Open = request {
                    let (url, config, inputs, attempt) =
                        (self.url.clone(), self.config, self.inputs.clone(), self.attempt);
                    spawn_named("crdt-sync client connection".into(), move || {
                        open_and_read(&url, config, &inputs, attempt)
                    });
                }
            }
            if !busy {
                return;
            }
        }
    }

    fn lose_socket(&mut self, core: &mut ClientCore<D>, error: tungstenite::Error) {
        if let Some(ws) = self.socket.take() {
            close_socket(ws);
        }
        core.session.handle_transport_error(now(), error.to_string());
    }
}

/// Close a client socket: the close frame if it can go, then the TCP connection (which ends
/// its reader thread).
fn close_socket(mut ws: WebSocket<SharedStream>) {
    let _ = ws.close(None);
    let _ = ws.flush();
    let _ = ws.get_ref().tcp().shutdown(Shutdown::Both);
}

/// A client connection's thread: connect, open the WebSocket, hand its writing half to the
/// session's thread, then read frames until the connection ends.
fn open_and_read<D: SyncDocument>(
    url: &ServerUrl,
    config: WebSocketConfig,
    inputs: &Sender<ClientInput<D>>,
    attempt: u64,
) {
    let mut reader = match open(url, config) {
        Ok((reader, writer)) => {
            if inputs.send(ClientInput::Opened(attempt, Ok(Box::new(writer)))).is_err() {
                return;
            }
            reader
        }
        Err(e) => {
            let _ = inputs.send(ClientInput::Opened(attempt, Err(e)));
            return;
        }
    };
    let error = loop {
        match reader.read() {
            Ok(WsMessage::Binary(frame)) => {
                if inputs.send(ClientInput::Frame(attempt, frame.into())).is_err() {
                    return;
                }
            }
            Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Text(_) | WsMessage::Frame(_)) => {}
            Ok(WsMessage::Close(_)) => break None,
            Err(e) => break Some(e.to_string()),
        }
    };
    let _ = inputs.send(ClientInput::Lost(attempt, error));
}

/// Connect to `url` and open the WebSocket (over TLS for `wss://`): its reading and its
/// writing half.
fn open(
    url: &ServerUrl,
    config: WebSocketConfig,
) -> Result<(WebSocket<SharedStream>, WebSocket<SharedStream>), tungstenite::Error> {
    let request = url.as_str().into_client_request()?;
    let target = Target::of(&request)?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{}: no address", target.host));
    let mut tcp = None;
    for addr in (target.host.as_str(), target.port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, HANDSHAKE_TIMEOUT) {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(e) => last = e,
        }
    }
    let tcp = Arc::new(tcp.ok_or(last)?);
    let _ = tcp.set_nodelay(true);
    tcp.set_write_timeout(Some(WRITE_TIMEOUT))?;
    tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let stream = if target.tls {
        let connection = rustls::ClientConnection::new(url.tls().config().clone(), target.server_name()?)
            .map_err(io::Error::other)?;
        SharedStream::tls(tcp.clone(), connection)?
    } else {
        SharedStream::plain(tcp.clone())
    };
    let (reader, _) = tungstenite::client::client_with_config(request, stream.clone(), Some(config))
        .map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => tungstenite::Error::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                "WebSocket handshake timed out",
            )),
        })?;
    tcp.set_read_timeout(None)?;
    let writer = WebSocket::from_raw_socket(stream, Role::Client, Some(config));
    Ok((reader, writer))
}
