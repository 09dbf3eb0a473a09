//! Loading and replaying the shared editing traces; used by the trace tool, the trace tests
//! and the benches (each includes this file with `#[path]`).
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};

use crdt_sync::{Document, Frontier, PeerId, VersionVector};
use serde::Deserialize;

/// The folder holding the shared traces, next to the crate.
pub fn traces_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/traces")
}

/// A trace: sequential (`txns` without `parents`) or concurrent.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trace {
    #[serde(default)]
    pub start_content: String,
    pub end_content: String,
    #[serde(default)]
    pub num_agents: Option<usize>,
    pub txns: Vec<Txn>,
}

#[derive(Clone, Deserialize)]
pub struct Txn {
    /// Wall-clock time of the transaction, parsed when the trace is read (input data, like
    /// the patches, so the replay does not time the parsing).
    #[serde(default, rename = "time", deserialize_with = "unix_ms")]
    pub time_ms: Option<u64>,
    #[serde(default)]
    pub parents: Option<Vec<usize>>,
    #[serde(default)]
    pub agent: Option<usize>,
    pub patches: Vec<(usize, usize, String)>,
}

impl Trace {
    /// Whether transactions name their parents (one replica per agent).
    pub fn is_concurrent(&self) -> bool {
        self.txns.iter().any(|t| t.parents.is_some())
    }

    /// Total number of patches.
    pub fn op_count(&self) -> usize {
        self.txns.iter().map(|t| t.patches.len()).sum()
    }

    /// Replay the trace; returns every replica (one for sequential traces).
    pub fn replay(&self) -> Result<Vec<Document>, String> {
        if self.is_concurrent() { replay_concurrent(self) } else { replay_sequential(self).map(|d| vec![d]) }
    }
}

/// Read a gzipped JSON trace.
pub fn load_trace(path: &Path) -> Result<Trace, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut json = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut json)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&json).map_err(|e| format!("{}: {e}", path.display()))
}

/// Apply one transaction's patches as one crdt-sync transaction.
pub fn apply_patches(doc: &mut Document, txn: &Txn) -> Result<(), String> {
    if let Some(ms) = txn.time_ms {
        doc.set_wall_clock(ms);
    }
    let mut t = doc.transact();
    let mut text = t.text("text");
    // Empty parts are skipped, as an editor would skip them (and as benches/peers drives the
    // other libraries).
    for (pos, del, ins) in &txn.patches {
        if *del > 0 {
            text.delete(*pos, *del).map_err(|e| format!("delete {pos}+{del}: {e}"))?;
        }
        if !ins.is_empty() {
            text.insert(*pos, ins).map_err(|e| format!("insert at {pos}: {e}"))?;
        }
    }
    Ok(())
}

/// Type the whole trace on one replica.
pub fn replay_sequential(trace: &Trace) -> Result<Document, String> {
    let mut doc = Document::new(PeerId::new(1));
    if !trace.start_content.is_empty() {
        doc.transact().text("text").insert(0, &trace.start_content).map_err(|e| e.to_string())?;
    }
    for txn in &trace.txns {
        apply_patches(&mut doc, txn)?;
    }
    Ok(doc)
}

/// One replica per agent plus a hub that holds every change (the "network").
pub fn replay_concurrent(trace: &Trace) -> Result<Vec<Document>, String> {
    let agents =
        trace.num_agents.unwrap_or_else(|| trace.txns.iter().filter_map(|t| t.agent).max().unwrap_or(0) + 1);
    let mut hub = Document::new(PeerId::new(0));
    let mut replicas: Vec<Document> = (0..agents).map(|a| Document::new(PeerId::new(a as u64 + 1))).collect();
    // The version each transaction produced, as heads.
    let mut versions: Vec<Frontier> = Vec::with_capacity(trace.txns.len());
    // The same versions as vectors, so that a transaction's target version is a cheap merge of
    // its parents' instead of a walk of the history.
    let mut vectors: Vec<VersionVector> = Vec::with_capacity(trace.txns.len());
    for (index, txn) in trace.txns.iter().enumerate() {
        let agent = txn.agent.unwrap_or(0);
        let replica = replicas.get_mut(agent).ok_or(format!("txn {index}: agent {agent} out of range"))?;
        let parents = txn.parents.as_deref().unwrap_or(&[]);
        let heads = Frontier::from_ids(
            parents
                .iter()
                .map(|&p| versions.get(p).ok_or(format!("txn {index}: parent {p} not seen yet")))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flat_map(|f| f.ids().to_vec()),
        );
        if replica.frontier() != &heads {
            let mut target = VersionVector::new();
            for &p in parents {
                target.merge(&vectors[p]);
            }
            if target.includes(replica.version()) {
                // The replica is behind its parents: bring in exactly what they include.
                let missing = hub.changes_between(replica.version(), &target).map_err(|e| e.to_string())?;
                replica.apply_changes(missing).map_err(|e| format!("txn {index}: {e}"))?;
            } else {
                // The replica has seen more than the parents: edit on a fork at the parents.
                // Its own earlier changes are always among the parents, so the fork's new ids
                // cannot collide with changes the replica already made.
                let mut fork =
                    hub.fork_at(&heads, replica.peer_id()).map_err(|e| format!("txn {index}: {e}"))?;
                apply_patches(&mut fork, txn)?;
                replica.merge(&fork).map_err(|e| format!("txn {index}: {e}"))?;
                hub.merge(&fork).map_err(|e| format!("txn {index}: {e}"))?;
                versions.push(fork.frontier().clone());
                vectors.push(fork.version().clone());
                continue;
            }
            if replica.frontier() != &heads {
                return Err(format!("txn {index}: replica could not reach its parents' version"));
            }
        }
        let before = replica.version().clone();
        apply_patches(replica, txn)?;
        let made = replica.changes_since(&before).map_err(|e| e.to_string())?;
        hub.apply_changes(made).map_err(|e| format!("txn {index}: {e}"))?;
        versions.push(replica.frontier().clone());
        vectors.push(replica.version().clone());
    }
    for replica in &mut replicas {
        replica.merge(&hub).map_err(|e| e.to_string())?;
    }
    Ok(replicas)
}

fn unix_ms<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.as_deref().and_then(parse_unix_ms))
}

/// Parse the traces' RFC 3339 times (`2021-04-19T06:06:58.219Z`, `1970-01-01T00:00:00+00:00`).
pub fn parse_unix_ms(time: &str) -> Option<u64> {
    let b = time.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { time.get(r)?.parse().ok() };
    if b.len() < 19 {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut ms = 0;
    let mut rest = &time[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        // Milliseconds are the first three fractional digits, padded with zeros.
        for i in 0..3 {
            ms = ms * 10 + frac.as_bytes().get(i).filter(|_| i < digits).map_or(0, |d| i64::from(d - b'0'));
        }
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "" | "Z" => 0,
        _ => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (rest.get(1..3)?.parse::<i64>().ok()? * 60 + rest.get(4..6)?.parse::<i64>().ok()?)
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    u64::try_from(secs * 1000 + ms).ok()
}
