//! Any bytes into the frame decoder and the stream reader (`harness::decode_frame_bytes`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::decode_frame_bytes(data));
