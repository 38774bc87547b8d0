/* Contents batch -> per row: a MinHash signature of scheme exoflow-oph-1 (src/kernels/minhash.rs
 * states it precisely): one hash per shingle into k bins, the least value per bin, then optimal
 * densification of the bins no shingle fell into. One block of EXO_MINHASH_THREADS threads per
 * row; the k bins live in shared memory. */
#include "common.h"

/* The longest signature (minhash::MAX_SIGNATURE). */
#define EXO_MAX_SIGNATURE 1024u
#define EXO_MINHASH_THREADS 256u
/* A bin's value in a content without shingles (minhash::EMPTY). */
#define EXO_EMPTY 0xFFFFFFFFu
/* A bin no shingle fell into: above every 32-bit value, so that EXO_EMPTY stays a real value. */
#define EXO_UNFILLED (1ull << 32)
#define EXO_LENGTH_MIX 0x9E3779B97F4A7C15ull

/* MurmurHash3's 64-bit finalizer. */
EXO_FN exo_u64 exo_fmix64(exo_u64 x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* The hash of a shingle of `len` bytes packed into `packed`. */
EXO_FN exo_u64 exo_shingle_hash(exo_u64 packed, exo_u64 len) {
    return exo_fmix64(packed + len * EXO_LENGTH_MIX);
}

/* The bin of `hash` among k bins. */
EXO_FN exo_u32 exo_bin_of(exo_u64 hash, exo_u32 k) {
    return (exo_u32)(((hash >> 32) * (exo_u64)k) >> 32);
}

/* Bytes p[0..m), m at most 8, packed little-endian. */
EXO_FN exo_u64 exo_pack(const exo_u8 *p, exo_u32 m) {
    exo_u64 packed = 0;
    for (exo_u32 j = m; j > 0; j--) {
        packed = (packed << 8) | p[j - 1];
    }
    return packed;
}

/* A shingle hash falls into its bin, which keeps the least value. */
EXO_FN void exo_put(exo_u64 *bins, exo_u32 k, exo_u64 hash) {
    exo_u32 bin = exo_bin_of(hash, k);
    exo_u64 value = (exo_u32)hash;
    /* A bin's value only decreases: a stale read costs one atomic, never a wrong result. */
    if (value < bins[bin]) {
        EXO_ATOMIC_MIN_U64(&bins[bin], value);
    }
}

/* Thread t's share (of `threads`) of the shingles of p[0..n), `width` bytes each, into k bins
 * that start EXO_UNFILLED: every window when n >= width, the whole content when 0 < n < width,
 * none when n == 0. */
EXO_FN void exo_shingle_share(const exo_u8 *p, exo_u64 n, exo_u32 width, exo_u32 k, exo_u32 t,
                              exo_u32 threads, exo_u64 *bins) {
    if (n == 0) {
        return;
    }
    if (n < width) {
        if (t == 0) {
            exo_put(bins, k, exo_shingle_hash(exo_pack(p, (exo_u32)n), n));
        }
        return;
    }
    exo_u64 windows = n - width + 1;
    for (exo_u64 i = t; i < windows; i += threads) {
        exo_put(bins, k, exo_shingle_hash(exo_pack(p + i, width), width));
    }
}

/* The bin whose value the unfilled bin i takes: the first attempt a = 1, 2, ... whose bin
 * fmix64((i << 32) | a) is filled. At least one bin must be filled. */
EXO_FN exo_u32 exo_densify_source(const exo_u64 *bins, exo_u32 i, exo_u32 k) {
    for (exo_u64 attempt = 1;; attempt++) {
        exo_u32 j = exo_bin_of(exo_fmix64(((exo_u64)i << 32) | attempt), k);
        if (bins[j] < EXO_UNFILLED) {
            return j;
        }
    }
}

/* Thread t's share of the signature of a content of n bytes from its k bins: a filled bin's
 * value, or the value an unfilled bin borrows; all EXO_EMPTY for an empty content. */
EXO_FN void exo_signature_share(const exo_u64 *bins, exo_u32 k, exo_u64 n, exo_u32 t,
                                exo_u32 threads, exo_u32 *out) {
    for (exo_u32 i = t; i < k; i += threads) {
        if (n == 0) {
            out[i] = EXO_EMPTY;
        } else if (bins[i] < EXO_UNFILLED) {
            out[i] = (exo_u32)bins[i];
        } else {
            out[i] = (exo_u32)bins[exo_densify_source(bins, i, k)];
        }
    }
}

#ifdef __CUDACC__
/* Grid: one block per row; block: EXO_MINHASH_THREADS threads. Writes k values per row into
 * `signatures` (row-major): the signature of each row whose flags want one, unless it is binary
 * (`binary`, from exo_features on the same stream) and `skip_binary` is set; EXO_EMPTY values
 * for every other row. 1 <= k <= EXO_MAX_SIGNATURE and 1 <= width <= 8. */
extern "C" __global__ void exo_minhash(const exo_u8 *values, const exo_i32 *offsets,
                                       const exo_u8 *flags, const exo_u8 *binary, exo_u32 rows,
                                       exo_u32 width, exo_u32 k, exo_u32 skip_binary,
                                       exo_u32 *signatures) {
    __shared__ exo_u64 bins[EXO_MAX_SIGNATURE];
    exo_u32 row = blockIdx.x;
    if (row >= rows || k == 0 || k > EXO_MAX_SIGNATURE || width == 0 || width > 8) {
        return;
    }
    exo_u32 *out = signatures + (exo_u64)row * k;
    /* The same for every thread of the block, so returning before a barrier is safe. */
    int wanted = (flags[row] & EXO_ROW_SIGNATURE) && !(skip_binary && binary[row]);
    if (!wanted) {
        for (exo_u32 i = threadIdx.x; i < k; i += blockDim.x) {
            out[i] = EXO_EMPTY;
        }
        return;
    }
    for (exo_u32 i = threadIdx.x; i < k; i += blockDim.x) {
        bins[i] = EXO_UNFILLED;
    }
    __syncthreads();
    const exo_u8 *p = exo_row_bytes(values, offsets, row);
    exo_u64 n = exo_row_len(offsets, flags, row);
    exo_shingle_share(p, n, width, k, threadIdx.x, blockDim.x, bins);
    __syncthreads();
    exo_signature_share(bins, k, n, threadIdx.x, blockDim.x, out);
}
#endif
