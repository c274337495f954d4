//! dhcpperf: a DHCPv4 load generator that also verifies.
//!
//! It simulates many clients behind a relay agent (it binds the relay address, port 67, puts
//! it in giaddr and unicasts to the server), runs scenarios (DORA of new clients, renew,
//! release, a mix, an avalanche with back-off, a fixed-rate sweep), reports rates, losses,
//! latency percentiles and a per-second timeline, records every ACK, and checks a server's
//! lease export against that record. It also contains the no-logic responder used as the
//! ceiling of the benchmark harness.
//!
//! Architecture invariant: dhcpperf shares no code with prodhcp (packets are built and parsed
//! here, by hand), so that it can judge the server. dhcpperf has no `unsafe`: its system calls
//! go through `nix` in [`sys`].

#![forbid(unsafe_code)]

pub mod cli;
pub mod engine;
pub mod histogram;
pub mod identity;
pub mod packet;
pub mod record;
pub mod report;
pub mod responder;
pub mod spread;
pub mod sys;
pub mod verify;
