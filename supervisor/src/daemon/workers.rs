//! The worker process table: starting each worker with its launch contract, reaping dead ones,
//! restarting them with backoff, killing hung ones (heartbeat), and reading their channels.
//! [`ChildLife`] (state, restarts, backoff) is shared with the syncd process (`super::syncd`).
//!
//! The decisions (when to retry, when a worker counts as hung) are plain functions of the
//! worker's record and a given `now`, so they are tested here without processes or sleeping.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::process::Child;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Token};
use prodhcp_proto::launch::{self, write_frame, FrameKind, FrameReader, LaunchArgs, ReadOutcome};
use shm_layout::{worker_owner, Ring};
use tracing::{error, warn};

use super::table_setup::recover;
use super::{Supervisor, CHANNEL_BASE};
use crate::sys;

/// The wait before the first restart, and after a worker that ran for [`HEALTHY_AFTER`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between restarts (the wait doubles after each quick death).
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A worker that ran this long before dying is restarted after [`FIRST_BACKOFF`] again.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// A running worker whose heartbeat does not move for this long is killed and restarted.
const HANG_AFTER: Duration = Duration::from_millis(1500);

/// Where a worker is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WorkerState {
    /// Started; its first configuration is not applied yet.
    Starting,
    /// Serving.
    Running,
    /// Dead or failed to start; restarted at the given instant.
    Backoff(Instant),
    /// Not running and not to be restarted (before the first start, while stopping).
    Stopped,
}

impl WorkerState {
    /// The name `prodhcpctl status` shows.
    pub(super) fn name(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Running => "running",
            WorkerState::Backoff(_) => "restarting",
            WorkerState::Stopped => "stopped",
        }
    }
}

/// Watches a worker's heartbeat word: hung when it has not moved for [`HANG_AFTER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HeartbeatWatch {
    /// Last value seen.
    last: u64,
    /// When it last changed (or the watch last restarted).
    since: Instant,
}

impl HeartbeatWatch {
    /// A watch for a worker started at `now`: any first value counts as a move.
    pub(super) fn started(now: Instant) -> HeartbeatWatch {
        HeartbeatWatch {
            last: u64::MAX,
            since: now,
        }
    }

    /// Records the value `beat` read at `now`; true when it has not moved for longer than
    /// `limit` ([`HANG_AFTER`]: a worker parses a new configuration off its loop thread and
    /// keeps beating meanwhile, so a SIGSTOPped or stuck one is caught during a reload too). The watch then starts over, so a hung worker is reported once
    /// per `limit`, not on every look.
    pub(super) fn hung(&mut self, beat: u64, now: Instant, limit: Duration) -> bool {
        if beat != self.last {
            *self = HeartbeatWatch {
                last: beat,
                since: now,
            };
            false
        } else if now.saturating_duration_since(self.since) > limit {
            self.since = now;
            true
        } else {
            false
        }
    }
}

/// A worker answered a configuration frame (applied or refused) at `now`. The answer is
/// a sign of life: the heartbeat watch starts over.
/// (Takes the two fields: the loop that reads the channel holds a borrow of another.)
fn answered(config_unanswered: &mut u32, heartbeat: &mut HeartbeatWatch, now: Instant) {
    *config_unanswered = config_unanswered.saturating_sub(1);
    *heartbeat = HeartbeatWatch::started(now);
}

/// The life cycle of one supervised child process (a worker, or syncd): its state, its
/// restarts and the backoff between them. Both kinds of child restart by the same rules.
#[derive(Debug)]
pub(super) struct ChildLife {
    pub(super) state: WorkerState,
    pub(super) restarts: u64,
    /// When it was last started.
    started: Instant,
    /// The wait before the next restart.
    backoff: Duration,
}

impl ChildLife {
    /// A child not started yet.
    pub(super) fn new(now: Instant) -> ChildLife {
        ChildLife {
            state: WorkerState::Stopped,
            restarts: 0,
            started: now,
            backoff: FIRST_BACKOFF,
        }
    }

    /// Records a start at `now`.
    pub(super) fn started(&mut self, now: Instant) {
        self.state = WorkerState::Starting;
        self.started = now;
    }

    /// Schedules a retry after a start that failed at `now`.
    pub(super) fn start_failed(&mut self, now: Instant) {
        self.state = WorkerState::Backoff(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Schedules the restart of a child that died at `now`; returns the wait. A child that
    /// ran for [`HEALTHY_AFTER`] waits [`FIRST_BACKOFF`]; each quick death doubles the wait up
    /// to [`MAX_BACKOFF`].
    pub(super) fn died(&mut self, now: Instant) -> Duration {
        if now.saturating_duration_since(self.started) > HEALTHY_AFTER {
            self.backoff = FIRST_BACKOFF;
        }
        let wait = self.backoff;
        self.state = WorkerState::Backoff(now + wait);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.restarts += 1;
        wait
    }

    /// Whether a restart is due at `now`.
    pub(super) fn restart_due(&self, now: Instant) -> bool {
        matches!(self.state, WorkerState::Backoff(at) if now >= at)
    }

    /// When the next restart is due, if one is scheduled.
    pub(super) fn restart_at(&self) -> Option<Instant> {
        match self.state {
            WorkerState::Backoff(at) => Some(at),
            _ => None,
        }
    }
}

/// One worker's record in the process table.
#[derive(Debug)]
pub(super) struct Worker {
    pub(super) id: usize,
    pub(super) child: Option<Child>,
    pub(super) channel: Option<UnixStream>,
    pub(super) reader: FrameReader,
    /// State, restarts, backoff.
    pub(super) life: ChildLife,
    /// Its change ring (the supervisor recovers its owner from it when it dies).
    pub(super) ring: Ring,
    heartbeat: HeartbeatWatch,
    /// Configuration frames sent that the worker has not answered yet. The channel keeps
    /// order, so only the answer that brings this to 0 is about the latest configuration.
    pub(super) config_unanswered: u32,
}

impl Worker {
    /// A worker not started yet.
    pub(super) fn new(id: usize, ring: Ring, now: Instant) -> Worker {
        Worker {
            id,
            child: None,
            channel: None,
            reader: FrameReader::default(),
            life: ChildLife::new(now),
            ring,
            heartbeat: HeartbeatWatch {
                last: 0,
                since: now,
            },
            config_unanswered: 0,
        }
    }

    /// Records a start at `now`: its process and channel, its first configuration sent.
    fn started(&mut self, child: Child, channel: UnixStream, now: Instant) {
        self.child = Some(child);
        self.channel = Some(channel);
        self.reader = FrameReader::default();
        self.life.started(now);
        self.heartbeat = HeartbeatWatch::started(now);
        self.config_unanswered = 1;
    }

    /// When the next restart is due, if one is scheduled.
    pub(super) fn restart_at(&self) -> Option<Instant> {
        self.life.restart_at()
    }
}

impl Supervisor {
    pub(super) fn spawn(&mut self, id: usize) {
        let w = &mut self.workers[id];
        let result = (|| -> io::Result<(Child, UnixStream)> {
            let (ours, theirs) = sys::socketpair()?;
            let args = LaunchArgs {
                id,
                workers: self.sockets.len(),
                supervisor_pid: Some(std::process::id()),
            };
            let child = sys::spawn_worker(
                &self.exe,
                &args.to_args(),
                &[
                    (launch::UDP_SOCKET, self.sockets[id].as_fd()),
                    (launch::CHANNEL, theirs.as_fd()),
                    (launch::REPLICATED_DOORBELL, self.doorbells[id].as_fd()),
                    (launch::RECORDS_DOORBELL, self.records_doorbell.as_fd()),
                ],
            )?;
            drop(theirs);
            let mut stream = UnixStream::from(ours);
            write_frame(&mut stream, FrameKind::Config, &self.config_wire)?;
            stream.set_nonblocking(true)?;
            Ok((child, stream))
        })();
        match result {
            Ok((child, stream)) => {
                let fd = stream.as_raw_fd();
                let _ = self.poll.registry().register(
                    &mut SourceFd(&fd),
                    Token(CHANNEL_BASE + id),
                    Interest::READABLE,
                );
                w.started(child, stream, Instant::now());
            }
            Err(e) => {
                error!(worker = id, error = %e, "cannot start worker");
                w.life.start_failed(Instant::now());
            }
        }
    }

    /// Kills a running worker whose heartbeat has not moved for [`HANG_AFTER`] (stopped with
    /// SIGSTOP, stuck in the kernel, spinning): its share of the clients is steered to its
    /// socket, so a hung worker would silently starve them. It is restarted like a crashed one.
    pub(super) fn check_heartbeats(&mut self) {
        let now = Instant::now();
        for w in &mut self.workers {
            if w.life.state != WorkerState::Running {
                continue;
            }
            let beat = self.table.heartbeat(worker_owner(w.id));
            if w.heartbeat.hung(beat, now, HANG_AFTER) {
                if let Some(c) = w.child.as_mut() {
                    warn!(
                        worker = w.id,
                        pid = c.id(),
                        "worker stopped answering its heartbeat; killing it"
                    );
                    let _ = c.kill();
                }
            }
        }
    }

    pub(super) fn reap(&mut self) {
        self.reap_syncd();
        self.reap_audit();
        // Export children.
        self.export_children.retain(|pid| {
            !matches!(
                nix::sys::wait::waitpid(*pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)),
                Ok(nix::sys::wait::WaitStatus::Exited(..))
                    | Ok(nix::sys::wait::WaitStatus::Signaled(..))
                    | Err(_)
            )
        });
        for id in 0..self.workers.len() {
            let status = {
                let w = &mut self.workers[id];
                match w.child.as_mut().map(|c| c.try_wait()) {
                    Some(Ok(Some(st))) => st,
                    _ => continue,
                }
            };
            let owner = worker_owner(id);
            let w = &mut self.workers[id];
            w.child = None;
            if let Some(ch) = w.channel.take() {
                let fd = ch.as_raw_fd();
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            }
            recover(&self.table, owner, Some(&w.ring));
            if let Some(t) = self.reload_track.as_mut() {
                t.gone(id);
            }
            if self.stopping {
                w.life.state = WorkerState::Stopped;
                continue;
            }
            let wait = w.life.died(Instant::now());
            warn!(worker = id, %status, retry_in_ms = wait.as_millis() as u64, "worker died; restarting it");
        }
    }

    pub(super) fn respawn_due(&mut self) {
        if self.stopping {
            return;
        }
        let now = Instant::now();
        for id in 0..self.workers.len() {
            if self.workers[id].life.restart_due(now) {
                self.spawn(id);
            }
        }
    }

    pub(super) fn worker_channel(&mut self, id: usize) {
        let Some(w) = self.workers.get_mut(id) else {
            return;
        };
        let Some(ch) = w.channel.as_mut() else { return };
        loop {
            match w.reader.poll(ch) {
                Ok(ReadOutcome::Frame(FrameKind::Applied, _)) => {
                    if w.life.state == WorkerState::Starting {
                        w.life.state = WorkerState::Running;
                    }
                    answered(&mut w.config_unanswered, &mut w.heartbeat, Instant::now());
                    // The answer to the latest text (a worker started meanwhile was given it).
                    if let (0, Some(t)) = (w.config_unanswered, self.reload_track.as_mut()) {
                        t.applied(id);
                    }
                }
                Ok(ReadOutcome::Frame(FrameKind::Rejected, msg)) => {
                    let msg = String::from_utf8_lossy(&msg);
                    warn!(worker = id, message = %msg, "worker refused the configuration");
                    answered(&mut w.config_unanswered, &mut w.heartbeat, Instant::now());
                    if let (0, Some(t)) = (w.config_unanswered, self.reload_track.as_mut()) {
                        t.refused(id, &msg);
                    }
                }
                Ok(ReadOutcome::Frame(..)) => {}
                Ok(ReadOutcome::Pending) => return,
                Ok(ReadOutcome::Closed) | Err(_) => {
                    let fd = ch.as_raw_fd();
                    let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                    w.channel = None;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn worker(dir: &tempfile::TempDir, t0: Instant) -> Worker {
        let ring = Ring::open_or_create(&dir.path().join("ring-1.dat"), 1, 1024).expect("ring");
        Worker::new(0, ring, t0)
    }

    #[test]
    fn quick_deaths_double_the_wait_up_to_the_cap_and_a_healthy_run_resets_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = Instant::now();
        let mut w = worker(&dir, t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..8 {
            // Started, dies one second later: a quick death.
            w.life.started = now;
            now += Duration::from_secs(1);
            let wait = w.life.died(now);
            assert_eq!(w.life.restart_at(), Some(now + wait));
            waits.push(wait.as_millis());
        }
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(w.life.restarts, 8);
        // Runs for more than 30 s, then dies: back to the first wait.
        w.life.started = now;
        now += HEALTHY_AFTER + MS;
        assert_eq!(w.life.died(now), FIRST_BACKOFF);
        // Exactly 30 s is not yet healthy: the wait keeps growing.
        w.life.started = now;
        now += HEALTHY_AFTER;
        assert_eq!(w.life.died(now), 2 * FIRST_BACKOFF);
        assert_eq!(w.life.restarts, 10);
    }

    #[test]
    fn failed_starts_back_off_and_a_restart_is_due_only_at_its_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = Instant::now();
        let mut w = worker(&dir, t0);
        assert!(!w.life.restart_due(t0), "a stopped worker is not restarted");
        w.life.start_failed(t0);
        assert_eq!(w.life.restart_at(), Some(t0 + FIRST_BACKOFF));
        assert!(!w.life.restart_due(t0 + FIRST_BACKOFF - MS));
        assert!(w.life.restart_due(t0 + FIRST_BACKOFF));
        w.life.start_failed(t0);
        assert_eq!(w.life.restart_at(), Some(t0 + 2 * FIRST_BACKOFF));
        for _ in 0..10 {
            w.life.start_failed(t0);
        }
        assert_eq!(w.life.restart_at(), Some(t0 + MAX_BACKOFF));
        assert_eq!(w.life.restarts, 0, "a failed start is not a restart");
    }

    #[test]
    fn a_heartbeat_that_stops_for_longer_than_the_limit_is_a_hang_reported_once_per_limit() {
        let t0 = Instant::now();
        let mut hb = HeartbeatWatch::started(t0);
        // A moving heartbeat is never a hang, however long it runs.
        let mut now = t0;
        for beat in 0..100u64 {
            now += 500 * MS;
            assert!(!hb.hung(beat, now, HANG_AFTER), "beat {beat}");
        }
        // It stops at 99: not hung at exactly the limit, hung just past it.
        let stopped = now;
        assert!(!hb.hung(99, stopped + HANG_AFTER, HANG_AFTER));
        assert!(hb.hung(99, stopped + HANG_AFTER + MS, HANG_AFTER));
        // Reported once, then again only after another full limit.
        assert!(!hb.hung(99, stopped + HANG_AFTER + 2 * MS, HANG_AFTER));
        assert!(!hb.hung(99, stopped + 2 * HANG_AFTER + MS, HANG_AFTER));
        assert!(hb.hung(99, stopped + 2 * HANG_AFTER + 2 * MS, HANG_AFTER));
        // It moves again: alive.
        assert!(!hb.hung(100, stopped + 10 * HANG_AFTER, HANG_AFTER));
    }

    #[test]
    fn an_answer_to_a_configuration_frame_restarts_the_heartbeat_watch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = Instant::now();
        let mut w = worker(&dir, t0);
        w.heartbeat = HeartbeatWatch::started(t0);
        w.config_unanswered = 1;
        assert!(!w.heartbeat.hung(5, t0, HANG_AFTER));
        // The answer comes just before the limit: a sign of life, the watch starts over.
        let answer = t0 + HANG_AFTER - MS;
        assert!(!w.heartbeat.hung(5, answer, HANG_AFTER));
        answered(&mut w.config_unanswered, &mut w.heartbeat, answer);
        assert_eq!(w.config_unanswered, 0);
        assert!(!w.heartbeat.hung(5, answer + MS, HANG_AFTER));
        assert!(!w.heartbeat.hung(5, answer + HANG_AFTER, HANG_AFTER));
        // A worker that never beats again is a hang after the normal limit from its answer.
        assert!(w
            .heartbeat
            .hung(5, answer + HANG_AFTER + 2 * MS, HANG_AFTER));
    }

    #[test]
    fn a_worker_just_started_has_the_full_limit_whatever_its_word_holds() {
        let t0 = Instant::now();
        // The word keeps its value across restarts; the first look counts as a move.
        let mut hb = HeartbeatWatch::started(t0);
        assert!(!hb.hung(12_345, t0 + 10 * HANG_AFTER, HANG_AFTER));
        assert!(!hb.hung(12_345, t0 + 11 * HANG_AFTER, HANG_AFTER));
        assert!(hb.hung(12_345, t0 + 11 * HANG_AFTER + MS, HANG_AFTER));
    }
}
