//! Sweeps: synthetic reads sent to both sides on a schedule, through the
//! same compare and record path as traffic, with source `sweep`. They add
//! evidence when clients are idle (nights) and cover records nobody read
//! (one request per ID of a kind, from the ID map).
//!
//! Must never: write (sweeps are GET or HEAD only), crowd out client
//! traffic (they take queue slots only while free, and pace themselves),
//! or exceed the shadow's rate limit.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};

use super::{Mirror, Reservation, Ticket};
use crate::exchange::{CapturedRequest, Source};
use crate::idmap::Side;
use crate::record::{Exchange, Resend};

use crate::headers::SWEEP_MARKER;

/// `[[sweep]]`: one synthetic read (or one per ID of a kind), sent to both
/// sides every `every`, compared and recorded with source `sweep`.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub name: String,
    pub request: crate::route::RequestTemplate,
    pub every: Duration,
    /// With `ids`, the one placeholder takes each primary ID of this kind.
    pub ids: Option<String>,
    /// Sweep requests per second (each side).
    pub rate: crate::units::RateLimit,
}

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepRun {
    pub sent: usize,
    /// IDs of the kind with no pair (not swept: there is nothing to compare them with).
    pub unmapped: usize,
    /// Left for the next run because the mirror queue was full.
    pub deferred: usize,
}

impl Mirror {
    /// The (primary path, shadow path) pairs a sweep reads: its one request,
    /// or one per ID pair of its kind (IDs with no pair counted in `run`).
    fn sweep_targets(&self, sweep: &Sweep, run: &mut SweepRun) -> Vec<(String, String)> {
        match &sweep.ids {
            None => sweep
                .request
                .path(&|_| None)
                .map(|path| vec![(path.clone(), path)])
                .unwrap_or_default(),
            Some(kind) => self
                .ids
                .primary_ids_of(kind)
                .into_iter()
                .filter_map(|id| {
                    let Some(shadow_id) = self.ids.lookup(kind, &id) else {
                        run.unmapped += 1;
                        return None;
                    };
                    let primary = sweep.request.path(&|_| Some(id.clone()))?;
                    let shadow = sweep.request.path(&|_| Some(shadow_id.clone()))?;
                    Some((primary, shadow))
                })
                .collect(),
        }
    }

    /// Runs one sweep now: every request it names, paced at its rate.
    pub async fn sweep_once(self: &Arc<Self>, sweep: &Sweep) -> SweepRun {
        let mut run = SweepRun::default();
        let targets = self.sweep_targets(sweep, &mut run);
        let pace = Duration::from_secs_f64(1.0 / sweep.rate.per_second.max(0.001));
        let total = targets.len();
        for (index, (primary_path, shadow_path)) in targets.into_iter().enumerate() {
            let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
                run.deferred = total - index;
                break;
            };
            let ticket = Ticket::new(permit, &self.metrics);
            if let Some(limiter) = &self.rate_limit {
                tokio::time::sleep(limiter.reserve()).await;
            }
            let mut headers = HeaderMap::new();
            headers.insert(SWEEP_MARKER, HeaderValue::from_static("1"));
            let request_id = uuid::Uuid::new_v4().to_string();
            if let Ok(id) = HeaderValue::from_str(&request_id) {
                headers.insert(crate::headers::REQUEST_ID, id);
            }
            let mut shadow_headers = headers.clone();
            shadow_headers.insert(crate::headers::SHADOW_MARKER, HeaderValue::from_static("1"));
            let request = |path: String| CapturedRequest {
                method: sweep.request.method.clone(),
                path_and_query: path,
                headers: headers.clone(),
                body: bytes::Bytes::new(),
            };
            let (primary_request, shadow_request) = (request(primary_path), request(shadow_path));
            let started_at = SystemTime::now();
            let resend = Resend::if_rechecked(
                &sweep.request.rules,
                (&primary_request, &headers),
                (&shadow_request, &shadow_headers),
            );
            let ((primary, held_p), (shadow, held_s)) = tokio::join!(
                self.call(Side::Primary, &primary_request, headers.clone()),
                self.call(Side::Shadow, &shadow_request, shadow_headers),
            );
            let mut reservation = Reservation::empty(&self.budget);
            reservation.absorb(held_p);
            reservation.absorb(held_s);
            self.hand_to_workers(
                Exchange {
                    request_id,
                    route: sweep.request.route.clone(),
                    started_at,
                    request: primary_request,
                    primary,
                    shadow,
                    shadow_repeat: None,
                    rules: Arc::clone(&sweep.request.rules),
                    write_epoch: 0,
                    reservation,
                    source: Source::Sweep,
                    unmapped: Vec::new(),
                    racy: false,
                    write: None,
                    served: None,
                    resend,
                },
                ticket,
            );
            run.sent += 1;
            tokio::time::sleep(pace).await;
        }
        run
    }
}
