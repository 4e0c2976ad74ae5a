//! The real binary: SIGTERM finishes in-flight requests and exits 0.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let primary = backend(|_| async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        respond(200, &[], Bytes::from_static(b"done"))
    })
    .await;
    let shadow = fixed(200, &[], b"done").await;
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(&ProxySetup::new(primary.url(), shadow.url()), dir.path(), "info");
    let proxy = serve.proxy.clone();
    let in_flight = tokio::spawn(async move {
        let response = client().get(format!("http://{proxy}/slow")).send().await.unwrap();
        (response.status().as_u16(), response.bytes().await.unwrap())
    });
    for _ in 0..200 {
        if !primary.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stop = tokio::task::spawn_blocking(move || serve.terminate());
    assert_eq!(in_flight.await.unwrap(), (200, Bytes::from_static(b"done")));
    let (code, rest) = stop.await.unwrap();
    assert_eq!(code, Some(0));
    assert!(rest.iter().any(|line| line.contains("stopped cleanly")), "{rest:?}");
}
