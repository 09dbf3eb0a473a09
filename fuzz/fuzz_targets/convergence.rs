//! Edits of every type on every replica while the network breaks, reorders per link, and
//! the server crashes; once it heals, all replicas are equal (`harness::convergence`).
#![no_main]

libfuzzer_sys::fuzz_target!(|run: harness::Run| harness::convergence(run));
