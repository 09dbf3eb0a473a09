//! `Text`: collaborative plain text.
//!
//! Positions are in Unicode scalar values (Rust `char`s). Editors that count in UTF-16 code
//! units (JavaScript, Java, Windows) or in UTF-8 bytes convert with the `utf16_*` and `utf8_*`
//! methods. Concurrent runs typed at the same place never interleave (Fugue).

use serde::{Deserialize, Serialize};

use super::sequence::Sequence;
use crate::doc::id::{OpId, PeerId};
use crate::doc::op::{ContainerId, ContainerKind, LocalEdit};
use crate::doc::transaction::Transaction;
use crate::{Document, Error};

/// A position between two elements of a text or list that stays attached to the same
/// element while other replicas edit around it: the caret of a remote user.
///
/// Create one with [`TextRef::cursor_at`] and turn it back into an index with
/// [`TextRef::resolve_cursor`]. Cursors are plain data (serde), so they can be sent to other
/// replicas, which resolve them against their own copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Cursor {
    /// The start of the container.
    Start,
    /// Just before the element with this id (even once it is deleted).
    Before(OpId),
    /// Just after the element with this id (used at the end of the container).
    After(OpId),
}

pub(crate) fn cursor_at<C: super::sequence::SeqContent>(
    seq: Option<&Sequence<C>>,
    pos: usize,
) -> Result<Cursor, Error> {
    let len = seq.map_or(0, Sequence::len);
    if pos > len {
        return Err(Error::OutOfBounds { index: pos, len });
    }
    Ok(match seq {
        Some(seq) if pos < len => seq.id_at(pos).map_or(Cursor::Start, Cursor::Before),
        Some(seq) if len > 0 => seq.id_at(len - 1).map_or(Cursor::Start, Cursor::After),
        _ => Cursor::Start,
    })
}

pub(crate) fn resolve_cursor<C: super::sequence::SeqContent>(
    seq: Option<&Sequence<C>>,
    cursor: &Cursor,
) -> Option<usize> {
    match (*cursor, seq) {
        (Cursor::Start, _) => Some(0),
        (Cursor::Before(id), Some(seq)) => seq.position_of(id),
        (Cursor::After(id), Some(seq)) => {
            let visible = !seq.is_deleted(id)?;
            seq.position_of(id).map(|p| p + usize::from(visible))
        }
        _ => None,
    }
}

/// Read access to a text.
pub struct TextRef<'a> {
    seq: Option<&'a Sequence<String>>,
}

impl<'a> TextRef<'a> {
    pub(crate) fn new(doc: &'a Document, id: &ContainerId) -> Self {
        TextRef { seq: doc.state.text(id) }
    }

    /// Length in Unicode scalar values.
    pub fn len(&self) -> usize {
        self.seq.map_or(0, Sequence::len)
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The characters in `start..end` (Unicode scalar positions).
    pub fn slice(&self, start: usize, end: usize) -> Result<String, Error> {
        if start > end || end > self.len() {
            return Err(Error::OutOfBounds { index: end.max(start), len: self.len() });
        }
        Ok(self.seq.map_or_else(String::new, |s| s.slice(start, end - start)))
    }

    /// Visit the characters in order until `f` returns `false`, without building a string.
    fn walk_chars(&self, mut f: impl FnMut(char) -> bool) {
        let Some(seq) = self.seq else { return };
        let mut going = true;
        seq.for_each_visible(|_, piece| {
            if going {
                going = piece.chars().all(&mut f);
            }
        });
    }

    /// Code units (of `unit_len`) in the first `pos` characters.
    fn units_before(&self, pos: usize, unit_len: fn(char) -> usize) -> Result<usize, Error> {
        let len = self.len();
        if pos > len {
            return Err(Error::OutOfBounds { index: pos, len });
        }
        let (mut chars, mut units) = (0, 0);
        self.walk_chars(|c| {
            if chars == pos {
                return false;
            }
            chars += 1;
            units += unit_len(c);
            true
        });
        Ok(units)
    }

    /// The character position at `offset` code units (of `unit_len`).
    fn chars_before_units(&self, offset: usize, unit_len: fn(char) -> usize) -> Result<usize, Error> {
        let (mut chars, mut units, mut inside) = (0, 0, false);
        self.walk_chars(|c| {
            if units >= offset {
                return false;
            }
            units += unit_len(c);
            chars += 1;
            inside = units > offset;
            !inside
        });
        if inside {
            Err(Error::NotCharBoundary { offset })
        } else if units == offset {
            Ok(chars)
        } else {
            Err(Error::OutOfBounds { index: offset, len: units })
        }
    }

    /// Length in UTF-16 code units.
    pub fn utf16_len(&self) -> usize {
        self.units_before(self.len(), char::len_utf16).unwrap_or(0)
    }

    /// Length in UTF-8 bytes.
    pub fn utf8_len(&self) -> usize {
        self.units_before(self.len(), char::len_utf8).unwrap_or(0)
    }

    /// Convert a Unicode scalar position to a UTF-16 offset.
    pub fn utf16_from_char(&self, pos: usize) -> Result<usize, Error> {
        self.units_before(pos, char::len_utf16)
    }

    /// Convert a UTF-16 offset to a Unicode scalar position. An offset inside a surrogate pair
    /// is [`Error::NotCharBoundary`].
    pub fn char_from_utf16(&self, offset: usize) -> Result<usize, Error> {
        self.chars_before_units(offset, char::len_utf16)
    }

    /// Convert a Unicode scalar position to a UTF-8 byte offset.
    pub fn utf8_from_char(&self, pos: usize) -> Result<usize, Error> {
        self.units_before(pos, char::len_utf8)
    }

    /// Convert a UTF-8 byte offset to a Unicode scalar position. An offset inside a character
    /// is [`Error::NotCharBoundary`].
    pub fn char_from_utf8(&self, offset: usize) -> Result<usize, Error> {
        self.chars_before_units(offset, char::len_utf8)
    }

    /// A stable cursor at `pos` (before the character now at `pos`).
    pub fn cursor_at(&self, pos: usize) -> Result<Cursor, Error> {
        cursor_at(self.seq, pos)
    }

    /// Where `cursor` is now; `None` if it names an element this replica does not have yet.
    pub fn resolve_cursor(&self, cursor: &Cursor) -> Option<usize> {
        resolve_cursor(self.seq, cursor)
    }
}

impl std::fmt::Display for TextRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(seq) = self.seq {
            let mut result = Ok(());
            seq.for_each_visible(|_, s| {
                if result.is_ok() {
                    result = f.write_str(s);
                }
            });
            result?;
        }
        Ok(())
    }
}

/// Write access to a text, inside a [`Transaction`].
pub struct TextMut<'t, 'd> {
    txn: &'t mut Transaction<'d>,
    id: ContainerId,
    /// Whether `id` is the document's shared root id, lent to this handle until it drops.
    lent: bool,
}

impl<'t, 'd> TextMut<'t, 'd> {
    pub(crate) fn new(txn: &'t mut Transaction<'d>, id: ContainerId) -> Self {
        TextMut { txn, id, lent: false }
    }

    /// A handle on a root text whose id the document lent (see `Document::lend_root`).
    pub(crate) fn lent(txn: &'t mut Transaction<'d>, id: ContainerId) -> Self {
        TextMut { txn, id, lent: true }
    }

    fn seq(&self) -> Option<&Sequence<String>> {
        self.txn.doc().state.text(&self.id)
    }

    /// Read the text as it is now, inside the transaction.
    pub fn read(&self) -> TextRef<'_> {
        TextRef { seq: self.seq() }
    }

    /// Insert `text` at `pos` (Unicode scalar position).
    pub fn insert(&mut self, pos: usize, text: &str) -> Result<(), Error> {
        let in_bounds =
            |len: usize| if pos > len { Err(Error::OutOfBounds { index: pos, len }) } else { Ok(()) };
        if text.is_empty() {
            return in_bounds(self.read().len());
        }
        // A keystroke is one ASCII byte, and counting it needs no call.
        let chars = if text.len() == 1 { 1 } else { text.chars().count() };
        let (reserved, seq) = self.txn.reserve_in_text(&self.id, chars, |seq| in_bounds(seq.len()))?;
        let anchor = seq.insert_local(pos, reserved.id, text, chars);
        self.txn.record_edit(reserved, LocalEdit::TextInsert { container: &self.id, anchor, text });
        Ok(())
    }

    /// Delete `len` characters starting at `pos`.
    pub fn delete(&mut self, pos: usize, len: usize) -> Result<(), Error> {
        let in_bounds = |seq: &Sequence<String>| super::checked_range(pos, len, seq.len()).map(drop);
        if len == 0 {
            return super::checked_range(pos, 0, self.read().len()).map(drop);
        }
        // One id per deleted character.
        let (reserved, seq) = self.txn.reserve_in_text(&self.id, len, in_bounds)?;
        let spans = seq.delete_local(pos, len);
        debug_assert_eq!(spans.iter().map(|s| s.len as usize).sum::<usize>(), len, "one id per character");
        self.txn.record_edit(reserved, LocalEdit::Delete { container: &self.id, spans: &spans });
        Ok(())
    }

    /// Replace `del` characters at `pos` with `text`.
    pub fn splice(&mut self, pos: usize, del: usize, text: &str) -> Result<(), Error> {
        self.delete(pos, del)?;
        self.insert(pos, text)
    }

    /// Append `text` at the end.
    pub fn push_str(&mut self, text: &str) -> Result<(), Error> {
        let len = self.read().len();
        self.insert(len, text)
    }

    /// Make the text equal to `new` with a minimal set of inserts and deletes (Myers diff over
    /// characters), so that concurrent edits elsewhere in the text survive.
    pub fn set_text(&mut self, new: &str) -> Result<(), Error> {
        let old: Vec<char> = self.read().to_string().chars().collect();
        let new: Vec<char> = new.chars().collect();
        let ops = similar::capture_diff_slices(similar::Algorithm::Myers, &old, &new);
        // Back to front, so that earlier old indices stay valid.
        for op in ops.iter().rev() {
            let (old_index, old_len, new_range) = match *op {
                similar::DiffOp::Equal { .. } => continue,
                similar::DiffOp::Delete { old_index, old_len, .. } => (old_index, old_len, 0..0),
                similar::DiffOp::Insert { old_index, new_index, new_len } => {
                    (old_index, 0, new_index..new_index + new_len)
                }
                similar::DiffOp::Replace { old_index, old_len, new_index, new_len } => {
                    (old_index, old_len, new_index..new_index + new_len)
                }
            };
            self.delete(old_index, old_len)?;
            let inserted: String = new[new_range].iter().collect();
            self.insert(old_index, &inserted)?;
        }
        Ok(())
    }
}

impl Drop for TextMut<'_, '_> {
    fn drop(&mut self) {
        if self.lent {
            // A placeholder that owns nothing takes the id's place for the moment it has left.
            let placeholder =
                ContainerId::Child { id: OpId::new(PeerId::new(0), 0), kind: ContainerKind::Text };
            self.txn.return_root(std::mem::replace(&mut self.id, placeholder));
        }
    }
}
