//! The command line: clap commands wiring the library together.
//!
//! Must never: hold logic beyond parsing arguments, calling the library and
//! printing its results.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tracing::info;
use tracing_subscriber::EnvFilter;

use crate::config::Config;
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
}

/// Runs the command line; the exit code is 0 on success, 1 on failure.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Serve { config } => serve(&config),
        Command::CheckConfig { file } => check_config(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let running = crate::app::start(config).await?;
        info!(proxy = %running.proxy_addr, admin = %running.admin_addr, "cutover is serving");
        wait_for_stop_signal().await?;
        info!("stopping: finishing in-flight requests and draining the mirror queue");
        running.shutdown().await;
        Ok(())
    })
}

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for Ctrl-C"),
        _ = terminate.recv() => Ok(()),
    }
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
        let policy = match route.mirror {
            MirrorPolicy::DualWrite => {
                "dual-write (this build compares its reads; writes go to the primary only)".to_string()
            }
            other => other.to_string(),
        };
        println!("    {:<18} {:<40} {policy}{sample}{ids}", route.name, route.match_text);
    }
    Ok(())
}
