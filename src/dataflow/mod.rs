//! The timely graph: FileEvents -> exchange by hash(path) -> read, batch and kernels on the worker that
//! owns the path -> only the changes (reconcile) -> the lake writer, and -> the differential
//! collection of current versions (upsert by path) -> statistics -> the statistics writer.
//!
//! Timely time is `epoch << 32 | tick`: an epoch (a snapshot, a commit interval) is split into
//! ticks so that differential can settle its work tick by tick instead of holding a whole
//! snapshot; the lake and the statistics tables are written per epoch. Memory is bounded by
//! admitting at most [`MAX_EVENTS_IN_FLIGHT`] events between the source and the kernel stage: a
//! source waits for the workers, never the other way round.

pub mod reconcile;
pub mod stats;

use std::cell::RefCell;
use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, TryRecvError};
use differential_dataflow::operators::arrange::upsert::arrange_from_upsert;
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline as PipelinePact};
use timely::dataflow::operators::{Operator, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle, Stream, StreamVec};

use self::reconcile::{Epochs, reconcile};
use self::stats::{StatKey, Tracked, all_stats};
use crate::batch::Batcher;
use crate::kernels::KernelStage;
use crate::latency::LatencyRecorder;
use crate::progress::Progress;
use crate::sink::stats::StatsWriter;
use crate::sink::{LakeWriter, SinkError, SinkReport};
use crate::source::{FileEvent, path_id};
use crate::version::FileVersion;

/// Events buffered between a source and the workers: when full, the source waits.
pub const EVENT_QUEUE: usize = 4096;
/// Events admitted into the graph and not yet featurized, over all workers.
pub const MAX_EVENTS_IN_FLIGHT: usize = 8192;
/// Events a worker sends before it lets the graph run.
const EVENTS_PER_STEP: usize = 2048;

/// Bits of a timestamp that count ticks within an epoch.
const TICK_BITS: u32 = 32;

/// The first timestamp of `epoch`.
pub fn epoch_start(epoch: u64) -> u64 {
    epoch << TICK_BITS
}

/// The last timestamp of `epoch`.
pub fn epoch_end(epoch: u64) -> u64 {
    epoch_start(epoch + 1) - 1
}

/// The epoch of a timestamp.
pub fn epoch_of(time: u64) -> u64 {
    time >> TICK_BITS
}

/// Everything a run of the graph needs.
pub struct GraphPlan {
    pub lake: PathBuf,
    pub workers: usize,
    pub stage: Arc<KernelStage>,
    pub max_file_bytes: u64,
    pub dir_depth: usize,
    pub epochs: Epochs,
    /// The highest epoch whose events the source has all sent.
    pub sealed: Arc<AtomicU64>,
    pub progress: Arc<Progress>,
    /// Part files and `stats_current.parquet` are committed at least this often; None: parts at
    /// the end, `stats_current.parquet` at every epoch.
    pub commit_interval: Option<Duration>,
    /// Records event-to-statistics latency, for watching.
    pub latency: Option<Arc<LatencyRecorder>>,
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
    let shared = Arc::new(Shared {
        plan,
        abort: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
    });
    let config = timely::Config::process(shared.plan.workers.max(1));
    let guards = timely::execute(config, move |worker| run_worker(worker, &shared, &events))
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

/// What every worker shares.
struct Shared {
    plan: GraphPlan,
    abort: AtomicBool,
    in_flight: AtomicUsize,
}

fn run_worker(
    worker: &mut timely::worker::Worker,
    shared: &Arc<Shared>,
    events: &Receiver<FileEvent>,
) -> Result<SinkReport, SinkError> {
    let plan = &shared.plan;
    let index = worker.index();
    let rules = plan.stage.rules().clone();
    let writer = Rc::new(RefCell::new(LakeWriter::new(
        &plan.lake,
        index,
        rules.clone(),
    )));
    let stats_writer = Rc::new(RefCell::new(StatsWriter::new(
        &plan.lake,
        index,
        rules,
        plan.commit_interval,
    )));
    let failure: Rc<RefCell<Option<SinkError>>> = Rc::new(RefCell::new(None));
    let mut input = InputHandleVec::<u64, FileEvent>::new();
    let probe = ProbeHandle::new();
    worker.dataflow::<u64, _, _>(|scope| {
        let events = input.to_stream(scope);
        let observed = featurize(events, shared.clone());
        let changes = reconcile(observed, plan.epochs.clone());
        let upserts = write_lake(changes, writer.clone(), failure.clone(), plan.dir_depth);
        let current = arrange_from_upsert::<
            ValBuilder<u128, Tracked, u64, isize>,
            ValSpine<u128, Tracked, u64, isize>,
            u128,
            Tracked,
        >(upserts, "CurrentVersions");
        let stats = all_stats(current);
        let latency = plan.latency.clone().filter(|_| index == 0);
        write_stats(stats.inner, stats_writer.clone(), failure.clone(), latency).probe_with(&probe);
    });

    let mut since_tick = 0usize;
    loop {
        if failure.borrow().is_some() {
            shared.abort.store(true, Ordering::Relaxed);
        }
        if shared.abort.load(Ordering::Relaxed) {
            break;
        }
        if shared.in_flight.load(Ordering::Acquire) >= MAX_EVENTS_IN_FLIGHT {
            next_tick(&mut input, &mut since_tick);
            worker.step_or_park(Some(Duration::from_millis(1)));
            continue;
        }
        match events.try_recv() {
            Ok(event) => {
                if event.epoch > epoch_of(*input.time()) {
                    input.advance_to(epoch_start(event.epoch));
                    since_tick = 0;
                }
                shared.in_flight.fetch_add(1, Ordering::AcqRel);
                input.send(event);
                since_tick += 1;
                if since_tick >= EVENTS_PER_STEP {
                    next_tick(&mut input, &mut since_tick);
                    worker.step();
                }
            }
            Err(TryRecvError::Empty) => {
                next_tick(&mut input, &mut since_tick);
                if let Some(interval) = plan.commit_interval {
                    let committed = writer
                        .borrow_mut()
                        .commit_if_older(interval)
                        .and_then(|()| stats_writer.borrow_mut().commit_if_due());
                    if let Err(error) = committed {
                        tracing::error!(error = %error, "commit failed");
                        failure.borrow_mut().get_or_insert(error);
                    }
                }
                // No event of a sealed epoch can come any more: let the epoch complete.
                let sealed = plan.sealed.load(Ordering::Acquire);
                if sealed >= epoch_of(*input.time()) {
                    input.advance_to(epoch_start(sealed + 1));
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
    let stats_writer = Rc::try_unwrap(stats_writer)
        .map_err(|_| ())
        .expect("the dataflow has completed and released the statistics writer")
        .into_inner();
    let mut report = writer.finish()?;
    let stats_parts = if index == 0 {
        // When the run ends, `stats_current` is current at the last epoch the source sealed.
        stats_writer.finish(Some(plan.sealed.load(Ordering::Acquire)))?
    } else {
        stats_writer.finish(None)?
    };
    report.parts.extend(stats_parts);
    Ok(report)
}

/// Closes the current tick if anything was sent in it.
fn next_tick(input: &mut InputHandleVec<u64, FileEvent>, since_tick: &mut usize) {
    if *since_tick > 0 {
        let next = *input.time() + 1;
        input.advance_to(next);
        *since_tick = 0;
    }
}

/// Events -> versions: each event goes to the worker that owns its path, which reads it into a
/// batch and runs the kernel stage over the batch.
fn featurize<'scope>(
    events: StreamVec<'scope, u64, FileEvent>,
    shared: Arc<Shared>,
) -> StreamVec<'scope, u64, FileVersion> {
    let pact = Exchange::new(|event: &FileEvent| event.route());
    events.unary::<CapacityContainerBuilder<Vec<FileVersion>>, _, _, _>(
        pact,
        "Featurize",
        move |_capability, _info| {
            let plan = &shared.plan;
            let mut batcher = Batcher::new(plan.max_file_bytes);
            move |input, output| {
                let plan = &shared.plan;
                input.for_each(|capability, data| {
                    let mut flush = |batcher: &mut Batcher| {
                        let (files, bytes) = (batcher.len(), batcher.bytes());
                        let versions = plan.stage.run(batcher.finish());
                        plan.progress.add(files as u64, bytes as u64);
                        shared.in_flight.fetch_sub(files, Ordering::AcqRel);
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

/// Versions -> the worker's part files, and -> upserts keyed by path id, at the time they travel
/// at, for the current-versions arrangement (so that no version is copied for two consumers).
fn write_lake<'scope>(
    versions: StreamVec<'scope, u64, FileVersion>,
    writer: Rc<RefCell<LakeWriter>>,
    failure: Rc<RefCell<Option<SinkError>>>,
    dir_depth: usize,
) -> StreamVec<'scope, u64, (u128, Option<Tracked>, u64)> {
    versions.unary::<CapacityContainerBuilder<Vec<(u128, Option<Tracked>, u64)>>, _, _, _>(
        PipelinePact,
        "LakeWriter",
        move |_capability, _info| {
            move |input, output| {
                input.for_each(|time, data| {
                    let at = *time.least().expect("a message has a time");
                    let mut session = output.session(&time);
                    let mut writer = writer.borrow_mut();
                    for v in data.drain(..) {
                        let id = path_id(&v.source, &v.path);
                        session.give((id, Tracked::of(&v, dir_depth), at));
                        if failure.borrow().is_none()
                            && let Err(error) = writer.push(v)
                        {
                            tracing::error!(error = %error, "lake write failed");
                            *failure.borrow_mut() = Some(error);
                        }
                    }
                });
            }
        },
    )
}

/// Statistic changes -> one worker, which writes each epoch's changes once the epoch is complete
/// and replaces `stats_current.parquet`. It holds one consolidated value per statistic and open
/// epoch.
fn write_stats<'scope>(
    changes: Stream<'scope, u64, Vec<(StatKey, u64, isize)>>,
    writer: Rc<RefCell<StatsWriter>>,
    failure: Rc<RefCell<Option<SinkError>>>,
    latency: Option<Arc<LatencyRecorder>>,
) -> StreamVec<'scope, u64, ()> {
    changes.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        Exchange::new(|_: &(StatKey, u64, isize)| 0u64),
        "StatsWriter",
        move |_capability, _info| {
            let mut pending: BTreeMap<u64, FxHashMap<StatKey, i64>> = BTreeMap::new();
            move |(input, frontier), _output| {
                input.for_each(|_capability, data| {
                    for (key, time, diff) in data.drain(..) {
                        let epoch = pending.entry(epoch_of(time)).or_default();
                        *epoch.entry(key).or_default() += diff as i64;
                    }
                });
                while let Some(entry) = pending.first_entry() {
                    if frontier.less_equal(&epoch_end(*entry.key())) {
                        break;
                    }
                    let (epoch, changes) = entry.remove_entry();
                    if failure.borrow().is_some() {
                        continue;
                    }
                    if let Err(error) = writer.borrow_mut().commit_epoch(epoch, changes) {
                        tracing::error!(error = %error, "statistics write failed");
                        *failure.borrow_mut() = Some(error);
                    }
                }
                if let Some(latency) = &latency {
                    // Every epoch the frontier has passed is reflected in the live statistics.
                    match frontier.frontier().first() {
                        Some(&t) if epoch_of(t) > 0 => latency.reflected_through(epoch_of(t) - 1),
                        Some(_) => {}
                        None => latency.reflected_through(u64::MAX - 1),
                    }
                }
            }
        },
    )
}
