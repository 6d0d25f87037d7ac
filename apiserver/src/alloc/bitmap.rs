//! The allocation bitmap under both allocators: upstream's `pkg/registry/core/service/allocator/bitmap.go`
//! (`AllocationBitmap` with `randomScanStrategyWithOffset`).
//!
//! Upstream keeps one `big.Int` and scans it bit by bit, so taking the last free slot of a /12
//! walks a million bits. Here a second level (`summary`, one bit per 64-bit word, set while the
//! word still has a free bit) lets a scan skip 4096 offsets per summary word: finding a free slot
//! costs at most `max / 4096` summary words plus two data words, whatever the fill.

use rand::Rng;

/// Bits per word of either level.
const W: usize = 64;

/// A fixed-size set of offsets `[0, max)` with a static band `[0, offset)` that dynamic
/// allocation uses only once the dynamic band `[offset, max)` is full (KEP-3070).
///
/// Explicit allocation ([`allocate`](Self::allocate)) may take any offset. Out-of-range offsets
/// are never allocated and never panic.
#[derive(Debug, Clone)]
pub struct AllocationBitmap {
    /// Number of usable offsets.
    max: usize,
    /// Size of the static band at the bottom; always `<= max`.
    offset: usize,
    /// Number of allocated offsets.
    count: usize,
    /// One bit per offset, set when allocated. Padding bits of the last word (offsets `>= max`)
    /// are kept set, so a word is "full" exactly when it is `!0`.
    words: Vec<u64>,
    /// One bit per word of `words`, set while that word has a free bit. Bits past the last word
    /// are clear.
    summary: Vec<u64>,
}

impl AllocationBitmap {
    /// `NewAllocationMapWithOffset(max, rangeSpec, offset)`: an empty bitmap of `max` offsets
    /// whose lowest `offset` ones form the static band (clamped to `max`).
    pub fn new(max: usize, offset: usize) -> Self {
        let n_words = max.div_ceil(W);
        let mut words = vec![0u64; n_words];
        if !max.is_multiple_of(W) {
            // Padding past `max` counts as allocated, so it is never found free.
            words[n_words - 1] = !0u64 << (max % W);
        }
        let mut summary = vec![0u64; n_words.div_ceil(W)];
        for (si, s) in summary.iter_mut().enumerate() {
            let words_here = (n_words - si * W).min(W);
            *s = if words_here == W { !0 } else { (1u64 << words_here) - 1 };
        }
        Self { max, offset: offset.min(max), count: 0, words, summary }
    }

    /// Number of usable offsets (`[0, max)`).
    pub fn max(&self) -> usize {
        self.max
    }

    /// Size of the static band `[0, offset)`.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Count of free offsets.
    pub fn free(&self) -> usize {
        self.max - self.count
    }

    /// Count of allocated offsets.
    pub fn used(&self) -> usize {
        self.count
    }

    /// Whether `at` is allocated (false when out of range).
    pub fn has(&self, at: usize) -> bool {
        at < self.max && self.words[at / W] & (1 << (at % W)) != 0
    }

    /// Reserves `at`. Returns false when it was already allocated or is out of range
    /// (upstream returns an error for the latter; both wrappers check the range first).
    pub fn allocate(&mut self, at: usize) -> bool {
        if at >= self.max || self.has(at) {
            return false;
        }
        self.set(at);
        true
    }

    /// `AllocateNext` with the thread-local RNG: see [`allocate_next_with`](Self::allocate_next_with).
    pub fn allocate_next(&mut self) -> Option<usize> {
        self.allocate_next_with(&mut rand::rng())
    }

    /// `randomScanStrategyWithOffset.AllocateBit`: picks a random start in the dynamic band and
    /// scans forward, wrapping within the band; when the dynamic band is full, does the same in
    /// the static band. `None` when every offset is taken.
    pub fn allocate_next_with<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Option<usize> {
        if self.count >= self.max {
            return None;
        }
        let at = self.scan_band(rng, self.offset, self.max).or_else(|| self.scan_band(rng, 0, self.offset))?;
        self.set(at);
        Some(at)
    }

    /// Releases `at`. Releasing a free or out-of-range offset is a no-op; returns whether
    /// anything was released.
    pub fn release(&mut self, at: usize) -> bool {
        if !self.has(at) {
            return false;
        }
        let wi = at / W;
        self.words[wi] &= !(1 << (at % W));
        self.summary[wi / W] |= 1 << (wi % W);
        self.count -= 1;
        true
    }

    /// The allocated offsets, ascending (`ForEach`).
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(move |(wi, &word)| {
            let mut bits = word & self.valid_mask(wi);
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(wi * W + b)
            })
        })
    }

    /// `Snapshot`'s data: the bitmap as Go's `big.Int.Bytes()` (big-endian, no leading zero
    /// bytes; offset `i` is bit `i % 8` of the `i / 8`-th byte from the end), so it matches the
    /// `data` of an upstream `RangeAllocation`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut le: Vec<u8> = Vec::with_capacity(self.words.len() * 8);
        for (wi, &word) in self.words.iter().enumerate() {
            le.extend_from_slice(&(word & self.valid_mask(wi)).to_le_bytes());
        }
        while le.last() == Some(&0) {
            le.pop();
        }
        le.reverse();
        le
    }

    /// `Restore`'s data: replaces the contents with those of [`to_bytes`](Self::to_bytes) output.
    /// Bits at offsets `>= max` are ignored.
    pub fn load_bytes(&mut self, data: &[u8]) {
        *self = Self::new(self.max, self.offset);
        for (i, &byte) in data.iter().rev().enumerate() {
            let mut bits = byte;
            while bits != 0 {
                let at = i * 8 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if at < self.max {
                    self.set(at);
                }
            }
        }
    }

    /// Marks a free, in-range offset allocated and keeps the summary in step.
    fn set(&mut self, at: usize) {
        let wi = at / W;
        self.words[wi] |= 1 << (at % W);
        if self.words[wi] == !0 {
            self.summary[wi / W] &= !(1 << (wi % W));
        }
        self.count += 1;
    }

    /// The bits of word `wi` that are real offsets (not padding).
    fn valid_mask(&self, wi: usize) -> u64 {
        let end = self.max - wi * W;
        if end >= W { !0 } else { (1u64 << end) - 1 }
    }

    /// A free offset in `[lo, hi)`: the first at or after a random start, wrapping to `lo`.
    fn scan_band<R: Rng + ?Sized>(&self, rng: &mut R, lo: usize, hi: usize) -> Option<usize> {
        if lo >= hi {
            return None;
        }
        let start = rng.random_range(lo..hi);
        self.first_free(start, hi).or_else(|| self.first_free(lo, start))
    }

    /// The lowest free offset in `[from, to)`, with `to <= max`.
    fn first_free(&self, from: usize, to: usize) -> Option<usize> {
        if from >= to {
            return None;
        }
        let last_word = (to - 1) / W;
        let mut wi = from / W;
        let mut free = !self.words[wi] & (!0u64 << (from % W));
        loop {
            if free != 0 {
                let at = wi * W + free.trailing_zeros() as usize;
                return (at < to).then_some(at);
            }
            wi = self.next_nonfull_word(wi + 1, last_word)?;
            free = !self.words[wi];
        }
    }

    /// The first word index in `[start, last]` that has a free bit, read from the summary.
    fn next_nonfull_word(&self, start: usize, last: usize) -> Option<usize> {
        if start > last {
            return None;
        }
        let last_si = last / W;
        let mut si = start / W;
        let mut bits = self.summary[si] & (!0u64 << (start % W));
        loop {
            if bits != 0 {
                let wi = si * W + bits.trailing_zeros() as usize;
                return (wi <= last).then_some(wi);
            }
            si += 1;
            if si > last_si {
                return None;
            }
            bits = self.summary[si];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::collections::BTreeSet;

    /// Upstream's shared table (`allocator/bitmap_test.go`): (name, max, reserved).
    const CASES: &[(&str, usize, usize)] = &[
        ("NewAllocationMap", 32, 0),
        ("max < 16", 8, 0),
        ("max > 16", 128, 16),
        ("max > 256", 1024, 64),
        ("max value", 65535, 256),
    ];

    /// Checks the summary against the words: the invariant every fast path relies on.
    fn check_invariants(m: &AllocationBitmap) {
        for (wi, &word) in m.words.iter().enumerate() {
            let nonfull = m.summary[wi / W] & (1 << (wi % W)) != 0;
            assert_eq!(nonfull, word != !0, "summary bit of word {wi}");
        }
        assert_eq!(m.iter().count(), m.count);
    }

    #[test]
    fn allocate_next_counts() {
        for &(name, max, reserved) in CASES {
            let mut m = AllocationBitmap::new(max, reserved);
            assert!(m.allocate_next().is_some(), "{name}");
            assert_eq!((m.used(), m.free()), (1, max - 1), "{name}");
        }
    }

    #[test]
    fn allocate_max_then_full() {
        for &(name, max, reserved) in CASES {
            let mut m = AllocationBitmap::new(max, reserved);
            for i in 0..max {
                assert!(m.allocate(i), "{name}: {i}");
            }
            assert_eq!(m.allocate_next(), None, "{name}");
            assert!(!m.allocate(max), "{name}: out of range");
            assert_eq!(m.free(), 0, "{name}");
            check_invariants(&m);
        }
    }

    #[test]
    fn allocate_next_max_then_full() {
        for &(name, max, reserved) in CASES {
            let mut m = AllocationBitmap::new(max, reserved);
            let mut seen = BTreeSet::new();
            for _ in 0..max {
                let at = m.allocate_next().unwrap_or_else(|| panic!("{name}: full early"));
                assert!(at < max && seen.insert(at), "{name}: {at}");
            }
            assert_eq!(m.allocate_next(), None, "{name}");
            assert_eq!(m.free(), 0, "{name}");
            check_invariants(&m);
        }
    }

    #[test]
    fn allocate_twice_and_release() {
        for &(name, max, reserved) in CASES {
            let mut m = AllocationBitmap::new(max, reserved);
            assert!(m.allocate(3), "{name}");
            assert!(!m.allocate(3), "{name}");
            assert!(m.has(3), "{name}");
            assert!(m.release(3), "{name}");
            assert!(!m.has(3), "{name}");
            assert!(!m.release(3), "{name}: double release is a no-op");
            assert!(!m.release(max + 5), "{name}: out of range release is a no-op");
            assert_eq!(m.used(), 0, "{name}");
        }
    }

    #[test]
    fn for_each() {
        let sets: &[&[usize]] = &[&[], &[0], &[0, 2, 5], &[0, 1, 2, 3, 4, 5, 6, 7]];
        for &(name, max, reserved) in CASES {
            for set in sets {
                let mut m = AllocationBitmap::new(max, reserved);
                for &at in *set {
                    assert!(m.allocate(at));
                }
                assert_eq!(m.iter().collect::<Vec<_>>(), *set, "{name}");
            }
        }
    }

    #[test]
    fn snapshot_and_restore() {
        for &(name, max, reserved) in CASES {
            let mut m = AllocationBitmap::new(max, reserved);
            assert!(m.allocate(3));
            let data = m.to_bytes();
            let mut m2 = AllocationBitmap::new(max, reserved);
            m2.load_bytes(&data);
            assert_eq!(m2.used(), 1, "{name}");
            assert!(m2.has(3), "{name}");
            check_invariants(&m2);
        }
    }

    #[test]
    fn bytes_match_go_big_int() {
        let mut m = AllocationBitmap::new(200, 16);
        assert_eq!(m.to_bytes(), Vec::<u8>::new());
        m.allocate(3);
        assert_eq!(m.to_bytes(), vec![0x08]);
        m.allocate(8);
        assert_eq!(m.to_bytes(), vec![0x01, 0x08]);
        m.allocate(64);
        assert_eq!(m.to_bytes(), vec![0x01, 0, 0, 0, 0, 0, 0, 0x01, 0x08]);
        m.allocate(199);
        let bytes = m.to_bytes();
        assert_eq!((bytes.len(), bytes[0]), (25, 0x80));
        let mut back = AllocationBitmap::new(200, 16);
        back.load_bytes(&bytes);
        assert_eq!(back.iter().collect::<Vec<_>>(), vec![3, 8, 64, 199]);
        // Bits past `max` are dropped, not counted.
        let mut small = AllocationBitmap::new(10, 0);
        small.load_bytes(&bytes);
        assert_eq!(small.iter().collect::<Vec<_>>(), vec![3, 8]);
    }

    /// `TestAllocateMax_BitmapReserved`: the dynamic band fills first.
    #[test]
    fn dynamic_band_first() {
        let (max, offset) = (128, 16);
        let mut m = AllocationBitmap::new(max, offset);
        for _ in 0..max - offset {
            assert!(m.allocate_next().is_some_and(|at| at >= offset));
        }
        assert_eq!(m.free(), offset);
        assert!((0..offset).all(|i| !m.has(i)));
        assert!(m.allocate_next().is_some_and(|at| at < offset));
        assert_eq!(m.used(), max - offset + 1);
    }

    /// `TestPreAllocateReservedFull_BitmapReserved`: the last free value is in the static band.
    #[test]
    fn last_free_in_static_band() {
        let (max, offset) = (128, 16);
        let mut m = AllocationBitmap::new(max, offset);
        for i in offset..max {
            assert!(m.allocate(i));
        }
        for i in 0..offset - 1 {
            assert!(m.allocate(i));
        }
        assert_eq!(m.free(), 1);
        assert_eq!(m.allocate_next(), Some(offset - 1));
        assert_eq!(m.allocate_next(), None);
        assert_eq!((m.free(), m.used()), (0, max));
    }

    /// Bands that do not start on a word boundary (ports: 2768 offsets, offset 86) and ranges
    /// that end mid-word.
    #[test]
    fn unaligned_bands() {
        for &(max, offset) in &[(2768, 86), (65, 16), (127, 16), (129, 16), (30, 16), (31, 16), (200, 64)] {
            let mut rng = StdRng::seed_from_u64(max as u64);
            let mut m = AllocationBitmap::new(max, offset);
            for _ in offset..max {
                let at = m.allocate_next_with(&mut rng).expect("dynamic band");
                assert!((offset..max).contains(&at), "max {max}: {at}");
            }
            for _ in 0..offset {
                let at = m.allocate_next_with(&mut rng).expect("static band");
                assert!(at < offset, "max {max}: {at}");
            }
            assert_eq!(m.allocate_next_with(&mut rng), None);
            check_invariants(&m);
        }
    }

    #[test]
    fn empty_and_degenerate() {
        let mut m = AllocationBitmap::new(0, 0);
        assert_eq!((m.free(), m.allocate_next()), (0, None));
        assert!(!m.allocate(0) && !m.has(0) && !m.release(0));
        assert_eq!(m.to_bytes(), Vec::<u8>::new());
        // An offset larger than the range is clamped: the whole range is the static band.
        let mut m = AllocationBitmap::new(4, 100);
        assert_eq!(m.offset(), 4);
        let got: BTreeSet<_> = (0..4).filter_map(|_| m.allocate_next()).collect();
        assert_eq!(got.len(), 4);
    }

    /// Random allocate/release against a plain set, checking the summary throughout.
    #[test]
    fn matches_model() {
        let mut rng = StdRng::seed_from_u64(7);
        let (max, offset) = (5000, 156);
        let mut m = AllocationBitmap::new(max, offset);
        let mut model = BTreeSet::new();
        for step in 0..40_000 {
            if rng.random_bool(0.6) {
                match m.allocate_next_with(&mut rng) {
                    Some(at) => assert!(model.insert(at), "step {step}: duplicate {at}"),
                    None => assert_eq!(model.len(), max),
                }
            } else {
                let at = rng.random_range(0..max);
                assert_eq!(m.release(at), model.remove(&at), "step {step}");
            }
            if step % 4000 == 0 {
                check_invariants(&m);
            }
        }
        assert_eq!(m.iter().collect::<BTreeSet<_>>(), model);
    }

    /// The biggest range (a /12): fill it, free one slot, and the next allocation finds it.
    #[test]
    fn last_slot_of_a_million() {
        let max = (1 << 20) - 2;
        let mut m = AllocationBitmap::new(max, 256);
        for i in 0..max {
            m.allocate(i);
        }
        let mut rng = StdRng::seed_from_u64(12);
        for _ in 0..20 {
            let hole = rng.random_range(0..max);
            assert!(m.release(hole));
            assert_eq!(m.allocate_next_with(&mut rng), Some(hole));
        }
        assert_eq!(m.allocate_next(), None);
    }
}
