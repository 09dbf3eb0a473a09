//! One writer and 50 readers on loopback with the tokio runtime: how long a keystroke takes
//! to reach the last reader, and how many changes per second the server delivers.
//!
//! `cargo bench --features tokio --bench fanout_tokio`. Criterion measures the latency of one
//! keystroke to the last of the readers (one keystroke in flight at a time); the bench also
//! prints p50/p99 of that latency and the delivery rate with many keystrokes in flight.

use std::time::{Duration, Instant};

use crdt_sync::tokio::{TokioClient, TokioServer};
use crdt_sync::{ClientConfig, ClientEvent, ClientSession, ConnectionStatus, Document, PeerId, ServerConfig};
use criterion::{Criterion, criterion_group, criterion_main};
use tokio::sync::broadcast;

const READERS: usize = 50;
const DOC: &str = "bench";
const WRITER: PeerId = PeerId::new(1);

struct Setup {
    _server: TokioServer,
    writer: TokioClient,
    readers: Vec<(TokioClient, broadcast::Receiver<ClientEvent>)>,
    typed: u32,
}

impl Setup {
    async fn new() -> Setup {
        // The writer types at machine speed: the per-connection message limit is for
        // abusers, not for this measurement.
        let config = ServerConfig::default().with_rate_limit(0, 0);
        let server = TokioServer::bind("127.0.0.1:0", config).await.expect("a loopback port");
        let url = format!("ws://{}", server.local_addr());
        let connect = |peer: PeerId| {
            let client = TokioClient::connect(url.clone(), ClientSession::new(peer, ClientConfig::default()));
            (client, peer)
        };
        let (writer, _) = connect(WRITER);
        writer.subscribe(DOC, Document::new(WRITER)).await;
        let mut readers = Vec::new();
        for i in 0..READERS {
            let (reader, peer) = connect(PeerId::new(100 + i as u64));
            let events = reader.events();
            reader.subscribe(DOC, Document::new(peer)).await;
            readers.push((reader, events));
        }
        for client in std::iter::once(&writer).chain(readers.iter().map(|(r, _)| r)) {
            client.wait_status(ConnectionStatus::Connected).await;
            client.wait_saved(DOC).await;
        }
        Setup { _server: server, writer, readers, typed: 0 }
    }

    /// Type `count` keystrokes (without waiting between them).
    async fn type_keys(&mut self, count: u32) {
        for _ in 0..count {
            let at = self.typed as usize;
            self.writer.edit(DOC, move |d| d.transact().text("text").insert(at, "x").map(drop)).await;
            self.typed += 1;
        }
    }

    /// Wait until every reader holds everything typed so far.
    async fn all_received(&mut self) {
        let typed = self.typed;
        for (reader, events) in &mut self.readers {
            loop {
                let has = reader.read(DOC, move |d| d.version().get(WRITER) >= typed).await;
                if has == Some(true) {
                    break;
                }
                // Woken by the next change the reader applies.
                let _ = events.recv().await;
            }
        }
    }
}

fn fanout(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    let mut setup = runtime.block_on(Setup::new());

    // Latency: one keystroke in flight, to the last reader.
    let mut latencies = Vec::new();
    runtime.block_on(async {
        for _ in 0..500 {
            #[allow(clippy::disallowed_methods)] // benches measure real time
            let started = Instant::now();
            setup.type_keys(1).await;
            setup.all_received().await;
            latencies.push(started.elapsed());
        }
    });
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    eprintln!(
        "keystroke to the last of {READERS} readers: p50 {:?}, p99 {:?} ({} samples)",
        pick(0.5),
        pick(0.99),
        latencies.len()
    );

    // Throughput: 2,000 keystrokes as fast as the writer types, delivered to every reader.
    let burst = 2_000u32;
    let elapsed = runtime.block_on(async {
        #[allow(clippy::disallowed_methods)] // benches measure real time
        let started = Instant::now();
        setup.type_keys(burst).await;
        setup.all_received().await;
        started.elapsed()
    });
    let delivered = f64::from(burst) * READERS as f64;
    eprintln!(
        "{burst} keystrokes to {READERS} readers in {elapsed:?}: {:.0} changes delivered per second",
        delivered / elapsed.as_secs_f64()
    );

    let mut group = c.benchmark_group("fanout_tokio");
    group.sample_size(20).measurement_time(Duration::from_secs(10));
    group.bench_function("keystroke_to_last_of_50_readers", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                #[allow(clippy::disallowed_methods)] // benches measure real time
                let started = Instant::now();
                for _ in 0..iters {
                    setup.type_keys(1).await;
                    setup.all_received().await;
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
