//! What the threads of one phase share: the counters, the timeout entries the receiver hands
//! to the sender, the in-flight count and the last error.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::table::ClientTable;
use crate::sys;

/// The cumulative counters of a phase.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) sent_discover: AtomicU64,
    pub(super) sent_request: AtomicU64,
    pub(super) sent_renew: AtomicU64,
    pub(super) sent_release: AtomicU64,
    pub(super) retransmits: AtomicU64,
    pub(super) offers: AtomicU64,
    pub(super) acks: AtomicU64,
    pub(super) renew_acks: AtomicU64,
    pub(super) naks: AtomicU64,
    pub(super) failed_discover: AtomicU64,
    pub(super) failed_request: AtomicU64,
    pub(super) failed_renew: AtomicU64,
    pub(super) late: AtomicU64,
    pub(super) bad_reply: AtomicU64,
    pub(super) stray: AtomicU64,
    pub(super) unexpected: AtomicU64,
    pub(super) icmp_errors: AtomicU64,
    pub(super) send_errors: AtomicU64,
}

pub(super) fn inc(c: &AtomicU64, n: u64) {
    if n > 0 {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

pub(super) fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// A timeout entry: client slot, the state word it was queued for, and when it is due.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    pub(super) idx: u32,
    pub(super) word: u32,
    pub(super) due_us: u64,
}

pub(super) struct Shared<'a> {
    pub(super) table: &'a ClientTable,
    pub(super) counters: Counters,
    pub(super) stop: AtomicBool,
    pub(super) sender_done: AtomicBool,
    pub(super) start: Instant,
    pub(super) timeout_us: u64,
    pub(super) retransmit: bool,
    pub(super) rx_entries: Mutex<Vec<Entry>>,
    pub(super) in_flight: AtomicI64,
    pub(super) last_ack_us: AtomicU64,
    pub(super) last_renew_us: AtomicU64,
    pub(super) last_error: Mutex<Option<String>>,
    pub(super) cycle: Option<super::Cycle>,
}

impl Shared<'_> {
    pub(super) fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// The identity (MAC index) of client `index`.
    pub(super) fn identity(&self, index: u32) -> u32 {
        super::identity_of(self.cycle, index)
    }

    pub(super) fn note_error(&self, e: &io::Error) {
        let mut le = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        *le = Some(e.to_string());
    }
}

pub(super) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(super) fn account_send(sh: &Shared<'_>, o: &sys::SendOutcome) {
    inc(&sh.counters.send_errors, o.dropped as u64);
    inc(&sh.counters.icmp_errors, o.icmp_errors as u64);
    if let Some(e) = &o.last_error {
        sh.note_error(e);
    }
}
