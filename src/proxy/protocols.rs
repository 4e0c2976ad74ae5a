//! The protocols that are not one request and one finished answer: an HTTP/1.1
//! `Upgrade` (WebSocket and the like), tunnelled to the side that serves;
//! server-sent events, streamed through; and the `TE: trailers` a gRPC
//! client sends, which the upstream must see to answer with trailers.
//!
//! Must never: mirror a tunnel or a stream (there is no end to compare),
//! hold an upgraded connection's bytes back, or keep a hop-by-hop field but
//! the ones an upgrade or trailers need to work.

use http::header::{HeaderValue, ACCEPT, CONNECTION, CONTENT_TYPE, TE, UPGRADE};
use http::{HeaderMap, Response, Version};
use http_body_util::{BodyExt, Empty};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::debug;

use crate::server::ResponseBody;

/// The protocol a client asks to switch to (RFC 9110 §7.8): an HTTP/1.1
/// request whose `Connection` names `upgrade` and that has an `Upgrade`.
/// HTTP/2 has no Upgrade (RFC 9113 §8.6).
pub(super) fn upgrade_requested(version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    let names_upgrade = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    headers.get(UPGRADE).filter(|_| names_upgrade).cloned()
}

/// Puts back the two fields an upgrade needs, which every forwarded
/// request and answer otherwise loses as hop-by-hop.
pub(super) fn ask_to_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocol);
}

const EVENT_STREAM: &[u8] = b"text/event-stream";

/// Whether a client asks for server-sent events. Every request is asked,
/// so nothing is allocated to answer.
pub(super) fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT).iter().any(|value| {
        value
            .as_bytes()
            .windows(EVENT_STREAM.len())
            .any(|window| window.eq_ignore_ascii_case(EVENT_STREAM))
    })
}

/// Whether an answer is a stream of server-sent events.
pub(super) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|value| {
        let value = value.as_bytes().trim_ascii_start();
        value.len() >= EVENT_STREAM.len() && value[..EVENT_STREAM.len()].eq_ignore_ascii_case(EVENT_STREAM)
    })
}

/// `TE: trailers` when the client sent it (RFC 9110 §10.1.4): the only TE
/// a proxy passes on, and what tells a gRPC server the path keeps trailers.
pub(super) fn keep_trailers_te(incoming: &HeaderMap, outgoing: &mut HeaderMap) {
    let asks_for_trailers = incoming
        .get_all(TE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| {
            token
                .split(';')
                .next()
                .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("trailers"))
        });
    if asks_for_trailers {
        outgoing.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// The serving side's `101 Switching Protocols`, passed to the client with
/// its `Upgrade`; both connections are then joined byte for byte until
/// either side closes.
pub(super) fn switch_protocols(
    client: OnUpgrade,
    mut answer: Response<crate::upstream::UpstreamBody>,
    upstream: String,
) -> Response<ResponseBody> {
    let upstream_side = hyper::upgrade::on(&mut answer);
    let (mut head, _) = answer.into_parts();
    let protocol = head.headers.get(UPGRADE).cloned();
    super::strip_hop_by_hop(&mut head.headers);
    if let Some(protocol) = protocol {
        ask_to_upgrade(&mut head.headers, protocol);
    }
    head.version = Version::HTTP_11;
    tokio::spawn(async move {
        let (client, server) = match tokio::join!(client, upstream_side) {
            (Ok(client), Ok(server)) => (client, server),
            (client, server) => {
                let why = client.err().or(server.err()).map(|err| err.to_string());
                debug!(upstream, error = ?why, "an upgraded connection could not be joined");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut server = TokioIo::new(server);
        match tokio::io::copy_bidirectional(&mut client, &mut server).await {
            Ok((sent, received)) => debug!(upstream, sent, received, "upgraded connection closed"),
            Err(err) => debug!(upstream, error = %err, "upgraded connection broke off"),
        }
    });
    let body = Empty::new().map_err(|never| match never {}).boxed_unsync();
    Response::from_parts(head, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn an_upgrade_needs_connection_to_name_it_on_http_1_1() {
        let websocket = headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(
            upgrade_requested(Version::HTTP_11, &websocket),
            Some(HeaderValue::from_static("websocket"))
        );
        assert_eq!(upgrade_requested(Version::HTTP_2, &websocket), None);
        assert_eq!(upgrade_requested(Version::HTTP_10, &websocket), None);
        let unnamed = headers(&[("connection", "keep-alive"), ("upgrade", "websocket")]);
        assert_eq!(upgrade_requested(Version::HTTP_11, &unnamed), None);
        let no_protocol = headers(&[("connection", "upgrade")]);
        assert_eq!(upgrade_requested(Version::HTTP_11, &no_protocol), None);
    }

    #[test]
    fn te_is_passed_on_only_as_trailers() {
        let mut out = HeaderMap::new();
        keep_trailers_te(&headers(&[("te", "gzip, trailers;q=0.5")]), &mut out);
        assert_eq!(out[TE], "trailers");
        let mut out = HeaderMap::new();
        keep_trailers_te(&headers(&[("te", "gzip, deflate")]), &mut out);
        assert!(out.get(TE).is_none());
        let mut out = HeaderMap::new();
        keep_trailers_te(&headers(&[("te", "nottrailers")]), &mut out);
        assert!(out.get(TE).is_none());
    }

    #[test]
    fn event_streams_are_known_by_accept_and_by_content_type() {
        assert!(wants_event_stream(&headers(&[("accept", "Text/Event-Stream")])));
        assert!(!wants_event_stream(&headers(&[("accept", "application/json")])));
        assert!(is_event_stream(&headers(&[(
            "content-type",
            "text/event-stream; charset=utf-8"
        )])));
        assert!(!is_event_stream(&headers(&[("content-type", "text/plain")])));
    }
}
