//! The gates: each turns a measured figure into pass, fail or "not enough
//! data", and the verdict follows from them. Pure arithmetic, no I/O.
//!
//! Must never: pass a gate on too little evidence (a match rate passes on
//! the lower bound of its 95% interval, not on the observed rate), or fail
//! one on evidence that cannot tell (too few samples are "not enough data").

use serde::Serialize;

use super::evidence::{Evidence, GroupEvidence};
use super::{human, ms, Readiness, RouteReport};

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// A gate's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    NotEnoughData,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::NotEnoughData => "not enough data",
        }
    }
}

/// The report's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    #[serde(rename = "GO")]
    Go,
    #[serde(rename = "NO-GO")]
    NoGo,
    #[serde(rename = "NOT YET")]
    NotYet,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Go => "GO",
            Verdict::NoGo => "NO-GO",
            Verdict::NotYet => "NOT YET",
        }
    }

    /// The exit code of `cutover report --check`.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Go => 0,
            Verdict::NoGo => 1,
            Verdict::NotYet => 2,
        }
    }

    /// Any failure is NO-GO; else anything short of data is NOT YET; GO
    /// needs at least one gate and every gate passing.
    pub fn of(gates: &[Gate]) -> Verdict {
        if gates.iter().any(|gate| gate.status == Status::Fail) {
            Verdict::NoGo
        } else if gates.is_empty() || gates.iter().any(|gate| gate.status == Status::NotEnoughData) {
            Verdict::NotYet
        } else {
            Verdict::Go
        }
    }
}

/// One gate: what was measured against what was required.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gate {
    /// A stable identifier, e.g. `match_rate`.
    pub gate: String,
    /// The route it is about, for per-route gates.
    pub route: Option<String>,
    pub measured: String,
    pub threshold: String,
    pub status: Status,
    /// What to do about it, when it does not pass.
    pub next_step: Option<String>,
}

/// The 95% Wilson score interval of `successes` out of `trials`.
pub fn wilson(successes: u64, trials: u64) -> (f64, f64) {
    if trials == 0 {
        return (0.0, 1.0);
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = Z95 * Z95;
    let denominator = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denominator;
    let margin = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
    ((center - margin).max(0.0), (center + margin).min(1.0))
}

/// How many more matches in a row it takes for the lower bound to reach
/// `target`; `None` when no number can (a target of 1.0).
pub fn matches_needed(matched: u64, compared: u64, target: f64) -> Option<u64> {
    if wilson(matched, compared).0 >= target {
        return Some(0);
    }
    if target >= 1.0 {
        return None;
    }
    let reaches = |more: u64| wilson(matched + more, compared + more).0 >= target;
    let mut high = 1u64;
    while !reaches(high) {
        high = high.checked_mul(2)?;
        if high > 1 << 40 {
            return None;
        }
    }
    let mut low = high / 2;
    while low + 1 < high {
        let middle = low + (high - low) / 2;
        if reaches(middle) {
            high = middle;
        } else {
            low = middle;
        }
    }
    Some(high)
}

/// The match-rate gate of one route.
pub fn match_rate_gate(route: &str, matched: u64, compared: u64, min_compared: u64, target: f64) -> Gate {
    let (low, high) = wilson(matched, compared);
    let measured = if compared == 0 {
        "nothing compared".to_string()
    } else {
        format!(
            "{matched}/{compared} = {} (95% CI {}–{})",
            percent(matched as f64 / compared as f64),
            percent(low),
            percent(high)
        )
    };
    let threshold = format!(
        "≥ {compared_min} compared, lower bound ≥ {}",
        percent(target),
        compared_min = min_compared
    );
    let (status, next_step) = if compared > 0 && high < target {
        (
            Status::Fail,
            Some(format!(
                "route {route}: the match rate is below {} even at the top of its interval; triage its divergence groups",
                percent(target)
            )),
        )
    } else if compared < min_compared {
        (
            Status::NotEnoughData,
            Some(format!(
                "route {route} needs {} more compared requests",
                min_compared - compared
            )),
        )
    } else if low >= target {
        (Status::Pass, None)
    } else {
        let step = match matches_needed(matched, compared, target) {
            Some(more) => format!(
                "route {route} needs {more} more matches in a row for the lower bound to reach {}",
                percent(target)
            ),
            None => format!("route {route}: a lower bound of {} cannot be reached", percent(target)),
        };
        (Status::NotEnoughData, Some(step))
    };
    Gate {
        gate: "match_rate".into(),
        route: Some(route.to_string()),
        measured,
        threshold,
        status,
        next_step,
    }
}

/// A fraction as a percentage with enough digits to tell 99.9% from 100%.
pub fn percent(fraction: f64) -> String {
    let value = fraction * 100.0;
    // Round first, so 99.9999…% reads as 100.0%, not 100.00%.
    if (value * 100.0).round() >= 10_000.0 {
        "100.0%".to_string()
    } else if value >= 99.0 {
        format!("{value:.2}%")
    } else {
        format!("{value:.1}%")
    }
}

/// Every gate over one window's evidence, in the order the report shows them.
pub fn judge(evidence: &Evidence, routes: &[RouteReport], readiness: &Readiness) -> Vec<Gate> {
    let mut out = vec![observation_window(evidence, readiness)];
    out.extend(routes.iter().map(|route| compared_gate(route, readiness)));
    out.push(high_severity_groups(evidence));
    out.push(write_drift(evidence));
    out.push(shadow_error_rate(routes, readiness));
    out.extend(routes.iter().filter_map(|route| shadow_p95(route, readiness)));
    out.push(unmapped_ids(evidence, readiness));
    out
}

/// A route's match rate, or its coverage when nothing was compared.
fn compared_gate(route: &RouteReport, readiness: &Readiness) -> Gate {
    if route.compared == 0 {
        coverage(route)
    } else {
        match_rate_gate(
            &route.route,
            route.matched + route.accepted,
            route.compared,
            readiness.min_compared_per_route,
            readiness.min_match_rate,
        )
    }
}

/// The gates a ramp's step is held by, over the share's own traffic:
/// each route's match rate (its Wilson bound) or coverage, the error rate,
/// and each route's p95.
pub fn share_gates(routes: &[RouteReport], readiness: &Readiness) -> Vec<Gate> {
    let mut out: Vec<Gate> = routes.iter().map(|route| compared_gate(route, readiness)).collect();
    if routes.is_empty() {
        out.push(gate(
            "share_traffic",
            None,
            "no requests served by the candidate yet".into(),
            "requests in the share".into(),
            Status::NotEnoughData,
            Some("wait for clients in the share to send requests".into()),
        ));
    }
    out.push(shadow_error_rate(routes, readiness));
    out.extend(routes.iter().filter_map(|route| shadow_p95(route, readiness)));
    out
}

fn gate(
    name: &str,
    route: Option<&str>,
    measured: String,
    threshold: String,
    status: Status,
    next: Option<String>,
) -> Gate {
    Gate {
        gate: name.to_string(),
        route: route.map(str::to_string),
        measured,
        threshold,
        status,
        next_step: next,
    }
}

/// A gate that passes when `ok`; its next step is there only when it fails.
fn pass_when(name: &str, measured: String, threshold: String, ok: bool, next: impl FnOnce() -> String) -> Gate {
    let status = if ok { Status::Pass } else { Status::Fail };
    gate(name, None, measured, threshold, status, (!ok).then(next))
}

/// The test ran long enough (`readiness.min_duration`).
fn observation_window(evidence: &Evidence, readiness: &Readiness) -> Gate {
    let observed_ms = evidence.observed().map_or(0, |(first, last)| last - first);
    let needed_ms = i64::try_from(readiness.min_duration.as_millis()).unwrap_or(i64::MAX);
    let window_ok = observed_ms >= needed_ms;
    gate(
        "observation_window",
        None,
        human(observed_ms),
        format!("≥ {}", human(needed_ms)),
        if window_ok { Status::Pass } else { Status::NotEnoughData },
        (!window_ok).then(|| {
            if evidence.routes.is_empty() {
                "no traffic recorded in this window: send traffic through cutover (or widen --since)".to_string()
            } else {
                // Rounded up to the second: "0s longer" would read as done.
                let remaining_ms = (needed_ms - observed_ms).saturating_add(999) / 1000 * 1000;
                format!("keep the parallel test running {} longer", human(remaining_ms))
            }
        }),
    )
}

/// A route with traffic of which nothing was compared fails: it says why.
fn coverage(route: &RouteReport) -> Gate {
    let reasons: Vec<String> = route
        .skipped
        .iter()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    let errors = route.primary_errors + route.shadow_errors + route.both_errors;
    gate(
        "coverage",
        Some(&route.route),
        format!(
            "{} requests, none compared ({}{})",
            route.requests,
            if reasons.is_empty() {
                "no skips".to_string()
            } else {
                reasons.join(", ")
            },
            if errors > 0 {
                format!(", {errors} errors")
            } else {
                String::new()
            }
        ),
        "every route with traffic is compared".into(),
        Status::Fail,
        Some(format!(
            "route {}: nothing was compared; see why it was skipped or failed",
            route.route
        )),
    )
}

/// No open high-severity group (accepted and fixed do not count).
fn high_severity_groups(evidence: &Evidence) -> Gate {
    let open_high: Vec<&GroupEvidence> = evidence
        .groups
        .iter()
        .filter(|group| group.severity == "high" && (group.status == "open" || group.status == "bug"))
        .collect();
    pass_when(
        "high_severity_groups",
        format!("{} open", open_high.len()),
        "0 open (accepted and fixed groups do not count)".into(),
        open_high.is_empty(),
        || {
            let keys: Vec<&str> = open_high.iter().take(5).map(|g| g.key.as_str()).collect();
            format!(
                "triage {} open high-severity divergence group(s): {}",
                open_high.len(),
                keys.join(", ")
            )
        },
    )
}

/// No open write drift.
fn write_drift(evidence: &Evidence) -> Gate {
    pass_when(
        "write_drift",
        format!("{} open", evidence.open_drift),
        "0 open".into(),
        evidence.open_drift == 0,
        || {
            format!(
                "replay {} drifted write(s), or resolve by hand those that cannot be replayed",
                evidence.open_drift
            )
        },
    )
}

/// The shadow fails no more often than the primary, give or take
/// `max_shadow_error_rate`, over mirrored requests.
fn shadow_error_rate(routes: &[RouteReport], readiness: &Readiness) -> Gate {
    let mirrored: u64 = routes
        .iter()
        .map(|r| r.compared + r.racy + r.primary_errors + r.shadow_errors + r.both_errors)
        .sum();
    let shadow_failed: u64 = routes.iter().map(|r| r.shadow_errors + r.both_errors).sum();
    let primary_failed: u64 = routes.iter().map(|r| r.primary_errors + r.both_errors).sum();
    let threshold = format!("≤ primary's + {}", percent(readiness.max_shadow_error_rate));
    if mirrored == 0 {
        return gate(
            "shadow_error_rate",
            None,
            "no mirrored requests".into(),
            threshold,
            Status::NotEnoughData,
            None,
        );
    }
    let shadow_rate = shadow_failed as f64 / mirrored as f64;
    let primary_rate = primary_failed as f64 / mirrored as f64;
    let ok = shadow_rate <= primary_rate + readiness.max_shadow_error_rate;
    pass_when(
        "shadow_error_rate",
        format!(
            "shadow {} ({shadow_failed}/{mirrored}), primary {}",
            percent(shadow_rate),
            percent(primary_rate)
        ),
        threshold,
        ok,
        || format!("the shadow failed {shadow_failed} mirrored requests; see shadow_errors by route"),
    )
}

/// A route's shadow p95 is within `shadow_p95_max`, and within the
/// primary's plus `shadow_p95_slack`; none for a route without latencies on
/// both sides.
fn shadow_p95(route: &RouteReport, readiness: &Readiness) -> Option<Gate> {
    let p95_max = readiness.shadow_p95_max.as_secs_f64() * 1000.0;
    let slack = readiness.shadow_p95_slack.as_secs_f64() * 1000.0;
    let (Some(shadow), Some(primary)) = (route.shadow.p95_ms, route.primary.p95_ms) else {
        return None;
    };
    let threshold = format!("≤ {} and ≤ the primary's + {}", ms(p95_max), ms(slack));
    let measured = format!("shadow p95 {}, primary p95 {}", ms(shadow), ms(primary));
    let (status, next) = if route.shadow.samples < readiness.min_compared_per_route {
        (
            Status::NotEnoughData,
            Some(format!(
                "route {} needs {} more latency samples",
                route.route,
                readiness.min_compared_per_route - route.shadow.samples
            )),
        )
    } else if shadow > p95_max || shadow > primary + slack {
        (
            Status::Fail,
            Some(format!(
                "route {}: the shadow's p95 ({}) is above {}",
                route.route,
                ms(shadow),
                if shadow > p95_max {
                    ms(p95_max)
                } else {
                    format!("the primary's ({}) + {}", ms(primary), ms(slack))
                }
            )),
        )
    } else {
        (Status::Pass, None)
    };
    Some(gate(
        "shadow_p95",
        Some(&route.route),
        measured,
        threshold,
        status,
        next,
    ))
}

/// No request late in the window used an ID the ID map does not know.
fn unmapped_ids(evidence: &Evidence, readiness: &Readiness) -> Gate {
    pass_when(
        "unmapped_ids",
        format!(
            "{} in the last {}",
            evidence.unmapped_recent,
            human(i64::try_from(readiness.unmapped_window.as_millis()).unwrap_or(0))
        ),
        "0".into(),
        evidence.unmapped_recent == 0,
        || {
            format!(
                "{} recent requests used IDs the ID map does not know: import the missing pairs (cutover idmap import)",
                evidence.unmapped_recent
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_published_values() {
        // Reference values (Newcombe 1998, method 3): 0/10 → 0–0.2775, 10/10 → 0.7225–1, 15/148 → 0.0624–0.1605.
        let (low, high) = wilson(0, 10);
        assert!(low == 0.0 && (high - 0.2775).abs() < 1e-4, "{low} {high}");
        let (low, high) = wilson(10, 10);
        assert!(
            (low - 0.7225).abs() < 1e-4 && (high - 1.0).abs() < 1e-12,
            "{low} {high}"
        );
        let (low, high) = wilson(15, 148);
        assert!(
            (low - 0.0624).abs() < 1e-4 && (high - 0.1605).abs() < 1e-4,
            "{low} {high}"
        );
        let (low, high) = wilson(30, 30);
        assert!(
            (low - 0.8865).abs() < 1e-3 && (high - 1.0).abs() < 1e-12,
            "{low} {high}"
        );
        assert_eq!(wilson(0, 0), (0.0, 1.0));
    }

    #[test]
    fn thirty_of_thirty_is_not_yet_ninety_nine_percent() {
        let gate = match_rate_gate("all-tasks", 30, 30, 30, 0.99);
        assert_eq!(gate.status, Status::NotEnoughData);
        let needed = matches_needed(30, 30, 0.99).unwrap();
        assert!(wilson(30 + needed, 30 + needed).0 >= 0.99);
        assert!(wilson(30 + needed - 1, 30 + needed - 1).0 < 0.99, "the smallest number");
        assert_eq!(
            needed, 351,
            "381 matches out of 381 give a 99% lower bound: n / (n + z²) ≥ 0.99"
        );
        assert!(gate.next_step.unwrap().contains("needs 351 more matches"));
    }

    #[test]
    fn a_rate_clearly_below_the_target_fails_even_on_few_samples() {
        assert_eq!(match_rate_gate("r", 0, 5, 30, 0.99).status, Status::Fail);
        assert_eq!(match_rate_gate("r", 950, 1000, 30, 0.99).status, Status::Fail);
        assert_eq!(match_rate_gate("r", 10, 10, 30, 0.99).status, Status::NotEnoughData);
        assert_eq!(match_rate_gate("r", 5000, 5000, 30, 0.99).status, Status::Pass);
        assert_eq!(matches_needed(5, 5, 1.0), None);
    }

    #[test]
    fn the_verdict_needs_every_gate_and_at_least_one() {
        let gate = |status| Gate {
            gate: "g".into(),
            route: None,
            measured: String::new(),
            threshold: String::new(),
            status,
            next_step: None,
        };
        assert_eq!(Verdict::of(&[]), Verdict::NotYet);
        assert_eq!(Verdict::of(&[gate(Status::Pass)]), Verdict::Go);
        assert_eq!(
            Verdict::of(&[gate(Status::Pass), gate(Status::NotEnoughData)]),
            Verdict::NotYet
        );
        assert_eq!(
            Verdict::of(&[gate(Status::NotEnoughData), gate(Status::Fail)]),
            Verdict::NoGo
        );
        assert_eq!(
            [Verdict::Go, Verdict::NoGo, Verdict::NotYet].map(Verdict::exit_code),
            [0, 1, 2]
        );
    }
}
