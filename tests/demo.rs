//! `cutover demo` end to end, as a newcomer runs it: the real binary, a
//! short run, both reports written, and exactly the seeded bugs found.

mod common;

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
    // Every line up to the curl hint, which comes after the next steps.
    let lines = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for line in lines_rx.iter() {
            let done = line.contains("/report > report.html");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    })
    .await
    .unwrap();
    let curl_line = lines.last().unwrap().clone();
    assert!(curl_line.contains("/report > report.html"), "{lines:?}");
    let config = out.join("cutover.toml");
    run_printed_next_steps(&lines, &config).await;
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

/// Runs, through a shell and as printed, the commands in the demo's next
/// steps: the replay reaches the candidate (the backends are still up) and
/// accepting a route's groups turns its failing match rate around.
async fn run_printed_next_steps(lines: &[String], config: &std::path::Path) {
    let commands: Vec<String> = lines
        .iter()
        .filter(|line| line.starts_with("Next: "))
        .flat_map(|line| line.split('`').skip(1).step_by(2).map(str::to_string))
        .collect();
    assert!(
        commands.iter().all(|command| command.starts_with("cutover ")
            && command.contains(&format!("-c {}", config.display()))
            && !command.contains("CONFIG")),
        "{commands:?}"
    );
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_cutover"))
        .parent()
        .unwrap()
        .to_path_buf();
    let shell = |command: String| {
        let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("sh")
                .args(["-c", &command])
                .env("PATH", path)
                .output()
                .unwrap()
        })
    };
    let replay = commands
        .iter()
        .find(|c| c.starts_with("cutover drift replay"))
        .expect("a replay step");
    let replayed = shell(replay.clone()).await.unwrap();
    let said = String::from_utf8_lossy(&replayed.stdout);
    assert!(
        said.contains(" replayed, "),
        "{said}{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert!(
        said.lines()
            .filter(|l| l.starts_with('#'))
            .all(|l| l.contains("candidate answered")),
        "every replay reached the candidate: {said}"
    );
    // A recheck as printed asks both demo backends again: the seeded bugs
    // are still there, so the group still diverges (exit 1) and stays open.
    let recheck = commands
        .iter()
        .find(|c| c.starts_with("cutover recheck --group "))
        .expect("a recheck step");
    let rechecked = shell(recheck.clone()).await.unwrap();
    let said = String::from_utf8_lossy(&rechecked.stdout);
    assert_eq!(
        rechecked.status.code(),
        Some(1),
        "{said}{}",
        String::from_utf8_lossy(&rechecked.stderr)
    );
    assert!(said.contains(" diverges "), "{said}");
    assert!(said.contains("not marked fixed"), "{said}");
    let route_gate = |json: &serde_json::Value| {
        json["gates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["gate"] == "match_rate" && g["route"] == "all-tasks")
            .unwrap()["status"]
            .clone()
    };
    let report = |config: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
                .args([
                    "report",
                    "--format",
                    "json",
                    "--since",
                    "1h",
                    "-c",
                    config.to_str().unwrap(),
                ])
                .output()
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
        })
    };
    assert_eq!(route_gate(&report(config.to_path_buf()).await.unwrap()), "fail");
    for accept in commands
        .iter()
        .filter(|c| c.starts_with("cutover triage") && c.contains(" accepted "))
    {
        let accepted = shell(accept.clone()).await.unwrap();
        assert!(accepted.status.success(), "{accept}: {accepted:?}");
    }
    let after = report(config.to_path_buf()).await.unwrap();
    assert_ne!(
        route_gate(&after),
        "fail",
        "accepting its groups moved the gate: {after}"
    );
}

/// The demo's report in real Chromium at 1,200 px and 800 px: nothing
/// overflows horizontally, and the page fits in a few screens.
#[tokio::test]
async fn the_demo_report_fits_the_page_in_a_real_browser() {
    let Some(chromium) = common::chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cutover-demo");
    let demo = {
        let out = out.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
                .args(["demo", "--duration", "4s", "--out", out.to_str().unwrap()])
                .output()
                .unwrap()
        })
    };
    assert!(demo.await.unwrap().status.success());
    // The page has no JavaScript of its own; the probe is added to a copy.
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    let probe = include_str!("browser/overflow-probe.html");
    let probed = dir.path().join("probed.html");
    std::fs::write(&probed, page.replace("</body>", &format!("{probe}</body>"))).unwrap();
    for width in [1200, 800] {
        let probed = probed.clone();
        let dom = tokio::task::spawn_blocking(move || {
            std::process::Command::new(chromium)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    &format!("--window-size={width},1000"),
                    "--dump-dom",
                    &format!("file://{}", probed.display()),
                ])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let dom = String::from_utf8_lossy(&dom.stdout);
        let title = dom
            .split("<title>")
            .nth(1)
            .and_then(|rest| rest.split("</title>").next())
            .unwrap_or_default()
            .replace("&gt;", ">")
            .replace("&lt;", "<")
            .replace("&amp;", "&");
        let measured: serde_json::Value =
            serde_json::from_str(&title).unwrap_or_else(|_| panic!("the probe did not run at {width} px: {title}"));
        println!("at {width} px: {measured}");
        assert_eq!(
            measured["overflowing"],
            serde_json::json!([]),
            "at {width} px: {measured}"
        );
        assert!(
            measured["page"].as_u64() <= measured["width"].as_u64(),
            "at {width} px the page scrolls sideways: {measured}"
        );
        if width == 1200 {
            // A few screens of a 1,000 px window, with every group's section.
            let height = measured["height"].as_u64().unwrap();
            assert!(height <= 7_000, "the page is {height} px tall");
        }
    }
}
