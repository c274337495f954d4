//! Workers die with their supervisor, and a starting supervisor never shares an owner with a
//! live process recorded in the table (issue 7, defect 2).

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use prodhcp_systests::daemon::Daemon;
use prodhcp_systests::preflight;
use prodhcp_systests::topo::Topology;

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            // The state follows the command name in parentheses (which may contain spaces).
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
    }
}

/// Polls until none of `pids` is alive; returns the ones still alive at the deadline.
fn wait_gone(pids: &[u32], timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill_leftovers(pids: &[u32]) {
    for &p in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p as i32), Signal::SIGKILL);
    }
}

#[test]
fn workers_die_when_the_supervisor_is_killed() {
    if !preflight("supervisor_death", &[]) {
        return;
    }
    let t = Topology::new("supdeath");
    let d = Daemon::start(&t.lab, &t.srv, &t.standard_config());
    let workers = d.worker_pids();
    assert!(!workers.is_empty(), "no worker pids in status");
    assert!(
        workers.iter().all(|&p| alive(p)),
        "workers not alive: {workers:?}"
    );
    // A stopped worker must die too (a stopped process ignores SIGTERM until continued).
    assert!(nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(workers[0] as i32),
        Signal::SIGSTOP
    )
    .is_ok());
    assert!(d.signal(Signal::SIGKILL), "supervisor not running");
    assert!(d.process().wait_timeout(Duration::from_secs(5)).is_some());
    let left = wait_gone(&workers, Duration::from_secs(5));
    kill_leftovers(&left);
    assert!(
        left.is_empty(),
        "workers {left:?} outlived their SIGKILLed supervisor (of {workers:?})"
    );
}

#[test]
fn a_starting_supervisor_kills_a_live_recorded_writer_first() {
    if !preflight("supervisor_death", &["sleep"]) {
        return;
    }
    let t = Topology::new("suplive");
    let cfg = t.standard_config();
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    let status = d.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "clean stop: {status:?}"
    );

    // A live process recorded as worker 0's writer (owner 1), as an orphaned worker would be.
    let orphan = t.lab.spawn(&t.srv, "orphan", &["sleep", "300"]);
    let start = shm_layout::process_start_time(orphan.pid()).expect("orphan's /proc entry");
    let table_path = cfg.state_dir.join("leases.table");
    {
        let table = shm_layout::Table::open(&table_path).expect("open the stopped table");
        table.set_owner_process(
            shm_layout::worker_owner(0),
            shm_layout::OwnerProcess {
                pid: orphan.pid(),
                start,
            },
        );
    }
    let d = Daemon::start(&t.lab, &t.srv, &cfg);
    assert!(
        orphan.wait_timeout(Duration::from_secs(5)).is_some(),
        "the live recorded writer {} still runs after the new supervisor started",
        orphan.pid()
    );
    let log = d.process().stderr();
    assert!(
        log.contains("killing it before recovery") && log.contains(&orphan.pid().to_string()),
        "the kill is not logged:\n{log}"
    );
    assert!(d.process().is_running());
}
