//! The store against real databases: a SQLite file always, and PostgreSQL
//! when CUTOVER_TEST_POSTGRES_URL is set (CI sets it; a test fails if it
//! cannot connect). Each Postgres test gets a database of its own.

use cutover::ledger::LedgerState;
use std::io::Write;

use cutover::idmap::IdPair;
use cutover::store::{Engine, ExchangeRecord, GroupRef, LedgerRecord, SampleRecord, Store, StoreOptions};
use sqlx::any::AnyPoolOptions;
use sqlx::Executor;

const POSTGRES_ENV: &str = "CUTOVER_TEST_POSTGRES_URL";

/// A fresh SQLite store in a temporary directory (kept alive by the guard).
async fn sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("cutover.db").display());
    (Store::open(&url, &options()).await.unwrap(), dir)
}

/// A PostgreSQL database of one test's own; dropped when the test ends.
struct TestDatabase {
    server_url: String,
    name: String,
    url: String,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (server_url, name) = (self.server_url.clone(), self.name.clone());
        // Drop runs outside the test's runtime: use a small one of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let admin = AnyPoolOptions::new()
                    .max_connections(1)
                    .connect(&server_url)
                    .await
                    .ok()?;
                let drop = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )));
                admin.execute(drop).await.ok()?;
                admin.close().await;
                Some(())
            })
        })
        .join();
    }
}

/// A fresh PostgreSQL database for one test, or None (with a note) when
/// no server is configured.
async fn postgres_database() -> Option<TestDatabase> {
    let Ok(base) = std::env::var(POSTGRES_ENV) else {
        // Written to stderr directly: the test harness would swallow eprintln! output.
        let _ = writeln!(
            std::io::stderr(),
            "note: {POSTGRES_ENV} is not set; skipping the PostgreSQL store test"
        );
        return None;
    };
    sqlx::any::install_default_drivers();
    let admin = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&base)
        .await
        .unwrap_or_else(|err| panic!("{POSTGRES_ENV}={base}: cannot connect: {err}"));
    let name = format!("cutover_test_{}", uuid::Uuid::new_v4().simple());
    // The name is generated here (a UUID), never taken from input.
    let create = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")));
    admin.execute(create).await.unwrap();
    admin.close().await;
    let (without_query, query) = match base.split_once('?') {
        Some((url, query)) => (url, format!("?{query}")),
        None => (base.as_str(), String::new()),
    };
    let server = without_query
        .rsplit_once('/')
        .map_or(without_query, |(server, _)| server);
    Some(TestDatabase {
        url: format!("{server}/{name}{query}"),
        server_url: base.clone(),
        name,
    })
}

fn options() -> StoreOptions {
    StoreOptions {
        samples_per_group: 2,
        ..StoreOptions::default()
    }
}

fn group(key: &str, pattern: &str, kind: &str, severity: &str) -> GroupRef {
    GroupRef {
        key: key.into(),
        route: "all-tasks".into(),
        method: "GET".into(),
        location: "body".into(),
        pattern: pattern.into(),
        kind: kind.into(),
        severity: severity.into(),
        summary: format!("{kind} {pattern}"),
    }
}

fn exchange(request_id: &str, at_ms: i64, outcome: &str, groups: Vec<GroupRef>) -> ExchangeRecord {
    ExchangeRecord {
        at_ms,
        request_id: request_id.into(),
        route: "all-tasks".into(),
        method: "GET".into(),
        path: "/api/all-tasks".into(),
        source: "traffic".into(),
        primary_status: Some(200),
        shadow_status: Some(200),
        primary_ms: Some(1200.5),
        shadow_ms: Some(80.25),
        outcome: outcome.into(),
        reason: None,
        samples: groups
            .iter()
            .map(|group| SampleRecord {
                group_key: group.key.clone(),
                differences: format!(r#"[{{"request":"{request_id}"}}]"#),
                unified_diff: Some("-a\n+b\n".into()),
                request: r#"{"method":"GET"}"#.into(),
                primary_excerpt: Some("{}".into()),
                shadow_excerpt: None,
                trace_id: (request_id == "r1").then(|| "4bf92f3577b34da6a3ce929d0e0e4736".to_string()),
            })
            .collect(),
        groups,
        primary_cache: None,
        shadow_cache: None,
        learned_ids: Vec::new(),
        ledger: None,
        served: "primary".into(),
    }
}

/// The suite every backend must pass.
async fn records_exchanges_and_counts_groups(store: &Store) {
    // Migrating an up-to-date schema changes nothing.
    store.migrate().await.unwrap();
    let title = group("aaaa000000000001", "/tasks/*/title", "value_changed", "medium");
    let due = group("aaaa000000000002", "/tasks/*/dueDate", "missing_in_shadow", "high");
    store
        .record(&[
            exchange("r1", 1_000, "diverged", vec![title.clone(), due.clone()]),
            exchange("r2", 2_000, "match", vec![]),
        ])
        .await
        .unwrap();
    store
        .record(&[exchange("r3", 3_000, "diverged", vec![title.clone()])])
        .await
        .unwrap();
    assert_eq!(store.exchange_count().await.unwrap(), 3);
    let groups = store.groups().await.unwrap();
    let summary: Vec<(&str, i64, i64, i64, &str)> = groups
        .iter()
        .map(|g| {
            (
                g.pattern.as_str(),
                g.count,
                g.first_seen_ms,
                g.last_seen_ms,
                g.status.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("/tasks/*/title", 2, 1_000, 3_000, "open"),
            ("/tasks/*/dueDate", 1, 1_000, 1_000, "open")
        ]
    );
    assert_eq!(
        store.groups_of("r1").await.unwrap(),
        vec![title.key.clone(), due.key.clone()]
    );
    assert!(store.groups_of("r2").await.unwrap().is_empty());
    assert_eq!(store.groups_of("r3").await.unwrap(), vec![title.key.clone()]);

    // Samples: at most samples_per_group (2 here) per group, oldest kept.
    store
        .record(&[exchange("r4", 4_000, "diverged", vec![title.clone()])])
        .await
        .unwrap();
    let samples = store.samples(&title.key).await.unwrap();
    let traces: Vec<Option<&str>> = samples.iter().map(|s| s.trace_id.as_deref()).collect();
    assert_eq!(traces, vec![Some("4bf92f3577b34da6a3ce929d0e0e4736"), None]);
    let requests: Vec<&str> = samples
        .iter()
        .map(|s| s.differences[0]["request"].as_str().unwrap())
        .collect();
    assert_eq!(requests, ["r1", "r3"]);
    assert_eq!(samples[0].unified_diff.as_deref(), Some("-a\n+b\n"));
    assert_eq!(store.samples(&due.key).await.unwrap().len(), 1);

    // Retention prunes old exchanges and samples; groups and their counts stay.
    assert_eq!(
        store.prune(3_500).await.unwrap(),
        (3, 3),
        "r1-r3, and the three samples they brought"
    );
    assert_eq!(store.exchange_count().await.unwrap(), 1);
    assert_eq!(store.samples(&title.key).await.unwrap().len(), 0);
    let after = store.groups().await.unwrap();
    assert_eq!(after[0].count, 3, "{after:?}");
}

#[tokio::test]
async fn sqlite_records_exchanges_and_counts_groups() {
    let (store, dir) = sqlite_store().await;
    assert_eq!(store.engine(), Engine::Sqlite);
    records_exchanges_and_counts_groups(&store).await;
    store.close().await;
    // The file persists: reopening sees the same rows (the one left after pruning).
    let url = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let reopened = Store::open(&url, &StoreOptions::default()).await.unwrap();
    assert_eq!(reopened.exchange_count().await.unwrap(), 1);
}

#[tokio::test]
async fn postgres_records_exchanges_and_counts_groups() {
    let Some(database) = postgres_database().await else {
        return;
    };
    let store = Store::open(&database.url, &options()).await.unwrap();
    assert_eq!(store.engine(), Engine::Postgres);
    records_exchanges_and_counts_groups(&store).await;
    store.close().await;
}

fn pair(kind: &str, primary: &str, shadow: &str) -> IdPair {
    IdPair {
        kind: kind.into(),
        primary_id: primary.into(),
        shadow_id: shadow.into(),
    }
}

fn write(request_id: &str, at_ms: i64, entity: &str, state: LedgerState) -> ExchangeRecord {
    let mut record = exchange(request_id, at_ms, "match", Vec::new());
    record.route = "update-task".into();
    record.method = "PATCH".into();
    record.ledger = Some(LedgerRecord {
        entity: Some(entity.into()),
        primary_status: Some(200),
        shadow_status: (state == LedgerState::Ok).then_some(200),
        primary_ms: Some(10.0),
        shadow_ms: None,
        state,
        attempts: 3,
        replay: (state == LedgerState::Drift).then(|| r#"{"reason":"shadow down"}"#.to_string()),
        seq: at_ms,
        intent: None,
    });
    record
}

/// ID pairs stay unique on each side; the ledger keeps writes and their drift.
async fn keeps_id_pairs_and_the_write_ledger(store: &Store) {
    let added = store
        .insert_id_pairs(&[pair("tasks", "p1", "s1"), pair("tasks", "p2", "s2")], "import", 1)
        .await
        .unwrap();
    assert_eq!(added, 2);
    let conflicting = store
        .insert_id_pairs(
            &[
                pair("tasks", "p1", "s9"),
                pair("tasks", "p9", "s2"),
                pair("tags", "p1", "s1"),
            ],
            "import",
            2,
        )
        .await
        .unwrap();
    assert_eq!(conflicting, 1, "only the pair of a new kind is added");
    let mut created = write("w1", 10, "tasks:p1", LedgerState::Ok);
    created.learned_ids = vec![pair("tasks", "p3", "s3")];
    // w3 reached the shadow's queue before w2 (its primary answered first): the ledger's order is seq, not arrival.
    let mut overtaking = write("w3", 12, "tasks:p2", LedgerState::Drift);
    overtaking.ledger.as_mut().unwrap().seq = 5;
    store
        .record(&[created, write("w2", 11, "tasks:p1", LedgerState::Drift), overtaking])
        .await
        .unwrap();
    let pairs = store.id_pairs().await.unwrap();
    assert_eq!(pairs.len(), 4);
    assert!(
        pairs.contains(&(pair("tasks", "p3", "s3"), "learned".to_string())),
        "{pairs:?}"
    );
    let drift = store.ledger(Some(LedgerState::Drift), 100).await.unwrap();
    assert_eq!(
        drift.iter().map(|row| row.entity.clone().unwrap()).collect::<Vec<_>>(),
        ["tasks:p2", "tasks:p1"]
    );
    assert_eq!(drift[1].attempts, 3);
    assert_eq!(drift[1].replay.as_deref(), Some(r#"{"reason":"shadow down"}"#));
    assert_eq!(store.ledger(None, 100).await.unwrap().len(), 3);
    let mut entities = store.drifted_entities().await.unwrap();
    entities.sort();
    assert_eq!(entities, ["tasks:p1", "tasks:p2"]);
    store
        .settle_ledger(drift[1].id, LedgerState::Reconciled, Some(200), 99)
        .await
        .unwrap();
    assert_eq!(store.ledger_count(LedgerState::Drift).await.unwrap(), 1);
    assert_eq!(store.ledger_count(LedgerState::Reconciled).await.unwrap(), 1);
    let settled = store.ledger(Some(LedgerState::Reconciled), 10).await.unwrap();
    assert_eq!(
        (settled[0].attempts, settled[0].shadow_status, settled[0].updated_ms),
        (4, Some(200), 99)
    );
    assert_eq!(store.drifted_entities().await.unwrap(), ["tasks:p2"]);
    // A replay claims its row: a second replayer (another instance) does not get it…
    let open = store.ledger(Some(LedgerState::Drift), 10).await.unwrap()[0].id;
    assert!(store.claim_replay(open, 1_000, 60_000).await.unwrap());
    assert!(!store.claim_replay(open, 2_000, 60_000).await.unwrap());
    assert!(
        !store.claim_replay(settled[0].id, 2_000, 60_000).await.unwrap(),
        "reconciled rows are not replayed"
    );
    // …unless the claim went stale (its replayer died).
    assert!(store.claim_replay(open, 70_000, 60_000).await.unwrap());
    // A write both sides answered (200 and 409) is drift, but a replay
    // would be refused again: its entity's later writes are not held.
    let mut refused = write("w4", 13, "tasks:p4", LedgerState::Drift);
    refused.ledger.as_mut().unwrap().shadow_status = Some(409);
    store.record(&[refused]).await.unwrap();
    assert_eq!(
        store.ledger_count(LedgerState::Drift).await.unwrap(),
        1,
        "p2 is being replayed"
    );
    assert!(store.drifted_entities().await.unwrap().is_empty());
}

/// A sweep's run is claimed once per interval, whoever asks.
async fn claims_a_sweep_once_per_interval(store: &Store) {
    assert!(store.claim_sweep("nightly", 1000, 10_000).await.unwrap());
    assert!(
        !store.claim_sweep("nightly", 1000, 10_500).await.unwrap(),
        "within the interval"
    );
    assert!(
        store.claim_sweep("other", 1000, 10_500).await.unwrap(),
        "sweeps are claimed apart"
    );
    assert!(
        store.claim_sweep("nightly", 1000, 11_001).await.unwrap(),
        "the next interval"
    );
    let claims = futures_util::future::join_all((0..8).map(|_| store.claim_sweep("raced", 60_000, 20_000))).await;
    assert_eq!(claims.into_iter().filter(|claim| *claim.as_ref().unwrap()).count(), 1);
}

/// Replicas write to one group at the same time: every exchange counts once.
async fn concurrent_writers_count_a_group_exactly(store: &Store) {
    let group = group("feedfacefeedface", "/tasks/*/title", "value_changed", "medium");
    let writes = (0..20).map(|n| {
        let record = exchange(&format!("c{n}"), 1_000 + n, "diverged", vec![group.clone()]);
        async move { store.record(&[record]).await }
    });
    for written in futures_util::future::join_all(writes).await {
        written.unwrap();
    }
    let groups = store.groups().await.unwrap();
    let counted = groups.iter().find(|g| g.key == "feedfacefeedface").unwrap();
    assert_eq!(counted.count, 20);
    assert_eq!((counted.first_seen_ms, counted.last_seen_ms), (1_000, 1_019));
}

#[tokio::test]
async fn sqlite_counts_a_group_exactly_under_concurrent_writers() {
    let (store, _dir) = sqlite_store().await;
    concurrent_writers_count_a_group_exactly(&store).await;
}

#[tokio::test]
async fn postgres_counts_a_group_exactly_under_concurrent_writers() {
    let Some(database) = postgres_database().await else {
        return;
    };
    let store = Store::open(&database.url, &options()).await.unwrap();
    concurrent_writers_count_a_group_exactly(&store).await;
    store.close().await;
}

#[tokio::test]
async fn sqlite_claims_a_sweep_once_per_interval() {
    let (store, _dir) = sqlite_store().await;
    claims_a_sweep_once_per_interval(&store).await;
}

#[tokio::test]
async fn postgres_claims_a_sweep_once_per_interval() {
    let Some(database) = postgres_database().await else {
        return;
    };
    let store = Store::open(&database.url, &options()).await.unwrap();
    claims_a_sweep_once_per_interval(&store).await;
    store.close().await;
}

#[tokio::test]
async fn sqlite_keeps_id_pairs_and_the_write_ledger() {
    let (store, _dir) = sqlite_store().await;
    keeps_id_pairs_and_the_write_ledger(&store).await;
}

#[tokio::test]
async fn postgres_keeps_id_pairs_and_the_write_ledger() {
    let Some(database) = postgres_database().await else {
        return;
    };
    let store = Store::open(&database.url, &options()).await.unwrap();
    keeps_id_pairs_and_the_write_ledger(&store).await;
    store.close().await;
}

#[test]
fn cutover_migrate_creates_and_updates_a_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("new.db").display());
    for _ in 0..2 {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(["migrate", "--store", &url])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("{url}: schema up to date\n")
        );
    }
    assert!(dir.path().join("new.db").is_file());
}

#[tokio::test]
async fn a_bad_store_url_names_what_is_expected() {
    let err = Store::open("mysql://localhost/db", &StoreOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "store URL \"mysql://localhost/db\": expected sqlite://PATH or postgres://…"
    );
}

/// Matches are written many rows per statement; every column of every row
/// lands where it belongs, in batches bigger than one statement and mixed
/// with exchanges that need their row id.
async fn batched_rows_keep_every_column(store: &Store, url: &str) {
    let title = group("bbbb000000000001", "/title", "value_changed", "medium");
    let mut batch = Vec::new();
    for index in 0..250i64 {
        let mut plain = exchange(&format!("m{index}"), 10_000 + index, "match", vec![]);
        plain.primary_status = Some(200 + index % 3);
        plain.shadow_ms = (index % 2 == 0).then_some(index as f64 + 0.5);
        plain.reason = (index % 5 == 0).then(|| format!("reason-{index}"));
        plain.shadow_cache = (index % 7 == 0).then(|| "hit".to_string());
        batch.push(plain);
        if index == 120 {
            batch.push(exchange("d1", 10_120, "diverged", vec![title.clone()]));
        }
    }
    store.record(&batch).await.unwrap();
    assert_eq!(store.exchange_count().await.unwrap(), 251);
    assert_eq!(store.groups_of("d1").await.unwrap(), vec![title.key.clone()]);
    // The same statements again with latencies where the first batch had
    // none: a plan cached from a NULL must not reject a float.
    let flipped: Vec<ExchangeRecord> = (0..100i64)
        .map(|index| {
            let mut plain = exchange(&format!("f{index}"), 20_000 + index, "match", vec![]);
            plain.shadow_ms = (index % 2 == 1).then_some(index as f64);
            plain
        })
        .collect();
    store.record(&flipped).await.unwrap();
    store.record(&flipped[1..2]).await.unwrap();
    assert_eq!(store.exchange_count().await.unwrap(), 352);

    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new().max_connections(1).connect(url).await.unwrap();
    let rows = sqlx::query(
        "SELECT request_id, at_ms, primary_status, shadow_ms, reason, shadow_cache, outcome, route \
         FROM exchanges WHERE request_id LIKE 'm%' ORDER BY at_ms",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 250);
    for (index, row) in rows.iter().enumerate() {
        use sqlx::Row;
        let index = index as i64;
        assert_eq!(row.get::<String, _>(0), format!("m{index}"));
        assert_eq!(row.get::<i64, _>(1), 10_000 + index);
        assert_eq!(row.get::<Option<i64>, _>(2), Some(200 + index % 3));
        assert_eq!(
            row.get::<Option<f64>, _>(3),
            (index % 2 == 0).then_some(index as f64 + 0.5)
        );
        assert_eq!(
            row.get::<Option<String>, _>(4),
            (index % 5 == 0).then(|| format!("reason-{index}"))
        );
        assert_eq!(
            row.get::<Option<String>, _>(5),
            (index % 7 == 0).then(|| "hit".to_string())
        );
        assert_eq!(row.get::<String, _>(6), "match");
        assert_eq!(row.get::<String, _>(7), "all-tasks");
    }
    pool.close().await;
}

#[tokio::test]
async fn sqlite_batches_matches_without_misplacing_a_column() {
    let (store, dir) = sqlite_store().await;
    let url = format!("sqlite://{}", dir.path().join("cutover.db").display());
    batched_rows_keep_every_column(&store, &url).await;
    store.close().await;
}

#[tokio::test]
async fn postgres_batches_matches_without_misplacing_a_column() {
    let Some(database) = postgres_database().await else {
        return;
    };
    let store = Store::open(&database.url, &options()).await.unwrap();
    batched_rows_keep_every_column(&store, &database.url).await;
    store.close().await;
}

/// New high groups and drift are read a page at a time by their order,
/// ties on the time included: every row is reached once, none twice, and
/// rows of another severity or state are not read.
async fn pages_new_groups_and_drift_by_their_order(store: &Store) {
    let mut batch = Vec::new();
    for n in 0..7 {
        // Seven groups first seen in the same millisecond, then one later.
        let at_ms = if n == 6 { 2_000 } else { 1_000 };
        let key = format!("g{n}");
        batch.push(exchange(
            &format!("d{n}"),
            at_ms,
            "diverged",
            vec![group(&key, "$.x", "changed", "high")],
        ));
        batch.push(write(
            &format!("w{n}"),
            at_ms,
            &format!("tasks:p{n}"),
            LedgerState::Drift,
        ));
    }
    batch.push(exchange(
        "low",
        1_000,
        "diverged",
        vec![group("g-low", "$.y", "changed", "low")],
    ));
    batch.push(write("ok", 1_000, "tasks:ok", LedgerState::Ok));
    store.record(&batch).await.unwrap();

    let mut groups = Vec::new();
    let mut after = (0, String::new());
    loop {
        let page = store.groups_seen_after("high", (after.0, &after.1), 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = (last.first_seen_ms, last.key.clone());
        groups.extend(page.into_iter().map(|group| (group.first_seen_ms, group.key)));
    }
    let expected: Vec<(i64, String)> = (0..7)
        .map(|n| (if n == 6 { 2_000 } else { 1_000 }, format!("g{n}")))
        .collect();
    assert_eq!(groups, expected, "each high group once, in order");
    assert!(store
        .groups_seen_after("high", (2_000, "g6"), 3)
        .await
        .unwrap()
        .is_empty());

    let mut drifted = Vec::new();
    let mut after = (0, i64::MIN);
    loop {
        let page = store.drift_after(after, 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = (last.updated_ms, last.id);
        drifted.extend(page.into_iter().map(|row| row.entity.unwrap_or_default()));
    }
    let expected: Vec<String> = (0..7).map(|n| format!("tasks:p{n}")).collect();
    assert_eq!(drifted, expected, "each drifted write once, in order");
}

#[tokio::test]
async fn sqlite_pages_new_groups_and_drift_by_their_order() {
    let (store, _dir) = sqlite_store().await;
    pages_new_groups_and_drift_by_their_order(&store).await;
}

#[tokio::test]
async fn postgres_pages_new_groups_and_drift_by_their_order() {
    let Some(database) = postgres_database().await else {
        return;
    };
    let store = Store::open(&database.url, &options()).await.unwrap();
    pages_new_groups_and_drift_by_their_order(&store).await;
    store.close().await;
}

/// A group marked fixed reopens on a divergence observed after the fix,
/// once, with a `regression` event; one observed before it (late in a
/// writer's batch) leaves it fixed.
async fn a_fixed_group_that_diverges_again_is_reopened(store: &Store) {
    let title = group("g-regress", "/title", "value_changed", "high");
    store
        .record(&[exchange("before", 1_000, "diverged", vec![title.clone()])])
        .await
        .unwrap();
    assert!(store
        .triage("g-regress", "fixed", Some("deployed"), 2_000)
        .await
        .unwrap());
    store
        .record(&[exchange("late", 1_500, "diverged", vec![title.clone()])])
        .await
        .unwrap();
    let status = |store: &Store| {
        let store = store.clone();
        async move { store.group("g-regress").await.unwrap().unwrap().0.status }
    };
    assert_eq!(
        status(store).await,
        "fixed",
        "an exchange from before the fix reopened it"
    );
    assert!(store.events("regression").await.unwrap().is_empty());
    store
        .record(&[
            exchange("again", 2_500, "diverged", vec![title.clone()]),
            exchange("again-2", 2_600, "diverged", vec![title.clone()]),
        ])
        .await
        .unwrap();
    assert_eq!(status(store).await, "open");
    let regressions = store.events("regression").await.unwrap();
    assert_eq!(regressions.len(), 1, "{regressions:?}");
    let (at_ms, detail) = &regressions[0];
    assert_eq!(*at_ms, 2_500);
    let detail: serde_json::Value = serde_json::from_str(detail).unwrap();
    assert_eq!(detail["group"], "g-regress");
    assert_eq!(detail["request_id"], "again");
    assert_eq!(detail["summary"], "value_changed /title");
}

#[tokio::test]
async fn sqlite_reopens_a_fixed_group_that_diverges_again() {
    let (store, _dir) = sqlite_store().await;
    a_fixed_group_that_diverges_again_is_reopened(&store).await;
}

#[tokio::test]
async fn postgres_reopens_a_fixed_group_that_diverges_again() {
    let Some(database) = postgres_database().await else {
        return;
    };
    let store = Store::open(&database.url, &options()).await.unwrap();
    a_fixed_group_that_diverges_again_is_reopened(&store).await;
    store.close().await;
}
