//! What a sequence holds: the [`SeqContent`] of its runs, chars for text and items for lists.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The content of a run of elements: characters of a text, items of a list.
pub(crate) trait SeqContent: Clone + Debug + PartialEq + Serialize + DeserializeOwned {
    /// The content borrowed: `str` for text, a slice of items for lists. A local edit hands
    /// its content over borrowed, and the sequence copies it only where it needs a copy.
    type Slice: ?Sized + ToOwned<Owned = Self>;

    /// Content without elements.
    fn empty() -> Self;

    /// The number of elements of borrowed content.
    fn slice_len(slice: &Self::Slice) -> usize;

    /// The content, borrowed.
    #[cfg(test)]
    fn as_slice(&self) -> &Self::Slice;

    /// The number of elements (Unicode scalar values for text).
    fn len(&self) -> usize;

    /// Remove and return the elements from `at` on (`at` is clamped to the length).
    fn split_off(&mut self, at: usize) -> Self;

    /// Append `other` at the end.
    fn append(&mut self, other: Self);

    /// Append a copy of `other` at the end.
    fn append_copy(&mut self, other: &Self::Slice);

    /// [`Self::split_off`] for content known to hold `len` elements, which may be cheaper.
    fn split_off_counted(&mut self, at: usize, len: usize) -> Self {
        let _ = len;
        self.split_off(at)
    }

    /// Keep the elements before `from`, drop those of `from..to` and return those from `to` on,
    /// for content known to hold `len` elements (`from <= to <= len`).
    fn cut(&mut self, from: usize, to: usize, len: usize) -> Self {
        let tail = self.split_off_counted(to, len);
        self.split_off_counted(from, to);
        tail
    }

    /// Drop the first `n` elements of content known to hold `len`, in place.
    fn remove_front(&mut self, n: usize, len: usize);

    /// Give back spare capacity if the content is small. Appends grow content by doubling, and
    /// a cut keeps the room of what it removed; once edits move on from a piece, that room is
    /// usually never used again. Large content keeps it: if edits alternate between it and
    /// another piece, trimming would copy it on every switch.
    fn shrink_to_fit(&mut self) {}

    /// A copy of `slice` that local typing will likely grow, with room for some more elements,
    /// so that the first keystrokes typed on do not each reallocate it.
    fn to_owned_with_room(slice: &Self::Slice) -> Self {
        slice.to_owned()
    }

    /// A copy of the elements `from..to` (clamped to the length).
    fn slice(&self, from: usize, to: usize) -> Self {
        let mut middle = self.clone().split_off(from);
        middle.split_off(to.saturating_sub(from));
        middle
    }
}

/// The largest content [`SeqContent::shrink_to_fit`] trims: copying this much on each switch
/// between two pieces costs about as much as the rest of an edit.
const TRIM_BYTES: usize = 4096;

/// Whether trimming the spare room of `s` is worth a `realloc` call. Allocators hand out
/// blocks in steps of 16 bytes, so less than 32 spare bytes gives back a step or none, and
/// the call came once per piece the cursor leaves and once per operation typing stops
/// growing (two thirds of the reallocations of a local replay of `sveltecomponent`).
pub(crate) fn worth_trimming(s: &String) -> bool {
    s.capacity() - s.len() >= 32
}

/// Append `more` to `s`; a one-byte character without a call to `memcpy`. Typing appends one
/// character at a time to a piece and to an operation, and the call costs more than the copy.
pub(crate) fn push_typed(s: &mut String, more: &str) {
    match more.as_bytes() {
        // One byte of UTF-8 is an ASCII character.
        &[byte] => s.push(char::from(byte)),
        _ => s.push_str(more),
    }
}

/// The byte offset of char `chars` of `s` (the end if there are fewer chars).
fn byte_offset(s: &str, chars: usize) -> usize {
    s.char_indices().nth(chars).map_or(s.len(), |(b, _)| b)
}

/// [`byte_offset`] in `s` known to hold `len` chars, scanning from the nearer end: edits
/// mostly happen near the end of a long piece, and an all-ASCII piece needs no scan at all.
pub(crate) fn byte_offset_counted(s: &str, chars: usize, len: usize) -> usize {
    if s.len() == len {
        chars.min(len)
    } else if chars >= len {
        s.len()
    } else if chars > len / 2 {
        s.char_indices().nth_back(len - 1 - chars).map_or(s.len(), |(b, _)| b)
    } else {
        byte_offset(s, chars)
    }
}

impl SeqContent for String {
    type Slice = str;

    fn empty() -> Self {
        String::new()
    }

    fn slice_len(slice: &str) -> usize {
        slice.chars().count()
    }

    #[cfg(test)]
    fn as_slice(&self) -> &str {
        self
    }

    fn len(&self) -> usize {
        self.chars().count()
    }

    fn split_off(&mut self, at: usize) -> Self {
        let at = byte_offset(self, at);
        String::split_off(self, at)
    }

    fn append(&mut self, other: Self) {
        self.push_str(&other);
    }

    fn append_copy(&mut self, other: &str) {
        push_typed(self, other);
    }

    fn split_off_counted(&mut self, at: usize, len: usize) -> Self {
        let at = byte_offset_counted(self, at, len);
        String::split_off(self, at)
    }

    fn cut(&mut self, from: usize, to: usize, len: usize) -> Self {
        let tail = self.split_off_counted(to, len);
        let from = byte_offset_counted(self, from, to);
        self.truncate(from);
        tail
    }

    fn remove_front(&mut self, n: usize, len: usize) {
        let at = byte_offset_counted(self, n, len);
        self.drain(..at);
    }

    fn shrink_to_fit(&mut self) {
        if self.capacity() <= TRIM_BYTES && worth_trimming(self) {
            String::shrink_to_fit(self);
        }
    }

    /// Runs typed in one place average some tens of characters in the editing traces, so the
    /// copy takes room for 32 bytes; what is not used is trimmed once typing moves elsewhere.
    fn to_owned_with_room(slice: &str) -> Self {
        const ROOM: usize = 32;
        let mut owned = String::with_capacity(slice.len().max(ROOM));
        owned.push_str(slice);
        owned
    }

    fn slice(&self, from: usize, to: usize) -> Self {
        let start = byte_offset(self, from);
        let rest = &self[start..];
        rest[..byte_offset(rest, to.saturating_sub(from))].to_owned()
    }
}

impl<T: Clone + Debug + PartialEq + Serialize + DeserializeOwned> SeqContent for Vec<T> {
    type Slice = [T];

    fn empty() -> Self {
        Vec::new()
    }

    fn slice_len(slice: &[T]) -> usize {
        slice.len()
    }

    #[cfg(test)]
    fn as_slice(&self) -> &[T] {
        self
    }

    fn len(&self) -> usize {
        <[T]>::len(self)
    }

    fn split_off(&mut self, at: usize) -> Self {
        let at = at.min(<[T]>::len(self));
        Vec::split_off(self, at)
    }

    fn cut(&mut self, from: usize, to: usize, _len: usize) -> Self {
        let tail = SeqContent::split_off(self, to);
        self.truncate(from);
        tail
    }

    fn append(&mut self, mut other: Self) {
        Vec::append(self, &mut other);
    }

    fn append_copy(&mut self, other: &[T]) {
        self.extend_from_slice(other);
    }

    fn remove_front(&mut self, n: usize, _len: usize) {
        self.drain(..n.min(<[T]>::len(self)));
    }

    fn shrink_to_fit(&mut self) {
        if self.capacity().saturating_mul(size_of::<T>()) <= TRIM_BYTES {
            Vec::shrink_to_fit(self);
        }
    }

    fn slice(&self, from: usize, to: usize) -> Self {
        let from = from.min(<[T]>::len(self));
        let to = to.clamp(from, <[T]>::len(self));
        self[from..to].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_offsets_match_a_scan_from_the_start() {
        for s in ["", "abc", "é字🦀", "aé字b🦀c", "🦀🦀🦀🦀🦀x"] {
            let len = s.chars().count();
            for chars in 0..=len + 1 {
                assert_eq!(byte_offset_counted(s, chars, len), byte_offset(s, chars), "{s:?} {chars}");
            }
            for from in 0..=len {
                for to in from..=len {
                    let mut head = s.to_owned();
                    let tail = head.cut(from, to, len);
                    let chars: Vec<char> = s.chars().collect();
                    assert_eq!(head, chars[..from].iter().collect::<String>());
                    assert_eq!(tail, chars[to..].iter().collect::<String>());
                    let mut items: Vec<char> = chars.clone();
                    let rest = items.cut(from, to, len);
                    assert_eq!((items, rest), (chars[..from].to_vec(), chars[to..].to_vec()));
                }
            }
        }
    }
}
