//! The commit coordinator: on worker 0, it publishes each complete epoch's statistics to the
//! live snapshot, and once the graph's frontier shows a requested commit epoch complete on every
//! worker (every lake writer has closed its parts for it, see `write_lake`), it hands the commit
//! to a thread of its own, which closes the `stats_changes` part, fsyncs the parts the commit
//! covers (their writers only closed them), writes the commit record, moves those parts into their
//! table directories, then replaces `stats_current.parquet`. The
//! thread does its jobs in the order they were handed over, so the lake sees what it did when
//! the worker wrote it; the dataflow only never waits for the disk. The thread also starts
//! checkpoints in the background and records them in a later commit once they are durable.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::control::{Control, Controls};
use super::near_dup::Membership;
use super::stats::StatKey;
use crate::api::live::{Live, LivePublisher};
use crate::pipeline::RuleSet;
use crate::progress::ErrorKind;
use crate::sink::SinkError;
use crate::sink::commit::{Lake, ReplayProgress};
use crate::sink::compact::{AutoCompact, CompactError, TableCompaction, compact_running};
use crate::sink::restore::{StateRange, load, write_checkpoint};
use crate::sink::stats::StatsWriter;

/// A replay's place in its list of snapshots.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplayPlan {
    pub source: String,
    pub inputs: Vec<String>,
    /// Snapshots committed by earlier runs and skipped by this one.
    pub skipped: usize,
}

/// When to checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointPolicy {
    /// Committed `files` rows after the last checkpoint that trigger the next one (at least twice
    /// as many as there are tracked paths, so that checkpoints cost O(1) per row).
    pub min_rows: u64,
    /// Rows after the last checkpoint that the restore read.
    pub rows_before: u64,
    /// `files` part files after the last checkpoint that the restore read.
    pub parts_before: u64,
}

/// A checkpoint is also written once this many `files` parts were committed after the last one,
/// so that a restart opens a bounded number of files however small the commits.
pub const MAX_PARTS_AFTER_CHECKPOINT: u64 = 256;

/// A checkpoint being written.
struct CheckpointJob {
    epoch: u64,
    handle: JoinHandle<Result<(), SinkError>>,
}

/// Work for the commit thread, in the order the coordinator decided it.
enum Job {
    /// The statistic changes of a complete epoch, and its near-duplicate memberships.
    Apply {
        epoch: u64,
        changes: Vec<(StatKey, i64)>,
        memberships: Vec<(Membership, i64)>,
    },
    /// The restored state is applied.
    Restored,
    /// Commit at this requested epoch, through which these snapshots ended.
    Commit { epoch: u64, snapshots: Ended },
    /// The input is exhausted and every epoch complete: commit at `last` (the run's last epoch
    /// that is not abandoned), through which these snapshots ended.
    FinishRun { last: u64, snapshots: Ended },
}

/// (source, snapshots of it that ended), for each source with snapshots ended.
type Ended = Vec<(String, usize)>;

/// Jobs the commit thread may be behind by. The coordinator waits when it is this far behind:
/// a lake slower than the input holds the input back, and memory stays bounded.
const QUEUED_JOBS: usize = 1024;

/// The commit coordinator on worker 0 (every other worker's does nothing): it publishes each
/// complete epoch's statistics to the live snapshot at once, and hands what touches the lake to
/// a thread of its own, in order, so that the dataflow never waits for a disk.
pub struct Committer {
    coordinator: bool,
    /// What the control records said: the commits requested, the abandoned and last epochs.
    controls: Controls,
    /// Where the live statistics are published for the server, when one runs.
    live: Option<LivePublisher>,
    /// The first epoch of this run: the run is ready once it is processed.
    first_epoch: u64,
    /// The epoch of the last durable commit, as the commit thread stores it.
    committed: Arc<AtomicU64>,
    /// The last commit handed to the thread.
    requested: u64,
    restored: bool,
    thread: Option<CommitThread>,
}

struct CommitThread {
    jobs: Sender<Job>,
    /// The thread's first error; it writes nothing after it.
    failed: Receiver<SinkError>,
    handle: JoinHandle<Option<Vec<PathBuf>>>,
}

/// What the commit thread writes with.
pub struct CommitPlan {
    pub lake: Arc<Lake>,
    pub stats: StatsWriter,
    pub rules: RuleSet,
    /// The replays of the run: this process's, then (on a cluster's first process) the others'.
    pub replays: Vec<ReplayPlan>,
    pub policy: CheckpointPolicy,
    /// When to compact in the background; None: never.
    pub auto_compact: Option<AutoCompact>,
}

impl Committer {
    pub fn new(coordinator: bool, plan: CommitPlan, live: Option<Arc<Live>>) -> Committer {
        let live = live.filter(|_| coordinator);
        let head = plan.lake.head();
        let committed_at_start = head.as_ref().map_or(0, |h| h.epoch);
        let committed = Arc::new(AtomicU64::new(committed_at_start));
        let publisher = (live.clone()).map(|live| LivePublisher::new(live, &plan.rules));
        let thread = coordinator.then(|| {
            let commits = LakeCommits {
                checkpoint: head.and_then(|h| h.checkpoint),
                committed: committed_at_start,
                shared_committed: committed.clone(),
                plan,
                job: None,
                rows_since_checkpoint: 0,
                parts_since_checkpoint: 0,
                restored: false,
                compaction: None,
                live,
            };
            let (jobs, queue) = crossbeam_channel::bounded(QUEUED_JOBS);
            let (report, failed) = crossbeam_channel::bounded(1);
            let handle = std::thread::Builder::new()
                .name("exoflow-commit".into())
                .spawn(move || commits.run(queue, report))
                .expect("a thread for the lake's commits");
            CommitThread {
                jobs,
                failed,
                handle,
            }
        });
        Committer {
            coordinator,
            controls: Controls::default(),
            live: publisher,
            first_epoch: committed_at_start + 1,
            committed,
            requested: committed_at_start,
            restored: false,
            thread,
        }
    }

    pub fn is_coordinator(&self) -> bool {
        self.coordinator
    }

    /// Takes in a control record.
    pub fn record(&mut self, control: Control) {
        self.controls.record(control);
    }

    /// Publishes the statistic changes of a complete epoch to the live snapshot, and returns
    /// them consolidated for [`Committer::apply`]; None for an epoch that is never committed (a
    /// failed snapshot's). Called before the commits requested ahead of the epoch are written:
    /// the live statistics need not wait for the lake. The changes come consolidated from the
    /// statistics' arrangement, one per statistic; they are sorted here.
    pub fn publish(
        &mut self,
        epoch: u64,
        mut changes: Vec<(StatKey, i64)>,
    ) -> Option<Vec<(StatKey, i64)>> {
        if epoch > self.controls.committable_through() {
            return None;
        }
        changes.sort_unstable();
        if let Some(live) = &mut self.live {
            live.publish_epoch(epoch, changes.clone());
        }
        Some(changes)
    }

    /// Has the statistic changes of a complete epoch that [`Committer::publish`] returned
    /// written; epoch 0 is the restored state, which is already in the lake.
    pub fn apply(
        &mut self,
        epoch: u64,
        changes: Option<Vec<(StatKey, i64)>>,
        memberships: Vec<(Membership, i64)>,
    ) -> Result<(), SinkError> {
        let Some(changes) = changes else {
            return Ok(());
        };
        self.send(Job::Apply {
            epoch,
            changes,
            memberships,
        })
    }

    /// Every epoch through `complete` is applied: the live snapshot says so, and the run is ready
    /// once its restored state and first epoch are in.
    pub fn processed_through(&self, complete: Option<u64>) {
        let (Some(live), Some(complete)) = (&self.live, complete) else {
            return;
        };
        let committed = self.committed.load(Ordering::Acquire);
        let epoch = complete.min(self.controls.last().max(committed));
        let ready = self.restored && complete >= self.first_epoch;
        live.live().advance(epoch, committed, ready);
    }

    /// The restored state is in the live statistics (see [`LakeCommits::restored`]).
    pub fn restored(&mut self) -> Result<(), SinkError> {
        if self.restored {
            return self.failure();
        }
        self.restored = true;
        if let Some(live) = &self.live {
            live.live().mark_restored();
        }
        self.send(Job::Restored)
    }

    /// Commits at the highest requested epoch that is at most `complete`, if that is new.
    pub fn commit_through(&mut self, complete: Option<u64>) -> Result<(), SinkError> {
        let Some(complete) = complete else {
            return self.failure();
        };
        match self.controls.commit_at_or_before(complete) {
            Some(epoch) if epoch > self.requested => {
                self.requested = epoch;
                let snapshots = self.ended_through(epoch);
                self.send(Job::Commit { epoch, snapshots })
            }
            _ => self.failure(),
        }
    }

    /// The input is exhausted and every epoch complete: commits at the run's last epoch that is
    /// not abandoned (see [`LakeCommits::finish_run`]).
    pub fn finish_run(&mut self) -> Result<(), SinkError> {
        let last = self
            .controls
            .last()
            .min(self.controls.committable_through());
        let snapshots = self.ended_through(last);
        self.send(Job::FinishRun { last, snapshots })
    }

    /// The snapshots that ended at or before `epoch`, counted by source.
    fn ended_through(&self, epoch: u64) -> Ended {
        let mut ended: Ended = Vec::new();
        for snapshot in self.controls.snapshots_from(0, epoch) {
            match ended.iter_mut().find(|(s, _)| *s == snapshot.source) {
                Some((_, n)) => *n += 1,
                None => ended.push((snapshot.source.clone(), 1)),
            }
        }
        ended
    }

    /// Waits for the commit thread to write everything handed to it, and returns the
    /// `stats_changes` and `near_duplicates` parts it wrote.
    pub fn finish(mut self) -> Result<Vec<PathBuf>, SinkError> {
        let Some(thread) = self.thread.take() else {
            return Ok(Vec::new());
        };
        drop(thread.jobs);
        match thread.handle.join() {
            Ok(Some(parts)) => Ok(parts),
            Ok(None) => Err(thread.failed.try_recv().unwrap_or_else(|_| stopped())),
            Err(_) => Err(stopped()),
        }
    }

    /// The commit thread's error, if it failed.
    fn failure(&self) -> Result<(), SinkError> {
        match self.thread.as_ref().map(|t| t.failed.try_recv()) {
            Some(Ok(error)) => Err(error),
            _ => Ok(()),
        }
    }

    fn send(&mut self, job: Job) -> Result<(), SinkError> {
        self.failure()?;
        let Some(thread) = &self.thread else {
            debug_assert!(
                false,
                "only the coordinator has the lake's commits to write"
            );
            return Ok(());
        };
        thread.jobs.send(job).map_err(|_| stopped())
    }
}

impl Drop for Committer {
    /// A run that failed elsewhere: what was handed to the thread is written (or its error
    /// logged) before the worker ends, so that nothing writes to the lake after the run.
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            drop(thread.jobs);
            let _ = thread.handle.join();
        }
    }
}

fn stopped() -> SinkError {
    SinkError::Read {
        path: PathBuf::from("_exoflow/commits"),
        reason: "the commit thread stopped".into(),
    }
}

/// What the commit thread owns: the `stats_changes` part writer, the commit records, and the
/// checkpoints and compactions it starts in the background.
struct LakeCommits {
    plan: CommitPlan,
    committed: u64,
    /// `committed`, for the coordinator.
    shared_committed: Arc<AtomicU64>,
    /// The checkpoint the head names.
    checkpoint: Option<u64>,
    job: Option<CheckpointJob>,
    /// `files` rows and parts committed since the last checkpoint was started, by every
    /// process's writers (as the commits published them).
    rows_since_checkpoint: u64,
    parts_since_checkpoint: u64,
    /// The restored state was written to `stats_current.parquet`.
    restored: bool,
    /// A compaction running in the background. It and a checkpoint never run at once: a
    /// checkpoint reads the parts that a compaction swaps.
    compaction: Option<JoinHandle<Result<Vec<TableCompaction>, CompactError>>>,
    /// The live snapshot, whose committed epoch each commit advances.
    live: Option<Arc<Live>>,
}

impl LakeCommits {
    /// Does the jobs in order until the coordinator hangs up, then closes the part writers and
    /// returns their parts. After an error (sent to `failed`) it writes nothing more: None.
    fn run(mut self, jobs: Receiver<Job>, failed: Sender<SinkError>) -> Option<Vec<PathBuf>> {
        for job in jobs.iter() {
            let done = match job {
                Job::Apply {
                    epoch,
                    changes,
                    memberships,
                } => self.apply(epoch, changes, memberships),
                Job::Restored => self.restored(),
                Job::Commit { epoch, snapshots } if epoch > self.committed => {
                    self.commit(epoch, snapshots)
                }
                Job::Commit { .. } => Ok(()),
                Job::FinishRun { last, snapshots } => self.finish_run(last, snapshots),
            };
            if let Err(error) = done {
                let _ = failed.send(error);
                self.abandon();
                return None;
            }
        }
        match self.finish() {
            Ok(parts) => Some(parts),
            Err(error) => {
                let _ = failed.send(error);
                None
            }
        }
    }

    fn apply(
        &mut self,
        epoch: u64,
        changes: Vec<(StatKey, i64)>,
        memberships: Vec<(Membership, i64)>,
    ) -> Result<(), SinkError> {
        self.plan.stats.apply(epoch, changes, epoch > 0)?;
        if epoch > 0 {
            self.plan.stats.record_memberships(epoch, memberships)?;
        }
        Ok(())
    }

    /// The restored state is in the live statistics: `stats_current.parquet` is rewritten from it
    /// once, as a crash between a commit record and that file's replacement can leave it behind.
    fn restored(&mut self) -> Result<(), SinkError> {
        if !self.restored && self.committed > 0 {
            self.plan.stats.write_current(self.committed)?;
        }
        self.restored = true;
        Ok(())
    }

    /// Commits at the run's last epoch that is not abandoned, and records a checkpoint still
    /// being written once it is durable.
    fn finish_run(&mut self, last: u64, snapshots: Ended) -> Result<(), SinkError> {
        let last = last.max(self.committed);
        // A stopping run does not start a compaction it would then wait for; the next run, or
        // `exoflow compact`, merges what is left.
        self.plan.auto_compact = None;
        if last > self.committed {
            self.commit(last, snapshots)?;
        }
        if self.job.is_some() {
            let checkpoint = self.finished_checkpoint(true)?;
            self.plan
                .lake
                .commit(self.committed, "checkpoint", checkpoint, Vec::new())?;
        }
        Ok(())
    }

    /// Counts a failure in the live counters, when a server runs.
    fn count_error(&self, kind: ErrorKind) {
        if let Some(live) = &self.live {
            live.progress.error(kind);
        }
    }

    /// Commits at `epoch`; the time it takes is observed in the live counters, when a server runs.
    fn commit(&mut self, epoch: u64, snapshots: Ended) -> Result<(), SinkError> {
        let started = std::time::Instant::now();
        let result = self.commit_epoch(epoch, &snapshots);
        if result.is_ok()
            && let Some(live) = &self.live
        {
            (live.progress.commit_duration).observe(started.elapsed().as_secs_f64());
        }
        result
    }

    fn commit_epoch(&mut self, epoch: u64, snapshots: &Ended) -> Result<(), SinkError> {
        self.plan.stats.close_part()?;
        let checkpoint = self.finished_checkpoint(false)?;
        let replays = (self.plan.replays.iter())
            .map(|r| ReplayProgress {
                source: r.source.clone(),
                inputs: r.inputs.clone(),
                done: r.skipped
                    + (snapshots.iter())
                        .find(|(source, _)| *source == r.source)
                        .map_or(0, |(_, n)| *n),
            })
            .collect();
        self.plan.lake.sync_pending(epoch)?;
        self.plan.lake.commit(epoch, "epoch", checkpoint, replays)?;
        self.committed = epoch;
        self.shared_committed.store(epoch, Ordering::Release);
        // The record is durable: the parts it covers become visible to readers, then the
        // statistics that match them.
        let published = self.plan.lake.publish(epoch)?;
        self.rows_since_checkpoint += published.files_rows;
        self.parts_since_checkpoint += published.files_parts;
        self.plan.stats.write_current(epoch)?;
        if let Some(live) = &self.live {
            live.advance(epoch, epoch, false);
        }
        self.join_compaction(false);
        self.maybe_start_checkpoint(epoch);
        self.maybe_start_compaction();
        Ok(())
    }

    /// Collects a finished background compaction (with `wait`, waits for it). A failed one
    /// leaves every table whole (see `sink::compact`): it is logged, and auto-compaction is off
    /// for the rest of the run.
    fn join_compaction(&mut self, wait: bool) {
        let Some(handle) = self.compaction.take_if(|h| wait || h.is_finished()) else {
            return;
        };
        let joined = handle.join();
        release_freed_memory();
        match joined {
            Ok(Ok(tables)) => {
                for t in tables {
                    tracing::debug!(table = %t.table, parts_after = t.parts_after, "compacted");
                }
            }
            Ok(Err(error)) => {
                tracing::error!(error = %error, "background compaction failed; auto-compaction is off for this run");
                self.count_error(ErrorKind::Compaction);
                self.plan.auto_compact = None;
            }
            Err(_) => {
                tracing::error!(
                    "background compaction panicked; auto-compaction is off for this run"
                );
                self.count_error(ErrorKind::Compaction);
                self.plan.auto_compact = None;
            }
        }
    }

    /// Starts a background compaction when no other background job runs and a table has a
    /// tier to merge.
    fn maybe_start_compaction(&mut self) {
        let Some(policy) = self.plan.auto_compact else {
            return;
        };
        if self.job.is_some() || self.compaction.is_some() {
            return;
        }
        match policy.due(self.plan.lake.root()) {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => {
                tracing::warn!(error = %error, "cannot list the lake's parts for compaction");
                self.count_error(ErrorKind::Compaction);
                return;
            }
        }
        let lake = self.plan.lake.clone();
        self.compaction = Some(std::thread::spawn(move || compact_running(&lake, &policy)));
    }

    /// The epoch of a checkpoint that is now durable, if one is; with `wait`, waits for it.
    fn finished_checkpoint(&mut self, wait: bool) -> Result<Option<u64>, SinkError> {
        let Some(job) = self.job.take_if(|j| wait || j.handle.is_finished()) else {
            return Ok(None);
        };
        let joined = job.handle.join();
        release_freed_memory();
        match joined {
            Ok(Ok(())) => {
                self.checkpoint = Some(job.epoch);
                Ok(Some(job.epoch))
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(SinkError::Read {
                path: self.plan.lake.checkpoint_dir(job.epoch),
                reason: "the checkpoint thread panicked".into(),
            }),
        }
    }

    /// Starts a checkpoint at `epoch` when enough rows were committed since the last one.
    fn maybe_start_checkpoint(&mut self, epoch: u64) {
        if self.job.is_some() || self.compaction.is_some() {
            return;
        }
        let rows = self.plan.policy.rows_before + self.rows_since_checkpoint;
        let parts = self.plan.policy.parts_before + self.parts_since_checkpoint;
        // Twice the tracked paths: a checkpoint then at least halves what a restart reads, and
        // costs O(1) per committed row. (After a first replay, the rows are the state already.)
        let many_rows = rows
            >= self
                .plan
                .policy
                .min_rows
                .max(2 * self.plan.stats.tracked_paths());
        let many_parts = parts >= MAX_PARTS_AFTER_CHECKPOINT && rows > 0;
        if !(many_rows || many_parts) {
            return;
        }
        self.plan.policy.rows_before = 0;
        self.plan.policy.parts_before = 0;
        self.rows_since_checkpoint = 0;
        self.parts_since_checkpoint = 0;
        let since = rows;
        let root = self.plan.lake.root().to_path_buf();
        let range = StateRange {
            checkpoint: self.checkpoint,
            through: epoch,
        };
        let rules = self.plan.rules.clone();
        tracing::info!(epoch, rows = since, "writing a checkpoint");
        let handle = std::thread::spawn(move || {
            let state = load(&root, range, &rules.ids())?;
            write_checkpoint(&root, epoch, &state.versions, &rules)
        });
        self.job = Some(CheckpointJob { epoch, handle });
    }

    /// After a failed step: waits for the background jobs, and leaves the open parts to the
    /// next run, which removes what no commit covers.
    fn abandon(mut self) {
        if let Some(job) = self.job.take() {
            let _ = job.handle.join();
        }
        self.join_compaction(true);
    }

    /// Closes the `stats_changes` and `near_duplicates` part writers and returns the parts they wrote.
    fn finish(mut self) -> Result<Vec<PathBuf>, SinkError> {
        if let Some(job) = self.job.take() {
            // Not recorded: a later run removes it.
            let _ = job.handle.join();
        }
        self.join_compaction(true);
        self.plan.stats.close_part()?;
        let stats = self.plan.stats;
        stats.finish()
    }
}

/// Hands the memory a finished background job freed back to the system: its thread's arena
/// would otherwise keep the job's peak (a merged row group, a loaded state) for the rest of a
/// run that may last weeks.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator's arenas to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
