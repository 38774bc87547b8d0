//! The source's epochs -> control records that travel through the dataflow: what each sealed
//! epoch asked for (a commit, the snapshots it ended), which epochs are abandoned, and the run's
//! last epoch. Operators learn of these from the records and their frontier, not from the
//! clock, so that an operator's output depends only on its inputs.
//!
//! One worker sends them (see `input`): the record of a sealed epoch at a time of that epoch,
//! before its control input moves past the epoch. Once a control frontier is past an epoch,
//! every record of that epoch and the ones before it has arrived.

use serde::{Deserialize, Serialize};

use crate::epochs::Snapshot;

/// One control record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// Every event of `epoch` was sent. `commit`: the lake commits at it; `ended`: (source,
    /// first epoch) of each snapshot that ends with it.
    Sealed {
        epoch: u64,
        commit: bool,
        ended: Vec<(String, u64)>,
    },
    /// `from` and every later epoch are never committed.
    Abandoned { from: u64 },
    /// The run's sources are done; its last epoch is this one.
    Last(u64),
}

/// What the control records received so far say.
#[derive(Debug, Clone)]
pub struct Controls {
    /// Requested commit epochs, increasing.
    commits: Vec<u64>,
    /// Ended snapshots, by increasing `last`.
    snapshots: Vec<Snapshot>,
    abandoned_from: u64,
    last: u64,
}

impl Default for Controls {
    fn default() -> Controls {
        Controls {
            commits: Vec::new(),
            snapshots: Vec::new(),
            abandoned_from: u64::MAX,
            last: 0,
        }
    }
}

impl Controls {
    /// Takes in one record, whatever the order records of different times arrive in.
    pub fn record(&mut self, control: Control) {
        match control {
            Control::Sealed {
                epoch,
                commit,
                ended,
            } => {
                self.last = self.last.max(epoch);
                if commit && let Err(at) = self.commits.binary_search(&epoch) {
                    self.commits.insert(at, epoch);
                }
                for (source, first) in ended {
                    let at = self.snapshots.partition_point(|s| s.last <= epoch);
                    self.snapshots.insert(
                        at,
                        Snapshot {
                            source,
                            first,
                            last: epoch,
                        },
                    );
                }
            }
            Control::Abandoned { from } => self.abandoned_from = self.abandoned_from.min(from),
            Control::Last(epoch) => self.last = self.last.max(epoch),
        }
    }

    /// The last epoch that may be committed.
    pub fn committable_through(&self) -> u64 {
        self.abandoned_from.saturating_sub(1)
    }

    /// The highest requested commit epoch that is at most `epoch` and not abandoned.
    pub fn commit_at_or_before(&self, epoch: u64) -> Option<u64> {
        let epoch = epoch.min(self.committable_through());
        let at = self.commits.partition_point(|&c| c <= epoch);
        at.checked_sub(1).map(|i| self.commits[i])
    }

    /// The snapshots from the `from`-th on that ended at or before `epoch`.
    pub fn snapshots_from(&self, from: usize, epoch: u64) -> &[Snapshot] {
        let rest = self.snapshots.get(from..).unwrap_or_default();
        &rest[..rest.partition_point(|s| s.last <= epoch)]
    }

    /// The highest epoch sealed, or named the last.
    pub fn last(&self) -> u64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(epoch: u64, commit: bool, ended: &[(&str, u64)]) -> Control {
        Control::Sealed {
            epoch,
            commit,
            ended: ended.iter().map(|&(s, f)| (s.to_string(), f)).collect(),
        }
    }

    #[test]
    fn records_in_any_order_say_the_same() {
        let records = [
            sealed(2, true, &[]),
            sealed(3, false, &[("a", 1)]),
            sealed(5, true, &[("b", 4), ("a", 4)]),
            Control::Abandoned { from: 7 },
            sealed(7, true, &[]),
            Control::Last(8),
        ];
        let mut forward = Controls::default();
        let mut backward = Controls::default();
        for r in records.iter().cloned() {
            forward.record(r);
        }
        for r in records.iter().rev().cloned() {
            backward.record(r);
        }
        for controls in [forward, backward] {
            assert_eq!(controls.commit_at_or_before(4), Some(2));
            assert_eq!(controls.commit_at_or_before(1), None);
            assert_eq!(controls.commit_at_or_before(9), Some(5), "7 is abandoned");
            assert_eq!(controls.committable_through(), 6);
            assert_eq!(controls.last(), 8);
            let ended: Vec<u64> = controls
                .snapshots_from(0, 5)
                .iter()
                .map(|s| s.last)
                .collect();
            assert_eq!(ended, [3, 5, 5]);
            assert_eq!(controls.snapshots_from(1, 4).len(), 0);
            assert_eq!(controls.snapshots_from(3, 9).len(), 0);
        }
    }
}
