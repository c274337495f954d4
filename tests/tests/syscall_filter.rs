//! The hardened unit's `SystemCallFilter=@system-service` and `~@resources`
//! (packaging/systemd/prodhcpd.service) allow every system call prodhcpd makes (issue 11).
//! No systemd runs where the tests run, so the filter cannot be tried for real: instead the
//! daemon (supervisor, workers, audit process) runs under `strace -f` while it starts, serves
//! direct (broadcast) and relayed dhcpperf clients, reloads, answers prodhcpctl and stops, and every system
//! call name in the trace is looked up in the sets `systemd-analyze syscall-filter` prints.
//! The names used are printed (the report lists them).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prodhcp_systests::daemon::{all_workers_running, binary, ctl_at};
use prodhcp_systests::lab::run_bounded;
use prodhcp_systests::preflight;
use prodhcp_systests::tools::spawn_dhcpperf_dora;
use prodhcp_systests::topo::{Topology, LOAD_IP, SERVER_IP};

/// The groups of `systemd-analyze syscall-filter`, each with its system calls and included
/// groups (`@…`) as printed.
fn filter_groups() -> BTreeMap<String, Vec<String>> {
    let out = run_bounded(
        &["systemd-analyze", "syscall-filter"],
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "systemd-analyze syscall-filter failed"
    );
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with('@') {
            current = Some(line.trim().to_string());
            groups.entry(line.trim().to_string()).or_default();
        } else if line.starts_with(' ') {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if let Some(g) = &current {
                groups.get_mut(g).expect("group").push(t.to_string());
            }
        } else {
            current = None;
        }
    }
    groups
}

/// The system calls of `group`, with its included groups expanded.
fn expand(groups: &BTreeMap<String, Vec<String>>, group: &str, out: &mut BTreeSet<String>) {
    for e in groups
        .get(group)
        .unwrap_or_else(|| panic!("no group {group}"))
    {
        if e.starts_with('@') {
            expand(groups, e, out);
        } else {
            out.insert(e.clone());
        }
    }
}

/// System call names in an `strace -f -o` trace (`PID name(…`, `PID <... name resumed>`).
fn traced_calls(trace: &str) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for line in trace.lines() {
        let rest = line
            .split_once(' ')
            .map(|(_, r)| r.trim_start())
            .unwrap_or("");
        let name: String = if let Some(r) = rest.strip_prefix("<... ") {
            r.split_whitespace().next().unwrap_or("").to_string()
        } else {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        // Signals (`--- SIGCHLD …`) and exits (`+++ exited …`) are not calls.
        if !name.is_empty() && rest[name.len().min(rest.len())..].starts_with(['(', ' ']) {
            *calls.entry(name).or_insert(0) += 1;
        }
    }
    calls
}

#[test]
fn daemon_system_calls_are_inside_the_units_filter() {
    if !preflight("syscall_filter", &["strace", "systemd-analyze"]) {
        return;
    }
    let groups = filter_groups();
    let mut allowed = BTreeSet::new();
    expand(&groups, "@system-service", &mut allowed);
    let mut resources = BTreeSet::new();
    expand(&groups, "@resources", &mut resources);
    let allowed: BTreeSet<String> = allowed.difference(&resources).cloned().collect();
    assert!(allowed.contains("read") && !allowed.contains("setpriority"));

    let t = Topology::new("sysc");
    let audit_file = t.lab.path("audit.jsonl");
    let spool = t.lab.path("spool");
    let cfg = t.standard_config().field(&format!(
        "audit: (targets: [], file: Some(\"{}\"), spool_dir: \"{}\")",
        audit_file.display(),
        spool.display()
    ));
    let config_path = t.lab.path("prodhcp.ron");
    cfg.write(&config_path);
    let trace = t.lab.path("strace.out");
    let bin = binary("prodhcpd");
    let strace = t.lab.spawn(
        &t.srv,
        "strace",
        &[
            "strace",
            "-f",
            "-qq",
            "-o",
            &trace.to_string_lossy(),
            "--",
            &bin.to_string_lossy(),
            "--config",
            &config_path.to_string_lossy(),
        ],
    );
    // Ready: the control socket answers and every worker runs (slower under strace).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = ctl_at(&cfg.control_socket, &["status"]);
        if st.json.as_ref().is_some_and(all_workers_running) {
            break;
        }
        assert!(
            strace.is_running(),
            "prodhcpd under strace exited: {}",
            strace.stderr()
        );
        assert!(
            Instant::now() < deadline,
            "prodhcpd under strace not ready: {}",
            st.stderr
        );
        thread::sleep(Duration::from_millis(200));
    }

    // Serve: direct clients on the served segment (broadcast, raw replies) and a relayed
    // load, both dhcpperf.
    let client = t.add_client("br0", None, None);
    let perf = binary("dhcpperf");
    let direct = t.lab.spawn(
        &client.ns,
        "dhcpperf-direct",
        &[
            &perf.to_string_lossy(),
            "dora",
            "--direct",
            &client.ifname,
            "--server",
            &SERVER_IP.to_string(),
            "--rate",
            "20",
            "--duration",
            "2s",
            "--seed",
            "93",
            "--give-up",
            "20s",
            "--hard-deadline",
            "60s",
            "--json",
        ],
    );
    let record = t.lab.path("acks.jsonl");
    let load = spawn_dhcpperf_dora(&t.lab, &t.load, LOAD_IP, SERVER_IP, 200, 3, 0x5c, &record);
    let status = direct.wait_timeout(Duration::from_secs(90));
    assert!(
        status.is_some_and(|s| s.success()),
        "dhcpperf --direct: {status:?}: {}",
        direct.stderr()
    );
    let report: serde_json::Value =
        serde_json::from_str(&direct.stdout()).unwrap_or(serde_json::Value::Null);
    eprintln!("syscall_filter: direct clients: {report}");
    let status = load.wait_timeout(Duration::from_secs(90));
    assert!(status.is_some_and(|s| s.success()), "dhcpperf: {status:?}");
    let acks = fs::read_to_string(&record)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(acks > 100, "only {acks} ACKs under strace");

    // Operator actions: status, stats, export, a reload.
    for args in [&["status"][..], &["stats"], &["leases", "export"]] {
        let o = ctl_at(&cfg.control_socket, args);
        assert!(o.status.success(), "prodhcpctl {args:?}: {}", o.stderr);
    }
    let daemon_pid = fs::read_to_string(format!(
        "/proc/{}/task/{}/children",
        strace.pid(),
        strace.pid()
    ))
    .ok()
    .and_then(|s| {
        s.split_whitespace()
            .next()
            .and_then(|p| p.parse::<i32>().ok())
    })
    .expect("prodhcpd's PID (strace's child)");
    kill(Pid::from_raw(daemon_pid), Signal::SIGHUP).expect("SIGHUP");
    thread::sleep(Duration::from_secs(2));
    let o = ctl_at(&cfg.control_socket, &["status"]);
    assert!(o.status.success(), "status after reload: {}", o.stderr);
    kill(Pid::from_raw(daemon_pid), Signal::SIGTERM).expect("SIGTERM");
    let st = strace.wait_timeout(Duration::from_secs(30));
    assert!(st.is_some(), "prodhcpd did not stop under strace");

    let calls = traced_calls(&fs::read_to_string(&trace).expect("trace"));
    assert!(
        calls.contains_key("recvmmsg")
            || calls.contains_key("recvmsg")
            || calls.contains_key("recvfrom")
    );
    let outside: Vec<&String> = calls.keys().filter(|c| !allowed.contains(*c)).collect();
    eprintln!(
        "syscall_filter: {} distinct system calls, {} calls traced: {}",
        calls.len(),
        calls.values().sum::<u64>(),
        calls.keys().cloned().collect::<Vec<_>>().join(" ")
    );
    assert!(
        outside.is_empty(),
        "system calls outside @system-service minus @resources: {outside:?}"
    );
}
