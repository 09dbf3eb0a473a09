//! Operations: what a change does to which container.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::clock::Timestamp;
use super::deletion::{DeleteRun, DeleteRuns, forward_runs, push_runs, slice_runs};
use super::id::{Counter, IdSpan, OpId};
use super::types::sequence::{Anchor, SeqContent, byte_offset_counted, continues_chain, push_typed};
use super::value::Value;

/// The kind of a container: which CRDT it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ContainerKind {
    /// Collaborative text ([`crate::TextRef`]).
    Text,
    /// An ordered list ([`crate::ListRef`]).
    List,
    /// A list whose elements can be moved and updated in place ([`crate::MovableListRef`]).
    MovableList,
    /// A last-writer-wins map ([`crate::MapRef`]).
    Map,
    /// A last-writer-wins register ([`crate::RegisterRef`]).
    Register,
    /// A counter ([`crate::CounterRef`]).
    Counter,
    /// An add-wins observed-remove set ([`crate::OrSetRef`]).
    OrSet,
}

/// The identity of a container in a document.
///
/// Root containers are named by the application and exist implicitly on every replica;
/// child containers are created by an operation (a map entry or list item) and named by it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ContainerId {
    /// A top-level container, named by the application.
    Root {
        /// The name the application uses (shared, so that the many copies of an id that
        /// operations and indexes hold cost no allocation each).
        name: Arc<str>,
        /// The container's type.
        kind: ContainerKind,
    },
    /// A container nested in a map or list, named by the operation that created it.
    Child {
        /// The id of the creating operation (the map entry or the list element).
        id: OpId,
        /// The container's type.
        kind: ContainerKind,
    },
}

// Every operation names its container, and applying one looks the container up in a sorted
// map: comparing names byte by byte showed up in profiles. Ids decoded from one connection, or
// cloned from the state, share their name's allocation, so a pointer check settles most
// comparisons; the order is the derived one (roots first, then by name, then by kind).
impl Ord for ContainerId {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (ContainerId::Root { name: a, kind: ka }, ContainerId::Root { name: b, kind: kb }) => {
                let names = if Arc::ptr_eq(a, b) { Ordering::Equal } else { a.cmp(b) };
                names.then(ka.cmp(kb))
            }
            (ContainerId::Root { .. }, ContainerId::Child { .. }) => Ordering::Less,
            (ContainerId::Child { .. }, ContainerId::Root { .. }) => Ordering::Greater,
            (ContainerId::Child { id: a, kind: ka }, ContainerId::Child { id: b, kind: kb }) => {
                a.cmp(b).then(ka.cmp(kb))
            }
        }
    }
}

impl PartialOrd for ContainerId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for ContainerId {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ContainerId::Root { name: a, kind: ka }, ContainerId::Root { name: b, kind: kb }) => {
                ka == kb && (Arc::ptr_eq(a, b) || a == b)
            }
            (ContainerId::Child { id: a, kind: ka }, ContainerId::Child { id: b, kind: kb }) => {
                a == b && ka == kb
            }
            _ => false,
        }
    }
}

impl Eq for ContainerId {}

impl std::hash::Hash for ContainerId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            ContainerId::Root { name, kind } => {
                0u8.hash(state);
                name.as_ref().hash(state);
                kind.hash(state);
            }
            ContainerId::Child { id, kind } => {
                1u8.hash(state);
                id.hash(state);
                kind.hash(state);
            }
        }
    }
}

impl ContainerId {
    /// A root container id.
    pub fn root(name: impl Into<Arc<str>>, kind: ContainerKind) -> Self {
        ContainerId::Root { name: name.into(), kind }
    }

    /// The container's type.
    pub fn kind(&self) -> ContainerKind {
        match self {
            ContainerId::Root { kind, .. } | ContainerId::Child { kind, .. } => *kind,
        }
    }
}

/// What a list item, map value or register holds: a plain value or a nested container.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Element {
    /// A plain value.
    Value(Value),
    /// A nested container of this kind; its id is `ContainerId::Child` of the element's op id.
    Container(ContainerKind),
}

/// Total order of last-writer-wins writes: hybrid timestamp first, then the op id, which is
/// unique, so two different writes never tie.
pub(crate) type Stamp = (Timestamp, OpId);

/// One operation inside a change. Its ids are `id .. id + id_len()`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Op {
    /// The container the operation edits.
    pub container: ContainerId,
    /// What it does.
    pub content: OpContent,
}

/// The effect of an operation, per container kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum OpContent {
    /// Insert characters into a text; one id per character.
    TextInsert { anchor: Anchor, text: String },
    /// Insert items into a list; one id per item.
    ListInsert { anchor: Anchor, items: Vec<Element> },
    /// Delete elements of a text or list by id; one id per element, the `i`-th id naming the
    /// `i`-th element of the runs (see [`super::deletion`]).
    SeqDelete { spans: DeleteRuns },
    /// Insert items into a movable list; item `i` gets element id and position id `id + i`.
    MovableInsert { anchor: Anchor, items: Vec<Element> },
    /// Move an element of a movable list to a new position (the op id names the position).
    MovableMove { elem: OpId, anchor: Anchor },
    /// Replace the value of a movable list element, keeping its identity.
    MovableSet { elem: OpId, value: Element },
    /// Delete elements of a movable list.
    MovableDelete { elems: Vec<OpId> },
    /// Set (`Some`) or delete (`None`) a map key.
    MapSet { key: Value, value: Option<Element> },
    /// Set a register.
    RegisterSet { value: Element },
    /// Add to a counter.
    CounterAdd { delta: i64 },
    /// Add a member to a set; the op id is the add's tag.
    SetAdd { value: Value },
    /// Remove the tags of a member that the remover had observed.
    SetRemove { value: Value, tags: Vec<OpId> },
}

impl OpContent {
    /// How many ids the operation consumes.
    pub(crate) fn id_len(&self) -> usize {
        match self {
            OpContent::TextInsert { text, .. } => text.chars().count(),
            OpContent::ListInsert { items, .. } | OpContent::MovableInsert { items, .. } => items.len(),
            OpContent::SeqDelete { spans } => spans.iter().map(|run| run.span.len as usize).sum(),
            _ => 1,
        }
    }

    /// The container kind this operation applies to.
    pub(crate) fn target_kind(&self) -> ContainerKind {
        match self {
            OpContent::TextInsert { .. } => ContainerKind::Text,
            OpContent::ListInsert { .. } => ContainerKind::List,
            OpContent::SeqDelete { .. } => ContainerKind::List,
            OpContent::MovableInsert { .. }
            | OpContent::MovableMove { .. }
            | OpContent::MovableSet { .. }
            | OpContent::MovableDelete { .. } => ContainerKind::MovableList,
            OpContent::MapSet { .. } => ContainerKind::Map,
            OpContent::RegisterSet { .. } => ContainerKind::Register,
            OpContent::CounterAdd { .. } => ContainerKind::Counter,
            OpContent::SetAdd { .. } | OpContent::SetRemove { .. } => ContainerKind::OrSet,
        }
    }
}

/// A local edit borrowed from the caller: typing on, backspacing and deleting forward need no
/// [`Op`] built, only the edit appended to the operation it continues.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LocalEdit<'a> {
    /// Insert `text` into the text `container` at `anchor`.
    TextInsert { container: &'a ContainerId, anchor: Anchor, text: &'a str },
    /// Delete the elements `spans` (in document order) of the text or list `container`.
    Delete { container: &'a ContainerId, spans: &'a [IdSpan] },
}

impl LocalEdit<'_> {
    /// The container edited.
    pub(crate) fn container(&self) -> &ContainerId {
        match self {
            LocalEdit::TextInsert { container, .. } | LocalEdit::Delete { container, .. } => container,
        }
    }

    /// The edit as an operation of its own.
    pub(crate) fn to_op(self) -> Op {
        let content = match self {
            LocalEdit::TextInsert { anchor, text, .. } => {
                OpContent::TextInsert { anchor, text: String::to_owned_with_room(text) }
            }
            LocalEdit::Delete { spans, .. } => {
                OpContent::SeqDelete { spans: forward_runs(spans.iter().copied()) }
            }
        };
        Op { container: self.container().clone(), content }
    }
}

/// Sum of `id_len` over ops, refusing anything that does not fit a counter.
pub(crate) fn ops_id_len(ops: &[Op]) -> Option<Counter> {
    ops.iter().try_fold(0 as Counter, |acc, op| acc.checked_add(Counter::try_from(op.content.id_len()).ok()?))
}

impl Op {
    /// The part of the operation holding its ids `from..to` (relative to its first id `first`,
    /// `from < to <= id_len`). Only runs (inserts and deletes) hold more than one id. The
    /// tail of an insert hangs right after the id before it, which is where Fugue puts the
    /// continuation of a run anyway, and the `i`-th id of a delete names its `i`-th element, so
    /// the pieces together mean exactly what the whole meant.
    pub(crate) fn slice(&self, first: OpId, from: usize, to: usize) -> Op {
        let anchor_at = |anchor: &Anchor| {
            if from == 0 {
                *anchor
            } else {
                Anchor::after(OpId::new(first.peer, first.counter + from as Counter - 1))
            }
        };
        let content = match &self.content {
            OpContent::TextInsert { anchor, text } => {
                // Exports cut the tail of a long typed run: count from the nearer end.
                let chars = text.chars().count();
                let (start, end) =
                    (byte_offset_counted(text, from, chars), byte_offset_counted(text, to, chars));
                OpContent::TextInsert { anchor: anchor_at(anchor), text: text[start..end].to_owned() }
            }
            OpContent::ListInsert { anchor, items } => {
                OpContent::ListInsert { anchor: anchor_at(anchor), items: items[from..to].to_vec() }
            }
            OpContent::MovableInsert { anchor, items } => {
                OpContent::MovableInsert { anchor: anchor_at(anchor), items: items[from..to].to_vec() }
            }
            OpContent::SeqDelete { spans } => {
                OpContent::SeqDelete { spans: slice_runs(spans, from as Counter, to as Counter) }
            }
            other => other.clone(),
        };
        Op { container: self.container.clone(), content }
    }

    /// Whether the operation's effect ignores its change's timestamp, so that it may join a
    /// change made earlier (which carries the earlier timestamp).
    pub(crate) fn ignores_timestamp(&self) -> bool {
        matches!(
            self.content,
            OpContent::TextInsert { .. } | OpContent::ListInsert { .. } | OpContent::SeqDelete { .. }
        )
    }

    /// Append local edit `next`, whose first id is `next_id`, to this operation (whose ids end
    /// right before `next_id`) if it continues it, as [`Op::absorb`] does; whether it did.
    pub(crate) fn extend_local(&mut self, next: LocalEdit<'_>, next_id: OpId) -> bool {
        if self.container != *next.container() {
            return false;
        }
        match (&mut self.content, next) {
            (OpContent::TextInsert { text, .. }, LocalEdit::TextInsert { anchor, text: more, .. }) => {
                if !continues_chain(next_id, &anchor) {
                    return false;
                }
                push_typed(text, more);
                true
            }
            (OpContent::SeqDelete { spans: runs }, LocalEdit::Delete { spans, .. }) => {
                push_runs(runs, spans.iter().copied().map(DeleteRun::forward));
                true
            }
            _ => false,
        }
    }

    /// Whether [`Self::absorb`] joins `next`, whose first id is `next_id`, into this operation.
    pub(crate) fn joined_by(&self, next: &Op, next_id: OpId) -> bool {
        self.container == next.container
            && match (&self.content, &next.content) {
                (OpContent::TextInsert { .. }, OpContent::TextInsert { anchor, .. })
                | (OpContent::ListInsert { .. }, OpContent::ListInsert { anchor, .. })
                | (OpContent::MovableInsert { .. }, OpContent::MovableInsert { anchor, .. }) => {
                    continues_chain(next_id, anchor)
                }
                // Deletes always join: the ids of the second follow the first's.
                (OpContent::SeqDelete { .. }, OpContent::SeqDelete { .. }) => true,
                _ => false,
            }
    }

    /// Append `next` (whose first id is `next_id`) to this operation (whose ids end right before
    /// `next_id`) if it continues it: a delete in the same container always, an insert into
    /// the same text or list right after this one's last element, which is what an insert cut
    /// in two becomes. Gives the operation back if not.
    ///
    /// Owned or borrowed: a server keeps the changes it applies for the fan-out, and joining
    /// a borrowed keystroke onto the stored run copies a character instead of the change.
    pub(crate) fn absorb<'a>(&mut self, next: Cow<'a, Op>, next_id: OpId) -> Result<(), Cow<'a, Op>> {
        if !self.joined_by(&next, next_id) {
            return Err(next);
        }
        match (&mut self.content, next) {
            (OpContent::SeqDelete { spans }, next) => {
                if let OpContent::SeqDelete { spans: more } = &next.content {
                    push_runs(spans, more.iter().copied());
                }
            }
            (OpContent::TextInsert { text, .. }, next) => {
                if let OpContent::TextInsert { text: more, .. } = &next.content {
                    text.push_str(more);
                }
            }
            (
                OpContent::ListInsert { items, .. } | OpContent::MovableInsert { items, .. },
                Cow::Owned(Op {
                    content:
                        OpContent::ListInsert { items: mut more, .. }
                        | OpContent::MovableInsert { items: mut more, .. },
                    ..
                }),
            ) => items.append(&mut more),
            (
                OpContent::ListInsert { items, .. } | OpContent::MovableInsert { items, .. },
                Cow::Borrowed(Op {
                    content:
                        OpContent::ListInsert { items: more, .. } | OpContent::MovableInsert { items: more, .. },
                    ..
                }),
            ) => items.extend_from_slice(more),
            // Every pair `joins` admits is matched above.
            _ => {}
        }
        Ok(())
    }
}
