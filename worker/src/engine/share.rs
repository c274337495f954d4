//! Serving alone while the peer is unreachable ([`Gate::Share`], issue 8 item 5).
//!
//! A pair of appliances cannot tell a dead peer from a cut link, so while the peer is
//! unreachable and not confirmed down each side may serve, and the shares keep them from ever
//! giving one address to two clients. The rules (the `Share` type's doc in `shm_layout::ring`):
//!
//! - **New addresses** (bitmap scan, requested address, a free, expired or released slot from
//!   the client's history) come only from slots this node's share owns (`slot % count ==
//!   index`).
//! - **Freed during the interruption**: an address of this share that became free at or after
//!   `since` (a Free/Released/Expired slot with `updated >= since`, or a lease or offer whose
//!   expiry is at or after `since`) goes to no *other* client — the peer may have renewed or
//!   re-offered it in a change that never reached this node. Its own client may have it back.
//! - **The other share**: a slot this node does not own is served only when it holds a live
//!   binding (leased or offered, not expired) of the same client last changed before `since`,
//!   and then *unchanged*: a DISCOVER is offered the binding as it is, a REQUEST is ACKed with
//!   the remaining lease time (expiry − now) and nothing is committed. Anything else about such
//!   a slot — another REQUEST, a RELEASE, a DECLINE — is dropped, counted `other_share`: the
//!   peer owns it, and a change here could conflict with the peer's. A DISCOVER whose client's
//!   old address is in the other share and not such a binding gets a new address of this share.
//! - **Reservations** are served on both sides: a reservation is for one client, so serving it
//!   twice cannot give its address to two clients.
//!
//! The sweeper, too, leaves the other share's slots alone (`sweep.rs`).

use shm_layout::{Gate, LeaseState, Share, SlotImage};

use super::{is_live, Client, Engine};

impl Engine {
    /// The share this engine serves under, if the gate is [`Gate::Share`].
    pub(super) fn share(&self) -> Option<Share> {
        match self.gate {
            Gate::Share(s) => Some(s),
            _ => None,
        }
    }

    /// Whether `slot` holds `c`'s reserved address.
    pub(super) fn is_reservation_of(&self, slot: u32, c: &Client) -> bool {
        self.reservation_of(c).is_some_and(|r| {
            self.table
                .slot_of_addr(u32::from(r.address))
                .is_some_and(|s| s == slot)
        })
    }

    /// Whether this node may change `slot` for client `c`: always with an open gate; in a
    /// share, the slots the share owns and the client's own reservation.
    pub(super) fn may_change(&self, slot: u32, c: &Client) -> bool {
        match self.share() {
            None => true,
            Some(s) => s.owns(slot) || self.is_reservation_of(slot, c),
        }
    }

    /// In a share: whether `cur` is a slot of the other share this node answers `c` about —
    /// a live binding of `c` last changed before the interruption. It is served unchanged.
    pub(super) fn other_share_binding(&self, cur: &SlotImage, c: &Client, now: u64) -> bool {
        self.share()
            .is_some_and(|s| cur.key == c.key && is_live(cur, now) && cur.updated < s.since)
    }
}

/// Whether `cur` became free at or after `since`: a free, released or expired slot changed
/// then, or a lease or offer that ran out then (the sweeper may not have reached it yet).
pub(super) fn freed_since(cur: &SlotImage, since: u32, now: u64) -> bool {
    match cur.state {
        LeaseState::Free | LeaseState::Released | LeaseState::Expired => cur.updated >= since,
        LeaseState::Leased | LeaseState::Offered => {
            u64::from(cur.expires) <= now && cur.expires >= since
        }
        LeaseState::Reserved | LeaseState::Declined | LeaseState::Abandoned => false,
    }
}
