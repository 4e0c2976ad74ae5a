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
            r#"{"tasks":[{"id":1,"title":"a","due":"x"},{"id":2,"title":"b","due":"y"}]}"#
        } else {
            r#"{"ok":true}"#
        };
        respond(200, &json(), Bytes::from_static(body.as_bytes()))
    })
    .await;
    let shadow = backend(|seen: Seen| async move {
        let body = if seen.path_and_query.starts_with("/tasks") {
            r#"{"tasks":[{"id":1,"title":"A","due":"x"},{"id":2,"title":"B"}]}"#
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
    setup.routes = "[[route]]\nname = \"notify\"\nmatch = \"POST /notify\"\nmirror = \"off\"\n";
    let proxy = setup.start().await;
    let client = client();
    let base = format!("http://{}", proxy.proxy_addr);
    for _ in 0..3 {
        client
            .get(format!("{base}/tasks?token=hunter2&page=1"))
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
    assert_eq!(report.records_unwritten, 0);

    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    assert_eq!(store.exchange_count().await.unwrap(), 5, "one row per request");
    let groups = store.groups().await.unwrap();
    let mut counted: Vec<(&str, &str, i64)> = groups
        .iter()
        .map(|g| (g.pattern.as_str(), g.kind.as_str(), g.count))
        .collect();
    counted.sort();
    // Two bugs, each seen in all three exchanges: two groups, not six.
    assert_eq!(
        counted,
        vec![
            ("/tasks/*/due", "missing_in_shadow", 3),
            ("/tasks/*/title", "value_changed", 3)
        ]
    );
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
    let text = setup
        .toml()
        .replace("[store]\n", "[store]\nbuffer = 4\nflush = \"50ms\"\n");
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
    // The writer holds one batch (the first record) while the buffer of 4 fills; 2 are lost.
    let lost = metric(&text, STORE_RECORDS_LOST_TOTAL, &[]);
    let pending = metric(&text, STORE_PENDING, &[]);
    assert_eq!(lost + pending, 7.0, "every record is pending or counted as lost");
    assert!(lost >= 2.0, "lost {lost}, pending {pending}");

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
