//! The main thread of a phase: the per-second timeline, and the give-up and hard-deadline
//! checks that end a phase early.

use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use super::phase_report::{Counts, StopReason, TimelinePoint};
use super::shared::{get, Shared};
use super::Generator;

impl Generator {
    /// Main thread of a phase: timeline, give-up and hard-deadline checks.
    pub(super) fn monitor(
        &self,
        sh: &Shared<'_>,
        name: &str,
        give_up_later: Duration,
        timeline: &mut Vec<TimelinePoint>,
    ) -> StopReason {
        let tick = Duration::from_millis(20);
        let mut next_second = Duration::from_secs(1);
        let mut prev = Counts::default();
        let mut last_answered = 0u64;
        let mut last_answer_at = Instant::now();
        loop {
            if sh.sender_done.load(Ordering::Relaxed) {
                return StopReason::Completed;
            }
            let now = Instant::now();
            if now >= self.opts.hard_deadline {
                return StopReason::HardDeadline;
            }
            let answered = {
                let c = &sh.counters;
                get(&c.offers) + get(&c.acks) + get(&c.renew_acks) + get(&c.naks)
            };
            if answered != last_answered {
                last_answered = answered;
                last_answer_at = now;
            } else if sh.in_flight.load(Ordering::Relaxed) > 0
                && now.duration_since(last_answer_at)
                    >= if answered == 0 {
                        self.opts.give_up
                    } else {
                        give_up_later
                    }
            {
                return StopReason::NoAnswers;
            }
            let elapsed = sh.start.elapsed();
            if elapsed >= next_second {
                let cur = Counts::of(&sh.counters);
                let p = TimelinePoint {
                    t_s: next_second.as_secs(),
                    sent: cur.sent() - prev.sent(),
                    answered: cur.answered() - prev.answered(),
                    failed: cur.missed() - prev.missed(),
                    in_flight: sh.in_flight.load(Ordering::Relaxed),
                };
                if self.opts.print_timeline {
                    eprintln!(
                        "{name} t={:>4}s sent {:>8} answered {:>8} failed {:>7} in-flight {:>7}",
                        p.t_s, p.sent, p.answered, p.failed, p.in_flight
                    );
                }
                timeline.push(p);
                prev = cur;
                next_second += Duration::from_secs(1);
            }
            thread::sleep(tick);
        }
    }
}
