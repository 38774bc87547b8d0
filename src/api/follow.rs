//! A lake that another process may be writing -> the live snapshot, read-only: its committed
//! `stats_current` at start, then each new commit's per-epoch diffs from `stats_changes`, for
//! `exoflow serve`.
//!
//! **Serving a lake never changes it**: nothing here takes the lake's lock, writes, repairs or
//! removes a file. A writer replaces `stats_current.parquet` only after the parts of its commit
//! are visible, so the epoch of that file says how far `stats_changes` can be read; the diffs of
//! an epoch are checked against it, and whatever they miss (a part a compaction swapped away
//! while it was read) is published with the last epoch, so that the snapshot always ends equal
//! to the committed `stats_current`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use imbl::OrdMap;

use super::RuleInfo;
use super::history::committed_diffs;
use super::live::{Live, StatRow};
use crate::dataflow::stats::{Dimension, Metric, StatKey};
use crate::pipeline::Pipeline;
use crate::sink::commit::{LOG_DIR, records};
use crate::sink::stats::STATS_CURRENT_FILE;

/// How often the lake is looked at for a new commit.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Polls in a row that may fail to read a commit's diffs before its change is published as one
/// correction with the commit's epoch.
const READ_ATTEMPTS: u32 = 5;

/// Why a lake cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("{} is not an exoflow lake: it has no {LOG_DIR}/ commit log", path.display())]
    NotALake { path: PathBuf },
    #[error(
        "the pipeline {pipeline} is not the one lake {} was written with (fingerprint {lake}, rules {rules:?})",
        path.display()
    )]
    OtherPipeline {
        path: PathBuf,
        pipeline: String,
        lake: String,
        rules: Vec<String>,
    },
}

/// Checks that `root` is a lake, one that no run has committed to yet included.
pub fn check_lake(root: &Path) -> Result<(), FollowError> {
    if root.join(LOG_DIR).is_dir() {
        Ok(())
    } else {
        Err(FollowError::NotALake {
            path: root.to_path_buf(),
        })
    }
}

/// The rules `/api/v1/rules` shows for the lake at `root`: those of `pipeline` (which must be
/// the lake's), else those of the built-in pack when the lake was written with it or has no
/// commit yet, else the rule ids the commit records name, without their patterns.
pub fn rules(root: &Path, pipeline: Option<&Pipeline>) -> Result<Vec<RuleInfo>, FollowError> {
    let head = records(root).pop();
    if let Some(pipeline) = pipeline {
        return match head {
            Some(head) if head.pipeline != pipeline.fingerprint => {
                Err(FollowError::OtherPipeline {
                    path: root.to_path_buf(),
                    pipeline: pipeline.fingerprint.clone(),
                    lake: head.pipeline,
                    rules: head.rules,
                })
            }
            _ => Ok(RuleInfo::of(&pipeline.rules)),
        };
    }
    let default = Pipeline::default_pack();
    match head {
        Some(head) if head.pipeline != default.fingerprint => {
            tracing::warn!(
                fingerprint = %head.pipeline,
                "the lake was written with a pipeline other than the built-in pack: \
                 /api/v1/rules shows its rule ids without patterns (--pipeline FILE adds them)"
            );
            Ok((head.rules.into_iter())
                .map(|id| RuleInfo {
                    id,
                    pattern: None,
                    regex: false,
                    secret: false,
                })
                .collect())
        }
        _ => Ok(RuleInfo::of(&default.rules)),
    }
}

/// Follows the lake at `root` into `live` on a thread of its own until `stop` is set.
pub fn follow(root: PathBuf, live: Arc<Live>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("exoflow-follow".into())
        .spawn(move || {
            let mut follower = Follower::new(root, live);
            while !stop.load(Ordering::Relaxed) {
                follower.poll();
                std::thread::park_timeout(POLL_INTERVAL);
            }
        })
        .expect("a thread starts")
}

/// What identifies one version of `stats_current.parquet`: a writer replaces it by a rename.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode: meta.ino(),
    })
}

/// The follower's state: the statistics as last published and the epoch they are as of.
pub struct Follower {
    root: PathBuf,
    live: Arc<Live>,
    values: OrdMap<StatKey, i64>,
    rule_ids: Arc<[String]>,
    /// None until the lake's first commit was read.
    epoch: Option<u64>,
    /// The `stats_current.parquet` last read.
    seen: Option<Stamp>,
    failed_reads: u32,
}

impl Follower {
    pub fn new(root: PathBuf, live: Arc<Live>) -> Follower {
        Follower {
            root,
            live,
            values: OrdMap::new(),
            rule_ids: Arc::from(Vec::new()),
            epoch: None,
            seen: None,
            failed_reads: 0,
        }
    }

    /// Publishes what the lake committed since the last poll, if anything.
    pub fn poll(&mut self) {
        let path = self.root.join(STATS_CURRENT_FILE);
        let Some(stamp) = stamp(&path) else {
            return; // no commit yet
        };
        if self.seen.as_ref() == Some(&stamp) {
            return;
        }
        let Some(head) = records(&self.root).pop() else {
            return;
        };
        let current = match crate::query::current_stats(&self.root) {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(error = %error, "cannot read the lake's statistics; trying again");
                return;
            }
        };
        // Every row holds the epoch the file was written at; an empty file is as of the last
        // commit.
        let epoch = current.first().map_or(head.epoch, |r| r.epoch);
        if *self.rule_ids != *head.rules {
            self.rule_ids = Arc::from(head.rules.clone());
        }
        let mut target = OrdMap::new();
        for row in &current {
            match self.key(&row.dimension, &row.key, row.rule.as_deref(), &row.metric) {
                Some(key) => {
                    target.insert(key, row.value);
                }
                None => tracing::warn!(
                    dimension = %row.dimension,
                    metric = %row.metric,
                    "a statistic this build does not know is not served"
                ),
            }
        }
        match self.epoch {
            None => {
                // The committed state, like a run's restored state: no epoch's diff.
                let rows = (target.iter())
                    .map(|(key, value)| StatRow::of(key, *value, &self.rule_ids))
                    .collect();
                (self.live).publish(0, target.clone(), self.rule_ids.clone(), rows);
                self.values = target;
            }
            Some(previous) if epoch > previous => {
                let diffs = match committed_diffs(&self.root, previous, epoch) {
                    Ok(diffs) => diffs,
                    Err(error) if self.failed_reads + 1 < READ_ATTEMPTS => {
                        self.failed_reads += 1;
                        tracing::debug!(error = %error, "cannot read the committed diffs yet");
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(
                            error = %error,
                            epoch,
                            "cannot read the committed diffs: their sum is published with the epoch"
                        );
                        BTreeMap::new()
                    }
                };
                self.publish_diffs(diffs, epoch, target);
            }
            Some(previous) => {
                // The same commit written again (a restarted writer rewrites it): publish a
                // difference, if there is one, with the epoch already published.
                self.publish_diffs(BTreeMap::new(), previous, target);
            }
        }
        self.failed_reads = 0;
        self.seen = Some(stamp);
        let epoch = self.epoch.map_or(epoch, |e| e.max(epoch));
        self.epoch = Some(epoch);
        self.live.advance(epoch, epoch, true);
    }

    /// Publishes each epoch's diffs before `last`, then `last` with whatever else brings the
    /// statistics to `target`.
    fn publish_diffs(
        &mut self,
        diffs: BTreeMap<u64, Vec<StatRow>>,
        last: u64,
        target: OrdMap<StatKey, i64>,
    ) {
        let mut last_changes: BTreeMap<StatKey, i64> = BTreeMap::new();
        for (epoch, rows) in diffs {
            let mut changes: BTreeMap<StatKey, i64> = BTreeMap::new();
            for row in rows {
                if let Some(key) =
                    self.key(row.dimension, &row.key, row.rule.as_deref(), row.metric)
                {
                    *changes.entry(key).or_default() += row.value;
                }
            }
            changes.retain(|_, diff| *diff != 0);
            for (key, diff) in &changes {
                let value = self.values.get(key).copied().unwrap_or(0) + diff;
                if value == 0 {
                    self.values.remove(key);
                } else {
                    self.values.insert(key.clone(), value);
                }
            }
            if epoch == last {
                last_changes = changes;
            } else if !changes.is_empty() {
                self.publish(epoch, changes);
            }
        }
        // What the diffs did not bring: nothing, unless a part could not be read.
        let mut missed = 0usize;
        for (key, value) in target.iter() {
            let diff = value - self.values.get(key).copied().unwrap_or(0);
            if diff != 0 {
                *last_changes.entry(key.clone()).or_default() += diff;
                missed += 1;
            }
        }
        for (key, value) in self.values.iter() {
            if !target.contains_key(key) {
                *last_changes.entry(key.clone()).or_default() -= value;
                missed += 1;
            }
        }
        if missed > 0 {
            tracing::debug!(missed, epoch = last, "statistics the diffs missed");
        }
        last_changes.retain(|_, diff| *diff != 0);
        self.values = target;
        if !last_changes.is_empty() {
            self.publish(last, last_changes);
        }
    }

    fn publish(&self, epoch: u64, changes: BTreeMap<StatKey, i64>) {
        let rows = (changes.iter())
            .map(|(key, diff)| StatRow::of(key, *diff, &self.rule_ids))
            .collect();
        (self.live).publish(epoch, self.values.clone(), self.rule_ids.clone(), rows);
    }

    /// The key of a statistic as the lake names it; None for a dimension, metric or rule this
    /// build or this lake does not know.
    fn key(&self, dimension: &str, key: &str, rule: Option<&str>, metric: &str) -> Option<StatKey> {
        let dimension = Dimension::ALL
            .into_iter()
            .find(|d| d.as_str() == dimension)?;
        let metric = Metric::ALL.into_iter().find(|m| m.as_str() == metric)?;
        let rule = match rule {
            Some(id) => Some(self.rule_ids.iter().position(|r| r == id)? as u32),
            None => None,
        };
        Some(StatKey::new(dimension, key.to_string(), rule, metric))
    }
}
