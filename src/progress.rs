//! Run counters shared by the workers -> a progress bar on stderr (when it is a terminal) and the summary.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Files and bytes featurized so far.
#[derive(Debug, Default)]
pub struct Progress {
    files: AtomicU64,
    bytes: AtomicU64,
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
