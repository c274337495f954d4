//! syncd as a supervised process, seen from outside: two appliances A and B in their own
//! namespaces on one bridge, the same cluster file except `node` and `listen`.
//!
//! - each one's `prodhcpctl ha status --json` shows the other peer `up`;
//! - SIGKILL of A's syncd (the pid `ha status` reports): A's supervisor restarts it
//!   (`restarts` 1) and both show the peer up again; stopping A ends its syncd;
//! - a reload that changes the `cluster` section is refused with the reason;
//! - B with another key: both show the peer down with authentication failures counted;
//! - a key file readable by others: prodhcpd exits 2 naming the file and its mode;
//! - without a cluster section, `ha status` says "standalone" and exits 0.
//!
//! Every wait polls with a deadline.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prodhcp_systests::config::{ServerConfig, SubnetConfig};
use prodhcp_systests::daemon::{Daemon, READY_TIMEOUT};
use prodhcp_systests::lab::Lab;
use prodhcp_systests::preflight;
use serde_json::Value;

const A_IP: &str = "198.18.0.1";
const B_IP: &str = "198.18.0.4";
const SYNCD_PORT: u16 = 647;
/// How long a peer may take to come up (or go down) before the test fails.
const LINK_DEADLINE: Duration = Duration::from_secs(10);

/// The lab: appliance namespaces `sa` and `sb` on bridge br0 (role `b` would be the lab's
/// bridge namespace).
fn lab(tag: &str) -> Lab {
    let lab = Lab::new(tag);
    lab.add_bridge("br0");
    lab.add_namespace("sa");
    lab.connect("sa", "a0", "br0", Some(&format!("{A_IP}/24")));
    lab.add_namespace("sb");
    lab.connect("sb", "b0", "br0", Some(&format!("{B_IP}/24")));
    lab
}

/// Writes a key file with `mode`; returns its path.
fn key_file(lab: &Lab, name: &str, fill: char, mode: u32) -> PathBuf {
    let path = lab.path(name);
    let text: String = std::iter::repeat_n(fill, 64).collect();
    std::fs::write(&path, format!("{text}\n")).expect("write key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod key");
    prodhcp_systests::give_to_test_user(&path);
    path
}

/// The cluster section shared by both appliances, but for `node` and `listen`.
fn cluster(node: &str, listen_ip: &str, key: &Path, replication: &str) -> String {
    format!(
        "cluster: (name: \"pop1\", node: \"{node}\", listen: \"{listen_ip}:{SYNCD_PORT}\", \
         peers: [(node: \"a\", address: \"{A_IP}:{SYNCD_PORT}\"), \
                 (node: \"b\", address: \"{B_IP}:{SYNCD_PORT}\")], \
         key_file: \"{}\", replication: \"{replication}\")",
        key.display()
    )
}

/// Appliance `role`'s configuration (its own state dir and control socket).
fn appliance(lab: &Lab, role: &str, ifname: &str, cluster: Option<String>) -> ServerConfig {
    let dir = lab.path(role);
    std::fs::create_dir_all(&dir).expect("appliance dir");
    let mut c = ServerConfig::new(&dir)
        .interface(ifname)
        .subnet(SubnetConfig::new(
            "198.18.0.0/24",
            "198.18.0.100-198.18.0.199",
        ));
    if let Some(section) = cluster {
        c = c.field(&section);
    }
    c
}

/// Writes `config` next to its state and starts prodhcpd in `role`'s namespace.
#[track_caller]
fn start<'l>(lab: &'l Lab, role: &str, config: &ServerConfig) -> Daemon<'l> {
    let path = lab.path(role).join("prodhcp.ron");
    config.write(&path);
    let d = Daemon::spawn(lab, &lab.ns(&format!("s{role}")), &path, config.clone());
    if let Err(why) = d.wait_ready(READY_TIMEOUT) {
        panic!(
            "prodhcpd {role} not ready: {why}\nstderr:\n{}",
            d.process().stderr()
        );
    }
    d
}

fn ha(d: &Daemon<'_>) -> Value {
    d.ctl_json(&["ha", "status"])
}

fn peer<'v>(st: &'v Value, node: &str) -> &'v Value {
    st["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["node"] == node))
        .unwrap_or_else(|| panic!("no peer {node} in {st}"))
}

/// Polls `ha status` of `d` until `ok` holds; panics with the last status after `deadline`.
#[track_caller]
fn wait_ha(d: &Daemon<'_>, what: &str, deadline: Duration, ok: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + deadline;
    loop {
        let st = ha(d);
        if ok(&st) {
            return st;
        }
        assert!(
            Instant::now() < until,
            "{what}: not within {deadline:?}; last ha status: {st}\nstderr:\n{}",
            d.process().stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn syncd_pid(st: &Value) -> u32 {
    st["syncd"]["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or_else(|| panic!("no syncd pid in {st}"))
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn two_appliances_see_each_other_and_a_killed_syncd_is_restarted() {
    if !preflight("ha_process", &[]) {
        return;
    }
    let lab = lab("haproc");
    let key = key_file(&lab, "cluster.key", '7', 0o600);
    let t0 = Instant::now();
    let a = start(
        &lab,
        "a",
        &appliance(&lab, "a", "a0", Some(cluster("a", A_IP, &key, "sync"))),
    );
    let b = start(
        &lab,
        "b",
        &appliance(&lab, "b", "b0", Some(cluster("b", B_IP, &key, "sync"))),
    );
    let up = |node: &'static str| move |st: &Value| peer(st, node)["link"] == "up";
    let st_a = wait_ha(&a, "A sees B up, A active", LINK_DEADLINE, |st| {
        up("b")(st) && st["role"] == "active" && peer(st, "b")["role"] == "standby"
    });
    let st_b = wait_ha(&b, "B sees A up, B standby", LINK_DEADLINE, |st| {
        up("a")(st) && st["role"] == "standby" && peer(st, "a")["role"] == "active"
    });
    println!(
        "start of A to peer up on both sides: {} ms",
        t0.elapsed().as_millis()
    );
    for (st, me, other, other_ip) in [(&st_a, "a", "b", B_IP), (&st_b, "b", "a", A_IP)] {
        assert_eq!(st["standalone"], false, "{st}");
        assert_eq!(st["cluster"], "pop1", "{st}");
        assert_eq!(st["node"], me, "{st}");
        assert_eq!(st["replication"], "sync", "{st}");
        assert!(
            st["role_detail"]["cause"]
                .as_str()
                .is_some_and(|c| !c.is_empty()),
            "{st}"
        );
        assert_eq!(st["syncd"]["state"], "running", "{st}");
        assert_eq!(st["syncd"]["restarts"], 0, "{st}");
        assert_eq!(st["peers"].as_array().map(Vec::len), Some(1), "{st}");
        let p = peer(st, other);
        assert_eq!(p["address"], format!("{other_ip}:{SYNCD_PORT}"), "{st}");
        assert!(p["since_unix_ms"].as_u64().is_some(), "{st}");
        for c in ["auth_failures", "decrypt_failures", "malformed", "oversize"] {
            assert_eq!(p["counters"][c], 0, "{c}: {st}");
        }
        assert!(p["counters"]["ups"].as_u64() >= Some(1), "{st}");
    }
    let (ok, text) = a.ctl_text(&["ha", "status"]);
    assert!(ok, "ha status (text) failed: {text}");
    assert!(
        text.contains("peer b (198.18.0.4:647): up since"),
        "text form: {text}"
    );

    // SIGKILL A's syncd: A's supervisor restarts it, both sides see the peer again.
    let old = syncd_pid(&st_a);
    assert!(alive(old), "syncd {old} is not running");
    let b_ups = peer(&st_b, "a")["counters"]["ups"].as_u64().expect("ups");
    let killed = Instant::now();
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).expect("kill syncd");
    wait_ha(&a, "A restarts syncd and sees B up", LINK_DEADLINE, |st| {
        st["syncd"]["restarts"] == 1
            && st["syncd"]["pid"]
                .as_u64()
                .is_some_and(|p| p != u64::from(old))
            && up("b")(st)
    });
    wait_ha(&b, "B sees A up again", LINK_DEADLINE, |st| {
        up("a")(st) && peer(st, "a")["counters"]["ups"].as_u64() > Some(b_ups)
    });
    println!(
        "SIGKILL of A's syncd to peer up again on both sides: {} ms",
        killed.elapsed().as_millis()
    );
    // A's syncd died: B took over (its share), then A came back, synced, and is standby; B
    // active again once both have each other's leases.
    let st_a = wait_ha(
        &a,
        "A standby after its syncd's restart",
        LINK_DEADLINE,
        |st| st["role"] == "standby",
    );
    let st_b = wait_ha(&b, "B active", LINK_DEADLINE, |st| st["role"] == "active");
    println!(
        "after A's syncd was killed: A {} ({}), B {} ({})",
        st_a["role"], st_a["role_detail"]["cause"], st_b["role"], st_b["role_detail"]["cause"]
    );
    let log_b = b.process().stderr();
    assert!(
        log_b.contains("role standby -> active-alone")
            && log_b.contains("role active-alone -> active"),
        "B's log does not tell its role transitions:\n{log_b}"
    );
    assert_eq!(st_a["syncd"]["state"], "running", "{st_a}");
    let log = a.process().stderr();
    assert!(
        log.contains("syncd died; restarting it"),
        "A's log does not tell the restart:\n{log}"
    );
    let log_b = b.process().stderr();
    assert!(
        log_b.contains("cluster peer down") && log_b.contains("closed by peer"),
        "B's log does not tell the transition with its cause:\n{log_b}"
    );

    // A reload that changes the cluster section is refused; the running one stays.
    let changed = appliance(&lab, "a", "a0", Some(cluster("a", A_IP, &key, "async")));
    std::fs::write(a.config_path(), changed.to_ron()).expect("rewrite A's config");
    let st = a.reload();
    assert_eq!(st["last_reload"]["ok"], false, "{st}");
    let msg = st["last_reload"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("cluster section"), "{st}");
    assert_eq!(ha(&a)["replication"], "sync");

    // Stopping A ends its syncd too.
    let pid = syncd_pid(&st_a);
    let status = a.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "A did not stop cleanly: {status:?}"
    );
    assert!(!alive(pid), "syncd {pid} outlived its supervisor");
    wait_ha(&b, "B sees A down after A stopped", LINK_DEADLINE, |st| {
        peer(st, "a")["link"] == "down"
    });
}

#[test]
fn a_peer_with_another_key_is_down_with_authentication_failures_on_both_sides() {
    if !preflight("ha_process", &[]) {
        return;
    }
    let lab = lab("hakey");
    let key_a = key_file(&lab, "a.key", '1', 0o600);
    let key_b = key_file(&lab, "b.key", '2', 0o600);
    let a = start(
        &lab,
        "a",
        &appliance(&lab, "a", "a0", Some(cluster("a", A_IP, &key_a, "sync"))),
    );
    let b = start(
        &lab,
        "b",
        &appliance(&lab, "b", "b0", Some(cluster("b", B_IP, &key_b, "sync"))),
    );
    for (d, other) in [(&a, "b"), (&b, "a")] {
        let st = wait_ha(d, "auth failures counted", LINK_DEADLINE, |st| {
            peer(st, other)["counters"]["auth_failures"].as_u64() > Some(0)
        });
        let p = peer(&st, other);
        assert_eq!(p["link"], "down", "{st}");
        assert_eq!(p["counters"]["ups"], 0, "{st}");
        assert_eq!(p["last_cause_kind"], "auth_failure", "{st}");
        assert!(
            p["last_cause"]
                .as_str()
                .is_some_and(|c| c.contains("authentication failed")),
            "{st}"
        );
        assert!(
            d.process().stderr().contains("cluster peer unreachable"),
            "no log line for the failed peer:\n{}",
            d.process().stderr()
        );
    }
}

#[test]
fn a_key_file_open_to_others_is_a_configuration_error_and_standalone_says_so() {
    if !preflight("ha_process", &[]) {
        return;
    }
    let lab = lab("hamode");
    let key = key_file(&lab, "open.key", '3', 0o644);
    let config = appliance(&lab, "a", "a0", Some(cluster("a", A_IP, &key, "sync")));
    let path = lab.path("a").join("prodhcp.ron");
    config.write(&path);
    let d = Daemon::spawn(&lab, &lab.ns("sa"), &path, config);
    let status = d
        .process()
        .wait_timeout(Duration::from_secs(10))
        .expect("prodhcpd did not exit with an unusable key file");
    let err = d.process().stderr();
    assert_eq!(
        status.code(),
        Some(2),
        "exit status {status}; stderr:\n{err}"
    );
    assert!(
        err.contains(&key.display().to_string()) && err.contains("0644"),
        "the message must name the file and its mode:\n{err}"
    );
    drop(d);
    // `--check-config` finds it too.
    let out = prodhcp_systests::daemon::check_config(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "--check-config: {err}");
    assert!(err.contains("0644"), "--check-config: {err}");

    // Without a cluster section: standalone, exit 0.
    let b = start(&lab, "b", &appliance(&lab, "b", "b0", None));
    let st = ha(&b);
    assert_eq!(st["standalone"], true, "{st}");
    assert_eq!(st["role"], "standalone (no cluster section)", "{st}");
    let (ok, text) = b.ctl_text(&["ha", "status"]);
    assert!(ok, "ha status failed: {text}");
    assert_eq!(text, "standalone (no cluster section)\n");
}
