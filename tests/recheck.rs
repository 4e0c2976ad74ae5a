//! Recheck: a group's sampled reads sent to both sides again, through the
//! admin API and the CLI, with the sides' own credentials and IDs; a fix
//! recorded only when the difference is gone, and a regression reopening
//! the group.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use cutover::metrics::REQUESTS_TOTAL;
use serde_json::{json, Value};

const TOKEN: &str = "recheck-admin-token";
const PRIMARY_CREDENTIAL: &str = "Bearer primary-recheck-credential";
const SHADOW_CREDENTIAL: &str = "Bearer shadow-recheck-credential";

const ROUTES: &str = r#"
[[route]]
name = "task"
match = "GET /tasks/{id:tasks}"
[route.compare]
ids = { "/id" = "tasks" }
"#;

/// A task API: the primary's task p1, the shadow's s1 (the same task), the
/// shadow lowercasing its title until `fixed`.
fn task_api(
    side: &'static str,
    fixed: Arc<AtomicBool>,
) -> impl Fn(Seen) -> std::future::Ready<http::Response<TestBody>> + Clone {
    move |seen: Seen| {
        let id = seen.path_and_query.rsplit('/').next().unwrap_or_default().to_string();
        let title = if side == "shadow" && !fixed.load(Ordering::SeqCst) {
            "buy milk"
        } else {
            "Buy milk"
        };
        std::future::ready(respond(
            200,
            &[("content-type".into(), "application/json".into())],
            Bytes::from(json!({"id": id, "title": title}).to_string()),
        ))
    }
}

async fn recheck(admin: std::net::SocketAddr, group: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = client()
        .post(format!("http://{admin}/api/divergences/{group}/recheck"))
        .bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    (status, serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap())
}

fn verdicts(report: &Value) -> Vec<String> {
    report["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sample| sample["verdict"].as_str().unwrap().to_string())
        .collect()
}

/// The one divergence group of route `task`, once it is stored with two samples.
async fn task_group(admin: std::net::SocketAddr) -> Value {
    let first = || async move {
        let listed = api_get(admin, "/api/divergences?route=task", TOKEN).await;
        listed["groups"].as_array().and_then(|groups| groups.first()).cloned()
    };
    eventually("the title divergence is stored with its samples", || async move {
        let Some(group) = first().await else { return false };
        let key = group["key"].as_str().unwrap_or_default().to_string();
        let detail = api_get(admin, &format!("/api/divergences/{key}"), TOKEN).await;
        detail["samples"].as_array().is_some_and(|samples| samples.len() >= 2)
    })
    .await;
    first().await.unwrap()
}

#[tokio::test]
async fn a_fix_is_shown_by_recheck_recorded_on_request_and_a_regression_reopens_the_group() {
    let fixed = Arc::new(AtomicBool::new(false));
    let primary = backend(task_api("primary", Arc::clone(&fixed))).await;
    let shadow = backend(task_api("shadow", Arc::clone(&fixed))).await;
    let dir = tempfile::tempdir().unwrap();
    let mapping = dir.path().join("map.csv");
    std::fs::write(&mapping, "tasks,p1,s1\n").unwrap();
    let store = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.store = store.clone();
    setup.routes = ROUTES;
    setup.primary_extra = "replay_headers = { authorization = \"PRIMARY_RECHECK\" }";
    setup.shadow_extra = "replay_headers = { authorization = \"SHADOW_RECHECK\" }";
    let env = [
        ("CUTOVER_ADMIN_TOKEN", TOKEN.to_string()),
        ("PRIMARY_RECHECK", PRIMARY_CREDENTIAL.to_string()),
        ("SHADOW_RECHECK", SHADOW_CREDENTIAL.to_string()),
    ];
    setup.env = env.to_vec();
    let toml = setup.toml().replace(
        "[store]",
        &format!("[idmap]\nimport = [\"{}\"]\n\n[store]", mapping.display()),
    );
    let config_path = dir.path().join("cutover.toml");
    std::fs::write(&config_path, &toml).unwrap();
    let lookup = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
    let config = cutover::config::Config::parse(&toml, &config_path.display().to_string(), &lookup).unwrap();
    let proxy = cutover::app::start(config).await.unwrap();
    let admin = proxy.admin_addr;

    // Two client reads with the client's own credential: both diverge on /title.
    for _ in 0..2 {
        let answer = client()
            .get(format!("http://{}/tasks/p1", proxy.proxy_addr))
            .header("authorization", "Bearer the-clients-own-token")
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    let group = task_group(admin).await;
    let key = group["key"].as_str().unwrap().to_string();
    assert_eq!(group["pattern"], "/title");

    // Still broken: every sample diverges, and mark_fixed is refused.
    let (status, report) = recheck(admin, &key, Some(json!({"mark_fixed": true}))).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(verdicts(&report), ["diverges", "diverges"], "{report}");
    assert_eq!(report["fixable"], false);
    assert_eq!(report["marked_fixed"], false);
    assert_eq!(report["status"], "open");
    let difference = &report["samples"][0]["differences"][0];
    assert_eq!(difference["path"], "/title");
    assert_eq!(difference["primary"], "\"Buy milk\"");
    assert_eq!(difference["shadow"], "\"buy milk\"");

    // What the sides were sent: each its own IDs and credential, never the
    // redacted placeholder; the client's non-secret headers kept.
    let rechecks = |backend: &Backend| -> Vec<Seen> {
        backend
            .requests()
            .into_iter()
            .filter(|seen| seen.headers.contains_key("x-cutover-recheck"))
            .collect()
    };
    let (to_primary, to_shadow) = (rechecks(&primary), rechecks(&shadow));
    assert_eq!((to_primary.len(), to_shadow.len()), (2, 2));
    for seen in &to_primary {
        assert_eq!(seen.path_and_query, "/tasks/p1");
        assert_eq!(seen.headers["authorization"], PRIMARY_CREDENTIAL);
        assert_eq!(seen.headers["accept"], "application/json");
        assert!(!seen.headers.contains_key("x-cutover-shadow"));
    }
    for seen in &to_shadow {
        assert_eq!(seen.path_and_query, "/tasks/s1", "translated through the ID map");
        assert_eq!(seen.headers["authorization"], SHADOW_CREDENTIAL);
        assert_eq!(seen.headers["x-cutover-shadow"], "1");
    }

    // The fix is deployed: a recheck without mark_fixed offers it, and changes nothing.
    fixed.store(true, Ordering::SeqCst);
    let (_, report) = recheck(admin, &key, None).await;
    assert_eq!(verdicts(&report), ["match", "match"], "{report}");
    assert_eq!(report["fixable"], true);
    assert_eq!(report["status"], "open");

    // The CLI: the same answer, exit 0, and a next step that runs as printed.
    let cli = |args: Vec<String>| {
        let env = env.clone();
        tokio::task::spawn_blocking(move || {
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"));
            command.args(&args).env_remove("CUTOVER_STORE_URL");
            for (name, value) in &env {
                command.env(name, value);
            }
            command.output().unwrap()
        })
    };
    let config_arg = config_path.display().to_string();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["recheck", "--group", &key].iter().map(|s| s.to_string()).collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["-c".to_string(), config_arg.clone()]);
        args
    };
    let output = cli(args(&[])).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.matches("  match ").count(), 2, "{stdout}");
    let next = stdout.lines().last().unwrap();
    let command = next
        .split("To record it: ")
        .nth(1)
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(
        command,
        format!("cutover recheck --group {key} --mark-fixed -c {config_arg}")
    );
    let printed: Vec<String> = command.split(' ').skip(1).map(str::to_string).collect();
    let output = cli(printed).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("marked fixed"), "{stdout}");
    let detail = api_get(admin, &format!("/api/divergences/{key}"), TOKEN).await;
    assert_eq!(detail["group"]["status"], "fixed", "{detail}");

    // The bug comes back: the next divergence reopens the group as a regression.
    fixed.store(false, Ordering::SeqCst);
    get_expecting(proxy.proxy_addr, "/tasks/p1", 1, br#"{"id":"p1","title":"Buy milk"}"#).await;
    eventually("the group is reopened", || async {
        api_get(admin, &format!("/api/divergences/{key}"), TOKEN).await["group"]["status"] == "open"
    })
    .await;
    let report = api_get(admin, "/report.json?since=1h", TOKEN).await;
    let events = report["events"].as_array().unwrap();
    let regressions: Vec<&Value> = events.iter().filter(|event| event["kind"] == "regression").collect();
    assert_eq!(regressions.len(), 1, "{events:?}");
    assert_eq!(regressions[0]["detail"]["group"], key.as_str());
    assert!(events
        .iter()
        .any(|event| event["kind"] == "recheck" && event["detail"]["marked_fixed"] == true));

    // Nothing the sides were sent on the client's behalf leaked its token into the store.
    let stored = std::fs::read(dir.path().join("cutover.db")).unwrap();
    let leaked = |secret: &str| stored.windows(secret.len()).any(|window| window == secret.as_bytes());
    assert!(!leaked("the-clients-own-token"));
    assert!(!leaked("primary-recheck-credential") && !leaked("shadow-recheck-credential"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_recheck_of_an_unknown_group_or_a_bad_body_is_refused_with_a_reason() {
    let primary = fixed(200, &[], b"{}").await;
    let shadow = fixed(200, &[], b"{}").await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.env = vec![("CUTOVER_ADMIN_TOKEN", TOKEN.to_string())];
    let proxy = setup.start().await;
    let (status, body) = recheck(proxy.admin_addr, "0123456789abcdef", None).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("0123456789abcdef"), "{body}");
    let (status, body) = recheck(proxy.admin_addr, "0123456789abcdef", Some(json!({"mark_fixed": "yes"}))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("mark_fixed"), "{body}");
    proxy.shutdown().await;
}

/// `[route.compare] recheck` asks both sides again by itself: each with
/// the IDs it was asked with the first time, so a difference that has gone
/// is `transient`, not a divergence made by sending the shadow the
/// primary's ID.
#[tokio::test]
async fn an_automatic_recheck_asks_the_shadow_with_its_own_ids() {
    let fixed = Arc::new(AtomicBool::new(false));
    let primary = backend(task_api("primary", Arc::clone(&fixed))).await;
    let shadow_api = task_api("shadow", Arc::clone(&fixed));
    let fixing = Arc::clone(&fixed);
    let shadow = backend(move |seen: Seen| {
        let answer = shadow_api(seen);
        // The first answer diverges (a lowercase title); every later one agrees.
        fixing.store(true, Ordering::SeqCst);
        answer
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mapping = dir.path().join("map.csv");
    std::fs::write(&mapping, "tasks,p1,s1\n").unwrap();
    let routes = format!(
        "[idmap]\nimport = [\"{}\"]\n{ROUTES}recheck = \"50ms\"\n",
        mapping.display()
    );
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes = Box::leak(routes.into_boxed_str());
    let proxy = setup.start().await;

    get_expecting(proxy.proxy_addr, "/tasks/p1", 1, br#"{"id":"p1","title":"Buy milk"}"#).await;
    let transient = wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[("outcome", "transient")], 1.0).await;
    assert_eq!(transient, 1.0, "the recheck found the sides agreeing");
    let paths = |backend: &Backend| {
        backend
            .requests()
            .into_iter()
            .map(|seen| seen.path_and_query)
            .collect::<Vec<_>>()
    };
    assert_eq!(paths(&primary), ["/tasks/p1", "/tasks/p1"]);
    assert_eq!(
        paths(&shadow),
        ["/tasks/s1", "/tasks/s1"],
        "asked again with its own ID"
    );
    let text = metrics_text(proxy.admin_addr).await;
    assert_eq!(metric(&text, REQUESTS_TOTAL, &[]), 1.0, "counted once, as transient");
}
