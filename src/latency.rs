//! Event-to-statistics latency: when each epoch's events were received -> an HdrHistogram, recorded
//! when the statistics reflecting that epoch are committed.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Receive instants waiting for their epoch's statistics, and the latencies seen so far.
#[derive(Debug)]
pub struct LatencyRecorder {
    received: Mutex<BTreeMap<u64, Vec<Instant>>>,
    histogram: Mutex<Histogram<u64>>,
    /// Also observes each latency, in seconds, for `/metrics`.
    observer: Option<prometheus_client::metrics::histogram::Histogram>,
}

/// p50, p99 and max in microseconds, and the count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl std::fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        write!(
            f,
            "event-to-statistics latency over {} events: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.count,
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.max_us)
        )
    }
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        LatencyRecorder {
            received: Mutex::new(BTreeMap::new()),
            // One microsecond to one hour, three significant digits.
            histogram: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            ),
            observer: None,
        }
    }
}

impl LatencyRecorder {
    /// A recorder that also observes each latency in `observer`, in seconds.
    pub fn observing(observer: prometheus_client::metrics::histogram::Histogram) -> Self {
        LatencyRecorder {
            observer: Some(observer),
            ..LatencyRecorder::default()
        }
    }

    /// An event of `epoch` was received now.
    pub fn received(&self, epoch: u64) {
        let mut received = self.received.lock().expect("not poisoned");
        received.entry(epoch).or_default().push(Instant::now());
    }

    /// The statistics of every epoch up to `epoch` are now committed.
    pub fn reflected_through(&self, epoch: u64) {
        let now = Instant::now();
        let mut received = self.received.lock().expect("not poisoned");
        let later = received.split_off(&(epoch + 1));
        let done = std::mem::replace(&mut *received, later);
        drop(received);
        let mut histogram = self.histogram.lock().expect("not poisoned");
        for instant in done.into_values().flatten() {
            let elapsed = now.saturating_duration_since(instant);
            let us = elapsed.as_micros() as u64;
            histogram.saturating_record(us.max(1));
            if let Some(observer) = &self.observer {
                observer.observe(elapsed.as_secs_f64());
            }
        }
    }

    pub fn summary(&self) -> LatencySummary {
        let histogram = self.histogram.lock().expect("not poisoned");
        LatencySummary {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.5),
            p99_us: histogram.value_at_quantile(0.99),
            max_us: histogram.max(),
        }
    }
}

/// Logs the summary every `every` until `stop` is set (unpark the thread to stop it at once).
pub fn log_periodically(
    recorder: std::sync::Arc<LatencyRecorder>,
    every: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut last = Instant::now();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            // Woken early by the caller when it stops.
            std::thread::park_timeout(Duration::from_millis(100));
            if last.elapsed() >= every {
                last = Instant::now();
                let s = recorder.summary();
                tracing::info!(
                    events = s.count,
                    p50_us = s.p50_us,
                    p99_us = s.p99_us,
                    max_us = s.max_us,
                    "event-to-statistics latency"
                );
            }
        }
    })
}
