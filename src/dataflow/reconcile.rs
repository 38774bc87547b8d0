//! Observed versions per epoch -> only the changes: upserts of new or changed paths and, when a
//! snapshot of a source ends, deletes of the source's paths that the snapshot no longer has.
//!
//! Versions are exchanged here, from the worker that read the file to the worker that owns its
//! path, so the state is this worker's share of the tracked paths: one identity per path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasherDefault;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::OutputBuilderSession;
use timely::dataflow::operators::vec::{Broadcast, Map, Partition};
use timely::dataflow::operators::{Capability, Concat, Operator};

use serde::{Deserialize, Serialize};

use super::control::{Control, Controls};
use super::{epoch_end, epoch_of};
use crate::epochs::Snapshot;
use crate::source::{path_id, route};
use crate::version::{FileVersion, SkipReason};

/// (source, path): what a version is a version of.
pub type PathKey = (String, Vec<u8>);

/// What decides whether a path changed: its content hash, or why it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    hash: Option<[u8; 16]>,
    skip_reason: Option<SkipReason>,
    size: Option<u64>,
}

impl Identity {
    pub fn of(version: &FileVersion) -> Identity {
        Identity {
            hash: version.features.as_ref().map(|f| f.hash),
            skip_reason: version.skip_reason,
            size: version.size,
        }
    }
}

/// Drops versions identical to the path's current one, and adds deletes for the paths of a source
/// that a complete snapshot of it (see [`Control`]) did not contain. Each change leaves with its
/// path id.
///
/// `restored` holds the current versions the lake's last commit has, at time 0 (no source's
/// epoch is 0): wherever they were read, they reach the worker that owns their path through the
/// same exchange as the observed versions, become its state, and go on as
/// [`Reconciled::Restored`].
///
/// A directory the snapshot could not list (see [`unlisted_dir`]) was not seen whole: no path under
/// it is deleted. Its paths live on every worker, so the directory is broadcast to all of them.
pub fn reconcile<'scope>(
    versions: StreamVec<'scope, u64, FileVersion>,
    controls: StreamVec<'scope, u64, Control>,
    restored: StreamVec<'scope, u64, FileVersion>,
) -> StreamVec<'scope, u64, Reconciled> {
    let mut parts = versions.partition(2, |version| (u64::from(unlisted_dir(&version)), version));
    let (unlisted, versions) = (
        parts.pop().expect("two parts"),
        parts.pop().expect("two parts"),
    );
    // Every worker learns of every unlisted directory and every snapshot's end.
    let broadcast = unlisted
        .clone()
        .map(|version| Notice::Hole(version.source, version.path))
        .concat(controls.map(Notice::Control))
        .broadcast();
    // The unlisted directory is a version too (an `unreadable` row): it goes on to its owner.
    let versions = versions.concat(unlisted).concat(restored);
    let owner = Exchange::new(|version: &FileVersion| route(&version.source, &version.path));
    versions.binary_frontier::<_, CapacityContainerBuilder<Vec<Reconciled>>, _, _, _, _>(
        broadcast,
        owner,
        Pipeline,
        "Reconcile",
        move |capability, _info| {
            let mut state = State::default();
            let mut capability = Some(capability);
            move |(input, frontier), (holes, holes_frontier), output| {
                // Versions are taken in time order, once their time is complete: arrival order
                // across workers is arbitrary, and a path's versions must be compared in order.
                input.for_each(|time, data| {
                    let at = *time.least().expect("a message has a time");
                    state.stash.entry(at).or_default().append(data);
                });
                let mut controls = Vec::new();
                holes.for_each(|time, data| {
                    let at = *time.least().expect("a message has a time");
                    for broadcast in data.drain(..) {
                        match broadcast {
                            Notice::Hole(source, prefix) => {
                                state.holes.push((epoch_of(at), source, prefix))
                            }
                            Notice::Control(control) => {
                                state.controls.record(control.clone());
                                controls.push((at, control));
                            }
                        }
                    }
                });
                let Some(cap) = capability.as_mut() else {
                    return;
                };
                // The control records go on ahead of every change released from here on: the
                // lake writer learns of a commit before the changes of the epochs after it.
                for (at, control) in controls {
                    output
                        .session(&cap.delayed(&at))
                        .give(Reconciled::Control(control));
                }
                // A time is complete once both inputs are past it: a snapshot closes only when
                // its end and every unlisted directory of it have arrived.
                let frontier = [frontier.frontier(), holes_frontier.frontier()]
                    .into_iter()
                    .filter_map(|f| f.first().copied())
                    .min();
                state.release(frontier, cap, output);
                match frontier {
                    Some(t) => {
                        // Follow the input, but not past stashed versions.
                        let hold = state.stash.keys().next().map_or(t, |s| (*s).min(t));
                        if hold > *cap.time() {
                            cap.downgrade(&hold);
                        }
                    }
                    None => capability = None,
                }
            }
        },
    )
}

/// Whether `version` stands for a directory its source could not list: an `unreadable` entry
/// whose path ends with `/`, which no file's path does (see `source::walk`).
pub fn unlisted_dir(version: &FileVersion) -> bool {
    !version.deleted
        && version.skip_reason == Some(SkipReason::Unreadable)
        && version.path.ends_with(b"/")
}

/// Whether `path` lies under one of `holes` (directory paths ending with `/`).
fn under_hole(path: &[u8], holes: &HashSet<&[u8]>) -> bool {
    memchr::memchr_iter(b'/', path).any(|i| holes.contains(&path[..=i]))
}

/// Emits the deletes of every snapshot that ended at or before `epoch` and has not been closed,
/// each at the last time of its last epoch.
fn close_snapshots(state: &mut State, cap: &Capability<u64>, output: &mut Output<'_>, epoch: u64) {
    let ended = state
        .controls
        .snapshots_from(state.snapshots_done, epoch)
        .to_vec();
    for snapshot in ended {
        state.snapshots_done += 1;
        let at = cap.delayed(&epoch_end(snapshot.last));
        let mut session = output.session(&at);
        for delete in state.close(&snapshot) {
            session.give(Reconciled::Change(delete.0, delete.1));
        }
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

#[derive(Default)]
struct State {
    /// Per tracked path: its identity, its (source, path) for the delete it may need, and the
    /// last epoch it was seen in (0: restored, not seen yet).
    known: PathIdMap<(Identity, PathKey, u64)>,
    /// Versions whose time is not complete yet, by time.
    stash: BTreeMap<u64, Vec<FileVersion>>,
    /// (epoch, source, directory path ending with `/`) of the directories a snapshot could not
    /// list, until the snapshot closes.
    holes: Vec<(u64, String, Vec<u8>)>,
    /// What the control records said: the ended snapshots.
    controls: Controls,
    /// Snapshots of `controls` already closed.
    snapshots_done: usize,
}

/// What reconcile passes on to the lake writer, in the order it learned of it.
#[derive(Debug, Clone)]
pub enum Reconciled {
    /// A change to a path, with the path's id.
    Change(u128, FileVersion),
    /// A control record, passed on before any change released after it arrived.
    Control(Control),
    /// A current version of the lake's last commit, with its path's id: already in the lake.
    Restored(u128, FileVersion),
}

/// What every worker's reconcile learns: an unlisted directory, or a control record.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Notice {
    Hole(String, Vec<u8>),
    Control(Control),
}

/// Reconcile's output.
type Output<'a> = OutputBuilderSession<'a, u64, CapacityContainerBuilder<Vec<Reconciled>>>;

impl State {
    /// Gives the changes of the stashed versions whose time is complete (before `frontier`;
    /// every time when there is none), in time order, each epoch's closed snapshots' deletes
    /// first, and then the deletes of the snapshots that ended before the frontier.
    fn release(&mut self, frontier: Option<u64>, cap: &Capability<u64>, output: &mut Output<'_>) {
        while let Some(entry) = self.stash.first_entry() {
            let at = *entry.key();
            if frontier.is_some_and(|t| t <= at) {
                break;
            }
            let versions = entry.remove();
            if at == 0 {
                self.restore(versions, cap, output);
                continue;
            }
            // Snapshots that ended before this epoch are complete: their deletes come first.
            if epoch_of(at) > 0 {
                close_snapshots(self, cap, output, epoch_of(at) - 1);
            }
            let at = cap.delayed(&at);
            let mut session = output.session(&at);
            for version in versions {
                if let Some((id, change)) = self.observe(version) {
                    session.give(Reconciled::Change(id, change));
                }
            }
        }
        let through = match frontier {
            Some(t) if epoch_of(t) > 0 => epoch_of(t) - 1,
            Some(_) => return,
            None => u64::MAX,
        };
        close_snapshots(self, cap, output, through);
    }
}

impl State {
    /// Takes the restored versions as tracked paths not seen yet (epoch 0), and passes them on.
    fn restore(
        &mut self,
        versions: Vec<FileVersion>,
        cap: &Capability<u64>,
        output: &mut Output<'_>,
    ) {
        self.known.reserve(versions.len());
        let at = cap.delayed(&0);
        let mut session = output.session(&at);
        for version in versions {
            let id = path_id(&version.source, &version.path);
            let key = (version.source.clone(), version.path.clone());
            self.known.insert(id, (Identity::of(&version), key, 0));
            session.give(Reconciled::Restored(id, version));
        }
    }

    /// Records a version; returns it, with its path id, when it is a change.
    fn observe(&mut self, version: FileVersion) -> Option<(u128, FileVersion)> {
        let id = path_id(&version.source, &version.path);
        if version.deleted {
            return self.known.remove(&id).map(|_| (id, version));
        }
        let identity = Identity::of(&version);
        match self.known.get_mut(&id) {
            Some((known, _, seen)) if *known == identity => {
                *seen = version.epoch;
                return None;
            }
            Some((known, _, seen)) => {
                *known = identity;
                *seen = version.epoch;
            }
            None => {
                let key = (version.source.clone(), version.path.clone());
                self.known.insert(id, (identity, key, version.epoch));
            }
        }
        Some((id, version))
    }

    /// Ends a snapshot: deletes for every known path of its source it did not see, except those
    /// under a directory it could not list.
    fn close(&mut self, snapshot: &Snapshot) -> Vec<(u128, FileVersion)> {
        let in_snapshot = |(epoch, source, _): &(u64, String, Vec<u8>)| {
            *source == snapshot.source && (snapshot.first..=snapshot.last).contains(epoch)
        };
        let holes: HashSet<&[u8]> = self
            .holes
            .iter()
            .filter(|hole| in_snapshot(hole))
            .map(|(_, _, prefix)| prefix.as_slice())
            .collect();
        let gone: Vec<u128> = self
            .known
            .iter()
            .filter(|(_, (_, (source, path), seen))| {
                *seen < snapshot.first
                    && *source == snapshot.source
                    && (holes.is_empty() || !under_hole(path, &holes))
            })
            .map(|(id, _)| *id)
            .collect();
        // Snapshots of a source close in epoch order: what is at or before this one is done.
        self.holes
            .retain(|(epoch, source, _)| *source != snapshot.source || *epoch > snapshot.last);
        let mut deletes: Vec<(u128, FileVersion)> = gone
            .into_iter()
            .filter_map(|id| {
                let (_, (source, path), _) = self.known.remove(&id)?;
                Some((id, FileVersion::delete(source, path, snapshot.last)))
            })
            .collect();
        deletes.sort_by(|(_, a), (_, b)| (&a.source, &a.path).cmp(&(&b.source, &b.path)));
        deletes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(path: &str, epoch: u64, skip: Option<SkipReason>) -> FileVersion {
        let mut version = FileVersion::delete("s".into(), path.as_bytes().to_vec(), epoch);
        version.deleted = false;
        version.size = skip.is_none().then_some(1);
        version.skip_reason = skip;
        version
    }

    #[test]
    fn a_snapshot_deletes_nothing_under_a_directory_it_could_not_list() {
        let mut state = State::default();
        for path in [
            "keep",
            "sub/a",
            "sub/deep/b",
            "subway/c",
            "other/d",
            "x/y/z",
        ] {
            state.observe(version(path, 1, None));
        }
        let marker = version("sub/", 2, Some(SkipReason::Unreadable));
        assert!(unlisted_dir(&marker));
        assert!(!unlisted_dir(&version(
            "sub",
            2,
            Some(SkipReason::Unreadable)
        )));
        state.observe(version("keep", 2, None));
        state.observe(marker);
        // The hole of this snapshot, and some that are not: another source, a later epoch.
        state.holes.push((2, "s".into(), b"sub/".to_vec()));
        state.holes.push((2, "t".into(), b"other/".to_vec()));
        state.holes.push((3, "s".into(), b"x/".to_vec()));
        let snapshot = Snapshot {
            source: "s".into(),
            first: 2,
            last: 2,
        };
        let deleted: Vec<String> = state
            .close(&snapshot)
            .into_iter()
            .map(|(_, v)| String::from_utf8(v.path).unwrap())
            .collect();
        assert_eq!(deleted, ["other/d", "subway/c", "x/y/z"]);
        assert_eq!(
            state.holes.len(),
            2,
            "the snapshot's own hole is dropped once closed"
        );
    }
}
