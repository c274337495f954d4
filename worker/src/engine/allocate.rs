//! Choosing the address a DISCOVER is offered: the client's reservation, then its current or
//! previous address, then the address it asks for, then the free bitmap from this worker's
//! cursor (passing over recently freed addresses).
//!
//! Serving alone while the peer is unreachable ([`shm_layout::Gate::Share`]), every candidate
//! also obeys the share rules of `share.rs`.
//!
//! # Allocation guard
//!
//! Every candidate of a DISCOVER (reservation, the client's previous address, the requested
//! address, the bitmap scan) must lie in the selected subnet's slot span; one outside is
//! refused, logged, and the request counted as `outside_span`.

use shm_layout::{ChangeReason, LeaseState, Share, SlotImage};

use super::share::freed_since;
use super::{Client, Engine};
use crate::codec::Request;
use crate::counters::Counter;

/// Candidate free slots tried per allocation before giving up.
const ALLOC_ATTEMPTS: usize = 64;
/// Serving alone: free slots of the other share the bitmap scan may step over per DISCOVER
/// (each a bitmap lookup, no slot read) before it reports this share exhausted.
const SHARE_SKIPS: usize = 4096;

/// The first slot of share `s` at or after `from`, wrapping to the span's start past its end.
fn next_owned(s: Share, from: u32, span: &std::ops::Range<u32>) -> u32 {
    let count = u32::from(s.count.max(1));
    let index = u32::from(s.index) % count;
    let at = |from: u32| from + (index + count - from % count) % count;
    match at(from) {
        slot if slot < span.end => slot,
        _ => at(span.start),
    }
}

impl Engine {
    /// The client's reservation, by its identity (client-id) or its hardware address.
    pub(super) fn reservation_of(&self, c: &Client) -> Option<crate::serve_config::ReservedFor> {
        let by_key = &self.cfg.reservation_by_key;
        by_key.get(&c.key).or_else(|| by_key.get(&c.hwkey)).copied()
    }

    /// Whether `cur` may be given to client `c`: it is theirs, or allocatable and not reserved
    /// for somebody else.
    pub(super) fn usable_by(&self, slot: u32, cur: &SlotImage, c: &Client, now: u64) -> bool {
        let Some(addr) = self.table.addr_of_slot(slot) else {
            return false;
        };
        if self.cfg.reserved_for_other(addr, &c.key, &c.hwkey) {
            return false;
        }
        let mine = cur.key == c.key;
        // Serving alone (`share.rs`): only this share's slots, and none freed during the
        // interruption for another client; the client's own reservation always.
        if let Some(s) = self.share() {
            if !self.is_reservation_of(slot, c)
                && (!s.owns(slot) || (!mine && freed_since(cur, s.since, now)))
            {
                return false;
            }
        }
        // An address in a pool or reserved; not one a live pool change took out of every pool
        // (its slot and lease stay until the lease ends, but it is not renewed or offered).
        let served = self.table.slot_in_pool(slot) || self.cfg.reserved_addrs.contains_key(&addr);
        match cur.state {
            LeaseState::Leased | LeaseState::Offered => {
                served && (mine || u64::from(cur.expires) <= now)
            }
            LeaseState::Reserved => mine || self.cfg.reserved_addrs.contains_key(&addr),
            LeaseState::Free | LeaseState::Released | LeaseState::Expired => served,
            LeaseState::Declined | LeaseState::Abandoned => false,
        }
    }

    /// Picks (and marks offered) an address for a DISCOVER.
    pub(super) fn choose_for_discover(
        &mut self,
        req: &Request<'_>,
        c: &Client,
        subnet: usize,
        now: u64,
    ) -> Result<(u32, SlotImage), Counter> {
        self.offer_subnet = Some(subnet);
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
        // 2. The client's current or previous address in this subnet. When its slot is
        // momentarily busy (another writer changed or holds it between our read and our
        // commit: the supervisor, an importer, a sweeper), look again once rather than give
        // the client a second address.
        for attempt in 0..2 {
            let Some((slot, cur)) = self.table.find_client(&c.key) else {
                break;
            };
            if !self.cfg.subnets[subnet].contains_slot(slot) {
                break;
            }
            if !self.may_change(slot, c) {
                // Serving alone, the client's address is in the other share: its live
                // binding from before the interruption is offered as it is; anything else
                // there is the peer's, and the client gets a new address of this share.
                if self.other_share_binding(&cur, c, now) {
                    return Ok((slot, cur));
                }
                break;
            }
            if !self.usable_by(slot, &cur, c, now) {
                break;
            }
            #[cfg(test)]
            if let Some(hook) = self.race_hook.take() {
                hook(&self.table, slot);
            }
            match self.offer_slot(req, c, slot, &cur, hold, now) {
                Ok(x) => return Ok(x),
                Err(Counter::DropBusy) if attempt == 0 => continue,
                Err(_) => break,
            }
        }
        // 3. The address it asks for.
        if let Some(slot) = req
            .requested_ip
            .and_then(|a| self.table.slot_of_addr(u32::from(a)))
            .filter(|s| self.cfg.subnets[subnet].contains_slot(*s) && self.table.is_free(*s))
        {
            if let Ok(cur) = self.read(slot) {
                if self.usable_by(slot, &cur, c, now) {
                    if let Ok(x) = self.offer_slot(req, c, slot, &cur, hold, now) {
                        return Ok(x);
                    }
                }
            }
        }
        // 4. A free address from the bitmap, starting at this worker's cursor (which only moves
        //    forward, past every address examined). An address another client gave back less
        //    than RECENTLY_FREED_SECS ago is passed over, at most RECENT_SKIPS times per
        //    DISCOVER: never-used and long-free addresses go first, so a returning client
        //    usually still finds its old address free (step 2), as with Kea and dhcpd. When the
        //    scan finds only such addresses (bound reached, wrapped or ran dry), it takes the
        //    least recently freed of those it passed over. Cost: at most RECENT_SKIPS more slot
        //    reads per DISCOVER, never a scan.
        //    A subnet whose addresses lie in several runs of slots (live pool changes) is
        //    scanned run by run, from the run holding the cursor.
        let runs = self.cfg.subnets[subnet].spans.len();
        let cursor = self.cursors[subnet];
        let at = self.cfg.subnets[subnet]
            .spans
            .iter()
            .position(|r| r.contains(&cursor))
            .unwrap_or(0);
        for i in 0..runs {
            let span = self.cfg.subnets[subnet].spans[(at + i) % runs].clone();
            let start = if i == 0 { cursor } else { span.start };
            match self.scan_span(req, c, subnet, span, start, hold, now) {
                Err(Counter::DropPoolExhausted) => continue,
                other => return other,
            }
        }
        Err(Counter::DropPoolExhausted)
    }

    /// Step 4 of [`Engine::choose_for_discover`] within one run of the subnet's slots.
    #[allow(clippy::too_many_arguments)]
    fn scan_span(
        &mut self,
        req: &Request<'_>,
        c: &Client,
        subnet: usize,
        span: std::ops::Range<u32>,
        cursor: u32,
        hold: u64,
        now: u64,
    ) -> Result<(u32, SlotImage), Counter> {
        const RECENTLY_FREED_SECS: u64 = 3600;
        const RECENT_SKIPS: usize = 8;
        let recently_freed = |cur: &SlotImage| {
            !cur.key.is_none()
                && cur.key != c.key
                && now.saturating_sub(u64::from(cur.updated)) < RECENTLY_FREED_SECS
        };
        let share = self.share();
        let mut share_skips = 0;
        let mut first_foreign = None;
        let mut start = cursor;
        let mut passed_over: Option<(u32, SlotImage)> = None; // the least recently freed
        let mut first_passed = None;
        let mut skips = 0;
        let mut attempts = 0;
        while attempts < ALLOC_ATTEMPTS + RECENT_SKIPS {
            let mut found = self.table.next_free(span.clone(), start);
            // Serving alone: free slots of the other share are stepped over to this share's
            // next slot (not an attempt: nothing was tried), at most SHARE_SKIPS times; when
            // the scan comes back round to the first one stepped over (or the budget is
            // spent), this share has nothing more: as if the bitmap were empty (the least
            // recently freed address passed over, if any, is still taken).
            if let (Some(s), Some(slot)) = (share, found) {
                if !s.owns(slot) {
                    if first_foreign == Some(slot) || share_skips >= SHARE_SKIPS {
                        found = None;
                    } else {
                        first_foreign.get_or_insert(slot);
                        share_skips += 1;
                        start = next_owned(s, slot + 1, &span);
                        continue;
                    }
                }
            }
            attempts += 1;
            let skipping = skips < RECENT_SKIPS && found.is_some() && found != first_passed;
            let (slot, cur) = match passed_over {
                Some(oldest) if !skipping => {
                    skips = RECENT_SKIPS;
                    passed_over = None;
                    oldest
                }
                _ => {
                    let slot = found.ok_or(Counter::DropPoolExhausted)?;
                    start = if slot + 1 >= span.end {
                        span.start
                    } else {
                        slot + 1
                    };
                    let Ok(cur) = self.read(slot) else { continue };
                    if !cur.state.is_allocatable() {
                        continue;
                    }
                    if share.is_some_and(|s| cur.key != c.key && freed_since(&cur, s.since, now)) {
                        // Freed during the interruption: for its own client only.
                        continue;
                    }
                    if skipping && recently_freed(&cur) {
                        skips += 1;
                        first_passed.get_or_insert(slot);
                        if passed_over.is_none_or(|(_, p)| cur.updated < p.updated) {
                            passed_over = Some((slot, cur));
                        }
                        continue;
                    }
                    (slot, cur)
                }
            };
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

    pub(super) fn offer_slot(
        &mut self,
        req: &Request<'_>,
        c: &Client,
        slot: u32,
        cur: &SlotImage,
        hold: u64,
        now: u64,
    ) -> Result<(u32, SlotImage), Counter> {
        // Second line of defence: whatever found the candidate (reservation, index, bitmap
        // scan), it must be one of this subnet's slots, or the client would be offered another
        // network's address with this network's mask and router.
        if !self
            .offer_subnet
            .is_some_and(|s| self.cfg.subnets[s].contains_slot(slot))
        {
            self.outside_span_hits += 1;
            return Err(Counter::DropOutsideSpan);
        }
        if cur.state == LeaseState::Leased && cur.key == c.key && u64::from(cur.expires) > now {
            // Already bound: offer the same lease again without changing it.
            return Ok((slot, *cur));
        }
        let new = Self::holder_image(req, c, LeaseState::Offered, hold, now);
        let img = self.commit(slot, cur, &new, ChangeReason::Offer, req)?;
        Ok((slot, img))
    }
}
