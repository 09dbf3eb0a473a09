//! Recovery: changes that cannot be applied yet trigger a request for exactly what is
//! missing, never a silent drop.

mod common;

use std::time::Duration;

use common::sim::{Faults, Sim};
use crdt_sync::{ClientEvent, DocumentStore, ServerEvent};

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

/// A late joiner got the document as a snapshot (the server had trimmed its history); then
/// the server went back to a backup older than that snapshot. The joiner's new edit depends
/// on a change that now lives only in the joiner's snapshot and in its author's history, so
/// the joiner cannot send everything the server asks for. It must still send its own edit,
/// without an error (it used to report `HistoryTrimmed` at every poll, and the simulation
/// spun on it), and everything converges once the author reconnects.
#[test]
fn a_joiner_whose_snapshot_the_server_lost_still_sends_its_edits() {
    let mut sim = Sim::new(17, 1, &["doc"], Faults::none());
    sim.edit(0, "doc", |d| d.transact().text("t").insert(0, "kept ").map(drop).unwrap());
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    let backup = sim.server().document("doc").unwrap().fork(crdt_sync::PeerId::new(0));
    sim.edit(0, "doc", |d| d.transact().text("t").insert(5, "lost ").map(drop).unwrap());
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));

    // The server trims its history: a client joining now gets a snapshot.
    let server_doc = sim.server_mut().store_mut().get_mut("doc").unwrap();
    let version = server_doc.version().clone();
    server_doc.trim_history(&version).unwrap();
    let peer = crdt_sync::PeerId::new(9);
    let mut session = crdt_sync::ClientSession::new(peer, crdt_sync::ClientConfig::default());
    session.subscribe("doc", crdt_sync::Document::new(peer));
    let joiner = sim.add_client(session);
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(5)));
    let joined = sim.client(joiner).document("doc").unwrap();
    assert_eq!(joined.text("t").to_string(), "kept lost ");
    assert!(!joined.trimmed_version().is_empty(), "the joiner's copy starts from a snapshot");

    // The operator restores yesterday's copy; the joiner types on top of what it lost.
    sim.server_mut().store_mut().insert("doc", backup);
    sim.edit(joiner, "doc", |d| d.transact().text("t").insert(10, "new").map(drop).unwrap());
    sim.run_for(Duration::from_secs(2));
    assert_eq!(
        sim.client_events.iter().filter(|(c, e)| *c == joiner && matches!(e, ClientEvent::Error(_))).count(),
        0,
        "the joiner reports no error: it sends what it holds as changes",
    );
    assert!(sim.server().document("doc").unwrap().pending_count() > 0, "\"new\" waits for \"lost \"");

    // The author of the lost change reconnects and sends it again: nothing is lost.
    sim.break_client_link(0);
    assert!(sim.run_until_settled(&["doc"], Duration::from_secs(30)));
    let server = sim.server().document("doc").unwrap();
    assert_eq!(server.text("t").to_string(), "kept lost new");
    assert_eq!(server.pending_count(), 0);
    for client in [0, joiner] {
        assert_eq!(sim.client(client).document("doc").unwrap().text("t").to_string(), "kept lost new");
    }
}
