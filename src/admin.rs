//! The admin listener: `GET /healthz` and `GET /metrics`, on its own port
//! (`[listen] admin`).
//!
//! Must never: be reachable on the proxy port, or answer anything about
//! individual requests without a token (no such endpoint exists yet).

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::metrics::Metrics;
use crate::proxy::json_error;
use crate::server::ResponseBody;

/// Serves one admin request.
pub fn handle<B>(metrics: &Metrics, request: &Request<B>) -> Response<ResponseBody> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "application/json", "{\"status\":\"ok\"}".into()),
        (&Method::GET, "/metrics") => text(StatusCode::OK, "text/plain; version=0.0.4", metrics.encode()),
        (_, "/healthz" | "/metrics") => {
            json_error(StatusCode::METHOD_NOT_ALLOWED, "only GET is allowed here", None, "")
        }
        (_, path) => json_error(
            StatusCode::NOT_FOUND,
            &format!("no admin endpoint at {path}; try /healthz or /metrics"),
            None,
            "",
        ),
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
