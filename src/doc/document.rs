//! The document: state, history, and the ways in and out of it.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::change::Change;
use super::change_log::ChangeLog;
use super::clock::{HybridClock, Timestamp};
use super::codec::{self, EncodeOptions, PayloadKind};
use super::columnar;
use super::config::DocumentConfig;
use super::event::{DocEvent, Origin};
use super::frozen_history::FrozenHistory;
use super::id::{Counter, IdSpan, OpId, PeerId};
use super::intake;
use super::op::{ContainerId, ContainerKind, Element};
use super::state::{ContainerState, DocState, Overlay};
use super::state_section::StateSection;
use super::transaction::Transaction;
use super::types::CounterRef;
use super::types::ListRef;
use super::types::MapRef;
use super::types::MovableListRef;
use super::types::OrSetRef;
use super::types::RegisterRef;
use super::types::TextRef;
use super::version::{Frontier, VersionVector};
use crate::{DecodeError, Error};

/// A CRDT document: a set of named containers (text, lists, maps, ...) that any number of
/// replicas edit independently and that converge once they have exchanged their changes.
///
/// * Edit through a [`Transaction`] ([`Document::transact`]); read through the typed handles
///   ([`Document::text`], [`Document::map`], ...).
/// * Sync by exporting what another replica lacks ([`Document::export_since`]) and importing
///   it there ([`Document::import`]). Import is idempotent and order-free.
/// * Persist with [`Document::encode`] / [`Document::load`], or without history with
///   [`Document::encode_state`].
///
/// The document never reads a clock or an RNG: feed wall-clock time with
/// [`Document::set_wall_clock`] if you want meaningful timestamps and drift protection.
#[derive(Clone, Debug)]
pub struct Document {
    pub(crate) peer: PeerId,
    config: DocumentConfig,
    pub(crate) clock: HybridClock,
    pub(crate) log: ChangeLog,
    pub(crate) state: DocState,
    /// The state at the trimmed version, kept so that older versions can still be checked out;
    /// encoded (a [`StateSnapshot`] in postcard), because it is only read to check out an old
    /// version or to encode the document, and decoded it would double the memory of a
    /// document loaded from a snapshot.
    base: Option<Arc<[u8]>>,
    /// Changes waiting for dependencies, by first id.
    pending: BTreeMap<OpId, Change>,
    events: Option<VecDeque<DocEvent>>,
    /// Root container ids handed to transactions, so that every keystroke's operation shares
    /// one name allocation (and compares by pointer) instead of allocating its own.
    pub(crate) roots: Vec<ContainerId>,
}

/// Whether `id` is root container `name` of type `kind`.
#[inline]
fn is_root(id: &ContainerId, name: &str, kind: ContainerKind) -> bool {
    // Byte by byte rather than `==`, which calls `memcmp`: root names are short, every
    // transaction compares one, and the call costs more than the comparison.
    matches!(id, ContainerId::Root { name: n, kind: k }
        if *k == kind && n.len() == name.len() && n.bytes().zip(name.bytes()).all(|(a, b)| a == b))
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportStatus {
    /// Changes applied (including previously buffered ones that became ready).
    pub applied: usize,
    /// Changes ignored because the document already had them.
    pub duplicates: usize,
    /// Changes now waiting for missing dependencies (see [`Document::missing_dependencies`]).
    pub pending: usize,
    /// Previously buffered changes discarded because they turned out invalid once their
    /// dependencies arrived.
    pub discarded: usize,
}

/// The state of every container at one version, without history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct StateSnapshot {
    version: VersionVector,
    frontier: Frontier,
    lamport_end: u32,
    max_timestamp: Timestamp,
    state: DocState,
}

/// A document with its history: the trimmed base (if any) and every change after it, in the
/// columnar encoding. The format before [`StatePayload`]; still loaded, no longer written
/// (tests write it to check that it loads).
#[cfg(test)]
#[derive(Serialize)]
pub(crate) struct DocumentPayload<'a> {
    /// The postcard encoding of the base [`StateSnapshot`].
    pub(crate) base: Option<&'a [u8]>,
    pub(crate) changes: Vec<u8>,
}

#[derive(Deserialize)]
struct OwnedDocumentPayload {
    base: Option<Vec<u8>>,
    changes: Vec<u8>,
}

/// A document with its history and its state: the trimmed base (if any), the state section
/// at the document's version, and every change after the base in the columnar encoding with
/// the text the state holds left out. Loading builds the state from the section instead of
/// replaying the changes, which stay encoded until something needs them.
#[derive(Serialize)]
pub(crate) struct StatePayload<'a> {
    pub(crate) base: Option<&'a [u8]>,
    pub(crate) state: &'a [u8],
    pub(crate) changes: &'a [u8],
}

#[derive(Deserialize)]
struct OwnedStatePayload {
    #[serde(with = "optional_bytes")]
    base: Option<Vec<u8>>,
    #[serde(with = "crate::wire::message::byte_string")]
    state: Vec<u8>,
    #[serde(with = "crate::wire::message::byte_string")]
    changes: Vec<u8>,
}

/// `Option<Vec<u8>>` read as bytes (one copy) rather than byte by byte.
mod optional_bytes {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    struct Bytes(#[serde(with = "crate::wire::message::byte_string")] Vec<u8>);

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<Bytes>::deserialize(deserializer)?.map(|b| b.0))
    }
}

/// A state snapshot, decoded and as the bytes it came in.
type Base = (StateSnapshot, Arc<[u8]>);

/// Decode a state snapshot, checking that it is consistent in itself.
fn decode_base(bytes: impl Into<Arc<[u8]>>) -> Result<Base, Error> {
    let bytes = bytes.into();
    let snapshot: StateSnapshot = codec::from_postcard(&bytes)?;
    if !snapshot.state.is_consistent() || !snapshot.frontier.is_canonical() {
        return Err(DecodeError::Malformed("inconsistent state snapshot".into()).into());
    }
    Ok((snapshot, bytes))
}

/// A decoded whole-document payload.
struct DecodedDocument {
    base: Option<Base>,
    /// The history's columnar encoding, as it came.
    encoded: Vec<u8>,
    changes: Vec<Change>,
}

/// Decode a whole-document payload (state snapshot and columnar history).
fn decode_document(raw: &[u8], max_decoded_bytes: usize) -> Result<DecodedDocument, Error> {
    let payload: OwnedDocumentPayload = codec::from_postcard(raw)?;
    let changes = columnar::decode_changes(&payload.changes, max_decoded_bytes)?;
    let base = payload.base.map(decode_base).transpose()?;
    Ok(DecodedDocument { base, encoded: payload.changes, changes })
}

/// Decode the changes of a document with a state section, for merging them: the text the
/// history leaves out is taken from the section.
fn decode_document_changes(raw: &[u8], max_decoded_bytes: usize) -> Result<DecodedDocument, Error> {
    let payload: OwnedStatePayload = codec::from_postcard(raw)?;
    let changes = StateSection::decode_history(&payload.state, &payload.changes, max_decoded_bytes)?;
    let base = payload.base.map(decode_base).transpose()?;
    Ok(DecodedDocument { base, encoded: payload.changes, changes })
}

impl Document {
    /// An empty document edited by `peer`.
    pub fn new(peer: PeerId) -> Self {
        Self::with_config(peer, DocumentConfig::default())
    }

    /// An empty document with explicit limits.
    pub fn with_config(peer: PeerId, config: DocumentConfig) -> Self {
        Document {
            peer,
            clock: HybridClock::new(config.max_clock_drift_ms),
            config,
            log: ChangeLog::default(),
            state: DocState::default(),
            base: None,
            pending: BTreeMap::new(),
            events: None,
            roots: Vec::new(),
        }
    }

    /// The id of root container `name`, sharing the allocation of earlier ones.
    pub(crate) fn root_id(&mut self, name: &str, kind: ContainerKind) -> ContainerId {
        let known = self.roots.iter().find(|id| is_root(id, name, kind));
        if let Some(id) = known {
            return id.clone();
        }
        let id = ContainerId::root(name, kind);
        self.return_root(id.clone());
        id
    }

    /// [`Self::root_id`], taken out of the shared ids rather than cloned: cloning and dropping
    /// a root id updates its name's atomic reference count twice (10 to 24 ns a pair on the
    /// 2-core test machine, where typing a character costs about 60 ns in all). Give it back
    /// with [`Self::return_root`].
    #[inline]
    pub(crate) fn lend_root(&mut self, name: &str, kind: ContainerKind) -> ContainerId {
        // The root given back last is the likeliest to be asked for again (each keystroke lends
        // the same one): it is the last, and taking it moves nothing.
        if self.roots.last().is_some_and(|id| is_root(id, name, kind))
            && let Some(id) = self.roots.pop()
        {
            return id;
        }
        match self.roots.iter().position(|id| is_root(id, name, kind)) {
            Some(at) => self.roots.swap_remove(at),
            None => ContainerId::root(name, kind),
        }
    }

    /// Share root id `id` with later edits.
    #[inline]
    pub(crate) fn return_root(&mut self, id: ContainerId) {
        /// Applications use a handful of roots; past this many, ids are simply not shared.
        const MAX_SHARED: usize = 64;
        if self.roots.len() < MAX_SHARED {
            self.roots.push(id);
        }
    }

    /// The peer id this replica edits as.
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// The configuration.
    pub fn config(&self) -> &DocumentConfig {
        &self.config
    }

    /// Feed the current wall-clock time (milliseconds since the Unix epoch). Timestamps of
    /// later local changes use it, and remote changes too far ahead of it are refused.
    pub fn set_wall_clock(&mut self, unix_ms: u64) {
        self.clock.set_wall_ms(unix_ms);
    }

    /// The greatest hybrid timestamp issued or seen.
    pub fn last_timestamp(&self) -> Timestamp {
        self.clock.last()
    }

    /// The current version: how many operations of each peer the document holds.
    pub fn version(&self) -> &VersionVector {
        self.log.version()
    }

    /// The current version as its heads.
    pub fn frontier(&self) -> &Frontier {
        self.log.frontier()
    }

    /// The version below which history was trimmed (empty if never trimmed).
    pub fn trimmed_version(&self) -> &VersionVector {
        self.log.trimmed()
    }

    /// Number of changes in the history (not counting trimmed history).
    pub fn change_count(&self) -> usize {
        self.log.len()
    }

    /// Start a transaction. Edits made through it become one change.
    pub fn transact(&mut self) -> Transaction<'_> {
        Transaction::new(self)
    }

    // ---- reading -------------------------------------------------------------------------

    /// Read the root text named `name` (empty if it was never edited).
    pub fn text(&self, name: &str) -> TextRef<'_> {
        TextRef::new(self, &ContainerId::root(name, ContainerKind::Text))
    }

    /// Read the root list named `name`.
    pub fn list<T>(&self, name: &str) -> ListRef<'_, T> {
        ListRef::new(self, &ContainerId::root(name, ContainerKind::List))
    }

    /// Read the root movable list named `name`.
    pub fn movable_list<T>(&self, name: &str) -> MovableListRef<'_, T> {
        MovableListRef::new(self, &ContainerId::root(name, ContainerKind::MovableList))
    }

    /// Read the root map named `name`.
    pub fn map<K, V>(&self, name: &str) -> MapRef<'_, K, V> {
        MapRef::new(self, &ContainerId::root(name, ContainerKind::Map))
    }

    /// Read the root register named `name`.
    pub fn register<T>(&self, name: &str) -> RegisterRef<'_, T> {
        RegisterRef::new(self, &ContainerId::root(name, ContainerKind::Register))
    }

    /// Read the root counter named `name`.
    pub fn counter(&self, name: &str) -> CounterRef<'_> {
        CounterRef::new(self, &ContainerId::root(name, ContainerKind::Counter))
    }

    /// Read the root set named `name`.
    pub fn or_set<T>(&self, name: &str) -> OrSetRef<'_, T> {
        OrSetRef::new(self, &ContainerId::root(name, ContainerKind::OrSet))
    }

    /// Whether `id` names an existing container of `kind`.
    pub(crate) fn checked(&self, id: &ContainerId, kind: ContainerKind) -> Result<(), Error> {
        if id.kind() != kind {
            return Err(Error::WrongKind { expected: kind, actual: id.kind() });
        }
        if !self.state.has_container(id) {
            return Err(Error::UnknownContainer);
        }
        Ok(())
    }

    /// Read any text container, root or nested.
    pub fn text_by_id(&self, id: &ContainerId) -> Result<TextRef<'_>, Error> {
        self.checked(id, ContainerKind::Text).map(|()| TextRef::new(self, id))
    }

    /// Read any list container, root or nested.
    pub fn list_by_id<T>(&self, id: &ContainerId) -> Result<ListRef<'_, T>, Error> {
        self.checked(id, ContainerKind::List).map(|()| ListRef::new(self, id))
    }

    /// Read any movable list container, root or nested.
    pub fn movable_list_by_id<T>(&self, id: &ContainerId) -> Result<MovableListRef<'_, T>, Error> {
        self.checked(id, ContainerKind::MovableList).map(|()| MovableListRef::new(self, id))
    }

    /// Read any map container, root or nested.
    pub fn map_by_id<K, V>(&self, id: &ContainerId) -> Result<MapRef<'_, K, V>, Error> {
        self.checked(id, ContainerKind::Map).map(|()| MapRef::new(self, id))
    }

    /// Read any register container, root or nested.
    pub fn register_by_id<T>(&self, id: &ContainerId) -> Result<RegisterRef<'_, T>, Error> {
        self.checked(id, ContainerKind::Register).map(|()| RegisterRef::new(self, id))
    }

    /// Read any counter container, root or nested.
    pub fn counter_by_id(&self, id: &ContainerId) -> Result<CounterRef<'_>, Error> {
        self.checked(id, ContainerKind::Counter).map(|()| CounterRef::new(self, id))
    }

    /// Read any set container, root or nested.
    pub fn or_set_by_id<T>(&self, id: &ContainerId) -> Result<OrSetRef<'_, T>, Error> {
        self.checked(id, ContainerKind::OrSet).map(|()| OrSetRef::new(self, id))
    }

    /// Every container that exists, root and nested, in id order.
    pub fn containers(&self) -> Vec<ContainerId> {
        self.state.containers().map(|(id, _)| id.clone()).collect()
    }

    /// The whole document as JSON: an object with one member per root container, nested
    /// containers inlined where they are referenced.
    pub fn to_json(&self) -> serde_json::Value {
        let mut roots = serde_json::Map::new();
        for (id, _) in self.state.containers() {
            if let ContainerId::Root { name, .. } = id {
                roots.insert(name.to_string(), self.json_at_depth(id, 0));
            }
        }
        serde_json::Value::Object(roots)
    }

    /// JSON of one container (root or nested), nested containers inlined; `null` if unknown.
    pub fn container_json(&self, id: &ContainerId) -> serde_json::Value {
        self.json_at_depth(id, 0)
    }

    /// Depth is bounded so that a hostile document cannot make the view recurse deep.
    fn json_at_depth(&self, id: &ContainerId, depth: usize) -> serde_json::Value {
        const MAX_DEPTH: usize = 64;
        if depth > MAX_DEPTH {
            return serde_json::Value::Null;
        }
        let element = |elem_id: OpId, e: &Element| match e {
            Element::Value(v) => v.to_json(),
            Element::Container(kind) => {
                self.json_at_depth(&ContainerId::Child { id: elem_id, kind: *kind }, depth + 1)
            }
        };
        let Some(state) = self.state.get(id) else {
            return serde_json::Value::Null;
        };
        match state {
            ContainerState::Text(seq) => serde_json::Value::String(seq.to_content()),
            ContainerState::List(seq) => {
                let mut out = Vec::new();
                seq.for_each_visible(|first, items| {
                    for (i, item) in items.iter().enumerate() {
                        out.push(element(OpId::new(first.peer, first.counter + i as Counter), item));
                    }
                });
                serde_json::Value::Array(out)
            }
            ContainerState::MovableList(list) => {
                let mut out = Vec::new();
                // A nested container is named by the write that stored it, not by the element.
                list.for_each_with_value_op(|_, value_op, item| out.push(element(value_op, item)));
                serde_json::Value::Array(out)
            }
            ContainerState::Map(map) => {
                let mut out = serde_json::Map::new();
                for (key, op, value) in map.iter() {
                    let key = match key {
                        super::value::Value::String(s) => s.clone(),
                        other => other.to_json().to_string(),
                    };
                    out.insert(key, element(op, value));
                }
                serde_json::Value::Object(out)
            }
            ContainerState::Register(register) => {
                register.get().map_or(serde_json::Value::Null, |(op, e)| element(op, e))
            }
            ContainerState::Counter(counter) => counter.value().into(),
            ContainerState::OrSet(set) => set.members().map(super::value::Value::to_json).collect(),
        }
    }

    // ---- events --------------------------------------------------------------------------

    /// Start (or stop) queueing a [`DocEvent`] per transaction and per import. Off by default,
    /// so that a document nobody listens to does not accumulate events.
    pub fn set_events_enabled(&mut self, enabled: bool) {
        self.events = enabled.then(VecDeque::new);
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<DocEvent> {
        self.events.as_mut()?.pop_front()
    }

    /// Whether anyone listens for events (callers skip building them otherwise).
    #[inline]
    pub(crate) fn events_enabled(&self) -> bool {
        self.events.is_some()
    }

    pub(crate) fn emit(&mut self, origin: Origin, containers: Vec<ContainerId>, changes: Vec<IdSpan>) {
        if let Some(events) = &mut self.events {
            events.push_back(DocEvent { origin, containers, changes });
        }
    }

    // ---- sync ----------------------------------------------------------------------------

    /// The changes `version` lacks, in causal order, for a sync layer that sends them itself.
    pub fn changes_since(&self, version: &VersionVector) -> Result<Vec<Change>, Error> {
        Ok(self.log.changes_since(version)?.into_iter().map(Cow::into_owned).collect())
    }

    /// The changes that `until` holds and `since` lacks, in causal order, cut where `until`
    /// ends: what brings a replica at `since` exactly to `until` (which should be a version of
    /// this document, for example one it had earlier, and causally closed).
    pub fn changes_between(
        &self,
        since: &VersionVector,
        until: &VersionVector,
    ) -> Result<Vec<Change>, Error> {
        Ok(self
            .log
            .changes_since(since)?
            .into_iter()
            .filter(|c| c.id.counter < until.get(c.id.peer))
            .map(|c| {
                let end = until.get(c.id.peer);
                if c.id.counter + c.len > end { c.slice(c.id.counter, end) } else { c.into_owned() }
            })
            .collect())
    }

    /// Encode the changes `version` lacks. Import the result on the replica at `version`.
    ///
    /// Cost is proportional to what is exported, plus a binary search per peer.
    pub fn export_since(&self, version: &VersionVector) -> Result<Vec<u8>, Error> {
        self.export_since_with(version, EncodeOptions::default())
    }

    /// [`Document::export_since`] with encoding options (lz4).
    pub fn export_since_with(
        &self,
        version: &VersionVector,
        options: EncodeOptions,
    ) -> Result<Vec<u8>, Error> {
        let changes = self.log.changes_since(version)?;
        let changes: Vec<&Change> = changes.iter().map(|c| c.as_ref()).collect();
        Ok(codec::encode_raw(PayloadKind::Changes, columnar::encode_changes(&changes), options))
    }

    /// Import encoded changes, a document or a state snapshot from another replica.
    ///
    /// A whole document imported into an empty replica (a late joiner's first sync) is taken
    /// as [`Document::load`] takes it; into a replica with history, its changes are merged.
    ///
    /// Idempotent and order-free: known changes are skipped; changes whose dependencies are
    /// missing wait and are applied as soon as the dependencies arrive. On error nothing
    /// changed.
    pub fn import(&mut self, bytes: &[u8]) -> Result<ImportStatus, Error> {
        let max = self.config.max_decoded_bytes;
        let all = [
            PayloadKind::Changes,
            PayloadKind::Document,
            PayloadKind::StateSnapshot,
            PayloadKind::DocumentState,
        ];
        let (kind, raw) = codec::decode_raw(&all, bytes, max)?;
        match kind {
            PayloadKind::Changes => {
                let changes = columnar::decode_changes(&raw, max)?;
                self.apply_changes(changes)
            }
            // An empty replica takes the document as it is, without replaying its history:
            // the late joiner's first sync.
            PayloadKind::DocumentState if self.version().is_empty() && self.pending.is_empty() => {
                let loaded = Self::from_state_payload(self.peer, self.config.clone(), &raw)?;
                let applied = loaded.change_count();
                self.replace_with(loaded);
                Ok(ImportStatus { applied, ..ImportStatus::default() })
            }
            PayloadKind::Document | PayloadKind::DocumentState => {
                let decoded = if kind == PayloadKind::Document {
                    decode_document(&raw, max)?
                } else {
                    decode_document_changes(&raw, max)?
                };
                match decoded {
                    DecodedDocument { base: Some(base), changes, .. }
                        if !self.version().includes(&base.0.version) =>
                    {
                        self.import_state_snapshot(base, changes)
                    }
                    DecodedDocument { changes, .. } => self.apply_changes(changes),
                }
            }
            PayloadKind::StateSnapshot => self.import_state_snapshot(decode_base(raw)?, Vec::new()),
        }
    }

    /// Become `loaded` (the same peer and configuration), keeping the wall clock and the event
    /// queue, and report every container as changed.
    fn replace_with(&mut self, loaded: Document) {
        let events = self.events.take();
        let containers = loaded.containers();
        let clock_wall = self.clock.wall_ms();
        *self = loaded;
        if let Some(wall) = clock_wall {
            self.clock.set_wall_ms(wall);
        }
        self.events = events;
        self.emit(Origin::Remote, containers, Vec::new());
    }

    /// A snapshot can only replace a document that has nothing the snapshot and the changes
    /// after it lack: states without history cannot be merged op by op.
    fn import_state_snapshot(&mut self, snapshot: Base, changes: Vec<Change>) -> Result<ImportStatus, Error> {
        if self.version().includes(&snapshot.0.version) {
            return Ok(ImportStatus { duplicates: 1, ..Default::default() });
        }
        let loaded = Document::from_parts(self.peer, self.config.clone(), Some(snapshot), changes)?;
        // Replacing this document loses nothing only if the loaded one (snapshot plus the
        // changes after it) holds everything this one has.
        if !loaded.version().includes(self.version()) {
            return Err(Error::HistoryTrimmed);
        }
        // Buffered changes survive the swap: those the snapshot already holds are dropped,
        // the rest wait on (or now apply on top of) the loaded state.
        let pending = std::mem::take(&mut self.pending);
        self.replace_with(loaded);
        // What the snapshot holds in part is cut to the rest.
        let version = self.version().clone();
        self.pending = pending
            .into_values()
            .filter(|c| c.id.counter + c.len > version.get(c.id.peer))
            .map(|c| c.slice(version.get(c.id.peer), c.id.counter + c.len))
            .map(|c| (c.id, c))
            .collect();
        let mut status = self.apply_changes(Vec::new())?;
        status.applied += 1;
        Ok(status)
    }

    /// Apply changes (decoded or taken from another document). Same guarantees as
    /// [`Document::import`].
    pub fn apply_changes(&mut self, mut changes: Vec<Change>) -> Result<ImportStatus, Error> {
        if self.is_next(&changes)
            && let Some(change) = changes.pop()
        {
            return self.apply_next(Cow::Owned(change));
        }
        let mut status = ImportStatus::default();
        let mut fresh: BTreeMap<OpId, Change> = BTreeMap::new();
        for mut change in changes {
            change.validate_shape().map_err(|reason| Error::InvalidChange { change: change.id, reason })?;
            self.clock.check(change.timestamp)?;
            let parts = intake::unseen_parts(&self.log, &[&fresh, &self.pending], change)?;
            if parts.is_empty() {
                status.duplicates += 1;
            }
            fresh.extend(parts.into_iter().map(|part| (part.id, part)));
        }

        // Phase 1: find what becomes ready and validate it against state plus what the batch
        // adds, by reference, without touching the document.
        let mut version = self.version().clone();
        let mut overlay = Overlay::default();
        let mut ready: Vec<(OpId, bool)> = Vec::new();
        let mut discarded: BTreeSet<OpId> = BTreeSet::new();
        let mut waiting: Vec<(&Change, bool)> =
            fresh.values().map(|c| (c, true)).chain(self.pending.values().map(|c| (c, false))).collect();
        loop {
            waiting.sort_unstable_by_key(|(c, _)| (c.lamport, c.id.peer, c.id.counter));
            let before = waiting.len();
            let mut still = Vec::with_capacity(waiting.len());
            for (change, is_new) in waiting {
                let is_ready = change.id.counter == version.get(change.id.peer)
                    && change.deps.ids().iter().all(|d| version.contains(*d));
                if !is_ready {
                    still.push((change, is_new));
                    continue;
                }
                match self.validate_change(change, &mut overlay) {
                    Ok(()) => {
                        version.extend_to(&change.span());
                        ready.push((change.id, is_new));
                    }
                    Err(reason) if is_new => return Err(Error::InvalidChange { change: change.id, reason }),
                    Err(_) => {
                        discarded.insert(change.id);
                    }
                }
            }
            waiting = still;
            if waiting.len() == before {
                break;
            }
        }
        if waiting.len() > self.config.max_pending_changes {
            return Err(Error::TooManyPending {
                pending: waiting.len(),
                limit: self.config.max_pending_changes,
            });
        }
        drop(waiting);

        // Phase 2: apply. Nothing below can fail.
        let mut containers = BTreeSet::new();
        let mut spans = Vec::new();
        for (id, is_new) in ready {
            let taken = if is_new { fresh.remove(&id) } else { self.pending.remove(&id) };
            // Every ready id came from one of the two maps, and each is taken once.
            let Some(change) = taken else { continue };
            self.apply_valid(Cow::Owned(change), &mut containers, &mut spans);
            status.applied += 1;
        }
        for id in &discarded {
            self.pending.remove(id);
        }
        // What is left of the batch waits for its dependencies.
        self.pending.append(&mut fresh);
        status.pending = self.pending.len();
        status.discarded = discarded.len();
        if !spans.is_empty() {
            self.emit(Origin::Remote, containers.into_iter().collect(), spans);
        }
        Ok(status)
    }

    /// [`Document::apply_changes`] for changes the caller keeps (a server forwards them
    /// after applying): the usual single next change is applied without copying it whole,
    /// only what the history stores of it; anything else goes the general way, on a copy.
    pub fn apply_changes_from(&mut self, changes: &[Change]) -> Result<ImportStatus, Error> {
        match changes {
            [change] if self.is_next(changes) => self.apply_next(Cow::Borrowed(change)),
            _ => self.apply_changes(changes.to_vec()),
        }
    }

    /// The live-sync case: one change, the next of its peer, nothing waiting. It takes
    /// [`Document::apply_next`]: the same checks without the bookkeeping (and allocations) of
    /// a batch. Reads only fields the wire gives.
    fn is_next(&self, changes: &[Change]) -> bool {
        let version = self.version();
        let [change] = changes else { return false };
        self.pending.is_empty()
            && change.id.counter == version.get(change.id.peer)
            && change.deps.ids().iter().all(|d| version.contains(*d))
    }

    fn apply_next(&mut self, mut change: Cow<'_, Change>) -> Result<ImportStatus, Error> {
        let (len, uses_timestamp) =
            change.shape().map_err(|reason| Error::InvalidChange { change: change.id, reason })?;
        // The derived fields are never trusted; a change the caller prepared right is not copied.
        if (change.len, change.uses_timestamp) != (len, uses_timestamp) {
            let change = change.to_mut();
            (change.len, change.uses_timestamp) = (len, uses_timestamp);
        }
        self.clock.check(change.timestamp)?;
        let mut overlay = if change.ops.len() == 1 { Overlay::for_one_op() } else { Overlay::default() };
        self.validate_change(&change, &mut overlay)
            .map_err(|reason| Error::InvalidChange { change: change.id, reason })?;
        let (mut containers, mut spans) = (BTreeSet::new(), Vec::new());
        self.apply_valid(change, &mut containers, &mut spans);
        if self.events_enabled() {
            self.emit(Origin::Remote, containers.into_iter().collect(), spans);
        }
        Ok(ImportStatus { applied: 1, ..ImportStatus::default() })
    }

    /// Apply a validated, ready change and record it; collects what an event reports.
    fn apply_valid(
        &mut self,
        change: Cow<'_, Change>,
        containers: &mut BTreeSet<ContainerId>,
        spans: &mut Vec<IdSpan>,
    ) {
        let listening = self.events_enabled();
        self.clock.observe(change.timestamp);
        for (id, op) in change.op_ids() {
            let created = self.state.apply(id, change.timestamp, op);
            if listening {
                containers.insert(op.container.clone());
                containers.extend(created);
            }
        }
        if listening {
            spans.push(change.span());
        }
        self.log.push(change, self.config.merge_changes);
    }

    fn validate_change(&self, change: &Change, overlay: &mut Overlay) -> Result<(), &'static str> {
        let dep_lamport = change
            .deps
            .ids()
            .iter()
            .filter_map(|d| self.log.lamport_of(*d))
            .map(|l| l.saturating_add(1))
            .max()
            .unwrap_or(0);
        if change.lamport < dep_lamport && self.log.trimmed().is_empty() {
            return Err("Lamport time not after its dependencies");
        }
        for (id, op) in change.op_ids() {
            self.state.validate(overlay, id, op)?;
        }
        Ok(())
    }

    /// The id spans this document is waiting for before it can apply buffered changes.
    pub fn missing_dependencies(&self) -> Vec<IdSpan> {
        let mut missing: BTreeMap<PeerId, Counter> = BTreeMap::new();
        let mut need = |id: OpId| {
            if !self.version().contains(id) && !self.pending_covers(id) {
                let end = missing.entry(id.peer).or_insert(0);
                *end = (*end).max(id.counter + 1);
            }
        };
        for change in self.pending.values() {
            if change.id.counter > 0 {
                need(OpId::new(change.id.peer, change.id.counter - 1));
            }
            for dep in change.deps.ids() {
                need(*dep);
            }
        }
        missing
            .into_iter()
            .map(|(peer, end)| {
                let from = self.version().get(peer);
                IdSpan::new(OpId::new(peer, from), end - from)
            })
            .collect()
    }

    fn pending_covers(&self, id: OpId) -> bool {
        self.pending.range(..=id).next_back().is_some_and(|(_, c)| c.span().contains(id))
    }

    /// How many received changes wait for missing dependencies.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    // ---- persistence ---------------------------------------------------------------------

    /// Encode the whole document with its history. [`Document::load`] restores it.
    ///
    /// The encoding holds the state as well as the history, so that loading does not replay
    /// the history: texts as compact run columns, whose visible characters the history then
    /// leaves out. A document loaded and not changed since encodes to the bytes it came in.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_with(EncodeOptions::default())
    }

    /// [`Document::encode`] with options (lz4).
    pub fn encode_with(&self, options: EncodeOptions) -> Vec<u8> {
        // Loaded and untouched: the bytes it came in (state and history agree).
        if let Some(frozen) = self.log.frozen()
            && let Some(state) = frozen.held()
        {
            let payload = StatePayload { base: self.base.as_deref(), state, changes: frozen.bytes() };
            return codec::encode(PayloadKind::DocumentState, &payload, options);
        }
        let state = StateSection::encode(&self.state, &self.log, self.clock.last());
        let changes = columnar::encode_changes_eliding(&self.log.all(), &|container, id| {
            self.state.shows_text(container, id)
        });
        let payload = StatePayload { base: self.base.as_deref(), state: &state, changes: &changes };
        codec::encode(PayloadKind::DocumentState, &payload, options)
    }

    /// Encode the current state without history: smaller, and enough to keep syncing with
    /// replicas at or after this version.
    pub fn encode_state(&self) -> Vec<u8> {
        self.encode_state_with(EncodeOptions::default())
    }

    /// [`Document::encode_state`] with options (lz4).
    pub fn encode_state_with(&self, options: EncodeOptions) -> Vec<u8> {
        codec::encode(PayloadKind::StateSnapshot, &self.snapshot(), options)
    }

    fn snapshot(&self) -> StateSnapshot {
        StateSnapshot {
            version: self.version().clone(),
            frontier: self.frontier().clone(),
            lamport_end: self.log.lamport_end(),
            // Every timestamp the clock issued went into a committed change, and every one it
            // observed came from one, so its last value is the greatest in the document; no
            // need to sort the whole history to find it.
            max_timestamp: self.clock.last(),
            state: self.state.clone(),
        }
    }

    /// Load a document encoded by [`Document::encode`] or [`Document::encode_state`], to be
    /// edited as `peer`.
    ///
    /// The state comes from the encoding (it is trusted to be what the history stored beside
    /// it produces, as a state snapshot is); the history stays encoded until something needs
    /// its operations. Encodings written before the state was stored are loaded by replaying
    /// their history.
    pub fn load(bytes: &[u8], peer: PeerId) -> Result<Document, Error> {
        Self::load_with_config(bytes, peer, DocumentConfig::default())
    }

    /// [`Document::load`] with explicit limits.
    pub fn load_with_config(bytes: &[u8], peer: PeerId, config: DocumentConfig) -> Result<Document, Error> {
        let expected = [PayloadKind::DocumentState, PayloadKind::Document, PayloadKind::StateSnapshot];
        let max = config.max_decoded_bytes;
        if codec::peek_kind(bytes)? == PayloadKind::Changes {
            return Err(DecodeError::WrongKind { expected: "a document", found: "changes" }.into());
        }
        let (kind, raw) = codec::decode_raw(&expected, bytes, max)?;
        if kind == PayloadKind::DocumentState {
            Self::from_state_payload(peer, config, &raw)
        } else if kind == PayloadKind::Document {
            let DecodedDocument { base, encoded, changes } = decode_document(&raw, max)?;
            let count = changes.len();
            let mut doc = Self::from_parts(peer, config, base, changes)?;
            // The state is built; keep the history as the bytes it came in (a fraction of its
            // decoded size) unless loading stored it differently (merged it further).
            if doc.log.len() == count {
                doc.log.freeze(encoded, max);
            }
            Ok(doc)
        } else {
            Self::from_parts(peer, config, Some(decode_base(raw)?), Vec::new())
        }
    }

    /// Load a document with a state section: the state and the log's bookkeeping come from
    /// the section, the changes stay encoded.
    fn from_state_payload(peer: PeerId, config: DocumentConfig, raw: &[u8]) -> Result<Document, Error> {
        let max = config.max_decoded_bytes;
        let payload: OwnedStatePayload = codec::from_postcard(raw)?;
        let base = payload.base.map(decode_base).transpose()?;
        let (trimmed, trimmed_frontier, base_timestamp) = match &base {
            Some((snapshot, _)) => {
                (snapshot.version.clone(), snapshot.frontier.clone(), snapshot.max_timestamp)
            }
            None => (VersionVector::new(), Frontier::default(), Timestamp::default()),
        };
        let section = StateSection::decode(&payload.state, &trimmed, max)?;
        if !section.version.includes(&trimmed) {
            return Err(DecodeError::Malformed("state section below its base".into()).into());
        }
        let frozen = FrozenHistory::with_state(payload.changes, payload.state.into(), max, section.lamports);
        let mut doc = Document::with_config(peer, config);
        doc.log = ChangeLog::from_frozen(
            frozen,
            section.version,
            section.frontier,
            trimmed,
            trimmed_frontier,
            section.lamport_end,
        );
        doc.state = section.state;
        doc.clock.observe(base_timestamp.max(section.max_timestamp));
        doc.base = base.map(|(_, bytes)| bytes);
        Ok(doc)
    }

    fn from_parts(
        peer: PeerId,
        config: DocumentConfig,
        base: Option<Base>,
        changes: Vec<Change>,
    ) -> Result<Document, Error> {
        // Loading is not a sync: drift checks apply to live peers, not to stored history.
        let mut doc = Document::with_config(peer, config.clone().with_max_clock_drift_ms(None));
        if let Some((base, bytes)) = base {
            doc.log = ChangeLog::with_trimmed(base.version, base.frontier, base.lamport_end);
            doc.state = base.state;
            doc.clock.observe(base.max_timestamp);
            doc.base = Some(bytes);
        }
        let status = doc.apply_changes(changes)?;
        if status.pending > 0 {
            return Err(DecodeError::Malformed("document history has gaps".into()).into());
        }
        doc.config = config;
        doc.clock = {
            let mut clock = HybridClock::new(doc.config.max_clock_drift_ms);
            clock.observe(doc.clock.last());
            clock
        };
        Ok(doc)
    }

    // ---- history -------------------------------------------------------------------------

    /// The version vector of the version whose heads are `frontier`.
    pub fn version_of(&self, frontier: &Frontier) -> Result<VersionVector, Error> {
        self.log.version_of(frontier)
    }

    /// A copy of this document that edits as `peer` (which must differ from every other
    /// replica's, including this one's).
    pub fn fork(&self, peer: PeerId) -> Document {
        let mut fork = self.clone();
        fork.peer = peer;
        fork.events = None;
        fork
    }

    /// A copy of this document as it was at `frontier`, editing as `peer`. Use it to look at
    /// (check out) an old version, or to edit concurrently from there and
    /// [merge](Document::merge) back.
    pub fn fork_at(&self, frontier: &Frontier, peer: PeerId) -> Result<Document, Error> {
        if frontier == self.frontier() {
            return Ok(self.fork(peer));
        }
        let version = self.log.version_of(frontier)?;
        self.fork_at_version(&version, peer)
    }

    fn fork_at_version(&self, version: &VersionVector, peer: PeerId) -> Result<Document, Error> {
        let changes: Vec<Change> =
            self.log.changes_within(version).into_iter().map(Cow::into_owned).collect();
        let base = self.base.clone().map(decode_base).transpose()?;
        let mut fork = Document::from_parts(peer, self.config.clone(), base, changes)?;
        if let Some(wall) = self.clock.wall_ms() {
            fork.clock.set_wall_ms(wall);
        }
        Ok(fork)
    }

    /// Bring in every change of `other` that this document lacks.
    pub fn merge(&mut self, other: &Document) -> Result<ImportStatus, Error> {
        let mut changes = match other.log.changes_since(self.version()) {
            Ok(changes) => changes.into_iter().map(Cow::into_owned).collect::<Vec<_>>(),
            Err(Error::HistoryTrimmed) => return self.import(&other.encode()),
            Err(e) => return Err(e),
        };
        changes.extend(other.pending.values().cloned());
        self.apply_changes(changes)
    }

    /// Drop history up to `version`, which every replica you sync with must already have
    /// (the server knows this from their version vectors). The state is unchanged; replicas at
    /// or after `version` keep syncing; older ones get [`Error::HistoryTrimmed`] from
    /// [`Document::export_since`] and need a state snapshot instead.
    pub fn trim_history(&mut self, version: &VersionVector) -> Result<(), Error> {
        if !version.includes(self.log.trimmed()) {
            return Err(Error::HistoryTrimmed);
        }
        if !self.version().includes(version) {
            return Err(Error::UnknownVersion);
        }
        let frontier = self.log.frontier_of(version);
        if &self.log.version_of(&frontier)? != version {
            return Err(Error::UnknownVersion);
        }
        let base = if version == self.version() {
            self.snapshot()
        } else {
            self.fork_at_version(version, self.peer)?.snapshot()
        };
        let base = postcard::to_allocvec(&base).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        self.log.trim(version, frontier);
        self.base = Some(base.into());
        Ok(())
    }
}
