//! yrs (the Rust port of Yjs). Offsets are configured as UTF-16 code units, which equal the
//! traces' Unicode scalar positions when no character lies outside the BMP (checked: such a
//! trace is reported n/a). Messages are lib0 v1 updates of one transaction each.

use yrs::updates::decoder::Decode;
use yrs::{
    ClientID, Doc, GetString, OffsetKind, Options, ReadTxn, StateVector, Text, TextRef, Transact, Update,
};

use super::{Lib, LiveRun, OBSERVER, Prepared, Problem, Replica};

pub struct YrsReplica {
    doc: Doc,
    text: TextRef,
}

impl Replica for YrsReplica {
    fn create(agent: u64) -> Result<Self, Problem> {
        let doc = Doc::with_options(Options {
            client_id: ClientID::new(agent + 1),
            offset_kind: OffsetKind::Utf16,
            ..Options::default()
        });
        let text = doc.get_or_insert_text("text");
        Ok(YrsReplica { doc, text })
    }

    fn apply(&mut self, update: &[u8]) -> Result<(), Problem> {
        let update = Update::decode_v1(update).map_err(Problem::failed)?;
        self.doc.transact_mut().apply_update(update).map_err(Problem::failed)
    }

    fn edit(&mut self, patches: &[(usize, usize, String)], record: bool) -> Result<Option<Vec<u8>>, Problem> {
        let mut txn = self.doc.transact_mut();
        for (pos, del, ins) in patches {
            if *del > 0 {
                self.text.remove_range(&mut txn, *pos as u32, *del as u32);
            }
            if !ins.is_empty() {
                self.text.insert(&mut txn, *pos as u32, ins);
            }
        }
        Ok(record.then(|| txn.encode_update_v1()))
    }

    fn text(&self) -> String {
        self.text.get_string(&self.doc.transact())
    }
}

pub struct Yrs;

impl Lib for Yrs {
    type Doc = YrsReplica;
    const NAME: &'static str = "yrs";
    const CRATE: &'static str = "yrs";

    fn local_replay(t: &Prepared) -> Result<Vec<YrsReplica>, Problem> {
        super::replica_local_replay(t)
    }
    fn record_updates(t: &Prepared) -> Result<Vec<Vec<u8>>, Problem> {
        super::replica_record_updates::<YrsReplica>(t)
    }
    fn remote_replay(updates: &[Vec<u8>]) -> Result<YrsReplica, Problem> {
        super::replica_remote_replay(updates)
    }
    fn text(doc: &YrsReplica) -> String {
        doc.text()
    }
    fn encode_raw(doc: &YrsReplica) -> Vec<u8> {
        doc.doc.transact().encode_state_as_update_v1(&StateVector::default())
    }
    fn encode_default(doc: &YrsReplica) -> Vec<u8> {
        Self::encode_raw(doc)
    }
    fn load(bytes: &[u8]) -> Result<YrsReplica, Problem> {
        let mut r = YrsReplica::create(OBSERVER)?;
        r.apply(bytes)?;
        Ok(r)
    }
    fn not_applicable(t: &Prepared) -> Option<String> {
        t.has_astral.then(|| "trace has non-BMP characters; yrs counts UTF-16 units".into())
    }
    fn live_sync(t: &Prepared) -> Result<LiveRun, Problem> {
        super::replica_live_sync::<YrsReplica>(t)
    }
    fn notes() -> &'static str {
        "yrs: OffsetKind::Utf16 (equal to scalar positions on these BMP-only traces); a message is \
         `TransactionMut::encode_update_v1` of one transaction; the document is \
         `encode_state_as_update_v1` (update v1, GC on: deleted text is not kept). Live sync: the same \
         per-transaction update, `apply_update` on the reader."
    }
}
