//! The worker's input loop: events from the source -> the graph's input, an epoch's events at
//! its epoch, in ticks. Flow control comes from the dataflow's progress: each worker keeps
//! its share of [`MAX_EVENTS_IN_FLIGHT`] events sent and not yet featurized, which a probe of
//! the featurize stage's output releases time by time; beyond that the loop only steps the
//! graph, and the source waits on its bounded channel. Bytes carried inline (archive members)
//! are bounded too: the source admits them against the clock's budget (see
//! [`EpochClock`]), and this loop releases them with their
//! events.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use timely::dataflow::InputHandleVec;
use timely::dataflow::operators::probe::Handle as ProbeHandle;

use super::Shared;
use super::control::Control;
use super::time::{epoch_of, epoch_start};
use crate::epochs::{EpochClock, MAX_INLINE_BYTES};
use crate::progress::Progress;
use crate::source::FileEvent;

/// Events sent into the graph and not yet featurized, over all workers.
pub const MAX_EVENTS_IN_FLIGHT: usize = 16384;
/// Events a worker sends before it closes a tick and lets the graph run.
const EVENTS_PER_TICK: usize = 2048;
/// A tick that is this old closes when the source has no event ready.
const TICK_AGE: Duration = Duration::from_millis(20);

/// What the graph tells the input loop.
pub(super) struct Signals<'a> {
    /// Probes the featurize stage's output: flow control.
    pub(super) featurized: &'a ProbeHandle<u64>,
    /// The highest epoch any process sealed: a quiet clock catches up with it (see
    /// [`EpochClock::catch_up`]).
    pub(super) sealed_anywhere: &'a Cell<u64>,
}

/// Sends `events` into `input` until the source hangs up or a worker fails, stepping the graph
/// as it goes.
pub(super) fn feed(
    worker: &mut timely::worker::Worker,
    input: &mut InputHandleVec<u64, FileEvent>,
    mut control: Option<ControlInput>,
    signals: Signals<'_>,
    shared: &Shared,
    events: &Receiver<FileEvent>,
    failed: impl Fn() -> bool,
) {
    let plan = &shared.plan;
    // The control input follows the event input, and sends the records of each epoch before it
    // moves past the epoch.
    let mut follow = |input: &InputHandleVec<u64, FileEvent>| {
        if let Some(control) = control.as_mut() {
            control.advance_to(&plan.clock, *input.time());
        }
    };
    let mut tick = Tick::default();
    let mut admitted = Admitted::new(MAX_EVENTS_IN_FLIGHT.div_ceil(worker.peers()));
    let tick_bytes = MAX_INLINE_BYTES / 4 / worker.peers() as u64;
    loop {
        if failed() {
            shared.abort.store(true, Ordering::Release);
        }
        if shared.abort.load(Ordering::Acquire) {
            break;
        }
        admitted.release(signals.featurized, &plan.clock, &plan.progress);
        if admitted.is_full() {
            plan.progress.set_queued(events.len());
            admitted.report(&plan.progress);
            // Nothing more is sent until the graph is through the open tick: close it.
            tick.close(input);
            follow(input);
            worker.step_or_park(Some(Duration::from_millis(1)));
            continue;
        }
        // Read before the channel: an epoch sealed after an empty receive may still have had an
        // event sent just before the seal, which must enter at its own epoch.
        let sealed = plan.clock.sealed();
        match events.try_recv() {
            Ok(event) => {
                // A late event would enter after its epoch's snapshot closed: never write that.
                assert!(event.epoch >= epoch_of(*input.time()), "an event came late");
                if event.epoch > epoch_of(*input.time()) {
                    input.advance_to(epoch_start(event.epoch));
                    follow(input);
                    tick = Tick::default();
                }
                let inline = admitted.sent(*input.time(), EpochClock::inline_bytes(&event));
                input.send(event);
                // A tick's inline bytes are released together: a tick holds at most a share of
                // the budget, so that the sources never wait on one tick alone.
                if tick.sent() >= EVENTS_PER_TICK || inline >= tick_bytes {
                    plan.progress.set_queued(events.len());
                    tick.close(input);
                    follow(input);
                    worker.step();
                }
            }
            Err(TryRecvError::Empty) => {
                let sealed = sealed_when_idle(&plan.clock, sealed, signals.sealed_anywhere);
                plan.progress.set_queued(0);
                admitted.report(&plan.progress);
                tick.close_if_old(input);
                // No event of an epoch sealed before the receive can come any more.
                if sealed >= epoch_of(*input.time()) {
                    input.advance_to(epoch_start(sealed + 1));
                }
                follow(input);
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
            Err(TryRecvError::Disconnected) => break,
        }
    }
    if let Some(control) = control {
        control.finish(&plan.clock);
    }
}

/// The epoch through which no event can come any more, when the source had nothing ready after
/// `sealed` was read: a quiet clock first follows its peers' seals (nothing of its open epoch
/// was sent), see [`EpochClock::catch_up`].
fn sealed_when_idle(clock: &EpochClock, sealed: u64, sealed_anywhere: &Cell<u64>) -> u64 {
    match clock.catch_up(sealed_anywhere.get(), sealed) {
        true => clock.sealed(),
        false => sealed,
    }
}

/// The control records' input (see [`Control`]), on the one worker that sends them: the
/// clock's records, each seal at a time of its epoch.
pub(super) struct ControlInput {
    handle: InputHandleVec<u64, Control>,
    /// Records taken from the clock and not sent yet: seals of epochs the input is not past.
    pending: VecDeque<Control>,
}

impl ControlInput {
    pub(super) fn new(handle: InputHandleVec<u64, Control>) -> ControlInput {
        ControlInput {
            handle,
            pending: VecDeque::new(),
        }
    }

    /// Moves to `time`, having sent the records of every epoch before its epoch. The clock has
    /// them: an epoch is sealed, and its record written, before any event of a later epoch is
    /// stamped, and the event input moves past an epoch only once it is sealed.
    fn advance_to(&mut self, clock: &EpochClock, time: u64) {
        if epoch_of(time) > epoch_of(*self.handle.time()) {
            self.send(clock, epoch_of(time));
        }
        if time > *self.handle.time() {
            self.handle.advance_to(time);
        }
    }

    /// Sends the clock's new records, up to the seal of `before` (exclusive).
    fn send(&mut self, clock: &EpochClock, before: u64) {
        self.pending.extend(clock.take_controls());
        while let Some(control) = self.pending.front() {
            if let Control::Sealed { epoch, .. } = control {
                if *epoch >= before {
                    break;
                }
                if epoch_start(*epoch) > *self.handle.time() {
                    self.handle.advance_to(epoch_start(*epoch));
                }
            }
            let control = self.pending.pop_front().expect("a record");
            self.handle.send(control);
        }
    }

    /// The sources are done: sends every record left and the run's last epoch, and closes.
    fn finish(mut self, clock: &EpochClock) {
        self.send(clock, u64::MAX);
        self.handle.send(Control::Last(clock.last()));
    }
}

/// This worker's events sent into the graph and not yet featurized, by the time they were sent
/// at: once the featurize stage's output frontier is past a time, every worker has featurized
/// that time's events, and they and their inline bytes are released.
struct Admitted {
    /// (time, events, inline bytes), in time order.
    times: VecDeque<(u64, usize, u64)>,
    events: usize,
    limit: usize,
    /// `events` as last added to the progress gauge.
    reported: usize,
}

impl Admitted {
    fn new(limit: usize) -> Admitted {
        Admitted {
            times: VecDeque::new(),
            events: 0,
            limit,
            reported: 0,
        }
    }

    fn is_full(&self) -> bool {
        self.events >= self.limit
    }

    /// Counts one event sent at `time` with `bytes` inline; returns the inline bytes sent at
    /// `time`.
    fn sent(&mut self, time: u64, bytes: u64) -> u64 {
        self.events += 1;
        match self.times.back_mut() {
            Some((at, events, inline)) if *at == time => {
                *events += 1;
                *inline += bytes;
                *inline
            }
            _ => {
                self.times.push_back((time, 1, bytes));
                bytes
            }
        }
    }

    /// Releases the times `featurized`'s frontier is past.
    fn release(&mut self, featurized: &ProbeHandle<u64>, clock: &EpochClock, progress: &Progress) {
        let (mut events, mut bytes) = (0, 0);
        while let Some(&(time, n, inline)) = self.times.front() {
            if featurized.less_equal(&time) {
                break;
            }
            self.times.pop_front();
            (events, bytes) = (events + n, bytes + inline);
        }
        if events > 0 {
            self.events -= events;
            clock.release_inline(bytes);
            self.report(progress);
        }
    }

    /// Brings this worker's part of the in-flight gauge up to date: when events are released,
    /// when the worker is full and when the source is idle, not for each event sent, which would make every event an
    /// atomic update of a line all workers share.
    fn report(&mut self, progress: &Progress) {
        if self.events != self.reported {
            progress.move_in_flight(
                self.events,
                std::mem::replace(&mut self.reported, self.events),
            );
        }
    }
}

/// The events sent in the open tick of a worker's input. A tick closes after
/// [`EVENTS_PER_TICK`] events, or when it is [`TICK_AGE`] old and the source has nothing more
/// for now: fewer, fuller ticks mean fewer batches and less progress tracking downstream, and
/// the age bound lets a slow source's events move on.
#[derive(Default)]
struct Tick {
    events: usize,
    opened: Option<Instant>,
}

impl Tick {
    /// Counts one event sent; returns the events of the tick.
    fn sent(&mut self) -> usize {
        self.opened.get_or_insert_with(Instant::now);
        self.events += 1;
        self.events
    }

    /// Closes the tick if anything was sent in it.
    fn close(&mut self, input: &mut InputHandleVec<u64, FileEvent>) {
        if self.events > 0 {
            let next = *input.time() + 1;
            input.advance_to(next);
            *self = Tick::default();
        }
    }

    /// Closes the tick if it is old enough.
    fn close_if_old(&mut self, input: &mut InputHandleVec<u64, FileEvent>) {
        if self.opened.is_some_and(|at| at.elapsed() >= TICK_AGE) {
            self.close(input);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use timely::dataflow::InputHandleVec;
    use timely::dataflow::operators::probe::Probe;

    use super::*;
    use crate::source::{EntryType, EventKind, Member, Origin};

    fn member(bytes: usize) -> FileEvent {
        FileEvent {
            source: "s".into(),
            path: b"a".to_vec(),
            kind: EventKind::Upsert,
            epoch: 1,
            observed_at_us: 0,
            entry: EntryType::File,
            origin: Origin::Member(Member::Regular(vec![0; bytes])),
        }
    }

    /// A time's events and inline bytes are released once the probe is past the time, not
    /// before: until then the worker is full and a source with no budget left waits.
    #[test]
    fn events_and_bytes_are_released_when_the_probe_passes_their_time() {
        let clock = Arc::new(EpochClock::new(1, None));
        let (tx, rx) = crossbeam_channel::unbounded();
        let big = (MAX_INLINE_BYTES / 2 + 1) as usize;
        clock.send(&tx, member(big)).unwrap();
        let event = rx.try_recv().unwrap();
        let waiting = std::thread::spawn({
            let clock = clock.clone();
            move || clock.send(&tx, member(big)).unwrap()
        });
        let released = timely::execute_directly({
            let clock = clock.clone();
            move |worker| {
                let progress = Progress::default();
                let mut input = InputHandleVec::<u64, FileEvent>::new();
                let probe = worker.dataflow::<u64, _, _>(|scope| input.to_stream(scope).probe().0);
                let mut admitted = Admitted::new(1);
                let bytes = EpochClock::inline_bytes(&event);
                assert_eq!(admitted.sent(*input.time(), bytes), big as u64);
                input.send(event);
                worker.step();
                admitted.release(&probe, &clock, &progress);
                assert!(admitted.is_full(), "the time is not complete");
                input.advance_to(1);
                while probe.less_equal(&0) {
                    worker.step();
                }
                admitted.release(&probe, &clock, &progress);
                !admitted.is_full()
            }
        });
        assert!(released);
        waiting.join().unwrap();
        assert_eq!(
            rx.try_iter().count(),
            1,
            "the waiting source sent once released"
        );
    }
}
