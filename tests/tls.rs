//! HTTPS upstreams: verified TLS with an added CA, each upstream's own Host,
//! and a clear 502 when the certificate is not trusted.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::client;
use cutover::config::Config;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{crypto, ServerConfig};

/// An HTTPS backend for `localhost` with a self-signed certificate; returns
/// its address, the certificate as PEM, and the Host headers it saw.
async fn tls_backend(body: &'static str) -> (SocketAddr, String, Arc<Mutex<Vec<String>>>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_der = CertificateDer::from(certified.cert.der().to_vec());
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
    let mut config = ServerConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key_der)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hosts = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&hosts);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let service = service_fn(move |request: Request<Incoming>| {
                    let host = request
                        .headers()
                        .get("host")
                        .map(|h| h.to_str().unwrap().to_string())
                        .or_else(|| request.uri().authority().map(|a| a.to_string()))
                        .unwrap_or_default();
                    seen.lock().unwrap().push(host);
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(body.as_bytes())))) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, certified.cert.pem(), hosts)
}

fn config(primary: &str, ca_file: Option<&std::path::Path>) -> Config {
    let ca = ca_file.map_or(String::new(), |path| format!("ca_file = \"{}\"", path.display()));
    let text = format!(
        r#"
[listen]
proxy = "127.0.0.1:0"
admin = "127.0.0.1:0"

[primary]
name = "legacy"
url = "{primary}"
{ca}

[shadow]
name = "candidate"
url = "{primary}"
{ca}

[store]
url = "sqlite::memory:"
"#
    );
    Config::parse(&text, "tls.toml", &|_| None).unwrap()
}

#[tokio::test]
async fn an_https_upstream_with_an_added_ca_is_verified_and_gets_its_own_host() {
    let (addr, pem, hosts) = tls_backend("over tls").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let url = format!("https://localhost:{}", addr.port());
    let proxy = cutover::app::start(config(&url, Some(&ca))).await.unwrap();
    let response = client()
        .get(format!("http://{}/x", proxy.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), "over tls");
    let seen = hosts.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|host| host == &format!("localhost:{}", addr.port())),
        "{seen:?}"
    );
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_never_ignored() {
    let (addr, _pem, hosts) = tls_backend("must not be served").await;
    let url = format!("https://localhost:{}", addr.port());
    let proxy = cutover::app::start(config(&url, None)).await.unwrap();
    let response = client()
        .get(format!("http://{}/x", proxy.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body = String::from_utf8(response.bytes().await.unwrap().to_vec()).unwrap();
    assert!(body.contains("certificate"), "{body}");
    assert!(
        hosts.lock().unwrap().is_empty(),
        "no request went over the untrusted connection"
    );
}

#[tokio::test]
async fn a_ca_file_without_a_certificate_stops_startup_naming_the_upstream_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let Err(err) = cutover::app::start(config("https://localhost:1", Some(&ca))).await else {
        panic!("a proxy started with an unusable ca_file");
    };
    assert_eq!(
        err.to_string(),
        format!(
            "upstream \"legacy\": ca_file {} holds no usable PEM certificate",
            ca.display()
        )
    );
}
