//! The lease table: open/create, slot reads and crash-safe writes, free bitmaps, client index,
//! per-owner intent records and their recovery.
//!
//! # Write protocol (one slot, one writer at a time)
//!
//! 1. The writer records its *intent* in its own owner record: slot, the image it read (old),
//!    the image it will write (new) and the ring sequence number the change record will get.
//! 2. It takes the slot's lock by a compare-and-swap of word 0 from `version<<8` (unlocked, the
//!    version it read) to `version<<8 | owner`. A failed CAS means somebody else changed or holds
//!    the slot: the writer gives up (no waiting, so nobody can deadlock on a dead writer).
//! 3. It writes words 1–7, then sets or clears the slot's free-bitmap bit to match the new state
//!    (the bit of a slot only ever changes while its lock is held), updates the client index, and
//!    appends the change record to its ring.
//! 4. It unlocks by storing `(version+1)<<8`, and clears its intent.
//!
//! If the writer dies at any instruction, [`Table::recover_owner`] (run by the supervisor once the
//! writer is known dead) finds at most one slot locked by it: when the change record was published
//! it rolls the slot forward to the new image, otherwise back to the old one, fixes that slot's
//! bitmap bit and unlocks it. A reply is only sent after step 4, so a rolled-back change was never
//! acknowledged to a client, and a rolled-forward one is in the ring for replication and audit.
//!
//! Readers use the version word as a seqlock: a read that sees an owner in word 0, or a different
//! word 0 after reading the rest, is retried, and gives [`ReadError::Busy`] after a bounded
//! number of tries.

use std::fs::{File, OpenOptions};
use std::hash::Hasher;
use std::io;
use std::ops::Range;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU64, Ordering};

use crate::layout::{
    hw, Geometry, LayoutSpec, RangeSpec, HEADER_WORDS, INIT_MARK, LAYOUT_VERSION, MAGIC,
    MAX_OWNERS, MAX_RANGES, MAX_SLOTS, OWNER_COUNTERS_START, OWNER_WORDS,
};
use crate::mapping::{preallocate, write_zeros, WordMapping};
use crate::ring::{ChangeReason, RecordInput, Ring, RingFullError};
use crate::slot::{ClientKey, LeaseState, SlotDecodeError, SlotImage, SLOT_WORDS};

/// Errors opening or creating a table file.
#[derive(Debug, thiserror::Error)]
pub enum TableOpenError {
    /// I/O error.
    #[error("lease table {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The file is not a lease table, is of another layout version, is truncated or corrupt.
    #[error("lease table {path} is unusable: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The table was built for another pool layout.
    #[error("lease table {path} was built for another pool layout (fingerprint {found:016x}, configuration needs {expected:016x})")]
    LayoutMismatch {
        /// The file.
        path: PathBuf,
        /// Fingerprint in the file.
        found: u64,
        /// Fingerprint of the configuration.
        expected: u64,
    },
    /// Another process holds the table's lock.
    #[error("lease table {path} is locked by another prodhcpd")]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// Unsafe file permissions or type.
    #[error("lease table {path}: {reason}")]
    Unsafe {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The requested layout is invalid.
    #[error("invalid pool layout: {0}")]
    Layout(#[from] crate::layout::LayoutError),
}

/// Why a slot could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// A writer holds the slot (or died holding it and recovery has not run yet).
    #[error("slot is being written")]
    Busy,
    /// The slot fails its checksum or holds invalid values.
    #[error("slot is corrupt: {0}")]
    Corrupt(SlotDecodeError),
    /// No such slot.
    #[error("slot index out of range")]
    OutOfRange,
}

/// Why a slot update was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// The slot changed since it was read, or another writer holds it.
    #[error("slot changed or is locked by another writer")]
    Conflict,
    /// The change record could not be appended (a consumer lags a whole ring behind).
    #[error(transparent)]
    RingFull(#[from] RingFullError),
    /// No such slot, or an owner id out of range.
    #[error("slot or owner out of range")]
    OutOfRange,
}

/// What recovery did for one owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// The owner had no change in progress.
    Nothing,
    /// The owner had an intent but did not hold the slot's lock (it never got it, or had
    /// already released it); nothing to repair.
    IntentCleared,
    /// The change was published in the ring and has been completed.
    RolledForward(u32),
    /// The change was not published and has been undone.
    RolledBack(u32),
}

/// A resolved address range of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeEntry {
    /// The range.
    pub spec: RangeSpec,
    /// Slot index of its first address.
    pub base: u32,
}

/// Context of a change, stored in its ring record.
#[derive(Debug, Clone, Copy)]
pub struct ChangeContext<'a> {
    /// Why.
    pub reason: ChangeReason,
    /// Unix time in milliseconds.
    pub time_ms: u64,
    /// Free-form context bytes for consumers (e.g. relay agent information).
    pub context: &'a [u8],
}

/// Result of a full consistency check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Slots checked.
    pub slots: u64,
    /// Slots in each state, indexed by state code.
    pub by_state: [u64; 8],
    /// Slots failing their checksum.
    pub corrupt: Vec<u32>,
    /// Slots found locked (no writer should be alive when this runs).
    pub locked: Vec<u32>,
    /// Slots whose free-bitmap bit disagrees with their state.
    pub bitmap_mismatch: Vec<u32>,
    /// Client keys holding more than one offered/leased slot.
    pub duplicate_holders: Vec<(u32, u32)>,
    /// Offered/leased slots the client index does not find.
    pub unindexed: Vec<u32>,
}

impl CheckReport {
    /// Whether every invariant holds.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty()
            && self.locked.is_empty()
            && self.bitmap_mismatch.is_empty()
            && self.duplicate_holders.is_empty()
            && self.unindexed.is_empty()
    }
}

/// Owner id used for a worker (`0..64` → `1..=64`).
pub fn worker_owner(worker_id: usize) -> u8 {
    (worker_id.min(63) + 1) as u8
}
/// Owner id of the supervisor.
pub const SUPERVISOR_OWNER: u8 = 100;
/// Owner id of a lease import.
pub const IMPORT_OWNER: u8 = 101;
/// Owner id of the replication daemon.
pub const SYNCD_OWNER: u8 = 102;

const READ_SPINS: u32 = 256;
/// Index entry of a removed key (never a valid entry: slot numbers stay below 2^26).
pub(crate) const TOMBSTONE: u64 = u64::MAX;

/// Steps of the write protocol after which a simulated crash can stop a writer (tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
enum Step {
    Intent,
    Locked,
    HalfWritten,
    Bitmap,
    Indexed,
    Recorded,
    Unlocked,
}
pub(crate) const MAX_PROBE: usize = 1 << 16;
pub(crate) const INTENT_ACTIVE: usize = 0;
pub(crate) const INTENT_SEQ: usize = 1;
pub(crate) const INTENT_OLD: usize = 2;
pub(crate) const INTENT_NEW: usize = 2 + SLOT_WORDS;

/// A mapped lease table.
#[derive(Debug)]
pub struct Table {
    map: WordMapping,
    file: File,
    path: PathBuf,
    geo: Geometry,
    ranges: Vec<RangeEntry>,
    fingerprint: u64,
    /// SipHash key of the client index (`None`: a table from before keys, hashed unkeyed).
    index_key: Option<(u64, u64)>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// This boot's id (from /proc), so a table can tell a process restart from a reboot.
pub fn boot_id() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let hex: String = text.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    let hi = u64::from_str_radix(hex.get(..16).unwrap_or("0"), 16).unwrap_or(0);
    let lo = u64::from_str_radix(hex.get(16..32).unwrap_or("0"), 16).unwrap_or(0);
    (hi, lo)
}

impl Table {
    /// Creates a new table file for `spec` at `path` (atomically: built under a temporary name
    /// and renamed). Fails if `path` exists.
    pub fn create(path: &Path, spec: &LayoutSpec) -> Result<Table, TableOpenError> {
        spec.validate()?;
        let io_err = |source| TableOpenError::Io {
            path: path.to_path_buf(),
            source,
        };
        if path.symlink_metadata().is_ok() {
            return Err(io_err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "refusing to overwrite an existing table",
            )));
        }
        let tmp = path.with_extension("new");
        let _ = std::fs::remove_file(&tmp);
        let geo = Geometry::new(spec.slot_count(), spec.ranges.len() as u64);
        {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)
                .map_err(io_err)?;
            preallocate(&file, geo.file_bytes()).map_err(io_err)?;
            // Have every block written now, once, at creation (about 2–3 s for a /8): a first
            // write through the mapping into a reserved-but-unwritten block is a slow fault
            // through the file system's extent conversion (measured on a fresh /8: 132 instead
            // of 51 µs of CPU per lease and 21 ms DISCOVER p99 with only the index written).
            write_zeros(&file, 0, geo.file_bytes()).map_err(io_err)?;
            let map = WordMapping::map(&file, geo.total_words * 8).map_err(io_err)?;
            let w = map.words();
            let put = |i: usize, v: u64| w[i].store(v, Ordering::Relaxed);
            put(hw::LAYOUT_VERSION, LAYOUT_VERSION);
            put(hw::FILE_BYTES, geo.file_bytes());
            put(hw::FINGERPRINT, spec.fingerprint());
            put(hw::SLOT_COUNT, geo.slot_count);
            put(hw::RANGE_COUNT, geo.range_count);
            put(hw::INDEX_CAPACITY, geo.index_capacity as u64);
            put(hw::CREATED, now_secs());
            put(hw::CLEAN, 1);
            put(hw::EPOCH, 1);
            let (k0, k1) = random_index_key().map_err(io_err)?;
            put(hw::INDEX_KEY0, k0);
            put(hw::INDEX_KEY1, k1);
            let mut base = 0u64;
            for (i, r) in spec.ranges.iter().enumerate() {
                put(
                    geo.ranges_off + 2 * i,
                    u64::from(r.first) | (u64::from(r.last) << 32),
                );
                put(
                    geo.ranges_off + 2 * i + 1,
                    base | (u64::from(r.in_pool) << 63),
                );
                if r.in_pool {
                    set_bits(w, &geo, base, base + r.len());
                }
                base += r.len();
            }
            put(hw::MAGIC, MAGIC);
            w[hw::INITIALIZED].store(INIT_MARK, Ordering::Release);
            map.flush().map_err(io_err)?;
        }
        std::fs::rename(&tmp, path).map_err(io_err)?;
        if let Some(dir) = path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Table::open(path)
    }

    /// Opens an existing table and validates its header and range directory (not the
    /// fingerprint; see [`Table::open_for`]).
    pub fn open(path: &Path) -> Result<Table, TableOpenError> {
        let io_err = |source| TableOpenError::Io {
            path: path.to_path_buf(),
            source,
        };
        let corrupt = |reason: String| TableOpenError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    TableOpenError::Unsafe {
                        path: path.to_path_buf(),
                        reason: "is a symbolic link; refusing to follow it".into(),
                    }
                } else {
                    io_err(e)
                }
            })?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(TableOpenError::Unsafe {
                path: path.to_path_buf(),
                reason: "is not a regular file".into(),
            });
        }
        if meta.mode() & 0o022 != 0 {
            return Err(TableOpenError::Unsafe {
                path: path.to_path_buf(),
                reason: format!(
                    "is writable by group or others (mode {:o}); fix with chmod 600",
                    meta.mode() & 0o7777
                ),
            });
        }
        let len = meta.len();
        if len < (HEADER_WORDS * 8) as u64 {
            return Err(corrupt(format!(
                "file is {len} bytes, shorter than the header (truncated?)"
            )));
        }
        let header = WordMapping::map(&file, HEADER_WORDS * 8).map_err(io_err)?;
        let h = header.words();
        let get = |i: usize| h[i].load(Ordering::Acquire);
        if get(hw::MAGIC) != MAGIC {
            return Err(corrupt("bad magic: not a prodhcp lease table".into()));
        }
        if get(hw::LAYOUT_VERSION) != LAYOUT_VERSION {
            return Err(corrupt(format!(
                "layout version {} (this build reads version {LAYOUT_VERSION})",
                get(hw::LAYOUT_VERSION)
            )));
        }
        if get(hw::INITIALIZED) != INIT_MARK {
            return Err(corrupt("creation never completed".into()));
        }
        let slot_count = get(hw::SLOT_COUNT);
        let range_count = get(hw::RANGE_COUNT);
        if slot_count == 0 || slot_count > MAX_SLOTS || range_count == 0 {
            return Err(corrupt(format!(
                "implausible slot count {slot_count} / range count {range_count}"
            )));
        }
        if range_count > MAX_RANGES as u64 {
            return Err(corrupt(format!("implausible range count {range_count}")));
        }
        let geo = Geometry::new(slot_count, range_count);
        if get(hw::INDEX_CAPACITY) != geo.index_capacity as u64
            || get(hw::FILE_BYTES) != geo.file_bytes()
        {
            return Err(corrupt("header geometry is inconsistent".into()));
        }
        if len < geo.file_bytes() {
            return Err(corrupt(format!(
                "file is {len} bytes but the table needs {} (truncated)",
                geo.file_bytes()
            )));
        }
        let fingerprint = get(hw::FINGERPRINT);
        // A table created before the index had a key holds zeros here; its index was built
        // with the unkeyed hash and stays readable that way (a migration or a new table gets
        // a key). Creation never writes an all-zero key.
        let index_key = match (get(hw::INDEX_KEY0), get(hw::INDEX_KEY1)) {
            (0, 0) => None,
            k => Some(k),
        };
        drop(header);
        let map = WordMapping::map(&file, geo.total_words * 8).map_err(io_err)?;
        let w = map.words();
        let mut ranges = Vec::with_capacity(range_count as usize);
        let mut expect_base = 0u64;
        for i in 0..range_count as usize {
            let a = w[geo.ranges_off + 2 * i].load(Ordering::Relaxed);
            let b = w[geo.ranges_off + 2 * i + 1].load(Ordering::Relaxed);
            let spec = RangeSpec {
                first: a as u32,
                last: (a >> 32) as u32,
                in_pool: b >> 63 == 1,
            };
            let base = b & !(1 << 63);
            if spec.last < spec.first
                || base != expect_base
                || ranges
                    .last()
                    .is_some_and(|p: &RangeEntry| p.spec.last >= spec.first)
            {
                return Err(corrupt(format!(
                    "range directory entry {i} is inconsistent"
                )));
            }
            expect_base += spec.len();
            ranges.push(RangeEntry {
                spec,
                base: base as u32,
            });
        }
        if expect_base != slot_count {
            return Err(corrupt(
                "range directory does not add up to the slot count".into(),
            ));
        }
        let computed = LayoutSpec {
            ranges: ranges.iter().map(|r| r.spec).collect(),
        }
        .fingerprint();
        if computed != fingerprint {
            return Err(corrupt(
                "fingerprint does not match the range directory".into(),
            ));
        }
        Ok(Table {
            map,
            file,
            path: path.to_path_buf(),
            geo,
            ranges,
            fingerprint,
            index_key,
        })
    }

    /// Opens `path` and checks that it was built for `spec`.
    pub fn open_for(path: &Path, spec: &LayoutSpec) -> Result<Table, TableOpenError> {
        let t = Table::open(path)?;
        let expected = spec.fingerprint();
        if t.fingerprint != expected {
            return Err(TableOpenError::LayoutMismatch {
                path: path.to_path_buf(),
                found: t.fingerprint,
                expected,
            });
        }
        Ok(t)
    }

    /// Takes the exclusive lock that keeps two supervisors off one table (released when the
    /// table is dropped or the process dies).
    pub fn lock_exclusive(&self) -> Result<(), TableOpenError> {
        self.file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => TableOpenError::Locked {
                path: self.path.clone(),
            },
            std::fs::TryLockError::Error(source) => TableOpenError::Io {
                path: self.path.clone(),
                source,
            },
        })
    }

    pub(crate) fn w(&self) -> &[AtomicU64] {
        self.map.words()
    }

    /// The mapping (for [`crate::durable`]).
    pub(crate) fn mapping(&self) -> &WordMapping {
        &self.map
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The layout fingerprint.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Number of slots.
    pub fn slot_count(&self) -> u32 {
        self.geo.slot_count as u32
    }

    /// The address ranges.
    pub fn ranges(&self) -> &[RangeEntry] {
        &self.ranges
    }

    /// The geometry (file size, region offsets).
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// The slot of an address (host order), if the table has one.
    pub fn slot_of_addr(&self, addr: u32) -> Option<u32> {
        let i = self.ranges.partition_point(|r| r.spec.last < addr);
        let r = self.ranges.get(i)?;
        (addr >= r.spec.first).then(|| r.base + (addr - r.spec.first))
    }

    fn range_of_slot(&self, slot: u32) -> Option<&RangeEntry> {
        let i = self
            .ranges
            .partition_point(|r| u64::from(r.base) + r.spec.len() <= u64::from(slot));
        self.ranges.get(i).filter(|r| slot >= r.base)
    }

    /// The address (host order) of a slot.
    pub fn addr_of_slot(&self, slot: u32) -> Option<u32> {
        self.range_of_slot(slot)
            .map(|r| r.spec.first + (slot - r.base))
    }

    /// Whether a slot belongs to a pool (as opposed to an out-of-pool reservation).
    pub fn slot_in_pool(&self, slot: u32) -> bool {
        self.range_of_slot(slot).is_some_and(|r| r.spec.in_pool)
    }

    /// The slot span covering the addresses `first..=last` (e.g. a subnet), if any slot lies in it.
    pub fn slot_span(&self, first: u32, last: u32) -> Range<u32> {
        let lo = self.ranges.partition_point(|r| r.spec.last < first);
        let hi = self.ranges.partition_point(|r| r.spec.first <= last);
        if lo >= hi {
            return 0..0;
        }
        let a = &self.ranges[lo];
        let b = &self.ranges[hi - 1];
        let start = a.base + first.saturating_sub(a.spec.first);
        let end = b.base + (last.min(b.spec.last) - b.spec.first) + 1;
        start..end
    }

    pub(crate) fn slot_words(&self, slot: u32) -> Option<&[AtomicU64]> {
        if u64::from(slot) >= self.geo.slot_count {
            return None;
        }
        let start = self.geo.slots_off + slot as usize * SLOT_WORDS;
        Some(&self.w()[start..start + SLOT_WORDS])
    }

    /// Reads a slot consistently (seqlock).
    pub fn read(&self, slot: u32) -> Result<SlotImage, ReadError> {
        let s = self.slot_words(slot).ok_or(ReadError::OutOfRange)?;
        for attempt in 0..READ_SPINS {
            let w0 = s[0].load(Ordering::Acquire);
            if w0 & 0xff != 0 {
                if self.lock_is_stale(s, slot, w0) {
                    // Nobody is writing it (a damaged lock byte, or a holder that no longer
                    // exists): waiting cannot help, and spinning on many such slots would stall
                    // a worker past its heartbeat. The scrub clears such locks.
                    return Err(ReadError::Busy);
                }
                if attempt > READ_SPINS / 2 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            let mut w = [0u64; SLOT_WORDS];
            w[0] = w0;
            for i in 1..SLOT_WORDS {
                w[i] = s[i].load(Ordering::Relaxed);
            }
            fence(Ordering::Acquire);
            if s[0].load(Ordering::Relaxed) == w0 {
                return SlotImage::decode(&w).map_err(ReadError::Corrupt);
            }
        }
        Err(ReadError::Busy)
    }

    /// Whether the lock in `w0` (slot word 0, lock byte set) is held by nobody: its owner has no
    /// intent naming this slot, and word 0 still reads `w0` after that was checked. Every writer
    /// records its intent before it takes a slot's lock and clears it only after unlocking, so a
    /// live or dead-but-unrecovered holder always has one.
    pub(crate) fn lock_is_stale(&self, s: &[AtomicU64], slot: u32, w0: u64) -> bool {
        let owner = (w0 & 0xff) as u8;
        if owner == 0 {
            return false;
        }
        let holds_intent = self
            .owner_words(owner)
            .is_some_and(|o| o[INTENT_ACTIVE].load(Ordering::Acquire) == u64::from(slot) + 1);
        !holds_intent && s[0].load(Ordering::Acquire) == w0
    }

    /// The owner currently holding a slot's lock (0 = unlocked).
    pub fn lock_owner(&self, slot: u32) -> u8 {
        self.slot_words(slot)
            .map(|s| s[0].load(Ordering::Acquire) as u8)
            .unwrap_or(0)
    }

    pub(crate) fn owner_words(&self, owner: u8) -> Option<&[AtomicU64]> {
        if owner == 0 || usize::from(owner) >= MAX_OWNERS {
            return None;
        }
        let start = self.geo.owners_off + usize::from(owner) * OWNER_WORDS;
        Some(&self.w()[start..start + OWNER_WORDS])
    }

    /// The owner's counter words (for statistics; the meaning of each index belongs to the
    /// owner's code). Empty for an invalid owner.
    pub fn counters(&self, owner: u8) -> &[AtomicU64] {
        self.owner_words(owner)
            .map(|o| &o[OWNER_COUNTERS_START..])
            .unwrap_or(&[])
    }

    /// Whether the free-bitmap bit of a slot is set (the slot is allocatable).
    pub fn is_free(&self, slot: u32) -> bool {
        let wi = slot as usize / 64;
        wi < self.geo.bitmap_words
            && self.w()[self.geo.bitmap_off + wi].load(Ordering::Acquire) & (1 << (slot % 64)) != 0
    }

    pub(crate) fn set_free_bit(&self, slot: u32, free: bool) {
        let wi = slot as usize / 64;
        let bit = 1u64 << (slot % 64);
        let word = &self.w()[self.geo.bitmap_off + wi];
        let sword = &self.w()[self.geo.summary_off + wi / 64];
        let sbit = 1u64 << (wi % 64);
        if free {
            word.fetch_or(bit, Ordering::AcqRel);
            sword.fetch_or(sbit, Ordering::AcqRel);
        } else {
            let prev = word.fetch_and(!bit, Ordering::AcqRel);
            if prev & !bit == 0 {
                sword.fetch_and(!sbit, Ordering::AcqRel);
                if word.load(Ordering::Acquire) != 0 {
                    sword.fetch_or(sbit, Ordering::AcqRel);
                }
            }
        }
    }

    pub(crate) fn bit_should_be_free(&self, slot: u32, state: LeaseState) -> bool {
        state.is_allocatable() && self.slot_in_pool(slot)
    }

    /// The first slot at or after `start` (wrapping around within `span`) whose free bit is set.
    /// A hint: the caller must still win the slot with [`Table::update`].
    pub fn next_free(&self, span: Range<u32>, start: u32) -> Option<u32> {
        if span.is_empty() {
            return None;
        }
        let start = if span.contains(&start) {
            start
        } else {
            span.start
        };
        self.scan_free(start, span.end)
            .or_else(|| self.scan_free(span.start, start))
    }

    fn scan_free(&self, from: u32, to: u32) -> Option<u32> {
        let w = self.w();
        let mut slot = from as u64;
        let to = to as u64;
        while slot < to {
            let wi = (slot / 64) as usize;
            let swi = wi / 64;
            let sbits =
                w[self.geo.summary_off + swi].load(Ordering::Acquire) & (!0u64 << (wi % 64));
            if sbits == 0 {
                slot = ((swi as u64) + 1) * 4096;
                continue;
            }
            let wi2 = swi * 64 + sbits.trailing_zeros() as usize;
            if wi2 > wi {
                slot = wi2 as u64 * 64;
                // The jump may leave the span (its tail was full): the next word belongs to
                // whatever follows, e.g. the neighbouring subnet.
                if slot >= to {
                    return None;
                }
            }
            let wi = (slot / 64) as usize;
            if wi >= self.geo.bitmap_words {
                return None;
            }
            let mut bits = w[self.geo.bitmap_off + wi].load(Ordering::Acquire);
            bits &= !0u64 << (slot % 64);
            let word_end = (wi as u64 + 1) * 64;
            if to < word_end {
                // `slot < to`, so `to` lies in this word: keep its bits below `to`.
                bits &= (1u64 << (to - wi as u64 * 64)).wrapping_sub(1);
            }
            if bits != 0 {
                return Some((wi as u64 * 64 + u64::from(bits.trailing_zeros())) as u32);
            }
            slot = word_end;
        }
        None
    }

    /// Counts free bits in a slot span (for pool statistics).
    pub fn count_free(&self, span: Range<u32>) -> u64 {
        let mut n = 0u64;
        let mut slot = span.start;
        let span_end = span.end.min(self.slot_count());
        while slot < span_end {
            let wi = slot as usize / 64;
            let mut bits = self.w()[self.geo.bitmap_off + wi].load(Ordering::Relaxed);
            bits &= !0u64 << (slot % 64);
            let word_end = (wi as u32 + 1) * 64;
            if span_end < word_end {
                bits &= (1u64 << (span_end % 64)).wrapping_sub(1);
            }
            n += u64::from(bits.count_ones());
            slot = word_end;
        }
        n
    }

    // ------------------------------------------------------------------ client index ----

    pub(crate) fn index(&self) -> &[AtomicU64] {
        &self.w()[self.geo.index_off..self.geo.index_off + self.geo.index_capacity]
    }

    /// The index hash of a client key in this table: SipHash-1-3 under the table's random key,
    /// so a client cannot craft identifiers that share a home position (long probe chains) in
    /// somebody else's table. Tables from before the key use [`ClientKey::hash`].
    pub(crate) fn key_hash(&self, key: &ClientKey) -> u64 {
        match self.index_key {
            Some((k0, k1)) => {
                let mut h = siphasher::sip::SipHasher13::new_with_keys(k0, k1);
                h.write_u8(key.kind() as u8);
                h.write(key.as_bytes());
                h.finish()
            }
            None => key.hash(),
        }
    }

    /// Finds the slot a client holds: among slots carrying `key`, the one in the most
    /// significant state (leased, then offered, then released/expired/free).
    ///
    /// The index is the only way to find a client by key: a lookup stops at the first empty
    /// entry or after [`MAX_PROBE`] entries, like an insert, and never scans the slots (that
    /// would be O(slots) per packet on a /8). So a key whose insert gave up (counted in
    /// [`Table::index_give_ups`], logged by the supervisor) is not found here: the client looks
    /// new to DISCOVER until the index has room again, although a REQUEST naming its address
    /// still finds the slot by address and checks the key in it. With a load factor ≤ 0.5, a
    /// keyed hash and tombstone cleanup, a give-up needs a nearly full index.
    pub fn find_client(&self, key: &ClientKey) -> Option<(u32, SlotImage)> {
        if key.is_none() {
            return None;
        }
        let h = self.key_hash(key);
        let tag = tag_of(h);
        let idx = self.index();
        let cap = idx.len();
        let mut pos = home(h, cap);
        let mut best: Option<(u32, SlotImage)> = None;
        for _ in 0..MAX_PROBE.min(idx.len()) {
            let e = idx[pos].load(Ordering::Acquire);
            if e == 0 {
                break;
            }
            if e != TOMBSTONE && e >> 32 == tag {
                let slot = (e as u32).wrapping_sub(1);
                if let Ok(img) = self.read(slot) {
                    if img.key == *key && best.is_none_or(|(_, b)| rank(img.state) > rank(b.state))
                    {
                        best = Some((slot, img));
                    }
                }
            }
            pos = next(pos, cap);
        }
        best
    }

    /// Makes the index find `slot` for `key`. Reuses stale entries on the way. The caller holds
    /// `slot`'s lock.
    ///
    /// After filling an entry it probes again from the home position: if an entry before it
    /// became empty meanwhile ([`Table::index_cleanup`] emptied a tombstone that ended the chain
    /// just before this insert filled the following empty entry), lookups would stop there and
    /// never reach the new entry. It is then turned into a tombstone and the insert retried
    /// (which takes the emptied position). An insert that finds no usable entry within the
    /// probe limit, or loses every retry, gives up: counted in the header
    /// ([`Table::index_give_ups`]); see [`Table::find_client`] for what that means for lookups.
    pub(crate) fn index_insert(&self, key: &ClientKey, slot: u32) {
        let h = self.key_hash(key);
        let tag = tag_of(h);
        let entry = (tag << 32) | u64::from(slot + 1);
        let idx = self.index();
        let cap = idx.len();
        let give_up = || {
            self.w()[hw::INDEX_GIVE_UPS].fetch_add(1, Ordering::Relaxed);
        };
        for _retry in 0..8 {
            let mut pos = home(h, cap);
            let mut reusable: Option<(usize, u64)> = None;
            for _ in 0..MAX_PROBE.min(idx.len()) {
                let e = idx[pos].load(Ordering::Acquire);
                if e == 0 {
                    if reusable.is_none() {
                        reusable = Some((pos, 0));
                    }
                    break;
                }
                if e == entry {
                    return; // already findable: every entry before it is occupied
                }
                if reusable.is_none() && (e == TOMBSTONE || self.index_entry_is_stale(e, slot)) {
                    reusable = Some((pos, e));
                }
                pos = next(pos, cap);
            }
            let Some((p, old)) = reusable else {
                give_up(); // no empty, tombstoned or stale entry within the probe limit
                return;
            };
            #[cfg(test)]
            tests::before_index_cas(self);
            if idx[p]
                .compare_exchange(old, entry, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            if old == 0 {
                self.w()[hw::INDEX_OCCUPIED].fetch_add(1, Ordering::Relaxed);
            }
            if self.index_reaches(h, p, entry) {
                return;
            }
            // Cut off from its home: retire this copy (a tombstone keeps any chain that has
            // grown behind it connected) and insert again.
            let _ = idx[p].compare_exchange(entry, TOMBSTONE, Ordering::AcqRel, Ordering::Relaxed);
        }
        give_up();
    }

    /// Whether a lookup for hash `h` reaches `entry` (stored at position `at`) before an empty
    /// entry stops it.
    fn index_reaches(&self, h: u64, at: usize, entry: u64) -> bool {
        let idx = self.index();
        let cap = idx.len();
        let mut pos = home(h, cap);
        for _ in 0..MAX_PROBE.min(cap) {
            let e = idx[pos].load(Ordering::Acquire);
            if e == entry {
                return true;
            }
            if e == 0 || pos == at {
                return false;
            }
            pos = next(pos, cap);
        }
        false
    }

    /// Removes the entry that makes the index find `slot` for `key` (the slot is getting another
    /// key). The entry becomes a tombstone, which keeps probe chains intact and is reused by
    /// inserts; [`Table::index_cleanup`] turns tombstones at the end of a chain back into empty
    /// entries.
    fn index_remove(&self, key: &ClientKey, slot: u32) {
        let h = self.key_hash(key);
        let entry = (tag_of(h) << 32) | u64::from(slot + 1);
        let idx = self.index();
        let cap = idx.len();
        let mut pos = home(h, cap);
        for _ in 0..MAX_PROBE.min(idx.len()) {
            let e = idx[pos].load(Ordering::Acquire);
            if e == 0 {
                return;
            }
            if e == entry {
                let _ =
                    idx[pos].compare_exchange(e, TOMBSTONE, Ordering::AcqRel, Ordering::Relaxed);
                return;
            }
            pos = next(pos, cap);
        }
    }

    /// Turns tombstones that end a probe chain into empty entries, scanning index positions
    /// `positions` from the top down (so a run of tombstones before an empty entry shrinks in one
    /// pass). Safe while writers run: an insert that fills the following entry before the
    /// re-check below makes this restore the tombstone; one that fills it after the re-check
    /// finds the emptied entry when it probes again from its home and re-inserts (see
    /// `index_insert`). Returns how many entries were emptied. The supervisor calls it in slices.
    pub fn index_cleanup(&self, positions: Range<usize>) -> u64 {
        let idx = self.index();
        let cap = idx.len();
        let end = positions.end.min(cap);
        let mut emptied = 0;
        for pos in (positions.start..end).rev() {
            if idx[pos].load(Ordering::Acquire) != TOMBSTONE
                || idx[next(pos, cap)].load(Ordering::Acquire) != 0
            {
                continue;
            }
            if idx[pos]
                .compare_exchange(TOMBSTONE, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            if idx[next(pos, cap)].load(Ordering::Acquire) != 0 {
                // Someone inserted after it meanwhile: keep the chain connected.
                if idx[pos]
                    .compare_exchange(0, TOMBSTONE, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
                {
                    // An insert took the emptied position itself: it is occupied again.
                    continue;
                }
                continue;
            }
            emptied += 1;
            self.w()[hw::INDEX_OCCUPIED].fetch_sub(1, Ordering::Relaxed);
        }
        emptied
    }

    /// An entry is stale when the slot it names no longer carries a key with the entry's tag.
    /// `own_slot` is locked by the caller, so its entries are judged by tag alone (the caller's
    /// new key is being indexed and any other tag for it is old).
    fn index_entry_is_stale(&self, e: u64, own_slot: u32) -> bool {
        let slot = (e as u32).wrapping_sub(1);
        if slot == own_slot {
            return true;
        }
        match self.read(slot) {
            Ok(img) => img.key.is_none() || tag_of(self.key_hash(&img.key)) != e >> 32,
            Err(ReadError::Busy) => false,
            Err(_) => true,
        }
    }

    /// Index entries ever filled (a saturation hint for operators).
    pub fn index_occupied(&self) -> u64 {
        self.w()[hw::INDEX_OCCUPIED].load(Ordering::Relaxed)
    }

    /// Index capacity.
    pub fn index_capacity(&self) -> usize {
        self.geo.index_capacity
    }

    /// Client index inserts that gave up since the table was created (probe limit reached or
    /// every retry lost). Each is a client that [`Table::find_client`] cannot find, so it may
    /// look new to DISCOVER: the supervisor logs increases and `prodhcpctl status` shows it.
    pub fn index_give_ups(&self) -> u64 {
        self.w()[hw::INDEX_GIVE_UPS].load(Ordering::Relaxed)
    }

    // ------------------------------------------------------------------ writes ----

    /// Replaces slot `slot`, which the caller read as `expected`, with `new` (its version is set
    /// to `expected.version + 1`), appending a change record to `ring`. See the module docs for
    /// the protocol. Returns the committed image.
    pub fn update(
        &self,
        owner: u8,
        ring: &Ring,
        slot: u32,
        expected: &SlotImage,
        new: &SlotImage,
        ctx: &ChangeContext<'_>,
    ) -> Result<SlotImage, UpdateError> {
        self.update_until(owner, ring, slot, expected, new, ctx, None)
    }

    /// [`Table::update`], stopping dead after `stop` (to simulate a writer killed at that step).
    #[allow(clippy::too_many_arguments)]
    fn update_until(
        &self,
        owner: u8,
        ring: &Ring,
        slot: u32,
        expected: &SlotImage,
        new: &SlotImage,
        ctx: &ChangeContext<'_>,
        stop: Option<Step>,
    ) -> Result<SlotImage, UpdateError> {
        let s = self.slot_words(slot).ok_or(UpdateError::OutOfRange)?;
        let o = self.owner_words(owner).ok_or(UpdateError::OutOfRange)?;
        let v = expected.version;
        let mut img = *new;
        img.version = v + 1;
        let enc_new = img.encode();
        let enc_old = expected.encode();
        // 1. intent
        for i in 0..SLOT_WORDS {
            o[INTENT_OLD + i].store(enc_old[i], Ordering::Relaxed);
            o[INTENT_NEW + i].store(enc_new[i], Ordering::Relaxed);
        }
        o[INTENT_SEQ].store(ring.head() + 1, Ordering::Relaxed);
        o[INTENT_ACTIVE].store(u64::from(slot) + 1, Ordering::Release);
        if stop == Some(Step::Intent) {
            return Err(UpdateError::Conflict);
        }
        // 2. lock
        let unlocked = v << 8;
        if s[0]
            .compare_exchange(
                unlocked,
                unlocked | u64::from(owner),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            o[INTENT_ACTIVE].store(0, Ordering::Release);
            return Err(UpdateError::Conflict);
        }
        fence(Ordering::Release);
        if stop == Some(Step::Locked) {
            return Err(UpdateError::Conflict);
        }
        // 3. contents, bitmap, index, record
        for i in 1..SLOT_WORDS {
            s[i].store(enc_new[i], Ordering::Relaxed);
            if stop == Some(Step::HalfWritten) && i == SLOT_WORDS / 2 {
                return Err(UpdateError::Conflict);
            }
        }
        self.set_free_bit(slot, self.bit_should_be_free(slot, img.state));
        if stop == Some(Step::Bitmap) {
            return Err(UpdateError::Conflict);
        }
        if img.key != expected.key {
            if !expected.key.is_none() {
                self.index_remove(&expected.key, slot);
            }
            if !img.key.is_none() {
                self.index_insert(&img.key, slot);
            }
        }
        if stop == Some(Step::Indexed) {
            return Err(UpdateError::Conflict);
        }
        let rec = RecordInput {
            slot,
            reason: ctx.reason,
            time_ms: ctx.time_ms,
            epoch: self.epoch(),
            image: &img,
            context: ctx.context,
        };
        if let Err(full) = ring.append(&rec) {
            self.roll_back_unrecorded(slot, expected, &img);
            o[INTENT_ACTIVE].store(0, Ordering::Release);
            return Err(full.into());
        }
        if stop == Some(Step::Recorded) {
            return Err(UpdateError::Conflict);
        }
        // 4. unlock
        s[0].store(img.version << 8, Ordering::Release);
        if stop == Some(Step::Unlocked) {
            return Err(UpdateError::Conflict);
        }
        o[INTENT_ACTIVE].store(0, Ordering::Release);
        Ok(img)
    }

    /// Undoes a change whose record could not be appended, while still holding the slot's lock:
    /// the old contents, bitmap bit and index entries come back exactly, and the slot is
    /// unlocked at version `expected.version + 2` (contents re-encoded with that version).
    ///
    /// Why not back at `expected.version`: version `v + 1` was carried, under the lock, by the
    /// image that failed (in the slot words and this owner's intent record). The next successful
    /// write from `v` would publish a *different* image as `v + 1`, and replication compares
    /// slots by version, so two images must never share one. Skipping to `v + 2` with the old
    /// contents keeps versions unique per image; the unused `v + 1` just has no ring record (a
    /// consumer sees a gap, never a conflict). A caller holding the image it read at `v` gets
    /// [`UpdateError::Conflict`] on a retry and must re-read, as after any concurrent change.
    fn roll_back_unrecorded(&self, slot: u32, expected: &SlotImage, attempted: &SlotImage) {
        let Some(s) = self.slot_words(slot) else {
            return;
        };
        let restored = SlotImage {
            version: expected.version + 2,
            ..*expected
        };
        let enc = restored.encode();
        for i in 1..SLOT_WORDS {
            s[i].store(enc[i], Ordering::Relaxed);
        }
        self.set_free_bit(slot, self.bit_should_be_free(slot, expected.state));
        if attempted.key != expected.key {
            if !attempted.key.is_none() {
                self.index_remove(&attempted.key, slot);
            }
            if !expected.key.is_none() {
                self.index_insert(&expected.key, slot);
            }
        }
        s[0].store(enc[0], Ordering::Release);
    }

    /// Completes or undoes the change a dead owner left half done. Must only be called when no
    /// process is acting as `owner` any more (the supervisor calls it after reaping the process,
    /// and for every owner at start-up).
    pub fn recover_owner(&self, owner: u8, ring: Option<&Ring>) -> Recovery {
        let Some(o) = self.owner_words(owner) else {
            return Recovery::Nothing;
        };
        let active = o[INTENT_ACTIVE].load(Ordering::Acquire);
        if active == 0 {
            return Recovery::Nothing;
        }
        let slot = (active - 1) as u32;
        let Some(s) = self.slot_words(slot) else {
            o[INTENT_ACTIVE].store(0, Ordering::Release);
            return Recovery::IntentCleared;
        };
        let w0 = s[0].load(Ordering::Acquire);
        if w0 as u8 != owner {
            o[INTENT_ACTIVE].store(0, Ordering::Release);
            return Recovery::IntentCleared;
        }
        let load = |base: usize| {
            let mut w = [0u64; SLOT_WORDS];
            for (i, x) in w.iter_mut().enumerate() {
                *x = o[base + i].load(Ordering::Relaxed);
            }
            w
        };
        let old = load(INTENT_OLD);
        let new = load(INTENT_NEW);
        let planned = o[INTENT_SEQ].load(Ordering::Relaxed);
        let published = ring.is_some_and(|r| {
            r.read(planned)
                .is_some_and(|rec| rec.slot == slot && rec.image.version == new[0] >> 8)
        });
        let (words, outcome) = if published {
            (new, Recovery::RolledForward(slot))
        } else {
            (old, Recovery::RolledBack(slot))
        };
        for i in 1..SLOT_WORDS {
            s[i].store(words[i], Ordering::Relaxed);
        }
        let image = SlotImage::decode(&words).ok();
        let state = image.map_or(LeaseState::Abandoned, |i| i.state);
        self.set_free_bit(slot, self.bit_should_be_free(slot, state));
        // The dead writer may have tombstoned the old key's index entry before it died: make
        // sure the key the slot now carries is findable again (still holding the slot's lock).
        if let Some(img) = image.filter(|i| !i.key.is_none()) {
            self.index_insert(&img.key, slot);
        }
        s[0].store(words[0] & !0xff, Ordering::Release);
        o[INTENT_ACTIVE].store(0, Ordering::Release);
        outcome
    }

    // ------------------------------------------------------------------ header state ----

    /// The replication epoch.
    pub fn epoch(&self) -> u64 {
        self.w()[hw::EPOCH].load(Ordering::Acquire)
    }

    /// Sets the replication epoch.
    pub fn set_epoch(&self, epoch: u64) {
        self.w()[hw::EPOCH].store(epoch, Ordering::Release);
    }

    /// Whether the table was marked clean (orderly shutdown) and on which boot it was last
    /// opened. Returns (clean, same_boot).
    pub fn shutdown_state(&self) -> (bool, bool) {
        let clean = self.w()[hw::CLEAN].load(Ordering::Acquire) == 1;
        let (hi, lo) = boot_id();
        let same = self.w()[hw::BOOT_ID_HI].load(Ordering::Relaxed) == hi
            && self.w()[hw::BOOT_ID_LO].load(Ordering::Relaxed) == lo;
        (clean, same)
    }

    /// Marks the table in use (not clean) by this boot. Called by the supervisor at start.
    pub fn mark_open(&self) {
        let (hi, lo) = boot_id();
        self.w()[hw::BOOT_ID_HI].store(hi, Ordering::Relaxed);
        self.w()[hw::BOOT_ID_LO].store(lo, Ordering::Relaxed);
        self.w()[hw::OPEN_COUNT].fetch_add(1, Ordering::Relaxed);
        self.w()[hw::LAST_OPEN].store(now_secs(), Ordering::Relaxed);
        self.w()[hw::CLEAN].store(0, Ordering::Release);
    }

    /// Marks the table cleanly closed and flushes it to disk.
    pub fn mark_clean(&self) -> io::Result<()> {
        self.w()[hw::CLEAN].store(1, Ordering::Release);
        self.map.flush()
    }

    /// Flushes dirty pages to disk.
    pub fn flush(&self) -> io::Result<()> {
        self.map.flush()
    }

    // ------------------------------------------------------------------ checks ----

    /// Reads every slot and checks every invariant. O(slots): for tests, and for start-up after
    /// a power loss (unclean flag and a different boot id).
    pub fn check(&self) -> CheckReport {
        let mut rep = CheckReport {
            slots: self.geo.slot_count,
            ..CheckReport::default()
        };
        let mut holders: std::collections::HashMap<ClientKey, u32> = Default::default();
        for slot in 0..self.slot_count() {
            let Some(s) = self.slot_words(slot) else {
                break;
            };
            let mut w = [0u64; SLOT_WORDS];
            for (i, x) in w.iter_mut().enumerate() {
                *x = s[i].load(Ordering::Acquire);
            }
            if w[0] & 0xff != 0 {
                rep.locked.push(slot);
                continue;
            }
            let img = match SlotImage::decode(&w) {
                Ok(i) => i,
                Err(_) => {
                    rep.corrupt.push(slot);
                    continue;
                }
            };
            rep.by_state[img.state as usize] += 1;
            if self.is_free(slot) != self.bit_should_be_free(slot, img.state) {
                rep.bitmap_mismatch.push(slot);
            }
            if matches!(img.state, LeaseState::Leased | LeaseState::Offered) && !img.key.is_none() {
                if let Some(&other) = holders.get(&img.key) {
                    rep.duplicate_holders.push((other, slot));
                } else {
                    holders.insert(img.key, slot);
                }
                if self.find_client(&img.key).is_none() {
                    rep.unindexed.push(slot);
                }
            }
        }
        rep
    }

    /// Takes a slot that fails its checksum out of service: it is rewritten as `abandoned`
    /// (never handed out, its free bit cleared) with a version above the torn one, and the
    /// change is recorded. Returns false if the slot is readable (nothing to do), busy, or the
    /// change record could not be appended (the slot is then left as it was, unlocked).
    ///
    /// Follows the write protocol of [`Table::update`] (intent, lock, release fence, contents,
    /// bitmap, ring record, unlock), so a writer killed inside it is recovered by
    /// [`Table::recover_owner`] like any other: rolled forward to `abandoned` when the record was
    /// published, back to the torn words (still caught by the checksum) otherwise.
    pub fn abandon_corrupt(&self, owner: u8, ring: &Ring, slot: u32) -> bool {
        self.abandon_corrupt_until(owner, ring, slot, None)
    }

    /// [`Table::abandon_corrupt`], stopping dead after `stop` (to simulate a killed writer).
    fn abandon_corrupt_until(&self, owner: u8, ring: &Ring, slot: u32, stop: Option<Step>) -> bool {
        let (Some(s), Some(o)) = (self.slot_words(slot), self.owner_words(owner)) else {
            return false;
        };
        let mut torn = [0u64; SLOT_WORDS];
        for (i, x) in torn.iter_mut().enumerate() {
            *x = s[i].load(Ordering::Acquire);
        }
        if torn[0] & 0xff != 0 || SlotImage::decode(&torn).is_ok() {
            return false;
        }
        let torn_version = torn[0] >> 8;
        let now = now_secs();
        let abandoned = SlotImage {
            version: torn_version + 1,
            state: LeaseState::Abandoned,
            updated: now as u32,
            ..SlotImage::PRISTINE
        };
        let enc = abandoned.encode();
        // 1. intent (the old image is the torn words as they are)
        for i in 0..SLOT_WORDS {
            o[INTENT_OLD + i].store(torn[i], Ordering::Relaxed);
            o[INTENT_NEW + i].store(enc[i], Ordering::Relaxed);
        }
        o[INTENT_SEQ].store(ring.head() + 1, Ordering::Relaxed);
        o[INTENT_ACTIVE].store(u64::from(slot) + 1, Ordering::Release);
        if stop == Some(Step::Intent) {
            return false;
        }
        // 2. lock: claim the slot with the lock word as it is
        if s[0]
            .compare_exchange(
                torn[0],
                torn[0] | u64::from(owner),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            o[INTENT_ACTIVE].store(0, Ordering::Release);
            return false;
        }
        fence(Ordering::Release);
        if stop == Some(Step::Locked) {
            return false;
        }
        // 3. contents, bitmap, record
        for i in 1..SLOT_WORDS {
            s[i].store(enc[i], Ordering::Relaxed);
            if stop == Some(Step::HalfWritten) && i == SLOT_WORDS / 2 {
                return false;
            }
        }
        self.set_free_bit(slot, false);
        if stop == Some(Step::Bitmap) {
            return false;
        }
        let appended = ring.append(&RecordInput {
            slot,
            reason: ChangeReason::Abandon,
            time_ms: now * 1000,
            epoch: self.epoch(),
            image: &abandoned,
            context: b"checksum",
        });
        if appended.is_err() {
            // Unrecorded: put the torn words back (the checksum keeps catching them), bit clear.
            for i in 1..SLOT_WORDS {
                s[i].store(torn[i], Ordering::Relaxed);
            }
            s[0].store(torn[0], Ordering::Release);
            o[INTENT_ACTIVE].store(0, Ordering::Release);
            return false;
        }
        if stop == Some(Step::Recorded) {
            return false;
        }
        // 4. unlock
        s[0].store(enc[0], Ordering::Release);
        if stop == Some(Step::Unlocked) {
            return false;
        }
        o[INTENT_ACTIVE].store(0, Ordering::Release);
        true
    }

    /// Repairs what [`Table::check`] can repair without a peer: locked slots are unlocked as
    /// they are (their contents are checked by the checksum), corrupt slots become abandoned,
    /// bitmap bits are recomputed from the states and unindexed holders are re-indexed. Only
    /// while no writer runs. Returns the report from before the repair.
    pub fn repair(&self, owner: u8, ring: &Ring) -> CheckReport {
        let rep = self.check();
        for &slot in &rep.locked {
            if let Some(s) = self.slot_words(slot) {
                let w0 = s[0].load(Ordering::Acquire);
                s[0].store(w0 & !0xff, Ordering::Release);
            }
        }
        for &slot in rep.corrupt.iter().chain(rep.locked.iter()) {
            self.abandon_corrupt(owner, ring, slot);
        }
        for &slot in &rep.bitmap_mismatch {
            if let Ok(img) = self.read(slot) {
                self.set_free_bit(slot, self.bit_should_be_free(slot, img.state));
            }
        }
        for &slot in &rep.unindexed {
            if let Ok(img) = self.read(slot) {
                self.index_insert(&img.key, slot);
            }
        }
        // `check` skips locked slots, so their bit and index entry were not looked at: now
        // that they are unlocked (and abandoned if torn), give them what their state says.
        for &slot in &rep.locked {
            if let Ok(img) = self.read(slot) {
                self.set_free_bit(slot, self.bit_should_be_free(slot, img.state));
                if matches!(img.state, LeaseState::Leased | LeaseState::Offered)
                    && !img.key.is_none()
                    && self.find_client(&img.key).is_none()
                {
                    self.index_insert(&img.key, slot);
                }
            }
        }
        rep
    }
}

/// A random SipHash key for a new table's client index (never all zero: that marks a table
/// from before keys).
fn random_index_key() -> io::Result<(u64, u64)> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| io::Error::other(format!("random index key: {e}")))?;
    let k0 = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
    let k1 = u64::from_le_bytes(b[8..].try_into().unwrap_or_default());
    Ok(if (k0, k1) == (0, 0) { (1, 0) } else { (k0, k1) })
}

/// Home position of a hash in an index of `cap` entries (multiply-shift range reduction, so
/// the capacity need not be a power of two).
pub(crate) fn home(h: u64, cap: usize) -> usize {
    ((u128::from(h) * cap as u128) >> 64) as usize
}

/// The part of a key hash stored in an index entry (the low half: the home position comes from
/// the high bits, so the two are independent).
pub(crate) fn tag_of(h: u64) -> u64 {
    h & 0xffff_ffff
}

pub(crate) fn next(pos: usize, cap: usize) -> usize {
    if pos + 1 >= cap {
        0
    } else {
        pos + 1
    }
}

/// Preference among slots carrying the same client key.
fn rank(state: LeaseState) -> u8 {
    match state {
        LeaseState::Leased => 5,
        LeaseState::Offered => 4,
        LeaseState::Released | LeaseState::Expired | LeaseState::Free => 3,
        LeaseState::Reserved => 2,
        LeaseState::Declined => 1,
        LeaseState::Abandoned => 0,
    }
}

/// Sets the free bits of slots `from..to` (creation only, before anybody maps the file).
fn set_bits(w: &[AtomicU64], geo: &Geometry, from: u64, to: u64) {
    let mut slot = from;
    while slot < to {
        let wi = (slot / 64) as usize;
        let word_end = (wi as u64 + 1) * 64;
        let mut bits = !0u64 << (slot % 64);
        if to < word_end {
            bits &= (1u64 << (to % 64)).wrapping_sub(1);
        }
        w[geo.bitmap_off + wi].fetch_or(bits, Ordering::Relaxed);
        w[geo.summary_off + wi / 64].fetch_or(1 << (wi % 64), Ordering::Relaxed);
        slot = word_end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LayoutSpec {
        LayoutSpec {
            ranges: vec![
                RangeSpec {
                    first: 0x0a00_0064,
                    last: 0x0a00_00c7,
                    in_pool: true,
                }, // 10.0.0.100-199
                RangeSpec {
                    first: 0x0a00_0105,
                    last: 0x0a00_0105,
                    in_pool: false,
                }, // 10.0.1.5 (reservation outside the pool)
                RangeSpec {
                    first: 0x0b00_0000,
                    last: 0x0b00_03ff,
                    in_pool: true,
                }, // 11.0.0.0-11.0.3.255
            ],
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        table: Table,
        ring: Ring,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let table = Table::create(&dir.path().join("leases.table"), &spec()).unwrap();
        let ring = Ring::open_or_create(&dir.path().join("ring-1"), 1, 1024).unwrap();
        Fixture {
            _dir: dir,
            table,
            ring,
        }
    }

    fn ctx() -> ChangeContext<'static> {
        ChangeContext {
            reason: ChangeReason::Commit,
            time_ms: 1,
            context: b"",
        }
    }

    fn lease(mac: u8) -> SlotImage {
        let mut i = SlotImage {
            state: LeaseState::Leased,
            expires: 2_000_000_000,
            key: ClientKey::from_hwaddr(1, &[2, 0, 0, 0, 0, mac]),
            ..SlotImage::PRISTINE
        };
        i.set_hwaddr(1, &[2, 0, 0, 0, 0, mac]);
        i
    }

    #[test]
    fn addresses_map_to_slots_and_back() {
        let f = fixture();
        let t = &f.table;
        assert_eq!(t.slot_count(), 100 + 1 + 1024);
        assert_eq!(t.slot_of_addr(0x0a00_0064), Some(0));
        assert_eq!(t.slot_of_addr(0x0a00_00c7), Some(99));
        assert_eq!(t.slot_of_addr(0x0a00_00c8), None);
        assert_eq!(t.slot_of_addr(0x0a00_0105), Some(100));
        assert_eq!(t.slot_of_addr(0x0b00_0000), Some(101));
        assert_eq!(t.slot_of_addr(0x0c00_0000), None);
        for slot in 0..t.slot_count() {
            assert_eq!(t.slot_of_addr(t.addr_of_slot(slot).unwrap()), Some(slot));
        }
        assert!(!t.slot_in_pool(100));
        assert_eq!(t.slot_span(0x0a00_0000, 0x0aff_ffff), 0..101);
        assert_eq!(t.slot_span(0x0b00_0000, 0x0bff_ffff), 101..1125);
        assert_eq!(t.slot_span(0x0c00_0000, 0x0cff_ffff), 0..0);
    }

    #[test]
    fn fresh_table_has_pool_slots_free_and_reservation_slots_not() {
        let f = fixture();
        assert!(f.table.is_free(0));
        assert!(!f.table.is_free(100));
        assert_eq!(f.table.count_free(0..f.table.slot_count()), 1124);
        assert!(f.table.check().is_clean());
    }

    #[test]
    fn update_read_find_and_conflict() {
        let f = fixture();
        let t = &f.table;
        let committed = t
            .update(1, &f.ring, 5, &SlotImage::PRISTINE, &lease(1), &ctx())
            .unwrap();
        assert_eq!(committed.version, 1);
        assert_eq!(t.read(5), Ok(committed));
        assert!(!t.is_free(5));
        assert_eq!(t.find_client(&lease(1).key), Some((5, committed)));
        assert_eq!(t.find_client(&lease(2).key), None);
        // A stale expected image loses.
        assert_eq!(
            t.update(1, &f.ring, 5, &SlotImage::PRISTINE, &lease(2), &ctx()),
            Err(UpdateError::Conflict)
        );
        // Releasing frees the bit but keeps the identity findable.
        let released = SlotImage {
            state: LeaseState::Released,
            ..committed
        };
        let r = t
            .update(1, &f.ring, 5, &committed, &released, &ctx())
            .unwrap();
        assert!(t.is_free(5));
        assert_eq!(t.find_client(&lease(1).key).map(|x| x.0), Some(5));
        assert_eq!(r.version, 2);
        assert_eq!(f.ring.head(), 2);
        assert_eq!(f.ring.read(2).unwrap().image, r);
        assert!(t.check().is_clean());
    }

    #[test]
    fn next_free_scans_spans_and_wraps() {
        let f = fixture();
        let t = &f.table;
        assert_eq!(t.next_free(0..101, 0), Some(0));
        assert_eq!(t.next_free(0..101, 50), Some(50));
        // The out-of-pool reservation slot 100 is never free.
        assert_eq!(t.next_free(0..101, 100), Some(0));
        for slot in 0..100 {
            t.update(
                1,
                &f.ring,
                slot,
                &SlotImage::PRISTINE,
                &lease(slot as u8),
                &ctx(),
            )
            .unwrap();
        }
        assert_eq!(t.next_free(0..101, 7), None);
        assert_eq!(t.next_free(101..1125, 0), Some(101));
        // Exhaust a whole summary word's worth in the big range and find the one left.
        for slot in 101..1124 {
            t.update(1, &f.ring, slot, &SlotImage::PRISTINE, &lease(1), &ctx())
                .unwrap();
        }
        assert_eq!(t.next_free(101..1125, 200), Some(1124));
        assert_eq!(t.count_free(0..1125), 1);
    }

    #[test]
    fn a_writer_killed_at_any_step_is_recovered() {
        for step in [
            Step::Intent,
            Step::Locked,
            Step::HalfWritten,
            Step::Bitmap,
            Step::Indexed,
            Step::Recorded,
            Step::Unlocked,
        ] {
            let f = fixture();
            let t = &f.table;
            let before = t
                .update(1, &f.ring, 9, &SlotImage::PRISTINE, &lease(1), &ctx())
                .unwrap();
            let released = SlotImage {
                state: LeaseState::Released,
                ..before
            };
            let _ = t.update_until(1, &f.ring, 9, &before, &released, &ctx(), Some(step));
            let expect_forward = matches!(step, Step::Recorded | Step::Unlocked);
            let outcome = t.recover_owner(1, Some(&f.ring));
            let after = t.read(9).unwrap();
            match step {
                Step::Intent | Step::Unlocked => assert_eq!(outcome, Recovery::IntentCleared),
                Step::Recorded => assert_eq!(outcome, Recovery::RolledForward(9)),
                _ => assert_eq!(outcome, Recovery::RolledBack(9), "{step:?}"),
            }
            if expect_forward {
                assert_eq!(after.state, LeaseState::Released, "{step:?}");
                assert_eq!(after.version, 2);
            } else {
                assert_eq!(after, before, "{step:?}");
            }
            let rep = t.check();
            assert!(rep.is_clean(), "{step:?}: {rep:?}");
            // The slot is writable again.
            t.update(1, &f.ring, 9, &after, &lease(3), &ctx()).unwrap();
            assert_eq!(t.recover_owner(1, Some(&f.ring)), Recovery::Nothing);
        }
    }

    #[test]
    fn a_writer_killed_while_rekeying_a_slot_leaves_both_keys_findable_as_committed() {
        for step in [
            Step::Locked,
            Step::HalfWritten,
            Step::Bitmap,
            Step::Indexed,
            Step::Recorded,
        ] {
            let f = fixture();
            let t = &f.table;
            let before = t
                .update(1, &f.ring, 9, &SlotImage::PRISTINE, &lease(1), &ctx())
                .unwrap();
            let _ = t.update_until(1, &f.ring, 9, &before, &lease(2), &ctx(), Some(step));
            t.recover_owner(1, Some(&f.ring));
            let (holder, gone) = if step == Step::Recorded {
                (lease(2).key, lease(1).key)
            } else {
                (lease(1).key, lease(2).key)
            };
            assert_eq!(t.find_client(&holder).map(|x| x.0), Some(9), "{step:?}");
            assert_eq!(t.find_client(&gone), None, "{step:?}");
            let rep = t.check();
            assert!(rep.is_clean(), "{step:?}: {rep:?}");
        }
    }

    #[test]
    fn a_dead_lock_holder_blocks_only_its_slot_until_recovered() {
        let f = fixture();
        let t = &f.table;
        let _ = t.update_until(
            1,
            &f.ring,
            3,
            &SlotImage::PRISTINE,
            &lease(1),
            &ctx(),
            Some(Step::Locked),
        );
        assert_eq!(t.read(3), Err(ReadError::Busy));
        assert_eq!(
            t.update(2, &f.ring, 3, &SlotImage::PRISTINE, &lease(2), &ctx()),
            Err(UpdateError::Conflict)
        );
        // Other slots are unaffected.
        t.update(2, &f.ring, 4, &SlotImage::PRISTINE, &lease(2), &ctx())
            .unwrap();
        t.recover_owner(1, Some(&f.ring));
        assert_eq!(t.read(3), Ok(SlotImage::PRISTINE));
        assert!(t.is_free(3));
    }

    #[test]
    fn a_lock_nobody_holds_is_reported_busy_at_once_not_spun_on() {
        let f = fixture();
        let t = &f.table;
        // 64 slots whose lock bytes name owners with no intent for them (a damaged page, or a
        // holder that no longer exists), as a sweeper step or an allocation may meet them.
        for slot in 0..64u32 {
            let w = t.slot_words(slot).unwrap();
            w[0].store(w[0].load(Ordering::Relaxed) | 0x07, Ordering::Release);
        }
        let t0 = std::time::Instant::now();
        for _ in 0..100 {
            for slot in 0..64u32 {
                assert_eq!(t.read(slot), Err(ReadError::Busy));
            }
        }
        // 6,400 reads: with the spin (256 rounds, half of them yielding) each would cost tens
        // of microseconds or more; without it, well under a microsecond.
        let per_read = t0.elapsed() / 6_400;
        assert!(
            per_read < std::time::Duration::from_micros(5),
            "{per_read:?} per read of a stale-locked slot"
        );
        // A lock whose owner does record an intent for the slot is still waited for.
        t.owner_words(7).unwrap()[INTENT_ACTIVE].store(3 + 1, Ordering::Release);
        assert!(!t.lock_is_stale(
            t.slot_words(3).unwrap(),
            3,
            t.slot_words(3).unwrap()[0].load(Ordering::Acquire)
        ));
        assert!(t.lock_is_stale(
            t.slot_words(4).unwrap(),
            4,
            t.slot_words(4).unwrap()[0].load(Ordering::Acquire)
        ));
    }

    #[test]
    fn reopen_validates_header_and_layout() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        drop(Table::create(&p, &spec()).unwrap());
        let t = Table::open_for(&p, &spec()).unwrap();
        t.lock_exclusive().unwrap();
        let t2 = Table::open(&p).unwrap();
        assert!(matches!(
            t2.lock_exclusive(),
            Err(TableOpenError::Locked { .. })
        ));
        drop((t, t2));
        let mut other = spec();
        other.ranges[0].last += 1;
        assert!(matches!(
            Table::open_for(&p, &other),
            Err(TableOpenError::LayoutMismatch { .. })
        ));
        assert!(Table::create(&p, &spec()).is_err(), "never overwrites");
        // Truncations at several points are refused with a clear error.
        let full = std::fs::read(&p).unwrap();
        for len in [0usize, 100, 4095, 4096, 8192, full.len() - 8] {
            let q = dir.path().join(format!("trunc{len}"));
            std::fs::write(&q, &full[..len]).unwrap();
            std::fs::set_permissions(&q, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            let e = Table::open(&q).unwrap_err().to_string();
            assert!(e.contains("unusable"), "{len}: {e}");
        }
        // Bad magic.
        let mut bad = full.clone();
        bad[0] ^= 0xff;
        let q = dir.path().join("badmagic");
        std::fs::write(&q, &bad).unwrap();
        std::fs::set_permissions(&q, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        assert!(Table::open(&q).unwrap_err().to_string().contains("magic"));
        // A symlink and a world-writable file are refused.
        let l = dir.path().join("link");
        std::os::unix::fs::symlink(&p, &l).unwrap();
        assert!(matches!(
            Table::open(&l),
            Err(TableOpenError::Unsafe { .. })
        ));
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
        assert!(matches!(
            Table::open(&p),
            Err(TableOpenError::Unsafe { .. })
        ));
    }

    #[test]
    fn bit_flips_are_found_and_repaired_as_abandoned() {
        let f = fixture();
        let t = &f.table;
        t.update(1, &f.ring, 7, &SlotImage::PRISTINE, &lease(1), &ctx())
            .unwrap();
        let w = &t.slot_words(7).unwrap()[2];
        w.fetch_xor(1 << 9, Ordering::Relaxed);
        assert!(matches!(t.read(7), Err(ReadError::Corrupt(_))));
        let rep = t.check();
        assert_eq!(rep.corrupt, vec![7]);
        t.repair(SUPERVISOR_OWNER, &f.ring);
        assert_eq!(t.read(7).unwrap().state, LeaseState::Abandoned);
        assert!(!t.is_free(7));
        assert!(t.check().is_clean());
    }

    /// A slot left locked with intact contents (a writer died holding it, and the bitmap or
    /// index page did not reach the disk): `check` skips locked slots, so `repair` used to
    /// unlock it and leave its wrong free bit and missing index entry. Found by the
    /// `table_open` fuzz target ("repair left bitmap mismatches [64]").
    #[test]
    fn repair_fixes_the_bitmap_and_index_of_a_slot_found_locked() {
        let f = fixture();
        let t = &f.table;
        t.update(1, &f.ring, 7, &SlotImage::PRISTINE, &lease(1), &ctx())
            .unwrap();
        t.update(1, &f.ring, 9, &SlotImage::PRISTINE, &lease(2), &ctx())
            .unwrap();
        // Slot 7: leased, but its free bit says allocatable. Slot 9: leased, not indexed.
        t.set_free_bit(7, true);
        t.index_remove(&lease(2).key, 9);
        assert!(t.find_client(&lease(2).key).is_none());
        for slot in [7, 9] {
            t.slot_words(slot).unwrap()[0].fetch_or(3, Ordering::AcqRel);
        }
        let before = t.repair(SUPERVISOR_OWNER, &f.ring);
        assert_eq!(before.locked, vec![7, 9]);
        let after = t.check();
        assert!(after.is_clean(), "{after:?}");
        assert!(!t.is_free(7));
        assert_eq!(t.find_client(&lease(2).key).map(|x| x.0), Some(9));
        assert_eq!(t.read(7).unwrap().state, LeaseState::Leased);
    }

    #[test]
    fn index_reuses_stale_entries() {
        let f = fixture();
        let t = &f.table;
        // Churn many clients through a few slots; the index must not fill up.
        let mut cur = [SlotImage::PRISTINE; 4];
        for round in 0..2000u32 {
            let slot = round % 4;
            let mut img = lease(0);
            img.key = ClientKey::from_client_id(&round.to_le_bytes());
            cur[slot as usize] = t
                .update(1, &f.ring, slot, &cur[slot as usize], &img, &ctx())
                .unwrap();
            assert_eq!(t.find_client(&img.key).map(|x| x.0), Some(slot));
        }
        let before = t.index_occupied();
        let cap = t.index_capacity();
        let mut emptied = 0;
        for _ in 0..3 {
            emptied += t.index_cleanup(0..cap);
        }
        assert!(emptied > 0);
        // What stays is the 4 live entries plus tombstones that still lead to a live entry
        // (the index key is random per table, so how many varies): no tombstone ends a chain.
        let idx = t.index();
        let mut tombstones = 0;
        for pos in 0..cap {
            if idx[pos].load(Ordering::Relaxed) == TOMBSTONE {
                tombstones += 1;
                assert_ne!(
                    idx[next(pos, cap)].load(Ordering::Relaxed),
                    0,
                    "chain end at {pos}"
                );
            }
        }
        assert_eq!(
            t.index_occupied(),
            4 + tombstones,
            "{before} before cleanup"
        );
        assert!(
            t.index_occupied() < before / 10,
            "{before} -> {}",
            t.index_occupied()
        );
        for slot in 0..4u32 {
            let img = t.read(slot).unwrap();
            assert_eq!(t.find_client(&img.key).map(|x| x.0), Some(slot));
        }
    }

    /// A test's action run once inside the next `index_insert`, just before its CAS.
    type IndexHook = Box<dyn FnOnce(&Table)>;

    thread_local! {
        static BEFORE_INDEX_CAS: std::cell::RefCell<Option<IndexHook>> =
            const { std::cell::RefCell::new(None) };
    }

    pub(super) fn before_index_cas(t: &Table) {
        if let Some(f) = BEFORE_INDEX_CAS.with(|h| h.borrow_mut().take()) {
            f(t);
        }
    }

    #[test]
    fn next_free_stays_inside_a_span_whose_tail_word_is_full() {
        // Subnet A is slots 0..101 (100 pool slots and one reservation), subnet B starts at 101.
        // Fill A's tail 64..100 and B's first slots up to 127, so bitmap word 1 is all zero and
        // the summary sends the scan to word 2 (slot 128, in subnet B).
        let f = fixture();
        let t = &f.table;
        for slot in (64..100).chain(101..128) {
            t.update(1, &f.ring, slot, &SlotImage::PRISTINE, &lease(1), &ctx())
                .unwrap();
        }
        assert!(t.is_free(128));
        assert_eq!(t.next_free(0..101, 64), Some(0), "wraps to A's free head");
        for slot in 0..64 {
            t.update(1, &f.ring, slot, &SlotImage::PRISTINE, &lease(1), &ctx())
                .unwrap();
        }
        assert_eq!(t.next_free(0..101, 64), None, "A is full");
        assert_eq!(t.next_free(0..101, 0), None, "A is full");
        assert_eq!(t.count_free(0..101), 0);
        assert_eq!(t.next_free(101..1125, 101), Some(128));
    }

    /// Slots of the property-test table: three whole summary words (4096 slots each) and a part.
    const PROP_SLOTS: u32 = 3 * 4096 + 1000;

    /// Span boundaries: anywhere, on a bitmap word, or near a summary word boundary.
    fn boundary() -> impl proptest::strategy::Strategy<Value = u32> {
        use proptest::prelude::*;
        prop_oneof![
            0..=PROP_SLOTS,
            (0..=PROP_SLOTS / 64).prop_map(|k| k * 64),
            (0..=PROP_SLOTS / 4096, -3i64..=3).prop_map(|(k, d)| (i64::from(k) * 4096 + d)
                .clamp(0, i64::from(PROP_SLOTS))
                as u32),
        ]
    }

    /// The first free slot at or after `start` within `span`, wrapping, the slow way.
    fn naive_next_free(free: &[bool], span: Range<u32>, start: u32) -> Option<u32> {
        if span.is_empty() {
            return None;
        }
        let start = if span.contains(&start) {
            start
        } else {
            span.start
        };
        (start..span.end)
            .chain(span.start..start)
            .find(|&s| free[s as usize])
    }

    #[test]
    fn next_free_and_count_free_match_a_naive_scan() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let dir = tempfile::tempdir().unwrap();
        let layout = LayoutSpec {
            ranges: vec![RangeSpec {
                first: 0x0a00_0000,
                last: 0x0a00_0000 + PROP_SLOTS - 1,
                in_pool: true,
            }],
        };
        let t = Table::create(&dir.path().join("t"), &layout).unwrap();
        let fill = (
            any::<bool>(),
            prop::collection::vec((0..PROP_SLOTS, 1u32..6000, any::<bool>()), 0..12),
            prop::collection::vec(0..PROP_SLOTS, 0..6),
            prop::collection::vec((boundary(), boundary(), 0..PROP_SLOTS + 64), 1..24),
        );
        let mut runner = TestRunner::new(Config::with_cases(512));
        runner
            .run(&fill, |(base_free, runs, singles, spans)| {
                let mut free = vec![base_free; PROP_SLOTS as usize];
                for (at, len, f) in runs {
                    let end = (at + len).min(PROP_SLOTS);
                    free[at as usize..end as usize].fill(f);
                }
                for s in singles {
                    free[s as usize] = !free[s as usize];
                }
                for (slot, &f) in free.iter().enumerate() {
                    t.set_free_bit(slot as u32, f);
                }
                for (a, b, start) in spans {
                    let span = a.min(b)..a.max(b);
                    let want = naive_next_free(&free, span.clone(), start);
                    let got = t.next_free(span.clone(), start);
                    prop_assert_eq!(got, want, "span {:?} start {}", span, start);
                    if let Some(g) = got {
                        prop_assert!(span.contains(&g) && free[g as usize]);
                    }
                    let count = free[span.start as usize..span.end as usize]
                        .iter()
                        .filter(|&&f| f)
                        .count() as u64;
                    prop_assert_eq!(t.count_free(span.clone()), count, "span {:?}", span);
                }
                Ok(())
            })
            .unwrap();
    }

    fn key(id: &str) -> ClientKey {
        ClientKey::from_client_id(id.as_bytes())
    }

    fn holding(k: ClientKey) -> SlotImage {
        SlotImage { key: k, ..lease(0) }
    }

    #[test]
    fn an_insert_racing_index_cleanup_stays_reachable() {
        let f = fixture();
        let t = &f.table;
        // A live entry of another client (slot 5) sits at the victim's home position H, and
        // H+1 is empty, so the victim's insert picks H+1. Just before its CAS, the other
        // client's entry is removed (tombstone) and cleanup empties H, which now ends the chain.
        let other = t
            .update(
                1,
                &f.ring,
                5,
                &SlotImage::PRISTINE,
                &holding(key("other")),
                &ctx(),
            )
            .unwrap();
        let victim = key("victim");
        let cap = t.index_capacity();
        let h = t.key_hash(&victim);
        let at = home(h, cap);
        let other_entry = (tag_of(t.key_hash(&other.key)) << 32) | 6;
        t.index()[at].store(other_entry, Ordering::Relaxed);
        t.index()[next(at, cap)].store(0, Ordering::Relaxed);
        let ran = std::rc::Rc::new(std::cell::Cell::new(false));
        let ran2 = ran.clone();
        BEFORE_INDEX_CAS.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(move |t: &Table| {
                t.index()[at].store(TOMBSTONE, Ordering::Release);
                assert_eq!(t.index_cleanup(at..at + 1), 1, "cleanup empties H");
                ran2.set(true);
            }))
        });
        t.update(
            1,
            &f.ring,
            7,
            &SlotImage::PRISTINE,
            &holding(victim),
            &ctx(),
        )
        .unwrap();
        assert!(ran.get(), "the interleaving ran");
        assert_eq!(
            t.find_client(&victim).map(|x| x.0),
            Some(7),
            "the victim's entry is reachable from its home"
        );
        assert_eq!(t.index_give_ups(), 0);
    }

    #[test]
    fn a_saturated_probe_chain_counts_a_give_up() {
        let f = fixture();
        let t = &f.table;
        let other = t
            .update(
                1,
                &f.ring,
                5,
                &SlotImage::PRISTINE,
                &holding(key("other")),
                &ctx(),
            )
            .unwrap();
        // Every index entry names a live, correctly keyed slot: nothing is reusable.
        let e = (tag_of(t.key_hash(&other.key)) << 32) | 6;
        for x in t.index() {
            x.store(e, Ordering::Relaxed);
        }
        assert_eq!(t.index_give_ups(), 0);
        t.update(
            1,
            &f.ring,
            7,
            &SlotImage::PRISTINE,
            &holding(key("late")),
            &ctx(),
        )
        .unwrap();
        assert_eq!(t.index_give_ups(), 1);
        // As documented on find_client: the lookup does not scan the slots.
        assert_eq!(t.find_client(&key("late")), None);
        assert_eq!(t.find_client(&key("other")).map(|x| x.0), Some(5));
        // The counter is in the file: another mapping sees it.
        assert_eq!(Table::open(t.path()).unwrap().index_give_ups(), 1);
    }

    #[test]
    fn two_tables_hash_the_same_key_to_different_home_positions() {
        let (a, b) = (fixture(), fixture());
        let cap = a.table.index_capacity();
        assert_eq!(cap, b.table.index_capacity());
        let keys: Vec<ClientKey> = (0..16).map(|i| key(&format!("client-{i}"))).collect();
        let same = keys
            .iter()
            .filter(|k| home(a.table.key_hash(k), cap) == home(b.table.key_hash(k), cap))
            .count();
        // Independent random keys: each home agrees with probability 1/cap (≈ 0.0004).
        assert!(same <= 1, "{same} of 16 keys share their home position");
        // And each table finds its own clients.
        for (t, ring) in [(&a.table, &a.ring), (&b.table, &b.ring)] {
            t.update(1, ring, 3, &SlotImage::PRISTINE, &holding(keys[0]), &ctx())
                .unwrap();
            assert_eq!(t.find_client(&keys[0]).map(|x| x.0), Some(3));
        }
    }

    #[test]
    fn a_table_from_before_index_keys_keeps_its_unkeyed_index() {
        let f = fixture();
        let path = f.table.path().to_path_buf();
        let k = key("old-client");
        // Build the state an older build left: no key words, the entry placed by the plain hash.
        f.table.w()[hw::INDEX_KEY0].store(0, Ordering::Relaxed);
        f.table.w()[hw::INDEX_KEY1].store(0, Ordering::Relaxed);
        let old = Table::open(&path).unwrap();
        assert_eq!(old.key_hash(&k), k.hash());
        old.update(1, &f.ring, 4, &SlotImage::PRISTINE, &holding(k), &ctx())
            .unwrap();
        drop(old);
        let again = Table::open(&path).unwrap();
        assert_eq!(again.find_client(&k).map(|x| x.0), Some(4));
        assert!(again.check().is_clean());
    }

    #[test]
    fn a_full_ring_rolls_back_the_index_and_never_reuses_a_version() {
        let dir = tempfile::tempdir().unwrap();
        let t = Table::create(&dir.path().join("t"), &spec()).unwrap();
        let ring = Ring::open_or_create(&dir.path().join("ring"), 1, 16).unwrap();
        let before = t
            .update(
                1,
                &ring,
                9,
                &SlotImage::PRISTINE,
                &holding(key("a")),
                &ctx(),
            )
            .unwrap();
        for slot in 20..35 {
            t.update(
                1,
                &ring,
                slot,
                &SlotImage::PRISTINE,
                &lease(slot as u8),
                &ctx(),
            )
            .unwrap();
        }
        assert_eq!(ring.head(), 16);
        ring.refuse_appends.store(true, Ordering::Relaxed); // the record cannot be written
                                                            // Re-keying slot 9 to "b" (released, so its free bit would be set) cannot be recorded.
        let attempted = SlotImage {
            state: LeaseState::Released,
            ..holding(key("b"))
        };
        assert_eq!(
            t.update(1, &ring, 9, &before, &attempted, &ctx()),
            Err(UpdateError::RingFull(RingFullError))
        );
        let after = t.read(9).unwrap();
        assert_eq!(after.version, before.version + 2, "v+1 is never reused");
        assert_eq!(
            SlotImage {
                version: 0,
                ..after
            },
            SlotImage {
                version: 0,
                ..before
            }
        );
        assert!(!t.is_free(9));
        assert_eq!(
            t.find_client(&key("a")).map(|x| x.0),
            Some(9),
            "old key findable"
        );
        assert_eq!(
            t.find_client(&key("b")),
            None,
            "new key gone from the index"
        );
        assert_eq!(t.lock_owner(9), 0);
        assert_eq!(t.recover_owner(1, Some(&ring)), Recovery::Nothing);
        let rep = t.check();
        assert!(rep.is_clean(), "{rep:?}");
        // Once the ring takes records again, the write goes through on a fresh read only.
        ring.refuse_appends.store(false, Ordering::Relaxed);
        assert_eq!(
            t.update(1, &ring, 9, &before, &attempted, &ctx()),
            Err(UpdateError::Conflict)
        );
        let done = t.update(1, &ring, 9, &after, &attempted, &ctx()).unwrap();
        assert_eq!(done.version, before.version + 3);
        assert_eq!(t.find_client(&key("b")).map(|x| x.0), Some(9));
        // Every version of slot 9 still in the ring names one image only, and the version the
        // failed image held under the lock (2) was never given to another image.
        let mut seen: std::collections::HashMap<u64, SlotImage> = Default::default();
        for rec in (1..=ring.head()).filter_map(|seq| ring.read(seq)) {
            if rec.slot == 9 {
                let prev = seen.insert(rec.image.version, rec.image);
                assert!(prev.is_none_or(|p| p == rec.image));
            }
        }
        assert_eq!(seen.get(&4), Some(&done));
        assert!(!seen.contains_key(&2) && !seen.contains_key(&3));
    }

    #[test]
    fn a_writer_killed_inside_abandon_corrupt_is_recovered() {
        for step in [
            Step::Intent,
            Step::Locked,
            Step::HalfWritten,
            Step::Bitmap,
            Step::Recorded,
            Step::Unlocked,
        ] {
            let f = fixture();
            let t = &f.table;
            t.update(1, &f.ring, 7, &SlotImage::PRISTINE, &lease(1), &ctx())
                .unwrap();
            t.slot_words(7).unwrap()[2].fetch_xor(1 << 9, Ordering::Relaxed);
            assert!(matches!(t.read(7), Err(ReadError::Corrupt(_))));
            assert!(!t.abandon_corrupt_until(SUPERVISOR_OWNER, &f.ring, 7, Some(step)));
            let outcome = t.recover_owner(SUPERVISOR_OWNER, Some(&f.ring));
            match step {
                Step::Intent | Step::Unlocked => {
                    assert_eq!(outcome, Recovery::IntentCleared, "{step:?}")
                }
                Step::Recorded => assert_eq!(outcome, Recovery::RolledForward(7), "{step:?}"),
                _ => assert_eq!(outcome, Recovery::RolledBack(7), "{step:?}"),
            }
            assert_eq!(t.lock_owner(7), 0, "{step:?}: still locked");
            if matches!(step, Step::Recorded | Step::Unlocked) {
                assert_eq!(t.read(7).unwrap().state, LeaseState::Abandoned, "{step:?}");
            } else {
                // Back to the torn words: the next repair pass abandons the slot.
                assert!(matches!(t.read(7), Err(ReadError::Corrupt(_))), "{step:?}");
                assert!(t.abandon_corrupt(SUPERVISOR_OWNER, &f.ring, 7), "{step:?}");
                assert_eq!(t.read(7).unwrap().state, LeaseState::Abandoned);
            }
            assert!(!t.is_free(7));
            let rep = t.check();
            assert!(rep.is_clean(), "{step:?}: {rep:?}");
            assert_eq!(
                t.recover_owner(SUPERVISOR_OWNER, Some(&f.ring)),
                Recovery::Nothing
            );
        }
    }
}
