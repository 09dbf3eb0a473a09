//! Recovery: changes that cannot be applied yet trigger a request for exactly what is
//! missing, never a silent drop.

mod common;

use std::time::Duration;

use common::sim::{Faults, Sim};
use crdt_sync::{DocumentStore, ServerEvent};

#[test]
fn a_server_restored_from_an_old_backup_asks_for_what_it_lost() {
    let mut sim = Sim::new(13, 2, &["doc"], Faults::none());
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    sim.edit(0, "doc", |d| d.transact().text("t").insert(0, "kept ").map(drop).unwrap());
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    let backup = sim.server().document("doc").unwrap().fork(crdt_sync::PeerId::new(0));

    sim.edit(0, "doc", |d| d.transact().text("t").insert(5, "lost ").map(drop).unwrap());
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    assert_eq!(sim.client(1).document("doc").unwrap().text("t").to_string(), "kept lost ");

    // The operator restores yesterday's copy under the running server.
    sim.server_mut().store_mut().insert("doc", backup);
    // The next edit depends on the change the server lost: it waits, and the server asks
    // its author for everything after the version it has.
    sim.edit(0, "doc", |d| d.transact().text("t").insert(10, "new").map(drop).unwrap());
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    assert!(
        sim.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::OutOfSync { document, .. } if &**document == "doc"))
    );
    let server = sim.server().document("doc").unwrap();
    assert_eq!(server.text("t").to_string(), "kept lost new");
    assert_eq!(server.pending_count(), 0);
    assert_eq!(sim.client(1).document("doc").unwrap().text("t").to_string(), "kept lost new");
}
