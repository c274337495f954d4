//! Durability against power loss: writing the pages a batch of changes dirtied to stable
//! storage before the replies that announce them go out (`durability: "power"`).
//!
//! # What must be on disk for an ACKed lease to survive a power cut
//!
//! After a power cut the next start sees the table's clean flag cleared and another boot id
//! (the supervisor writes both to disk, [`Table::sync_header`], before any worker starts), so
//! it runs intent recovery and then [`Table::repair`]: every slot is checked by its crc32, torn
//! or locked slots become `abandoned` (never handed out), the free and summary bitmaps are
//! recomputed from the slot states, and holders missing from the client index are re-indexed.
//! The bitmaps and the index are therefore *derived*: only the **slot** is needed to bring an
//! ACKed lease back, with its address out of the free pool and its client findable.
//!
//! The **ring records** of the batch (and the ring header with `head`) are written too: the
//! ring is the change log a replication or audit consumer resumes from by sequence number, so
//! a change a client was told about must not vanish from it, and `head` on disk must not fall
//! behind records that are on disk (the next append would reuse their sequence numbers).
//!
//! # Ordering
//!
//! 1. `Table::update` returns only after the slot is unlocked with its new image and the ring
//!    record is published; the engine writes the reply only after that.
//! 2. The worker handles a whole receive batch; replies that confirm nothing (OFFER, NAK, ACK
//!    to INFORM) leave at once. If the batch has a reply that confirms a lease, the worker
//!    calls [`sync_changes`] for the ring records appended since its last sync (so the records
//!    on disk stay contiguous even after batches that needed none): `msync(MS_SYNC)` of the
//!    page runs holding the changed slots, then of the records and the ring header.
//!    `msync(MS_SYNC)` is the file system's fsync of that range: it returns when the pages and
//!    the device's write cache reached stable storage.
//! 3. Only then are the batch's confirming replies sent (one sync per batch: group commit). If
//!    a sync fails they are not sent (the clients retry), and the failure is counted.
//!
//! So every ACK that left the machine names a slot whose page was on stable storage first. A
//! page written while another slot in it was mid-change holds that slot locked or torn; repair
//! abandons it (no duplicate address), and that change was not acknowledged yet.
//!
//! # Cost and limits
//!
//! Two `msync` calls per batch (the table's pages from the lowest to the highest changed slot;
//! the ring file from its header to the last record), each a device cache flush on ext4/XFS
//! (an earlier version made one per run of slot pages plus two for the ring: 3–4 flushes per
//! batch, see BENCHMARKS.md); a batch holds up to 32 requests, so the cost per reply falls as
//! load rises. An msync writes whole dirty folios: the files are created by
//! [`crate::mapping::write_zeros`], which drops what it wrote from the page cache so that the
//! mapping faults the pages in small (left in the 2 MiB folios buffered `write` builds on
//! Linux 6.18 ext4, every one-slot msync wrote 2 MiB: 4.6 ms instead of 0.6 ms). Not written: the owner record (intent and counters), the bitmaps and
//! the index. After a power cut an intent on disk may be older than the slot page beside it;
//! recovery then rolls that slot forward only to a change whose ring record is on disk (every
//! acknowledged one is), otherwise back, and repair abandons what it cannot trust.

use std::io;

use crate::layout::HEADER_WORDS;
use crate::ring::{Ring, HEADER_WORDS as RING_HEADER_WORDS, RECORD_WORDS};
use crate::slot::SLOT_WORDS;
use crate::table::Table;

const PAGE: usize = 4096;

impl Table {
    /// Writes the pages holding `slots` to stable storage with one `msync` over the pages from
    /// the lowest to the highest of them (one device flush however the slots are spread: the
    /// clean pages in between cost a walk of the page cache's dirty tags, not a write; dirty
    /// ones belong to other writers' changes and are written a little early). Returns how many
    /// `msync` calls it made (0 or 1).
    pub fn sync_slots(&self, slots: &[u32]) -> io::Result<usize> {
        let base = self.geometry().slots_off * 8;
        let pages = slots
            .iter()
            .filter(|&&s| s < self.slot_count())
            .map(|&s| (base + s as usize * SLOT_WORDS * 8) / PAGE);
        let (Some(first), Some(last)) = (pages.clone().min(), pages.max()) else {
            return Ok(0);
        };
        let end = ((last + 1) * PAGE).min(self.mapping().len_bytes());
        self.mapping()
            .flush_range(first * PAGE, end - first * PAGE)?;
        Ok(1)
    }

    /// Writes the header page (clean flag, boot id, epoch) to stable storage.
    pub fn sync_header(&self) -> io::Result<()> {
        self.mapping().flush_range(0, HEADER_WORDS * 8)
    }
}

impl Ring {
    /// Writes records `after + 1 ..= upto` and the ring header (`head`) to stable storage with
    /// one `msync` from the start of the file (the header) to the end of the last record (to
    /// the end of the file when the records wrap): one device flush, not one per region.
    pub fn sync_records(&self, after: u64, upto: u64) -> io::Result<()> {
        let rec_bytes = RECORD_WORDS * 8;
        let header_bytes = RING_HEADER_WORDS * 8;
        let cap = self.capacity();
        let n = upto.saturating_sub(after).min(cap);
        let end = if n == 0 {
            header_bytes
        } else {
            let first = (upto - n) & (cap - 1); // record index of sequence upto-n+1
            if first + n <= cap {
                header_bytes + (first + n) as usize * rec_bytes
            } else {
                header_bytes + cap as usize * rec_bytes
            }
        };
        self.mapping().flush_range(0, end)
    }
}

/// Makes the changes `ring` recorded after sequence `after` (up to its current head) durable:
/// the slots they changed, then the records and the ring header. Call before sending the
/// replies of the batch that made them. Returns the head it synced up to.
pub fn sync_changes(table: &Table, ring: &Ring, after: u64) -> io::Result<u64> {
    let upto = ring.head();
    if upto <= after {
        return Ok(upto);
    }
    let from = after.max(upto.saturating_sub(ring.capacity()));
    let slots: Vec<u32> = (from + 1..=upto)
        .filter_map(|seq| ring.read(seq).map(|r| r.slot))
        .collect();
    table.sync_slots(&slots)?;
    ring.sync_records(from, upto)?;
    Ok(upto)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChangeContext, ChangeReason, LayoutSpec, RangeSpec};

    #[test]
    fn syncing_a_batch_covers_its_slots_and_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = LayoutSpec {
            ranges: vec![RangeSpec {
                first: 1000,
                last: 1999,
                in_pool: true,
            }],
        };
        let t = Table::create(&dir.path().join("t"), &spec).expect("table");
        let ring = Ring::open_or_create(&dir.path().join("r"), 1, 16).expect("ring");
        // One msync for the batch however its slots are spread.
        assert_eq!(t.sync_slots(&[0, 1, 63, 64, 65]).expect("sync"), 1);
        assert_eq!(t.sync_slots(&[0, 900]).expect("sync"), 1);
        assert_eq!(t.sync_slots(&[5000]).expect("sync"), 0, "no such slot");
        assert_eq!(t.sync_slots(&[]).expect("sync"), 0);
        t.sync_header().expect("header");
        // Wrap the ring so a batch spans its end.
        let before = ring.head();
        let writer = crate::Writer::new(&t, 1, &ring);
        for i in 0..20u32 {
            let slot = i * 40;
            let old = t.read(slot).expect("read");
            let mut new = old;
            new.state = crate::LeaseState::Leased;
            writer
                .update(
                    slot,
                    &old,
                    &new,
                    &ChangeContext {
                        reason: ChangeReason::Commit,
                        time_ms: 0,
                        context: b"",
                    },
                )
                .expect("update");
        }
        assert_eq!(sync_changes(&t, &ring, before).expect("sync"), before + 20);
        assert_eq!(
            sync_changes(&t, &ring, 14).expect("sync across the wrap"),
            20
        );
        assert_eq!(sync_changes(&t, &ring, 20).expect("nothing new"), 20);
        // A NAK record of an address outside the table names no slot: its record is synced,
        // no slot page is.
        assert_eq!(t.sync_slots(&[crate::ring::NO_SLOT]).expect("sync"), 0);
        ring.append(&crate::RecordInput {
            slot: crate::ring::NO_SLOT,
            reason: ChangeReason::Nak,
            time_ms: 0,
            epoch: 1,
            image: &crate::SlotImage::PRISTINE,
            context: b"",
        })
        .expect("append");
        assert_eq!(sync_changes(&t, &ring, 20).expect("sync a NAK record"), 21);
    }
}
