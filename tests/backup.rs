//! Keeping the evidence: `cutover backup` copies a SQLite store while a
//! proxy goes on writing to it, and the copy opens and reports as a store;
//! it never overwrites a file and sends a PostgreSQL store to pg_dump. The
//! README's PostgreSQL recipe (pg_dump, then pg_restore into a new
//! database) is run as printed against CI's real server.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;

const ROUTES: &str = r#"
[[route]]
name = "things"
match = "GET /things"
"#;

/// A proxy whose shadow drops a field, recording into `store`.
async fn recording_proxy(store: String) -> (cutover::app::Running, Backend, Backend) {
    let primary = fixed(200, &[("content-type", "application/json")], br#"{"a":1,"b":2}"#).await;
    let shadow = fixed(200, &[("content-type", "application/json")], br#"{"a":1}"#).await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes = ROUTES;
    setup.store = store;
    setup.store_extra = r#"flush = "20ms""#;
    (setup.start().await, primary, shadow)
}

/// Sends requests until `stop` is set; returns how many were answered 200.
fn keep_asking(proxy: std::net::SocketAddr, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let http = client();
        let mut answered = 0;
        while !stop.load(Ordering::Relaxed) {
            let answer = http.get(format!("http://{proxy}/things")).send().await.unwrap();
            answered += usize::from(answer.status() == 200);
        }
        answered
    })
}

async fn exchanges_in(url: &str) -> i64 {
    let store = cutover::store::Store::open_existing(url, &Default::default())
        .await
        .unwrap();
    let count = store.exchange_count().await.unwrap();
    store.close().await;
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_store_is_copied_whole_while_the_proxy_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let (running, _primary, _shadow) = recording_proxy(store.clone()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let asking = keep_asking(running.proxy_addr, Arc::clone(&stop));
    // The store is written to all along, so a look may find it busy: only a
    // successful count says how far the proxy has got.
    eventually("the proxy has recorded", || async {
        match cutover::store::Store::open_existing(&store, &Default::default()).await {
            Ok(open) => {
                let count = open.exchange_count().await.unwrap_or(0);
                open.close().await;
                count > 20
            }
            Err(_) => false,
        }
    })
    .await;

    let out = dir.path().join("evidence.db");
    let out_arg = out.to_str().unwrap();
    let backed_up = run_cutover(&["backup", "--store", &store, "--out", out_arg]).await;
    let printed = String::from_utf8_lossy(&backed_up.stdout).into_owned();
    assert!(backed_up.status.success(), "{backed_up:?}");
    assert!(printed.contains(&format!("to {out_arg} (")), "{printed}");
    assert!(
        !dir.path().join("evidence.db.partial").exists(),
        "no partial copy is left"
    );
    stop.store(true, Ordering::Relaxed);
    assert!(asking.await.unwrap() > 20, "the clients kept being answered");

    let copy = format!("sqlite://{out_arg}");
    let copied = exchanges_in(&copy).await;
    assert!(copied > 20, "the copy holds what was recorded: {copied}");
    assert!(printed.contains(&format!("{copied} exchange rows")), "{printed}");
    // The copy is a snapshot: the live store goes on and holds at least as much.
    running.shutdown().await;
    assert!(exchanges_in(&store).await >= copied);
    let report = run_cutover(&["report", "--format", "json", "--store", &copy]).await;
    assert!(report.status.success(), "{report:?}");
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert!(
        report.to_string().contains("things"),
        "the copy reports the route: {report}"
    );

    let again = run_cutover(&["backup", "--store", &store, "--out", out_arg]).await;
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    let error = String::from_utf8_lossy(&again.stderr);
    assert!(error.contains(&format!("{out_arg} already exists")), "{error}");
    assert_eq!(exchanges_in(&copy).await, copied, "the earlier copy is untouched");
}

#[tokio::test]
async fn a_postgres_store_is_sent_to_pg_dump_without_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("evidence.db");
    let refused = run_cutover(&[
        "backup",
        "--store",
        "postgres://cutover@203.0.113.1:5432/none",
        "--out",
        out.to_str().unwrap(),
    ])
    .await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("back a PostgreSQL store up with pg_dump"), "{error}");
    assert!(!out.exists());
}

/// Runs a program of the README's recipe; panics with its output if it fails.
fn run(program: &str, args: &[&str]) {
    let ran = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program} (is postgresql-client installed?): {err}"));
    assert!(ran.status.success(), "{program} {args:?}: {ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_postgres_recipe_dumps_and_restores_a_store() {
    if std::env::var("CUTOVER_TEST_POSTGRES_URL").is_err() {
        eprintln!("CUTOVER_TEST_POSTGRES_URL is not set: the pg_dump recipe is not tried here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store(dir.path()).await;
    let (running, _primary, _shadow) = recording_proxy(store.clone()).await;
    for _ in 0..10 {
        let answer = client()
            .get(format!("http://{}/things", running.proxy_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    eventually("the proxy has recorded", || async { exchanges_in(&store).await == 10 }).await;
    // The dump is taken while the proxy still runs.
    let dump = dir.path().join("cutover-evidence.dump");
    let dump_arg = dump.to_str().unwrap();
    run(
        "pg_dump",
        &["--format=custom", "--no-owner", "--file", dump_arg, &store],
    );
    running.shutdown().await;

    let restored = shared_store(dir.path()).await;
    run("pg_restore", &["--no-owner", "--dbname", &restored, dump_arg]);
    assert_eq!(exchanges_in(&restored).await, 10);
    let report = run_cutover(&["report", "--format", "json", "--store", &restored]).await;
    assert!(report.status.success(), "{report:?}");
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert!(report.to_string().contains("things"), "{report}");
    drop_shared_store(&store).await;
    drop_shared_store(&restored).await;
}
