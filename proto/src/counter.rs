//! The counter catalogue: every counter a worker keeps, as data.
//!
//! One row per counter gives its variant, the word it occupies in the worker's owner record
//! (the table file's layout: a word never moves), its name, the [`CounterGroup`] that says
//! where `stats` shows it, and its key within that group on the wire. The worker increments
//! counters by variant through [`CounterWords`], a view of its owner record's counter words; the
//! daemon reads the same words through the same view and turns them into [`crate::Counters`] by
//! walking [`Counter::ALL`]; `prodhcpctl stats` prints what it receives. Adding a row here is all it
//! takes for a new counter to appear in `prodhcpctl stats`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Where a counter is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CounterGroup {
    /// Packet counts, top-level fields of [`crate::Counters`] (`received`, `ack`, ...).
    Packets,
    /// Drop reasons, the `drops` map.
    Drops,
    /// Lease-table maintenance by the sweeper, the `sweeper` map.
    Sweeper,
    /// Other events worth watching, the `events` map.
    Events,
}

/// First owner-record word of the codec's drop reasons (`DropReason::index()` is added).
pub const CODEC_DROPS_START: usize = 32;
/// Words `CODEC_DROPS_START..CODEC_DROPS_END` are kept for the codec's drop reasons; the words
/// below 32 being all taken, other counters continue at [`CODEC_DROPS_END`].
pub const CODEC_DROPS_END: usize = 48;

/// Counter words no row may use: 26 held the worker's heartbeat before it got its own
/// owner-record word (`shm_layout::layout::OWNER_HEARTBEAT`); tables written then still hold
/// heartbeat values there, which must never be shown as a statistic.
pub const RESERVED_WORDS: &[usize] = &[26];

macro_rules! catalogue {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident = $word:literal, $name:literal, $group:ident, $key:literal;
    )*) => {
        /// One counter of a worker (see the module documentation).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Counter {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl Counter {
            /// Every counter, in the order `stats` lists them.
            pub const ALL: &'static [Counter] = &[$(Counter::$variant,)*];

            /// Index of its word among the owner record's counter words.
            pub const fn word(self) -> usize {
                match self { $(Counter::$variant => $word,)* }
            }

            /// Its name, unique in the catalogue (`received`, `busy`, `sweep_expired`,
            /// `decode_too_short`).
            pub const fn name(self) -> &'static str {
                match self { $(Counter::$variant => $name,)* }
            }

            /// Where `stats` shows it.
            pub const fn group(self) -> CounterGroup {
                match self { $(Counter::$variant => CounterGroup::$group,)* }
            }

            /// Its key within its group on the wire (`expired` in `sweeper`, `too_short` in
            /// `drops`).
            pub const fn key(self) -> &'static str {
                match self { $(Counter::$variant => $key,)* }
            }

            /// The counter kept at owner-record counter word `word`, if any.
            pub const fn at_word(word: usize) -> Option<Counter> {
                match word {
                    $($word => Some(Counter::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

catalogue! {
    /// Datagrams received.
    Received = 0, "received", Packets, "received";
    /// DHCPDISCOVER received (decoded).
    Discover = 1, "discover", Packets, "discover";
    /// DHCPREQUEST received.
    Request = 2, "request", Packets, "request";
    /// DHCPDECLINE received.
    Decline = 3, "decline", Packets, "decline";
    /// DHCPRELEASE received.
    Release = 4, "release", Packets, "release";
    /// DHCPINFORM received.
    Inform = 5, "inform", Packets, "inform";
    /// DHCPOFFER sent.
    Offer = 6, "offer", Packets, "offer";
    /// DHCPACK sent.
    Ack = 7, "ack", Packets, "ack";
    /// DHCPNAK sent.
    Nak = 8, "nak", Packets, "nak";
    /// Every dropped request, whatever the reason.
    Dropped = 9, "dropped", Packets, "dropped";
    /// No subnet for the request (unknown relay, no served interface).
    DropNoSubnet = 10, "no_subnet", Drops, "no_subnet";
    /// A broadcast arrived on an interface not listed in `interfaces`.
    DropNotServedInterface = 11, "not_served_interface", Drops, "not_served_interface";
    /// No free address in the subnet's pools.
    DropPoolExhausted = 12, "pool_exhausted", Drops, "pool_exhausted";
    /// Another writer held the slot (the client retries).
    DropBusy = 13, "busy", Drops, "busy";
    /// A REQUEST for another server (the client chose another offer).
    DropOtherServer = 14, "other_server", Drops, "other_server";
    /// A RELEASE/DECLINE for a lease the client does not hold.
    DropNotOwner = 15, "not_owner", Drops, "not_owner";
    /// The change ring is full (a consumer lags).
    DropRingFull = 16, "ring_full", Drops, "ring_full";
    /// Sending the reply failed.
    DropSendError = 17, "send_error", Drops, "send_error";
    /// A slot failed its checksum.
    DropCorruptSlot = 18, "corrupt_slot", Drops, "corrupt_slot";
    /// The reserved address of a client is held by somebody else.
    DropReservationTaken = 19, "reservation_taken", Drops, "reservation_taken";
    /// A REQUEST without the fields its state needs.
    DropMalformedRequest = 20, "malformed_request", Drops, "malformed_request";
    /// A candidate slot outside the subnet's slot span was refused (the free bitmap or the
    /// index pointed into another subnet); the request is dropped.
    DropOutsideSpan = 27, "outside_span", Drops, "outside_span";
    /// A REQUEST this server stays silent on (RFC 2131 §4.3.2): no record of the client and the
    /// subnet is not `authoritative`.
    DropNotAuthoritative = 28, "not_authoritative", Drops, "not_authoritative";
    /// Codec: shorter than the fixed header and cookie.
    DecodeTooShort = 32, "decode_too_short", Drops, "too_short";
    /// Codec: wrong magic cookie.
    DecodeBadCookie = 33, "decode_bad_cookie", Drops, "bad_cookie";
    /// Codec: `op` is not BOOTREQUEST.
    DecodeNotRequest = 34, "decode_not_request", Drops, "not_request";
    /// Codec: `hlen` over 16, or 0 without a client identifier.
    DecodeBadHlen = 35, "decode_bad_hlen", Drops, "bad_hlen";
    /// Codec: more than 16 relay hops.
    DecodeTooManyHops = 36, "decode_too_many_hops", Drops, "too_many_hops";
    /// Codec: no option 53.
    DecodeNoMessageType = 37, "decode_no_message_type", Drops, "no_message_type";
    /// Codec: option 53 malformed or not a client message type.
    DecodeBadMessageType = 38, "decode_bad_message_type", Drops, "bad_message_type";
    /// Codec: an option runs past the end of its field.
    DecodeBadOptionFraming = 39, "decode_bad_option_framing", Drops, "bad_option_framing";
    /// Codec: option 52 inside `file`/`sname`.
    DecodeOverloadLoop = 40, "decode_overload_loop", Drops, "overload_loop";
    /// A request whose reply would have to wait for synchronous replication, dropped because
    /// the worker already holds `max_held_replies` replies (the client retries).
    DropHeldFull = 56, "held_full", Drops, "held_full";
    /// A request received while the worker's gate is closed (this appliance is not the active
    /// one: standby, syncing, or syncd not running): nobody is answered.
    DropNotActive = 60, "not_active", Drops, "not_active";
    /// A request about an address in the other appliance's share while this one serves alone
    /// (the peer unreachable): only a live binding of the same client made before the
    /// interruption is answered, unchanged; anything else is left to the peer.
    DropOtherShare = 61, "other_share", Drops, "other_share";
    /// Leases expired by the sweeper.
    SweepExpired = 22, "sweep_expired", Sweeper, "expired";
    /// Offers that ran out.
    SweepOfferExpired = 23, "sweep_offer_expired", Sweeper, "offer_expired";
    /// Quarantines that ended.
    SweepQuarantineEnded = 24, "sweep_quarantine_ended", Sweeper, "quarantine_ended";
    /// Slots failing their checksum, taken out of service by the sweeper.
    SweepAbandoned = 25, "sweep_abandoned", Sweeper, "abandoned";
    /// Options ignored because of bad lengths (not a drop of the packet).
    MalformedOptions = 21, "malformed_options", Events, "malformed_options";
    /// Wall clock steps detected and absorbed by the lease clock.
    ClockStep = 29, "clock_step", Events, "clock_step";
    /// Replies held until the lease change they answer was replicated (synchronous
    /// replication).
    HeldReplies = 57, "held_replies", Events, "held_replies";
    /// Held replies released (sent, or attempted: a failed send also counts as a send error).
    HeldReleased = 58, "held_released", Events, "held_released";
    /// A gauge, not a count: replies the worker holds now (summed over the workers).
    HeldNow = 59, "held_now", Events, "held_now";
    /// Held replies dropped, never sent: the hold was cleared (last in-sync standby lost, or
    /// syncd gone) before their change was replicated, so the change may exist on this
    /// appliance only; the client retries and is served under the new role.
    HeldDropped = 62, "held_dropped", Events, "held_dropped";
    /// `durability: "power"`: writes of lease changes to stable storage (one per receive batch
    /// holding a reply that confirms a lease; a batch of OFFERs alone makes none).
    DiskSyncs = 63, "disk_syncs", Events, "disk_syncs";
    /// Microseconds spent in those writes: the wait they add to the confirming replies.
    DiskSyncMicros = 64, "disk_sync_us", Events, "disk_sync_us";
    /// Datagrams the kernel dropped because the worker's socket receive buffer was full (the
    /// worker fell behind): the socket's own count (`SO_RXQ_OVFL`) since the supervisor made
    /// it, as of the last datagram the worker read. Requests lost before any code saw them.
    KernelDropped = 65, "kernel_dropped", Events, "kernel_dropped";
}

/// A view of one worker's counters: the counter words of its owner record in the lease table
/// (`shm_layout::Table::counters`). The worker adds to them, the supervisor reads them without
/// asking the worker; they survive a worker restart. A word the slice does not hold reads as 0
/// and ignores additions.
#[derive(Debug, Clone, Copy)]
pub struct CounterWords<'a> {
    words: &'a [AtomicU64],
}

impl<'a> CounterWords<'a> {
    /// Wraps the counter words of an owner record.
    pub fn new(words: &'a [AtomicU64]) -> CounterWords<'a> {
        CounterWords { words }
    }

    /// Adds one.
    pub fn inc(&self, c: Counter) {
        self.add(c, 1);
    }

    /// Adds `n`.
    pub fn add(&self, c: Counter, n: u64) {
        if let Some(w) = self.words.get(c.word()) {
            w.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Sets a gauge (a word that holds a current value, such as [`Counter::HeldNow`]).
    pub fn set(&self, c: Counter, v: u64) {
        if let Some(w) = self.words.get(c.word()) {
            w.store(v, Ordering::Relaxed);
        }
    }

    /// Reads one counter.
    pub fn get(&self, c: Counter) -> u64 {
        self.words
            .get(c.word())
            .map_or(0, |w| w.load(Ordering::Relaxed))
    }

    /// Every counter of the catalogue as (name, value), in catalogue order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Counter::ALL
            .iter()
            .map(|&c| (c.name(), self.get(c)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn at_word_finds_every_row_and_nothing_else() {
        for &c in Counter::ALL {
            assert_eq!(Counter::at_word(c.word()), Some(c));
        }
        for w in RESERVED_WORDS {
            assert_eq!(Counter::at_word(*w), None);
        }
        assert_eq!(Counter::at_word(1000), None);
    }

    #[test]
    fn the_view_counts_in_each_counters_word_and_ignores_words_it_lacks() {
        let words: Vec<AtomicU64> = (0..96).map(|_| AtomicU64::new(0)).collect();
        let v = CounterWords::new(&words);
        v.inc(Counter::Ack);
        v.add(Counter::DropBusy, 4);
        v.inc(Counter::DecodeTooShort);
        assert_eq!(words[Counter::Ack.word()].load(Ordering::Relaxed), 1);
        assert_eq!(words[Counter::DropBusy.word()].load(Ordering::Relaxed), 4);
        assert_eq!(v.get(Counter::DecodeTooShort), 1);
        assert_eq!(v.get(Counter::Nak), 0);
        let snap = v.snapshot();
        assert_eq!(snap.len(), Counter::ALL.len());
        assert!(snap.contains(&("ack", 1)) && snap.contains(&("busy", 4)));
        assert!(snap.contains(&("decode_too_short", 1)));
        // A record shorter than the catalogue: reads 0, additions go nowhere, no panic.
        let short: Vec<AtomicU64> = (0..2).map(|_| AtomicU64::new(0)).collect();
        let v = CounterWords::new(&short);
        v.inc(Counter::ClockStep);
        assert_eq!(v.get(Counter::ClockStep), 0);
        v.inc(Counter::Discover);
        assert_eq!(v.get(Counter::Discover), 1);
    }

    #[test]
    fn words_names_and_keys_are_unique() {
        let mut words = HashSet::new();
        let mut names = HashSet::new();
        let mut keys = HashSet::new();
        for &c in Counter::ALL {
            assert!(words.insert(c.word()), "{c:?}: word {} twice", c.word());
            assert!(names.insert(c.name()), "{c:?}: name {} twice", c.name());
            assert!(
                keys.insert((c.group(), c.key())),
                "{c:?}: key {} twice",
                c.key()
            );
        }
    }

    #[test]
    fn the_words_of_the_table_file_do_not_move() {
        // Counters live in the lease table's owner records and survive restarts and upgrades:
        // these positions are part of the file's layout.
        assert_eq!(Counter::Received.word(), 0);
        assert_eq!(Counter::Dropped.word(), 9);
        assert_eq!(Counter::DropMalformedRequest.word(), 20);
        assert!(
            Counter::ALL
                .iter()
                .all(|c| !RESERVED_WORDS.contains(&c.word())),
            "a reserved word is in use"
        );
        assert_eq!(Counter::ClockStep.word(), 29);
        assert_eq!(Counter::DecodeTooShort.word(), CODEC_DROPS_START);
        assert!(Counter::ALL
            .iter()
            .filter(|c| !c.name().starts_with("decode_"))
            .all(|c| !(CODEC_DROPS_START..CODEC_DROPS_END).contains(&c.word())));
        assert!(Counter::ALL
            .iter()
            .filter(|c| c.name().starts_with("decode_"))
            .all(|c| (CODEC_DROPS_START..CODEC_DROPS_END).contains(&c.word())));
        assert_eq!(Counter::DropHeldFull.word(), 56);
        assert_eq!(Counter::HeldNow.word(), 59);
        assert_eq!(Counter::DropNotActive.word(), 60);
        assert_eq!(Counter::DropOtherShare.word(), 61);
        assert_eq!(Counter::HeldDropped.word(), 62);
    }
}
