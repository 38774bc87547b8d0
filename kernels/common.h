/* What every kernel source shares: fixed-width types, the qualifiers that make a function
 * compile for the device under NVRTC and as plain host C++ under g++, and the atomics that
 * become plain updates on the host (where one thread runs the shares of a block in turn).
 *
 * Kernel sources are compiled at run time by NVRTC, which has no standard headers: nothing
 * here includes one. The Rust side inlines this file where a source includes it. */
#ifndef EXOFLOW_COMMON_H
#define EXOFLOW_COMMON_H

typedef unsigned char exo_u8;
typedef unsigned int exo_u32;
typedef int exo_i32;
typedef unsigned long long exo_u64;

#ifdef __CUDACC__
#define EXO_FN __host__ __device__ __forceinline__
#else
#define EXO_FN static inline
#endif

#ifdef __CUDA_ARCH__
#define EXO_ATOMIC_ADD_U32(p, v) atomicAdd((p), (v))
#define EXO_ATOMIC_MIN_U64(p, v) atomicMin((p), (v))
#else
#define EXO_ATOMIC_ADD_U32(p, v) (*(p) += (v))
#define EXO_ATOMIC_MIN_U64(p, v) (*(p) = *(p) < (v) ? *(p) : (v))
#endif

/* Row flags the host computes for every row of a launch. */
/* The row is valid (not null); a null row counts as empty content. */
#define EXO_ROW_VALID 1u
/* The row wants a signature: valid and at least the job's min_size bytes long. */
#define EXO_ROW_SIGNATURE 2u

/* The bytes of row `row` start at `values + (offsets[row] - offsets[0])`: the values buffer of
 * a launch begins at the first row's offset, whatever that offset is. */
EXO_FN const exo_u8 *exo_row_bytes(const exo_u8 *values, const exo_i32 *offsets, exo_u32 row) {
    return values + (exo_u64)(exo_u32)(offsets[row] - offsets[0]);
}

/* The length of row `row`, 0 for a null row. */
EXO_FN exo_u64 exo_row_len(const exo_i32 *offsets, const exo_u8 *flags, exo_u32 row) {
    if (!(flags[row] & EXO_ROW_VALID)) {
        return 0;
    }
    return (exo_u64)(exo_u32)(offsets[row + 1] - offsets[row]);
}

#endif
