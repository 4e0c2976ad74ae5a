//! A real full disk under the SQLite store: a 2 MB tmpfs holds the store
//! of a `cutover serve` process, a filler file takes its last byte during a
//! burst of dual-writes, and is removed again. The client never notices;
//! the store recovers within seconds, holds no more descriptors than its
//! pools, `/readyz` says what is true, and what a shutdown on a full disk
//! leaves unwritten is counted and said on stderr.
//!
//! Mounting a tmpfs needs root (CI runs as root); elsewhere the test prints
//! a note and skips, unless `CUTOVER_TEST_REQUIRE_TMPFS` is set.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::tasks::{Flavor, Host, TaskApi, ROUTES};
use common::*;
use cutover::metrics::{STORE_PENDING, STORE_RECORDS_LOST_TOTAL, STORE_WRITE_FAILURES_TOTAL};
use cutover::store::{Store, StoreOptions};
use serde_json::{json, Value};

/// A tmpfs of a fixed size, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if mounted {
            return Some(Tmpfs { path, _dir: dir });
        }
        assert!(
            std::env::var_os("CUTOVER_TEST_REQUIRE_TMPFS").is_none(),
            "CUTOVER_TEST_REQUIRE_TMPFS is set but a tmpfs cannot be mounted (mount needs root)"
        );
        eprintln!("note: full-disk test skipped: a tmpfs cannot be mounted here (mount needs root)");
        None
    }

    /// Takes every free byte with a filler file.
    fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.flush();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Descriptors `pid` holds on files under `dir`.
fn descriptors_under(pid: u32, dir: &Path) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

async fn readyz(admin: &str) -> (u16, Value) {
    let response = client().get(format!("http://{admin}/readyz")).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or_default())
}

/// `count` creates, eight at a time; every one must be answered 201.
async fn create_tasks(proxy: &str, prefix: &str, count: usize) {
    let mut pending = Vec::new();
    for index in 0..count {
        let proxy = proxy.to_string();
        let title = format!("{prefix} {index}");
        pending.push(tokio::spawn(async move {
            send_json(&proxy, "POST", "/api/task", Some(json!({"task": title})))
                .await
                .unwrap()
                .0
        }));
        if pending.len() == 8 {
            for task in pending.drain(..) {
                assert_eq!(task.await.unwrap(), 201, "the client is served on a full disk");
            }
        }
    }
    for task in pending {
        assert_eq!(task.await.unwrap(), 201, "the client is served on a full disk");
    }
}

#[tokio::test]
async fn a_full_disk_during_dual_writes_recovers_in_seconds_leaks_nothing_and_tells_the_truth() {
    let Some(disk) = Tmpfs::mount("2m") else { return };
    let primary = TaskApi::new(Flavor::Legacy).serve().await;
    let shadow = TaskApi::new(Flavor::Candidate).serve().await;
    let store_url = format!("sqlite://{}", disk.path.join("cutover.db").display());
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes = ROUTES;
    setup.store = store_url.clone();
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("cutover.toml");
    std::fs::write(
        &config,
        // One connection per pool: a pool that opens connections lazily
        // would show as growth, and only a leak should.
        setup
            .toml()
            .replace("[store]\n", "[store]\nflush = \"50ms\"\nmax_connections = 1\n"),
    )
    .unwrap();
    let instance = Supervised::start(&config, &[]);
    let pid: u32 = instance.pid().parse().unwrap();
    let (admin, proxy) = (instance.admin.clone(), instance.proxy.clone());
    let logs = std::sync::Arc::clone(&instance.logs);
    let metric_of = |name: &'static str| {
        let admin = admin.clone();
        async move { metric(&metrics_text(admin.parse().unwrap()).await, name, &[]) }
    };
    eventually("the instance is ready", || async { readyz(&admin).await.0 == 200 }).await;

    create_tasks(&proxy, "before", 20).await;
    eventually("the first twenty are written", || async {
        metric_of(STORE_PENDING).await == 0.0
    })
    .await;
    let at_rest = descriptors_under(pid, &disk.path);

    // Two outages: a descriptor leaked by one shows as growth after the next.
    let mut after_each = Vec::new();
    for outage in 0..2 {
        let failures_before = metric_of(STORE_WRITE_FAILURES_TOTAL).await;
        let filler = disk.fill();
        create_tasks(&proxy, &format!("full {outage}"), 150).await;
        eventually("writes fail on the full disk", || async {
            metric_of(STORE_WRITE_FAILURES_TOTAL).await > failures_before
        })
        .await;
        let (status, body) = readyz(&admin).await;
        assert_eq!(status, 503, "/readyz does not call a failing store ok: {body}");
        let said = body["store"].as_str().unwrap_or_default().to_string();
        assert!(said.contains("writes failing"), "/readyz says why: {body}");

        std::fs::remove_file(&filler).unwrap();
        let freed = Instant::now();
        eventually("the buffer drains once there is room", || async {
            metric_of(STORE_PENDING).await == 0.0
        })
        .await;
        let recovered_in = freed.elapsed();
        assert!(
            recovered_in < Duration::from_secs(10),
            "the store recovered {recovered_in:?} after space came back"
        );
        eventually("/readyz is ok again", || async { readyz(&admin).await.0 == 200 }).await;
        after_each.push(descriptors_under(pid, &disk.path));
        eprintln!("outage {outage}: recovered {recovered_in:?} after space came back");
    }
    eprintln!("descriptors on the store: {at_rest} at rest, {after_each:?} after each outage");
    assert!(
        after_each.iter().all(|after| *after <= at_rest),
        "no descriptor leaks: {at_rest} at rest, {after_each:?} after each outage"
    );
    assert_eq!(metric_of(STORE_RECORDS_LOST_TOTAL).await, 0.0);
    let store = Store::open(&store_url, &StoreOptions::default()).await.unwrap();
    assert_eq!(store.id_pairs().await.unwrap().len(), 320, "every ID pair is stored");
    assert_eq!(
        store.ledger(None, 1000).await.unwrap().len(),
        320,
        "every ledger row is stored"
    );
    store.close().await;

    // A shutdown on a full disk: what cannot be written is counted and said.
    let filler = disk.fill();
    create_tasks(&proxy, "at shutdown", 40).await;
    eventually("writes fail again", || async { metric_of(STORE_PENDING).await >= 40.0 }).await;
    assert!(instance.logged("store write failed").await);
    let code = instance.kill("-TERM");
    let said_plainly = || {
        logs.lock()
            .unwrap()
            .iter()
            .any(|line| line.starts_with("error: ") && line.contains("were not written"))
    };
    eventually("stderr is read to its end", || async { said_plainly() }).await;
    let logs = logs.lock().unwrap().clone();
    let unwritten = logs
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|entry| entry["message"].as_str().is_some_and(|m| m.contains("not written")))
        .unwrap_or_else(|| panic!("stderr says what was not written: {logs:#?}"));
    assert_eq!(unwritten["ledger_rows"], 40, "every write counts once: {unwritten}");
    // A pair exists once the shadow answered; a write still on its way at
    // the stop taught none.
    assert!(unwritten["id_pairs"].as_u64().unwrap() <= 40, "{unwritten}");
    assert!(unwritten["records"].as_u64().unwrap() >= 40, "{unwritten}");
    let (records, exchanges, intents) = (
        unwritten["records"].as_u64().unwrap(),
        unwritten["exchanges"].as_u64().unwrap(),
        unwritten["write_intents"].as_u64().unwrap(),
    );
    assert_eq!(records, exchanges + intents, "{unwritten}");
    assert!(
        logs.iter()
            .any(|line| line.starts_with("error: ") && line.contains("were not written")),
        "the last line says it plainly: {logs:#?}"
    );
    assert_eq!(code, Some(1), "a stop that lost records does not exit 0");
    // What was said to be lost is exactly what is missing.
    std::fs::remove_file(&filler).unwrap();
    let store = Store::open(&store_url, &StoreOptions::default()).await.unwrap();
    assert_eq!(store.ledger(None, 1000).await.unwrap().len(), 320);
    assert_eq!(store.id_pairs().await.unwrap().len(), 320);
    store.close().await;
}
