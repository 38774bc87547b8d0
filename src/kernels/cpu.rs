//! Contents batch -> per-file hash, lines, entropy, binary flag and MinHash signature on the CPU: the
//! reference backend.

use arrow_array::{Array, BinaryArray};

use super::{Backend, BatchColumns, MinHashJob, WorkerKernels, minhash};

/// How far into a file a NUL byte marks it as binary.
pub const BINARY_PROBE_BYTES: usize = 8192;

/// The reference implementation of every kernel; other backends must match it bit for bit.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn worker(&self) -> Box<dyn WorkerKernels> {
        Box::new(CpuKernels::default())
    }
}

/// The CPU kernels of one worker: a launch computes, `wait` hands the columns over.
#[derive(Debug, Default)]
pub struct CpuKernels {
    columns: BatchColumns,
}

impl WorkerKernels for CpuKernels {
    fn launch(&mut self, contents: &BinaryArray, minhash: Option<MinHashJob>) {
        self.columns = batch_columns(contents, minhash);
    }

    fn wait(&mut self) -> BatchColumns {
        std::mem::take(&mut self.columns)
    }
}

/// Every batch kernel over every row of `contents`, on this thread.
pub fn batch_columns(contents: &BinaryArray, minhash: Option<MinHashJob>) -> BatchColumns {
    let rows = contents.len();
    let mut columns = BatchColumns::with_capacity(rows);
    if let Some(job) = minhash {
        columns.signatures = vec![minhash::EMPTY; rows * job.k];
    }
    for row in 0..rows {
        let content = if contents.is_valid(row) {
            contents.value(row)
        } else {
            &[]
        };
        let histogram = byte_histogram(content);
        let binary = is_binary(content);
        columns
            .lines
            .push(lines_from_histogram(content, &histogram));
        columns.entropy.push(entropy(content.len(), &histogram));
        columns.is_binary.push(binary);
        if let Some(job) = minhash
            && contents.is_valid(row)
            && job.wants(content.len(), binary)
        {
            let out = &mut columns.signatures[row * job.k..(row + 1) * job.k];
            minhash::signature(content, job.shingle, out);
        }
    }
    columns
}

/// XXH3-128 in canonical (big-endian) byte order, as `xxhsum -H2` prints it.
pub fn hash128(content: &[u8]) -> [u8; 16] {
    xxhash_rust::xxh3::xxh3_128(content).to_be_bytes()
}

/// Content up to this length is counted in one table: clearing and summing four tables would
/// cost more than the counting.
const SMALL_CONTENT: usize = 4096;

/// Counts of each byte value. Four interleaved tables keep consecutive equal bytes from
/// serialising on one counter.
pub fn byte_histogram(content: &[u8]) -> [u64; 256] {
    if content.len() <= SMALL_CONTENT {
        let mut table = [0u32; 256];
        for &b in content {
            table[b as usize] += 1;
        }
        return table.map(u64::from);
    }
    let mut tables = [[0u32; 256]; 4];
    let flush = |tables: &mut [[u32; 256]; 4], total: &mut [u64; 256]| {
        for table in tables.iter_mut() {
            for (sum, count) in total.iter_mut().zip(table.iter_mut()) {
                *sum += u64::from(std::mem::take(count));
            }
        }
    };
    let mut total = [0u64; 256];
    // Flush before a u32 counter could overflow.
    for block in content.chunks(1 << 30) {
        let mut quads = block.chunks_exact(4);
        for q in &mut quads {
            tables[0][q[0] as usize] += 1;
            tables[1][q[1] as usize] += 1;
            tables[2][q[2] as usize] += 1;
            tables[3][q[3] as usize] += 1;
        }
        for &b in quads.remainder() {
            tables[0][b as usize] += 1;
        }
        flush(&mut tables, &mut total);
    }
    total
}

/// `\n` bytes, plus one for a non-empty last line without one.
pub fn lines_from_histogram(content: &[u8], histogram: &[u64; 256]) -> u64 {
    histogram[b'\n' as usize] + u64::from(content.last().is_some_and(|&b| b != b'\n'))
}

/// Shannon entropy of the byte distribution, bits per byte; 0.0 for empty content.
///
/// Computed as `log2(n) - (sum of c * log2(c)) / n` over the byte counts `c`, with `c * log2(c)`
/// looked up for small counts: one logarithm per file instead of one per byte value seen.
pub fn entropy(len: usize, histogram: &[u64; 256]) -> f64 {
    if len == 0 {
        return 0.0;
    }
    let table = c_log2_c_table();
    // Four running sums, so that the additions do not wait on each other.
    let mut sums = [0.0f64; 4];
    let mut distinct = 0;
    for quad in histogram.chunks_exact(4) {
        for (sum, &c) in sums.iter_mut().zip(quad) {
            distinct += usize::from(c > 0);
            *sum += match table.get(c as usize) {
                Some(v) => *v,
                None => c as f64 * (c as f64).log2(),
            };
        }
    }
    if distinct <= 1 {
        return 0.0;
    }
    let sum = (sums[0] + sums[1]) + (sums[2] + sums[3]);
    let n = len as f64;
    (n.log2() - sum / n).max(0.0)
}

/// `c * log2(c)` for the counts below its length (0 for 0).
fn c_log2_c_table() -> &'static [f64; 1024] {
    static TABLE: std::sync::OnceLock<[f64; 1024]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        std::array::from_fn(|c| match c {
            0 => 0.0,
            c => c as f64 * (c as f64).log2(),
        })
    })
}

/// A NUL byte within the first [`BINARY_PROBE_BYTES`].
pub fn is_binary(content: &[u8]) -> bool {
    memchr::memchr(0, &content[..content.len().min(BINARY_PROBE_BYTES)]).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // xxhsum -H2 of an empty file.
        let empty = hash128(b"");
        assert_eq!(
            empty.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "99aa06d3014798d86001c324468d497f"
        );
        let h = byte_histogram(b"a\nb\r\n");
        assert_eq!(lines_from_histogram(b"a\nb\r\n", &h), 2);
        let h = byte_histogram(b"a\nb");
        assert_eq!(lines_from_histogram(b"a\nb", &h), 2);
        assert_eq!(lines_from_histogram(b"", &byte_histogram(b"")), 0);
        assert_eq!(entropy(0, &byte_histogram(b"")), 0.0);
        assert_eq!(entropy(4, &byte_histogram(b"aaaa")), 0.0);
        assert!((entropy(2, &byte_histogram(b"ab")) - 1.0).abs() < 1e-12);
        let all: Vec<u8> = (0..=255).collect();
        let long: Vec<u8> = all
            .iter()
            .cycle()
            .take(3 * SMALL_CONTENT + 3)
            .copied()
            .collect();
        let h = byte_histogram(&long);
        assert_eq!((h[0], h[2], h[3], h[255]), (49, 49, 48, 48));
        assert!((entropy(256, &byte_histogram(&all)) - 8.0).abs() < 1e-12);
        assert_eq!(entropy(3, &byte_histogram(b"aaa")), 0.0);
        // Counts past the table, against the definition.
        let mut skewed = vec![b'x'; 5000];
        skewed.extend_from_slice(b"abcabcab");
        let n = skewed.len() as f64;
        let expected: f64 = -[5000.0, 3.0, 3.0, 2.0]
            .iter()
            .map(|c| (c / n) * (c / n).log2())
            .sum::<f64>();
        let got = entropy(skewed.len(), &byte_histogram(&skewed));
        assert!((got - expected).abs() < 1e-12, "{got} != {expected}");
        assert!(is_binary(b"ab\0"));
        let mut late = vec![b'a'; BINARY_PROBE_BYTES];
        late.push(0);
        assert!(!is_binary(&late));
    }
}
