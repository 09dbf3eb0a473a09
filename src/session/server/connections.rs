//! The server's connections, remembering which ones were handed out mutably since the last
//! flush: only those can have something to send, so a flush visits them and not every
//! connection (with a thousand clients, scanning them all after every frame showed up as
//! 7% of the server's time in `perf`).
//!
//! The touched ids are a vector that keeps its buffer, not a set: a set emptied by every flush
//! allocated a node on the next touch, several times per keystroke (an allocation and a free
//! per frame on a live connection, 5% of the instructions of a live-typing loop).

use std::collections::{BTreeMap, btree_map};

use super::Connection;
use crate::ConnectionId;

#[derive(Debug, Default)]
pub(super) struct Connections {
    map: BTreeMap<ConnectionId, Connection>,
    /// Every connection `get_mut`, `insert` or mutable iteration reached since the last
    /// [`Connections::take_touched`]: a superset of those with something to flush, possibly
    /// with repeats (deduplicated when taken, or when it grows past twice the connections).
    touched: Vec<ConnectionId>,
    /// The buffer of the previous take, handed back by [`Connections::recycle`].
    spare: Vec<ConnectionId>,
}

impl Connections {
    pub(super) fn get(&self, id: &ConnectionId) -> Option<&Connection> {
        self.map.get(id)
    }

    pub(super) fn get_mut(&mut self, id: &ConnectionId) -> Option<&mut Connection> {
        let connections = self.map.len();
        let conn = self.map.get_mut(id)?;
        mark(&mut self.touched, *id, connections);
        Some(conn)
    }

    pub(super) fn contains_key(&self, id: &ConnectionId) -> bool {
        self.map.contains_key(id)
    }

    pub(super) fn insert(&mut self, id: ConnectionId, conn: Connection) {
        self.map.insert(id, conn);
        mark(&mut self.touched, id, self.map.len());
    }

    pub(super) fn remove(&mut self, id: &ConnectionId) -> Option<Connection> {
        // A removed id may stay in `touched`; whoever takes it finds no connection.
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
        self.touched.clear();
        self.touched.extend(self.map.keys().copied());
        self.map.iter_mut()
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// The connections touched since the last call, in id order, each once. Hand the vector
    /// back with [`Connections::recycle`] so that its buffer serves the next take.
    pub(super) fn take_touched(&mut self) -> Vec<ConnectionId> {
        let mut taken = std::mem::replace(&mut self.touched, std::mem::take(&mut self.spare));
        taken.sort_unstable();
        taken.dedup();
        taken
    }

    /// Forget every touch since the last take.
    pub(super) fn clear_touched(&mut self) {
        self.touched.clear();
    }

    /// Return a vector from [`Connections::take_touched`] for reuse.
    pub(super) fn recycle(&mut self, mut taken: Vec<ConnectionId>) {
        taken.clear();
        if taken.capacity() > self.spare.capacity() {
            self.spare = taken;
        }
    }

    /// Touch `id` again (it still has something waiting).
    pub(super) fn touch(&mut self, id: ConnectionId) {
        if self.map.contains_key(&id) {
            mark(&mut self.touched, id, self.map.len());
        }
    }
}

/// Record `id` as touched. Repeats of the last id are skipped (one frame touches its
/// connection several times in a row); other repeats are squeezed out once the list holds
/// twice as many ids as there are connections, so it stays bounded however long nobody flushes.
fn mark(touched: &mut Vec<ConnectionId>, id: ConnectionId, connections: usize) {
    if touched.last() == Some(&id) {
        return;
    }
    if touched.len() >= 2 * connections + 16 {
        touched.sort_unstable();
        touched.dedup();
    }
    touched.push(id);
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
