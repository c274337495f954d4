//! Third-party programs the system tests drive: the real DHCP clients (dhclient, udhcpc,
//! dhcpcd), ISC dhcrelay and Kea's perfdhcp.
//!
//! Real clients run with a generated hook script that only logs the event and sets the
//! address with `ip addr replace`, so nothing touches the host's resolv.conf or routes.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::lab::{Lab, Proc};

/// A real DHCP client implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RealClient {
    /// ISC dhclient.
    Dhclient,
    /// busybox udhcpc.
    Udhcpc,
    /// dhcpcd.
    Dhcpcd,
}

impl RealClient {
    /// The program name (also what must be on PATH).
    pub fn program(self) -> &'static str {
        match self {
            Self::Dhclient => "dhclient",
            Self::Udhcpc => "udhcpc",
            Self::Dhcpcd => "dhcpcd",
        }
    }
}

/// A running real client and the log its hook writes.
#[derive(Debug)]
pub struct RealClientRun {
    /// The client process.
    pub proc: Proc,
    /// One line per hook invocation: `event=<reason> ip=<addr> if=<ifname>`.
    pub events: PathBuf,
}

impl RealClientRun {
    /// The hook log so far.
    pub fn events(&self) -> String {
        fs::read_to_string(&self.events).unwrap_or_default()
    }

    /// Waits (≤ `timeout`) for a bound event and returns its address.
    pub fn wait_bound(&self, timeout: Duration) -> Option<Ipv4Addr> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(ip) = bound_address(&self.events()) {
                return Some(ip);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The address of the first bound-type event in a hook log.
pub fn bound_address(log: &str) -> Option<Ipv4Addr> {
    log.lines().find_map(|line| {
        let mut event = None;
        let mut ip = None;
        for field in line.split_whitespace() {
            if let Some(e) = field.strip_prefix("event=") {
                event = Some(e);
            } else if let Some(a) = field.strip_prefix("ip=") {
                ip = a.parse().ok();
            }
        }
        match event? {
            "BOUND" | "REBOOT" | "bound" => ip,
            _ => None,
        }
    })
}

/// Writes the hook script for all three clients: it logs and sets `<ip>/<prefix_len>`.
/// dhclient and dhcpcd pass `$reason` and `$new_ip_address`; udhcpc passes the event as
/// `$1` and the address as `$ip`.
pub fn write_hook(lab: &Lab, name: &str, prefix_len: u8) -> (PathBuf, PathBuf) {
    let script = lab.path(&format!("{name}.hook"));
    let events = lab.path(&format!("{name}.events"));
    let text = format!(
        r#"#!/bin/sh
# Test hook: log the event, set the address; never touches resolv.conf or routes.
ev="${{reason:-$1}}"
addr="${{new_ip_address:-$ip}}"
echo "event=$ev ip=$addr if=$interface" >> '{events}'
case "$ev" in
  BOUND|RENEW|REBIND|REBOOT|bound|renew)
    [ -n "$addr" ] && ip addr replace "$addr/{prefix_len}" dev "$interface" ;;
esac
exit 0
"#,
        events = events.display()
    );
    fs::write(&script, text).expect("write hook script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod hook");
    (script, events)
}

/// Starts a real client in the foreground on `ifname` in namespace `ns`.
pub fn start_real_client(lab: &Lab, kind: RealClient, ns: &str, ifname: &str) -> RealClientRun {
    let name = format!("{}-{ifname}", kind.program());
    let (hook, events) = write_hook(lab, &name, 24);
    let hook_s = hook.to_string_lossy().into_owned();
    let proc = match kind {
        RealClient::Dhclient => {
            let lf = lab.path(&format!("{name}.leases"));
            let pf = lab.path(&format!("{name}.pid"));
            lab.spawn(
                ns,
                &name,
                &[
                    "dhclient",
                    "-4",
                    "-d",
                    "-v",
                    "-sf",
                    &hook_s,
                    "-lf",
                    &lf.to_string_lossy(),
                    "-pf",
                    &pf.to_string_lossy(),
                    ifname,
                ],
            )
        }
        RealClient::Udhcpc => lab.spawn(
            ns,
            &name,
            &[
                "udhcpc", "-f", "-q", "-n", "-t", "5", "-T", "2", "-i", ifname, "-s", &hook_s,
            ],
        ),
        RealClient::Dhcpcd => {
            let conf = lab.path(&format!("{name}.conf"));
            fs::write(&conf, "").expect("write empty dhcpcd.conf");
            lab.spawn(
                ns,
                &name,
                &[
                    "dhcpcd",
                    "-4",
                    "-1",
                    "-B",
                    "-t",
                    "30",
                    "--noarp",
                    "--noipv4ll",
                    "-f",
                    &conf.to_string_lossy(),
                    "-c",
                    &hook_s,
                    ifname,
                ],
            )
        }
    };
    RealClientRun { proc, events }
}

/// Starts `dhcrelay -4 -d -id <down>... -iu <up> <server>` in `ns` and waits (≤ 10 s) until
/// it reports every interface.
#[track_caller]
pub fn start_dhcrelay(lab: &Lab, ns: &str, downs: &[&str], up: &str, server: Ipv4Addr) -> Proc {
    let server_s = server.to_string();
    let mut cmd = vec!["dhcrelay", "-4", "-d"];
    for d in downs {
        cmd.extend_from_slice(&["-id", d]);
    }
    cmd.extend_from_slice(&["-iu", up, &server_s]);
    let p = lab.spawn(ns, "dhcrelay", &cmd);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = p.stderr() + &p.stdout();
        if downs
            .iter()
            .chain([&up])
            .all(|i| log.contains(&format!("/{i}")))
        {
            return p;
        }
        if let Some(st) = p.try_wait() {
            panic!("dhcrelay exited with {st}: {log}");
        }
        assert!(
            Instant::now() < deadline,
            "dhcrelay not ready in 10 s: {log}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// perfdhcp's counters for one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerfResult {
    /// DISCOVERs sent.
    pub discover_sent: u64,
    /// OFFERs received.
    pub offer_received: u64,
    /// REQUESTs sent.
    pub request_sent: u64,
    /// ACKs received.
    pub ack_received: u64,
    /// The full output.
    pub output: String,
}

impl PerfResult {
    /// Fraction of DISCOVERs that ended in an ACK.
    pub fn completion(&self) -> f64 {
        if self.discover_sent == 0 {
            return 0.0;
        }
        self.ack_received as f64 / self.discover_sent as f64
    }
}

/// Parses perfdhcp's "Statistics for: DISCOVER-OFFER / REQUEST-ACK" sections.
pub fn parse_perfdhcp(output: &str) -> PerfResult {
    let mut r = PerfResult {
        output: output.to_string(),
        ..Default::default()
    };
    let mut section = "";
    for line in output.lines() {
        let line = line.trim();
        if line.contains("Statistics for: DISCOVER-OFFER") {
            section = "do";
        } else if line.contains("Statistics for: REQUEST-ACK") {
            section = "ra";
        }
        let num = |prefix: &str| {
            line.strip_prefix(prefix)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
        };
        if let Some(n) = num("sent packets:") {
            match section {
                "do" => r.discover_sent = n,
                "ra" => r.request_sent = n,
                _ => {}
            }
        }
        if let Some(n) = num("received packets:") {
            match section {
                "do" => r.offer_received = n,
                "ra" => r.ack_received = n,
                _ => {}
            }
        }
    }
    r
}

/// Runs perfdhcp in relay mode from `local` (an address of `ns`, used as giaddr) against
/// `server`: `clients` distinct MACs, `rate` exchanges/s for `secs` seconds. Bounded by
/// `secs + 30` s.
pub fn run_perfdhcp(
    lab: &Lab,
    ns: &str,
    local: Ipv4Addr,
    server: Ipv4Addr,
    clients: u32,
    rate: u32,
    secs: u32,
) -> PerfResult {
    let (local, server) = (local.to_string(), server.to_string());
    let (clients, rate, secs_s) = (clients.to_string(), rate.to_string(), secs.to_string());
    let out = lab.run_timeout(
        ns,
        &[
            "perfdhcp", "-4", "-l", &local, "-R", &clients, "-r", &rate, "-p", &secs_s, "-d", "2",
            &server,
        ],
        Duration::from_secs(u64::from(secs) + 30),
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    parse_perfdhcp(&text)
}

/// Starts perfdhcp as a background load (same arguments as [`run_perfdhcp`]).
pub fn spawn_perfdhcp(
    lab: &Lab,
    ns: &str,
    local: Ipv4Addr,
    server: Ipv4Addr,
    clients: u32,
    rate: u32,
    secs: u32,
) -> Proc {
    let (local, server) = (local.to_string(), server.to_string());
    let (clients, rate, secs_s) = (clients.to_string(), rate.to_string(), secs.to_string());
    lab.spawn(
        ns,
        "perfdhcp",
        &[
            "perfdhcp", "-4", "-l", &local, "-R", &clients, "-r", &rate, "-p", &secs_s, "-d", "2",
            &server,
        ],
    )
}

/// Starts `dhcpperf dora` as a background load in relay mode from `relay` (an address of `ns`,
/// bound on port 67 and used as giaddr) against `server`: `rate` new clients per second for
/// `secs` seconds, MACs `02:SEED:..`, every ACK recorded to `record` (`--record`). Bounded by
/// dhcpperf's own `--hard-deadline` of `secs + 60` s.
#[allow(clippy::too_many_arguments)]
pub fn spawn_dhcpperf_dora(
    lab: &Lab,
    ns: &str,
    relay: Ipv4Addr,
    server: Ipv4Addr,
    rate: u32,
    secs: u32,
    seed: u8,
    record: &Path,
) -> Proc {
    let bin = crate::daemon::binary("dhcpperf");
    let (relay, server) = (relay.to_string(), server.to_string());
    let (rate, dur) = (rate.to_string(), format!("{secs}s"));
    let hard = format!("{}s", secs + 60);
    let seed = seed.to_string();
    lab.spawn(
        ns,
        "dhcpperf",
        &[
            bin.to_str().expect("utf-8 path"),
            "dora",
            "--server",
            &server,
            "--relay-ip",
            &relay,
            "--rate",
            &rate,
            "--duration",
            &dur,
            "--seed",
            &seed,
            "--give-up",
            "30s",
            "--hard-deadline",
            &hard,
            "--record",
            record.to_str().expect("utf-8 path"),
            "--json",
        ],
    )
}

/// Starts `dhcpperf mix` as a background load in relay mode from `relay` against `server`:
/// `prebind` clients bound first, then for `secs` seconds `rate` new clients, `renew_rate`
/// renewals and `release_rate` releases per second; every ACK and RELEASE recorded to `record`.
/// Bounded by dhcpperf's own `--hard-deadline` of `secs + 90` s.
#[allow(clippy::too_many_arguments)]
pub fn spawn_dhcpperf_mix(
    lab: &Lab,
    ns: &str,
    relay: Ipv4Addr,
    server: Ipv4Addr,
    (prebind, rate, renew_rate, release_rate): (u32, u32, u32, u32),
    secs: u32,
    seed: u8,
    record: &Path,
) -> Proc {
    let bin = crate::daemon::binary("dhcpperf");
    let s = |v: u32| v.to_string();
    let (relay, server) = (relay.to_string(), server.to_string());
    let (prebind, rate, renew, release) = (s(prebind), s(rate), s(renew_rate), s(release_rate));
    let dur = format!("{secs}s");
    let hard = format!("{}s", secs + 90);
    let seed = seed.to_string();
    lab.spawn(
        ns,
        "dhcpperf-mix",
        &[
            bin.to_str().expect("utf-8 path"),
            "mix",
            "--server",
            &server,
            "--relay-ip",
            &relay,
            "--prebind",
            &prebind,
            "--rate",
            &rate,
            "--renew-rate",
            &renew,
            "--release-rate",
            &release,
            "--duration",
            &dur,
            "--seed",
            &seed,
            "--give-up",
            "30s",
            "--hard-deadline",
            &hard,
            "--record",
            record.to_str().expect("utf-8 path"),
            "--json",
        ],
    )
}

/// Writes `export` (the JSON leases of `prodhcpctl leases export`) to `path` and runs
/// `dhcpperf verify --json` of `record` against it. Returns whether it passed (exit 0) and its
/// JSON report; panics when dhcpperf cannot run or says something else than pass/violations.
pub fn dhcpperf_verify(
    record: &Path,
    export: &[serde_json::Value],
    path: &Path,
) -> (bool, serde_json::Value) {
    std::fs::write(path, serde_json::to_vec(export).expect("export serializes"))
        .expect("write export file");
    let bin = crate::daemon::binary("dhcpperf");
    let out = crate::lab::run_bounded(
        &[
            bin.to_str().expect("utf-8 path"),
            "verify",
            "--record",
            record.to_str().expect("utf-8 path"),
            "--export",
            path.to_str().expect("utf-8 path"),
            "--json",
        ],
        Duration::from_secs(120),
    );
    let code = out.status.code();
    assert!(
        matches!(code, Some(0) | Some(1)),
        "dhcpperf verify exited {:?}: {}{}",
        code,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "dhcpperf verify printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (code == Some(0), report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_address_reads_each_clients_events() {
        assert_eq!(bound_address("event=PREINIT ip= if=e1\n"), None);
        assert_eq!(
            bound_address("event=PREINIT ip= if=e1\nevent=BOUND ip=198.18.0.100 if=e1\n"),
            Some(Ipv4Addr::new(198, 18, 0, 100))
        );
        assert_eq!(
            bound_address("event=deconfig ip= if=e\nevent=bound ip=198.18.1.101 if=e\n"),
            Some(Ipv4Addr::new(198, 18, 1, 101))
        );
    }

    #[test]
    fn parses_perfdhcp_statistics() {
        let out = "\
***Rate statistics***
Rate: 499.8 4-way exchanges/second, expected rate: 500

***Statistics for: DISCOVER-OFFER***
sent packets: 2500
received packets: 2498
drops: 2

***Statistics for: REQUEST-ACK***
sent packets: 2498
received packets: 2497
drops: 1
";
        let r = parse_perfdhcp(out);
        assert_eq!((r.discover_sent, r.offer_received), (2500, 2498));
        assert_eq!((r.request_sent, r.ack_received), (2498, 2497));
        assert!((r.completion() - 0.9988).abs() < 1e-9);
    }
}
