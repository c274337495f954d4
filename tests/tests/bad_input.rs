//! Hostile packets (RELIABILITY.md A1–A5, A10) are dropped and counted; the daemon stays
//! up (same PID, no worker restarts) and a fresh DISCOVER gets its OFFER within 1 s.

use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

use prodhcp_systests::client::{Extras, Identity, TestClient};
use prodhcp_systests::daemon::{total_drops, worker_field, Daemon};
use prodhcp_systests::packet::{opt, test_mac, MessageType, Packet, FIXED_HEADER_LEN};
use prodhcp_systests::preflight;
use prodhcp_systests::topo::{Topology, NET1, RELAY1_IP, SERVER_IP};

/// A valid relayed DISCOVER, always from the same MAC (so the battery cannot exhaust the
/// pool with offers), to be made hostile.
fn discover(agent: &TestClient) -> Packet {
    agent.build(
        MessageType::Discover,
        &Identity::mac(test_mac(0xbd, 0)),
        &Extras::default(),
    )
}

/// Every hostile datagram of A1–A5 and A10, as bytes.
fn hostile_packets(agent: &TestClient) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    // A1: hlen sweep, htype 1 and a random one.
    for htype in [1u8, 0x7b] {
        for hlen in 0..=255u8 {
            let mut p = discover(agent);
            p.htype = htype;
            p.hlen = hlen;
            out.push((format!("A1 htype {htype} hlen {hlen}"), p.encode()));
        }
    }
    // A2: truncation to every length, no cookie, wrong cookie.
    let good = discover(agent).encode();
    for len in 0..good.len() {
        out.push((format!("A2 truncated to {len}"), good[..len].to_vec()));
    }
    out.push((
        "A2 236 bytes, no cookie".into(),
        good[..FIXED_HEADER_LEN].to_vec(),
    ));
    let mut no_opts = good[..FIXED_HEADER_LEN + 4].to_vec();
    no_opts[FIXED_HEADER_LEN] = 0x63;
    out.push(("A2 240 bytes, cookie only".into(), no_opts));
    let mut bad_cookie = good.clone();
    bad_cookie[FIXED_HEADER_LEN + 3] ^= 0xff;
    out.push(("A2 wrong cookie".into(), bad_cookie));
    // A3: option framing.
    let head = &good[..FIXED_HEADER_LEN + 4];
    let framed = |tail: &[u8]| [head, tail].concat();
    out.push((
        "A3 length past the end".into(),
        framed(&[53, 1, 1, 12, 200, b'x']),
    ));
    out.push(("A3 code with no length".into(), framed(&[53, 1, 1, 12])));
    out.push((
        "A3 no END".into(),
        framed(&[53, 1, 1, 61, 7, 1, 2, 0, 0, 0, 0, 1]),
    ));
    out.push(("A3 PAD only".into(), framed(&[0; 64])));
    out.push((
        "A3 bytes after END".into(),
        framed(&[53, 1, 1, 255, 53, 1, 3, 50, 9]),
    ));
    // A4: zero-length and short fixed options.
    for code in 1..=254u8 {
        if code == opt::MESSAGE_TYPE {
            continue;
        }
        let mut p = discover(agent);
        p.options.push((code, Vec::new()));
        out.push((format!("A4 option {code} len 0"), p.encode()));
    }
    for code in [opt::REQUESTED_IP, opt::LEASE_TIME, opt::SERVER_ID] {
        for len in [0usize, 1, 2, 3, 5] {
            let mut p = agent.build(
                MessageType::Request,
                &Identity::mac(test_mac(0xbd, 0)),
                &Extras::default(),
            );
            p.options.push((code, vec![198; len]));
            out.push((format!("A4 option {code} len {len}"), p.encode()));
        }
    }
    for len in [0usize, 2] {
        let mut p = discover(agent);
        p.options[0] = (opt::MESSAGE_TYPE, vec![1; len]);
        out.push((format!("A4 option 53 len {len}"), p.encode()));
    }
    for len in [0usize, 1, 3] {
        let mut p = discover(agent);
        p.options.push((opt::MAX_MESSAGE_SIZE, vec![0; len]));
        out.push((format!("A4 option 57 len {len}"), p.encode()));
    }
    // A5: client-id extremes.
    for len in [0usize, 1, 2, 254, 255] {
        let mut p = discover(agent);
        p.options.push((opt::CLIENT_ID, vec![0xab; len]));
        out.push((format!("A5 option 61 len {len}"), p.encode()));
    }
    let mut p = discover(agent);
    for _ in 0..10 {
        p.options.push((opt::CLIENT_ID, vec![0xcd; 255]));
    }
    out.push(("A5 ten concatenated 61s".into(), p.encode()));
    // A10: header and type fields.
    let mut p = discover(agent);
    p.op = 2;
    out.push(("A10 op=2".into(), p.encode()));
    let mut p = discover(agent);
    p.options.clear();
    out.push(("A10 no option 53".into(), p.encode()));
    for t in [0u8, 9, 10, 100, 255] {
        let mut p = discover(agent);
        p.options[0] = (opt::MESSAGE_TYPE, vec![t]);
        out.push((format!("A10 type {t}"), p.encode()));
    }
    let mut p = discover(agent);
    p.hops = 255;
    out.push(("A10 hops 255".into(), p.encode()));
    for n in 0..20 {
        let mut p = discover(agent);
        p.secs = 65535;
        p.chaddr[5] = n as u8 + 1;
        p.flags = 0x7fff ^ (n as u16);
        p.ciaddr = Ipv4Addr::new(198, 18, 9, n as u8);
        p.siaddr = Ipv4Addr::new(255, 255, 255, 255);
        out.push((
            format!("A10 secs 65535, junk flags/ciaddr/siaddr #{n}"),
            p.encode(),
        ));
    }
    out
}

fn assert_alive(agent: &TestClient, n: u32, after: &str) {
    let id = Identity::mac(test_mac(0xa1, n));
    let t0 = Instant::now();
    let p = agent.build(MessageType::Discover, &id, &Extras::default());
    agent.drain();
    agent.send(&p).expect("send DISCOVER");
    let r = agent
        .await_xid(p.xid, "liveness DISCOVER", Duration::from_secs(1))
        .unwrap_or_else(|e| panic!("no OFFER within 1 s after {after}: {e}"));
    assert_eq!(r.msg_type, Some(MessageType::Offer), "after {after}");
    assert!(t0.elapsed() <= Duration::from_secs(1));
}

#[test]
fn hostile_packets_are_dropped_and_the_daemon_stays_up() {
    if !preflight("bad_input", &[]) {
        return;
    }
    let t = Topology::new("badin");
    let mut cfg = t.standard_config();
    for s in cfg.subnets.iter_mut().filter(|s| s.network == NET1) {
        s.pools = vec!["198.18.1.10-198.18.1.250".to_string()];
    }
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    let agent = TestClient::relay(&t.rly, RELAY1_IP, SERVER_IP).expect("relay agent socket");
    let pid = d.pid();
    let workers_before = d.worker_pids();
    assert_alive(&agent, 0, "start");

    let packets = hostile_packets(&agent);
    let mut class = String::new();
    for (i, (what, bytes)) in packets.iter().enumerate() {
        agent
            .send_raw(bytes)
            .unwrap_or_else(|e| panic!("send {what}: {e}"));
        // Pace the flood a little, and probe liveness at each change of test class.
        let c = what.split(' ').next().unwrap_or("").to_string();
        if c != class {
            if !class.is_empty() {
                assert_alive(&agent, i as u32 + 1, &class);
            }
            class = c;
        }
        if i % 64 == 0 {
            thread::sleep(Duration::from_millis(5));
        }
    }
    thread::sleep(Duration::from_millis(300));
    assert_alive(&agent, 99_999, "the whole battery");

    assert_eq!(d.pid(), pid);
    assert!(
        d.process().is_running(),
        "prodhcpd exited: {}",
        d.process().stderr()
    );
    let st = d.status();
    assert_eq!(
        d.worker_pids(),
        workers_before,
        "a worker was replaced: {st}"
    );
    for r in worker_field(&st, "restarts") {
        assert_eq!(r.as_u64(), Some(0), "a worker restarted: {st}");
    }
    let stats = d.stats();
    assert!(
        total_drops(&stats) > 0,
        "no drops counted after {} hostile packets: {stats}",
        packets.len()
    );
}
