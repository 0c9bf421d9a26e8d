//! Prometheus metrics: what operators scrape from the admin listener's
//! `/metrics`. One registry per server; [`Metrics`] is a cheap-to-clone
//! handle that the transports, the store (through [`StoreObserver`]) and
//! the admin listener share.
//!
//! The crate is tikv's `prometheus`: mature, text exposition built in, and
//! its `process` feature gives the standard `process_*` metrics (resident
//! memory, open file descriptors, CPU seconds) that `metrics` would need
//! another crate for. Names follow Prometheus conventions: `settingsd_`
//! prefix, `_total` counters, `_seconds` and base units.

use std::{sync::Arc, time::Duration};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::{resource::Resource, store::StoreObserver};

/// Every metric settingsd exports. Cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

struct Inner {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    in_flight: IntGauge,
    shed: IntCounter,
    connections: IntGaugeVec,
    stored: IntGaugeVec,
    commits: IntCounter,
    commit_failures: IntCounter,
    commit_seconds: Histogram,
    commit_batch: Histogram,
    writes_stopped: IntGauge,
    watchers: IntGauge,
    watch_events: IntCounter,
    injected: IntCounterVec,
}

/// Request latencies: 100 µs to 10 s (the request timeout).
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Writes per commit: 1 (a lone writer) to hundreds (a burst).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

impl Metrics {
    /// A fresh registry with every metric, and the process collector.
    ///
    /// # Panics
    /// Never in practice: the metric definitions are constant and valid.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let requests = IntCounterVec::new(
            Opts::new(
                "settingsd_requests_total",
                "Requests answered, by transport, method or route, and status code",
            ),
            &["transport", "method", "code"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("unique metric");
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "settingsd_request_duration_seconds",
                "Time to answer a request, by transport and method or route",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["transport", "method"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(request_seconds.clone()))
            .expect("unique metric");
        let connections = IntGaugeVec::new(
            Opts::new(
                "settingsd_connections_open",
                "Open connections, by listener",
            ),
            &["listener"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(connections.clone()))
            .expect("unique metric");
        let stored = IntGaugeVec::new(
            Opts::new(
                "settingsd_stored_resources",
                "Settings resources stored, by resource (accounts that never set one are not counted)",
            ),
            &["resource"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(stored.clone()))
            .expect("unique metric");
        let injected = IntCounterVec::new(
            Opts::new(
                "settingsd_faults_injected_total",
                "Requests failed on purpose by an operator's fault rule, by status code",
            ),
            &["code"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(injected.clone()))
            .expect("unique metric");
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        Metrics(Arc::new(Inner {
            requests,
            request_seconds,
            in_flight: gauge(
                "settingsd_requests_in_flight",
                "Requests being handled now (gRPC and the HTTP bridge together)",
            ),
            shed: counter(
                "settingsd_requests_shed_total",
                "Requests refused at once because the in-flight limit was reached",
            ),
            connections,
            stored,
            commits: counter(
                "settingsd_commits_total",
                "Commits (sled flush + fdatasync) that succeeded",
            ),
            commit_failures: counter(
                "settingsd_commit_failures_total",
                "Commits that failed (writes stop until the store recovers)",
            ),
            commit_seconds: histogram(
                "settingsd_commit_duration_seconds",
                "Time of one commit, flush and fdatasync included",
                LATENCY_BUCKETS,
            ),
            commit_batch: histogram(
                "settingsd_commit_batch_writes",
                "Writes one commit made durable (group commit)",
                BATCH_BUCKETS,
            ),
            writes_stopped: gauge(
                "settingsd_store_writes_stopped",
                "1 while a failed commit keeps the store from taking writes",
            ),
            watchers: gauge("settingsd_watchers_open", "Watch streams open"),
            watch_events: counter(
                "settingsd_watch_events_sent_total",
                "Watch messages sent (changes and progress)",
            ),
            injected,
            registry,
        }))
    }

    /// Counts one answered request and its latency.
    pub fn request(&self, transport: &str, method: &str, code: &str, took: Duration) {
        self.0
            .requests
            .with_label_values(&[transport, method, code])
            .inc();
        self.0
            .request_seconds
            .with_label_values(&[transport, method])
            .observe(took.as_secs_f64());
    }

    pub fn shed(&self) {
        self.0.shed.inc();
    }

    /// The gauge of `listener`'s open connections.
    pub fn connections(&self, listener: &str) -> IntGauge {
        self.0.connections.with_label_values(&[listener])
    }

    pub fn set_in_flight(&self, n: usize) {
        self.0.in_flight.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets the stored-resources gauge of `resource`.
    pub fn set_stored(&self, resource: Resource, count: u64) {
        self.0
            .stored
            .with_label_values(&[resource.name()])
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn set_writes_stopped(&self, stopped: bool) {
        self.0.writes_stopped.set(i64::from(stopped));
    }

    /// A watch stream opened; the returned guard counts it closed when
    /// dropped.
    pub fn watcher(&self) -> WatcherGuard {
        self.0.watchers.inc();
        WatcherGuard(self.clone())
    }

    /// A request failed by a fault rule.
    pub fn injected(&self, code: &str) {
        self.0.injected.with_label_values(&[code]).inc();
    }

    pub fn watch_event(&self) {
        self.0.watch_events.inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.0.registry.gather(), &mut out)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Counts a watch stream open while it lives.
pub struct WatcherGuard(Metrics);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0 .0.watchers.dec();
    }
}

impl StoreObserver for Metrics {
    fn committed(&self, took: Duration) {
        self.0.commits.inc();
        self.0.commit_seconds.observe(took.as_secs_f64());
    }

    fn commit_failed(&self) {
        self.0.commit_failures.inc();
    }

    fn published(&self, writes: usize) {
        #[allow(clippy::cast_precision_loss)]
        self.0.commit_batch.observe(writes as f64);
    }
}
