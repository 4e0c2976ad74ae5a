//! Per-route metric handles for the comparison path: every judged exchange
//! counts its outcome, both sides' latencies and the side that served it,
//! and finding each of those series by its label values hashed them and
//! took the vector's lock six times per exchange. A route's handles are
//! found once (one lookup by the route's name) and then used directly.
//!
//! Must never: export a series the label path would not have (a handle is
//! made the first time it is counted in, as `with_label_values` makes it),
//! or hold more handles than there are routes, methods and outcomes.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use prometheus::{Histogram, IntCounter};

use super::Metrics;
use crate::exchange::{Outcome, Side};

/// Routes whose handles are held at most; past it they are made afresh.
/// (A route name comes from the config, so this is a guard only.)
const MAX_ROUTES: usize = 10_000;

/// The handles of every route seen so far, for one pair of upstreams.
pub struct RouteHandles {
    metrics: Metrics,
    primary_name: String,
    shadow_name: String,
    routes: RwLock<HashMap<String, Arc<RouteMetrics>>>,
}

impl RouteHandles {
    /// Handles whose latency series name the two upstreams as given.
    pub fn new(metrics: Metrics, primary_name: &str, shadow_name: &str) -> RouteHandles {
        RouteHandles {
            metrics,
            primary_name: primary_name.to_string(),
            shadow_name: shadow_name.to_string(),
            routes: RwLock::new(HashMap::new()),
        }
    }

    /// The route's handles, made on its first exchange.
    pub fn route(&self, route: &str) -> Arc<RouteMetrics> {
        let found = self
            .routes
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(route)
            .cloned();
        if let Some(found) = found {
            return found;
        }
        let mut routes = self.routes.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if routes.len() >= MAX_ROUTES {
            routes.clear();
        }
        let made = routes
            .entry(route.to_string())
            .or_insert_with(|| Arc::new(self.make(route)));
        Arc::clone(made)
    }

    fn make(&self, route: &str) -> RouteMetrics {
        RouteMetrics {
            metrics: self.metrics.clone(),
            route: route.to_string(),
            backends: [self.primary_name.clone(), self.shadow_name.clone()],
            upstream: Default::default(),
            served_duration: Default::default(),
            requests: LabelCache::default(),
            served: LabelCache::default(),
        }
    }
}

impl std::fmt::Debug for RouteHandles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteHandles").finish_non_exhaustive()
    }
}

/// One route's series, as [`Metrics`] labels them.
pub struct RouteMetrics {
    metrics: Metrics,
    route: String,
    /// The primary's and the shadow's upstream names.
    backends: [String; 2],
    /// `cutover_upstream_duration_seconds` of the primary's and the shadow's upstream.
    upstream: [OnceLock<Histogram>; 2],
    /// `cutover_served_duration_seconds`, by the side that served, then the side measured.
    served_duration: [[OnceLock<Histogram>; 2]; 2],
    /// `cutover_requests_total`, by method and outcome label.
    requests: LabelCache<(&'static str, &'static str)>,
    /// `cutover_served_total`, by the side that served and the outcome label.
    served: LabelCache<(Side, &'static str)>,
}

impl RouteMetrics {
    /// As [`Metrics::record_outcome`], for this route.
    pub fn record_outcome(&self, method: &'static str, outcome: Outcome) {
        let metrics = &self.metrics;
        self.requests
            .get_or_make((method, outcome.label()), || {
                metrics
                    .requests_total
                    .with_label_values(&[&self.route, method, outcome.label()])
            })
            .inc();
        metrics.record_dropped(outcome);
    }

    /// As [`Metrics::observe_upstream`], for the upstream of `side`.
    pub fn observe_upstream(&self, side: Side, seconds: f64) {
        let backend = &self.backends[index(side)];
        self.upstream[index(side)]
            .get_or_init(|| {
                self.metrics
                    .upstream_duration
                    .with_label_values(&[backend, &self.route])
            })
            .observe(seconds);
    }

    /// As [`Metrics::record_served`], for this route.
    pub fn record_served(&self, served: Side, outcome: Outcome, primary: Option<f64>, shadow: Option<f64>) {
        let metrics = &self.metrics;
        self.served
            .get_or_make((served, outcome.label()), || {
                metrics
                    .served_total
                    .with_label_values(&[&self.route, served.label(), outcome.label()])
            })
            .inc();
        let durations = &self.served_duration[index(served)];
        for ((histogram, side), seconds) in durations
            .iter()
            .zip([Side::Primary, Side::Shadow])
            .zip([primary, shadow])
        {
            if let Some(seconds) = seconds {
                histogram
                    .get_or_init(|| {
                        metrics
                            .served_duration
                            .with_label_values(&[&self.route, served.label(), side.label()])
                    })
                    .observe(seconds);
            }
        }
    }
}

fn index(side: Side) -> usize {
    match side {
        Side::Primary => 0,
        Side::Shadow => 1,
    }
}

/// Counters of one route by a few label values, in a list: a route sees a
/// handful of methods and outcomes, and comparing them beats hashing.
struct LabelCache<K> {
    counters: RwLock<Vec<(K, IntCounter)>>,
}

impl<K> Default for LabelCache<K> {
    fn default() -> LabelCache<K> {
        LabelCache {
            counters: RwLock::new(Vec::new()),
        }
    }
}

impl<K: PartialEq + Copy> LabelCache<K> {
    fn get_or_make(&self, key: K, make: impl FnOnce() -> IntCounter) -> IntCounter {
        let found = {
            let counters = self.counters.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            counters
                .iter()
                .find(|(held, _)| *held == key)
                .map(|(_, counter)| counter.clone())
        };
        if let Some(found) = found {
            return found;
        }
        let mut counters = self.counters.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, counter)) = counters.iter().find(|(held, _)| *held == key) {
            return counter.clone();
        }
        let counter = make();
        counters.push((key, counter.clone()));
        counter
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::SkipReason;

    fn series(metrics: &Metrics, line_start: &str) -> Vec<String> {
        metrics
            .encode()
            .lines()
            .filter(|line| line.starts_with(line_start))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_routes_handles_count_each_series_by_its_labels() {
        let metrics = Metrics::new().unwrap();
        let handles = RouteHandles::new(metrics.clone(), "legacy", "candidate");
        for (outcome, served) in [
            (Outcome::Match, Side::Primary),
            (Outcome::Match, Side::Primary),
            (Outcome::Diverged, Side::Shadow),
            (Outcome::Skipped(SkipReason::QueueFull), Side::Primary),
        ] {
            let route = handles.route("GET /t");
            route.record_outcome("GET", outcome);
            route.observe_upstream(Side::Primary, 0.004);
            route.observe_upstream(Side::Shadow, 0.2);
            route.record_served(served, outcome, Some(0.004), Some(0.2));
        }
        let expected = [
            r#"cutover_requests_total{method="GET",outcome="diverged",route="GET /t"} 1"#,
            r#"cutover_requests_total{method="GET",outcome="match",route="GET /t"} 2"#,
            r#"cutover_requests_total{method="GET",outcome="skipped",route="GET /t"} 1"#,
            r#"cutover_mirror_dropped_total{reason="queue_full"} 1"#,
            r#"cutover_served_total{outcome="match",route="GET /t",served="primary"} 2"#,
            r#"cutover_served_total{outcome="diverged",route="GET /t",served="shadow"} 1"#,
            r#"cutover_upstream_duration_seconds_count{backend="legacy",route="GET /t"} 4"#,
            r#"cutover_upstream_duration_seconds_count{backend="candidate",route="GET /t"} 4"#,
            r#"cutover_served_duration_seconds_count{route="GET /t",served="primary",side="shadow"} 3"#,
            r#"cutover_served_duration_seconds_count{route="GET /t",served="shadow",side="primary"} 1"#,
        ];
        let text = metrics.encode();
        for line in expected {
            assert!(text.lines().any(|held| held == line), "{line} missing from\n{text}");
        }
        // 0.2 s falls in the 0.2 bucket (le is inclusive), 0.004 below 0.005.
        assert!(
            text.contains(r#"cutover_upstream_duration_seconds_bucket{backend="legacy",route="GET /t",le="0.005"} 4"#)
        );
    }

    #[test]
    fn a_series_is_made_only_when_it_is_first_counted_in() {
        let metrics = Metrics::new().unwrap();
        let handles = RouteHandles::new(metrics.clone(), "legacy", "candidate");
        let route = handles.route("GET /tasks");
        route.observe_upstream(Side::Primary, 0.004);
        route.record_served(Side::Primary, Outcome::Match, Some(0.004), None);
        assert!(series(&metrics, "cutover_upstream_duration_seconds_count").len() == 1);
        let served = series(&metrics, "cutover_served_duration_seconds_count");
        assert_eq!(
            served,
            [r#"cutover_served_duration_seconds_count{route="GET /tasks",served="primary",side="primary"} 1"#]
        );
    }

    #[test]
    fn a_route_is_found_again_not_made_again() {
        let handles = RouteHandles::new(Metrics::new().unwrap(), "legacy", "candidate");
        let first = handles.route("GET /tasks");
        assert!(Arc::ptr_eq(&first, &handles.route("GET /tasks")));
        assert!(!Arc::ptr_eq(&first, &handles.route("GET /tasks/{id}")));
    }
}
