//! Applied epochs on the commit coordinator -> an immutable snapshot of the live statistics and a
//! bounded stream of per-epoch diffs, which the server reads without ever holding a worker up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use imbl::{OrdMap, Vector};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::dataflow::stats::StatKey;
use crate::pipeline::RuleSet;
use crate::progress::Progress;

/// Per-epoch diffs kept for stream clients; one that falls this far behind is disconnected.
pub const DEFAULT_DIFF_HISTORY: usize = 1024;

/// One statistic as the API shows it: a row of `stats_current`, or a change of one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema, async_graphql::SimpleObject)]
pub struct StatRow {
    pub dimension: &'static str,
    pub key: String,
    /// The rule's id, for the rule dimensions.
    pub rule: Option<String>,
    pub metric: &'static str,
    /// The value, or in a diff the change of the value.
    pub value: i64,
}

impl StatRow {
    /// `rule_ids` holds the id of each rule index.
    pub fn of(key: &StatKey, value: i64, rule_ids: &[String]) -> StatRow {
        StatRow {
            dimension: key.dimension.as_str(),
            key: key.key.to_string(),
            rule: key.rule.map(|r| rule_ids[r as usize].clone()),
            metric: key.metric.as_str(),
            value,
        }
    }
}

/// The live statistics as of an epoch. Never changed once published.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Counts publications: a diff with `seq` at most this one is already in `rows`.
    pub seq: u64,
    /// Every epoch up to this one is in `rows`.
    pub epoch: u64,
    /// The lake's last commit.
    pub committed_epoch: u64,
    /// The restored state is applied and the run's first epoch processed.
    pub ready: bool,
    /// The restored state is in `values` (always so once `ready`): from here on the values are
    /// what is true as of `epoch`, though the run may still be processing its first epoch.
    pub restored: bool,
    /// The value of every statistic: a persistent map, so that publishing one costs O(1) and
    /// applying an epoch to the next one O(changes), however many statistics there are.
    pub values: OrdMap<StatKey, i64>,
    /// The id of each rule index.
    pub rule_ids: Arc<[String]>,
    /// The newest diffs (at most the history's length), oldest first, for streams that resume.
    pub recent: Vector<Arc<EpochDiff>>,
    /// Every diff of an epoch above this one is in `recent`; None while this run published none,
    /// in which case every change through `committed_epoch` is in the lake and none after it.
    pub recent_after: Option<u64>,
    /// Diffs were dropped from `recent` to bound it: those through `recent_after` that are not
    /// committed yet are in neither place.
    pub recent_trimmed: bool,
    /// The process that published this snapshot (see [`Live::run`]).
    pub run: Arc<str>,
}

impl Snapshot {
    /// The epoch after which [`Snapshot::recent`] holds every diff; the lake holds the ones
    /// through it.
    pub fn history_floor(&self) -> u64 {
        self.recent_after.unwrap_or(self.committed_epoch)
    }

    /// The statistics as rows, in the order of their keys.
    pub fn rows(&self) -> impl Iterator<Item = StatRow> + '_ {
        (self.values.iter()).map(|(key, value)| StatRow::of(key, *value, &self.rule_ids))
    }
}

/// The changes of one applied epoch.
#[derive(Debug)]
pub struct EpochDiff {
    pub seq: u64,
    pub epoch: u64,
    pub rows: Arc<[StatRow]>,
    /// `{"epoch":..,"rows":[..]}`, encoded by the first stream that sends the whole diff: every
    /// unfiltered stream sends these same bytes, so however many clients listen, an epoch is
    /// encoded once.
    json: OnceLock<Arc<str>>,
}

impl EpochDiff {
    pub fn new(seq: u64, epoch: u64, rows: Vec<StatRow>) -> EpochDiff {
        EpochDiff {
            seq,
            epoch,
            rows: Arc::from(rows),
            json: OnceLock::new(),
        }
    }

    /// The whole diff as JSON, encoded once.
    pub fn json(&self) -> Arc<str> {
        (self.json.get_or_init(|| diff_json(self.epoch, &self.rows))).clone()
    }
}

/// The body of a stream's `diff` event: `{"epoch":..,"rows":[..]}`.
pub fn diff_json(epoch: u64, rows: &[StatRow]) -> Arc<str> {
    #[derive(Serialize)]
    struct Body<'a> {
        epoch: u64,
        rows: &'a [StatRow],
    }
    let body = Body { epoch, rows };
    Arc::from(serde_json::to_string(&body).expect("statistics encode as JSON"))
}

/// What the dataflow publishes and the server reads.
pub struct Live {
    snapshot: ArcSwap<Snapshot>,
    /// Held while a new snapshot is made from the latest one: the dataflow publishes, and the
    /// lake's commit thread advances the committed epoch, and neither may undo the other.
    writing: Mutex<()>,
    diffs: broadcast::Sender<Arc<EpochDiff>>,
    seq: AtomicU64,
    history: usize,
    /// Files and bytes read by this run.
    pub progress: Arc<Progress>,
    run: Arc<str>,
}

/// The id of this process's run: 8 hex digits of a hash of its pid and start time. The lake's
/// commit records name the runs that wrote them (see `sink::commit::CommitRecord::runs`).
pub fn run_id() -> Arc<str> {
    static RUN: OnceLock<Arc<str>> = OnceLock::new();
    RUN.get_or_init(new_run_id).clone()
}

fn new_run_id() -> Arc<str> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut hasher = DefaultHasher::new();
    (std::process::id(), nanos).hash(&mut hasher);
    let hash = hasher.finish();
    Arc::from(format!("{:08x}", (hash ^ (hash >> 32)) as u32))
}

impl Live {
    pub fn new(history: usize) -> Live {
        let (diffs, _) = broadcast::channel(history.max(1));
        let run = run_id();
        Live {
            snapshot: ArcSwap::from_pointee(Snapshot {
                run: run.clone(),
                ..Snapshot::default()
            }),
            run,
            diffs,
            writing: Mutex::new(()),
            seq: AtomicU64::new(0),
            history: history.max(1),
            progress: Arc::new(Progress::default()),
        }
    }

    /// This process's run id. Epochs it published but the lake never committed may be published
    /// again with other contents by a later run, so a stream resumes after such an epoch only in
    /// the run that sent it.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Diffs published from now on. Subscribe before reading the snapshot, then skip the diffs
    /// whose `seq` the snapshot already holds: nothing is missed or counted twice.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EpochDiff>> {
        self.diffs.subscribe()
    }

    /// Publishes the statistics after an epoch's `changes` were applied. Called by the commit
    /// coordinator; never waits for a reader.
    pub fn publish(
        &self,
        epoch: u64,
        values: OrdMap<StatKey, i64>,
        rule_ids: Arc<[String]>,
        changes: Vec<StatRow>,
    ) {
        let _writing = self.writing.lock().expect("live snapshot lock");
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let previous = self.snapshot.load();
        let diff = Arc::new(EpochDiff::new(seq, epoch, changes));
        let mut recent = previous.recent.clone();
        let mut recent_after = previous.recent_after;
        let mut recent_trimmed = previous.recent_trimmed;
        // Epoch 0 is the restored state: its changes are the lake's, not an epoch's.
        if epoch > 0 && !diff.rows.is_empty() {
            recent_after.get_or_insert(epoch - 1);
            recent.push_back(diff.clone());
            while recent.len() > self.history {
                if let Some(old) = recent.pop_front() {
                    recent_after = Some(old.epoch);
                    recent_trimmed = true;
                }
            }
        }
        self.snapshot.store(Arc::new(Snapshot {
            seq,
            epoch: epoch.max(previous.epoch),
            committed_epoch: previous.committed_epoch,
            ready: previous.ready,
            restored: previous.restored,
            values,
            rule_ids,
            recent,
            recent_after,
            recent_trimmed,
            run: previous.run.clone(),
        }));
        if !diff.rows.is_empty() {
            // An error only means that no client listens.
            let _ = self.diffs.send(diff);
        }
    }

    /// Records progress without a change of the statistics: every epoch through `epoch` is
    /// applied, the lake is committed at `committed` (or later), and whether the run is ready.
    pub fn advance(&self, epoch: u64, committed: u64, ready: bool) {
        let _writing = self.writing.lock().expect("live snapshot lock");
        let previous = self.snapshot.load();
        // Never back: the caller's view of the commits may be older than the commit thread's.
        let committed = committed.max(previous.committed_epoch);
        let epoch = epoch.max(previous.epoch).max(committed);
        let ready = ready || previous.ready;
        if epoch == previous.epoch
            && committed == previous.committed_epoch
            && ready == previous.ready
        {
            return;
        }
        self.snapshot.store(Arc::new(Snapshot {
            epoch,
            committed_epoch: committed,
            ready,
            restored: previous.restored || ready,
            ..Snapshot::clone(&previous)
        }));
    }

    /// The restored state is published: the values are what is true as of their epoch.
    pub fn mark_restored(&self) {
        let _writing = self.writing.lock().expect("live snapshot lock");
        let previous = self.snapshot.load();
        if !previous.restored {
            self.snapshot.store(Arc::new(Snapshot {
                restored: true,
                ..Snapshot::clone(&previous)
            }));
        }
    }
}

/// The commit coordinator's side of a [`Live`]: the statistics as last published, which each
/// applied epoch updates in O(changes).
pub struct LivePublisher {
    live: Arc<Live>,
    values: OrdMap<StatKey, i64>,
    rule_ids: Arc<[String]>,
}

impl LivePublisher {
    pub fn new(live: Arc<Live>, rules: &RuleSet) -> LivePublisher {
        let ids: Vec<String> = (0..rules.len() as u32)
            .map(|r| rules.id(r).to_string())
            .collect();
        LivePublisher {
            live,
            values: OrdMap::new(),
            rule_ids: Arc::from(ids),
        }
    }

    pub fn live(&self) -> &Live {
        &self.live
    }

    /// Publishes the statistics after an epoch's consolidated `changes` were applied.
    pub fn publish_epoch(&mut self, epoch: u64, changes: Vec<(StatKey, i64)>) {
        if changes.is_empty() {
            return;
        }
        let mut rows = Vec::with_capacity(changes.len());
        for (key, diff) in changes {
            rows.push(StatRow::of(&key, diff, &self.rule_ids));
            let value = self.values.get(&key).copied().unwrap_or(0) + diff;
            if value == 0 {
                self.values.remove(&key);
            } else {
                self.values.insert(key, value);
            }
        }
        (self.live).publish(epoch, self.values.clone(), self.rule_ids.clone(), rows);
    }
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snapshot = self.snapshot();
        f.debug_struct("Live")
            .field("epoch", &snapshot.epoch)
            .field("committed_epoch", &snapshot.committed_epoch)
            .field("statistics", &snapshot.values.len())
            .finish_non_exhaustive()
    }
}

impl Default for Live {
    fn default() -> Live {
        Live::new(DEFAULT_DIFF_HISTORY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::stats::{Dimension, Metric};

    fn key() -> StatKey {
        StatKey::new(Dimension::Total, "", None, Metric::Files)
    }

    fn row(value: i64) -> StatRow {
        StatRow::of(&key(), value, &[])
    }

    fn values(value: i64) -> OrdMap<StatKey, i64> {
        OrdMap::unit(key(), value)
    }

    #[test]
    fn api_live_snapshot_then_diffs_miss_nothing() {
        let live = Live::new(4);
        let ids: Arc<[String]> = Arc::from(Vec::new());
        live.publish(1, values(1), ids.clone(), vec![row(1)]);
        let mut diffs = live.subscribe();
        let snapshot = live.snapshot();
        live.publish(2, values(3), ids, vec![row(2)]);
        live.advance(3, 2, true);
        let diff = diffs.try_recv().unwrap();
        assert!(diff.seq > snapshot.seq);
        let first: Vec<StatRow> = snapshot.rows().collect();
        assert_eq!(first[0].value + diff.rows[0].value, 3);
        let now = live.snapshot();
        assert_eq!((now.epoch, now.committed_epoch, now.ready), (3, 2, true));
        assert_eq!(now.rows().next().unwrap(), row(3));
    }

    #[test]
    fn api_live_history_keeps_the_newest_diffs_and_says_from_where() {
        let live = Live::new(2);
        let ids: Arc<[String]> = Arc::from(Vec::new());
        live.advance(4, 4, true);
        assert_eq!(live.snapshot().history_floor(), 4, "the lake holds it all");
        // The restored state (epoch 0) is no epoch's diff.
        live.publish(0, values(1), ids.clone(), vec![row(1)]);
        assert!(live.snapshot().recent.is_empty());
        live.publish(6, values(2), ids.clone(), vec![row(1)]);
        assert_eq!(live.snapshot().history_floor(), 5);
        live.publish(7, values(3), ids.clone(), vec![row(1)]);
        live.publish(9, values(4), ids, vec![row(1)]);
        let snapshot = live.snapshot();
        let epochs: Vec<u64> = snapshot.recent.iter().map(|d| d.epoch).collect();
        assert_eq!(epochs, [7, 9]);
        assert_eq!(snapshot.history_floor(), 6);
        assert!(snapshot.recent_trimmed);
    }

    #[test]
    fn api_live_slow_subscriber_lags_instead_of_buffering() {
        let live = Live::new(2);
        let mut diffs = live.subscribe();
        for epoch in 1..=5 {
            live.publish(epoch, OrdMap::new(), Arc::from(Vec::new()), vec![row(1)]);
        }
        assert!(matches!(
            diffs.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
