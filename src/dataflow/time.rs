//! Timely time in the graph: `epoch << 32 | tick`. An epoch (a snapshot, a commit interval) is
//! split into ticks so that differential can settle its work tick by tick instead of holding a
//! whole snapshot; the lake and the statistics tables are written per epoch.

/// Bits of a timestamp that count ticks within an epoch.
const TICK_BITS: u32 = 32;

/// The first timestamp of `epoch`.
pub fn epoch_start(epoch: u64) -> u64 {
    epoch << TICK_BITS
}

/// The last timestamp of `epoch`.
pub fn epoch_end(epoch: u64) -> u64 {
    epoch_start(epoch + 1) - 1
}

/// The epoch of a timestamp.
pub fn epoch_of(time: u64) -> u64 {
    time >> TICK_BITS
}
