//! A compact columnar encoding of a run of changes (a change export or a document's history).
//!
//! Instead of writing change after change, the encoder writes one *column* per field: all the
//! peers of all changes, then all their counters, and so on, and per op all containers, all op
//! kinds, all anchors, all inserted text. A history typed by one person then consists of long
//! runs of equal values (same peer, counter continuing, deps = the previous change, one op per
//! change, anchor = the previous character), which run-length encoding reduces to a few bytes,
//! and the remaining columns (the text, the anchors after cursor jumps) DEFLATE well.
//!
//! # Layout
//!
//! All integers are unsigned LEB128 varints unless said otherwise; *zigzag* marks a signed
//! value mapped to unsigned (`0, -1, 1, -2, ..` → `0, 1, 2, 3, ..`).
//!
//! ```text
//! u8        format version (2; version 1 gave a sequence delete one id, not one per element)
//! varint    number of changes
//! varint    number of peers P, then P × varint peer id        (the peer table; no duplicates)
//! varint    number of containers C, then per container:        (the container table)
//!           u8 kind (0 text, 1 list, 2 movable list, 3 map, 4 register, 5 counter, 6 set)
//!              | 8 for a child container;
//!           root:  varint byte length + UTF-8 name
//!           child: varint peer index + varint counter
//! 20 column blocks, in the order of the table below; nothing after them
//! ```
//!
//! A column block is `varint(stored_len << 1 | deflated)`, then if `deflated` a
//! `varint(raw_len)`, then `stored_len` bytes (raw DEFLATE, RFC 1951, when flagged; the encoder
//! keeps DEFLATE only where it makes the block smaller). A raw *RLE* column is a sequence of
//! runs: a zigzag header `n > 0` followed by one varint repeated `n` times, or `n < 0` followed
//! by `-n` literal varints. Every column must be consumed exactly.
//!
//! The columns, in order. *Per* says which item contributes one value (explicit deps, spans
//! and anchors are read only where the kind or form column says they exist). Most values are
//! stored as the difference from a *prediction* that encoder and decoder both derive from the
//! changes and ops already seen in the same buffer, per author (`predict.rs`); one person
//! typing is then predicted exactly and every column is a single run.
//!
//! ```text
//!  #  column          per              value
//!  0  change peer     change           RLE peer index
//!  1  counter         change           RLE zigzag(counter - end of the author's previous change, or 0)
//!  2  deps mode       change           RLE: 0 = deps are exactly [(author, counter - 1)];
//!                                           n + 1 = n explicit deps follow in 3 and 4
//!  3  dep peer        explicit dep     RLE peer index
//!  4  dep counter     explicit dep     RLE zigzag(end of that peer's latest change so far - 1 - counter)
//!  5  lamport         change           RLE zigzag(lamport - expected); expected = max(the author's
//!                                           previous Lamport end, 1 + Lamport of each dep in the buffer)
//!  6  timestamp       change           RLE zigzag(timestamp - previous change's timestamp), wrapping u64
//!  7  op count        change           RLE
//!  8  container       op               RLE container index
//!  9  op kind         op               RLE: 0 text insert, 1 list insert, 2 sequence delete,
//!                                           3 movable insert, 4 move, 5 movable set, 6 movable delete,
//!                                           7 map set, 8 register set, 9 counter add, 10 set add,
//!                                           11 set remove
//! 10  anchor          insert or move   RLE: 0 = the predicted anchor (right of the author's last
//!                                           inserted element, or left of the first element of the
//!                                           author's last delete); otherwise 2 + 2 * form + side
//!                                           (side 0 left, 1 right; form 0 = parent is the op's own
//!                                           id - 1, 1 = the root, 2 = explicit in 11 and 12)
//! 11  anchor peer     explicit anchor  RLE peer index
//! 12  anchor counter  explicit anchor  RLE zigzag(op counter - parent counter)
//! 13  text length     text insert      RLE number of chars
//! 14  text            text insert      the inserted UTF-8 text, concatenated (no lengths, no runs)
//! 15  delete spans    sequence delete  RLE number of runs (an op takes one id per element removed,
//!                                           its i-th id naming the i-th element of its runs)
//! 16  span peer       span             RLE peer index
//! 17  span start      span             RLE zigzag(first removed counter - prediction); for an op's
//!                                           first run the prediction is the next id beyond the
//!                                           one the author's previous delete removed last (up
//!                                           after a forward run, else down) if that delete was
//!                                           the author's previous op, else (op counter - 1); for
//!                                           later runs the previous run's first removed id
//! 18  span length     span             RLE len << 1 | backward (removed first, first - 1, ...)
//! 19  generic         other payloads   tagged binary (`values.rs`): list and movable items, moved and
//!                                           set elements, map keys and values, register values,
//!                                           counter deltas, set members and tags; op ids as
//!                                           (peer index, counter)
//! ```
//!
//! Decoding never trusts a declared size: lengths are checked against the remaining input,
//! runs are expanded lazily, indices and arithmetic are checked, and every change, op, string
//! and value is charged at its in-memory size against `max_decoded_bytes` before it is built
//! (DEFLATE'd columns are charged their raw length before inflating). Decoded changes pass
//! [`Change::validate_shape`], which also derives their length.

// Until the codec uses this format, only the tests call it.

mod predict;
mod values;
mod wire;

// Shared with the wire's change codec, which writes kinds and signed numbers the same way.
pub(crate) use values::{kind_code, kind_from_code, value_tags, write_bytes, write_element, write_value};
// The state section of an encoded document writes its columns the same way.
pub(crate) use wire::{Budget, read_column, write_column};

#[cfg(test)]
pub(crate) mod tests;

use std::borrow::Cow;
use std::collections::HashMap;
use std::mem::size_of;

use smallvec::SmallVec;

use self::predict::History;
use self::values::{GenericReader, GenericWriter};
use self::wire::{Reader, RleReader, RleWriter, malformed, write_varint};
use super::change::Change;
use super::clock::Timestamp;
use super::deletion::{DeleteRun, DeleteRuns, decoded_run, encoded_len, push_runs};
use super::id::{Counter, OpId, PeerId};
use super::op::{ContainerId, Op, OpContent, ops_id_len};
use super::types::sequence::{Anchor, Side};
use super::version::Frontier;
use crate::DecodeError;

const FORMAT_VERSION: u8 = 2;
const COLUMN_COUNT: usize = 20;
const CHILD_CONTAINER: u8 = 8;

// Op kind tags (column 9).
const TEXT_INSERT: u64 = 0;
const LIST_INSERT: u64 = 1;
const SEQ_DELETE: u64 = 2;
const MOVABLE_INSERT: u64 = 3;
const MOVABLE_MOVE: u64 = 4;
const MOVABLE_SET: u64 = 5;
const MOVABLE_DELETE: u64 = 6;
const MAP_SET: u64 = 7;
const REGISTER_SET: u64 = 8;
const COUNTER_ADD: u64 = 9;
const SET_ADD: u64 = 10;
const SET_REMOVE: u64 = 11;

// Anchor column values: the predicted anchor, or `ANCHOR_OTHER + (form << 1 | side)`.
const ANCHOR_PREDICTED: u64 = 0;
const ANCHOR_OTHER: u64 = 2;
const FORM_PREVIOUS: u64 = 0;
const FORM_ROOT: u64 = 1;
const FORM_EXPLICIT: u64 = 2;

/// Encode `changes` (in causal order, as the change log holds them) in the columnar format.
pub(crate) fn encode_changes(changes: &[&Change]) -> Vec<u8> {
    encode_changes_eliding(changes, &|_, _| false)
}

/// [`encode_changes`], leaving out of the text column every inserted character that `held`
/// (given its text and its id) says is kept elsewhere (an encoded document's state section holds the visible
/// text). [`decode_changes_filling`] puts them back.
pub(crate) fn encode_changes_eliding(changes: &[&Change], held: &Held<'_>) -> Vec<u8> {
    let mut encoder = Encoder { held: Some(held), ..Encoder::default() };
    for change in changes {
        encoder.change(change);
    }
    encoder.finish(changes.len())
}

/// Decode what [`encode_changes`] produced: the same changes, in the same order, each with
/// its derived length. Fails, without panicking or allocating more than `max_decoded_bytes`
/// (approximately, at in-memory sizes), on any input that is not such an encoding.
pub(crate) fn decode_changes(bytes: &[u8], max_decoded_bytes: usize) -> Result<Vec<Change>, DecodeError> {
    decode_changes_filling(bytes, max_decoded_bytes, &|_| None, 0)
}

/// Decode what [`encode_changes_eliding`] produced: an inserted character for which `held`
/// gives one is taken from it, the others from the text column. `held` gives at most
/// `held_count` characters, which bounds how long a text the input can claim.
pub(crate) fn decode_changes_filling(
    bytes: &[u8],
    max_decoded_bytes: usize,
    held: &dyn Fn(OpId) -> Option<char>,
    held_count: usize,
) -> Result<Vec<Change>, DecodeError> {
    let mut budget = Budget::new(max_decoded_bytes);
    let mut input = Reader::new(bytes);
    let version = input.u8()?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let change_count = usize::try_from(input.varint()?).map_err(|_| malformed("too many changes"))?;

    // The tables and column list of a message (one or two peers and containers) stay on the
    // stack; only a long history spills them to the heap.
    let peer_count = input.count(1)?;
    let mut peers: SmallVec<[PeerId; 4]> = SmallVec::with_capacity(peer_count);
    for _ in 0..peer_count {
        peers.push(PeerId::new(input.varint()?));
    }
    let duplicate = if peers.len() <= LINEAR_LOOKUP {
        peers.iter().enumerate().any(|(i, p)| peers[..i].contains(p))
    } else {
        let mut sorted = peers.to_vec();
        sorted.sort_unstable();
        sorted.windows(2).any(|w| w[0] == w[1])
    };
    if duplicate {
        return Err(malformed("duplicate peer"));
    }

    let container_count = input.count(2)?;
    let mut containers: SmallVec<[ContainerId; 2]> = SmallVec::with_capacity(container_count);
    for _ in 0..container_count {
        let tag = input.u8()?;
        let kind = kind_from_code(tag & !CHILD_CONTAINER)?;
        containers.push(if tag & CHILD_CONTAINER == 0 {
            let name = input.str()?;
            budget.charge(name.len())?;
            ContainerId::Root { name: name.into(), kind }
        } else {
            let peer = usize::try_from(input.varint()?).ok().and_then(|i| peers.get(i));
            let peer = *peer.ok_or_else(|| malformed("peer index out of range"))?;
            ContainerId::Child { id: OpId::new(peer, input.u32()?), kind }
        });
    }

    let mut blocks: [Cow<'_, [u8]>; COLUMN_COUNT] = Default::default();
    for block in &mut blocks {
        *block = read_column(&mut input, &mut budget)?;
    }
    if !input.is_empty() {
        return Err(malformed("trailing bytes"));
    }
    let mut decoder = Decoder::new(&blocks, &peers, &containers, budget, held, held_count)?;
    // Capacity only as far as the input size can justify; the budget bounds the rest.
    let mut changes = Vec::with_capacity(change_count.min(bytes.len()));
    for _ in 0..change_count {
        changes.push(decoder.change()?);
    }
    decoder.finish()?;
    Ok(changes)
}

/// Up to this many entries, the encoder's peer and container tables are searched linearly
/// (no hashing, no allocation: a message holds one or two of each); beyond it a hash index is
/// built once and kept up to date.
const LINEAR_LOOKUP: usize = 8;

/// The peers of a buffer, each once, in order of first appearance.
#[derive(Debug, Default)]
pub(super) struct PeerTable {
    /// Empty while the table is small enough to scan.
    index: HashMap<PeerId, usize>,
    peers: SmallVec<[PeerId; 4]>,
}

impl PeerTable {
    pub(super) fn intern(&mut self, peer: PeerId) -> usize {
        if self.index.is_empty() {
            if let Some(at) = self.peers.iter().position(|&p| p == peer) {
                return at;
            }
            self.peers.push(peer);
            if self.peers.len() > LINEAR_LOOKUP {
                self.index = self.peers.iter().enumerate().map(|(i, &p)| (p, i)).collect();
            }
            return self.peers.len() - 1;
        }
        *self.index.entry(peer).or_insert_with(|| {
            self.peers.push(peer);
            self.peers.len() - 1
        })
    }

    fn get(&self, peer: PeerId) -> Option<usize> {
        if self.index.is_empty() {
            self.peers.iter().position(|&p| p == peer)
        } else {
            self.index.get(&peer).copied()
        }
    }
}

fn side_bit(side: Side) -> u64 {
    match side {
        Side::Left => 0,
        Side::Right => 1,
    }
}

fn diff(a: u32, b: u32) -> i64 {
    i64::from(a) - i64::from(b)
}

/// Whether the character with this id, in this text, is kept elsewhere.
type Held<'a> = dyn Fn(&ContainerId, OpId) -> bool + 'a;

/// Builds every column while walking the changes once.
#[derive(Default)]
struct Encoder<'h> {
    /// Inserted characters kept elsewhere, left out of the text column.
    held: Option<&'h Held<'h>>,
    peers: PeerTable,
    /// Index into `container_list`; empty while the list is small enough to scan.
    containers: HashMap<ContainerId, usize>,
    container_list: SmallVec<[ContainerId; 2]>,
    /// Consecutive ops mostly share a container.
    last_container: Option<usize>,
    history: History,
    prev_timestamp: u64,
    change_peer: RleWriter,
    counter: RleWriter,
    deps_mode: RleWriter,
    dep_peer: RleWriter,
    dep_counter: RleWriter,
    lamport: RleWriter,
    timestamp: RleWriter,
    op_count: RleWriter,
    container: RleWriter,
    kind: RleWriter,
    anchor: RleWriter,
    anchor_peer: RleWriter,
    anchor_counter: RleWriter,
    text_len: RleWriter,
    /// Inline for a message's few typed characters, like the RLE columns.
    text: SmallVec<[u8; 16]>,
    span_count: RleWriter,
    span_peer: RleWriter,
    span_start: RleWriter,
    span_len: RleWriter,
    generic: Vec<u8>,
}

impl Encoder<'_> {
    fn change(&mut self, change: &Change) {
        let peer = self.peers.intern(change.id.peer);
        let counter = change.id.counter;
        let next = self.history.next_counter(peer);
        self.change_peer.push(peer as u64);
        self.counter.push_signed(diff(counter, next));

        let deps: SmallVec<[(usize, Counter); 2]> =
            change.deps.ids().iter().map(|d| (self.peers.intern(d.peer), d.counter)).collect();
        if counter > 0 && deps.as_slice() == [(peer, counter - 1)] {
            self.deps_mode.push(0);
        } else {
            self.deps_mode.push(deps.len() as u64 + 1);
            for &(dep_peer, dep_counter) in &deps {
                self.dep_peer.push(dep_peer as u64);
                self.dep_counter
                    .push_signed(i64::from(self.history.next_counter(dep_peer)) - 1 - i64::from(dep_counter));
            }
        }
        self.lamport.push_signed(diff(change.lamport, self.history.expected_lamport(peer, &deps)));
        let timestamp = change.timestamp.as_raw();
        self.timestamp.push_signed(timestamp.wrapping_sub(self.prev_timestamp) as i64);
        self.prev_timestamp = timestamp;
        self.op_count.push(change.ops.len() as u64);

        let mut op_counter = counter;
        for op in &change.ops {
            let id = OpId::new(change.id.peer, op_counter);
            self.op(op, id, peer);
            self.history.record_op(peer, id, &op.content);
            op_counter = op_counter.wrapping_add(op.content.id_len() as Counter);
        }
        let len = ops_id_len(&change.ops).unwrap_or(0);
        self.history.record_change(peer, counter, len, change.lamport);
    }

    fn container_index(&mut self, id: &ContainerId) -> usize {
        if let Some(last) = self.last_container
            && self.container_list[last] == *id
        {
            return last;
        }
        let found = if self.containers.is_empty() {
            self.container_list.iter().position(|c| c == id)
        } else {
            self.containers.get(id).copied()
        };
        let index = match found {
            Some(index) => index,
            None => {
                if let ContainerId::Child { id: owner, .. } = id {
                    self.peers.intern(owner.peer);
                }
                let index = self.container_list.len();
                self.container_list.push(id.clone());
                if !self.containers.is_empty() {
                    self.containers.insert(id.clone(), index);
                } else if self.container_list.len() > LINEAR_LOOKUP {
                    self.containers =
                        self.container_list.iter().enumerate().map(|(i, c)| (c.clone(), i)).collect();
                }
                index
            }
        };
        self.last_container = Some(index);
        index
    }

    fn op(&mut self, op: &Op, id: OpId, author: usize) {
        let container = self.container_index(&op.container);
        self.container.push(container as u64);
        let mut generic = GenericWriter { out: &mut self.generic, peers: &mut self.peers };
        let (kind, anchor) = match &op.content {
            OpContent::TextInsert { anchor, text } => {
                self.text_len.push(text.chars().count() as u64);
                match self.held {
                    None => self.text.extend_from_slice(text.as_bytes()),
                    Some(held) => {
                        for (at, c) in (id.counter..).zip(text.chars()) {
                            if !held(&op.container, OpId::new(id.peer, at)) {
                                let mut utf8 = [0; 4];
                                self.text.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                            }
                        }
                    }
                }
                (TEXT_INSERT, Some(anchor))
            }
            OpContent::ListInsert { anchor, items } => {
                generic.elements(items);
                (LIST_INSERT, Some(anchor))
            }
            OpContent::SeqDelete { spans } => {
                self.span_count.push(spans.len() as u64);
                let mut predicted = self.history.predicted_delete_start(author, id);
                for run in spans {
                    // Each run is written from the id it removed first, which is where the
                    // prediction points, and its length with its direction in the low bit.
                    let first = run.first();
                    self.span_peer.push(self.peers.intern(first.peer) as u64);
                    let start = i64::from(first.counter);
                    self.span_start.push_signed(start - predicted);
                    predicted = start;
                    self.span_len.push(encoded_len(run));
                }
                (SEQ_DELETE, None)
            }
            OpContent::MovableInsert { anchor, items } => {
                generic.elements(items);
                (MOVABLE_INSERT, Some(anchor))
            }
            OpContent::MovableMove { elem, anchor } => {
                generic.id(*elem);
                (MOVABLE_MOVE, Some(anchor))
            }
            OpContent::MovableSet { elem, value } => {
                generic.id(*elem);
                generic.element(Some(value));
                (MOVABLE_SET, None)
            }
            OpContent::MovableDelete { elems } => {
                generic.ids(elems);
                (MOVABLE_DELETE, None)
            }
            OpContent::MapSet { key, value } => {
                generic.value(key);
                generic.element(value.as_ref());
                (MAP_SET, None)
            }
            OpContent::RegisterSet { value } => {
                generic.element(Some(value));
                (REGISTER_SET, None)
            }
            OpContent::CounterAdd { delta } => {
                generic.varint(wire::zigzag(*delta));
                (COUNTER_ADD, None)
            }
            OpContent::SetAdd { value } => {
                generic.value(value);
                (SET_ADD, None)
            }
            OpContent::SetRemove { value, tags } => {
                generic.value(value);
                generic.ids(tags);
                (SET_REMOVE, None)
            }
        };
        self.kind.push(kind);
        if let Some(anchor) = anchor {
            self.anchor(anchor, id, author);
        }
    }

    fn anchor(&mut self, anchor: &Anchor, id: OpId, author: usize) {
        if self.history.cursor(author) == Some(*anchor) {
            self.anchor.push(ANCHOR_PREDICTED);
            return;
        }
        let side = side_bit(anchor.side);
        match anchor.parent {
            Some(parent) if parent.peer == id.peer && id.counter.checked_sub(1) == Some(parent.counter) => {
                self.anchor.push(ANCHOR_OTHER + (FORM_PREVIOUS << 1 | side));
            }
            None => self.anchor.push(ANCHOR_OTHER + (FORM_ROOT << 1 | side)),
            Some(parent) => {
                self.anchor.push(ANCHOR_OTHER + (FORM_EXPLICIT << 1 | side));
                self.anchor_peer.push(self.peers.intern(parent.peer) as u64);
                self.anchor_counter.push_signed(diff(id.counter, parent.counter));
            }
        }
    }

    fn finish(self, change_count: usize) -> Vec<u8> {
        let rle = [
            &self.change_peer,
            &self.counter,
            &self.deps_mode,
            &self.dep_peer,
            &self.dep_counter,
            &self.lamport,
            &self.timestamp,
            &self.op_count,
            &self.container,
            &self.kind,
            &self.anchor,
            &self.anchor_peer,
            &self.anchor_counter,
            &self.text_len,
            &self.span_count,
            &self.span_peer,
            &self.span_start,
            &self.span_len,
        ];
        // An upper bound for a message (DEFLATE only ever shrinks a column), so the buffer
        // is allocated once instead of growing a few times.
        let tables = 21 + 10 * self.peers.peers.len() + 21 * self.container_list.len();
        let names: usize = self
            .container_list
            .iter()
            .map(|c| match c {
                ContainerId::Root { name, .. } => name.len(),
                ContainerId::Child { .. } => 0,
            })
            .sum();
        let body = rle.iter().map(|c| c.size_bound() + 10).sum::<usize>()
            + self.text.len()
            + self.generic.len()
            + 20;
        // Capped so that a long history, whose columns mostly DEFLATE, does not reserve its
        // raw size.
        let mut out = Vec::with_capacity((tables + names + body).min(1 << 12));
        out.push(FORMAT_VERSION);
        write_varint(&mut out, change_count as u64);
        write_varint(&mut out, self.peers.peers.len() as u64);
        for peer in &self.peers.peers {
            write_varint(&mut out, peer.get());
        }
        write_varint(&mut out, self.container_list.len() as u64);
        for container in &self.container_list {
            match container {
                ContainerId::Root { name, kind } => {
                    out.push(kind_code(*kind));
                    write_varint(&mut out, name.len() as u64);
                    out.extend_from_slice(name.as_bytes());
                }
                ContainerId::Child { id, kind } => {
                    out.push(kind_code(*kind) | CHILD_CONTAINER);
                    let peer = self.peers.get(id.peer).unwrap_or(0);
                    write_varint(&mut out, peer as u64);
                    write_varint(&mut out, u64::from(id.counter));
                }
            }
        }
        // In column order (see the layout table).
        self.change_peer.write_block(&mut out);
        self.counter.write_block(&mut out);
        self.deps_mode.write_block(&mut out);
        self.dep_peer.write_block(&mut out);
        self.dep_counter.write_block(&mut out);
        self.lamport.write_block(&mut out);
        self.timestamp.write_block(&mut out);
        self.op_count.write_block(&mut out);
        self.container.write_block(&mut out);
        self.kind.write_block(&mut out);
        self.anchor.write_block(&mut out);
        self.anchor_peer.write_block(&mut out);
        self.anchor_counter.write_block(&mut out);
        self.text_len.write_block(&mut out);
        write_column(&mut out, &self.text);
        self.span_count.write_block(&mut out);
        self.span_peer.write_block(&mut out);
        self.span_start.write_block(&mut out);
        self.span_len.write_block(&mut out);
        write_column(&mut out, &self.generic);
        out
    }
}

/// Reads the columns back, change by change.
struct Decoder<'a> {
    /// Inserted characters kept elsewhere (see [`decode_changes_filling`]).
    held: &'a dyn Fn(OpId) -> Option<char>,
    /// How many characters `held` can still give.
    held_left: usize,
    peers: &'a [PeerId],
    containers: &'a [ContainerId],
    budget: Budget,
    history: History,
    prev_timestamp: u64,
    change_peer: RleReader<'a>,
    counter: RleReader<'a>,
    deps_mode: RleReader<'a>,
    dep_peer: RleReader<'a>,
    dep_counter: RleReader<'a>,
    lamport: RleReader<'a>,
    timestamp: RleReader<'a>,
    op_count: RleReader<'a>,
    container: RleReader<'a>,
    kind: RleReader<'a>,
    anchor: RleReader<'a>,
    anchor_peer: RleReader<'a>,
    anchor_counter: RleReader<'a>,
    text_len: RleReader<'a>,
    text: &'a str,
    span_count: RleReader<'a>,
    span_peer: RleReader<'a>,
    span_start: RleReader<'a>,
    span_len: RleReader<'a>,
    generic: GenericReader<'a, 'a>,
}

impl Decoder<'_> {
    /// The `chars` characters inserted with ids from `id`: those `held` gives, the others from
    /// the text column.
    fn text_of(&mut self, id: OpId, chars: u32) -> Result<String, DecodeError> {
        // Every character is a byte or more of the column, or one `held` gives: refuse a
        // length that cannot be there before looking at each of its ids.
        if chars as usize > self.text.len().saturating_add(self.held_left) {
            return Err(malformed("text column too short"));
        }
        let end = id.counter.checked_add(chars).ok_or_else(|| malformed("text ids overflow the counter"))?;
        let column_only = |counter: u32| (self.held)(OpId::new(id.peer, counter)).is_none();
        if (id.counter..end).all(column_only) {
            let end = match chars.checked_sub(1) {
                None => 0,
                Some(last) => self
                    .text
                    .char_indices()
                    .nth(last as usize)
                    .map(|(at, c)| at + c.len_utf8())
                    .ok_or_else(|| malformed("text column too short"))?,
            };
            let (text, rest) = self.text.split_at(end);
            self.text = rest;
            self.budget.charge(text.len())?;
            return Ok(text.to_owned());
        }
        let mut text = String::new();
        for counter in id.counter..end {
            let c = match (self.held)(OpId::new(id.peer, counter)) {
                Some(c) if self.held_left > 0 => {
                    self.held_left -= 1;
                    c
                }
                Some(_) => return Err(malformed("text held twice")),
                None => {
                    let mut rest = self.text.chars();
                    let c = rest.next().ok_or_else(|| malformed("text column too short"))?;
                    self.text = rest.as_str();
                    c
                }
            };
            self.budget.charge(c.len_utf8())?;
            text.push(c);
        }
        Ok(text)
    }
}

/// `base + delta` as a counter or Lamport time, refusing anything outside `u32`.
fn offset(base: u32, delta: i64) -> Result<u32, DecodeError> {
    i64::from(base)
        .checked_add(delta)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| malformed("counter or Lamport time out of range"))
}

impl<'a> Decoder<'a> {
    fn new(
        blocks: &'a [Cow<'a, [u8]>; COLUMN_COUNT],
        peers: &'a [PeerId],
        containers: &'a [ContainerId],
        budget: Budget,
        held: &'a dyn Fn(OpId) -> Option<char>,
        held_count: usize,
    ) -> Result<Self, DecodeError> {
        let rle = |i: usize| RleReader::new(&blocks[i]);
        let text = std::str::from_utf8(&blocks[14]).map_err(|_| malformed("text column is not UTF-8"))?;
        Ok(Decoder {
            held,
            held_left: held_count,
            peers,
            containers,
            budget,
            history: History::with_peers(peers.len()),
            prev_timestamp: 0,
            change_peer: rle(0),
            counter: rle(1),
            deps_mode: rle(2),
            dep_peer: rle(3),
            dep_counter: rle(4),
            lamport: rle(5),
            timestamp: rle(6),
            op_count: rle(7),
            container: rle(8),
            kind: rle(9),
            anchor: rle(10),
            anchor_peer: rle(11),
            anchor_counter: rle(12),
            text_len: rle(13),
            text,
            span_count: rle(15),
            span_peer: rle(16),
            span_start: rle(17),
            span_len: rle(18),
            generic: GenericReader { input: Reader::new(&blocks[19]), peers },
        })
    }

    fn change(&mut self) -> Result<Change, DecodeError> {
        self.budget.charge(size_of::<Change>())?;
        let peer_index = self.change_peer.next_index(self.peers.len())?;
        let peer = self.peers[peer_index];
        let counter = offset(self.history.next_counter(peer_index), self.counter.next_signed()?)?;

        let mut deps: SmallVec<[(usize, Counter); 2]> = SmallVec::new();
        match self.deps_mode.next()? {
            0 => {
                let prev =
                    counter.checked_sub(1).ok_or_else(|| malformed("implicit dependency of counter 0"))?;
                deps.push((peer_index, prev));
            }
            n => {
                for _ in 1..n {
                    self.budget.charge(size_of::<OpId>())?;
                    let dep_peer = self.dep_peer.next_index(self.peers.len())?;
                    let end = i64::from(self.history.next_counter(dep_peer)) - 1;
                    let dep_counter = end
                        .checked_sub(self.dep_counter.next_signed()?)
                        .and_then(|c| u32::try_from(c).ok())
                        .ok_or_else(|| malformed("dependency counter out of range"))?;
                    deps.push((dep_peer, dep_counter));
                }
            }
        }
        let lamport = offset(self.history.expected_lamport(peer_index, &deps), self.lamport.next_signed()?)?;
        let timestamp = self.prev_timestamp.wrapping_add(self.timestamp.next_signed()? as u64);
        self.prev_timestamp = timestamp;

        let op_count = usize::try_from(self.op_count.next()?).unwrap_or(usize::MAX);
        self.budget.charge(op_count.saturating_mul(size_of::<Op>()))?;
        // Charged in full above; the capacity is still capped so that a hostile count does
        // not reserve the whole budget at once.
        let mut ops = Vec::with_capacity(op_count.min(1024));
        let mut op_counter = counter;
        for _ in 0..op_count {
            let id = OpId::new(peer, op_counter);
            let op = self.op(id, peer_index)?;
            self.history.record_op(peer_index, id, &op.content);
            let len = Counter::try_from(op.content.id_len()).ok();
            op_counter = len
                .and_then(|len| op_counter.checked_add(len))
                .ok_or_else(|| malformed("op ids overflow the counter space"))?;
            ops.push(op);
        }

        let mut change = Change {
            id: OpId::new(peer, counter),
            deps: Frontier::from_ids(deps.iter().map(|&(p, c)| OpId::new(self.peers[p], c))),
            lamport,
            timestamp: Timestamp::from_raw(timestamp),
            ops,
            len: 0,
            uses_timestamp: false,
        };
        change.validate_shape().map_err(malformed)?;
        self.history.record_change(peer_index, counter, change.len, lamport);
        Ok(change)
    }

    fn op(&mut self, id: OpId, author: usize) -> Result<Op, DecodeError> {
        let containers = self.containers;
        let container = &containers[self.container.next_index(containers.len())?];
        if let ContainerId::Root { name, .. } = container {
            self.budget.charge(name.len())?;
        }
        let container = container.clone();
        let budget = &mut self.budget;
        let content = match self.kind.next()? {
            TEXT_INSERT => {
                let anchor = self.anchor(id, author)?;
                let chars = u32::try_from(self.text_len.next()?).map_err(|_| malformed("text too long"))?;
                let text = self.text_of(id, chars)?;
                OpContent::TextInsert { anchor, text }
            }
            LIST_INSERT => {
                let items = self.generic.elements(budget)?;
                OpContent::ListInsert { anchor: self.anchor(id, author)?, items }
            }
            SEQ_DELETE => {
                let mut spans = DeleteRuns::new();
                let mut predicted = self.history.predicted_delete_start(author, id);
                for _ in 0..self.span_count.next()? {
                    self.budget.charge(size_of::<DeleteRun>())?;
                    let peer = self.peers[self.span_peer.next_index(self.peers.len())?];
                    let first = predicted
                        .checked_add(self.span_start.next_signed()?)
                        .and_then(|s| u32::try_from(s).ok())
                        .ok_or_else(|| malformed("span start out of range"))?;
                    predicted = i64::from(first);
                    let run = decoded_run(peer, first, self.span_len.next()?)
                        .ok_or_else(|| malformed("delete run out of range"))?;
                    // Joined as the encoder would have, so that each deletion has one form.
                    push_runs(&mut spans, [run]);
                }
                OpContent::SeqDelete { spans }
            }
            MOVABLE_INSERT => {
                let items = self.generic.elements(budget)?;
                OpContent::MovableInsert { anchor: self.anchor(id, author)?, items }
            }
            MOVABLE_MOVE => {
                let elem = self.generic.id()?;
                OpContent::MovableMove { elem, anchor: self.anchor(id, author)? }
            }
            MOVABLE_SET => {
                let elem = self.generic.id()?;
                OpContent::MovableSet { elem, value: self.generic.present_element(budget)? }
            }
            MOVABLE_DELETE => OpContent::MovableDelete { elems: self.generic.ids(budget)? },
            MAP_SET => {
                let key = self.generic.value(budget)?;
                OpContent::MapSet { key, value: self.generic.element(budget)? }
            }
            REGISTER_SET => OpContent::RegisterSet { value: self.generic.present_element(budget)? },
            COUNTER_ADD => OpContent::CounterAdd { delta: self.generic.signed()? },
            SET_ADD => OpContent::SetAdd { value: self.generic.value(budget)? },
            SET_REMOVE => {
                let value = self.generic.value(budget)?;
                OpContent::SetRemove { value, tags: self.generic.ids(budget)? }
            }
            _ => return Err(malformed("unknown op kind")),
        };
        Ok(Op { container, content })
    }

    fn anchor(&mut self, id: OpId, author: usize) -> Result<Anchor, DecodeError> {
        let tag = self.anchor.next()?;
        if tag == ANCHOR_PREDICTED {
            return self.history.cursor(author).ok_or_else(|| malformed("no anchor to predict from"));
        }
        let tag = tag.checked_sub(ANCHOR_OTHER).ok_or_else(|| malformed("unknown anchor form"))?;
        let side = if tag & 1 == 0 { Side::Left } else { Side::Right };
        let parent = match tag >> 1 {
            FORM_PREVIOUS => {
                let prev =
                    id.counter.checked_sub(1).ok_or_else(|| malformed("implicit anchor of counter 0"))?;
                Some(OpId::new(id.peer, prev))
            }
            FORM_ROOT => None,
            FORM_EXPLICIT => {
                let peer = self.peers[self.anchor_peer.next_index(self.peers.len())?];
                let delta = self.anchor_counter.next_signed()?;
                let counter = i64::from(id.counter)
                    .checked_sub(delta)
                    .and_then(|c| u32::try_from(c).ok())
                    .ok_or_else(|| malformed("anchor counter out of range"))?;
                Some(OpId::new(peer, counter))
            }
            _ => return Err(malformed("unknown anchor form")),
        };
        Ok(Anchor { parent, side })
    }

    fn finish(&self) -> Result<(), DecodeError> {
        for column in [
            &self.change_peer,
            &self.counter,
            &self.deps_mode,
            &self.dep_peer,
            &self.dep_counter,
            &self.lamport,
            &self.timestamp,
            &self.op_count,
            &self.container,
            &self.kind,
            &self.anchor,
            &self.anchor_peer,
            &self.anchor_counter,
            &self.text_len,
            &self.span_count,
            &self.span_peer,
            &self.span_start,
            &self.span_len,
        ] {
            column.finish()?;
        }
        if !self.text.is_empty() || !self.generic.input.is_empty() {
            return Err(malformed("a column holds more values than the changes use"));
        }
        Ok(())
    }
}
