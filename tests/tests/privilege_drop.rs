//! prodhcpd started as root with `user: "nobody"` (issue 11 item 3, RELIABILITY.md F1): it
//! serves real clients (dhcpperf), and no process of it — supervisor, workers, audit process —
//! has uid or gid 0, more capabilities than its role keeps, a bounding set beyond
//! CAP_NET_BIND_SERVICE/CAP_NET_RAW/CAP_NET_ADMIN, or `NoNewPrivs` unset. The same holds after a
//! worker is SIGKILLed and restarted and after a SIGHUP reload that adds a pool and a worker
//! (the new worker's socket joins the port-67 group as the service user). A `user` that does
//! not exist is refused by `--check-config` (exit 2), and a start as another non-root user is
//! refused (exit 2).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prodhcp_systests::client::{Extras, Identity, TestClient};
use prodhcp_systests::config::{ServerConfig, SubnetConfig};
use prodhcp_systests::daemon::{binary, check_config, check_table, Daemon};
use prodhcp_systests::lab::run_bounded;
use prodhcp_systests::packet::test_mac;
use prodhcp_systests::preflight;
use prodhcp_systests::tools::{dhcpperf_verify, spawn_dhcpperf_dora};
use prodhcp_systests::topo::{Topology, LOAD_IP, SERVER_IP};

/// CAP_NET_BIND_SERVICE (10), CAP_NET_RAW (13), CAP_NET_ADMIN (12).
const SERVICE_CAPS: u64 = 0x3400;
const BIND: u64 = 1 << 10;
const RAW: u64 = 1 << 13;
/// A second address of the load namespace, relay of the pool the reload adds.
const AGENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 4);

/// The `Key:` lines of /proc/PID/status.
fn proc_status(pid: u32) -> Option<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect(),
    )
}

/// Every descendant of `root` (children, their children …), from /proc/*/status PPid.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some(ppid) = proc_status(pid)
            .and_then(|s| s.get("PPid").cloned())
            .and_then(|p| p.parse::<u32>().ok())
        {
            parent_of.push((pid, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(child, parent) in &parent_of {
            if parent == p && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// The capabilities a process of prodhcpd may hold, by what it runs:
/// (effective, permitted/inheritable/ambient).
fn allowed(cmd: &str) -> (&'static str, u64, u64) {
    let sub = cmd.split_whitespace().nth(1).unwrap_or("");
    match sub {
        "worker" => ("worker", BIND | RAW, BIND | RAW),
        "syncd" => ("syncd", SERVICE_CAPS, SERVICE_CAPS),
        "audit" => ("audit", 0, 0),
        // The supervisor (or a short-lived export child forked from it).
        _ => ("supervisor", BIND, SERVICE_CAPS),
    }
}

fn hex(status: &BTreeMap<String, String>, key: &str) -> u64 {
    let v = status
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in /proc status"));
    u64::from_str_radix(v, 16).unwrap_or_else(|e| panic!("{key}: {v}: {e}"))
}

/// Checks the supervisor and every descendant; returns the roles seen.
#[track_caller]
fn check_all(supervisor: u32, when: &str) -> Vec<&'static str> {
    let mut pids = vec![supervisor];
    pids.extend(descendants(supervisor));
    let mut roles = Vec::new();
    for pid in pids {
        let Some(st) = proc_status(pid) else {
            continue; // ended meanwhile (an export child)
        };
        let cmd = cmdline(pid);
        let (role, eff, others) = allowed(&cmd);
        let what = format!("{when}: pid {pid} ({role}: {cmd})");
        for key in ["Uid", "Gid"] {
            let ids = &st[key];
            assert!(
                ids.split_whitespace().all(|id| id != "0"),
                "{what}: {key} {ids} has a root id"
            );
        }
        assert!(
            !st["Groups"].split_whitespace().any(|g| g == "0"),
            "{what}: in group 0: {}",
            st["Groups"]
        );
        let e = hex(&st, "CapEff");
        assert_eq!(e & !eff, 0, "{what}: CapEff {e:#x} beyond {eff:#x}");
        for key in ["CapPrm", "CapInh", "CapAmb"] {
            let v = hex(&st, key);
            assert_eq!(v & !others, 0, "{what}: {key} {v:#x} beyond {others:#x}");
        }
        let b = hex(&st, "CapBnd");
        assert_eq!(
            b & !SERVICE_CAPS,
            0,
            "{what}: CapBnd {b:#x} beyond {SERVICE_CAPS:#x}"
        );
        assert_eq!(st["NoNewPrivs"], "1", "{what}: NoNewPrivs unset");
        roles.push(role);
    }
    roles
}

/// Runs `dhcpperf dora` for `secs` s at `rate`/s from the load namespace and checks every ACK
/// against the export; returns the ACKs.
#[track_caller]
fn serve_load(t: &Topology, d: &Daemon<'_>, seed: u8, secs: u32, rate: u32) -> u64 {
    let record = t.lab.path(&format!("acks-{seed}.jsonl"));
    let load = spawn_dhcpperf_dora(
        &t.lab, &t.load, LOAD_IP, SERVER_IP, rate, secs, seed, &record,
    );
    let exit = load.wait_timeout(Duration::from_secs(u64::from(secs) + 70));
    assert!(
        exit.is_some_and(|s| s.code() == Some(0)),
        "dhcpperf ended with {exit:?}: {}\n{}",
        load.stdout(),
        load.stderr()
    );
    let (passed, report) = dhcpperf_verify(
        &record,
        &d.export(),
        &t.lab.path(&format!("export-{seed}.json")),
    );
    assert!(passed, "dhcpperf verify: {report:#}");
    let acks = report["acks"].as_u64().expect("verify report: acks");
    let want = u64::from(rate * secs) / 2;
    assert!(
        acks >= want,
        "only {acks} ACKs (want ≥ {want}) under the drop: {report}\nprodhcpd stderr:\n{}",
        d.process().stderr()
    );
    acks
}

#[test]
fn prodhcpd_started_as_root_drops_to_the_user_in_every_process() {
    if !preflight("privilege_drop", &[]) {
        return;
    }
    let t = Topology::new("privdr");
    // `nobody` must reach its state, socket and audit directories inside the scratch dir.
    std::fs::set_permissions(t.lab.dir(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod lab dir");
    t.lab.add_address("l", "l0", "198.18.0.4/24");
    let audit_file = t.lab.path("audit/audit.jsonl");
    let cfg = t
        .standard_config()
        .field("user: \"nobody\"")
        .field(&format!(
            "audit: (file: Some(\"{}\"))",
            audit_file.display()
        ));
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    let sup = d.pid();

    let acks = serve_load(&t, &d, 0x51, 3, 100);
    let roles = check_all(sup, "after start");
    assert_eq!(
        roles.iter().filter(|r| **r == "worker").count(),
        2,
        "{roles:?}"
    );
    assert!(roles.contains(&"audit"), "no audit process seen: {roles:?}");
    let nobody = proc_status(sup).expect("supervisor status")["Uid"].clone();
    assert!(nobody.starts_with("65534"), "supervisor uid {nobody}");
    // What the service writes is the user's: the table, the audit file.
    let table_meta = std::fs::metadata(cfg.state_dir.join("leases.table")).expect("table");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&table_meta), 65534);
    assert_eq!(table_meta.permissions().mode() & 0o777, 0o600);
    let audit_text = std::fs::read_to_string(&audit_file).expect("audit file written");
    assert!(
        audit_text.contains("lease"),
        "no lease record in the audit file"
    );

    // A worker killed with SIGKILL comes back, still not root.
    let victim = d.worker_pids()[0];
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).expect("kill worker");
    let deadline = Instant::now() + Duration::from_secs(15);
    while d.worker_pids().contains(&victim) || d.wait_ready(Duration::from_secs(1)).is_err() {
        assert!(Instant::now() < deadline, "worker {victim} not restarted");
        std::thread::sleep(Duration::from_millis(100));
    }
    check_all(sup, "after a worker restart");

    // The audit process, killed, comes back as the user too.
    let audit_pid = |sup: u32| {
        descendants(sup)
            .into_iter()
            .find(|p| cmdline(*p).split_whitespace().nth(1) == Some("audit"))
    };
    let old_audit = audit_pid(sup).expect("an audit process");
    kill(Pid::from_raw(old_audit as i32), Signal::SIGKILL).expect("kill audit");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match audit_pid(sup) {
            Some(p) if p != old_audit => break,
            _ => {
                assert!(Instant::now() < deadline, "audit process not restarted");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let roles = check_all(sup, "after an audit restart");
    assert!(roles.contains(&"audit"), "{roles:?}");

    // Reload: one more worker (its port-67 socket is made by the service user) and a new
    // pool behind a new relay address.
    let new_cfg = cfg.clone().subnet(
        SubnetConfig::new("198.18.96.0/24", "198.18.96.10-198.18.96.200").relay("198.18.0.4"),
    );
    let new_cfg = ServerConfig {
        workers: 3,
        ..new_cfg
    };
    new_cfg.write(d.config_path());
    let st = d.reload();
    assert_eq!(
        st["last_reload"]["ok"],
        true,
        "reload under the drop failed: {st}\nstderr:\n{}",
        d.process().stderr()
    );
    d.wait_ready(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("workers after the reload: {e}"));
    let roles = check_all(sup, "after the reload");
    assert_eq!(
        roles.iter().filter(|r| **r == "worker").count(),
        3,
        "{roles:?}"
    );
    let agent = TestClient::relay(&t.load, AGENT_IP, SERVER_IP).expect("agent socket");
    let mut in_new_pool = 0;
    for n in 0..20u32 {
        let b = agent
            .dora(&Identity::mac(test_mac(0x62, n)), &Extras::default())
            .unwrap_or_else(|e| panic!("client {n} in the new pool: {e:?}"));
        assert_eq!(b.address.octets()[..3], [198, 18, 96], "{}", b.address);
        in_new_pool += 1;
    }
    let acks_after = serve_load(&t, &d, 0x52, 2, 100);
    check_all(sup, "after serving again");

    // `user` is read at start only: a reload that changes it is refused, clearly.
    let mut other_user = new_cfg.clone();
    other_user.extra = other_user
        .extra
        .iter()
        .map(|l| l.replace("\"nobody\"", "\"daemon\""))
        .collect();
    other_user.write(d.config_path());
    let st = d.reload();
    assert_eq!(st["last_reload"]["ok"], false, "{st}");
    assert!(
        st["last_reload"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("`user` is read at start only")),
        "{st}"
    );
    new_cfg.write(d.config_path());
    let cfg_path = d.config_path().to_path_buf();
    let status = d.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "prodhcpd did not stop cleanly as the user: {status:?}"
    );

    // The table is the user's (mode 0600): the offline check as root accepts it, and the
    // permission check still refuses one writable by its group (exit 3).
    let out = check_table(&cfg_path);
    assert!(
        out.status.success(),
        "check-table of the user's table: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let table = new_cfg.state_dir.join("leases.table");
    std::fs::set_permissions(&table, std::fs::Permissions::from_mode(0o660)).expect("chmod");
    let refused = Daemon::spawn(&t.lab, &t.srv, &cfg_path, new_cfg.clone());
    let code = refused.process().wait_timeout(Duration::from_secs(20));
    assert_eq!(
        code.and_then(|c| c.code()),
        Some(3),
        "a group-writable table was not refused: {}",
        refused.process().stderr()
    );
    assert!(refused
        .process()
        .stderr()
        .contains("writable by group or others"));
    std::fs::set_permissions(&table, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    // Started again as root over the user's files: it drops again and serves.
    let again = Daemon::start(&t.lab, &t.srv, &new_cfg);
    check_all(again.pid(), "after a second start");
    let b = agent
        .dora(&Identity::mac(test_mac(0x63, 1)), &Extras::default())
        .unwrap_or_else(|e| panic!("client after the second start: {e:?}"));
    assert_eq!(b.address.octets()[..3], [198, 18, 96]);
    assert!(again.stop().is_some_and(|s| s.success()));
    eprintln!(
        "privilege_drop: {acks} ACKs after start, {in_new_pool} in the reloaded pool, \
         {acks_after} after the reload; every process uid 65534, caps within its role"
    );
}

#[test]
fn a_user_that_does_not_exist_is_refused_by_check_config() {
    if !preflight("privilege_drop_unknown_user", &[]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = ServerConfig::new(dir.path())
        .subnet(SubnetConfig::new(
            "198.18.0.0/24",
            "198.18.0.100-198.18.0.199",
        ))
        .field("user: \"prodhcp-no-such-user\"");
    let path = dir.path().join("prodhcp.ron");
    cfg.write(&path);
    let out = check_config(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("user `prodhcp-no-such-user`") && stderr.contains("does not exist"),
        "unclear message: {stderr}"
    );
}

#[test]
fn another_non_root_user_is_refused_at_start() {
    if !preflight("privilege_drop_wrong_user", &["setpriv"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cfg = ServerConfig::new(dir.path())
        .subnet(SubnetConfig::new(
            "198.18.0.0/24",
            "198.18.0.100-198.18.0.199",
        ))
        .field("user: \"daemon\"");
    let path = dir.path().join("prodhcp.ron");
    cfg.write(&path);
    let bin = binary("prodhcpd");
    let out = run_bounded(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            bin.to_str().expect("utf-8 path"),
            "--config",
            path.to_str().expect("utf-8 path"),
        ],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("neither root nor the configured user `daemon`"),
        "unclear message: {stderr}"
    );
    assert!(
        !cfg.state_dir.join("leases.table").exists(),
        "a table was created before the refusal"
    );
}
