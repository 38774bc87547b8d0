//! Run counters shared by the workers -> a progress bar on stderr (when it is a terminal) and the summary.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::version::SkipReason;

/// A failure a run counts and carries on from (or, for a lake write or a commit, stops at); the
/// files that could not be read are counted by their [`SkipReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The watcher reported an error, or part of a watched tree could not be listed or watched.
    Watch,
    /// A part file could not be written.
    LakeWrite,
    /// A commit failed.
    Commit,
    /// A background compaction failed or could not list the lake's parts.
    Compaction,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 4] = [
        ErrorKind::Watch,
        ErrorKind::LakeWrite,
        ErrorKind::Commit,
        ErrorKind::Compaction,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Watch => "watch",
            ErrorKind::LakeWrite => "lake_write",
            ErrorKind::Commit => "commit",
            ErrorKind::Compaction => "compaction",
        }
    }
}

/// Files and bytes featurized so far, and the other counters of the run that `/metrics` shows.
#[derive(Debug)]
pub struct Progress {
    files: AtomicU64,
    bytes: AtomicU64,
    upserts: AtomicU64,
    deletes: AtomicU64,
    skipped: [AtomicU64; SkipReason::ALL.len()],
    rescans: AtomicU64,
    errors: [AtomicU64; ErrorKind::ALL.len()],
    /// Events waiting between the sources and the workers, as a worker last saw it.
    queued: AtomicU64,
    /// Events admitted into the graph and not yet featurized, as a worker last saw it.
    in_flight: AtomicU64,
    /// Seconds from an event's receipt to the commit of the statistics reflecting it.
    pub event_latency: Histogram,
    /// Seconds each lake commit took.
    pub commit_duration: Histogram,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress {
            files: AtomicU64::default(),
            bytes: AtomicU64::default(),
            upserts: AtomicU64::default(),
            deletes: AtomicU64::default(),
            skipped: Default::default(),
            rescans: AtomicU64::default(),
            errors: Default::default(),
            queued: AtomicU64::default(),
            in_flight: AtomicU64::default(),
            // 1 ms to about 65 s.
            event_latency: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            // 1 ms to about 33 s.
            commit_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        }
    }
}

impl Progress {
    /// `files` files were read (or found unreadable) with `bytes` bytes of content.
    pub fn add(&self, files: u64, bytes: u64) {
        self.files.fetch_add(files, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn files(&self) -> u64 {
        self.files.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// A version was written to the lake: an upsert (skipped for `skip`) or a delete.
    pub fn written(&self, deleted: bool, skip: Option<SkipReason>) {
        if deleted {
            self.deletes.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.upserts.fetch_add(1, Ordering::Relaxed);
        if let Some(reason) = skip {
            self.skipped[reason as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Upserts written to the lake.
    pub fn upserts(&self) -> u64 {
        self.upserts.load(Ordering::Relaxed)
    }

    /// Deletes written to the lake.
    pub fn deletes(&self) -> u64 {
        self.deletes.load(Ordering::Relaxed)
    }

    /// Versions written as skipped for `reason`.
    pub fn skipped(&self, reason: SkipReason) -> u64 {
        self.skipped[reason as usize].load(Ordering::Relaxed)
    }

    pub fn rescan(&self) {
        self.rescans.fetch_add(1, Ordering::Relaxed);
    }

    /// Rescans of the watched roots.
    pub fn rescans(&self) -> u64 {
        self.rescans.load(Ordering::Relaxed)
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Failures of `kind` so far.
    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors[kind as usize].load(Ordering::Relaxed)
    }

    /// The depths of the flow control's queues: events waiting in the channel from the sources,
    /// and events in the graph not yet featurized.
    pub fn set_queues(&self, queued: usize, in_flight: usize) {
        self.queued.store(queued as u64, Ordering::Relaxed);
        self.in_flight.store(in_flight as u64, Ordering::Relaxed);
    }

    /// Events waiting in the channel from the sources.
    pub fn set_queued(&self, queued: usize) {
        self.queued.store(queued as u64, Ordering::Relaxed);
    }

    /// A worker's events in the graph not yet featurized grew by `more` and shrank by `fewer`
    /// (each worker reports its own; the gauge is their sum).
    pub fn move_in_flight(&self, more: usize, fewer: usize) {
        self.in_flight.fetch_add(more as u64, Ordering::Relaxed);
        self.in_flight.fetch_sub(fewer as u64, Ordering::Relaxed);
    }

    /// Events waiting in the channel from the sources.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Events in the graph not yet featurized.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A progress bar that redraws from the counters until stopped; hidden when stderr is not a
/// terminal.
pub struct ProgressDisplay {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ProgressDisplay {
    pub fn start(progress: Arc<Progress>, visible: bool) -> ProgressDisplay {
        let stop = Arc::new(AtomicBool::new(false));
        let bar = if visible {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .expect("valid template"),
        );
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let started = std::time::Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let secs = started.elapsed().as_secs_f64().max(1e-3);
                    let files = progress.files();
                    let mb = progress.bytes() as f64 / 1e6;
                    bar.set_message(format!(
                        "{files} files, {mb:.1} MB, {:.0} files/s, {:.1} MB/s",
                        files as f64 / secs,
                        mb / secs
                    ));
                    bar.tick();
                    // Woken early by `finish`.
                    std::thread::park_timeout(Duration::from_millis(100));
                }
                bar.finish_and_clear();
            }
        });
        ProgressDisplay {
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Bytes in the largest decimal unit that keeps a digit before the point.
pub fn human_bytes(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}
