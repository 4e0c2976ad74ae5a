//! `demo`: the whole chain on one machine, with its report.
//!
//! Must never: take a path a user's deployment would not.

use std::path::PathBuf;
use std::time::Duration;

use crate::demo::{DemoOptions, DemoResult, Stage};

use super::runtime;
use super::serve::ignore_file_size_signal;

pub(super) fn demo(duration: Duration, rps: u32, out: PathBuf, keep_running: bool) -> anyhow::Result<()> {
    anyhow::ensure!(rps > 0, "--rps must be at least 1");
    let options = DemoOptions { duration, rps, out };
    runtime()?.block_on(async {
        ignore_file_size_signal()?;
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = stop_tx.send(true);
            }
        });
        let bar = progress_bar(duration);
        let show = |stage: Stage<'_>| match stage {
            Stage::Started { proxy, admin, config } => bar.println(format!(
                "cutover demo: proxy on {proxy}, admin on {admin}, config {}",
                config.display()
            )),
            Stage::Running(progress) => {
                bar.set_position(progress.elapsed.as_millis().try_into().unwrap_or(u64::MAX));
                bar.set_message(format!(
                    "{} requests, {} matched, {} diverged, {} groups",
                    progress.requests, progress.matched, progress.diverged, progress.groups
                ));
            }
            Stage::Reporting => bar.finish_with_message("traffic done; writing the report"),
        };
        let (result, running) = crate::demo::run(&options, stop.clone(), &show).await?;
        print_result(&result)?;
        if keep_running && !*stop.borrow() {
            print_still_running(&result)?;
            let mut stop = stop;
            let _ = stop.wait_for(|stopped| *stopped).await;
        }
        running.shutdown().await;
        Ok(())
    })
}

fn progress_bar(duration: Duration) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(duration.as_millis().try_into().unwrap_or(u64::MAX));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30.cyan/blue} {elapsed:>3} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// The verdict, the groups, the next steps and where everything was written.
fn print_result(result: &DemoResult) -> anyhow::Result<()> {
    say!("\nVerdict: {}  ({} requests)", result.verdict.label(), result.requests);
    if !result.groups.is_empty() {
        say!("Divergence groups:");
    }
    for group in &result.groups {
        let place = match (group.pattern.as_str(), group.kind.as_str()) {
            (_, "status_changed") => group.differences.first().map_or("status".to_string(), |status| {
                format!(
                    "status {} → {}",
                    status.primary.as_deref().unwrap_or("-"),
                    status.shadow.as_deref().unwrap_or("-")
                )
            }),
            ("", _) => "(whole answer)".to_string(),
            (pattern, _) => pattern.to_string(),
        };
        say!(
            "  {:<6} {:<14} {:<22} {:<18} {:>4}×  {}",
            group.severity,
            group.route,
            place,
            group.kind,
            group.count,
            group.key
        );
    }
    for step in &result.next_steps {
        say!("Next: {step}");
    }
    say!(
        "Report: {} and {}",
        result.report_html.display(),
        result.report_md.display()
    );
    say!("Config: {}", result.config.display());
    say!("Store:  {}", result.store.display());
    Ok(())
}

/// With `--keep-running`: how to look at what is still up.
fn print_still_running(result: &DemoResult) -> anyhow::Result<()> {
    say!(
        "\nStill running (Ctrl-C stops): proxy http://{proxy}, admin http://{admin}, and both task APIs\n\
         Browser: open http://{admin}/ and log in with the token {token}\n\
         \x20 curl -H 'Authorization: Bearer {token}' http://{admin}/report > report.html\n\
         \x20 curl -H 'Authorization: Bearer {token}' 'http://{admin}/api/divergences?status=open'\n\
         \x20 curl http://{admin}/metrics\n\
         Prometheus: add a scrape job for {admin} (path /metrics, no token).\n\
         Grafana: import dashboards/cutover.json and pick that Prometheus; the SQL panels need\n\
         the Postgres store of a real deployment (deploy/docker-compose.yml sets one up).",
        proxy = result.proxy,
        admin = result.admin,
        token = result.token,
    );
    Ok(())
}
