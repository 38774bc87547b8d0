//! The live service: the snapshot the commit coordinator publishes ([`live`]).
//!
//! **The API never blocks a worker**: the workers only swap in an immutable [`live::Snapshot`] and
//! send a diff into a bounded broadcast channel.

pub mod live;
