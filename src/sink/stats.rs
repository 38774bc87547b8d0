//! Consolidated statistic changes per completed epoch -> `stats_changes` part files and
//! `stats_current.parquet`, replaced atomically, both written by one worker.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::parquet::{PartWriter, replace_file};
use super::{SinkError, tables};
use crate::dataflow::stats::StatKey;
use crate::pipeline::RuleSet;

/// The name of the current statistics file in a lake.
pub const STATS_CURRENT_FILE: &str = "stats_current.parquet";

/// Writes the statistics tables and holds the current values.
pub struct StatsWriter {
    lake: PathBuf,
    rules: RuleSet,
    changes: PartWriter,
    current: BTreeMap<StatKey, i64>,
    current_epoch: Option<u64>,
    /// `stats_current.parquet` is rewritten at most this often (at every epoch when None).
    commit_interval: Option<Duration>,
    /// The epoch `stats_current.parquet` was last written at, and when.
    written: Option<(u64, Instant)>,
}

impl StatsWriter {
    pub fn new(
        lake: &Path,
        worker: usize,
        rules: RuleSet,
        commit_interval: Option<Duration>,
    ) -> StatsWriter {
        StatsWriter {
            lake: lake.to_path_buf(),
            changes: PartWriter::new(lake, "stats_changes", worker),
            rules,
            current: BTreeMap::new(),
            current_epoch: None,
            commit_interval,
            written: None,
        }
    }

    /// The current value of every statistic (the live statistics).
    pub fn current(&self) -> &BTreeMap<StatKey, i64> {
        &self.current
    }

    /// Commits what is pending once the commit interval has passed: closes the open
    /// `stats_changes` part and rewrites `stats_current.parquet`.
    pub fn commit_if_due(&mut self) -> Result<(), SinkError> {
        let Some(interval) = self.commit_interval else {
            return Ok(());
        };
        self.changes.commit_if_older(interval)?;
        let stale = self.written.map(|(e, _)| Some(e) != self.current_epoch);
        let due = self.written.is_none_or(|(_, at)| at.elapsed() >= interval);
        if stale.unwrap_or(self.current_epoch.is_some()) && due {
            self.write_current()?;
        }
        Ok(())
    }

    /// Records the changes of a completed epoch (any order, repeated keys allowed) and replaces
    /// `stats_current.parquet`.
    pub fn commit_epoch(
        &mut self,
        epoch: u64,
        changes: impl IntoIterator<Item = (StatKey, i64)>,
    ) -> Result<(), SinkError> {
        let mut consolidated: BTreeMap<StatKey, i64> = BTreeMap::new();
        for (key, diff) in changes {
            *consolidated.entry(key).or_default() += diff;
        }
        let rows: Vec<(u64, StatKey, i64)> = consolidated
            .into_iter()
            .filter(|(_, diff)| *diff != 0)
            .map(|(key, diff)| (epoch, key, diff))
            .collect();
        if !rows.is_empty() {
            let batch =
                tables::stats_changes(&rows, &self.rules).map_err(|source| SinkError::Arrow {
                    table: "stats_changes".into(),
                    source,
                })?;
            self.changes.write(&batch, epoch, epoch)?;
        }
        for (_, key, diff) in rows {
            let value = self.current.entry(key.clone()).or_default();
            *value += diff;
            if *value == 0 {
                self.current.remove(&key);
            }
        }
        self.current_epoch = Some(epoch);
        if self.commit_interval.is_none() {
            self.write_current()?;
        }
        Ok(())
    }

    /// Replaces `stats_current.parquet` with the current values.
    fn write_current(&mut self) -> Result<(), SinkError> {
        let Some(epoch) = self.current_epoch else {
            return Ok(());
        };
        self.written = Some((epoch, Instant::now()));
        let batch =
            tables::stats_current(self.current.iter(), epoch, &self.rules).map_err(|source| {
                SinkError::Arrow {
                    table: "stats_current".into(),
                    source,
                }
            })?;
        replace_file(&self.lake.join(STATS_CURRENT_FILE), "stats_current", &batch)
    }

    /// Closes the open `stats_changes` part and, given the run's last epoch, makes
    /// `stats_current.parquet` current at it.
    pub fn finish(mut self, last_epoch: Option<u64>) -> Result<Vec<PathBuf>, SinkError> {
        if let Some(last) = last_epoch {
            self.current_epoch = Some(last.max(self.current_epoch.unwrap_or(0)));
            self.write_current()?;
        }
        Ok(self.changes.finish()?.1)
    }
}
