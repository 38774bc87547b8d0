//! The published snapshot and the committed lake -> the answers every face of the API gives:
//! filtered statistics, the change stream (a snapshot, then one diff per epoch, resumable from
//! the lake), the committed epochs, the rules with their counts, and the committed files and
//! duplicates (from a [`LakeView`] cached by committed epoch). REST and GraphQL only parse, call
//! this and encode.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::RuleInfo;
use super::lake_view::{self, Duplicates, FileDetail, FilesFilter, FilesPage, LakeView};
use super::live::{EpochDiff, Live, Snapshot, StatRow, diff_json};
use crate::dataflow::stats::{Dimension, Metric};

/// What the answers are read from: the live snapshot, the lake it commits to, the rules.
#[derive(Clone)]
pub struct Model {
    pub live: Arc<Live>,
    /// Resumed streams and the epochs read the lake; None: no lake (no history, no epochs).
    pub lake: Option<Arc<PathBuf>>,
    pub rules: Arc<Vec<RuleInfo>>,
    /// The compiled rules the lake's rule counts are read by.
    /// The pipeline's rule ids, by index.
    pub rule_ids: Arc<[String]>,
    /// The committed lake's view, loaded again when the committed epoch moves.
    pub view: Arc<ViewCache>,
}

/// The newest view the server loaded, and a lock so that one request loads a new one while
/// the others wait for it.
#[derive(Default)]
pub struct ViewCache {
    current: ArcSwapOption<LakeView>,
    loading: tokio::sync::Mutex<()>,
}

/// Why a question has no answer; each face turns it into its own kind of error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// The question is malformed: an unknown dimension, an epoch still to come.
    BadRequest(String),
    /// What was asked for is no longer kept.
    Gone(String),
    /// No such file.
    NotFound(String),
    /// The run is not ready: restoring the state or processing the first epoch.
    NotReady(String),
    /// Reading the lake failed; the details are logged, not shown.
    Internal(String),
}

impl QueryError {
    pub fn message(&self) -> &str {
        match self {
            QueryError::BadRequest(m)
            | QueryError::Gone(m)
            | QueryError::NotFound(m)
            | QueryError::NotReady(m)
            | QueryError::Internal(m) => m,
        }
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// The filters of the statistics; each absent one matches every row.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsFilter {
    /// Only rows of this dimension.
    pub dimension: Option<String>,
    /// Only rows with this key.
    pub key: Option<String>,
    /// Only rows of this rule id.
    pub rule: Option<String>,
    /// Only rows of this metric.
    pub metric: Option<String>,
}

impl StatsFilter {
    /// Refuses a dimension or metric that does not exist, naming the ones that do.
    pub fn check(&self) -> Result<(), QueryError> {
        let dimensions = Dimension::ALL.map(Dimension::as_str);
        let metrics = Metric::ALL.map(Metric::as_str);
        for (field, value, known) in [
            ("dimension", &self.dimension, &dimensions[..]),
            ("metric", &self.metric, &metrics[..]),
        ] {
            if let Some(value) = value
                && !known.contains(&value.as_str())
            {
                return Err(QueryError::BadRequest(format!(
                    "unknown {field} '{value}': one of {}",
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Selects every row.
    pub fn is_everything(&self) -> bool {
        self.dimension.is_none()
            && self.key.is_none()
            && self.rule.is_none()
            && self.metric.is_none()
    }

    pub fn matches(&self, row: &StatRow) -> bool {
        self.selects(row.dimension, &row.key, row.rule.as_deref(), row.metric)
    }

    fn selects(&self, dimension: &str, key: &str, rule: Option<&str>, metric: &str) -> bool {
        self.dimension.as_deref().is_none_or(|d| d == dimension)
            && self.key.as_deref().is_none_or(|k| k == key)
            && self.rule.as_deref().is_none_or(|r| Some(r) == rule)
            && self.metric.as_deref().is_none_or(|m| m == metric)
    }
}

/// Where a stream resumes: after `epoch`, as sent by `run` (a stream event id `EPOCH-RUN`), or
/// after a committed epoch of any run when `run` is None or another run's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub epoch: u64,
    pub run: Option<String>,
}

impl std::str::FromStr for Resume {
    type Err = String;

    /// `EPOCH` or `EPOCH-RUN`.
    fn from_str(text: &str) -> Result<Resume, String> {
        let (epoch, run) = match text.split_once('-') {
            Some((epoch, run)) => (epoch, Some(run)),
            None => (text, None),
        };
        let bad = || format!("'{text}' is not an epoch: EPOCH or EPOCH-RUN is expected");
        if let Some(run) = run
            && (run.is_empty() || !run.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(bad());
        }
        Ok(Resume {
            epoch: epoch.parse().map_err(|_| bad())?,
            run: run.map(str::to_string),
        })
    }
}

/// The statistics as of an epoch: the body of `/api/v1/stats` and of a stream's snapshot.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, async_graphql::SimpleObject)]
pub struct StatsBody {
    /// Every epoch through this one is counted.
    pub epoch: u64,
    /// The lake's last commit.
    pub committed_epoch: u64,
    /// The id of the server's run: a stream resumes after `EPOCH-RUN` (see `/api/v1/stats/stream`).
    pub run: String,
    pub rows: Vec<StatRow>,
}

impl StatsBody {
    pub fn of(snapshot: &Snapshot, filter: &StatsFilter) -> StatsBody {
        StatsBody {
            epoch: snapshot.epoch,
            committed_epoch: snapshot.committed_epoch,
            run: snapshot.run.to_string(),
            rows: (snapshot.values.iter())
                .filter(|(key, _)| {
                    let rule = key.rule.map(|r| snapshot.rule_ids[r as usize].as_str());
                    filter.selects(key.dimension.as_str(), &key.key, rule, key.metric.as_str())
                })
                .map(|(key, value)| StatRow::of(key, *value, &snapshot.rule_ids))
                .collect(),
        }
    }
}

/// The changes of one epoch that a filter selects: the body of a stream's `diff`.
#[derive(Debug, Clone)]
pub struct DiffBody {
    pub epoch: u64,
    rows: DiffRows,
}

#[derive(Debug, Clone)]
enum DiffRows {
    /// The filter selects every row: the epoch's diff as published, shared by every stream.
    All(Arc<EpochDiff>),
    Selected(Vec<StatRow>),
}

impl DiffBody {
    fn of(epoch: u64, rows: &[StatRow], filter: &StatsFilter) -> DiffBody {
        DiffBody {
            epoch,
            rows: DiffRows::Selected(rows.iter().filter(|r| filter.matches(r)).cloned().collect()),
        }
    }

    fn of_live(diff: &Arc<EpochDiff>, filter: &StatsFilter) -> DiffBody {
        if filter.is_everything() {
            return DiffBody {
                epoch: diff.epoch,
                rows: DiffRows::All(diff.clone()),
            };
        }
        DiffBody::of(diff.epoch, &diff.rows, filter)
    }

    pub fn rows(&self) -> &[StatRow] {
        match &self.rows {
            DiffRows::All(diff) => &diff.rows,
            DiffRows::Selected(rows) => rows,
        }
    }

    /// `{"epoch":..,"rows":[..]}`; a diff of every row is encoded once for all its streams.
    pub fn json(&self) -> Arc<str> {
        match &self.rows {
            DiffRows::All(diff) => diff.json(),
            DiffRows::Selected(rows) => diff_json(self.epoch, rows),
        }
    }
}

/// One item of a change stream.
#[derive(Debug, Clone)]
pub enum Change {
    /// The statistics a stream that does not resume starts from.
    Snapshot(StatsBody),
    /// One epoch's changes, epochs in increasing order.
    Diff(DiffBody),
    /// The client fell this many epochs behind the bounded history; the stream ends here.
    Lagged(u64),
}

/// One committed epoch as `/api/v1/epochs` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, async_graphql::SimpleObject)]
pub struct EpochBody {
    pub epoch: u64,
    /// RFC 3339, UTC.
    pub committed_at: String,
    pub committed_at_ms: u64,
    /// "epoch", "checkpoint" or "compaction".
    pub action: String,
    /// The `stats_changes` rows of the epochs this commit covers (after the previous record's
    /// epoch); null for the oldest record kept when its predecessor is gone.
    pub stats_changes_rows: Option<u64>,
}

/// One of the pipeline's rules with its current counts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, async_graphql::SimpleObject)]
pub struct RuleBody {
    pub id: String,
    /// Withheld (null) for a secret rule.
    pub pattern: Option<String>,
    pub regex: bool,
    pub secret: bool,
    /// Current files with at least one match.
    pub files: i64,
    /// Matches in the current files.
    pub matches: i64,
}

/// The pipeline's rules with their counts, as of an epoch.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, async_graphql::SimpleObject)]
pub struct RulesBody {
    pub epoch: u64,
    pub rules: Vec<RuleBody>,
}

/// Where a stream is: the snapshot still to send (none when resuming), then the diffs after it.
enum StreamState {
    Snapshot(broadcast::Receiver<Arc<EpochDiff>>, Arc<Snapshot>),
    Diffs(broadcast::Receiver<Arc<EpochDiff>>, u64),
    Ended,
}

/// The answer of what needs the run ready (or its restored state in) before it is.
pub(super) fn not_ready() -> QueryError {
    QueryError::NotReady("not ready: restoring the state or processing the first epoch".into())
}

impl Model {
    /// The run id of the process that serves (see [`Live::run`]).
    pub fn run(&self) -> &str {
        self.live.run()
    }

    /// The latest snapshot, once the restored state is in it: before, its statistics are not
    /// what is true as of any epoch.
    fn restored_snapshot(&self) -> Result<Arc<Snapshot>, QueryError> {
        let snapshot = self.live.snapshot();
        snapshot.restored.then_some(snapshot).ok_or_else(not_ready)
    }

    /// The statistics the filter selects, as of the latest snapshot.
    pub fn stats(&self, filter: &StatsFilter) -> Result<StatsBody, QueryError> {
        filter.check()?;
        Ok(StatsBody::of(&*self.restored_snapshot()?, filter))
    }

    /// The pipeline's rules with the files and matches the live statistics count for each.
    pub fn rules(&self) -> Result<RulesBody, QueryError> {
        let snapshot = self.restored_snapshot()?;
        let mut counts = std::collections::HashMap::new();
        for (key, value) in snapshot.values.iter() {
            if let (Dimension::Rule, Some(rule)) = (key.dimension, key.rule) {
                counts.insert(
                    (snapshot.rule_ids[rule as usize].as_str(), key.metric),
                    *value,
                );
            }
        }
        let count = |id: &str, metric: Metric| counts.get(&(id, metric)).copied().unwrap_or(0);
        let rules = (self.rules.iter())
            .map(|rule| RuleBody {
                id: rule.id.clone(),
                pattern: rule.pattern.clone(),
                regex: rule.regex,
                secret: rule.secret,
                files: count(&rule.id, Metric::Files),
                matches: count(&rule.id, Metric::Matches),
            })
            .collect();
        Ok(RulesBody {
            epoch: snapshot.epoch,
            rules,
        })
    }

    /// The committed epochs of the lake's kept commit records, newest first; none without a lake.
    pub async fn epochs(&self) -> Result<Vec<EpochBody>, QueryError> {
        let Some(lake) = self.lake.clone() else {
            return Ok(Vec::new());
        };
        let read = tokio::task::spawn_blocking(move || committed_epochs(&lake))
            .await
            .map_err(|e| e.to_string())
            .and_then(|read| read);
        read.map_err(|e| {
            tracing::error!(error = %e, "cannot read the commit records");
            QueryError::Internal("cannot read the lake's commit records".into())
        })
    }

    /// The committed lake's view as of the latest snapshot's committed epoch: the cached one
    /// while that epoch has not moved, else one loaded on a blocking thread.
    pub async fn view(&self) -> Result<Arc<LakeView>, QueryError> {
        let snapshot = self.live.snapshot();
        if !snapshot.ready {
            return Err(not_ready());
        }
        let epoch = snapshot.committed_epoch;
        let cached =
            || (self.view.current.load_full()).filter(|view| view.committed_epoch == epoch);
        if let Some(view) = cached() {
            return Ok(view);
        }
        let _loading = self.view.loading.lock().await;
        if let Some(view) = cached() {
            return Ok(view);
        }
        let view = match self.lake.clone() {
            None => Arc::new(LakeView::default()),
            Some(lake) => {
                let rules = self.rule_ids.clone();
                let loaded =
                    tokio::task::spawn_blocking(move || LakeView::load(&lake, epoch, &rules))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|loaded| loaded.map_err(|e| e.to_string()));
                let view = loaded.map_err(|error| {
                    tracing::error!(error = %error, "cannot read the committed lake");
                    QueryError::Internal("cannot read the committed lake".into())
                })?;
                Arc::new(view)
            }
        };
        self.view.current.store(Some(view.clone()));
        Ok(view)
    }

    /// A page of the committed lake's current files, ordered by (source, path).
    pub async fn files(&self, filter: &FilesFilter) -> Result<FilesPage, QueryError> {
        let view = self.view().await?;
        lake_view::files(&view, filter).map_err(|e| QueryError::BadRequest(e.to_string()))
    }

    /// One current file of the committed lake. `source` and `path` are a lake key, looked up
    /// in the view only: nothing here opens a file by them.
    pub async fn file(&self, source: &str, path: &str) -> Result<FileDetail, QueryError> {
        if let Some(reason) = not_a_key(source).or_else(|| not_a_key(path)) {
            return Err(QueryError::BadRequest(format!(
                "not a lake key: the path {reason}"
            )));
        }
        let view = self.view().await?;
        lake_view::file(&view, source, path).ok_or_else(|| {
            QueryError::NotFound(format!("no current file {path:?} in source {source:?}"))
        })
    }

    /// The committed lake's exact duplicate groups and near-duplicate clusters.
    pub async fn duplicates(&self) -> Result<Duplicates, QueryError> {
        Ok(lake_view::duplicates(&*self.view().await?))
    }

    /// The statistics the filter selects as a stream: without `since`, a snapshot, then the
    /// changes of every later epoch; with `since`, the changes of the epochs after that one (from
    /// the live history, or from the lake's `stats_changes` for those it no longer holds), then
    /// the live ones. A client that falls behind the bounded history gets [`Change::Lagged`] and
    /// the stream ends: nothing is ever buffered for it beyond that history.
    pub async fn changes(
        &self,
        filter: StatsFilter,
        since: Option<Resume>,
    ) -> Result<BoxStream<'static, Change>, QueryError> {
        filter.check()?;
        // Subscribed before the snapshot is read, so no diff falls between them.
        let diffs = self.live.subscribe();
        let snapshot = self.restored_snapshot()?;
        let mut prefix = Vec::new();
        let start = match since {
            None => StreamState::Snapshot(diffs, snapshot),
            Some(resume) => {
                let since = resume.epoch;
                let this_run = resume.run.as_deref() == Some(self.live.run());
                // Another run may have published other changes under the same uncommitted
                // epoch: only what that run committed is the same in every run.
                if !this_run && !self.committed_as_sent(&resume, &snapshot).await {
                    let by =
                        (resume.run.as_deref()).map_or(String::new(), |r| format!(" by run {r}"));
                    return Err(QueryError::Gone(format!(
                        "epoch {since} was not committed{by} (the last commit is epoch {}): its \
                         changes are not kept; connect without since for a snapshot",
                        snapshot.committed_epoch
                    )));
                }
                if since > snapshot.epoch {
                    return Err(QueryError::BadRequest(format!(
                        "epoch {since} is after the current epoch {}",
                        snapshot.epoch
                    )));
                }
                let floor = snapshot.history_floor();
                if since < floor {
                    let committed = self.committed_diffs(&snapshot, since, floor).await?;
                    for (epoch, rows) in committed {
                        prefix.push(Change::Diff(DiffBody::of(epoch, &rows, &filter)));
                    }
                }
                for diff in snapshot.recent.iter().filter(|d| d.epoch > since) {
                    prefix.push(Change::Diff(DiffBody::of_live(diff, &filter)));
                }
                StreamState::Diffs(diffs, snapshot.seq)
            }
        };
        let filter = Arc::new(filter);
        let live = futures_util::stream::unfold(start, move |place| {
            let filter = filter.clone();
            async move {
                match place {
                    StreamState::Snapshot(diffs, snapshot) => {
                        let body = StatsBody::of(&snapshot, &filter);
                        Some((
                            Change::Snapshot(body),
                            StreamState::Diffs(diffs, snapshot.seq),
                        ))
                    }
                    StreamState::Diffs(mut diffs, seen) => loop {
                        match diffs.recv().await {
                            Ok(diff) if diff.seq <= seen => continue,
                            Ok(diff) => {
                                let body = DiffBody::of_live(&diff, &filter);
                                break Some((
                                    Change::Diff(body),
                                    StreamState::Diffs(diffs, diff.seq),
                                ));
                            }
                            Err(broadcast::error::RecvError::Lagged(missed)) => {
                                break Some((Change::Lagged(missed), StreamState::Ended));
                            }
                            Err(broadcast::error::RecvError::Closed) => break None,
                        }
                    },
                    StreamState::Ended => None,
                }
            }
        });
        Ok(futures_util::stream::iter(prefix).chain(live).boxed())
    }

    /// The lake holds what was sent up to `resume`, by another run: a bare epoch is a committed
    /// one, and `EPOCH-RUN` is one that RUN committed itself (its commit records say through
    /// which epoch; a run that crashed may have sent later ones that the lake never held).
    async fn committed_as_sent(&self, resume: &Resume, snapshot: &Snapshot) -> bool {
        if resume.epoch > snapshot.committed_epoch {
            return false;
        }
        let Some(run) = resume.run.clone() else {
            return true;
        };
        let Some(lake) = self.lake.clone() else {
            return false;
        };
        let through = tokio::task::spawn_blocking(move || {
            let head = crate::sink::commit::records(&lake).pop();
            head.and_then(|h| h.committed_by(&run))
        });
        matches!(through.await, Ok(Some(through)) if resume.epoch <= through)
    }

    /// The committed changes of the epochs after `since` through `floor`, which the live
    /// history no longer holds.
    async fn committed_diffs(
        &self,
        snapshot: &Snapshot,
        since: u64,
        floor: u64,
    ) -> Result<std::collections::BTreeMap<u64, Vec<StatRow>>, QueryError> {
        let Some(lake) = self.lake.clone() else {
            return Err(QueryError::Gone(format!(
                "epoch {since} is older than the history this server keeps"
            )));
        };
        if floor > snapshot.committed_epoch && snapshot.recent_trimmed {
            return Err(QueryError::Gone(format!(
                "the changes after epoch {since} are no longer kept and not yet committed; \
                 connect without since for a snapshot"
            )));
        }
        let read = tokio::task::spawn_blocking(move || {
            // A compaction may swap parts away while they are read: read again.
            let mut tries = 0;
            loop {
                match super::history::committed_diffs(&lake, since, floor) {
                    Err(_) if tries < 2 => tries += 1,
                    read => break read,
                }
            }
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|read| read);
        read.map_err(|e| {
            tracing::error!(error = %e, "cannot read the committed changes");
            QueryError::Internal("cannot read the committed changes of the lake".into())
        })
    }
}

/// Why a path cannot be a lake key, if it cannot: keys are relative, '/'-separated names
/// without empty, `.` or `..` components and without NUL.
fn not_a_key(path: &str) -> Option<&'static str> {
    if path.contains('\0') {
        Some("holds a NUL")
    } else if path.starts_with('/') {
        Some("is absolute")
    } else if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        Some("has an empty, '.' or '..' component")
    } else {
        None
    }
}

/// The lake's kept commit records as epochs, newest first. Reads files: call it on a blocking
/// thread.
fn committed_epochs(lake: &std::path::Path) -> Result<Vec<EpochBody>, String> {
    let records = crate::sink::commit::records(lake);
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Ok(Vec::new());
    };
    // The epoch each record commits after: its predecessor's, or 0 for the lake's first.
    let after = |i: usize| match i {
        0 => (records[0].sequence == 1).then_some(0),
        _ => Some(records[i - 1].epoch),
    };
    let from = after(0).unwrap_or(first.epoch);
    let diffs = super::history::committed_diffs(lake, from, last.epoch)?;
    let mut bodies = Vec::with_capacity(records.len());
    for (i, record) in records.iter().enumerate() {
        let rows = after(i).map(|after| {
            if record.epoch <= after {
                return 0;
            }
            (diffs.range(after + 1..=record.epoch))
                .map(|(_, rows)| rows.len() as u64)
                .sum()
        });
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(record.committed_at_ms);
        bodies.push(EpochBody {
            epoch: record.epoch,
            committed_at: humantime::format_rfc3339_millis(at).to_string(),
            committed_at_ms: record.committed_at_ms,
            action: record.action.clone(),
            stats_changes_rows: rows,
        });
    }
    bodies.reverse();
    Ok(bodies)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{DiffBody, StatsFilter, not_a_key};
    use crate::api::live::{EpochDiff, StatRow};

    #[test]
    fn api_a_diff_encoded_once_for_every_stream_is_the_one_each_would_encode() {
        let row = |key: &str, rule: Option<&str>, value| StatRow {
            dimension: "language",
            key: key.into(),
            rule: rule.map(str::to_string),
            metric: "files",
            value,
        };
        let rows = vec![row("Rust", None, 2), row("\"C\"\n", Some("r1"), -1)];
        let diff = Arc::new(EpochDiff::new(3, 7, rows.clone()));
        let everything = StatsFilter::default();
        let shared = DiffBody::of_live(&diff, &everything);
        let own = DiffBody::of(7, &rows, &everything);
        assert_eq!(shared.json(), own.json());
        assert!(Arc::ptr_eq(
            &shared.json(),
            &DiffBody::of_live(&diff, &everything).json()
        ));
        let value: serde_json::Value = serde_json::from_str(&shared.json()).unwrap();
        assert_eq!(value["epoch"], 7);
        assert_eq!(value["rows"][1]["key"], "\"C\"\n");
        assert_eq!(value["rows"][1]["value"], -1);
        let rust = StatsFilter {
            key: Some("Rust".into()),
            ..StatsFilter::default()
        };
        assert_eq!(DiffBody::of_live(&diff, &rust).rows(), &rows[..1]);
    }

    #[test]
    fn api_only_relative_clean_names_are_lake_keys() {
        for key in ["a.rs", "src/a.rs", "a..b/c", "dir\\..\\x", "...", "%2e%2e"] {
            assert_eq!(not_a_key(key), None, "{key}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a/",
            "a\0b",
        ] {
            assert!(not_a_key(bad).is_some(), "{bad:?}");
        }
    }
}
