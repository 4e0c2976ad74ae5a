//! The report for people: Markdown (for a pull request) and one
//! self-contained HTML file, and what the two share.
//!
//! Must never: put unescaped stored text into HTML, or load anything from
//! the network.

mod groups;
mod html;
mod markdown;

pub use html::html;
pub use markdown::{markdown, MARKDOWN_LIMIT};

use super::gates::{percent, Status};
use super::{ms_opt, Report, RouteReport};

/// Matches, and apart from them those with accepted differences only.
pub(super) fn matched(route: &RouteReport) -> String {
    if route.accepted == 0 {
        route.matched.to_string()
    } else {
        format!("{} + {} accepted", route.matched, route.accepted)
    }
}

pub(super) const NOISE_INTRO: &str =
    "Value changes at these paths were set aside as noise. Confirm each (add it to the \
                           route's ignore) or veto it (not_noise).";

/// A route's detail, term by term (both formats): what the routes table
/// leaves out so it fits.
pub(super) fn route_details(route: &RouteReport) -> Vec<(&'static str, String)> {
    let mut details = vec![
        (
            "requests",
            format!("{} (of which sweeps {})", route.requests, sweeps(route)),
        ),
        (
            "compared",
            format!(
                "{}: matched {}, diverged {}; racy {}, transient {}",
                route.compared,
                matched(route),
                route.diverged,
                route.racy,
                route.transient
            ),
        ),
        ("match rate (95% CI)", match_rate(route)),
        ("skipped", skipped(route)),
        ("primary p50 / p95 / p99", latencies(&route.primary)),
        ("shadow p50 / p95 / p99", latencies(&route.shadow)),
        (
            "speedup (primary p50 / shadow p50)",
            route.speedup.map_or("–".into(), |s| format!("{s:.1}×")),
        ),
        (
            "errors primary / shadow",
            format!(
                "{} / {}",
                route.primary_errors + route.both_errors,
                route.shadow_errors + route.both_errors
            ),
        ),
        (
            "429 primary / shadow",
            format!("{} / {}", route.primary_429, route.shadow_429),
        ),
        ("cache hits primary / shadow", cache(route)),
    ];
    details.extend(route.served_by.iter().map(|part| {
        let term = if part.served == "shadow" {
            "served by the candidate (shadow)"
        } else {
            "served by the primary"
        };
        (term, served_part(part))
    }));
    details
}

/// The requests one side served, as one line: how they compared, errors, p95.
fn served_part(part: &super::ServedPart) -> String {
    let rate = part.match_rate.map_or("–".into(), |rate| {
        format!("{} (at least {})", percent(rate), percent(part.match_rate_low))
    });
    format!(
        "{} requests, {} compared: match rate {rate}, diverged {}; errors primary / shadow {} / {}; \
         p95 primary / shadow {} / {}",
        part.requests,
        part.compared,
        part.diverged,
        part.primary_errors + part.both_errors,
        part.shadow_errors + part.both_errors,
        ms_opt(part.primary.p95_ms),
        ms_opt(part.shadow.p95_ms),
    )
}

/// The write ledger in one sentence (both formats).
pub(super) fn writes_sentence(report: &Report) -> String {
    let writes = &report.writes;
    format!(
        "{} mirrored writes in the window: {} ok, {} drift, {} reconciled. Open drift now: {}.",
        writes.ok + writes.drift + writes.reconciled,
        writes.ok,
        writes.drift,
        writes.reconciled,
        writes.open_drift
    )
}

/// One line per ID kind: how many pairs, by origin.
pub(super) fn idmap_lines(report: &Report) -> Vec<String> {
    report
        .idmap
        .kinds
        .iter()
        .map(|(kind, origins)| {
            let parts: Vec<String> = origins.iter().map(|(origin, n)| format!("{n} {origin}")).collect();
            format!("{kind}: {}", parts.join(", "))
        })
        .collect()
}

pub(super) fn unmapped_sentence(report: &Report) -> String {
    let unmapped: u64 = report.idmap.unmapped_by_route.values().sum();
    format!(
        "Requests with an unmapped ID: {unmapped} in the window, {} recently.",
        report.idmap.unmapped_recent
    )
}

pub(super) fn status_class(status: Status) -> &'static str {
    match status {
        Status::Pass => "pass",
        Status::Fail => "fail",
        Status::NotEnoughData => "ned",
    }
}

pub(super) fn gate_name(gate: &super::Gate) -> String {
    match &gate.route {
        Some(route) => format!("{} ({route})", gate.gate),
        None => gate.gate.clone(),
    }
}

pub(super) fn fingerprints(report: &Report) -> String {
    if report.config_fingerprints.is_empty() {
        String::new()
    } else {
        format!(" Config {}.", report.config_fingerprints.join(", "))
    }
}

/// Synthetic sweep requests among a route's requests, shown apart from traffic.
pub(super) fn sweeps(route: &RouteReport) -> u64 {
    route.by_source.get("sweep").copied().unwrap_or(0)
}

pub(super) fn skipped(route: &RouteReport) -> String {
    if route.skipped.is_empty() {
        return "–".into();
    }
    route
        .skipped
        .iter()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn match_rate(route: &RouteReport) -> String {
    match route.match_rate {
        None => "–".into(),
        Some(rate) => format!(
            "{} ({}–{})",
            percent(rate),
            percent(route.match_rate_low),
            percent(route.match_rate_high)
        ),
    }
}

pub(super) fn latencies(latency: &super::Latency) -> String {
    if latency.samples == 0 {
        return "–".into();
    }
    format!(
        "{} / {} / {}",
        ms_opt(latency.p50_ms),
        ms_opt(latency.p95_ms),
        ms_opt(latency.p99_ms)
    )
}

pub(super) fn cache(route: &RouteReport) -> String {
    let share = |value: Option<f64>| value.map_or("–".into(), percent);
    format!(
        "{} / {}",
        share(route.primary_cache_hit_share),
        share(route.shadow_cache_hit_share)
    )
}

pub(super) fn place(pattern: &str) -> String {
    if pattern.is_empty() {
        "(whole answer)".into()
    } else {
        pattern.to_string()
    }
}

/// A Markdown table cell: pipes and line breaks would end it.
pub(super) fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// HTML-escapes text.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_text_cannot_break_out_of_html_or_a_table() {
        assert_eq!(
            esc("<script>alert('x')</script>&"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;"
        );
        assert_eq!(cell("a|b\nc"), "a\\|b c");
    }
}
