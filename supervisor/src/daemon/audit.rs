//! The audit process: started when the configuration has an `audit` section, through the
//! launch contract (`prodhcpd audit`, its channel at descriptor 4), restarted by the same
//! rules as a worker ([`ChildLife`]), stopped after the workers (so it audits their last
//! records). The supervisor hands it the appliance's own events (start, stop, reload, role)
//! as [`FrameKind::AuditEvent`]s, queued while it is down (bounded), and keeps its reports
//! for `prodhcpctl audit status`. While it is not running the workers' audit block is clear:
//! the block is the audit process's to set (`audit_strict` with a full spool); records wait
//! in the rings, which keep them for its consumer cursor.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::Child;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mio::unix::SourceFd;
use prodhcp_proto::launch::{
    write_frame, ApplianceEventFrame, AuditLaunchArgs, FrameKind, FrameReader, ReadOutcome,
};
use prodhcp_proto::{AuditReport, AuditStatusData};
use tracing::{error, info, warn};

use super::workers::{ChildLife, WorkerState};
use super::{Supervisor, AUDIT_CHANNEL};

/// Most appliance events kept while the audit process is down.
const MAX_QUEUED_EVENTS: usize = 1024;

/// The audit process's record.
#[derive(Debug)]
pub(super) struct AuditProc {
    child: Option<Child>,
    channel: Option<UnixStream>,
    reader: FrameReader,
    life: ChildLife,
    report: Option<(u64, AuditReport)>,
    /// Appliance events not handed over yet, oldest first.
    queued: VecDeque<ApplianceEventFrame>,
    /// Events dropped because the queue was full.
    queue_dropped: u64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An appliance event frame of kind `event`, now.
pub(super) fn event(event: &str) -> ApplianceEventFrame {
    ApplianceEventFrame {
        time_ms: unix_ms(),
        event: event.into(),
        generation: None,
        role_from: None,
        role_to: None,
        cause: None,
        finding: None,
    }
}

impl AuditProc {
    /// The record, not started yet.
    pub(super) fn new(now: Instant) -> AuditProc {
        AuditProc {
            child: None,
            channel: None,
            reader: FrameReader::default(),
            life: ChildLife::new(now),
            report: None,
            queued: VecDeque::new(),
            queue_dropped: 0,
        }
    }

    /// When the next restart is due, if one is scheduled.
    pub(super) fn restart_at(&self) -> Option<Instant> {
        self.life.restart_at()
    }

    /// Writes the queued events to the channel (blocking briefly: they are small).
    fn flush(&mut self) {
        let Some(ch) = self.channel.as_mut() else {
            return;
        };
        let _ = ch.set_nonblocking(false);
        while let Some(ev) = self.queued.front() {
            let Ok(payload) = serde_json::to_vec(ev) else {
                self.queued.pop_front();
                continue;
            };
            if write_frame(ch, FrameKind::AuditEvent, &payload).is_err() {
                break;
            }
            self.queued.pop_front();
        }
        let _ = ch.set_nonblocking(true);
    }
}

impl Supervisor {
    /// Starts the audit process (when the configuration has an `audit` section).
    pub(super) fn spawn_audit(&mut self) {
        if self.config.audit.is_none() || self.audit.is_none() {
            return;
        }
        let args = AuditLaunchArgs {
            supervisor_pid: Some(std::process::id()),
        };
        let result = self.spawn_child(&args.to_args(), &[], AUDIT_CHANNEL);
        let Some(a) = self.audit.as_mut() else {
            return;
        };
        match result {
            Ok((child, stream)) => {
                info!(pid = child.id(), "audit process started");
                a.child = Some(child);
                a.channel = Some(stream);
                a.reader = FrameReader::default();
                a.life.started(Instant::now());
                a.flush();
            }
            Err(e) => {
                error!(error = %e, "cannot start the audit process");
                a.life.start_failed(Instant::now());
            }
        }
    }

    /// Hands an appliance event to the audit process (queued while it is down).
    pub(super) fn audit_event(&mut self, ev: ApplianceEventFrame) {
        let Some(a) = self.audit.as_mut() else {
            return;
        };
        if a.queued.len() >= MAX_QUEUED_EVENTS {
            a.queued.pop_front();
            a.queue_dropped += 1;
            warn!(
                dropped = a.queue_dropped,
                "audit: appliance event queue full while the audit process is down; the oldest was dropped"
            );
        }
        a.queued.push_back(ev);
        a.flush();
    }

    /// Reaps a dead audit process, clears the workers' audit block, schedules a restart.
    pub(super) fn reap_audit(&mut self) {
        let Some(a) = self.audit.as_mut() else {
            return;
        };
        let status = match a.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(st))) => st,
            _ => return,
        };
        a.child = None;
        if let Some(ch) = a.channel.take() {
            let fd = ch.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
        for w in &self.workers {
            w.ring.set_audit_block(false);
        }
        let Some(a) = self.audit.as_mut() else {
            return;
        };
        if self.stopping {
            a.life.state = WorkerState::Stopped;
            return;
        }
        let wait = a.life.died(Instant::now());
        if status.code() == Some(2) {
            error!(%status, retry_in_ms = wait.as_millis() as u64,
                "the audit process refused its configuration (its message is above); restarting it");
        } else {
            warn!(%status, retry_in_ms = wait.as_millis() as u64,
                "the audit process died; restarting it (it resumes at its ring cursors)");
        }
    }

    /// Restarts the audit process when its backoff is over.
    pub(super) fn respawn_audit_due(&mut self) {
        if self.stopping {
            return;
        }
        if self
            .audit
            .as_ref()
            .is_some_and(|a| a.life.restart_due(Instant::now()))
        {
            self.spawn_audit();
        }
    }

    /// Reads the audit process's channel: reports.
    pub(super) fn audit_channel(&mut self) {
        let Some(a) = self.audit.as_mut() else {
            return;
        };
        let Some(ch) = a.channel.as_mut() else {
            return;
        };
        loop {
            match a.reader.poll(ch) {
                Ok(ReadOutcome::Frame(FrameKind::AuditReport, payload)) => {
                    match serde_json::from_slice::<AuditReport>(&payload) {
                        Ok(r) => {
                            if a.life.state == WorkerState::Starting {
                                a.life.state = WorkerState::Running;
                            }
                            a.report = Some((unix_ms(), r));
                        }
                        Err(e) => warn!(error = %e, "unreadable report from the audit process"),
                    }
                }
                Ok(ReadOutcome::Frame(..)) => {}
                Ok(ReadOutcome::Pending) => break,
                Ok(ReadOutcome::Closed) | Err(_) => {
                    let fd = ch.as_raw_fd();
                    let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                    a.channel = None;
                    break;
                }
            }
        }
    }

    /// Tells the audit process to stop (a `Stop` frame: it delivers what it holds for a
    /// moment, stores its positions and exits).
    pub(super) fn stop_audit(&mut self) {
        let Some(a) = self.audit.as_mut() else {
            return;
        };
        if let Some(ch) = a.channel.as_mut() {
            let _ = ch.set_nonblocking(false);
            let _ = write_frame(ch, FrameKind::Stop, b"");
        }
    }

    /// Waits for the audit process to exit until `deadline`, then SIGKILLs it.
    pub(super) fn wait_audit(&mut self, deadline: Instant) {
        let Some(a) = self.audit.as_mut() else {
            return;
        };
        if let Some(mut c) = a.child.take() {
            super::wait_or_kill(&mut c, deadline);
        }
        a.life.state = WorkerState::Stopped;
        for w in &self.workers {
            w.ring.set_audit_block(false);
        }
    }

    /// Restarts the audit process with a new configuration (a reload that changed the
    /// `audit` section): it stops gracefully and the reaper starts it again.
    pub(super) fn restart_audit_for_reload(&mut self) {
        let had = self.audit.is_some();
        let wants = self.config.audit.is_some();
        match (had, wants) {
            (false, true) => {
                self.audit = Some(AuditProc::new(Instant::now()));
                self.spawn_audit();
            }
            (true, _) => {
                info!("the audit section or the pool layout changed: restarting the audit process");
                self.stop_audit();
                let deadline = Instant::now() + super::STOP_GRACE;
                self.wait_audit(deadline);
                if wants {
                    if let Some(a) = self.audit.as_mut() {
                        a.life = ChildLife::new(Instant::now());
                    }
                    self.spawn_audit();
                } else {
                    self.audit = None;
                }
            }
            (false, false) => {}
        }
    }

    /// The `audit_status` answer.
    pub(super) fn audit_status(&self) -> AuditStatusData {
        let Some(a) = self.audit.as_ref() else {
            return AuditStatusData::default();
        };
        AuditStatusData {
            configured: true,
            running: a.child.is_some(),
            pid: a.child.as_ref().map(Child::id),
            restarts: a.life.restarts,
            reported_unix_ms: a.report.as_ref().map(|(t, _)| *t),
            report: a.report.as_ref().map(|(_, r)| r.clone()),
        }
    }
}
