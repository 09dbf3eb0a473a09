//! The causal change log: every change a document holds, indexed for exact, fast export.

use std::borrow::Cow;
use std::collections::HashMap;

use super::change::{Change, Join};
use super::clock::Timestamp;
use super::frozen_history::{ChangesByPeer, FrozenHistory};
use super::id::{Counter, OpId, PeerId};
use super::op::{LocalEdit, Op};
use super::state_section::LamportIndex;
use super::version::{Frontier, VersionVector};
use crate::Error;

/// All changes of a document, per peer, in counter order.
///
/// Each peer's changes are contiguous (a change is only added once everything before it is
/// known), so "what does version `v` lack" is one binary search per peer, never a scan of the
/// whole history.
#[derive(Clone, Debug, Default)]
pub(crate) struct ChangeLog {
    /// The changes, unless `frozen` holds them.
    by_peer: ChangesByPeer,
    /// When set, every change is here, encoded, and `by_peer` is empty.
    frozen: Option<Box<FrozenHistory>>,
    version: VersionVector,
    frontier: Frontier,
    /// History at or below this version was trimmed away; its effect lives in the base state.
    trimmed: VersionVector,
    /// The heads of `trimmed`: a version includes the trimmed part iff it includes these.
    trimmed_frontier: Frontier,
    /// Lamport time one past every operation ever seen (including trimmed ones).
    lamport_end: u32,
    /// The local change the next transaction may continue (see [`Self::local_continues`]):
    /// set when a local operation is recorded, cleared by anything else that changes the
    /// history. While it is set, the next transaction's first operation needs no search.
    open_local: Option<OpenLocal>,
}

/// The peer's last change, which nothing has followed since.
#[derive(Clone, Copy, Debug)]
struct OpenLocal {
    peer: PeerId,
    /// The change's timestamp, if its operations depend on it.
    timestamp: Option<Timestamp>,
}

impl OpenLocal {
    /// `change`, which just took a local operation.
    fn of(change: &Change) -> Self {
        OpenLocal { peer: change.id.peer, timestamp: change.uses_timestamp.then_some(change.timestamp) }
    }
}

impl ChangeLog {
    /// A log whose history below `trimmed` is gone (a document loaded from a state snapshot).
    pub(crate) fn with_trimmed(trimmed: VersionVector, frontier: Frontier, lamport_end: u32) -> Self {
        ChangeLog {
            by_peer: ChangesByPeer::new(),
            frozen: None,
            version: trimmed.clone(),
            trimmed_frontier: frontier.clone(),
            frontier,
            trimmed,
            lamport_end,
            open_local: None,
        }
    }

    /// A log of changes kept encoded (`frozen`), never decoded, at `version` with heads
    /// `frontier`, above history trimmed at `trimmed` (heads `trimmed_frontier`).
    pub(crate) fn from_frozen(
        frozen: FrozenHistory,
        version: VersionVector,
        frontier: Frontier,
        trimmed: VersionVector,
        trimmed_frontier: Frontier,
        lamport_end: u32,
    ) -> Self {
        ChangeLog {
            by_peer: ChangesByPeer::new(),
            frozen: Some(Box::new(frozen)),
            version,
            frontier,
            trimmed,
            trimmed_frontier,
            lamport_end,
            open_local: None,
        }
    }

    /// Per peer, `(first counter, end counter, Lamport time)` of each stored change.
    pub(crate) fn lamport_index(&self) -> LamportIndex {
        match &self.frozen {
            Some(frozen) => frozen.lamport_index().clone(),
            None => self
                .by_peer
                .iter()
                .map(|(peer, list)| {
                    (*peer, list.iter().map(|c| (c.id.counter, c.id.counter + c.len, c.lamport)).collect())
                })
                .collect(),
        }
    }

    /// The frozen history, if the log still holds its changes only encoded.
    pub(crate) fn frozen(&self) -> Option<&FrozenHistory> {
        self.frozen.as_deref()
    }

    pub(crate) fn version(&self) -> &VersionVector {
        &self.version
    }

    pub(crate) fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    pub(crate) fn trimmed(&self) -> &VersionVector {
        &self.trimmed
    }

    pub(crate) fn lamport_end(&self) -> u32 {
        self.lamport_end
    }

    /// Number of changes held (not counting trimmed history).
    pub(crate) fn len(&self) -> usize {
        match &self.frozen {
            Some(frozen) => frozen.change_count(),
            None => self.by_peer.values().map(Vec::len).sum(),
        }
    }

    /// Keep the changes only as `bytes`, their columnar encoding (see
    /// [`super::frozen_history`]), until something needs them decoded.
    pub(crate) fn freeze(&mut self, bytes: Vec<u8>, max_decoded_bytes: usize) {
        let changes = self.changes_mut();
        let frozen = FrozenHistory::new(bytes, max_decoded_bytes, changes);
        self.by_peer = ChangesByPeer::new();
        self.frozen = Some(Box::new(frozen));
    }

    fn changes(&self) -> &ChangesByPeer {
        match &self.frozen {
            Some(frozen) => frozen.changes(),
            None => &self.by_peer,
        }
    }

    #[inline]
    fn changes_mut(&mut self) -> &mut ChangesByPeer {
        if let Some(frozen) = self.frozen.take() {
            self.by_peer = frozen.into_changes();
        }
        &mut self.by_peer
    }

    /// Add a change whose dependencies and predecessors are all present. A change that
    /// continues the peer's previous one (see [`Change::absorb`]) joins it, so a peer typing
    /// costs one stored change per burst rather than one per keystroke.
    pub(crate) fn push(&mut self, change: Cow<'_, Change>, merge: bool) {
        self.open_local = None;
        let changes = self.record(&change);
        let change = match changes.last_mut() {
            Some(last) if merge => match last.absorb(change) {
                Ok(()) => return,
                Err(change) => change,
            },
            _ => change,
        };
        changes.push(change.into_owned());
    }

    /// Whether the first operation of a local transaction made at `timestamp` may go into
    /// `peer`'s last change rather than start one, as [`Change::absorb`] would merge them:
    /// nothing has happened since that change (it is the only head, and the Lamport time has
    /// not moved past it), and it does not depend on another timestamp.
    #[inline]
    pub(crate) fn local_continues(&self, peer: PeerId, timestamp: Timestamp) -> bool {
        match self.open_local {
            Some(open) if open.peer == peer => {
                let continues = open.timestamp.is_none_or(|t| t == timestamp);
                debug_assert_eq!(
                    continues,
                    self.local_continues_searched(peer, timestamp),
                    "stale open local change"
                );
                continues
            }
            // Not known open (a remote change came in, or the log was loaded): look.
            _ => self.local_continues_searched(peer, timestamp),
        }
    }

    /// [`Self::local_continues`], worked out from the stored changes.
    fn local_continues_searched(&self, peer: PeerId, timestamp: Timestamp) -> bool {
        let Some(last) = self.changes().get(&peer).and_then(|list| list.last()) else { return false };
        self.frontier.ids() == [last.last_id()]
            && last.lamport_end() == self.lamport_end
            && (!last.uses_timestamp || last.timestamp == timestamp)
    }

    /// Record local operation `op`, with first id `id` (its peer's next) and `len` ids, made
    /// at `timestamp`: into the peer's last change if `into_last` (the operation's transaction
    /// started that change, or [`Self::local_continues`] allowed continuing it), else as the
    /// first operation of a new change on top of every head. The caller has checked that the
    /// ids and Lamport times fit. `join` says whether `op` may join the last operation (see
    /// [`Change::append_local`]).
    ///
    /// A transaction records each operation as it is made, rather than a change when it
    /// ends: typing on then appends to the stored change, with no change built and merged.
    pub(crate) fn push_local_op(
        &mut self,
        op: Op,
        id: OpId,
        len: Counter,
        timestamp: Timestamp,
        into_last: bool,
        join: Join,
    ) {
        if into_last && let Some(last) = self.changes_mut().get_mut(&id.peer).and_then(|list| list.last_mut())
        {
            last.append_local(op, id, len, timestamp, join);
            self.open_local = Some(OpenLocal::of(last));
            self.advance_local(id, len);
            return;
        }
        // A new change depends on every head.
        let (lamport, deps) = (self.lamport_end, self.frontier.clone());
        self.advance_local(id, len);
        let uses_timestamp = !op.ignores_timestamp();
        let change = Change { id, deps, lamport, timestamp, ops: vec![op], len, uses_timestamp };
        self.open_local = Some(OpenLocal::of(&change));
        self.changes_mut().entry(id.peer).or_default().push(change);
    }

    /// [`Self::push_local_op`] of an edit that continues the last operation of the peer's last
    /// change (typing on, backspacing), appended to it in place; whether it was. Only for an
    /// operation that goes `into_last`.
    pub(crate) fn push_local_edit(
        &mut self,
        edit: LocalEdit<'_>,
        id: OpId,
        len: Counter,
        timestamp: Timestamp,
    ) -> bool {
        let Some(last) = self.changes_mut().get_mut(&id.peer).and_then(|list| list.last_mut()) else {
            return false;
        };
        if !last.append_local_edit(edit, id, len, timestamp) {
            return false;
        }
        self.open_local = Some(OpenLocal::of(last));
        self.advance_local(id, len);
        true
    }

    /// Advance the version, frontier and Lamport end past local ids `id..id + len`, which
    /// depend on every head: their last id becomes the only head. Typing on moves the one
    /// head in place, once per keystroke.
    // Always inlined: left a call, it cost about 55 instructions a keystroke (callgrind).
    #[inline(always)]
    fn advance_local(&mut self, id: OpId, len: Counter) {
        let Some(last) = len.checked_sub(1) else { return };
        self.version.set(id.peer, id.counter + len);
        self.lamport_end += len;
        self.frontier.move_only_head(OpId::new(id.peer, id.counter + last));
    }

    /// Advance the version, frontier and Lamport end past `change`; returns its peer's list.
    fn record(&mut self, change: &Change) -> &mut Vec<Change> {
        debug_assert_eq!(change.id.counter, self.version.get(change.id.peer));
        self.version.extend_to(&change.span());
        self.frontier.advance(&change.deps, change.last_id());
        self.lamport_end = self.lamport_end.max(change.lamport_end());
        self.changes_mut().entry(change.id.peer).or_default()
    }

    /// The changes of `peer` that hold any id of `from..to`, in counter order.
    pub(crate) fn overlapping(&self, peer: PeerId, from: Counter, to: Counter) -> &[Change] {
        let Some(changes) = self.changes().get(&peer) else { return &[] };
        let lo = changes.partition_point(|c| c.id.counter + c.len <= from);
        let hi = changes.partition_point(|c| c.id.counter < to);
        &changes[lo..hi.max(lo)]
    }

    /// The change holding `id`, if it is in the (untrimmed) log.
    pub(crate) fn get(&self, id: OpId) -> Option<&Change> {
        let changes = self.changes().get(&id.peer)?;
        let at = changes.partition_point(|c| c.id.counter + c.len <= id.counter);
        changes.get(at).filter(|c| c.id.counter <= id.counter)
    }

    /// Lamport time of operation `id`: `None` if unknown; for trimmed history, the lamport end of
    /// the trimmed part stands in, which is at least as large.
    pub(crate) fn lamport_of(&self, id: OpId) -> Option<u32> {
        // Every remote change asks this of its dependencies: answer it without decoding.
        let held = match &self.frozen {
            Some(frozen) => frozen.lamport_of(id),
            None => self.get(id).map(|change| change.lamport + (id.counter - change.id.counter)),
        };
        held.or_else(|| self.trimmed.contains(id).then_some(self.lamport_end))
    }

    /// Every change `version` lacks, in an order that respects causality; a stored change that
    /// `version` holds in part is cut to the part it lacks.
    ///
    /// Fails with [`Error::HistoryTrimmed`] if part of what is lacking was trimmed away.
    pub(crate) fn changes_since(&self, version: &VersionVector) -> Result<Vec<Cow<'_, Change>>, Error> {
        let mut out = Vec::new();
        for (peer, end) in self.version.iter() {
            let from = version.get(peer);
            if from >= end {
                continue;
            }
            if from < self.trimmed.get(peer) {
                return Err(Error::HistoryTrimmed);
            }
            // A peer known only through trimmed history has no entry, and nothing to send.
            let Some(changes) = self.changes().get(&peer) else { continue };
            let at = changes.partition_point(|c| c.id.counter + c.len <= from);
            out.extend(changes[at..].iter().map(|c| {
                if c.id.counter < from {
                    Cow::Owned(c.slice(from, c.id.counter + c.len))
                } else {
                    Cow::Borrowed(c)
                }
            }));
        }
        out.sort_unstable_by_key(|c| causal_key(c));
        Ok(out)
    }

    /// Every change inside `version` (which must include the trimmed part), causally ordered;
    /// a stored change that `version` holds in part is cut to that part.
    pub(crate) fn changes_within(&self, version: &VersionVector) -> Vec<Cow<'_, Change>> {
        let mut out: Vec<Cow<'_, Change>> = Vec::new();
        for (peer, changes) in self.changes() {
            let end = version.get(*peer);
            for c in changes.iter().take_while(|c| c.id.counter < end) {
                out.push(if c.id.counter + c.len > end {
                    Cow::Owned(c.slice(c.id.counter, end))
                } else {
                    Cow::Borrowed(c)
                });
            }
        }
        out.sort_unstable_by_key(|c| causal_key(c));
        out
    }

    /// The version vector of the causal closure of `frontier`.
    ///
    /// Any known id can be a head: a change's operations only ever refer to earlier ids, so
    /// every prefix of a change is a consistent version. Fails with [`Error::UnknownVersion`] if
    /// a head is unknown, and [`Error::HistoryTrimmed`] if the closure does not include the
    /// trimmed part.
    pub(crate) fn version_of(&self, frontier: &Frontier) -> Result<VersionVector, Error> {
        let mut version = VersionVector::new();
        let mut stack: Vec<OpId> = Vec::new();
        for &head in frontier.ids() {
            if !self.version.contains(head) {
                return Err(Error::UnknownVersion);
            }
            stack.push(head);
        }
        // The walk stops where history was trimmed; how far into the trimmed part it reached
        // per peer decides whether the version contains all of it (then the base state stands
        // for it) or only part (then it cannot be rebuilt).
        let mut reached_trimmed: HashMap<PeerId, Counter> = HashMap::new();
        while let Some(id) = stack.pop() {
            let known = version.get(id.peer);
            if id.counter < known {
                continue;
            }
            version.set(id.peer, id.counter + 1);
            // Walk this peer's changes down to what was already included, collecting their deps.
            let mut counter = id.counter;
            loop {
                let Some(change) = self.get(OpId::new(id.peer, counter)) else {
                    let reached = reached_trimmed.entry(id.peer).or_insert(0);
                    *reached = (*reached).max(counter + 1);
                    break;
                };
                stack.extend(change.deps.ids().iter().copied());
                if change.id.counter <= known || change.id.counter == 0 {
                    break;
                }
                counter = change.id.counter - 1;
            }
        }
        if !self.trimmed.is_empty() {
            let contains_trimmed = self
                .trimmed_frontier
                .ids()
                .iter()
                .all(|head| reached_trimmed.get(&head.peer).is_some_and(|&end| end > head.counter));
            if !contains_trimmed {
                return Err(Error::HistoryTrimmed);
            }
            version.merge(&self.trimmed);
        }
        Ok(version)
    }

    /// The heads of the causal closure `version` (which must be causally closed).
    pub(crate) fn frontier_of(&self, version: &VersionVector) -> Frontier {
        if version == &self.version {
            return self.frontier.clone();
        }
        let mut heads: Vec<OpId> = version.iter().map(|(peer, end)| OpId::new(peer, end - 1)).collect();
        let deps: Vec<OpId> =
            heads.iter().filter_map(|&id| self.get(id)).flat_map(|c| c.deps.ids().iter().copied()).collect();
        // A head another head depends on (directly or through its own peer's earlier changes)
        // is not a head; direct deps catch the common case, and `version_of` verifies the rest.
        heads.retain(|h| !deps.iter().any(|d| d.peer == h.peer && d.counter >= h.counter));
        let frontier = Frontier::from_ids(heads);
        match self.version_of(&frontier) {
            Ok(v) if &v == version => frontier,
            _ => self.minimal_frontier(version),
        }
    }

    /// Slow but exact: drop every head that is in the closure of another head.
    fn minimal_frontier(&self, version: &VersionVector) -> Frontier {
        let heads: Vec<OpId> = version.iter().map(|(peer, end)| OpId::new(peer, end - 1)).collect();
        let kept = heads.iter().copied().filter(|&h| {
            !heads.iter().any(|&other| {
                other != h && self.version_of(&Frontier::from(other)).is_ok_and(|v| v.contains(h))
            })
        });
        Frontier::from_ids(kept)
    }

    /// Drop every change inside `version` (whose heads are `frontier`), cutting a change that
    /// `version` holds in part; the caller keeps their effect in a base state.
    pub(crate) fn trim(&mut self, version: &VersionVector, frontier: Frontier) {
        self.open_local = None;
        for (peer, changes) in self.changes_mut().iter_mut() {
            let end = version.get(*peer);
            changes.retain(|c| c.id.counter + c.len > end);
            if let Some(first) = changes.first_mut()
                && first.id.counter < end
            {
                *first = first.slice(end, first.id.counter + first.len);
            }
        }
        self.by_peer.retain(|_, changes| !changes.is_empty());
        self.trimmed.merge(version);
        self.trimmed_frontier = frontier;
    }

    /// All changes, causally ordered (ties broken by peer and counter, so the order is canonical).
    pub(crate) fn all(&self) -> Vec<&Change> {
        let mut out: Vec<&Change> = self.changes().values().flatten().collect();
        sort_causally(&mut out);
        out
    }
}

/// Lamport order is a topological order of the causal graph; peer and counter make it total.
pub(crate) fn sort_causally(changes: &mut [&Change]) {
    changes.sort_unstable_by_key(|c| causal_key(c));
}

fn causal_key(change: &Change) -> (u32, PeerId, Counter) {
    (change.lamport, change.id.peer, change.id.counter)
}
