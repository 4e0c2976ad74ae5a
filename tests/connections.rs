//! Connections that send nothing cannot hold cutover's descriptors: a
//! silent connection is closed after the header timeout, an idle one (an
//! HTTP/2 preface and nothing more, or a kept-alive HTTP/1.1 connection)
//! after the idle timeout, and past `listen.max_connections` a new
//! connection is closed at once while the admin listener still answers.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use cutover::metrics::CONNECTIONS_CLOSED_TOTAL;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start_with(listen: &str) -> (cutover::app::Running, Backend) {
    let primary = fixed(200, &[], b"ok").await;
    let setup = ProxySetup::new(primary.url(), primary.url());
    let toml = setup.toml().replace("[listen]\n", &format!("[listen]\n{listen}\n"));
    let config = cutover::config::Config::parse(&toml, "test.toml", &|_| None).unwrap();
    (cutover::app::start(config).await.unwrap(), primary)
}

/// How long until the peer closes `stream` (reads until EOF), at most `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

async fn closed_count(admin: SocketAddr, listener: &str, reason: &str) -> f64 {
    metric(
        &metrics_text(admin).await,
        CONNECTIONS_CLOSED_TOTAL,
        &[("listener", listener), ("reason", reason)],
    )
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout_on_both_listeners() {
    let (proxy, _primary) = start_with("header_read_timeout = \"500ms\"").await;
    for (addr, listener) in [(proxy.proxy_addr, "proxy"), (proxy.admin_addr, "admin")] {
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let closed = closed_within(&mut silent, Duration::from_secs(5)).await;
        let closed = closed.unwrap_or_else(|| panic!("a silent connection to the {listener} stayed open"));
        assert!(
            closed >= Duration::from_millis(400),
            "{listener}: closed too early: {closed:?}"
        );
        assert_eq!(closed_count(proxy.admin_addr, listener, "silent").await, 1.0);
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_h2_connection_that_opens_no_stream_and_an_idle_keep_alive_are_closed_after_the_idle_timeout() {
    let (proxy, _primary) = start_with("idle_timeout = \"1s\"").await;
    let began = Instant::now();
    let mut preface_only = TcpStream::connect(proxy.proxy_addr).await.unwrap();
    preface_only
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut kept_alive = TcpStream::connect(proxy.proxy_addr).await.unwrap();
    kept_alive
        .write_all(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    for (name, stream) in [
        ("h2 preface only", &mut preface_only),
        ("kept-alive h1", &mut kept_alive),
    ] {
        closed_within(stream, Duration::from_secs(6))
            .await
            .unwrap_or_else(|| panic!("{name}: stayed open"));
        let closed = began.elapsed();
        assert!(
            closed >= Duration::from_millis(800),
            "{name}: closed too early: {closed:?}"
        );
    }
    assert_eq!(closed_count(proxy.admin_addr, "proxy", "idle").await, 2.0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn past_max_connections_new_connections_are_refused_at_once_and_health_checks_answer() {
    let (proxy, _primary) = start_with("max_connections = 3").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(proxy.proxy_addr).await.unwrap();
        // A byte each, so the first-byte timer does not close them.
        stream.write_all(b"G").await.unwrap();
        held.push(stream);
    }
    eventually("three connections are open", || async {
        metric(
            &metrics_text(proxy.admin_addr).await,
            cutover::metrics::CONNECTIONS_OPEN,
            &[("listener", "proxy")],
        ) == 3.0
    })
    .await;
    let mut refused = TcpStream::connect(proxy.proxy_addr).await.unwrap();
    let closed = closed_within(&mut refused, Duration::from_secs(2)).await;
    assert!(closed.is_some(), "the fourth connection was not refused");
    assert_eq!(closed_count(proxy.admin_addr, "proxy", "refused").await, 1.0);
    let health = client()
        .get(format!("http://{}/healthz", proxy.admin_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(
        health.status(),
        200,
        "health checks answer while the proxy port is full"
    );
    // A slot comes back when a client leaves.
    drop(held.pop());
    eventually("a freed slot serves again", || async {
        client()
            .get(format!("http://{}/x", proxy.proxy_addr))
            .send()
            .await
            .is_ok_and(|answer| answer.status() == 200)
    })
    .await;
    proxy.shutdown().await;
}

#[test]
fn the_proxy_cap_leaves_descriptors_for_the_admin_listener_and_the_mirror() {
    let setup = ProxySetup::new("http://127.0.0.1:1".into(), "http://127.0.0.1:2".into());
    let config = cutover::config::Config::parse(&setup.toml(), "test.toml", &|_| None).unwrap();
    assert_eq!(config.listen.max_connections, 10_000, "the default");
    let (proxy, admin) = cutover::app::connection_limits(&config, Some(1024));
    // 1,024 descriptors less the admin's 64, the mirror's 2 × 256, the store's 5 and 256 spare.
    assert_eq!(proxy.max_connections, 1024 - 64 - 512 - 5 - 256);
    assert_eq!(admin.max_connections, cutover::app::ADMIN_MAX_CONNECTIONS);
    let (roomy, _) = cutover::app::connection_limits(&config, Some(1 << 20));
    assert_eq!(roomy.max_connections, 10_000);
}
