//! `cutover demo`: the whole system on one machine. Two implementations of
//! a task API (legacy and candidate, with seeded bugs and noise), the proxy
//! in front of them with a config written where the user can read it, a
//! client sending a realistic mix of reads and writes, and the readiness
//! report at the end.
//!
//! Must never: take a path the real thing does not. The demo writes a
//! config file and an ID-mapping file and starts the proxy from them, sends
//! real HTTP through it, and reads the report from the SQLite store, like a
//! user would.

pub mod tasks;
mod traffic;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::app::{Running, StartError};
use crate::config::{Config, ConfigError};
use crate::report::evidence::GroupEvidence;
use crate::report::{Commands, Format, Readiness, Report, Span, Verdict};
use crate::store::{Store, StoreError, StoreOptions};
use tasks::{Flavor, Ids, Listening, Seed, TaskApi};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the demo's task APIs: {0}")]
    Backend(std::io::Error),
    #[error("the demo's own config is invalid (a bug in cutover): {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(Box<StartError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot build the demo's HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub duration: Duration,
    pub rps: u32,
    /// Where the config, the ID map, the store and the reports go.
    pub out: PathBuf,
}

/// What the demo produced.
#[derive(Debug)]
pub struct DemoResult {
    pub verdict: Verdict,
    pub requests: u64,
    /// The report's groups, with their differences.
    pub groups: Vec<GroupEvidence>,
    pub next_steps: Vec<String>,
    pub config: PathBuf,
    pub store: PathBuf,
    pub report_html: PathBuf,
    pub report_md: PathBuf,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// The admin API's bearer token for this run.
    pub token: String,
}

/// Where the admin token comes from (made up for the run when unset).
const TOKEN_ENV: &str = "CUTOVER_ADMIN_TOKEN";

/// Live counts for the progress line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub elapsed: Duration,
    pub requests: u64,
    pub matched: u64,
    pub diverged: u64,
    pub groups: u64,
}

/// Where the demo is, for the caller to show.
pub enum Stage<'a> {
    Started {
        proxy: SocketAddr,
        admin: SocketAddr,
        config: &'a Path,
    },
    Running(Progress),
    Reporting,
}

/// What the demo leaves running after its report: the proxy with its
/// admin API, and both task APIs behind it, so the printed next steps (a
/// replay, a triage, a report) work against them until [`shutdown`].
///
/// [`shutdown`]: DemoRunning::shutdown
pub struct DemoRunning {
    pub proxy: Running,
    backends: Backends,
}

impl DemoRunning {
    /// Stops the proxy (draining it), then the task APIs.
    pub async fn shutdown(self) {
        self.proxy.shutdown().await;
        self.backends.legacy.stop();
        self.backends.candidate.stop();
    }
}

/// Runs the demo. `stop` turning true (Ctrl-C) ends the traffic early; the
/// report is still written from what was recorded.
pub async fn run(
    options: &DemoOptions,
    stop: watch::Receiver<bool>,
    show: &(dyn Fn(Stage<'_>) + Sync),
) -> Result<(DemoResult, DemoRunning), DemoError> {
    let out = &options.out;
    std::fs::create_dir_all(out).map_err(|source| write_error(out, source))?;
    let store_path = out.join("cutover.db");
    for stale in ["cutover.db", "cutover.db-wal", "cutover.db-shm"] {
        let _ = std::fs::remove_file(out.join(stale));
    }
    let backends = Backends::start(out).await?;
    let config_path = out.join("cutover.toml");
    write(
        &config_path,
        &config_text(&backends.legacy.url(), &backends.candidate.url(), &store_path),
    )?;
    let token = admin_token();
    let (running, readiness) = start_proxy(&config_path, &token).await?;
    show(Stage::Started {
        proxy: running.proxy_addr,
        admin: running.admin_addr,
        config: &config_path,
    });

    let client = traffic::Client::new(running.proxy_addr, backends.legacy_ids.clone())?;
    let store_url = format!("sqlite://{}", store_path.display());
    let store = Store::open(&store_url, &StoreOptions::default()).await?;
    let started = std::time::Instant::now();
    drive(options, stop, show, &running, &store, &client).await;
    show(Stage::Reporting);
    settle(&running).await;
    let now = crate::clock::now_ms();
    let span = Span {
        from_ms: now - i64::try_from(started.elapsed().as_millis()).unwrap_or(0) - 60_000,
        to_ms: now + 1,
    };
    let report = Report::build(&store, span, &readiness, now)
        .await?
        .with_commands(&Commands::config(&config_path.display().to_string()));
    let report_html = out.join("report.html");
    let report_md = out.join("report.md");
    write(&report_html, &report.render(Format::Html))?;
    write(&report_md, &report.render(Format::Markdown))?;
    store.close().await;
    let result = DemoResult {
        verdict: report.verdict,
        requests: client.sent.load(Ordering::Relaxed),
        groups: report.groups.clone(),
        next_steps: report.next_steps.clone(),
        config: config_path,
        store: store_path,
        report_html,
        report_md,
        proxy: running.proxy_addr,
        admin: running.admin_addr,
        token,
    };
    Ok((
        result,
        DemoRunning {
            proxy: running,
            backends,
        },
    ))
}

/// The demo's two task APIs, serving, seeded alike.
struct Backends {
    legacy: Listening,
    candidate: Listening,
    /// The seeded tasks' IDs on the legacy side, for the client to use.
    legacy_ids: Vec<String>,
}

impl Backends {
    /// Starts both APIs, seeds them, and writes the data migration's ID
    /// mapping to `out` as a real migration would.
    async fn start(out: &Path) -> Result<Backends, DemoError> {
        // Random UUIDs on both sides: the data migration kept Notion's key type.
        let legacy_api = TaskApi::new(Flavor::Legacy).with_ids(Ids::Uuid).with_timestamps();
        let candidate_api = TaskApi::new(Flavor::Candidate)
            .with_ids(Ids::Uuid)
            .with_timestamps()
            .with_bugs();
        let legacy = legacy_api.start().await.map_err(DemoError::Backend)?;
        let candidate = candidate_api.start().await.map_err(DemoError::Backend)?;
        let seeds = seeds();
        let legacy_ids = legacy_api.seed(&seeds);
        let candidate_ids = candidate_api.seed(&seeds);
        let mapping: serde_json::Map<String, serde_json::Value> = legacy_ids
            .iter()
            .zip(&candidate_ids)
            .map(|(l, c)| (l.clone(), serde_json::Value::from(c.clone())))
            .collect();
        write(
            &out.join("id-mappings.json"),
            &serde_json::json!({ "tasks": mapping }).to_string(),
        )?;
        Ok(Backends {
            legacy,
            candidate,
            legacy_ids,
        })
    }
}

/// The admin API needs a token: the user's, else one made for this run.
fn admin_token() -> String {
    std::env::var(TOKEN_ENV)
        .ok()
        .filter(|token| !token.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// Starts the proxy from the config file it wrote, as a user would.
async fn start_proxy(config_path: &Path, token: &str) -> Result<(Running, Readiness), DemoError> {
    let text = std::fs::read_to_string(config_path).map_err(|source| write_error(config_path, source))?;
    let env = |name: &str| {
        if name == TOKEN_ENV {
            Some(token.to_string())
        } else {
            std::env::var(name).ok()
        }
    };
    let config = Config::parse(&text, &config_path.display().to_string(), &env)?;
    let readiness = config.readiness.clone();
    let running = crate::app::start(config)
        .await
        .map_err(|err| DemoError::Start(Box::new(err)))?;
    Ok((running, readiness))
}

/// Sends the traffic through the proxy, showing progress, until it is done
/// or `stop` turns true.
async fn drive(
    options: &DemoOptions,
    stop: watch::Receiver<bool>,
    show: &(dyn Fn(Stage<'_>) + Sync),
    running: &Running,
    store: &Store,
    client: &Arc<traffic::Client>,
) {
    let traffic = {
        let client = Arc::clone(client);
        let (rps, duration) = (options.rps, options.duration);
        tokio::spawn(async move { client.run(rps, duration, stop).await })
    };
    let started = std::time::Instant::now();
    while !traffic.is_finished() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        show(Stage::Running(
            progress(running, store, client, started.elapsed()).await,
        ));
    }
    let _ = traffic.await;
}

/// Waits until the mirror has compared everything and the store has it all.
async fn settle(running: &Running) {
    for _ in 0..200 {
        let text = running.metrics.encode();
        let value = |name: &str| -> f64 {
            text.lines()
                .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
                .and_then(|line| line.rsplit(' ').next()?.parse().ok())
                .unwrap_or(0.0)
        };
        if value(crate::metrics::MIRROR_QUEUE_DEPTH) == 0.0 && value(crate::metrics::STORE_PENDING) == 0.0 {
            // The writer batches: a record taken out of the inbox is written within a flush.
            tokio::time::sleep(Duration::from_millis(1200)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn progress(running: &Running, store: &Store, client: &traffic::Client, elapsed: Duration) -> Progress {
    let text = running.metrics.encode();
    let outcome = |label: &str| -> u64 {
        text.lines()
            .filter(|line| line.starts_with(crate::metrics::REQUESTS_TOTAL))
            .filter(|line| line.contains(&format!("outcome=\"{label}\"")))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    Progress {
        elapsed,
        requests: client.sent.load(Ordering::Relaxed),
        matched: outcome("match"),
        diverged: outcome("diverged"),
        groups: store.groups().await.map_or(0, |groups| groups.len() as u64),
    }
}

fn write(path: &Path, text: &str) -> Result<(), DemoError> {
    std::fs::write(path, text).map_err(|source| write_error(path, source))
}

fn write_error(path: &Path, source: std::io::Error) -> DemoError {
    DemoError::Write {
        path: path.display().to_string(),
        source,
    }
}

/// Forty tasks, as the data migration copied them to both sides.
fn seeds() -> Vec<Seed> {
    let now = crate::clock::now_ms();
    let statuses = ["open", "in_progress", "waiting", "done", "open"];
    let priorities = ["low", "normal", "high", "urgent"];
    (0..40)
        .map(|n: i64| Seed {
            title: format!("Seeded task {n:02}"),
            status: statuses[(n % 5) as usize],
            priority: priorities[(n % 4) as usize],
            due: (n % 3 != 0).then(|| format!("2026-12-{:02}", 1 + n % 28)),
            tags: if n % 4 == 0 { vec!["home".into()] } else { Vec::new() },
            context: (n % 2 == 0).then(|| "personal".to_string()),
            created_ms: now - (40 - n) * 3_600_000,
        })
        .collect()
}

/// The demo's config: mirror reads, dual-write writes, rules for the noise.
/// It is long because it is one TOML document, written to be read whole.
fn config_text(legacy: &str, candidate: &str, store: &Path) -> String {
    // Every route answers tasks the same way, so every route gets the same rules.
    let rules = r#"[route.compare]
ignore = ["/source", "/generatedAt", "/notionPageId", "/taskId"]
unordered = { "/tasks" = "id" }
ids = { "/**/id" = "tasks" }
time_tolerance = { "/**/createdAt" = "3s", "/**/updatedAt" = "3s", "/**/dueDate" = "1s" }
dates_as_midnight_utc = true"#;
    format!(
        r#"# Written by `cutover demo`: a working configuration to read and copy.
# The legacy task API is the primary (it serves every client); the
# candidate is the shadow (it is compared). Both run inside the demo.

[listen]
proxy = "127.0.0.1:0"
admin = "127.0.0.1:0"

[primary]
name = "legacy"
url = "{legacy}"
timeout = "10s"

[shadow]
name = "candidate"
url = "{candidate}"
timeout = "5s"

[mirror]
write_wait = "2s"

[store]
url = "sqlite://{store}"
flush = "200ms"

# The data migration's ID mapping; IDs of tasks created during the run are
# learned from the two create answers.
[idmap]
import = ["id-mappings.json"]
canonical = "uuid"

# A demo runs seconds, not a day: the gates ask for less, and the verdict
# is decided by what the comparison finds.
[readiness]
min_duration = "5s"
min_compared_per_route = 5

[[route]]
name = "all-tasks"
match = "GET /api/all-tasks"
{rules}

[[route]]
name = "get-task"
match = "GET /api/task/{{id:tasks}}"
{rules}

[[route]]
name = "batch-create"
match = "POST /api/task/batch"
mirror = "dual-write"
learn_ids = [{{ kind = "tasks", primary = "/tasks/*/id", shadow = "/tasks/*/id" }}]
{rules}

[[route]]
name = "create-task"
match = "POST /api/task"
mirror = "dual-write"
learn_ids = [{{ kind = "tasks", primary = "/notionPageId", shadow = "/taskId" }}]
{rules}

[[route]]
name = "complete-task"
match = "PATCH /api/task/{{id:tasks}}/complete"
mirror = "dual-write"
{rules}

[[route]]
name = "update-task"
match = "PATCH /api/task/{{id:tasks}}"
mirror = "dual-write"
{rules}
"#,
        store = store.display()
    )
}
