//! One adapter per library, and the replay drivers they share.
//!
//! Every adapter implements [`Lib`]. yrs, Loro and Automerge implement the smaller [`Replica`]
//! and use the shared drivers [`replay_sequential`] / [`replay_concurrent`]; diamond-types
//! (one shared oplog, a branch per agent) and crdt-sync (the crate's own replay code) have
//! their own.

pub mod automerge_lib;
pub mod crdt_sync_lib;
pub mod crdt_sync_live;
pub mod dt_lib;
pub mod loro_lib;
pub mod yrs_lib;

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::trace_replay::Trace;

/// Why a library has no number for a trace.
#[derive(Debug, Clone)]
pub enum Problem {
    /// The library cannot replay this trace faithfully; printed as `n/a`.
    NotApplicable(String),
    /// Something went wrong (error, panic, wrong final text); printed as `FAIL` and makes the
    /// run exit non-zero.
    Failed(String),
    /// A single run passed the time budget and was abandoned after `done` of `total` steps;
    /// printed as `> N s`.
    TooSlow { detail: String, done: usize, total: usize },
}

impl Problem {
    pub fn failed(e: impl std::fmt::Display) -> Self {
        Problem::Failed(e.to_string())
    }
}

thread_local! {
    static DEADLINE: Cell<Option<(Instant, Duration)>> = const { Cell::new(None) };
}

/// Give the current run a time budget (checked by the message loops, see [`check_deadline`]).
pub fn set_budget(budget: Option<Duration>) {
    DEADLINE.with(|d| d.set(budget.map(|b| (Instant::now(), b))));
}

/// Abandon the current run if it is over its budget; `done`/`total` say how far it got.
pub fn check_deadline(done: usize, total: usize, what: &str) -> Result<(), Problem> {
    if !done.is_multiple_of(256) {
        return Ok(());
    }
    match DEADLINE.with(Cell::get) {
        Some((start, budget)) if start.elapsed() > budget => Err(Problem::TooSlow {
            detail: format!(
                "{what}: abandoned after {:.0} s with {done} of {total} done",
                start.elapsed().as_secs_f64()
            ),
            done,
            total,
        }),
        _ => Ok(()),
    }
}

/// A trace plus what every adapter needs to replay it.
pub struct Prepared {
    pub name: String,
    pub trace: Trace,
    /// Set for concurrent traces.
    pub plan: Option<ConcPlan>,
    /// Whether any text of the trace has characters outside the Basic Multilingual Plane (where
    /// UTF-16 offsets differ from Unicode scalar positions).
    pub has_astral: bool,
    /// `start_content` as a single insert patch, if any.
    pub start_patch: Vec<(usize, usize, String)>,
}

/// The causal structure of a concurrent trace, in "per-agent transaction counts": a version is
/// `v[b]` = how many of agent `b`'s transactions it includes. That is exact because every
/// agent's transactions form a chain (checked when the plan is built).
pub struct ConcPlan {
    pub agents: usize,
    /// Agent of each transaction.
    pub agent: Vec<usize>,
    /// Version each transaction is made at: the union of its parents' versions.
    pub before: Vec<Vec<u32>>,
    /// The final version (every transaction).
    pub full: Vec<u32>,
    /// Transaction indices of each agent, in order.
    pub by_agent: Vec<Vec<usize>>,
    /// Per transaction: its parents' indices (copied from the trace).
    pub parents: Vec<Vec<usize>>,
}

impl Prepared {
    pub fn new(name: &str, trace: Trace) -> Result<Self, String> {
        let has_astral =
            trace.end_content.chars().chain(trace.start_content.chars()).any(|c| c as u32 > 0xFFFF)
                || trace
                    .txns
                    .iter()
                    .flat_map(|t| &t.patches)
                    .any(|(_, _, s)| s.chars().any(|c| c as u32 > 0xFFFF));
        let plan = if trace.is_concurrent() {
            if !trace.start_content.is_empty() {
                return Err(format!("{name}: concurrent trace with start content is not supported"));
            }
            Some(ConcPlan::build(&trace).map_err(|e| format!("{name}: {e}"))?)
        } else {
            None
        };
        let start_patch =
            if trace.start_content.is_empty() { vec![] } else { vec![(0, 0, trace.start_content.clone())] };
        Ok(Prepared { name: name.to_string(), trace, plan, has_astral, start_patch })
    }
}

impl ConcPlan {
    fn build(trace: &Trace) -> Result<Self, String> {
        let agents = trace
            .num_agents
            .unwrap_or_else(|| trace.txns.iter().filter_map(|t| t.agent).max().unwrap_or(0) + 1);
        let mut agent = Vec::with_capacity(trace.txns.len());
        let mut before = Vec::with_capacity(trace.txns.len());
        let mut after: Vec<Vec<u32>> = Vec::with_capacity(trace.txns.len());
        let mut by_agent = vec![Vec::new(); agents];
        let mut parents_all = Vec::with_capacity(trace.txns.len());
        for (i, txn) in trace.txns.iter().enumerate() {
            let a = txn.agent.unwrap_or(0);
            if a >= agents {
                return Err(format!("txn {i}: agent {a} out of range"));
            }
            let parents = txn.parents.clone().unwrap_or_default();
            let mut v = vec![0u32; agents];
            for &p in &parents {
                let pv: &Vec<u32> =
                    after.get(p).ok_or(format!("txn {i}: parent {p} is not an earlier txn"))?;
                for (x, y) in v.iter_mut().zip(pv) {
                    *x = (*x).max(*y);
                }
            }
            if v[a] as usize != by_agent[a].len() {
                return Err(format!(
                    "txn {i}: agent {a}'s earlier transactions are not all among its parents"
                ));
            }
            let mut w = v.clone();
            w[a] += 1;
            by_agent[a].push(i);
            agent.push(a);
            before.push(v);
            after.push(w);
            parents_all.push(parents);
        }
        let full = by_agent.iter().map(|t| t.len() as u32).collect();
        Ok(ConcPlan { agents, agent, before, full, by_agent, parents: parents_all })
    }

    /// Whether version `a` is included in version `b`.
    pub fn leq(a: &[u32], b: &[u32]) -> bool {
        a.iter().zip(b).all(|(x, y)| x <= y)
    }

    /// Transactions in `target` but not in `have`, in trace (causal) order.
    pub fn missing(&self, have: &[u32], target: &[u32]) -> Vec<usize> {
        let mut out: Vec<usize> = (0..self.agents)
            .flat_map(|b| {
                let from = have[b].min(target[b]) as usize;
                self.by_agent[b][from..target[b] as usize].iter().copied()
            })
            .collect();
        out.sort_unstable();
        out
    }
}

/// A library measured by the harness.
pub trait Lib {
    type Doc;
    /// Row label.
    const NAME: &'static str;
    /// Package name in Cargo.lock, for the version line.
    const CRATE: &'static str;
    /// Replay the trace locally (timed). Returns every replica; each must hold the final text.
    fn local_replay(t: &Prepared) -> Result<Vec<Self::Doc>, Problem>;
    /// The trace's changes as update messages, one per change, in causal order (setup, untimed).
    fn record_updates(t: &Prepared) -> Result<Vec<Vec<u8>>, Problem>;
    /// A fresh replica importing every message in order (timed).
    fn remote_replay(updates: &[Vec<u8>]) -> Result<Self::Doc, Problem>;
    fn text(doc: &Self::Doc) -> String;
    /// The whole document with full history, the library's encoding with its own optional
    /// compression off.
    fn encode_raw(doc: &Self::Doc) -> Vec<u8>;
    /// `encode_raw` compressed with lz4 (block format).
    fn encode_lz4(_doc: &Self::Doc, raw: &[u8]) -> Vec<u8> {
        lz4_flex::block::compress(raw)
    }
    /// The library's default full save.
    fn encode_default(doc: &Self::Doc) -> Vec<u8>;
    /// Load what `encode_raw` produced.
    fn load(bytes: &[u8]) -> Result<Self::Doc, Problem>;
    /// Notes printed under the tables.
    fn notes() -> &'static str {
        ""
    }
    /// Reason to skip a trace up front.
    fn not_applicable(_t: &Prepared) -> Option<String> {
        None
    }
    /// Live sync (timed): a writer types the trace, one library transaction per trace
    /// transaction, and every transaction's update travels as bytes to a reader that applies
    /// it before the next keystroke. Sequential traces only.
    fn live_sync(t: &Prepared) -> Result<LiveRun, Problem>;
}

/// Read the final texts of a live-sync run, by replica; called once the clock has stopped.
pub type FinalTexts = Box<dyn FnOnce() -> Vec<(&'static str, String)>>;

/// What one live-sync run put on the wire. A peer library has one hop (writer → reader), so
/// its update bytes are both what the writer sends and what the reader receives, and it has
/// no back channel; crdt-sync goes through a server and counts whole frames per direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Frames (peers: updates) the writer sent, and their bytes.
    pub writer_frames: usize,
    pub writer_bytes: usize,
    /// Frames (peers: updates) the reader received, and their bytes.
    pub reader_frames: usize,
    pub reader_bytes: usize,
    /// crdt-sync only: bytes server → writer (acks) and reader → server (receipt reports,
    /// pings).
    pub to_writer_bytes: usize,
    pub from_reader_bytes: usize,
}

impl Traffic {
    /// One hop: every update is sent once and received once.
    pub fn one_hop(updates: usize, bytes: usize) -> Self {
        Traffic {
            writer_frames: updates,
            writer_bytes: bytes,
            reader_frames: updates,
            reader_bytes: bytes,
            ..Traffic::default()
        }
    }
}

/// One live-sync run: its traffic, and the final texts to check.
pub struct LiveRun {
    pub traffic: Traffic,
    pub finals: FinalTexts,
}

/// A replica of a library that syncs through update messages.
pub trait Replica: Sized {
    /// A replica with identity `agent` (trace agents are 0.., observers use large numbers).
    fn create(agent: u64) -> Result<Self, Problem>;
    /// Import one update message.
    fn apply(&mut self, update: &[u8]) -> Result<(), Problem>;
    /// Import the messages one sync delivers, in order (as crdt-sync's replay hands a replica
    /// all its missing changes in one `apply_changes`). Default: one `apply` each.
    fn apply_batch(&mut self, updates: &[&[u8]]) -> Result<(), Problem> {
        updates.iter().try_for_each(|u| self.apply(u))
    }
    /// Apply one trace transaction (delete then insert, per patch) as one library transaction;
    /// returns the transaction's update message if `record`.
    fn edit(&mut self, patches: &[(usize, usize, String)], record: bool) -> Result<Option<Vec<u8>>, Problem>;
    fn text(&self) -> String;
}

/// Identity of the fresh replica in remote replay and of loaded documents.
pub const OBSERVER: u64 = 1_000;

/// Type the whole trace on one replica. Returns the replica and, if `record`, one message per
/// transaction.
pub fn replay_sequential<R: Replica>(t: &Prepared, record: bool) -> Result<(R, Vec<Vec<u8>>), Problem> {
    let mut r = R::create(0)?;
    let mut updates = Vec::new();
    let start = (!t.start_patch.is_empty()).then_some(&t.start_patch);
    let total = t.trace.txns.len();
    for (i, patches) in start.into_iter().chain(t.trace.txns.iter().map(|x| &x.patches)).enumerate() {
        check_deadline(i, total, "local replay")?;
        if let Some(u) = r.edit(patches, record)? {
            updates.push(u);
        }
    }
    Ok((r, updates))
}

/// One replica per agent. Before each transaction the agent's replica imports exactly the
/// messages of the transactions its parents include and it lacks (in trace order, as one
/// batch: [`Replica::apply_batch`]), then makes the edit and publishes its message. If the
/// replica has already seen more than the parents (never the case in the shipped traces), the
/// edit is made on a fresh replica of the same agent synced to exactly the parents, and its
/// message is imported back. At the end every replica imports everything it lacks.
pub fn replay_concurrent<R: Replica>(t: &Prepared) -> Result<(Vec<R>, Vec<Vec<u8>>), Problem> {
    let plan = t.plan.as_ref().ok_or_else(|| Problem::failed("not a concurrent trace"))?;
    let n = plan.agents;
    let mut replicas = (0..n).map(|a| R::create(a as u64)).collect::<Result<Vec<_>, _>>()?;
    let mut have = vec![vec![0u32; n]; n];
    let mut updates: Vec<Vec<u8>> = Vec::with_capacity(t.trace.txns.len());
    for (i, txn) in t.trace.txns.iter().enumerate() {
        check_deadline(i, t.trace.txns.len(), "local replay")?;
        let a = plan.agent[i];
        let target = &plan.before[i];
        let message = if ConcPlan::leq(&have[a], target) {
            replicas[a].apply_batch(&batch(&updates, plan.missing(&have[a], target)))?;
            have[a].clone_from(target);
            replicas[a].edit(&txn.patches, true)?
        } else {
            let mut fork = R::create(a as u64)?;
            fork.apply_batch(&batch(&updates, plan.missing(&vec![0; n], target)))?;
            let message = fork.edit(&txn.patches, true)?;
            let mut missing = batch(&updates, plan.missing(&have[a], target));
            missing.extend(message.as_deref());
            replicas[a].apply_batch(&missing)?;
            for (x, y) in have[a].iter_mut().zip(target) {
                *x = (*x).max(*y);
            }
            message
        };
        have[a][a] += 1;
        updates.push(message.ok_or_else(|| Problem::failed("edit returned no message"))?);
    }
    for (a, replica) in replicas.iter_mut().enumerate() {
        replica.apply_batch(&batch(&updates, plan.missing(&have[a], &plan.full)))?;
    }
    Ok((replicas, updates))
}

/// The messages of the given transactions.
fn batch(updates: &[Vec<u8>], txns: Vec<usize>) -> Vec<&[u8]> {
    txns.into_iter().map(|j| updates[j].as_slice()).collect()
}

/// The transactions a writer types in live sync: `start_content` (if any) as one insert, then
/// every trace transaction.
pub fn live_transactions(t: &Prepared) -> impl Iterator<Item = &[(usize, usize, String)]> {
    let start = (!t.start_patch.is_empty()).then_some(t.start_patch.as_slice());
    start.into_iter().chain(t.trace.txns.iter().map(|x| x.patches.as_slice()))
}

/// The reason live sync skips concurrent traces.
pub fn live_not_applicable(t: &Prepared) -> Option<Problem> {
    t.plan.is_some().then(|| {
        Problem::NotApplicable(
            "live sync: one writer types a sequential trace; this trace is concurrent".into(),
        )
    })
}

/// `live_sync` for [`Replica`] libraries: the writer's update of each transaction (the same
/// message as in remote replay) is applied on the reader right away.
pub fn replica_live_sync<R: Replica + 'static>(t: &Prepared) -> Result<LiveRun, Problem> {
    if let Some(p) = live_not_applicable(t) {
        return Err(p);
    }
    let mut writer = R::create(0)?;
    let mut reader = R::create(OBSERVER)?;
    let total = t.trace.txns.len();
    let (mut updates, mut bytes) = (0, 0);
    for (i, patches) in live_transactions(t).enumerate() {
        check_deadline(i, total, "live sync")?;
        let update =
            writer.edit(patches, true)?.ok_or_else(|| Problem::failed("edit returned no message"))?;
        updates += 1;
        bytes += update.len();
        reader.apply(&update)?;
    }
    let finals: FinalTexts = Box::new(move || vec![("writer", writer.text()), ("reader", reader.text())]);
    Ok(LiveRun { traffic: Traffic::one_hop(updates, bytes), finals })
}

/// `local_replay` for [`Replica`] libraries.
pub fn replica_local_replay<R: Replica>(t: &Prepared) -> Result<Vec<R>, Problem> {
    if t.plan.is_some() {
        Ok(replay_concurrent::<R>(t)?.0)
    } else {
        Ok(vec![replay_sequential::<R>(t, false)?.0])
    }
}

/// `record_updates` for [`Replica`] libraries.
pub fn replica_record_updates<R: Replica>(t: &Prepared) -> Result<Vec<Vec<u8>>, Problem> {
    if t.plan.is_some() { Ok(replay_concurrent::<R>(t)?.1) } else { Ok(replay_sequential::<R>(t, true)?.1) }
}

/// `remote_replay` for [`Replica`] libraries.
pub fn replica_remote_replay<R: Replica>(updates: &[Vec<u8>]) -> Result<R, Problem> {
    let mut r = R::create(OBSERVER)?;
    for (i, u) in updates.iter().enumerate() {
        check_deadline(i, updates.len(), "remote replay")?;
        r.apply(u)?;
    }
    Ok(r)
}
