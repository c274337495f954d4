//! The client index: open addressing over `index_capacity` entries, each a 32-bit hash tag and
//! slot+1, hashed with SipHash-1-3 under the table's random key. The slot is the truth, the
//! index only a hint: every lookup verifies the key in the slot.

use std::hash::Hasher;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{ReadError, Table};
use crate::layout::hw;
use crate::slot::{ClientKey, LeaseState, SlotImage};

/// Index entry of a removed key (never a valid entry: slot numbers stay below 2^26).
pub(crate) const TOMBSTONE: u64 = u64::MAX;
pub(crate) const MAX_PROBE: usize = 1 << 16;

impl Table {
    pub(crate) fn index(&self) -> &[AtomicU64] {
        &self.w()[self.geo.index_off..self.geo.index_off + self.geo.index_capacity]
    }

    /// The index hash of a client key in this table: SipHash-1-3 under the table's random key,
    /// so a client cannot craft identifiers that share a home position (long probe chains) in
    /// somebody else's table. Tables from before the key use [`ClientKey::hash`].
    pub(crate) fn key_hash(&self, key: &ClientKey) -> u64 {
        match self.index_key {
            Some((k0, k1)) => {
                let mut h = siphasher::sip::SipHasher13::new_with_keys(k0, k1);
                h.write_u8(key.kind() as u8);
                h.write(key.as_bytes());
                h.finish()
            }
            None => key.hash(),
        }
    }

    /// Finds the slot a client holds: among slots carrying `key`, the one in the most
    /// significant state (leased, then offered, then released/expired/free).
    ///
    /// The index is the only way to find a client by key: a lookup stops at the first empty
    /// entry or after `MAX_PROBE` (65,536) entries, like an insert, and never scans the slots (that
    /// would be O(slots) per packet on a /8). So a key whose insert gave up (counted in
    /// [`Table::index_give_ups`], logged by the supervisor) is not found here: the client looks
    /// new to DISCOVER until the index has room again, although a REQUEST naming its address
    /// still finds the slot by address and checks the key in it. With a load factor ≤ 0.5, a
    /// keyed hash and tombstone cleanup, a give-up needs a nearly full index.
    pub fn find_client(&self, key: &ClientKey) -> Option<(u32, SlotImage)> {
        if key.is_none() {
            return None;
        }
        let h = self.key_hash(key);
        let tag = tag_of(h);
        let idx = self.index();
        let cap = idx.len();
        let mut pos = home(h, cap);
        let mut best: Option<(u32, SlotImage)> = None;
        for _ in 0..MAX_PROBE.min(idx.len()) {
            let e = idx[pos].load(Ordering::Acquire);
            if e == 0 {
                break;
            }
            if e != TOMBSTONE && e >> 32 == tag {
                let slot = (e as u32).wrapping_sub(1);
                if let Ok(img) = self.read(slot) {
                    if img.key == *key && best.is_none_or(|(_, b)| rank(img.state) > rank(b.state))
                    {
                        best = Some((slot, img));
                    }
                }
            }
            pos = next(pos, cap);
        }
        best
    }

    /// Makes the index find `slot` for `key`. Reuses stale entries on the way. The caller holds
    /// `slot`'s lock.
    ///
    /// After filling an entry it probes again from the home position: if an entry before it
    /// became empty meanwhile ([`Table::index_cleanup`] emptied a tombstone that ended the chain
    /// just before this insert filled the following empty entry), lookups would stop there and
    /// never reach the new entry. It is then turned into a tombstone and the insert retried
    /// (which takes the emptied position). An insert that finds no usable entry within the
    /// probe limit, or loses every retry, gives up: counted in the header
    /// ([`Table::index_give_ups`]); see [`Table::find_client`] for what that means for lookups.
    pub(crate) fn index_insert(&self, key: &ClientKey, slot: u32) {
        let h = self.key_hash(key);
        let tag = tag_of(h);
        let entry = (tag << 32) | u64::from(slot + 1);
        let idx = self.index();
        let cap = idx.len();
        let give_up = || {
            self.w()[hw::INDEX_GIVE_UPS].fetch_add(1, Ordering::Relaxed);
        };
        for _retry in 0..8 {
            let mut pos = home(h, cap);
            let mut reusable: Option<(usize, u64)> = None;
            for _ in 0..MAX_PROBE.min(idx.len()) {
                let e = idx[pos].load(Ordering::Acquire);
                if e == 0 {
                    if reusable.is_none() {
                        reusable = Some((pos, 0));
                    }
                    break;
                }
                if e == entry {
                    return; // already findable: every entry before it is occupied
                }
                if reusable.is_none() && (e == TOMBSTONE || self.index_entry_is_stale(e, slot)) {
                    reusable = Some((pos, e));
                }
                pos = next(pos, cap);
            }
            let Some((p, old)) = reusable else {
                give_up(); // no empty, tombstoned or stale entry within the probe limit
                return;
            };
            #[cfg(test)]
            tests::before_index_cas(self);
            if idx[p]
                .compare_exchange(old, entry, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            if old == 0 {
                self.w()[hw::INDEX_OCCUPIED].fetch_add(1, Ordering::Relaxed);
            }
            if self.index_reaches(h, p, entry) {
                return;
            }
            // Cut off from its home: retire this copy (a tombstone keeps any chain that has
            // grown behind it connected) and insert again.
            let _ = idx[p].compare_exchange(entry, TOMBSTONE, Ordering::AcqRel, Ordering::Relaxed);
        }
        give_up();
    }

    /// Whether a lookup for hash `h` reaches `entry` (stored at position `at`) before an empty
    /// entry stops it.
    fn index_reaches(&self, h: u64, at: usize, entry: u64) -> bool {
        let idx = self.index();
        let cap = idx.len();
        let mut pos = home(h, cap);
        for _ in 0..MAX_PROBE.min(cap) {
            let e = idx[pos].load(Ordering::Acquire);
            if e == entry {
                return true;
            }
            if e == 0 || pos == at {
                return false;
            }
            pos = next(pos, cap);
        }
        false
    }

    /// Removes the entry that makes the index find `slot` for `key` (the slot is getting another
    /// key). The entry becomes a tombstone, which keeps probe chains intact and is reused by
    /// inserts; [`Table::index_cleanup`] turns tombstones at the end of a chain back into empty
    /// entries.
    pub(super) fn index_remove(&self, key: &ClientKey, slot: u32) {
        let h = self.key_hash(key);
        let entry = (tag_of(h) << 32) | u64::from(slot + 1);
        let idx = self.index();
        let cap = idx.len();
        let mut pos = home(h, cap);
        for _ in 0..MAX_PROBE.min(idx.len()) {
            let e = idx[pos].load(Ordering::Acquire);
            if e == 0 {
                return;
            }
            if e == entry {
                let _ =
                    idx[pos].compare_exchange(e, TOMBSTONE, Ordering::AcqRel, Ordering::Relaxed);
                return;
            }
            pos = next(pos, cap);
        }
    }

    /// Turns tombstones that end a probe chain into empty entries, scanning index positions
    /// `positions` from the top down (so a run of tombstones before an empty entry shrinks in one
    /// pass). Safe while writers run: an insert that fills the following entry before the
    /// re-check below makes this restore the tombstone; one that fills it after the re-check
    /// finds the emptied entry when it probes again from its home and re-inserts (see
    /// `index_insert`). Returns how many entries were emptied. The supervisor calls it in slices.
    pub fn index_cleanup(&self, positions: Range<usize>) -> u64 {
        let idx = self.index();
        let cap = idx.len();
        let end = positions.end.min(cap);
        let mut emptied = 0;
        for pos in (positions.start..end).rev() {
            if idx[pos].load(Ordering::Acquire) != TOMBSTONE
                || idx[next(pos, cap)].load(Ordering::Acquire) != 0
            {
                continue;
            }
            if idx[pos]
                .compare_exchange(TOMBSTONE, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            if idx[next(pos, cap)].load(Ordering::Acquire) != 0 {
                // Someone inserted after it meanwhile: keep the chain connected.
                if idx[pos]
                    .compare_exchange(0, TOMBSTONE, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
                {
                    // An insert took the emptied position itself: it is occupied again.
                    continue;
                }
                continue;
            }
            emptied += 1;
            self.w()[hw::INDEX_OCCUPIED].fetch_sub(1, Ordering::Relaxed);
        }
        emptied
    }

    /// An entry is stale when the slot it names no longer carries a key with the entry's tag.
    /// `own_slot` is locked by the caller, so its entries are judged by tag alone (the caller's
    /// new key is being indexed and any other tag for it is old).
    fn index_entry_is_stale(&self, e: u64, own_slot: u32) -> bool {
        let slot = (e as u32).wrapping_sub(1);
        if slot == own_slot {
            return true;
        }
        match self.read(slot) {
            Ok(img) => img.key.is_none() || tag_of(self.key_hash(&img.key)) != e >> 32,
            Err(ReadError::Busy) => false,
            Err(_) => true,
        }
    }

    /// Index entries ever filled (a saturation hint for operators).
    pub fn index_occupied(&self) -> u64 {
        self.w()[hw::INDEX_OCCUPIED].load(Ordering::Relaxed)
    }

    /// Index capacity.
    pub fn index_capacity(&self) -> usize {
        self.geo.index_capacity
    }

    /// Client index inserts that gave up since the table was created (probe limit reached or
    /// every retry lost). Each is a client that [`Table::find_client`] cannot find, so it may
    /// look new to DISCOVER: the supervisor logs increases and `prodhcpctl status` shows it.
    pub fn index_give_ups(&self) -> u64 {
        self.w()[hw::INDEX_GIVE_UPS].load(Ordering::Relaxed)
    }
}

/// Home position of a hash in an index of `cap` entries (multiply-shift range reduction, so
/// the capacity need not be a power of two).
pub(crate) fn home(h: u64, cap: usize) -> usize {
    ((u128::from(h) * cap as u128) >> 64) as usize
}

/// The part of a key hash stored in an index entry (the low half: the home position comes from
/// the high bits, so the two are independent).
pub(crate) fn tag_of(h: u64) -> u64 {
    h & 0xffff_ffff
}

pub(crate) fn next(pos: usize, cap: usize) -> usize {
    if pos + 1 >= cap {
        0
    } else {
        pos + 1
    }
}

/// Preference among slots carrying the same client key.
fn rank(state: LeaseState) -> u8 {
    match state {
        LeaseState::Leased => 5,
        LeaseState::Offered => 4,
        LeaseState::Released | LeaseState::Expired | LeaseState::Free => 3,
        LeaseState::Reserved => 2,
        LeaseState::Declined => 1,
        LeaseState::Abandoned => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::testing::*;

    #[test]
    fn index_reuses_stale_entries() {
        let f = fixture();
        let t = &f.table;
        // Churn many clients through a few slots; the index must not fill up.
        let mut cur = [SlotImage::PRISTINE; 4];
        for round in 0..2000u32 {
            let slot = round % 4;
            let mut img = lease(0);
            img.key = ClientKey::from_client_id(&round.to_le_bytes());
            cur[slot as usize] = t
                .update(1, &f.ring, slot, &cur[slot as usize], &img, &ctx())
                .unwrap();
            assert_eq!(t.find_client(&img.key).map(|x| x.0), Some(slot));
        }
        let before = t.index_occupied();
        let cap = t.index_capacity();
        let mut emptied = 0;
        for _ in 0..3 {
            emptied += t.index_cleanup(0..cap);
        }
        assert!(emptied > 0);
        // What stays is the 4 live entries plus tombstones that still lead to a live entry
        // (the index key is random per table, so how many varies): no tombstone ends a chain.
        let idx = t.index();
        let mut tombstones = 0;
        for pos in 0..cap {
            if idx[pos].load(Ordering::Relaxed) == TOMBSTONE {
                tombstones += 1;
                assert_ne!(
                    idx[next(pos, cap)].load(Ordering::Relaxed),
                    0,
                    "chain end at {pos}"
                );
            }
        }
        assert_eq!(
            t.index_occupied(),
            4 + tombstones,
            "{before} before cleanup"
        );
        assert!(
            t.index_occupied() < before / 10,
            "{before} -> {}",
            t.index_occupied()
        );
        for slot in 0..4u32 {
            let img = t.read(slot).unwrap();
            assert_eq!(t.find_client(&img.key).map(|x| x.0), Some(slot));
        }
    }

    /// A test's action run once inside the next `index_insert`, just before its CAS.
    type IndexHook = Box<dyn FnOnce(&Table)>;

    thread_local! {
        static BEFORE_INDEX_CAS: std::cell::RefCell<Option<IndexHook>> =
            const { std::cell::RefCell::new(None) };
    }

    pub(super) fn before_index_cas(t: &Table) {
        if let Some(f) = BEFORE_INDEX_CAS.with(|h| h.borrow_mut().take()) {
            f(t);
        }
    }

    #[test]
    fn an_insert_racing_index_cleanup_stays_reachable() {
        let f = fixture();
        let t = &f.table;
        // A live entry of another client (slot 5) sits at the victim's home position H, and
        // H+1 is empty, so the victim's insert picks H+1. Just before its CAS, the other
        // client's entry is removed (tombstone) and cleanup empties H, which now ends the chain.
        let other = t
            .update(
                1,
                &f.ring,
                5,
                &SlotImage::PRISTINE,
                &holding(key("other")),
                &ctx(),
            )
            .unwrap();
        let victim = key("victim");
        let cap = t.index_capacity();
        let h = t.key_hash(&victim);
        let at = home(h, cap);
        let other_entry = (tag_of(t.key_hash(&other.key)) << 32) | 6;
        t.index()[at].store(other_entry, Ordering::Relaxed);
        t.index()[next(at, cap)].store(0, Ordering::Relaxed);
        let ran = std::rc::Rc::new(std::cell::Cell::new(false));
        let ran2 = ran.clone();
        BEFORE_INDEX_CAS.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(move |t: &Table| {
                t.index()[at].store(TOMBSTONE, Ordering::Release);
                assert_eq!(t.index_cleanup(at..at + 1), 1, "cleanup empties H");
                ran2.set(true);
            }))
        });
        t.update(
            1,
            &f.ring,
            7,
            &SlotImage::PRISTINE,
            &holding(victim),
            &ctx(),
        )
        .unwrap();
        assert!(ran.get(), "the interleaving ran");
        assert_eq!(
            t.find_client(&victim).map(|x| x.0),
            Some(7),
            "the victim's entry is reachable from its home"
        );
        assert_eq!(t.index_give_ups(), 0);
    }

    #[test]
    fn a_saturated_probe_chain_counts_a_give_up() {
        let f = fixture();
        let t = &f.table;
        let other = t
            .update(
                1,
                &f.ring,
                5,
                &SlotImage::PRISTINE,
                &holding(key("other")),
                &ctx(),
            )
            .unwrap();
        // Every index entry names a live, correctly keyed slot: nothing is reusable.
        let e = (tag_of(t.key_hash(&other.key)) << 32) | 6;
        for x in t.index() {
            x.store(e, Ordering::Relaxed);
        }
        assert_eq!(t.index_give_ups(), 0);
        t.update(
            1,
            &f.ring,
            7,
            &SlotImage::PRISTINE,
            &holding(key("late")),
            &ctx(),
        )
        .unwrap();
        assert_eq!(t.index_give_ups(), 1);
        // As documented on find_client: the lookup does not scan the slots.
        assert_eq!(t.find_client(&key("late")), None);
        assert_eq!(t.find_client(&key("other")).map(|x| x.0), Some(5));
        // The counter is in the file: another mapping sees it.
        assert_eq!(Table::open(t.path()).unwrap().index_give_ups(), 1);
    }

    #[test]
    fn two_tables_hash_the_same_key_to_different_home_positions() {
        let (a, b) = (fixture(), fixture());
        let cap = a.table.index_capacity();
        assert_eq!(cap, b.table.index_capacity());
        let keys: Vec<ClientKey> = (0..16).map(|i| key(&format!("client-{i}"))).collect();
        let same = keys
            .iter()
            .filter(|k| home(a.table.key_hash(k), cap) == home(b.table.key_hash(k), cap))
            .count();
        // Independent random keys: each home agrees with probability 1/cap (≈ 0.0004).
        assert!(same <= 1, "{same} of 16 keys share their home position");
        // And each table finds its own clients.
        for (t, ring) in [(&a.table, &a.ring), (&b.table, &b.ring)] {
            t.update(1, ring, 3, &SlotImage::PRISTINE, &holding(keys[0]), &ctx())
                .unwrap();
            assert_eq!(t.find_client(&keys[0]).map(|x| x.0), Some(3));
        }
    }

    #[test]
    fn a_table_from_before_index_keys_keeps_its_unkeyed_index() {
        let f = fixture();
        let path = f.table.path().to_path_buf();
        let k = key("old-client");
        // Build the state an older build left: no key words, the entry placed by the plain hash.
        f.table.w()[hw::INDEX_KEY0].store(0, Ordering::Relaxed);
        f.table.w()[hw::INDEX_KEY1].store(0, Ordering::Relaxed);
        let old = Table::open(&path).unwrap();
        assert_eq!(old.key_hash(&k), k.hash());
        old.update(1, &f.ring, 4, &SlotImage::PRISTINE, &holding(k), &ctx())
            .unwrap();
        drop(old);
        let again = Table::open(&path).unwrap();
        assert_eq!(again.find_client(&k).map(|x| x.0), Some(4));
        assert!(again.check().is_clean());
    }
}
