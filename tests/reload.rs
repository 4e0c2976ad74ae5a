//! Config hot reload: `POST /api/reload` and SIGHUP re-read the file; a
//! broken or restart-only change is refused and the old config stays; a
//! good one applies to the next request and is an `events` row.

mod common;

use common::*;
use cutover::metrics::REQUESTS_TOTAL;
use serde_json::Value;

const TOKEN: &str = "reload-token";

fn with_route(setup: &ProxySetup, routes: &'static str) -> String {
    let mut setup = ProxySetup::new(setup.primary.clone(), setup.shadow.clone());
    setup.routes = routes;
    setup.store = String::new();
    setup.toml()
}

async fn reload(admin: std::net::SocketAddr) -> (u16, Value) {
    let answer = client()
        .post(format!("http://{admin}/api/reload"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (
        status,
        serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap_or_default(),
    )
}

#[tokio::test]
async fn a_good_reload_applies_to_the_next_request_and_a_bad_one_keeps_the_old_config() {
    let primary = fixed(200, &[("content-type", "application/json")], br#"{"a":1}"#).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cutover.toml");
    let store = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let setup = ProxySetup::new(primary.url(), primary.url());
    let write = |routes: &'static str| {
        let text = with_route(&setup, routes).replace("url = \"\"", &format!("url = \"{store}\""));
        std::fs::write(&file, text).unwrap();
    };
    write("");
    let env = |name: &str| (name == "CUTOVER_ADMIN_TOKEN").then(|| TOKEN.to_string());
    let config =
        cutover::config::Config::parse(&std::fs::read_to_string(&file).unwrap(), file.to_str().unwrap(), &env).unwrap();
    let proxy = cutover::app::start(config).await.unwrap();
    let admin = proxy.admin_addr;
    let get = |path: &'static str| client().get(format!("http://{}{path}", proxy.proxy_addr)).send();
    get("/new").await.unwrap();
    wait_for_metric(admin, REQUESTS_TOTAL, &[("route", "unmatched")], 1.0).await;

    write("[[route]]\nname = \"new\"\nmatch = \"GET /new\"\n");
    let (status, body) = reload(admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["routes"], 1);
    get("/new").await.unwrap();
    assert_eq!(
        wait_for_metric(admin, REQUESTS_TOTAL, &[("route", "new")], 1.0).await,
        1.0
    );

    // A broken file is refused with where it is broken; the routes in force stay.
    std::fs::write(&file, "[listen\nproxy = 1").unwrap();
    let (status, body) = reload(admin).await;
    assert_eq!(status, 400);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with("reload refused, the old configuration stays: "),
        "{error}"
    );
    assert!(error.contains(file.to_str().unwrap()), "{error}");
    // A change that needs a restart is refused too, not half applied.
    let moved = with_route(&setup, "[[route]]\nname = \"other\"\nmatch = \"GET /new\"\n")
        .replace("url = \"\"", &format!("url = \"{store}\""))
        .replacen("timeout = \"5s\"\n", "timeout = \"7s\"\n", 1);
    std::fs::write(&file, moved).unwrap();
    let (status, body) = reload(admin).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("[primary] changed; these take a restart"),
        "{body}"
    );
    get("/new").await.unwrap();
    assert_eq!(
        wait_for_metric(admin, REQUESTS_TOTAL, &[("route", "new")], 2.0).await,
        2.0
    );
    assert_eq!(
        metric(&metrics_text(admin).await, REQUESTS_TOTAL, &[("route", "other")]),
        0.0
    );
    proxy.shutdown().await;

    let store = cutover::store::Store::open(&store, &cutover::store::StoreOptions::default())
        .await
        .unwrap();
    let reloads = store.events("config_reload").await.unwrap();
    assert_eq!(reloads.len(), 1, "only the successful reload is recorded: {reloads:?}");
}

#[test]
fn sighup_reloads_the_real_binary() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let primary = runtime.block_on(fixed(200, &[], b"x"));
    let mut setup = ProxySetup::new(primary.url(), primary.url());
    setup.store = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let serving = ServeProcess::start(&setup, dir.path(), "info");
    let config = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .unwrap();
    let mut file = std::fs::OpenOptions::new().append(true).open(&config).unwrap();
    writeln!(file, "\n[[route]]\nname = \"added\"\nmatch = \"GET /added\"").unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &serving.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let mut logs = serving;
    let reloaded = logs
        .logs
        .by_ref()
        .map_while(Result::ok)
        .find(|line| line.contains("configuration reloaded"));
    assert!(
        reloaded.is_some_and(|line| line.contains("\"routes\":1")),
        "no reload logged"
    );
    let (code, _) = logs.terminate();
    assert_eq!(code, Some(0));
}
