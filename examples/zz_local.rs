#![allow(clippy::disallowed_methods)]
#[path = "support/trace_replay.rs"]
mod trace_replay;
fn main() {
    let trace = trace_replay::load_trace(&trace_replay::traces_dir().join("automerge-paper.json.gz")).unwrap();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let doc = trace.replay().unwrap();
        eprintln!("local {:?}", t.elapsed());
        drop(doc);
    }
}
