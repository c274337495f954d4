//! perfdhcp (Kea) completes 4-way exchanges in relay mode at a moderate rate, and every
//! acknowledged client is in the lease export.
//!
//! perfdhcp cannot list the clients it got ACKs for, so the test captures every reply the
//! server sends to the load namespace with a raw socket in that namespace
//! ([`prodhcp_systests::capture`]) and checks each ACKed client against the export: the ACKed
//! address is leased to that MAC, and the set of leased bulk addresses is exactly the set of
//! ACKed ones (no lease nobody was told about, no address twice).

use std::collections::{BTreeMap, HashMap};
use std::thread;
use std::time::{Duration, Instant};

use prodhcp_systests::capture::ReplyCapture;
use prodhcp_systests::daemon::{total, Daemon};
use prodhcp_systests::packet::MessageType;
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
    let capture = ReplyCapture::start(&t.load, SERVER_IP, 67).expect("start the ACK capture");
    // One distinct client per exchange (perfdhcp walks its -R range of MACs).
    let r = run_perfdhcp(&t.lab, &t.load, LOAD_IP, SERVER_IP, RATE * SECS, RATE, SECS);
    // perfdhcp exits with requests in flight: the capture goes on until the server has read
    // everything (its count of datagrams read stands still for 300 ms; at most 5 s).
    let quiet_by = Instant::now() + Duration::from_secs(5);
    let mut read = total(&d.stats(), &["received"]);
    while Instant::now() < quiet_by {
        thread::sleep(Duration::from_millis(300));
        let now = total(&d.stats(), &["received"]);
        if now == read {
            break;
        }
        read = now;
    }
    let replies = capture.finish().expect("ACK capture");
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

    // Every ACK the server sent to the load namespace: address → MAC. One address must never
    // be ACKed to two MACs.
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let mut ack_count = 0u64;
    for a in replies
        .iter()
        .filter(|r| r.msg_type == Some(MessageType::Ack))
    {
        ack_count += 1;
        let addr = a.yiaddr.to_string();
        if let Some(prev) = acked.insert(addr.clone(), a.mac.clone()) {
            assert_eq!(prev, a.mac, "{addr} ACKed to {prev} and to {}", a.mac);
        }
    }
    assert_eq!(
        replies
            .iter()
            .filter(|r| r.msg_type == Some(MessageType::Nak))
            .count(),
        0,
        "NAKs in a clean run"
    );
    // perfdhcp counted only ACKs it matched to its requests: the wire holds at least those.
    assert!(
        ack_count >= r.ack_received && r.ack_received > 0,
        "captured {ack_count} ACKs, perfdhcp counted {}:\n{}",
        r.ack_received,
        r.output
    );
    assert!(
        acked.len() as u64 >= u64::from(RATE * SECS) * 99 / 100 * 9 / 10,
        "only {} distinct clients ACKed",
        acked.len()
    );

    // Clients perfdhcp had not finished when it stopped: OFFERed, never ACKed. Each keeps its
    // offered address (offer_hold is 30 s, the run 5 s), and nothing else may be non-leased.
    let acked_macs: std::collections::HashSet<&String> = acked.values().collect();
    let mut offered_only: BTreeMap<String, String> = BTreeMap::new();
    for o in replies
        .iter()
        .filter(|r| r.msg_type == Some(MessageType::Offer) && !acked_macs.contains(&r.mac))
    {
        offered_only.insert(o.yiaddr.to_string(), o.mac.clone());
    }
    let export = d.export();
    let mut leased: HashMap<String, String> = HashMap::new();
    let mut still_offered: BTreeMap<String, String> = BTreeMap::new();
    for l in export.iter().filter(|l| {
        l["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("198.19."))
    }) {
        let addr = l["address"].as_str().expect("address").to_string();
        let mac = l["hwaddr"].as_str().unwrap_or("").to_ascii_lowercase();
        if l["state"] == "offered" {
            still_offered.insert(addr, mac);
            continue;
        }
        assert_eq!(
            l["state"], "leased",
            "an entry neither leased nor offered after a clean run: {l}"
        );
        assert!(
            leased.insert(addr.clone(), mac).is_none(),
            "{addr} is listed twice in the export"
        );
    }
    let missing: Vec<_> = acked
        .iter()
        .filter(|(addr, mac)| leased.get(*addr) != Some(*mac))
        .map(|(addr, mac)| (addr, mac, leased.get(addr)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} ACKed clients are not in the export with their MAC, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(
        still_offered, offered_only,
        "offered entries must be exactly the clients OFFERed and never ACKed (perfdhcp's \
         unfinished exchanges)"
    );
    let unacked: Vec<_> = leased.keys().filter(|a| !acked.contains_key(*a)).collect();
    assert!(
        unacked.is_empty(),
        "{} leased addresses were never ACKed on the wire, e.g. {:?}",
        unacked.len(),
        &unacked[..unacked.len().min(10)]
    );
    eprintln!(
        "perfdhcp: {} ACKs counted by perfdhcp, {ack_count} captured, {} distinct clients, all in the export; {} unfinished (offered)",
        r.ack_received,
        acked.len(),
        offered_only.len()
    );
}
