//! The write protocol (see the [module docs](super)): [`Table::update`], the rollback when the
//! ring refuses a record, and [`Table::abandon_corrupt`], which takes a torn slot out of service
//! by the same steps. The intent a writer records in its owner record before it takes a slot's
//! lock is what [`Table::recover_owner`] reads after the writer died.

use std::sync::atomic::{fence, Ordering};

use super::{now_secs, Table};
use crate::ring::{ChangeReason, RecordInput, Ring, RingFullError};
use crate::slot::{LeaseState, SlotImage, SLOT_WORDS};

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
