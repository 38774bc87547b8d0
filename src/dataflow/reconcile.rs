//! Observed versions per epoch -> only the changes: upserts of new or changed paths and, when each epoch
//! is a complete snapshot, deletes of the paths that snapshot no longer has.
//!
//! Runs on the worker that owns each path (versions arrive already exchanged by path), so the
//! state here is this worker's share of the tracked paths: one identity per path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;

use crate::version::{FileVersion, SkipReason};

/// (source, path): what a version is a version of.
pub type PathKey = (String, Vec<u8>);

/// What decides whether a path changed: its content hash, or why it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    hash: Option<[u8; 16]>,
    skip_reason: Option<SkipReason>,
    size: Option<u64>,
}

impl Identity {
    fn of(version: &FileVersion) -> Identity {
        Identity {
            hash: version.features.as_ref().map(|f| f.hash),
            skip_reason: version.skip_reason,
            size: version.size,
        }
    }
}

/// How epochs relate to the tree.
#[derive(Debug, Clone)]
pub enum Epochs {
    /// Each epoch in the range is a complete snapshot: a path missing from it was deleted. When
    /// the flag is set the source failed part way, so no snapshot is complete any more and no
    /// deletes are derived from absence.
    Snapshots(RangeInclusive<u64>, Arc<AtomicBool>),
    /// Epochs are slices of a stream of events: only explicit deletes delete.
    Events,
}

/// Drops versions identical to the path's current one, and adds deletes for paths missing from
/// a complete snapshot. `known` seeds the state with versions already in the lake.
pub fn reconcile<'scope>(
    versions: StreamVec<'scope, u64, FileVersion>,
    epochs: Epochs,
) -> StreamVec<'scope, u64, FileVersion> {
    versions.unary_frontier::<CapacityContainerBuilder<Vec<FileVersion>>, _, _, _>(
        Pipeline,
        "Reconcile",
        move |capability, _info| {
            let mut state = State {
                known: HashMap::new(),
                seen: HashSet::new(),
                stash: BTreeMap::new(),
            };
            let (mut open, last, source_failed) = match &epochs {
                Epochs::Snapshots(range, failed) => {
                    (*range.start(), Some(*range.end()), Some(failed.clone()))
                }
                Epochs::Events => (0, None, None),
            };
            let snapshots = last.is_some();
            let mut capability = Some(capability);
            move |(input, frontier), output| {
                input.for_each(|time, data| {
                    let epoch = *time.least().expect("a message has a time");
                    if snapshots && epoch > open {
                        // A later snapshot's versions arrive before this one is complete.
                        state.stash.entry(epoch).or_default().append(data);
                        return;
                    }
                    let mut session = output.session(&time);
                    for version in data.drain(..) {
                        if let Some(change) = state.observe(version, snapshots) {
                            session.give(change);
                        }
                    }
                });
                let Some(cap) = capability.as_mut() else {
                    return;
                };
                if !snapshots {
                    match frontier.frontier().first() {
                        Some(t) => cap.downgrade(t),
                        None => capability = None,
                    }
                    return;
                }
                let last = last.expect("snapshot mode");
                // Close every snapshot the frontier has passed, in order.
                while open <= last && !frontier.less_equal(&open) {
                    let at = cap.delayed(&open);
                    let mut session = output.session(&at);
                    let complete = !source_failed
                        .as_ref()
                        .is_some_and(|f| f.load(Ordering::Acquire));
                    for delete in state.close(open, complete) {
                        session.give(delete);
                    }
                    open += 1;
                    if let Some(stashed) = state.stash.remove(&open) {
                        for version in stashed {
                            if let Some(change) = state.observe(version, true) {
                                session.give(change);
                            }
                        }
                    }
                    if open <= last {
                        cap.downgrade(&open);
                    }
                }
                if open > last {
                    capability = None;
                }
            }
        },
    )
}

struct State {
    known: HashMap<PathKey, Identity>,
    /// Paths seen in the open snapshot.
    seen: HashSet<PathKey>,
    /// Versions of later snapshots, by epoch.
    stash: BTreeMap<u64, Vec<FileVersion>>,
}

impl State {
    /// Records a version; returns it when it is a change.
    fn observe(&mut self, version: FileVersion, snapshots: bool) -> Option<FileVersion> {
        let key = (version.source.clone(), version.path.clone());
        if version.deleted {
            return self.known.remove(&key).map(|_| version);
        }
        let identity = Identity::of(&version);
        if snapshots {
            self.seen.insert(key.clone());
        }
        if self.known.get(&key) == Some(&identity) {
            return None;
        }
        self.known.insert(key, identity);
        Some(version)
    }

    /// Ends snapshot `epoch`: deletes for every known path it did not have, if it is complete.
    fn close(&mut self, epoch: u64, complete: bool) -> Vec<FileVersion> {
        let seen = std::mem::take(&mut self.seen);
        if !complete {
            return Vec::new();
        }
        let mut gone: Vec<PathKey> = self
            .known
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        gone.sort();
        gone.into_iter()
            .map(|key| {
                self.known.remove(&key);
                FileVersion::delete(key.0, key.1, epoch)
            })
            .collect()
    }
}
