//! The worker's input loop: events from the source -> the graph's input, an epoch's events at
//! its epoch, in ticks. Flow control: at most [`MAX_EVENTS_IN_FLIGHT`] events are admitted and not
//! yet featurized over all workers; beyond that the loop only steps the graph, and the source
//! waits on its bounded channel.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use timely::dataflow::InputHandleVec;

use super::Shared;
use super::time::{epoch_of, epoch_start};
use crate::source::FileEvent;

/// Events admitted into the graph and not yet featurized, over all workers.
pub const MAX_EVENTS_IN_FLIGHT: usize = 8192;
/// Events a worker sends before it closes a tick and lets the graph run.
const EVENTS_PER_TICK: usize = 2048;
/// A tick that is this old closes when the source has no event ready.
const TICK_AGE: Duration = Duration::from_millis(20);

/// Sends `events` into `input` until the source hangs up or a worker fails, stepping the graph
/// as it goes.
pub(super) fn feed(
    worker: &mut timely::worker::Worker,
    input: &mut InputHandleVec<u64, FileEvent>,
    shared: &Shared,
    events: &Receiver<FileEvent>,
    failed: impl Fn() -> bool,
) {
    let plan = &shared.plan;
    let mut tick = Tick::default();
    loop {
        if failed() {
            shared.abort.store(true, Ordering::Release);
        }
        if shared.abort.load(Ordering::Acquire) {
            break;
        }
        let in_flight = shared.in_flight.load(Ordering::Acquire);
        if in_flight >= MAX_EVENTS_IN_FLIGHT {
            plan.progress.set_queues(events.len(), in_flight);
            tick.close_if_old(input);
            worker.step_or_park(Some(Duration::from_millis(1)));
            continue;
        }
        // Read before the channel: an epoch sealed after an empty receive may still have had an
        // event sent just before the seal, which must enter at its own epoch.
        let sealed = plan.clock.sealed();
        match events.try_recv() {
            Ok(event) => {
                debug_assert!(event.epoch >= epoch_of(*input.time()), "an event came late");
                if event.epoch > epoch_of(*input.time()) {
                    input.advance_to(epoch_start(event.epoch));
                    tick = Tick::default();
                }
                shared.in_flight.fetch_add(1, Ordering::AcqRel);
                input.send(event);
                if tick.sent() >= EVENTS_PER_TICK {
                    plan.progress.set_queues(events.len(), in_flight + 1);
                    tick.close(input);
                    worker.step();
                }
            }
            Err(TryRecvError::Empty) => {
                plan.progress.set_queues(0, in_flight);
                tick.close_if_old(input);
                // No event of an epoch sealed before the receive can come any more.
                if sealed >= epoch_of(*input.time()) {
                    input.advance_to(epoch_start(sealed + 1));
                }
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
            Err(TryRecvError::Disconnected) => break,
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
