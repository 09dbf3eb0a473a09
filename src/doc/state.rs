//! The current state of every container, and how operations change it.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::clock::Timestamp;
use super::id::{IdSpan, OpId};
use super::op::{ContainerId, ContainerKind, Element, Op, OpContent};
use super::types::counter::CounterState;
use super::types::map::MapState;
use super::types::movable_list::MovableListState;
use super::types::or_set::OrSetState;
use super::types::register::RegisterState;
use super::types::sequence::{Anchor, Sequence, Side};

/// The state of one container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum ContainerState {
    Text(Sequence<String>),
    List(Sequence<Vec<Element>>),
    MovableList(MovableListState),
    Map(MapState),
    Register(RegisterState),
    Counter(CounterState),
    OrSet(OrSetState),
}

impl ContainerState {
    fn new(kind: ContainerKind) -> Self {
        match kind {
            ContainerKind::Text => ContainerState::Text(Sequence::new()),
            ContainerKind::List => ContainerState::List(Sequence::new()),
            ContainerKind::MovableList => ContainerState::MovableList(MovableListState::default()),
            ContainerKind::Map => ContainerState::Map(MapState::default()),
            ContainerKind::Register => ContainerState::Register(RegisterState::default()),
            ContainerKind::Counter => ContainerState::Counter(CounterState::default()),
            ContainerKind::OrSet => ContainerState::OrSet(OrSetState::default()),
        }
    }

    fn kind(&self) -> ContainerKind {
        match self {
            ContainerState::Text(_) => ContainerKind::Text,
            ContainerState::List(_) => ContainerKind::List,
            ContainerState::MovableList(_) => ContainerKind::MovableList,
            ContainerState::Map(_) => ContainerKind::Map,
            ContainerState::Register(_) => ContainerKind::Register,
            ContainerState::Counter(_) => ContainerKind::Counter,
            ContainerState::OrSet(_) => ContainerKind::OrSet,
        }
    }
}

/// Every container's state, keyed by id. A container exists once an operation touched it
/// (roots) or created it (children), so replicas with the same changes hold the same keys.
///
/// The states sit in a vector that the id index points into, in the order they were made,
/// and are never removed: an edit looks its container up once and keeps the slot, where a
/// map of states would need a second lookup to hand out the state it checked.
#[derive(Clone, Debug, Default)]
pub(crate) struct DocState {
    /// Where each container's state is in `slots`.
    index: BTreeMap<ContainerId, usize>,
    slots: Vec<ContainerState>,
    /// The container found last and its slot. Edits come in streaks on one container (each
    /// keystroke is a transaction of its own), and comparing a shared root id is a pointer
    /// check where a search of the index costs about 70 instructions a keystroke.
    recent: Option<(ContainerId, usize)>,
}

/// Replicas make containers in different orders: states are equal when every id has an equal
/// state, whatever the slots.
impl PartialEq for DocState {
    fn eq(&self, other: &Self) -> bool {
        self.index.len() == other.index.len() && self.containers().eq(other.containers())
    }
}

/// Stored as before the slots: a struct whose one field maps ids to states, ascending.
impl Serialize for DocState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Containers<'a>(&'a DocState);
        impl Serialize for Containers<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_map(self.0.containers())
            }
        }
        use serde::ser::SerializeStruct;
        let mut state = serializer.serialize_struct("DocState", 1)?;
        state.serialize_field("containers", &Containers(self))?;
        state.end()
    }
}

impl<'de> Deserialize<'de> for DocState {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename = "DocState")]
        struct Stored {
            containers: BTreeMap<ContainerId, ContainerState>,
        }
        Ok(DocState::from_containers(Stored::deserialize(deserializer)?.containers))
    }
}

macro_rules! state_getter {
    ($name:ident, $variant:ident, $ty:ty) => {
        pub(crate) fn $name(&self, id: &ContainerId) -> Option<&$ty> {
            match self.get(id) {
                Some(ContainerState::$variant(s)) => Some(s),
                _ => None,
            }
        }
    };
}

impl DocState {
    state_getter!(text, Text, Sequence<String>);
    state_getter!(list, List, Sequence<Vec<Element>>);
    state_getter!(movable_list, MovableList, MovableListState);
    state_getter!(map, Map, MapState);
    state_getter!(register, Register, RegisterState);
    state_getter!(counter, Counter, CounterState);
    state_getter!(or_set, OrSet, OrSetState);

    pub(crate) fn get(&self, id: &ContainerId) -> Option<&ContainerState> {
        self.index.get(id).map(|&slot| &self.slots[slot])
    }

    /// The state of `id`, made empty if it has none.
    fn get_or_create(&mut self, id: &ContainerId) -> &mut ContainerState {
        let slot = match self.slot(id) {
            Some(slot) => slot,
            None => {
                self.slots.push(ContainerState::new(id.kind()));
                self.index.insert(id.clone(), self.slots.len() - 1);
                self.slots.len() - 1
            }
        };
        &mut self.slots[slot]
    }

    /// Whether the container exists (roots always do, implicitly).
    pub(crate) fn has_container(&self, id: &ContainerId) -> bool {
        matches!(id, ContainerId::Root { .. }) || self.index.contains_key(id)
    }

    /// Whether `id` is a visible character of the text `container`.
    pub(crate) fn shows_text(&self, container: &ContainerId, id: OpId) -> bool {
        self.text(container).is_some_and(|seq| seq.is_deleted(id) == Some(false))
    }

    /// A state holding exactly `containers`.
    pub(crate) fn from_containers(containers: BTreeMap<ContainerId, ContainerState>) -> Self {
        let mut index = BTreeMap::new();
        let mut slots = Vec::with_capacity(containers.len());
        for (id, state) in containers {
            index.insert(id, slots.len());
            slots.push(state);
        }
        DocState { index, slots, recent: None }
    }

    /// Every container and its state, ascending by id.
    pub(crate) fn containers(&self) -> impl Iterator<Item = (&ContainerId, &ContainerState)> {
        self.index.iter().map(|(id, &slot)| (id, &self.slots[slot]))
    }

    /// Whether decoded state is internally consistent beyond what each type's own decoding
    /// checks: every container's state matches the kind in its id, and no set member is left
    /// without a tag.
    pub(crate) fn is_consistent(&self) -> bool {
        self.containers().all(|(id, state)| {
            id.kind() == state.kind()
                && match state {
                    ContainerState::OrSet(s) => s.is_consistent(),
                    _ => true,
                }
        })
    }

    /// The slot of container `id`'s state, if it has one: a root gets its state when first
    /// edited.
    pub(crate) fn slot(&mut self, id: &ContainerId) -> Option<usize> {
        if let Some((recent, slot)) = &self.recent
            && recent == id
        {
            return Some(*slot);
        }
        let slot = self.index.get(id).copied()?;
        self.recent = Some((id.clone(), slot));
        Some(slot)
    }

    /// The text in `slot` (from [`Self::slot`]), to edit.
    pub(crate) fn text_in_slot(&mut self, slot: usize) -> Option<&mut Sequence<String>> {
        match self.slots.get_mut(slot) {
            Some(ContainerState::Text(seq)) => Some(seq),
            _ => None,
        }
    }

    /// The state of text `id`, created empty if it has none; `None` if `id` names no text.
    pub(crate) fn create_text(&mut self, id: &ContainerId) -> Option<&mut Sequence<String>> {
        match self.get_or_create(id) {
            ContainerState::Text(seq) => Some(seq),
            _ => None,
        }
    }

    /// Apply one validated operation. `id` is the op's first id, `ts` its change's timestamp.
    /// Returns the containers it created.
    pub(crate) fn apply(&mut self, id: OpId, ts: Timestamp, op: &Op) -> Vec<ContainerId> {
        let mut created = Vec::new();
        // The id clone (a string for roots) is only paid when the container is created.
        let state = self.get_or_create(&op.container);
        match (&op.content, state) {
            (OpContent::TextInsert { anchor, text }, ContainerState::Text(seq)) => {
                seq.insert_copy(id, *anchor, text);
            }
            (OpContent::ListInsert { anchor, items }, ContainerState::List(seq)) => {
                seq.insert_copy(id, *anchor, items);
                collect_children(id, items, &mut created);
            }
            (OpContent::SeqDelete { spans }, ContainerState::Text(seq)) => {
                seq.delete(spans.iter().map(|run| &run.span));
            }
            (OpContent::SeqDelete { spans }, ContainerState::List(seq)) => {
                seq.delete(spans.iter().map(|run| &run.span));
            }
            (OpContent::MovableInsert { anchor, items }, ContainerState::MovableList(list)) => {
                list.apply_insert(id, ts, *anchor, items.clone());
                collect_children(id, items, &mut created);
            }
            (OpContent::MovableMove { elem, anchor }, ContainerState::MovableList(list)) => {
                list.apply_move(id, ts, *elem, *anchor);
            }
            (OpContent::MovableSet { elem, value }, ContainerState::MovableList(list)) => {
                list.apply_set(id, ts, *elem, value.clone());
                collect_children(id, std::slice::from_ref(value), &mut created);
            }
            (OpContent::MovableDelete { elems }, ContainerState::MovableList(list)) => {
                list.apply_delete(elems);
            }
            (OpContent::MapSet { key, value }, ContainerState::Map(map)) => {
                map.apply_set(id, ts, key.clone(), value.clone());
                if let Some(value) = value {
                    collect_children(id, std::slice::from_ref(value), &mut created);
                }
            }
            (OpContent::RegisterSet { value }, ContainerState::Register(register)) => {
                register.apply_set(id, ts, value.clone());
                collect_children(id, std::slice::from_ref(value), &mut created);
            }
            (OpContent::CounterAdd { delta }, ContainerState::Counter(counter)) => counter.apply_add(*delta),
            (OpContent::SetAdd { value }, ContainerState::OrSet(set)) => set.apply_add(id, value.clone()),
            (OpContent::SetRemove { value, tags }, ContainerState::OrSet(set)) => {
                set.apply_remove(value, tags)
            }
            // Validation guarantees op and container kinds agree; a mismatch would be a bug in
            // this crate, and skipping keeps every replica equally unaffected.
            _ => debug_assert!(false, "operation applied to a container of another kind"),
        }
        for child in &created {
            self.get_or_create(child);
        }
        created
    }
}

fn collect_children(first: OpId, items: &[Element], out: &mut Vec<ContainerId>) {
    for (i, item) in items.iter().enumerate() {
        if let Element::Container(kind) = item {
            out.push(ContainerId::Child { id: OpId::new(first.peer, first.counter + i as u32), kind: *kind });
        }
    }
}

/// What a batch of changes under validation has added so far, so that later changes of the
/// same batch may refer to it before anything is applied.
#[derive(Default)]
pub(crate) struct Overlay {
    /// Sequence element ids (text/list elements, movable list positions) per container. A
    /// sorted map: container ids compare by pointer first, and hashing one (a name) per op
    /// cost more than comparing it with the one or two containers a batch usually touches.
    elements: BTreeMap<ContainerId, IdRanges>,
    /// Movable list element ids per container.
    movable_elems: BTreeMap<ContainerId, IdRanges>,
    containers: HashSet<ContainerId>,
    /// Nothing validated after this op can refer to it (the batch is one op), so recording
    /// what it adds would be wasted work, on every keystroke of live sync.
    last_op: bool,
}

impl Overlay {
    /// An overlay for validating a single operation.
    pub(crate) fn for_one_op() -> Self {
        Overlay { last_op: true, ..Overlay::default() }
    }

    fn record_elements(&mut self, container: &ContainerId, span: IdSpan) {
        if !self.last_op {
            record(&mut self.elements, container, span);
        }
    }

    fn record_movable_elems(&mut self, container: &ContainerId, span: IdSpan) {
        if !self.last_op {
            record(&mut self.movable_elems, container, span);
        }
    }
}

/// Id spans indexed by their first id: a lookup is a logarithmic search, not a scan, because a
/// whole document's history is one batch when it is loaded. A batch mostly adds spans in
/// ascending id order (one peer typing), so those go at the end of a vector; the others into
/// a tree. The spans never overlap (an op's ids are checked unused before they are recorded).
#[derive(Default)]
struct IdRanges {
    /// `(first id, length)`, ascending.
    ascending: Vec<(OpId, u32)>,
    /// The spans that came out of order.
    others: BTreeMap<OpId, u32>,
}

impl IdRanges {
    fn insert(&mut self, span: IdSpan) {
        match self.ascending.last() {
            Some(&(last, _)) if last >= span.start => {
                self.others.insert(span.start, span.len);
            }
            _ => self.ascending.push((span.start, span.len)),
        }
    }

    /// The end counter of the range holding `id`, if any.
    fn end_of_range_holding(&self, id: OpId) -> Option<u32> {
        let holds = |&(start, len): &(OpId, u32)| {
            let end = start.counter.saturating_add(len);
            (start.peer == id.peer && id.counter < end).then_some(end)
        };
        let at = self.ascending.partition_point(|&(start, _)| start <= id);
        let in_order = at.checked_sub(1).and_then(|i| holds(&self.ascending[i]));
        in_order.or_else(|| self.others.range(..=id).next_back().and_then(|(&s, &l)| holds(&(s, l))))
    }

    fn contains(&self, id: OpId) -> bool {
        self.end_of_range_holding(id).is_some()
    }

    /// Whether every id of `span` lies in some range (ranges may abut).
    fn covers(&self, span: &IdSpan) -> bool {
        let mut counter = span.start.counter;
        while counter < span.end_counter() {
            match self.end_of_range_holding(OpId::new(span.start.peer, counter)) {
                Some(end) => counter = end,
                None => return false,
            }
        }
        true
    }
}

fn record(map: &mut BTreeMap<ContainerId, IdRanges>, container: &ContainerId, span: IdSpan) {
    match map.get_mut(container) {
        Some(ranges) => ranges.insert(span),
        None => map.entry(container.clone()).or_default().insert(span),
    };
}

impl Overlay {
    fn has_element(&self, container: &ContainerId, id: OpId) -> bool {
        self.elements.get(container).is_some_and(|r| r.contains(id))
    }

    fn covers_elements(&self, container: &ContainerId, span: &IdSpan) -> bool {
        self.elements.get(container).is_some_and(|r| r.covers(span))
    }

    fn has_movable_elem(&self, container: &ContainerId, id: OpId) -> bool {
        self.movable_elems.get(container).is_some_and(|r| r.contains(id))
    }
}

impl DocState {
    /// Whether a run of `len` new ids starting at `id` can hang at `anchor`: the parent exists
    /// (in state or earlier in the batch), the ids are unused, and the root gets no left child.
    fn anchor_ok(
        &self,
        overlay: &Overlay,
        container: &ContainerId,
        id: OpId,
        anchor: &Anchor,
        len: usize,
    ) -> bool {
        if anchor.parent.is_none() && anchor.side == Side::Left {
            return false;
        }
        let parent_in_batch = anchor.parent.is_some_and(|p| overlay.has_element(container, p));
        let as_root = Anchor { parent: None, side: Side::Right };
        let anchor = if parent_in_batch { &as_root } else { anchor };
        match self.get(container) {
            Some(ContainerState::Text(seq)) => seq.can_insert(id, anchor, len),
            Some(ContainerState::List(seq)) => seq.can_insert(id, anchor, len),
            Some(ContainerState::MovableList(list)) => list.can_insert(id, anchor, len),
            Some(_) => false,
            None => anchor.parent.is_none(),
        }
    }

    /// Whether every id of `span` is an element of the sequence `container`, in state or overlay.
    fn span_ok(&self, overlay: &Overlay, container: &ContainerId, span: &IdSpan) -> bool {
        let in_state = |s: &IdSpan| match self.get(container) {
            Some(ContainerState::Text(seq)) => seq.contains_span(s),
            Some(ContainerState::List(seq)) => seq.contains_span(s),
            _ => false,
        };
        if span.len == 0 || in_state(span) || overlay.covers_elements(container, span) {
            return span.len > 0;
        }
        // Mixed spans happen when a run was typed across two changes of one batch: check id by
        // id (bounded by the span length, which the sender paid for in ids it owns).
        (span.start.counter..span.end_counter()).all(|c| {
            let id = OpId::new(span.start.peer, c);
            overlay.has_element(container, id) || in_state(&IdSpan::new(id, 1))
        })
    }

    fn movable_elem_ok(&self, overlay: &Overlay, container: &ContainerId, elem: OpId) -> bool {
        overlay.has_movable_elem(container, elem)
            || self.movable_list(container).is_some_and(|l| l.has_elem(elem))
    }

    /// Check that `op` (first id `id`) can be applied on top of this state plus `overlay`,
    /// then record what it adds in `overlay`.
    pub(crate) fn validate(&self, overlay: &mut Overlay, id: OpId, op: &Op) -> Result<(), &'static str> {
        let container = &op.container;
        if op.content.target_kind() != container.kind()
            && !(matches!(op.content, OpContent::SeqDelete { .. }) && container.kind() == ContainerKind::Text)
        {
            return Err("operation does not fit the container kind");
        }
        if !self.has_container(container) && !overlay.containers.contains(container) {
            return Err("unknown container");
        }
        let len = op.content.id_len() as u32;
        let own_span = IdSpan::new(id, len);
        let items: &[Element] = match &op.content {
            OpContent::TextInsert { anchor, .. } | OpContent::ListInsert { anchor, .. } => {
                if !self.anchor_ok(overlay, container, id, anchor, len as usize) {
                    return Err("insert anchored to an unknown element");
                }
                overlay.record_elements(container, own_span);
                match &op.content {
                    OpContent::ListInsert { items, .. } => items,
                    _ => &[],
                }
            }
            OpContent::SeqDelete { spans } => {
                if !spans.iter().all(|run| self.span_ok(overlay, container, &run.span)) {
                    return Err("delete of unknown elements");
                }
                &[]
            }
            OpContent::MovableInsert { anchor, items } => {
                if !self.anchor_ok(overlay, container, id, anchor, len as usize) {
                    return Err("insert anchored to an unknown element");
                }
                overlay.record_elements(container, own_span);
                overlay.record_movable_elems(container, own_span);
                items
            }
            OpContent::MovableMove { elem, anchor } => {
                if !self.movable_elem_ok(overlay, container, *elem)
                    || !self.anchor_ok(overlay, container, id, anchor, 1)
                {
                    return Err("move of an unknown element or to an unknown anchor");
                }
                overlay.record_elements(container, own_span);
                &[]
            }
            OpContent::MovableSet { elem, value } => {
                if !self.movable_elem_ok(overlay, container, *elem) {
                    return Err("update of an unknown element");
                }
                std::slice::from_ref(value)
            }
            OpContent::MovableDelete { elems } => {
                if !elems.iter().all(|e| self.movable_elem_ok(overlay, container, *e)) {
                    return Err("delete of an unknown element");
                }
                &[]
            }
            OpContent::MapSet { value, .. } => value.as_slice(),
            OpContent::RegisterSet { value } => std::slice::from_ref(value),
            OpContent::CounterAdd { .. } | OpContent::SetAdd { .. } | OpContent::SetRemove { .. } => &[],
        };
        let mut created = Vec::new();
        collect_children(id, items, &mut created);
        overlay.containers.extend(created);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::id::PeerId;

    fn id(peer: u64, counter: u32) -> OpId {
        OpId::new(PeerId::new(peer), counter)
    }

    #[test]
    fn states_made_in_another_order_are_equal_and_stored_alike() {
        let text = ContainerId::root("t", ContainerKind::Text);
        let counter = ContainerId::root("c", ContainerKind::Counter);
        let add = |delta| Op { container: counter.clone(), content: OpContent::CounterAdd { delta } };
        let insert = Op {
            container: text.clone(),
            content: OpContent::TextInsert {
                anchor: Anchor { parent: None, side: Side::Right },
                text: "hi".into(),
            },
        };
        let (mut a, mut b) = (DocState::default(), DocState::default());
        a.apply(id(1, 0), Timestamp::default(), &insert);
        a.apply(id(1, 2), Timestamp::default(), &add(5));
        b.apply(id(1, 2), Timestamp::default(), &add(5));
        b.apply(id(1, 0), Timestamp::default(), &insert);
        assert_eq!(a, b);
        b.apply(id(2, 0), Timestamp::default(), &add(1));
        assert_ne!(a, b);
        // The stored form is the map of ids to states it was before the slots.
        #[derive(Serialize)]
        struct Stored<'a> {
            containers: BTreeMap<&'a ContainerId, &'a ContainerState>,
        }
        let bytes = postcard::to_allocvec(&a).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&Stored { containers: a.containers().collect() }).unwrap());
        assert_eq!(postcard::from_bytes::<DocState>(&bytes).unwrap(), a);
    }

    #[test]
    fn id_ranges_find_ids_and_cover_abutting_spans() {
        // Added in id order, and the same spans added backwards (the out-of-order half).
        let spans = [IdSpan::new(id(1, 0), 5), IdSpan::new(id(1, 5), 3), IdSpan::new(id(2, 10), 1)];
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let mut ranges = IdRanges::default();
            for i in order {
                ranges.insert(spans[i]);
            }
            assert!(ranges.contains(id(1, 4)) && ranges.contains(id(1, 7)) && ranges.contains(id(2, 10)));
            assert!(!ranges.contains(id(1, 8)) && !ranges.contains(id(2, 9)) && !ranges.contains(id(3, 0)));
            assert!(ranges.covers(&IdSpan::new(id(1, 2), 6)), "two abutting ranges cover a span across them");
            assert!(!ranges.covers(&IdSpan::new(id(1, 2), 7)), "one id past the end is not covered");
            assert!(!ranges.covers(&IdSpan::new(id(2, 9), 2)));
        }
    }
}
