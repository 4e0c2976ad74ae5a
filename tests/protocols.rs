//! Protocols that are not one request and one finished answer, with real
//! clients over sockets: a WebSocket echo through the proxy (tunnelled to
//! the primary, never mirrored, counted as `skipped` `upgrade`), an HTTP/2
//! exchange whose answer ends in trailers as gRPC's do, and server-sent
//! events that reach the client one by one while the stream is open.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use cutover::metrics::{MIRROR_DROPPED_TOTAL, REQUESTS_TOTAL};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket server that echoes every text message, prefixed; counts
/// the connections it took.
async fn websocket_echo() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if let Message::Text(text) = message {
                        let echoed = Message::text(format!("echo: {text}"));
                        if socket.send(echoed).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_websocket_is_tunnelled_to_the_primary_and_never_mirrored() {
    let (primary, accepted) = websocket_echo().await;
    let shadow = fixed(200, &[], b"shadow").await;
    let running = ProxySetup::new(format!("http://{primary}"), shadow.url()).start().await;

    let url = format!("ws://{}/socket?room=1", running.proxy_addr);
    let (mut socket, answer) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(answer.status(), 101);
    for word in ["one", "two", "three"] {
        socket.send(Message::text(word)).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(format!("echo: {word}")));
    }
    socket.close(None).await.unwrap();

    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection reached the primary");
    let admin = running.admin_addr;
    let skipped = wait_for_metric(admin, MIRROR_DROPPED_TOTAL, &[("reason", "upgrade")], 1.0).await;
    assert_eq!(skipped, 1.0);
    let text = metrics_text(admin).await;
    assert_eq!(metric(&text, REQUESTS_TOTAL, &[("outcome", "skipped")]), 1.0, "{text}");
    assert!(shadow.requests().is_empty(), "the shadow never sees an upgrade");
}

#[tokio::test]
async fn an_upgrade_the_primary_refuses_comes_back_as_the_primary_answered() {
    let primary = fixed(403, &[("content-type", "text/plain")], b"no sockets here").await;
    let shadow = fixed(200, &[], b"shadow").await;
    let running = ProxySetup::new(primary.url(), shadow.url()).start().await;
    let url = format!("ws://{}/socket", running.proxy_addr);
    let refused = tokio_tungstenite::connect_async(url).await.unwrap_err();
    let tokio_tungstenite::tungstenite::Error::Http(answer) = refused else {
        panic!("expected the primary's HTTP answer, got {refused:?}");
    };
    assert_eq!(answer.status(), 403);
    assert_eq!(answer.body().as_deref(), Some(&b"no sockets here"[..]));
    let seen = primary.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers["upgrade"], "websocket",
        "the primary was asked to upgrade"
    );
    assert!(shadow.requests().is_empty());
}

/// A backend answering like a gRPC server: a chunked body, then trailers
/// it announced in `Trailer`; it records whether the request said `TE: trailers`.
async fn trailers_backend() -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<HeaderMap>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let log = Arc::clone(&log);
                async move {
                    log.lock().unwrap().push(request.headers().clone());
                    let _ = request.into_body().collect().await;
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", HeaderValue::from_static("0"));
                    trailers.insert("grpc-message", HeaderValue::from_static("done"));
                    let frames = vec![
                        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    let body = StreamBody::new(futures_util::stream::iter(frames));
                    let answer = Response::builder()
                        .header("content-type", "application/grpc")
                        .header("trailer", "grpc-status, grpc-message")
                        .body(body)
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(answer)
                }
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn an_http2_call_keeps_te_trailers_and_gets_the_primarys_trailers() {
    let (primary, seen) = trailers_backend().await;
    let shadow = fixed(200, &[], b"").await;
    let running = ProxySetup::new(format!("http://{primary}"), shadow.url()).start().await;

    let stream = tokio::net::TcpStream::connect(running.proxy_addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let call = Request::post(format!("http://{}/pkg.Service/Method", running.proxy_addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(Bytes::from_static(b"\0\0\0\0\x02yo")))
        .unwrap();
    let answer = sender.send_request(call).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.version(), http::Version::HTTP_2);
    let collected = answer.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("the answer ends in trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "done");
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x02hi");

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["te"], "trailers", "the primary is told trailers are kept");
}

/// Server-sent events: one event at once, the next only when the test says
/// so, then the end; `gate` opens the second event.
async fn event_stream(gate: Arc<tokio::sync::Notify>) -> Backend {
    backend(move |_seen| {
        let gate = Arc::clone(&gate);
        async move {
            let events = futures_util::stream::unfold(0, move |step| {
                let gate = Arc::clone(&gate);
                async move {
                    match step {
                        0 => Some((Ok(Frame::data(Bytes::from_static(b"data: first\n\n"))), 1)),
                        1 => {
                            gate.notified().await;
                            Some((Ok(Frame::data(Bytes::from_static(b"data: second\n\n"))), 2))
                        }
                        _ => None,
                    }
                }
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(StreamBody::new(events).boxed_unsync())
                .unwrap()
        }
    })
    .await
}

#[tokio::test]
async fn server_sent_events_stream_through_one_by_one_past_the_upstream_timeout() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let primary = event_stream(Arc::clone(&gate)).await;
    let shadow = fixed(200, &[("content-type", "text/event-stream")], b"data: shadow\n\n").await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.primary_timeout = "300ms";
    let running = setup.start().await;

    // An EventSource says what it wants: it is not mirrored at all.
    let mut answer = client()
        .get(format!("http://{}/events", running.proxy_addr))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "text/event-stream");
    let first = answer.chunk().await.unwrap().unwrap();
    assert_eq!(
        &first[..],
        b"data: first\n\n",
        "the first event arrives while the stream is open"
    );
    // A pause longer than the primary's timeout is an event stream's nature.
    tokio::time::sleep(Duration::from_millis(700)).await;
    gate.notify_one();
    let second = answer.chunk().await.unwrap().unwrap();
    assert_eq!(&second[..], b"data: second\n\n");
    assert!(
        answer.chunk().await.unwrap().is_none(),
        "the stream ends when the primary ends it"
    );
    let admin = running.admin_addr;
    assert_eq!(
        wait_for_metric(admin, MIRROR_DROPPED_TOTAL, &[("reason", "streaming")], 1.0).await,
        1.0
    );
    assert!(shadow.requests().is_empty(), "an EventSource is never mirrored");

    // Without the Accept, the read is mirrored; once the primary answers
    // with an event stream, the exchange is skipped at its head, not held
    // open for the stream's life.
    let mut answer = client()
        .get(format!("http://{}/events", running.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(&answer.chunk().await.unwrap().unwrap()[..], b"data: first\n\n");
    assert_eq!(
        wait_for_metric(admin, MIRROR_DROPPED_TOTAL, &[("reason", "streaming")], 2.0).await,
        2.0,
        "recorded while the stream is still open"
    );
    gate.notify_one();
    assert_eq!(&answer.chunk().await.unwrap().unwrap()[..], b"data: second\n\n");
    let text = metrics_text(admin).await;
    assert_eq!(metric(&text, REQUESTS_TOTAL, &[("outcome", "skipped")]), 2.0, "{text}");
}
