//! The CUDA backend against the CPU reference: every kernel source compiles with NVRTC, the
//! kernels' per-element math compiled as host C++ equals the Rust CPU kernels, `--device`
//! chooses and refuses as documented, and on a machine with a device every column of random
//! and edge-case batches equals the CPU's.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use arrow_array::{Array, BinaryArray};
use exoflow::kernels::cpu::{self, BINARY_PROBE_BYTES, CpuBackend};
use exoflow::kernels::cuda::{self, CudaBackend, KernelSource, SOURCES};
use exoflow::kernels::minhash::{self, MAX_SHINGLE, MAX_SIGNATURE};
use exoflow::kernels::{BatchColumns, KernelStage, MinHashJob};
use exoflow::pipeline::Pipeline;

use crate::util::*;

/// Under CI a missing tool fails the test; elsewhere the test is skipped with the reason.
fn missing(what: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what}: required under CI (scripts/test installs it)");
    }
    println!("skipped: {what}");
}

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `kernels/*.cu` file.
fn cu_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repository().join("kernels"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_kernel_source_is_embedded_as_it_is_on_disk() {
    let files = cu_files();
    assert_eq!(files.len(), SOURCES.len(), "{files:?}");
    for file in files {
        let name = file.file_name().unwrap().to_str().unwrap();
        let source = SOURCES
            .iter()
            .find(|s| s.file == name)
            .unwrap_or_else(|| panic!("kernels/{name} is not in cuda::SOURCES"));
        assert_eq!(source.text, std::fs::read_to_string(&file).unwrap());
    }
    assert_eq!(
        cuda::COMMON_HEADER,
        std::fs::read_to_string(repository().join("kernels/common.h")).unwrap()
    );
}

#[test]
fn every_kernel_source_compiles_with_nvrtc() {
    if !cuda::nvrtc_present() {
        return missing("no NVRTC library (libnvrtc.so.12) on the loader path");
    }
    for file in cu_files() {
        let name = file.file_name().unwrap().to_str().unwrap();
        let source = SOURCES.iter().find(|s| s.file == name).unwrap();
        // The oldest architecture NVRTC 12 and 13 both target, and the H100/H200's.
        for arch in ["compute_75", "compute_90"] {
            let ptx = cuda::compile(source, arch)
                .unwrap_or_else(|e| panic!("{e}"))
                .to_src();
            for kernel in source.kernels {
                assert!(
                    ptx.contains(&format!(".entry {kernel}(")),
                    "{name} for {arch} lacks {kernel}"
                );
            }
        }
        // What the backend loads: machine code for the device's own architecture.
        for arch in ["sm_75", "sm_90"] {
            cuda::compile(source, arch).unwrap_or_else(|e| panic!("{e}"));
            let cubin = cuda::compile_cubin(source, arch).unwrap();
            assert!(cubin.starts_with(b"\x7fELF"), "{name} for {arch}");
        }
        println!("kernels/{name}: compiled by NVRTC");
    }
    // The compile is real: a type error is an error, with the compiler's log.
    let broken = KernelSource {
        file: "broken.cu",
        text: "#include \"common.h\"\nextern \"C\" __global__ void k(exo_u32 *out) { out[0] = undeclared; }\n",
        kernels: &["k"],
    };
    let error = cuda::compile(&broken, "compute_75")
        .unwrap_err()
        .to_string();
    assert!(error.contains("undeclared"), "{error}");
}

/// The host harness over the kernels' sources, built with g++ into `dir`.
fn host_harness(dir: &Path) -> Option<PathBuf> {
    if Command::new("g++").arg("--version").output().is_err() {
        missing("no g++ to compile the kernels' device functions as host C++");
        return None;
    }
    let exe = dir.join("kernels_host");
    let out = Command::new("g++")
        .args(["-std=c++17", "-O2", "-Wall", "-Wextra", "-I"])
        .arg(repository().join("kernels"))
        .arg(repository().join("tests/kernels_host.cpp"))
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "g++ failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(exe)
}

/// One row for the host harness.
struct HostCase {
    content: Vec<u8>,
    width: usize,
    k: usize,
    threads: u32,
    shift: u32,
}

/// The harness's histogram, binary flag and signature per case.
fn run_host(exe: &Path, cases: &[HostCase]) -> Vec<([u64; 256], bool, Vec<u32>)> {
    let mut input = Vec::new();
    for c in cases {
        for v in [c.width as u32, c.k as u32, c.threads, c.shift] {
            input.extend_from_slice(&v.to_le_bytes());
        }
        input.extend_from_slice(&(c.content.len() as u64).to_le_bytes());
        input.extend_from_slice(&c.content);
    }
    let mut child = Command::new(exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "harness failed: {}", out.status);
    let mut at = &out.stdout[..];
    let mut take = |n: usize| -> &[u8] {
        let (head, rest) = at.split_at(n);
        at = rest;
        head
    };
    let words = |b: &[u8]| -> Vec<u32> {
        b.chunks_exact(4)
            .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
            .collect()
    };
    let mut results = Vec::new();
    for c in cases {
        let mut histogram = [0u64; 256];
        for (h, v) in histogram.iter_mut().zip(words(take(1024))) {
            *h = u64::from(v);
        }
        let binary = take(1)[0] != 0;
        let signature = words(take(4 * c.k));
        results.push((histogram, binary, signature));
    }
    assert!(at.is_empty(), "{} bytes left over", at.len());
    results
}

/// A small deterministic generator: xorshift64.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `len` bytes drawn from an alphabet of `alphabet` values (text-like when small).
    fn bytes(&mut self, len: usize, alphabet: u64) -> Vec<u8> {
        (0..len)
            .map(|_| match self.below(alphabet) {
                0 if alphabet > 2 => b'\n',
                v => (v as u8).wrapping_add(if alphabet <= 64 { b' ' } else { 0 }),
            })
            .collect()
    }
}

/// Contents that sit on every boundary the kernels have: empty, shorter than a shingle, exactly
/// one, the binary probe's last byte and the first past it, every byte value, long runs.
fn edge_contents(random: &mut Random) -> Vec<Vec<u8>> {
    let mut contents = vec![Vec::new(), b"a".to_vec(), b"\n".to_vec(), b"\0".to_vec()];
    for len in 1..=MAX_SHINGLE + 1 {
        contents.push(random.bytes(len, 40));
    }
    let all: Vec<u8> = (0..=255).collect();
    contents.push(all.clone());
    contents.push(all.iter().cycle().take(5 * 1024 + 3).copied().collect());
    for at in [BINARY_PROBE_BYTES - 1, BINARY_PROBE_BYTES] {
        let mut c = vec![b'x'; BINARY_PROBE_BYTES + 100];
        c[at] = 0;
        contents.push(c);
    }
    contents.push(vec![b'\n'; 3000]);
    contents.push(vec![b' '; 70_000]);
    contents.push(b"ends without a newline\nsecond".to_vec());
    contents.push(random.bytes(300_000, 256));
    for len in [3, 4, 5, 63, 64, 65, 255, 256, 257, 1023, 1024, 1025, 4099] {
        contents.push(random.bytes(len, 256));
        contents.push(random.bytes(len, 30));
    }
    contents
}

#[test]
fn kernel_device_functions_compiled_as_host_cpp_equal_the_cpu_kernels() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(exe) = host_harness(tmp.path()) else {
        return;
    };
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let mut cases = Vec::new();
    let mut contents = edge_contents(&mut random);
    for _ in 0..60 {
        let len = random.below(6000) as usize;
        let alphabet = [2, 5, 30, 256][random.below(4) as usize];
        contents.push(random.bytes(len, alphabet));
    }
    for (i, content) in contents.into_iter().enumerate() {
        let width = 1 + i % MAX_SHINGLE;
        let k = [1, 7, 64, 256, MAX_SIGNATURE][i % 5];
        let threads = [256, 1, 7, 32, 100][(i / 5) % 5];
        cases.push(HostCase {
            content,
            width,
            k,
            threads,
            shift: (i % 4) as u32,
        });
    }
    let results = run_host(&exe, &cases);
    for (case, (histogram, binary, signature)) in cases.iter().zip(results) {
        let what = format!(
            "len {} width {} k {} threads {} shift {}",
            case.content.len(),
            case.width,
            case.k,
            case.threads,
            case.shift
        );
        assert_eq!(histogram, cpu::byte_histogram(&case.content), "{what}");
        assert_eq!(binary, cpu::is_binary(&case.content), "{what}");
        let mut expected = vec![0; case.k];
        minhash::signature(&case.content, case.width, &mut expected);
        assert_eq!(signature, expected, "{what}");
    }
    println!("{} cases equal the CPU kernels", cases.len());
}

/// The CUDA backend, or None (with the reason printed) on a machine where it cannot start.
fn cuda_or_skip() -> Option<CudaBackend> {
    match CudaBackend::get() {
        Ok(cuda) => Some(cuda),
        Err(reason) => {
            println!("skipped: {reason}");
            None
        }
    }
}

fn assert_same_columns(got: &BatchColumns, expected: &BatchColumns, what: &str) {
    assert_eq!(got.lines, expected.lines, "lines: {what}");
    assert_eq!(got.is_binary, expected.is_binary, "is_binary: {what}");
    let bits = |c: &BatchColumns| c.entropy.iter().map(|e| e.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(got), bits(expected), "entropy: {what}");
    assert_eq!(got.signatures, expected.signatures, "signatures: {what}");
}

/// A batch of `contents` with every `null_every`-th row null (0: none).
fn batch_of(contents: &[Vec<u8>], null_every: usize) -> BinaryArray {
    BinaryArray::from_opt_vec(
        contents
            .iter()
            .enumerate()
            .map(|(i, c)| (null_every == 0 || i % null_every != 1).then_some(c.as_slice()))
            .collect(),
    )
}

#[test]
fn cuda_columns_equal_the_cpu_columns_on_random_and_edge_case_batches() {
    let Some(cuda) = cuda_or_skip() else {
        return;
    };
    let mut kernels = cuda.kernels().expect("streams and buffers");
    let mut random = Random(0x2545_f491_4f6c_dd1d);
    let mut check = |contents: &BinaryArray, job: Option<MinHashJob>, what: &str| {
        kernels.try_launch(contents, job).expect("launch");
        let got = kernels.try_wait().expect("wait");
        assert_same_columns(&got, &cpu::batch_columns(contents, job), what);
    };
    let jobs = [
        None,
        Some(MinHashJob {
            shingle: 5,
            k: 256,
            min_size: 1,
            skip_binary: true,
        }),
        Some(MinHashJob {
            shingle: 1,
            k: 1,
            min_size: 0,
            skip_binary: false,
        }),
        Some(MinHashJob {
            shingle: 8,
            k: MAX_SIGNATURE,
            min_size: 100,
            skip_binary: true,
        }),
        Some(MinHashJob {
            shingle: 3,
            k: 7,
            min_size: 0,
            skip_binary: false,
        }),
    ];
    let edges = edge_contents(&mut random);
    for job in jobs {
        check(&batch_of(&edges, 0), job, &format!("edge cases {job:?}"));
        check(
            &batch_of(&edges, 3),
            job,
            &format!("edge cases with nulls {job:?}"),
        );
        // A slice starts at a non-zero offset into the values buffer.
        let whole = batch_of(&edges, 4);
        let sliced = whole.slice(5, whole.len() - 7);
        check(&sliced, job, &format!("sliced {job:?}"));
        check(&batch_of(&[], 0), job, "empty batch");
        check(&batch_of(&[Vec::new()], 0), job, "one empty row");
    }
    // Random batches of growing and shrinking size, on the same worker's buffers; the largest
    // span several chunks by rows and by bytes, so both streams run.
    for round in 0..12 {
        let rows = [1, 10, 300, 5000, 9000, 40][round % 6];
        let contents: Vec<Vec<u8>> = (0..rows)
            .map(|_| {
                let len = match random.below(10) {
                    0 => 0,
                    1 => random.below(8) as usize,
                    9 => random.below(200_000) as usize,
                    _ => random.below(6000) as usize,
                };
                let alphabet = [2, 5, 30, 256][random.below(4) as usize];
                let mut c = random.bytes(len, alphabet);
                if random.below(20) == 0 && !c.is_empty() {
                    let at = random.below(c.len() as u64) as usize;
                    c[at] = 0;
                }
                c
            })
            .collect();
        let job = jobs[round % jobs.len()];
        check(
            &batch_of(&contents, round % 4),
            job,
            &format!("random round {round}: {rows} rows {job:?}"),
        );
    }
}

#[test]
fn the_cuda_kernel_stage_writes_the_same_file_versions_as_the_cpu_stage() {
    let Some(cuda) = cuda_or_skip() else {
        return;
    };
    let mut pipeline = Pipeline::default_pack();
    pipeline.near_duplicates = Some(Default::default());
    let mut random = Random(7);
    let mut batcher = exoflow::batch::Batcher::new(u64::MAX >> 1);
    for (i, content) in edge_contents(&mut random).into_iter().enumerate() {
        batcher.push(exoflow::source::FileEvent {
            source: "t".into(),
            path: format!("f{i}.txt").into_bytes(),
            kind: exoflow::source::EventKind::Upsert,
            epoch: 1,
            observed_at_us: 0,
            entry: exoflow::source::EntryType::File,
            origin: exoflow::source::Origin::Member(exoflow::source::Member::Regular(content)),
        });
    }
    let batch = batcher.finish();
    let on_cpu = KernelStage::new(Box::new(CpuBackend), pipeline.clone());
    let on_cuda = KernelStage::new(Box::new(cuda), pipeline);
    assert!(on_cuda.backend_description().starts_with("cuda ("));
    let (cpu_versions, _) = on_cpu.run(on_cpu.worker().as_mut(), batch.clone());
    let (cuda_versions, _) = on_cuda.run(on_cuda.worker().as_mut(), batch);
    assert_eq!(format!("{cuda_versions:?}"), format!("{cpu_versions:?}"));
}

/// A small tree with text, binary and empty files.
fn corpus(root: &Path) {
    write(root, "a.rs", "fn main() {}\n// TODO: more\n");
    write(root, "b.txt", "no newline at the end");
    write(root, "empty", "");
    write(root, "bin.dat", [0u8, 1, 2, 3, 0, 255]);
    write(root, "sub/c.py", "# FIXME\nprint('hello')\n".repeat(50));
}

fn replay_with(dir: &Path, lake: &Path, device: &str) -> std::process::Output {
    exoflow()
        .args(["replay", s(dir), "--out", s(lake), "--device", device])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[test]
fn device_cuda_where_cuda_cannot_start_is_a_usage_error_naming_what_is_missing() {
    let reason = match CudaBackend::get() {
        Ok(_) => return println!("skipped: CUDA starts on this machine"),
        Err(reason) => reason.to_string(),
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tree");
    corpus(&dir);
    let lake = tmp.path().join("lake");
    let out = replay_with(&dir, &lake, "cuda");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("--device cuda: {reason}")),
        "{stderr}"
    );
    assert_eq!(stderr.matches(&reason).count(), 1, "said once: {stderr}");
    assert!(
        !lake.exists(),
        "the lake was opened before the device was checked"
    );
    let out = exoflow()
        .args(["watch", s(&dir), "--out", s(&lake), "--device", "cuda"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&reason));
    assert!(!lake.exists());
    let out = run(&["replay", s(&dir), "--out", s(&lake), "--device", "gpu"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn device_auto_runs_where_it_can_and_writes_the_rows_of_device_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tree");
    corpus(&dir);
    let (auto_lake, cpu_lake) = (tmp.path().join("auto"), tmp.path().join("cpu"));
    let auto = replay_with(&dir, &auto_lake, "auto");
    let cpu = replay_with(&dir, &cpu_lake, "cpu");
    let (auto_err, cpu_out) = (
        String::from_utf8_lossy(&auto.stderr),
        String::from_utf8_lossy(&cpu.stdout),
    );
    assert!(auto.status.success() && cpu.status.success(), "{auto_err}");
    assert!(cpu_out.contains("kernels: cpu"), "{cpu_out}");
    let auto_out = String::from_utf8_lossy(&auto.stdout);
    match CudaBackend::get() {
        Err(reason) => {
            let line = "CUDA cannot start; kernels run on the CPU";
            assert_eq!(auto_err.matches(line).count(), 1, "{auto_err}");
            assert!(auto_err.contains(&format!("reason={reason}")), "{auto_err}");
            assert!(auto_out.contains("kernels: cpu"), "{auto_out}");
        }
        Ok(cuda) => {
            let expected = format!("kernels: cuda ({})", cuda.device_description());
            assert!(auto_out.contains(&expected), "{auto_out}");
        }
    }
    assert_eq!(lake_rows(&auto_lake), lake_rows(&cpu_lake));
    assert_eq!(stats_current(&auto_lake), stats_current(&cpu_lake));
}
