//! The write ledger's vocabulary: one mirrored write as it is kept, why a
//! write drifted, the request a replay sends again, and the order writes
//! are kept in.
//!
//! Must never: hold a secret in the clear (a request that carries one is
//! sealed, see [`crate::seal`]), or do I/O.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::exchange::{IdPair, Side};

/// Where a mirrored write stands in the ledger; the label is the
/// `write_ledger.state` column and what the API and `drift list` show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedgerState {
    /// Sent, or about to be, and not yet answered.
    Pending,
    /// Both sides agree on whether the write was applied.
    Ok,
    /// One side has the write and the other does not (or it is unknown).
    Drift,
    /// Claimed by a replay in progress.
    Replaying,
    /// A replay brought the sides back together.
    Reconciled,
}

impl LedgerState {
    pub const ALL: [LedgerState; 5] = [
        LedgerState::Pending,
        LedgerState::Ok,
        LedgerState::Drift,
        LedgerState::Replaying,
        LedgerState::Reconciled,
    ];

    pub fn label(self) -> &'static str {
        match self {
            LedgerState::Pending => "pending",
            LedgerState::Ok => "ok",
            LedgerState::Drift => "drift",
            LedgerState::Replaying => "replaying",
            LedgerState::Reconciled => "reconciled",
        }
    }

    /// The state a label names, if any.
    pub fn parse(label: &str) -> Option<LedgerState> {
        LedgerState::ALL.into_iter().find(|state| state.label() == label)
    }
}

impl std::fmt::Display for LedgerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// One mirrored write, as the ledger keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRecord {
    pub entity: Option<String>,
    pub primary_status: Option<i64>,
    pub shadow_status: Option<i64>,
    pub primary_ms: Option<f64>,
    pub shadow_ms: Option<f64>,
    pub state: LedgerState,
    pub attempts: i64,
    /// JSON: why it drifted and what a replay needs (see the drift module).
    pub replay: Option<String>,
    /// The order the write reached (or would have reached) the shadow; replay follows it.
    pub seq: i64,
    /// The key of a dual-write's row written before it was sent (the store's intent record).
    pub intent: Option<String>,
}

/// What a mirrored write leaves besides its exchange row.
#[derive(Debug, Clone)]
pub struct WriteFacts {
    pub ledger: LedgerRecord,
    pub learned: Vec<IdPair>,
}

/// Why a write drifted, and the request a replay sends (absent when the
/// write could not be kept, e.g. its body was over `max_body`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftDetail {
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<ReplayRequest>,
    /// Why no request was kept to replay, when none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_replayable: Option<String>,
}

/// A write as the primary received it, secrets left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayRequest {
    pub method: String,
    /// The primary-side path and query (IDs untranslated). Exactly as sent,
    /// unless the request carried a secret: then redacted, for people to
    /// read, and the real one is in `sealed`.
    pub path: String,
    /// Headers to send again (secret, framing and hop-by-hop headers left out).
    pub headers: Vec<(String, String)>,
    /// The body exactly as sent; empty when it is in `sealed`.
    pub body_base64: String,
    /// A request that carried a secret: its [`Sealed`] path and body,
    /// sealed under `CUTOVER_REPLAY_KEY` ([`crate::seal`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    pub idempotency_key: String,
    /// What the side that served the client answered.
    pub served_status: Option<u16>,
    /// IDs the serving side created (per `learn_ids` kind), to pair with the replay's answer.
    #[serde(default)]
    pub created_ids: Vec<(String, Vec<String>)>,
    /// The side the write is replayed to: the one that missed it.
    #[serde(default)]
    pub target: Side,
}

/// The part of a replayed request that is sealed when it holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub path: String,
    pub body_base64: String,
}

impl ReplayRequest {
    pub fn body(&self) -> Bytes {
        decode_body(&self.body_base64)
    }

    /// The path and body to send: as kept, or opened from `sealed`.
    pub fn to_send(&self, seal: Option<&crate::seal::SealKey>) -> Result<(String, Bytes), String> {
        let Some(sealed) = &self.sealed else {
            return Ok((self.path.clone(), self.body()));
        };
        let key = seal.ok_or_else(|| {
            format!(
                "its request carries a secret and is sealed; set {} to the key it was sealed with",
                crate::seal::REPLAY_KEY_ENV
            )
        })?;
        let opened = key
            .open(sealed)
            .map_err(|err| format!("its sealed request {err} ({})", crate::seal::REPLAY_KEY_ENV))?;
        let inner: Sealed =
            serde_json::from_slice(&opened).map_err(|err| format!("its sealed request is not readable: {err}"))?;
        Ok((inner.path, decode_body(&inner.body_base64)))
    }

    pub fn encode_body(body: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(body)
    }
}

fn decode_body(text: &str) -> Bytes {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map(Bytes::from)
        .unwrap_or_default()
}

/// Request headers a replay never copies: the body is sent anew, so its
/// framing is the client library's, not the original's (a kept
/// Content-Length would not match a body translated through the ID map).
pub const NOT_REPLAYED_HEADERS: [&str; 3] = ["host", "content-length", "transfer-encoding"];

/// Whether a status counts as the write having been applied.
pub fn applied(status: Option<u16>) -> bool {
    status.is_some_and(|status| (200..300).contains(&status))
}

/// The ledger's order of writes: a hybrid clock (microseconds since the
/// epoch, bumped past the last value handed out), so it increases within a
/// process and across restarts as long as the wall clock does not step back.
pub fn next_order() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX));
    let previous = LAST
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| Some(now.max(last + 1)))
        .unwrap_or(0);
    now.max(previous + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ledger_state_parses_back_from_its_label() {
        for state in LedgerState::ALL {
            assert_eq!(LedgerState::parse(state.label()), Some(state));
            assert_eq!(serde_json::to_value(state).unwrap(), state.label());
        }
        assert_eq!(LedgerState::parse("Drift"), None);
    }

    #[test]
    fn the_ledger_order_always_increases() {
        let mut last = 0;
        for _ in 0..10_000 {
            let next = next_order();
            assert!(next > last);
            last = next;
        }
    }

    #[test]
    fn replay_details_round_trip_and_bodies_survive_any_bytes() {
        let detail = DriftDetail {
            reason: "shadow unreachable after 3 tries".into(),
            request: Some(ReplayRequest {
                method: "PATCH".into(),
                path: "/api/task/p1".into(),
                headers: vec![("content-type".into(), "application/json".into())],
                body_base64: ReplayRequest::encode_body(&[0, 159, 146, 150]),
                sealed: None,
                idempotency_key: "cutover-abc".into(),
                served_status: Some(200),
                created_ids: vec![("tasks".into(), vec!["p1".into()])],
                target: Side::Primary,
            }),
            not_replayable: None,
        };
        let text = serde_json::to_string(&detail).unwrap();
        let back: DriftDetail = serde_json::from_str(&text).unwrap();
        assert_eq!(back, detail);
        assert_eq!(back.request.unwrap().body(), Bytes::from_static(&[0, 159, 146, 150]));
        let unreplayable: DriftDetail = serde_json::from_str(r#"{"reason":"body over max_body"}"#).unwrap();
        assert_eq!(unreplayable.request, None);
    }

    #[test]
    fn success_is_a_2xx() {
        assert!(applied(Some(201)));
        assert!(!applied(Some(409)));
        assert!(!applied(None));
    }
}
