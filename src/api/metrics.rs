//! The run's counters and the live snapshot -> Prometheus metrics, encoded at each scrape.

use std::path::Path;
use std::sync::atomic::Ordering;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::live::Live;
use crate::progress::ErrorKind;
use crate::sink::commit::{PART_TABLES, parts};
use crate::version::SkipReason;

/// The content type of the text [`Metrics::encode`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The labels of one API request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route's pattern, like `/api/v1/stats`; `unmatched` for unknown paths.
    pub route: String,
    pub status: u16,
}

/// The route of an API request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route's pattern, like `/api/v1/stats`; `unmatched` for unknown paths.
    pub route: String,
}

/// What failed: a file that could not be read (`unreadable`, `vanished`) or a step of the run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
}

/// Why a file was written as skipped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// What an event written to the lake did.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabels {
    /// `upsert` or `delete`.
    pub kind: &'static str,
}

/// A table of the lake.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TableLabels {
    pub table: &'static str,
}

/// Every metric the server exposes.
pub struct Metrics {
    registry: Registry,
    files: Counter,
    bytes: Counter,
    epoch: Gauge,
    committed_epoch: Gauge,
    ready: Gauge,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, Histogram>,
    errors: Family<ErrorLabels, Counter>,
    event_queue: Gauge,
    events_in_flight: Gauge,
    skipped: Family<ReasonLabels, Counter>,
    events: Family<KindLabels, Counter>,
    rescans: Counter,
    part_files: Family<TableLabels, Gauge>,
    lake_bytes: Gauge,
}

impl Metrics {
    /// The metrics of the run whose counters `live` holds.
    pub fn new(live: &Live) -> Metrics {
        let mut registry = Registry::with_prefix("exoflow");
        let files = Counter::default();
        let bytes = Counter::default();
        let epoch = Gauge::default();
        let committed_epoch = Gauge::default();
        let ready = Gauge::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "files",
            "File versions this run read or recorded as skipped (a file written twice counts twice; \
             deletes are not counted; the current number of files is the total/files statistic)",
            files.clone(),
        );
        registry.register(
            "bytes",
            "Bytes of file content this run read",
            bytes.clone(),
        );
        registry.register(
            "epoch",
            "The epoch through which the live statistics are applied",
            epoch.clone(),
        );
        registry.register(
            "committed_epoch",
            "The epoch of the lake's last commit",
            committed_epoch.clone(),
        );
        registry.register(
            "ready",
            "1 once the restored state and the first epoch are in the live statistics",
            ready.clone(),
        );
        registry.register(
            "http_requests",
            "API requests by route and status",
            requests.clone(),
        );
        // From 100 µs to about 3.3 s: the API answers from memory, a stream only starts.
        let request_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(request_duration_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an API request (a stream: to its first byte), by route",
            Unit::Seconds,
            request_duration.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "errors",
            "Failures by kind: files that could not be read (unreadable, vanished), watcher \
             errors (watch), failed lake writes (lake_write), commits (commit) and background \
             compactions (compaction)",
            errors.clone(),
        );
        let event_queue = Gauge::default();
        registry.register(
            "event_queue_depth",
            "Events waiting in the channel from the sources to the workers",
            event_queue.clone(),
        );
        let events_in_flight = Gauge::default();
        registry.register(
            "events_in_flight",
            "Events admitted into the dataflow and not yet featurized",
            events_in_flight.clone(),
        );
        let skipped = Family::<ReasonLabels, Counter>::default();
        let events = Family::<KindLabels, Counter>::default();
        let rescans = Counter::default();
        let part_files = Family::<TableLabels, Gauge>::default();
        let lake_bytes = Gauge::default();
        registry.register(
            "skipped",
            "Files written to the lake as skipped, by reason",
            skipped.clone(),
        );
        registry.register(
            "events",
            "Versions written to the lake by this run, by kind (upsert or delete)",
            events.clone(),
        );
        registry.register(
            "rescans",
            "Rescans of the watched roots after a lost notification",
            rescans.clone(),
        );
        registry.register_with_unit(
            "event_to_stats_latency",
            "Time from an event's receipt to the commit of the statistics reflecting it",
            Unit::Seconds,
            live.progress.event_latency.clone(),
        );
        registry.register_with_unit(
            "commit_duration",
            "Time each lake commit took",
            Unit::Seconds,
            live.progress.commit_duration.clone(),
        );
        registry.register(
            "lake_part_files",
            "Part files in each table of the lake",
            part_files.clone(),
        );
        registry.register_with_unit(
            "lake",
            "Bytes of the lake's part files",
            Unit::Bytes,
            lake_bytes.clone(),
        );
        Metrics {
            registry,
            skipped,
            events,
            rescans,
            part_files,
            lake_bytes,
            files,
            bytes,
            epoch,
            committed_epoch,
            ready,
            requests,
            request_duration,
            errors,
            event_queue,
            events_in_flight,
        }
    }
}

fn request_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    /// Counts one answered request and the seconds it took.
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                status,
            })
            .inc();
        (self.request_duration)
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// The metrics as of now, in the OpenMetrics text format.
    /// The part files of `lake`, when the server has one, are listed now.
    pub fn encode(&self, live: &Live, lake: Option<&Path>) -> String {
        // The counters mirror the run's own, which only grow.
        let progress = &live.progress;
        self.files
            .inner()
            .store(progress.files(), Ordering::Relaxed);
        self.bytes
            .inner()
            .store(progress.bytes(), Ordering::Relaxed);
        let snapshot = live.snapshot();
        self.epoch.set(gauge(snapshot.epoch));
        self.committed_epoch.set(gauge(snapshot.committed_epoch));
        self.ready.set(snapshot.ready.into());
        for reason in SkipReason::ALL {
            let count = progress.skipped(reason);
            (self.skipped.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            }))
            .inner()
            .store(count, Ordering::Relaxed);
        }
        for (kind, count) in [
            ("upsert", progress.upserts()),
            ("delete", progress.deletes()),
        ] {
            (self.events.get_or_create(&KindLabels { kind }))
                .inner()
                .store(count, Ordering::Relaxed);
        }
        self.rescans
            .inner()
            .store(progress.rescans(), Ordering::Relaxed);
        let read_errors = [SkipReason::Unreadable, SkipReason::Vanished]
            .map(|reason| (reason.as_str(), progress.skipped(reason)));
        let run_errors = ErrorKind::ALL.map(|kind| (kind.as_str(), progress.errors(kind)));
        for (kind, count) in read_errors.into_iter().chain(run_errors) {
            (self.errors.get_or_create(&ErrorLabels { kind }))
                .inner()
                .store(count, Ordering::Relaxed);
        }
        self.event_queue.set(gauge(progress.queued()));
        self.events_in_flight.set(gauge(progress.in_flight()));
        if let Some(lake) = lake {
            let mut bytes = 0u64;
            for table in PART_TABLES {
                let parts = parts(lake, table);
                // A part that a compaction removes meanwhile is not counted.
                bytes += (parts.iter())
                    .filter_map(|p| std::fs::metadata(p).ok())
                    .map(|m| m.len())
                    .sum::<u64>();
                (self.part_files.get_or_create(&TableLabels { table }))
                    .set(gauge(parts.len() as u64));
            }
            self.lake_bytes.set(gauge(bytes));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

fn gauge(value: u64) -> i64 {
    value.min(i64::MAX as u64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_metrics_names_follow_conventions() {
        let live = Live::default();
        let metrics = Metrics::new(&live);
        live.progress.add(2, 30);
        live.progress.written(false, None);
        live.progress.written(false, Some(SkipReason::TooLarge));
        live.progress.written(true, None);
        live.progress.rescan();
        live.progress.written(false, Some(SkipReason::Vanished));
        live.progress.error(ErrorKind::Compaction);
        live.progress.set_queues(5, 7);
        live.progress.event_latency.observe(0.002);
        live.progress.commit_duration.observe(0.5);
        live.advance(4, 3, true);
        metrics.request("/api/v1/stats", 200, 0.0002);
        metrics.request("/api/v1/stats", 400, 0.3);
        let lake = tempfile::tempdir().unwrap();
        std::fs::create_dir(lake.path().join("files")).unwrap();
        std::fs::write(lake.path().join("files/part-w0-1-1.parquet"), [0; 7]).unwrap();
        let text = metrics.encode(&live, Some(lake.path()));
        for line in [
            "exoflow_files_total 2",
            "exoflow_bytes_total 30",
            "exoflow_epoch 4",
            "exoflow_committed_epoch 3",
            "exoflow_ready 1",
            "exoflow_http_requests_total{route=\"/api/v1/stats\",status=\"200\"} 1",
            "exoflow_skipped_total{reason=\"too_large\"} 1",
            "exoflow_skipped_total{reason=\"symlink\"} 0",
            "exoflow_events_total{kind=\"upsert\"} 3",
            "exoflow_errors_total{kind=\"vanished\"} 1",
            "exoflow_errors_total{kind=\"unreadable\"} 0",
            "exoflow_errors_total{kind=\"compaction\"} 1",
            "exoflow_errors_total{kind=\"commit\"} 0",
            "exoflow_event_queue_depth 5",
            "exoflow_events_in_flight 7",
            "exoflow_http_request_duration_seconds_count{route=\"/api/v1/stats\"} 2",
            "exoflow_http_request_duration_seconds_bucket{le=\"0.0002\",route=\"/api/v1/stats\"} 1",
            "exoflow_events_total{kind=\"delete\"} 1",
            "exoflow_rescans_total 1",
            "exoflow_event_to_stats_latency_seconds_count 1",
            "exoflow_commit_duration_seconds_count 1",
            "exoflow_commit_duration_seconds_sum 0.5",
            "exoflow_lake_bytes 7",
            "exoflow_lake_part_files{table=\"files\"} 1",
            "exoflow_lake_part_files{table=\"matches\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
