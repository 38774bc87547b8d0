//! The commit coordinator: on worker 0, once the graph's frontier shows a requested commit epoch
//! complete on every worker (every lake writer has closed its parts for it, see `write_lake`), it
//! closes the `stats_changes` part, writes the commit record, moves the parts it covers into their
//! table directories, then replaces `stats_current.parquet`. It also starts checkpoints in the background and records them in a
//! later commit once they are durable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use rustc_hash::FxHashMap;

use super::near_dup::Membership;
use super::stats::StatKey;
use crate::api::live::{Live, LivePublisher};
use crate::epochs::EpochClock;
use crate::pipeline::RuleSet;
use crate::progress::ErrorKind;
use crate::sink::SinkError;
use crate::sink::commit::{Lake, ReplayProgress};
use crate::sink::compact::{AutoCompact, CompactError, TableCompaction, compact_running};
use crate::sink::restore::{StateRange, load, write_checkpoint};
use crate::sink::stats::StatsWriter;

/// A replay's place in its list of snapshots.
#[derive(Debug, Clone)]
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
    /// Part files each commit with rows adds to `files` (one per worker at most).
    pub parts_per_commit: u64,
}

/// A checkpoint is also written once this many `files` parts were committed after the last one,
/// so that a restart opens a bounded number of files however small the commits.
pub const MAX_PARTS_AFTER_CHECKPOINT: u64 = 256;

/// A checkpoint being written.
struct Job {
    epoch: u64,
    handle: JoinHandle<Result<(), SinkError>>,
}

pub struct Committer {
    coordinator: bool,
    lake: Arc<Lake>,
    clock: Arc<EpochClock>,
    stats: StatsWriter,
    rules: RuleSet,
    replay: Option<ReplayPlan>,
    policy: CheckpointPolicy,
    committed: u64,
    /// The checkpoint the head names.
    checkpoint: Option<u64>,
    job: Option<Job>,
    /// `files` rows the lake writers had written when the last checkpoint was started.
    rows_at_checkpoint: u64,
    /// ... and at the last commit; commits with rows since the last checkpoint.
    rows_at_commit: u64,
    commits_with_rows: u64,
    /// `files` rows written by all workers in this run.
    rows_written: Arc<AtomicU64>,
    /// The restored state was written to `stats_current.parquet`.
    restored: bool,
    /// When to compact in the background; None: never.
    auto_compact: Option<AutoCompact>,
    /// A compaction running in the background. It and a checkpoint never run at once: a
    /// checkpoint reads the parts that a compaction swaps.
    compaction: Option<JoinHandle<Result<Vec<TableCompaction>, CompactError>>>,
    /// Where the live statistics are published for the server, when one runs.
    live: Option<LivePublisher>,
    /// The first epoch of this run: the run is ready once it is processed.
    first_epoch: u64,
}

impl Committer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        coordinator: bool,
        lake: Arc<Lake>,
        clock: Arc<EpochClock>,
        stats: StatsWriter,
        rules: RuleSet,
        replay: Option<ReplayPlan>,
        policy: CheckpointPolicy,
        rows_written: Arc<AtomicU64>,
        auto_compact: Option<AutoCompact>,
        live: Option<Arc<Live>>,
    ) -> Committer {
        let head = lake.head();
        let first_epoch = head.as_ref().map_or(0, |h| h.epoch) + 1;
        Committer {
            live: (live.filter(|_| coordinator)).map(|live| LivePublisher::new(live, &rules)),
            first_epoch,
            coordinator,
            committed: head.as_ref().map_or(0, |h| h.epoch),
            checkpoint: head.and_then(|h| h.checkpoint),
            lake,
            clock,
            stats,
            rules,
            replay,
            policy,
            job: None,
            rows_at_checkpoint: 0,
            rows_at_commit: 0,
            commits_with_rows: 0,
            rows_written,
            restored: false,
            auto_compact,
            compaction: None,
        }
    }

    pub fn is_coordinator(&self) -> bool {
        self.coordinator
    }

    /// Publishes the statistic changes of a complete epoch to the live snapshot, and returns
    /// them consolidated for [`Committer::apply`]; None for an epoch that is never committed (a
    /// failed snapshot's). Called before the commits requested ahead of the epoch are written:
    /// the live statistics need not wait for the lake.
    pub fn publish(
        &mut self,
        epoch: u64,
        changes: FxHashMap<StatKey, i64>,
    ) -> Option<Vec<(StatKey, i64)>> {
        if epoch > self.clock.committable_through() {
            return None;
        }
        let mut consolidated: Vec<(StatKey, i64)> =
            changes.into_iter().filter(|(_, diff)| *diff != 0).collect();
        consolidated.sort_unstable();
        if let Some(live) = &mut self.live {
            live.publish_epoch(epoch, consolidated.clone());
        }
        Some(consolidated)
    }

    /// Writes the statistic changes of a complete epoch that [`Committer::publish`] returned;
    /// epoch 0 is the restored state, which is already in the lake.
    pub fn apply(
        &mut self,
        epoch: u64,
        changes: Option<Vec<(StatKey, i64)>>,
        memberships: FxHashMap<Membership, i64>,
    ) -> Result<(), SinkError> {
        let Some(changes) = changes else {
            return Ok(());
        };
        self.stats.apply(epoch, changes, epoch > 0)?;
        if epoch > 0 {
            self.stats.record_memberships(epoch, memberships)?;
        }
        Ok(())
    }

    /// Every epoch through `complete` is applied: the live snapshot says so, and the run is ready
    /// once its restored state and first epoch are in.
    pub fn processed_through(&self, complete: Option<u64>) {
        let (Some(live), Some(complete)) = (&self.live, complete) else {
            return;
        };
        let epoch = complete.min(self.clock.last().max(self.committed));
        let ready = self.restored && complete >= self.first_epoch;
        live.live().advance(epoch, self.committed, ready);
    }

    /// The restored state is in the live statistics: `stats_current.parquet` is rewritten from it
    /// once, as a crash between a commit record and that file's replacement can leave it behind.
    pub fn restored(&mut self) -> Result<(), SinkError> {
        if !self.restored && self.committed > 0 {
            self.stats.write_current(self.committed)?;
        }
        self.restored = true;
        Ok(())
    }

    /// Commits at the highest requested epoch that is at most `complete`, if that is new.
    pub fn commit_through(&mut self, complete: Option<u64>) -> Result<(), SinkError> {
        let Some(complete) = complete else {
            return Ok(());
        };
        match self.clock.commit_at_or_before(complete) {
            Some(epoch) if epoch > self.committed => self.commit(epoch),
            _ => Ok(()),
        }
    }

    /// The input is exhausted and every epoch complete: commits at the run's last epoch that is
    /// not abandoned, and records a checkpoint still being written once it is durable.
    pub fn finish_run(&mut self) -> Result<(), SinkError> {
        // A stopping run does not start a compaction it would then wait for; the next run, or
        // `exoflow compact`, merges what is left.
        self.auto_compact = None;
        let last = self
            .clock
            .last()
            .min(self.clock.committable_through())
            .max(self.committed);
        if last > self.committed {
            self.commit(last)?;
        }
        if self.job.is_some() {
            let checkpoint = self.finished_checkpoint(true)?;
            self.lake
                .commit(self.committed, "checkpoint", checkpoint, None)?;
        }
        Ok(())
    }

    /// Counts a failure in the live counters, when a server runs.
    fn count_error(&self, kind: ErrorKind) {
        if let Some(live) = &self.live {
            live.live().progress.error(kind);
        }
    }

    /// Commits at `epoch`; the time it takes is observed in the live counters, when a server runs.
    fn commit(&mut self, epoch: u64) -> Result<(), SinkError> {
        let started = std::time::Instant::now();
        let result = self.commit_epoch(epoch);
        if result.is_ok()
            && let Some(live) = &self.live
        {
            (live.live().progress.commit_duration).observe(started.elapsed().as_secs_f64());
        }
        result
    }

    fn commit_epoch(&mut self, epoch: u64) -> Result<(), SinkError> {
        self.stats.close_part()?;
        let checkpoint = self.finished_checkpoint(false)?;
        let replay = self.replay.as_ref().map(|r| ReplayProgress {
            source: r.source.clone(),
            inputs: r.inputs.clone(),
            done: r.skipped + self.clock.snapshots_from(0, epoch).len(),
        });
        self.lake.commit(epoch, "epoch", checkpoint, replay)?;
        self.committed = epoch;
        // The record is durable: the parts it covers become visible to readers, then the
        // statistics that match them.
        self.lake.publish(epoch)?;
        self.stats.write_current(epoch)?;
        if let Some(live) = &self.live {
            live.live().advance(epoch, epoch, false);
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
                self.auto_compact = None;
            }
            Err(_) => {
                tracing::error!(
                    "background compaction panicked; auto-compaction is off for this run"
                );
                self.count_error(ErrorKind::Compaction);
                self.auto_compact = None;
            }
        }
    }

    /// Starts a background compaction when no other background job runs and a table has a
    /// tier to merge.
    fn maybe_start_compaction(&mut self) {
        let Some(policy) = self.auto_compact else {
            return;
        };
        if self.job.is_some() || self.compaction.is_some() {
            return;
        }
        match policy.due(self.lake.root()) {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => {
                tracing::warn!(error = %error, "cannot list the lake's parts for compaction");
                self.count_error(ErrorKind::Compaction);
                return;
            }
        }
        let lake = self.lake.clone();
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
                path: self.lake.checkpoint_dir(job.epoch),
                reason: "the checkpoint thread panicked".into(),
            }),
        }
    }

    /// Starts a checkpoint at `epoch` when enough rows were committed since the last one.
    fn maybe_start_checkpoint(&mut self, epoch: u64) {
        if self.job.is_some() || self.compaction.is_some() {
            return;
        }
        let written = self.rows_written.load(Ordering::Relaxed);
        if written > self.rows_at_commit {
            self.commits_with_rows += 1;
            self.rows_at_commit = written;
        }
        let rows = self.policy.rows_before + written - self.rows_at_checkpoint;
        let parts =
            self.policy.parts_before + self.commits_with_rows * self.policy.parts_per_commit;
        // Twice the tracked paths: a checkpoint then at least halves what a restart reads, and
        // costs O(1) per committed row. (After a first replay, the rows are the state already.)
        let many_rows = rows >= self.policy.min_rows.max(2 * self.stats.tracked_paths());
        let many_parts = parts >= MAX_PARTS_AFTER_CHECKPOINT && rows > 0;
        if !(many_rows || many_parts) {
            return;
        }
        self.policy.rows_before = 0;
        self.policy.parts_before = 0;
        self.commits_with_rows = 0;
        self.rows_at_checkpoint = written;
        let since = rows;
        let root = self.lake.root().to_path_buf();
        let range = StateRange {
            checkpoint: self.checkpoint,
            through: epoch,
        };
        let rules = self.rules.clone();
        tracing::info!(epoch, rows = since, "writing a checkpoint");
        let handle = std::thread::spawn(move || {
            let state = load(&root, range, &rules.ids())?;
            write_checkpoint(&root, epoch, &state.versions, &rules)
        });
        self.job = Some(Job { epoch, handle });
    }

    /// Closes the `stats_changes` and `near_duplicates` part writers and returns the parts they wrote.
    pub fn finish(mut self) -> Result<Vec<std::path::PathBuf>, SinkError> {
        if let Some(job) = self.job.take() {
            // Not recorded: a later run removes it.
            let _ = job.handle.join();
        }
        self.join_compaction(true);
        self.stats.close_part()?;
        let stats = self.stats;
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
