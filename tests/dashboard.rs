//! The Grafana dashboard against the real things: its structure, every
//! PromQL expression evaluated by a real Prometheus scraping a running
//! proxy (each must return a series), and every SQL query run against the
//! store's real PostgreSQL schema (each must return rows).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use cutover::store::{ExchangeRecord, GroupRef, Store, StoreOptions};
use serde_json::Value;

fn dashboard() -> Value {
    serde_json::from_str(include_str!("../dashboards/cutover.json")).expect("dashboards/cutover.json is valid JSON")
}

fn panels(dashboard: &Value) -> Vec<&Value> {
    dashboard["panels"].as_array().unwrap().iter().collect()
}

/// Every PromQL expression of the dashboard (panels and variables).
fn promql(dashboard: &Value) -> Vec<String> {
    let mut exprs: Vec<String> = panels(dashboard)
        .iter()
        .flat_map(|panel| panel["targets"].as_array().into_iter().flatten())
        .filter_map(|target| target["expr"].as_str().map(str::to_string))
        .collect();
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            // label_values(metric, label) is Grafana's; Prometheus sees the metric.
            let metric = query.trim_start_matches("label_values(").split(',').next().unwrap();
            exprs.push(metric.to_string());
        }
    }
    exprs
}

/// Every SQL query of the dashboard (panels and annotations).
fn sql(dashboard: &Value) -> Vec<String> {
    let mut queries: Vec<String> = panels(dashboard)
        .iter()
        .flat_map(|panel| panel["targets"].as_array().into_iter().flatten())
        .filter_map(|target| target["rawSql"].as_str().map(str::to_string))
        .collect();
    for annotation in dashboard["annotations"]["list"].as_array().unwrap() {
        if let Some(query) = annotation["target"]["rawSql"].as_str() {
            queries.push(query.to_string());
        }
    }
    queries
}

/// What Grafana substitutes before a query runs, as a test run has it.
fn substitute(query: &str, primary: &str, shadow: &str, now_s: i64) -> String {
    query
        .replace("$__rate_interval", "30s")
        .replace("$__unixEpochFrom()", "0")
        .replace("$__unixEpochTo()", &(now_s + 60).to_string())
        .replace("$route", ".*")
        .replace("$primary", primary)
        .replace("$shadow", shadow)
}

#[test]
fn the_dashboard_is_well_formed_and_names_only_exported_metrics() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "cutover");
    let mut ids = HashSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_i64().unwrap()),
            "panel id of {title} is not unique"
        );
        if panel["type"] == "row" {
            continue;
        }
        let source = panel["datasource"]["uid"].as_str().unwrap_or_default();
        assert!(
            source == "${datasource}" || source == "${store}",
            "{title}: datasource {source}"
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no targets");
        for target in targets {
            assert!(
                target["expr"].is_string() || target["rawSql"].is_string(),
                "{title}: {target}"
            );
        }
    }
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for needed in ["datasource", "store", "route"] {
        assert!(variables.contains(&needed), "no ${needed} variable");
    }
    let exported: HashSet<&str> = cutover::metrics::ALL.into_iter().collect();
    let mut named = HashSet::new();
    for expr in promql(&dashboard) {
        for (start, _) in expr.match_indices("cutover_") {
            let name: String = expr[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name)
                .to_string();
            assert!(
                exported.contains(base.as_str()),
                "the dashboard names {name}, which cutover does not export"
            );
            named.insert(base);
        }
    }
    for name in exported {
        assert!(
            named.contains(name) || name == cutover::metrics::BUILD_INFO,
            "the dashboard shows nothing of {name}"
        );
    }
}

/// A proxy with traffic that makes every metric the dashboard reads exist:
/// matches, divergences, shadow errors, skips, drift, unmapped IDs, ID pairs.
async fn busy_proxy(dir: &std::path::Path) -> (cutover::app::Running, Backend, Backend) {
    let primary = backend(|seen: Seen| async move {
        let body = if seen.path_and_query.starts_with("/slow") {
            tokio::time::sleep(Duration::from_millis(30)).await;
            r#"{"a":1}"#
        } else {
            r#"{"a":1}"#
        };
        respond(
            200,
            &[("content-type".into(), "application/json".into())],
            Bytes::from_static(body.as_bytes()),
        )
    })
    .await;
    let shadow = backend(|seen: Seen| async move {
        let (status, body) = match (seen.method.as_str(), seen.path_and_query.as_str()) {
            ("PATCH", _) => (503, r#"{"down":true}"#),
            (_, "/boom") => (500, r#"{"e":1}"#),
            (_, "/differs") => (200, r#"{"a":2}"#),
            _ => (200, r#"{"a":1}"#),
        };
        respond(
            status,
            &[("content-type".into(), "application/json".into())],
            Bytes::from_static(body.as_bytes()),
        )
    })
    .await;
    let mapping = dir.join("map.csv");
    std::fs::write(&mapping, "tasks,p-1,s-1\n").unwrap();
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.shadow_extra = "write_tries = 1";
    setup.routes = r#"
[[route]]
name = "task"
match = "GET /task/{id:tasks}"

[[route]]
name = "update"
match = "PATCH /task/{id:tasks}"
mirror = "dual-write"

[[route]]
name = "side-effect"
match = "POST /notify"
mirror = "off"
"#;
    let toml = setup.toml().replace(
        "[store]",
        &format!("[idmap]\nimport = [\"{}\"]\n\n[store]", mapping.display()),
    ) + "\n[[notify]]\nname = \"team\"\nurl_env = \"TEAM_WEBHOOK\"\n";
    // The receiver is never up: the sink's series show from the start anyway.
    let env = |name: &str| (name == "TEAM_WEBHOOK").then(|| "http://127.0.0.1:9/hook".to_string());
    let config = cutover::config::Config::parse(&toml, "test.toml", &env).unwrap();
    (cutover::app::start(config).await.unwrap(), primary, shadow)
}

async fn drive(proxy: std::net::SocketAddr) {
    let http = client();
    for path in ["/same", "/differs", "/boom", "/slow", "/task/p-1", "/task/unknown"] {
        let _ = http.get(format!("http://{proxy}{path}")).send().await;
    }
    let _ = http.patch(format!("http://{proxy}/task/p-1")).body("{}").send().await;
    let _ = http.post(format!("http://{proxy}/notify")).send().await;
}

#[tokio::test]
async fn every_promql_expression_returns_a_series_from_a_real_prometheus() {
    let prometheus = std::path::Path::new("/usr/bin/prometheus");
    if !prometheus.exists() {
        assert!(
            std::env::var_os("CUTOVER_TEST_REQUIRE_PROMETHEUS").is_none(),
            "CUTOVER_TEST_REQUIRE_PROMETHEUS is set but /usr/bin/prometheus is missing"
        );
        eprintln!("note: /usr/bin/prometheus is not installed; the Prometheus test is skipped (CI installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (proxy, _primary, _shadow) = busy_proxy(dir.path()).await;
    drive(proxy.proxy_addr).await;
    let port = free_port().await;
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: cutover\n    static_configs:\n      - targets: ['{}']\n",
            proxy.admin_addr
        ),
    )
    .unwrap();
    let mut server = std::process::Command::new(prometheus)
        .args([
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let api = format!("http://127.0.0.1:{port}");
    // Keep traffic flowing while Prometheus scrapes, so rates have samples.
    for _ in 0..8 {
        drive(proxy.proxy_addr).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let dashboard = dashboard();
    let mut empty = Vec::new();
    for expr in promql(&dashboard) {
        let query = substitute(&expr, "legacy", "candidate", 0);
        let mut series = 0;
        for _ in 0..40 {
            let encoded: String = form_urlencoded::byte_serialize(query.as_bytes()).collect();
            let answer = client().get(format!("{api}/api/v1/query?query={encoded}")).send().await;
            if let Ok(answer) = answer {
                let body: Value = serde_json::from_slice(&answer.bytes().await.unwrap_or_default()).unwrap_or_default();
                assert_ne!(body["status"], "error", "Prometheus rejected {query}: {body}");
                series = body["data"]["result"].as_array().map_or(0, Vec::len);
                if series > 0 {
                    break;
                }
            }
            drive(proxy.proxy_addr).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if series == 0 {
            empty.push(query);
        }
    }
    // The mode and verdict tiles show one series each, named for what is in
    // force; the speedup's variables start on the primary and the shadow.
    let labels = |query: String, label: &'static str| {
        let url = format!(
            "{api}/api/v1/query?query={}",
            form_urlencoded::byte_serialize(query.as_bytes()).collect::<String>()
        );
        async move {
            let body: Value =
                serde_json::from_slice(&client().get(url).send().await.unwrap().bytes().await.unwrap()).unwrap();
            let result = body["data"]["result"].as_array().cloned().unwrap_or_default();
            result
                .iter()
                .map(|series| series["metric"][label].as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        }
    };
    let expr_of = |title: &str| -> String {
        panels(&dashboard)
            .into_iter()
            .find(|panel| panel["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title}"))["targets"][0]["expr"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(labels(expr_of("Current mode"), "mode").await, ["shadow"]);
    assert_eq!(
        labels(expr_of("Readiness verdict (last 48h)"), "verdict").await,
        ["NOT YET"]
    );
    for (variable, backend) in [("primary", "legacy"), ("shadow", "candidate")] {
        let query = dashboard["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == variable)
            .unwrap()["query"]["query"]
            .as_str()
            .unwrap()
            .to_string();
        let metric = query
            .trim_start_matches("label_values(")
            .split(',')
            .next()
            .unwrap()
            .to_string();
        assert_eq!(labels(metric, "backend").await, [backend], "${variable}");
    }
    let _ = server.kill();
    let _ = server.wait();
    proxy.shutdown().await;
    assert!(empty.is_empty(), "these panel queries returned no series: {empty:#?}");
}

#[tokio::test]
async fn every_sql_query_returns_rows_from_the_real_postgres_schema() {
    if std::env::var_os("CUTOVER_TEST_POSTGRES_URL").is_none() {
        eprintln!("note: CUTOVER_TEST_POSTGRES_URL is not set; the dashboard's SQL is not run (CI sets it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = shared_store(dir.path()).await;
    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    store
        .record(&[ExchangeRecord {
            at_ms: now_ms,
            request_id: "r1".into(),
            route: "all-tasks".into(),
            method: "GET".into(),
            path: "/api/all-tasks".into(),
            source: "traffic".into(),
            primary_status: Some(200),
            shadow_status: Some(200),
            primary_ms: Some(1200.0),
            shadow_ms: Some(80.0),
            outcome: "diverged".into(),
            reason: None,
            primary_cache: None,
            shadow_cache: None,
            groups: vec![GroupRef {
                key: "0123456789abcdef".into(),
                route: "all-tasks".into(),
                method: "GET".into(),
                location: "body".into(),
                pattern: "/tasks/*/status".into(),
                kind: "value_changed".into(),
                severity: "high".into(),
                summary: "value_changed at /tasks/*/status".into(),
            }],
            samples: Vec::new(),
            learned_ids: Vec::new(),
            ledger: None,
            served: "primary".into(),
        }])
        .await
        .unwrap();
    store
        .add_event(
            "mode_switch",
            &serde_json::json!({"from": "shadow", "to": "candidate"}),
            now_ms,
        )
        .await
        .unwrap();
    store.close().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    for query in sql(&dashboard()) {
        let query = substitute(&query, "legacy", "candidate", now_ms / 1000);
        let rows = sqlx::query(sqlx::AssertSqlSafe(query.clone()))
            .fetch_all(&pool)
            .await
            .unwrap_or_else(|err| panic!("the store's schema rejects a dashboard query: {err}\n{query}"));
        assert!(!rows.is_empty(), "no rows from\n{query}");
    }
    pool.close().await;
    drop_shared_store(&url).await;
}

/// The deployment files agree with the code: the Kubernetes config is a
/// valid cutover config, and the compose stack scrapes the admin port its
/// config listens on and mounts the dashboard and provisioning that exist.
#[test]
fn the_deployment_files_agree_with_the_code() {
    let manifest = include_str!("../deploy/k8s/cutover.yaml");
    let embedded: String = manifest
        .split("cutover.toml: |\n")
        .nth(1)
        .unwrap()
        .split("\n---")
        .next()
        .unwrap()
        .lines()
        .map(|line| line.strip_prefix("    ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n");
    let config = cutover::config::Config::parse(&embedded, "deploy/k8s/cutover.yaml", &|_| None).unwrap();
    let admin_port = config.listen.admin.port().to_string();
    assert!(manifest.contains(&format!("prometheus.io/port: \"{admin_port}\"")));
    assert!(manifest.contains(&format!("containerPort: {admin_port}")));
    let compose_config = cutover::config::Config::load(std::path::Path::new("config/compose.toml")).unwrap();
    let scrape = include_str!("../deploy/prometheus.yml");
    assert!(scrape.contains(&format!("cutover:{}", compose_config.listen.admin.port())));
    let compose = include_str!("../deploy/docker-compose.yml");
    for mounted in [
        "../dashboards/provisioning",
        "../dashboards/cutover.json",
        "./prometheus.yml",
        "./postgres-init.sh",
    ] {
        assert!(compose.contains(mounted), "{mounted} is not mounted");
        let path = std::path::Path::new("deploy").join(mounted);
        assert!(path.exists(), "{} does not exist", path.display());
    }
    let datasources = include_str!("../dashboards/provisioning/datasources/cutover.yml");
    assert!(datasources.contains("grafana-postgresql-datasource") && datasources.contains("type: prometheus"));
}
