//! Where everything lives in the table file, computed from the pool layout.
//!
//! API Boundary: this is a versioned on-disk format ([`LAYOUT_VERSION`]). Any change to word
//! positions, slot encoding or region order must bump the version; an old file is then refused
//! with a clear error (or migrated by the supervisor), never reinterpreted.

use std::net::Ipv4Addr;

use crate::hash::{fmix64, hash64};

/// Version of the table file layout.
pub const LAYOUT_VERSION: u64 = 1;
/// File magic ("PDHCPTBL").
pub const MAGIC: u64 = u64::from_le_bytes(*b"PDHCPTBL");
/// Value of the "initialised" header word once creation completed (written last).
pub const INIT_MARK: u64 = MAGIC ^ LAYOUT_VERSION;

/// Words in the header (one 4 KiB page).
pub const HEADER_WORDS: usize = 512;
/// Most owners (writers) a table tracks: worker ids map to owners 1..=64; see [`crate::table::worker_owner`].
pub const MAX_OWNERS: usize = 128;
/// Words per owner record (intent record + counters).
pub const OWNER_WORDS: usize = 128;
/// First counter word within an owner record.
pub const OWNER_COUNTERS_START: usize = 32;
/// Owner-record word a running worker increments every loop turn (at least every 200 ms): its
/// heartbeat, which the supervisor watches to kill a hung worker. Words 0–17 hold the intent
/// record, 29–31 the heartbeat and the writer's process, 32 on the counters; 18–28 are free.
/// (Before it had its own word the heartbeat was counter 26, which stays unused.)
pub const OWNER_HEARTBEAT: usize = 29;
/// Owner-record word holding the pid of the process writing as that owner (0 = none).
pub const OWNER_PROCESS_PID: usize = 30;
/// Owner-record word holding that process's start time (`/proc/<pid>/stat` field 22, clock
/// ticks since boot), so a reused pid is not taken for the writer.
pub const OWNER_PROCESS_START: usize = 31;
/// Counters available per owner.
pub const OWNER_COUNTERS: usize = OWNER_WORDS - OWNER_COUNTERS_START;
/// Most address ranges a table can have.
pub const MAX_RANGES: usize = 1 << 20;
/// Most slots a table can have (2^26 ≈ 67 million addresses).
pub const MAX_SLOTS: u64 = 1 << 26;

/// Header word positions.
pub(crate) mod hw {
    pub(crate) const MAGIC: usize = 0;
    pub(crate) const LAYOUT_VERSION: usize = 1;
    pub(crate) const FILE_BYTES: usize = 2;
    pub(crate) const FINGERPRINT: usize = 3;
    pub(crate) const SLOT_COUNT: usize = 4;
    pub(crate) const RANGE_COUNT: usize = 5;
    pub(crate) const INDEX_CAPACITY: usize = 6;
    pub(crate) const CREATED: usize = 7;
    pub(crate) const INITIALIZED: usize = 8;
    pub(crate) const CLEAN: usize = 9;
    pub(crate) const BOOT_ID_HI: usize = 10;
    pub(crate) const BOOT_ID_LO: usize = 11;
    pub(crate) const EPOCH: usize = 12;
    pub(crate) const OPEN_COUNT: usize = 13;
    pub(crate) const INDEX_OCCUPIED: usize = 14;
    pub(crate) const LAST_OPEN: usize = 15;
    /// Words 40–41: the client index's SipHash key, random per table, written at creation.
    /// Both zero in a table created before the key existed (it is then hashed unkeyed, as it
    /// was built; see `Table::open`). Uses words every older table holds as zero, so no
    /// layout version change was needed.
    pub(crate) const INDEX_KEY0: usize = 40;
    pub(crate) const INDEX_KEY1: usize = 41;
    /// Client index inserts that gave up (probe limit or CAS retries exhausted).
    pub(crate) const INDEX_GIVE_UPS: usize = 42;
    /// Words 43–45: live pool changes (issue 10). Slots the regions are sized for (0 in a
    /// table from before live changes: sized for exactly `SLOT_COUNT`), range directory entries
    /// they are sized for (0: as many as fit the directory's pages), and the layout generation,
    /// a seqlock over the range directory and the counts: odd while the supervisor changes
    /// them, bumped by 2 per change. All zero in older tables, which read as before.
    pub(crate) const SLOT_CAPACITY: usize = 43;
    pub(crate) const RANGE_CAPACITY: usize = 44;
    pub(crate) const LAYOUT_GEN: usize = 45;
    /// Word 46: where the range directory in force is, once a live change moved it: bit 63
    /// set, bits 21–41 its first entry within the directory region, bits 0–20 its entry count.
    /// Zero: at the region's start with `RANGE_COUNT` entries (every table until its first live
    /// change). A change writes the new directory beside the one in force and then switches
    /// this one word, so a crash at any point leaves one whole directory in force.
    pub(crate) const DIRECTORY: usize = 46;
}

/// The [`hw::DIRECTORY`] word for a directory of `count` entries starting at entry `at`.
pub(crate) fn directory_word(at: u64, count: u64) -> u64 {
    1 << 63 | (at & 0x1f_ffff) << 21 | (count & 0x1f_ffff)
}

/// The (first entry, entry count) a non-zero [`hw::DIRECTORY`] word names.
pub(crate) fn directory_place(word: u64) -> (u64, u64) {
    ((word >> 21) & 0x1f_ffff, word & 0x1f_ffff)
}

/// One contiguous run of addresses that has slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeSpec {
    /// First address (host order).
    pub first: u32,
    /// Last address, inclusive.
    pub last: u32,
    /// Whether the allocator may hand out these addresses (a pool) or they only exist for
    /// reservations outside the pools.
    pub in_pool: bool,
}

impl RangeSpec {
    /// Number of addresses.
    pub fn len(&self) -> u64 {
        u64::from(self.last) - u64::from(self.first) + 1
    }

    /// Always false: a range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The pool layout a table is built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutSpec {
    /// Sorted by `first`, disjoint.
    pub ranges: Vec<RangeSpec>,
}

/// Why a layout cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// No ranges at all.
    #[error("the pool layout is empty: configure at least one pool or reservation")]
    Empty,
    /// Ranges out of order or overlapping.
    #[error("address ranges overlap or are not sorted at range {0}")]
    Overlap(usize),
    /// A range with last < first.
    #[error("address range {0} ends before it starts")]
    Inverted(usize),
    /// More addresses than a table can hold.
    #[error("{0} addresses exceed the table limit of {MAX_SLOTS}")]
    TooManySlots(u64),
    /// More ranges than a table can hold.
    #[error("{0} ranges exceed the table limit of {MAX_RANGES}")]
    TooManyRanges(usize),
}

impl LayoutSpec {
    /// The layout of these runs of slots, each given in plain form as `(first address, last
    /// address, in_pool)`, in the order given (callers pass them sorted and disjoint;
    /// [`LayoutSpec::validate`] checks).
    ///
    /// Which addresses get slots is `prodhcp_config::Config::table_layout`; the worker and the
    /// supervisor both pass its runs here field by field (`(t.range.first, t.range.last,
    /// t.in_pool)`), so both build the same layout, hence the same fingerprint, without either
    /// crate depending on the other.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (Ipv4Addr, Ipv4Addr, bool)>) -> LayoutSpec {
        LayoutSpec {
            ranges: ranges
                .into_iter()
                .map(|(first, last, in_pool)| RangeSpec {
                    first: u32::from(first),
                    last: u32::from(last),
                    in_pool,
                })
                .collect(),
        }
    }

    /// Checks ordering and limits.
    pub fn validate(&self) -> Result<(), LayoutError> {
        if self.ranges.is_empty() {
            return Err(LayoutError::Empty);
        }
        if self.ranges.len() > MAX_RANGES {
            return Err(LayoutError::TooManyRanges(self.ranges.len()));
        }
        for (i, r) in self.ranges.iter().enumerate() {
            if r.last < r.first {
                return Err(LayoutError::Inverted(i));
            }
            if i > 0 && self.ranges[i - 1].last >= r.first {
                return Err(LayoutError::Overlap(i));
            }
        }
        let n = self.slot_count();
        if n > MAX_SLOTS {
            return Err(LayoutError::TooManySlots(n));
        }
        Ok(())
    }

    /// Total number of slots.
    pub fn slot_count(&self) -> u64 {
        self.ranges.iter().map(RangeSpec::len).sum()
    }

    /// A hash of the layout: a table built for another layout has another fingerprint.
    pub fn fingerprint(&self) -> u64 {
        let mut h = fmix64(LAYOUT_VERSION);
        for r in &self.ranges {
            let mut b = [0u8; 9];
            b[..4].copy_from_slice(&r.first.to_le_bytes());
            b[4..8].copy_from_slice(&r.last.to_le_bytes());
            b[8] = u8::from(r.in_pool);
            h = hash64(h, &b);
        }
        h
    }
}

/// Word offsets of every region, derived from the slot and range capacities, and the live
/// slot and range counts (which grow, up to the capacities, with live pool changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Slots in use (addresses of the range directory).
    pub slot_count: u64,
    /// Range directory entries in use.
    pub range_count: u64,
    /// Slots the regions are sized for (≥ `slot_count`).
    pub slot_capacity: u64,
    /// Range directory entries the directory is sized for (≥ `range_count`).
    pub range_capacity: u64,
    /// Range directory (2 words per range).
    pub ranges_off: usize,
    /// Owner records.
    pub owners_off: usize,
    /// Slot array.
    pub slots_off: usize,
    /// Free bitmap (1 bit per slot, 1 = allocatable).
    pub bitmap_off: usize,
    /// Words of the free bitmap.
    pub bitmap_words: usize,
    /// Summary bitmap (1 bit per free-bitmap word, 1 = that word may have a free bit).
    pub summary_off: usize,
    /// Words of the summary.
    pub summary_words: usize,
    /// Client index (open addressing, one word per entry).
    pub index_off: usize,
    /// Entries of the client index (twice the slots: load factor ≤ 0.5 for live keys).
    pub index_capacity: usize,
    /// Total words of the file.
    pub total_words: usize,
}

fn page_round(words: usize) -> usize {
    words.div_ceil(512) * 512
}

impl Geometry {
    /// The geometry of a table sized for exactly `slot_count` slots and `range_count` ranges
    /// (the directory rounded up to whole pages): every table from before live pool changes.
    pub fn new(slot_count: u64, range_count: u64) -> Geometry {
        let range_capacity = (page_round(range_count as usize * 2) / 2) as u64;
        Geometry::with_capacity(slot_count, range_count, slot_count, range_capacity)
    }

    /// The geometry of a table whose regions are sized for `slot_capacity` slots and
    /// `range_capacity` directory entries, of which `slot_count` and `range_count` are in use.
    pub fn with_capacity(
        slot_count: u64,
        range_count: u64,
        slot_capacity: u64,
        range_capacity: u64,
    ) -> Geometry {
        let slots = slot_capacity as usize;
        let ranges_off = HEADER_WORDS;
        let owners_off = ranges_off + page_round(range_capacity as usize * 2);
        let slots_off = owners_off + MAX_OWNERS * OWNER_WORDS;
        let bitmap_off = slots_off + page_round(slots * crate::slot::SLOT_WORDS);
        let bitmap_words = slots.div_ceil(64);
        let summary_off = bitmap_off + page_round(bitmap_words);
        let summary_words = bitmap_words.div_ceil(64);
        let index_off = summary_off + page_round(summary_words);
        let index_capacity = (slots * 2).max(1024).div_ceil(512) * 512;
        Geometry {
            slot_count,
            range_count,
            slot_capacity,
            range_capacity,
            ranges_off,
            owners_off,
            slots_off,
            bitmap_off,
            bitmap_words,
            summary_off,
            summary_words,
            index_off,
            index_capacity,
            total_words: index_off + page_round(index_capacity),
        }
    }

    /// File size in bytes.
    pub fn file_bytes(&self) -> u64 {
        self.total_words as u64 * 8
    }
}

/// The capacity a new table gets for `spec`: room for live pool changes (issue 10) of a
/// quarter of its addresses, at least 262,144 (four /16 pools), and as many directory entries
/// again as it has, at least 4,096. Costs, per address of room, 64 bytes of slot, 16 of index
/// and a bit of bitmap (a /8 table: about 335 MB more on disk); a change needing more than the room
/// left takes a restart, which migrates to a new table with room again.
pub fn default_capacity(spec: &LayoutSpec) -> (u64, u64) {
    let slots = spec.slot_count();
    let ranges = spec.ranges.len() as u64;
    let slot_capacity = (slots + (slots / 4).max(1 << 18)).min(MAX_SLOTS).max(slots);
    let range_capacity = (ranges + ranges.max(4096))
        .min(MAX_RANGES as u64)
        .max(ranges);
    (slot_capacity, range_capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ranges: &[(u32, u32, bool)]) -> LayoutSpec {
        LayoutSpec {
            ranges: ranges
                .iter()
                .map(|&(first, last, in_pool)| RangeSpec {
                    first,
                    last,
                    in_pool,
                })
                .collect(),
        }
    }

    #[test]
    fn validation_catches_overlap_inversion_and_size() {
        assert_eq!(spec(&[]).validate(), Err(LayoutError::Empty));
        assert_eq!(
            spec(&[(10, 20, true), (20, 30, true)]).validate(),
            Err(LayoutError::Overlap(1))
        );
        assert_eq!(
            spec(&[(10, 5, true)]).validate(),
            Err(LayoutError::Inverted(0))
        );
        assert!(matches!(
            spec(&[(0, u32::MAX, true)]).validate(),
            Err(LayoutError::TooManySlots(_))
        ));
        assert_eq!(spec(&[(10, 20, true), (21, 30, false)]).validate(), Ok(()));
    }

    #[test]
    fn fingerprint_depends_on_every_field() {
        let a = spec(&[(10, 20, true)]).fingerprint();
        assert_ne!(a, spec(&[(10, 21, true)]).fingerprint());
        assert_ne!(a, spec(&[(11, 20, true)]).fingerprint());
        assert_ne!(a, spec(&[(10, 20, false)]).fingerprint());
        assert_eq!(a, spec(&[(10, 20, true)]).fingerprint());
    }

    #[test]
    fn from_ranges_keeps_order_bounds_and_kind() {
        let ip = Ipv4Addr::new;
        let built = LayoutSpec::from_ranges([
            (ip(10, 0, 0, 10), ip(10, 0, 0, 20), true),
            (ip(10, 0, 0, 200), ip(10, 0, 0, 200), false),
        ]);
        assert_eq!(
            built,
            spec(&[
                (0x0a00_000a, 0x0a00_0014, true),
                (0x0a00_00c8, 0x0a00_00c8, false)
            ])
        );
    }

    #[test]
    fn slash8_table_is_under_100_bytes_per_address() {
        let n = (1u64 << 24) - 2;
        let g = Geometry::new(n, 1);
        let per = g.file_bytes() as f64 / n as f64;
        assert!(per <= 100.0, "{per} bytes per address");
        assert!(g.index_capacity as u64 >= 2 * n);
    }
}
