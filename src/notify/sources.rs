//! Where notices come from: the store's groups, write ledger and events,
//! read since a time and turned into a subject, a text and a body. Only
//! what cutover itself wrote goes in: route names, group kinds and places,
//! statuses, gate figures and reasons; never a request's path, headers or
//! body values.
//!
//! Must never: carry a value taken from a client's or a backend's bytes.

use serde_json::{json, Value};

use super::{payload, Trigger};
use crate::store::{GroupRow, LedgerRow, NewNotice, Store, StoreError};

/// Rows read per query; a scan reads pages until one comes short.
const PAGE: i64 = 500;

/// Every occurrence of `trigger` at or after `since_ms`, as notices, oldest
/// first. It pages through the rows by their order (not by a count from
/// `since_ms`), so however many there are, every one is reached.
pub(super) async fn scan(store: &Store, trigger: Trigger, since_ms: i64) -> Result<Vec<NewNotice>, StoreError> {
    let mut notices = Vec::new();
    match trigger {
        Trigger::Group => {
            let mut after = (since_ms, String::new());
            loop {
                let page = store.groups_seen_after("high", (after.0, &after.1), PAGE).await?;
                let Some(last) = page.last() else { break };
                after = (last.first_seen_ms, last.key.clone());
                let short = page.len() < PAGE as usize;
                notices.extend(page.into_iter().map(|group| group_notice(&group)));
                if short {
                    break;
                }
            }
        }
        Trigger::Drift => {
            let mut after = (since_ms, i64::MIN);
            loop {
                let page = store.drift_after(after, PAGE).await?;
                let Some(last) = page.last() else { break };
                after = (last.updated_ms, last.id);
                let short = page.len() < PAGE as usize;
                notices.extend(page.iter().map(drift_notice));
                if short {
                    break;
                }
            }
        }
        Trigger::Rollback | Trigger::Ramp | Trigger::Verdict => {
            let kind = match trigger {
                Trigger::Rollback => "rollback",
                Trigger::Ramp => "rollout_step",
                _ => "verdict",
            };
            let mut after = 0;
            loop {
                let page = store.events_page(kind, since_ms, after, PAGE).await?;
                let Some((last, _, _)) = page.last() else { break };
                after = *last;
                let short = page.len() < PAGE as usize;
                for (id, at_ms, detail) in page {
                    let detail: Value = serde_json::from_str(&detail).unwrap_or_default();
                    if let Some(text) = event_text(trigger, &detail) {
                        notices.push(notice(trigger, format!("event:{id}"), at_ms, &text, detail));
                    }
                }
                if short {
                    break;
                }
            }
        }
    }
    Ok(notices)
}

fn group_notice(group: &GroupRow) -> NewNotice {
    let text = format!(
        "cutover: new high-severity divergence on route {}: {} ({} so far), group {}",
        group.route, group.pattern, group.count, group.key
    );
    let detail = json!({"group": group.key, "route": group.route, "kind": group.kind, "pattern": group.pattern});
    notice(
        Trigger::Group,
        format!("group:{}", group.key),
        group.first_seen_ms,
        &text,
        detail,
    )
}

fn drift_notice(row: &LedgerRow) -> NewNotice {
    let statuses = format!("{} vs {}", status(row.primary_status), status(row.shadow_status));
    let text = format!(
        "cutover: a {} on route {} drifted (primary vs shadow: {statuses}), write ledger row {}",
        row.method, row.route, row.id
    );
    let detail = json!({"ledger_id": row.id, "route": row.route, "method": row.method,
        "primary_status": row.primary_status, "shadow_status": row.shadow_status});
    notice(
        Trigger::Drift,
        format!("drift:{}", row.id),
        row.updated_ms,
        &text,
        detail,
    )
}

fn notice(trigger: Trigger, subject: String, source_ms: i64, text: &str, detail: Value) -> NewNotice {
    NewNotice {
        payload: payload(trigger, &subject, source_ms, text, detail),
        subject,
        event: trigger.label().to_string(),
        source_ms,
    }
}

fn status(status: Option<i64>) -> String {
    status.map_or_else(|| "no answer".to_string(), |status| status.to_string())
}

/// The words for an event row; `None` for a verdict row that is no change
/// (the first one an instance recorded).
fn event_text(trigger: Trigger, detail: &Value) -> Option<String> {
    let text = |key: &str| detail[key].as_str().unwrap_or_default().to_string();
    let scope = detail["route"]
        .as_str()
        .map_or_else(|| "every route".to_string(), |route| format!("route {route}"));
    Some(match trigger {
        Trigger::Rollback => format!("cutover: rolled {scope} back to shadow: {}", text("reason")),
        Trigger::Ramp => format!(
            "cutover: ramp of {scope}: {} to {}% on the candidate: {}",
            text("action"),
            detail["percent"].as_f64().unwrap_or(0.0),
            text("reason")
        ),
        _ => {
            let previous = detail["previous"].as_str()?;
            format!(
                "cutover: the verdict went from {previous} to {}. {}",
                text("verdict"),
                text("why")
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(dir: &std::path::Path) -> Store {
        let url = format!("sqlite://{}", dir.join("cutover.db").display());
        Store::open(&url, &Default::default()).await.unwrap()
    }

    #[tokio::test]
    async fn events_become_notices_in_cutovers_own_words() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let rollback = json!({"route": "things", "reason": "error rate 0.5 over 30 s (needs at most 0.2)"});
        store.add_event("rollback", &rollback, 1_000).await.unwrap();
        let step = json!({"route": null, "step": 1, "percent": 5.0, "action": "advance", "reason": "held 1800 s"});
        store.add_event("rollout_step", &step, 2_000).await.unwrap();
        let first = json!({"verdict": "NOT YET", "previous": null, "why": "coverage: 3 requests"});
        store.add_event("verdict", &first, 3_000).await.unwrap();
        let changed = json!({"verdict": "NO-GO", "previous": "NOT YET", "why": "match_rate things: 0.91"});
        store.add_event("verdict", &changed, 4_000).await.unwrap();

        let rollbacks = scan(&store, Trigger::Rollback, 0).await.unwrap();
        assert_eq!(rollbacks.len(), 1);
        let body: Value = serde_json::from_str(&rollbacks[0].payload).unwrap();
        assert_eq!(
            body["text"],
            "cutover: rolled route things back to shadow: error rate 0.5 over 30 s (needs at most 0.2)"
        );
        assert_eq!(body["cutover"]["event"], "rollback");

        let steps = scan(&store, Trigger::Ramp, 0).await.unwrap();
        let body: Value = serde_json::from_str(&steps[0].payload).unwrap();
        assert_eq!(
            body["text"],
            "cutover: ramp of every route: advance to 5% on the candidate: held 1800 s"
        );

        // The first verdict an instance records is no change: only the second is told.
        let verdicts = scan(&store, Trigger::Verdict, 0).await.unwrap();
        assert_eq!(verdicts.len(), 1, "{verdicts:?}");
        let body: Value = serde_json::from_str(&verdicts[0].payload).unwrap();
        assert_eq!(
            body["text"],
            "cutover: the verdict went from NOT YET to NO-GO. match_rate things: 0.91"
        );
        assert_eq!(verdicts[0].source_ms, 4_000);
        assert!(scan(&store, Trigger::Verdict, 4_001).await.unwrap().is_empty());
        store.close().await;
    }

    #[tokio::test]
    async fn a_scan_reaches_every_occurrence_past_a_page() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let count = PAGE as usize * 2 + 7;
        for at in 0..count {
            let detail = json!({"route": "things", "reason": format!("breach {at}")});
            store.add_event("rollback", &detail, 10_000).await.unwrap();
        }
        let found = scan(&store, Trigger::Rollback, 10_000).await.unwrap();
        assert_eq!(found.len(), count);
        let subjects: std::collections::BTreeSet<&str> = found.iter().map(|notice| notice.subject.as_str()).collect();
        assert_eq!(subjects.len(), count, "each once");
        assert!(scan(&store, Trigger::Rollback, 10_001).await.unwrap().is_empty());
        store.close().await;
    }
}
