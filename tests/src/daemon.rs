//! The real `prodhcpd` under test, and `prodhcpctl` to drive it.
//!
//! Binaries come from `PRODHCP_BIN_DIR` when set, otherwise from the directory two levels
//! above the running test executable (`target/<profile>/`, since test executables live in
//! `target/<profile>/deps/`). The test script builds them before running the tests.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::config::ServerConfig;
use crate::lab::{run_bounded, Lab, Proc};

/// How long [`Daemon::start`] waits for every worker to report `running`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stop waits after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Bound on one prodhcpctl invocation.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(20);

/// The directory holding prodhcpd and prodhcpctl.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PRODHCP_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("cannot derive target dir from {}", exe.display()))
}

/// The path of binary `name` in [`bin_dir`]; panics with a clear message when it is missing.
#[track_caller]
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{name} not found at {} — build it first (`cargo build -p prodhcp-supervisor -p prodhcp-ctl --bins`) \
         or set PRODHCP_BIN_DIR to the directory that holds it",
        path.display()
    );
    path
}

/// The result of one prodhcpctl invocation.
#[derive(Debug)]
pub struct CtlOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Stdout as text.
    pub stdout: String,
    /// Stderr as text.
    pub stderr: String,
    /// Stdout parsed as JSON, when it is JSON.
    pub json: Option<Value>,
}

impl CtlOutput {
    fn from_output(out: Output) -> Self {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        Self {
            status: out.status,
            json: serde_json::from_str(stdout.trim()).ok(),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs `prodhcpctl --socket SOCKET --json ARGS...` on the host (the control socket is a
/// path-named Unix socket, reachable from any network namespace).
pub fn ctl_at(socket: &Path, args: &[&str]) -> CtlOutput {
    let bin = binary("prodhcpctl");
    let sock = socket.to_string_lossy();
    let mut cmd = vec![
        bin.to_str().expect("utf-8 bin path"),
        "--socket",
        &sock,
        "--json",
    ];
    cmd.extend_from_slice(args);
    CtlOutput::from_output(run_bounded(&cmd, CTL_TIMEOUT))
}

/// Runs `prodhcpd --config PATH --check-table` (the daemon must be stopped).
pub fn check_table(path: &Path) -> Output {
    let bin = binary("prodhcpd");
    run_bounded(
        &[
            bin.to_str().expect("utf-8 bin path"),
            "--config",
            path.to_str().expect("utf-8 config path"),
            "--check-table",
        ],
        Duration::from_secs(60),
    )
}

/// Runs `prodhcpd --config FILE --check-config` and returns its output.
pub fn check_config(path: &Path) -> Output {
    let bin = binary("prodhcpd");
    run_bounded(
        &[
            bin.to_str().expect("utf-8 bin path"),
            "--config",
            path.to_str().expect("utf-8 config path"),
            "--check-config",
        ],
        CTL_TIMEOUT,
    )
}

/// A running prodhcpd inside a lab namespace. Stopped (SIGTERM, ≤ 5 s, SIGKILL) on drop.
pub struct Daemon<'lab> {
    lab: &'lab Lab,
    ns: String,
    config_path: PathBuf,
    config: ServerConfig,
    proc: Proc,
}

impl<'lab> Daemon<'lab> {
    /// Writes `config` to `<scratch>/prodhcp.ron`, starts `prodhcpd --config` in namespace
    /// `ns` and waits until it is ready. Panics (with the daemon's stderr) if it is not.
    #[track_caller]
    pub fn start(lab: &'lab Lab, ns: &str, config: &ServerConfig) -> Self {
        let config_path = lab.path("prodhcp.ron");
        config.write(&config_path);
        let d = Self::spawn(lab, ns, &config_path, config.clone());
        if let Err(why) = d.wait_ready(READY_TIMEOUT) {
            panic!(
                "prodhcpd did not become ready: {why}\nconfig:\n{}\nstderr:\n{}",
                config.to_ron(),
                d.proc.stderr()
            );
        }
        d
    }

    /// Starts prodhcpd on an existing config file without waiting for readiness.
    pub fn spawn(lab: &'lab Lab, ns: &str, config_path: &Path, config: ServerConfig) -> Self {
        Self::spawn_env(lab, ns, config_path, config, &[])
    }

    /// As [`Daemon::spawn`], with extra environment variables (`NOTIFY_SOCKET`, …).
    pub fn spawn_env(
        lab: &'lab Lab,
        ns: &str,
        config_path: &Path,
        config: ServerConfig,
        env: &[(&str, &str)],
    ) -> Self {
        let bin = binary("prodhcpd");
        let proc = lab.spawn_env(
            ns,
            "prodhcpd",
            &[
                bin.to_str().expect("utf-8 bin path"),
                "--config",
                config_path.to_str().expect("utf-8 config path"),
            ],
            env,
        );
        Self {
            lab,
            ns: ns.to_string(),
            config_path: config_path.to_path_buf(),
            config,
            proc,
        }
    }

    /// Starts a second daemon on the same config file and namespace (after a stop).
    #[track_caller]
    pub fn restart(self) -> Self {
        let (lab, ns, path, cfg) = (
            self.lab,
            self.ns.clone(),
            self.config_path.clone(),
            self.config.clone(),
        );
        let status = self.stop();
        assert!(
            status.is_some_and(|s| s.success()),
            "prodhcpd did not exit 0 on SIGTERM: {status:?}"
        );
        let d = Self::spawn(lab, &ns, &path, cfg);
        if let Err(why) = d.wait_ready(READY_TIMEOUT) {
            panic!(
                "restarted prodhcpd not ready: {why}\nstderr:\n{}",
                d.proc.stderr()
            );
        }
        d
    }

    /// Polls `status` until it answers and every worker is `running`, bounded by `timeout`.
    pub fn wait_ready(&self, timeout: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.proc.try_wait() {
                return Err(format!("prodhcpd exited early with {st}"));
            }
            let out = self.ctl(&["status"]);
            let last = match (&out.json, out.status.success()) {
                (Some(v), true) => {
                    if all_workers_running(v) {
                        return Ok(v.clone());
                    }
                    format!("workers not all running: {v}")
                }
                _ => format!("status failed ({}): {}", out.status, out.stderr.trim()),
            };
            if Instant::now() >= deadline {
                return Err(format!("timed out after {timeout:?}; last: {last}"));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The namespace the daemon runs in.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The config file path (rewrite it, then [`Daemon::reload`]).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The supervisor's PID.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The supervisor process handle (stderr holds the operational log).
    pub fn process(&self) -> &Proc {
        &self.proc
    }

    /// Sends a signal to the supervisor.
    pub fn signal(&self, sig: Signal) -> bool {
        self.proc.signal(sig)
    }

    /// Runs prodhcpctl against this daemon's socket.
    pub fn ctl(&self, args: &[&str]) -> CtlOutput {
        ctl_at(&self.config.control_socket, args)
    }

    /// Runs prodhcpctl against this daemon's socket with text output (no `--json`): what an
    /// operator reads. Returns (success, stdout).
    pub fn ctl_text(&self, args: &[&str]) -> (bool, String) {
        let bin = binary("prodhcpctl");
        let sock = self.config.control_socket.to_string_lossy().into_owned();
        let mut cmd = vec![bin.to_str().expect("utf-8 bin path"), "--socket", &sock];
        cmd.extend_from_slice(args);
        let out = run_bounded(&cmd, CTL_TIMEOUT);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Runs prodhcpctl and returns its JSON; panics when the command fails.
    #[track_caller]
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let out = self.ctl(args);
        match (out.status.success(), out.json) {
            (true, Some(v)) => v,
            (_, json) => panic!(
                "prodhcpctl {args:?} failed ({}): stdout {json:?} {} stderr {}",
                out.status, out.stdout, out.stderr
            ),
        }
    }

    /// `status` as JSON.
    #[track_caller]
    pub fn status(&self) -> Value {
        self.ctl_json(&["status"])
    }

    /// `stats` as JSON.
    #[track_caller]
    pub fn stats(&self) -> Value {
        self.ctl_json(&["stats"])
    }

    /// `lease IP`: the lease object, or `None` when prodhcpctl says it is not found.
    pub fn lease(&self, ip: Ipv4Addr) -> Option<Value> {
        let out = self.ctl(&["lease", &ip.to_string()]);
        if out.status.success() {
            out.json
        } else {
            None
        }
    }

    /// `leases --mac MAC` as a list.
    #[track_caller]
    pub fn leases_by_mac(&self, mac: &str) -> Vec<Value> {
        as_array(self.ctl_json(&["leases", "--mac", mac]))
    }

    /// `leases export --format json` as a list.
    #[track_caller]
    pub fn export(&self) -> Vec<Value> {
        as_array(self.ctl_json(&["leases", "export", "--format", "json"]))
    }

    /// Worker PIDs from `status`.
    #[track_caller]
    pub fn worker_pids(&self) -> Vec<u32> {
        worker_field(&self.status(), "pid")
            .into_iter()
            .filter_map(|v| v.as_u64().and_then(|p| u32::try_from(p).ok()))
            .collect()
    }

    /// Sends SIGHUP and waits until the reload is finished: `config_generation` moved on or
    /// `last_reload` changed, and `last_reload.pending` is no longer true (every worker
    /// answered; bounded by 15 s). Returns the new status.
    #[track_caller]
    pub fn reload(&self) -> Value {
        let before = self.status();
        let gen0 = before["config_generation"].as_u64();
        let msg0 = before["last_reload"].clone();
        assert!(self.signal(Signal::SIGHUP), "prodhcpd is not running");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let st = self.status();
            let moved = st["config_generation"].as_u64() != gen0 || st["last_reload"] != msg0;
            if moved && st["last_reload"]["pending"] != true {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "the reload did not finish in 15 s: {st}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (≤ 15 s) until `last_reload` is no longer pending; returns the status.
    #[track_caller]
    pub fn reload_wait(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let st = self.status();
            if st["last_reload"]["pending"] != true {
                return st;
            }
            assert!(Instant::now() < deadline, "reload still pending: {st}");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, wait ≤ 5 s, SIGKILL. Returns the exit status (None if it never ended).
    pub fn stop(self) -> Option<ExitStatus> {
        self.proc.stop(STOP_GRACE)
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        self.proc.stop(STOP_GRACE);
    }
}

/// True when `status` lists at least one worker and every worker is `running`.
pub fn all_workers_running(status: &Value) -> bool {
    status["workers"]
        .as_array()
        .is_some_and(|w| !w.is_empty() && w.iter().all(|w| w["state"] == "running"))
}

/// A field of every worker in `status` (`pid`, `restarts`, `state`).
pub fn worker_field(status: &Value, field: &str) -> Vec<Value> {
    status["workers"]
        .as_array()
        .map(|w| w.iter().map(|w| w[field].clone()).collect())
        .unwrap_or_default()
}

/// Sum of the `drops` sub-counters and `dropped` of `stats.total`.
pub fn total_drops(stats: &Value) -> u64 {
    let total = &stats["total"];
    let subs: u64 = total["drops"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    total["dropped"].as_u64().unwrap_or(0).max(subs)
}

fn as_array(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        other => panic!("expected a JSON array, got {other}"),
    }
}

/// One counter of the workers' total in a `prodhcpctl stats` answer, by its path under
/// `total`: `total(&d.stats(), &["events", "disk_syncs"])`, `total(&st, &["received"])`.
/// Panics naming the path and the answer when it is absent.
#[track_caller]
pub fn total(stats: &Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(&stats["total"], |v, key| &v[*key])
        .as_u64()
        .unwrap_or_else(|| panic!("no total.{} in {stats}", path.join(".")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn readiness_needs_every_worker_running() {
        let ok = json!({"workers": [{"id": 0, "state": "running"}, {"id": 1, "state": "running"}]});
        let starting =
            json!({"workers": [{"id": 0, "state": "running"}, {"id": 1, "state": "starting"}]});
        assert!(all_workers_running(&ok));
        assert!(!all_workers_running(&starting));
        assert!(!all_workers_running(&json!({"workers": []})));
        assert!(!all_workers_running(&json!({})));
    }

    #[test]
    fn drops_are_summed_from_sub_counters() {
        let s = json!({"total": {"dropped": 3, "drops": {"too_short": 2, "bad_cookie": 4}}});
        assert_eq!(total_drops(&s), 6);
        assert_eq!(total_drops(&json!({"total": {"dropped": 5}})), 5);
    }

    #[test]
    fn bin_dir_is_two_levels_above_the_test_executable() {
        if std::env::var_os("PRODHCP_BIN_DIR").is_none() {
            let exe = std::env::current_exe().unwrap();
            assert_eq!(bin_dir(), exe.parent().unwrap().parent().unwrap());
        }
    }
}
