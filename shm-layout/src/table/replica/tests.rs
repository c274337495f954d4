use super::*;
use crate::ring::ChangeRecord;
use crate::slot::LeaseState;
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
fn two_images_at_one_version_settle_alike_on_both_sides() {
    // Both sides of a partition changed slot 9 from version 1: a to client 2 (lease ends
    // later), b to client 3.
    let a = fixture();
    let b = fixture();
    let base = a
        .table
        .update(1, &a.ring, 9, &SlotImage::PRISTINE, &lease(1), &ctx())
        .unwrap();
    b.table
        .update(1, &b.ring, 9, &SlotImage::PRISTINE, &lease(1), &ctx())
        .unwrap();
    let later = SlotImage {
        expires: lease(2).expires + 60,
        ..lease(2)
    };
    let on_a = a
        .table
        .update(1, &a.ring, 9, &base, &later, &ctx())
        .unwrap();
    let on_b = b
        .table
        .update(1, &b.ring, 9, &base, &lease(3), &ctx())
        .unwrap();
    assert_eq!(on_a.version, on_b.version);
    assert!(replica_wins(&on_a, &on_b) && !replica_wins(&on_b, &on_a));
    assert!(
        !replica_wins(&on_a, &on_a),
        "the same image is not applied again"
    );
    // Each side applies the other's image: both end with a's (the later lease end).
    let ctx_r = rctx();
    let to_b = b
        .table
        .apply_replica(SYNCD_OWNER, &b.ring, 9, &on_a, &ctx_r)
        .unwrap();
    assert_eq!(to_b, ApplyOutcome::Applied(on_a));
    let to_a = a
        .table
        .apply_replica(SYNCD_OWNER, &a.ring, 9, &on_b, &ctx_r)
        .unwrap();
    assert_eq!(
        to_a,
        ApplyOutcome::Stale {
            local: on_a.version
        }
    );
    assert_eq!(a.table.read(9).unwrap(), b.table.read(9).unwrap());
    assert_eq!(b.table.find_client(&later.key).map(|f| f.0), Some(9));
    assert_eq!(
        b.table.find_client(&lease(3).key),
        None,
        "the loser's key left the index"
    );
    let rep = b.table.check();
    assert!(rep.is_clean(), "{rep:?}");
    // Equal lease ends: the higher words win, on both sides alike.
    let x = SlotImage {
        expires: 100,
        ..on_a
    };
    let y = SlotImage {
        expires: 100,
        ..on_b
    };
    assert_ne!(replica_wins(&x, &y), replica_wins(&y, &x));
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
