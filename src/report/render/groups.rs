//! The divergence groups in both formats: a table of the top groups, then
//! a section per group with its differences field by field (path, item,
//! primary → shadow; the statuses for a status difference), the share of
//! its route's compared requests it affected, and one trimmed sample,
//! collapsed.
//!
//! Must never: show a whole body (the store and the admin API keep those),
//! or put unescaped stored text into HTML.

use std::fmt::Write;

use super::super::evidence::{GroupEvidence, ShownDifference, TOP_GROUPS};
use super::super::gates::percent;
use super::super::{time, Report};
use super::{cell, esc, place};

/// The Markdown groups: the table, then each group's differences.
pub(super) fn markdown(out: &mut String, report: &Report) {
    out.push_str("\n## Top divergence groups\n\n");
    if report.groups.is_empty() {
        out.push_str("None in this window.\n");
        return;
    }
    out.push_str("| severity | group | route | where | kind | count | triage |\n|---|---|---|---|---|---:|---|\n");
    for group in report.groups.iter().take(TOP_GROUPS) {
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | `{}` | {} | {}{} | {}{} |",
            group.severity,
            group.key,
            cell(&group.route),
            cell(&group_place(group)),
            group.kind,
            group.count,
            share(group),
            group.status,
            group
                .note
                .as_deref()
                .map(|n| format!(": {}", cell(n)))
                .unwrap_or_default()
        );
    }
    for group in report.groups.iter().take(TOP_GROUPS) {
        let _ = writeln!(
            out,
            "\n### {} {}: {} at `{}` (group `{}`)\n\n{}\n",
            group.severity,
            group.route,
            group.kind,
            group_place(group),
            group.key,
            seen(group)
        );
        for difference in &group.differences {
            let (place, primary, shadow) = difference_cells(group, difference);
            let _ = writeln!(out, "- {place}: `{}` → `{}`", code(&primary), code(&shadow));
        }
        if !group.trace_ids.is_empty() {
            let traces: Vec<String> = group.trace_ids.iter().map(|id| format!("`{}`", code(id))).collect();
            let _ = writeln!(out, "\nIn the backends' traces: {}", traces.join(", "));
        }
        if let Some(rule) = &group.suggested_rule {
            let _ = writeln!(
                out,
                "\nAccepted. To compare it as a match from now on, add to route {}'s `[route.compare]`:\n\n```toml\n{rule}\n```",
                group.route
            );
        }
        if let Some(example) = &group.example {
            let _ = writeln!(
                out,
                "\n<details><summary>one sample, trimmed (the whole bodies: GET /api/divergences/{})</summary>\n\n```diff\n{}\n```\n</details>",
                group.key,
                example.trim_end().replace("```", "ʼʼʼ")
            );
        }
    }
    if report.groups.len() > TOP_GROUPS {
        let _ = writeln!(
            out,
            "\n{} more groups: `cutover report --format html` or GET /api/divergences lists them all.",
            report.groups.len() - TOP_GROUPS
        );
    }
}

/// The HTML groups: the table (keys link to the sections), then a section
/// per group.
pub(super) fn html(out: &mut String, report: &Report) {
    out.push_str("</section><section><h2>Top divergence groups</h2>");
    if report.groups.is_empty() {
        out.push_str("<p>None in this window.</p>");
        return;
    }
    out.push_str("<table class=\"wide\"><thead><tr><th>severity</th><th>group</th><th>route</th><th class=\"grow\">where</th><th>kind</th><th>count</th><th>triage</th></tr></thead><tbody>");
    for group in report.groups.iter().take(TOP_GROUPS) {
        let _ = write!(
            out,
            "<tr><td><span class=\"sev {sev}\">{sev}</span></td><td class=\"key\"><a href=\"#group-{key}\"><code>{key}</code></a></td><td>{}</td>\
             <td class=\"grow\"><code>{}</code></td><td>{}</td><td class=\"n\">{}{}</td><td>{}{}</td></tr>",
            esc(&group.route),
            esc(&group_place(group)),
            esc(&group.kind),
            group.count,
            esc(&share(group)),
            esc(&group.status),
            group.note.as_deref().map(|n| format!(": {}", esc(n))).unwrap_or_default(),
            sev = esc(&group.severity),
            key = esc(&group.key),
        );
    }
    out.push_str("</tbody></table>");
    for group in report.groups.iter().take(TOP_GROUPS) {
        html_group(out, group);
    }
    if report.groups.len() > TOP_GROUPS {
        let _ = write!(
            out,
            "<p class=\"dim\">{} more groups: GET /api/divergences lists them all.</p>",
            report.groups.len() - TOP_GROUPS
        );
    }
}

fn html_group(out: &mut String, group: &GroupEvidence) {
    let _ = write!(
        out,
        "<div class=\"group\" id=\"group-{key}\"><h3><span class=\"sev {sev}\">{sev}</span> {} — {} at <code>{}</code> \
         <span class=\"dim\">group {key}</span></h3><p>{}</p>",
        esc(&group.route),
        esc(&group.kind),
        esc(&group_place(group)),
        esc(&seen(group)),
        key = esc(&group.key),
        sev = esc(&group.severity),
    );
    if !group.differences.is_empty() {
        out.push_str("<table class=\"wide\"><thead><tr><th class=\"grow\">field</th><th>primary</th><th>shadow</th></tr></thead><tbody>");
        for difference in &group.differences {
            let (place, primary, shadow) = difference_cells(group, difference);
            let _ = write!(
                out,
                "<tr><td class=\"grow\">{}</td><td><code>{}</code></td><td><code>{}</code></td></tr>",
                esc(&place),
                esc(&primary),
                esc(&shadow)
            );
        }
        out.push_str("</tbody></table>");
    }
    if !group.trace_ids.is_empty() {
        let traces: Vec<String> = group
            .trace_ids
            .iter()
            .map(|id| format!("<code>{}</code>", esc(id)))
            .collect();
        let _ = write!(
            out,
            "<p class=\"dim\">In the backends' traces: {}</p>",
            traces.join(", ")
        );
    }
    if let Some(rule) = &group.suggested_rule {
        let _ = write!(
            out,
            "<p>Accepted. To compare it as a match from now on, add to route {}'s <code>[route.compare]</code>:</p><pre class=\"rule\">{}</pre>",
            esc(&group.route),
            esc(rule)
        );
    }
    if let Some(example) = &group.example {
        let _ = write!(
            out,
            "<details><summary>one sample, trimmed <span class=\"dim\">(the whole bodies: GET /api/divergences/{})</span></summary><pre class=\"diff\">",
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
    out.push_str("</div>");
}

/// A next step as HTML: escaped, its `commands` as code, and each shown
/// group's key linked to its section.
pub(super) fn step_html(step: &str, report: &Report) -> String {
    let mut out = String::new();
    for (n, part) in esc(step).split('`').enumerate() {
        if n % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out.push_str(part);
        }
    }
    for group in report.groups.iter().take(TOP_GROUPS) {
        // Keys are hex digits: nothing in them needs escaping.
        let link = format!("<a href=\"#group-{0}\">{0}</a>", group.key);
        out = out.replace(&group.key, &link);
    }
    out
}

/// Where the group's differences are: the status, or a place in the body.
fn group_place(group: &GroupEvidence) -> String {
    if group.kind == "status_changed" {
        "status".to_string()
    } else {
        place(&group.pattern)
    }
}

/// Where a difference is, and both values as text ("(absent)" for none).
fn difference_cells(group: &GroupEvidence, difference: &ShownDifference) -> (String, String, String) {
    let place = if group.kind == "status_changed" {
        "status".to_string()
    } else {
        let path = if difference.path.is_empty() {
            "(whole answer)".to_string()
        } else {
            difference.path.clone()
        };
        match &difference.item {
            Some(item) => format!("{path} (item {item})"),
            None => path,
        }
    };
    let value = |value: &Option<String>| value.clone().unwrap_or_else(|| "(absent)".to_string());
    (place, value(&difference.primary), value(&difference.shadow))
}

/// How often and when, with the share of the route's compared requests.
fn seen(group: &GroupEvidence) -> String {
    format!(
        "{}×{}, first {}, last {}; triage: {}{}",
        group.count,
        match group.share {
            Some(share) => format!(" ({} of the route's compared requests)", percent(share)),
            None => String::new(),
        },
        time(group.first_seen_ms),
        time(group.last_seen_ms),
        group.status,
        group.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default()
    )
}

fn share(group: &GroupEvidence) -> String {
    group.share.map(|s| format!(" ({})", percent(s))).unwrap_or_default()
}

/// Text inside Markdown backticks: a backtick would end it.
fn code(text: &str) -> String {
    cell(&text.replace('`', "ʼ"))
}
