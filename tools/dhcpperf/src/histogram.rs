//! Latency histograms (values in microseconds), recorded with [`hdrhistogram`].
//!
//! Three significant digits: values below 2048 µs are counted exactly; above, a reported
//! percentile is at most 1/1024 (0.1 %) above the true value. Percentiles use the
//! nearest-rank method (as `hdrhistogram`'s `value_at_quantile` does) and report the upper
//! bound of the value's bucket, clamped to the largest value seen. The largest value and the
//! mean are kept exactly next to the buckets.

use serde::Serialize;

/// Significant decimal digits kept by the buckets.
const SIGNIFICANT_DIGITS: u8 = 3;

/// A latency histogram.
#[derive(Debug, Clone)]
pub struct Histogram {
    buckets: hdrhistogram::Histogram<u64>,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram (its buckets grow with the largest value recorded).
    pub fn new() -> Self {
        Self {
            // Only fails for more than 5 significant digits.
            buckets: hdrhistogram::Histogram::new(SIGNIFICANT_DIGITS)
                .expect("3 significant digits are supported"),
            max: 0,
            sum: 0,
        }
    }

    /// Counts one value.
    pub fn record(&mut self, v: u64) {
        // Auto-resizing: growing the buckets only fails when their count would not fit a
        // usize; then the value lands in the largest bucket (the exact max is kept below).
        if self.buckets.record(v).is_err() {
            self.buckets.saturating_record(v);
        }
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        // Both auto-resize, so adding cannot run out of range.
        let _ = self.buckets.add(&other.buckets);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.buckets.len()
    }

    /// Largest value counted (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The `p`-th percentile (0 < p ≤ 100) by nearest rank, `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.count() == 0 {
            return None;
        }
        let q = p.clamp(0.0, 100.0) / 100.0;
        Some(self.buckets.value_at_quantile(q).min(self.max))
    }

    /// Summary in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let ms = |v: Option<u64>| v.map(|us| us as f64 / 1000.0);
        let total = self.count();
        LatencySummary {
            count: total,
            p50_ms: ms(self.percentile(50.0)),
            p99_ms: ms(self.percentile(99.0)),
            max_ms: ms((total > 0).then_some(self.max)),
            mean_ms: (total > 0).then(|| self.sum as f64 / total as f64 / 1000.0),
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
    fn values_up_to_2047_are_exact_and_wide_values_fit() {
        let mut h = Histogram::new();
        for v in 0..2048u64 {
            h.record(v);
        }
        for p in [1.0, 25.0, 50.0, 99.0, 100.0] {
            let rank = ((p / 100.0) * 2048.0f64).ceil() as u64;
            assert_eq!(h.percentile(p), Some(rank - 1), "p{p}");
        }
        // The largest values a latency can take (u32 wrap-around) and beyond still count,
        // and the maximum stays exact.
        h.record(u64::from(u32::MAX));
        h.record(1 << 40);
        assert_eq!(h.count(), 2050);
        assert_eq!(h.max(), 1 << 40);
        assert_eq!(h.percentile(100.0), Some(1 << 40));
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
                got <= want * (1.0 + 1.0 / 1024.0) + 1.0,
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
        assert_eq!(s.mean_ms, Some(10.01));
    }
}
