//! Criterion benches of the document over the shared editing traces: local replay, remote
//! replay of the same changes into a fresh replica, encode, decode, fork at an old version and
//! merge.
//!
//! `cargo bench --bench document`. Traces are read from `../shared/traces/`; a missing folder
//! skips the benches with a message.

#[path = "../examples/support/trace_replay.rs"]
mod trace_replay;

use crdt_sync::{Document, PeerId, VersionVector};
use criterion::{Criterion, criterion_group, criterion_main};
use trace_replay::{load_trace, traces_dir};

fn traces(c: &mut Criterion) {
    let dir = traces_dir();
    if !dir.exists() {
        eprintln!("skipping trace benches: {} not found", dir.display());
        return;
    }
    for name in ["sveltecomponent", "json-crdt-blog-post", "automerge-paper", "friendsforever"] {
        let path = dir.join(format!("{name}.json.gz"));
        let Ok(trace) = load_trace(&path) else {
            eprintln!("skipping {name}: cannot read {}", path.display());
            continue;
        };
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        group.bench_function("local_replay", |b| b.iter(|| trace.replay().expect("trace replays")));

        let doc = trace.replay().expect("trace replays").swap_remove(0);
        let changes = doc.changes_since(&VersionVector::new()).expect("full history");
        group.bench_function("remote_replay", |b| {
            b.iter(|| {
                let mut fresh = Document::new(PeerId::new(1_000));
                fresh.apply_changes(changes.clone()).expect("changes apply");
                fresh
            })
        });
        group.bench_function("encode", |b| b.iter(|| doc.encode()));
        let encoded = doc.encode();
        group.bench_function("decode", |b| {
            b.iter(|| Document::load(&encoded, PeerId::new(1_001)).expect("loads"))
        });

        // Time travel: check out the version halfway through the history.
        let old = crdt_sync::Frontier::from(changes[changes.len() / 2].last_id());
        group.bench_function("fork_at_half", |b| {
            b.iter(|| doc.fork_at(&old, PeerId::new(1_002)).expect("a recorded version checks out"))
        });

        // Merge: a replica that stopped halfway catches up with the whole document.
        let behind = doc.fork_at(&old, PeerId::new(1_003)).expect("a recorded version checks out");
        group.bench_function("merge_second_half", |b| {
            b.iter(|| {
                let mut replica = behind.clone();
                replica.merge(&doc).expect("merge");
                replica
            })
        });
        group.finish();
    }
}

criterion_group!(benches, traces);
criterion_main!(benches);
