//! `cutover serve` killed with SIGKILL right after a burst of dual-write
//! creates: every create the client was answered for is accounted for at
//! the next start. Its ID pair is in the store (the pair and ledger row of
//! a write the shadow answered are committed before the entity's next
//! write goes out), or its ledger row, written before the write went to
//! the shadow, is drift with the reason `unclean_restart`, and the
//! unclean_restart event says how many.

mod common;

use cutover::ledger::LedgerState;
use std::collections::HashSet;
use std::time::Duration;

use common::tasks::{Flavor, Host, TaskApi, ROUTES};
use common::*;
use cutover::store::{Store, StoreOptions};
use serde_json::{json, Value};

const CREATES: usize = 2_000;

/// `CREATES` creates, sixteen at a time; returns the primary's IDs.
async fn create_all(proxy: &str) -> Vec<String> {
    let mut created = Vec::with_capacity(CREATES);
    let mut pending = Vec::new();
    for index in 0..CREATES {
        let proxy = proxy.to_string();
        pending.push(tokio::spawn(async move {
            let (status, body) = send_json(&proxy, "POST", "/api/task", Some(json!({"task": format!("t{index}")})))
                .await
                .unwrap();
            assert_eq!(status, 201);
            body["notionPageId"].as_str().unwrap().to_string()
        }));
        if pending.len() == 16 || index + 1 == CREATES {
            for task in pending.drain(..) {
                created.push(task.await.unwrap());
            }
        }
    }
    created
}

#[tokio::test]
async fn kill_9_after_a_burst_of_creates_loses_no_pair_unseen() {
    let primary = TaskApi::new(Flavor::Legacy).serve().await;
    // The shadow takes 25 ms per write, one at a time: slower than the
    // creates come, so at the kill the last ones are on their way to it.
    let shadow = TaskApi::new(Flavor::Candidate)
        .with_write_delay(Duration::from_millis(25))
        .serve()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes = ROUTES;
    setup.store = store_url.clone();
    let config = dir.path().join("cutover.toml");
    std::fs::write(&config, setup.toml()).unwrap();

    let first = Supervised::start(&config, &[]);
    first.until_ready().await;
    let began = std::time::Instant::now();
    let created = create_all(&first.proxy).await;
    eprintln!("{CREATES} creates answered in {:?}", began.elapsed());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(first.kill("-KILL"), None, "killed by a signal");

    let second = Supervised::start(&config, &[]);
    second.until_ready().await;
    let store = Store::open(&store_url, &StoreOptions::default()).await.unwrap();
    let paired: HashSet<String> = store
        .id_pairs()
        .await
        .unwrap()
        .into_iter()
        .map(|(pair, _)| pair.primary_id)
        .collect();
    let ledger = store.ledger(None, 10 * CREATES as i64).await.unwrap();
    assert!(
        ledger.iter().all(|row| row.state != LedgerState::Pending),
        "nothing is left pending"
    );
    let details: Vec<Value> = ledger
        .iter()
        .filter(|row| row.state == LedgerState::Drift)
        .filter_map(|row| serde_json::from_str::<Value>(row.replay.as_deref()?).ok())
        .collect();
    let named = |details: &[&Value]| -> HashSet<String> {
        details
            .iter()
            .filter_map(|detail| detail["request"]["created_ids"].as_array().cloned())
            .flatten()
            .filter_map(|created| created[1].as_array().cloned())
            .flatten()
            .filter_map(|id| id.as_str().map(str::to_string))
            .collect()
    };
    let in_doubt: Vec<&Value> = details
        .iter()
        .filter(|detail| {
            detail["reason"]
                .as_str()
                .is_some_and(|reason| reason.starts_with("unclean_restart"))
        })
        .collect();
    let drifted_ids = named(&details.iter().collect::<Vec<_>>());
    let in_doubt_ids = named(&in_doubt);
    let unaccounted: Vec<&String> = created
        .iter()
        .filter(|id| !paired.contains(*id) && !drifted_ids.contains(*id))
        .collect();
    eprintln!(
        "{} creates answered: {} paired, {} drift, of which {} unclean_restart; {} unaccounted",
        created.len(),
        created.iter().filter(|id| paired.contains(*id)).count(),
        drifted_ids.len(),
        in_doubt_ids.len(),
        unaccounted.len()
    );
    assert!(!in_doubt.is_empty(), "some creates were in flight at the kill");
    let answered_ok = ledger
        .iter()
        .filter(|row| row.route == "create-task" && row.state == LedgerState::Ok)
        .count();
    assert_eq!(
        created.iter().filter(|id| paired.contains(*id)).count(),
        answered_ok,
        "every create the shadow answered has its pair"
    );
    assert!(
        unaccounted.is_empty(),
        "{} creates lost unseen: {:?}",
        unaccounted.len(),
        &unaccounted[..unaccounted.len().min(5)]
    );
    let creates_in_ledger = ledger.iter().filter(|row| row.route == "create-task").count();
    assert_eq!(creates_in_ledger, CREATES, "every answered create has its ledger row");

    let events = store.events("unclean_restart").await.unwrap();
    assert_eq!(events.len(), 1);
    let event: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(
        event["writes_in_doubt"],
        in_doubt.len(),
        "the event says how many: {event}"
    );
    assert!(
        in_doubt.is_empty() || second.logged("now drift (unclean_restart)").await,
        "the restart says so in its log"
    );
    store.close().await;
    assert_eq!(second.kill("-TERM"), Some(0));
}
