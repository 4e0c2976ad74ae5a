//! The real binary: SIGTERM finishes in-flight requests and exits 0.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::*;

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let primary = backend(|_| async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        respond(200, &[], Bytes::from_static(b"done"))
    })
    .await;
    let shadow = fixed(200, &[], b"done").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cutover.toml");
    std::fs::write(&config, ProxySetup::new(primary.url(), shadow.url()).toml()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["--log-format", "json", "serve", "-c", config.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first log line says where it listens (port 0 picks a free one).
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let serving: serde_json::Value = loop {
        let line = lines.next().expect("cutover logged nothing").unwrap();
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
        if entry["message"] == "cutover is serving" {
            break entry;
        }
    };
    let proxy = serving["proxy"].as_str().unwrap().to_string();
    let in_flight = tokio::spawn(async move {
        let response = client().get(format!("http://{proxy}/slow")).send().await.unwrap();
        (response.status().as_u16(), response.bytes().await.unwrap())
    });
    for _ in 0..200 {
        if !primary.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(in_flight.await.unwrap(), (200, Bytes::from_static(b"done")));
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|line| line.contains("stopped cleanly")), "{rest:?}");
}
