//! The upsert arrangement (`exoflow::dataflow::upsert`) against differential's
//! `arrange_from_upsert`, on the load a replay puts on it: a snapshot of `PATHS` new paths, then
//! one that changes a tenth of them and deletes a hundredth, sent in messages of 1,024 with the
//! worker stepping between messages, as the graph does while files are read.
//!
//!     cargo bench --bench upsert

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use differential_dataflow::operators::arrange::upsert::arrange_from_upsert;
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use exoflow::dataflow::upsert::arrange_upserts;
use timely::dataflow::InputHandleVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::probe::{Handle, Probe};

const PATHS: u64 = 200_000;
const MESSAGE: usize = 1024;

type Upsert = (u64, Option<u64>, u64);
type Spine = ValSpine<u64, u64, u64, isize>;
type Build = ValBuilder<u64, u64, u64, isize>;

/// Two epochs of upserts, (key, value, time): every path new, then a tenth changed and a
/// hundredth deleted.
fn upserts() -> Vec<Upsert> {
    let mix = |x: u64| x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    let mut all: Vec<Upsert> = (0..PATHS).map(|p| (mix(p), Some(p), 1)).collect();
    all.extend(
        (0..PATHS)
            .filter(|p| p % 10 == 0)
            .map(|p| (mix(p), Some(p + 1), 2)),
    );
    all.extend(
        (0..PATHS)
            .filter(|p| p % 100 == 1)
            .map(|p| (mix(p), None, 2)),
    );
    all
}

/// Runs `upserts` through one operator on one worker, to the end; returns the worker's steps.
fn run(upserts: &[Upsert], ours: bool) -> usize {
    let upserts = upserts.to_vec();
    timely::execute_directly(move |worker| {
        let mut input = InputHandleVec::<u64, Upsert>::new();
        let probe = Handle::new();
        worker.dataflow::<u64, _, _>(|scope| {
            let stream = input.to_stream(scope);
            let arranged = if ours {
                arrange_upserts::<Build, Spine, u64, u64, _>(stream, Pipeline, "Ours")
            } else {
                arrange_from_upsert::<Build, Spine, u64, u64>(stream, "Theirs")
            };
            arranged.stream.probe_with(&probe);
        });
        let mut steps = 0;
        for chunk in upserts.chunks(MESSAGE) {
            let time = chunk[0].2;
            if time > *input.time() {
                input.advance_to(time);
            }
            for upsert in chunk {
                input.send(*upsert);
            }
            worker.step();
            steps += 1;
        }
        input.advance_to(3);
        while probe.less_than(input.time()) {
            worker.step();
            steps += 1;
        }
        steps
    })
}

fn upsert(c: &mut Criterion) {
    let upserts = upserts();
    let mut group = c.benchmark_group("upsert_arrangement");
    group.throughput(Throughput::Elements(upserts.len() as u64));
    group.sample_size(10);
    group.bench_function("exoflow_arrange_upserts", |b| {
        b.iter(|| black_box(run(&upserts, true)))
    });
    group.bench_function("differential_arrange_from_upsert", |b| {
        b.iter(|| black_box(run(&upserts, false)))
    });
    group.finish();
}

criterion_group!(benches, upsert);
criterion_main!(benches);
