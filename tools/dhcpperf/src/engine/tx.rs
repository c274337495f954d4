//! The send path of the sender thread: starting exchanges (DISCOVER, renewing REQUEST,
//! RELEASE) into the send batch, and the timeout queues that retransmit or declare requests
//! lost.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;

use super::shared::{account_send, inc, unix_ms, Entry, Shared};
use super::table::{phase, phase_of, seq_of, tries_of, word, Slot};
use super::{Backoff, Generator};
use crate::identity::hex_colon;
use crate::jitter::Jitter;
use crate::record::RecordEvent;
use crate::sys::SendBatch;

/// The sender thread's working state.
pub(super) struct Tx<'g, 's, 't> {
    pub(super) gen: &'g Generator,
    pub(super) sh: &'s Shared<'t>,
    pub(super) batch: SendBatch,
    pub(super) levels: Vec<VecDeque<Entry>>,
    pub(super) spare: Vec<Entry>,
    /// With jitter, timeouts are no longer ordered per level: they wait here, earliest first
    /// (due µs, slot, state word).
    pub(super) jittered: BinaryHeap<Reverse<(u64, u32, u32)>>,
    pub(super) jitter: Option<Jitter>,
}

impl Tx<'_, '_, '_> {
    pub(super) fn push(&mut self, phase: u32, index: u32, slot: &Slot) {
        if self.batch.is_full() {
            self.flush();
        }
        let f = self.gen.fields(index, self.sh.identity(index), slot);
        let tpl = self.gen.template(phase);
        let dst = self.gen.destination(tpl.kind());
        self.batch.push_with(dst, |b| tpl.write(b, &f));
    }

    pub(super) fn flush(&mut self) {
        if !self.batch.is_empty() {
            let o = self.batch.flush(self.gen.sock.as_fd());
            account_send(self.sh, &o);
        }
    }

    /// Queues the timeout of a request sent at `sent_us` with the (un-jittered) `delay_us`.
    fn queue_timeout(&mut self, level: usize, idx: u32, word: u32, sent_us: u64, delay_us: u64) {
        match &mut self.jitter {
            Some(j) => {
                let due = sent_us + j.apply(delay_us);
                self.jittered.push(Reverse((due, idx, word)));
            }
            None => self.queue(
                level,
                Entry {
                    idx,
                    word,
                    due_us: sent_us + delay_us,
                },
            ),
        }
    }

    pub(super) fn queue(&mut self, level: usize, e: Entry) {
        while self.levels.len() <= level {
            self.levels.push(VecDeque::new());
        }
        if let Some(q) = self.levels.get_mut(level) {
            q.push_back(e);
        }
    }

    /// False while client `i` (of the table) must wait: the client that used its identity
    /// before it has not finished (its exchange is in flight, or its RELEASE not yet handed to
    /// the kernel).
    pub(super) fn may_start(&self, i: u32) -> bool {
        let Some(cycle) = self.sh.cycle else {
            return true;
        };
        let table = self.sh.table;
        let Some(prev) = cycle.previous(table.base + i) else {
            return true;
        };
        // A previous user in an earlier table (sweep step) finished with its phase.
        let Some(slot) = prev
            .checked_sub(table.base)
            .and_then(|p| table.slots.get(p as usize))
        else {
            return true;
        };
        matches!(
            phase_of(slot.state.load(Ordering::Acquire)),
            phase::RELEASED | phase::FAILED | phase::NAKED
        )
    }

    pub(super) fn start_discover(&mut self, i: u32, now: u64, backoff: Option<Backoff>) {
        let Some(slot) = self.sh.table.slots.get(i as usize) else {
            return;
        };
        let old = slot.state.load(Ordering::Relaxed);
        let w = word(phase::DISCOVER_SENT, 0, seq_of(old).wrapping_add(1));
        slot.sent_us.store(now as u32, Ordering::Relaxed);
        slot.first_us.store(now as u32, Ordering::Relaxed);
        slot.state.store(w, Ordering::Release);
        self.sh.in_flight.fetch_add(1, Ordering::Relaxed);
        inc(&self.sh.counters.sent_discover, 1);
        self.push(phase::DISCOVER_SENT, self.sh.table.base + i, slot);
        let delay = backoff.map_or(self.sh.timeout_us, |b| b.initial.as_micros() as u64);
        self.queue_timeout(0, i, w, now, delay);
    }

    /// Starts a renewal if client `i` is bound; false otherwise.
    pub(super) fn start_renew(&mut self, i: u32, now: u64) -> bool {
        let Some(slot) = self.sh.table.slots.get(i as usize) else {
            return false;
        };
        let old = slot.state.load(Ordering::Acquire);
        if phase_of(old) != phase::BOUND {
            return false;
        }
        let w = word(phase::RENEW_SENT, 0, seq_of(old).wrapping_add(1));
        slot.sent_us.store(now as u32, Ordering::Relaxed);
        if slot
            .state
            .compare_exchange(old, w, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.sh.in_flight.fetch_add(1, Ordering::Relaxed);
        inc(&self.sh.counters.sent_renew, 1);
        self.push(phase::RENEW_SENT, self.sh.table.base + i, slot);
        self.queue(
            0,
            Entry {
                idx: i,
                word: w,
                due_us: now + self.sh.timeout_us,
            },
        );
        true
    }

    /// Releases client `i` if it is bound; false otherwise.
    pub(super) fn release(&mut self, i: u32, _now: u64) -> bool {
        let Some(slot) = self.sh.table.slots.get(i as usize) else {
            return false;
        };
        let old = slot.state.load(Ordering::Acquire);
        if phase_of(old) != phase::BOUND {
            return false;
        }
        let w = word(phase::RELEASED, 0, seq_of(old).wrapping_add(1));
        if slot
            .state
            .compare_exchange(old, w, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        inc(&self.sh.counters.sent_release, 1);
        let index = self.sh.table.base + i;
        let f = self.gen.fields(index, self.sh.identity(index), slot);
        if self.batch.is_full() {
            self.flush();
        }
        let tpl = &self.gen.templates.release;
        self.batch
            .push_with(self.gen.target.server, |b| tpl.write(b, &f));
        if let Some(r) = &self.gen.recorder {
            r.write_all(&[RecordEvent::Release {
                seq: r.next_seq(),
                t_ms: unix_ms(),
                mac: hex_colon(&f.mac),
                client_id: self.gen.client_id_hex(&f.mac),
                address: f.ciaddr,
            }]);
        }
        true
    }

    pub(super) fn take_rx_entries(&mut self) {
        {
            let mut q = self.sh.rx_entries.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::swap(&mut *q, &mut self.spare);
        }
        let mut taken = std::mem::take(&mut self.spare);
        let timeout = self.sh.timeout_us;
        for e in taken.drain(..) {
            // The receiver queued it at sent + timeout.
            self.queue_timeout(0, e.idx, e.word, e.due_us.saturating_sub(timeout), timeout);
        }
        self.spare = taken;
    }

    /// Handles every entry due at `now`: retransmits (with `backoff`, before `deadline_us`) or
    /// declares the request lost.
    pub(super) fn expire(&mut self, now: u64, backoff: Option<Backoff>, deadline_us: u64) {
        for level in 0..self.levels.len() {
            while let Some(e) = self.levels.get(level).and_then(|q| q.front()).copied() {
                if e.due_us > now {
                    break;
                }
                if let Some(q) = self.levels.get_mut(level) {
                    q.pop_front();
                }
                self.expire_one(e, now, backoff, deadline_us);
            }
        }
        while let Some(&Reverse((due_us, idx, word))) = self.jittered.peek() {
            if due_us > now {
                break;
            }
            self.jittered.pop();
            self.expire_one(Entry { idx, word, due_us }, now, backoff, deadline_us);
        }
    }

    pub(super) fn expire_one(
        &mut self,
        e: Entry,
        now: u64,
        backoff: Option<Backoff>,
        deadline_us: u64,
    ) {
        let sh = self.sh;
        let Some(slot) = sh.table.slots.get(e.idx as usize) else {
            return;
        };
        if slot.state.load(Ordering::Acquire) != e.word {
            return; // answered (or superseded) meanwhile
        }
        let ph = phase_of(e.word);
        if let Some(b) = backoff.filter(|_| now < deadline_us) {
            let tries = (tries_of(e.word) + 1).min(255);
            let next = word(ph, tries, seq_of(e.word));
            slot.sent_us.store(now as u32, Ordering::Relaxed);
            if slot
                .state
                .compare_exchange(e.word, next, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                return;
            }
            inc(&sh.counters.retransmits, 1);
            self.push(ph, sh.table.base + e.idx, slot);
            let (level, delay) = backoff_level(b, tries);
            self.queue_timeout(level, e.idx, next, now, delay);
            return;
        }
        let failed = match ph {
            phase::DISCOVER_SENT => &sh.counters.failed_discover,
            phase::REQUEST_SENT => &sh.counters.failed_request,
            phase::RENEW_SENT => &sh.counters.failed_renew,
            _ => return,
        };
        if slot.advance(e.word, phase::FAILED) {
            inc(failed, 1);
            sh.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The queue level and delay of retransmission `tries` (1 = first retransmission): the delay
/// doubles from `initial` up to `max`; every delay has its own level so each queue stays
/// ordered by due time.
pub(super) fn backoff_level(b: Backoff, tries: u32) -> (usize, u64) {
    let initial = b.initial.as_micros().max(1) as u64;
    let max = (b.max.as_micros() as u64).max(initial);
    let mut delay = initial;
    let mut level = 0usize;
    while level < tries as usize && delay < max {
        delay = delay.saturating_mul(2).min(max);
        level += 1;
    }
    (level, delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
        };
        let d = |t| backoff_level(b, t);
        assert_eq!(d(0), (0, 1_000_000));
        assert_eq!(d(1), (1, 2_000_000));
        assert_eq!(d(2), (2, 4_000_000));
        assert_eq!(d(3), (3, 8_000_000));
        assert_eq!(d(4), (3, 8_000_000));
        assert_eq!(d(200), (3, 8_000_000));
    }
}
