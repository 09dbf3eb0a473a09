//! Loro. `LoroText::insert`/`delete` take Unicode scalar positions. One `commit` per trace
//! transaction; a message is `export(ExportMode::updates(&vv_before))`; the document is a
//! snapshot (`ExportMode::Snapshot`: history + state; its blocks are lz4-compressed
//! internally, which cannot be turned off through the public API).

use loro::{ExportMode, LoroDoc, LoroText};

use super::{Lib, LiveRun, OBSERVER, Prepared, Problem, Replica};

pub struct LoroReplica {
    doc: LoroDoc,
    text: LoroText,
}

impl Replica for LoroReplica {
    fn create(agent: u64) -> Result<Self, Problem> {
        let doc = LoroDoc::new();
        doc.set_peer_id(agent + 1).map_err(Problem::failed)?;
        let text = doc.get_text("text");
        Ok(LoroReplica { doc, text })
    }

    fn apply(&mut self, update: &[u8]) -> Result<(), Problem> {
        let status = self.doc.import(update).map_err(Problem::failed)?;
        if status.pending.is_some() {
            return Err(Problem::failed("Loro import left changes pending (missing dependencies)"));
        }
        Ok(())
    }

    fn apply_batch(&mut self, updates: &[&[u8]]) -> Result<(), Problem> {
        match updates {
            [] => Ok(()),
            [one] => self.apply(one),
            many => {
                let owned: Vec<Vec<u8>> = many.iter().map(|u| u.to_vec()).collect();
                let status = self.doc.import_batch(&owned).map_err(Problem::failed)?;
                if status.pending.is_some() {
                    return Err(Problem::failed("Loro import left changes pending (missing dependencies)"));
                }
                Ok(())
            }
        }
    }

    fn edit(&mut self, patches: &[(usize, usize, String)], record: bool) -> Result<Option<Vec<u8>>, Problem> {
        let before = record.then(|| self.doc.oplog_vv());
        for (pos, del, ins) in patches {
            if *del > 0 {
                self.text.delete(*pos, *del).map_err(Problem::failed)?;
            }
            if !ins.is_empty() {
                self.text.insert(*pos, ins).map_err(Problem::failed)?;
            }
        }
        self.doc.commit();
        before.map(|vv| self.doc.export(ExportMode::updates(&vv)).map_err(Problem::failed)).transpose()
    }

    fn text(&self) -> String {
        self.text.to_string()
    }
}

pub struct Loro;

impl Lib for Loro {
    type Doc = LoroReplica;
    const NAME: &'static str = "loro";
    const CRATE: &'static str = "loro";

    fn local_replay(t: &Prepared) -> Result<Vec<LoroReplica>, Problem> {
        super::replica_local_replay(t)
    }
    fn record_updates(t: &Prepared) -> Result<Vec<Vec<u8>>, Problem> {
        super::replica_record_updates::<LoroReplica>(t)
    }
    fn remote_replay(updates: &[Vec<u8>]) -> Result<LoroReplica, Problem> {
        super::replica_remote_replay(updates)
    }
    fn text(doc: &LoroReplica) -> String {
        doc.text()
    }
    fn encode_raw(doc: &LoroReplica) -> Vec<u8> {
        doc.doc.export(ExportMode::Snapshot).expect("Loro snapshot export")
    }
    fn encode_default(doc: &LoroReplica) -> Vec<u8> {
        Self::encode_raw(doc)
    }
    fn load(bytes: &[u8]) -> Result<LoroReplica, Problem> {
        let doc = LoroDoc::from_snapshot(bytes).map_err(Problem::failed)?;
        doc.set_peer_id(OBSERVER + 1).map_err(Problem::failed)?;
        let text = doc.get_text("text");
        Ok(LoroReplica { doc, text })
    }
    fn live_sync(t: &Prepared) -> Result<LiveRun, Problem> {
        super::replica_live_sync::<LoroReplica>(t)
    }
    fn notes() -> &'static str {
        "loro: one `commit()` per transaction; message = `export(ExportMode::updates(&vv_before))`; \
         document = `ExportMode::Snapshot` (history + state, blocks already lz4-compressed by Loro), \
         loaded with `LoroDoc::from_snapshot`. Live sync: the same per-commit update, `import` on the \
         reader."
    }
}
