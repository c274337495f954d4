//! The supervisor–worker contract, in one place: how the supervisor starts a worker process
//! and how the two talk afterwards.
//!
//! - **Arguments**: the supervisor runs its own executable as `prodhcpd worker --id N
//!   --workers N --supervisor-pid PID`. [`LaunchArgs::to_args`] builds that command line and
//!   [`LaunchArgs::parse`] (or the `prodhcpd` binary's clap parser, which embeds
//!   [`LaunchArgs`] as its `worker` subcommand) reads it back: one type on both sides.
//! - **Inherited descriptors**: [`INHERITED`] lists every descriptor a worker finds open at
//!   exec, each with its name and number ([`UDP_SOCKET`] at 3, [`CHANNEL`] at 4). The
//!   supervisor places each at its number; the worker takes each by number (the worker crate's
//!   `launch::take_inherited`). [`REPLICATED_DOORBELL`] at 5 is the worker's eventfd: syncd
//!   writes it after publishing a new replicated position in the worker's ring (and the
//!   supervisor after clearing the ring's hold), so the worker releases its held replies.
//!   [`RECORDS_DOORBELL`] at 6 goes the other way: one eventfd shared by every worker and
//!   syncd, written by a worker whose batch appended records that hold replies, so syncd
//!   ships them at once.
//! - **Channel frames**: length-prefixed frames over the [`CHANNEL`] socketpair
//!   ([`FrameKind`], [`write_frame`], [`FrameReader`]). The supervisor sends
//!   [`FrameKind::Config`] (the validated configuration's RON text) first and on every reload,
//!   and [`FrameKind::Stop`] to stop; the worker answers each configuration with
//!   [`FrameKind::Applied`] or [`FrameKind::Rejected`] (payload: a message).
//!
//! - **syncd**: the replication daemon is started the same way as `prodhcpd syncd
//!   --supervisor-pid PID --layout-fingerprint N` ([`SyncdLaunchArgs`]) with the descriptors
//!   of [`SYNCD_INHERITED`] (its channel at 4, the records doorbell at 6) and every worker's
//!   doorbell eventfd ([`syncd_doorbell`]: worker i's at 7 + i, for the configuration's
//!   effective worker count). The supervisor sends [`FrameKind::Config`]
//!   once (syncd is not reloaded: a reload that changes the `cluster` section is refused) and
//!   [`FrameKind::Stop`] to stop; syncd sends [`FrameKind::PeerReport`] (a JSON
//!   [`SyncdReport`]) after every link event of a configured peer (at once) and when only
//!   counters moved (at most every [`REPORT_EVERY_MS`] ms). syncd exits with code 2 when its
//!   configuration (the key file) is unusable.
//!
//! - **the audit process**: `prodhcpd audit --supervisor-pid PID` ([`AuditLaunchArgs`]) with
//!   only its channel ([`AUDIT_INHERITED`]). The supervisor sends [`FrameKind::Config`] once
//!   (a reload that changes the `audit` section restarts it), [`FrameKind::AuditEvent`]s (the
//!   appliance's own events: start, stop, reload, role, scrub) and [`FrameKind::Stop`]; the
//!   audit process sends [`FrameKind::AuditReport`] at most every [`AUDIT_REPORT_EVERY_MS`].
//!
//! It lives in `prodhcp-proto` (what crosses a process boundary) so that both sides use one
//! definition and the supervisor's library needs nothing of the worker's.
//!
//! API Boundary: the supervisor uses the worker's process only through this module.

use std::ffi::OsString;
use std::os::fd::RawFd;

mod child;
mod frame;

pub use child::{die_with_parent, take_channel_and_config, take_inherited, Channel};
pub use frame::{write_frame, FrameKind, FrameReader, ReadOutcome, MAX_FRAME};

/// The subcommand of `prodhcpd` that runs one worker process.
pub const SUBCOMMAND: &str = "worker";

/// One descriptor a worker inherits from the supervisor: what it is, and the number the
/// supervisor places it at before exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InheritedFd {
    /// What the descriptor is (for error messages).
    pub name: &'static str,
    /// The descriptor number in the worker process.
    pub fd: RawFd,
}

/// The worker's UDP socket: its member of the supervisor's SO_REUSEPORT group.
pub const UDP_SOCKET: InheritedFd = InheritedFd {
    name: "UDP socket",
    fd: 3,
};

/// The worker's end of its channel to the supervisor (a Unix stream socketpair carrying
/// [`FrameKind`] frames).
pub const CHANNEL: InheritedFd = InheritedFd {
    name: "supervisor channel",
    fd: 4,
};

/// The worker's replication doorbell: an eventfd (`EFD_CLOEXEC|EFD_NONBLOCK` in the
/// supervisor, which creates one per worker at start and keeps it across worker and syncd
/// restarts). syncd writes it after publishing a new replicated position in the worker's ring;
/// the supervisor writes it after clearing the ring's hold. The worker reads it (non-blocking)
/// and releases the held replies the ring's replicated position now covers.
pub const REPLICATED_DOORBELL: InheritedFd = InheritedFd {
    name: "replication doorbell",
    fd: 5,
};

/// The records doorbell: one eventfd (`EFD_CLOEXEC|EFD_NONBLOCK`, made by the supervisor at
/// start and kept across restarts) shared by every worker and syncd. A worker writes it after a
/// receive batch that appended change records while its ring holds replies (synchronous
/// replication with a standby in sync), so syncd ships them at once instead of on its next
/// loop turn; syncd polls it and drains it.
pub const RECORDS_DOORBELL: InheritedFd = InheritedFd {
    name: "records doorbell",
    fd: 6,
};

/// Every descriptor a worker inherits, in no particular order. Numbers are distinct and above
/// stdin/stdout/stderr.
pub const INHERITED: &[InheritedFd] = &[UDP_SOCKET, CHANNEL, REPLICATED_DOORBELL, RECORDS_DOORBELL];

/// The subcommand of `prodhcpd` that runs the replication daemon.
pub const SYNCD_SUBCOMMAND: &str = "syncd";

/// The fixed descriptors syncd inherits: its channel to the supervisor and the
/// [`RECORDS_DOORBELL`] (at the workers' numbers). It also inherits every worker's
/// replication doorbell, at [`syncd_doorbell`]`(i)`.
pub const SYNCD_INHERITED: &[InheritedFd] = &[CHANNEL, RECORDS_DOORBELL];

/// Where syncd finds worker `worker`'s [`REPLICATED_DOORBELL`]: at 7 + `worker`, in worker
/// order, one per worker of the configuration's effective worker count.
pub const fn syncd_doorbell(worker: usize) -> InheritedFd {
    InheritedFd {
        name: "worker replication doorbell",
        fd: RECORDS_DOORBELL.fd + 1 + worker as RawFd,
    }
}

/// Shortest interval between two [`FrameKind::PeerReport`]s that only carry counter changes
/// (a flood of bad connections must not flood the supervisor); link transitions go at once.
pub const REPORT_EVERY_MS: u64 = 200;

/// What syncd reports in a [`FrameKind::PeerReport`]: every configured peer's link.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncdReport {
    /// One entry per configured peer, in configuration order.
    pub peers: Vec<crate::control::HaPeerStatus>,
    /// This node's role (its name).
    #[serde(default)]
    pub role: Option<String>,
    /// The role in detail.
    #[serde(default)]
    pub role_detail: Option<crate::control::RoleStatus>,
    /// The outcome of the last [`HaCommandFrame`].
    #[serde(default)]
    pub last_command: Option<crate::control::HaCommandOutcome>,
}

/// Supervisor → syncd: an operator's HA command ([`FrameKind::HaCommand`], JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HaCommandFrame {
    /// Id under which the outcome is reported.
    pub id: u64,
    /// The command.
    pub command: crate::control::HaCommand,
}

/// How the supervisor starts syncd: the arguments of `prodhcpd syncd`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct SyncdLaunchArgs {
    /// Pid of the supervisor that started it (see [`LaunchArgs::supervisor_pid`]).
    #[arg(long)]
    pub supervisor_pid: Option<u32>,
    /// The lease table's layout fingerprint (`shm_layout::Table::fingerprint` of the table
    /// the supervisor opened), carried in every hello: peers with another layout are refused.
    #[arg(long)]
    pub layout_fingerprint: u64,
}

/// The command line of a syncd process, as [`SyncdLaunchArgs::parse`] reads it.
#[derive(Debug, clap::Parser)]
#[command(no_binary_name = true)]
enum SyncdCommand {
    /// Run the replication daemon.
    Syncd(SyncdLaunchArgs),
}

impl SyncdLaunchArgs {
    /// The arguments after the executable's name: `syncd [--supervisor-pid PID]
    /// --layout-fingerprint N`.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![SYNCD_SUBCOMMAND.into()];
        if let Some(pid) = self.supervisor_pid {
            args.push("--supervisor-pid".into());
            args.push(pid.to_string().into());
        }
        args.push("--layout-fingerprint".into());
        args.push(self.layout_fingerprint.to_string().into());
        args
    }

    /// Reads the arguments [`SyncdLaunchArgs::to_args`] builds (without the executable's name).
    pub fn parse<I, T>(args: I) -> Result<SyncdLaunchArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        use clap::Parser;
        let SyncdCommand::Syncd(a) = SyncdCommand::try_parse_from(args)?;
        Ok(a)
    }
}

/// The subcommand of `prodhcpd` that runs the audit process.
pub const AUDIT_SUBCOMMAND: &str = "audit";

/// The descriptors the audit process inherits: only its channel (at 4).
pub const AUDIT_INHERITED: &[InheritedFd] = &[CHANNEL];

/// Longest interval between two [`FrameKind::AuditReport`]s.
pub const AUDIT_REPORT_EVERY_MS: u64 = 500;

/// Supervisor → audit process: an appliance event ([`FrameKind::AuditEvent`], JSON). The
/// audit process gives it the next sequence number.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApplianceEventFrame {
    /// Unix time in ms when it happened.
    pub time_ms: u64,
    /// `start`, `stop`, `reload`, `role`, `scrub` or `pool-alarm`.
    pub event: String,
    /// `reload`: the configuration generation now in force.
    #[serde(default)]
    pub generation: Option<u64>,
    /// `role`: the role before.
    #[serde(default)]
    pub role_from: Option<String>,
    /// `role`: the role after.
    #[serde(default)]
    pub role_to: Option<String>,
    /// `role`: why; `pool-alarm`: `raised` or `cleared`.
    #[serde(default)]
    pub cause: Option<String>,
    /// `scrub`: what was found; `pool-alarm`: the pool, level, utilisation, free, estimate.
    #[serde(default)]
    pub finding: Option<String>,
}

/// How the supervisor starts the audit process: the arguments of `prodhcpd audit`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct AuditLaunchArgs {
    /// Pid of the supervisor that started it (see [`LaunchArgs::supervisor_pid`]).
    #[arg(long)]
    pub supervisor_pid: Option<u32>,
}

/// The command line of an audit process, as [`AuditLaunchArgs::parse`] reads it.
#[derive(Debug, clap::Parser)]
#[command(no_binary_name = true)]
enum AuditCommand {
    /// Run the audit process.
    Audit(AuditLaunchArgs),
}

impl AuditLaunchArgs {
    /// The arguments after the executable's name: `audit [--supervisor-pid PID]`.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![AUDIT_SUBCOMMAND.into()];
        if let Some(pid) = self.supervisor_pid {
            args.push("--supervisor-pid".into());
            args.push(pid.to_string().into());
        }
        args
    }

    /// Reads the arguments [`AuditLaunchArgs::to_args`] builds (without the executable's name).
    pub fn parse<I, T>(args: I) -> Result<AuditLaunchArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        use clap::Parser;
        let AuditCommand::Audit(a) = AuditCommand::try_parse_from(args)?;
        Ok(a)
    }
}

/// How the supervisor starts one worker: the arguments of `prodhcpd worker`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct LaunchArgs {
    /// Worker id (0-based).
    #[arg(long)]
    pub id: usize,
    /// Number of workers.
    #[arg(long)]
    pub workers: usize,
    /// Pid of the supervisor that started this worker (it must still be the parent after
    /// `PR_SET_PDEATHSIG` is set); absent when started by hand.
    #[arg(long)]
    pub supervisor_pid: Option<u32>,
}

/// The command line of a worker process, as [`LaunchArgs::parse`] reads it.
#[derive(Debug, clap::Parser)]
#[command(no_binary_name = true)]
enum WorkerCommand {
    /// Run one worker process.
    Worker(LaunchArgs),
}

impl LaunchArgs {
    /// The arguments after the executable's name: `worker --id N --workers N
    /// [--supervisor-pid PID]`.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            SUBCOMMAND.into(),
            "--id".into(),
            self.id.to_string().into(),
            "--workers".into(),
            self.workers.to_string().into(),
        ];
        if let Some(pid) = self.supervisor_pid {
            args.push("--supervisor-pid".into());
            args.push(pid.to_string().into());
        }
        args
    }

    /// Reads the arguments [`LaunchArgs::to_args`] builds (without the executable's name).
    pub fn parse<I, T>(args: I) -> Result<LaunchArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        use clap::Parser;
        let WorkerCommand::Worker(a) = WorkerCommand::try_parse_from(args)?;
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn arguments_round_trip() {
        for a in [
            LaunchArgs {
                id: 3,
                workers: 8,
                supervisor_pid: Some(4242),
            },
            LaunchArgs {
                id: 0,
                workers: 1,
                supervisor_pid: None,
            },
        ] {
            assert_eq!(LaunchArgs::parse(a.to_args()).expect("parses"), a);
        }
        let args = LaunchArgs {
            id: 1,
            workers: 2,
            supervisor_pid: Some(7),
        }
        .to_args();
        assert_eq!(
            args,
            [
                "worker",
                "--id",
                "1",
                "--workers",
                "2",
                "--supervisor-pid",
                "7"
            ]
            .map(OsString::from)
        );
        assert!(LaunchArgs::parse(["worker", "--id", "x", "--workers", "2"]).is_err());
        assert!(LaunchArgs::parse(["worker", "--workers", "2"]).is_err());
        assert!(LaunchArgs::parse(["other", "--id", "1", "--workers", "2"]).is_err());
    }

    #[test]
    fn syncd_arguments_round_trip() {
        for a in [
            SyncdLaunchArgs {
                supervisor_pid: Some(4242),
                layout_fingerprint: u64::MAX,
            },
            SyncdLaunchArgs {
                supervisor_pid: None,
                layout_fingerprint: 0x1234_5678_9abc_def0,
            },
        ] {
            assert_eq!(SyncdLaunchArgs::parse(a.to_args()).expect("parses"), a);
        }
        assert!(
            SyncdLaunchArgs::parse(["syncd"]).is_err(),
            "fingerprint missing"
        );
        assert!(SyncdLaunchArgs::parse(["worker", "--layout-fingerprint", "1"]).is_err());
        assert!(SYNCD_INHERITED.iter().all(|d| INHERITED.contains(d)));
    }

    #[test]
    fn a_syncd_report_round_trips_through_its_frame() {
        let report = SyncdReport {
            peers: vec![crate::control::HaPeerStatus {
                node: "b".into(),
                address: "198.18.0.4:647".into(),
                link: crate::control::LinkState::Down,
                since_unix_ms: Some(1),
                last_cause: Some("authentication failed: x".into()),
                last_cause_kind: Some("auth_failure".into()),
                remote: None,
                role: crate::control::ROLE_UNKNOWN.into(),
                counters: crate::control::PeerLinkCounters {
                    auth_failures: 3,
                    ..Default::default()
                },
                replication: crate::control::PeerReplicationStatus {
                    state: "in-sync".into(),
                    lag_records: 2,
                    ..Default::default()
                },
            }],
            role: Some("standby".into()),
            role_detail: Some(crate::control::RoleStatus {
                since_unix_ms: 7,
                cause: "in sync with `b`".into(),
                previous: "syncing".into(),
                serving: "nothing (gate closed)".into(),
                service_address: "not held".into(),
            }),
            last_command: None,
        };
        let mut wire = Vec::new();
        write_frame(
            &mut wire,
            FrameKind::PeerReport,
            &serde_json::to_vec(&report).expect("json"),
        )
        .expect("frame");
        let mut r = FrameReader::default();
        let ReadOutcome::Frame(FrameKind::PeerReport, payload) =
            r.poll(&mut wire.as_slice()).expect("reads")
        else {
            panic!("not a peer report")
        };
        let back: SyncdReport = serde_json::from_slice(&payload).expect("decodes");
        assert_eq!(back, report);
    }

    #[test]
    fn inherited_descriptors_have_distinct_numbers_above_stdio() {
        let mut seen = HashSet::new();
        for d in INHERITED {
            assert!(d.fd > 2, "{d:?} would replace stdin/stdout/stderr");
            assert!(seen.insert(d.fd), "{d:?}: number used twice");
        }
        assert!(INHERITED.contains(&UDP_SOCKET) && INHERITED.contains(&CHANNEL));
        assert!(INHERITED.contains(&REPLICATED_DOORBELL) && INHERITED.contains(&RECORDS_DOORBELL));
    }

    #[test]
    fn syncd_doorbells_follow_its_channel_in_worker_order() {
        assert_eq!(syncd_doorbell(0).fd, 7);
        assert_eq!(syncd_doorbell(63).fd, 70);
        for d in SYNCD_INHERITED {
            assert!(
                d.fd < syncd_doorbell(0).fd,
                "{d:?} collides with a doorbell"
            );
        }
    }
}
