//! `exoflow watch`: live directories -> watcher thread -> the dataflow -> a lake committed every commit
//! interval, until Ctrl-C or SIGTERM; then a final commit and the summary.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::api::live::Live;
use crate::cluster::{self, ClusterError, ClusterSpec};
use crate::dataflow::{self, GraphError, GraphPlan};
use crate::epochs::EpochClock;
use crate::kernels::KernelStage;
use crate::kernels::device::Device;
use crate::latency::{LatencyRecorder, LatencySummary, log_periodically};
use crate::pipeline::Pipeline;
use crate::progress::Progress;
use crate::sink::SinkReport;
use crate::sink::commit::LakeError;
use crate::sink::restore::open_for_run;
use crate::source::SourceError;
use crate::source::walk::check_outside_lake;
use crate::source::watch::{WatchControl, WatchOptions, WatchRoot, watch};

/// What to watch and how.
#[derive(Debug, Clone)]
pub struct WatchRun {
    pub roots: Vec<WatchRoot>,
    pub lake: PathBuf,
    pub pipeline: Pipeline,
    /// Where the kernels run.
    pub device: Device,
    pub workers: usize,
    pub options: WatchOptions,
    pub commit_interval: Duration,
    /// See [`GraphPlan::checkpoint_rows`].
    pub checkpoint_rows: u64,
    /// See [`GraphPlan::auto_compact`].
    pub auto_compact: Option<crate::sink::compact::AutoCompact>,
    /// Where the live statistics and the run's counters are published for a server.
    pub live: Option<Arc<Live>>,
    /// This process's place in a cluster of processes that run one dataflow; None: alone.
    pub cluster: Option<ClusterSpec>,
}

/// Why watching failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// A directory cannot be watched into this lake (it is the lake, or inside it): nothing was
    /// done.
    #[error(transparent)]
    Input(SourceError),
    #[error(transparent)]
    Source(SourceError),
    /// The lake cannot be opened for this run: nothing was done.
    #[error(transparent)]
    Lake(LakeError),
    /// The cluster could not form: nothing was done.
    #[error(transparent)]
    Cluster(ClusterError),
    #[error(transparent)]
    Graph(#[from] GraphError),
}

/// The result of a watch that stopped cleanly.
#[derive(Debug)]
pub struct WatchSummary {
    pub elapsed: Duration,
    pub observed_files: u64,
    pub report: SinkReport,
    pub rescans: u64,
    pub latency: LatencySummary,
    pub lake: PathBuf,
    /// Paths restored from the lake's committed state.
    pub restored_paths: usize,
    /// The near-duplicate line, when the pipeline finds them.
    pub near_duplicates: Option<String>,
    /// The kernel backend that ran, like `cpu`.
    pub kernels: String,
    /// (this process, processes) of a cluster: the files read are this process's, the rows
    /// written those of the paths its workers own.
    pub cluster: Option<(usize, usize)>,
}

/// Watches until `stop` is set, then drains, commits and returns.
pub fn run(config: WatchRun, stop: Arc<AtomicBool>) -> Result<WatchSummary, WatchError> {
    let started = Instant::now();
    for root in &config.roots {
        check_outside_lake(&root.dir, &config.lake).map_err(WatchError::Input)?;
    }
    let peer = config.cluster.as_ref().is_some_and(|c| !c.is_first());
    let (lake, restored) =
        open_for_run(&config.lake, &config.pipeline, peer).map_err(WatchError::Lake)?;
    let cluster = cluster::join(
        (config.cluster.clone()).map(|c| c.stopped_by(Some(stop.clone()))),
        "watch",
        config.workers.max(1),
        &config.pipeline,
        &lake,
        config.roots.iter().map(|r| r.source.clone()).collect(),
        None,
    )
    .map_err(WatchError::Cluster)?;
    let restored_paths = restored.versions.len();
    let progress = match &config.live {
        Some(live) => live.progress.clone(),
        None => Arc::new(Progress::default()),
    };
    let latency = Arc::new(LatencyRecorder::observing(progress.event_latency.clone()));
    let clock = Arc::new(EpochClock::new(lake.committed() + 1, None));
    let control = Arc::new(WatchControl {
        latency: latency.clone(),
        stop: stop.clone(),
        clock: clock.clone(),
        rescans: AtomicU64::new(0),
        progress: progress.clone(),
    });
    let (sender, receiver) = crossbeam_channel::bounded(dataflow::EVENT_QUEUE);
    let watcher = std::thread::spawn({
        let control = control.clone();
        let (roots, mut options) = (config.roots.clone(), config.options.clone());
        options.commit_interval = config.commit_interval;
        // The lake exists now (opening it created it), so every spelling of it resolves.
        let lake = config.lake.clone();
        move || watch(&roots, &lake, &options, &control, &sender)
    });
    let logger = log_periodically(latency.clone(), Duration::from_secs(10), stop.clone());
    let near_duplicates = config.pipeline.near_duplicates.is_some();
    let plan = GraphPlan {
        lake,
        workers: config.workers.max(1),
        max_file_bytes: config.pipeline.max_file_bytes,
        dir_depth: config.pipeline.dir_depth,
        clock,
        restored,
        replay: None,
        checkpoint_rows: config.checkpoint_rows,
        auto_compact: config.auto_compact,
        stage: Arc::new(KernelStage::new(config.device.backend(), config.pipeline)),
        progress: progress.clone(),
        latency: Some(latency.clone()),
        live: config.live.clone(),
        cluster,
    };
    let kernels = config.device.description();
    // The graph runs until the watcher stops (on `stop`, or failing) and hangs up.
    let graph = dataflow::run(plan, receiver);
    stop.store(true, Ordering::Relaxed);
    let watched = watcher
        .join()
        .unwrap_or_else(|_| panic!("the watcher panicked"));
    logger.thread().unpark();
    let _ = logger.join();
    let report = graph?;
    let watched = watched.map_err(WatchError::Source)?;
    Ok(WatchSummary {
        elapsed: started.elapsed(),
        observed_files: progress.files(),
        report,
        rescans: watched.rescans,
        latency: latency.summary(),
        near_duplicates: near_duplicates
            .then(|| crate::query::near_duplicates_summary(&config.lake))
            .flatten(),
        lake: config.lake,
        restored_paths,
        kernels,
        cluster: config.cluster.as_ref().map(|c| (c.process, c.processes())),
    })
}

impl fmt::Display for WatchSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((process, processes)) = self.cluster {
            writeln!(
                f,
                "process {process} of a cluster of {processes}: files read from this process's sources; rows written for the paths its workers own"
            )?;
        }
        writeln!(
            f,
            "watched for {:.1} s: {} tracked paths restored, {} files read, {} upserts and {} deletes written, {} rescans",
            self.elapsed.as_secs_f64(),
            self.restored_paths,
            self.observed_files,
            self.report.files,
            self.report.deleted,
            self.rescans
        )?;
        writeln!(f, "{}", self.latency)?;
        writeln!(f, "kernels: {}", self.kernels)?;
        write!(
            f,
            "lake {}: files {} rows, file_rules {} rows, matches {} rows",
            self.lake.display(),
            self.report.rows_files,
            self.report.rows_file_rules,
            self.report.rows_matches
        )?;
        match &self.near_duplicates {
            Some(line) => write!(f, "\n{line}"),
            None => Ok(()),
        }
    }
}
