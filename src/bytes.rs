//! Byte-level primitives shared by every encoding in the crate (the document's columnar
//! format, the wire's frames and its change codec): LEB128 varints, zigzag, and a reader whose
//! every read is bounds-checked.

use smallvec::SmallVec;

use crate::DecodeError;

fn malformed(what: &str) -> DecodeError {
    DecodeError::Malformed(what.to_owned())
}

/// Where varints are written: the output message, or a column buffer that starts inline.
pub(crate) trait ByteSink {
    fn push_byte(&mut self, byte: u8);
    fn put(&mut self, bytes: &[u8]);
}

impl ByteSink for Vec<u8> {
    #[inline]
    fn push_byte(&mut self, byte: u8) {
        self.push(byte);
    }

    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl<A: smallvec::Array<Item = u8>> ByteSink for SmallVec<A> {
    #[inline]
    fn push_byte(&mut self, byte: u8) {
        self.push(byte);
    }

    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Append `v` as an unsigned LEB128 varint (at most 10 bytes).
#[inline]
pub(crate) fn write_varint(out: &mut impl ByteSink, v: u64) {
    // Most values in a column are below 128; a byte push is much cheaper than a slice copy.
    if v < 0x80 {
        out.push_byte(v as u8);
    } else {
        write_long_varint(out, v);
    }
}

fn write_long_varint(out: &mut impl ByteSink, mut v: u64) {
    let mut buf = [0u8; 10];
    let mut n = 0;
    while v >= 0x80 {
        buf[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    buf[n] = v as u8;
    out.put(&buf[..=n]);
}

/// The number of bytes [`write_varint`] takes for `v`.
pub(crate) const fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Map signed to unsigned so that small magnitudes of either sign make small varints.
pub(crate) const fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`].
pub(crate) const fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// A cursor over a byte slice whose every read is bounds-checked.
#[derive(Clone, Debug)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&first, rest) = self.bytes.split_first().ok_or(DecodeError::Truncated)?;
        self.bytes = rest;
        Ok(first)
    }

    /// A LEB128 varint of at most 10 bytes whose value fits a `u64`.
    #[inline]
    pub(crate) fn varint(&mut self) -> Result<u64, DecodeError> {
        // Almost every value in a column (run lengths, indices, zero deltas) is one byte.
        if let Some((&first, rest)) = self.bytes.split_first()
            && first < 0x80
        {
            self.bytes = rest;
            return Ok(u64::from(first));
        }
        self.varint_slow()
    }

    #[cold]
    fn varint_slow(&mut self) -> Result<u64, DecodeError> {
        // Scans the slice once instead of a checked read per byte: each message starts its
        // timestamp column with a full timestamp, several bytes long.
        let mut value = 0u64;
        for (at, &byte) in self.bytes.iter().take(10).enumerate() {
            let shift = 7 * at;
            if shift == 63 && byte > 1 {
                return Err(malformed("varint overflows 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                self.bytes = &self.bytes[at + 1..];
                return Ok(value);
            }
        }
        // Ten continuation bytes cannot get here (the tenth fails the overflow check), so the
        // input ended inside the varint.
        Err(DecodeError::Truncated)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.varint()?).map_err(|_| malformed("value does not fit 32 bits"))
    }

    /// A varint length of something that occupies at least `min_bytes_each` bytes per unit of
    /// the rest of this input: a larger declared length is truncation, caught before any
    /// allocation for it.
    pub(crate) fn count(&mut self, min_bytes_each: usize) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| DecodeError::Truncated)?;
        if n.saturating_mul(min_bytes_each.max(1)) > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        Ok(n)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.bytes.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    /// Length-prefixed UTF-8.
    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.count(1)?;
        std::str::from_utf8(self.bytes(n)?).map_err(|_| malformed("invalid UTF-8"))
    }

    /// The next byte, without taking it.
    pub(crate) fn peek(&self) -> Option<u8> {
        self.bytes.first().copied()
    }

    /// A zigzag varint.
    pub(crate) fn signed(&mut self) -> Result<i64, DecodeError> {
        self.varint().map(unzigzag)
    }

    /// What is left, taking all of it.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}
