//! The write protocol (see the [module docs](super)): [`Table::update`], the rollback when the
//! ring refuses a record, and [`Table::abandon_corrupt`], which takes a torn slot out of service
//! by the same steps. The intent a writer records in its owner record before it takes a slot's
//! lock is what [`Table::recover_owner`] reads after the writer died.

use std::sync::atomic::{fence, Ordering};

use super::{now_secs, ReadError, Table};
use crate::ring::{ChangeReason, RecordInput, Ring, RingFullError};
use crate::slot::{ClientKey, LeaseState, SlotImage, SLOT_WORDS};

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

/// What [`Table::apply_replica`] did with an incoming image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Written (and recorded in the applier's ring): the slot now holds this image, at the
    /// incoming version.
    Applied(SlotImage),
    /// Not written: the local slot is already at this version or a later one (a duplicate or an
    /// out-of-order record). A no-op, to be counted.
    Stale {
        /// The local slot's version.
        local: u64,
    },
}

/// Why an incoming image could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// A live writer held the slot through every retry: apply it again later.
    #[error("slot is locked by another writer")]
    Busy,
    /// The change record could not be appended (the slot was left as it was).
    #[error(transparent)]
    RingFull(#[from] RingFullError),
    /// No such slot in this table, an owner id out of range, or a version beyond 56 bits.
    #[error("slot, owner or version out of range")]
    OutOfRange,
}

/// Context of a replicated change, stored in the applier's ring record (whose reason is always
/// [`ChangeReason::Replicated`]).
#[derive(Debug, Clone, Copy)]
pub struct ReplicaContext<'a> {
    /// Unix time in milliseconds (the original change's, so the standby's history keeps it).
    pub time_ms: u64,
    /// Context bytes (e.g. the original record's relay information).
    pub context: &'a [u8],
}

/// One change planned for the write protocol.
struct Plan {
    slot: u32,
    /// The slot's words as read (unlocked): the lock is taken by CAS from `old[0]`, and recovery
    /// rolls back to them.
    old: [u64; SLOT_WORDS],
    /// The image to write, with its final version.
    new: SlotImage,
    /// The words the slot gets back when the ring refuses the record.
    rollback: [u64; SLOT_WORDS],
}

/// How often [`Table::apply_replica`] re-reads a slot that a writer holds before giving up.
const APPLY_TRIES: usize = 8;

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

/// Steps of the write protocol after which a simulated crash can stop a writer (tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(super) enum Step {
    Intent,
    Locked,
    HalfWritten,
    Bitmap,
    Indexed,
    Recorded,
    Unlocked,
}
pub(crate) const INTENT_ACTIVE: usize = 0;
pub(crate) const INTENT_SEQ: usize = 1;
pub(crate) const INTENT_OLD: usize = 2;
pub(crate) const INTENT_NEW: usize = 2 + SLOT_WORDS;

impl Table {
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
    pub(super) fn update_until(
        &self,
        owner: u8,
        ring: &Ring,
        slot: u32,
        expected: &SlotImage,
        new: &SlotImage,
        ctx: &ChangeContext<'_>,
        stop: Option<Step>,
    ) -> Result<SlotImage, UpdateError> {
        let img = SlotImage {
            version: expected.version + 1,
            ..*new
        };
        // A change that cannot be recorded comes back at v + 2 (see `roll_back_unrecorded`).
        let restored = SlotImage {
            version: expected.version + 2,
            ..*expected
        };
        let plan = Plan {
            slot,
            old: expected.encode(),
            new: img,
            rollback: restored.encode(),
        };
        self.commit_until(owner, ring, &plan, ctx, stop)
    }

    /// Steps 1–4 of the write protocol for one planned change (shared by [`Table::update`] and
    /// [`Table::apply_replica`]): intent, lock by CAS from `plan.old[0]`, contents, bitmap bit,
    /// index, ring record, unlock at `plan.new.version`. On a refused record the slot is put
    /// back to `plan.rollback` under the lock.
    fn commit_until(
        &self,
        owner: u8,
        ring: &Ring,
        plan: &Plan,
        ctx: &ChangeContext<'_>,
        stop: Option<Step>,
    ) -> Result<SlotImage, UpdateError> {
        let slot = plan.slot;
        let s = self.slot_words(slot).ok_or(UpdateError::OutOfRange)?;
        let o = self.owner_words(owner).ok_or(UpdateError::OutOfRange)?;
        let img = plan.new;
        let enc_new = img.encode();
        let enc_old = plan.old;
        // The key the slot carries now (none known for torn words: nothing to unindex).
        let old_key = SlotImage::decode(&enc_old).map_or(ClientKey::NONE, |i| i.key);
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
        let unlocked = enc_old[0] & !0xff;
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
        if img.key != old_key {
            if !old_key.is_none() {
                self.index_remove(&old_key, slot);
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
            self.roll_back_unrecorded(slot, &plan.rollback, &img);
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

    /// Applies the active's image of `slot` on a standby (replication), keeping the INCOMING
    /// version instead of counting one up, by the write protocol of [`Table::update`] (intent,
    /// lock, contents, bitmap, index, a [`ChangeReason::Replicated`] record in `ring`, unlock), so
    /// a writer killed inside it is recovered like any other.
    ///
    /// Ordered by slot version: the image is applied only if its version is above the local
    /// one, so applying the same record twice, or an older record after a newer one (a bulk
    /// sync overlapping the ring tail), is a no-op returned as [`ApplyOutcome::Stale`]. A local
    /// slot that fails its checksum is replaced by any valid incoming image (the peer's copy is
    /// the only good one left). A slot a live writer holds is retried a few times, then
    /// reported [`ApplyError::Busy`] (apply it again later).
    pub fn apply_replica(
        &self,
        owner: u8,
        ring: &Ring,
        slot: u32,
        incoming: &SlotImage,
        ctx: &ReplicaContext<'_>,
    ) -> Result<ApplyOutcome, ApplyError> {
        self.apply_replica_until(owner, ring, slot, incoming, ctx, None)
    }

    /// [`Table::apply_replica`], stopping dead after `stop` (to simulate a killed writer).
    pub(super) fn apply_replica_until(
        &self,
        owner: u8,
        ring: &Ring,
        slot: u32,
        incoming: &SlotImage,
        ctx: &ReplicaContext<'_>,
        stop: Option<Step>,
    ) -> Result<ApplyOutcome, ApplyError> {
        let s = self.slot_words(slot).ok_or(ApplyError::OutOfRange)?;
        self.owner_words(owner).ok_or(ApplyError::OutOfRange)?;
        if incoming.version >= 1 << 56 {
            return Err(ApplyError::OutOfRange);
        }
        let change = ChangeContext {
            reason: ChangeReason::Replicated,
            time_ms: ctx.time_ms,
            context: ctx.context,
        };
        for _ in 0..APPLY_TRIES {
            let old = match self.read(slot) {
                Ok(local) if incoming.version <= local.version => {
                    return Ok(ApplyOutcome::Stale {
                        local: local.version,
                    })
                }
                Ok(local) => local.encode(),
                Err(ReadError::Busy) => {
                    std::thread::yield_now();
                    continue;
                }
                Err(ReadError::Corrupt(_)) => {
                    let mut torn = [0u64; SLOT_WORDS];
                    for (x, w) in torn.iter_mut().zip(s) {
                        *x = w.load(Ordering::Acquire);
                    }
                    if torn[0] & 0xff != 0 {
                        continue; // locked meanwhile
                    }
                    torn
                }
                Err(ReadError::OutOfRange) => return Err(ApplyError::OutOfRange),
            };
            // On a refused record the slot goes back to the old words at the old version: the
            // incoming version belongs to this very image (the active's), never to another one,
            // so it can be applied again later.
            let plan = Plan {
                slot,
                old,
                new: *incoming,
                rollback: old,
            };
            match self.commit_until(owner, ring, &plan, &change, stop) {
                Ok(img) => return Ok(ApplyOutcome::Applied(img)),
                Err(UpdateError::Conflict) if stop.is_some() => return Err(ApplyError::Busy),
                Err(UpdateError::Conflict) => std::thread::yield_now(),
                Err(UpdateError::RingFull(e)) => return Err(ApplyError::RingFull(e)),
                Err(UpdateError::OutOfRange) => return Err(ApplyError::OutOfRange),
            }
        }
        Err(ApplyError::Busy)
    }

    /// Undoes a change whose record could not be appended, while still holding the slot's lock:
    /// the slot gets the words `rollback` (for [`Table::update`], the old contents re-encoded at
    /// version `expected.version + 2`; for [`Table::apply_replica`], the old words as they were),
    /// its bitmap bit and index entries follow them, and it is unlocked.
    ///
    /// Why an update does not come back at `expected.version`: version `v + 1` was carried, under
    /// the lock, by the image that failed (in the slot words and this owner's intent record). The
    /// next successful write from `v` would publish a *different* image as `v + 1`, and
    /// replication compares slots by version, so two images must never share one. Skipping to
    /// `v + 2` with the old contents keeps versions unique per image; the unused `v + 1` just has
    /// no ring record (a consumer sees a gap, never a conflict). A caller holding the image it
    /// read at `v` gets [`UpdateError::Conflict`] on a retry and must re-read, as after any
    /// concurrent change. (A replica's version is the active's, always for the same image, so
    /// it may come back at the old version and be applied again.)
    fn roll_back_unrecorded(&self, slot: u32, rollback: &[u64; SLOT_WORDS], attempted: &SlotImage) {
        let Some(s) = self.slot_words(slot) else {
            return;
        };
        let restored = SlotImage::decode(rollback).ok();
        let state = restored.map_or(LeaseState::Abandoned, |i| i.state);
        let key = restored.map_or(ClientKey::NONE, |i| i.key);
        for i in 1..SLOT_WORDS {
            s[i].store(rollback[i], Ordering::Relaxed);
        }
        self.set_free_bit(slot, self.bit_should_be_free(slot, state));
        if attempted.key != key {
            if !attempted.key.is_none() {
                self.index_remove(&attempted.key, slot);
            }
            if !key.is_none() {
                self.index_insert(&key, slot);
            }
        }
        s[0].store(rollback[0] & !0xff, Ordering::Release);
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
    pub(super) fn abandon_corrupt_until(
        &self,
        owner: u8,
        ring: &Ring,
        slot: u32,
        stop: Option<Step>,
    ) -> bool {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::testing::*;
    use crate::table::Recovery;

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
}

#[cfg(test)]
mod replica_tests {
    use super::*;
    use crate::ring::ChangeRecord;
    use crate::table::testing::*;
    use crate::table::{Recovery, SUPERVISOR_OWNER, SYNCD_OWNER};
    use proptest::prelude::*;

    /// A standby: a second table of the same layout, written as syncd into its own ring.
    struct Standby {
        _dir: tempfile::TempDir,
        table: Table,
        ring: Ring,
    }

    fn standby() -> Standby {
        let dir = tempfile::tempdir().unwrap();
        let table = Table::create(&dir.path().join("leases.table"), &spec()).unwrap();
        let ring = Ring::open_or_create(&dir.path().join("ring-102"), SYNCD_OWNER, 1024).unwrap();
        Standby {
            _dir: dir,
            table,
            ring,
        }
    }

    fn rctx() -> ReplicaContext<'static> {
        ReplicaContext {
            time_ms: 7,
            context: b"from-a",
        }
    }

    fn records(ring: &Ring) -> Vec<ChangeRecord> {
        (1..=ring.head()).filter_map(|s| ring.read(s)).collect()
    }

    fn apply(b: &Standby, rec: &ChangeRecord) -> Result<ApplyOutcome, ApplyError> {
        b.table
            .apply_replica(SYNCD_OWNER, &b.ring, rec.slot, &rec.image, &rctx())
    }

    /// Every slot reads the same in both tables, with the same free bit, and every key either
    /// table's slots carry is found at the same slot in both.
    fn assert_same(a: &Table, b: &Table) {
        assert_eq!(a.slot_count(), b.slot_count());
        for slot in 0..a.slot_count() {
            let (x, y) = (a.read(slot).unwrap(), b.read(slot).unwrap());
            assert_eq!(x, y, "slot {slot}");
            assert_eq!(a.is_free(slot), b.is_free(slot), "free bit of slot {slot}");
            if matches!(x.state, LeaseState::Leased | LeaseState::Offered) {
                assert_eq!(
                    a.find_client(&x.key).map(|f| f.0),
                    b.find_client(&x.key).map(|f| f.0),
                    "index for slot {slot}"
                );
            }
        }
        let rep = b.check();
        assert!(rep.is_clean(), "{rep:?}");
    }

    #[test]
    fn replicas_applied_in_order_give_equal_images_bitmap_and_index() {
        let a = fixture();
        let t = &a.table;
        let l1 = t
            .update(1, &a.ring, 5, &SlotImage::PRISTINE, &lease(1), &ctx())
            .unwrap();
        let r1 = SlotImage {
            state: LeaseState::Released,
            ..l1
        };
        let r1 = t.update(1, &a.ring, 5, &l1, &r1, &ctx()).unwrap();
        // Re-keyed to another client: the old key's index entry must go on the standby too.
        t.update(1, &a.ring, 5, &r1, &lease(2), &ctx()).unwrap();
        t.update(1, &a.ring, 100, &SlotImage::PRISTINE, &lease(3), &ctx())
            .unwrap();
        t.update(
            1,
            &a.ring,
            700,
            &SlotImage::PRISTINE,
            &holding(key("long-client")),
            &ctx(),
        )
        .unwrap();
        let b = standby();
        for rec in records(&a.ring) {
            match apply(&b, &rec).unwrap() {
                ApplyOutcome::Applied(img) => assert_eq!(img, rec.image),
                other => panic!("{other:?}"),
            }
        }
        assert_same(t, &b.table);
        assert_eq!(
            b.table.read(5).unwrap().version,
            3,
            "the incoming version is kept"
        );
        assert_eq!(b.table.find_client(&lease(1).key), None);
        assert!(!b.table.is_free(5) && !b.table.is_free(700));
        // The standby's own ring holds every applied image, as syncd, reason Replicated.
        let mine = records(&b.ring);
        assert_eq!(mine.len(), 5);
        for (m, r) in mine.iter().zip(records(&a.ring)) {
            assert_eq!((m.slot, m.image, m.owner), (r.slot, r.image, SYNCD_OWNER));
            assert_eq!(m.reason, ChangeReason::Replicated);
            assert_eq!((m.time_ms, &m.context[..]), (7, &b"from-a"[..]));
        }
        assert_eq!(ChangeReason::Replicated.name(), "LEASE-REPLICATED");
        assert_eq!(ChangeReason::from_u8(14), Some(ChangeReason::Replicated));
    }

    #[test]
    fn a_duplicate_or_older_replica_is_a_stale_no_op() {
        let a = fixture();
        let t = &a.table;
        let mut cur = SlotImage::PRISTINE;
        for mac in 1..=3 {
            cur = t.update(1, &a.ring, 9, &cur, &lease(mac), &ctx()).unwrap();
        }
        let recs = records(&a.ring); // versions 1, 2, 3 of slot 9
        let b = standby();
        // v3 first, then v2 (out of order), then v3 again (a duplicate).
        assert_eq!(
            apply(&b, &recs[2]),
            Ok(ApplyOutcome::Applied(recs[2].image))
        );
        assert_eq!(apply(&b, &recs[1]), Ok(ApplyOutcome::Stale { local: 3 }));
        assert_eq!(apply(&b, &recs[2]), Ok(ApplyOutcome::Stale { local: 3 }));
        assert_eq!(apply(&b, &recs[0]), Ok(ApplyOutcome::Stale { local: 3 }));
        assert_eq!(b.table.read(9).unwrap(), cur);
        assert_eq!(b.ring.head(), 1, "a stale image writes no record");
        // Only the final holder is indexed; the keys of v1 and v2 were never applied.
        assert_eq!(b.table.find_client(&lease(3).key).map(|f| f.0), Some(9));
        assert_eq!(b.table.find_client(&lease(2).key), None);
        assert_same(t, &b.table);
    }

    #[test]
    fn an_image_for_a_slot_or_owner_out_of_range_is_an_error_not_a_panic() {
        let b = standby();
        let img = SlotImage {
            version: 1,
            ..lease(1)
        };
        let n = b.table.slot_count();
        for slot in [n, n + 1, u32::MAX] {
            assert_eq!(
                b.table
                    .apply_replica(SYNCD_OWNER, &b.ring, slot, &img, &rctx()),
                Err(ApplyError::OutOfRange)
            );
        }
        assert_eq!(
            b.table.apply_replica(0, &b.ring, 1, &img, &rctx()),
            Err(ApplyError::OutOfRange)
        );
        assert_eq!(b.ring.head(), 0);
        assert!(b.table.check().is_clean());
    }

    #[test]
    fn a_slot_held_by_a_live_writer_is_busy_and_applies_once_released() {
        let b = standby();
        // The standby's supervisor (owner 100) is in the middle of a change of slot 4.
        let _ = b.table.update_until(
            SUPERVISOR_OWNER,
            &b.ring,
            4,
            &SlotImage::PRISTINE,
            &lease(8),
            &ctx(),
            Some(Step::Locked),
        );
        let img = SlotImage {
            version: 5,
            ..lease(1)
        };
        assert_eq!(
            b.table
                .apply_replica(SYNCD_OWNER, &b.ring, 4, &img, &rctx()),
            Err(ApplyError::Busy)
        );
        assert_eq!(
            b.table.recover_owner(SUPERVISOR_OWNER, Some(&b.ring)),
            Recovery::RolledBack(4)
        );
        assert_eq!(
            b.table
                .apply_replica(SYNCD_OWNER, &b.ring, 4, &img, &rctx()),
            Ok(ApplyOutcome::Applied(img))
        );
        assert_eq!(b.table.read(4).unwrap(), img);
        assert!(b.table.check().is_clean());
    }

    #[test]
    fn an_unrecorded_replica_is_rolled_back_to_the_old_version_and_applies_later() {
        let b = standby();
        let old = SlotImage {
            version: 2,
            ..lease(1)
        };
        b.table
            .apply_replica(SYNCD_OWNER, &b.ring, 6, &old, &rctx())
            .unwrap();
        let new = SlotImage {
            version: 4,
            state: LeaseState::Released,
            ..holding(key("b"))
        };
        b.ring.refuse_appends.store(true, Ordering::Relaxed);
        assert_eq!(
            b.table
                .apply_replica(SYNCD_OWNER, &b.ring, 6, &new, &rctx()),
            Err(ApplyError::RingFull(RingFullError))
        );
        assert_eq!(b.table.read(6).unwrap(), old, "old words, old version");
        assert!(!b.table.is_free(6));
        assert_eq!(b.table.find_client(&lease(1).key).map(|f| f.0), Some(6));
        assert_eq!(b.table.find_client(&key("b")), None);
        assert!(b.table.check().is_clean());
        b.ring.refuse_appends.store(false, Ordering::Relaxed);
        assert_eq!(
            b.table
                .apply_replica(SYNCD_OWNER, &b.ring, 6, &new, &rctx()),
            Ok(ApplyOutcome::Applied(new))
        );
        assert!(b.table.is_free(6));
        assert_eq!(b.table.find_client(&key("b")).map(|f| f.0), Some(6));
    }

    #[test]
    fn a_corrupt_local_slot_is_replaced_by_the_incoming_image() {
        let b = standby();
        let old = SlotImage {
            version: 2,
            ..lease(1)
        };
        b.table
            .apply_replica(SYNCD_OWNER, &b.ring, 7, &old, &rctx())
            .unwrap();
        b.table.slot_words(7).unwrap()[2].fetch_xor(1 << 9, Ordering::Relaxed);
        assert!(matches!(b.table.read(7), Err(ReadError::Corrupt(_))));
        let new = SlotImage {
            version: 3,
            ..lease(2)
        };
        assert_eq!(
            b.table
                .apply_replica(SYNCD_OWNER, &b.ring, 7, &new, &rctx()),
            Ok(ApplyOutcome::Applied(new))
        );
        assert_eq!(b.table.read(7).unwrap(), new);
        assert!(b.table.check().is_clean());
    }

    #[test]
    fn an_applier_killed_at_any_step_is_recovered() {
        for step in [
            Step::Intent,
            Step::Locked,
            Step::HalfWritten,
            Step::Bitmap,
            Step::Indexed,
            Step::Recorded,
            Step::Unlocked,
        ] {
            let b = standby();
            let old = SlotImage {
                version: 2,
                ..lease(1)
            };
            b.table
                .apply_replica(SYNCD_OWNER, &b.ring, 9, &old, &rctx())
                .unwrap();
            let new = SlotImage {
                version: 5,
                ..lease(2)
            };
            let _ = b
                .table
                .apply_replica_until(SYNCD_OWNER, &b.ring, 9, &new, &rctx(), Some(step));
            b.table.recover_owner(SYNCD_OWNER, Some(&b.ring));
            let after = b.table.read(9).unwrap();
            if matches!(step, Step::Recorded | Step::Unlocked) {
                assert_eq!(after, new, "{step:?}");
            } else {
                assert_eq!(after, old, "{step:?}");
                // Applying it again completes it.
                assert_eq!(
                    b.table
                        .apply_replica(SYNCD_OWNER, &b.ring, 9, &new, &rctx()),
                    Ok(ApplyOutcome::Applied(new)),
                    "{step:?}"
                );
            }
            let rep = b.table.check();
            assert!(rep.is_clean(), "{step:?}: {rep:?}");
        }
    }

    /// One change to make on table A: (slot, action, generation of the client key).
    fn op() -> impl Strategy<Value = (u32, u8, u8)> {
        (
            prop_oneof![0u32..8, 95u32..105, 1100u32..1125],
            0u8..5,
            0u8..3,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn ring_records_applied_in_any_order_give_the_final_images(
            ops in proptest::collection::vec(op(), 1..80),
            order in proptest::collection::vec(any::<u32>(), 80),
        ) {
            let a = fixture();
            let t = &a.table;
            for (slot, action, generation) in ops {
                let cur = t.read(slot).unwrap();
                // Keys are per slot, so no client ever holds two slots.
                let k = key(&format!("{slot}-{generation}"));
                let new = match action {
                    0 => SlotImage { state: LeaseState::Leased, expires: 2_000_000_000, ..holding(k) },
                    1 => SlotImage { state: LeaseState::Offered, expires: 2_000_000_000, ..holding(k) },
                    2 => SlotImage { state: LeaseState::Released, ..cur },
                    3 => SlotImage { state: LeaseState::Expired, ..cur },
                    _ => SlotImage::PRISTINE,
                };
                t.update(1, &a.ring, slot, &cur, &new, &ctx()).unwrap();
            }
            let mut recs = records(&a.ring);
            prop_assert_eq!(recs.len() as u64, a.ring.head());
            // Shuffle: by a random key per record, so the order within one slot is shuffled too.
            let mut keyed: Vec<_> = recs.drain(..).enumerate().map(|(i, r)| (order[i % order.len()] ^ (i as u32).wrapping_mul(0x9e37_79b9), r)).collect();
            keyed.sort_by_key(|(k, _)| *k);
            let b = standby();
            let mut stale = 0;
            for (_, rec) in &keyed {
                match apply(&b, rec).unwrap() {
                    ApplyOutcome::Applied(_) => {}
                    ApplyOutcome::Stale { local } => {
                        prop_assert!(local >= rec.image.version);
                        stale += 1;
                    }
                }
            }
            prop_assert_eq!(b.ring.head() + stale, keyed.len() as u64);
            assert_same(t, &b.table);
        }
    }
}
