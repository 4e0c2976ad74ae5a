//! An HTTP client for one backend: pooled connections (hyper-util's client,
//! called directly), TLS (rustls, the system's roots plus an optional CA
//! file, always verified, HTTP/2 when the backend offers it), connect,
//! answer and idle-body timeouts, the backend's own Host header and
//! base-path prefix.
//!
//! Requests go out as given: method, path, query and headers byte for byte,
//! but for the side's own `[primary.headers]` / `[shadow.headers]` (removed,
//! then set), a `traceparent` naming a child span of its own (see
//! [`crate::trace`]) and Host, when the request has none. Redirects are
//! never followed and no proxy from the environment is used: the upstream
//! answers, nothing else.
//!
//! Must never: know which side (primary or shadow) it serves, follow a
//! redirect, connect anywhere but the configured URL, or put the request's
//! URL in a failure message (its query may carry secrets).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::exchange::FailureKind;
use crate::server::BoxError;
use bounded::Bounded;

mod bounded;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream \"{upstream}\": cannot read ca_file {path}: {source}")]
    CaFile {
        upstream: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("upstream \"{upstream}\": ca_file {path} holds no usable PEM certificate{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    CaCert {
        upstream: String,
        path: String,
        detail: Option<String>,
    },
    #[error("upstream \"{upstream}\": cannot set up TLS: {source}")]
    Tls {
        upstream: String,
        #[source]
        source: rustls::Error,
    },
    #[error("upstream \"{upstream}\": its URL has no host to connect to")]
    NoHost { upstream: String },
    #[error("upstream \"{upstream}\": the value of ${variable} is not a valid header value")]
    HeaderValue { upstream: String, variable: String },
}

/// One backend, as `[primary]` or `[shadow]` configures it (config builds it).
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    /// Scheme, authority and optional base-path prefix; no query, no credentials.
    pub url: reqwest::Url,
    /// Time allowed until the response headers arrive (and between body reads).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// The Host header to send; `None` sends the URL's own authority.
    pub host: Option<http::HeaderValue>,
    /// Shadow only: at most this many mirrored requests per second.
    pub rate_limit: Option<crate::units::RateLimit>,
    /// Tries per mirrored write (the shadow only; the first plus retries).
    pub write_tries: u32,
    /// Headers set on replayed writes, from environment variables (auth, never stored).
    pub replay_headers: Vec<(http::HeaderName, crate::secret::Secret)>,
    /// Extra PEM CA certificates to trust (on top of the system roots).
    pub ca_file: Option<std::path::PathBuf>,
    /// `[primary.headers]` / `[shadow.headers]`: applied to every request this side gets.
    pub headers: SideHeaders,
}

/// What every request to one side has removed, then set, whoever sends it
/// (the proxy, the mirror, a replay, a sweep or a verify).
#[derive(Debug, Clone, Default)]
pub struct SideHeaders {
    pub remove: Vec<http::HeaderName>,
    pub set: Vec<SetHeader>,
}

/// One header `set` puts on every request, its value read from an
/// environment variable (never from the file).
#[derive(Debug, Clone)]
pub struct SetHeader {
    pub name: http::HeaderName,
    /// The environment variable the value came from, to name it in messages.
    pub variable: String,
    pub value: crate::secret::Secret,
}

/// Why a request to an upstream got no answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

type Connector = Bounded<HttpsConnector<HttpConnector>>;

/// One backend and the pooled client that talks to it.
#[derive(Debug, Clone)]
pub struct Upstream {
    name: String,
    scheme: Scheme,
    /// Host and port only: credentials in the URL become `credentials`.
    authority: Authority,
    /// The base URL's path without a trailing '/', so a request path joins it.
    base_path: String,
    client: Client<Connector, OutgoingBody>,
    timeout: Duration,
    host: Option<HeaderValue>,
    /// `Authorization: Basic …` from the URL's user and password (which come
    /// from the environment, never the file), for requests without their own.
    credentials: Option<HeaderValue>,
    /// The side's `remove` list, applied before `set`.
    remove: Arc<[http::HeaderName]>,
    /// The side's `set` headers, marked sensitive so no debug output shows them.
    set: Arc<[(http::HeaderName, HeaderValue)]>,
}

/// A reqwest client builder that can be built: reqwest is compiled without
/// a bundled crypto provider, and cutover uses ring. Installing it again
/// fails harmlessly. cutover's own HTTP clients (the CLI talking to the admin
/// API, the demo's traffic) start here; upstreams use [`Upstream`].
pub fn client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy()
}

impl Upstream {
    /// A client with a pool of its own, as many connections as it needs.
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, UpstreamError> {
        Upstream::build(config, None)
    }

    /// A client with a pool of its own that holds at most `max_connections`
    /// connections open, however its requests race.
    pub fn with_connection_limit(config: &UpstreamConfig, max_connections: usize) -> Result<Upstream, UpstreamError> {
        Upstream::build(config, Some(max_connections))
    }

    fn build(config: &UpstreamConfig, max_connections: Option<usize>) -> Result<Upstream, UpstreamError> {
        let url = &config.url;
        let no_host = || UpstreamError::NoHost {
            upstream: config.name.clone(),
        };
        let host = url.host_str().filter(|host| !host.is_empty()).ok_or_else(no_host)?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let authority = Authority::try_from(authority).map_err(|_| no_host())?;
        let scheme = if url.scheme() == "https" {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        let (tls, trusted_roots) = tls_config(config)?;
        if scheme == Scheme::HTTPS && trusted_roots == 0 {
            tracing::warn!(
                upstream = %config.name,
                "no trusted root certificate (none on the system, no ca_file): every TLS connection will be refused"
            );
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let set = config
            .headers
            .set
            .iter()
            .map(|header| {
                let mut value =
                    HeaderValue::from_str(header.value.expose()).map_err(|_| UpstreamError::HeaderValue {
                        upstream: config.name.clone(),
                        variable: header.variable.clone(),
                    })?;
                value.set_sensitive(true);
                Ok((header.name.clone(), value))
            })
            .collect::<Result<Vec<_>, UpstreamError>>()?;
        let connector = Bounded::new(connector, max_connections);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Upstream {
            name: config.name.clone(),
            scheme,
            authority,
            base_path: url.path().trim_end_matches('/').to_string(),
            client,
            timeout: config.timeout,
            host: config.host.clone(),
            credentials: basic_credentials(url),
            remove: config.headers.remove.clone().into(),
            set: set.into(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends a request and waits for the response headers (at most the
    /// upstream's `timeout`). `headers` must already be free of hop-by-hop
    /// fields and of the client's Host. The answer's body fails with a
    /// timeout when the upstream sends nothing for that long.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: OutgoingBody,
    ) -> Result<Response<UpstreamBody>, Failure> {
        let asked = self.send_untimed(method, path_and_query, headers, body);
        match tokio::time::timeout(self.timeout, asked).await {
            Err(_) => Err(no_answer_within(self.timeout)),
            Ok(Err(failure)) => Err(failure),
            Ok(Ok(response)) => Ok(response.map(|body| body.idle_after(self.timeout))),
        }
    }

    /// [`Upstream::send`] with no timer of its own, neither for the head nor
    /// for a stalled body: for a caller that bounds the whole exchange
    /// itself (the mirror's calls), so each request arms one timer, not three.
    pub async fn send_untimed(
        &self,
        method: Method,
        path_and_query: &str,
        mut headers: HeaderMap,
        body: OutgoingBody,
    ) -> Result<Response<UpstreamBody>, Failure> {
        let invalid_target = |err: &dyn std::fmt::Display| Failure {
            kind: FailureKind::Protocol,
            message: format!("not a valid request target: {err}"),
        };
        let target = if self.base_path.is_empty() {
            PathAndQuery::try_from(path_and_query)
        } else {
            PathAndQuery::try_from(format!("{}{path_and_query}", self.base_path))
        }
        .map_err(|err| invalid_target(&err))?;
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(target)
            .build()
            .map_err(|err| invalid_target(&err))?;
        crate::trace::give_child_span(&mut headers);
        for name in self.remove.iter() {
            headers.remove(name);
        }
        for (name, value) in self.set.iter() {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(host) = &self.host {
            headers.insert(HOST, host.clone());
        }
        if let Some(credentials) = &self.credentials {
            headers
                .entry(http::header::AUTHORIZATION)
                .or_insert_with(|| credentials.clone());
        }
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        match self.client.request(request).await {
            Err(err) => Err(classify(&err, Phase::Request)),
            Ok(response) => Ok(response.map(|body| UpstreamBody {
                inner: body,
                idle: None,
                timer: None,
                armed: false,
            })),
        }
    }
}

fn no_answer_within(timeout: Duration) -> Failure {
    Failure {
        kind: FailureKind::Timeout,
        message: format!("no answer within {}", humantime::format_duration(timeout)),
    }
}

/// Verified TLS: the system's roots plus the upstream's `ca_file`, if any;
/// and how many roots that is.
fn tls_config(config: &UpstreamConfig) -> Result<(rustls::ClientConfig, usize), UpstreamError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(upstream = %config.name, %error, "a system root certificate could not be loaded");
    }
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path).map_err(|source| UpstreamError::CaFile {
            upstream: config.name.clone(),
            path: path.display().to_string(),
            source,
        })?;
        let unusable = |detail: Option<String>| UpstreamError::CaCert {
            upstream: config.name.clone(),
            path: path.display().to_string(),
            detail,
        };
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| unusable(Some(err.to_string())))?;
        if certs.is_empty() {
            return Err(unusable(None));
        }
        for cert in certs {
            roots.add(cert).map_err(|err| unusable(Some(err.to_string())))?;
        }
    }
    let trusted_roots = roots.len();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| UpstreamError::Tls {
            upstream: config.name.clone(),
            source,
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((tls, trusted_roots))
}

/// The `Authorization` value a URL's user and password stand for.
fn basic_credentials(url: &reqwest::Url) -> Option<HeaderValue> {
    use base64::Engine as _;
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8_lossy()
            .into_owned()
    };
    let pair = format!(
        "{}:{}",
        decode(url.username()),
        decode(url.password().unwrap_or_default())
    );
    let mut value = HeaderValue::from_str(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    ))
    .ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// What an upstream is sent: bytes at hand (no allocation, exact length),
/// or a body still streaming in from the client.
pub enum OutgoingBody {
    Buffered(Option<Bytes>),
    Streaming(UnsyncBoxBody<Bytes, BoxError>),
}

impl OutgoingBody {
    /// A body still to be read; one already at its end (most GETs) is no
    /// body, and costs no allocation.
    pub fn streaming<B>(body: B) -> OutgoingBody
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if body.is_end_stream() {
            return OutgoingBody::Buffered(None);
        }
        OutgoingBody::Streaming(body.map_err(Into::into).boxed_unsync())
    }
}

impl From<Bytes> for OutgoingBody {
    fn from(bytes: Bytes) -> OutgoingBody {
        OutgoingBody::Buffered(Some(bytes).filter(|bytes| !bytes.is_empty()))
    }
}

impl Body for OutgoingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            OutgoingBody::Buffered(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            OutgoingBody::Streaming(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OutgoingBody::Buffered(bytes) => bytes.is_none(),
            OutgoingBody::Streaming(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OutgoingBody::Buffered(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |bytes| bytes.len() as u64)),
            OutgoingBody::Streaming(body) => body.size_hint(),
        }
    }
}

/// An upstream's answer body: fails with a timeout when the upstream sends
/// nothing for its `timeout` (unless the caller bounds the whole exchange,
/// see [`Upstream::send_untimed`]), and with a classified failure (no URL in it)
/// when the connection breaks.
pub struct UpstreamBody {
    inner: Incoming,
    /// How long the body may send nothing before it fails; `None` when the
    /// caller bounds the whole exchange.
    idle: Option<Duration>,
    /// Made the first time the body waits, then reset: most answers arrive
    /// without waiting and never need one.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether the timer counts from the current wait (it is re-armed after data).
    armed: bool,
}

impl UpstreamBody {
    fn idle_after(self, idle: Duration) -> UpstreamBody {
        UpstreamBody {
            idle: Some(idle),
            ..self
        }
    }

    /// The same body with no idle timeout: for a stream whose pauses are
    /// its nature (server-sent events between two events), which only the
    /// client or the upstream ends.
    pub fn without_idle_timeout(self) -> UpstreamBody {
        UpstreamBody {
            idle: None,
            timer: None,
            armed: false,
            ..self
        }
    }

    /// The next chunk of data, `None` at the end (trailers are skipped).
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Failure> {
        while let Some(frame) = self.frame().await {
            if let Ok(data) = frame?.into_data() {
                return Ok(Some(data));
            }
        }
        Ok(None)
    }

    /// The body read whole, or its first bytes and `true` once it would
    /// pass `limit` (the rest is left unread).
    pub async fn collect_up_to(mut self, limit: usize) -> Result<(Bytes, bool), Failure> {
        let mut collected = bytes::BytesMut::new();
        while let Some(chunk) = self.chunk().await? {
            if collected.len() + chunk.len() > limit {
                return Ok((collected.freeze(), true));
            }
            collected.extend_from_slice(&chunk);
        }
        Ok((collected.freeze(), false))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Failure;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Failure>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(frame.map(|frame| frame.map_err(|err| classify(&err, Phase::Body))));
        }
        let Some(idle) = this.idle else {
            return Poll::Pending;
        };
        // The wait counts from the first Pending after data, not from each poll.
        let fresh_wait = !std::mem::replace(&mut this.armed, true);
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        if fresh_wait {
            timer.as_mut().reset(tokio::time::Instant::now() + idle);
        }
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Some(Err(Failure {
            kind: FailureKind::Timeout,
            message: format!("the body stalled: nothing for {}", humantime::format_duration(idle)),
        })))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where an error happened: asking (connecting, sending, waiting for the
/// head) or reading the answer's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Request,
    Body,
}

/// Maps a client or body error to a failure kind and a message naming its
/// causes. hyper's errors never carry the request URL.
fn classify(err: &(dyn std::error::Error + 'static), phase: Phase) -> Failure {
    let mut timed_out = false;
    let mut connect = false;
    let mut message = err.to_string();
    let mut current = Some(err);
    let mut first = true;
    while let Some(cause) = current {
        if let Some(client) = cause.downcast_ref::<hyper_util::client::legacy::Error>() {
            connect |= client.is_connect();
        }
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            timed_out |= hyper.is_timeout();
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
        }
        if !first {
            message.push_str(": ");
            message.push_str(&cause.to_string());
        }
        first = false;
        current = cause.source();
    }
    let kind = if timed_out {
        FailureKind::Timeout
    } else if connect {
        FailureKind::Connect
    } else if phase == Phase::Body {
        FailureKind::Body
    } else {
        FailureKind::Protocol
    };
    Failure { kind, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_at_hand_have_an_exact_length_and_empty_bytes_are_no_body() {
        let empty = OutgoingBody::from(Bytes::new());
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
        let some = OutgoingBody::from(Bytes::from_static(b"{\"a\":1}"));
        assert!(!some.is_end_stream());
        assert_eq!(some.size_hint().exact(), Some(7));
        let ended = OutgoingBody::streaming(http_body_util::Empty::<Bytes>::new());
        assert!(
            matches!(ended, OutgoingBody::Buffered(None)),
            "an ended body needs no box"
        );
        let full = OutgoingBody::streaming(http_body_util::Full::new(Bytes::from_static(b"x")));
        assert!(matches!(full, OutgoingBody::Streaming(_)));
        assert_eq!(full.size_hint().exact(), Some(1));
    }

    #[test]
    fn failures_are_classified_by_cause_and_phase() {
        let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "connection timed out");
        assert_eq!(classify(&timed_out, Phase::Request).kind, FailureKind::Timeout);
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        assert_eq!(classify(&reset, Phase::Request).kind, FailureKind::Protocol);
        let failure = classify(&reset, Phase::Body);
        assert_eq!(failure.kind, FailureKind::Body);
        assert_eq!(failure.message, "reset by peer");
    }

    #[test]
    fn url_credentials_become_basic_authorization_decoded_first() {
        let url = reqwest::Url::parse("http://svc:p%40ss@backend.internal/").unwrap();
        let value = basic_credentials(&url).unwrap();
        assert_eq!(value, "Basic c3ZjOnBAc3M=");
        assert!(value.is_sensitive(), "kept out of debug output");
        let plain = reqwest::Url::parse("http://backend.internal/").unwrap();
        assert!(basic_credentials(&plain).is_none());
    }
}
