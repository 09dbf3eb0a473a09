//! Acknowledgements: "all changes saved" means the server holds them.

mod common;

use std::time::Duration;

use common::sim::{Faults, Sim};
use crdt_sync::{ClientConfig, ClientEvent, ServerConfig};

#[test]
fn saved_is_reported_only_once_the_server_holds_every_change() {
    // Acks leave at once here, so that their timing is exact.
    let server = ServerConfig::default().with_ack_delay(Duration::ZERO);
    let faults = Faults { latency_ms: (50, 50), ..Faults::none() };
    let mut sim = Sim::with_configs(11, 1, &["doc"], faults, server, |_| ClientConfig::default());
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    sim.client_events.clear();

    sim.edit(0, "doc", |d| d.transact().text("t").insert(0, "hello").map(drop).unwrap());
    assert!(!sim.client(0).is_saved("doc"), "sent, not yet acknowledged");
    sim.run_for(Duration::from_millis(60));
    assert_eq!(sim.server().document("doc").unwrap().text("t").to_string(), "hello");
    assert!(!sim.client(0).is_saved("doc"), "the ack is still on its way");
    // A second edit while the first is unacknowledged: saved waits for both.
    sim.edit(0, "doc", |d| d.transact().text("t").insert(5, " world").map(drop).unwrap());
    sim.run_for(Duration::from_millis(45));
    assert!(!sim.client(0).is_saved("doc"), "the first ack does not cover the second batch");
    sim.run_for(Duration::from_millis(60));
    assert!(sim.client(0).is_saved("doc"));
    assert_eq!(sim.server().document("doc").unwrap().text("t").to_string(), "hello world");
    let saved =
        sim.client_events.iter().filter(|(_, e)| *e == ClientEvent::Saved { document: "doc".into() }).count();
    assert_eq!(saved, 1, "one Saved per transition to saved: {:?}", sim.client_events);
}

#[test]
fn unacknowledged_work_is_resent_after_a_reconnect() {
    let mut sim = Sim::new(12, 2, &["doc"], Faults { latency_ms: (20, 20), ..Faults::none() });
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    sim.edit(0, "doc", |d| d.transact().text("t").insert(0, "lost in flight").map(drop).unwrap());
    // The link breaks before the frame arrives: the change is neither applied nor acked.
    sim.break_client_link(0);
    sim.run_for(Duration::from_millis(100));
    assert!(sim.server().document("doc").unwrap().text("t").is_empty());
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(30)));
    assert_eq!(sim.client(1).document("doc").unwrap().text("t").to_string(), "lost in flight");
}

#[test]
fn a_fast_typist_gets_acks_coalesced_and_saved_soon_after_the_last_keystroke() {
    let mut sim = Sim::new(18, 1, &["doc"], Faults { latency_ms: (10, 10), ..Faults::none() });
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    let frames_before = sim.clients[0].frames_received;
    // 500 keystrokes, 2 ms apart: each its own frame to the server.
    for i in 0..500 {
        sim.edit(0, "doc", |d| d.transact().text("t").insert(i, "k").map(drop).unwrap());
        sim.run_for(Duration::from_millis(2));
    }
    let acks = sim.clients[0].frames_received - frames_before;
    // The default delay is 20 ms: about one ack frame per ten keystrokes.
    assert!(acks <= 60, "{acks} ack frames for 500 keystrokes");
    // Saved arrives within a round trip plus the delay of the last keystroke.
    sim.run_for(Duration::from_millis(10 + 20 + 10 + 1));
    assert!(sim.client(0).is_saved("doc"));
    assert_eq!(sim.server().document("doc").unwrap().text("t").len(), 500);
}

#[test]
fn acknowledged_counts_confirmed_operations_across_reconnects() {
    let server = ServerConfig::default().with_ack_delay(Duration::ZERO);
    let faults = Faults { latency_ms: (20, 20), ..Faults::none() };
    let mut sim = Sim::with_configs(13, 1, &["doc"], faults, server, |_| ClientConfig::default());
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    assert_eq!(sim.client(0).acknowledged("doc"), Some(0));
    sim.edit(0, "doc", |d| d.transact().text("t").insert(0, "hello").map(drop).unwrap());
    assert_eq!(sim.client(0).acknowledged("doc"), Some(0), "sent, not confirmed");
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    assert_eq!(sim.client(0).acknowledged("doc"), Some(5));
    // Three more leave, and the link breaks before their acknowledgement comes back.
    sim.edit(0, "doc", |d| d.transact().text("t").insert(5, "!!!").map(drop).unwrap());
    sim.run_for(Duration::from_millis(30));
    assert_eq!(text_of_server(&sim), "hello!!!", "the server applied them");
    sim.break_client_link(0);
    assert_eq!(sim.client(0).acknowledged("doc"), Some(5), "unconfirmed while disconnected");
    // The next subscription's acknowledgement (batch 0) confirms what the server held.
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    assert_eq!(sim.client(0).acknowledged("doc"), Some(8));
    assert_eq!(sim.client(0).acknowledged("other"), None, "not subscribed");
}

fn text_of_server(sim: &Sim) -> String {
    sim.server().document("doc").map(|d| d.text("t").to_string()).unwrap_or_default()
}
