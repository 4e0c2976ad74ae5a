//! The floor of cutover's own stack, for the proxy benchmark: the least a
//! reverse proxy built on hyper and tokio does per request, and nothing
//! more. It forwards each request to the primary and streams the answer
//! back; with `--shadow URL` it also sends the same request to the shadow
//! (concurrently, not awaited) and reads the shadow's answer to the end.
//! No capture, no comparison, no store, no timeouts, no error handling
//! beyond a 502: whatever cutover costs above this is cutover's own.
//!
//! scripts/bench-proxy.sh measures it in the same run as the direct
//! connection and cutover, so its ratio says how much of the gap to the
//! direct connection the stack itself (sockets, HTTP/1.1, the scheduler)
//! accounts for on the machine at hand.
//!
//! Usage: `cargo run --release --example bench_floor -- --listen ADDR --primary URL [--shadow URL]`

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Body = BoxBody<Bytes, hyper::Error>;
type Upstream = Client<HttpConnector, Body>;

/// `base` (scheme and authority) joined with the request's path and query.
fn target(base: &Uri, request: &http::request::Parts) -> Uri {
    let mut parts = base.clone().into_parts();
    parts.path_and_query = request.uri.path_and_query().cloned();
    Uri::from_parts(parts).expect("a base URL and a request path form a URI")
}

/// The request as an upstream gets it: same method and headers (but Host), the given body.
fn upstream_request(uri: Uri, original: &http::request::Parts, body: Body) -> Request<Body> {
    let mut request = Request::new(body);
    *request.method_mut() = original.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = original.headers.clone();
    request.headers_mut().remove(http::header::HOST);
    request
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen: SocketAddr = "127.0.0.1:18060".parse()?;
    let mut primary: Option<Uri> = None;
    let mut shadow: Option<Uri> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs ADDR")?.parse()?,
            "--primary" => primary = Some(args.next().ok_or("--primary needs URL")?.parse()?),
            "--shadow" => shadow = Some(args.next().ok_or("--shadow needs URL")?.parse()?),
            other => {
                return Err(format!("unknown argument {other}; use --listen ADDR --primary URL [--shadow URL]").into())
            }
        }
    }
    let primary = primary.ok_or("--primary URL is required")?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new()).build(connector);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("bench_floor on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (client, primary, shadow) = (client.clone(), primary.clone(), shadow.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let (client, primary, shadow) = (client.clone(), primary.clone(), shadow.clone());
                async move {
                    let (head, body) = request.into_parts();
                    if let Some(shadow) = shadow {
                        // The floor mirrors bodiless requests only (the benchmark sends GETs).
                        let mirrored = upstream_request(target(&shadow, &head), &head, empty());
                        let client = client.clone();
                        tokio::spawn(async move {
                            if let Ok(answer) = client.request(mirrored).await {
                                let _ = answer.into_body().collect().await;
                            }
                        });
                    }
                    let forwarded = upstream_request(target(&primary, &head), &head, body.boxed());
                    let answer = match client.request(forwarded).await {
                        Ok(answer) => answer.map(|body| body.boxed()),
                        Err(_) => {
                            let mut refused = Response::new(empty());
                            *refused.status_mut() = StatusCode::BAD_GATEWAY;
                            refused
                        }
                    };
                    Ok::<_, Infallible>(answer)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
