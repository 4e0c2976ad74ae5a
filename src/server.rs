//! Listener plumbing shared by the proxy and the admin API: accepts TCP
//! connections, serves HTTP/1.1 (keep-alive) and HTTP/2 with prior
//! knowledge (h2c) on the same port, and shuts down gracefully.
//!
//! Every connection is bounded three ways, so that clients that open
//! connections and send nothing cannot spend the process's descriptors:
//! a cap on open connections (beyond it a new one is closed at once), a
//! first byte due within the header timeout, and an idle timeout (nothing
//! sent either way) after which the connection is shut down gracefully:
//! HTTP/1.1 closes once its response is out, HTTP/2 says GOAWAY and lets
//! open streams finish.
//!
//! Must never: decide anything about a request: that is the handler's job.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::metrics::{ConnectionClose, Metrics};

/// The error type of response bodies: whatever an upstream body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response cutover sends.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// What one listener allows each client connection.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// `proxy` or `admin`: the metrics' listener label.
    pub listener: &'static str,
    /// How long a new connection may stay silent, and a request head take.
    pub header_read_timeout: Duration,
    /// How long a connection may send and receive nothing before it is closed.
    pub idle_timeout: Duration,
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: u32,
}

/// `[listen]`: where the proxy and the admin API listen, and how long a
/// client may take.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// How long shutdown waits for in-flight requests and queued comparisons.
    pub shutdown_grace: Duration,
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// How long a client may pause while sending a request body that is read before forwarding.
    pub body_read_timeout: Duration,
    /// How long a connection may send and receive nothing before it is closed.
    pub idle_timeout: Duration,
    /// Client connections open at once on the proxy port; more are closed at once.
    pub max_connections: u32,
    /// Route `match` paths compare letters regardless of ASCII case.
    pub case_insensitive_paths: bool,
}

/// Serves connections from `listener` until `shutdown` turns true, then
/// stops accepting and waits up to `grace` for open connections to finish
/// their in-flight requests. Returns whether every connection finished.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    limits: ConnectionLimits,
    grace: Duration,
    metrics: Option<Metrics>,
) -> bool
where
    H: Fn(SocketAddr, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    let open = metrics
        .as_ref()
        .map(|metrics| metrics.connections_open(limits.listener));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Refused at once: a client past the cap costs one accept, no task.
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        count_closed(metrics.as_ref(), &limits, ConnectionClose::Refused);
                        debug!(%peer, listener = limits.listener, "connection refused: at max_connections");
                        drop(stream);
                        continue;
                    };
                    // Small answers should not wait for Nagle's algorithm.
                    let _ = stream.set_nodelay(true);
                    let connection = serve_connection(
                        Arc::clone(&builder),
                        stream,
                        peer,
                        handler.clone(),
                        shutdown.clone(),
                        limits.clone(),
                        metrics.clone(),
                    );
                    let open = open.clone();
                    if let Some(open) = &open {
                        open.inc();
                    }
                    tokio::spawn(async move {
                        connection.await;
                        if let Some(open) = open {
                            open.dec();
                        }
                        drop(slot);
                    });
                }
                Err(err) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    warn!(error = %err, listener = limits.listener, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    // Every connection holds a slot until it ends: all slots back means all ended.
    let all_ended = tokio::time::timeout(grace, slots.acquire_many(limits.max_connections))
        .await
        .is_ok();
    all_ended
}

fn count_closed(metrics: Option<&Metrics>, limits: &ConnectionLimits, reason: ConnectionClose) {
    if let Some(metrics) = metrics {
        metrics.record_connection_closed(limits.listener, reason);
    }
}

/// One connection, from its first byte to its end.
async fn serve_connection<H, F>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    peer: SocketAddr,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    limits: ConnectionLimits,
    metrics: Option<Metrics>,
) where
    H: Fn(SocketAddr, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    // hyper's header timer starts with the first byte; a client that sends
    // none would hold the connection forever without this.
    let mut first = [0u8; 1];
    match tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first)).await {
        Ok(Ok(read)) if read > 0 => {}
        Ok(_) => return,
        Err(_) => {
            count_closed(metrics.as_ref(), &limits, ConnectionClose::Silent);
            debug!(%peer, listener = limits.listener, "connection closed: sent nothing");
            return;
        }
    }
    let activity = Activity::new();
    let io = TokioIo::new(Tracked {
        stream,
        activity: Arc::clone(&activity),
    });
    let service = service_fn(move |request| {
        let response = handler(peer, request);
        async move { Ok::<_, Infallible>(response.await) }
    });
    // With upgrades, a `101` hands the connection to the proxy's tunnel.
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        let idle_until = activity.last() + limits.idle_timeout;
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(err) = ended {
                    debug!(%peer, error = %err, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(idle_until) => {
                if activity.last() + limits.idle_timeout > Instant::now() {
                    continue;
                }
                if closing {
                    // Asked to close and silent for another idle period (an
                    // HTTP/2 peer that never acknowledges GOAWAY's ping):
                    // dropped, which closes the socket.
                    debug!(%peer, listener = limits.listener, "connection dropped: silent while closing");
                    return;
                }
                count_closed(metrics.as_ref(), &limits, ConnectionClose::Idle);
                debug!(%peer, listener = limits.listener, "connection closed: idle");
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            changed = shutdown.changed(), if !closing => {
                if changed.is_err() || *shutdown.borrow() {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// When a connection last moved a byte, as milliseconds since it began.
struct Activity {
    began: Instant,
    millis: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            began: Instant::now(),
            millis: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let millis = u64::try_from(self.began.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.millis.store(millis, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.began + Duration::from_millis(self.millis.load(Ordering::Relaxed))
    }
}

/// A client socket that notes every byte it moves.
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, data);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
