//! The audit trail's pipeline, without the process around it: change rings → events with
//! sequence numbers → the on-disk spool and the JSON-lines file → the syslog targets.
//!
//! # Order of writes, and why nothing is lost
//!
//! 1. [`Trail::ingest`] reads each ring after the audit consumer's cursor (consumer slot
//!    [`AUDIT_CONSUMER`], kept in the ring file, so it survives restarts), turns each audited
//!    record into an [`AuditEvent`] with the next sequence number, writes the batch's JSON
//!    lines to the file, then its RFC 5424 forms to the spool, `fdatasync`s the spool and only
//!    then advances the ring cursors (a batch is at most a quarter of the spool's bound; the
//!    audit process syncs at most every 50 ms, [`Trail::set_sync_interval`], and reads ahead
//!    of the cursors meanwhile). A crash before the advance leaves the records in the rings;
//!    every spool entry carries the ring and ring sequence it came from, so a restart skips
//!    the ones already spooled ([`Trail::open`]) instead of numbering them twice.
//! 2. [`Trail::deliver`] hands each target the spool entries after its own position. A
//!    reliable target (TCP, TLS) keeps them in the spool until its peer's TCP acknowledged
//!    them; the spool is trimmed behind the slowest reliable target (`Trail::trim`). The
//!    positions are stored in the state file about once a second and at stop, so a restart
//!    sends again at most what was acknowledged since the last store (counted in
//!    [`AuditReport::resent_at_start`]).
//! 3. A full spool: with `audit_strict` the trail stops reading the rings and sets the audit
//!    block in every worker ring ([`shm_layout::Ring::set_audit_block`]): the workers stop
//!    answering (no commit without its record) until the spool has room again. Without it, the
//!    oldest segment is dropped: a loud error with the range of sequence numbers lost,
//!    counted in [`AuditReport::lost_records`] and the state file.
//!
//! A ring that evicted the audit consumer (it lagged a whole ring behind, e.g. the audit
//! process was down that long) has lost records before they had sequence numbers: counted in
//! [`AuditReport::ring_records_lost`] and logged; the consumer registers again at the head.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prodhcp_config::audit::Audit;
use prodhcp_proto::{AuditReport, AuditTargetStatus};
use shm_layout::ring::{ChangeReason, NO_SLOT};
use shm_layout::{ConsumerState, Ring, Table};
use tracing::{error, info, warn};

use crate::event::{ApplianceEvent, AuditEvent, EventKind, Origin};
use crate::rfc5424::Rfc5424;
use crate::spool::{Spool, SpoolCursor, SpoolError};
use crate::state::AuditState;
use crate::transport::Sender;
use crate::{jsonl, rfc3339_ms};

pub use shm_layout::ring::AUDIT_CONSUMER;
/// Most records read from one ring per [`Trail::ingest`] call.
const RING_BATCH: u64 = 4096;
/// Bytes of the spool entry prefix: the ring owner (1 byte) and the ring sequence (8).
const PREFIX: usize = 9;
/// Bytes a spool frame adds to its payload.
const FRAME_OVERHEAD: usize = crate::spool::FRAME_HEADER;
/// Owner byte of an appliance event's spool entry (no ring).
const NO_RING: u8 = 0xff;
/// Most spool entries handed to one target per [`Trail::deliver`] call.
const DELIVER_BATCH: usize = 2048;
/// How often the targets' positions are stored.
const STATE_EVERY: Duration = Duration::from_secs(1);
/// Samples of (seq, time) kept to tell a target's lag in time.
const MAX_TIME_SAMPLES: usize = 65_536;

/// Errors that stop the trail.
#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    /// The spool failed (disk full, damage).
    #[error("audit spool: {0}")]
    Spool(#[from] SpoolError),
    /// The state file failed.
    #[error("audit state: {0}")]
    State(String),
    /// The JSON-lines file failed.
    #[error("audit file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// One ring the trail reads, with its display name.
#[derive(Debug)]
pub struct TrailRing<'r> {
    /// The ring.
    pub ring: &'r Ring,
    /// Whether it is a worker's (the audit block is set on workers' rings).
    pub worker: bool,
}

/// The JSON-lines file, reopened when it was renamed away (logrotate's `create` mode).
#[derive(Debug)]
struct JsonFile {
    path: PathBuf,
    file: File,
    ino: (u64, u64),
    checked: Instant,
    buf: Vec<u8>,
}

impl JsonFile {
    fn open(path: &Path) -> Result<JsonFile, TrailError> {
        let err = |source| TrailError::File {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
            .map_err(err)?;
        let md = file.metadata().map_err(err)?;
        Ok(JsonFile {
            path: path.to_path_buf(),
            file,
            ino: (md.dev(), md.ino()),
            checked: Instant::now(),
            buf: Vec::with_capacity(1 << 20),
        })
    }

    fn push(&mut self, line: &str) {
        self.buf.extend_from_slice(line.as_bytes());
        self.buf.push(b'\n');
    }

    /// Writes the buffered lines; reopens the path when the file was renamed or removed
    /// (checked at most once a second).
    fn flush(&mut self) -> Result<(), TrailError> {
        if self.checked.elapsed() >= Duration::from_secs(1) {
            self.checked = Instant::now();
            let moved = match std::fs::metadata(&self.path) {
                Ok(md) => (md.dev(), md.ino()) != self.ino,
                Err(_) => true,
            };
            if moved {
                let path = self.path.clone();
                let buf = std::mem::take(&mut self.buf);
                *self = JsonFile::open(&path)?;
                self.buf = buf;
                info!(file = %path.display(), "audit file reopened (it was rotated)");
            }
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let r = self.file.write_all(&self.buf);
        self.buf.clear();
        r.map_err(|source| TrailError::File {
            path: self.path.clone(),
            source,
        })
    }
}

/// A target and where it is in the spool.
struct Target {
    sender: Sender,
    cursor: Option<SpoolCursor>,
    /// The `want_after` the cursor was made for.
    cursor_after: u64,
}

/// The pipeline (see the module docs).
pub struct Trail<'r> {
    rings: Vec<TrailRing<'r>>,
    table: &'r Table,
    spool: Spool,
    state: AuditState,
    state_path: PathBuf,
    state_stored: Instant,
    file: Option<JsonFile>,
    targets: Vec<Target>,
    origin: Origin,
    format: Rfc5424,
    offers: bool,
    strict: bool,
    blocking: bool,
    events: u64,
    ring_records_lost: u64,
    resent_at_start: u64,
    /// (seq, unix ms) of the first event of each ingest batch, oldest first.
    times: VecDeque<(u64, u64)>,
    /// Addresses (host order) of the configuration's reservations: a commit of one is
    /// `reservation-used`.
    reserved: std::collections::HashSet<u32>,
    /// Per ring: the last record read (it may be past the cursor, which waits for a sync).
    read_upto: Vec<u64>,
    /// Per ring: where the cursor goes at the next sync.
    to_advance: Vec<Option<u64>>,
    /// [`Trail::set_sync_interval`].
    sync_every: Duration,
    last_sync: Instant,
    /// Spool entries of the current batch not written yet ([`Trail::commit_pending`]).
    pending: Vec<(u64, Vec<u8>)>,
    /// Their bytes, framing included.
    pending_bytes: usize,
}

impl std::fmt::Debug for Trail<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trail")
            .field("last_seq", &self.origin.seq)
            .field("targets", &self.targets.len())
            .field("blocking", &self.blocking)
            .finish_non_exhaustive()
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<'r> Trail<'r> {
    /// Opens the spool, the state file and the JSON-lines file, registers the audit consumer
    /// on every ring, and skips ring records an earlier run already spooled.
    pub fn open(
        audit: &Audit,
        rings: Vec<TrailRing<'r>>,
        table: &'r Table,
        origin: Origin,
        senders: Vec<Sender>,
    ) -> Result<Trail<'r>, TrailError> {
        // Segments of at most an eighth of the bound: the spool frees and drops whole
        // segments, and never its newest one.
        let segment = Spool::DEFAULT_SEGMENT_BYTES.min(audit.spool_max_bytes / 8);
        let (spool, opened) = Spool::open(&audit.spool_dir, audit.spool_max_bytes, segment)?;
        if opened.truncated_bytes > 0 {
            warn!(
                bytes = opened.truncated_bytes,
                "audit spool: a torn entry at its end (a crash mid-write) was cut"
            );
        }
        let state_path = audit.spool_dir.join("state.json");
        let state = AuditState::load(&state_path).map_err(|e| TrailError::State(e.to_string()))?;
        let file = audit.file.as_deref().map(JsonFile::open).transpose()?;
        let last_seq = opened.last_seq.max(state.next_seq_floor.saturating_sub(1));
        let mut targets = Vec::new();
        let mut resent_at_start = 0;
        for mut sender in senders {
            let acked = state.acked.get(&sender.target()).copied();
            // A target never acknowledged before starts at the end of the spool as it is now
            // only if it is best effort; a reliable one gets everything the spool holds.
            let from = match (acked, sender.reliable()) {
                (Some(a), _) => a.min(last_seq),
                (None, true) => opened.first_seq.map_or(last_seq, |f| f.saturating_sub(1)),
                (None, false) => last_seq,
            };
            if sender.reliable() {
                resent_at_start = resent_at_start.max(last_seq - from);
            }
            sender.set_acked(from);
            targets.push(Target {
                sender,
                cursor: None,
                cursor_after: u64::MAX,
            });
        }
        let mut trail = Trail {
            rings,
            table,
            spool,
            state,
            state_path,
            state_stored: Instant::now(),
            file,
            targets,
            origin: Origin {
                seq: last_seq,
                ..origin
            },
            format: Rfc5424 {
                procid: Some(std::process::id()),
                ..Rfc5424::default()
            },
            offers: audit.offers,
            strict: audit.audit_strict,
            blocking: false,
            events: 0,
            ring_records_lost: 0,
            resent_at_start,
            times: VecDeque::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            read_upto: Vec::new(),
            to_advance: Vec::new(),
            sync_every: Duration::ZERO,
            last_sync: Instant::now(),
            reserved: std::collections::HashSet::new(),
        };
        trail.read_upto = vec![0; trail.rings.len()];
        trail.to_advance = vec![None; trail.rings.len()];
        trail.register_and_skip_spooled()?;
        Ok(trail)
    }

    /// Registers the audit consumer on every ring (an evicted or new registration starts at the
    /// head: for an eviction, the records in between are lost and counted) and advances each
    /// cursor past the records the spool already holds (a crash between the spool write and
    /// the cursor advance).
    fn register_and_skip_spooled(&mut self) -> Result<(), TrailError> {
        let mut spooled = [0u64; 256];
        let last = self.spool.last_seq();
        // The entries of the last ingest calls: at most RING_BATCH per ring per call.
        let window = RING_BATCH * (self.rings.len() as u64 + 1) * 2;
        let mut cur = self.spool.cursor_after(last.saturating_sub(window))?;
        let mut out = Vec::new();
        loop {
            out.clear();
            self.spool.read(&mut cur, 4096, 16 << 20, &mut out)?;
            if out.is_empty() {
                break;
            }
            for (_, payload) in &out {
                if payload.len() >= PREFIX && payload[0] != NO_RING {
                    let seq = u64::from_le_bytes(payload[1..9].try_into().unwrap_or_default());
                    let o = usize::from(payload[0]);
                    spooled[o] = spooled[o].max(seq);
                }
            }
        }
        for r in &self.rings {
            let ring = r.ring;
            let before = ring
                .consumers()
                .into_iter()
                .find(|c| c.id == AUDIT_CONSUMER);
            let cursor = ring.register_consumer(AUDIT_CONSUMER).unwrap_or(0);
            match before.map(|c| c.state) {
                Some(ConsumerState::Registered) => {}
                Some(ConsumerState::Evicted) => {
                    let lost = before.map_or(0, |c| cursor.saturating_sub(c.cursor));
                    self.ring_records_lost += lost;
                    error!(
                        ring = ring.owner(),
                        lost,
                        "audit LOSS: the ring evicted the audit reader (it lagged a whole ring \
                         behind); records between its cursor and the head were never audited"
                    );
                }
                None => info!(
                    ring = ring.owner(),
                    head = cursor,
                    "audit reader registered on the ring at its head"
                ),
            }
            let done = spooled[usize::from(ring.owner())];
            if done > cursor && done <= ring.head() {
                let _ = ring.advance_consumer(AUDIT_CONSUMER, done);
                info!(
                    ring = ring.owner(),
                    from = cursor,
                    to = done,
                    "audit: ring records already in the spool are skipped"
                );
            }
        }
        Ok(())
    }

    /// The configuration's reserved addresses: a commit of one is audited as
    /// `reservation-used`.
    pub fn set_reserved(&mut self, reserved: impl IntoIterator<Item = Ipv4Addr>) {
        self.reserved = reserved.into_iter().map(u32::from).collect();
    }

    /// Whether the trail currently blocks the workers (`audit_strict` with a full spool).
    pub fn blocking(&self) -> bool {
        self.blocking
    }

    /// The last sequence number given out.
    pub fn last_seq(&self) -> u64 {
        self.origin.seq
    }

    fn set_block(&mut self, block: bool) {
        if self.blocking == block {
            return;
        }
        self.blocking = block;
        for r in self.rings.iter().filter(|r| r.worker) {
            r.ring.set_audit_block(block);
        }
        if block {
            error!(
                spool_bytes = self.spool.bytes(),
                max = self.spool.max_bytes(),
                "audit spool FULL with audit_strict: the workers stop answering until the \
                 trail can take records again"
            );
        } else {
            warn!("audit spool has room again: the workers answer again");
        }
    }

    /// Makes room for one more entry: with `audit_strict` reports `false` (and blocks);
    /// otherwise drops the oldest segment (a counted, logged loss).
    fn make_room(&mut self, len: usize) -> Result<bool, TrailError> {
        while self.spool.is_full(self.pending_bytes + len) {
            if self.strict {
                self.set_block(true);
                return Ok(false);
            }
            let Some((first, last)) = self.spool.drop_oldest()? else {
                break;
            };
            let n = last - first + 1;
            self.state.lost_records += n;
            self.state.lost_ranges.push((first, last));
            let excess = self.state.lost_ranges.len().saturating_sub(64);
            self.state.lost_ranges.drain(..excess);
            error!(
                first,
                last,
                records = n,
                total_lost = self.state.lost_records,
                "audit LOSS: the spool is full (a reliable target has been unreachable too \
                 long); its oldest records were dropped unsent"
            );
            self.store_state()?;
        }
        Ok(true)
    }

    /// Takes one event: the next sequence number, its JSON line (buffered) and its spool entry
    /// (pending until [`Trail::commit_pending`]).
    fn append(&mut self, owner: u8, ring_seq: u64, mut ev: AuditEvent) {
        self.origin.seq += 1;
        ev.seq = self.origin.seq;
        let msg = self.format.format(&ev);
        let mut payload = Vec::with_capacity(PREFIX + msg.len());
        payload.push(owner);
        payload.extend_from_slice(&ring_seq.to_le_bytes());
        payload.extend_from_slice(msg.as_bytes());
        if let Some(f) = &mut self.file {
            f.push(&jsonl::to_line(&ev));
        }
        self.pending_bytes += payload.len() + FRAME_OVERHEAD;
        self.pending.push((ev.seq, payload));
        self.events += 1;
    }

    /// Writes the pending events: the JSON lines first, then the spool entries, then the
    /// spool's `fdatasync`. In this order a crash leaves no event in the spool that is not
    /// in the file: one written to the file but not to the spool gets the same number again
    /// from the same ring record after a restart (a repeated line, same `seq`, which
    /// `history` ignores), never a gap.
    fn commit_pending(&mut self) -> Result<(), TrailError> {
        if let Some(f) = &mut self.file {
            f.flush()?;
        }
        for (seq, payload) in std::mem::take(&mut self.pending) {
            self.spool.append(seq, &payload)?;
        }
        self.pending_bytes = 0;
        Ok(())
    }

    /// How often the spool is `fdatasync`ed under load ([`Trail::sync_if_due`]); zero (the
    /// default) syncs after every ingest. The ring cursors advance only after a sync that
    /// covers their records, so a longer interval costs nothing but ring lag: measured, the
    /// `fdatasync` per batch was most of the audit process's CPU time at 20k+ leases/s.
    pub fn set_sync_interval(&mut self, every: Duration) {
        self.sync_every = every;
    }

    /// `fdatasync`s the spool and then advances every ring cursor to what it covers.
    pub fn sync_now(&mut self) -> Result<(), TrailError> {
        self.spool.sync()?;
        self.last_sync = Instant::now();
        for (i, upto) in self.to_advance.iter_mut().enumerate() {
            if let Some(u) = upto.take() {
                // Evicted meanwhile: the next ingest counts the loss.
                let _ = self.rings[i].ring.advance_consumer(AUDIT_CONSUMER, u);
            }
        }
        Ok(())
    }

    /// [`Trail::sync_now`] when records wait for it and the sync interval has passed.
    pub fn sync_if_due(&mut self, now: Instant) -> Result<(), TrailError> {
        if self.to_advance.iter().any(Option::is_some)
            && now.saturating_duration_since(self.last_sync) >= self.sync_every
        {
            self.sync_now()?;
        }
        Ok(())
    }

    /// Audits an appliance event (start, stop, reload, role, scrub).
    pub fn appliance(&mut self, event: &ApplianceEvent, time_ms: u64) -> Result<(), TrailError> {
        let ev = AuditEvent::appliance(event, &self.origin, time_ms);
        // An appliance event is never refused for room: it is rare and small, and losing it
        // would hide a restart.
        let _ = self.make_room(512)?;
        self.append(NO_RING, 0, ev);
        self.commit_pending()?;
        self.sync_now()
    }

    /// Reads every ring once (up to a batch each) into the spool and the file, syncs the spool,
    /// then advances the ring cursors. Returns how many records were read.
    pub fn ingest(&mut self) -> Result<u64, TrailError> {
        if self.blocking {
            if self.spool.is_full(4096) {
                return Ok(0);
            }
            self.set_block(false);
        }
        let mut advances = Vec::new();
        let mut read = 0;
        let first_seq = self.origin.seq + 1;
        let mut first_time = None;
        'rings: for i in 0..self.rings.len() {
            let ring = self.rings[i].ring;
            let Some(cursor) = ring
                .consumers()
                .into_iter()
                .find(|c| c.id == AUDIT_CONSUMER)
                .map(|c| (c.state, c.cursor))
            else {
                continue;
            };
            let cursor = match cursor {
                // Read past the cursor already, waiting for the spool's sync.
                (ConsumerState::Registered, c) => c.max(self.read_upto[i]),
                (ConsumerState::Evicted, c) => {
                    let head = ring.register_consumer(AUDIT_CONSUMER).unwrap_or(c);
                    self.read_upto[i] = head;
                    self.to_advance[i] = None;
                    let lost = head.saturating_sub(c);
                    self.ring_records_lost += lost;
                    error!(
                        ring = ring.owner(),
                        lost,
                        "audit LOSS: the ring evicted the audit reader; these records were \
                         never audited"
                    );
                    continue;
                }
            };
            let head = ring.head();
            let upto = head.min(cursor + RING_BATCH);
            let mut done = cursor;
            for seq in cursor + 1..=upto {
                let Some(rec) = ring.read(seq) else {
                    // Overwritten under us: the producer evicted the reader; seen next turn.
                    break;
                };
                let keep = crate::event::is_audited(rec.reason)
                    && (self.offers || rec.reason != ChangeReason::Offer);
                if keep {
                    // A record without a slot (a NAK of an address outside the table) has no
                    // slot address; a NAK's event takes its address from the record itself.
                    let ip = (rec.slot != NO_SLOT)
                        .then(|| self.table.addr_of_slot(rec.slot))
                        .flatten()
                        .map(Ipv4Addr::from);
                    if let Some(mut ev) = AuditEvent::from_record(&rec, None, ip, &self.origin) {
                        if ev.kind == EventKind::Commit
                            && ev.ip.is_some_and(|a| self.reserved.contains(&u32::from(a)))
                        {
                            ev.kind = EventKind::ReservationUsed;
                        }
                        // A batch is at most a quarter of the spool: the room made for it
                        // never drops its own entries.
                        if self.pending_bytes > (self.spool.max_bytes() / 4) as usize {
                            if done > cursor {
                                advances.push((i, done));
                            }
                            break 'rings;
                        }
                        if !self.make_room(512)? {
                            // audit_strict and full: stop here; the rest stays in the ring.
                            if done > cursor {
                                advances.push((i, done));
                            }
                            break 'rings;
                        }
                        first_time.get_or_insert(rec.time_ms);
                        self.append(ring.owner(), seq, ev);
                    }
                }
                done = seq;
                read += 1;
            }
            if done > cursor {
                advances.push((i, done));
            }
        }
        if advances.is_empty() {
            return Ok(0);
        }
        self.commit_pending()?;
        for (i, upto) in advances {
            self.read_upto[i] = upto;
            self.to_advance[i] = Some(upto);
        }
        self.sync_if_due(Instant::now())?;
        if let Some(t) = first_time {
            if self.origin.seq >= first_seq {
                self.times.push_back((first_seq, t));
                if self.times.len() > MAX_TIME_SAMPLES {
                    self.times.pop_front();
                }
            }
        }
        Ok(read)
    }

    /// Hands every target the spool entries after its position (a batch each), polls the
    /// connections, trims the spool behind the reliable targets and stores their positions
    /// about once a second. Returns whether any target took entries.
    pub fn deliver(&mut self, now: Instant) -> Result<bool, TrailError> {
        let mut moved = false;
        let mut out = Vec::new();
        for t in &mut self.targets {
            t.sender.poll(now);
            let after = t.sender.want_after();
            if t.cursor.is_none() || t.cursor_after != after {
                t.cursor = Some(self.spool.cursor_after(after)?);
                t.cursor_after = after;
            }
            let Some(cur) = t.cursor.as_mut() else {
                continue;
            };
            if after >= self.origin.seq {
                continue;
            }
            let mut probe = cur.clone();
            out.clear();
            self.spool
                .read(&mut probe, DELIVER_BATCH, 4 << 20, &mut out)?;
            if out.is_empty() {
                continue;
            }
            let entries: Vec<(u64, &[u8])> = out
                .iter()
                .map(|(s, p)| (*s, p.get(PREFIX..).unwrap_or_default()))
                .collect();
            let taken = t.sender.send(&entries, now);
            if taken == 0 {
                continue;
            }
            moved = true;
            if taken == entries.len() {
                *cur = probe;
            } else {
                // Re-read from the last taken next time.
                t.cursor = None;
            }
            t.cursor_after = t.sender.want_after();
        }
        self.trim()?;
        if self.state_stored.elapsed() >= STATE_EVERY {
            self.store_state()?;
        }
        Ok(moved)
    }

    /// Deletes spool segments every reliable target has settled (acknowledged long enough
    /// before any break that it will not be sent again; every target's position when none is
    /// reliable).
    fn trim(&mut self) -> Result<(), TrailError> {
        let reliable: Vec<u64> = self
            .targets
            .iter()
            .filter(|t| t.sender.reliable())
            .map(|t| t.sender.settled())
            .collect();
        let upto = if reliable.is_empty() {
            self.targets
                .iter()
                .map(|t| t.sender.want_after())
                .min()
                .unwrap_or(self.origin.seq)
        } else {
            reliable.into_iter().min().unwrap_or(0)
        };
        self.spool.trim(upto)?;
        Ok(())
    }

    /// Stores the targets' acknowledged positions and the loss counters.
    pub fn store_state(&mut self) -> Result<(), TrailError> {
        for t in &self.targets {
            self.state.acked.insert(t.sender.target(), t.sender.acked());
        }
        self.state.next_seq_floor = self.origin.seq + 1;
        self.state
            .store(&self.state_path)
            .map_err(|e| TrailError::State(e.to_string()))?;
        self.state_stored = Instant::now();
        Ok(())
    }

    /// Records not read yet over every ring.
    pub fn ring_lag(&self) -> u64 {
        self.rings
            .iter()
            .map(|r| {
                r.ring
                    .consumers()
                    .into_iter()
                    .find(|c| c.id == AUDIT_CONSUMER)
                    .map_or(0, |c| c.lag)
            })
            .sum()
    }

    /// Unix ms of the oldest event with a sequence number above `acked`, as sampled.
    fn time_after(&self, acked: u64) -> Option<u64> {
        let i = self.times.partition_point(|(s, _)| *s <= acked);
        // The sample before covers a batch that may hold acked+1.
        let i = i.saturating_sub(1);
        self.times
            .get(i)
            .filter(|_| acked < self.origin.seq)
            .map(|(_, t)| *t)
    }

    /// The report for the supervisor (`prodhcpctl audit status`).
    pub fn report(&self) -> AuditReport {
        let now = unix_ms();
        AuditReport {
            last_seq: self.origin.seq,
            events: self.events,
            ring_lag_records: self.ring_lag(),
            spool_bytes: self.spool.bytes(),
            spool_max_bytes: self.spool.max_bytes(),
            spool_first_seq: self.spool.first_seq(),
            file: self.file.as_ref().map(|f| f.path.display().to_string()),
            lost_records: self.state.lost_records,
            lost_ranges: self.state.lost_ranges.clone(),
            ring_records_lost: self.ring_records_lost,
            strict_blocking: self.blocking,
            resent_at_start: self.resent_at_start,
            targets: self
                .targets
                .iter()
                .map(|t| {
                    let s = t.sender.status();
                    let lag_records = self.origin.seq.saturating_sub(s.acked_seq);
                    AuditTargetStatus {
                        lag_ms: if lag_records == 0 {
                            0
                        } else {
                            self.time_after(s.acked_seq)
                                .map_or(0, |t| now.saturating_sub(t))
                        },
                        target: s.target,
                        reliable: s.reliable,
                        connected: s.connected,
                        acked_seq: s.acked_seq,
                        sent_seq: s.sent_seq,
                        lag_records,
                        reconnects: s.reconnects,
                        resent: s.resent,
                        dropped: s.dropped,
                        last_error: s.last_error,
                    }
                })
                .collect(),
        }
    }

    /// Clears the audit block (at stop: the supervisor also clears it when the audit process
    /// is gone).
    pub fn release_block(&mut self) {
        self.set_block(false);
    }

    /// A one-line summary for the log.
    pub fn summary(&self) -> String {
        format!(
            "last seq {} ({}), spool {} bytes",
            self.origin.seq,
            self.times
                .back()
                .map_or_else(|| "-".to_string(), |(_, t)| rfc3339_ms(*t)),
            self.spool.bytes()
        )
    }
}

#[cfg(test)]
mod json_file_tests {
    use super::*;

    #[test]
    fn a_renamed_file_is_reopened_at_its_path_and_no_line_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log/audit.jsonl");
        let mut f = JsonFile::open(&path).unwrap();
        f.push("{\"seq\":1}");
        f.flush().unwrap();
        // logrotate's `create`: rename, then lines keep coming.
        let rotated = dir.path().join("log/audit.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        f.push("{\"seq\":2}");
        // Within the second the old file still gets lines (the check is once a second).
        f.checked = Instant::now() - Duration::from_secs(2);
        f.push("{\"seq\":3}");
        f.flush().unwrap();
        f.push("{\"seq\":4}");
        f.flush().unwrap();
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(old, "{\"seq\":1}\n");
        assert_eq!(new, "{\"seq\":2}\n{\"seq\":3}\n{\"seq\":4}\n");
    }
}

#[cfg(test)]
mod tests;
