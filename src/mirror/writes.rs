//! Dual-write: a write on a `dual-write` route goes to the shadow after the
//! primary has answered, in the primary's order per entity, with its IDs
//! translated and an `Idempotency-Key`; retried on connection errors and
//! 502/503/504; the IDs it created are paired; the ledger keeps every
//! write, and what one side applied and the other did not as drift, with
//! what a replay needs.
//!
//! Must never: send a write to the shadow before the primary has answered
//! it, send a later write to an entity before an earlier one, or let a
//! write the shadow missed go unrecorded.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use tokio::sync::oneshot;
use tracing::warn;

use super::{Job, LearningGuard, Mirror, PrimaryDone};
use crate::exchange::{method_label, CapturedRequest, FailureKind, Outcome, SideResult, SkipReason};
use crate::headers::IDEMPOTENCY_KEY;
use crate::idmap::{IdPair, Side};
use crate::ledger::{applied, DriftDetail, ReplayRequest, WriteFacts};
use crate::record::{millis_of, status_of, DirectRequest, Exchange};
use crate::route::WriteRules;
use crate::store::{Commit, IntentRecord, LedgerRecord, LedgerState, Record};

/// Why a write left pending by a run that ended is drift at the next start.
const IN_DOUBT_AT_RESTART: &str =
    "unclean_restart: cutover ended before this write reached the other side or was answered there; \
     whether it was applied there is unknown";

/// How long a write waits for its ledger row to be committed while the
/// store is healthy (a failing store holds no write back: the record waits
/// in the writer's buffer, counted).
const DURABLE_WAIT: Duration = Duration::from_secs(2);

/// The first retry's delay; each next one doubles, plus up to 50% jitter.
const RETRY_BASE: Duration = Duration::from_millis(100);

impl Mirror {
    /// One mirrored write, from the serving side's answer to its ledger row
    /// settled and the exchange handed to the workers. (Long on purpose:
    /// every way out settles the write's ledger row, and keeping the exits
    /// side by side is what shows that none is missed.)
    pub(super) async fn run_write(
        self: Arc<Self>,
        job: Job,
        served_rx: oneshot::Receiver<PrimaryDone>,
        learning: Option<LearningGuard>,
    ) {
        let Job {
            ticket,
            request_id,
            route,
            rules,
            writes,
            entity,
            request,
            shadow_headers,
            mut reservation,
            started_at,
            serving,
        } = job;
        let (served, held, pending) = served_rx.await.unwrap_or((SideResult::Abandoned, None, None));
        if let Some(held) = held {
            reservation.absorb(held);
        }
        let mirrored_to = serving.other();
        let direct = DirectRequest {
            request_id: request_id.clone(),
            route: route.clone(),
            method: method_label(&request.method),
            path_and_query: request.path_and_query.clone(),
            started_at,
            lost_write: None,
            serving,
        };
        let served_status = status_of(&served).and_then(|status| u16::try_from(status).ok());
        let idempotency_key = idempotency_key(&request, &request_id);
        let mut pending = pending;
        let seq = pending
            .as_mut()
            .map_or_else(crate::ledger::next_order, |pending| pending.order());
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        let intent = format!("{}#{seq}", self.run);
        let ledger = |state: LedgerState, mirrored: Option<&SideResult>, attempts: i64, replay: Option<String>| {
            let (primary, shadow) = serving.arrange(Some(&served), mirrored);
            LedgerRecord {
                seq,
                entity: entity.clone(),
                primary_status: primary.and_then(status_of),
                shadow_status: shadow.and_then(status_of),
                primary_ms: primary.and_then(millis_of),
                shadow_ms: shadow.and_then(millis_of),
                state,
                attempts,
                replay,
                intent: Some(intent.clone()),
            }
        };
        let failed_outcome = match serving {
            Side::Primary => Outcome::PrimaryError,
            Side::Shadow => Outcome::ShadowError,
        };

        if served.is_error() && !writes.mirror_failed_writes {
            // Neither side applied it (the other never saw it): consistent.
            let row = ledger(LedgerState::Ok, None, 0, None);
            self.recorder
                .record_unmirrored(&direct, &served, failed_outcome, Some(row));
            return;
        }
        let detail = |reason: &str, created: Vec<(String, Vec<String>)>| {
            self.replay_detail(reason, &request, &idempotency_key, served_status, created, mirrored_to)
        };
        if matches!(served, SideResult::Abandoned) {
            let row = ledger(
                LedgerState::Drift,
                None,
                0,
                Some(detail(
                    "the client left before the serving side's answer was complete: whether it applied the write is unknown",
                    Vec::new(),
                )),
            );
            self.drifted_write(&direct, entity.as_deref());
            self.recorder.record_unmirrored(
                &direct,
                &served,
                Outcome::Skipped(SkipReason::ClientDisconnected),
                Some(row),
            );
            return;
        }
        let created = created_ids(&writes, serving, &served);
        let Some(mut pending) = pending else {
            return;
        };
        // In the ledger before it waits its turn and goes out: if cutover
        // dies before the answer, the next start finds it pending and calls
        // it drift (every path from here settles the row).
        let in_doubt = detail(IN_DOUBT_AT_RESTART, created.clone());
        let intent_row = |row: LedgerRecord, learned_ids: Vec<IdPair>| IntentRecord {
            instance: self.instance.clone(),
            at_ms: crate::clock::unix_ms(started_at),
            route: route.clone(),
            method: direct.method.to_string(),
            path: self.recorder.redactor().path(&direct.path_and_query),
            ledger: row,
            learned_ids,
        };
        self.durable(intent_row(
            ledger(LedgerState::Pending, None, 0, Some(in_doubt)),
            Vec::new(),
        ))
        .await;
        pending.wait_turn().await;
        let held_by = entity.as_ref().filter(|entity| self.is_held(entity));
        if let Some(entity) = held_by {
            let row = ledger(
                LedgerState::Drift,
                None,
                0,
                Some(detail(&format!("held: an earlier write to {entity} drifted"), created)),
            );
            pending.finish();
            self.drifted_write(&direct, None);
            self.recorder
                .record_unmirrored(&direct, &served, Outcome::Skipped(SkipReason::HeldByDrift), Some(row));
            return;
        }
        if let Some(limiter) = self.rate_limit.as_ref().filter(|_| mirrored_to == Side::Shadow) {
            tokio::time::sleep(limiter.reserve()).await;
        }
        let ((mirrored_request, mut headers), unmapped) =
            self.translate(&writes, &request, shadow_headers, mirrored_to).await;
        if let Ok(key) = HeaderValue::from_str(&idempotency_key) {
            headers.insert(IDEMPOTENCY_KEY, key);
        }
        let (mirrored, attempts, mirrored_reservation) = self.send_write(mirrored_to, &mirrored_request, headers).await;
        reservation.absorb(mirrored_reservation);
        let learned = self.learn(&writes, serving, &created, &mirrored, &request_id, &route);

        let mirrored_status = status_of(&mirrored).and_then(|status| u16::try_from(status).ok());
        let drifted = applied(served_status) != applied(mirrored_status);
        let row = if drifted {
            let reason = drift_reason(serving, served_status, &mirrored, mirrored_status, attempts);
            let detail = detail(&reason, created.clone());
            // A write the other side never got (no answer, or 5xx after the
            // retries) may still be applied by a replay, so later writes to
            // its entity wait behind it. One it answered and refused is a
            // difference in behaviour: a replay would be refused again, and
            // holding later writes would only make the states drift apart.
            let undelivered = mirrored.is_error() || matches!(mirrored, SideResult::Abandoned);
            self.drifted_write(&direct, entity.as_deref().filter(|_| undelivered));
            ledger(LedgerState::Drift, Some(&mirrored), i64::from(attempts), Some(detail))
        } else {
            ledger(LedgerState::Ok, Some(&mirrored), i64::from(attempts), None)
        };
        // Later writes to the entity may now be translated and sent: the
        // answer and the pairs it taught are in the map, and in the store.
        self.durable(intent_row(row.clone(), learned.clone())).await;
        drop(learning);
        pending.finish();
        if !drifted && applied(served_status) {
            if let Some(verify) = &writes.verify {
                let in_primary_space = self.in_primary_space(serving, &created);
                let params = self.verify_values(&writes, &request, &in_primary_space);
                tokio::spawn(Arc::clone(&self).verify(verify.clone(), params, request_id.clone()));
            }
        }
        let (primary, shadow) = serving.arrange(served, mirrored);
        let exchange = Exchange {
            request_id,
            route,
            started_at,
            request,
            primary,
            shadow,
            shadow_repeat: None,
            rules,
            write_epoch: 0,
            reservation,
            source: self.source,
            unmapped,
            racy: false,
            write: Some(WriteFacts { ledger: row, learned }),
            served: Some(serving),
            resend: None,
        };
        self.hand_to_workers(exchange, ticket);
    }

    /// IDs created by the serving side, as the primary's IDs (for read-backs).
    fn in_primary_space(&self, serving: Side, created: &[(String, Vec<String>)]) -> Vec<(String, Vec<String>)> {
        match serving {
            Side::Primary => created.to_vec(),
            Side::Shadow => created
                .iter()
                .map(|(kind, ids)| {
                    let ids = ids.iter().filter_map(|id| self.ids.lookup_primary(kind, id)).collect();
                    (kind.clone(), ids)
                })
                .collect(),
        }
    }

    fn is_held(&self, entity: &str) -> bool {
        self.drifted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(entity)
    }

    /// Counts a drifted write and holds its entity's later writes.
    fn drifted_write(&self, request: &DirectRequest, entity: Option<&str>) {
        self.metrics.record_drift(&request.route);
        warn!(request_id = %request.request_id, route = %request.route, "write drifted: kept in the ledger for replay");
        if let Some(entity) = entity {
            self.recorder.hold(entity);
        }
    }

    /// Sends a write to the shadow, retrying connection errors and
    /// 502/503/504 with exponential backoff and jitter.
    async fn send_write(
        &self,
        to: Side,
        request: &CapturedRequest,
        headers: HeaderMap,
    ) -> (SideResult, u32, super::Reservation) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (result, reservation) = self.call(to, request, headers.clone()).await;
            let retry = match &result {
                SideResult::Failed {
                    kind: FailureKind::Connect,
                    ..
                } => true,
                SideResult::Complete(response) => matches!(response.status.as_u16(), 502..=504),
                SideResult::Uncaptured { status, .. } => matches!(status.as_u16(), 502..=504),
                _ => false,
            };
            if !retry || attempt >= self.write_tries {
                return (result, attempt, reservation);
            }
            drop(reservation);
            let backoff = RETRY_BASE * 2u32.saturating_pow(attempt - 1);
            tokio::time::sleep(backoff + backoff.mul_f64(rand::random::<f64>() * 0.5)).await;
        }
    }

    /// Queues a ledger row and waits for its commit (group commit: the
    /// client is answered already, and writes to other entities go on).
    async fn durable(&self, intent: IntentRecord) {
        let written = self
            .recorder
            .writer()
            .write_durably(Record::Intent(intent), DURABLE_WAIT)
            .await;
        if written == Commit::Late {
            warn!("a dual-write's ledger row was not committed within 2s; the write goes on");
        }
    }

    /// Pairs the IDs the serving side created with the other side's, into the map.
    fn learn(
        &self,
        writes: &WriteRules,
        serving: Side,
        created: &[(String, Vec<String>)],
        mirrored: &SideResult,
        request_id: &str,
        route: &str,
    ) -> Vec<IdPair> {
        let SideResult::Complete(answer) = mirrored else {
            return Vec::new();
        };
        if writes.learn.is_empty() || !answer.status.is_success() {
            return Vec::new();
        }
        let Some(document) = json_of(answer) else {
            return Vec::new();
        };
        let mut learned = Vec::new();
        for rule in &writes.learn {
            let Some((_, served_ids)) = created.iter().find(|(kind, _)| *kind == rule.kind) else {
                continue;
            };
            let other_ids = rule.ids_of(serving.other(), &document);
            let pairs = match serving {
                Side::Primary => rule.pair_ids(served_ids, other_ids),
                Side::Shadow => rule.pair_ids(&other_ids, served_ids.clone()),
            };
            match pairs {
                Ok(pairs) => {
                    for pair in pairs {
                        match self.ids.insert(&pair) {
                            Ok(true) => learned.push(pair),
                            Ok(false) => {}
                            Err(err) => warn!(request_id, route, error = %err, "ID pair not learned"),
                        }
                    }
                }
                Err(message) => warn!(request_id, route, %message, "ID pair not learned"),
            }
        }
        if !learned.is_empty() {
            // Other instances read them from the store: the settled intent
            // writes them before this entity's next write goes out.
            self.metrics.set_idmap_entries(&self.ids.counts());
        }
        learned
    }

    /// What a replay of this write needs, as the ledger keeps it: secret
    /// and framing headers left out, path and body exactly as sent. A
    /// request with a secret in its query or body is sealed under the
    /// replay key, or, without one, kept as not replayable with the reason:
    /// it is never kept redacted, since a replay would send the placeholder.
    fn replay_detail(
        &self,
        reason: &str,
        request: &CapturedRequest,
        idempotency_key: &str,
        served_status: Option<u16>,
        created_ids: Vec<(String, Vec<String>)>,
        target: Side,
    ) -> String {
        let redactor = self.recorder.redactor();
        let headers = request
            .headers
            .iter()
            .filter(|(name, _)| {
                !redactor.is_secret_header(name.as_str())
                    && !crate::ledger::NOT_REPLAYED_HEADERS.contains(&name.as_str())
            })
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
            .collect();
        let secret = redactor.secret_in_request(&request.path_and_query, &request.headers, &request.body);
        let mut kept = ReplayRequest {
            method: request.method.to_string(),
            path: request.path_and_query.clone(),
            headers,
            body_base64: ReplayRequest::encode_body(&request.body),
            sealed: None,
            idempotency_key: idempotency_key.to_string(),
            served_status,
            created_ids,
            target,
        };
        let mut not_replayable = None;
        if let Some(secret) = secret {
            let sealed = crate::ledger::Sealed {
                path: std::mem::take(&mut kept.path),
                body_base64: std::mem::take(&mut kept.body_base64),
            };
            kept.path = redactor.path(&request.path_and_query);
            match (redactor.seal(), serde_json::to_vec(&sealed)) {
                (Some(key), Ok(plain)) => kept.sealed = Some(key.seal(&plain)),
                _ => {
                    not_replayable = Some(format!(
                        "not replayable: the request carries {secret}, and without {} it is not kept",
                        crate::seal::REPLAY_KEY_ENV
                    ))
                }
            }
        }
        let detail = DriftDetail {
            reason: reason.to_string(),
            request: not_replayable.is_none().then_some(kept),
            not_replayable,
        };
        serde_json::to_string(&detail).unwrap_or_default()
    }
}

/// The key the shadow can deduplicate retries and replays by: the client's
/// own `Idempotency-Key` when it sent one, else one made from the request ID.
fn idempotency_key(request: &CapturedRequest, request_id: &str) -> String {
    request
        .headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|value| value.to_str().ok())
        .map_or_else(|| format!("cutover-{request_id}"), str::to_string)
}

/// The IDs the serving side's answer created, per `learn_ids` kind.
fn created_ids(writes: &WriteRules, serving: Side, served: &SideResult) -> Vec<(String, Vec<String>)> {
    let SideResult::Complete(answer) = served else {
        return Vec::new();
    };
    if writes.learn.is_empty() {
        return Vec::new();
    }
    let Some(document) = json_of(answer) else {
        return Vec::new();
    };
    writes
        .learn
        .iter()
        .map(|rule| (rule.kind.clone(), rule.ids_of(serving, &document)))
        .filter(|(_, ids)| !ids.is_empty())
        .collect()
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Primary => "primary",
        Side::Shadow => "shadow",
    }
}

fn json_of(answer: &crate::exchange::CapturedResponse) -> Option<serde_json::Value> {
    match crate::compare::decode::decode(&answer.headers, &answer.body, 16 * 1024 * 1024) {
        Ok(crate::compare::decode::Body::Json(document)) => Some(document),
        _ => None,
    }
}

/// Why a mirrored write drifted: the other side failed, or the two sides
/// answered differently.
fn drift_reason(
    serving: Side,
    served_status: Option<u16>,
    mirrored: &SideResult,
    mirrored_status: Option<u16>,
    attempts: u32,
) -> String {
    let mirrored_to = serving.other();
    match mirrored {
        SideResult::Failed { message, .. } => {
            format!(
                "the {} failed after {attempts} tries: {message}",
                side_name(mirrored_to)
            )
        }
        _ => format!(
            "the {} answered {}, the {} {}",
            side_name(serving),
            served_status.map_or("nothing".into(), |s| s.to_string()),
            side_name(mirrored_to),
            mirrored_status.map_or("nothing".into(), |s| s.to_string())
        ),
    }
}
