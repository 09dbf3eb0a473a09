//! A load and abuse run against the `crdt-sync` binary: many WebSocket clients typing into
//! many documents while misbehaving connections attack the server, then checks that every
//! well-behaved replica converged with nothing lost and nobody well-behaved disconnected.
//!
//! `tests/load.rs` runs it small in CI; `benches/load.rs` runs it at full size.
// Real sockets and a real server process: latency is wall-clock time.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crdt_sync::auth::{TokenClaims, sign_token};
use crdt_sync::tokio::TokioClient;
use crdt_sync::wire::{Message, PROTOCOL_VERSION, encode_frame};
use crdt_sync::{ClientConfig, ClientEvent, ClientSession, ConnectionStatus, Document, PeerId};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::process::{KillOnDrop, run, scratch_dir, serve_with};

const SECRET: &str = "load-test-secret-0123456789";
/// How long an abuser waits for the server to close on it before counting it as let in.
const ABUSE_PATIENCE: Duration = Duration::from_secs(25);

/// The size of a run.
#[derive(Clone, Debug)]
pub struct LoadPlan {
    pub clients: usize,
    pub documents: usize,
    /// How long the clients type.
    pub typing: Duration,
    /// Each client types one character this often.
    pub edit_every: Duration,
    /// Misbehaving connections of each kind (see [`Abuse`]).
    pub abusers_per_kind: usize,
}

/// What a run measured.
#[derive(Debug)]
pub struct LoadReport {
    pub clients: usize,
    pub documents: usize,
    /// Characters typed by the well-behaved clients (each one change).
    pub changes: u64,
    /// From the first connection to the last replica converged.
    pub duration: Duration,
    pub typing: Duration,
    /// The server process's peak resident memory (VmHWM).
    pub peak_server_rss_kib: u64,
    /// CPU time the server process used over the whole run (user and system).
    pub server_cpu_s: f64,
    /// From a keystroke to its arrival at another replica of the document.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_samples: usize,
    pub abusers: usize,
    /// Abusers the server closed on.
    pub refused_abusers: usize,
    /// Typed characters missing from a replica or from the server's storage at the end.
    pub lost_changes: u64,
    /// Well-behaved clients that lost their connection after connecting.
    pub disconnected_clients: usize,
    /// Every replica of every document holds the same text.
    pub converged: bool,
}

impl LoadReport {
    pub fn print(&self) {
        println!("clients               {}", self.clients);
        println!("documents             {}", self.documents);
        println!("changes               {}", self.changes);
        println!(
            "duration              {:.1} s (typing {:.0} s)",
            self.duration.as_secs_f64(),
            self.typing.as_secs_f64()
        );
        println!("peak server memory    {:.1} MiB", self.peak_server_rss_kib as f64 / 1024.0);
        println!("server CPU            {:.1} s", self.server_cpu_s);
        println!(
            "latency               p50 {:.1} ms, p99 {:.1} ms ({} deliveries)",
            self.latency_p50_ms, self.latency_p99_ms, self.latency_samples
        );
        println!("refused abusers       {} of {}", self.refused_abusers, self.abusers);
        println!("lost changes          {}", self.lost_changes);
        println!("disconnected clients  {}", self.disconnected_clients);
        println!("converged             {}", self.converged);
    }
}

/// What the misbehaving connections do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abuse {
    /// Bytes that are no frame.
    Garbage,
    /// One WebSocket message above the frame limit (16 MiB).
    Oversized,
    /// An lz4 frame declaring a 1 GiB payload.
    Bomb,
    /// Pings as fast as it can send them.
    Flood,
    /// A TCP connection that never starts the WebSocket handshake.
    SilentTcp,
    /// A WebSocket that never says hello.
    SilentWebSocket,
    /// A token signed with another secret.
    ForgedToken,
}

const ABUSES: [Abuse; 7] = [
    Abuse::Garbage,
    Abuse::Oversized,
    Abuse::Bomb,
    Abuse::Flood,
    Abuse::SilentTcp,
    Abuse::SilentWebSocket,
    Abuse::ForgedToken,
];

fn doc_name(i: usize) -> String {
    format!("doc-{i:03}")
}

/// Run `plan` against a fresh `crdt-sync serve` on a scratch data folder.
pub fn run_load(plan: &LoadPlan) -> LoadReport {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run_async(plan))
}

async fn run_async(plan: &LoadPlan) -> LoadReport {
    let data = scratch_dir("load");
    std::fs::create_dir_all(&data).unwrap();
    let secret_file = data.join("secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    // Every client comes from 127.0.0.1, where in production they would come from as many
    // addresses: the per-address handshake limit is raised to what the ramp needs.
    let secret_arg = secret_file.to_str().unwrap().to_owned();
    let (child, url) = serve_with(
        &data.join("db"),
        "127.0.0.1:0",
        &["--auth-secret-file", &secret_arg, "--max-unauthenticated-per-address", "256"],
    );
    let server = KillOnDrop(child);
    let pid = server.0.id();
    let started = Instant::now();

    // ---- well-behaved clients -----------------------------------------------------------
    let sent_at: Arc<Mutex<HashMap<PeerId, Vec<Instant>>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let reconnects = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for i in 0..plan.clients {
        let peer = PeerId::new(1_000 + i as u64);
        let doc = doc_name(i % plan.documents);
        let token =
            sign_token(SECRET.as_bytes(), &TokenClaims::new(format!("user{i}"), vec![doc.clone()])).unwrap();
        let config = ClientConfig::default()
            .with_token(token)
            .with_rng_seed(i as u64)
            .with_client_name(format!("c{i}"));
        let client = TokioClient::connect(url.as_str(), ClientSession::new(peer, config));
        client.subscribe(doc.clone(), Document::new(peer)).await;
        clients.push((Arc::new(client), peer, doc));
        // A ramp, as users arrive: a thousand handshakes at once is an abuse pattern too.
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for (client, _, _) in &clients {
        tokio::time::timeout(Duration::from_secs(120), client.wait_status(ConnectionStatus::Connected))
            .await
            .expect("every client connects");
    }
    // Writers of each document, for the receivers' latency bookkeeping.
    let mut writers_of: HashMap<String, Vec<PeerId>> = HashMap::new();
    for (_, peer, doc) in &clients {
        writers_of.entry(doc.clone()).or_default().push(*peer);
    }
    let writers_of = Arc::new(writers_of);
    let mut watchers = Vec::new();
    for (client, _, doc) in &clients {
        let mut events = client.events();
        let (client, doc) = (client.clone(), doc.clone());
        let (sent_at, latencies, reconnects, writers_of) =
            (sent_at.clone(), latencies.clone(), reconnects.clone(), writers_of.clone());
        watchers.push(tokio::spawn(async move {
            let mut seen: HashMap<PeerId, u32> = HashMap::new();
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                match event {
                    ClientEvent::StatusChanged(ConnectionStatus::Reconnecting) => {
                        reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    ClientEvent::RemoteChanges { .. } => {
                        let Some(version) = client.read(&doc, |d| d.version().clone()).await else { return };
                        let arrived = Instant::now();
                        let sent = sent_at.lock().unwrap();
                        let mut latencies = latencies.lock().unwrap();
                        for peer in &writers_of[&doc] {
                            let have = version.get(*peer);
                            let from = seen.insert(*peer, have).unwrap_or(0);
                            let Some(times) = sent.get(peer) else { continue };
                            for counter in from..have.min(times.len() as u32) {
                                let at = times[counter as usize];
                                latencies.push(arrived.saturating_duration_since(at).as_secs_f64() * 1000.0);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }));
    }

    // ---- abusers, while the clients type ----------------------------------------------------
    let address = url.trim_start_matches("ws://").to_owned();
    let mut abusers = Vec::new();
    for kind in ABUSES {
        for n in 0..plan.abusers_per_kind {
            let (url, address) = (url.clone(), address.clone());
            abusers.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200 * n as u64)).await;
                abuse(kind, &url, &address).await
            }));
        }
    }

    // ---- typing -------------------------------------------------------------------------
    let typing_started = Instant::now();
    let mut typists = Vec::new();
    for (i, (client, peer, doc)) in clients.iter().enumerate() {
        let (client, peer, doc, sent_at) = (client.clone(), *peer, doc.clone(), sent_at.clone());
        let plan = plan.clone();
        typists.push(tokio::spawn(async move {
            // Spread the clients over the interval, so they do not all type at once.
            let offset = plan.edit_every.mul_f64((i as f64 * 0.618_034) % 1.0);
            tokio::time::sleep(offset).await;
            let mut ticker = tokio::time::interval(plan.edit_every);
            let letter = char::from(b'a' + (i % 26) as u8);
            let mut typed = 0u64;
            let mut rng = i as u64 + 1;
            while typing_started.elapsed() < plan.typing {
                ticker.tick().await;
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let sent_at = sent_at.clone();
                let edited = client
                    .edit(&doc, move |d| {
                        let len = d.text("t").len();
                        d.transact()
                            .text("t")
                            .insert((rng % (len as u64 + 1)) as usize, &letter.to_string())
                            .unwrap();
                        // Noted inside the edit: the change leaves right after it.
                        sent_at.lock().unwrap().entry(peer).or_default().push(Instant::now());
                    })
                    .await;
                if edited.is_some() {
                    typed += 1;
                }
            }
            typed
        }));
    }
    let mut typed_by: HashMap<PeerId, u64> = HashMap::new();
    for (typist, (_, peer, _)) in typists.into_iter().zip(&clients) {
        typed_by.insert(*peer, typist.await.unwrap());
    }
    let typing = typing_started.elapsed();
    let changes: u64 = typed_by.values().sum();

    // ---- convergence ----------------------------------------------------------------------
    for (client, _, doc) in &clients {
        let _ = tokio::time::timeout(Duration::from_secs(60), client.wait_saved(doc)).await;
    }
    let expected = |doc: &str| -> u64 { writers_of[doc].iter().map(|p| typed_by[p]).sum() };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut texts: HashMap<String, Vec<String>> = HashMap::new();
    loop {
        texts.clear();
        for (client, _, doc) in &clients {
            let text = client.read(doc, |d| d.text("t").to_string()).await.unwrap_or_default();
            texts.entry(doc.clone()).or_default().push(text);
        }
        let done = texts.iter().all(|(doc, replicas)| {
            replicas.iter().all(|t| t.chars().count() as u64 == expected(doc) && *t == replicas[0])
        });
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let duration = started.elapsed();
    let peak_server_rss_kib = peak_rss_kib(pid);
    let server_cpu_s = cpu_seconds(pid);

    let mut refused_abusers = 0;
    let abuser_count = abusers.len();
    for abuser in abusers {
        if abuser.await.unwrap() {
            refused_abusers += 1;
        }
    }
    for watcher in &watchers {
        watcher.abort();
    }

    // What the server stored: every acknowledged change is in the database.
    let mut lost = 0u64;
    let mut converged = true;
    let database = data.join("db");
    for (doc, replicas) in &texts {
        let want = expected(doc);
        for text in replicas {
            lost += want.saturating_sub(text.chars().count() as u64);
            converged &= *text == replicas[0];
        }
        let (ok, stored) = run(&["export", "--data", database.to_str().unwrap(), doc, "--container", "t"]);
        assert!(ok, "export {doc}");
        lost += want.saturating_sub(stored.chars().count() as u64);
        converged &= stored == replicas[0];
    }
    for (client, _, _) in clients {
        if let Ok(client) = Arc::try_unwrap(client) {
            client.close().await;
        }
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&data);

    let mut sorted = latencies.lock().unwrap().clone();
    sorted.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        if sorted.is_empty() { f64::NAN } else { sorted[((sorted.len() - 1) as f64 * p).round() as usize] }
    };
    LoadReport {
        clients: plan.clients,
        documents: plan.documents,
        changes,
        duration,
        typing,
        peak_server_rss_kib,
        server_cpu_s,
        latency_p50_ms: percentile(0.50),
        latency_p99_ms: percentile(0.99),
        latency_samples: sorted.len(),
        abusers: abuser_count,
        refused_abusers,
        lost_changes: lost,
        disconnected_clients: reconnects.load(Ordering::Relaxed) as usize,
        converged,
    }
}

/// Misbehave in one way; `true` if the server closed the connection on it in time.
async fn abuse(kind: Abuse, url: &str, address: &str) -> bool {
    let attempt = async {
        if kind == Abuse::SilentTcp {
            let mut tcp = tokio::net::TcpStream::connect(address).await.ok()?;
            let mut buf = [0u8; 64];
            // The server hangs up: end of stream (or a reset).
            return match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => Some(()),
                Ok(_) => None,
            };
        }
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.ok()?;
        let hello = |token: &[u8]| {
            encode_frame(&[Message::Hello {
                min_version: PROTOCOL_VERSION,
                max_version: PROTOCOL_VERSION,
                peer: PeerId::new(999_999),
                client_name: "abuser".into(),
                token: token.to_vec(),
            }])
        };
        match kind {
            Abuse::Garbage => {
                ws.send(WsMessage::Binary(vec![1, 0, 3, 0xff, 0xfe, 0xfd, 0xfc, 0xfb].into())).await.ok()?;
            }
            Abuse::Oversized => {
                let _ = ws.send(WsMessage::Binary(vec![1u8; 16 * 1024 * 1024 + 1024].into())).await;
            }
            Abuse::Bomb => {
                let mut frame = vec![1, 0b1];
                let mut declared: u64 = 1 << 30;
                while declared >= 0x80 {
                    frame.push((declared as u8) | 0x80);
                    declared >>= 7;
                }
                frame.push(declared as u8);
                frame.extend_from_slice(&[0x1f; 64]);
                ws.send(WsMessage::Binary(frame.into())).await.ok()?;
            }
            Abuse::Flood => {
                // A valid user gone rogue: let in, then cut off for its rate.
                let token =
                    sign_token(SECRET.as_bytes(), &TokenClaims::new("flooder", vec!["doc-000".into()]))
                        .ok()?;
                ws.send(WsMessage::Binary(hello(token.as_bytes()).into())).await.ok()?;
                let pings: Vec<Message> = (0..64).map(|nonce| Message::Ping { nonce }).collect();
                let frame = encode_frame(&pings);
                // Until the server cuts it off (each send fails or the read side ends).
                for _ in 0..100_000 {
                    if ws.send(WsMessage::Binary(frame.clone().into())).await.is_err() {
                        return Some(());
                    }
                }
            }
            Abuse::SilentWebSocket | Abuse::SilentTcp => {}
            Abuse::ForgedToken => {
                let forged =
                    sign_token(b"someone-elses-secret-123", &TokenClaims::new("mallory", vec!["*".into()]))
                        .ok()?;
                ws.send(WsMessage::Binary(hello(forged.as_bytes()).into())).await.ok()?;
            }
        }
        // Read until the server closes.
        while let Some(message) = ws.next().await {
            match message {
                Ok(WsMessage::Close(_)) | Err(_) => return Some(()),
                Ok(_) => {}
            }
        }
        Some(())
    };
    matches!(tokio::time::timeout(ABUSE_PATIENCE, attempt).await, Ok(Some(())))
}

/// Peak resident memory of a process (Linux), in KiB; 0 where unknown.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User and system CPU time of a process (Linux), in seconds; 0 where unknown.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after its closing ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    let ticks: u64 = [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<u64>().ok()).sum();
    // USER_HZ is 100 on every Linux this runs on.
    ticks as f64 / 100.0
}
