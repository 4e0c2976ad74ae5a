//! What an instance follows in the background until shutdown: mode
//! switches made elsewhere, the open drift (every instance's, and what
//! `cutover drift` replayed or resolved), the `[rollback]` rule, the
//! `[rollout]` ramps, `[[sweep]]` runs and ID pairs other instances learned.
//!
//! Must never: run on a request's path, or outlive the shutdown signal.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Config;
use crate::idmap::IdMap;
use crate::metrics::Metrics;
use crate::mirror::Mirror;
use crate::mode::{ModeTable, Switch};
use crate::proxy::ProxyState;
use crate::store::SharedStore;

/// Starts every follower this config asks for; each stops at shutdown.
pub(super) fn spawn(
    config: &Config,
    state: &Arc<ProxyState>,
    mirror: &Arc<Mirror>,
    ids: &Arc<IdMap>,
    metrics: &Metrics,
    readers: &SharedStore,
    shutdown: &watch::Sender<bool>,
) {
    tokio::spawn(follow_pairs(
        readers.clone(),
        Arc::clone(ids),
        metrics.clone(),
        shutdown.subscribe(),
    ));
    for sweep in config.sweeps.clone() {
        tokio::spawn(run_sweep(
            sweep,
            Arc::downgrade(mirror),
            readers.clone(),
            shutdown.subscribe(),
        ));
    }
    if let Some(rule) = config.rollback.clone() {
        tokio::spawn(watch_rollback(
            rule,
            Arc::clone(&state.health),
            Arc::clone(&state.modes),
            readers.clone(),
            metrics.clone(),
            shutdown.subscribe(),
        ));
    }
    let ramps = config.ramps();
    if !ramps.is_empty() {
        tokio::spawn(super::rollout::drive(
            ramps,
            config.readiness.clone(),
            Arc::clone(&state.modes),
            readers.clone(),
            metrics.clone(),
            shutdown.subscribe(),
        ));
    }
    tokio::spawn(follow_modes(
        readers.clone(),
        Arc::clone(&state.modes),
        metrics.clone(),
        shutdown.subscribe(),
    ));
}

/// How often an instance looks for mode switches made elsewhere (another
/// replica, `cutover switch`): a switch reaches every instance within it.
/// The open-drift gauge is read from the store as often.
const MODE_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Applies the store's `mode_switch` events, all of them at startup (so a
/// restart keeps the mode) and then as they appear, until shutdown; and
/// sets `cutover_drift_open` from the ledger, the one count the API, `drift
/// list` and the report read too (drift found by a read-back, by another
/// replica, or settled by the CLI included).
async fn follow_modes(
    readers: SharedStore,
    modes: Arc<ModeTable>,
    metrics: Metrics,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        match readers.get().await {
            Ok(store) => {
                match store.events_after("mode_switch", modes.last_applied()).await {
                    Ok(events) => {
                        for (id, _, detail) in events {
                            crate::admin::apply_switch(&modes, &metrics, id, &detail);
                        }
                    }
                    Err(err) => warn!(error = %err, "cannot read mode switches from the store"),
                }
                if let Ok(open) = store.ledger_count(crate::ledger::LedgerState::Drift).await {
                    metrics.drift_open().set(open);
                }
            }
            Err(err) => warn!(error = %err, "cannot open the store to read mode switches"),
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
    readers: SharedStore,
    metrics: Metrics,
    mut stopping: watch::Receiver<bool>,
) {
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
        let Ok(opened) = readers.get().await else {
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
    readers: SharedStore,
    mut stopping: watch::Receiver<bool>,
) {
    let every_ms = i64::try_from(sweep.every.as_millis()).unwrap_or(i64::MAX);
    // Look often enough to run close to on time; the claim keeps it to once per `every`.
    let look = (sweep.every / 4).clamp(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(30),
    );
    loop {
        let claimed = match readers.get().await {
            Ok(store) => match store.claim_sweep(&sweep.name, every_ms, crate::clock::now_ms()).await {
                Ok(claimed) => claimed,
                Err(err) => {
                    warn!(sweep = %sweep.name, error = %err, "cannot claim the sweep's run");
                    false
                }
            },
            Err(_) => false,
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
async fn follow_pairs(readers: SharedStore, ids: Arc<IdMap>, metrics: Metrics, mut stopping: watch::Receiver<bool>) {
    // Overlap the windows: instances' clocks and commits are not in lockstep.
    const OVERLAP_MS: i64 = 10_000;
    let mut since = crate::clock::now_ms() - OVERLAP_MS;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        let Ok(store) = readers.get().await else { continue };
        match store.id_pairs_since(since).await {
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
            Err(err) => tracing::debug!(error = %err, "cannot read the ID pairs other instances learned"),
        }
    }
}
