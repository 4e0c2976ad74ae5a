//! Recording through the real proxy into a real store: every request is a
//! row, divergences are grouped, secrets never land, and a store outage
//! buffers, then counts exactly what it had to drop.

mod common;

use bytes::Bytes;
use common::*;
use cutover::metrics::{REQUESTS_TOTAL, STORE_PENDING, STORE_RECORDS_LOST_TOTAL, STORE_WRITE_FAILURES_TOTAL};
use cutover::store::{Store, StoreOptions};
use sqlx::any::AnyPoolOptions;
use sqlx::Row;

fn json() -> Vec<(String, String)> {
    vec![("content-type".to_string(), "application/json".to_string())]
}

#[tokio::test]
async fn traffic_becomes_rows_and_groups_without_secrets() {
    let primary = backend(|seen: Seen| async move {
        let body = if seen.path_and_query.starts_with("/tasks") {
            r#"{"tasks":[{"id":1,"title":"a","due":"x"},{"id":2,"title":"b","due":"y"}],"user":{"password":"hunter2-p"}}"#
        } else {
            r#"{"ok":true}"#
        };
        respond(200, &json(), Bytes::from_static(body.as_bytes()))
    })
    .await;
    let shadow = backend(|seen: Seen| async move {
        let body = if seen.path_and_query.starts_with("/tasks") {
            r#"{"tasks":[{"id":1,"title":"A","due":"x"},{"id":2,"title":"B"}],"user":{"password":"hunter2-s"}}"#
        } else {
            r#"{"ok":true}"#
        };
        respond(200, &json(), Bytes::from_static(body.as_bytes()))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("evidence.db").display());
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.store = url.clone();
    setup.routes = "[redact]\njson = [\"**/password\"]\n\n[[route]]\nname = \"notify\"\nmatch = \"POST /notify\"\nmirror = \"off\"\n";
    let proxy = setup.start().await;
    let client = client();
    let base = format!("http://{}", proxy.proxy_addr);
    for _ in 0..3 {
        client
            .get(format!("{base}/tasks?token=hunter2&page=1"))
            .header("authorization", "Bearer hunter2")
            .header("cookie", "session=hunter2")
            .header("content-type", "application/json")
            .body(r#"{"login":"tom","password":"hunter2"}"#)
            .send()
            .await
            .unwrap();
    }
    client.get(format!("{base}/health")).send().await.unwrap();
    client
        .post(format!("{base}/notify"))
        .header("authorization", "Bearer hunter2")
        .send()
        .await
        .unwrap();
    wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[], 5.0).await;
    let report = proxy.shutdown().await;
    assert_eq!(report.unwritten.records, 0);

    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    assert_eq!(store.exchange_count().await.unwrap(), 5, "one row per request");
    let groups = store.groups().await.unwrap();
    let mut counted: Vec<(&str, &str, i64)> = groups
        .iter()
        .map(|g| (g.pattern.as_str(), g.kind.as_str(), g.count))
        .collect();
    counted.sort();
    // Three differences, each seen in all three exchanges: three groups, not nine.
    assert_eq!(
        counted,
        vec![
            ("/tasks/*/due", "missing_in_shadow", 3),
            ("/tasks/*/title", "value_changed", 3),
            ("/user/password", "value_changed", 3)
        ]
    );
    let password_group = groups.iter().find(|g| g.pattern == "/user/password").unwrap();
    let samples = store.samples(&password_group.key).await.unwrap();
    assert_eq!(samples.len(), 3, "up to five samples per group are kept");
    let sample = &samples[0];
    let differences = sample.differences.as_array().unwrap();
    let hidden = differences.iter().find(|d| d["path"] == "/user/password").unwrap();
    assert_eq!(
        (hidden["primary"].as_str(), hidden["shadow"].as_str()),
        (Some("[redacted]"), Some("[redacted]"))
    );
    assert_eq!(sample.request["headers"]["authorization"], "[redacted]");
    assert_eq!(sample.request["headers"]["cookie"], "[redacted]");
    assert_eq!(sample.request["path"], "/tasks?token=[redacted]&page=1");
    assert!(sample.request["body"]
        .as_str()
        .unwrap()
        .contains("\"password\": \"[redacted]\""));
    let unified = sample.unified_diff.as_deref().unwrap();
    assert!(
        unified.contains("-      \"title\": \"a\"\n+      \"title\": \"A\""),
        "{unified}"
    );
    assert!(!unified.contains("password\": \"hunter2"), "{unified}");
    store.close().await;

    // No secret anywhere in the database: dump every text column of every table.
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
    let tables = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '_sqlx%' AND name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut dumped = 0;
    for table in tables {
        let name: String = table.try_get(0).unwrap();
        let sql = sqlx::AssertSqlSafe(format!("SELECT * FROM {name}"));
        for row in sqlx::query(sql).fetch_all(&pool).await.unwrap() {
            for column in 0..row.len() {
                if let Ok(Some(text)) = row.try_get::<Option<String>, _>(column) {
                    dumped += 1;
                    assert!(!text.contains("hunter2"), "{name} holds a secret: {text}");
                }
            }
        }
    }
    assert!(dumped > 20, "the dump read the rows ({dumped} text values)");
    let paths: Vec<String> =
        sqlx::query("SELECT path FROM exchanges WHERE route = 'unmatched' AND path LIKE '/tasks%'")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get(0).unwrap())
            .collect();
    assert_eq!(paths, vec!["/tasks?token=[redacted]&page=1"; 3]);
}

#[tokio::test]
async fn a_store_outage_buffers_then_delivers_and_counts_exactly_what_it_drops() {
    let primary = fixed(200, &[("content-type", "application/json")], br#"{"a":1}"#).await;
    let shadow = fixed(200, &[("content-type", "application/json")], br#"{"a":1}"#).await;
    let dir = tempfile::tempdir().unwrap();
    // The directory does not exist yet: the store is "down" until it does.
    let store_dir = dir.path().join("later");
    let url = format!("sqlite://{}", store_dir.join("evidence.db").display());
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.store = url.clone();
    setup.mirror = "";
    // One record per batch: the writer holds at most one batch on top of the buffer.
    let text = setup
        .toml()
        .replace("[store]\n", "[store]\nbuffer = 4\nbatch = 1\nflush = \"50ms\"\n");
    let config = cutover::config::Config::parse(&text, "outage.toml", &|_| None).unwrap();
    let proxy = cutover::app::start(config).await.unwrap();
    let client = client();
    for _ in 0..7 {
        let response = client
            .get(format!("http://{}/a", proxy.proxy_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "the proxy serves while the store is down");
    }
    wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[], 7.0).await;
    let failures = wait_for_metric(proxy.admin_addr, STORE_WRITE_FAILURES_TOTAL, &[], 1.0).await;
    assert!(failures >= 1.0);
    let text = metrics_text(proxy.admin_addr).await;
    let lost = metric(&text, STORE_RECORDS_LOST_TOTAL, &[]);
    let pending = metric(&text, STORE_PENDING, &[]);
    assert_eq!(lost + pending, 7.0, "every record is pending or counted as lost");
    // At most buffer (4) + one batch (1) are held; the rest are counted as lost.
    assert!(pending <= 5.0 && lost >= 2.0, "lost {lost}, pending {pending}");

    std::fs::create_dir_all(&store_dir).unwrap();
    let mut left = pending;
    for _ in 0..300 {
        left = metric(&metrics_text(proxy.admin_addr).await, STORE_PENDING, &[]);
        if left == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0.0, "buffered records arrive when the store comes back");
    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    assert_eq!(store.exchange_count().await.unwrap() as f64, pending);
}

#[tokio::test]
async fn secrets_stay_out_of_the_logs() {
    let primary = fixed(
        200,
        &[("content-type", "application/json")],
        br#"{"password":"hunter2-p","a":1}"#,
    )
    .await;
    let shadow = fixed(
        200,
        &[("content-type", "application/json")],
        br#"{"password":"hunter2-s","a":2}"#,
    )
    .await;
    let down = format!("http://{}", closed_port().await);
    let dir = tempfile::tempdir().unwrap();
    let mut working = ProxySetup::new(primary.url(), shadow.url());
    working.store = format!("sqlite://{}", dir.path().join("logs.db").display());
    let mut failing = ProxySetup::new(down, shadow.url());
    failing.store = working.store.clone();
    for (name, setup) in [("working", working), ("failing", failing)] {
        let serve = ServeProcess::start(&setup, dir.path(), "debug");
        let proxy = serve.proxy.clone();
        for _ in 0..3 {
            client()
                .get(format!("http://{proxy}/a?token=hunter2"))
                .header("authorization", "Bearer hunter2")
                .header("cookie", "session=hunter2")
                .body(r#"{"password":"hunter2"}"#)
                .send()
                .await
                .unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let (_, logs) = tokio::task::spawn_blocking(move || serve.terminate()).await.unwrap();
        assert!(logs.len() > 3, "{name}: debug logs were captured");
        for line in &logs {
            assert!(!line.contains("hunter2"), "{name}: a secret reached the logs: {line}");
        }
        // What is logged about a request carries its span: id and route name.
        let in_requests: Vec<serde_json::Value> = logs
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|entry| entry["span"]["name"] == "request")
            .collect();
        assert!(!in_requests.is_empty(), "{name}: request logs carry the request span");
        for entry in &in_requests {
            assert_eq!(entry["span"]["request_id"].as_str().map(str::len), Some(36), "{entry}");
            assert_eq!(entry["span"]["route"], "unmatched", "{entry}");
        }
        // The span is debug-level; a warning names its request itself, at any level.
        let warnings: Vec<serde_json::Value> = logs
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|entry| entry["message"] == "serving upstream failed")
            .collect();
        assert_eq!(warnings.is_empty(), name == "working", "{name}: {warnings:?}");
        for entry in &warnings {
            assert_eq!(entry["request_id"].as_str().map(str::len), Some(36), "{entry}");
            assert_eq!(entry["route"], "unmatched", "{entry}");
        }
    }
}

/// A 10,000-item answer with about 30,000 differences: the proxy records
/// every kind of difference in it as a group, the order and the item
/// missing at the end included, however far past the kept examples they are.
#[tokio::test]
async fn a_large_answer_counts_in_every_group_it_has() {
    let (primary_list, shadow_list) = large_divergent_lists(10_000);
    let primary_body = Bytes::from(primary_list.to_string());
    let shadow_body = Bytes::from(shadow_list.to_string());
    let primary = backend(move |_| {
        let body = primary_body.clone();
        async move { respond(200, &json(), body) }
    })
    .await;
    let shadow = backend(move |_| {
        let body = shadow_body.clone();
        async move { respond(200, &json(), body) }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("evidence.db").display());
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.store = url.clone();
    setup.routes = LARGE_LIST_ROUTE;
    let proxy = setup.start().await;
    let answer = client()
        .get(format!("http://{}/tasks", proxy.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.bytes().await.unwrap().len(), primary_list.to_string().len());
    let diverged = wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[("outcome", "diverged")], 1.0).await;
    assert_eq!(diverged, 1.0, "{}", metrics_text(proxy.admin_addr).await);
    let report = proxy.shutdown().await;
    assert_eq!(report.unwritten.records, 0);

    let expected: Vec<(String, String, String, i64)> = LARGE_LIST_GROUPS
        .iter()
        .map(|(pattern, kind)| ("list".to_string(), pattern.to_string(), kind.to_string(), 1))
        .collect();
    assert_eq!(stored_groups(&url).await, expected);
}

/// Through the proxy: tied items in another order are a match under the
/// route's promised sort, an order that breaks it is one `order_only` group.
#[tokio::test]
async fn a_promised_sort_is_judged_through_the_proxy() {
    let primary = backend(|_| async move {
        let body = r#"{"tasks":[{"id":"a","priority":1},{"id":"b","priority":1},{"id":"c","priority":2}]}"#;
        respond(200, &json(), Bytes::from_static(body.as_bytes()))
    })
    .await;
    let shadow = backend(|seen: Seen| async move {
        let body = if seen.path_and_query == "/tied" {
            r#"{"tasks":[{"id":"b","priority":1},{"id":"a","priority":1},{"id":"c","priority":2}]}"#
        } else {
            r#"{"tasks":[{"id":"c","priority":2},{"id":"a","priority":1},{"id":"b","priority":1}]}"#
        };
        respond(200, &json(), Bytes::from_static(body.as_bytes()))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("evidence.db").display());
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.store = url.clone();
    setup.routes = r#"
[[route]]
name = "tied"
match = "GET /tied"
[route.compare]
unordered = { "/tasks" = "id" }
order_by = { "/tasks" = ["/priority"] }

[[route]]
name = "broken"
match = "GET /broken"
[route.compare]
unordered = { "/tasks" = "id" }
order_by = { "/tasks" = ["/priority"] }
"#;
    let proxy = setup.start().await;
    for path in ["tied", "broken"] {
        let answer = client()
            .get(format!("http://{}/{path}", proxy.proxy_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[], 2.0).await;
    let outcome = |route: &'static str, outcome: &'static str| {
        let admin = proxy.admin_addr;
        async move {
            metric(
                &metrics_text(admin).await,
                REQUESTS_TOTAL,
                &[("route", route), ("outcome", outcome)],
            )
        }
    };
    assert_eq!(outcome("tied", "match").await, 1.0);
    assert_eq!(outcome("broken", "diverged").await, 1.0);
    proxy.shutdown().await;

    assert_eq!(
        stored_groups(&url).await,
        [("broken".to_string(), "/tasks".to_string(), "order_only".to_string(), 1)]
    );
}
