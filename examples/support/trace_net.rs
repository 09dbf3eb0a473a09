//! Replaying a trace over real sockets: one client per replica on the chosen runtime, as fast
//! as they go, against a server of the same runtime on a loopback port (`--via tokio`,
//! `--via async-std`, `--via blocking`) or a running `crdt-sync serve` (`--connect URL`). Writers type the trace as in `--via sim` (a sequential trace in
//! turns, a concurrent one agent by agent at its parents' version); every other client only
//! receives. Clients ride out a server that restarts: they reconnect and carry on.

use std::time::{Duration, Instant};

use crdt_sync::{
    ClientConfig, ClientSession, ConnectionStatus, Document, Frontier, PeerId, Server, ServerConfig, Traffic,
    VersionVector,
};

use crate::net::{NetClient, NetServer, Runtime};
use crate::trace_replay::{Trace, apply_patches};
use crate::trace_sim::{agent_count, type_at};

/// Longest wait for a client to connect, catch up or settle: minutes mean "stuck".
const PATIENCE: Duration = Duration::from_secs(300);

/// A finished run.
pub struct NetRun {
    pub elapsed: Duration,
    pub writers: usize,
    /// Each client's text, then the server's.
    pub replicas: Vec<(String, String)>,
    /// What crossed the server's sockets (`None` for a server of another process).
    pub traffic: Option<Traffic>,
}

/// Replay `trace` through a loopback server and `clients` clients syncing `name`, all on
/// `runtime`. `connect`: the URL of a running server, or `None` for one in this process.
pub fn replay_through_sockets(
    runtime: Runtime,
    trace: &Trace,
    name: &str,
    clients: usize,
    writers: Option<usize>,
    connect: Option<&str>,
) -> Result<NetRun, String> {
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
    run(runtime, trace, name, clients, writers, connect)
}

fn run(
    runtime: Runtime,
    trace: &Trace,
    name: &str,
    count: usize,
    writers: usize,
    connect: Option<&str>,
) -> Result<NetRun, String> {
    let server = match connect {
        Some(_) => None,
        None => {
            let loopback = "127.0.0.1:0".parse().expect("an address");
            // The trace is replayed at machine speed, far above a person's typing: the
            // per-connection message limit is for abusers, not for this measurement.
            let server = Server::in_memory(ServerConfig::default().with_rate_limit(0, 0));
            Some(NetServer::serve(runtime, loopback, server).map_err(|e| e.to_string())?)
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
        let client = NetClient::connect(runtime, &url, session).map_err(|e| e.to_string())?;
        let mut doc = Document::new(peer);
        doc.set_wall_clock(present);
        let doc_name = name.to_owned();
        client.with(move |session| drop(session.subscribe(doc_name, doc)));
        clients.push(client);
    }
    for client in &clients {
        within(client.wait_status(ConnectionStatus::Connected, PATIENCE), "a client to connect")?;
        within(client.wait_saved(name, PATIENCE), "a client's first sync")?;
    }
    let existing = clients[0].read(name, |d| d.text("text").len()).unwrap_or(0);
    if existing > 0 {
        return Err(format!(
            "document {name:?} already holds {existing} characters: replay into a new one (--doc)"
        ));
    }

    #[allow(clippy::disallowed_methods)] // the trace tool measures real time
    let started = Instant::now();
    if trace.is_concurrent() {
        type_concurrent(&clients, name, trace, writers)?;
    } else {
        type_sequential(&clients, name, trace, writers)?;
    }
    for client in &clients[..writers] {
        within(client.wait_saved(name, PATIENCE), "the writers' last acknowledgement")?;
    }
    // Everything the writers typed; all of it is on the server, they are saved.
    let mut typed = VersionVector::new();
    for client in &clients[..writers] {
        typed.merge(&client.read(name, |d| d.version().clone()).unwrap_or_default());
    }
    for client in &clients {
        catch_up(client, name, &typed)?;
    }
    let elapsed = started.elapsed();

    let mut replicas = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let session = client.close();
        let text = session.document(name).map(|d| d.text("text").to_string()).unwrap_or_default();
        replicas.push((i.to_string(), text));
    }
    let Some(server) = server else {
        return Ok(NetRun { elapsed, writers, replicas, traffic: None });
    };
    let traffic = Some(server.traffic());
    let server = server.shutdown();
    replicas.push((
        "server".into(),
        server.document(name).map(|d| d.text("text").to_string()).unwrap_or_default(),
    ));
    Ok(NetRun { elapsed, writers, replicas, traffic })
}

fn within(done: bool, what: &str) -> Result<(), String> {
    if done { Ok(()) } else { Err(format!("waited {PATIENCE:?} for {what}")) }
}

/// Wait until `client` holds `target`.
fn catch_up(client: &NetClient, name: &str, target: &VersionVector) -> Result<(), String> {
    #[allow(clippy::disallowed_methods)] // the trace tool measures real time
    let deadline = Instant::now() + PATIENCE;
    loop {
        let target = target.clone();
        if client.read(name, move |d| d.version().includes(&target)) == Some(true) {
            return Ok(());
        }
        #[allow(clippy::disallowed_methods)]
        let late = Instant::now() > deadline;
        within(!late, "a client to receive what it must hold")?;
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Writer `w` types the `w`-th of `writers` contiguous turns, once it holds the turns before.
fn type_sequential(clients: &[NetClient], name: &str, trace: &Trace, writers: usize) -> Result<(), String> {
    let n = trace.txns.len();
    let mut typed = VersionVector::new();
    for (writer, client) in clients.iter().enumerate().take(writers) {
        catch_up(client, name, &typed)?;
        if writer == 0 && !trace.start_content.is_empty() {
            let start = trace.start_content.clone();
            client.edit(name, move |d| d.transact().text("text").insert(0, &start).map(drop));
        }
        let (first, end) = (n * writer / writers, n * (writer + 1) / writers);
        for (index, txn) in trace.txns.iter().enumerate().take(end).skip(first) {
            let txn = txn.clone();
            client
                .edit(name, move |d| apply_patches(d, &txn))
                .ok_or("the writer lost its document")?
                .map_err(|e| format!("txn {index}: {e}"))?;
        }
        typed = client.read(name, |d| d.version().clone()).ok_or("the writer lost its document")?;
    }
    Ok(())
}

/// Agent `a` types on writer `a % writers` at exactly its parents' version, in an editor
/// replica of its own (see `trace_sim::type_concurrent`).
fn type_concurrent(clients: &[NetClient], name: &str, trace: &Trace, writers: usize) -> Result<(), String> {
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
        catch_up(client, name, &target)?;
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
            .ok_or("the writer stopped")?;
        editors[agent] = Some(editor);
        let (frontier, vector) = result.map_err(|e| format!("txn {index}: {e}"))?;
        versions.push(frontier);
        vectors.push(vector);
    }
    Ok(())
}
