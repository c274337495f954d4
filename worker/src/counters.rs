//! Per-worker statistics counters, kept in the worker's owner record of the lease table so the
//! supervisor can read them without asking the worker (and they survive a worker restart).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::codec::DropReason;

/// One counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    /// Datagrams received.
    Received = 0,
    /// DHCPDISCOVER received (decoded).
    Discover,
    /// DHCPREQUEST received.
    Request,
    /// DHCPDECLINE received.
    Decline,
    /// DHCPRELEASE received.
    Release,
    /// DHCPINFORM received.
    Inform,
    /// DHCPOFFER sent.
    Offer,
    /// DHCPACK sent.
    Ack,
    /// DHCPNAK sent.
    Nak,
    /// Every dropped request, whatever the reason.
    Dropped,
    // Engine drop reasons follow; codec drop reasons start at `CODEC_DROPS_START`.
    /// No subnet for the request (unknown relay, no served interface).
    DropNoSubnet,
    /// A broadcast arrived on an interface not listed in `interfaces`.
    DropNotServedInterface,
    /// No free address in the subnet's pools.
    DropPoolExhausted,
    /// Another writer held the slot (the client retries).
    DropBusy,
    /// A REQUEST for another server (the client chose another offer).
    DropOtherServer,
    /// A RELEASE/DECLINE for a lease the client does not hold.
    DropNotOwner,
    /// The change ring is full (a consumer lags).
    DropRingFull,
    /// Sending the reply failed.
    DropSendError,
    /// A slot failed its checksum.
    DropCorruptSlot,
    /// The reserved address of a client is held by somebody else.
    DropReservationTaken,
    /// A REQUEST without the fields its state needs.
    DropMalformedRequest,
    /// Options ignored because of bad lengths (not a drop of the packet).
    MalformedOptions,
    /// Leases expired by the sweeper.
    SweepExpired,
    /// Offers that ran out.
    SweepOfferExpired,
    /// Quarantines that ended.
    SweepQuarantineEnded,
    /// Slots failing their checksum, taken out of service by the sweeper.
    SweepAbandoned,
    /// Incremented by the worker's loop at least every 200 ms; the supervisor kills a worker
    /// whose heartbeat stops (hung or stopped) so its clients are served again.
    Heartbeat,
    /// A candidate slot outside the subnet's slot span was refused (the free bitmap or the
    /// index pointed into another subnet); the request is dropped.
    DropOutsideSpan,
    /// A REQUEST this server stays silent on (RFC 2131 §4.3.2): no record of the client and the
    /// subnet is not `authoritative`.
    DropNotAuthoritative,
    /// Wall clock steps detected and absorbed by the lease clock.
    ClockStep,
}

/// First counter index of the codec's drop reasons.
pub const CODEC_DROPS_START: usize = 32;

/// Names of the engine counters, indexed by `Counter as usize`.
pub const ENGINE_COUNTER_NAMES: [&str; 30] = [
    "received",
    "discover",
    "request",
    "decline",
    "release",
    "inform",
    "offer",
    "ack",
    "nak",
    "dropped",
    "no_subnet",
    "not_served_interface",
    "pool_exhausted",
    "busy",
    "other_server",
    "not_owner",
    "ring_full",
    "send_error",
    "corrupt_slot",
    "reservation_taken",
    "malformed_request",
    "malformed_options",
    "sweep_expired",
    "sweep_offer_expired",
    "sweep_quarantine_ended",
    "sweep_abandoned",
    "heartbeat",
    "outside_span",
    "not_authoritative",
    "clock_step",
];

/// Indexes of the drop-reason counters among the engine counters.
pub const ENGINE_DROPS: [usize; 13] = [
    Counter::DropNoSubnet as usize,
    Counter::DropNotServedInterface as usize,
    Counter::DropPoolExhausted as usize,
    Counter::DropBusy as usize,
    Counter::DropOtherServer as usize,
    Counter::DropNotOwner as usize,
    Counter::DropRingFull as usize,
    Counter::DropSendError as usize,
    Counter::DropCorruptSlot as usize,
    Counter::DropReservationTaken as usize,
    Counter::DropMalformedRequest as usize,
    Counter::DropOutsideSpan as usize,
    Counter::DropNotAuthoritative as usize,
];

/// A view of one worker's counters.
#[derive(Debug, Clone, Copy)]
pub struct Counters<'a> {
    words: &'a [AtomicU64],
}

impl<'a> Counters<'a> {
    /// Wraps the counter words of an owner record.
    pub fn new(words: &'a [AtomicU64]) -> Counters<'a> {
        Counters { words }
    }

    fn add_at(&self, i: usize, n: u64) {
        if let Some(w) = self.words.get(i) {
            w.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Adds one.
    pub fn inc(&self, c: Counter) {
        self.add_at(c as usize, 1);
    }

    /// Reads one counter.
    pub fn get(&self, c: Counter) -> u64 {
        self.words
            .get(c as usize)
            .map_or(0, |w| w.load(Ordering::Relaxed))
    }

    /// Adds `n`.
    pub fn add(&self, c: Counter, n: u64) {
        self.add_at(c as usize, n);
    }

    /// Counts a dropped request with its engine reason.
    pub fn drop_for(&self, c: Counter) {
        self.inc(Counter::Dropped);
        self.inc(c);
    }

    /// Counts a packet the codec refused.
    pub fn codec_drop(&self, r: DropReason) {
        self.inc(Counter::Dropped);
        self.add_at(CODEC_DROPS_START + r.index(), 1);
    }

    /// Every counter as (name, value), engine counters first, then the codec's drop reasons
    /// prefixed `decode_`.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let get = |i: usize| self.words.get(i).map_or(0, |w| w.load(Ordering::Relaxed));
        let mut v: Vec<(String, u64)> = ENGINE_COUNTER_NAMES
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), get(i)))
            .collect();
        for r in DropReason::ALL {
            v.push((
                format!("decode_{}", r.name()),
                get(CODEC_DROPS_START + r.index()),
            ));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_line_up_with_the_enum_and_fit_the_owner_record() {
        assert_eq!(
            ENGINE_COUNTER_NAMES[Counter::SweepQuarantineEnded as usize],
            "sweep_quarantine_ended"
        );
        assert_eq!(
            ENGINE_COUNTER_NAMES[Counter::DropMalformedRequest as usize],
            "malformed_request"
        );
        assert_eq!(
            ENGINE_COUNTER_NAMES[Counter::ClockStep as usize],
            "clock_step"
        );
        assert_eq!(ENGINE_COUNTER_NAMES.len(), Counter::ClockStep as usize + 1);
        assert!(ENGINE_COUNTER_NAMES.len() <= CODEC_DROPS_START);
        assert!(CODEC_DROPS_START + DropReason::ALL.len() <= shm_layout::layout::OWNER_COUNTERS);
        let words: Vec<AtomicU64> = (0..96).map(|_| AtomicU64::new(0)).collect();
        let c = Counters::new(&words);
        c.drop_for(Counter::DropBusy);
        c.codec_drop(DropReason::ALL[0]);
        let snap = c.snapshot();
        assert!(snap.contains(&("dropped".to_string(), 2)));
        assert!(snap.contains(&("busy".to_string(), 1)));
        assert!(snap.contains(&(format!("decode_{}", DropReason::ALL[0].name()), 1)));
    }
}
