//! The engine's notion of "now" for leases: the wall clock, corrected for steps.
//!
//! Leases are stored as unix seconds (the table format is shared with the supervisor, the
//! exporter and, later, replication), but a lease's *duration* is what the client counts: a
//! client told "3600 s" keeps its address for 3600 s of real time, whatever the server's wall
//! clock does. So the engine keeps a **lease clock**: `lease_ms = wall_ms + offset_ms`.
//!
//! - **Step detection** (every call of [`LeaseClock::now_ms`], so every packet and every
//!   sweeper step): the lease clock is expected to have advanced by the monotonic time elapsed
//!   since the previous call. When wall time moved more than [`STEP_TOLERANCE_MS`] away from
//!   that (an NTP step, an operator's `date -s`, a VM resumed with a stale clock), the
//!   difference is added to `offset_ms`, the step is logged and counted. The lease clock
//!   therefore advances exactly with the monotonic clock across a step: a forward step does not
//!   expire leases that clients still use, a backward step does not stretch holds, offers or
//!   quarantines. Slewing (adjtime) stays far below the tolerance and is followed as is.
//! - **Implausible wall clock at start** (before [`MIN_PLAUSIBLE_MS`], 2024, e.g. a box without
//!   a real-time clock that booted in 1970): the lease clock starts at the newest change this
//!   worker has already recorded in its ring, or at [`MIN_PLAUSIBLE_MS`] if that is later, so
//!   leases never expire "in 1970" and lease times stay consistent with the table. A plausible
//!   wall clock is trusted at start (a floor taken from the ring would keep the lease clock
//!   ahead for good after a clock that ran fast was corrected while the worker was down).
//!
//! Known limit: the offset lives in the worker process. A step that happens while a worker is
//! *not running* (between its death and its restart) is not seen by it; the offset it had is
//! lost on restart and it starts from the wall clock again. A backward step then stretches the
//! leases already granted (the safe direction); a forward step can expire them early.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A wall-minus-expected difference larger than this is a step (milliseconds). NTP slews at
/// most 0.5 ms/s; the engine reads the clock at least every 20 ms, so 1 s is never slew.
pub const STEP_TOLERANCE_MS: i64 = 1_000;

/// The lease clock never starts before 2024-01-01T00:00:00Z (milliseconds since the epoch): a
/// wall clock earlier than this at start is a box that booted without an RTC.
pub const MIN_PLAUSIBLE_MS: i64 = 1_704_067_200_000;

/// Where time comes from. The real one reads the system clocks; tests inject their own.
pub trait TimeSource: std::fmt::Debug + Send {
    /// Wall clock, milliseconds since the unix epoch (negative before 1970).
    fn wall_ms(&self) -> i64;
    /// A monotonic clock, milliseconds from an arbitrary origin.
    fn mono_ms(&self) -> u64;
}

/// The system's clocks: `SystemTime` and `Instant`.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl TimeSource for SystemClock {
    fn wall_ms(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        }
    }

    fn mono_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A hand-driven clock for tests: both clocks are set explicitly. Clones share the time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    wall: Arc<AtomicI64>,
    mono: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading `wall_ms` on the wall and 0 on the monotonic clock.
    pub fn new(wall_ms: i64) -> ManualClock {
        let c = ManualClock::default();
        c.wall.store(wall_ms, Ordering::Relaxed);
        c
    }

    /// Lets `ms` pass on both clocks.
    pub fn advance(&self, ms: u64) {
        self.mono.fetch_add(ms, Ordering::Relaxed);
        self.wall
            .fetch_add(i64::try_from(ms).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Steps the wall clock by `ms` (positive: forward) without time passing.
    pub fn step_wall(&self, ms: i64) {
        self.wall.fetch_add(ms, Ordering::Relaxed);
    }
}

impl TimeSource for ManualClock {
    fn wall_ms(&self) -> i64 {
        self.wall.load(Ordering::Relaxed)
    }

    fn mono_ms(&self) -> u64 {
        self.mono.load(Ordering::Relaxed)
    }
}

/// A step the clock detected: how far the wall clock jumped, in milliseconds (positive:
/// forward).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Wall clock jump, ms.
    pub wall_jump_ms: i64,
}

/// The lease clock: wall time plus an offset that absorbs steps. See the module docs.
#[derive(Debug)]
pub struct LeaseClock {
    source: Box<dyn TimeSource>,
    offset_ms: i64,
    last_lease_ms: i64,
    last_mono_ms: u64,
    steps: u64,
}

impl LeaseClock {
    /// A lease clock over `source`. If the wall clock reads before [`MIN_PLAUSIBLE_MS`] it
    /// starts at `newest_ms` (the time of the newest change already recorded) or
    /// [`MIN_PLAUSIBLE_MS`], whichever is later.
    pub fn new(source: Box<dyn TimeSource>, newest_ms: i64) -> LeaseClock {
        let wall = source.wall_ms();
        let offset_ms = if wall < MIN_PLAUSIBLE_MS {
            let floor = newest_ms.max(MIN_PLAUSIBLE_MS);
            tracing::warn!(
                wall_ms = wall,
                floor_ms = floor,
                "wall clock reads before 2024; lease times start from the newest recorded \
                 change (or 2024) instead"
            );
            floor - wall
        } else {
            0
        };
        let last_mono_ms = source.mono_ms();
        LeaseClock {
            source,
            offset_ms,
            last_lease_ms: wall + offset_ms,
            last_mono_ms,
            steps: 0,
        }
    }

    /// The system clocks.
    pub fn system(floor_ms: i64) -> LeaseClock {
        LeaseClock::new(Box::<SystemClock>::default(), floor_ms)
    }

    /// Lease time now, milliseconds since the epoch, after absorbing any step since the last
    /// call. Returns the step too, if one was absorbed.
    pub fn tick(&mut self) -> (i64, Option<Step>) {
        let wall = self.source.wall_ms();
        let mono = self.source.mono_ms();
        let elapsed = i64::try_from(mono.saturating_sub(self.last_mono_ms)).unwrap_or(i64::MAX);
        let expected = self.last_lease_ms.saturating_add(elapsed);
        let actual = wall.saturating_add(self.offset_ms);
        let jump = actual - expected;
        let step = if jump.abs() > STEP_TOLERANCE_MS {
            self.offset_ms -= jump;
            self.steps += 1;
            tracing::warn!(
                wall_jump_ms = jump,
                offset_ms = self.offset_ms,
                "wall clock stepped; lease times keep following the monotonic clock"
            );
            Some(Step { wall_jump_ms: jump })
        } else {
            None
        };
        let now = wall.saturating_add(self.offset_ms);
        self.last_lease_ms = now;
        self.last_mono_ms = mono;
        (now, step)
    }

    /// Lease time now in milliseconds (see [`LeaseClock::tick`]).
    pub fn now_ms(&mut self) -> i64 {
        self.tick().0
    }

    /// Lease time now in unix seconds (0 is never returned: the clock starts after 2024).
    pub fn now_secs(&mut self) -> u64 {
        u64::try_from(self.now_ms() / 1000).unwrap_or(0)
    }

    /// Steps absorbed so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The current correction, lease time minus wall time, ms.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;

    #[test]
    fn follows_the_wall_clock_without_steps() {
        let m = ManualClock::new(T0);
        let mut c = LeaseClock::new(Box::new(m.clone()), 0);
        m.advance(5_000);
        assert_eq!(c.now_ms(), T0 + 5_000);
        // A slew of 0.5 s over 10 s is followed as is.
        m.advance(10_000);
        m.step_wall(500);
        assert_eq!(c.now_ms(), T0 + 15_500);
        assert_eq!(c.steps(), 0);
    }

    #[test]
    fn absorbs_forward_and_backward_steps() {
        let m = ManualClock::new(T0);
        let mut c = LeaseClock::new(Box::new(m.clone()), 0);
        m.advance(1_000);
        m.step_wall(3_600_000);
        let (now, step) = c.tick();
        assert_eq!(now, T0 + 1_000);
        assert_eq!(
            step,
            Some(Step {
                wall_jump_ms: 3_600_000
            })
        );
        m.advance(2_000);
        m.step_wall(-7_200_000);
        assert_eq!(c.now_ms(), T0 + 3_000);
        assert_eq!(c.steps(), 2);
    }

    #[test]
    fn a_clock_before_1970_starts_at_the_floor() {
        let m = ManualClock::new(-86_400_000);
        let mut c = LeaseClock::new(Box::new(m.clone()), 0);
        assert_eq!(c.now_ms(), MIN_PLAUSIBLE_MS);
        let newest = MIN_PLAUSIBLE_MS + 1_000_000;
        let mut c = LeaseClock::new(Box::new(m.clone()), newest);
        m.advance(1_000);
        assert_eq!(c.now_ms(), newest + 1_000);
        // A plausible wall clock is trusted, whatever the ring says.
        let m = ManualClock::new(T0);
        let mut c = LeaseClock::new(Box::new(m), T0 + 3_600_000);
        assert_eq!(c.now_ms(), T0);
    }
}
