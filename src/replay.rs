//! `exoflow replay`: snapshots of a tree (directories or archives) -> source thread -> the dataflow -> a
//! lake, and the summary.

use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::api::live::Live;
use crate::cluster::{self, ClusterError, ClusterSpec};
use crate::dataflow::commit::ReplayPlan;
use crate::dataflow::{self, GraphError, GraphPlan};
use crate::epochs::EpochClock;
use crate::kernels::KernelStage;
use crate::kernels::device::Device;
use crate::pipeline::Pipeline;
use crate::progress::{Progress, ProgressDisplay};
use crate::sink::SinkReport;
use crate::sink::commit::LakeError;
use crate::sink::compact::AutoCompact;
use crate::sink::restore::open_for_run;
use crate::source::archive::{ArchiveOptions, is_archive, read_archive};
use crate::source::walk::{WalkOptions, check_outside_lake, walk};
use crate::source::{SourceError, default_source_name};
use crate::version::SkipReason;

/// What to replay and how.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Successive snapshots of one tree: directories or archives.
    pub paths: Vec<PathBuf>,
    pub lake: PathBuf,
    pub pipeline: Pipeline,
    /// Where the kernels run.
    pub device: Device,
    pub workers: usize,
    /// Source name; by default the base name of the first path without archive suffixes.
    pub source: Option<String>,
    pub strip_components: usize,
    pub no_ignore: bool,
    pub progress_bar: bool,
    /// Commit at least this often, so that a replay killed part way resumes from there.
    pub commit_interval: Duration,
    /// See [`GraphPlan::checkpoint_rows`].
    pub checkpoint_rows: u64,
    /// See [`GraphPlan::auto_compact`].
    pub auto_compact: Option<AutoCompact>,
    /// Set by Ctrl-C or SIGTERM: the replay stops where it is and commits what is complete.
    pub stop: Option<Arc<AtomicBool>>,
    /// Where the live statistics and the run's counters are published for a server.
    pub live: Option<Arc<Live>>,
    /// This process's place in a cluster of processes that run one dataflow; None: alone.
    pub cluster: Option<ClusterSpec>,
}

/// Why a replay could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// An input is missing or of the wrong kind: nothing was done.
    #[error(transparent)]
    Input(SourceError),
    /// The lake cannot be opened for this run: nothing was done.
    #[error(transparent)]
    Lake(LakeError),
    /// The cluster could not form: nothing was done.
    #[error(transparent)]
    Cluster(ClusterError),
    #[error(transparent)]
    Graph(#[from] GraphError),
}

/// The result of a replay that ran.
#[derive(Debug)]
pub struct ReplaySummary {
    pub source: String,
    pub lake: PathBuf,
    pub epochs: RangeInclusive<u64>,
    pub workers: usize,
    /// The kernel backend that ran, like `cpu`.
    pub kernels: String,
    pub elapsed: Duration,
    /// Files read and featurized, changed or not.
    pub observed_files: u64,
    pub observed_bytes: u64,
    pub report: SinkReport,
    pub rule_ids: Vec<String>,
    /// A source failure part way (a corrupt archive): nothing of the failed snapshot was
    /// committed; the snapshots before it were.
    pub source_error: Option<SourceError>,
    /// The run was stopped (Ctrl-C, SIGTERM) before its last snapshot was complete.
    pub interrupted: bool,
    /// Paths restored from the lake's committed state, and the rows read for them.
    pub restored_paths: usize,
    pub restored_rows: u64,
    /// Snapshots an earlier, interrupted run of the same replay had committed, and this one
    /// skipped.
    pub resumed_after: usize,
    /// Snapshots this run replayed.
    pub snapshots: usize,
    /// The near-duplicate line, when the pipeline finds them.
    pub near_duplicates: Option<String>,
    /// (this process, processes) of a cluster: the files read are this process's, the rows
    /// written those of the paths its workers own.
    pub cluster: Option<(usize, usize)>,
}

/// How the source thread ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Complete,
    Interrupted,
}

/// One input, checked before anything starts.
#[derive(Debug, Clone)]
enum Input {
    Directory(PathBuf),
    Archive(PathBuf),
}

fn check_input(path: &Path) -> Result<Input, SourceError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(Input::Directory(path.to_path_buf())),
        Ok(m) if m.is_file() && is_archive(path) => Ok(Input::Archive(path.to_path_buf())),
        Ok(_) => Err(SourceError::NotReplayable {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(SourceError::Open {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Runs a replay: snapshot i of `paths` is the complete tree at epoch `first + i`.
pub fn replay(options: ReplayOptions) -> Result<ReplaySummary, ReplayError> {
    let started = Instant::now();
    let inputs = options
        .paths
        .iter()
        .map(|p| check_input(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ReplayError::Input)?;
    for input in &inputs {
        if let Input::Directory(dir) = input {
            check_outside_lake(dir, &options.lake).map_err(ReplayError::Input)?;
        }
    }
    let first_path = options.paths.first().ok_or_else(|| {
        ReplayError::Input(SourceError::NotReplayable {
            path: PathBuf::new(),
        })
    })?;
    let source = options
        .source
        .clone()
        .unwrap_or_else(|| default_source_name(first_path));
    let peer = options.cluster.as_ref().is_some_and(|c| !c.is_first());
    let (lake, restored) =
        open_for_run(&options.lake, &options.pipeline, peer).map_err(ReplayError::Lake)?;
    let workers = options.workers.max(1);
    let (restored_paths, restored_rows) = (restored.versions.len(), restored.rows_read);
    let given: Vec<String> = options
        .paths
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    // The same replay, interrupted after some of its snapshots were committed: skip those. A
    // finished one is continued from its last snapshot, which changes what changed since.
    let resumed_after = (lake.head().iter())
        .flat_map(|h| h.replays())
        .find(|r| r.source == source && r.inputs == given)
        .map_or(0, |r| r.done.min(given.len() - 1));
    let replay_plan = ReplayPlan {
        source: source.clone(),
        inputs: given,
        skipped: resumed_after,
    };
    let cluster = cluster::join(
        (options.cluster.clone()).map(|c| c.stopped_by(options.stop.clone())),
        "replay",
        workers,
        &options.pipeline,
        &lake,
        vec![source.clone()],
        Some(replay_plan.clone()),
    )
    .map_err(ReplayError::Cluster)?;
    let snapshots = inputs.len() - resumed_after;
    let first_epoch = lake.committed() + 1;
    let clock = Arc::new(EpochClock::new(first_epoch, Some(options.commit_interval)));
    if let Some(stop) = &options.stop {
        clock.stop_on(stop.clone());
    }
    let progress = match &options.live {
        Some(live) => live.progress.clone(),
        None => Arc::new(Progress::default()),
    };
    let display = ProgressDisplay::start(progress.clone(), options.progress_bar);
    let rule_ids = (0..options.pipeline.rules.len() as u32)
        .map(|i| options.pipeline.rules.id(i).to_string())
        .collect();

    let (sender, receiver) = crossbeam_channel::bounded(dataflow::EVENT_QUEUE);
    let source_thread = std::thread::spawn({
        let source = source.clone();
        let clock = clock.clone();
        let max_file_bytes = options.pipeline.max_file_bytes;
        let (strip_components, no_ignore) = (options.strip_components, options.no_ignore);
        let lake = options.lake.clone();
        move || {
            for input in inputs.into_iter().skip(resumed_after) {
                if clock.stopped() {
                    return Ok(Ended::Interrupted);
                }
                let first = clock.open();
                // An archive's members can be checked only once it is read to its end (the
                // checksum of a compressed stream is in its trailer): it commits whole.
                let archive = matches!(input, Input::Archive(_));
                clock.hold_rolls(archive);
                let result = match &input {
                    Input::Archive(path) => {
                        let archive_options = ArchiveOptions {
                            strip_components,
                            max_file_bytes,
                            no_ignore,
                        };
                        read_archive(path, &source, &clock, &archive_options, &sender).map(|_| ())
                    }
                    Input::Directory(path) => {
                        let walk_options = WalkOptions {
                            no_ignore,
                            threads: workers,
                            lake: Some(lake.clone()),
                        };
                        walk(path, &source, &clock, &walk_options, &sender).map(|_| ())
                    }
                };
                clock.hold_rolls(false);
                if let Err(error) = result {
                    // A failed snapshot is not complete: nothing of it is committed, so it
                    // neither deletes nor changes anything.
                    clock.abandon_from(first);
                    return Err(error);
                }
                if clock.stopped() {
                    // An interrupted directory walk read every file it sent correctly: those
                    // are committed, and since the snapshot is not complete, nothing is deleted.
                    // An interrupted archive was not verified: nothing of it is committed.
                    if archive {
                        clock.abandon_from(first);
                    } else {
                        clock.seal(true, &[]);
                    }
                    return Ok(Ended::Interrupted);
                }
                clock.seal(true, &[(&source, first)]);
            }
            Ok::<Ended, SourceError>(Ended::Complete)
        }
    });
    let near_duplicates = options.pipeline.near_duplicates.is_some();
    let plan = GraphPlan {
        lake,
        workers,
        max_file_bytes: options.pipeline.max_file_bytes,
        dir_depth: options.pipeline.dir_depth,
        clock: clock.clone(),
        restored,
        replay: Some(replay_plan),
        checkpoint_rows: options.checkpoint_rows,
        auto_compact: options.auto_compact,
        stage: Arc::new(KernelStage::new(options.device.backend(), options.pipeline)),
        progress: progress.clone(),
        latency: None,
        live: options.live.clone(),
        cluster,
    };
    let kernels = options.device.description();
    let graph = dataflow::run(plan, receiver);
    let source_result = source_thread
        .join()
        .unwrap_or_else(|_| panic!("the source thread panicked"));
    display.finish();
    let report = graph?;
    let (interrupted, source_error) = match source_result {
        // A signal that came after the last snapshot was read still stopped nothing: the run
        // finished its work, but says that it was interrupted.
        Ok(ended) => (ended == Ended::Interrupted || clock.stopped(), None),
        Err(error) => (false, Some(error)),
    };
    let near_duplicates = near_duplicates
        .then(|| crate::query::near_duplicates_summary(&options.lake))
        .flatten();
    Ok(ReplaySummary {
        source,
        lake: options.lake,
        epochs: first_epoch..=clock.last().max(first_epoch),
        workers,
        kernels,
        elapsed: started.elapsed(),
        observed_files: progress.files(),
        observed_bytes: progress.bytes(),
        report,
        rule_ids,
        source_error,
        interrupted,
        restored_paths,
        restored_rows,
        resumed_after,
        snapshots,
        near_duplicates,
        cluster: options.cluster.as_ref().map(|c| (c.process, c.processes())),
    })
}

impl fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.report;
        let secs = self.elapsed.as_secs_f64().max(1e-6);
        let snapshots = self.snapshots;
        if let Some((process, processes)) = self.cluster {
            writeln!(
                f,
                "process {process} of a cluster of {processes}: files read from this process's source; rows written for the paths its workers own"
            )?;
        }
        writeln!(
            f,
            "replayed {} snapshot{} of '{}': {} files, {} in {:.2} s ({:.0} files/s, {:.1} MB/s), {} workers",
            snapshots,
            if snapshots == 1 { "" } else { "s" },
            self.source,
            self.observed_files,
            crate::progress::human_bytes(self.observed_bytes),
            secs,
            self.observed_files as f64 / secs,
            self.observed_bytes as f64 / 1e6 / secs,
            self.workers,
        )?;
        writeln!(f, "kernels: {}", self.kernels)?;
        if self.interrupted {
            writeln!(
                f,
                "interrupted: what was read is committed; a snapshot cut short deletes nothing"
            )?;
        }
        if self.resumed_after > 0 {
            writeln!(
                f,
                "resumed after snapshot {} (committed by an earlier run)",
                self.resumed_after
            )?;
        }
        if self.restored_paths > 0 {
            writeln!(
                f,
                "continued from the lake's committed state: {} tracked paths ({} rows read)",
                self.restored_paths, self.restored_rows
            )?;
        }
        match self.cluster {
            // What this process read and what it wrote are different paths.
            Some(_) => writeln!(
                f,
                "changes: {} upserts, {} deletes, epochs {}..={}",
                r.files,
                r.deleted,
                self.epochs.start(),
                self.epochs.end(),
            )?,
            None => writeln!(
                f,
                "changes: {} upserts, {} deletes, {} unchanged, epochs {}..={}",
                r.files,
                r.deleted,
                self.observed_files.saturating_sub(r.files),
                self.epochs.start(),
                self.epochs.end(),
            )?,
        }
        let skipped: Vec<String> = SkipReason::ALL
            .iter()
            .zip(r.skipped)
            .filter(|(_, n)| *n > 0)
            .map(|(reason, n)| format!("{} {n}", reason.as_str()))
            .collect();
        if skipped.is_empty() {
            writeln!(f, "skipped: none")?;
        } else {
            writeln!(f, "skipped: {}", skipped.join(", "))?;
        }
        let mut top: Vec<(usize, u64)> = r
            .rule_matches
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, n)| *n > 0)
            .collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        if top.is_empty() {
            writeln!(f, "top rules: no matches")?;
        } else {
            let shown: Vec<String> = top
                .iter()
                .take(5)
                .map(|&(i, n)| format!("{} {n} in {} files", self.rule_ids[i], r.rule_files[i]))
                .collect();
            writeln!(f, "top rules: {}", shown.join("; "))?;
        }
        write!(
            f,
            "lake {}: files {} rows, file_rules {} rows, matches {} rows, {} part files",
            self.lake.display(),
            r.rows_files,
            r.rows_file_rules,
            r.rows_matches,
            r.parts.len()
        )?;
        match &self.near_duplicates {
            Some(line) => write!(f, "\n{line}"),
            None => Ok(()),
        }
    }
}
