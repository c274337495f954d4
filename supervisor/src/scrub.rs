//! Runs the lease table's background scrub ([`shm_layout::Scrub`]) inside the supervisor's loop.
//!
//! Where it runs: in the supervisor itself, in time slices, not in a forked child. The
//! supervisor is the only process that may act as [`SUPERVISOR_OWNER`](shm_layout::table::SUPERVISOR_OWNER) (the scrub's repairs take
//! slot locks and append to that owner's ring), its loop is idle nearly all the time, and a slice
//! bounds the scrub's CPU share exactly: at most [`SLICE`] of work, then at least [`PAUSE`] of
//! rest, i.e. a fifth of one core, whatever else happens in the loop. On a 2-core appliance with 2
//! workers that leaves the workers nearly all of their cores, where a free-running child would
//! take a whole core for the pass. A control request waits at most one slice.
//!
//! When: one pass right after every start, then one every `scrub_interval` seconds after the last
//! one finished (0 = no periodic passes); a reload that changes the interval re-plans the next pass.
//!
//! Reporting: each step of a pass that finds something logs one aggregated warning (phase,
//! first and last slot or address, counts), at most [`MAX_LOG_LINES`] per pass, then the pass
//! only counts; the end of a pass logs its totals (a warning when anything was found).
//! `prodhcpctl status` shows the last pass and the one in progress.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shm_layout::{Ring, Scrub, ScrubPhase, Table, Writer};
use tracing::{info, warn};

use prodhcp_proto::{ScrubCounts, ScrubPass, ScrubStatus};

/// Longest run of scrub work per loop turn.
pub const SLICE: Duration = Duration::from_micros(250);
/// Shortest rest between two slices.
pub const PAUSE: Duration = Duration::from_millis(1);
/// Positions checked between two looks at the clock.
const STEP: usize = 256;
/// Most finding lines logged per pass.
pub const MAX_LOG_LINES: u32 = 50;

#[derive(Debug)]
struct Pass {
    scrub: Scrub,
    started_unix: u64,
    started: Instant,
    log_lines: u32,
}

/// The scrub's schedule and results.
#[derive(Debug)]
pub struct ScrubRunner {
    pass: Option<Pass>,
    last: Option<ScrubPass>,
    passes: u64,
    next_due: Option<Instant>,
    last_slice_end: Option<Instant>,
    /// When the last pass finished and the interval its successor was planned with.
    last_finished: Option<(Instant, u32)>,
    /// Findings not handed to the audit trail yet ([`ScrubRunner::take_findings`]).
    findings: Vec<String>,
}

impl Default for ScrubRunner {
    fn default() -> Self {
        ScrubRunner::new()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn wire_counts(c: &shm_layout::ScrubCounts) -> ScrubCounts {
    ScrubCounts {
        slots_checked: c.slots_checked,
        damaged: c.damaged(),
        repaired: c.repaired(),
        busy_skipped: c.busy_skipped,
        stuck_locks: c.stuck_locks,
        torn_slots: c.torn_slots,
        bitmap_wrong: c.bitmap_wrong,
        summary_wrong: c.summary_wrong,
        unindexed: c.unindexed,
        stale_index: c.stale_index,
    }
}

fn ip(addr: Option<u32>) -> String {
    addr.map_or_else(|| "-".into(), |a| std::net::Ipv4Addr::from(a).to_string())
}

impl ScrubRunner {
    /// A runner whose first pass is due now (after start).
    pub fn new() -> ScrubRunner {
        ScrubRunner {
            findings: Vec::new(),
            pass: None,
            last: None,
            passes: 0,
            next_due: Some(Instant::now()),
            last_slice_end: None,
            last_finished: None,
        }
    }

    /// How long the supervisor's loop may sleep before the scrub wants to run again.
    pub fn wake_in(&self) -> Option<Duration> {
        if self.pass.is_some() {
            let rested = self.last_slice_end.map_or(PAUSE, |t| t.elapsed());
            return Some(PAUSE.saturating_sub(rested));
        }
        self.next_due
            .map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// Does one slice of scrub work if one is due. `interval_secs` is `scrub_interval`.
    pub fn tick(&mut self, table: &Table, owner: u8, ring: &Ring, interval_secs: u32) {
        // A reload may have changed the interval: re-plan the next pass from the last one.
        if let Some((at, planned)) = self.last_finished {
            if self.pass.is_none() && planned != interval_secs {
                self.next_due =
                    (interval_secs > 0).then(|| at + Duration::from_secs(u64::from(interval_secs)));
                self.last_finished = Some((at, interval_secs));
            }
        }
        if self.pass.is_none() {
            if self.next_due.is_none_or(|t| Instant::now() < t) {
                return;
            }
            info!(slots = table.slot_count(), "lease table scrub pass started");
            self.pass = Some(Pass {
                scrub: Scrub::new(),
                started_unix: unix_now(),
                started: Instant::now(),
                log_lines: 0,
            });
            self.next_due = None;
        } else if self.last_slice_end.is_some_and(|t| t.elapsed() < PAUSE) {
            return;
        }
        let Some(pass) = self.pass.as_mut() else {
            return;
        };
        let writer = Writer::new(table, owner, ring);
        let t0 = Instant::now();
        while !pass.scrub.is_done() && t0.elapsed() < SLICE {
            let step = pass.scrub.step(writer, STEP);
            let Some((first, last)) = step.findings_at else {
                continue;
            };
            pass.log_lines += 1;
            if pass.log_lines > MAX_LOG_LINES {
                continue;
            }
            let c = &step.counts;
            let (first_addr, last_addr) = if step.phase == ScrubPhase::Slots {
                (
                    ip(table.addr_of_slot(first as u32)),
                    ip(table.addr_of_slot(last as u32)),
                )
            } else {
                ("-".into(), "-".into())
            };
            warn!(
                phase = step.phase.name(),
                first,
                last,
                first_addr,
                last_addr,
                damaged = c.damaged(),
                repaired = c.repaired(),
                stuck_locks = c.stuck_locks,
                torn_slots = c.torn_slots,
                abandoned = c.torn_abandoned,
                bitmap_fixed = c.bitmap_fixed,
                summary_fixed = c.summary_fixed,
                index_inserted = c.unindexed_fixed,
                index_removed = c.stale_index_fixed,
                "lease table scrub found damage"
            );
            if pass.log_lines == MAX_LOG_LINES {
                warn!("lease table scrub: further findings of this pass are only counted");
            }
        }
        self.last_slice_end = Some(Instant::now());
        if !pass.scrub.is_done() {
            return;
        }
        let c = *pass.scrub.counts();
        let done = ScrubPass {
            started: pass.started_unix,
            finished: unix_now(),
            duration_ms: pass.started.elapsed().as_millis() as u64,
            counts: wire_counts(&c),
        };
        if c.damaged() > 0 {
            self.findings.push(format!(
                "scrub pass: {} slots checked, {} damaged, {} repaired (stuck locks {}, torn slots {}, \
                 abandoned {}, bitmap {}, summary {}, unindexed {}, stale index {})",
                c.slots_checked,
                c.damaged(),
                c.repaired(),
                c.stuck_locks,
                c.torn_slots,
                c.torn_abandoned,
                c.bitmap_wrong,
                c.summary_wrong,
                c.unindexed,
                c.stale_index
            ));
            warn!(
                slots_checked = c.slots_checked,
                damaged = c.damaged(),
                repaired = c.repaired(),
                stuck_locks = c.stuck_locks,
                torn_slots = c.torn_slots,
                bitmap_wrong = c.bitmap_wrong,
                summary_wrong = c.summary_wrong,
                unindexed = c.unindexed,
                stale_index = c.stale_index,
                busy_skipped = c.busy_skipped,
                ms = done.duration_ms,
                "lease table scrub pass finished: damage found"
            );
        } else {
            info!(
                slots_checked = c.slots_checked,
                busy_skipped = c.busy_skipped,
                ms = done.duration_ms,
                "lease table scrub pass finished: clean"
            );
        }
        self.pass = None;
        self.last = Some(done);
        self.passes += 1;
        let now = Instant::now();
        self.last_finished = Some((now, interval_secs));
        self.next_due =
            (interval_secs > 0).then(|| now + Duration::from_secs(u64::from(interval_secs)));
    }

    /// Findings of passes finished since the last call (one line per pass that found damage),
    /// for the audit trail's `scrub` event. Slots abandoned by the scrub are audited on their
    /// own through the supervisor's ring (`abandon`).
    pub fn take_findings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.findings)
    }

    /// The state for `status`.
    pub fn status(&self, table: &Table) -> ScrubStatus {
        let (phase, progress, current) = match &self.pass {
            Some(p) => {
                let (pos, len) = p.scrub.progress(table);
                (
                    Some(p.scrub.phase().name().to_string()),
                    Some((pos * 100).checked_div(len).unwrap_or(100).min(100) as u8),
                    Some(wire_counts(p.scrub.counts())),
                )
            }
            None => (None, None, None),
        };
        ScrubStatus {
            state: if self.pass.is_some() {
                "running"
            } else {
                "idle"
            }
            .into(),
            phase,
            progress_percent: progress,
            current,
            last_pass: self.last.clone(),
            passes: self.passes,
            next_pass_in_secs: self
                .next_due
                .map(|t| t.saturating_duration_since(Instant::now()).as_secs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_layout::{LayoutSpec, RangeSpec, SUPERVISOR_OWNER};

    fn table(dir: &std::path::Path) -> (Table, Ring) {
        let spec = LayoutSpec {
            ranges: vec![RangeSpec {
                first: 0x0a00_0000,
                last: 0x0a03_ffff,
                in_pool: true,
            }],
        };
        let t = Table::create(&dir.join("t"), &spec).unwrap();
        let r = Ring::open_or_create(&dir.join("r"), SUPERVISOR_OWNER, 1024).unwrap();
        (t, r)
    }

    /// Ticks until a pass finished; returns the number of ticks that did work.
    fn run_pass(s: &mut ScrubRunner, t: &Table, r: &Ring, interval: u32) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        let before = s.passes;
        let mut slices = 0;
        while s.passes == before {
            assert!(Instant::now() < deadline, "no pass finished");
            if s.wake_in().is_some_and(|w| w.is_zero()) {
                slices += 1;
            }
            s.tick(t, SUPERVISOR_OWNER, r, interval);
            std::thread::sleep(Duration::from_millis(1));
        }
        slices
    }

    #[test]
    fn a_pass_runs_after_start_in_slices_and_the_next_follows_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let (t, r) = table(dir.path());
        let mut s = ScrubRunner::new();
        assert_eq!(s.wake_in(), Some(Duration::ZERO), "due right after start");
        let slices = run_pass(&mut s, &t, &r, 3600);
        assert!(slices > 1, "a 262144-slot pass fits in one slice? {slices}");
        let st = s.status(&t);
        assert_eq!(st.state, "idle");
        assert_eq!(st.passes, 1);
        let last = st.last_pass.unwrap();
        assert_eq!(last.counts.slots_checked, 262_144);
        assert_eq!(last.counts.damaged, 0);
        let next = st.next_pass_in_secs.unwrap();
        assert!((3590..=3600).contains(&next), "{next}");
        // Nothing runs before it is due.
        s.tick(&t, SUPERVISOR_OWNER, &r, 3600);
        assert_eq!(s.status(&t).state, "idle");
    }

    #[test]
    fn interval_zero_runs_only_the_pass_after_start() {
        let dir = tempfile::tempdir().unwrap();
        let (t, r) = table(dir.path());
        let mut s = ScrubRunner::new();
        run_pass(&mut s, &t, &r, 0);
        let st = s.status(&t);
        assert_eq!((st.passes, st.next_pass_in_secs), (1, None));
        assert_eq!(s.wake_in(), None);
        // A reload that sets an interval plans the next pass from the end of the last one.
        s.tick(&t, SUPERVISOR_OWNER, &r, 120);
        let next = s.status(&t).next_pass_in_secs.unwrap();
        assert!((115..=120).contains(&next), "{next}");
        s.tick(&t, SUPERVISOR_OWNER, &r, 0);
        assert_eq!(s.status(&t).next_pass_in_secs, None);
    }

    #[test]
    fn a_running_pass_is_reported_with_its_progress() {
        let dir = tempfile::tempdir().unwrap();
        let (t, r) = table(dir.path());
        let mut s = ScrubRunner::new();
        s.tick(&t, SUPERVISOR_OWNER, &r, 0);
        let st = s.status(&t);
        assert_eq!(st.state, "running");
        assert_eq!(st.phase.as_deref(), Some("slots"));
        assert!(st.progress_percent.is_some_and(|p| p < 100), "{st:?}");
        assert!(st.current.is_some_and(|c| c.slots_checked > 0));
        // It rests between slices: a wake-up is due within the pause (zero when more than the
        // pause has passed since the tick, as it may on a loaded machine).
        assert!(s.wake_in().is_some_and(|w| w <= PAUSE));
    }
}
