//! The featurize operator.

use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;

use super::Shared;
use crate::batch::Batcher;
use crate::source::FileEvent;
use crate::version::FileVersion;

/// Events -> versions, on the worker that took the event from the source: a file is read where
/// its source is, into a batch, and the kernel stage runs over the batch; the versions then go
/// to the worker that owns their path (see `reconcile`). The input loop learns that an event is
/// done with from this operator's output frontier (see `input::Admitted`).
pub(super) fn featurize<'scope>(
    events: StreamVec<'scope, u64, FileEvent>,
    shared: Arc<Shared>,
) -> StreamVec<'scope, u64, FileVersion> {
    events.unary::<CapacityContainerBuilder<Vec<FileVersion>>, _, _, _>(
        Pipeline,
        "Featurize",
        move |_capability, _info| {
            let plan = &shared.plan;
            let mut batcher = Batcher::new(plan.max_file_bytes);
            let mut kernels = plan.stage.worker();
            move |input, output| {
                let plan = &shared.plan;
                input.for_each(|capability, data| {
                    let mut flush = |batcher: &mut Batcher| {
                        let files = batcher.files();
                        let bytes = batcher.bytes();
                        let (versions, contents) =
                            plan.stage.run(kernels.as_mut(), batcher.finish());
                        batcher.recycle(contents);
                        plan.progress.add(files as u64, bytes as u64);
                        output
                            .session(&capability)
                            .give_iterator(versions.into_iter());
                    };
                    for event in data.drain(..) {
                        batcher.push(event);
                        if batcher.is_full() {
                            flush(&mut batcher);
                        }
                    }
                    if !batcher.is_empty() {
                        flush(&mut batcher);
                    }
                });
            }
        },
    )
}
