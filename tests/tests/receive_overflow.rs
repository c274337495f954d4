//! A request the kernel drops before any code reads it is still counted: when a worker falls
//! behind and its socket's receive buffer fills, the kernel's drop count for that socket
//! (`SO_RXQ_OVFL`) reaches `prodhcpctl stats` as `kernel_dropped`.

use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prodhcp_systests::client::{Extras, Identity, TestClient};
use prodhcp_systests::daemon::{total, Daemon};
use prodhcp_systests::packet::{test_mac, MessageType};
use prodhcp_systests::preflight;
use prodhcp_systests::topo::{Topology, LOAD_IP, SERVER_IP};

/// DISCOVERs sent while the workers are stopped: more than any worker socket's receive
/// buffer holds (8 MiB asked, capped by `net.core.rmem_max`: about 6,500 of these here).
const FLOOD: u64 = 20_000;

/// The server namespace's `/proc/net/udp`.
fn proc_net_udp(t: &Topology) -> String {
    let out = t.lab.run(&t.srv, &["cat", "/proc/net/udp"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The kernel's drop count (last column of `/proc/net/udp`) summed over the server's sockets
/// on port 67.
fn kernel_drops_on_port_67(t: &Topology) -> u64 {
    proc_net_udp(t)
        .lines()
        .skip(1)
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| a.ends_with(":0043"))
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn datagrams_the_kernel_drops_for_a_full_buffer_are_counted() {
    if !preflight("receive_overflow", &[]) {
        return;
    }
    let t = Topology::new("rxq");
    let d = Daemon::start(&t.lab, &t.srv, &t.standard_config());
    let agent = TestClient::relay(&t.load, LOAD_IP, SERVER_IP).expect("relay agent socket");
    // One client: every datagram is steered to the same worker socket.
    let id = Identity::mac(test_mac(0x63, 1));
    agent
        .discover(&id, &Extras::default())
        .expect("the worker answers before the test");
    let before = d.stats();
    assert_eq!(total(&before, &["events", "kernel_dropped"]), 0, "{before}");
    let received_before = total(&before, &["received"]);

    let workers = d.worker_pids();
    for &w in &workers {
        assert!(kill(Pid::from_raw(w as i32), Signal::SIGSTOP).is_ok());
    }
    // Well inside the supervisor's hang detection: the workers are stopped for < 1 s.
    let stopped = Instant::now();
    let packet = agent
        .build(MessageType::Discover, &id, &Extras::default())
        .encode();
    let mut sent = 0u64;
    while sent < FLOOD && stopped.elapsed() < Duration::from_millis(400) {
        if agent.send_raw(&packet).is_ok() {
            sent += 1;
        }
        // Paced a little so the veth's backlog queue is not what overflows.
        if sent.is_multiple_of(200) {
            thread::sleep(Duration::from_micros(500));
        }
    }
    let flood_time = stopped.elapsed();
    for &w in &workers {
        assert!(kill(Pid::from_raw(w as i32), Signal::SIGCONT).is_ok());
    }
    // Datagrams that arrive after the drops carry the socket's drop count.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let _ = agent.discover(&id, &Extras::default());
        let st = d.stats();
        if total(&st, &["events", "kernel_dropped"]) > 0 {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "{sent} DISCOVERs to stopped workers, no kernel drop counted: {st}\n{}",
            proc_net_udp(&t)
        );
        thread::sleep(Duration::from_millis(100));
    };
    let dropped = total(&after, &["events", "kernel_dropped"]);
    let read = total(&after, &["received"]) - received_before;
    let kernel = kernel_drops_on_port_67(&t);
    println!(
        "{sent} DISCOVERs sent in {flood_time:?} to stopped workers: {read} read by the \
         workers, {dropped} counted as kernel_dropped, {kernel} in /proc/net/udp"
    );
    assert_eq!(
        dropped, kernel,
        "the count differs from the kernel's own for the port 67 sockets"
    );
    assert!(
        dropped <= sent,
        "more drops ({dropped}) than datagrams sent ({sent})"
    );
    assert!(
        d.worker_pids() == workers,
        "the workers were replaced: the stop was taken for a hang"
    );
}
