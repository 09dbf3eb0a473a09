//! The receiving side: rebuilds changes from their departures from the shared context.

use smallvec::SmallVec;

use super::bytes::{
    Budget, Reader, kind_from_code, malformed, read_element, read_one_char, read_present_element, read_str,
    read_value, unzigzag,
};
use super::context::{Author, Context, PeerState};
use super::*;
use crate::DecodeError;
use crate::doc::change::Change;
use crate::doc::clock::Timestamp;
use crate::doc::deletion::{DeleteRuns, decoded_run, push_runs};
use crate::doc::id::{Counter, OpId, PeerId};
use crate::doc::op::{ContainerId, Element, Op, OpContent};
use crate::doc::types::sequence::{Anchor, Side};
use crate::doc::version::Frontier;

/// Decodes, batch by batch and in order, what the other side's [`ChangeEncoder`] wrote.
///
/// Never panics on any input and allocates only within its [`ChangeCodecLimits`]. After an
/// error its context may differ from the sender's: close the connection.
#[derive(Clone, Debug, Default)]
pub(crate) struct ChangeDecoder {
    limits: ChangeCodecLimits,
    context: Context,
}

/// `base + delta` as a counter or Lamport time, refusing anything outside `u32`.
fn offset(base: u32, delta: i64) -> Result<u32, DecodeError> {
    i64::from(base)
        .checked_add(delta)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| malformed("counter or Lamport time out of range"))
}

impl ChangeDecoder {
    pub(crate) fn new(limits: ChangeCodecLimits) -> Self {
        ChangeDecoder { limits, context: Context::default() }
    }

    /// Decode one batch: every byte of `bytes` belongs to it. The changes come out with
    /// their derived fields, as the document's own decoders build them.
    pub(crate) fn decode(&mut self, bytes: &[u8]) -> Result<Vec<Change>, DecodeError> {
        let mut input = Reader::new(bytes);
        let mut budget = Budget::new(&self.limits);
        let mut changes = Vec::new();
        while !input.is_empty() {
            budget.change()?;
            changes.push(self.change(&mut input, &mut budget)?);
        }
        Ok(changes)
    }

    fn change(&mut self, input: &mut Reader<'_>, budget: &mut Budget) -> Result<Change, DecodeError> {
        let flags = input.u8()?;
        if flags & CHANGE_RESERVED != 0 {
            return Err(DecodeError::UnknownFlags(flags));
        }
        let author = if flags & SAME_AUTHOR != 0 {
            self.context.prev_author.ok_or_else(|| malformed("no previous author"))?
        } else {
            self.peer_ref(input)?
        };
        let peer = author.peer;
        let mut state = self.context.state_of(author);

        let (counter, deps, lamport) = if flags & CONTINUES != 0 {
            let last = state.last_id().ok_or_else(|| malformed("no previous change to continue"))?;
            (state.end, Frontier::from(last), state.lamport_end)
        } else {
            let counter = offset(state.end, input.signed()?)?;
            let deps = match input.varint()? {
                0 => {
                    let previous =
                        counter.checked_sub(1).ok_or_else(|| malformed("implicit dependency of 0"))?;
                    Frontier::from(OpId::new(peer, previous))
                }
                n => {
                    let n = usize::try_from(n - 1).map_err(|_| DecodeError::Truncated)?;
                    if n > input.remaining() {
                        return Err(DecodeError::Truncated);
                    }
                    budget.items(n)?;
                    let base = (peer, i64::from(counter) - 1);
                    let mut ids: SmallVec<[OpId; 2]> = SmallVec::with_capacity(n);
                    for _ in 0..n {
                        ids.push(self.id_ref(input, base)?);
                    }
                    Frontier::from_ids(ids)
                }
            };
            let lamport = offset(self.context.lamport_reference(&state), input.signed()?)?;
            (counter, deps, lamport)
        };

        let reference = self.context.timestamp_reference(&state);
        let timestamp = read_timestamp(input, (flags >> TIMESTAMP_SHIFT) & TIMESTAMP_MASK, reference)?;

        let op_count = if flags & ONE_OP != 0 { 1 } else { input.count(1)? };
        budget.ops(op_count)?;
        let mut ops = Vec::with_capacity(op_count);
        let mut op_counter = counter;
        for _ in 0..op_count {
            let id = OpId::new(peer, op_counter);
            let op = self.op(input, budget, id, &mut state)?;
            op_counter = Counter::try_from(op.content.id_len())
                .ok()
                .and_then(|len| op_counter.checked_add(len))
                .ok_or_else(|| malformed("op ids overflow the counter space"))?;
            ops.push(op);
        }

        let mut change = Change {
            id: OpId::new(peer, counter),
            deps,
            lamport,
            timestamp,
            ops,
            len: 0,
            uses_timestamp: false,
        };
        change.validate_shape().map_err(malformed)?;
        self.context.finish_change(author, state, counter, change.len, lamport, timestamp);
        Ok(change)
    }

    fn op(
        &mut self,
        input: &mut Reader<'_>,
        budget: &mut Budget,
        id: OpId,
        state: &mut PeerState,
    ) -> Result<Op, DecodeError> {
        let header = input.u8()?;
        let kind = header & KIND_MASK;
        // Bits 5-7 that the kind gives a meaning to; the rest must be zero.
        let defined = match kind {
            TEXT_INSERT => 0xe0,
            LIST_INSERT | MOVABLE_INSERT | MOVABLE_MOVE | SEQ_DELETE => 0x60,
            _ => 0,
        };
        if header & 0xe0 & !defined != 0 {
            return Err(DecodeError::UnknownFlags(header));
        }
        let (container, index) = if header & SAME_CONTAINER != 0 {
            let index = state.container.ok_or_else(|| malformed("no previous container"))?;
            let container =
                self.context.containers.get(index).ok_or_else(|| malformed("no previous container"))?;
            (container.clone(), Some(index))
        } else {
            self.container_ref(input, budget)?
        };
        let form = (header >> ANCHOR_SHIFT) & ANCHOR_MASK;
        let own = (id.peer, i64::from(id.counter));
        let content = match kind {
            TEXT_INSERT => {
                let anchor = self.anchor(input, form, id, state)?;
                let text = if header & ONE_CHAR != 0 {
                    let text = read_one_char(input)?;
                    budget.text(text.len())?;
                    text
                } else {
                    read_str(input, budget)?
                };
                OpContent::TextInsert { anchor, text: text.to_owned() }
            }
            LIST_INSERT | MOVABLE_INSERT => {
                let anchor = self.anchor(input, form, id, state)?;
                let n = input.count(1)?;
                budget.items(n)?;
                let mut items: Vec<Element> = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(read_present_element(input, budget)?);
                }
                if kind == LIST_INSERT {
                    OpContent::ListInsert { anchor, items }
                } else {
                    OpContent::MovableInsert { anchor, items }
                }
            }
            SEQ_DELETE => OpContent::SeqDelete { spans: self.spans(input, budget, header, id, state)? },
            MOVABLE_MOVE => {
                let elem = self.id_ref(input, own)?;
                OpContent::MovableMove { elem, anchor: self.anchor(input, form, id, state)? }
            }
            MOVABLE_SET => {
                let elem = self.id_ref(input, own)?;
                OpContent::MovableSet { elem, value: read_present_element(input, budget)? }
            }
            MOVABLE_DELETE => OpContent::MovableDelete { elems: self.ids(input, budget, own)? },
            MAP_SET => {
                let key = read_value(input, budget)?;
                OpContent::MapSet { key, value: read_element(input, budget)? }
            }
            REGISTER_SET => OpContent::RegisterSet { value: read_present_element(input, budget)? },
            COUNTER_ADD => OpContent::CounterAdd { delta: input.signed()? },
            SET_ADD => OpContent::SetAdd { value: read_value(input, budget)? },
            SET_REMOVE => {
                let value = read_value(input, budget)?;
                OpContent::SetRemove { value, tags: self.ids(input, budget, own)? }
            }
            _ => return Err(malformed("unknown op kind")),
        };
        state.record_op(id, &content, index);
        Ok(Op { container, content })
    }

    fn spans(
        &mut self,
        input: &mut Reader<'_>,
        budget: &mut Budget,
        header: u8,
        id: OpId,
        state: &PeerState,
    ) -> Result<DeleteRuns, DecodeError> {
        let predicted = state.predicted_delete(id.counter);
        let single = header & DELETE_SINGLE != 0;
        let n = if single { 1 } else { input.count(1)? };
        if n == 0 && header & DELETE_PREDICTED != 0 {
            return Err(malformed("predicted start of a delete without spans"));
        }
        budget.items(n)?;
        let mut spans = DeleteRuns::with_capacity(n);
        let mut base = predicted;
        for i in 0..n {
            let first = if i == 0 && header & DELETE_PREDICTED != 0 {
                let counter =
                    u32::try_from(predicted.1).map_err(|_| malformed("no delete to predict from"))?;
                OpId::new(predicted.0, counter)
            } else {
                self.id_ref(input, base)?
            };
            let len_and_direction = if single { 1 << 1 } else { input.varint()? };
            let run = decoded_run(first.peer, first.counter, len_and_direction)
                .ok_or_else(|| malformed("delete run out of range"))?;
            // Joined as the encoder would have, so that each deletion has one form.
            push_runs(&mut spans, [run]);
            base = (first.peer, i64::from(first.counter));
        }
        Ok(spans)
    }

    fn anchor(
        &mut self,
        input: &mut Reader<'_>,
        form: u8,
        id: OpId,
        state: &PeerState,
    ) -> Result<Anchor, DecodeError> {
        let base = (id.peer, i64::from(id.counter) - 1);
        Ok(match form {
            ANCHOR_PREDICTED => state.edit.cursor.ok_or_else(|| malformed("no anchor to predict from"))?,
            ANCHOR_AFTER_PREVIOUS => {
                let previous = id.counter.checked_sub(1).ok_or_else(|| malformed("implicit anchor of 0"))?;
                Anchor::after(OpId::new(id.peer, previous))
            }
            ANCHOR_AFTER => Anchor::after(self.id_ref(input, base)?),
            _ => {
                let tag = input.u8()?;
                if tag & !(ANCHOR_RIGHT | ANCHOR_HAS_PARENT) != 0 {
                    return Err(malformed("unknown anchor tag"));
                }
                let side = if tag & ANCHOR_RIGHT != 0 { Side::Right } else { Side::Left };
                let parent =
                    if tag & ANCHOR_HAS_PARENT != 0 { Some(self.id_ref(input, base)?) } else { None };
                Anchor { parent, side }
            }
        })
    }

    fn ids(
        &mut self,
        input: &mut Reader<'_>,
        budget: &mut Budget,
        first_base: (PeerId, i64),
    ) -> Result<Vec<OpId>, DecodeError> {
        let n = input.count(1)?;
        budget.items(n)?;
        let mut ids = Vec::with_capacity(n);
        let mut base = first_base;
        for _ in 0..n {
            let id = self.id_ref(input, base)?;
            ids.push(id);
            base = (id.peer, i64::from(id.counter));
        }
        Ok(ids)
    }

    fn id_ref(
        &mut self,
        input: &mut Reader<'_>,
        (peer, counter): (PeerId, i64),
    ) -> Result<OpId, DecodeError> {
        let h = input.varint()?;
        if h & 1 == 0 {
            let counter = counter
                .checked_sub(unzigzag(h >> 1))
                .and_then(|c| u32::try_from(c).ok())
                .ok_or_else(|| malformed("id counter out of range"))?;
            Ok(OpId::new(peer, counter))
        } else {
            let counter = u32::try_from(h >> 1).map_err(|_| malformed("id counter out of range"))?;
            Ok(OpId::new(self.peer_ref(input)?.peer, counter))
        }
    }

    fn peer_ref(&mut self, input: &mut Reader<'_>) -> Result<Author, DecodeError> {
        match input.varint()? {
            REF_NEW => {
                let peer = PeerId::new(input.varint()?);
                let index = self.context.peers.len();
                if index >= self.limits.max_peers {
                    return Err(DecodeError::TooLarge {
                        size: index as u64 + 1,
                        limit: self.limits.max_peers as u64,
                    });
                }
                self.context.peers.push(PeerState::new(peer));
                Ok(Author { peer, index: Some(index) })
            }
            REF_LITERAL => Ok(Author { peer: PeerId::new(input.varint()?), index: None }),
            v => {
                let index =
                    usize::try_from(v - REF_INDEX).map_err(|_| malformed("peer index out of range"))?;
                let state =
                    self.context.peers.get(index).ok_or_else(|| malformed("peer index out of range"))?;
                Ok(Author { peer: state.peer, index: Some(index) })
            }
        }
    }

    fn container_ref(
        &mut self,
        input: &mut Reader<'_>,
        budget: &mut Budget,
    ) -> Result<(ContainerId, Option<usize>), DecodeError> {
        let v = input.varint()?;
        if v >= REF_INDEX {
            let index =
                usize::try_from(v - REF_INDEX).map_err(|_| malformed("container index out of range"))?;
            let container = self
                .context
                .containers
                .get(index)
                .ok_or_else(|| malformed("container index out of range"))?;
            return Ok((container.clone(), Some(index)));
        }
        let tag = input.u8()?;
        let kind = kind_from_code(tag & !CHILD_CONTAINER)?;
        let (container, name_len) = if tag & CHILD_CONTAINER == 0 {
            let name = read_str(input, budget)?;
            (ContainerId::Root { name: name.into(), kind }, name.len())
        } else {
            let owner = self.peer_ref(input)?.peer;
            (ContainerId::Child { id: OpId::new(owner, input.u32()?), kind }, 0)
        };
        if v == REF_LITERAL {
            return Ok((container, None));
        }
        let index = self.context.containers.len();
        if index >= self.limits.max_containers {
            let limit = self.limits.max_containers as u64;
            return Err(DecodeError::TooLarge { size: index as u64 + 1, limit });
        }
        let name_bytes = self.context.name_bytes.saturating_add(name_len);
        if name_bytes > self.limits.max_container_name_bytes {
            let limit = self.limits.max_container_name_bytes as u64;
            return Err(DecodeError::TooLarge { size: name_bytes as u64, limit });
        }
        self.context.name_bytes = name_bytes;
        self.context.containers.push(container.clone());
        Ok((container, Some(index)))
    }
}

fn read_timestamp(input: &mut Reader<'_>, mode: u8, r: Timestamp) -> Result<Timestamp, DecodeError> {
    let out_of_range = || malformed("timestamp out of range");
    Ok(match mode {
        TS_SAME => r,
        TS_NEXT => Timestamp::from_raw(r.as_raw().checked_add(1).ok_or_else(out_of_range)?),
        TS_FORWARD => {
            let wall = r.wall_ms().checked_add(input.varint()?).ok_or_else(out_of_range)?;
            Timestamp::new(wall, 0).ok_or_else(out_of_range)?
        }
        _ => {
            // Wall times have 48 bits: as an i64 they cannot overflow an addition of a
            // checked i64.
            let wall = (r.wall_ms() as i64).checked_add(input.signed()?).ok_or_else(out_of_range)?;
            let wall = u64::try_from(wall).map_err(|_| out_of_range())?;
            let logical = u16::try_from(input.varint()?).map_err(|_| out_of_range())?;
            Timestamp::new(wall, logical).ok_or_else(out_of_range)?
        }
    })
}
