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
//!
//! # Where the code lives
//!
//! One `impl Table` block per part, each in its own file:
//! - this file: the types every part shares, the [`Table`] handle, address ↔ slot mapping,
//!   slot reads (the seqlock) and the owner records;
//! - `open`: create, open and validate a table file (header, range directory, fingerprint),
//!   the header's state words (epoch, clean flag, boot id);
//! - `bitmap`: the free bitmap and its summary level (`next_free`, `count_free`);
//! - `index`: the keyed client index (lookups, inserts, tombstones and their cleanup);
//! - `write`: the write protocol ([`Table::update`], [`Table::abandon_corrupt`]) and the
//!   intent records it keeps;
//! - `recover`: completing or undoing a dead writer's change ([`Table::recover_owner`]);
//! - `check`: the full consistency check and the repair after a power loss.

mod bitmap;
mod check;
mod index;
mod open;
mod recover;
mod relayout;
mod replica;
#[cfg(test)]
mod testing;
mod write;

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU64, Ordering};

use crate::layout::{Geometry, RangeSpec, MAX_OWNERS, OWNER_COUNTERS_START, OWNER_WORDS};
use crate::mapping::WordMapping;
use crate::slot::{SlotDecodeError, SlotImage, SLOT_WORDS};

pub use check::CheckReport;
pub(crate) use index::{home, next, tag_of, MAX_PROBE, TOMBSTONE};
pub use open::{boot_id, TableOpenError};
pub use recover::Recovery;
pub use relayout::{LayoutPlan, RelayoutError};
pub use replica::{replica_wins, ApplyError, ApplyOutcome, ReplicaContext};
pub use write::{ChangeContext, UpdateError};
pub(crate) use write::{INTENT_ACTIVE, INTENT_NEW, INTENT_OLD, INTENT_SEQ};

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

/// A resolved address range of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeEntry {
    /// The range.
    pub spec: RangeSpec,
    /// Slot index of its first address.
    pub base: u32,
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

/// A mapped lease table.
#[derive(Debug)]
pub struct Table {
    map: WordMapping,
    file: File,
    path: PathBuf,
    geo: Geometry,
    /// The range directory sorted by address.
    ranges: Vec<RangeEntry>,
    /// The range directory in slot order (as in the file).
    by_slot: Vec<RangeEntry>,
    fingerprint: u64,
    /// First entry of the directory in force within the directory region (0 until a live
    /// change moved it; see `hw::DIRECTORY`).
    dir_at: u64,
    /// The layout generation the cached directory was read at ([`Table::refresh_layout`]).
    layout_gen: u64,
    /// SipHash key of the client index (`None`: a table from before keys, hashed unkeyed).
    index_key: Option<(u64, u64)>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Table {
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
            .by_slot
            .partition_point(|r| u64::from(r.base) + r.spec.len() <= u64::from(slot));
        self.by_slot.get(i).filter(|r| slot >= r.base)
    }

    /// The range directory in slot order (as in the file: ranges added by live pool changes
    /// come last).
    pub fn ranges_by_slot(&self) -> &[RangeEntry] {
        &self.by_slot
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

    /// The slot spans holding the addresses `first..=last` (e.g. a subnet), in address order,
    /// runs that follow each other in slot order merged: one span unless live pool changes
    /// added some of these addresses after others.
    pub fn slot_spans(&self, first: u32, last: u32) -> Vec<Range<u32>> {
        let lo = self.ranges.partition_point(|r| r.spec.last < first);
        let mut spans: Vec<Range<u32>> = Vec::new();
        for r in self.ranges[lo..]
            .iter()
            .take_while(|r| r.spec.first <= last)
        {
            let start = r.base + first.saturating_sub(r.spec.first);
            let end = r.base + (last.min(r.spec.last) - r.spec.first) + 1;
            match spans.last_mut() {
                Some(prev) if prev.end == start => prev.end = end,
                _ => spans.push(start..end),
            }
        }
        spans
    }

    /// The slot span covering the addresses `first..=last` (e.g. a subnet), if any slot lies
    /// in it: from the slot of its first address with a slot to the slot after its last. Only
    /// meaningful while those addresses are one run of slots (see [`Table::slot_spans`]).
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::testing::*;

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
    fn a_lock_nobody_holds_is_reported_busy_at_once_not_spun_on() {
        let f = fixture();
        let t = &f.table;
        // 64 slots whose lock bytes name owners with no intent for them (a damaged page, or a
        // holder that no longer exists), as a sweeper step or an allocation may meet them.
        for slot in 0..64u32 {
            let w = t.slot_words(slot).unwrap();
            w[0].store(w[0].load(Ordering::Relaxed) | 0x07, Ordering::Release);
        }
        // 10 batches of 640 reads: with the spin (256 rounds, half of them yielding) each read
        // would cost tens of microseconds or more; without it, well under a microsecond. The
        // fastest batch is judged, so one preemption on a loaded machine does not count.
        let per_read = (0..10)
            .map(|_| {
                let t0 = std::time::Instant::now();
                for _ in 0..10 {
                    for slot in 0..64u32 {
                        assert_eq!(t.read(slot), Err(ReadError::Busy));
                    }
                }
                t0.elapsed() / 640
            })
            .min()
            .expect("10 batches");
        assert!(
            per_read < std::time::Duration::from_micros(5),
            "{per_read:?} per read of a stale-locked slot (fastest of 10 batches)"
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
}
