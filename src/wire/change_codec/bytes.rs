//! Byte-level pieces of the change codec: varints, a bounds-checked reader, the per-batch
//! budget, and the tagged form of values and elements.
//!
//! Values use the same tags as the columnar format's generic column (`doc/columnar/values.rs`),
//! so that both formats read alike; ids never occur inside values, so this part needs no
//! codec state.

use std::collections::BTreeMap;

use super::ChangeCodecLimits as Limits;
use crate::DecodeError;
pub(super) use crate::bytes::{Reader, unzigzag, write_varint, zigzag};
pub(super) use crate::doc::columnar::{kind_code, kind_from_code, write_bytes, write_element, write_value};
use crate::doc::op::Element;
use crate::doc::value::Value;

/// Values nested deeper than this are refused: building and dropping them recurses, and a
/// hostile input must not exhaust the stack.
const MAX_VALUE_DEPTH: usize = 128;

use crate::doc::columnar::value_tags::*;

pub(super) fn malformed(what: &str) -> DecodeError {
    DecodeError::Malformed(format!("change codec: {what}"))
}

/// A varint byte length and that many bytes of UTF-8, charged to the text budget.
pub(super) fn read_str<'a>(input: &mut Reader<'a>, budget: &mut Budget) -> Result<&'a str, DecodeError> {
    let n = input.count(1)?;
    budget.text(n)?;
    std::str::from_utf8(input.bytes(n)?).map_err(|_| malformed("invalid UTF-8"))
}

/// Exactly one UTF-8 character, its length given by its first byte.
pub(super) fn read_one_char<'a>(input: &mut Reader<'a>) -> Result<&'a str, DecodeError> {
    let width = match input.peek().ok_or(DecodeError::Truncated)? {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => return Err(malformed("invalid UTF-8")),
    };
    std::str::from_utf8(input.bytes(width)?).map_err(|_| malformed("invalid UTF-8"))
}

/// What one batch has made the decoder build so far, against the limits.
pub(super) struct Budget {
    limits: Limits,
    changes: usize,
    ops: usize,
    items: usize,
    text: usize,
}

/// Add `n` to `used`, refusing to pass `limit`.
fn charge(used: &mut usize, n: usize, limit: usize) -> Result<(), DecodeError> {
    match used.checked_add(n) {
        Some(total) if total <= limit => {
            *used = total;
            Ok(())
        }
        _ => {
            Err(DecodeError::TooLarge { size: (*used as u64).saturating_add(n as u64), limit: limit as u64 })
        }
    }
}

impl Budget {
    pub(super) fn new(limits: &Limits) -> Self {
        Budget { limits: limits.clone(), changes: 0, ops: 0, items: 0, text: 0 }
    }

    pub(super) fn change(&mut self) -> Result<(), DecodeError> {
        charge(&mut self.changes, 1, self.limits.max_changes)
    }

    pub(super) fn ops(&mut self, n: usize) -> Result<(), DecodeError> {
        charge(&mut self.ops, n, self.limits.max_ops)
    }

    /// List and set items, values, ids, dependencies and spans.
    pub(super) fn items(&mut self, n: usize) -> Result<(), DecodeError> {
        charge(&mut self.items, n, self.limits.max_items)
    }

    /// Inserted text, strings and bytes in values, container names.
    pub(super) fn text(&mut self, n: usize) -> Result<(), DecodeError> {
        charge(&mut self.text, n, self.limits.max_text_bytes)
    }
}

// ---- values ------------------------------------------------------------------------------

pub(super) fn read_value(input: &mut Reader<'_>, budget: &mut Budget) -> Result<Value, DecodeError> {
    let tag = input.u8()?;
    read_value_with_tag(input, tag, budget, 0)
}

fn read_value_with_tag(
    input: &mut Reader<'_>,
    tag: u8,
    budget: &mut Budget,
    depth: usize,
) -> Result<Value, DecodeError> {
    if depth > MAX_VALUE_DEPTH {
        return Err(malformed("value nested too deep"));
    }
    budget.items(1)?;
    Ok(match tag {
        NULL => Value::Null,
        FALSE => Value::Bool(false),
        TRUE => Value::Bool(true),
        INT => Value::Int(input.signed()?),
        UINT => Value::Uint(input.varint()?),
        FLOAT => {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(input.bytes(8)?);
            Value::Float(f64::from_bits(u64::from_le_bytes(raw)))
        }
        STRING => Value::String(read_str(input, budget)?.to_owned()),
        BYTES => {
            let n = input.count(1)?;
            budget.text(n)?;
            Value::Bytes(input.bytes(n)?.to_vec())
        }
        LIST => {
            let n = input.count(1)?;
            budget.items(n)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                let tag = input.u8()?;
                items.push(read_value_with_tag(input, tag, budget, depth + 1)?);
            }
            Value::List(items)
        }
        MAP => {
            let n = input.count(1)?;
            budget.items(n)?;
            let mut entries = BTreeMap::new();
            for _ in 0..n {
                let key = read_str(input, budget)?.to_owned();
                let tag = input.u8()?;
                entries.insert(key, read_value_with_tag(input, tag, budget, depth + 1)?);
            }
            Value::Map(entries)
        }
        _ => return Err(malformed("unknown value tag")),
    })
}

pub(super) fn read_element(
    input: &mut Reader<'_>,
    budget: &mut Budget,
) -> Result<Option<Element>, DecodeError> {
    Ok(match input.u8()? {
        ABSENT => None,
        CONTAINER => Some(Element::Container(kind_from_code(input.u8()?)?)),
        tag => Some(Element::Value(read_value_with_tag(input, tag, budget, 0)?)),
    })
}

pub(super) fn read_present_element(
    input: &mut Reader<'_>,
    budget: &mut Budget,
) -> Result<Element, DecodeError> {
    read_element(input, budget)?.ok_or_else(|| malformed("missing element"))
}
