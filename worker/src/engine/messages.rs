//! One function per message type: DISCOVER (offer), REQUEST (ACK, NAK or silence), RELEASE,
//! DECLINE, INFORM, and the lease state transitions each makes.
//!
//! # REQUEST: ACK, NAK or silence (RFC 2131 §4.3.2)
//!
//! The state is read from the packet: SELECTING (option 54 and 50), INIT-REBOOT (50, no 54,
//! ciaddr 0), RENEWING/REBINDING (ciaddr, no 54: RENEWING when unicast and not relayed,
//! REBINDING when broadcast or relayed, `renewal_state`). The subnet is chosen as for a
//! DISCOVER (82.5, 118, giaddr/relays, receiving interface, or ciaddr for a unicast renewal).
//! "Record" means a slot of the selected subnet carrying the client's key (client-id, else hardware address);
//! a "binding" is such a record that is a live lease or offer. `authoritative` is the subnet's
//! setting (ISC dhcpd's meaning, default false). Rows are checked top to bottom:
//!
//! | state              | situation                                                  | reply       |
//! |--------------------|------------------------------------------------------------|-------------|
//! | SELECTING          | option 54 names another server                             | silent (our offer withdrawn) |
//! | any                | no subnet for the request (unknown relay, 82.5, 118, ciaddr) | silent    |
//! | any                | client has a reservation at another address of the subnet | NAK, its lease at the asked address released |
//! | SELECTING          | address is ours and usable by the client                   | ACK         |
//! | SELECTING          | anything else (taken, outside the pools, off network)      | NAK         |
//! | other              | the client's live lease/offer at this address, usable      | ACK         |
//! | other              | the client's live lease/offer at this address, not usable  | NAK         |
//! | other              | client bound to another address of the subnet             | NAK         |
//! | other              | earlier record of the client at this address, usable      | ACK         |
//! | other              | earlier record of the client at this address, not usable  | NAK         |
//! | other              | address held by or reserved for another client             | NAK         |
//! | other              | no record, subnet not authoritative                        | silent      |
//! | other              | no record, authoritative, free address of the pools        | NAK         |
//! | other              | no record, authoritative, address off the subnet's network | NAK         |
//! | other              | no record, authoritative, address outside the pools        | NAK         |
//!
//! Silence is a counted drop (`no_subnet`, `not_authoritative`, `other_server`). A NAK sent
//! through a relay has the broadcast bit set (§4.3.2: "If 'giaddr' is set in the DHCPREQUEST
//! message, the client is on a different subnet. The server MUST set the broadcast bit in the
//! DHCPNAK"); without a relay it is broadcast on the receiving interface.
//! RELEASE and DECLINE naming another server in option 54 are ignored (§4.3.4, §4.3.5).
//!
//! Serving alone while the peer is unreachable (gate `Share`), a REQUEST, RELEASE or DECLINE
//! about an address of the other share is decided before this table: the client's live binding
//! from before the interruption is ACKed unchanged with the time it has left, anything else is
//! dropped, counted `other_share` (`share.rs`).
//!
//! # What the ring records (for the audit trail)
//!
//! An ACK's Commit or Renew record carries the client's state in its context
//! (`shm_layout::ring_context` tag 6), so the audit trail tells a rebind from a renewal. Every
//! NAK appends a `Nak` record (`reply.rs`, `record_nak`; `shm_layout::ring`, "NAK records"):
//! the asked address's slot and image unchanged (or no slot), the client's hardware address
//! and the asked address in the context. It changes nothing and holds no reply.

use std::net::Ipv4Addr;

use shm_layout::ring_context::RequestState;
use shm_layout::{ChangeReason, ClientKey, LeaseState, SlotImage};

use super::reply::{remaining, LeaseTimes};
use super::{is_live, Client, Engine, Incoming, Outgoing};
use crate::codec::{MessageType, Request, MAX_REPLY};
use crate::counters::Counter;

/// RENEWING or REBINDING, for a REQUEST with `ciaddr` and no server identifier (RFC 2131
/// §4.3.2): a renewing client unicasts to the server that gave it the lease, a rebinding one
/// broadcasts. A relayed request counts as broadcast (a relay agent forwards the client's
/// broadcasts; a unicast renewal travels to the server without one). A network element that
/// relays unicast renewals too (some BNGs do) makes them all read as rebinding.
pub(super) fn renewal_state(req: &Request<'_>, inc: &Incoming) -> RequestState {
    if inc.broadcast || req.giaddr != Ipv4Addr::UNSPECIFIED {
        RequestState::Rebinding
    } else {
        RequestState::Renewing
    }
}

impl Engine {
    pub(super) fn discover(
        &mut self,
        req: &Request<'_>,
        inc: &Incoming,
        now: u64,
        out: &mut [u8; MAX_REPLY],
    ) -> Result<Option<Outgoing>, Counter> {
        let subnet = self.select_subnet(req, inc)?;
        let c = Self::client(req);
        self.outside_span_hits = 0;
        let chosen = self.choose_for_discover(req, &c, subnet, now);
        if self.outside_span_hits > 0 {
            tracing::warn!(
                subnet = %self.cfg.subnets[subnet].subnet.network,
                refused = self.outside_span_hits,
                "allocation produced slots outside the subnet's span; refused them"
            );
        }
        let (slot, img) = match chosen {
            Ok(x) => x,
            Err(_) if self.outside_span_hits > 0 => return Err(Counter::DropOutsideSpan),
            Err(e) => return Err(e),
        };
        // Serving alone, a binding of the other share is offered as it is: with the time it
        // has left.
        let lease = if self.may_change(slot, &c) {
            LeaseTimes::Subnet
        } else {
            LeaseTimes::Remaining(remaining(&img, now))
        };
        let yiaddr = Ipv4Addr::from(self.table.addr_of_slot(slot).unwrap_or(0));
        self.counters().inc(Counter::Offer);
        Ok(Some(self.reply(
            req,
            inc,
            subnet,
            MessageType::Offer,
            yiaddr,
            lease,
            out,
        )))
    }

    pub(super) fn request(
        &mut self,
        req: &Request<'_>,
        inc: &Incoming,
        now: u64,
        out: &mut [u8; MAX_REPLY],
    ) -> Result<Option<Outgoing>, Counter> {
        let c = Self::client(req);
        let our_id = self.server_id(inc);
        // Which RFC 2131 §4.3.2 state is the client in?
        let (addr, state) = match (req.server_id, req.requested_ip) {
            (Some(sid), _) if sid != our_id => {
                // SELECTING another server's offer: give back what we offered.
                self.withdraw_offer(req, &c, now);
                return Err(Counter::DropOtherServer);
            }
            (Some(_), Some(a)) => (a, RequestState::Selecting),
            (Some(_), None) => return Err(Counter::DropMalformedRequest),
            (None, Some(a)) if req.ciaddr == Ipv4Addr::UNSPECIFIED => (a, RequestState::InitReboot),
            (None, _) if req.ciaddr != Ipv4Addr::UNSPECIFIED => {
                (req.ciaddr, renewal_state(req, inc))
            }
            _ => return Err(Counter::DropMalformedRequest),
        };
        let selecting = state == RequestState::Selecting;
        // A network this server does not serve (unknown relay, 82.5 or 118 subnet, ciaddr
        // outside every subnet): another server's business, whatever the state.
        let subnet = self.select_subnet(req, inc)?;
        let served = &self.cfg.subnets[subnet];
        let authoritative = served.subnet.authoritative;
        let lease_time = u64::from(served.subnet.lease_time);
        // A client with a reservation elsewhere in this subnet is moved to it; the dynamic
        // lease it asks for is given back.
        let reserved = self.reservation_of(&c);
        if reserved.is_some_and(|r| r.subnet == subnet && r.address != addr) {
            self.release_moved_client(req, &c, addr, now);
            return Ok(Some(self.nak(
                req,
                inc,
                addr,
                state,
                "client has a reserved address",
                out,
            )));
        }
        // The address's slot, if it is one of this subnet's.
        let slot = self
            .table
            .slot_of_addr(u32::from(addr))
            .filter(|s| self.cfg.subnets[subnet].contains_slot(*s));
        let cur = match slot {
            Some(s) => Some(self.read(s)?),
            None => None,
        };
        // Serving alone, an address of the other share: its client's binding from before the
        // interruption is ACKed as it is, anything else is the peer's (`share.rs`).
        if let (Some(s), Some(cur)) = (slot, cur) {
            if !self.may_change(s, &c) {
                if !self.other_share_binding(&cur, &c, now) {
                    return Err(Counter::DropOtherShare);
                }
                self.counters().inc(Counter::Ack);
                return Ok(Some(self.reply(
                    req,
                    inc,
                    subnet,
                    MessageType::Ack,
                    addr,
                    LeaseTimes::Remaining(remaining(&cur, now)),
                    out,
                )));
            }
        }
        let verdict = match (slot, cur) {
            // SELECTING: this server was chosen. ACK if the address can be the client's, NAK
            // otherwise (it cannot be served as offered).
            (Some(s), Some(cur)) if selecting && self.usable_by(s, &cur, &c, now) => Ok((s, cur)),
            _ if selecting => Err(Some("address not available")),
            // The client's live lease or offer at this address (renewals): ACK when usable.
            (Some(s), Some(cur)) if cur.key == c.key && is_live(&cur, now) => {
                if self.usable_by(s, &cur, &c, now) {
                    Ok((s, cur))
                } else {
                    Err(Some("address not available"))
                }
            }
            _ => {
                let binding = self.table.find_client(&c.key).filter(|(s, img)| {
                    self.cfg.subnets[subnet].contains_slot(*s) && is_live(img, now)
                });
                match (slot, cur) {
                    // The client is bound to another address here: two addresses for one
                    // client would follow from an ACK.
                    _ if binding.is_some() => Err(Some("client is bound to another address")),
                    // An earlier record of this client at this address (released, expired).
                    (Some(s), Some(cur)) if cur.key == c.key => {
                        if self.usable_by(s, &cur, &c, now) {
                            Ok((s, cur))
                        } else {
                            Err(Some("address not available"))
                        }
                    }
                    // The address is this server's, held by or reserved for somebody else.
                    (Some(s), Some(cur)) if !self.usable_by(s, &cur, &c, now) => {
                        Err(Some("address not available"))
                    }
                    // No record of this client: silent (RFC 2131 §4.3.2), unless the subnet is
                    // authoritative.
                    _ if !authoritative => Err(None),
                    (Some(_), _) => Err(Some("no record of this client")),
                    (None, _) if !served.subnet.contains(addr) => {
                        Err(Some("address not on this network"))
                    }
                    (None, _) => Err(Some("address not in any pool")),
                }
            }
        };
        let (slot, cur) = match verdict {
            Ok(x) => x,
            Err(Some(why)) => return Ok(Some(self.nak(req, inc, addr, state, why, out))),
            Err(None) => return Err(Counter::DropNotAuthoritative),
        };
        let reason = if cur.state == LeaseState::Leased && cur.key == c.key {
            ChangeReason::Renew
        } else {
            ChangeReason::Commit
        };
        let new = Self::holder_image(req, &c, LeaseState::Leased, now + lease_time, now);
        self.commit_in_state(slot, &cur, &new, reason, req, Some(state))?;
        self.counters().inc(Counter::Ack);
        Ok(Some(self.reply(
            req,
            inc,
            subnet,
            MessageType::Ack,
            addr,
            LeaseTimes::Subnet,
            out,
        )))
    }

    /// After a NAK that moves a client to its reservation: the dynamic lease or offer it holds
    /// (at the address it asked for, or found by its key) is released, so it does not stay
    /// leased to a client that will use its reserved address from now on.
    pub(super) fn release_moved_client(
        &self,
        req: &Request<'_>,
        c: &Client,
        addr: Ipv4Addr,
        now: u64,
    ) {
        let reserved_slot = self
            .reservation_of(c)
            .and_then(|r| self.table.slot_of_addr(u32::from(r.address)));
        let asked = self.table.slot_of_addr(u32::from(addr));
        let found = self.table.find_client(&c.key).map(|(s, _)| s);
        for slot in [asked, found].into_iter().flatten() {
            // Serving alone, the other share's slots are the peer's to change.
            if Some(slot) == reserved_slot || !self.may_change(slot, c) {
                continue;
            }
            let Ok(cur) = self.table.read(slot) else {
                continue;
            };
            if cur.key != c.key || !matches!(cur.state, LeaseState::Leased | LeaseState::Offered) {
                continue;
            }
            let new = SlotImage {
                state: LeaseState::Released,
                expires: now as u32,
                updated: now as u32,
                ..cur
            };
            if let Err(e) = self.commit(slot, &cur, &new, ChangeReason::Release, req) {
                // The NAK goes out anyway; the lease then ends at its expiry.
                self.counters().inc(e);
            }
        }
    }

    pub(super) fn withdraw_offer(&self, req: &Request<'_>, c: &Client, now: u64) {
        if let Some((slot, cur)) = self.table.find_client(&c.key) {
            if cur.state == LeaseState::Offered && self.may_change(slot, c) {
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

    pub(super) fn owned_slot(
        &self,
        c: &Client,
        addr: Ipv4Addr,
    ) -> Result<(u32, SlotImage), Counter> {
        let slot = self
            .table
            .slot_of_addr(u32::from(addr))
            .ok_or(Counter::DropNotOwner)?;
        // Serving alone: releasing or declining the other share's address could conflict
        // with the peer's changes to it.
        if !self.may_change(slot, c) {
            return Err(Counter::DropOtherShare);
        }
        let cur = self.read(slot)?;
        if cur.key != c.key || !matches!(cur.state, LeaseState::Leased | LeaseState::Offered) {
            return Err(Counter::DropNotOwner);
        }
        Ok((slot, cur))
    }

    /// RFC 2131 §4.3.4/§4.3.5: a RELEASE or DECLINE carries the server identifier of the
    /// server it is meant for; one addressed to another server is not ours to act on.
    pub(super) fn check_server_id(&self, req: &Request<'_>, inc: &Incoming) -> Result<(), Counter> {
        match req.server_id {
            Some(sid) if sid != self.server_id(inc) => Err(Counter::DropOtherServer),
            _ => Ok(()),
        }
    }

    pub(super) fn release(
        &mut self,
        req: &Request<'_>,
        inc: &Incoming,
        now: u64,
    ) -> Result<(), Counter> {
        self.check_server_id(req, inc)?;
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

    pub(super) fn decline(
        &mut self,
        req: &Request<'_>,
        inc: &Incoming,
        now: u64,
    ) -> Result<(), Counter> {
        self.check_server_id(req, inc)?;
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

    pub(super) fn inform(
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
            LeaseTimes::Inform,
            out,
        )))
    }
}
