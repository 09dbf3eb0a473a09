//! How sessions put changes into `Changes` messages: the wire codec, one pair per document
//! and connection (counters and Lamport times are per document, so that is where the
//! codec's predictions hit), and batches small enough for the receiver's limits.

use smallvec::SmallVec;

use crate::doc::change::Change;
use crate::doc::op::OpContent;
use crate::wire::change_codec::{ChangeCodecLimits, ChangeDecoder, ChangeEncoder};

/// Most changes, ops, and text bytes the sessions put in one batch: well inside the codec's
/// default decoding limits, so that a conforming peer is never refused.
const BATCH_CHANGES: usize = 4096;
const BATCH_OPS: usize = 16 * 1024;
const BATCH_TEXT_BYTES: usize = 4 * 1024 * 1024;

/// The codec state of one document on one connection, both directions.
#[derive(Debug)]
pub(crate) struct DocumentCodec {
    encoder: ChangeEncoder,
    decoder: ChangeDecoder,
}

impl DocumentCodec {
    pub(crate) fn new() -> Self {
        DocumentCodec {
            encoder: ChangeEncoder::new(),
            decoder: ChangeDecoder::new(ChangeCodecLimits::default()),
        }
    }

    /// Encode `changes` as one or more batches, each within the receiver's limits. Nearly
    /// always one (a keystroke), kept inline so that it costs no allocation of its own.
    pub(crate) fn encode(&mut self, changes: &[Change]) -> SmallVec<[Vec<u8>; 1]> {
        let mut batches = SmallVec::new();
        let mut start = 0;
        while start < changes.len() {
            let (mut ops, mut text) = (0, 0);
            let mut end = start;
            while end < changes.len() && end - start < BATCH_CHANGES {
                let change = &changes[end];
                let change_text: usize = change
                    .ops
                    .iter()
                    .map(|op| match &op.content {
                        OpContent::TextInsert { text, .. } => text.len(),
                        _ => 0,
                    })
                    .sum();
                // Always take at least one change, however large.
                if end > start
                    && (ops + change.ops.len() > BATCH_OPS || text + change_text > BATCH_TEXT_BYTES)
                {
                    break;
                }
                ops += change.ops.len();
                text += change_text;
                end += 1;
            }
            let mut bytes = Vec::new();
            self.encoder.encode(&changes[start..end], &mut bytes);
            batches.push(bytes);
            start = end;
        }
        batches
    }

    /// Decode what the other side's codec for this document wrote, in order. After an error
    /// the state no longer matches the sender's: the connection must be closed.
    pub(crate) fn decode(&mut self, bytes: &[u8]) -> Result<Vec<Change>, crate::DecodeError> {
        self.decoder.decode(bytes)
    }
}
