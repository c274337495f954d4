//! The DHCPv4 protocol engine (RFC 2131): turns one decoded request into table changes and at
//! most one reply.
//!
//! Architecture Invariant: nothing a client sends can panic the engine, and the engine never
//! produces a reply before the table change behind it has been committed (its change record
//! published in the ring).
//!
//! One packet goes [`Engine::handle`] (this file: decode, count, dispatch) → `route` (which
//! subnet it belongs to) → `messages` (one function per message type: the lease state
//! transitions of RFC 2131 §4.3, including the REQUEST case table) → `allocate` (which address
//! a DISCOVER gets) → `reply` (what the answer carries and where it goes). `sweep` ends
//! leases, offers and quarantines whose time has run out.
//!
//! # The gate (issue 8: roles)
//!
//! The worker's ring carries the node's role as a [`Gate`] (`shm_layout::ring`, "The gate"),
//! read once per receive batch ([`Engine::refresh_gate`]):
//! - [`Gate::Open`] (no cluster, or the active appliance): everything as described here.
//! - [`Gate::Closed`] (standby, syncing, syncd not running): every request is dropped, counted
//!   `not_active`, and the sweeper writes nothing (a standby's table is a replica: the active's
//!   expiries arrive by replication).
//! - [`Gate::Share`] (serving alone while the peer is unreachable and not confirmed down): the
//!   rules of `share.rs` — new addresses only from this node's share, no address freed during
//!   the interruption to another client, the other share's bindings answered unchanged or left
//!   to the peer (`other_share`).
//!
//! # Time
//!
//! Lease times come from a [`LeaseClock`]: the wall clock corrected for steps so a lease lasts
//! its duration in real (monotonic) time; see [`crate::clock`].

mod allocate;
mod messages;
mod reply;
mod route;
mod share;
mod sweep;
#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddrV4};

use shm_layout::{
    ChangeContext, ChangeReason, ClientKey, Gate, LeaseState, ReadError, Ring, SlotImage, Table,
    UpdateError, Writer,
};

use crate::clock::{LeaseClock, TimeSource};
use crate::codec::{self, MessageType, Request, MAX_REPLY};
use crate::counters::{Counter, CounterWords, DropCounts};
use crate::serve_config::ServeConfig;
use shm_layout::ring_context::{self, RequestState};

/// The DHCP client port.
pub const CLIENT_PORT: u16 = 68;

/// Where a request came from, as the socket layer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming {
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Interface index it arrived on (IP_PKTINFO).
    pub ifindex: u32,
    /// The local address to answer from: the destination for unicast, the interface's
    /// address for broadcast (IP_PKTINFO `ipi_spec_dst`).
    pub local: Ipv4Addr,
    /// Whether it was sent to a broadcast address.
    pub broadcast: bool,
}

/// A reply to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    /// Bytes of the reply in the output buffer.
    pub len: usize,
    /// Destination.
    pub dst: SocketAddrV4,
    /// Send through this interface (broadcasts to clients without an address).
    pub ifindex: Option<u32>,
    /// Source address to use.
    pub src: Ipv4Addr,
    /// An ACK that confirms a lease (to a REQUEST): with synchronous replication it leaves
    /// only after the lease change is replicated (`crate::held`). OFFERs (not replicated: an
    /// offer binds nothing, a standby that never saw it offers again), NAKs and ACKs to INFORM
    /// (they commit nothing) are false.
    pub confirms_lease: bool,
}

/// The engine of one worker.
#[derive(Debug)]
pub struct Engine {
    table: Table,
    ring: Ring,
    owner: u8,
    cfg: ServeConfig,
    cursors: Vec<u32>,
    sweep_span: std::ops::Range<u32>,
    sweep_pos: u32,
    /// This worker's number and the worker count, which split the table for the sweeper.
    sweep_worker: (u64, u64),
    /// Lease time (wall clock corrected for steps); see [`crate::clock`].
    clock: LeaseClock,
    /// The clock's reading for the packet or sweep step being handled, ms.
    now_ms: i64,
    /// The subnet the current DISCOVER allocates in, whose slots `offer_slot` insists on.
    offer_subnet: Option<usize>,
    /// Candidates outside `offer_subnet`'s slots refused during the current DISCOVER.
    outside_span_hits: u32,
    /// The gate as read at the start of the current receive batch ([`Engine::refresh_gate`]).
    gate: Gate,
    /// Test hook: runs between reading the client's own slot and committing the offer.
    #[cfg(test)]
    race_hook: Option<fn(&Table, u32)>,
}

struct Client {
    key: ClientKey,
    hwkey: ClientKey,
}

/// The context bytes of a record made for `req` (`shm_layout::ring_context`): the relay
/// agent's fields and the host name; with `state`, the REQUEST's RFC 2131 §4.3.2 state (tag 6);
/// with `nak_of`, a NAK record's client hardware address and requested address (tags 7, 8).
fn relay_context(
    req: &Request<'_>,
    state: Option<RequestState>,
    nak_of: Option<Ipv4Addr>,
) -> ([u8; shm_layout::ring::CONTEXT_BYTES], usize) {
    let mut buf = [0u8; shm_layout::ring::CONTEXT_BYTES];
    let n = ring_context::encode(
        &ring_context::ContextFields {
            circuit_id: req.circuit_id.as_deref(),
            remote_id: req.remote_id.as_deref(),
            hostname: req.hostname,
            giaddr: Some(req.giaddr),
            subscriber_id: req.subscriber_id.as_deref(),
            request_state: state,
            client_hwaddr: nak_of.map(|_| req.chaddr).filter(|h| !h.is_empty()),
            requested_ip: nak_of,
        },
        &mut buf,
    );
    (buf, n)
}

/// Worker `w`'s share of `slots` slots for the expiry sweeper (of `workers`).
fn sweep_share(slots: u32, w: u64, workers: u64) -> std::ops::Range<u32> {
    let n = u64::from(slots);
    (n * w / workers) as u32..(n * (w + 1) / workers) as u32
}

/// Whether `img` is a binding that still holds its address (a live lease or offer).
fn is_live(img: &SlotImage, now: u64) -> bool {
    matches!(img.state, LeaseState::Leased | LeaseState::Offered) && u64::from(img.expires) > now
}

impl Engine {
    /// An engine writing as `owner` (one worker = one owner) into `table`, recording changes in
    /// `ring`. `worker`/`workers` split the table for the expiry sweeper.
    pub fn new(
        table: Table,
        ring: Ring,
        owner: u8,
        cfg: ServeConfig,
        worker: usize,
        workers: usize,
    ) -> Engine {
        Engine::with_clock(
            table,
            ring,
            owner,
            cfg,
            worker,
            workers,
            Box::<crate::clock::SystemClock>::default(),
        )
    }

    /// [`Engine::new`] with its time taken from `time` (tests inject a hand-driven clock). A wall
    /// clock before 2024 is replaced by the time of the newest change in this worker's ring.
    pub fn with_clock(
        table: Table,
        ring: Ring,
        owner: u8,
        cfg: ServeConfig,
        worker: usize,
        workers: usize,
        time: Box<dyn TimeSource>,
    ) -> Engine {
        let floor_ms = ring
            .read(ring.head())
            .map_or(0, |r| i64::try_from(r.time_ms).unwrap_or(i64::MAX));
        let clock = LeaseClock::new(time, floor_ms);
        let workers = workers.max(1) as u64;
        let w = (worker as u64).min(workers - 1);
        let sweep_span = sweep_share(table.slot_count(), w, workers);
        let cursors = cfg
            .subnets
            .iter()
            .map(|s| match s.spans.first() {
                Some(first) => {
                    let len = u64::from(first.end - first.start);
                    first.start + (len * w / workers) as u32
                }
                None => 0,
            })
            .collect();
        Engine {
            table,
            ring,
            owner,
            cfg,
            cursors,
            sweep_pos: sweep_span.start,
            sweep_span,
            sweep_worker: (w, workers),
            clock,
            now_ms: 0,
            offer_subnet: None,
            outside_span_hits: 0,
            gate: Gate::Open,
            #[cfg(test)]
            race_hook: None,
        }
    }

    /// Reads the lease clock (absorbing and counting a step) for the work that follows;
    /// returns lease time in unix seconds.
    fn tick(&mut self) -> u64 {
        let (now_ms, step) = self.clock.tick();
        if step.is_some() {
            self.counters().inc(Counter::ClockStep);
        }
        self.now_ms = now_ms;
        u64::try_from(now_ms / 1000).unwrap_or(0)
    }

    /// The lease clock's current correction (lease time minus wall time), ms.
    pub fn clock_offset_ms(&self) -> i64 {
        self.clock.offset_ms()
    }

    /// Re-reads the table's range directory if the supervisor changed it (a live pool change,
    /// issue 10), and the sweeper's share of the table with it. Called before building the
    /// [`ServeConfig`] of a new configuration. Returns whether it changed.
    pub fn refresh_layout(&mut self) -> Result<bool, String> {
        let changed = self.table.refresh_layout()?;
        if changed {
            let (w, workers) = self.sweep_worker;
            self.sweep_span = sweep_share(self.table.slot_count(), w, workers);
            if !self.sweep_span.contains(&self.sweep_pos) {
                self.sweep_pos = self.sweep_span.start;
            }
        }
        Ok(changed)
    }

    /// Swaps in a new configuration (built against the table as it is now). A new number of
    /// workers (changed on reload) gives this worker another share of the expiry sweep.
    pub fn reconfigure(&mut self, cfg: ServeConfig) {
        let workers = cfg.config.effective_workers().max(1) as u64;
        if workers != self.sweep_worker.1 {
            let w = self.sweep_worker.0.min(workers - 1);
            self.sweep_worker = (w, workers);
            self.sweep_span = sweep_share(self.table.slot_count(), w, workers);
            self.sweep_pos = self.sweep_span.start;
        }
        self.cursors.resize(cfg.subnets.len(), 0);
        for (c, s) in self.cursors.iter_mut().zip(&cfg.subnets) {
            if !s.contains_slot(*c) {
                *c = s.spans.first().map_or(0, |r| r.start);
            }
        }
        self.cfg = cfg;
    }

    /// Reads the gate from the ring (one acquire load) for the requests that follow: the
    /// worker calls it once per receive batch. Returns it.
    pub fn refresh_gate(&mut self) -> Gate {
        self.gate = self.ring.serving_gate();
        self.gate
    }

    /// The table.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// This worker's change ring.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Writes to the table as this worker's owner, recorded in its ring.
    fn writer(&self) -> Writer<'_> {
        Writer::new(&self.table, self.owner, &self.ring)
    }

    /// This worker's counters.
    pub fn counters(&self) -> CounterWords<'_> {
        CounterWords::new(self.table.counters(self.owner))
    }

    /// Handles one datagram; returns the reply to send, written into `out`.
    pub fn handle(
        &mut self,
        pkt: &[u8],
        inc: &Incoming,
        out: &mut [u8; MAX_REPLY],
    ) -> Option<Outgoing> {
        self.counters().inc(Counter::Received);
        if self.gate == Gate::Closed {
            // Not the active appliance: nobody is answered (the worker usually drops a closed
            // batch whole before it gets here).
            self.counters().drop_for(Counter::DropNotActive);
            return None;
        }
        let req = match codec::decode(pkt) {
            Ok(r) => r,
            Err(reason) => {
                self.counters().codec_drop(reason);
                return None;
            }
        };
        if req.malformed_options > 0 {
            self.counters()
                .add(Counter::MalformedOptions, u64::from(req.malformed_options));
        }
        let now = self.tick();
        let result = match req.msg_type {
            MessageType::Discover => {
                self.counters().inc(Counter::Discover);
                self.discover(&req, inc, now, out)
            }
            MessageType::Request => {
                self.counters().inc(Counter::Request);
                self.request(&req, inc, now, out)
            }
            MessageType::Release => {
                self.counters().inc(Counter::Release);
                self.release(&req, inc, now).map(|_| None)
            }
            MessageType::Decline => {
                self.counters().inc(Counter::Decline);
                self.decline(&req, inc, now).map(|_| None)
            }
            MessageType::Inform => {
                self.counters().inc(Counter::Inform);
                self.inform(&req, inc, out)
            }
            _ => Err(Counter::DropMalformedRequest),
        };
        match result {
            Ok(reply) => reply,
            Err(c) => {
                self.counters().drop_for(c);
                None
            }
        }
    }

    fn client(req: &Request<'_>) -> Client {
        let hwkey = ClientKey::from_hwaddr(req.htype, req.chaddr);
        let key = match &req.client_id {
            Some(id) if !id.is_empty() => ClientKey::from_client_id(id),
            _ => hwkey,
        };
        Client { key, hwkey }
    }

    fn commit(
        &self,
        slot: u32,
        cur: &SlotImage,
        new: &SlotImage,
        reason: ChangeReason,
        req: &Request<'_>,
    ) -> Result<SlotImage, Counter> {
        self.commit_in_state(slot, cur, new, reason, req, None)
    }

    /// [`Engine::commit`] of a REQUEST's ACK: the record's context also carries the client's
    /// RFC 2131 §4.3.2 state (ring context tag 6).
    fn commit_in_state(
        &self,
        slot: u32,
        cur: &SlotImage,
        new: &SlotImage,
        reason: ChangeReason,
        req: &Request<'_>,
        state: Option<RequestState>,
    ) -> Result<SlotImage, Counter> {
        let (ctx, n) = relay_context(req, state, None);
        let time_ms = u64::try_from(self.now_ms).unwrap_or(0);
        self.writer()
            .update(
                slot,
                cur,
                new,
                &ChangeContext {
                    reason,
                    time_ms,
                    context: &ctx[..n],
                },
            )
            .map_err(|e| match e {
                UpdateError::Conflict => Counter::DropBusy,
                UpdateError::RingFull(_) => Counter::DropRingFull,
                UpdateError::OutOfRange => Counter::DropMalformedRequest,
            })
    }

    fn read(&self, slot: u32) -> Result<SlotImage, Counter> {
        self.table.read(slot).map_err(|e| match e {
            ReadError::Busy => Counter::DropBusy,
            ReadError::Corrupt(_) => Counter::DropCorruptSlot,
            ReadError::OutOfRange => Counter::DropMalformedRequest,
        })
    }

    fn holder_image(
        req: &Request<'_>,
        c: &Client,
        state: LeaseState,
        expires: u64,
        now: u64,
    ) -> SlotImage {
        let mut img = SlotImage {
            state,
            expires: expires.min(u64::from(u32::MAX)) as u32,
            updated: now as u32,
            key: c.key,
            ..SlotImage::PRISTINE
        };
        img.set_hwaddr(req.htype, req.chaddr);
        img
    }
}
