//! Wiring: starts one cutover instance (proxy listener, admin listener,
//! mirror and comparison workers) from a validated config, and stops it in
//! order: stop accepting, finish in-flight requests, drain the mirror queue
//! (all within `[listen] shutdown_grace`), then stop the admin listener.
//!
//! Must never: hold request logic; that lives in proxy and mirror.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::admin::{AdminState, DriftControl};
use crate::config::Config;
use crate::idmap::{parse_import, IdMap, IdPair, ImportFormat, ImportReport};
use crate::metrics::{Metrics, MetricsError};
use crate::mirror::{Mirror, MirrorError, Recording};
use crate::mode::ModeTable;
use crate::proxy::{self, ProxyState};
use crate::store::{SharedStore, Writer};
use crate::upstream::{Upstream, UpstreamError};
use crate::{admin, server};

mod followers;
mod lifecycle;
mod reload;
pub mod rollout;

pub use lifecycle::ShutdownReport;
pub use reload::{ReloadError, Reloader};

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

/// A listener on `addr`, and the address it got (the port, when `addr` asked for 0).
async fn bind(key: &'static str, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let bind_error = |source| StartError::Bind { key, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

/// Starts an instance: both listeners are bound when this returns. In
/// order: the upstreams and the ID map, the store writer and the mirror,
/// loading from the store (in the background), the listeners, the
/// followers, the proxy, the admin API, and the task that stops them all.
/// (Longer than most functions here: it is the one place the order of the
/// wiring is written down, each step a call or two, read top to bottom.)
pub async fn start(config: Config) -> Result<Running, StartError> {
    start_as(config, crate::exchange::Source::Traffic).await
}

/// Starts an instance for `cutover replay`: its listeners on loopback
/// ports of their own (only the replay knows them), every request it
/// proxies recorded as source `replay`, and nothing that acts on the
/// deployment beside recording (sweeps, rollback, ramps, notifications).
pub async fn start_replaying(mut config: Config) -> Result<Running, StartError> {
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.listen.proxy = loopback;
    config.listen.admin = loopback;
    config.sweeps.clear();
    config.rollback = None;
    config.rollout = None;
    config.route_rollouts.clear();
    config.notify.clear();
    start_as(config, crate::exchange::Source::Replay).await
}

async fn start_as(config: Config, source: crate::exchange::Source) -> Result<Running, StartError> {
    let metrics = Metrics::new()?;
    // A pooled client per backend for the side that serves, and one for
    // the mirror that holds at most `mirror.max_in_flight` connections
    // (clones share a pool).
    let primary = Upstream::new(&config.primary)?;
    let shadow = Upstream::new(&config.shadow)?;
    let mirrored = [
        Upstream::with_connection_limit(&config.primary, config.mirror.max_in_flight)?,
        Upstream::with_connection_limit(&config.shadow, config.mirror.max_in_flight)?,
    ];
    let ids = Arc::new(IdMap::new(config.idmap.canonical));
    let imported = import_id_maps(&config, &ids).map_err(|err| *err)?;
    metrics.set_idmap_entries(&ids.counts());
    metrics.set_backends(primary.name(), shadow.name());
    let (writer, writer_task) = Writer::start(config.store.clone(), metrics.clone());
    // Every reader of this instance shares one pool; the writer has its own.
    let readers = SharedStore::new(&config.store.url, &config.store.options);
    // A replay is an instance of its own, never taken for a serve of the same config.
    let instance = match source {
        crate::exchange::Source::Replay => format!("replay {}", lifecycle::instance_name(&config)),
        _ => lifecycle::instance_name(&config),
    };
    let (mirror, workers) = start_mirror(
        &config,
        mirrored,
        &metrics,
        (&writer, source),
        &readers,
        &ids,
        &instance,
    )?;
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn(lifecycle::load_from_store(
        readers.clone(),
        lifecycle::Lifecycle::of(&config, &instance),
        Arc::clone(&ids),
        imported,
        mirror.drifted(),
        metrics.clone(),
        Arc::clone(&ready),
    ));
    let (proxy_listener, proxy_addr) = bind("listen.proxy", config.listen.proxy).await?;
    let (admin_listener, admin_addr) = bind("listen.admin", config.listen.admin).await?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let modes = ModeTable::new();
    let state = Arc::new(
        ProxyState::new(
            config.routes.clone(),
            primary.clone(),
            shadow.clone(),
            Arc::clone(&mirror),
            Arc::clone(&modes),
            metrics.clone(),
        )
        .with_body_read_timeout(config.listen.body_read_timeout),
    );
    followers::spawn(&config, &state, &mirror, &ids, &metrics, &readers, &shutdown_tx);
    if !config.notify.is_empty() {
        let notifier = crate::notify::Notifier {
            sinks: config.notify.clone(),
            readiness: config.readiness.clone(),
            instance: instance.clone(),
            readers: readers.clone(),
            metrics: metrics.clone(),
        };
        tokio::spawn(crate::notify::follow(
            notifier,
            crate::clock::now_ms(),
            shutdown_tx.subscribe(),
        ));
    }
    for unreachable in config.routes.unreachable() {
        warn!(
            route = %unreachable.route,
            covered_by = %unreachable.covered_by,
            "a route can never match: an earlier route takes every request it would"
        );
    }
    let grace = config.listen.shutdown_grace;
    let (proxy_limits, admin_limits) = connection_limits(&config, open_files_limit());
    let reload_target = Arc::clone(&state);
    let proxy_task = tokio::spawn(server::serve(
        proxy_listener,
        move |peer, request| proxy::handle(Arc::clone(&state), peer, request),
        shutdown_rx,
        proxy_limits,
        grace,
        Some(metrics.clone()),
    ));
    let routes_now = Arc::clone(&reload_target);
    let rechecker = crate::recheck::Rechecker {
        primary: primary.clone(),
        shadow: shadow.clone(),
        ids: Arc::clone(&ids),
        routes: Arc::new(move || routes_now.routes()),
        primary_headers: config.primary.replay_headers.clone(),
        shadow_headers: config.shadow.replay_headers.clone(),
        redactor: config.redact.clone(),
        max_body: config.mirror.max_body,
        decode_limit: config.mirror.max_decoded,
    };
    let mut admin_state = admin_state(&config, &metrics, &mirror, &ids, &readers, [primary, shadow]);
    admin_state.recheck = Some(crate::admin::RecheckControl {
        rechecker,
        running: tokio::sync::Mutex::new(()),
    });
    admin_state.loaded = Some(ready);
    admin_state.writer = Some(Arc::clone(&writer));
    admin_state.modes = Some(Arc::clone(&modes));
    let reloader = Arc::new(Reloader::new(config.clone(), reload_target, readers, instance.clone()));
    admin_state.reloader = Some(Arc::clone(&reloader) as Arc<dyn crate::admin::Reload>);
    let admin_state = Arc::new(admin_state);
    reloader.tell_admin(&admin_state);
    tokio::spawn(admin::follow_verdict(Arc::clone(&admin_state), shutdown_tx.subscribe()));
    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
    let admin_task = tokio::spawn(server::serve(
        admin_listener,
        move |peer, request| admin::handle(Arc::clone(&admin_state), peer, request),
        admin_stop_rx,
        admin_limits,
        grace,
        Some(metrics.clone()),
    ));
    let stopped = tokio::spawn(lifecycle::stop_in_order(lifecycle::Stopping {
        proxy_task,
        mirror,
        workers,
        writer,
        writer_task,
        admin_stop: admin_stop_tx,
        admin_task,
        grace,
        metrics: metrics.clone(),
        store: config.store.clone(),
        instance,
    }));
    Ok(Running {
        proxy_addr,
        admin_addr,
        reloader,
        metrics,
        shutdown: shutdown_tx,
        stopped,
    })
}

/// The mirror and its comparison workers, recording through `writer`.
fn start_mirror(
    config: &Config,
    [primary, shadow]: [Upstream; 2],
    metrics: &Metrics,
    (writer, source): (&Arc<Writer>, crate::exchange::Source),
    readers: &SharedStore,
    ids: &Arc<IdMap>,
    instance: &str,
) -> Result<(Arc<Mirror>, crate::mirror::Workers), MirrorError> {
    Mirror::start(
        config.mirror.clone(),
        config.noise.clone(),
        primary,
        shadow,
        config.shadow.rate_limit,
        metrics.clone(),
        Recording {
            writer: Arc::clone(writer),
            redactor: config.redact.clone(),
            samples_per_group: config.store.options.samples_per_group,
            ids: Arc::clone(ids),
            write_tries: config.shadow.write_tries,
            store: readers.clone(),
            instance: instance.to_string(),
            source,
        },
    )
}

/// `[idmap] import`: every file into the map; the pairs it added, to be
/// persisted once the store answers. (The error is boxed: it is large, and
/// the happy path should not carry it.)
fn import_id_maps(config: &Config, ids: &IdMap) -> Result<Vec<IdPair>, Box<StartError>> {
    let mut imported: Vec<IdPair> = Vec::new();
    for path in &config.idmap.import {
        let file = path.display().to_string();
        let report = import_file(ids, path).map_err(|source| {
            Box::new(StartError::Import {
                file: file.clone(),
                source,
            })
        })?;
        for problem in &report.problems {
            warn!(file = %file, line = problem.line, problem = %problem.message, "ID-mapping row skipped");
        }
        info!(file = %file, added = report.added.len(), known = report.known, skipped = report.problems.len(), "ID mapping imported");
        imported.extend(report.added);
    }
    Ok(imported)
}

/// What the admin API serves from, with the drift replay it can start.
fn admin_state(
    config: &Config,
    metrics: &Metrics,
    mirror: &Mirror,
    ids: &Arc<IdMap>,
    readers: &SharedStore,
    [primary, shadow]: [Upstream; 2],
) -> AdminState {
    let primary_address = (
        config.primary.url.host_str().unwrap_or_default().to_string(),
        config.primary.url.port_or_known_default().unwrap_or(80),
    );
    let mut admin_state = AdminState::new(
        metrics.clone(),
        config.admin.token.clone(),
        config.admin.token_env.clone(),
        readers.clone(),
        primary_address,
    );
    admin_state.drift = Some(DriftControl {
        shadow,
        primary,
        ids: Arc::clone(ids),
        routes: config.routes.clone(),
        replay_headers: config.shadow.replay_headers.clone(),
        seal: config.redact.seal().cloned(),
        drifted: mirror.drifted(),
        replaying: tokio::sync::Mutex::new(()),
    });
    admin_state.readiness = std::sync::RwLock::new(config.readiness.clone());
    // The report's next steps pass the file this instance was started from.
    admin_state.commands = if std::path::Path::new(&config.source).is_file() {
        crate::report::Commands::config(&config.source)
    } else {
        crate::report::Commands::store(&config.store.url)
    };
    admin_state
}
