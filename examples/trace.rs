//! Replay a real editing trace through crdt-sync and check the result.
//!
//! ```text
//! cargo run --release --example trace -- ../shared/traces/automerge-paper.json.gz [--via local] [--out-dir DIR]
//! ```
//!
//! Sequential traces (`{startContent, endContent, txns: [{patches}]}`) are typed by one replica;
//! concurrent traces (`txns` with `parents` and `agent`) get one replica per agent, and each
//! transaction is applied on that agent's replica at exactly its `parents` version (bringing in
//! what the parents include, or forking at the parents when the replica is ahead), then shared.
//! Every replica must end at `endContent`. Prints one JSON line; exits non-zero on a mismatch.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use crdt_sync::EncodeOptions;

#[path = "support/trace_replay.rs"]
mod trace_replay;

#[path = "support/counting.rs"]
mod counting;

#[global_allocator]
static ALLOC: counting::Counting = counting::Counting;

use trace_replay::load_trace;

struct Args {
    file: PathBuf,
    via: String,
    out_dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut file, mut via, mut out_dir) = (None, "local".to_string(), None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--via" => via = args.next().ok_or("--via needs a value")?,
            "--out-dir" => out_dir = Some(PathBuf::from(args.next().ok_or("--out-dir needs a value")?)),
            "-h" | "--help" => return Err(String::new()),
            _ if file.is_none() && !arg.starts_with("--") => file = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument {arg}")),
        }
    }
    if via != "local" {
        return Err(format!("--via {via} is not available yet (only `local`)"));
    }
    Ok(Args { file: file.ok_or("missing trace file")?, via, out_dir })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            eprintln!("usage: trace FILE.json.gz [--via local] [--out-dir DIR]");
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
    let ops = trace.op_count();

    #[allow(clippy::disallowed_methods)] // the trace tool measures real time
    let started = Instant::now();
    counting::reset_peak();
    let heap_before = counting::current();
    let replicas = trace.replay()?;
    let elapsed = started.elapsed();
    let replay_peak_heap = counting::peak().saturating_sub(heap_before);

    let mut all_match = true;
    for (i, replica) in replicas.iter().enumerate() {
        let text = replica.text("text").to_string();
        if text != trace.end_content {
            all_match = false;
            let at = text.chars().zip(trace.end_content.chars()).take_while(|(a, b)| a == b).count();
            eprintln!(
                "replica {i}: text differs from endContent at char {at} ({} chars, expected {})",
                text.chars().count(),
                trace.end_content.chars().count()
            );
        }
        if let Some(dir) = &args.out_dir {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let path = dir.join(format!("{i}.txt"));
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }

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

/// Peak resident set size of this process (Linux; `null` elsewhere).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
