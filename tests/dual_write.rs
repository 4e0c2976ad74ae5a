//! Dual-write through the real proxy: two stateful task APIs with different
//! ID schemes, over sockets. Writes reach the shadow with its own IDs, in
//! the primary's order; what the shadow misses is drift that a replay
//! repairs; the ID map is learned, persisted and survives a restart.

mod common;

use cutover::ledger::LedgerState;
use std::collections::BTreeMap;
use std::time::Duration;

use common::tasks::{Flavor, Host, Ids, Task, TaskApi, ROUTES};
use common::*;
use cutover::idmap::IdPair;
use cutover::metrics::{DRIFT_OPEN, IDMAP_UNMAPPED_TOTAL, REQUESTS_TOTAL, WRITE_DRIFT_TOTAL};
use cutover::store::{Store, StoreOptions};
use serde_json::{json, Value};

struct Rig {
    primary_api: TaskApi,
    shadow_api: TaskApi,
    primary: Backend,
    shadow: Backend,
    dir: tempfile::TempDir,
    store_url: String,
}

impl Rig {
    async fn new(primary_api: TaskApi, shadow_api: TaskApi) -> Rig {
        let primary = primary_api.serve().await;
        let shadow = shadow_api.serve().await;
        let dir = tempfile::tempdir().unwrap();
        let store_url = format!("sqlite://{}", dir.path().join("cutover.db").display());
        Rig {
            primary_api,
            shadow_api,
            primary,
            shadow,
            dir,
            store_url,
        }
    }

    fn setup(&self) -> ProxySetup {
        let mut setup = ProxySetup::new(self.primary.url(), self.shadow.url());
        setup.routes = ROUTES;
        setup.store = self.store_url.clone();
        setup.mirror = "write_wait = \"2s\"";
        setup.env = vec![("CUTOVER_ADMIN_TOKEN", "t0ken".to_string())];
        setup
    }

    /// Starts the proxy with `setup` and an ID-mapping file `name` holding `contents`.
    async fn start_with_map(&self, setup: &ProxySetup, name: &str, contents: &str) -> cutover::app::Running {
        let file = self.dir.path().join(name);
        std::fs::write(&file, contents).unwrap();
        let toml = setup.toml().replace(
            "[store]",
            &format!("[idmap]\nimport = [\"{}\"]\n\n[store]", file.display()),
        );
        let env = |name: &str| {
            setup
                .env
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.clone())
        };
        let config = cutover::config::Config::parse(&toml, "test.toml", &env).unwrap();
        cutover::app::start(config).await.unwrap()
    }

    async fn store(&self) -> Store {
        Store::open(&self.store_url, &StoreOptions::default()).await.unwrap()
    }

    async fn pairs(&self) -> BTreeMap<String, String> {
        let store = self.store().await;
        let pairs = store.id_pairs().await.unwrap();
        store.close().await;
        pairs
            .into_iter()
            .map(|(pair, _)| (pair.primary_id, pair.shadow_id))
            .collect()
    }

    /// Both sides hold the same tasks, record for record, through the ID map.
    async fn assert_same_state(&self) {
        let pairs = self.pairs().await;
        let primary = self.primary_api.tasks();
        let shadow = self.shadow_api.tasks();
        assert_eq!(
            primary.len(),
            shadow.len(),
            "task counts differ:\n{primary:#?}\n{shadow:#?}"
        );
        for (id, task) in &primary {
            let shadow_id = pairs.get(id).unwrap_or_else(|| panic!("no pair for {id}"));
            let twin = &shadow[shadow_id];
            let expected = Task {
                id: shadow_id.clone(),
                parent: task.parent.as_ref().map(|parent| pairs[parent].clone()),
                ..task.clone()
            };
            assert_eq!(twin, &expected, "task {id} differs");
        }
    }
}

async fn send(proxy: std::net::SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    send_json(proxy, method, path, body).await.unwrap()
}

async fn outcomes(admin: std::net::SocketAddr, route: &str, outcome: &str) -> f64 {
    metric(
        &metrics_text(admin).await,
        REQUESTS_TOTAL,
        &[("route", route), ("outcome", outcome)],
    )
}

#[tokio::test]
async fn create_update_complete_and_read_compare_through_learned_ids_that_survive_a_restart() {
    let rig = Rig::new(TaskApi::new(Flavor::Legacy), TaskApi::new(Flavor::Candidate)).await;
    let proxy = rig.setup().start().await;
    let (status, created) = send(
        proxy.proxy_addr,
        "POST",
        "/api/task",
        Some(json!({"task": "write tests"})),
    )
    .await;
    assert_eq!(status, 201);
    let id = created["notionPageId"].as_str().unwrap().to_string();
    assert!(id.starts_with("0000"), "the client gets the primary's ID: {created}");
    // The client moves on at once; the update must still reach the shadow with the shadow's ID.
    let (status, _) = send(
        proxy.proxy_addr,
        "PATCH",
        &format!("/api/task/{id}"),
        Some(json!({"title": "write more tests", "parent": id})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(proxy.proxy_addr, "PATCH", &format!("/api/task/{id}/complete"), None).await;
    assert_eq!(status, 200);
    let (status, list) = send(proxy.proxy_addr, "GET", "/api/all-tasks", None).await;
    assert_eq!((status, list["source"].as_str()), (200, Some("notion")));

    let admin = proxy.admin_addr;
    eventually("all four exchanges are recorded", || async {
        outcomes(admin, "all-tasks", "match").await
            + outcomes(admin, "update-task", "match").await
            + outcomes(admin, "complete-task", "match").await
            + outcomes(admin, "create-task", "match").await
            >= 4.0
    })
    .await;
    eventually("the read-back after the create is compared", || async {
        outcomes(admin, "get-task", "match").await >= 1.0
    })
    .await;
    assert_eq!(outcomes(admin, "all-tasks", "diverged").await, 0.0);

    let shadow_writes: Vec<Seen> = rig
        .shadow
        .requests()
        .into_iter()
        .filter(|seen| seen.method != http::Method::GET)
        .collect();
    assert_eq!(shadow_writes.len(), 3);
    assert_eq!(shadow_writes[1].path_and_query, "/api/task/t-1");
    assert_eq!(shadow_writes[2].path_and_query, "/api/task/t-1/complete");
    let update: Value = serde_json::from_slice(&shadow_writes[1].body).unwrap();
    assert_eq!(update["parent"], "t-1", "body IDs are translated too");
    for seen in &shadow_writes {
        assert_eq!(seen.headers["x-cutover-shadow"], "1");
        assert!(seen.headers["idempotency-key"]
            .to_str()
            .unwrap()
            .starts_with("cutover-"));
    }
    let store = rig.store().await;
    eventually("the store holds the ledger (the writer batches)", || async {
        store.ledger(None, 100).await.unwrap().len() == 3
    })
    .await;
    rig.assert_same_state().await;
    assert_eq!(rig.pairs().await, BTreeMap::from([(id.clone(), "t-1".to_string())]));
    let ledger = store.ledger(None, 100).await.unwrap();
    assert_eq!(
        ledger
            .iter()
            .map(|row| (row.route.as_str(), row.state.label()))
            .collect::<Vec<_>>(),
        [("create-task", "ok"), ("update-task", "ok"), ("complete-task", "ok")]
    );
    assert_eq!(ledger[1].entity.as_deref(), Some(format!("tasks:{id}").as_str()));
    store.close().await;

    // A new instance on the same store knows the pair without seeing the create.
    proxy.shutdown().await;
    let proxy = rig.setup().start().await;
    let admin = proxy.admin_addr;
    eventually("the restarted proxy is ready (ID map loaded)", || async {
        client()
            .get(format!("http://{admin}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    send(
        proxy.proxy_addr,
        "PATCH",
        &format!("/api/task/{id}"),
        Some(json!({"title": "after restart"})),
    )
    .await;
    eventually("the update after the restart is compared", || async {
        outcomes(admin, "update-task", "match").await >= 1.0
    })
    .await;
    assert_eq!(rig.shadow.requests().last().unwrap().path_and_query, "/api/task/t-1");
    rig.assert_same_state().await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_batch_create_pairs_ids_by_position() {
    let rig = Rig::new(TaskApi::new(Flavor::Legacy), TaskApi::new(Flavor::Candidate)).await;
    // Give the sides different counters so positions, not numbers, must pair them.
    rig.shadow_api.seed_as("t-0", "seeded on the shadow only");
    let proxy = rig.setup().start().await;
    let (status, created) = send(
        proxy.proxy_addr,
        "POST",
        "/api/task/batch",
        Some(json!({"tasks": "buy milk\ncall mum\nfile taxes"})),
    )
    .await;
    assert_eq!(status, 200);
    let admin = proxy.admin_addr;
    eventually("the batch is compared", || async {
        outcomes(admin, "batch-create", "match").await >= 1.0
    })
    .await;
    proxy.shutdown().await;
    let pairs = rig.pairs().await;
    assert_eq!(pairs.len(), 3, "shutdown writes what the writer held");
    let shadow = rig.shadow_api.tasks();
    for task in created["tasks"].as_array().unwrap() {
        let primary_id = task["id"].as_str().unwrap();
        assert_eq!(shadow[&pairs[primary_id]].title, task["title"].as_str().unwrap());
    }
}

#[tokio::test]
async fn writes_the_shadow_misses_become_drift_that_a_replay_repairs() {
    let rig = Rig::new(TaskApi::new(Flavor::Legacy), TaskApi::new(Flavor::Candidate)).await;
    let proxy = rig.setup().start().await;
    let admin = proxy.admin_addr;
    let (_, created) = send(proxy.proxy_addr, "POST", "/api/task", Some(json!({"task": "first"}))).await;
    let first = created["notionPageId"].as_str().unwrap().to_string();
    eventually("the first create is paired", || async {
        outcomes(admin, "create-task", "match").await >= 1.0
    })
    .await;

    rig.shadow_api.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let writes = [
        (
            "PATCH",
            format!("/api/task/{first}"),
            Some(json!({"title": "renamed while down"})),
        ),
        ("PATCH", format!("/api/task/{first}/complete"), None),
        (
            "POST",
            "/api/task".to_string(),
            Some(json!({"task": "created while down"})),
        ),
    ];
    for (method, path, body) in writes {
        let (status, _) = send(proxy.proxy_addr, method, &path, body).await;
        assert!(
            status == 200 || status == 201,
            "the client is served by the primary: {status}"
        );
    }
    eventually("three writes drifted", || async {
        metric(&metrics_text(admin).await, DRIFT_OPEN, &[]) >= 3.0
    })
    .await;
    let text = metrics_text(admin).await;
    assert_eq!(metric(&text, WRITE_DRIFT_TOTAL, &[("route", "update-task")]), 1.0);
    // The update failed after its tries; the complete to the same task waits behind it, unsent.
    assert_eq!(
        metric(
            &text,
            REQUESTS_TOTAL,
            &[("route", "complete-task"), ("outcome", "skipped")]
        ),
        1.0
    );
    let shadow_writes_while_down = rig
        .shadow
        .requests()
        .iter()
        .filter(|seen| seen.path_and_query.ends_with("/complete"))
        .count();
    assert_eq!(shadow_writes_while_down, 0, "a write held behind drift is not sent");
    let tries = rig
        .shadow
        .requests()
        .iter()
        .filter(|seen| seen.method == http::Method::PATCH)
        .count();
    assert_eq!(tries, 3, "the update was tried three times");

    // The drift API reads the store, which the writer fills in batches.
    let store = rig.store().await;
    eventually("the ledger holds the drift", || async {
        store.ledger_count(LedgerState::Drift).await.unwrap() == 3
    })
    .await;
    let token = "t0ken";
    let drift = api_get(&admin, "/api/drift", token).await;
    let open = drift["open"].as_array().unwrap();
    assert_eq!(open.len(), 3, "{drift}");
    assert!(open.iter().all(|row| row["replayable"] == true), "{drift}");
    assert!(open[1]["reason"].as_str().unwrap().starts_with("held:"), "{drift}");

    // Replay with the real binary while the proxy runs.
    rig.shadow_api.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let config = rig.dir.path().join("cutover.toml");
    std::fs::write(&config, rig.setup().toml()).unwrap();
    let listed = run_cutover(&["drift", "list", "-c", config.to_str().unwrap()]).await;
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(listing.lines().count(), 3, "{listing}");
    assert!(listing.contains("held: an earlier write to tasks:"), "{listing}");
    // One source: the gauge, the API, `drift list` and the report agree.
    assert_eq!(metric(&metrics_text(admin).await, DRIFT_OPEN, &[]), 3.0);
    let report = api_get(&admin, "/report.json", token).await;
    assert_eq!(report["writes"]["open_drift"], 3, "{}", report["writes"]);
    let replay = run_cutover(&["drift", "replay", "--all", "-c", config.to_str().unwrap()]).await;
    let replayed = String::from_utf8_lossy(&replay.stdout);
    assert_eq!(
        replay.status.code(),
        Some(0),
        "{replayed}\n{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(
        replayed.contains("3 replayed, 3 reconciled, 0 still drift"),
        "{replayed}"
    );
    assert_eq!(store.ledger_count(LedgerState::Drift).await.unwrap(), 0);
    assert_eq!(store.ledger_count(LedgerState::Reconciled).await.unwrap(), 3);
    // The replay ran in another process; the running proxy's gauge follows the ledger.
    eventually("the gauge reads the replayed ledger", || async {
        metric(&metrics_text(admin).await, DRIFT_OPEN, &[]) == 0.0
    })
    .await;
    store.close().await;
    proxy.shutdown().await;
    // Full state, not status codes: the rename, the completion and the new task are on both sides.
    rig.assert_same_state().await;
    assert!(rig
        .shadow_api
        .tasks()
        .values()
        .any(|task| task.title == "created while down"));
}

#[tokio::test]
async fn concurrent_updates_to_one_task_end_the_same_and_racing_reads_are_racy_not_diverged() {
    // The primary applies writes one at a time with a gap, so the order its
    // answers reach the proxy is the order it applied them; the shadow is slow.
    let rig = Rig::new(
        TaskApi::new(Flavor::Legacy).with_write_gap(Duration::from_millis(3)),
        TaskApi::new(Flavor::Candidate).with_write_delay(Duration::from_millis(4)),
    )
    .await;
    let mut setup = rig.setup();
    setup.mirror = "write_wait = \"5ms\"";
    let proxy = setup.start().await;
    let admin = proxy.admin_addr;
    let (_, created) = send(
        proxy.proxy_addr,
        "POST",
        "/api/task",
        Some(json!({"task": "contended"})),
    )
    .await;
    let id = created["notionPageId"].as_str().unwrap().to_string();
    eventually("the create is paired", || async {
        outcomes(admin, "create-task", "match").await >= 1.0
    })
    .await;

    let proxy_addr = proxy.proxy_addr;
    let updates = (0..50).map(|n| {
        let id = id.clone();
        tokio::spawn(async move {
            send(
                proxy_addr,
                "PATCH",
                &format!("/api/task/{id}"),
                Some(json!({"title": format!("v{n}")})),
            )
            .await
        })
    });
    let reads = (0..20).map(|_| {
        let id = id.clone();
        tokio::spawn(async move { send(proxy_addr, "GET", &format!("/api/task/{id}"), None).await })
    });
    let (updates, reads): (Vec<_>, Vec<_>) = (updates.collect(), reads.collect());
    for update in updates {
        assert_eq!(update.await.unwrap().0, 200);
    }
    for read in reads {
        assert_eq!(read.await.unwrap().0, 200);
    }
    eventually("every update and read is recorded", || async {
        let text = metrics_text(admin).await;
        metric(&text, REQUESTS_TOTAL, &[("route", "update-task")]) >= 50.0
            && metric(&text, REQUESTS_TOTAL, &[("route", "get-task")]) >= 21.0
    })
    .await;
    let text = metrics_text(admin).await;
    assert_eq!(
        metric(&text, REQUESTS_TOTAL, &[("route", "update-task"), ("outcome", "match")]),
        50.0,
        "{text}"
    );
    let read = |outcome| metric(&text, REQUESTS_TOTAL, &[("route", "get-task"), ("outcome", outcome)]);
    assert_eq!(
        read("diverged"),
        0.0,
        "a read racing a pending write is never a divergence"
    );
    assert!(
        read("racy") >= 1.0,
        "with a slow shadow some reads race the writes: {text}"
    );
    // The create's read-back (`verify`) falls under get-task too.
    let total = metric(&text, REQUESTS_TOTAL, &[("route", "get-task")]);
    assert_eq!(read("racy") + read("match"), total, "{text}");
    proxy.shutdown().await;
    rig.assert_same_state().await;
}

#[tokio::test]
async fn an_unmapped_id_is_sent_unchanged_and_counted_never_a_divergence() {
    let rig = Rig::new(TaskApi::new(Flavor::Legacy), TaskApi::new(Flavor::Candidate)).await;
    rig.primary_api.seed_as("legacy-only", "from before the migration");
    let proxy = rig.setup().start().await;
    let (status, _) = send(proxy.proxy_addr, "GET", "/api/task/legacy-only", None).await;
    assert_eq!(status, 200);
    let admin = proxy.admin_addr;
    eventually("the read is counted as unmapped", || async {
        metric(&metrics_text(admin).await, IDMAP_UNMAPPED_TOTAL, &[("kind", "tasks")]) >= 1.0
    })
    .await;
    assert_eq!(outcomes(admin, "get-task", "skipped").await, 1.0);
    assert_eq!(outcomes(admin, "get-task", "diverged").await, 0.0);
    assert_eq!(rig.shadow.requests()[0].path_and_query, "/api/task/legacy-only");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_mapping_file_imports_its_good_rows_and_names_the_bad_ones_by_line() {
    let rig = Rig::new(TaskApi::new(Flavor::Legacy), TaskApi::new(Flavor::Candidate)).await;
    let file = rig.dir.path().join("id-mappings.json");
    std::fs::write(
        &file,
        "{\n  \"tasks\": {\n    \"p-1\": \"t-1\",\n    \"p-2\": 2,\n    \"p-3\": \"t-3\"\n  },\n  \"tags\": \"oops\"\n}\n",
    )
    .unwrap();
    let import = run_cutover(&["idmap", "import", file.to_str().unwrap(), "--store", &rig.store_url]).await;
    let stderr = String::from_utf8_lossy(&import.stderr);
    let stdout = String::from_utf8_lossy(&import.stdout);
    assert_eq!(import.status.code(), Some(1), "rows were skipped: {stdout}{stderr}");
    let name = file.display().to_string();
    assert!(
        stderr.contains(&format!("{name}:4: skipped: tasks \"p-2\"")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{name}:7: skipped: kind \"tags\"")),
        "{stderr}"
    );
    assert!(
        stdout.contains("2 pair(s) imported, 0 already known, 2 row(s) skipped"),
        "{stdout}"
    );
    assert_eq!(
        rig.pairs().await,
        BTreeMap::from([("p-1".into(), "t-1".into()), ("p-3".into(), "t-3".into())])
    );
    // Importing again adds nothing; a conflicting CSV row is reported, not applied.
    let csv = rig.dir.path().join("more.csv");
    std::fs::write(&csv, "kind,primary_id,shadow_id\ntasks,p-1,t-9\ntasks,p-4,t-4\n").unwrap();
    let import = run_cutover(&["idmap", "import", csv.to_str().unwrap(), "--store", &rig.store_url]).await;
    let stderr = String::from_utf8_lossy(&import.stderr);
    assert!(
        stderr.contains(":2: skipped: tasks: primary \"p-1\" is already paired with shadow \"t-1\""),
        "{stderr}"
    );
    let store = rig.store().await;
    let stored: Vec<IdPair> = store
        .id_pairs()
        .await
        .unwrap()
        .into_iter()
        .map(|(pair, _)| pair)
        .collect();
    assert_eq!(stored.len(), 3);
    store.close().await;
}

#[tokio::test]
async fn writes_wait_for_the_shadow_rate_limit_and_reads_beyond_it_are_skipped() {
    let rig = Rig::new(TaskApi::new(Flavor::Legacy), TaskApi::new(Flavor::Candidate)).await;
    rig.primary_api.seed_as("p-1", "rate limited");
    rig.shadow_api.seed_as("t-1", "rate limited");
    let mut setup = rig.setup();
    setup.shadow_extra = "rate_limit = \"4/s\"";
    let proxy = rig.start_with_map(&setup, "map.csv", "tasks,p-1,t-1\n").await;
    let started = std::time::Instant::now();
    for n in 0..8 {
        let (status, _) = send(
            proxy.proxy_addr,
            "PATCH",
            "/api/task/p-1",
            Some(json!({"title": format!("v{n}")})),
        )
        .await;
        assert_eq!(status, 200);
        let (status, _) = send(proxy.proxy_addr, "GET", "/api/task/p-1", None).await;
        assert_eq!(status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the client never waits for the rate limit"
    );
    let admin = proxy.admin_addr;
    eventually("every write reached the shadow", || async {
        outcomes(admin, "update-task", "match").await >= 8.0
    })
    .await;
    let text = metrics_text(admin).await;
    assert!(
        metric(&text, "cutover_mirror_dropped_total", &[("reason", "rate_limited")]) >= 1.0,
        "reads beyond the rate are skipped: {text}"
    );
    assert_eq!(
        metric(
            &text,
            REQUESTS_TOTAL,
            &[("route", "update-task"), ("outcome", "skipped")]
        ),
        0.0
    );
    let shadow_writes = rig
        .shadow
        .requests()
        .iter()
        .filter(|s| s.method == http::Method::PATCH)
        .count();
    assert_eq!(shadow_writes, 8, "a write is never dropped for the rate");
    proxy.shutdown().await;
    assert_eq!(rig.shadow_api.tasks()["t-1"].title, "v7");
}

#[tokio::test]
async fn writes_wait_for_a_slot_under_max_in_flight_and_none_is_dropped() {
    let shadow_api = TaskApi::new(Flavor::Candidate).with_write_delay(Duration::from_millis(200));
    let rig = Rig::new(TaskApi::new(Flavor::Legacy), shadow_api).await;
    let mut map = String::new();
    for n in 1..=4 {
        rig.primary_api.seed_as(&format!("p-{n}"), "slow shadow");
        rig.shadow_api.seed_as(&format!("t-{n}"), "slow shadow");
        map.push_str(&format!("tasks,p-{n},t-{n}\n"));
    }
    let mut setup = rig.setup();
    setup.mirror = "write_wait = \"2s\"\nmax_in_flight = 1";
    let proxy = rig.start_with_map(&setup, "map.csv", &map).await;
    // Four entities, four lanes: only the in-flight bound keeps them apart.
    let writes: Vec<_> = (1..=4)
        .map(|n| {
            let addr = proxy.proxy_addr;
            tokio::spawn(async move {
                send(
                    addr,
                    "PATCH",
                    &format!("/api/task/p-{n}"),
                    Some(json!({"title": "done"})),
                )
                .await
            })
        })
        .collect();
    for write in writes {
        assert_eq!(write.await.unwrap().0, 200);
    }
    let admin = proxy.admin_addr;
    eventually("every write reached the shadow", || async {
        outcomes(admin, "update-task", "match").await >= 4.0
    })
    .await;
    let text = metrics_text(admin).await;
    assert_eq!(
        metric(&text, "cutover_mirror_dropped_total", &[("reason", "in_flight_full")]),
        0.0,
        "a write waits for a slot, it is never skipped: {text}"
    );
    assert_eq!(metric(&text, WRITE_DRIFT_TOTAL, &[]), 0.0, "{text}");
    proxy.shutdown().await;
    for n in 1..=4 {
        assert_eq!(rig.shadow_api.tasks()[&format!("t-{n}")].title, "done");
    }
}

#[tokio::test]
async fn a_replay_through_the_admin_api_releases_the_held_entity() {
    let rig = Rig::new(TaskApi::new(Flavor::Legacy), TaskApi::new(Flavor::Candidate)).await;
    rig.primary_api.seed_as("p-1", "one");
    rig.shadow_api.seed_as("t-1", "one");
    let mut setup = rig.setup();
    setup.shadow_extra = "write_tries = 1";
    let proxy = rig
        .start_with_map(&setup, "map.json", r#"{"tasks": {"p-1": "t-1"}}"#)
        .await;
    let admin = proxy.admin_addr;
    rig.shadow_api.down.store(true, std::sync::atomic::Ordering::SeqCst);
    send(
        proxy.proxy_addr,
        "PATCH",
        "/api/task/p-1",
        Some(json!({"title": "two"})),
    )
    .await;
    let store = rig.store().await;
    eventually("the write drifted and is in the ledger", || async {
        store.ledger_count(LedgerState::Drift).await.unwrap() == 1
    })
    .await;
    rig.shadow_api.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let replay = |body: Value| {
        client()
            .post(format!("http://{admin}/api/drift/replay"))
            .bearer_auth("t0ken")
            .body(body.to_string())
            .send()
    };
    let refused = replay(json!({"id": 1, "all": true})).await.unwrap();
    assert_eq!(refused.status(), 400);
    let answer = replay(json!({"all": true})).await.unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    assert_eq!(body["replayed"][0]["state"], "reconciled", "{body}");
    assert_eq!(metric(&metrics_text(admin).await, DRIFT_OPEN, &[]), 0.0);
    // The entity is no longer held: the next write goes to the shadow.
    send(
        proxy.proxy_addr,
        "PATCH",
        "/api/task/p-1",
        Some(json!({"title": "three"})),
    )
    .await;
    eventually("the next write is compared", || async {
        outcomes(admin, "update-task", "match").await >= 1.0
    })
    .await;
    store.close().await;
    proxy.shutdown().await;
    assert_eq!(rig.shadow_api.tasks()["t-1"].title, "three");
    rig.assert_same_state().await;
}

/// config/tomos.toml in front of the two task APIs: a candidate that names
/// the new ID `taskId` instead of `notionPageId` (which the iOS app decodes)
/// shows as a divergence at /notionPageId, and the pair is still learned.
#[tokio::test]
async fn the_tomos_config_reports_a_create_answer_without_notion_page_id() {
    let primary = TaskApi::new(Flavor::Legacy).serve().await;
    let shadow = TaskApi::new(Flavor::Candidate).with_ids(Ids::Uuid).serve().await;
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("evidence.db").display());
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/tomos.toml"))
        .unwrap()
        .replace("https://tomos-notion.vercel.app", &primary.url())
        .replace("https://tomos-postgres.vercel.app", &shadow.url())
        .replace("0.0.0.0:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9901", "127.0.0.1:0");
    let text = format!("{text}\n[store]\nurl = \"{store_url}\"\n");
    let config = cutover::config::Config::parse(&text, "config/tomos.toml", &|_| None).unwrap();
    let proxy = cutover::app::start(config).await.unwrap();
    let (status, created) = send(proxy.proxy_addr, "POST", "/api/task", Some(json!({"task": "buy milk"}))).await;
    assert_eq!(status, 201);
    let primary_id = created["notionPageId"].as_str().unwrap().to_string();
    let admin = proxy.admin_addr;
    eventually("the create is judged diverged", || async move {
        outcomes(admin, "create-task", "diverged").await == 1.0
    })
    .await;
    proxy.shutdown().await;

    let groups = stored_groups(&store_url).await;
    assert!(
        groups.contains(&(
            "create-task".into(),
            "/notionPageId".into(),
            "missing_in_shadow".into(),
            1
        )),
        "{groups:?}"
    );
    let store = Store::open(&store_url, &StoreOptions::default()).await.unwrap();
    let pairs = store.id_pairs().await.unwrap();
    assert!(
        pairs.iter().any(|(pair, _)| pair.primary_id == primary_id),
        "the pair is learned from /notionPageId and /taskId: {pairs:?}"
    );
}
