//! Frames over byte streams (TCP, pipes): each frame is prefixed by its length as a varint.

use super::frame::take_varint;
use super::limits::WireLimits;
use crate::DecodeError;
use crate::bytes::write_varint;

/// Prefix a frame with its length, for writing to a byte stream.
pub fn length_prefixed(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + 4);
    write_varint(&mut out, frame.len() as u64);
    out.extend_from_slice(frame);
    out
}

/// Cuts a byte stream back into frames, whatever the chunking of the reads.
///
/// Feed every read to [`FrameReader::push`], then take frames with
/// [`FrameReader::next_frame`] until it returns `Ok(None)`. A length above
/// [`WireLimits::max_frame_bytes`] is refused as soon as its prefix arrives, before any of the
/// frame is buffered; after an error the stream cannot be resynchronized and should be closed.
#[derive(Debug)]
pub struct FrameReader {
    buffer: Vec<u8>,
    /// Bytes of `buffer` already handed out; compacted lazily so that many small frames in one
    /// read are not each a memmove.
    consumed: usize,
    max_frame_bytes: usize,
}

impl FrameReader {
    /// A reader enforcing `limits`.
    pub fn new(limits: &WireLimits) -> Self {
        FrameReader { buffer: Vec::new(), consumed: 0, max_frame_bytes: limits.max_frame_bytes }
    }

    /// Append bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.consumed > 0 && self.consumed * 2 >= self.buffer.len() {
            self.buffer.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes received and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buffer.len() - self.consumed
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        let available = &self.buffer[self.consumed..];
        let (len, rest) = match take_varint(available) {
            Ok(found) => found,
            Err(DecodeError::Truncated) => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > self.max_frame_bytes {
            return Err(DecodeError::TooLarge { size: len as u64, limit: self.max_frame_bytes as u64 });
        }
        if rest.len() < len {
            return Ok(None);
        }
        let frame = rest[..len].to_vec();
        self.consumed += available.len() - rest.len() + len;
        if self.consumed == self.buffer.len() {
            self.buffer.clear();
            self.consumed = 0;
        }
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_chunking_gives_the_same_frames() {
        let frames: Vec<Vec<u8>> = (0..50).map(|i| vec![i as u8; i * 7]).collect();
        let stream: Vec<u8> = frames.iter().flat_map(|f| length_prefixed(f)).collect();
        for chunk in [1, 2, 3, 5, 64, 1000, stream.len()] {
            let mut reader = FrameReader::new(&WireLimits::default());
            let mut out = Vec::new();
            for piece in stream.chunks(chunk) {
                reader.push(piece);
                while let Some(frame) = reader.next_frame().unwrap() {
                    out.push(frame);
                }
            }
            assert_eq!(out, frames, "chunk size {chunk}");
            assert_eq!(reader.buffered(), 0);
        }
    }

    #[test]
    fn an_oversized_length_is_refused_from_its_prefix() {
        let mut reader = FrameReader::new(&WireLimits::default().with_max_frame_bytes(100));
        reader.push(&[0xff, 0xff, 0x03]);
        assert!(matches!(reader.next_frame(), Err(DecodeError::TooLarge { .. })));
    }
}
