//! What concurrent edits resolve to: deterministic scenarios for each type's merge rule, as a
//! user would see them (text runs that do not interleave, moves that do not duplicate,
//! last-writer-wins by hybrid clock, add-wins sets, summing counters), plus stable cursors,
//! minimal `set_text` diffs, UTF-16/UTF-8 offsets and events.

mod common;

use common::{BASE_MS, assert_converged, doc_at, pull, sync_all, sync_pair};
use crdt_sync::{ContainerKind, Cursor, DocEvent, Document, Error, Origin, PeerId};

/// A way of typing a run of text at a position.
type Typing = fn(&mut Document, usize, &str);

fn set_text(doc: &mut Document, text: &str) {
    doc.transact().text("t").insert(0, text).unwrap();
}

fn text(doc: &Document) -> String {
    doc.text("t").to_string()
}

/// Type `run` at `pos`, one character per transaction (like a user typing).
fn type_char_by_char(doc: &mut Document, pos: usize, run: &str) {
    for (i, c) in run.chars().enumerate() {
        doc.transact().text("t").insert(pos + i, &c.to_string()).unwrap();
    }
}

fn type_at_once(doc: &mut Document, pos: usize, run: &str) {
    doc.transact().text("t").insert(pos, run).unwrap();
}

/// Replicas sharing `base`, each typing its run at `pos` concurrently (with `typing`), then
/// fully synced. Returns the converged text after checking every replica agrees.
fn concurrent_runs(base: &str, pos: usize, runs: &[&str], typing: &[Typing]) -> String {
    let mut docs: Vec<Document> = (0..runs.len()).map(|i| doc_at(i as u64 + 1, i as u64)).collect();
    set_text(&mut docs[0], base);
    sync_all(&mut docs);
    for (i, run) in runs.iter().enumerate() {
        typing[i % typing.len()](&mut docs[i], pos, run);
    }
    sync_all(&mut docs);
    let refs: Vec<&Document> = docs.iter().collect();
    assert_converged(&refs);
    text(&docs[0])
}

/// Whether `result` is `base` with all `runs` inserted contiguously at `pos`, in some order.
fn is_contiguous_permutation(result: &str, base: &str, pos: usize, runs: &[&str]) -> bool {
    let base: Vec<char> = base.chars().collect();
    let prefix: String = base[..pos].iter().collect();
    let suffix: String = base[pos..].iter().collect();
    permutations(runs).iter().any(|perm| format!("{prefix}{}{suffix}", perm.concat()) == result)
}

fn permutations<'a>(items: &[&'a str]) -> Vec<Vec<&'a str>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut perm in permutations(&rest) {
            perm.insert(0, first);
            out.push(perm);
        }
    }
    out
}

#[test]
fn concurrent_runs_never_interleave_two_replicas() {
    let base = "0123456789";
    let styles: [(&str, Vec<Typing>); 3] = [
        ("char by char", vec![type_char_by_char]),
        ("one insert each", vec![type_at_once]),
        ("mixed", vec![type_char_by_char, type_at_once]),
    ];
    for (style, typing) in &styles {
        for pos in [0, 5, 10] {
            let result = concurrent_runs(base, pos, &["hello", "world"], typing);
            assert!(
                is_contiguous_permutation(&result, base, pos, &["hello", "world"]),
                "{style} at {pos}: runs interleaved: {result:?}"
            );
        }
    }
}

#[test]
fn concurrent_runs_never_interleave_three_replicas() {
    let base = "abcdef";
    for typing in [vec![type_char_by_char as Typing], vec![type_at_once, type_char_by_char]] {
        for pos in [0, 3, 6] {
            let runs = ["ÄÄÄÄ", "😀😀😀", "xyzw"];
            let result = concurrent_runs(base, pos, &runs, &typing);
            assert!(
                is_contiguous_permutation(&result, base, pos, &runs),
                "at {pos}: runs interleaved: {result:?}"
            );
        }
    }
}

#[test]
fn concurrent_runs_into_an_empty_text_never_interleave() {
    let result = concurrent_runs("", 0, &["hello", "world"], &[type_char_by_char]);
    assert!(result == "helloworld" || result == "worldhello", "{result:?}");
}

// ---- movable list -------------------------------------------------------------------------

fn letters(doc: &Document) -> Vec<String> {
    doc.movable_list::<String>("m").to_vec().unwrap()
}

/// Three replicas sharing the movable list a..e.
fn shared_movable_list() -> Vec<Document> {
    let mut docs: Vec<Document> = (1..=3).map(|p| doc_at(p, 0)).collect();
    {
        let mut txn = docs[0].transact();
        let mut list = txn.movable_list::<String>("m");
        for letter in ["a", "b", "c", "d", "e"] {
            list.push(&letter.to_string()).unwrap();
        }
    }
    sync_all(&mut docs);
    docs
}

fn assert_each_element_once(doc: &Document, expected_len: usize) {
    let list = doc.movable_list::<String>("m");
    assert_eq!(list.len(), expected_len, "concurrent moves changed the length: {:?}", letters(doc));
    let mut ids: Vec<_> = (0..list.len()).map(|i| list.elem_id(i).unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), expected_len, "an element appears twice: {:?}", letters(doc));
    for (i, id) in (0..list.len()).map(|i| (i, list.elem_id(i).unwrap())) {
        assert_eq!(list.index_of(id), Some(i));
    }
}

#[test]
fn concurrent_moves_of_one_element_never_duplicate_it_two_replicas() {
    // Targets differ from the current index 2: a move to where the element already is would be a no-op.
    for (a_to, b_to) in [(4, 0), (0, 4), (1, 1), (3, 1), (1, 3)] {
        let mut docs = shared_movable_list();
        let elem_c = docs[0].movable_list::<String>("m").elem_id(2).unwrap();
        // B's clock is later: its move is the last writer.
        docs[0].set_wall_clock(BASE_MS + 1_000);
        docs[1].set_wall_clock(BASE_MS + 2_000);
        docs[0].transact().movable_list::<String>("m").move_item(2, a_to).unwrap();
        docs[1].transact().movable_list::<String>("m").move_item(2, b_to).unwrap();
        let b_view = letters(&docs[1]);
        let (a, b) = docs.split_at_mut(1);
        sync_pair(&mut a[0], &mut b[0]);
        assert_converged(&[&docs[0], &docs[1]]);
        assert_each_element_once(&docs[0], 5);
        assert_eq!(letters(&docs[0]), b_view, "moving c to {a_to} vs {b_to}: the later move must win");
        assert_eq!(docs[0].movable_list::<String>("m").index_of(elem_c), Some(b_to));
    }
}

#[test]
fn concurrent_moves_of_one_element_never_duplicate_it_three_replicas() {
    let mut docs = shared_movable_list();
    // All three move "a"; C has the latest clock, A the earliest.
    for (i, (to, clock)) in [(4, 3_000), (2, 1_000), (3, 5_000)].into_iter().enumerate() {
        docs[i].set_wall_clock(BASE_MS + clock);
        docs[i].transact().movable_list::<String>("m").move_item(0, to).unwrap();
    }
    let c_view = letters(&docs[2]);
    assert_eq!(c_view, ["b", "c", "d", "a", "e"]);
    // Deliver in an order where the winning move arrives first at A and last at B.
    let from_c = docs[2].export_since(docs[0].version()).unwrap();
    let from_a = docs[0].export_since(docs[1].version()).unwrap();
    let from_b = docs[1].export_since(docs[0].version()).unwrap();
    docs[0].import(&from_c).unwrap();
    docs[0].import(&from_b).unwrap();
    docs[1].import(&from_a).unwrap();
    docs[1].import(&from_c).unwrap();
    sync_all(&mut docs);
    let refs: Vec<&Document> = docs.iter().collect();
    assert_converged(&refs);
    for doc in &docs {
        assert_each_element_once(doc, 5);
    }
    assert_eq!(letters(&docs[0]), c_view, "the move with the latest timestamp decides");
}

#[test]
fn concurrent_moves_of_different_elements_and_a_set_keep_every_element_once() {
    let mut docs = shared_movable_list();
    let elem_a = docs[0].movable_list::<String>("m").elem_id(0).unwrap();
    docs[0].transact().movable_list::<String>("m").move_item(0, 4).unwrap();
    docs[1].transact().movable_list::<String>("m").move_item(4, 0).unwrap();
    // A concurrent in-place update of the element that A moves: both effects survive.
    docs[2].transact().movable_list::<String>("m").set(0, &"A".to_string()).unwrap();
    sync_all(&mut docs);
    let refs: Vec<&Document> = docs.iter().collect();
    assert_converged(&refs);
    assert_each_element_once(&docs[0], 5);
    let list = docs[0].movable_list::<String>("m");
    let at = list.index_of(elem_a).expect("the moved and updated element still exists");
    assert_eq!(list.get(at).unwrap().as_deref(), Some("A"), "the update is kept through the move");
    assert_eq!(letters(&docs[0]), ["e", "b", "c", "d", "A"]);
}

#[test]
fn concurrent_move_and_delete_do_not_resurrect_or_duplicate() {
    let mut docs = shared_movable_list();
    docs[0].transact().movable_list::<String>("m").move_item(1, 3).unwrap();
    docs[1].transact().movable_list::<String>("m").delete(1, 1).unwrap();
    sync_all(&mut docs);
    let refs: Vec<&Document> = docs.iter().collect();
    assert_converged(&refs);
    // Whatever the rule, "b" is not there twice, and the others are each there once.
    let result = letters(&docs[0]);
    assert!(result.iter().filter(|l| *l == "b").count() <= 1, "{result:?}");
    for l in ["a", "c", "d", "e"] {
        assert_eq!(result.iter().filter(|x| *x == l).count(), 1, "{result:?}");
    }
    assert_each_element_once(&docs[0], result.len());
}

// ---- last-writer-wins by hybrid clock -------------------------------------------------------

fn map_get(doc: &Document, key: &str) -> Option<String> {
    doc.map::<String, String>("m").get(&key.to_string()).unwrap()
}

fn map_set(doc: &mut Document, key: &str, value: &str) {
    doc.transact().map::<String, String>("m").insert(&key.to_string(), &value.to_string()).unwrap();
}

#[test]
fn map_lww_follows_the_wall_clock_not_the_arrival_order() {
    let mut early = doc_at(1, 1_000);
    let mut late = doc_at(2, 2_000);
    map_set(&mut late, "k", "late");
    map_set(&mut early, "k", "early");
    let from_early = early.export_since(&Default::default()).unwrap();
    let from_late = late.export_since(&Default::default()).unwrap();
    for order in [[&from_early, &from_late], [&from_late, &from_early]] {
        let mut observer = doc_at(3, 0);
        for bytes in order {
            observer.import(bytes).unwrap();
        }
        assert_eq!(map_get(&observer, "k").as_deref(), Some("late"), "arrival order must not matter");
    }
    sync_pair(&mut early, &mut late);
    assert_eq!(map_get(&early, "k").as_deref(), Some("late"));
    assert_eq!(map_get(&late, "k").as_deref(), Some("late"));
}

#[test]
fn causally_later_write_wins_even_with_an_earlier_wall_clock() {
    // A's clock is an hour ahead of B's. B sees A's write, then overwrites it: B's write is
    // causally later, so it must win, which only works because B's hybrid clock observed
    // A's timestamp on import.
    let mut a = doc_at(1, 3_600_000);
    let mut b = doc_at(2, 0);
    map_set(&mut a, "k", "from A");
    pull(&mut b, &a);
    map_set(&mut b, "k", "from B, after seeing A");
    assert!(b.last_timestamp() > a.last_timestamp(), "B's clock must have moved past A's timestamp");
    let mut observer = doc_at(3, 0);
    observer.import(&b.export_since(&Default::default()).unwrap()).unwrap();
    pull(&mut a, &b);
    for doc in [&a, &b, &observer] {
        assert_eq!(map_get(doc, "k").as_deref(), Some("from B, after seeing A"));
    }
}

#[test]
fn causally_later_write_wins_without_any_wall_clock() {
    // A replica that never got a wall clock still orders its writes after what it has seen.
    let mut a = doc_at(1, 5_000);
    let mut b = Document::new(PeerId::new(2));
    map_set(&mut a, "k", "A");
    pull(&mut b, &a);
    map_set(&mut b, "k", "B");
    pull(&mut a, &b);
    assert_eq!(map_get(&a, "k").as_deref(), Some("B"));
    assert_converged(&[&a, &b]);
}

#[test]
fn map_delete_beats_an_older_concurrent_set_and_loses_to_a_newer_one() {
    for (set_clock, delete_clock, survives) in [(1_000, 2_000, false), (3_000, 2_000, true)] {
        let mut a = doc_at(1, 0);
        let mut b = doc_at(2, 0);
        map_set(&mut a, "k", "v0");
        sync_pair(&mut a, &mut b);
        a.set_wall_clock(BASE_MS + set_clock);
        b.set_wall_clock(BASE_MS + delete_clock);
        map_set(&mut a, "k", "v1");
        assert!(b.transact().map::<String, String>("m").remove(&"k".to_string()).unwrap());
        sync_pair(&mut a, &mut b);
        assert_converged(&[&a, &b]);
        let expected = survives.then(|| "v1".to_string());
        assert_eq!(map_get(&a, "k"), expected, "set at {set_clock}, delete at {delete_clock}");
    }
}

#[test]
fn register_is_last_writer_wins() {
    let mut a = doc_at(1, 2_000);
    let mut b = doc_at(2, 1_000);
    let mut c = doc_at(3, 1_500);
    a.transact().register::<i64>("r").set(&1).unwrap();
    b.transact().register::<i64>("r").set(&2).unwrap();
    c.transact().register::<i64>("r").set(&3).unwrap();
    let mut docs = vec![b, c, a];
    sync_all(&mut docs);
    let refs: Vec<&Document> = docs.iter().collect();
    assert_converged(&refs);
    assert_eq!(docs[0].register::<i64>("r").get().unwrap(), Some(1), "the latest clock wins");

    // Without wall clocks the timestamps tie; the tie is broken the same way everywhere.
    let mut x = Document::new(PeerId::new(10));
    let mut y = Document::new(PeerId::new(20));
    x.transact().register::<String>("r").set(&"x".to_string()).unwrap();
    y.transact().register::<String>("r").set(&"y".to_string()).unwrap();
    assert_eq!(x.last_timestamp(), y.last_timestamp());
    sync_pair(&mut x, &mut y);
    assert_converged(&[&x, &y]);
    assert!(x.register::<String>("r").get().unwrap().is_some());
}

// ---- add-wins set, counter ----------------------------------------------------------------

#[test]
fn or_set_add_wins_over_a_concurrent_remove() {
    let mut a = doc_at(1, 0);
    let mut b = doc_at(2, 0);
    a.transact().or_set::<String>("s").insert(&"x".to_string()).unwrap();
    a.transact().or_set::<String>("s").insert(&"y".to_string()).unwrap();
    sync_pair(&mut a, &mut b);
    // A removes x and y; B concurrently re-adds x (even with an earlier clock: add wins is not
    // about time). y has no concurrent add, so its removal sticks.
    a.set_wall_clock(BASE_MS + 10_000);
    assert!(a.transact().or_set::<String>("s").remove(&"x".to_string()).unwrap());
    assert!(a.transact().or_set::<String>("s").remove(&"y".to_string()).unwrap());
    b.transact().or_set::<String>("s").insert(&"x".to_string()).unwrap();
    sync_pair(&mut a, &mut b);
    assert_converged(&[&a, &b]);
    assert_eq!(a.or_set::<String>("s").to_vec().unwrap(), ["x"]);

    // A remove that has seen every add does remove.
    a.transact().or_set::<String>("s").remove(&"x".to_string()).unwrap();
    sync_pair(&mut a, &mut b);
    assert!(b.or_set::<String>("s").is_empty());
}

#[test]
fn counter_increments_from_many_replicas_sum() {
    let mut docs: Vec<Document> = (1..=5).map(|p| doc_at(p, 0)).collect();
    let mut expected = 0;
    for (i, doc) in docs.iter_mut().enumerate() {
        for step in 0..3 {
            let delta = (i as i64 + 1) * 10 - step * 7;
            doc.transact().counter("c").add(delta).unwrap();
            expected += delta;
        }
    }
    // Deliver in a scrambled order: the sum does not depend on it.
    let exports: Vec<Vec<u8>> = docs.iter().map(|d| d.export_since(&Default::default()).unwrap()).collect();
    for (i, doc) in docs.iter_mut().enumerate() {
        for j in (0..exports.len()).rev().chain(0..exports.len()) {
            if j != i {
                doc.import(&exports[j]).unwrap();
            }
        }
    }
    let refs: Vec<&Document> = docs.iter().collect();
    assert_converged(&refs);
    assert_eq!(docs[0].counter("c").get(), expected);
}

// ---- stable cursors -------------------------------------------------------------------------

#[test]
fn cursor_stays_on_its_character_while_another_replica_edits_before_it() {
    let mut a = doc_at(1, 0);
    let mut b = doc_at(2, 0);
    set_text(&mut a, "hello world");
    sync_pair(&mut a, &mut b);
    let cursor = a.text("t").cursor_at(6).unwrap(); // before 'w'
    let end = a.text("t").cursor_at(11).unwrap(); // end of text
    {
        let mut txn = b.transact();
        let mut t = txn.text("t");
        t.insert(0, ">> ").unwrap();
        t.delete(3, 5).unwrap(); // "hello"
        t.insert(3, "héllo😀").unwrap();
    }
    pull(&mut a, &b);
    let now = text(&a);
    assert_eq!(now, ">> héllo😀 world");
    let pos = a.text("t").resolve_cursor(&cursor).unwrap();
    assert_eq!(now.chars().nth(pos), Some('w'), "cursor moved off its character in {now:?}");
    assert_eq!(a.text("t").resolve_cursor(&end), Some(a.text("t").len()), "end cursor");

    // Cursors are data: the other replica resolves them against its own copy.
    let sent: Cursor = serde_json::from_str(&serde_json::to_string(&cursor).unwrap()).unwrap();
    assert_eq!(b.text("t").resolve_cursor(&sent), Some(pos));

    // The character under the cursor is deleted remotely: the cursor stays where it was.
    b.transact().text("t").delete(pos, 2).unwrap(); // "wo"
    pull(&mut a, &b);
    let now = text(&a);
    assert_eq!(now, ">> héllo😀 rld");
    assert_eq!(a.text("t").resolve_cursor(&cursor), Some(pos));
}

#[test]
fn cursor_on_an_unknown_element_resolves_to_none() {
    let mut a = doc_at(1, 0);
    set_text(&mut a, "abc");
    let cursor = a.text("t").cursor_at(1).unwrap();
    let b = doc_at(2, 0);
    assert_eq!(b.text("t").resolve_cursor(&cursor), None, "B has never seen the element");
    assert_eq!(b.text("t").resolve_cursor(&Cursor::Start), Some(0));
    assert!(matches!(a.text("t").cursor_at(4), Err(Error::OutOfBounds { index: 4, len: 3 })));
}

// ---- set_text ------------------------------------------------------------------------------

#[test]
fn set_text_applies_a_minimal_diff_so_concurrent_edits_survive() {
    let mut a = doc_at(1, 0);
    let mut b = doc_at(2, 0);
    set_text(&mut a, "The quick brown fox");
    sync_pair(&mut a, &mut b);
    let before = a.version().clone();
    a.transact().text("t").set_text("The quick red fox").unwrap();
    // Only "brown" -> "red" changed: a handful of ids, not a rewrite of the whole text.
    let ops_used = a.version().get(PeerId::new(1)) - before.get(PeerId::new(1));
    assert!(ops_used <= 10, "set_text used {ops_used} ids for a 5-character change");
    {
        let mut txn = b.transact();
        txn.text("t").push_str(" jumps").unwrap();
        txn.text("t").insert(0, "¡").unwrap();
    }
    sync_pair(&mut a, &mut b);
    assert_converged(&[&a, &b]);
    assert_eq!(text(&a), "¡The quick red fox jumps");

    // Setting the same text is a no-op: no change, no new id.
    let version = a.version().clone();
    a.transact().text("t").set_text("¡The quick red fox jumps").unwrap();
    assert_eq!(a.version(), &version);
}

// ---- UTF-16 / UTF-8 offsets ----------------------------------------------------------------

#[test]
fn utf16_and_utf8_offsets_on_non_ascii_text() {
    let mut doc = doc_at(1, 0);
    // h é l l o ␠ 😀 ␠ w ö r l d: é/ö are 2 UTF-8 bytes; 😀 is 4 bytes and 2 UTF-16 units.
    let s = "héllo 😀 wörld";
    set_text(&mut doc, s);
    let t = doc.text("t");
    assert_eq!(t.len(), 13);
    assert_eq!(t.utf16_len(), 14);
    assert_eq!(t.utf8_len(), s.len());
    assert_eq!(t.utf8_len(), 18);

    // Char position -> UTF-16 / UTF-8, checked against the standard library at every position.
    for pos in 0..=13 {
        let prefix: String = s.chars().take(pos).collect();
        assert_eq!(t.utf16_from_char(pos).unwrap(), prefix.encode_utf16().count(), "utf16 at {pos}");
        assert_eq!(t.utf8_from_char(pos).unwrap(), prefix.len(), "utf8 at {pos}");
        assert_eq!(t.char_from_utf16(prefix.encode_utf16().count()).unwrap(), pos);
        assert_eq!(t.char_from_utf8(prefix.len()).unwrap(), pos);
    }
    // Hand-checked landmarks.
    assert_eq!(t.utf16_from_char(7).unwrap(), 8, "after the emoji");
    assert_eq!(t.utf8_from_char(2).unwrap(), 3, "after é");
    assert_eq!(t.char_from_utf16(8).unwrap(), 7);

    // Offsets inside a surrogate pair or inside a UTF-8 character are errors, not a rounding.
    assert!(
        matches!(t.char_from_utf16(7), Err(Error::NotCharBoundary { offset: 7 })),
        "inside the surrogate pair"
    );
    assert!(matches!(t.char_from_utf8(2), Err(Error::NotCharBoundary { offset: 2 })), "inside é");
    for inside in [8, 9, 10] {
        assert!(
            matches!(t.char_from_utf8(inside), Err(Error::NotCharBoundary { offset }) if offset == inside),
            "inside 😀 at byte {inside}"
        );
    }
    // Past the end.
    assert!(matches!(t.utf16_from_char(14), Err(Error::OutOfBounds { .. })));
    assert!(matches!(t.utf8_from_char(14), Err(Error::OutOfBounds { .. })));
    assert!(matches!(t.char_from_utf16(15), Err(Error::OutOfBounds { .. })));
    assert!(matches!(t.char_from_utf8(19), Err(Error::OutOfBounds { .. })));
    assert_eq!(t.slice(6, 9).unwrap(), "😀 w");

    // Editing at converted positions works on whole characters.
    let at = doc.text("t").char_from_utf16(8).unwrap();
    {
        let mut txn = doc.transact();
        txn.text("t").delete(at - 1, 1).unwrap(); // the emoji
        txn.text("t").insert(1, "ß").unwrap();
    }
    assert_eq!(text(&doc), "hßéllo  wörld");
}

// ---- events --------------------------------------------------------------------------------

fn drain(doc: &mut Document) -> Vec<DocEvent> {
    std::iter::from_fn(|| doc.poll_event()).collect()
}

#[test]
fn one_event_per_transaction_and_remote_changes_are_never_local() {
    let mut a = doc_at(1, 0);
    let mut b = doc_at(2, 0);
    a.set_events_enabled(true);
    b.set_events_enabled(true);

    // One transaction touching three containers: one local event.
    {
        let mut txn = a.transact();
        txn.text("t").insert(0, "hi").unwrap();
        txn.text("t").insert(2, "!").unwrap();
        txn.counter("c").add(1).unwrap();
        txn.map::<String, i64>("m").insert(&"k".to_string(), &1).unwrap();
    }
    let events = drain(&mut a);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].origin, Origin::Local);
    assert_eq!(events[0].containers.len(), 3, "each container once: {:?}", events[0].containers);
    assert!(events[0].containers.windows(2).all(|w| w[0] < w[1]), "sorted");

    // Two more transactions, imported by B as one batch: one remote event, naming every id
    // applied (A stores the second transaction as part of the first, so spans may be fewer).
    a.transact().text("t").insert(0, ">").unwrap();
    a.transact().counter("c").add(2).unwrap();
    assert_eq!(drain(&mut a).len(), 2);
    pull(&mut b, &a);
    let events = drain(&mut b);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].origin, Origin::Remote);
    let applied: u64 = events[0].changes.iter().map(|span| u64::from(span.len)).sum();
    assert_eq!(applied, a.version().total_ops(), "every id A made was applied: {:?}", events[0].changes);

    // A duplicate import applies nothing and says nothing.
    let everything = a.export_since(&Default::default()).unwrap();
    b.import(&everything).unwrap();
    assert!(drain(&mut b).is_empty());

    // B's own edit is local on B and remote on A.
    b.transact().text("t").push_str("?").unwrap();
    assert_eq!(drain(&mut b).iter().map(|e| e.origin).collect::<Vec<_>>(), [Origin::Local]);
    pull(&mut a, &b);
    assert_eq!(drain(&mut a).iter().map(|e| e.origin).collect::<Vec<_>>(), [Origin::Remote]);

    // A change that waits for a dependency emits nothing until it can be applied.
    let before = a.version().clone();
    a.transact().text("t").push_str("1").unwrap();
    let first = a.export_since(&before).unwrap();
    let mid = a.version().clone();
    a.transact().text("t").push_str("2").unwrap();
    let second = a.export_since(&mid).unwrap();
    b.import(&second).unwrap();
    assert!(drain(&mut b).is_empty(), "nothing was applied yet");
    b.import(&first).unwrap();
    let events = drain(&mut b);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].origin, Origin::Remote);
    assert_eq!(events[0].changes.len(), 2);
    assert_eq!(text(&b), ">hi!?12");

    // A transaction that changes nothing emits nothing.
    assert!(!b.transact().map::<String, i64>("m").remove(&"absent".to_string()).unwrap());
    assert!(drain(&mut b).is_empty());
}

#[test]
fn events_are_off_by_default() {
    let mut a = doc_at(1, 0);
    a.transact().text("t").insert(0, "x").unwrap();
    assert_eq!(a.poll_event(), None);
}

/// A document can move to another thread and be shared read-only across threads (runtimes
/// keep one per task), and a panic while it is borrowed cannot leave it half-updated.
#[test]
fn documents_are_send_sync_and_unwind_safe() {
    fn assert_traits<T: Send + Sync + std::panic::UnwindSafe + std::panic::RefUnwindSafe>() {}
    assert_traits::<Document>();
    assert_traits::<crdt_sync::Change>();
    assert_traits::<crdt_sync::Error>();
}

/// Regression: a container stored into a movable list by an in-place update (`set` of a
/// container) showed up as `null` in the JSON view, because the view named it by the element
/// instead of by the write that stored it.
#[test]
fn json_shows_containers_stored_by_movable_list_updates() {
    let mut doc = Document::new(PeerId::new(1));
    let mut txn = doc.transact();
    txn.movable_list::<String>("ml").push(&"placeholder".to_string()).unwrap();
    let nested = txn.movable_list::<String>("ml").set_container(0, ContainerKind::Text).unwrap();
    txn.text_by_id(&nested).unwrap().insert(0, "inside").unwrap();
    drop(txn);
    assert_eq!(doc.to_json(), serde_json::json!({ "ml": ["inside"] }));
    assert_eq!(doc.movable_list::<String>("ml").get_container(0), Some(nested));
}
