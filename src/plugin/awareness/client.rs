//! The client side of awareness: this replica's states, throttled out; the others', in.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{AwarenessConfig, AwarenessEvent, WireEntry, WireMessage};
use crate::PeerId;
use crate::plugin::{
    ClientPlugin, ClientPluginMessage, PluginError, PluginId, decode_message, encode_message,
};

/// The client awareness plugin: this replica's state per document, and everyone else's.
///
/// Register it with [`crate::ClientSession::add_plugin`], then reach it with
/// [`crate::ClientSession::plugin_mut`]: set the local state as the user moves, read
/// [`Awareness::states`], drain [`Awareness::poll_event`] after each session call. `T` is
/// whatever the application shows: every client of a document must use the same type.
#[derive(Debug)]
pub struct Awareness<T> {
    config: AwarenessConfig,
    documents: BTreeMap<Arc<str>, DocumentAwareness<T>>,
    outbox: VecDeque<ClientPluginMessage>,
    events: VecDeque<AwarenessEvent>,
}

#[derive(Debug)]
struct DocumentAwareness<T> {
    /// This replica's state, and its encoding as sent.
    local: Option<(T, Vec<u8>)>,
    /// Grows with every local change, so the server tells a change from a renewal.
    clock: u64,
    /// Subscribed on the current connection: sending reaches the server.
    online: bool,
    last_sent: Option<Instant>,
    /// A change waits for the throttle to pass.
    unsent: bool,
    remote: BTreeMap<PeerId, Remote<T>>,
    /// Since when the server has been unreachable; remote states expire a timeout later.
    offline_since: Option<Instant>,
}

#[derive(Debug)]
struct Remote<T> {
    clock: u64,
    state: T,
}

impl<T> DocumentAwareness<T> {
    fn new() -> Self {
        DocumentAwareness {
            local: None,
            clock: 0,
            online: false,
            last_sent: None,
            unsent: false,
            remote: BTreeMap::new(),
            offline_since: None,
        }
    }
}

impl<T: Serialize + DeserializeOwned + Send + Debug + 'static> Awareness<T> {
    /// An awareness plugin with no local state yet.
    pub fn new(config: AwarenessConfig) -> Self {
        Awareness { config, documents: BTreeMap::new(), outbox: VecDeque::new(), events: VecDeque::new() }
    }

    /// Publish this replica's state in `document`. Sent at once if nothing was sent for
    /// the document within the throttle interval, else when it ends (only the latest state
    /// of a burst is sent); while disconnected, when the document is synced again.
    pub fn set_local_state(&mut self, now: Instant, document: &str, state: T) {
        let bytes = encode_message(&state);
        let doc = self.document_entry(document);
        doc.local = Some((state, bytes));
        doc.clock += 1;
        self.send_or_wait(now, document);
    }

    /// Withdraw this replica's state from `document` (others see it leave); throttled like
    /// [`Awareness::set_local_state`].
    pub fn clear_local_state(&mut self, now: Instant, document: &str) {
        let Some(doc) = self.documents.get_mut(document) else { return };
        if doc.local.take().is_some() {
            doc.clock += 1;
            self.send_or_wait(now, document);
        }
    }

    /// This replica's state in `document`.
    pub fn local_state(&self, document: &str) -> Option<&T> {
        self.documents.get(document)?.local.as_ref().map(|(state, _)| state)
    }

    /// The other replicas' states in `document`, by replica id.
    pub fn states(&self, document: &str) -> impl Iterator<Item = (PeerId, &T)> {
        self.documents.get(document).into_iter().flat_map(|d| d.remote.iter().map(|(p, r)| (*p, &r.state)))
    }

    /// One replica's state in `document`.
    pub fn state_of(&self, document: &str, peer: PeerId) -> Option<&T> {
        self.documents.get(document)?.remote.get(&peer).map(|r| &r.state)
    }

    /// Ask the server for every state of `document` again (it sends them by itself when the
    /// document is synced; this is for an application that suspects it missed something).
    pub fn query(&mut self, document: &str) {
        self.outbox
            .push_back(ClientPluginMessage::new(Some(document.into()), encode_message(&WireMessage::Query)));
    }

    /// The next change in who is present.
    pub fn poll_event(&mut self) -> Option<AwarenessEvent> {
        self.events.pop_front()
    }

    fn document_entry(&mut self, document: &str) -> &mut DocumentAwareness<T> {
        if !self.documents.contains_key(document) {
            self.documents.insert(document.into(), DocumentAwareness::new());
        }
        self.documents.get_mut(document).expect("inserted above")
    }

    fn send_or_wait(&mut self, now: Instant, document: &str) {
        let throttle = self.config.throttle;
        let Some((name, doc)) = self.documents.get_key_value(document) else { return };
        if !doc.online {
            return; // sent when the document is synced
        }
        if doc.last_sent.is_some_and(|at| now < at + throttle) {
            if let Some(doc) = self.documents.get_mut(document) {
                doc.unsent = true;
            }
            return;
        }
        let name = name.clone();
        self.send(now, &name);
    }

    fn send(&mut self, now: Instant, name: &Arc<str>) {
        let Some(doc) = self.documents.get_mut(name) else { return };
        let message =
            WireMessage::Set { clock: doc.clock, state: doc.local.as_ref().map(|(_, b)| b.clone()) };
        doc.last_sent = Some(now);
        doc.unsent = false;
        self.outbox.push_back(ClientPluginMessage::new(Some(name.clone()), encode_message(&message)));
    }

    /// Remote states of `name` are no longer known: every one leaves.
    fn forget_remote(&mut self, name: &Arc<str>) {
        let Some(doc) = self.documents.get_mut(name) else { return };
        for peer in std::mem::take(&mut doc.remote).into_keys() {
            self.events.push_back(AwarenessEvent::Left { document: name.clone(), peer });
        }
        doc.offline_since = None;
    }

    fn apply_states(
        &mut self,
        name: &Arc<str>,
        full: bool,
        entries: Vec<WireEntry>,
    ) -> Result<(), PluginError> {
        // Decode everything first: a malformed entry changes nothing.
        let mut decoded = Vec::with_capacity(entries.len());
        for entry in entries {
            let state = entry.state.map(|bytes| decode_message::<T>(&bytes)).transpose()?;
            decoded.push((entry.peer, entry.clock, state));
        }
        let doc = self.document_entry(name);
        doc.offline_since = None;
        let mut events = Vec::new();
        if full {
            let listed: std::collections::BTreeSet<PeerId> =
                decoded.iter().filter(|(_, _, s)| s.is_some()).map(|(p, _, _)| *p).collect();
            doc.remote.retain(|peer, _| {
                let keep = listed.contains(peer);
                if !keep {
                    events.push(AwarenessEvent::Left { document: name.clone(), peer: *peer });
                }
                keep
            });
        }
        for (peer, clock, state) in decoded {
            match (state, doc.remote.get_mut(&peer)) {
                (None, Some(_)) => {
                    doc.remote.remove(&peer);
                    events.push(AwarenessEvent::Left { document: name.clone(), peer });
                }
                (None, None) => {}
                (Some(state), Some(known)) => {
                    if known.clock != clock || !full {
                        *known = Remote { clock, state };
                        events.push(AwarenessEvent::Updated { document: name.clone(), peer });
                    }
                }
                (Some(state), None) => {
                    doc.remote.insert(peer, Remote { clock, state });
                    events.push(AwarenessEvent::Joined { document: name.clone(), peer });
                }
            }
        }
        self.events.extend(events);
        Ok(())
    }
}

impl<T: Serialize + DeserializeOwned + Send + Debug + 'static> ClientPlugin for Awareness<T> {
    fn id(&self) -> PluginId {
        PluginId::AWARENESS
    }

    fn on_disconnected(&mut self, now: Instant) {
        for doc in self.documents.values_mut() {
            if doc.online {
                doc.online = false;
                doc.offline_since = Some(now);
            }
        }
    }

    fn on_subscribed(&mut self, now: Instant, document: &Arc<str>) {
        let doc = self.document_entry(document);
        doc.online = true;
        // The server may not hold our state (a new connection, or a new server): send it,
        // whatever the throttle says; it answers with everyone else's.
        if doc.local.is_some() {
            self.send(now, document);
        }
    }

    fn on_unsubscribed(&mut self, _now: Instant, document: &Arc<str>) {
        if let Some(doc) = self.documents.get_mut(document) {
            doc.online = false;
            doc.unsent = false;
        }
        self.forget_remote(document);
    }

    fn on_message(
        &mut self,
        _now: Instant,
        document: Option<&Arc<str>>,
        body: &[u8],
    ) -> Result<(), PluginError> {
        let name = super::document_of(document)?;
        match decode_message::<WireMessage>(body)? {
            WireMessage::States { full, entries } => self.apply_states(name, full, entries),
            _ => Err(PluginError::Refused("server-bound awareness message".into())),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let (throttle, renew, timeout) =
            (self.config.throttle, self.config.renew_interval, self.config.timeout);
        let mut send = Vec::new();
        let mut expired = Vec::new();
        for (name, doc) in &self.documents {
            let since_sent = |d: std::time::Duration| doc.last_sent.is_none_or(|at| now >= at + d);
            let trailing = doc.unsent && since_sent(throttle);
            let renewal = doc.local.is_some() && since_sent(renew);
            if doc.online && (trailing || renewal) {
                send.push(name.clone());
            }
            if doc.offline_since.is_some_and(|since| now >= since + timeout) {
                expired.push(name.clone());
            }
        }
        for name in send {
            self.send(now, &name);
        }
        for name in expired {
            self.forget_remote(&name);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.documents
            .values()
            .flat_map(|doc| {
                let trailing =
                    doc.unsent.then(|| doc.last_sent.map(|at| at + self.config.throttle)).flatten();
                let renewal = (doc.online && doc.local.is_some())
                    .then(|| doc.last_sent.map(|at| at + self.config.renew_interval));
                let expiry = doc.offline_since.map(|since| since + self.config.timeout);
                [trailing.filter(|_| doc.online), renewal.flatten(), expiry]
            })
            .flatten()
            .min()
    }

    fn poll_message(&mut self) -> Option<ClientPluginMessage> {
        self.outbox.pop_front()
    }
}
