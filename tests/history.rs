//! History: persistence with and without history, trimming, checking out past versions, and
//! changes that wait for their dependencies.

mod common;

use common::{
    assert_converged, assert_same_state, doc_at, export_after, fingerprint, pull, sync_all, sync_pair,
};
use crdt_sync::{
    ContainerKind, Document, DocumentConfig, EncodeOptions, Error, Frontier, IdSpan, OpId, PeerId,
    VersionVector,
};

fn text(doc: &Document) -> String {
    doc.text("t").to_string()
}

/// Two replicas with some history on several container types, including a nested one.
fn edited_pair() -> (Document, Document) {
    let mut a = doc_at(1, 0);
    let mut b = doc_at(2, 10);
    {
        let mut txn = a.transact();
        txn.text("t").insert(0, "héllo wörld 😀").unwrap();
        txn.list::<i64>("l").insert_many(0, &[1, 2, 3]).unwrap();
        let nested =
            txn.map::<String, i64>("m").insert_container(&"notes".to_string(), ContainerKind::Text).unwrap();
        txn.text_by_id(&nested).unwrap().insert(0, "nested").unwrap();
    }
    sync_pair(&mut a, &mut b);
    b.transact().text("t").insert(5, ",").unwrap();
    b.transact().movable_list::<String>("ml").push(&"x".to_string()).unwrap();
    a.transact().counter("c").add(7).unwrap();
    a.transact().or_set::<String>("s").insert(&"tag".to_string()).unwrap();
    sync_pair(&mut a, &mut b);
    (a, b)
}

#[test]
fn encode_and_load_round_trip_with_history() {
    let (mut a, _) = edited_pair();
    let early = a.frontier().clone();
    let early_json = a.to_json();
    a.transact().text("t").push_str(" again").unwrap();

    for options in [EncodeOptions::default(), EncodeOptions::lz4()] {
        let bytes = a.encode_with(options);
        let loaded = Document::load(&bytes, PeerId::new(3)).unwrap();
        assert_eq!(loaded.peer_id(), PeerId::new(3));
        assert_eq!(loaded.to_json(), a.to_json());
        assert_eq!(loaded.version(), a.version());
        assert_eq!(loaded.frontier(), a.frontier());
        assert_eq!(loaded.change_count(), a.change_count());
        assert!(loaded.encode() == a.encode(), "re-encoding a loaded document gives the same bytes");
        assert!(loaded.encode_state() == a.encode_state());
        // The history came along: past versions can still be checked out.
        assert_eq!(loaded.fork_at(&early, PeerId::new(4)).unwrap().to_json(), early_json);
    }

    // The loaded copy keeps syncing both ways with the original.
    let mut loaded = Document::load(&a.encode(), PeerId::new(3)).unwrap();
    a.transact().map::<String, i64>("m").insert(&"n".to_string(), &1).unwrap();
    loaded.transact().text("t").insert(0, "¡").unwrap();
    sync_pair(&mut a, &mut loaded);
    assert_converged(&[&a, &loaded]);
    assert!(text(&a).starts_with("¡héllo,"));
}

#[test]
fn repetitive_documents_encode_small_with_or_without_lz4_and_still_load() {
    let mut a = doc_at(1, 0);
    let words = "the same words again and again ".repeat(200);
    a.transact().text("t").insert(0, &words).unwrap();
    let plain = a.encode();
    // The history's text column is already DEFLATE-compressed; lz4 is kept only if it helps.
    assert!(plain.len() < words.len() / 4, "{} bytes for {} bytes of text", plain.len(), words.len());
    let compressed = a.encode_with(EncodeOptions::lz4());
    assert!(compressed.len() <= plain.len(), "{} vs {}", compressed.len(), plain.len());
    let loaded = Document::load(&compressed, PeerId::new(2)).unwrap();
    assert_eq!(text(&loaded), text(&a));
    let state = a.encode_state_with(EncodeOptions::lz4());
    assert!(state.len() < a.encode_state().len());
    assert_eq!(text(&Document::load(&state, PeerId::new(2)).unwrap()), text(&a));
}

#[test]
fn state_snapshot_loads_and_keeps_syncing_with_a_newer_replica() {
    let (mut a, _) = edited_pair();
    let snapshot = a.encode_state();
    let mut s = Document::load(&snapshot, PeerId::new(3)).unwrap();
    assert_eq!(s.to_json(), a.to_json());
    assert_eq!(s.version(), a.version());
    assert_eq!(s.change_count(), 0, "a snapshot has no history");
    assert_eq!(s.trimmed_version(), a.version());

    // A moves on; the snapshot replica catches up with a delta, not a full copy.
    a.transact().text("t").insert(0, ">> ").unwrap();
    a.transact().list::<i64>("l").delete(0, 1).unwrap();
    pull(&mut s, &a);
    assert_same_state(&[&a, &s]);

    // ...and edits on top of the snapshot flow back to A.
    s.transact().counter("c").add(-2).unwrap();
    s.transact().text("t").push_str("!").unwrap();
    pull(&mut a, &s);
    assert_same_state(&[&a, &s]);
    assert_eq!(a.counter("c").get(), 5);

    // What the snapshot replica never had, it cannot export.
    assert_eq!(s.export_since(&VersionVector::new()), Err(Error::HistoryTrimmed));

    // A snapshot also brings up an empty replica through `import`.
    let mut fresh = Document::new(PeerId::new(4));
    assert_eq!(fresh.import(&s.encode_state()).unwrap().applied, 1);
    assert_eq!(fresh.to_json(), s.to_json());
    assert_eq!(fresh.peer_id(), PeerId::new(4), "importing a snapshot keeps the replica's own peer id");

    // An older snapshot is a no-op on a newer replica.
    let before = fingerprint(&a);
    let status = a.import(&snapshot).unwrap();
    assert_eq!(status.applied, 0);
    assert_eq!(fingerprint(&a), before);
}

#[test]
fn snapshot_cannot_be_merged_into_a_diverged_replica() {
    let (a, mut b) = edited_pair();
    b.transact().text("t").push_str("only on b").unwrap();
    let mut a2 = a.fork(PeerId::new(5));
    a2.transact().text("t").push_str("only on a2").unwrap();
    // b has a change the snapshot lacks: states without history cannot be merged op by op.
    let before = fingerprint(&b);
    assert_eq!(b.import(&a2.encode_state()), Err(Error::HistoryTrimmed));
    assert_eq!(fingerprint(&b), before, "a refused snapshot leaves the document unchanged");
}

#[test]
fn trim_history_at_a_version_every_replica_has() {
    let mut docs: Vec<Document> = (1..=3).map(|p| doc_at(p, p * 100)).collect();
    docs[0].transact().text("t").insert(0, "one ").unwrap();
    let early_version = docs[0].version().clone();
    docs[1].transact().text("t").insert(0, "two ").unwrap();
    docs[2].transact().counter("c").add(3).unwrap();
    sync_all(&mut docs);
    let common_version = docs[0].version().clone();
    let common_frontier = docs[0].frontier().clone();
    let common_json = docs[0].to_json();

    // A and B move on; C stays at the common version.
    docs[0].transact().text("t").push_str("three").unwrap();
    docs[1].transact().counter("c").add(1).unwrap();
    let (head, tail) = docs.split_at_mut(1);
    sync_pair(&mut head[0], &mut tail[0]);

    let a = &mut docs[0];
    let state_before = a.encode_state();
    let changes_before = a.change_count();
    a.trim_history(&common_version).unwrap();
    assert_eq!(a.trimmed_version(), &common_version);
    assert!(a.change_count() < changes_before, "trimming dropped the old changes");
    assert!(a.encode_state() == state_before, "trimming history does not change the state");

    // Replicas at or after the trimmed version keep syncing.
    let to_c = docs[0].export_since(docs[2].version()).unwrap();
    docs[2].import(&to_c).unwrap();
    assert_same_state(&[&docs[0], &docs[2]]);
    // Older versions cannot be served any more.
    assert_eq!(docs[0].export_since(&early_version), Err(Error::HistoryTrimmed));
    assert_eq!(docs[0].export_since(&VersionVector::new()), Err(Error::HistoryTrimmed));

    // The trimmed version itself can still be checked out (it is the base state)...
    let at_common = docs[0].fork_at(&common_frontier, PeerId::new(9)).unwrap();
    assert_eq!(at_common.to_json(), common_json);

    // ...and the trimmed document round-trips through `encode`, trim point included.
    let reloaded = Document::load(&docs[0].encode(), PeerId::new(8)).unwrap();
    assert_eq!(reloaded.to_json(), docs[0].to_json());
    assert_eq!(reloaded.trimmed_version(), &common_version);
    assert!(reloaded.export_since(&common_version).is_ok());

    // A fresh replica comes up from a snapshot and then takes deltas.
    let mut fresh = Document::new(PeerId::new(4));
    fresh.import(&docs[0].encode_state()).unwrap();
    docs[1].transact().text("t").insert(0, "four ").unwrap();
    let delta = docs[1].export_since(fresh.version()).unwrap();
    fresh.import(&delta).unwrap();
    let (head, tail) = docs.split_at_mut(1);
    pull(&mut head[0], &tail[0]);
    assert_same_state(&[&fresh, &docs[0], &docs[1]]);

    // A version that the document lacks cannot be a trim point; nothing changes.
    let before = fingerprint(&docs[0]);
    let mut unknown = docs[0].version().clone();
    unknown.set(PeerId::new(77), 1);
    assert_eq!(docs[0].trim_history(&unknown), Err(Error::UnknownVersion));
    assert_eq!(fingerprint(&docs[0]), before);
}

#[test]
fn fork_at_a_frontier_inside_trimmed_history_does_not_show_another_version() {
    let mut a = doc_at(1, 0);
    let mut b = doc_at(2, 0);
    a.transact().text("t").insert(0, "old").unwrap();
    let old_frontier = a.frontier().clone();
    let old_version = a.version().clone();
    b.transact().text("t").insert(0, "new").unwrap();
    sync_pair(&mut a, &mut b);
    let trim_at = a.version().clone();
    a.trim_history(&trim_at).unwrap();
    // The old version is gone from history: asking for it must say so (or show it exactly),
    // never silently answer with the trimmed version, which also holds "new".
    match a.version_of(&old_frontier) {
        Err(e) => assert_eq!(e, Error::HistoryTrimmed),
        Ok(v) => assert_eq!(v, old_version, "version_of a trimmed frontier names another version"),
    }
    match a.fork_at(&old_frontier, PeerId::new(10)) {
        Err(e) => assert_eq!(e, Error::HistoryTrimmed),
        Ok(fork) => {
            assert_eq!(fork.text("t").to_string(), "old", "fork_at showed version {:?}", fork.version())
        }
    }
}

#[test]
fn versions_after_the_trim_point_can_still_be_checked_out() {
    let mut a = doc_at(1, 0);
    let mut b = doc_at(2, 0);
    let mut past = Vec::new();
    for step in 0..6 {
        let doc = if step % 2 == 0 { &mut a } else { &mut b };
        doc.transact().text("t").push_str(&step.to_string()).unwrap();
        if step % 3 == 2 {
            sync_pair(&mut a, &mut b);
        }
        past.push(seen(&a));
    }
    sync_pair(&mut a, &mut b);
    // Trim twice, each time at a version both replicas have; every version from the latest
    // trim point on stays checkable.
    for trim_at in [2, 5] {
        a.trim_history(&past[trim_at].version).unwrap();
        for (i, s) in past.iter().enumerate().skip(trim_at) {
            assert_eq!(a.version_of(&s.frontier).unwrap(), s.version, "version_of record {i}");
            let fork = a.fork_at(&s.frontier, PeerId::new(9)).unwrap();
            assert_eq!(fork.to_json(), s.json, "record {i} after trimming at {trim_at}");
        }
    }
    let reloaded = Document::load(&a.encode(), PeerId::new(5)).unwrap();
    assert_same_state(&[&a, &reloaded]);
    // The trimmed replica keeps syncing with the untrimmed one.
    b.transact().text("t").push_str("z").unwrap();
    a.merge(&b).unwrap();
    b.merge(&a).unwrap();
    assert_same_state(&[&a, &b]);
}

#[test]
fn importing_a_snapshot_keeps_buffered_changes() {
    let mut a = doc_at(1, 0);
    a.transact().text("t").insert(0, "base").unwrap();
    let snapshot = a.encode_state();
    let before = a.version().clone();
    a.transact().text("t").push_str("!").unwrap();
    let later = export_after(&a, &before);

    // Snapshot first, then the later change: "base!".
    let mut in_order = doc_at(2, 0);
    in_order.import(&snapshot).unwrap();
    in_order.import(&later).unwrap();
    assert_eq!(text(&in_order), "base!");

    // The later change first (it waits for "base"), then the snapshot that holds "base": the
    // buffered change must be applied, not forgotten. Import is documented as order-free.
    let mut reversed = doc_at(3, 0);
    assert_eq!(reversed.import(&later).unwrap().pending, 1);
    reversed.import(&snapshot).unwrap();
    assert_eq!(
        text(&reversed),
        "base!",
        "the buffered change was lost (pending_count {})",
        reversed.pending_count()
    );
    assert_eq!(reversed.version(), in_order.version());
}

#[test]
fn trim_history_inside_a_change_keeps_the_rest_of_it() {
    let mut a = doc_at(1, 0);
    a.transact().text("t").insert(0, "abc").unwrap(); // ids 0..3 in one change
    let mut b = doc_at(2, 0);
    let mut half = VersionVector::new();
    half.set(PeerId::new(1), 2);
    b.import(&a.fork_at(&Frontier::from(OpId::new(PeerId::new(1), 1)), PeerId::new(3)).unwrap().encode())
        .unwrap();
    assert_eq!(text(&b), "ab");
    a.trim_history(&half).unwrap();
    assert_eq!(text(&a), "abc");
    // The part after the trimmed version still syncs, cut where the receiver's version ends.
    b.import(&a.export_since(b.version()).unwrap()).unwrap();
    assert_eq!(text(&b), "abc");
    let mut too_old = VersionVector::new();
    too_old.set(PeerId::new(1), 1);
    assert_eq!(a.export_since(&too_old), Err(Error::HistoryTrimmed));
}

/// A version seen during a run: frontier, version vector and content.
struct Seen {
    frontier: Frontier,
    version: VersionVector,
    json: serde_json::Value,
    text: String,
}

fn seen(doc: &Document) -> Seen {
    Seen {
        frontier: doc.frontier().clone(),
        version: doc.version().clone(),
        json: doc.to_json(),
        text: text(doc),
    }
}

#[test]
fn fork_at_past_frontiers_shows_the_past_exactly() {
    let mut a = doc_at(1, 0);
    let mut b = doc_at(2, 50);
    let mut past = vec![seen(&a)];
    let edits: [(usize, &str); 8] =
        [(0, "Hello"), (1, "Wörld"), (0, " and"), (1, " 😀"), (0, "!"), (1, "?"), (0, "x"), (1, "y")];
    for (step, (who, word)) in edits.into_iter().enumerate() {
        let doc = if who == 0 { &mut a } else { &mut b };
        {
            let mut txn = doc.transact();
            let len = txn.doc().text("t").len();
            txn.text("t").insert(len / 2, word).unwrap();
            if step % 3 == 2 {
                txn.text("t").delete(0, 1).unwrap();
                txn.counter("c").add(step as i64).unwrap();
            }
        }
        past.push(seen(doc));
        // Sync every other step, so that some versions have two heads.
        if step % 2 == 1 {
            sync_pair(&mut a, &mut b);
            past.push(seen(&a));
        }
    }
    sync_pair(&mut a, &mut b);
    let loaded = Document::load(&a.encode(), PeerId::new(3)).unwrap();

    assert!(past.iter().any(|s| s.frontier.ids().len() == 2), "some version should have two heads");
    for (i, s) in past.iter().enumerate() {
        for (name, doc) in [("a", &a), ("b", &b), ("loaded", &loaded)] {
            assert_eq!(doc.version_of(&s.frontier).unwrap(), s.version, "version_of record {i} on {name}");
            let fork = doc.fork_at(&s.frontier, PeerId::new(100 + i as u64)).unwrap();
            assert_eq!(text(&fork), s.text, "text of record {i} checked out on {name}");
            assert_eq!(fork.to_json(), s.json, "record {i} checked out on {name}");
            assert_eq!(fork.version(), &s.version);
            assert_eq!(fork.frontier(), &s.frontier);
        }
    }

    // Editing on a past version and merging back keeps both lines of work.
    let mut old = a.fork_at(&past[2].frontier, PeerId::new(50)).unwrap();
    old.transact().text("t").insert(0, "[branch]").unwrap();
    a.merge(&old).unwrap();
    assert!(text(&a).contains("[branch]"));
    assert!(text(&a).contains("y"));
}

#[test]
fn fork_at_an_unknown_frontier_is_an_error_and_inside_a_change_a_prefix() {
    let mut a = doc_at(1, 0);
    a.transact().text("t").insert(0, "abcd").unwrap(); // one change: ids 0..4
    let unknown = Frontier::from(OpId::new(PeerId::new(9), 0));
    assert!(matches!(a.fork_at(&unknown, PeerId::new(2)), Err(Error::UnknownVersion)));
    assert!(matches!(a.version_of(&unknown), Err(Error::UnknownVersion)));
    // Id 1 lies inside the change: every prefix of a change is a version too.
    let inside = Frontier::from(OpId::new(PeerId::new(1), 1));
    assert_eq!(text(&a.fork_at(&inside, PeerId::new(2)).unwrap()), "ab");
    // The empty frontier is the empty document.
    let empty = a.fork_at(&Frontier::new(), PeerId::new(2)).unwrap();
    assert_eq!(text(&empty), "");
    assert_eq!(a.version_of(&Frontier::new()).unwrap(), VersionVector::new());
}

#[test]
fn missing_dependencies_are_buffered_reported_and_applied_later() {
    let s_peer = PeerId::new(1);
    let mut s = doc_at(1, 0);
    let mut batches = Vec::new();
    for word in ["a", "bc", "d"] {
        let before = s.version().clone();
        s.transact().text("t").push_str(word).unwrap();
        batches.push(export_after(&s, &before));
    }
    // Change 3 occupies id 3; changes 1 and 2 occupy ids 0..3.
    let mut t = doc_at(2, 0);
    let before = fingerprint(&t);
    let status = t.import(&batches[2]).unwrap();
    assert_eq!((status.applied, status.pending), (0, 1));
    assert_eq!(t.pending_count(), 1);
    assert_eq!(t.missing_dependencies(), vec![IdSpan::new(OpId::new(s_peer, 0), 3)]);
    assert_eq!(text(&t), "", "nothing is applied before its dependencies");
    assert_eq!(t.version(), &before.version);

    // The same buffered change again is a duplicate, not a second entry.
    let status = t.import(&batches[2]).unwrap();
    assert_eq!((status.applied, status.duplicates, status.pending), (0, 1, 1));

    let status = t.import(&batches[0]).unwrap();
    assert_eq!((status.applied, status.pending), (1, 1));
    assert_eq!(t.missing_dependencies(), vec![IdSpan::new(OpId::new(s_peer, 1), 2)]);
    assert_eq!(text(&t), "a");

    let status = t.import(&batches[1]).unwrap();
    assert_eq!((status.applied, status.pending), (2, 0), "the buffered change is applied too");
    assert!(t.missing_dependencies().is_empty());
    assert_converged(&[&s, &t]);
}

#[test]
fn missing_dependencies_name_the_other_peer() {
    let mut a = doc_at(1, 0);
    let mut b = doc_at(2, 0);
    a.transact().text("t").insert(0, "ab").unwrap(); // ids a@0..2
    pull(&mut b, &a);
    let before = b.version().clone();
    b.transact().text("t").insert(1, "X").unwrap(); // depends on a@1
    let from_b = export_after(&b, &before);

    let mut t = doc_at(3, 0);
    t.import(&from_b).unwrap();
    assert_eq!(t.pending_count(), 1);
    assert_eq!(t.missing_dependencies(), vec![IdSpan::new(OpId::new(PeerId::new(1), 0), 2)]);
    let status = t.import(&a.export_since(&VersionVector::new()).unwrap()).unwrap();
    assert_eq!((status.applied, status.pending), (2, 0));
    assert_eq!(text(&t), "aXb");
}

// ---- merged changes ---------------------------------------------------------------------

#[test]
fn typing_is_stored_as_one_change_and_every_keystroke_stays_a_version() {
    let mut a = doc_at(1, 0);
    let mut seen = Vec::new();
    for (i, ch) in "typing one key at a time".chars().enumerate() {
        a.transact().text("t").insert(i, &ch.to_string()).unwrap();
        seen.push((a.frontier().clone(), text(&a)));
    }
    assert_eq!(a.change_count(), 1, "a run of keystrokes is one stored change");
    for (frontier, expected) in &seen {
        assert_eq!(&text(&a.fork_at(frontier, PeerId::new(2)).unwrap()), expected);
    }
    // Merging can be turned off.
    let mut b = Document::with_config(PeerId::new(3), DocumentConfig::default().with_merge_changes(false));
    for (i, ch) in "abc".chars().enumerate() {
        b.transact().text("t").insert(i, &ch.to_string()).unwrap();
    }
    assert_eq!(b.change_count(), 3);
}

#[test]
fn a_change_received_in_overlapping_pieces_is_applied_once() {
    let mut a = doc_at(1, 0);
    for (i, ch) in "hello".chars().enumerate() {
        a.transact().text("t").insert(i, &ch.to_string()).unwrap();
    }
    let upto = |n: u32| {
        let mut v = VersionVector::new();
        v.set(PeerId::new(1), n);
        v
    };
    // Two relays cut the same stored change differently: ids 0..3 and ids 1..5.
    let first = a.changes_between(&VersionVector::new(), &upto(3)).unwrap();
    let second = a.changes_between(&upto(1), &upto(5)).unwrap();
    let mut c = doc_at(3, 0);
    assert_eq!(c.apply_changes(second.clone()).unwrap().pending, 1, "ids 1..5 wait for id 0");
    let status = c.apply_changes(first).unwrap();
    assert_eq!(status.pending, 0);
    assert_eq!(text(&c), "hello");
    assert_eq!(c.apply_changes(second).unwrap().duplicates, 1);
    assert_converged(&[&a, &c]);
}

#[test]
fn a_write_merged_into_a_typing_run_keeps_its_own_timestamp() {
    // A types at t=1 s, B writes the key at t=2 s, A writes it at t=3 s as part of its run.
    let mut a = doc_at(1, 1_000);
    let mut b = doc_at(2, 2_000);
    a.transact().text("t").insert(0, "x").unwrap();
    b.transact().map::<String, String>("m").insert(&"k".to_string(), &"b".to_string()).unwrap();
    a.set_wall_clock(common::BASE_MS + 3_000);
    a.transact().map::<String, String>("m").insert(&"k".to_string(), &"a".to_string()).unwrap();
    assert_eq!(a.change_count(), 1, "the write joined the typing run");
    sync_pair(&mut a, &mut b);
    for doc in [&a, &b] {
        assert_eq!(
            doc.map::<String, String>("m").get(&"k".to_string()),
            Ok(Some("a".to_string())),
            "last writer wins"
        );
    }
    assert_converged(&[&a, &b]);
}

#[test]
fn a_list_insert_received_in_two_cuts_equals_the_whole() {
    let mut a = doc_at(1, 0);
    a.transact().list::<i64>("l").insert_many(0, &[1, 2, 3, 4]).unwrap();
    {
        let mut txn = a.transact();
        for (i, item) in [5, 6, 7].iter().enumerate() {
            txn.movable_list::<i64>("ml").insert(i, item).unwrap();
        }
    }
    let upto = |n: u32| {
        let mut v = VersionVector::new();
        v.set(PeerId::new(1), n);
        v
    };
    let mut c = doc_at(3, 0);
    let end = a.version().get(PeerId::new(1));
    for (from, to) in [(0, 2), (2, 5), (5, end)] {
        c.apply_changes(a.changes_between(&upto(from), &upto(to)).unwrap()).unwrap();
    }
    assert_converged(&[&a, &c]);
    // The whole, sent again, is a duplicate of what C joined from the cuts, not a conflict.
    let status = c.import(&a.export_since(&VersionVector::new()).unwrap()).unwrap();
    assert_eq!(status.duplicates, 1);
}

#[test]
fn a_loaded_document_keeps_syncing_checking_out_and_editing_its_history() {
    let (mut a, mut b) = edited_pair();
    let mut past = Vec::new();
    for (i, ch) in "typed after".chars().enumerate() {
        a.transact().text("t").insert(i, &ch.to_string()).unwrap();
        past.push((a.frontier().clone(), text(&a)));
    }
    let bytes = a.encode();
    let mut loaded = Document::load(&bytes, PeerId::new(1)).unwrap();
    assert_eq!(loaded.encode(), bytes, "an untouched load encodes to the bytes it came from");

    // A remote change on top of the loaded history applies; the history still exports.
    b.transact().text("t").insert(0, "B").unwrap();
    pull(&mut loaded, &b);
    pull(&mut b, &loaded);
    assert_eq!(text(&b), text(&loaded));
    let (frontier, expected) = &past[4];
    assert_eq!(&text(&loaded.fork_at(frontier, PeerId::new(7)).unwrap()), expected);

    // Typing on (as the same peer, after a load) joins the loaded history as usual.
    let len = loaded.text("t").len();
    loaded.transact().text("t").insert(len, "!").unwrap();
    pull(&mut a, &loaded);
    pull(&mut a, &b);
    sync_pair(&mut b, &mut loaded);
    assert_converged(&[&a, &b, &loaded]);
}
