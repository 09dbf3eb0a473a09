//! A stateful, compact encoding of changes for one direction of one connection.
//!
//! The transport is reliable and ordered, so the sender's [`ChangeEncoder`] and the receiver's
//! [`ChangeDecoder`] see the same batches in the same order and keep the same context: a peer
//! table, a container table and, per author, where its previous change ended and where its
//! next edit most likely goes. A change then only says how it departs from that prediction: a
//! typed character that continues its author's previous change costs three bytes (change
//! flags, op header, the character), a backspace two.
//!
//! Use one encoder per connection and direction and feed it every batch sent, in order; the
//! receiver feeds its decoder every batch received, in order. Batches must not be dropped,
//! reordered or replayed. When [`ChangeDecoder::decode`] fails, its context may no longer
//! match the sender's: close the connection (a new connection starts both from empty tables).
//! Compactness is best with one pair per connection *and document*, since counters and
//! Lamport times are per document; the encoding is correct either way.
//!
//! # Layout
//!
//! *varint* is unsigned LEB128 (at most 10 bytes, value fits `u64`); *zigzag* maps a signed
//! value to unsigned (`0, -1, 1, -2, ..` → `0, 1, 2, 3, ..`) before it is written as a varint.
//! Reserved bits must be zero. The context is the state described under *Context* below.
//!
//! ```text
//! batch     change*                   changes back to back until the end of the input
//!                                     (the enclosing message gives the length; an empty
//!                                     batch is zero bytes)
//!
//! change    u8 flags
//!             bit 0    SAME_AUTHOR    author = the previous change's author (else a peer ref)
//!             bit 1    CONTINUES      counter = author's end, deps = [author's last id],
//!                                     lamport = author's Lamport end (needs a previous change
//!                                     of the author)
//!             bits 2-3 timestamp mode (see below)
//!             bit 4    ONE_OP         exactly one op (else an op count follows)
//!             bits 5-7 reserved
//!           [peer ref]                author, unless SAME_AUTHOR
//!           unless CONTINUES:
//!             varint zigzag(counter - author's end)
//!             varint deps: 0 = [(author, counter - 1)]; n + 1 = n id refs follow, each
//!                    against base (author, counter - 1)
//!             varint zigzag(lamport - reference); reference = the author's Lamport end, or
//!                    the previous change's for an author without changes so far
//!           timestamp payload, by mode, against the reference r = the author's previous
//!           timestamp, or the previous change's (0 before any) for a new author:
//!             0 SAME      nothing: t = r
//!             1 NEXT      nothing: t = r + 1 (packed u64: the hybrid clock's next tick)
//!             2 FORWARD   varint d: wall(t) = wall(r) + d, logical(t) = 0
//!             3 EXPLICIT  varint zigzag(wall(t) - wall(r)), varint logical(t) (≤ 65535)
//!           [varint op count]         unless ONE_OP
//!           op*                       the ops; op i has id (author, counter + ids of ops < i)
//!
//! op        u8 header
//!             bits 0-3 kind: 0 text insert, 1 list insert, 2 sequence delete, 3 movable
//!                      insert, 4 move, 5 movable set, 6 movable delete, 7 map set,
//!                      8 register set, 9 counter add, 10 set add, 11 set remove
//!             bit 4    SAME_CONTAINER container = the one of the author's previous op (else
//!                                     a container ref follows)
//!             bits 5-7 per kind (below); reserved for kinds 5 and up
//!           [container ref]
//!           payload, per kind:
//!             text insert     anchor (form in bits 5-6); bit 7 ONE_CHAR: the text is one
//!                             character, its 1-4 UTF-8 bytes follow; else varint byte length
//!                             and UTF-8 bytes
//!             list insert,    anchor (form in bits 5-6; bit 7 reserved); varint n; n elements
//!             movable insert
//!             sequence delete bit 5 SINGLE: one span of length 1, else varint n spans;
//!                             bit 6 PREDICTED: the first span starts at the predicted id and
//!                             its id ref is left out; bit 7 reserved. Each span: [id ref of
//!                             its start] (base: the predicted id for the first, the previous
//!                             start after), [varint length] unless SINGLE
//!             move            id ref of the element (base: the op id); anchor (bits 5-6;
//!                             bit 7 reserved)
//!             movable set     id ref of the element (base: the op id); element
//!             movable delete  varint n; n id refs (base: the op id, then the previous id)
//!             map set         value (key); element, or 11 for a deletion
//!             register set    element
//!             counter add     varint zigzag(delta)
//!             set add         value
//!             set remove      value; varint n; n id refs (tags; bases as movable delete)
//!
//! anchor    form 0 PREDICTED        the author's cursor (no payload)
//!           form 1 AFTER_PREVIOUS   right of (author, op counter - 1) (no payload)
//!           form 2 AFTER            right of an id ref (base: (author, op counter - 1))
//!           form 3 OTHER            u8 tag: bit 0 side (1 right, 0 left), bit 1 has a parent,
//!                                   other bits zero; then the parent's id ref (same base) if
//!                                   it has one, else the parent is the root
//!
//! peer ref  varint v: 0 = new: varint peer id, appended to the peer table;
//!           1 = literal: varint peer id, not added (the encoder's table is full);
//!           v ≥ 2 = the peer at table index v - 2
//!
//! container ref
//!           varint v: 0 = new (appended to the container table), 1 = literal (not added),
//!           v ≥ 2 = the container at table index v - 2. New and literal containers follow as
//!           u8 kind code (0 text, 1 list, 2 movable list, 3 map, 4 register, 5 counter,
//!           6 set) | 8 for a child; root: varint byte length + UTF-8 name; child: peer ref +
//!           varint counter of the creating op
//!
//! id ref    against a base (peer, counter), where the base counter may be -1:
//!           varint h; h even: the base's peer, counter = base counter - unzigzag(h >> 1);
//!           h odd: counter = h >> 1, then a peer ref
//!
//! value     u8 tag: 0 null | 1 false | 2 true | 3 int (zigzag varint) | 4 uint (varint)
//!           | 5 float (8 bytes, little-endian IEEE bits) | 6 string (varint len, UTF-8)
//!           | 7 bytes (varint len, bytes) | 8 list (varint n, n values)
//!           | 9 map (varint n, n × (varint len, UTF-8 key, value))
//! element   a value, or 10 + u8 container kind (a nested container)
//! ```
//!
//! # Context
//!
//! Both sides start empty and update the context at the same points:
//!
//! * *Tables.* A peer or container is appended when a ref says *new*. The encoder interns at
//!   most [`TABLE_PEERS`] peers, [`TABLE_CONTAINERS`] containers and [`TABLE_NAME_BYTES`]
//!   bytes of root names, and writes literals beyond; the decoder refuses tables larger than
//!   its [`ChangeCodecLimits`]. Nothing is remembered about a literal peer, and a literal
//!   container is never "the previous op's".
//! * *After each op*, for its author (for a literal author only until the end of the
//!   change: it starts every change from nothing): its previous container is the op's (none
//!   if literal); an insert of `n ≥ 1` elements with first id `i` sets the cursor to right of
//!   `i + n - 1`; a sequence delete with at least one span sets the cursor to left of its
//!   first span's start `s` and remembers (op counter, `s`). The *predicted id* of a delete
//!   with counter `c` is `(s.peer, s.counter - 1)` when the remembered op counter is `c - 1`
//!   (another backspace), else `(author, c - 1)` (deleting what was just typed).
//! * *After each change*: the author's end becomes counter + length, its Lamport end
//!   lamport + length, its timestamp the change's; the previous author, timestamp and Lamport
//!   end become the change's.
//!
//! # Limits
//!
//! The decoder never trusts a count: a count larger than the bytes left is truncation, and
//! changes, ops, items (list and set items, values, ids, spans, dependencies) and text bytes
//! (text, strings, byte values, names) are charged per batch against [`ChangeCodecLimits`]
//! before they are allocated. Values nest at most 128 deep. Decoded changes pass
//! [`Change::validate_shape`](crate::doc::change::Change), which derives their length.

mod bytes;
mod context;
mod decoder;
mod encoder;

#[cfg(test)]
mod tests;

pub(crate) use decoder::ChangeDecoder;
pub(crate) use encoder::ChangeEncoder;

/// Most peers the encoder interns; later peers are written literally each time.
pub(crate) const TABLE_PEERS: usize = 4096;
/// Most containers the encoder interns.
pub(crate) const TABLE_CONTAINERS: usize = 4096;
/// Most bytes of root container names the encoder interns.
pub(crate) const TABLE_NAME_BYTES: usize = 256 * 1024;

// Change flags.
const SAME_AUTHOR: u8 = 0x01;
const CONTINUES: u8 = 0x02;
const TIMESTAMP_SHIFT: u32 = 2;
const TIMESTAMP_MASK: u8 = 0x03;
const ONE_OP: u8 = 0x10;
const CHANGE_RESERVED: u8 = 0xe0;

// Timestamp modes.
const TS_SAME: u8 = 0;
const TS_NEXT: u8 = 1;
const TS_FORWARD: u8 = 2;
const TS_EXPLICIT: u8 = 3;

// Op header.
const KIND_MASK: u8 = 0x0f;
const SAME_CONTAINER: u8 = 0x10;
const ANCHOR_SHIFT: u32 = 5;
const ANCHOR_MASK: u8 = 0x03;
const ONE_CHAR: u8 = 0x80;
const DELETE_SINGLE: u8 = 0x20;
const DELETE_PREDICTED: u8 = 0x40;

// Op kinds.
const TEXT_INSERT: u8 = 0;
const LIST_INSERT: u8 = 1;
const SEQ_DELETE: u8 = 2;
const MOVABLE_INSERT: u8 = 3;
const MOVABLE_MOVE: u8 = 4;
const MOVABLE_SET: u8 = 5;
const MOVABLE_DELETE: u8 = 6;
const MAP_SET: u8 = 7;
const REGISTER_SET: u8 = 8;
const COUNTER_ADD: u8 = 9;
const SET_ADD: u8 = 10;
const SET_REMOVE: u8 = 11;

// Anchor forms.
const ANCHOR_PREDICTED: u8 = 0;
const ANCHOR_AFTER_PREVIOUS: u8 = 1;
const ANCHOR_AFTER: u8 = 2;
const ANCHOR_OTHER: u8 = 3;
// Bits of the OTHER anchor's tag.
const ANCHOR_RIGHT: u8 = 0x01;
const ANCHOR_HAS_PARENT: u8 = 0x02;

// Peer and container refs.
const REF_NEW: u64 = 0;
const REF_LITERAL: u64 = 1;
const REF_INDEX: u64 = 2;
const CHILD_CONTAINER: u8 = 8;

/// What one [`ChangeDecoder::decode`] call may build, and how large the tables may grow over
/// the connection. Exceeding a limit is [`DecodeError::TooLarge`](crate::DecodeError), found
/// before anything is allocated for it.
///
/// The table limits default to what the encoder interns at most ([`TABLE_PEERS`], ...); lower
/// ones make a conforming peer fail once it fills its tables further. The batch limits must
/// be at least what the sender puts in one batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChangeCodecLimits {
    /// Most changes in one batch.
    pub max_changes: usize,
    /// Most ops in one batch.
    pub max_ops: usize,
    /// Most items in one batch: list and set items, values (nested ones included), ids,
    /// delete spans and dependencies.
    pub max_items: usize,
    /// Most bytes of text in one batch: inserted text, strings and bytes in values, container
    /// names.
    pub max_text_bytes: usize,
    /// Most entries of the peer table, over the connection.
    pub max_peers: usize,
    /// Most entries of the container table, over the connection.
    pub max_containers: usize,
    /// Most bytes of root container names in the container table, over the connection.
    pub max_container_name_bytes: usize,
}

impl Default for ChangeCodecLimits {
    fn default() -> Self {
        ChangeCodecLimits {
            max_changes: 1 << 16,
            max_ops: 1 << 18,
            max_items: 1 << 20,
            max_text_bytes: 16 << 20,
            max_peers: TABLE_PEERS,
            max_containers: TABLE_CONTAINERS,
            max_container_name_bytes: TABLE_NAME_BYTES,
        }
    }
}
