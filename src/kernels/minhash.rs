//! File contents -> MinHash signatures by one-permutation hashing with optimal densification
//! (scheme `exoflow-oph-1`), and what the near-duplicate stage derives from them: LSH band keys
//! and the estimated Jaccard similarity of two signatures.
//!
//! The scheme, precisely (README "Near-duplicates" says the same in prose):
//!
//! 1. The shingles of a content of `n` bytes, for a width `w` (1..=8): every window of `w`
//!    consecutive bytes when `n >= w`; the whole content as its only shingle when `0 < n < w`;
//!    none when `n == 0`. A content is the *set* of its shingles.
//! 2. A shingle of `m` bytes `b[0..m]` packs into `s = b[0] + b[1]·2⁸ + … + b[m-1]·2⁸⁽ᵐ⁻¹⁾`
//!    (little-endian, as a u64) and hashes to `h = fmix64(s + m·0x9E3779B97F4A7C15)`, all
//!    arithmetic modulo 2⁶⁴, where `fmix64` is MurmurHash3's 64-bit finalizer.
//! 3. For a signature of `k` values, `h` falls into bin `((h >> 32) · k) >> 32` with value
//!    `h mod 2³²`; each bin keeps the least value that falls into it.
//! 4. Every bin `i` that no shingle fell into takes the value of bin `j` for the first attempt
//!    `a = 1, 2, …` whose `j = ((fmix64((i << 32) | a) >> 32) · k) >> 32` is a bin that a shingle
//!    fell into (Shrivastava, "Optimal densification for fast and accurate minwise hashing",
//!    ICML 2017). A content with no shingles has every value `0xFFFFFFFF`.
//!
//! The estimated Jaccard similarity of two contents is the fraction of positions at which their
//! signatures are equal. One hash per shingle (not `k`) is what makes the CPU path affordable:
//! see `benches/kernels.rs`, which times it against `k` independent hashes.

/// The scheme's name, recorded in the pipeline fingerprint.
pub const SCHEME: &str = "exoflow-oph-1";
/// The widest shingle: a shingle packs into one u64.
pub const MAX_SHINGLE: usize = 8;
/// The longest signature.
pub const MAX_SIGNATURE: usize = 1024;
/// The value of a bin of a content without shingles.
pub const EMPTY: u32 = u32::MAX;

const LENGTH_MIX: u64 = 0x9E37_79B9_7F4A_7C15;
/// The multipliers of [`fmix64`].
const FMIX_M1: u64 = 0xff51_afd7_ed55_8ccd;
const FMIX_M2: u64 = 0xc4ce_b9fe_1a85_ec53;

/// MurmurHash3's 64-bit finalizer: a bijection of u64 that mixes every input bit into every
/// output bit.
#[inline(always)]
pub fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(FMIX_M1);
    x ^= x >> 33;
    x = x.wrapping_mul(FMIX_M2);
    x ^ (x >> 33)
}

/// The hash of a shingle packed into `packed`, `len` bytes long.
#[inline(always)]
pub fn shingle_hash(packed: u64, len: usize) -> u64 {
    fmix64(packed.wrapping_add((len as u64).wrapping_mul(LENGTH_MIX)))
}

/// The bin of `hash` among `k` bins.
#[inline(always)]
pub fn bin_of(hash: u64, k: usize) -> usize {
    (((hash >> 32) * k as u64) >> 32) as usize
}

/// The signature of `content` with `k` values and shingles of `width` bytes, into `out`
/// (`out.len() == k`).
pub fn signature(content: &[u8], width: usize, out: &mut [u32]) {
    debug_assert!((1..=MAX_SHINGLE).contains(&width));
    let k = out.len();
    out.fill(EMPTY);
    if k == 0 || content.is_empty() {
        return;
    }
    // A bin is filled when its value is not EMPTY, or when a shingle whose value is EMPTY fell
    // into it (one shingle in 2³², kept aside so that the loops stay branch-free).
    let mut filled_at_empty: Vec<usize> = Vec::new();
    let bins = Bins::new(k);
    if content.len() < width {
        let h = shingle_hash(pack(content), content.len());
        bins.put(h, out, &mut filled_at_empty);
    } else {
        let done = whole_blocks(content, width, bins, out, &mut filled_at_empty);
        let length = (width as u64).wrapping_mul(LENGTH_MIX);
        for start in done..=content.len() - width {
            let h = fmix64(pack(&content[start..start + width]).wrapping_add(length));
            bins.put(h, out, &mut filled_at_empty);
        }
    }
    let mut filled = [0u64; MAX_SIGNATURE / 64];
    for (bin, &value) in out.iter().enumerate() {
        filled[bin / 64] |= u64::from(value != EMPTY) << (bin % 64);
    }
    for bin in filled_at_empty {
        filled[bin / 64] |= 1 << (bin % 64);
    }
    densify(out, &filled);
}

/// Step 3 of the scheme for `k` bins.
#[derive(Clone, Copy)]
struct Bins {
    k: u64,
    /// `((h >> 32) · k) >> 32` is `h >> (64 - log2 k)` when k is a power of two: one multiply
    /// less per shingle.
    shift: Option<u32>,
}

impl Bins {
    fn new(k: usize) -> Bins {
        Bins {
            k: k as u64,
            shift: (k.is_power_of_two() && k > 1).then(|| 64 - k.trailing_zeros()),
        }
    }

    #[inline(always)]
    fn bin(self, h: u64) -> usize {
        match self.shift {
            Some(shift) => (h >> shift) as usize,
            None => (((h >> 32) * self.k) >> 32) as usize,
        }
    }

    #[inline(always)]
    fn put(self, h: u64, out: &mut [u32], filled_at_empty: &mut Vec<usize>) {
        let bin = self.bin(h);
        let value = h as u32;
        let slot = &mut out[bin];
        *slot = (*slot).min(value);
        if value == EMPTY {
            filled_at_empty.push(bin);
        }
    }
}

impl Bins {
    /// [`Bins::put`] for a block of hashes, the bin computed outside the loop's branch;
    /// `empty`: some hash of the block has the value [`EMPTY`].
    #[inline(always)]
    fn put_block(
        self,
        hashes: &[u64],
        empty: bool,
        out: &mut [u32],
        filled_at_empty: &mut Vec<usize>,
    ) {
        match self.shift {
            Some(shift) => {
                for &h in hashes {
                    keep_least(out, (h >> shift) as usize, h as u32);
                }
            }
            None => {
                for &h in hashes {
                    keep_least(out, (((h >> 32) * self.k) >> 32) as usize, h as u32);
                }
            }
        }
        if empty {
            filled_at_empty.extend(
                hashes
                    .iter()
                    .filter(|&&h| h as u32 == EMPTY)
                    .map(|&h| self.bin(h)),
            );
        }
    }
}

/// `out[bin] = min(out[bin], value)`, for a `bin` that [`Bins`] computed: always below `k`.
#[inline(always)]
fn keep_least(out: &mut [u32], bin: usize, value: u32) {
    debug_assert!(bin < out.len());
    // SAFETY: `((h >> 32) · k) >> 32 < k` for every h, and so is `h >> (64 - log2 k)` for a
    // power of two k, and `out.len() == k`.
    let slot = unsafe { out.get_unchecked_mut(bin) };
    *slot = (*slot).min(value);
}

/// Shingles hashed per block: hashes first, a block at a time, so that they vectorize, then
/// the bins.
const BLOCK: usize = 64;

/// Puts the shingles of the whole blocks of `content` whose last window can be read as 8 bytes,
/// and returns where the first shingle not put starts. Uses AVX-512 (64-bit multiplies in
/// vectors) where the processor has it: the same arithmetic, so the same values.
fn whole_blocks(
    content: &[u8],
    width: usize,
    bins: Bins,
    out: &mut [u32],
    filled_at_empty: &mut Vec<usize>,
) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        if out.len() <= avx512_vbmi::MAX_BINS && avx512_vbmi::detected() {
            // SAFETY: the processor has the features the function is compiled for.
            return unsafe { avx512_vbmi::blocks(content, width, bins, out, filled_at_empty) };
        }
        if avx512::detected() {
            // SAFETY: as above.
            return unsafe { avx512::blocks(content, width, bins, out, filled_at_empty) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { avx2::blocks(content, width, bins, out, filled_at_empty) };
        }
    }
    blocks(content, width, bins, out, filled_at_empty)
}

/// Step 2 and 3 with AVX2, which has no 64-bit multiply: each is three 32-bit ones. Eight
/// unaligned 32-byte loads at offsets 0..8 of a block hold, as little-endian u64 lanes, the
/// windows at offsets `o + 8·lane`: the 32 shingles of the block, in another order, which the
/// least value of a bin does not depend on.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Bins, FMIX_M1, FMIX_M2, LENGTH_MIX, window_mask};

    /// Shingles per block.
    const BLOCK: usize = 32;

    /// `a · c` modulo 2⁶⁴ per lane, `c` given as its 32-bit halves.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn mul64(a: __m256i, c_lo: __m256i, c_hi: __m256i) -> __m256i {
        let low = _mm256_mul_epu32(a, c_lo);
        let cross = _mm256_add_epi64(
            _mm256_mul_epu32(_mm256_srli_epi64::<32>(a), c_lo),
            _mm256_mul_epu32(a, c_hi),
        );
        _mm256_add_epi64(low, _mm256_slli_epi64::<32>(cross))
    }

    /// [`super::fmix64`] per lane.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn fmix64(x: __m256i, c: &[__m256i; 4]) -> __m256i {
        let x = _mm256_xor_si256(x, _mm256_srli_epi64::<33>(x));
        let x = mul64(x, c[0], c[1]);
        let x = _mm256_xor_si256(x, _mm256_srli_epi64::<33>(x));
        let x = mul64(x, c[2], c[3]);
        _mm256_xor_si256(x, _mm256_srli_epi64::<33>(x))
    }

    const fn halves(c: u64) -> [i64; 2] {
        [(c & 0xffff_ffff) as i64, (c >> 32) as i64]
    }

    /// As [`super::blocks`], 32 shingles a block.
    #[target_feature(enable = "avx2")]
    pub(super) fn blocks(
        content: &[u8],
        width: usize,
        bins: Bins,
        out: &mut [u32],
        filled_at_empty: &mut Vec<usize>,
    ) -> usize {
        let mask = window_mask(width);
        let [m1_lo, m1_hi] = halves(FMIX_M1);
        let [m2_lo, m2_hi] = halves(FMIX_M2);
        let c = [
            _mm256_set1_epi64x(m1_lo),
            _mm256_set1_epi64x(m1_hi),
            _mm256_set1_epi64x(m2_lo),
            _mm256_set1_epi64x(m2_hi),
        ];
        let mask = _mm256_set1_epi64x(mask as i64);
        let length = _mm256_set1_epi64x((width as u64).wrapping_mul(LENGTH_MIX) as i64);
        let all_ones = _mm256_set1_epi32(-1);
        let mut hashes = [0u64; BLOCK];
        let mut start = 0;
        // The last load of a block ends 7 + 32 bytes after its start.
        while start + BLOCK + 7 <= content.len() {
            let block = &content[start..start + BLOCK + 7];
            let mut empty = _mm256_setzero_si256();
            for (o, lanes) in hashes.chunks_exact_mut(4).enumerate() {
                let bytes: &[u8; 32] = block[o..o + 32].try_into().expect("32 bytes");
                // SAFETY: `bytes` is 32 readable bytes; the loads and stores are unaligned.
                let v = unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) };
                let h = fmix64(_mm256_add_epi64(_mm256_and_si256(v, mask), length), &c);
                empty = _mm256_or_si256(empty, _mm256_cmpeq_epi32(h, all_ones));
                // SAFETY: `lanes` is 4 writable u64s.
                unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), h) };
            }
            // The low half of a lane is the even 32-bit element.
            let empty = _mm256_movemask_ps(_mm256_castsi256_ps(empty)) & 0b0101_0101 != 0;
            bins.put_block(&hashes, empty, out, filled_at_empty);
            start += BLOCK;
        }
        start
    }
}

/// Step 2 and 3 with AVX-512: eight 64-byte loads at offsets 0..8 of a block hold, as u64
/// lanes, the windows at offsets `o + 8·lane`, as in [`avx2`]. The bins of each eight hashes
/// are computed in the vector too, and their current values gathered: only a hash whose value is
/// below its bin's goes on to the scalar update (a bin two hashes of one block share is compared
/// with its value before the block, so both go on, and the update keeps the lesser). After the
/// first `k ln k` shingles or so, that is about `k / n` of the `n`-th shingle's hashes.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Bins, FMIX_M1, FMIX_M2, LENGTH_MIX, keep_least, window_mask};

    /// Shingles per block.
    pub(super) const BLOCK: usize = 64;

    pub(super) fn detected() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }

    /// [`super::fmix64`] per lane.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn fmix64(x: __m512i, m1: __m512i, m2: __m512i) -> __m512i {
        let x = _mm512_xor_si512(x, _mm512_srli_epi64::<33>(x));
        let x = _mm512_mullo_epi64(x, m1);
        let x = _mm512_xor_si512(x, _mm512_srli_epi64::<33>(x));
        let x = _mm512_mullo_epi64(x, m2);
        _mm512_xor_si512(x, _mm512_srli_epi64::<33>(x))
    }

    /// As [`super::blocks`], 64 shingles a block, and then the shingles after the last whole
    /// block, from a copy padded with zeros, the lanes past the last shingle masked off: every
    /// shingle is put.
    #[target_feature(enable = "avx512f,avx512dq,avx512vl")]
    pub(super) fn blocks(
        content: &[u8],
        width: usize,
        bins: Bins,
        out: &mut [u32],
        filled_at_empty: &mut Vec<usize>,
    ) -> usize {
        let hasher = Hasher::new(width, bins);
        each_block(content, width, |block, lanes| {
            hasher.put(block, lanes, out, filled_at_empty)
        })
    }

    /// Calls `put` with each block of `content` and the mask of its shingles' lanes: the whole
    /// blocks, then the shingles after them from copies padded with zeros, the lanes past the
    /// last shingle masked off. Returns where the first shingle not put starts: the end.
    #[inline(always)]
    pub(super) fn each_block(
        content: &[u8],
        width: usize,
        mut put: impl FnMut(&[u8; BLOCK + 7], u64),
    ) -> usize {
        let mut start = 0;
        while start + BLOCK + 7 <= content.len() {
            let block = content[start..start + BLOCK + 7]
                .try_into()
                .expect("a block");
            put(block, u64::MAX);
            start += BLOCK;
        }
        let shingles = (content.len() + 1).saturating_sub(width);
        while start < shingles {
            let mut padded = [0u8; BLOCK + 7];
            let rest = &content[start..content.len().min(start + BLOCK + 7)];
            padded[..rest.len()].copy_from_slice(rest);
            let left = (shingles - start).min(BLOCK);
            put(&padded, first_shingles(left));
            start += left;
        }
        start
    }

    /// The mask of the lanes (bit `8·o + lane`) of the first `n` shingles of a block: the
    /// shingle at offset `o + 8·lane` is in lane `lane` of load `o`.
    fn first_shingles(n: usize) -> u64 {
        (0..BLOCK)
            .filter(|bit| bit / 8 + 8 * (bit % 8) < n)
            .fold(0, |mask, bit| mask | 1 << bit)
    }

    /// The constants of one content's blocks.
    pub(super) struct Hasher {
        m1: __m512i,
        m2: __m512i,
        mask: __m512i,
        length: __m512i,
        k: __m512i,
        shift: __m512i,
        pub(super) bins: Bins,
    }

    impl Hasher {
        #[target_feature(enable = "avx512f")]
        pub(super) fn new(width: usize, bins: Bins) -> Hasher {
            Hasher {
                m1: _mm512_set1_epi64(FMIX_M1 as i64),
                m2: _mm512_set1_epi64(FMIX_M2 as i64),
                mask: _mm512_set1_epi64(window_mask(width) as i64),
                length: _mm512_set1_epi64((width as u64).wrapping_mul(LENGTH_MIX) as i64),
                k: _mm512_set1_epi64(bins.k as i64),
                shift: _mm512_set1_epi64(i64::from(bins.shift.unwrap_or(0))),
                bins,
            }
        }

        /// `bin_of` per lane: a shift for a power of two, else the high half of h times k.
        #[inline]
        #[target_feature(enable = "avx512f")]
        pub(super) fn bins_of(&self, h: __m512i) -> __m512i {
            match self.bins.shift {
                Some(_) => _mm512_srlv_epi64(h, self.shift),
                None => {
                    _mm512_srli_epi64::<32>(_mm512_mul_epu32(_mm512_srli_epi64::<32>(h), self.k))
                }
            }
        }

        /// The hashes of the eight windows `bytes` holds as u64 lanes (the low `width` bytes of
        /// each), also stored into `eight`.
        #[inline]
        #[target_feature(enable = "avx512f,avx512dq")]
        pub(super) fn hash_eight(&self, bytes: &[u8; 64], eight: &mut [u64]) -> __m512i {
            assert_eq!(eight.len(), 8);
            // SAFETY: `bytes` is 64 readable bytes, `eight` 8 writable u64s; unaligned.
            unsafe {
                let v = _mm512_loadu_si512(bytes.as_ptr().cast());
                let v = _mm512_add_epi64(_mm512_and_si512(v, self.mask), self.length);
                let h = fmix64(v, self.m1, self.m2);
                _mm512_storeu_si512(eight.as_mut_ptr().cast(), h);
                h
            }
        }

        /// Puts the shingles of `block` in the lanes of `lanes`.
        #[inline]
        #[target_feature(enable = "avx512f,avx512dq,avx512vl")]
        fn put(
            &self,
            block: &[u8; BLOCK + 7],
            lanes: u64,
            out: &mut [u32],
            filled_at_empty: &mut Vec<usize>,
        ) {
            let all_ones = _mm256_set1_epi32(-1);
            let mut hashes = [0u64; BLOCK];
            // Every hash of the block first, and one mask of its candidates: no branch between
            // the loads, multiplies and gathers, which overlap.
            let (mut candidates, mut empty) = (0u64, 0u64);
            for (o, eight) in hashes.chunks_exact_mut(8).enumerate() {
                let bytes: &[u8; 64] = block[o..o + 64].try_into().expect("64 bytes");
                let h = self.hash_eight(bytes, eight);
                // SAFETY: the gather reads `out` at bins below `k == out.len()` (see
                // `keep_least`).
                let (value, current) = unsafe {
                    let current = _mm512_i64gather_epi32::<4>(self.bins_of(h), out.as_ptr().cast());
                    (_mm512_cvtepi64_epi32(h), current)
                };
                candidates |= u64::from(_mm256_cmplt_epu32_mask(value, current)) << (8 * o);
                empty |= u64::from(_mm256_cmpeq_epi32_mask(value, all_ones)) << (8 * o);
            }
            let (mut candidates, mut empty) = (candidates & lanes, empty & lanes);
            while candidates != 0 {
                let h = hashes[candidates.trailing_zeros() as usize];
                keep_least(out, self.bins.bin(h), h as u32);
                candidates &= candidates - 1;
            }
            while empty != 0 {
                filled_at_empty.push(self.bins.bin(hashes[empty.trailing_zeros() as usize]));
                empty &= empty - 1;
            }
        }
    }
}

/// Step 2 and 3 with AVX-512 and VBMI, for signatures of at most 256 values: as [`avx512`],
/// but the filter is a table of one byte per bin, the top byte of its current value, looked up
/// for 64 hashes at once with two byte permutes instead of eight gathers. A hash whose value's
/// top byte is above its bin's cannot lower the bin, so it is passed over; the others go on to
/// the scalar update, which keeps the table in step. The same values as every other path.
#[cfg(target_arch = "x86_64")]
mod avx512_vbmi {
    use std::arch::x86_64::*;

    use super::avx512::{BLOCK, each_block};
    use super::{Bins, EMPTY, keep_least};

    /// The most bins a byte indexes.
    pub(super) const MAX_BINS: usize = 256;

    pub(super) fn detected() -> bool {
        super::avx512::detected()
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vbmi")
    }

    /// As [`super::avx512::blocks`], with the byte table as the filter.
    #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vbmi")]
    pub(super) fn blocks(
        content: &[u8],
        width: usize,
        bins: Bins,
        out: &mut [u32],
        filled_at_empty: &mut Vec<usize>,
    ) -> usize {
        debug_assert!(out.len() <= MAX_BINS);
        let mut table = [0u8; MAX_BINS];
        for (top, value) in table.iter_mut().zip(out.iter()) {
            *top = (value >> 24) as u8;
        }
        let hasher = Hasher::new(width, bins);
        // A closure inherits the function's features and is inlined into the loops, where a
        // method with features of its own would be called per block.
        each_block(content, width, |block, lanes| {
            hasher.put(block, lanes, out, &mut table, filled_at_empty)
        })
    }

    /// The byte permute that takes, from two vectors of eight hashes, the top bytes (byte 7 of
    /// each lane) of the sixteen into bytes 0..16 and their values' top bytes (byte 3) into
    /// bytes 16..32.
    const TOPS: [u8; 64] = {
        let mut index = [0u8; 64];
        let mut j = 0;
        while j < 16 {
            // Index bit 6 picks the second vector.
            let lane = if j < 8 { 8 * j } else { 64 + 8 * (j - 8) };
            index[j] = (lane + 7) as u8;
            index[16 + j] = (lane + 3) as u8;
            j += 1;
        }
        index
    };

    /// The byte permute that joins two results of [`TOPS`]: the 32 bins into bytes 0..32, the 32
    /// values into bytes 32..64.
    const JOIN: [u8; 64] = {
        let mut index = [0u8; 64];
        let mut p = 0;
        while p < 32 {
            index[p] = if p < 16 { p } else { 64 + p - 16 } as u8;
            index[32 + p] = if p < 16 { 16 + p } else { 64 + p } as u8;
            p += 1;
        }
        index
    };

    /// The constants of one content's blocks: the gather path's, and the byte permutes.
    struct Hasher {
        base: super::avx512::Hasher,
        tops: __m512i,
        join: __m512i,
    }

    impl Hasher {
        #[target_feature(enable = "avx512f")]
        fn new(width: usize, bins: Bins) -> Hasher {
            // SAFETY: each constant is 64 readable bytes.
            let (tops, join) = unsafe {
                (
                    _mm512_loadu_si512(TOPS.as_ptr().cast()),
                    _mm512_loadu_si512(JOIN.as_ptr().cast()),
                )
            };
            Hasher {
                base: super::avx512::Hasher::new(width, bins),
                tops,
                join,
            }
        }

        /// `h` with its top byte replaced by its bin (below 256): for 256 bins the top byte
        /// already is.
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn with_bin(&self, h: __m512i) -> __m512i {
            if self.base.bins.shift == Some(56) {
                return h;
            }
            // 0xE2: the first operand's bits where the second's are set, else the third's.
            _mm512_ternarylogic_epi64::<0xE2>(
                h,
                _mm512_set1_epi64(0x00FF_FFFF_FFFF_FFFF),
                _mm512_slli_epi64::<56>(self.base.bins_of(h)),
            )
        }

        /// Puts the shingles of `block` in the lanes of `lanes` (bit `8·o + lane` for the
        /// shingle at offset `o + 8·lane`, as in [`super::avx512`]).
        #[inline]
        #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vbmi")]
        fn put(
            &self,
            block: &[u8; BLOCK + 7],
            lanes: u64,
            out: &mut [u32],
            table: &mut [u8; MAX_BINS],
            filled_at_empty: &mut Vec<usize>,
        ) {
            let mut hashes = [0u64; BLOCK];
            let mut tops = [_mm512_setzero_si512(); 4];
            for (pair, sixteen) in hashes.chunks_exact_mut(16).enumerate() {
                let mut two = [_mm512_setzero_si512(); 2];
                for (i, eight) in sixteen.chunks_exact_mut(8).enumerate() {
                    let o = 2 * pair + i;
                    let bytes: &[u8; 64] = block[o..o + 64].try_into().expect("64 bytes");
                    two[i] = self.with_bin(self.base.hash_eight(bytes, eight));
                }
                tops[pair] = _mm512_permutex2var_epi8(two[0], self.tops, two[1]);
            }
            // Byte p of `bins` and `values` belongs to hashes[p].
            let low = _mm512_permutex2var_epi8(tops[0], self.join, tops[1]);
            let high = _mm512_permutex2var_epi8(tops[2], self.join, tops[3]);
            let bins = _mm512_shuffle_i64x2::<0b01_00_01_00>(low, high);
            let values = _mm512_shuffle_i64x2::<0b11_10_11_10>(low, high);
            // SAFETY: the table is 256 readable bytes.
            let current = unsafe {
                let part = |at: usize| _mm512_loadu_si512(table[at..at + 64].as_ptr().cast());
                // Index bits 0..7 pick a byte of two parts; bit 7 picks the pair of parts.
                let first = _mm512_permutex2var_epi8(part(0), bins, part(64));
                let second = _mm512_permutex2var_epi8(part(128), bins, part(192));
                _mm512_mask_blend_epi8(_mm512_movepi8_mask(bins), first, second)
            };
            let mut candidates = _mm512_cmple_epu8_mask(values, current) & lanes;
            // A value of EMPTY has the top byte 0xFF; which of those are is checked below.
            let mut maybe_empty = _mm512_cmpeq_epi8_mask(values, _mm512_set1_epi8(-1)) & lanes;
            while candidates != 0 {
                let h = hashes[candidates.trailing_zeros() as usize];
                let bin = self.base.bins.bin(h);
                keep_least(out, bin, h as u32);
                table[bin] = (out[bin] >> 24) as u8;
                candidates &= candidates - 1;
            }
            while maybe_empty != 0 {
                let h = hashes[maybe_empty.trailing_zeros() as usize];
                if h as u32 == EMPTY {
                    filled_at_empty.push(self.base.bins.bin(h));
                }
                maybe_empty &= maybe_empty - 1;
            }
        }
    }
}

#[inline(always)]
fn blocks(
    content: &[u8],
    width: usize,
    bins: Bins,
    out: &mut [u32],
    filled_at_empty: &mut Vec<usize>,
) -> usize {
    let mask = window_mask(width);
    let length = (width as u64).wrapping_mul(LENGTH_MIX);
    let mut hashes = [0u64; BLOCK];
    let mut start = 0;
    // The block's last window, read as 8 bytes, must lie inside the content.
    while start + BLOCK + 7 <= content.len() {
        let block = &content[start..start + BLOCK + 7];
        let mut empty = false;
        for (j, h) in hashes.iter_mut().enumerate() {
            let bytes: [u8; 8] = block[j..j + 8].try_into().expect("8 bytes");
            *h = fmix64((u64::from_le_bytes(bytes) & mask).wrapping_add(length));
            empty |= *h as u32 == EMPTY;
        }
        bins.put_block(&hashes, empty, out, filled_at_empty);
        start += BLOCK;
    }
    start
}

/// The low `width` bytes of a u64 read from a window: its shingle.
#[inline(always)]
fn window_mask(width: usize) -> u64 {
    if width == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * width)) - 1
    }
}

/// Little-endian packing of at most 8 bytes.
#[inline]
fn pack(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |packed, &b| (packed << 8) | u64::from(b))
}

/// Step 4 of the scheme: every empty bin borrows the value of a filled one.
fn densify(out: &mut [u32], filled: &[u64]) {
    let k = out.len();
    let is_filled = |bin: usize| filled[bin / 64] & (1 << (bin % 64)) != 0;
    if (0..k).all(is_filled) {
        return;
    }
    let original = out.to_vec();
    for (i, value) in out.iter_mut().enumerate() {
        if is_filled(i) {
            continue;
        }
        for attempt in 1u64.. {
            let j = bin_of(fmix64(((i as u64) << 32) | attempt), k);
            if is_filled(j) {
                *value = original[j];
                break;
            }
        }
    }
}

/// The fraction of positions at which `a` and `b` agree: their estimated Jaccard similarity.
pub fn similarity(a: &[u32], b: &[u32]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    if a.is_empty() {
        return 0.0;
    }
    let equal = a.iter().zip(b).filter(|(x, y)| x == y).count();
    equal as f64 / a.len() as f64
}

/// The LSH key of band `band` (values `band·rows .. (band+1)·rows`) of a signature: two
/// signatures share it when they agree on all of the band's values (up to 64-bit collisions),
/// and keys of different bands differ.
pub fn band_key(signature: &[u32], band: usize, rows: usize) -> u64 {
    let values = &signature[band * rows..(band + 1) * rows];
    values.iter().fold(fmix64(band as u64 + 1), |key, &v| {
        fmix64(key ^ u64::from(v)).wrapping_add(LENGTH_MIX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(content: &[u8], width: usize, k: usize) -> Vec<u32> {
        let mut out = vec![0; k];
        signature(content, width, &mut out);
        out
    }

    /// The scheme read literally: the shingle set first, then bins, then densification.
    fn by_the_definition(content: &[u8], width: usize, k: usize) -> Vec<u32> {
        let mut shingles: Vec<&[u8]> = if content.is_empty() {
            vec![]
        } else if content.len() < width {
            vec![content]
        } else {
            content.windows(width).collect()
        };
        shingles.sort();
        shingles.dedup();
        let mut bins: Vec<Option<u32>> = vec![None; k];
        for s in shingles {
            let packed = s
                .iter()
                .enumerate()
                .map(|(j, &b)| u64::from(b) << (8 * j))
                .sum::<u64>();
            let h = shingle_hash(packed, s.len());
            let bin = bin_of(h, k);
            bins[bin] = Some(bins[bin].map_or(h as u32, |v| v.min(h as u32)));
        }
        if bins.iter().all(Option::is_none) {
            return vec![EMPTY; k];
        }
        (0..k)
            .map(|i| {
                bins[i].unwrap_or_else(|| {
                    (1u64..)
                        .find_map(|a| bins[bin_of(fmix64(((i as u64) << 32) | a), k)])
                        .unwrap()
                })
            })
            .collect()
    }

    #[test]
    fn the_rolling_window_equals_the_definition() {
        let mut state = 0x1234_5678_u64;
        let mut random = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    state = fmix64(state.wrapping_add(1));
                    (state % 7) as u8 + b'a'
                })
                .collect()
        };
        for width in 1..=MAX_SHINGLE {
            for len in [0, 1, width - 1, width, width + 1, 100, 5000, 70_000] {
                let content = random(len);
                for k in [1, 7, 64, 256] {
                    assert_eq!(
                        sig(&content, width, k),
                        by_the_definition(&content, width, k),
                        "width {width} len {len} k {k}"
                    );
                }
            }
        }
    }

    /// Every vector path against the scalar one, whichever of them `signature` picks here.
    /// The inverse of [`fmix64`]: each `x ^= x >> 33` is its own inverse, and an odd
    /// multiplier has an inverse modulo 2⁶⁴ (Newton's iteration doubles the correct bits).
    fn fmix64_inverse(mut x: u64) -> u64 {
        let inverse = |m: u64| {
            (0..6).fold(m, |y, _| {
                y.wrapping_mul(2u64.wrapping_sub(m.wrapping_mul(y)))
            })
        };
        x ^= x >> 33;
        x = x.wrapping_mul(inverse(FMIX_M2));
        x ^= x >> 33;
        x = x.wrapping_mul(inverse(FMIX_M1));
        x ^ (x >> 33)
    }

    #[test]
    fn a_shingle_whose_value_is_empty_fills_its_bin() {
        let mut content: Vec<u8> = (0..300u64).map(|i| fmix64(i) as u8).collect();
        // Eight-byte shingles whose hashes have the value EMPTY, in several bins: in the first
        // block, a later one and the tail.
        for (at, top) in [(3, 0x00u64), (70, 0x80), (150, 0xFF), (290, 0x41)] {
            let h = (top << 56) | (0x1234 << 32) | u64::from(EMPTY);
            let packed = fmix64_inverse(h).wrapping_sub(8u64.wrapping_mul(LENGTH_MIX));
            assert_eq!(shingle_hash(packed, 8) as u32, EMPTY);
            content.splice(at..at + 8, packed.to_le_bytes());
        }
        for len in [8, 11, 78, 200, 300] {
            for k in [7, 200, 256, 300, 1024] {
                assert_eq!(
                    sig(&content[..len], 8, k),
                    by_the_definition(&content[..len], 8, k),
                    "len {len} k {k}"
                );
            }
        }
    }

    #[test]
    fn the_vector_blocks_equal_the_scalar_ones() {
        let content: Vec<u8> = (0..10_000u64).map(|i| fmix64(i) as u8).collect();
        for width in 1..=MAX_SHINGLE {
            for k in [1, 7, 128, 200, 256, 300] {
                for len in [0, 1, 5, 8, 9, 38, 39, 40, 64, 70, 71, 72, 135, 1000, 10_000] {
                    let content = &content[..len];
                    let bins = Bins::new(k);
                    let (mut scalar, mut scalar_empty) = (vec![EMPTY; k], Vec::new());
                    let mut done = blocks(content, width, bins, &mut scalar, &mut scalar_empty);
                    let mut paths: Vec<(&str, Vec<u32>, usize)> = Vec::new();
                    #[cfg(target_arch = "x86_64")]
                    if std::arch::is_x86_feature_detected!("avx2") {
                        let (mut out, mut empty) = (vec![EMPTY; k], Vec::new());
                        // SAFETY: the processor has AVX2.
                        let n = unsafe { avx2::blocks(content, width, bins, &mut out, &mut empty) };
                        paths.push(("avx2", out, n));
                    }
                    #[cfg(target_arch = "x86_64")]
                    if avx512::detected() {
                        let (mut out, mut empty) = (vec![EMPTY; k], Vec::new());
                        // SAFETY: the processor has the features.
                        let n =
                            unsafe { avx512::blocks(content, width, bins, &mut out, &mut empty) };
                        paths.push(("avx512", out, n));
                    }
                    #[cfg(target_arch = "x86_64")]
                    if k <= avx512_vbmi::MAX_BINS && avx512_vbmi::detected() {
                        let (mut out, mut empty) = (vec![EMPTY; k], Vec::new());
                        // SAFETY: the processor has the features.
                        let n = unsafe {
                            avx512_vbmi::blocks(content, width, bins, &mut out, &mut empty)
                        };
                        paths.push(("avx512_vbmi", out, n));
                    }
                    for (name, mut out, n) in paths {
                        // Both cover whole blocks only: bring each to the same end.
                        let end = done.max(n);
                        for (o, from) in [(&mut scalar, done), (&mut out, n)] {
                            for start in from..end {
                                let h = shingle_hash(pack(&content[start..start + width]), width);
                                keep_least(o, bins.bin(h), h as u32);
                            }
                        }
                        assert_eq!(out, scalar, "{name} width {width} k {k} len {len}");
                        (scalar, done) = (out, end);
                    }
                }
            }
        }
    }

    #[test]
    fn edge_cases() {
        assert_eq!(sig(b"", 5, 16), vec![EMPTY; 16]);
        // One shingle fills one bin; densification copies it everywhere.
        let one = sig(b"abc", 5, 16);
        assert!(one.iter().all(|&v| v == one[0]) && one[0] != EMPTY);
        assert_eq!(sig(b"abcde", 5, 16).len(), 16);
        assert_ne!(sig(b"abcde", 5, 16), sig(b"abcd", 5, 16));
        // A shorter content is not the same shingle as a zero-padded window.
        assert_ne!(sig(b"abc", 5, 16), sig(b"abc\0\0", 5, 16));
    }

    #[test]
    fn similar_contents_have_similar_signatures() {
        let base: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("line {i} of text\n").into_bytes())
            .collect();
        let mut edited = base.clone();
        edited.truncate(base.len() * 9 / 10);
        let (a, b) = (sig(&base, 5, 256), sig(&edited, 5, 256));
        let s = similarity(&a, &b);
        assert!((0.8..=1.0).contains(&s), "{s}");
        let other = sig(b"something else entirely, nothing alike", 5, 256);
        assert!(similarity(&a, &other) < 0.1);
        assert_eq!(similarity(&a, &a), 1.0);
        assert_ne!(band_key(&a, 0, 8), band_key(&a, 1, 8));
        assert_eq!(band_key(&a, 3, 8), band_key(&a.clone(), 3, 8));
    }
}
