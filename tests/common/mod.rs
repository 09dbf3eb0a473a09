//! Helpers shared by the integration tests.
//!
//! Each test file includes this module with `mod common;` and uses a different subset of it.
#![allow(dead_code)]

#[cfg(all(feature = "cli", unix))]
pub mod load;
#[cfg(all(feature = "cli", unix))]
pub mod process;

use crdt_sync::{Document, ImportStatus, PeerId, VersionVector};
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};

/// A realistic wall-clock time (Nov 2023) that the tests offset from.
pub const BASE_MS: u64 = 1_700_000_000_000;

/// Proptest configuration with `cases` cases, or as many as `PROPTEST_CASES` asks for (a soak
/// run; proptest reads the variable only where a configuration does not set `cases`), whose
/// failing seeds are saved in `<crate root>/proptest-regressions/<test file stem>.txt`.
///
/// Proptest's default (`SourceParallel`) looks for a `lib.rs` next to the test file to find
/// the crate root; integration tests live in `tests/`, which has none, so the default falls
/// back to writing `tests/<name>.proptest-regressions`. Pinning the path keeps every seed in
/// one folder at the crate root, where proptest also reads them back on the next run.
pub fn proptest_config(cases: u32, source_file: &str) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(cases);
    let stem = std::path::Path::new(source_file).file_stem().and_then(|s| s.to_str()).unwrap_or("unknown");
    let path = format!("{}/proptest-regressions/{stem}.txt", env!("CARGO_MANIFEST_DIR"));
    // `Direct` wants a `&'static str`; one small leak per test is fine.
    let path: &'static str = Box::leak(path.into_boxed_str());
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(path))),
        ..ProptestConfig::default()
    }
}

/// A document edited as `peer`, with its wall clock set to `BASE_MS + offset_ms`.
pub fn doc_at(peer: u64, offset_ms: u64) -> Document {
    let mut doc = Document::new(PeerId::new(peer));
    doc.set_wall_clock(BASE_MS + offset_ms);
    doc
}

/// Send `to` everything `from` has that `to` lacks.
pub fn pull(to: &mut Document, from: &Document) -> ImportStatus {
    let bytes = from.export_since(to.version()).expect("export_since the receiver's version");
    to.import(&bytes).expect("importing an honest export")
}

/// Exchange changes both ways between two documents.
pub fn sync_pair(a: &mut Document, b: &mut Document) {
    pull(a, b);
    pull(b, a);
}

/// Bring every document up to date with every other one (all pairs, both directions).
pub fn sync_all(docs: &mut [Document]) {
    // Gather everything into the first, then spread it back: two rounds reach everyone.
    for i in 1..docs.len() {
        let (head, tail) = docs.split_at_mut(i);
        pull(&mut head[0], &tail[0]);
    }
    for i in 1..docs.len() {
        let (head, tail) = docs.split_at_mut(i);
        pull(&mut tail[0], &head[0]);
    }
}

/// The changes a document made in one transaction: export against the version before it.
pub fn export_after(doc: &Document, before: &VersionVector) -> Vec<u8> {
    doc.export_since(before).expect("export of fresh local changes")
}

/// Everything a user (or a peer) can observe of a document, to check "unchanged".
#[derive(Debug, PartialEq)]
pub struct Fingerprint {
    pub encoded: Vec<u8>,
    pub state: Vec<u8>,
    pub version: VersionVector,
    pub pending: usize,
    pub json: serde_json::Value,
}

pub fn fingerprint(doc: &Document) -> Fingerprint {
    Fingerprint {
        encoded: doc.encode(),
        state: doc.encode_state(),
        version: doc.version().clone(),
        pending: doc.pending_count(),
        json: doc.to_json(),
    }
}

/// Assert that all documents hold identical state, history and version.
pub fn assert_converged(docs: &[&Document]) {
    let first = docs[0];
    for (i, doc) in docs.iter().enumerate().skip(1) {
        assert_eq!(doc.version(), first.version(), "version of replica {i} differs from replica 0");
        assert_eq!(doc.to_json(), first.to_json(), "JSON of replica {i} differs from replica 0");
        assert!(
            doc.encode_state() == first.encode_state(),
            "encode_state bytes of replica {i} differ from replica 0"
        );
        assert!(
            doc.encode() == first.encode(),
            "encode (history) bytes of replica {i} differ from replica 0"
        );
    }
}

/// Assert that all documents hold identical state and version; their histories may differ
/// (one was trimmed or loaded from a snapshot).
pub fn assert_same_state(docs: &[&Document]) {
    let first = docs[0];
    for (i, doc) in docs.iter().enumerate().skip(1) {
        assert_eq!(doc.version(), first.version(), "version of document {i} differs from document 0");
        assert_eq!(doc.to_json(), first.to_json(), "JSON of document {i} differs from document 0");
        assert!(doc.encode_state() == first.encode_state(), "encode_state bytes of document {i} differ");
    }
}

/// Characters of `s`, for char-index arithmetic.
pub fn chars(s: &str) -> Vec<char> {
    s.chars().collect()
}
pub mod net;
pub mod sim;
