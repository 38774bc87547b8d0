//! The timely graph: FileEvents -> exchange by hash(path) -> read, batch and kernels on the worker that
//! owns the path -> only the changes (reconcile) -> the lake writer, and -> the differential
//! collection of current versions (upsert by path) -> statistics -> the statistics writer.
//!
//! Timely time is `epoch << 32 | tick`: an epoch (a snapshot, a commit interval) is split into
//! ticks so that differential can settle its work tick by tick instead of holding a whole
//! snapshot; the lake and the statistics tables are written per epoch and committed at the epochs
//! the source asks for (see [`commit`]). Memory is bounded by
//! admitting at most [`MAX_EVENTS_IN_FLIGHT`] events between the source and the kernel stage: a
//! source waits for the workers, never the other way round.

pub mod commit;
pub mod near_dup;
pub mod reconcile;
pub mod stats;
pub mod upsert;

use std::cell::RefCell;
use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline as PipelinePact};
use timely::dataflow::operators::{Operator, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle, Stream, StreamVec};

use self::commit::{CheckpointPolicy, CommitPlan, Committer, ReplayPlan};
use self::near_dup::{Membership, near_duplicates};
use self::reconcile::{Identity, KnownPath, reconcile};
use self::stats::{DirKeys, StatKey, Tracked, all_stats};
use self::upsert::arrange_upserts;
use crate::api::live::Live;
use crate::batch::Batcher;
use crate::epochs::EpochClock;
use crate::kernels::KernelStage;
use crate::latency::LatencyRecorder;
use crate::progress::{ErrorKind, Progress};
use crate::sink::commit::Lake;
use crate::sink::compact::AutoCompact;
use crate::sink::restore::LakeState;
use crate::sink::stats::StatsWriter;
use crate::sink::{LakeWriter, SinkError, SinkReport};
use crate::source::{FileEvent, path_id, route};
use crate::version::FileVersion;

/// Events buffered between a source and the workers: when full, the source waits.
pub const EVENT_QUEUE: usize = 4096;
/// Events admitted into the graph and not yet featurized, over all workers.
pub const MAX_EVENTS_IN_FLIGHT: usize = 8192;
/// Events a worker sends before it closes a tick and lets the graph run.
const EVENTS_PER_TICK: usize = 2048;
/// A tick that is this old closes when the source has no event ready.
const TICK_AGE: Duration = Duration::from_millis(20);

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
    pub lake: Arc<Lake>,
    pub workers: usize,
    pub stage: Arc<KernelStage>,
    pub max_file_bytes: u64,
    pub dir_depth: usize,
    /// The source's epochs: what is sealed, where to commit, which snapshots ended.
    pub clock: Arc<EpochClock>,
    /// The committed state of the lake, which the run continues from.
    pub restored: LakeState,
    pub progress: Arc<Progress>,
    /// Records event-to-statistics latency, for watching.
    pub latency: Option<Arc<LatencyRecorder>>,
    /// What the commit records say of a replay's progress.
    pub replay: Option<ReplayPlan>,
    /// A checkpoint is written once this many `files` rows (and at least as many as there are
    /// tracked paths) were committed after the last one.
    pub checkpoint_rows: u64,
    /// When the running writer compacts its tables in the background; None: never.
    pub auto_compact: Option<AutoCompact>,
    /// Where the commit coordinator publishes the live statistics, when a server reads them.
    pub live: Option<Arc<Live>>,
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
pub fn run(mut plan: GraphPlan, events: Receiver<FileEvent>) -> Result<SinkReport, GraphError> {
    let workers = plan.workers.max(1);
    let (restored_rows, restored_parts) = (plan.restored.rows_read, plan.restored.parts_read);
    let mut shares: Vec<Vec<FileVersion>> = (0..workers).map(|_| Vec::new()).collect();
    for version in std::mem::take(&mut plan.restored.versions) {
        shares[(route(&version.source, &version.path) % workers as u64) as usize].push(version);
    }
    let shared = Arc::new(Shared {
        plan,
        abort: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
        restored: shares.into_iter().map(|s| Mutex::new(Some(s))).collect(),
        restored_rows,
        restored_parts,
        rows_written: Arc::new(AtomicU64::new(0)),
    });
    let config = timely::Config::process(workers);
    // However the graph ends, a source waiting for it to take its members must not wait for
    // good.
    let inline_guard = CloseInline(shared.plan.clock.clone());
    let guards = timely::execute(config, move |worker| run_worker(worker, &shared, &events))
        .map_err(GraphError::Timely)?;
    let mut report = SinkReport::default();
    let mut first_error = None;
    let results = guards.join();
    drop(inline_guard);
    for result in results {
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
    /// Set when a worker failed: the others stop, and nothing more is committed.
    abort: AtomicBool,
    in_flight: AtomicUsize,
    /// Each worker's share of the restored versions, taken when its graph is built.
    restored: Vec<Mutex<Option<Vec<FileVersion>>>>,
    restored_rows: u64,
    restored_parts: u64,
    /// `files` rows written by all workers in this run.
    rows_written: Arc<AtomicU64>,
}

fn run_worker(
    worker: &mut timely::worker::Worker,
    shared: &Arc<Shared>,
    events: &Receiver<FileEvent>,
) -> Result<SinkReport, SinkError> {
    let plan = &shared.plan;
    // A worker that panics stops the others: its share of the events would never be processed.
    let _abort_on_panic = AbortOnPanic(&shared.abort);
    let index = worker.index();
    let rules = plan.stage.rules().clone();
    let root = plan.lake.root().to_path_buf();
    let writer = Rc::new(RefCell::new(LakeWriter::new(&root, index, rules.clone())));
    let commits = CommitPlan {
        lake: plan.lake.clone(),
        clock: plan.clock.clone(),
        stats: StatsWriter::new(&root, index, rules.clone()),
        rules,
        replay: plan.replay.clone(),
        policy: CheckpointPolicy {
            min_rows: plan.checkpoint_rows,
            rows_before: shared.restored_rows,
            parts_before: shared.restored_parts,
            parts_per_commit: plan.workers.max(1) as u64,
        },
        rows_written: shared.rows_written.clone(),
        auto_compact: plan.auto_compact,
    };
    let committer = Rc::new(RefCell::new(Committer::new(
        index == 0,
        commits,
        plan.live.clone(),
    )));
    let failure: Rc<RefCell<Option<SinkError>>> = Rc::new(RefCell::new(None));
    let restored = shared.restored[index]
        .lock()
        .expect("restored lock")
        .take()
        .unwrap_or_default();
    // The restored versions, consumed: reconcile keeps their identities, the arrangement their
    // statistics' view.
    let mut dirs = DirKeys::new(plan.dir_depth);
    let mut known = Vec::with_capacity(restored.len());
    let mut tracked = Vec::with_capacity(restored.len());
    for version in restored {
        let id = path_id(&version.source, &version.path);
        if let Some(t) = Tracked::of(&version, &mut dirs) {
            tracked.push((id, t));
        }
        known.push(KnownPath {
            id,
            identity: Identity::of(&version),
            key: (version.source, version.path),
        });
    }
    let mut input = InputHandleVec::<u64, FileEvent>::new();
    let probe = ProbeHandle::new();
    worker.dataflow::<u64, _, _>(|scope| {
        let events = input.to_stream(scope);
        let observed = featurize(events, shared.clone());
        let changes = reconcile(observed, plan.clock.clone(), known);
        let upserts = write_lake(
            changes,
            LakeSink {
                writer: writer.clone(),
                failure: failure.clone(),
                shared: shared.clone(),
                restored: tracked,
            },
        );
        // The upserts come from the worker that owns their path: no exchange.
        let current = arrange_upserts::<
            ValBuilder<u128, Tracked, u64, isize>,
            ValSpine<u128, Tracked, u64, isize>,
            u128,
            Tracked,
            _,
        >(upserts, PipelinePact, "CurrentVersions");
        let (stats, memberships) = match plan.stage.pipeline().near_duplicates {
            Some(params) => {
                let (near, memberships) = near_duplicates(current.clone(), params);
                (all_stats(current).concat(near), memberships.inner)
            }
            None => (
                all_stats(current),
                timely::dataflow::operators::generic::operator::empty(scope),
            ),
        };
        let latency = plan.latency.clone().filter(|_| index == 0);
        write_stats(
            stats.inner,
            memberships,
            committer.clone(),
            failure.clone(),
            shared.clone(),
            latency,
        )
        .probe_with(&probe);
    });

    let mut tick = Tick::default();
    loop {
        if failure.borrow().is_some() {
            shared.abort.store(true, Ordering::Release);
        }
        if shared.abort.load(Ordering::Acquire) {
            break;
        }
        let in_flight = shared.in_flight.load(Ordering::Acquire);
        if in_flight >= MAX_EVENTS_IN_FLIGHT {
            plan.progress.set_queues(events.len(), in_flight);
            tick.close_if_old(&mut input);
            worker.step_or_park(Some(Duration::from_millis(1)));
            continue;
        }
        // Read before the channel: an epoch sealed after an empty receive may still have had an
        // event sent just before the seal, which must enter at its own epoch.
        let sealed = plan.clock.sealed();
        match events.try_recv() {
            Ok(event) => {
                debug_assert!(event.epoch >= epoch_of(*input.time()), "an event came late");
                if event.epoch > epoch_of(*input.time()) {
                    input.advance_to(epoch_start(event.epoch));
                    tick = Tick::default();
                }
                shared.in_flight.fetch_add(1, Ordering::AcqRel);
                input.send(event);
                if tick.sent() >= EVENTS_PER_TICK {
                    plan.progress.set_queues(events.len(), in_flight + 1);
                    tick.close(&mut input);
                    worker.step();
                }
            }
            Err(TryRecvError::Empty) => {
                plan.progress.set_queues(0, in_flight);
                tick.close_if_old(&mut input);
                // No event of an epoch sealed before the receive can come any more.
                if sealed >= epoch_of(*input.time()) {
                    input.advance_to(epoch_start(sealed + 1));
                }
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
            Err(TryRecvError::Disconnected) => break,
        }
    }
    drop(input);
    if !shared.abort.load(Ordering::Acquire) {
        while worker.step() {
            if shared.abort.load(Ordering::Acquire) {
                break;
            }
        }
    }
    if shared.abort.load(Ordering::Acquire) {
        // A failed writer holds its capability so that nothing after the failure commits: the
        // dataflow cannot complete and is dropped. What was written past the last commit is
        // removed when the lake is next opened.
        for dataflow in worker.installed_dataflows() {
            worker.drop_dataflow(dataflow);
        }
        return match failure.borrow_mut().take() {
            Some(error) => Err(error),
            None => Ok(SinkReport::default()),
        };
    }
    if let Some(error) = failure.borrow_mut().take() {
        return Err(error);
    }
    let writer = Rc::try_unwrap(writer)
        .map_err(|_| ())
        .expect("the dataflow has completed and released the writer")
        .into_inner();
    let committer = Rc::try_unwrap(committer)
        .map_err(|_| ())
        .expect("the dataflow has completed and released the committer")
        .into_inner();
    let mut report = writer.finish()?;
    report.parts.extend(committer.finish()?);
    Ok(report)
}

/// Closes the clock's inline budget when dropped (see [`EpochClock::close_inline`]).
struct CloseInline(Arc<EpochClock>);

impl Drop for CloseInline {
    fn drop(&mut self) {
        self.0.close_inline();
    }
}

/// Sets the flag when dropped by a panic.
struct AbortOnPanic<'a>(&'a AtomicBool);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Release);
        }
    }
}

/// The events sent in the open tick of a worker's input. A tick closes after
/// [`EVENTS_PER_TICK`] events, or when it is [`TICK_AGE`] old and the source has nothing more
/// for now: fewer, fuller ticks mean fewer batches and less progress tracking downstream, and
/// the age bound lets a slow source's events move on.
#[derive(Default)]
struct Tick {
    events: usize,
    opened: Option<Instant>,
}

impl Tick {
    /// Counts one event sent; returns the events of the tick.
    fn sent(&mut self) -> usize {
        self.opened.get_or_insert_with(Instant::now);
        self.events += 1;
        self.events
    }

    /// Closes the tick if anything was sent in it.
    fn close(&mut self, input: &mut InputHandleVec<u64, FileEvent>) {
        if self.events > 0 {
            let next = *input.time() + 1;
            input.advance_to(next);
            *self = Tick::default();
        }
    }

    /// Closes the tick if it is old enough.
    fn close_if_old(&mut self, input: &mut InputHandleVec<u64, FileEvent>) {
        if self.opened.is_some_and(|at| at.elapsed() >= TICK_AGE) {
            self.close(input);
        }
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
            let mut kernels = plan.stage.worker();
            move |input, output| {
                let plan = &shared.plan;
                input.for_each(|capability, data| {
                    let mut inline = 0;
                    let mut flush = |batcher: &mut Batcher, inline: &mut u64| {
                        let (events, files) = (batcher.len(), batcher.files());
                        let bytes = batcher.bytes();
                        let (versions, contents) =
                            plan.stage.run(kernels.as_mut(), batcher.finish());
                        batcher.recycle(contents);
                        plan.progress.add(files as u64, bytes as u64);
                        shared.in_flight.fetch_sub(events, Ordering::AcqRel);
                        plan.clock.release_inline(std::mem::take(inline));
                        output
                            .session(&capability)
                            .give_iterator(versions.into_iter());
                    };
                    for event in data.drain(..) {
                        inline += EpochClock::inline_bytes(&event);
                        batcher.push(event);
                        if batcher.is_full() {
                            flush(&mut batcher, &mut inline);
                        }
                    }
                    if !batcher.is_empty() {
                        flush(&mut batcher, &mut inline);
                    }
                });
            }
        },
    )
}

/// What the lake-writing operator holds.
struct LakeSink {
    writer: Rc<RefCell<LakeWriter>>,
    failure: Rc<RefCell<Option<SinkError>>>,
    shared: Arc<Shared>,
    /// The restored current versions, sent to the arrangement at time 0 and not written again.
    restored: Vec<(u128, Tracked)>,
}

/// Versions -> the worker's part files, and -> upserts keyed by path id, at the time they travel
/// at, for the current-versions arrangement (so that no version is copied for two consumers).
///
/// Parts are closed at the commit epochs the clock requests: before the first row of a later
/// epoch, and when the input frontier passes the commit epoch. The operator holds its capability
/// until then, so that nothing downstream sees an epoch complete before its parts are closed,
/// and it keeps it for good after a write failure, so that nothing after it is committed.
fn write_lake<'scope>(
    versions: StreamVec<'scope, u64, (u128, FileVersion)>,
    sink: LakeSink,
) -> StreamVec<'scope, u64, (u128, Option<Tracked>, u64)> {
    versions.unary_frontier::<CapacityContainerBuilder<Vec<(u128, Option<Tracked>, u64)>>, _, _, _>(
        PipelinePact,
        "LakeWriter",
        move |capability, _info| {
            let LakeSink {
                writer,
                failure,
                shared,
                restored,
            } = sink;
            let mut dirs = DirKeys::new(shared.plan.dir_depth);
            let clock = shared.plan.clock.clone();
            let progress = shared.plan.progress.clone();
            let mut restored = Some(restored);
            let mut capability = Some(capability);
            move |(input, frontier), output| {
                if let (Some(cap), Some(restored)) = (capability.as_ref(), restored.take()) {
                    let mut session = output.session(cap);
                    for (id, tracked) in restored {
                        session.give((id, Some(tracked), 0));
                    }
                }
                let fail = |error: SinkError| {
                    tracing::error!(error = %error, "lake write failed");
                    progress.error(ErrorKind::LakeWrite);
                    shared.abort.store(true, Ordering::Release);
                    failure.borrow_mut().get_or_insert(error);
                };
                let mut writer = writer.borrow_mut();
                input.for_each(|time, data| {
                    let at = *time.least().expect("a message has a time");
                    let epoch = epoch_of(at);
                    if failure.borrow().is_none()
                        && must_close(&writer, &clock, epoch)
                        && let Err(error) = writer.close_parts()
                    {
                        fail(error);
                    }
                    let mut session = output.session(&time);
                    shared
                        .rows_written
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    for (id, v) in data.drain(..) {
                        session.give((id, Tracked::of(&v, &mut dirs), at));
                        if failure.borrow().is_none() {
                            let (deleted, skip) = (v.deleted, v.skip_reason);
                            match writer.push(v) {
                                Ok(()) => progress.written(deleted, skip),
                                Err(error) => fail(error),
                            }
                        }
                    }
                });
                if failure.borrow().is_some() {
                    return; // the capability stays where it is
                }
                let Some(cap) = capability.as_mut() else {
                    return;
                };
                match frontier.frontier().first() {
                    Some(&t) => {
                        let complete = epoch_of(t).checked_sub(1);
                        let close =
                            complete.is_some_and(|done| must_close(&writer, &clock, done + 1));
                        if close && let Err(error) = writer.close_parts() {
                            fail(error);
                            return;
                        }
                        if t > *cap.time() {
                            cap.downgrade(&t);
                        }
                    }
                    None => {
                        if let Err(error) = writer.close_parts() {
                            fail(error);
                            return;
                        }
                        capability = None;
                    }
                }
            }
        },
    )
}

/// Whether the open parts must be closed before rows of `epoch`: a commit was requested at or
/// after their last epoch and before `epoch`.
fn must_close(writer: &LakeWriter, clock: &EpochClock, epoch: u64) -> bool {
    match writer.open_epochs() {
        Some((_, last)) if last < epoch => clock
            .commit_at_or_before(epoch - 1)
            .is_some_and(|c| c >= last),
        _ => false,
    }
}

/// Statistic changes and near-duplicate memberships -> one worker, which applies each epoch's
/// changes once the epoch is complete and commits at the requested epochs (see [`Committer`]).
/// It holds one consolidated value per statistic (and membership) and open epoch.
fn write_stats<'scope>(
    changes: Stream<'scope, u64, Vec<(StatKey, u64, isize)>>,
    memberships: Stream<'scope, u64, Vec<(Membership, u64, isize)>>,
    committer: Rc<RefCell<Committer>>,
    failure: Rc<RefCell<Option<SinkError>>>,
    shared: Arc<Shared>,
    latency: Option<Arc<LatencyRecorder>>,
) -> StreamVec<'scope, u64, ()> {
    changes.binary_frontier::<_, CapacityContainerBuilder<Vec<()>>, _, _, _, _>(
        memberships,
        Exchange::new(|_: &(StatKey, u64, isize)| 0u64),
        Exchange::new(|_: &(Membership, u64, isize)| 0u64),
        "StatsWriter",
        move |_capability, _info| {
            let mut pending: BTreeMap<u64, EpochChanges> = BTreeMap::new();
            move |(input, frontier), (clusters, cluster_frontier), _output| {
                input.for_each(|_capability, data| {
                    for (key, time, diff) in data.drain(..) {
                        let epoch = pending.entry(epoch_of(time)).or_default();
                        *epoch.stats.entry(key).or_default() += diff as i64;
                    }
                });
                clusters.for_each(|_capability, data| {
                    for (membership, time, diff) in data.drain(..) {
                        let epoch = pending.entry(epoch_of(time)).or_default();
                        *epoch.memberships.entry(membership).or_default() += diff as i64;
                    }
                });
                // Times are totally ordered: the least of the two frontiers.
                let first = [frontier, cluster_frontier]
                    .into_iter()
                    .filter_map(|f| f.frontier().first().copied())
                    .min();
                let complete = match first {
                    Some(t) => epoch_of(t).checked_sub(1),
                    None => Some(u64::MAX),
                };
                let mut committer = committer.borrow_mut();
                let coordinating =
                    |c: &Committer| !shared.abort.load(Ordering::Acquire) && c.is_coordinator();
                let result = (|| {
                    while let Some(entry) = pending.first_entry() {
                        if complete.is_none_or(|c| *entry.key() > c) {
                            break;
                        }
                        let (epoch, changes) = entry.remove_entry();
                        let stats = committer.publish(epoch, changes.stats);
                        // Commits requested before this epoch first: the open `stats_changes`
                        // part and `stats_current.parquet` must not hold changes past a commit.
                        if epoch > 0 && coordinating(&committer) {
                            committer.restored()?;
                            committer.commit_through(Some(epoch - 1))?;
                        }
                        committer.apply(epoch, stats, changes.memberships)?;
                    }
                    if !coordinating(&committer) {
                        return Ok(());
                    }
                    if complete.is_some() {
                        committer.restored()?;
                    }
                    match first {
                        Some(_) => committer.commit_through(complete),
                        None => committer.finish_run(),
                    }
                })();
                if coordinating(&committer) {
                    committer.processed_through(complete);
                }
                if let Err(error) = result {
                    tracing::error!(error = %error, "commit failed");
                    shared.plan.progress.error(ErrorKind::Commit);
                    shared.abort.store(true, Ordering::Release);
                    failure.borrow_mut().get_or_insert(error);
                }
                if let Some(latency) = &latency {
                    // Every epoch the frontier has passed is reflected in the live statistics.
                    if let Some(c) = complete {
                        latency.reflected_through(c.min(u64::MAX - 1));
                    }
                }
            }
        },
    )
}

/// One open epoch's changes, consolidated.
#[derive(Default)]
struct EpochChanges {
    stats: FxHashMap<StatKey, i64>,
    memberships: FxHashMap<Membership, i64>,
}
