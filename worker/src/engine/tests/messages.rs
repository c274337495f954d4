//! REQUEST verdicts (ACK, NAK, silence: the case table in the `messages` module docs),
//! RELEASE, DECLINE and INFORM.

use super::*;

#[test]
fn release_and_decline_change_state_and_are_only_accepted_from_the_holder() {
    let mut f = fixture();
    let ip = dora(&mut f.engine, 1);
    let slot = f.engine.table().slot_of_addr(u32::from(ip)).unwrap();
    // Someone else's RELEASE is ignored.
    assert!(send(&mut f.engine, &packet(7, 2, NONE, ip.octets(), &[])).is_none());
    assert_eq!(
        f.engine.table().read(slot).unwrap().state,
        LeaseState::Leased
    );
    assert!(send(&mut f.engine, &packet(7, 1, NONE, ip.octets(), &[])).is_none());
    assert_eq!(
        f.engine.table().read(slot).unwrap().state,
        LeaseState::Released
    );
    assert!(f.engine.table().is_free(slot));
    let ip2 = dora(&mut f.engine, 1);
    assert_eq!(ip2, ip, "a released address goes back to its client");
    assert!(send(
        &mut f.engine,
        &packet(4, 1, RELAY, NONE, &[(50, &ip.octets())])
    )
    .is_none());
    let img = f.engine.table().read(slot).unwrap();
    assert_eq!(img.state, LeaseState::Declined);
    assert!(!f.engine.table().is_free(slot));
    assert_ne!(
        dora(&mut f.engine, 1),
        ip,
        "a declined address is quarantined"
    );
}

#[test]
fn wrong_subnet_init_reboot_is_naked_and_link_selection_wins() {
    // RFC 2131 §4.3.2: a wrong-network INIT-REBOOT is NAKed by an authoritative server
    // (not by default: see `nak_rules_*`).
    let mut f = authoritative_fixture();
    let (nak, o) = send(
        &mut f.engine,
        &packet(3, 1, RELAY, NONE, &[(50, &[10, 1, 0, 50])]),
    )
    .unwrap();
    assert_eq!(msg_type(&nak), v4::MessageType::Nak);
    assert!(!o.confirms_lease, "a NAK is not held for replication");
    // 82.5 link selection → the 10.1.0.0/16 subnet, even though giaddr maps to 10.0.0.0/24.
    let ls: &[u8] = &[5, 4, 10, 1, 0, 1];
    let (offer, _) = send(&mut f.engine, &packet(1, 5, RELAY, NONE, &[(82, ls)])).unwrap();
    assert!(offer.yiaddr().octets().starts_with(&[10, 1]));
    // 118 subnet selection likewise.
    let (offer, _) = send(
        &mut f.engine,
        &packet(1, 6, RELAY, NONE, &[(118, &[10, 1, 0, 0])]),
    )
    .unwrap();
    assert!(offer.yiaddr().octets().starts_with(&[10, 1]));
}

#[test]
fn inform_acks_without_a_lease() {
    let mut f = fixture();
    let free_before = f.engine.table().count_free(0..3);
    let (ack, o) = send(&mut f.engine, &packet(8, 1, NONE, [10, 0, 0, 50], &[])).unwrap();
    assert_eq!(msg_type(&ack), v4::MessageType::Ack);
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(ack.opts().get(v4::OptionCode::AddressLeaseTime).is_none());
    assert!(
        !o.confirms_lease,
        "an INFORM answer is never held for replication"
    );
    assert_eq!(
        o.dst,
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 50), CLIENT_PORT)
    );
    assert_eq!(
        f.engine.table().count_free(0..3),
        free_before,
        "no lease taken"
    );
}

/// The rows of the case table (the `messages` module docs) where the subnet's
/// `authoritative` matters, for both settings: (name, packet, default verdict, authoritative
/// verdict).
type Row = (&'static str, Vec<u8>, Option<bool>, Option<bool>);

fn unknown_client_rows() -> Vec<Row> {
    vec![
        (
            "init-reboot, unknown relay",
            packet(3, 1, OTHER_RELAY, NONE, &[(50, &[10, 0, 0, 10])]),
            SILENT,
            SILENT,
        ),
        (
            "init-reboot, unknown 82.5 subnet",
            packet(
                3,
                1,
                RELAY,
                NONE,
                &[(50, &[10, 0, 0, 10]), (82, &[5, 4, 172, 16, 0, 1])],
            ),
            SILENT,
            SILENT,
        ),
        (
            "init-reboot, unknown 118 subnet",
            packet(
                3,
                1,
                RELAY,
                NONE,
                &[(50, &[10, 0, 0, 10]), (118, &[172, 16, 0, 0])],
            ),
            SILENT,
            SILENT,
        ),
        (
            "rebind, ciaddr on no served network",
            packet(3, 1, OTHER_RELAY, [172, 16, 0, 5], &[]),
            SILENT,
            SILENT,
        ),
        (
            "init-reboot, address on another network, no record",
            packet(3, 1, RELAY, NONE, &[(50, &[10, 1, 0, 50])]),
            SILENT,
            NAK,
        ),
        (
            "init-reboot, address outside the pools, no record",
            packet(3, 1, RELAY, NONE, &[(50, &[10, 0, 0, 200])]),
            SILENT,
            NAK,
        ),
        (
            "init-reboot, free pool address, no record",
            packet(3, 1, RELAY, NONE, &[(50, &[10, 0, 0, 10])]),
            SILENT,
            NAK,
        ),
        (
            "rebind through the relay, free pool address, no record",
            packet(3, 1, RELAY, [10, 0, 0, 10], &[]),
            SILENT,
            NAK,
        ),
        (
            "init-reboot, address reserved for another client",
            packet(3, 1, RELAY, NONE, &[(50, &[10, 0, 0, 11])]),
            NAK,
            NAK,
        ),
    ]
}

#[test]
fn nak_rules_for_clients_without_a_record() {
    for (name, pkt, default, auth) in unknown_client_rows() {
        let mut f = fixture();
        assert_eq!(verdict(&mut f.engine, &pkt), default, "default: {name}");
        assert_eq!(
            state_of(&f.engine, [10, 0, 0, 10]),
            LeaseState::Free,
            "{name}"
        );
        if default == SILENT {
            let silent = counter(&f.engine, "not_authoritative") + counter(&f.engine, "no_subnet");
            assert_eq!(silent, 1, "a counted drop: {name}");
        }
        let mut f = authoritative_fixture();
        assert_eq!(verdict(&mut f.engine, &pkt), auth, "authoritative: {name}");
        assert_eq!(
            state_of(&f.engine, [10, 0, 0, 10]),
            LeaseState::Free,
            "{name}"
        );
    }
}

#[test]
fn nak_rules_for_a_bound_client() {
    for fx in [fixture as fn() -> Fx, authoritative_fixture] {
        let mut f = fx();
        let ip = dora(&mut f.engine, 1);
        assert_eq!(ip, Ipv4Addr::new(10, 0, 0, 10));
        // INIT-REBOOT for its own address: ACK.
        let own = packet(3, 1, RELAY, NONE, &[(50, &ip.octets())]);
        assert_eq!(verdict(&mut f.engine, &own), ACK);
        // INIT-REBOOT for another free pool address: NAK (an ACK would give it two).
        let other = packet(3, 1, RELAY, NONE, &[(50, &[10, 0, 0, 12])]);
        assert_eq!(verdict(&mut f.engine, &other), NAK);
        // RENEW (unicast, ciaddr) for another address: NAK, sent by broadcast.
        let renew_other = packet(3, 1, NONE, [10, 0, 0, 12], &[]);
        assert_eq!(verdict(&mut f.engine, &renew_other), NAK);
        // REBIND through the relay for another address: NAK.
        let rebind_other = packet(3, 1, RELAY, [10, 0, 0, 12], &[]);
        assert_eq!(verdict(&mut f.engine, &rebind_other), NAK);
        assert_eq!(state_of(&f.engine, [10, 0, 0, 12]), LeaseState::Free);
        // An earlier record elsewhere does not make a second address possible: the
        // client released 10.0.0.12 long ago (its record stays) and is bound to `ip`.
        let slot12 = f
            .engine
            .table()
            .slot_of_addr(u32::from_be_bytes([10, 0, 0, 12]))
            .unwrap();
        let cur12 = f.engine.table().read(slot12).unwrap();
        let mut old12 = SlotImage {
            state: LeaseState::Released,
            expires: 1,
            updated: 1,
            key: ClientKey::from_hwaddr(1, &[2, 0, 0, 0, 0, 1]),
            ..SlotImage::PRISTINE
        };
        old12.set_hwaddr(1, &[2, 0, 0, 0, 0, 1]);
        let ctx = ChangeContext {
            reason: ChangeReason::Release,
            time_ms: 0,
            context: b"",
        };
        f.engine
            .writer()
            .update(slot12, &cur12, &old12, &ctx)
            .unwrap();
        assert_eq!(verdict(&mut f.engine, &other), NAK);
        assert_eq!(state_of(&f.engine, [10, 0, 0, 12]), LeaseState::Released);
        // RENEW of its own address: ACK.
        assert_eq!(
            verdict(&mut f.engine, &packet(3, 1, NONE, ip.octets(), &[])),
            ACK
        );
        // Another client asking for this address: NAK.
        let theirs = packet(3, 2, RELAY, NONE, &[(50, &ip.octets())]);
        assert_eq!(verdict(&mut f.engine, &theirs), NAK);
        // SELECTING this server for an address it cannot give: NAK.
        let sid = [198, 18, 0, 1];
        let sel = packet(3, 2, RELAY, NONE, &[(50, &ip.octets()), (54, &sid)]);
        assert_eq!(verdict(&mut f.engine, &sel), NAK);
        // SELECTING another server: silent.
        let sel_other = packet(
            3,
            2,
            RELAY,
            NONE,
            &[(50, &ip.octets()), (54, &[198, 18, 0, 9])],
        );
        assert_eq!(verdict(&mut f.engine, &sel_other), SILENT);
        assert_eq!(state_of(&f.engine, ip.octets()), LeaseState::Leased);
    }
}

#[test]
fn a_nak_through_a_relay_sets_the_broadcast_bit_and_a_direct_one_is_broadcast() {
    let mut f = fixture();
    let (nak, o) = send(
        &mut f.engine,
        &packet(3, 1, RELAY, NONE, &[(50, &[10, 0, 0, 11])]),
    )
    .unwrap();
    assert_eq!(msg_type(&nak), v4::MessageType::Nak);
    assert!(nak.flags().broadcast());
    assert_eq!(o.dst, SocketAddrV4::new(Ipv4Addr::from(RELAY), 67));
    let (nak, o) = send(&mut f.engine, &packet(3, 1, NONE, [10, 0, 0, 11], &[])).unwrap();
    assert_eq!(msg_type(&nak), v4::MessageType::Nak);
    assert_eq!(o.dst, SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT));
}

#[test]
fn a_reservation_nak_releases_the_clients_dynamic_lease() {
    let mut f = fixture();
    // Client 0x99 holds 10.0.0.10 from before its reservation (10.0.0.11) was configured.
    let slot = f
        .engine
        .table()
        .slot_of_addr(u32::from_be_bytes([10, 0, 0, 10]))
        .unwrap();
    let cur = f.engine.table().read(slot).unwrap();
    let mut held = SlotImage {
        state: LeaseState::Leased,
        expires: u32::MAX - 1,
        updated: 1,
        key: ClientKey::from_hwaddr(1, &[2, 0, 0, 0, 0, 0x99]),
        ..SlotImage::PRISTINE
    };
    held.set_hwaddr(1, &[2, 0, 0, 0, 0, 0x99]);
    let ctx = ChangeContext {
        reason: ChangeReason::Commit,
        time_ms: 0,
        context: b"",
    };
    f.engine.writer().update(slot, &cur, &held, &ctx).unwrap();
    // It INIT-REBOOTs asking for yet another address: NAK, and its lease is given back.
    let reboot = packet(3, 0x99, RELAY, NONE, &[(50, &[10, 0, 0, 12])]);
    assert_eq!(verdict(&mut f.engine, &reboot), NAK);
    assert_eq!(state_of(&f.engine, [10, 0, 0, 10]), LeaseState::Released);
    assert_eq!(state_of(&f.engine, [10, 0, 0, 12]), LeaseState::Free);
    // Likewise when it renews the dynamic lease itself.
    let cur = f.engine.table().read(slot).unwrap();
    f.engine.writer().update(slot, &cur, &held, &ctx).unwrap();
    let renew = packet(3, 0x99, RELAY, [10, 0, 0, 10], &[]);
    assert_eq!(verdict(&mut f.engine, &renew), NAK);
    assert_eq!(state_of(&f.engine, [10, 0, 0, 10]), LeaseState::Released);
    assert!(f.engine.table().is_free(slot));
    assert_eq!(dora(&mut f.engine, 0x99), Ipv4Addr::new(10, 0, 0, 11));
    assert!(f.engine.table().check().is_clean());
}

#[test]
fn release_and_decline_for_another_server_are_ignored() {
    let mut f = fixture();
    let ip = dora(&mut f.engine, 1);
    let foreign: &[u8] = &[198, 18, 0, 9];
    assert!(send(
        &mut f.engine,
        &packet(7, 1, NONE, ip.octets(), &[(54, foreign)])
    )
    .is_none());
    assert!(send(
        &mut f.engine,
        &packet(4, 1, RELAY, NONE, &[(50, &ip.octets()), (54, foreign)])
    )
    .is_none());
    assert_eq!(state_of(&f.engine, ip.octets()), LeaseState::Leased);
    assert_eq!(counter(&f.engine, "other_server"), 2);
    // Addressed to this server (or without 54) they are honoured.
    let ours: &[u8] = &[198, 18, 0, 1];
    assert!(send(
        &mut f.engine,
        &packet(7, 1, NONE, ip.octets(), &[(54, ours)])
    )
    .is_none());
    assert_eq!(state_of(&f.engine, ip.octets()), LeaseState::Released);
}

/// The context fields of a record as (tag, value, truncated).
fn context_of(rec: &shm_layout::ChangeRecord) -> Vec<(u8, Vec<u8>, bool)> {
    ring_context::decode(&rec.context)
        .expect("well framed")
        .into_iter()
        .map(|f| (f.tag, f.value.to_vec(), f.truncated))
        .collect()
}

#[test]
fn a_nak_is_recorded_with_the_client_and_the_asked_address_and_changes_nothing() {
    let mut f = authoritative_fixture();
    let ip = dora(&mut f.engine, 1);
    let slot = f.engine.table().slot_of_addr(u32::from(ip)).unwrap();
    let held = f.engine.table().read(slot).unwrap();
    let head = f.engine.ring().head();
    // Client 2 INIT-REBOOTs through the relay asking for client 1's address: NAK.
    let rai = [1, 2, b'c', b'9'];
    let (nak, o) = send(
        &mut f.engine,
        &packet(3, 2, RELAY, NONE, &[(50, &ip.octets()), (82, &rai)]),
    )
    .unwrap();
    assert_eq!(msg_type(&nak), v4::MessageType::Nak);
    assert!(!o.confirms_lease, "a NAK is sent at once, never held");
    assert_eq!(f.engine.ring().head(), head + 1, "one record: the NAK's");
    let rec = f.engine.ring().read(head + 1).unwrap();
    assert_eq!(rec.reason, ChangeReason::Nak);
    assert_eq!(rec.slot, slot, "the asked address's slot");
    assert_eq!(rec.image, held, "its image unchanged: client 1's binding");
    assert_eq!(
        f.engine.table().read(slot).unwrap(),
        held,
        "nothing changed"
    );
    assert_eq!(
        context_of(&rec),
        vec![
            (ring_context::TAG_CIRCUIT_ID, b"c9".to_vec(), false),
            (ring_context::TAG_GIADDR, RELAY.to_vec(), false),
            (
                ring_context::TAG_REQUEST_STATE,
                vec![RequestState::InitReboot as u8],
                false
            ),
            (
                ring_context::TAG_CLIENT_HWADDR,
                vec![2, 0, 0, 0, 0, 2],
                false
            ),
            (ring_context::TAG_REQUESTED_IP, ip.octets().to_vec(), false),
        ]
    );
    // An address the table does not hold (off the relay's network): no slot, empty image.
    let (nak, _) = send(
        &mut f.engine,
        &packet(3, 3, RELAY, NONE, &[(50, &[192, 0, 2, 7])]),
    )
    .unwrap();
    assert_eq!(msg_type(&nak), v4::MessageType::Nak);
    let rec = f.engine.ring().read(f.engine.ring().head()).unwrap();
    assert_eq!(
        (rec.reason, rec.slot, rec.image),
        (ChangeReason::Nak, shm_layout::NO_SLOT, SlotImage::PRISTINE)
    );
    let ctx = context_of(&rec);
    assert!(ctx.contains(&(
        ring_context::TAG_CLIENT_HWADDR,
        vec![2, 0, 0, 0, 0, 3],
        false
    )));
    assert!(ctx.contains(&(ring_context::TAG_REQUESTED_IP, vec![192, 0, 2, 7], false)));
    // A RENEWING client (unicast, ciaddr) asking for an address that is not its own: the
    // record names the renewal's ciaddr and its state.
    let (nak, _) = send(&mut f.engine, &packet(3, 1, NONE, [10, 0, 0, 12], &[])).unwrap();
    assert_eq!(msg_type(&nak), v4::MessageType::Nak);
    let rec = f.engine.ring().read(f.engine.ring().head()).unwrap();
    assert_eq!(rec.reason, ChangeReason::Nak);
    let ctx = context_of(&rec);
    assert!(ctx.contains(&(
        ring_context::TAG_REQUEST_STATE,
        vec![RequestState::Renewing as u8],
        false
    )));
    assert!(ctx.contains(&(ring_context::TAG_REQUESTED_IP, vec![10, 0, 0, 12], false)));
    // Silence records nothing.
    let head = f.engine.ring().head();
    let sel_other = packet(
        3,
        2,
        RELAY,
        NONE,
        &[(50, &ip.octets()), (54, &[198, 18, 0, 9])],
    );
    assert_eq!(verdict(&mut f.engine, &sel_other), SILENT);
    assert_eq!(f.engine.ring().head(), head);
    assert_eq!(counter(&f.engine, "nak"), 3);
    assert!(f.engine.table().check().is_clean());
}

#[test]
fn an_acks_record_carries_the_clients_request_state() {
    let mut f = fixture();
    let ip = dora(&mut f.engine, 1);
    let state_of_last = |e: &Engine| {
        let rec = e.ring().read(e.ring().head()).unwrap();
        let state = context_of(&rec)
            .into_iter()
            .find(|(t, _, _)| *t == ring_context::TAG_REQUEST_STATE)
            .and_then(|(_, v, _)| RequestState::from_value(&v));
        (rec.reason, state)
    };
    assert_eq!(
        state_of_last(&f.engine),
        (ChangeReason::Commit, Some(RequestState::Selecting))
    );
    // RENEWING: unicast from the client, not relayed.
    assert_eq!(
        verdict(&mut f.engine, &packet(3, 1, NONE, ip.octets(), &[])),
        ACK
    );
    assert_eq!(
        state_of_last(&f.engine),
        (ChangeReason::Renew, Some(RequestState::Renewing))
    );
    // REBINDING: relayed (a relay forwards only the client's broadcasts).
    assert_eq!(
        verdict(&mut f.engine, &packet(3, 1, RELAY, ip.octets(), &[])),
        ACK
    );
    assert_eq!(
        state_of_last(&f.engine),
        (ChangeReason::Renew, Some(RequestState::Rebinding))
    );
    // REBINDING: broadcast, not relayed (its subnet named by option 118 here: the fixture
    // serves no interface).
    let mut out = [0u8; MAX_REPLY];
    let bcast = Incoming {
        broadcast: true,
        ..inc()
    };
    let p = packet(3, 1, NONE, ip.octets(), &[(118, &[10, 0, 0, 0])]);
    let o = f.engine.handle(&p, &bcast, &mut out).expect("ack");
    assert!(o.confirms_lease);
    assert_eq!(
        state_of_last(&f.engine),
        (ChangeReason::Renew, Some(RequestState::Rebinding))
    );
    // INIT-REBOOT: still a Renew record (same binding), its state says which.
    assert_eq!(
        verdict(
            &mut f.engine,
            &packet(3, 1, RELAY, NONE, &[(50, &ip.octets())])
        ),
        ACK
    );
    assert_eq!(
        state_of_last(&f.engine),
        (ChangeReason::Renew, Some(RequestState::InitReboot))
    );
    // A RELEASE's record carries no request state.
    release(&mut f.engine, 1, ip);
    assert_eq!(state_of_last(&f.engine), (ChangeReason::Release, None));
}
