//! Wiring: starts one cutover instance (proxy listener, admin listener,
//! mirror and comparison workers) from a validated config, and stops it in
//! order: stop accepting, finish in-flight requests, drain the mirror queue
//! (all within `[listen] shutdown_grace`), then stop the admin listener.
//!
//! Must never: hold request logic; that lives in proxy and mirror.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::{watch, OnceCell};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::admin::{AdminState, DriftControl};
use crate::config::Config;
use crate::idmap::{parse_import, IdMap, IdPair, ImportFormat, ImportReport};
use crate::metrics::{Metrics, MetricsError};
use crate::mirror::{Mirror, MirrorError, Recording};
use crate::mode::{ModeTable, Switch};
use crate::proxy::{self, ProxyState};
use crate::store::{LedgerState, Store, Writer, WriterConfig};
use crate::upstream::{Upstream, UpstreamError};
use crate::{admin, server};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{key} = \"{addr}\": cannot listen: {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error("{file}: {source}")]
    Import {
        file: String,
        #[source]
        source: ImportError,
    },
}

/// Why an ID-mapping file could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read: {0}")]
    Read(#[from] std::io::Error),
    #[error(transparent)]
    Parse(#[from] crate::idmap::IdMapError),
}

/// Reads an ID-mapping file into the map. Bad rows are returned with their
/// line (and skipped); a file that cannot be parsed at all is an error.
pub fn import_file(ids: &IdMap, path: &std::path::Path) -> Result<ImportReport, ImportError> {
    let text = std::fs::read_to_string(path)?;
    let format = ImportFormat::detect(&path.display().to_string(), &text);
    Ok(ids.import(parse_import(&text, format)?))
}

/// What a shutdown left undone (all zero on a clean stop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Whether client connections were still open when the grace period ended.
    pub connections_cut: bool,
    /// Mirrored exchanges not yet recorded when the grace period ended.
    pub exchanges_unrecorded: usize,
    /// Records not written to the store when the grace period ended.
    pub unwritten: crate::store::Unwritten,
}

/// Stops the store writer within `grace`: past it, the writer stops
/// retrying and says what it could not write. A writer stuck inside one
/// write is ended after another ten seconds, and what it held is known
/// only as a count (the pending gauge).
async fn stop_writer(
    writer: &Writer,
    mut task: tokio::task::JoinHandle<crate::store::Unwritten>,
    grace: std::time::Duration,
    metrics: &Metrics,
) -> crate::store::Unwritten {
    writer.stop();
    if let Ok(done) = tokio::time::timeout(grace, &mut task).await {
        return done.unwrap_or_default();
    }
    writer.give_up();
    match tokio::time::timeout(std::time::Duration::from_secs(10), &mut task).await {
        Ok(done) => done.unwrap_or_default(),
        Err(_) => {
            task.abort();
            let pending = metrics.store_pending().get().max(0).unsigned_abs();
            metrics.store_records_lost().inc_by(pending);
            crate::store::Unwritten {
                records: pending,
                ..Default::default()
            }
        }
    }
}

/// Connections the admin listener holds open at most: enough for probes,
/// scrapers and an operator, and kept apart from the proxy's, so that health
/// checks answer while the proxy port is saturated.
pub const ADMIN_MAX_CONNECTIONS: u32 = 64;

/// Descriptors kept back from client connections for everything else a
/// process opens: the store's files, logs, DNS, the runtime's own.
const DESCRIPTORS_SPARE: u64 = 256;

/// The soft limit on open files, when it can be read.
fn open_files_limit() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft)
}

/// Each listener's connection limits. The proxy's cap is lowered, with a
/// warning, to what the open-files limit leaves after the admin listener's
/// connections, the mirror's upstream connections (two upstreams, for
/// `max_in_flight` each), the store's pool and a spare: clients that fill
/// the proxy port then never take the descriptors health checks need.
pub fn connection_limits(
    config: &Config,
    open_files: Option<u64>,
) -> (server::ConnectionLimits, server::ConnectionLimits) {
    let configured = config.listen.max_connections;
    let reserved = u64::from(ADMIN_MAX_CONNECTIONS)
        + 2 * config.mirror.max_in_flight as u64
        + u64::from(config.store.options.max_connections)
        + DESCRIPTORS_SPARE;
    let max_connections = match open_files {
        Some(limit) if limit.saturating_sub(reserved) < u64::from(configured) => {
            let lowered = u32::try_from(limit.saturating_sub(reserved)).unwrap_or(u32::MAX).max(1);
            warn!(
                configured,
                lowered,
                open_files_limit = limit,
                reserved,
                "listen.max_connections is above what the open files limit leaves for clients; \
                 using the lower figure (raise LimitNOFILE or ulimit -n to serve more)"
            );
            lowered
        }
        _ => configured,
    };
    let proxy = server::ConnectionLimits {
        listener: "proxy",
        header_read_timeout: config.listen.header_read_timeout,
        idle_timeout: config.listen.idle_timeout,
        max_connections,
    };
    let admin = server::ConnectionLimits {
        listener: "admin",
        max_connections: ADMIN_MAX_CONNECTIONS,
        ..proxy.clone()
    };
    (proxy, admin)
}

/// A running instance.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Re-reads the config file (SIGHUP, `POST /api/reload`).
    pub reloader: Arc<Reloader>,
    pub metrics: Metrics,
    shutdown: watch::Sender<bool>,
    stopped: JoinHandle<ShutdownReport>,
}

impl Running {
    /// Stops the instance gracefully and reports what was left undone.
    pub async fn shutdown(self) -> ShutdownReport {
        let _ = self.shutdown.send(true);
        self.stopped.await.unwrap_or(ShutdownReport {
            connections_cut: true,
            exchanges_unrecorded: 0,
            unwritten: crate::store::Unwritten::default(),
        })
    }
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { key, addr, source })
}

/// Starts an instance: both listeners are bound when this returns.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let metrics = Metrics::new()?;
    // One pooled client per backend: the proxy, the mirror and replay share
    // it (clones share the pool), and the system's roots are read once each.
    let primary = Upstream::new(&config.primary)?;
    let shadow = Upstream::new(&config.shadow)?;
    let ids = Arc::new(IdMap::new(config.idmap.canonical));
    let mut imported: Vec<IdPair> = Vec::new();
    for path in &config.idmap.import {
        let file = path.display().to_string();
        let report = import_file(&ids, path).map_err(|source| StartError::Import {
            file: file.clone(),
            source,
        })?;
        for problem in &report.problems {
            warn!(file = %file, line = problem.line, problem = %problem.message, "ID-mapping row skipped");
        }
        info!(file = %file, added = report.added.len(), known = report.known, skipped = report.problems.len(), "ID mapping imported");
        imported.extend(report.added);
    }
    metrics.set_idmap_entries(&ids.counts());
    let (writer, writer_task) = Writer::start(config.store.clone(), metrics.clone());
    let instance = instance_name(&config);
    let (mirror, workers) = Mirror::start(
        config.mirror.clone(),
        config.noise.clone(),
        primary.clone(),
        shadow.clone(),
        config.shadow.rate_limit,
        metrics.clone(),
        Recording {
            writer: Arc::clone(&writer),
            redactor: config.redact.clone(),
            samples_per_group: config.store.options.samples_per_group,
            ids: Arc::clone(&ids),
            write_tries: config.shadow.write_tries,
            store: config.store.clone(),
            instance: instance.clone(),
        },
    )?;
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn(load_from_store(
        config.store.clone(),
        Lifecycle {
            fingerprint: config.fingerprint.clone(),
            instance: instance.clone(),
            route_names: route_names(&config),
            started_ms: crate::clock::now_ms(),
        },
        Arc::clone(&ids),
        imported,
        mirror.drifted(),
        metrics.clone(),
        Arc::clone(&ready),
    ));
    let proxy_listener = bind("listen.proxy", config.listen.proxy).await?;
    let admin_listener = bind("listen.admin", config.listen.admin).await?;
    let proxy_addr = proxy_listener.local_addr().map_err(|source| StartError::Bind {
        key: "listen.proxy",
        addr: config.listen.proxy,
        source,
    })?;
    let admin_addr = admin_listener.local_addr().map_err(|source| StartError::Bind {
        key: "listen.admin",
        addr: config.listen.admin,
        source,
    })?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let modes = ModeTable::new();
    let mut proxy_state = ProxyState::new(
        config.routes.clone(),
        primary.clone(),
        shadow.clone(),
        Arc::clone(&mirror),
        Arc::clone(&modes),
        metrics.clone(),
    );
    proxy_state.body_read_timeout = config.listen.body_read_timeout;
    let state = Arc::new(proxy_state);
    tokio::spawn(follow_pairs(
        config.store.clone(),
        Arc::clone(&ids),
        metrics.clone(),
        shutdown_tx.subscribe(),
    ));
    for sweep in config.sweeps.clone() {
        tokio::spawn(run_sweep(
            sweep,
            Arc::downgrade(&mirror),
            config.store.clone(),
            shutdown_tx.subscribe(),
        ));
    }
    if let Some(rule) = config.rollback.clone() {
        tokio::spawn(watch_rollback(
            rule,
            Arc::clone(&state.health),
            Arc::clone(&modes),
            config.store.clone(),
            metrics.clone(),
            shutdown_tx.subscribe(),
        ));
    }
    tokio::spawn(follow_modes(
        config.store.clone(),
        Arc::clone(&modes),
        metrics.clone(),
        shutdown_tx.subscribe(),
    ));
    let reload_target = Arc::clone(&state);
    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
    for unreachable in config.routes.unreachable() {
        warn!(
            route = %unreachable.route,
            covered_by = %unreachable.covered_by,
            "a route can never match: an earlier route takes every request it would"
        );
    }
    let grace = config.listen.shutdown_grace;
    let (proxy_limits, admin_limits) = connection_limits(&config, open_files_limit());

    let proxy_task = tokio::spawn(server::serve(
        proxy_listener,
        move |peer, request| proxy::handle(Arc::clone(&state), peer, request),
        shutdown_rx,
        proxy_limits,
        grace,
        Some(metrics.clone()),
    ));
    let primary_address = (
        config.primary.url.host_str().unwrap_or_default().to_string(),
        config.primary.url.port_or_known_default().unwrap_or(80),
    );
    let mut admin_state = AdminState::new(
        metrics.clone(),
        config.admin.token.clone(),
        config.admin.token_env.clone(),
        config.store.url.clone(),
        config.store.options.clone(),
        primary_address,
    );
    admin_state.drift = Some(DriftControl {
        shadow,
        primary,
        ids: Arc::clone(&ids),
        routes: config.routes.clone(),
        replay_headers: config.shadow.replay_headers.clone(),
        seal: config.redact.seal().cloned(),
        drifted: mirror.drifted(),
        replaying: tokio::sync::Mutex::new(()),
    });
    admin_state.loaded = Some(ready);
    admin_state.writer = Some(Arc::clone(&writer));
    admin_state.modes = Some(Arc::clone(&modes));
    admin_state.readiness = std::sync::RwLock::new(config.readiness.clone());
    let reloader = Arc::new(Reloader {
        current: std::sync::Mutex::new(config.clone()),
        proxy: reload_target,
        store: OnceCell::new(),
        admin: std::sync::OnceLock::new(),
        instance: instance.clone(),
    });
    admin_state.reloader = Some(Arc::clone(&reloader) as Arc<dyn crate::admin::Reload>);
    let admin_state = Arc::new(admin_state);
    let _ = reloader.admin.set(Arc::downgrade(&admin_state));
    let admin_task = tokio::spawn(server::serve(
        admin_listener,
        move |peer, request| admin::handle(Arc::clone(&admin_state), peer, request),
        admin_stop_rx,
        admin_limits,
        grace,
        Some(metrics.clone()),
    ));

    let writer_metrics = metrics.clone();
    let store_config = config.store.clone();
    let stopped = tokio::spawn(async move {
        let began = Instant::now();
        let finished = proxy_task.await.unwrap_or(false);
        let left = grace.saturating_sub(began.elapsed());
        let exchanges_unrecorded = mirror.drain(left).await;
        mirror.stop();
        drop(mirror);
        if tokio::task::spawn_blocking(move || workers.join()).await.is_err() {
            warn!("comparison workers did not stop cleanly");
        }
        // Everything recorded is queued for the store: write it, within what is left of the grace period.
        let store_grace = grace
            .saturating_sub(began.elapsed())
            .max(std::time::Duration::from_secs(1));
        let unwritten = stop_writer(&writer, writer_task, store_grace, &writer_metrics).await;
        let _ = admin_stop_tx.send(true);
        let _ = admin_task.await;
        let report = ShutdownReport {
            connections_cut: !finished,
            exchanges_unrecorded,
            unwritten,
        };
        record_stop(&store_config, &instance, &report).await;
        if unwritten.records > 0 {
            warn!(
                records = unwritten.records,
                exchanges = unwritten.exchanges,
                ledger_rows = unwritten.ledger_rows,
                id_pairs = unwritten.id_pairs,
                noise_snapshots = unwritten.noise_snapshots,
                write_intents = unwritten.write_intents,
                "records were not written to the store before the stop: they are lost"
            );
        }
        if report.connections_cut || report.exchanges_unrecorded > 0 || unwritten.records > 0 {
            warn!(
                connections_cut = report.connections_cut,
                exchanges_unrecorded = report.exchanges_unrecorded,
                records_unwritten = unwritten.records,
                "shutdown grace period ended with work left"
            );
        } else {
            info!("stopped cleanly");
        }
        report
    });

    Ok(Running {
        proxy_addr,
        admin_addr,
        reloader,
        metrics,
        shutdown: shutdown_tx,
        stopped,
    })
}

/// What the `start` event says of this run.
struct Lifecycle {
    /// The config's SHA-256 prefix.
    fingerprint: String,
    /// Who this instance is across restarts (see [`instance_name`]).
    instance: String,
    /// The routes it serves, announced so that `cutover switch --route`
    /// without a config can check a name against what instances serve.
    route_names: Vec<String>,
    /// When this run started: writes left pending from before it are an
    /// earlier run's.
    started_ms: i64,
}

fn route_names(config: &Config) -> Vec<String> {
    config.routes.iter().map(|route| route.name.clone()).collect()
}

/// Brings the in-memory state up from the store, retrying until it answers:
/// the ID pairs learned before (and the imported ones, persisted), the
/// entities whose writes are held behind drift, the open-drift gauge; then
/// records the start as an `events` row. Readiness waits for it.
async fn load_from_store(
    config: WriterConfig,
    lifecycle: Lifecycle,
    ids: Arc<IdMap>,
    imported: Vec<IdPair>,
    drifted: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    metrics: Metrics,
    ready: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        match load_once(&config, &lifecycle, &ids, &imported, &drifted, &metrics).await {
            Ok(()) => {
                ready.store(true, std::sync::atomic::Ordering::Release);
                return;
            }
            Err(err) => {
                warn!(error = %err, retry_in = ?delay, "cannot load the ID map and ledger from the store yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(30));
            }
        }
    }
}

async fn load_once(
    config: &WriterConfig,
    lifecycle: &Lifecycle,
    ids: &IdMap,
    imported: &[IdPair],
    drifted: &std::sync::Mutex<std::collections::HashSet<String>>,
    metrics: &Metrics,
) -> Result<(), crate::store::StoreError> {
    let store = Store::open(&config.url, &config.options).await?;
    let now = crate::clock::now_ms();
    store.insert_id_pairs(imported, "import", now).await?;
    let mut conflicts = 0;
    for (pair, _origin) in store.id_pairs().await? {
        if let Err(err) = ids.insert(&pair) {
            conflicts += 1;
            warn!(error = %err, "stored ID pair conflicts with the imported mapping; the imported pair is used");
        }
    }
    metrics.set_idmap_entries(&ids.counts());
    let Lifecycle {
        fingerprint, instance, ..
    } = lifecycle;
    // What an earlier run of this instance sent and never heard back about
    // is in doubt: that run has ended, since this one took its name.
    let in_doubt = store.settle_in_doubt(instance, lifecycle.started_ms, now).await?;
    if in_doubt > 0 {
        warn!(instance = %instance, writes = in_doubt, "writes in flight when the previous run ended are now drift (unclean_restart)");
    }
    let held = store.drifted_entities().await?;
    drifted
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .extend(held);
    metrics.drift_open().set(store.ledger_count(LedgerState::Drift).await?);
    if let Some((started_ms, kind)) = store.last_lifecycle_event(instance, LIFECYCLE_SCAN).await? {
        if kind == "start" {
            // The last run of this instance started and never recorded its stop:
            // killed, crashed or cut off from the store at shutdown. Whatever it
            // had in memory (queued comparisons, buffered records) is gone.
            warn!(instance = %instance, "the previous run of this instance ended without a clean stop");
            let detail = serde_json::json!({
                "instance": instance,
                "previous_start_ms": started_ms,
                "writes_in_doubt": in_doubt,
            });
            store.add_event("unclean_restart", &detail, now).await?;
        }
    }
    let detail = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config": fingerprint,
        "idmap_conflicts": conflicts,
        "instance": instance,
        "writes_in_doubt": in_doubt,
        "route_names": lifecycle.route_names,
    });
    store.add_event("start", &detail, now).await?;
    store.close().await;
    info!(
        pairs = ids.counts().iter().map(|(_, n)| n).sum::<usize>(),
        "ID map and ledger loaded from the store"
    );
    Ok(())
}

/// How many of the latest lifecycle events a start looks through for its
/// own instance's last one (other replicas' are in between).
const LIFECYCLE_SCAN: i64 = 500;

/// Who this instance is across restarts: the host, the config file and the
/// proxy listen address. Two processes with all three equal are taken as
/// one instance restarting.
fn instance_name(config: &Config) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|host| host.trim().to_string())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string());
    let file = std::fs::canonicalize(&config.source)
        .map(|path| path.display().to_string())
        .unwrap_or_else(|_| config.source.clone());
    format!("{host} {file} {}", config.listen.proxy)
}

/// Records the stop as an `events` row (with what the grace period left
/// undone), so the next start knows this run ended cleanly.
async fn record_stop(config: &WriterConfig, instance: &str, report: &ShutdownReport) {
    let detail = serde_json::json!({
        "instance": instance,
        "connections_cut": report.connections_cut,
        "exchanges_unrecorded": report.exchanges_unrecorded,
        "records_unwritten": report.unwritten.records,
        "unwritten": report.unwritten,
    });
    if config.url.contains(":memory:") {
        // An in-memory store ends with the process; no later start reads it.
        return;
    }
    let attempt = async {
        let store = Store::open(&config.url, &config.options).await?;
        store.add_event("stop", &detail, crate::clock::now_ms()).await?;
        store.close().await;
        Ok::<(), crate::store::StoreError>(())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(3), attempt).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => warn!(error = %err, "could not record the stop in the store"),
        Err(_) => warn!("could not record the stop in the store: it did not answer within 3s"),
    }
}

/// Why a reload was refused (the configuration in force stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{file}: {keys} changed; these take a restart to apply")]
    NeedsRestart { file: String, keys: String },
}

/// Re-reads the config file and puts what can change live in force: the
/// routes (with their compare, ID and write rules) and the report's gates.
/// Everything else (listeners, upstreams, mirror sizes, store, redaction,
/// admin, ID-map imports) takes a restart, and a reload that changes it is
/// refused rather than half applied.
pub struct Reloader {
    current: std::sync::Mutex<Config>,
    proxy: Arc<ProxyState>,
    store: OnceCell<Store>,
    admin: std::sync::OnceLock<std::sync::Weak<AdminState>>,
    instance: String,
}

impl crate::admin::Reload for Reloader {
    fn has_route(&self, name: &str) -> bool {
        Reloader::has_route(self, name)
    }

    fn route_names(&self) -> Vec<String> {
        Reloader::route_names(self)
    }

    fn reload(&self) -> crate::admin::ReloadFuture<'_> {
        Box::pin(async move { Reloader::reload(self).await.map_err(|err| err.to_string()) })
    }
}

impl Reloader {
    /// Whether the configuration in force has a route of this name.
    pub fn has_route(&self, name: &str) -> bool {
        self.lock().routes.iter().any(|route| route.name == name)
    }

    /// The names of the routes in force, for error messages.
    pub fn route_names(&self) -> Vec<String> {
        route_names(&self.lock())
    }

    pub async fn reload(&self) -> Result<crate::admin::ReloadSummary, ReloadError> {
        let path = self.lock().source.clone();
        let next = match Config::load(std::path::Path::new(&path)) {
            Ok(next) => next,
            Err(err) => {
                warn!(error = %err, "config reload refused; the old configuration stays");
                return Err(err.into());
            }
        };
        let changed = {
            let current = self.lock();
            let fixed = |config: &Config| {
                [
                    ("listen", format!("{:?}", config.listen)),
                    ("primary", format!("{:?}", config.primary)),
                    ("shadow", format!("{:?}", config.shadow)),
                    ("mirror", format!("{:?}", config.mirror)),
                    ("noise", format!("{:?}", config.noise)),
                    ("store", format!("{:?}", config.store)),
                    ("redact", format!("{:?}", config.redact)),
                    // The token itself was read from the environment at startup and stays.
                    ("admin", format!("{:?}", config.admin.token_env)),
                    ("idmap", format!("{:?}", config.idmap)),
                ]
            };
            fixed(&current)
                .into_iter()
                .zip(fixed(&next))
                .filter(|((_, before), (_, after))| before != after)
                .map(|((key, _), _)| format!("[{key}]"))
                .collect::<Vec<_>>()
        };
        if !changed.is_empty() {
            let err = ReloadError::NeedsRestart {
                file: path,
                keys: changed.join(", "),
            };
            warn!(error = %err, "config reload refused; the old configuration stays");
            return Err(err);
        }
        self.proxy.replace_routes(next.routes.clone());
        if let Some(admin) = self.admin.get().and_then(std::sync::Weak::upgrade) {
            *admin.readiness.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = next.readiness.clone();
        }
        let summary = crate::admin::ReloadSummary {
            fingerprint: next.fingerprint.clone(),
            routes: next.routes.len(),
        };
        let store_config = next.store.clone();
        *self.lock() = next;
        info!(config = %summary.fingerprint, routes = summary.routes, "configuration reloaded");
        let detail = serde_json::json!({
            "config": summary.fingerprint,
            "routes": summary.routes,
            "route_names": route_names(&self.lock()),
            "instance": self.instance,
        });
        let store = self
            .store
            .get_or_try_init(|| Store::open(&store_config.url, &store_config.options))
            .await;
        match store {
            Ok(store) => {
                if let Err(err) = store.add_event("config_reload", &detail, crate::clock::now_ms()).await {
                    warn!(error = %err, "the reload is in force but could not be recorded in the store");
                }
            }
            Err(err) => warn!(error = %err, "the reload is in force but could not be recorded in the store"),
        }
        Ok(summary)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Config> {
        self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// How often an instance looks for mode switches made elsewhere (another
/// replica, `cutover switch`): a switch reaches every instance within it.
const MODE_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Applies the store's `mode_switch` events, all of them at startup (so a
/// restart keeps the mode) and then as they appear, until shutdown.
async fn follow_modes(
    config: WriterConfig,
    modes: Arc<ModeTable>,
    metrics: Metrics,
    mut stopping: watch::Receiver<bool>,
) {
    let mut store: Option<Store> = None;
    loop {
        if store.is_none() {
            store = Store::open(&config.url, &config.options).await.ok();
        }
        if let Some(opened) = &store {
            match opened.events_after("mode_switch", modes.last_applied()).await {
                Ok(events) => {
                    for (id, _, detail) in events {
                        crate::admin::apply_switch(&modes, &metrics, id, &detail);
                    }
                }
                Err(err) => {
                    warn!(error = %err, "cannot read mode switches from the store");
                    store = None;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(MODE_POLL) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}

/// Switches back to `shadow` when the serving candidate breaks the
/// `[rollback]` rule, and records why (a `mode_switch` row every instance
/// follows, and a `rollback` row).
async fn watch_rollback(
    rule: crate::mode::RollbackRule,
    health: Arc<crate::mode::ServingHealth>,
    modes: Arc<ModeTable>,
    config: WriterConfig,
    metrics: Metrics,
    mut stopping: watch::Receiver<bool>,
) {
    let mut store: Option<Store> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        let current = modes.current();
        let mut switches: Vec<(Switch, String)> = Vec::new();
        for (route, why) in health.breaches(&rule) {
            if let Some(switch) = current.rollback_for(&route, format!("rollback: route {route}: {why}")) {
                if !switches.iter().any(|(known, _)| known.route == switch.route) {
                    switches.push((switch, route));
                }
            }
        }
        if switches.is_empty() {
            continue;
        }
        if store.is_none() {
            store = Store::open(&config.url, &config.options).await.ok();
        }
        let Some(opened) = &store else {
            warn!("the rollback rule fired but the store is unreachable; retrying");
            continue;
        };
        for (switch, route) in switches {
            let detail = serde_json::to_value(&switch).unwrap_or_default();
            let now = crate::clock::now_ms();
            match opened.add_event("mode_switch", &detail, now).await {
                Ok(id) => {
                    warn!(route = %route, reason = %switch.reason, "automatic rollback to shadow");
                    let _ = opened
                        .add_event(
                            "rollback",
                            &serde_json::json!({"route": route, "reason": switch.reason}),
                            now,
                        )
                        .await;
                    crate::admin::apply_switch(&modes, &metrics, id, &detail.to_string());
                    health.clear();
                }
                Err(err) => {
                    warn!(error = %err, "the rollback rule fired but the switch could not be recorded; retrying");
                    store = None;
                    break;
                }
            }
        }
    }
}

/// Runs one `[[sweep]]` once per `every` across every instance on the store
/// (whoever claims the run in the store does it), until shutdown.
async fn run_sweep(
    sweep: crate::mirror::Sweep,
    mirror: std::sync::Weak<crate::mirror::Mirror>,
    config: WriterConfig,
    mut stopping: watch::Receiver<bool>,
) {
    let every_ms = i64::try_from(sweep.every.as_millis()).unwrap_or(i64::MAX);
    // Look often enough to run close to on time; the claim keeps it to once per `every`.
    let look = (sweep.every / 4).clamp(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(30),
    );
    let mut store: Option<Store> = None;
    loop {
        if store.is_none() {
            store = Store::open(&config.url, &config.options).await.ok();
        }
        let claimed = match &store {
            Some(opened) => match opened.claim_sweep(&sweep.name, every_ms, crate::clock::now_ms()).await {
                Ok(claimed) => claimed,
                Err(err) => {
                    warn!(sweep = %sweep.name, error = %err, "cannot claim the sweep's run");
                    store = None;
                    false
                }
            },
            None => false,
        };
        if claimed {
            let Some(mirror) = mirror.upgrade() else { return };
            tokio::select! {
                run = mirror.sweep_once(&sweep) => info!(
                    sweep = %sweep.name, sent = run.sent, unmapped = run.unmapped, deferred = run.deferred, "sweep done"
                ),
                _ = stopping.wait_for(|stop| *stop) => return,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(look) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}

/// Brings in the ID pairs other instances on the store learned, every
/// second (a pair a request needs sooner is read through on the miss).
async fn follow_pairs(config: WriterConfig, ids: Arc<IdMap>, metrics: Metrics, mut stopping: watch::Receiver<bool>) {
    // Overlap the windows: instances' clocks and commits are not in lockstep.
    const OVERLAP_MS: i64 = 10_000;
    let mut since = crate::clock::now_ms() - OVERLAP_MS;
    let mut store: Option<Store> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        if store.is_none() {
            store = Store::open(&config.url, &config.options).await.ok();
        }
        let Some(opened) = &store else { continue };
        match opened.id_pairs_since(since).await {
            Ok(pairs) => {
                let mut added = false;
                for (pair, created_ms) in pairs {
                    since = since.max(created_ms - OVERLAP_MS);
                    added |= ids.insert(&pair).unwrap_or(false);
                }
                if added {
                    metrics.set_idmap_entries(&ids.counts());
                }
            }
            Err(_) => store = None,
        }
    }
}
