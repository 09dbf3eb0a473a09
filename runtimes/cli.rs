//! The `crdt-sync` command: a sync server with its data folder, and tools to look at
//! documents (feature `cli`).
//!
//! ```text
//! crdt-sync serve [--listen ADDR] [--data DIR] [--unload-after-s S] [--tls-cert PEM --tls-key PEM]
//!                 [--auth-secret-file F] [--max-messages-per-second N] [--message-burst N]
//!                 [--max-unauthenticated-per-address N]
//! crdt-sync token --secret-file F --doc D [--doc D2 ...] [--read-only] [--subject S] [--expires-in-s S]
//! crdt-sync cat URL DOC [--container NAME] [--ca PEM] [--token T]
//! crdt-sync export --data DIR DOC [--container NAME]
//! crdt-sync ls --data DIR
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use crdt_sync::sqlite::{CompactionPolicy, SqliteStorage};
use crdt_sync::tokio::{TokioClient, TokioServer};
use crdt_sync::{
    ClientConfig, ClientEvent, ClientSession, ClientTls, ConnectionStatus, Document, DurableStorage,
    HmacAuthenticator, PeerId, Server, ServerConfig, ServerEvent, ServerTls, ServerUrl, TokenClaims,
};
use tracing::{error, info, warn};

#[derive(Parser, Debug)]
#[command(name = "crdt-sync", version, about = "CRDT documents synced over WebSocket")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the sync server: documents live in the data folder (SQLite) and are served over
    /// WebSocket. A change is acknowledged to its client once it is on disk.
    Serve {
        /// Address to listen on (`0.0.0.0:8787` to accept other machines).
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: String,
        /// Data folder (created if missing).
        #[arg(long, default_value = "crdt-sync-data")]
        data: PathBuf,
        /// Seconds a document nobody subscribes to stays in memory.
        #[arg(long, default_value_t = 30)]
        unload_after_s: u64,
        /// Serve `wss://` with this certificate chain (PEM, leaf first); needs `--tls-key`.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key of `--tls-cert` (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Require a token signed with the secret in this file (`crdt-sync token` makes
        /// them): a client may use the documents its token names, and only those. Without
        /// it, every client may read and write every document.
        #[arg(long)]
        auth_secret_file: Option<PathBuf>,
        #[command(flatten)]
        limits: Limits,
    },
    /// Make a token for a server started with `--auth-secret-file`, and print it.
    Token {
        /// The server's secret.
        #[arg(long)]
        secret_file: PathBuf,
        /// A document the token opens: a name, or a prefix ending in `*` (repeat for more).
        #[arg(long = "doc", required = true)]
        documents: Vec<String>,
        /// The holder may only read: its changes and presence are refused.
        #[arg(long)]
        read_only: bool,
        /// Who holds it, for the server's logs.
        #[arg(long, default_value = "user")]
        subject: String,
        /// Seconds until the token expires (default: never). The server closes a connection
        /// whose token expires unless the client sent a fresh one.
        #[arg(long)]
        expires_in_s: Option<u64>,
    },
    /// Print a document as a running server has it: the text of one container, or JSON of
    /// the whole document.
    Cat {
        /// The server, for example `ws://127.0.0.1:8787` or `wss://sync.example.com`.
        url: String,
        /// The document's name.
        doc: String,
        /// Print only this root text container, raw.
        #[arg(long)]
        container: Option<String>,
        /// For `wss://`: trust the certificate authorities in this PEM file instead of the
        /// web's.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// The token to present (for a server started with `--auth-secret-file`).
        #[arg(long)]
        token: Option<String>,
    },
    /// Print a document from a data folder, without a server (also while one runs on it).
    Export {
        /// The data folder.
        #[arg(long)]
        data: PathBuf,
        /// The document's name.
        doc: String,
        /// Print only this root text container, raw.
        #[arg(long)]
        container: Option<String>,
    },
    /// List the documents of a data folder with their sizes on disk, one `NAME<TAB>BYTES`
    /// line each (also while a server runs on it).
    Ls {
        /// The data folder.
        #[arg(long)]
        data: PathBuf,
    },
}

/// The server's limits on what one client may do.
#[derive(clap::Args, Debug)]
struct Limits {
    /// Messages a connection may send per second, sustained (0: no limit).
    #[arg(long)]
    max_messages_per_second: Option<u32>,
    /// Messages a connection may send above the sustained rate in a burst.
    #[arg(long)]
    message_burst: Option<u32>,
    /// Connections from one address that may be in their handshake at once (raise it
    /// behind a proxy, where every client has the proxy's address).
    #[arg(long)]
    max_unauthenticated_per_address: Option<usize>,
}

impl Limits {
    fn apply(&self, mut config: ServerConfig) -> ServerConfig {
        let rate = self.max_messages_per_second.unwrap_or(config.max_messages_per_second);
        let burst = self.message_burst.unwrap_or(config.message_burst);
        config = config.with_rate_limit(rate, burst);
        if let Some(max) = self.max_unauthenticated_per_address {
            config = config.with_max_unauthenticated_per_address(max);
        }
        config
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { listen, data, unload_after_s, tls_cert, tls_key, auth_secret_file, limits } => {
                let tls = match (tls_cert, tls_key) {
                    (Some(cert), Some(key)) => match ServerTls::from_pem_files(&cert, &key) {
                        Ok(tls) => Some(tls),
                        Err(e) => return Err(format!("TLS identity: {e}")),
                    },
                    _ => None,
                };
                let secret = auth_secret_file.as_deref().map(read_secret).transpose()?;
                let config =
                    limits.apply(ServerConfig::default().with_durable(Duration::from_secs(unload_after_s)));
                serve(&listen, &data, config, tls, secret).await
            }
            Command::Token { secret_file, documents, read_only, subject, expires_in_s } => {
                let secret = read_secret(&secret_file)?;
                let mut claims = TokenClaims::new(subject, documents);
                if read_only {
                    claims = claims.read_only();
                }
                if let Some(seconds) = expires_in_s {
                    claims = claims.expiring_at(unix_now() + seconds);
                }
                let token = crdt_sync::auth::sign_token(&secret, &claims).map_err(|e| e.to_string())?;
                println!("{token}");
                Ok(())
            }
            Command::Cat { url, doc, container, ca, token } => {
                let url = match ca {
                    Some(ca) => match ClientTls::with_root_certificates(&ca) {
                        Ok(tls) => ServerUrl::new(url).with_tls(tls),
                        Err(e) => return Err(format!("--ca: {e}")),
                    },
                    None => ServerUrl::new(url),
                };
                cat(url, &doc, container.as_deref(), token).await
            }
            Command::Export { data, doc, container } => export(&data, &doc, container.as_deref()),
            Command::Ls { data } => list(&data),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// The database in a data folder.
fn database(data: &Path) -> PathBuf {
    data.join("documents.sqlite3")
}

/// A secret from a file, without the line break an editor or `echo` leaves at its end.
fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let mut secret = std::fs::read(path).map_err(|e| format!("secret file {}: {e}", path.display()))?;
    while secret.last().is_some_and(u8::is_ascii_whitespace) {
        secret.pop();
    }
    if secret.len() < crdt_sync::auth::MIN_SECRET_BYTES {
        return Err(format!(
            "secret file {}: the secret must be at least {} bytes",
            path.display(),
            crdt_sync::auth::MIN_SECRET_BYTES
        ));
    }
    Ok(secret)
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    #[allow(clippy::disallowed_methods)] // the binary is a runtime: it may read the clock
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn serve(
    listen: &str,
    data: &Path,
    config: ServerConfig,
    tls: Option<ServerTls>,
    secret: Option<Vec<u8>>,
) -> Result<(), String> {
    std::fs::create_dir_all(data).map_err(|e| format!("data folder {}: {e}", data.display()))?;
    let storage = SqliteStorage::open(database(data), config.peer, config.document.clone())
        .map_err(|e| format!("cannot open the data folder: {e}"))?;
    let stored = storage.list().map_err(|e| e.to_string())?.len();
    // Compaction keeps loads fast: a document's tail folds into its snapshot when it grows
    // or goes quiet.
    let compactor = storage
        .spawn_compactor(CompactionPolicy::default(), Duration::from_secs(1))
        .map_err(|e| e.to_string())?;
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let authenticated = secret.is_some();
    let loopback = listen.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback())
        || listen.starts_with("localhost:");
    if !authenticated && !loopback {
        warn!(listen, "no --auth-secret-file: every client may read and write every document");
    }
    let mut sessions = Server::in_memory(config);
    if let Some(secret) = secret {
        #[allow(clippy::disallowed_methods)] // the binary is a runtime: it may read the clock
        let now = std::time::Instant::now();
        let authenticator = HmacAuthenticator::new(secret, now, unix_now()).map_err(|e| e.to_string())?;
        sessions.set_authenticator(authenticator);
    }
    let server = TokioServer::serve_durable(listen, sessions, storage, tls)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    info!(address = %format!("{scheme}://{}", server.local_addr()), data = %data.display(), documents = stored, authenticated, "serving");
    tokio::spawn(log_events(server.events()));
    let signal = shutdown_signal().await;
    info!(signal, "shutting down");
    server.shutdown().await;
    drop(compactor);
    info!("stopped; every acknowledged change is in the data folder");
    Ok(())
}

async fn log_events(mut events: tokio::sync::broadcast::Receiver<ServerEvent>) {
    use tokio::sync::broadcast::error::RecvError;
    let trim_scheduled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    loop {
        let event = events.recv().await;
        if let Ok(ServerEvent::DocumentUnloaded { .. }) = &event {
            schedule_trim(&trim_scheduled);
        }
        match event {
            Ok(ServerEvent::Handshake { connection, peer, client_name }) => {
                info!(connection = connection.0, peer = peer.get(), client = %client_name, "client connected");
            }
            Ok(ServerEvent::ConnectionClosed { connection, reason }) => {
                info!(connection = connection.0, reason = ?reason, "connection closed");
            }
            Ok(ServerEvent::DocumentCreated { document }) => info!(document = %document, "document created"),
            Ok(ServerEvent::DocumentLoaded { document }) => info!(document = %document, "document loaded"),
            Ok(ServerEvent::DocumentUnloaded { document }) => {
                info!(document = %document, "document unloaded")
            }
            Ok(ServerEvent::StorageFailed { document, error }) => {
                error!(document = ?document.as_deref(), error = %error, "storage failed")
            }
            Ok(ServerEvent::Error { connection, error }) => {
                warn!(connection = connection.0, error = %error, "client error")
            }
            Ok(ServerEvent::Authenticated { connection, subject }) => {
                info!(connection = connection.0, subject = %subject, "client authenticated")
            }
            Ok(ServerEvent::AuthenticationFailed { connection, reason }) => {
                warn!(connection = connection.0, reason = %reason, "authentication failed")
            }
            Ok(ServerEvent::AccessRefused { connection, document, permission }) => {
                warn!(connection = connection.0, document = %document, permission = ?permission, "access refused")
            }
            Ok(_) => {}
            Err(RecvError::Lagged(missed)) => warn!(missed, "event log fell behind"),
            Err(RecvError::Closed) => return,
        }
    }
}

/// Documents unload in bursts: give their memory back to the system once, a second after
/// the first unload of a burst.
fn schedule_trim(scheduled: &std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::Ordering;
    if scheduled.swap(true, Ordering::AcqRel) {
        return;
    }
    let scheduled = scheduled.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        scheduled.store(false, Ordering::Release);
        let _ = tokio::task::spawn_blocking(release_free_memory).await;
    });
}

/// Hand the allocator's free pages back to the system. glibc keeps memory freed by unloaded
/// documents in its arenas: after 1,000 documents loaded and unloaded, the server's heap was
/// back within 146 KiB of idle but its resident memory stayed 10.9 MiB above it
/// (`cargo bench --features cli --bench storage`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointers; it only returns free pages of the allocator's
    // own heaps to the system and may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

/// Ctrl-C or (on Unix) SIGTERM, whichever comes first.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "interrupt",
                _ = term.recv() => "terminate",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "interrupt"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "interrupt"
    }
}

async fn cat(
    url: ServerUrl,
    name: &str,
    container: Option<&str>,
    token: Option<String>,
) -> Result<(), String> {
    let peer = one_off_peer();
    let config = ClientConfig::default()
        .with_client_name("crdt-sync cat")
        .with_reconnect(Duration::from_millis(200), Duration::from_secs(2), Some(3))
        .with_token(token.unwrap_or_default());
    let shown = url.as_str().to_owned();
    let client = TokioClient::connect(url, ClientSession::new(peer, config));
    // Keep the last transport failure, to say why if the client gives up.
    let failure = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let mut events = client.events();
    let last = failure.clone();
    // Refusals that no retry cures end the wait at once.
    let (refused_tx, mut refused) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ClientEvent::TransportFailed { detail }) => {
                    *last.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(detail);
                }
                Ok(ClientEvent::AuthenticationFailed { detail }) => {
                    let _ = refused_tx.send(format!("the server refused the token: {detail}"));
                }
                Ok(ClientEvent::PermissionChanged { permission: crdt_sync::Permission::Denied, .. }) => {
                    let _ = refused_tx.send("the token does not open this document".into());
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });
    client.subscribe(name, Document::new(peer)).await;
    // Nothing local to save: "saved" means the server's copy arrived. The client gives up
    // after a few failed attempts (a refused certificate, say): no need to wait longer.
    tokio::select! {
        _ = client.wait_saved(name) => {}
        _ = client.wait_status(ConnectionStatus::Disconnected) => {
            let why = failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
            let why = why.unwrap_or_else(|| "gave up after 3 attempts".into());
            return Err(format!("cannot reach {shown}: {why}"));
        }
        Some(why) = refused.recv() => {
            return Err(format!("{shown} refused: {why}"));
        }
        _ = tokio::time::sleep(Duration::from_secs(10)) => {
            return Err(format!("no answer from {shown} within 10 s"));
        }
    }
    let container = container.map(str::to_owned);
    let output = client.read(name, move |doc| render(doc, container.as_deref())).await;
    client.close().await;
    print!("{}", output.ok_or("the document vanished")?);
    Ok(())
}

fn export(data: &Path, name: &str, container: Option<&str>) -> Result<(), String> {
    let config = ServerConfig::default();
    let mut storage = SqliteStorage::open_existing(database(data), config.peer, config.document)
        .map_err(|e| e.to_string())?;
    let doc = storage
        .load(name)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no document {name:?} in {}", data.display()))?;
    print!("{}", render(&doc, container));
    Ok(())
}

fn list(data: &Path) -> Result<(), String> {
    let config = ServerConfig::default();
    let storage = SqliteStorage::open_existing(database(data), config.peer, config.document)
        .map_err(|e| e.to_string())?;
    for stored in storage.list().map_err(|e| e.to_string())? {
        println!("{}\t{}", stored.name, stored.bytes());
    }
    Ok(())
}

/// The raw text of one root text container, or the whole document as pretty JSON.
fn render(doc: &Document, container: Option<&str>) -> String {
    match container {
        Some(name) => doc.text(name).to_string(),
        None => format!("{:#}\n", doc.to_json()),
    }
}

/// A replica id for a client that only reads: random enough not to collide with a writer.
fn one_off_peer() -> PeerId {
    #[allow(clippy::disallowed_methods)] // the binary is a runtime: it may read the clock
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    PeerId::new(mixed.max(1))
}
