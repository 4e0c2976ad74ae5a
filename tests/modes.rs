//! The cutover switch, over sockets: who serves follows the mode (global or
//! per route), no request fails while it flips, the candidate's writes still
//! reach the old primary with its own IDs so a rollback loses nothing,
//! candidate-fallback hides the candidate's failures, and a switch reaches
//! every instance on the store and survives a restart.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::tasks::{Flavor, Host, TaskApi, ROUTES};
use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "mode-token";

fn side_backend(name: &'static str) -> impl Fn(Seen) -> std::future::Ready<http::Response<TestBody>> + Clone {
    move |seen: Seen| {
        let status = if name == "candidate" && seen.path_and_query == "/flaky" {
            503
        } else {
            200
        };
        std::future::ready(respond(
            status,
            &[("content-type".into(), "application/json".into())],
            Bytes::from(json!({"side": name}).to_string()),
        ))
    }
}

async fn start(primary: &Backend, shadow: &Backend, store: &str, routes: &'static str) -> cutover::app::Running {
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.store = store.to_string();
    setup.routes = routes;
    setup.env = vec![("CUTOVER_ADMIN_TOKEN", TOKEN.to_string())];
    setup.start().await
}

/// A forced switch: these backends answer who they are, so every compared
/// request diverges and the report says NO-GO (see the test of that below).
async fn switch(admin: std::net::SocketAddr, mut body: Value) -> Value {
    body["force"] = json!(true);
    let (status, answer) = post_mode(admin, TOKEN, body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

async fn side_of(proxy: std::net::SocketAddr, path: &str) -> (u16, String) {
    let answer = client().get(format!("http://{proxy}{path}")).send().await.unwrap();
    let status = answer.status().as_u16();
    let body: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap_or_default();
    (status, body["side"].as_str().unwrap_or_default().to_string())
}

/// The two side backends, a fresh store, and a proxy with one route, `things`.
struct Sides {
    proxy: cutover::app::Running,
    store: String,
    _keep: (Backend, Backend, tempfile::TempDir),
}

async fn things_proxy() -> Sides {
    let primary = backend(side_backend("legacy")).await;
    let shadow = backend(side_backend("candidate")).await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let proxy = start(
        &primary,
        &shadow,
        &store,
        "[[route]]\nname = \"things\"\nmatch = \"GET /things\"\n",
    )
    .await;
    Sides {
        proxy,
        store,
        _keep: (primary, shadow, dir),
    }
}

#[tokio::test]
async fn the_serving_side_follows_the_mode_and_no_request_fails_while_it_flips() {
    let Sides {
        proxy,
        store,
        _keep: (primary, shadow, _dir),
    } = things_proxy().await;
    let addr = proxy.proxy_addr;

    // A client loop runs through every switch.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, sent, failed) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failed));
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let (status, _) = side_of(addr, "/things").await;
                sent.fetch_add(1, Ordering::SeqCst);
                if status != 200 {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    for (mode, expected) in [("shadow", "legacy"), ("candidate", "candidate"), ("shadow", "legacy")] {
        let modes = switch(proxy.admin_addr, json!({"mode": mode})).await;
        assert_eq!(modes["global"], mode);
        for _ in 0..20 {
            assert_eq!(
                side_of(addr, "/things").await,
                (200, expected.to_string()),
                "in {mode} mode"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One route on its own: the others keep the global mode.
    switch(proxy.admin_addr, json!({"mode": "candidate", "route": "things"})).await;
    assert_eq!(side_of(addr, "/things").await.1, "candidate");
    assert_eq!(side_of(addr, "/elsewhere").await.1, "legacy");
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    assert!(sent.load(Ordering::SeqCst) > 20, "the loop ran");
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "no request failed while the mode flipped"
    );
    let text = metrics_text(proxy.admin_addr).await;
    assert_eq!(metric(&text, "cutover_mode", &[("mode", "shadow")]), 1.0);
    assert_eq!(metric(&text, "cutover_mode", &[("mode", "candidate")]), 0.0);
    proxy.shutdown().await;

    // The store remembers: a restart serves in the mode it was left in.
    let again = start(
        &primary,
        &shadow,
        &store,
        "[[route]]\nname = \"things\"\nmatch = \"GET /things\"\n",
    )
    .await;
    let mut side = String::new();
    for _ in 0..40 {
        side = side_of(again.proxy_addr, "/things").await.1;
        if side == "candidate" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(side, "candidate", "the per-route switch survived the restart");
    again.shutdown().await;
}

#[tokio::test]
async fn a_switch_reaches_every_instance_on_the_store_including_from_the_command_line() {
    let primary = backend(side_backend("legacy")).await;
    let shadow = backend(side_backend("candidate")).await;
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store(dir.path()).await;
    let a = start(&primary, &shadow, &store, "").await;
    let b = start(&primary, &shadow, &store, "").await;
    switch(a.admin_addr, json!({"mode": "candidate"})).await;
    let started = std::time::Instant::now();
    while side_of(b.proxy_addr, "/x").await.1 != "candidate" {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "replica B did not follow within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cli = run_cutover(&["switch", "primary-only", "--store", &store]).await;
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let started = std::time::Instant::now();
    for replica in [&a, &b] {
        while side_of(replica.proxy_addr, "/x").await.1 != "legacy" {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "a replica did not follow the CLI"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // primary-only mirrors nothing.
    let before = shadow.requests().len();
    side_of(a.proxy_addr, "/x").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(shadow.requests().len(), before);
    a.shutdown().await;
    b.shutdown().await;
    drop_shared_store(&store).await;
}

#[tokio::test]
async fn candidate_fallback_answers_with_the_primary_when_the_candidate_fails() {
    let primary = backend(side_backend("legacy")).await;
    let shadow = backend(side_backend("candidate")).await;
    let proxy = start(&primary, &shadow, "sqlite::memory:", "").await;
    switch(proxy.admin_addr, json!({"mode": "candidate-fallback"})).await;
    assert_eq!(side_of(proxy.proxy_addr, "/fine").await, (200, "candidate".into()));
    assert_eq!(
        side_of(proxy.proxy_addr, "/flaky").await,
        (200, "legacy".into()),
        "the candidate's 503 is hidden"
    );
    let text = metrics_text(proxy.admin_addr).await;
    assert_eq!(metric(&text, "cutover_fallback_total", &[]), 1.0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn while_the_candidate_serves_writes_reach_the_old_primary_with_its_own_ids_and_a_rollback_loses_nothing() {
    let legacy = TaskApi::new(Flavor::Legacy);
    let candidate = TaskApi::new(Flavor::Candidate);
    let (primary, shadow) = (legacy.serve().await, candidate.serve().await);
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let proxy = start(&primary, &shadow, &store, ROUTES).await;
    let send = |method: &'static str, path: String, body: Option<Value>| {
        let mut request = client().request(
            http::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("http://{}{path}", proxy.proxy_addr),
        );
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        async move {
            let answer = request.send().await.unwrap();
            let status = answer.status().as_u16();
            (
                status,
                serde_json::from_slice::<Value>(&answer.bytes().await.unwrap()).unwrap_or_default(),
            )
        }
    };
    // Created while the legacy serves: the client holds the legacy's ID.
    let (_, old) = send("POST", "/api/task".into(), Some(json!({"task": "before the switch"}))).await;
    let old_id = old["notionPageId"].as_str().unwrap().to_string();
    switch(proxy.admin_addr, json!({"mode": "candidate"})).await;
    // Created while the candidate serves: the client gets the candidate's ID.
    let (status, new) = send("POST", "/api/task".into(), Some(json!({"task": "after the switch"}))).await;
    assert_eq!(status, 201);
    let new_id = new["taskId"].as_str().expect("the candidate answered").to_string();
    // The client uses both IDs; the candidate gets its own, the legacy its own.
    send(
        "PATCH",
        format!("/api/task/{old_id}"),
        Some(json!({"title": "old, renamed"})),
    )
    .await;
    send(
        "PATCH",
        format!("/api/task/{new_id}"),
        Some(json!({"title": "new, renamed"})),
    )
    .await;
    let admin = proxy.admin_addr;
    wait_for_metric(
        admin,
        "cutover_requests_total",
        &[("route", "update-task"), ("outcome", "match")],
        2.0,
    )
    .await;
    // Roll back: the legacy serves again and knows the task created meanwhile.
    switch(admin, json!({"mode": "shadow"})).await;
    let (status, _) = send("PATCH", format!("/api/task/{new_id}/complete"), None).await;
    assert_eq!(
        status, 200,
        "the legacy got its own ID for a task created while the candidate served"
    );
    wait_for_metric(
        admin,
        "cutover_requests_total",
        &[("route", "complete-task"), ("outcome", "match")],
        1.0,
    )
    .await;
    proxy.shutdown().await;

    let titles = |api: &TaskApi| {
        let mut titles: Vec<(String, String)> = api
            .tasks()
            .values()
            .map(|t| (t.title.clone(), t.status.clone()))
            .collect();
        titles.sort();
        titles
    };
    assert_eq!(titles(&legacy), titles(&candidate), "both sides hold the same tasks");
    assert_eq!(
        titles(&legacy),
        [
            ("new, renamed".to_string(), "done".to_string()),
            ("old, renamed".to_string(), "open".to_string())
        ]
    );
    let legacy_paths: Vec<String> = primary
        .requests()
        .iter()
        .map(|seen| seen.path_and_query.clone())
        .collect();
    assert!(
        !legacy_paths.iter().any(|path| path.contains(&new_id)),
        "the legacy never saw the candidate's ID: {legacy_paths:?}"
    );
}

#[tokio::test]
async fn automatic_rollback_fires_on_a_failing_candidate_and_not_on_a_healthy_one() {
    let primary = backend(side_backend("legacy")).await;
    let shadow = backend(side_backend("candidate")).await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let rule = "[rollback]\nerror_rate = 0.2\nwindow = \"30s\"\nmin_requests = 10\n";
    let proxy = start(&primary, &shadow, &store, rule).await;
    switch(proxy.admin_addr, json!({"mode": "candidate"})).await;
    for _ in 0..30 {
        assert_eq!(side_of(proxy.proxy_addr, "/fine").await, (200, "candidate".into()));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let modes = api_get(proxy.admin_addr, "/api/mode", TOKEN).await;
    assert_eq!(modes["global"], "candidate", "a healthy candidate stays");

    // Now the candidate fails: 30 of the 60 requests it served, above 20%.
    for _ in 0..30 {
        side_of(proxy.proxy_addr, "/flaky").await;
    }
    let started = std::time::Instant::now();
    while side_of(proxy.proxy_addr, "/fine").await.1 != "legacy" {
        assert!(started.elapsed() < Duration::from_secs(5), "no rollback");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.shutdown().await;
    let store = cutover::store::Store::open(&store, &cutover::store::StoreOptions::default())
        .await
        .unwrap();
    let rollbacks = store.events("rollback").await.unwrap();
    assert_eq!(rollbacks.len(), 1, "{rollbacks:?}");
    assert!(rollbacks[0].1.contains("error rate"), "{rollbacks:?}");
}

#[tokio::test]
async fn a_switch_naming_a_route_that_does_not_exist_is_refused_by_the_api_and_the_cli() {
    let primary = backend(side_backend("legacy")).await;
    let shadow = backend(side_backend("candidate")).await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let proxy = start(&primary, &shadow, &store, ROUTES).await;
    let answer = client()
        .post(format!("http://{}/api/mode", proxy.admin_addr))
        .bearer_auth(TOKEN)
        .body(json!({"mode": "candidate", "route": "updat-task"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let body = String::from_utf8_lossy(&answer.bytes().await.unwrap()).into_owned();
    assert!(body.contains("no route named \\\"updat-task\\\""), "{body}");
    assert!(body.contains("update-task"), "the routes in force are named: {body}");
    let current = api_get(proxy.admin_addr, "/api/mode", TOKEN).await;
    assert!(
        current["routes"].as_object().is_none_or(|routes| routes.is_empty()),
        "{current}"
    );

    // The CLI without a config checks the name against what the instances announced.
    let opened = cutover::store::Store::open(&store, &Default::default()).await.unwrap();
    eventually("the instance announced its routes", || async {
        opened.announced_routes(500).await.unwrap().is_some()
    })
    .await;
    opened.close().await;
    let store_row = format!("--store={store}");
    let refused = run_cutover(&["switch", "candidate", "--route", "updat-task", &store_row]).await;
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("no route named \"updat-task\""), "{said}");
    let accepted = run_cutover(&["switch", "candidate", "--route", "update-task", &store_row]).await;
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_switch_to_the_candidate_under_no_go_must_be_forced_and_the_event_says_so() {
    let Sides {
        proxy, store, _keep, ..
    } = things_proxy().await;
    for _ in 0..5 {
        side_of(proxy.proxy_addr, "/things").await;
    }
    let opened = cutover::store::Store::open(&store, &Default::default()).await.unwrap();
    eventually("the five divergences are recorded", || async {
        let summary = opened.summary().await.unwrap();
        summary
            .iter()
            .flat_map(|route| &route.outcomes)
            .any(|(outcome, n)| outcome == "diverged" && *n == 5)
    })
    .await;

    let (status, refused) = post_mode(proxy.admin_addr, TOKEN, json!({"mode": "candidate"})).await;
    assert_eq!(status, 409, "{refused}");
    let said = refused["error"].as_str().unwrap();
    assert!(
        said.contains("says NO-GO") && said.contains("match_rate things (0/5") && said.contains("\"force\": true"),
        "{said}"
    );
    let store_row = format!("--store={store}");
    let cli = run_cutover(&["switch", "candidate-fallback", &store_row]).await;
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(!cli.status.success() && stderr.contains("pass --force"), "{stderr}");
    assert_eq!(
        side_of(proxy.proxy_addr, "/things").await.1,
        "legacy",
        "nothing switched"
    );
    let back = run_cutover(&["switch", "primary-only", &store_row]).await;
    assert!(
        back.status.success(),
        "away from the candidate needs no force: {back:?}"
    );

    let (status, _) = post_mode(proxy.admin_addr, TOKEN, json!({"mode": "candidate", "force": "yes"})).await;
    assert_eq!(status, 400, "force is a boolean");
    let (status, _) = post_mode(proxy.admin_addr, TOKEN, json!({"mode": "candidate", "force": true})).await;
    assert_eq!(status, 200);
    let forced = run_cutover(&["switch", "candidate", "--force", &store_row]).await;
    assert!(forced.status.success(), "{forced:?}");
    let switches: Vec<Value> = opened
        .events("mode_switch")
        .await
        .unwrap()
        .into_iter()
        .map(|(_, detail)| serde_json::from_str(&detail).unwrap())
        .collect();
    let forced_flags: Vec<bool> = switches.iter().map(|s| s["forced"] == json!(true)).collect();
    assert_eq!(forced_flags, [false, true, true], "{switches:?}");
    opened.close().await;
    proxy.shutdown().await;
}

/// Switched to the candidate while a create is still being mirrored to it
/// (the candidate takes 400 ms per write): the client's next write uses the
/// legacy's ID, and the candidate gets its own, once the create taught the
/// pair, instead of an ID it cannot know.
#[tokio::test]
async fn a_switch_right_after_a_create_waits_for_the_pair_before_the_candidate_serves_it() {
    let legacy = TaskApi::new(Flavor::Legacy);
    let candidate = TaskApi::new(Flavor::Candidate).with_write_delay(Duration::from_millis(400));
    let (primary, shadow) = (legacy.serve().await, candidate.serve().await);
    let proxy = start(&primary, &shadow, "sqlite::memory:", ROUTES).await;
    let created = client()
        .post(format!("http://{}/api/task", proxy.proxy_addr))
        .header("content-type", "application/json")
        .body(json!({"task": "just made"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = serde_json::from_slice(&created.bytes().await.unwrap()).unwrap();
    let legacy_id = created["notionPageId"].as_str().unwrap().to_string();
    switch(proxy.admin_addr, json!({"mode": "candidate"})).await;
    let renamed = client()
        .patch(format!("http://{}/api/task/{legacy_id}", proxy.proxy_addr))
        .header("content-type", "application/json")
        .body(json!({"title": "renamed at once"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), 200, "the candidate served the rename");
    let patches: Vec<String> = shadow
        .requests()
        .iter()
        .filter(|seen| seen.method == http::Method::PATCH)
        .map(|seen| seen.path_and_query.clone())
        .collect();
    assert_eq!(patches, ["/api/task/t-1"], "the candidate got its own ID");
    assert_eq!(candidate.tasks()["t-1"].title, "renamed at once");
    proxy.shutdown().await;
}
