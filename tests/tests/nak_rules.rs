//! RFC 2131 §4.3.2 NAK and silence rules, through a relay (the scripted client as the relay
//! agent at 198.18.1.1), against the real daemon: silence for clients the server has no record
//! of (unless the subnet is `authoritative`), NAK for a client asking for an address other than
//! its binding, the broadcast bit on every NAK sent through a relay, and silence for networks
//! the server does not serve (another server's relay, an unknown 82.5 link).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use prodhcp_systests::client::{ExchangeError, Extras, Identity, TestClient};
use prodhcp_systests::config::ServerConfig;
use prodhcp_systests::daemon::Daemon;
use prodhcp_systests::packet::{test_mac, MessageType, RelayAgentInfo, Reply};
use prodhcp_systests::preflight;
use prodhcp_systests::topo::{Topology, NET1, RELAY1_IP, SERVER_IP};

/// The broadcast flag (RFC 2131 §2, figure 2).
const BROADCAST: u16 = 0x8000;
/// A relay address no subnet of the configuration knows.
const FOREIGN_RELAY: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 1);

fn scenario(tag: &str, authoritative: bool, body: impl FnOnce(&Topology, &Daemon, &TestClient)) {
    if !preflight(tag, &[]) {
        return;
    }
    let t = Topology::new(tag);
    let mut cfg: ServerConfig = t.standard_config();
    for s in &mut cfg.subnets {
        if s.network == NET1 {
            s.authoritative = authoritative;
        }
    }
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    let mut agent = TestClient::relay(&t.rly, RELAY1_IP, SERVER_IP).expect("relay agent socket");
    agent.set_timeout(Duration::from_millis(1500));
    body(&t, &d, &agent);
}

fn no_extras() -> Extras {
    Extras::default()
}

/// The reply must be a NAK through the relay with the broadcast bit set.
fn assert_relayed_nak(r: Result<Reply, ExchangeError>, what: &str) {
    let r = r.unwrap_or_else(|e| panic!("{what}: expected a NAK, got {e}"));
    assert_eq!(r.msg_type, Some(MessageType::Nak), "{what}");
    assert_eq!(r.giaddr, RELAY1_IP, "{what}: giaddr echoed");
    assert_eq!(r.yiaddr, Ipv4Addr::UNSPECIFIED, "{what}");
    assert_eq!(r.flags & BROADCAST, BROADCAST, "{what}: broadcast bit");
}

/// The server must not answer.
fn assert_silent(r: Result<Reply, ExchangeError>, what: &str) {
    match r {
        Err(ExchangeError::Timeout { .. }) => {}
        Ok(reply) => panic!("{what}: expected silence, got {:?}", reply.msg_type),
        Err(e) => panic!("{what}: {e}"),
    }
}

/// Waits (bounded) until the daemon's drop counter `name` reaches `want`, and checks it does not
/// exceed it.
fn expect_drops(d: &Daemon, name: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = d.stats()["total"]["drops"][name].as_u64().unwrap_or(0);
        if got == want {
            return;
        }
        assert!(got < want, "drops.{name} = {got}, expected {want}");
        assert!(
            Instant::now() < deadline,
            "drops.{name} = {got}, expected {want} (stats: {})",
            d.stats()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn state(d: &Daemon, ip: Ipv4Addr) -> String {
    d.lease(ip)
        .map(|l| l["state"].as_str().unwrap_or("?").to_string())
        .unwrap_or_else(|| "none".to_string())
}

#[test]
fn nak_rules_default_silent_for_unknown_clients_nak_for_a_wrong_binding() {
    scenario("nak-default", false, |t, d, agent| {
        // No record of this client: INIT-REBOOT and REBIND are left to the server that has one.
        let stranger = Identity::mac(test_mac(0x31, 1));
        let free = Ipv4Addr::new(198, 18, 1, 150);
        assert_silent(
            agent.init_reboot(&stranger, free, &no_extras()),
            "init-reboot, free address, no record",
        );
        assert_silent(
            agent.init_reboot(&stranger, Ipv4Addr::new(198, 18, 2, 150), &no_extras()),
            "init-reboot, another network's address, no record",
        );
        assert_silent(
            agent.init_reboot(&stranger, Ipv4Addr::new(198, 18, 1, 20), &no_extras()),
            "init-reboot, address outside the pools, no record",
        );
        assert_silent(
            agent.rebind(&stranger, free, &no_extras()),
            "rebind, free address, no record",
        );
        expect_drops(d, "not_authoritative", 4);
        assert_eq!(state(d, free), "free", "nothing was leased");

        // A bound client asking for another address is NAKed (an ACK would give it two).
        let id = Identity::mac(test_mac(0x31, 2));
        let b = agent.dora(&id, &no_extras()).expect("DORA");
        assert_eq!(b.address.octets()[..3], [198, 18, 1]);
        let ack = agent
            .init_reboot(&id, b.address, &no_extras())
            .expect("init-reboot for its own address");
        assert_eq!(ack.msg_type, Some(MessageType::Ack));
        let other = if b.address == free {
            Ipv4Addr::new(198, 18, 1, 151)
        } else {
            free
        };
        assert_relayed_nak(
            agent.init_reboot(&id, other, &no_extras()),
            "init-reboot for another address",
        );
        assert_relayed_nak(
            agent.rebind(&id, other, &no_extras()),
            "rebind for another address",
        );
        assert_eq!(state(d, other), "free");
        assert_eq!(state(d, b.address), "leased");
        assert_eq!(d.leases_by_mac(&id.mac_string()).len(), 1, "one address");

        // A network this server does not serve: an unknown relay, an unknown 82.5 link.
        t.lab.add_address("r", "d1", &format!("{FOREIGN_RELAY}/32"));
        let foreign = TestClient::relay(&t.rly, FOREIGN_RELAY, SERVER_IP).expect("foreign relay");
        let mut foreign = foreign;
        foreign.set_timeout(Duration::from_millis(1500));
        assert_silent(
            foreign.init_reboot(&stranger, free, &no_extras()),
            "init-reboot from another server's relay",
        );
        let link = Extras {
            relay_info: Some(RelayAgentInfo {
                link_selection: Some(Ipv4Addr::new(172, 16, 0, 1)),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_silent(
            agent.init_reboot(&stranger, Ipv4Addr::new(172, 16, 0, 10), &link),
            "init-reboot for an unknown 82.5 link",
        );
        expect_drops(d, "no_subnet", 2);
    });
}

#[test]
fn nak_rules_authoritative_subnet_naks_unknown_clients() {
    scenario("nak-auth", true, |t, d, agent| {
        let stranger = Identity::mac(test_mac(0x32, 1));
        let free = Ipv4Addr::new(198, 18, 1, 150);
        assert_relayed_nak(
            agent.init_reboot(&stranger, free, &no_extras()),
            "init-reboot, free address, no record",
        );
        assert_relayed_nak(
            agent.init_reboot(&stranger, Ipv4Addr::new(198, 18, 2, 150), &no_extras()),
            "init-reboot, another network's address",
        );
        assert_relayed_nak(
            agent.rebind(&stranger, free, &no_extras()),
            "rebind, free address, no record",
        );
        assert_eq!(state(d, free), "free", "nothing was leased");
        // Authoritative is per subnet: an unknown relay is still another server's business.
        t.lab.add_address("r", "d1", &format!("{FOREIGN_RELAY}/32"));
        let mut foreign =
            TestClient::relay(&t.rly, FOREIGN_RELAY, SERVER_IP).expect("foreign relay");
        foreign.set_timeout(Duration::from_millis(1500));
        assert_silent(
            foreign.init_reboot(&stranger, free, &no_extras()),
            "init-reboot from another server's relay",
        );
        expect_drops(d, "no_subnet", 1);
        // The client recovers with DISCOVER.
        let b = agent
            .dora(&stranger, &no_extras())
            .expect("DORA after the NAK");
        assert_eq!(b.address.octets()[..3], [198, 18, 1]);
    });
}
