//! [`Writer`]: one writer's handle on the table — the table, the owner id it writes as and the
//! change ring its records go to, which every write takes together.
//!
//! A process writes as exactly one owner into exactly one ring (workers 1..64, the supervisor,
//! the importer, syncd; see [`crate::table`]), so the pair is fixed where the writer starts and
//! carried from there instead of being passed to every call.

use crate::ring::Ring;
use crate::table::CheckReport;
use crate::{
    ApplyError, ApplyOutcome, ChangeContext, ReplicaContext, SlotImage, Table, UpdateError,
};

/// Writes to a [`Table`] as one owner, recording each change in that owner's [`Ring`].
///
/// `Copy` (two references and an owner id): make one where the owner and ring are known and
/// pass it on.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    table: &'a Table,
    owner: u8,
    ring: &'a Ring,
}

impl<'a> Writer<'a> {
    /// A writer into `table` as `owner`, appending change records to `ring` (the owner's own).
    pub fn new(table: &'a Table, owner: u8, ring: &'a Ring) -> Writer<'a> {
        Writer { table, owner, ring }
    }

    /// The table written to.
    pub fn table(&self) -> &'a Table {
        self.table
    }

    /// The owner id the writes are made as.
    pub fn owner(&self) -> u8 {
        self.owner
    }

    /// The ring change records are appended to.
    pub fn ring(&self) -> &'a Ring {
        self.ring
    }

    /// [`Table::update`] as this writer: replaces `slot`, read as `expected`, with `new` and
    /// records the change. Returns the committed image.
    pub fn update(
        &self,
        slot: u32,
        expected: &SlotImage,
        new: &SlotImage,
        ctx: &ChangeContext<'_>,
    ) -> Result<SlotImage, UpdateError> {
        self.table
            .update(self.owner, self.ring, slot, expected, new, ctx)
    }

    /// [`Table::apply_replica`] as this writer (syncd on a standby, owner
    /// [`crate::SYNCD_OWNER`]): applies the active's image of `slot` if its version is above the
    /// local one, keeping that version, and records it in this writer's ring as
    /// [`crate::ChangeReason::Replicated`]. A duplicate or older image is [`ApplyOutcome::Stale`].
    pub fn apply_replica(
        &self,
        slot: u32,
        image: &SlotImage,
        ctx: &ReplicaContext<'_>,
    ) -> Result<ApplyOutcome, ApplyError> {
        self.table
            .apply_replica(self.owner, self.ring, slot, image, ctx)
    }

    /// [`Table::abandon_corrupt`] as this writer: takes a slot that fails its checksum out of
    /// service. Returns false if there was nothing to do or it could not be done.
    pub fn abandon_corrupt(&self, slot: u32) -> bool {
        self.table.abandon_corrupt(self.owner, self.ring, slot)
    }

    /// [`Table::repair`] as this writer (only while no other writer runs). Returns the report
    /// from before the repair.
    pub fn repair(&self) -> CheckReport {
        self.table.repair(self.owner, self.ring)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChangeReason, LayoutSpec, LeaseState, RangeSpec};

    #[test]
    fn an_update_through_a_writer_is_applied_and_recorded_as_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let spec = LayoutSpec {
            ranges: vec![RangeSpec {
                first: 0x0a00_0000,
                last: 0x0a00_00ff,
                in_pool: true,
            }],
        };
        let table = Table::create(&dir.path().join("leases.table"), &spec).unwrap();
        let ring = Ring::open_or_create(&dir.path().join("ring-7"), 7, 64).unwrap();
        let w = Writer::new(&table, 7, &ring);
        assert_eq!(w.owner(), 7);
        assert_eq!(ring.head(), 0);

        let slot = 5;
        let cur = table.read(slot).unwrap();
        let new = SlotImage {
            state: LeaseState::Leased,
            expires: 1_000,
            updated: 900,
            ..cur
        };
        let ctx = ChangeContext {
            reason: ChangeReason::Commit,
            time_ms: 900_000,
            context: b"ctx",
        };
        let committed = w.update(slot, &cur, &new, &ctx).unwrap();

        // Applied: the slot reads back as the new image, one version on.
        assert_eq!(committed.version, cur.version + 1);
        let read = table.read(slot).unwrap();
        assert_eq!(read, committed);
        assert_eq!(read.state, LeaseState::Leased);
        assert_eq!(read.expires, 1_000);
        assert!(!table.is_free(slot));
        assert_eq!(table.lock_owner(slot), 0, "unlocked after the write");

        // Recorded: one record in the writer's ring, made as the writer's owner.
        assert_eq!(ring.head(), 1);
        let rec = ring.read(1).unwrap();
        assert_eq!(rec.owner, 7);
        assert_eq!(rec.slot, slot);
        assert_eq!(rec.reason, ChangeReason::Commit);
        assert_eq!(rec.time_ms, 900_000);
        assert_eq!(rec.image, committed);
        assert_eq!(rec.context, b"ctx");

        // The write is made as the writer's owner: owner 0 is no writer, so the same change
        // through a writer for owner 0 is refused and nothing is written or recorded.
        let next = SlotImage {
            expires: 2_000,
            ..committed
        };
        assert_eq!(
            Writer::new(&table, 0, &ring).update(slot, &committed, &next, &ctx),
            Err(UpdateError::OutOfRange)
        );
        assert_eq!(ring.head(), 1);
        assert_eq!(table.read(slot).unwrap(), committed);

        // A stale expected image conflicts and changes nothing.
        assert_eq!(w.update(slot, &cur, &new, &ctx), Err(UpdateError::Conflict));
        assert_eq!(ring.head(), 1);
        assert_eq!(table.read(slot).unwrap(), committed);
    }

    #[test]
    fn a_replica_applied_through_a_writer_keeps_its_version_and_is_recorded_as_replicated() {
        let dir = tempfile::tempdir().unwrap();
        let spec = LayoutSpec {
            ranges: vec![RangeSpec {
                first: 0x0a00_0000,
                last: 0x0a00_00ff,
                in_pool: true,
            }],
        };
        let table = Table::create(&dir.path().join("leases.table"), &spec).unwrap();
        let ring =
            Ring::open_or_create(&dir.path().join("ring-102"), crate::SYNCD_OWNER, 64).unwrap();
        let w = Writer::new(&table, crate::SYNCD_OWNER, &ring);
        let img = SlotImage {
            version: 17,
            state: LeaseState::Leased,
            expires: 1_000,
            ..SlotImage::PRISTINE
        };
        let rctx = ReplicaContext {
            time_ms: 5,
            context: b"relay",
        };
        assert_eq!(
            w.apply_replica(3, &img, &rctx),
            Ok(ApplyOutcome::Applied(img))
        );
        assert_eq!(table.read(3).unwrap().version, 17);
        assert_eq!(
            w.apply_replica(3, &img, &rctx),
            Ok(ApplyOutcome::Stale { local: 17 })
        );
        let rec = ring.read(1).unwrap();
        assert_eq!(
            (rec.owner, rec.reason, rec.image),
            (102, ChangeReason::Replicated, img)
        );
        assert_eq!(ring.head(), 1);
    }
}
