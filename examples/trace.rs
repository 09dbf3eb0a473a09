//! Replay a real editing trace through crdt-sync and check the result.
//!
//! ```text
//! cargo run --release --example trace -- ../shared/traces/automerge-paper.json.gz [--via local] [--out-dir DIR]
//! cargo run --release --example trace -- TRACE --via sim --clients N [--writers K] [--seed S] [--faults] [--out-dir DIR]
//! cargo run --release --features tokio --example trace -- TRACE --via tokio --clients N [--writers K] [--out-dir DIR]
//! cargo run --release --features async-std --example trace -- TRACE --via async-std --clients N [--writers K]
//! cargo run --release --features tungstenite --example trace -- TRACE --via blocking --clients N [--writers K]
//! cargo run --release --features tokio --example trace -- TRACE --connect ws://HOST:PORT [--doc NAME] --clients N
//! ```
//!
//! `--via local` (the default): sequential traces (`{startContent, endContent, txns:
//! [{patches}]}`) are typed by one replica; concurrent traces (`txns` with `parents` and
//! `agent`) get one replica per agent, and each transaction is applied on that agent's
//! replica at exactly its `parents` version (bringing in what the parents include, or forking
//! at the parents when the replica is ahead), then shared.
//!
//! `--via sim`: the same edits travel through the sync protocol, in the deterministic network
//! simulator of the tests (`tests/common/sim.rs`): one server and N client sessions syncing
//! one document named after the trace. K clients write (default: one for a sequential trace,
//! one per agent for a concurrent one); the others only receive. A sequential trace is cut
//! into K contiguous turns, each typed once its writer has received the turns before; agent
//! `a` of a concurrent trace types on writer `a % K`, at its `parents` version as above.
//! Every transaction is one crdt-sync transaction and leaves as its own frame, 1 ms of
//! simulated time after the one before. `--faults` breaks links, partitions clients and
//! restarts the server throughout ([`Faults::heavy`](sim::Faults::heavy)); the network heals
//! at the end and runs until it settles. `--seed` picks the run (same seed, same run).
//! `bytes_per_op` is what clients sent per trace op, `fanout_bytes_per_op` what the server
//! sent each receiving client per op; both count every frame, handshakes and resyncs included.
//!
//! `--via tokio`, `--via async-std`, `--via blocking` (built with the runtime's feature: `tokio`,
//! `async-std`, `tungstenite`): the same writers and receivers, over real WebSocket
//! connections to a server of that runtime on a loopback port, as fast as they go; the JSON
//! line reports wall time and what crossed the server's sockets. `--connect URL` replays into
//! a running `crdt-sync serve` instead (clients on tokio unless `--via` names another
//! runtime); its clients ride out server restarts.
//!
//! Every replica (the server's too) must end at `endContent`. Prints one JSON line; exits
//! non-zero on a mismatch. `--out-dir` writes each replica's text there.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use crdt_sync::EncodeOptions;

#[path = "support/trace_replay.rs"]
mod trace_replay;

#[path = "support/counting.rs"]
mod counting;

// The simulator of the integration tests, so that the tool and the tests drive the protocol
// alike; the tool uses only part of it.
#[allow(dead_code)]
#[path = "../tests/common/sim.rs"]
mod sim;

#[path = "support/trace_sim.rs"]
mod trace_sim;

#[cfg(any(feature = "tokio", feature = "async-std", feature = "tungstenite"))]
#[path = "support/net.rs"]
mod net;

#[cfg(any(feature = "tokio", feature = "async-std", feature = "tungstenite"))]
#[path = "support/trace_net.rs"]
mod trace_net;

#[global_allocator]
static ALLOC: counting::Counting = counting::Counting;

use trace_replay::{Trace, load_trace};
use trace_sim::{SimOptions, replay_through_sim};

const USAGE: &str = "usage: trace FILE.json.gz [--via local] [--out-dir DIR]
       trace FILE.json.gz --via sim --clients N [--writers K] [--seed S] [--faults] [--out-dir DIR]
       trace FILE.json.gz --via tokio|async-std|blocking --clients N [--writers K] [--out-dir DIR]
             (built with --features tokio, async-std or tungstenite)
       trace FILE.json.gz --connect ws://HOST:PORT [--doc NAME] [--via RUNTIME] --clients N [--writers K]";

struct Args {
    file: PathBuf,
    via: String,
    out_dir: Option<PathBuf>,
    /// With `--via sim` and `--via tokio` (which ignores the seed and faults).
    sim: Option<SimOptions>,
    /// `--connect URL`: a running server instead of one in the process (`--via tokio`).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    connect: Option<String>,
    /// `--doc NAME`: the document to replay into (default: the trace's name).
    #[cfg_attr(
        not(any(feature = "tokio", feature = "async-std", feature = "tungstenite")),
        allow(dead_code)
    )]
    doc: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut file, mut via, mut out_dir) = (None, "local".to_string(), None);
    let (mut clients, mut writers, mut seed, mut faults) = (None, None, None, false);
    let (mut connect, mut doc) = (None, None);
    fn number(flag: &str, value: Option<String>) -> Result<u64, String> {
        let value = value.ok_or(format!("{flag} needs a value"))?;
        value.parse().map_err(|_| format!("{flag} {value}: not a number"))
    }
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--via" => via = args.next().ok_or("--via needs a value")?,
            "--out-dir" => out_dir = Some(PathBuf::from(args.next().ok_or("--out-dir needs a value")?)),
            "--clients" => clients = Some(number("--clients", args.next())? as usize),
            "--writers" => writers = Some(number("--writers", args.next())? as usize),
            "--seed" => seed = Some(number("--seed", args.next())?),
            "--faults" => faults = true,
            "--connect" => connect = Some(args.next().ok_or("--connect needs a URL")?),
            "--doc" => doc = Some(args.next().ok_or("--doc needs a name")?),
            "-h" | "--help" => return Err(String::new()),
            _ if file.is_none() && !arg.starts_with("--") => file = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument {arg}")),
        }
    }
    if connect.is_some() && via == "local" {
        via = "tokio".into();
    }
    let sim = match via.as_str() {
        "local" if clients.is_some() || writers.is_some() || seed.is_some() || faults => {
            return Err("--clients, --writers, --seed and --faults go with --via sim".into());
        }
        "local" => None,
        "sim" => Some(SimOptions {
            clients: clients.ok_or("--via sim needs --clients N")?,
            writers,
            seed: seed.unwrap_or(0),
            faults,
        }),
        "tokio" | "async-std" | "blocking" if seed.is_some() || faults => {
            return Err("--seed and --faults go with --via sim".into());
        }
        "tokio" | "async-std" | "blocking" => Some(SimOptions {
            clients: clients.ok_or(format!("--via {via} needs --clients N"))?,
            writers,
            seed: 0,
            faults,
        }),
        _ => return Err(format!("--via {via}: expected `local`, `sim`, `tokio`, `async-std` or `blocking`")),
    };
    if doc.is_some() && connect.is_none() {
        return Err("--doc goes with --connect".into());
    }
    if connect.is_some() && matches!(via.as_str(), "local" | "sim") {
        return Err("--connect goes with a socket runtime: --via tokio, async-std or blocking".into());
    }
    Ok(Args { file: file.ok_or("missing trace file")?, via, out_dir, sim, connect, doc })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<bool, String> {
    let trace = load_trace(&args.file)?;
    let name = args.file.file_name().and_then(|n| n.to_str()).unwrap_or("trace");
    let name = name.trim_end_matches(".gz").trim_end_matches(".json");
    match &args.sim {
        Some(options) if args.via == "sim" => run_sim(args, &trace, name, options),
        Some(options) => run_sockets(args, &trace, name, options),
        None => run_local(args, &trace, name),
    }
}

fn run_local(args: &Args, trace: &Trace, name: &str) -> Result<bool, String> {
    let ops = trace.op_count();

    #[allow(clippy::disallowed_methods)] // the trace tool measures real time
    let started = Instant::now();
    counting::reset_peak();
    let heap_before = counting::current();
    let replicas = trace.replay()?;
    let elapsed = started.elapsed();
    let replay_peak_heap = counting::peak().saturating_sub(heap_before);

    let texts: Vec<(String, String)> =
        replicas.iter().enumerate().map(|(i, r)| (i.to_string(), r.text("text").to_string())).collect();
    let mut all_match = check_replicas(args, trace, &texts)? == texts.len();

    let doc = &replicas[0];
    let encoded = doc.encode();
    #[allow(clippy::disallowed_methods)] // the trace tool measures real time
    let decode_started = Instant::now();
    let heap_before = counting::current();
    let loaded = crdt_sync::Document::load(&encoded, crdt_sync::PeerId::new(u64::MAX))
        .map_err(|e| format!("loading the encoded document: {e}"))?;
    let loaded_text = loaded.text("text").to_string();
    let decode_elapsed = decode_started.elapsed();
    // What the loaded document keeps (the text read back is the caller's, not the document's).
    let retained_after_load = counting::current().saturating_sub(heap_before + loaded_text.capacity());
    if loaded_text != trace.end_content {
        eprintln!("the decoded document differs from endContent");
        all_match = false;
    }
    let report = serde_json::json!({
        "trace": name,
        "via": args.via,
        "replicas": replicas.len(),
        "txns": trace.txns.len(),
        "ops": ops,
        "elapsed_ms": (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        "ops_per_sec": (ops as f64 / elapsed.as_secs_f64()).round(),
        "final_chars": doc.text("text").len(),
        "encoded_bytes": encoded.len(),
        "encoded_bytes_lz4": doc.encode_with(EncodeOptions::lz4()).len(),
        "state_bytes": doc.encode_state().len(),
        "stored_changes": doc.change_count(),
        "decode_ms": (decode_elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        "replay_peak_heap_bytes": replay_peak_heap,
        "retained_heap_after_load_bytes": retained_after_load,
        "peak_rss_bytes": peak_rss_bytes(),
    });
    println!("{report}");
    Ok(all_match)
}

fn run_sim(args: &Args, trace: &Trace, name: &str, options: &SimOptions) -> Result<bool, String> {
    let ops = trace.op_count();
    #[allow(clippy::disallowed_methods)] // the trace tool measures real time
    let started = Instant::now();
    let run = replay_through_sim(trace, name, options)?;
    let elapsed = started.elapsed();
    let sim = &run.sim;
    if !run.settled {
        eprintln!("the network did not settle after healing");
    }
    for error in &run.events.first_errors {
        eprintln!("protocol error: {error}");
    }

    // Every client's replica, then the server's.
    let mut replicas: Vec<(String, String)> = (0..options.clients)
        .map(|i| {
            let text = sim.client(i).document(name).map(|d| d.text("text").to_string()).unwrap_or_default();
            (i.to_string(), text)
        })
        .collect();
    let server_text = if sim.server_is_up() {
        sim.server().document(name).map(|d| d.text("text").to_string())
    } else {
        None
    };
    replicas.push(("server".into(), server_text.unwrap_or_default()));
    let at_end_content = check_replicas(args, trace, &replicas)?;

    let stats = &sim.stats;
    let receivers = &sim.clients[run.writers.min(sim.clients.len())..];
    let per_op = |bytes: f64| (bytes / ops.max(1) as f64 * 100.0).round() / 100.0;
    // `null` when every client writes: there is no pure receiver to measure.
    let fanout_bytes_per_op = (!receivers.is_empty()).then(|| {
        per_op(receivers.iter().map(|c| c.wire.bytes_down).sum::<u64>() as f64 / receivers.len() as f64)
    });
    let final_chars = sim.client(0).document(name).map_or(0, |d| d.text("text").len());
    let report = serde_json::json!({
        "trace": name,
        "via": args.via,
        "clients": options.clients,
        "writers": run.writers,
        "seed": options.seed,
        "faults": options.faults,
        "txns": trace.txns.len(),
        "ops": ops,
        "elapsed_ms": (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        "ops_per_sec": (ops as f64 / elapsed.as_secs_f64()).round(),
        "simulated_s": (sim.now.duration_since(run.started).as_secs_f64() * 1000.0).round() / 1000.0,
        "final_chars": final_chars,
        "frames": stats.frames_up + stats.frames_down,
        "frames_up": stats.frames_up,
        "frames_down": stats.frames_down,
        "bytes_on_wire": stats.bytes_up + stats.bytes_down,
        "bytes_up": stats.bytes_up,
        "bytes_down": stats.bytes_down,
        "bytes_per_op": per_op(stats.bytes_up as f64),
        "fanout_bytes_per_op": fanout_bytes_per_op,
        "server_restarts": sim.restarts,
        "reconnects": run.events.reconnects,
        "out_of_sync": run.events.out_of_sync,
        "protocol_errors": run.events.client_errors + run.events.server_errors,
        "settled": run.settled,
        "replicas": replicas.len(),
        "replicas_at_end_content": at_end_content,
        "peak_rss_bytes": peak_rss_bytes(),
    });
    println!("{report}");
    Ok(at_end_content == replicas.len())
}

#[cfg(not(any(feature = "tokio", feature = "async-std", feature = "tungstenite")))]
fn run_sockets(args: &Args, _: &Trace, _: &str, _: &SimOptions) -> Result<bool, String> {
    let feature = if args.via == "blocking" { "tungstenite" } else { args.via.as_str() };
    Err(format!(
        "--via {} needs its feature: cargo run --release --features {feature} --example trace -- ...",
        args.via
    ))
}

/// Real sockets: every client's replica and the server's must end at `endContent`.
#[cfg(any(feature = "tokio", feature = "async-std", feature = "tungstenite"))]
fn run_sockets(args: &Args, trace: &Trace, name: &str, options: &SimOptions) -> Result<bool, String> {
    let ops = trace.op_count();
    let name = args.doc.as_deref().unwrap_or(name);
    let runtime =
        net::Runtime::parse(&args.via).ok_or(format!("--via {}: not a socket runtime", args.via))?;
    let run = trace_net::replay_through_sockets(
        runtime,
        trace,
        name,
        options.clients,
        options.writers,
        args.connect.as_deref(),
    )?;
    let at_end_content = check_replicas(args, trace, &run.replicas)?;
    // Unknown for a server of another process: `null`.
    let traffic = run.traffic;
    let per_op = |bytes: u64| (bytes as f64 / ops.max(1) as f64 * 100.0).round() / 100.0;
    let report = serde_json::json!({
        "trace": name,
        "via": args.via,
        "connect": args.connect,
        "clients": options.clients,
        "writers": run.writers,
        "txns": trace.txns.len(),
        "ops": ops,
        "elapsed_ms": (run.elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        "ops_per_sec": (ops as f64 / run.elapsed.as_secs_f64()).round(),
        "final_chars": trace.end_content.chars().count(),
        "frames_up": traffic.map(|t| t.frames_in),
        "frames_down": traffic.map(|t| t.frames_out),
        "bytes_on_wire": traffic.map(|t| t.bytes_in + t.bytes_out),
        "bytes_up": traffic.map(|t| t.bytes_in),
        "bytes_down": traffic.map(|t| t.bytes_out),
        "bytes_per_op": traffic.map(|t| per_op(t.bytes_in)),
        "replicas": run.replicas.len(),
        "replicas_at_end_content": at_end_content,
        "peak_rss_bytes": peak_rss_bytes(),
    });
    println!("{report}");
    Ok(at_end_content == run.replicas.len())
}

/// Compare each replica with `endContent` (saying where it differs), write it to
/// `--out-dir` if asked; returns how many match.
fn check_replicas(args: &Args, trace: &Trace, replicas: &[(String, String)]) -> Result<usize, String> {
    let mut at_end_content = 0;
    for (label, text) in replicas {
        if *text == trace.end_content {
            at_end_content += 1;
        } else {
            let at = text.chars().zip(trace.end_content.chars()).take_while(|(a, b)| a == b).count();
            eprintln!(
                "replica {label}: text differs from endContent at char {at} ({} chars, expected {})",
                text.chars().count(),
                trace.end_content.chars().count()
            );
        }
        if let Some(dir) = &args.out_dir {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let path = dir.join(format!("{label}.txt"));
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(at_end_content)
}

/// Peak resident set size of this process (Linux; `null` elsewhere).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
