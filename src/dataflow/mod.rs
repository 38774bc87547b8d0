//! The timely graph: FileEvents from a source -> exchange by hash(path) -> read, batch and kernels on the
//! worker that owns the path -> that worker's lake writer; a probe on the writer's output bounds the
//! epochs in flight, so sources wait for the dataflow and nothing buffers without bound.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, TryRecvError};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline as PipelinePact};
use timely::dataflow::operators::{Operator, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle, StreamVec};

use crate::batch::Batcher;
use crate::kernels::KernelStage;
use crate::progress::Progress;
use crate::sink::{LakeWriter, SinkError, SinkReport};
use crate::source::{FileEvent, Member, Origin};
use crate::version::FileVersion;

/// Events a worker admits before it closes its current tick.
const TICK_EVENTS: usize = 256;
/// Inline archive bytes a worker admits before it closes its current tick.
const TICK_BYTES: usize = 8 << 20;
/// Ticks a worker may have in flight beyond what the lake writers have finished.
const TICKS_IN_FLIGHT: u64 = 4;

/// Everything a run of the graph needs.
pub struct GraphPlan {
    pub lake: PathBuf,
    pub workers: usize,
    /// The epoch written into the lake for this run's versions.
    pub epoch: u64,
    pub stage: Arc<KernelStage>,
    pub max_file_bytes: u64,
    pub progress: Arc<Progress>,
}

/// Why a run of the graph failed.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("lake write failed")]
    Sink(#[from] SinkError),
    #[error("dataflow failed: {0}")]
    Timely(String),
}

/// Runs the graph over every event `events` yields until its senders hang up, and returns the
/// merged report of the lake writers.
pub fn run(plan: GraphPlan, events: Receiver<FileEvent>) -> Result<SinkReport, GraphError> {
    let abort = Arc::new(AtomicBool::new(false));
    let config = timely::Config::process(plan.workers.max(1));
    let plan = Arc::new(plan);
    let guards = timely::execute(config, {
        let abort = abort.clone();
        move |worker| run_worker(worker, &plan, &events, &abort)
    })
    .map_err(GraphError::Timely)?;
    let mut report = SinkReport::default();
    let mut first_error = None;
    for result in guards.join() {
        match result {
            Ok(Ok(worker_report)) => report.merge(worker_report),
            Ok(Err(e)) => {
                first_error.get_or_insert(GraphError::Sink(e));
            }
            Err(panic) => {
                first_error.get_or_insert(GraphError::Timely(panic));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

fn run_worker(
    worker: &mut timely::worker::Worker,
    plan: &GraphPlan,
    events: &Receiver<FileEvent>,
    abort: &AtomicBool,
) -> Result<SinkReport, SinkError> {
    let index = worker.index();
    let writer = Rc::new(RefCell::new(LakeWriter::new(
        &plan.lake,
        index,
        plan.epoch,
        plan.stage.rules().clone(),
    )));
    let failure: Rc<RefCell<Option<SinkError>>> = Rc::new(RefCell::new(None));
    let mut input = InputHandleVec::<u64, FileEvent>::new();
    let probe = ProbeHandle::new();
    worker.dataflow::<u64, _, _>(|scope| {
        let events = input.to_stream(scope);
        let versions = featurize(
            events,
            plan.stage.clone(),
            plan.max_file_bytes,
            plan.progress.clone(),
        );
        write_lake(versions, writer.clone(), failure.clone()).probe_with(&probe);
    });

    let (mut tick_events, mut tick_bytes) = (0usize, 0usize);
    loop {
        if failure.borrow().is_some() {
            abort.store(true, Ordering::Relaxed);
        }
        if abort.load(Ordering::Relaxed) {
            break;
        }
        match events.try_recv() {
            Ok(event) => {
                if let Origin::Member(Member::Regular(content)) = &event.origin {
                    tick_bytes += content.len();
                }
                input.send(event);
                tick_events += 1;
                if tick_events >= TICK_EVENTS || tick_bytes >= TICK_BYTES {
                    advance(&mut input, &probe, worker);
                    (tick_events, tick_bytes) = (0, 0);
                }
            }
            Err(TryRecvError::Empty) => {
                if tick_events > 0 {
                    advance(&mut input, &probe, worker);
                    (tick_events, tick_bytes) = (0, 0);
                }
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
            Err(TryRecvError::Disconnected) => break,
        }
    }
    drop(input);
    while worker.step() {}

    if let Some(error) = failure.borrow_mut().take() {
        return Err(error);
    }
    let writer = Rc::try_unwrap(writer)
        .map_err(|_| ())
        .expect("the dataflow has completed and released the writer")
        .into_inner();
    writer.finish()
}

/// Closes the current tick and waits while too many ticks are in flight.
fn advance(
    input: &mut InputHandleVec<u64, FileEvent>,
    probe: &ProbeHandle<u64>,
    worker: &mut timely::worker::Worker,
) {
    let next = *input.time() + 1;
    input.advance_to(next);
    if next > TICKS_IN_FLIGHT {
        let oldest = next - TICKS_IN_FLIGHT;
        while probe.less_than(&oldest) {
            worker.step();
        }
    }
}

/// Events -> versions: each event goes to the worker that owns its path, which reads it into a
/// batch and runs the kernel stage over the batch.
fn featurize<'scope>(
    events: StreamVec<'scope, u64, FileEvent>,
    stage: Arc<KernelStage>,
    max_file_bytes: u64,
    progress: Arc<Progress>,
) -> StreamVec<'scope, u64, FileVersion> {
    let pact = Exchange::new(|event: &FileEvent| event.route());
    events.unary::<CapacityContainerBuilder<Vec<FileVersion>>, _, _, _>(
        pact,
        "Featurize",
        move |_capability, _info| {
            let mut batcher = Batcher::new(max_file_bytes);
            move |input, output| {
                input.for_each(|capability, data| {
                    let mut flush = |batcher: &mut Batcher| {
                        let (files, bytes) = (batcher.len(), batcher.bytes());
                        let versions = stage.run(batcher.finish());
                        progress.add(files as u64, bytes as u64);
                        output
                            .session(&capability)
                            .give_iterator(versions.into_iter());
                    };
                    for event in data.drain(..) {
                        batcher.push(event);
                        if batcher.is_full() {
                            flush(&mut batcher);
                        }
                    }
                    if !batcher.is_empty() {
                        flush(&mut batcher);
                    }
                });
            }
        },
    )
}

/// Versions -> the worker's part files. Its (empty) output exists so that a probe can tell when
/// a tick has been written.
fn write_lake<'scope>(
    versions: StreamVec<'scope, u64, FileVersion>,
    writer: Rc<RefCell<LakeWriter>>,
    failure: Rc<RefCell<Option<SinkError>>>,
) -> StreamVec<'scope, u64, ()> {
    versions.unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        PipelinePact,
        "LakeWriter",
        move |_capability, _info| {
            move |input, _output| {
                input.for_each(|_capability, data| {
                    if failure.borrow().is_none()
                        && let Err(error) = writer.borrow_mut().write(data)
                    {
                        tracing::error!(error = %error, "lake write failed");
                        *failure.borrow_mut() = Some(error);
                    }
                    data.clear();
                });
            }
        },
    )
}
