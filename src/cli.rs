//! The command line: clap commands wiring the library together.
//!
//! Must never: hold logic beyond parsing arguments, calling the library and
//! printing its results.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use std::sync::Arc;

use crate::compare::rules::CompareRules;
use crate::compare::{compare_responses, Context as CompareContext, NoIds};
use crate::config::Config;
use crate::exchange::CapturedResponse;
use crate::ledger::LedgerState;
use crate::route::{MirrorPolicy, Segment};

#[derive(Debug, Parser)]
#[command(
    name = "cutover",
    version,
    about = "Mirror, compare and switch between a legacy backend and its replacement."
)]
pub struct Cli {
    /// Log format: `pretty` for people, `json` for log pipelines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (and its admin listener) until SIGTERM or Ctrl-C.
    Serve {
        /// The configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration file and print what it configures.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
    /// Create the divergence store if needed and bring its schema up to date.
    Migrate {
        /// sqlite://PATH (created if missing) or postgres://…
        #[arg(long, env = "CUTOVER_STORE_URL", default_value = crate::store::DEFAULT_URL)]
        store: String,
    },
    /// See the whole thing on one machine: two task APIs (one with seeded
    /// bugs), cutover in front of them, a client sending reads and writes,
    /// and the readiness report at the end.
    Demo {
        /// How long the client sends traffic.
        #[arg(long, default_value = "30s")]
        duration: String,
        /// Requests per second.
        #[arg(long, default_value_t = 20)]
        rps: u32,
        /// Where the config, ID map, store and reports are written.
        #[arg(long, default_value = "cutover-demo")]
        out: PathBuf,
        /// Leave the proxy and admin API up after the run (until Ctrl-C).
        #[arg(long)]
        keep_running: bool,
    },
    /// Switch who serves, for every instance on the store (within a second):
    /// shadow, candidate, candidate-fallback or primary-only.
    Switch {
        mode: String,
        /// Only this route (a global switch clears every route's own mode).
        #[arg(long)]
        route: Option<String>,
        #[command(flatten)]
        at: StoreArgs,
    },
    /// Exit 0 if the admin listener at ADDR answers /healthz (for container
    /// health checks in images without a shell or curl).
    Health {
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
    },
    /// ID pairs: import the data migration's mapping file.
    Idmap {
        #[command(subcommand)]
        command: IdmapCommand,
    },
    /// Drifted writes (one side applied a mirrored write, the other did not).
    Drift {
        #[command(subcommand)]
        command: DriftCommand,
    },
    /// The cutover readiness report: GO, NO-GO or NOT YET, with the numbers
    /// behind it, from the store alone. Gates come from the config's
    /// `[readiness]` (defaults without -c).
    Report {
        /// The window: the last DURATION (default 48h).
        #[arg(long, value_name = "DURATION", conflicts_with_all = ["from", "to"])]
        since: Option<String>,
        /// The window's start (RFC 3339, e.g. 2026-11-20T08:00:00Z).
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// The window's end (RFC 3339).
        #[arg(long, requires = "from")]
        to: Option<String>,
        #[arg(long, value_enum, default_value_t = ReportFormat::Html)]
        format: ReportFormat,
        /// Write the report here instead of standard output.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// Exit 0 on GO, 1 on NO-GO, 2 on NOT YET (3 if the report could not be made).
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        at: StoreArgs,
    },
    /// Compare two saved responses (raw HTTP or a bare body) with the same
    /// engine and rules as the proxy. Exit 0 when they match, 1 when they
    /// diverge, 2 on error.
    Diff {
        /// The primary's answer (what B should look like).
        a: PathBuf,
        /// The shadow's answer.
        b: PathBuf,
        /// A config file whose route's compare rules apply.
        #[arg(short, long, value_name = "FILE", requires = "route")]
        config: Option<PathBuf>,
        /// The route whose rules apply (with --config).
        #[arg(long, requires = "config")]
        route: Option<String>,
        /// `text` for people, `json` for the differences, `patch` for the
        /// RFC 6902 JSON Patch that turns B into A.
        #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
        format: DiffFormat,
    },
}

/// Where a command finds the store: `--store` (or $CUTOVER_STORE_URL),
/// else the config's `[store] url`, else the default.
#[derive(Debug, clap::Args)]
struct StoreArgs {
    /// sqlite://PATH or postgres://…
    #[arg(long, env = "CUTOVER_STORE_URL")]
    store: Option<String>,
    /// A configuration file (its store, routes and shadow).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum IdmapCommand {
    /// Import pairs from JSON (`{"kind": {"primary-id": "shadow-id"}}`) or
    /// CSV (`kind,primary_id,shadow_id`). Bad rows are reported with their
    /// line and skipped; exit 1 if any was.
    Import {
        file: PathBuf,
        #[command(flatten)]
        at: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
enum DriftCommand {
    /// List the open drifted writes, oldest first.
    List {
        #[command(flatten)]
        at: StoreArgs,
    },
    /// Send drifted writes to the shadow again, in order (needs --config for
    /// the shadow, the routes and `replay_headers`). Exit 1 if any still drifts.
    Replay {
        /// One ledger row (refused if an earlier drift on the same entity is open).
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        id: Option<i64>,
        /// Every open drift, oldest first.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        at: StoreArgs,
    },
    /// Mark a drifted write as reconciled by hand (e.g. one that cannot be replayed).
    Resolve {
        #[arg(long)]
        id: i64,
        /// Why, kept in the events table.
        #[arg(long)]
        note: String,
        #[command(flatten)]
        at: StoreArgs,
    },
}

impl StoreArgs {
    fn config(&self) -> anyhow::Result<Option<Config>> {
        self.config.as_deref().map(Config::load).transpose().map_err(Into::into)
    }

    fn url(&self, config: Option<&Config>) -> String {
        self.store
            .clone()
            .or_else(|| config.map(|config| config.store.url.clone()))
            .unwrap_or_else(|| crate::store::DEFAULT_URL.to_string())
    }

    async fn open(&self, config: Option<&Config>) -> anyhow::Result<crate::store::Store> {
        let url = self.url(config);
        Ok(crate::store::Store::open(&url, &crate::store::StoreOptions::default()).await?)
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ReportFormat {
    Html,
    Md,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DiffFormat {
    Text,
    Json,
    Patch,
}

/// Runs the command line; the exit code is 0 on success, 1 on failure.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    // The demo draws a progress line; only warnings may interrupt it.
    // (Drifted writes are the demo's findings, shown in its report.)
    let quiet = matches!(cli.command, Command::Demo { .. });
    init_logging(
        cli.log_format,
        if quiet { "warn,cutover::mirror=error" } else { "info" },
    );
    let result = match cli.command {
        Command::Serve { config } => serve(&config),
        Command::CheckConfig { file } => check_config(&file),
        Command::Migrate { store } => migrate(&store),
        Command::Health { admin } => health(&admin),
        Command::Switch { mode, route, at } => switch(&mode, route, &at),
        Command::Demo {
            duration,
            rps,
            out,
            keep_running,
        } => demo(&duration, rps, out, keep_running),
        Command::Idmap {
            command: IdmapCommand::Import { file, at },
        } => {
            return match idmap_import(&file, &at) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(err) => {
                    eprintln!("error: {err:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Report {
            since,
            from,
            to,
            format,
            out,
            check,
            at,
        } => {
            return match report(
                since.as_deref(),
                from.as_deref().zip(to.as_deref()),
                format,
                out.as_deref(),
                &at,
            ) {
                Ok(verdict) if check => ExitCode::from(verdict.exit_code()),
                Ok(_) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: {err:#}");
                    ExitCode::from(if check { 3 } else { 1 })
                }
            }
        }
        Command::Drift { command } => {
            return match drift(command) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(err) => {
                    eprintln!("error: {err:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Diff {
            a,
            b,
            config,
            route,
            format,
        } => {
            return match diff(&a, &b, config.as_deref(), route.as_deref(), format) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(err) => {
                    eprintln!("error: {err:#}");
                    ExitCode::from(2)
                }
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
    }
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
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
fn ignore_file_size_signal() -> anyhow::Result<()> {
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

fn migrate(url: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let store = crate::store::Store::open(url, &crate::store::StoreOptions::default()).await?;
        store.close().await;
        println!("{}: schema up to date", crate::store::redact_url(url));
        Ok(())
    })
}

fn demo(duration: &str, rps: u32, out: PathBuf, keep_running: bool) -> anyhow::Result<()> {
    use crate::demo::{DemoOptions, Stage};
    let duration =
        crate::units::parse_duration(duration).map_err(|message| anyhow::anyhow!("--duration: {message}"))?;
    anyhow::ensure!(rps > 0, "--rps must be at least 1");
    let options = DemoOptions {
        duration,
        rps,
        out,
        keep_running,
    };
    runtime()?.block_on(async {
        ignore_file_size_signal()?;
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = stop_tx.send(true);
            }
        });
        let bar = indicatif::ProgressBar::new(duration.as_millis().try_into().unwrap_or(u64::MAX));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30.cyan/blue} {elapsed:>3} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
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
        println!("\nVerdict: {}  ({} requests)", result.verdict.label(), result.requests);
        if !result.groups.is_empty() {
            println!("Divergence groups:");
        }
        for group in &result.groups {
            let place = match (group.pattern.as_str(), group.kind.as_str()) {
                ("", "status_changed") => "(status)",
                ("", _) => "(whole answer)",
                (pattern, _) => pattern,
            };
            println!(
                "  {:<6} {:<14} {:<22} {:<18} {:>4}×  {}",
                group.severity, group.route, place, group.kind, group.count, group.key
            );
        }
        for step in &result.next_steps {
            println!("Next: {step}");
        }
        println!(
            "Report: {} and {}",
            result.report_html.display(),
            result.report_md.display()
        );
        println!("Config: {}", result.config.display());
        println!("Store:  {}", result.store.display());
        if keep_running && !*stop.borrow() {
            println!(
                "\nStill running (Ctrl-C stops): proxy http://{proxy}, admin http://{admin}\n\
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
            let mut stop = stop;
            let _ = stop.wait_for(|stopped| *stopped).await;
        }
        running.shutdown().await;
        Ok(())
    })
}

fn switch(mode: &str, route: Option<String>, at: &StoreArgs) -> anyhow::Result<()> {
    let mode = crate::mode::Mode::parse(mode).with_context(|| {
        format!("unknown mode \"{mode}\": expected shadow, candidate, candidate-fallback or primary-only")
    })?;
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
        let switch = crate::mode::Switch {
            mode,
            route: route.clone(),
            reason: "manual".into(),
        };
        let detail = serde_json::to_value(&switch)?;
        store.add_event("mode_switch", &detail, crate::clock::now_ms()).await?;
        store.close().await;
        println!(
            "{} → {mode}; every instance on this store applies it within a second",
            route.as_deref().unwrap_or("all routes")
        );
        Ok(())
    })
}

fn health(admin: &str) -> anyhow::Result<()> {
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the async runtime")
}

/// Imports a mapping file into the store; `Ok(false)` when rows were skipped.
fn idmap_import(file: &std::path::Path, at: &StoreArgs) -> anyhow::Result<bool> {
    let config = at.config()?;
    let canonical = config.as_ref().map(|c| c.idmap.canonical).unwrap_or_default();
    runtime()?.block_on(async {
        let store = at.open(config.as_ref()).await?;
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
        println!(
            "{}: {added} pair(s) imported, {} already known, {} row(s) skipped",
            file.display(),
            report.known,
            report.problems.len()
        );
        Ok(report.problems.is_empty())
    })
}

/// Builds and writes the report; returns its verdict.
fn report(
    since: Option<&str>,
    between: Option<(&str, &str)>,
    format: ReportFormat,
    out: Option<&std::path::Path>,
    at: &StoreArgs,
) -> anyhow::Result<crate::report::Verdict> {
    let config = at.config()?;
    let readiness = config.as_ref().map(|c| c.readiness.clone()).unwrap_or_default();
    let now = crate::clock::now_ms();
    let span = match between {
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
        None => {
            let since = since.unwrap_or("48h");
            let length =
                crate::units::parse_duration(since).map_err(|message| anyhow::anyhow!("--since: {message}"))?;
            crate::report::Span::since(length, now)
        }
    };
    let format = match format {
        ReportFormat::Html => crate::report::Format::Html,
        ReportFormat::Md => crate::report::Format::Markdown,
        ReportFormat::Json => crate::report::Format::Json,
    };
    runtime()?.block_on(async {
        let store = at.open(config.as_ref()).await?;
        let report = crate::report::Report::build(&store, span, &readiness, now).await?;
        store.close().await;
        let text = report.render(format);
        match out {
            Some(path) => {
                std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("{}: {}", path.display(), report.verdict.label());
            }
            None => print!("{text}"),
        }
        Ok(report.verdict)
    })
}

/// `drift list|replay|resolve`; `Ok(false)` when writes still drift after a replay.
fn drift(command: DriftCommand) -> anyhow::Result<bool> {
    runtime()?.block_on(async {
        match command {
            DriftCommand::List { at } => {
                let config = at.config()?;
                let store = at.open(config.as_ref()).await?;
                let open = store.ledger(Some(LedgerState::Drift), i64::MAX).await?;
                store.close().await;
                if open.is_empty() {
                    println!("no open drift");
                }
                for row in &open {
                    let detail: Option<crate::ledger::DriftDetail> =
                        row.replay.as_deref().and_then(|text| serde_json::from_str(text).ok());
                    println!(
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
            DriftCommand::Replay { id, all, at } => {
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
                let selection = match (id, all) {
                    (Some(id), _) => crate::drift::Selection::One(id),
                    (None, _) => crate::drift::Selection::All,
                };
                let replayed = replayer.replay(selection).await?;
                store.close().await;
                for result in &replayed {
                    println!(
                        "#{:<6} {:<16} {:<10} {}",
                        result.id, result.route, result.state, result.message
                    );
                }
                let still = replayed.iter().filter(|r| r.state != LedgerState::Reconciled).count();
                println!(
                    "{} replayed, {} reconciled, {still} still drift",
                    replayed.len(),
                    replayed.len() - still
                );
                Ok(still == 0)
            }
            DriftCommand::Resolve { id, note, at } => {
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
                println!("#{id} marked reconciled");
                Ok(true)
            }
        }
    })
}

/// Compares two saved responses; `Ok(true)` when they match.
fn diff(
    a: &std::path::Path,
    b: &std::path::Path,
    config: Option<&std::path::Path>,
    route: Option<&str>,
    format: DiffFormat,
) -> anyhow::Result<bool> {
    let read = |path: &std::path::Path| -> anyhow::Result<CapturedResponse> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        CapturedResponse::from_saved(&bytes).with_context(|| format!("{}", path.display()))
    };
    let (primary, shadow) = (read(a)?, read(b)?);
    let (rules, route_name, decode_limit) = match (config, route) {
        (Some(config), Some(name)) => {
            let config = Config::load(config)?;
            let found = config.routes.iter().find(|r| r.name == name).ok_or_else(|| {
                let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
                anyhow::anyhow!(
                    "{}: no route named \"{name}\" (routes: {})",
                    config.source,
                    names.join(", ")
                )
            })?;
            (Arc::clone(&found.compare), name.to_string(), config.mirror.max_decoded)
        }
        _ => (Arc::new(CompareRules::new()), "diff".to_string(), 64 << 20),
    };
    // A bare body has no headers: comparing them would only report their absence.
    let rules = if primary.headers.is_empty() || shadow.headers.is_empty() {
        let mut without_headers = (*rules).clone();
        without_headers.headers.clear();
        Arc::new(without_headers)
    } else {
        rules
    };
    let ctx = CompareContext {
        route: &route_name,
        method: &http::Method::GET,
        rules: &rules,
        ids: &NoIds,
        decode_limit,
        want_patch: !matches!(format, DiffFormat::Text),
    };
    let comparison = compare_responses(&ctx, &primary, &shadow);
    match format {
        DiffFormat::Text => print!("{}", comparison.to_text()),
        DiffFormat::Json => println!("{}", serde_json::to_string_pretty(&comparison)?),
        DiffFormat::Patch => println!(
            "{}",
            serde_json::to_string_pretty(&comparison.patch.clone().unwrap_or_default())?
        ),
    }
    if let Some(reason) = comparison.incomparable {
        anyhow::bail!("the bodies cannot be compared: {reason}");
    }
    Ok(comparison.is_match())
}

fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    println!("{}: ok", config.source);
    println!("  proxy on {}, admin on {}", config.listen.proxy, config.listen.admin);
    for (side, upstream) in [("primary", &config.primary), ("shadow", &config.shadow)] {
        println!(
            "  {side:<7} {} at {} (timeout {})",
            upstream.name,
            upstream.url,
            humantime::format_duration(upstream.timeout)
        );
    }
    println!("  store: {}", crate::store::redact_url(&config.store.url));
    println!(
        "  mirror: queue {}, max_body {} bytes, unmatched requests: {}",
        config.mirror.queue, config.mirror.max_body, config.mirror.unmatched
    );
    println!("  {} routes:", config.routes.len());
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
        println!("    {:<18} {:<40} {policy}{sample}{ids}", route.name, route.match_text);
    }
    for unreachable in config.routes.unreachable() {
        println!(
            "  warning: route \"{}\" can never match: route \"{}\" comes first and takes every request it would",
            unreachable.route, unreachable.covered_by
        );
    }
    Ok(())
}
