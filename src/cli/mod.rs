//! The command line: clap commands wiring the library together.
//!
//! Must never: hold logic beyond parsing arguments, calling the library and
//! printing its results.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::config::Config;

mod demo;
mod diff;
mod evidence;
mod serve;

use demo::demo;
use diff::diff;
use evidence::{drift, idmap_import, report, switch};
use serve::{check_config, health, migrate, serve};

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
        /// The store whose ID pairs apply (with --config; else the config's
        /// store, and its `[idmap] import` files either way).
        #[arg(long, value_name = "URL", requires = "config")]
        store: Option<String>,
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
        } => return found_or_not(idmap_import(&file, &at)),
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
        Command::Drift { command } => return found_or_not(drift(command)),
        Command::Diff {
            a,
            b,
            config,
            route,
            store,
            format,
        } => {
            return found_or_not(diff(
                &a,
                &b,
                config.as_deref(),
                route.as_deref(),
                store.as_deref(),
                format,
            ))
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

/// The exit code of a command that answers a question: 0 yes (it passed),
/// 1 no (it found something), 2 it could not answer.
fn found_or_not(result: anyhow::Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the async runtime")
}
