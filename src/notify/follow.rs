//! The notifier an instance runs in the background: once a second it adds
//! the notices each sink is owed and delivers the due ones it can claim;
//! once a minute one instance (whoever claims the run) judges the verdict
//! and records a `verdict` event when it changed.
//!
//! Must never: run on a request's path, or outlive the shutdown signal.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{sources, Delivery, Sink, Trigger};
use crate::metrics::{Metrics, NotifyOutcome};
use crate::report::{Readiness, Report, Span, Status};
use crate::store::{Attempt, SharedStore, Store, StoreError};

/// How often notices are looked for and delivered.
const LOOK: Duration = Duration::from_secs(1);
/// How often the verdict is judged for `verdict` notices.
const VERDICT_EVERY_MS: i64 = 60_000;
/// How far back an ordinary look reads again before a sink's newest
/// notice: rows of other instances reach the store a flush or two late.
const TAIL_MS: i64 = 30_000;
/// How far back every [`FULL_EVERY`]th look reads again: rows reach the
/// store late when a writer buffered through an outage (a notice is added
/// only once, whichever look finds it).
const OVERLAP_MS: i64 = 60 * 60 * 1000;
const FULL_EVERY: u64 = 60;
/// Deliveries per sink and look, so one sink's backlog cannot hold the rest.
const DELIVERIES_PER_LOOK: usize = 20;

/// What the notifier of one instance works with.
pub struct Notifier {
    pub sinks: Vec<Sink>,
    pub readiness: Readiness,
    /// This instance's name, for delivery leases.
    pub instance: String,
    pub readers: SharedStore,
    pub metrics: Metrics,
}

/// Runs until shutdown. A sink configured now begins at `started_ms` (the
/// instance's start): what comes after is notified, history before is not.
pub async fn follow(notifier: Notifier, started_ms: i64, mut stopping: watch::Receiver<bool>) {
    let delivery = match Delivery::new() {
        Ok(delivery) => delivery,
        Err(err) => {
            warn!(error = %err.without_url(), "cannot build the [[notify]] HTTP client; no notice will be sent");
            return;
        }
    };
    notifier
        .metrics
        .init_notify_sinks(notifier.sinks.iter().map(|sink| sink.name.as_str()));
    let judges_verdict = notifier.sinks.iter().any(|sink| sink.on.contains(&Trigger::Verdict));
    let mut baselines: BTreeMap<String, i64> = BTreeMap::new();
    for look in 0u64.. {
        tokio::select! {
            _ = tokio::time::sleep(LOOK) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        let Ok(store) = notifier.readers.get().await else {
            continue;
        };
        if judges_verdict {
            if let Err(err) = judge_verdict(store, &notifier.readiness).await {
                warn!(error = %err, "cannot judge the verdict for [[notify]]");
            }
        }
        let window = if look % FULL_EVERY == 0 { OVERLAP_MS } else { TAIL_MS };
        if let Err(err) = add_notices(store, &notifier.sinks, started_ms, window, &mut baselines).await {
            warn!(error = %err, "cannot add the [[notify]] sinks' notices");
        }
        for sink in &notifier.sinks {
            let delivering = deliver_due(store, sink, &delivery, &notifier);
            tokio::select! {
                done = delivering => if let Err(err) = done {
                    warn!(sink = %sink.name, error = %err, "cannot record a delivery");
                },
                _ = stopping.wait_for(|stop| *stop) => return,
            }
        }
    }
}

/// Adds each sink the notices it is owed: every occurrence of a trigger it
/// listens to, from `window` before its newest notice on, never from before
/// its baseline. Each trigger is read once for every sink.
async fn add_notices(
    store: &Store,
    sinks: &[Sink],
    started_ms: i64,
    window: i64,
    baselines: &mut BTreeMap<String, i64>,
) -> Result<(), StoreError> {
    let mut since = BTreeMap::new();
    for sink in sinks {
        let baseline = match baselines.get(&sink.name) {
            Some(at) => *at,
            None => {
                let at = store.start_sink(&sink.name, started_ms).await?;
                baselines.insert(sink.name.clone(), at);
                at
            }
        };
        let latest = store.latest_notice(&sink.name).await?.unwrap_or(baseline);
        since.insert(sink.name.as_str(), baseline.max(latest.saturating_sub(window)));
    }
    for trigger in Trigger::ALL {
        let listening: Vec<&Sink> = sinks.iter().filter(|sink| sink.on.contains(&trigger)).collect();
        let Some(from) = listening.iter().map(|sink| since[sink.name.as_str()]).min() else {
            continue;
        };
        let found = sources::scan(store, trigger, from).await?;
        let now = crate::clock::now_ms();
        for sink in listening {
            let sink_since = since[sink.name.as_str()];
            for notice in found.iter().filter(|notice| notice.source_ms >= sink_since) {
                if store.add_notice(&sink.name, notice, now).await? {
                    info!(sink = %sink.name, subject = %notice.subject, "notice added");
                }
            }
        }
    }
    Ok(())
}

/// Delivers the sink's due notices this instance can claim.
async fn deliver_due(store: &Store, sink: &Sink, delivery: &Delivery, notifier: &Notifier) -> Result<(), StoreError> {
    let lease_ms = i64::try_from((sink.timeout + Duration::from_secs(5)).as_millis()).unwrap_or(i64::MAX);
    let instance = notifier.instance.as_str();
    for _ in 0..DELIVERIES_PER_LOOK {
        let now = crate::clock::now_ms();
        let Some(notice) = store.claim_notice(&sink.name, instance, now, lease_ms).await? else {
            return Ok(());
        };
        let attempts = u32::try_from(notice.attempts).unwrap_or(u32::MAX);
        let attempt = delivery.attempt(sink, &notice.payload, attempts, now).await;
        let outcome = match &attempt {
            Attempt::Delivered { status } => {
                info!(sink = %sink.name, subject = %notice.subject, status, "notice delivered");
                NotifyOutcome::Delivered
            }
            Attempt::Retry { error, .. } => {
                warn!(sink = %sink.name, subject = %notice.subject, error = %error, "notice not delivered; retrying");
                NotifyOutcome::Retried
            }
            Attempt::Failed { error, .. } => {
                warn!(sink = %sink.name, subject = %notice.subject, error = %error, "notice given up");
                NotifyOutcome::Failed
            }
        };
        notifier.metrics.record_notify(&sink.name, outcome);
        store
            .settle_notice(notice.id, instance, &attempt, crate::clock::now_ms())
            .await?;
    }
    Ok(())
}

/// Once a minute across every instance: the verdict over the default
/// window, recorded as a `verdict` event when it differs from the last one.
async fn judge_verdict(store: &Store, readiness: &Readiness) -> Result<(), StoreError> {
    let now = crate::clock::now_ms();
    if !store.claim_sweep("notify-verdict", VERDICT_EVERY_MS, now).await? {
        return Ok(());
    }
    let report = Report::build(store, Span::since(crate::report::DEFAULT_WINDOW, now), readiness, now).await?;
    let verdict = report.verdict.label();
    let last = store.events_after("verdict", 0).await?.pop();
    let previous = last
        .as_ref()
        .and_then(|(_, _, detail)| serde_json::from_str::<serde_json::Value>(detail).ok())
        .and_then(|detail| detail["verdict"].as_str().map(str::to_string));
    if previous.as_deref() == Some(verdict) {
        return Ok(());
    }
    let why = report
        .gates
        .iter()
        .filter(|gate| gate.status != Status::Pass)
        .map(|gate| {
            format!(
                "{} {}: {}",
                gate.gate,
                gate.route.as_deref().unwrap_or(""),
                gate.measured
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let detail = json!({"verdict": verdict, "previous": previous, "why": why});
    let after = last.map_or(0, |(id, _, _)| id);
    store.add_event_after("verdict", &detail, after, now).await?;
    Ok(())
}
