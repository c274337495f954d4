//! The words `prodhcpd` and its clients share, and nothing else: the control protocol v1
//! ([`control`]), hardware addresses and client identifiers as bytes
//! ([`HwAddr`], [`ClientId`]) and the counter catalogue ([`Counter`]).
//!
//! It depends on no other prodhcp crate, so the client side (`prodhcpctl`, the importers in
//! `prodhcp-ctl`) builds without the daemon, and the worker can name its counters without
//! knowing how they are shown.

pub mod client_id;
pub mod control;
pub mod counter;
pub mod hwaddr;

pub use client_id::{ClientId, ClientIdError};
pub use control::*;
pub use counter::{Counter, CounterGroup, CODEC_DROPS_START};
pub use hwaddr::{HwAddr, HwAddrError};
