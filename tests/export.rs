//! `cutover export`: what the store holds of divergences (and with
//! `--exchanges`, of every request) written as HAR 1.2 and JSON Lines,
//! redacted as stored, never over an existing file.

mod common;

use common::*;
use serde_json::Value;

#[tokio::test]
async fn samples_and_exchanges_are_exported_as_har_and_jsonl_without_secrets() {
    let primary = fixed(200, &[("content-type", "application/json")], br#"{"title":"Buy milk"}"#).await;
    let shadow = fixed(200, &[("content-type", "application/json")], br#"{"title":"buy milk"}"#).await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.store = store.clone();
    setup.routes = "[[route]]\nname = \"task\"\nmatch = \"GET /tasks/{id}\"\n";
    let proxy = setup.start().await;
    for id in ["1", "2", "3"] {
        let answer = client()
            .get(format!(
                "http://{}/tasks/{id}?view=full&api_key=k-{id}-secret",
                proxy.proxy_addr
            ))
            .header("authorization", "Bearer the-clients-own-token")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    wait_for_metric(
        proxy.admin_addr,
        cutover::metrics::REQUESTS_TOTAL,
        &[("outcome", "diverged")],
        3.0,
    )
    .await;
    proxy.shutdown().await;

    let har_path = dir.path().join("divergences.har");
    let har_arg = har_path.display().to_string();
    let output = run_cutover(&["export", "--format", "har", "--out", &har_arg, "--store", &store]).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = std::fs::read_to_string(&har_path).unwrap();
    assert!(
        !text.contains("the-clients-own-token") && !text.contains("-secret"),
        "{text}"
    );
    let har: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(har["log"]["version"], "1.2");
    let entries = har["log"]["entries"].as_array().unwrap();
    assert!(!entries.is_empty() && entries.len() <= 3, "{} samples", entries.len());
    let first = &entries[0];
    assert_eq!(first["request"]["method"], "GET");
    let url = first["request"]["url"].as_str().unwrap();
    assert!(
        url.starts_with("http://primary.invalid/tasks/") && url.contains("api_key=[redacted]"),
        "{url}"
    );
    let authorization = first["request"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|header| header["name"] == "authorization")
        .unwrap();
    assert_eq!(authorization["value"], "[redacted]");
    assert_eq!(first["_cutover"]["route"], "task");
    assert_eq!(first["_cutover"]["differences"][0]["path"], "/title");

    // Exported again to the same file: refused, and the file is untouched.
    let again = run_cutover(&["export", "--out", &har_arg, "--store", &store]).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwritten"));
    assert_eq!(std::fs::read_to_string(&har_path).unwrap(), text);

    // JSON Lines with every exchange: the samples and the three requests.
    let output = run_cutover(&["export", "--format", "jsonl", "--exchanges", "--store", &store]).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(!stdout.contains("the-clients-own-token") && !stdout.contains("-secret"));
    let records: Vec<Value> = stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let exchanges: Vec<&Value> = records.iter().filter(|r| r["cutover"]["kind"] == "exchange").collect();
    assert_eq!(exchanges.len(), 3, "{stdout}");
    assert!(exchanges
        .iter()
        .all(|r| r["cutover"]["outcome"] == "diverged" && r["status"] == 200));
    assert_eq!(records.len(), 3 + entries.len());
}
