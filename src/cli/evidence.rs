//! The commands over the evidence in a store: `switch`, `idmap import`,
//! `report`, `drift` and `backup`.
//!
//! Must never: change the store but through the library's own calls.

use std::sync::Arc;

use anyhow::Context;

use crate::ledger::LedgerState;

use super::{runtime, DriftCommand, ReportFormat, StoreArgs};

pub(super) fn switch(
    mode: &str,
    route: Option<String>,
    percent: Option<f64>,
    key: Option<&str>,
    force: bool,
    at: &StoreArgs,
) -> anyhow::Result<()> {
    let mode = crate::mode::Mode::parse(mode).with_context(|| {
        format!("unknown mode \"{mode}\": expected shadow, candidate, candidate-fallback or primary-only")
    })?;
    let share = crate::mode::Share::asked(percent, key)?;
    let switch = crate::mode::Switch::new(mode, route.clone(), share)?;
    let config = at.config()?;
    if let (Some(config), Some(route)) = (&config, &route) {
        anyhow::ensure!(
            config.routes.iter().any(|r| &r.name == route),
            "{}: no route named \"{route}\"",
            config.source
        );
    }
    runtime()?.block_on(async {
        let store = at.open(config.as_ref()).await?;
        if let (None, Some(route)) = (&config, &route) {
            // No config to check against: the instances on the store say what they serve.
            match store.announced_routes(500).await? {
                None => anyhow::bail!(
                    "cannot check route \"{route}\": no instance on this store has announced its routes; \
                     pass -c CONFIG to check it against the config"
                ),
                Some(names) if !names.contains(route) => anyhow::bail!(
                    "no route named \"{route}\" on this store's instances; their routes are: {}",
                    names.join(", ")
                ),
                Some(_) => {}
            }
        }
        let recorded = record_switch(&store, config.as_ref(), switch, force).await;
        store.close().await;
        let switch = recorded?;
        let share = switch
            .share
            .as_ref()
            .map(|share| format!(" for {share} (the rest as shadow)"))
            .unwrap_or_default();
        say!(
            "{} → {mode}{share}; every instance on this store applies it within a second",
            route.as_deref().unwrap_or("all routes")
        );
        Ok(())
    })
}

/// Records a switch every instance on the store applies; one that puts the
/// candidate in front of clients is refused while the report over the last
/// 48 h says NO-GO, unless forced (and then it says so).
pub(super) async fn record_switch(
    store: &crate::store::Store,
    config: Option<&crate::config::Config>,
    mut switch: crate::mode::Switch,
    force: bool,
) -> anyhow::Result<crate::mode::Switch> {
    let against = if switch.mode.candidate_serves() {
        let readiness = config.map(|c| c.readiness.clone()).unwrap_or_default();
        let now = crate::clock::now_ms();
        let span = crate::report::Span::since(crate::report::DEFAULT_WINDOW, now);
        crate::report::Report::build(store, span, &readiness, now)
            .await?
            .against_switching()
    } else {
        None
    };
    if let (Some(against), false) = (&against, force) {
        anyhow::bail!("{against}; pass --force to switch to {} anyway", switch.mode);
    }
    switch.forced = against.is_some();
    let detail = serde_json::to_value(&switch)?;
    store.add_event("mode_switch", &detail, crate::clock::now_ms()).await?;
    Ok(switch)
}

/// `triage GROUP STATUS [--note]`: what the triage endpoint does.
pub(super) fn triage(group: &str, status: &str, note: Option<&str>, at: &StoreArgs) -> anyhow::Result<()> {
    let config = at.config()?;
    runtime()?.block_on(async {
        let store = at.open(config.as_ref()).await?;
        let found = store.triage(group, status, note, crate::clock::now_ms()).await;
        store.close().await;
        anyhow::ensure!(
            found?,
            "no divergence group {group} in this store (the report and `GET /api/divergences` list them)"
        );
        say!("{group}: {status}");
        Ok(())
    })
}

/// `backup --out FILE`: a consistent copy of a SQLite store, then the
/// copy opened as a store to show what it holds.
pub(super) fn backup(out: &std::path::Path, at: &StoreArgs) -> anyhow::Result<()> {
    let config = at.config()?;
    let url = at.url(config.as_ref());
    anyhow::ensure!(
        crate::store::Engine::of(&url) != Some(crate::store::Engine::Postgres),
        crate::store::StoreError::BackupNeedsSqlite
    );
    runtime()?.block_on(async {
        let store = at.open(config.as_ref()).await?;
        let copied = store.backup_into(out).await;
        store.close().await;
        let bytes = copied?;
        let copy_url = format!("sqlite://{}", out.display());
        let copy = crate::store::Store::open_existing(&copy_url, &Default::default())
            .await
            .with_context(|| format!("the copy at {} does not open as a store", out.display()))?;
        let exchanges = copy.exchange_count().await;
        copy.close().await;
        say!(
            "backed up {} to {} ({bytes} bytes, {} exchange rows); restore it by stopping cutover and putting the file in the store's place",
            crate::store::redact_url(&url),
            out.display(),
            exchanges?
        );
        Ok(())
    })
}

/// Imports a mapping file into the store; `Ok(false)` when rows were skipped.
pub(super) fn idmap_import(file: &std::path::Path, at: &StoreArgs) -> anyhow::Result<bool> {
    let config = at.config()?;
    let canonical = config.as_ref().map(|c| c.idmap.canonical).unwrap_or_default();
    runtime()?.block_on(async {
        let store = at.open_creating(config.as_ref(), true).await?;
        // The map as stored, so conflicts with earlier pairs are reported too.
        let ids = crate::idmap::IdMap::new(canonical);
        for (pair, _) in store.id_pairs().await? {
            // Pairs stored before the canonical form was set are reported by the import.
            let _ = ids.insert(&pair);
        }
        let report = crate::app::import_file(&ids, file).with_context(|| file.display().to_string())?;
        let added = store
            .insert_id_pairs(&report.added, "import", crate::clock::now_ms())
            .await?;
        store.close().await;
        for problem in &report.problems {
            eprintln!("{}:{}: skipped: {}", file.display(), problem.line, problem.message);
        }
        say!(
            "{}: {added} pair(s) imported, {} already known, {} row(s) skipped",
            file.display(),
            report.known,
            report.problems.len()
        );
        Ok(report.problems.is_empty())
    })
}

/// What `cutover report` was asked for.
pub(super) struct ReportRequest<'a> {
    pub since: Option<std::time::Duration>,
    pub between: Option<(&'a str, &'a str)>,
    pub format: ReportFormat,
    pub out: Option<&'a std::path::Path>,
    /// Only the verdict and the gates that did not pass go to standard
    /// output; the report itself only to `out`.
    pub check: bool,
}

/// Builds and writes the report; returns its verdict.
pub(super) fn report(request: &ReportRequest<'_>, at: &StoreArgs) -> anyhow::Result<crate::report::Verdict> {
    let config = at.config()?;
    let readiness = config.as_ref().map(|c| c.readiness.clone()).unwrap_or_default();
    let now = crate::clock::now_ms();
    let span = report_span(request, now)?;
    let format = match request.format {
        ReportFormat::Html => crate::report::Format::Html,
        ReportFormat::Md => crate::report::Format::Markdown,
        ReportFormat::Json => crate::report::Format::Json,
    };
    runtime()?.block_on(async {
        let store = at.open(config.as_ref()).await?;
        let report = crate::report::Report::build(&store, span, &readiness, now)
            .await?
            .with_commands(&at.commands());
        store.close().await;
        if let Some(path) = request.out {
            std::fs::write(path, report.render(format)).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("{}: {}", path.display(), report.verdict.label());
        }
        if request.check {
            for line in report.check_lines() {
                say!("{line}");
            }
        } else if request.out.is_none() {
            crate::cli::write_stdout(&report.render(format), false)?;
        }
        Ok(report.verdict)
    })
}

/// The window `--since` or `--from`/`--to` ask for.
fn report_span(request: &ReportRequest<'_>, now: i64) -> anyhow::Result<crate::report::Span> {
    Ok(match request.between {
        Some((from, to)) => {
            let parse = |text: &str, what: &str| -> anyhow::Result<i64> {
                Ok(chrono::DateTime::parse_from_rfc3339(text)
                    .with_context(|| {
                        format!("--{what} \"{text}\": expected an RFC 3339 time like 2026-11-20T08:00:00Z")
                    })?
                    .timestamp_millis())
            };
            let span = crate::report::Span {
                from_ms: parse(from, "from")?,
                to_ms: parse(to, "to")?,
            };
            anyhow::ensure!(span.from_ms < span.to_ms, "--from must be before --to");
            span
        }
        None => crate::report::Span::since(request.since.unwrap_or(crate::report::DEFAULT_WINDOW), now),
    })
}

/// `drift list|replay|resolve`; `Ok(false)` when writes still drift after a replay.
pub(super) fn drift(command: DriftCommand) -> anyhow::Result<bool> {
    runtime()?.block_on(async {
        match command {
            DriftCommand::List { at } => drift_list(&at).await,
            DriftCommand::Replay { id, all: _, at } => drift_replay(id, &at).await,
            DriftCommand::Resolve { id, note, at } => drift_resolve(id, note, &at).await,
        }
    })
}

/// `drift list`: the open drift, oldest first.
async fn drift_list(at: &StoreArgs) -> anyhow::Result<bool> {
    let config = at.config()?;
    let store = at.open(config.as_ref()).await?;
    let open = store.ledger(Some(LedgerState::Drift), i64::MAX).await?;
    store.close().await;
    if open.is_empty() {
        say!("no open drift");
    }
    for row in &open {
        let detail: Option<crate::ledger::DriftDetail> =
            row.replay.as_deref().and_then(|text| serde_json::from_str(text).ok());
        say!(
            "#{:<6} {} {:<16} {} {} {} (primary {}, shadow {}, {} tries){}",
            row.id,
            chrono::DateTime::from_timestamp_millis(row.at_ms)
                .map(|at| at.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default(),
            row.route,
            row.method,
            row.path,
            row.entity.as_deref().unwrap_or("-"),
            row.primary_status.map_or("-".into(), |s| s.to_string()),
            row.shadow_status.map_or("-".into(), |s| s.to_string()),
            row.attempts,
            detail.map(|d| format!(": {}", d.reason)).unwrap_or_default()
        );
    }
    Ok(true)
}

/// `drift replay`: one row (`--id`) or every open drift, in order; `Ok(false)` while some still drift.
async fn drift_replay(id: Option<i64>, at: &StoreArgs) -> anyhow::Result<bool> {
    let config = at
        .config()?
        .context("drift replay needs --config (the shadow to send to, the routes, replay_headers)")?;
    let store = at.open(Some(&config)).await?;
    let ids = Arc::new(crate::idmap::IdMap::new(config.idmap.canonical));
    for (pair, _) in store.id_pairs().await? {
        let _ = ids.insert(&pair);
    }
    let replayer = crate::drift::Replayer {
        shadow: crate::upstream::Upstream::new(&config.shadow)?,
        primary: crate::upstream::Upstream::new(&config.primary)?,
        ids,
        routes: config.routes.clone(),
        replay_headers: config.shadow.replay_headers.clone(),
        store: store.clone(),
        seal: config.redact.seal().cloned(),
    };
    let selection = match id {
        Some(id) => crate::drift::Selection::One(id),
        None => crate::drift::Selection::All,
    };
    let replayed = replayer.replay(selection).await?;
    store.close().await;
    for result in &replayed {
        say!(
            "#{:<6} {:<16} {:<10} {}",
            result.id,
            result.route,
            result.state,
            result.message
        );
    }
    let still = replayed.iter().filter(|r| r.state != LedgerState::Reconciled).count();
    say!(
        "{} replayed, {} reconciled, {still} still drift",
        replayed.len(),
        replayed.len() - still
    );
    Ok(still == 0)
}

/// `drift resolve`: marks an open drift reconciled by hand, with a note.
async fn drift_resolve(id: i64, note: String, at: &StoreArgs) -> anyhow::Result<bool> {
    let config = at.config()?;
    let store = at.open(config.as_ref()).await?;
    let open = store.ledger(Some(LedgerState::Drift), i64::MAX).await?;
    anyhow::ensure!(
        open.iter().any(|row| row.id == id),
        "ledger row {id} is not an open drift"
    );
    let now = crate::clock::now_ms();
    store.settle_ledger(id, LedgerState::Reconciled, None, now).await?;
    store
        .add_event("drift_resolved", &serde_json::json!({"id": id, "note": note}), now)
        .await?;
    store.close().await;
    say!("#{id} marked reconciled");
    Ok(true)
}
