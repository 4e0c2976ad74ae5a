//! `cutover demo` end to end, as a newcomer runs it: the real binary, a
//! short run, both reports written, and exactly the seeded bugs found.

use cutover::ledger::LedgerState;
use std::collections::BTreeSet;

use cutover::store::{Store, StoreOptions};

#[tokio::test]
async fn a_short_demo_finds_exactly_the_seeded_bugs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cutover-demo");
    let run = {
        let out = out.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
                .args(["demo", "--duration", "3s", "--out", out.to_str().unwrap()])
                .output()
                .unwrap()
        })
    };
    let output = run.await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("Verdict: NO-GO"), "{stdout}");
    for file in [
        "report.html",
        "report.md",
        "cutover.toml",
        "id-mappings.json",
        "cutover.db",
    ] {
        assert!(out.join(file).is_file(), "{file} was not written");
    }
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(markdown.starts_with("# Cutover readiness: **NO-GO**"), "{markdown}");
    // The config the demo wrote is one `cutover check-config` accepts.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["check-config", out.join("cutover.toml").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    let store = Store::open(
        &format!("sqlite://{}", out.join("cutover.db").display()),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    let groups: BTreeSet<(String, String, String)> = store
        .groups()
        .await
        .unwrap()
        .into_iter()
        .map(|group| (group.route, group.pattern, group.kind))
        .collect();
    let seeded: BTreeSet<(String, String, String)> = [
        ("get-task", "/dueDate", "renamed"),
        ("all-tasks", "/tasks/*/status", "value_changed"),
        ("all-tasks", "/tasks", "order_only"),
        ("all-tasks", "/tasks/*/context", "missing_in_shadow"),
        ("complete-task", "", "status_changed"),
    ]
    .into_iter()
    .map(|(route, pattern, kind)| (route.to_string(), pattern.to_string(), kind.to_string()))
    .collect();
    assert_eq!(
        groups, seeded,
        "every seeded bug is a group of its own, and no noise is"
    );
    assert!(
        store.ledger_count(LedgerState::Drift).await.unwrap() >= 1,
        "the rejected completion is drift"
    );
    store.close().await;
}

#[tokio::test]
async fn ctrl_c_stops_the_demo_cleanly_and_still_writes_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cutover-demo");
    let started = std::time::Instant::now();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["demo", "--duration", "60s", "--out", out.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once traffic flows (the store file exists once the proxy runs).
    for _ in 0..200 {
        if out.join("cutover.db").exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "it stopped early"
    );
    assert!(stdout.contains("Verdict:"), "{stdout}");
    assert!(out.join("report.html").is_file() && out.join("report.md").is_file());
}

#[tokio::test]
async fn keep_running_leaves_the_report_and_api_up_until_ctrl_c() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cutover-demo");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args([
            "demo",
            "--duration",
            "2s",
            "--keep-running",
            "--out",
            out.to_str().unwrap(),
        ])
        .env_remove("CUTOVER_ADMIN_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Read every line (closing the pipe early would fail the demo's next print).
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let curl_line = tokio::task::spawn_blocking(move || {
        lines_rx
            .iter()
            .find(|line| line.contains("/report > report.html"))
            .expect("the demo says how to fetch the report")
    })
    .await
    .unwrap();
    let token = curl_line
        .split("Bearer ")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap()
        .to_string();
    let url = curl_line
        .split_whitespace()
        .find(|word| word.ends_with("/report"))
        .unwrap()
        .to_string();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let page = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Cutover readiness"));
    assert_eq!(
        http.get(&url).send().await.unwrap().status(),
        401,
        "the token is needed"
    );
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
