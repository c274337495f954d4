//! Issue 11 item 6: a pool alarm raised and cleared with real DHCP traffic.
//!
//! A 20-address pool, alarms evaluated every second (default thresholds 80/90/95 %, hysteresis
//! 5 points), an audit trail to a JSON-lines file. Nineteen clients (relayed DORAs on the wire,
//! the test library's scripted relay agent) take 95 % of the pool: the alarm is raised to
//! `critical` — a warn log line, `prodhcpctl alarms` (text and `--json`), the
//! `prodhcp_pool_alarm_level` metric, a `pool-alarm` audit event. Their DHCPRELEASEs bring it
//! back to 0 %: the alarm clears the same four ways.

use std::thread;
use std::time::{Duration, Instant};

use prodhcp_systests::client::{Extras, Identity, TestClient};
use prodhcp_systests::config::{ServerConfig, SubnetConfig};
use prodhcp_systests::daemon::Daemon;
use prodhcp_systests::packet::test_mac;
use prodhcp_systests::preflight;
use prodhcp_systests::topo::{Topology, NET1, RELAY1_IP, SERVER_IP};
use serde_json::Value;

const POOL: &str = "198.18.1.100-198.18.1.119";
const PORT: u16 = 9968;

fn pool_alarm(d: &Daemon) -> Value {
    let v = d.ctl_json(&["alarms"]);
    v["pools"][0].clone()
}

/// Waits up to 10 s for the pool's alarm level to be `level`.
fn wait_level(d: &Daemon, level: u64) -> Value {
    wait_pool(d, &format!("level {level}"), |p| p["level"] == level)
}

/// Waits up to 10 s for the pool's alarm status to satisfy `done`.
fn wait_pool(d: &Daemon, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = pool_alarm(d);
        if done(&p) {
            return p;
        }
        assert!(Instant::now() < deadline, "{what} not reached: {p}");
        thread::sleep(Duration::from_millis(200));
    }
}

fn metric_level(t: &Topology) -> String {
    let out = t.lab.run_timeout(
        &t.srv,
        &[
            "curl",
            "-s",
            "-m",
            "5",
            &format!("http://127.0.0.1:{PORT}/metrics"),
        ],
        Duration::from_secs(10),
    );
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    body.lines()
        .find(|l| l.starts_with("prodhcp_pool_alarm_level{"))
        .unwrap_or_else(|| panic!("no alarm level metric in {body}"))
        .to_string()
}

/// Waits up to 10 s for the daemon's log to contain `needle`.
fn wait_log(d: &Daemon, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = format!("{}{}", d.process().stdout(), d.process().stderr());
        if let Some(line) = log.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no `{needle}` in the log:\n{log}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// Waits up to 10 s for a `pool-alarm` audit event with `cause`.
fn wait_audit(path: &std::path::Path, cause: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["event"] == "pool-alarm" && v["cause"] == cause);
        if let Some(v) = found {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no pool-alarm {cause} event in:\n{text}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_pool_past_90_percent_raises_an_alarm_that_clears_on_release() {
    if !preflight("pool_alarms", &["curl"]) {
        return;
    }
    let t = Topology::new("palrm");
    let audit_file = t.lab.path("audit.jsonl");
    let mut cfg = ServerConfig::new(t.lab.dir())
        .subnet(SubnetConfig::new(NET1, POOL).option("routers", "198.18.1.1"))
        .field(&format!("metrics_listen: Some(\"127.0.0.1:{PORT}\")"))
        .field("pool_alarms: (interval: 1, rate_window: 20)")
        .field(&format!(
            "audit: (file: Some({:?}))",
            audit_file.display().to_string()
        ));
    cfg.workers = 1;
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    let p = wait_level(&d, 0);
    assert_eq!(p["size"], 20, "{p}");
    assert_eq!(p["thresholds"], serde_json::json!([80, 90, 95]), "{p}");

    // 19 of 20 addresses: 95 %.
    let agent = TestClient::relay(&t.rly, RELAY1_IP, SERVER_IP).expect("relay agent socket");
    let mut bound = Vec::new();
    for n in 0..19u32 {
        let id = Identity::mac(test_mac(0x7a, n));
        let b = agent
            .dora(&id, &Extras::default())
            .unwrap_or_else(|e| panic!("DORA {n}: {e}"));
        bound.push((id, b.address, b.server_id));
    }
    let p = wait_level(&d, 3);
    assert_eq!(p["level_name"], "critical", "{p}");
    assert_eq!(p["free"], 1, "{p}");
    assert_eq!(p["utilisation"], 95.0, "{p}");
    assert!(p["raised_at"].is_u64(), "{p}");
    eprintln!("raised: {p}");
    let (ok, text) = d.ctl_text(&["alarms"]);
    assert!(ok, "{text}");
    eprint!("prodhcpctl alarms:\n{text}");
    assert!(
        text.lines()
            .any(|l| l.contains(POOL) && l.contains("critical") && l.contains("95.0%")),
        "{text}"
    );
    let line = wait_log(&d, "pool alarm raised");
    eprintln!("log: {line}");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(POOL) && line.contains("critical"), "{line}");
    let m = metric_level(&t);
    assert!(m.ends_with(" 3"), "{m}");
    let ev = wait_audit(&audit_file, "raised");
    eprintln!("audit: {ev}");
    let finding = ev["finding"].as_str().unwrap_or_default();
    assert!(
        finding.contains(&format!("pool={POOL}")) && finding.contains("level=critical"),
        "{ev}"
    );

    // Release every one: back to 0 %, below 80 - 5.
    for (id, addr, server_id) in &bound {
        agent.release(id, *addr, *server_id).expect("RELEASE");
    }
    // RELEASEs get no answer: an evaluation made while some were still unread can already
    // read level 0 (below 75 %) with fewer than 20 free; the next one sees them all.
    let p = wait_pool(&d, "level 0 with all 20 free", |p| {
        p["level"] == 0 && p["free"] == 20
    });
    assert!(p["raised_at"].is_null(), "{p}");
    assert!(p["exhaustion_secs"].is_null(), "{p}");
    let line = wait_log(&d, "pool alarm cleared");
    eprintln!("log: {line}");
    assert!(line.contains("INFO") && line.contains(POOL), "{line}");
    let m = metric_level(&t);
    assert!(m.ends_with(" 0"), "{m}");
    let ev = wait_audit(&audit_file, "cleared");
    assert!(
        ev["finding"]
            .as_str()
            .unwrap_or_default()
            .contains("level=none"),
        "{ev}"
    );
    let stats = d.stats();
    assert_eq!(stats["total"]["release"], 19, "{stats}");
    assert!(d.process().is_running());
    d.stop();
}
