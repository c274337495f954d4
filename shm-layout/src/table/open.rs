//! Creating and opening a table file: the header, the range directory and the layout
//! fingerprint, the exclusive lock, and the header's state words (epoch, clean flag, boot id).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::bitmap::set_bits;
use super::{now_secs, RangeEntry, Table};
use crate::layout::{
    directory_place, hw, Geometry, LayoutSpec, RangeSpec, HEADER_WORDS, INIT_MARK, LAYOUT_VERSION,
    MAGIC, MAX_RANGES, MAX_SLOTS,
};
use crate::mapping::{preallocate, write_zeros, WordMapping};

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
    /// and renamed), sized for exactly its addresses: no room for live pool changes. Fails if
    /// `path` exists.
    pub fn create(path: &Path, spec: &LayoutSpec) -> Result<Table, TableOpenError> {
        let range_capacity =
            Geometry::new(spec.slot_count(), spec.ranges.len() as u64).range_capacity;
        Table::create_with_capacity(path, spec, spec.slot_count(), range_capacity)
    }

    /// Creates a new table file for `spec` at `path` with room for live pool changes: regions
    /// sized for `slot_capacity` slots and `range_capacity` directory entries (see
    /// [`crate::layout::default_capacity`]). Fails if `path` exists.
    pub fn create_with_capacity(
        path: &Path,
        spec: &LayoutSpec,
        slot_capacity: u64,
        range_capacity: u64,
    ) -> Result<Table, TableOpenError> {
        spec.validate()?;
        let slot_capacity = slot_capacity.clamp(spec.slot_count(), MAX_SLOTS);
        let range_capacity = range_capacity.clamp(spec.ranges.len() as u64, MAX_RANGES as u64);
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
        let geo = Geometry::with_capacity(
            spec.slot_count(),
            spec.ranges.len() as u64,
            slot_capacity,
            range_capacity,
        );
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
            put(hw::SLOT_CAPACITY, geo.slot_capacity);
            put(hw::RANGE_CAPACITY, geo.range_capacity);
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
        let directory = get(hw::DIRECTORY);
        let (dir_at, range_count) = match directory {
            0 => (0, get(hw::RANGE_COUNT)),
            d => directory_place(d),
        };
        if slot_count == 0 || slot_count > MAX_SLOTS || range_count == 0 {
            return Err(corrupt(format!(
                "implausible slot count {slot_count} / range count {range_count}"
            )));
        }
        if range_count > MAX_RANGES as u64 {
            return Err(corrupt(format!("implausible range count {range_count}")));
        }
        let geo = match (get(hw::SLOT_CAPACITY), get(hw::RANGE_CAPACITY)) {
            (0, 0) if directory == 0 => Geometry::new(slot_count, range_count),
            (sc, rc) if sc <= MAX_SLOTS && rc <= MAX_RANGES as u64 && sc > 0 && rc > 0 => {
                Geometry::with_capacity(slot_count.min(sc), range_count, sc, rc)
            }
            (sc, rc) => {
                return Err(corrupt(format!(
                    "implausible capacity {sc} slots / {rc} ranges for {slot_count} / {range_count}"
                )))
            }
        };
        if dir_at + range_count > geo.range_capacity {
            return Err(corrupt(format!(
                "range directory at entry {dir_at} with {range_count} entries exceeds its region"
            )));
        }
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
        // Before any live change the header's slot count and fingerprint are checked against
        // the directory; after one, they are derived from the directory in force (the words
        // beside it are updated after the switch and may lag behind a crash).
        let expect = (directory == 0).then(|| (slot_count, get(hw::FINGERPRINT)));
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
        let dir = read_directory(w, &geo, dir_at, range_count, expect).map_err(corrupt)?;
        let mut geo = geo;
        geo.slot_count = dir.slot_count;
        let layout_gen = get_gen(w) & !1;
        Ok(Table {
            map,
            file,
            path: path.to_path_buf(),
            geo,
            ranges: dir.by_address,
            by_slot: dir.by_slot,
            fingerprint: dir.fingerprint,
            dir_at,
            index_key,
            layout_gen,
        })
    }

    /// Opens `path` and checks that it serves `spec` as it is ([`Table::serves`]: every
    /// address of `spec` has a slot with the same pool flag; retired addresses may have more).
    pub fn open_for(path: &Path, spec: &LayoutSpec) -> Result<Table, TableOpenError> {
        let t = Table::open(path)?;
        let expected = spec.fingerprint();
        if !t.serves(spec) {
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
}

/// The layout generation word (even when no change is under way).
fn get_gen(w: &[std::sync::atomic::AtomicU64]) -> u64 {
    w[hw::LAYOUT_GEN].load(Ordering::Acquire)
}

/// A range directory as read from the file.
pub(super) struct Directory {
    /// Entries in slot order (as in the file).
    pub(super) by_slot: Vec<RangeEntry>,
    /// The same entries sorted by address.
    pub(super) by_address: Vec<RangeEntry>,
    /// Slots the entries cover.
    pub(super) slot_count: u64,
    /// Fingerprint over the entries in slot order.
    pub(super) fingerprint: u64,
}

/// Reads and checks the range directory of `count` entries from entry `at` of the directory
/// region: bases run on in directory order from 0 (ranges added by live pool changes come
/// last, so the directory is in slot order, not address order), addresses never overlap, the
/// slots fit the capacity; with `expect`, the slot count and fingerprint must be those given.
pub(super) fn read_directory(
    w: &[std::sync::atomic::AtomicU64],
    geo: &Geometry,
    at: u64,
    count: u64,
    expect: Option<(u64, u64)>,
) -> Result<Directory, String> {
    let mut by_slot = Vec::with_capacity(count as usize);
    let mut expect_base = 0u64;
    let first = geo.ranges_off + 2 * at as usize;
    for i in 0..count as usize {
        let a = w[first + 2 * i].load(Ordering::Relaxed);
        let b = w[first + 2 * i + 1].load(Ordering::Relaxed);
        let spec = RangeSpec {
            first: a as u32,
            last: (a >> 32) as u32,
            in_pool: b >> 63 == 1,
        };
        let base = b & !(1 << 63);
        if spec.last < spec.first || base != expect_base {
            return Err(format!("range directory entry {i} is inconsistent"));
        }
        expect_base += spec.len();
        by_slot.push(RangeEntry {
            spec,
            base: base as u32,
        });
    }
    if expect_base > geo.slot_capacity {
        return Err(format!(
            "range directory covers {expect_base} slots, more than the {} the file holds",
            geo.slot_capacity
        ));
    }
    let fingerprint = LayoutSpec {
        ranges: by_slot.iter().map(|r| r.spec).collect(),
    }
    .fingerprint();
    if let Some((slots, fp)) = expect {
        if expect_base != slots {
            return Err("range directory does not add up to the slot count".into());
        }
        if fp != fingerprint {
            return Err("fingerprint does not match the range directory".into());
        }
    }
    let mut by_address = by_slot.clone();
    by_address.sort_unstable_by_key(|r| r.spec.first);
    if let Some(i) =
        (1..by_address.len()).find(|&i| by_address[i - 1].spec.last >= by_address[i].spec.first)
    {
        return Err(format!(
            "range directory entries overlap at address range {i}"
        ));
    }
    Ok(Directory {
        by_slot,
        by_address,
        slot_count: expect_base,
        fingerprint,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::testing::*;

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
}
