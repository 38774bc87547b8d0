//! The statistics-writing operator, which drives the commit coordinator.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, Operator};
use timely::dataflow::{Stream, StreamVec};

use super::Shared;
use super::commit::Committer;
use super::control::Control;
use super::near_dup::Membership;
use super::stats::StatKey;
use super::time::epoch_of;
use crate::latency::LatencyRecorder;
use crate::progress::ErrorKind;
use crate::sink::SinkError;

/// Statistic changes and near-duplicate memberships, consolidated by their arrangements (one per
/// key and epoch, see [`super::stats::arrange_by_epoch`]) -> one worker, which applies each
/// epoch's changes once the epoch is complete and commits at the requested epochs (see
/// [`Committer`]).
pub(super) fn write_stats<'scope>(
    changes: Stream<'scope, u64, Vec<(StatKey, u64, isize)>>,
    memberships: Stream<'scope, u64, Vec<(Membership, u64, isize)>>,
    controls: StreamVec<'scope, u64, Control>,
    committer: Rc<RefCell<Committer>>,
    failure: Rc<RefCell<Option<SinkError>>>,
    shared: Arc<Shared>,
    latency: Option<Arc<LatencyRecorder>>,
) -> StreamVec<'scope, u64, ()> {
    // The control records come with the memberships: the commits they request are made once
    // the frontier of both is past them.
    let others = memberships
        .map(|(membership, time, diff)| Other::Membership(membership, time, diff))
        .concat(controls.map(Other::Control));
    changes.binary_frontier::<_, CapacityContainerBuilder<Vec<()>>, _, _, _, _>(
        others,
        Exchange::new(|_: &(StatKey, u64, isize)| 0u64),
        Exchange::new(|_: &Other| 0u64),
        "StatsWriter",
        move |_capability, _info| {
            let mut pending: BTreeMap<u64, EpochChanges> = BTreeMap::new();
            move |(input, frontier), (clusters, cluster_frontier), _output| {
                input.for_each(|_capability, data| {
                    for (key, time, diff) in data.drain(..) {
                        let epoch = pending.entry(epoch_of(time)).or_default();
                        epoch.stats.push((key, diff as i64));
                    }
                });
                clusters.for_each(|_capability, data| {
                    for other in data.drain(..) {
                        match other {
                            Other::Membership(membership, time, diff) => {
                                let epoch = pending.entry(epoch_of(time)).or_default();
                                epoch.memberships.push((membership, diff as i64));
                            }
                            Other::Control(control) => committer.borrow_mut().record(control),
                        }
                    }
                });
                // Times are totally ordered: the least of the two frontiers.
                let first = [frontier, cluster_frontier]
                    .into_iter()
                    .filter_map(|f| f.frontier().first().copied())
                    .min();
                let complete = complete_through(first);
                let mut committer = committer.borrow_mut();
                let coordinating =
                    |c: &Committer| !shared.abort.load(Ordering::Acquire) && c.is_coordinator();
                let result = apply_complete(&mut committer, &mut pending, first, &coordinating);
                if coordinating(&committer) {
                    committer.processed_through(complete);
                }
                if let Err(error) = result {
                    tracing::error!(error = %error, "commit failed");
                    shared.plan.progress.error(ErrorKind::Commit);
                    shared.abort.store(true, Ordering::Release);
                    failure.borrow_mut().get_or_insert(error);
                }
                if let Some(latency) = &latency {
                    // Every epoch the frontier has passed is reflected in the live statistics.
                    if let Some(c) = complete {
                        latency.reflected_through(c.min(u64::MAX - 1));
                    }
                }
            }
        },
    )
}

/// What the statistics writer takes besides the statistic changes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Other {
    Membership(Membership, u64, isize),
    Control(Control),
}

/// One open epoch's changes, as their arrangements consolidated them.
#[derive(Default)]
struct EpochChanges {
    stats: Vec<(StatKey, i64)>,
    memberships: Vec<(Membership, i64)>,
}

/// The last epoch complete below a frontier whose least time is `first` (none: every epoch).
fn complete_through(first: Option<u64>) -> Option<u64> {
    match first {
        Some(t) => epoch_of(t).checked_sub(1),
        None => Some(u64::MAX),
    }
}

/// Publishes and applies each pending epoch that is complete below the frontier `first`, in
/// order, and, on the coordinator, commits what the commit interval asks for: before each
/// epoch, the commits requested before it, and then those through the last complete epoch (or,
/// with no frontier left, the run's final commit).
fn apply_complete(
    committer: &mut Committer,
    pending: &mut BTreeMap<u64, EpochChanges>,
    first: Option<u64>,
    coordinating: &dyn Fn(&Committer) -> bool,
) -> Result<(), SinkError> {
    let complete = complete_through(first);
    while let Some(entry) = pending.first_entry() {
        if complete.is_none_or(|c| *entry.key() > c) {
            break;
        }
        let (epoch, changes) = entry.remove_entry();
        let stats = committer.publish(epoch, changes.stats);
        // Commits requested before this epoch first: the open `stats_changes` part and
        // `stats_current.parquet` must not hold changes past a commit.
        if epoch > 0 && coordinating(committer) {
            committer.restored()?;
            committer.commit_through(Some(epoch - 1))?;
        }
        committer.apply(epoch, stats, changes.memberships)?;
    }
    if !coordinating(committer) {
        return Ok(());
    }
    if complete.is_some() {
        committer.restored()?;
    }
    match first {
        Some(_) => committer.commit_through(complete),
        None => committer.finish_run(),
    }
}
