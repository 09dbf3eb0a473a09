//! A document that refuses what the server holds stops syncing on its own; it does not drag
//! the connection into a reconnect loop.

mod common;

use std::time::Duration;

use common::BASE_MS;
use common::sim::{Faults, Sim};
use crdt_sync::{ClientEvent, ConnectionStatus};

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

#[test]
fn a_change_from_too_far_in_the_future_is_refused_without_a_reconnect_loop() {
    let mut sim = Sim::new(17, 2, &["a", "b"], Faults::none());
    for client in 0..2 {
        for doc in ["a", "b"] {
            sim.clients[client].session.document_mut(doc).unwrap().set_wall_clock(BASE_MS);
        }
    }
    assert!(sim.run_until_settled(&["a", "b"], Duration::from_secs(5)));
    // Client 0's clock for `a` runs three days ahead; client 1 accepts at most one day of drift.
    sim.clients[0].session.document_mut("a").unwrap().set_wall_clock(BASE_MS + 3 * DAY_MS);
    sim.edit(0, "a", |d| d.transact().text("t").insert(0, "from the future").map(drop).unwrap());
    sim.run_for(Duration::from_secs(60));

    let refused: Vec<_> = sim
        .client_events
        .iter()
        .filter(|(c, e)| {
            *c == 1 && matches!(e, ClientEvent::DocumentRefused { document, .. } if &**document == "a")
        })
        .collect();
    assert_eq!(refused.len(), 1, "{:?}", sim.client_events);
    assert_eq!(sim.client(1).status(), ConnectionStatus::Connected, "the connection stays up");
    let reconnects = sim
        .client_events
        .iter()
        .filter(|(c, e)| *c == 1 && *e == ClientEvent::StatusChanged(ConnectionStatus::Reconnecting))
        .count();
    assert_eq!(reconnects, 0);
    assert!(sim.client(1).document("a").unwrap().text("t").is_empty());

    // The other document keeps syncing.
    sim.edit(0, "b", |d| d.transact().text("t").insert(0, "still here").map(drop).unwrap());
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.client(1).document("b").unwrap().text("t").to_string(), "still here");

    // Once its clock catches up, subscribing `a` again brings the change.
    let mut doc = sim.client_mut(1).unsubscribe("a").unwrap();
    doc.set_wall_clock(BASE_MS + 3 * DAY_MS);
    sim.client_mut(1).subscribe("a", doc);
    sim.drain();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.client(1).document("a").unwrap().text("t").to_string(), "from the future");
}
