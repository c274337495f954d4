//! Live pool changes (issue 10): the range directory changes while every process serves.
//!
//! A slot never moves. A change can only
//! - **add** addresses: new directory entries after the last one, on slots after the last slot
//!   in use (up to the capacity the file was created with; the slot, bitmap and index regions
//!   are sized for it, so nothing is re-mapped or moved);
//! - **split** an entry where its addresses stop or start being pool addresses (the two parts
//!   keep their slots: their bases follow each other, so the directory stays in slot order);
//! - **flip** an entry's `in_pool` flag: addresses that leave every pool (a pool removed or
//!   shrunk) keep their slots and leases — the lease of a removed address lives until it
//!   expires or is released; renewals are refused (the address is no longer in a pool of its
//!   subnet) and the client moves to a pool address — but their free bits are cleared, so the
//!   allocator never offers them again; addresses that come back into a pool get their free
//!   bits back.
//!
//! The supervisor (the only process that changes the directory) writes the new directory and
//! counts under the layout generation word (odd while it writes); every other process keeps its
//! own copy of the directory and re-reads it with [`Table::refresh_layout`] (workers when they
//! apply the configuration that needed the change, syncd and the audit process when they meet
//! a slot beyond their copy, or the generation moved).

use std::sync::atomic::Ordering;

use super::{RangeEntry, Table};
use crate::layout::{directory_place, directory_word, hw, LayoutSpec, RangeSpec};
use crate::slot::SLOT_WORDS;

/// Why a layout change cannot be made without a restart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayoutError {
    /// More slots than the table has room for.
    #[error("the change needs {needed} slots but the table has room for {capacity}; a restart migrates the leases to a table with room")]
    NoSlotRoom {
        /// Slots the new directory needs.
        needed: u64,
        /// Slots the file was created for.
        capacity: u64,
    },
    /// More directory entries than the table has room for.
    #[error("the change needs {needed} range directory entries but the table has room for {capacity}; a restart migrates the leases to a table with room")]
    NoRangeRoom {
        /// Entries the new directory needs.
        needed: u64,
        /// Entries the file was created for.
        capacity: u64,
    },
    /// The requested layout is invalid.
    #[error("invalid pool layout: {0}")]
    Layout(#[from] crate::layout::LayoutError),
}

/// A change of the range directory, as [`Table::plan_layout`] computes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutPlan {
    /// The new directory, in slot order (bases follow from the order).
    pub directory: Vec<RangeSpec>,
    /// Addresses that get slots (new directory entries).
    pub added: u64,
    /// Addresses that had slots and now become pool addresses.
    pub into_pool: u64,
    /// Addresses that had slots in a pool and leave every pool (their slots stay).
    pub out_of_pool: u64,
    /// Addresses that have slots but are in no range of the new layout (retired: kept until
    /// their leases end; includes reservations removed).
    pub retired: u64,
}

impl LayoutPlan {
    /// Whether the table already serves the layout as it is.
    pub fn is_empty(&self) -> bool {
        self.added == 0 && self.into_pool == 0 && self.out_of_pool == 0
    }
}

/// A directory just written from a plan that `plan_layout` validated fails to read back only if
/// the plan was not made on this table: a programming error, not bad input.
fn unreachable_directory(e: &str) -> ! {
    panic!("the range directory just written does not read back: {e}")
}

/// The runs of `entry` split where membership of `spec`'s pool ranges changes, each with its
/// pool flag; also counts what flips into `plan`.
fn split_entry(entry: &RangeSpec, spec: &[RangeSpec], plan: &mut LayoutPlan) -> Vec<RangeSpec> {
    let mut runs: Vec<RangeSpec> = Vec::new();
    let push = |first: u32, last: u32, in_pool: bool, runs: &mut Vec<RangeSpec>| match runs
        .last_mut()
    {
        Some(prev) if prev.in_pool == in_pool && u64::from(prev.last) + 1 == u64::from(first) => {
            prev.last = last
        }
        _ => runs.push(RangeSpec {
            first,
            last,
            in_pool,
        }),
    };
    let lo = spec.partition_point(|r| r.last < entry.first);
    let mut at = u64::from(entry.first);
    let end = u64::from(entry.last);
    for r in spec[lo..].iter().take_while(|r| r.first <= entry.last) {
        let (a, b) = (u64::from(r.first).max(at), u64::from(r.last).min(end));
        if a > at {
            // Addresses of the entry in no range of the new layout: retired.
            plan.retired += a - at;
            if entry.in_pool {
                plan.out_of_pool += a - at;
            }
            push(at as u32, (a - 1) as u32, false, &mut runs);
        }
        let n = b - a + 1;
        match (entry.in_pool, r.in_pool) {
            (false, true) => plan.into_pool += n,
            (true, false) => plan.out_of_pool += n,
            _ => {}
        }
        push(a as u32, b as u32, r.in_pool, &mut runs);
        at = b + 1;
    }
    if at <= end {
        plan.retired += end - at + 1;
        if entry.in_pool {
            plan.out_of_pool += end - at + 1;
        }
        push(at as u32, end as u32, false, &mut runs);
    }
    runs
}

/// The parts of `r` that no entry of `have` (sorted by address) covers.
fn uncovered(r: &RangeSpec, have: &[RangeEntry], out: &mut Vec<RangeSpec>) {
    let lo = have.partition_point(|e| e.spec.last < r.first);
    let mut at = u64::from(r.first);
    for e in have[lo..].iter().take_while(|e| e.spec.first <= r.last) {
        if u64::from(e.spec.first) > at {
            out.push(RangeSpec {
                first: at as u32,
                last: e.spec.first - 1,
                in_pool: r.in_pool,
            });
        }
        at = u64::from(e.spec.last) + 1;
    }
    if at <= u64::from(r.last) {
        out.push(RangeSpec {
            first: at as u32,
            last: r.last,
            in_pool: r.in_pool,
        });
    }
}

impl Table {
    /// What it takes for this table to serve `spec` (sorted and disjoint, as
    /// `Config::table_layout` gives it): entries split and flagged where pool membership
    /// changed, and entries added for addresses without a slot. Checks the room left.
    pub fn plan_layout(&self, spec: &LayoutSpec) -> Result<LayoutPlan, RelayoutError> {
        spec.validate()?;
        let mut plan = LayoutPlan {
            directory: Vec::with_capacity(self.by_slot.len()),
            added: 0,
            into_pool: 0,
            out_of_pool: 0,
            retired: 0,
        };
        for e in &self.by_slot {
            let runs = split_entry(&e.spec, &spec.ranges, &mut plan);
            plan.directory.extend(runs);
        }
        let mut new = Vec::new();
        for r in &spec.ranges {
            uncovered(r, &self.ranges, &mut new);
        }
        plan.added = new.iter().map(RangeSpec::len).sum();
        plan.directory.extend(new);
        let needed_slots = self.geo.slot_count + plan.added;
        if needed_slots > self.geo.slot_capacity {
            return Err(RelayoutError::NoSlotRoom {
                needed: needed_slots,
                capacity: self.geo.slot_capacity,
            });
        }
        let needed_ranges = plan.directory.len() as u64;
        if !plan.is_empty() && self.directory_room(needed_ranges).is_none() {
            return Err(RelayoutError::NoRangeRoom {
                needed: needed_ranges + self.geo.range_count,
                capacity: self.geo.range_capacity,
            });
        }
        Ok(plan)
    }

    /// Where a new directory of `entries` entries can be written beside the one in force (its
    /// first entry within the directory region): before it if it fits there, else after it.
    fn directory_room(&self, entries: u64) -> Option<u64> {
        let (at, n, cap) = (self.dir_at, self.geo.range_count, self.geo.range_capacity);
        if entries <= at {
            Some(0)
        } else if at + n + entries <= cap {
            Some(at + n)
        } else {
            None
        }
    }

    /// Whether the table serves `spec` as it is: every address of it has a slot with the same
    /// pool flag (addresses with slots beyond it are retired ones, which is fine).
    pub fn serves(&self, spec: &LayoutSpec) -> bool {
        self.plan_layout(spec).is_ok_and(|p| p.is_empty())
    }

    /// Makes the change `plan` (from [`Table::plan_layout`] on this table, just before): writes
    /// the new directory, the counts and the fingerprint under the layout generation, sets the
    /// free bits of new pool slots, and fixes the free bits of slots whose pool flag changed
    /// (each under the slot's lock as `owner`, so they never disagree with the slot's state;
    /// a slot busy at that moment keeps its bit until the next scrub pass fixes it — counted in
    /// the return value). Only the supervisor calls this, while no other process changes the
    /// directory. Returns the number of slots whose bit could not be fixed.
    pub fn apply_layout(&mut self, plan: &LayoutPlan, owner: u8) -> u64 {
        let old_by_slot = self.by_slot.clone();
        let old_slots = self.geo.slot_count;
        let geo = self.geo;
        let Some(at) = self.directory_room(plan.directory.len() as u64) else {
            return 0; // plan_layout refused it already
        };
        let w = self.map.words();
        let gen = w[hw::LAYOUT_GEN].load(Ordering::Acquire) & !1;
        // Tables from before live changes have no capacity words: write what they were sized
        // for, so the geometry never again depends on the counts.
        w[hw::SLOT_CAPACITY].store(geo.slot_capacity, Ordering::Relaxed);
        w[hw::RANGE_CAPACITY].store(geo.range_capacity, Ordering::Relaxed);
        w[hw::LAYOUT_GEN].store(gen | 1, Ordering::Release);
        // The new directory goes beside the one in force, which stays whole until the switch.
        let first = geo.ranges_off + 2 * at as usize;
        let mut base = 0u64;
        for (i, r) in plan.directory.iter().enumerate() {
            w[first + 2 * i].store(
                u64::from(r.first) | (u64::from(r.last) << 32),
                Ordering::Relaxed,
            );
            w[first + 2 * i + 1].store(base | (u64::from(r.in_pool) << 63), Ordering::Relaxed);
            base += r.len();
        }
        // The switch: one word. Make the entries durable first, so a power cut cannot leave
        // the word naming entries that never reached the disk.
        let _ = self.map.flush_range(
            (geo.ranges_off + 2 * at as usize) * 8,
            plan.directory.len() * 16,
        );
        let count = plan.directory.len() as u64;
        w[hw::DIRECTORY].store(directory_word(at, count), Ordering::Release);
        let _ = self.map.flush_range(0, crate::layout::HEADER_WORDS * 8);
        // Our own copy first (read back as every other process reads it): the bit fixes below
        // ask it which slots are pool slots. It was written just above from a validated plan.
        let dir = match super::open::read_directory(w, &geo, at, count, None) {
            Ok(d) => d,
            Err(e) => unreachable_directory(&e),
        };
        w[hw::FINGERPRINT].store(dir.fingerprint, Ordering::Relaxed);
        w[hw::RANGE_COUNT].store(count, Ordering::Relaxed);
        w[hw::SLOT_COUNT].store(dir.slot_count, Ordering::Relaxed);
        self.dir_at = at;
        self.geo.slot_count = dir.slot_count;
        self.geo.range_count = count;
        self.fingerprint = dir.fingerprint;
        self.by_slot = dir.by_slot;
        self.ranges = dir.by_address;
        // New slots are pristine (all zero, never used): free if in a pool.
        let mut not_fixed = 0;
        for e in self
            .by_slot
            .iter()
            .filter(|e| u64::from(e.base) >= old_slots)
        {
            if e.spec.in_pool {
                for slot in e.base..e.base + e.spec.len() as u32 {
                    self.set_free_bit(slot, true);
                }
            }
        }
        // Old slots whose pool flag changed.
        for old in &old_by_slot {
            for e in self.ranges_by_slot_between(old.base, old.base + old.spec.len() as u32) {
                if e.spec.in_pool == old.spec.in_pool {
                    continue;
                }
                for slot in e.base..e.base + e.spec.len() as u32 {
                    if !self.fix_free_bit(slot, owner) {
                        not_fixed += 1;
                    }
                }
            }
        }
        self.map.words()[hw::LAYOUT_GEN].store(gen + 2, Ordering::Release);
        self.layout_gen = gen + 2;
        not_fixed
    }

    fn ranges_by_slot_between(&self, from: u32, to: u32) -> Vec<RangeEntry> {
        let i = self
            .by_slot
            .partition_point(|r| u64::from(r.base) + r.spec.len() <= u64::from(from));
        self.by_slot[i..]
            .iter()
            .take_while(|r| r.base < to)
            .copied()
            .collect()
    }

    /// Sets `slot`'s free bit to what its state and pool flag say, under its lock as `owner`.
    /// False when the slot was busy (a writer holds it) or unreadable.
    fn fix_free_bit(&self, slot: u32, owner: u8) -> bool {
        let Some(s) = self.slot_words(slot) else {
            return false;
        };
        for _ in 0..16 {
            let mut words = [0u64; SLOT_WORDS];
            for (i, x) in words.iter_mut().enumerate() {
                *x = s[i].load(Ordering::Acquire);
            }
            if words[0] & 0xff != 0 {
                std::hint::spin_loop();
                continue;
            }
            let Ok(img) = self.read(slot) else {
                return false;
            };
            let want = self.bit_should_be_free(slot, img.state);
            if self.is_free(slot) == want {
                return true;
            }
            if self
                .with_slot_held(owner, slot, &words, || self.set_free_bit(slot, want))
                .is_some()
            {
                return true;
            }
        }
        false
    }

    /// Re-reads the range directory and counts if the supervisor changed them since this
    /// handle read them. Returns whether anything changed. An error means the directory in
    /// the file is damaged (the copy held so far is kept).
    pub fn refresh_layout(&mut self) -> Result<bool, String> {
        for _ in 0..1000 {
            let w = self.map.words();
            let gen = w[hw::LAYOUT_GEN].load(Ordering::Acquire);
            if gen == self.layout_gen {
                return Ok(false);
            }
            if gen & 1 == 1 {
                std::thread::sleep(std::time::Duration::from_micros(100));
                continue;
            }
            let (at, count) = match w[hw::DIRECTORY].load(Ordering::Acquire) {
                0 => (0, w[hw::RANGE_COUNT].load(Ordering::Acquire)),
                d => directory_place(d),
            };
            if at + count > self.geo.range_capacity {
                continue;
            }
            let read = super::open::read_directory(w, &self.geo, at, count, None);
            if w[hw::LAYOUT_GEN].load(Ordering::Acquire) != gen {
                continue;
            }
            let dir = read?;
            self.geo.slot_count = dir.slot_count;
            self.geo.range_count = count;
            self.fingerprint = dir.fingerprint;
            self.by_slot = dir.by_slot;
            self.ranges = dir.by_address;
            self.dir_at = at;
            self.layout_gen = gen;
            return Ok(true);
        }
        Err("the range directory kept changing while being read".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::testing::*;
    use crate::table::SUPERVISOR_OWNER;
    use crate::{Ring, SlotImage};

    fn r(first: u32, last: u32, in_pool: bool) -> RangeSpec {
        RangeSpec {
            first,
            last,
            in_pool,
        }
    }

    fn roomy(dir: &std::path::Path, spec: &LayoutSpec) -> Table {
        let (sc, rc) = crate::layout::default_capacity(spec);
        Table::create_with_capacity(&dir.join("t"), spec, sc, rc).unwrap()
    }

    #[test]
    fn adding_a_pool_appends_slots_and_moves_no_lease() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = roomy(dir.path(), &spec());
        let ring = Ring::open_or_create(&dir.path().join("ring"), 1, 1024).unwrap();
        // A lease in each old pool.
        let a = t.slot_of_addr(0x0a00_0070).unwrap();
        let b = t.slot_of_addr(0x0b00_0010).unwrap();
        for (slot, mac) in [(a, 1), (b, 2)] {
            t.update(1, &ring, slot, &SlotImage::PRISTINE, &lease(mac), &ctx())
                .unwrap();
        }
        let before = t.fingerprint();
        // A new pool between the two old ones by address, and one after.
        let mut new = spec();
        new.ranges.insert(2, r(0x0a80_0000, 0x0a80_ffff, true));
        new.ranges.push(r(0x0c00_0000, 0x0c00_00ff, true));
        assert!(!t.serves(&new));
        let plan = t.plan_layout(&new).unwrap();
        assert_eq!(plan.added, 65536 + 256);
        assert_eq!((plan.into_pool, plan.out_of_pool), (0, 0));
        let old_count = t.slot_count();
        assert_eq!(t.apply_layout(&plan, SUPERVISOR_OWNER), 0);
        assert!(t.serves(&new));
        assert_ne!(t.fingerprint(), before);
        // Old addresses keep their slots and leases.
        assert_eq!(t.slot_of_addr(0x0a00_0070), Some(a));
        assert_eq!(t.slot_of_addr(0x0b00_0010), Some(b));
        assert_eq!(t.read(a).unwrap().key, lease(1).key);
        // New addresses are on slots after the old ones, free, and map both ways.
        let n = t.slot_of_addr(0x0a80_0005).unwrap();
        assert!(n >= old_count);
        assert_eq!(t.addr_of_slot(n), Some(0x0a80_0005));
        assert!(t.is_free(n) && t.slot_in_pool(n));
        assert_eq!(
            t.slot_spans(0x0a80_0000, 0x0a80_ffff),
            vec![n - 5..n - 5 + 65536]
        );
        // Reopening reads the same directory; another handle sees it after a refresh.
        let again = Table::open(t.path()).unwrap();
        assert_eq!(again.ranges(), t.ranges());
        assert_eq!(again.ranges_by_slot(), t.ranges_by_slot());
        assert!(again.check().is_clean(), "{:?}", again.check());
    }

    #[test]
    fn a_handle_refreshes_after_a_change_by_another() {
        let dir = tempfile::tempdir().unwrap();
        let mut sup = roomy(dir.path(), &spec());
        let mut worker = Table::open(sup.path()).unwrap();
        assert_eq!(worker.refresh_layout(), Ok(false));
        let mut new = spec();
        new.ranges.push(r(0x0c00_0000, 0x0c00_00ff, true));
        let plan = sup.plan_layout(&new).unwrap();
        sup.apply_layout(&plan, SUPERVISOR_OWNER);
        assert_eq!(worker.slot_of_addr(0x0c00_0001), None);
        assert_eq!(worker.refresh_layout(), Ok(true));
        assert_eq!(
            worker.slot_of_addr(0x0c00_0001),
            sup.slot_of_addr(0x0c00_0001)
        );
        assert_eq!(worker.slot_count(), sup.slot_count());
        assert_eq!(worker.refresh_layout(), Ok(false));
    }

    #[test]
    fn removing_a_pool_keeps_its_leases_and_stops_offering_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = roomy(dir.path(), &spec());
        let ring = Ring::open_or_create(&dir.path().join("ring"), 1, 1024).unwrap();
        let leased = t.slot_of_addr(0x0b00_0010).unwrap();
        t.update(1, &ring, leased, &SlotImage::PRISTINE, &lease(7), &ctx())
            .unwrap();
        // Keep the first pool and the reservation; shrink the second to its first half.
        let mut new = spec();
        new.ranges[2] = r(0x0b00_0000, 0x0b00_01ff, true);
        let plan = t.plan_layout(&new).unwrap();
        assert_eq!(plan.added, 0);
        assert_eq!(plan.out_of_pool, 512);
        assert_eq!(plan.retired, 512);
        let span = t.slot_span(0x0b00_0000, 0x0b00_03ff);
        let free_before = t.count_free(span.clone());
        assert_eq!(t.apply_layout(&plan, SUPERVISOR_OWNER), 0);
        assert!(t.serves(&new));
        assert_eq!(t.count_free(span.clone()), free_before - 512);
        let gone = t.slot_of_addr(0x0b00_0300).unwrap();
        assert!(!t.is_free(gone) && !t.slot_in_pool(gone));
        // The lease in the kept half is untouched, its slot the same.
        assert_eq!(t.slot_of_addr(0x0b00_0010), Some(leased));
        assert_eq!(t.read(leased).unwrap().key, lease(7).key);
        assert!(t.check().is_clean(), "{:?}", t.check());
        // Putting the pool back flips the slots back: same slots, free again.
        let plan = t.plan_layout(&spec()).unwrap();
        assert_eq!((plan.added, plan.into_pool), (0, 512));
        t.apply_layout(&plan, SUPERVISOR_OWNER);
        assert_eq!(t.slot_of_addr(0x0b00_0300), Some(gone));
        assert!(t.is_free(gone));
        assert_eq!(t.count_free(span), free_before);
        assert!(t.check().is_clean(), "{:?}", t.check());
    }

    #[test]
    fn a_change_beyond_the_room_left_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let t = Table::create(&dir.path().join("t"), &spec()).unwrap();
        let mut new = spec();
        new.ranges.push(r(0x0c00_0000, 0x0c00_00ff, true));
        assert!(matches!(
            t.plan_layout(&new),
            Err(RelayoutError::NoSlotRoom { .. })
        ));
        // A table without room can still drop a pool (no slot needed).
        let mut fewer = spec();
        fewer.ranges.pop();
        assert!(t.plan_layout(&fewer).is_ok());
    }

    #[test]
    fn a_pool_grown_into_a_retired_range_reuses_it_and_adds_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = roomy(dir.path(), &spec());
        let old = t.slot_of_addr(0x0a00_00c7).unwrap();
        // 10.0.0.100-199 grows to 10.0.0.100-250.
        let mut new = spec();
        new.ranges[0] = r(0x0a00_0064, 0x0a00_00fa, true);
        let plan = t.plan_layout(&new).unwrap();
        assert_eq!(plan.added, 51);
        t.apply_layout(&plan, SUPERVISOR_OWNER);
        assert_eq!(t.slot_of_addr(0x0a00_00c7), Some(old));
        let spans = t.slot_spans(0x0a00_0000, 0x0a00_00ff);
        assert_eq!(spans.len(), 2, "{spans:?}");
        assert_eq!(spans.iter().map(|s| s.len()).sum::<usize>(), 151);
        assert!(t.check().is_clean());
    }

    #[test]
    fn many_changes_keep_leases_and_every_reopen_reads_the_directory_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = roomy(dir.path(), &spec());
        let ring = Ring::open_or_create(&dir.path().join("ring"), 1, 1024).unwrap();
        let leased = t.slot_of_addr(0x0b00_0010).unwrap();
        t.update(1, &ring, leased, &SlotImage::PRISTINE, &lease(9), &ctx())
            .unwrap();
        let mut layout = spec();
        for round in 0..40u32 {
            // Add a /24 each round; every other round drop the first pool, then put it back.
            layout.ranges.push(r(
                0x0d00_0000 + round * 256,
                0x0d00_00ff + round * 256,
                true,
            ));
            let mut want = layout.clone();
            if round % 2 == 0 {
                want.ranges.remove(0);
            }
            let plan = t.plan_layout(&want).unwrap();
            t.apply_layout(&plan, SUPERVISOR_OWNER);
            assert!(t.serves(&want), "round {round}");
            let again = Table::open(t.path()).unwrap();
            assert_eq!(again.ranges_by_slot(), t.ranges_by_slot(), "round {round}");
            assert_eq!(again.fingerprint(), t.fingerprint(), "round {round}");
            assert_eq!(again.slot_of_addr(0x0b00_0010), Some(leased));
            assert_eq!(again.read(leased).unwrap().key, lease(9).key);
        }
        assert!(t.check().is_clean(), "{:?}", t.check());
    }

    #[test]
    fn a_change_cut_short_before_or_after_the_switch_leaves_a_whole_directory() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = roomy(dir.path(), &spec());
        let before = t.ranges_by_slot().to_vec();
        let mut new = spec();
        new.ranges.push(r(0x0c00_0000, 0x0c00_00ff, true));
        let plan = t.plan_layout(&new).unwrap();
        // Cut short before the switch: entries written beside, generation odd, word unchanged.
        let at = t.directory_room(plan.directory.len() as u64).unwrap();
        let w = t.w();
        w[hw::LAYOUT_GEN].store(1, Ordering::Release);
        for (i, e) in plan.directory.iter().enumerate() {
            let o = t.geo.ranges_off + 2 * (at as usize + i);
            w[o].store(
                u64::from(e.first) | u64::from(e.last) << 32,
                Ordering::Relaxed,
            );
            w[o + 1].store(0x5555, Ordering::Relaxed); // torn garbage
        }
        let reopened = Table::open(t.path()).unwrap();
        assert_eq!(reopened.ranges_by_slot(), &before[..]);
        drop(reopened);
        // Cut short after the switch: the word names the new directory, but the slot count and
        // fingerprint words beside it still hold the old values.
        let plan = t.plan_layout(&new).unwrap();
        t.apply_layout(&plan, SUPERVISOR_OWNER);
        let w = t.w();
        w[hw::SLOT_COUNT].store(before.iter().map(|e| e.spec.len()).sum(), Ordering::Relaxed);
        w[hw::FINGERPRINT].store(12345, Ordering::Relaxed);
        w[hw::LAYOUT_GEN].fetch_or(1, Ordering::Release);
        let reopened = Table::open(t.path()).unwrap();
        assert!(reopened.serves(&new));
        assert_eq!(reopened.slot_count(), t.slot_count());
        assert_eq!(reopened.fingerprint(), t.fingerprint());
    }
}
