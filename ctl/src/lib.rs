//! `prodhcpctl`, the operator's client of prodhcpd's control socket, and the lease-file
//! importers it runs (Kea memfile CSV, ISC `dhcpd.leases`).
//!
//! Architecture Invariant: this crate runs on the client side and speaks to the daemon only
//! through the control protocol (`prodhcp-proto`). Its one other prodhcp dependency is
//! `prodhcp-audit`, a format-only crate (no process, no transport), for the JSON-lines audit
//! files `prodhcpctl history` reads; nothing here can reach into the daemon, the worker or the
//! lease table.

pub mod cli;
pub mod import;
pub mod rings;
