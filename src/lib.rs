//! # crdt-sync
//!
//! A local-first CRDT document and (in later releases) a sans-IO sync protocol around it.
//! Any number of replicas edit a [`Document`] independently, offline or online; once they
//! have exchanged their changes, in any order and with any duplication, they hold identical
//! state.
//!
//! ## Two replicas, synced by hand
//!
//! ```
//! use crdt_sync::{Document, PeerId};
//!
//! # fn main() -> Result<(), crdt_sync::Error> {
//! let mut alice = Document::new(PeerId::new(1));
//! let mut bob = Document::new(PeerId::new(2));
//!
//! // Alice writes a title and a todo list.
//! {
//!     let mut txn = alice.transact();
//!     txn.text("title").insert(0, "Groceries")?;
//!     txn.list::<String>("todo").push(&"milk".to_string())?;
//! } // dropping the transaction commits it as one change
//!
//! // Bob gets everything he lacks: export against his version, import on his side.
//! let update = alice.export_since(bob.version())?;
//! bob.import(&update)?;
//! assert_eq!(bob.text("title").to_string(), "Groceries");
//!
//! // Both edit concurrently, without talking to each other.
//! alice.transact().text("title").insert(0, "Weekly ")?;
//! bob.transact().list::<String>("todo").push(&"eggs".to_string())?;
//! bob.transact().counter("visits").add(1)?;
//!
//! // Exchange changes both ways; order and duplicates do not matter.
//! let to_bob = alice.export_since(bob.version())?;
//! let to_alice = bob.export_since(alice.version())?;
//! bob.import(&to_bob)?;
//! alice.import(&to_alice)?;
//! alice.import(&to_alice)?; // a duplicate is ignored
//!
//! assert_eq!(alice.text("title").to_string(), "Weekly Groceries");
//! assert_eq!(alice.list::<String>("todo").to_vec()?, ["milk", "eggs"]);
//! assert_eq!(alice.encode_state(), bob.encode_state()); // identical state, byte for byte
//! # Ok(())
//! # }
//! ```
//!
//! ## What the document gives you
//!
//! * **Types**: text ([`TextRef`]/[`TextMut`]), [`ListRef`], [`MovableListRef`], [`MapRef`],
//!   [`RegisterRef`], [`CounterRef`], [`OrSetRef`], nestable through [`ContainerId`]s.
//! * **Causality**: [`VersionVector`]s, [`Frontier`]s, a causal change log that exports
//!   exactly what a version lacks; changes whose dependencies are missing wait in a buffer
//!   ([`Document::missing_dependencies`]).
//! * **Time**: a hybrid logical clock ([`Timestamp`]) orders last-writer-wins writes
//!   consistently with causality; the wall clock is an input ([`Document::set_wall_clock`]),
//!   never read by the crate.
//! * **History**: [`Document::encode`] / [`Document::load`], state snapshots without history,
//!   [`Document::trim_history`], [`Document::fork_at`] any past version and
//!   [`Document::merge`] back.
//! * **Events**: one [`DocEvent`] per transaction or import, local or remote.
//!
//! ## Policies
//!
//! * No panic on any input: bytes from a peer are decoded with checked lengths, a checksum
//!   and a size limit, and a bad buffer or change returns an [`Error`] with the document
//!   unchanged.
//! * No clock, RNG, socket, thread or file in the crate: time and randomness are arguments.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod doc;
mod error;
mod wire;

pub use doc::change::Change;
pub use doc::clock::{ClockError, HybridClock, MAX_WALL_MS, Timestamp};
pub use doc::codec::EncodeOptions;
pub use doc::config::DocumentConfig;
pub use doc::document::{Document, ImportStatus};
pub use doc::event::{DocEvent, Origin};
pub use doc::id::{Counter, IdSpan, OpId, PeerId};
pub use doc::op::{ContainerId, ContainerKind};
pub use doc::transaction::Transaction;
pub use doc::types::{
    CounterMut, CounterRef, Cursor, ListMut, ListRef, MapMut, MapRef, MovableListMut, MovableListRef,
    OrSetMut, OrSetRef, RegisterMut, RegisterRef, TextMut, TextRef,
};
pub use doc::value::Value;
pub use doc::version::{Frontier, VersionVector};
pub use error::{DecodeError, Error};

/// The README's examples are compiled and run as doc tests, so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
