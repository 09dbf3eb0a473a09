//! A compact binary form of a text sequence, for the state section of an encoded document
//! (`crate::doc::state_section`): the canonical runs as columns, most values predicted from
//! the run before, so that loading a document builds its text from these few bytes instead of
//! replaying its history.
//!
//! # Layout
//!
//! Integers are LEB128 varints; *zigzag* marks a signed value. Each column is one block as in
//! the columnar change format (`varint(stored_len << 1 | deflated)`, then the raw length if
//! DEFLATE'd, then the bytes).
//!
//! ```text
//! varint P, then P × varint peer id          (the peer table)
//! varint R                                    (runs, in document order)
//! column peers    R × varint peer index
//! column starts   R × zigzag(first counter - end of the previous run of the same peer, or 0)
//! column lengths  R × varint elements
//! column flags    R × u8: 1 deleted, 2 explicit anchor, 4 anchored on the right,
//!                 8 anchored at the root, 16 parent as predicted
//! column parents  per explicit anchor at an element that is not the predicted one:
//!                 varint peer index, zigzag(first counter - parent counter)
//! column text     the text of the visible runs, UTF-8, in order
//! ```
//!
//! The predicted parent of a run anchored on the right is the last element of the run before
//! it, on the left the first element of the run after it: typing after a character, or before
//! one, hangs there. Decoding checks everything [`Sequence::from_runs`] checks.

use std::borrow::Cow;

use super::canonical::Body;
use super::rebuild::PieceList;
use super::*;
use crate::DecodeError;
use crate::bytes::{Reader, write_varint, zigzag};
use crate::doc::columnar::{Budget, read_column, write_column};

const DELETED: u8 = 1;
const EXPLICIT: u8 = 2;
const RIGHT: u8 = 4;
const ROOT: u8 = 8;
const PREDICTED: u8 = 16;

fn malformed(what: &str) -> DecodeError {
    DecodeError::Malformed(format!("text state: {what}"))
}

/// The number of elements of a run.
fn run_len<T: std::ops::Deref<Target = String>>(body: &Body<T>) -> Counter {
    match body {
        Body::Visible(text) => text.chars().count() as Counter,
        Body::Deleted(n) => *n,
    }
}

impl Sequence<String> {
    /// The compact form (see the module docs).
    pub(crate) fn encode_compact(&self) -> Vec<u8> {
        let runs = self.canonical_runs();
        let mut peers: Vec<PeerId> = runs.iter().map(|r| r.start.peer).collect();
        for run in &runs {
            if let Some(parent) = run.anchor.and_then(|a| a.parent) {
                peers.push(parent.peer);
            }
        }
        peers.sort_unstable();
        peers.dedup();
        let index = |peer: PeerId| peers.binary_search(&peer).unwrap_or(0) as u64;

        let (mut peer_col, mut starts, mut lengths, mut flags, mut parents) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut text = Vec::new();
        let mut ends: Vec<Counter> = vec![0; peers.len()];
        // The last element of the run before, a right anchor's predicted parent.
        let mut prev_last: Option<OpId> = None;
        for (i, run) in runs.iter().enumerate() {
            let p = index(run.start.peer);
            let len = run_len(&run.body);
            write_varint(&mut peer_col, p);
            write_varint(&mut starts, zigzag(i64::from(run.start.counter) - i64::from(ends[p as usize])));
            ends[p as usize] = run.start.counter + len;
            write_varint(&mut lengths, u64::from(len));
            let mut flag = 0;
            match &run.body {
                Body::Visible(content) => text.extend_from_slice(content.as_bytes()),
                Body::Deleted(_) => flag |= DELETED,
            }
            if let Some(anchor) = run.anchor {
                flag |= EXPLICIT;
                if anchor.side == Side::Right {
                    flag |= RIGHT;
                }
                let predicted = match anchor.side {
                    Side::Right => prev_last,
                    Side::Left => runs.get(i + 1).map(|next| next.start),
                };
                match anchor.parent {
                    None => flag |= ROOT,
                    Some(parent) if Some(parent) == predicted => flag |= PREDICTED,
                    Some(parent) => {
                        write_varint(&mut parents, index(parent.peer));
                        write_varint(
                            &mut parents,
                            zigzag(i64::from(run.start.counter) - i64::from(parent.counter)),
                        );
                    }
                }
            }
            flags.push(flag);
            prev_last = Some(OpId::new(run.start.peer, run.start.counter + len - 1));
        }

        let mut out = Vec::new();
        write_varint(&mut out, peers.len() as u64);
        for peer in &peers {
            write_varint(&mut out, peer.get());
        }
        write_varint(&mut out, runs.len() as u64);
        for column in [&peer_col, &starts, &lengths, &flags, &parents, &text] {
            write_column(&mut out, column);
        }
        out
    }

    /// Decode [`Sequence::encode_compact`], charging what it builds to `budget`.
    pub(crate) fn decode_compact(bytes: &[u8], budget: &mut Budget) -> Result<Self, DecodeError> {
        let runs = CompactRuns::parse(bytes, budget)?;
        let mut list = PieceList::with_capacity(runs.spans.len());
        runs.for_each(budget, |start, len, text, anchor| {
            list.push(start, len, text.map(str::to_owned), anchor).map_err(malformed)
        })?;
        Sequence::from_piece_list(list).map_err(malformed)
    }

    /// Call `f(first id, text)` for each visible run of an encoded compact text, without
    /// building the sequence (the runs' order and anchors are not checked).
    pub(crate) fn for_each_compact_visible_run(
        bytes: &[u8],
        budget: &mut Budget,
        mut f: impl FnMut(OpId, &str),
    ) -> Result<(), DecodeError> {
        CompactRuns::parse(bytes, budget)?.for_each(budget, |start, _, text, _| {
            if let Some(text) = text {
                f(start, text);
            }
            Ok(())
        })
    }
}

/// An encoded compact text with the ids and lengths of its runs decoded: a left anchor's
/// predicted parent is the next run's start, so they come first.
struct CompactRuns<'a> {
    peers: Vec<PeerId>,
    /// First id and length of each run, in document order.
    spans: Vec<(OpId, Counter)>,
    flags: Cow<'a, [u8]>,
    parents: Cow<'a, [u8]>,
    text: Cow<'a, [u8]>,
}

impl<'a> CompactRuns<'a> {
    fn parse(bytes: &'a [u8], budget: &mut Budget) -> Result<Self, DecodeError> {
        let mut input = Reader::new(bytes);
        let peer_count = input.count(1)?;
        let mut peers = Vec::with_capacity(peer_count);
        for _ in 0..peer_count {
            peers.push(PeerId::new(input.varint()?));
        }
        let count = usize::try_from(input.varint()?).map_err(|_| malformed("too many runs"))?;
        let mut column = || read_column(&mut input, budget);
        let (peer_col, starts, lengths) = (column()?, column()?, column()?);
        let (flags, parents, text) = (column()?, column()?, column()?);
        if !input.is_empty() {
            return Err(malformed("bytes after the last column"));
        }
        // One flag byte per run, and the flag column was charged to the budget when it was
        // inflated: the count is backed by real bytes before anything is sized by it.
        if flags.len() != count {
            return Err(malformed("flag column length"));
        }
        budget.charge(count.saturating_mul(size_of::<Piece<String>>() + size_of::<(OpId, Counter)>()))?;

        let (mut peer_col, mut starts, mut lengths) =
            (Reader::new(&peer_col), Reader::new(&starts), Reader::new(&lengths));
        let mut spans: Vec<(OpId, Counter)> = Vec::with_capacity(count);
        let mut ends: Vec<Counter> = vec![0; peers.len()];
        for _ in 0..count {
            let p = usize::try_from(peer_col.varint()?).ok().filter(|&p| p < peers.len());
            let p = p.ok_or_else(|| malformed("peer index out of range"))?;
            let end = &mut ends[p];
            let start = i64::from(*end).checked_add(crate::bytes::unzigzag(starts.varint()?));
            let start = start
                .and_then(|s| Counter::try_from(s).ok())
                .ok_or_else(|| malformed("start counter out of range"))?;
            let len = Counter::try_from(lengths.varint()?).map_err(|_| malformed("run too long"))?;
            *end = start.checked_add(len).ok_or_else(|| malformed("run ids overflow the counter"))?;
            spans.push((OpId::new(peers[p], start), len));
        }
        if !(peer_col.is_empty() && starts.is_empty() && lengths.is_empty()) {
            return Err(malformed("a column holds more values than the runs use"));
        }
        Ok(CompactRuns { peers, spans, flags, parents, text })
    }

    /// Call `f(start, len, text, anchor)` for each run in document order; `text` is `None`
    /// for tombstones, and otherwise exactly `len` characters, charged to `budget`.
    fn for_each(
        &self,
        budget: &mut Budget,
        mut f: impl FnMut(OpId, Counter, Option<&str>, Option<Anchor>) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let text = std::str::from_utf8(&self.text).map_err(|_| malformed("text is not UTF-8"))?;
        let ascii = text.is_ascii();
        let mut rest = text;
        let mut parents = Reader::new(&self.parents);
        let spans = &self.spans;
        for (i, (&(start, len), &flag)) in spans.iter().zip(self.flags.iter()).enumerate() {
            if flag & !(DELETED | EXPLICIT | RIGHT | ROOT | PREDICTED) != 0 {
                return Err(malformed("unknown flags"));
            }
            let anchor = if flag & EXPLICIT == 0 {
                None
            } else {
                let side = if flag & RIGHT != 0 { Side::Right } else { Side::Left };
                let parent = if flag & ROOT != 0 {
                    None
                } else if flag & PREDICTED != 0 {
                    let predicted = match side {
                        Side::Right => i.checked_sub(1).map(|j| {
                            let (prev, prev_len) = spans[j];
                            OpId::new(prev.peer, prev.counter + prev_len.saturating_sub(1))
                        }),
                        Side::Left => spans.get(i + 1).map(|&(next, _)| next),
                    };
                    Some(predicted.ok_or_else(|| malformed("predicted parent without a neighbour"))?)
                } else {
                    let p = usize::try_from(parents.varint()?).ok().and_then(|p| self.peers.get(p));
                    let peer = *p.ok_or_else(|| malformed("peer index out of range"))?;
                    let counter =
                        i64::from(start.counter).checked_sub(crate::bytes::unzigzag(parents.varint()?));
                    let counter = counter
                        .and_then(|c| Counter::try_from(c).ok())
                        .ok_or_else(|| malformed("parent counter out of range"))?;
                    Some(OpId::new(peer, counter))
                };
                Some(Anchor { parent, side })
            };
            let content = if flag & DELETED != 0 {
                None
            } else {
                // `len` characters of the text column, which are `len` bytes when it is ASCII.
                let end = if ascii {
                    Some(len as usize).filter(|&n| n <= rest.len())
                } else {
                    match (len as usize).checked_sub(1) {
                        None => Some(0),
                        Some(last) => rest.char_indices().nth(last).map(|(at, c)| at + c.len_utf8()),
                    }
                };
                let end = end.ok_or_else(|| malformed("text column too short"))?;
                let (content, tail) = rest.split_at(end);
                rest = tail;
                budget.charge(content.len())?;
                Some(content)
            };
            f(start, len, content, anchor)?;
        }
        if !rest.is_empty() || !parents.is_empty() {
            return Err(malformed("a column holds more values than the runs use"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compact text of one run with the given raw columns.
    fn one_run(start: u64, parents: &[u8], flag: u8) -> Vec<u8> {
        let mut out = Vec::new();
        write_varint(&mut out, 1);
        write_varint(&mut out, 7);
        write_varint(&mut out, 1);
        let mut starts = Vec::new();
        write_varint(&mut starts, start);
        for column in [&[0u8][..], &starts, &[1], &[flag], parents, b"a"] {
            write_column(&mut out, column);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Sequence<String>, DecodeError> {
        Sequence::decode_compact(bytes, &mut Budget::new(1 << 20))
    }

    #[test]
    fn round_trips_and_refuses_out_of_range_counters_without_overflowing() {
        let seq = decode(&one_run(0, &[], EXPLICIT | RIGHT | ROOT)).unwrap();
        assert_eq!(seq.to_content(), "a");
        assert_eq!(decode(&seq.encode_compact()).unwrap().to_content(), "a");
        // A start delta of i64::MAX, and a parent delta of i64::MIN, are errors.
        assert!(decode(&one_run(u64::MAX - 1, &[], EXPLICIT | RIGHT | ROOT)).is_err());
        let mut parents = vec![0];
        write_varint(&mut parents, u64::MAX);
        assert!(decode(&one_run(0, &parents, EXPLICIT | RIGHT)).is_err());
        // More runs than flag bytes is refused before anything is sized by the count.
        let mut huge = one_run(0, &[], EXPLICIT | RIGHT | ROOT);
        huge[2] = 0x7f;
        assert!(decode(&huge).is_err());
    }
}
