//! `cutover replay`: a capture's reads sent to both sides through an
//! instance of cutover of its own, compared and recorded as source
//! `replay`; writes only with `--writes` on dual-write routes. The capture
//! is a HAR that Chromium wrote (through Playwright's `recordHar`) while a
//! page on loopback called the API.

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::*;

const PAGE: &str = r#"<!doctype html><title>loading</title><script>
(async () => {
  await fetch('/tasks/p1', {headers: {'accept': 'application/json'}});
  await fetch('/tasks/p2', {headers: {'accept': 'application/json'}});
  await fetch('/tasks', {method: 'POST', headers: {'content-type': 'application/json'}, body: '{"title":"Buy milk"}'});
  document.title = 'done';
})();
</script>"#;

/// The task API with its page: the shadow lowercases the title of p2.
fn api(side: &'static str) -> impl Fn(Seen) -> std::future::Ready<http::Response<TestBody>> + Clone {
    move |seen: Seen| {
        let json = |body: String| {
            respond(
                200,
                &[("content-type".into(), "application/json".into())],
                Bytes::from(body),
            )
        };
        let answer = match (seen.method.as_str(), seen.path_and_query.as_str()) {
            ("GET", "/app") => respond(200, &[("content-type".into(), "text/html".into())], Bytes::from(PAGE)),
            ("GET", "/tasks/p2") if side == "shadow" => json(r#"{"id":"p2","title":"buy bread"}"#.into()),
            ("GET", path) if path.starts_with("/tasks/") => {
                let id = path.trim_start_matches("/tasks/");
                let title = if id == "p2" { "Buy bread" } else { "Buy milk" };
                json(format!(r#"{{"id":"{id}","title":"{title}"}}"#))
            }
            ("POST", "/tasks") => json(r#"{"ok":true}"#.into()),
            _ => respond(404, &[], Bytes::new()),
        };
        std::future::ready(answer)
    }
}

const ROUTES: &str = r#"
[[route]]
name = "task"
match = "GET /tasks/{id}"

[[route]]
name = "create"
match = "POST /tasks"
mirror = "dual-write"
"#;

/// Playwright's core (the HAR writer), installed once per target dir with
/// npm; `None` where Chromium or npm is missing, unless CI requires them.
fn playwright() -> Option<(PathBuf, &'static Path)> {
    let chromium = chromium()?;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("playwright");
    if !dir.join("node_modules/playwright-core").is_dir() {
        std::fs::create_dir_all(&dir).unwrap();
        let installed = std::process::Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "playwright-core@1"])
            .current_dir(&dir)
            .status();
        match installed {
            Ok(status) if status.success() => {}
            other => {
                assert!(
                    std::env::var_os("CUTOVER_TEST_REQUIRE_CHROMIUM").is_none(),
                    "CUTOVER_TEST_REQUIRE_CHROMIUM is set but `npm install playwright-core` failed: {other:?}"
                );
                eprintln!("note: npm could not install playwright-core; the HAR replay test is skipped");
                return None;
            }
        }
    }
    Some((dir, chromium))
}

/// Chromium opens the page and records what it fetched as HAR.
async fn record_har(playwright: &Path, chromium: &Path, page: String, har: &Path) {
    let script = format!(
        r#"const {{ chromium }} = require('playwright-core');
(async () => {{
  const browser = await chromium.launch({{ executablePath: {chromium:?}, args: ['--no-sandbox'] }});
  const context = await browser.newContext({{ recordHar: {{ path: {har:?} }} }});
  const page = await context.newPage();
  await page.goto({page:?});
  await page.waitForFunction(() => document.title === 'done', null, {{ timeout: 20000 }});
  await context.close();
  await browser.close();
}})().catch((err) => {{ console.error(err); process.exit(1); }});"#,
        chromium = chromium.display().to_string(),
        har = har.display().to_string(),
    );
    let dir = playwright.to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .args(["-e", &script])
            .current_dir(dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// A config file in `dir` for the two backends, with a SQLite store beside it: (store URL, config path).
fn write_config(primary: &Backend, shadow: &Backend, dir: &Path) -> (String, PathBuf) {
    let store = format!("sqlite://{}", dir.join("cutover.db").display());
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.store = store.clone();
    setup.routes = ROUTES;
    let config = dir.join("cutover.toml");
    std::fs::write(&config, setup.toml()).unwrap();
    (store, config)
}

async fn replay(args: &[&str]) -> (Option<i32>, String, String) {
    let output = run_cutover(args).await;
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The exchanges the store holds, as (source, method, path, outcome).
async fn recorded(store: &str) -> Vec<(String, String, String, String)> {
    let store = cutover::store::Store::open_existing(store, &Default::default())
        .await
        .unwrap();
    let rows = store.exchanges_between((0, i64::MAX), 0, 1000).await.unwrap();
    store.close().await;
    rows.into_iter()
        .map(|(_, e)| (e.source, e.method, e.path, e.outcome))
        .collect()
}

#[tokio::test]
async fn a_har_chromium_wrote_is_replayed_to_both_sides_and_recorded_as_replay() {
    let Some((playwright, chromium)) = playwright() else {
        return;
    };
    let primary = backend(api("primary")).await;
    let shadow = backend(api("shadow")).await;
    let dir = tempfile::tempdir().unwrap();
    let har = dir.path().join("capture.har");
    record_har(&playwright, chromium, format!("{}/app", primary.url()), &har).await;
    let browser_posts = primary.requests().iter().filter(|seen| seen.method == "POST").count();
    assert_eq!(browser_posts, 1, "the page ran");
    assert!(shadow.requests().is_empty());

    let (store, config) = write_config(&primary, &shadow, dir.path());
    let (har_arg, config_arg) = (har.display().to_string(), config.display().to_string());

    let (code, stdout, stderr) = replay(&["replay", &har_arg, "-c", &config_arg, "--rate", "100/s"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("1 writes not sent (pass --writes"), "{stdout}");
    assert!(stdout.contains("recorded as source replay"), "{stdout}");
    assert!(
        stderr.contains("replay: "),
        "progress lines when not on a terminal: {stderr}"
    );
    let rows = recorded(&store).await;
    assert!(rows.iter().all(|(source, ..)| source == "replay"), "{rows:?}");
    let task = |path: &str| {
        rows.iter()
            .find(|(_, _, p, _)| p == path)
            .map(|(_, _, _, outcome)| outcome.clone())
    };
    assert_eq!(task("/tasks/p1").as_deref(), Some("match"), "{rows:?}");
    assert_eq!(task("/tasks/p2").as_deref(), Some("diverged"), "{rows:?}");
    assert!(!rows.iter().any(|(_, method, ..)| method == "POST"), "{rows:?}");
    let to_shadow = shadow.requests();
    assert!(to_shadow.iter().all(|seen| seen.headers["x-cutover-shadow"] == "1"));
    assert!(
        !to_shadow.iter().any(|seen| seen.method == "POST"),
        "no write without --writes"
    );

    // With --writes, the create reaches both sides, once each.
    let (code, stdout, stderr) = replay(&["replay", &har_arg, "-c", &config_arg, "--rate", "100/s", "--writes"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(" 1 writes)"), "{stdout}");
    eventually("the create reached the shadow", || async {
        shadow.requests().iter().filter(|seen| seen.method == "POST").count() == 1
    })
    .await;
    assert_eq!(
        primary.requests().iter().filter(|seen| seen.method == "POST").count(),
        2
    );
    let rows = recorded(&store).await;
    assert!(
        rows.iter()
            .any(|(source, method, ..)| source == "replay" && method == "POST"),
        "{rows:?}"
    );
}

#[tokio::test]
async fn a_jsonl_capture_with_a_broken_line_or_a_missing_config_is_refused_with_the_reason() {
    let primary = backend(api("primary")).await;
    let shadow = backend(api("shadow")).await;
    let dir = tempfile::tempdir().unwrap();
    let (store, config) = write_config(&primary, &shadow, dir.path());
    let capture = dir.path().join("capture.jsonl");
    std::fs::write(
        &capture,
        "{\"method\": \"GET\", \"path\": \"/tasks/p2\", \"headers\": {\"authorization\": \"[redacted]\"}}\n{\"method\": \"GET\"}\n",
    )
    .unwrap();
    let (capture_arg, config_arg) = (capture.display().to_string(), config.display().to_string());
    let (code, stdout, stderr) = replay(&["replay", &capture_arg, "-c", &config_arg]).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("line 2: not sent: no path or url"), "{stderr}");
    assert!(stdout.contains("1 sent (1 reads, 0 writes)"), "{stdout}");
    let to_shadow = shadow.requests();
    assert_eq!(to_shadow.len(), 1);
    assert!(
        !to_shadow[0].headers.contains_key("authorization"),
        "a redacted value is never sent"
    );
    assert_eq!(recorded(&store).await[0].3, "diverged");

    let (code, _, stderr) = replay(&["replay", &capture_arg]).await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("replay needs --config"), "{stderr}");
}
