//! Several instances on one store (CI's PostgreSQL when it is there, else a
//! SQLite file): an ID pair learned through one instance is used by the
//! others at once, so a create through replica A and an update through
//! replica B reach the shadow with the shadow's own ID.

mod common;

use common::tasks::{Flavor, Host, TaskApi, ROUTES};
use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

/// The task API on both sides, and two instances of cutover in front of
/// them on one store.
struct Replicas {
    candidate: TaskApi,
    shadow: Backend,
    a: cutover::app::Running,
    b: cutover::app::Running,
    store: String,
    /// The legacy and its server, and the directory of a SQLite store:
    /// held until the test ends.
    _backends: (TaskApi, Backend, tempfile::TempDir),
}

async fn two_replicas(store_extra: &'static str) -> Replicas {
    let legacy = TaskApi::new(Flavor::Legacy);
    let candidate = TaskApi::new(Flavor::Candidate);
    let (primary, shadow) = (legacy.serve().await, candidate.serve().await);
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store(dir.path()).await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.store = store.clone();
    setup.store_extra = store_extra;
    setup.routes = ROUTES;
    let (a, b) = (setup.start().await, setup.start().await);
    Replicas {
        candidate,
        shadow,
        a,
        b,
        store,
        _backends: (legacy, primary, dir),
    }
}

#[tokio::test]
async fn a_create_through_one_replica_and_an_update_through_another_translate_the_id() {
    let Replicas {
        candidate,
        shadow,
        a,
        b,
        store,
        _backends,
    } = two_replicas("").await;
    let created = client()
        .post(format!("http://{}/api/task", a.proxy_addr))
        .header("content-type", "application/json")
        .body(json!({"task": "made through A"}).to_string())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let id = serde_json::from_slice::<Value>(&created).unwrap()["notionPageId"]
        .as_str()
        .unwrap()
        .to_string();
    // At once, through the other replica.
    let status = client()
        .patch(format!("http://{}/api/task/{id}", b.proxy_addr))
        .header("content-type", "application/json")
        .body(json!({"title": "renamed through B"}).to_string())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let matched = wait_for_metric(
        b.admin_addr,
        "cutover_requests_total",
        &[("route", "update-task"), ("outcome", "match")],
        1.0,
    )
    .await;
    assert_eq!(matched, 1.0, "{}", metrics_text(b.admin_addr).await);
    let updates: Vec<String> = shadow
        .requests()
        .iter()
        .filter(|seen| seen.method == http::Method::PATCH)
        .map(|seen| seen.path_and_query.clone())
        .collect();
    assert_eq!(updates, ["/api/task/t-1"], "replica B sent the shadow its own ID");
    // B compares lists through the pair too (it reached B's map in the background).
    let mut listed = 0.0;
    for _ in 0..50 {
        client()
            .get(format!("http://{}/api/all-tasks", b.proxy_addr))
            .send()
            .await
            .unwrap();
        listed = wait_for_metric(
            b.admin_addr,
            "cutover_requests_total",
            &[("route", "all-tasks"), ("outcome", "match")],
            1.0,
        )
        .await;
        if listed >= 1.0 {
            break;
        }
    }
    assert!(listed >= 1.0, "{}", metrics_text(b.admin_addr).await);
    a.shutdown().await;
    b.shutdown().await;
    assert_eq!(candidate.tasks()["t-1"].title, "renamed through B");
    drop_shared_store(&store).await;
}

/// Two replicas on one store, under concurrent traffic, add into the same
/// rollup rows: every request counts once in the summary and the report,
/// whether or not its raw row was kept.
#[tokio::test]
async fn two_replicas_count_every_request_once_in_the_shared_rollups() {
    let Replicas {
        a,
        b,
        store,
        candidate: _candidate,
        shadow: _shadow,
        _backends,
    } = two_replicas("keep_matches = \"2/s\"\nbatch = 16\nflush = \"20ms\"").await;
    const REQUESTS: usize = 400;
    let sends = (0..REQUESTS).map(|i| {
        let proxy = if i % 2 == 0 { a.proxy_addr } else { b.proxy_addr };
        async move {
            client()
                .get(format!("http://{proxy}/api/all-tasks"))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let statuses = futures_util::stream::iter(sends)
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
    let left_out = metric(
        &metrics_text(a.admin_addr).await,
        "cutover_store_rows_left_out_total",
        &[],
    ) + metric(
        &metrics_text(b.admin_addr).await,
        "cutover_store_rows_left_out_total",
        &[],
    );
    a.shutdown().await;
    b.shutdown().await;
    let opened = cutover::store::Store::open_existing(&store, &cutover::store::StoreOptions::default())
        .await
        .unwrap();
    let summary = opened.summary().await.unwrap();
    let all_tasks = summary.iter().find(|route| route.route == "all-tasks").unwrap();
    assert_eq!(all_tasks.requests, REQUESTS as i64, "{summary:?}");
    let now = cutover::clock::now_ms();
    let span = cutover::report::Span::since(std::time::Duration::from_secs(3600), now);
    let report = cutover::report::Report::build(&opened, span, &cutover::report::Readiness::default(), now)
        .await
        .unwrap();
    let route = report.routes.iter().find(|route| route.route == "all-tasks").unwrap();
    assert_eq!(route.requests, REQUESTS as u64);
    let rows = opened.exchange_count().await.unwrap();
    assert!(
        rows < REQUESTS as i64,
        "keep_matches left some matches out: {rows} rows"
    );
    let final_left_out = REQUESTS as i64 - rows;
    assert!(
        final_left_out as f64 >= left_out,
        "{final_left_out} rows left out, {left_out} counted before the stop"
    );
    opened.close().await;
    drop_shared_store(&store).await;
}
