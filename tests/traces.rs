//! Every shared editing trace replays to exactly its `endContent`, on every replica.
//!
//! The traces live outside the crate (`../shared/traces/`); without them these tests skip with
//! a message so that the crate still builds and tests alone.

#[path = "../examples/support/trace_replay.rs"]
mod trace_replay;

use crdt_sync::{Document, PeerId};
use trace_replay::{load_trace, parse_unix_ms, traces_dir};

fn replay_and_check(name: &str) {
    let path = traces_dir().join(format!("{name}.json.gz"));
    if !path.exists() {
        eprintln!("skipping {name}: {} not found", path.display());
        return;
    }
    let trace = load_trace(&path).unwrap();
    let replicas = trace.replay().unwrap();
    for (i, replica) in replicas.iter().enumerate() {
        let text = replica.text("text").to_string();
        assert!(text == trace.end_content, "{name}: replica {i} differs from endContent");
    }
    // The encoded document restores the same text, and replicas agree byte for byte.
    let first = &replicas[0];
    let loaded = Document::load(&first.encode(), PeerId::new(999)).unwrap();
    assert_eq!(loaded.text("text").to_string(), trace.end_content);
    for other in &replicas[1..] {
        assert_eq!(other.encode_state(), first.encode_state(), "{name}: replicas differ in state");
    }
}

#[test]
fn sveltecomponent_replays_to_end_content() {
    replay_and_check("sveltecomponent");
}

#[test]
fn json_crdt_blog_post_with_non_ascii_text_replays_to_end_content() {
    replay_and_check("json-crdt-blog-post");
}

#[test]
fn friendsforever_concurrent_trace_converges_on_every_replica() {
    replay_and_check("friendsforever");
}

#[test]
fn automerge_paper_replays_to_end_content() {
    replay_and_check("automerge-paper");
}

#[test]
fn trace_times_parse_as_unix_milliseconds() {
    assert_eq!(parse_unix_ms("1970-01-01T00:00:00+00:00"), Some(0));
    assert_eq!(parse_unix_ms("2021-04-19T06:06:58.219Z"), Some(1_618_812_418_219));
    assert_eq!(parse_unix_ms("2021-04-19T08:06:58.2+02:00"), Some(1_618_812_418_200));
    assert_eq!(parse_unix_ms("garbage"), None);
}
