//! Load and abuse, small enough for CI: WebSocket clients typing into documents through the
//! `crdt-sync` binary while misbehaving connections attack it. Every well-behaved replica
//! converges, nothing typed is lost, nobody well-behaved is disconnected, every abuser is
//! cut off, and the server's memory stays bounded. The full-size run is
//! `cargo bench --features cli --bench load`.
//!
//! `LOAD_CLIENTS`, `LOAD_DOCUMENTS`, `LOAD_TYPING_S` and `LOAD_ABUSERS` resize it.
#![cfg(all(feature = "cli", unix))]

mod common;

use std::time::Duration;

use common::load::{LoadPlan, run_load};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Stated bound on the server's peak resident memory for this size.
const MEMORY_BOUND_MIB: u64 = 256;

#[test]
fn well_behaved_clients_converge_while_abusers_are_cut_off() {
    let plan = LoadPlan {
        clients: env_or("LOAD_CLIENTS", 100) as usize,
        documents: env_or("LOAD_DOCUMENTS", 10) as usize,
        typing: Duration::from_secs(env_or("LOAD_TYPING_S", 5)),
        edit_every: Duration::from_millis(250),
        abusers_per_kind: env_or("LOAD_ABUSERS", 2) as usize,
    };
    let report = run_load(&plan);
    report.print();
    assert!(report.changes > 0);
    assert!(report.converged, "every replica and the server's storage hold the same text");
    assert_eq!(report.lost_changes, 0);
    assert_eq!(report.disconnected_clients, 0, "no well-behaved client was disconnected");
    assert_eq!(report.refused_abusers, report.abusers, "every abuser was cut off");
    assert!(report.latency_samples > 0);
    assert!(
        report.peak_server_rss_kib < MEMORY_BOUND_MIB * 1024,
        "server peak memory {} KiB",
        report.peak_server_rss_kib
    );
}
