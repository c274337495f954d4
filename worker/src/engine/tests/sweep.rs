//! The expiry sweeper.

use super::*;

#[test]
fn sweeper_expires_leases_and_offers() {
    let mut f = fixture();
    let ip = dora(&mut f.engine, 1);
    let slot = f.engine.table().slot_of_addr(u32::from(ip)).unwrap();
    // Age the lease by rewriting its expiry into the past.
    let cur = f.engine.table().read(slot).unwrap();
    let old = SlotImage { expires: 1, ..cur };
    f.engine
        .writer()
        .update(
            slot,
            &cur,
            &old,
            &ChangeContext {
                reason: ChangeReason::Renew,
                time_ms: 0,
                context: b"",
            },
        )
        .unwrap();
    f.engine.sweep(10_000);
    let img = f.engine.table().read(slot).unwrap();
    assert_eq!(img.state, LeaseState::Expired);
    assert!(f.engine.table().is_free(slot));
    assert!(f.engine.table().check().is_clean());
}

#[test]
fn sweeper_abandons_a_slot_that_fails_its_checksum() {
    use std::os::unix::fs::FileExt;
    let mut f = fixture();
    let ip = dora(&mut f.engine, 1);
    let slot = f.engine.table().slot_of_addr(u32::from(ip)).unwrap();
    let off = (f.engine.table().geometry().slots_off as u64 + u64::from(slot) * 8) * 8 + 20;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.engine.table().path())
        .unwrap();
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, off).unwrap();
    file.write_all_at(&[b[0] ^ 0x10], off).unwrap();
    assert!(matches!(
        f.engine.table().read(slot),
        Err(ReadError::Corrupt(_))
    ));
    f.engine.sweep(10_000);
    let img = f.engine.table().read(slot).unwrap();
    assert_eq!(img.state, LeaseState::Abandoned);
    assert!(!f.engine.table().is_free(slot));
}
