//! Convergence: replicas that make random edits on every container type and exchange their
//! changes over an unreliable network (reordered, duplicated, delayed, out of causal order) end
//! with identical state, history and version; forks and past-version forks merged back
//! converge with replicas that only ever imported.

mod common;

use std::rc::Rc;

use common::{BASE_MS, assert_converged, chars, proptest_config};
use crdt_sync::{ContainerKind, Document, Frontier, PeerId, Transaction, VersionVector};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

// Root container names.
const TEXT: &str = "text";
const LIST: &str = "list";
const MOVABLE: &str = "movable";
const MAP: &str = "map";
const REGISTER: &str = "register";
const COUNTER: &str = "counter";
const SET: &str = "set";
/// Map whose entries are nested texts and lists.
const NEST: &str = "nest";
/// List whose items are nested maps.
const ITEMS: &str = "items";
/// Movable list whose items are nested counters.
const MOVABLE_NEST: &str = "movable-nest";

/// One edit. Positions are raw numbers reduced modulo the current length when applied, so
/// that every generated edit is valid on whatever state the replica has (and shrinks well).
#[derive(Clone, Debug)]
enum Edit {
    TextInsert {
        pos: usize,
        text: String,
    },
    TextDelete {
        pos: usize,
        len: usize,
    },
    /// `set_text` to the current text with one range replaced.
    TextSet {
        pos: usize,
        del: usize,
        text: String,
    },
    ListInsert {
        pos: usize,
        value: i64,
    },
    ListDelete {
        pos: usize,
        len: usize,
    },
    MovableInsert {
        pos: usize,
        value: i64,
    },
    MovableMove {
        from: usize,
        to: usize,
    },
    MovableSet {
        pos: usize,
        value: i64,
    },
    MovableDelete {
        pos: usize,
    },
    MapInsert {
        key: u8,
        value: i64,
    },
    MapRemove {
        key: u8,
    },
    RegisterSet {
        value: i64,
    },
    CounterAdd {
        delta: i64,
    },
    SetInsert {
        member: u8,
    },
    SetRemove {
        member: u8,
    },
    /// Store a new nested text (or list) under a key of `NEST`.
    NestCreate {
        key: u8,
        text: bool,
    },
    /// Insert into (or delete from) the nested container under a key of `NEST`.
    NestWrite {
        key: u8,
        pos: usize,
        text: String,
        delete: bool,
    },
    /// Insert a nested map into `ITEMS`.
    ItemsCreate {
        pos: usize,
    },
    /// Set a key of the nested map at some index of `ITEMS`.
    ItemsWrite {
        pos: usize,
        key: u8,
        value: i64,
    },
    /// Insert a nested counter into `MOVABLE_NEST`.
    MovableNestCreate {
        pos: usize,
    },
    /// Add to the nested counter at some index of `MOVABLE_NEST`, or move it.
    MovableNestWrite {
        pos: usize,
        delta: i64,
        move_to: Option<usize>,
    },
}

fn key_name(key: u8) -> String {
    format!("k{}", key % 4)
}

/// Only two set members, so that concurrent adds and removes of the same member are common.
fn member_name(member: u8) -> String {
    format!("s{}", member % 2)
}

fn small_text() -> impl Strategy<Value = String> {
    // Non-ASCII on purpose: accented letters (2 UTF-8 bytes) and an emoji (4 bytes, a UTF-16
    // surrogate pair) must not confuse positions.
    "[abcé😀 ]{1,4}"
}

/// Which containers a test case edits. Spreading edits over every type makes concurrent edits
/// of one container rare, so most cases focus on one group and some mix them all.
#[derive(Clone, Copy, Debug)]
enum Focus {
    All,
    Sequences,
    Movable,
    LastWriterWins,
    Nested,
}

fn focus() -> impl Strategy<Value = Focus> {
    prop_oneof![
        2 => Just(Focus::All),
        1 => Just(Focus::Sequences),
        1 => Just(Focus::Movable),
        1 => Just(Focus::LastWriterWins),
        1 => Just(Focus::Nested),
    ]
}

fn pos() -> std::ops::Range<usize> {
    0..64
}

fn value() -> std::ops::Range<i64> {
    -50..50
}

fn sequence_edit() -> BoxedStrategy<Edit> {
    prop_oneof![
        3 => (pos(), small_text()).prop_map(|(pos, text)| Edit::TextInsert { pos, text }),
        2 => (pos(), 1usize..4).prop_map(|(pos, len)| Edit::TextDelete { pos, len }),
        1 => (pos(), 0usize..4, "[abcé😀]{0,3}").prop_map(|(pos, del, text)| Edit::TextSet { pos, del, text }),
        2 => (pos(), value()).prop_map(|(pos, value)| Edit::ListInsert { pos, value }),
        1 => (pos(), 1usize..3).prop_map(|(pos, len)| Edit::ListDelete { pos, len }),
    ]
    .boxed()
}

fn movable_edit() -> BoxedStrategy<Edit> {
    prop_oneof![
        2 => (pos(), value()).prop_map(|(pos, value)| Edit::MovableInsert { pos, value }),
        3 => (pos(), pos()).prop_map(|(from, to)| Edit::MovableMove { from, to }),
        1 => (pos(), value()).prop_map(|(pos, value)| Edit::MovableSet { pos, value }),
        1 => pos().prop_map(|pos| Edit::MovableDelete { pos }),
    ]
    .boxed()
}

fn lww_edit() -> BoxedStrategy<Edit> {
    prop_oneof![
        2 => (any::<u8>(), value()).prop_map(|(key, value)| Edit::MapInsert { key, value }),
        1 => any::<u8>().prop_map(|key| Edit::MapRemove { key }),
        1 => value().prop_map(|value| Edit::RegisterSet { value }),
        1 => value().prop_map(|delta| Edit::CounterAdd { delta }),
        2 => any::<u8>().prop_map(|member| Edit::SetInsert { member }),
        2 => any::<u8>().prop_map(|member| Edit::SetRemove { member }),
    ]
    .boxed()
}

fn nested_edit() -> BoxedStrategy<Edit> {
    prop_oneof![
        1 => (any::<u8>(), any::<bool>()).prop_map(|(key, text)| Edit::NestCreate { key, text }),
        3 => (any::<u8>(), pos(), small_text(), any::<bool>())
            .prop_map(|(key, pos, text, delete)| Edit::NestWrite { key, pos, text, delete }),
        1 => pos().prop_map(|pos| Edit::ItemsCreate { pos }),
        2 => (pos(), any::<u8>(), value()).prop_map(|(pos, key, value)| Edit::ItemsWrite { pos, key, value }),
        1 => pos().prop_map(|pos| Edit::MovableNestCreate { pos }),
        2 => (pos(), value(), proptest::option::of(pos()))
            .prop_map(|(pos, delta, move_to)| Edit::MovableNestWrite { pos, delta, move_to }),
    ]
    .boxed()
}

fn edit(focus: Focus) -> BoxedStrategy<Edit> {
    match focus {
        Focus::All => prop_oneof![sequence_edit(), movable_edit(), lww_edit(), nested_edit()].boxed(),
        Focus::Sequences => sequence_edit(),
        Focus::Movable => movable_edit(),
        Focus::LastWriterWins => lww_edit(),
        Focus::Nested => nested_edit(),
    }
}

fn edits(focus: Focus) -> impl Strategy<Value = Vec<Edit>> {
    // Mostly one edit per transaction, sometimes several.
    prop_oneof![3 => prop::collection::vec(edit(focus), 1..=1), 1 => prop::collection::vec(edit(focus), 2..=4)]
}

/// Apply one edit inside a transaction and check its local effect against a simple model, so
/// that a replica that silently drops or misplaces its own edits cannot "converge" by accident.
fn apply_edit(txn: &mut Transaction<'_>, edit: &Edit) {
    match edit {
        Edit::TextInsert { pos, text } => {
            let mut model = chars(&txn.doc().text(TEXT).to_string());
            let pos = pos % (model.len() + 1);
            txn.text(TEXT).insert(pos, text).unwrap();
            model.splice(pos..pos, text.chars());
            assert_eq!(txn.doc().text(TEXT).to_string(), model.iter().collect::<String>(), "{edit:?}");
        }
        Edit::TextDelete { pos, len } => {
            let mut model = chars(&txn.doc().text(TEXT).to_string());
            if model.is_empty() {
                return;
            }
            let pos = pos % model.len();
            let len = (*len).min(model.len() - pos);
            txn.text(TEXT).delete(pos, len).unwrap();
            model.drain(pos..pos + len);
            assert_eq!(txn.doc().text(TEXT).to_string(), model.iter().collect::<String>(), "{edit:?}");
        }
        Edit::TextSet { pos, del, text } => {
            let mut model = chars(&txn.doc().text(TEXT).to_string());
            let pos = pos % (model.len() + 1);
            let del = (*del).min(model.len() - pos);
            model.splice(pos..pos + del, text.chars());
            let new: String = model.iter().collect();
            txn.text(TEXT).set_text(&new).unwrap();
            assert_eq!(txn.doc().text(TEXT).to_string(), new, "{edit:?}");
        }
        Edit::ListInsert { pos, value } => {
            let mut model = txn.doc().list::<i64>(LIST).to_vec().unwrap();
            let pos = pos % (model.len() + 1);
            txn.list::<i64>(LIST).insert(pos, value).unwrap();
            model.insert(pos, *value);
            assert_eq!(txn.doc().list::<i64>(LIST).to_vec().unwrap(), model, "{edit:?}");
        }
        Edit::ListDelete { pos, len } => {
            let mut model = txn.doc().list::<i64>(LIST).to_vec().unwrap();
            if model.is_empty() {
                return;
            }
            let pos = pos % model.len();
            let len = (*len).min(model.len() - pos);
            txn.list::<i64>(LIST).delete(pos, len).unwrap();
            model.drain(pos..pos + len);
            assert_eq!(txn.doc().list::<i64>(LIST).to_vec().unwrap(), model, "{edit:?}");
        }
        Edit::MovableInsert { pos, value } => {
            let mut model = txn.doc().movable_list::<i64>(MOVABLE).to_vec().unwrap();
            let pos = pos % (model.len() + 1);
            let elem = txn.movable_list::<i64>(MOVABLE).insert(pos, value).unwrap();
            model.insert(pos, *value);
            let list = txn.doc().movable_list::<i64>(MOVABLE);
            assert_eq!(list.to_vec().unwrap(), model, "{edit:?}");
            assert_eq!(list.index_of(elem), Some(pos), "{edit:?}: new element's identity");
        }
        Edit::MovableMove { from, to } => {
            let mut model = txn.doc().movable_list::<i64>(MOVABLE).to_vec().unwrap();
            if model.is_empty() {
                return;
            }
            let (from, to) = (from % model.len(), to % model.len());
            let elem = txn.doc().movable_list::<i64>(MOVABLE).elem_id(from).unwrap();
            txn.movable_list::<i64>(MOVABLE).move_item(from, to).unwrap();
            let item = model.remove(from);
            model.insert(to, item);
            let list = txn.doc().movable_list::<i64>(MOVABLE);
            assert_eq!(list.to_vec().unwrap(), model, "{edit:?}");
            assert_eq!(list.index_of(elem), Some(to), "{edit:?}: moved element keeps its identity");
        }
        Edit::MovableSet { pos, value } => {
            let mut model = txn.doc().movable_list::<i64>(MOVABLE).to_vec().unwrap();
            if model.is_empty() {
                return;
            }
            let pos = pos % model.len();
            let elem = txn.doc().movable_list::<i64>(MOVABLE).elem_id(pos).unwrap();
            txn.movable_list::<i64>(MOVABLE).set(pos, value).unwrap();
            model[pos] = *value;
            let list = txn.doc().movable_list::<i64>(MOVABLE);
            assert_eq!(list.to_vec().unwrap(), model, "{edit:?}");
            assert_eq!(list.elem_id(pos), Some(elem), "{edit:?}: set keeps the identity");
        }
        Edit::MovableDelete { pos } => {
            let mut model = txn.doc().movable_list::<i64>(MOVABLE).to_vec().unwrap();
            if model.is_empty() {
                return;
            }
            let pos = pos % model.len();
            txn.movable_list::<i64>(MOVABLE).delete(pos, 1).unwrap();
            model.remove(pos);
            assert_eq!(txn.doc().movable_list::<i64>(MOVABLE).to_vec().unwrap(), model, "{edit:?}");
        }
        Edit::MapInsert { key, value } => {
            txn.map::<String, i64>(MAP).insert(&key_name(*key), value).unwrap();
            assert_eq!(txn.doc().map::<String, i64>(MAP).get(&key_name(*key)).unwrap(), Some(*value));
        }
        Edit::MapRemove { key } => {
            let was = txn.doc().map::<String, i64>(MAP).contains_key(&key_name(*key)).unwrap();
            assert_eq!(txn.map::<String, i64>(MAP).remove(&key_name(*key)).unwrap(), was, "{edit:?}");
            assert!(!txn.doc().map::<String, i64>(MAP).contains_key(&key_name(*key)).unwrap());
        }
        Edit::RegisterSet { value } => {
            txn.register::<i64>(REGISTER).set(value).unwrap();
            assert_eq!(txn.doc().register::<i64>(REGISTER).get().unwrap(), Some(*value));
        }
        Edit::CounterAdd { delta } => {
            let before = txn.doc().counter(COUNTER).get();
            txn.counter(COUNTER).add(*delta).unwrap();
            assert_eq!(txn.doc().counter(COUNTER).get(), before + delta);
        }
        Edit::SetInsert { member } => {
            let member = member_name(*member);
            txn.or_set::<String>(SET).insert(&member).unwrap();
            assert!(txn.doc().or_set::<String>(SET).contains(&member).unwrap());
        }
        Edit::SetRemove { member } => {
            let member = member_name(*member);
            let was = txn.doc().or_set::<String>(SET).contains(&member).unwrap();
            assert_eq!(txn.or_set::<String>(SET).remove(&member).unwrap(), was, "{edit:?}");
            assert!(!txn.doc().or_set::<String>(SET).contains(&member).unwrap());
        }
        Edit::NestCreate { key, text } => {
            let kind = if *text { ContainerKind::Text } else { ContainerKind::List };
            let id = txn.map::<String, i64>(NEST).insert_container(&key_name(*key), kind).unwrap();
            assert_eq!(txn.doc().map::<String, i64>(NEST).get_container(&key_name(*key)).unwrap(), Some(id));
        }
        Edit::NestWrite { key, pos, text, delete } => {
            let Some(id) = txn.doc().map::<String, i64>(NEST).get_container(&key_name(*key)).unwrap() else {
                return;
            };
            match id.kind() {
                ContainerKind::Text => {
                    let len = txn.doc().text_by_id(&id).unwrap().len();
                    let mut nested = txn.text_by_id(&id).unwrap();
                    if *delete && len > 0 {
                        nested.delete(pos % len, 1).unwrap();
                    } else {
                        nested.insert(pos % (len + 1), text).unwrap();
                    }
                }
                ContainerKind::List => {
                    let len = txn.doc().list_by_id::<i64>(&id).unwrap().len();
                    let mut nested = txn.list_by_id::<i64>(&id).unwrap();
                    if *delete && len > 0 {
                        nested.delete(pos % len, 1).unwrap();
                    } else {
                        nested.insert(pos % (len + 1), &(text.len() as i64)).unwrap();
                    }
                }
                other => panic!("nested container of unexpected kind {other:?}"),
            }
        }
        Edit::ItemsCreate { pos } => {
            let len = txn.doc().list::<i64>(ITEMS).len();
            let pos = pos % (len + 1);
            let id = txn.list::<i64>(ITEMS).insert_container(pos, ContainerKind::Map).unwrap();
            assert_eq!(txn.doc().list::<i64>(ITEMS).get_container(pos), Some(id));
        }
        Edit::ItemsWrite { pos, key, value } => {
            let len = txn.doc().list::<i64>(ITEMS).len();
            if len == 0 {
                return;
            }
            let id = txn.doc().list::<i64>(ITEMS).get_container(pos % len).expect("ITEMS holds only maps");
            txn.map_by_id::<String, i64>(&id).unwrap().insert(&key_name(*key), value).unwrap();
            assert_eq!(
                txn.doc().map_by_id::<String, i64>(&id).unwrap().get(&key_name(*key)).unwrap(),
                Some(*value)
            );
        }
        Edit::MovableNestCreate { pos } => {
            let len = txn.doc().movable_list::<i64>(MOVABLE_NEST).len();
            let pos = pos % (len + 1);
            let id =
                txn.movable_list::<i64>(MOVABLE_NEST).insert_container(pos, ContainerKind::Counter).unwrap();
            assert_eq!(txn.doc().movable_list::<i64>(MOVABLE_NEST).get_container(pos), Some(id));
        }
        Edit::MovableNestWrite { pos, delta, move_to } => {
            let len = txn.doc().movable_list::<i64>(MOVABLE_NEST).len();
            if len == 0 {
                return;
            }
            let pos = pos % len;
            let id = txn.doc().movable_list::<i64>(MOVABLE_NEST).get_container(pos).expect("only counters");
            let before = txn.doc().counter_by_id(&id).unwrap().get();
            txn.counter_by_id(&id).unwrap().add(*delta).unwrap();
            assert_eq!(txn.doc().counter_by_id(&id).unwrap().get(), before + delta);
            if let Some(to) = move_to {
                let to = to % len;
                txn.movable_list::<i64>(MOVABLE_NEST).move_item(pos, to).unwrap();
                // The nested container travels with its element.
                assert_eq!(txn.doc().movable_list::<i64>(MOVABLE_NEST).get_container(to), Some(id));
            }
        }
    }
}

/// Run `edits` as one transaction on `doc`.
fn transact(doc: &mut Document, edits: &[Edit]) {
    let mut txn = doc.transact();
    for edit in edits {
        apply_edit(&mut txn, edit);
    }
    txn.commit();
}

/// Import `bytes` into `doc` and check what the document reports about its buffer.
fn deliver(doc: &mut Document, bytes: &[u8]) {
    let status = doc.import(bytes).expect("an honest batch must import");
    assert_eq!(status.pending, doc.pending_count(), "ImportStatus.pending disagrees with pending_count()");
    let missing = doc.missing_dependencies();
    if doc.pending_count() == 0 {
        assert!(missing.is_empty(), "nothing is buffered but dependencies are reported missing: {missing:?}");
    } else {
        // Something waits, so something must be missing, and what is named missing must
        // really be absent (otherwise the buffered change would have been applied).
        assert!(!missing.is_empty(), "{} changes wait but no dependency is missing", doc.pending_count());
        for span in &missing {
            assert!(span.len > 0, "empty missing span {span:?}");
            assert!(!doc.version().contains(span.start), "{span:?} is reported missing but is present");
        }
    }
}

// ---- replicas over an unreliable network --------------------------------------------------

#[derive(Clone, Debug)]
enum Action {
    /// A transaction on one replica; its change batch is broadcast. A withheld batch is only
    /// delivered in the final flush (a long network delay).
    Txn { replica: usize, edits: Vec<Edit>, withhold: bool },
    /// Deliver one in-flight packet, optionally keeping a copy in flight (a duplicate).
    Deliver { pick: usize, keep_copy: bool },
    /// Send another replica everything from the beginning (`export_since` of the empty version).
    SendAll { from: usize, to: usize },
    /// Move a replica's wall clock (possibly backwards).
    Clock { replica: usize, offset_ms: i64 },
    /// Fork a replica into a new one that joins the network.
    Fork { replica: usize },
}

fn action(focus: Focus) -> impl Strategy<Value = Action> {
    prop_oneof![
        5 => (0usize..8, edits(focus), prop::bool::weighted(0.15))
            .prop_map(|(replica, edits, withhold)| Action::Txn { replica, edits, withhold }),
        6 => (any::<usize>(), prop::bool::weighted(0.2))
            .prop_map(|(pick, keep_copy)| Action::Deliver { pick, keep_copy }),
        1 => (0usize..8, 0usize..8).prop_map(|(from, to)| Action::SendAll { from, to }),
        1 => (0usize..8, -3_600_000i64..3_600_000).prop_map(|(replica, offset_ms)| Action::Clock { replica, offset_ms }),
        1 => (0usize..8).prop_map(|replica| Action::Fork { replica }),
    ]
}

struct Packet {
    to: usize,
    bytes: Rc<Vec<u8>>,
    withheld: bool,
}

const MAX_REPLICAS: usize = 7;

struct Network {
    replicas: Vec<Document>,
    /// Whether each replica has a wall clock at all.
    clocked: Vec<bool>,
    in_flight: Vec<Packet>,
    /// Every batch ever sent, for the final re-import check.
    sent: Vec<Rc<Vec<u8>>>,
}

/// One replica per entry, peers 1, 2, ...; `Some(offset)` sets its wall clock that far from
/// `BASE_MS`, `None` leaves it without one.
fn replicas_with_clocks(clocks: &[Option<i64>]) -> Vec<Document> {
    clocks
        .iter()
        .enumerate()
        .map(|(i, clock)| {
            let mut doc = Document::new(PeerId::new(i as u64 + 1));
            if let Some(offset) = clock {
                doc.set_wall_clock(BASE_MS.saturating_add_signed(*offset));
            }
            doc
        })
        .collect()
}

impl Network {
    fn new(clocks: &[Option<i64>]) -> Self {
        let replicas = replicas_with_clocks(clocks);
        Network {
            replicas,
            clocked: clocks.iter().map(Option::is_some).collect(),
            in_flight: Vec::new(),
            sent: Vec::new(),
        }
    }

    fn send(&mut self, from: usize, bytes: Vec<u8>, withheld: bool) {
        let bytes = Rc::new(bytes);
        for to in (0..self.replicas.len()).filter(|&to| to != from) {
            self.in_flight.push(Packet { to, bytes: bytes.clone(), withheld });
        }
        self.sent.push(bytes);
    }

    fn run(&mut self, action: &Action) {
        let n = self.replicas.len();
        match action {
            Action::Txn { replica, edits, withhold } => {
                let r = replica % n;
                let before = self.replicas[r].version().clone();
                transact(&mut self.replicas[r], edits);
                // Per-transaction export: exactly the change just made.
                let batch = self.replicas[r].export_since(&before).unwrap();
                self.send(r, batch, *withhold);
            }
            Action::Deliver { pick, keep_copy } => {
                let ready: Vec<usize> =
                    (0..self.in_flight.len()).filter(|&i| !self.in_flight[i].withheld).collect();
                if ready.is_empty() {
                    return;
                }
                let index = ready[pick % ready.len()];
                let (to, bytes) = (self.in_flight[index].to, self.in_flight[index].bytes.clone());
                if !keep_copy {
                    self.in_flight.swap_remove(index);
                }
                deliver(&mut self.replicas[to], &bytes);
                self.check_equal_versions_have_equal_state(to);
            }
            Action::SendAll { from, to } => {
                let (from, to) = (from % n, to % n);
                if from != to {
                    let bytes = Rc::new(self.replicas[from].export_since(&VersionVector::new()).unwrap());
                    self.in_flight.push(Packet { to, bytes: bytes.clone(), withheld: false });
                    self.sent.push(bytes);
                }
            }
            Action::Clock { replica, offset_ms } => {
                let r = replica % n;
                if self.clocked[r] {
                    self.replicas[r].set_wall_clock(BASE_MS.saturating_add_signed(*offset_ms));
                }
            }
            Action::Fork { replica } => {
                let r = replica % n;
                if n < MAX_REPLICAS {
                    // A fresh peer id: forks must never share one with another replica.
                    let fork = self.replicas[r].fork(PeerId::new(100 + n as u64));
                    self.replicas.push(fork);
                    self.clocked.push(self.clocked[r]);
                    // The fork has what its origin has; it also needs what is in flight to it.
                    let copies: Vec<Packet> = self
                        .in_flight
                        .iter()
                        .filter(|p| p.to == r)
                        .map(|p| Packet { to: n, bytes: p.bytes.clone(), withheld: p.withheld })
                        .collect();
                    self.in_flight.extend(copies);
                }
            }
        }
    }

    /// Strong convergence at every step: two replicas that hold the same changes hold the same
    /// state, whatever order they received them in.
    fn check_equal_versions_have_equal_state(&self, r: usize) {
        let doc = &self.replicas[r];
        for (i, other) in self.replicas.iter().enumerate() {
            if i != r && other.version() == doc.version() {
                assert_eq!(doc.to_json(), other.to_json(), "replicas {r} and {i} have equal versions");
                assert!(
                    doc.encode_state() == other.encode_state(),
                    "replicas {r} and {i}: same version, other state"
                );
            }
        }
    }

    /// Deliver everything still in flight, withheld packets included, in random order and with
    /// random duplicates.
    fn flush(&mut self, rng: &mut StdRng) {
        let mut packets = std::mem::take(&mut self.in_flight);
        packets.shuffle(rng);
        let mut duplicates = Vec::new();
        for packet in packets {
            deliver(&mut self.replicas[packet.to], &packet.bytes);
            if rng.random_bool(0.2) {
                duplicates.push(packet);
            }
        }
        duplicates.shuffle(rng);
        for packet in duplicates {
            deliver(&mut self.replicas[packet.to], &packet.bytes);
        }
    }
}

proptest! {
    #![proptest_config(proptest_config(96, file!()))]

    /// The main convergence property: random edits on every type, delivered in random order,
    /// duplicated, delayed and out of causal order, end in byte-identical replicas.
    #[test]
    fn replicas_converge_over_an_unreliable_network(
        clocks in prop::collection::vec(prop::option::weighted(0.75, -3_600_000i64..3_600_000), 2..=5),
        actions in focus().prop_flat_map(|f| prop::collection::vec(action(f), 1..80)),
        seed in any::<u64>(),
    ) {
        let mut net = Network::new(&clocks);
        for action in &actions {
            net.run(action);
        }
        let mut rng = StdRng::seed_from_u64(seed);
        net.flush(&mut rng);

        for (i, doc) in net.replicas.iter().enumerate() {
            prop_assert_eq!(doc.pending_count(), 0, "replica {} still waits after every delivery", i);
            prop_assert!(doc.missing_dependencies().is_empty());
        }
        let docs: Vec<&Document> = net.replicas.iter().collect();
        assert_converged(&docs);

        // Idempotence: re-importing any batch ever sent, or another replica's whole encoded
        // document, applies nothing and changes no byte.
        let mut batches = net.sent.clone();
        batches.shuffle(&mut rng);
        let n = net.replicas.len();
        for r in 0..n {
            let state = net.replicas[r].encode_state();
            let history = net.replicas[r].encode();
            let other = net.replicas[(r + 1) % n].encode();
            let doc = &mut net.replicas[r];
            for batch in batches.iter().map(|b| b.as_slice()).chain([other.as_slice()]) {
                let status = doc.import(batch).unwrap();
                prop_assert_eq!(status.applied, 0, "a re-import applied something");
                prop_assert_eq!(status.pending, 0);
                prop_assert!(doc.encode_state() == state, "a re-import changed the state");
                prop_assert!(doc.encode() == history, "a re-import changed the history");
            }
        }

        // The converged document survives persistence: loading either encoding shows the same.
        let loaded = Document::load(&net.replicas[0].encode(), PeerId::new(999)).unwrap();
        prop_assert_eq!(loaded.to_json(), net.replicas[0].to_json());
        prop_assert!(loaded.encode() == net.replicas[0].encode());
        let from_state = Document::load(&net.replicas[0].encode_state(), PeerId::new(998)).unwrap();
        prop_assert_eq!(from_state.to_json(), net.replicas[0].to_json());
        prop_assert_eq!(from_state.version(), net.replicas[0].version());
    }
}

// ---- forks and past-version forks, merged back --------------------------------------------

/// One edit of every kind, as a fixed script for the deterministic fork test.
fn one_of_each() -> Vec<Edit> {
    vec![
        Edit::TextInsert { pos: 0, text: "héllo 😀".into() },
        Edit::ListInsert { pos: 0, value: 1 },
        Edit::MovableInsert { pos: 0, value: 2 },
        Edit::MovableInsert { pos: 1, value: 3 },
        Edit::MovableMove { from: 0, to: 1 },
        Edit::MovableSet { pos: 0, value: 4 },
        Edit::MapInsert { key: 0, value: 5 },
        Edit::RegisterSet { value: 6 },
        Edit::CounterAdd { delta: 7 },
        Edit::SetInsert { member: 0 },
        Edit::NestCreate { key: 1, text: true },
        Edit::NestWrite { key: 1, pos: 0, text: "nested".into(), delete: false },
        Edit::ItemsCreate { pos: 0 },
        Edit::ItemsWrite { pos: 0, key: 2, value: 8 },
        Edit::MovableNestCreate { pos: 0 },
        Edit::MovableNestWrite { pos: 0, delta: 9, move_to: None },
    ]
}

#[test]
fn forked_then_merged_replica_equals_one_that_only_imported() {
    let mut a = common::doc_at(1, 0);
    let mut b = common::doc_at(2, 500);
    transact(&mut a, &one_of_each());
    common::sync_pair(&mut a, &mut b);
    // F forks from A; F, A and B all edit concurrently, on every type.
    let mut f = a.fork(PeerId::new(3));
    f.set_wall_clock(BASE_MS + 1_000);
    for (doc, edits) in [
        (
            &mut f,
            vec![
                Edit::TextDelete { pos: 1, len: 2 },
                Edit::MovableMove { from: 1, to: 0 },
                Edit::SetRemove { member: 0 },
            ],
        ),
        (
            &mut a,
            vec![
                Edit::TextInsert { pos: 3, text: "A".into() },
                Edit::MapRemove { key: 0 },
                Edit::CounterAdd { delta: -1 },
            ],
        ),
        (
            &mut b,
            vec![
                Edit::TextSet { pos: 0, del: 1, text: "B".into() },
                Edit::MovableSet { pos: 1, value: 0 },
                Edit::SetInsert { member: 0 },
            ],
        ),
    ] {
        transact(doc, &edits);
        transact(doc, &one_of_each());
    }
    // An observer that never forks imports everyone's changes.
    let mut observer = Document::new(PeerId::new(9));
    for doc in [&f, &b, &a] {
        deliver(&mut observer, &doc.export_since(&VersionVector::new()).unwrap());
    }
    a.merge(&f).unwrap();
    a.merge(&b).unwrap();
    b.merge(&a).unwrap();
    f.merge(&a).unwrap();
    assert_converged(&[&observer, &a, &b, &f]);
    assert!(observer.text(TEXT).to_string().contains('A'));
    assert_eq!(observer.counter(COUNTER).get(), 7 * 4 - 1);
}

#[derive(Clone, Debug)]
enum ForkAction {
    /// A transaction on any document (replica or fork).
    Txn {
        doc: usize,
        edits: Vec<Edit>,
    },
    /// `to` pulls what it lacks from `from`.
    Sync {
        to: usize,
        from: usize,
    },
    Clock {
        doc: usize,
        offset_ms: i64,
    },
    /// Fork a document and edit on the fork.
    Fork {
        doc: usize,
        edits: Vec<Edit>,
    },
    /// Fork some document at a frontier recorded earlier (through any document that has that
    /// version) and edit on the fork.
    ForkAt {
        record: usize,
        via: usize,
        edits: Vec<Edit>,
    },
}

fn fork_action(focus: Focus) -> impl Strategy<Value = ForkAction> {
    prop_oneof![
        6 => (0usize..16, edits(focus)).prop_map(|(doc, edits)| ForkAction::Txn { doc, edits }),
        3 => (0usize..16, 0usize..16).prop_map(|(to, from)| ForkAction::Sync { to, from }),
        1 => (0usize..16, -3_600_000i64..3_600_000).prop_map(|(doc, offset_ms)| ForkAction::Clock { doc, offset_ms }),
        1 => (0usize..16, edits(focus)).prop_map(|(doc, edits)| ForkAction::Fork { doc, edits }),
        2 => (any::<usize>(), any::<usize>(), edits(focus))
            .prop_map(|(record, via, edits)| ForkAction::ForkAt { record, via, edits }),
    ]
}

/// A version seen during the run: its heads, its version vector and what it looked like.
struct Record {
    frontier: Frontier,
    version: VersionVector,
    json: serde_json::Value,
}

proptest! {
    #![proptest_config(proptest_config(64, file!()))]

    /// Forks (of the present and of past frontiers) that edit and are merged back converge with
    /// everyone, and with a replica that never forked and only imported.
    #[test]
    fn forks_and_past_forks_merge_back(
        clocks in prop::collection::vec(prop::option::weighted(0.75, -3_600_000i64..3_600_000), 2..=4),
        actions in focus().prop_flat_map(|f| prop::collection::vec(fork_action(f), 1..48)),
        seed in any::<u64>(),
    ) {
        let mut docs = replicas_with_clocks(&clocks);
        let mut records: Vec<Record> = Vec::new();
        let mut next_peer = 100;
        let record = |doc: &Document| Record {
            frontier: doc.frontier().clone(),
            version: doc.version().clone(),
            json: doc.to_json(),
        };

        for action in &actions {
            let n = docs.len();
            match action {
                ForkAction::Txn { doc, edits } => {
                    transact(&mut docs[doc % n], edits);
                    records.push(record(&docs[doc % n]));
                }
                ForkAction::Sync { to, from } => {
                    let (to, from) = (to % n, from % n);
                    if to != from {
                        let bytes = docs[from].export_since(docs[to].version()).unwrap();
                        deliver(&mut docs[to], &bytes);
                        records.push(record(&docs[to]));
                    }
                }
                ForkAction::Clock { doc, offset_ms } => {
                    // Only documents that were given a wall clock get one: the others must
                    // keep working on logical time alone.
                    if clocks.get(doc % n).is_some_and(Option::is_some) {
                        docs[doc % n].set_wall_clock(BASE_MS.saturating_add_signed(*offset_ms));
                    }
                }
                ForkAction::Fork { doc, edits } => {
                    next_peer += 1;
                    let mut fork = docs[doc % n].fork(PeerId::new(next_peer));
                    prop_assert_eq!(fork.to_json(), docs[doc % n].to_json());
                    transact(&mut fork, edits);
                    records.push(record(&fork));
                    docs.push(fork);
                }
                ForkAction::ForkAt { record: pick, via, edits } => {
                    if records.is_empty() {
                        continue;
                    }
                    let rec = &records[pick % records.len()];
                    let holders: Vec<usize> = (0..n).filter(|&i| docs[i].version().includes(&rec.version)).collect();
                    let source = &docs[holders[via % holders.len()]];
                    // Every document that has a version agrees on what its frontier means.
                    prop_assert_eq!(&source.version_of(&rec.frontier).unwrap(), &rec.version);
                    next_peer += 1;
                    let mut fork = source.fork_at(&rec.frontier, PeerId::new(next_peer)).unwrap();
                    // Checking out a past version shows exactly what that version showed.
                    prop_assert_eq!(&fork.to_json(), &rec.json);
                    prop_assert_eq!(fork.version(), &rec.version);
                    transact(&mut fork, edits);
                    records.push(record(&fork));
                    docs.push(fork);
                }
            }
        }

        // A replica that never forks and only imports full exports, in random order.
        let mut rng = StdRng::seed_from_u64(seed);
        let mut observer = Document::new(PeerId::new(9_999));
        let mut exports: Vec<Vec<u8>> = docs.iter().map(|d| d.export_since(&VersionVector::new()).unwrap()).collect();
        exports.shuffle(&mut rng);
        for bytes in &exports {
            deliver(&mut observer, bytes);
        }
        prop_assert_eq!(observer.pending_count(), 0);

        // Everyone else merges: the first document merges every other one (in random order),
        // then every other one merges the first.
        let mut order: Vec<usize> = (1..docs.len()).collect();
        order.shuffle(&mut rng);
        for &i in &order {
            let (head, tail) = docs.split_at_mut(i);
            head[0].merge(&tail[0]).unwrap();
        }
        for i in 1..docs.len() {
            let (head, tail) = docs.split_at_mut(i);
            let status = tail[0].merge(&head[0]).unwrap();
            prop_assert_eq!(status.pending, 0);
        }
        let mut all: Vec<&Document> = vec![&observer];
        all.extend(docs.iter());
        assert_converged(&all);
    }
}

proptest! {
    #![proptest_config(proptest_config(64, file!()))]

    /// Applying each transaction's changes borrowed (`apply_changes_from`, what the server
    /// does to keep them for the fan-out) gives the same document, history and bytes as
    /// applying them owned, and leaves the caller's changes as they were.
    #[test]
    fn borrowed_and_owned_application_agree(txns in proptest::collection::vec(focus().prop_flat_map(edits), 1..12)) {
        let mut author = common::doc_at(1, 0);
        let mut owned = common::doc_at(2, 0);
        let mut borrowed = common::doc_at(3, 0);
        for edits in &txns {
            let before = author.version().clone();
            transact(&mut author, edits);
            let changes = author.changes_since(&before).unwrap();
            let kept = changes.clone();
            borrowed.apply_changes_from(&changes).unwrap();
            prop_assert_eq!(&changes, &kept);
            owned.apply_changes(changes).unwrap();
        }
        assert_converged(&[&author, &owned, &borrowed]);
    }
}
