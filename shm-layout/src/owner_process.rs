//! Which process writes as an owner: its pid and start time, recorded in the owner record.
//!
//! A writer (worker) records itself before its first write. A starting supervisor reads the
//! record of every owner before it recovers them: recovery is only correct when nobody writes
//! as that owner any more, and a process that outlived its supervisor (an orphaned worker, a
//! stopped one) would otherwise keep writing next to the new one. The start time (clock ticks
//! since boot, from `/proc/<pid>/stat`) tells the recorded process from a later one that got
//! the same pid; on another boot the start times do not match either (the pid is long gone).
//!
//! The record also holds the writer's heartbeat ([`Table::beat`], [`Table::heartbeat`]): a word
//! a running worker keeps moving, so the supervisor can tell a hung one from a live one.

use std::sync::atomic::Ordering;

use crate::layout::{OWNER_HEARTBEAT, OWNER_PROCESS_PID, OWNER_PROCESS_START};
use crate::table::Table;

// The heartbeat word lies after the intent record, before the counters, apart from the process
// words (checked when the crate compiles).
const _: () = {
    let intent_end = crate::table::INTENT_NEW + crate::slot::SLOT_WORDS;
    assert!(
        OWNER_HEARTBEAT >= intent_end,
        "heartbeat inside the intent record"
    );
    assert!(
        OWNER_HEARTBEAT < crate::layout::OWNER_COUNTERS_START,
        "heartbeat inside the counters"
    );
    assert!(OWNER_HEARTBEAT != OWNER_PROCESS_PID && OWNER_HEARTBEAT != OWNER_PROCESS_START);
};

/// A process recorded as an owner's writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerProcess {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start: u64,
}

impl OwnerProcess {
    /// The calling process.
    pub fn current() -> Option<OwnerProcess> {
        let pid = std::process::id();
        process_start_time(pid).map(|start| OwnerProcess { pid, start })
    }

    /// Whether this very process (same pid, same start time) still runs; a zombie does not.
    pub fn is_alive(&self) -> bool {
        match read_stat(self.pid) {
            Some((state, start)) => start == self.start && !matches!(state, 'Z' | 'X'),
            None => false,
        }
    }
}

/// The start time of process `pid` (clock ticks since boot), or `None` when it does not exist.
pub fn process_start_time(pid: u32) -> Option<u64> {
    read_stat(pid).map(|(_, start)| start)
}

/// State letter and start time from `/proc/<pid>/stat`.
fn read_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses the fields after the command name (which is in parentheses and may hold anything,
/// so the last `)` ends it): field 3 is the state, field 22 the start time.
fn parse_stat(text: &str) -> Option<(char, u64)> {
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

impl Table {
    /// Records `process` as the writer of `owner` (before its first write). Does nothing for an
    /// invalid owner.
    pub fn set_owner_process(&self, owner: u8, process: OwnerProcess) {
        if let Some(o) = self.owner_words(owner) {
            o[OWNER_PROCESS_START].store(process.start, Ordering::Relaxed);
            o[OWNER_PROCESS_PID].store(u64::from(process.pid), Ordering::Release);
        }
    }

    /// The process last recorded as `owner`'s writer, if any (it may be long dead).
    pub fn owner_process(&self, owner: u8) -> Option<OwnerProcess> {
        let o = self.owner_words(owner)?;
        let pid = u32::try_from(o[OWNER_PROCESS_PID].load(Ordering::Acquire)).ok()?;
        (pid != 0).then(|| OwnerProcess {
            pid,
            start: o[OWNER_PROCESS_START].load(Ordering::Relaxed),
        })
    }

    /// Moves `owner`'s heartbeat on by one (a worker's loop, every turn). Does nothing for an
    /// invalid owner.
    pub fn beat(&self, owner: u8) {
        if let Some(o) = self.owner_words(owner) {
            o[OWNER_HEARTBEAT].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `owner`'s heartbeat: a value that keeps changing while its writer runs (0 for an invalid
    /// owner).
    pub fn heartbeat(&self, owner: u8) -> u64 {
        self.owner_words(owner)
            .map_or(0, |o| o[OWNER_HEARTBEAT].load(Ordering::Relaxed))
    }

    /// Forgets `owner`'s recorded writer.
    pub fn clear_owner_process(&self, owner: u8) {
        if let Some(o) = self.owner_words(owner) {
            o[OWNER_PROCESS_PID].store(0, Ordering::Release);
            o[OWNER_PROCESS_START].store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let line = "42 (a) b ) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
        assert_eq!(parse_stat("42 (x) S 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn the_current_process_is_alive_and_a_changed_start_time_is_not() {
        let me = OwnerProcess::current().expect("own /proc entry");
        assert!(me.is_alive());
        let reused = OwnerProcess {
            start: me.start + 1,
            ..me
        };
        assert!(
            !reused.is_alive(),
            "a different start time is another process"
        );
    }

    #[test]
    fn a_table_keeps_an_owner_process_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = crate::LayoutSpec {
            ranges: vec![crate::RangeSpec {
                first: 100,
                last: 199,
                in_pool: true,
            }],
        };
        let t = Table::create(&dir.path().join("t"), &spec).expect("create");
        assert_eq!(t.owner_process(1), None);
        let p = OwnerProcess { pid: 77, start: 5 };
        t.set_owner_process(1, p);
        assert_eq!(t.owner_process(1), Some(p));
        assert_eq!(t.owner_process(2), None);
        t.clear_owner_process(1);
        assert_eq!(t.owner_process(1), None);
        assert_eq!(t.heartbeat(3), 0);
        t.beat(3);
        t.beat(3);
        assert_eq!((t.heartbeat(3), t.heartbeat(2)), (2, 0));
        assert!(
            t.counters(3).iter().all(|w| w.load(Ordering::Relaxed) == 0),
            "the heartbeat is not a counter"
        );
        assert!(
            t.check().is_clean(),
            "the record is outside the intent and the counters"
        );
    }
}
