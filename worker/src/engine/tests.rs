//! The engine's tests: whole packets in, replies and table state out.

use super::*;
use crate::run::layout_of;
use dhcproto::{v4, Decodable};

const CFG: &str = r#"(
    state_dir: "/tmp/unused",
    control_socket: "/tmp/unused/ctl.sock",
    interfaces: [],
    workers: 1,
    offer_hold: 30,
    decline_quarantine: 600,
    subnets: [
        (
            network: "10.0.0.0/24",
            pools: ["10.0.0.10-10.0.0.12"],
            lease_time: 3600,
            relays: ["198.18.0.2"],
            options: { "routers": "10.0.0.1" },
            reservations: [(mac: "02:00:00:00:00:99", address: "10.0.0.11")],
        ),
        (
            network: "10.1.0.0/16",
            pools: ["10.1.0.10-10.1.0.200"],
            lease_time: 600,
        ),
    ],
)"#;

struct Fx {
    _dir: tempfile::TempDir,
    engine: Engine,
}

fn fixture() -> Fx {
    fixture_from(CFG, None)
}

/// An engine over `cfg` (its `/tmp/unused` replaced by a fresh directory), on the system
/// clocks or on `clock`.
fn fixture_from(cfg: &str, clock: Option<crate::clock::ManualClock>) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let text = cfg.replace("/tmp/unused", dir.path().to_str().unwrap());
    let config = prodhcp_config::parse(&text).unwrap();
    let table = Table::create(&config.table_file, &layout_of(&config)).unwrap();
    let ring = Ring::open_or_create(&config.ring_file(1), 1, 1024).unwrap();
    let serve = ServeConfig::build(config, &table);
    let engine = match clock {
        None => Engine::new(table, ring, 1, serve, 0, 1),
        Some(c) => Engine::with_clock(table, ring, 1, serve, 0, 1, Box::new(c)),
    };
    Fx { _dir: dir, engine }
}

/// [`CFG`] with `authoritative: true` on its first subnet (10.0.0.0/24).
fn authoritative_fixture() -> Fx {
    let cfg = CFG.replace(
        "relays: [\"198.18.0.2\"],",
        "relays: [\"198.18.0.2\"], authoritative: true,",
    );
    assert_ne!(cfg, CFG);
    fixture_from(&cfg, None)
}

fn packet(kind: u8, mac: u8, giaddr: [u8; 4], ciaddr: [u8; 4], opts: &[(u8, &[u8])]) -> Vec<u8> {
    let mut p = vec![0u8; 240];
    p[0] = 1;
    p[1] = 1;
    p[2] = 6;
    p[4..8].copy_from_slice(&[0, 0, 0, mac]);
    p[12..16].copy_from_slice(&ciaddr);
    p[24..28].copy_from_slice(&giaddr);
    p[28..34].copy_from_slice(&[2, 0, 0, 0, 0, mac]);
    p[236..240].copy_from_slice(&[99, 130, 83, 99]);
    p.extend_from_slice(&[53, 1, kind]);
    for (code, val) in opts {
        p.push(*code);
        p.push(val.len() as u8);
        p.extend_from_slice(val);
    }
    p.push(255);
    p
}

const RELAY: [u8; 4] = [198, 18, 0, 2];
const NONE: [u8; 4] = [0, 0, 0, 0];

fn inc() -> Incoming {
    Incoming {
        src: SocketAddrV4::new(Ipv4Addr::from(RELAY), 67),
        ifindex: 1,
        local: Ipv4Addr::new(198, 18, 0, 1),
        broadcast: false,
    }
}

fn send(e: &mut Engine, pkt: &[u8]) -> Option<(v4::Message, Outgoing)> {
    let mut out = [0u8; MAX_REPLY];
    let o = e.handle(pkt, &inc(), &mut out)?;
    Some((
        v4::Message::decode(&mut dhcproto::Decoder::new(&out[..o.len])).unwrap(),
        o,
    ))
}

fn msg_type(m: &v4::Message) -> v4::MessageType {
    m.opts().msg_type().unwrap()
}

fn dora(e: &mut Engine, mac: u8) -> Ipv4Addr {
    let (offer, o) = send(e, &packet(1, mac, RELAY, NONE, &[])).expect("offer");
    assert_eq!(msg_type(&offer), v4::MessageType::Offer);
    assert_eq!(
        o.dst,
        SocketAddrV4::new(Ipv4Addr::from(RELAY), 67),
        "to the relay"
    );
    let ip = offer.yiaddr();
    let sid = [198, 18, 0, 1];
    let (ack, _) = send(
        e,
        &packet(3, mac, RELAY, NONE, &[(50, &ip.octets()), (54, &sid)]),
    )
    .expect("ack");
    assert_eq!(msg_type(&ack), v4::MessageType::Ack);
    assert_eq!(ack.yiaddr(), ip);
    ip
}

#[test]
fn dora_commits_a_lease_and_the_client_gets_it_back() {
    let mut f = fixture();
    let ip = dora(&mut f.engine, 1);
    let slot = f.engine.table().slot_of_addr(u32::from(ip)).unwrap();
    let img = f.engine.table().read(slot).unwrap();
    assert_eq!(img.state, LeaseState::Leased);
    assert_eq!(img.hwaddr(), &[2, 0, 0, 0, 0, 1]);
    assert_eq!(dora(&mut f.engine, 1), ip, "same client, same address");
    assert!(f.engine.table().check().is_clean());
}

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

/// A second engine on the fixture's files, as after a worker restart (its allocation
/// cursor starts over at the beginning of its share).
fn restarted(f: &Fx) -> Engine {
    let text = CFG.replace("/tmp/unused", f._dir.path().to_str().unwrap());
    let config = prodhcp_config::parse(&text).unwrap();
    let table = Table::open(&config.table_file).unwrap();
    let ring = Ring::open_or_create(&config.ring_file(1), 1, 1024).unwrap();
    let serve = ServeConfig::build(config, &table);
    Engine::new(table, ring, 1, serve, 0, 1)
}

fn release(e: &mut Engine, mac: u8, ip: Ipv4Addr) {
    assert!(send(e, &packet(7, mac, NONE, ip.octets(), &[])).is_none());
    let slot = e.table().slot_of_addr(u32::from(ip)).unwrap();
    assert_eq!(e.table().read(slot).unwrap().state, LeaseState::Released);
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
    t.update(50, &ring, slot_b, &cur, &older, &ctx).unwrap();
    // The cursor wraps to .10 first; both free addresses are recent, so the scan comes
    // back round and takes the least recently freed one. The pool is not "exhausted".
    assert_eq!(dora(&mut f.engine, 3), b);
    assert!(send(&mut f.engine, &packet(1, 4, RELAY, NONE, &[])).is_some());
}

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
    let (nak, _) = send(
        &mut f.engine,
        &packet(3, 1, RELAY, NONE, &[(50, &[10, 1, 0, 50])]),
    )
    .unwrap();
    assert_eq!(msg_type(&nak), v4::MessageType::Nak);
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

#[test]
fn sweeper_expires_leases_and_offers() {
    let mut f = fixture();
    let ip = dora(&mut f.engine, 1);
    let slot = f.engine.table().slot_of_addr(u32::from(ip)).unwrap();
    // Age the lease by rewriting its expiry into the past.
    let cur = f.engine.table().read(slot).unwrap();
    let old = SlotImage { expires: 1, ..cur };
    f.engine
        .table
        .update(
            1,
            &f.engine.ring,
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

#[test]
fn arbitrary_bytes_never_panic_and_are_counted() {
    let mut f = fixture();
    let mut seed = 0x1234_5678_u64;
    let base = packet(1, 1, RELAY, NONE, &[(55, &[1, 3, 6])]);
    for i in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut p = base.clone();
        let n = (seed % p.len() as u64) as usize;
        p.truncate(if i % 3 == 0 { n } else { p.len() });
        let k = (seed >> 20) as usize % p.len().max(1);
        if let Some(b) = p.get_mut(k) {
            *b = (seed >> 40) as u8;
        }
        let mut out = [0u8; MAX_REPLY];
        let _ = f.engine.handle(&p, &inc(), &mut out);
    }
    let snap = f.engine.counters().snapshot();
    let get = |n: &str| snap.iter().find(|(k, _)| *k == n).map(|x| x.1).unwrap_or(0);
    assert_eq!(get("received"), 20_000);
    assert!(get("dropped") > 0);
    assert!(f.engine.table().check().is_clean());
}

fn counter(e: &Engine, name: &str) -> u64 {
    let snap = e.counters().snapshot();
    snap.iter().find(|(k, _)| *k == name).map(|x| x.1).unwrap()
}

fn state_of(e: &Engine, ip: [u8; 4]) -> LeaseState {
    let slot = e.table().slot_of_addr(u32::from_be_bytes(ip)).unwrap();
    e.table().read(slot).unwrap().state
}

/// Sends `pkt`; `Some(true)` for a NAK with the broadcast bit, `Some(false)` for an ACK,
/// `None` for silence. Panics on any other reply or a NAK without the bit (through a relay).
fn verdict(e: &mut Engine, pkt: &[u8]) -> Option<bool> {
    let (m, _) = send(e, pkt)?;
    match msg_type(&m) {
        v4::MessageType::Nak => {
            if m.giaddr() != Ipv4Addr::UNSPECIFIED {
                assert!(
                    m.flags().broadcast(),
                    "a NAK through a relay sets the broadcast bit"
                );
            }
            Some(true)
        }
        v4::MessageType::Ack => Some(false),
        t => panic!("unexpected {t:?}"),
    }
}

const NAK: Option<bool> = Some(true);
const ACK: Option<bool> = Some(false);
const SILENT: Option<bool> = None;
const OTHER_RELAY: [u8; 4] = [192, 0, 2, 1];

/// The rows of the module docs' table where the subnet's `authoritative` matters, for
/// both settings: (name, packet, default verdict, authoritative verdict).
/// (name, packet, default verdict, authoritative verdict).
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
            .table
            .update(1, &f.engine.ring, slot12, &cur12, &old12, &ctx)
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
    f.engine
        .table
        .update(1, &f.engine.ring, slot, &cur, &held, &ctx)
        .unwrap();
    // It INIT-REBOOTs asking for yet another address: NAK, and its lease is given back.
    let reboot = packet(3, 0x99, RELAY, NONE, &[(50, &[10, 0, 0, 12])]);
    assert_eq!(verdict(&mut f.engine, &reboot), NAK);
    assert_eq!(state_of(&f.engine, [10, 0, 0, 10]), LeaseState::Released);
    assert_eq!(state_of(&f.engine, [10, 0, 0, 12]), LeaseState::Free);
    // Likewise when it renews the dynamic lease itself.
    let cur = f.engine.table().read(slot).unwrap();
    f.engine
        .table
        .update(1, &f.engine.ring, slot, &cur, &held, &ctx)
        .unwrap();
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
    let span = f.engine.cfg.subnets[0].span.clone();
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
    f.engine.offer_span = 0..101;
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
    table.update(2, &ring, slot, &cur, &new, &ctx).unwrap();
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

/// Option 82 instances of a reply, concatenated (RFC 3396).
fn echoed_82(reply: &[u8]) -> Vec<u8> {
    let mut at = 240;
    let mut v = Vec::new();
    while at < reply.len() && reply[at] != 255 {
        if reply[at] == 0 {
            at += 1;
            continue;
        }
        let len = usize::from(reply[at + 1]);
        if reply[at] == 82 {
            v.extend_from_slice(&reply[at + 2..at + 2 + len]);
        }
        at += 2 + len;
    }
    v
}

#[test]
fn a_long_relay_agent_option_is_echoed_whole() {
    let mut f = fixture();
    let mut rai = vec![1, 250];
    rai.extend(std::iter::repeat_n(b'c', 250));
    rai.extend([2, 100]);
    rai.extend(std::iter::repeat_n(b'r', 100));
    let mut p = packet(1, 1, RELAY, NONE, &[(82, &rai[..255]), (82, &rai[255..])]);
    p.pop();
    p.push(255);
    let mut out = [0u8; MAX_REPLY];
    let o = f.engine.handle(&p, &inc(), &mut out).expect("offer");
    assert_eq!(echoed_82(&out[..o.len]), rai);
    // What reaches the client (the relay strips the 82) stays within 576 bytes.
    assert!(o.len - (rai.len() + 4) <= 576 - 28);
}

#[test]
fn the_ring_context_carries_whole_fields_or_marked_prefixes() {
    let mut f = fixture();
    let long = |b: u8, n: usize| std::iter::repeat_n(b, n).collect::<Vec<u8>>();
    let mut rai = vec![1, 100];
    rai.extend(long(b'c', 100));
    rai.extend([2, 20]);
    rai.extend(long(b'r', 20));
    let host = long(b'h', 100);
    let p = packet(1, 1, RELAY, NONE, &[(82, &rai), (12, &host)]);
    assert!(send(&mut f.engine, &p).is_some());
    let rec = f.engine.ring.read(f.engine.ring.head()).unwrap();
    let fields = ring_context::decode(&rec.context).expect("well framed");
    assert_eq!(fields.len(), 3);
    assert_eq!(
        (fields[1].tag, fields[1].value, fields[1].truncated),
        (2, &long(b'r', 20)[..], false)
    );
    for (i, (tag, b)) in [(0, (1, b'c')), (2, (3, b'h'))] {
        assert_eq!(fields[i].tag, tag);
        assert!(fields[i].truncated);
        assert!(fields[i].value.iter().all(|&x| x == b));
    }
}

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
