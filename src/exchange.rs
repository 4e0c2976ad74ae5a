//! One observed request: what was captured of it and of both answers, and
//! the outcome vocabulary shared by metrics, store and report.
//!
//! Must never: hold more than `[mirror] max_body` of any one body, or grow
//! a new outcome or reason without its label being added here (labels are a
//! public interface: dashboards and reports read them).

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

/// Why an exchange was not compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// A request or response body exceeded `[mirror] max_body`.
    BodyTooLarge,
    /// Per-route sampling left this request out.
    SampledOut,
    /// The mirror queue (count or byte budget) was full.
    QueueFull,
    /// The shadow's `rate_limit` had no token for this read.
    RateLimited,
    /// The route's policy does not mirror this request.
    MirrorOff,
    /// The client went away before the primary's answer was complete.
    ClientDisconnected,
    /// A body could not be decoded (corrupt or unsupported encoding, bad charset, too large decoded).
    Incomparable,
    /// The request or the primary's answer held an ID the ID map does not know.
    UnmappedId,
    /// A write held back from the shadow because an earlier write to the
    /// same entity drifted; it waits in the ledger for replay, in order.
    HeldByDrift,
    /// The mirror already had `[mirror] max_in_flight` requests outstanding
    /// to the side this read would have gone to (a slow or stalled shadow).
    InFlightFull,
    /// A protocol upgrade (WebSocket and the like): the connection is
    /// handed to the serving side as a tunnel, never mirrored.
    Upgrade,
    /// A stream with no end to compare (server-sent events): passed
    /// through as it comes, never mirrored.
    Streaming,
}

impl SkipReason {
    pub const ALL: [SkipReason; 12] = [
        SkipReason::BodyTooLarge,
        SkipReason::SampledOut,
        SkipReason::QueueFull,
        SkipReason::RateLimited,
        SkipReason::MirrorOff,
        SkipReason::ClientDisconnected,
        SkipReason::Incomparable,
        SkipReason::UnmappedId,
        SkipReason::HeldByDrift,
        SkipReason::InFlightFull,
        SkipReason::Upgrade,
        SkipReason::Streaming,
    ];

    pub fn label(self) -> &'static str {
        match self {
            SkipReason::BodyTooLarge => "body_too_large",
            SkipReason::SampledOut => "sampled_out",
            SkipReason::QueueFull => "queue_full",
            SkipReason::RateLimited => "rate_limited",
            SkipReason::MirrorOff => "mirror_off",
            SkipReason::ClientDisconnected => "client_disconnected",
            SkipReason::Incomparable => "incomparable",
            SkipReason::UnmappedId => "unmapped_id",
            SkipReason::HeldByDrift => "held_by_drift",
            SkipReason::InFlightFull => "in_flight_full",
            SkipReason::Upgrade => "upgrade",
            SkipReason::Streaming => "streaming",
        }
    }
}

/// The outcome of one request: every request gets exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Match,
    Diverged,
    ShadowError,
    PrimaryError,
    BothError,
    /// Diverged, then agreed when both sides were asked again (`recheck`).
    Transient,
    /// Diverged while a write to the same data was still pending on the
    /// shadow (or ran during the read): the difference may be timing.
    Racy,
    Skipped(SkipReason),
}

impl Outcome {
    /// The `outcome` label: skipped outcomes share one label, their reason
    /// is counted separately (`cutover_mirror_dropped_total{reason}`).
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Match => "match",
            Outcome::Diverged => "diverged",
            Outcome::ShadowError => "shadow_error",
            Outcome::PrimaryError => "primary_error",
            Outcome::BothError => "both_error",
            Outcome::Transient => "transient",
            Outcome::Racy => "racy",
            Outcome::Skipped(_) => "skipped",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Skipped(reason) => write!(f, "skipped ({})", reason.label()),
            other => f.write_str(other.label()),
        }
    }
}

/// A bounded method label: the standard methods by name, anything else `OTHER`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

/// The client's request as sent to both sides. A clone shares the body's
/// bytes.
#[derive(Debug, Clone)]
pub struct CapturedRequest {
    pub method: Method,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One side's complete answer.
#[derive(Debug)]
pub struct CapturedResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// From sending the request to the last byte of the body.
    pub elapsed: Duration,
}

/// Why a saved response could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SavedResponseError {
    #[error("the HTTP head is malformed: {0}")]
    Malformed(String),
    #[error("the HTTP head is incomplete (no blank line after the headers)")]
    Incomplete,
    #[error("status {0} is not a valid HTTP status")]
    Status(u16),
    #[error("header {0:?} is not valid")]
    Header(String),
}

impl CapturedResponse {
    /// Reads a saved answer: a raw HTTP/1.x response (status line, headers,
    /// blank line, body) or, when the bytes do not start with `HTTP/`, a
    /// bare body with status 200 and no headers (its kind is sniffed).
    pub fn from_saved(bytes: &[u8]) -> Result<CapturedResponse, SavedResponseError> {
        if !bytes.starts_with(b"HTTP/") {
            return Ok(CapturedResponse {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: Bytes::copy_from_slice(bytes),
                elapsed: Duration::ZERO,
            });
        }
        let mut slots = [httparse::EMPTY_HEADER; 128];
        let mut head = httparse::Response::new(&mut slots);
        let body_start = match head.parse(bytes) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Err(SavedResponseError::Incomplete),
            Err(err) => return Err(SavedResponseError::Malformed(err.to_string())),
        };
        let code = head.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| SavedResponseError::Status(code))?;
        let mut headers = HeaderMap::new();
        for header in head.headers.iter() {
            let name = http::HeaderName::from_bytes(header.name.as_bytes())
                .map_err(|_| SavedResponseError::Header(header.name.to_string()))?;
            let value = http::HeaderValue::from_bytes(header.value)
                .map_err(|_| SavedResponseError::Header(header.name.to_string()))?;
            headers.append(name, value);
        }
        Ok(CapturedResponse {
            status,
            headers,
            body: Bytes::copy_from_slice(&bytes[body_start..]),
            elapsed: Duration::ZERO,
        })
    }
}

/// Why an upstream gave no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    Connect,
    Timeout,
    /// The upstream broke the protocol or the connection mid-answer.
    Protocol,
    /// The body broke off or could not be read.
    Body,
}

impl FailureKind {
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Protocol => "protocol",
            FailureKind::Body => "body",
        }
    }
}

/// Where a compared request came from. Its label is the store's `source`
/// column, which the report and the dashboard filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A client's request.
    Traffic,
    /// A read-back after a mirrored write (`[route.verify]`).
    Verify,
    /// A synthetic read of a `[[sweep]]`: counted apart from the clients' traffic.
    Sweep,
    /// A request of a capture sent by `cutover replay`.
    Replay,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Traffic => "traffic",
            Source::Verify => "verify",
            Source::Sweep => "sweep",
            Source::Replay => "replay",
        }
    }
}

/// What one side produced for an exchange.
#[derive(Debug)]
pub enum SideResult {
    Complete(CapturedResponse),
    /// The answer came but its body was not captured: too large, no room
    /// in the queue's byte budget, or the request was not mirrored at all.
    Uncaptured {
        status: StatusCode,
        elapsed: Duration,
        reason: SkipReason,
    },
    Failed {
        kind: FailureKind,
        message: String,
        elapsed: Duration,
    },
    /// The client left before this side's answer was complete.
    Abandoned,
    /// This side was never asked (see the reason).
    NotAsked(SkipReason),
}

impl SideResult {
    /// Whether the side failed: no answer at all, or a 5xx.
    pub fn is_error(&self) -> bool {
        match self {
            SideResult::Complete(resp) => resp.status.is_server_error(),
            SideResult::Uncaptured { status, .. } => status.is_server_error(),
            SideResult::Failed { .. } => true,
            SideResult::Abandoned | SideResult::NotAsked(_) => false,
        }
    }

    pub fn elapsed(&self) -> Option<Duration> {
        match self {
            SideResult::Complete(resp) => Some(resp.elapsed),
            SideResult::Uncaptured { elapsed, .. } | SideResult::Failed { elapsed, .. } => Some(*elapsed),
            SideResult::Abandoned | SideResult::NotAsked(_) => None,
        }
    }
}

/// How much a difference matters: set by rules, defaulted by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }

    pub fn parse(text: &str) -> Option<Severity> {
        match text {
            "low" => Some(Severity::Low),
            "medium" => Some(Severity::Medium),
            "high" => Some(Severity::High),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One of the two deployments, whatever the mode: the primary is the one
/// configured as `[primary]` (legacy), the shadow the `[shadow]` (candidate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Primary,
    #[default]
    Shadow,
}

impl Side {
    /// How the store, the report and the metrics name the side.
    pub fn label(self) -> &'static str {
        match self {
            Side::Primary => "primary",
            Side::Shadow => "shadow",
        }
    }

    pub fn other(self) -> Side {
        match self {
            Side::Primary => Side::Shadow,
            Side::Shadow => Side::Primary,
        }
    }

    /// (primary's, shadow's) from (this side's, the other side's).
    pub fn arrange<T>(self, this: T, other: T) -> (T, T) {
        match self {
            Side::Primary => (this, other),
            Side::Shadow => (other, this),
        }
    }
}

/// One pair: the same entity's ID on each side.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdPair {
    pub kind: String,
    pub primary_id: String,
    pub shadow_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_keep_the_labels_the_store_and_report_filter_on() {
        let labels: Vec<&str> = [Source::Traffic, Source::Verify, Source::Sweep, Source::Replay]
            .iter()
            .map(|source| source.label())
            .collect();
        assert_eq!(labels, ["traffic", "verify", "sweep", "replay"]);
    }

    #[test]
    fn labels_are_the_public_vocabulary() {
        let labels: Vec<_> = SkipReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(
            labels,
            [
                "body_too_large",
                "sampled_out",
                "queue_full",
                "rate_limited",
                "mirror_off",
                "client_disconnected",
                "incomparable",
                "unmapped_id",
                "held_by_drift",
                "in_flight_full",
                "upgrade",
                "streaming"
            ]
        );
        assert_eq!(Outcome::Skipped(SkipReason::QueueFull).label(), "skipped");
        assert_eq!(Outcome::BothError.to_string(), "both_error");
        assert_eq!(method_label(&Method::from_bytes(b"PROPFIND").unwrap()), "OTHER");
    }

    #[test]
    fn saved_responses_are_raw_http_or_bare_bodies() {
        let raw = CapturedResponse::from_saved(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nX-A: 1\r\n\r\n{\"e\":1}",
        )
        .unwrap();
        assert_eq!(raw.status, StatusCode::NOT_FOUND);
        assert_eq!(raw.headers["content-type"], "application/json");
        assert_eq!(raw.body, "{\"e\":1}");
        let bare = CapturedResponse::from_saved(b"{\"a\":1}").unwrap();
        assert_eq!((bare.status, bare.headers.len()), (StatusCode::OK, 0));
        assert_eq!(
            CapturedResponse::from_saved(b"HTTP/1.1 200 OK\r\nX: 1\r\n").unwrap_err(),
            SavedResponseError::Incomplete
        );
        assert!(matches!(
            CapturedResponse::from_saved(b"HTTP/1.1 abc\r\n\r\n"),
            Err(SavedResponseError::Malformed(_))
        ));
        assert_eq!(
            CapturedResponse::from_saved(b"HTTP/1.1 099 Odd\r\n\r\n").unwrap_err(),
            SavedResponseError::Status(99)
        );
    }

    #[test]
    fn a_5xx_answer_is_an_error_and_a_4xx_is_not() {
        let answer = |status: u16| {
            SideResult::Complete(CapturedResponse {
                status: StatusCode::from_u16(status).unwrap(),
                headers: HeaderMap::new(),
                body: Bytes::new(),
                elapsed: Duration::ZERO,
            })
        };
        assert!(answer(503).is_error());
        assert!(!answer(404).is_error());
        assert!(!SideResult::Abandoned.is_error());
    }
}
