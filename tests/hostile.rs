//! Hostile HTTP over raw sockets: oversized heads, request-smuggling
//! shapes, absolute-form URIs aimed elsewhere, slow bodies. Each is refused
//! (or cut) before either upstream sees anything it should not, and the
//! proxy only ever connects to the configured upstreams.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or_default()
}

#[tokio::test]
async fn oversized_heads_get_431_and_reach_no_upstream() {
    let primary = fixed(200, &[], b"ok").await;
    let shadow = fixed(200, &[], b"ok").await;
    let proxy = ProxySetup::new(primary.url(), shadow.url()).start().await;
    let huge = "a".repeat(512 * 1024);
    let answer = raw(
        proxy.proxy_addr,
        format!("GET /x HTTP/1.1\r\nHost: h\r\nX-Big: {huge}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 431"),
        "{}",
        status_line(&answer)
    );
    assert!(primary.requests().is_empty() && shadow.requests().is_empty());
    proxy.shutdown().await;
}

#[tokio::test]
async fn smuggling_shapes_are_refused_before_either_upstream_sees_them() {
    let primary = fixed(200, &[], b"ok").await;
    let shadow = fixed(200, &[], b"ok").await;
    let proxy = ProxySetup::new(primary.url(), shadow.url()).start().await;
    let cases: [&[u8]; 2] = [
        // Two different Content-Lengths.
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nContent-Length: 10\r\n\r\nabcd",
        // Obsolete line folding.
        b"GET /x HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n b\r\n\r\n",
    ];
    for case in cases {
        let answer = raw(proxy.proxy_addr, case).await;
        assert!(
            status_line(&answer).starts_with("HTTP/1.1 400"),
            "{:?} → {}",
            String::from_utf8_lossy(case),
            status_line(&answer)
        );
    }
    let seen: Vec<String> = primary.requests().iter().map(|s| s.path_and_query.clone()).collect();
    assert!(seen.is_empty(), "the primary saw {seen:?}");
    assert!(shadow.requests().is_empty());
    // Content-Length with Transfer-Encoding: the listener frames by
    // Transfer-Encoding (RFC 9112 §6.3) and drops Content-Length, and every
    // request is framed anew upstream, so no upstream ever sees both.
    raw(
        proxy.proxy_addr,
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    for seen in primary.requests() {
        assert!(
            !(seen.headers.contains_key("content-length") && seen.headers.contains_key("transfer-encoding")),
            "{:?}",
            seen.headers
        );
        assert!(seen.body.is_empty());
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn no_host_header_or_absolute_uri_makes_the_proxy_call_anything_else() {
    let primary = fixed(200, &[], b"primary").await;
    let shadow = fixed(200, &[], b"shadow").await;
    let elsewhere = fixed(200, &[], b"elsewhere").await;
    let proxy = ProxySetup::new(primary.url(), shadow.url()).start().await;
    let target = elsewhere.addr;
    let requests = [
        format!("GET http://{target}/steal HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"),
        format!("GET /steal HTTP/1.1\r\nHost: {target}\r\nX-Forwarded-Host: {target}\r\nConnection: close\r\n\r\n"),
    ];
    for request in requests {
        let answer = raw(proxy.proxy_addr, request.as_bytes()).await;
        assert!(answer.ends_with("primary"), "{answer}");
    }
    // An absolute target naming another host than Host is refused.
    let answer = raw(
        proxy.proxy_addr,
        format!("GET http://{target}/steal HTTP/1.1\r\nHost: legit.example\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(status_line(&answer).starts_with("HTTP/1.1 400"), "{answer}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        elsewhere.requests().is_empty(),
        "the proxy called a host it was not configured for"
    );
    assert_eq!(primary.requests().len(), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_body_that_trickles_is_cut_and_the_primary_never_gets_half_of_it() {
    let primary = fixed(200, &[], b"ok").await;
    let shadow = fixed(200, &[], b"ok").await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes = "[[route]]\nname = \"w\"\nmatch = \"POST /w\"\nmirror = \"dual-write\"\n";
    let toml = setup
        .toml()
        .replace("[listen]\n", "[listen]\nbody_read_timeout = \"1s\"\n");
    let config = cutover::config::Config::parse(&toml, "test.toml", &|_| None).unwrap();
    let proxy = cutover::app::start(config).await.unwrap();
    let mut stream = tokio::net::TcpStream::connect(proxy.proxy_addr).await.unwrap();
    stream
        .write_all(b"POST /w HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nfirst bytes")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(status_line(&answer).starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut after the body timeout, not later"
    );
    assert!(
        primary.requests().is_empty(),
        "a half-sent write never reaches the primary"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn invalid_utf8_in_paths_and_queries_is_refused_raw_and_passed_through_percent_encoded() {
    let primary = fixed(200, &[("content-type", "application/json")], br#"{"a":1}"#).await;
    let shadow = fixed(200, &[("content-type", "application/json")], br#"{"a":1}"#).await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes = r#"
[[route]]
name = "task"
match = "GET /api/task/{id}"
"#;
    let proxy = setup.start().await;
    // Raw bytes that are not UTF-8 (nor ASCII) are not a valid request target.
    let answer = raw(
        proxy.proxy_addr,
        b"GET /api/task/caf\xe9?q=\xff\xfe HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    .await;
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 400"),
        "{}",
        status_line(&answer)
    );
    assert!(primary.requests().is_empty() && shadow.requests().is_empty());

    // Percent-encoded bytes that decode to invalid UTF-8 are a valid target:
    // both sides get it exactly as sent, and it is matched and compared.
    let target = "/api/task/caf%E9%FF?q=%ff%fe&name=%C3%28";
    let answer = raw(
        proxy.proxy_addr,
        format!("GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        status_line(&answer)
    );
    assert!(answer.ends_with(r#"{"a":1}"#), "{answer}");
    let outcome = wait_for_metric(
        proxy.admin_addr,
        cutover::metrics::REQUESTS_TOTAL,
        &[("route", "task"), ("outcome", "match")],
        1.0,
    )
    .await;
    assert_eq!(outcome, 1.0);
    assert_eq!(primary.requests()[0].path_and_query, target);
    assert_eq!(shadow.requests()[0].path_and_query, target);
    proxy.shutdown().await;
}

#[tokio::test]
async fn marker_headers_sent_by_a_client_reach_neither_side() {
    let primary = fixed(200, &[], b"ok").await;
    let shadow = fixed(200, &[], b"ok").await;
    let proxy = ProxySetup::new(primary.url(), shadow.url()).start().await;
    let answer = raw(
        proxy.proxy_addr,
        b"GET /x HTTP/1.1\r\nHost: h\r\nX-Cutover-Shadow: 1\r\nx-cutover-replay: 1\r\nX-CUTOVER-SWEEP: 1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status_line(&answer).starts_with("HTTP/1.1 200"), "{answer}");
    eventually("the shadow got its copy", || async { shadow.requests().len() == 1 }).await;
    let to_primary = &primary.requests()[0].headers;
    for marker in ["x-cutover-shadow", "x-cutover-replay", "x-cutover-sweep"] {
        assert!(
            to_primary.get(marker).is_none(),
            "the primary got the client's {marker}"
        );
    }
    let to_shadow = &shadow.requests()[0].headers;
    assert_eq!(
        to_shadow["x-cutover-shadow"], "1",
        "the shadow's marker is cutover's own"
    );
    assert!(to_shadow.get("x-cutover-replay").is_none() && to_shadow.get("x-cutover-sweep").is_none());
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_route_with_mirroring_off_cannot_be_reached_on_the_shadow_through_path_variants() {
    let primary = fixed(200, &[("content-type", "application/json")], b"{}").await;
    let shadow = fixed(200, &[("content-type", "application/json")], b"{}").await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes = r#"
[[route]]
name = "charge"
match = "POST /q/charge"
mirror = "off"

[[route]]
name = "rest"
match = "* /**"
mirror = "dual-write"
"#;
    let proxy = setup.start().await;
    let variants = [
        "/q/charge",
        "/q/charge/",
        "//q/charge",
        "/q/./charge",
        "/q/%63harge",
        "/q/x/../charge",
    ];
    for variant in variants {
        let request =
            format!("POST {variant} HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
        let answer = raw(proxy.proxy_addr, request.as_bytes()).await;
        assert!(status_line(&answer).starts_with("HTTP/1.1 200"), "{variant}: {answer}");
    }
    let sent: Vec<String> = primary
        .requests()
        .iter()
        .map(|seen| seen.path_and_query.clone())
        .collect();
    assert_eq!(sent, variants, "the primary gets each path exactly as sent");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mirrored: Vec<String> = shadow
        .requests()
        .iter()
        .map(|seen| seen.path_and_query.clone())
        .collect();
    assert!(mirrored.is_empty(), "these reached the shadow: {mirrored:?}");
    // Case counts unless the config says it does not: /Q/charge is another path.
    raw(
        proxy.proxy_addr,
        b"POST /Q/charge HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .await;
    eventually("/Q/charge is dual-written under rest", || async {
        shadow.requests().len() == 1
    })
    .await;
    proxy.shutdown().await;
}

/// A primary that frames its answer with both Content-Length and chunked.
async fn both_framings_primary() -> std::net::SocketAddr {
    raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        .await
}

#[tokio::test]
async fn an_answer_with_content_length_and_chunked_reaches_the_client_whole_and_framed_once() {
    let primary = both_framings_primary().await;
    let shadow = fixed(200, &[], b"hello").await;
    let proxy = ProxySetup::new(format!("http://{primary}"), shadow.url()).start().await;
    let answer = raw(
        proxy.proxy_addr,
        b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status_line(&answer).starts_with("HTTP/1.1 200"), "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("content-length: 3"),
        "the primary's lying length was passed on: {head}"
    );
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body.replace("5\r\n", "").replace("\r\n0\r\n\r\n", "")
    } else {
        body.to_string()
    };
    assert_eq!(body, "hello");
    proxy.shutdown().await;
}

#[tokio::test]
async fn requests_without_one_host_or_with_raw_non_ascii_targets_get_400_and_reach_nobody() {
    let primary = fixed(200, &[], b"ok").await;
    let shadow = fixed(200, &[], b"ok").await;
    let proxy = ProxySetup::new(primary.url(), shadow.url()).start().await;
    let cases: [&[u8]; 3] = [
        b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        b"GET /echo/caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    ];
    for case in cases {
        let answer = raw(proxy.proxy_addr, case).await;
        assert!(
            status_line(&answer).starts_with("HTTP/1.1 400"),
            "{:?} → {answer}",
            String::from_utf8_lossy(case)
        );
    }
    assert!(primary.requests().is_empty() && shadow.requests().is_empty());
    // HTTP/1.0 may leave Host out.
    let answer = raw(proxy.proxy_addr, b"GET /x HTTP/1.0\r\n\r\n").await;
    assert!(status_line(&answer).ends_with(" 200 OK"), "{answer}");
    proxy.shutdown().await;
}
