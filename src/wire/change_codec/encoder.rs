//! The sending side: writes each change as its departure from the shared context.

use std::collections::HashMap;

use super::bytes::{kind_code, write_bytes, write_element, write_value, write_varint, zigzag};
use super::context::{Author, Context, PeerState};
use super::*;
use crate::doc::change::Change;
use crate::doc::clock::Timestamp;
use crate::doc::deletion::encoded_len;
use crate::doc::id::{Counter, OpId, PeerId};
use crate::doc::op::{ContainerId, Op, OpContent};
use crate::doc::types::sequence::{Anchor, Side};

/// Encodes the changes one side sends on one connection, in the layout of the
/// [module docs](super); the other side decodes them with one [`ChangeDecoder`], batch by
/// batch in the same order.
#[derive(Debug, Default)]
pub(crate) struct ChangeEncoder {
    context: Context,
    /// Table indices by peer and by container, for the refs of what is not predicted.
    peer_index: HashMap<PeerId, usize>,
    container_index: HashMap<ContainerId, usize>,
}

impl ChangeEncoder {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Append `changes` (valid changes, as a document produces them) to `out` as one batch.
    /// The batch has no length or count of its own: the message carrying it delimits it.
    pub(crate) fn encode(&mut self, changes: &[Change], out: &mut Vec<u8>) {
        for change in changes {
            self.change(change, out);
        }
    }

    fn change(&mut self, change: &Change, out: &mut Vec<u8>) {
        let flags_at = out.len();
        out.push(0);
        let mut flags = 0;
        let peer = change.id.peer;
        let author = match self.context.prev_author {
            Some(prev) if prev.peer == peer => {
                flags |= SAME_AUTHOR;
                prev
            }
            _ => self.peer_ref(peer, out),
        };
        let mut state = self.context.state_of(author);

        let continues = state.last_id().is_some_and(|last| {
            change.id.counter == state.end
                && change.lamport == state.lamport_end
                && change.deps.ids() == [last]
        });
        if continues {
            flags |= CONTINUES;
        } else {
            let counter = change.id.counter;
            write_varint(out, zigzag(i64::from(counter) - i64::from(state.end)));
            let own_previous = counter.checked_sub(1).map(|c| OpId::new(peer, c));
            if own_previous.is_some_and(|p| change.deps.ids() == [p]) {
                write_varint(out, 0);
            } else {
                write_varint(out, change.deps.ids().len() as u64 + 1);
                let base = (peer, i64::from(counter) - 1);
                for &dep in change.deps.ids() {
                    self.id_ref(base, dep, out);
                }
            }
            let reference = self.context.lamport_reference(&state);
            write_varint(out, zigzag(i64::from(change.lamport) - i64::from(reference)));
        }

        let mode = timestamp(self.context.timestamp_reference(&state), change.timestamp, out);
        flags |= mode << TIMESTAMP_SHIFT;

        if change.ops.len() == 1 {
            flags |= ONE_OP;
        } else {
            write_varint(out, change.ops.len() as u64);
        }
        let mut counter = change.id.counter;
        for op in &change.ops {
            let id = OpId::new(peer, counter);
            self.op(op, id, &mut state, out);
            counter = counter.wrapping_add(op.content.id_len() as Counter);
        }
        out[flags_at] = flags;
        self.context.finish_change(
            author,
            state,
            change.id.counter,
            change.len,
            change.lamport,
            change.timestamp,
        );
    }

    fn op(&mut self, op: &Op, id: OpId, state: &mut PeerState, out: &mut Vec<u8>) {
        let header_at = out.len();
        out.push(0);
        let mut header = op_kind_code(&op.content);
        let container = match state.container {
            Some(i) if self.context.containers.get(i) == Some(&op.container) => {
                header |= SAME_CONTAINER;
                Some(i)
            }
            _ => self.container_ref(&op.container, out),
        };
        let own = (id.peer, i64::from(id.counter));
        match &op.content {
            OpContent::TextInsert { anchor, text } => {
                header |= self.anchor(anchor, id, state, out);
                let mut chars = text.chars();
                if chars.next().is_some() && chars.next().is_none() {
                    header |= ONE_CHAR;
                    out.extend_from_slice(text.as_bytes());
                } else {
                    write_bytes(out, text.as_bytes());
                }
            }
            OpContent::ListInsert { anchor, items } | OpContent::MovableInsert { anchor, items } => {
                header |= self.anchor(anchor, id, state, out);
                write_varint(out, items.len() as u64);
                for item in items {
                    write_element(out, Some(item));
                }
            }
            OpContent::SeqDelete { spans } => {
                let predicted = state.predicted_delete(id.counter);
                let single = matches!(spans.as_slice(), [run] if run.span.len == 1);
                if single {
                    header |= DELETE_SINGLE;
                } else {
                    write_varint(out, spans.len() as u64);
                }
                let mut base = predicted;
                for (i, run) in spans.iter().enumerate() {
                    // From the id removed first, where the prediction points.
                    let first = run.first();
                    let start = (first.peer, i64::from(first.counter));
                    if i == 0 && start == predicted {
                        header |= DELETE_PREDICTED;
                    } else {
                        self.id_ref(base, first, out);
                    }
                    if !single {
                        write_varint(out, encoded_len(run));
                    }
                    base = start;
                }
            }
            OpContent::MovableMove { elem, anchor } => {
                self.id_ref(own, *elem, out);
                header |= self.anchor(anchor, id, state, out);
            }
            OpContent::MovableSet { elem, value } => {
                self.id_ref(own, *elem, out);
                write_element(out, Some(value));
            }
            OpContent::MovableDelete { elems } => self.ids(own, elems, out),
            OpContent::MapSet { key, value } => {
                write_value(out, key);
                write_element(out, value.as_ref());
            }
            OpContent::RegisterSet { value } => write_element(out, Some(value)),
            OpContent::CounterAdd { delta } => write_varint(out, zigzag(*delta)),
            OpContent::SetAdd { value } => write_value(out, value),
            OpContent::SetRemove { value, tags } => {
                write_value(out, value);
                self.ids(own, tags, out);
            }
        }
        out[header_at] = header;
        state.record_op(id, &op.content, container);
    }

    /// Write the payload of `anchor` and return its form, in the header's bits.
    fn anchor(&mut self, anchor: &Anchor, id: OpId, state: &PeerState, out: &mut Vec<u8>) -> u8 {
        let previous = id.counter.checked_sub(1).map(|c| OpId::new(id.peer, c));
        let base = (id.peer, i64::from(id.counter) - 1);
        let form = if state.edit.cursor == Some(*anchor) {
            ANCHOR_PREDICTED
        } else {
            match (anchor.parent, anchor.side) {
                (Some(parent), Side::Right) if Some(parent) == previous => ANCHOR_AFTER_PREVIOUS,
                (Some(parent), Side::Right) => {
                    self.id_ref(base, parent, out);
                    ANCHOR_AFTER
                }
                (parent, side) => {
                    let mut tag = if side == Side::Right { ANCHOR_RIGHT } else { 0 };
                    if parent.is_some() {
                        tag |= ANCHOR_HAS_PARENT;
                    }
                    out.push(tag);
                    if let Some(parent) = parent {
                        self.id_ref(base, parent, out);
                    }
                    ANCHOR_OTHER
                }
            }
        };
        form << ANCHOR_SHIFT
    }

    fn ids(&mut self, first_base: (PeerId, i64), ids: &[OpId], out: &mut Vec<u8>) {
        write_varint(out, ids.len() as u64);
        let mut base = first_base;
        for &id in ids {
            self.id_ref(base, id, out);
            base = (id.peer, i64::from(id.counter));
        }
    }

    fn id_ref(&mut self, (peer, counter): (PeerId, i64), id: OpId, out: &mut Vec<u8>) {
        if id.peer == peer {
            // Counters and bases lie within ±2^33 of each other, so the shift cannot overflow.
            write_varint(out, zigzag(counter - i64::from(id.counter)) << 1);
        } else {
            write_varint(out, u64::from(id.counter) << 1 | 1);
            self.peer_ref(id.peer, out);
        }
    }

    fn peer_ref(&mut self, peer: PeerId, out: &mut Vec<u8>) -> Author {
        if let Some(&index) = self.peer_index.get(&peer) {
            write_varint(out, REF_INDEX + index as u64);
            return Author { peer, index: Some(index) };
        }
        if self.context.peers.len() >= TABLE_PEERS {
            write_varint(out, REF_LITERAL);
            write_varint(out, peer.get());
            return Author { peer, index: None };
        }
        write_varint(out, REF_NEW);
        write_varint(out, peer.get());
        let index = self.context.peers.len();
        self.context.peers.push(PeerState::new(peer));
        self.peer_index.insert(peer, index);
        Author { peer, index: Some(index) }
    }

    /// Write a container ref; returns the container's table index if it has one.
    fn container_ref(&mut self, id: &ContainerId, out: &mut Vec<u8>) -> Option<usize> {
        if let Some(&index) = self.container_index.get(id) {
            write_varint(out, REF_INDEX + index as u64);
            return Some(index);
        }
        let name_len = match id {
            ContainerId::Root { name, .. } => name.len(),
            ContainerId::Child { .. } => 0,
        };
        let intern = self.context.containers.len() < TABLE_CONTAINERS
            && self.context.name_bytes + name_len <= TABLE_NAME_BYTES;
        write_varint(out, if intern { REF_NEW } else { REF_LITERAL });
        match id {
            ContainerId::Root { name, kind } => {
                out.push(kind_code(*kind));
                write_bytes(out, name.as_bytes());
            }
            ContainerId::Child { id: owner, kind } => {
                out.push(kind_code(*kind) | CHILD_CONTAINER);
                self.peer_ref(owner.peer, out);
                write_varint(out, u64::from(owner.counter));
            }
        }
        if !intern {
            return None;
        }
        let index = self.context.containers.len();
        self.context.containers.push(id.clone());
        self.context.name_bytes += name_len;
        self.container_index.insert(id.clone(), index);
        Some(index)
    }
}

/// Write the payload of timestamp `t` against the reference `r`; returns the mode.
fn timestamp(r: Timestamp, t: Timestamp, out: &mut Vec<u8>) -> u8 {
    if t == r {
        TS_SAME
    } else if r.as_raw().checked_add(1) == Some(t.as_raw()) {
        TS_NEXT
    } else if t.logical() == 0 && t.wall_ms() >= r.wall_ms() {
        write_varint(out, t.wall_ms() - r.wall_ms());
        TS_FORWARD
    } else {
        // Wall times have 48 bits, so the difference fits an i64.
        write_varint(out, zigzag(t.wall_ms() as i64 - r.wall_ms() as i64));
        write_varint(out, u64::from(t.logical()));
        TS_EXPLICIT
    }
}

/// The op kind's number in the op header.
pub(super) fn op_kind_code(content: &OpContent) -> u8 {
    match content {
        OpContent::TextInsert { .. } => TEXT_INSERT,
        OpContent::ListInsert { .. } => LIST_INSERT,
        OpContent::SeqDelete { .. } => SEQ_DELETE,
        OpContent::MovableInsert { .. } => MOVABLE_INSERT,
        OpContent::MovableMove { .. } => MOVABLE_MOVE,
        OpContent::MovableSet { .. } => MOVABLE_SET,
        OpContent::MovableDelete { .. } => MOVABLE_DELETE,
        OpContent::MapSet { .. } => MAP_SET,
        OpContent::RegisterSet { .. } => REGISTER_SET,
        OpContent::CounterAdd { .. } => COUNTER_ADD,
        OpContent::SetAdd { .. } => SET_ADD,
        OpContent::SetRemove { .. } => SET_REMOVE,
    }
}
