//! Crash safety of `crdt-sync serve`: clients type a real trace while the server is killed
//! with SIGKILL at random moments and restarted on the same data folder. At every kill,
//! each change the server had acknowledged to a client is in the database; at the end every
//! replica and the exported document equal the trace's `endContent`.
//!
//! `CRASH_TRACE=automerge-paper` picks another trace (default `sveltecomponent`),
//! `CRASH_KILLS` the number of kills (default 5) and `CRASH_SEED` the schedule.
#![cfg(all(feature = "cli", unix))]

mod common;
#[path = "../examples/support/net.rs"]
mod net;
#[path = "../examples/support/trace_replay.rs"]
mod trace_replay;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::process::{KillOnDrop, free_port, run, scratch_dir, serve_with};
use crdt_sync::sqlite::SqliteStorage;
use crdt_sync::{ClientConfig, ClientSession, Document, DurableStorage, PeerId, ServerConfig, VersionVector};
use net::{NetClient, Runtime};
use trace_replay::{apply_patches, load_trace, traces_dir};

const DOC: &str = "doc";
const PATIENCE: Duration = Duration::from_secs(120);

/// SplitMix64: the kill schedule depends on the seed only.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n.max(1)
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[allow(clippy::disallowed_methods)] // a test of real processes measures real time
fn clock() -> Instant {
    Instant::now()
}

/// Wait until `client` holds `target`.
fn catch_up(client: &NetClient, target: &VersionVector) {
    let deadline = clock() + PATIENCE;
    loop {
        let target = target.clone();
        if client.read(DOC, move |d| d.version().includes(&target)) == Some(true) {
            return;
        }
        assert!(clock() < deadline, "a client never received what it must hold");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The writers replay a trace as fast as the machine goes, far above any person's typing:
/// the per-connection message limit is for abusers, not for this test.
const MACHINE_SPEED: &[&str] = &["--max-messages-per-second", "0"];
#[test]
fn acknowledged_changes_survive_sigkill_and_every_replica_ends_at_end_content() {
    let trace_name: String = env_or("CRASH_TRACE", "sveltecomponent".to_owned());
    let path = traces_dir().join(format!("{trace_name}.json.gz"));
    if !path.exists() {
        eprintln!("skipping: {} not found", path.display());
        return;
    }
    let trace = load_trace(&path).unwrap();
    assert!(!trace.is_concurrent(), "the crash test types sequential traces");
    let kills: usize = env_or("CRASH_KILLS", 5);
    let mut rng = Rng(env_or("CRASH_SEED", 7));

    let data = scratch_dir("crash");
    let listen = format!("127.0.0.1:{}", free_port());
    // Killed on drop too: a failed check must not leave a server running.
    let server: Mutex<KillOnDrop> = Mutex::new(KillOnDrop(serve_with(&data, &listen, MACHINE_SPEED).0));
    let url = format!("ws://{listen}");

    let present = trace.txns.iter().filter_map(|t| t.time_ms).max().unwrap_or(0);
    // Two writers take turns through the trace; a third client only reads.
    let peers = [PeerId::new(11), PeerId::new(12), PeerId::new(13)];
    let clients: Vec<NetClient> = peers
        .iter()
        .map(|&peer| {
            let config = ClientConfig::default().with_reconnect(
                Duration::from_millis(20),
                Duration::from_millis(200),
                None,
            );
            let client =
                NetClient::connect(Runtime::Tokio, url.as_str(), ClientSession::new(peer, config)).unwrap();
            // Clocks at the trace's end from the start: the trace's timestamps are never
            // "from the future" for a replica.
            let mut doc = Document::new(peer);
            doc.set_wall_clock(present);
            client.with(move |s| drop(s.subscribe(DOC, doc)));
            client
        })
        .collect();
    for client in &clients {
        assert!(client.wait_saved(DOC, PATIENCE), "first sync");
    }
    let typing = AtomicBool::new(true);
    let started = clock();
    let (checked, acknowledged_at_kills) = std::thread::scope(|scope| {
        // The killer: at random moments while the clients type, note what each client has
        // been acknowledged, SIGKILL the server, check the database, restart.
        let killer = scope.spawn(|| {
            let config = ServerConfig::default();
            let mut acknowledged_at_kills = Vec::new();
            let mut checked = 0;
            for _ in 0..kills {
                std::thread::sleep(Duration::from_millis(150 + rng.below(600)));
                if !typing.load(Ordering::Relaxed) {
                    break;
                }
                let acknowledged: Vec<u32> =
                    clients.iter().map(|c| c.with(|s| s.acknowledged(DOC).unwrap_or(0)).unwrap()).collect();
                let mut child = server.lock().unwrap();
                child.0.kill().unwrap();
                child.0.wait().unwrap();
                let mut storage = SqliteStorage::open_existing(
                    data.join("documents.sqlite3"),
                    config.peer,
                    config.document.clone(),
                )
                .unwrap();
                let stored = storage.load(DOC).unwrap().map(|d| d.version().clone()).unwrap_or_default();
                drop(storage);
                for (peer, acked) in peers.iter().zip(&acknowledged) {
                    assert!(
                        stored.get(*peer) >= *acked,
                        "peer {}: {acked} operations acknowledged, {} on disk",
                        peer.get(),
                        stored.get(*peer)
                    );
                }
                acknowledged_at_kills.push(acknowledged.iter().sum::<u32>());
                checked += 1;
                // Down for a while: the clients type on offline.
                std::thread::sleep(Duration::from_millis(rng.below(300)));
                child.0 = serve_with(&data, &listen, MACHINE_SPEED).0;
            }
            (checked, acknowledged_at_kills)
        });

        // The writers, at a steady pace so that the kills land mid-stream.
        let n = trace.txns.len();
        let mut typed = VersionVector::new();
        for (writer, client) in clients.iter().enumerate().take(2) {
            catch_up(client, &typed);
            if writer == 0 && !trace.start_content.is_empty() {
                let start = trace.start_content.clone();
                client.edit(DOC, move |d| d.transact().text("text").insert(0, &start).map(drop));
            }
            for txn in &trace.txns[n * writer / 2..n * (writer + 1) / 2] {
                // Every replica's clock stays at the trace's end: a writer's clock set back to
                // its own turn would take the other turn's timestamps for clock drift.
                let mut txn = txn.clone();
                txn.time_ms = None;
                client.edit(DOC, move |d| apply_patches(d, &txn)).unwrap().unwrap();
                std::thread::sleep(Duration::from_micros(150));
            }
            typed = client.read(DOC, |d| d.version().clone()).unwrap();
        }
        typing.store(false, Ordering::Relaxed);
        killer.join().unwrap()
    });
    let typing_time = started.elapsed();

    for (i, client) in clients[..2].iter().enumerate() {
        if !client.wait_saved(DOC, PATIENCE) {
            let state = client.with(|s| {
                format!(
                    "{:?} saved {} acknowledged {:?} holds {:?}",
                    s.status(),
                    s.is_saved(DOC),
                    s.acknowledged(DOC),
                    s.document(DOC).map(|d| d.version().clone())
                )
            });
            let config = ServerConfig::default();
            let stored =
                SqliteStorage::open_existing(data.join("documents.sqlite3"), config.peer, config.document)
                    .unwrap()
                    .load(DOC)
                    .unwrap()
                    .map(|d| d.version().clone());
            panic!("writer {i} never saved: {state:?}; stored {stored:?}");
        }
    }
    let mut typed = VersionVector::new();
    for client in &clients[..2] {
        typed.merge(&client.read(DOC, |d| d.version().clone()).unwrap());
    }
    for (i, client) in clients.iter().enumerate() {
        catch_up(client, &typed);
        let text = client.read(DOC, |d| d.text("text").to_string()).unwrap();
        assert!(text == trace.end_content, "client {i} differs from endContent");
    }
    // The document as stored, read while the server runs, then after one last SIGKILL.
    let data_arg = data.to_str().unwrap();
    let (ok, exported) = run(&["export", "--data", data_arg, DOC, "--container", "text"]);
    assert!(ok && exported == trace.end_content, "the exported document differs from endContent");
    let mut child = server.into_inner().unwrap();
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let (ok, exported) = run(&["export", "--data", data_arg, DOC, "--container", "text"]);
    assert!(ok && exported == trace.end_content, "after SIGKILL the stored document differs from endContent");
    for client in clients {
        client.close();
    }
    eprintln!(
        "{trace_name}: {} txns typed in {typing_time:.1?} across {checked} SIGKILLs; operations acknowledged at each kill: {acknowledged_at_kills:?}",
        trace.txns.len()
    );
    assert!(checked >= kills.min(2), "the server was killed only {checked} times");
    assert!(acknowledged_at_kills.iter().any(|&a| a > 0), "no kill came after an acknowledgement");
    let _ = std::fs::remove_dir_all(&data);
}
