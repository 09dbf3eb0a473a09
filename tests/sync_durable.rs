//! A durable server: "saved" means committed, documents load lazily and unload when idle,
//! and storage failures are errors, never an empty document or a lost change.

mod common;

use std::time::Duration;

use common::sim::{Faults, Sim};
use crdt_sync::{
    ClientConfig, ClientEvent, Document, DurableStorage, PeerId, ProtocolError, ServerConfig, ServerEvent,
    wire::ErrorCode,
};

fn durable(unload_after: Duration) -> ServerConfig {
    ServerConfig::default().with_durable(unload_after).with_ack_delay(Duration::ZERO)
}

fn type_text(sim: &mut Sim, client: usize, doc: &str, text: &str) {
    sim.edit(client, doc, |d| {
        let len = d.text("t").len();
        d.transact().text("t").insert(len, text).map(drop).unwrap()
    });
}

fn text_of(doc: Option<&Document>) -> Option<String> {
    doc.map(|d| d.text("t").to_string())
}

#[test]
fn saved_waits_until_storage_committed_the_change() {
    let faults = Faults { latency_ms: (5, 5), ..Faults::none() };
    let mut sim = Sim::with_configs(1, 1, &["doc"], faults, durable(Duration::from_secs(30)), |_| {
        ClientConfig::default()
    });
    sim.storage_latency_ms = (300, 300);
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    type_text(&mut sim, 0, "doc", "hello");
    sim.run_for(Duration::from_millis(100));
    // Applied and in memory, but not on disk: not acknowledged.
    assert_eq!(text_of(sim.server().document("doc")).as_deref(), Some("hello"));
    assert!(!sim.client(0).is_saved("doc"), "acknowledged before the commit");
    let stored = sim.storage.as_mut().unwrap().load("doc").unwrap();
    assert_eq!(text_of(stored.as_ref()), None, "the commit is still on its way");
    sim.run_for(Duration::from_millis(300));
    assert!(sim.client(0).is_saved("doc"));
    let stored = sim.storage.as_mut().unwrap().load("doc").unwrap();
    assert_eq!(text_of(stored.as_ref()).as_deref(), Some("hello"));
}

#[test]
fn changes_typed_while_a_commit_is_in_flight_go_out_together_in_the_next() {
    let faults = Faults { latency_ms: (1, 1), ..Faults::none() };
    let mut sim = Sim::with_configs(2, 1, &["doc"], faults, durable(Duration::from_secs(30)), |_| {
        ClientConfig::default()
    });
    sim.storage_latency_ms = (50, 50);
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    for word in ["one ", "two ", "three ", "four ", "five "] {
        type_text(&mut sim, 0, "doc", word);
        sim.run_for(Duration::from_millis(10));
    }
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    // Five frames, two commits: the first, and one carrying the four typed meanwhile.
    let stored = sim.storage.as_ref().unwrap().entries("doc");
    assert_eq!(stored, 2, "one commit per frame instead of grouped ones");
    let stored = sim.storage.as_mut().unwrap().load("doc").unwrap();
    assert_eq!(text_of(stored.as_ref()).as_deref(), Some("one two three four five "));
}

#[test]
fn a_crashed_server_serves_what_it_committed_and_loads_only_what_is_asked_for() {
    let faults = Faults { latency_ms: (2, 2), ..Faults::none() };
    let docs = ["a", "b", "c"];
    let mut sim =
        Sim::with_configs(3, 1, &docs, faults, durable(Duration::from_secs(30)), |_| ClientConfig::default());
    assert!(sim.run_until_settled(&docs, Duration::from_secs(5)));
    for doc in docs {
        type_text(&mut sim, 0, doc, doc);
    }
    assert!(sim.run_until_settled(&docs, Duration::from_secs(5)));
    sim.restart_server(Duration::from_millis(100));
    // A newcomer subscribes to one document only.
    sim.server_events.clear();
    let peer = PeerId::new(50);
    let mut session = crdt_sync::ClientSession::new(peer, ClientConfig::default());
    session.subscribe("b", Document::new(peer));
    sim.vanish_client(0);
    let newcomer = sim.add_client(session);
    assert!(sim.run_until_with(Duration::from_secs(10), |s| s.client(newcomer).is_saved("b")
        && text_of(s.client(newcomer).document("b")).as_deref() == Some("b")));
    let loaded: Vec<&ServerEvent> =
        sim.server_events.iter().filter(|e| matches!(e, ServerEvent::DocumentLoaded { .. })).collect();
    assert_eq!(loaded, [&ServerEvent::DocumentLoaded { document: "b".into() }]);
    assert!(sim.server().document("a").is_none() && sim.server().document("c").is_none());
}

#[test]
fn a_document_that_cannot_load_is_refused_never_replaced_by_an_empty_one() {
    let faults = Faults { latency_ms: (2, 2), ..Faults::none() };
    let mut sim = Sim::with_configs(4, 1, &["doc"], faults, durable(Duration::from_secs(30)), |_| {
        ClientConfig::default()
    });
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    type_text(&mut sim, 0, "doc", "precious");
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    sim.vanish_client(0);
    sim.storage.as_mut().unwrap().set_failing(Some("disk on fire"));
    sim.restart_server(Duration::from_millis(100));

    // A fresh replica subscribes and types while the load fails.
    let peer = PeerId::new(60);
    let mut session = crdt_sync::ClientSession::new(peer, ClientConfig::default());
    session.subscribe("doc", Document::new(peer));
    let newcomer = sim.add_client(session);
    sim.run_for(Duration::from_secs(1));
    type_text(&mut sim, newcomer, "doc", "overwrite?");
    sim.run_for(Duration::from_secs(1));
    let refused = sim.client_events.iter().any(|(c, e)| {
        *c == newcomer
            && matches!(e, ClientEvent::Error(ProtocolError::Refused { code: ErrorCode::StorageFailed, detail })
                if detail.contains("disk on fire"))
    });
    assert!(refused, "the client is told: {:?}", sim.client_events);
    assert!(
        sim.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::StorageFailed { document: Some(d), .. } if &**d == "doc"))
    );
    assert!(sim.server().document("doc").is_none(), "no empty stand-in document");
    assert!(!sim.client(newcomer).is_saved("doc"));

    // Storage recovers; subscribing again loads the stored document and merges the edit.
    sim.storage.as_mut().unwrap().set_failing(None);
    let doc = sim.client_mut(newcomer).unsubscribe("doc").unwrap();
    sim.client_mut(newcomer).subscribe("doc", doc);
    sim.drain();
    assert!(sim.run_until_with(Duration::from_secs(10), |s| s.client(newcomer).is_saved("doc")));
    let text = text_of(sim.client(newcomer).document("doc")).unwrap();
    assert!(text.contains("precious") && text.contains("overwrite?"), "{text}");
    let stored = sim.storage.as_mut().unwrap().load("doc").unwrap();
    assert_eq!(text_of(stored.as_ref()), Some(text));
}

#[test]
fn a_failed_commit_is_retried_and_acknowledged_once_it_lands() {
    let faults = Faults { latency_ms: (2, 2), ..Faults::none() };
    let mut sim = Sim::with_configs(5, 1, &["doc"], faults, durable(Duration::from_secs(30)), |_| {
        ClientConfig::default()
    });
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    sim.storage.as_mut().unwrap().set_failing(Some("disk full"));
    type_text(&mut sim, 0, "doc", "wait for it");
    sim.run_for(Duration::from_secs(3));
    assert!(!sim.client(0).is_saved("doc"));
    let failures = sim
        .server_events
        .iter()
        .filter(|e| matches!(e, ServerEvent::StorageFailed { document: None, .. }))
        .count();
    assert!((2..=4).contains(&failures), "retried once per second, not in a loop: {failures}");
    sim.storage.as_mut().unwrap().set_failing(None);
    sim.run_for(Duration::from_secs(2));
    assert!(sim.client(0).is_saved("doc"));
    let stored = sim.storage.as_mut().unwrap().load("doc").unwrap();
    assert_eq!(text_of(stored.as_ref()).as_deref(), Some("wait for it"));
}

#[test]
fn idle_documents_leave_memory_and_come_back_on_demand() {
    let faults = Faults { latency_ms: (2, 2), ..Faults::none() };
    let mut sim = Sim::with_configs(6, 2, &["doc"], faults, durable(Duration::from_secs(5)), |_| {
        ClientConfig::default()
    });
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    type_text(&mut sim, 0, "doc", "kept on disk");
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    for client in 0..2 {
        sim.client_mut(client).unsubscribe("doc");
    }
    sim.drain();
    sim.run_for(Duration::from_secs(4));
    assert!(sim.server().document("doc").is_some(), "unloaded before the grace period");
    sim.run_for(Duration::from_secs(2));
    assert!(sim.server().document("doc").is_none(), "still in memory after the grace period");
    assert!(sim.server_events.contains(&ServerEvent::DocumentUnloaded { document: "doc".into() }));

    let peer = PeerId::new(70);
    sim.client_mut(1).subscribe("doc", Document::new(peer));
    sim.drain();
    assert!(sim.run_until_with(Duration::from_secs(5), |s| {
        text_of(s.client(1).document("doc")).as_deref() == Some("kept on disk")
    }));
    assert!(sim.server_events.contains(&ServerEvent::DocumentLoaded { document: "doc".into() }));
}
