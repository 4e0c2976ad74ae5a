//! `cutover rollout start|status`: the ramps the config's `[rollout]` and
//! `[route.rollout]` sections describe, started and read through the store.

use anyhow::Context;

use super::{runtime, StoreArgs};
use crate::app::rollout::{states, step_detail, Ramp, RampState};
use crate::mode::{ModeTable, Modes, Rollout};
use crate::store::Store;

/// The config's ramps; an error names the section to add when there are none.
fn ramps(at: &StoreArgs) -> anyhow::Result<(crate::config::Config, Vec<Ramp>)> {
    let config = at
        .config()?
        .context("a ramp is configured in [rollout] or [route.rollout]: pass -c CONFIG")?;
    let ramps = config.ramps();
    anyhow::ensure!(
        !ramps.is_empty(),
        "{}: no [rollout] or [route.rollout] section: add one, e.g. [rollout] steps = [\"1%\", \"5%\", \"25%\", \"100%\"] hold = \"30m\"",
        config.source
    );
    Ok((config, ramps))
}

/// The modes in force, from the store's `mode_switch` rows.
async fn modes_in_force(store: &Store) -> anyhow::Result<Modes> {
    let table = ModeTable::new();
    for (id, _, detail) in store.events_after("mode_switch", 0).await? {
        if let Ok(switch) = serde_json::from_str(&detail) {
            table.apply_event(id, &switch);
        }
    }
    Ok(table.current())
}

/// `rollout start [--route R]`: the first step as a switch, and its `rollout_step` row.
pub(super) fn start(route: Option<String>, force: bool, at: &StoreArgs) -> anyhow::Result<()> {
    let (config, ramps) = ramps(at)?;
    let Some((_, rollout)) = ramps.iter().find(|(scope, _)| *scope == route) else {
        let scopes: Vec<String> = ramps
            .iter()
            .map(|(scope, _)| {
                scope
                    .as_ref()
                    .map_or("--route omitted ([rollout])".into(), |r| format!("--route {r}"))
            })
            .collect();
        anyhow::bail!(
            "{}: no ramp for {}; the ramps are: {}",
            config.source,
            scope_name(route.as_deref()),
            scopes.join(", ")
        );
    };
    let switch = rollout.switch_to(route.clone(), Some(0), "rollout: start".into())?;
    runtime()?.block_on(async {
        let store = at.open(Some(&config)).await?;
        let recorded = async {
            let switch = super::evidence::record_switch(&store, Some(&config), switch, force).await?;
            let detail = step_detail(route.as_deref(), rollout, Some(0), "start", "started by hand");
            store.add_event("rollout_step", &detail, crate::clock::now_ms()).await?;
            anyhow::Ok(switch)
        }
        .await;
        store.close().await;
        recorded?;
        say!(
            "{}: rollout started at {}% by {}; steps {}, each held {} s while the gates pass on the share's traffic",
            scope_name(route.as_deref()),
            rollout.percent(0),
            rollout.key,
            steps(rollout),
            rollout.hold.as_secs()
        );
        Ok(())
    })
}

/// `rollout status`: each ramp's step, since when and why.
pub(super) fn status(at: &StoreArgs) -> anyhow::Result<()> {
    let (config, ramps) = ramps(at)?;
    runtime()?.block_on(async {
        let store = at.open(Some(&config)).await?;
        let read = async {
            let modes = modes_in_force(&store).await?;
            anyhow::Ok(states(&store, &ramps, &modes).await?)
        }
        .await;
        store.close().await;
        for ((scope, rollout), state) in ramps.iter().zip(read?) {
            say!(
                "{}: {}",
                scope_name(scope.as_deref()),
                describe(rollout, state.as_ref())
            );
        }
        Ok(())
    })
}

fn scope_name(route: Option<&str>) -> String {
    route.map_or("all routes".into(), |route| format!("route {route}"))
}

fn steps(rollout: &Rollout) -> String {
    (0..rollout.steps.len())
        .map(|at| format!("{}%", rollout.percent(at)))
        .collect::<Vec<_>>()
        .join(" → ")
}

/// One ramp's state in a line.
fn describe(rollout: &Rollout, state: Option<&RampState>) -> String {
    let Some(state) = state else {
        return format!(
            "not started (steps {}); `cutover rollout start` starts it",
            steps(rollout)
        );
    };
    let since = crate::clock::rfc3339(state.since_ms);
    match state.step {
        None => format!("stepped back to shadow at {since}: {}", state.reason),
        Some(step) if !state.in_force => format!(
            "interrupted: step {} of {} ({}%) was recorded at {since}, but a switch since (by hand, or by \
             [rollback]) serves otherwise; `cutover rollout start` starts it again",
            step + 1,
            rollout.steps.len(),
            rollout.percent(step),
        ),
        Some(step) => {
            let next = if step + 1 < rollout.steps.len() {
                format!(
                    "next {}% once held {} s with every gate passing",
                    rollout.percent(step + 1),
                    rollout.hold.as_secs()
                )
            } else {
                "the last step".to_string()
            };
            format!(
                "step {} of {} ({}%) since {since} ({}: {}); {next}",
                step + 1,
                rollout.steps.len(),
                rollout.percent(step),
                state.action,
                state.reason
            )
        }
    }
}
