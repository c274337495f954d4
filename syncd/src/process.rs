//! syncd as a process of the appliance: what `prodhcpd syncd` runs.
//!
//! The supervisor starts it like a worker (`prodhcp_proto::launch`: [`SyncdLaunchArgs`], its
//! channel at descriptor 4), sends the configuration text once, and restarts it with backoff
//! when it dies. This module:
//! 1. dies with the supervisor (`PR_SET_PDEATHSIG` = SIGKILL, then checks that the parent is
//!    still the supervisor that started it, as workers do);
//! 2. reads the configuration frame, loads the cluster key ([`NodeConfig::load`]; an unusable
//!    key is [`ProcessError::Config`], exit code 2) and takes the table's layout fingerprint
//!    from its arguments (the supervisor read it from the table it opened);
//! 3. turns the peer loop ([`Node`]) until SIGTERM, a `Stop` frame or the channel closing,
//!    and reports every configured peer's link to the supervisor
//!    ([`FrameKind::PeerReport`]): at once after a link transition (up, down, or another
//!    cause while down), otherwise at most every [`launch::REPORT_EVERY_MS`] when only
//!    counters moved.
//!
//! 4. replicates ([`crate::replicate::Replicator`]): opens the lease table and the rings
//!    (the workers', the supervisor's and the importer's to ship, its own 102 to apply into),
//!    and turns the replicator with the node. While a peer is up the loop waits at most
//!    [`SHIP_TURN`] for socket events, so a record a worker appends is shipped within about a
//!    millisecond at worst; a worker whose batch holds replies also writes the records
//!    doorbell (`launch::RECORDS_DOORBELL`), which ends the wait at once; the replication
//!    state of each peer is
//!    part of the report (a state change at once, counters at most every
//!    [`launch::REPORT_EVERY_MS`]).
//!
//! It drives [`Node`] with its own loop rather than [`crate::run`] because it must also
//! service the channel and send coalesced reports between events.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prodhcp_config::Replication;
use prodhcp_proto::launch::{
    self, write_frame, FrameKind, HaCommandFrame, ReadOutcome, SyncdLaunchArgs, SyncdReport,
};
use prodhcp_proto::{
    HaPeerStatus, LinkState, PeerLinkCounters, PeerReplicationStatus, ROLE_UNKNOWN,
};
use shm_layout::{worker_owner, Ring, Table, Writer, IMPORT_OWNER, SUPERVISOR_OWNER, SYNCD_OWNER};
use std::collections::BTreeMap;

use crate::apply::Applier;
use crate::replicate::{PeerSync, Replicator};
use crate::role::driver::RoleDriver;

use crate::node::{Event, LinkCounters, Node, NodeConfig, PeerState};

/// Longest wait of one loop turn (how soon SIGTERM and the channel are seen at the latest).
const TURN: Duration = Duration::from_millis(50);
/// Longest wait of one loop turn while a peer is up: how late a new ring record is shipped at
/// worst.
pub const SHIP_TURN: Duration = Duration::from_millis(1);

/// Why syncd stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The configuration cannot be used (no `cluster` section, unusable key file): restarting
    /// does not help until the operator fixes it.
    #[error("syncd configuration: {0}")]
    Config(String),
    /// I/O on the channel, the sockets or the poll.
    #[error("syncd: {0}")]
    Io(#[from] io::Error),
}

impl ProcessError {
    /// The exit code: 2 for the configuration, 1 otherwise (as `prodhcpd`'s).
    pub fn exit_code(&self) -> i32 {
        match self {
            ProcessError::Config(_) => 2,
            ProcessError::Io(_) => 1,
        }
    }
}

/// Runs syncd until SIGTERM/SIGINT, a `Stop` frame, or the supervisor's channel closing.
pub fn run_process(args: SyncdLaunchArgs) -> Result<(), ProcessError> {
    launch::die_with_parent(args.supervisor_pid)?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))?;
    let (
        launch::Channel {
            stream: mut channel,
            mut reader,
        },
        text,
    ) = launch::take_channel_and_config()?;
    let Some(text) = text else {
        return Ok(());
    };
    let text = String::from_utf8(text)
        .map_err(|_| ProcessError::Config("the configuration is not UTF-8".into()))?;
    let config = prodhcp_config::parse(&text).map_err(|e| ProcessError::Config(e.to_string()))?;
    // Every worker's replication doorbell (`launch::syncd_doorbell`), in worker order: after
    // publishing a ring's replicated position or changing its hold, `doorbells.wake(owner)`.
    let doorbells = crate::doorbell::Doorbells::from_inherited(config.effective_workers())?;
    let cluster = config
        .cluster
        .clone()
        .ok_or_else(|| ProcessError::Config("the configuration has no `cluster` section".into()))?;
    let node_config = NodeConfig::load(&cluster, args.layout_fingerprint)
        .map_err(|e| ProcessError::Config(e.to_string()))?;
    let mut node = Node::bind(node_config)?;
    // Workers write it when a batch's replies wait for replication: ship at once.
    node.set_wake(launch::take_inherited(launch::RECORDS_DOORBELL)?)?;
    let table = Table::open(&config.table_file).map_err(|e| {
        io::Error::other(format!("lease table {}: {e}", config.table_file.display()))
    })?;
    let open_ring = |owner: u8| {
        Ring::open_or_create(
            &config.ring_file(owner),
            owner,
            u64::from(config.ring_capacity),
        )
        .map_err(|e| io::Error::other(format!("ring {owner}: {e}")))
    };
    let mut shipped = Vec::new();
    for id in 0..config.effective_workers() {
        shipped.push(open_ring(worker_owner(id))?);
    }
    shipped.push(open_ring(SUPERVISOR_OWNER)?);
    shipped.push(open_ring(IMPORT_OWNER)?);
    let own_ring = open_ring(SYNCD_OWNER)?;
    // A previous syncd that died mid-apply left its slot locked: finish or undo that change
    // (it is dead: the supervisor starts a syncd only after reaping the last one, and ends
    // orphaned writers at its own start).
    match table.recover_owner(SYNCD_OWNER, Some(&own_ring)) {
        shm_layout::Recovery::Nothing | shm_layout::Recovery::IntentCleared => {}
        r => tracing::warn!("syncd: recovered a change the previous syncd left half done: {r:?}"),
    }
    // Who writes as syncd's owner, before the first write (as a worker does).
    if let Some(me) = shm_layout::OwnerProcess::current() {
        table.set_owner_process(SYNCD_OWNER, me);
    }
    let peer_names: Vec<String> = cluster.peers.iter().map(|p| p.node.clone()).collect();
    let mut replicator = Replicator::new(
        &table,
        shipped.iter().collect(),
        Applier::new(Writer::new(&table, SYNCD_OWNER, &own_ring), BTreeMap::new()),
        &peer_names,
        cluster.replication == Replication::Sync,
    );
    replicator.set_doorbells(&doorbells);
    let workers: Vec<&Ring> = shipped.iter().take(config.effective_workers()).collect();
    let mut roles = RoleDriver::new(
        &cluster,
        workers,
        &own_ring,
        &doorbells,
        &config.state_dir.join("raft-state"),
        Instant::now(),
    )
    .map_err(|e| io::Error::other(e.to_string()))?;
    tracing::info!(
        "syncd: cluster `{}` node `{}` listening on {} ({} peers, layout {:016x})",
        cluster.name,
        cluster.node,
        node.local_addr()?,
        cluster.peers.len(),
        args.layout_fingerprint
    );
    channel.set_nonblocking(true)?;
    let mut view = PeerView::new(
        cluster
            .peers
            .iter()
            .map(|p| (p.node.clone(), p.address.to_string())),
    );
    let mut outbox = Outbox::default();
    // The first report says every peer is down (none connected yet): the supervisor knows
    // this process is up and running.
    outbox.queue(&view.report(&roles))?;
    let mut last_report = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut wait = if replicator.any_up() { SHIP_TURN } else { TURN };
        if let Some(at) = roles.next_deadline() {
            wait = wait.min(at.saturating_duration_since(Instant::now()));
        }
        node.turn(wait)?;
        let now_ms = unix_ms();
        let mut urgent = false;
        while let Some(event) = node.next_event() {
            urgent |= view.apply(&node, &event, now_ms);
            replicator.on_event(&mut node, &event);
            roles.on_event(&mut node, &event);
        }
        replicator.pump(&mut node);
        replicator.update_hello_positions(&mut node);
        roles.after_turn(&mut node, &replicator);
        let (changed, moved_r) = view.refresh_replication(&replicator);
        urgent |= changed;
        urgent |= roles.take_changed();
        let moved = view.refresh_counters(&node) | moved_r;
        let due = last_report.elapsed() >= Duration::from_millis(launch::REPORT_EVERY_MS);
        if urgent || (moved && due) || (view.unsent && due) {
            outbox.queue(&view.report(&roles))?;
            view.unsent = false;
            last_report = Instant::now();
        } else if moved {
            view.unsent = true;
        }
        outbox.flush(&mut channel)?;
        loop {
            match reader.poll(&mut channel)? {
                ReadOutcome::Frame(FrameKind::Stop, _) | ReadOutcome::Closed => {
                    stop.store(true, Ordering::Relaxed);
                    break;
                }
                ReadOutcome::Frame(FrameKind::HaCommand, payload) => {
                    match serde_json::from_slice::<HaCommandFrame>(&payload) {
                        Ok(c) => roles.command(&mut node, c.id, &c.command),
                        Err(e) => tracing::warn!("syncd: unreadable HA command frame: {e}"),
                    }
                }
                ReadOutcome::Frame(..) => {}
                ReadOutcome::Pending => break,
            }
        }
    }
    roles.stop();
    node.close_all();
    while let Some(event) = node.next_event() {
        replicator.on_event(&mut node, &event);
    }
    // Kept open for the whole loop (the replication loop wakes workers through it).
    drop(doorbells);
    Ok(())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The per-peer link state syncd reports.
#[derive(Debug)]
struct PeerView {
    peers: Vec<HaPeerStatus>,
    /// Counters moved since the last report.
    unsent: bool,
}

impl PeerView {
    fn new(peers: impl IntoIterator<Item = (String, String)>) -> PeerView {
        PeerView {
            peers: peers
                .into_iter()
                .map(|(node, address)| HaPeerStatus {
                    node,
                    address,
                    role: ROLE_UNKNOWN.into(),
                    ..HaPeerStatus::default()
                })
                .collect(),
            unsent: false,
        }
    }

    fn report(&self, roles: &RoleDriver<'_>) -> SyncdReport {
        let mut peers = self.peers.clone();
        for p in &mut peers {
            p.role = roles.peer_role(&p.node).unwrap_or(ROLE_UNKNOWN).into();
        }
        SyncdReport {
            peers,
            role: Some(roles.role().name().into()),
            role_detail: Some(roles.status()),
            last_command: roles.last_command().cloned(),
        }
    }

    /// Applies one event; true when it is a transition of a configured peer (report at once):
    /// it came up, went down, or failed for another reason than last time while down.
    fn apply(&mut self, node: &Node, event: &Event, now_ms: u64) -> bool {
        match event {
            Event::PeerUp { peer, remote, .. } => {
                let Some(p) = self.peers.iter_mut().find(|p| &p.node == peer) else {
                    return false;
                };
                let changed = p.link != LinkState::Up;
                p.link = LinkState::Up;
                p.remote = Some(remote.to_string());
                if changed {
                    p.since_unix_ms = Some(now_ms);
                }
                changed
            }
            Event::LinkDown {
                peer: Some(peer),
                cause,
                ..
            } => {
                let Some(p) = self.peers.iter_mut().find(|p| &p.node == peer) else {
                    return false;
                };
                // A second connection failing while the peer is up (a replaced one, a stray
                // dial) is no transition: the up connection still stands.
                if node.peer_state(peer) == PeerState::Up {
                    return false;
                }
                let kind = cause.kind();
                let was_up = p.link == LinkState::Up;
                let new_kind = p.last_cause_kind.as_deref() != Some(kind);
                p.link = LinkState::Down;
                p.remote = None;
                p.last_cause = Some(cause.to_string());
                p.last_cause_kind = Some(kind.to_string());
                if was_up || p.since_unix_ms.is_none() {
                    p.since_unix_ms = Some(now_ms);
                }
                was_up || new_kind
            }
            _ => false,
        }
    }

    /// Copies the replicator's per-peer figures in: (a state changed, anything changed).
    fn refresh_replication(&mut self, rep: &Replicator<'_>) -> (bool, bool) {
        let (mut changed, mut moved) = (false, false);
        for p in &mut self.peers {
            let Some(r) = rep.status(&p.node) else {
                continue;
            };
            let new = PeerReplicationStatus {
                state: r.state.name().into(),
                bulk_percent: match r.state {
                    PeerSync::BulkSync { percent } => Some(percent),
                    _ => None,
                },
                lag_records: r.lag_records,
                lag_ms: r.lag_ms,
                records_sent: r.records_sent,
                applied: r.applied,
                stale: r.stale,
                rejected: r.rejected,
                bulk_syncs_sent: r.bulk_syncs_sent,
                bulk_syncs_received: r.bulk_syncs_received,
            };
            if new != p.replication {
                changed |= new.state != p.replication.state;
                moved = true;
                p.replication = new;
            }
        }
        (changed, moved)
    }

    /// Copies the node's counters in; true when any moved.
    fn refresh_counters(&mut self, node: &Node) -> bool {
        let mut moved = false;
        for p in &mut self.peers {
            let c = wire_counters(&node.peer_counters(&p.node));
            if c != p.counters {
                p.counters = c;
                moved = true;
            }
        }
        moved
    }
}

fn wire_counters(c: &LinkCounters) -> PeerLinkCounters {
    PeerLinkCounters {
        ups: c.ups,
        auth_failures: c.auth_failures,
        decrypt_failures: c.decrypt_failures,
        malformed: c.malformed,
        oversize: c.oversize,
        heartbeat_timeouts: c.heartbeat_timeouts,
        closed_by_peer: c.closed_by_peer,
        setup_timeouts: c.setup_timeouts,
        refused_by_us: c.refused_by_us,
        refused_by_peer: c.refused_by_peer,
        connect_failures: c.connect_failures,
        io_errors: c.io_errors,
        replaced: c.replaced,
    }
}

/// Frames to the supervisor over the non-blocking channel: the one being written, and the
/// newest one waiting (a newer report replaces an older unsent one: each is a full snapshot).
/// syncd never blocks on a slow supervisor.
#[derive(Debug, Default)]
struct Outbox {
    writing: Vec<u8>,
    next: Option<Vec<u8>>,
}

impl Outbox {
    fn queue(&mut self, report: &SyncdReport) -> io::Result<()> {
        let payload = serde_json::to_vec(report).map_err(io::Error::other)?;
        let mut frame = Vec::with_capacity(payload.len() + 5);
        write_frame(&mut frame, FrameKind::PeerReport, &payload)?;
        self.next = Some(frame);
        Ok(())
    }

    fn flush(&mut self, w: &mut impl Write) -> io::Result<()> {
        loop {
            if self.writing.is_empty() {
                match self.next.take() {
                    Some(f) => self.writing = f,
                    None => return Ok(()),
                }
            }
            match w.write(&self.writing) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.writing.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prodhcp_proto::launch::FrameReader;

    /// A writer that takes at most `room` bytes, then would block.
    struct Pipe {
        got: Vec<u8>,
        room: usize,
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.got.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn report(n: u64) -> SyncdReport {
        SyncdReport {
            peers: vec![HaPeerStatus {
                node: "b".into(),
                counters: PeerLinkCounters {
                    ups: n,
                    ..PeerLinkCounters::default()
                },
                ..HaPeerStatus::default()
            }],
            ..SyncdReport::default()
        }
    }

    fn frames(bytes: &[u8]) -> Vec<SyncdReport> {
        let mut r = FrameReader::default();
        let mut input = bytes;
        let mut out = Vec::new();
        while let ReadOutcome::Frame(FrameKind::PeerReport, p) = r.poll(&mut input).unwrap() {
            out.push(serde_json::from_slice(&p).unwrap());
        }
        out
    }

    #[test]
    fn a_blocked_channel_keeps_the_frame_in_flight_whole_and_only_the_newest_report() {
        let mut outbox = Outbox::default();
        let mut pipe = Pipe {
            got: Vec::new(),
            room: 10,
        };
        outbox.queue(&report(1)).unwrap();
        outbox.flush(&mut pipe).unwrap();
        // Three more reports while the supervisor reads nothing: only the last one is kept.
        for n in 2..=4 {
            outbox.queue(&report(n)).unwrap();
            outbox.flush(&mut pipe).unwrap();
        }
        pipe.room = usize::MAX;
        outbox.flush(&mut pipe).unwrap();
        let got = frames(&pipe.got);
        assert_eq!(got, vec![report(1), report(4)]);
    }

    /// A node with one configured peer `b` and no connection (so `b` is down to it).
    fn idle_node() -> Node {
        Node::bind(NodeConfig {
            cluster: "pop1".into(),
            node: "a".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            peers: vec![("b".into(), "127.0.0.1:9".parse().unwrap())],
            key: crate::key::ClusterKey::from_bytes([7; 32]),
            heartbeat_interval: Duration::from_millis(200),
            dead_after: Duration::from_millis(800),
            layout_fingerprint: 1,
        })
        .unwrap()
    }

    fn down(peer: &str, cause: crate::DownCause) -> Event {
        Event::LinkDown {
            peer: Some(peer.into()),
            remote: "127.0.0.1:9".parse().unwrap(),
            was_up: false,
            cause,
        }
    }

    #[test]
    fn transitions_are_up_down_and_a_new_cause_while_down_and_nothing_else() {
        let node = idle_node();
        let mut view = PeerView::new([("b".to_string(), "127.0.0.1:9".to_string())]);
        assert_eq!(view.peers[0].since_unix_ms, None);
        let refused = || crate::DownCause::ConnectFailed {
            error: "refused".into(),
        };
        // First failure: a transition (a cause appears), since set.
        assert!(view.apply(&node, &down("b", refused()), 10));
        assert_eq!(view.peers[0].since_unix_ms, Some(10));
        assert_eq!(
            view.peers[0].last_cause_kind.as_deref(),
            Some("connect_failed")
        );
        // The same cause again: no transition, since unchanged.
        assert!(!view.apply(&node, &down("b", refused()), 20));
        assert_eq!(view.peers[0].since_unix_ms, Some(10));
        // Another cause while down: a transition, since unchanged (still down since 10).
        let auth = crate::DownCause::AuthFailure {
            detail: "another key".into(),
        };
        assert!(view.apply(&node, &down("b", auth), 30));
        assert_eq!(view.peers[0].since_unix_ms, Some(10));
        assert_eq!(
            view.peers[0].last_cause_kind.as_deref(),
            Some("auth_failure")
        );
        // Up: a transition, since moves, remote known.
        let up = Event::PeerUp {
            peer: "b".into(),
            remote: "127.0.0.1:9".parse().unwrap(),
            hello: crate::Hello {
                protocol_version: crate::message::PROTOCOL_VERSION,
                cluster: "pop1".into(),
                node: "b".into(),
                layout_fingerprint: 1,
                positions: Vec::new(),
            },
        };
        assert!(view.apply(&node, &up, 40));
        assert_eq!(view.peers[0].link, LinkState::Up);
        assert_eq!(view.peers[0].since_unix_ms, Some(40));
        assert!(!view.apply(&node, &up, 45), "already up");
        // Down after up (the node has no up link for b): a transition even with an old cause.
        assert!(view.apply(&node, &down("b", crate::DownCause::ClosedByPeer), 50));
        assert_eq!(view.peers[0].link, LinkState::Down);
        assert_eq!(view.peers[0].since_unix_ms, Some(50));
        assert_eq!(view.peers[0].remote, None);
        // Connections of nodes that are not configured peers change nothing.
        assert!(!view.apply(&node, &down("zz", refused()), 60));
        assert_eq!(view.peers.len(), 1);
        assert_eq!(view.peers[0].role, ROLE_UNKNOWN);
    }

    #[test]
    fn the_exit_code_tells_configuration_from_runtime_errors() {
        assert_eq!(ProcessError::Config("key".into()).exit_code(), 2);
        assert_eq!(
            ProcessError::Io(io::ErrorKind::BrokenPipe.into()).exit_code(),
            1
        );
    }
}
