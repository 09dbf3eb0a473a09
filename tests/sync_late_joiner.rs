//! A late joiner gets the document in one compact message, not its history change by change.

mod common;

use std::time::Duration;

use common::sim::{Faults, Sim};
use crdt_sync::{ClientConfig, Document, PeerId, ServerConfig};

#[test]
fn a_late_joiner_gets_one_compact_sync() {
    let mut sim = Sim::with_configs(5, 2, &["essay"], Faults::none(), ServerConfig::default(), |_| {
        ClientConfig::default()
    });
    sim.run_for(Duration::from_secs(1));
    // Client 0 types 2,000 keystrokes, each sent as it is typed.
    for i in 0..2000 {
        sim.edit(0, "essay", |d| d.transact().text("body").insert(i, "abcdefghij").map(drop).unwrap());
        sim.run_for(Duration::from_millis(5));
    }
    sim.run_for(Duration::from_secs(1));
    let text = sim.server().document("essay").unwrap().text("body").to_string();
    assert_eq!(text.chars().count(), 20_000);

    // A third client joins now, its document empty.
    let frames_before = sim.clients[1].frames_received;
    let before = sim.stats.clone();
    let mut session = crdt_sync::ClientSession::new(PeerId::new(99), ClientConfig::default());
    session.subscribe("essay", Document::new(PeerId::new(99)));
    let joiner = sim.add_client(session);
    assert!(sim.run_until_settled(&["essay"], Duration::from_secs(10)));
    assert_eq!(sim.client(joiner).document("essay").unwrap().text("body").to_string(), text);
    // Welcome and one Sync (and the odd pong), not thousands of changes; the history is
    // compressed, so far fewer bytes than the text itself.
    assert!(sim.clients[joiner].frames_received <= 3, "{} frames", sim.clients[joiner].frames_received);
    let bytes = sim.clients[joiner].bytes_received;
    assert!(bytes < 20_000, "{bytes} bytes for 20,000 characters with history");
    // The others were not disturbed by the join.
    assert!(sim.clients[1].frames_received - frames_before <= 2);
    assert!(sim.stats.frames_down - before.frames_down <= 8);
}
