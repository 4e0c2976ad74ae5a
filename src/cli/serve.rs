//! `serve`, `check-config`, `migrate` and `health`: running an instance
//! and the checks around it.
//!
//! Must never: start serving with a config that did not validate.

use anyhow::Context;
use tracing::{info, warn};

use crate::config::Config;
use crate::route::{MirrorPolicy, Segment};

use super::runtime;

pub(super) fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    raise_open_file_limit(config.mirror.max_in_flight);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Listen for SIGHUP before saying we serve: its default action would end the process.
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot listen for SIGHUP")?;
        ignore_file_size_signal()?;
        let stop = wait_for_stop_signal()?;
        let running = crate::app::start(config).await?;
        info!(proxy = %running.proxy_addr, admin = %running.admin_addr, "cutover is serving");
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = hangup.recv() => {
                    // The outcome is logged either way; a refused reload keeps the old config.
                    let _ = running.reloader.reload().await;
                }
            }
        }
        info!("stopping: finishing in-flight requests and draining the mirror queue");
        let report = running.shutdown().await;
        let lost = report.unwritten;
        if lost.records > 0 {
            let uncompared = match report.exchanges_unrecorded {
                0 => String::new(),
                count => format!("; {count} exchanges were still being compared and were never recorded"),
            };
            anyhow::bail!(
                "{} records were not written to the store before the stop ({} exchanges, {} write ledger rows, \
                 {} ID pairs): they are lost; see the log above for why the store refused them{uncompared}",
                lost.records,
                lost.exchanges,
                lost.ledger_rows,
                lost.id_pairs
            );
        }
        Ok(())
    })
}

/// Raises the soft limit on open files to the hard one (as Go's runtime
/// does): every client, primary and shadow connection is a file, and the
/// usual soft limit of 1,024 is spent by a few hundred clients and a slow
/// shadow. Warns when even the hard limit leaves little beside the
/// mirror's own connections.
fn raise_open_file_limit(max_in_flight: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let mirror = u64::try_from(2 * max_in_flight).unwrap_or(u64::MAX);
            if limit < mirror.saturating_add(1024) {
                warn!(
                    limit,
                    mirror_connections = mirror,
                    "the open files limit leaves little room for clients beside the mirror's connections \
                     (mirror.max_in_flight to each upstream); raise it (LimitNOFILE, ulimit -n)"
                );
            } else {
                info!(limit, "open files limit");
            }
        }
        Err(err) => warn!(error = %err, "cannot read or raise the open files limit"),
    }
}

/// SIGXFSZ's default action ends the process when a file outgrows the
/// file-size limit (RLIMIT_FSIZE). With a handler installed the write fails
/// with EFBIG instead, which the store treats as a full disk: it buffers and
/// retries, and the proxy keeps serving. Tokio's handler stays installed for
/// the life of the process; the signal itself carries nothing to act on.
pub(super) fn ignore_file_size_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut file_size = signal(SignalKind::from_raw(libc::SIGXFSZ)).context("cannot handle SIGXFSZ")?;
    tokio::spawn(async move { while file_size.recv().await.is_some() {} });
    Ok(())
}

/// Listens for SIGTERM and SIGINT from now on (not from the first poll:
/// a signal's default action would end the process without draining).
fn wait_for_stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

pub(super) fn migrate(url: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let store = crate::store::Store::open(url, &crate::store::StoreOptions::default()).await?;
        store.close().await;
        say!("{}: schema up to date", crate::store::redact_url(url));
        Ok(())
    })
}

pub(super) fn health(admin: &str) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let client = crate::upstream::client_builder()
            .timeout(std::time::Duration::from_secs(3))
            .build()?;
        let answer = client
            .get(format!("http://{admin}/healthz"))
            .send()
            .await
            .with_context(|| format!("admin listener {admin} does not answer"))?;
        anyhow::ensure!(
            answer.status().is_success(),
            "{admin}/healthz answered {}",
            answer.status()
        );
        Ok(())
    })
}

/// What `[side.headers]` does to every request to that side, naming each
/// value's variable (never the value), and a warning for a value too short
/// to be scrubbed from kept text by value.
fn say_side_headers(side: &str, headers: &crate::upstream::SideHeaders) -> anyhow::Result<()> {
    let set = headers
        .set
        .iter()
        .map(|header| format!("sets {} (from ${})", header.name, header.variable));
    let removes = headers.remove.iter().map(|name| format!("removes {name}"));
    let changes: Vec<String> = set.chain(removes).collect();
    if !changes.is_empty() {
        say!("          every request to the {side}: {}", changes.join(", "));
    }
    for header in &headers.set {
        if header.value.expose().len() < crate::redact::SHORTEST_SCRUBBED {
            say!(
                "  warning: ${} is shorter than {} bytes: {side}.headers.set.\"{}\" is redacted as a header, but not scrubbed where a backend echoes it in a body",
                header.variable,
                crate::redact::SHORTEST_SCRUBBED,
                header.name
            );
        }
    }
    Ok(())
}

pub(super) fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    say!("{}: ok", config.source);
    say!("  proxy on {}, admin on {}", config.listen.proxy, config.listen.admin);
    for (side, upstream) in [("primary", &config.primary), ("shadow", &config.shadow)] {
        say!(
            "  {side:<7} {} at {} (timeout {})",
            upstream.name,
            upstream.url,
            humantime::format_duration(upstream.timeout)
        );
        say_side_headers(side, &upstream.headers)?;
    }
    say!("  store: {}", crate::store::redact_url(&config.store.url));
    say!(
        "  mirror: queue {}, max_body {} bytes, unmatched requests: {}",
        config.mirror.queue,
        config.mirror.max_body,
        config.mirror.unmatched
    );
    say!("  {} routes:", config.routes.len());
    for route in config.routes.iter() {
        let params: Vec<String> = route
            .template
            .segments()
            .iter()
            .filter_map(|segment| match segment {
                Segment::Param { name, kind: Some(kind) } => Some(format!("{name} is a {kind} id")),
                _ => None,
            })
            .collect();
        let sample = if route.sample < 1.0 {
            format!(", sample {}", route.sample)
        } else {
            String::new()
        };
        let ids = if params.is_empty() {
            String::new()
        } else {
            format!(" ({})", params.join(", "))
        };
        let mut policy = route.mirror.to_string();
        if route.mirror == MirrorPolicy::DualWrite {
            for learn in &route.writes.learn {
                policy.push_str(&format!(", learns {} IDs", learn.kind));
            }
            if let Some(verify) = &route.writes.verify {
                policy.push_str(&format!(", verifies with {}", verify.text));
            }
        }
        say!("    {:<18} {:<40} {policy}{sample}{ids}", route.name, route.match_text);
    }
    for unreachable in config.routes.unreachable() {
        say!(
            "  warning: route \"{}\" can never match: route \"{}\" comes first and takes every request it would",
            unreachable.route,
            unreachable.covered_by
        );
    }
    Ok(())
}
