//! The binary envelope around every encoding the document produces.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "CRDS"
//! 4       1     format version (1)
//! 5       1     kind: 1 changes, 2 document with history, 3 state snapshot
//! 6       1     flags: bit 0 = payload is lz4-compressed
//! 7       4     CRC-32 of the payload bytes as stored (little endian)
//! 11      4     uncompressed payload length (little endian), checked against the limit
//! 15      ...   payload, optionally lz4 block-compressed
//! ```
//!
//! Payloads: changes are the columnar encoding of `super::columnar`; a document is postcard of
//! `{ base: Option<state snapshot>, changes: columnar bytes }`; a state snapshot is postcard.
//!
//! The checksum turns bit flips into [`DecodeError::ChecksumMismatch`] instead of a
//! well-formed but different document; the declared length is checked against
//! [`crate::DocumentConfig::max_decoded_bytes`] before anything is allocated for it.

use std::borrow::Cow;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::DecodeError;

const MAGIC: &[u8; 4] = b"CRDS";
const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 15;
const FLAG_LZ4: u8 = 1;

/// What an encoded buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PayloadKind {
    Changes = 1,
    Document = 2,
    StateSnapshot = 3,
    /// A document with its history and a state section (`state_section`).
    DocumentState = 4,
}

impl PayloadKind {
    fn name(self) -> &'static str {
        match self {
            PayloadKind::Changes => "changes",
            PayloadKind::Document => "a document",
            PayloadKind::StateSnapshot => "a state snapshot",
            PayloadKind::DocumentState => "a document",
        }
    }

    fn from_byte(b: u8) -> Option<PayloadKind> {
        match b {
            1 => Some(PayloadKind::Changes),
            2 => Some(PayloadKind::Document),
            3 => Some(PayloadKind::StateSnapshot),
            4 => Some(PayloadKind::DocumentState),
            _ => None,
        }
    }
}

/// How to encode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EncodeOptions {
    /// Compress the payload with lz4 (kept only when it makes the output smaller).
    pub lz4: bool,
}

impl EncodeOptions {
    /// Options with lz4 compression on.
    pub fn lz4() -> Self {
        EncodeOptions { lz4: true }
    }
}

/// Wrap a postcard encoding of `value`.
pub(crate) fn encode<T: Serialize + ?Sized>(kind: PayloadKind, value: &T, options: EncodeOptions) -> Vec<u8> {
    // Serializing our own in-memory types into a Vec cannot fail: every sequence they contain
    // has a known length, which is all postcard needs.
    let raw = postcard::to_allocvec(value).expect("postcard serialization of document types is infallible");
    encode_raw(kind, raw, options)
}

/// Wrap an already encoded payload.
pub(crate) fn encode_raw(kind: PayloadKind, raw: Vec<u8>, options: EncodeOptions) -> Vec<u8> {
    let raw_len = u32::try_from(raw.len()).unwrap_or(u32::MAX);
    let (flags, payload) = if options.lz4 {
        let compressed = lz4_flex::block::compress(&raw);
        if compressed.len() < raw.len() { (FLAG_LZ4, compressed) } else { (0, raw) }
    } else {
        (0, raw)
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.push(kind as u8);
    out.push(flags);
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&raw_len.to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Which kind the buffer holds, after checking the header only.
pub(crate) fn peek_kind(bytes: &[u8]) -> Result<PayloadKind, DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(if bytes.len() >= 4 && &bytes[..4] != MAGIC {
            DecodeError::BadMagic
        } else {
            DecodeError::Truncated
        });
    }
    if &bytes[..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if bytes[4] != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion(bytes[4]));
    }
    PayloadKind::from_byte(bytes[5])
        .ok_or(DecodeError::Malformed(format!("unknown payload kind {}", bytes[5])))
}

/// Check the envelope and return the raw payload (decompressed if needed).
pub(crate) fn decode_raw<'a>(
    expected: &[PayloadKind],
    bytes: &'a [u8],
    max_decoded_bytes: usize,
) -> Result<(PayloadKind, Cow<'a, [u8]>), DecodeError> {
    let kind = peek_kind(bytes)?;
    if !expected.contains(&kind) {
        return Err(DecodeError::WrongKind { expected: expected[0].name(), found: kind.name() });
    }
    let flags = bytes[6];
    if flags & !FLAG_LZ4 != 0 {
        return Err(DecodeError::UnknownFlags(flags));
    }
    let crc = u32::from_le_bytes([bytes[7], bytes[8], bytes[9], bytes[10]]);
    let raw_len = u32::from_le_bytes([bytes[11], bytes[12], bytes[13], bytes[14]]) as usize;
    let payload = &bytes[HEADER_LEN..];
    if crc32fast::hash(payload) != crc {
        return Err(DecodeError::ChecksumMismatch);
    }
    if raw_len > max_decoded_bytes {
        return Err(DecodeError::TooLarge { size: raw_len as u64, limit: max_decoded_bytes as u64 });
    }
    if flags & FLAG_LZ4 != 0 {
        let decompressed = lz4_flex::block::decompress(payload, raw_len).map_err(|_| DecodeError::Lz4)?;
        if decompressed.len() != raw_len {
            return Err(DecodeError::Lz4);
        }
        Ok((kind, Cow::Owned(decompressed)))
    } else if payload.len() != raw_len {
        Err(DecodeError::Truncated)
    } else {
        Ok((kind, Cow::Borrowed(payload)))
    }
}

/// Decode a postcard payload that must fill the whole buffer.
pub(crate) fn from_postcard<T: DeserializeOwned>(raw: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) =
        postcard::take_from_bytes::<T>(raw).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}
