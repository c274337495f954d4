//! The engine's tests: whole packets in, replies and table state out. This file holds the
//! fixtures and packet helpers the others share, and the tests of the packet path as a whole
//! (a DORA, malformed input, relay agent information).

mod allocate;
mod clock;
mod gate;
mod messages;
mod sweep;

use super::*;
use crate::run::table_spec;
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
    let table = Table::create(&config.table_file, &table_spec(&config)).unwrap();
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

/// Handles `pkt` as the worker does: the gate read first (once per receive batch there).
fn send(e: &mut Engine, pkt: &[u8]) -> Option<(v4::Message, Outgoing)> {
    e.refresh_gate();
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
    assert!(!o.confirms_lease, "an OFFER is not held for replication");
    assert_eq!(
        o.dst,
        SocketAddrV4::new(Ipv4Addr::from(RELAY), 67),
        "to the relay"
    );
    let ip = offer.yiaddr();
    let sid = [198, 18, 0, 1];
    let (ack, o) = send(
        e,
        &packet(3, mac, RELAY, NONE, &[(50, &ip.octets()), (54, &sid)]),
    )
    .expect("ack");
    assert_eq!(msg_type(&ack), v4::MessageType::Ack);
    assert!(
        o.confirms_lease,
        "an ACK to a REQUEST waits for replication"
    );
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
    assert_eq!(fields.len(), 4);
    assert_eq!(
        (fields[1].tag, fields[1].value, fields[1].truncated),
        (2, &long(b'r', 20)[..], false)
    );
    for (i, (tag, b)) in [(0, (1, b'c')), (2, (3, b'h'))] {
        assert_eq!(fields[i].tag, tag);
        assert!(fields[i].truncated);
        assert!(fields[i].value.iter().all(|&x| x == b));
    }
    assert_eq!(
        (fields[3].tag, fields[3].value, fields[3].truncated),
        (ring_context::TAG_GIADDR, &RELAY[..], false),
        "the giaddr is never cut"
    );
}

#[test]
fn a_relayed_dora_commit_record_carries_giaddr_and_subscriber_id() {
    let mut f = fixture();
    // 82.1 circuit-id, 82.6 subscriber-id (RFC 3993)
    let rai = [1, 2, b'c', b'1', 6, 6, b's', b'u', b'b', b'-', b'4', b'2'];
    let (offer, _) = send(&mut f.engine, &packet(1, 7, RELAY, NONE, &[(82, &rai)])).expect("offer");
    let ip = offer.yiaddr();
    let sid = [198, 18, 0, 1];
    let (ack, _) = send(
        &mut f.engine,
        &packet(
            3,
            7,
            RELAY,
            NONE,
            &[(50, &ip.octets()), (54, &sid), (82, &rai)],
        ),
    )
    .expect("ack");
    assert_eq!(msg_type(&ack), v4::MessageType::Ack);
    let rec = f.engine.ring.read(f.engine.ring.head()).unwrap();
    assert_eq!(
        rec.reason,
        ChangeReason::Commit,
        "the ACK's record is the last"
    );
    let fields: Vec<(u8, Vec<u8>, bool)> = ring_context::decode(&rec.context)
        .expect("well framed")
        .into_iter()
        .map(|f| (f.tag, f.value.to_vec(), f.truncated))
        .collect();
    assert_eq!(
        fields,
        vec![
            (ring_context::TAG_CIRCUIT_ID, b"c1".to_vec(), false),
            (ring_context::TAG_GIADDR, RELAY.to_vec(), false),
            (ring_context::TAG_SUBSCRIBER_ID, b"sub-42".to_vec(), false),
            (
                ring_context::TAG_REQUEST_STATE,
                vec![RequestState::Selecting as u8],
                false
            ),
        ]
    );
}
