//! `prodhcpd` (the supervisor): configuration, process life cycle, the lease table's opening
//! and migration, and the control socket. Its client, `prodhcpctl`, is the `prodhcp-ctl` crate;
//! the protocol both speak is `prodhcp-proto`.

pub mod alarms;
pub mod census;
pub mod cli;
pub mod consumers;
pub mod control_server;
pub mod daemon;
pub mod error;
pub mod leases;
pub mod metrics_http;
pub mod notify;
pub mod owners;
pub mod privileges;
pub mod reload_track;
pub mod scrub;
pub mod sockets;
pub mod sys;
