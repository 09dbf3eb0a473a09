//! WebSocket server and client on tokio (feature `tokio`), over tokio-tungstenite.
//!
//! Both are thin loops around the sans-IO sessions. One task owns the state machine
//! ([`Server`] or [`ClientSession`]) and waits on whatever comes first: a frame, a command
//! from the application, or the session's next deadline (`poll_timeout`); then it drains the
//! session's frames and events. The server gives every connection a task of its own that
//! moves frames between its socket and the session task, so a slow socket never blocks the
//! others.
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use crdt_sync::tokio::{TokioClient, TokioServer};
//! use crdt_sync::{ClientConfig, ClientSession, Document, PeerId, ServerConfig};
//!
//! let server = TokioServer::bind("127.0.0.1:0", ServerConfig::default()).await?;
//! let url = format!("ws://{}", server.local_addr());
//! let client = TokioClient::connect(url, ClientSession::new(PeerId::new(1), ClientConfig::default()));
//! client.subscribe("notes", Document::new(PeerId::new(1))).await;
//! client.edit("notes", |doc| doc.transact().text("body").insert(0, "hello").map(drop)).await;
//! client.wait_saved("notes").await;
//! let session = client.close().await;
//! let server = server.shutdown().await; // every connection told, every queued frame sent
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use ::tokio::io::{AsyncRead, AsyncWrite};
use ::tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use ::tokio::sync::{broadcast, mpsc, oneshot, watch};
use ::tokio::task::{JoinHandle, JoinSet};
use ::tokio::time::sleep_until;
use futures_util::{SinkExt, StreamExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_tungstenite::WebSocketStream;
use tungstenite::Message as WsMessage;
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::WebSocketConfig;

pub use crate::runtime_common::Traffic;
use crate::runtime_common::{
    ClientCommand, ClientCore, ClientJob, EVENT_BUFFER, HANDSHAKE_TIMEOUT, INBOUND_FRAMES, Inbound, Outbound,
    Outlet, OutletSend, Outlets, SHUTDOWN_GRACE, ServerCommand, ServerJob, StorageThread, Target,
    TrafficCounters, TransportRequest, check_storage, flush_server, handle_inbound, now, ws_config,
};
use crate::store::{DocumentStore, MemoryStore};
use crate::{
    ClientEvent, ClientSession, ConnectionId, ConnectionStatus, Document, DurableStorage, Server,
    ServerConfig, ServerEvent, ServerTls, ServerUrl, StorageOutcome, SyncDocument,
};

/// A connection's byte stream: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn deadline(at: Option<std::time::Instant>) -> ::tokio::time::Instant {
    // No deadline: an hour away; the loop recomputes it after every step anyway.
    ::tokio::time::Instant::from_std(at.unwrap_or_else(|| now() + std::time::Duration::from_secs(3600)))
}

type OutboundTx = mpsc::UnboundedSender<Outbound>;

impl OutletSend for OutboundTx {
    fn send(&self, out: Outbound) {
        let _ = mpsc::UnboundedSender::send(self, out);
    }
}

// ---- server --------------------------------------------------------------------------------

/// A crdt-sync server on a TCP port, speaking WebSocket (one binary message per frame).
///
/// Dropping it shuts the server down as [`TokioServer::shutdown`] does, in the background
/// (within the runtime's life); `shutdown` also waits for it and gives the store back.
#[derive(Debug)]
pub struct TokioServer<S: DocumentStore + Send + 'static = MemoryStore> {
    addr: SocketAddr,
    commands: mpsc::UnboundedSender<ServerCommand<S>>,
    events: broadcast::Sender<ServerEvent>,
    traffic: Arc<TrafficCounters>,
    task: JoinHandle<Server<S>>,
}

impl TokioServer<MemoryStore> {
    /// Listen on `addr` with documents kept in memory.
    pub async fn bind(addr: impl ToSocketAddrs, config: ServerConfig) -> io::Result<Self> {
        Self::serve(addr, Server::in_memory(config)).await
    }
}

impl<S> TokioServer<S>
where
    S: DocumentStore + Send + 'static,
    S::Document: Send,
{
    /// Listen on `addr` and serve `server` (any store, plugins already added). A durable
    /// server needs [`serve_durable`](Self::serve_durable).
    pub async fn serve(addr: impl ToSocketAddrs, server: Server<S>) -> io::Result<Self> {
        Self::start(addr, server, None, None).await
    }

    /// [`serve`](Self::serve) over TLS: clients connect to `wss://`.
    pub async fn serve_tls(addr: impl ToSocketAddrs, server: Server<S>, tls: ServerTls) -> io::Result<Self> {
        Self::start(addr, server, Some(TlsAcceptor::from(tls.config().clone())), None).await
    }

    /// Serve a durable `server` ([`ServerConfig::durable`]) on `addr` (over TLS if `tls` is
    /// given), its documents in `storage` (`crdt_sync::sqlite::SqliteStorage`, say).
    /// Storage runs on a thread of its own; a client's changes are acknowledged once
    /// committed there, and [`shutdown`](Self::shutdown) commits everything applied before
    /// it says goodbye.
    pub async fn serve_durable<T>(
        addr: impl ToSocketAddrs,
        server: Server<S>,
        storage: T,
        tls: Option<ServerTls>,
    ) -> io::Result<Self>
    where
        T: DurableStorage<Document = S::Document> + Send + 'static,
    {
        let (outcomes, outcome_rx) = mpsc::unbounded_channel();
        let thread = StorageThread::spawn(storage, move |outcome| drop(outcomes.send(outcome)))?;
        let tls = tls.map(|tls| TlsAcceptor::from(tls.config().clone()));
        Self::start(addr, server, tls, Some((thread, outcome_rx))).await
    }

    async fn start(
        addr: impl ToSocketAddrs,
        server: Server<S>,
        tls: Option<TlsAcceptor>,
        storage: Option<Storage<S::Document>>,
    ) -> io::Result<Self> {
        check_storage(&server, storage.is_some())?;
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let traffic = Arc::new(TrafficCounters::default());
        let task = ::tokio::spawn(drive_server(
            listener,
            tls,
            server,
            storage,
            command_rx,
            events.clone(),
            traffic.clone(),
        ));
        Ok(TokioServer { addr, commands, events, traffic, task })
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
    pub fn events(&self) -> broadcast::Receiver<ServerEvent> {
        self.events.subscribe()
    }

    /// Run `job` on the server, between two inputs: read a document, add a plugin. `None` if
    /// the server has stopped.
    pub async fn with<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Server<S>) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let job: ServerJob<S> = Box::new(move |server| {
            let _ = tx.send(job(server));
        });
        self.commands.send(ServerCommand::Run(job)).ok()?;
        rx.await.ok()
    }

    /// Stop: apply what already arrived, tell every client the server shuts down, send every
    /// queued frame (waiting up to a few seconds for slow sockets), and give the server back
    /// with its store.
    pub async fn shutdown(self) -> Server<S> {
        let _ = self.commands.send(ServerCommand::Shutdown);
        match self.task.await {
            Ok(server) => server,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// A durable server's storage thread and the channel its answers come back on.
type Storage<D> = (StorageThread, mpsc::UnboundedReceiver<StorageOutcome<D>>);

/// The next storage answer; never, without storage.
async fn next_outcome<D>(storage: &mut Option<Storage<D>>) -> Option<StorageOutcome<D>> {
    match storage {
        Some((_, outcomes)) => outcomes.recv().await,
        None => std::future::pending().await,
    }
}

async fn drive_server<S>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut server: Server<S>,
    mut storage: Option<Storage<S::Document>>,
    mut commands: mpsc::UnboundedReceiver<ServerCommand<S>>,
    events: broadcast::Sender<ServerEvent>,
    traffic: Arc<TrafficCounters>,
) -> Server<S>
where
    S: DocumentStore + Send + 'static,
    S::Document: Send,
{
    let (inbound_tx, mut inbound) = mpsc::channel::<Inbound>(INBOUND_FRAMES);
    let mut connections: Outlets<OutboundTx> = Outlets::new();
    let mut tasks = JoinSet::new();
    let ws = ws_config(server.config().limits.max_frame_bytes);
    loop {
        let next = server.poll_timeout();
        ::tokio::select! {
            accepted = listener.accept() => {
                // A failed accept (out of file descriptors, say) is the listener's problem,
                // not a reason to stop serving the connections we have.
                // An address with too many unfinished handshakes is dropped before its
                // TLS or WebSocket handshake costs anything.
                if let Ok((stream, address)) = accepted
                    && let Ok(id) = server.accept_from(now(), address.ip())
                {
                    let _ = stream.set_nodelay(true);
                    let (tx, rx) = mpsc::unbounded_channel();
                    connections.insert(id, Outlet::new(tx));
                    tasks.spawn(serve_connection(id, stream, tls.clone(), ws, inbound_tx.clone(), rx, traffic.clone()));
                }
            }
            Some(input) = inbound.recv() => handle_inbound(&mut server, &mut connections, input),
            Some(outcome) = next_outcome(&mut storage) => server.handle_storage(now(), outcome),
            // Reap finished connection tasks: a JoinSet keeps each one's result until it is
            // joined, which over a long-running server's reconnects would only grow.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            command = commands.recv() => match command {
                Some(ServerCommand::Run(job)) => job(&mut server),
                // Shutdown, or every handle dropped.
                Some(ServerCommand::Shutdown) | None => break,
            },
            _ = sleep_until(deadline(next)) => server.handle_timeout(now()),
        }
        flush_server(&mut server, &mut connections, |event| drop(events.send(event)));
        if let Some((thread, _)) = &storage {
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
    if let Some((thread, outcomes)) = &mut storage {
        let until = ::tokio::time::Instant::now() + SHUTDOWN_GRACE;
        loop {
            thread.submit_from(&mut server);
            if server.storage_settled() {
                break;
            }
            match ::tokio::time::timeout_at(until, outcomes.recv()).await {
                Ok(Some(outcome)) => server.handle_storage(now(), outcome),
                _ => break,
            }
        }
    }
    server.shutdown();
    flush_server(&mut server, &mut connections, |event| drop(events.send(event)));
    drop(listener);
    connections.clear();
    let _ =
        ::tokio::time::timeout(SHUTDOWN_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    if let Some(storage) = storage {
        // Joining the storage thread blocks until its last request is done.
        let _ = ::tokio::task::spawn_blocking(move || drop(storage)).await;
    }
    server
}

/// One connection: the WebSocket handshake, then frames both ways until either side closes.
async fn serve_connection(
    id: ConnectionId,
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    config: WebSocketConfig,
    inbound: mpsc::Sender<Inbound>,
    mut outbound: mpsc::UnboundedReceiver<Outbound>,
    traffic: Arc<TrafficCounters>,
) {
    let handshake = async {
        let stream: Box<dyn Io> = match tls {
            Some(tls) => Box::new(tls.accept(stream).await?),
            None => Box::new(stream),
        };
        tokio_tungstenite::accept_async_with_config(stream, Some(config)).await.map_err(io::Error::other)
    };
    let Ok(Ok(ws)) = ::tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await else {
        let _ = inbound.send(Inbound::Closed(id)).await;
        return;
    };
    let (mut sink, mut source) = ws.split();
    loop {
        ::tokio::select! {
            message = source.next() => match message {
                Some(Ok(WsMessage::Binary(frame))) => {
                    traffic.received(frame.len());
                    if inbound.send(Inbound::Frame(id, frame.into())).await.is_err() {
                        break;
                    }
                }
                // Pings are answered by tungstenite; text is not part of the protocol.
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Text(_) | WsMessage::Frame(_))) => {}
                Some(Ok(WsMessage::Close(_)) | Err(_)) | None => break,
            },
            out = outbound.recv() => match out {
                Some(Outbound::Frame(frame)) => {
                    traffic.sent(frame.len());
                    if sink.send(WsMessage::Binary(frame.into_bytes().into())).await.is_err() {
                        break;
                    }
                }
                // Closed by the session (or the server stopped): finish the handshake, no
                // need to tell the session, it already forgot the connection.
                Some(Outbound::Close) | None => {
                    let _ = sink.send(WsMessage::Close(None)).await;
                    let _ = sink.close().await;
                    return;
                }
            },
        }
    }
    let _ = inbound.send(Inbound::Closed(id)).await;
}

// ---- client --------------------------------------------------------------------------------

type Socket = WebSocketStream<Box<dyn Io>>;
type Connecting = Pin<Box<dyn Future<Output = Result<Socket, tungstenite::Error>> + Send>>;

/// A crdt-sync client over WebSocket: a [`ClientSession`] driven on its own task, connected
/// to `url` (`ws://host:port` or `wss://host:port`) and reconnecting by itself, with backoff, whenever the
/// connection is lost, for as long as it lives.
#[derive(Debug)]
pub struct TokioClient<D: SyncDocument + Send + 'static = Document> {
    commands: mpsc::UnboundedSender<ClientCommand<D>>,
    events: broadcast::Sender<ClientEvent>,
    status: watch::Receiver<ConnectionStatus>,
    task: JoinHandle<ClientSession<D>>,
}

impl<D: SyncDocument + Send + 'static> TokioClient<D> {
    /// Start `session` on a task of the current tokio runtime and connect it to `url`.
    pub fn connect(url: impl Into<ServerUrl>, session: ClientSession<D>) -> Self {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (status_tx, status) = watch::channel(session.status());
        let task = ::tokio::spawn(drive_client(url.into(), session, command_rx, events.clone(), status_tx));
        TokioClient { commands, events, status, task }
    }

    /// Run `job` on the session between two inputs (any command or query). `None` if the
    /// client has stopped.
    pub async fn with<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut ClientSession<D>) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let job: ClientJob<D> = Box::new(move |session| {
            let _ = tx.send(job(session));
        });
        self.commands.send(ClientCommand::Run(job)).ok()?;
        rx.await.ok()
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
        let (tx, rx) = oneshot::channel();
        let waiter = Box::new(move || {
            let _ = tx.send(());
        });
        if self.commands.send(ClientCommand::WaitSaved(name.to_owned(), waiter)).is_ok() {
            let _ = rx.await;
        }
    }

    /// The connection status now.
    pub fn status(&self) -> ConnectionStatus {
        *self.status.borrow()
    }

    /// Wait until the status is `status`.
    pub async fn wait_status(&self, status: ConnectionStatus) {
        let mut watch = self.status.clone();
        let _ = watch.wait_for(|s| *s == status).await;
    }

    /// Every [`ClientEvent`] from now on (transport requests, which the client handles
    /// itself, are not included).
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.events.subscribe()
    }

    /// Close the connection (telling the server), stop, and give the session back with its
    /// documents, unsaved edits included.
    pub async fn close(self) -> ClientSession<D> {
        let _ = self.commands.send(ClientCommand::Close);
        match self.task.await {
            Ok(session) => session,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

async fn drive_client<D: SyncDocument + Send + 'static>(
    url: ServerUrl,
    session: ClientSession<D>,
    mut commands: mpsc::UnboundedReceiver<ClientCommand<D>>,
    events: broadcast::Sender<ClientEvent>,
    status: watch::Sender<ConnectionStatus>,
) -> ClientSession<D> {
    let config = ws_config(session.config().limits.max_frame_bytes);
    let mut core = ClientCore::new(session);
    let mut socket: Option<Socket> = None;
    let mut connecting: Option<Connecting> = None;
    core.session.connect(now());
    loop {
        flush_client(&mut core, &mut socket, &mut connecting, &url, config, &events, &status).await;
        if core.closing() {
            break;
        }
        let session = &mut core.session;
        let next = session.poll_timeout();
        ::tokio::select! {
            result = async { connecting.as_mut().expect("guarded").await }, if connecting.is_some() => {
                connecting = None;
                match result {
                    Ok(ws) => {
                        socket = Some(ws);
                        session.handle_connected(now());
                    }
                    Err(e) => session.handle_transport_error(now(), e.to_string()),
                }
            }
            message = async { socket.as_mut().expect("guarded").next().await }, if socket.is_some() => match message {
                Some(Ok(WsMessage::Binary(frame))) => session.handle_input(now(), &frame),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Text(_) | WsMessage::Frame(_))) => {}
                Some(Ok(WsMessage::Close(_))) | None => {
                    socket = None;
                    session.handle_disconnected(now());
                }
                Some(Err(e)) => {
                    socket = None;
                    session.handle_transport_error(now(), e.to_string());
                }
            },
            command = commands.recv() => core.command(command),
            _ = sleep_until(deadline(next)) => session.handle_timeout(now()),
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
    events: &broadcast::Sender<ClientEvent>,
    status: &watch::Sender<ConnectionStatus>,
) {
    loop {
        let mut busy = false;
        while let Some(frame) = core.session.poll_transmit() {
            busy = true;
            // Frames polled without a socket belong to a connection already gone.
            if let Some(ws) = socket.as_mut()
                && let Err(e) = ws.send(WsMessage::Binary(frame.into())).await
            {
                *socket = None;
                core.session.handle_transport_error(now(), e.to_string());
            }
        }
        let requests = core.drain_events(
            |event| drop(events.send(event)),
            |s| {
                status.send_replace(s);
            },
        );
        for request in requests {
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
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    Ok(ws)
}
