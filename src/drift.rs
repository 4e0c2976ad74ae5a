//! Drift: mirrored writes that one side applied and the other did not,
//! kept in the write ledger with what it takes to apply them again, and
//! the replay that does so, in the order they happened.
//!
//! A replay sends the write as the serving side saw it to the side that
//! missed it (the shadow, or the primary while the candidate serves),
//! translated through the ID map as it is now (so a create replayed first teaches the pair a later
//! update needs), with the original `Idempotency-Key` (a write that did
//! reach the shadow is not applied twice by a backend that honours it) and
//! with the auth headers configured in `[shadow] replay_headers` (the
//! ledger never holds secrets).
//!
//! Must never: replay a write before an earlier drifted write to the same
//! entity, send a write whose IDs cannot be translated, or store a secret.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Serialize;

use crate::clock::now_ms;
use crate::headers::{IDEMPOTENCY_KEY, REPLAY_MARKER, SHADOW_MARKER};
use crate::idmap::{IdMap, Side};
use crate::ledger::{applied, DriftDetail, LedgerState, ReplayRequest, NOT_REPLAYED_HEADERS};
use crate::route::RouteTable;
use crate::secret::Secret;
use crate::store::{LedgerRow, Store, StoreError};
use crate::upstream::{OutgoingBody, Upstream};

/// A replay claim older than this is taken to be abandoned.
const CLAIM_STALE_MS: i64 = 5 * 60 * 1000;
/// The most of a replay's answer read (to learn IDs from it).
const ANSWER_LIMIT: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("ledger row {0} is not an open drift")]
    NotOpen(i64),
    #[error("ledger row {id} waits for row {earlier} (an earlier drifted write to {entity}); replay that first, or use --all")]
    OutOfOrder { id: i64, earlier: i64, entity: String },
}

/// Which drifted writes to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    All,
    One(i64),
}

/// What happened to one drifted write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replayed {
    pub id: i64,
    pub route: String,
    pub entity: Option<String>,
    /// `reconciled` or still `drift`.
    pub state: LedgerState,
    pub shadow_status: Option<u16>,
    pub message: String,
}

/// Replays drifted writes against the side that missed them.
pub struct Replayer {
    pub shadow: Upstream,
    pub primary: Upstream,
    pub ids: Arc<IdMap>,
    pub routes: RouteTable,
    pub replay_headers: Vec<(HeaderName, Secret)>,
    pub store: Store,
    /// Opens sealed requests (`CUTOVER_REPLAY_KEY`).
    pub seal: Option<crate::seal::SealKey>,
}

impl Replayer {
    /// Replays in ledger order. A write that does not reconcile holds back
    /// the later writes to its entity (they stay `drift`, untouched).
    pub async fn replay(&self, selection: Selection) -> Result<Vec<Replayed>, DriftError> {
        let open = self.store.ledger(Some(LedgerState::Drift), i64::MAX).await?;
        let rows: Vec<&LedgerRow> = match selection {
            Selection::All => open.iter().collect(),
            Selection::One(id) => {
                let row = open.iter().find(|row| row.id == id).ok_or(DriftError::NotOpen(id))?;
                if let Some(entity) = &row.entity {
                    if let Some(earlier) = open
                        .iter()
                        .find(|other| other.id < id && other.entity.as_ref() == Some(entity))
                    {
                        return Err(DriftError::OutOfOrder {
                            id,
                            earlier: earlier.id,
                            entity: entity.clone(),
                        });
                    }
                }
                vec![row]
            }
        };
        let mut held: Vec<String> = Vec::new();
        let mut results = Vec::with_capacity(rows.len());
        for row in rows {
            let result = match row.entity.as_ref().filter(|entity| held.contains(entity)) {
                Some(entity) => Replayed {
                    id: row.id,
                    route: row.route.clone(),
                    entity: row.entity.clone(),
                    state: LedgerState::Drift,
                    shadow_status: None,
                    message: format!("held: an earlier write to {entity} did not reconcile"),
                },
                None => self.replay_one(row).await?,
            };
            if result.state != LedgerState::Reconciled {
                if let Some(entity) = &row.entity {
                    held.push(entity.clone());
                }
            }
            results.push(result);
        }
        let reconciled = results.iter().filter(|r| r.state == LedgerState::Reconciled).count();
        let detail = serde_json::json!({
            "replayed": results.len(),
            "reconciled": reconciled,
            "still_drift": results.len() - reconciled,
        });
        self.store.add_event("drift_replay", &detail, now_ms()).await?;
        Ok(results)
    }

    async fn replay_one(&self, row: &LedgerRow) -> Result<Replayed, DriftError> {
        let mut result = Replayed {
            id: row.id,
            route: row.route.clone(),
            entity: row.entity.clone(),
            state: LedgerState::Drift,
            shadow_status: None,
            message: String::new(),
        };
        // One replayer per row, whichever instance or command asks.
        if !self.store.claim_replay(row.id, now_ms(), CLAIM_STALE_MS).await? {
            result.message = "being replayed elsewhere".into();
            return Ok(result);
        }
        let outcome = self.replay_claimed(row, result).await;
        if outcome.is_err() {
            // Give the row back: a later replay may take it.
            self.store
                .settle_ledger(row.id, LedgerState::Drift, None, now_ms())
                .await?;
        }
        outcome
    }

    async fn replay_claimed(&self, row: &LedgerRow, mut result: Replayed) -> Result<Replayed, DriftError> {
        let detail: Option<DriftDetail> = row.replay.as_deref().and_then(|text| serde_json::from_str(text).ok());
        let Some(request) = detail.as_ref().and_then(|detail| detail.request.as_ref()) else {
            result.message = format!(
                "cannot be replayed ({}); resolve it by hand",
                detail.map_or_else(
                    || "no replay data".to_string(),
                    |detail| detail.not_replayable.unwrap_or(detail.reason)
                )
            );
            return self.still_drift(row, result).await;
        };
        let (sent_path, body) = match request.to_send(self.seal.as_ref()) {
            Ok(opened) => opened,
            Err(message) => {
                result.message = format!("not sent: {message}");
                return self.still_drift(row, result).await;
            }
        };
        let route = self.routes.iter().find(|route| route.name == row.route);
        let translated = match route {
            Some(route) => route
                .writes
                .translation
                .to_side(&self.ids, request.target, &sent_path, &body),
            None => Default::default(),
        };
        if let Some((kind, id)) = translated.unmapped.first() {
            result.message = format!("not sent: {kind} ID {id} has no pair yet");
            return self.still_drift(row, result).await;
        }
        let path = translated.path_and_query.unwrap_or(sent_path);
        let body = translated.body.map(Bytes::from).unwrap_or(body);
        let headers = self.headers_for(request);
        let method = Method::from_bytes(request.method.as_bytes()).unwrap_or(Method::POST);
        let target = match request.target {
            Side::Shadow => &self.shadow,
            Side::Primary => &self.primary,
        };
        let answer = target.send(method, &path, headers, OutgoingBody::from(body)).await;
        let (status, answer_body) = match answer {
            Err(failure) => {
                result.message = format!("{} failed: {}", target.name(), failure.message);
                return self.still_drift(row, result).await;
            }
            Ok(response) => read_answer(response).await,
        };
        result.shadow_status = Some(status);
        let reconciled = applied(Some(status)) == applied(request.served_status);
        if reconciled {
            result.state = LedgerState::Reconciled;
            result.message = format!("{} answered {status}", target.name());
            if let Some(route) = route {
                self.learn(route, request, &answer_body, &mut result).await?;
            }
        } else {
            result.message = format!(
                "{} answered {status}, the side that served {}",
                target.name(),
                request.served_status.map_or("nothing".to_string(), |s| s.to_string())
            );
        }
        self.store
            .settle_ledger(row.id, result.state, Some(i64::from(status)), now_ms())
            .await?;
        Ok(result)
    }

    /// The replayed request's headers: the recorded ones (framing aside),
    /// the side's `replay_headers`, its Idempotency-Key and the markers.
    fn headers_for(&self, request: &ReplayRequest) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in &request.headers {
            if NOT_REPLAYED_HEADERS
                .iter()
                .any(|framing| name.eq_ignore_ascii_case(framing))
            {
                continue;
            }
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                headers.append(name, value);
            }
        }
        for (name, secret) in &self.replay_headers {
            if let Ok(value) = HeaderValue::from_str(secret.expose()) {
                headers.insert(name.clone(), value);
            }
        }
        if let Ok(key) = HeaderValue::from_str(&request.idempotency_key) {
            headers.insert(IDEMPOTENCY_KEY, key);
        }
        headers.insert(SHADOW_MARKER, HeaderValue::from_static("1"));
        headers.insert(REPLAY_MARKER, HeaderValue::from_static("1"));
        headers
    }

    /// A row that still drifts after this try (the result says why).
    async fn still_drift(&self, row: &LedgerRow, result: Replayed) -> Result<Replayed, DriftError> {
        self.store
            .settle_ledger(row.id, LedgerState::Drift, None, now_ms())
            .await?;
        Ok(result)
    }

    /// Pairs the IDs a replayed create produced with the primary's.
    async fn learn(
        &self,
        route: &crate::route::Route,
        request: &ReplayRequest,
        answer: &[u8],
        result: &mut Replayed,
    ) -> Result<(), DriftError> {
        let Ok(document) = serde_json::from_slice::<serde_json::Value>(answer) else {
            return Ok(());
        };
        let mut learned = Vec::new();
        for rule in &route.writes.learn {
            let Some((_, created)) = request.created_ids.iter().find(|(kind, _)| *kind == rule.kind) else {
                continue;
            };
            let answered = rule.ids_of(request.target, &document);
            let pairs = match request.target {
                Side::Shadow => rule.pair_ids(created, answered),
                Side::Primary => rule.pair_ids(&answered, created.clone()),
            };
            match pairs {
                Ok(pairs) => learned.extend(pairs.into_iter().filter(|pair| self.ids.insert(pair).unwrap_or(false))),
                Err(message) => result.message.push_str(&format!("; {message}")),
            }
        }
        if !learned.is_empty() {
            self.store.insert_id_pairs(&learned, "learned", now_ms()).await?;
            result
                .message
                .push_str(&format!("; learned {} ID pair(s)", learned.len()));
        }
        Ok(())
    }
}

/// The status of a replay's answer and its body (up to `ANSWER_LIMIT`;
/// a body that fails or runs past it teaches nothing).
async fn read_answer(response: http::Response<crate::upstream::UpstreamBody>) -> (u16, Vec<u8>) {
    let status = response.status().as_u16();
    let body = match response.into_body().collect_up_to(ANSWER_LIMIT).await {
        Ok((body, false)) => body.to_vec(),
        _ => Vec::new(),
    };
    (status, body)
}
