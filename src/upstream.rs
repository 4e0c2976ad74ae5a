//! An HTTP client for one backend: pooled connections, TLS (rustls, system
//! roots plus an optional CA file, always verified), connect and header
//! timeouts, the backend's own Host header and base-path prefix.
//!
//! Requests go out as given, with one exception that is reqwest's: a request
//! with no `Accept` header is sent with `Accept: */*`, which RFC 9110 §12.5.1
//! defines as meaning the same. Redirects are never followed and no proxy
//! from the environment is used: the upstream answers, nothing else.
//!
//! Must never: know which side (primary or shadow) it serves, follow a
//! redirect, or connect anywhere but the configured URL.

use std::error::Error as _;
use std::time::Duration;

use http::header::HOST;
use http::{HeaderMap, HeaderValue, Method};

use crate::config::UpstreamConfig;
use crate::exchange::FailureKind;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream \"{upstream}\": cannot read ca_file {path}: {source}")]
    CaFile {
        upstream: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("upstream \"{upstream}\": ca_file {path} holds no usable PEM certificate: {source}")]
    CaCert {
        upstream: String,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("upstream \"{upstream}\": cannot build its HTTP client: {source}")]
    Client {
        upstream: String,
        #[source]
        source: reqwest::Error,
    },
}

/// Why a request to an upstream got no answer.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

/// One backend and the pooled client that talks to it.
#[derive(Debug, Clone)]
pub struct Upstream {
    name: String,
    /// The configured URL, parsed once: each request's URL is a copy with
    /// its path and query set (parsing the whole URL, host and all, for
    /// every request cost 5% of the proxy's CPU).
    base: reqwest::Url,
    /// The base URL's path without a trailing '/', so a request path joins it.
    base_path: String,
    client: reqwest::Client,
    timeout: Duration,
    host: Option<HeaderValue>,
}

/// A reqwest client builder that can be built: reqwest is compiled without
/// a bundled crypto provider, and cutover uses ring. Installing it again
/// fails harmlessly. Every HTTP client in cutover starts here.
pub fn client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy()
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, UpstreamError> {
        let mut builder = client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true);
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|source| UpstreamError::CaFile {
                upstream: config.name.clone(),
                path: path.display().to_string(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| UpstreamError::CaCert {
                upstream: config.name.clone(),
                path: path.display().to_string(),
                source,
            })?;
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder.build().map_err(|source| UpstreamError::Client {
            upstream: config.name.clone(),
            source,
        })?;
        Ok(Upstream {
            name: config.name.clone(),
            base: config.url.clone(),
            base_path: config.url.path().trim_end_matches('/').to_string(),
            client,
            timeout: config.timeout,
            host: config.host.clone(),
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
    /// fields and of the client's Host.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        mut headers: HeaderMap,
        body: reqwest::Body,
    ) -> Result<reqwest::Response, Failure> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let mut url = self.base.clone();
        if self.base_path.is_empty() {
            url.set_path(path);
        } else {
            url.set_path(&format!("{}{path}", self.base_path));
        }
        url.set_query(query);
        if let Some(host) = &self.host {
            headers.insert(HOST, host.clone());
        }
        let mut request = reqwest::Request::new(method, url);
        *request.headers_mut() = headers;
        *request.body_mut() = Some(body);
        let no_answer = || Failure {
            kind: FailureKind::Timeout,
            message: format!("no answer within {}", humantime::format_duration(self.timeout)),
        };
        match tokio::time::timeout(self.timeout, self.client.execute(request)).await {
            Err(_) => Err(no_answer()),
            // reqwest's read timeout (the same duration) may fire first.
            Ok(Err(err)) if err.is_timeout() => Err(no_answer()),
            Ok(Err(err)) => Err(classify(err)),
            Ok(Ok(response)) => Ok(response),
        }
    }
}

/// Maps a reqwest error to a failure kind and a message naming its causes.
/// The request URL is left out: its query may carry secrets, and the
/// message reaches logs and the client's 502 body.
pub fn classify(err: reqwest::Error) -> Failure {
    let err = err.without_url();
    let kind = if err.is_timeout() {
        FailureKind::Timeout
    } else if err.is_connect() {
        FailureKind::Connect
    } else if err.is_body() || err.is_decode() {
        FailureKind::Body
    } else {
        FailureKind::Protocol
    };
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    Failure { kind, message }
}
