//! The cutover readiness report: from the store alone, the evidence of a
//! time window, judged against the `[readiness]` gates into GO, NO-GO or
//! NOT YET, with what to do next; rendered as HTML (self-contained, with
//! SVG charts), Markdown, or JSON (schema in docs/report-schema.json).
//!
//! Must never: query anything but the store, say GO on too little data, or
//! show a figure without the threshold it was judged against.

mod charts;
pub mod evidence;
mod example;
pub mod gates;
mod render;
mod steps;
mod suggest;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

pub use evidence::Evidence;
pub use gates::{Gate, Status, Verdict};
pub(crate) use render::esc as escape_html;
pub use render::MARKDOWN_LIMIT;
pub use steps::{shell_word, Commands};

use crate::exchange::Side;
use crate::store::{LedgerState, Store, StoreError};
use evidence::{percentile, GroupEvidence, TimeBucket};

/// The JSON schema version of [`Report`] (docs/report-schema.json).
pub const SCHEMA_VERSION: u32 = 1;

/// The window a report covers unless asked otherwise (`--since`, `?since=`).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(48 * 3600);

/// `[readiness]`: what GO requires.
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    /// The observation window must span at least this long.
    pub min_duration: Duration,
    /// Each route with traffic needs this many compared requests.
    pub min_compared_per_route: u64,
    /// Judged on the lower bound of the 95% Wilson interval.
    pub min_match_rate: f64,
    /// The shadow's error rate may exceed the primary's by at most this.
    pub max_shadow_error_rate: f64,
    /// Each route's shadow p95 must be at most this (and not above the
    /// primary's by more than `shadow_p95_slack`).
    pub shadow_p95_max: Duration,
    /// How far the shadow's p95 may exceed the primary's: below it, the
    /// jitter of sub-millisecond answers never fails a route.
    pub shadow_p95_slack: Duration,
    /// Unmapped IDs in this last part of the window fail the report.
    pub unmapped_window: Duration,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            min_duration: Duration::from_secs(24 * 3600),
            min_compared_per_route: 30,
            min_match_rate: 0.99,
            max_shadow_error_rate: 0.001,
            shadow_p95_max: Duration::from_millis(200),
            shadow_p95_slack: Duration::from_millis(5),
            unmapped_window: Duration::from_secs(3600),
        }
    }
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Html,
    Markdown,
    Json,
}

/// The report (this is the JSON, schema version [`SCHEMA_VERSION`]).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub generated_at: String,
    pub window: Window,
    pub verdict: Verdict,
    pub gates: Vec<Gate>,
    pub next_steps: Vec<String>,
    pub routes: Vec<RouteReport>,
    /// Routes whose every request was `mirror_off`: not compared, by design.
    pub not_covered: Vec<String>,
    pub groups: Vec<GroupEvidence>,
    pub writes: Writes,
    pub idmap: IdMapCoverage,
    pub noise: Vec<Noise>,
    pub config_fingerprints: Vec<String>,
    pub timeline: Vec<TimeBucket>,
    pub events: Vec<Event>,
    #[serde(skip)]
    evidence: Evidence,
}

#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub from: String,
    pub to: String,
    /// The first and last request seen in it.
    pub observed_from: Option<String>,
    pub observed_to: Option<String>,
    pub observed_seconds: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteReport {
    pub route: String,
    pub requests: u64,
    /// matched + accepted + diverged.
    pub compared: u64,
    /// match + transient.
    pub matched: u64,
    /// Diverged, but every difference is in an `accepted` group: counted as
    /// matched by the match-rate gate.
    pub accepted: u64,
    /// Diverged with a difference not accepted (open, bug or fixed groups).
    pub diverged: u64,
    pub racy: u64,
    pub transient: u64,
    pub primary_errors: u64,
    pub shadow_errors: u64,
    pub both_errors: u64,
    pub skipped: BTreeMap<String, u64>,
    pub by_source: BTreeMap<String, u64>,
    pub match_rate: Option<f64>,
    pub match_rate_low: f64,
    pub match_rate_high: f64,
    pub primary: Latency,
    pub shadow: Latency,
    /// Primary p50 over shadow p50 (above 1: the shadow is faster).
    pub speedup: Option<f64>,
    pub primary_429: u64,
    pub shadow_429: u64,
    pub primary_cache_hit_share: Option<f64>,
    pub shadow_cache_hit_share: Option<f64>,
    /// The route's client requests by the side that served them, when the
    /// candidate (`shadow`) served some in the window: a share on the
    /// candidate and the rest on the primary, each compared the other way
    /// round. Empty while only the primary served.
    pub served_by: Vec<ServedPart>,
}

/// The client requests of a route one side served, and how they compared.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServedPart {
    /// `primary` or `shadow` (the candidate).
    pub served: String,
    pub requests: u64,
    pub compared: u64,
    /// match + transient + accepted.
    pub matched: u64,
    pub diverged: u64,
    pub match_rate: Option<f64>,
    pub match_rate_low: f64,
    pub primary_errors: u64,
    pub shadow_errors: u64,
    pub both_errors: u64,
    pub primary: Latency,
    pub shadow: Latency,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Writes {
    pub ok: u64,
    pub drift: u64,
    pub reconciled: u64,
    /// Open drift, whenever it happened.
    pub open_drift: u64,
    pub by_route: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IdMapCoverage {
    /// kind → origin (import | learned) → pairs.
    pub kinds: BTreeMap<String, BTreeMap<String, u64>>,
    /// Exchanges with an unmapped ID, per route, in the window.
    pub unmapped_by_route: BTreeMap<String, u64>,
    /// Of those, in the last `unmapped_window`.
    pub unmapped_recent: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Noise {
    pub route: String,
    pub pattern: String,
    pub observations: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at: String,
    pub kind: String,
    pub detail: serde_json::Value,
}

/// The time window a report covers, in Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub from_ms: i64,
    pub to_ms: i64,
}

impl Span {
    /// The last `since` up to `now_ms`.
    pub fn since(since: Duration, now_ms: i64) -> Span {
        let length = i64::try_from(since.as_millis()).unwrap_or(i64::MAX);
        Span {
            from_ms: now_ms.saturating_sub(length),
            to_ms: now_ms.saturating_add(1),
        }
    }
}

impl Report {
    /// Gathers the window's evidence from the store and judges it.
    pub async fn build(store: &Store, span: Span, readiness: &Readiness, now_ms: i64) -> Result<Report, StoreError> {
        let unmapped_from = span
            .to_ms
            .saturating_sub(i64::try_from(readiness.unmapped_window.as_millis()).unwrap_or(i64::MAX));
        let evidence = Evidence::gather(store, span.from_ms, span.to_ms, unmapped_from).await?;
        Ok(Report::judge(evidence, span, readiness, now_ms))
    }

    /// Judges gathered evidence (pure: the tests build evidence by hand too).
    pub fn judge(evidence: Evidence, span: Span, readiness: &Readiness, now_ms: i64) -> Report {
        let mut routes = Vec::new();
        let mut not_covered = Vec::new();
        for (name, counts) in &evidence.routes {
            let mirror_off = counts.skipped.get("mirror_off").copied().unwrap_or(0);
            if mirror_off == counts.requests {
                not_covered.push(name.clone());
                continue;
            }
            routes.push(route_report(name, counts, &evidence));
        }
        routes.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.route.cmp(&b.route)));
        let gates = gates::judge(&evidence, &routes, readiness);
        let verdict = Verdict::of(&gates);
        let observed = evidence.observed();
        let config_fingerprints = config_fingerprints(&evidence);
        let unmapped_by_route = evidence
            .routes
            .iter()
            .filter_map(|(route, counts)| counts.skipped.get("unmapped_id").map(|n| (route.clone(), *n)))
            .collect();
        let groups = annotated(&evidence.groups, &routes);
        let mut report = Report {
            schema_version: SCHEMA_VERSION,
            generated_at: time(now_ms),
            window: Window {
                from: time(span.from_ms),
                to: time(span.to_ms),
                observed_from: observed.map(|(first, _)| time(first)),
                observed_to: observed.map(|(_, last)| time(last)),
                observed_seconds: observed.map_or(0, |(first, last)| u64::try_from((last - first) / 1000).unwrap_or(0)),
            },
            verdict,
            gates,
            next_steps: Vec::new(),
            routes,
            not_covered,
            groups,
            writes: Writes::of(&evidence),
            idmap: IdMapCoverage {
                kinds: evidence.idmap.clone(),
                unmapped_by_route,
                unmapped_recent: evidence.unmapped_recent,
            },
            noise: evidence
                .noise
                .iter()
                .map(|(route, pattern, observations)| Noise {
                    route: route.clone(),
                    pattern: pattern.clone(),
                    observations: *observations,
                })
                .collect(),
            config_fingerprints,
            timeline: evidence.timeline.clone(),
            events: shown_events(&evidence),
            evidence,
        };
        report.next_steps = steps::next_steps(&report, &Commands::default());
        report
    }

    /// The next steps as commands that find the store this way (`-c` the
    /// config the report was made with, or `--store` its URL).
    pub fn with_commands(mut self, commands: &Commands) -> Report {
        self.next_steps = steps::next_steps(&self, commands);
        self
    }

    /// What `report --check` prints: the verdict on one line, then each
    /// gate that did not pass with its figure, threshold and next step.
    pub fn check_lines(&self) -> Vec<String> {
        let open: Vec<&Gate> = self.gates.iter().filter(|gate| gate.status != Status::Pass).collect();
        let failing = open.iter().filter(|gate| gate.status == Status::Fail).count();
        let mut lines = vec![format!(
            "{}: {} of {} gates pass, {failing} fail, {} lack data ({} observed)",
            self.verdict.label(),
            self.gates.len() - open.len(),
            self.gates.len(),
            open.len() - failing,
            human(
                i64::try_from(self.window.observed_seconds)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1000)
            ),
        )];
        for gate in open {
            let route = gate
                .route
                .as_deref()
                .map(|route| format!(" {route}"))
                .unwrap_or_default();
            lines.push(format!(
                "  {}: {}{route}: {} (needs {})",
                gate.status.label(),
                gate.gate,
                gate.measured,
                gate.threshold
            ));
        }
        lines.extend(self.next_steps.iter().map(|step| format!("next: {step}")));
        lines
    }

    /// Why switching to the candidate needs to be forced: the report says
    /// NO-GO, because of these gates. `None` when it does not.
    pub fn against_switching(&self) -> Option<String> {
        if self.verdict != Verdict::NoGo {
            return None;
        }
        let failing: Vec<String> = self
            .gates
            .iter()
            .filter(|gate| gate.status == Status::Fail)
            .map(|gate| match &gate.route {
                Some(route) => format!("{} {route} ({})", gate.gate, gate.measured),
                None => format!("{} ({})", gate.gate, gate.measured),
            })
            .collect();
        Some(format!(
            "the report over the last {} says NO-GO: {}",
            human(i64::try_from(DEFAULT_WINDOW.as_millis()).unwrap_or(i64::MAX)),
            failing.join("; ")
        ))
    }

    /// The report in a format.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => serde_json::to_string_pretty(self).unwrap_or_default() + "\n",
            Format::Markdown => render::markdown(self),
            Format::Html => render::html(self),
        }
    }
}

fn route_report(name: &str, counts: &evidence::RouteCounts, evidence: &Evidence) -> RouteReport {
    let matched = counts.outcome("match") + counts.outcome("transient");
    let accepted = counts.accepted.min(counts.outcome("diverged"));
    let compared = matched + counts.outcome("diverged");
    let (low, high) = gates::wilson(matched + accepted, compared);
    let latency =
        |histograms: &BTreeMap<String, evidence::Histogram>| histograms.get(name).map(Latency::of).unwrap_or_default();
    let primary = latency(&evidence.primary_latency);
    let shadow = latency(&evidence.shadow_latency);
    let share = |hits: u64, known: u64| (known > 0).then(|| hits as f64 / known as f64);
    RouteReport {
        route: name.to_string(),
        requests: counts.requests,
        compared,
        matched,
        accepted,
        diverged: counts.outcome("diverged") - accepted,
        racy: counts.outcome("racy"),
        transient: counts.outcome("transient"),
        primary_errors: counts.outcome("primary_error"),
        shadow_errors: counts.outcome("shadow_error"),
        both_errors: counts.outcome("both_error"),
        skipped: counts.skipped.clone(),
        by_source: counts.sources.clone(),
        match_rate: (compared > 0).then(|| (matched + accepted) as f64 / compared as f64),
        match_rate_low: low,
        match_rate_high: high,
        speedup: match (primary.p50_ms, shadow.p50_ms) {
            (Some(p), Some(s)) if s > 0.0 => Some(p / s),
            _ => None,
        },
        primary,
        shadow,
        primary_429: counts.primary_429,
        shadow_429: counts.shadow_429,
        primary_cache_hit_share: share(counts.primary_cache_hits, counts.primary_cache_known),
        shadow_cache_hit_share: share(counts.shadow_cache_hits, counts.shadow_cache_known),
        served_by: served_parts(name, evidence),
    }
}

impl Latency {
    fn of(histogram: &evidence::Histogram) -> Latency {
        Latency {
            samples: histogram.values().sum(),
            p50_ms: percentile(histogram, 0.50),
            p95_ms: percentile(histogram, 0.95),
            p99_ms: percentile(histogram, 0.99),
        }
    }
}

/// The readiness gates over the traffic the candidate (`shadow`) served on
/// `routes` (every route when empty) in the span: what holds a ramp's step.
pub async fn share_gates(
    store: &Store,
    routes: &[String],
    span: Span,
    readiness: &Readiness,
) -> Result<Vec<Gate>, StoreError> {
    let evidence = Evidence::gather_served(store, span.from_ms, span.to_ms).await?;
    let share = evidence.served_part(Side::Shadow.label(), routes);
    let reports: Vec<RouteReport> = share
        .routes
        .iter()
        .map(|(name, counts)| route_report(name, counts, &share))
        .collect();
    Ok(gates::share_gates(&reports, readiness))
}

/// A route's requests by serving side, once the candidate served some.
fn served_parts(name: &str, evidence: &Evidence) -> Vec<ServedPart> {
    let Some(parts) = evidence.served.get(name) else {
        return Vec::new();
    };
    if parts.get(Side::Shadow.label()).is_none_or(|part| part.requests == 0) {
        return Vec::new();
    }
    let latency = evidence.served_latency.get(name);
    [Side::Primary, Side::Shadow]
        .iter()
        .filter_map(|side| {
            let counts = parts.get(side.label())?;
            let matched = counts.outcome("match") + counts.outcome("transient");
            let accepted = counts.accepted.min(counts.outcome("diverged"));
            let compared = matched + counts.outcome("diverged");
            let (primary, shadow) = latency
                .and_then(|by_side| by_side.get(side.label()))
                .map(|(primary, shadow)| (Latency::of(primary), Latency::of(shadow)))
                .unwrap_or_default();
            Some(ServedPart {
                served: side.label().to_string(),
                requests: counts.requests,
                compared,
                matched: matched + accepted,
                diverged: counts.outcome("diverged") - accepted,
                match_rate: (compared > 0).then(|| (matched + accepted) as f64 / compared as f64),
                match_rate_low: gates::wilson(matched + accepted, compared).0,
                primary_errors: counts.outcome("primary_error"),
                shadow_errors: counts.outcome("shadow_error"),
                both_errors: counts.outcome("both_error"),
                primary,
                shadow,
            })
        })
        .collect()
}

/// The groups, each with the share of its route's compared requests and,
/// once accepted, the rule that makes it a match.
fn annotated(groups: &[GroupEvidence], routes: &[RouteReport]) -> Vec<GroupEvidence> {
    groups
        .iter()
        .map(|group| {
            let compared = routes
                .iter()
                .find(|route| route.route == group.route)
                .map_or(0, |route| route.compared);
            GroupEvidence {
                share: (compared > 0).then(|| (group.count as f64 / compared as f64).min(1.0)),
                suggested_rule: suggest::rule(group),
                ..group.clone()
            }
        })
        .collect()
}

/// A duration in milliseconds, as a person reads it.
pub fn human(millis: i64) -> String {
    let seconds = millis.max(0) / 1000;
    match seconds {
        0..=119 => format!("{seconds}s"),
        120..=7199 => format!("{}m", seconds / 60),
        _ => {
            let hours = seconds / 3600;
            let minutes = (seconds % 3600) / 60;
            if minutes == 0 {
                format!("{hours}h")
            } else {
                format!("{hours}h{minutes:02}m")
            }
        }
    }
}

fn ms_opt(value: Option<f64>) -> String {
    value.map_or("–".into(), ms)
}

fn ms(value: f64) -> String {
    if value >= 1000.0 {
        format!("{:.2} s", value / 1000.0)
    } else {
        format!("{value:.1} ms")
    }
}

fn time(millis: i64) -> String {
    crate::clock::rfc3339(millis)
}

impl Writes {
    /// The write ledger's counts in the window, and the drift still open.
    fn of(evidence: &Evidence) -> Writes {
        Writes {
            ok: evidence.ledger.get(LedgerState::Ok.label()).copied().unwrap_or(0),
            drift: evidence.ledger.get(LedgerState::Drift.label()).copied().unwrap_or(0),
            reconciled: evidence
                .ledger
                .get(LedgerState::Reconciled.label())
                .copied()
                .unwrap_or(0),
            open_drift: evidence.open_drift,
            by_route: evidence.ledger_routes.clone(),
        }
    }
}

/// The configurations the instances in the window started with, in order.
fn config_fingerprints(evidence: &Evidence) -> Vec<String> {
    let mut seen: Vec<String> = evidence
        .events
        .iter()
        .filter(|(_, kind, _)| kind == "start")
        .filter_map(|(_, _, detail)| {
            serde_json::from_str::<serde_json::Value>(detail).ok()?["config"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    seen.dedup();
    seen
}

/// The events the report lists (starts and stops are in the fingerprints).
fn shown_events(evidence: &Evidence) -> Vec<Event> {
    evidence
        .events
        .iter()
        .filter(|(_, kind, _)| kind != "start" && kind != "stop")
        .map(|(at, kind, detail)| Event {
            at: time(*at),
            kind: kind.clone(),
            detail: serde_json::from_str(detail).unwrap_or(serde_json::Value::Null),
        })
        .collect()
}
