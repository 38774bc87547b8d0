/* Contents batch -> per row: the count of every byte value, and whether a NUL byte lies within
 * the first 8192 bytes. One block of EXO_FEATURE_THREADS threads per row. Lines (the count of
 * '\n', plus one for a last line without one) and entropy are derived on the host from these
 * integer counts, so that they equal the CPU path bit for bit. */
#include "common.h"

/* How far into a content a NUL byte marks it as binary (cpu::BINARY_PROBE_BYTES). */
#define EXO_PROBE_BYTES 8192u
/* Threads per block; each warp counts into its own table. */
#define EXO_FEATURE_THREADS 256u
#define EXO_FEATURE_WARPS (EXO_FEATURE_THREADS / 32u)

/* A little-endian word of four bytes at a 4-aligned address. */
EXO_FN exo_u32 exo_load_word(const exo_u8 *q) {
#ifdef __CUDA_ARCH__
    return *(const exo_u32 *)q;
#else
    exo_u32 w;
    __builtin_memcpy(&w, q, 4);
    return w;
#endif
}

EXO_FN void exo_count_byte(exo_u32 *table, exo_u8 b) {
    EXO_ATOMIC_ADD_U32(&table[b], 1u);
}

EXO_FN void exo_count_word(exo_u32 *table, exo_u32 word) {
    exo_count_byte(table, (exo_u8)(word & 0xffu));
    exo_count_byte(table, (exo_u8)((word >> 8) & 0xffu));
    exo_count_byte(table, (exo_u8)((word >> 16) & 0xffu));
    exo_count_byte(table, (exo_u8)(word >> 24));
}

/* Thread t's share (of `threads`) of counting the bytes of p[0..len) into `table`: the bytes
 * before the first 4-aligned address one by one, then whole aligned words, then the tail. */
EXO_FN void exo_count_share(const exo_u8 *p, exo_u64 len, exo_u32 t, exo_u32 threads,
                            exo_u32 *table) {
    exo_u64 head = (4u - ((exo_u64)p & 3u)) & 3u;
    if (head > len) {
        head = len;
    }
    for (exo_u64 i = t; i < head; i += threads) {
        exo_count_byte(table, p[i]);
    }
    const exo_u8 *aligned = p + head;
    exo_u64 words = (len - head) / 4u;
    for (exo_u64 w = t; w < words; w += threads) {
        exo_count_word(table, exo_load_word(aligned + 4u * w));
    }
    for (exo_u64 i = head + 4u * words + t; i < len; i += threads) {
        exo_count_byte(table, p[i]);
    }
}

/* Whether thread t's share of the first EXO_PROBE_BYTES of p[0..len) holds a NUL byte. */
EXO_FN int exo_nul_in_share(const exo_u8 *p, exo_u64 len, exo_u32 t, exo_u32 threads) {
    exo_u64 probe = len < EXO_PROBE_BYTES ? len : EXO_PROBE_BYTES;
    for (exo_u64 i = t; i < probe; i += threads) {
        if (p[i] == 0) {
            return 1;
        }
    }
    return 0;
}

/* The count of byte value b over `tables` tables of 256 counts each. */
EXO_FN exo_u32 exo_sum_tables(const exo_u32 *tables, exo_u32 count, exo_u32 b) {
    exo_u32 sum = 0;
    for (exo_u32 w = 0; w < count; w++) {
        sum += tables[w * 256u + b];
    }
    return sum;
}

#ifdef __CUDACC__
/* Grid: one block per row; block: EXO_FEATURE_THREADS threads (exactly). Writes 256 counts per
 * row into `histograms` (row-major) and 0 or 1 per row into `binary`. */
extern "C" __global__ void exo_features(const exo_u8 *values, const exo_i32 *offsets,
                                        const exo_u8 *flags, exo_u32 rows,
                                        exo_u32 *histograms, exo_u8 *binary) {
    __shared__ exo_u32 tables[EXO_FEATURE_WARPS * 256u];
    __shared__ int nul;
    exo_u32 row = blockIdx.x;
    if (row >= rows || blockDim.x != EXO_FEATURE_THREADS) {
        return;
    }
    for (exo_u32 i = threadIdx.x; i < EXO_FEATURE_WARPS * 256u; i += blockDim.x) {
        tables[i] = 0;
    }
    if (threadIdx.x == 0) {
        nul = 0;
    }
    __syncthreads();
    const exo_u8 *p = exo_row_bytes(values, offsets, row);
    exo_u64 len = exo_row_len(offsets, flags, row);
    exo_count_share(p, len, threadIdx.x, blockDim.x, tables + (threadIdx.x / 32u) * 256u);
    if (exo_nul_in_share(p, len, threadIdx.x, blockDim.x)) {
        nul = 1;
    }
    __syncthreads();
    for (exo_u32 b = threadIdx.x; b < 256u; b += blockDim.x) {
        histograms[(exo_u64)row * 256u + b] = exo_sum_tables(tables, EXO_FEATURE_WARPS, b);
    }
    if (threadIdx.x == 0) {
        binary[row] = (exo_u8)nul;
    }
}
#endif
