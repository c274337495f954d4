//! End-to-end: `dhcpperf responder` and the load scenarios in a pair of network namespaces
//! created by the test (veth between them, 198.18.x.0/24). They need root: without it they
//! fail with the reason, unless `PRODHCP_SKIP_SYSTEM_TESTS=1` (the convention of the system
//! tests in `tests/`), which skips them with a printed reason. Every process is started by the
//! test and killed by PID; the namespaces are deleted in `Drop`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dhcpperf");
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Environment variable that makes these tests skip (the same one `tests/src/lib.rs` uses).
const SKIP_ENV: &str = "PRODHCP_SKIP_SYSTEM_TESTS";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// What a test does given the skip variable and whether it runs as root: `Ok(true)` run,
/// `Ok(false)` skip (told to), `Err(reason)` fail.
fn preflight_decision(skip: Option<&std::ffi::OsStr>, root: bool) -> Result<bool, String> {
    if skip.is_some_and(|v| v == "1") {
        return Ok(false);
    }
    if !root {
        return Err(format!(
            "network-namespace tests need root; run them as root, or set {SKIP_ENV}=1 to skip them"
        ));
    }
    Ok(true)
}

/// Whether the test should run; panics (fails the test) when it cannot and was not told to
/// skip.
fn preflight() -> bool {
    match preflight_decision(std::env::var_os(SKIP_ENV).as_deref(), is_root()) {
        Ok(true) => true,
        Ok(false) => {
            eprintln!("SKIPPED: {SKIP_ENV}=1");
            false
        }
        Err(reason) => panic!("{reason}"),
    }
}

#[test]
fn not_root_fails_unless_told_to_skip() {
    assert!(preflight_decision(None, false).is_err());
    assert!(preflight_decision(Some("0".as_ref()), false).is_err());
    assert_eq!(preflight_decision(Some("1".as_ref()), false), Ok(false));
    assert_eq!(preflight_decision(Some("1".as_ref()), true), Ok(false));
    assert_eq!(preflight_decision(None, true), Ok(true));
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair: `srv` has .1, `cli` has .2 of 198.18.`net`.0/24.
/// True when a UDP socket in namespace `ns` is bound to `port` (its `/proc/net/udp`, read from
/// inside the namespace: local address column `XXXXXXXX:PPPP`, port in hex).
fn udp_port_bound(ns: &str, port: u16) -> bool {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/udp"])
        .output()
        .expect("read /proc/net/udp");
    let want = format!(":{port:04X}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .any(|local| local.ends_with(&want))
}

struct NsPair {
    srv: String,
    cli: String,
    net: u8,
    children: Vec<Child>,
    dir: PathBuf,
}

impl NsPair {
    fn new() -> Option<Self> {
        if !preflight() {
            return None;
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("dpf{}x{n}", std::process::id());
        let net = 100 + (n % 100) as u8;
        let dir = std::env::temp_dir().join(format!("{tag}-files"));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let pair = Self {
            srv: format!("{tag}s"),
            cli: format!("{tag}c"),
            net,
            children: Vec::new(),
            dir,
        };
        ip(&["netns", "add", &pair.srv]);
        ip(&["netns", "add", &pair.cli]);
        ip(&[
            "-n", &pair.srv, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns",
            &pair.cli,
        ]);
        for (ns, dev, host) in [(&pair.srv, "v0", 1), (&pair.cli, "v1", 2)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("198.18.{net}.{host}/24"),
                "dev",
                dev,
            ]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        Some(pair)
    }

    fn srv_ip(&self) -> String {
        format!("198.18.{}.1", self.net)
    }

    fn cli_ip(&self) -> String {
        format!("198.18.{}.2", self.net)
    }

    /// Starts a server in `ns` and waits (≤ 10 s) until a socket there is bound to UDP port
    /// 67. A fixed pause was not enough: on a loaded machine python3 took longer than 300 ms
    /// to bind, and the first requests of the run went unanswered.
    fn spawn(&mut self, ns: &str, prog: &str, args: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, prog])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        self.children.push(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !udp_port_bound(ns, 67) {
            assert!(
                std::time::Instant::now() < deadline,
                "{prog} bound no UDP port 67 in {ns} within 10 s"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn start_responder(&mut self) {
        let (srv, listen) = (self.srv.clone(), self.srv_ip());
        self.spawn(
            &srv,
            BIN,
            &[
                "responder",
                "--listen",
                &listen,
                "--threads",
                "2",
                "--duration",
                "60s",
            ],
        );
    }

    /// The responder on 0.0.0.0:67 (it must see broadcasts), server id the server's address.
    fn start_responder_any(&mut self) {
        let (srv, sid) = (self.srv.clone(), self.srv_ip());
        self.spawn(
            &srv,
            BIN,
            &[
                "responder",
                "--listen",
                "0.0.0.0",
                "--server-id",
                &sid,
                "--threads",
                "2",
                "--duration",
                "60s",
            ],
        );
    }

    /// Runs dhcpperf as direct clients on the client namespace's veth.
    fn run_direct(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.args(["-s", "KILL", "60", "ip", "netns", "exec", &self.cli, BIN])
            .args(args)
            .args(["--server", &self.srv_ip(), "--direct", "v1"]);
        cmd.output().expect("run dhcpperf")
    }

    /// Runs dhcpperf in the client namespace, bounded by `timeout` (coreutils).
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.args(["-s", "KILL", "60", "ip", "netns", "exec", &self.cli, BIN])
            .args(args)
            .args(["--server", &self.srv_ip(), "--relay-ip", &self.cli_ip()]);
        cmd.output().expect("run dhcpperf")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for NsPair {
    fn drop(&mut self) {
        for c in &mut self.children {
            // kill() signals this child's own PID only; then reap it.
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.srv])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.cli])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn count(v: &serde_json::Value, phase: usize, field: &str) -> u64 {
    v["phases"][phase]["counts"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in phase {phase}: {v}"))
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn dora_renew_release_against_the_responder() {
    let Some(mut lab) = NsPair::new() else {
        return;
    };
    lab.start_responder();
    let rec = lab.path("dora.jsonl");
    let out = lab.run(&[
        "dora",
        "--rate",
        "5000",
        "--count",
        "10000",
        // A loaded CI machine can answer later than the default 1 s: late is not lost here.
        "--timeout",
        "10s",
        "--json",
        "--client-id",
        "--record",
        rec.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json_of(&out);
    assert_eq!(count(&v, 0, "sent_discover"), 10_000);
    assert_eq!(count(&v, 0, "acks"), 10_000, "{v}");
    assert_eq!(
        count(&v, 0, "failed_discover") + count(&v, 0, "failed_request"),
        0
    );
    assert_eq!(count(&v, 0, "bad_reply"), 0);
    assert_eq!(v["phases"][0]["latency"]["request_ack"]["count"], 10_000);
    // Not serialised on one outstanding exchange (that would be < 1000/s here); the rate
    // itself is a benchmark's business, not a test's on a shared 2-core machine.
    assert!(
        v["phases"][0]["leases_per_s"].as_f64().unwrap() > 1000.0,
        "{v}"
    );
    assert_eq!(lines(&rec), 10_000);

    let out = lab.run(&[
        "renew", "--rate", "4000", "--count", "2000", "--json", "--seed", "2",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json_of(&out);
    assert_eq!(count(&v, 0, "acks"), 2000);
    assert_eq!(count(&v, 1, "sent_renew"), 2000);
    assert_eq!(count(&v, 1, "renew_acks"), 2000);

    let rec = lab.path("release.jsonl");
    let out = lab.run(&[
        "release",
        "--rate",
        "4000",
        "--count",
        "1000",
        "--json",
        "--seed",
        "3",
        "--record",
        rec.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json_of(&out);
    assert_eq!(count(&v, 1, "sent_release"), 1000);
    assert_eq!(lines(&rec), 2000, "1000 acks + 1000 releases");
}

/// `dora --clients 50 --count 500`: 50 MACs, each used 10 times; every use but the last of
/// each MAC is followed by a RELEASE of the address just acknowledged, recorded after its ACK.
#[test]
fn returning_clients_release_before_their_mac_is_reused() {
    let Some(mut lab) = NsPair::new() else {
        return;
    };
    lab.start_responder();
    let rec = lab.path("cycle.jsonl");
    let out = lab.run(&[
        "dora",
        "--rate",
        "2000",
        "--count",
        "500",
        "--clients",
        "50",
        "--json",
        "--record",
        rec.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json_of(&out);
    assert_eq!(count(&v, 0, "sent_discover"), 500);
    assert_eq!(count(&v, 0, "acks"), 500, "{v}");
    assert_eq!(count(&v, 0, "sent_release"), 450, "{v}");
    assert_eq!(
        count(&v, 0, "bad_reply") + count(&v, 0, "unexpected"),
        0,
        "{v}"
    );
    let mut events: Vec<serde_json::Value> = std::fs::read_to_string(&rec)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 950);
    events.sort_by_key(|e| e["seq"].as_u64().unwrap());
    let mut per_mac: std::collections::BTreeMap<String, Vec<(String, String)>> = Default::default();
    for e in &events {
        per_mac
            .entry(e["mac"].as_str().unwrap().to_string())
            .or_default()
            .push((
                e["event"].as_str().unwrap_or("?").to_string(),
                e["address"].as_str().unwrap().to_string(),
            ));
    }
    assert_eq!(per_mac.len(), 50, "{:?}", per_mac.keys());
    for (mac, evs) in &per_mac {
        assert_eq!(evs.len(), 19, "{mac}: {evs:?}");
        for (k, (kind, addr)) in evs.iter().enumerate() {
            let want = if k % 2 == 0 { "ack" } else { "release" };
            assert_eq!(kind, want, "{mac} event {k}: {evs:?}");
            if k % 2 == 1 {
                assert_eq!(addr, &evs[k - 1].1, "{mac}: releases what was acked");
            }
        }
    }
    // New clients that release: 300 MACs, 300 ACKs, 300 RELEASEs.
    let out = lab.run(&[
        "dora",
        "--rate",
        "2000",
        "--count",
        "300",
        "--release-after-ack",
        "--seed",
        "6",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json_of(&out);
    assert_eq!(count(&v, 0, "acks"), 300, "{v}");
    assert_eq!(count(&v, 0, "sent_release"), 300, "{v}");
}

/// `--direct v1`: broadcast DISCOVER/REQUEST from 0.0.0.0:68, no giaddr, broadcast flag;
/// the responder answers the source; RELEASEs of returning clients go to the server.
#[test]
fn direct_clients_broadcast_without_a_relay() {
    let Some(mut lab) = NsPair::new() else {
        return;
    };
    lab.start_responder_any();
    let out = lab.run_direct(&[
        "dora",
        "--rate",
        "2000",
        "--count",
        "1000",
        "--clients",
        "100",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json_of(&out);
    assert_eq!(v["relay"], "direct on v1", "{v}");
    assert_eq!(count(&v, 0, "acks"), 1000, "{v}");
    assert_eq!(count(&v, 0, "sent_release"), 900, "{v}");
    assert_eq!(count(&v, 0, "bad_reply") + count(&v, 0, "stray"), 0, "{v}");
    // Renewals are refused in direct mode; a missing interface is a setup error.
    let out = lab.run_direct(&["renew", "--count", "10"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.cli, BIN, "dora", "--count", "1"])
        .args(["--server", &lab.srv_ip(), "--direct", "nosuchif0"]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nosuchif0"),
        "{out:?}"
    );
}

#[test]
fn avalanche_mix_and_sweep_against_the_responder() {
    let Some(mut lab) = NsPair::new() else {
        return;
    };
    lab.start_responder();
    let out = lab.run(&[
        "avalanche",
        "--count",
        "5000",
        "--deadline",
        "20s",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json_of(&out);
    assert_eq!(v["phases"][0]["bound_at_end"], 5000, "{v}");
    assert_eq!(count(&v, 0, "acks"), 5000);
    // The last ACK came after the phase started and before it ended.
    let last_ack = v["phases"][0]["last_ack_s"].as_f64().expect("last_ack_s");
    let elapsed = v["phases"][0]["elapsed_s"].as_f64().expect("elapsed_s");
    assert!(last_ack > 0.0 && last_ack <= elapsed, "{v}");

    let out = lab.run(&[
        "mix",
        "--rate",
        "1000",
        "--renew-rate",
        "500",
        "--release-rate",
        "200",
        "--prebind",
        "1000",
        "--duration",
        "2s",
        "--timeout",
        "10s",
        "--json",
        "--seed",
        "4",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json_of(&out);
    assert_eq!(count(&v, 0, "acks"), 1000, "prebind");
    let renews = count(&v, 1, "renew_acks");
    let releases = count(&v, 1, "sent_release");
    assert!((800..=1100).contains(&renews), "renews {renews}");
    assert!((300..=450).contains(&releases), "releases {releases}");
    assert!(count(&v, 1, "acks") >= 1900);

    let out = lab.run(&[
        "sweep",
        "--start-rate",
        "2000",
        "--step-rate",
        "2000",
        "--max-rate",
        "4000",
        "--step-duration",
        "1s",
        "--timeout",
        "10s",
        "--json",
        "--seed",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json_of(&out);
    let steps = v["sweep"]["steps"].as_array().expect("sweep steps");
    assert_eq!(steps.len(), 2, "{v}");
    // The summary names the highest step without a miss (a datagram lost on a loaded machine
    // may cost the 4000/s step its zero; the responder must still answer nearly all).
    let zero_loss = steps
        .iter()
        .filter(|st| st["missed_pct"] == 0.0)
        .filter_map(|st| st["rate"].as_f64())
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
    assert_eq!(v["sweep"]["max_zero_loss_rate"].as_f64(), zero_loss, "{v}");
    assert!(
        steps.iter().all(|st| st["missed_pct"].as_f64() < Some(1.0)),
        "{v}"
    );
}

#[test]
fn unreachable_server_and_nonsense_replies_end_cleanly() {
    let Some(mut lab) = NsPair::new() else {
        return;
    };
    // Nothing listens on the server: ICMP port unreachable, then give up.
    let t0 = Instant::now();
    let out = lab.run(&[
        "dora",
        "--rate",
        "200",
        "--count",
        "2000",
        "--give-up",
        "1s",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("no answers from"), "{stdout}");
    assert!(t0.elapsed() < Duration::from_secs(8));

    // A server that answers every datagram with garbage (and one truncated reply).
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('{}',67))\n\
         s.settimeout(30)\n\
         while True:\n    d,a=s.recvfrom(2000)\n    s.sendto(b'\\x02'+d[1:240]+b'junk',('{}',67))\n    s.sendto(b'x',('{}',67))\n",
        lab.srv_ip(),
        lab.cli_ip(),
        lab.cli_ip()
    );
    let srv = lab.srv.clone();
    lab.spawn(&srv, "python3", &["-c", &script]);
    let out = lab.run(&[
        "dora",
        "--rate",
        "100",
        "--count",
        "300",
        // About 200 bad replies by the time it gives up: twice the floor below.
        "--give-up",
        "2s",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let v = json_of(&out);
    assert!(count(&v, 0, "bad_reply") >= 100, "{v}");
    assert_eq!(count(&v, 0, "acks"), 0);
}
