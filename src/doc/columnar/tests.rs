//! Round trips of hand-built and randomly edited histories, and hostile inputs.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::wire::{RleReader, RleWriter, write_varint};
use super::{decode_changes, encode_changes};
use crate::doc::change::Change;
use crate::doc::clock::Timestamp;
use crate::doc::deletion::{DeleteRun, forward_runs};
use crate::doc::id::{Counter, IdSpan, OpId, PeerId};
use crate::doc::op::{ContainerId, ContainerKind, Element, Op, OpContent};
use crate::doc::types::sequence::{Anchor, Side};
use crate::doc::version::Frontier;
use crate::{DecodeError, Document, Value, VersionVector};

const LIMIT: usize = 64 * 1024 * 1024;

fn id(peer: u64, counter: Counter) -> OpId {
    OpId::new(PeerId::new(peer), counter)
}

fn change(at: OpId, deps: &[OpId], lamport: u32, timestamp: u64, ops: Vec<Op>) -> Change {
    let mut change = Change {
        id: at,
        deps: Frontier::from_ids(deps.iter().copied()),
        lamport,
        timestamp: Timestamp::from_raw(timestamp),
        ops,
        len: 0,
        uses_timestamp: false,
    };
    change.validate_shape().unwrap();
    change
}

fn op(container: &ContainerId, content: OpContent) -> Op {
    Op { container: container.clone(), content }
}

fn root(name: &str, kind: ContainerKind) -> ContainerId {
    ContainerId::root(name, kind)
}

fn round_trip(changes: &[Change]) -> Vec<u8> {
    let refs: Vec<&Change> = changes.iter().collect();
    let bytes = encode_changes(&refs);
    let decoded = decode_changes(&bytes, LIMIT).unwrap();
    assert_eq!(decoded, changes);
    for (d, c) in decoded.iter().zip(changes) {
        assert_eq!(d.len, c.len);
    }
    bytes
}

/// One value of every variant, nested, with the floats that equality is picky about.
fn every_value() -> Value {
    let mut map = BTreeMap::new();
    map.insert(String::new(), Value::Null);
    map.insert("ключ".into(), Value::List(vec![Value::Bool(true), Value::Bool(false)]));
    Value::List(vec![
        Value::Null,
        Value::Bool(true),
        Value::Int(i64::MIN),
        Value::Int(-1),
        Value::Uint(u64::MAX),
        Value::Float(-0.0),
        Value::Float(f64::NAN),
        Value::Float(f64::INFINITY),
        Value::Float(1.5),
        Value::String("é😀".into()),
        Value::Bytes(vec![0, 255, 7]),
        Value::List(vec![]),
        Value::Map(map),
    ])
}

/// Every op kind, element kind and anchor form; several peers, concurrent deps, timestamps
/// going backwards, Lamport jumps and counters at the end of the counter space.
pub(crate) fn hand_built() -> Vec<Change> {
    let text = root("text", ContainerKind::Text);
    let list = root("list", ContainerKind::List);
    let movable = root("movable", ContainerKind::MovableList);
    let map = root("map", ContainerKind::Map);
    let register = root("", ContainerKind::Register);
    let counter = root("counter", ContainerKind::Counter);
    let set = root("set", ContainerKind::OrSet);
    let nested_text = ContainerId::Child { id: id(1, 6), kind: ContainerKind::Text };
    let nested_map = ContainerId::Child { id: id(u64::MAX, 0), kind: ContainerKind::Map };
    let kinds = [
        ContainerKind::Text,
        ContainerKind::List,
        ContainerKind::MovableList,
        ContainerKind::Map,
        ContainerKind::Register,
        ContainerKind::Counter,
        ContainerKind::OrSet,
    ];
    let a = 1;
    let b = u64::MAX;
    let c = 0;
    vec![
        change(
            id(a, 0),
            &[],
            0,
            1 << 40,
            vec![
                op(
                    &text,
                    OpContent::TextInsert {
                        anchor: Anchor { parent: None, side: Side::Right },
                        text: "héllo".into(),
                    },
                ),
                op(&text, OpContent::TextInsert { anchor: Anchor::after(id(a, 4)), text: "😀".into() }),
                op(
                    &map,
                    OpContent::MapSet {
                        key: "t".into(),
                        value: Some(Element::Container(ContainerKind::Text)),
                    },
                ),
            ],
        ),
        change(
            id(a, 7),
            &[id(a, 6)],
            7,
            (1 << 40) + 1,
            vec![
                op(
                    &nested_text,
                    OpContent::TextInsert {
                        anchor: Anchor { parent: None, side: Side::Left },
                        text: "x".into(),
                    },
                ),
                op(
                    &text,
                    OpContent::TextInsert {
                        anchor: Anchor { parent: Some(id(a, 7)), side: Side::Left },
                        text: "ab".into(),
                    },
                ),
                op(
                    &text,
                    OpContent::SeqDelete {
                        spans: vec![
                            DeleteRun::new(IdSpan::new(id(a, 1), 2), true),
                            DeleteRun::forward(IdSpan::new(id(a, 8), 1)),
                        ]
                        .into(),
                    },
                ),
            ],
        ),
        // Concurrent with a's second change; a timestamp far in the past.
        change(
            id(b, 0),
            &[id(a, 6)],
            9,
            3,
            vec![
                op(
                    &map,
                    OpContent::MapSet { key: every_value(), value: Some(Element::Value(every_value())) },
                ),
                op(&map, OpContent::MapSet { key: Value::Int(3), value: None }),
                op(
                    &map,
                    OpContent::MapSet {
                        key: "m".into(),
                        value: Some(Element::Container(ContainerKind::Map)),
                    },
                ),
            ],
        ),
        // Merges both; Lamport jumps ahead; a peer that only appears in ids.
        change(
            id(a, 11),
            &[id(a, 10), id(b, 2)],
            1_000,
            u64::MAX,
            vec![
                op(
                    &list,
                    OpContent::ListInsert {
                        anchor: Anchor { parent: None, side: Side::Right },
                        items: kinds
                            .iter()
                            .map(|&k| Element::Container(k))
                            .chain([Element::Value(every_value())])
                            .collect(),
                    },
                ),
                op(
                    &list,
                    OpContent::SeqDelete {
                        spans: forward_runs([IdSpan::new(id(a, 12), 3), IdSpan::new(id(c, 40), 2)]),
                    },
                ),
                op(
                    &list,
                    OpContent::ListInsert {
                        anchor: Anchor::after(id(a, 13)),
                        items: vec![Element::Value(Value::Null)],
                    },
                ),
                op(
                    &movable,
                    OpContent::MovableInsert {
                        anchor: Anchor { parent: Some(id(b, 77)), side: Side::Left },
                        items: vec![
                            Element::Value(Value::Int(1)),
                            Element::Container(ContainerKind::Counter),
                        ],
                    },
                ),
                op(
                    &movable,
                    OpContent::MovableMove {
                        elem: id(a, 21),
                        anchor: Anchor { parent: Some(id(a, 22)), side: Side::Right },
                    },
                ),
                op(&movable, OpContent::MovableMove { elem: id(c, 5), anchor: Anchor::after(id(a, 23)) }),
                op(
                    &movable,
                    OpContent::MovableSet {
                        elem: id(a, 22),
                        value: Element::Value(Value::String("s".into())),
                    },
                ),
                op(
                    &movable,
                    OpContent::MovableSet {
                        elem: id(a, 21),
                        value: Element::Container(ContainerKind::OrSet),
                    },
                ),
                op(&movable, OpContent::MovableDelete { elems: vec![id(a, 21), id(c, 9), id(b, 0)] }),
                op(&movable, OpContent::MovableDelete { elems: vec![] }),
                op(&register, OpContent::RegisterSet { value: Element::Value(Value::Float(f64::NAN)) }),
                op(&register, OpContent::RegisterSet { value: Element::Container(ContainerKind::List) }),
                op(&counter, OpContent::CounterAdd { delta: i64::MIN }),
                op(&counter, OpContent::CounterAdd { delta: 42 }),
                op(&set, OpContent::SetAdd { value: Value::Bytes(vec![1, 2, 3]) }),
                op(
                    &set,
                    OpContent::SetRemove {
                        value: Value::Bytes(vec![1, 2, 3]),
                        tags: vec![id(a, 33), id(b, 1)],
                    },
                ),
                op(
                    &nested_map,
                    OpContent::MapSet { key: Value::Uint(7), value: Some(Element::Value(Value::Null)) },
                ),
            ],
        ),
        // Lamport below the expectation, and a change that does not continue its peer's ids.
        change(id(b, 50), &[id(b, 2)], 2, 2, vec![op(&counter, OpContent::CounterAdd { delta: -1 })]),
        // Counters at the end of the counter space, and a Lamport time at its end.
        change(
            id(c, Counter::MAX - 3),
            &[id(a, 36), id(b, 50), id(c, 100)],
            u32::MAX - 3,
            0,
            vec![
                op(
                    &text,
                    OpContent::TextInsert {
                        anchor: Anchor { parent: Some(id(c, Counter::MAX)), side: Side::Right },
                        text: "ab".into(),
                    },
                ),
                op(
                    &text,
                    OpContent::SeqDelete { spans: forward_runs([IdSpan::new(id(c, Counter::MAX), 1)]) },
                ),
            ],
        ),
    ]
}

#[test]
fn every_op_kind_round_trips() {
    let changes = hand_built();
    round_trip(&changes);
    // Any suffix too: the first change then depends on ids outside the buffer.
    for start in 0..changes.len() {
        round_trip(&changes[start..]);
    }
    // And every change alone.
    for change in &changes {
        round_trip(std::slice::from_ref(change));
    }
}

#[test]
fn an_empty_history_round_trips() {
    assert_eq!(round_trip(&[]).len(), 1 + 1 + 1 + 1 + super::COLUMN_COUNT);
}

#[test]
fn long_runs_of_typing_take_a_few_bytes() {
    let text = root("text", ContainerKind::Text);
    let mut changes = Vec::new();
    for i in 0..10_000u32 {
        let anchor = match i {
            0 => Anchor { parent: None, side: Side::Right },
            _ => Anchor::after(id(9, i - 1)),
        };
        let deps: Vec<OpId> = i.checked_sub(1).map(|p| id(9, p)).into_iter().collect();
        let ops = vec![op(&text, OpContent::TextInsert { anchor, text: "a".into() })];
        changes.push(change(id(9, i), &deps, i, 1_000_000 + u64::from(i), ops));
    }
    let bytes = round_trip(&changes);
    assert!(bytes.len() < 200, "{} bytes", bytes.len());
}

#[test]
fn runs_are_written_as_runs_and_read_back_lazily() {
    let values = [5, 5, 5, 1, 2, 2, 3, 3, 3, 3, 0, 9, 9];
    let mut writer = RleWriter::default();
    for v in values {
        writer.push(v);
    }
    let bytes = writer.finish();
    let mut reader = RleReader::new(&bytes);
    for v in values {
        assert_eq!(reader.next().unwrap(), v);
    }
    reader.finish().unwrap();
    assert!(reader.next().is_err());

    // A run of 2^62 values costs a few bytes and nothing until pulled.
    let mut huge = Vec::new();
    write_varint(&mut huge, super::wire::zigzag(1 << 62));
    write_varint(&mut huge, 7);
    let mut reader = RleReader::new(&huge);
    assert_eq!(reader.next().unwrap(), 7);
    assert!(reader.finish().is_err());
}

/// A hostile encoding of `change_count` changes (one delete of one id each) whose every column is
/// one run of `2^40` values: some hundred bytes that describe a terabyte of changes.
fn run_bomb(change_count: u64) -> Vec<u8> {
    let mut out = vec![super::FORMAT_VERSION];
    write_varint(&mut out, change_count);
    out.extend_from_slice(&[1, 1]); // one peer: 1
    out.extend_from_slice(&[1, 5]); // one container: root counter ""
    write_varint(&mut out, 0);
    let run = |value: u64| {
        let mut bytes = Vec::new();
        write_varint(&mut bytes, super::wire::zigzag(1 << 40));
        write_varint(&mut bytes, value);
        bytes
    };
    let columns: [Option<u64>; super::COLUMN_COUNT] = [
        Some(0),                 // peer
        Some(0),                 // counter continues
        Some(1),                 // no deps
        None,                    // dep peer
        None,                    // dep counter
        Some(0),                 // lamport as expected
        Some(0),                 // same timestamp
        Some(1),                 // one op
        Some(0),                 // container 0
        Some(super::SEQ_DELETE), // a delete
        None,
        None,
        None,
        None,
        None,
        Some(1), // of one run:
        Some(0), // of peer 1,
        Some(2), // at the predicted id plus one (id 0),
        Some(2), // of one id, forward
        None,
    ];
    for column in columns {
        let bytes = column.map(run).unwrap_or_default();
        write_varint(&mut out, (bytes.len() as u64) << 1);
        out.extend_from_slice(&bytes);
    }
    out
}

#[test]
fn declared_sizes_are_bounded_by_the_limit_not_trusted() {
    let bomb = run_bomb(1 << 40);
    assert!(bomb.len() < 128);
    assert!(matches!(decode_changes(&bomb, 1 << 20), Err(DecodeError::TooLarge { .. })));
    // Declaring three changes, it decodes them and then finds the runs too long.
    assert!(matches!(decode_changes(&run_bomb(3), 1 << 20), Err(DecodeError::Malformed(_))));

    // A DEFLATE'd column that declares a huge raw length is refused before inflating.
    let mut bytes = encode_changes(&[]);
    bytes.truncate(bytes.len() - super::COLUMN_COUNT);
    write_varint(&mut bytes, (4 << 1) | 1);
    write_varint(&mut bytes, 1 << 50);
    bytes.extend_from_slice(&[0, 0, 0, 0]);
    assert!(matches!(decode_changes(&bytes, LIMIT), Err(DecodeError::TooLarge { .. })));

    // Counts larger than the input are truncation, not allocation.
    let mut bytes = vec![super::FORMAT_VERSION, 0];
    write_varint(&mut bytes, u64::MAX);
    assert_eq!(decode_changes(&bytes, LIMIT), Err(DecodeError::Truncated));
}

#[test]
fn deeply_nested_values_are_refused_not_recursed_into() {
    let mut bytes = encode_changes(&[]);
    // Replace the empty generic column by 100 000 nested list headers.
    bytes.pop();
    let nested: Vec<u8> = std::iter::repeat_n([8u8, 1], 100_000).flatten().collect();
    write_varint(&mut bytes, (nested.len() as u64) << 1);
    bytes.extend_from_slice(&nested);
    // Nothing reads the generic column without changes, so this is "extra values"...
    assert!(decode_changes(&bytes, LIMIT).is_err());
    // ...and through the value reader it is a depth error.
    let mut reader = super::values::GenericReader { input: super::wire::Reader::new(&nested), peers: &[] };
    let err = reader.value(&mut super::wire::Budget::new(LIMIT)).unwrap_err();
    assert!(matches!(err, DecodeError::Malformed(m) if m.contains("deep")));
}

/// Every truncation and every single-bit flip decodes or fails, without panicking.
fn never_panics_on_damage(bytes: &[u8]) {
    for len in 0..bytes.len() {
        assert!(decode_changes(&bytes[..len], LIMIT).is_err(), "prefix of {len} bytes decoded");
    }
    let mut damaged = bytes.to_vec();
    for at in 0..bytes.len() {
        for bit in 0..8 {
            damaged[at] ^= 1 << bit;
            let _ = decode_changes(&damaged, 1 << 20);
            damaged[at] ^= 1 << bit;
        }
    }
}

#[test]
fn truncated_and_flipped_encodings_never_panic() {
    let changes = hand_built();
    let refs: Vec<&Change> = changes.iter().collect();
    never_panics_on_damage(&encode_changes(&refs));
    let doc = edited_document(&[1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 4, 8, 12, 0, 16, 17, 18, 19]);
    let changes = doc.changes_since(&VersionVector::new()).unwrap();
    let refs: Vec<&Change> = changes.iter().collect();
    let bytes = encode_changes(&refs);
    never_panics_on_damage(&bytes);
}

// ---- random documents through the public API ------------------------------------------------

/// One random edit on one of three replicas, or a sync between two of them. Numbers are
/// reduced modulo whatever they index when applied, so every edit is valid.
fn apply(docs: &mut [Document], step: u32) {
    let replica = (step % 3) as usize;
    let what = (step / 3) % 20;
    let n = (step / 60) as usize;
    if what == 19 {
        let from = (replica + 1 + n % 2) % docs.len();
        let bytes = docs[from].export_since(docs[replica].version()).unwrap();
        docs[replica].import(&bytes).unwrap();
        return;
    }
    let doc = &mut docs[replica];
    let mut txn = doc.transact();
    let _ = (|| -> Result<(), crate::Error> {
        match what {
            0 | 1 => {
                let mut text = txn.text("text");
                let len = text.read().len();
                text.insert(n % (len + 1), ["a", "é", "😀 ", "xyz"][n % 4])?;
            }
            2 => {
                let mut text = txn.text("text");
                let len = text.read().len();
                if len > 0 {
                    let pos = n % len;
                    text.delete(pos, (1 + n % 3).min(len - pos))?;
                }
            }
            3 => {
                let mut list = txn.list::<i64>("list");
                let len = list.read().len();
                list.insert_many(n % (len + 1), &[n as i64, -(n as i64)])?;
            }
            4 => {
                let mut list = txn.list::<i64>("list");
                let len = list.read().len();
                if len > 0 {
                    list.delete(n % len, 1)?;
                }
            }
            5 => {
                let mut list = txn.movable_list::<String>("movable");
                let len = list.read().len();
                list.insert(n % (len + 1), &format!("m{n}"))?;
            }
            6 => {
                let mut list = txn.movable_list::<String>("movable");
                let len = list.read().len();
                if len > 1 {
                    list.move_item(n % len, (n / 7) % len)?;
                }
            }
            7 => {
                let mut list = txn.movable_list::<String>("movable");
                let len = list.read().len();
                if len > 0 {
                    list.set(n % len, &"set".to_string())?;
                }
            }
            8 => {
                let mut list = txn.movable_list::<String>("movable");
                let len = list.read().len();
                if len > 0 {
                    list.delete(n % len, 1)?;
                }
            }
            9 => txn.map::<String, f64>("map").insert(&format!("k{}", n % 4), &(n as f64 / 3.0))?,
            10 => {
                txn.map::<String, i64>("map").remove(&format!("k{}", n % 4))?;
            }
            11 => txn.counter("counter").add(n as i64 - 50)?,
            12 => txn.or_set::<String>("set").insert(&format!("s{}", n % 3))?,
            13 => {
                txn.or_set::<String>("set").remove(&format!("s{}", n % 3))?;
            }
            14 => txn.register::<Vec<u8>>("register").set(&vec![n as u8; n % 4])?,
            15 => {
                txn.map::<String, i64>("nest")
                    .insert_container(&format!("t{}", n % 2), ContainerKind::Text)?;
            }
            16 => {
                let nested = txn.doc().map::<String, i64>("nest").get_container(&format!("t{}", n % 2))?;
                if let Some(nested) = nested {
                    txn.text_by_id(&nested)?.insert(0, "nested")?;
                }
            }
            17 => {
                let mut list = txn.movable_list::<String>("movable");
                let len = list.read().len();
                let child = list.insert_container(n % (len + 1), ContainerKind::Counter)?;
                txn.counter_by_id(&child)?.add(3)?;
            }
            _ => {
                // Several ops in one change.
                txn.text("text").push_str("+")?;
                txn.counter("counter").add(1)?;
                txn.list::<i64>("list").push(&7)?;
            }
        }
        Ok(())
    })();
    txn.commit();
}

pub(crate) fn edited_document(steps: &[u32]) -> Document {
    let mut docs: Vec<Document> = (1..=3).map(|p| Document::new(PeerId::new(p * 0x1234_5678_9abc))).collect();
    for (i, doc) in docs.iter_mut().enumerate() {
        doc.set_wall_clock(1_700_000_000_000 + i as u64 * 7);
    }
    for &step in steps {
        apply(&mut docs, step);
        let wall = 1_700_000_000_000 + u64::from(step % 1000);
        docs[(step % 3) as usize].set_wall_clock(wall);
    }
    let (first, rest) = docs.split_at_mut(1);
    for other in rest.iter() {
        first[0].import(&other.export_since(first[0].version()).unwrap()).unwrap();
    }
    docs.swap_remove(0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::test_cases::proptest_cases(64)))]

    #[test]
    fn random_histories_round_trip(
        steps in proptest::collection::vec(0u32..6_000, 0..80),
        cut in 0usize..100,
    ) {
        let doc = edited_document(&steps);
        let changes = doc.changes_since(&VersionVector::new()).unwrap();
        round_trip(&changes);
        // A partial export: what a replica at an earlier version lacks.
        let mut earlier = VersionVector::new();
        for (peer, end) in doc.version().iter() {
            earlier.set(peer, (end as usize * cut / 100) as Counter);
        }
        if let Ok(partial) = doc.changes_since(&earlier) {
            round_trip(&partial);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_changes(&bytes, 1 << 20);
        let mut prefixed = vec![1];
        prefixed.extend_from_slice(&bytes);
        let _ = decode_changes(&prefixed, 1 << 20);
    }
}

#[test]
fn randomly_damaged_encodings_never_panic() {
    use rand::{RngExt, SeedableRng};
    let steps: Vec<u32> = (0..600u32).map(|i| (i * 7919 + 13) % 6000).collect();
    let changes = edited_document(&steps).changes_since(&VersionVector::new()).unwrap();
    let bytes = encode_changes(&changes.iter().collect::<Vec<_>>());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..5_000 {
        let mut damaged = bytes.clone();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..damaged.len());
            match rng.random_range(0..4) {
                0 => damaged[at] ^= 1 << rng.random_range(0..8),
                1 => damaged[at] = rng.random(),
                2 => damaged.insert(at, rng.random()),
                _ => {
                    damaged.remove(at);
                }
            }
        }
        let _ = decode_changes(&damaged, 1 << 20);
    }
}
