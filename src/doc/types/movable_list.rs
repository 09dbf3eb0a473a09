//! Movable list state: a list whose elements keep their identity across moves and updates.
//!
//! Elements and their positions are separate (Kleppmann's move operation). An element is named
//! by the id of the insert that created it and holds a last-writer-wins value. Its position is
//! an entry of a Fugue [`Sequence`] whose content is the element id. Inserting `n` items at op
//! id `id` creates elements `id + i` at positions `id + i`; moving an element by op `m` adds a
//! position entry `m` for it. The position written by the greatest [`Stamp`] wins and every
//! other position of that element is a tombstone, so an element shows up at most once however
//! many concurrent moves it gets, and the result does not depend on the order ops arrive in.
//!
//! Deleting an element tombstones its current position and forgets its value for good: moves
//! and updates that arrive later (they were concurrent with the delete) leave no trace besides
//! a tombstoned position, which is what makes delivery order irrelevant.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::sequence::{Anchor, Sequence};
use crate::doc::clock::Timestamp;
use crate::doc::id::{Counter, IdSpan, OpId};
use crate::doc::op::{Element, Stamp};

/// A live element: its value and where it is.
#[derive(Clone, Debug, PartialEq)]
struct Live {
    value: Element,
    /// The stamp of the write that stored `value` (the insert or a later set).
    value_stamp: Stamp,
    /// The id of its current (visible) position entry.
    pos: OpId,
    /// The timestamp of the op that wrote `pos`; with `pos` it forms that op's stamp.
    pos_ts: Timestamp,
}

/// Ids of deleted elements as disjoint, non-touching ranges: start to end counter (exclusive).
#[derive(Clone, Debug, Default, PartialEq)]
struct Deleted(BTreeMap<OpId, Counter>);

impl Deleted {
    /// Whether element `id` was deleted.
    fn contains(&self, id: OpId) -> bool {
        self.0.range(..=id).next_back().is_some_and(|(start, &end)| start.peer == id.peer && id.counter < end)
    }

    /// Add a span of ids none of which is in the set yet (`false`, and no change, otherwise).
    fn insert(&mut self, span: IdSpan) -> bool {
        let Some(end) = span.start.counter.checked_add(span.len) else { return false };
        if span.len == 0 {
            return false;
        }
        let (peer, mut start, mut end) = (span.start.peer, span.start.counter, end);
        let before = self.0.range(..span.start).next_back().map(|(&s, &e)| (s, e));
        let after = self.0.range(span.start..).next().map(|(&s, &e)| (s, e));
        if before.is_some_and(|(s, e)| s.peer == peer && e > start)
            || after.is_some_and(|(s, _)| s.peer == peer && s.counter < end)
        {
            return false;
        }
        if let Some((s, e)) = before
            && s.peer == peer
            && e == start
        {
            self.0.remove(&s);
            start = s.counter;
        }
        if let Some((s, e)) = after
            && s.peer == peer
            && s.counter == end
        {
            self.0.remove(&s);
            end = e;
        }
        self.0.insert(OpId::new(peer, start), end);
        true
    }

    /// The ranges as spans, ascending.
    fn spans(&self) -> Vec<IdSpan> {
        self.0.iter().map(|(&start, &end)| IdSpan::new(start, end - start.counter)).collect()
    }
}

/// The state of a movable list.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct MovableListState {
    /// Position entries; each visible one holds the id of the element it places.
    positions: Sequence<Vec<OpId>>,
    live: BTreeMap<OpId, Live>,
    deleted: Deleted,
}

impl MovableListState {
    /// The number of elements.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether the list has no elements.
    #[allow(dead_code, reason = "the natural partner of len(); the handles compute it from len() today")]
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// The element at `pos`: its id and value.
    pub fn get(&self, pos: usize) -> Option<(OpId, &Element)> {
        let elem = self.elem_at(pos)?;
        Some((elem, &self.live.get(&elem)?.value))
    }

    /// Call `f` with each element's id and value, in list order.
    pub fn for_each(&self, mut f: impl FnMut(OpId, &Element)) {
        self.for_each_with_value_op(|elem, _, value| f(elem, value));
    }

    /// Call `f` with each element's id, the op id of the write that stored its value (which
    /// names a nested container stored there) and the value, in list order.
    pub fn for_each_with_value_op(&self, mut f: impl FnMut(OpId, OpId, &Element)) {
        self.positions.for_each_visible(|_, elems| {
            for elem in elems {
                if let Some(live) = self.live.get(elem) {
                    f(*elem, live.value_stamp.1, &live.value);
                }
            }
        });
    }

    /// The anchor for inserting at `pos` (clamped to [`Self::len`]).
    pub fn local_insert_anchor(&self, pos: usize) -> Anchor {
        self.positions.local_anchor(pos)
    }

    /// The element at `from` and the anchor that moves it to index `to`; `None` if either
    /// index is out of bounds.
    pub fn local_move_anchor(&self, from: usize, to: usize) -> Option<(OpId, Anchor)> {
        if from >= self.len() || to >= self.len() {
            return None;
        }
        let elem = self.elem_at(from)?;
        // The old position disappears once the move is applied, so moving forwards must go one
        // further in the list as it is now.
        let at = if to > from { to + 1 } else { to };
        Some((elem, self.positions.local_anchor(at)))
    }

    /// The id of the element at `pos`.
    pub fn elem_at(&self, pos: usize) -> Option<OpId> {
        let (_, elems, offset) = self.positions.visible_piece_at(pos)?;
        elems.get(offset).copied()
    }

    /// The op id of the write that stored the value at `pos` (the insert or the last set that
    /// won): it names a nested container stored there.
    pub fn value_op_at(&self, pos: usize) -> Option<OpId> {
        Some(self.live.get(&self.elem_at(pos)?)?.value_stamp.1)
    }

    /// The current index of `elem`; `None` if it is deleted or unknown.
    pub fn position_of_elem(&self, elem: OpId) -> Option<usize> {
        self.positions.position_of(self.live.get(&elem)?.pos)
    }

    #[cfg(test)]
    /// Whether an insert or move may anchor to `parent`: it is a position entry, current or not.
    pub fn can_insert_after(&self, parent: OpId) -> bool {
        self.positions.contains(parent)
    }

    /// Whether an insert of `len` items with ids from `id` at `anchor` is valid.
    pub fn can_insert(&self, id: OpId, anchor: &Anchor, len: usize) -> bool {
        self.positions.can_insert(id, anchor, len)
    }

    /// Whether op `op_id` may move `elem` (known, possibly deleted) to `anchor`.
    pub fn can_move(&self, op_id: OpId, elem: OpId, anchor: &Anchor) -> bool {
        self.has_elem(elem) && self.positions.can_insert(op_id, anchor, 1)
    }

    /// Whether `elem` was ever inserted (deleted elements included).
    pub fn has_elem(&self, elem: OpId) -> bool {
        self.live.contains_key(&elem) || self.deleted.contains(elem)
    }

    /// Insert `items` as elements `id..id + items.len()` at `anchor`, with timestamp
    /// `stamp_ts`. Ignored unless [`Self::can_insert`].
    pub fn apply_insert(&mut self, id: OpId, stamp_ts: Timestamp, anchor: Anchor, items: Vec<Element>) {
        if !self.can_insert(id, &anchor, items.len()) {
            return;
        }
        let elems: Vec<OpId> =
            (0..items.len()).map(|i| OpId::new(id.peer, id.counter + i as Counter)).collect();
        self.positions.insert(id, anchor, elems.clone());
        for (elem, value) in elems.into_iter().zip(items) {
            self.live
                .insert(elem, Live { value, value_stamp: (stamp_ts, elem), pos: elem, pos_ts: stamp_ts });
        }
    }

    /// Move `elem` to `anchor` by op `op_id`. The move wins if its stamp is the greatest of the
    /// element's position writes; otherwise (or if the element is deleted) it only leaves a
    /// tombstoned position. Ignored unless [`Self::can_move`].
    pub fn apply_move(&mut self, op_id: OpId, stamp_ts: Timestamp, elem: OpId, anchor: Anchor) {
        if !self.can_move(op_id, elem, &anchor) {
            return;
        }
        self.positions.insert(op_id, anchor, vec![elem]);
        let loser = match self.live.get_mut(&elem) {
            Some(live) if (stamp_ts, op_id) > (live.pos_ts, live.pos) => {
                let old = live.pos;
                live.pos = op_id;
                live.pos_ts = stamp_ts;
                old
            }
            _ => op_id,
        };
        self.positions.delete(&[IdSpan::new(loser, 1)]);
    }

    /// Replace the value of `elem` if stamp `(stamp_ts, op_id)` beats the current value's.
    /// Ignored for unknown or deleted elements.
    pub fn apply_set(&mut self, op_id: OpId, stamp_ts: Timestamp, elem: OpId, value: Element) {
        if let Some(live) = self.live.get_mut(&elem)
            && (stamp_ts, op_id) > live.value_stamp
        {
            live.value = value;
            live.value_stamp = (stamp_ts, op_id);
        }
    }

    /// Delete elements (unknown or already deleted ones are ignored); returns how many visible
    /// elements were removed.
    pub fn apply_delete(&mut self, elems: &[OpId]) -> usize {
        let mut removed = 0;
        for elem in elems {
            if let Some(live) = self.live.remove(elem) {
                removed += self.positions.delete(&[IdSpan::new(live.pos, 1)]);
                self.deleted.insert(IdSpan::new(*elem, 1));
            }
        }
        removed
    }

    /// Rebuild from the decoded form, checking that positions and elements agree.
    fn from_repr(repr: Repr) -> Result<Self, &'static str> {
        let Repr { positions, elems, deleted } = repr;
        let mut state = MovableListState { positions, live: BTreeMap::new(), deleted: Deleted::default() };
        let mut last = None;
        for e in elems {
            if last.is_some_and(|l| l >= e.elem) {
                return Err("elements are not in ascending order");
            }
            last = Some(e.elem);
            if !state.positions.contains(e.elem) {
                return Err("element without its insert position");
            }
            // `pos` is filled in from the visible positions below.
            let live = Live { value: e.value, value_stamp: e.value_stamp, pos: e.elem, pos_ts: e.pos_ts };
            state.live.insert(e.elem, live);
        }
        let mut placed = BTreeSet::new();
        let mut consistent = true;
        state.positions.for_each_visible(|start, elems| {
            for (i, elem) in elems.iter().enumerate() {
                match state.live.get_mut(elem) {
                    Some(live) if placed.insert(*elem) => {
                        live.pos = OpId::new(start.peer, start.counter + i as Counter);
                    }
                    _ => consistent = false,
                }
            }
        });
        if !consistent {
            return Err("visible position of an unknown or already placed element");
        }
        if placed.len() != state.live.len() {
            return Err("element without a visible position");
        }
        for span in deleted {
            let overlaps_live =
                span.last().is_some_and(|last| state.live.range(span.start..=last).next().is_some());
            if overlaps_live || !state.positions.contains_span(&span) || !state.deleted.insert(span) {
                return Err("invalid deleted elements");
            }
        }
        Ok(state)
    }
}

/// A live element as encoded (its position is the visible entry that holds its id).
#[derive(Serialize)]
struct ElemRef<'a> {
    elem: OpId,
    value: &'a Element,
    value_stamp: Stamp,
    pos_ts: Timestamp,
}

/// The encoded form, borrowed from the state; see [`Repr`].
#[derive(Serialize)]
struct ReprRef<'a> {
    positions: &'a Sequence<Vec<OpId>>,
    elems: Vec<ElemRef<'a>>,
    deleted: Vec<IdSpan>,
}

/// A decoded [`ElemRef`].
#[derive(Deserialize)]
struct ElemRepr {
    elem: OpId,
    value: Element,
    value_stamp: Stamp,
    pos_ts: Timestamp,
}

/// The serialized form: positions, live elements ascending by id, deleted ids as spans.
#[derive(Deserialize)]
struct Repr {
    positions: Sequence<Vec<OpId>>,
    elems: Vec<ElemRepr>,
    deleted: Vec<IdSpan>,
}

impl Serialize for MovableListState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let elems = self
            .live
            .iter()
            .map(|(&elem, live)| ElemRef {
                elem,
                value: &live.value,
                value_stamp: live.value_stamp,
                pos_ts: live.pos_ts,
            })
            .collect();
        ReprRef { positions: &self.positions, elems, deleted: self.deleted.spans() }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for MovableListState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        MovableListState::from_repr(Repr::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::id::PeerId;
    use crate::doc::value::Value;

    use super::super::test_rng::Rng;

    fn id(peer: u64, counter: Counter) -> OpId {
        OpId::new(PeerId::new(peer), counter)
    }

    fn int(i: i64) -> Element {
        Element::Value(Value::Int(i))
    }

    fn ts(t: u64) -> Timestamp {
        Timestamp::from_raw(t)
    }

    fn items(state: &MovableListState) -> Vec<(OpId, Element)> {
        let mut out = Vec::new();
        state.for_each(|elem, value| out.push((elem, value.clone())));
        out
    }

    /// Check invariants and that the state survives encoding unchanged.
    fn check(state: &MovableListState) -> Vec<u8> {
        let listed = items(state);
        assert_eq!(listed.len(), state.len());
        let mut ids: Vec<OpId> = listed.iter().map(|(e, _)| *e).collect();
        for (i, (elem, value)) in listed.iter().enumerate() {
            assert_eq!(state.get(i), Some((*elem, value)));
            assert_eq!(state.elem_at(i), Some(*elem));
            assert_eq!(state.position_of_elem(*elem), Some(i));
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), listed.len(), "an element shows up twice");
        let bytes = postcard::to_allocvec(state).unwrap();
        let back: MovableListState = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(&back, state);
        assert_eq!(postcard::to_allocvec(&back).unwrap(), bytes);
        bytes
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(OpId, Timestamp, Anchor, Vec<Element>),
        Move(OpId, Timestamp, OpId, Anchor),
        Set(OpId, Timestamp, OpId, Element),
        Delete(Vec<OpId>),
    }

    fn apply(state: &mut MovableListState, op: &Op) {
        match op.clone() {
            Op::Insert(id, ts, anchor, items) => {
                assert!(state.can_insert(id, &anchor, items.len()));
                state.apply_insert(id, ts, anchor, items);
            }
            Op::Move(id, ts, elem, anchor) => {
                assert!(state.can_move(id, elem, &anchor));
                state.apply_move(id, ts, elem, anchor);
            }
            Op::Set(id, ts, elem, value) => {
                assert!(state.has_elem(elem));
                state.apply_set(id, ts, elem, value);
            }
            Op::Delete(elems) => {
                state.apply_delete(&elems);
            }
        }
    }

    /// One replica of a simulated network with causal delivery and a Lamport-style clock.
    struct Replica {
        state: MovableListState,
        peer: u64,
        counter: Counter,
        clock: u64,
        applied: Vec<usize>,
    }

    struct Logged {
        deps: Vec<usize>,
        op: Op,
    }

    impl Replica {
        /// A random local op, applied and logged; checked against `model` when given.
        fn edit(&mut self, me: usize, rng: &mut Rng, log: &mut [Vec<Logged>]) {
            let len = self.state.len();
            // Sometimes reuse the clock so that ties fall back to op ids.
            if !rng.chance(20) {
                self.clock += 1;
            }
            let (op_id, now) = (id(self.peer, self.counter), ts(self.clock));
            let op = match rng.below(10) {
                0..=3 => {
                    let n = 1 + rng.below(3);
                    let values = (0..n).map(|_| int(rng.below(1000) as i64)).collect();
                    Op::Insert(op_id, now, self.state.local_insert_anchor(rng.below(len + 1)), values)
                }
                4..=6 if len > 0 => {
                    let (elem, anchor) =
                        self.state.local_move_anchor(rng.below(len), rng.below(len)).unwrap();
                    Op::Move(op_id, now, elem, anchor)
                }
                7 | 8 if len > 0 => Op::Set(
                    op_id,
                    now,
                    self.state.elem_at(rng.below(len)).unwrap(),
                    int(rng.below(1000) as i64),
                ),
                _ if len > 0 => {
                    let pos = rng.below(len);
                    let n = 1 + rng.below((len - pos).min(2));
                    Op::Delete((pos..pos + n).map(|i| self.state.elem_at(i).unwrap()).collect())
                }
                _ => return,
            };
            self.counter += match &op {
                Op::Insert(_, _, _, values) => values.len() as Counter,
                _ => 1,
            };
            apply(&mut self.state, &op);
            log[me].push(Logged { deps: self.applied.clone(), op });
            self.applied[me] += 1;
        }

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
            let op = &log[r][self.applied[r]].op;
            if let Op::Insert(_, t, ..) | Op::Move(_, t, ..) | Op::Set(_, t, ..) = op {
                self.clock = self.clock.max(t.as_raw());
            }
            apply(&mut self.state, op);
            self.applied[r] += 1;
            true
        }
    }

    #[test]
    fn local_ops_match_a_vec_model() {
        for seed in 1..40u64 {
            let mut rng = Rng(seed * 0x9E37_79B9);
            let mut replica = Replica {
                state: MovableListState::default(),
                peer: 1,
                counter: 0,
                clock: 0,
                applied: vec![0],
            };
            let mut log = vec![Vec::new()];
            let mut model: Vec<(OpId, Element)> = Vec::new();
            for step in 0..300 {
                let len = model.len();
                let (from, to) = (rng.below(len), rng.below(len));
                if len > 0 && rng.chance(30) {
                    let (elem, anchor) = replica.state.local_move_anchor(from, to).unwrap();
                    assert_eq!(elem, model[from].0);
                    let op_id = id(1, replica.counter);
                    replica.counter += 1;
                    replica.clock += 1;
                    replica.state.apply_move(op_id, ts(replica.clock), elem, anchor);
                    let item = model.remove(from);
                    model.insert(to, item);
                } else {
                    let logged = log[0].len();
                    replica.edit(0, &mut rng, &mut log);
                    if log[0].len() == logged {
                        continue;
                    }
                    match &log[0].last().unwrap().op {
                        Op::Insert(id, _, anchor, values) => {
                            let pos = replica.state.position_of_elem(*id).unwrap();
                            let elems =
                                (0..values.len() as Counter).map(|i| OpId::new(id.peer, id.counter + i));
                            model.splice(pos..pos, elems.zip(values.iter().cloned()));
                            assert!(
                                pos <= len && replica.state.can_insert_after(anchor.parent.unwrap_or(*id))
                            );
                        }
                        Op::Move(..) => {}
                        Op::Set(_, _, elem, value) => {
                            model.iter_mut().filter(|(e, _)| e == elem).for_each(|(_, v)| *v = value.clone());
                        }
                        Op::Delete(elems) => model.retain(|(e, _)| !elems.contains(e)),
                    }
                    // Moves made by `edit` are checked against the model by replaying them here.
                    if let Op::Move(_, _, elem, _) = &log[0].last().unwrap().op {
                        let to = replica.state.position_of_elem(*elem).unwrap();
                        let from = model.iter().position(|(e, _)| e == elem).unwrap();
                        let item = model.remove(from);
                        model.insert(to, item);
                    }
                }
                assert_eq!(items(&replica.state), model, "seed {seed} step {step}");
            }
            check(&replica.state);
        }
    }

    #[test]
    fn moves_land_where_asked() {
        let mut state = MovableListState::default();
        state.apply_insert(id(1, 0), ts(1), state.local_insert_anchor(0), (0..6).map(int).collect());
        let moves = [(0, 5), (5, 0), (2, 3), (3, 2), (1, 4), (4, 4), (0, 1), (5, 4)];
        for (counter, (from, to)) in (10..).zip(moves) {
            let before = items(&state);
            let (elem, anchor) = state.local_move_anchor(from, to).unwrap();
            state.apply_move(id(1, counter), ts(u64::from(counter)), elem, anchor);
            let mut expected = before;
            let item = expected.remove(from);
            expected.insert(to, item);
            assert_eq!(items(&state), expected, "move {from} -> {to}");
        }
        assert_eq!(state.local_move_anchor(6, 0), None);
        assert_eq!(state.local_move_anchor(0, 6), None);
        check(&state);
    }

    fn simulate(seed: u64, replicas: usize, steps: usize) -> (Vec<Replica>, Vec<Vec<Logged>>) {
        let mut rng = Rng(seed);
        let mut log: Vec<Vec<Logged>> = (0..replicas).map(|_| Vec::new()).collect();
        let mut reps: Vec<Replica> = (0..replicas)
            .map(|r| Replica {
                state: MovableListState::default(),
                peer: 10 - r as u64,
                counter: 0,
                clock: 0,
                applied: vec![0; replicas],
            })
            .collect();
        for _ in 0..steps {
            let r = rng.below(replicas);
            if rng.chance(50) {
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
    fn concurrent_replicas_converge_without_duplicates() {
        for seed in 1..40u64 {
            let (reps, log) = simulate(seed * 0x2545_F491, 2 + (seed % 2) as usize, 300);
            let bytes = check(&reps[0].state);
            for rep in &reps {
                assert_eq!(check(&rep.state), bytes, "seed {seed}");
            }
            // A replica that gets every op in another causal order agrees too.
            let mut late = Replica {
                state: MovableListState::default(),
                peer: 99,
                counter: 0,
                clock: 0,
                applied: vec![0; log.len()],
            };
            let mut rng = Rng(seed + 1);
            while late.receive(&mut rng, &log) {}
            assert_eq!(check(&late.state), bytes);
        }
    }

    /// Apply `ops` to a copy of `base` in every order.
    fn all_orders(base: &MovableListState, ops: &[Op]) -> Vec<MovableListState> {
        let orders: Vec<Vec<usize>> = match ops.len() {
            2 => vec![vec![0, 1], vec![1, 0]],
            _ => {
                vec![vec![0, 1, 2], vec![0, 2, 1], vec![1, 0, 2], vec![1, 2, 0], vec![2, 0, 1], vec![2, 1, 0]]
            }
        };
        orders
            .into_iter()
            .map(|order| {
                let mut state = base.clone();
                order.iter().for_each(|&i| apply(&mut state, &ops[i]));
                check(&state);
                state
            })
            .collect()
    }

    fn base() -> MovableListState {
        let mut state = MovableListState::default();
        state.apply_insert(id(1, 0), ts(1), state.local_insert_anchor(0), (0..5).map(int).collect());
        state
    }

    #[test]
    fn concurrent_moves_of_one_element_keep_one_copy() {
        let base = base();
        let x = id(1, 2);
        let ops: Vec<Op> = [(2, 0, 0, 5), (3, 4, 0, 5), (4, 1, 0, 6)]
            .iter()
            .map(|&(peer, to, _, t)| {
                let (elem, anchor) = base.local_move_anchor(2, to).unwrap();
                assert_eq!(elem, x);
                Op::Move(id(peer, 10), ts(t), elem, anchor)
            })
            .collect();
        let results = all_orders(&base, &ops);
        for state in &results {
            assert_eq!(state, &results[0]);
            assert_eq!(state.len(), 5);
            // The greatest stamp, (6, peer 4), moved it to index 1.
            assert_eq!(state.position_of_elem(x), Some(1));
        }
        // On a tie of timestamps the op id decides: peer 3 beats peer 2.
        let tied = all_orders(&base, &ops[..2]);
        assert_eq!(tied[0], tied[1]);
        assert_eq!(tied[0].position_of_elem(x), Some(4));
    }

    #[test]
    fn concurrent_move_and_delete() {
        let base = base();
        let x = id(1, 3);
        let (elem, anchor) = base.local_move_anchor(3, 0).unwrap();
        let ops = [Op::Move(id(2, 10), ts(5), elem, anchor), Op::Delete(vec![x])];
        let results = all_orders(&base, &ops);
        assert_eq!(results[0], results[1]);
        assert_eq!(results[0].len(), 4);
        assert_eq!(results[0].position_of_elem(x), None);
        assert!(results[0].has_elem(x));
        assert!(!results[0].has_elem(id(2, 10)));
        // A set that arrives after the delete changes nothing either.
        let mut late = results[0].clone();
        late.apply_set(id(3, 1), ts(9), x, int(42));
        assert_eq!(late, results[0]);
        assert_eq!(late.apply_delete(&[x, id(7, 7)]), 0);
    }

    #[test]
    fn set_keeps_identity_across_moves() {
        let base = base();
        let x = id(1, 1);
        let (elem, anchor) = base.local_move_anchor(1, 4).unwrap();
        let ops = [
            Op::Move(id(2, 10), ts(5), elem, anchor),
            Op::Set(id(3, 10), ts(6), x, int(100)),
            Op::Set(id(4, 10), ts(4), x, int(200)),
        ];
        let results = all_orders(&base, &ops);
        for state in &results {
            assert_eq!(state, &results[0]);
            assert_eq!(state.position_of_elem(x), Some(4));
            assert_eq!(state.get(4), Some((x, &int(100))));
            assert_eq!(state.value_op_at(4), Some(id(3, 10)));
        }
        assert_eq!(base.value_op_at(1), Some(x));
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let (reps, _) = simulate(5, 3, 300);
        let bytes = check(&reps[0].state);
        let mut rng = Rng(17);
        for cut in 0..bytes.len() {
            assert!(postcard::from_bytes::<MovableListState>(&bytes[..cut]).is_err());
        }
        for _ in 0..1_500 {
            let mut bad = bytes.clone();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(bad.len());
                bad[at] ^= 1 << rng.below(8);
            }
            if let Ok(state) = postcard::from_bytes::<MovableListState>(&bad) {
                check(&state);
            }
        }
    }

    #[test]
    fn inconsistent_encodings_are_errors() {
        let state = base();
        let encode = |positions: &Sequence<Vec<OpId>>, elems: Vec<ElemRef<'_>>, deleted: Vec<IdSpan>| {
            postcard::to_allocvec(&ReprRef { positions, elems, deleted }).unwrap()
        };
        let value = int(0);
        let elem = |e: OpId| ElemRef { elem: e, value: &value, value_stamp: (ts(1), e), pos_ts: ts(1) };
        let all: Vec<ElemRef<'_>> = (0..5).map(|c| elem(id(1, c))).collect();
        let ok = encode(&state.positions, all, vec![]);
        assert!(postcard::from_bytes::<MovableListState>(&ok).is_ok());
        let cases = [
            // An element without a visible position, and positions of unknown elements.
            encode(&state.positions, (0..6).map(|c| elem(id(1, c))).collect(), vec![]),
            encode(&state.positions, (0..4).map(|c| elem(id(1, c))).collect(), vec![]),
            // Not ascending.
            encode(&state.positions, (0..5).rev().map(|c| elem(id(1, c))).collect(), vec![]),
            // Deleted ids that are live, unknown, or empty.
            encode(
                &state.positions,
                (0..5).map(|c| elem(id(1, c))).collect(),
                vec![IdSpan::new(id(1, 4), 1)],
            ),
            encode(
                &state.positions,
                (0..5).map(|c| elem(id(1, c))).collect(),
                vec![IdSpan::new(id(1, 9), 1)],
            ),
            encode(
                &state.positions,
                (0..5).map(|c| elem(id(1, c))).collect(),
                vec![IdSpan::new(id(1, 9), 0)],
            ),
        ];
        for bytes in cases {
            assert!(postcard::from_bytes::<MovableListState>(&bytes).is_err());
        }
    }
}
