//! Many documents on one connection, each subscribed and unsubscribed on its own.

mod common;

use std::time::Duration;

use common::sim::{Faults, Sim};
use crdt_sync::{PeerId, ServerEvent};

#[test]
fn many_documents_share_one_connection_and_one_frame_per_poll() {
    let names: Vec<String> = (0..20).map(|i| format!("doc-{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut sim = Sim::new(8, 2, &refs, Faults::none());
    assert!(sim.run_until_settled(&refs, Duration::from_secs(5)));
    let handshakes = sim.server_events.iter().filter(|e| matches!(e, ServerEvent::Handshake { .. })).count();
    assert_eq!(handshakes, 2, "one connection per client, whatever the number of documents");

    // One poll's worth of edits to every document leaves as one frame.
    let frames_before = sim.stats.frames_up;
    for name in &names {
        sim.clients[0].session.document_mut(name).unwrap().transact().text("t").insert(0, name).unwrap();
    }
    sim.drain();
    assert_eq!(sim.stats.frames_up - frames_before, 1);
    assert!(sim.run_until_settled(&refs, Duration::from_secs(5)));
    for name in &names {
        assert_eq!(sim.client(1).document(name).unwrap().text("t").to_string(), *name);
    }
}

#[test]
fn an_unsubscribed_document_stops_syncing_while_the_others_go_on() {
    let mut sim = Sim::new(9, 2, &["a", "b"], Faults::none());
    assert!(sim.run_until_settled(&["a", "b"], Duration::from_secs(5)));
    let doc = sim.client_mut(1).unsubscribe("a").expect("subscribed");
    assert_eq!(doc.peer_id(), PeerId::new(2));
    sim.drain();
    sim.run_for(Duration::from_secs(1));
    assert!(
        sim.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Unsubscribed { document, .. } if &**document == "a"))
    );

    sim.edit(0, "a", |d| d.transact().text("t").insert(0, "only for a").map(drop).unwrap());
    sim.edit(0, "b", |d| d.transact().text("t").insert(0, "for b").map(drop).unwrap());
    let before = sim.clients[1].bytes_received;
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.client(1).document("b").unwrap().text("t").to_string(), "for b");
    assert!(sim.client(1).document("a").is_none());
    assert!(sim.clients[1].bytes_received - before < 60, "nothing of `a` is sent to client 1");

    // Subscribing again catches up on what was missed.
    sim.client_mut(1).subscribe("a", doc);
    sim.drain();
    assert!(sim.run_until_settled(&["a", "b"], Duration::from_secs(5)));
    assert_eq!(sim.client(1).document("a").unwrap().text("t").to_string(), "only for a");
}

#[test]
fn the_document_limit_per_connection_is_a_typed_refusal() {
    let server = crdt_sync::ServerConfig::default().with_max_documents_per_connection(2);
    let mut sim = Sim::with_configs(10, 1, &["a", "b", "c"], Faults::none(), server, |_| Default::default());
    sim.run_for(Duration::from_secs(2));
    let refused = sim.client_events.iter().any(|(_, e)| {
        matches!(
            e,
            crdt_sync::ClientEvent::Error(crdt_sync::ProtocolError::Refused {
                code: crdt_sync::wire::ErrorCode::LimitExceeded,
                ..
            })
        )
    });
    assert!(refused, "{:?}", sim.client_events);
    let synced: Vec<_> = ["a", "b", "c"].into_iter().filter(|d| sim.client(0).is_saved(d)).collect();
    assert_eq!(synced, ["a", "b"]);
}
