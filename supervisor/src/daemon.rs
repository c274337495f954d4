//! The supervisor: configuration, the lease table's life cycle, worker processes, the control
//! socket. Single-threaded; signal handlers only queue signals that the mio loop acts on.
//!
//! Architecture Invariant: the supervisor never starts a thread (it forks), and it never serves
//! DHCP itself.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use prodhcp_config::Config;
use prodhcp_worker::channel::{write_frame, FrameKind, FrameReader, ReadOutcome};
use prodhcp_worker::counters::Counters as WorkerCounterView;
use prodhcp_worker::run::layout_of;
use shm_layout::{
    worker_owner, ChangeContext, ChangeReason, Recovery, Ring, SlotImage, Table, TableOpenError,
    IMPORT_OWNER, SUPERVISOR_OWNER,
};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use tracing::{error, info, warn};

use crate::consumers::{self, EvictionWatch, NamedRing};
use crate::control_server::{self, ConnEvent, Connection};
use crate::leases;
use crate::scrub::ScrubRunner;
use crate::sys;
use prodhcp_proto::{
    self as proto, Command, ImportResult, IndexStatus, ReloadStatus, Response, StatsData,
    StatusData, TableStatus, WorkerCounters, WorkerStatus,
};

/// Documented exit codes of `prodhcpd`.
pub mod exit {
    /// Clean stop.
    pub const OK: i32 = 0;
    /// Runtime failure (sockets, control socket, fatal I/O).
    pub const RUNTIME: i32 = 1;
    /// Bad configuration or usage.
    pub const CONFIG: i32 = 2;
    /// The lease table cannot be used (corrupt, truncated, locked, unsafe).
    pub const TABLE: i32 = 3;
}

/// A fatal start-up or runtime error with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Fatal {
    /// Exit code.
    pub code: i32,
    /// Message for the operator.
    pub message: String,
}

impl Fatal {
    fn runtime(what: &str, e: impl std::fmt::Display) -> Fatal {
        Fatal {
            code: exit::RUNTIME,
            message: format!("{what}: {e}"),
        }
    }
    fn table(e: impl std::fmt::Display) -> Fatal {
        Fatal {
            code: exit::TABLE,
            message: e.to_string(),
        }
    }
}

const SIGNALS: Token = Token(0);
const LISTENER: Token = Token(1);
const CHANNEL_BASE: usize = 1000;
const CONN_BASE: usize = 100_000;
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// A running worker whose heartbeat does not move for this long is killed and restarted.
const HANG_AFTER: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerState {
    Starting,
    Running,
    Backoff(Instant),
    Stopped,
}

impl WorkerState {
    fn name(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Running => "running",
            WorkerState::Backoff(_) => "restarting",
            WorkerState::Stopped => "stopped",
        }
    }
}

#[derive(Debug)]
struct Worker {
    id: usize,
    child: Option<Child>,
    channel: Option<UnixStream>,
    reader: FrameReader,
    state: WorkerState,
    restarts: u64,
    started: Instant,
    backoff: Duration,
    ring: Ring,
    /// Last heartbeat counter value seen and when it last changed.
    heartbeat: (u64, Instant),
    /// Configuration frames sent that the worker has not answered yet. The channel keeps
    /// order, so only the answer that brings this to 0 is about the latest configuration.
    config_unanswered: u32,
}

/// The running supervisor.
pub struct Supervisor {
    config_path: PathBuf,
    config: Config,
    config_text: String,
    generation: u64,
    last_reload: ReloadStatus,
    table: Table,
    clean_start: bool,
    sockets: Vec<OwnedFd>,
    workers: Vec<Worker>,
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
}

/// Reads and validates a configuration file (exit code 2 on failure).
pub fn load_config(path: &Path) -> Result<(Config, String), Fatal> {
    let text = std::fs::read_to_string(path).map_err(|e| Fatal {
        code: exit::CONFIG,
        message: format!("{}: {e}", path.display()),
    })?;
    let config = prodhcp_config::parse(&text).map_err(|e| Fatal {
        code: exit::CONFIG,
        message: format!("{}: {e}", path.display()),
    })?;
    Ok((config, text))
}

/// Opens the table the configuration needs: creates it when missing, migrates it when it was
/// built for another pool layout. Returns the table and whether it was cleanly closed.
pub fn open_table(config: &Config) -> Result<(Table, bool), Fatal> {
    let path = &config.table_file;
    let spec = layout_of(config);
    let t0 = Instant::now();
    let table = match Table::open_for(path, &spec) {
        Ok(t) => t,
        Err(TableOpenError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            let t = Table::create(path, &spec).map_err(Fatal::table)?;
            info!(
                path = %path.display(),
                slots = t.slot_count(),
                bytes = t.geometry().file_bytes(),
                ms = t0.elapsed().as_millis() as u64,
                "created lease table"
            );
            t
        }
        Err(TableOpenError::LayoutMismatch { .. }) => migrate(config, &spec)?,
        Err(e) => return Err(Fatal::table(e)),
    };
    lock_with_retry(&table)?;
    let (clean, same_boot) = table.shutdown_state();
    Ok((table, clean || same_boot))
}

fn lock_with_retry(table: &Table) -> Result<(), Fatal> {
    // Workers of a previous supervisor do not hold the lock (they get SIGKILL from the kernel
    // when it goes, and `owners::end_live_writers` ends any that outlived it); another live
    // supervisor does.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match table.lock_exclusive() {
            Ok(()) => return Ok(()),
            Err(e @ TableOpenError::Locked { .. }) if Instant::now() >= deadline => {
                return Err(Fatal::table(e))
            }
            Err(TableOpenError::Locked { .. }) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(Fatal::table(e)),
        }
    }
}

/// Builds a table for the new layout and carries every lease whose address still exists into
/// it; the old file is kept as `<table>.prev`.
fn migrate(config: &Config, spec: &shm_layout::LayoutSpec) -> Result<Table, Fatal> {
    let path = &config.table_file;
    let old = Table::open(path).map_err(Fatal::table)?;
    lock_with_retry(&old)?;
    crate::owners::end_live_writers(&old).map_err(Fatal::table)?;
    let tmp = with_suffix(path, ".migrating");
    let _ = std::fs::remove_file(&tmp);
    let new = Table::create(&tmp, spec).map_err(Fatal::table)?;
    let ring = Ring::open_or_create(
        &config.ring_file(SUPERVISOR_OWNER),
        SUPERVISOR_OWNER,
        u64::from(config.ring_capacity),
    )
    .map_err(Fatal::table)?;
    let (mut kept, mut dropped) = (0u64, 0u64);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    for slot in 0..old.slot_count() {
        let Ok(img) = old.read(slot) else { continue };
        if !leases::exported(&img) {
            continue;
        }
        let Some(addr) = old.addr_of_slot(slot) else {
            continue;
        };
        let Some(ns) = new.slot_of_addr(addr) else {
            dropped += 1;
            continue;
        };
        let ok = shm_layout::Writer::new(&new, SUPERVISOR_OWNER, &ring).update(
            ns,
            &SlotImage::PRISTINE,
            &img,
            &ChangeContext {
                reason: ChangeReason::Migrate,
                time_ms: now_ms,
                context: b"",
            },
        );
        if ok.is_ok() {
            kept += 1;
        }
    }
    new.mark_clean().map_err(Fatal::table)?;
    drop(new);
    let prev = with_suffix(path, ".prev");
    std::fs::rename(path, &prev).map_err(|e| Fatal::table(format!("keeping old table: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| Fatal::table(format!("installing new table: {e}")))?;
    warn!(kept, dropped, previous = %prev.display(), "pool layout changed: migrated the lease table");
    drop(old);
    Table::open_for(path, spec).map_err(Fatal::table)
}

/// `path` with `suffix` appended to its file name (`leases.table` → `leases.table.prev`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn recover(table: &Table, owner: u8, ring: Option<&Ring>) {
    match table.recover_owner(owner, ring) {
        Recovery::Nothing | Recovery::IntentCleared => {}
        r => warn!(owner, outcome = ?r, "recovered a change left half done by a dead writer"),
    }
}

fn ensure_private_dir(dir: &Path, mode: u32) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

impl Supervisor {
    /// Loads everything and starts the workers.
    pub fn start(config_path: &Path) -> Result<Supervisor, Fatal> {
        let t0 = Instant::now();
        let (config, config_text) = load_config(config_path)?;
        ensure_private_dir(&config.state_dir, 0o750)
            .map_err(|e| Fatal::runtime(&format!("state dir {}", config.state_dir.display()), e))?;
        let (table, clean) = open_table(&config)?;
        let cap = u64::from(config.ring_capacity);
        let open_ring = |owner: u8| {
            Ring::open_or_create(&config.ring_file(owner), owner, cap).map_err(Fatal::table)
        };
        let sup_ring = open_ring(SUPERVISOR_OWNER)?;
        let import_ring = open_ring(IMPORT_OWNER)?;
        let n = config.effective_workers();
        let mut rings = Vec::with_capacity(n);
        for id in 0..n {
            rings.push(open_ring(worker_owner(id))?);
        }
        // End every previous writer that still runs (an orphaned worker), then finish or undo
        // their changes: we hold the lock, so no other supervisor starts new ones.
        crate::owners::end_live_writers(&table).map_err(Fatal::table)?;
        for owner in 1..=127u8 {
            let ring = if owner == SUPERVISOR_OWNER {
                Some(&sup_ring)
            } else if owner == IMPORT_OWNER {
                Some(&import_ring)
            } else {
                (1..=n as u8)
                    .contains(&owner)
                    .then(|| &rings[usize::from(owner) - 1])
            };
            recover(&table, owner, ring);
        }
        let (was_clean, same_boot) = table.shutdown_state();
        if !was_clean && !same_boot {
            // Power loss or a reboot without a clean stop: pages may be torn. Check everything.
            let t = Instant::now();
            let rep = table.repair(SUPERVISOR_OWNER, &sup_ring);
            warn!(
                corrupt = rep.corrupt.len(),
                locked = rep.locked.len(),
                bitmap_fixed = rep.bitmap_mismatch.len(),
                ms = t.elapsed().as_millis() as u64,
                "unclean shutdown on an earlier boot: checked every slot"
            );
        }
        table.mark_open();
        // On disk before any worker writes: after a power cut the next start must see
        // "unclean, another boot" and repair (see shm_layout::durable).
        if let Err(e) = table.sync_header() {
            warn!(error = %e, "could not write the lease table header to disk");
        }
        let (reserved, _) =
            leases::apply_reservations(&table, &sup_ring, SUPERVISOR_OWNER, &config, None);
        if reserved > 0 {
            info!(reserved, "marked reserved addresses");
        }

        let sockets = prodhcp_worker::sys::reuseport_group(config.listen_port, n)
            .map_err(|e| Fatal::runtime(&format!("UDP port {}", config.listen_port), e))?;
        if let Some(dir) = config.control_socket.parent() {
            ensure_private_dir(dir, 0o750)
                .map_err(|e| Fatal::runtime(&format!("control socket dir {}", dir.display()), e))?;
        }
        let _ = std::fs::remove_file(&config.control_socket);
        let listener = UnixListener::bind(&config.control_socket).map_err(|e| {
            Fatal::runtime(
                &format!("control socket {}", config.control_socket.display()),
                e,
            )
        })?;
        let _ = std::fs::set_permissions(
            &config.control_socket,
            std::fs::Permissions::from_mode(0o660),
        );
        listener
            .set_nonblocking(true)
            .map_err(|e| Fatal::runtime("control socket", e))?;
        let poll = Poll::new().map_err(|e| Fatal::runtime("poll", e))?;
        let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT, SIGCHLD])
            .map_err(|e| Fatal::runtime("signals", e))?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(|e| Fatal::runtime("poll", e))?;
        let lfd = listener.as_raw_fd();
        poll.registry()
            .register(&mut SourceFd(&lfd), LISTENER, Interest::READABLE)
            .map_err(|e| Fatal::runtime("poll", e))?;
        let exe = std::env::current_exe().map_err(|e| Fatal::runtime("own executable", e))?;
        let workers = rings
            .into_iter()
            .enumerate()
            .map(|(id, ring)| Worker {
                id,
                child: None,
                channel: None,
                reader: FrameReader::default(),
                state: WorkerState::Stopped,
                restarts: 0,
                started: Instant::now(),
                backoff: Duration::from_millis(100),
                ring,
                heartbeat: (0, Instant::now()),
                config_unanswered: 0,
            })
            .collect();
        let mut sup = Supervisor {
            config_path: config_path.to_path_buf(),
            config,
            config_text,
            generation: 1,
            last_reload: ReloadStatus {
                ok: true,
                message: "initial configuration".into(),
                ..ReloadStatus::default()
            },
            table,
            clean_start: clean,
            sockets,
            workers,
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
        };
        sup.check_evictions();
        for id in 0..sup.workers.len() {
            sup.spawn(id);
        }
        info!(
            workers = n,
            slots = sup.table.slot_count(),
            clean_start = clean,
            ms = t0.elapsed().as_millis() as u64,
            "prodhcpd started"
        );
        Ok(sup)
    }

    fn spawn(&mut self, id: usize) {
        let w = &mut self.workers[id];
        let result = (|| -> io::Result<(Child, UnixStream)> {
            let (ours, theirs) = sys::socketpair()?;
            let child = sys::spawn_worker(
                &self.exe,
                id,
                self.sockets.len(),
                &self.sockets[id],
                &theirs,
            )?;
            drop(theirs);
            let mut stream = UnixStream::from(ours);
            write_frame(&mut stream, FrameKind::Config, self.config_text.as_bytes())?;
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
                w.child = Some(child);
                w.channel = Some(stream);
                w.reader = FrameReader::default();
                w.state = WorkerState::Starting;
                w.started = Instant::now();
                w.heartbeat = (u64::MAX, Instant::now());
                w.config_unanswered = 1;
            }
            Err(e) => {
                error!(worker = id, error = %e, "cannot start worker");
                w.state = WorkerState::Backoff(Instant::now() + w.backoff);
                w.backoff = (w.backoff * 2).min(MAX_BACKOFF);
            }
        }
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
            self.check_reload();
            self.housekeeping();
        }
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
        if let Some(s) = self.scrub.wake_in() {
            t = t.min(s);
        }
        for w in &self.workers {
            if let WorkerState::Backoff(at) = w.state {
                t = t.min(at.saturating_duration_since(Instant::now()));
            }
        }
        t
    }

    /// Kills a running worker whose heartbeat has not moved for [`HANG_AFTER`] (stopped with
    /// SIGSTOP, stuck in the kernel, spinning): its share of the clients is steered to its
    /// socket, so a hung worker would silently starve them. It is restarted like a crashed one.
    fn check_heartbeats(&mut self) {
        for w in &mut self.workers {
            if w.state != WorkerState::Running {
                continue;
            }
            let beat = WorkerCounterView::new(self.table.counters(worker_owner(w.id)))
                .get(prodhcp_worker::counters::Counter::Heartbeat);
            if beat != w.heartbeat.0 {
                w.heartbeat = (beat, Instant::now());
            } else if w.heartbeat.1.elapsed() > HANG_AFTER {
                if let Some(c) = w.child.as_mut() {
                    warn!(
                        worker = w.id,
                        pid = c.id(),
                        "worker stopped answering its heartbeat; killing it"
                    );
                    let _ = c.kill();
                }
                w.heartbeat = (beat, Instant::now());
            }
        }
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
        self.check_evictions();
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

    fn reap(&mut self) {
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
                w.state = WorkerState::Stopped;
                continue;
            }
            if w.started.elapsed() > HEALTHY_AFTER {
                w.backoff = Duration::from_millis(100);
            }
            warn!(worker = id, %status, retry_in_ms = w.backoff.as_millis() as u64, "worker died; restarting it");
            w.state = WorkerState::Backoff(Instant::now() + w.backoff);
            w.backoff = (w.backoff * 2).min(MAX_BACKOFF);
            w.restarts += 1;
        }
    }

    fn respawn_due(&mut self) {
        if self.stopping {
            return;
        }
        for id in 0..self.workers.len() {
            if let WorkerState::Backoff(at) = self.workers[id].state {
                if Instant::now() >= at {
                    self.spawn(id);
                }
            }
        }
    }

    fn worker_channel(&mut self, id: usize) {
        let Some(w) = self.workers.get_mut(id) else {
            return;
        };
        let Some(ch) = w.channel.as_mut() else { return };
        loop {
            match w.reader.poll(ch) {
                Ok(ReadOutcome::Frame(FrameKind::Applied, _)) => {
                    if w.state == WorkerState::Starting {
                        w.state = WorkerState::Running;
                    }
                    w.config_unanswered = w.config_unanswered.saturating_sub(1);
                    // The answer to the latest text (a worker started meanwhile was given it).
                    if let (0, Some(t)) = (w.config_unanswered, self.reload_track.as_mut()) {
                        t.applied(id);
                    }
                }
                Ok(ReadOutcome::Frame(FrameKind::Rejected, msg)) => {
                    let msg = String::from_utf8_lossy(&msg);
                    warn!(worker = id, message = %msg, "worker refused the configuration");
                    w.config_unanswered = w.config_unanswered.saturating_sub(1);
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

    fn reload(&mut self) {
        let t0 = Instant::now();
        let result = load_config(&self.config_path).and_then(|(c, text)| {
            if !self.config.same_table_layout(&c) {
                return Err(Fatal {
                    code: exit::CONFIG,
                    message: "the new configuration changes the pool layout, the table file, the ring capacity or the number of workers; that needs a restart (the lease table is migrated at start)".into(),
                });
            }
            if c.listen_port != self.config.listen_port || c.control_socket != self.config.control_socket {
                return Err(Fatal {
                    code: exit::CONFIG,
                    message: "listen_port and control_socket cannot change on reload; restart instead".into(),
                });
            }
            Ok((c, text))
        });
        match result {
            Ok((config, text)) => {
                let previous_text = std::mem::replace(&mut self.config_text, text);
                let previous = std::mem::replace(&mut self.config, config);
                leases::apply_reservations(
                    &self.table,
                    &self.sup_ring,
                    SUPERVISOR_OWNER,
                    &self.config,
                    Some(&previous),
                );
                let sent = self.send_config_to_workers();
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
                warn!(error = %e.message, "reload refused; keeping the running configuration");
                self.last_reload = ReloadStatus {
                    ok: false,
                    message: e.message,
                    ..ReloadStatus::default()
                };
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
                match write_frame(ch, FrameKind::Config, self.config_text.as_bytes()) {
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
            }
            ReloadProgress::Failed(why) => {
                warn!(generation, error = %why, "reload failed; putting the previous configuration back");
                self.reload_track = None;
                if let Some((config, text)) = self.reload_previous.take() {
                    let failed = std::mem::replace(&mut self.config, config);
                    self.config_text = text;
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

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.conns.len() >= control_server::MAX_CONNECTIONS {
                        drop(stream);
                        continue;
                    }
                    let Ok(conn) = Connection::new(stream) else {
                        continue;
                    };
                    let key = self.next_conn;
                    self.next_conn = self.next_conn.wrapping_add(1) % 1_000_000;
                    let fd = conn.stream.as_raw_fd();
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut SourceFd(&fd),
                            Token(CONN_BASE + key),
                            Interest::READABLE,
                        )
                        .is_ok()
                    {
                        self.conns.insert(key, conn);
                        self.serve_conn(key);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    return;
                }
            }
        }
    }

    fn close_conn(&mut self, key: usize) {
        if let Some(c) = self.conns.remove(&key) {
            let fd = c.stream.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
    }

    fn serve_conn(&mut self, key: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(&key) else {
                return;
            };
            match conn.poll() {
                ConnEvent::Pending => return,
                ConnEvent::Closed => return self.close_conn(key),
                ConnEvent::Error(msg) => {
                    let _ = conn.respond(&Response::error(msg));
                    return self.close_conn(key);
                }
                ConnEvent::Request(req) => {
                    let peer = conn.peer_uid;
                    if control_server::is_mutating(&req.command)
                        && !matches!(peer, Some(0))
                        && peer != Some(nix::unistd::geteuid().as_raw())
                    {
                        let conn = self.conns.get_mut(&key);
                        if let Some(c) = conn {
                            let _ = c.respond(&Response::error(
                                "permission denied: importing leases needs root or the daemon's user",
                            ));
                        }
                        continue;
                    }
                    if matches!(req.command, Command::Export) {
                        self.export(key);
                        return;
                    }
                    let resp = self.answer(req.command);
                    let ok = self
                        .conns
                        .get_mut(&key)
                        .map(|c| c.respond(&resp).is_ok())
                        .unwrap_or(false);
                    if !ok {
                        return self.close_conn(key);
                    }
                }
            }
        }
    }

    fn export(&mut self, key: usize) {
        let Some(conn) = self.conns.remove(&key) else {
            return;
        };
        let fd = conn.stream.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        let table = &self.table;
        let config = &self.config;
        let mut stream = conn.stream;
        let _ = stream.set_nonblocking(false);
        let child = sys::fork_child(|| {
            let leases = (0..table.slot_count()).filter_map(|slot| {
                let img = table.read(slot).ok()?;
                if !leases::exported(&img) {
                    return None;
                }
                leases::record_of(table, config, slot, &img)
            });
            match control_server::write_export(&mut stream, leases) {
                Ok(_) => 0,
                Err(_) => 1,
            }
        });
        match child {
            Ok(pid) => self.export_children.push(pid),
            Err(e) => warn!(error = %e, "cannot fork the export writer"),
        }
    }

    fn answer(&mut self, cmd: Command) -> Response {
        let ok = |r: Result<Response, proto::ProtoError>| {
            r.unwrap_or_else(|e| Response::error(e.to_string()))
        };
        match cmd {
            Command::Status => ok(Response::ok(&self.status())),
            Command::Stats => ok(Response::ok(&self.stats())),
            Command::Lease { address } => {
                let Some(slot) = self.table.slot_of_addr(u32::from(address)) else {
                    return Response::error(format!(
                        "{address} is in no configured pool or reservation"
                    ));
                };
                match self.table.read(slot) {
                    Ok(img) => match leases::record_of(&self.table, &self.config, slot, &img) {
                        Some(r) => ok(Response::ok(&r)),
                        None => Response::error("no such slot"),
                    },
                    Err(e) => Response::error(format!("{address}: {e}")),
                }
            }
            Command::LeasesByMac { mac } => ok(Response::ok(&leases::leases_by_mac(
                &self.table,
                &self.config,
                mac.as_bytes(),
            ))),
            Command::Import { leases, force } => {
                let head = self.import_ring.head();
                let r: ImportResult = leases::import_batch(
                    &self.table,
                    &self.import_ring,
                    IMPORT_OWNER,
                    &leases,
                    force,
                );
                self.sync_import(head);
                ok(Response::ok(&r))
            }
            Command::Export => Response::error("export is streamed"),
            Command::Consumers => ok(Response::ok(&consumers::list(&self.named_rings()))),
            Command::ConsumerDrop { ring, id } => {
                match consumers::drop_consumer(&self.named_rings(), &ring, id) {
                    Ok(d) => ok(Response::ok(&d)),
                    Err(e) => Response::error(e),
                }
            }
        }
    }

    /// With `durability: "power"`, writes what an import batch changed to disk before it is
    /// acknowledged (see `shm_layout::durable`).
    fn sync_import(&self, head_before: u64) {
        if self.config.durability == prodhcp_config::Durability::Power {
            if let Err(e) =
                shm_layout::durable::sync_changes(&self.table, &self.import_ring, head_before)
            {
                warn!(error = %e, "could not write imported leases to disk");
            }
        }
    }

    fn status(&self) -> StatusData {
        StatusData {
            pid: std::process::id(),
            state: if self.stopping { "stopping" } else { "running" }.into(),
            config_generation: self.generation,
            uptime_secs: self.started.elapsed().as_secs(),
            last_reload: self.last_reload.clone(),
            workers: self
                .workers
                .iter()
                .map(|w| WorkerStatus {
                    id: w.id as u32,
                    pid: w.child.as_ref().map(|c| c.id()),
                    state: w.state.name().into(),
                    restarts: w.restarts,
                })
                .collect(),
            table: TableStatus {
                path: self.table.path().display().to_string(),
                slots: u64::from(self.table.slot_count()),
                clean_start: self.clean_start,
                index: IndexStatus {
                    occupied: self.table.index_occupied(),
                    capacity: self.table.index_capacity() as u64,
                    give_ups: self.table.index_give_ups(),
                },
            },
            scrub: self.scrub.status(&self.table),
        }
    }

    fn stats(&self) -> StatsData {
        let mut total = proto::Counters::default();
        let mut per = Vec::new();
        for w in &self.workers {
            let view = WorkerCounterView::new(self.table.counters(worker_owner(w.id)));
            let c = proto::Counters::from_catalogue(|counter| view.get(counter));
            total.add(&c);
            per.push(WorkerCounters {
                id: w.id as u32,
                counters: c,
            });
        }
        StatsData {
            total,
            workers: per,
            pools: leases::pool_stats(&self.table, &self.config),
        }
    }

    fn shutdown(mut self, code: i32) -> i32 {
        self.stopping = true;
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
        let deadline = Instant::now() + Duration::from_secs(5);
        for w in &mut self.workers {
            if let Some(mut c) = w.child.take() {
                loop {
                    match c.try_wait() {
                        Ok(Some(_)) | Err(_) => break,
                        Ok(None) if Instant::now() >= deadline => {
                            let _ = c.kill();
                            let _ = c.wait();
                            break;
                        }
                        Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            }
            recover(&self.table, worker_owner(w.id), Some(&w.ring));
        }
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
