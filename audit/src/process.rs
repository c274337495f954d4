//! The audit process: what `prodhcpd audit` runs.
//!
//! The supervisor starts it like syncd (`prodhcp_proto::launch`: [`AuditLaunchArgs`], its
//! channel at descriptor 4) when the configuration has an `audit` section, sends the
//! configuration text once, then appliance events ([`FrameKind::AuditEvent`]), and restarts it
//! with backoff when it dies. This module:
//! 1. dies with the supervisor (`PR_SET_PDEATHSIG`, then checks the parent);
//! 2. opens the lease table (read only: to map a slot to its address), every ring it audits
//!    (the workers', the supervisor's, the importer's) and the [`Trail`];
//! 3. turns: reads the channel, [`Trail::ingest`], [`Trail::deliver`], and reports
//!    ([`FrameKind::AuditReport`]) at most every [`launch::AUDIT_REPORT_EVERY_MS`]. It waits
//!    [`IDLE_TURN`] when nothing moved, so a record is read within about that long; it is
//!    never on a worker's path (workers only append to their rings).
//!
//! It stops on SIGTERM/SIGINT, a `Stop` frame or the channel closing, after a last delivery
//! turn (bounded) and storing the targets' positions.

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prodhcp_proto::launch::{
    self, write_frame, ApplianceEventFrame, AuditLaunchArgs, FrameKind, ReadOutcome,
};
use shm_layout::{worker_owner, Ring, Table, IMPORT_OWNER, SUPERVISOR_OWNER};
use tracing::{info, warn};

use crate::event::{ApplianceEvent, Origin};
use crate::trail::{Trail, TrailError, TrailRing};
use crate::transport::Sender;

/// Wait of one loop turn when nothing moved.
pub const IDLE_TURN: Duration = Duration::from_millis(5);
/// How often the spool is `fdatasync`ed under load (the ring cursors follow each sync).
const SYNC_EVERY: Duration = Duration::from_millis(50);
/// How long a stopping audit process keeps delivering what it holds.
const STOP_DRAIN: Duration = Duration::from_millis(1500);

/// Why the audit process stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The configuration cannot be used (no `audit` section).
    #[error("audit configuration: {0}")]
    Config(String),
    /// The trail failed (spool, state or file).
    #[error("{0}")]
    Trail(#[from] TrailError),
    /// I/O on the channel, the table or a ring.
    #[error("audit: {0}")]
    Io(#[from] io::Error),
}

impl ProcessError {
    /// The exit code: 2 for the configuration, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ProcessError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// The host name for the `server` field.
fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "-".into())
}

/// An appliance event from its frame; `None` for an unknown kind.
fn appliance_event(f: &ApplianceEventFrame) -> Option<ApplianceEvent> {
    Some(match f.event.as_str() {
        "start" => ApplianceEvent::Start,
        "stop" => ApplianceEvent::Stop,
        "reload" => ApplianceEvent::Reload {
            generation: f.generation.unwrap_or(0),
        },
        "role" => ApplianceEvent::Role {
            from: f.role_from.clone().unwrap_or_default(),
            to: f.role_to.clone().unwrap_or_default(),
            cause: f.cause.clone().unwrap_or_default(),
        },
        "scrub" => ApplianceEvent::Scrub {
            finding: f.finding.clone().unwrap_or_default(),
        },
        "pool-alarm" => ApplianceEvent::PoolAlarm {
            change: f.cause.clone().unwrap_or_default(),
            detail: f.finding.clone().unwrap_or_default(),
        },
        _ => return None,
    })
}

/// Runs the audit process until SIGTERM/SIGINT, a `Stop` frame, or the channel closing.
pub fn run_process(args: AuditLaunchArgs) -> Result<(), ProcessError> {
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
    let audit = config
        .audit
        .clone()
        .ok_or_else(|| ProcessError::Config("the configuration has no `audit` section".into()))?;
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
    // Every worker ring there is: those of the configured workers, and those a reload that
    // lowered the number of workers left behind (their last records are still to be read).
    let mut rings = Vec::new();
    for id in 0..prodhcp_config::MAX_WORKERS {
        let owner = worker_owner(id);
        if id < config.effective_workers() || config.ring_file(owner).exists() {
            rings.push((open_ring(owner)?, true));
        }
    }
    rings.push((open_ring(SUPERVISOR_OWNER)?, false));
    rings.push((open_ring(IMPORT_OWNER)?, false));
    let server = host_name();
    let origin = Origin {
        node: config
            .cluster
            .as_ref()
            .map_or_else(|| server.clone(), |c| c.node.clone()),
        server,
        seq: 0,
    };
    let senders = audit
        .targets
        .iter()
        .map(|t| {
            let tls = audit.tls.as_ref().map(|t| crate::transport::TlsSettings {
                ca_file: t.ca_file.clone(),
                cert_file: t.cert_file.clone(),
                key_file: t.key_file.clone(),
            });
            Sender::new(t, tls)
        })
        .collect();
    let mut trail = Trail::open(
        &audit,
        rings
            .iter()
            .map(|(ring, worker)| TrailRing {
                ring,
                worker: *worker,
            })
            .collect(),
        &table,
        origin,
        senders,
    )?;
    trail.set_sync_interval(SYNC_EVERY);
    trail.set_reserved(
        config
            .subnets
            .iter()
            .flat_map(|s| s.reservations.iter().map(|r| r.address)),
    );
    info!(
        targets = audit.targets.len(),
        file = audit.file.as_ref().map(|p| p.display().to_string()),
        spool = %audit.spool_dir.display(),
        "audit: started, {}",
        trail.summary()
    );
    channel.set_nonblocking(true)?;
    let mut outbox = Vec::new();
    let mut last_report = Instant::now() - Duration::from_secs(1);
    let every = Duration::from_millis(launch::AUDIT_REPORT_EVERY_MS);
    let mut stopping = false;
    while !stop.load(Ordering::Relaxed) && !stopping {
        loop {
            match reader.poll(&mut channel) {
                Ok(ReadOutcome::Frame(FrameKind::AuditEvent, payload)) => {
                    match serde_json::from_slice::<ApplianceEventFrame>(&payload)
                        .ok()
                        .and_then(|f| appliance_event(&f).map(|e| (e, f.time_ms)))
                    {
                        Some((ev, t)) => trail.appliance(&ev, t)?,
                        None => warn!("audit: an appliance event it cannot read was ignored"),
                    }
                }
                Ok(ReadOutcome::Frame(FrameKind::Stop, _)) | Ok(ReadOutcome::Closed) => {
                    stopping = true;
                    break;
                }
                Ok(ReadOutcome::Frame(..)) => {}
                Ok(ReadOutcome::Pending) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        let now = Instant::now();
        let read = trail.ingest()?;
        trail.sync_if_due(now)?;
        let sent = trail.deliver(now)?;
        if last_report.elapsed() >= every {
            last_report = now;
            report(&mut channel, &mut outbox, &trail);
        }
        if read == 0 && !sent {
            std::thread::sleep(IDLE_TURN);
        }
    }
    // Deliver what is held, for a bounded time, then store positions.
    let until = Instant::now() + STOP_DRAIN;
    while Instant::now() < until {
        trail.ingest()?;
        if !trail.deliver(Instant::now())? {
            std::thread::sleep(IDLE_TURN);
        }
        let r = trail.report();
        if r.ring_lag_records == 0 && r.targets.iter().all(|t| t.lag_records == 0) {
            break;
        }
    }
    trail.sync_now()?;
    trail.release_block();
    trail.store_state()?;
    report(&mut channel, &mut outbox, &trail);
    info!("audit: stopped, {}", trail.summary());
    Ok(())
}

/// Sends a report to the supervisor; a frame that cannot be written whole now waits in
/// `outbox` (the channel is non-blocking).
fn report(channel: &mut UnixStream, outbox: &mut Vec<u8>, trail: &Trail<'_>) {
    use std::io::Write;
    if outbox.is_empty() {
        let Ok(payload) = serde_json::to_vec(&trail.report()) else {
            return;
        };
        let _ = write_frame(outbox, FrameKind::AuditReport, &payload);
    }
    match channel.write(outbox) {
        Ok(n) => {
            outbox.drain(..n);
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(_) => outbox.clear(),
    }
}
