//! Protocol scenarios driven by the scripted client: renew, rebind, release, decline,
//! INFORM, NAK, reservations at exhaustion, option 82 echo, subnet selection precedence and
//! the parameter request list.
//!
//! The scripted client acts as a relay agent at 198.18.1.1 (the router's address on
//! segment 1, so giaddr selects 198.18.1.0/24), or as a bound client in a namespace on
//! segment 1 that holds its leased address and unicasts through the router.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

use prodhcp_systests::client::{ExchangeError, Extras, Identity, TestClient};
use prodhcp_systests::config::{ServerConfig, SubnetConfig};
use prodhcp_systests::daemon::{total, Daemon};
use prodhcp_systests::packet::{opt, test_mac, MessageType, RelayAgentInfo, Reply};
use prodhcp_systests::preflight;
use prodhcp_systests::topo::{Topology, NET1, POOL1, RELAY1_IP, SERVER_IP};

/// Builds the lab and the daemon (config from `configure`), then runs `body` with a relay
/// agent client at 198.18.1.1.
fn scenario(
    tag: &str,
    configure: impl FnOnce(&Topology) -> ServerConfig,
    body: impl FnOnce(&Topology, &Daemon, &TestClient),
) {
    if !preflight(tag, &[]) {
        return;
    }
    let t = Topology::new(tag);
    let cfg = configure(&t);
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    let agent = TestClient::relay(&t.rly, RELAY1_IP, SERVER_IP).expect("relay agent socket");
    body(&t, &d, &agent);
}

/// A config whose segment-1 subnet is replaced by `sub`.
fn with_segment1(t: &Topology, sub: SubnetConfig) -> ServerConfig {
    let mut cfg = t.standard_config();
    cfg.subnets.retain(|s| s.network != NET1);
    cfg.subnets.push(sub);
    cfg
}

fn no_extras() -> Extras {
    Extras::default()
}

fn expiry(d: &Daemon, ip: Ipv4Addr) -> u64 {
    let l = d.lease(ip).unwrap_or_else(|| panic!("no lease for {ip}"));
    l["expires"]
        .as_u64()
        .unwrap_or_else(|| panic!("lease without expires: {l}"))
}

fn state(d: &Daemon, ip: Ipv4Addr) -> String {
    d.lease(ip)
        .map(|l| l["state"].as_str().unwrap_or("?").to_string())
        .unwrap_or_else(|| "none".to_string())
}

/// Waits (≤ 3 s, polling) until the lease of `ip` is in state `want`; panics with the last
/// state seen otherwise.
#[track_caller]
fn await_state(d: &Daemon, ip: Ipv4Addr, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = state(d, ip);
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{ip} still {now:?} 3 s later, expected {want:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The server stays silent (no reply with our xid before the exchange timeout); any reply or
/// socket error fails.
#[track_caller]
fn assert_silent(r: Result<Reply, ExchangeError>, what: &str) {
    match r {
        Err(ExchangeError::Timeout { .. }) => {}
        Ok(reply) => panic!(
            "{what}: expected no reply, got {:?} for {}",
            reply.msg_type, reply.yiaddr
        ),
        Err(e) => panic!("{what}: {e}"),
    }
}

/// The reply is of type `want`; a timeout or socket error fails.
#[track_caller]
fn expect_type(r: Result<Reply, ExchangeError>, want: MessageType, what: &str) -> Reply {
    match r {
        Ok(reply) if reply.msg_type == Some(want) => reply,
        Ok(reply) => panic!(
            "{what}: expected {want:?}, got {:?} for {}",
            reply.msg_type, reply.yiaddr
        ),
        Err(e) => panic!("{what}: expected {want:?}: {e}"),
    }
}

#[test]
fn renew_unicast_extends_the_lease() {
    scenario(
        "renew",
        |t| t.standard_config(),
        |t, d, agent| {
            let id = Identity::mac(test_mac(0x10, 1));
            let b = agent.dora(&id, &no_extras()).expect("DORA");
            assert_eq!(b.address.octets()[..3], [198, 18, 1]);
            let e0 = expiry(d, b.address);
            thread::sleep(Duration::from_millis(2100));

            let cl = t.add_client("br1", Some(&format!("{}/24", b.address)), Some(RELAY1_IP));
            let me = TestClient::unicast(&cl.ns, b.address, SERVER_IP).expect("client socket");
            let ack = me.renew(&id, b.address, &no_extras()).expect("renew reply");
            assert_eq!(
                ack.msg_type,
                Some(MessageType::Ack),
                "renew answered {:?}",
                ack.msg_type
            );
            assert_eq!(ack.yiaddr, b.address);
            assert!(
                ack.option_u32(opt::LEASE_TIME).is_some(),
                "ACK without lease time"
            );
            let e1 = expiry(d, b.address);
            assert!(e1 > e0, "expiry not extended by renew: {e0} -> {e1}");
            assert_eq!(state(d, b.address), "leased");
        },
    );
}

#[test]
fn rebind_through_a_relay_extends_the_lease() {
    scenario(
        "rebind",
        |t| t.standard_config(),
        |_t, d, agent| {
            let id = Identity::mac(test_mac(0x11, 1));
            let b = agent.dora(&id, &no_extras()).expect("DORA");
            let e0 = expiry(d, b.address);
            thread::sleep(Duration::from_millis(2100));
            let ack = agent
                .rebind(&id, b.address, &no_extras())
                .expect("rebind reply");
            assert_eq!(ack.msg_type, Some(MessageType::Ack));
            assert_eq!(ack.yiaddr, b.address);
            assert!(expiry(d, b.address) > e0, "expiry not extended by rebind");
        },
    );
}

#[test]
fn release_frees_the_address_for_reuse() {
    let one = SubnetConfig::new(NET1, "198.18.1.100-198.18.1.100");
    scenario(
        "release",
        |t| with_segment1(t, one),
        |_t, d, agent| {
            let a = Identity::mac(test_mac(0x12, 1));
            let b = Identity::mac(test_mac(0x12, 2));
            let lease = agent.dora(&a, &no_extras()).expect("DORA for A");
            let ip = lease.address;
            assert_eq!(ip, Ipv4Addr::new(198, 18, 1, 100));
            // The only address is taken: B gets nothing (no OFFER, and no other reply).
            assert_silent(
                agent.discover(&b, &no_extras()),
                "DISCOVER of B, pool exhausted",
            );

            agent
                .release(&a, ip, lease.server_id)
                .expect("send RELEASE");
            await_state(d, ip, "released");

            // The same client gets the same address back.
            let again = agent
                .dora(&a, &no_extras())
                .expect("DORA for A after release");
            assert_eq!(again.address, ip, "A did not get its released address back");
            agent
                .release(&a, ip, again.server_id)
                .expect("send RELEASE");
            await_state(d, ip, "released");

            // And the address is reusable by another client.
            let reuse = agent
                .dora(&b, &no_extras())
                .expect("DORA for B after release");
            assert_eq!(reuse.address, ip);
            let l = d.lease(ip).expect("lease");
            assert_eq!(l["hwaddr"], b.mac_string().as_str());
            assert_eq!(l["state"], "leased");
        },
    );
}

#[test]
fn declined_address_is_quarantined() {
    let two = SubnetConfig::new(NET1, "198.18.1.100-198.18.1.101");
    scenario(
        "decline",
        |t| {
            let mut c = with_segment1(t, two);
            c.decline_quarantine = 600;
            c
        },
        |_t, d, agent| {
            let a = Identity::mac(test_mac(0x13, 1));
            let b = agent.dora(&a, &no_extras()).expect("DORA");
            let bad = b.address;
            agent.decline(&a, bad, b.server_id).expect("send DECLINE");
            await_state(d, bad, "declined");
            let other = if bad == Ipv4Addr::new(198, 18, 1, 100) {
                Ipv4Addr::new(198, 18, 1, 101)
            } else {
                Ipv4Addr::new(198, 18, 1, 100)
            };
            // Client 2 gets the other address; after that the pool is exhausted (the declined
            // address is quarantined): clients 3 and 4 get no reply at all.
            let id = Identity::mac(test_mac(0x13, 2));
            let offer = expect_type(
                agent.discover(&id, &no_extras()),
                MessageType::Offer,
                "DISCOVER of client 2",
            );
            assert_eq!(offer.yiaddr, other, "client 2 offered {}", offer.yiaddr);
            let sid = offer.server_id().expect("OFFER without server id");
            let ack = expect_type(
                agent.request_selecting(&id, offer.yiaddr, sid, &no_extras()),
                MessageType::Ack,
                "REQUEST of client 2",
            );
            assert_eq!(ack.yiaddr, other);
            for n in 3..5 {
                let id = Identity::mac(test_mac(0x13, n));
                assert_silent(
                    agent.discover(&id, &no_extras()),
                    &format!("DISCOVER of client {n} with {bad} declined and {other} leased"),
                );
            }
            assert_eq!(state(d, bad), "declined");
            assert_eq!(state(d, other), "leased");
        },
    );
}

#[test]
fn inform_is_acked_without_address_or_lease() {
    scenario(
        "inform",
        |t| t.standard_config(),
        |t, d, _agent| {
            let static_ip = Ipv4Addr::new(198, 18, 1, 50);
            let cl = t.add_client("br1", Some("198.18.1.50/24"), Some(RELAY1_IP));
            let me = TestClient::unicast(&cl.ns, static_ip, SERVER_IP).expect("client socket");
            let id = Identity::mac(cl.mac);
            let ex = Extras {
                params: Some(vec![opt::SUBNET_MASK, opt::ROUTERS]),
                ..Default::default()
            };
            let ack = me.inform(&id, static_ip, &ex).expect("INFORM reply");
            assert_eq!(ack.msg_type, Some(MessageType::Ack));
            assert_eq!(
                ack.yiaddr,
                Ipv4Addr::UNSPECIFIED,
                "INFORM ACK must not carry yiaddr"
            );
            assert_eq!(ack.option_addrs(opt::ROUTERS), Some(vec![RELAY1_IP]));
            assert!(
                ack.option(opt::LEASE_TIME).is_none(),
                "INFORM ACK must not carry a lease time"
            );
            assert!(
                d.lease(static_ip).is_none_or(|l| l["state"] == "free"),
                "INFORM created a lease"
            );
            assert!(
                d.leases_by_mac(&id.mac_string()).is_empty(),
                "INFORM created a lease"
            );
        },
    );
}

#[test]
fn init_reboot_for_a_wrong_subnet_is_naked() {
    // Only an authoritative subnet NAKs a client it has no record of (RFC 2131 §4.3.2; see
    // nak_rules.rs for the default, silence).
    scenario(
        "nak",
        |t| {
            let mut cfg = t.standard_config();
            for s in &mut cfg.subnets {
                s.authoritative = s.network == NET1;
            }
            cfg
        },
        |_t, d, agent| {
            let id = Identity::mac(test_mac(0x14, 1));
            let wrong = Ipv4Addr::new(198, 18, 2, 150);
            let r = agent
                .init_reboot(&id, wrong, &no_extras())
                .expect("reply to init-reboot");
            assert_eq!(
                r.msg_type,
                Some(MessageType::Nak),
                "expected NAK, got {:?}",
                r.msg_type
            );
            assert_eq!(r.yiaddr, Ipv4Addr::UNSPECIFIED);
            assert!(d.lease(wrong).is_none_or(|l| l["state"] == "free"));
            // The client can still get a lease on its own subnet.
            let b = agent.dora(&id, &no_extras()).expect("DORA after NAK");
            assert_eq!(b.address.octets()[..3], [198, 18, 1]);
        },
    );
}

#[test]
fn reservation_is_honoured_at_pool_exhaustion() {
    let reserved_mac = test_mac(0x15, 0xff);
    let reserved = Ipv4Addr::new(198, 18, 1, 102);
    let small = SubnetConfig::new(NET1, "198.18.1.100-198.18.1.103").reserve(
        &prodhcp_systests::packet::mac_string(&reserved_mac),
        "198.18.1.102",
    );
    scenario(
        "reserve",
        |t| with_segment1(t, small),
        |_t, d, agent| {
            let mut got = HashSet::new();
            for n in 1..=5 {
                let id = Identity::mac(test_mac(0x15, n));
                // Each asks for the reserved address in its DISCOVER (option 50).
                let ask = Extras {
                    extra: vec![(opt::REQUESTED_IP, reserved.octets().to_vec())],
                    ..Default::default()
                };
                let what = format!("DISCOVER of client {n} asking for the reserved address");
                if n <= 3 {
                    // Three unreserved addresses: clients 1–3 each get one.
                    let offer = expect_type(agent.discover(&id, &ask), MessageType::Offer, &what);
                    assert_ne!(
                        offer.yiaddr, reserved,
                        "client {n} was offered the reserved address"
                    );
                    let sid = offer.server_id().expect("OFFER without server id");
                    let ack = expect_type(
                        agent.request_selecting(&id, offer.yiaddr, sid, &no_extras()),
                        MessageType::Ack,
                        &format!("REQUEST of client {n}"),
                    );
                    assert_eq!(ack.yiaddr, offer.yiaddr);
                    assert!(got.insert(ack.yiaddr), "{} ACKed twice", ack.yiaddr);
                    // A client with a binding asking for the reserved address: NAK.
                    expect_type(
                        agent.init_reboot(&id, reserved, &no_extras()),
                        MessageType::Nak,
                        &format!("INIT-REBOOT of bound client {n} for the reserved address"),
                    );
                } else {
                    // Only the reserved address is left: no OFFER, no reply.
                    assert_silent(agent.discover(&id, &ask), &what);
                    // Without a binding, the server may NAK (the address is not the client's)
                    // or stay silent (RFC 2131 §4.3.2, no record of the client); never ACK.
                    match agent.init_reboot(&id, reserved, &no_extras()) {
                        Err(ExchangeError::Timeout { .. }) => {}
                        r => {
                            expect_type(
                                r,
                                MessageType::Nak,
                                &format!("INIT-REBOOT of client {n} for the reserved address"),
                            );
                        }
                    }
                }
            }
            assert_eq!(
                got.len(),
                3,
                "the three unreserved addresses should all be leased: {got:?}"
            );
            let id = Identity::mac(reserved_mac);
            let b = agent
                .dora(&id, &no_extras())
                .expect("DORA for the reserved client");
            assert_eq!(b.address, reserved);
            let l = d.lease(reserved).expect("lease of the reserved address");
            assert_eq!(l["hwaddr"], id.mac_string().as_str());
            assert_eq!(l["state"], "leased");
        },
    );
}

#[test]
fn option_82_is_echoed_byte_for_byte() {
    scenario(
        "opt82",
        |t| t.standard_config(),
        |_t, _d, agent| {
            let info = RelayAgentInfo {
                circuit_id: Some(b"olt-3/slot-1/port-17:vlan-204".to_vec()),
                remote_id: Some(vec![0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0xff]),
                link_selection: None,
            };
            let ex = Extras {
                relay_info: Some(info.clone()),
                ..Default::default()
            };
            let id = Identity::mac(test_mac(0x16, 1));
            let b = agent.dora(&id, &ex).expect("DORA with option 82");
            let sent = info.encode();
            assert_eq!(
                b.offer.option(opt::RELAY_AGENT_INFO),
                Some(&sent[..]),
                "OFFER 82"
            );
            assert_eq!(
                b.ack.option(opt::RELAY_AGENT_INFO),
                Some(&sent[..]),
                "ACK 82"
            );
            // Without 82 in the request, none in the reply.
            let plain = agent
                .discover(&Identity::mac(test_mac(0x16, 2)), &no_extras())
                .expect("OFFER");
            assert!(plain.option(opt::RELAY_AGENT_INFO).is_none());
        },
    );
}

#[test]
fn subnet_selection_prefers_link_selection_then_118_then_giaddr() {
    let net3 = SubnetConfig::new("198.18.3.0/24", "198.18.3.100-198.18.3.199");
    scenario(
        "subsel",
        |t| t.standard_config().subnet(net3),
        |_t, _d, agent| {
            let cases: [(&str, Option<Ipv4Addr>, Option<Ipv4Addr>, u8); 4] = [
                ("giaddr only", None, None, 1),
                ("118", Some(Ipv4Addr::new(198, 18, 2, 0)), None, 2),
                ("82.5", None, Some(Ipv4Addr::new(198, 18, 3, 0)), 3),
                (
                    "82.5 over 118",
                    Some(Ipv4Addr::new(198, 18, 2, 0)),
                    Some(Ipv4Addr::new(198, 18, 3, 0)),
                    3,
                ),
            ];
            for (n, (what, sel118, link, want)) in cases.into_iter().enumerate() {
                let ex = Extras {
                    subnet_selection: sel118,
                    relay_info: link.map(|l| RelayAgentInfo {
                        link_selection: Some(l),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let id = Identity::mac(test_mac(0x17, n as u32));
                let b = agent
                    .dora(&id, &ex)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(
                    b.address.octets()[..3],
                    [198, 18, want],
                    "{what}: got {}",
                    b.address
                );
            }
        },
    );
}

#[test]
fn parameter_request_list_is_honoured() {
    let sub = SubnetConfig::new(NET1, POOL1)
        .option("routers", "198.18.1.1")
        .option("domain-name-servers", "198.18.0.53, 198.18.0.54")
        .option("domain-name", "lab.test");
    scenario(
        "prl",
        |t| with_segment1(t, sub),
        |_t, _d, agent| {
            let ex = Extras {
                params: Some(vec![
                    opt::SUBNET_MASK,
                    opt::ROUTERS,
                    opt::DNS_SERVERS,
                    opt::DOMAIN_NAME,
                ]),
                max_message_size: Some(1500),
                ..Default::default()
            };
            let b = agent
                .dora(&Identity::mac(test_mac(0x18, 1)), &ex)
                .expect("DORA");
            for r in [&b.offer, &b.ack] {
                assert_eq!(
                    r.option_addr(opt::SUBNET_MASK),
                    Some(Ipv4Addr::new(255, 255, 255, 0))
                );
                assert_eq!(r.option_addrs(opt::ROUTERS), Some(vec![RELAY1_IP]));
                assert_eq!(
                    r.option_addrs(opt::DNS_SERVERS),
                    Some(vec![
                        Ipv4Addr::new(198, 18, 0, 53),
                        Ipv4Addr::new(198, 18, 0, 54)
                    ])
                );
                assert_eq!(r.option(opt::DOMAIN_NAME), Some(&b"lab.test"[..]));
            }
            // A short list: what is asked for is there, in the ACK of a client that asked only
            // for the routers.
            let ex = Extras {
                params: Some(vec![opt::ROUTERS]),
                ..Default::default()
            };
            let b = agent
                .dora(&Identity::mac(test_mac(0x18, 2)), &ex)
                .expect("DORA");
            assert_eq!(b.ack.option_addrs(opt::ROUTERS), Some(vec![RELAY1_IP]));
            assert!(b.ack.option(opt::LEASE_TIME).is_some());
            assert_eq!(b.ack.server_id(), Some(SERVER_IP));
        },
    );
}

/// Expired leases are reclaimed by the sweeper and their addresses handed out again; the
/// `stats` sweeper counters say so.
#[test]
fn expired_leases_are_reclaimed_and_reused() {
    let tiny = SubnetConfig::new(NET1, "198.18.1.100-198.18.1.101").times(2, 1, 1);
    scenario(
        "expiry",
        |t| with_segment1(t, tiny),
        |_t, d, agent| {
            let a = agent
                .dora(&Identity::mac(test_mac(0x71, 1)), &no_extras())
                .expect("first lease");
            let b = agent
                .dora(&Identity::mac(test_mac(0x71, 2)), &no_extras())
                .expect("second lease");
            assert_ne!(a.address, b.address);
            // The pool is full now: no reply.
            let third = Identity::mac(test_mac(0x71, 3));
            assert_silent(
                agent.discover(&third, &no_extras()),
                "DISCOVER with the pool full",
            );
            // After the 2 s leases ran out, the sweeper makes the addresses free again. Until
            // then the only acceptable outcome of a DORA is silence.
            let deadline = Instant::now() + Duration::from_secs(8);
            let got = loop {
                thread::sleep(Duration::from_millis(250));
                match agent.dora(&third, &no_extras()) {
                    Ok(bound) => break bound,
                    Err(ExchangeError::Timeout { .. }) => {}
                    Err(e) => panic!("DORA while waiting for expiry: {e}"),
                }
                assert!(
                    Instant::now() < deadline,
                    "no address reclaimed 8 s after 2 s leases: {}",
                    d.stats()
                );
            };
            assert!([a.address, b.address].contains(&got.address));
            let other = if got.address == a.address {
                b.address
            } else {
                a.address
            };
            // The two leases were made apart: when a second boundary fell between them, the
            // other one expires up to 1 s later.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let expired = total(&d.stats(), &["sweeper", "expired"]);
                if expired >= 2 && state(d, other) == "expired" {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "sweeper counted {expired} expiries, {other} is {}: {}",
                    state(d, other),
                    d.stats()
                );
                thread::sleep(Duration::from_millis(100));
            }
        },
    );
}
