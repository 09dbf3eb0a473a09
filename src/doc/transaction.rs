//! Transactions: several operations that become one change.

use super::change::Join;
use super::change_log::ChangeLog;
use super::clock::{HybridClock, Timestamp};
use super::id::{Counter, IdSpan, OpId, PeerId};
use super::op::{ContainerId, ContainerKind, LocalEdit, Op, OpContent};
use super::types::CounterMut;
use super::types::ListMut;
use super::types::MapMut;
use super::types::MovableListMut;
use super::types::OrSetMut;
use super::types::RegisterMut;
use super::types::TextMut;
use super::types::sequence::Sequence;
use crate::{Document, Error};

/// An operation checked by [`reserve_ids`]: its first id, its length in ids and the
/// transaction's timestamp.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reserved {
    pub(crate) id: OpId,
    len: Counter,
    pub(crate) timestamp: Timestamp,
}

/// The checks of an operation once its container is known: the ids from `next` and the
/// Lamport times must fit, and the transaction's `timestamp` is taken at its first operation.
fn reserve_ids(
    peer: PeerId,
    log: &ChangeLog,
    clock: &mut HybridClock,
    next: Counter,
    timestamp: &mut Option<Timestamp>,
    len: usize,
) -> Result<Reserved, Error> {
    let len = Counter::try_from(len).map_err(|_| Error::CounterOverflow)?;
    next.checked_add(len).ok_or(Error::CounterOverflow)?;
    // Lamport time must fit too; it only runs out if a peer sent hostile Lamport times.
    log.lamport_end().checked_add(len).ok_or(Error::CounterOverflow)?;
    let timestamp = match *timestamp {
        Some(ts) => ts,
        None => *timestamp.insert(clock.tick()?),
    };
    Ok(Reserved { id: OpId::new(peer, next), len, timestamp })
}

/// A group of edits recorded as one [`Change`] (which typing on may continue: see
/// [`crate::DocumentConfig::merge_changes`]).
///
/// Edits take effect on the document, and join its history, immediately: reads inside the
/// transaction see them. When the transaction is committed or dropped, a [`crate::DocEvent`]
/// with [`crate::Origin::Local`] is queued. An edit that returns an error had no effect.
///
/// [`Change`]: crate::Change
pub struct Transaction<'d> {
    doc: &'d mut Document,
    start: Counter,
    next: Counter,
    timestamp: Option<Timestamp>,
    /// Whether the next operation goes into the peer's last change: the transaction's own
    /// once it has one, and decided at its first operation otherwise.
    into_last: bool,
    /// The containers changed, for the event (a vector: empty, it costs nothing to make and
    /// drop, and a transaction touches few containers).
    changed: Vec<ContainerId>,
}

impl<'d> Transaction<'d> {
    pub(crate) fn new(doc: &'d mut Document) -> Self {
        let start = doc.log.version().get(doc.peer);
        Transaction { doc, start, next: start, timestamp: None, into_last: false, changed: Vec::new() }
    }

    /// The document, for reading.
    pub fn doc(&self) -> &Document {
        self.doc
    }

    /// Check that an operation of `len` ids on text `id` can be made, once `check` accepts
    /// the text as it is; returns its first id, its length, the transaction's timestamp and
    /// the text to apply it to. The operation must then be applied and recorded
    /// ([`Self::record_edit`]) before any other is reserved. One lookup of the
    /// text serves the check and the edit. A root text not edited yet is created, once
    /// nothing can fail any more.
    pub(crate) fn reserve_in_text(
        &mut self,
        id: &ContainerId,
        len: usize,
        check: impl FnOnce(&Sequence<String>) -> Result<(), Error>,
    ) -> Result<(Reserved, &mut Sequence<String>), Error> {
        let doc = &mut *self.doc;
        let (peer, next, timestamp) = (doc.peer, self.next, &mut self.timestamp);
        if let Some(slot) = doc.state.slot(id) {
            let text = doc.state.text_in_slot(slot).ok_or(Error::UnknownContainer)?;
            check(text)?;
            let reserved = reserve_ids(peer, &doc.log, &mut doc.clock, next, timestamp, len)?;
            return Ok((reserved, text));
        }
        if !matches!(id, ContainerId::Root { kind: ContainerKind::Text, .. }) {
            return Err(Error::UnknownContainer);
        }
        check(&Sequence::new())?;
        let reserved = reserve_ids(peer, &doc.log, &mut doc.clock, next, timestamp, len)?;
        let text = doc.state.create_text(id).ok_or(Error::UnknownContainer)?;
        Ok((reserved, text))
    }

    /// Whether the operation about to be recorded goes into the peer's last change, and from
    /// then on every operation of this transaction does.
    #[inline]
    fn take_into_last(&mut self, timestamp: Timestamp) -> bool {
        let into_last = self.into_last
            || (self.doc.config().merge_changes && self.doc.log.local_continues(self.doc.peer, timestamp));
        self.into_last = true;
        into_last
    }

    /// Note that `container` changed, for the event; only an event needs the set.
    #[inline]
    fn note_changed(&mut self, container: &ContainerId) {
        if self.doc.events_enabled() && !self.changed.contains(container) {
            self.changed.push(container.clone());
        }
    }

    /// Apply and record one operation; returns its first id.
    pub(crate) fn push_op(&mut self, container: ContainerId, content: OpContent) -> Result<OpId, Error> {
        if !self.doc.state.has_container(&container) {
            return Err(Error::UnknownContainer);
        }
        let doc = &mut *self.doc;
        let Reserved { id, len, timestamp } = reserve_ids(
            doc.peer,
            &doc.log,
            &mut doc.clock,
            self.next,
            &mut self.timestamp,
            content.id_len(),
        )?;
        let op = Op { container, content };
        let created = self.doc.state.apply(id, timestamp, &op);
        self.note_changed(&op.container);
        if self.doc.events_enabled() {
            self.changed.extend(created);
        }
        let into_last = self.take_into_last(timestamp);
        self.doc.log.push_local_op(op, id, len, timestamp, into_last, Join::Try);
        self.next += len;
        Ok(id)
    }

    /// Record a local edit, reserved and applied, borrowed: typing on and backspacing append
    /// it to the stored operation it continues, with no operation built.
    pub(crate) fn record_edit(&mut self, reserved: Reserved, edit: LocalEdit<'_>) {
        let Reserved { id, len, timestamp } = reserved;
        debug_assert_eq!(id.counter, self.next, "an operation was reserved and not recorded");
        self.note_changed(edit.container());
        let into_last = self.take_into_last(timestamp);
        if !(into_last && self.doc.log.push_local_edit(edit, id, len, timestamp)) {
            // An edit that `push_local_edit` could not append cannot join the last operation
            // either: both follow the same rule (`Op::extend_local`, `Op::absorb`).
            self.doc.log.push_local_op(edit.to_op(), id, len, timestamp, into_last, Join::Never);
        }
        self.next += len;
    }

    /// Edit the root text named `name`.
    pub fn text(&mut self, name: &str) -> TextMut<'_, 'd> {
        let id = self.doc.lend_root(name, ContainerKind::Text);
        TextMut::lent(self, id)
    }

    /// Give back a root id lent to an edit handle ([`Document::lend_root`]).
    #[inline]
    pub(crate) fn return_root(&mut self, id: ContainerId) {
        self.doc.return_root(id);
    }

    /// Edit the root list named `name`.
    pub fn list<T>(&mut self, name: &str) -> ListMut<'_, 'd, T> {
        let id = self.doc.root_id(name, ContainerKind::List);
        ListMut::new(self, id)
    }

    /// Edit the root movable list named `name`.
    pub fn movable_list<T>(&mut self, name: &str) -> MovableListMut<'_, 'd, T> {
        let id = self.doc.root_id(name, ContainerKind::MovableList);
        MovableListMut::new(self, id)
    }

    /// Edit the root map named `name`.
    pub fn map<K, V>(&mut self, name: &str) -> MapMut<'_, 'd, K, V> {
        let id = self.doc.root_id(name, ContainerKind::Map);
        MapMut::new(self, id)
    }

    /// Edit the root register named `name`.
    pub fn register<T>(&mut self, name: &str) -> RegisterMut<'_, 'd, T> {
        let id = self.doc.root_id(name, ContainerKind::Register);
        RegisterMut::new(self, id)
    }

    /// Edit the root counter named `name`.
    pub fn counter(&mut self, name: &str) -> CounterMut<'_, 'd> {
        let id = self.doc.root_id(name, ContainerKind::Counter);
        CounterMut::new(self, id)
    }

    /// Edit the root set named `name`.
    pub fn or_set<T>(&mut self, name: &str) -> OrSetMut<'_, 'd, T> {
        let id = self.doc.root_id(name, ContainerKind::OrSet);
        OrSetMut::new(self, id)
    }

    fn checked(&self, id: &ContainerId, kind: ContainerKind) -> Result<ContainerId, Error> {
        self.doc.checked(id, kind).map(|()| id.clone())
    }

    /// Edit any text container, root or nested.
    pub fn text_by_id(&mut self, id: &ContainerId) -> Result<TextMut<'_, 'd>, Error> {
        let id = self.checked(id, ContainerKind::Text)?;
        Ok(TextMut::new(self, id))
    }

    /// Edit any list container, root or nested.
    pub fn list_by_id<T>(&mut self, id: &ContainerId) -> Result<ListMut<'_, 'd, T>, Error> {
        let id = self.checked(id, ContainerKind::List)?;
        Ok(ListMut::new(self, id))
    }

    /// Edit any movable list container, root or nested.
    pub fn movable_list_by_id<T>(&mut self, id: &ContainerId) -> Result<MovableListMut<'_, 'd, T>, Error> {
        let id = self.checked(id, ContainerKind::MovableList)?;
        Ok(MovableListMut::new(self, id))
    }

    /// Edit any map container, root or nested.
    pub fn map_by_id<K, V>(&mut self, id: &ContainerId) -> Result<MapMut<'_, 'd, K, V>, Error> {
        let id = self.checked(id, ContainerKind::Map)?;
        Ok(MapMut::new(self, id))
    }

    /// Edit any register container, root or nested.
    pub fn register_by_id<T>(&mut self, id: &ContainerId) -> Result<RegisterMut<'_, 'd, T>, Error> {
        let id = self.checked(id, ContainerKind::Register)?;
        Ok(RegisterMut::new(self, id))
    }

    /// Edit any counter container, root or nested.
    pub fn counter_by_id(&mut self, id: &ContainerId) -> Result<CounterMut<'_, 'd>, Error> {
        let id = self.checked(id, ContainerKind::Counter)?;
        Ok(CounterMut::new(self, id))
    }

    /// Edit any set container, root or nested.
    pub fn or_set_by_id<T>(&mut self, id: &ContainerId) -> Result<OrSetMut<'_, 'd, T>, Error> {
        let id = self.checked(id, ContainerKind::OrSet)?;
        Ok(OrSetMut::new(self, id))
    }

    /// End the transaction: its edits are in the history already, and its event is queued.
    /// Dropping the transaction does the same.
    pub fn commit(self) {}

    /// Queue the event of the transaction's edits, which the log already holds.
    #[inline]
    fn finish(&mut self) {
        if self.next > self.start && self.doc.events_enabled() {
            let mut containers = std::mem::take(&mut self.changed);
            containers.sort();
            containers.dedup();
            let span = IdSpan::new(OpId::new(self.doc.peer, self.start), self.next - self.start);
            self.doc.emit(super::event::Origin::Local, containers, vec![span]);
        }
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use crate::{Document, DocumentConfig, PeerId};

    #[test]
    fn typing_on_grows_one_change_and_one_operation() {
        let mut doc = Document::new(PeerId::new(1));
        for (i, c) in "hello".chars().enumerate() {
            doc.transact().text("t").insert(i, &c.to_string()).unwrap();
        }
        {
            // Inserting back to front makes one operation per character, in the same change.
            let mut txn = doc.transact();
            for _ in 0..3 {
                txn.text("t").insert(0, "x").unwrap();
            }
        }
        let changes = doc.changes_since(&crate::VersionVector::new()).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].len(), 8);
        assert_eq!(changes[0].ops.len(), 4, "the keystrokes typed on joined one operation");
        assert_eq!(doc.text("t").to_string(), "xxxhello");
    }

    #[test]
    fn backspaces_and_forward_deletes_grow_one_operation() {
        let mut doc = Document::new(PeerId::new(1));
        doc.transact().text("t").insert(0, "hello world").unwrap();
        for pos in [10, 9, 8] {
            doc.transact().text("t").delete(pos, 1).unwrap();
        }
        for _ in 0..2 {
            doc.transact().text("t").delete(0, 1).unwrap();
        }
        doc.transact().text("t").delete(1, 2).unwrap();
        assert_eq!(doc.text("t").to_string(), "l wo");
        let changes = doc.changes_since(&crate::VersionVector::new()).unwrap();
        assert_eq!(changes.len(), 1);
        // One id per character typed and per character deleted.
        assert_eq!(changes[0].len(), 11 + 7);
        assert_eq!(changes[0].ops.len(), 2, "the deletes joined one operation");
    }

    #[test]
    fn exports_cut_inside_a_growing_delete_deliver_each_deletion() {
        let mut writer = Document::new(PeerId::new(1));
        writer.transact().text("t").insert(0, "abcdefgh").unwrap();
        let mut reader = Document::new(PeerId::new(2));
        let mut versions = Vec::new();
        // Backspaces, then forward deletes, each sent on its own: every export after the
        // first cuts the growing delete where the reader's version ends.
        for (pos, len) in [(7, 1), (6, 1), (5, 1), (0, 1), (0, 2)] {
            reader.import(&writer.export_since(reader.version()).unwrap()).unwrap();
            versions.push((writer.frontier().clone(), writer.text("t").to_string()));
            writer.transact().text("t").delete(pos, len).unwrap();
        }
        reader.import(&writer.export_since(reader.version()).unwrap()).unwrap();
        assert_eq!(writer.text("t").to_string(), "de");
        assert_eq!(reader.text("t").to_string(), "de");
        assert_eq!(writer.changes_since(&crate::VersionVector::new()).unwrap()[0].ops.len(), 2);
        // Every version inside the delete shows the text as it was then.
        for (frontier, text) in versions {
            let old = writer.fork_at(&frontier, PeerId::new(3)).unwrap();
            assert_eq!(old.text("t").to_string(), text, "at {frontier:?}");
        }
    }

    #[test]
    fn a_failed_first_edit_of_a_root_text_leaves_no_trace() {
        let mut doc = Document::new(PeerId::new(1));
        assert!(doc.transact().text("t").insert(1, "x").is_err());
        assert!(doc.transact().text("t").delete(0, 1).is_err());
        assert!(doc.containers().is_empty(), "no state was made for the text");
        assert!(doc.version().is_empty() && doc.change_count() == 0);
        doc.transact().text("t").insert(0, "x").unwrap();
        assert_eq!(doc.containers().len(), 1);
    }

    #[test]
    fn a_text_handle_gives_the_shared_root_id_back() {
        let mut doc = Document::new(PeerId::new(1));
        for i in 0..3 {
            let mut txn = doc.transact();
            txn.text("t").insert(2 * i, "a").unwrap();
            txn.text("t").insert(0, "b").unwrap();
        }
        doc.transact().text("u").insert(0, "c").unwrap();
        assert_eq!(doc.roots.len(), 2, "one shared id per root, lent and given back");
        assert_eq!(doc.text("t").to_string(), "bbbaaa");
    }

    /// Found by the convergence fuzzer: the log's note of the open local change is lost
    /// when a document is loaded, and typing on must still continue the loaded change.
    #[test]
    fn typing_on_after_a_load_continues_the_loaded_change() {
        let mut doc = Document::new(PeerId::new(1));
        doc.transact().text("t").insert(0, "ab").unwrap();
        let mut doc = Document::load(&doc.encode(), PeerId::new(1)).unwrap();
        doc.transact().text("t").insert(2, "c").unwrap();
        assert_eq!(doc.change_count(), 1);
        assert_eq!(doc.text("t").to_string(), "abc");
    }

    #[test]
    fn a_change_from_elsewhere_ends_the_change_typing_was_growing() {
        let mut a = Document::new(PeerId::new(1));
        let mut b = Document::new(PeerId::new(2));
        a.transact().text("t").insert(0, "ab").unwrap();
        b.transact().text("t").insert(0, "xy").unwrap();
        a.merge(&b).unwrap();
        a.transact().text("t").insert(1, "c").unwrap();
        let mine: Vec<_> = a
            .changes_since(&crate::VersionVector::new())
            .unwrap()
            .into_iter()
            .filter(|c| c.peer() == a.peer_id())
            .collect();
        assert_eq!(mine.len(), 2, "the keystroke after the merge starts a change");
        assert_eq!(mine[1].deps().ids().len(), 2, "on top of both heads");
        b.merge(&a).unwrap();
        assert_eq!(a.text("t").to_string(), b.text("t").to_string());
    }

    #[test]
    fn without_merging_each_transaction_is_one_change() {
        let config = DocumentConfig::default().with_merge_changes(false);
        let mut doc = Document::with_config(PeerId::new(1), config);
        for (i, c) in "abc".chars().enumerate() {
            let mut txn = doc.transact();
            txn.text("t").insert(2 * i, &c.to_string()).unwrap();
            txn.text("t").insert(2 * i + 1, "-").unwrap();
        }
        let changes = doc.changes_since(&crate::VersionVector::new()).unwrap();
        assert_eq!(changes.iter().map(|c| c.len()).collect::<Vec<_>>(), [2, 2, 2]);
        assert_eq!(doc.text("t").to_string(), "a-b-c-");
    }
}
