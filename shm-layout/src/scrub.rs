//! Background scrub: an incremental, resumable check of the whole table while writers run.
//!
//! A start does not read the table (10M leases answer 0.12 s after exec), so damage to a
//! cleanly-closed file — a bad sector, a stray write, a bit flip — would go unnoticed until a
//! client trips over it. The scrub walks the table in small chunks (the supervisor runs one
//! chunk at a time between its other work) and checks, in three phases:
//!
//! 1. **Slots**: every slot against its crc; a torn slot is taken out of service through
//!    [`Table::abandon_corrupt`] (as a power-loss repair does). For every readable slot, its
//!    free-bitmap bit against its state, and — when it carries a client key — that the client
//!    index holds the entry for it (missing entries are inserted).
//! 2. **Summary**: every free-bitmap word with a free bit has its summary bit set (a missing one
//!    hides free addresses from the allocator). A summary bit over an empty word is harmless and
//!    cleared lazily by writers, so it is not a finding.
//! 3. **Index**: every index entry names a slot that exists and carries a key with the entry's
//!    tag; a stale or garbage entry becomes a tombstone.
//!
//! The slot is the truth; bitmaps and index are derived from it and rebuilt from it.
//!
//! # Safety against writers
//!
//! Slots are read as the write protocol's seqlock; a slot that is locked (or changes while it
//! is read) is *busy*: skipped and counted, never judged. A repair of a slot's bitmap bit or index
//! entry is made while holding that slot's lock, taken with the same protocol as
//! [`Table::update`] (an intent whose old and new images are both the image read, then the CAS on
//! word 0 from the version read), and the finding is re-checked under the lock: a writer that
//! changed the slot in between makes the CAS fail (counted busy), and one that fixed the same
//! thing meanwhile leaves nothing to repair. The slot's version does not change (its contents do
//! not). If the scrubbing process dies holding the lock, [`Table::recover_owner`] rolls the slot
//! "back" to the unchanged image, fixing its bit and index entry again. Summary bits are only ever
//! set (an idempotent `fetch_or`, which no writer's update can be hurt by); index entries only
//! become tombstones by compare-and-swap from the exact stale value, under the named slot's lock.

use std::ops::Range;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use crate::slot::{ClientKey, SlotImage, SLOT_WORDS};
use crate::table::{
    home, next, tag_of, Table, INTENT_ACTIVE, INTENT_NEW, INTENT_OLD, INTENT_SEQ, MAX_PROBE,
    TOMBSTONE,
};
use crate::writer::Writer;

/// What a scrub (a pass, or one step of it) checked and found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubCounts {
    /// Slots read.
    pub slots_checked: u64,
    /// Slots or entries skipped because a writer held or changed the slot meanwhile.
    pub busy_skipped: u64,
    /// Slots locked by an owner that has no intent for them (a damaged lock byte, or a writer
    /// id that does not exist): no writer would ever unlock them.
    pub stuck_locks: u64,
    /// Of those, unlocked (and then checked like any slot).
    pub stuck_locks_cleared: u64,
    /// Slots failing their checksum.
    pub torn_slots: u64,
    /// Torn slots rewritten as `abandoned`.
    pub torn_abandoned: u64,
    /// Free-bitmap bits that disagreed with their slot's state.
    pub bitmap_wrong: u64,
    /// Of those, corrected.
    pub bitmap_fixed: u64,
    /// Missing summary bits over bitmap words that have free bits.
    pub summary_wrong: u64,
    /// Of those, set.
    pub summary_fixed: u64,
    /// Keyed slots the client index did not hold.
    pub unindexed: u64,
    /// Of those, re-inserted (an insert into a saturated probe chain can fail).
    pub unindexed_fixed: u64,
    /// Index entries checked.
    pub index_checked: u64,
    /// Index entries naming no slot, or a slot whose key has another tag.
    pub stale_index: u64,
    /// Of those, turned into tombstones.
    pub stale_index_fixed: u64,
}

impl ScrubCounts {
    /// Every finding: torn slots, wrong bitmap and summary bits, missing and stale index entries.
    pub fn damaged(&self) -> u64 {
        self.stuck_locks
            + self.torn_slots
            + self.bitmap_wrong
            + self.summary_wrong
            + self.unindexed
            + self.stale_index
    }

    /// Findings repaired.
    pub fn repaired(&self) -> u64 {
        self.stuck_locks_cleared
            + self.torn_abandoned
            + self.bitmap_fixed
            + self.summary_fixed
            + self.unindexed_fixed
            + self.stale_index_fixed
    }

    /// Adds `o` to these counts.
    pub fn add(&mut self, o: &ScrubCounts) {
        self.slots_checked += o.slots_checked;
        self.busy_skipped += o.busy_skipped;
        self.stuck_locks += o.stuck_locks;
        self.stuck_locks_cleared += o.stuck_locks_cleared;
        self.torn_slots += o.torn_slots;
        self.torn_abandoned += o.torn_abandoned;
        self.bitmap_wrong += o.bitmap_wrong;
        self.bitmap_fixed += o.bitmap_fixed;
        self.summary_wrong += o.summary_wrong;
        self.summary_fixed += o.summary_fixed;
        self.unindexed += o.unindexed;
        self.unindexed_fixed += o.unindexed_fixed;
        self.index_checked += o.index_checked;
        self.stale_index += o.stale_index;
        self.stale_index_fixed += o.stale_index_fixed;
    }
}

/// Phase of a scrub pass, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScrubPhase {
    /// Slots by crc, their bitmap bits and index entries; positions are slot numbers.
    Slots,
    /// Summary bits; positions are summary words.
    Summary,
    /// Client index entries; positions are index entries.
    Index,
    /// The pass is complete.
    Done,
}

impl ScrubPhase {
    /// Lower-case name for logs and status.
    pub fn name(self) -> &'static str {
        match self {
            ScrubPhase::Slots => "slots",
            ScrubPhase::Summary => "summary",
            ScrubPhase::Index => "index",
            ScrubPhase::Done => "done",
        }
    }
}

/// What one [`Scrub::step`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubStep {
    /// The phase the step worked in.
    pub phase: ScrubPhase,
    /// Positions covered (slots, summary words or index entries, by phase).
    pub covered: Range<u64>,
    /// What it found.
    pub counts: ScrubCounts,
    /// First and last position with a finding (for an aggregated log line), if any.
    pub findings_at: Option<(u64, u64)>,
}

/// One scrub pass over a table, advanced a chunk at a time by [`Scrub::step`].
#[derive(Debug, Clone)]
pub struct Scrub {
    phase: ScrubPhase,
    pos: u64,
    counts: ScrubCounts,
}

impl Default for Scrub {
    fn default() -> Self {
        Scrub::new()
    }
}

impl Scrub {
    /// A pass starting at the first slot.
    pub fn new() -> Scrub {
        Scrub {
            phase: ScrubPhase::Slots,
            pos: 0,
            counts: ScrubCounts::default(),
        }
    }

    /// Whether the pass is complete.
    pub fn is_done(&self) -> bool {
        self.phase == ScrubPhase::Done
    }

    /// The current phase.
    pub fn phase(&self) -> ScrubPhase {
        self.phase
    }

    /// Totals of the pass so far.
    pub fn counts(&self) -> &ScrubCounts {
        &self.counts
    }

    /// Position reached in the current phase and the phase's length.
    pub fn progress(&self, t: &Table) -> (u64, u64) {
        (self.pos, phase_len(t, self.phase))
    }

    /// Runs the whole pass at once (tests, tools).
    pub fn run(w: Writer<'_>) -> ScrubCounts {
        let mut s = Scrub::new();
        while !s.is_done() {
            s.step(w, 1 << 16);
        }
        s.counts
    }

    /// Checks (and repairs) up to `budget` positions of the current phase: `budget` slots or
    /// index entries, or `budget / 64` summary words. Repairs are written by `w`, whose ring
    /// records abandoned slots; its owner must not be used by anybody else meanwhile.
    pub fn step(&mut self, w: Writer<'_>, budget: usize) -> ScrubStep {
        let t = w.table();
        let phase = self.phase;
        let len = phase_len(t, phase);
        let n = match phase {
            ScrubPhase::Summary => (budget / 64).max(1),
            _ => budget.max(1),
        } as u64;
        let from = self.pos;
        let to = (from + n).min(len);
        let mut c = ScrubCounts::default();
        let mut at: Option<(u64, u64)> = None;
        for pos in from..to {
            let before = c.damaged();
            match phase {
                ScrubPhase::Slots => scrub_slot(w, pos as u32, &mut c),
                ScrubPhase::Summary => scrub_summary_word(t, pos as usize, &mut c),
                ScrubPhase::Index => scrub_index_entry(w, pos as usize, &mut c),
                ScrubPhase::Done => {}
            }
            if c.damaged() != before {
                at = Some((at.map_or(pos, |a| a.0), pos));
            }
        }
        self.pos = to;
        if to >= len {
            self.phase = match phase {
                ScrubPhase::Slots => ScrubPhase::Summary,
                ScrubPhase::Summary => ScrubPhase::Index,
                ScrubPhase::Index | ScrubPhase::Done => ScrubPhase::Done,
            };
            self.pos = 0;
        }
        self.counts.add(&c);
        ScrubStep {
            phase,
            covered: from..to,
            counts: c,
            findings_at: at,
        }
    }
}

fn phase_len(t: &Table, phase: ScrubPhase) -> u64 {
    match phase {
        ScrubPhase::Slots => u64::from(t.slot_count()),
        ScrubPhase::Summary => t.geometry().summary_words as u64,
        ScrubPhase::Index => t.index_capacity() as u64,
        ScrubPhase::Done => 0,
    }
}

/// A consistent snapshot of an unlocked slot's words (seqlock), or `None` when it is busy.
fn snapshot(s: &[AtomicU64]) -> Option<[u64; SLOT_WORDS]> {
    let w0 = s[0].load(Ordering::Acquire);
    if w0 & 0xff != 0 {
        return None;
    }
    let mut w = [0u64; SLOT_WORDS];
    w[0] = w0;
    for i in 1..SLOT_WORDS {
        w[i] = s[i].load(Ordering::Relaxed);
    }
    fence(Ordering::Acquire);
    (s[0].load(Ordering::Relaxed) == w0).then_some(w)
}

/// Whether the index holds the entry that finds `slot` for `key` on `key`'s probe chain.
fn index_has(t: &Table, key: &ClientKey, slot: u32) -> bool {
    let h = t.key_hash(key);
    let entry = (tag_of(h) << 32) | u64::from(slot + 1);
    let idx = t.index();
    let cap = idx.len();
    let mut pos = home(h, cap);
    for _ in 0..MAX_PROBE.min(cap) {
        match idx[pos].load(Ordering::Acquire) {
            0 => return false,
            e if e == entry => return true,
            _ => pos = next(pos, cap),
        }
    }
    false
}

impl Table {
    /// Runs `f` while holding `slot`'s lock as `owner`, taken by the write protocol with an
    /// intent whose old and new images are both `expected` (the slot's words as read; so
    /// recovery after a death here leaves the slot unchanged and re-derives its bit and index
    /// entry). The version does not change. Returns `None` when the slot no longer holds
    /// `expected` (changed, or locked by a writer).
    pub(crate) fn with_slot_held<R>(
        &self,
        owner: u8,
        slot: u32,
        expected: &[u64; SLOT_WORDS],
        f: impl FnOnce() -> R,
    ) -> Option<R> {
        let s = self.slot_words(slot)?;
        let o = self.owner_words(owner)?;
        let enc = expected;
        for (i, &x) in enc.iter().enumerate() {
            o[INTENT_OLD + i].store(x, Ordering::Relaxed);
            o[INTENT_NEW + i].store(x, Ordering::Relaxed);
        }
        // No ring record is planned: sequence 0 is never published, so recovery rolls "back".
        o[INTENT_SEQ].store(0, Ordering::Relaxed);
        o[INTENT_ACTIVE].store(u64::from(slot) + 1, Ordering::Release);
        let unlocked = expected[0] & !0xff;
        let locked = s[0]
            .compare_exchange(
                unlocked,
                unlocked | u64::from(owner),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok();
        // Same version but other contents would mean a version was reused: not ours to judge.
        let same = locked && (1..SLOT_WORDS).all(|i| s[i].load(Ordering::Relaxed) == enc[i]);
        let result = same.then(f);
        if locked {
            s[0].store(unlocked, Ordering::Release);
        }
        o[INTENT_ACTIVE].store(0, Ordering::Release);
        result
    }
}

fn scrub_slot(w: Writer<'_>, slot: u32, c: &mut ScrubCounts) {
    let (t, owner) = (w.table(), w.owner());
    let Some(s) = t.slot_words(slot) else { return };
    c.slots_checked += 1;
    let words = match snapshot(s) {
        Some(w) => w,
        None if clear_stuck_lock(t, s, slot) => {
            c.stuck_locks += 1;
            c.stuck_locks_cleared += 1;
            match snapshot(s) {
                Some(w) => w,
                None => return,
            }
        }
        None => {
            c.busy_skipped += 1;
            return;
        }
    };
    let img = match SlotImage::decode(&words) {
        Ok(img) => img,
        Err(_) => {
            c.torn_slots += 1;
            if w.abandon_corrupt(slot) {
                c.torn_abandoned += 1;
            }
            return;
        }
    };
    let want_free = t.bit_should_be_free(slot, img.state);
    if t.is_free(slot) != want_free {
        let fixed = t.with_slot_held(owner, slot, &words, || {
            let wrong = t.is_free(slot) != want_free;
            if wrong {
                t.set_free_bit(slot, want_free);
            }
            wrong
        });
        match fixed {
            Some(true) => {
                c.bitmap_wrong += 1;
                c.bitmap_fixed += 1;
            }
            Some(false) => {}
            None => c.busy_skipped += 1,
        }
    }
    if !img.key.is_none() && !index_has(t, &img.key, slot) {
        let fixed = t.with_slot_held(owner, slot, &words, || {
            if index_has(t, &img.key, slot) {
                return None;
            }
            t.index_insert(&img.key, slot);
            Some(index_has(t, &img.key, slot))
        });
        match fixed {
            Some(Some(ok)) => {
                c.unindexed += 1;
                c.unindexed_fixed += u64::from(ok);
            }
            Some(None) => {}
            None => c.busy_skipped += 1,
        }
    }
}

/// Unlocks `slot` if it is locked by an owner that cannot be holding it: a writer stores its
/// intent naming the slot before it takes the lock and clears it only after unlocking, so a lock
/// whose owner does not exist or has no intent for this slot (seen between two identical reads
/// of the lock word) is damage, and no recovery would ever release it. Returns whether it did.
fn clear_stuck_lock(t: &Table, s: &[AtomicU64], slot: u32) -> bool {
    let w0 = s[0].load(Ordering::Acquire);
    if !t.lock_is_stale(s, slot, w0) {
        return false;
    }
    s[0].compare_exchange(w0, w0 & !0xff, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}

fn scrub_summary_word(t: &Table, si: usize, c: &mut ScrubCounts) {
    let g = t.geometry();
    let w = t.w();
    let sword = &w[g.summary_off + si];
    for j in 0..64 {
        let wi = si * 64 + j;
        if wi >= g.bitmap_words {
            break;
        }
        let bit = 1u64 << j;
        let word = &w[g.bitmap_off + wi];
        // A writer clearing a word's last bit clears the summary bit and sets it again if the
        // word filled meanwhile: only a mismatch seen twice is a finding.
        let missing =
            || word.load(Ordering::Acquire) != 0 && sword.load(Ordering::Acquire) & bit == 0;
        if missing() && missing() {
            c.summary_wrong += 1;
            sword.fetch_or(bit, Ordering::AcqRel);
            c.summary_fixed += 1;
        }
    }
}

fn scrub_index_entry(w: Writer<'_>, pos: usize, c: &mut ScrubCounts) {
    let (t, owner) = (w.table(), w.owner());
    let idx = t.index();
    let e = idx[pos].load(Ordering::Acquire);
    if e == 0 || e == TOMBSTONE {
        return;
    }
    c.index_checked += 1;
    let slot = (e as u32).wrapping_sub(1);
    let tombstone = || {
        idx[pos]
            .compare_exchange(e, TOMBSTONE, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    };
    let Some(s) = t.slot_words(slot) else {
        // Names no slot at all: garbage. No writer ever indexes such a slot.
        if tombstone() {
            c.stale_index += 1;
            c.stale_index_fixed += 1;
        }
        return;
    };
    let Some(words) = snapshot(s) else {
        c.busy_skipped += 1;
        return;
    };
    let Ok(img) = SlotImage::decode(&words) else {
        // Torn: the slot phase abandons it (this pass or the next); judge its entries then.
        return;
    };
    if !img.key.is_none() && tag_of(t.key_hash(&img.key)) == e >> 32 {
        return;
    }
    // Under the slot's lock no writer can be indexing a new key for it, so the entry is stale.
    match t.with_slot_held(owner, slot, &words, tombstone) {
        Some(true) => {
            c.stale_index += 1;
            c.stale_index_fixed += 1;
        }
        Some(false) => {}
        None => c.busy_skipped += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{LayoutSpec, RangeSpec};
    use crate::ring::{ChangeReason, Ring};
    use crate::slot::LeaseState;
    use crate::table::{ChangeContext, Recovery, SUPERVISOR_OWNER};

    fn spec() -> LayoutSpec {
        LayoutSpec {
            ranges: vec![
                RangeSpec {
                    first: 0x0a00_0064,
                    last: 0x0a00_00c7,
                    in_pool: true,
                },
                RangeSpec {
                    first: 0x0b00_0000,
                    last: 0x0b00_3fff,
                    in_pool: true,
                },
            ],
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        table: Table,
        ring: Ring,
        sup_ring: Ring,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let table = Table::create(&dir.path().join("leases.table"), &spec()).unwrap();
        let ring = Ring::open_or_create(&dir.path().join("ring-1"), 1, 1024).unwrap();
        let sup_ring = Ring::open_or_create(&dir.path().join("ring-100"), 100, 1024).unwrap();
        Fixture {
            _dir: dir,
            table,
            ring,
            sup_ring,
        }
    }

    impl Fixture {
        /// Writes as worker 1 (the churn the scrub runs beside).
        fn worker(&self) -> Writer<'_> {
            Writer::new(&self.table, 1, &self.ring)
        }

        /// Writes as the supervisor, which scrubs.
        fn scrubber(&self) -> Writer<'_> {
            Writer::new(&self.table, SUPERVISOR_OWNER, &self.sup_ring)
        }
    }

    fn ctx() -> ChangeContext<'static> {
        ChangeContext {
            reason: ChangeReason::Commit,
            time_ms: 1,
            context: b"",
        }
    }

    fn lease(n: u32) -> SlotImage {
        let mac = n.to_be_bytes();
        let hw = [2, 0, mac[0], mac[1], mac[2], mac[3]];
        let mut i = SlotImage {
            state: LeaseState::Leased,
            expires: 2_000_000_000,
            key: ClientKey::from_hwaddr(1, &hw),
            ..SlotImage::PRISTINE
        };
        i.set_hwaddr(1, &hw);
        i
    }

    /// Leases slots `0..n` to clients 0..n.
    fn fill(f: &Fixture, n: u32) {
        for slot in 0..n {
            f.worker()
                .update(slot, &SlotImage::PRISTINE, &lease(slot), &ctx())
                .unwrap();
        }
    }

    fn scrub(f: &Fixture) -> ScrubCounts {
        Scrub::run(f.scrubber())
    }

    fn index_pos_of(t: &Table, key: &ClientKey, slot: u32) -> usize {
        let entry = (tag_of(t.key_hash(key)) << 32) | u64::from(slot + 1);
        t.index()
            .iter()
            .position(|e| e.load(Ordering::Relaxed) == entry)
            .expect("entry present")
    }

    #[test]
    fn a_clean_table_has_no_findings() {
        let f = fixture();
        fill(&f, 300);
        let c = scrub(&f);
        assert_eq!(c.slots_checked, u64::from(f.table.slot_count()));
        assert_eq!(c.index_checked, 300);
        assert_eq!(
            (c.damaged(), c.repaired(), c.busy_skipped),
            (0, 0, 0),
            "{c:?}"
        );
    }

    #[test]
    fn a_wrong_free_bit_is_found_and_repaired() {
        let f = fixture();
        fill(&f, 10);
        let t = &f.table;
        t.set_free_bit(5, true); // leased but allocatable: would be handed out twice
        t.set_free_bit(150, false); // free but hidden
        let c = scrub(&f);
        assert_eq!((c.bitmap_wrong, c.bitmap_fixed), (2, 2), "{c:?}");
        assert_eq!((c.damaged(), c.repaired()), (2, 2));
        assert!(!t.is_free(5));
        assert!(t.is_free(150));
        assert!(t.check().is_clean());
        assert_eq!(scrub(&f).damaged(), 0);
    }

    #[test]
    fn a_missing_summary_bit_is_found_and_repaired() {
        let f = fixture();
        let t = &f.table;
        let g = *t.geometry();
        // Summary word 0, bit 3 covers bitmap word 3 (slots 192..256), which has free bits.
        t.w()[g.summary_off].fetch_and(!(1 << 3), Ordering::AcqRel);
        assert_eq!(
            t.next_free(192..256, 192),
            None,
            "the free slots are hidden"
        );
        let c = scrub(&f);
        assert_eq!((c.summary_wrong, c.summary_fixed), (1, 1), "{c:?}");
        assert_eq!(c.damaged(), 1);
        assert_eq!(t.next_free(192..256, 192), Some(192));
    }

    #[test]
    fn a_missing_index_entry_is_found_and_repaired() {
        let f = fixture();
        fill(&f, 20);
        let t = &f.table;
        let key = lease(7).key;
        let pos = index_pos_of(t, &key, 7);
        t.index()[pos].store(TOMBSTONE, Ordering::Release);
        assert_eq!(
            t.find_client(&key),
            None,
            "a returning client would look new"
        );
        let c = scrub(&f);
        assert_eq!((c.unindexed, c.unindexed_fixed), (1, 1), "{c:?}");
        assert_eq!(c.damaged(), 1);
        assert_eq!(t.find_client(&key).map(|x| x.0), Some(7));
    }

    #[test]
    fn stale_and_garbage_index_entries_are_found_and_tombstoned() {
        let f = fixture();
        fill(&f, 20);
        let t = &f.table;
        // An entry for a key slot 30 (pristine) does not carry, and one naming no slot at all.
        t.index_insert(&lease(99).key, 30);
        let stale = index_pos_of(t, &lease(99).key, 30);
        let free_pos = (0..t.index_capacity())
            .find(|&p| t.index()[p].load(Ordering::Relaxed) == 0)
            .unwrap();
        t.index()[free_pos].store((0xabcd_u64 << 32) | 0x00ff_ffff, Ordering::Release);
        let c = scrub(&f);
        assert_eq!((c.stale_index, c.stale_index_fixed), (2, 2), "{c:?}");
        assert_eq!(c.damaged(), 2);
        assert_eq!(t.index()[stale].load(Ordering::Relaxed), TOMBSTONE);
        assert_eq!(t.index()[free_pos].load(Ordering::Relaxed), TOMBSTONE);
        for slot in 0..20 {
            assert_eq!(t.find_client(&lease(slot).key).map(|x| x.0), Some(slot));
        }
        assert_eq!(scrub(&f).damaged(), 0);
    }

    #[test]
    fn torn_slots_are_abandoned_and_their_index_entries_dropped() {
        let f = fixture();
        fill(&f, 100);
        let t = &f.table;
        // A damaged 4 KiB page: 64 slots of garbage.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for slot in 10..74 {
            for w in t.slot_words(slot).unwrap() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w.store(x & !0xff, Ordering::Relaxed);
            }
        }
        let c = scrub(&f);
        assert_eq!((c.torn_slots, c.torn_abandoned), (64, 64), "{c:?}");
        assert_eq!((c.stale_index, c.stale_index_fixed), (64, 64), "{c:?}");
        for slot in 10..74 {
            assert_eq!(t.read(slot).unwrap().state, LeaseState::Abandoned);
            assert!(!t.is_free(slot));
        }
        assert_eq!(f.sup_ring.head(), 64, "every abandonment is recorded");
        assert!(t.check().is_clean(), "{:?}", t.check());
        assert_eq!(scrub(&f).damaged(), 0);
    }

    #[test]
    fn a_busy_slot_is_skipped_not_repaired() {
        let f = fixture();
        fill(&f, 10);
        let t = &f.table;
        t.set_free_bit(4, true);
        let key = lease(4).key;
        let pos = index_pos_of(t, &key, 4);
        t.index()[pos].store(TOMBSTONE, Ordering::Release);
        // Another writer (owner 7) holds slot 4, as the write protocol does: intent first.
        t.owner_words(7).unwrap()[INTENT_ACTIVE].store(4 + 1, Ordering::Release);
        t.slot_words(4).unwrap()[0].fetch_or(7, Ordering::AcqRel);
        let c = scrub(&f);
        assert_eq!(c.busy_skipped, 1, "{c:?}");
        assert_eq!((c.damaged(), c.repaired()), (0, 0), "{c:?}");
        assert!(t.is_free(4), "not touched while busy");
        assert_eq!(t.lock_owner(4), 7, "the writer's lock is left alone");
        // Once released, the next pass repairs it.
        t.slot_words(4).unwrap()[0].fetch_and(!0xff, Ordering::AcqRel);
        t.owner_words(7).unwrap()[INTENT_ACTIVE].store(0, Ordering::Release);
        let c = scrub(&f);
        assert_eq!(
            (c.bitmap_fixed, c.unindexed_fixed, c.busy_skipped),
            (1, 1, 0)
        );
        assert!(!t.is_free(4));
        assert!(t.check().is_clean());
    }

    #[test]
    fn a_lock_without_an_intent_is_damage_and_is_cleared() {
        let f = fixture();
        fill(&f, 10);
        let t = &f.table;
        let before = t.read(2).unwrap();
        // Owner 9 (no intent anywhere) and owner 200 (no such owner) "hold" slots 2 and 3; slot 5
        // is also torn behind its stuck lock.
        t.slot_words(2).unwrap()[0].fetch_or(9, Ordering::AcqRel);
        t.slot_words(3).unwrap()[0].fetch_or(200, Ordering::AcqRel);
        t.slot_words(5).unwrap()[3].fetch_xor(1 << 20, Ordering::AcqRel);
        t.slot_words(5).unwrap()[0].fetch_or(9, Ordering::AcqRel);
        let c = scrub(&f);
        assert_eq!((c.stuck_locks, c.stuck_locks_cleared), (3, 3), "{c:?}");
        assert_eq!((c.torn_slots, c.torn_abandoned), (1, 1), "{c:?}");
        assert_eq!(t.read(2), Ok(before));
        assert_eq!(t.read(5).unwrap().state, LeaseState::Abandoned);
        assert_eq!(c.busy_skipped, 0);
        assert!(t.check().is_clean(), "{:?}", t.check());
    }

    #[test]
    fn a_slot_changed_after_it_was_read_is_not_repaired() {
        let f = fixture();
        fill(&f, 3);
        let t = &f.table;
        let old = t.read(1).unwrap();
        // A writer changes slot 1 after the scrub read it: the repair lock must fail.
        let released = SlotImage {
            state: LeaseState::Released,
            ..old
        };
        f.worker().update(1, &old, &released, &ctx()).unwrap();
        let ran = t.with_slot_held(SUPERVISOR_OWNER, 1, &old.encode(), || ());
        assert_eq!(ran, None);
        assert_eq!(t.lock_owner(1), 0);
        assert_eq!(t.read(1).unwrap().state, LeaseState::Released);
    }

    #[test]
    fn a_scrubber_dying_with_the_lock_is_recovered() {
        let f = fixture();
        fill(&f, 3);
        let t = &f.table;
        let img = t.read(2).unwrap();
        t.set_free_bit(2, true);
        // Simulate a death inside the repair: intent written, lock taken, nothing else.
        let _ = t
            .with_slot_held(SUPERVISOR_OWNER, 2, &img.encode(), || {
                let s = t.slot_words(2).unwrap();
                let o = t.owner_words(SUPERVISOR_OWNER).unwrap();
                let w0 = s[0].load(Ordering::Relaxed);
                let active = o[INTENT_ACTIVE].load(Ordering::Relaxed);
                // Freeze this state into a copy we restore after the helper unlocks.
                (w0, active)
            })
            .map(|(w0, active)| {
                t.slot_words(2).unwrap()[0].store(w0, Ordering::Release);
                t.owner_words(SUPERVISOR_OWNER).unwrap()[INTENT_ACTIVE]
                    .store(active, Ordering::Release);
            });
        assert_eq!(t.lock_owner(2), SUPERVISOR_OWNER);
        assert_eq!(
            t.recover_owner(SUPERVISOR_OWNER, Some(&f.sup_ring)),
            Recovery::RolledBack(2)
        );
        assert_eq!(t.read(2), Ok(img), "unchanged, version kept");
        assert!(!t.is_free(2), "recovery re-derived the bit");
        assert!(t.check().is_clean());
    }

    #[test]
    fn small_steps_give_the_same_result_as_one_pass() {
        let f = fixture();
        fill(&f, 50);
        let t = &f.table;
        t.set_free_bit(3, true);
        t.set_free_bit(16000, false);
        let mut s = Scrub::new();
        let mut steps = 0;
        let mut lines = Vec::new();
        while !s.is_done() {
            let st = s.step(f.scrubber(), 100);
            if let Some(at) = st.findings_at {
                lines.push((st.phase, at));
            }
            steps += 1;
        }
        assert!(steps > 100, "{steps}");
        assert_eq!(s.counts().bitmap_fixed, 2);
        assert_eq!(
            lines,
            vec![
                (ScrubPhase::Slots, (3, 3)),
                (ScrubPhase::Slots, (16000, 16000))
            ]
        );
    }

    #[test]
    fn scrubbing_while_a_writer_churns_finds_nothing_and_breaks_nothing() {
        let f = fixture();
        fill(&f, 64);
        let t = &f.table;
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|sc| {
            sc.spawn(|| {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let slot = n % 64;
                    let cur = t.read(slot).unwrap();
                    let mut new = lease(1000 + n);
                    if n.is_multiple_of(3) {
                        new.state = LeaseState::Released;
                    }
                    let _ = f.worker().update(slot, &cur, &new, &ctx());
                    n = n.wrapping_add(1);
                }
            });
            let mut total = ScrubCounts::default();
            for _ in 0..30 {
                total.add(&scrub(&f));
            }
            stop.store(true, Ordering::Relaxed);
            assert_eq!(total.damaged(), 0, "{total:?}");
        });
        assert!(t.check().is_clean(), "{:?}", t.check());
    }
}
