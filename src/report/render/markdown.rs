//! The report as Markdown, for a pull request: the verdict, what stands in
//! the way with the next steps, the gates, the routes, the groups, writes
//! and the ID map.
//!
//! Must never: exceed [`MARKDOWN_LIMIT`] characters.

use std::fmt::Write;

use super::super::gates::Status;
use super::super::{human, ms_opt, Report};
use super::*;

pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    markdown_header(&mut out, report);
    markdown_gates(&mut out, report);
    markdown_routes(&mut out, report);
    groups::markdown(&mut out, report);
    markdown_writes_and_ids(&mut out, report);
    if !report.events.is_empty() {
        out.push_str("\n## Events\n\n");
        for event in &report.events {
            let _ = writeln!(out, "- {} {} {}", event.at, event.kind, event.detail);
        }
    }
    fit_in_a_comment(out)
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

/// Per-route counts and match rates, then each route's detail.
fn markdown_routes(out: &mut String, report: &Report) {
    out.push_str("\n## Routes\n\n");
    out.push_str(
        "| route | requests | compared | matched | diverged | match rate (95% CI) | p95 primary / shadow | errors primary / shadow |\n\
         |---|---:|---:|---:|---:|---|---|---:|\n",
    );
    for route in &report.routes {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} / {} | {} / {} |",
            cell(&route.route),
            route.requests,
            route.compared,
            matched(route),
            route.diverged,
            match_rate(route),
            ms_opt(route.primary.p95_ms),
            ms_opt(route.shadow.p95_ms),
            route.primary_errors + route.both_errors,
            route.shadow_errors + route.both_errors,
        );
    }
    if !report.not_covered.is_empty() {
        let _ = writeln!(
            out,
            "\nNot covered by design (mirror off): {}.",
            report.not_covered.join(", ")
        );
    }
    for route in &report.routes {
        let details: Vec<String> = route_details(route)
            .into_iter()
            .map(|(term, value)| format!("{term} {value}"))
            .collect();
        let _ = writeln!(out, "\n**{}**: {}.", cell(&route.route), details.join("; "));
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

/// Under [`MARKDOWN_LIMIT`] characters whatever the number of groups: cut
/// at a line, pointing to the HTML report for the rest.
fn fit_in_a_comment(mut out: String) -> String {
    if out.len() <= MARKDOWN_LIMIT {
        return out;
    }
    let mut cut = MARKDOWN_LIMIT - CUT_NOTE.len() - 8;
    while !out.is_char_boundary(cut) {
        cut -= 1;
    }
    let cut = out[..cut].rfind('\n').unwrap_or(0);
    out.truncate(cut);
    // A cut inside a fenced diff or a <details> would swallow the note.
    if out.matches("```").count() % 2 == 1 {
        out.push_str("\n```");
    }
    if out.matches("<details>").count() > out.matches("</details>").count() {
        out.push_str("\n</details>");
    }
    out.push_str(CUT_NOTE);
    out
}

/// A pull-request comment holds 65,536 characters; this leaves room.
pub const MARKDOWN_LIMIT: usize = 60_000;

const CUT_NOTE: &str =
    "\n\n*Cut here to fit a pull-request comment: the HTML report (`--format html`) has the rest.*\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_report_is_cut_at_a_line_with_its_fences_closed() {
        let long: String = std::iter::once("# Cutover readiness\n\n<details>\n\n```diff\n".to_string())
            .chain((0..20_000).map(|n| format!("+ line {n}\n")))
            .collect();
        let cut = fit_in_a_comment(long);
        assert!(cut.len() <= MARKDOWN_LIMIT, "{}", cut.len());
        assert!(cut.ends_with(CUT_NOTE));
        assert_eq!(cut.matches("```").count() % 2, 0, "the fence is closed");
        assert!(cut.contains("</details>"));
        let short = "# Cutover readiness\n".to_string();
        assert_eq!(fit_in_a_comment(short.clone()), short);
    }
}
