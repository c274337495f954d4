//! The full consistency check (O(slots): tests, and start-up after a power loss) and the
//! repair it allows without a peer.

use std::sync::atomic::Ordering;

use super::Table;
use crate::ring::Ring;
use crate::slot::{ClientKey, LeaseState, SlotImage, SLOT_WORDS};

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

impl Table {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::testing::*;
    use crate::table::{ReadError, SUPERVISOR_OWNER};

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
}
