//! `cutover diff A B`: the offline view of the same engine, with diff(1)'s exit codes.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn cutover(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn write(dir: &Path, name: &str, content: &str) {
    std::fs::write(dir.join(name), content).unwrap();
}

#[test]
fn diff_exits_like_diff1_and_prints_each_format() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "a.http",
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\":1,\"b\":[1,2]}",
    );
    write(
        d,
        "b.http",
        "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n\r\n{\"a\":2,\"b\":[1,2],\"c\":true}",
    );

    let same = cutover(&["diff", "a.http", "a.http"], d);
    assert_eq!(same.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&same.stdout), "match\n");

    let text = cutover(&["diff", "a.http", "b.http"], d);
    assert_eq!(text.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.starts_with("diverged: 2 differences in 2 groups\n"), "{stdout}");
    assert!(stdout.contains("medium value_changed     /a: 1 -> 2\n"), "{stdout}");

    let json = cutover(&["diff", "a.http", "b.http", "--format", "json"], d);
    assert_eq!(json.status.code(), Some(1));
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let kinds: Vec<&str> = parsed["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["value_changed", "extra_in_shadow"]);
    assert_eq!(parsed["differences"][0]["group_key"].as_str().unwrap().len(), 16);

    let patch = cutover(&["diff", "a.http", "b.http", "--format", "patch"], d);
    let ops: serde_json::Value = serde_json::from_slice(&patch.stdout).unwrap();
    assert_eq!(
        ops,
        serde_json::json!([{"op": "replace", "path": "/a", "value": 1}, {"op": "remove", "path": "/c"}])
    );
}

#[test]
fn diff_applies_a_routes_rules_from_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "notion.json",
        r#"{"success":true,"count":2,"source":"notion","tasks":[{"id":"t1","title":"Buy milk","dueDate":"2026-01-20T09:00:00.000+11:00"},{"id":"t2","title":"Call"}]}"#,
    );
    write(
        d,
        "postgres.json",
        r#"{"success":true,"count":2,"source":"postgres","tasks":[{"id":"t2","title":"Call"},{"id":"t1","title":"Buy milk","dueDate":"2026-01-19T22:00:00Z"}]}"#,
    );
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tomos.toml");
    let config = config.to_str().unwrap();
    let without_rules = cutover(&["diff", "notion.json", "postgres.json"], d);
    assert_eq!(without_rules.status.code(), Some(1));
    let with_rules = cutover(
        &[
            "diff",
            "notion.json",
            "postgres.json",
            "-c",
            config,
            "--route",
            "all-tasks",
        ],
        d,
    );
    let stdout = String::from_utf8_lossy(&with_rules.stdout);
    assert_eq!(
        stdout,
        concat!(
            "diverged: 1 difference in 1 group\n  low    order_only        /tasks: ",
            r#""id=t1 (/priority=null, /dueDate=\"2026-01-20T09:00:00.000+11:00\") before id=t2 (/priority=null, /dueDate=null)""#,
            " -> ",
            r#""id=t2 (/priority=null, /dueDate=null) before id=t1 (/priority=null, /dueDate=\"2026-01-19T22:00:00Z\")""#,
            "\n"
        )
    );
    assert_eq!(
        with_rules.status.code(),
        Some(1),
        "an order that breaks the promised sort (due date) is reported, at low severity"
    );

    let unknown = cutover(
        &["diff", "notion.json", "postgres.json", "-c", config, "--route", "nope"],
        d,
    );
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no route named \"nope\" (routes: all-tasks, smart-surface,")
    );
}

#[test]
fn diff_errors_exit_2_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "broken.http", "HTTP/1.1 200 OK\r\nX: 1\r\n");
    write(d, "ok.json", "{}");
    let missing = cutover(&["diff", "ok.json", "missing.json"], d);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read missing.json"));
    let broken = cutover(&["diff", "broken.http", "ok.json"], d);
    assert_eq!(broken.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&broken.stderr).contains("broken.http: the HTTP head is incomplete"));
}

#[test]
fn diff_reports_every_kind_in_a_large_answer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (primary, shadow) = common::large_divergent_lists(10_000);
    write(d, "primary.json", &primary.to_string());
    write(d, "shadow.json", &shadow.to_string());
    let mut setup = common::ProxySetup::new("http://127.0.0.1:9".into(), "http://127.0.0.1:9".into());
    setup.routes = common::LARGE_LIST_ROUTE;
    write(d, "cutover.toml", &setup.toml());
    let args = [
        "diff",
        "primary.json",
        "shadow.json",
        "-c",
        "cutover.toml",
        "--route",
        "list",
        "--format",
        "json",
    ];
    let output = cutover(&args, d);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let differences = parsed["differences"].as_array().unwrap();
    let groups: std::collections::BTreeSet<(String, String)> = differences
        .iter()
        .map(|d| {
            (
                d["pattern"].as_str().unwrap().to_string(),
                d["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = common::LARGE_LIST_GROUPS
        .iter()
        .map(|(pattern, kind)| (pattern.to_string(), kind.to_string()))
        .collect();
    assert_eq!(groups, expected);
    let truncated = parsed["truncated"].as_u64().unwrap();
    assert_eq!(differences.len() as u64 + truncated, 3 * 10_000 - 1);
}

/// Two saved lists whose IDs differ only as the ID map says: they match
/// through the config's imported map, and through the pairs of a store.
#[test]
fn diff_compares_ids_through_the_map_the_proxy_would_use() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "primary.json",
        r#"{"tasks":[{"id":"p-1","title":"a"},{"id":"p-2","title":"b"}]}"#,
    );
    write(
        d,
        "shadow.json",
        r#"{"tasks":[{"id":"s-1","title":"a"},{"id":"s-2","title":"b"}]}"#,
    );
    let route = "[[route]]\nname = \"list\"\nmatch = \"GET /tasks\"\n[route.compare]\nunordered = { \"/tasks\" = \"id\" }\nids = { \"/tasks/*/id\" = \"tasks\" }\n";
    let mut setup = common::ProxySetup::new("http://127.0.0.1:9".into(), "http://127.0.0.1:9".into());
    let store = format!("sqlite://{}", d.join("evidence.db").display());
    setup.store = store.clone();
    setup.routes = route;
    write(d, "without-import.toml", &setup.toml());
    let args = |config: &'static str| ["diff", "primary.json", "shadow.json", "-c", config, "--route", "list"];

    let unmapped = cutover(&args("without-import.toml"), d);
    assert_ne!(unmapped.status.code(), Some(0), "without pairs the IDs cannot match");
    assert!(!d.join("evidence.db").exists(), "diff never creates a store");

    let with_import = format!("[idmap]\nimport = [\"ids.json\"]\n\n{route}");
    setup.routes = Box::leak(with_import.into_boxed_str());
    write(d, "with-import.toml", &setup.toml());
    write(d, "ids.json", r#"{"tasks": {"p-1": "s-1", "p-2": "s-2"}}"#);
    let imported = cutover(&args("with-import.toml"), d);
    assert_eq!(String::from_utf8_lossy(&imported.stdout), "match\n");
    assert_eq!(imported.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&imported.stderr);
    assert!(
        stderr.contains("ID map: 2 pairs (2 from idmap.import, 0 from the store"),
        "{stderr}"
    );

    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let opened = cutover::store::Store::open(&store, &Default::default()).await.unwrap();
        let pair = |p: &str, s: &str| cutover::exchange::IdPair {
            kind: "tasks".into(),
            primary_id: p.into(),
            shadow_id: s.into(),
        };
        opened
            .insert_id_pairs(&[pair("p-1", "s-1"), pair("p-2", "s-2")], "learned", 1)
            .await
            .unwrap();
        opened.close().await;
    });
    let from_store = cutover(&args("without-import.toml"), d);
    assert_eq!(
        from_store.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&from_store.stdout)
    );
    assert!(String::from_utf8_lossy(&from_store.stderr).contains("(0 from idmap.import, 2 from the store"));
}
