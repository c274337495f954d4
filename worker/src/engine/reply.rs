//! Replies: an OFFER or ACK with the subnet's options and lease times, a NAK with its message,
//! and where each goes (RFC 2131 §4.1: the relay, ciaddr, or a broadcast on the receiving
//! interface).

use std::net::{Ipv4Addr, SocketAddrV4};

use shm_layout::ring_context::RequestState;
use shm_layout::{ChangeReason, RecordInput, SlotImage, NO_SLOT};

use super::{relay_context, Engine, Incoming, Outgoing, CLIENT_PORT};
use crate::codec::{encode_reply, MessageType, ReplyParams, Request, MAX_REPLY};
use crate::counters::Counter;

/// The lease times an OFFER or ACK carries (options 51, 58, 59).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeaseTimes {
    /// The subnet's lease, renewal and rebinding times (a lease just made or extended).
    Subnet,
    /// A binding served unchanged (serving alone, the other share's address): the seconds it
    /// has left, renewal and rebinding no later than the subnet's and than half and 7/8 of it.
    Remaining(u32),
    /// None: an ACK to an INFORM.
    Inform,
}

/// Seconds `img`'s binding has left at `now` (at least 1).
pub(super) fn remaining(img: &shm_layout::SlotImage, now: u64) -> u32 {
    u64::from(img.expires)
        .saturating_sub(now)
        .clamp(1, u64::from(u32::MAX)) as u32
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reply(
        &self,
        req: &Request<'_>,
        inc: &Incoming,
        subnet: usize,
        msg_type: MessageType,
        yiaddr: Ipv4Addr,
        times: LeaseTimes,
        out: &mut [u8; MAX_REPLY],
    ) -> Outgoing {
        let s = &self.cfg.subnets[subnet].subnet;
        let (lease, (lease_time, renewal_time, rebinding_time)) = match times {
            LeaseTimes::Subnet => (
                true,
                (Some(s.lease_time), Some(s.renew_time), Some(s.rebind_time)),
            ),
            LeaseTimes::Remaining(left) => (
                true,
                (
                    Some(left),
                    Some(s.renew_time.min(left / 2)),
                    Some(s.rebind_time.min((u64::from(left) * 7 / 8) as u32)),
                ),
            ),
            LeaseTimes::Inform => (false, (None, None, None)),
        };
        let params = ReplyParams {
            msg_type,
            yiaddr,
            ciaddr: if msg_type == MessageType::Ack {
                req.ciaddr
            } else {
                Ipv4Addr::UNSPECIFIED
            },
            server_id: self.server_id(inc),
            lease_time,
            renewal_time,
            rebinding_time,
            options: &s.options,
            message: None,
        };
        let len = encode_reply(req, &params, out);
        Outgoing {
            confirms_lease: msg_type == MessageType::Ack && lease,
            ..self.destination(req, inc, len, false)
        }
    }

    /// A DHCPNAK to a REQUEST for `asked` (the requested address, or `ciaddr` of a renewal)
    /// from a client in `state`, recorded in the ring first ([`Engine::record_nak`]).
    pub(super) fn nak(
        &self,
        req: &Request<'_>,
        inc: &Incoming,
        asked: Ipv4Addr,
        state: RequestState,
        why: &str,
        out: &mut [u8; MAX_REPLY],
    ) -> Outgoing {
        self.counters().inc(Counter::Nak);
        self.record_nak(req, asked, state);
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
        if req.giaddr != Ipv4Addr::UNSPECIFIED {
            // RFC 2131 §4.3.2: "The server MUST set the broadcast bit in the DHCPNAK, so that
            // the relay agent will broadcast the DHCPNAK to the client" (its address is wrong).
            out[10] |= 0x80;
        }
        self.destination(req, inc, len, true)
    }

    /// Appends the NAK's [`ChangeReason::Nak`] record for the audit trail (`shm_layout::ring`,
    /// "NAK records"): the slot of `asked` with its image as it is, or [`NO_SLOT`] and the empty
    /// image when the table does not hold `asked` (or its slot cannot be read now: busy or
    /// damaged); the context carries the relay fields, `state`, the client's hardware address
    /// and `asked`. Nothing in the table changes, and the reply is not held for it.
    fn record_nak(&self, req: &Request<'_>, asked: Ipv4Addr, state: RequestState) {
        let (slot, image) = self
            .table
            .slot_of_addr(u32::from(asked))
            .and_then(|s| self.table.read(s).ok().map(|img| (s, img)))
            .unwrap_or((NO_SLOT, SlotImage::PRISTINE));
        let (ctx, n) = relay_context(req, Some(state), Some(asked));
        let rec = RecordInput {
            slot,
            reason: ChangeReason::Nak,
            time_ms: u64::try_from(self.now_ms).unwrap_or(0),
            epoch: self.table.epoch(),
            image: &image,
            context: &ctx[..n],
        };
        // `Ring::append` cannot fail since lagging consumers are evicted; were it to, the NAK
        // would still go out (it changes nothing, so no state depends on the record).
        let _ = self.ring.append(&rec);
    }

    /// RFC 2131 §4.1: to the relay, to ciaddr, or broadcast on the receiving interface.
    pub(super) fn destination(
        &self,
        req: &Request<'_>,
        inc: &Incoming,
        len: usize,
        nak: bool,
    ) -> Outgoing {
        let src = self.server_id(inc);
        if req.giaddr != Ipv4Addr::UNSPECIFIED {
            return Outgoing {
                len,
                dst: SocketAddrV4::new(req.giaddr, self.cfg.config.listen_port),
                ifindex: None,
                src: inc.local,
                confirms_lease: false,
            };
        }
        if !nak && req.ciaddr != Ipv4Addr::UNSPECIFIED {
            return Outgoing {
                len,
                dst: SocketAddrV4::new(req.ciaddr, CLIENT_PORT),
                ifindex: None,
                src: inc.local,
                confirms_lease: false,
            };
        }
        // A client without an address: broadcast on the interface it came from (unicasting to
        // yiaddr would need an ARP entry the client cannot answer yet).
        Outgoing {
            len,
            dst: SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT),
            ifindex: Some(inc.ifindex),
            src,
            confirms_lease: false,
        }
    }
}
