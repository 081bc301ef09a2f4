//! Byte formats of uevd, with no I/O so they can be fuzzed and property-tested.
//!
//! The one format today is the kernel's uevent datagram (`ACTION@DEVPATH\0KEY=VALUE\0…`), see
//! [`Uevent`]. Parsing is strict — anything the kernel would never send is refused with a
//! [`ParseError`] naming the problem — and lossless: [`Uevent::to_bytes`] gives back the exact
//! bytes that were parsed.
#![forbid(unsafe_code)]

mod action;
mod builder;
mod error;
mod uevent;

pub use action::{Action, UnknownAction};
pub use builder::{push_decimal, UeventBuilder};
pub use error::ParseError;
pub use uevent::{Uevent, MAX_FIELDS, MAX_MESSAGE_LEN};
