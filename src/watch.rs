//! `exoflow watch`: live directories -> watcher thread -> the dataflow -> a lake committed every commit
//! interval, until Ctrl-C or SIGTERM; then a final commit and the summary.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::dataflow::reconcile::Epochs;
use crate::dataflow::{self, GraphError, GraphPlan};
use crate::kernels::KernelStage;
use crate::kernels::cpu::CpuBackend;
use crate::latency::{LatencyRecorder, LatencySummary, log_periodically};
use crate::pipeline::Pipeline;
use crate::progress::Progress;
use crate::replay::next_epoch;
use crate::sink::SinkReport;
use crate::source::SourceError;
use crate::source::watch::{WatchControl, WatchOptions, WatchRoot, watch};

/// What to watch and how.
#[derive(Debug, Clone)]
pub struct WatchRun {
    pub roots: Vec<WatchRoot>,
    pub lake: PathBuf,
    pub pipeline: Pipeline,
    pub workers: usize,
    pub options: WatchOptions,
    pub commit_interval: Duration,
}

/// Why watching failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Source(SourceError),
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
}

/// Watches until `stop` is set, then drains, commits and returns.
pub fn run(config: WatchRun, stop: Arc<AtomicBool>) -> Result<WatchSummary, WatchError> {
    let started = Instant::now();
    let first_epoch = next_epoch(&config.lake);
    let latency = Arc::new(LatencyRecorder::default());
    let control = Arc::new(WatchControl {
        latency: latency.clone(),
        stop: stop.clone(),
        ..WatchControl::default()
    });
    control.sealed.store(first_epoch - 1, Ordering::Release);
    let progress = Arc::new(Progress::default());
    let (sender, receiver) = crossbeam_channel::bounded(dataflow::EVENT_QUEUE);
    let watcher = std::thread::spawn({
        let control = control.clone();
        let (roots, options) = (config.roots.clone(), config.options.clone());
        move || watch(&roots, &options, first_epoch, &control, &sender)
    });
    let logger = log_periodically(latency.clone(), Duration::from_secs(10), stop.clone());
    let plan = GraphPlan {
        lake: config.lake.clone(),
        workers: config.workers.max(1),
        max_file_bytes: config.pipeline.max_file_bytes,
        dir_depth: config.pipeline.dir_depth,
        epochs: Epochs::Events,
        sealed: control.sealed.clone(),
        stage: Arc::new(KernelStage::new(Box::new(CpuBackend), config.pipeline)),
        progress: progress.clone(),
        commit_interval: Some(config.commit_interval),
        latency: Some(latency.clone()),
    };
    // The graph runs until the watcher stops (on `stop`, or failing) and hangs up.
    let graph = dataflow::run(plan, receiver);
    stop.store(true, Ordering::Relaxed);
    let watched = watcher
        .join()
        .unwrap_or_else(|_| panic!("the watcher panicked"));
    let _ = logger.join();
    let report = graph?;
    let watched = watched.map_err(WatchError::Source)?;
    Ok(WatchSummary {
        elapsed: started.elapsed(),
        observed_files: progress.files(),
        report,
        rescans: watched.rescans,
        latency: latency.summary(),
        lake: config.lake,
    })
}

impl fmt::Display for WatchSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "watched for {:.1} s: {} files read, {} upserts and {} deletes written, {} rescans",
            self.elapsed.as_secs_f64(),
            self.observed_files,
            self.report.files,
            self.report.deleted,
            self.rescans
        )?;
        writeln!(f, "{}", self.latency)?;
        write!(
            f,
            "lake {}: files {} rows, file_rules {} rows, matches {} rows",
            self.lake.display(),
            self.report.rows_files,
            self.report.rows_file_rules,
            self.report.rows_matches
        )
    }
}
