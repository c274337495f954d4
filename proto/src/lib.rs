//! What crosses a process boundary, and nothing else: the control protocol v1 ([`control`]),
//! hardware addresses and client identifiers as bytes ([`HwAddr`], [`ClientId`]), the counter
//! catalogue ([`Counter`]) with its view over a worker's counter words
//! ([`counter::CounterWords`]), and the supervisor–child launch contract ([`launch`], with the child's side:
//! taking inherited descriptors and dying with the supervisor).
//!
//! It depends on no other prodhcp crate, so the client side (`prodhcpctl`, the importers in
//! `prodhcp-ctl`) builds without the daemon, the worker can name its counters without knowing
//! how they are shown, and the supervisor starts and reads workers without linking the worker.

pub mod client_id;
pub mod control;
pub mod counter;
pub mod hwaddr;
pub mod launch;
mod sys;

pub use client_id::{ClientId, ClientIdError};
pub use control::*;
pub use counter::{Counter, CounterGroup, CounterWords, CODEC_DROPS_START};
pub use hwaddr::{HwAddr, HwAddrError};
