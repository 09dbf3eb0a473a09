//! The state section of an encoded document: the state at the document's version, stored next
//! to the history so that loading builds the state from it instead of replaying every change.
//!
//! It holds what the change log needs without decoding the history (version, heads, Lamport
//! end, and each stored change's span and Lamport time) and every container's state; texts in
//! their compact form (`types::sequence::compact`), the others as in a state snapshot. The
//! visible text lives only here: the history stored beside it leaves those characters out of
//! its text column, and decoding the history takes them from here
//! ([`StateSection::held_text`]).
//!
//! Loading trusts the section to be the history's result, as a state snapshot is trusted to be
//! the result of the history it replaces; decoding checks that it is consistent in itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::change::Change;
use super::change_log::ChangeLog;
use super::clock::Timestamp;
use super::columnar;
use super::columnar::Budget;
use super::id::{Counter, OpId, PeerId};
use super::op::ContainerId;
use super::state::{ContainerState, DocState};
use super::types::sequence::Sequence;
use super::version::{Frontier, VersionVector};
use crate::DecodeError;

/// `(first counter, end counter, Lamport time)` of each stored change of one peer.
pub(crate) type ChangeSpans = Vec<(Counter, Counter, u32)>;

/// Per peer, its [`ChangeSpans`].
pub(crate) type LamportIndex = BTreeMap<PeerId, ChangeSpans>;

#[derive(Deserialize)]
struct Section {
    version: VersionVector,
    frontier: Frontier,
    lamport_end: u32,
    max_timestamp: Timestamp,
    lamports: Vec<(PeerId, ChangeSpans)>,
    containers: Vec<(ContainerId, Slot)>,
}

#[derive(Deserialize)]
enum Slot {
    /// A text, in its compact form.
    Text(#[serde(with = "crate::wire::message::byte_string")] Vec<u8>),
    /// Any other container, as in a state snapshot.
    Other(Box<ContainerState>),
}

/// [`Section`] as it is written: the containers borrowed from the document, not copied.
#[derive(Serialize)]
struct SectionRef<'a> {
    version: &'a VersionVector,
    frontier: &'a Frontier,
    lamport_end: u32,
    max_timestamp: Timestamp,
    lamports: Vec<(PeerId, ChangeSpans)>,
    containers: Vec<(&'a ContainerId, SlotRef<'a>)>,
}

/// [`Slot`] as it is written (a reference serializes as the value, a `Box` too).
#[derive(Serialize)]
enum SlotRef<'a> {
    Text(#[serde(with = "crate::wire::message::byte_string")] Vec<u8>),
    Other(&'a ContainerState),
}

/// A decoded state section.
pub(crate) struct StateSection {
    pub(crate) version: VersionVector,
    pub(crate) frontier: Frontier,
    pub(crate) lamport_end: u32,
    pub(crate) max_timestamp: Timestamp,
    pub(crate) lamports: LamportIndex,
    pub(crate) state: DocState,
}

fn malformed(what: &str) -> DecodeError {
    DecodeError::Malformed(format!("state section: {what}"))
}

impl StateSection {
    /// Encode `state` and what `log` needs to stand without its decoded changes.
    pub(crate) fn encode(state: &DocState, log: &ChangeLog, max_timestamp: Timestamp) -> Vec<u8> {
        let containers = state
            .containers()
            .map(|(id, container)| {
                let slot = match container {
                    ContainerState::Text(seq) => SlotRef::Text(seq.encode_compact()),
                    other => SlotRef::Other(other),
                };
                (id, slot)
            })
            .collect();
        let section = SectionRef {
            version: log.version(),
            frontier: log.frontier(),
            lamport_end: log.lamport_end(),
            max_timestamp,
            lamports: log.lamport_index().into_iter().collect(),
            containers,
        };
        postcard::to_allocvec(&section).expect("postcard serialization of document types is infallible")
    }

    /// Decode a section, checking it is consistent in itself and with the trimmed history
    /// below it (`trimmed`), within `max_decoded_bytes`.
    pub(crate) fn decode(
        bytes: &[u8],
        trimmed: &VersionVector,
        max_decoded_bytes: usize,
    ) -> Result<StateSection, DecodeError> {
        let section: Section = postcard::from_bytes(bytes).map_err(|e| malformed(&e.to_string()))?;
        let mut budget = Budget::new(max_decoded_bytes);
        let mut containers = BTreeMap::new();
        for (id, slot) in section.containers {
            let state = match slot {
                Slot::Text(bytes) => ContainerState::Text(Sequence::decode_compact(&bytes, &mut budget)?),
                Slot::Other(state) => match *state {
                    ContainerState::Text(_) => return Err(malformed("a text outside its compact form")),
                    state => state,
                },
            };
            if containers.insert(id, state).is_some() {
                return Err(malformed("a container twice"));
            }
        }
        let state = DocState::from_containers(containers);
        if !state.is_consistent() || !section.frontier.is_canonical() {
            return Err(malformed("inconsistent state"));
        }
        let lamports = check_index(section.lamports, &section.version, trimmed)?;
        Ok(StateSection {
            version: section.version,
            frontier: section.frontier,
            lamport_end: section.lamport_end,
            max_timestamp: section.max_timestamp,
            lamports,
            state,
        })
    }

    /// Decode `history`, the changes stored beside the encoded section `section`: the visible
    /// characters they leave out of their text column are taken from the section.
    pub(crate) fn decode_history(
        section: &[u8],
        history: &[u8],
        max_decoded_bytes: usize,
    ) -> Result<Vec<Change>, DecodeError> {
        let text = Self::held_text(section, max_decoded_bytes)?;
        columnar::decode_changes_filling(history, max_decoded_bytes, &|id| text.get(id), text.len())
    }

    /// The visible characters of every text in an encoded section, by id: what the history
    /// stored beside it left out of its text column.
    fn held_text(bytes: &[u8], max_decoded_bytes: usize) -> Result<HeldText, DecodeError> {
        let section: Section = postcard::from_bytes(bytes).map_err(|e| malformed(&e.to_string()))?;
        let mut budget = Budget::new(max_decoded_bytes);
        let mut runs: Vec<(OpId, Vec<char>)> = Vec::new();
        for (_, slot) in section.containers {
            if let Slot::Text(bytes) = slot {
                Sequence::for_each_compact_visible_run(&bytes, &mut budget, |start, text| {
                    runs.push((start, text.chars().collect()));
                })?;
            }
        }
        runs.sort_unstable_by_key(|(start, _)| *start);
        Ok(HeldText { runs })
    }
}

/// Visible characters by id (see [`StateSection::held_text`]).
struct HeldText {
    /// Runs of consecutive ids, ascending by first id.
    runs: Vec<(OpId, Vec<char>)>,
}

impl HeldText {
    /// How many characters there are.
    fn len(&self) -> usize {
        self.runs.iter().map(|(_, chars)| chars.len()).sum()
    }

    fn get(&self, id: OpId) -> Option<char> {
        let at = self.runs.partition_point(|(start, _)| *start <= id).checked_sub(1)?;
        let (start, chars) = &self.runs[at];
        if start.peer != id.peer {
            return None;
        }
        chars.get(id.counter.checked_sub(start.counter)? as usize).copied()
    }
}

/// Check that the index describes, per peer, consecutive changes from the trimmed version up
/// to the version, and nothing else.
fn check_index(
    lamports: Vec<(PeerId, ChangeSpans)>,
    version: &VersionVector,
    trimmed: &VersionVector,
) -> Result<LamportIndex, DecodeError> {
    let mut index = LamportIndex::new();
    for (peer, spans) in lamports {
        let mut at = trimmed.get(peer);
        for &(start, end, lamport) in &spans {
            if start != at || end <= start {
                return Err(malformed("change index has gaps"));
            }
            // Lamport times of the change's ops count up from its own.
            if lamport.checked_add(end - start).is_none() {
                return Err(malformed("Lamport time out of range"));
            }
            at = end;
        }
        if at != version.get(peer) || spans.is_empty() || index.insert(peer, spans).is_some() {
            return Err(malformed("change index disagrees with the version"));
        }
    }
    for (peer, end) in version.iter() {
        if end > trimmed.get(peer) && !index.contains_key(&peer) {
            return Err(malformed("change index misses a peer"));
        }
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use crate::doc::codec::{self, EncodeOptions, PayloadKind};
    use crate::doc::columnar;
    use crate::{Document, PeerId, VersionVector};

    fn typed(peer: u64, text: &str) -> Document {
        let mut doc = Document::new(PeerId::new(peer));
        for (i, c) in text.chars().enumerate() {
            doc.transact().text("t").insert(i, &c.to_string()).unwrap();
        }
        // Some deleted text, so that the history holds characters the state does not.
        doc.transact().text("t").delete(1, 2).unwrap();
        doc.transact().text("t").insert(1, "ñé").unwrap();
        doc
    }

    /// Load `bytes`, and import them into an empty replica: both show `expected`'s text
    /// `name`. Returns the loaded document.
    fn loads_and_imports(bytes: &[u8], expected: &Document, name: &str) -> Document {
        let loaded = Document::load(bytes, PeerId::new(2)).unwrap();
        assert_eq!(loaded.text(name).to_string(), expected.text(name).to_string());
        let mut fresh = Document::new(PeerId::new(4));
        fresh.import(bytes).unwrap();
        assert_eq!(fresh.text(name).to_string(), expected.text(name).to_string());
        loaded
    }

    #[test]
    fn documents_written_before_the_state_section_still_load() {
        let doc = typed(1, "héllo wörld");
        let changes = columnar::encode_changes(&doc.log.all());
        let payload = crate::doc::document::DocumentPayload { base: None, changes };
        let old = codec::encode(PayloadKind::Document, &payload, EncodeOptions::default());
        let loaded = loads_and_imports(&old, &doc, "t");
        assert_eq!(loaded.version(), doc.version());
        // And it is written back in the new form, which loads to the same.
        let again = Document::load(&loaded.encode(), PeerId::new(3)).unwrap();
        assert_eq!(again.text("t").to_string(), doc.text("t").to_string());
    }

    #[test]
    fn the_history_keeps_only_deleted_text_and_gives_every_character_back() {
        let doc = typed(1, "a fine day in the park, 😀 and more");
        let bytes = doc.encode();
        let loaded = Document::load(&bytes, PeerId::new(2)).unwrap();
        // Every change comes back whole, deleted and visible characters alike.
        let all = loaded.export_since(&VersionVector::new()).unwrap();
        let mut copy = Document::new(PeerId::new(3));
        copy.import(&all).unwrap();
        assert_eq!(copy.text("t").to_string(), doc.text("t").to_string());
        assert_eq!(
            copy.changes_since(&VersionVector::new()).unwrap(),
            doc.changes_since(&VersionVector::new()).unwrap()
        );
        // The state's text is not stored twice: the document is smaller than history plus text.
        let full_history = columnar::encode_changes(&doc.log.all()).len();
        let state =
            crate::doc::state_section::StateSection::encode(&doc.state, &doc.log, doc.clock.last()).len();
        assert!(bytes.len() < full_history + state, "{} vs {} + {}", bytes.len(), full_history, state);
    }

    #[test]
    fn a_state_section_that_lies_about_its_history_never_panics() {
        let a = typed(1, "hello there");
        let b = typed(2, "other words");
        let payload = |state: &Document, history: &Document| {
            let section = super::StateSection::encode(&state.state, &state.log, state.clock.last());
            let changes = columnar::encode_changes_eliding(&history.log.all(), &|container, id| {
                history.state.shows_text(container, id)
            });
            let payload =
                crate::doc::document::StatePayload { base: None, state: &section, changes: &changes };
            codec::encode(PayloadKind::DocumentState, &payload, EncodeOptions::default())
        };
        // A's state with B's history: the index names peer 1, the history peer 2.
        for bytes in [payload(&a, &b), payload(&b, &a)] {
            if let Ok(mut doc) = Document::load(&bytes, PeerId::new(9)) {
                let _ = doc.export_since(&VersionVector::new());
                let _ = doc.transact().text("t").insert(0, "x");
                let _ = doc.encode();
            }
            let mut fresh = Document::new(PeerId::new(8));
            let _ = fresh.import(&bytes);
        }
    }

    #[test]
    fn a_late_joiner_importing_a_whole_document_gets_it_without_replay_and_keeps_editing() {
        let doc = typed(1, "shared text");
        let mut joiner = Document::new(PeerId::new(5));
        let status = joiner.import(&doc.encode()).unwrap();
        assert!(status.applied > 0);
        assert_eq!(joiner.text("t").to_string(), doc.text("t").to_string());
        assert_eq!(joiner.peer_id(), PeerId::new(5));
        joiner.transact().text("t").insert(0, ">").unwrap();
        let mut back = doc.clone();
        back.import(&joiner.export_since(doc.version()).unwrap()).unwrap();
        assert_eq!(back.text("t").to_string(), format!(">{}", doc.text("t")));
    }

    #[test]
    fn texts_whose_columns_compress_below_a_byte_per_run_load() {
        // Regression: the decoder refused run counts above the bytes left, which DEFLATE'd
        // columns easily undercut (4,000 runs in a few hundred bytes here).
        let mut doc = Document::new(PeerId::new(1));
        for i in 0..2000 {
            doc.transact().text("body").insert(i, "abcdefghij").unwrap();
        }
        loads_and_imports(&doc.encode(), &doc, "body");
    }

    #[test]
    fn a_change_index_whose_lamport_times_overflow_is_refused() {
        use crate::doc::version::VersionVector as Vv;
        let peer = PeerId::new(1);
        let mut version = Vv::new();
        version.set(peer, 10);
        let index = vec![(peer, vec![(0, 10, u32::MAX - 3)])];
        assert!(super::check_index(index, &version, &Vv::new()).is_err());
        let index = vec![(peer, vec![(0, 4, 0), (4, 10, 4)])];
        assert!(super::check_index(index, &version, &Vv::new()).is_ok());
        let gap = vec![(peer, vec![(0, 4, 0), (5, 10, 4)])];
        assert!(super::check_index(gap, &version, &Vv::new()).is_err());
    }

    #[test]
    fn many_texts_keep_their_own_characters() {
        use crate::ContainerKind;
        let mut doc = Document::new(PeerId::new(1));
        for i in 0..50 {
            let mut txn = doc.transact();
            let id =
                txn.map::<String, i64>("m").insert_container(&format!("k{i}"), ContainerKind::Text).unwrap();
            let mut text = txn.text_by_id(&id).unwrap();
            text.insert(0, &format!("text number {i}")).unwrap();
            text.delete(0, 5).unwrap();
        }
        let loaded = Document::load(&doc.encode(), PeerId::new(2)).unwrap();
        assert_eq!(loaded.to_json(), doc.to_json());
        let mut copy = Document::new(PeerId::new(3));
        copy.import(&loaded.export_since(&VersionVector::new()).unwrap()).unwrap();
        assert_eq!(copy.to_json(), doc.to_json());
    }
}
