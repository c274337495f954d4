//! perfdhcp (Kea) completes 4-way exchanges in relay mode at a moderate rate, and every
//! acknowledged client is in the lease export.

use std::collections::HashSet;

use prodhcp_systests::daemon::Daemon;
use prodhcp_systests::preflight;
use prodhcp_systests::tools::run_perfdhcp;
use prodhcp_systests::topo::{Topology, LOAD_IP, SERVER_IP};

const RATE: u32 = 500;
const SECS: u32 = 5;

#[test]
fn perfdhcp_relay_mode_completes_99_percent() {
    if !preflight("perfdhcp", &["perfdhcp"]) {
        return;
    }
    let t = Topology::new("perf");
    let d = Daemon::start(&t.lab, &t.srv, &t.standard_config());
    // One distinct client per exchange (perfdhcp walks its -R range of MACs).
    let r = run_perfdhcp(&t.lab, &t.load, LOAD_IP, SERVER_IP, RATE * SECS, RATE, SECS);
    assert!(
        r.discover_sent >= u64::from(RATE * SECS) * 9 / 10,
        "perfdhcp sent too little to judge: {}",
        r.output
    );
    assert!(
        r.completion() >= 0.99,
        "only {:.2} % of exchanges completed:\n{}",
        r.completion() * 100.0,
        r.output
    );

    let export = d.export();
    let bulk: Vec<_> = export
        .iter()
        .filter(|l| {
            l["address"]
                .as_str()
                .is_some_and(|a| a.starts_with("198.19."))
        })
        .collect();
    assert!(
        bulk.iter().all(|l| l["state"] == "leased"),
        "non-leased entries after a clean run"
    );
    let addrs: HashSet<_> = bulk.iter().map(|l| l["address"].to_string()).collect();
    assert_eq!(
        addrs.len(),
        bulk.len(),
        "an address is listed twice in the export"
    );
    assert!(
        bulk.len() as u64 >= r.ack_received * 99 / 100,
        "export holds {} leases, perfdhcp got {} ACKs",
        bulk.len(),
        r.ack_received
    );
}
