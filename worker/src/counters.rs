//! Per-worker statistics counters, kept in the worker's owner record of the lease table so the
//! supervisor can read them without asking the worker (and they survive a worker restart).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::codec::DropReason;

pub use prodhcp_proto::counter::{Counter, CODEC_DROPS_START};

/// A view of one worker's counters.
#[derive(Debug, Clone, Copy)]
pub struct Counters<'a> {
    words: &'a [AtomicU64],
}

impl<'a> Counters<'a> {
    /// Wraps the counter words of an owner record.
    pub fn new(words: &'a [AtomicU64]) -> Counters<'a> {
        Counters { words }
    }

    fn add_at(&self, i: usize, n: u64) {
        if let Some(w) = self.words.get(i) {
            w.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Adds one.
    pub fn inc(&self, c: Counter) {
        self.add_at(c.word(), 1);
    }

    /// Reads one counter.
    pub fn get(&self, c: Counter) -> u64 {
        self.words
            .get(c.word())
            .map_or(0, |w| w.load(Ordering::Relaxed))
    }

    /// Adds `n`.
    pub fn add(&self, c: Counter, n: u64) {
        self.add_at(c.word(), n);
    }

    /// Counts a dropped request with its engine reason.
    pub fn drop_for(&self, c: Counter) {
        self.inc(Counter::Dropped);
        self.inc(c);
    }

    /// Counts a packet the codec refused.
    pub fn codec_drop(&self, r: DropReason) {
        self.inc(Counter::Dropped);
        self.add_at(CODEC_DROPS_START + r.index(), 1);
    }

    /// Every counter of the catalogue as (name, value), in catalogue order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Counter::ALL
            .iter()
            .map(|&c| (c.name(), self.get(c)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let c = Counters::new(&words);
        c.drop_for(Counter::DropBusy);
        c.codec_drop(DropReason::ALL[0]);
        let snap = c.snapshot();
        assert!(snap.contains(&("dropped", 2)));
        assert!(snap.contains(&("busy", 1)));
        assert!(snap.contains(&("decode_too_short", 1)));
        assert_eq!(c.get(Counter::DecodeTooShort), 1);
    }
}
