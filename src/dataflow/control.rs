//! The source's epochs -> control records that travel through the dataflow: what each sealed
//! epoch asked for (a commit, the snapshots it ended), which epochs are abandoned, and the run's
//! last epoch. Operators learn of these from the records and their frontier, not from the
//! clock, so that an operator's output depends only on its inputs.
//!
//! One worker sends them (see `input`): the record of a sealed epoch at a time of that epoch,
//! before its control input moves past the epoch. Once a control frontier is past an epoch,
//! every record of that epoch and the ones before it has arrived.

use std::cell::Cell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;
use timely::dataflow::operators::Inspect;
use timely::dataflow::operators::vec::Broadcast;

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
    /// A source of `holder` (a process) reads something that commits whole (an archive) from
    /// epoch `from` on: no commit at `from` or later, whoever asks for it ...
    Held { holder: String, from: u64 },
    /// ... until `until`: the hold that began at `from` ended, and the epochs from `until` on
    /// may be committed again.
    Released {
        holder: String,
        from: u64,
        until: u64,
    },
    /// The run's sources are done; its last epoch is this one.
    Last(u64),
}

/// Every process's control records -> `highest`, the highest epoch any process sealed, on every
/// worker: how far a quiet clock may catch up (see `EpochClock::catch_up`).
pub fn highest_sealed<'scope>(controls: StreamVec<'scope, u64, Control>, highest: Rc<Cell<u64>>) {
    controls.broadcast().inspect(move |control| {
        if let Control::Sealed { epoch, .. } = control {
            highest.set(highest.get().max(*epoch));
        }
    });
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
    /// (holder, from, until) of each hold; until is None while it lasts.
    holds: Vec<(String, u64, Option<u64>)>,
}

impl Default for Controls {
    fn default() -> Controls {
        Controls {
            commits: Vec::new(),
            snapshots: Vec::new(),
            abandoned_from: u64::MAX,
            last: 0,
            holds: Vec::new(),
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
            Control::Held { holder, from } => {
                if !self
                    .holds
                    .iter()
                    .any(|(h, f, _)| *h == holder && *f == from)
                {
                    self.holds.push((holder, from, None));
                }
            }
            Control::Released {
                holder,
                from,
                until,
            } => match self
                .holds
                .iter_mut()
                .find(|(h, f, _)| *h == holder && *f == from)
            {
                Some(hold) => hold.2 = Some(until),
                None => self.holds.push((holder, from, Some(until))),
            },
        }
    }

    /// The last epoch that may be committed.
    pub fn committable_through(&self) -> u64 {
        self.abandoned_from.saturating_sub(1)
    }

    /// The highest requested commit epoch that is at most `epoch`, not abandoned and not held.
    pub fn commit_at_or_before(&self, epoch: u64) -> Option<u64> {
        let epoch = epoch.min(self.committable_through());
        let at = self.commits.partition_point(|&c| c <= epoch);
        let held = |c: u64| {
            (self.holds.iter()).any(|(_, from, until)| *from <= c && until.is_none_or(|u| c < u))
        };
        self.commits[..at].iter().rev().copied().find(|&c| !held(c))
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

    /// A hold of one process keeps every process's commit requests inside it from committing,
    /// in whatever order the records arrive.
    #[test]
    fn no_commit_inside_a_hold() {
        let records = [
            sealed(2, true, &[]),
            Control::Held {
                holder: "p1".into(),
                from: 3,
            },
            sealed(4, true, &[]),
            sealed(5, true, &[]),
            Control::Released {
                holder: "p1".into(),
                from: 3,
                until: 6,
            },
            sealed(6, true, &[]),
            Control::Held {
                holder: "p2".into(),
                from: 8,
            },
            sealed(9, true, &[]),
        ];
        for order in [records.to_vec(), records.iter().rev().cloned().collect()] {
            let mut controls = Controls::default();
            for r in order {
                controls.record(r);
            }
            assert_eq!(controls.commit_at_or_before(5), Some(2), "4 and 5 are held");
            assert_eq!(controls.commit_at_or_before(6), Some(6));
            assert_eq!(
                controls.commit_at_or_before(9),
                Some(6),
                "9 is held, for good"
            );
        }
    }

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
            assert_eq!(controls.holds.len(), 0);
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
