//! Criterion benchmarks of the kernel stage over one batch of source-like files, in bytes per second.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use exoflow::batch::Batcher;
use exoflow::kernels::cpu::CpuBackend;
use exoflow::kernels::{Backend, KernelStage};
use exoflow::pipeline::Pipeline;
use exoflow::source::{EntryType, EventKind, FileEvent, Member, Origin};

/// A deterministic batch of `files` source-like files of 1–8 KiB with a few rule hits.
fn batch(files: usize) -> exoflow::batch::ContentBatch {
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
        b.iter(|| black_box(CpuBackend.content_features(&batch.contents)))
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
    group.bench_function("whole_stage_default_pack", |b| {
        b.iter(|| black_box(stage.run(batch.clone()).0))
    });
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
