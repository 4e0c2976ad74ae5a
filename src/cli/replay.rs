//! `replay FILE -c CONFIG`: a capture's reads (and with `--writes`, its
//! writes on dual-write routes) sent through an instance of cutover of its
//! own, at a given rate, so both sides are asked, compared and recorded as
//! source `replay` exactly as traffic would be.
//!
//! Must never: send a write without `--writes`, or one on a route that does
//! not dual-write; or send faster than `--rate`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::capture::Replayable;
use crate::config::Config;
use crate::route::MirrorPolicy;

use super::{runtime, StoreArgs};

/// What a replay did with each request of the capture.
#[derive(Debug, Default)]
struct Tally {
    reads: usize,
    writes: usize,
    /// Writes left out: no `--writes`.
    writes_skipped: usize,
    /// Writes left out with `--writes`: their route does not dual-write.
    not_dual_write: usize,
    /// Sent, but cutover's instance gave no answer.
    failed: usize,
}

pub(super) fn replay(
    file: &std::path::Path,
    rate: crate::units::RateLimit,
    writes: bool,
    at: &StoreArgs,
) -> anyhow::Result<bool> {
    let mut config = at
        .config()?
        .context("replay needs --config (both sides, the routes and their rules, the store)")?;
    if let Some(store) = &at.store {
        config.store.url.clone_from(store);
    }
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let (requests, unreadable) =
        crate::capture::parse(&text).with_context(|| format!("{}: not a capture cutover can read", file.display()))?;
    for entry in &unreadable {
        eprintln!("{}: {}: not sent: {}", file.display(), entry.place, entry.why);
    }
    let tally = runtime()?.block_on(send_all(config.clone(), &requests, rate, writes))?;
    say!(
        "{} sent ({} reads, {} writes) to both sides through cutover, recorded as source replay in {}",
        tally.reads + tally.writes,
        tally.reads,
        tally.writes,
        crate::store::redact_url(&config.store.url)
    );
    if tally.writes_skipped > 0 {
        say!(
            "{} writes not sent (pass --writes to send those on dual-write routes)",
            tally.writes_skipped
        );
    }
    if tally.not_dual_write > 0 {
        say!(
            "{} writes not sent: their route does not dual-write",
            tally.not_dual_write
        );
    }
    if !unreadable.is_empty() || tally.failed > 0 {
        say!(
            "{} entries could not be read, {} got no answer",
            unreadable.len(),
            tally.failed
        );
    }
    say!(
        "The comparison: cutover report -c {}",
        crate::report::shell_word(&config.source)
    );
    Ok(unreadable.is_empty() && tally.failed == 0)
}

async fn send_all(
    config: Config,
    requests: &[Replayable],
    rate: crate::units::RateLimit,
    writes: bool,
) -> anyhow::Result<Tally> {
    let routes = config.routes.clone();
    let running = crate::app::start_replaying(config).await?;
    let target = format!("http://{}", running.proxy_addr);
    let client = crate::upstream::client_builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("cannot build the replay's HTTP client")?;
    let mut tally = Tally::default();
    let progress = Progress::new(requests.len());
    let pace = Duration::from_secs_f64(1.0 / rate.per_second.max(0.001));
    let mut next = tokio::time::Instant::now();
    for (index, request) in requests.iter().enumerate() {
        progress.show(index, &tally);
        let route = routes.find(&request.method, request.path.split('?').next().unwrap_or_default());
        if !crate::route::is_read(route, &request.method, &request.body) {
            if !writes {
                tally.writes_skipped += 1;
                continue;
            }
            if !route.is_some_and(|route| route.mirror == MirrorPolicy::DualWrite) {
                tally.not_dual_write += 1;
                continue;
            }
            tally.writes += 1;
        } else {
            tally.reads += 1;
        }
        tokio::time::sleep_until(next).await;
        next += pace;
        let sent = client
            .request(request.method.clone(), format!("{target}{}", request.path))
            .headers(request.headers.clone())
            .body(request.body.clone())
            .send()
            .await;
        match sent {
            Ok(answer) => {
                let _ = answer.bytes().await;
            }
            Err(_) => tally.failed += 1,
        }
    }
    progress.done(requests.len(), &tally);
    let report = running.shutdown().await;
    anyhow::ensure!(
        report.exchanges_unrecorded == 0 && report.unwritten.records == 0,
        "the replay's instance stopped before recording everything: {} comparisons unrecorded, {} records unwritten",
        report.exchanges_unrecorded,
        report.unwritten.records
    );
    Ok(tally)
}

/// A bar on a terminal; elsewhere (a CI log) a line every ten seconds.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
    last_line: std::cell::Cell<Instant>,
}

impl Progress {
    fn new(total: usize) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(u64::try_from(total).unwrap_or(u64::MAX));
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} {elapsed:>3} eta {eta} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Progress {
            bar,
            total,
            last_line: std::cell::Cell::new(Instant::now()),
        }
    }

    fn show(&self, done: usize, tally: &Tally) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(u64::try_from(done).unwrap_or(u64::MAX));
                bar.set_message(format!("{} reads, {} writes", tally.reads, tally.writes));
            }
            None if self.last_line.get().elapsed() >= Duration::from_secs(10) => {
                self.last_line.set(Instant::now());
                eprintln!(
                    "replay: {done}/{} ({} reads, {} writes sent)",
                    self.total, tally.reads, tally.writes
                );
            }
            None => {}
        }
    }

    fn done(&self, done: usize, tally: &Tally) {
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => eprintln!(
                "replay: {done}/{} ({} reads, {} writes sent)",
                self.total, tally.reads, tally.writes
            ),
        }
    }
}
