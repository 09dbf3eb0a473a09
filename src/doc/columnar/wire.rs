//! Byte-level building blocks of the columnar format: LEB128 varints, zigzag, run-length
//! encoded integer columns, optionally DEFLATE'd column blocks, and the decoded-size budget.
//!
//! Every reader here is bounded by the bytes it was given: lengths are checked against what
//! is left before anything is sliced or allocated, and a run length never causes an allocation
//! (runs are expanded lazily, one value per call).

use std::borrow::Cow;

use smallvec::SmallVec;

use crate::DecodeError;
pub(super) use crate::bytes::{Reader, unzigzag, varint_len, write_varint, zigzag};

/// Inline capacity of an RLE column being written (beyond it, the column moves to the heap).
pub(super) const RLE_INLINE_BYTES: usize = 16;

/// Columns shorter than this are never worth a DEFLATE attempt.
const DEFLATE_MIN_LEN: usize = 32;
/// miniz_oxide level: 9 costs little more time than 6 on columns this size and wins bytes.
const DEFLATE_LEVEL: u8 = 9;
/// Bit 0 of a column header: the block is DEFLATE'd (a varint raw length follows).
const COLUMN_DEFLATED: u64 = 1;

pub(super) fn malformed(what: &str) -> DecodeError {
    DecodeError::Malformed(format!("columnar changes: {what}"))
}

/// Writes a column of unsigned integers as runs: a zigzag header `n > 0` is followed by one
/// value repeated `n` times, `n < 0` by `-n` literal values.
///
/// Both buffers start inline: a message of one change fills each column with a value or two,
/// and twenty heap buffers per message used to cost more than encoding them.
#[derive(Debug, Default)]
pub(super) struct RleWriter {
    out: SmallVec<[u8; RLE_INLINE_BYTES]>,
    literals: SmallVec<[u64; 4]>,
    run_value: u64,
    run_len: u64,
}

impl RleWriter {
    pub(super) fn push(&mut self, value: u64) {
        if self.run_len > 0 && value == self.run_value {
            self.run_len += 1;
            return;
        }
        self.end_run();
        self.run_value = value;
        self.run_len = 1;
    }

    pub(super) fn push_signed(&mut self, value: i64) {
        self.push(zigzag(value));
    }

    /// Close the current run: long enough to pay for its own header, it is written as a run;
    /// otherwise its values join the pending literals.
    fn end_run(&mut self) {
        let min_run = if self.literals.is_empty() { 2 } else { 3 };
        if self.run_len >= min_run {
            self.flush_literals();
            write_varint(&mut self.out, zigzag(i64::try_from(self.run_len).unwrap_or(i64::MAX)));
            write_varint(&mut self.out, self.run_value);
        } else {
            for _ in 0..self.run_len {
                self.literals.push(self.run_value);
            }
        }
        self.run_len = 0;
    }

    fn flush_literals(&mut self) {
        if self.literals.is_empty() {
            return;
        }
        let n = i64::try_from(self.literals.len()).unwrap_or(i64::MAX);
        write_varint(&mut self.out, zigzag(-n));
        for &v in &self.literals {
            write_varint(&mut self.out, v);
        }
        self.literals.clear();
    }

    pub(super) fn finish(mut self) -> SmallVec<[u8; RLE_INLINE_BYTES]> {
        self.end_run();
        self.flush_literals();
        self.out
    }

    /// At least the size of the finished column.
    pub(super) fn size_bound(&self) -> usize {
        self.out.len() + 10 * (self.literals.len() + 3)
    }

    /// Finish the column and append it as a block, exactly like
    /// `write_column(out, &self.finish())`. A message leaves most columns empty or holding one
    /// value; those blocks are written directly (a one-value column is the literal header `1`
    /// and the value, far too short for DEFLATE).
    pub(super) fn write_block(self, out: &mut Vec<u8>) {
        if self.out.is_empty() && self.literals.is_empty() && self.run_len <= 1 {
            if self.run_len == 0 {
                out.push(0);
            } else {
                // At most 11 bytes, so the block header is one byte.
                let len = 1 + varint_len(self.run_value);
                out.push((len as u8) << 1);
                out.push(1);
                write_varint(out, self.run_value);
            }
            return;
        }
        write_column(out, &self.finish());
    }
}

/// Reads a column written by [`RleWriter`], one value at a time (runs are never expanded into
/// memory, so a huge declared run costs nothing until values are actually pulled).
#[derive(Debug)]
pub(super) struct RleReader<'a> {
    input: Reader<'a>,
    run_left: u64,
    run_value: u64,
    literals_left: u64,
}

impl<'a> RleReader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        RleReader { input: Reader::new(bytes), run_left: 0, run_value: 0, literals_left: 0 }
    }

    pub(super) fn next(&mut self) -> Result<u64, DecodeError> {
        loop {
            if self.run_left > 0 {
                self.run_left -= 1;
                return Ok(self.run_value);
            }
            if self.literals_left > 0 {
                self.literals_left -= 1;
                return self.input.varint();
            }
            if self.input.is_empty() {
                return Err(malformed("a column ended early"));
            }
            let header = unzigzag(self.input.varint()?);
            match header {
                0 => return Err(malformed("empty run")),
                n if n > 0 => {
                    self.run_left = n.unsigned_abs();
                    self.run_value = self.input.varint()?;
                }
                n => self.literals_left = n.unsigned_abs(),
            }
        }
    }

    pub(super) fn next_signed(&mut self) -> Result<i64, DecodeError> {
        self.next().map(unzigzag)
    }

    pub(super) fn next_index(&mut self, len: usize) -> Result<usize, DecodeError> {
        usize::try_from(self.next()?).ok().filter(|&i| i < len).ok_or_else(|| malformed("index out of range"))
    }

    /// Every value was consumed: leftovers mean the columns disagree with each other.
    #[inline]
    pub(super) fn finish(&self) -> Result<(), DecodeError> {
        if self.run_left == 0 && self.literals_left == 0 && self.input.is_empty() {
            Ok(())
        } else {
            Err(malformed("a column holds more values than the changes use"))
        }
    }
}

/// Append one column block: `varint(stored_len << 1 | deflated)`, then, if deflated,
/// `varint(raw_len)`, then the stored bytes. DEFLATE is kept only when it saves bytes.
pub(crate) fn write_column(out: &mut Vec<u8>, raw: &[u8]) {
    if raw.len() >= DEFLATE_MIN_LEN {
        let packed = miniz_oxide::deflate::compress_to_vec(raw, DEFLATE_LEVEL);
        if packed.len() + varint_len(raw.len() as u64) < raw.len() {
            write_varint(out, ((packed.len() as u64) << 1) | COLUMN_DEFLATED);
            write_varint(out, raw.len() as u64);
            out.extend_from_slice(&packed);
            return;
        }
    }
    write_varint(out, (raw.len() as u64) << 1);
    out.extend_from_slice(raw);
}

/// Read one column block, inflating it if needed. The declared raw length is charged to the
/// budget before inflating, and inflation stops at that length.
#[inline]
pub(crate) fn read_column<'a>(
    input: &mut Reader<'a>,
    budget: &mut Budget,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    let header = input.varint()?;
    let stored = usize::try_from(header >> 1).map_err(|_| DecodeError::Truncated)?;
    if header & COLUMN_DEFLATED == 0 {
        return Ok(Cow::Borrowed(input.bytes(stored)?));
    }
    inflate_column(input, stored, budget)
}

// Kept out of line: a message's columns are all stored raw, and the inflating path is large.
#[inline(never)]
fn inflate_column<'a>(
    input: &mut Reader<'a>,
    stored: usize,
    budget: &mut Budget,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    let raw_len = usize::try_from(input.varint()?).map_err(|_| budget.too_large(usize::MAX))?;
    let packed = input.bytes(stored)?;
    budget.charge(raw_len)?;
    let raw = miniz_oxide::inflate::decompress_to_vec_with_limit(packed, raw_len)
        .map_err(|_| malformed("corrupt DEFLATE column"))?;
    if raw.len() != raw_len {
        return Err(malformed("DEFLATE column has the wrong length"));
    }
    Ok(Cow::Owned(raw))
}

/// What decoding may still allocate: every change, op, string and value is charged (at its
/// in-memory size) before it is built, so a small hostile input that declares huge runs or
/// counts fails with [`DecodeError::TooLarge`] instead of exhausting memory.
#[derive(Debug)]
pub(crate) struct Budget {
    used: usize,
    limit: usize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Self {
        Budget { used: 0, limit }
    }

    pub(crate) fn charge(&mut self, bytes: usize) -> Result<(), DecodeError> {
        match self.used.checked_add(bytes) {
            Some(used) if used <= self.limit => {
                self.used = used;
                Ok(())
            }
            _ => Err(self.too_large(bytes)),
        }
    }

    fn too_large(&self, bytes: usize) -> DecodeError {
        DecodeError::TooLarge {
            size: (self.used as u64).saturating_add(bytes as u64),
            limit: self.limit as u64,
        }
    }
}
