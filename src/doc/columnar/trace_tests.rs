//! The real editing traces (`../shared/traces/*.json.gz`) round-trip through the columnar
//! format, and their histories encode small. Without the traces these tests skip with a message.
//!
//! Run with `--nocapture` (in release for realistic timings) to see sizes and times.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::wire::Reader;
use super::{decode_changes, encode_changes};
use crate::doc::change::Change;
use crate::{Document, Frontier, PeerId, VersionVector};

// ---- trace replay -----------------------------------------------------------------------------
//
// A port of `examples/support/trace_replay.rs` (which the integration tests include with
// `#[path]`): that file names the crate `crdt_sync`, a name unit tests inside the library cannot
// resolve, so the few functions needed are repeated here with `crate` paths.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Trace {
    #[serde(default)]
    start_content: String,
    end_content: String,
    #[serde(default)]
    num_agents: Option<usize>,
    txns: Vec<Txn>,
}

#[derive(Deserialize)]
struct Txn {
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    parents: Option<Vec<usize>>,
    #[serde(default)]
    agent: Option<usize>,
    patches: Vec<(usize, usize, String)>,
}

fn load_trace(path: &Path) -> Trace {
    let file = std::fs::File::open(path).unwrap();
    let mut json = String::new();
    flate2::read::GzDecoder::new(file).read_to_string(&mut json).unwrap();
    serde_json::from_str(&json).unwrap()
}

fn apply_patches(doc: &mut Document, txn: &Txn) {
    if let Some(ms) = txn.time.as_deref().and_then(parse_unix_ms) {
        doc.set_wall_clock(ms);
    }
    let mut t = doc.transact();
    let mut text = t.text("text");
    for (pos, del, ins) in &txn.patches {
        text.delete(*pos, *del).unwrap();
        text.insert(*pos, ins).unwrap();
    }
}

fn replay_sequential(trace: &Trace) -> Document {
    let mut doc = Document::new(PeerId::new(1));
    if !trace.start_content.is_empty() {
        doc.transact().text("text").insert(0, &trace.start_content).unwrap();
    }
    for txn in &trace.txns {
        apply_patches(&mut doc, txn);
    }
    doc
}

/// One replica per agent at exactly its transactions' parents, plus a hub holding everything.
fn replay_concurrent(trace: &Trace) -> Document {
    let agents =
        trace.num_agents.unwrap_or_else(|| trace.txns.iter().filter_map(|t| t.agent).max().unwrap_or(0) + 1);
    let mut hub = Document::new(PeerId::new(0));
    let mut replicas: Vec<Document> = (0..agents).map(|a| Document::new(PeerId::new(a as u64 + 1))).collect();
    let mut versions: Vec<Frontier> = Vec::with_capacity(trace.txns.len());
    let mut vectors: Vec<VersionVector> = Vec::with_capacity(trace.txns.len());
    for txn in &trace.txns {
        let replica = &mut replicas[txn.agent.unwrap_or(0)];
        let parents = txn.parents.as_deref().unwrap_or(&[]);
        let heads = Frontier::from_ids(parents.iter().flat_map(|&p| versions[p].ids().to_vec()));
        if replica.frontier() != &heads {
            let mut target = VersionVector::new();
            for &p in parents {
                target.merge(&vectors[p]);
            }
            if target.includes(replica.version()) {
                let missing: Vec<Change> = hub
                    .changes_since(replica.version())
                    .unwrap()
                    .into_iter()
                    .filter(|c| target.contains_span(&c.span()))
                    .collect();
                replica.apply_changes(missing).unwrap();
            } else {
                let mut fork = hub.fork_at(&heads, replica.peer_id()).unwrap();
                apply_patches(&mut fork, txn);
                replica.merge(&fork).unwrap();
                hub.merge(&fork).unwrap();
                versions.push(fork.frontier().clone());
                vectors.push(fork.version().clone());
                continue;
            }
        }
        let before = replica.version().clone();
        apply_patches(replica, txn);
        hub.apply_changes(replica.changes_since(&before).unwrap()).unwrap();
        versions.push(replica.frontier().clone());
        vectors.push(replica.version().clone());
    }
    hub
}

/// The traces' RFC 3339 times in Unix milliseconds.
fn parse_unix_ms(time: &str) -> Option<u64> {
    let num = |r: std::ops::Range<usize>| -> Option<i64> { time.get(r)?.parse().ok() };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut ms = 0;
    let mut rest = time.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(char::is_ascii_digit).collect();
        ms = format!("{digits:0<3}")[..3].parse().ok()?;
        rest = &frac[digits.len()..];
    }
    let offset_min = match rest {
        "" | "Z" => 0,
        _ => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (rest.get(1..3)?.parse::<i64>().ok()? * 60 + rest.get(4..6)?.parse::<i64>().ok()?)
        }
    };
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    u64::try_from(secs * 1000 + ms).ok()
}

// ---- the tests --------------------------------------------------------------------------------

fn trace_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../shared/traces/{name}.json.gz"))
}

#[allow(clippy::disallowed_methods)] // measuring real time is the point here
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let value = f();
    (value, started.elapsed())
}

/// Replay, round-trip the whole history, and return its encoded size.
fn check_trace(name: &str) -> Option<usize> {
    let path = trace_path(name);
    if !path.exists() {
        eprintln!("skipping {name}: {} not found", path.display());
        return None;
    }
    let trace = load_trace(&path);
    let doc = if trace.txns.iter().any(|t| t.parents.is_some()) {
        replay_concurrent(&trace)
    } else {
        replay_sequential(&trace)
    };
    assert_eq!(doc.text("text").to_string(), trace.end_content, "{name}: replay");
    let changes = doc.changes_since(&VersionVector::new()).unwrap();
    let refs: Vec<&Change> = changes.iter().collect();

    let (bytes, encode_time) = timed(|| encode_changes(&refs));
    let (decoded, decode_time) = timed(|| decode_changes(&bytes, 256 << 20).unwrap());
    assert!(decoded == changes, "{name}: round trip differs");
    let lz4 = lz4_flex::block::compress(&bytes).len();
    // The format this one replaces, for comparison.
    let (postcard, postcard_encode) = timed(|| postcard::to_allocvec(&refs).unwrap());
    let (_, postcard_decode) = timed(|| postcard::from_bytes::<Vec<Change>>(&postcard).unwrap());
    eprintln!(
        "{name}: {} changes, {} ops: columnar {} bytes (lz4 of it {lz4}), postcard {}; \
         encode {encode_time:.1?}, decode {decode_time:.1?} (postcard {postcard_encode:.1?}, \
         {postcard_decode:.1?})\n  column blocks (stored, raw): {:?}",
        changes.len(),
        changes.iter().map(Change::op_count).sum::<usize>(),
        bytes.len(),
        postcard.len(),
        column_sizes(&bytes),
    );
    Some(bytes.len())
}

/// `(stored, raw)` bytes of each column block, for the report.
fn column_sizes(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut input = Reader::new(bytes);
    input.u8().unwrap();
    input.varint().unwrap();
    for _ in 0..input.varint().unwrap() {
        input.varint().unwrap();
    }
    for _ in 0..input.varint().unwrap() {
        if input.u8().unwrap() & super::CHILD_CONTAINER == 0 {
            input.str().unwrap();
        } else {
            input.varint().unwrap();
            input.varint().unwrap();
        }
    }
    (0..super::COLUMN_COUNT)
        .map(|_| {
            let before = input.remaining();
            let header = input.varint().unwrap();
            let stored = (header >> 1) as usize;
            let raw = if header & 1 == 1 { input.varint().unwrap() as usize } else { stored };
            input.bytes(stored).unwrap();
            (before - input.remaining(), raw)
        })
        .collect()
}

#[test]
fn automerge_paper_history_is_small() {
    if let Some(size) = check_trace("automerge-paper") {
        // Automerge gets 129 KB with DEFLATE'd columns; keep a margin against noise in the
        // trace replay (the measured size is in the module's report).
        assert!(size < 200_000, "automerge-paper: {size} bytes");
    }
}

#[test]
fn sveltecomponent_history_round_trips() {
    check_trace("sveltecomponent");
}

#[test]
fn json_crdt_blog_post_history_round_trips() {
    check_trace("json-crdt-blog-post");
}

#[test]
fn friendsforever_concurrent_history_round_trips() {
    check_trace("friendsforever");
}
