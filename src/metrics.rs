//! Prometheus metrics: one owned [`Registry`] per running instance, metric
//! names as constants (dashboards and tests read the same constants).
//!
//! Labels are bounded: route names, backend names, outcomes, reasons and
//! failure kinds, never paths, IDs or raw status codes.
//!
//! Must never: register into the global default registry, or take a label
//! value that comes straight from a request.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::exchange::{FailureKind, Outcome, Severity, SkipReason};

mod route;

pub use route::{RouteHandles, RouteMetrics};

pub const REQUESTS_TOTAL: &str = "cutover_requests_total";
pub const UPSTREAM_DURATION_SECONDS: &str = "cutover_upstream_duration_seconds";
pub const DIVERGENCES_TOTAL: &str = "cutover_divergences_total";
pub const MIRROR_QUEUE_DEPTH: &str = "cutover_mirror_queue_depth";
pub const MIRROR_DROPPED_TOTAL: &str = "cutover_mirror_dropped_total";
pub const SHADOW_ERRORS_TOTAL: &str = "cutover_shadow_errors_total";
pub const BUILD_INFO: &str = "cutover_build_info";
pub const STORE_PENDING: &str = "cutover_store_pending";
pub const IDMAP_UNMAPPED_TOTAL: &str = "cutover_idmap_unmapped_total";
pub const MODE: &str = "cutover_mode";
pub const STORE_WRITE_FAILURES_TOTAL: &str = "cutover_store_write_failures_total";
pub const STORE_RECORDS_LOST_TOTAL: &str = "cutover_store_records_lost_total";
pub const STORE_ROWS_LEFT_OUT_TOTAL: &str = "cutover_store_rows_left_out_total";
pub const WRITE_DRIFT_TOTAL: &str = "cutover_write_drift_total";
pub const DRIFT_OPEN: &str = "cutover_drift_open";
pub const IDMAP_ENTRIES: &str = "cutover_idmap_entries";
pub const FALLBACK_TOTAL: &str = "cutover_fallback_total";
pub const SWEEPS_TOTAL: &str = "cutover_sweeps_total";
pub const CONNECTIONS_OPEN: &str = "cutover_connections_open";
pub const CONNECTIONS_CLOSED_TOTAL: &str = "cutover_connections_closed_total";
pub const VERDICT: &str = "cutover_verdict";
pub const BACKEND_INFO: &str = "cutover_backend_info";
pub const SERVED_TOTAL: &str = "cutover_served_total";
pub const SERVED_DURATION_SECONDS: &str = "cutover_served_duration_seconds";
pub const NOTIFY_TOTAL: &str = "cutover_notify_total";

/// Every metric this build exports (a dashboard may name only these).
pub const ALL: [&str; 25] = [
    NOTIFY_TOTAL,
    SERVED_TOTAL,
    SERVED_DURATION_SECONDS,
    VERDICT,
    BACKEND_INFO,
    CONNECTIONS_OPEN,
    CONNECTIONS_CLOSED_TOTAL,
    SWEEPS_TOTAL,
    FALLBACK_TOTAL,
    WRITE_DRIFT_TOTAL,
    DRIFT_OPEN,
    IDMAP_ENTRIES,
    IDMAP_UNMAPPED_TOTAL,
    MODE,
    STORE_PENDING,
    STORE_WRITE_FAILURES_TOTAL,
    STORE_RECORDS_LOST_TOTAL,
    STORE_ROWS_LEFT_OUT_TOTAL,
    REQUESTS_TOTAL,
    UPSTREAM_DURATION_SECONDS,
    DIVERGENCES_TOTAL,
    MIRROR_QUEUE_DEPTH,
    MIRROR_DROPPED_TOTAL,
    SHADOW_ERRORS_TOTAL,
    BUILD_INFO,
];

/// Latency buckets from 1 ms to 30 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0,
];

#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// The metrics of one cutover instance.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests_total: IntCounterVec,
    upstream_duration: HistogramVec,
    served_total: IntCounterVec,
    served_duration: HistogramVec,
    divergences_total: IntCounterVec,
    mirror_queue_depth: IntGauge,
    mirror_dropped_total: IntCounterVec,
    shadow_errors_total: IntCounterVec,
    store: StoreMetrics,
    idmap_unmapped_total: IntCounterVec,
    write_drift_total: IntCounterVec,
    drift_open: IntGauge,
    idmap_entries: IntGaugeVec,
    fallback_total: IntCounterVec,
    sweeps_total: IntCounterVec,
    mode: IntGaugeVec,
    verdict: IntGaugeVec,
    backend_info: IntGaugeVec,
    connections_open: IntGaugeVec,
    connections_closed: IntCounterVec,
    notify_total: IntCounterVec,
}

/// How one `[[notify]]` delivery attempt went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyOutcome {
    Delivered,
    /// Not delivered; tried again after a backoff.
    Retried,
    /// Given up: refused by the receiver, or the attempts were spent.
    Failed,
}

impl NotifyOutcome {
    pub const ALL: [NotifyOutcome; 3] = [NotifyOutcome::Delivered, NotifyOutcome::Retried, NotifyOutcome::Failed];

    pub fn label(self) -> &'static str {
        match self {
            NotifyOutcome::Delivered => "delivered",
            NotifyOutcome::Retried => "retried",
            NotifyOutcome::Failed => "failed",
        }
    }
}

/// Why cutover closed a client connection itself (besides shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionClose {
    /// `listen.max_connections` (or the admin's cap) was reached: refused at once.
    Refused,
    /// No request head began within `listen.header_read_timeout`.
    Silent,
    /// Nothing was sent either way for `listen.idle_timeout`.
    Idle,
}

impl ConnectionClose {
    pub const ALL: [ConnectionClose; 3] = [ConnectionClose::Refused, ConnectionClose::Silent, ConnectionClose::Idle];

    pub fn label(self) -> &'static str {
        match self {
            ConnectionClose::Refused => "refused",
            ConnectionClose::Silent => "silent",
            ConnectionClose::Idle => "idle",
        }
    }
}

impl Metrics {
    /// Every metric, created and registered. (A long function on purpose:
    /// it is the list of metrics with their help texts, one after another,
    /// as the README's metrics reference lists them.)
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let r = &registry;
        let requests_total = counters(
            r,
            REQUESTS_TOTAL,
            "Requests served, by route, method and outcome.",
            &["route", "method", "outcome"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                UPSTREAM_DURATION_SECONDS,
                "Time from sending a request upstream to the last byte of its answer.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["backend", "route"],
        )?;
        registry.register(Box::new(upstream_duration.clone()))?;
        let served_total = counters(
            r,
            SERVED_TOTAL,
            "Mirrored client requests by route, the side that served them (primary, shadow) and outcome: a \
             share on the candidate and the rest, apart.",
            &["route", "served", "outcome"],
        )?;
        let served_duration = HistogramVec::new(
            HistogramOpts::new(
                SERVED_DURATION_SECONDS,
                "Each side's answer time, by route and the side that served the client (primary, shadow).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "served", "side"],
        )?;
        registry.register(Box::new(served_duration.clone()))?;
        let divergences_total = counters(
            r,
            DIVERGENCES_TOTAL,
            "Diverged exchanges, by route and the severity of their most severe difference.",
            &["route", "severity"],
        )?;
        let mirror_queue_depth = gauge(
            r,
            MIRROR_QUEUE_DEPTH,
            "Mirrored exchanges in flight (shadow request, waiting for comparison, or comparing).",
        )?;
        let mirror_dropped_total = counters(
            r,
            MIRROR_DROPPED_TOTAL,
            "Requests not compared, by reason.",
            &["reason"],
        )?;
        for reason in SkipReason::ALL {
            mirror_dropped_total.with_label_values(&[reason.label()]);
        }
        let shadow_errors_total = counters(
            r,
            SHADOW_ERRORS_TOTAL,
            "Shadow failures, by route and kind.",
            &["route", "kind"],
        )?;
        let build_info = gauges(
            r,
            BUILD_INFO,
            "Always 1; the version label names the running build.",
            &["version"],
        )?;
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let store = StoreMetrics::register(r)?;
        let idmap_unmapped_total = counters(
            r,
            IDMAP_UNMAPPED_TOTAL,
            "IDs the primary used that the ID map does not know, by kind.",
            &["kind"],
        )?;
        let mode = gauges(
            r,
            MODE,
            "1 for the global mode in force (shadow, candidate, candidate-fallback, primary-only), 0 for the others.",
            &["mode"],
        )?;
        for each in crate::mode::Mode::ALL {
            mode.with_label_values(&[each.label()])
                .set(i64::from(each == crate::mode::Mode::Shadow));
        }
        let verdict = gauges(
            r,
            VERDICT,
            "1 for the readiness report's verdict (GO, NO-GO, NOT YET) over the last 48h, as this instance last judged it; 0 for the others.",
            &["verdict"],
        )?;
        for each in ["GO", "NO-GO", "NOT YET"] {
            verdict.with_label_values(&[each]).set(0);
        }
        let backend_info = gauges(
            r,
            BACKEND_INFO,
            "1 per backend, labelled with its role (primary, shadow) and its name.",
            &["role", "backend"],
        )?;
        let write_drift_total = counters(
            r,
            WRITE_DRIFT_TOTAL,
            "Mirrored writes that drifted (one side applied it, the other did not), by route.",
            &["route"],
        )?;
        let drift_open = gauge(r, DRIFT_OPEN, "Drifted writes not yet replayed or resolved.")?;
        let fallback_total = counters(
            r,
            FALLBACK_TOTAL,
            "Requests the candidate failed that the primary answered instead (candidate-fallback), by route.",
            &["route"],
        )?;
        let sweeps_total = counters(
            r,
            SWEEPS_TOTAL,
            "Synthetic sweep requests compared, by route and outcome (apart from cutover_requests_total).",
            &["route", "outcome"],
        )?;
        let idmap_entries = gauges(r, IDMAP_ENTRIES, "ID pairs known, by kind.", &["kind"])?;
        let connections_open = gauges(
            r,
            CONNECTIONS_OPEN,
            "Client connections open, by listener (proxy, admin).",
            &["listener"],
        )?;
        let connections_closed = counters(
            r,
            CONNECTIONS_CLOSED_TOTAL,
            "Client connections cutover closed itself, by listener and reason (refused, silent, idle).",
            &["listener", "reason"],
        )?;
        let notify_total = counters(
            r,
            NOTIFY_TOTAL,
            "[[notify]] delivery attempts, by sink and outcome (delivered, retried, failed).",
            &["sink", "outcome"],
        )?;
        for listener in ["proxy", "admin"] {
            connections_open.with_label_values(&[listener]);
            for reason in ConnectionClose::ALL {
                connections_closed.with_label_values(&[listener, reason.label()]);
            }
        }
        Ok(Metrics {
            registry,
            requests_total,
            upstream_duration,
            served_total,
            served_duration,
            divergences_total,
            mirror_queue_depth,
            mirror_dropped_total,
            shadow_errors_total,
            store,
            idmap_unmapped_total,
            write_drift_total,
            drift_open,
            idmap_entries,
            fallback_total,
            sweeps_total,
            mode,
            verdict,
            backend_info,
            connections_open,
            connections_closed,
            notify_total,
        })
    }

    /// The open-connections gauge of one listener (`proxy` or `admin`).
    pub fn connections_open(&self, listener: &str) -> IntGauge {
        self.connections_open.with_label_values(&[listener])
    }

    pub fn record_connection_closed(&self, listener: &str, reason: ConnectionClose) {
        self.connections_closed
            .with_label_values(&[listener, reason.label()])
            .inc();
    }

    /// Counts one request's outcome (and, when skipped, its reason).
    pub fn record_outcome(&self, route: &str, method: &str, outcome: Outcome) {
        self.requests_total
            .with_label_values(&[route, method, outcome.label()])
            .inc();
        self.record_dropped(outcome);
    }

    /// Counts a skipped outcome's reason (`cutover_mirror_dropped_total`).
    fn record_dropped(&self, outcome: Outcome) {
        if let Outcome::Skipped(reason) = outcome {
            self.mirror_dropped_total.with_label_values(&[reason.label()]).inc();
        }
    }

    pub fn record_divergence(&self, route: &str, severity: Severity) {
        self.divergences_total
            .with_label_values(&[route, severity.label()])
            .inc();
    }

    pub fn record_unmapped_id(&self, kind: &str) {
        self.idmap_unmapped_total.with_label_values(&[kind]).inc();
    }

    pub fn record_shadow_error(&self, route: &str, kind: &str) {
        self.shadow_errors_total.with_label_values(&[route, kind]).inc();
    }

    pub fn record_sweep(&self, route: &str, outcome: Outcome) {
        self.sweeps_total.with_label_values(&[route, outcome.label()]).inc();
    }

    pub fn record_notify(&self, sink: &str, outcome: NotifyOutcome) {
        self.notify_total.with_label_values(&[sink, outcome.label()]).inc();
    }

    /// Shows every configured sink's series at 0 before its first attempt,
    /// so an alert on `failed` has a series to compare from the start.
    pub fn init_notify_sinks<'a>(&self, sinks: impl IntoIterator<Item = &'a str>) {
        for sink in sinks {
            for outcome in NotifyOutcome::ALL {
                self.notify_total.with_label_values(&[sink, outcome.label()]);
            }
        }
    }

    pub fn record_fallback(&self, route: &str) {
        self.fallback_total.with_label_values(&[route]).inc();
    }

    /// Sets `cutover_mode`: 1 for the global mode in force, 0 for the others.
    pub fn set_mode(&self, mode: crate::mode::Mode) {
        for each in crate::mode::Mode::ALL {
            self.mode
                .with_label_values(&[each.label()])
                .set(i64::from(each == mode));
        }
    }

    /// Sets `cutover_verdict`: 1 for `label`, 0 for the others.
    pub fn set_verdict(&self, label: &str) {
        for each in ["GO", "NO-GO", "NOT YET"] {
            self.verdict.with_label_values(&[each]).set(i64::from(each == label));
        }
    }

    /// Names the two backends by role (`cutover_backend_info`), so a
    /// dashboard can tell which latency series is the primary's.
    pub fn set_backends(&self, primary: &str, shadow: &str) {
        self.backend_info.with_label_values(&["primary", primary]).set(1);
        self.backend_info.with_label_values(&["shadow", shadow]).set(1);
    }

    /// Counts a drifted write; `cutover_drift_open` is not moved here but
    /// set from the store's ledger, its one source.
    pub fn record_drift(&self, route: &str) {
        self.write_drift_total.with_label_values(&[route]).inc();
    }

    pub fn drift_open(&self) -> &IntGauge {
        &self.drift_open
    }

    /// Sets the ID-map size gauge from the map's counts.
    pub fn set_idmap_entries(&self, counts: &[(String, usize)]) {
        for (kind, count) in counts {
            self.idmap_entries
                .with_label_values(&[kind])
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
    }

    pub fn queue_depth(&self) -> &IntGauge {
        &self.mirror_queue_depth
    }

    pub fn store_pending(&self) -> &IntGauge {
        &self.store.pending
    }

    pub fn store_write_failures(&self) -> &prometheus::IntCounter {
        &self.store.write_failures
    }

    pub fn store_records_lost(&self) -> &prometheus::IntCounter {
        &self.store.records_lost
    }

    /// Exchanges counted in the rollups whose raw row `store.keep_matches` left out.
    pub fn store_rows_left_out(&self) -> &prometheus::IntCounter {
        &self.store.rows_left_out
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format's own metrics.
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "encoding metrics failed");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The failure kinds the shadow-error metric may carry: upstream failures
/// plus `status_5xx` for answers that came back as server errors.
pub fn shadow_error_kind(kind: Option<FailureKind>) -> &'static str {
    kind.map_or("status_5xx", FailureKind::label)
}

/// A labelled counter, registered.
fn counters(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, MetricsError> {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// The store writer's own figures.
#[derive(Clone)]
struct StoreMetrics {
    pending: IntGauge,
    write_failures: prometheus::IntCounter,
    records_lost: prometheus::IntCounter,
    rows_left_out: prometheus::IntCounter,
}

impl StoreMetrics {
    fn register(r: &Registry) -> Result<StoreMetrics, MetricsError> {
        Ok(StoreMetrics {
            pending: gauge(r, STORE_PENDING, "Records waiting to be written to the store.")?,
            write_failures: counter(
                r,
                STORE_WRITE_FAILURES_TOTAL,
                "Failed attempts to write a batch to the store.",
            )?,
            records_lost: counter(
                r,
                STORE_RECORDS_LOST_TOTAL,
                "Records dropped because the store's buffer was full.",
            )?,
            rows_left_out: counter(
                r,
                STORE_ROWS_LEFT_OUT_TOTAL,
                "Plain matches (and sampled_out skips) counted in the rollups whose raw row store.keep_matches left out.",
            )?,
        })
    }
}

/// A labelled gauge, registered.
fn gauges(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec, MetricsError> {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// A gauge, registered.
fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
    let metric = IntGauge::new(name, help)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// A counter, registered.
fn counter(registry: &Registry, name: &str, help: &str) -> Result<prometheus::IntCounter, MetricsError> {
    let metric = prometheus::IntCounter::new(name, help)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_instance_owns_its_registry() {
        let a = Metrics::new().unwrap();
        let b = Metrics::new().unwrap();
        a.record_outcome("r", "GET", Outcome::Match);
        assert!(a
            .encode()
            .contains("cutover_requests_total{method=\"GET\",outcome=\"match\",route=\"r\"} 1"));
        assert!(!b.encode().contains("outcome=\"match\""));
    }

    #[test]
    fn every_exported_name_is_listed() {
        let metrics = Metrics::new().unwrap();
        metrics.record_outcome("r", "GET", Outcome::Skipped(SkipReason::QueueFull));
        let route = RouteHandles::new(metrics.clone(), "p", "s").route("r");
        route.observe_upstream(crate::exchange::Side::Primary, 0.01);
        metrics.record_shadow_error("r", "timeout");
        metrics.record_divergence("r", Severity::High);
        metrics.record_unmapped_id("tasks");
        metrics.record_drift("r");
        metrics.record_fallback("r");
        metrics.record_sweep("r", Outcome::Match);
        route.record_served(crate::exchange::Side::Shadow, Outcome::Match, Some(0.01), None);
        metrics.set_idmap_entries(&[("tasks".to_string(), 3)]);
        metrics.set_backends("legacy", "candidate");
        metrics.set_verdict("NO-GO");
        metrics.init_notify_sinks(["team"]);
        let text = metrics.encode();
        for name in ALL {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing from\n{text}");
        }
        assert!(text.contains("cutover_mirror_dropped_total{reason=\"queue_full\"} 1"));
        assert!(text.contains("cutover_verdict{verdict=\"NO-GO\"} 1"));
        assert!(text.contains("cutover_served_total{outcome=\"match\",route=\"r\",served=\"shadow\"} 1"));
        assert!(
            text.contains("cutover_served_duration_seconds_count{route=\"r\",served=\"shadow\",side=\"primary\"} 1")
        );
        assert!(
            !text.contains("side=\"shadow\"} 1"),
            "a side that did not answer is not observed"
        );
        assert!(text.contains("cutover_verdict{verdict=\"GO\"} 0"));
        assert!(text.contains("cutover_notify_total{outcome=\"failed\",sink=\"team\"} 0"));
    }
}
