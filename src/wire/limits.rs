//! Size limits on what a peer may make us decode.

/// Limits applied to every frame received, checked before anything is allocated for it.
///
/// The defaults suit a server facing untrusted clients; raise them for large documents
/// (a whole document's first sync travels in one frame).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WireLimits {
    /// Largest frame accepted, as received (compressed or not), in bytes.
    pub max_frame_bytes: usize,
    /// Largest payload a compressed frame may expand to, in bytes: bounds what an lz4 bomb
    /// can make us allocate.
    pub max_decompressed_bytes: usize,
    /// Most messages in one frame.
    pub max_messages_per_frame: usize,
}

impl Default for WireLimits {
    fn default() -> Self {
        WireLimits {
            max_frame_bytes: 16 * 1024 * 1024,
            max_decompressed_bytes: 64 * 1024 * 1024,
            max_messages_per_frame: 4096,
        }
    }
}

impl WireLimits {
    /// Set [`WireLimits::max_frame_bytes`].
    pub fn with_max_frame_bytes(mut self, bytes: usize) -> Self {
        self.max_frame_bytes = bytes;
        self
    }

    /// Set [`WireLimits::max_decompressed_bytes`].
    pub fn with_max_decompressed_bytes(mut self, bytes: usize) -> Self {
        self.max_decompressed_bytes = bytes;
        self
    }

    /// Set [`WireLimits::max_messages_per_frame`].
    pub fn with_max_messages_per_frame(mut self, count: usize) -> Self {
        self.max_messages_per_frame = count;
        self
    }
}
