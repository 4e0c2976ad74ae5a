//! The proxy over real sockets: what the client gets, what each backend
//! sees, and how every request is counted.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use cutover::metrics::{MIRROR_DROPPED_TOTAL, MIRROR_QUEUE_DEPTH, REQUESTS_TOTAL, SHADOW_ERRORS_TOTAL};
use http::Response;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

/// gzip of "hello\n": passed through as bytes, never decoded on the way.
const GZIP_HELLO: &[u8] = &[
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0xe7, 0x02, 0x00, 0x20,
    0x30, 0x3a, 0x36, 0x06, 0x00, 0x00, 0x00,
];

fn binary_body() -> Bytes {
    Bytes::from((0..=255u8).cycle().take(3000).collect::<Vec<u8>>())
}

/// The primary of the byte-identity test: one answer shape per path.
async fn varied_primary() -> Backend {
    backend(|seen: Seen| async move {
        let s = |v: &str| v.to_string();
        match seen.path_and_query.as_str() {
            "/json" => respond(
                200,
                &[(s("content-type"), s("application/json")), (s("x-custom"), s("a"))],
                Bytes::from_static(b"{\"a\":1}"),
            ),
            "/binary" => respond(
                200,
                &[(s("content-type"), s("application/octet-stream"))],
                binary_body(),
            ),
            "/gzip" => respond(
                200,
                &[(s("content-type"), s("text/plain")), (s("content-encoding"), s("gzip"))],
                Bytes::from_static(GZIP_HELLO),
            ),
            "/empty" => respond(200, &[], Bytes::new()),
            "/no-content" => respond(204, &[(s("x-why"), s("nothing"))], Bytes::new()),
            "/cookies" => respond(
                200,
                &[(s("set-cookie"), s("a=1; Path=/")), (s("set-cookie"), s("b=2; Path=/"))],
                Bytes::from_static(b"ok"),
            ),
            "/chunked" => {
                let chunks: Vec<Result<Frame<Bytes>, Infallible>> = ["first,", "second,", "third"]
                    .into_iter()
                    .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
                    .collect();
                let mut response = Response::new(StreamBody::new(futures_util::stream::iter(chunks)).boxed_unsync());
                response
                    .headers_mut()
                    .insert("content-type", "text/plain".parse().unwrap());
                response
            }
            _ => respond(404, &[], Bytes::from_static(b"not here")),
        }
    })
    .await
}

async fn snapshot(response: reqwest::Response) -> (u16, Vec<(String, String)>, Bytes) {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str() != "date")
        .map(|(name, value)| (name.to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    (status, headers, response.bytes().await.unwrap())
}

#[tokio::test]
async fn the_client_gets_the_primarys_answer_byte_for_byte() {
    let primary = varied_primary().await;
    let shadow = fixed(500, &[("content-type", "text/html")], b"shadow says no").await;
    let proxy = ProxySetup::new(primary.url(), shadow.url()).start().await;
    let client = client();
    let paths = [
        "/json",
        "/binary",
        "/gzip",
        "/empty",
        "/no-content",
        "/cookies",
        "/chunked",
        "/missing",
    ];
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        for path in paths {
            let direct = snapshot(
                client
                    .request(method.clone(), format!("{}{path}", primary.url()))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            let proxied = snapshot(
                client
                    .request(method.clone(), format!("http://{}{path}", proxy.proxy_addr))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(proxied, direct, "{method} {path}");
        }
    }
    let chunked = client
        .get(format!("http://{}/chunked", proxy.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(chunked.headers()["transfer-encoding"], "chunked");
    assert_eq!(chunked.bytes().await.unwrap(), "first,second,third");
    let gzip = client
        .get(format!("http://{}/gzip", proxy.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(gzip.bytes().await.unwrap().as_ref(), GZIP_HELLO);
}

#[tokio::test]
async fn both_upstreams_get_the_request_with_forwarding_fields_and_only_the_shadow_is_marked() {
    let primary = fixed(200, &[], b"same").await;
    let shadow = fixed(200, &[], b"same").await;
    let proxy = ProxySetup::new(primary.url(), shadow.url()).start().await;
    let response = client()
        .get(format!("http://{}/api/things?page=2&q=a%20b", proxy.proxy_addr))
        .header("connection", "x-hop-secret")
        .header("x-hop-secret", "must not travel")
        .header("x-request-id", "req-42")
        .header("x-forwarded-for", "198.51.100.7")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[("outcome", "match")], 1.0).await;

    let (p, s) = (&primary.requests()[0], &shadow.requests()[0]);
    for (seen, backend) in [(p, &primary), (s, &shadow)] {
        assert_eq!(seen.path_and_query, "/api/things?page=2&q=a%20b");
        assert_eq!(seen.headers["x-request-id"], "req-42");
        assert_eq!(seen.headers["x-forwarded-for"], "198.51.100.7, 127.0.0.1");
        assert_eq!(seen.headers["x-forwarded-proto"], "http");
        assert_eq!(seen.headers["x-forwarded-host"], proxy.proxy_addr.to_string());
        assert_eq!(
            seen.headers["host"],
            backend.addr.to_string(),
            "each upstream gets its own Host"
        );
        assert_eq!(seen.headers["accept"], "application/json");
        assert!(
            seen.headers.get("x-hop-secret").is_none(),
            "fields named in Connection are hop-by-hop"
        );
    }
    assert!(p.headers.get("x-cutover-shadow").is_none());
    assert_eq!(s.headers["x-cutover-shadow"], "1");
}

#[tokio::test]
async fn a_missing_request_id_is_generated_once_for_both_sides() {
    let primary = fixed(200, &[], b"x").await;
    let shadow = fixed(200, &[], b"x").await;
    let proxy = ProxySetup::new(primary.url(), shadow.url()).start().await;
    client()
        .get(format!("http://{}/", proxy.proxy_addr))
        .send()
        .await
        .unwrap();
    wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[("outcome", "match")], 1.0).await;
    let p = primary.requests()[0].headers["x-request-id"].clone();
    let s = shadow.requests()[0].headers["x-request-id"].clone();
    assert_eq!(p, s);
    assert_eq!(p.len(), 36);
}

/// A shadow that is down, hangs past its timeout, fails, or speaks garbage
/// changes nothing the client sees; each failure is counted by kind.
#[tokio::test]
async fn a_broken_shadow_changes_nothing_the_client_sees() {
    let primary = fixed(200, &[("content-type", "application/json")], b"{\"ok\":true}").await;
    let down = format!("http://{}", closed_port().await);
    let failing = fixed(500, &[], b"boom").await.url();
    let garbage = format!("http://{}", garbage_server().await);
    let hanging = backend(|_| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        respond(200, &[], Bytes::from_static(b"{\"ok\":true}"))
    })
    .await
    .url();
    let cases = [
        (down, "connect"),
        (failing, "status_5xx"),
        (garbage, "protocol"),
        (hanging, "timeout"),
    ];
    for (shadow_url, kind) in cases {
        let mut setup = ProxySetup::new(primary.url(), shadow_url);
        setup.shadow_timeout = "300ms";
        let proxy = setup.start().await;
        for _ in 0..3 {
            let response = client()
                .get(format!("http://{}/x", proxy.proxy_addr))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "shadow failing with {kind}");
            assert_eq!(response.headers()["content-type"], "application/json");
            assert_eq!(response.bytes().await.unwrap(), "{\"ok\":true}");
        }
        let errors = wait_for_metric(proxy.admin_addr, SHADOW_ERRORS_TOTAL, &[("kind", kind)], 3.0).await;
        assert_eq!(errors, 3.0, "shadow errors of kind {kind}");
        let outcomes = wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[("outcome", "shadow_error")], 3.0).await;
        assert_eq!(outcomes, 3.0);
    }
}

#[tokio::test]
async fn the_client_never_waits_for_a_slow_shadow() {
    let primary = fixed(200, &[], b"fast").await;
    let started = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let (s, f) = (Arc::clone(&started), Arc::clone(&finished));
    let shadow = backend(move |_| {
        let (s, f) = (Arc::clone(&s), Arc::clone(&f));
        async move {
            s.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(3)).await;
            f.store(true, Ordering::SeqCst);
            respond(200, &[], Bytes::from_static(b"fast"))
        }
    })
    .await;
    let proxy = ProxySetup::new(primary.url(), shadow.url()).start().await;
    for _ in 0..3 {
        let response = client()
            .get(format!("http://{}/", proxy.proxy_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(response.bytes().await.unwrap(), "fast");
        assert!(
            !finished.load(Ordering::SeqCst),
            "the answer came only after the shadow finished"
        );
    }
    // The shadow really was called, concurrently, and is still sleeping.
    for _ in 0..100 {
        if started.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(started.load(Ordering::SeqCst), "the shadow was never called");
    assert!(!finished.load(Ordering::SeqCst));
}

#[tokio::test]
async fn an_unreachable_primary_is_a_502_and_a_slow_one_a_504() {
    let shadow = fixed(200, &[], b"x").await;
    let proxy = ProxySetup::new(format!("http://{}", closed_port().await), shadow.url())
        .start()
        .await;
    let response = client()
        .get(format!("http://{}/a?token=hunter2", proxy.proxy_addr))
        .header("x-request-id", "rid-502")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["upstream"], "legacy");
    assert_eq!(body["request_id"], "rid-502");
    assert!(
        body["error"].as_str().unwrap().starts_with("upstream unreachable"),
        "{body}"
    );
    assert!(
        !body.to_string().contains("hunter2"),
        "the query (and its secrets) stays out of errors: {body}"
    );
    let counted = wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[("outcome", "primary_error")], 1.0).await;
    assert_eq!(counted, 1.0);

    let slow = backend(|_| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        respond(200, &[], Bytes::new())
    })
    .await;
    let mut setup = ProxySetup::new(slow.url(), shadow.url());
    setup.primary_timeout = "300ms";
    let proxy = setup.start().await;
    let response = client()
        .get(format!("http://{}/a", proxy.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["upstream"], "legacy");
    assert_eq!(body["error"], "upstream timed out: no answer within 300ms");
    assert_eq!(
        wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[("outcome", "primary_error")], 1.0).await,
        1.0
    );
}

#[tokio::test]
async fn bodies_over_max_body_are_served_whole_and_skipped() {
    let big = Bytes::from(vec![b'x'; 4096]);
    let big_answer = big.clone();
    let primary = backend(move |_| {
        let body = big_answer.clone();
        async move { respond(200, &[], body) }
    })
    .await;
    let shadow = fixed(200, &[], b"small").await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.mirror = "max_body = \"1KiB\"";
    let proxy = setup.start().await;

    let response = client()
        .get(format!("http://{}/big", proxy.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.bytes().await.unwrap(), big);
    let skipped = wait_for_metric(
        proxy.admin_addr,
        MIRROR_DROPPED_TOTAL,
        &[("reason", "body_too_large")],
        1.0,
    )
    .await;
    assert_eq!(skipped, 1.0);

    // A request body over the limit still reaches the primary whole, and the shadow not at all.
    let request_body = Bytes::from((0..5000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let response = client()
        .get(format!("http://{}/upload", proxy.proxy_addr))
        .body(request_body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let skipped = wait_for_metric(
        proxy.admin_addr,
        MIRROR_DROPPED_TOTAL,
        &[("reason", "body_too_large")],
        2.0,
    )
    .await;
    assert_eq!(skipped, 2.0);
    let seen = primary.requests();
    assert_eq!(seen.last().unwrap().body, request_body);
    assert!(shadow.requests().iter().all(|r| r.path_and_query != "/upload"));
}

#[tokio::test]
async fn a_full_queue_drops_the_newest_and_counts_it() {
    let primary = fixed(200, &[], b"ok").await;
    let shadow = backend(|_| async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        respond(200, &[], Bytes::from_static(b"ok"))
    })
    .await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.mirror = "queue = 2";
    let proxy = setup.start().await;
    let client = client();
    let mut handles = Vec::new();
    for _ in 0..10 {
        let client = client.clone();
        let url = format!("http://{}/", proxy.proxy_addr);
        handles.push(tokio::spawn(async move {
            let response = client.get(url).send().await.unwrap();
            (response.status().as_u16(), response.bytes().await.unwrap())
        }));
    }
    for handle in handles {
        assert_eq!(handle.await.unwrap(), (200, Bytes::from_static(b"ok")));
    }
    // Every client was served while at most two exchanges were in flight.
    let text = metrics_text(proxy.admin_addr).await;
    assert_eq!(metric(&text, MIRROR_QUEUE_DEPTH, &[]), 2.0);
    assert_eq!(metric(&text, MIRROR_DROPPED_TOTAL, &[("reason", "queue_full")]), 8.0);
    assert_eq!(shadow.requests().len(), 2);
    let matched = wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[("outcome", "match")], 2.0).await;
    assert_eq!(matched, 2.0);
    let text = metrics_text(proxy.admin_addr).await;
    assert_eq!(metric(&text, MIRROR_QUEUE_DEPTH, &[]), 0.0);
    assert_eq!(
        metric(&text, REQUESTS_TOTAL, &[]),
        10.0,
        "every request has exactly one outcome"
    );
}

#[tokio::test]
async fn routes_decide_what_is_mirrored_and_every_request_is_counted_once() {
    let primary =
        backend(|seen: Seen| async move { respond(200, &[], Bytes::from(format!("primary {}", seen.path_and_query))) })
            .await;
    let shadow = backend(|seen: Seen| async move {
        let body = if seen.path_and_query == "/differ" {
            "shadow".to_string()
        } else {
            format!("primary {}", seen.path_and_query)
        };
        respond(200, &[], Bytes::from(body))
    })
    .await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes = r#"
[[route]]
name = "same"
match = "GET|POST /same"

[[route]]
name = "differ"
match = "GET /differ"

[[route]]
name = "side-effect"
match = "GET /notify/*"
mirror = "off"

[[route]]
name = "never-sampled"
match = "GET /sampled"
sample = 0.0
"#;
    let proxy = setup.start().await;
    let client = client();
    let base = format!("http://{}", proxy.proxy_addr);
    client.get(format!("{base}/same")).send().await.unwrap();
    client.post(format!("{base}/same")).body("write").send().await.unwrap();
    client.get(format!("{base}/differ")).send().await.unwrap();
    client.get(format!("{base}/notify/all")).send().await.unwrap();
    client.get(format!("{base}/sampled")).send().await.unwrap();
    client.get(format!("{base}/unlisted")).send().await.unwrap();
    client.delete(format!("{base}/unlisted")).send().await.unwrap();
    wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[], 7.0).await;
    let text = metrics_text(proxy.admin_addr).await;
    let count = |route: &str, method: &str, outcome: &str| {
        metric(
            &text,
            REQUESTS_TOTAL,
            &[("route", route), ("method", method), ("outcome", outcome)],
        )
    };
    assert_eq!(count("same", "GET", "match"), 1.0);
    assert_eq!(count("same", "POST", "skipped"), 1.0);
    assert_eq!(count("differ", "GET", "diverged"), 1.0);
    assert_eq!(count("side-effect", "GET", "skipped"), 1.0);
    assert_eq!(count("never-sampled", "GET", "skipped"), 1.0);
    assert_eq!(count("unmatched", "GET", "match"), 1.0);
    assert_eq!(count("unmatched", "DELETE", "skipped"), 1.0);
    assert_eq!(metric(&text, REQUESTS_TOTAL, &[]), 7.0);
    assert_eq!(metric(&text, MIRROR_DROPPED_TOTAL, &[("reason", "mirror_off")]), 3.0);
    assert_eq!(metric(&text, MIRROR_DROPPED_TOTAL, &[("reason", "sampled_out")]), 1.0);
    // Labels are route names, never raw paths.
    assert!(!text.contains("/notify/all") && !text.contains("/unlisted"));

    let shadow_saw: Vec<String> = shadow
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path_and_query))
        .collect();
    let mut shadow_saw = shadow_saw;
    shadow_saw.sort();
    assert_eq!(shadow_saw, ["GET /differ", "GET /same", "GET /unlisted"]);
    assert_eq!(primary.requests().len(), 7);
    let latency = metric(
        &text,
        "cutover_upstream_duration_seconds_count",
        &[("backend", "legacy")],
    );
    assert_eq!(latency, 7.0);
    let shadow_latency = metric(
        &text,
        "cutover_upstream_duration_seconds_count",
        &[("backend", "candidate")],
    );
    assert_eq!(shadow_latency, 3.0);
}

#[tokio::test]
async fn sampling_with_a_key_is_sticky_per_key() {
    let primary = fixed(200, &[], b"x").await;
    let shadow = fixed(200, &[], b"x").await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes = r#"
[[route]]
name = "tasks"
match = "GET /tasks"
sample = 0.5
sample_key = "header:x-user-id"
"#;
    let proxy = setup.start().await;
    let client = client();
    for round in 0..3 {
        for user in 0..40 {
            client
                .get(format!("http://{}/tasks", proxy.proxy_addr))
                .header("x-user-id", format!("user-{user}"))
                .header("x-round", round.to_string())
                .send()
                .await
                .unwrap();
        }
    }
    wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[], 120.0).await;
    let seen = shadow.requests();
    let mut per_user = std::collections::HashMap::new();
    for request in &seen {
        *per_user.entry(request.headers["x-user-id"].clone()).or_insert(0) += 1;
    }
    assert!(
        per_user.values().all(|&n| n == 3),
        "a user is always in or always out: {per_user:?}"
    );
    assert!(
        (8..=32).contains(&per_user.len()),
        "about half of 40 users sampled in: {}",
        per_user.len()
    );
    let text = metrics_text(proxy.admin_addr).await;
    let sampled_out = metric(&text, MIRROR_DROPPED_TOTAL, &[("reason", "sampled_out")]);
    assert_eq!(sampled_out as usize, 120 - seen.len());
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served() {
    let primary = fixed(200, &[("content-type", "text/plain")], b"over h2").await;
    let shadow = fixed(200, &[("content-type", "text/plain")], b"over h2").await;
    let proxy = ProxySetup::new(primary.url(), shadow.url()).start().await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2.get(format!("http://{}/h2", proxy.proxy_addr)).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), "over h2");
    let matched = wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[("outcome", "match")], 1.0).await;
    assert_eq!(matched, 1.0);
}

#[tokio::test]
async fn admin_endpoints_live_only_on_the_admin_port() {
    let primary = fixed(200, &[], b"the primary's own /metrics").await;
    let shadow = fixed(200, &[], b"x").await;
    let proxy = ProxySetup::new(primary.url(), shadow.url()).start().await;
    let client = client();
    let on_proxy = client
        .get(format!("http://{}/metrics", proxy.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(on_proxy.bytes().await.unwrap(), "the primary's own /metrics");
    let health = client
        .get(format!("http://{}/healthz", proxy.admin_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let metrics = metrics_text(proxy.admin_addr).await;
    assert!(metrics.contains("cutover_build_info{version="));
    let missing = client
        .get(format!("http://{}/nothing", proxy.admin_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_then_stops() {
    let primary = backend(|_| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        respond(200, &[], Bytes::from_static(b"finished"))
    })
    .await;
    let shadow = fixed(200, &[], b"finished").await;
    let proxy = ProxySetup::new(primary.url(), shadow.url()).start().await;
    let addr = proxy.proxy_addr;
    let in_flight = tokio::spawn(async move {
        let response = client().get(format!("http://{addr}/slow")).send().await.unwrap();
        (response.status().as_u16(), response.bytes().await.unwrap())
    });
    // Let the request reach the primary, then ask for shutdown while it is in flight.
    for _ in 0..100 {
        if !primary.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let metrics = proxy.metrics.clone();
    let report = proxy.shutdown().await;
    assert_eq!(in_flight.await.unwrap(), (200, Bytes::from_static(b"finished")));
    assert!(!report.connections_cut, "{report:?}");
    assert_eq!(report.exchanges_unrecorded, 0);
    // The drained exchange was compared and counted before the process let go.
    assert!(metrics.encode().contains("outcome=\"match\",route=\"unmatched\"} 1"));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn an_upstream_base_path_prefixes_every_request() {
    let primary = fixed(200, &[], b"x").await;
    let shadow = fixed(200, &[], b"x").await;
    let proxy = ProxySetup::new(format!("{}/legacy/", primary.url()), format!("{}/v2", shadow.url()))
        .start()
        .await;
    client()
        .get(format!("http://{}/api/x?q=1", proxy.proxy_addr))
        .send()
        .await
        .unwrap();
    wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[("outcome", "match")], 1.0).await;
    assert_eq!(primary.requests()[0].path_and_query, "/legacy/api/x?q=1");
    assert_eq!(shadow.requests()[0].path_and_query, "/v2/api/x?q=1");
}

#[tokio::test]
async fn requests_reach_upstreams_as_sent_and_url_credentials_authorize_only_requests_without_their_own() {
    let primary = fixed(200, &[], b"x").await;
    let shadow = fixed(200, &[], b"x").await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    // Credentials come from the environment, percent-encoded as in any URL.
    setup.env = vec![("CUTOVER_PRIMARY_URL", format!("http://svc:p%40ss@{}/", primary.addr))];
    let proxy = setup.start().await;

    let plain = raw(
        proxy.proxy_addr,
        b"GET /api/x/../y?q=%2F HTTP/1.1\r\nhost: tasks.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(plain.starts_with("HTTP/1.1 200"), "{plain}");
    let own = raw(
        proxy.proxy_addr,
        b"GET /api/z HTTP/1.1\r\nhost: tasks.example\r\nauthorization: Bearer client-token\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(own.starts_with("HTTP/1.1 200"), "{own}");
    wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[("outcome", "match")], 2.0).await;

    let (first, second) = (&primary.requests()[0], &primary.requests()[1]);
    assert_eq!(
        first.path_and_query, "/api/x/../y?q=%2F",
        "the target is not normalized"
    );
    assert!(first.headers.get("accept").is_none(), "no Accept is added");
    // base64 of "svc:p@ss"
    assert_eq!(first.headers["authorization"], "Basic c3ZjOnBAc3M=");
    assert_eq!(
        first.headers["host"],
        primary.addr.to_string(),
        "credentials never reach Host"
    );
    assert_eq!(second.headers["authorization"], "Bearer client-token");
    for seen in shadow.requests() {
        assert!(seen.headers.get("accept").is_none());
        assert_ne!(
            seen.headers.get("authorization").map(|v| v.to_str().unwrap()),
            Some("Basic c3ZjOnBAc3M="),
            "one upstream's credentials never go to the other"
        );
    }
}
