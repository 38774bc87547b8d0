//! Consolidated statistic changes per completed epoch -> `stats_changes` part files and
//! `stats_current.parquet`, replaced atomically, both written by one worker.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::parquet::{PartWriter, replace_file};
use super::tables::NearDuplicateRow;
use super::{SinkError, tables};
use crate::dataflow::near_dup::Membership;
use crate::dataflow::stats::{Dimension, Metric, StatKey};
use crate::pipeline::RuleSet;

/// The name of the current statistics file in a lake.
pub const STATS_CURRENT_FILE: &str = "stats_current.parquet";

/// Writes the statistics tables and holds the current values.
pub struct StatsWriter {
    lake: PathBuf,
    rules: RuleSet,
    changes: PartWriter,
    memberships: PartWriter,
    current: BTreeMap<StatKey, i64>,
}

impl StatsWriter {
    pub fn new(lake: &Path, worker: usize, rules: RuleSet) -> StatsWriter {
        StatsWriter {
            lake: lake.to_path_buf(),
            changes: PartWriter::new(lake, "stats_changes", worker),
            memberships: PartWriter::new(lake, "near_duplicates", worker),
            rules,
            current: BTreeMap::new(),
        }
    }

    /// The current value of every statistic (the live statistics).
    pub fn current(&self) -> &BTreeMap<StatKey, i64> {
        &self.current
    }

    /// Paths the statistics count: files with content features and skipped entries.
    pub fn tracked_paths(&self) -> u64 {
        [Metric::Files, Metric::Skipped]
            .into_iter()
            .map(|m| {
                let key = StatKey::new(Dimension::Total, "", None, m);
                self.current.get(&key).copied().unwrap_or(0).max(0) as u64
            })
            .sum()
    }

    /// Applies the changes of a completed epoch (any order, repeated keys allowed) to the current
    /// values and, when `record` is set, writes them to `stats_changes`. The restored state of a
    /// restarted run (epoch 0) is applied without being recorded again. Returns the consolidated
    /// changes, sorted by key.
    pub fn apply(
        &mut self,
        epoch: u64,
        changes: impl IntoIterator<Item = (StatKey, i64)>,
        record: bool,
    ) -> Result<Vec<(StatKey, i64)>, SinkError> {
        let mut consolidated: BTreeMap<StatKey, i64> = BTreeMap::new();
        for (key, diff) in changes {
            *consolidated.entry(key).or_default() += diff;
        }
        let rows: Vec<(u64, StatKey, i64)> = consolidated
            .into_iter()
            .filter(|(_, diff)| *diff != 0)
            .map(|(key, diff)| (epoch, key, diff))
            .collect();
        if record && !rows.is_empty() {
            let batch =
                tables::stats_changes(&rows, &self.rules).map_err(|source| SinkError::Arrow {
                    table: "stats_changes".into(),
                    source,
                })?;
            self.changes.write(&batch, epoch, epoch)?;
        }
        let mut applied = Vec::with_capacity(rows.len());
        for (_, key, diff) in rows {
            let value = self.current.entry(key.clone()).or_default();
            *value += diff;
            if *value == 0 {
                self.current.remove(&key);
            }
            applied.push((key, diff));
        }
        Ok(applied)
    }

    /// Writes the near-duplicate membership changes of a completed epoch (any order, repeated
    /// memberships allowed) to `near_duplicates`.
    pub fn record_memberships(
        &mut self,
        epoch: u64,
        changes: impl IntoIterator<Item = (Membership, i64)>,
    ) -> Result<(), SinkError> {
        let changes: Vec<(Membership, i64)> = changes.into_iter().collect();
        // Consolidated by what a row shows, not by the whole membership: a member whose signature
        // changed while its cluster, representative and similarity stayed the same has no row
        // (its old and new memberships would write a +1 and a -1 row that are the same).
        let mut consolidated: BTreeMap<_, (i64, &Membership)> = BTreeMap::new();
        for (m, diff) in &changes {
            let shown = (
                (
                    m.member.source.as_str(),
                    m.member.path.as_slice(),
                    m.cluster,
                ),
                (
                    m.representative.source.as_str(),
                    m.representative.path.as_slice(),
                ),
                m.similarity().to_bits(),
            );
            consolidated.entry(shown).or_insert((0, m)).0 += diff;
        }
        let rows: Vec<NearDuplicateRow<'_>> = consolidated
            .values()
            .filter(|(diff, _)| *diff != 0)
            .map(|(diff, m)| NearDuplicateRow {
                epoch,
                source: &m.member.source,
                path: &m.member.path,
                cluster: m.cluster,
                representative_source: &m.representative.source,
                representative_path: &m.representative.path,
                similarity: m.similarity(),
                diff: *diff,
            })
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let batch = tables::near_duplicates(&rows).map_err(|source| SinkError::Arrow {
            table: "near_duplicates".into(),
            source,
        })?;
        self.memberships.write(&batch, epoch, epoch)
    }

    /// Closes the open `stats_changes` and `near_duplicates` parts, for a commit.
    pub fn close_part(&mut self) -> Result<(), SinkError> {
        self.changes.close()?;
        self.memberships.close()
    }

    /// Replaces `stats_current.parquet` with the current values, as of `epoch`.
    pub fn write_current(&mut self, epoch: u64) -> Result<(), SinkError> {
        let batch =
            tables::stats_current(self.current.iter(), epoch, &self.rules).map_err(|source| {
                SinkError::Arrow {
                    table: "stats_current".into(),
                    source,
                }
            })?;
        replace_file(&self.lake.join(STATS_CURRENT_FILE), "stats_current", &batch)
    }

    /// The `stats_changes` and `near_duplicates` parts written.
    pub fn finish(self) -> Result<Vec<PathBuf>, SinkError> {
        let mut parts = self.changes.finish()?.1;
        parts.extend(self.memberships.finish()?.1);
        Ok(parts)
    }
}
