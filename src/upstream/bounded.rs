//! A connector that holds at most N connections open at once: each
//! connection carries a permit from the moment it is dialled until it is
//! closed, so a pool's races (a new connection dialled while an idle one
//! comes back) can never take more. A dial waits for a permit; the pool
//! meanwhile hands the waiting request whichever connection frees first.
//!
//! Must never: let a connection outlive its permit's count, or bound a
//! connector nobody asked to bound.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::server::BoxError;

/// Wraps a connector; `None` leaves it unbounded.
#[derive(Debug, Clone)]
pub struct Bounded<C> {
    inner: C,
    permits: Option<Arc<Semaphore>>,
}

impl<C> Bounded<C> {
    pub fn new(inner: C, max_connections: Option<usize>) -> Bounded<C> {
        Bounded {
            inner,
            permits: max_connections.map(|max| Arc::new(Semaphore::new(max.max(1)))),
        }
    }
}

impl<C> tower_service::Service<Uri> for Bounded<C>
where
    C: tower_service::Service<Uri> + Clone + Send + 'static,
    C::Future: Send,
    C::Error: Into<BoxError>,
{
    type Response = Counted<C::Response>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        // The connector made ready is the one that dials (tower's rule);
        // a fresh clone takes its place for the next call.
        let fresh = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, fresh);
        let permits = self.permits.clone();
        Box::pin(async move {
            let permit = match permits {
                Some(permits) => Some(permits.acquire_owned().await?),
                None => None,
            };
            let io = ready.call(uri).await.map_err(Into::into)?;
            Ok(Counted { io, _permit: permit })
        })
    }
}

/// A connection and the permit it holds until it is dropped.
#[derive(Debug)]
pub struct Counted<T> {
    io: T,
    _permit: Option<OwnedSemaphorePermit>,
}

impl<T: Connection> Connection for Counted<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use http::{HeaderMap, Method};
    use http_body_util::BodyExt;

    use crate::upstream::{Upstream, UpstreamConfig};

    /// A backend that answers after 20 ms and counts the connections it accepted.
    async fn slow_backend() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_request| async {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    fn config(addr: std::net::SocketAddr) -> UpstreamConfig {
        UpstreamConfig {
            name: "slow".into(),
            url: reqwest::Url::parse(&format!("http://{addr}")).unwrap(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            host: None,
            rate_limit: None,
            write_tries: 1,
            replay_headers: Vec::new(),
            headers: Default::default(),
            ca_file: None,
        }
    }

    /// 40 requests at once; every one answered.
    async fn connections_for_a_burst(upstream: &Upstream) -> Vec<Bytes> {
        let sends = (0..40).map(|_| async {
            let answer = upstream
                .send(Method::GET, "/", HeaderMap::new(), Bytes::new().into())
                .await
                .unwrap();
            answer.into_body().collect().await.unwrap().to_bytes()
        });
        futures_util::future::join_all(sends).await
    }

    #[tokio::test]
    async fn a_bounded_pool_never_holds_more_connections_than_its_limit() {
        let (addr, accepted) = slow_backend().await;
        let bounded = Upstream::with_connection_limit(&config(addr), 3).unwrap();
        let answers = connections_for_a_burst(&bounded).await;
        assert!(answers.iter().all(|body| body == "ok"), "every request answered");
        assert!(
            accepted.load(Ordering::SeqCst) <= 3,
            "{} connections",
            accepted.load(Ordering::SeqCst)
        );

        let (addr, accepted) = slow_backend().await;
        let unbounded = Upstream::new(&config(addr)).unwrap();
        connections_for_a_burst(&unbounded).await;
        assert!(
            accepted.load(Ordering::SeqCst) > 3,
            "without a limit the same burst opens more"
        );
    }
}
