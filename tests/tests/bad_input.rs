//! Hostile packets (RELIABILITY.md A1–A5, A10) are dropped and counted; the daemon stays
//! up (same PID, no worker restarts) and a fresh DISCOVER gets its OFFER within 1 s.
//!
//! Every input carries its exact expected outcome: dropped with one named reason (the
//! `stats` drop counter of that reason goes up by exactly one, no other drop counter moves,
//! no reply), or served (an OFFER with its xid, no drop counter moves). The inputs are sent
//! one at a time and the counters polled (with a deadline) until the outcome shows.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use prodhcp_systests::client::{Extras, Identity, TestClient};
use prodhcp_systests::daemon::{worker_field, Daemon};
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

/// What the server must do with one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Dropped, counted under this `stats` drop reason.
    Drop(&'static str),
    /// Answered with an OFFER (the input is odd but acceptable).
    Offer,
}
use Expect::{Drop, Offer};

/// The exact outcome of each hostile datagram, by its label (see [`hostile_packets`]).
/// `good` is the DISCOVER the truncations cut: header and cookie (240 bytes), option 53
/// (3 bytes), END, padding.
fn expected(what: &str) -> Expect {
    let num = |prefix: &str| -> Option<usize> {
        what.strip_prefix(prefix)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
    };
    if let Some(rest) = what.strip_prefix("A1 htype ") {
        let hlen: usize = rest
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("hlen");
        // hlen 0 without a client identifier, or past chaddr's 16 bytes.
        return if hlen == 0 || hlen > 16 {
            Drop("bad_hlen")
        } else {
            Offer
        };
    }
    if let Some(len) = num("A2 truncated to ") {
        return match len {
            0..=239 => Drop("too_short"),
            240 => Drop("no_message_type"),
            // Option 53's code without its length, or its length without its value.
            241 | 242 => Drop("bad_option_framing"),
            // Option 53 complete; a missing END ends the field.
            _ => Offer,
        };
    }
    if what.starts_with("A4 option 53 len") {
        return Drop("bad_message_type");
    }
    if what.starts_with("A4 REQUEST") {
        // Neither a usable 50 nor 54 nor ciaddr: no RFC 2131 state fits.
        return Drop("malformed_request");
    }
    if what.starts_with("A10 type ") {
        return Drop("bad_message_type");
    }
    match what {
        "A2 236 bytes, no cookie" => Drop("too_short"),
        "A2 240 bytes, cookie only" => Drop("no_message_type"),
        "A2 wrong cookie" => Drop("bad_cookie"),
        "A3 length past the end" | "A3 code with no length" => Drop("bad_option_framing"),
        "A3 no END" | "A3 bytes after END" => Offer,
        "A3 PAD only" => Drop("no_message_type"),
        // 2.8 KB: longer than the worker's 2 KiB receive buffer, so it arrives truncated and
        // is dropped as too short.
        "A5 ten concatenated 61s" => Drop("too_short"),
        "A10 op=2" => Drop("not_request"),
        "A10 no option 53" => Drop("no_message_type"),
        "A10 hops 255" => Drop("too_many_hops"),
        // Zero-length or short options are ignored (counted as malformed options), 61 of
        // any length up to 255 is a client identifier, junk in secs/flags/ciaddr/siaddr is
        // not a reason to refuse a DISCOVER.
        w if w.starts_with("A4 option ") || w.starts_with("A5 option 61") => Offer,
        w if w.starts_with("A10 secs 65535") => Offer,
        other => panic!("no expected outcome for {other:?}"),
    }
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
            out.push((format!("A4 REQUEST option {code} len {len}"), p.encode()));
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

/// The counters of `stats.total` this test compares.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    received: u64,
    offer: u64,
    dropped: u64,
    drops: BTreeMap<String, u64>,
}

impl Snapshot {
    fn of(d: &Daemon) -> Snapshot {
        let stats = d.stats();
        let total = &stats["total"];
        let get = |k: &str| {
            total[k]
                .as_u64()
                .unwrap_or_else(|| panic!("stats.total.{k} missing: {stats}"))
        };
        let drops = total["drops"]
            .as_object()
            .unwrap_or_else(|| panic!("stats.total.drops missing: {stats}"))
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().expect("drop counter")))
            .collect();
        Snapshot {
            received: get("received"),
            offer: get("offer"),
            dropped: get("dropped"),
            drops,
        }
    }

    fn drop_sum(&self) -> u64 {
        self.drops.values().sum()
    }

    /// Drop reasons that changed since `before`, with their increase.
    fn drops_since(&self, before: &Snapshot) -> BTreeMap<String, u64> {
        self.drops
            .iter()
            .filter_map(|(k, &v)| {
                let b = before.drops.get(k).copied().unwrap_or(0);
                (v != b).then(|| (k.clone(), v.wrapping_sub(b)))
            })
            .collect()
    }
}

/// Sends one input and checks its exact outcome; returns the counters after it.
fn check_one(
    d: &Daemon,
    agent: &TestClient,
    what: &str,
    bytes: &[u8],
    before: &Snapshot,
) -> Snapshot {
    let expect = expected(what);
    agent.drain();
    agent
        .send_raw(bytes)
        .unwrap_or_else(|e| panic!("send {what}: {e}"));
    // Poll until the packet shows as received and its outcome (a drop reason or an OFFER)
    // is counted.
    let deadline = Instant::now() + Duration::from_secs(3);
    let after = loop {
        let now = Snapshot::of(d);
        let done = now.received > before.received
            && (now.drop_sum() > before.drop_sum() || now.offer > before.offer);
        if done {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no outcome counted within 3 s (before {before:?}, now {now:?})"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(after.received, before.received + 1, "{what}");
    let drops = after.drops_since(before);
    match expect {
        Drop(reason) => {
            assert_eq!(
                drops,
                BTreeMap::from([(reason.to_string(), 1)]),
                "{what}: expected exactly one `{reason}` drop"
            );
            assert_eq!(after.dropped, before.dropped + 1, "{what}");
            assert_eq!(
                after.offer, before.offer,
                "{what}: answered, expected a drop"
            );
        }
        Offer => {
            assert!(
                drops.is_empty(),
                "{what}: expected an OFFER, dropped as {drops:?}"
            );
            assert_eq!(after.dropped, before.dropped, "{what}");
            assert_eq!(after.offer, before.offer + 1, "{what}");
            let xid = u32::from_be_bytes(bytes[4..8].try_into().expect("xid"));
            let r = agent
                .await_xid(xid, "OFFER to a hostile input", Duration::from_secs(1))
                .unwrap_or_else(|e| panic!("{what}: counted as offered but no reply: {e}"));
            assert_eq!(r.msg_type, Some(MessageType::Offer), "{what}");
        }
    }
    after
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
    let mut by_outcome: BTreeMap<String, usize> = BTreeMap::new();
    let mut before = Snapshot::of(&d);
    for (i, (what, bytes)) in packets.iter().enumerate() {
        // Probe liveness at each change of test class.
        let c = what.split(' ').next().unwrap_or("").to_string();
        if c != class {
            if !class.is_empty() {
                assert_alive(&agent, i as u32 + 1, &class);
                before = Snapshot::of(&d);
            }
            class = c;
        }
        before = check_one(&d, &agent, what, bytes, &before);
        *by_outcome
            .entry(format!("{:?}", expected(what)))
            .or_default() += 1;
    }
    eprintln!(
        "{} hostile inputs, outcomes as expected: {by_outcome:?}",
        packets.len()
    );
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
}
