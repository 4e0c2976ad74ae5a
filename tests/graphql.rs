//! POST reads and GraphQL: a route may declare POST a read (`reads`), and
//! on a GraphQL route the operation decides: queries are mirrored and
//! compared, mutations are writes (dual-written where the route says so,
//! else never sent to the shadow), and an `errors` array only one side
//! returns is a high-severity difference. Real servers, real sockets.

mod common;

use bytes::Bytes;
use common::*;
use cutover::metrics::{DIVERGENCES_TOTAL, MIRROR_DROPPED_TOTAL, REQUESTS_TOTAL};
use serde_json::{json, Value};

const ROUTES: &str = r#"
[[route]]
name = "graphql"
match = "POST /graphql"
mirror = "dual-write"
graphql = true
[route.compare]
allow_extra_fields = true

[[route]]
name = "graphql-reads"
match = "POST /graphql-reads"
graphql = true

[[route]]
name = "search"
match = "POST /search"
reads = ["POST"]

[[route]]
name = "create"
match = "POST /create"
"#;

/// A GraphQL API: `task` answers alike on both sides, `flaky` fails on the
/// shadow with a GraphQL error (HTTP 200), `addTask` creates; `/search`
/// and `/create` answer what they were sent.
fn api(side: &'static str) -> impl Fn(Seen) -> std::future::Ready<http::Response<TestBody>> + Clone {
    move |seen: Seen| {
        let asked: Value = serde_json::from_slice(&seen.body).unwrap_or(Value::Null);
        let document = asked["query"].as_str().unwrap_or_default();
        let mutation = asked["operationName"] == "Write" || document.trim_start().starts_with("mutation");
        let answer = if mutation {
            json!({"data": {"addTask": {"ok": true}}})
        } else if document.contains("flaky") && side == "shadow" {
            json!({"data": null, "errors": [{"message": "datastore timeout", "path": ["flaky"]}]})
        } else if document.contains("flaky") {
            json!({"data": {"flaky": {"title": "Buy milk"}}})
        } else if seen.path_and_query == "/search" {
            json!({"hits": [asked["q"].clone()]})
        } else {
            json!({"data": {"task": {"title": "Buy milk"}}})
        };
        std::future::ready(respond(
            200,
            &[("content-type".into(), "application/json".into())],
            Bytes::from(answer.to_string()),
        ))
    }
}

async fn post(proxy: std::net::SocketAddr, path: &str, body: Value) -> Value {
    let answer = client()
        .post(format!("http://{proxy}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap()
}

/// The requests a backend saw on a path whose body contains `needle`.
fn seen_with(backend: &Backend, path: &str, needle: &str) -> usize {
    backend
        .requests()
        .iter()
        .filter(|seen| seen.path_and_query == path && String::from_utf8_lossy(&seen.body).contains(needle))
        .count()
}

#[tokio::test]
async fn graphql_queries_are_compared_mutations_are_writes_and_errors_are_differences() {
    let primary = backend(api("primary")).await;
    let shadow = backend(api("shadow")).await;
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes = ROUTES;
    setup.store = store_url.clone();
    let proxy = setup.start().await;
    let (addr, admin) = (proxy.proxy_addr, proxy.admin_addr);

    // A query, named among two operations: mirrored, compared, a match.
    let both = "query Read { task(id: 1) { title } } mutation Write { addTask(title: \"x\") { ok } }";
    let answer = post(addr, "/graphql", json!({"query": both, "operationName": "Read"})).await;
    assert_eq!(answer["data"]["task"]["title"], "Buy milk");
    wait_for_metric(
        admin,
        REQUESTS_TOTAL,
        &[("route", "graphql"), ("outcome", "match")],
        1.0,
    )
    .await;

    // The same document running its mutation: a write, dual-written on this route.
    post(addr, "/graphql", json!({"query": both, "operationName": "Write"})).await;
    eventually("the mutation reached the shadow", || async {
        seen_with(&shadow, "/graphql", "\"Write\"") == 1
    })
    .await;
    assert_eq!(seen_with(&primary, "/graphql", "\"Write\""), 1);
    eventually("the mutation, and only it, is in the write ledger", || {
        let store_url = store_url.clone();
        async move {
            let Ok(store) = cutover::store::Store::open_existing(&store_url, &Default::default()).await else {
                return false;
            };
            let rows = store.ledger(None, 100).await.unwrap_or_default();
            store.close().await;
            rows.len() == 1 && rows[0].route == "graphql"
        }
    })
    .await;

    // A GraphQL error on the shadow only, at HTTP 200 on both, under
    // allow_extra_fields: still a high-severity divergence.
    let answer = post(addr, "/graphql", json!({"query": "{ flaky { title } }"})).await;
    assert_eq!(
        answer["data"]["flaky"]["title"], "Buy milk",
        "the client gets the primary's answer"
    );
    wait_for_metric(
        admin,
        REQUESTS_TOTAL,
        &[("route", "graphql"), ("outcome", "diverged")],
        1.0,
    )
    .await;
    wait_for_metric(
        admin,
        DIVERGENCES_TOTAL,
        &[("route", "graphql"), ("severity", "high")],
        1.0,
    )
    .await;

    // On a route that mirrors reads only, a mutation never reaches the shadow.
    post(
        addr,
        "/graphql-reads",
        json!({"query": "mutation { addTask(title: \"y\") { ok } }"}),
    )
    .await;
    post(
        addr,
        "/graphql-reads",
        json!({"query": "query { task(id: 2) { title } }"}),
    )
    .await;
    wait_for_metric(
        admin,
        REQUESTS_TOTAL,
        &[("route", "graphql-reads"), ("outcome", "match")],
        1.0,
    )
    .await;
    wait_for_metric(
        admin,
        REQUESTS_TOTAL,
        &[("route", "graphql-reads"), ("outcome", "skipped")],
        1.0,
    )
    .await;
    assert_eq!(seen_with(&shadow, "/graphql-reads", "addTask"), 0);
    assert_eq!(seen_with(&primary, "/graphql-reads", "addTask"), 1);
    assert_eq!(seen_with(&shadow, "/graphql-reads", "task(id: 2)"), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_post_declared_a_read_is_compared_and_other_posts_are_not_mirrored() {
    let primary = backend(api("primary")).await;
    let shadow = backend(api("shadow")).await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes = ROUTES;
    let proxy = setup.start().await;
    let (addr, admin) = (proxy.proxy_addr, proxy.admin_addr);
    let answer = post(addr, "/search", json!({"q": "milk"})).await;
    assert_eq!(answer, json!({"hits": ["milk"]}));
    wait_for_metric(admin, REQUESTS_TOTAL, &[("route", "search"), ("outcome", "match")], 1.0).await;
    let mirrored = shadow.requests();
    assert!(
        mirrored
            .iter()
            .any(|seen| seen.path_and_query == "/search" && seen.body == r#"{"q":"milk"}"#),
        "the shadow got the POST with its body"
    );
    let off_before = metric(
        &metrics_text(admin).await,
        MIRROR_DROPPED_TOTAL,
        &[("reason", "mirror_off")],
    );
    post(addr, "/create", json!({"title": "x"})).await;
    wait_for_metric(
        admin,
        MIRROR_DROPPED_TOTAL,
        &[("reason", "mirror_off")],
        off_before + 1.0,
    )
    .await;
    assert!(!shadow.requests().iter().any(|seen| seen.path_and_query == "/create"));
    proxy.shutdown().await;
}
