//! crdt-sync, through the crate's own replay code (`examples/support/trace_replay.rs`).
//! Messages are `export_since(&version_before)` per transaction (sequential traces) or per
//! change of the final history (concurrent: the changes of `changes_since(&empty)` applied one
//! at a time to a scratch document, exporting each step).

use crdt_sync::{Document, EncodeOptions, PeerId, VersionVector};

use super::{Lib, LiveRun, OBSERVER, Prepared, Problem};
use crate::trace_replay::apply_patches;

pub struct Ours;

impl Lib for Ours {
    type Doc = Document;
    const NAME: &'static str = "crdt-sync";
    const CRATE: &'static str = "crdt-sync";

    fn local_replay(t: &Prepared) -> Result<Vec<Document>, Problem> {
        t.trace.replay().map_err(Problem::Failed)
    }

    fn record_updates(t: &Prepared) -> Result<Vec<Vec<u8>>, Problem> {
        let mut updates = Vec::new();
        if t.plan.is_none() {
            let mut doc = Document::new(PeerId::new(1));
            if !t.trace.start_content.is_empty() {
                doc.transact().text("text").insert(0, &t.trace.start_content).map_err(Problem::failed)?;
                updates.push(doc.export_since(&VersionVector::new()).map_err(Problem::failed)?);
            }
            for txn in &t.trace.txns {
                let before = doc.version().clone();
                apply_patches(&mut doc, txn).map_err(Problem::Failed)?;
                updates.push(doc.export_since(&before).map_err(Problem::failed)?);
            }
        } else {
            let doc = t.trace.replay().map_err(Problem::Failed)?.swap_remove(0);
            let mut scratch = Document::new(PeerId::new(OBSERVER + 1));
            for change in doc.changes_since(&VersionVector::new()).map_err(Problem::failed)? {
                let before = scratch.version().clone();
                scratch.apply_changes(vec![change]).map_err(Problem::failed)?;
                updates.push(scratch.export_since(&before).map_err(Problem::failed)?);
            }
        }
        Ok(updates)
    }

    fn remote_replay(updates: &[Vec<u8>]) -> Result<Document, Problem> {
        let mut doc = Document::new(PeerId::new(OBSERVER));
        for (i, u) in updates.iter().enumerate() {
            super::check_deadline(i, updates.len(), "remote replay")?;
            doc.import(u).map_err(Problem::failed)?;
        }
        Ok(doc)
    }
    fn text(doc: &Document) -> String {
        doc.text("text").to_string()
    }
    fn encode_raw(doc: &Document) -> Vec<u8> {
        doc.encode()
    }
    fn encode_lz4(doc: &Document, _raw: &[u8]) -> Vec<u8> {
        doc.encode_with(EncodeOptions::lz4())
    }
    fn encode_default(doc: &Document) -> Vec<u8> {
        doc.encode()
    }
    fn load(bytes: &[u8]) -> Result<Document, Problem> {
        Document::load(bytes, PeerId::new(OBSERVER + 2)).map_err(Problem::failed)
    }
    fn live_sync(t: &Prepared) -> Result<LiveRun, Problem> {
        super::crdt_sync_live::live_sync(t)
    }
    fn notes() -> &'static str {
        "crdt-sync: `Trace::replay()` from examples/support/trace_replay.rs (concurrent: a replica per \
         agent plus a hub, changes passed in memory); message = `export_since(&version_before)`, \
         imported with `import`; raw = `encode()`, lz4 = `encode_with(EncodeOptions::lz4())`. Live \
         sync: writer and reader `ClientSession`s and a `Server::in_memory` exchanging whole frames in \
         process, in order, simulated time (1 ms per transaction, due deadlines handled)."
    }
}
