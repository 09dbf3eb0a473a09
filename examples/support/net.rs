//! One blocking handle over the three socket runtimes (tokio, async-io on async-std, and
//! blocking tungstenite), so that the trace tool and the runtime tests drive any of them, or
//! a mix, with the same code. Each runtime is there when its feature is.
#![allow(dead_code)] // the trace tool and the tests use different parts

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crdt_sync::{
    ClientEvent, ClientSession, ConnectionStatus, Document, MemoryStore, Server, ServerTls, ServerUrl,
    Traffic,
};

/// Which runtime serves or connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Tokio,
    AsyncStd,
    Blocking,
}

impl Runtime {
    /// From its `--via` name; `None` for an unknown name.
    pub fn parse(name: &str) -> Option<Runtime> {
        match name {
            "tokio" => Some(Runtime::Tokio),
            "async-std" => Some(Runtime::AsyncStd),
            "blocking" => Some(Runtime::Blocking),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Runtime::Tokio => "tokio",
            Runtime::AsyncStd => "async-std",
            Runtime::Blocking => "blocking",
        }
    }

    /// The cargo feature that builds it.
    pub fn feature(self) -> &'static str {
        match self {
            Runtime::Tokio => "tokio",
            Runtime::AsyncStd => "async-std",
            Runtime::Blocking => "tungstenite",
        }
    }

    fn missing(self) -> io::Error {
        io::Error::other(format!("the {} runtime needs --features {}", self.name(), self.feature()))
    }
}

#[cfg(feature = "tokio")]
fn tokio_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime")
    })
}

/// Wait for `future` at most `timeout`: `None` if it did not finish.
#[cfg(feature = "async-io")]
fn async_within<T>(timeout: Duration, future: impl Future<Output = T>) -> Option<T> {
    async_io::block_on(futures_lite::future::or(async { Some(future.await) }, async {
        async_io::Timer::after(timeout).await;
        None
    }))
}

/// A server on one of the runtimes.
pub enum NetServer {
    #[cfg(feature = "tokio")]
    Tokio(crdt_sync::tokio::TokioServer),
    #[cfg(feature = "async-std")]
    AsyncStd(crdt_sync::async_io::AsyncServer),
    #[cfg(feature = "tungstenite")]
    Blocking(crdt_sync::blocking::BlockingServer),
}

impl NetServer {
    /// Serve `server` on `addr` with `runtime`.
    pub fn serve(runtime: Runtime, addr: SocketAddr, server: Server<MemoryStore>) -> io::Result<NetServer> {
        Self::serve_maybe_tls(runtime, addr, server, None)
    }

    /// Serve `server` on `addr` with `runtime`, over TLS (`wss://`) when `tls` is given.
    pub fn serve_maybe_tls(
        runtime: Runtime,
        addr: SocketAddr,
        server: Server<MemoryStore>,
        tls: Option<ServerTls>,
    ) -> io::Result<NetServer> {
        match runtime {
            #[cfg(feature = "tokio")]
            Runtime::Tokio => {
                use crdt_sync::tokio::TokioServer;
                tokio_runtime()
                    .block_on(async {
                        match tls {
                            Some(tls) => TokioServer::serve_tls(addr, server, tls).await,
                            None => TokioServer::serve(addr, server).await,
                        }
                    })
                    .map(NetServer::Tokio)
            }
            #[cfg(feature = "async-std")]
            Runtime::AsyncStd => {
                use crdt_sync::async_io::AsyncServer;
                async_io::block_on(async {
                    match tls {
                        Some(tls) => AsyncServer::serve_tls(addr, server, tls).await,
                        None => AsyncServer::serve(addr, server).await,
                    }
                })
                .map(NetServer::AsyncStd)
            }
            #[cfg(feature = "tungstenite")]
            Runtime::Blocking => {
                use crdt_sync::blocking::BlockingServer;
                match tls {
                    Some(tls) => BlockingServer::serve_tls(addr, server, tls),
                    None => BlockingServer::serve(addr, server),
                }
                .map(NetServer::Blocking)
            }
            #[allow(unreachable_patterns)]
            other => {
                drop((server, tls));
                Err(other.missing())
            }
        }
    }

    /// Serve a durable `server` on `addr` with `runtime`, its documents in `storage`.
    pub fn serve_durable<T>(
        runtime: Runtime,
        addr: SocketAddr,
        server: Server<MemoryStore>,
        storage: T,
    ) -> io::Result<NetServer>
    where
        T: crdt_sync::DurableStorage<Document = crdt_sync::Document> + Send + 'static,
    {
        match runtime {
            #[cfg(feature = "tokio")]
            Runtime::Tokio => tokio_runtime()
                .block_on(crdt_sync::tokio::TokioServer::serve_durable(addr, server, storage, None))
                .map(NetServer::Tokio),
            #[cfg(feature = "async-std")]
            Runtime::AsyncStd => async_io::block_on(crdt_sync::async_io::AsyncServer::serve_durable(
                addr, server, storage, None,
            ))
            .map(NetServer::AsyncStd),
            #[cfg(feature = "tungstenite")]
            Runtime::Blocking => {
                crdt_sync::blocking::BlockingServer::serve_durable(addr, server, storage, None)
                    .map(NetServer::Blocking)
            }
            #[allow(unreachable_patterns)]
            other => {
                drop((server, storage));
                Err(other.missing())
            }
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        match self {
            #[cfg(feature = "tokio")]
            NetServer::Tokio(s) => s.local_addr(),
            #[cfg(feature = "async-std")]
            NetServer::AsyncStd(s) => s.local_addr(),
            #[cfg(feature = "tungstenite")]
            NetServer::Blocking(s) => s.local_addr(),
        }
    }

    pub fn traffic(&self) -> Traffic {
        match self {
            #[cfg(feature = "tokio")]
            NetServer::Tokio(s) => s.traffic(),
            #[cfg(feature = "async-std")]
            NetServer::AsyncStd(s) => s.traffic(),
            #[cfg(feature = "tungstenite")]
            NetServer::Blocking(s) => s.traffic(),
        }
    }

    pub fn with<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Server<MemoryStore>) -> R + Send + 'static,
    ) -> Option<R> {
        match self {
            #[cfg(feature = "tokio")]
            NetServer::Tokio(s) => tokio_runtime().block_on(s.with(job)),
            #[cfg(feature = "async-std")]
            NetServer::AsyncStd(s) => async_io::block_on(s.with(job)),
            #[cfg(feature = "tungstenite")]
            NetServer::Blocking(s) => s.with(job),
        }
    }

    /// The text of container `text` in document `name`, as the server has it.
    pub fn text(&self, name: &str) -> String {
        let name = name.to_owned();
        self.with(move |s| s.document(&name).map(|d| d.text("text").to_string()).unwrap_or_default())
            .unwrap_or_default()
    }

    pub fn shutdown(self) -> Server<MemoryStore> {
        match self {
            #[cfg(feature = "tokio")]
            NetServer::Tokio(s) => tokio_runtime().block_on(s.shutdown()),
            #[cfg(feature = "async-std")]
            NetServer::AsyncStd(s) => async_io::block_on(s.shutdown()),
            #[cfg(feature = "tungstenite")]
            NetServer::Blocking(s) => s.shutdown(),
        }
    }
}

/// A client on one of the runtimes.
pub enum NetClient {
    #[cfg(feature = "tokio")]
    Tokio(crdt_sync::tokio::TokioClient),
    #[cfg(feature = "async-std")]
    AsyncStd(crdt_sync::async_io::AsyncClient),
    #[cfg(feature = "tungstenite")]
    Blocking(crdt_sync::blocking::BlockingClient),
}

impl NetClient {
    /// Start `session` on `runtime`, connecting to `url`.
    pub fn connect(
        runtime: Runtime,
        url: impl Into<ServerUrl>,
        session: ClientSession,
    ) -> io::Result<NetClient> {
        let url = url.into();
        match runtime {
            #[cfg(feature = "tokio")]
            Runtime::Tokio => {
                let _inside = tokio_runtime().enter();
                Ok(NetClient::Tokio(crdt_sync::tokio::TokioClient::connect(url, session)))
            }
            #[cfg(feature = "async-std")]
            Runtime::AsyncStd => {
                Ok(NetClient::AsyncStd(crdt_sync::async_io::AsyncClient::connect(url, session)))
            }
            #[cfg(feature = "tungstenite")]
            Runtime::Blocking => {
                Ok(NetClient::Blocking(crdt_sync::blocking::BlockingClient::connect(url, session)))
            }
            #[allow(unreachable_patterns)]
            other => {
                drop((url, session));
                Err(other.missing())
            }
        }
    }

    pub fn with<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut ClientSession) -> R + Send + 'static,
    ) -> Option<R> {
        match self {
            #[cfg(feature = "tokio")]
            NetClient::Tokio(c) => tokio_runtime().block_on(c.with(job)),
            #[cfg(feature = "async-std")]
            NetClient::AsyncStd(c) => async_io::block_on(c.with(job)),
            #[cfg(feature = "tungstenite")]
            NetClient::Blocking(c) => c.with(job),
        }
    }

    pub fn edit<R: Send + 'static>(
        &self,
        name: &str,
        edit: impl FnOnce(&mut Document) -> R + Send + 'static,
    ) -> Option<R> {
        let name = name.to_owned();
        self.with(move |session| session.document_mut(&name).map(edit)).flatten()
    }

    pub fn read<R: Send + 'static>(
        &self,
        name: &str,
        read: impl FnOnce(&Document) -> R + Send + 'static,
    ) -> Option<R> {
        let name = name.to_owned();
        self.with(move |session| session.document(&name).map(read)).flatten()
    }

    /// Whether every local change of `name` was acknowledged within `timeout`.
    pub fn wait_saved(&self, name: &str, timeout: Duration) -> bool {
        match self {
            #[cfg(feature = "tokio")]
            NetClient::Tokio(c) => {
                // The timer needs the runtime's context: made inside the future.
                tokio_runtime()
                    .block_on(async { tokio::time::timeout(timeout, c.wait_saved(name)).await })
                    .is_ok()
            }
            #[cfg(feature = "async-std")]
            NetClient::AsyncStd(c) => async_within(timeout, c.wait_saved(name)).is_some(),
            #[cfg(feature = "tungstenite")]
            NetClient::Blocking(c) => c.wait_saved_timeout(name, timeout),
        }
    }

    /// Whether the status became `status` within `timeout`.
    pub fn wait_status(&self, status: ConnectionStatus, timeout: Duration) -> bool {
        match self {
            #[cfg(feature = "tokio")]
            NetClient::Tokio(c) => tokio_runtime()
                .block_on(async { tokio::time::timeout(timeout, c.wait_status(status)).await })
                .is_ok(),
            #[cfg(feature = "async-std")]
            NetClient::AsyncStd(c) => async_within(timeout, c.wait_status(status)).is_some(),
            #[cfg(feature = "tungstenite")]
            NetClient::Blocking(c) => c.wait_status_timeout(status, timeout),
        }
    }

    /// The detail of the next [`ClientEvent::TransportFailed`] within `timeout`.
    pub fn next_transport_failure(&self, timeout: Duration) -> Option<String> {
        let failure = |event: ClientEvent| match event {
            ClientEvent::TransportFailed { detail } => Some(detail),
            _ => None,
        };
        match self {
            #[cfg(feature = "tokio")]
            NetClient::Tokio(c) => {
                let mut events = c.events();
                tokio_runtime()
                    .block_on(async {
                        tokio::time::timeout(timeout, async {
                            loop {
                                match events.recv().await {
                                    Ok(event) => {
                                        if let Some(detail) = failure(event) {
                                            return Some(detail);
                                        }
                                    }
                                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                                    Err(_) => return None,
                                }
                            }
                        })
                        .await
                    })
                    .ok()
                    .flatten()
            }
            #[cfg(feature = "async-std")]
            NetClient::AsyncStd(c) => {
                let mut events = c.events();
                async_within(timeout, async {
                    while let Ok(event) = events.recv().await {
                        if let Some(detail) = failure(event) {
                            return Some(detail);
                        }
                    }
                    None
                })
                .flatten()
            }
            #[cfg(feature = "tungstenite")]
            NetClient::Blocking(c) => {
                let mut events = c.events();
                #[allow(clippy::disallowed_methods)] // real sockets, real time
                let deadline = std::time::Instant::now() + timeout;
                #[allow(clippy::disallowed_methods)]
                while std::time::Instant::now() < deadline {
                    match events.try_recv() {
                        Ok(event) => {
                            if let Some(detail) = failure(event) {
                                return Some(detail);
                            }
                        }
                        Err(async_broadcast::TryRecvError::Closed) => return None,
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
                None
            }
        }
    }

    pub fn close(self) -> ClientSession {
        match self {
            #[cfg(feature = "tokio")]
            NetClient::Tokio(c) => tokio_runtime().block_on(c.close()),
            #[cfg(feature = "async-std")]
            NetClient::AsyncStd(c) => async_io::block_on(c.close()),
            #[cfg(feature = "tungstenite")]
            NetClient::Blocking(c) => c.close(),
        }
    }
}
