//! Run counters shared by the workers -> a progress bar on stderr (when it is a terminal) and the summary.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::version::SkipReason;

/// Files and bytes featurized so far, and the other counters of the run that `/metrics` shows.
#[derive(Debug)]
pub struct Progress {
    files: AtomicU64,
    bytes: AtomicU64,
    upserts: AtomicU64,
    deletes: AtomicU64,
    skipped: [AtomicU64; SkipReason::ALL.len()],
    rescans: AtomicU64,
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
            // 1 ms to about 65 s.
            event_latency: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            // 1 ms to about 33 s.
            commit_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        }
    }
}

impl Progress {
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
