//! `[primary.headers]` / `[shadow.headers]`: each side gets its own
//! credentials on every request — proxied, mirrored and replayed — while
//! the client's answer is the primary's, and no kept text holds a value
//! cutover set, even where a backend echoes it back. Each side also gets
//! its own child span of the client's W3C trace, and samples keep its id.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use cutover::ledger::LedgerState;
use cutover::store::{Store, StoreOptions};
use serde_json::json;

const PRIMARY_TOKEN: &str = "Bearer primary-secret-0001";
const SHADOW_TOKEN: &str = "Bearer \"shadow\"-secret-0002";

const ROUTES: &str = r#"
[[route]]
name = "echo"
match = "GET /echo"

[[route]]
name = "create"
match = "POST /things"
mirror = "dual-write"
"#;

/// A backend that answers with the credentials it was sent, as a careless
/// API's debug endpoint might; `down` answers writes with 503.
async fn echoing(down: Arc<AtomicBool>) -> Backend {
    backend(move |seen| {
        let down = Arc::clone(&down);
        async move {
            if seen.method == http::Method::POST && down.load(Ordering::SeqCst) {
                return respond(503, &[], Bytes::from_static(b"down"));
            }
            let header = |name: &str| seen.headers.get(name).map(|value| value.to_str().unwrap().to_string());
            let body = json!({
                "authorization": header("authorization"),
                "cookie": header("cookie"),
            });
            let json = [("content-type".to_string(), "application/json".to_string())];
            respond(200, &json, Bytes::from(body.to_string()))
        }
    })
    .await
}

#[tokio::test]
async fn each_side_gets_its_own_headers_and_no_kept_text_holds_them() {
    let primary = echoing(Arc::new(AtomicBool::new(false))).await;
    let shadow_down = Arc::new(AtomicBool::new(true));
    let shadow = echoing(Arc::clone(&shadow_down)).await;
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes = ROUTES;
    setup.store = store_url.clone();
    setup.primary_extra = "[primary.headers]\nset = { Authorization = \"PRIMARY_TOKEN\" }";
    setup.shadow_extra =
        "write_tries = 1\n[shadow.headers]\nset = { Authorization = \"SHADOW_TOKEN\" }\nremove = [\"cookie\"]";
    setup.env = vec![
        ("PRIMARY_TOKEN", PRIMARY_TOKEN.to_string()),
        ("SHADOW_TOKEN", SHADOW_TOKEN.to_string()),
        ("CUTOVER_ADMIN_TOKEN", "t0ken".to_string()),
    ];
    let proxy = setup.start().await;

    let answer = client()
        .get(format!("http://{}/echo", proxy.proxy_addr))
        .header("authorization", "Bearer the-client-s-own")
        .header("cookie", "session=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"authorization": PRIMARY_TOKEN, "cookie": "session=abc"}),
        "the client gets the primary's answer, and the primary its own credentials"
    );
    eventually("the shadow got the read", || async { !shadow.requests().is_empty() }).await;
    let mirrored = &shadow.requests()[0];
    assert_eq!(mirrored.headers["authorization"], SHADOW_TOKEN);
    assert!(mirrored.headers.get("cookie").is_none(), "removed on the shadow");

    let store = Store::open(&store_url, &StoreOptions::default()).await.unwrap();
    eventually("the read's divergence is stored with a sample", || async {
        match store.groups().await.unwrap().first() {
            Some(group) => !store.samples(&group.key).await.unwrap().is_empty(),
            None => false,
        }
    })
    .await;
    let group = store.groups().await.unwrap().remove(0);
    let sample = store.samples(&group.key).await.unwrap().remove(0);
    let kept = format!("{sample:?}");
    for token in ["primary-secret-0001", "-secret-0002", "the-client-s-own"] {
        assert!(!kept.contains(token), "a sample holds {token}: {kept}");
    }
    assert!(kept.contains("[redacted]"), "{kept}");
    assert!(kept.contains("/cookie"), "the difference still names the field: {kept}");

    let write = client()
        .post(format!("http://{}/things", proxy.proxy_addr))
        .header("cookie", "session=abc")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 200);
    eventually("the write drifted", || async {
        store.ledger_count(LedgerState::Drift).await.unwrap() == 1
    })
    .await;
    shadow_down.store(false, Ordering::SeqCst);
    let before = shadow.requests().len();
    let replayed = replay_all_drift(proxy.admin_addr, "t0ken").await;
    assert_eq!(replayed["replayed"][0]["state"], "reconciled", "{replayed}");
    let seen = shadow.requests();
    assert_eq!(seen.len(), before + 1, "one replay sent");
    let replay = seen.last().unwrap();
    assert_eq!(replay.method, http::Method::POST);
    assert_eq!(
        replay.headers["authorization"], SHADOW_TOKEN,
        "the replay has the shadow's own"
    );
    assert!(replay.headers.get("cookie").is_none());
    for request in primary.requests() {
        assert_eq!(request.headers["authorization"], PRIMARY_TOKEN);
        assert_eq!(request.headers["cookie"], "session=abc");
    }
    store.close().await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn each_side_gets_a_child_span_of_the_clients_trace_and_no_trace_is_invented() {
    let primary = fixed(200, &[("content-type", "application/json")], br#"{"ok":true}"#).await;
    let shadow = fixed(200, &[("content-type", "application/json")], br#"{"ok":false}"#).await;
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes = ROUTES;
    setup.store = store_url.clone();
    let proxy = setup.start().await;
    let client_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let answer = client()
        .get(format!("http://{}/echo", proxy.proxy_addr))
        .header("traceparent", client_parent)
        .header("tracestate", "vendor=opaque")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    client()
        .get(format!("http://{}/echo", proxy.proxy_addr))
        .send()
        .await
        .unwrap();
    eventually("the shadow got both reads", || async { shadow.requests().len() == 2 }).await;
    let (to_primary, to_shadow) = (&primary.requests()[0], &shadow.requests()[0]);
    let parent = |seen: &Seen| seen.headers["traceparent"].to_str().unwrap().to_string();
    let (primary_parent, shadow_parent) = (parent(to_primary), parent(to_shadow));
    for sent in [&primary_parent, &shadow_parent] {
        assert!(
            sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && sent.ends_with("-01"),
            "same trace, same flags: {sent}"
        );
        assert_ne!(sent, client_parent, "a child span, not the client's");
        assert_eq!(sent.len(), client_parent.len());
    }
    assert_ne!(primary_parent, shadow_parent, "each side its own span");
    for seen in [to_primary, to_shadow] {
        assert_eq!(seen.headers["tracestate"], "vendor=opaque");
    }
    for seen in [&primary.requests()[1], &shadow.requests()[1]] {
        assert!(seen.headers.get("traceparent").is_none(), "no trace invented");
    }
    // The divergence's samples name the trace each came from, to find it
    // in the backends' traces.
    let store = Store::open(&store_url, &StoreOptions::default()).await.unwrap();
    eventually("both reads' samples are stored", || async {
        match store.groups().await.unwrap().first() {
            Some(group) => store.samples(&group.key).await.unwrap().len() == 2,
            None => false,
        }
    })
    .await;
    let group = store.groups().await.unwrap().remove(0);
    let mut traces: Vec<Option<String>> = store
        .samples(&group.key)
        .await
        .unwrap()
        .into_iter()
        .map(|sample| sample.trace_id)
        .collect();
    traces.sort();
    assert_eq!(traces, vec![None, Some("4bf92f3577b34da6a3ce929d0e0e4736".to_string())]);
    store.close().await;
    proxy.shutdown().await;
}
