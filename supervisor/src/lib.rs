//! `prodhcpd` (the supervisor) and `prodhcpctl`: configuration, process life cycle, the lease
//! table's opening and migration, and the control socket.

pub mod consumers;
pub mod control_proto;
pub mod control_server;
pub mod ctl;
pub mod ctl_rings;
pub mod daemon;
pub mod import;
pub mod leases;
pub mod owners;
pub mod reload_track;
pub mod scrub;
pub mod sys;
