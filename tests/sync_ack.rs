//! Acknowledgements: "all changes saved" means the server holds them.

mod common;

use std::time::Duration;

use common::sim::{Faults, Sim};
use crdt_sync::ClientEvent;

#[test]
fn saved_is_reported_only_once_the_server_holds_every_change() {
    let mut sim = Sim::new(11, 1, &["doc"], Faults { latency_ms: (50, 50), ..Faults::none() });
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
