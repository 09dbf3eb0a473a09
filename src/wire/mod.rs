//! The wire format of the sync protocol: frames, messages, the change codec and stream
//! framing.
//!
//! A frame is one transport message (one WebSocket binary message); on byte streams each
//! frame is prefixed by its length ([`FrameReader`]). The byte layout is in `docs/PROTOCOL.md`.

pub(crate) mod change_codec;
mod frame;
mod limits;
pub(crate) mod message;
mod stream;

pub use frame::{PROTOCOL_VERSION, decode_frame, decode_frame_into, encode_frame};
pub use limits::WireLimits;
pub use message::{CloseReason, DocSlot, ErrorCode, Message};
pub use stream::{FrameReader, length_prefixed};
