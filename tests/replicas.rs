//! Several instances on one store (CI's PostgreSQL when it is there, else a
//! SQLite file): an ID pair learned through one instance is used by the
//! others at once, so a create through replica A and an update through
//! replica B reach the shadow with the shadow's own ID.

mod common;

use common::tasks::{Flavor, Host, TaskApi, ROUTES};
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn a_create_through_one_replica_and_an_update_through_another_translate_the_id() {
    let legacy = TaskApi::new(Flavor::Legacy);
    let candidate = TaskApi::new(Flavor::Candidate);
    let (primary, shadow) = (legacy.serve().await, candidate.serve().await);
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store(dir.path()).await;
    let start = || {
        let mut setup = ProxySetup::new(primary.url(), shadow.url());
        setup.store = store.clone();
        setup.routes = ROUTES;
        async move { setup.start().await }
    };
    let (a, b) = (start().await, start().await);
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
