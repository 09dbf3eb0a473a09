//! Durable storage, measured: what acknowledging only committed changes costs, how fast a
//! server with many stored documents restarts, and what idle documents hold in memory.
//!
//! `cargo bench --features cli --bench storage` (add `-- --quick` for one round). It prints
//! three tables:
//!
//! 1. Acknowledged changes per second, 8 clients each typing 2,000 keystrokes (each its own
//!    frame) into a document of its own, with durability on (SQLite, WAL, `synchronous=FULL`)
//!    and with the in-memory store, alternating in the same run; medians of 5 and the ratio.
//! 2. `crdt-sync serve` restarting on a database of 1,000 documents: time until it listens,
//!    and until a client has one document synced (median of 5).
//! 3. Memory while 1,000 documents load and unload (unloading after 1 s): the heap of a
//!    server in this process (counted by the allocator: what the server holds), and the
//!    resident memory of `crdt-sync serve` (what the system sees, allocator retention
//!    included): idle, with every document loaded by a client, and after the client left.

#[path = "../examples/support/counting.rs"]
#[allow(dead_code)]
mod counting;
#[path = "../tests/common/process.rs"]
#[allow(dead_code)]
mod process;

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use crdt_sync::sqlite::SqliteStorage;
use crdt_sync::tokio::{TokioClient, TokioServer};
use crdt_sync::{
    ClientConfig, ClientSession, ConnectionStatus, Document, DurableStorage, PeerId, Server, ServerConfig,
    StorageWrite, StoredData, VersionVector,
};

const CLIENTS: usize = 8;
const KEYSTROKES: usize = 2_000;
const DOCUMENTS: usize = 1_000;

#[allow(clippy::disallowed_methods)] // a benchmark measures real time
fn clock() -> Instant {
    Instant::now()
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// One round: every client types its keystrokes without waiting, then all wait for "saved".
/// Returns acknowledged changes per second.
async fn type_and_wait(url: &str) -> f64 {
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let peer = PeerId::new(1 + i as u64);
        let client = TokioClient::connect(url.to_owned(), ClientSession::new(peer, ClientConfig::default()));
        client.subscribe(format!("doc-{}", i + 1), Document::new(peer)).await;
        clients.push(client);
    }
    for (i, client) in clients.iter().enumerate() {
        client.wait_status(ConnectionStatus::Connected).await;
        client.wait_saved(&format!("doc-{}", i + 1)).await;
    }
    let started = clock();
    let typing = clients.iter().enumerate().map(|(i, client)| async move {
        let name = format!("doc-{}", i + 1);
        for at in 0..KEYSTROKES {
            client.edit(&name, move |d| d.transact().text("t").insert(at, "x").map(drop)).await;
            // Let the client's task send it as its own frame, as a typist would.
            tokio::task::yield_now().await;
        }
        client.wait_saved(&name).await;
    });
    futures_util::future::join_all(typing).await;
    let rate = (CLIENTS * KEYSTROKES) as f64 / started.elapsed().as_secs_f64();
    for client in clients {
        client.close().await;
    }
    rate
}

async fn durability_cost(rounds: usize) {
    let dir = process::scratch_dir("bench-durability");
    std::fs::create_dir_all(&dir).unwrap();
    let (mut memory, mut durable) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let server = TokioServer::bind("127.0.0.1:0", ServerConfig::default()).await.unwrap();
        memory.push(type_and_wait(&format!("ws://{}", server.local_addr())).await);
        server.shutdown().await;

        let config = ServerConfig::default().with_durable(Duration::from_secs(30));
        let path = dir.join(format!("round-{round}.sqlite3"));
        let storage = SqliteStorage::open(&path, config.peer, config.document.clone()).unwrap();
        let server = TokioServer::serve_durable("127.0.0.1:0", Server::in_memory(config), storage, None)
            .await
            .unwrap();
        durable.push(type_and_wait(&format!("ws://{}", server.local_addr())).await);
        server.shutdown().await;
    }
    let (memory, durable) = (median(memory), median(durable));
    println!("acknowledged changes/s ({CLIENTS} clients x {KEYSTROKES} keystrokes, median of {rounds})");
    println!("  in memory          {memory:>10.0}");
    println!("  durable (SQLite)   {durable:>10.0}   {:.2}x the in-memory rate", durable / memory);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A database of `DOCUMENTS` documents, each a paragraph typed in 50 edits.
fn fill(path: &Path) {
    let config = ServerConfig::default();
    let mut storage = SqliteStorage::open(path, config.peer, config.document.clone()).unwrap();
    let mut writes = Vec::new();
    for i in 0..DOCUMENTS {
        let peer = PeerId::new(10 + i as u64);
        let mut doc = Document::new(peer);
        for word in 0..50 {
            let at = doc.text("t").len();
            doc.transact().text("t").insert(at, &format!("word{word} of document {i}; ")).unwrap();
        }
        let update = doc.export_since(&VersionVector::new()).unwrap();
        writes.push(StorageWrite::new(format!("doc-{i}"), StoredData::Append(update), doc.version().clone()));
    }
    storage.commit(&writes).unwrap();
}

fn resident_kib(child: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn restart_and_memory(rounds: usize) {
    let data = process::scratch_dir("bench-restart");
    std::fs::create_dir_all(&data).unwrap();
    fill(&data.join("documents.sqlite3"));
    let (mut listening, mut first_sync) = (Vec::new(), Vec::new());
    let mut memory = None;
    for round in 0..rounds {
        let started = clock();
        let (mut child, url) = process::serve_with(&data, "127.0.0.1:0", &["--unload-after-s", "1"]);
        listening.push(started.elapsed().as_secs_f64() * 1e3);
        let peer = PeerId::new(5000);
        let client = TokioClient::connect(url.clone(), ClientSession::new(peer, ClientConfig::default()));
        client.subscribe("doc-500", Document::new(peer)).await;
        client.wait_saved("doc-500").await;
        first_sync.push(started.elapsed().as_secs_f64() * 1e3);
        client.close().await;
        if round == 0 {
            memory = Some(resident_while_loading(&child, &url).await);
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    println!("crdt-sync serve on {DOCUMENTS} stored documents (median of {rounds})");
    println!("  listening after    {:>8.1} ms", median(listening));
    println!("  one document synced{:>8.1} ms after start", median(first_sync));
    let heap = heap_while_loading(&data).await;
    println!("memory, {DOCUMENTS} documents               idle      loaded    unloaded");
    let row = |what: &str, (idle, loaded, after): (u64, u64, u64)| {
        println!(
            "  {what:<30}{idle:>8} KiB{loaded:>8} KiB{after:>8} KiB ({:+} KiB over idle)",
            after as i64 - idle as i64
        )
    };
    row("heap of a server in process", heap);
    if let Some(resident) = memory {
        row("resident, crdt-sync serve", resident);
    }
    let _ = std::fs::remove_dir_all(&data);
}

/// A client subscribes to every document and leaves; `measure` before, while loaded, and
/// once they unloaded.
async fn load_all_and_leave(url: &str, measure: impl Fn() -> u64) -> (u64, u64, u64) {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let idle = measure();
    let peer = PeerId::new(5001);
    let client = TokioClient::connect(url.to_owned(), ClientSession::new(peer, ClientConfig::default()));
    for i in 0..DOCUMENTS {
        client.subscribe(format!("doc-{i}"), Document::new(peer)).await;
    }
    for i in 0..DOCUMENTS {
        client.wait_saved(&format!("doc-{i}")).await;
    }
    let loaded = measure();
    client.close().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    (idle, loaded, measure())
}

async fn resident_while_loading(child: &Child, url: &str) -> (u64, u64, u64) {
    load_all_and_leave(url, || resident_kib(child)).await
}

/// The same against a server in this process, counting its heap (the client's share is
/// gone by the last figure: it closed).
async fn heap_while_loading(data: &Path) -> (u64, u64, u64) {
    let config = ServerConfig::default().with_durable(Duration::from_secs(1));
    let storage =
        SqliteStorage::open(data.join("documents.sqlite3"), config.peer, config.document.clone()).unwrap();
    let server =
        TokioServer::serve_durable("127.0.0.1:0", Server::in_memory(config), storage, None).await.unwrap();
    let url = format!("ws://{}", server.local_addr());
    let heap = || counting::current() as u64 / 1024;
    let figures = load_all_and_leave(&url, heap).await;
    server.shutdown().await;
    figures
}

fn main() {
    // `cargo bench` passes `--bench`; `-- --quick` runs one round.
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 1 } else { 5 };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        durability_cost(rounds).await;
        restart_and_memory(rounds).await;
    });
}
