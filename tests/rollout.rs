//! A ramp over sockets: `cutover rollout start` puts the first step of
//! `[route.rollout]` in force, the instance advances it after each hold
//! while the gates pass on the share's own traffic, a restart resumes it,
//! a candidate that starts to differ steps it back down to `shadow`, and
//! every step is a `rollout_step` row `cutover rollout status` reads.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use serde_json::{json, Value};

const ROUTES: &str = r#"
[readiness]
min_compared_per_route = 10
min_match_rate = 0.9

[[route]]
name = "things"
match = "GET /things"

[route.rollout]
steps = ["10%", "50%", "100%"]
hold = "3s"
key = "header:x-user"
"#;

/// A side that says who it is; the candidate's body differs once `broken`.
async fn side(name: &'static str, broken: Arc<AtomicBool>) -> Backend {
    backend(move |_seen: Seen| {
        let things = if broken.load(Ordering::SeqCst) {
            json!([1, 2])
        } else {
            json!([1, 2, 3])
        };
        std::future::ready(respond(
            200,
            &[
                ("content-type".into(), "application/json".into()),
                ("x-side".into(), name.into()),
            ],
            Bytes::from(json!({ "things": things }).to_string()),
        ))
    })
    .await
}

/// Sends requests for 100 users, round after round, until stopped.
fn traffic(proxy: std::net::SocketAddr, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = client();
        let mut round = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let user = format!("user-{}", round % 100);
            let _ = client
                .get(format!("http://{proxy}/things"))
                .header("x-user", user)
                .send()
                .await;
            round += 1;
        }
    })
}

async fn keyless_side(proxy: std::net::SocketAddr) -> String {
    let answer = client().get(format!("http://{proxy}/things")).send().await.unwrap();
    answer.headers()["x-side"].to_str().unwrap().to_string()
}

async fn status(config: &std::path::Path) -> String {
    let out = run_cutover(&["rollout", "status", "-c", config.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn steps(store: &str) -> Vec<(i64, Value)> {
    let store = cutover::store::Store::open_existing(store, &Default::default())
        .await
        .unwrap();
    let steps = store.events("rollout_step").await.unwrap();
    store.close().await;
    steps
        .into_iter()
        .map(|(at, detail)| (at, serde_json::from_str(&detail).unwrap()))
        .collect()
}

#[tokio::test]
async fn a_ramp_advances_while_the_share_matches_resumes_after_a_restart_and_steps_back_on_a_breach() {
    let broken = Arc::new(AtomicBool::new(false));
    let primary = side("legacy", Arc::new(AtomicBool::new(false))).await;
    let shadow = side("candidate", Arc::clone(&broken)).await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.store = store.clone();
    setup.routes = ROUTES;
    let config = dir.path().join("cutover.toml");
    std::fs::write(&config, setup.toml()).unwrap();
    let config_arg = config.to_str().unwrap();

    let proxy = setup.start().await;
    // The store is opened by the instance's writer after start returns.
    until_ready(proxy.admin_addr).await;
    assert!(status(&config)
        .await
        .contains("route things: not started (steps 10% → 50% → 100%)"));
    let started = run_cutover(&["rollout", "start", "--route", "things", "-c", config_arg]).await;
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    assert!(String::from_utf8_lossy(&started.stdout).contains("rollout started at 10% by header:x-user"));
    let refused = run_cutover(&["rollout", "start", "--route", "elsewhere", "-c", config_arg]).await;
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("no ramp for route elsewhere; the ramps are: --route things")
    );

    // Step 2 (50%) comes after a hold with every gate passing; then a restart.
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(proxy.proxy_addr, Arc::clone(&stop));
    eventually("the ramp reaches 50%", || async {
        status(&config).await.contains("step 2 of 3 (50%)")
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    proxy.shutdown().await;
    let restarted_at = cutover::clock::now_ms();
    let proxy = setup.start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(proxy.proxy_addr, Arc::clone(&stop));
    eventually("the restarted instance takes the ramp to 100%", || async {
        status(&config).await.contains("step 3 of 3 (100%)")
    })
    .await;
    assert_eq!(
        keyless_side(proxy.proxy_addr).await,
        "candidate",
        "100% is the whole route"
    );
    let recorded = steps(&store).await;
    let actions: Vec<(&str, f64)> = recorded
        .iter()
        .map(|(_, detail)| (detail["action"].as_str().unwrap(), detail["percent"].as_f64().unwrap()))
        .collect();
    assert_eq!(actions, [("start", 10.0), ("advance", 50.0), ("advance", 100.0)]);
    assert!(
        recorded[2].0 >= restarted_at,
        "the step after the restart was the new instance's"
    );

    // The candidate starts to differ: each step's gates fail, down to shadow.
    broken.store(true, Ordering::SeqCst);
    eventually("the ramp steps back to shadow", || async {
        status(&config).await.contains("stepped back to shadow")
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    let recorded = steps(&store).await;
    let backs: Vec<(&str, Option<u64>)> = recorded[3..]
        .iter()
        .map(|(_, detail)| (detail["action"].as_str().unwrap(), detail["step"].as_u64()))
        .collect();
    assert_eq!(backs, [("back", Some(1)), ("back", Some(0)), ("back", None)]);
    let reason = recorded[3].1["reason"].as_str().unwrap();
    assert!(reason.starts_with("breach at 100%: match_rate things:"), "{reason}");
    assert_eq!(keyless_side(proxy.proxy_addr).await, "legacy");
    for user in ["user-1", "user-2", "user-3"] {
        let answer = client()
            .get(format!("http://{}/things", proxy.proxy_addr))
            .header("x-user", user)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.headers()["x-side"], "legacy", "{user} is back on the primary");
    }
    proxy.shutdown().await;
}
