//! The generic column: the payload of the op kinds that are not worth columns of their own
//! (list and movable-list items, moves, map, register, counter and set ops), in a compact tagged
//! binary form. Op ids refer to the peer table; nothing here is recursive without a depth bound.
//!
//! ```text
//! value     u8 tag: 0 null | 1 false | 2 true | 3 int (zigzag varint) | 4 uint (varint)
//!           | 5 float (8 bytes, little-endian IEEE bits) | 6 string (varint len, UTF-8)
//!           | 7 bytes (varint len, bytes) | 8 list (varint n, n values)
//!           | 9 map (varint n, n × (varint len, UTF-8 key, value))
//! element   a value, or 10 + u8 container kind (a nested container); 11 = none (map delete)
//! id        varint peer index, varint counter;  ids = varint n, n ids
//!
//! per op    list / movable insert: varint n, n elements (the anchor is in the anchor columns)
//!           move: id of the element (anchor in the anchor columns)
//!           movable set: id, element        movable delete: ids
//!           map set: value (key), element or none
//!           register set: element           counter add: zigzag varint delta
//!           set add: value                  set remove: value, ids (tags)
//! ```

use std::collections::BTreeMap;
use std::mem::size_of;

use super::PeerTable;
use super::wire::{Budget, Reader, malformed, unzigzag, write_varint, zigzag};
use crate::DecodeError;
use crate::doc::id::{OpId, PeerId};
use crate::doc::op::{ContainerKind, Element};
use crate::doc::value::Value;

/// Values nested deeper than this are refused when decoding: building (and later dropping)
/// them recurses, and a hostile input must not be able to exhaust the stack.
pub(super) const MAX_VALUE_DEPTH: usize = 256;

/// The tags of the tagged value form, shared with the wire's change codec. Element tags
/// extend the value tags.
pub(crate) mod value_tags {
    pub(crate) const NULL: u8 = 0;
    pub(crate) const FALSE: u8 = 1;
    pub(crate) const TRUE: u8 = 2;
    pub(crate) const INT: u8 = 3;
    pub(crate) const UINT: u8 = 4;
    pub(crate) const FLOAT: u8 = 5;
    pub(crate) const STRING: u8 = 6;
    pub(crate) const BYTES: u8 = 7;
    pub(crate) const LIST: u8 = 8;
    pub(crate) const MAP: u8 = 9;
    /// `Element::Container`, followed by the kind byte.
    pub(crate) const CONTAINER: u8 = 10;
    /// `None` of an optional element (a map deletion).
    pub(crate) const ABSENT: u8 = 11;
}

use value_tags::*;

pub(crate) const fn kind_code(kind: ContainerKind) -> u8 {
    match kind {
        ContainerKind::Text => 0,
        ContainerKind::List => 1,
        ContainerKind::MovableList => 2,
        ContainerKind::Map => 3,
        ContainerKind::Register => 4,
        ContainerKind::Counter => 5,
        ContainerKind::OrSet => 6,
    }
}

pub(crate) fn kind_from_code(code: u8) -> Result<ContainerKind, DecodeError> {
    Ok(match code {
        0 => ContainerKind::Text,
        1 => ContainerKind::List,
        2 => ContainerKind::MovableList,
        3 => ContainerKind::Map,
        4 => ContainerKind::Register,
        5 => ContainerKind::Counter,
        6 => ContainerKind::OrSet,
        _ => return Err(malformed("unknown container kind")),
    })
}

/// Write a value in the tagged form (shared with the wire's change codec, so that both
/// formats write values alike).
pub(crate) fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Int(i) => {
            out.push(INT);
            write_varint(out, zigzag(*i));
        }
        Value::Uint(u) => {
            out.push(UINT);
            write_varint(out, *u);
        }
        Value::Float(f) => {
            // The exact bits, so that NaN payloads and -0.0 survive.
            out.push(FLOAT);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Value::String(s) => {
            out.push(STRING);
            write_bytes(out, s.as_bytes());
        }
        Value::Bytes(b) => {
            out.push(BYTES);
            write_bytes(out, b);
        }
        Value::List(items) => {
            out.push(LIST);
            write_varint(out, items.len() as u64);
            for item in items {
                write_value(out, item);
            }
        }
        Value::Map(entries) => {
            out.push(MAP);
            write_varint(out, entries.len() as u64);
            for (key, item) in entries {
                write_bytes(out, key.as_bytes());
                write_value(out, item);
            }
        }
    }
}

/// Write a length-prefixed byte string.
pub(crate) fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Write an optional element: a value, a nested container's kind, or absent (a deletion).
pub(crate) fn write_element(out: &mut Vec<u8>, element: Option<&Element>) {
    match element {
        None => out.push(ABSENT),
        Some(Element::Value(v)) => write_value(out, v),
        Some(Element::Container(kind)) => {
            out.push(CONTAINER);
            out.push(kind_code(*kind));
        }
    }
}

/// Writes the generic column.
pub(super) struct GenericWriter<'p> {
    pub(super) out: &'p mut Vec<u8>,
    pub(super) peers: &'p mut PeerTable,
}

impl GenericWriter<'_> {
    pub(super) fn varint(&mut self, v: u64) {
        write_varint(self.out, v);
    }

    pub(super) fn id(&mut self, id: OpId) {
        let peer = self.peers.intern(id.peer);
        self.varint(peer as u64);
        self.varint(u64::from(id.counter));
    }

    pub(super) fn ids(&mut self, ids: &[OpId]) {
        self.varint(ids.len() as u64);
        for &id in ids {
            self.id(id);
        }
    }

    pub(super) fn value(&mut self, value: &Value) {
        write_value(self.out, value);
    }

    pub(super) fn element(&mut self, element: Option<&Element>) {
        write_element(self.out, element);
    }

    pub(super) fn elements(&mut self, items: &[Element]) {
        self.varint(items.len() as u64);
        for item in items {
            self.element(Some(item));
        }
    }
}

/// Reads the generic column; every allocation is charged to the budget first.
pub(super) struct GenericReader<'a, 'p> {
    pub(super) input: Reader<'a>,
    pub(super) peers: &'p [PeerId],
}

impl GenericReader<'_, '_> {
    pub(super) fn id(&mut self) -> Result<OpId, DecodeError> {
        let peer = usize::try_from(self.input.varint()?).ok().and_then(|i| self.peers.get(i));
        let peer = *peer.ok_or_else(|| malformed("peer index out of range"))?;
        Ok(OpId::new(peer, self.input.u32()?))
    }

    pub(super) fn ids(&mut self, budget: &mut Budget) -> Result<Vec<OpId>, DecodeError> {
        let n = self.input.count(2)?;
        budget.charge(n.saturating_mul(size_of::<OpId>()))?;
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.id()?);
        }
        Ok(ids)
    }

    pub(super) fn varint(&mut self) -> Result<u64, DecodeError> {
        self.input.varint()
    }

    pub(super) fn signed(&mut self) -> Result<i64, DecodeError> {
        self.input.varint().map(unzigzag)
    }

    pub(super) fn value(&mut self, budget: &mut Budget) -> Result<Value, DecodeError> {
        let tag = self.input.u8()?;
        self.value_with_tag(tag, budget, 0)
    }

    fn value_with_tag(&mut self, tag: u8, budget: &mut Budget, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_VALUE_DEPTH {
            return Err(malformed("value nested too deep"));
        }
        Ok(match tag {
            NULL => Value::Null,
            FALSE => Value::Bool(false),
            TRUE => Value::Bool(true),
            INT => Value::Int(self.signed()?),
            UINT => Value::Uint(self.varint()?),
            FLOAT => {
                let bytes = self.input.bytes(8)?;
                let mut raw = [0u8; 8];
                raw.copy_from_slice(bytes);
                Value::Float(f64::from_bits(u64::from_le_bytes(raw)))
            }
            STRING => Value::String(self.string(budget)?),
            BYTES => {
                let n = self.input.count(1)?;
                budget.charge(n)?;
                Value::Bytes(self.input.bytes(n)?.to_vec())
            }
            LIST => {
                let n = self.input.count(1)?;
                budget.charge(n.saturating_mul(size_of::<Value>()))?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    let tag = self.input.u8()?;
                    items.push(self.value_with_tag(tag, budget, depth + 1)?);
                }
                Value::List(items)
            }
            MAP => {
                let n = self.input.count(2)?;
                budget.charge(n.saturating_mul(size_of::<(String, Value)>()))?;
                let mut entries = BTreeMap::new();
                for _ in 0..n {
                    let key = self.string(budget)?;
                    let tag = self.input.u8()?;
                    entries.insert(key, self.value_with_tag(tag, budget, depth + 1)?);
                }
                Value::Map(entries)
            }
            _ => return Err(malformed("unknown value tag")),
        })
    }

    fn string(&mut self, budget: &mut Budget) -> Result<String, DecodeError> {
        let s = self.input.str()?;
        budget.charge(s.len())?;
        Ok(s.to_owned())
    }

    pub(super) fn element(&mut self, budget: &mut Budget) -> Result<Option<Element>, DecodeError> {
        Ok(match self.input.u8()? {
            ABSENT => None,
            CONTAINER => Some(Element::Container(kind_from_code(self.input.u8()?)?)),
            tag => Some(Element::Value(self.value_with_tag(tag, budget, 0)?)),
        })
    }

    pub(super) fn present_element(&mut self, budget: &mut Budget) -> Result<Element, DecodeError> {
        self.element(budget)?.ok_or_else(|| malformed("missing element"))
    }

    pub(super) fn elements(&mut self, budget: &mut Budget) -> Result<Vec<Element>, DecodeError> {
        let n = self.input.count(1)?;
        budget.charge(n.saturating_mul(size_of::<Element>()))?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.present_element(budget)?);
        }
        Ok(items)
    }
}
