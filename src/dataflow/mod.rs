//! The timely graph: FileEvents -> read, batch and kernels on the worker that took the event ->
//! versions exchanged by hash(path) -> only the changes (reconcile, on the worker that owns the
//! path) -> the lake writer, and -> the differential
//! collection of current versions (upsert by path) -> statistics -> the statistics writer.
//!
//! One operator a file: [`featurize`], [`reconcile`], [`write_lake`], the current-versions
//! arrangement ([`upsert`]), [`stats`], [`near_dup`], and [`write_stats`], which drives the commit
//! coordinator ([`commit`]). [`input`] is the worker's input loop and its flow control, [`time`]
//! the encoding of epochs in timely time. The lake and the statistics tables are written per
//! epoch and committed at the epochs the source asks for. Memory is bounded by admitting at most
//! [`MAX_EVENTS_IN_FLIGHT`] events (and the clock's budget of inline bytes) between the source
//! and the kernel stage, released as the kernel stage's output frontier passes their times: a
//! source waits for the workers, never the other way round.

pub mod commit;
pub mod control;
mod featurize;
mod input;
pub mod near_dup;
pub mod reconcile;
pub mod stats;
pub mod time;
pub mod upsert;
mod write_lake;
mod write_stats;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::Receiver;
use differential_dataflow::AsCollection;
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use timely::dataflow::channels::pact::Pipeline as PipelinePact;
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandleVec, ProbeHandle};

use self::commit::{CheckpointPolicy, CommitPlan, Committer, ReplayPlan};
use self::control::{Control, highest_sealed};
use self::featurize::featurize;
use self::input::ControlInput;
pub use self::input::MAX_EVENTS_IN_FLIGHT;
use self::near_dup::{Membership, near_duplicates};
use self::reconcile::reconcile;
use self::stats::{Changes, Current, StatKey, Tracked, all_stats, arrange_by_epoch};
pub use self::time::{epoch_end, epoch_of, epoch_start};
use self::upsert::arrange_upserts;
use self::write_lake::{LakeSink, write_lake};
use self::write_stats::write_stats;
use crate::api::live::Live;
use crate::cluster::Cluster;
use crate::epochs::EpochClock;
use crate::kernels::KernelStage;
use crate::latency::LatencyRecorder;
use crate::pipeline::NearDuplicates;
use crate::progress::Progress;
use crate::sink::commit::Lake;
use crate::sink::compact::AutoCompact;
use crate::sink::restore::LakeState;
use crate::sink::stats::StatsWriter;
use crate::sink::{LakeWriter, SinkError, SinkReport};
use crate::source::FileEvent;
use crate::version::FileVersion;

/// Events buffered between a source and the workers: when full, the source waits.
pub const EVENT_QUEUE: usize = 4096;
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
    /// What the commit records say of the replays' progress: this process's, if it replays
    /// (a cluster's other processes add theirs from their hellos).
    pub replay: Option<ReplayPlan>,
    /// A checkpoint is written once this many `files` rows (and at least as many as there are
    /// tracked paths) were committed after the last one.
    pub checkpoint_rows: u64,
    /// When the running writer compacts its tables in the background; None: never.
    pub auto_compact: Option<AutoCompact>,
    /// Where the commit coordinator publishes the live statistics, when a server reads them.
    pub live: Option<Arc<Live>>,
    /// The other processes of the dataflow, connected; None: this process alone.
    pub cluster: Option<Cluster>,
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
    let cluster = plan.cluster.take();
    let replays: Vec<ReplayPlan> = (plan.replay.iter().cloned())
        .chain(cluster.iter().flat_map(Cluster::peer_replays))
        .collect();
    // Any worker may send a restored version: the exchange takes it to its path's owner.
    let mut shares: Vec<Vec<FileVersion>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, version) in std::mem::take(&mut plan.restored.versions)
        .into_iter()
        .enumerate()
    {
        shares[i % workers].push(version);
    }
    let shared = Arc::new(Shared {
        plan,
        abort: AtomicBool::new(false),
        restored: shares.into_iter().map(|s| Mutex::new(Some(s))).collect(),
        restored_rows,
        restored_parts,
        replays,
    });
    // However the graph ends, a source waiting for it to take its members must not wait for
    // good.
    let inline_guard = CloseInline(shared.plan.clock.clone());
    let guards = match cluster {
        Some(cluster) => cluster.execute(workers, move |worker| {
            let run = std::panic::AssertUnwindSafe(|| run_worker(worker, &shared, &events));
            match std::panic::catch_unwind(run) {
                Ok(result) if shared.abort.load(Ordering::Acquire) => exit_failed_member(&result),
                Ok(result) => result,
                // The panic was reported by the hook.
                Err(_) => exit_failed_member(&Ok(SinkReport::default())),
            }
        }),
        None => timely::execute(timely::Config::process(workers), move |worker| {
            run_worker(worker, &shared, &events)
        }),
    }
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

/// A process of a cluster whose run failed here (a write failed, a worker panicked) cannot let
/// the dataflow finish, and its peers would wait for it for good: it says why and exits with
/// code 1 at once, which closes its connections, so that every peer stops as for a lost process.
/// Nothing past the last commit was committed. A worker without an error of its own leaves the
/// report to the one that failed, unless that one never gets to it.
fn exit_failed_member(result: &Result<SinkReport, SinkError>) -> ! {
    match result {
        Err(error) => {
            let mut chain = format!("lake write failed: {error}");
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                chain.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("error: {chain}");
        }
        Ok(_) => {
            std::thread::sleep(std::time::Duration::from_secs(1));
            eprintln!("error: a worker of this process failed (see above)");
        }
    }
    std::process::exit(1)
}

/// What every worker shares.
struct Shared {
    plan: GraphPlan,
    /// Set when a worker failed: the others stop, and nothing more is committed.
    abort: AtomicBool,
    /// Each of this process's workers' share of the restored versions, which it sends.
    restored: Vec<Mutex<Option<Vec<FileVersion>>>>,
    restored_rows: u64,
    restored_parts: u64,
    /// Every replay of the run, for the commit records.
    replays: Vec<ReplayPlan>,
}

/// One worker: builds its graph, feeds it the events it takes from the source, then runs it to
/// the end (or stops it on a failure) and returns what its lake writers wrote.
fn run_worker(
    worker: &mut timely::worker::Worker,
    shared: &Arc<Shared>,
    events: &Receiver<FileEvent>,
) -> Result<SinkReport, SinkError> {
    // A worker that panics stops the others: its share of the events would never be processed.
    let _abort_on_panic = AbortOnPanic(&shared.abort);
    let Graph {
        mut input,
        restore,
        control,
        featurized,
        sealed_anywhere,
        writer,
        committer,
        failure,
    } = build(worker, shared);
    send_restored(restore, shared, worker.index());
    input::feed(
        worker,
        &mut input,
        control,
        input::Signals {
            featurized: &featurized,
            sealed_anywhere: &sealed_anywhere,
        },
        shared,
        events,
        || failure.borrow().is_some(),
    );
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

/// A worker's graph: its input, and what its operators share with the worker.
struct Graph {
    input: InputHandleVec<u64, FileEvent>,
    /// The restored versions' input, at time 0.
    restore: InputHandleVec<u64, FileVersion>,
    /// The control records' input, on the worker that sends them (the first).
    control: Option<ControlInput>,
    /// The featurize stage's output: the input loop's flow control.
    featurized: ProbeHandle<u64>,
    /// The highest epoch any process sealed, from the control records.
    sealed_anywhere: Rc<Cell<u64>>,
    writer: Rc<RefCell<LakeWriter>>,
    committer: Rc<RefCell<Committer>>,
    /// The first write failure of an operator of this worker.
    failure: Rc<RefCell<Option<SinkError>>>,
}

/// Builds the worker's graph over its share of the restored state.
fn build(worker: &mut timely::worker::Worker, shared: &Arc<Shared>) -> Graph {
    let plan = &shared.plan;
    let index = worker.index();
    let rules = plan.stage.rules().clone();
    let root = plan.lake.root().to_path_buf();
    let writer = Rc::new(RefCell::new(LakeWriter::new(&root, index, rules.clone())));
    let commits = CommitPlan {
        lake: plan.lake.clone(),
        stats: StatsWriter::new(&root, index, rules.clone()),
        rules,
        replays: shared.replays.clone(),
        policy: CheckpointPolicy {
            min_rows: plan.checkpoint_rows,
            rows_before: shared.restored_rows,
            parts_before: shared.restored_parts,
        },
        auto_compact: plan.auto_compact,
    };
    let committer = Rc::new(RefCell::new(Committer::new(
        index == 0,
        commits,
        plan.live.clone(),
    )));
    let failure: Rc<RefCell<Option<SinkError>>> = Rc::new(RefCell::new(None));
    let mut input = InputHandleVec::<u64, FileEvent>::new();
    let mut restore = InputHandleVec::<u64, FileVersion>::new();
    let mut control = InputHandleVec::<u64, Control>::new();
    let featurized = ProbeHandle::new();
    let sealed_anywhere = Rc::new(Cell::new(0));
    worker.dataflow::<u64, _, _>(|scope| {
        let events = input.to_stream(scope);
        let controls = control.to_stream(scope);
        highest_sealed(controls.clone(), sealed_anywhere.clone());
        let observed = featurize(events, shared.clone()).probe_with(&featurized);
        let restored = restore.to_stream(scope);
        let changes = reconcile(observed, controls.clone(), restored);
        let sink = LakeSink {
            writer: writer.clone(),
            failure: failure.clone(),
            shared: shared.clone(),
        };
        let upserts = write_lake(changes, sink);
        // The upserts come from the worker that owns their path: no exchange.
        let current = arrange_upserts::<
            ValBuilder<u128, Tracked, u64, isize>,
            ValSpine<u128, Tracked, u64, isize>,
            u128,
            Tracked,
            _,
        >(upserts, PipelinePact, "CurrentVersions");
        let (stats, memberships) = statistics(current, plan.stage.pipeline().near_duplicates);
        let latency = plan.latency.clone().filter(|_| index == 0);
        let (committer, failure) = (committer.clone(), failure.clone());
        write_stats(
            stats,
            memberships,
            controls,
            committer,
            failure,
            shared.clone(),
            latency,
        );
    });
    Graph {
        input,
        restore,
        // Each process's first worker sends its clock's records; the other workers' control
        // inputs are closed at once.
        control: index
            .is_multiple_of(plan.workers.max(1))
            .then(|| ControlInput::new(control)),
        featurized,
        sealed_anywhere,
        writer,
        committer,
        failure,
    }
}

/// The statistics of the current versions, and the near-duplicate memberships when the
/// pipeline finds them, each arranged by key into one change per key and epoch.
fn statistics<'scope>(
    current: Current<'scope>,
    near: Option<NearDuplicates>,
) -> (Changes<'scope, StatKey>, Changes<'scope, Membership>) {
    let scope = current.stream.scope();
    let (stats, memberships) = match near {
        Some(params) => {
            let (near, memberships) = near_duplicates(current.clone(), params);
            (all_stats(current).concat(near), memberships)
        }
        None => (
            all_stats(current),
            timely::dataflow::operators::generic::operator::empty(scope).as_collection(),
        ),
    };
    (
        arrange_by_epoch(stats, "Statistics"),
        arrange_by_epoch(memberships, "NearDuplicateMemberships"),
    )
}

/// Sends this worker's share of the restored versions at time 0, and closes their input.
fn send_restored(mut restore: InputHandleVec<u64, FileVersion>, shared: &Shared, index: usize) {
    let share = shared.restored[index % shared.restored.len()]
        .lock()
        .expect("restored lock")
        .take()
        .unwrap_or_default();
    for version in share {
        restore.send(version);
    }
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
