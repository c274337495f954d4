//! The supervisor: configuration, the lease table's life cycle, worker processes, the control
//! socket. Single-threaded; signal handlers only queue signals that the mio loop acts on.
//!
//! Architecture Invariant: the supervisor never starts a thread (it forks), and it never serves
//! DHCP itself.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use prodhcp_config::Config;
use prodhcp_proto::launch::{write_frame, FrameKind};
use prodhcp_proto::ReloadStatus;
use shm_layout::{worker_owner, Ring, Table, IMPORT_OWNER, SUPERVISOR_OWNER};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use tracing::{error, info, warn};

use crate::consumers::{EvictionWatch, NamedRing};
use crate::control_server::Connection;
use crate::leases;
use crate::scrub::ScrubRunner;
use table_setup::recover;
use workers::Worker;

mod audit;
mod control;
mod observe;
mod resize;
mod syncd;
mod table_setup;
mod workers;

pub use crate::error::{exit, ReloadRefused, StartError};
pub use table_setup::{load_config, open_table, table_spec};

const SIGNALS: Token = Token(0);
const LISTENER: Token = Token(1);
/// syncd's channel.
const SYNCD_CHANNEL: Token = Token(2);
/// The audit process's channel.
const AUDIT_CHANNEL: Token = Token(3);
/// The metrics endpoint's listener.
const METRICS_LISTENER: Token = Token(4);
/// Metrics connections: `METRICS_CONN_BASE + k`, k below `metrics_http::MAX_CONNECTIONS`
/// (inside the worker channel range, whose workers stop at `MAX_WORKERS`; matched first).
const METRICS_CONN_BASE: usize = 50_000;
const CHANNEL_BASE: usize = 1000;
const CONN_BASE: usize = 100_000;

/// The running supervisor.
pub struct Supervisor {
    config_path: PathBuf,
    config: Config,
    /// Subnet of an address without a scan ([`prodhcp_config::SubnetLookup`] of `config`).
    subnet_lookup: prodhcp_config::SubnetLookup,
    config_text: String,
    /// The configuration in force in the binary form the workers decode
    /// (`prodhcp_config::handoff`): they need not parse the text again.
    config_wire: Vec<u8>,
    generation: u64,
    last_reload: ReloadStatus,
    table: Table,
    clean_start: bool,
    sockets: Vec<OwnedFd>,
    /// One replication doorbell (eventfd) per worker, owned here like the sockets so that it
    /// survives worker and syncd restarts (`prodhcp_proto::launch::REPLICATED_DOORBELL`).
    doorbells: Vec<nix::sys::eventfd::EventFd>,
    /// The records doorbell shared by every worker and syncd
    /// (`prodhcp_proto::launch::RECORDS_DOORBELL`), owned here for the same reason.
    records_doorbell: nix::sys::eventfd::EventFd,
    workers: Vec<Worker>,
    /// The replication daemon, when the configuration has a `cluster` section.
    syncd: Option<syncd::Syncd>,
    /// The audit process, when the configuration has an `audit` section.
    audit: Option<audit::AuditProc>,
    poll: Poll,
    signals: Signals,
    listener: UnixListener,
    conns: HashMap<usize, Connection>,
    next_conn: usize,
    started: Instant,
    sup_ring: Ring,
    import_ring: Ring,
    exe: PathBuf,
    stopping: bool,
    /// Short-lived export writers, reaped on SIGCHLD.
    export_children: Vec<nix::unistd::Pid>,
    index_cleanup_pos: usize,
    /// Client index give-ups last logged, and when (the log is rate-limited).
    index_give_ups_logged: (u64, Option<Instant>),
    index_cleanup_at: Instant,
    /// The background scrub of the lease table (see [`crate::scrub`]).
    scrub: ScrubRunner,
    /// Change-ring eviction counters already logged.
    evictions: EvictionWatch,
    /// Names of the rings, in [`Supervisor::named_rings`] order.
    ring_names: Vec<String>,
    /// The reload the workers have not all answered yet.
    reload_track: Option<crate::reload_track::ReloadTracker>,
    /// The configuration (and its text) in force before that reload, to put back if it fails.
    reload_previous: Option<(Config, String)>,
    /// What systemd was told (`READY=1`, `RELOADING=1`, the watchdog).
    notifier: crate::notify::Notifier,
    /// The Prometheus endpoint (`metrics_listen`).
    metrics: observe::MetricsEndpoint,
    /// Pool utilisation alarms.
    alarms: crate::alarms::Alarms,
    /// Per-state pool counts for the metrics, counted in slices.
    census: crate::census::Census,
}

/// How long a stopping child (worker, syncd) may take after SIGTERM before it is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(5);

// The configuration text goes to every child in one channel frame: the largest file the
// configuration accepts must fit in one (with its kind byte).
const _: () = assert!(
    prodhcp_config::MAX_FILE_SIZE < prodhcp_proto::launch::MAX_FRAME as u64,
    "a configuration of MAX_FILE_SIZE bytes must fit in one channel frame"
);

/// Waits for `child` to exit until `deadline`, then SIGKILLs and reaps it.
fn wait_or_kill(child: &mut std::process::Child, deadline: Instant) {
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn ensure_private_dir(dir: &Path, mode: u32) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

impl Supervisor {
    /// Loads everything and starts the workers.
    pub fn start(config_path: &Path) -> Result<Supervisor, StartError> {
        let t0 = Instant::now();
        let (config, config_text) = load_config(config_path)?;
        // Decided before the table is touched: started as the wrong user, nothing is opened.
        let privileges = crate::privileges::plan(&config)?;
        let config_wire = prodhcp_config::handoff::encode(&config);
        ensure_private_dir(&config.state_dir, 0o750).map_err(|source| StartError::StateDir {
            path: config.state_dir.clone(),
            source,
        })?;
        let table_setup::PreparedTable {
            table,
            clean,
            sup_ring,
            import_ring,
            worker_rings: rings,
        } = table_setup::prepare_table(&config)?;
        let n = rings.len();
        if let Some(dir) = config.control_socket.parent() {
            ensure_private_dir(dir, 0o750).map_err(|source| StartError::ControlSocketDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let exe = std::env::current_exe().map_err(StartError::OwnExecutable)?;
        // What needs root is done: from here on the supervisor runs as the configured user
        // (when started as root with `user`), and so do the sockets it makes (a port-67 socket
        // added on reload joins the group only when made by the same user).
        crate::privileges::apply(&privileges, &config, config_path, &exe)?;

        let sockets = crate::sockets::reuseport_group(config.listen_port, n).map_err(|source| {
            StartError::UdpPort {
                port: config.listen_port,
                source,
            }
        })?;
        let _ = std::fs::remove_file(&config.control_socket);
        let listener = UnixListener::bind(&config.control_socket).map_err(|source| {
            StartError::ControlSocket {
                path: config.control_socket.clone(),
                source,
            }
        })?;
        let _ = std::fs::set_permissions(
            &config.control_socket,
            std::fs::Permissions::from_mode(0o660),
        );
        listener
            .set_nonblocking(true)
            .map_err(|source| StartError::EventLoop {
                what: "control socket",
                source,
            })?;
        let event_loop = |what: &'static str| move |source| StartError::EventLoop { what, source };
        let poll = Poll::new().map_err(event_loop("poll"))?;
        let mut signals =
            Signals::new([SIGHUP, SIGTERM, SIGINT, SIGCHLD]).map_err(event_loop("signals"))?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(event_loop("poll"))?;
        let lfd = listener.as_raw_fd();
        poll.registry()
            .register(&mut SourceFd(&lfd), LISTENER, Interest::READABLE)
            .map_err(event_loop("poll"))?;
        let doorbells = (0..n)
            .map(|_| {
                nix::sys::eventfd::EventFd::from_flags(
                    nix::sys::eventfd::EfdFlags::EFD_CLOEXEC
                        | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
                )
                .map_err(io::Error::from)
            })
            .collect::<io::Result<Vec<_>>>()
            .map_err(event_loop("replication doorbells"))?;
        let records_doorbell = nix::sys::eventfd::EventFd::from_flags(
            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )
        .map_err(io::Error::from)
        .map_err(event_loop("records doorbell"))?;
        let now = Instant::now();
        let workers = rings
            .into_iter()
            .enumerate()
            .map(|(id, ring)| Worker::new(id, ring, now))
            .collect();
        let syncd = config.cluster.as_ref().map(|c| syncd::Syncd::new(c, now));
        let audit = config.audit.as_ref().map(|_| audit::AuditProc::new(now));
        let mut sup = Supervisor {
            config_path: config_path.to_path_buf(),
            subnet_lookup: prodhcp_config::SubnetLookup::build(&config),
            config,
            config_text,
            config_wire,
            generation: 1,
            last_reload: ReloadStatus {
                ok: true,
                message: "initial configuration".into(),
                ..ReloadStatus::default()
            },
            table,
            clean_start: clean,
            sockets,
            doorbells,
            records_doorbell,
            workers,
            syncd,
            audit,
            poll,
            signals,
            listener,
            conns: HashMap::new(),
            next_conn: 0,
            started: Instant::now(),
            sup_ring,
            import_ring,
            exe,
            stopping: false,
            export_children: Vec::new(),
            index_cleanup_pos: 0,
            index_give_ups_logged: (0, None),
            index_cleanup_at: Instant::now(),
            scrub: ScrubRunner::new(),
            evictions: EvictionWatch::default(),
            ring_names: (0..n)
                .map(|id| format!("worker-{id}"))
                .chain(["supervisor".into(), "import".into()])
                .collect(),
            reload_track: None,
            reload_previous: None,
            notifier: crate::notify::Notifier::from_env(),
            metrics: observe::MetricsEndpoint::default(),
            alarms: crate::alarms::Alarms::default(),
            census: crate::census::Census::default(),
        };
        sup.configure_metrics();
        sup.check_evictions();
        // No syncd runs yet: a hold left in a ring by the last run must not keep a worker's
        // replies waiting for a replicated position nobody will publish.
        sup.release_held_replies("the supervisor is starting");
        for id in 0..sup.workers.len() {
            sup.spawn(id);
        }
        sup.spawn_syncd();
        sup.audit_event(audit::event("start"));
        sup.spawn_audit();
        info!(
            workers = n,
            slots = sup.table.slot_count(),
            clean_start = clean,
            ms = t0.elapsed().as_millis() as u64,
            "prodhcpd started"
        );
        Ok(sup)
    }

    /// Runs until SIGTERM/SIGINT; returns the exit code.
    pub fn run(mut self) -> i32 {
        let mut events = Events::with_capacity(64);
        loop {
            let timeout = self.next_timeout();
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error!(error = %e, "poll failed");
                    return self.shutdown(exit::RUNTIME);
                }
            }
            let tokens: Vec<Token> = events.iter().map(|e| e.token()).collect();
            for t in tokens {
                match t {
                    SIGNALS => {
                        let sigs: Vec<i32> = self.signals.pending().collect();
                        for s in sigs {
                            match s {
                                SIGHUP => self.reload(),
                                SIGTERM | SIGINT => self.stopping = true,
                                SIGCHLD => self.reap(),
                                _ => {}
                            }
                        }
                    }
                    LISTENER => self.accept(),
                    SYNCD_CHANNEL => self.syncd_channel(),
                    AUDIT_CHANNEL => self.audit_channel(),
                    METRICS_LISTENER => self.metrics_accept(),
                    Token(t)
                        if (METRICS_CONN_BASE
                            ..METRICS_CONN_BASE + crate::metrics_http::MAX_CONNECTIONS)
                            .contains(&t) =>
                    {
                        self.metrics_conn(t - METRICS_CONN_BASE)
                    }
                    Token(t) if (CHANNEL_BASE..CONN_BASE).contains(&t) => {
                        self.worker_channel(t - CHANNEL_BASE)
                    }
                    Token(t) if t >= CONN_BASE => self.serve_conn(t - CONN_BASE),
                    _ => {}
                }
            }
            if self.stopping {
                return self.shutdown(exit::OK);
            }
            self.reap();
            self.respawn_due();
            self.respawn_syncd_due();
            self.respawn_audit_due();
            self.check_reload();
            self.housekeeping();
            self.notify_progress();
        }
    }

    /// Tells systemd `READY=1` once the first worker serves (it answered its first
    /// configuration: it holds its socket, the table and the configuration), and feeds the
    /// watchdog (from this loop only, so a hung loop stops feeding it).
    fn notify_progress(&mut self) {
        if !self.notifier.is_ready()
            && self
                .workers
                .iter()
                .any(|w| w.life.state == workers::WorkerState::Running)
        {
            let status = format!(
                "serving: {} workers, {} table slots",
                self.workers.len(),
                self.table.slot_count()
            );
            self.notifier.ready(&status);
            info!("ready: a worker serves (told the service manager when there is one)");
        }
        self.notifier.watchdog(Instant::now());
    }

    /// Starts a child process (syncd, the audit process) as `prodhcpd ARGS` with its channel
    /// at [`prodhcp_proto::launch::CHANNEL`] and `extra` descriptors, sends it the
    /// configuration text first, and registers the channel with the poll under `token`.
    fn spawn_child(
        &self,
        args: &[std::ffi::OsString],
        extra: &[(
            prodhcp_proto::launch::InheritedFd,
            std::os::fd::BorrowedFd<'_>,
        )],
        token: Token,
    ) -> io::Result<(std::process::Child, std::os::unix::net::UnixStream)> {
        use std::os::fd::AsFd;
        let (ours, theirs) = crate::sys::socketpair()?;
        let mut fds = vec![(prodhcp_proto::launch::CHANNEL, theirs.as_fd())];
        fds.extend_from_slice(extra);
        let child = crate::sys::spawn_worker(&self.exe, args, &fds)?;
        drop(fds);
        drop(theirs);
        let mut stream = std::os::unix::net::UnixStream::from(ours);
        write_frame(&mut stream, FrameKind::Config, self.config_text.as_bytes())?;
        stream.set_nonblocking(true)?;
        let fd = stream.as_raw_fd();
        let _ = self
            .poll
            .registry()
            .register(&mut SourceFd(&fd), token, Interest::READABLE);
        Ok((child, stream))
    }

    /// Every change ring the supervisor has mapped, with its operator-facing name.
    fn named_rings(&self) -> Vec<NamedRing<'_>> {
        let workers = self.workers.iter().map(|w| (worker_owner(w.id), &w.ring));
        let own = [
            (SUPERVISOR_OWNER, &self.sup_ring),
            (IMPORT_OWNER, &self.import_ring),
        ];
        workers
            .chain(own)
            .zip(&self.ring_names)
            .map(|((owner, ring), name)| NamedRing { name, owner, ring })
            .collect()
    }

    /// Logs consumers the ring producers evicted since the last look.
    fn check_evictions(&mut self) {
        let mut watch = std::mem::take(&mut self.evictions);
        watch.check(&self.named_rings());
        self.evictions = watch;
    }

    fn next_timeout(&self) -> Duration {
        let mut t = Duration::from_millis(500);
        if let Some(w) = self.notifier.watchdog_in(Instant::now()) {
            t = t.min(w);
        }
        if let Some(s) = self.scrub.wake_in() {
            t = t.min(s);
        }
        t = t.min(self.observe_wake_in());
        let restarts = self.workers.iter().map(Worker::restart_at);
        let syncd = self.syncd.as_ref().map(syncd::Syncd::restart_at);
        let audit = self.audit.as_ref().map(audit::AuditProc::restart_at);
        for at in restarts.chain(syncd).chain(audit).flatten() {
            t = t.min(at.saturating_duration_since(Instant::now()));
        }
        t
    }

    fn housekeeping(&mut self) {
        self.check_heartbeats();
        self.log_index_give_ups();
        // Turn index tombstones back into empty entries, a slice at a time (at most every
        // 100 ms: while a scrub runs the loop turns every few milliseconds).
        if self.index_cleanup_at.elapsed() >= Duration::from_millis(100) {
            self.index_cleanup_at = Instant::now();
            let cap = self.table.index_capacity();
            let step = 1 << 16;
            let from = self.index_cleanup_pos;
            self.table.index_cleanup(from..(from + step).min(cap));
            self.index_cleanup_pos = if from + step >= cap { 0 } else { from + step };
        }
        self.scrub.tick(
            &self.table,
            SUPERVISOR_OWNER,
            &self.sup_ring,
            self.config.scrub_interval,
        );
        for finding in self.scrub.take_findings() {
            let mut ev = audit::event("scrub");
            ev.finding = Some(finding);
            self.audit_event(ev);
        }
        self.check_evictions();
        self.observe_housekeeping();
        // Close idle control connections.
        let stale: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.since.elapsed() > Duration::from_secs(300))
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            self.close_conn(k);
        }
    }

    /// Warns when client index inserts gave up since the last warning (at most once a minute;
    /// at start for any the table already counts): such clients look new to DISCOVER.
    fn log_index_give_ups(&mut self) {
        let total = self.table.index_give_ups();
        let (logged, at) = self.index_give_ups_logged;
        if total > logged && at.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            warn!(
                new = total - logged,
                total,
                occupied = self.table.index_occupied(),
                capacity = self.table.index_capacity(),
                "client index inserts gave up (probe limit or contention): those clients cannot \
                 be found by identity and may get a second address"
            );
            self.index_give_ups_logged = (total, Some(Instant::now()));
        }
    }

    fn reload(&mut self) {
        let t0 = Instant::now();
        self.notifier.reloading();
        let result = load_config(&self.config_path)
            .map_err(ReloadRefused::Config)
            .and_then(|(c, text)| {
                if !self.config.same_table_files(&c) {
                    return Err(ReloadRefused::LayoutChanged);
                }
                if c.listen_port != self.config.listen_port
                    || c.control_socket != self.config.control_socket
                {
                    return Err(ReloadRefused::ListenerChanged);
                }
                if c.cluster != self.config.cluster {
                    return Err(ReloadRefused::ClusterChanged);
                }
                if c.user != self.config.user {
                    return Err(ReloadRefused::UserChanged);
                }
                let plan = self
                    .table
                    .plan_layout(&table_setup::table_spec(&c))
                    .map_err(ReloadRefused::NoRoom)?;
                if !plan.is_empty() && self.config.cluster.is_some() {
                    return Err(ReloadRefused::ClusterLayout);
                }
                if c.effective_workers() != self.workers.len() && self.config.cluster.is_some() {
                    return Err(ReloadRefused::ClusterWorkers);
                }
                Ok((c, text, plan))
            });
        match result {
            Ok((config, text, plan)) => {
                let validated_us = t0.elapsed().as_micros() as u64;
                let relayout = !plan.is_empty();
                if relayout {
                    self.apply_layout(&plan);
                }
                let previous_text = std::mem::replace(&mut self.config_text, text);
                self.config_wire = prodhcp_config::handoff::encode(&config);
                let previous = std::mem::replace(&mut self.config, config);
                self.subnet_lookup = prodhcp_config::SubnetLookup::build(&self.config);
                self.configure_metrics();
                leases::apply_reservations(
                    &self.table,
                    &self.sup_ring,
                    SUPERVISOR_OWNER,
                    &self.config,
                    Some(&previous),
                );
                // The audit process holds the range directory as it read it at start: after a
                // live pool change it starts again (before any worker uses a new slot: the
                // workers re-read the directory when the configuration below reaches them).
                // (No live change in a cluster: refused above.)
                let resized = self.resize_for_config();
                if previous.audit != self.config.audit
                    || ((relayout || resized) && self.audit.is_some())
                {
                    self.restart_audit_for_reload();
                }
                let sent = self.send_config_to_workers();
                info!(
                    validated_us,
                    sent_us = t0.elapsed().as_micros() as u64,
                    workers = sent.len(),
                    "reload: configuration read and validated, sent to the workers"
                );
                // A reload that supersedes a pending one falls back to what ran before both.
                if self.reload_previous.is_none() {
                    self.reload_previous = Some((previous, previous_text));
                }
                // Numbered after a reload still pending, which this one supersedes.
                let generation = self
                    .reload_track
                    .as_ref()
                    .map_or(self.generation, |t| t.generation)
                    + 1;
                self.reload_track = Some(crate::reload_track::ReloadTracker::new(
                    generation, t0, sent,
                ));
                self.last_reload = ReloadStatus {
                    ok: false,
                    pending: true,
                    message: format!(
                        "generation {generation} sent to the workers; waiting for each to apply it"
                    ),
                    ..ReloadStatus::default()
                };
                self.check_reload();
            }
            Err(e) => {
                warn!(error = %e, "reload refused; keeping the running configuration");
                self.notifier.reloaded(&format!(
                    "reload refused: {e}; serving the previous configuration"
                ));
                self.last_reload = ReloadStatus {
                    ok: false,
                    message: e.to_string(),
                    ..ReloadStatus::default()
                };
            }
        }
    }

    /// Changes the table's range directory live (issue 10): new addresses get slots after the
    /// last one, addresses that leave every pool keep their slots and leases but are no longer
    /// offered. Workers re-read the directory when they apply the configuration sent next.
    fn apply_layout(&mut self, plan: &shm_layout::LayoutPlan) {
        let t0 = Instant::now();
        let busy = self.table.apply_layout(plan, SUPERVISOR_OWNER);
        info!(
            added = plan.added,
            into_pool = plan.into_pool,
            out_of_pool = plan.out_of_pool,
            retired = plan.retired,
            slots = self.table.slot_count(),
            capacity = self.table.geometry().slot_capacity,
            busy_slots_left_to_scrub = busy,
            us = t0.elapsed().as_micros() as u64,
            "pool layout changed live: no lease moved"
        );
    }

    /// Brings the number of workers to what the configuration in force asks for (issue 10);
    /// true when it changed. A failure is logged and leaves the workers as they were.
    fn resize_for_config(&mut self) -> bool {
        let want = self.config.effective_workers();
        if want == self.workers.len() {
            return false;
        }
        match self.resize_workers(want) {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, want, have = self.workers.len(), "could not change the number of workers; keeping them");
                false
            }
        }
    }

    /// Sends the current configuration text to every worker that has a channel; returns the
    /// ids it was sent to.
    fn send_config_to_workers(&mut self) -> Vec<usize> {
        let mut sent = Vec::new();
        for w in &mut self.workers {
            if let Some(ch) = w.channel.as_mut() {
                let _ = ch.set_nonblocking(false);
                match write_frame(ch, FrameKind::Config, &self.config_wire) {
                    Ok(()) => {
                        w.config_unanswered += 1;
                        sent.push(w.id);
                    }
                    Err(e) => {
                        warn!(worker = w.id, error = %e, "could not send the configuration")
                    }
                }
                let _ = ch.set_nonblocking(true);
            }
        }
        sent
    }

    /// Finishes a pending reload once every worker answered: done (the generation moves on)
    /// when all applied it, failed when one refused or some did not answer in time — then the
    /// previous configuration is sent back to every worker, so all serve the same one.
    fn check_reload(&mut self) {
        use crate::reload_track::ReloadProgress;
        let Some(track) = &self.reload_track else {
            return;
        };
        let generation = track.generation;
        match track.progress(Instant::now()) {
            ReloadProgress::Waiting => {}
            ReloadProgress::Applied(took) => {
                self.generation = generation;
                let at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                self.last_reload = ReloadStatus {
                    ok: true,
                    message: format!(
                        "generation {generation} applied by every worker in {} ms",
                        took.as_millis()
                    ),
                    pending: false,
                    applied_at: Some(at),
                    applied_in_ms: Some(took.as_millis() as u64),
                };
                info!(
                    generation,
                    us = took.as_micros() as u64,
                    "configuration reloaded: every worker applied it"
                );
                self.reload_track = None;
                self.reload_previous = None;
                self.notifier
                    .reloaded(&format!("serving: configuration generation {generation}"));
                crate::sys::trim_heap();
                let mut ev = audit::event("reload");
                ev.generation = Some(generation);
                self.audit_event(ev);
            }
            ReloadProgress::Failed(why) => {
                warn!(generation, error = %why, "reload failed; putting the previous configuration back");
                self.reload_track = None;
                self.notifier.reloaded(&format!(
                    "reload of generation {generation} failed: serving the previous configuration"
                ));
                if let Some((config, text)) = self.reload_previous.take() {
                    match self.table.plan_layout(&table_setup::table_spec(&config)) {
                        Ok(plan) if !plan.is_empty() => self.apply_layout(&plan),
                        Ok(_) => {}
                        Err(e) => {
                            warn!(error = %e, "the previous pool layout cannot be put back; the table keeps the new one")
                        }
                    }
                    let failed = std::mem::replace(&mut self.config, config);
                    self.subnet_lookup = prodhcp_config::SubnetLookup::build(&self.config);
                    self.configure_metrics();
                    self.config_text = text;
                    self.config_wire = prodhcp_config::handoff::encode(&self.config);
                    if self.resize_for_config() && self.audit.is_some() {
                        self.restart_audit_for_reload();
                    }
                    leases::apply_reservations(
                        &self.table,
                        &self.sup_ring,
                        SUPERVISOR_OWNER,
                        &self.config,
                        Some(&failed),
                    );
                    self.send_config_to_workers();
                }
                self.last_reload = ReloadStatus {
                    ok: false,
                    message: format!(
                        "generation {generation} failed: {why}; the previous configuration stays in force"
                    ),
                    ..ReloadStatus::default()
                };
            }
        }
    }

    fn shutdown(mut self, code: i32) -> i32 {
        self.stopping = true;
        self.notifier.stopping();
        info!("stopping workers");
        for w in &mut self.workers {
            if let Some(ch) = w.channel.as_mut() {
                let _ = ch.set_nonblocking(false);
                let _ = write_frame(ch, FrameKind::Stop, b"");
            }
            if let Some(c) = w.child.as_ref() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        self.stop_syncd();
        let deadline = Instant::now() + STOP_GRACE;
        for w in &mut self.workers {
            if let Some(mut c) = w.child.take() {
                wait_or_kill(&mut c, deadline);
            }
            recover(&self.table, worker_owner(w.id), Some(&w.ring));
        }
        self.wait_syncd(deadline);
        // After the workers: the audit process reads their last records, then stops.
        self.audit_event(audit::event("stop"));
        self.stop_audit();
        self.wait_audit(Instant::now() + STOP_GRACE);
        for pid in &self.export_children {
            let _ = nix::sys::wait::waitpid(*pid, None);
        }
        recover(&self.table, IMPORT_OWNER, Some(&self.import_ring));
        if let Err(e) = self.table.mark_clean() {
            error!(error = %e, "could not flush the lease table");
        }
        let _ = std::fs::remove_file(&self.config.control_socket);
        info!("prodhcpd stopped");
        code
    }
}
