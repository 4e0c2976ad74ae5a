//! `[[notify]]` over sockets: a shadow whose answer lacks a field the
//! primary's has makes a high-severity group, and a real HTTP receiver on
//! loopback hears of it once, as JSON with a Slack `text`, with no secret
//! in it; a receiver that is down at first gets the notice once it comes
//! up (the attempts before are recorded), and one that refuses it (404) is
//! not asked again. Drift opened and a changed verdict are posted too.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;

const ROUTES: &str = r#"
[[route]]
name = "things"
match = "GET /things"

[[notify]]
name = "ops"
url_env = "OPS_WEBHOOK"
on = ["group", "rollback"]
backoff = "200ms"
max_attempts = 20
"#;

/// A webhook receiver on `listener` that answers `status` and keeps each body.
fn receive(listener: tokio::net::TcpListener, status: u16) -> Arc<Mutex<Vec<Value>>> {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&bodies);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let kept = Arc::clone(&kept);
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<Incoming>| {
                    let kept = Arc::clone(&kept);
                    async move {
                        let body = request
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        kept.lock()
                            .unwrap()
                            .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                        let mut response = http::Response::new(Full::new(Bytes::from_static(b"ok")));
                        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    bodies
}

/// A proxy whose shadow leaves out a field the primary gives, with
/// the sink's URL at `hook` and the store in `dir`.
async fn proxy_notifying(dir: &std::path::Path, hook: String) -> (cutover::app::Running, String) {
    let store = format!("sqlite://{}", dir.join("cutover.db").display());
    (proxy_on(store.clone(), hook).await, store)
}

/// The same proxy on the store at `store`.
async fn proxy_on(store: String, hook: String) -> cutover::app::Running {
    let primary = fixed(
        200,
        &[("content-type", "application/json")],
        br#"{"things":[1],"owner":"ann"}"#,
    )
    .await;
    let shadow = fixed(200, &[("content-type", "application/json")], br#"{"things":[1]}"#).await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes = ROUTES;
    setup.store = store;
    setup.store_extra = r#"flush = "50ms""#;
    setup.env = vec![("OPS_WEBHOOK", hook)];
    std::mem::forget((primary, shadow));
    setup.start().await
}

async fn notices(store: &str) -> Vec<cutover::store::NoticeRow> {
    let store = cutover::store::Store::open(store, &Default::default()).await.unwrap();
    let rows = store.notices(100).await.unwrap();
    store.close().await;
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_high_severity_group_is_posted_once_as_slack_text() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hooks/T000/B000/secret-path", listener.local_addr().unwrap());
    let bodies = receive(listener, 200);
    let (running, store) = proxy_notifying(dir.path(), hook).await;
    for _ in 0..5 {
        let answer = client()
            .get(format!("http://{}/things", running.proxy_addr))
            .header("authorization", "Bearer client-secret-token")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "the client gets the primary's answer");
    }
    eventually("the receiver heard of the group", || async {
        !bodies.lock().unwrap().is_empty()
    })
    .await;
    // Later looks find the same group again; it is not sent again.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "one notice per group: {bodies:?}");
    let body = &bodies[0];
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("route things"), "{text}");
    assert!(text.contains("high-severity"), "{text}");
    assert_eq!(body["cutover"]["event"], "group");
    assert_eq!(body["cutover"]["detail"]["route"], "things");
    let whole = body.to_string();
    assert!(!whole.contains("client-secret-token"), "{whole}");
    assert!(!whole.contains("secret-path"), "{whole}");
    let rows = notices(&store).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].state.as_str(), rows[0].attempts, rows[0].last_status),
        ("delivered", 1, Some(200))
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_gets_the_notice_when_it_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    // Bound but not listening: connections are refused until it listens.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let hook = format!("http://{}/hook", socket.local_addr().unwrap());
    let (running, store) = proxy_notifying(dir.path(), hook).await;
    let answer = client()
        .get(format!("http://{}/things", running.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    eventually("two attempts failed and were recorded", || async {
        let rows = notices(&store).await;
        rows.first()
            .is_some_and(|row| row.state == "pending" && row.attempts >= 2 && row.last_error.is_some())
    })
    .await;
    let refused = notices(&store).await[0].clone();
    assert!(
        !refused.last_error.as_deref().unwrap_or_default().contains("127.0.0.1"),
        "the error leaves the URL out: {refused:?}"
    );
    let bodies = receive(socket.listen(64).unwrap(), 200);
    eventually("the receiver that came back heard of the group", || async {
        !bodies.lock().unwrap().is_empty()
    })
    .await;
    eventually("the delivery is recorded", || async {
        notices(&store)
            .await
            .first()
            .is_some_and(|row| row.state == "delivered")
    })
    .await;
    let row = notices(&store).await[0].clone();
    assert!(row.attempts > refused.attempts, "{row:?}");
    assert_eq!(bodies.lock().unwrap()[0]["cutover"]["event"], "group");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_refuses_the_notice_is_not_asked_again() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/gone", listener.local_addr().unwrap());
    let bodies = receive(listener, 404);
    let (running, store) = proxy_notifying(dir.path(), hook).await;
    client()
        .get(format!("http://{}/things", running.proxy_addr))
        .send()
        .await
        .unwrap();
    eventually("the refusal is recorded", || async {
        notices(&store).await.first().is_some_and(|row| row.state == "failed")
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(bodies.lock().unwrap().len(), 1, "asked once");
    let row = notices(&store).await[0].clone();
    assert_eq!((row.attempts, row.last_status), (1, Some(404)));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_store_deliver_each_notice_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store(dir.path()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = receive(listener, 200);
    let first = proxy_on(store.clone(), hook.clone()).await;
    let second = proxy_on(store.clone(), hook).await;
    for proxy in [&first, &second] {
        for _ in 0..3 {
            let answer = client()
                .get(format!("http://{}/things", proxy.proxy_addr))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200);
        }
    }
    eventually("the receiver heard of the group", || async {
        !bodies.lock().unwrap().is_empty()
    })
    .await;
    // Both instances look every second; give each several looks.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(bodies.lock().unwrap().len(), 1, "one delivery across both instances");
    let rows = notices(&store).await;
    assert_eq!(rows.len(), 1, "one notice across both instances: {rows:?}");
    assert_eq!((rows[0].state.as_str(), rows[0].attempts), ("delivered", 1));
    first.shutdown().await;
    second.shutdown().await;
    drop_shared_store(&store).await;
}

const DRIFT_ROUTES: &str = r#"
[[route]]
name = "things"
match = "PATCH /things"
mirror = "dual-write"

[[notify]]
name = "ops"
url_env = "OPS_WEBHOOK"
on = ["drift", "verdict"]
backoff = "200ms"
"#;

/// A dual-write the shadow fails opens drift, and the verdict judged at
/// start differs from the one the store last recorded: the receiver hears
/// of both, in cutover's words, and of nothing it was not asked about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_opened_and_a_verdict_change_are_posted() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let seeded = cutover::store::Store::open(&store, &Default::default()).await.unwrap();
    let earlier = serde_json::json!({"verdict": "GO", "previous": "NOT YET", "why": ""});
    seeded.add_event("verdict", &earlier, 1_000).await.unwrap();
    seeded.close().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = receive(listener, 200);
    let primary = fixed(200, &[("content-type", "application/json")], br#"{"ok":true}"#).await;
    let shadow = fixed(503, &[("content-type", "application/json")], br#"{"down":true}"#).await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes = DRIFT_ROUTES;
    setup.shadow_extra = "write_tries = 1";
    setup.store = store.clone();
    setup.store_extra = r#"flush = "50ms""#;
    setup.env = vec![("OPS_WEBHOOK", hook)];
    let running = setup.start().await;
    let answer = client()
        .patch(format!("http://{}/things", running.proxy_addr))
        .body(r#"{"title":"private words"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "the client gets the primary's answer");
    eventually("the receiver heard of the drift and the verdict", || async {
        bodies.lock().unwrap().len() >= 2
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let bodies = bodies.lock().unwrap().clone();
    let text_of = |event: &str| -> String {
        let matching: Vec<&Value> = bodies.iter().filter(|body| body["cutover"]["event"] == event).collect();
        assert_eq!(matching.len(), 1, "one {event} notice: {bodies:?}");
        matching[0]["text"].as_str().unwrap().to_string()
    };
    let drift = text_of("drift");
    assert!(drift.contains("a PATCH on route things drifted"), "{drift}");
    assert!(drift.contains("200 vs 503"), "{drift}");
    let verdict = text_of("verdict");
    // NOT YET on so little traffic, or NO-GO once the drift is counted.
    assert!(
        verdict.starts_with("cutover: the verdict went from GO to NOT YET.")
            || verdict.starts_with("cutover: the verdict went from GO to NO-GO."),
        "{verdict}"
    );
    assert_eq!(bodies.len(), 2, "only what the sink is on: {bodies:?}");
    assert!(!serde_json::to_string(&bodies).unwrap().contains("private words"));
    running.shutdown().await;
    drop((primary, shadow));
}
