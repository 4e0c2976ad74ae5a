//! The command line: clap commands wiring the library together.
//!
//! Must never: hold logic beyond parsing arguments, calling the library and
//! printing its results.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::config::Config;

/// `println!` that hands a failed write back as an error instead of
/// panicking, so a reader that closes the pipe early (`| head`) ends the
/// command quietly (see [`exit`]).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(&format!($($arg)*), true)?
    };
}

mod demo;
mod diff;
mod evidence;
mod export;
mod recheck;
mod replay;
mod rollout;
mod serve;

use demo::demo;
use diff::diff;
use evidence::{drift, idmap_import, report, switch, triage};
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
        #[arg(long, default_value = "30s", value_parser = crate::units::parse_duration)]
        duration: std::time::Duration,
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
        /// Only this share of the traffic (a percent, 0.01 to 100): a
        /// stable hash of --key chooses who is in it, the same on every
        /// replica; the rest is served as in shadow.
        #[arg(long)]
        percent: Option<f64>,
        /// What a share is chosen by: header:NAME, cookie:NAME or client-ip
        /// (the default). A request without the key is served by the primary.
        #[arg(long, requires = "percent")]
        key: Option<String>,
        /// Switch to the candidate even though the report says NO-GO (the
        /// event records that it was forced).
        #[arg(long)]
        force: bool,
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
    /// The ramp onto the candidate that `[rollout]` (all routes) or
    /// `[route.rollout]` (one route) configures.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Triage a divergence group, as `POST /api/divergences/{group}/triage`
    /// does: `accepted` differences count as matches in the report, `bug`
    /// and `fixed` keep counting, `open` undoes a triage.
    Triage {
        /// The group's key (in the report, `cutover diff` and the API).
        group: String,
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(crate::store::TRIAGE_STATES))]
        status: String,
        /// Why (kept with the group and in the events table).
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        at: StoreArgs,
    },
    /// Send a divergence group's sampled reads to both sides again now and
    /// compare them under the route's current rules, as `POST
    /// /api/divergences/{group}/recheck` does. Exit 0 when the group's
    /// difference is gone from every sample sent, 1 when it is not, 2 when
    /// nothing could be sent or the group is unknown.
    Recheck {
        /// The group's key (in the report, `cutover diff` and the API).
        #[arg(long)]
        group: String,
        /// Record the group as `fixed` when its difference is gone (a group
        /// marked fixed that diverges again is reopened as a regression).
        #[arg(long)]
        mark_fixed: bool,
        #[command(flatten)]
        at: StoreArgs,
    },
    /// Send the requests of a capture (HAR from a browser or a proxy, or
    /// cutover's own export as HAR or JSON Lines) to both sides through an
    /// instance of cutover of its own, compared and recorded as source
    /// `replay`: a comparison before cutover is in line. Exit 0 when every
    /// entry was read and answered, 1 otherwise.
    Replay {
        /// The capture.
        file: PathBuf,
        /// At most this many requests, e.g. `10/s` or `600/m`.
        #[arg(long, default_value = "10/s", value_parser = crate::units::parse_rate)]
        rate: crate::units::RateLimit,
        /// Send the capture's writes too, on routes with mirror = "dual-write"
        /// (else every write is left out, and counted).
        #[arg(long)]
        writes: bool,
        #[command(flatten)]
        at: StoreArgs,
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
        #[arg(long, value_name = "DURATION", conflicts_with_all = ["from", "to"], value_parser = crate::units::parse_duration)]
        since: Option<std::time::Duration>,
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
    /// The divergence samples, and with --exchanges every request recorded
    /// in the window, as HAR 1.2 or JSON Lines (redacted as stored).
    Export {
        #[arg(long, value_enum, default_value_t = export::CaptureFormat::Har)]
        format: export::CaptureFormat,
        /// Write here instead of standard output; refused if it exists.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Every recorded request of the window too (method, path,
        /// statuses and timings: the store keeps no headers or bodies of those).
        #[arg(long)]
        exchanges: bool,
        /// The window of --exchanges: the last DURATION.
        #[arg(long, value_name = "DURATION", default_value = "48h", value_parser = crate::units::parse_duration)]
        since: std::time::Duration,
        #[command(flatten)]
        at: StoreArgs,
    },
    /// A consistent copy of a SQLite store, taken while cutover runs (a
    /// PostgreSQL store is backed up with pg_dump: see the README).
    Backup {
        /// The file to write; refused if it exists.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
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
    /// Start an empty store when none exists (else a missing store is an
    /// error, so a typo in a path never reports on nothing).
    #[arg(long)]
    create: bool,
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
enum RolloutCommand {
    /// Put the first step in force: the candidate serves its share. The
    /// instances advance it after each hold while the gates pass on the
    /// share's own traffic, and step back on a breach.
    Start {
        /// The route whose `[route.rollout]` to start (else `[rollout]`).
        #[arg(long)]
        route: Option<String>,
        /// Start even though the report says NO-GO (the switch records it).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        at: StoreArgs,
    },
    /// Where each ramp stands: its step, since when, and why it moved.
    Status {
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

    /// How the report's next steps find this store again.
    fn commands(&self) -> crate::report::Commands {
        match (&self.config, &self.store) {
            (Some(path), _) => crate::report::Commands::config(&path.display().to_string()),
            (None, Some(url)) => crate::report::Commands::store(url),
            (None, None) => crate::report::Commands::default(),
        }
    }

    async fn open(&self, config: Option<&Config>) -> anyhow::Result<crate::store::Store> {
        self.open_creating(config, self.create).await
    }

    /// Opens the store, creating it when `create` (an import that fills a
    /// store before the proxy first starts).
    async fn open_creating(&self, config: Option<&Config>, create: bool) -> anyhow::Result<crate::store::Store> {
        let url = self.url(config);
        let options = crate::store::StoreOptions::default();
        Ok(if create {
            crate::store::Store::open(&url, &options).await?
        } else {
            crate::store::Store::open_existing(&url, &options).await?
        })
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

/// Exit codes (the README's table): 0 and 1 are each command's yes and no
/// (GO and NO-GO for `report --check`), 2 NOT YET or "could not answer",
/// 3 a report that could not be made under `--check`, and this one a
/// usage error (a mistyped flag or value), after sysexits.h's EX_USAGE.
pub const EXIT_USAGE: u8 = 64;

/// Runs the command line and gives the process's exit code.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(usage) => {
            let _ = usage.print();
            // --help and --version are answers, not errors.
            return if usage.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // The demo draws a progress line; only warnings may interrupt it.
    // (Drifted writes are the demo's findings, shown in its report.)
    let quiet = matches!(cli.command, Command::Demo { .. });
    init_logging(
        cli.log_format,
        if quiet { "warn,cutover::mirror=error" } else { "info" },
    );
    let done = |result: anyhow::Result<()>| exit(result.map(|()| ExitCode::SUCCESS), 1);
    match cli.command {
        Command::Serve { config } => done(serve(&config)),
        Command::CheckConfig { file } => done(check_config(&file)),
        Command::Migrate { store } => done(migrate(&store)),
        Command::Health { admin } => done(health(&admin)),
        Command::Backup { out, at } => done(evidence::backup(&out, &at)),
        Command::Export {
            format,
            out,
            exchanges,
            since,
            at,
        } => {
            let request = export::ExportRequest {
                format,
                out: out.as_deref(),
                exchanges,
                since,
            };
            done(export::export(&request, &at))
        }
        Command::Switch {
            mode,
            route,
            percent,
            key,
            force,
            at,
        } => done(switch(&mode, route, percent, key.as_deref(), force, &at)),
        Command::Demo {
            duration,
            rps,
            out,
            keep_running,
        } => done(demo(duration, rps, out, keep_running)),
        Command::Idmap {
            command: IdmapCommand::Import { file, at },
        } => found_or_not(idmap_import(&file, &at)),
        Command::Rollout {
            command: RolloutCommand::Start { route, force, at },
        } => done(rollout::start(route, force, &at)),
        Command::Rollout {
            command: RolloutCommand::Status { at },
        } => done(rollout::status(&at)),
        Command::Report {
            since,
            from,
            to,
            format,
            out,
            check,
            at,
        } => {
            let request = evidence::ReportRequest {
                since,
                between: from.as_deref().zip(to.as_deref()),
                format,
                out: out.as_deref(),
                check,
            };
            report_exit(&request, &at)
        }
        Command::Triage {
            group,
            status,
            note,
            at,
        } => done(triage(&group, &status, note.as_deref(), &at)),
        Command::Recheck { group, mark_fixed, at } => found_or_not(recheck::recheck(&group, mark_fixed, &at)),
        Command::Replay { file, rate, writes, at } => {
            let result = replay::replay(&file, rate, writes, &at);
            exit(result.map(|all| ExitCode::from(u8::from(!all))), 2)
        }
        Command::Drift { command } => found_or_not(drift(command)),
        Command::Diff {
            a,
            b,
            config,
            route,
            store,
            format,
        } => found_or_not(diff(
            &a,
            &b,
            config.as_deref(),
            route.as_deref(),
            store.as_deref(),
            format,
        )),
    }
}

/// `report`: with `--check` the verdict's code (3 when no report could be
/// made), else 0 (1 on error).
fn report_exit(request: &evidence::ReportRequest<'_>, at: &StoreArgs) -> ExitCode {
    let code = report(request, at).map(|verdict| {
        if request.check {
            ExitCode::from(verdict.exit_code())
        } else {
            ExitCode::SUCCESS
        }
    });
    exit(code, if request.check { 3 } else { 1 })
}

/// A command's exit: its own code, or on error the message and
/// `error_code`, except that a closed standard output (the reader of a
/// pipe has what it wanted, as `git log | head`) ends quietly with 0.
fn exit(result: anyhow::Result<ExitCode>, error_code: u8) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(error_code)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Writes to standard output, and a newline when asked; errors (a closed
/// pipe) come back instead of panicking as `print!` does.
pub(crate) fn write_stdout(text: &str, newline: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if newline {
        out.write_all(b"\n")?;
    }
    out.flush()
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal: a log file or a
        // collector gets plain text.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
    }
}

/// The exit code of a command that answers a question: 0 yes (it passed),
/// 1 no (it found something), 2 it could not answer.
fn found_or_not(result: anyhow::Result<bool>) -> ExitCode {
    let code = result.map(|yes| if yes { ExitCode::SUCCESS } else { ExitCode::from(1) });
    exit(code, 2)
}

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the async runtime")
}
