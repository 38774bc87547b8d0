// The per-element functions of kernels/*.cu compiled as host C++: every block's thread shares run
// one after another on one thread, so that tests/integration/cuda.rs can check the kernels' math
// (and their split of a row between threads) against the Rust CPU reference without a GPU.
//
// Reads records from stdin until EOF, each: u32 width, u32 k, u32 threads, u32 shift, u64 len,
// then len content bytes (all little-endian). The content is placed `shift` bytes past an aligned
// address. Writes per record: 256 u32 byte counts, one u8 binary flag, then k u32 signature values.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "features.cu"
#include "minhash.cu"

static bool read_exact(void *buffer, size_t n) {
    return n == 0 || fread(buffer, 1, n, stdin) == n;
}

int main() {
    for (;;) {
        exo_u32 header[4];
        exo_u64 len;
        if (!read_exact(header, sizeof header)) {
            return 0;
        }
        if (!read_exact(&len, sizeof len)) {
            return 1;
        }
        exo_u32 width = header[0], k = header[1], threads = header[2], shift = header[3];
        if (threads == 0 || k > EXO_MAX_SIGNATURE || shift > 3) {
            return 2;
        }
        // 8-aligned storage, the content `shift` bytes in.
        std::vector<exo_u64> storage((len + shift) / 8 + 1);
        exo_u8 *p = reinterpret_cast<exo_u8 *>(storage.data()) + shift;
        if (!read_exact(p, len)) {
            return 1;
        }

        exo_u32 tables_count = (threads + 31) / 32;
        std::vector<exo_u32> tables(tables_count * 256u, 0);
        int nul = 0;
        for (exo_u32 t = 0; t < threads; t++) {
            exo_count_share(p, len, t, threads, tables.data() + (t / 32u) * 256u);
            nul |= exo_nul_in_share(p, len, t, threads);
        }
        exo_u32 histogram[256];
        for (exo_u32 b = 0; b < 256; b++) {
            histogram[b] = exo_sum_tables(tables.data(), tables_count, b);
        }
        exo_u8 binary = (exo_u8)nul;

        std::vector<exo_u64> bins(k, EXO_UNFILLED);
        std::vector<exo_u32> signature(k, 0);
        if (k > 0) {
            for (exo_u32 t = 0; t < threads; t++) {
                exo_shingle_share(p, len, width, k, t, threads, bins.data());
            }
            for (exo_u32 t = 0; t < threads; t++) {
                exo_signature_share(bins.data(), k, len, t, threads, signature.data());
            }
        }

        fwrite(histogram, sizeof histogram, 1, stdout);
        fwrite(&binary, 1, 1, stdout);
        if (k > 0) {
            fwrite(signature.data(), sizeof(exo_u32), k, stdout);
        }
    }
}
