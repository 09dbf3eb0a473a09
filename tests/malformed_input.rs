//! Hostile and corrupt input: truncated, bit-flipped, random and oversized buffers, and
//! well-formed changes that cannot belong to the document. Every one must be refused with an
//! error (never a panic), and the document must be exactly as it was.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use common::{BASE_MS, doc_at, fingerprint};
use crdt_sync::{
    Change, ClockError, ContainerId, ContainerKind, DecodeError, Document, DocumentConfig, EncodeOptions,
    Error, PeerId, Transaction, VersionVector,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value as Json, json};

const HEADER_LEN: usize = 15;
/// A text inserted on its own, so that its postcard length prefix (8) sits right before it.
const MARKER: &str = "ZZZZZZZZ";

/// A document with content in every container type, some repetitive text (so that lz4 pays
/// off) and a standalone marker text.
fn source() -> (Document, Document) {
    let mut s = doc_at(1, 0);
    {
        let mut txn = s.transact();
        txn.text("t").insert(0, "héllo 😀 ").unwrap();
        txn.counter("c").add(3).unwrap();
    }
    // The target is the source at this early version: every valid input below changes it.
    let target = s.fork(PeerId::new(2));
    {
        let mut txn = s.transact();
        txn.text("t").push_str(&"all work and no play ".repeat(12)).unwrap();
        txn.list::<i64>("l").insert_many(0, &[1, 2, 3]).unwrap();
        txn.movable_list::<String>("ml").push(&"m".to_string()).unwrap();
        txn.register::<String>("r").set(&"reg".to_string()).unwrap();
        txn.or_set::<i64>("s").insert(&42).unwrap();
        let nested =
            txn.map::<String, i64>("m").insert_container(&"n".to_string(), ContainerKind::List).unwrap();
        txn.list_by_id::<String>(&nested).unwrap().push(&"inner".to_string()).unwrap();
    }
    // The marker names a container too: container names are stored as length-prefixed strings in
    // every encoding (the columnar container table, the snapshot's container ids), so the
    // length-patching test below always finds one.
    s.transact().text(MARKER).insert(0, MARKER).unwrap();
    s.transact().text("t").delete(0, 2).unwrap();
    (s, target)
}

/// One encoded input and what importing it into the target should give.
struct Input {
    name: &'static str,
    bytes: Vec<u8>,
    lz4: bool,
    json: Json,
}

/// Every kind of encoded input. Most are small enough (under 512 bytes) for exhaustive
/// truncation and bit-flip checks; two larger ones exercise the sampled checks.
fn inputs(s: &Document, target: &Document) -> Vec<Input> {
    let mut large = s.fork(PeerId::new(3));
    // Scattered edits with varied text: columnar runs and DEFLATE cannot shrink these much.
    for i in 0u64..400 {
        let len = large.text("t").len();
        let pos = (i as usize * 7_919) % (len + 1);
        let word = format!("{:x} ", i.wrapping_mul(2_654_435_761) % 1_000_003);
        large.transact().text("t").insert(pos, &word).unwrap();
    }
    let input = |name, bytes: Vec<u8>, lz4, doc: &Document| Input { name, bytes, lz4, json: doc.to_json() };
    let out = vec![
        input("changes (delta)", s.export_since(target.version()).unwrap(), false, s),
        input("changes (all)", s.export_since(&VersionVector::new()).unwrap(), false, s),
        input("changes (lz4)", s.export_since_with(target.version(), EncodeOptions::lz4()).unwrap(), true, s),
        input("document", s.encode(), false, s),
        input("document (lz4)", s.encode_with(EncodeOptions::lz4()), true, s),
        input("state", s.encode_state(), false, s),
        input("state (lz4)", s.encode_state_with(EncodeOptions::lz4()), true, s),
        input("changes (large)", large.export_since(target.version()).unwrap(), false, &large),
        input("document (large)", large.encode(), false, &large),
    ];
    for i in &out {
        // lz4 is kept only where it pays: the columnar history is already DEFLATE-compressed,
        // so change exports and documents may stay uncompressed even when lz4 was asked for.
        if !i.lz4 {
            assert_eq!(i.bytes[6] & 1, 0, "{}: lz4 flag set without being asked for", i.name);
        }
    }
    // The lz4 path must still be exercised by at least one input.
    assert!(out.iter().any(|i| i.bytes[6] & 1 == 1), "no input is lz4-compressed");
    assert!(out.iter().filter(|i| i.bytes.len() > 1024).count() >= 2, "some inputs must be large");
    out
}

/// Rebuild a buffer around a new uncompressed payload: same header, fresh length and CRC-32.
fn reframe(original: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = original[..HEADER_LEN].to_vec();
    out[7..11].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out[11..15].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Recompute only the CRC-32 (for payload edits that keep the declared length).
fn fix_crc(bytes: &mut [u8]) {
    let crc = crc32fast::hash(&bytes[HEADER_LEN..]);
    bytes[7..11].copy_from_slice(&crc.to_le_bytes());
}

/// Feeds inputs to a target document and collects every violation instead of stopping at the
/// first, so that a failure report names all the inputs that misbehaved.
struct Harness {
    pristine: Document,
    target: Document,
    encoded: Vec<u8>,
    version: VersionVector,
    pending: usize,
    failures: Vec<String>,
    attempts: usize,
}

impl Harness {
    fn new(target: Document) -> Self {
        Harness {
            encoded: target.encode(),
            version: target.version().clone(),
            pending: target.pending_count(),
            pristine: target.clone(),
            target,
            failures: Vec::new(),
            attempts: 0,
        }
    }

    fn unchanged(&self) -> bool {
        self.target.version() == &self.version
            && self.target.pending_count() == self.pending
            && self.target.encode() == self.encoded
    }

    /// `import` must fail, without panicking and without changing the target.
    fn import_must_fail(&mut self, what: &str, input: &[u8]) {
        self.attempts += 1;
        match catch_unwind(AssertUnwindSafe(|| self.target.import(input))) {
            Err(_) => {
                self.failures.push(format!("{what}: import PANICKED"));
                self.target = self.pristine.clone();
            }
            Ok(Ok(status)) => {
                self.failures.push(format!("{what}: import accepted it: {status:?}"));
                self.target = self.pristine.clone();
            }
            Ok(Err(_)) if !self.unchanged() => {
                self.failures.push(format!("{what}: import failed but changed the document"));
                self.target = self.pristine.clone();
            }
            Ok(Err(_)) => {}
        }
    }

    /// Input that may happen to be well-formed (random bytes behind a valid checksum): it must
    /// not panic, and if refused it must leave the target unchanged.
    fn import_must_not_panic(&mut self, what: &str, input: &[u8]) {
        self.attempts += 1;
        match catch_unwind(AssertUnwindSafe(|| self.target.import(input))) {
            Err(_) => self.failures.push(format!("{what}: import PANICKED")),
            Ok(Err(_)) if !self.unchanged() => {
                self.failures.push(format!("{what}: import failed but changed the document"))
            }
            Ok(Err(_)) => return,
            Ok(Ok(_)) => {
                // Accepted: whatever it was, the document must still be usable.
                if catch_unwind(AssertUnwindSafe(|| (self.target.to_json(), self.target.encode_state())))
                    .is_err()
                {
                    self.failures
                        .push(format!("{what}: accepted input left a document that panics when read"));
                }
            }
        }
        self.target = self.pristine.clone();
    }

    fn load_must_fail(&mut self, what: &str, input: &[u8]) {
        self.attempts += 1;
        match catch_unwind(|| Document::load(input, PeerId::new(9))) {
            Err(_) => self.failures.push(format!("{what}: load PANICKED")),
            Ok(Ok(_)) => self.failures.push(format!("{what}: load accepted it")),
            Ok(Err(_)) => {}
        }
    }

    fn load_must_not_panic(&mut self, what: &str, input: &[u8]) {
        self.attempts += 1;
        let loaded = catch_unwind(|| {
            if let Ok(doc) = Document::load(input, PeerId::new(9)) {
                // A loaded document must be usable.
                let _ = (doc.to_json(), doc.encode(), doc.encode_state());
            }
        });
        if loaded.is_err() {
            self.failures.push(format!("{what}: load PANICKED"));
        }
    }

    /// Try `input` both ways where it makes sense: import into the target, and load.
    fn must_fail(&mut self, what: &str, input: &[u8]) {
        self.import_must_fail(what, input);
        self.load_must_fail(what, input);
    }

    fn must_not_panic(&mut self, what: &str, input: &[u8]) {
        self.import_must_not_panic(what, input);
        self.load_must_not_panic(what, input);
    }

    fn finish(self) {
        assert!(self.attempts > 0);
        assert!(
            self.failures.is_empty(),
            "{} of {} hostile inputs misbehaved; first ones:\n{}",
            self.failures.len(),
            self.attempts,
            self.failures.iter().take(25).cloned().collect::<Vec<_>>().join("\n")
        );
    }
}

#[test]
fn valid_inputs_change_the_target() {
    // The other tests rely on this: a refused input would have changed the target.
    let (s, target) = source();
    for Input { name, bytes, json, .. } in inputs(&s, &target) {
        let mut t = target.clone();
        t.import(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_ne!(target.to_json(), json, "{name} must make a difference");
        assert_eq!(t.to_json(), json, "{name}");
        if !name.starts_with("changes") {
            assert_eq!(Document::load(&bytes, PeerId::new(9)).unwrap().to_json(), json, "{name}");
        }
    }
}

#[test]
fn every_truncation_is_refused() {
    let (s, target) = source();
    let mut h = Harness::new(target.clone());
    let mut rng = StdRng::seed_from_u64(1);
    for Input { name, bytes, .. } in inputs(&s, &target) {
        // Every prefix for small inputs; for larger ones the header region, every prefix near
        // the end, and a sample in between.
        let lengths: Vec<usize> = if bytes.len() <= 1024 {
            (0..bytes.len()).collect()
        } else {
            let mut l: Vec<usize> = (0..64).chain(bytes.len() - 64..bytes.len()).collect();
            l.extend((0..300).map(|_| rng.random_range(0..bytes.len())));
            l
        };
        for len in lengths {
            h.must_fail(&format!("{name} truncated to {len} of {} bytes", bytes.len()), &bytes[..len]);
        }
    }
    h.finish();
}

#[test]
fn every_single_bit_flip_is_refused() {
    let (s, target) = source();
    let mut h = Harness::new(target.clone());
    let mut rng = StdRng::seed_from_u64(2);
    for Input { name, bytes, .. } in inputs(&s, &target) {
        let bits: Vec<usize> = if bytes.len() <= 512 {
            (0..bytes.len() * 8).collect()
        } else {
            let mut b: Vec<usize> = (0..HEADER_LEN * 8).collect();
            b.extend((0..1500).map(|_| rng.random_range(HEADER_LEN * 8..bytes.len() * 8)));
            b
        };
        for bit in bits {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            h.must_fail(&format!("{name} with bit {bit} flipped"), &flipped);
        }
    }
    h.finish();
}

#[test]
fn bit_flips_behind_a_valid_checksum_never_panic() {
    // With the CRC-32 recomputed the flip reaches the decoder and the validator: the result
    // may even be a well-formed change, but it must never panic or half-apply.
    let (s, target) = source();
    let mut h = Harness::new(target.clone());
    let mut rng = StdRng::seed_from_u64(3);
    for Input { name, bytes, .. } in inputs(&s, &target) {
        let payload_bits = (bytes.len() - HEADER_LEN) * 8;
        let bits: Vec<usize> = if payload_bits <= 2048 {
            (0..payload_bits).collect()
        } else {
            (0..350).map(|_| rng.random_range(0..payload_bits)).collect()
        };
        for bit in bits {
            let mut flipped = bytes.clone();
            flipped[HEADER_LEN + bit / 8] ^= 1 << (bit % 8);
            fix_crc(&mut flipped);
            h.must_not_panic(&format!("{name} with payload bit {bit} flipped, CRC fixed"), &flipped);
        }
    }
    h.finish();
}

#[test]
fn random_garbage_is_refused() {
    let (s, target) = source();
    let template = s.export_since(target.version()).unwrap();
    let mut h = Harness::new(target);
    let mut rng = StdRng::seed_from_u64(4);
    for i in 0..400 {
        let len = rng.random_range(0..200);
        let garbage: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        h.must_fail(&format!("garbage #{i} ({len} bytes)"), &garbage);
        // Garbage after a correct magic: still no valid checksum.
        let mut with_magic = b"CRDS".to_vec();
        with_magic.extend_from_slice(&garbage);
        h.must_fail(&format!("garbage #{i} after the magic"), &with_magic);
    }
    // Random payloads behind a fully valid header, for every kind and both flag values: these
    // reach postcard, lz4 and the validator.
    for i in 0..1500 {
        let len = rng.random_range(0..120);
        let payload: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let mut framed = reframe(&template, &payload);
        framed[5] = rng.random_range(1..=3);
        if rng.random_bool(0.3) {
            framed[6] = 1;
            framed[11..15].copy_from_slice(&rng.random_range(0u32..4096).to_le_bytes());
        }
        h.must_not_panic(&format!("random payload #{i} kind {} flags {}", framed[5], framed[6]), &framed);
    }
    h.finish();
}

#[test]
fn header_fields_are_checked() {
    let (s, target) = source();
    let good = s.export_since(target.version()).unwrap();
    let mut t = target.clone();
    let before = fingerprint(&t);
    let decode_err = |t: &mut Document, bytes: &[u8]| match t.import(bytes) {
        Err(Error::Decode(e)) => e,
        other => panic!("expected a decode error, got {other:?}"),
    };

    assert_eq!(decode_err(&mut t, &[]), DecodeError::Truncated);
    assert_eq!(decode_err(&mut t, &good[..HEADER_LEN - 1]), DecodeError::Truncated);
    let mut bad = good.clone();
    bad[0] = b'X';
    assert_eq!(decode_err(&mut t, &bad), DecodeError::BadMagic);
    let mut bad = good.clone();
    bad[4] = 2;
    assert_eq!(decode_err(&mut t, &bad), DecodeError::UnsupportedVersion(2));
    let mut bad = good.clone();
    bad[5] = 9;
    assert!(matches!(decode_err(&mut t, &bad), DecodeError::Malformed(_)));
    let mut bad = good.clone();
    bad[6] |= 0b100;
    assert_eq!(decode_err(&mut t, &bad), DecodeError::UnknownFlags(bad[6]));
    let mut bad = good.clone();
    bad[7] ^= 1;
    assert_eq!(decode_err(&mut t, &bad), DecodeError::ChecksumMismatch);
    let mut bad = good.clone();
    bad.push(0);
    assert_eq!(decode_err(&mut t, &bad), DecodeError::ChecksumMismatch, "a trailing byte");
    // Trailing bytes inside a valid frame are still refused.
    let mut payload = good[HEADER_LEN..].to_vec();
    payload.push(0);
    assert!(matches!(decode_err(&mut t, &reframe(&good, &payload)), DecodeError::Malformed(_)));
    assert_eq!(fingerprint(&t), before);
}

#[test]
fn oversized_declared_lengths_are_refused() {
    let (s, target) = source();
    let limit = 1 << 20;
    let config = DocumentConfig::default().with_max_decoded_bytes(limit);
    let limited = Document::load_with_config(&target.encode(), PeerId::new(2), config.clone()).unwrap();
    let mut h = Harness::new(limited);

    for Input { name, bytes, .. } in inputs(&s, &target) {
        // The header's uncompressed length: beyond the limit, at the limit, off by one.
        let payload_len = (bytes.len() - HEADER_LEN) as u32;
        let declared = u32::from_le_bytes(bytes[11..15].try_into().unwrap());
        for huge in [u32::MAX, 1 << 31, limit as u32 + 1, limit as u32, declared + 1, declared - 1, 0] {
            if huge == declared || (huge == payload_len && bytes[6] & 1 == 0) {
                continue;
            }
            let mut patched = bytes.clone();
            patched[11..15].copy_from_slice(&huge.to_le_bytes());
            let what = format!("{name} declaring {huge} bytes");
            h.import_must_fail(&what, &patched);
            assert!(
                Document::load_with_config(&patched, PeerId::new(9), config.clone()).is_err(),
                "{what}: load accepted it"
            );
            if huge > limit as u32 {
                // Refused for the right reason, before anything is allocated for it.
                let too_large =
                    Error::Decode(DecodeError::TooLarge { size: u64::from(huge), limit: limit as u64 });
                assert_eq!(h.pristine.clone().import(&patched).unwrap_err(), too_large, "{what}");
                if !name.starts_with("changes") {
                    let err =
                        Document::load_with_config(&patched, PeerId::new(9), config.clone()).unwrap_err();
                    assert_eq!(err, too_large, "{what}");
                }
            }
        }
    }
    h.finish();
}

/// Postcard varints: u32::MAX, u64::MAX, and one that never ends within 64 bits.
const HUGE_VARINTS: [&[u8]; 3] = [
    &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F],
    &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
    &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
];

#[test]
fn oversized_lengths_inside_the_payload_are_refused() {
    let (s, target) = source();
    let mut h = Harness::new(target.clone());
    for Input { name, bytes, lz4, .. } in inputs(&s, &target) {
        if lz4 {
            continue; // Lengths inside the payload are only visible uncompressed.
        }
        let payload = &bytes[HEADER_LEN..];
        // The length of the marker string, wherever the encoding stores it as one string.
        let marker_at = payload.windows(MARKER.len()).position(|w| w == MARKER.as_bytes());
        if name.starts_with("changes") || name == "document" {
            assert!(marker_at.is_some(), "{name}: the marker text must appear in the payload");
        }
        let mut targets: Vec<(String, usize)> = Vec::new();
        if let Some(at) = marker_at {
            if name != "state" {
                assert_eq!(payload[at - 1] as usize, MARKER.len(), "{name}: length prefix of the marker");
            }
            if payload[at - 1] as usize == MARKER.len() {
                targets.push(("marker string length".into(), at - 1));
            }
        }
        if name.starts_with("changes") {
            // A columnar changes payload starts with its format version, then the number of
            // changes.
            targets.push(("number of changes".into(), 1));
        }
        for (field, at) in targets {
            for (i, varint) in HUGE_VARINTS.iter().enumerate() {
                let mut patched = payload[..at].to_vec();
                patched.extend_from_slice(varint);
                patched.extend_from_slice(&payload[at + 1..]);
                h.must_fail(
                    &format!("{name}: {field} patched to huge varint #{i}"),
                    &reframe(&bytes, &patched),
                );
            }
            // Off by a little: the rest of the payload is misread; refused or not, no panic.
            for delta in [1u8, 2, 100] {
                let mut patched = payload.to_vec();
                patched[at] = patched[at].wrapping_add(delta) & 0x7F;
                h.must_not_panic(&format!("{name}: {field} off by {delta}"), &reframe(&bytes, &patched));
            }
        }
    }
    h.finish();
}

// ---- well-formed but hostile changes ------------------------------------------------------

fn assert_refused(doc: &mut Document, bytes: &[u8]) -> Error {
    let before = fingerprint(doc);
    let err = doc.import(bytes).expect_err("hostile change accepted");
    assert_eq!(fingerprint(doc), before, "a refused import changed the document ({err})");
    err
}

fn assert_changes_refused(doc: &mut Document, changes: Vec<Change>) -> Error {
    let before = fingerprint(doc);
    let err = doc.apply_changes(changes).expect_err("hostile change accepted");
    assert_eq!(fingerprint(doc), before, "a refused change batch changed the document ({err})");
    err
}

#[test]
fn change_referencing_elements_the_document_never_had_is_refused() {
    // U0 (peer 7) types "abc"; U1, a fork of it, deletes "b" and inserts after "c".
    let mut u0 = doc_at(7, 0);
    u0.transact().text("t").insert(0, "abc").unwrap();
    let mut u1 = u0.fork(PeerId::new(8));
    u1.transact().text("t").delete(1, 1).unwrap();
    let delete = u1.export_since(u0.version()).unwrap();
    let mut u2 = u0.fork(PeerId::new(8));
    u2.transact().text("t").insert(3, "d").unwrap();
    let insert = u2.export_since(u0.version()).unwrap();

    // The target also has ids 7@0..3, from an unrelated document that used peer id 7 for
    // something else: the changes' dependencies are satisfied, their elements do not exist.
    let mut target = doc_at(7, 0);
    target.transact().counter("other").add(1).unwrap();
    target.transact().counter("other").add(1).unwrap();
    target.transact().counter("other").add(1).unwrap();
    assert!(target.version().includes(u0.version()));
    assert!(matches!(assert_refused(&mut target, &delete), Error::InvalidChange { .. }));
    assert!(matches!(assert_refused(&mut target, &insert), Error::InvalidChange { .. }));
}

/// A change's JSON form (through its public serde implementation), to craft hostile changes.
fn change_json(doc: &Document, since: &VersionVector) -> Vec<Json> {
    doc.changes_since(since).unwrap().iter().map(|c| serde_json::to_value(c).unwrap()).collect()
}

fn from_json(values: Vec<Json>) -> Vec<Change> {
    values.into_iter().map(|v| serde_json::from_value(v).expect("crafted change must deserialize")).collect()
}

/// Rewrite a change to be peer 50's first change with no dependencies.
fn as_independent(mut change: Json) -> Json {
    change["id"] = json!({ "peer": 50, "counter": 0 });
    change["deps"] = json!([]);
    change["lamport"] = json!(0);
    change
}

/// An edit made on a fork of the source, given the id of a nested container it may use.
type Craft = fn(&mut Transaction<'_>, &ContainerId);

#[test]
fn crafted_changes_with_unknown_references_are_refused() {
    let mut u = doc_at(7, 0);
    {
        let mut txn = u.transact();
        txn.text("t").insert(0, "abc").unwrap();
        txn.list::<i64>("l").insert_many(0, &[1, 2]).unwrap();
        txn.movable_list::<i64>("ml").insert(0, &1).unwrap();
        txn.map::<String, i64>("m").insert_container(&"child".to_string(), ContainerKind::Text).unwrap();
    }
    let base = u.version().clone();
    let child = u.map::<String, i64>("m").get_container(&"child".to_string()).unwrap().unwrap();
    let mut edits = Vec::new();
    // Each later change refers to something made in the first one.
    let ops: [(&str, Craft); 6] = [
        ("text insert anchored to an unknown char", |t, _| t.text("t").insert(2, "x").unwrap()),
        ("text delete of unknown chars", |t, _| t.text("t").delete(0, 2).unwrap()),
        ("list delete of unknown items", |t, _| t.list::<i64>("l").delete(1, 1).unwrap()),
        ("movable move of an unknown element", |t, _| {
            t.movable_list::<i64>("ml").push(&2).unwrap();
            t.movable_list::<i64>("ml").move_item(0, 1).unwrap();
        }),
        ("movable set of an unknown element", |t, _| t.movable_list::<i64>("ml").set(0, &5).unwrap()),
        ("edit of an unknown child container", |t, child| {
            t.text_by_id(child).unwrap().insert(0, "x").unwrap()
        }),
    ];
    for (what, op) in ops {
        let mut fork = u.fork(PeerId::new(8));
        {
            let mut txn = fork.transact();
            op(&mut txn, &child);
        }
        let json = change_json(&fork, &base);
        assert_eq!(json.len(), 1);
        edits.push((what, as_independent(json[0].clone())));
    }

    let mut target = doc_at(1, 0);
    target.transact().text("t").insert(0, "target").unwrap();
    for (what, change) in &edits {
        let err = assert_changes_refused(&mut target, from_json(vec![change.clone()]));
        assert!(matches!(err, Error::InvalidChange { .. }), "{what}: {err:?}");
    }

    // Shape errors, detectable without any document. The unmodified change is valid.
    let valid = as_independent(change_json(&u, &VersionVector::new())[0].clone());
    target.clone().apply_changes(from_json(vec![valid.clone()])).expect("the template change is valid");
    let mut malformed = Vec::new();
    let mut c = valid.clone();
    c["ops"] = json!([]);
    malformed.push(("no operations", c));
    let mut c = valid.clone();
    c["deps"] = json!([{ "peer": 50, "counter": 0 }]);
    malformed.push(("depends on itself", c));
    let mut c = valid.clone();
    c["deps"] = json!([{ "peer": 9, "counter": 0 }, { "peer": 3, "counter": 0 }]);
    malformed.push(("unsorted dependencies", c));
    let mut c = valid.clone();
    c["id"]["counter"] = json!(u32::MAX - 1);
    malformed.push(("ids overflow the counter", c));
    let mut c = valid.clone();
    c["ops"][0]["container"]["Root"]["kind"] = json!("Map");
    malformed.push(("text insert into a map", c));
    for (what, change) in malformed {
        let err = assert_changes_refused(&mut target, from_json(vec![change]));
        assert!(matches!(err, Error::InvalidChange { .. }), "{what}: {err:?}");
    }

    // Lamport time that does not follow its dependencies: a change of peer 3 made on top of
    // the target's text, with its Lamport time rewritten to 0.
    let mut next = doc_at(3, 0);
    next.import(&target.export_since(&VersionVector::new()).unwrap()).unwrap();
    next.transact().text("t").push_str("!").unwrap();
    let mut later = change_json(&next, target.version())[0].clone();
    later["lamport"] = json!(0);
    let err = assert_changes_refused(&mut target, from_json(vec![later]));
    assert!(matches!(err, Error::InvalidChange { .. }), "{err:?}");
}

#[test]
fn a_bad_change_anywhere_in_a_batch_refuses_the_whole_batch() {
    let mut a = doc_at(1, 0);
    a.transact().text("t").insert(0, "good").unwrap();
    let mut good = change_json(&a, &VersionVector::new());
    let mut bad = as_independent(good[0].clone());
    bad["ops"][0]["container"]["Root"]["kind"] = json!("Counter");
    good.push(bad);
    let mut target = doc_at(2, 0);
    assert_changes_refused(&mut target, from_json(good));
    assert_eq!(target.text("t").to_string(), "", "the valid change of the batch was not applied either");
}

#[test]
fn buffered_change_that_turns_out_invalid_is_discarded() {
    // A change that waits for 1@0 and then deletes elements that 1@0 does not create.
    let mut a = doc_at(1, 0);
    a.transact().counter("c").add(1).unwrap();
    let from_a = a.export_since(&VersionVector::new()).unwrap();
    let mut u = doc_at(7, 0);
    u.transact().text("t").insert(0, "abc").unwrap();
    let base = u.version().clone();
    u.transact().text("t").delete(0, 1).unwrap();
    let mut hostile = change_json(&u, &base)[0].clone();
    hostile["id"] = json!({ "peer": 50, "counter": 0 });
    hostile["deps"] = json!([{ "peer": 1, "counter": 0 }]);
    hostile["lamport"] = json!(5);

    let mut target = doc_at(2, 0);
    let status = target.apply_changes(from_json(vec![hostile])).unwrap();
    assert_eq!(status.pending, 1, "its dependency is missing: it waits");
    let status = target.import(&from_a).unwrap();
    assert_eq!((status.applied, status.discarded, status.pending), (1, 1, 0));
    assert_eq!(target.pending_count(), 0);
    assert!(target.missing_dependencies().is_empty());
    assert_eq!(target.counter("c").get(), 1);
}

#[test]
fn reused_peer_id_with_different_content_is_a_conflict() {
    let mut target = doc_at(1, 0);
    target.transact().text("t").insert(0, "xyz").unwrap();
    for other_text in ["abc", "abcd", "xq", "q"] {
        let mut impostor = doc_at(1, 0);
        impostor.transact().text("t").insert(0, other_text).unwrap();
        let bytes = impostor.export_since(&VersionVector::new()).unwrap();
        let err = assert_refused(&mut target, &bytes);
        assert!(matches!(err, Error::ConflictingChange(_)), "{other_text}: {err:?}");
    }
    // A prefix that says the same as the target's change is that change, cut short: a duplicate.
    let mut prefix = doc_at(1, 0);
    prefix.transact().text("t").insert(0, "x").unwrap();
    let status = target.import(&prefix.export_since(&VersionVector::new()).unwrap()).unwrap();
    assert_eq!(status.duplicates, 1);
    // The same via a different container: same ids, different ops.
    let mut impostor = doc_at(1, 0);
    impostor.transact().counter("c").add(1).unwrap();
    impostor.transact().counter("c").add(1).unwrap();
    impostor.transact().counter("c").add(1).unwrap();
    let err = assert_refused(&mut target, &impostor.export_since(&VersionVector::new()).unwrap());
    assert!(matches!(err, Error::ConflictingChange(_)), "{err:?}");
}

#[test]
fn change_from_too_far_in_the_future_is_refused() {
    let max_drift = DocumentConfig::default().max_clock_drift_ms.expect("a default drift limit");
    let mut target = doc_at(1, 0);
    target.transact().text("t").insert(0, "now").unwrap();

    let mut honest = doc_at(2, max_drift); // exactly at the limit: accepted
    honest.transact().text("t").insert(0, "edge ").unwrap();
    let mut future = doc_at(3, max_drift + 1_000);
    future.transact().text("t").insert(0, "future ").unwrap();

    let err = assert_refused(&mut target, &future.export_since(&VersionVector::new()).unwrap());
    assert_eq!(
        err,
        Error::Clock(ClockError::DriftExceeded { ahead_ms: max_drift + 1_000, max_drift_ms: max_drift })
    );
    // In a batch with acceptable changes, the whole batch is refused.
    let mut batch_source = honest.clone();
    batch_source.import(&future.export_since(&VersionVector::new()).unwrap()).unwrap();
    assert!(matches!(
        assert_refused(&mut target, &batch_source.export_since(&VersionVector::new()).unwrap()),
        Error::Clock(_)
    ));
    // The honest replica at the edge of the allowed drift is fine, and a last-writer-wins
    // write from the far future did not get in to win every later conflict.
    target.import(&honest.export_since(&VersionVector::new()).unwrap()).unwrap();
    let text = target.text("t").to_string();
    assert!(text.contains("edge ") && text.contains("now") && !text.contains("future"), "{text:?}");
    assert!(target.last_timestamp().wall_ms() <= BASE_MS + max_drift);

    // A stricter limit from the config.
    let config = DocumentConfig::default().with_max_clock_drift_ms(Some(5_000));
    let mut strict = Document::with_config(PeerId::new(4), config);
    strict.set_wall_clock(BASE_MS);
    let mut ahead = doc_at(5, 6_000);
    ahead.transact().counter("c").add(1).unwrap();
    let err = assert_refused(&mut strict, &ahead.export_since(&VersionVector::new()).unwrap());
    assert!(matches!(err, Error::Clock(ClockError::DriftExceeded { ahead_ms: 6_000, max_drift_ms: 5_000 })));
    // Without a wall clock there is nothing to compare with, and it is accepted.
    let mut no_clock =
        Document::with_config(PeerId::new(6), DocumentConfig::default().with_max_clock_drift_ms(Some(5_000)));
    no_clock.import(&ahead.export_since(&VersionVector::new()).unwrap()).unwrap();
    assert_eq!(no_clock.counter("c").get(), 1);
}

#[test]
fn too_many_pending_changes_are_refused() {
    let mut s = doc_at(1, 0);
    let mut batches = Vec::new();
    for i in 0..5 {
        let before = s.version().clone();
        s.transact().counter("c").add(i + 1).unwrap();
        batches.push(s.export_since(&before).unwrap());
    }
    let config = DocumentConfig::default().with_max_pending_changes(2);
    let mut t = Document::with_config(PeerId::new(2), config);
    t.import(&batches[1]).unwrap();
    t.import(&batches[2]).unwrap();
    assert_eq!(t.pending_count(), 2);
    let err = assert_refused(&mut t, &batches[3]);
    assert_eq!(err, Error::TooManyPending { pending: 3, limit: 2 });
    assert_eq!(t.pending_count(), 2);
    // Once the gap is filled, everything applies, and the rest can come.
    let status = t.import(&batches[0]).unwrap();
    assert_eq!((status.applied, status.pending), (3, 0));
    t.import(&batches[4]).unwrap();
    t.import(&batches[3]).unwrap();
    assert_eq!(t.counter("c").get(), 15);

    // One batch holding too many out-of-order changes is refused as a whole.
    let mut t = Document::with_config(PeerId::new(3), DocumentConfig::default().with_max_pending_changes(2));
    let all_but_first: Vec<Change> =
        s.changes_since(&VersionVector::new()).unwrap().into_iter().skip(1).collect();
    assert_eq!(assert_changes_refused(&mut t, all_but_first), Error::TooManyPending { pending: 4, limit: 2 });
}

#[test]
fn loading_changes_as_a_document_is_the_wrong_kind() {
    let (s, _) = source();
    let changes = s.export_since(&VersionVector::new()).unwrap();
    assert_eq!(
        Document::load(&changes, PeerId::new(2)).unwrap_err(),
        Error::Decode(DecodeError::WrongKind { expected: "a document", found: "changes" })
    );
}

#[test]
fn decoded_size_limit_is_enforced() {
    let (s, target) = source();
    let limit = 64;
    let config = DocumentConfig::default().with_max_decoded_bytes(limit);
    let mut small = Document::with_config(PeerId::new(2), config.clone());
    for Input { name, bytes, .. } in inputs(&s, &target) {
        let declared = u32::from_le_bytes(bytes[11..15].try_into().unwrap()) as u64;
        assert!(declared > limit as u64, "{name} is small enough to pass");
        let expected = Error::Decode(DecodeError::TooLarge { size: declared, limit: limit as u64 });
        assert_eq!(assert_refused(&mut small, &bytes), expected, "{name}");
        if !name.starts_with("changes") {
            assert_eq!(
                Document::load_with_config(&bytes, PeerId::new(3), config.clone()).unwrap_err(),
                expected
            );
        }
    }
}
