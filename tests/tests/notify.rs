//! sd_notify (issue 11 item 2, `Type=notify`): the test plays systemd. It binds the unix
//! datagram socket, starts prodhcpd with `NOTIFY_SOCKET` and `WATCHDOG_USEC=1000000`, and
//! checks: `READY=1` arrives and a client is served right after it; `WATCHDOG=1` keeps coming
//! about every 0.5 s; SIGHUP gives `RELOADING=1` (with `MONOTONIC_USEC`) then `READY=1`;
//! SIGTERM gives `STOPPING=1`; every datagram comes from the supervisor's PID (the kernel's
//! SCM_CREDENTIALS, SO_PASSCRED), none from a worker, and no child inherits `NOTIFY_SOCKET` or
//! `WATCHDOG_USEC`.

use std::io::IoSliceMut;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use prodhcp_systests::client::{Extras, Identity, TestClient};
use prodhcp_systests::config::SubnetConfig;
use prodhcp_systests::daemon::Daemon;
use prodhcp_systests::packet::test_mac;
use prodhcp_systests::preflight;
use prodhcp_systests::topo::{Topology, SERVER_IP};

/// A relay address of the load namespace, mapped to the test's subnet.
const AGENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 4);

/// One notification: when it arrived, the sender's PID, its text.
#[derive(Debug, Clone)]
struct Note {
    at: Instant,
    pid: i32,
    text: String,
}

/// The service manager's end.
struct Manager {
    sock: UnixDatagram,
    seen: Vec<Note>,
}

impl Manager {
    fn bind(path: &std::path::Path) -> Manager {
        let sock = UnixDatagram::bind(path).expect("bind the notify socket");
        setsockopt(&sock, sockopt::PassCred, &true).expect("SO_PASSCRED");
        Manager {
            sock,
            seen: Vec::new(),
        }
    }

    /// The next notification, waiting at most until `deadline`.
    fn next(&mut self, deadline: Instant) -> Option<Note> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        self.sock
            .set_read_timeout(Some(left))
            .expect("read timeout");
        let mut buf = [0u8; 4096];
        let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
        let (len, pid) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = match recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            ) {
                Ok(m) => m,
                Err(nix::errno::Errno::EAGAIN) => return None,
                Err(e) => panic!("recvmsg on the notify socket: {e}"),
            };
            let pid = msg
                .cmsgs()
                .expect("control messages")
                .find_map(|c| match c {
                    ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
                    _ => None,
                })
                .expect("no SCM_CREDENTIALS on a notification");
            (msg.bytes, pid)
        };
        let note = Note {
            at: Instant::now(),
            pid,
            text: String::from_utf8_lossy(&buf[..len]).into_owned(),
        };
        self.seen.push(note.clone());
        Some(note)
    }

    /// Waits (until `deadline`) for a notification holding the line `line`.
    #[track_caller]
    fn wait_for(&mut self, line: &str, deadline: Instant) -> Note {
        loop {
            match self.next(deadline) {
                Some(n) if n.text.lines().any(|l| l == line) => return n,
                Some(_) => {}
                None => panic!("no `{line}` before the deadline; seen: {:#?}", self.seen),
            }
        }
    }
}

fn environ(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', "\n"))
        .unwrap_or_default()
}

#[test]
fn the_supervisor_alone_tells_systemd_ready_reloading_watchdog_and_stopping() {
    if !preflight("notify", &[]) {
        return;
    }
    let t = Topology::new("notify");
    t.lab.add_address("l", "l0", "198.18.0.4/24");
    let cfg = t.standard_config().subnet(
        SubnetConfig::new("198.18.64.0/24", "198.18.64.10-198.18.64.250").relay("198.18.0.4"),
    );
    let config_path = t.lab.path("prodhcp.ron");
    cfg.write(&config_path);
    let sock_path = t.lab.path("notify.sock");
    let mut m = Manager::bind(&sock_path);
    let sock_s = sock_path.to_str().expect("utf-8 path").to_string();
    let d = Daemon::spawn_env(
        &t.lab,
        &t.srv,
        &config_path,
        cfg.clone(),
        &[("NOTIFY_SOCKET", &sock_s), ("WATCHDOG_USEC", "1000000")],
    );
    let sup = d.pid() as i32;

    // READY=1 once a worker serves; a client is answered right after it (first try).
    let ready = m.wait_for("READY=1", Instant::now() + Duration::from_secs(30));
    assert!(
        ready.text.lines().any(|l| l.starts_with("STATUS=serving")),
        "READY without a status line: {:?}",
        ready.text
    );
    let mut agent = TestClient::relay(&t.load, AGENT_IP, SERVER_IP).expect("agent socket");
    agent.set_timeout(Duration::from_secs(2));
    let bound = agent
        .dora(&Identity::mac(test_mac(0x70, 1)), &Extras::default())
        .unwrap_or_else(|e| {
            panic!(
                "no lease right after READY=1: {e:?}\nstderr:\n{}",
                d.process().stderr()
            )
        });
    assert_eq!(bound.address.octets()[..3], [198, 18, 64]);

    // Children do not inherit the protocol's variables.
    for pid in d.worker_pids() {
        let env = environ(pid);
        assert!(
            !env.contains("NOTIFY_SOCKET=") && !env.contains("WATCHDOG_USEC="),
            "worker {pid} inherited the notify variables:\n{env}"
        );
    }

    // WATCHDOG=1 about every 0.5 s (WATCHDOG_USEC / 2), over 3 s. What queued while the test
    // was busy above is read first: its arrival time here would not be its sending time.
    while m.next(Instant::now() + Duration::from_millis(5)).is_some() {}
    let from = Instant::now();
    let window = Duration::from_secs(3);
    let mut pings = Vec::new();
    while let Some(n) = m.next(from + window) {
        if n.text.lines().any(|l| l == "WATCHDOG=1") {
            pings.push(n.at);
        }
    }
    assert!(
        (4..=8).contains(&pings.len()),
        "{} WATCHDOG=1 in 3 s (want about 6)",
        pings.len()
    );
    // What systemd needs: no gap reaches WATCHDOG_USEC (1 s). The times are when this test
    // read each message, so one late read shortens the next gap: the pace is checked on the
    // mean, not on each gap.
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g < Duration::from_secs(1)),
        "a watchdog gap reached WATCHDOG_USEC (1 s): {gaps:?}"
    );
    let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;
    assert!(
        (Duration::from_millis(350)..=Duration::from_millis(700)).contains(&mean),
        "watchdog pings not about every 0.5 s: mean {mean:?}, gaps {gaps:?}"
    );

    // SIGHUP: RELOADING=1 (with MONOTONIC_USEC), then READY=1.
    assert!(d.signal(Signal::SIGHUP), "prodhcpd is not running");
    let reloading = m.wait_for("RELOADING=1", Instant::now() + Duration::from_secs(10));
    assert!(
        reloading.text.lines().any(|l| l
            .strip_prefix("MONOTONIC_USEC=")
            .is_some_and(|v| v.parse::<u64>().is_ok())),
        "RELOADING=1 without MONOTONIC_USEC: {:?}",
        reloading.text
    );
    let reloaded = m.wait_for("READY=1", Instant::now() + Duration::from_secs(15));
    assert!(reloaded.at >= reloading.at);

    // SIGTERM: STOPPING=1, then a clean exit.
    assert!(d.signal(Signal::SIGTERM), "prodhcpd is not running");
    m.wait_for("STOPPING=1", Instant::now() + Duration::from_secs(10));
    let status = d.process().wait_timeout(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "prodhcpd did not exit 0: {status:?}"
    );
    while m
        .next(Instant::now() + Duration::from_millis(100))
        .is_some()
    {}

    let strangers: Vec<&Note> = m.seen.iter().filter(|n| n.pid != sup).collect();
    assert!(
        strangers.is_empty(),
        "notifications from other processes than the supervisor {sup}: {strangers:#?}"
    );
    eprintln!(
        "notify: {} notifications, all from the supervisor {sup}; {} watchdog pings in 3 s, gaps {:?}",
        m.seen.len(),
        pings.len(),
        gaps
    );
}
