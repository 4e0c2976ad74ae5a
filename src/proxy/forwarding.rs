//! The HTTP of forwarding: which requests are refused as ambiguous, which
//! header fields are hop-by-hop, the forwarding fields and request ID both
//! upstreams get, and cutover's own small error answers.
//!
//! Must never: let a request through that a client could mean one way and
//! an upstream read another, or copy a hop-by-hop field to the other side.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, HOST};
use http::{HeaderMap, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};

use crate::exchange::FailureKind;
use crate::headers::{is_hop_by_hop, is_marker, REQUEST_ID_NAME};
use crate::server::{BoxError, ResponseBody};
use crate::upstream::{Failure, UpstreamBody};

/// Requests a client could mean one way and an upstream read another,
/// refused before either upstream sees them.
pub(super) fn refuse_ambiguous(parts: &http::request::Parts) -> Option<&'static str> {
    // Content-Length is settled by the listener already: it refuses
    // conflicting values and drops it when Transfer-Encoding frames the body.
    let headers = &parts.headers;
    // Raw bytes outside ASCII are not a request target (RFC 9112 §3.2,
    // RFC 3986 §2): they arrive percent-encoded or not at all.
    if parts
        .uri
        .path_and_query()
        .is_some_and(|target| !target.as_str().is_ascii())
    {
        return Some("the request target has bytes outside ASCII; percent-encode them");
    }
    // HTTP/1.1 needs exactly one Host (RFC 9112 §3.2); HTTP/2 carries its
    // authority in :authority instead, and HTTP/1.0 may leave it out.
    let hosts = headers.get_all(HOST).iter().count();
    if hosts > 1 {
        return Some("a request must have one Host header, not several");
    }
    if hosts == 0 && parts.version == Version::HTTP_11 {
        return Some("an HTTP/1.1 request must have a Host header");
    }
    // HTTP/1 absolute-form aimed at another host than the Host header names
    // (HTTP/2 always carries an authority; it is the Host there).
    if parts.version <= Version::HTTP_11 {
        if let Some(authority) = parts.uri.authority() {
            let host = headers.get(HOST).and_then(|value| value.to_str().ok());
            if host.is_none_or(|host| !host.eq_ignore_ascii_case(authority.as_str())) {
                return Some("an absolute request target must name the same host as the Host header");
            }
        }
    }
    None
}

/// The response as the upstream gave it, minus hop-by-hop fields, not observed.
pub(super) fn pass_through(response: Response<UpstreamBody>) -> Response<ResponseBody> {
    let (mut head, body) = response.into_parts();
    reframe(&mut head.headers);
    strip_hop_by_hop(&mut head.headers);
    head.version = Version::HTTP_11;
    Response::from_parts(head, body.map_err(BoxError::from).boxed_unsync())
}

/// The request id: the client's own when it is a sane header value, else a new UUID.
pub(super) fn request_id_of(headers: &HeaderMap) -> String {
    headers
        .get(&REQUEST_ID_NAME)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty() && value.len() <= 200)
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string)
}

/// An answer framed by Transfer-Encoding is framed by it alone (RFC 9112
/// §6.3): a Content-Length beside it is a lie about the body (and a
/// smuggling shape), so it is dropped and the client's framing is hyper's.
pub(super) fn reframe(headers: &mut HeaderMap) {
    if headers.contains_key(http::header::TRANSFER_ENCODING) {
        headers.remove(http::header::CONTENT_LENGTH);
    }
}

/// Removes hop-by-hop fields, including every field `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named = connection_named(headers);
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name) || named.contains(name))
        .cloned()
        .collect();
    // Only the fields present are removed: removing an absent name costs
    // a hash and a probe, and most messages carry none of these.
    for name in doomed {
        headers.remove(&name);
    }
}

/// The fields `Connection` names as belonging to this hop (RFC 9110 §7.6.1).
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect()
}

/// Appends an address as text. An IPv4 address, nearly every client's, is
/// written digit by digit: std's formatter for it cost more per request
/// than every other forwarding field together.
fn push_ip(text: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (index, octet) in v4.octets().into_iter().enumerate() {
                if index > 0 {
                    text.push('.');
                }
                if octet >= 100 {
                    text.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    text.push(char::from(b'0' + octet / 10 % 10));
                }
                text.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(text, "{v6}");
        }
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The headers sent upstream: the client's, minus hop-by-hop fields and
/// Host, plus the forwarding fields and the request id.
pub(super) fn forwarded_headers(
    incoming: &HeaderMap,
    authority: Option<&str>,
    client: SocketAddr,
    request_id: &str,
) -> HeaderMap {
    let named = connection_named(incoming);
    let passed_on = |name: &HeaderName| !(is_hop_by_hop(name) || named.contains(name));
    // Built afresh with room for the forwarding fields: a clone of the
    // client's map grew (and rehashed) as they went in.
    let mut headers = HeaderMap::with_capacity(incoming.len() + 5);
    for (name, value) in incoming {
        if passed_on(name) && !is_marker(name) && name != HOST {
            headers.append(name.clone(), value.clone());
        }
    }
    super::protocols::keep_trailers_te(incoming, &mut headers);
    // The client's Host is passed on as it came (text only), not parsed again.
    let host = match incoming
        .get(HOST)
        .filter(|value| passed_on(&HOST) && value.to_str().is_ok())
    {
        Some(value) => Some(value.clone()),
        None => authority.and_then(|host| HeaderValue::from_str(host).ok()),
    };
    let mut forwarded_for = String::new();
    for hop in incoming
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
    {
        forwarded_for.push_str(hop);
        forwarded_for.push_str(", ");
    }
    push_ip(&mut forwarded_for, client.ip());
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
    if !headers.contains_key(&X_FORWARDED_HOST) {
        if let Some(value) = host {
            headers.insert(X_FORWARDED_HOST.clone(), value);
        }
    }
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID_NAME.clone(), value);
    }
    headers
}

/// 502 when the primary could not be reached or broke off, 504 when it timed out.
pub(super) fn upstream_error(upstream: &str, failure: &Failure, request_id: &str) -> Response<ResponseBody> {
    let (status, prefix) = match failure.kind {
        FailureKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream timed out"),
        FailureKind::Connect => (StatusCode::BAD_GATEWAY, "upstream unreachable"),
        FailureKind::Protocol | FailureKind::Body => (StatusCode::BAD_GATEWAY, "upstream failed"),
    };
    json_error(
        status,
        &format!("{prefix}: {}", failure.message),
        Some(upstream),
        request_id,
    )
}

/// A small JSON error answer: `{"error": ..., "upstream": ..., "request_id": ...}`.
pub fn json_error(
    status: StatusCode,
    message: &str,
    upstream: Option<&str>,
    request_id: &str,
) -> Response<ResponseBody> {
    let mut body = serde_json::json!({ "error": message, "request_id": request_id });
    if let Some(upstream) = upstream {
        body["upstream"] = serde_json::Value::from(upstream);
    }
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::REQUEST_ID;

    #[test]
    fn an_address_is_written_as_std_writes_it() {
        let octets = [0u8, 1, 9, 10, 42, 99, 100, 199, 200, 255];
        for a in octets {
            for b in octets {
                let ip = IpAddr::from([a, b, 255 - a, 255 - b]);
                let mut text = String::from("x, ");
                push_ip(&mut text, ip);
                assert_eq!(text, format!("x, {ip}"));
            }
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let mut text = String::new();
        push_ip(&mut text, v6);
        assert_eq!(text, "2001:db8::1");
    }

    /// A header map of `(name, value)` pairs, in order; a repeated name keeps every value.
    fn map(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_removed() {
        let mut headers = map(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("content-type", "application/json"),
        ]);
        strip_hop_by_hop(&mut headers);
        let left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type"]);
    }

    #[test]
    fn a_forwarded_request_keeps_the_end_to_end_fields_in_order_and_nothing_else() {
        let incoming = map(&[
            ("host", "api.example.com"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("x-cutover-shadow", "1"),
            ("te", "trailers"),
            ("accept", "application/json"),
            ("accept", "text/plain"),
        ]);
        let client: SocketAddr = "[2001:db8::7]:5555".parse().unwrap();
        let out = forwarded_headers(&incoming, None, client, "id-1");
        let accepts: Vec<_> = out.get_all("accept").iter().collect();
        assert_eq!(accepts, ["application/json", "text/plain"]);
        for gone in [
            HOST.as_str(),
            "connection",
            "x-secret-hop",
            "keep-alive",
            "x-cutover-shadow",
        ] {
            assert!(out.get(gone).is_none(), "{gone} was passed on: {out:?}");
        }
        assert_eq!(out["te"], "trailers", "a client that takes trailers still says so");
        assert_eq!(out["x-forwarded-for"], "2001:db8::7");
        assert_eq!(out["x-forwarded-host"], "api.example.com");
        assert_eq!(out.len(), 7, "{out:?}");
    }

    #[test]
    fn forwarding_fields_extend_the_chain_and_keep_the_client_request_id() {
        let mut incoming = HeaderMap::new();
        incoming.insert(HOST, HeaderValue::from_static("api.example.com"));
        incoming.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        incoming.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        let client: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let id = request_id_of(&incoming);
        let out = forwarded_headers(&incoming, None, client, &id);
        assert_eq!(out["x-forwarded-for"], "203.0.113.9, 10.1.2.3");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out["x-forwarded-host"], "api.example.com");
        assert_eq!(out[REQUEST_ID], "abc-123");
        assert!(out.get(HOST).is_none());
    }

    #[test]
    fn a_missing_request_id_is_generated() {
        let id = request_id_of(&HeaderMap::new());
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    }
}
