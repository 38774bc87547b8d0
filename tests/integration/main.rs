//! The integration tests, one binary: replay into a lake and check it with independent oracles.

mod compact;
mod crash;
mod hardening_cli;
mod lake_visibility;
mod replay;
mod restart;
mod stats;
mod util;
mod watch;
