//! Applying a replicated slot image ([`Table::apply_replica`]): the standby writes the active's
//! image at the active's version through the same write protocol as [`Table::update`], so a
//! writer killed inside it is recovered like any other.

use std::sync::atomic::Ordering;

use super::write::{ChangeContext, Plan, Step, UpdateError};
use super::{ReadError, Table};
use crate::ring::{ChangeReason, Ring, RingFullError};
use crate::slot::{SlotImage, SLOT_WORDS};

#[cfg(test)]
mod tests;

/// What [`Table::apply_replica`] did with an incoming image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Written (and recorded in the applier's ring): the slot now holds this image, at the
    /// incoming version.
    Applied(SlotImage),
    /// Not written: the local slot is already at this version or a later one (a duplicate or an
    /// out-of-order record). A no-op, to be counted.
    Stale {
        /// The local slot's version.
        local: u64,
    },
}

/// Why an incoming image could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// A live writer held the slot through every retry: apply it again later.
    #[error("slot is locked by another writer")]
    Busy,
    /// The change record could not be appended (the slot was left as it was).
    #[error(transparent)]
    RingFull(#[from] RingFullError),
    /// No such slot in this table, an owner id out of range, or a version beyond 56 bits.
    #[error("slot, owner or version out of range")]
    OutOfRange,
}

/// Context of a replicated change, stored in the applier's ring record (whose reason is always
/// [`ChangeReason::Replicated`]).
#[derive(Debug, Clone, Copy)]
pub struct ReplicaContext<'a> {
    /// Unix time in milliseconds (the original change's, so the standby's history keeps it).
    pub time_ms: u64,
    /// Context bytes (e.g. the original record's relay information).
    pub context: &'a [u8],
}

/// How often [`Table::apply_replica`] re-reads a slot that a writer holds before giving up.
const APPLY_TRIES: usize = 8;

/// Whether `incoming` replaces `local`: a higher version always; at the same version (both
/// sides of a partition changed the slot from one version), the image whose lease ends later,
/// then the one whose encoded words compare higher — a rule both appliances apply alike, so
/// after the merge both hold the same image. An identical image is never applied again.
pub fn replica_wins(incoming: &SlotImage, local: &SlotImage) -> bool {
    if incoming.version != local.version {
        return incoming.version > local.version;
    }
    (incoming.expires, incoming.encode()) > (local.expires, local.encode())
}

impl Table {
    /// Applies the active's image of `slot` on a standby (replication), keeping the INCOMING
    /// version instead of counting one up, by the write protocol of [`Table::update`] (intent,
    /// lock, contents, bitmap, index, a [`ChangeReason::Replicated`] record in `ring`, unlock), so
    /// a writer killed inside it is recovered like any other.
    ///
    /// Ordered by slot version: the image is applied only if its version is above the local
    /// one, so applying the same record twice, or an older record after a newer one (a bulk
    /// sync overlapping the ring tail), is a no-op returned as [`ApplyOutcome::Stale`]. Two
    /// different images at the same version (both appliances changed the slot from the same
    /// version while they could not reach each other) are settled by [`replica_wins`], the same
    /// way on both sides, so the tables end equal. A local
    /// slot that fails its checksum is replaced by any valid incoming image (the peer's copy is
    /// the only good one left). A slot a live writer holds is retried a few times, then
    /// reported [`ApplyError::Busy`] (apply it again later).
    pub fn apply_replica(
        &self,
        owner: u8,
        ring: &Ring,
        slot: u32,
        incoming: &SlotImage,
        ctx: &ReplicaContext<'_>,
    ) -> Result<ApplyOutcome, ApplyError> {
        self.apply_replica_until(owner, ring, slot, incoming, ctx, None)
    }

    /// [`Table::apply_replica`], stopping dead after `stop` (to simulate a killed writer).
    pub(super) fn apply_replica_until(
        &self,
        owner: u8,
        ring: &Ring,
        slot: u32,
        incoming: &SlotImage,
        ctx: &ReplicaContext<'_>,
        stop: Option<Step>,
    ) -> Result<ApplyOutcome, ApplyError> {
        let s = self.slot_words(slot).ok_or(ApplyError::OutOfRange)?;
        self.owner_words(owner).ok_or(ApplyError::OutOfRange)?;
        if incoming.version >= 1 << 56 {
            return Err(ApplyError::OutOfRange);
        }
        let change = ChangeContext {
            reason: ChangeReason::Replicated,
            time_ms: ctx.time_ms,
            context: ctx.context,
        };
        for _ in 0..APPLY_TRIES {
            let old = match self.read(slot) {
                Ok(local) if !replica_wins(incoming, &local) => {
                    return Ok(ApplyOutcome::Stale {
                        local: local.version,
                    })
                }
                Ok(local) => local.encode(),
                Err(ReadError::Busy) => {
                    std::thread::yield_now();
                    continue;
                }
                Err(ReadError::Corrupt(_)) => {
                    let mut torn = [0u64; SLOT_WORDS];
                    for (x, w) in torn.iter_mut().zip(s) {
                        *x = w.load(Ordering::Acquire);
                    }
                    if torn[0] & 0xff != 0 {
                        continue; // locked meanwhile
                    }
                    torn
                }
                Err(ReadError::OutOfRange) => return Err(ApplyError::OutOfRange),
            };
            // On a refused record the slot goes back to the old words at the old version: the
            // incoming version belongs to this very image (the active's), never to another one,
            // so it can be applied again later.
            let plan = Plan {
                slot,
                old,
                new: *incoming,
                rollback: old,
            };
            match self.commit_until(owner, ring, &plan, &change, stop) {
                Ok(img) => return Ok(ApplyOutcome::Applied(img)),
                Err(UpdateError::Conflict) if stop.is_some() => return Err(ApplyError::Busy),
                Err(UpdateError::Conflict) => std::thread::yield_now(),
                Err(UpdateError::RingFull(e)) => return Err(ApplyError::RingFull(e)),
                Err(UpdateError::OutOfRange) => return Err(ApplyError::OutOfRange),
            }
        }
        Err(ApplyError::Busy)
    }
}
