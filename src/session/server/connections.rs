//! The server's connections, remembering which ones were handed out mutably since the last
//! flush: only those can have something to send, so a flush visits them and not every
//! connection (with a thousand clients, scanning them all after every frame showed up as
//! 7% of the server's time in `perf`).

use std::collections::{BTreeMap, BTreeSet, btree_map};

use super::Connection;
use crate::ConnectionId;

#[derive(Debug, Default)]
pub(super) struct Connections {
    map: BTreeMap<ConnectionId, Connection>,
    /// Every connection `get_mut`, `insert` or mutable iteration reached since the last
    /// [`Connections::take_touched`]: a superset of those with something to flush.
    touched: BTreeSet<ConnectionId>,
}

impl Connections {
    pub(super) fn get(&self, id: &ConnectionId) -> Option<&Connection> {
        self.map.get(id)
    }

    pub(super) fn get_mut(&mut self, id: &ConnectionId) -> Option<&mut Connection> {
        let conn = self.map.get_mut(id)?;
        self.touched.insert(*id);
        Some(conn)
    }

    pub(super) fn contains_key(&self, id: &ConnectionId) -> bool {
        self.map.contains_key(id)
    }

    pub(super) fn insert(&mut self, id: ConnectionId, conn: Connection) {
        self.touched.insert(id);
        self.map.insert(id, conn);
    }

    pub(super) fn remove(&mut self, id: &ConnectionId) -> Option<Connection> {
        self.touched.remove(id);
        self.map.remove(id)
    }

    pub(super) fn keys(&self) -> btree_map::Keys<'_, ConnectionId, Connection> {
        self.map.keys()
    }

    pub(super) fn values(&self) -> btree_map::Values<'_, ConnectionId, Connection> {
        self.map.values()
    }

    pub(super) fn iter(&self) -> btree_map::Iter<'_, ConnectionId, Connection> {
        self.map.iter()
    }

    /// Every connection, mutably: all count as touched.
    pub(super) fn iter_mut(&mut self) -> btree_map::IterMut<'_, ConnectionId, Connection> {
        self.touched.extend(self.map.keys().copied());
        self.map.iter_mut()
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// The connections touched since the last call, in id order.
    pub(super) fn take_touched(&mut self) -> BTreeSet<ConnectionId> {
        std::mem::take(&mut self.touched)
    }

    /// Touch `id` again (it still has something waiting).
    pub(super) fn touch(&mut self, id: ConnectionId) {
        if self.map.contains_key(&id) {
            self.touched.insert(id);
        }
    }
}

impl<'a> IntoIterator for &'a Connections {
    type Item = (&'a ConnectionId, &'a Connection);
    type IntoIter = btree_map::Iter<'a, ConnectionId, Connection>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> IntoIterator for &'a mut Connections {
    type Item = (&'a ConnectionId, &'a mut Connection);
    type IntoIter = btree_map::IterMut<'a, ConnectionId, Connection>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}
