//! Per-worker statistics counters, kept in the worker's owner record of the lease table so the
//! supervisor can read them without asking the worker (and they survive a worker restart).
//!
//! The catalogue and the view over the owner record's words ([`CounterWords`]) are
//! `prodhcp_proto::counter`'s, shared with the supervisor that reads them. What only the worker
//! does is here: counting a dropped request together with its reason ([`DropCounts`]).

use crate::codec::DropReason;

pub use prodhcp_proto::counter::{Counter, CounterWords, CODEC_DROPS_START};

/// Counting a dropped request: the total `dropped` and the reason's own counter.
pub trait DropCounts {
    /// Counts a dropped request with its engine reason.
    fn drop_for(&self, c: Counter);
    /// Counts a packet the codec refused.
    fn codec_drop(&self, r: DropReason);
}

impl DropCounts for CounterWords<'_> {
    fn drop_for(&self, c: Counter) {
        self.inc(Counter::Dropped);
        self.inc(c);
    }

    fn codec_drop(&self, r: DropReason) {
        self.inc(Counter::Dropped);
        // Every reason has its catalogue row (checked by the test below).
        if let Some(c) = Counter::at_word(CODEC_DROPS_START + r.index()) {
            self.inc(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn the_catalogue_fits_the_owner_record_and_names_every_codec_drop() {
        assert!(Counter::ALL
            .iter()
            .all(|c| c.word() < shm_layout::layout::OWNER_COUNTERS));
        // `codec_drop` counts reason r at word CODEC_DROPS_START + r.index(): the catalogue
        // must have that word, as a drop, under the codec's name for r.
        for r in DropReason::ALL {
            let c = Counter::ALL
                .iter()
                .find(|c| c.word() == CODEC_DROPS_START + r.index())
                .unwrap_or_else(|| panic!("no catalogue entry for codec drop {}", r.name()));
            assert_eq!(c.key(), r.name());
            assert_eq!(c.group(), prodhcp_proto::CounterGroup::Drops);
        }
        let words: Vec<AtomicU64> = (0..96).map(|_| AtomicU64::new(0)).collect();
        let c = CounterWords::new(&words);
        c.drop_for(Counter::DropBusy);
        c.codec_drop(DropReason::ALL[0]);
        let snap = c.snapshot();
        assert!(snap.contains(&("dropped", 2)));
        assert!(snap.contains(&("busy", 1)));
        assert!(snap.contains(&("decode_too_short", 1)));
        assert_eq!(c.get(Counter::DecodeTooShort), 1);
        // Every reason lands in its own word, once per drop, and in the total.
        for r in DropReason::ALL {
            c.codec_drop(r);
        }
        assert_eq!(c.get(Counter::Dropped), 2 + DropReason::ALL.len() as u64);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            let word =
                words[CODEC_DROPS_START + r.index()].load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!(word, if i == 0 { 2 } else { 1 }, "{}", r.name());
        }
    }
}
