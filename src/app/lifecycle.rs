//! An instance's life as the store records it: loading the ID map and the
//! ledger at start (retrying until the store answers), the `start` and
//! `stop` events, who this instance is across restarts, and stopping the
//! store writer within the grace period.
//!
//! Must never: report a clean stop that left work undone.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::Config;
use crate::idmap::{IdMap, IdPair};
use crate::metrics::Metrics;
use crate::mirror::Mirror;
use crate::store::{LedgerState, SharedStore, Store, Writer, WriterConfig};

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

/// What the `start` event says of this run.
pub(super) struct Lifecycle {
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

impl Lifecycle {
    pub(super) fn of(config: &Config, instance: &str) -> Lifecycle {
        Lifecycle {
            fingerprint: config.fingerprint.clone(),
            instance: instance.to_string(),
            route_names: route_names(config),
            started_ms: crate::clock::now_ms(),
        }
    }
}

pub(super) fn route_names(config: &Config) -> Vec<String> {
    config.routes.iter().map(|route| route.name.clone()).collect()
}

/// Brings the in-memory state up from the store, retrying until it answers:
/// the ID pairs learned before (and the imported ones, persisted), the
/// entities whose writes are held behind drift, the open-drift gauge; then
/// records the start as an `events` row. Readiness waits for it.
pub(super) async fn load_from_store(
    readers: SharedStore,
    lifecycle: Lifecycle,
    ids: Arc<IdMap>,
    imported: Vec<IdPair>,
    drifted: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    metrics: Metrics,
    ready: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        match load_once(&readers, &lifecycle, &ids, &imported, &drifted, &metrics).await {
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
    readers: &SharedStore,
    lifecycle: &Lifecycle,
    ids: &IdMap,
    imported: &[IdPair],
    drifted: &std::sync::Mutex<std::collections::HashSet<String>>,
    metrics: &Metrics,
) -> Result<(), crate::store::StoreError> {
    let store = readers.get().await?;
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
pub(super) fn instance_name(config: &Config) -> String {
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

/// What a stop takes down, in the order [`stop_in_order`] does it.
pub(super) struct Stopping {
    pub(super) proxy_task: JoinHandle<bool>,
    pub(super) mirror: Arc<Mirror>,
    pub(super) workers: crate::mirror::Workers,
    pub(super) writer: Arc<Writer>,
    pub(super) writer_task: JoinHandle<crate::store::Unwritten>,
    pub(super) admin_stop: watch::Sender<bool>,
    pub(super) admin_task: JoinHandle<bool>,
    pub(super) grace: std::time::Duration,
    pub(super) metrics: Metrics,
    pub(super) store: WriterConfig,
    pub(super) instance: String,
}

/// Runs once the proxy stops accepting: finish in-flight requests, drain
/// the mirror, stop the comparison workers, write what is queued for the
/// store (all within the grace period), stop the admin listener, record
/// the stop.
pub(super) async fn stop_in_order(stopping: Stopping) -> ShutdownReport {
    let Stopping {
        proxy_task,
        mirror,
        workers,
        writer,
        writer_task,
        admin_stop,
        admin_task,
        grace,
        metrics,
        store,
        instance,
    } = stopping;
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
    let unwritten = stop_writer(&writer, writer_task, store_grace, &metrics).await;
    let _ = admin_stop.send(true);
    let _ = admin_task.await;
    let report = ShutdownReport {
        connections_cut: !finished,
        exchanges_unrecorded,
        unwritten,
    };
    record_stop(&store, &instance, &report).await;
    warn_of_work_left(&report);
    report
}

/// What the grace period left undone, in the log (or that the stop was clean).
fn warn_of_work_left(report: &ShutdownReport) {
    let unwritten = report.unwritten;
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
}
