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
