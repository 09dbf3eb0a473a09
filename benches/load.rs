//! The load and abuse run at full size: 1,000 WebSocket clients on loopback typing into 100
//! documents through `crdt-sync serve` for 30 seconds, while 70 misbehaving connections (10
//! of each kind: garbage, oversized frames, decompression bombs, floods, TCP and WebSocket
//! handshakes that never finish, forged tokens) attack it.
//!
//! ```text
//! cargo bench --features cli --bench load
//! LOAD_CLIENTS=200 LOAD_DOCUMENTS=20 LOAD_TYPING_S=10 cargo bench --features cli --bench load
//! ```
//!
//! It needs about two file descriptors per client (`ulimit -n` of 4096 or more).

#[path = "../tests/common/load.rs"]
mod load;
#[path = "../tests/common/process.rs"]
#[allow(dead_code)]
mod process;

use std::time::Duration;

/// Stated bound on the server's peak resident memory for the full-size run.
const MEMORY_BOUND_MIB: u64 = 256;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument would mean "not this one".
    if std::env::args().skip(1).any(|a| !a.starts_with('-')) {
        return;
    }
    let plan = load::LoadPlan {
        clients: env_or("LOAD_CLIENTS", 1_000) as usize,
        documents: env_or("LOAD_DOCUMENTS", 100) as usize,
        typing: Duration::from_secs(env_or("LOAD_TYPING_S", 30)),
        edit_every: Duration::from_millis(env_or("LOAD_EDIT_EVERY_MS", 500)),
        abusers_per_kind: env_or("LOAD_ABUSERS", 10) as usize,
    };
    println!("load: {plan:?}");
    let report = load::run_load(&plan);
    report.print();
    let ok = report.converged
        && report.lost_changes == 0
        && report.disconnected_clients == 0
        && report.refused_abusers == report.abusers
        && report.peak_server_rss_kib < MEMORY_BOUND_MIB * 1024;
    println!("memory bound          {MEMORY_BOUND_MIB} MiB");
    if !ok {
        eprintln!("FAILED: see the figures above");
        std::process::exit(1);
    }
}
