//! Mirrored reads and the calls to both sides: a read waits (bounded) for
//! pending writes to what it reads, translates its IDs, asks the shadow and
//! joins the primary's answer; every call to a side is bounded by that
//! side's in-flight limit and timeout.
//!
//! Must never: delay the proxy, or send a side more than `max_in_flight`
//! requests at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use tokio::sync::oneshot;

pub use crate::budget::Reservation;
use crate::compare::rules::CompareRules;
use crate::exchange::{CapturedRequest, CapturedResponse, SideResult, SkipReason};
use crate::idmap::{Side, Translated, Translation};
use crate::record::{Exchange, Resend};
use crate::route::{is_safe, WriteRules};
use crate::upstream::{OutgoingBody, Upstream};

use super::{CaptureBuf, Job, Mirror, PrimaryDone, Scope};

impl Mirror {
    /// A mirrored read: waits (bounded) for pending shadow writes to what it
    /// reads, translates its IDs, asks the shadow, joins the primary's answer.
    pub(super) async fn run_read(self: Arc<Self>, job: Job, primary_rx: oneshot::Receiver<PrimaryDone>) {
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
        let write_epoch = self.writes.load(Ordering::Acquire);
        let writes_started = self.lanes.started();
        let scope = entity.map_or(Scope::Everything, Scope::Entity);
        let clear = self.lanes.pending(&scope) == 0 || self.lanes.wait_clear(&scope, self.config.write_wait).await;
        let mirrored_to = serving.other();
        let ((mirrored_request, mirrored_headers), unmapped) =
            self.translate(&writes, &request, shadow_headers, mirrored_to).await;
        // Asking twice learns the shadow's own noise: only while it is the mirrored side.
        let ask_twice = serving == Side::Primary
            && self.noise.config().active
            && rules.learn_noise
            && rand::random::<f64>() < self.noise.config().active_sample;
        // Copied only for the few requests asked twice.
        let repeat_headers = ask_twice.then(|| mirrored_headers.clone());
        // Kept only where a divergence is asked again (`recheck`).
        let resend = if is_safe(&request.method) {
            let mirrored = (&mirrored_request, &mirrored_headers);
            self.resend_for(&rules, &writes, &request, serving, mirrored).await
        } else {
            None
        };
        let (mirrored, mirrored_reservation) = self
            .call_if_free(mirrored_to, &mirrored_request, mirrored_headers)
            .await;
        reservation.absorb(mirrored_reservation);
        let shadow_repeat = match repeat_headers {
            Some(headers) if matches!(mirrored, SideResult::Complete(_)) => {
                let (repeat, repeat_reservation) = self.call_if_free(mirrored_to, &mirrored_request, headers).await;
                reservation.absorb(repeat_reservation);
                Some(repeat)
            }
            _ => None,
        };
        let (served, held, _) = primary_rx.await.unwrap_or((SideResult::Abandoned, None, None));
        if let Some(held) = held {
            reservation.absorb(held);
        }
        let (primary, shadow) = serving.arrange(served, mirrored);
        // A write that began while this read ran may be in one answer and not the other.
        let racy = !clear || self.lanes.started() != writes_started;
        let exchange = Exchange {
            request_id,
            route,
            started_at,
            request,
            primary,
            shadow,
            shadow_repeat,
            rules,
            write_epoch,
            reservation,
            source: self.source,
            unmapped,
            racy,
            write: None,
            served: Some(serving),
            resend,
        };
        self.settle(exchange, ticket);
    }

    /// What each side of a read was sent, kept only where `rules` recheck
    /// a divergence: the mirrored side's translated request, and the
    /// serving side's own (the client's request as it came, or its IDs in
    /// the candidate's space while the candidate serves).
    async fn resend_for(
        &self,
        rules: &CompareRules,
        writes: &WriteRules,
        request: &CapturedRequest,
        serving: Side,
        mirrored: (&CapturedRequest, &HeaderMap),
    ) -> Option<Box<Resend>> {
        rules.recheck?;
        let translated;
        let served = match serving {
            Side::Primary => (request, &request.headers),
            Side::Shadow => {
                translated = self
                    .translate(writes, request, request.headers.clone(), serving)
                    .await
                    .0;
                (&translated.0, &translated.1)
            }
        };
        match serving {
            Side::Primary => Resend::if_rechecked(rules, served, mirrored),
            Side::Shadow => Resend::if_rechecked(rules, mirrored, served),
        }
    }

    /// The request as the shadow gets it: IDs translated through the map
    /// (waiting, bounded, for a pair a create still on its way will teach),
    /// and the IDs that had no pair.
    pub(super) async fn translate(
        &self,
        writes: &WriteRules,
        request: &CapturedRequest,
        mut headers: HeaderMap,
        to: Side,
    ) -> ((CapturedRequest, HeaderMap), Vec<(String, String)>) {
        let translated = self
            .translate_ids(
                &writes.translation,
                &request.method,
                &request.path_and_query,
                &request.body,
                to,
            )
            .await;
        let body = match translated.body {
            Some(body) => {
                headers.remove(http::header::CONTENT_LENGTH);
                Bytes::from(body)
            }
            None => request.body.clone(),
        };
        let shadow_request = CapturedRequest {
            method: request.method.clone(),
            path_and_query: translated
                .path_and_query
                .unwrap_or_else(|| request.path_and_query.clone()),
            // What the shadow is sent travels beside it (`call` takes the headers apart).
            headers: HeaderMap::new(),
            body,
        };
        ((shadow_request, headers), translated.unmapped)
    }

    /// A request's IDs in `to`'s space. An ID with no pair in memory is
    /// looked up in the store (another instance may have learned it); a
    /// write keeps looking, and any request waits for a create still on its
    /// way here to teach its pair, both bounded by `mirror.write_wait`.
    pub async fn translate_ids(
        &self,
        translation: &Translation,
        method: &http::Method,
        path_and_query: &str,
        body: &[u8],
        to: Side,
    ) -> Translated {
        let apply = || translation.to_side(&self.ids, to, path_and_query, body);
        let mut translated = apply();
        if translated.unmapped.is_empty() {
            return translated;
        }
        let patient = !is_safe(method);
        let deadline = Instant::now() + self.config.write_wait;
        loop {
            for (kind, id) in &translated.unmapped {
                self.pairs.find(&self.ids, kind, id, to.other()).await;
            }
            // Found in the store, or learned here meanwhile (a create of
            // this instance that was on its way).
            translated = apply();
            if translated.unmapped.is_empty() || !patient || Instant::now() >= deadline {
                break;
            }
            self.pairs
                .misses
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clear();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !translated.unmapped.is_empty() && self.learning.load(Ordering::Acquire) > 0 {
            let mut changes = self.ids.watch();
            let deadline = tokio::time::Instant::now() + self.config.write_wait;
            while !translated.unmapped.is_empty() && self.learning.load(Ordering::Acquire) > 0 {
                changes.borrow_and_update();
                translated = apply();
                if translated.unmapped.is_empty() || tokio::time::timeout_at(deadline, changes.changed()).await.is_err()
                {
                    break;
                }
            }
            translated = apply();
        }
        translated
    }

    /// Sends the captured request to a side once fewer than `max_in_flight`
    /// requests are outstanding to it (writes, rechecks, sweeps: they wait).
    pub(super) async fn call(
        &self,
        to: Side,
        request: &CapturedRequest,
        headers: HeaderMap,
    ) -> (SideResult, Reservation) {
        // Never closed; a closed semaphore would only mean no bound.
        let _slot = self.in_flight(to).acquire().await.ok();
        self.exchange_with(self.upstream(to), request, headers).await
    }

    /// Sends the captured request to a side only if a slot under
    /// `max_in_flight` is free now; a read does not wait for a slow shadow,
    /// it is skipped (`in_flight_full`).
    pub(super) async fn call_if_free(
        &self,
        to: Side,
        request: &CapturedRequest,
        headers: HeaderMap,
    ) -> (SideResult, Reservation) {
        let Ok(_slot) = self.in_flight(to).try_acquire() else {
            return (
                SideResult::NotAsked(SkipReason::InFlightFull),
                Reservation::empty(&self.budget),
            );
        };
        self.exchange_with(self.upstream(to), request, headers).await
    }

    /// Sends the captured request to an upstream; the whole exchange
    /// (headers and body) must finish within that upstream's timeout.
    pub(super) async fn exchange_with(
        &self,
        upstream: &Upstream,
        request: &CapturedRequest,
        headers: HeaderMap,
    ) -> (SideResult, Reservation) {
        let started = Instant::now();
        let mut capture = CaptureBuf::new(self.config.max_body, &self.budget);
        let deadline = upstream.timeout();
        let attempt = async {
            let response = upstream
                .send_untimed(
                    request.method.clone(),
                    &request.path_and_query,
                    headers,
                    OutgoingBody::from(request.body.clone()),
                )
                .await
                .map_err(|failure| (failure.kind, failure.message))?;
            let (head, mut body) = response.into_parts();
            capture.expect(&head.headers);
            loop {
                match body.chunk().await {
                    Ok(Some(chunk)) => {
                        if !capture.push(&chunk) {
                            return Ok(Err(head.status));
                        }
                    }
                    Ok(None) => return Ok(Ok((head.status, head.headers))),
                    Err(failure) => return Err((failure.kind, failure.message)),
                }
            }
        };
        let result = tokio::time::timeout(deadline, attempt).await;
        let elapsed = started.elapsed();
        match result {
            Err(_) => (
                SideResult::Failed {
                    kind: crate::exchange::FailureKind::Timeout,
                    message: format!("no complete answer within {}", humantime::format_duration(deadline)),
                    elapsed,
                },
                Reservation::empty(&self.budget),
            ),
            Ok(Err((kind, message))) => (
                SideResult::Failed { kind, message, elapsed },
                Reservation::empty(&self.budget),
            ),
            Ok(Ok(Err(status))) => (
                SideResult::Uncaptured {
                    status,
                    elapsed,
                    reason: capture.overflow().unwrap_or(SkipReason::BodyTooLarge),
                },
                Reservation::empty(&self.budget),
            ),
            Ok(Ok(Ok((status, headers)))) => match capture.finish() {
                Ok((body, reservation)) => (
                    SideResult::Complete(CapturedResponse {
                        status,
                        headers,
                        body,
                        elapsed,
                    }),
                    reservation,
                ),
                Err(reason) => (
                    SideResult::Uncaptured {
                        status,
                        elapsed,
                        reason,
                    },
                    Reservation::empty(&self.budget),
                ),
            },
        }
    }
}
