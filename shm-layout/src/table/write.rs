//! The write protocol (see the [module docs](super)): [`Table::update`], the rollback when the
//! ring refuses a record, and [`Table::abandon_corrupt`], which takes a torn slot out of service
//! by the same steps. The intent a writer records in its owner record before it takes a slot's
//! lock is what [`Table::recover_owner`] reads after the writer died.

use std::sync::atomic::{fence, Ordering};

use super::{now_secs, Table};
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

/// One change planned for the write protocol.
pub(super) struct Plan {
    pub(super) slot: u32,
    /// The slot's words as read (unlocked): the lock is taken by CAS from `old[0]`, and recovery
    /// rolls back to them.
    pub(super) old: [u64; SLOT_WORDS],
    /// The image to write, with its final version.
    pub(super) new: SlotImage,
    /// The words the slot gets back when the ring refuses the record.
    pub(super) rollback: [u64; SLOT_WORDS],
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
    pub(super) fn commit_until(
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
mod tests;
