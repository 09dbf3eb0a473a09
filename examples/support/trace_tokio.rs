//! Replaying a trace over real sockets: one [`TokioClient`] per client, as fast as they go,
//! against a [`TokioServer`] on a loopback port (`--via tokio`) or a running `crdt-sync
//! serve` (`--connect URL`). Writers type the trace as in `--via sim` (a sequential trace in
//! turns, a concurrent one agent by agent at its parents' version); every other client only
//! receives. Clients ride out a server that restarts: they reconnect and carry on.

use std::time::{Duration, Instant};

use crdt_sync::tokio::{TokioClient, TokioServer, Traffic};
use crdt_sync::{
    ClientConfig, ClientSession, ConnectionStatus, Document, Frontier, PeerId, ServerConfig, VersionVector,
};

use crate::trace_replay::{Trace, apply_patches};
use crate::trace_sim::{agent_count, type_at};

/// Longest wait for a client to connect, catch up or settle: minutes mean "stuck".
const PATIENCE: Duration = Duration::from_secs(300);

/// A finished run.
pub struct TokioRun {
    pub elapsed: Duration,
    pub writers: usize,
    /// Each client's text, then the server's.
    pub replicas: Vec<(String, String)>,
    /// What crossed the server's sockets (`None` for a server of another process).
    pub traffic: Option<Traffic>,
}

/// Replay `trace` through a loopback server and `clients` clients syncing `name`.
/// `connect`: the URL of a running server, or `None` for one in this process.
pub fn replay_through_tokio(
    trace: &Trace,
    name: &str,
    clients: usize,
    writers: Option<usize>,
    connect: Option<&str>,
) -> Result<TokioRun, String> {
    if clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    let agents = agent_count(trace);
    let writers = match writers {
        Some(k) if k == 0 || k > clients => return Err(format!("--writers must be between 1 and {clients}")),
        Some(k) if trace.is_concurrent() => k.min(agents),
        Some(k) => k,
        None if trace.is_concurrent() => agents.min(clients),
        None => 1,
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(run(trace, name, clients, writers, connect))
}

async fn run(
    trace: &Trace,
    name: &str,
    count: usize,
    writers: usize,
    connect: Option<&str>,
) -> Result<TokioRun, String> {
    let server = match connect {
        Some(_) => None,
        None => {
            Some(TokioServer::bind("127.0.0.1:0", ServerConfig::default()).await.map_err(|e| e.to_string())?)
        }
    };
    let url = match (&server, connect) {
        (Some(server), _) => format!("ws://{}", server.local_addr()),
        (None, url) => url.unwrap_or_default().to_owned(),
    };
    // Clocks at the trace's end from the start: no change is ever "from the future" for a
    // replica, whatever order the network delivers them in.
    let present = trace.txns.iter().filter_map(|t| t.time_ms).max().unwrap_or(0);
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        let peer = PeerId::new(1000 + i as u64);
        let session = ClientSession::new(peer, ClientConfig::default().with_rng_seed(i as u64));
        let client = TokioClient::connect(url.clone(), session);
        let mut doc = Document::new(peer);
        doc.set_wall_clock(present);
        client.subscribe(name, doc).await;
        clients.push(client);
    }
    for client in &clients {
        within(client.wait_status(ConnectionStatus::Connected), "a client to connect").await?;
        within(client.wait_saved(name), "a client's first sync").await?;
    }
    let existing = clients[0].read(name, |d| d.text("text").len()).await.unwrap_or(0);
    if existing > 0 {
        return Err(format!(
            "document {name:?} already holds {existing} characters: replay into a new one (--doc)"
        ));
    }

    #[allow(clippy::disallowed_methods)] // the trace tool measures real time
    let started = Instant::now();
    if trace.is_concurrent() {
        type_concurrent(&clients, name, trace, writers).await?;
    } else {
        type_sequential(&clients, name, trace, writers).await?;
    }
    for client in &clients[..writers] {
        within(client.wait_saved(name), "the writers' last acknowledgement").await?;
    }
    // Everything the writers typed; all of it is on the server, they are saved.
    let mut typed = VersionVector::new();
    for client in &clients[..writers] {
        typed.merge(&client.read(name, |d| d.version().clone()).await.unwrap_or_default());
    }
    for client in &clients {
        catch_up(client, name, &typed).await?;
    }
    let elapsed = started.elapsed();

    let mut replicas = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let session = client.close().await;
        let text = session.document(name).map(|d| d.text("text").to_string()).unwrap_or_default();
        replicas.push((i.to_string(), text));
    }
    let Some(server) = server else {
        return Ok(TokioRun { elapsed, writers, replicas, traffic: None });
    };
    let traffic = Some(server.traffic());
    let server = server.shutdown().await;
    replicas.push((
        "server".into(),
        server.document(name).map(|d| d.text("text").to_string()).unwrap_or_default(),
    ));
    Ok(TokioRun { elapsed, writers, replicas, traffic })
}

async fn within<T>(future: impl Future<Output = T>, what: &str) -> Result<T, String> {
    tokio::time::timeout(PATIENCE, future).await.map_err(|_| format!("waited {PATIENCE:?} for {what}"))
}

/// Wait until `client` holds `target`.
async fn catch_up(client: &TokioClient, name: &str, target: &VersionVector) -> Result<(), String> {
    within(
        async {
            loop {
                let target = target.clone();
                if client.read(name, move |d| d.version().includes(&target)).await == Some(true) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        },
        "a client to receive what it must hold",
    )
    .await
}

/// Writer `w` types the `w`-th of `writers` contiguous turns, once it holds the turns before.
async fn type_sequential(
    clients: &[TokioClient],
    name: &str,
    trace: &Trace,
    writers: usize,
) -> Result<(), String> {
    let n = trace.txns.len();
    let mut typed = VersionVector::new();
    for (writer, client) in clients.iter().enumerate().take(writers) {
        catch_up(client, name, &typed).await?;
        if writer == 0 && !trace.start_content.is_empty() {
            let start = trace.start_content.clone();
            client.edit(name, move |d| d.transact().text("text").insert(0, &start).map(drop)).await;
        }
        let (first, end) = (n * writer / writers, n * (writer + 1) / writers);
        for (index, txn) in trace.txns.iter().enumerate().take(end).skip(first) {
            let txn = txn.clone();
            client
                .edit(name, move |d| apply_patches(d, &txn))
                .await
                .ok_or("the writer lost its document")?
                .map_err(|e| format!("txn {index}: {e}"))?;
        }
        typed = client.read(name, |d| d.version().clone()).await.ok_or("the writer lost its document")?;
    }
    Ok(())
}

/// Agent `a` types on writer `a % writers` at exactly its parents' version, in an editor
/// replica of its own (see `trace_sim::type_concurrent`).
async fn type_concurrent(
    clients: &[TokioClient],
    name: &str,
    trace: &Trace,
    writers: usize,
) -> Result<(), String> {
    let present = trace.txns.iter().filter_map(|t| t.time_ms).max().unwrap_or(0);
    let mut editors: Vec<Option<Document>> = (0..agent_count(trace))
        .map(|a| {
            let mut doc = Document::new(PeerId::new(a as u64 + 1));
            doc.set_wall_clock(present);
            Some(doc)
        })
        .collect();
    let mut versions: Vec<Frontier> = Vec::with_capacity(trace.txns.len());
    let mut vectors: Vec<VersionVector> = Vec::with_capacity(trace.txns.len());
    for (index, txn) in trace.txns.iter().enumerate() {
        let agent = txn.agent.unwrap_or(0);
        let client = &clients[agent % writers];
        let mut heads = Vec::new();
        let mut target = VersionVector::new();
        for &p in txn.parents.as_deref().unwrap_or(&[]) {
            let (Some(frontier), Some(vector)) = (versions.get(p), vectors.get(p)) else {
                return Err(format!("txn {index}: parent {p} not seen yet"));
            };
            heads.extend_from_slice(frontier.ids());
            target.merge(vector);
        }
        let heads = Frontier::from_ids(heads);
        catch_up(client, name, &target).await?;
        let mut editor = editors
            .get_mut(agent)
            .and_then(Option::take)
            .ok_or(format!("txn {index}: agent {agent} out of range"))?;
        let txn = txn.clone();
        let name = name.to_owned();
        let (editor, result) = client
            .with(move |session| {
                let result = match session.document_mut(&name) {
                    Some(synced) => type_at(&mut editor, synced, &txn, &heads, &target),
                    None => Err("the writer lost its document".into()),
                };
                (editor, result)
            })
            .await
            .ok_or("the writer stopped")?;
        editors[agent] = Some(editor);
        let (frontier, vector) = result.map_err(|e| format!("txn {index}: {e}"))?;
        versions.push(frontier);
        vectors.push(vector);
    }
    Ok(())
}
