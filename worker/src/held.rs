//! Replies held for synchronous replication.
//!
//! With `replication: "sync"` and a standby in sync, syncd sets the hold on each worker ring
//! (`shm_layout::Ring::hold_replies`). While it is set, a reply that confirms a lease (an ACK
//! to a REQUEST: `Outgoing::confirms_lease`) does not leave when its batch is done: it is held
//! here with the ring's head at that moment (the worker is the ring's only producer, so that
//! is at least its own record) and sent once `Ring::replicated` reaches it. syncd publishes
//! the replicated position and then rings the worker's doorbell (an eventfd); the worker also
//! looks once per loop turn and per receive batch (two memory reads).
//!
//! A held reply is only ever sent once `replicated` covers it. When the hold is cleared while
//! replies are held (syncd lost its last in-sync standby, went async, or died and the
//! supervisor cleared it), the ones `replicated` does not cover are **dropped, never sent**
//! (counted `held_dropped`): their change may exist on this appliance only, and this
//! appliance may no longer be the one that serves (a standby that takes over without the
//! change must not find a client holding an ACK for it). The client retries and is answered
//! under the new role. (Before issue 8's roles a cleared hold sent them all.)
//!
//! What is held and why:
//! - ACK to a REQUEST (a new lease, a renewal): the client takes the address on it, so the
//!   standby must have the lease first.
//! - OFFER: not held. An offer binds nothing; if the active dies, the client's REQUEST reaches
//!   the new active, which either has no offer record (it ACKs if the address is free for the
//!   client, or NAKs and the client starts over) — no address is ever confirmed to two clients.
//! - NAK and ACK to INFORM: not held, they commit nothing.
//! - Any reply to a client (chaddr) that already has a reply held is held behind it, so a
//!   client's replies leave in the order they were made.
//!
//! Bounded: at most `max_held_replies`; past that the reply is refused (the caller drops the
//! request, counted as `held_full`) — the worker never blocks.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};

/// Offset of `chaddr` in a BOOTP message (RFC 2131 §2).
const CHADDR: std::ops::Range<usize> = 28..44;

/// The client a reply is for: its `chaddr` field (zeros for a reply too short to have one).
pub fn client_of(reply: &[u8]) -> [u8; 16] {
    let mut k = [0u8; 16];
    if let Some(c) = reply.get(CHADDR) {
        k.copy_from_slice(c);
    }
    k
}

/// One held reply: its bytes and where it goes, as the send path takes them.
#[derive(Debug)]
pub struct HeldReply {
    /// Sent once the ring's replicated position reaches this sequence number.
    pub seq: u64,
    /// The datagram.
    pub bytes: Vec<u8>,
    /// Destination.
    pub dst: SocketAddrV4,
    /// Interface to send through (broadcasts to clients without an address).
    pub ifindex: Option<u32>,
    /// Source address.
    pub src: Ipv4Addr,
    client: [u8; 16],
}

/// What [`HeldReplies::release`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// Replies handed to the send path (replicated).
    pub sent: usize,
    /// Replies dropped unsent (the hold was cleared before they were replicated).
    pub dropped: usize,
}

/// The queue is full: the reply was not held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// The held replies of one worker, oldest first (their sequence numbers never decrease).
#[derive(Debug)]
pub struct HeldReplies {
    queue: VecDeque<HeldReply>,
    /// Replies held per client (`chaddr`), for keeping each client's order.
    clients: HashMap<[u8; 16], u32>,
    /// Buffers of sent replies, reused.
    spare: Vec<Vec<u8>>,
    max: usize,
}

impl HeldReplies {
    /// An empty queue holding at most `max` replies.
    pub fn new(max: usize) -> HeldReplies {
        HeldReplies {
            queue: VecDeque::new(),
            clients: HashMap::new(),
            spare: Vec::new(),
            max,
        }
    }

    /// Changes the bound (a reload). A queue already longer keeps its replies and takes no
    /// new one until it is below the bound.
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Replies held now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether a reply to `client` is held (a later reply to it must wait behind it).
    pub fn holds_client(&self, client: &[u8; 16]) -> bool {
        !self.clients.is_empty() && self.clients.contains_key(client)
    }

    /// Holds `reply` until the replicated position reaches `seq`; [`Full`] at the bound.
    /// `seq` must not be lower than that of a reply held before (the ring's head never moves
    /// back).
    pub fn hold(
        &mut self,
        seq: u64,
        reply: &[u8],
        dst: SocketAddrV4,
        ifindex: Option<u32>,
        src: Ipv4Addr,
    ) -> Result<(), Full> {
        if self.queue.len() >= self.max {
            return Err(Full);
        }
        debug_assert!(self.queue.back().is_none_or(|b| b.seq <= seq));
        let mut bytes = self.spare.pop().unwrap_or_default();
        bytes.clear();
        bytes.extend_from_slice(reply);
        let client = client_of(reply);
        *self.clients.entry(client).or_insert(0) += 1;
        self.queue.push_back(HeldReply {
            seq,
            bytes,
            dst,
            ifindex,
            src,
            client,
        });
        Ok(())
    }

    /// Forgets the replies held after the first `keep` (a batch whose changes could not be
    /// made durable: its replies must not leave); returns how many.
    pub fn truncate(&mut self, keep: usize) -> usize {
        let mut n = 0;
        while self.queue.len() > keep {
            if let Some(r) = self.queue.pop_back() {
                self.forget(r);
                n += 1;
            }
        }
        n
    }

    /// Hands every reply the replicated position covers (`seq <= replicated`) to `send`,
    /// oldest first; then, when `hold` is clear, drops every reply still held, unsent (see
    /// the module docs).
    pub fn release(
        &mut self,
        replicated: u64,
        hold: bool,
        mut send: impl FnMut(&HeldReply),
    ) -> Released {
        let mut out = Released::default();
        while let Some(front) = self.queue.front() {
            let covered = front.seq <= replicated;
            if !covered && hold {
                break;
            }
            if let Some(r) = self.queue.pop_front() {
                if covered {
                    send(&r);
                    out.sent += 1;
                } else {
                    out.dropped += 1;
                }
                self.forget(r);
            }
        }
        out
    }

    fn forget(&mut self, r: HeldReply) {
        if let Some(c) = self.clients.get_mut(&r.client) {
            *c -= 1;
            if *c == 0 {
                self.clients.remove(&r.client);
            }
        }
        if self.spare.len() < 1024 {
            self.spare.push(r.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 67);
    const SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

    /// A 44-byte "reply" for client `c`, tagged `tag` in its first byte.
    fn reply(c: u8, tag: u8) -> Vec<u8> {
        let mut r = vec![0u8; 44];
        r[0] = tag;
        r[28] = c;
        r
    }

    fn released(h: &mut HeldReplies, replicated: u64, hold: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let r = h.release(replicated, hold, |r| out.push(r.bytes[0]));
        assert_eq!(r.sent, out.len());
        if hold {
            assert_eq!(r.dropped, 0, "nothing is dropped while the hold is set");
        }
        out
    }

    #[test]
    fn replies_leave_in_order_once_the_replicated_position_covers_them() {
        let mut h = HeldReplies::new(100);
        for (seq, tag) in [(3, 1), (3, 2), (5, 3), (9, 4)] {
            h.hold(seq, &reply(tag, tag), DST, None, SRC).expect("room");
        }
        assert_eq!(
            released(&mut h, 2, true),
            Vec::<u8>::new(),
            "nothing covered yet"
        );
        assert_eq!(released(&mut h, 3, true), vec![1, 2]);
        assert_eq!(released(&mut h, 8, true), vec![3]);
        assert_eq!(h.len(), 1);
        assert!(h.holds_client(&client_of(&reply(4, 4))));
        assert!(!h.holds_client(&client_of(&reply(1, 1))));
        assert_eq!(released(&mut h, 9, true), vec![4]);
        assert!(h.is_empty() && h.clients.is_empty());
    }

    #[test]
    fn clearing_the_hold_sends_only_what_is_replicated_and_drops_the_rest() {
        let mut h = HeldReplies::new(100);
        for tag in 1..=5u8 {
            h.hold(
                100 + u64::from(tag),
                &reply(tag % 2, tag),
                DST,
                Some(7),
                SRC,
            )
            .expect("room");
        }
        // The hold is cleared with replicated at 102: replies 1 and 2 were replicated and
        // leave; 3, 4 and 5 may exist on this appliance only: dropped, never sent.
        let mut sent = Vec::new();
        let r = h.release(102, false, |r| sent.push(r.bytes[0]));
        assert_eq!(sent, vec![1, 2]);
        assert_eq!(
            r,
            Released {
                sent: 2,
                dropped: 3
            }
        );
        assert!(h.is_empty() && h.clients.is_empty());
        // Nothing replicated at all: everything is dropped.
        h.hold(200, &reply(1, 6), DST, None, SRC).expect("room");
        let r = h.release(0, false, |_| panic!("an unreplicated reply was sent"));
        assert_eq!(
            r,
            Released {
                sent: 0,
                dropped: 1
            }
        );
        assert!(!h.holds_client(&client_of(&reply(1, 6))));
        assert_eq!(h.release(0, false, |_| {}), Released::default());
    }

    #[test]
    fn the_bound_refuses_without_blocking_and_frees_up_as_replies_leave() {
        let mut h = HeldReplies::new(2);
        h.hold(1, &reply(1, 1), DST, None, SRC).expect("room");
        h.hold(2, &reply(2, 2), DST, None, SRC).expect("room");
        assert_eq!(h.hold(3, &reply(3, 3), DST, None, SRC), Err(Full));
        assert_eq!(h.len(), 2);
        assert_eq!(released(&mut h, 1, true), vec![1]);
        h.hold(3, &reply(3, 3), DST, None, SRC).expect("room again");
        // A smaller bound on reload keeps what is held and takes nothing new.
        h.set_max(1);
        assert_eq!(h.hold(4, &reply(4, 4), DST, None, SRC), Err(Full));
        assert_eq!(released(&mut h, 10, true), vec![2, 3]);
        h.hold(5, &reply(5, 5), DST, None, SRC)
            .expect("below the bound");
    }

    #[test]
    fn a_clients_replies_keep_their_order_and_a_failed_batch_is_forgotten() {
        let mut h = HeldReplies::new(10);
        h.hold(4, &reply(9, 1), DST, None, SRC).expect("room");
        h.hold(4, &reply(9, 2), DST, None, SRC).expect("room");
        assert!(h.holds_client(&client_of(&reply(9, 0))));
        // A batch that could not be made durable: its replies are dropped.
        let mark = h.len();
        h.hold(6, &reply(8, 3), DST, None, SRC).expect("room");
        assert_eq!(h.truncate(mark), 1);
        assert!(!h.holds_client(&client_of(&reply(8, 0))));
        assert_eq!(released(&mut h, 4, true), vec![1, 2]);
        assert!(!h.holds_client(&client_of(&reply(9, 0))));
        assert_eq!(
            client_of(&[0u8; 10]),
            [0u8; 16],
            "a short datagram has no chaddr"
        );
    }
}
