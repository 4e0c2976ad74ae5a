//! The header names cutover itself reads, sets or removes. A leaf: it imports
//! nothing of cutover's, so the proxy, the mirror, drift replay and sweeps
//! share the names without importing each other.
//!
//! Must never: name a header a client may set to steer cutover; the markers
//! here are removed from every client request (see [`MARKERS`]).

use http::HeaderName;

/// The header every shadow request carries so the backend can suppress side effects.
pub const SHADOW_MARKER: &str = "x-cutover-shadow";
/// [`SHADOW_MARKER`] parsed once, for the mirrored copy of every request.
pub static SHADOW_MARKER_NAME: HeaderName = HeaderName::from_static(SHADOW_MARKER);
/// Marks a request as a replay of a drifted write.
pub const REPLAY_MARKER: &str = "x-cutover-replay";
/// Marks a request as a sweep's, on both sides.
pub const SWEEP_MARKER: &str = "x-cutover-sweep";
/// Marks a request as a recheck of a divergence group's sample, on both sides.
pub const RECHECK_MARKER: &str = "x-cutover-recheck";

/// Headers only cutover may set. A client's own are removed before either
/// side sees the request: a primary that suppresses side effects on the
/// shadow marker must never do so for real traffic.
pub const MARKERS: [&str; 4] = [SHADOW_MARKER, REPLAY_MARKER, SWEEP_MARKER, RECHECK_MARKER];

/// Hop-by-hop fields (RFC 9110 §7.6.1, plus the legacy `proxy-connection`
/// and `keep-alive`): they belong to one connection, never passed on
/// (fields named in `Connection` are removed too). `Trailer` is not one:
/// it announces the trailers that follow, and HTTP/1.1 sends only those.
pub const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
];

/// The request id cutover passes on, or sets when the client sent none.
pub const REQUEST_ID: &str = "x-request-id";
/// [`REQUEST_ID`] parsed once: a lookup by `&str` parses the name every
/// time, which on the path of every request cost more than the lookup.
pub static REQUEST_ID_NAME: HeaderName = HeaderName::from_static(REQUEST_ID);

/// Whether a field is hop-by-hop ([`HOP_BY_HOP`]); a header name's text is
/// already lowercase, so this compares, without parsing anything.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// Whether a field is one of cutover's own [`MARKERS`].
pub fn is_marker(name: &HeaderName) -> bool {
    MARKERS.contains(&name.as_str())
}
/// Sent with every mirrored and replayed write, so that a shadow applies it once.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
