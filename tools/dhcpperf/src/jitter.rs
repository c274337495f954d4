//! Randomised retransmission delays (RFC 2131 4.1: each delay "randomized by the value of a
//! uniform random number chosen from the range -1 to +1" second), from a small seeded
//! generator (SplitMix64), so a run's delays are reproducible from its seed.

use std::time::Duration;

/// The shortest delay a jittered retransmission gets (a delay never becomes 0 or negative).
pub const MIN_DELAY_US: u64 = 1000;

/// Adds a uniform random offset in `[-max, +max]` to delays.
#[derive(Debug, Clone)]
pub struct Jitter {
    max_us: u64,
    state: u64,
}

impl Jitter {
    /// Offsets up to `max` either way, drawn from a generator seeded with `seed`.
    pub fn new(max: Duration, seed: u64) -> Self {
        Self {
            max_us: max.as_micros().min(u128::from(u64::MAX / 4)) as u64,
            state: seed ^ 0x6a09_e667_f3bc_c909,
        }
    }

    /// The largest offset, µs.
    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    fn next_u64(&mut self) -> u64 {
        // SplitMix64 (Steele, Lea, Flood 2014).
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `delay_us` plus a uniform offset in `[-max, +max]` µs, at least [`MIN_DELAY_US`].
    pub fn apply(&mut self, delay_us: u64) -> u64 {
        if self.max_us == 0 {
            return delay_us;
        }
        let span = 2 * self.max_us + 1;
        // Modulo bias is below span / 2^64: negligible for spans of seconds in µs.
        let offset = self.next_u64() % span;
        (delay_us + offset)
            .saturating_sub(self.max_us)
            .max(MIN_DELAY_US)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_vary_within_bounds() {
        let mut j = Jitter::new(Duration::from_secs(1), 7);
        let d: Vec<u64> = (0..10_000).map(|_| j.apply(4_000_000)).collect();
        assert!(d.iter().all(|&x| (3_000_000..=5_000_000).contains(&x)));
        let (lo, hi) = (d.iter().min().unwrap(), d.iter().max().unwrap());
        assert!(*lo < 3_050_000 && *hi > 4_950_000, "spread {lo}..{hi}");
        let mean = d.iter().sum::<u64>() as f64 / d.len() as f64;
        assert!((mean - 4e6).abs() < 30_000.0, "mean {mean}");
        // Each quarter of the range gets about a quarter of the draws (uniform).
        for q in 0..4u64 {
            let (a, b) = (3_000_000 + q * 500_000, 3_500_000 + q * 500_000);
            let n = d.iter().filter(|&&x| x >= a && x < b).count();
            assert!((2200..2800).contains(&n), "quarter {q}: {n}");
        }
    }

    #[test]
    fn same_seed_same_delays_other_seed_other_delays() {
        let run = |seed| {
            let mut j = Jitter::new(Duration::from_secs(1), seed);
            (0..100).map(|_| j.apply(2_000_000)).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn short_delays_stay_positive_and_zero_disables() {
        let mut j = Jitter::new(Duration::from_secs(1), 3);
        assert!((0..1000).all(|_| (MIN_DELAY_US..=2_000_000).contains(&j.apply(1_000_000))));
        let mut off = Jitter::new(Duration::ZERO, 3);
        assert_eq!(off.apply(1_000_000), 1_000_000);
        assert_eq!(off.max_us(), 0);
    }
}
