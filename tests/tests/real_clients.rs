//! Real DHCP clients (dhclient, udhcpc, dhcpcd) on the server's own segment get a lease:
//! their hook sees a bound event, the address is on the interface, and prodhcpctl shows the
//! lease as `leased` with the client's MAC.

use std::time::Duration;

use prodhcp_systests::daemon::Daemon;
use prodhcp_systests::preflight;
use prodhcp_systests::tools::{start_real_client, RealClient};
use prodhcp_systests::topo::Topology;

fn real_client_gets_a_lease(kind: RealClient) {
    let test = format!("real_client_{}", kind.program());
    if !preflight(&test, &[kind.program()]) {
        return;
    }
    let t = Topology::new(kind.program());
    let d = Daemon::start(&t.lab, &t.srv, &t.standard_config());
    let cl = t.add_client("br0", None, None);
    let run = start_real_client(&t.lab, kind, &cl.ns, &cl.ifname);

    let ip = run.wait_bound(Duration::from_secs(30)).unwrap_or_else(|| {
        panic!(
            "{test}: no bound event in 30 s\nhook log:\n{}\nclient stderr:\n{}\nprodhcpd stderr:\n{}",
            run.events(),
            run.proc.stderr(),
            d.process().stderr()
        )
    });
    assert_eq!(
        ip.octets()[..3],
        [198, 18, 0],
        "{test}: {ip} is not from the direct segment's pool"
    );

    let out = t.lab.run(
        &cl.ns,
        &["ip", "-4", "-o", "addr", "show", "dev", &cl.ifname],
    );
    let addrs = String::from_utf8_lossy(&out.stdout);
    assert!(
        addrs.contains(&format!("{ip}/")),
        "{test}: {ip} not on {}: {addrs}",
        cl.ifname
    );

    let lease = d
        .lease(ip)
        .unwrap_or_else(|| panic!("{test}: prodhcpctl lease {ip} found nothing"));
    assert_eq!(lease["state"], "leased", "{test}: {lease}");
    assert_eq!(lease["hwaddr"], cl.mac_string().as_str(), "{test}: {lease}");
}

#[test]
fn dhclient_gets_a_lease() {
    real_client_gets_a_lease(RealClient::Dhclient);
}

#[test]
fn udhcpc_gets_a_lease() {
    real_client_gets_a_lease(RealClient::Udhcpc);
}

#[test]
fn dhcpcd_gets_a_lease() {
    real_client_gets_a_lease(RealClient::Dhcpcd);
}
