//! Recovery of a dead writer: the one slot it may have held is rolled forward when its change
//! record was published, back otherwise (O(1), never a table scan).

use std::sync::atomic::Ordering;

use super::{Table, INTENT_ACTIVE, INTENT_NEW, INTENT_OLD, INTENT_SEQ};
use crate::ring::Ring;
use crate::slot::{LeaseState, SlotImage, SLOT_WORDS};

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

impl Table {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::testing::*;
    use crate::table::write::Step;
    use crate::table::{ReadError, UpdateError, SUPERVISOR_OWNER};

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
