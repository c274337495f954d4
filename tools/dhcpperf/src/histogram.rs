//! A fixed-size log-linear latency histogram (values in microseconds).
//!
//! Values below 128 are counted exactly; above, each power of two is split into 64 buckets,
//! so a reported percentile is at most 1/64 (1.6 %) above the true value. Percentiles use the
//! nearest-rank method and report the bucket's upper bound, clamped to the largest value seen.

use serde::Serialize;

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS; // 64
const EXACT: u64 = 2 * SUB; // 128
const BUCKETS: usize = (EXACT + (64 - SUB_BITS as u64 - 1) * SUB) as usize;

/// A latency histogram.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn index_of(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    let top = v >> shift; // in [64, 128)
    (EXACT + u64::from(shift - 1) * SUB + (top - SUB)) as usize
}

fn upper_bound_of(index: usize) -> u64 {
    let i = index as u64;
    if i < EXACT {
        return i;
    }
    let shift = (i - EXACT) / SUB + 1;
    let top = (i - EXACT) % SUB + SUB;
    let upper = (u128::from(top + 1) << shift) - 1;
    u64::try_from(upper).unwrap_or(u64::MAX)
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
            sum: 0,
        }
    }

    /// Counts one value.
    pub fn record(&mut self, v: u64) {
        if let Some(c) = self.counts.get_mut(index_of(v)) {
            *c += 1;
        }
        self.total += 1;
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Largest value counted (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The `p`-th percentile (0 < p ≤ 100) by nearest rank, `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let p = p.clamp(0.0, 100.0);
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper_bound_of(i).min(self.max));
            }
        }
        Some(self.max)
    }

    /// Summary in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let ms = |v: Option<u64>| v.map(|us| us as f64 / 1000.0);
        LatencySummary {
            count: self.total,
            p50_ms: ms(self.percentile(50.0)),
            p99_ms: ms(self.percentile(99.0)),
            max_ms: ms((self.total > 0).then_some(self.max)),
            mean_ms: (self.total > 0).then(|| self.sum as f64 / self.total as f64 / 1000.0),
        }
    }
}

/// Latency percentiles of one message type, in milliseconds (`null` when nothing was counted).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Values counted.
    pub count: u64,
    /// Median.
    pub p50_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Maximum.
    pub max_ms: Option<f64>,
    /// Mean.
    pub mean_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_percentile(sorted: &[u64], p: f64) -> u64 {
        let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
        sorted[rank - 1]
    }

    #[test]
    fn buckets_are_contiguous_and_monotonic() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            127,
            128,
            129,
            255,
            256,
            1000,
            65_535,
            1 << 40,
            u64::MAX,
        ] {
            let i = index_of(v);
            assert!(i < BUCKETS, "{v} -> {i}");
            assert!(i >= last);
            last = i;
            assert!(upper_bound_of(i) >= v, "upper bound of {v}");
        }
        for i in 1..BUCKETS {
            assert_eq!(index_of(upper_bound_of(i - 1) + 1), i, "bucket {i}");
        }
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), Some(50));
        assert_eq!(h.percentile(99.0), Some(99));
        assert_eq!(h.percentile(100.0), Some(100));
        assert_eq!(h.percentile(0.0), Some(1));
        assert_eq!(h.max(), 100);
    }

    #[test]
    fn large_values_within_relative_error() {
        let mut h = Histogram::new();
        let mut vals: Vec<u64> = (0..50_000u64).map(|i| (i * 7919) % 2_000_000 + 1).collect();
        for &v in &vals {
            h.record(v);
        }
        vals.sort_unstable();
        for p in [50.0, 90.0, 99.0, 99.9] {
            let got = h.percentile(p).unwrap() as f64;
            let want = exact_percentile(&vals, p) as f64;
            assert!(got >= want, "p{p}: {got} < {want}");
            assert!(
                got <= want * (1.0 + 1.0 / 64.0) + 1.0,
                "p{p}: {got} vs {want}"
            );
        }
        assert_eq!(h.percentile(100.0), Some(*vals.last().unwrap()));
    }

    #[test]
    fn empty_and_merge() {
        let mut a = Histogram::new();
        assert_eq!(a.percentile(50.0), None);
        assert_eq!(a.summary().p99_ms, None);
        let mut b = Histogram::new();
        a.record(10);
        b.record(20);
        b.record(30_000);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.percentile(50.0), Some(20));
        assert_eq!(a.max(), 30_000);
        let s = a.summary();
        assert_eq!(s.p50_ms, Some(0.02));
        assert_eq!(s.max_ms, Some(30.0));
    }
}
