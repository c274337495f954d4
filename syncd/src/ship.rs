//! The active's side of ring shipping: [`Shipper`] reads one producer's change ring as syncd's
//! registered consumer, hands out batches of records to send to the standbys, and, once they
//! acknowledged, advances syncd's cursor and publishes "replicated up to" in the ring header so
//! the worker can send the replies it held.
//!
//! # Why OFFERs are not shipped
//!
//! Records with reason [`ChangeReason::Offer`] are skipped (the cursor still moves past them).
//! An offer binds nothing: the client has no lease until it REQUESTs and is ACKed, and the ACK's
//! own record (a commit) carries the full slot image, key and version, so the standby never
//! needs the offer to apply it (it applies by version, so a gap in versions is normal). If the
//! standby takes over while an offer is outstanding, the client's REQUEST for the offered but
//! unreplicated address is answered from the new active's table: either the address is still
//! free there and is ACKed to the client (nobody else can hold it, as no ACK of it was ever
//! replicated), or it is not and the client is NAKed and starts over with a DISCOVER. Neither
//! loses a lease or gives one address to two clients. Shipping offers would double the records
//! per lease for nothing.
//!
//! # Why NAK records are not shipped
//!
//! A [`ChangeReason::Nak`] record (the worker sent a DHCPNAK, for the audit trail) changes no
//! slot: its image is the slot's as it was, or empty with [`shm_layout::NO_SLOT`]. The standby
//! has nothing to apply, so it is skipped like an OFFER (covered by the batch's range, counted
//! in [`Shipper::skipped_naks`]); a standby that is sent one all the same skips it too
//! ([`crate::apply::Applier::apply_records`]). Not shipping it also keeps a standby of an older
//! version, which does not know the reason, from refusing the frame. [`ships`] is the rule.
//!
//! # Protocol
//!
//! 1. [`Shipper::register`] (registers [`crate::SYNCD_CONSUMER`] on the ring). A
//!    [`Registration::Fresh`] registration (never registered, or evicted) means the records before
//!    the registration point are not available: the standby must receive a bulk sync (walk the
//!    table *after* registering, [`crate::apply::BulkReader`]) and then the records from here on.
//! 2. [`Shipper::next_batch`]: records after the last batch up to the head, OFFERs and NAKs
//!    skipped; send `(first_seq, last_seq, records)` to every in-sync standby (one frame: group commit).
//! 3. [`Shipper::acked`] with the lowest sequence every in-sync standby acknowledged: advances
//!    the consumer cursor (the producer keeps records only for a cursor), publishes
//!    [`Ring::publish_replicated`] and calls the wake hook ([`Shipper::set_on_replicated`]: the
//!    place to write the worker's eventfd).
//! 4. [`ShipError::NeedsBulkSync`] from either call: the ring evicted syncd (it lagged a whole
//!    ring) or a record could not be read. Bulk-sync the standby and call
//!    [`Shipper::reregister`].
//!
//! Setting [`Ring::set_hold`] belongs to syncd's role logic (on while a standby is in sync and
//! replication is "sync"), not to the shipper.

use shm_layout::{ChangeReason, ChangeRecord, ConsumerState, Ring};

/// Whether a record with this reason is shipped to the standbys: everything but OFFERs (see
/// "Why OFFERs are not shipped") and records that change no slot (NAKs, see "Why NAK records are
/// not shipped").
pub fn ships(reason: ChangeReason) -> bool {
    reason != ChangeReason::Offer && reason.changes_slot()
}

/// One batch of records of one ring, to send to the standbys as one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The ring's id (its producer's owner id).
    pub ring: u8,
    /// First sequence number the batch covers (skipped OFFERs and NAKs included).
    pub first_seq: u64,
    /// Last sequence number the batch covers; `first_seq - 1` when the batch covers nothing.
    pub last_seq: u64,
    /// The records to replicate, in order (OFFERs and NAKs left out, [`ships`]).
    pub records: Vec<ChangeRecord>,
}

impl Batch {
    /// Whether there is nothing to send (no record, though OFFERs or NAKs may have been skipped).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// How syncd's consumer registration was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// syncd was registered: shipping resumes after `cursor` (the last acknowledged record).
    Resumed {
        /// Last sequence number acknowledged.
        cursor: u64,
    },
    /// syncd was not registered (first start, evicted, or dropped by an operator) and is now,
    /// at `at`: the records up to `at` are not available, so a standby needs a bulk sync.
    Fresh {
        /// The head when syncd registered.
        at: u64,
    },
}

/// Why records cannot be shipped from the ring any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossCause {
    /// The producer evicted syncd for lagging a whole ring (or an operator dropped it).
    Evicted,
    /// Record `seq` was published but cannot be read (overwritten, or it fails its checks).
    Unreadable {
        /// The sequence number.
        seq: u64,
    },
}

/// Errors of the shipper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShipError {
    /// Records were lost to syncd: the standbys need a bulk sync, then [`Shipper::reregister`].
    #[error("ring {ring}: records lost to syncd ({cause:?}): the standbys need a bulk sync")]
    NeedsBulkSync {
        /// The ring.
        ring: u8,
        /// What happened.
        cause: LossCause,
    },
    /// A standby acknowledged a record that was never sent (a peer bug): refused.
    #[error("ring {ring}: acknowledgement of {acked} beyond the last record sent ({sent})")]
    AckBeyondSent {
        /// The ring.
        ring: u8,
        /// The acknowledged sequence.
        acked: u64,
        /// The last sequence handed out.
        sent: u64,
    },
}

/// Ships one ring's records for syncd on the active. See the module docs.
pub struct Shipper<'r> {
    ring: &'r Ring,
    consumer: usize,
    /// The consumer cursor as last advanced (every record up to it is replicated or skipped).
    acked: u64,
    /// Last sequence number handed out in a batch.
    sent: u64,
    /// Last sequence number of a record that was shipped (not skipped).
    last_shipped: u64,
    skipped_offers: u64,
    skipped_naks: u64,
    on_replicated: Option<Box<dyn FnMut(u64) + 'r>>,
}

impl std::fmt::Debug for Shipper<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper")
            .field("ring", &self.ring.owner())
            .field("consumer", &self.consumer)
            .field("acked", &self.acked)
            .field("sent", &self.sent)
            .field("last_shipped", &self.last_shipped)
            .field("skipped_offers", &self.skipped_offers)
            .field("skipped_naks", &self.skipped_naks)
            .finish_non_exhaustive()
    }
}

impl<'r> Shipper<'r> {
    /// Registers (or resumes) `consumer` (syncd's is [`crate::SYNCD_CONSUMER`]) on `ring`.
    /// `None` if the consumer id is out of range.
    pub fn register(ring: &'r Ring, consumer: usize) -> Option<(Shipper<'r>, Registration)> {
        let was_registered = ring
            .consumers()
            .iter()
            .any(|c| c.id == consumer && c.state == ConsumerState::Registered);
        let cursor = ring.register_consumer(consumer)?;
        let how = if was_registered {
            Registration::Resumed { cursor }
        } else {
            Registration::Fresh { at: cursor }
        };
        Some((
            Shipper {
                ring,
                consumer,
                acked: cursor,
                sent: cursor,
                last_shipped: cursor,
                skipped_offers: 0,
                skipped_naks: 0,
                on_replicated: None,
            },
            how,
        ))
    }

    /// After [`ShipError::NeedsBulkSync`]: registers again at the current head (call it before
    /// the bulk walk starts, so every change made during the walk is in the tail shipped after
    /// it). Returns the registration point.
    pub fn reregister(&mut self) -> u64 {
        self.ring.unregister_consumer(self.consumer);
        let at = self
            .ring
            .register_consumer(self.consumer)
            .unwrap_or_else(|| self.ring.head());
        self.acked = at;
        self.sent = at;
        self.last_shipped = at;
        at
    }

    /// Sets the hook called with the newly published "replicated up to" after every
    /// acknowledgement (to wake the worker, e.g. by writing its eventfd).
    pub fn set_on_replicated(&mut self, hook: Box<dyn FnMut(u64) + 'r>) {
        self.on_replicated = Some(hook);
    }

    /// The ring's id (its producer's owner id).
    pub fn ring_id(&self) -> u8 {
        self.ring.owner()
    }

    /// The last sequence number acknowledged (syncd's consumer cursor).
    pub fn acked_seq(&self) -> u64 {
        self.acked
    }

    /// The last sequence number handed out in a batch.
    pub fn sent_seq(&self) -> u64 {
        self.sent
    }

    /// Records published but not yet acknowledged (the lag `prodhcpctl ha status` shows).
    pub fn lag(&self) -> u64 {
        self.ring.head().saturating_sub(self.acked)
    }

    /// OFFER records skipped so far.
    pub fn skipped_offers(&self) -> u64 {
        self.skipped_offers
    }

    /// NAK records skipped so far (they change no slot).
    pub fn skipped_naks(&self) -> u64 {
        self.skipped_naks
    }

    /// Hands out the records after the last batch, up to the head and at most `max_records`
    /// (OFFERs and NAKs skipped but covered by the batch's range). A batch with no records needs
    /// no frame: when only skipped records followed the last acknowledged record, they are
    /// acknowledged here at once (cursor, "replicated up to" and the wake hook, as
    /// [`Shipper::acked`]). Call [`Shipper::resend`] first to send the unacknowledged records again (e.g. to a reconnected standby).
    pub fn next_batch(&mut self, max_records: usize) -> Result<Batch, ShipError> {
        if !self.registered() {
            return Err(self.lost(self.sent + 1));
        }
        let head = self.ring.head();
        let first_seq = self.sent + 1;
        let mut records = Vec::new();
        let mut seq = first_seq;
        while seq <= head && records.len() < max_records {
            let Some(rec) = self.ring.read(seq) else {
                return Err(self.lost(seq));
            };
            if !ships(rec.reason) {
                if rec.reason == ChangeReason::Offer {
                    self.skipped_offers += 1;
                } else {
                    self.skipped_naks += 1;
                }
            } else {
                self.last_shipped = seq;
                records.push(rec);
            }
            seq += 1;
        }
        self.sent = seq - 1;
        if records.is_empty() && self.sent > self.acked && self.acked >= self.last_shipped {
            // Only skipped records (OFFERs, NAKs) since everything shipped was acknowledged:
            // nothing to send or wait for, so they are done now (no round trip for an empty batch).
            self.acked(self.sent)?;
        }
        Ok(Batch {
            ring: self.ring.owner(),
            first_seq,
            last_seq: self.sent,
            records,
        })
    }

    /// Makes the next [`Shipper::next_batch`] start again after the last acknowledged record
    /// (the unacknowledged ones are still in the ring: the producer keeps them for the cursor).
    pub fn resend(&mut self) {
        self.sent = self.acked;
        self.last_shipped = self.last_shipped.min(self.acked);
    }

    /// Every in-sync standby has applied the records up to `seq` (call it with the lowest
    /// position acknowledged over the in-sync standbys). Advances syncd's consumer cursor,
    /// publishes "replicated up to" in the ring header (covering OFFERs and NAKs skipped after
    /// the last shipped record once that one is acknowledged) and calls the wake hook. A late or
    /// duplicate acknowledgement changes nothing. Returns the published position.
    pub fn acked(&mut self, seq: u64) -> Result<u64, ShipError> {
        if seq > self.sent {
            return Err(ShipError::AckBeyondSent {
                ring: self.ring.owner(),
                acked: seq,
                sent: self.sent,
            });
        }
        // Everything shipped is acknowledged: the records skipped after it are done too.
        let upto = if seq >= self.last_shipped {
            self.sent
        } else {
            seq
        };
        if upto <= self.acked {
            return Ok(self.ring.replicated());
        }
        if self.ring.advance_consumer(self.consumer, upto).is_err() {
            return Err(ShipError::NeedsBulkSync {
                ring: self.ring.owner(),
                cause: LossCause::Evicted,
            });
        }
        self.acked = upto;
        let published = self.ring.publish_replicated(upto);
        if let Some(hook) = self.on_replicated.as_mut() {
            hook(published);
        }
        Ok(published)
    }

    fn registered(&self) -> bool {
        self.ring
            .consumers()
            .iter()
            .any(|c| c.id == self.consumer && c.state == ConsumerState::Registered)
    }

    fn lost(&self, seq: u64) -> ShipError {
        ShipError::NeedsBulkSync {
            ring: self.ring.owner(),
            cause: if self.registered() {
                LossCause::Unreadable { seq }
            } else {
                LossCause::Evicted
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SYNCD_CONSUMER;
    use shm_layout::{LeaseState, RecordInput, SlotImage};

    fn push(ring: &Ring, slot: u32, reason: ChangeReason) -> u64 {
        let img = SlotImage {
            version: ring.head() + 1,
            state: LeaseState::Leased,
            ..SlotImage::PRISTINE
        };
        ring.append(&RecordInput {
            slot,
            reason,
            time_ms: 0,
            epoch: 1,
            image: &img,
            context: b"",
        })
        .unwrap()
    }

    fn seqs(b: &Batch) -> Vec<u64> {
        b.records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn batches_skip_offers_and_acks_publish_replicated_and_wake() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Ring::open_or_create(&dir.path().join("ring-1"), 1, 64).unwrap();
        let woken = std::cell::RefCell::new(Vec::new());
        let (mut s, how) = Shipper::register(&ring, SYNCD_CONSUMER).unwrap();
        assert_eq!(how, Registration::Fresh { at: 0 });
        s.set_on_replicated(Box::new(|n| woken.borrow_mut().push(n)));
        push(&ring, 1, ChangeReason::Offer); // 1
        push(&ring, 1, ChangeReason::Commit); // 2
        push(&ring, 2, ChangeReason::Offer); // 3
        push(&ring, 2, ChangeReason::Commit); // 4
        push(&ring, 3, ChangeReason::Offer); // 5
        let b = s.next_batch(100).unwrap();
        assert_eq!((b.ring, b.first_seq, b.last_seq), (1, 1, 5));
        assert_eq!(seqs(&b), vec![2, 4]);
        assert_eq!(s.skipped_offers(), 3);
        // Nothing new: an empty batch that covers nothing.
        let e = s.next_batch(100).unwrap();
        assert!(e.is_empty() && e.last_seq + 1 == e.first_seq);
        // The standby acknowledges 2 only: published 2, cursor 2.
        assert_eq!(s.acked(2), Ok(2));
        assert_eq!(ring.replicated(), 2);
        assert_eq!(ring.consumers()[0].cursor, 2);
        // Acknowledging the last shipped record covers the offer skipped after it.
        assert_eq!(s.acked(4), Ok(5));
        assert_eq!((ring.replicated(), ring.consumers()[0].cursor), (5, 5));
        assert_eq!(s.lag(), 0);
        // A late acknowledgement changes nothing and does not wake anybody again.
        assert_eq!(s.acked(2), Ok(5));
        // Only an OFFER since: nothing to send, and it is done at once.
        push(&ring, 5, ChangeReason::Offer); // 6
        let e = s.next_batch(100).unwrap();
        assert!(e.is_empty() && (e.first_seq, e.last_seq) == (6, 6));
        assert_eq!((ring.replicated(), s.acked_seq()), (6, 6));
        assert_eq!(*woken.borrow(), vec![2, 5, 6]);
        // An acknowledgement of a record never sent is refused.
        push(&ring, 4, ChangeReason::Release); // 7
        assert_eq!(
            s.acked(7),
            Err(ShipError::AckBeyondSent {
                ring: 1,
                acked: 7,
                sent: 6
            })
        );
        // Batches are bounded by the number of records.
        for slot in 10..20 {
            push(&ring, slot, ChangeReason::Commit); // 8..=17
        }
        let b = s.next_batch(4).unwrap();
        assert_eq!(
            (b.first_seq, b.last_seq, seqs(&b)),
            (7, 10, vec![7, 8, 9, 10])
        );
        // An OFFER after records in flight waits for their acknowledgement.
        push(&ring, 30, ChangeReason::Offer); // 18
        s.next_batch(100).unwrap();
        let b = s.next_batch(100).unwrap();
        assert!(b.is_empty());
        assert_eq!(s.acked_seq(), 6);
        // A reconnected standby is sent the unacknowledged records again.
        s.resend();
        let b = s.next_batch(2).unwrap();
        assert_eq!(seqs(&b), vec![7, 8]);
        let b = s.next_batch(100).unwrap();
        assert_eq!((seqs(&b).len(), b.last_seq), (9, 18));
        assert_eq!(s.acked(17), Ok(18));
    }

    #[test]
    fn nak_records_are_not_shipped_and_are_covered_like_offers() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Ring::open_or_create(&dir.path().join("ring-1"), 1, 64).unwrap();
        let (mut s, _) = Shipper::register(&ring, SYNCD_CONSUMER).unwrap();
        push(&ring, 1, ChangeReason::Commit); // 1
        push(&ring, 1, ChangeReason::Nak); // 2
        push(&ring, shm_layout::NO_SLOT, ChangeReason::Nak); // 3
        push(&ring, 2, ChangeReason::Offer); // 4
        let b = s.next_batch(100).unwrap();
        assert_eq!((b.first_seq, b.last_seq, seqs(&b)), (1, 4, vec![1]));
        assert_eq!((s.skipped_naks(), s.skipped_offers()), (2, 1));
        // Acknowledging the commit covers the NAKs and the offer after it.
        assert_eq!(s.acked(1), Ok(4));
        // Only a NAK since: nothing to send, done at once (a reply held behind it is freed).
        push(&ring, 1, ChangeReason::Nak); // 5
        let e = s.next_batch(100).unwrap();
        assert!(e.is_empty() && (e.first_seq, e.last_seq) == (5, 5));
        assert_eq!((ring.replicated(), s.acked_seq()), (5, 5));
        assert!(ships(ChangeReason::Commit) && ships(ChangeReason::Release));
        assert!(!ships(ChangeReason::Nak) && !ships(ChangeReason::Offer));
    }

    #[test]
    fn a_restarted_syncd_resumes_after_its_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Ring::open_or_create(&dir.path().join("ring-1"), 1, 64).unwrap();
        {
            let (mut s, _) = Shipper::register(&ring, SYNCD_CONSUMER).unwrap();
            push(&ring, 1, ChangeReason::Commit);
            push(&ring, 2, ChangeReason::Commit);
            s.next_batch(10).unwrap();
            s.acked(1).unwrap();
        }
        let (mut s, how) = Shipper::register(&ring, SYNCD_CONSUMER).unwrap();
        assert_eq!(how, Registration::Resumed { cursor: 1 });
        assert_eq!(seqs(&s.next_batch(10).unwrap()), vec![2]);
    }

    #[test]
    fn an_evicted_shipper_needs_a_bulk_sync_then_ships_after_reregistering() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Ring::open_or_create(&dir.path().join("ring-1"), 1, 16).unwrap();
        let (mut s, _) = Shipper::register(&ring, SYNCD_CONSUMER).unwrap();
        push(&ring, 1, ChangeReason::Commit);
        assert_eq!(s.next_batch(10).unwrap().records.len(), 1);
        // The standby stalls; the producer laps syncd and evicts it.
        for slot in 0..20 {
            push(&ring, slot, ChangeReason::Commit);
        }
        assert_eq!(ring.evictions(), 1);
        let lost = ShipError::NeedsBulkSync {
            ring: 1,
            cause: LossCause::Evicted,
        };
        assert_eq!(s.acked(1), Err(lost));
        assert_eq!(s.next_batch(10), Err(lost));
        // After re-registering (before the bulk walk), the tail from there on is shipped.
        assert_eq!(s.reregister(), 21);
        push(&ring, 5, ChangeReason::Release);
        let b = s.next_batch(10).unwrap();
        assert_eq!((b.first_seq, seqs(&b)), (22, vec![22]));
        assert_eq!(s.acked(22), Ok(22));
        assert_eq!(
            Shipper::register(&ring, SYNCD_CONSUMER).unwrap().1,
            Registration::Resumed { cursor: 22 }
        );
    }
}
