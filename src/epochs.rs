//! The epochs of a run, kept by its sources: the graph's input loop reads what is sealed, and
//! passes each seal and abandonment on as a control record (see `dataflow::control`); no
//! operator reads the clock.
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
//!
//! A source that fails part way through a snapshot (a damaged archive, an interrupted one)
//! abandons its epochs: nothing from the first of them on is ever committed. And the clock bounds
//! the bytes that events carry inline (archive members): a send waits while more than
//! [`MAX_INLINE_BYTES`] are between the sources and the kernel stage.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{SendError, Sender};

use crate::dataflow::control::Control;
use crate::source::{FileEvent, Member, Origin};

/// Bytes of archive members that may be on their way to the kernel stage at once (256 MiB); a
/// member larger than that is still admitted, alone.
pub const MAX_INLINE_BYTES: u64 = 256 << 20;

/// One complete listing of a source: every path of `source` that no event of epochs
/// `first..=last` mentioned is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub source: String,
    pub first: u64,
    pub last: u64,
}

/// Every seal and abandonment not yet taken, in order: what the graph learns as control records.
#[derive(Debug, Default)]
struct Log {
    controls: Vec<Control>,
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
    /// While set, epochs are not rolled by age (an archive is being read: it commits whole).
    hold_rolls: AtomicBool,
    /// The first epoch of the hold, while one lasts (see [`Control::Held`]).
    held_from: Mutex<Option<u64>>,
    /// Inline bytes sent and not yet released by the kernel stage; None once the graph is gone.
    inline: Mutex<Option<u64>>,
    inline_released: Condvar,
    /// Once set, every send fails, as if the graph had hung up: the source stops.
    /// Read on every send: set once, then read without a lock.
    stop: OnceLock<Arc<AtomicBool>>,
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
            hold_rolls: AtomicBool::new(false),
            held_from: Mutex::new(None),
            inline: Mutex::new(Some(0)),
            inline_released: Condvar::new(),
            stop: OnceLock::new(),
        }
    }

    /// Sends fail once `flag` is set (Ctrl-C), so that every source stops where it is.
    /// Only the first flag given counts.
    pub fn stop_on(&self, flag: Arc<AtomicBool>) {
        let _ = self.stop.set(flag);
    }

    /// Whether the stop flag is set.
    pub fn stopped(&self) -> bool {
        self.stop.get().is_some_and(|f| f.load(Ordering::Acquire))
    }

    /// While `hold` is set, an epoch is never sealed by age: what is sent is committed only at
    /// the next explicit seal (a whole archive, once its end and checksum were read). The hold
    /// is recorded too ([`Control::Held`], [`Control::Released`]), so that no commit another
    /// process asks for lands inside it.
    pub fn hold_rolls(&self, hold: bool) {
        let open = self.open.write().expect("clock lock");
        self.hold_rolls.store(hold, Ordering::Release);
        let mut held = self.held_from.lock().expect("clock lock");
        let holder = crate::api::live::run_id().to_string();
        let record = match (hold, *held) {
            (true, None) => {
                *held = Some(*open);
                Control::Held {
                    holder,
                    from: *open,
                }
            }
            (false, Some(from)) => {
                *held = None;
                Control::Released {
                    holder,
                    from,
                    until: *open,
                }
            }
            _ => return,
        };
        self.log.lock().expect("clock lock").controls.push(record);
    }

    /// Abandons `from` and every later epoch: none of them is ever committed. Their events may
    /// still flow through the graph; what they write stays pending and is removed when the lake is
    /// next opened.
    pub fn abandon_from(&self, from: u64) {
        let mut log = self.log.lock().expect("clock lock");
        log.controls.push(Control::Abandoned { from });
    }

    /// The bytes `event` carries inline.
    pub fn inline_bytes(event: &FileEvent) -> u64 {
        match &event.origin {
            Origin::Member(Member::Regular(content)) => content.len() as u64,
            _ => 0,
        }
    }

    /// Waits until `bytes` more inline bytes fit under [`MAX_INLINE_BYTES`] (or nothing else is
    /// in flight), then counts them.
    fn admit_inline(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut inline = self.inline.lock().expect("clock lock");
        while let Some(n) = *inline
            && n > 0
            && n + bytes > MAX_INLINE_BYTES
        {
            inline = self.inline_released.wait(inline).expect("clock lock");
        }
        if let Some(n) = inline.as_mut() {
            *n += bytes;
        }
    }

    /// The graph has stopped: no send waits for it any more (the send itself then fails).
    pub fn close_inline(&self) {
        *self.inline.lock().expect("clock lock") = None;
        self.inline_released.notify_all();
    }

    /// The kernel stage is done with `bytes` inline bytes.
    pub fn release_inline(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut inline = self.inline.lock().expect("clock lock");
        if let Some(n) = inline.as_mut() {
            *n = n.saturating_sub(bytes);
        }
        self.inline_released.notify_all();
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
        if self.stopped() {
            return Err(SendError(event));
        }
        if self.roll_due() {
            self.roll();
        }
        // Outside the lock: a seal never waits for the kernel stage.
        self.admit_inline(Self::inline_bytes(&event));
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
        if self.hold_rolls.load(Ordering::Acquire) {
            return false;
        }
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
            log.controls.push(Control::Sealed {
                epoch,
                commit,
                ended: ended.iter().map(|&(s, f)| (s.to_string(), f)).collect(),
            });
        }
        let now = self.start.elapsed().as_micros() as u64;
        self.opened_us.store(now, Ordering::Release);
        // Published after the log, so that whoever sees the epoch sealed sees what it requested.
        self.sealed.store(epoch, Ordering::Release);
        *open = epoch + 1;
        epoch
    }

    /// Seals every epoch through `epoch` when the open epoch has no event and no archive holds
    /// it, so that a process whose sources are quiet follows the epochs its peers seal (a commit
    /// waits for every process to be past its epoch). The epochs skipped are empty here: they
    /// need no record. `seen` is the sealed epoch the caller read before it found the source's
    /// channel empty: if anything was sealed since, an event of the epoch sealed then may still
    /// be on its way, and the clock does not move. Never waits: a send in progress holds the
    /// lock, and the caller may be the one that must drain the channel it sends into. Returns
    /// whether the clock moved.
    pub fn catch_up(&self, epoch: u64, seen: u64) -> bool {
        if epoch < self.open() || self.hold_rolls.load(Ordering::Acquire) {
            return false;
        }
        let Ok(mut open) = self.open.try_write() else {
            return false;
        };
        // Under the write lock no event is being stamped: one stamped before has raised
        // `last_stamped` to the open epoch.
        if epoch < *open
            || *open != seen + 1
            || self.last_stamped.load(Ordering::Acquire) >= *open
            || self.hold_rolls.load(Ordering::Acquire)
        {
            return false;
        }
        let now = self.start.elapsed().as_micros() as u64;
        self.opened_us.store(now, Ordering::Release);
        self.sealed.store(epoch, Ordering::Release);
        *open = epoch + 1;
        true
    }

    /// Takes the control records logged since the last take: each seal and abandonment, in
    /// order. The log holds only what was not taken yet, so a long run does not grow it.
    pub fn take_controls(&self) -> Vec<Control> {
        std::mem::take(&mut self.log.lock().expect("clock lock").controls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::control::Controls;
    use crate::source::{EntryType, EventKind};

    /// What the clock's records say, taken.
    fn controls(clock: &EpochClock) -> Controls {
        let mut controls = Controls::default();
        for control in clock.take_controls() {
            controls.record(control);
        }
        controls
    }

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
        let said = controls(&clock);
        assert!(clock.take_controls().is_empty(), "a record is taken once");
        clock.seal(false, &[]);
        assert_eq!(clock.take_controls().len(), 1, "one record per seal");
        assert_eq!(said.commit_at_or_before(3), None);
        assert_eq!(said.commit_at_or_before(9), Some(4));
        let snapshot = Snapshot {
            source: "s".into(),
            first: 3,
            last: 4,
        };
        assert_eq!(said.snapshots_from(0, 4), [snapshot]);
        assert!(said.snapshots_from(1, 9).is_empty());
    }

    #[test]
    fn abandoned_epochs_are_never_commit_points_and_held_rolls_wait() {
        let clock = EpochClock::new(1, Some(Duration::ZERO));
        let (tx, _rx) = crossbeam_channel::unbounded();
        clock.hold_rolls(true);
        clock.send(&tx, event()).unwrap();
        clock.send(&tx, event()).unwrap();
        assert_eq!(clock.open(), 1, "no roll while held");
        clock.hold_rolls(false);
        assert_eq!(clock.seal(true, &[]), 1);
        assert_eq!(clock.seal(true, &[]), 2);
        clock.abandon_from(2);
        let said = controls(&clock);
        assert_eq!(said.committable_through(), 1);
        assert_eq!(said.commit_at_or_before(9), Some(1));
    }

    #[test]
    fn a_quiet_clock_catches_up_and_a_busy_or_held_one_does_not() {
        let clock = EpochClock::new(3, None);
        let (tx, rx) = crossbeam_channel::unbounded();
        assert!(clock.catch_up(7, 2));
        assert_eq!((clock.sealed(), clock.open()), (7, 8));
        assert!(!clock.catch_up(5, 7), "never back");
        clock.send(&tx, event()).unwrap();
        assert!(!clock.catch_up(12, 7), "epoch 8 has an event");
        assert_eq!(clock.seal(false, &[]), 8);
        assert!(
            !clock.catch_up(12, 7),
            "epoch 8 was sealed after the caller looked: its event may be on its way"
        );
        clock.hold_rolls(true);
        assert!(!clock.catch_up(12, 8), "an archive holds epoch 9");
        clock.hold_rolls(false);
        assert!(clock.catch_up(12, 8));
        clock.send(&tx, event()).unwrap();
        let epochs: Vec<u64> = rx.try_iter().map(|e| e.epoch).collect();
        assert_eq!(epochs, [8, 13]);
        let seals = (clock.take_controls().into_iter())
            .filter(|c| matches!(c, Control::Sealed { .. }))
            .count();
        assert_eq!(seals, 1, "only the real seal is recorded");
    }

    #[test]
    fn inline_bytes_wait_for_the_kernel_stage() {
        let clock = Arc::new(EpochClock::new(1, None));
        let (tx, rx) = crossbeam_channel::unbounded();
        let member = |n: usize| FileEvent {
            origin: Origin::Member(Member::Regular(vec![0; n])),
            ..event()
        };
        let big = (MAX_INLINE_BYTES / 2 + 1) as usize;
        clock.send(&tx, member(big)).unwrap();
        let sender = std::thread::spawn({
            let clock = clock.clone();
            move || clock.send(&tx, member(big)).unwrap()
        });
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(rx.try_iter().count(), 1, "the second member waits");
        clock.release_inline(big as u64);
        sender.join().unwrap();
        assert_eq!(rx.try_iter().count(), 1);
    }

    #[test]
    fn a_due_roll_seals_with_a_commit() {
        let clock = EpochClock::new(1, Some(Duration::ZERO));
        let (tx, rx) = crossbeam_channel::unbounded();
        clock.send(&tx, event()).unwrap();
        clock.send(&tx, event()).unwrap();
        let epochs: Vec<u64> = rx.try_iter().map(|e| e.epoch).collect();
        assert_eq!(epochs, [2, 3]);
        let said = controls(&clock);
        assert_eq!(said.commit_at_or_before(1), Some(1));
        assert_eq!(said.commit_at_or_before(9), Some(2));
    }
}
