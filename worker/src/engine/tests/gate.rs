//! The gate (issue 8: roles): a closed gate answers nobody and sweeps nothing; serving alone
//! (`Gate::Share`) follows the share rules of `engine/share.rs`; option 54 is the cluster's
//! service address when `server_id` is not set.

use super::*;
use shm_layout::Share;

/// One subnet, pool 10.0.0.10-29 = slots 0..20 (slot = address − 10.0.0.10), and a
/// reservation outside the pool (10.0.0.40, slot 20) for MAC 02:00:00:00:00:99.
const SHARE_CFG: &str = r#"(
    state_dir: "/tmp/unused",
    control_socket: "/tmp/unused/ctl.sock",
    interfaces: [],
    workers: 1,
    offer_hold: 30,
    subnets: [
        (
            network: "10.0.0.0/24",
            pools: ["10.0.0.10-10.0.0.29"],
            lease_time: 3600,
            relays: ["198.18.0.2"],
            reservations: [(mac: "02:00:00:00:00:99", address: "10.0.0.40")],
        ),
    ],
)"#;

const POOL_START: u32 = u32::from_be_bytes([10, 0, 0, 10]);

fn slot_of(ip: Ipv4Addr) -> u32 {
    u32::from(ip) - POOL_START
}

fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

fn set_gate(e: &Engine, gate: Gate) {
    e.ring().set_gate(gate);
}

fn share(index: u8, since: u32) -> Gate {
    Gate::Share(Share {
        index,
        count: 2,
        since,
    })
}

fn lease_time(m: &v4::Message) -> u32 {
    match m.opts().get(v4::OptionCode::AddressLeaseTime) {
        Some(v4::DhcpOption::AddressLeaseTime(t)) => *t,
        other => panic!("no lease time: {other:?}"),
    }
}

fn image(e: &Engine, ip: Ipv4Addr) -> SlotImage {
    e.table()
        .read(e.table().slot_of_addr(u32::from(ip)).unwrap())
        .unwrap()
}

/// A renewing REQUEST (ciaddr set, through the relay).
fn renew(mac: u8, ip: Ipv4Addr) -> Vec<u8> {
    packet(3, mac, RELAY, ip.octets(), &[])
}

#[test]
fn a_closed_gate_answers_nobody_counts_not_active_and_sweeps_nothing() {
    let mut f = fixture();
    let ip = dora(&mut f.engine, 1);
    // Age the lease, so an open sweeper would expire it.
    let slot = f.engine.table().slot_of_addr(u32::from(ip)).unwrap();
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
    set_gate(&f.engine, Gate::Closed);
    let head = f.engine.ring().head();
    let (received, dropped) = (
        counter(&f.engine, "received"),
        counter(&f.engine, "dropped"),
    );
    for pkt in [
        packet(1, 2, RELAY, NONE, &[]),
        renew(1, ip),
        packet(7, 1, NONE, ip.octets(), &[]),
        packet(8, 1, NONE, [10, 0, 0, 50], &[]),
        vec![1, 2, 3],
    ] {
        assert!(send(&mut f.engine, &pkt).is_none(), "answered while closed");
    }
    assert_eq!(counter(&f.engine, "not_active"), 5);
    assert_eq!(counter(&f.engine, "received"), received + 5);
    assert_eq!(counter(&f.engine, "dropped"), dropped + 5);
    assert_eq!(counter(&f.engine, "offer"), 1, "only the DORA's offer");
    assert_eq!(f.engine.sweep(10_000), 0, "a closed sweeper visits nothing");
    assert_eq!(f.engine.ring().head(), head, "nothing written while closed");
    assert_eq!(
        f.engine.table().read(slot).unwrap().state,
        LeaseState::Leased
    );
    // Open again: served, and the sweeper runs.
    set_gate(&f.engine, Gate::Open);
    assert_eq!(dora(&mut f.engine, 2), Ipv4Addr::new(10, 0, 0, 12));
    f.engine.sweep(10_000);
    assert_eq!(
        f.engine.table().read(slot).unwrap().state,
        LeaseState::Expired
    );
}

#[test]
fn serving_alone_new_addresses_come_only_from_this_share() {
    let mut f = fixture_from(SHARE_CFG, None);
    set_gate(&f.engine, share(1, unix_now()));
    let mut got = Vec::new();
    for mac in 1..=10u8 {
        let ip = dora(&mut f.engine, mac);
        assert_eq!(slot_of(ip) % 2, 1, "{ip} is not in share 1");
        got.push(ip);
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 10, "share 1 has 10 slots, each given once");
    // Share 1 is full; share 0 (10 free slots) is not this node's to give.
    assert!(send(&mut f.engine, &packet(1, 11, RELAY, NONE, &[])).is_none());
    assert_eq!(counter(&f.engine, "pool_exhausted"), 1);
    // A requested address of the other share is not offered either.
    let (offer, _) = send(
        &mut f.engine,
        &packet(1, 1, RELAY, NONE, &[(50, &[10, 0, 0, 10])]),
    )
    .unwrap();
    assert_eq!(slot_of(offer.yiaddr()) % 2, 1, "client 1 keeps its own");
    // Nor does a REQUEST take one: it is the peer's (dropped, not NAKed).
    assert_eq!(
        verdict(
            &mut f.engine,
            &packet(3, 12, RELAY, NONE, &[(50, &[10, 0, 0, 10])])
        ),
        SILENT
    );
    assert_eq!(counter(&f.engine, "other_share"), 1);
    assert_eq!(state_of(&f.engine, [10, 0, 0, 10]), LeaseState::Free);
    // The whole pool again once the gate opens.
    set_gate(&f.engine, Gate::Open);
    assert_eq!(slot_of(dora(&mut f.engine, 11)) % 2, 0);
    assert!(f.engine.table().check().is_clean());
}

#[test]
fn an_address_freed_during_the_interruption_goes_only_back_to_its_client() {
    let sid = [198, 18, 0, 1];
    let select =
        |mac: u8, ip: Ipv4Addr| packet(3, mac, RELAY, NONE, &[(50, &ip.octets()), (54, &sid)]);
    let mut f = fixture_from(SHARE_CFG, None);
    let a = dora(&mut f.engine, 1);
    assert_eq!(a, Ipv4Addr::new(10, 0, 0, 10));
    // Serving share 0 alone since 10 s ago.
    let since = unix_now() - 10;
    set_gate(&f.engine, share(0, since));
    release(&mut f.engine, 1, a);
    // Another client is neither offered the released address when it asks for it, nor ACKed
    // when it requests it.
    let (offer, _) = send(
        &mut f.engine,
        &packet(1, 2, RELAY, NONE, &[(50, &a.octets())]),
    )
    .unwrap();
    assert_ne!(offer.yiaddr(), a);
    assert_eq!(slot_of(offer.yiaddr()) % 2, 0);
    assert_eq!(verdict(&mut f.engine, &select(3, a)), NAK);
    // A lease that ran out after `since` counts as freed then: the same holds for it.
    let b = dora(&mut f.engine, 4);
    let slot_b = f.engine.table().slot_of_addr(u32::from(b)).unwrap();
    let cur = f.engine.table().read(slot_b).unwrap();
    let ran_out = SlotImage {
        expires: since + 5,
        ..cur
    };
    f.engine
        .writer()
        .update(
            slot_b,
            &cur,
            &ran_out,
            &ChangeContext {
                reason: ChangeReason::Renew,
                time_ms: 0,
                context: b"",
            },
        )
        .unwrap();
    // Share 0 has 10 slots: a and b are kept for their clients, one is offered to client 2,
    // the 7 others go to 7 new clients, and then the share is exhausted.
    for mac in 5..=11u8 {
        let (offer, _) = send(&mut f.engine, &packet(1, mac, RELAY, NONE, &[]))
            .unwrap_or_else(|| panic!("no offer for client {mac}"));
        assert!(
            ![a, b].contains(&offer.yiaddr()),
            "client {mac} offered {}",
            offer.yiaddr()
        );
    }
    assert!(send(&mut f.engine, &packet(1, 12, RELAY, NONE, &[])).is_none());
    assert_eq!(counter(&f.engine, "pool_exhausted"), 1);
    // Each address's own client gets it back.
    assert_eq!(dora(&mut f.engine, 1), a);
    assert_eq!(dora(&mut f.engine, 4), b);
    // Freed before `since`: anybody may have it.
    let mut f = fixture_from(SHARE_CFG, None);
    let a = dora(&mut f.engine, 1);
    release(&mut f.engine, 1, a);
    set_gate(&f.engine, share(0, unix_now() + 100));
    assert_eq!(verdict(&mut f.engine, &select(3, a)), ACK);
}

#[test]
fn the_other_shares_binding_is_served_unchanged_and_nothing_else_there() {
    let mut f = fixture_from(SHARE_CFG, None);
    let a = dora(&mut f.engine, 1); // slot 0: share 0
    let b = dora(&mut f.engine, 2); // slot 1: share 1
    assert_eq!((slot_of(a), slot_of(b)), (0, 1));
    // This node serves share 0; both bindings were made before the interruption.
    set_gate(&f.engine, share(0, unix_now() + 1));
    let before = image(&f.engine, b);
    let head = f.engine.ring().head();
    // DISCOVER: offered its binding as it is, with the time it has left.
    let (offer, _) = send(&mut f.engine, &packet(1, 2, RELAY, NONE, &[])).unwrap();
    assert_eq!(msg_type(&offer), v4::MessageType::Offer);
    assert_eq!(offer.yiaddr(), b);
    let left = lease_time(&offer);
    assert!((3590..=3600).contains(&left), "{left}");
    // REQUEST (renewing): ACKed with the remaining time, nothing committed.
    let (ack, o) = send(&mut f.engine, &renew(2, b)).unwrap();
    assert_eq!(msg_type(&ack), v4::MessageType::Ack);
    assert_eq!(ack.yiaddr(), b);
    assert!(lease_time(&ack) <= left);
    assert!(o.confirms_lease);
    // SELECTING (its client answering the offer above): the same.
    let sid = [198, 18, 0, 1];
    assert_eq!(
        verdict(
            &mut f.engine,
            &packet(3, 2, RELAY, NONE, &[(50, &b.octets()), (54, &sid)])
        ),
        ACK
    );
    assert_eq!(image(&f.engine, b), before, "the slot is unchanged");
    assert_eq!(f.engine.ring().head(), head, "no change recorded");
    // Another client asking for it, and its own client's RELEASE and DECLINE: the peer's.
    let other_share = |e: &Engine| counter(e, "other_share");
    assert_eq!(
        verdict(
            &mut f.engine,
            &packet(3, 3, RELAY, NONE, &[(50, &b.octets())])
        ),
        SILENT
    );
    assert_eq!(other_share(&f.engine), 1);
    assert!(send(&mut f.engine, &packet(7, 2, NONE, b.octets(), &[])).is_none());
    assert_eq!(other_share(&f.engine), 2);
    assert!(send(
        &mut f.engine,
        &packet(4, 2, RELAY, NONE, &[(50, &b.octets())])
    )
    .is_none());
    assert_eq!(other_share(&f.engine), 3);
    assert_eq!(image(&f.engine, b), before, "the slot is unchanged");
    // Its own share's client is served as usual (a renewal commits).
    assert_eq!(verdict(&mut f.engine, &renew(1, a)), ACK);
    assert_ne!(f.engine.ring().head(), head);
    // A binding last changed at or after `since` (the peer may have changed it since):
    // not answered for the REQUEST; the DISCOVER gets a new address of this share.
    set_gate(&f.engine, share(0, before.updated));
    assert_eq!(verdict(&mut f.engine, &renew(2, b)), SILENT);
    assert_eq!(other_share(&f.engine), 4);
    let (offer, _) = send(&mut f.engine, &packet(1, 2, RELAY, NONE, &[])).unwrap();
    assert_eq!(slot_of(offer.yiaddr()) % 2, 0);
    assert_eq!(image(&f.engine, b), before, "the slot is unchanged");
}

#[test]
fn reservations_are_served_in_either_share() {
    let mut f = fixture_from(SHARE_CFG, None);
    let reserved = Ipv4Addr::new(10, 0, 0, 40);
    let slot = f.engine.table().slot_of_addr(u32::from(reserved)).unwrap();
    for index in [0, 1] {
        set_gate(&f.engine, share(index, unix_now()));
        assert_eq!(
            dora(&mut f.engine, 0x99),
            reserved,
            "share {index} of slot {slot}"
        );
        assert_eq!(state_of(&f.engine, reserved.octets()), LeaseState::Leased);
    }
    assert_eq!(counter(&f.engine, "other_share"), 0);
}

#[test]
fn serving_alone_the_sweeper_leaves_the_other_share_alone() {
    let mut f = fixture_from(SHARE_CFG, None);
    let a = dora(&mut f.engine, 1); // slot 0
    let b = dora(&mut f.engine, 2); // slot 1
    for ip in [a, b] {
        let slot = f.engine.table().slot_of_addr(u32::from(ip)).unwrap();
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
    }
    set_gate(&f.engine, share(1, unix_now()));
    f.engine.sweep(10_000);
    assert_eq!(state_of(&f.engine, a.octets()), LeaseState::Leased);
    assert_eq!(state_of(&f.engine, b.octets()), LeaseState::Expired);
}

/// [`SHARE_CFG`] in a cluster with a service address, and `top` at the top level.
fn cluster_cfg(top: &str) -> String {
    SHARE_CFG.replacen(
        "    workers: 1,",
        &format!(
            "    workers: 1,\n{top}\n    cluster: (name: \"pop1\", node: \"a\", \
             listen: \"198.18.0.1:647\", peers: [(node: \"b\", address: \"198.18.0.4:647\")], \
             key_file: \"/tmp/unused/cluster.key\", \
             service_address: (address: \"198.18.0.10/24\", interface: \"eth1\")),"
        ),
        1,
    )
}

fn server_id_of(m: &v4::Message) -> Ipv4Addr {
    match m.opts().get(v4::OptionCode::ServerIdentifier) {
        Some(v4::DhcpOption::ServerIdentifier(a)) => *a,
        other => panic!("no server id: {other:?}"),
    }
}

#[test]
fn option_54_is_the_service_address_unless_server_id_is_set() {
    let service = Ipv4Addr::new(198, 18, 0, 10);
    let mut f = fixture_from(&cluster_cfg(""), None);
    let (offer, _) = send(&mut f.engine, &packet(1, 1, RELAY, NONE, &[])).unwrap();
    assert_eq!(server_id_of(&offer), service);
    let ip = offer.yiaddr();
    // A REQUEST naming the receiving address (not the service address) is for another server.
    let local = inc().local.octets();
    assert_eq!(
        verdict(
            &mut f.engine,
            &packet(3, 1, RELAY, NONE, &[(50, &ip.octets()), (54, &local)])
        ),
        SILENT
    );
    assert_eq!(counter(&f.engine, "other_server"), 1);
    let (ack, _) = send(
        &mut f.engine,
        &packet(
            3,
            1,
            RELAY,
            NONE,
            &[(50, &ip.octets()), (54, &service.octets())],
        ),
    )
    .unwrap();
    assert_eq!(msg_type(&ack), v4::MessageType::Ack);
    assert_eq!(server_id_of(&ack), service);
    // The top-level `server_id` wins.
    let mut f = fixture_from(&cluster_cfg("    server_id: \"198.18.0.20\","), None);
    let (offer, _) = send(&mut f.engine, &packet(1, 1, RELAY, NONE, &[])).unwrap();
    assert_eq!(server_id_of(&offer), Ipv4Addr::new(198, 18, 0, 20));
}

#[test]
fn serving_alone_a_share_of_only_recently_freed_addresses_still_offers_the_oldest() {
    // Every address is leased but slots 1, 2 and 3, which their clients released just now
    // (before `since`, so anybody may have them). Serving share 0, the scan steps over slot 1
    // (share 1), passes over slot 2 (recently freed), steps over slot 3, comes back round to
    // slot 1, and then takes slot 2 (the least recently freed it passed over) rather than
    // calling the pool exhausted.
    let mut f = fixture_from(SHARE_CFG, None);
    let mut ips = Vec::new();
    for mac in 1..=20u8 {
        let ip = dora(&mut f.engine, mac);
        assert_eq!(slot_of(ip), u32::from(mac) - 1);
        ips.push(ip);
    }
    for mac in 2..=4u8 {
        release(&mut f.engine, mac, ips[usize::from(mac) - 1]);
    }
    set_gate(&f.engine, share(0, unix_now() + 100));
    let (offer, _) = send(&mut f.engine, &packet(1, 30, RELAY, NONE, &[]))
        .expect("an offer from share 0, not pool_exhausted");
    assert_eq!(offer.yiaddr(), ips[2]);
    assert_eq!(counter(&f.engine, "pool_exhausted"), 0);
}
