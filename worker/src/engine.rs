//! The DHCPv4 protocol engine (RFC 2131): turns one decoded request into table changes and at
//! most one reply.
//!
//! Architecture Invariant: nothing a client sends can panic the engine, and the engine never
//! produces a reply before the table change behind it has been committed (its change record
//! published in the ring).

use std::net::{Ipv4Addr, SocketAddrV4};

use shm_layout::{
    ChangeContext, ChangeReason, ClientKey, LeaseState, ReadError, Ring, SlotImage, Table,
    UpdateError,
};

use crate::codec::{self, encode_reply, MessageType, ReplyParams, Request, MAX_REPLY};
use crate::counters::{Counter, Counters};
use crate::serve_config::ServeConfig;

/// The DHCP client port.
pub const CLIENT_PORT: u16 = 68;
/// Candidate free slots tried per allocation before giving up.
const ALLOC_ATTEMPTS: usize = 64;

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
}

struct Client {
    key: ClientKey,
    hwkey: ClientKey,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn relay_context(req: &Request<'_>) -> ([u8; 200], usize) {
    // circuit-id and remote-id, each as (len, bytes), truncated to fit a ring record.
    let mut buf = [0u8; 200];
    let mut n = 0;
    for part in [req.circuit_id, req.remote_id, req.hostname] {
        let p = part.unwrap_or(&[]);
        let take = p.len().min(60);
        buf[n] = take as u8;
        buf[n + 1..n + 1 + take].copy_from_slice(&p[..take]);
        n += 1 + take;
    }
    (buf, n)
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
        let n = table.slot_count() as u64;
        let workers = workers.max(1) as u64;
        let w = (worker as u64).min(workers - 1);
        let sweep_span = (n * w / workers) as u32..(n * (w + 1) / workers) as u32;
        let cursors = cfg
            .subnets
            .iter()
            .map(|s| {
                let len = u64::from(s.span.end - s.span.start);
                s.span.start + (len * w / workers) as u32
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
        }
    }

    /// Swaps in a new configuration (same table layout).
    pub fn reconfigure(&mut self, cfg: ServeConfig) {
        self.cursors.resize(cfg.subnets.len(), 0);
        for (c, s) in self.cursors.iter_mut().zip(&cfg.subnets) {
            if !s.span.contains(c) {
                *c = s.span.start;
            }
        }
        self.cfg = cfg;
    }

    /// The table.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// This worker's change ring.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// This worker's counters.
    pub fn counters(&self) -> Counters<'_> {
        Counters::new(self.table.counters(self.owner))
    }

    /// Handles one datagram; returns the reply to send, written into `out`.
    pub fn handle(
        &mut self,
        pkt: &[u8],
        inc: &Incoming,
        out: &mut [u8; MAX_REPLY],
    ) -> Option<Outgoing> {
        self.counters().inc(Counter::Received);
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
        let now = unix_now();
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

    /// RFC 3527 link selection, then RFC 3011 subnet selection, then giaddr; for direct
    /// clients the receiving interface (or ciaddr for unicast renewals).
    fn select_subnet(&self, req: &Request<'_>, inc: &Incoming) -> Result<usize, Counter> {
        let cfg = &self.cfg;
        if req.giaddr != Ipv4Addr::UNSPECIFIED {
            if let Some(a) = req.link_selection {
                return cfg.subnet_for_addr(a).ok_or(Counter::DropNoSubnet);
            }
            if let Some(a) = req.subnet_selection {
                return cfg.subnet_for_addr(a).ok_or(Counter::DropNoSubnet);
            }
            return cfg
                .subnet_for_relay(req.giaddr)
                .ok_or(Counter::DropNoSubnet);
        }
        if let Some(a) = req.subnet_selection {
            return cfg.subnet_for_addr(a).ok_or(Counter::DropNoSubnet);
        }
        if !inc.broadcast && req.ciaddr != Ipv4Addr::UNSPECIFIED {
            return cfg.subnet_for_addr(req.ciaddr).ok_or(Counter::DropNoSubnet);
        }
        if !cfg.served_ifindexes.contains(&inc.ifindex) {
            return Err(Counter::DropNotServedInterface);
        }
        cfg.subnet_for_addr(inc.local).ok_or(Counter::DropNoSubnet)
    }

    fn server_id(&self, inc: &Incoming) -> Ipv4Addr {
        self.cfg.config.server_id.unwrap_or(inc.local)
    }

    fn commit(
        &self,
        slot: u32,
        cur: &SlotImage,
        new: &SlotImage,
        reason: ChangeReason,
        req: &Request<'_>,
    ) -> Result<SlotImage, Counter> {
        let (ctx, n) = relay_context(req);
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.table
            .update(
                self.owner,
                &self.ring,
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

    /// The client's reservation, by its identity (client-id) or its hardware address.
    fn reservation_of(&self, c: &Client) -> Option<crate::serve_config::ReservedFor> {
        let by_key = &self.cfg.reservation_by_key;
        by_key.get(&c.key).or_else(|| by_key.get(&c.hwkey)).copied()
    }

    /// Whether `cur` may be given to client `c`: it is theirs, or allocatable and not reserved
    /// for somebody else.
    fn usable_by(&self, slot: u32, cur: &SlotImage, c: &Client, now: u64) -> bool {
        let Some(addr) = self.table.addr_of_slot(slot) else {
            return false;
        };
        if self.cfg.reserved_for_other(addr, &c.key, &c.hwkey) {
            return false;
        }
        let mine = cur.key == c.key;
        match cur.state {
            LeaseState::Leased | LeaseState::Offered => mine || u64::from(cur.expires) <= now,
            LeaseState::Reserved => mine || self.cfg.reserved_addrs.contains_key(&addr),
            LeaseState::Free | LeaseState::Released | LeaseState::Expired => {
                mine || self.table.slot_in_pool(slot) || self.cfg.reserved_addrs.contains_key(&addr)
            }
            LeaseState::Declined | LeaseState::Abandoned => false,
        }
    }

    /// Picks (and marks offered) an address for a DISCOVER.
    fn choose_for_discover(
        &mut self,
        req: &Request<'_>,
        c: &Client,
        subnet: usize,
        now: u64,
    ) -> Result<(u32, SlotImage), Counter> {
        let span = self.cfg.subnets[subnet].span.clone();
        let hold = now + u64::from(self.cfg.config.offer_hold);
        // 1. A reservation.
        let reserved = self.reservation_of(c);
        if let Some(r) = reserved.filter(|r| r.subnet == subnet) {
            let slot = self
                .table
                .slot_of_addr(u32::from(r.address))
                .ok_or(Counter::DropReservationTaken)?;
            let cur = self.read(slot)?;
            if !self.usable_by(slot, &cur, c, now) && cur.key != c.key {
                return Err(Counter::DropReservationTaken);
            }
            return self.offer_slot(req, c, slot, &cur, hold, now);
        }
        // 2. The client's current or previous address in this subnet.
        if let Some((slot, cur)) = self.table.find_client(&c.key) {
            if span.contains(&slot) && self.usable_by(slot, &cur, c, now) {
                if let Ok(x) = self.offer_slot(req, c, slot, &cur, hold, now) {
                    return Ok(x);
                }
            }
        }
        // 3. The address it asks for.
        if let Some(slot) = req
            .requested_ip
            .and_then(|a| self.table.slot_of_addr(u32::from(a)))
            .filter(|s| span.contains(s) && self.table.is_free(*s))
        {
            if let Ok(cur) = self.read(slot) {
                if self.usable_by(slot, &cur, c, now) {
                    if let Ok(x) = self.offer_slot(req, c, slot, &cur, hold, now) {
                        return Ok(x);
                    }
                }
            }
        }
        // 4. A free address from the bitmap, starting at this worker's cursor.
        let mut start = self.cursors[subnet];
        for _ in 0..ALLOC_ATTEMPTS {
            let slot = self
                .table
                .next_free(span.clone(), start)
                .ok_or(Counter::DropPoolExhausted)?;
            start = if slot + 1 >= span.end {
                span.start
            } else {
                slot + 1
            };
            let Ok(cur) = self.read(slot) else { continue };
            if !cur.state.is_allocatable() {
                continue;
            }
            let addr = self.table.addr_of_slot(slot).unwrap_or(0);
            if self.cfg.reserved_for_other(addr, &c.key, &c.hwkey) {
                // Park it as reserved so the bitmap stops offering it.
                let keep = SlotImage {
                    state: LeaseState::Reserved,
                    updated: now as u32,
                    ..cur
                };
                let _ = self.commit(slot, &cur, &keep, ChangeReason::Reservation, req);
                continue;
            }
            if let Ok(x) = self.offer_slot(req, c, slot, &cur, hold, now) {
                self.cursors[subnet] = start;
                return Ok(x);
            }
        }
        Err(Counter::DropBusy)
    }

    fn offer_slot(
        &self,
        req: &Request<'_>,
        c: &Client,
        slot: u32,
        cur: &SlotImage,
        hold: u64,
        now: u64,
    ) -> Result<(u32, SlotImage), Counter> {
        if cur.state == LeaseState::Leased && cur.key == c.key && u64::from(cur.expires) > now {
            // Already bound: offer the same lease again without changing it.
            return Ok((slot, *cur));
        }
        let new = Self::holder_image(req, c, LeaseState::Offered, hold, now);
        let img = self.commit(slot, cur, &new, ChangeReason::Offer, req)?;
        Ok((slot, img))
    }

    fn discover(
        &mut self,
        req: &Request<'_>,
        inc: &Incoming,
        now: u64,
        out: &mut [u8; MAX_REPLY],
    ) -> Result<Option<Outgoing>, Counter> {
        let subnet = self.select_subnet(req, inc)?;
        let c = Self::client(req);
        let (slot, _) = self.choose_for_discover(req, &c, subnet, now)?;
        let yiaddr = Ipv4Addr::from(self.table.addr_of_slot(slot).unwrap_or(0));
        self.counters().inc(Counter::Offer);
        Ok(Some(self.reply(
            req,
            inc,
            subnet,
            MessageType::Offer,
            yiaddr,
            None,
            out,
        )))
    }

    fn request(
        &mut self,
        req: &Request<'_>,
        inc: &Incoming,
        now: u64,
        out: &mut [u8; MAX_REPLY],
    ) -> Result<Option<Outgoing>, Counter> {
        let c = Self::client(req);
        let our_id = self.server_id(inc);
        // Which RFC 2131 §4.3.2 state is the client in?
        let (addr, selecting) = match (req.server_id, req.requested_ip) {
            (Some(sid), _) if sid != our_id => {
                // SELECTING another server's offer: give back what we offered.
                self.withdraw_offer(req, &c, now);
                return Err(Counter::DropOtherServer);
            }
            (Some(_), Some(a)) => (a, true),
            (Some(_), None) => return Err(Counter::DropMalformedRequest),
            (None, Some(a)) if req.ciaddr == Ipv4Addr::UNSPECIFIED => (a, false), // INIT-REBOOT
            (None, _) if req.ciaddr != Ipv4Addr::UNSPECIFIED => (req.ciaddr, false), // RENEW/REBIND
            _ => return Err(Counter::DropMalformedRequest),
        };
        let subnet = match self.select_subnet(req, inc) {
            Ok(s) => s,
            Err(Counter::DropNoSubnet) if !selecting => {
                return Ok(Some(self.nak(req, inc, "no subnet for this network", out)));
            }
            Err(e) => return Err(e),
        };
        let s = &self.cfg.subnets[subnet].subnet;
        if !s.contains(addr) {
            return Ok(Some(self.nak(req, inc, "address not on this network", out)));
        }
        // A client with a reservation elsewhere in this subnet is moved to it.
        let reserved = self.reservation_of(&c);
        if reserved.is_some_and(|r| r.subnet == subnet && r.address != addr) {
            return Ok(Some(self.nak(
                req,
                inc,
                "client has a reserved address",
                out,
            )));
        }
        let Some(slot) = self.table.slot_of_addr(u32::from(addr)) else {
            return Ok(Some(self.nak(req, inc, "address not in any pool", out)));
        };
        let cur = self.read(slot)?;
        if !self.usable_by(slot, &cur, &c, now) {
            return Ok(Some(self.nak(req, inc, "address not available", out)));
        }
        let lease_time = u64::from(s.lease_time);
        let reason = if cur.state == LeaseState::Leased && cur.key == c.key {
            ChangeReason::Renew
        } else {
            ChangeReason::Commit
        };
        let new = Self::holder_image(req, &c, LeaseState::Leased, now + lease_time, now);
        self.commit(slot, &cur, &new, reason, req)?;
        self.counters().inc(Counter::Ack);
        Ok(Some(self.reply(
            req,
            inc,
            subnet,
            MessageType::Ack,
            addr,
            None,
            out,
        )))
    }

    fn withdraw_offer(&self, req: &Request<'_>, c: &Client, now: u64) {
        if let Some((slot, cur)) = self.table.find_client(&c.key) {
            if cur.state == LeaseState::Offered {
                let new = SlotImage {
                    state: LeaseState::Free,
                    expires: 0,
                    updated: now as u32,
                    ..cur
                };
                let _ = self.commit(slot, &cur, &new, ChangeReason::OfferExpire, req);
            }
        }
    }

    fn owned_slot(&self, c: &Client, addr: Ipv4Addr) -> Result<(u32, SlotImage), Counter> {
        let slot = self
            .table
            .slot_of_addr(u32::from(addr))
            .ok_or(Counter::DropNotOwner)?;
        let cur = self.read(slot)?;
        if cur.key != c.key || !matches!(cur.state, LeaseState::Leased | LeaseState::Offered) {
            return Err(Counter::DropNotOwner);
        }
        Ok((slot, cur))
    }

    fn release(&mut self, req: &Request<'_>, _inc: &Incoming, now: u64) -> Result<(), Counter> {
        let c = Self::client(req);
        let (slot, cur) = self.owned_slot(&c, req.ciaddr)?;
        let new = SlotImage {
            state: LeaseState::Released,
            expires: now as u32,
            updated: now as u32,
            ..cur
        };
        self.commit(slot, &cur, &new, ChangeReason::Release, req)?;
        Ok(())
    }

    fn decline(&mut self, req: &Request<'_>, _inc: &Incoming, now: u64) -> Result<(), Counter> {
        let c = Self::client(req);
        let addr = req.requested_ip.ok_or(Counter::DropMalformedRequest)?;
        let (slot, cur) = self.owned_slot(&c, addr)?;
        let new = SlotImage {
            state: LeaseState::Declined,
            expires: (now + u64::from(self.cfg.config.decline_quarantine)).min(u64::from(u32::MAX))
                as u32,
            updated: now as u32,
            key: ClientKey::NONE,
            ..cur
        };
        self.commit(slot, &cur, &new, ChangeReason::Decline, req)?;
        Ok(())
    }

    fn inform(
        &mut self,
        req: &Request<'_>,
        inc: &Incoming,
        out: &mut [u8; MAX_REPLY],
    ) -> Result<Option<Outgoing>, Counter> {
        let subnet = if req.giaddr == Ipv4Addr::UNSPECIFIED && req.ciaddr != Ipv4Addr::UNSPECIFIED {
            self.cfg
                .subnet_for_addr(req.ciaddr)
                .ok_or(Counter::DropNoSubnet)?
        } else {
            self.select_subnet(req, inc)?
        };
        self.counters().inc(Counter::Ack);
        Ok(Some(self.reply(
            req,
            inc,
            subnet,
            MessageType::Ack,
            Ipv4Addr::UNSPECIFIED,
            Some(()),
            out,
        )))
    }

    fn nak(
        &self,
        req: &Request<'_>,
        inc: &Incoming,
        why: &str,
        out: &mut [u8; MAX_REPLY],
    ) -> Outgoing {
        self.counters().inc(Counter::Nak);
        let empty = prodhcp_config::options::OptionBlock::new();
        let params = ReplyParams {
            msg_type: MessageType::Nak,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            server_id: self.server_id(inc),
            lease_time: None,
            renewal_time: None,
            rebinding_time: None,
            options: &empty,
            message: Some(why),
        };
        let len = encode_reply(req, &params, out);
        self.destination(req, inc, len, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn reply(
        &self,
        req: &Request<'_>,
        inc: &Incoming,
        subnet: usize,
        msg_type: MessageType,
        yiaddr: Ipv4Addr,
        inform: Option<()>,
        out: &mut [u8; MAX_REPLY],
    ) -> Outgoing {
        let s = &self.cfg.subnets[subnet].subnet;
        let lease = inform.is_none();
        let params = ReplyParams {
            msg_type,
            yiaddr,
            ciaddr: if msg_type == MessageType::Ack {
                req.ciaddr
            } else {
                Ipv4Addr::UNSPECIFIED
            },
            server_id: self.server_id(inc),
            lease_time: lease.then_some(s.lease_time),
            renewal_time: lease.then_some(s.renew_time),
            rebinding_time: lease.then_some(s.rebind_time),
            options: &s.options,
            message: None,
        };
        let len = encode_reply(req, &params, out);
        self.destination(req, inc, len, false)
    }

    /// RFC 2131 §4.1: to the relay, to ciaddr, or broadcast on the receiving interface.
    fn destination(&self, req: &Request<'_>, inc: &Incoming, len: usize, nak: bool) -> Outgoing {
        let src = self.server_id(inc);
        if req.giaddr != Ipv4Addr::UNSPECIFIED {
            return Outgoing {
                len,
                dst: SocketAddrV4::new(req.giaddr, self.cfg.config.listen_port),
                ifindex: None,
                src: inc.local,
            };
        }
        if !nak && req.ciaddr != Ipv4Addr::UNSPECIFIED {
            return Outgoing {
                len,
                dst: SocketAddrV4::new(req.ciaddr, CLIENT_PORT),
                ifindex: None,
                src: inc.local,
            };
        }
        // A client without an address: broadcast on the interface it came from (unicasting to
        // yiaddr would need an ARP entry the client cannot answer yet).
        Outgoing {
            len,
            dst: SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT),
            ifindex: Some(inc.ifindex),
            src,
        }
    }

    /// Sweeps up to `budget` slots of this worker's share of the table: expired leases become
    /// expired (allocatable), expired offers free, ended quarantines free. Returns slots visited.
    pub fn sweep(&mut self, budget: u32) -> u32 {
        let now = unix_now();
        let span = self.sweep_span.clone();
        if span.is_empty() {
            return 0;
        }
        let mut visited = 0;
        while visited < budget {
            let slot = self.sweep_pos;
            self.sweep_pos = if slot + 1 >= span.end {
                span.start
            } else {
                slot + 1
            };
            visited += 1;
            let cur = match self.table.read(slot) {
                Ok(c) => c,
                Err(ReadError::Corrupt(_)) => {
                    if self.table.abandon_corrupt(self.owner, &self.ring, slot) {
                        self.counters().inc(Counter::SweepAbandoned);
                    }
                    continue;
                }
                Err(_) => continue,
            };
            if cur.state == LeaseState::Reserved {
                let addr = self.table.addr_of_slot(slot).unwrap_or(0);
                if !self.cfg.reserved_addrs.contains_key(&addr) {
                    // Reserved by an earlier configuration only: back to the pool.
                    let new = SlotImage {
                        state: LeaseState::Free,
                        updated: now as u32,
                        ..cur
                    };
                    let _ = self.table.update(
                        self.owner,
                        &self.ring,
                        slot,
                        &cur,
                        &new,
                        &ChangeContext {
                            reason: ChangeReason::Reservation,
                            time_ms: now * 1000,
                            context: b"",
                        },
                    );
                }
                continue;
            }
            if cur.expires == 0 || u64::from(cur.expires) > now {
                continue;
            }
            let (state, reason, counter) = match cur.state {
                LeaseState::Leased => (
                    LeaseState::Expired,
                    ChangeReason::Expire,
                    Counter::SweepExpired,
                ),
                LeaseState::Offered => (
                    LeaseState::Free,
                    ChangeReason::OfferExpire,
                    Counter::SweepOfferExpired,
                ),
                LeaseState::Declined => (
                    LeaseState::Free,
                    ChangeReason::QuarantineEnd,
                    Counter::SweepQuarantineEnded,
                ),
                _ => continue,
            };
            let new = SlotImage {
                state,
                updated: now as u32,
                ..cur
            };
            let ok = self
                .table
                .update(
                    self.owner,
                    &self.ring,
                    slot,
                    &cur,
                    &new,
                    &ChangeContext {
                        reason,
                        time_ms: now * 1000,
                        context: b"",
                    },
                )
                .is_ok();
            if ok {
                self.counters().inc(counter);
            }
        }
        visited
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{layout_of, ring_path};
    use dhcproto::{v4, Decodable};

    const CFG: &str = r#"(
        state_dir: "/tmp/unused",
        control_socket: "/tmp/unused/ctl.sock",
        interfaces: [],
        workers: 1,
        offer_hold: 30,
        decline_quarantine: 600,
        subnets: [
            (
                network: "10.0.0.0/24",
                pools: ["10.0.0.10-10.0.0.12"],
                lease_time: 3600,
                relays: ["198.18.0.2"],
                options: { "routers": "10.0.0.1" },
                reservations: [(mac: "02:00:00:00:00:99", address: "10.0.0.11")],
            ),
            (
                network: "10.1.0.0/16",
                pools: ["10.1.0.10-10.1.0.200"],
                lease_time: 600,
            ),
        ],
    )"#;

    struct Fx {
        _dir: tempfile::TempDir,
        engine: Engine,
    }

    fn fixture() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let text = CFG.replace("/tmp/unused", dir.path().to_str().unwrap());
        let config = prodhcp_config::parse(&text).unwrap();
        let table = Table::create(&config.table_file, &layout_of(&config)).unwrap();
        let ring = Ring::open_or_create(&ring_path(&config, 1), 1, 1024).unwrap();
        let serve = ServeConfig::build(config, &table);
        Fx {
            _dir: dir,
            engine: Engine::new(table, ring, 1, serve, 0, 1),
        }
    }

    fn packet(
        kind: u8,
        mac: u8,
        giaddr: [u8; 4],
        ciaddr: [u8; 4],
        opts: &[(u8, &[u8])],
    ) -> Vec<u8> {
        let mut p = vec![0u8; 240];
        p[0] = 1;
        p[1] = 1;
        p[2] = 6;
        p[4..8].copy_from_slice(&[0, 0, 0, mac]);
        p[12..16].copy_from_slice(&ciaddr);
        p[24..28].copy_from_slice(&giaddr);
        p[28..34].copy_from_slice(&[2, 0, 0, 0, 0, mac]);
        p[236..240].copy_from_slice(&[99, 130, 83, 99]);
        p.extend_from_slice(&[53, 1, kind]);
        for (code, val) in opts {
            p.push(*code);
            p.push(val.len() as u8);
            p.extend_from_slice(val);
        }
        p.push(255);
        p
    }

    const RELAY: [u8; 4] = [198, 18, 0, 2];
    const NONE: [u8; 4] = [0, 0, 0, 0];

    fn inc() -> Incoming {
        Incoming {
            src: SocketAddrV4::new(Ipv4Addr::from(RELAY), 67),
            ifindex: 1,
            local: Ipv4Addr::new(198, 18, 0, 1),
            broadcast: false,
        }
    }

    fn send(e: &mut Engine, pkt: &[u8]) -> Option<(v4::Message, Outgoing)> {
        let mut out = [0u8; MAX_REPLY];
        let o = e.handle(pkt, &inc(), &mut out)?;
        Some((
            v4::Message::decode(&mut dhcproto::Decoder::new(&out[..o.len])).unwrap(),
            o,
        ))
    }

    fn msg_type(m: &v4::Message) -> v4::MessageType {
        m.opts().msg_type().unwrap()
    }

    fn dora(e: &mut Engine, mac: u8) -> Ipv4Addr {
        let (offer, o) = send(e, &packet(1, mac, RELAY, NONE, &[])).expect("offer");
        assert_eq!(msg_type(&offer), v4::MessageType::Offer);
        assert_eq!(
            o.dst,
            SocketAddrV4::new(Ipv4Addr::from(RELAY), 67),
            "to the relay"
        );
        let ip = offer.yiaddr();
        let sid = [198, 18, 0, 1];
        let (ack, _) = send(
            e,
            &packet(3, mac, RELAY, NONE, &[(50, &ip.octets()), (54, &sid)]),
        )
        .expect("ack");
        assert_eq!(msg_type(&ack), v4::MessageType::Ack);
        assert_eq!(ack.yiaddr(), ip);
        ip
    }

    #[test]
    fn dora_commits_a_lease_and_the_client_gets_it_back() {
        let mut f = fixture();
        let ip = dora(&mut f.engine, 1);
        let slot = f.engine.table().slot_of_addr(u32::from(ip)).unwrap();
        let img = f.engine.table().read(slot).unwrap();
        assert_eq!(img.state, LeaseState::Leased);
        assert_eq!(img.hwaddr(), &[2, 0, 0, 0, 0, 1]);
        assert_eq!(dora(&mut f.engine, 1), ip, "same client, same address");
        assert!(f.engine.table().check().is_clean());
    }

    #[test]
    fn reserved_address_is_never_given_to_others_even_at_exhaustion() {
        let mut f = fixture();
        // Pool 10.0.0.10-12 with .11 reserved: two other clients fit, the third gets nothing.
        let a = dora(&mut f.engine, 1);
        let b = dora(&mut f.engine, 2);
        assert!(![a, b].contains(&Ipv4Addr::new(10, 0, 0, 11)));
        assert!(send(&mut f.engine, &packet(1, 3, RELAY, NONE, &[])).is_none());
        // A request for the reserved address by someone else is NAKed.
        let (nak, _) = send(
            &mut f.engine,
            &packet(3, 4, RELAY, NONE, &[(50, &[10, 0, 0, 11])]),
        )
        .unwrap();
        assert_eq!(msg_type(&nak), v4::MessageType::Nak);
        // The reserved client still gets its address.
        assert_eq!(dora(&mut f.engine, 0x99), Ipv4Addr::new(10, 0, 0, 11));
    }

    #[test]
    fn release_and_decline_change_state_and_are_only_accepted_from_the_holder() {
        let mut f = fixture();
        let ip = dora(&mut f.engine, 1);
        let slot = f.engine.table().slot_of_addr(u32::from(ip)).unwrap();
        // Someone else's RELEASE is ignored.
        assert!(send(&mut f.engine, &packet(7, 2, NONE, ip.octets(), &[])).is_none());
        assert_eq!(
            f.engine.table().read(slot).unwrap().state,
            LeaseState::Leased
        );
        assert!(send(&mut f.engine, &packet(7, 1, NONE, ip.octets(), &[])).is_none());
        assert_eq!(
            f.engine.table().read(slot).unwrap().state,
            LeaseState::Released
        );
        assert!(f.engine.table().is_free(slot));
        let ip2 = dora(&mut f.engine, 1);
        assert_eq!(ip2, ip, "a released address goes back to its client");
        assert!(send(
            &mut f.engine,
            &packet(4, 1, RELAY, NONE, &[(50, &ip.octets())])
        )
        .is_none());
        let img = f.engine.table().read(slot).unwrap();
        assert_eq!(img.state, LeaseState::Declined);
        assert!(!f.engine.table().is_free(slot));
        assert_ne!(
            dora(&mut f.engine, 1),
            ip,
            "a declined address is quarantined"
        );
    }

    #[test]
    fn wrong_subnet_init_reboot_is_naked_and_link_selection_wins() {
        let mut f = fixture();
        let (nak, _) = send(
            &mut f.engine,
            &packet(3, 1, RELAY, NONE, &[(50, &[10, 1, 0, 50])]),
        )
        .unwrap();
        assert_eq!(msg_type(&nak), v4::MessageType::Nak);
        // 82.5 link selection → the 10.1.0.0/16 subnet, even though giaddr maps to 10.0.0.0/24.
        let ls: &[u8] = &[5, 4, 10, 1, 0, 1];
        let (offer, _) = send(&mut f.engine, &packet(1, 5, RELAY, NONE, &[(82, ls)])).unwrap();
        assert!(offer.yiaddr().octets().starts_with(&[10, 1]));
        // 118 subnet selection likewise.
        let (offer, _) = send(
            &mut f.engine,
            &packet(1, 6, RELAY, NONE, &[(118, &[10, 1, 0, 0])]),
        )
        .unwrap();
        assert!(offer.yiaddr().octets().starts_with(&[10, 1]));
    }

    #[test]
    fn inform_acks_without_a_lease() {
        let mut f = fixture();
        let free_before = f.engine.table().count_free(0..3);
        let (ack, o) = send(&mut f.engine, &packet(8, 1, NONE, [10, 0, 0, 50], &[])).unwrap();
        assert_eq!(msg_type(&ack), v4::MessageType::Ack);
        assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(ack.opts().get(v4::OptionCode::AddressLeaseTime).is_none());
        assert_eq!(
            o.dst,
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 50), CLIENT_PORT)
        );
        assert_eq!(
            f.engine.table().count_free(0..3),
            free_before,
            "no lease taken"
        );
    }

    #[test]
    fn sweeper_expires_leases_and_offers() {
        let mut f = fixture();
        let ip = dora(&mut f.engine, 1);
        let slot = f.engine.table().slot_of_addr(u32::from(ip)).unwrap();
        // Age the lease by rewriting its expiry into the past.
        let cur = f.engine.table().read(slot).unwrap();
        let old = SlotImage { expires: 1, ..cur };
        f.engine
            .table
            .update(
                1,
                &f.engine.ring,
                slot,
                &cur,
                &old,
                &ChangeContext {
                    reason: ChangeReason::Renew,
                    time_ms: 0,
                    context: b"",
                },
            )
            .unwrap();
        f.engine.sweep(10_000);
        let img = f.engine.table().read(slot).unwrap();
        assert_eq!(img.state, LeaseState::Expired);
        assert!(f.engine.table().is_free(slot));
        assert!(f.engine.table().check().is_clean());
    }

    #[test]
    fn sweeper_abandons_a_slot_that_fails_its_checksum() {
        use std::os::unix::fs::FileExt;
        let mut f = fixture();
        let ip = dora(&mut f.engine, 1);
        let slot = f.engine.table().slot_of_addr(u32::from(ip)).unwrap();
        let off = (f.engine.table().geometry().slots_off as u64 + u64::from(slot) * 8) * 8 + 20;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(f.engine.table().path())
            .unwrap();
        let mut b = [0u8; 1];
        file.read_exact_at(&mut b, off).unwrap();
        file.write_all_at(&[b[0] ^ 0x10], off).unwrap();
        assert!(matches!(
            f.engine.table().read(slot),
            Err(ReadError::Corrupt(_))
        ));
        f.engine.sweep(10_000);
        let img = f.engine.table().read(slot).unwrap();
        assert_eq!(img.state, LeaseState::Abandoned);
        assert!(!f.engine.table().is_free(slot));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_are_counted() {
        let mut f = fixture();
        let mut seed = 0x1234_5678_u64;
        let base = packet(1, 1, RELAY, NONE, &[(55, &[1, 3, 6])]);
        for i in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut p = base.clone();
            let n = (seed % p.len() as u64) as usize;
            p.truncate(if i % 3 == 0 { n } else { p.len() });
            let k = (seed >> 20) as usize % p.len().max(1);
            if let Some(b) = p.get_mut(k) {
                *b = (seed >> 40) as u8;
            }
            let mut out = [0u8; MAX_REPLY];
            let _ = f.engine.handle(&p, &inc(), &mut out);
        }
        let snap = f.engine.counters().snapshot();
        let get = |n: &str| snap.iter().find(|(k, _)| k == n).map(|x| x.1).unwrap_or(0);
        assert_eq!(get("received"), 20_000);
        assert!(get("dropped") > 0);
        assert!(f.engine.table().check().is_clean());
    }
}
