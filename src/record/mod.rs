//! Record: what becomes of a judged exchange. It judges a mirrored
//! exchange (compare under the route's rules and the ID map), counts its
//! outcome and latencies in the metrics, lets the noise learner see it, and
//! hands a redacted record (row, divergence groups, samples, ledger row,
//! learned ID pairs) to the store writer. Requests that were not mirrored
//! are counted and kept here too, so every request has an outcome.
//!
//! Must never: block (the store writer's `submit` only queues), keep a
//! value the redactor would hide, or count an exchange twice.

mod keep;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tracing::{debug, info, warn};

use crate::budget::Reservation;
use crate::compare::noise::{fingerprint, NoiseLearner};
use crate::compare::rules::CompareRules;
use crate::compare::{self, Context};
use crate::exchange::{method_label, CapturedRequest, Outcome, SideResult, SkipReason, Source};
use crate::idmap::{IdMap, Side};
use crate::ledger::{LedgerRecord, LedgerState, WriteFacts};
use crate::metrics::{shadow_error_kind, Metrics, RouteHandles};
use crate::redact::Redactor;
use crate::route::is_safe;
use crate::store::{ExchangeRecord, Writer};

/// What a comparison thread needs to judge, count and keep an exchange.
pub struct Recorder {
    metrics: Metrics,
    /// Each route's outcome, latency and served series, found once.
    routes: RouteHandles,
    noise: Arc<NoiseLearner>,
    decode_limit: usize,
    writer: Arc<Writer>,
    redactor: Redactor,
    samples_per_group: u32,
    /// Samples built per group so far (the store enforces the cap too).
    sampled: Mutex<HashMap<String, u32>>,
    ids: Arc<IdMap>,
    drifted: Arc<Mutex<HashSet<String>>>,
    source: Source,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

/// What is known of a request that is not mirrored.
#[derive(Debug)]
pub struct DirectRequest {
    pub request_id: String,
    pub route: String,
    pub method: &'static str,
    pub path_and_query: String,
    pub started_at: SystemTime,
    /// A write on a dual-write route that cannot be mirrored (queue full,
    /// body too large): the other side misses it, so the ledger keeps it as drift.
    pub lost_write: Option<LostWrite>,
    /// The side that served the client.
    pub serving: Side,
}

/// A mirrored request with both sides' answers, ready to compare and record.
#[derive(Debug)]
pub struct Exchange {
    pub request_id: String,
    pub route: String,
    pub started_at: SystemTime,
    pub request: CapturedRequest,
    pub primary: SideResult,
    pub shadow: SideResult,
    /// A second shadow answer to the same request (active noise learning).
    pub shadow_repeat: Option<SideResult>,
    /// The route's compare rules.
    pub rules: Arc<CompareRules>,
    /// How many writes the proxy had seen when this request arrived.
    pub write_epoch: u64,
    /// The bytes of the captured bodies, held against `[mirror] max_buffered`
    /// until the exchange is recorded and dropped.
    pub reservation: Reservation,
    /// Where the request came from: a client, a read-back after a write, or a sweep.
    pub source: Source,
    /// IDs in the request with no pair (sent to the shadow unchanged): (kind, primary ID).
    pub unmapped: Vec<(String, String)>,
    /// A read that overlapped a pending shadow write: a divergence is `racy`.
    pub racy: bool,
    /// For a mirrored write: its ledger row and the ID pairs it taught.
    pub write: Option<WriteFacts>,
    /// The side that served the client; none for a request cutover sent
    /// itself (a sweep, a read-back, a verification).
    pub served: Option<Side>,
    /// What each side was sent, kept only for a read on a route whose
    /// compare rules `recheck` a divergence: asking again must send each
    /// side its own IDs, as the first time.
    pub resend: Option<Box<Resend>>,
}

/// The requests (with their headers) a read sent to each side.
#[derive(Debug)]
pub struct Resend {
    pub primary: (CapturedRequest, http::HeaderMap),
    pub shadow: (CapturedRequest, http::HeaderMap),
}

impl Resend {
    /// What a read sent each side, kept only where `rules` recheck a divergence.
    pub fn if_rechecked(
        rules: &CompareRules,
        primary: (&CapturedRequest, &http::HeaderMap),
        shadow: (&CapturedRequest, &http::HeaderMap),
    ) -> Option<Box<Resend>> {
        rules.recheck.map(|_| {
            Box::new(Resend {
                primary: (primary.0.clone(), primary.1.clone()),
                shadow: (shadow.0.clone(), shadow.1.clone()),
            })
        })
    }
}

/// A dual-write the shadow will not get.
#[derive(Debug)]
pub struct LostWrite {
    pub entity: Option<String>,
}

/// What a [`Recorder`] is built from.
pub struct RecorderParts {
    pub metrics: Metrics,
    /// The upstreams' names, as latency metrics label them.
    pub primary_name: String,
    pub shadow_name: String,
    pub noise: Arc<NoiseLearner>,
    /// `[mirror] max_decoded`: the most a body is decoded to.
    pub decode_limit: usize,
    pub writer: Arc<Writer>,
    pub redactor: Redactor,
    /// Samples kept per divergence group.
    pub samples_per_group: u32,
    pub ids: Arc<IdMap>,
    /// Entities with a drifted write (shared with the mirror).
    pub drifted: Arc<Mutex<HashSet<String>>>,
    /// What the requests this instance proxies are: client traffic, or a replayed capture.
    pub source: Source,
}

impl Recorder {
    /// A recorder for one instance; `drifted` is shared with the mirror,
    /// which holds the later writes of each entity in it.
    pub fn new(parts: RecorderParts) -> Recorder {
        Recorder {
            routes: RouteHandles::new(parts.metrics.clone(), &parts.primary_name, &parts.shadow_name),
            metrics: parts.metrics,
            noise: parts.noise,
            decode_limit: parts.decode_limit,
            writer: parts.writer,
            redactor: parts.redactor,
            samples_per_group: parts.samples_per_group,
            sampled: Mutex::new(HashMap::new()),
            ids: parts.ids,
            drifted: parts.drifted,
            source: parts.source,
        }
    }

    /// The store writer records go through.
    pub fn writer(&self) -> &Arc<Writer> {
        &self.writer
    }

    /// What takes secrets out of what is kept.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Judges an exchange: compares both answers under the route's rules
    /// and the ID map; a divergence on a read that overlapped a pending
    /// write is `racy`, and one about an ID with no pair is skipped.
    pub fn judge(&self, exchange: &Exchange) -> compare::Judgement {
        self.judge_as(exchange, false)
    }

    /// As [`Recorder::judge`], for an exchange whose bodies the caller has
    /// already found equal byte for byte (they are not compared again).
    pub fn judge_equal_bodies(&self, exchange: &Exchange) -> compare::Judgement {
        self.judge_as(exchange, true)
    }

    fn judge_as(&self, exchange: &Exchange, bodies_equal: bool) -> compare::Judgement {
        let ctx = Context {
            route: &exchange.route,
            method: &exchange.request.method,
            rules: &exchange.rules,
            ids: &*self.ids,
            decode_limit: self.decode_limit,
            want_patch: false,
            bodies_equal,
        };
        let mut judgement = compare::judge(&exchange.primary, &exchange.shadow, &ctx, self.noise.as_ref());
        match judgement.outcome {
            // The shadow was asked about an ID it may not know: nothing to conclude.
            Outcome::Match | Outcome::Diverged if !exchange.unmapped.is_empty() => {
                judgement.outcome = Outcome::Skipped(SkipReason::UnmappedId);
            }
            Outcome::Diverged if exchange.racy => judgement.outcome = Outcome::Racy,
            _ => {}
        }
        judgement
    }

    /// Counts and keeps the outcome of a request that was not mirrored.
    pub fn record_direct(&self, request: &DirectRequest, result: &SideResult, reason: SkipReason) {
        let outcome = match (result.is_error(), request.serving) {
            (true, Side::Primary) => Outcome::PrimaryError,
            (true, Side::Shadow) => Outcome::ShadowError,
            (false, _) => Outcome::Skipped(reason),
        };
        // A dual-write the other side never got: drift, unless the serving side did not apply it either.
        let ledger = request.lost_write.as_ref().map(|lost| {
            let applied = crate::ledger::applied(status_of(result).and_then(|s| u16::try_from(s).ok()));
            let detail = crate::ledger::DriftDetail {
                reason: format!("not mirrored: {}", reason.label()),
                request: None,
                not_replayable: None,
            };
            let (primary, shadow) = request.serving.arrange(Some(result), None);
            LedgerRecord {
                entity: lost.entity.clone(),
                primary_status: primary.and_then(status_of),
                shadow_status: shadow.and_then(status_of),
                primary_ms: primary.and_then(millis_of),
                shadow_ms: shadow.and_then(millis_of),
                state: if applied { LedgerState::Drift } else { LedgerState::Ok },
                attempts: 0,
                seq: i64::try_from(crate::ledger::next_order()).unwrap_or(i64::MAX),
                replay: applied.then(|| serde_json::to_string(&detail).unwrap_or_default()),
                intent: None,
            }
        });
        if let Some(ledger) = ledger.as_ref().filter(|ledger| ledger.state == LedgerState::Drift) {
            self.metrics.record_drift(&request.route);
            warn!(request_id = %request.request_id, route = %request.route, reason = reason.label(), "a dual-write was not mirrored: drift");
            if let Some(entity) = &ledger.entity {
                self.hold(entity);
            }
        }
        self.record_unmirrored(request, result, outcome, ledger);
    }

    /// Marks an entity as drifted: its later writes are held for replay.
    pub fn hold(&self, entity: &str) {
        self.drifted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(entity.to_string());
    }

    /// Counts and keeps a request whose outcome was decided without a comparison.
    pub fn record_unmirrored(
        &self,
        request: &DirectRequest,
        result: &SideResult,
        outcome: Outcome,
        ledger: Option<LedgerRecord>,
    ) {
        let route = self.routes.route(&request.route);
        if let Some(elapsed) = result.elapsed() {
            route.observe_upstream(request.serving, elapsed.as_secs_f64());
        }
        route.record_outcome(request.method, outcome);
        let (primary, shadow) = request.serving.arrange(Some(result), None);
        self.writer.submit(ExchangeRecord {
            at_ms: crate::clock::unix_ms(request.started_at),
            request_id: request.request_id.clone(),
            route: request.route.clone(),
            method: request.method.to_string(),
            path: self.redactor.path(&request.path_and_query),
            source: self.source.label().into(),
            primary_status: primary.and_then(status_of),
            shadow_status: shadow.and_then(status_of),
            primary_ms: primary.and_then(millis_of),
            shadow_ms: shadow.and_then(millis_of),
            outcome: outcome.label().into(),
            reason: skip_reason(outcome),
            primary_cache: primary.and_then(cache_status),
            shadow_cache: shadow.and_then(cache_status),
            groups: Vec::new(),
            samples: Vec::new(),
            learned_ids: Vec::new(),
            ledger,
            served: request.serving.label().into(),
        });
    }

    /// Counts an exchange's outcome, keeps it, and lets the noise learner see it.
    pub fn record(&self, exchange: &Exchange, judgement: compare::Judgement) {
        self.keep(exchange, &judgement);
        let metrics = &self.metrics;
        let route = self.routes.route(&exchange.route);
        let method = method_label(&exchange.request.method);
        if exchange.source == Source::Sweep {
            // Synthetic: counted apart, so traffic figures stay the clients'.
            metrics.record_sweep(&exchange.route, judgement.outcome);
        } else {
            route.record_outcome(method, judgement.outcome);
        }
        let seconds = |result: &SideResult| result.elapsed().map(|d| d.as_secs_f64());
        let (primary_seconds, shadow_seconds) = (seconds(&exchange.primary), seconds(&exchange.shadow));
        for (side, seconds) in [(Side::Primary, primary_seconds), (Side::Shadow, shadow_seconds)] {
            if let Some(seconds) = seconds {
                route.observe_upstream(side, seconds);
            }
        }
        // Counted here, off the client's path: only mirrored requests say
        // how a part compares (the store's rollups count every request).
        if let Some(served) = exchange.served {
            route.record_served(served, judgement.outcome, primary_seconds, shadow_seconds);
        }
        if exchange.shadow.is_error() {
            let kind = match &exchange.shadow {
                SideResult::Failed { kind, .. } => Some(*kind),
                _ => None,
            };
            metrics.record_shadow_error(&exchange.route, shadow_error_kind(kind));
        }
        for unmapped in judgement.comparison.iter().flat_map(|c| c.unmapped.iter()) {
            metrics.record_unmapped_id(&unmapped.kind);
        }
        for (kind, id) in &exchange.unmapped {
            metrics.record_unmapped_id(kind);
            debug!(request_id = %exchange.request_id, route = %exchange.route, kind, id, "no ID pair: sent to the shadow unchanged");
        }
        if judgement.outcome == Outcome::Diverged {
            let worst = judgement
                .comparison
                .as_ref()
                .and_then(|c| c.differences.iter().map(|d| d.severity).max())
                .unwrap_or(compare::Severity::High);
            metrics.record_divergence(&exchange.route, worst);
        }
        match judgement.outcome {
            Outcome::Diverged => info!(
                request_id = %exchange.request_id,
                route = %exchange.route,
                summary = judgement.summary().as_deref().unwrap_or(""),
                "diverged"
            ),
            outcome => debug!(request_id = %exchange.request_id, route = %exchange.route, %outcome, "compared"),
        }
        if exchange.rules.learn_noise && is_safe(&exchange.request.method) {
            self.learn(exchange, judgement.comparison.and_then(|c| c.primary_document));
        }
    }

    fn learn(&self, exchange: &Exchange, primary_document: Option<serde_json::Value>) {
        if let SideResult::Complete(primary) = &exchange.primary {
            let request = fingerprint(
                exchange.request.method.as_str(),
                &exchange.request.path_and_query,
                &exchange.request.body,
            );
            // The comparison may have judged without parsing (identical answers).
            let document =
                || primary_document.or_else(|| compare::normalized_json(primary, &exchange.rules, self.decode_limit));
            self.noise.observe_primary(
                &exchange.route,
                &exchange.rules,
                request,
                exchange.write_epoch,
                &primary.body,
                document,
            );
        }
        if let (SideResult::Complete(first), Some(SideResult::Complete(second))) =
            (&exchange.shadow, &exchange.shadow_repeat)
        {
            let normalize = |r| compare::normalized_json(r, &exchange.rules, self.decode_limit);
            if let (Some(a), Some(b)) = (normalize(first), normalize(second)) {
                self.noise.observe_shadow_pair(&exchange.route, &exchange.rules, &a, &b);
            }
        }
    }
}

/// The status a side answered with, as the store keeps it.
pub fn status_of(side: &SideResult) -> Option<i64> {
    match side {
        SideResult::Complete(response) => Some(i64::from(response.status.as_u16())),
        SideResult::Uncaptured { status, .. } => Some(i64::from(status.as_u16())),
        SideResult::Failed { .. } | SideResult::Abandoned | SideResult::NotAsked(_) => None,
    }
}

/// Parsed once: a lookup by `&str` parses the name on every call.
static CACHE_STATUS_FIELDS: [http::HeaderName; 3] = [
    http::HeaderName::from_static("x-vercel-cache"),
    http::HeaderName::from_static("cf-cache-status"),
    http::HeaderName::from_static("x-cache"),
];

/// What a side's cache said about its answer, from the headers CDNs and
/// Vercel use; a latency comparison must not mix cache hits with origin work.
fn cache_status(side: &SideResult) -> Option<String> {
    let SideResult::Complete(response) = side else {
        return None;
    };
    // One look at each name: three hashed lookups per side cost more than
    // comparing the few names an answer has. Each field's first value counts.
    let mut firsts: [Option<&http::HeaderValue>; 3] = [None; 3];
    for (name, value) in &response.headers {
        if let Some(rank) = CACHE_STATUS_FIELDS.iter().position(|field| field == name) {
            firsts[rank].get_or_insert(value);
        }
    }
    firsts.into_iter().flatten().find_map(|value| {
        let value: String = value
            .to_str()
            .ok()?
            .trim()
            .to_ascii_lowercase()
            .chars()
            .take(24)
            .collect();
        (!value.is_empty()).then_some(value)
    })
}

/// How long a side took to answer, in milliseconds.
pub fn millis_of(side: &SideResult) -> Option<f64> {
    side.elapsed().map(|elapsed| elapsed.as_secs_f64() * 1000.0)
}

fn skip_reason(outcome: Outcome) -> Option<String> {
    match outcome {
        Outcome::Skipped(reason) => Some(reason.label().to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::exchange::CapturedResponse;

    fn answered(headers: &[(&str, &str)]) -> SideResult {
        let mut map = http::HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        SideResult::Complete(CapturedResponse {
            status: http::StatusCode::OK,
            headers: map,
            body: bytes::Bytes::new(),
            elapsed: Duration::from_millis(3),
        })
    }

    #[test]
    fn the_cache_status_is_read_in_the_order_cdns_are_trusted() {
        let all = answered(&[
            ("x-cache", "MISS"),
            ("cf-cache-status", "EXPIRED"),
            ("x-vercel-cache", " HIT "),
        ]);
        assert_eq!(cache_status(&all).as_deref(), Some("hit"));
        let cloudflare = answered(&[("x-cache", "MISS"), ("cf-cache-status", "Dynamic")]);
        assert_eq!(cache_status(&cloudflare).as_deref(), Some("dynamic"));
        let plain = answered(&[("content-type", "application/json"), ("x-cache", "Hit from cloudfront")]);
        assert_eq!(cache_status(&plain).as_deref(), Some("hit from cloudfront"));
    }

    #[test]
    fn a_blank_cache_status_gives_way_and_only_a_fields_first_value_counts() {
        let blank = answered(&[("x-vercel-cache", "  "), ("x-cache", "MISS")]);
        assert_eq!(cache_status(&blank).as_deref(), Some("miss"));
        let repeated = answered(&[("x-cache", "MISS"), ("x-cache", "HIT")]);
        assert_eq!(cache_status(&repeated).as_deref(), Some("miss"));
        let long = answered(&[("x-cache", &"a".repeat(100))]);
        assert_eq!(cache_status(&long).map(|status| status.len()), Some(24));
        assert_eq!(cache_status(&answered(&[("content-type", "text/plain")])), None);
        assert_eq!(cache_status(&SideResult::Abandoned), None);
    }
}
