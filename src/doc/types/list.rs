//! `List<T>`: an ordered list with the same non-interleaving order as text.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::sequence::Sequence;
use super::text::{Cursor, cursor_at, resolve_cursor};
use crate::doc::deletion::forward_runs;
use crate::doc::id::OpId;
use crate::doc::op::{ContainerId, ContainerKind, Element, OpContent};
use crate::doc::transaction::Transaction;
use crate::doc::value::Value;
use crate::{Document, Error};

/// Read access to a list of `T`.
pub struct ListRef<'a, T> {
    seq: Option<&'a Sequence<Vec<Element>>>,
    _item: PhantomData<fn() -> T>,
}

impl<'a, T> ListRef<'a, T> {
    pub(crate) fn new(doc: &'a Document, id: &ContainerId) -> Self {
        ListRef { seq: doc.state.list(id), _item: PhantomData }
    }
}

impl<'a, T: DeserializeOwned> ListRef<'a, T> {
    /// The number of items.
    pub fn len(&self) -> usize {
        self.seq.map_or(0, Sequence::len)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn element(&self, index: usize) -> Option<(OpId, &'a Element)> {
        // One lookup for both the id and the item, without copying the item.
        let (id, items, offset) = self.seq?.visible_piece_at(index)?;
        Some((id, items.get(offset)?))
    }

    /// The item at `index`; `None` if out of bounds or if it is a nested container.
    pub fn get(&self, index: usize) -> Result<Option<T>, Error> {
        match self.element(index) {
            Some((_, Element::Value(v))) => v.to_deserialize().map(Some),
            _ => Ok(None),
        }
    }

    /// The nested container at `index`, if the item is one.
    pub fn get_container(&self, index: usize) -> Option<ContainerId> {
        match self.element(index)? {
            (id, Element::Container(kind)) => Some(ContainerId::Child { id, kind: *kind }),
            _ => None,
        }
    }

    /// Every plain-value item in order (nested containers are skipped).
    pub fn to_vec(&self) -> Result<Vec<T>, Error> {
        let mut out = Vec::with_capacity(self.len());
        let mut error = None;
        if let Some(seq) = self.seq {
            seq.for_each_visible(|_, items| {
                for item in items {
                    if let Element::Value(v) = item {
                        match v.to_deserialize() {
                            Ok(t) => out.push(t),
                            Err(e) => error = error.take().or(Some(e)),
                        }
                    }
                }
            });
        }
        error.map_or(Ok(out), Err)
    }

    /// A stable cursor before the item now at `index`.
    pub fn cursor_at(&self, index: usize) -> Result<Cursor, Error> {
        cursor_at(self.seq, index)
    }

    /// Where `cursor` is now.
    pub fn resolve_cursor(&self, cursor: &Cursor) -> Option<usize> {
        resolve_cursor(self.seq, cursor)
    }
}

/// Write access to a list of `T`, inside a [`Transaction`].
pub struct ListMut<'t, 'd, T> {
    txn: &'t mut Transaction<'d>,
    id: ContainerId,
    _item: PhantomData<fn() -> T>,
}

impl<'t, 'd, T> ListMut<'t, 'd, T> {
    pub(crate) fn new(txn: &'t mut Transaction<'d>, id: ContainerId) -> Self {
        ListMut { txn, id, _item: PhantomData }
    }
}

impl<'t, 'd, T: Serialize + DeserializeOwned> ListMut<'t, 'd, T> {
    /// Read the list as it is now, inside the transaction.
    pub fn read(&self) -> ListRef<'_, T> {
        ListRef { seq: self.txn.doc().state.list(&self.id), _item: PhantomData }
    }

    fn insert_elements(&mut self, index: usize, items: Vec<Element>) -> Result<OpId, Error> {
        let len = self.read().len();
        if index > len {
            return Err(Error::OutOfBounds { index, len });
        }
        let anchor = match self.txn.doc().state.list(&self.id) {
            Some(seq) => seq.local_anchor(index),
            None => Sequence::<Vec<Element>>::new().local_anchor(0),
        };
        self.txn.push_op(self.id.clone(), OpContent::ListInsert { anchor, items })
    }

    /// Insert `item` at `index`.
    pub fn insert(&mut self, index: usize, item: &T) -> Result<(), Error> {
        self.insert_many(index, std::slice::from_ref(item))
    }

    /// Insert several items at `index`, as one run.
    pub fn insert_many(&mut self, index: usize, items: &[T]) -> Result<(), Error> {
        if items.is_empty() {
            return Ok(());
        }
        let items =
            items.iter().map(|i| Value::from_serialize(i).map(Element::Value)).collect::<Result<_, _>>()?;
        self.insert_elements(index, items).map(drop)
    }

    /// Append `item`.
    pub fn push(&mut self, item: &T) -> Result<(), Error> {
        let len = self.read().len();
        self.insert(len, item)
    }

    /// Insert a new nested container at `index` and return its id.
    pub fn insert_container(&mut self, index: usize, kind: ContainerKind) -> Result<ContainerId, Error> {
        let id = self.insert_elements(index, vec![Element::Container(kind)])?;
        Ok(ContainerId::Child { id, kind })
    }

    /// Delete `len` items starting at `index`.
    pub fn delete(&mut self, index: usize, len: usize) -> Result<(), Error> {
        let total = self.read().len();
        super::checked_range(index, len, total)?;
        if len == 0 {
            return Ok(());
        }
        let spans =
            self.txn.doc().state.list(&self.id).map(|s| s.visible_spans(index, len)).unwrap_or_default();
        self.txn.push_op(self.id.clone(), OpContent::SeqDelete { spans: forward_runs(spans) })?;
        Ok(())
    }

    /// The item at `index`.
    pub fn get(&self, index: usize) -> Result<Option<T>, Error> {
        self.read().get(index)
    }
}
