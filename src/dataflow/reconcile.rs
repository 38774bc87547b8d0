//! Observed versions per epoch -> only the changes: upserts of new or changed paths and, when each epoch
//! is a complete snapshot, deletes of the paths that snapshot no longer has.
//!
//! Runs on the worker that owns each path (versions arrive already exchanged by path), so the
//! state here is this worker's share of the tracked paths: one identity per path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::OutputBuilderSession;
use timely::dataflow::operators::{Capability, Operator};

use super::{epoch_end, epoch_of};
use crate::source::path_id;
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
/// a complete snapshot.
pub fn reconcile<'scope>(
    versions: StreamVec<'scope, u64, FileVersion>,
    epochs: Epochs,
) -> StreamVec<'scope, u64, FileVersion> {
    versions.unary_frontier::<CapacityContainerBuilder<Vec<FileVersion>>, _, _, _>(
        Pipeline,
        "Reconcile",
        move |capability, _info| {
            let mut state = State {
                known: PathIdMap::default(),
                seen: PathIdSet::default(),
                stash: BTreeMap::new(),
            };
            let (mut open, last, source_failed) = match &epochs {
                Epochs::Snapshots(range, failed) => {
                    (*range.start(), Some(*range.end()), Some(failed.clone()))
                }
                Epochs::Events => (0, None, None),
            };
            let mut capability = Some(capability);
            move |(input, frontier), output| {
                // Versions are taken in time order, once their time is complete: arrival order
                // across workers is arbitrary, and a path's versions must be compared in order.
                input.for_each(|time, data| {
                    let at = *time.least().expect("a message has a time");
                    state.stash.entry(at).or_default().append(data);
                });
                let Some(cap) = capability.as_mut() else {
                    return;
                };
                while let Some(entry) = state.stash.first_entry() {
                    let at = *entry.key();
                    if frontier.less_equal(&at) {
                        break;
                    }
                    let versions = entry.remove();
                    if let Some(last) = last {
                        // Snapshots before this one are complete: their deletes come first.
                        while open < epoch_of(at) && open <= last {
                            close_snapshot(&mut state, cap, output, open, &source_failed);
                            open += 1;
                        }
                    }
                    let at = cap.delayed(&at);
                    let mut session = output.session(&at);
                    for version in versions {
                        if let Some(change) = state.observe(version, last.is_some()) {
                            session.give(change);
                        }
                    }
                }
                let Some(last) = last else {
                    match frontier.frontier().first() {
                        Some(t) => {
                            let hold = state.stash.keys().next().map_or(*t, |s| (*s).min(*t));
                            cap.downgrade(&hold);
                        }
                        None => capability = None,
                    }
                    return;
                };
                while open <= last && !frontier.less_equal(&epoch_end(open)) {
                    close_snapshot(&mut state, cap, output, open, &source_failed);
                    open += 1;
                }
                if open > last {
                    capability = None;
                    return;
                }
                // Follow the input, but never past the end of the open snapshot, whose deletes
                // are still to come, nor past stashed versions.
                let mut hold = epoch_end(open);
                if let Some(t) = frontier.frontier().first() {
                    hold = hold.min(*t);
                }
                if let Some(t) = state.stash.keys().next() {
                    hold = hold.min(*t);
                }
                if hold > *cap.time() {
                    cap.downgrade(&hold);
                }
            }
        },
    )
}

/// Emits the deletes that end snapshot `epoch`, at its last time.
fn close_snapshot(
    state: &mut State,
    cap: &Capability<u64>,
    output: &mut OutputBuilderSession<'_, u64, CapacityContainerBuilder<Vec<FileVersion>>>,
    epoch: u64,
    source_failed: &Option<Arc<AtomicBool>>,
) {
    let complete = !source_failed
        .as_ref()
        .is_some_and(|f| f.load(Ordering::Acquire));
    let at = cap.delayed(&epoch_end(epoch));
    let mut session = output.session(&at);
    for delete in state.close(epoch, complete) {
        session.give(delete);
    }
}

/// Keys that are already uniform hashes (path ids) need no further hashing.
#[derive(Default, Clone, Copy)]
struct PathIdHasher(u64);

impl std::hash::Hasher for PathIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, id: u128) {
        self.0 = id as u64 ^ (id >> 64) as u64;
    }
}

type PathIdMap<V> = HashMap<u128, V, BuildHasherDefault<PathIdHasher>>;
type PathIdSet = HashSet<u128, BuildHasherDefault<PathIdHasher>>;

struct State {
    /// Per tracked path: its identity, and its (source, path) for the delete it may need.
    known: PathIdMap<(Identity, PathKey)>,
    /// Paths seen in the open snapshot.
    seen: PathIdSet,
    /// Versions whose time is not complete yet, by time.
    stash: BTreeMap<u64, Vec<FileVersion>>,
}

impl State {
    /// Records a version; returns it when it is a change.
    fn observe(&mut self, version: FileVersion, snapshots: bool) -> Option<FileVersion> {
        let id = path_id(&version.source, &version.path);
        if version.deleted {
            return self.known.remove(&id).map(|_| version);
        }
        if snapshots {
            self.seen.insert(id);
        }
        let identity = Identity::of(&version);
        match self.known.get_mut(&id) {
            Some((known, _)) if *known == identity => return None,
            Some((known, _)) => *known = identity,
            None => {
                let key = (version.source.clone(), version.path.clone());
                self.known.insert(id, (identity, key));
            }
        }
        Some(version)
    }

    /// Ends snapshot `epoch`: deletes for every known path it did not have, if it is complete.
    fn close(&mut self, epoch: u64, complete: bool) -> Vec<FileVersion> {
        let seen = std::mem::take(&mut self.seen);
        if !complete {
            return Vec::new();
        }
        let gone: Vec<u128> = self
            .known
            .keys()
            .filter(|id| !seen.contains(*id))
            .copied()
            .collect();
        let mut deletes: Vec<FileVersion> = gone
            .into_iter()
            .filter_map(|id| self.known.remove(&id))
            .map(|(_, (source, path))| FileVersion::delete(source, path, epoch))
            .collect();
        deletes.sort_by(|a, b| (&a.source, &a.path).cmp(&(&b.source, &b.path)));
        deletes
    }
}
