//! Differential tests: the B-tree [`Sequence`] against the chunked [`OracleSequence`] it
//! replaced, driven by the same random edits and compared on every observable after each one.

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

use super::oracle::OracleSequence;
use super::*;

/// One edit, as raw numbers that [`Harness::step`] turns into a valid operation; plain numbers
/// shrink well.
#[derive(Clone, Debug)]
struct Step {
    kind: u8,
    a: u32,
    b: u32,
    n: u8,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step =
        (0u8..8, any::<u32>(), any::<u32>(), 1u8..6).prop_map(|(kind, a, b, n)| Step { kind, a, b, n });
    proptest::collection::vec(step, 1..160)
}

const PEERS: [u64; 4] = [1, 2, 7, 40];

/// Both implementations, plus what the generator needs to know: counters and every id used.
struct Harness<C> {
    seq: Sequence<C>,
    oracle: OracleSequence<C>,
    counters: [Counter; PEERS.len()],
    ids: Vec<OpId>,
}

/// How to make content of `n` elements for one content type.
trait Make: SeqContent {
    fn make(n: usize, salt: u32) -> Self;
}

impl Make for String {
    fn make(n: usize, salt: u32) -> Self {
        (0..n).map(|i| ['a', 'é', '字', '🦀', 'z'][(salt as usize + i) % 5]).collect()
    }
}

impl Make for Vec<u32> {
    fn make(n: usize, salt: u32) -> Self {
        (0..n as u32).map(|i| salt.wrapping_add(i)).collect()
    }
}

impl<C: Make> Harness<C> {
    fn new() -> Self {
        Harness { seq: Sequence::new(), oracle: OracleSequence::new(), counters: [0; 4], ids: Vec::new() }
    }

    /// The next id of peer `p` for a run of `n`, sometimes skipping ids spent elsewhere.
    fn take_id(&mut self, p: usize, n: usize, skip: bool) -> OpId {
        if skip {
            self.counters[p] += 3;
        }
        let id = OpId::new(PeerId::new(PEERS[p]), self.counters[p]);
        self.counters[p] += n as Counter;
        self.ids.extend((0..n as Counter).map(|i| OpId::new(id.peer, id.counter + i)));
        id
    }

    fn insert(&mut self, id: OpId, anchor: Anchor, content: C) {
        assert!(self.seq.can_insert(id, &anchor, content.len()));
        assert!(self.oracle.can_insert(id, &anchor, content.len()));
        let at = self.seq.insert(id, anchor, content.clone());
        assert_eq!(at, self.oracle.insert(id, anchor, content));
    }

    /// A local insert at `pos`, which must hang where the oracle's local anchor says.
    fn insert_local(&mut self, pos: usize, id: OpId, content: C) {
        let anchor = self.oracle.local_anchor(pos);
        assert_eq!(
            self.seq.insert_local(pos, id, content.as_slice(), content.len()),
            anchor,
            "insert_local({pos})"
        );
        self.oracle.insert(id, anchor, content);
    }

    fn step(&mut self, s: &Step) {
        let len = self.seq.len();
        let (a, b, n) = (s.a as usize, s.b as usize, s.n as usize);
        let p = b % PEERS.len();
        match s.kind {
            // A local run at a visible position, by the anchor and then the insert.
            0 => {
                let pos = a % (len + 1);
                let anchor = self.seq.local_anchor(pos);
                let id = self.take_id(p, n, b % 7 == 0);
                self.insert(id, anchor, C::make(n, s.b));
            }
            // The same as one local edit.
            1 => {
                let pos = a % (len + 1);
                let id = self.take_id(p, n, b % 7 == 0);
                self.insert_local(pos, id, C::make(n, s.b));
            }
            // Local typing, one op per element, as editors send it.
            2 => {
                let pos = a % (len + 1);
                for i in 0..n {
                    let id = self.take_id(p, 1, false);
                    self.insert_local(pos + i, id, C::make(1, s.b.wrapping_add(i as u32)));
                }
            }
            // A remote run anchored anywhere: any present element, either side, or the root;
            // sometimes continuing the peer's last chain wherever that is.
            3 | 4 => {
                let last = self.counters[p].checked_sub(1).map(|c| OpId::new(PeerId::new(PEERS[p]), c));
                let anchor = match last {
                    Some(last) if b % 5 == 0 && self.seq.contains(last) => Anchor::after(last),
                    _ if self.ids.is_empty() || a % 11 == 0 => Anchor { parent: None, side: Side::Right },
                    _ => {
                        let parent = self.ids[a % self.ids.len()];
                        Anchor {
                            parent: Some(parent),
                            side: if b % 2 == 0 { Side::Left } else { Side::Right },
                        }
                    }
                };
                let id = self.take_id(p, n, b % 3 == 0);
                self.insert(id, anchor, C::make(n, s.a));
            }
            // A local delete of visible elements, by ids or as one local edit.
            5 if len > 0 => {
                let pos = a % len;
                let expected = self.oracle.visible_spans(pos, n);
                if b % 2 == 0 {
                    let spans = self.seq.visible_spans(pos, n);
                    assert_eq!(spans[..], expected[..]);
                    assert_eq!(self.seq.delete(&spans), self.oracle.delete(&spans));
                } else {
                    assert_eq!(self.seq.delete_local(pos, n)[..], expected[..]);
                    self.oracle.delete(&expected);
                }
            }
            // A delete of an id span, possibly crossing absent and deleted ids.
            6 | 7 if !self.ids.is_empty() => {
                let start = self.ids[a % self.ids.len()];
                let span =
                    IdSpan::new(OpId::new(start.peer, start.counter.saturating_sub(1)), n as Counter * 2);
                assert_eq!(self.seq.contains_span(&span), self.oracle.contains_span(&span));
                assert_eq!(self.seq.delete(&[span]), self.oracle.delete(&[span]));
            }
            _ => {}
        }
    }

    /// Compare everything observable, probing positions and ids derived from `probe`.
    fn compare(&self, probe: u32) {
        let (seq, oracle) = (&self.seq, &self.oracle);
        assert_eq!(seq.len(), oracle.len());
        assert_eq!(seq.is_empty(), oracle.is_empty());
        assert_eq!(seq.total_len(), oracle.total_len());
        assert_eq!(seq.to_content(), oracle.to_content());
        assert_eq!(postcard::to_allocvec(seq).unwrap(), postcard::to_allocvec(oracle).unwrap());
        seq.check();
        let len = seq.len();
        let probe = probe as usize;
        let positions = [0, len / 2, len.saturating_sub(1), len, probe % (len + 1), (probe >> 8) % (len + 1)];
        for pos in positions {
            assert_eq!(seq.local_anchor(pos), oracle.local_anchor(pos), "local_anchor({pos})");
            let id = seq.id_at(pos);
            assert_eq!(id, oracle.id_at(pos), "id_at({pos})");
            if let Some(id) = id {
                assert_eq!(seq.position_of(id), Some(pos));
            }
            // Pieces may be cut differently; the element they resolve to may not.
            let element = |(id, content, offset): (OpId, &C, usize)| (id, content.slice(offset, offset + 1));
            assert_eq!(seq.visible_piece_at(pos).map(element), oracle.visible_piece_at(pos).map(element));
            let n = (probe >> 4) % 9;
            assert_eq!(seq.visible_spans(pos, n)[..], oracle.visible_spans(pos, n)[..]);
            assert_eq!(seq.slice(pos, n), oracle.slice(pos, n));
        }
        for k in 0..6 {
            let Some(&id) = self.ids.get(probe.wrapping_mul(k + 1) % self.ids.len().max(1)) else { break };
            let id = if k == 5 { OpId::new(id.peer, id.counter + 1) } else { id };
            assert_eq!(seq.contains(id), oracle.contains(id));
            assert_eq!(seq.is_deleted(id), oracle.is_deleted(id), "is_deleted({id:?})");
            assert_eq!(seq.position_of(id), oracle.position_of(id), "position_of({id:?})");
        }
        let mut pieces = Vec::new();
        seq.for_each_visible(|_, c| pieces.push(c.clone()));
        let mut expected = C::empty();
        pieces.into_iter().for_each(|c| expected.append(c));
        assert_eq!(expected, oracle.to_content());
    }

    fn run(steps: &[Step]) {
        let mut harness = Self::new();
        for (i, step) in steps.iter().enumerate() {
            harness.step(step);
            harness.compare(step.a ^ step.b.rotate_left(7));
            if i % 16 == 15 {
                // The decoded form is a different tree shape (half-full nodes): same bytes.
                let bytes = postcard::to_allocvec(&harness.seq).unwrap();
                let back: Sequence<C> = postcard::from_bytes(&bytes).unwrap();
                back.check();
                assert_eq!(postcard::to_allocvec(&back).unwrap(), bytes);
                harness.seq = back;
            }
        }
    }
}

/// 96 cases unless `PROPTEST_CASES` asks otherwise; failing seeds are pinned next to those of
/// the integration tests.
fn config() -> Config {
    let cases = crate::test_cases::proptest_cases(96);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/sequence_differential.txt");
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(path))),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn text_matches_the_oracle(steps in steps()) {
        Harness::<String>::run(&steps);
    }

    #[test]
    fn list_matches_the_oracle(steps in steps()) {
        Harness::<Vec<u32>>::run(&steps);
    }
}
