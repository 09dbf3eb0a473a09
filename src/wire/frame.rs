//! Frames: a two-byte header, then the messages, lz4-compressed when that is smaller.
//!
//! ```text
//! frame   = version:u8 flags:u8 body
//! flags   = bit 0: body is lz4 (the other bits must be zero)
//! body    = payload                            (flags bit 0 clear)
//!         | raw_len:varint lz4_block(payload)  (flags bit 0 set)
//! payload = count:varint message{count}        (postcard, see message.rs)
//! ```
//! Compression needs no agreement: the sender compresses when it pays, the flag says so.

use super::limits::WireLimits;
use super::message::Message;
use crate::DecodeError;
use crate::bytes::{Reader, varint_len, write_varint};

/// The protocol version this library speaks (and the version byte of its frames).
pub const PROTOCOL_VERSION: u8 = 2;

const FLAG_LZ4: u8 = 0b1;
/// Payloads smaller than this are never worth compressing.
const COMPRESS_FROM: usize = 96;
/// lz4 cannot expand a block by more than this factor; a larger declared size is a lie.
const LZ4_MAX_RATIO: usize = 255;

/// Encode messages as one frame.
pub fn encode_frame(messages: &[Message]) -> Vec<u8> {
    // Written in place after the header; only a compressible payload is copied again.
    let mut frame = Vec::with_capacity(32);
    frame.extend_from_slice(&[PROTOCOL_VERSION, 0]);
    write_varint(&mut frame, messages.len() as u64);
    for message in messages {
        // Serializing plain data into a Vec cannot fail.
        frame = postcard::to_extend(message, frame).expect("postcard to a Vec is infallible");
    }
    let payload = &frame[2..];
    if payload.len() >= COMPRESS_FROM {
        let compressed = lz4_flex::block::compress(payload);
        if compressed.len() + varint_len(payload.len() as u64) < payload.len() {
            let mut out = Vec::with_capacity(compressed.len() + 12);
            out.extend_from_slice(&[PROTOCOL_VERSION, FLAG_LZ4]);
            write_varint(&mut out, payload.len() as u64);
            out.extend_from_slice(&compressed);
            return out;
        }
    }
    frame
}

/// Decode one frame, checking every size against `limits` before allocating for it.
pub fn decode_frame(frame: &[u8], limits: &WireLimits) -> Result<Vec<Message>, DecodeError> {
    let mut messages = Vec::new();
    decode_frame_into(frame, limits, &mut messages)?;
    Ok(messages)
}

/// [`decode_frame`] into a buffer the caller keeps between frames (cleared first), which
/// saves an allocation per frame on a busy connection. On error the buffer is left empty.
pub fn decode_frame_into(
    frame: &[u8],
    limits: &WireLimits,
    messages: &mut Vec<Message>,
) -> Result<(), DecodeError> {
    messages.clear();
    let result = decode_frame_body(frame, limits, messages);
    if result.is_err() {
        messages.clear();
    }
    result
}

fn decode_frame_body(
    frame: &[u8],
    limits: &WireLimits,
    messages: &mut Vec<Message>,
) -> Result<(), DecodeError> {
    if frame.len() > limits.max_frame_bytes {
        return Err(DecodeError::TooLarge { size: frame.len() as u64, limit: limits.max_frame_bytes as u64 });
    }
    let [version, flags, body @ ..] = frame else { return Err(DecodeError::Truncated) };
    if *version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(*version));
    }
    if flags & !FLAG_LZ4 != 0 {
        return Err(DecodeError::UnknownFlags(*flags));
    }
    if flags & FLAG_LZ4 == 0 {
        return decode_payload(body, limits, messages);
    }
    let (raw_len, block) = take_varint(body)?;
    let raw_len = usize::try_from(raw_len).unwrap_or(usize::MAX);
    let limit = limits.max_decompressed_bytes.min(block.len().saturating_mul(LZ4_MAX_RATIO));
    if raw_len > limit {
        return Err(DecodeError::TooLarge { size: raw_len as u64, limit: limit as u64 });
    }
    let mut payload = vec![0; raw_len];
    let written = lz4_flex::block::decompress_into(block, &mut payload).map_err(|_| DecodeError::Lz4)?;
    if written != raw_len {
        return Err(DecodeError::Lz4);
    }
    decode_payload(&payload, limits, messages)
}

fn decode_payload(
    payload: &[u8],
    limits: &WireLimits,
    messages: &mut Vec<Message>,
) -> Result<(), DecodeError> {
    let (count, mut rest) = take_varint(payload)?;
    // Every message takes at least one byte, so the input bounds the count too.
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    if count > limits.max_messages_per_frame {
        return Err(DecodeError::TooLarge {
            size: count as u64,
            limit: limits.max_messages_per_frame as u64,
        });
    }
    if count > rest.len() {
        return Err(DecodeError::Truncated);
    }
    messages.reserve(count);
    for _ in 0..count {
        let (message, tail) = postcard::take_from_bytes::<Message>(rest)
            .map_err(|e| DecodeError::Malformed(format!("message: {e}")))?;
        messages.push(message);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(DecodeError::Malformed(format!("{} bytes after the last message", rest.len())));
    }
    Ok(())
}

/// A varint and the bytes after it.
pub(super) fn take_varint(bytes: &[u8]) -> Result<(u64, &[u8]), DecodeError> {
    let mut reader = Reader::new(bytes);
    let value = reader.varint()?;
    Ok((value, reader.rest()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{CloseReason, DocSlot};
    use crate::{PeerId, VersionVector};

    fn sample() -> Vec<Message> {
        let mut version = VersionVector::new();
        version.set(PeerId::new(7), 42);
        vec![
            Message::Hello {
                min_version: 1,
                max_version: 1,
                peer: PeerId::new(u64::MAX),
                client_name: "tester".into(),
                token: vec![1, 2, 3],
            },
            Message::Subscribe { doc: DocSlot(3), name: "notes".into(), version: version.clone() },
            Message::Changes { doc: DocSlot(3), changes: vec![9; 10] },
            Message::NeedChanges { doc: DocSlot(0), version },
            Message::Close { reason: CloseReason::IdleTimeout },
        ]
    }

    #[test]
    fn frames_round_trip_compressed_or_not() {
        let limits = WireLimits::default();
        let small = sample();
        let frame = encode_frame(&small);
        assert_eq!(frame[1], 0, "a small frame is not worth compressing");
        assert_eq!(decode_frame(&frame, &limits).unwrap(), small);

        let big = vec![Message::Changes { doc: DocSlot(1), changes: vec![b'a'; 10_000] }];
        let frame = encode_frame(&big);
        assert_eq!(frame[1], FLAG_LZ4);
        assert!(frame.len() < 200, "repetitive payload compresses: {} bytes", frame.len());
        assert_eq!(decode_frame(&frame, &limits).unwrap(), big);
    }

    #[test]
    fn a_keystroke_frame_is_a_few_bytes_of_overhead() {
        let frame = encode_frame(&[Message::Changes { doc: DocSlot(0), changes: vec![0; 8] }]);
        // version, flags, count, tag, slot, length: six bytes around the change itself.
        assert_eq!(frame.len(), 8 + 6);
    }

    #[test]
    fn bad_headers_are_typed_errors() {
        let limits = WireLimits::default();
        assert_eq!(decode_frame(&[], &limits), Err(DecodeError::Truncated));
        let v = PROTOCOL_VERSION;
        assert_eq!(decode_frame(&[v + 1, 0, 0], &limits), Err(DecodeError::UnsupportedVersion(v + 1)));
        assert_eq!(decode_frame(&[1, 0, 0], &limits), Err(DecodeError::UnsupportedVersion(1)));
        assert_eq!(decode_frame(&[v, 0x80, 0], &limits), Err(DecodeError::UnknownFlags(0x80)));
        assert!(matches!(decode_frame(&[v, 0, 1, 200], &limits), Err(DecodeError::Malformed(_))));
        assert!(matches!(decode_frame(&[v, 0, 0, 0], &limits), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn an_lz4_bomb_is_refused_before_allocating() {
        let limits = WireLimits::default();
        // Claims a 4 GiB payload from a few bytes.
        let mut frame = vec![PROTOCOL_VERSION, FLAG_LZ4];
        write_varint(&mut frame, 4 << 30);
        frame.extend_from_slice(&[0x1f, 0, 0, 0]);
        assert!(matches!(decode_frame(&frame, &limits), Err(DecodeError::TooLarge { .. })));
        let small = WireLimits::default().with_max_frame_bytes(8);
        let frame = encode_frame(&sample());
        assert!(matches!(decode_frame(&frame, &small), Err(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn byte_fields_keep_the_layout_of_a_byte_sequence() {
        // `serialize_bytes` must write exactly what a `Vec<u8>` sequence would, so that the
        // documented layout (length, then the bytes) holds.
        let message = Message::Changes { doc: DocSlot(2), changes: vec![7, 0, 255] };
        let bytes = postcard::to_allocvec(&message).unwrap();
        assert_eq!(bytes, [5, 2, 3, 7, 0, 255]);
    }

    #[test]
    fn message_count_is_bounded() {
        let limits = WireLimits::default().with_max_messages_per_frame(2);
        let frame = encode_frame(&sample());
        assert!(matches!(decode_frame(&frame, &limits), Err(DecodeError::TooLarge { .. })));
    }
}
