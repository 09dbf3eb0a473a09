//! The server side of awareness: the states of each document, coalesced out, expired.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::{AwarenessConfig, WireEntry, WireMessage};
use crate::plugin::{
    PluginError, PluginId, Recipients, ServerPlugin, ServerPluginMessage, decode_message, encode_message,
};
use crate::{ConnectionId, PeerId};

/// The server awareness plugin: holds every replica's state per document (as the bytes the
/// client sent), forwards changes to the document's other subscribers at most once per
/// flush interval, and expires states. Register it with [`crate::Server::add_plugin`].
#[derive(Debug)]
pub struct AwarenessServer {
    config: AwarenessConfig,
    documents: BTreeMap<Arc<str>, DocumentStates>,
    outbox: VecDeque<ServerPluginMessage>,
}

#[derive(Debug, Default)]
struct DocumentStates {
    states: BTreeMap<PeerId, State>,
    subscribers: BTreeMap<ConnectionId, PeerId>,
    /// Replicas whose state changed (or went) since the last flush.
    changed: BTreeSet<PeerId>,
    last_flush: Option<Instant>,
}

#[derive(Debug)]
struct State {
    clock: u64,
    bytes: Vec<u8>,
    /// The connection that set it: only that connection's end removes it.
    connection: ConnectionId,
    renewed: Instant,
}

impl AwarenessServer {
    /// A server awareness plugin.
    pub fn new(config: AwarenessConfig) -> Self {
        AwarenessServer { config, documents: BTreeMap::new(), outbox: VecDeque::new() }
    }

    /// The replicas with a state in `document`.
    pub fn present(&self, document: &str) -> impl Iterator<Item = PeerId> + '_ {
        self.documents.get(document).into_iter().flat_map(|d| d.states.keys().copied())
    }

    /// A replica's state changed: flush now if the document's last flush is an interval
    /// old (leading edge), else at the end of the interval ([`ServerPlugin::handle_timeout`]).
    fn changed(&mut self, now: Instant, name: &Arc<str>, peer: PeerId) {
        let interval = self.config.flush_interval;
        let Some(doc) = self.documents.get_mut(name) else { return };
        doc.changed.insert(peer);
        if doc.last_flush.is_none_or(|at| now >= at + interval) {
            self.flush(now, name);
        }
    }

    /// Send every subscriber what changed, without its own state.
    fn flush(&mut self, now: Instant, name: &Arc<str>) {
        let Some(doc) = self.documents.get_mut(name) else { return };
        if doc.changed.is_empty() {
            return;
        }
        doc.last_flush = Some(now);
        let changed = std::mem::take(&mut doc.changed);
        let entries: Vec<WireEntry> = changed
            .iter()
            .map(|peer| match doc.states.get(peer) {
                Some(state) => {
                    WireEntry { peer: *peer, clock: state.clock, state: Some(state.bytes.clone()) }
                }
                None => WireEntry { peer: *peer, clock: 0, state: None },
            })
            .collect();
        // Built (copying the states) only if some subscriber changed nothing this interval.
        let mut shared = None;
        for (connection, subscriber) in &doc.subscribers {
            // Most subscribers did not change anything in this interval: one encoding for all.
            let body = if changed.contains(subscriber) {
                let theirs: Vec<WireEntry> =
                    entries.iter().filter(|e| e.peer != *subscriber).cloned().collect();
                if theirs.is_empty() {
                    continue;
                }
                encode_message(&WireMessage::States { full: false, entries: theirs })
            } else {
                shared
                    .get_or_insert_with(|| {
                        encode_message(&WireMessage::States { full: false, entries: entries.clone() })
                    })
                    .clone()
            };
            self.outbox.push_back(ServerPluginMessage::new(
                Recipients::Connection(*connection),
                Some(name.clone()),
                body,
            ));
        }
    }

    fn send_full(&mut self, connection: ConnectionId, peer: PeerId, name: &Arc<str>) {
        let Some(doc) = self.documents.get(name) else { return };
        let entries = doc
            .states
            .iter()
            .filter(|(p, _)| **p != peer)
            .map(|(p, s)| WireEntry { peer: *p, clock: s.clock, state: Some(s.bytes.clone()) })
            .collect();
        let body = encode_message(&WireMessage::States { full: true, entries });
        self.outbox.push_back(ServerPluginMessage::new(
            Recipients::Connection(connection),
            Some(name.clone()),
            body,
        ));
    }

    /// Remove the state `connection` set in `name`, if it is still that connection's.
    fn remove(&mut self, now: Instant, connection: ConnectionId, peer: PeerId, name: &Arc<str>) {
        let Some(doc) = self.documents.get_mut(name) else { return };
        doc.subscribers.remove(&connection);
        if doc.states.get(&peer).is_some_and(|s| s.connection == connection) {
            doc.states.remove(&peer);
            self.changed(now, name, peer);
        }
        if let Some(doc) = self.documents.get(name)
            && doc.subscribers.is_empty()
            && doc.states.is_empty()
        {
            self.documents.remove(name);
        }
    }
}

impl ServerPlugin for AwarenessServer {
    fn id(&self) -> PluginId {
        PluginId::AWARENESS
    }

    fn on_subscribed(&mut self, _now: Instant, connection: ConnectionId, peer: PeerId, document: &Arc<str>) {
        self.documents.entry(document.clone()).or_default().subscribers.insert(connection, peer);
        self.send_full(connection, peer, document);
    }

    fn on_unsubscribed(&mut self, now: Instant, connection: ConnectionId, peer: PeerId, document: &Arc<str>) {
        self.remove(now, connection, peer, document);
    }

    fn on_disconnected(&mut self, now: Instant, connection: ConnectionId, peer: PeerId) {
        let names: Vec<Arc<str>> = self
            .documents
            .iter()
            .filter(|(_, d)| d.subscribers.contains_key(&connection))
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            self.remove(now, connection, peer, &name);
        }
    }

    fn on_message(
        &mut self,
        now: Instant,
        from: ConnectionId,
        peer: PeerId,
        document: Option<&Arc<str>>,
        body: &[u8],
    ) -> Result<(), PluginError> {
        let name = super::document_of(document)?;
        match decode_message::<WireMessage>(body)? {
            WireMessage::Query => {
                self.send_full(from, peer, name);
                Ok(())
            }
            WireMessage::Set { clock, state } => {
                let doc = self.documents.entry(name.clone()).or_default();
                let Some(bytes) = state else {
                    if doc.states.remove(&peer).is_some() {
                        self.changed(now, name, peer);
                    }
                    return Ok(());
                };
                if bytes.len() > self.config.max_state_bytes {
                    return Err(PluginError::Refused(format!(
                        "awareness state of {} bytes, at most {} allowed",
                        bytes.len(),
                        self.config.max_state_bytes
                    )));
                }
                let renewal = doc.states.get(&peer).is_some_and(|s| s.clock == clock && s.bytes == bytes);
                doc.states.insert(peer, State { clock, bytes, connection: from, renewed: now });
                if !renewal {
                    self.changed(now, name, peer);
                }
                Ok(())
            }
            WireMessage::States { .. } => Err(PluginError::Refused("client-bound awareness message".into())),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let (timeout, interval) = (self.config.timeout, self.config.flush_interval);
        let names: Vec<Arc<str>> = self.documents.keys().cloned().collect();
        for name in names {
            let Some(doc) = self.documents.get_mut(&name) else { continue };
            let expired: Vec<PeerId> =
                doc.states.iter().filter(|(_, s)| now >= s.renewed + timeout).map(|(p, _)| *p).collect();
            for peer in expired {
                doc.states.remove(&peer);
                doc.changed.insert(peer);
            }
            if !doc.changed.is_empty() && doc.last_flush.is_none_or(|at| now >= at + interval) {
                self.flush(now, &name);
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.documents
            .values()
            .flat_map(|doc| {
                let flush = (!doc.changed.is_empty())
                    .then(|| doc.last_flush.map(|at| at + self.config.flush_interval))
                    .flatten();
                let expiry = doc.states.values().map(|s| s.renewed + self.config.timeout).min();
                [flush, expiry]
            })
            .flatten()
            .min()
    }

    fn poll_message(&mut self) -> Option<ServerPluginMessage> {
        self.outbox.pop_front()
    }
}
