//! The per-connection change codec: how `Changes` messages encode their changes.

use crate::DecodeError;
use crate::doc::change::Change;
use crate::doc::columnar;

/// Encodes the changes one side sends on one connection.
#[derive(Debug, Default)]
pub(crate) struct ChangeEncoder;

impl ChangeEncoder {
    pub(crate) fn new() -> Self {
        ChangeEncoder
    }

    pub(crate) fn encode(&mut self, changes: &[Change]) -> Vec<u8> {
        let refs: Vec<&Change> = changes.iter().collect();
        columnar::encode_changes(&refs)
    }
}

/// Decodes what the other side's [`ChangeEncoder`] wrote, in order.
#[derive(Debug)]
pub(crate) struct ChangeDecoder {
    max_decoded_bytes: usize,
}

impl ChangeDecoder {
    pub(crate) fn new(max_decoded_bytes: usize) -> Self {
        ChangeDecoder { max_decoded_bytes }
    }

    pub(crate) fn decode(&mut self, bytes: &[u8]) -> Result<Vec<Change>, DecodeError> {
        columnar::decode_changes(bytes, self.max_decoded_bytes)
    }
}
