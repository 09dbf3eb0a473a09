//! Replaying a trace through the network simulator: writers type the trace into their
//! client sessions, the server fans every transaction out, receivers only listen.
//!
//! Included by the trace tool next to `trace_replay.rs` and `tests/common/sim.rs` (as
//! `crate::trace_replay` and `crate::sim`).

use std::time::{Duration, Instant};

use crdt_sync::{ClientEvent, ConnectionStatus, Document, Frontier, PeerId, ServerEvent, VersionVector};

use crate::sim::{Faults, Sim};
use crate::trace_replay::{Trace, Txn, apply_patches};

/// Simulated time between two transactions of the trace. Short enough that a trace of
/// 260,000 keystrokes is a few simulated minutes, long enough that each transaction leaves
/// as its own frame (the client batches whatever is unsent at each poll) and that frames
/// overlap in flight as they do when someone types fast against a 1 to 80 ms network.
const KEYSTROKE: Duration = Duration::from_millis(1);

/// Longest simulated wait for a writer to catch up, and for the network to settle at the
/// end. Heavy faults can keep a client away for seconds; an hour means "something is stuck".
const PATIENCE: Duration = Duration::from_secs(3600);

/// Errors kept verbatim for the report; the rest are only counted.
const ERRORS_KEPT: usize = 5;

/// How to run the simulation.
pub struct SimOptions {
    pub clients: usize,
    /// Clients that type; `None`: one for a sequential trace, one per agent (at most
    /// `clients`) for a concurrent one, which never gets more writers than agents.
    pub writers: Option<usize>,
    pub seed: u64,
    pub faults: bool,
}

/// What happened on the network, beyond the byte counts the simulator keeps.
#[derive(Default)]
pub struct EventTally {
    pub reconnects: u64,
    pub out_of_sync: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    /// The first few errors, for a human to read.
    pub first_errors: Vec<String>,
}

/// A finished simulation.
pub struct SimRun {
    pub sim: Sim,
    /// The simulated time the run began at.
    pub started: Instant,
    /// Clients that typed (`0..writers`); the others only received.
    pub writers: usize,
    /// Whether the network settled (every client connected, in sync and saved) at the end.
    pub settled: bool,
    pub events: EventTally,
}

/// Replay `trace` through a simulated server and `options.clients` clients syncing the
/// document `name`, whose text lives in the root text `text` as in the local replay.
pub fn replay_through_sim(trace: &Trace, name: &str, options: &SimOptions) -> Result<SimRun, String> {
    if options.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    let concurrent = trace.is_concurrent();
    let agents = agent_count(trace);
    let writers = match options.writers {
        Some(k) if k == 0 || k > options.clients => {
            return Err(format!("--writers must be between 1 and --clients ({})", options.clients));
        }
        // Writers beyond the agents of a concurrent trace would never type.
        Some(k) if concurrent => k.min(agents),
        Some(k) => k,
        None if concurrent => agents.min(options.clients),
        None => 1,
    };
    let faults = if options.faults { Faults::heavy() } else { Faults::none() };
    let mut sim = Sim::new(options.seed, options.clients, &[name], faults);
    let started = sim.now;
    let mut events = EventTally::default();
    if concurrent {
        type_concurrent(&mut sim, name, trace, writers, &mut events)?;
    } else {
        type_sequential(&mut sim, name, trace, writers, &mut events)?;
    }
    sim.heal();
    let settled = sim.run_until_settled(&[name], PATIENCE);
    tally(&mut sim, &mut events);
    Ok(SimRun { sim, started, writers, settled, events })
}

pub fn agent_count(trace: &Trace) -> usize {
    trace.num_agents.unwrap_or_else(|| trace.txns.iter().filter_map(|t| t.agent).max().unwrap_or(0) + 1)
}

/// Writer `w` types the `w`-th of `writers` contiguous turns, after it has received every
/// turn before (the trace's positions assume the whole preceding text).
fn type_sequential(
    sim: &mut Sim,
    name: &str,
    trace: &Trace,
    writers: usize,
    events: &mut EventTally,
) -> Result<(), String> {
    let n = trace.txns.len();
    // Everything typed so far, which the next writer must hold before its turn.
    let mut typed = VersionVector::new();
    let mut present = 0;
    for writer in 0..writers {
        catch_up(sim, name, writer, &typed)?;
        if writer == 0 && !trace.start_content.is_empty() {
            sim.edit(writer, name, |doc| doc.transact().text("text").insert(0, &trace.start_content))
                .map_err(|e| e.to_string())?;
        }
        let (first, end) = (n * writer / writers, n * (writer + 1) / writers);
        for (index, txn) in trace.txns.iter().enumerate().take(end).skip(first) {
            advance_wall_clocks(sim, name, &mut [], txn, &mut present);
            sim.edit(writer, name, |doc| apply_patches(doc, txn)).map_err(|e| format!("txn {index}: {e}"))?;
            sim.run_for(KEYSTROKE);
            tally(sim, events);
        }
        typed.merge(version_of(sim, name, writer)?);
    }
    Ok(())
}

/// Agent `a` types on writer `a % writers`, each transaction at exactly its `parents`
/// version. The writer first receives the parents through the network. It usually holds
/// more by then (whatever the other agents typed meanwhile), so the agent types in an
/// editor replica of its own, which takes from the writer's synced document exactly what the
/// parents include, or forks at the parents when the agent's earlier edits ran ahead of
/// them, as the local replay does with its hub. The transaction's change then goes into the
/// writer's synced document and out on the network, as a concurrent editor would send it.
///
/// Forking the synced document for every transaction would be simpler, but a fork at an
/// older version rebuilds the document from its history: minutes instead of seconds.
fn type_concurrent(
    sim: &mut Sim,
    name: &str,
    trace: &Trace,
    writers: usize,
    events: &mut EventTally,
) -> Result<(), String> {
    // Each agent edits as its own peer, as in the local replay: the CRDT orders concurrent
    // inserts by peer, so other ids could order the text differently from the trace.
    let mut editors: Vec<Document> =
        (0..agent_count(trace)).map(|a| Document::new(PeerId::new(a as u64 + 1))).collect();
    // The version each transaction produced, as heads and as a vector (see `replay_concurrent`).
    let mut versions: Vec<Frontier> = Vec::with_capacity(trace.txns.len());
    let mut vectors: Vec<VersionVector> = Vec::with_capacity(trace.txns.len());
    let mut present = 0;
    for (index, txn) in trace.txns.iter().enumerate() {
        advance_wall_clocks(sim, name, &mut editors, txn, &mut present);
        let agent = txn.agent.unwrap_or(0);
        let writer = agent % writers;
        let editor = editors.get_mut(agent).ok_or(format!("txn {index}: agent {agent} out of range"))?;
        let parents = txn.parents.as_deref().unwrap_or(&[]);
        let mut heads = Vec::new();
        let mut target = VersionVector::new();
        for &p in parents {
            let (Some(frontier), Some(vector)) = (versions.get(p), vectors.get(p)) else {
                return Err(format!("txn {index}: parent {p} not seen yet"));
            };
            heads.extend_from_slice(frontier.ids());
            target.merge(vector);
        }
        let heads = Frontier::from_ids(heads);
        catch_up(sim, name, writer, &target)?;
        let mut result = Err(String::new());
        sim.edit(writer, name, |synced| result = type_at(editor, synced, txn, &heads, &target));
        let (frontier, vector) = result.map_err(|e| format!("txn {index}: {e}"))?;
        versions.push(frontier);
        vectors.push(vector);
        sim.run_for(KEYSTROKE);
        tally(sim, events);
    }
    Ok(())
}

/// Type `txn` on `editor` at `heads` (the version vector `target`), taking what it lacks
/// from `synced`, which holds at least `target`, and give the change to `synced`. Returns
/// the version the transaction produced.
pub fn type_at(
    editor: &mut Document,
    synced: &mut Document,
    txn: &Txn,
    heads: &Frontier,
    target: &VersionVector,
) -> Result<(Frontier, VersionVector), String> {
    if editor.frontier() != heads {
        if target.includes(editor.version()) {
            // Behind its parents: bring in exactly what they include.
            let missing = synced.changes_between(editor.version(), target).map_err(|e| e.to_string())?;
            editor.apply_changes(missing).map_err(|e| e.to_string())?;
        } else {
            // Ahead of its parents: edit on a fork at the parents. The agent's earlier changes
            // are always among the parents, so the fork's new ids cannot collide.
            let mut fork = synced.fork_at(heads, editor.peer_id()).map_err(|e| e.to_string())?;
            apply_patches(&mut fork, txn)?;
            editor.merge(&fork).map_err(|e| e.to_string())?;
            synced.merge(&fork).map_err(|e| e.to_string())?;
            return Ok((fork.frontier().clone(), fork.version().clone()));
        }
        if editor.frontier() != heads {
            return Err("the editor could not reach its parents' version".into());
        }
    }
    let before = editor.version().clone();
    apply_patches(editor, txn)?;
    let made = editor.changes_since(&before).map_err(|e| e.to_string())?;
    synced.apply_changes(made).map_err(|e| e.to_string())?;
    Ok((editor.frontier().clone(), editor.version().clone()))
}

/// Move every replica's wall clock to the trace's present, the latest transaction time so
/// far, as the clocks of people editing together move on. A replica whose clock stayed at
/// its own last edit would refuse, as too far ahead of it, changes stamped more than the
/// document's maximum drift (a day) later: traces typed over several days would stall.
fn advance_wall_clocks(sim: &mut Sim, name: &str, editors: &mut [Document], txn: &Txn, present: &mut u64) {
    let Some(ms) = txn.time_ms.filter(|ms| ms > present) else { return };
    *present = ms;
    for client in &mut sim.clients {
        if let Some(doc) = client.session.document_mut(name) {
            doc.set_wall_clock(ms);
        }
    }
    for editor in editors {
        editor.set_wall_clock(ms);
    }
}

/// Run the network until `writer` holds `target`.
fn catch_up(sim: &mut Sim, name: &str, writer: usize, target: &VersionVector) -> Result<(), String> {
    let holds = |sim: &Sim| sim.client(writer).document(name).is_some_and(|d| d.version().includes(target));
    if sim.run_until_with(PATIENCE, holds) {
        Ok(())
    } else {
        Err(format!("client {writer} did not receive what it must hold within {PATIENCE:?} (simulated)"))
    }
}

fn version_of<'a>(sim: &'a Sim, name: &str, client: usize) -> Result<&'a VersionVector, String> {
    let doc = sim.client(client).document(name).ok_or(format!("client {client} lost {name}"))?;
    Ok(doc.version())
}

/// Count and drop the events the simulator collected, so that a long trace does not keep
/// millions of them.
fn tally(sim: &mut Sim, tally: &mut EventTally) {
    for (client, event) in sim.client_events.drain(..) {
        match event {
            ClientEvent::StatusChanged(ConnectionStatus::Reconnecting) => tally.reconnects += 1,
            ClientEvent::OutOfSync { .. } => tally.out_of_sync += 1,
            ClientEvent::Error(error) => {
                tally.client_errors += 1;
                if tally.first_errors.len() < ERRORS_KEPT {
                    tally.first_errors.push(format!("client {client}: {error}"));
                }
            }
            _ => {}
        }
    }
    for event in sim.server_events.drain(..) {
        match event {
            ServerEvent::OutOfSync { .. } => tally.out_of_sync += 1,
            ServerEvent::Error { connection, error } => {
                tally.server_errors += 1;
                if tally.first_errors.len() < ERRORS_KEPT {
                    tally.first_errors.push(format!("server, {connection:?}: {error}"));
                }
            }
            _ => {}
        }
    }
}
