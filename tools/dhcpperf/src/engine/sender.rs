//! The sender thread's plan loop: what each kind of phase sends when (pacing by rate or by
//! window), and when the phase is over.

use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use super::shared::Shared;
use super::tx::Tx;
use super::{Generator, Plan};
use crate::jitter::Jitter;
use crate::sys::SendBatch;

impl Generator {
    /// Sender thread; returns the time spent sending (µs since phase start).
    pub(super) fn sender(&self, sh: &Shared<'_>, plan: Plan) -> u64 {
        let mut tx = Tx {
            gen: self,
            sh,
            batch: SendBatch::new(self.opts.batch),
            levels: vec![VecDeque::new()],
            spare: Vec::new(),
            jittered: BinaryHeap::new(),
            jitter: match plan {
                Plan::Avalanche { jitter, .. } if !jitter.is_zero() => Some(Jitter::new(
                    jitter,
                    0xd1ce_0000 ^ u64::from(self.opts.seed) ^ u64::from(sh.table.base) << 8,
                )),
                _ => None,
            },
        };
        let table = sh.table;
        let n = match plan {
            Plan::Dora { count, .. } => count.min(table.len() as u64),
            _ => table.len() as u64,
        };
        let (rate, duration, window) = match plan {
            Plan::Dora {
                rate,
                duration,
                window,
                ..
            }
            | Plan::Renew {
                rate,
                duration,
                window,
            } => (rate, duration, window),
            Plan::Release { rate, duration } => (rate, duration, u64::MAX),
            Plan::Mix {
                dora_rate,
                duration,
                ..
            } => (dora_rate, duration, u64::MAX),
            Plan::Avalanche { rate, deadline, .. } => (rate, deadline, u64::MAX),
        };
        let backoff = match plan {
            Plan::Avalanche { backoff, .. } => Some(backoff),
            _ => None,
        };
        let deadline_us = match plan {
            Plan::Avalanche { deadline, .. } => deadline.as_micros() as u64,
            _ => u64::MAX,
        };
        let duration_us = duration.as_micros() as u64;
        let end_target = if rate > 0.0 {
            (rate * duration.as_secs_f64()) as u64
        } else {
            0
        };
        let mut main_done = 0u64; // first transmissions of the main kind
        let mut cursor = match plan {
            Plan::Mix { first_new, .. } => first_new.min(n),
            _ => 0,
        }; // next slot for the main kind
        let mut renew_done = 0u64;
        let mut renew_cursor = 0u64;
        let mut release_done = 0u64;
        let mut release_cursor = 0u64;
        let mut send_end: Option<u64> = None;
        let per_iter = (self.opts.batch as u64 * 16).max(64);
        loop {
            if sh.stop.load(Ordering::Relaxed) {
                break;
            }
            let now = sh.now_us();
            let in_window = now < duration_us;
            // Paced sends are computed at min(now, end of window), so the last iteration after
            // the window tops up to exactly rate × duration.
            let now_eff = now.min(duration_us);
            let caught_up = rate <= 0.0 || main_done >= end_target;
            // 1. The plan's sends.
            let mut plan_finished = !in_window && caught_up;
            match plan {
                Plan::Dora { .. } | Plan::Avalanche { .. } => {
                    let mut due =
                        due_count(rate, now_eff, main_done, n - cursor, window, sh, per_iter);
                    if !in_window && rate <= 0.0 {
                        due = 0;
                    }
                    while due > 0 && cursor < n {
                        if !tx.may_start(cursor as u32) {
                            break; // a returning client waits for its previous use
                        }
                        tx.start_discover(cursor as u32, now, backoff);
                        cursor += 1;
                        main_done += 1;
                        due -= 1;
                    }
                    plan_finished |= cursor >= n;
                }
                Plan::Renew { .. } | Plan::Release { .. } => {
                    let is_renew = matches!(plan, Plan::Renew { .. });
                    let mut due =
                        due_count(rate, now_eff, main_done, n - cursor, window, sh, per_iter);
                    if !in_window && rate <= 0.0 {
                        due = 0;
                    }
                    while due > 0 && cursor < n {
                        let i = cursor as u32;
                        cursor += 1;
                        let started = if is_renew {
                            tx.start_renew(i, now)
                        } else {
                            tx.release(i, now)
                        };
                        if started {
                            main_done += 1;
                            due -= 1;
                        }
                    }
                    plan_finished |= cursor >= n;
                }
                Plan::Mix {
                    renew_rate,
                    release_rate,
                    first_new,
                    cycle,
                    ..
                } => {
                    plan_finished = !in_window;
                    {
                        // In a mix a rate of 0 means "none of this kind".
                        let paced = |r: f64, done: u64| {
                            if r > 0.0 {
                                due_count(r, now_eff, done, u64::MAX, u64::MAX, sh, per_iter)
                            } else {
                                0
                            }
                        };
                        let due = paced(rate, main_done).min(n - cursor);
                        for _ in 0..due {
                            if cursor >= n || !tx.may_start(cursor as u32) {
                                break;
                            }
                            tx.start_discover(cursor as u32, now, None);
                            cursor += 1;
                            main_done += 1;
                        }
                        // Renewals cycle over clients that have had a DISCOVER; releases take
                        // the oldest bound clients. Probes per iteration are bounded. Returning
                        // (cycling) clients release by themselves: only pre-bound ones are
                        // renewed or released here.
                        let bound_end = if cycle.is_some() {
                            cursor.min(first_new)
                        } else {
                            cursor
                        };
                        let due = paced(renew_rate, renew_done);
                        let mut probes = due * 4;
                        let mut left = due;
                        while left > 0 && probes > 0 && bound_end > 0 {
                            probes -= 1;
                            if renew_cursor < release_cursor || renew_cursor >= bound_end {
                                renew_cursor = release_cursor;
                                if renew_cursor >= bound_end {
                                    break;
                                }
                            }
                            let i = renew_cursor as u32;
                            renew_cursor += 1;
                            if tx.start_renew(i, now) {
                                renew_done += 1;
                                left -= 1;
                            }
                        }
                        let due = paced(release_rate, release_done);
                        let mut probes = due * 4;
                        let mut left = due;
                        while left > 0 && probes > 0 && release_cursor < bound_end {
                            probes -= 1;
                            let i = release_cursor as u32;
                            release_cursor += 1;
                            if tx.release(i, now) {
                                release_done += 1;
                                left -= 1;
                            }
                        }
                    }
                }
            }
            // 2. Timeouts and retransmissions.
            tx.take_rx_entries();
            tx.expire(now, backoff, deadline_us);
            tx.flush();
            // 3. Done?
            if plan_finished {
                let end = *send_end.get_or_insert(now);
                let drained = sh.in_flight.load(Ordering::Relaxed) <= 0;
                let drain_limit = if backoff.is_some() {
                    deadline_us
                } else {
                    end + sh.timeout_us + 200_000
                };
                if drained || now >= drain_limit {
                    if !drained {
                        // Whatever is still pending now has missed its timeout.
                        tx.expire(u64::MAX, None, 0);
                    }
                    break;
                }
            }
            // 4. Sleep until about half a millisecond of sends is due (at most 1 ms).
            let sleep_us = if rate > 0.0 && !plan_finished {
                let k = (rate * 0.0005).clamp(1.0, self.opts.batch as f64);
                let next_due = ((main_done as f64 + k) / rate * 1e6) as u64;
                next_due.saturating_sub(sh.now_us()).clamp(20, 1000)
            } else if rate <= 0.0 && !plan_finished {
                100
            } else {
                1000
            };
            thread::sleep(Duration::from_micros(sleep_us));
        }
        tx.flush();
        sh.sender_done.store(true, Ordering::Relaxed);
        send_end.unwrap_or_else(|| sh.now_us())
    }
}

/// How many first transmissions are due now: paced by `rate` (0 = by the window), never more
/// than `left`, and at most `per_iter` in one loop iteration.
pub(super) fn due_count(
    rate: f64,
    now_us: u64,
    done: u64,
    left: u64,
    window: u64,
    sh: &Shared<'_>,
    per_iter: u64,
) -> u64 {
    let due = if rate > 0.0 {
        let target = (rate * now_us as f64 / 1e6) as u64;
        target.saturating_sub(done)
    } else {
        let inflight = sh.in_flight.load(Ordering::Relaxed).max(0) as u64;
        window.saturating_sub(inflight)
    };
    due.min(left).min(per_iter)
}
