//! Automerge, with `TextEncoding::UnicodeCodePoint` so positions are Unicode scalar values.
//! Every replica starts from one shared "genesis" change that creates the text object (so all
//! agents edit the same object). One Automerge transaction per trace transaction; a message is
//! that transaction's change (`get_last_local_change().raw_bytes()`), imported with
//! `load_incremental`; the document is `save_nocompress()` (the default `save()` additionally
//! DEFLATEs columns; its size is the "default save" column).

use std::sync::OnceLock;

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, LoadOptions, ObjId, ObjType, ROOT, ReadDoc, TextEncoding, Value};

use super::{Lib, LiveRun, OBSERVER, Prepared, Problem, Replica};

const ENCODING: TextEncoding = TextEncoding::UnicodeCodePoint;

fn genesis() -> &'static [u8] {
    static GENESIS: OnceLock<Vec<u8>> = OnceLock::new();
    GENESIS.get_or_init(|| {
        let mut doc = Automerge::new_with_encoding(ENCODING);
        doc.set_actor(ActorId::from([0xffu8; 16]));
        let mut tx = doc.transaction();
        tx.put_object(ROOT, "text", ObjType::Text).expect("create text object");
        tx.commit();
        doc.save()
    })
}

fn text_object(doc: &Automerge) -> Result<ObjId, Problem> {
    match doc.get(ROOT, "text").map_err(Problem::failed)? {
        Some((Value::Object(ObjType::Text), id)) => Ok(id),
        other => Err(Problem::failed(format!("no text object in Automerge doc: {other:?}"))),
    }
}

fn actor(agent: u64) -> ActorId {
    ActorId::from((agent + 1).to_be_bytes())
}

pub struct AmReplica {
    doc: Automerge,
    text: ObjId,
}

impl Replica for AmReplica {
    fn create(agent: u64) -> Result<Self, Problem> {
        let mut doc = Automerge::new_with_encoding(ENCODING);
        doc.load_incremental(genesis()).map_err(Problem::failed)?;
        doc.set_actor(actor(agent));
        let text = text_object(&doc)?;
        Ok(AmReplica { doc, text })
    }

    fn apply(&mut self, update: &[u8]) -> Result<(), Problem> {
        self.doc.load_incremental(update).map_err(Problem::failed)?;
        Ok(())
    }

    fn apply_batch(&mut self, updates: &[&[u8]]) -> Result<(), Problem> {
        // One `load_incremental` of the concatenated changes: automerge applies a batch in one
        // pass over the object, while each call costs a pass.
        match updates {
            [] => Ok(()),
            [one] => self.apply(one),
            many => self.apply(&many.concat()),
        }
    }

    fn edit(&mut self, patches: &[(usize, usize, String)], record: bool) -> Result<Option<Vec<u8>>, Problem> {
        let mut tx = self.doc.transaction();
        for (pos, del, ins) in patches {
            if *del > 0 || !ins.is_empty() {
                tx.splice_text(&self.text, *pos, *del as isize, ins).map_err(Problem::failed)?;
            }
        }
        tx.commit();
        if !record {
            return Ok(None);
        }
        let change = self.doc.get_last_local_change().ok_or_else(|| Problem::failed("no local change"))?;
        Ok(Some(change.raw_bytes().to_vec()))
    }

    fn text(&self) -> String {
        self.doc.text(&self.text).expect("Automerge text")
    }
}

pub struct Am;

impl Lib for Am {
    type Doc = AmReplica;
    const NAME: &'static str = "automerge";
    const CRATE: &'static str = "automerge";

    fn local_replay(t: &Prepared) -> Result<Vec<AmReplica>, Problem> {
        super::replica_local_replay(t)
    }
    fn record_updates(t: &Prepared) -> Result<Vec<Vec<u8>>, Problem> {
        super::replica_record_updates::<AmReplica>(t)
    }
    fn remote_replay(updates: &[Vec<u8>]) -> Result<AmReplica, Problem> {
        super::replica_remote_replay(updates)
    }
    fn text(doc: &AmReplica) -> String {
        doc.text()
    }
    fn encode_raw(doc: &AmReplica) -> Vec<u8> {
        doc.doc.save_nocompress()
    }
    fn encode_default(doc: &AmReplica) -> Vec<u8> {
        doc.doc.save()
    }
    fn load(bytes: &[u8]) -> Result<AmReplica, Problem> {
        let mut doc = Automerge::load_with_options(bytes, LoadOptions::new().text_encoding(ENCODING))
            .map_err(Problem::failed)?;
        doc.set_actor(actor(OBSERVER));
        let text = text_object(&doc)?;
        Ok(AmReplica { doc, text })
    }
    fn live_sync(t: &Prepared) -> Result<LiveRun, Problem> {
        super::replica_live_sync::<AmReplica>(t)
    }
    fn notes() -> &'static str {
        "automerge: `TextEncoding::UnicodeCodePoint`; replicas start from a shared genesis change \
         creating the text object; message = the transaction's change (`raw_bytes`), imported with \
         `load_incremental`; raw = `save_nocompress()`, default save = `save()` (DEFLATE). Live sync: the same \
         change bytes, `load_incremental` on the reader (quadratic, as in remote replay)."
    }
}
