//! Unit tests of the Fugue sequence.

use std::collections::HashMap;

use super::canonical::{Body, Run, push_range};
use super::*;

use super::super::test_rng::Rng;

trait TextRng {
    fn text(&mut self, max: usize) -> String;
}

impl TextRng for Rng {
    /// Between 1 and `max` characters, some of them outside ASCII.
    fn text(&mut self, max: usize) -> String {
        let len = 1 + self.below(max);
        (0..len).map(|_| ['a', 'b', 'é', '字', '🦀', 'z'][self.below(6)]).collect()
    }
}

fn id(peer: u64, counter: Counter) -> OpId {
    OpId::new(PeerId::new(peer), counter)
}

/// Every id in document order, tombstones included.
fn full_order<C: SeqContent>(seq: &Sequence<C>) -> Vec<OpId> {
    let pieces = seq.pieces.iter();
    pieces.flat_map(|p| (p.counter..p.end()).map(move |c| OpId::new(p.peer, c))).collect()
}

/// Check the internal bookkeeping against the pieces and the tree.
fn check<C: SeqContent>(seq: &Sequence<C>) {
    seq.check();
    let mut stored = Vec::new();
    for piece in seq.pieces.iter() {
        push_range(&mut stored, piece.peer, piece.counter, piece.end());
    }
    assert_eq!(seq.tree_order(), stored, "pieces are not in tree order");
    let mut fresh = seq.clone();
    fresh.branches.values_mut().for_each(BTreeSet::clear);
    let parents: Vec<OpId> =
        seq.right_kids.iter().flat_map(|(p, kids)| kids.keys().map(move |&c| OpId::new(p, c))).collect();
    parents.into_iter().for_each(|p| fresh.refresh_branch(p));
    let nonempty = |b: &PeerMap<BTreeSet<Counter>>| {
        b.iter().filter(|(_, s)| !s.is_empty()).map(|(p, s)| (p, s.clone())).collect::<BTreeMap<_, _>>()
    };
    assert_eq!(nonempty(&fresh.branches), nonempty(&seq.branches));
}

/// The tree bookkeeping as plain values: chains with their anchors, children per parent, and
/// branches, all keyed by id.
#[allow(clippy::type_complexity)]
fn tree_maps<C>(
    seq: &Sequence<C>,
) -> (Vec<(OpId, Counter, Anchor)>, Vec<(OpId, Vec<OpId>)>, Vec<(OpId, Vec<OpId>)>, Vec<OpId>, Vec<OpId>) {
    let chains = seq
        .segments
        .iter()
        .flat_map(|(p, c)| c.0.iter().map(move |s| (OpId::new(p, s.start), s.end, s.anchor())));
    let kids = |map: &ByCounter<Kids>| -> Vec<(OpId, Vec<OpId>)> {
        map.iter().flat_map(|(p, m)| m.iter().map(move |(&c, k)| (OpId::new(p, c), k.to_vec()))).collect()
    };
    let branches = seq.branches.iter().flat_map(|(p, b)| b.iter().map(move |&c| OpId::new(p, c)));
    (
        chains.collect(),
        kids(&seq.left_kids),
        kids(&seq.right_kids),
        seq.root_kids.to_vec(),
        branches.collect(),
    )
}

fn round_trip<C: SeqContent>(seq: &Sequence<C>) -> Vec<u8> {
    let bytes = postcard::to_allocvec(seq).unwrap();
    let back: Sequence<C> = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(&back, seq);
    assert_eq!(back.to_content(), seq.to_content());
    // Decoding builds the bookkeeping in one go; it must be what editing built step by step.
    assert_eq!(tree_maps(&back), tree_maps(seq));
    check(&back);
    assert_eq!(postcard::to_allocvec(&back).unwrap(), bytes);
    bytes
}

/// The document order straight from the Fugue definition, by recursion over all elements.
fn naive_order(inserts: &[(OpId, Anchor, usize)]) -> Vec<OpId> {
    let mut kids: HashMap<(Option<OpId>, Side), Vec<OpId>> = HashMap::new();
    for &(start, anchor, len) in inserts {
        for i in 0..len as Counter {
            let element = OpId::new(start.peer, start.counter + i);
            let parent =
                if i == 0 { (anchor.parent, anchor.side) } else { (Some(id_before(element)), Side::Right) };
            kids.entry(parent).or_default().push(element);
        }
    }
    kids.values_mut().for_each(|k| k.sort());
    fn visit(node: OpId, kids: &HashMap<(Option<OpId>, Side), Vec<OpId>>, out: &mut Vec<OpId>) {
        for &k in kids.get(&(Some(node), Side::Left)).into_iter().flatten() {
            visit(k, kids, out);
        }
        out.push(node);
        for &k in kids.get(&(Some(node), Side::Right)).into_iter().flatten() {
            visit(k, kids, out);
        }
    }
    let mut out = Vec::new();
    for &k in kids.get(&(None, Side::Right)).into_iter().flatten() {
        visit(k, &kids, &mut out);
    }
    out
}

fn id_before(id: OpId) -> OpId {
    OpId::new(id.peer, id.counter - 1)
}

#[derive(Clone, Debug)]
enum Edit {
    Insert(OpId, Anchor, String),
    Delete(Vec<IdSpan>),
}

fn apply(seq: &mut Sequence<String>, edit: &Edit) {
    match edit {
        Edit::Insert(id, anchor, text) => {
            assert!(seq.can_insert(*id, anchor, text.chars().count()), "{edit:?}");
            seq.insert(*id, *anchor, text.clone());
        }
        Edit::Delete(spans) => {
            assert!(spans.iter().all(|s| seq.contains_span(s)));
            seq.delete(spans);
        }
    }
}

/// One replica of a simulated network with causal delivery.
struct Replica {
    seq: Sequence<String>,
    peer: u64,
    counter: Counter,
    /// How many ops of each replica this one has applied.
    applied: Vec<usize>,
}

/// An op as broadcast: who made it, what its maker had applied, what it does.
struct Logged {
    deps: Vec<usize>,
    edit: Edit,
}

impl Replica {
    fn new(peer: u64, replicas: usize) -> Self {
        Replica { seq: Sequence::new(), peer, counter: 0, applied: vec![0; replicas] }
    }

    /// A random local edit, applied and appended to this replica's log.
    fn edit(&mut self, me: usize, rng: &mut Rng, log: &mut [Vec<Logged>]) {
        let len = self.seq.len();
        if rng.chance(10) {
            // Ids spent on other containers break chains without breaking anything else.
            self.counter += 1 + rng.below(3) as Counter;
        }
        let edits = if len > 0 && rng.chance(35) {
            let pos = rng.below(len);
            let n = 1 + rng.below((len - pos).min(4));
            vec![Edit::Delete(self.seq.visible_spans(pos, n).into_vec())]
        } else {
            let pos = rng.below(len + 1);
            let text = rng.text(4);
            if rng.chance(50) {
                let anchor = self.seq.local_anchor(pos);
                let id = id(self.peer, self.counter);
                self.counter += text.chars().count() as Counter;
                vec![Edit::Insert(id, anchor, text)]
            } else {
                // One op per keystroke: each op sees the previous one applied.
                let mut edits = Vec::new();
                for (i, ch) in text.chars().enumerate() {
                    let anchor = self.seq.local_anchor(pos + i);
                    let edit = Edit::Insert(id(self.peer, self.counter), anchor, ch.to_string());
                    self.counter += 1;
                    let at = self.seq.insert(id(self.peer, self.counter - 1), anchor, ch.to_string());
                    assert_eq!(at, pos + i);
                    edits.push(edit);
                }
                for edit in edits {
                    log[me].push(Logged { deps: self.applied.clone(), edit });
                    self.applied[me] += 1;
                }
                return;
            }
        };
        for edit in edits {
            let before = self.seq.to_content();
            apply(&mut self.seq, &edit);
            if let Edit::Insert(_, _, text) = &edit {
                assert_eq!(self.seq.len(), before.chars().count() + text.chars().count());
            }
            log[me].push(Logged { deps: self.applied.clone(), edit });
            self.applied[me] += 1;
        }
    }

    /// Apply one deliverable op of another replica, if any; returns whether it did.
    fn receive(&mut self, rng: &mut Rng, log: &[Vec<Logged>]) -> bool {
        let ready: Vec<usize> = (0..log.len())
            .filter(|&r| {
                log[r]
                    .get(self.applied[r])
                    .is_some_and(|op| op.deps.iter().zip(&self.applied).all(|(d, a)| d <= a))
            })
            .collect();
        if ready.is_empty() {
            return false;
        }
        let r = ready[rng.below(ready.len())];
        apply(&mut self.seq, &log[r][self.applied[r]].edit);
        self.applied[r] += 1;
        true
    }
}

fn simulate(seed: u64, replicas: usize, steps: usize) -> (Vec<Replica>, Vec<Vec<Logged>>) {
    let mut rng = Rng(seed);
    let mut log: Vec<Vec<Logged>> = (0..replicas).map(|_| Vec::new()).collect();
    let mut reps: Vec<Replica> = (0..replicas).map(|r| Replica::new(r as u64 * 7 + 3, replicas)).collect();
    for _ in 0..steps {
        let r = rng.below(replicas);
        if rng.chance(55) {
            reps[r].edit(r, &mut rng, &mut log);
        } else {
            reps[r].receive(&mut rng, &log);
        }
    }
    for rep in &mut reps {
        while rep.receive(&mut rng, &log) {}
    }
    (reps, log)
}

#[test]
fn local_edits_match_a_vec_model() {
    for seed in 1..60u64 {
        let mut rng = Rng(seed * 0x9E37_79B9);
        let mut seq: Sequence<String> = Sequence::new();
        let mut model: Vec<char> = Vec::new();
        let mut counter = 0;
        for step in 0..300 {
            if !model.is_empty() && rng.chance(40) {
                let pos = rng.below(model.len());
                let n = 1 + rng.below((model.len() - pos).min(6));
                let spans = seq.visible_spans(pos, n);
                assert_eq!(spans.iter().map(|s| s.len as usize).sum::<usize>(), n);
                assert_eq!(seq.delete(&spans), n);
                assert_eq!(seq.delete(&spans), 0);
                model.drain(pos..pos + n);
            } else {
                let pos = rng.below(model.len() + 1);
                let text = rng.text(5);
                let anchor = seq.local_anchor(pos);
                let n = text.chars().count();
                assert_eq!(seq.insert(id(1, counter), anchor, text.clone()), pos);
                counter += n as Counter + rng.below(2) as Counter;
                model.splice(pos..pos, text.chars());
            }
            assert_eq!(seq.len(), model.len());
            if step % 25 == 0 {
                check(&seq);
                let text: String = model.iter().collect();
                assert_eq!(seq.to_content(), text);
                if !model.is_empty() {
                    let pos = rng.below(model.len());
                    let n = rng.below(model.len() - pos + 1);
                    assert_eq!(seq.slice(pos, n), model[pos..pos + n].iter().collect::<String>());
                    let at = seq.id_at(pos).unwrap();
                    assert_eq!(seq.position_of(at), Some(pos));
                    assert_eq!(seq.is_deleted(at), Some(false));
                    let (piece_id, content, offset) = seq.visible_piece_at(pos).unwrap();
                    assert_eq!(piece_id, at);
                    assert_eq!(content.chars().nth(offset), Some(model[pos]));
                }
            }
        }
        let text: String = model.iter().collect();
        assert_eq!(seq.to_content(), text);
        check(&seq);
        round_trip(&seq);
    }
}

/// A keystroke that types on skips every lookup while nothing else changed since the last
/// one; a remote edit in between must make it look again.
#[test]
fn typing_on_after_a_remote_edit_looks_again() {
    let type_ab = || {
        let mut seq: Sequence<String> = Sequence::new();
        seq.insert_local(0, id(5, 0), "a", 1);
        seq.insert_local(1, id(5, 1), "b", 1);
        seq
    };
    // A remote run before the typing point moves it on by one.
    let mut seq = type_ab();
    seq.insert(id(2, 0), Anchor { parent: None, side: Side::Right }, "Y".to_string());
    assert_eq!(seq.to_content(), "Yab");
    seq.insert_local(2, id(5, 2), "c", 1);
    assert_eq!(seq.to_content(), "Yacb");
    check(&seq);
    // A remote run hung right after the last typed character, with a smaller id: the next
    // keystroke goes before it, not at the end of the typed piece.
    let mut seq = type_ab();
    seq.insert(id(2, 0), Anchor::after(id(5, 1)), "X".to_string());
    assert_eq!(seq.to_content(), "abX");
    seq.insert_local(2, id(5, 2), "c", 1);
    assert_eq!(seq.to_content(), "abcX");
    check(&seq);
    // A remote delete of the last typed character.
    let mut seq = type_ab();
    seq.delete(&[IdSpan::new(id(5, 1), 1)]);
    seq.insert_local(1, id(5, 2), "c", 1);
    assert_eq!(seq.to_content(), "ac");
    check(&seq);
    // A remote delete after the typing point leaves positions alone but overfills the leaf
    // (8 pieces in tests), whose split moves the typed piece to a new leaf.
    let mut seq: Sequence<String> = Sequence::new();
    let mut parent = None;
    for peer in 10..15 {
        seq.insert(id(peer, 0), Anchor { parent, side: Side::Right }, "p".to_string());
        parent = Some(id(peer, 0));
    }
    seq.insert(id(20, 0), Anchor { parent, side: Side::Right }, "qqqq".to_string());
    seq.insert_local(5, id(5, 0), "a", 1);
    seq.insert_local(6, id(5, 1), "b", 1);
    assert_eq!(seq.pieces.leaf_count(), 1);
    seq.delete(&[IdSpan::new(id(20, 1), 1)]);
    assert_eq!(seq.pieces.leaf_count(), 2, "the delete split the leaf");
    seq.insert_local(7, id(5, 2), "c", 1);
    assert_eq!(seq.to_content(), "pppppabcqqq");
    check(&seq);
}

#[test]
fn a_long_delete_across_pieces_and_leaves_deletes_exactly_its_range() {
    // Two peers take turns typing two characters at the end, so every piece is its own chain,
    // over several leaves (8 pieces in tests); a few single deletes leave tombstones between.
    let mut seq: Sequence<String> = Sequence::new();
    let mut model: Vec<(OpId, char)> = Vec::new();
    for i in 0..30u32 {
        let (peer, text) = (1 + u64::from(i % 2), if i % 2 == 0 { "ab" } else { "xy" });
        let first = id(peer, i / 2 * 2);
        seq.insert_local(model.len(), first, text, 2);
        model.extend(
            text.chars().enumerate().map(|(k, c)| (OpId::new(first.peer, first.counter + k as Counter), c)),
        );
    }
    for pos in [7, 20, 33] {
        assert_eq!(seq.delete_local(pos, 1).as_slice(), &[IdSpan::new(model.remove(pos).0, 1)]);
    }
    assert!(seq.pieces.leaf_count() > 3);
    // From inside a piece, over whole pieces and tombstones, to inside a piece.
    let (pos, len) = (3, 45);
    let spans = seq.delete_local(pos, len);
    let gone: Vec<(OpId, char)> = model.drain(pos..pos + len).collect();
    let mut want = IdSpans::new();
    gone.iter().for_each(|&(id, _)| push_span(&mut want, id, 1));
    assert_eq!(spans, want, "the ids deleted, in document order");
    assert_eq!(seq.to_content(), model.iter().map(|&(_, c)| c).collect::<String>());
    check(&seq);

    // One chain cut by tombstones, then deleted whole: the tombstones join into one piece.
    let mut seq: Sequence<String> = Sequence::new();
    seq.insert_local(0, id(1, 0), "abcdefghij", 10);
    seq.delete_local(2, 1);
    seq.delete_local(5, 1);
    assert_eq!(seq.to_content(), "abdefhij");
    assert_eq!(seq.delete_local(0, 8).len(), 3, "three runs of ids around the tombstones");
    assert_eq!(seq.to_content(), "");
    assert_eq!(seq.pieces.iter().count(), 1);
    check(&seq);
}

#[test]
fn list_content_and_queries() {
    let mut seq: Sequence<Vec<u32>> = Sequence::new();
    assert_eq!(seq.local_anchor(0), Anchor { parent: None, side: Side::Right });
    seq.insert(id(1, 0), seq.local_anchor(0), vec![1, 2, 3, 4]);
    seq.insert(id(1, 10), seq.local_anchor(2), vec![9]);
    assert_eq!(seq.to_content(), vec![1, 2, 9, 3, 4]);
    assert_eq!(seq.delete(&[IdSpan::new(id(1, 1), 2)]), 2);
    assert_eq!(seq.to_content(), vec![1, 9, 4]);
    assert_eq!(seq.is_deleted(id(1, 2)), Some(true));
    assert_eq!(seq.position_of(id(1, 2)), Some(2));
    assert_eq!(seq.is_deleted(id(1, 7)), None);
    assert!(seq.contains_span(&IdSpan::new(id(1, 0), 4)));
    assert!(!seq.contains_span(&IdSpan::new(id(1, 0), 5)));
    assert!(seq.contains_span(&IdSpan::new(id(1, 10), 1)));
    assert_eq!((seq.len(), seq.total_len()), (3, 5));
    assert_eq!(
        seq.visible_spans(0, 3).into_vec(),
        vec![IdSpan::new(id(1, 0), 1), IdSpan::new(id(1, 10), 1), IdSpan::new(id(1, 3), 1)]
    );
    let mut pieces = Vec::new();
    seq.for_each_visible(|start, items| pieces.push((start, items.clone())));
    assert_eq!(pieces, vec![(id(1, 0), vec![1]), (id(1, 10), vec![9]), (id(1, 3), vec![4])]);
    // Invalid inserts change nothing.
    assert!(!seq.can_insert(id(1, 3), &Anchor::after(id(1, 0)), 1));
    assert!(!seq.can_insert(id(2, 0), &Anchor::after(id(5, 0)), 1));
    assert!(!seq.can_insert(id(2, 0), &Anchor { parent: None, side: Side::Left }, 1));
    assert!(!seq.can_insert(id(2, Counter::MAX), &Anchor::after(id(1, 0)), 1));
    assert!(!seq.can_insert(id(2, 0), &Anchor::after(id(1, 0)), 0));
    let before = seq.clone();
    assert_eq!(seq.insert(id(1, 2), Anchor::after(id(1, 0)), vec![7]), 3);
    assert_eq!(seq.insert(id(2, 0), Anchor::after(id(5, 5)), vec![7]), 3);
    assert_eq!(seq, before);
    check(&seq);
    round_trip(&seq);
}

#[test]
fn concurrent_replicas_converge_to_identical_bytes() {
    for seed in 1..42u64 {
        let replicas = 2 + (seed % 2) as usize;
        // The last two runs are long enough to split leaves.
        let steps = if seed > 39 { 4_000 } else { 400 };
        let (reps, log) = simulate(seed * 0x2545_F491, replicas, steps);
        let bytes = round_trip(&reps[0].seq);
        assert!(steps < 4_000 || reps.iter().all(|r| r.seq.pieces.leaf_count() > 2), "seed {seed}");
        for rep in &reps {
            check(&rep.seq);
            assert_eq!(rep.seq.to_content(), reps[0].seq.to_content(), "seed {seed}");
            assert_eq!(postcard::to_allocvec(&rep.seq).unwrap(), bytes, "seed {seed}");
        }
        // The order is the Fugue order of the whole tree, whatever the delivery order was.
        let inserts: Vec<(OpId, Anchor, usize)> = log
            .iter()
            .flatten()
            .filter_map(|op| match &op.edit {
                Edit::Insert(id, anchor, text) => Some((*id, *anchor, text.chars().count())),
                Edit::Delete(_) => None,
            })
            .collect();
        assert_eq!(full_order(&reps[0].seq), naive_order(&inserts), "seed {seed}");
    }
}

#[test]
fn batching_does_not_change_the_state() {
    // Typed one op per character on one replica, received as one run on another.
    let mut typed: Sequence<String> = Sequence::new();
    for (i, ch) in "hello".chars().enumerate() {
        typed.insert(id(4, i as Counter), typed.local_anchor(i), ch.to_string());
    }
    let mut batched: Sequence<String> = Sequence::new();
    batched.insert(id(4, 0), Anchor { parent: None, side: Side::Right }, "hello".into());
    assert_eq!(postcard::to_allocvec(&typed).unwrap(), postcard::to_allocvec(&batched).unwrap());
    // Then a concurrent insert in the middle, and a deletion spanning both.
    for seq in [&mut typed, &mut batched] {
        seq.insert(id(2, 0), Anchor::after(id(4, 1)), "XY".into());
        seq.delete(&[IdSpan::new(id(4, 1), 3), IdSpan::new(id(2, 1), 1)]);
        check(seq);
    }
    assert_eq!(typed.to_content(), "hXo");
    assert_eq!(postcard::to_allocvec(&typed).unwrap(), postcard::to_allocvec(&batched).unwrap());
    assert_eq!(typed, batched);
}

/// Type `text` at visible `pos` on a copy of `base`, one op per char or as one run.
fn type_at(base: &Sequence<String>, peer: u64, pos: usize, text: &str, per_char: bool) -> Vec<Edit> {
    let mut seq = base.clone();
    let mut edits = Vec::new();
    if per_char {
        for (i, ch) in text.chars().enumerate() {
            let edit = Edit::Insert(id(peer, 100 + i as Counter), seq.local_anchor(pos + i), ch.to_string());
            apply(&mut seq, &edit);
            edits.push(edit);
        }
    } else {
        edits.push(Edit::Insert(id(peer, 100), seq.local_anchor(pos), text.to_owned()));
    }
    edits
}

#[test]
fn concurrent_runs_at_one_place_never_interleave() {
    let mut with_tombstone: Sequence<String> = Sequence::new();
    with_tombstone.insert(id(9, 0), Anchor { parent: None, side: Side::Right }, "12345".into());
    with_tombstone.delete(&[IdSpan::new(id(9, 2), 1)]);
    let mut middle: Sequence<String> = Sequence::new();
    middle.insert(id(9, 0), Anchor { parent: None, side: Side::Right }, "1245".into());
    let cases: [(Sequence<String>, usize); 5] =
        [(Sequence::new(), 0), (middle.clone(), 0), (middle.clone(), 2), (middle, 4), (with_tombstone, 2)];
    for (base, pos) in cases {
        for (per_char_a, per_char_b) in [(false, false), (true, true), (true, false), (false, true)] {
            let a = type_at(&base, 1, pos, "abc", per_char_a);
            let b = type_at(&base, 2, pos, "xyz", per_char_b);
            let mut results = Vec::new();
            for first_a in [true, false] {
                let mut seq = base.clone();
                let (first, second) = if first_a { (&a, &b) } else { (&b, &a) };
                first.iter().chain(second).for_each(|e| apply(&mut seq, e));
                check(&seq);
                results.push(seq);
            }
            assert_eq!(results[0], results[1]);
            let text = results[0].to_content();
            let around: String = base.to_content().chars().take(pos).collect();
            let inserted: String = text.chars().skip(pos).take(6).collect();
            assert!(text.starts_with(&around));
            assert!(inserted == "abcxyz" || inserted == "xyzabc", "{text}");
        }
    }
}

#[test]
fn deep_chains_and_backward_typing_stay_iterative() {
    // Typing backwards builds a deep chain of left children; forwards a long right chain
    // that other peers branch off everywhere.
    let mut seq: Sequence<String> = Sequence::new();
    for i in 0..20_000 {
        seq.insert(id(1, i), seq.local_anchor(0), "b".into());
    }
    let mut forward: Sequence<String> = Sequence::new();
    for i in 0..20_000 {
        forward.insert(id(3, i), forward.local_anchor(i as usize), "f".into());
    }
    for i in 0..2_000 {
        let parent = id(3, i * 10);
        seq.insert(id(1, 100_000 + i), seq.local_anchor(seq.len() / 2), "x".into());
        forward.insert(id(5, i), Anchor::after(parent), "r".into());
        forward.insert(id(2, i), Anchor::after(parent), "l".into());
    }
    assert_eq!(forward.len(), 24_000);
    // A right child larger than the chain child goes after the chain's whole subtree.
    let text = forward.to_content();
    assert!(text.starts_with(&format!("fl{}l", "f".repeat(10))), "{}", &text[..20]);
    assert!(text.ends_with(&format!("ff{}", "r".repeat(2_000))));
    check(&seq);
    check(&forward);
    round_trip(&seq);
    round_trip(&forward);
}

#[test]
fn corrupted_bytes_never_panic() {
    let (reps, _) = simulate(77, 3, 300);
    let bytes = postcard::to_allocvec(&reps[0].seq).unwrap();
    let mut rng = Rng(99);
    for cut in 0..bytes.len() {
        assert!(postcard::from_bytes::<Sequence<String>>(&bytes[..cut]).is_err() || cut == bytes.len());
    }
    for _ in 0..1_500 {
        let mut bad = bytes.clone();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(bad.len());
            bad[at] ^= 1 << rng.below(8);
        }
        if let Ok(seq) = postcard::from_bytes::<Sequence<String>>(&bad) {
            // Whatever decodes is a consistent sequence.
            check(&seq);
            let again = postcard::to_allocvec(&seq).unwrap();
            assert_eq!(postcard::from_bytes::<Sequence<String>>(&again).unwrap(), seq);
        }
    }
}

fn decode(runs: &[Run<String>]) -> Result<Sequence<String>, postcard::Error> {
    postcard::from_bytes(&postcard::to_allocvec(runs).unwrap())
}

#[test]
fn inconsistent_encodings_are_errors() {
    let root = Some(Anchor { parent: None, side: Side::Right });
    let run = |start, anchor, body| Run { start, anchor, body };
    let text = |s: &str| Body::Visible(s.to_owned());
    let left_of = |parent| Anchor { parent: Some(parent), side: Side::Left };
    let ok = [run(id(1, 0), root, text("ab")), run(id(2, 0), Some(Anchor::after(id(1, 1))), text("c"))];
    assert_eq!(decode(&ok).unwrap().to_content(), "abc");
    let bad: Vec<Vec<Run<String>>> = vec![
        // Duplicate ids.
        vec![run(id(1, 0), root, text("ab")), run(id(1, 1), Some(Anchor::after(id(1, 0))), text("c"))],
        // Missing parent: of a peer with no element, or past the end of a peer's ids.
        vec![run(id(1, 0), Some(Anchor::after(id(3, 0))), text("a"))],
        vec![run(id(1, 0), root, text("ab")), run(id(1, 5), Some(Anchor::after(id(1, 3))), text("c"))],
        // Empty runs.
        vec![run(id(1, 0), root, text(""))],
        vec![run(id(1, 0), root, Body::Deleted(0))],
        // Counter overflow.
        vec![run(id(1, Counter::MAX), root, text("a"))],
        vec![run(id(1, 5), root, Body::Deleted(Counter::MAX))],
        // Not in document order.
        vec![run(id(2, 0), Some(Anchor::after(id(1, 1))), text("c")), run(id(1, 0), root, text("ab"))],
        vec![run(id(1, 0), root, text("a")), run(id(2, 0), root, text("b"))].into_iter().rev().collect(),
        // Chain continuation without its predecessor.
        vec![run(id(1, 3), None, text("a"))],
        // Left child of the root.
        vec![run(id(1, 0), Some(Anchor { parent: None, side: Side::Left }), text("a"))],
        // A cycle: each is the parent of the other.
        vec![
            run(id(1, 0), Some(Anchor::after(id(2, 0))), text("a")),
            run(id(2, 0), Some(Anchor::after(id(1, 0))), text("b")),
        ],
        // A chain hung on one of its own elements, reachable from nowhere.
        vec![run(id(1, 0), root, text("a")), run(id(2, 0), Some(Anchor::after(id(2, 1))), text("bc"))],
        // A left child after its parent.
        vec![run(id(1, 0), root, text("ab")), run(id(2, 0), Some(left_of(id(1, 0))), text("x"))],
        // Right children out of id order.
        vec![
            run(id(1, 0), root, text("a")),
            run(id(3, 0), Some(Anchor::after(id(1, 0))), text("c")),
            run(id(2, 0), Some(Anchor::after(id(1, 0))), text("b")),
        ],
    ];
    for runs in bad {
        assert!(decode(&runs).is_err(), "{runs:?}");
    }
    let good: Vec<(Vec<Run<String>>, &str)> = vec![
        (vec![run(id(2, 0), Some(left_of(id(1, 0))), text("x")), run(id(1, 0), root, text("ab"))], "xab"),
        (
            vec![
                run(id(1, 0), root, text("a")),
                run(id(2, 0), Some(Anchor::after(id(1, 0))), text("b")),
                run(id(3, 0), Some(Anchor::after(id(1, 0))), text("c")),
            ],
            "abc",
        ),
    ];
    for (runs, content) in good {
        assert_eq!(decode(&runs).unwrap().to_content(), content, "{runs:?}");
    }
    // Non-maximal runs and explicit chain anchors are accepted and normalized.
    let split = [
        run(id(1, 0), root, text("a")),
        run(id(1, 1), Some(Anchor::after(id(1, 0))), text("b")),
        run(id(2, 0), Some(Anchor::after(id(1, 1))), text("c")),
    ];
    assert_eq!(decode(&split).unwrap(), decode(&ok).unwrap());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::test_cases::proptest_cases(64)))]
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
        if let Ok(seq) = postcard::from_bytes::<Sequence<String>>(&bytes) {
            check(&seq);
        }
        if let Ok(seq) = postcard::from_bytes::<Sequence<Vec<u8>>>(&bytes) {
            check(&seq);
        }
    }
}
