//! Transactions: several operations that become one change.

use std::collections::BTreeSet;

use super::change::Change;
use super::clock::Timestamp;
use super::id::{Counter, OpId};
use super::op::{ContainerId, ContainerKind, Op, OpContent};
use super::types::CounterMut;
use super::types::ListMut;
use super::types::MapMut;
use super::types::MovableListMut;
use super::types::OrSetMut;
use super::types::RegisterMut;
use super::types::TextMut;
use crate::{Document, Error};

/// The largest operation vector a document keeps for its next transaction (typing makes
/// one or two operations per transaction).
const SPARE_OPS: usize = 16;

/// A group of edits that becomes one [`Change`] when committed.
///
/// Edits take effect on the document immediately (reads inside the transaction see them);
/// the change is recorded, and a [`crate::DocEvent`] with [`crate::Origin::Local`] queued, when
/// the transaction is committed or dropped. An edit that returns an error had no effect.
pub struct Transaction<'d> {
    doc: &'d mut Document,
    start: Counter,
    next: Counter,
    timestamp: Option<Timestamp>,
    ops: Vec<Op>,
    uses_timestamp: bool,
    changed: BTreeSet<ContainerId>,
}

impl<'d> Transaction<'d> {
    pub(crate) fn new(doc: &'d mut Document) -> Self {
        let start = doc.log.version().get(doc.peer);
        let ops = std::mem::take(&mut doc.spare_ops);
        Transaction {
            doc,
            start,
            next: start,
            timestamp: None,
            ops,
            uses_timestamp: false,
            changed: BTreeSet::new(),
        }
    }

    /// The document, for reading.
    pub fn doc(&self) -> &Document {
        self.doc
    }

    /// Apply and record one operation; returns its first id.
    pub(crate) fn push_op(&mut self, container: ContainerId, content: OpContent) -> Result<OpId, Error> {
        if !self.doc.state.has_container(&container) {
            return Err(Error::UnknownContainer);
        }
        let len = Counter::try_from(content.id_len()).map_err(|_| Error::CounterOverflow)?;
        let end = self.next.checked_add(len).ok_or(Error::CounterOverflow)?;
        // Lamport time must fit too; it only runs out if a peer sent hostile Lamport times.
        self.doc.log.lamport_end().checked_add(end - self.start).ok_or(Error::CounterOverflow)?;
        let timestamp = match self.timestamp {
            Some(ts) => ts,
            None => {
                let ts = self.doc.clock.tick()?;
                self.timestamp = Some(ts);
                ts
            }
        };
        let id = OpId::new(self.doc.peer, self.next);
        let op = Op { container, content };
        let created = self.doc.state.apply(id, timestamp, &op);
        // Only an event needs the set of changed containers.
        if self.doc.events_enabled() {
            if !self.changed.contains(&op.container) {
                self.changed.insert(op.container.clone());
            }
            self.changed.extend(created);
        }
        self.uses_timestamp |= !op.ignores_timestamp();
        self.ops.push(op);
        self.next = end;
        Ok(id)
    }

    /// Edit the root text named `name`.
    pub fn text(&mut self, name: &str) -> TextMut<'_, 'd> {
        let id = self.doc.root_id(name, ContainerKind::Text);
        TextMut::new(self, id)
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

    /// Record the change (if any edit was made). Dropping the transaction does the same.
    pub fn commit(self) {}

    fn finish(&mut self) {
        let timestamp = match self.timestamp {
            Some(timestamp) if !self.ops.is_empty() => timestamp,
            // Nothing to record: the (empty) buffer serves the next transaction.
            _ => {
                self.doc.spare_ops = std::mem::take(&mut self.ops);
                return;
            }
        };
        let change = Change {
            id: OpId::new(self.doc.peer, self.start),
            deps: self.doc.log.frontier().clone(),
            lamport: self.doc.log.lamport_end(),
            timestamp,
            ops: std::mem::take(&mut self.ops),
            len: self.next - self.start,
            uses_timestamp: self.uses_timestamp,
        };
        let span = change.span();
        let merge = self.doc.config().merge_changes;
        // A big transaction's buffer is let go: kept, it would hold its memory for good.
        if let Some(ops) = self.doc.log.push_local(change, merge).filter(|ops| ops.capacity() <= SPARE_OPS) {
            self.doc.spare_ops = ops;
        }
        if self.doc.events_enabled() {
            let containers = std::mem::take(&mut self.changed).into_iter().collect();
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
    use crate::{Document, PeerId};

    #[test]
    fn typing_reuses_one_operation_buffer_and_a_big_transaction_does_not_keep_its_own() {
        let mut doc = Document::new(PeerId::new(1));
        for (i, c) in "hello".chars().enumerate() {
            doc.transact().text("t").insert(i, &c.to_string()).unwrap();
        }
        // Every keystroke merged into the change before it and handed its buffer on.
        assert_eq!(doc.change_count(), 1);
        assert!(doc.spare_ops.capacity() > 0 && doc.spare_ops.capacity() <= super::SPARE_OPS);
        {
            // Inserting back to front makes one operation per character.
            let mut txn = doc.transact();
            for _ in 0..100 {
                txn.text("t").insert(0, "x").unwrap();
            }
        }
        assert_eq!(doc.change_count(), 1, "the big transaction merged too");
        assert!(doc.spare_ops.capacity() < 100, "its 100-operation buffer was let go");
        assert_eq!(doc.text("t").to_string(), format!("{}hello", "x".repeat(100)));
    }
}
