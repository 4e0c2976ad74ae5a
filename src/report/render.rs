//! The report for people: Markdown (for a pull request) and one
//! self-contained HTML file (inline CSS and SVG; reads offline, prints well).
//!
//! Must never: put unescaped stored text into HTML, or load anything from
//! the network.

use std::fmt::Write;

use super::gates::{percent, Status};
use super::{charts, human, ms_opt, Report, RouteReport};

/// How many top groups get their example diff shown.
const EXAMPLES: usize = 5;

pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    markdown_header(&mut out, report);
    markdown_gates(&mut out, report);
    markdown_routes(&mut out, report);
    markdown_groups(&mut out, report);
    markdown_writes_and_ids(&mut out, report);
    if !report.events.is_empty() {
        out.push_str("\n## Events\n\n");
        for event in &report.events {
            let _ = writeln!(out, "- {} {} {}", event.at, event.kind, event.detail);
        }
    }
    out
}

/// The verdict and its window, what stands in the way, and the next steps.
fn markdown_header(out: &mut String, report: &Report) {
    let _ = writeln!(out, "# Cutover readiness: **{}**\n", report.verdict.label());
    let _ = writeln!(
        out,
        "Window {} → {}; traffic observed {} ({}). Generated {}.{}\n",
        report.window.from,
        report.window.to,
        report.window.observed_from.as_deref().unwrap_or("never"),
        human(i64::try_from(report.window.observed_seconds).unwrap_or(0) * 1000),
        report.generated_at,
        fingerprints(report)
    );
    let blocking: Vec<_> = report.gates.iter().filter(|g| g.status != Status::Pass).collect();
    if blocking.is_empty() {
        out.push_str("Every gate passes.\n\n");
    } else {
        out.push_str("## What stands in the way\n\n");
        for gate in &blocking {
            let _ = writeln!(
                out,
                "- **{}** {}: {} (needs {})",
                gate.status.label(),
                gate_name(gate),
                gate.measured,
                gate.threshold
            );
        }
        out.push('\n');
    }
    if !report.next_steps.is_empty() {
        out.push_str("## Next steps\n\n");
        for step in &report.next_steps {
            let _ = writeln!(out, "1. {step}");
        }
        out.push('\n');
    }
}

/// Every gate, measured against its threshold.
fn markdown_gates(out: &mut String, report: &Report) {
    out.push_str("## Gates\n\n| gate | measured | threshold | result |\n|---|---|---|---|\n");
    for gate in &report.gates {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            cell(&gate_name(gate)),
            cell(&gate.measured),
            cell(&gate.threshold),
            gate.status.label()
        );
    }
}

/// Matches, and apart from them those with accepted differences only.
fn matched(route: &RouteReport) -> String {
    if route.accepted == 0 {
        route.matched.to_string()
    } else {
        format!("{} + {} accepted", route.matched, route.accepted)
    }
}

/// Per-route counts, match rates and latencies.
fn markdown_routes(out: &mut String, report: &Report) {
    out.push_str("\n## Routes\n\n");
    out.push_str(
        "| route | requests | of which sweeps | compared | matched | diverged | racy / transient | skipped | match rate (95% CI) | primary p50/p95/p99 | shadow p50/p95/p99 | speedup | errors primary / shadow | 429 primary / shadow | cache hits primary / shadow |\n\
         |---|---:|---:|---:|---:|---:|---:|---|---|---|---|---:|---|---|---|\n",
    );
    for route in &report.routes {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} |",
            cell(&route.route),
            route.requests,
            sweeps(route),
            route.compared,
            matched(route),
            route.diverged,
            route.racy,
            route.transient,
            cell(&skipped(route)),
            match_rate(route),
            latencies(&route.primary),
            latencies(&route.shadow),
            route.speedup.map_or("–".into(), |s| format!("{s:.1}×")),
            route.primary_errors + route.both_errors,
            route.shadow_errors + route.both_errors,
            route.primary_429,
            route.shadow_429,
            cache(route),
        );
    }
    if !report.not_covered.is_empty() {
        let _ = writeln!(
            out,
            "\nNot covered by design (mirror off): {}.",
            report.not_covered.join(", ")
        );
    }
}

/// The top divergence groups, then an example diff of the first few.
fn markdown_groups(out: &mut String, report: &Report) {
    out.push_str("\n## Top divergence groups\n\n");
    if report.groups.is_empty() {
        out.push_str("None in this window.\n");
    } else {
        out.push_str("| severity | route | where | kind | count | first seen | last seen | triage |\n|---|---|---|---|---:|---|---|---|\n");
        for group in report.groups.iter().take(super::evidence::TOP_GROUPS) {
            let _ = writeln!(
                out,
                "| {} | {} | `{}` | {} | {} | {} | {} | {}{} |",
                group.severity,
                cell(&group.route),
                cell(&place(&group.pattern)),
                group.kind,
                group.count,
                super::time(group.first_seen_ms),
                super::time(group.last_seen_ms),
                group.status,
                group
                    .note
                    .as_deref()
                    .map(|n| format!(": {}", cell(n)))
                    .unwrap_or_default()
            );
        }
        for group in report.groups.iter().take(EXAMPLES) {
            if let Some(example) = &group.example {
                let _ = writeln!(
                    out,
                    "\n<details><summary>{} {} — {} (group {})</summary>\n\n```diff\n{}\n```\n</details>",
                    group.route,
                    place(&group.pattern),
                    group.kind,
                    group.key,
                    example.trim_end().replace("```", "ʼʼʼ")
                );
            }
        }
    }
}

/// Writes, the ID map, and learned noise awaiting confirmation.
fn markdown_writes_and_ids(out: &mut String, report: &Report) {
    let _ = writeln!(out, "\n## Writes\n\n{}", writes_sentence(report));
    out.push_str("\n## ID map\n\n");
    if report.idmap.kinds.is_empty() {
        out.push_str("No ID pairs.\n");
    }
    for line in idmap_lines(report) {
        let _ = writeln!(out, "- {line}");
    }
    let _ = writeln!(out, "\n{}", unmapped_sentence(report));
    out.push_str("\n## Learned noise awaiting confirmation\n\n");
    if report.noise.is_empty() {
        out.push_str("None.\n");
    } else {
        let _ = writeln!(out, "{NOISE_INTRO}\n");
        for noise in &report.noise {
            let _ = writeln!(
                out,
                "- {} `{}` ({} observations)",
                noise.route, noise.pattern, noise.observations
            );
        }
    }
}

pub fn html(report: &Report) -> String {
    let mut out = String::new();
    html_header(&mut out, report);
    html_blocking(&mut out, report);
    html_gates(&mut out, report);
    html_routes(&mut out, report);
    html_charts(&mut out, report);
    html_groups(&mut out, report);
    html_writes_and_ids(&mut out, report);
    html_events(&mut out, report);
    out.push_str("<footer class=\"dim\">cutover report, schema version 1. Figures come from the divergence store only.</footer></body></html>\n");
    out
}

/// The page head and the verdict, with the window it covers.
fn html_header(out: &mut String, report: &Report) {
    let verdict_class = match report.verdict {
        super::Verdict::Go => "go",
        super::Verdict::NoGo => "nogo",
        super::Verdict::NotYet => "notyet",
    };
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Cutover readiness: {verdict}</title><style>{CSS}</style></head><body>\
         <header><h1>Cutover readiness <span class=\"verdict {verdict_class}\">{verdict}</span></h1>\
         <p class=\"meta\">Window {from} → {to}; traffic observed {observed}. Generated {generated}.{fingerprints}</p></header>",
        verdict = report.verdict.label(),
        from = esc(&report.window.from),
        to = esc(&report.window.to),
        observed = human(i64::try_from(report.window.observed_seconds).unwrap_or(0) * 1000),
        generated = esc(&report.generated_at),
        fingerprints = esc(&fingerprints(report)),
    );
}

/// What stands in the way: the gates that do not pass, then the next steps.
fn html_blocking(out: &mut String, report: &Report) {
    let blocking: Vec<_> = report.gates.iter().filter(|g| g.status != Status::Pass).collect();
    out.push_str("<section><h2>What stands in the way</h2>");
    if blocking.is_empty() {
        out.push_str("<p>Every gate passes.</p>");
    } else {
        out.push_str("<ul>");
        for gate in blocking {
            let _ = write!(
                out,
                "<li><span class=\"status {}\">{}</span> {}: {} <span class=\"dim\">(needs {})</span></li>",
                status_class(gate.status),
                gate.status.label(),
                esc(&gate_name(gate)),
                esc(&gate.measured),
                esc(&gate.threshold)
            );
        }
        out.push_str("</ul>");
    }
    if !report.next_steps.is_empty() {
        out.push_str("<h3>Next steps</h3><ol>");
        for step in &report.next_steps {
            let _ = write!(out, "<li>{}</li>", esc(step));
        }
        out.push_str("</ol>");
    }
}

/// Every gate, measured against its threshold.
fn html_gates(out: &mut String, report: &Report) {
    out.push_str("</section><section><h2>Gates</h2><table><thead><tr><th>gate</th><th>measured</th><th>threshold</th><th>result</th></tr></thead><tbody>");
    for gate in &report.gates {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><span class=\"status {}\">{}</span></td></tr>",
            esc(&gate_name(gate)),
            esc(&gate.measured),
            esc(&gate.threshold),
            status_class(gate.status),
            gate.status.label()
        );
    }
}

/// Per-route counts, match rates and latencies.
fn html_routes(out: &mut String, report: &Report) {
    out.push_str(
        "</tbody></table></section><section><h2>Routes</h2><table class=\"wide\"><thead><tr>\
        <th>route</th><th>requests</th><th>of which sweeps</th><th>compared</th><th>matched</th><th>diverged</th><th>racy / transient</th>\
        <th>skipped</th><th>match rate (95% CI)</th><th>primary p50/p95/p99</th><th>shadow p50/p95/p99</th>\
        <th>speedup</th><th>errors primary / shadow</th><th>429 primary / shadow</th><th>cache hits primary / shadow</th></tr></thead><tbody>",
    );
    for route in &report.routes {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{} / {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
             <td>{} / {}</td><td>{} / {}</td><td>{}</td></tr>",
            esc(&route.route),
            route.requests,
            sweeps(route),
            route.compared,
            matched(route),
            route.diverged,
            route.racy,
            route.transient,
            esc(&skipped(route)),
            esc(&match_rate(route)),
            esc(&latencies(&route.primary)),
            esc(&latencies(&route.shadow)),
            route.speedup.map_or("–".into(), |s| format!("{s:.1}×")),
            route.primary_errors + route.both_errors,
            route.shadow_errors + route.both_errors,
            route.primary_429,
            route.shadow_429,
            esc(&cache(route)),
        );
    }
    out.push_str("</tbody></table>");
    if !report.not_covered.is_empty() {
        let _ = write!(
            out,
            "<p class=\"dim\">Not covered by design (mirror off): {}.</p>",
            esc(&report.not_covered.join(", "))
        );
    }
}

/// Latency charts of the busiest routes, the divergence rate and the request volume.
fn html_charts(out: &mut String, report: &Report) {
    out.push_str("</section><section class=\"charts\"><h2>Charts</h2>");
    let mut busiest: Vec<&RouteReport> = report.routes.iter().filter(|r| r.shadow.samples > 0).collect();
    busiest.sort_by_key(|route| std::cmp::Reverse(route.shadow.samples));
    for route in busiest.into_iter().take(3) {
        let empty = Default::default();
        let primary = report.evidence.primary_latency.get(&route.route).unwrap_or(&empty);
        let shadow = report.evidence.shadow_latency.get(&route.route).unwrap_or(&empty);
        if let Some(svg) = charts::latency(&route.route, primary, shadow) {
            let _ = write!(out, "<figure>{svg}</figure>");
        }
    }
    for svg in [charts::divergence_rate(report), charts::requests(report)]
        .into_iter()
        .flatten()
    {
        let _ = write!(out, "<figure>{svg}</figure>");
    }
}

/// The top divergence groups, then an example diff of the first few.
fn html_groups(out: &mut String, report: &Report) {
    out.push_str("</section><section><h2>Top divergence groups</h2>");
    if report.groups.is_empty() {
        out.push_str("<p>None in this window.</p>");
    } else {
        out.push_str("<table class=\"wide\"><thead><tr><th>severity</th><th>route</th><th>where</th><th>kind</th><th>count</th><th>first seen</th><th>last seen</th><th>triage</th></tr></thead><tbody>");
        for group in report.groups.iter().take(super::evidence::TOP_GROUPS) {
            let _ = write!(
                out,
                "<tr><td><span class=\"sev {sev}\">{sev}</span></td><td>{}</td><td><code>{}</code></td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}{}</td></tr>",
                esc(&group.route),
                esc(&place(&group.pattern)),
                esc(&group.kind),
                group.count,
                super::time(group.first_seen_ms),
                super::time(group.last_seen_ms),
                esc(&group.status),
                group.note.as_deref().map(|n| format!(": {}", esc(n))).unwrap_or_default(),
                sev = esc(&group.severity),
            );
        }
        out.push_str("</tbody></table>");
        for group in report.groups.iter().take(EXAMPLES) {
            if let Some(example) = &group.example {
                let _ = write!(
                    out,
                    "<details open><summary>{} <code>{}</code> — {} <span class=\"dim\">group {}</span></summary><pre class=\"diff\">",
                    esc(&group.route),
                    esc(&place(&group.pattern)),
                    esc(&group.kind),
                    esc(&group.key)
                );
                for line in example.lines() {
                    let class = match line.chars().next() {
                        Some('+') if !line.starts_with("+++") => "add",
                        Some('-') if !line.starts_with("---") => "del",
                        Some('@') => "hunk",
                        _ => "",
                    };
                    let _ = writeln!(out, "<span class=\"{class}\">{}</span>", esc(line));
                }
                out.push_str("</pre></details>");
            }
        }
    }
}

/// Writes, the ID map, and learned noise awaiting confirmation.
fn html_writes_and_ids(out: &mut String, report: &Report) {
    let _ = write!(
        out,
        "</section><section><h2>Writes</h2><p>{}</p></section><section><h2>ID map</h2>",
        esc(&writes_sentence(report))
    );
    if report.idmap.kinds.is_empty() {
        out.push_str("<p>No ID pairs.</p>");
    } else {
        out.push_str("<ul>");
        for line in idmap_lines(report) {
            let _ = write!(out, "<li>{}</li>", esc(&line));
        }
        out.push_str("</ul>");
    }
    let _ = write!(
        out,
        "<p>{}</p></section><section><h2>Learned noise awaiting confirmation</h2>",
        esc(&unmapped_sentence(report))
    );
    if report.noise.is_empty() {
        out.push_str("<p>None.</p>");
    } else {
        let _ = write!(out, "<p>{}</p><ul>", esc(NOISE_INTRO));
        for noise in &report.noise {
            let _ = write!(
                out,
                "<li>{} <code>{}</code> ({} observations)</li>",
                esc(&noise.route),
                esc(&noise.pattern),
                noise.observations
            );
        }
        out.push_str("</ul>");
    }
}

/// Switches, reloads and other events in the window.
fn html_events(out: &mut String, report: &Report) {
    out.push_str("</section>");
    if !report.events.is_empty() {
        out.push_str("<section><h2>Events</h2><ul>");
        for event in &report.events {
            let _ = write!(
                out,
                "<li>{} {} <code>{}</code></li>",
                esc(&event.at),
                esc(&event.kind),
                esc(&event.detail.to_string())
            );
        }
        out.push_str("</ul></section>");
    }
}

const CSS: &str = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1f2328;max-width:1200px;margin:24px auto;padding:0 16px}\
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}h3{font-size:15px}\
.meta,.dim{color:#59636e}.verdict{padding:2px 10px;border-radius:6px;color:#fff}.go{background:#1a7f37}.nogo{background:#cf222e}.notyet{background:#9a6700}\
table{border-collapse:collapse;margin:8px 0;font-size:13px}th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}table.wide{width:100%}\
.status{padding:0 6px;border-radius:4px;white-space:nowrap}.status.pass{background:#dafbe1}.status.fail{background:#ffebe9}.status.ned{background:#fff8c5}\
.sev.high{color:#cf222e;font-weight:600}.sev.medium{color:#9a6700}\
pre.diff{background:#f6f8fa;padding:8px;overflow-x:auto;font-size:12px}pre.diff .add{color:#1a7f37}pre.diff .del{color:#cf222e}pre.diff .hunk{color:#8250df}\
figure{margin:8px 0}figure svg{max-width:100%;height:auto}footer{margin-top:32px}\
@media print{body{margin:0;max-width:none}section{break-inside:avoid}details{display:block}figure{break-inside:avoid}a{color:inherit}}";

const NOISE_INTRO: &str = "Value changes at these paths were set aside as noise. Confirm each (add it to the \
                           route's ignore) or veto it (not_noise).";

/// The write ledger in one sentence (both formats).
fn writes_sentence(report: &Report) -> String {
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
fn idmap_lines(report: &Report) -> Vec<String> {
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

fn unmapped_sentence(report: &Report) -> String {
    let unmapped: u64 = report.idmap.unmapped_by_route.values().sum();
    format!(
        "Requests with an unmapped ID: {unmapped} in the window, {} recently.",
        report.idmap.unmapped_recent
    )
}

fn status_class(status: Status) -> &'static str {
    match status {
        Status::Pass => "pass",
        Status::Fail => "fail",
        Status::NotEnoughData => "ned",
    }
}

fn gate_name(gate: &super::Gate) -> String {
    match &gate.route {
        Some(route) => format!("{} ({route})", gate.gate),
        None => gate.gate.clone(),
    }
}

fn fingerprints(report: &Report) -> String {
    if report.config_fingerprints.is_empty() {
        String::new()
    } else {
        format!(" Config {}.", report.config_fingerprints.join(", "))
    }
}

/// Synthetic sweep requests among a route's requests, shown apart from traffic.
fn sweeps(route: &RouteReport) -> u64 {
    route.by_source.get("sweep").copied().unwrap_or(0)
}

fn skipped(route: &RouteReport) -> String {
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

fn match_rate(route: &RouteReport) -> String {
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

fn latencies(latency: &super::Latency) -> String {
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

fn cache(route: &RouteReport) -> String {
    let share = |value: Option<f64>| value.map_or("–".into(), percent);
    format!(
        "{} / {}",
        share(route.primary_cache_hit_share),
        share(route.shadow_cache_hit_share)
    )
}

fn place(pattern: &str) -> String {
    if pattern.is_empty() {
        "(whole answer)".into()
    } else {
        pattern.to_string()
    }
}

/// A Markdown table cell: pipes and line breaks would end it.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// HTML-escapes text.
fn esc(text: &str) -> String {
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
