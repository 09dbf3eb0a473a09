//! The committed corpora through the harness as plain tests (`cargo test` here, no
//! libFuzzer needed), and the generator of the seed corpora:
//! `cargo test --release -- --ignored write_seed_corpora`.

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target)
}

fn each_input(target: &str, run: impl Fn(&[u8])) {
    let Ok(entries) = std::fs::read_dir(corpus(target)) else {
        eprintln!("no corpus for {target}");
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
    }
}

#[test]
fn corpora_replay_cleanly() {
    each_input("decode_frame", harness::decode_frame_bytes);
    each_input("decode_document", harness::decode_document_bytes);
    each_input("server_session", |d| harness::session_script(d, harness::Side::Server));
    each_input("client_session", |d| harness::session_script(d, harness::Side::Client));
    each_input("convergence", |d| {
        if let Ok(run) = arbitrary::Unstructured::new(d).arbitrary::<harness::Run>() {
            harness::convergence(run);
        }
    });
}

/// Write the seed corpora: captured session frames and trace fragments, named by content.
#[test]
#[ignore]
fn write_seed_corpora() {
    let write = |target: &str, seeds: Vec<Vec<u8>>| {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).unwrap();
        for seed in seeds {
            let name = format!("seed-{:016x}", fnv(&seed));
            std::fs::write(dir.join(name), seed).unwrap();
        }
    };
    write("decode_frame", harness::captured_frames());
    let traces = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces");
    let mut documents = harness::document_seeds("héllo wörld, 日本語 and plain ASCII", 5);
    for name in ["automerge-paper", "json-crdt-blog-post"] {
        let Ok(file) = std::fs::File::open(traces.join(format!("{name}.json.gz"))) else { continue };
        let mut json = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(file), &mut json).unwrap();
        let trace: serde_json::Value = serde_json::from_str(&json).unwrap();
        let end = trace["endContent"].as_str().unwrap_or_default();
        let fragment: String = end.chars().take(400).collect();
        documents.extend(harness::document_seeds(&fragment, 12));
    }
    write("decode_document", documents);
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}
