//! Clients behind a real ISC dhcrelay on two downstream segments each get a lease from the
//! subnet of their own segment (chosen by giaddr).

use std::time::Duration;

use prodhcp_systests::daemon::Daemon;
use prodhcp_systests::preflight;
use prodhcp_systests::tools::{start_dhcrelay, start_real_client, RealClient};
use prodhcp_systests::topo::{Topology, SERVER_IP};

#[test]
fn clients_behind_dhcrelay_get_leases_from_their_segment() {
    if !preflight("relay", &["dhcrelay", "udhcpc", "dhclient"]) {
        return;
    }
    let t = Topology::new("relay");
    let d = Daemon::start(&t.lab, &t.srv, &t.standard_config());
    let _relay = start_dhcrelay(&t.lab, &t.rly, &["d1", "d2"], "u0", SERVER_IP);

    let cases = [
        ("br1", RealClient::Udhcpc, 1u8),
        ("br1", RealClient::Dhclient, 1),
        ("br2", RealClient::Udhcpc, 2),
        ("br2", RealClient::Dhclient, 2),
    ];
    let runs: Vec<_> = cases
        .iter()
        .map(|(br, kind, seg)| {
            let cl = t.add_client(br, None, None);
            let run = start_real_client(&t.lab, *kind, &cl.ns, &cl.ifname);
            (cl, run, *kind, *seg)
        })
        .collect();
    for (cl, run, kind, seg) in &runs {
        let ip = run.wait_bound(Duration::from_secs(30)).unwrap_or_else(|| {
            panic!(
                "{kind:?} on segment {seg}: no lease in 30 s\nhook: {}\nclient: {}\nprodhcpd: {}",
                run.events(),
                run.proc.stderr(),
                d.process().stderr()
            )
        });
        assert_eq!(
            ip.octets()[..3],
            [198, 18, *seg],
            "{kind:?} on segment {seg} got {ip}"
        );
        let lease = d
            .lease(ip)
            .unwrap_or_else(|| panic!("no lease object for {ip}"));
        assert_eq!(lease["state"], "leased", "{lease}");
        assert_eq!(lease["hwaddr"], cl.mac_string().as_str(), "{lease}");
        assert_eq!(
            lease["subnet"],
            format!("198.18.{seg}.0/24").as_str(),
            "{lease}"
        );
    }
}
