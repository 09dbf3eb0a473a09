//! Round trips of every op kind, random histories in random batches, the keystroke sizes
//! the protocol budgets for, hostile inputs, and the automerge-paper trace.

use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::bytes::{Budget, Reader, read_value};
use super::*;
use crate::doc::change::Change;
use crate::doc::columnar::tests::{edited_document, hand_built};
use crate::doc::id::{Counter, PeerId};
use crate::doc::op::Op;
use crate::{DecodeError, Document, DocumentConfig, VersionVector};

/// Encode `batches` in order through one encoder, decode them through one decoder, and check
/// that every batch comes back equal (derived fields included); returns the encoded batches.
fn round_trip(batches: &[&[Change]]) -> Vec<Vec<u8>> {
    let mut encoder = ChangeEncoder::new();
    let mut decoder = ChangeDecoder::default();
    let mut encoded = Vec::new();
    for &batch in batches {
        let mut bytes = Vec::new();
        encoder.encode(batch, &mut bytes);
        let decoded = decoder.decode(&bytes).unwrap();
        assert_eq!(decoded, batch);
        for (d, c) in decoded.iter().zip(batch) {
            assert_eq!((d.len, d.uses_timestamp), (c.len, c.uses_timestamp));
        }
        encoded.push(bytes);
    }
    encoded
}

fn unmerged_document(peer: u64) -> Document {
    Document::with_config(PeerId::new(peer), DocumentConfig::default().with_merge_changes(false))
}

/// The changes of `doc` since `before`.
fn since(doc: &Document, before: &VersionVector) -> Vec<Change> {
    doc.changes_since(before).unwrap()
}

#[test]
fn every_op_kind_round_trips() {
    let changes = hand_built();
    round_trip(&[&changes]);
    // One change per batch, and every suffix from empty tables.
    let singles: Vec<&[Change]> = changes.chunks(1).collect();
    round_trip(&singles);
    for start in 0..changes.len() {
        round_trip(&[&changes[start..]]);
    }
    // The same changes again on the same pair: now everything is in the tables.
    round_trip(&[&changes, &changes, &[], &changes[2..]]);
}

#[test]
fn an_empty_batch_is_zero_bytes() {
    assert_eq!(round_trip(&[&[]]), vec![Vec::<u8>::new()]);
}

#[test]
fn keystrokes_take_three_bytes_and_backspaces_two() {
    let mut doc = unmerged_document(0x1234_5678_9abc_def0);
    doc.set_wall_clock(1_700_000_000_000);
    let mut encoder = ChangeEncoder::new();
    let mut decoder = ChangeDecoder::default();
    let mut sizes = Vec::new();
    let mut type_and_send = |doc: &mut Document, edit: &dyn Fn(&mut Document)| {
        let before = doc.version().clone();
        edit(doc);
        let changes = since(doc, &before);
        let mut bytes = Vec::new();
        encoder.encode(&changes, &mut bytes);
        assert_eq!(decoder.decode(&bytes).unwrap(), changes);
        sizes.push(bytes.len());
    };
    for (i, c) in "héllo wörld".chars().enumerate() {
        type_and_send(&mut doc, &|d| d.transact().text("t").insert(i, &c.to_string()).unwrap());
    }
    for i in (8..11).rev() {
        type_and_send(&mut doc, &|d| d.transact().text("t").delete(i, 1).unwrap());
    }
    type_and_send(&mut doc, &|d| d.transact().text("t").insert(8, "l").unwrap());
    // A keystroke a while later: the timestamp moves forward by 150 ms.
    doc.set_wall_clock(1_700_000_000_150);
    type_and_send(&mut doc, &|d| d.transact().text("t").insert(9, "d").unwrap());
    // The first change introduces the peer (and its 8-byte id), the container and the time.
    assert!(sizes[0] < 30, "{sizes:?}");
    // 'é' and 'ö' are two UTF-8 bytes.
    let expected = [4, 3, 3, 3, 3, 3, 4, 3, 3, 3, 2, 2, 2, 3, 5];
    assert_eq!(sizes[1..], expected, "{sizes:?}");
}

#[test]
fn full_tables_fall_back_to_literals_and_still_round_trip() {
    let mut changes = Vec::new();
    for peer in 0..TABLE_PEERS as u64 + 10 {
        let mut doc = Document::new(PeerId::new(peer + 1));
        let mut txn = doc.transact();
        txn.counter(&format!("c{}", peer % (TABLE_CONTAINERS as u64 + 5))).add(1).unwrap();
        txn.text("t").insert(0, "x").unwrap();
        drop(txn);
        changes.extend(since(&doc, &VersionVector::new()));
    }
    let batches: Vec<&[Change]> = changes.chunks(97).collect();
    round_trip(&batches);
    // Twice over on one pair: the literals stay literals.
    round_trip(&[&changes, &changes]);
}

/// Changes of `count` different peers, each on its own root container named `name(i)`.
fn changes_of_many_peers(count: u64, name: impl Fn(u64) -> String) -> Vec<Change> {
    (0..count)
        .flat_map(|peer| {
            let mut doc = Document::new(PeerId::new(peer + 1));
            doc.transact().counter(&name(peer)).add(1).unwrap();
            since(&doc, &VersionVector::new())
        })
        .collect()
}

fn encode_all(changes: &[Change]) -> Vec<u8> {
    let mut bytes = Vec::new();
    ChangeEncoder::new().encode(changes, &mut bytes);
    bytes
}

#[test]
fn tables_beyond_the_limits_are_refused() {
    let limits = ChangeCodecLimits { max_peers: 8, ..Default::default() };
    let bytes = encode_all(&changes_of_many_peers(9, |_| "c".into()));
    let err = ChangeDecoder::new(limits).decode(&bytes).unwrap_err();
    assert_eq!(err, DecodeError::TooLarge { size: 9, limit: 8 });

    let limits = ChangeCodecLimits { max_containers: 8, ..Default::default() };
    let bytes = encode_all(&changes_of_many_peers(9, |i| format!("c{i}")));
    let err = ChangeDecoder::new(limits).decode(&bytes).unwrap_err();
    assert_eq!(err, DecodeError::TooLarge { size: 9, limit: 8 });

    let limits = ChangeCodecLimits { max_container_name_bytes: 100, ..Default::default() };
    let bytes = encode_all(&changes_of_many_peers(3, |i| format!("{i}").repeat(40)));
    let err = ChangeDecoder::new(limits).decode(&bytes).unwrap_err();
    assert_eq!(err, DecodeError::TooLarge { size: 120, limit: 100 });

    // Spread over many batches, the tables still count against the same limit.
    let limits = ChangeCodecLimits { max_peers: 8, ..Default::default() };
    let changes = changes_of_many_peers(9, |_| "c".into());
    let mut encoder = ChangeEncoder::new();
    let mut decoder = ChangeDecoder::new(limits);
    for (i, change) in changes.iter().enumerate() {
        let mut bytes = Vec::new();
        encoder.encode(std::slice::from_ref(change), &mut bytes);
        assert_eq!(decoder.decode(&bytes).is_ok(), i < 8);
    }
}

#[test]
fn batches_beyond_the_limits_are_refused() {
    let mut doc = unmerged_document(1);
    for i in 0..10 {
        let mut txn = doc.transact();
        txn.text("t").insert(i * 3, "abc").unwrap();
        txn.counter("c").add(1).unwrap();
    }
    let bytes = encode_all(&since(&doc, &VersionVector::new()));
    let decode = |limits: ChangeCodecLimits| ChangeDecoder::new(limits).decode(&bytes);
    assert!(decode(ChangeCodecLimits::default()).is_ok());
    let tight = [
        ChangeCodecLimits { max_changes: 9, ..Default::default() },
        ChangeCodecLimits { max_ops: 19, ..Default::default() },
        ChangeCodecLimits { max_text_bytes: 29, ..Default::default() },
    ];
    for limits in tight {
        assert!(matches!(decode(limits.clone()), Err(DecodeError::TooLarge { .. })), "{limits:?}");
    }
    // Counts larger than the input are truncation, not allocation: a new peer's change
    // declaring about 2^32 dependencies.
    let huge = [0x00, REF_NEW as u8, 1, 0, 0x80, 0xff, 0xff, 0xff, 0x0f];
    assert_eq!(ChangeDecoder::default().decode(&huge), Err(DecodeError::Truncated));
}

#[test]
fn deeply_nested_values_are_refused_not_recursed_into() {
    let nested: Vec<u8> = std::iter::repeat_n([8u8, 1], 100_000).flatten().collect();
    let mut budget = Budget::new(&ChangeCodecLimits::default());
    let err = read_value(&mut Reader::new(&nested), &mut budget).unwrap_err();
    assert!(matches!(err, DecodeError::Malformed(m) if m.contains("deep")));
}

#[test]
fn reserved_bits_and_dangling_references_are_errors() {
    let cases: [&[u8]; 6] = [
        &[0x20],                                                   // reserved change flag
        &[SAME_AUTHOR | ONE_OP],                                   // no previous author
        &[CONTINUES | ONE_OP, 0, 1],                               // a new peer without a previous change
        &[ONE_OP, 5],                                              // peer index 3 of an empty table
        &[ONE_OP, 0, 1, 0, 1, 0, SAME_CONTAINER | COUNTER_ADD, 0], // no previous container
        &[ONE_OP, 0, 1, 0, 1, 0, 0x20 | COUNTER_ADD, 2, 0],        // reserved op bits
    ];
    for bytes in cases {
        assert!(ChangeDecoder::default().decode(bytes).is_err(), "{bytes:?}");
    }
}

// ---- random histories ---------------------------------------------------------------------

/// Cut each change at the fractions in `cuts` (parts of a change continue each other, which
/// exercises the `CONTINUES` path) and the result into batches of the sizes in `batches`.
fn cut(changes: &[Change], cuts: &[u8]) -> Vec<Change> {
    let mut out = Vec::new();
    for (i, change) in changes.iter().enumerate() {
        let (start, len) = (change.id.counter, change.len);
        let mut points: Vec<Counter> = cuts
            .iter()
            .skip(i % cuts.len().max(1))
            .take(2)
            .map(|&f| start + (u64::from(len) * u64::from(f) / 256) as Counter)
            .filter(|&p| p > start)
            .collect();
        points.sort_unstable();
        points.dedup();
        let mut from = start;
        for to in points.into_iter().chain([start + len]) {
            out.push(change.slice(from, to));
            from = to;
        }
    }
    out
}

fn batched<'a>(changes: &'a [Change], sizes: &[usize]) -> Vec<&'a [Change]> {
    let mut batches = Vec::new();
    let mut rest = changes;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes.get(i % sizes.len().max(1)).copied().unwrap_or(1).clamp(1, rest.len());
        let (batch, tail) = rest.split_at(n);
        batches.push(batch);
        rest = tail;
        i += 1;
    }
    batches
}

/// A realistic stream of batches and the decoder states before each one.
fn stream_with_states() -> (Vec<Vec<u8>>, Vec<ChangeDecoder>) {
    let steps: Vec<u32> = (0..300u32).map(|i| (i * 7919 + 13) % 6000).collect();
    let changes = cut(&since(&edited_document(&steps), &VersionVector::new()), &[40, 200, 90]);
    let batches = batched(&changes, &[1, 3, 1, 7]);
    let encoded = round_trip(&batches);
    let mut decoder = ChangeDecoder::default();
    let mut states = Vec::new();
    for bytes in &encoded {
        states.push(decoder.clone());
        decoder.decode(bytes).unwrap();
    }
    (encoded, states)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::test_cases::proptest_cases(64)))]

    #[test]
    fn random_histories_round_trip_in_random_batches(
        steps in proptest::collection::vec(0u32..6_000, 0..80),
        cuts in proptest::collection::vec(any::<u8>(), 0..5),
        sizes in proptest::collection::vec(1usize..6, 1..5),
    ) {
        let doc = edited_document(&steps);
        let changes = cut(&since(&doc, &VersionVector::new()), &cuts);
        round_trip(&batched(&changes, &sizes));
        // What the decoder rebuilt is what the document holds.
        let mut decoder = ChangeDecoder::default();
        let mut bytes = Vec::new();
        ChangeEncoder::new().encode(&changes, &mut bytes);
        let mut replica = Document::new(PeerId::new(77));
        replica.apply_changes(decoder.decode(&bytes).unwrap()).unwrap();
        prop_assert_eq!(replica.encode_state(), doc.encode_state());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = ChangeDecoder::default().decode(&bytes);
        let limits = ChangeCodecLimits { max_peers: 2, max_containers: 2, max_items: 64, ..Default::default() };
        let _ = ChangeDecoder::new(limits).decode(&bytes);
    }
}

#[test]
fn damaged_batches_never_panic() {
    use rand::{RngExt, SeedableRng};
    let (encoded, states) = stream_with_states();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..20_000 {
        let at = rng.random_range(0..encoded.len());
        let mut damaged = encoded[at].clone();
        for _ in 0..rng.random_range(1..4) {
            let len = damaged.len();
            match rng.random_range(0..4) {
                0 if len > 0 => damaged[rng.random_range(0..len)] ^= 1 << rng.random_range(0..8),
                1 if len > 0 => damaged[rng.random_range(0..len)] = rng.random(),
                2 => damaged.insert(rng.random_range(0..=len), rng.random()),
                _ if len > 0 => {
                    damaged.remove(rng.random_range(0..len));
                }
                _ => {}
            }
        }
        // Decoded against the right context, then the following batches against whatever
        // context the damage left: errors, never panics.
        let mut decoder = states[at].clone();
        let _ = decoder.decode(&damaged);
        for next in encoded.iter().skip(at + 1).take(3) {
            let _ = decoder.decode(next);
        }
    }
    // Every truncation of every batch fails or decodes, against its context.
    for (bytes, state) in encoded.iter().zip(&states) {
        for len in 0..bytes.len() {
            let _ = state.clone().decode(&bytes[..len]);
        }
    }
}

// ---- the automerge-paper trace ----------------------------------------------------------

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Trace {
    #[serde(default)]
    start_content: String,
    end_content: String,
    txns: Vec<Txn>,
}

#[derive(serde::Deserialize)]
struct Txn {
    #[serde(default)]
    time: Option<String>,
    patches: Vec<(usize, usize, String)>,
}

/// Milliseconds since the Unix epoch of a UTC time written `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
fn unix_ms(time: &str) -> Option<u64> {
    let num = |range: std::ops::Range<usize>| time.get(range)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac = time.get(19..)?.trim_end_matches('Z');
    let ms = match frac.strip_prefix('.') {
        Some(digits) => format!("{digits:0<3}").get(..3)?.parse::<i64>().ok()?,
        None => 0,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(((days * 24 + hh) * 60 + mm) * 60 * 1000 + ss * 1000 + ms).ok()
}

struct Typed {
    changes: usize,
    bytes: usize,
    encode: Duration,
    decode: Duration,
    apply: Duration,
}

/// Type the first `limit` transactions, one change each, sending every change as its own
/// batch to a replica; `wall` gives the wall clock of transaction `i`.
// The clock only times the codec for the figures printed; nothing depends on it.
#[allow(clippy::disallowed_methods)]
fn type_trace(trace: &Trace, limit: usize, wall: impl Fn(usize, &Txn) -> Option<u64>) -> (Typed, Document) {
    let mut author = unmerged_document(0x5eed_cafe_f00d_0001);
    let mut replica = Document::new(PeerId::new(2));
    let mut encoder = ChangeEncoder::new();
    let mut decoder = ChangeDecoder::default();
    let mut typed =
        Typed { changes: 0, bytes: 0, encode: Duration::ZERO, decode: Duration::ZERO, apply: Duration::ZERO };
    let mut bytes = Vec::new();
    assert!(trace.start_content.is_empty());
    for (i, txn) in trace.txns.iter().take(limit).enumerate() {
        if let Some(ms) = wall(i, txn) {
            author.set_wall_clock(ms);
        }
        let before = author.version().clone();
        {
            let mut t = author.transact();
            let mut text = t.text("text");
            for (pos, del, ins) in &txn.patches {
                if *del > 0 {
                    text.delete(*pos, *del).unwrap();
                }
                if !ins.is_empty() {
                    text.insert(*pos, ins).unwrap();
                }
            }
        }
        let changes = since(&author, &before);
        bytes.clear();
        let start = Instant::now();
        encoder.encode(&changes, &mut bytes);
        typed.encode += start.elapsed();
        let start = Instant::now();
        let decoded = decoder.decode(&bytes).unwrap();
        typed.decode += start.elapsed();
        assert!(decoded == changes, "transaction {i}");
        let start = Instant::now();
        replica.apply_changes(decoded).unwrap();
        typed.apply += start.elapsed();
        typed.changes += changes.len();
        typed.bytes += bytes.len();
    }
    (typed, replica)
}

#[test]
fn automerge_paper_keystrokes_cost_a_few_bytes_each() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/traces/automerge-paper.json.gz");
    if !path.exists() {
        println!("skipping: {} not found", path.display());
        return;
    }
    let file = std::fs::File::open(&path).unwrap();
    let trace: Trace = serde_json::from_reader(flate2::read::GzDecoder::new(file)).unwrap();

    // As recorded: nearly every keystroke in the same millisecond as the one before.
    let (typed, replica) = type_trace(&trace, usize::MAX, |_, txn| txn.time.as_deref().and_then(unix_ms));
    assert_eq!(replica.text("text").to_string(), trace.end_content);
    assert_eq!(typed.changes, trace.txns.len());
    let average = typed.bytes as f64 / typed.changes as f64;
    println!(
        "automerge-paper: {} keystroke changes, {} bytes, {average:.3} bytes per change; encode {:?}, decode {:?}, apply {:?}",
        typed.changes, typed.bytes, typed.encode, typed.decode, typed.apply
    );
    assert!(average <= 12.0, "{average} bytes per keystroke");

    // Typed live: 173 ms between keystrokes, so every change carries a wall-clock step.
    let (typed, _) = type_trace(&trace, 20_000, |i, _| Some(1_700_000_000_000 + 173 * i as u64));
    let average = typed.bytes as f64 / typed.changes as f64;
    println!("automerge-paper, first 20000 typed 173 ms apart: {average:.3} bytes per change");
    assert!(average <= 12.0, "{average} bytes per keystroke");
}

#[test]
fn trace_times_parse_as_unix_milliseconds() {
    assert_eq!(unix_ms("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(unix_ms("2021-04-19T06:06:58.219Z"), Some(1_618_812_418_219));
    assert_eq!(unix_ms("2021-04-19T06:06:58.05Z"), Some(1_618_812_418_050));
    assert_eq!(unix_ms("garbage"), None);
}

/// `every_op_kind_round_trips` relies on `hand_built` holding every kind of op.
#[test]
fn hand_built_history_holds_every_op_kind() {
    let mut kinds = [false; 12];
    for change in hand_built() {
        for Op { content, .. } in &change.ops {
            let kind = super::encoder::op_kind_code(content);
            kinds[kind as usize] = true;
        }
    }
    assert!(kinds.iter().all(|&k| k), "{kinds:?}");
}
