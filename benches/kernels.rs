//! Criterion benchmarks of the kernel stage over one batch of source-like files, in bytes per second.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use exoflow::batch::Batcher;
use exoflow::kernels::cpu::{CpuBackend, batch_columns};
use exoflow::kernels::cuda::CudaBackend;
use exoflow::kernels::minhash::{self, fmix64};
use exoflow::kernels::{Backend, KernelStage, MinHashJob};
use exoflow::pipeline::Pipeline;
use exoflow::source::{EntryType, EventKind, FileEvent, Member, Origin};

/// A deterministic batch of `files` source-like files of 1–8 KiB with a few rule hits.
fn batch(files: usize) -> exoflow::batch::ContentBatch {
    generated(files, false)
}

/// As [`batch`], each line ending in a random identifier when `varied`: about as many distinct
/// shingles as bytes, as in real source, where [`batch`]'s seven lines repeat theirs.
fn generated(files: usize, varied: bool) -> exoflow::batch::ContentBatch {
    let mut batcher = Batcher::new(u64::MAX >> 1);
    let mut state = 0x2545f4914f6cdd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let lines = [
        "    let value = compute(input, &mut state)?;\n",
        "    // TODO: handle the empty case\n",
        "fn main() { println!(\"hello, world\"); }\n",
        "/* Copyright 2024 The Authors. */\n",
        "    for (i, x) in items.iter().enumerate() { total += x * i; }\n",
        "// SPDX-License-Identifier: Apache-2.0\n",
        "        return Err(Error::new(ErrorKind::Other, \"failed\"));\n",
    ];
    for i in 0..files {
        let size = 1024 + (next() % 7168) as usize;
        let mut content = Vec::with_capacity(size + 64);
        while content.len() < size {
            let line = lines[(next() % lines.len() as u64) as usize];
            content.extend_from_slice(line.as_bytes());
            if varied {
                content.extend_from_slice(format!("// id{:x}\n", next()).as_bytes());
            }
        }
        batcher.push(FileEvent {
            source: "bench".into(),
            path: format!("src/file{i}.rs").into_bytes(),
            kind: EventKind::Upsert,
            epoch: 1,
            observed_at_us: 0,
            entry: EntryType::File,
            origin: Origin::Member(Member::Regular(content)),
        });
    }
    batcher.finish()
}

fn kernels(c: &mut Criterion) {
    let batch = batch(1024);
    let bytes = batch.contents.values().len() as u64;
    let mut group = c.benchmark_group("kernel_stage");
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("cpu_content_features", |b| {
        b.iter(|| black_box(batch_columns(&batch.contents, None)))
    });
    let job = MinHashJob {
        shingle: 5,
        k: 256,
        min_size: 1,
        skip_binary: true,
    };
    group.bench_function("cpu_content_features_and_minhash_256", |b| {
        b.iter(|| black_box(batch_columns(&batch.contents, Some(job))))
    });
    let pipeline = Pipeline::default_pack();
    group.bench_function("rules_default_pack", |b| {
        b.iter(|| {
            for row in 0..batch.entries.len() {
                let content = batch.content(row).unwrap();
                black_box(exoflow::kernels::matches::scan(content, &pipeline));
            }
        })
    });
    let stage = KernelStage::new(Box::new(CpuBackend), pipeline);
    let mut worker = CpuBackend.worker();
    group.bench_function("whole_stage_default_pack", |b| {
        b.iter(|| black_box(stage.run(worker.as_mut(), batch.clone()).0))
    });
    group.finish();
}

/// The signature scheme's choice: one hash per shingle into k bins (one-permutation hashing,
/// `exoflow-oph-1`) against k independent hashes per shingle (classic MinHash), both k = 256.
fn signature_schemes(c: &mut Criterion) {
    let batch = generated(256, true);
    let bytes = batch.contents.values().len() as u64;
    let mut group = c.benchmark_group("minhash_scheme");
    group.throughput(Throughput::Bytes(bytes));
    group.sample_size(10);
    let k = 256;
    group.bench_function("one_permutation_densified_k256", |b| {
        let mut out = vec![0u32; k];
        b.iter(|| {
            for row in 0..batch.entries.len() {
                minhash::signature(batch.content(row).unwrap(), 5, &mut out);
                black_box(&out);
            }
        })
    });
    group.bench_function("k_independent_hashes_k256", |b| {
        let seeds: Vec<u64> = (0..k as u64).map(|i| fmix64(i + 1)).collect();
        let mut out = vec![0u32; k];
        b.iter(|| {
            for row in 0..batch.entries.len() {
                out.fill(u32::MAX);
                for window in batch.content(row).unwrap().windows(5) {
                    let packed = window
                        .iter()
                        .rev()
                        .fold(0u64, |p, &b| (p << 8) | u64::from(b));
                    let h = minhash::shingle_hash(packed, 5);
                    for (value, seed) in out.iter_mut().zip(&seeds) {
                        *value = (*value).min(fmix64(h ^ seed) as u32);
                    }
                }
                black_box(&out);
            }
        })
    });
    group.finish();
}

/// Each batch kernel on the CPU (one core) and on CUDA over the same batch, a group per kernel:
/// the ratio of the two throughputs is the figure `benches/gpu.sh` prints. The CUDA side
/// includes the copies to and from the device; both sides compute the content features, since
/// every launch does. On a machine where CUDA cannot start, only the CPU side runs.
fn cpu_vs_cuda(c: &mut Criterion) {
    let batch = batch(4096);
    let bytes = batch.contents.values().len() as u64;
    let mut cuda = match CudaBackend::get() {
        Ok(cuda) => Some(cuda.kernels().expect("CUDA streams and buffers")),
        Err(reason) => {
            eprintln!("CUDA benchmarks skipped: {reason}");
            None
        }
    };
    let job = MinHashJob {
        shingle: 5,
        k: 256,
        min_size: 1,
        skip_binary: true,
    };
    for (name, job) in [("features", None), ("features_and_minhash_k256", Some(job))] {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(bytes));
        group.sample_size(10);
        group.bench_function("cpu", |b| {
            b.iter(|| black_box(batch_columns(&batch.contents, job)))
        });
        if let Some(kernels) = cuda.as_mut() {
            // Checked once here, so that a fast wrong answer is not timed.
            kernels.try_launch(&batch.contents, job).unwrap();
            assert_eq!(
                kernels.try_wait().unwrap(),
                batch_columns(&batch.contents, job),
                "CUDA columns differ from the CPU's"
            );
            group.bench_function("cuda", |b| {
                b.iter(|| {
                    kernels.try_launch(&batch.contents, job).unwrap();
                    black_box(kernels.try_wait().unwrap())
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, kernels, signature_schemes, cpu_vs_cuda);
criterion_main!(benches);
