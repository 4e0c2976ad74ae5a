//! The comparison engine behind the real proxy: route rules, learned noise,
//! rechecks and decoding, observed through the counted outcomes.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use cutover::metrics::{DIVERGENCES_TOTAL, REQUESTS_TOTAL};

fn json_headers() -> Vec<(String, String)> {
    vec![("content-type".to_string(), "application/json".to_string())]
}

#[tokio::test]
async fn route_rules_set_aside_known_differences_and_keep_real_ones() {
    let primary = backend(|seen: Seen| async move {
        let body = if seen.path_and_query == "/tasks" {
            r#"{"source":"notion","tasks":[{"id":"a","due":"2026-01-20T09:00:00.000+11:00"},{"id":"b"}]}"#
        } else {
            r#"{"source":"notion","tasks":[{"id":"a","title":"x"}]}"#
        };
        respond(200, &json_headers(), Bytes::from_static(body.as_bytes()))
    })
    .await;
    let shadow = backend(|seen: Seen| async move {
        let body = if seen.path_and_query == "/tasks" {
            r#"{"source":"postgres","tasks":[{"id":"b"},{"id":"a","due":"2026-01-19T22:00:00Z"}]}"#
        } else {
            r#"{"source":"postgres","tasks":[{"id":"a","title":"y"}]}"#
        };
        respond(200, &json_headers(), Bytes::from_static(body.as_bytes()))
    })
    .await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes = r#"
[[route]]
name = "tasks"
match = "GET /tasks"
[route.compare]
ignore = ["/source"]
unordered = { "/tasks" = "id" }
time_tolerance = { "/tasks/*/due" = "1s" }
severity = { "/tasks" = "low" }

[[route]]
name = "broken"
match = "GET /broken"
[route.compare]
ignore = ["/source"]
"#;
    let proxy = setup.start().await;
    let client = client();
    client
        .get(format!("http://{}/tasks", proxy.proxy_addr))
        .send()
        .await
        .unwrap();
    client
        .get(format!("http://{}/broken", proxy.proxy_addr))
        .send()
        .await
        .unwrap();
    wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[], 2.0).await;
    let text = metrics_text(proxy.admin_addr).await;
    // The reordering is still reported, at low severity (order_only); everything
    // else in /tasks is equal under the rules. /broken has a real value change.
    assert_eq!(
        metric(&text, REQUESTS_TOTAL, &[("route", "tasks"), ("outcome", "diverged")]),
        1.0
    );
    assert_eq!(
        metric(&text, DIVERGENCES_TOTAL, &[("route", "tasks"), ("severity", "low")]),
        1.0
    );
    assert_eq!(
        metric(&text, REQUESTS_TOTAL, &[("route", "broken"), ("outcome", "diverged")]),
        1.0
    );
    assert_eq!(
        metric(&text, DIVERGENCES_TOTAL, &[("route", "broken"), ("severity", "medium")]),
        1.0
    );
}

#[tokio::test]
async fn a_field_volatile_on_the_primary_is_learned_as_noise_and_a_real_bug_is_not() {
    let counter = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&counter);
    let primary = backend(move |_| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            let body = format!(r#"{{"generatedAt":"t{n}","title":"Buy milk","count":1}}"#);
            respond(200, &json_headers(), Bytes::from(body))
        }
    })
    .await;
    let shadow = fixed(
        200,
        &[("content-type", "application/json")],
        br#"{"generatedAt":"s","title":"Buy milk","count":2}"#,
    )
    .await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes = "[noise]\nmin_observations = 2\n";
    let proxy = setup.start().await;
    let client = client();
    let mut outcomes = Vec::new();
    for round in 1..=4 {
        client
            .get(format!("http://{}/summary", proxy.proxy_addr))
            .send()
            .await
            .unwrap();
        wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[], f64::from(round)).await;
        let text = metrics_text(proxy.admin_addr).await;
        outcomes.push(metric(&text, REQUESTS_TOTAL, &[("outcome", "diverged")]));
    }
    // Every answer diverges: /count is a real difference and never becomes noise,
    // even though /generatedAt does after two observations.
    assert_eq!(outcomes, [1.0, 2.0, 3.0, 4.0]);
}

#[tokio::test]
async fn noise_alone_stops_counting_as_divergence_once_learned() {
    let counter = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&counter);
    let primary = backend(move |_| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            respond(
                200,
                &json_headers(),
                Bytes::from(format!(r#"{{"nonce":{n},"title":"a"}}"#)),
            )
        }
    })
    .await;
    let shadow = fixed(
        200,
        &[("content-type", "application/json")],
        br#"{"nonce":-1,"title":"a"}"#,
    )
    .await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes = "[noise]\nmin_observations = 2\n";
    let proxy = setup.start().await;
    let client = client();
    for round in 1..=4 {
        client
            .get(format!("http://{}/n", proxy.proxy_addr))
            .send()
            .await
            .unwrap();
        wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[], f64::from(round)).await;
    }
    let text = metrics_text(proxy.admin_addr).await;
    // Rounds 1-3 diverge while /nonce is being learned (seen changing after rounds 2 and 3); round 4 matches.
    assert_eq!(metric(&text, REQUESTS_TOTAL, &[("outcome", "diverged")]), 3.0);
    assert_eq!(metric(&text, REQUESTS_TOTAL, &[("outcome", "match")]), 1.0);
}

#[tokio::test]
async fn a_divergence_that_goes_away_on_recheck_is_transient() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let primary = fixed(200, &[("content-type", "application/json")], br#"{"state":"ready"}"#).await;
    let shadow = backend(move |_| {
        let first = c.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            let body: &'static [u8] = if first {
                br#"{"state":"pending"}"#
            } else {
                br#"{"state":"ready"}"#
            };
            respond(200, &json_headers(), Bytes::from_static(body))
        }
    })
    .await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes = "[[route]]\nname = \"state\"\nmatch = \"GET /state\"\n[route.compare]\nrecheck = \"50ms\"\n";
    let proxy = setup.start().await;
    client()
        .get(format!("http://{}/state", proxy.proxy_addr))
        .send()
        .await
        .unwrap();
    let transient = wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[("outcome", "transient")], 1.0).await;
    assert_eq!(transient, 1.0);
    assert_eq!(primary.requests().len(), 2, "the recheck asked the primary again");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let text = metrics_text(proxy.admin_addr).await;
    assert_eq!(metric(&text, REQUESTS_TOTAL, &[]), 1.0, "counted once, as transient");
}

/// Answers the same byte for byte are judged where they are joined, not by
/// the comparison threads; the judgement is the same. A compared header
/// apart is still a divergence, still asked again under `recheck`, and
/// becomes transient once the header agrees.
#[tokio::test]
async fn identical_bodies_are_judged_by_the_same_rules_as_the_rest() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let body: &'static [u8] = br#"{"state":"ready"}"#;
    let primary = fixed(200, &[("content-type", "application/json"), ("x-version", "1")], body).await;
    let shadow = backend(move |seen: Seen| {
        let version = if seen.path_and_query == "/state" && c.fetch_add(1, Ordering::SeqCst) == 0 {
            "2"
        } else {
            "1"
        };
        async move {
            let headers = vec![
                ("content-type".to_string(), "application/json".to_string()),
                ("x-version".to_string(), version.to_string()),
            ];
            respond(200, &headers, Bytes::from_static(body))
        }
    })
    .await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes = r#"
[[route]]
name = "state"
match = "GET /state"
[route.compare]
headers = ["x-version"]
recheck = "50ms"

[[route]]
name = "same"
match = "GET /same"
[route.compare]
headers = ["x-version"]
"#;
    let proxy = setup.start().await;
    let client = client();
    for path in ["/state", "/same", "/same"] {
        let response = client
            .get(format!("http://{}{path}", proxy.proxy_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(response.bytes().await.unwrap(), Bytes::from_static(body));
    }
    wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[], 3.0).await;
    let transient = wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[("outcome", "transient")], 1.0).await;
    assert_eq!(transient, 1.0, "the header apart diverged and was asked again");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let text = metrics_text(proxy.admin_addr).await;
    let count = |route: &str, outcome: &str| metric(&text, REQUESTS_TOTAL, &[("route", route), ("outcome", outcome)]);
    assert_eq!(count("same", "match"), 2.0);
    assert_eq!(count("state", "transient"), 1.0);
    assert_eq!(metric(&text, REQUESTS_TOTAL, &[]), 3.0);
}

#[tokio::test]
async fn compressed_and_plain_answers_with_the_same_content_match() {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(br#"{"a":[1,2,3]}"#).unwrap();
    let gzipped: &'static [u8] = Box::leak(encoder.finish().unwrap().into_boxed_slice());
    let primary = fixed(
        200,
        &[("content-type", "application/json"), ("content-encoding", "gzip")],
        gzipped,
    )
    .await;
    let shadow = fixed(
        200,
        &[("content-type", "application/json; charset=utf-8")],
        br#"{"a":[1,2,3]}"#,
    )
    .await;
    let proxy = ProxySetup::new(primary.url(), shadow.url()).start().await;
    let response = client()
        .get(format!("http://{}/a", proxy.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        gzipped,
        "the client still gets the primary's bytes"
    );
    assert_eq!(
        wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[("outcome", "match")], 1.0).await,
        1.0
    );
}

#[tokio::test]
async fn active_learning_asks_the_shadow_twice_and_learns_its_volatile_fields() {
    let primary = fixed(
        200,
        &[("content-type", "application/json")],
        br#"{"etag":"p","title":"a"}"#,
    )
    .await;
    let counter = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&counter);
    let shadow = backend(move |_| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            respond(
                200,
                &json_headers(),
                Bytes::from(format!(r#"{{"etag":"s{n}","title":"a"}}"#)),
            )
        }
    })
    .await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes = "[noise]\nactive = true\nactive_sample = 1.0\nmin_observations = 2\n";
    let proxy = setup.start().await;
    let client = client();
    for round in 1..=3 {
        client
            .get(format!("http://{}/item", proxy.proxy_addr))
            .send()
            .await
            .unwrap();
        wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[], f64::from(round)).await;
    }
    // Every mirrored read went to the shadow twice; the primary saw each once.
    assert_eq!(shadow.requests().len(), 6);
    assert_eq!(primary.requests().len(), 3);
    let text = metrics_text(proxy.admin_addr).await;
    // Rounds 1 and 2 diverge on /etag while it is learned; round 3 matches.
    assert_eq!(metric(&text, REQUESTS_TOTAL, &[("outcome", "diverged")]), 2.0);
    assert_eq!(metric(&text, REQUESTS_TOTAL, &[("outcome", "match")]), 1.0);
}

#[tokio::test]
async fn an_unmapped_id_is_counted_by_kind_and_is_not_a_divergence() {
    let primary = fixed(
        200,
        &[("content-type", "application/json")],
        br#"{"owner":"u-1","title":"a"}"#,
    )
    .await;
    let shadow = fixed(
        200,
        &[("content-type", "application/json")],
        br#"{"owner":"u-9","title":"a"}"#,
    )
    .await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes =
        "[[route]]\nname = \"item\"\nmatch = \"GET /item\"\n[route.compare]\nids = { \"/owner\" = \"users\" }\n";
    let proxy = setup.start().await;
    client()
        .get(format!("http://{}/item", proxy.proxy_addr))
        .send()
        .await
        .unwrap();
    let skipped = wait_for_metric(
        proxy.admin_addr,
        "cutover_mirror_dropped_total",
        &[("reason", "unmapped_id")],
        1.0,
    )
    .await;
    assert_eq!(skipped, 1.0);
    let text = metrics_text(proxy.admin_addr).await;
    assert_eq!(metric(&text, "cutover_idmap_unmapped_total", &[("kind", "users")]), 1.0);
    assert_eq!(metric(&text, REQUESTS_TOTAL, &[("outcome", "diverged")]), 0.0);
    assert_eq!(metric(&text, "cutover_mode", &[("mode", "shadow")]), 1.0);
}
