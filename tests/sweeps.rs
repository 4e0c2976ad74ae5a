//! Sweeps: synthetic reads on a schedule, compared like traffic but counted
//! apart, one request per ID when asked, and run once per interval across
//! every instance on the store.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use cutover::metrics::{REQUESTS_TOTAL, SWEEPS_TOTAL};

/// Both sides answer alike, each with its own IDs.
fn json_backend() -> impl Fn(Seen) -> std::future::Ready<http::Response<TestBody>> + Clone {
    move |seen: Seen| {
        let id = seen.path_and_query.rsplit('/').next().unwrap_or_default().to_string();
        let body = if seen.path_and_query.starts_with("/api/task/") {
            format!(r#"{{"id":"{id}","title":"same"}}"#)
        } else {
            r#"{"tasks":[]}"#.to_string()
        };
        std::future::ready(respond(
            200,
            &[("content-type".into(), "application/json".into())],
            Bytes::from(body),
        ))
    }
}

const ROUTES: &str = r#"
[[route]]
name = "all-tasks"
match = "GET /api/all-tasks"

[[route]]
name = "get-task"
match = "GET /api/task/{id:tasks}"
[route.compare]
ids = { "/id" = "tasks" }

[[sweep]]
request = "GET /api/all-tasks"
every = "1s"

[[sweep]]
name = "every task"
request = "GET /api/task/{id}"
ids = "tasks"
every = "1h"
rate = "50/s"
"#;

async fn start(primary: &Backend, shadow: &Backend, dir: &std::path::Path, store: &str) -> cutover::app::Running {
    let mapping = dir.join("map.csv");
    std::fs::write(&mapping, "tasks,p1,s1\ntasks,p2,s2\ntasks,p3,s3\n").unwrap();
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.store = store.to_string();
    setup.routes = ROUTES;
    let toml = setup.toml().replace(
        "[store]",
        &format!("[idmap]\nimport = [\"{}\"]\n\n[store]", mapping.display()),
    );
    let config = cutover::config::Config::parse(&toml, "test.toml", &|_| None).unwrap();
    cutover::app::start(config).await.unwrap()
}

#[tokio::test]
async fn sweeps_compare_both_sides_while_clients_are_idle_and_are_counted_apart() {
    let primary = backend(json_backend()).await;
    let shadow = backend(json_backend()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let proxy = start(&primary, &shadow, dir.path(), &store).await;
    let admin = proxy.admin_addr;
    assert!(
        wait_for_metric(admin, SWEEPS_TOTAL, &[("route", "get-task"), ("outcome", "match")], 3.0).await >= 3.0,
        "every mapped task was read on both sides and matched"
    );
    assert!(
        wait_for_metric(
            admin,
            SWEEPS_TOTAL,
            &[("route", "all-tasks"), ("outcome", "match")],
            2.0
        )
        .await
            >= 2.0
    );
    assert_eq!(
        metric(&metrics_text(admin).await, REQUESTS_TOTAL, &[]),
        0.0,
        "no client traffic was counted"
    );
    let shadow_paths: Vec<String> = shadow
        .requests()
        .iter()
        .map(|seen| seen.path_and_query.clone())
        .collect();
    for id in ["s1", "s2", "s3"] {
        assert!(
            shadow_paths.contains(&format!("/api/task/{id}")),
            "the shadow gets its own IDs: {shadow_paths:?}"
        );
    }
    assert!(primary
        .requests()
        .iter()
        .all(|seen| seen.headers["x-cutover-sweep"] == "1"));
    assert!(shadow
        .requests()
        .iter()
        .all(|seen| seen.headers["x-cutover-shadow"] == "1"));
    proxy.shutdown().await;
    let store = cutover::store::Store::open(&store, &cutover::store::StoreOptions::default())
        .await
        .unwrap();
    let summary = store.summary().await.unwrap();
    assert!(
        summary
            .iter()
            .any(|route| route.route == "get-task" && route.compared >= 3),
        "{summary:?}"
    );
}

#[tokio::test]
async fn two_instances_on_one_store_run_a_sweep_once_per_interval() {
    let primary = backend(json_backend()).await;
    let shadow = backend(json_backend()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store(dir.path()).await;
    let started = std::time::Instant::now();
    let a = start(&primary, &shadow, dir.path(), &store).await;
    let b = start(&primary, &shadow, dir.path(), &store).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    a.shutdown().await;
    b.shutdown().await;
    drop_shared_store(&store).await;
    let elapsed = started.elapsed().as_secs_f64();
    let lists = primary
        .requests()
        .iter()
        .filter(|seen| seen.path_and_query == "/api/all-tasks")
        .count();
    let per_task = primary
        .requests()
        .iter()
        .filter(|seen| seen.path_and_query == "/api/task/p1")
        .count();
    assert_eq!(per_task, 1, "the hourly sweep ran once, not once per instance");
    assert!(lists >= 2, "the 1 s sweep ran: {lists}");
    assert!(
        (lists as f64) <= elapsed.ceil() + 1.0,
        "{lists} runs of a 1 s sweep in {elapsed:.1} s: some ran twice"
    );
}
