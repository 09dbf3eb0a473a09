//! Replays the shared editing traces through crdt-sync and through yrs, Loro, diamond-types
//! and Automerge, one library after the other in this process, and prints markdown tables.
//!
//! `cargo run --release -- [--trace NAME]... [--runs N] [--lib NAME]... [--only live-sync]
//! [--traces-dir DIR]`
//! from `benches/peers/`. See README.md for what each column means. Progress goes to stderr,
//! the report to stdout.

// A benchmark reads the clock (the crate's clippy.toml forbids it in the core only).
#![allow(clippy::disallowed_methods)]

#[path = "../../../examples/support/trace_replay.rs"]
mod trace_replay;

#[path = "../../../examples/support/counting.rs"]
mod counting;
mod libs;

use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use libs::{Lib, Prepared, Problem, Traffic};

#[global_allocator]
static ALLOC: counting::Counting = counting::Counting;

const ALL_TRACES: [&str; 4] = ["automerge-paper", "sveltecomponent", "json-crdt-blog-post", "friendsforever"];
const LIB_NAMES: [&str; 5] = ["crdt-sync", "yrs", "loro", "diamond-types", "automerge"];
/// A stage whose first run takes longer than this is not repeated.
const SLOW: Duration = Duration::from_secs(30);
/// A single run still going after this long is abandoned (checked inside the replay loops).
const BUDGET: Duration = Duration::from_secs(240);

/// Median of the runs that were made.
#[derive(Clone, Copy)]
struct Stat {
    median: Duration,
    runs: usize,
}

impl Stat {
    fn of(mut times: Vec<Duration>) -> Self {
        times.sort_unstable();
        let n = times.len();
        let median = if n % 2 == 1 { times[n / 2] } else { (times[n / 2 - 1] + times[n / 2]) / 2 };
        Stat { median, runs: n }
    }
}

struct Sizes {
    raw: usize,
    lz4: usize,
    default: usize,
}

struct Messages {
    count: usize,
    bytes: usize,
}

/// Live sync: median time of the whole writer → (server) → reader loop, what went on the
/// wire, and the keystrokes (trace patches) it carried.
struct Live {
    stat: Stat,
    traffic: Traffic,
    keystrokes: usize,
}

/// Everything measured for one library on one trace; each stage fails independently.
struct Measured {
    local: Result<(Stat, usize), Problem>,
    remote: Result<Stat, Problem>,
    messages: Result<Messages, Problem>,
    sizes: Result<Sizes, Problem>,
    load: Result<(Stat, usize), Problem>,
    live: Result<Live, Problem>,
}

impl Measured {
    fn all(p: &Problem) -> Self {
        Measured {
            local: Err(p.clone()),
            remote: Err(p.clone()),
            messages: Err(p.clone()),
            sizes: Err(p.clone()),
            load: Err(p.clone()),
            live: Err(p.clone()),
        }
    }
}

/// Run `f`, turning a panic into a failure.
fn guard<T>(f: impl FnOnce() -> Result<T, Problem>) -> Result<T, Problem> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(Problem::Failed(format!("panic: {msg}")))
        }
    }
}

fn verify(text: &str, end: &str, what: &str) -> Result<(), Problem> {
    if text == end {
        return Ok(());
    }
    let at = text.chars().zip(end.chars()).take_while(|(a, b)| a == b).count();
    Err(Problem::Failed(format!(
        "{what}: final text differs from endContent ({} vs {} chars, first difference at char {at})",
        text.chars().count(),
        end.chars().count()
    )))
}

fn progress(t: &Prepared, lib: &str, stage: &str, run: usize, el: Duration) {
    eprintln!("  [{}] {lib}: {stage} run {} took {:.1} ms", t.name, run + 1, el.as_secs_f64() * 1e3);
}

/// Table 6, live sync: a writer types the trace and a reader receives every transaction before
/// the next one (crdt-sync through an in-memory server, peers directly).
fn live_sync<L: Lib>(t: &Prepared, runs: usize) -> Result<Live, Problem> {
    let end = &t.trace.end_content;
    let mut times = Vec::new();
    let mut traffic = None;
    for run in 0..runs {
        let start = Instant::now();
        libs::set_budget(Some(BUDGET));
        let result = L::live_sync(t);
        libs::set_budget(None);
        let result = result?;
        let el = start.elapsed();
        for (who, text) in (result.finals)() {
            verify(&text, end, &format!("live sync, {who}"))?;
        }
        // The traffic is deterministic (simulated time, seeded sessions): every run must agree.
        if traffic.is_some_and(|t| t != result.traffic) {
            return Err(Problem::failed("live sync: runs sent different bytes"));
        }
        traffic = Some(result.traffic);
        times.push(el);
        progress(t, L::NAME, "live sync", run, el);
        if run == 0 && el > SLOW {
            break;
        }
    }
    let keystrokes = t.trace.op_count() + usize::from(!t.trace.start_content.is_empty());
    let traffic = traffic.ok_or_else(|| Problem::failed("live sync: no run"))?;
    Ok(Live { stat: Stat::of(times), traffic, keystrokes })
}

fn bench<L: Lib>(t: &Prepared, runs: usize, stages: Stages) -> Measured {
    if let Some(reason) = L::not_applicable(t) {
        return Measured::all(&Problem::NotApplicable(reason));
    }
    if !stages.classic {
        let mut m = Measured::all(&Problem::NotApplicable("not measured in this run".into()));
        m.live = guard(|| live_sync::<L>(t, runs));
        return m;
    }
    let end = &t.trace.end_content;

    // 1. Local replay, in a fresh document each run.
    let mut kept: Option<L::Doc> = None;
    let local = guard(|| {
        let (mut times, mut peaks) = (Vec::new(), Vec::new());
        for run in 0..runs {
            drop(kept.take());
            counting::reset_peak();
            let base = counting::current();
            let start = Instant::now();
            libs::set_budget(Some(BUDGET));
            let docs = L::local_replay(t);
            libs::set_budget(None);
            let docs = docs?;
            let el = start.elapsed();
            peaks.push(counting::peak().saturating_sub(base));
            times.push(el);
            progress(t, L::NAME, "local replay", run, el);
            for (k, d) in docs.iter().enumerate() {
                verify(&L::text(d), end, &format!("local replay, replica {k}"))?;
            }
            kept = docs.into_iter().next();
            if run == 0 && el > SLOW {
                break;
            }
        }
        peaks.sort_unstable();
        Ok((Stat::of(times), peaks[peaks.len() / 2]))
    });

    // 3. Encoded sizes of the document the last local replay produced.
    let encoded = match (&local, kept.take()) {
        (Ok(_), Some(doc)) => guard(|| {
            let raw = L::encode_raw(&doc);
            let lz4 = L::encode_lz4(&doc, &raw).len();
            let default = L::encode_default(&doc).len();
            Ok((Sizes { raw: raw.len(), lz4, default }, raw))
        }),
        (Err(p), _) => Err(p.clone()),
        (Ok(_), None) => Err(Problem::failed("local replay returned no replica")),
    };
    let (sizes, raw) = match encoded {
        Ok((s, raw)) => (Ok(s), Some(raw)),
        Err(p) => (Err(p), None),
    };

    // 4./5. Decode + read, and the heap the loaded document retains.
    let load = match &raw {
        Some(raw) => guard(|| {
            let (mut times, mut retained) = (Vec::new(), Vec::new());
            for run in 0..runs {
                let base = counting::current();
                let start = Instant::now();
                let doc = L::load(raw)?;
                let text = L::text(&doc);
                let el = start.elapsed();
                verify(&text, end, "decode + read")?;
                drop(text);
                retained.push(counting::current().saturating_sub(base));
                drop(doc);
                times.push(el);
                progress(t, L::NAME, "decode + read", run, el);
                if run == 0 && el > SLOW {
                    break;
                }
            }
            retained.sort_unstable();
            Ok((Stat::of(times), retained[retained.len() / 2]))
        }),
        None => Err(sizes.as_ref().err().cloned().unwrap_or_else(|| Problem::failed("no encoding"))),
    };

    // 2. Remote replay: a fresh replica imports every message, one at a time.
    let updates = guard(|| L::record_updates(t));
    let messages = match &updates {
        Ok(u) => Ok(Messages { count: u.len(), bytes: u.iter().map(Vec::len).sum() }),
        Err(p) => Err(p.clone()),
    };
    let remote = guard(|| {
        let updates = updates.as_ref().map_err(Clone::clone)?;
        let mut times = Vec::new();
        for run in 0..runs {
            let start = Instant::now();
            libs::set_budget(Some(BUDGET));
            let doc = L::remote_replay(updates);
            libs::set_budget(None);
            let doc = doc?;
            let el = start.elapsed();
            verify(&L::text(&doc), end, "remote replay")?;
            drop(doc);
            times.push(el);
            progress(t, L::NAME, "remote replay", run, el);
            if run == 0 && el > SLOW {
                break;
            }
        }
        Ok(Stat::of(times))
    });

    // 6. Live sync.
    let live = guard(|| live_sync::<L>(t, runs));

    Measured { local, remote, messages, sizes, load, live }
}

/// Which measurements to make.
#[derive(Clone, Copy)]
struct Stages {
    /// Tables 1 to 5 (replays, sizes, load, heap).
    classic: bool,
}

struct Args {
    traces: Vec<String>,
    libs: Vec<String>,
    runs: usize,
    dir: PathBuf,
    stages: Stages,
}

const USAGE: &str = "usage: cargo run --release -- [--trace NAME]... [--runs N] [--lib NAME]... [--only live-sync] [--traces-dir DIR]
  --trace NAME       automerge-paper | sveltecomponent | json-crdt-blog-post | friendsforever (default: all)
  --runs N           runs per measurement, median reported (default 5)
  --lib NAME         crdt-sync | yrs | loro | diamond-types | automerge (default: all)
  --only live-sync   measure only table 6 (live sync) and print only it
  --traces-dir DIR   folder of <trace>.json.gz (default: the crate root's ../shared/traces)";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        traces: Vec::new(),
        libs: Vec::new(),
        runs: 5,
        dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces"),
        stages: Stages { classic: true },
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value\n{USAGE}"));
        match a.as_str() {
            "--trace" => args.traces.push(value()?),
            "--lib" => args.libs.push(value()?),
            "--runs" => {
                args.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?;
                if args.runs == 0 {
                    return Err("--runs must be at least 1".into());
                }
            }
            "--traces-dir" => args.dir = PathBuf::from(value()?),
            "--only" => match value()?.as_str() {
                "live-sync" => args.stages.classic = false,
                other => return Err(format!("--only: unknown measurement {other}\n{USAGE}")),
            },
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if args.traces.is_empty() {
        args.traces = ALL_TRACES.iter().map(|s| s.to_string()).collect();
    }
    if args.libs.is_empty() {
        args.libs = LIB_NAMES.iter().map(|s| s.to_string()).collect();
    }
    for l in &args.libs {
        if !LIB_NAMES.contains(&l.as_str()) {
            return Err(format!("unknown library {l}\n{USAGE}"));
        }
    }
    Ok(args)
}

/// Versions of the measured crates, from this project's Cargo.lock.
fn crate_version(name: &str) -> String {
    let lock = include_str!("../Cargo.lock");
    let needle = format!("name = \"{name}\"\nversion = \"");
    lock.find(&needle).and_then(|i| lock[i + needle.len()..].split('"').next()).unwrap_or("?").to_string()
}

fn machine_facts() -> String {
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split(':').nth(1)))
        .map(str::trim)
        .unwrap_or("unknown CPU")
        .to_string();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let profile = if cfg!(debug_assertions) { "DEBUG BUILD (numbers meaningless)" } else { "release" };
    format!(
        "- nproc: {nproc}\n- CPU: {cpu}\n- memory: {mem_gib:.1} GiB\n- {}\n- profile: {profile}, single thread, one library after the other in one process",
        env!("PEERS_RUSTC_VERSION")
    )
}

fn fmt_ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn fmt_kib(b: usize) -> String {
    format!("{:.1} KiB", b as f64 / 1024.0)
}

fn fmt_mib(b: usize) -> String {
    format!("{:.2} MiB", b as f64 / (1024.0 * 1024.0))
}

/// One table cell: value for a library, plus the ratio to crdt-sync's value.
struct Cell {
    text: String,
    /// The number the ratio is computed from, if any.
    value: Option<f64>,
}

#[derive(Clone, Copy)]
enum Ratio {
    /// peer / ours (times: > 1 means crdt-sync is faster)
    PeerOverOurs,
    /// ours / peer (sizes: > 1 means crdt-sync is larger)
    OursOverPeer,
    None,
}

fn table(out: &mut String, title: &str, traces: &[String], rows: &[(String, Vec<Cell>)], ratio: Ratio) {
    let _ = writeln!(out, "\n### {title}\n");
    let _ = writeln!(out, "| library | {} |", traces.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(traces.len()));
    let ours = rows.iter().find(|(n, _)| n == "crdt-sync");
    for (name, cells) in rows {
        let mut line = format!("| {name} |");
        for (i, cell) in cells.iter().enumerate() {
            let base = ours.and_then(|(_, c)| c[i].value);
            let r = match (ratio, cell.value, base) {
                _ if name == "crdt-sync" => String::new(),
                (Ratio::PeerOverOurs, Some(v), Some(b)) if b > 0.0 => format!(" ({})", fmt_ratio(v / b)),
                (Ratio::OursOverPeer, Some(v), Some(b)) if v > 0.0 => format!(" ({})", fmt_ratio(b / v)),
                _ => String::new(),
            };
            let _ = write!(line, " {}{r} |", cell.text);
        }
        let _ = writeln!(out, "{line}");
    }
}

fn problem_cell(p: &Problem) -> Cell {
    let text = match p {
        Problem::NotApplicable(_) => "n/a".into(),
        Problem::Failed(_) => "FAIL".into(),
        Problem::TooSlow { done, total, .. } => {
            format!("> {} s ({:.0}% done)", BUDGET.as_secs(), 100.0 * *done as f64 / (*total).max(1) as f64)
        }
    };
    Cell { text, value: None }
}

/// Two decimals, or two significant digits for small ratios.
fn fmt_ratio(r: f64) -> String {
    if r >= 0.095 || r <= 0.0 {
        format!("{r:.2}×")
    } else {
        let decimals = (1.0 - r.log10().floor()).clamp(2.0, 12.0) as usize;
        format!("{r:.decimals$}×")
    }
}

fn stat_cell(s: &Stat, runs: usize) -> Cell {
    let mark = if s.runs < runs { format!(" †{}", s.runs) } else { String::new() };
    Cell { text: format!("{}{mark}", fmt_ms(s.median)), value: Some(s.median.as_secs_f64()) }
}

fn run_lib(name: &str, t: &Prepared, runs: usize, stages: Stages) -> (Measured, &'static str) {
    match name {
        "crdt-sync" => {
            (bench::<libs::crdt_sync_lib::Ours>(t, runs, stages), libs::crdt_sync_lib::Ours::notes())
        }
        "yrs" => (bench::<libs::yrs_lib::Yrs>(t, runs, stages), libs::yrs_lib::Yrs::notes()),
        "loro" => (bench::<libs::loro_lib::Loro>(t, runs, stages), libs::loro_lib::Loro::notes()),
        "diamond-types" => (bench::<libs::dt_lib::Dt>(t, runs, stages), libs::dt_lib::Dt::notes()),
        "automerge" => (bench::<libs::automerge_lib::Am>(t, runs, stages), libs::automerge_lib::Am::notes()),
        other => unreachable!("unknown library {other}"),
    }
}

fn crate_of(name: &str) -> &'static str {
    match name {
        "crdt-sync" => libs::crdt_sync_lib::Ours::CRATE,
        "yrs" => libs::yrs_lib::Yrs::CRATE,
        "loro" => libs::loro_lib::Loro::CRATE,
        "diamond-types" => libs::dt_lib::Dt::CRATE,
        _ => libs::automerge_lib::Am::CRATE,
    }
}

type Rows = Vec<(String, Vec<Cell>)>;
/// Builds one table's rows from a cell per measurement.
type RowsOf<'a> = dyn Fn(&dyn Fn(&Measured) -> Cell) -> Rows + 'a;

/// Section 6: live sync.
fn live_tables(out: &mut String, traces: &[String], rows: &RowsOf, runs: usize) {
    let _ = writeln!(out, "\n### 6. Live sync: writer → (server) → reader, one frame per transaction\n");
    let _ = writeln!(
        out,
        "A writer types every transaction of a sequential trace and sends its update as bytes; a reader \
         applies it before the next keystroke. crdt-sync: the real protocol, writer `ClientSession` → \
         `Server::in_memory` → reader `ClientSession`, whole frames counted (two hops: the server \
         decodes and applies too); peers: the library's incremental update, writer → reader (one \
         hop). Bytes per keystroke = bytes / trace patches."
    );
    let per_key = |bytes: usize, l: &Live| bytes as f64 / l.keystrokes.max(1) as f64;
    let bytes_cell = |v: f64| Cell { text: format!("{v:.2} B"), value: Some(v) };
    table(
        out,
        "6a. Live sync, whole run, ms (ratio = peer time / crdt-sync time: > 1 means crdt-sync is faster)",
        traces,
        &rows(&|m| match &m.live {
            Ok(l) => stat_cell(&l.stat, runs),
            Err(p) => problem_cell(p),
        }),
        Ratio::PeerOverOurs,
    );
    table(
        out,
        "6b. Live sync, bytes per keystroke sent by the writer (crdt-sync: frames writer → server; \
         peers: the updates) (ratio = crdt-sync / peer: > 1 means crdt-sync is larger)",
        traces,
        &rows(&|m| match &m.live {
            Ok(l) => bytes_cell(per_key(l.traffic.writer_bytes, l)),
            Err(p) => problem_cell(p),
        }),
        Ratio::OursOverPeer,
    );
    table(
        out,
        "6c. Live sync, bytes per keystroke received by the reader (crdt-sync: frames server → reader; \
         peers: the same updates) (ratio = crdt-sync / peer: > 1 means crdt-sync is larger)",
        traces,
        &rows(&|m| match &m.live {
            Ok(l) => bytes_cell(per_key(l.traffic.reader_bytes, l)),
            Err(p) => problem_cell(p),
        }),
        Ratio::OursOverPeer,
    );
    table(
        out,
        "6d. Live sync, back channel in bytes per keystroke: server → writer (acks) / reader → server \
         (receipt reports, pings) (no ratio; peers send none)",
        traces,
        &rows(&|m| match &m.live {
            Ok(l) if l.traffic.to_writer_bytes + l.traffic.from_reader_bytes == 0 => {
                Cell { text: "none".into(), value: None }
            }
            Ok(l) => Cell {
                text: format!(
                    "{:.2} B / {:.3} B",
                    per_key(l.traffic.to_writer_bytes, l),
                    per_key(l.traffic.from_reader_bytes, l)
                ),
                value: None,
            },
            Err(p) => problem_cell(p),
        }),
        Ratio::None,
    );
    table(
        out,
        "6e. Live sync, totals: frames (peers: updates) and bytes sent by the writer / received by the \
         reader (no ratio)",
        traces,
        &rows(&|m| match &m.live {
            Ok(l) => Cell {
                text: format!(
                    "{} / {} / {} / {}",
                    l.traffic.writer_frames,
                    fmt_kib(l.traffic.writer_bytes),
                    l.traffic.reader_frames,
                    fmt_kib(l.traffic.reader_bytes)
                ),
                value: None,
            },
            Err(p) => problem_cell(p),
        }),
        Ratio::None,
    );
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let wall = Instant::now();
    let mut out = String::new();
    let _ = writeln!(out, "## crdt-sync vs. peer CRDT libraries on the editing traces\n");
    let _ = writeln!(out, "{}", machine_facts());
    let versions: Vec<String> =
        args.libs.iter().map(|l| format!("{} {}", crate_of(l), crate_version(crate_of(l)))).collect();
    let _ = writeln!(out, "- crates: {}", versions.join(", "));
    let _ = writeln!(
        out,
        "- runs: median of {} (a stage whose first run exceeds {} s is not repeated: marked †N = N runs; a single run still going after {} s is abandoned: `> {} s`)",
        args.runs,
        SLOW.as_secs(),
        BUDGET.as_secs(),
        BUDGET.as_secs()
    );

    // results[lib][trace]
    let mut results: Vec<Vec<Measured>> = args.libs.iter().map(|_| Vec::new()).collect();
    let mut notes: Vec<&'static str> = vec![""; args.libs.len()];
    let mut trace_rows = Vec::new();
    for name in &args.traces {
        let path = args.dir.join(format!("{name}.json.gz"));
        eprintln!("loading {}", path.display());
        let prepared = trace_replay::load_trace(&path).and_then(|tr| Prepared::new(name, tr));
        let t = match prepared {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        trace_rows.push(format!(
            "| {name} | {} | {} | {} | {} | {} |",
            if t.plan.is_some() { "concurrent" } else { "sequential" },
            t.plan.as_ref().map_or(1, |p| p.agents),
            t.trace.txns.len(),
            t.trace.op_count(),
            t.trace.end_content.chars().count()
        ));
        if args.stages.classic {
            for (i, lib) in args.libs.iter().enumerate() {
                eprintln!("[{name}] {lib}");
                let (m, n) = run_lib(lib, &t, args.runs, args.stages);
                notes[i] = n;
                results[i].push(m);
            }
        } else {
            // Live sync alone: the libraries take turns, one run each per round, so that a
            // noisy stretch of the shared machine hits them all alike instead of one of them.
            let mut rounds: Vec<Option<Measured>> = args.libs.iter().map(|_| None).collect();
            let mut times: Vec<Vec<Duration>> = args.libs.iter().map(|_| Vec::new()).collect();
            for round in 0..args.runs {
                for (i, lib) in args.libs.iter().enumerate() {
                    if round > 0 && rounds[i].as_ref().is_none_or(|m| m.live.is_err()) {
                        continue;
                    }
                    eprintln!("[{name}] {lib} (round {})", round + 1);
                    let (m, n) = run_lib(lib, &t, 1, args.stages);
                    notes[i] = n;
                    if let Ok(live) = &m.live {
                        times[i].push(live.stat.median);
                    }
                    if rounds[i].is_none() || m.live.is_err() {
                        rounds[i] = Some(m);
                    }
                }
            }
            for (i, m) in rounds.into_iter().enumerate() {
                let Some(mut m) = m else { continue };
                if let Ok(live) = &mut m.live {
                    live.stat = Stat::of(std::mem::take(&mut times[i]));
                }
                results[i].push(m);
            }
        }
    }

    let _ = writeln!(out, "\n### Traces\n");
    let _ = writeln!(
        out,
        "| trace | kind | agents | txns | patches | final chars |\n|---|---|---:|---:|---:|---:|"
    );
    for r in &trace_rows {
        let _ = writeln!(out, "{r}");
    }

    let rows = |f: &dyn Fn(&Measured) -> Cell| -> Vec<(String, Vec<Cell>)> {
        args.libs.iter().zip(&results).map(|(l, ms)| (l.clone(), ms.iter().map(f).collect())).collect()
    };
    let runs = args.runs;
    let time_dir = "ratio = peer time / crdt-sync time: > 1 means crdt-sync is faster";
    let size_dir = "ratio = crdt-sync / peer: > 1 means crdt-sync is larger";
    if args.stages.classic {
        table(
            &mut out,
            &format!("1. Local replay, ms ({time_dir})"),
            &args.traces,
            &rows(&|m| match &m.local {
                Ok((s, _)) => stat_cell(s, runs),
                Err(p) => problem_cell(p),
            }),
            Ratio::PeerOverOurs,
        );
        table(
            &mut out,
            &format!("2. Remote replay: fresh replica imports every message, ms ({time_dir})"),
            &args.traces,
            &rows(&|m| match &m.remote {
                Ok(s) => stat_cell(s, runs),
                Err(p) => problem_cell(p),
            }),
            Ratio::PeerOverOurs,
        );
        table(
            &mut out,
            "2b. Messages replayed remotely: count / total size (no ratio)",
            &args.traces,
            &rows(&|m| match &m.messages {
                Ok(msg) => Cell { text: format!("{} / {}", msg.count, fmt_kib(msg.bytes)), value: None },
                Err(p) => problem_cell(p),
            }),
            Ratio::None,
        );
        for (title, pick) in [
            ("3a. Encoded size with full history, raw", (|s: &Sizes| s.raw) as fn(&Sizes) -> usize),
            (
                "3b. Encoded size, lz4 (crdt-sync: `encode_with(lz4)`; peers: `lz4_flex::block::compress(raw)`)",
                |s| s.lz4,
            ),
            ("3c. Encoded size, library's default save", |s| s.default),
        ] {
            table(
                &mut out,
                &format!("{title} ({size_dir})"),
                &args.traces,
                &rows(&|m| match &m.sizes {
                    Ok(s) => Cell { text: fmt_kib(pick(s)), value: Some(pick(s) as f64) },
                    Err(p) => problem_cell(p),
                }),
                Ratio::OursOverPeer,
            );
        }
        table(
            &mut out,
            &format!("4. Decode + read: load the raw encoding and read the text, ms ({time_dir})"),
            &args.traces,
            &rows(&|m| match &m.load {
                Ok((s, _)) => stat_cell(s, runs),
                Err(p) => problem_cell(p),
            }),
            Ratio::PeerOverOurs,
        );
        table(
            &mut out,
            &format!("5a. Peak heap during local replay, above the level before it ({size_dir})"),
            &args.traces,
            &rows(&|m| match &m.local {
                Ok((_, peak)) => Cell { text: fmt_mib(*peak), value: Some(*peak as f64) },
                Err(p) => problem_cell(p),
            }),
            Ratio::OursOverPeer,
        );
        table(
            &mut out,
            &format!("5b. Retained heap of the loaded document after load + read ({size_dir})"),
            &args.traces,
            &rows(&|m| match &m.load {
                Ok((_, r)) => Cell { text: fmt_mib(*r), value: Some(*r as f64) },
                Err(p) => problem_cell(p),
            }),
            Ratio::OursOverPeer,
        );
    }
    live_tables(&mut out, &args.traces, &rows, runs);

    let mut failed = false;
    let mut problems = Vec::new();
    for (lib, ms) in args.libs.iter().zip(&results) {
        for (trace, m) in args.traces.iter().zip(ms) {
            let stages = [
                ("local replay", m.local.as_ref().err()),
                ("remote replay", m.remote.as_ref().err()),
                ("encode", m.sizes.as_ref().err()),
                ("decode + read", m.load.as_ref().err()),
                ("live sync", m.live.as_ref().err()),
            ];
            let mut seen: Vec<String> = Vec::new();
            for (stage, p) in stages {
                let Some(p) = p else { continue };
                if !args.stages.classic && stage != "live sync" {
                    continue;
                }
                let (kind, why) = match p {
                    Problem::NotApplicable(w) => ("n/a", w),
                    Problem::TooSlow { detail, .. } => ("too slow", detail),
                    Problem::Failed(w) => {
                        failed = true;
                        ("FAIL", w)
                    }
                };
                if !seen.contains(why) {
                    problems.push(format!("- {lib} / {trace} / {stage}: **{kind}**: {why}"));
                    seen.push(why.clone());
                }
            }
        }
    }
    if !problems.is_empty() {
        let _ = writeln!(out, "\n### n/a and failures\n\n{}", problems.join("\n"));
    }
    let _ = writeln!(out, "\n### How each library was driven\n");
    for (lib, n) in args.libs.iter().zip(&notes) {
        if !n.is_empty() {
            let _ = writeln!(out, "- {n}");
        } else {
            let _ = writeln!(out, "- {lib}");
        }
    }
    let _ = writeln!(out, "\nWall time of this run: {:.1} s", wall.elapsed().as_secs_f64());
    println!("{out}");
    if failed {
        eprintln!("FAILED: at least one library produced a wrong result or an error (see the report)");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
