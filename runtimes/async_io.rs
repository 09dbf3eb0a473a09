//! WebSocket server and client on the runtime-neutral async layer (feature `async-io`):
//! async-io's reactor and timers, async-net sockets, async-tungstenite. They run on any
//! executor: **smol** (enable `async-io`, start them with [`AsyncServer::serve_on`] and
//! [`AsyncClient::connect_on`], spawning with `smol::spawn(task).detach()`), or **async-std**
//! (enable `async-std`, which adds [`AsyncServer::bind`], [`AsyncServer::serve`] and
//! [`AsyncClient::connect`], spawning on async-std's executor). async-std is discontinued
//! upstream; nothing here depends on it beyond that one spawn call.
//!
//! The loops are those of the tokio runtime: one task owns the state machine and waits on
//! whatever comes first (a frame, a command, the session's `poll_timeout`), then drains the
//! session's frames and events; every server connection has a task of its own.
//!
//! ```no_run
//! # #[cfg(feature = "async-std")]
//! # async fn example() -> std::io::Result<()> {
//! use crdt_sync::async_io::{AsyncClient, AsyncServer};
//! use crdt_sync::{ClientConfig, ClientSession, Document, PeerId, ServerConfig};
//!
//! let server = AsyncServer::bind("127.0.0.1:0", ServerConfig::default()).await?;
//! let url = format!("ws://{}", server.local_addr());
//! let client = AsyncClient::connect(url, ClientSession::new(PeerId::new(1), ClientConfig::default()));
//! client.subscribe("notes", Document::new(PeerId::new(1))).await;
//! client.edit("notes", |doc| doc.transact().text("body").insert(0, "hello").map(drop)).await;
//! client.wait_saved("notes").await;
//! let session = client.close().await;
//! let server = server.shutdown().await;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use ::async_io::Timer;
use async_channel::{Receiver, Sender};
use async_net::{AsyncToSocketAddrs, TcpListener, TcpStream};
use async_tungstenite::WebSocketStream;
use futures_lite::future::{or, race};
use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_rustls::{TlsAcceptor, TlsConnector};
use futures_util::StreamExt;
use tungstenite::Message as WsMessage;
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::WebSocketConfig;

pub use crate::runtime_common::Traffic;
use crate::runtime_common::{
    ClientCommand, ClientCore, ClientJob, EventHub, HANDSHAKE_TIMEOUT, INBOUND_FRAMES, Inbound, Outbound,
    Outlet, OutletSend, Outlets, SHUTDOWN_GRACE, ServerCommand, ServerJob, StatusCell, StorageThread, Target,
    TrafficCounters, TransportRequest, check_storage, flush_server, handle_inbound, now, ws_config,
};
use crate::store::{DocumentStore, MemoryStore};
use crate::{
    ClientEvent, ClientSession, ConnectionId, ConnectionStatus, Document, DurableStorage, Server,
    ServerEvent, ServerTls, ServerUrl, StorageOutcome, SyncDocument,
};

/// A connection's byte stream: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A task for the executor: the server's and client's loops, and one per connection.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
/// Receives [`ServerEvent`]s or [`ClientEvent`]s (`recv().await`, or `recv_blocking()`
/// outside async code). One that falls behind loses the oldest and is told how many.
pub type EventReceiver<T> = async_broadcast::Receiver<T>;

type Spawner = Arc<dyn Fn(Task) + Send + Sync>;

#[cfg(feature = "async-std")]
fn spawn_on_async_std(task: Task) {
    // Detached: the task reports its end through a channel of its own.
    drop(async_std::task::spawn(task));
}

/// A loop's timer, moved only when the session's deadline moves: a fresh timer per wait
/// would register with the reactor (and wake its thread) on every step.
struct Deadline {
    timer: Timer,
    at: Option<Instant>,
}

impl Deadline {
    fn new() -> Self {
        Deadline { timer: Timer::never(), at: None }
    }

    /// Wait until `at`, or forever.
    async fn wait_until(&mut self, at: Option<Instant>) {
        if at != self.at {
            self.at = at;
            match at {
                Some(at) => self.timer.set_at(at),
                None => self.timer = Timer::never(),
            }
        }
        (&mut self.timer).await;
        // Fired: a one-shot timer stays pending from now on, so the next wait re-arms it.
        self.at = None;
    }
}

// ---- server --------------------------------------------------------------------------------

type OutboundTx = Sender<Outbound>;

impl OutletSend for OutboundTx {
    fn send(&self, out: Outbound) {
        // Unbounded: never full; closed when the connection is gone, which is fine.
        let _ = self.try_send(out);
    }
}

/// A crdt-sync server on a TCP port, speaking WebSocket (one binary message per frame).
///
/// Dropping it shuts the server down as [`AsyncServer::shutdown`] does, in the
/// background; `shutdown` also waits for it and gives the store back.
#[derive(Debug)]
pub struct AsyncServer<S: DocumentStore + Send + 'static = MemoryStore> {
    addr: SocketAddr,
    commands: Sender<ServerCommand<S>>,
    events: Arc<EventHub<ServerEvent>>,
    traffic: Arc<TrafficCounters>,
    stopped: Receiver<Server<S>>,
}

#[cfg(feature = "async-std")]
impl AsyncServer<MemoryStore> {
    /// Listen on `addr` with documents kept in memory, on async-std's executor.
    pub async fn bind(addr: impl AsyncToSocketAddrs, config: crate::ServerConfig) -> io::Result<Self> {
        Self::serve(addr, Server::in_memory(config)).await
    }
}

impl<S> AsyncServer<S>
where
    S: DocumentStore + Send + 'static,
    S::Document: Send,
{
    /// Listen on `addr` and serve `server` (any store, plugins already added), on async-std's
    /// executor.
    #[cfg(feature = "async-std")]
    pub async fn serve(addr: impl AsyncToSocketAddrs, server: Server<S>) -> io::Result<Self> {
        Self::serve_on(addr, server, spawn_on_async_std).await
    }

    /// [`serve`](Self::serve) over TLS: clients connect to `wss://`.
    #[cfg(feature = "async-std")]
    pub async fn serve_tls(
        addr: impl AsyncToSocketAddrs,
        server: Server<S>,
        tls: ServerTls,
    ) -> io::Result<Self> {
        Self::serve_tls_on(addr, server, tls, spawn_on_async_std).await
    }

    /// [`serve_on`](Self::serve_on) over TLS: clients connect to `wss://`.
    pub async fn serve_tls_on(
        addr: impl AsyncToSocketAddrs,
        server: Server<S>,
        tls: ServerTls,
        spawn: impl Fn(Task) + Send + Sync + 'static,
    ) -> io::Result<Self> {
        Self::start(addr, server, Some(TlsAcceptor::from(tls.config().clone())), None, Arc::new(spawn)).await
    }

    /// Listen on `addr` and serve `server`, running its tasks through `spawn` (for smol:
    /// `|task| smol::spawn(task).detach()`). A durable server needs
    /// [`serve_durable_on`](Self::serve_durable_on).
    pub async fn serve_on(
        addr: impl AsyncToSocketAddrs,
        server: Server<S>,
        spawn: impl Fn(Task) + Send + Sync + 'static,
    ) -> io::Result<Self> {
        Self::start(addr, server, None, None, Arc::new(spawn)).await
    }

    /// Serve a durable `server` ([`crate::ServerConfig::durable`]) on `addr` (over TLS if
    /// `tls` is given), its documents in `storage` (`crdt_sync::sqlite::SqliteStorage`,
    /// say), which runs on a thread of its own; tasks run through `spawn`. A client's
    /// changes are acknowledged once committed there, and [`shutdown`](Self::shutdown)
    /// commits everything applied before it says goodbye.
    pub async fn serve_durable_on<T>(
        addr: impl AsyncToSocketAddrs,
        server: Server<S>,
        storage: T,
        tls: Option<ServerTls>,
        spawn: impl Fn(Task) + Send + Sync + 'static,
    ) -> io::Result<Self>
    where
        T: DurableStorage<Document = S::Document> + Send + 'static,
    {
        let (answers, outcomes) = async_channel::unbounded();
        let thread = StorageThread::spawn(storage, move |outcome| drop(answers.try_send(outcome)))?;
        let tls = tls.map(|tls| TlsAcceptor::from(tls.config().clone()));
        Self::start(addr, server, tls, Some((thread, outcomes)), Arc::new(spawn)).await
    }

    /// [`serve_durable_on`](Self::serve_durable_on) on async-std's executor.
    #[cfg(feature = "async-std")]
    pub async fn serve_durable<T>(
        addr: impl AsyncToSocketAddrs,
        server: Server<S>,
        storage: T,
        tls: Option<ServerTls>,
    ) -> io::Result<Self>
    where
        T: DurableStorage<Document = S::Document> + Send + 'static,
    {
        Self::serve_durable_on(addr, server, storage, tls, spawn_on_async_std).await
    }

    async fn start(
        addr: impl AsyncToSocketAddrs,
        server: Server<S>,
        tls: Option<TlsAcceptor>,
        storage: Option<Storage<S::Document>>,
        spawn: Spawner,
    ) -> io::Result<Self> {
        check_storage(&server, storage.is_some())?;
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (commands, command_rx) = async_channel::unbounded();
        let (stopped_tx, stopped) = async_channel::bounded(1);
        let events = Arc::new(EventHub::new());
        let traffic = Arc::new(TrafficCounters::default());
        let driver = ServerDriver {
            listener,
            tls,
            command_rx,
            events: events.clone(),
            traffic: traffic.clone(),
            spawn: spawn.clone(),
            storage,
        };
        spawn(Box::pin(async move {
            let _ = stopped_tx.send(driver.run(server).await).await;
        }));
        Ok(AsyncServer { addr, commands, events, traffic, stopped })
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
    pub async fn with<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Server<S>) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = async_channel::bounded(1);
        let job: ServerJob<S> = Box::new(move |server| {
            let _ = tx.try_send(job(server));
        });
        self.commands.send(ServerCommand::Run(job)).await.ok()?;
        rx.recv().await.ok()
    }

    /// Stop: apply what already arrived, tell every client the server shuts down, send every
    /// queued frame (waiting up to a few seconds for slow sockets), and give the server back
    /// with its store.
    pub async fn shutdown(self) -> Server<S> {
        let _ = self.commands.send(ServerCommand::Shutdown).await;
        self.stopped
            .recv()
            .await
            .expect("the server's task ended without giving the server back (it panicked)")
    }
}

struct ServerDriver<S: DocumentStore> {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    command_rx: Receiver<ServerCommand<S>>,
    events: Arc<EventHub<ServerEvent>>,
    traffic: Arc<TrafficCounters>,
    spawn: Spawner,
    storage: Option<Storage<S::Document>>,
}

/// A durable server's storage thread and the channel its answers come back on.
type Storage<D> = (StorageThread, Receiver<StorageOutcome<D>>);

enum ServerStep<S: DocumentStore> {
    Accepted(io::Result<TcpStream>),
    Input(Inbound),
    Command(Option<ServerCommand<S>>),
    Storage(StorageOutcome<S::Document>),
    Timeout,
}

/// The next storage answer; never, without storage (or once its thread is gone).
async fn next_outcome<D>(storage: &Option<Storage<D>>) -> StorageOutcome<D> {
    match storage {
        Some((_, outcomes)) => match outcomes.recv().await {
            Ok(outcome) => outcome,
            Err(_) => futures_lite::future::pending().await,
        },
        None => futures_lite::future::pending().await,
    }
}

impl<S> ServerDriver<S>
where
    S: DocumentStore + Send + 'static,
    S::Document: Send,
{
    async fn run(mut self, mut server: Server<S>) -> Server<S> {
        let (inbound_tx, inbound) = async_channel::bounded::<Inbound>(INBOUND_FRAMES);
        // Every connection task holds `stop`; closing it ends those still running after
        // the shutdown grace, and `alive` closes once they all have ended.
        let (stop_tx, stop) = async_channel::bounded::<()>(1);
        let (alive, alive_rx) = async_channel::bounded::<()>(1);
        let mut connections: Outlets<OutboundTx> = Outlets::new();
        let ws = ws_config(server.config().limits.max_frame_bytes);
        let mut deadline = Deadline::new();
        loop {
            let next = server.poll_timeout();
            let step = race(
                race(
                    async { ServerStep::Accepted(self.listener.accept().await.map(|(stream, _)| stream)) },
                    async { ServerStep::Command(self.command_rx.recv().await.ok()) },
                ),
                race(
                    // Never closed: this loop holds a sender.
                    async { inbound.recv().await.map_or(ServerStep::Timeout, ServerStep::Input) },
                    race(async { ServerStep::Storage(next_outcome(&self.storage).await) }, async {
                        deadline.wait_until(next).await;
                        ServerStep::Timeout
                    }),
                ),
            )
            .await;
            match step {
                // A failed accept (out of file descriptors, say) is the listener's problem,
                // not a reason to stop serving the connections we have.
                ServerStep::Accepted(Ok(stream)) => {
                    // An address with too many unfinished handshakes is dropped before its
                    // TLS or WebSocket handshake costs anything.
                    let Some(id) =
                        stream.peer_addr().ok().and_then(|a| server.accept_from(now(), a.ip()).ok())
                    else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let (tx, rx) = async_channel::unbounded();
                    connections.insert(id, Outlet::new(tx));
                    let connection = serve_connection(
                        id,
                        stream,
                        self.tls.clone(),
                        ws,
                        inbound_tx.clone(),
                        rx,
                        self.traffic.clone(),
                    );
                    let (stop, alive) = (stop.clone(), alive.clone());
                    (self.spawn)(Box::pin(async move {
                        or(connection, async {
                            let _ = stop.recv().await;
                        })
                        .await;
                        drop(alive);
                    }));
                }
                ServerStep::Accepted(Err(_)) => {}
                ServerStep::Input(input) => handle_inbound(&mut server, &mut connections, input),
                ServerStep::Command(Some(ServerCommand::Run(job))) => job(&mut server),
                // Shutdown, or every handle dropped.
                ServerStep::Command(Some(ServerCommand::Shutdown) | None) => break,
                ServerStep::Storage(outcome) => server.handle_storage(now(), outcome),
                ServerStep::Timeout => server.handle_timeout(now()),
            }
            flush_server(&mut server, &mut connections, |event| self.events.publish(event));
            if let Some((thread, _)) = &self.storage {
                thread.submit_from(&mut server);
            }
        }
        // What already arrived was sent before the shutdown: apply it (and ack it) first, for
        // a bounded time (a client flooding on would hold the shutdown up forever).
        let until = now() + SHUTDOWN_GRACE;
        while now() < until
            && let Ok(input) = inbound.try_recv()
        {
            handle_inbound(&mut server, &mut connections, input);
        }
        // Commit everything applied, so that the goodbye carries its acknowledgements.
        if let Some((thread, outcomes)) = &self.storage {
            let until = now() + SHUTDOWN_GRACE;
            loop {
                thread.submit_from(&mut server);
                if server.storage_settled() {
                    break;
                }
                let answer = async { outcomes.recv().await.ok() };
                let late = async {
                    Timer::at(until).await;
                    None
                };
                match or(answer, late).await {
                    Some(outcome) => server.handle_storage(now(), outcome),
                    None => break,
                }
            }
        }
        server.shutdown();
        flush_server(&mut server, &mut connections, |event| self.events.publish(event));
        drop(self.listener);
        connections.clear();
        drop((alive, stop));
        let all_ended = async {
            let _ = alive_rx.recv().await;
        };
        let grace = async {
            Timer::after(SHUTDOWN_GRACE).await;
        };
        or(all_ended, grace).await;
        drop(stop_tx);
        if let Some(storage) = self.storage.take() {
            // Joining the storage thread waits for its last request: off the executor.
            let (done, finished) = async_channel::bounded::<()>(1);
            std::thread::spawn(move || {
                drop(storage);
                drop(done);
            });
            let _ = finished.recv().await;
        }
        server
    }
}

/// One connection: the WebSocket handshake, then frames both ways until either side closes.
async fn serve_connection(
    id: ConnectionId,
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    config: WebSocketConfig,
    inbound: Sender<Inbound>,
    outbound: Receiver<Outbound>,
    traffic: Arc<TrafficCounters>,
) {
    let handshake = async {
        let stream: Box<dyn Io> = match tls {
            Some(tls) => Box::new(tls.accept(stream).await.ok()?),
            None => Box::new(stream),
        };
        Some(async_tungstenite::accept_async_with_config(stream, Some(config)).await)
    };
    let timeout = async {
        Timer::after(HANDSHAKE_TIMEOUT).await;
        None
    };
    let Some(Ok(ws)) = or(handshake, timeout).await else {
        let _ = inbound.send(Inbound::Closed(id)).await;
        return;
    };
    let (mut sink, mut source) = ws.split();
    enum Step {
        Received(Option<Result<WsMessage, tungstenite::Error>>),
        ToSend(Option<Outbound>),
    }
    loop {
        let io = or(async { Step::Received(source.next().await) }, async {
            Step::ToSend(outbound.recv().await.ok())
        })
        .await;
        match io {
            Step::Received(Some(Ok(WsMessage::Binary(frame)))) => {
                traffic.received(frame.len());
                if inbound.send(Inbound::Frame(id, frame.into())).await.is_err() {
                    break;
                }
            }
            // Pings are answered by tungstenite; text is not part of the protocol.
            Step::Received(Some(Ok(
                WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Text(_) | WsMessage::Frame(_),
            ))) => {}
            Step::Received(Some(Ok(WsMessage::Close(_)) | Err(_)) | None) => break,
            Step::ToSend(Some(Outbound::Frame(frame))) => {
                traffic.sent(frame.len());
                if sink.send(WsMessage::Binary(frame.into_bytes().into())).await.is_err() {
                    break;
                }
            }
            // Closed by the session (or the server stopped): finish the handshake, no need
            // to tell the session, it already forgot the connection.
            Step::ToSend(Some(Outbound::Close) | None) => {
                let _ = sink.close(None).await;
                return;
            }
        }
    }
    let _ = inbound.send(Inbound::Closed(id)).await;
}

// ---- client --------------------------------------------------------------------------------

type Socket = WebSocketStream<Box<dyn Io>>;
type Connecting = Pin<Box<dyn Future<Output = Result<Socket, tungstenite::Error>> + Send>>;

/// A crdt-sync client over WebSocket: a [`ClientSession`] driven on a task of its own,
/// connected to `url` (`ws://host:port` or `wss://host:port`) and reconnecting by itself, with backoff, whenever
/// the connection is lost, for as long as it lives.
#[derive(Debug)]
pub struct AsyncClient<D: SyncDocument + Send + 'static = Document> {
    commands: Sender<ClientCommand<D>>,
    events: Arc<EventHub<ClientEvent>>,
    status: Arc<StatusCell>,
    stopped: Receiver<ClientSession<D>>,
}

impl<D: SyncDocument + Send + 'static> AsyncClient<D> {
    /// Start `session` on async-std's executor and connect it to `url`.
    #[cfg(feature = "async-std")]
    pub fn connect(url: impl Into<ServerUrl>, session: ClientSession<D>) -> Self {
        Self::connect_on(url, session, spawn_on_async_std)
    }

    /// Start `session` on a task given to `spawn` (for smol: `|task|
    /// smol::spawn(task).detach()`) and connect it to `url`.
    pub fn connect_on(
        url: impl Into<ServerUrl>,
        session: ClientSession<D>,
        spawn: impl FnOnce(Task),
    ) -> Self {
        let (commands, command_rx) = async_channel::unbounded();
        let (stopped_tx, stopped) = async_channel::bounded(1);
        let events = Arc::new(EventHub::new());
        let status = Arc::new(StatusCell::new(session.status()));
        let driver = drive_client(url.into(), session, command_rx, events.clone(), status.clone());
        spawn(Box::pin(async move {
            let _ = stopped_tx.send(driver.await).await;
        }));
        AsyncClient { commands, events, status, stopped }
    }

    /// Run `job` on the session between two inputs (any command or query). `None` if the
    /// client has stopped.
    pub async fn with<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut ClientSession<D>) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = async_channel::bounded(1);
        let job: ClientJob<D> = Box::new(move |session| {
            let _ = tx.try_send(job(session));
        });
        self.commands.send(ClientCommand::Run(job)).await.ok()?;
        rx.recv().await.ok()
    }

    /// Sync `doc` under `name` (see [`ClientSession::subscribe`]).
    pub async fn subscribe(&self, name: impl Into<String>, doc: D) {
        let name = name.into();
        self.with(move |session| drop(session.subscribe(name, doc))).await;
    }

    /// Edit a synced document; what changed leaves at once. `None` if there is no such
    /// document (or the client stopped).
    pub async fn edit<R: Send + 'static>(
        &self,
        name: &str,
        edit: impl FnOnce(&mut D) -> R + Send + 'static,
    ) -> Option<R> {
        let name = name.to_owned();
        self.with(move |session| session.document_mut(&name).map(edit)).await.flatten()
    }

    /// Read a synced document.
    pub async fn read<R: Send + 'static>(
        &self,
        name: &str,
        read: impl FnOnce(&D) -> R + Send + 'static,
    ) -> Option<R> {
        let name = name.to_owned();
        self.with(move |session| session.document(&name).map(read)).await.flatten()
    }

    /// Wait until the server has acknowledged every local change of `name` made so far
    /// ("all changes saved"); returns at once if it has. Waits through reconnections.
    pub async fn wait_saved(&self, name: &str) {
        let (tx, rx) = async_channel::bounded(1);
        let waiter = Box::new(move || {
            let _ = tx.try_send(());
        });
        if self.commands.send(ClientCommand::WaitSaved(name.to_owned(), waiter)).await.is_ok() {
            let _ = rx.recv().await;
        }
    }

    /// The connection status now.
    pub fn status(&self) -> ConnectionStatus {
        self.status.get()
    }

    /// Wait until the status is `status`.
    pub async fn wait_status(&self, status: ConnectionStatus) {
        self.status.wait_for(status).await;
    }

    /// Every [`ClientEvent`] from now on (transport requests, which the client handles
    /// itself, are not included).
    pub fn events(&self) -> EventReceiver<ClientEvent> {
        self.events.subscribe()
    }

    /// Close the connection (telling the server), stop, and give the session back with its
    /// documents, unsaved edits included.
    pub async fn close(self) -> ClientSession<D> {
        let _ = self.commands.send(ClientCommand::Close).await;
        self.stopped
            .recv()
            .await
            .expect("the client's task ended without giving the session back (it panicked)")
    }
}

enum ClientStep<D: SyncDocument> {
    Connected(Result<Box<Socket>, tungstenite::Error>),
    Received(Option<Result<WsMessage, tungstenite::Error>>),
    Command(Option<ClientCommand<D>>),
    Timeout,
}

async fn drive_client<D: SyncDocument + Send + 'static>(
    url: ServerUrl,
    session: ClientSession<D>,
    commands: Receiver<ClientCommand<D>>,
    events: Arc<EventHub<ClientEvent>>,
    status: Arc<StatusCell>,
) -> ClientSession<D> {
    let config = ws_config(session.config().limits.max_frame_bytes);
    let mut core = ClientCore::new(session);
    let mut socket: Option<Socket> = None;
    let mut connecting: Option<Connecting> = None;
    let mut deadline = Deadline::new();
    core.session.connect(now());
    loop {
        flush_client(&mut core, &mut socket, &mut connecting, &url, config, &events, &status).await;
        if core.closing() {
            break;
        }
        let next = core.session.poll_timeout();
        let step = race(
            race(
                async {
                    match connecting.as_mut() {
                        Some(connecting) => ClientStep::Connected(connecting.await.map(Box::new)),
                        None => std::future::pending().await,
                    }
                },
                async {
                    match socket.as_mut() {
                        Some(socket) => ClientStep::Received(socket.next().await),
                        None => std::future::pending().await,
                    }
                },
            ),
            race(async { ClientStep::Command(commands.recv().await.ok()) }, async {
                deadline.wait_until(next).await;
                ClientStep::Timeout
            }),
        )
        .await;
        let session = &mut core.session;
        match step {
            ClientStep::Connected(result) => {
                connecting = None;
                match result {
                    Ok(ws) => {
                        socket = Some(*ws);
                        session.handle_connected(now());
                    }
                    Err(e) => session.handle_transport_error(now(), e.to_string()),
                }
            }
            ClientStep::Received(Some(Ok(WsMessage::Binary(frame)))) => session.handle_input(now(), &frame),
            ClientStep::Received(Some(Ok(
                WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Text(_) | WsMessage::Frame(_),
            ))) => {}
            ClientStep::Received(Some(Ok(WsMessage::Close(_))) | None) => {
                socket = None;
                session.handle_disconnected(now());
            }
            ClientStep::Received(Some(Err(e))) => {
                socket = None;
                session.handle_transport_error(now(), e.to_string());
            }
            ClientStep::Command(command) => core.command(command),
            ClientStep::Timeout => session.handle_timeout(now()),
        }
        core.wake_saved();
    }
    if let Some(mut ws) = socket.take() {
        let _ = ws.close(None).await;
    }
    core.finish()
}

/// Send what the session has to send and act on its events, until it has nothing more.
async fn flush_client<D: SyncDocument>(
    core: &mut ClientCore<D>,
    socket: &mut Option<Socket>,
    connecting: &mut Option<Connecting>,
    url: &ServerUrl,
    config: WebSocketConfig,
    events: &EventHub<ClientEvent>,
    status: &StatusCell,
) {
    loop {
        let mut busy = false;
        while let Some(frame) = core.session.poll_transmit() {
            busy = true;
            // Frames polled without a socket belong to a connection already gone.
            if let Some(ws) = socket.as_mut()
                && let Err(e) = futures_util::SinkExt::send(ws, WsMessage::Binary(frame.into())).await
            {
                *socket = None;
                core.session.handle_transport_error(now(), e.to_string());
            }
        }
        for request in core.drain_events(|event| events.publish(event), |s| status.set(s)) {
            busy = true;
            match request {
                TransportRequest::Open => *connecting = Some(Box::pin(open(url.clone(), config))),
                TransportRequest::Close => {
                    if let Some(mut ws) = socket.take() {
                        let _ = ws.close(None).await;
                    }
                    *connecting = None;
                }
            }
        }
        if !busy {
            return;
        }
    }
}

/// Connect to `url` and open the WebSocket (over TLS for `wss://`).
async fn open(url: ServerUrl, config: WebSocketConfig) -> Result<Socket, tungstenite::Error> {
    let request = url.as_str().into_client_request()?;
    let target = Target::of(&request)?;
    let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = if target.tls {
        let connector = TlsConnector::from(url.tls().config().clone());
        Box::new(connector.connect(target.server_name()?, tcp).await?)
    } else {
        Box::new(tcp)
    };
    let (ws, _) = async_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    Ok(ws)
}
