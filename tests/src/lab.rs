//! An RAII network lab: uniquely named network namespaces, bridges, veth pairs, addresses,
//! routes, and the processes started inside them.
//!
//! Every namespace a [`Lab`] creates is named `pdt<tag>-<pid>-<n><role>` (see [`Lab::new`]),
//! so parallel tests never collide and a crashed run's leftovers can be recognised: before
//! creating anything, a lab removes every `pdt*` namespace whose creator PID is no longer
//! alive. On `Drop` it stops every process it started (SIGTERM, then SIGKILL, then waits),
//! then every process still inside its namespaces, then deletes the namespaces. All traffic
//! stays inside those namespaces; the host's interfaces are never touched.
//!
//! Harness failures (a command that cannot run, `ip` refusing a link) panic with the command
//! and its stderr: a system test cannot continue without its lab.

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Prefix of every namespace a lab creates.
pub const NS_PREFIX: &str = "pdt";
/// Default bound on [`Lab::run`].
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A process started by a lab. Cloning shares the same child.
#[derive(Debug, Clone)]
pub struct Proc {
    child: Arc<Mutex<Child>>,
    pid: u32,
    label: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    /// The PID (of the command itself: `ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The label given at spawn time (also the stem of the log file names).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Path of the file that collects stdout.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    /// Path of the file that collects stderr.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The exit status if the process has ended (reaping it), `None` while it runs.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.lock().try_wait().ok().flatten()
    }

    /// True while the process has not been reaped.
    pub fn is_running(&self) -> bool {
        self.try_wait().is_none()
    }

    /// Sends a signal unless the process has already been reaped (so a recycled PID is
    /// never signalled). Returns false if it had already exited.
    pub fn signal(&self, sig: Signal) -> bool {
        let mut child = self.lock();
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        // The child is not reaped while we hold the lock, so the PID is still ours.
        kill(Pid::from_raw(self.pid as i32), sig).is_ok()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL and wait. Returns the exit status.
    pub fn stop(&self, grace: Duration) -> Option<ExitStatus> {
        self.signal(Signal::SIGTERM);
        if let Some(st) = self.wait_timeout(grace) {
            return Some(st);
        }
        self.signal(Signal::SIGKILL);
        self.wait_timeout(Duration::from_secs(5))
    }
}

/// The lab: namespaces, links, processes and a scratch directory, all removed on drop.
pub struct Lab {
    base: String,
    bridge_ns: String,
    namespaces: Mutex<Vec<String>>,
    procs: Mutex<Vec<Proc>>,
    dir: tempfile::TempDir,
    spawn_counter: AtomicU32,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("base", &self.base)
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl Lab {
    /// A new lab for the test `tag` (only its first 6 alphanumeric characters are used).
    /// Creates the bridge namespace (`…b`) that carries every bridge.
    pub fn new(tag: &str) -> Self {
        cleanup_stale_namespaces();
        let short: String = tag
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(6)
            .collect();
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("{NS_PREFIX}{short}-{}-{n}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix(&format!("prodhcp-{short}-"))
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("lab {base}: cannot create a scratch dir in /tmp: {e}"));
        if crate::test_user().is_some() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .unwrap_or_else(|e| panic!("lab {base}: chmod scratch dir: {e}"));
        }
        let lab = Self {
            bridge_ns: format!("{base}b"),
            base,
            namespaces: Mutex::new(Vec::new()),
            procs: Mutex::new(Vec::new()),
            dir,
            spawn_counter: AtomicU32::new(0),
        };
        let bridge_ns = lab.bridge_ns.clone();
        lab.create_namespace(&bridge_ns);
        lab
    }

    /// The scratch directory (configs, lease tables, hook scripts, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The full namespace name for a role (`s`, `r`, `c1`, …).
    pub fn ns(&self, role: &str) -> String {
        format!("{}{role}", self.base)
    }

    /// The namespace that holds the bridges.
    pub fn bridge_ns(&self) -> &str {
        &self.bridge_ns
    }

    /// Keeps the scratch directory after the lab is dropped (for debugging a failure).
    /// It is kept automatically when the test panics, and for every lab when
    /// `PRODHCP_KEEP_LAB_DIRS=1` is set.
    pub fn keep_dir(&mut self) {
        self.dir.disable_cleanup(true);
    }

    fn create_namespace(&self, name: &str) {
        remove_namespace(name);
        sh(&["ip", "netns", "add", name]);
        self.namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(name.to_string());
        sh(&["ip", "-n", name, "link", "set", "lo", "up"]);
        for key in ["all", "default"] {
            sh(&[
                "ip",
                "netns",
                "exec",
                name,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{key}.disable_ipv6=1"),
            ]);
        }
    }

    /// Creates namespace `role` (returns its full name).
    pub fn add_namespace(&self, role: &str) -> String {
        let name = self.ns(role);
        self.create_namespace(&name);
        name
    }

    /// Creates bridge `name` in the bridge namespace: no STP, no forward delay, no snooping.
    pub fn add_bridge(&self, name: &str) {
        let ns = &self.bridge_ns;
        sh(&["ip", "-n", ns, "link", "add", name, "type", "bridge"]);
        sh(&[
            "ip",
            "-n",
            ns,
            "link",
            "set",
            name,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
        ]);
        sh(&["ip", "-n", ns, "link", "set", name, "up"]);
    }

    /// Connects namespace `role` to `bridge` with a veth pair whose end in the namespace is
    /// `ifname` (≤ 15 bytes), optionally addressed with `addr` ("198.18.0.1/24").
    /// Returns the full namespace name.
    pub fn connect(&self, role: &str, ifname: &str, bridge: &str, addr: Option<&str>) -> String {
        assert!(
            ifname.len() <= 15,
            "interface name {ifname:?} is longer than 15 bytes"
        );
        let ns = self.ns(role);
        let port_n = self.spawn_counter.fetch_add(1, Ordering::Relaxed);
        let port = format!("p{port_n}");
        sh(&[
            "ip",
            "-n",
            &self.bridge_ns,
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            ifname,
            "netns",
            &ns,
        ]);
        sh(&[
            "ip",
            "-n",
            &self.bridge_ns,
            "link",
            "set",
            &port,
            "master",
            bridge,
            "up",
        ]);
        sh(&["ip", "-n", &ns, "link", "set", ifname, "up"]);
        if let Some(a) = addr {
            sh(&["ip", "-n", &ns, "addr", "add", a, "dev", ifname]);
        }
        ns
    }

    /// Adds a route in namespace `role`: `dest` ("198.18.1.0/24" or "default") via `via`.
    pub fn add_route(&self, role: &str, dest: &str, via: &str) {
        sh(&[
            "ip",
            "-n",
            &self.ns(role),
            "route",
            "replace",
            dest,
            "via",
            via,
        ]);
    }

    /// Enables IPv4 forwarding in namespace `role` (a router).
    pub fn enable_forwarding(&self, role: &str) {
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.ns(role),
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
    }

    /// Adds an address to an interface in namespace `role`.
    pub fn add_address(&self, role: &str, ifname: &str, addr: &str) {
        sh(&[
            "ip",
            "-n",
            &self.ns(role),
            "addr",
            "replace",
            addr,
            "dev",
            ifname,
        ]);
    }

    /// Starts `cmd` inside namespace `ns` (a full name, e.g. from [`Lab::ns`]), stdout and
    /// stderr to `<label>.out` / `<label>.err` in the scratch dir. The lab stops it on drop.
    pub fn spawn(&self, ns: &str, label: &str, cmd: &[&str]) -> Proc {
        self.spawn_env(ns, label, cmd, &[])
    }

    /// As [`Lab::spawn`], with extra environment variables.
    pub fn spawn_env(&self, ns: &str, label: &str, cmd: &[&str], env: &[(&str, &str)]) -> Proc {
        assert!(!cmd.is_empty(), "spawn: empty command");
        let n = self.spawn_counter.fetch_add(1, Ordering::Relaxed);
        let label = format!("{label}.{n}");
        let stdout = self.path(&format!("{label}.out"));
        let stderr = self.path(&format!("{label}.err"));
        let out = File::create(&stdout).expect("create stdout log");
        let err = File::create(&stderr).expect("create stderr log");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns])
            .args(cmd)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?} in {ns}: {e}"));
        let proc = Proc {
            pid: child.id(),
            child: Arc::new(Mutex::new(child)),
            label,
            stdout,
            stderr,
        };
        self.procs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(proc.clone());
        proc
    }

    /// Runs `cmd` in namespace `ns` to completion (bounded by [`RUN_TIMEOUT`]).
    pub fn run(&self, ns: &str, cmd: &[&str]) -> Output {
        self.run_timeout(ns, cmd, RUN_TIMEOUT)
    }

    /// Runs `cmd` in namespace `ns`, killing it after `timeout`.
    pub fn run_timeout(&self, ns: &str, cmd: &[&str], timeout: Duration) -> Output {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(cmd);
        run_bounded(&full, timeout)
    }

    /// Every process the lab started, in start order.
    pub fn processes(&self) -> Vec<Proc> {
        self.procs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn teardown(&mut self) {
        let procs = std::mem::take(&mut *self.procs.lock().unwrap_or_else(|p| p.into_inner()));
        for p in &procs {
            p.signal(Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for p in &procs {
            let left = deadline.saturating_duration_since(Instant::now());
            if p.wait_timeout(left).is_none() {
                p.signal(Signal::SIGKILL);
                p.wait_timeout(Duration::from_secs(2));
            }
        }
        let namespaces =
            std::mem::take(&mut *self.namespaces.lock().unwrap_or_else(|p| p.into_inner()));
        for ns in namespaces.iter().rev() {
            remove_namespace(ns);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
        let keep_all = std::env::var_os("PRODHCP_KEEP_LAB_DIRS").is_some_and(|v| v == "1");
        if keep_all || thread::panicking() {
            self.keep_dir();
            eprintln!(
                "lab {}: scratch dir kept at {}",
                self.base,
                self.dir.path().display()
            );
        }
    }
}

/// Runs a host command and panics with its stderr if it fails.
#[track_caller]
pub fn sh(cmd: &[&str]) -> Output {
    let out = run_bounded(cmd, RUN_TIMEOUT);
    if !out.status.success() {
        panic!(
            "command failed ({}): {}\nstderr: {}",
            out.status,
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Runs a host command to completion, killing it after `timeout` (its output so far is kept).
pub fn run_bounded(cmd: &[&str], timeout: Duration) -> Output {
    let (prog, args) = cmd.split_first().expect("run: empty command");
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", cmd.join(" ")));
    // Drain the pipes on threads so a chatty command cannot block on a full pipe.
    let mut so = child.stdout.take().expect("piped stdout");
    let mut se = child.stderr.take().expect("piped stderr");
    let t_out = thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        b
    });
    let t_err = thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break child.wait().expect("wait after kill");
        }
        thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

fn namespace_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn namespace_pids(name: &str) -> Vec<i32> {
    let out = run_bounded(&["ip", "netns", "pids", name], Duration::from_secs(10));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Stops every process inside namespace `name` (created by a lab, so they are ours), then
/// deletes it. Bounded: 3 s of SIGTERM grace, then SIGKILL.
fn remove_namespace(name: &str) {
    if !namespace_exists(name) {
        return;
    }
    let pids = namespace_pids(name);
    for pid in &pids {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut left = pids;
    while !left.is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        left = namespace_pids(name);
    }
    for pid in &left {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    let _ = run_bounded(&["ip", "netns", "del", name], Duration::from_secs(10));
}

/// Removes namespaces left by crashed runs: `pdt…-<pid>-…` whose PID is no longer alive.
pub fn cleanup_stale_namespaces() {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = stale_owner_pid(&name) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                remove_namespace(&name);
            }
        }
    }
}

/// The creator PID encoded in a lab namespace name, if the name is one of ours.
fn stale_owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NS_PREFIX)?;
    let mut parts = rest.split('-');
    let _tag = parts.next()?;
    let pid: u32 = parts.next()?.parse().ok()?;
    let counter_and_role = parts.next()?;
    if parts.next().is_some() || !counter_and_role.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some(pid)
}

/// Opens a UDP socket inside namespace `ns`: a short-lived thread enters the namespace
/// (setns affects only the calling thread), binds, and hands the socket back. A socket keeps
/// the namespace it was created in, whichever thread uses it later.
pub fn udp_socket_in(
    ns: &str,
    bind: std::net::SocketAddrV4,
) -> std::io::Result<std::net::UdpSocket> {
    let path = Path::new("/run/netns").join(ns);
    thread::scope(|s| {
        s.spawn(|| {
            let f = File::open(&path)?;
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            std::net::UdpSocket::bind(bind)
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("socket thread panicked")))
    })
}

/// Connects a TCP stream to `addr` from inside namespace `ns` (the same short-lived-thread
/// trick as [`udp_socket_in`]): the stream keeps the namespace it was created in.
pub fn tcp_connect_in(
    ns: &str,
    addr: std::net::SocketAddrV4,
    timeout: Duration,
) -> std::io::Result<std::net::TcpStream> {
    let path = Path::new("/run/netns").join(ns);
    thread::scope(|s| {
        s.spawn(|| {
            let f = File::open(&path)?;
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            std::net::TcpStream::connect_timeout(&addr.into(), timeout)
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("socket thread panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_owner_pid_recognises_only_lab_names() {
        assert_eq!(stale_owner_pid("pdtrelay-1234-0b"), Some(1234));
        assert_eq!(stale_owner_pid("pdtrelay-1234-12c1"), Some(1234));
        assert_eq!(stale_owner_pid("pdt-99-3s"), Some(99));
        assert_eq!(stale_owner_pid("srv"), None);
        assert_eq!(stale_owner_pid("pdtx-abc-0b"), None);
        assert_eq!(stale_owner_pid("pdtx-12-b"), None);
        assert_eq!(stale_owner_pid("pdtx-12-0b-extra"), None);
    }

    #[test]
    fn run_bounded_kills_a_command_that_overruns() {
        let t0 = Instant::now();
        let out = run_bounded(&["sleep", "10"], Duration::from_millis(200));
        assert!(!out.status.success());
        assert!(t0.elapsed() < Duration::from_secs(5));
        let ok = run_bounded(&["echo", "hi"], Duration::from_secs(5));
        assert_eq!(String::from_utf8_lossy(&ok.stdout), "hi\n");
    }
}
