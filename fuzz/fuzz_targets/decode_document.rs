//! Any bytes into every document decoder: never a panic, and a failed import leaves the
//! document exactly as it was.
#![no_main]

use crdt_sync::{Document, PeerId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Document::load(data, PeerId::new(9));
    let mut doc = Document::new(PeerId::new(1));
    doc.transact().text("text").insert(0, "seed").expect("inserting into a fresh text");
    let before = doc.encode();
    if doc.import(data).is_err() {
        assert_eq!(doc.encode(), before, "a failed import changed the document");
    }
});
