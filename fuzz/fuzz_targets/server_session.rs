//! Honest clients and a script of valid, mutated and random frames into the server
//! (`harness::session_script`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::session_script(data, harness::Side::Server));
