//! Lease times under clock steps and implausible clocks.

use super::*;

const T0_MS: i64 = 1_800_000_000_000;
const T0: u64 = 1_800_000_000;

fn expires_of(e: &Engine, ip: Ipv4Addr) -> u64 {
    let slot = e.table().slot_of_addr(u32::from(ip)).unwrap();
    u64::from(e.table().read(slot).unwrap().expires)
}

#[test]
fn a_forward_clock_step_does_not_expire_leases_early() {
    let clock = crate::clock::ManualClock::new(T0_MS);
    let mut f = fixture_from(CFG, Some(clock.clone()));
    let ip = dora(&mut f.engine, 1);
    assert_eq!(expires_of(&f.engine, ip), T0 + 3600);
    clock.advance(1_000);
    clock.step_wall(2 * 3_600_000);
    f.engine.sweep(10_000);
    assert_eq!(
        state_of(&f.engine, ip.octets()),
        LeaseState::Leased,
        "still the client's"
    );
    assert_eq!(counter(&f.engine, "clock_step"), 1);
    // Nobody else gets it either.
    assert_ne!(dora(&mut f.engine, 2), ip);
    // It expires after its real hour.
    clock.advance(3_598_000);
    f.engine.sweep(10_000);
    assert_eq!(state_of(&f.engine, ip.octets()), LeaseState::Leased);
    clock.advance(2_000);
    f.engine.sweep(10_000);
    assert_eq!(state_of(&f.engine, ip.octets()), LeaseState::Expired);
}

#[test]
fn a_backward_clock_step_does_not_stretch_holds() {
    let clock = crate::clock::ManualClock::new(T0_MS);
    let mut f = fixture_from(CFG, Some(clock.clone()));
    let (offer, _) = send(&mut f.engine, &packet(1, 1, RELAY, NONE, &[])).unwrap();
    let ip = offer.yiaddr();
    assert_eq!(state_of(&f.engine, ip.octets()), LeaseState::Offered);
    clock.step_wall(-3_600_000);
    clock.advance(31_000);
    f.engine.sweep(10_000);
    assert_eq!(
        state_of(&f.engine, ip.octets()),
        LeaseState::Free,
        "the 30 s hold ended"
    );
    assert_eq!(counter(&f.engine, "clock_step"), 1);
    // A lease granted now runs for its hour of real time from now.
    let ip = dora(&mut f.engine, 1);
    assert_eq!(expires_of(&f.engine, ip), T0 + 31 + 3600);
}

#[test]
fn a_clock_before_1970_gives_leases_that_expire_after_now() {
    let clock = crate::clock::ManualClock::new(-5 * 365 * 86_400_000);
    let mut f = fixture_from(CFG, Some(clock.clone()));
    let ip = dora(&mut f.engine, 1);
    let floor = (crate::clock::MIN_PLAUSIBLE_MS / 1000) as u64;
    assert_eq!(expires_of(&f.engine, ip), floor + 3600);
    let rec = f.engine.ring.read(f.engine.ring.head()).unwrap();
    assert_eq!(rec.time_ms, floor * 1000);
    clock.advance(60_000);
    f.engine.sweep(10_000);
    assert_eq!(state_of(&f.engine, ip.octets()), LeaseState::Leased);
}

#[test]
fn a_restarted_engine_without_a_plausible_clock_resumes_at_its_newest_record() {
    let clock = crate::clock::ManualClock::new(T0_MS);
    let mut f = fixture_from(CFG, Some(clock));
    dora(&mut f.engine, 1);
    let Fx { _dir, engine } = f;
    let Engine {
        table, ring, cfg, ..
    } = engine;
    // The box rebooted without its real-time clock: the worker's lease clock resumes at
    // its newest record, so a new lease runs for an hour after that, not from 1970.
    let rtc_less = crate::clock::ManualClock::new(0);
    let mut e = Engine::with_clock(table, ring, 1, cfg, 0, 1, Box::new(rtc_less));
    let ip = dora(&mut e, 2);
    assert_eq!(expires_of(&e, ip), T0 + 3600);
    drop(_dir);
}
