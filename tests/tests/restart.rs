//! Leases survive a clean restart: the export after SIGTERM + start is identical
//! (address, client, state, expiry).

use prodhcp_systests::client::{Extras, Identity, TestClient};
use prodhcp_systests::daemon::Daemon;
use prodhcp_systests::packet::test_mac;
use prodhcp_systests::preflight;
use prodhcp_systests::topo::{Topology, LOAD_IP, SERVER_IP};
use serde_json::Value;

const LEASES: u32 = 300;

fn key(l: &Value) -> String {
    format!(
        "{} {} {} {} {}",
        l["address"], l["hwaddr"], l["client_id"], l["state"], l["expires"]
    )
}

#[test]
fn restart_keeps_every_lease() {
    if !preflight("restart", &[]) {
        return;
    }
    let t = Topology::new("restart");
    let d = Daemon::start(&t.lab, &t.srv, &t.standard_config());
    // The load namespace's address is mapped to the bulk subnet (relays: [198.18.0.3]).
    let agent = TestClient::relay(&t.load, LOAD_IP, SERVER_IP).expect("relay agent socket");
    let mut acked = Vec::new();
    for n in 0..LEASES {
        let id = Identity {
            mac: test_mac(0x50, n),
            client_id: (n % 2 == 0).then(|| [&[1u8][..], &test_mac(0x50, n)[..]].concat()),
        };
        let b = agent
            .dora(&id, &Extras::default())
            .unwrap_or_else(|e| panic!("lease {n}: {e}"));
        acked.push((b.address, id.mac_string()));
    }
    let mut before: Vec<String> = d.export().iter().map(key).collect();
    before.sort();
    assert!(
        before.len() >= LEASES as usize,
        "export has {} entries",
        before.len()
    );
    for (addr, mac) in &acked {
        let l = d.lease(*addr).unwrap_or_else(|| panic!("no lease {addr}"));
        assert_eq!(l["hwaddr"], mac.as_str());
    }

    let d = d.restart();
    let st = d.status();
    assert_eq!(
        st["table"]["clean_start"], true,
        "a clean stop must leave a clean table: {st}"
    );
    let mut after: Vec<String> = d.export().iter().map(key).collect();
    after.sort();
    assert_eq!(before, after, "the export changed across a restart");
}
