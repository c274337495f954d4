//! Start-up rule for the table's writers: before the supervisor recovers an owner (finishes or
//! undoes its half-done change), no process may still be writing as that owner.
//!
//! Workers die with their supervisor (`PR_SET_PDEATHSIG` = SIGKILL, see the worker's
//! `sys::die_with_parent`), but that is not enough on its own: the kernel delivers the signal
//! asynchronously, a process can be re-parented before it sets the death signal, and another
//! supervisor binary or a hand-started writer does not set it at all. So every writer records
//! its pid and start time in its owner record, and a starting supervisor ends every recorded
//! writer that still runs (SIGKILL, then waits until it is gone) before it recovers anything,
//! whatever the init system. If one cannot be ended, the start is refused.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shm_layout::{OwnerProcess, Table, IMPORT_OWNER, SUPERVISOR_OWNER};
use tracing::warn;

/// How long a killed writer may take to go away.
const END_DEADLINE: Duration = Duration::from_secs(5);

/// Ends every process recorded as one of the table's writers that still runs, and forgets all
/// records. Returns the processes it ended; an error names the ones it could not end.
pub fn end_live_writers(table: &Table) -> Result<Vec<(u8, OwnerProcess)>, String> {
    let me = std::process::id();
    let mut live = Vec::new();
    for owner in 1..=127u8 {
        let Some(p) = table.owner_process(owner) else {
            continue;
        };
        if p.pid == me || !p.is_alive() {
            continue;
        }
        warn!(
            owner,
            pid = p.pid,
            "a process recorded as a writer of the lease table still runs (it outlived its supervisor); killing it before recovery"
        );
        if let Err(e) = kill(Pid::from_raw(p.pid as i32), Signal::SIGKILL) {
            return Err(format!(
                "owner {owner}: process {} still writes the lease table and cannot be killed ({e}); stop it first",
                p.pid
            ));
        }
        live.push((owner, p));
    }
    let deadline = Instant::now() + END_DEADLINE;
    while live.iter().any(|(_, p)| p.is_alive()) {
        if Instant::now() >= deadline {
            let left: Vec<u32> = live
                .iter()
                .filter(|(_, p)| p.is_alive())
                .map(|(_, p)| p.pid)
                .collect();
            return Err(format!(
                "processes {left:?} still write the lease table {END_DEADLINE:?} after SIGKILL; not starting"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for owner in 1..=127u8 {
        table.clear_owner_process(owner);
    }
    // The supervisor itself writes as these owners from now on.
    if let Some(me) = OwnerProcess::current() {
        table.set_owner_process(SUPERVISOR_OWNER, me);
        table.set_owner_process(IMPORT_OWNER, me);
    }
    Ok(live)
}
