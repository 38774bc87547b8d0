//! The integration tests, one binary: replay into a lake and check it with independent oracles.

mod api;
mod api_files;
mod api_graphql;
mod auto_compact;
mod cluster;
mod compact;
mod crash;
mod cuda;
mod dashboard;
mod hardening_archives;
mod hardening_cli;
mod hardening_lake;
mod hardening_watch;
mod lake_visibility;
mod near_dup_watch;
mod near_duplicates;
mod replay;
mod replay_stop;
mod restart;
mod serve;
mod stats;
mod util;
mod watch;
