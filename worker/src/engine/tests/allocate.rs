//! Which address a DISCOVER is offered: reservations, recently freed addresses, the
//! subnet's span, a busy slot.

use super::*;

#[test]
fn reserved_address_is_never_given_to_others_even_at_exhaustion() {
    let mut f = fixture();
    // Pool 10.0.0.10-12 with .11 reserved: two other clients fit, the third gets nothing.
    let a = dora(&mut f.engine, 1);
    let b = dora(&mut f.engine, 2);
    assert!(![a, b].contains(&Ipv4Addr::new(10, 0, 0, 11)));
    assert!(send(&mut f.engine, &packet(1, 3, RELAY, NONE, &[])).is_none());
    // A request for the reserved address by someone else is NAKed.
    let (nak, _) = send(
        &mut f.engine,
        &packet(3, 4, RELAY, NONE, &[(50, &[10, 0, 0, 11])]),
    )
    .unwrap();
    assert_eq!(msg_type(&nak), v4::MessageType::Nak);
    // The reserved client still gets its address.
    assert_eq!(dora(&mut f.engine, 0x99), Ipv4Addr::new(10, 0, 0, 11));
}

#[test]
fn a_new_client_gets_a_never_used_address_before_a_just_released_one() {
    let f = fixture();
    let mut e = restarted(&f);
    let a = dora(&mut e, 1);
    assert_eq!(a, Ipv4Addr::new(10, 0, 0, 10));
    release(&mut e, 1, a);
    // The worker restarts: its cursor is back at .10, the address just released.
    let mut e = restarted(&f);
    let b = dora(&mut e, 2);
    assert_eq!(
        b,
        Ipv4Addr::new(10, 0, 0, 12),
        "offered the never-used address, not the one just released (.11 is reserved)"
    );
    assert_eq!(
        dora(&mut e, 1),
        a,
        "the releasing client gets its address back"
    );
    assert!(e.table().check().is_clean());
}

#[test]
fn with_only_recently_freed_addresses_left_the_least_recently_freed_is_offered() {
    let mut f = fixture();
    let a = dora(&mut f.engine, 1);
    let b = dora(&mut f.engine, 2);
    assert_eq!(
        (a, b),
        (Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 0, 12))
    );
    release(&mut f.engine, 1, a);
    release(&mut f.engine, 2, b);
    // Make .12 the older release (100 s ago); .10 was released just now.
    let t = f.engine.table();
    let ring = Ring::open_or_create(&f._dir.path().join("ring-test"), 50, 16).unwrap();
    let slot_b = t.slot_of_addr(u32::from(b)).unwrap();
    let cur = t.read(slot_b).unwrap();
    let older = SlotImage {
        updated: cur.updated - 100,
        ..cur
    };
    let ctx = ChangeContext {
        reason: ChangeReason::Release,
        time_ms: 0,
        context: b"",
    };
    Writer::new(t, 50, &ring)
        .update(slot_b, &cur, &older, &ctx)
        .unwrap();
    // The cursor wraps to .10 first; both free addresses are recent, so the scan comes
    // back round and takes the least recently freed one. The pool is not "exhausted".
    assert_eq!(dora(&mut f.engine, 3), b);
    assert!(send(&mut f.engine, &packet(1, 4, RELAY, NONE, &[])).is_some());
}

/// Two subnets whose slot spans are adjacent, the first ending at slot 101 (not a multiple
/// of 64): 10.0.0.1-101 (slots 0..101), 10.1.0.1-200 (slots 101..301).
const ADJACENT: &str = r#"(
    state_dir: "/tmp/unused",
    control_socket: "/tmp/unused/ctl.sock",
    interfaces: [],
    workers: 1,
    offer_hold: 30,
    subnets: [
        (network: "10.0.0.0/24", pools: ["10.0.0.1-10.0.0.101"], relays: ["198.18.0.2"]),
        (network: "10.1.0.0/16", pools: ["10.1.0.1-10.1.0.200"], relays: ["198.18.0.3"]),
    ],
)"#;

#[test]
fn a_full_subnet_never_offers_the_next_subnets_address() {
    let mut f = fixture_from(ADJACENT, None);
    let span = f.engine.cfg.subnets[0].spans[0].clone();
    assert_eq!(span, 0..101);
    // Fill the first subnet, and the second one's slots 101..128 (the rest of the bitmap
    // word that holds slot 100), so the next free bit after the first span is slot 128.
    for mac in 1..=101u8 {
        assert!(dora(&mut f.engine, mac).octets().starts_with(&[10, 0, 0]));
    }
    let second: [u8; 4] = [198, 18, 0, 3];
    let sid = [198, 18, 0, 1];
    for mac in 102..=128u8 {
        let (offer, _) = send(&mut f.engine, &packet(1, mac, second, NONE, &[])).unwrap();
        let ip = offer.yiaddr();
        assert!(ip.octets().starts_with(&[10, 1]));
        let req = packet(3, mac, second, NONE, &[(50, &ip.octets()), (54, &sid)]);
        assert_eq!(verdict(&mut f.engine, &req), ACK);
    }
    assert_eq!(f.engine.table().count_free(0..128), 0);
    // The first subnet is full: no offer, certainly not one from the second subnet.
    let reply = send(&mut f.engine, &packet(1, 200, RELAY, NONE, &[]));
    if let Some((m, _)) = &reply {
        panic!("offered {} from a full 10.0.0.0/24", m.yiaddr());
    }
    let key = ClientKey::from_hwaddr(1, &[2, 0, 0, 0, 0, 200]);
    assert!(
        f.engine.table().find_client(&key).is_none(),
        "nothing held for it"
    );
    assert!(f.engine.table().check().is_clean());
}

#[test]
fn a_candidate_outside_the_subnet_span_is_refused_and_counted() {
    // Whatever produced it (here: the client's own record in another subnet, fed directly
    // to the check), a slot outside the span is never offered.
    let mut f = fixture_from(ADJACENT, None);
    let req_bytes = packet(1, 1, RELAY, NONE, &[]);
    let req = codec::decode(&req_bytes).unwrap();
    let c = Engine::client(&req);
    f.engine.offer_subnet = Some(0);
    let cur = f.engine.table().read(150).unwrap();
    assert_eq!(
        f.engine
            .offer_slot(&req, &c, 150, &cur, 100, 1)
            .unwrap_err(),
        Counter::DropOutsideSpan
    );
    assert_eq!(f.engine.table().read(150).unwrap().state, LeaseState::Free);
    assert_eq!(f.engine.outside_span_hits, 1);
}

fn bump_slot_as_another_writer(table: &Table, slot: u32) {
    let dir = table.path().parent().unwrap();
    let ring = Ring::open_or_create(&dir.join("ring-2.dat"), 2, 64).unwrap();
    let cur = table.read(slot).unwrap();
    let new = SlotImage {
        updated: cur.updated + 1,
        ..cur
    };
    let ctx = ChangeContext {
        reason: ChangeReason::Renew,
        time_ms: 0,
        context: b"",
    };
    Writer::new(table, 2, &ring)
        .update(slot, &cur, &new, &ctx)
        .unwrap();
}

#[test]
fn discover_retries_the_clients_own_slot_once_when_it_is_busy() {
    let mut f = fixture();
    let ip = dora(&mut f.engine, 1);
    assert!(send(&mut f.engine, &packet(7, 1, NONE, ip.octets(), &[])).is_none());
    assert_eq!(state_of(&f.engine, ip.octets()), LeaseState::Released);
    // Between the engine's read of the client's slot and its commit, another writer
    // changes the slot: the first commit loses, the retry wins.
    f.engine.race_hook = Some(bump_slot_as_another_writer);
    let (offer, _) = send(&mut f.engine, &packet(1, 1, RELAY, NONE, &[])).unwrap();
    assert!(f.engine.race_hook.is_none(), "the race happened");
    assert_eq!(offer.yiaddr(), ip, "the client gets its own address back");
    assert_eq!(state_of(&f.engine, [10, 0, 0, 12]), LeaseState::Free);
}
