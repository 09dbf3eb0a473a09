//! Fan-out: after changes are applied, send every subscriber what it lacks, and trim
//! history that every subscriber has passed.

use std::sync::Arc;

use super::Server;
use crate::session::sync_document::SyncDocument;
use crate::store::DocumentStore;
use crate::wire::Message;
use crate::{Error, ProtocolError, ServerEvent, VersionVector};

/// What a document gained since the last fan-out, when it is known exactly.
#[derive(Debug)]
pub(super) struct Recent {
    /// Whether `base` and `changes` describe what changed since the last fan-out; kept (not
    /// removed) when they do not, so that live typing reuses the buffers.
    pub(super) valid: bool,
    /// The document's version before.
    pub(super) base: VersionVector,
    /// The changes applied since, in order.
    pub(super) changes: Vec<crate::Change>,
}

impl Recent {
    pub(super) fn invalidate(&mut self) {
        self.valid = false;
        self.changes.clear();
    }
}

impl<S: DocumentStore> Server<S> {
    pub(super) fn fan_out(&mut self) {
        let window = u64::from(self.config.window_bytes);
        let mut deferred = Vec::new();
        let mut dirty = std::mem::take(&mut self.dirty);
        for name in dirty.drain(..) {
            let recent = self.recent.get(&name).filter(|r| r.valid);
            let Some(doc) = self.store.get(&name) else { continue };
            let Some(subscribers) = self.subscribers.get(&name) else { continue };
            for (id, slot) in subscribers {
                let Some(conn) = self.connections.get_mut(id) else { continue };
                let Some(sub) = conn.subscriptions.get_mut(slot) else { continue };
                if sub.remote.includes(doc.version()) {
                    continue;
                }
                if window > 0 && conn.sent.saturating_sub(conn.acked) >= window {
                    // Nothing is queued for a slow reader: its version vector says what it
                    // lacks, and it gets all of it, merged, once the window opens.
                    conn.window_full_since.get_or_insert(self.last_now.unwrap_or(conn.last_heard));
                    if !deferred.contains(&name) {
                        deferred.push(name.clone());
                    }
                    continue;
                }
                if let Some(batches) = recent.and_then(|r| r.missing_for(&sub.remote, doc.version())) {
                    for bytes in sub.codec.encode(&batches) {
                        conn.outbox.push(Message::Changes { doc: *slot, changes: bytes });
                    }
                    sub.remote.merge(doc.version());
                    continue;
                }
                match doc.changes_since(&sub.remote) {
                    Ok(changes) if !changes.is_empty() => {
                        for bytes in sub.codec.encode(&changes) {
                            conn.outbox.push(Message::Changes { doc: *slot, changes: bytes });
                        }
                    }
                    Ok(_) => {}
                    Err(Error::HistoryTrimmed) if !doc.version().includes(&sub.remote) => {
                        // Behind the trimmed history and holding edits the server has not
                        // applied yet: a snapshot now could not replace its copy. Its edits
                        // are on their way (it pushes after `Sync`); resync once they land.
                        continue;
                    }
                    Err(Error::HistoryTrimmed) => {
                        // The subscriber is behind the server's trimmed history: resync it.
                        conn.outbox.push(Message::Sync {
                            doc: *slot,
                            version: doc.version().clone(),
                            update: doc.encode(),
                        });
                    }
                    Err(e) => {
                        // Not from `Document` (it only trims); another `SyncDocument` failed
                        // to say what this subscriber lacks. Say so rather than leave it
                        // silently behind; the next change retries.
                        self.events.push_back(ServerEvent::Error {
                            connection: *id,
                            error: ProtocolError::Document(e),
                        });
                        continue;
                    }
                }
                sub.remote.merge(doc.version());
            }
            if let Some(recent) = self.recent.get_mut(&name) {
                recent.invalidate();
            }
            self.compact(&name);
        }
        // Reuse the list's buffer; documents deferred by flow control stay dirty.
        dirty.extend(deferred);
        self.dirty = dirty;
    }

    /// Queue `name` for the next fan-out (once).
    pub(super) fn mark_dirty(&mut self, name: Arc<str>) {
        if !self.dirty.contains(&name) {
            self.dirty.push(name);
        }
    }

    /// Trim the history of `name` up to what every subscriber holds, if that is far enough
    /// past the last trim ([`crate::ServerConfig::compact_after_ops`]).
    fn compact(&mut self, name: &str) {
        let Some(threshold) = self.config.compact_after_ops else { return };
        let Some(subscribers) = self.subscribers.get(name) else { return };
        let Some(doc) = self.store.get(name) else { return };
        // The meet of downward-closed versions is downward closed: a version of the document.
        let mut floor = doc.version().clone();
        for (id, slot) in subscribers {
            let Some(sub) = self.connections.get(id).and_then(|c| c.subscriptions.get(slot)) else {
                continue;
            };
            floor = meet(&floor, &sub.remote);
        }
        let trimmed = doc.trimmed_version().total_ops();
        if floor.total_ops().saturating_sub(trimmed) < threshold || !floor.includes(doc.trimmed_version()) {
            return;
        }
        if let Some(doc) = self.store.get_mut(name) {
            // Cannot fail for a version of the document; if it did, keeping history is safe.
            if doc.trim_history(&floor).is_ok() {
                self.events
                    .push_back(ServerEvent::HistoryCompacted { document: Arc::from(name), version: floor });
            }
        }
    }
}

/// For each peer, the smaller of the two counts.
pub(super) fn meet(a: &VersionVector, b: &VersionVector) -> VersionVector {
    let mut out = VersionVector::new();
    for (peer, end) in a.iter() {
        out.set(peer, end.min(b.get(peer)));
    }
    out
}

impl Recent {
    /// The changes a subscriber at `remote` lacks, if they are exactly the recent ones it does
    /// not hold yet (taking them brings it to `now`); `None` when the history must be asked.
    /// Borrowed when it lacks all of them, the usual case for everyone but the author.
    fn missing_for(
        &self,
        remote: &VersionVector,
        now: &VersionVector,
    ) -> Option<std::borrow::Cow<'_, [crate::Change]>> {
        if !remote.includes(&self.base) {
            return None;
        }
        let mut reached = remote.clone();
        let mut skipped = false;
        for change in &self.changes {
            let span = change.span();
            if remote.contains_span(&span) {
                skipped = true; // its author, or a replica that already has it
                continue;
            }
            if remote.get(span.peer()) > span.start.counter {
                return None; // holds part of it: let the history cut it
            }
            reached.extend_to(&span);
        }
        if !reached.includes(now) {
            return None;
        }
        Some(if skipped {
            self.changes
                .iter()
                .filter(|c| !remote.contains_span(&c.span()))
                .cloned()
                .collect::<Vec<_>>()
                .into()
        } else {
            self.changes.as_slice().into()
        })
    }
}
