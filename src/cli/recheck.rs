//! `recheck --group G [--mark-fixed]`: a group's sampled reads sent to both
//! sides again now, with a line per sample and the next step.
//!
//! Must never: mark a group fixed without `--mark-fixed`, or print a value
//! the recheck did not redact.

use std::sync::Arc;

use anyhow::Context;

use crate::recheck::{RecheckReport, Rechecker, SampleVerdict};

use super::{runtime, StoreArgs};

/// Rechecks a group; `Ok(true)` when its difference is gone from every
/// sample sent (the group may be marked fixed).
pub(super) fn recheck(group: &str, mark_fixed: bool, at: &StoreArgs) -> anyhow::Result<bool> {
    let config = at
        .config()?
        .context("recheck needs --config (both sides to send to, the routes' rules, replay_headers)")?;
    let ids = Arc::new(super::diff::id_map(&config, Some(&at.url(Some(&config))))?);
    runtime()?.block_on(async {
        let store = at.open(Some(&config)).await?;
        let routes = Arc::new(config.routes.clone());
        let rechecker = Rechecker {
            primary: crate::upstream::Upstream::new(&config.primary)?,
            shadow: crate::upstream::Upstream::new(&config.shadow)?,
            ids,
            routes: Arc::new(move || Arc::clone(&routes)),
            primary_headers: config.primary.replay_headers.clone(),
            shadow_headers: config.shadow.replay_headers.clone(),
            redactor: config.redact.clone(),
            max_body: config.mirror.max_body,
            decode_limit: config.mirror.max_decoded,
        };
        let report = rechecker
            .recheck(&store, group, mark_fixed, crate::clock::now_ms())
            .await;
        store.close().await;
        let report = report?;
        print(&report)?;
        next_step(&report, mark_fixed, at)
    })
}

fn print(report: &RecheckReport) -> anyhow::Result<()> {
    say!(
        "group {} ({}): {}\n{}",
        report.group,
        report.route,
        report.status,
        report.summary
    );
    for sample in &report.samples {
        let status = |status: Option<u16>| status.map_or("-".to_string(), |s| s.to_string());
        say!(
            "  {} {:<40} primary {:>3}  shadow {:>3}  {:<17} {}",
            sample.method,
            sample.path,
            status(sample.primary_status),
            status(sample.shadow_status),
            sample.verdict.label(),
            sample.message
        );
        for difference in &sample.differences {
            say!("      {}", difference.line());
        }
    }
    Ok(())
}

/// The closing line and the exit: what the samples say, and the command that acts on it.
fn next_step(report: &RecheckReport, mark_fixed: bool, at: &StoreArgs) -> anyhow::Result<bool> {
    let counts: Vec<String> = report
        .counts()
        .iter()
        .map(|(label, n)| format!("{n} {label}"))
        .collect();
    let total = report.samples.len();
    if report.marked_fixed {
        say!(
            "the difference is gone ({}): marked fixed; a new divergence in the group reopens it as a regression",
            counts.join(", ")
        );
        return Ok(true);
    }
    if report.fixable {
        let command = at
            .commands()
            .cli(&format!("recheck --group {} --mark-fixed", report.group), true)
            .unwrap_or_default();
        say!(
            "the difference is gone ({}). To record it: {command}",
            counts.join(", ")
        );
        return Ok(true);
    }
    let sent = report
        .samples
        .iter()
        .filter(|s| s.verdict != SampleVerdict::NotSent)
        .count();
    anyhow::ensure!(
        sent > 0,
        "none of the group's {total} samples could be sent again ({}); wait for traffic to show the fix",
        counts.join(", ")
    );
    let refused = if mark_fixed { "; not marked fixed" } else { "" };
    say!(
        "the group still diverges or could not be compared ({}){refused}",
        counts.join(", ")
    );
    Ok(false)
}
