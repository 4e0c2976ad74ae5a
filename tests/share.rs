//! A sticky share on the candidate, over sockets: `POST /api/mode` (and the
//! CLI) with a percent and a key serve that part of a route's users from
//! the candidate and the rest from the primary; one user stays on one side
//! on every replica of the store; a request without the key is served by
//! the primary; both parts are mirrored the other way round and counted
//! apart; a bad percent or key is refused with the reason.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::*;
use serde_json::json;

const TOKEN: &str = "share-token";
const ROUTES: &str = "[[route]]\nname = \"things\"\nmatch = \"GET /things\"\n";

/// A backend that says which side it is, the same body on both sides
/// otherwise, so every compared request matches.
async fn side(name: &'static str) -> Backend {
    backend(move |_seen: Seen| {
        std::future::ready(respond(
            200,
            &[
                ("content-type".into(), "application/json".into()),
                ("x-side".into(), name.into()),
            ],
            Bytes::from(json!({"things": [1, 2, 3]}).to_string()),
        ))
    })
    .await
}

async fn start(primary: &Backend, shadow: &Backend, store: &str) -> cutover::app::Running {
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.store = store.to_string();
    setup.routes = ROUTES;
    setup.env = vec![("CUTOVER_ADMIN_TOKEN", TOKEN.to_string())];
    setup.start().await
}

/// Which side served a request for `user` (none: no `x-user` header).
async fn served(proxy: std::net::SocketAddr, user: Option<&str>) -> String {
    let mut request = client().get(format!("http://{proxy}/things"));
    if let Some(user) = user {
        request = request.header("x-user", user);
    }
    let answer = request.send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let side = answer.headers()["x-side"].to_str().unwrap().to_string();
    assert_eq!(answer.bytes().await.unwrap().as_ref(), br#"{"things":[1,2,3]}"#);
    side
}

fn users() -> Vec<String> {
    (0..60).map(|i| format!("user-{i}")).collect()
}

#[tokio::test]
async fn a_share_of_users_is_served_by_the_candidate_on_every_replica_and_both_parts_are_compared() {
    let (primary, shadow) = (side("legacy").await, side("candidate").await);
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store(dir.path()).await;
    let (a, b) = (
        start(&primary, &shadow, &store).await,
        start(&primary, &shadow, &store).await,
    );

    let (status, modes) = post_mode(
        a.admin_addr,
        TOKEN,
        json!({"mode": "candidate", "route": "things", "percent": 50, "key": "header:x-user", "force": true}),
    )
    .await;
    assert_eq!(status, 200, "{modes}");
    assert_eq!(modes["routes"]["things"], "candidate");
    assert_eq!(
        modes["shares"]["things"],
        json!({"percent": 50.0, "key": "header:x-user"})
    );

    // Replica B learns the share from the store.
    eventually("replica B follows the share", || async {
        let mut on_candidate = 0;
        for user in users() {
            on_candidate += usize::from(served(b.proxy_addr, Some(&user)).await == "candidate");
        }
        on_candidate > 0
    })
    .await;

    // What B mirrored before it followed is not part of the share.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    primary.seen.lock().unwrap().clear();
    shadow.seen.lock().unwrap().clear();

    let mut sides: BTreeMap<String, String> = BTreeMap::new();
    for user in users() {
        let first = served(a.proxy_addr, Some(&user)).await;
        for replica in [&a, &b, &a] {
            assert_eq!(
                served(replica.proxy_addr, Some(&user)).await,
                first,
                "{user} moved between sides"
            );
        }
        sides.insert(user, first);
    }
    let on_candidate = sides.values().filter(|side| *side == "candidate").count();
    assert!(
        (18..=42).contains(&on_candidate),
        "{on_candidate} of 60 users in a 50% share"
    );
    for _ in 0..5 {
        assert_eq!(served(a.proxy_addr, None).await, "legacy", "no key: the primary serves");
    }

    // Each part is mirrored to the other side: the legacy sees the share's
    // users as the shadow, the candidate sees the rest.
    let (in_share, rest): (Vec<_>, Vec<_>) = sides.iter().partition(|(_, side)| *side == "candidate");
    let mirrored_to = |backend: &Backend, user: &str| {
        backend.requests().iter().any(|seen| {
            seen.headers.get("x-user").is_some_and(|v| v == user) && seen.headers.contains_key("x-cutover-shadow")
        })
    };
    eventually("every request is mirrored the other way round", || async {
        in_share.iter().all(|(user, _)| mirrored_to(&primary, user))
            && rest.iter().all(|(user, _)| mirrored_to(&shadow, user))
    })
    .await;
    for (user, _) in &in_share {
        assert!(
            !mirrored_to(&shadow, user),
            "{user} is served by the candidate, not mirrored to it"
        );
    }

    // Counted apart, in the metrics and the summary.
    let text = metrics_text(a.admin_addr).await;
    let counted = |served: &str| {
        metric(
            &text,
            "cutover_served_total",
            &[("route", "things"), ("served", served), ("outcome", "match")],
        )
    };
    assert!(counted("shadow") >= 2.0 * in_share.len() as f64, "{text}");
    assert!(counted("primary") >= 2.0 * rest.len() as f64);
    eventually("the summary splits the route by serving side", || async {
        let summary = api_get(a.admin_addr, "/api/summary", TOKEN).await;
        let parts = &summary["routes"][0]["served"];
        parts[0]["served"] == "primary" && parts[1]["served"] == "shadow" && parts[1]["requests"].as_i64() >= Some(60)
    })
    .await;

    // A whole-route switch ends the share.
    post_mode(a.admin_addr, TOKEN, json!({"mode": "shadow", "route": "things"})).await;
    eventually("the share is over on replica B", || async {
        let mut all_legacy = true;
        for user in users().iter().take(20) {
            all_legacy &= served(b.proxy_addr, Some(user)).await == "legacy";
        }
        all_legacy
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
    drop_shared_store(&store).await;
}

#[tokio::test]
async fn a_bad_percent_or_key_is_refused_with_the_reason_and_the_command_line_takes_a_share() {
    let (primary, shadow) = (side("legacy").await, side("candidate").await);
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let proxy = start(&primary, &shadow, &store).await;
    for (body, reason) in [
        (
            json!({"mode": "candidate", "percent": 0}),
            "more than 0 and at most 100",
        ),
        (
            json!({"mode": "candidate", "percent": 150}),
            "more than 0 and at most 100",
        ),
        (json!({"mode": "candidate", "percent": 1.005}), "steps of 0.01"),
        (json!({"mode": "candidate", "percent": "5"}), "percent"),
        (
            json!({"mode": "candidate", "percent": 5, "key": "query:user"}),
            "header:NAME, cookie:NAME or client-ip",
        ),
        (
            json!({"mode": "candidate", "percent": 5, "key": "header:bad name"}),
            "not a header name",
        ),
        (json!({"mode": "candidate", "key": "cookie:sid"}), "give a percent"),
        (json!({"mode": "shadow", "percent": 5}), "candidate"),
    ] {
        let (status, answer) = post_mode(proxy.admin_addr, TOKEN, body.clone()).await;
        assert_eq!(status, 400, "{body} → {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "{body}: {error}");
    }
    assert_eq!(
        served(proxy.proxy_addr, Some("user-1")).await,
        "legacy",
        "nothing was switched"
    );

    // The command checks the route against what the instances announced.
    let switch_to = |percent: &'static str| {
        let store = store.clone();
        async move {
            run_cutover(&[
                "switch",
                "candidate",
                "--route",
                "things",
                "--percent",
                percent,
                "--key",
                "cookie:uid",
                "--store",
                &store,
                "--force",
            ])
            .await
        }
    };
    eventually("the instance announces its routes and the command switches", || async {
        switch_to("100").await.status.success()
    })
    .await;
    eventually("a 100% share is the whole route", || async {
        served(proxy.proxy_addr, None).await == "candidate"
    })
    .await;
    let cli = switch_to("5").await;
    let out = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    assert!(out.contains("for 5% by cookie:uid"), "{out}");
    eventually("keyless requests go back to the primary", || async {
        served(proxy.proxy_addr, None).await == "legacy"
    })
    .await;
    let refused = run_cutover(&["switch", "candidate", "--percent", "250", "--store", &store, "--force"]).await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("more than 0 and at most 100, in steps of 0.01; got 250"),
        "{stderr}"
    );
    proxy.shutdown().await;
}
