//! Document configuration.

/// Limits and policies of a [`crate::Document`]. Construct with [`Default`] and the builder
/// methods; fields may be added in later versions.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DocumentConfig {
    /// Refuse remote changes whose timestamp is further than this ahead of the wall clock fed
    /// through [`crate::Document::set_wall_clock`] (`None`: accept any). Protects the hybrid
    /// clock, and with it last-writer-wins ordering, from a peer with a broken clock.
    pub max_clock_drift_ms: Option<u64>,
    /// How many changes may wait for missing dependencies before imports are refused.
    pub max_pending_changes: usize,
    /// The most memory an import or load may build from one buffer: the decompressed payload,
    /// and for change histories the decoded changes themselves (about 200 bytes per typed
    /// character), charged before they are allocated. Raise it to load histories of more than
    /// about five million edits; lower it for buffers from untrusted peers.
    pub max_decoded_bytes: usize,
    /// Store a change that continues the same peer's previous one (made on top of it and
    /// nothing else, after a change of text and list edits only) as part of it, so that typing
    /// costs one stored change per run of keystrokes instead of one per keystroke. The merged
    /// change carries the timestamp of its last part: the wall-clock times of the earlier text
    /// and list edits are not kept (no operation's effect depends on them). Versions inside a
    /// merged change can still be checked out. On by default.
    pub merge_changes: bool,
}

impl Default for DocumentConfig {
    fn default() -> Self {
        DocumentConfig {
            max_clock_drift_ms: Some(24 * 60 * 60 * 1000),
            max_pending_changes: 100_000,
            max_decoded_bytes: 1024 * 1024 * 1024,
            merge_changes: true,
        }
    }
}

impl DocumentConfig {
    /// Set [`DocumentConfig::max_clock_drift_ms`].
    pub fn with_max_clock_drift_ms(mut self, drift: Option<u64>) -> Self {
        self.max_clock_drift_ms = drift;
        self
    }

    /// Set [`DocumentConfig::max_pending_changes`].
    pub fn with_max_pending_changes(mut self, limit: usize) -> Self {
        self.max_pending_changes = limit;
        self
    }

    /// Set [`DocumentConfig::merge_changes`].
    pub fn with_merge_changes(mut self, merge: bool) -> Self {
        self.merge_changes = merge;
        self
    }

    /// Set [`DocumentConfig::max_decoded_bytes`].
    pub fn with_max_decoded_bytes(mut self, limit: usize) -> Self {
        self.max_decoded_bytes = limit;
        self
    }
}
