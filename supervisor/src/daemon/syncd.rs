//! The syncd process: started when the configuration has a `cluster` section, through the
//! launch contract (`prodhcp_proto::launch`: `prodhcpd syncd`, its channel at descriptor 4),
//! restarted by the same rules as a worker ([`ChildLife`]), stopped with the workers. Its
//! [`FrameKind::PeerReport`]s are kept for `prodhcpctl ha status`, and every link transition
//! they show is logged here with its cause.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, ExitStatus};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mio::unix::SourceFd;
use prodhcp_config::Cluster;
use prodhcp_proto::launch::{
    self, write_frame, FrameKind, FrameReader, ReadOutcome, SyncdLaunchArgs, SyncdReport,
};
use prodhcp_proto::{
    HaPeerStatus, HaStatusData, LinkState, SyncdProcessStatus, ROLE_STANDALONE, ROLE_UNKNOWN,
};
use tracing::{error, info, warn};

use super::workers::{ChildLife, WorkerState};
use super::{Supervisor, SYNCD_CHANNEL};

/// The exit code with which syncd says its configuration (the key file) is unusable.
const SYNCD_CONFIG_EXIT: i32 = 2;

/// The syncd process's record.
#[derive(Debug)]
pub(super) struct Syncd {
    child: Option<Child>,
    channel: Option<UnixStream>,
    reader: FrameReader,
    life: ChildLife,
    /// Every configured peer as last reported (or as known without a report).
    peers: Vec<HaPeerStatus>,
    /// This node's role as last reported.
    role: Option<String>,
    role_detail: Option<prodhcp_proto::RoleStatus>,
    last_command: Option<prodhcp_proto::HaCommandOutcome>,
    /// Id of the next HA command.
    next_command: u64,
}

impl Syncd {
    /// The record for `cluster`, not started yet: every peer down, no cause yet.
    pub(super) fn new(cluster: &Cluster, now: Instant) -> Syncd {
        Syncd {
            child: None,
            channel: None,
            reader: FrameReader::default(),
            life: ChildLife::new(now),
            peers: cluster
                .peers
                .iter()
                .map(|p| HaPeerStatus {
                    node: p.node.clone(),
                    address: p.address.to_string(),
                    role: ROLE_UNKNOWN.into(),
                    ..HaPeerStatus::default()
                })
                .collect(),
            role: None,
            role_detail: None,
            last_command: None,
            next_command: 1,
        }
    }

    /// When the next restart is due, if one is scheduled.
    pub(super) fn restart_at(&self) -> Option<Instant> {
        self.life.restart_at()
    }

    /// Takes a report: logs every transition it shows (link up/down, another cause while
    /// down) and keeps it.
    fn take_report(&mut self, report: SyncdReport) {
        for new in &report.peers {
            let old = self.peers.iter().find(|p| p.node == new.node);
            log_transition(old, new);
        }
        if report.role.is_some() && report.role != self.role {
            if let Some(d) = &report.role_detail {
                info!(
                    role = report.role.as_deref().unwrap_or(""),
                    previous = %d.previous,
                    cause = %d.cause,
                    serving = %d.serving,
                    service_address = %d.service_address,
                    "cluster role"
                );
            }
        }
        self.role = report.role.clone();
        self.role_detail = report.role_detail.clone();
        if report.last_command.is_some() {
            self.last_command = report.last_command.clone();
        }
        // Only configured peers are kept (the report comes from the same configuration).
        for p in &mut self.peers {
            if let Some(new) = report.peers.iter().find(|n| n.node == p.node) {
                *p = new.clone();
            }
        }
    }

    /// syncd is gone: no link stands any more.
    fn all_down(&mut self, status: &ExitStatus) {
        let now = unix_ms();
        for p in &mut self.peers {
            let was_up = p.link == LinkState::Up;
            p.link = LinkState::Down;
            p.remote = None;
            p.last_cause = Some(format!("syncd not running ({status})"));
            p.last_cause_kind = Some("syncd_exited".into());
            p.replication.state = "down".into();
            p.replication.bulk_percent = None;
            if was_up || p.since_unix_ms.is_none() {
                p.since_unix_ms = Some(now);
            }
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn log_transition(old: Option<&HaPeerStatus>, new: &HaPeerStatus) {
    let was_up = old.is_some_and(|o| o.link == LinkState::Up);
    let old_kind = old.and_then(|o| o.last_cause_kind.as_deref());
    let cause = new.last_cause.as_deref().unwrap_or("");
    let kind = new.last_cause_kind.as_deref().unwrap_or("");
    match (was_up, new.link) {
        (false, LinkState::Up) => info!(
            peer = %new.node,
            remote = new.remote.as_deref().unwrap_or(""),
            "cluster peer up"
        ),
        (true, LinkState::Down) => warn!(peer = %new.node, cause, kind, "cluster peer down"),
        (false, LinkState::Down) if new.last_cause_kind.is_some() && old_kind != Some(kind) => {
            warn!(peer = %new.node, cause, kind, "cluster peer unreachable")
        }
        _ => {}
    }
}

impl Supervisor {
    /// Starts syncd (when the configuration has a cluster).
    pub(super) fn spawn_syncd(&mut self) {
        if self.syncd.is_none() {
            return;
        }
        let args = SyncdLaunchArgs {
            supervisor_pid: Some(std::process::id()),
            layout_fingerprint: self.table.fingerprint(),
        };
        // After its channel: the records doorbell, then every worker's doorbell in worker order.
        let fds: Vec<_> = [(launch::RECORDS_DOORBELL, self.records_doorbell.as_fd())]
            .into_iter()
            .chain(
                self.doorbells
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (launch::syncd_doorbell(i), d.as_fd())),
            )
            .collect();
        let result = self.spawn_child(&args.to_args(), &fds, SYNCD_CHANNEL);
        let Some(s) = self.syncd.as_mut() else {
            return;
        };
        match result {
            Ok((child, stream)) => {
                info!(pid = child.id(), "syncd started");
                s.child = Some(child);
                s.channel = Some(stream);
                s.reader = FrameReader::default();
                s.life.started(Instant::now());
            }
            Err(e) => {
                error!(error = %e, "cannot start syncd");
                s.life.start_failed(Instant::now());
            }
        }
    }

    /// Reaps a dead syncd and schedules its restart.
    pub(super) fn reap_syncd(&mut self) {
        let Some(s) = self.syncd.as_mut() else {
            return;
        };
        let status = match s.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(st))) => st,
            _ => return,
        };
        s.child = None;
        if let Some(ch) = s.channel.take() {
            let fd = ch.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
        s.all_down(&status);
        let stopping = self.stopping;
        if stopping {
            s.life.state = WorkerState::Stopped;
        }
        // Nobody publishes replicated positions until a new syncd has a standby in sync again.
        self.release_held_replies("syncd is not running");
        if stopping {
            return;
        }
        let Some(s) = self.syncd.as_mut() else {
            return;
        };
        let wait = s.life.died(Instant::now());
        if status.code() == Some(SYNCD_CONFIG_EXIT) {
            error!(
                %status,
                retry_in_ms = wait.as_millis() as u64,
                "syncd refused the cluster configuration (its message is above: the key file?); \
                 restarting it"
            );
        } else {
            warn!(%status, retry_in_ms = wait.as_millis() as u64, "syncd died; restarting it");
        }
    }

    /// Puts every worker ring in the state it must have while no syncd runs (at start, and
    /// whenever syncd is gone), then rings every worker's doorbell:
    /// - in a cluster the gate is **closed** (the node serves only when syncd's role says so:
    ///   its peer may be serving), and the service address is released;
    /// - without one the gate is **open** (a ring file from a clustered run may be closed);
    /// - the hold is cleared: the workers drop (never send) the replies they held, whose
    ///   changes may exist on this node only.
    ///
    /// Logged once per call, when a ring had its hold set or its gate open in a cluster.
    pub(super) fn release_held_replies(&self, cause: &str) {
        let clustered = self.config.cluster.is_some();
        let held: Vec<usize> = self
            .workers
            .iter()
            .filter(|w| w.ring.hold_replies())
            .map(|w| w.id)
            .collect();
        let was_serving = self
            .workers
            .iter()
            .any(|w| w.ring.gate() != shm_layout::Gate::Closed);
        let gate = if clustered {
            shm_layout::Gate::Closed
        } else {
            shm_layout::Gate::Open
        };
        // Gate first: a worker woken by the clear below must not answer anew.
        for w in &self.workers {
            w.ring.set_gate(gate);
            w.ring.set_hold(false);
        }
        // After the stores (release ordering): a woken worker sees them.
        for (id, d) in self.doorbells.iter().enumerate() {
            if let Err(e) = d.write(1) {
                // EAGAIN: the counter is at its maximum, the worker has a wake pending anyway.
                if e != nix::errno::Errno::EAGAIN {
                    warn!(worker = id, error = %e, "cannot ring the worker's replication doorbell");
                }
            }
        }
        if clustered && was_serving {
            warn!(
                cause,
                "the workers stop answering until syncd's role says so"
            );
        }
        if !held.is_empty() {
            warn!(
                cause,
                workers = ?held,
                "replies held for synchronous replication are dropped (their changes may exist on this node only; the clients retry)"
            );
        }
        if let Some(sa) = self
            .config
            .cluster
            .as_ref()
            .and_then(|c| c.service_address.as_ref())
        {
            let address = prodhcp_syncd::service_address::ServiceAddress {
                address: sa.address,
                interface: sa.interface.clone(),
            };
            match address.release() {
                Ok(prodhcp_syncd::service_address::Release::Removed) => {
                    warn!(cause, address = %sa.address, interface = %sa.interface, "service address removed");
                }
                Ok(prodhcp_syncd::service_address::Release::WasAbsent) => {}
                Err(e) => {
                    error!(cause, error = %e, "cannot remove the service address");
                }
            }
        }
    }

    /// Restarts syncd when its backoff is over.
    pub(super) fn respawn_syncd_due(&mut self) {
        if self.stopping {
            return;
        }
        if self
            .syncd
            .as_ref()
            .is_some_and(|s| s.life.restart_due(Instant::now()))
        {
            self.spawn_syncd();
        }
    }

    /// Reads syncd's channel: peer reports.
    pub(super) fn syncd_channel(&mut self) {
        let Some(s) = self.syncd.as_mut() else {
            return;
        };
        let Some(ch) = s.channel.as_mut() else {
            return;
        };
        let mut reports = Vec::new();
        let mut closed = false;
        loop {
            match s.reader.poll(ch) {
                Ok(ReadOutcome::Frame(FrameKind::PeerReport, payload)) => {
                    match serde_json::from_slice::<SyncdReport>(&payload) {
                        Ok(report) => reports.push(report),
                        Err(e) => warn!(error = %e, "unreadable peer report from syncd"),
                    }
                }
                Ok(ReadOutcome::Frame(..)) => {}
                Ok(ReadOutcome::Pending) => break,
                Ok(ReadOutcome::Closed) | Err(_) => {
                    let fd = ch.as_raw_fd();
                    let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            s.channel = None;
        }
        let mut role_changes = Vec::new();
        for report in reports {
            if s.life.state == WorkerState::Starting {
                s.life.state = WorkerState::Running;
            }
            if report.role.is_some() && report.role != s.role {
                if let (Some(to), Some(d)) = (&report.role, &report.role_detail) {
                    let mut ev = super::audit::event("role");
                    ev.role_from = Some(d.previous.clone());
                    ev.role_to = Some(to.clone());
                    ev.cause = Some(d.cause.clone());
                    role_changes.push(ev);
                }
            }
            s.take_report(report);
        }
        for ev in role_changes {
            self.audit_event(ev);
        }
    }

    /// Tells syncd to stop (a `Stop` frame and SIGTERM); [`Supervisor::wait_syncd`] waits.
    pub(super) fn stop_syncd(&mut self) {
        let Some(s) = self.syncd.as_mut() else {
            return;
        };
        if let Some(ch) = s.channel.as_mut() {
            let _ = ch.set_nonblocking(false);
            let _ = write_frame(ch, FrameKind::Stop, b"");
        }
        if let Some(c) = s.child.as_ref() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }

    /// Waits for syncd to exit until `deadline`, then SIGKILLs it.
    pub(super) fn wait_syncd(&mut self, deadline: Instant) {
        let Some(s) = self.syncd.as_mut() else {
            return;
        };
        if let Some(mut c) = s.child.take() {
            super::wait_or_kill(&mut c, deadline);
        }
        s.life.state = WorkerState::Stopped;
    }

    /// Hands an operator's HA command to syncd; its outcome shows in `ha_status`.
    pub(super) fn ha_command(
        &mut self,
        command: prodhcp_proto::HaCommand,
    ) -> Result<prodhcp_proto::HaCommandAccepted, String> {
        let Some(s) = self.syncd.as_mut() else {
            return Err("this appliance has no `cluster` section".into());
        };
        let Some(ch) = s.channel.as_mut() else {
            return Err("syncd is not running (it is being restarted)".into());
        };
        let id = s.next_command;
        s.next_command += 1;
        let frame = launch::HaCommandFrame { id, command };
        let payload = serde_json::to_vec(&frame).map_err(|e| e.to_string())?;
        let _ = ch.set_nonblocking(false);
        let sent = write_frame(ch, FrameKind::HaCommand, &payload);
        let _ = ch.set_nonblocking(true);
        sent.map_err(|e| format!("cannot reach syncd: {e}"))?;
        info!(id, command = ?frame.command, "HA command handed to syncd");
        Ok(prodhcp_proto::HaCommandAccepted { id })
    }

    /// The answer to `ha_status`.
    pub(super) fn ha_status(&self) -> HaStatusData {
        let (Some(cluster), Some(s)) = (self.config.cluster.as_ref(), self.syncd.as_ref()) else {
            return HaStatusData {
                standalone: true,
                role: ROLE_STANDALONE.into(),
                ..HaStatusData::default()
            };
        };
        HaStatusData {
            standalone: false,
            cluster: Some(cluster.name.clone()),
            node: Some(cluster.node.clone()),
            replication: Some(cluster.replication.name().into()),
            role: s
                .role
                .clone()
                .filter(|_| s.child.is_some())
                .unwrap_or_else(|| ROLE_UNKNOWN.into()),
            role_detail: s.role_detail.clone().filter(|_| s.child.is_some()),
            last_command: s.last_command.clone(),
            syncd: Some(SyncdProcessStatus {
                pid: s.child.as_ref().map(Child::id),
                state: s.life.state.name().into(),
                restarts: s.life.restarts,
            }),
            peers: s.peers.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Cluster {
        Cluster {
            name: "pop1".into(),
            node: "a".into(),
            listen: "198.18.0.1:647".parse().expect("addr"),
            peers: vec![prodhcp_config::Peer {
                node: "b".into(),
                address: "198.18.0.4:647".parse().expect("addr"),
            }],
            key_file: "/etc/prodhcp/cluster.key".into(),
            service_address: None,
            replication: prodhcp_config::Replication::Sync,
            heartbeat_interval: std::time::Duration::from_millis(200),
            dead_after: std::time::Duration::from_millis(800),
        }
    }

    #[test]
    fn reports_replace_the_configured_peers_and_a_dead_syncd_takes_every_link_down() {
        let mut s = Syncd::new(&cluster(), Instant::now());
        assert_eq!(s.peers.len(), 1);
        assert_eq!(s.peers[0].link, LinkState::Down);
        assert_eq!(s.peers[0].role, ROLE_UNKNOWN);
        let up = HaPeerStatus {
            node: "b".into(),
            address: "198.18.0.4:647".into(),
            link: LinkState::Up,
            since_unix_ms: Some(5),
            remote: Some("198.18.0.4:647".into()),
            role: ROLE_UNKNOWN.into(),
            ..HaPeerStatus::default()
        };
        let stranger = HaPeerStatus {
            node: "zz".into(),
            ..up.clone()
        };
        s.take_report(SyncdReport {
            peers: vec![up.clone(), stranger],
            ..SyncdReport::default()
        });
        assert_eq!(s.peers, vec![up]);
        let status = std::process::Command::new("/bin/sh")
            .args(["-c", "exit 7"])
            .status()
            .expect("sh");
        s.all_down(&status);
        let p = &s.peers[0];
        assert_eq!(p.link, LinkState::Down);
        assert_eq!(p.last_cause_kind.as_deref(), Some("syncd_exited"));
        assert!(p.since_unix_ms.is_some_and(|t| t > 5));
        assert_eq!(p.remote, None);
    }
}
