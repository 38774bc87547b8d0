//! The lake-writing operator.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline as PipelinePact;
use timely::dataflow::operators::{Capability, Operator};

use super::Shared;
use super::control::Controls;
use super::reconcile::Reconciled;
use super::stats::{DirKeys, Tracked};
use super::time::epoch_of;
use crate::progress::ErrorKind;
use crate::sink::{LakeWriter, SinkError};

/// What the lake-writing operator holds.
pub(super) struct LakeSink {
    pub(super) writer: Rc<RefCell<LakeWriter>>,
    pub(super) failure: Rc<RefCell<Option<SinkError>>>,
    pub(super) shared: Arc<Shared>,
}

/// Versions -> the worker's part files, and -> upserts keyed by path id, at the time they travel
/// at, for the current-versions arrangement (so that no version is copied for two consumers).
///
/// Parts are closed at the commit epochs the control records request (reconcile passes them on
/// ahead of the changes of later epochs): before the first row of a later
/// epoch, and when the input frontier passes the commit epoch. The operator holds its capability
/// until then, so that nothing downstream sees an epoch complete before its parts are closed,
/// and it keeps it for good after a write failure, so that nothing after it is committed.
pub(super) fn write_lake<'scope>(
    versions: StreamVec<'scope, u64, Reconciled>,
    sink: LakeSink,
) -> StreamVec<'scope, u64, (u128, Option<Tracked>, u64)> {
    versions.unary_frontier::<CapacityContainerBuilder<Vec<(u128, Option<Tracked>, u64)>>, _, _, _>(
        PipelinePact,
        "LakeWriter",
        move |capability, _info| {
            let LakeSink {
                writer,
                failure,
                shared,
            } = sink;
            let mut dirs = DirKeys::new(shared.plan.dir_depth);
            let mut controls = Controls::default();
            let progress = shared.plan.progress.clone();
            let mut capability = Some(capability);
            move |(input, frontier), output| {
                let fail = |error: SinkError| {
                    tracing::error!(error = %error, "lake write failed");
                    progress.error(ErrorKind::LakeWrite);
                    shared.abort.store(true, Ordering::Release);
                    failure.borrow_mut().get_or_insert(error);
                };
                let mut writer = writer.borrow_mut();
                input.for_each(|time, data| {
                    let at = *time.least().expect("a message has a time");
                    let epoch = epoch_of(at);
                    let mut changes = Vec::with_capacity(data.len());
                    let mut restored = Vec::new();
                    for item in data.drain(..) {
                        match item {
                            Reconciled::Change(id, v) => changes.push((id, v)),
                            Reconciled::Control(control) => controls.record(control),
                            Reconciled::Restored(id, v) => {
                                if let Some(tracked) = Tracked::of(&v, &mut dirs) {
                                    restored.push((id, Some(tracked), at));
                                }
                            }
                        }
                    }
                    // Restored versions are in the lake already: only the arrangement takes them.
                    if !restored.is_empty() {
                        output.session(&time).give_container(&mut restored);
                    }
                    if changes.is_empty() {
                        return;
                    }
                    if failure.borrow().is_none()
                        && must_close(&writer, &controls, epoch)
                        && let Err(error) = writer.close_parts()
                    {
                        fail(error);
                    }
                    let mut session = output.session(&time);
                    for (id, v) in changes {
                        session.give((id, Tracked::of(&v, &mut dirs), at));
                        if failure.borrow().is_none() {
                            let (deleted, skip) = (v.deleted, v.skip_reason);
                            match writer.push(v) {
                                Ok(()) => progress.written(deleted, skip),
                                Err(error) => fail(error),
                            }
                        }
                    }
                });
                if failure.borrow().is_some() {
                    return; // the capability stays where it is
                }
                let first = frontier.frontier().first().copied();
                if let Err(error) = advance(&mut writer, &controls, first, &mut capability) {
                    fail(error);
                }
            }
        },
    )
}

/// Closes the part files once the epoch they hold is complete, and moves the capability up to
/// the input frontier's least time `first` (none: the input is done, and so is the operator).
/// On an error the capability stays where it is.
fn advance(
    writer: &mut LakeWriter,
    controls: &Controls,
    first: Option<u64>,
    capability: &mut Option<Capability<u64>>,
) -> Result<(), SinkError> {
    let Some(cap) = capability.as_mut() else {
        return Ok(());
    };
    match first {
        Some(t) => {
            let complete = epoch_of(t).checked_sub(1);
            if complete.is_some_and(|done| must_close(writer, controls, done + 1)) {
                writer.close_parts()?;
            }
            if t > *cap.time() {
                cap.downgrade(&t);
            }
        }
        None => {
            writer.close_parts()?;
            *capability = None;
        }
    }
    Ok(())
}

/// Whether the open parts must be closed before rows of `epoch`: a commit was requested at or
/// after their last epoch and before `epoch`.
fn must_close(writer: &LakeWriter, controls: &Controls, epoch: u64) -> bool {
    match writer.open_epochs() {
        Some((_, last)) if last < epoch => controls
            .commit_at_or_before(epoch - 1)
            .is_some_and(|c| c >= last),
        _ => false,
    }
}
