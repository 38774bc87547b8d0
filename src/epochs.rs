//! The epochs of a run, shared by its source and its graph.
//!
//! A source stamps every event with the open epoch and seals an epoch once all of its events are
//! sent. Sealing may request a commit (the lake commits exactly at requested epochs, see
//! `sink::commit`) and may end a snapshot: a complete listing of one source over a range of
//! epochs, after which the graph deletes the source's tracked paths that the snapshot did not
//! contain.
//!
//! Events are stamped under a read lock and an epoch is sealed under the write lock, so that when
//! an epoch is sealed every event of it is already in the channel, before any event of a later
//! epoch: parallel walker threads need no other coordination.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{SendError, Sender};

use crate::source::FileEvent;

/// One complete listing of a source: every path of `source` that no event of epochs
/// `first..=last` mentioned is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub source: String,
    pub first: u64,
    pub last: u64,
}

#[derive(Debug, Default)]
struct Log {
    /// Requested commit epochs, increasing.
    commits: Vec<u64>,
    /// Ended snapshots, by increasing `last`.
    snapshots: Vec<Snapshot>,
}

/// The open epoch, what is sealed, and what was requested of each sealed epoch.
#[derive(Debug)]
pub struct EpochClock {
    open: RwLock<u64>,
    sealed: AtomicU64,
    /// The highest epoch any event was stamped with.
    last_stamped: AtomicU64,
    /// Epochs opened longer ago than this are sealed (with a commit) by the next send.
    roll_after: Option<Duration>,
    /// When the open epoch opened, in microseconds after `start`: read on every send, so an atomic.
    opened_us: AtomicU64,
    start: Instant,
    log: Mutex<Log>,
}

impl EpochClock {
    /// A clock whose first open epoch is `first` (the epochs before it are sealed); `roll_after`
    /// seals and commits an epoch after that long, so that a long snapshot commits as it goes.
    pub fn new(first: u64, roll_after: Option<Duration>) -> EpochClock {
        assert!(first >= 1, "epoch 0 is the restored state");
        EpochClock {
            open: RwLock::new(first),
            sealed: AtomicU64::new(first - 1),
            last_stamped: AtomicU64::new(0),
            roll_after,
            opened_us: AtomicU64::new(0),
            start: Instant::now(),
            log: Mutex::new(Log::default()),
        }
    }

    /// The open epoch.
    pub fn open(&self) -> u64 {
        *self.open.read().expect("clock lock")
    }

    /// The highest epoch whose events have all been sent.
    pub fn sealed(&self) -> u64 {
        self.sealed.load(Ordering::Acquire)
    }

    /// The last epoch of the run so far: the open epoch if an event was stamped with it, else the
    /// last sealed one.
    pub fn last(&self) -> u64 {
        self.sealed().max(self.last_stamped.load(Ordering::Acquire))
    }

    /// Stamps `event` with the open epoch and sends it, sealing the open epoch first when it is
    /// older than the roll interval.
    pub fn send(
        &self,
        sender: &Sender<FileEvent>,
        mut event: FileEvent,
    ) -> Result<(), SendError<FileEvent>> {
        if self.roll_due() {
            self.roll();
        }
        let open = self.open.read().expect("clock lock");
        event.epoch = *open;
        self.last_stamped.fetch_max(*open, Ordering::AcqRel);
        // Sent under the lock: the epoch cannot be sealed while one of its events is on its way.
        sender.send(event)
    }

    fn roll_due(&self) -> bool {
        let Some(after) = self.roll_after else {
            return false;
        };
        let opened = Duration::from_micros(self.opened_us.load(Ordering::Acquire));
        self.start.elapsed() >= opened + after
    }

    /// Seals the open epoch with a commit if it is (still) due.
    fn roll(&self) {
        let mut open = self.open.write().expect("clock lock");
        if self.roll_due() {
            self.seal_locked(&mut open, true, &[]);
        }
    }

    /// Seals the open epoch and opens the next; returns the sealed epoch. `commit` asks the lake
    /// to commit at it; each of `ended` is a (source, first epoch) whose snapshot ends with it.
    pub fn seal(&self, commit: bool, ended: &[(&str, u64)]) -> u64 {
        let mut open = self.open.write().expect("clock lock");
        self.seal_locked(&mut open, commit, ended)
    }

    fn seal_locked(&self, open: &mut u64, commit: bool, ended: &[(&str, u64)]) -> u64 {
        let epoch = *open;
        {
            let mut log = self.log.lock().expect("clock lock");
            if commit {
                log.commits.push(epoch);
            }
            for &(source, first) in ended {
                log.snapshots.push(Snapshot {
                    source: source.to_string(),
                    first,
                    last: epoch,
                });
            }
        }
        let now = self.start.elapsed().as_micros() as u64;
        self.opened_us.store(now, Ordering::Release);
        // Published after the log, so that whoever sees the epoch sealed sees what it requested.
        self.sealed.store(epoch, Ordering::Release);
        *open = epoch + 1;
        epoch
    }

    /// The highest requested commit epoch that is at most `epoch`.
    pub fn commit_at_or_before(&self, epoch: u64) -> Option<u64> {
        let log = self.log.lock().expect("clock lock");
        log.commits.iter().rev().find(|&&c| c <= epoch).copied()
    }

    /// The snapshots from the `from`-th on that ended at or before `epoch`.
    pub fn snapshots_from(&self, from: usize, epoch: u64) -> Vec<Snapshot> {
        let log = self.log.lock().expect("clock lock");
        log.snapshots
            .iter()
            .skip(from)
            .take_while(|s| s.last <= epoch)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{EntryType, EventKind, Origin};

    fn event() -> FileEvent {
        FileEvent {
            source: "s".into(),
            path: b"p".to_vec(),
            kind: EventKind::Upsert,
            epoch: 0,
            observed_at_us: 0,
            entry: EntryType::File,
            origin: Origin::Unlistable(String::new()),
        }
    }

    #[test]
    fn events_take_the_open_epoch_and_sealing_records_requests() {
        let clock = EpochClock::new(3, None);
        let (tx, rx) = crossbeam_channel::unbounded();
        clock.send(&tx, event()).unwrap();
        assert_eq!((clock.sealed(), clock.last()), (2, 3));
        assert_eq!(clock.seal(false, &[]), 3);
        clock.send(&tx, event()).unwrap();
        assert_eq!(clock.seal(true, &[("s", 3)]), 4);
        let epochs: Vec<u64> = rx.try_iter().map(|e| e.epoch).collect();
        assert_eq!(epochs, [3, 4]);
        assert_eq!(clock.commit_at_or_before(3), None);
        assert_eq!(clock.commit_at_or_before(9), Some(4));
        let snapshot = Snapshot {
            source: "s".into(),
            first: 3,
            last: 4,
        };
        assert_eq!(clock.snapshots_from(0, 4), [snapshot]);
        assert!(clock.snapshots_from(1, 9).is_empty());
    }

    #[test]
    fn a_due_roll_seals_with_a_commit() {
        let clock = EpochClock::new(1, Some(Duration::ZERO));
        let (tx, rx) = crossbeam_channel::unbounded();
        clock.send(&tx, event()).unwrap();
        clock.send(&tx, event()).unwrap();
        let epochs: Vec<u64> = rx.try_iter().map(|e| e.epoch).collect();
        assert_eq!(epochs, [2, 3]);
        assert_eq!(clock.commit_at_or_before(1), Some(1));
        assert_eq!(clock.commit_at_or_before(9), Some(2));
    }
}
