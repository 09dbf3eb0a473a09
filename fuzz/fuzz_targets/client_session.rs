//! An honest server and a script of valid, mutated and random frames into a client
//! (`harness::session_script`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::session_script(data, harness::Side::Client));
