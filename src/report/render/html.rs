//! The report as one self-contained HTML file (inline CSS and SVG; reads
//! offline, prints well).
//!
//! Must never: put unescaped stored text into the page, or load anything
//! from the network.

use std::fmt::Write;

use super::super::gates::Status;
use super::super::{charts, human, ms_opt, Report, RouteReport};
use super::*;

pub fn html(report: &Report) -> String {
    let mut out = String::new();
    html_header(&mut out, report);
    html_blocking(&mut out, report);
    html_gates(&mut out, report);
    html_routes(&mut out, report);
    html_charts(&mut out, report);
    groups::html(&mut out, report);
    html_writes_and_ids(&mut out, report);
    html_events(&mut out, report);
    out.push_str("<footer class=\"dim\">cutover report, schema version 1. Figures come from the divergence store only.</footer></body></html>\n");
    out
}

/// The page head and the verdict, with the window it covers.
fn html_header(out: &mut String, report: &Report) {
    let verdict_class = match report.verdict {
        crate::report::Verdict::Go => "go",
        crate::report::Verdict::NoGo => "nogo",
        crate::report::Verdict::NotYet => "notyet",
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
            let _ = write!(out, "<li>{}</li>", groups::step_html(step, report));
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
            "<tr><td class=\"text\">{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td><td><span class=\"status {}\">{}</span></td></tr>",
            esc(&gate_name(gate)),
            esc(&gate.measured),
            esc(&gate.threshold),
            status_class(gate.status),
            gate.status.label()
        );
    }
}

/// Per-route counts and match rates in a table that fits the column (only
/// the route name wraps), then each route's detail.
fn html_routes(out: &mut String, report: &Report) {
    out.push_str(
        "</tbody></table></section><section><h2>Routes</h2><table class=\"wide\"><thead><tr>\
        <th class=\"grow\">route</th><th>requests</th><th>compared</th><th>matched</th><th>diverged</th>\
        <th>match rate (95% CI)</th><th>p95 primary / shadow</th><th>errors primary / shadow</th></tr></thead><tbody>",
    );
    for route in &report.routes {
        let _ = write!(
            out,
            "<tr><td class=\"grow\"><a href=\"#route-{id}\">{}</a></td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{} / {}</td><td class=\"n\">{} / {}</td></tr>",
            esc(&route.route),
            route.requests,
            route.compared,
            esc(&matched(route)),
            route.diverged,
            esc(&match_rate(route)),
            ms_opt(route.primary.p95_ms),
            ms_opt(route.shadow.p95_ms),
            route.primary_errors + route.both_errors,
            route.shadow_errors + route.both_errors,
            id = anchor(&route.route),
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
    for route in &report.routes {
        let _ = write!(
            out,
            "<details class=\"route\" id=\"route-{}\"><summary>{}: every figure</summary><dl>",
            anchor(&route.route),
            esc(&route.route)
        );
        for (term, value) in route_details(route) {
            let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", esc(term), esc(&value));
        }
        out.push_str("</dl></details>");
    }
}

/// A route name as an element id: anything but letters, digits, `-` and
/// `_` becomes `_` (route names are config text).
fn anchor(route: &str) -> String {
    route
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
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
table{border-collapse:collapse;margin:8px 0;font-size:13px}th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top;white-space:nowrap}\
td.grow,th.grow{white-space:normal;overflow-wrap:anywhere;width:100%}td code{white-space:normal;overflow-wrap:anywhere}\
.route dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:4px 0 12px}.route dt{color:#59636e}.route dd{margin:0;overflow-wrap:anywhere}.route summary{margin:4px 0}\
td.text{white-space:normal;overflow-wrap:anywhere}td.key code{white-space:nowrap;overflow-wrap:normal}@media (max-width:1000px){th,td{white-space:normal}}\
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}table.wide{width:100%}\
.status{padding:0 6px;border-radius:4px;white-space:nowrap}.status.pass{background:#dafbe1}.status.fail{background:#ffebe9}.status.ned{background:#fff8c5}\
.sev.high{color:#cf222e;font-weight:600}.sev.medium{color:#9a6700}\
pre.rule{background:#ddf4ff;padding:8px;font-size:13px;white-space:pre-wrap}pre.diff{background:#f6f8fa;padding:8px;font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere}pre.diff .add{color:#1a7f37}pre.diff .del{color:#cf222e}pre.diff .hunk{color:#8250df}\
.group{margin:20px 0 8px}.group h3{margin:0 0 4px;overflow-wrap:anywhere}li,p{overflow-wrap:anywhere}\
figure{margin:8px 0}figure svg{max-width:100%;height:auto}footer{margin-top:32px}\
@media print{body{margin:0;max-width:none}section{break-inside:avoid}details{display:block}figure{break-inside:avoid}a{color:inherit}}";
