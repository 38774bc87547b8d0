//! exoflow turns file changes into exact, queryable analytics.
//!
//! # Data path
//!
//! ```text
//!  source (walk | archive | watch) --FileEvent--> reader + batcher, on the worker that took the
//!    event (one Arrow binary array of contents per batch)
//!    --> kernel stage (hash, lines, entropy, binary, MinHash; language; rule matches)
//!    --> FileVersion --> exchange by hash(source, path)
//!    --> reconcile (only changes; deletes for paths a snapshot lacks)
//!    --> lake writer (Parquet part files per worker and table)
//!    --> upsert arrangement keyed by path (differential) --> statistics --> stats writer
//!                                                        \-> near-duplicate clusters --/
//! ```
//!
//! - [`source`] emits [`source::FileEvent`]s and never reads file contents (archive members,
//!   which only exist inside a stream, are the exception).
//! - [`read`] opens regular files only and never follows a symlink or opens a FIFO.
//! - [`batch`] gathers contents into one values buffer + offsets: what every kernel backend takes.
//! - [`kernels`] computes features over whole batches; the CPU backend is the reference;
//!   [`kernels::minhash`] defines the MinHash signature.
//! - [`dataflow`] is the timely graph; [`dataflow::stats`] holds the statistics, each a function
//!   from the collection of current versions to a collection of statistic updates;
//!   [`dataflow::near_dup`] derives near-duplicate clusters from the same collection.
//! - [`epochs`] is the sources' clock: the open epoch, what is sealed, where to commit, which
//!   snapshots ended; the graph learns of seals, commits and snapshot ends as
//!   [`dataflow::control`] records that travel through it.
//! - [`sink`] writes the lake; [`sink::schema`] loads `schemas/*.json`, the single source of
//!   truth for every table; [`sink::commit`] is the commit protocol and [`sink::restore`] reads the
//!   committed state back for a restarted run; [`dataflow::commit`] commits once every worker is
//!   through an epoch.
//! - [`api`] is the live service: the snapshot the commit coordinator publishes per epoch and the
//!   HTTP server that reads it; REST and GraphQL answer from one query layer ([`api::query`]),
//!   and a dashboard page reads the same API; [`api::follow`] publishes the same snapshot from a
//!   lake another process writes, for `exoflow serve`, reading it and never writing it.
//!
//! # Invariants
//!
//! - **Every input entry ends as a `files` row**: with features, or with a `skip_reason`.
//! - **A bad file never stops a run**; it becomes a row, a counter and a log line with its path.
//! - **Rule counts are exact and independent**: each rule counts its own non-overlapping
//!   leftmost-first matches, whatever the other rules match.
//! - **Secrets are not copied**: a `secret` rule's matched text never reaches the lake or logs.
//! - **Readers never see a half-written Parquet file**: parts are renamed into place when complete.
//! - **Same rows whatever the route**: directory or archive, 1 or N workers, any kernel backend.
//! - **Exactly once**: a commit record under `_exoflow/` covers every part file up to its epoch;
//!   anything past it is removed when the lake is next opened, and a run continues from the
//!   committed state, so a crash at any point loses nothing and writes nothing twice.
//! - **The API never blocks a worker**: workers publish an immutable snapshot and a bounded diff
//!   history; the server only reads them, and a client that falls behind is disconnected.
//! - **Statistics are never hand-retracted**: they derive from the upsert arrangement of current
//!   versions, so a changed or deleted file's old contribution is retracted by differential;
//!   so are near-duplicate clusters.

pub mod api;
pub mod batch;
pub mod cluster;
pub mod dataflow;
pub mod epochs;
pub mod kernels;
pub mod latency;
pub mod pipeline;
pub mod progress;
pub mod query;
pub mod read;
pub mod replay;
pub mod sink;
pub mod source;
pub mod version;
pub mod watch;
