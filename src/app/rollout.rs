//! Drives the ramps of `[rollout]` and `[route.rollout]`: where each ramp
//! stands is the last `rollout_step` event of its scope, so every replica
//! reads the same state and a restart resumes it. Every few seconds each
//! instance judges the share's own traffic since the step began with the
//! readiness gates; the first replica to record a decision (a
//! `rollout_step` row claimed after the last one) switches, the others see
//! the row and the switch. A ramp whose modes no longer serve its step (a
//! manual switch, a `[rollback]`) is left alone.
//!
//! Must never: run on a request's path, step twice for one decision, or
//! act on a ramp someone switched away from.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::mode::{Decision, Judged, ModeTable, Modes, Rollout};
use crate::report::{Readiness, Span, Status};
use crate::store::{SharedStore, Store, StoreError};

/// How often a ramp is judged.
const TICK: Duration = Duration::from_secs(1);

/// A ramp: its scope (a route, or every route) and its steps.
pub type Ramp = (Option<String>, Rollout);

/// Where a ramp stands, from its last `rollout_step` event.
#[derive(Debug, Clone, PartialEq)]
pub struct RampState {
    /// That event's id and time.
    pub id: i64,
    pub since_ms: i64,
    /// The step it is at; `None` once it stepped back off the candidate.
    pub step: Option<usize>,
    pub action: String,
    pub reason: String,
    /// Whether the modes in force still serve that step.
    pub in_force: bool,
}

/// The scope's last `rollout_step` among `events` (id, at_ms, detail), oldest first.
fn state_of(ramp: &Ramp, events: &[(i64, i64, String)], modes: &Modes) -> Option<RampState> {
    let (scope, rollout) = ramp;
    events.iter().rev().find_map(|(id, at_ms, detail)| {
        let detail: Value = serde_json::from_str(detail).ok()?;
        if detail["route"].as_str() != scope.as_deref() {
            return None;
        }
        let step = detail["step"].as_u64().and_then(|step| usize::try_from(step).ok());
        let (mode, share) = match scope {
            Some(route) => (modes.for_route(route), modes.share_of(route)),
            None => (modes.global, modes.global_share.as_ref()),
        };
        Some(RampState {
            id: *id,
            since_ms: *at_ms,
            step,
            action: detail["action"].as_str().unwrap_or_default().to_string(),
            reason: detail["reason"].as_str().unwrap_or_default().to_string(),
            in_force: step.is_some() && rollout.step_in_force(mode, share) == step,
        })
    })
}

/// Where each ramp stands, read from the store (`None`: not started).
pub async fn states(store: &Store, ramps: &[Ramp], modes: &Modes) -> Result<Vec<Option<RampState>>, StoreError> {
    let events = store.events_after("rollout_step", 0).await?;
    Ok(ramps.iter().map(|ramp| state_of(ramp, &events, modes)).collect())
}

/// The `rollout_step` row of a step: where the ramp went and why.
pub fn step_detail(scope: Option<&str>, rollout: &Rollout, step: Option<usize>, action: &str, reason: &str) -> Value {
    json!({
        "route": scope,
        "step": step,
        "percent": step.map_or(0.0, |at| rollout.percent(at)),
        "action": action,
        "reason": reason,
    })
}

/// What the gates said, and the failing or waiting ones in words.
fn judged(gates: &[crate::report::Gate]) -> (Judged, String) {
    let words = |status: Status| {
        gates
            .iter()
            .filter(|gate| gate.status == status)
            .map(|gate| {
                format!(
                    "{} {}: {} (needs {})",
                    gate.gate,
                    gate.route.as_deref().unwrap_or(""),
                    gate.measured,
                    gate.threshold
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    if gates.iter().any(|gate| gate.status == Status::Fail) {
        (Judged::Breached, words(Status::Fail))
    } else if gates.iter().any(|gate| gate.status == Status::NotEnoughData) {
        (Judged::TooLittle, words(Status::NotEnoughData))
    } else {
        (Judged::Holds, "every gate passes".into())
    }
}

/// Judges every ramp once a tick until shutdown.
pub(super) async fn drive(
    ramps: Vec<Ramp>,
    readiness: Readiness,
    modes: Arc<ModeTable>,
    readers: SharedStore,
    metrics: Metrics,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        let Ok(store) = readers.get().await else {
            continue;
        };
        if let Err(err) = judge_once(&ramps, &readiness, &modes, store, &metrics).await {
            warn!(error = %err, "cannot judge the rollout from the store; retrying");
        }
    }
}

/// One look at every ramp: the first decision recorded ends the look (the
/// state it was made on has changed).
async fn judge_once(
    ramps: &[Ramp],
    readiness: &Readiness,
    modes: &ModeTable,
    store: &Store,
    metrics: &Metrics,
) -> Result<(), StoreError> {
    let events = store.events_after("rollout_step", 0).await?;
    let last_id = events.last().map_or(0, |(id, _, _)| *id);
    let current = modes.current();
    let now = crate::clock::now_ms();
    for ramp in ramps {
        let (scope, rollout) = ramp;
        let Some(state) = state_of(ramp, &events, &current).filter(|state| state.in_force) else {
            continue;
        };
        let Some(step) = state.step else {
            continue;
        };
        let span = Span {
            from_ms: state.since_ms,
            to_ms: now + 1,
        };
        let routes: Vec<String> = scope.iter().cloned().collect();
        let gates = crate::report::share_gates(store, &routes, span, readiness).await?;
        let (judged, why) = judged(&gates);
        let held = Duration::from_millis(u64::try_from(now - state.since_ms).unwrap_or(0));
        let (to, action, reason) = match rollout.decide(step, held, judged) {
            Decision::Hold => continue,
            Decision::Advance { to } => (Some(to), "advance", format!("held {} s with {why}", held.as_secs())),
            Decision::StepBack { to } => (to, "back", format!("breach at {}%: {why}", rollout.percent(step))),
        };
        let detail = step_detail(scope.as_deref(), rollout, to, action, &reason);
        let Some(_) = store.add_event_after("rollout_step", &detail, last_id, now).await? else {
            return Ok(());
        };
        let switch = match rollout.switch_to(scope.clone(), to, format!("rollout: {reason}")) {
            Ok(switch) => switch,
            Err(err) => {
                warn!(error = %err, "a rollout step could not be made into a switch");
                return Ok(());
            }
        };
        let switch_detail = serde_json::to_value(&switch).unwrap_or_default();
        let id = store.add_event("mode_switch", &switch_detail, now).await?;
        crate::admin::apply_switch(modes, metrics, id, &switch_detail.to_string());
        let route = scope.as_deref().unwrap_or("(all)");
        match to {
            Some(at) => info!(route, action, percent = rollout.percent(at), %reason, "rollout step"),
            None => warn!(route, %reason, "rollout stepped back to shadow"),
        }
        return Ok(());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mode::{Mode, OnBreach, ShareKey, Switch};

    fn ramp(scope: Option<&str>) -> Ramp {
        (
            scope.map(str::to_string),
            Rollout {
                steps: vec![500, 2500, 10_000],
                hold: Duration::from_secs(60),
                key: ShareKey::ClientIp,
                mode: Mode::Candidate,
                on_breach: OnBreach::Previous,
            },
        )
    }

    #[test]
    fn a_ramp_stands_at_its_scopes_last_step_while_the_modes_serve_it() {
        let routed = ramp(Some("r"));
        let detail =
            |scope: Option<&str>, step: Option<usize>| step_detail(scope, &routed.1, step, "advance", "").to_string();
        let events = vec![
            (1, 10, detail(Some("r"), Some(0))),
            (2, 20, detail(None, Some(0))),
            (3, 30, detail(Some("r"), Some(1))),
        ];
        let mut modes = Modes::default();
        assert_eq!(state_of(&ramp(Some("other")), &events, &modes), None, "not started");
        let state = state_of(&routed, &events, &modes).unwrap();
        assert_eq!(
            (state.id, state.since_ms, state.step, state.in_force),
            (3, 30, Some(1), false)
        );
        modes.apply(&routed.1.switch_to(Some("r".into()), Some(1), "rollout".into()).unwrap());
        assert!(state_of(&routed, &events, &modes).unwrap().in_force);
        modes.apply(&Switch::new(Mode::Shadow, Some("r".into()), None).unwrap());
        assert!(
            !state_of(&routed, &events, &modes).unwrap().in_force,
            "a switch away interrupts it"
        );
        assert_eq!(state_of(&ramp(None), &events, &modes).unwrap().id, 2);
    }

    #[test]
    fn a_failing_gate_is_a_breach_and_a_missing_figure_holds() {
        let gate = |status| crate::report::Gate {
            gate: "match_rate".into(),
            route: Some("r".into()),
            measured: "90%".into(),
            threshold: "≥ 99%".into(),
            status,
            next_step: None,
        };
        assert_eq!(judged(&[gate(Status::Pass)]).0, Judged::Holds);
        assert_eq!(
            judged(&[gate(Status::Pass), gate(Status::NotEnoughData)]).0,
            Judged::TooLittle
        );
        let (breached, why) = judged(&[gate(Status::NotEnoughData), gate(Status::Fail)]);
        assert_eq!(
            (breached, why.as_str()),
            (Judged::Breached, "match_rate r: 90% (needs ≥ 99%)")
        );
    }
}
