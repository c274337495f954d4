//! prodhcp's DHCPv4 worker: the codec, the protocol engine over the shared lease table, and the
//! mio event loop one worker process runs.
//!
//! Architecture Invariant: nothing a client sends can panic a worker; every malformed packet is
//! a counted drop.

pub mod clock;
pub mod codec;
mod config_parse;
pub mod counters;
pub mod engine;
pub mod held;
pub mod interfaces;
pub mod run;
pub mod serve_config;
pub mod sys;
