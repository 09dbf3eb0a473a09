//! Any bytes into every document decoder (`harness::decode_document_bytes`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::decode_document_bytes(data));
