//! Randomness for election jitter, behind the [`Rand`] trait so tests and the simulator can
//! inject a seeded source.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// A source of random numbers (the original's `Rand` interface).
pub trait Rand: Send + 'static {
    /// The next 64 random bits.
    fn next_u64(&mut self) -> u64;

    /// A number in `[lo, hi)`; `lo` when the range is empty.
    fn gen_range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        // The modulo bias is below 2^-50 for the small ranges used here.
        lo + self.next_u64() % (hi - lo)
    }
}

/// A deterministic generator (SplitMix64): the same seed gives the same sequence.
///
/// ```
/// use raftlock_raft::{Rand, SeededRand};
/// let mut a = SeededRand::new(7);
/// let mut b = SeededRand::new(7);
/// assert_eq!(a.gen_range(10, 20), b.gen_range(10, 20));
/// ```
#[derive(Clone, Debug)]
pub struct SeededRand {
    state: u64,
}

impl SeededRand {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRand { state: seed }
    }
}

impl Rand for SeededRand {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The default source: a [`SeededRand`] seeded from the process's random hash keys, so
/// that nodes started together do not draw the same election timeouts.
#[derive(Clone, Debug)]
pub struct StandardRand(SeededRand);

impl StandardRand {
    /// A generator with a fresh random seed.
    pub fn new() -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(std::process::id() as u64);
        StandardRand(SeededRand::new(hasher.finish()))
    }
}

impl Default for StandardRand {
    fn default() -> Self {
        Self::new()
    }
}

impl Rand for StandardRand {
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gen_range_stays_in_range_and_covers_it() {
        let mut r = SeededRand::new(1);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let v = r.gen_range(10, 20);
            assert!((10..20).contains(&v));
            seen[(v - 10) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(r.gen_range(5, 5), 5);
    }

    #[test]
    fn standard_rand_seeds_differ() {
        let a = StandardRand::new().next_u64();
        let b = StandardRand::new().next_u64();
        assert_ne!(a, b);
    }
}
