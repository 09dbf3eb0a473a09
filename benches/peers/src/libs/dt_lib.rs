//! diamond-types 1.0 (the crates.io release). Positions are chars. Sequential traces use a
//! `ListCRDT` (one `OpLog` + one `Branch`), one `apply_local_operations` call per trace
//! transaction. Concurrent traces use diamond-types' own model: one shared `OpLog` (the
//! history every peer eventually has) and one `Branch` per agent; before each transaction the
//! agent's branch merges up to exactly its parents' version, then applies the edit locally.
//! A message is `OpLog::encode_from(ENCODE_PATCH, &version_before)`; the document is
//! `OpLog::encode` with `compress_content: false` (raw) or `ENCODE_FULL` (default: lz4 on the
//! inserted text).

use std::rc::Rc;

use diamond_types::LocalVersion;
use diamond_types::list::encoding::{ENCODE_FULL, ENCODE_PATCH, EncodeOptions};
use diamond_types::list::operation::Operation;
use diamond_types::list::{Branch, ListCRDT, OpLog};

use super::{ConcPlan, FinalTexts, Lib, LiveRun, Prepared, Problem, Traffic};

fn ops_of(patches: &[(usize, usize, String)]) -> Vec<Operation> {
    let mut ops = Vec::with_capacity(patches.len() * 2);
    for (pos, del, ins) in patches {
        if *del > 0 {
            ops.push(Operation::new_delete(*pos..*pos + *del));
        }
        if !ins.is_empty() {
            ops.push(Operation::new_insert(*pos, ins));
        }
    }
    ops
}

fn check_ops(content_len: usize, patches: &[(usize, usize, String)]) -> Result<(), Problem> {
    // diamond-types asserts on out-of-range positions; report them as failures instead.
    let mut len = content_len;
    for (pos, del, ins) in patches {
        if pos + del > len {
            return Err(Problem::failed(format!("patch {pos}+{del} out of range (len {len})")));
        }
        len = len - del + ins.chars().count();
    }
    Ok(())
}

fn sequential(t: &Prepared, record: bool) -> Result<(ListCRDT, Vec<Vec<u8>>), Problem> {
    let mut doc = ListCRDT::new();
    let agent = doc.get_or_create_agent_id("agent0");
    let mut updates = Vec::new();
    let start = (!t.start_patch.is_empty()).then_some(&t.start_patch);
    for patches in start.into_iter().chain(t.trace.txns.iter().map(|x| &x.patches)) {
        check_ops(doc.len(), patches)?;
        let before = record.then(|| doc.oplog.local_version());
        doc.apply_local_operations(agent, &ops_of(patches));
        if let Some(v) = before {
            updates.push(doc.oplog.encode_from(ENCODE_PATCH, &v));
        }
    }
    Ok((doc, updates))
}

/// The shared oplog, each agent's branch, and the messages (if recorded).
type Concurrent = (OpLog, Vec<Branch>, Vec<Vec<u8>>);

fn concurrent(t: &Prepared, record: bool) -> Result<Concurrent, Problem> {
    let plan = t.plan.as_ref().ok_or_else(|| Problem::failed("not a concurrent trace"))?;
    let n = plan.agents;
    let mut oplog = OpLog::new();
    let agents: Vec<_> = (0..n).map(|a| oplog.get_or_create_agent_id(&format!("agent{a}"))).collect();
    let mut branches: Vec<Branch> = (0..n).map(|_| Branch::new()).collect();
    let mut have = vec![vec![0u32; n]; n];
    let mut versions: Vec<LocalVersion> = Vec::with_capacity(t.trace.txns.len());
    let mut updates = Vec::new();
    for (i, txn) in t.trace.txns.iter().enumerate() {
        let a = plan.agent[i];
        let mut target = LocalVersion::new();
        for &p in &plan.parents[i] {
            target = oplog.version_union(&target, &versions[p]);
        }
        let before = record.then(|| oplog.local_version());
        let ops = ops_of(&txn.patches);
        if ConcPlan::leq(&have[a], &plan.before[i]) {
            let branch = &mut branches[a];
            branch.merge(&oplog, &target);
            have[a].clone_from(&plan.before[i]);
            check_ops(branch.len(), &txn.patches)?;
            if !ops.is_empty() {
                branch.apply_local_operations(&mut oplog, agents[a], &ops);
            }
            versions.push(branch.local_version());
        } else {
            // The agent has seen more than the parents: edit on a checkout at the parents.
            let mut fork = oplog.checkout(&target);
            check_ops(fork.len(), &txn.patches)?;
            if !ops.is_empty() {
                fork.apply_local_operations(&mut oplog, agents[a], &ops);
            }
            branches[a].merge(&oplog, fork.local_version_ref());
            for (x, y) in have[a].iter_mut().zip(&plan.before[i]) {
                *x = (*x).max(*y);
            }
            versions.push(fork.local_version());
        }
        have[a][a] += 1;
        if let Some(v) = before {
            updates.push(oplog.encode_from(ENCODE_PATCH, &v));
        }
    }
    let tip = oplog.local_version();
    for branch in &mut branches {
        branch.merge(&oplog, &tip);
    }
    Ok((oplog, branches, updates))
}

/// A diamond-types document: the oplog and the branch(es) holding the text.
pub struct DtDoc {
    oplog: Rc<OpLog>,
    branch: Branch,
}

pub struct Dt;

impl Lib for Dt {
    type Doc = DtDoc;
    const NAME: &'static str = "diamond-types";
    const CRATE: &'static str = "diamond-types";

    fn local_replay(t: &Prepared) -> Result<Vec<DtDoc>, Problem> {
        if t.plan.is_some() {
            let (oplog, branches, _) = concurrent(t, false)?;
            let oplog = Rc::new(oplog);
            Ok(branches.into_iter().map(|branch| DtDoc { oplog: Rc::clone(&oplog), branch }).collect())
        } else {
            let (doc, _) = sequential(t, false)?;
            Ok(vec![DtDoc { oplog: Rc::new(doc.oplog), branch: doc.branch }])
        }
    }
    fn record_updates(t: &Prepared) -> Result<Vec<Vec<u8>>, Problem> {
        if t.plan.is_some() { Ok(concurrent(t, true)?.2) } else { Ok(sequential(t, true)?.1) }
    }
    fn remote_replay(updates: &[Vec<u8>]) -> Result<DtDoc, Problem> {
        let mut doc = ListCRDT::new();
        for (i, u) in updates.iter().enumerate() {
            super::check_deadline(i, updates.len(), "remote replay")?;
            doc.merge_data_and_ff(u).map_err(|e| Problem::failed(format!("{e:?}")))?;
        }
        Ok(DtDoc { oplog: Rc::new(doc.oplog), branch: doc.branch })
    }
    fn text(doc: &DtDoc) -> String {
        doc.branch.content().to_string()
    }
    fn encode_raw(doc: &DtDoc) -> Vec<u8> {
        doc.oplog.encode(EncodeOptions { compress_content: false, ..ENCODE_FULL })
    }
    fn encode_default(doc: &DtDoc) -> Vec<u8> {
        doc.oplog.encode(ENCODE_FULL)
    }
    fn load(bytes: &[u8]) -> Result<DtDoc, Problem> {
        let doc = ListCRDT::load_from(bytes).map_err(|e| Problem::failed(format!("{e:?}")))?;
        Ok(DtDoc { oplog: Rc::new(doc.oplog), branch: doc.branch })
    }
    fn live_sync(t: &Prepared) -> Result<LiveRun, Problem> {
        if let Some(p) = super::live_not_applicable(t) {
            return Err(p);
        }
        let mut writer = ListCRDT::new();
        let agent = writer.get_or_create_agent_id("agent0");
        let mut reader = ListCRDT::new();
        let total = t.trace.txns.len();
        let (mut updates, mut bytes) = (0, 0);
        for (i, patches) in super::live_transactions(t).enumerate() {
            super::check_deadline(i, total, "live sync")?;
            check_ops(writer.len(), patches)?;
            let before = writer.oplog.local_version();
            writer.apply_local_operations(agent, &ops_of(patches));
            let update = writer.oplog.encode_from(ENCODE_PATCH, &before);
            updates += 1;
            bytes += update.len();
            reader.merge_data_and_ff(&update).map_err(|e| Problem::failed(format!("{e:?}")))?;
        }
        let finals: FinalTexts = Box::new(move || {
            vec![
                ("writer", writer.branch.content().to_string()),
                ("reader", reader.branch.content().to_string()),
            ]
        });
        Ok(LiveRun { traffic: Traffic::one_hop(updates, bytes), finals })
    }
    fn notes() -> &'static str {
        "diamond-types: 1.0.0 from crates.io; `apply_local_operations` per transaction; concurrent = one \
         shared `OpLog` + one `Branch` per agent merged up to the parents' version (no message \
         encoding in local replay: the oplog is shared in memory); message = \
         `encode_from(ENCODE_PATCH, &version_before)`, imported with `ListCRDT::merge_data_and_ff`; \
         raw = `encode` with `compress_content: false`, default save = `ENCODE_FULL` (lz4 on text). Live sync: \
         `encode_from(ENCODE_PATCH, &version_before)` per transaction, `merge_data_and_ff` on the \
         reader; both compute a CRC-32C whose lookup table diamond-types 1.0.0 rebuilds on every call."
    }
}
