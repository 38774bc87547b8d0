//! The run's counters and the live snapshot -> Prometheus metrics, encoded at each scrape.

use std::sync::atomic::Ordering;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::live::Live;

/// The content type of the text [`Metrics::encode`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The labels of one API request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route's pattern, like `/api/v1/stats`; `unmatched` for unknown paths.
    pub route: String,
    pub status: u16,
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
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("exoflow");
        let files = Counter::default();
        let bytes = Counter::default();
        let epoch = Gauge::default();
        let committed_epoch = Gauge::default();
        let ready = Gauge::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("files", "Files read by this run", files.clone());
        registry.register("bytes", "Bytes of files read by this run", bytes.clone());
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
        Metrics {
            registry,
            files,
            bytes,
            epoch,
            committed_epoch,
            ready,
            requests,
        }
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                status,
            })
            .inc();
    }

    /// The metrics as of now, in the OpenMetrics text format.
    pub fn encode(&self, live: &Live) -> String {
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
        let metrics = Metrics::default();
        let live = Live::default();
        live.progress.add(2, 30);
        live.advance(4, 3, true);
        metrics.request("/api/v1/stats", 200);
        let text = metrics.encode(&live);
        for line in [
            "exoflow_files_total 2",
            "exoflow_bytes_total 30",
            "exoflow_epoch 4",
            "exoflow_committed_epoch 3",
            "exoflow_ready 1",
            "exoflow_http_requests_total{route=\"/api/v1/stats\",status=\"200\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
