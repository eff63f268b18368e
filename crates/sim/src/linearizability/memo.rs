//! The memo of visited search configurations, and the bitset and hashing helpers it
//! uses.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::model::StateId;

/// Whether bit `i` is set.
pub(super) fn is_set(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

/// Toggles bit `i`.
pub(super) fn flip(bits: &mut [u64], i: usize) {
    bits[i / 64] ^= 1 << (i % 64);
}

/// SplitMix64 finalizer: a bijective 64-bit mixer.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Zobrist key of completed operation `i`: a set's hash is the XOR of its members', so
/// it is updated in O(1) as operations are linearized and undone.
pub(super) fn op_hash(i: usize) -> u64 {
    mix64((i as u64).wrapping_mul(2).wrapping_add(1))
}

/// Hash contribution of a model state.
pub(super) fn state_hash(s: StateId) -> u64 {
    mix64(
        (s as u64)
            .wrapping_mul(2)
            .wrapping_add(0x5851_f42d_4c95_7f2e),
    )
}

/// A hasher for keys that already are well-mixed `u64` hashes.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A bitset of completed operations stored compactly: linearized sets are nearly
/// prefixes of the call order, so `lead` counts the leading all-ones words and `rest` is
/// the remainder without trailing zero words.
fn compress(bits: &[u64]) -> (usize, &[u64]) {
    let lead = bits.iter().take_while(|&&w| w == u64::MAX).count();
    let rest = &bits[lead..];
    (lead, trim(rest))
}

/// `bits` without trailing zero words.
fn trim(bits: &[u64]) -> &[u64] {
    &bits[..bits.iter().rposition(|&w| w != 0).map_or(0, |p| p + 1)]
}

/// Whether `a ⊆ b`.
fn is_subset(a: &[u64], b: &[u64]) -> bool {
    a.iter()
        .enumerate()
        .all(|(i, &w)| w & !b.get(i).copied().unwrap_or(0) == 0)
}

/// The visited configurations with one completed set and state.
struct Slot {
    state: StateId,
    lead: usize,
    rest: Box<[u64]>,
    /// Antichain (under ⊆) of the uncertain sets visited unrestricted.
    free: Vec<Box<[u64]>>,
    /// The same for restricted configurations, which may not continue with a blind
    /// write (see `search::Frame::restricted`).
    restricted: Vec<Box<[u64]>>,
}

/// The set of visited configurations, keyed by the hash of (completed set, state).
#[derive(Default)]
pub(super) struct Memo {
    map: HashMap<u64, Vec<Slot>, BuildHasherDefault<PreHashed>>,
}

impl Memo {
    /// Records a configuration; returns `false` if it was already visited or is
    /// dominated by a visited one.
    ///
    /// A visited configuration with the same completed set and state dominates when its
    /// set of linearized uncertain operations is a subset (leaving uncertain operations
    /// out never removes options: they have no return and may be dropped) and it is no
    /// more restricted. Every continuation of the dominated configuration corresponds to
    /// one of the dominating configuration, so if that one failed (or is still being
    /// explored) nothing is lost by skipping this one.
    pub(super) fn insert(
        &mut self,
        hash: u64,
        state: StateId,
        ok_bits: &[u64],
        unc_bits: &[u64],
        restricted: bool,
    ) -> bool {
        let (lead, rest) = compress(ok_bits);
        let unc = trim(unc_bits);
        let bucket = self.map.entry(hash).or_default();
        let found = bucket
            .iter_mut()
            .find(|s| s.state == state && s.lead == lead && *s.rest == *rest);
        let Some(slot) = found else {
            let set: Box<[u64]> = unc.into();
            let (free, restricted) = if restricted {
                (Vec::new(), vec![set])
            } else {
                (vec![set], Vec::new())
            };
            bucket.push(Slot {
                state,
                lead,
                rest: rest.into(),
                free,
                restricted,
            });
            return true;
        };
        let dominated = |sets: &[Box<[u64]>]| sets.iter().any(|t| is_subset(t, unc));
        if dominated(&slot.free) || (restricted && dominated(&slot.restricted)) {
            return false;
        }
        slot.restricted.retain(|t| !is_subset(unc, t));
        if restricted {
            slot.restricted.push(unc.into());
        } else {
            slot.free.retain(|t| !is_subset(unc, t));
            slot.free.push(unc.into());
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_prunes_supersets_of_uncertain_sets_only_when_no_more_restricted() {
        let mut memo = Memo::default();
        let ok = [0b1u64];
        assert!(memo.insert(7, 1, &ok, &[0b01], true));
        assert!(!memo.insert(7, 1, &ok, &[0b01], true));
        assert!(!memo.insert(7, 1, &ok, &[0b11], true));
        // An unrestricted configuration is not dominated by a restricted one...
        assert!(memo.insert(7, 1, &ok, &[0b11], false));
        // ...and then dominates restricted supersets.
        assert!(!memo.insert(7, 1, &ok, &[0b111], true));
        // A subset is new; a different state or completed set is new.
        assert!(memo.insert(7, 1, &ok, &[0b00], false));
        assert!(memo.insert(7, 2, &ok, &[0b00], false));
        assert!(memo.insert(7, 1, &[0b11], &[0b00], false));
        // Compression: trailing zero words do not matter.
        assert!(!memo.insert(7, 1, &[0b1, 0], &[0, 0], false));
    }
}
