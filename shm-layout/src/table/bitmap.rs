//! The free bitmap (1 bit per slot, 1 = allocatable) and its summary level (1 bit per bitmap
//! word, so a scan skips 4096 full slots per zero summary word).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Table;
use crate::layout::Geometry;
use crate::slot::LeaseState;

impl Table {
    /// Whether the free-bitmap bit of a slot is set (the slot is allocatable).
    pub fn is_free(&self, slot: u32) -> bool {
        let wi = slot as usize / 64;
        wi < self.geo.bitmap_words
            && self.w()[self.geo.bitmap_off + wi].load(Ordering::Acquire) & (1 << (slot % 64)) != 0
    }

    pub(crate) fn set_free_bit(&self, slot: u32, free: bool) {
        let wi = slot as usize / 64;
        let bit = 1u64 << (slot % 64);
        let word = &self.w()[self.geo.bitmap_off + wi];
        let sword = &self.w()[self.geo.summary_off + wi / 64];
        let sbit = 1u64 << (wi % 64);
        if free {
            word.fetch_or(bit, Ordering::AcqRel);
            sword.fetch_or(sbit, Ordering::AcqRel);
        } else {
            let prev = word.fetch_and(!bit, Ordering::AcqRel);
            if prev & !bit == 0 {
                sword.fetch_and(!sbit, Ordering::AcqRel);
                if word.load(Ordering::Acquire) != 0 {
                    sword.fetch_or(sbit, Ordering::AcqRel);
                }
            }
        }
    }

    pub(crate) fn bit_should_be_free(&self, slot: u32, state: LeaseState) -> bool {
        state.is_allocatable() && self.slot_in_pool(slot)
    }

    /// The first slot at or after `start` (wrapping around within `span`) whose free bit is set.
    /// A hint: the caller must still win the slot with [`Table::update`].
    pub fn next_free(&self, span: Range<u32>, start: u32) -> Option<u32> {
        if span.is_empty() {
            return None;
        }
        let start = if span.contains(&start) {
            start
        } else {
            span.start
        };
        self.scan_free(start, span.end)
            .or_else(|| self.scan_free(span.start, start))
    }

    fn scan_free(&self, from: u32, to: u32) -> Option<u32> {
        let w = self.w();
        let mut slot = from as u64;
        let to = to as u64;
        while slot < to {
            let wi = (slot / 64) as usize;
            let swi = wi / 64;
            let sbits =
                w[self.geo.summary_off + swi].load(Ordering::Acquire) & (!0u64 << (wi % 64));
            if sbits == 0 {
                slot = ((swi as u64) + 1) * 4096;
                continue;
            }
            let wi2 = swi * 64 + sbits.trailing_zeros() as usize;
            if wi2 > wi {
                slot = wi2 as u64 * 64;
                // The jump may leave the span (its tail was full): the next word belongs to
                // whatever follows, e.g. the neighbouring subnet.
                if slot >= to {
                    return None;
                }
            }
            let wi = (slot / 64) as usize;
            if wi >= self.geo.bitmap_words {
                return None;
            }
            let mut bits = w[self.geo.bitmap_off + wi].load(Ordering::Acquire);
            bits &= !0u64 << (slot % 64);
            let word_end = (wi as u64 + 1) * 64;
            if to < word_end {
                // `slot < to`, so `to` lies in this word: keep its bits below `to`.
                bits &= (1u64 << (to - wi as u64 * 64)).wrapping_sub(1);
            }
            if bits != 0 {
                return Some((wi as u64 * 64 + u64::from(bits.trailing_zeros())) as u32);
            }
            slot = word_end;
        }
        None
    }

    /// Counts free bits in a slot span (for pool statistics).
    pub fn count_free(&self, span: Range<u32>) -> u64 {
        let mut n = 0u64;
        let mut slot = span.start;
        let span_end = span.end.min(self.slot_count());
        while slot < span_end {
            let wi = slot as usize / 64;
            let mut bits = self.w()[self.geo.bitmap_off + wi].load(Ordering::Relaxed);
            bits &= !0u64 << (slot % 64);
            let word_end = (wi as u32 + 1) * 64;
            if span_end < word_end {
                bits &= (1u64 << (span_end % 64)).wrapping_sub(1);
            }
            n += u64::from(bits.count_ones());
            slot = word_end;
        }
        n
    }
}

/// Sets the free bits of slots `from..to` (creation only, before anybody maps the file).
pub(super) fn set_bits(w: &[AtomicU64], geo: &Geometry, from: u64, to: u64) {
    let mut slot = from;
    while slot < to {
        let wi = (slot / 64) as usize;
        let word_end = (wi as u64 + 1) * 64;
        let mut bits = !0u64 << (slot % 64);
        if to < word_end {
            bits &= (1u64 << (to % 64)).wrapping_sub(1);
        }
        w[geo.bitmap_off + wi].fetch_or(bits, Ordering::Relaxed);
        w[geo.summary_off + wi / 64].fetch_or(1 << (wi % 64), Ordering::Relaxed);
        slot = word_end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{LayoutSpec, RangeSpec};
    use crate::slot::SlotImage;
    use crate::table::testing::*;

    #[test]
    fn fresh_table_has_pool_slots_free_and_reservation_slots_not() {
        let f = fixture();
        assert!(f.table.is_free(0));
        assert!(!f.table.is_free(100));
        assert_eq!(f.table.count_free(0..f.table.slot_count()), 1124);
        assert!(f.table.check().is_clean());
    }

    #[test]
    fn next_free_scans_spans_and_wraps() {
        let f = fixture();
        let t = &f.table;
        assert_eq!(t.next_free(0..101, 0), Some(0));
        assert_eq!(t.next_free(0..101, 50), Some(50));
        // The out-of-pool reservation slot 100 is never free.
        assert_eq!(t.next_free(0..101, 100), Some(0));
        for slot in 0..100 {
            t.update(
                1,
                &f.ring,
                slot,
                &SlotImage::PRISTINE,
                &lease(slot as u8),
                &ctx(),
            )
            .unwrap();
        }
        assert_eq!(t.next_free(0..101, 7), None);
        assert_eq!(t.next_free(101..1125, 0), Some(101));
        // Exhaust a whole summary word's worth in the big range and find the one left.
        for slot in 101..1124 {
            t.update(1, &f.ring, slot, &SlotImage::PRISTINE, &lease(1), &ctx())
                .unwrap();
        }
        assert_eq!(t.next_free(101..1125, 200), Some(1124));
        assert_eq!(t.count_free(0..1125), 1);
    }

    #[test]
    fn next_free_stays_inside_a_span_whose_tail_word_is_full() {
        // Subnet A is slots 0..101 (100 pool slots and one reservation), subnet B starts at 101.
        // Fill A's tail 64..100 and B's first slots up to 127, so bitmap word 1 is all zero and
        // the summary sends the scan to word 2 (slot 128, in subnet B).
        let f = fixture();
        let t = &f.table;
        for slot in (64..100).chain(101..128) {
            t.update(1, &f.ring, slot, &SlotImage::PRISTINE, &lease(1), &ctx())
                .unwrap();
        }
        assert!(t.is_free(128));
        assert_eq!(t.next_free(0..101, 64), Some(0), "wraps to A's free head");
        for slot in 0..64 {
            t.update(1, &f.ring, slot, &SlotImage::PRISTINE, &lease(1), &ctx())
                .unwrap();
        }
        assert_eq!(t.next_free(0..101, 64), None, "A is full");
        assert_eq!(t.next_free(0..101, 0), None, "A is full");
        assert_eq!(t.count_free(0..101), 0);
        assert_eq!(t.next_free(101..1125, 101), Some(128));
    }

    /// Slots of the property-test table: three whole summary words (4096 slots each) and a part.
    const PROP_SLOTS: u32 = 3 * 4096 + 1000;

    /// Span boundaries: anywhere, on a bitmap word, or near a summary word boundary.
    fn boundary() -> impl proptest::strategy::Strategy<Value = u32> {
        use proptest::prelude::*;
        prop_oneof![
            0..=PROP_SLOTS,
            (0..=PROP_SLOTS / 64).prop_map(|k| k * 64),
            (0..=PROP_SLOTS / 4096, -3i64..=3).prop_map(|(k, d)| (i64::from(k) * 4096 + d)
                .clamp(0, i64::from(PROP_SLOTS))
                as u32),
        ]
    }

    /// The first free slot at or after `start` within `span`, wrapping, the slow way.
    fn naive_next_free(free: &[bool], span: Range<u32>, start: u32) -> Option<u32> {
        if span.is_empty() {
            return None;
        }
        let start = if span.contains(&start) {
            start
        } else {
            span.start
        };
        (start..span.end)
            .chain(span.start..start)
            .find(|&s| free[s as usize])
    }

    #[test]
    fn next_free_and_count_free_match_a_naive_scan() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let dir = tempfile::tempdir().unwrap();
        let layout = LayoutSpec {
            ranges: vec![RangeSpec {
                first: 0x0a00_0000,
                last: 0x0a00_0000 + PROP_SLOTS - 1,
                in_pool: true,
            }],
        };
        let t = Table::create(&dir.path().join("t"), &layout).unwrap();
        let fill = (
            any::<bool>(),
            prop::collection::vec((0..PROP_SLOTS, 1u32..6000, any::<bool>()), 0..12),
            prop::collection::vec(0..PROP_SLOTS, 0..6),
            prop::collection::vec((boundary(), boundary(), 0..PROP_SLOTS + 64), 1..24),
        );
        let mut runner = TestRunner::new(Config::with_cases(512));
        runner
            .run(&fill, |(base_free, runs, singles, spans)| {
                let mut free = vec![base_free; PROP_SLOTS as usize];
                for (at, len, f) in runs {
                    let end = (at + len).min(PROP_SLOTS);
                    free[at as usize..end as usize].fill(f);
                }
                for s in singles {
                    free[s as usize] = !free[s as usize];
                }
                for (slot, &f) in free.iter().enumerate() {
                    t.set_free_bit(slot as u32, f);
                }
                for (a, b, start) in spans {
                    let span = a.min(b)..a.max(b);
                    let want = naive_next_free(&free, span.clone(), start);
                    let got = t.next_free(span.clone(), start);
                    prop_assert_eq!(got, want, "span {:?} start {}", span, start);
                    if let Some(g) = got {
                        prop_assert!(span.contains(&g) && free[g as usize]);
                    }
                    let count = free[span.start as usize..span.end as usize]
                        .iter()
                        .filter(|&&f| f)
                        .count() as u64;
                    prop_assert_eq!(t.count_free(span.clone()), count, "span {:?}", span);
                }
                Ok(())
            })
            .unwrap();
    }
}
