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
