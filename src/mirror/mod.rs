//! Mirroring: decides which requests go to the shadow, sends them, joins
//! both answers into an [`Exchange`] and hands it to comparison workers,
//! which judge and record it through [`crate::record`].
//!
//! The "queue" is the set of mirrored exchanges in flight, from the moment a
//! request is chosen for mirroring until its comparison is recorded. It is
//! bounded twice: by count (`[mirror] queue`) and by captured bytes
//! (`[mirror] max_buffered`). When either is full the newest request is not
//! mirrored and is counted as skipped with reason `queue_full`; the client is
//! served as always. Comparison runs on its own threads so CPU-heavy diffs
//! never sit on the runtime that serves clients; only answers the same byte
//! for byte, whose judgement is a comparison of bytes, are judged where they
//! are joined ([`Mirror::settle`]).
//!
//! Must never: block or delay the proxy (everything here is `try_`, spawned,
//! or runs after the client's answer), or let memory grow with load.

mod admission;
mod config;
mod lanes;
mod sweep;
mod verify;
mod workers;
mod writes;

pub use admission::CaptureBuf;
use admission::{sampled_in, RateLimiter};
pub use config::{ComparePriority, MirrorConfig, Unmatched};
pub use lanes::{Lanes, PendingWrite, Scope};
pub use sweep::{Sweep, SweepRun};
pub use workers::Workers;
use workers::{noise_loop, recheck_loop};

mod observer;
mod pairs;
mod reads;

use observer::{ObserverTarget, PrimaryDone};
pub use observer::{Plan, PrimaryObserver, Ticket};
use pairs::SharedPairs;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::warn;

use crate::compare;
use crate::compare::noise::{NoiseConfig, NoiseLearner};
use crate::compare::rules::CompareRules;
use crate::exchange::{method_label, CapturedRequest, Outcome, SideResult, SkipReason};
use crate::idmap::{IdMap, Side};
use crate::metrics::Metrics;
use crate::record::{DirectRequest, Exchange, Recorder, RecorderParts};
use crate::redact::Redactor;
use crate::route::{access, is_read, is_safe, Access, MirrorPolicy, Route, WriteRules};
use crate::store::Writer;
use crate::units::RateLimit;

/// Where the evidence goes, and what is kept of it.
pub struct Recording {
    pub writer: Arc<Writer>,
    pub redactor: Redactor,
    /// Samples kept per divergence group.
    pub samples_per_group: u32,
    /// The ID map: translation for the shadow, and IDs compared through it.
    pub ids: Arc<IdMap>,
    /// Tries per mirrored write (`[shadow] write_tries`).
    pub write_tries: u32,
    /// The store the ID map is shared through (read-through on a miss):
    /// the instance's readers' pool.
    pub store: crate::store::SharedStore,
    /// Who this instance is across restarts: its pending writes carry it.
    pub instance: String,
    /// What the proxied requests are recorded as: `traffic`, or `replay`.
    pub source: crate::exchange::Source,
}

pub use crate::budget::{MemoryBudget, Reservation};
use crate::upstream::Upstream;

/// The mirror: shared by every request of one running instance.
pub struct Mirror {
    /// The primary: for rechecks, and mirrored to while the candidate serves.
    primary: Upstream,
    shadow: Upstream,
    /// Requests outstanding to each upstream, bounded by `max_in_flight`:
    /// a slow shadow must not take every connection and file descriptor.
    primary_in_flight: Semaphore,
    shadow_in_flight: Semaphore,
    config: MirrorConfig,
    slots: Arc<Semaphore>,
    budget: Arc<MemoryBudget>,
    rate_limit: Option<RateLimiter>,
    metrics: Metrics,
    to_workers: SyncSender<(Exchange, Ticket)>,
    stopping: Arc<AtomicBool>,
    /// Rules for requests no route matches.
    default_rules: Arc<CompareRules>,
    recorder: Arc<Recorder>,
    /// Writes seen by the proxy: answers on either side of one are never compared for noise.
    writes: AtomicU64,
    noise: Arc<NoiseLearner>,
    ids: Arc<IdMap>,
    /// Mirrored writes not yet done on the shadow, per entity.
    lanes: Arc<Lanes>,
    /// Entities with a drifted write: their later writes are held for replay, in order.
    drifted: Arc<Mutex<HashSet<String>>>,
    /// Writes whose shadow answer will teach an ID pair, still on their way.
    learning: Arc<AtomicUsize>,
    write_tries: u32,
    /// ID pairs other instances learned, read through the store on a miss.
    pairs: Arc<SharedPairs>,
    /// This instance's name, on the ledger rows of its writes.
    instance: String,
    /// This run's key prefix for write intents (random: unique across restarts).
    run: String,
    /// What the proxied requests are recorded as.
    source: crate::exchange::Source,
}

/// A mirrored request on its way to the shadow.
struct Job {
    ticket: Ticket,
    request_id: String,
    route: String,
    rules: Arc<CompareRules>,
    writes: Arc<WriteRules>,
    entity: Option<String>,
    request: CapturedRequest,
    shadow_headers: HeaderMap,
    reservation: Reservation,
    started_at: SystemTime,
    /// The side whose answer the client gets; the other one is mirrored.
    serving: Side,
}

/// Counts a write whose shadow answer will teach an ID pair, until it is done.
struct LearningGuard(Arc<AtomicUsize>);

impl LearningGuard {
    fn new(count: &Arc<AtomicUsize>) -> LearningGuard {
        count.fetch_add(1, Ordering::AcqRel);
        LearningGuard(Arc::clone(count))
    }
}

impl Drop for LearningGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Both sides answered completely with the same status and the same body
/// bytes, and nothing about the exchange asks for more than a judgement
/// (the noise learner parses bodies; that stays off the runtime).
fn plainly_identical(exchange: &Exchange) -> bool {
    let (SideResult::Complete(primary), SideResult::Complete(shadow)) = (&exchange.primary, &exchange.shadow) else {
        return false;
    };
    !exchange.rules.learn_noise
        && exchange.shadow_repeat.is_none()
        && primary.status == shadow.status
        && primary.body == shadow.body
}

/// Whether a request, with its body, is a write on a dual-write route.
fn is_dual_write(route: Option<&Route>, method: &Method, body: &[u8]) -> bool {
    route.is_some_and(|route| route.mirror == MirrorPolicy::DualWrite) && !is_read(route, method, body)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start comparison worker thread: {0}")]
pub struct MirrorError(#[from] std::io::Error);

impl Mirror {
    /// Starts the comparison threads and the recheck task; call inside the runtime.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        config: MirrorConfig,
        noise: NoiseConfig,
        primary: Upstream,
        shadow: Upstream,
        rate_limit: Option<RateLimit>,
        metrics: Metrics,
        recording: Recording,
    ) -> Result<(Arc<Mirror>, Workers), MirrorError> {
        let primary_name = primary.name().to_string();
        let (recheck_tx, recheck_rx) = mpsc::unbounded_channel();
        let (to_workers, from_proxy) = std::sync::mpsc::sync_channel(config.queue);
        let from_proxy = Arc::new(Mutex::new(from_proxy));
        let stopping = Arc::new(AtomicBool::new(false));
        let noise = Arc::new(NoiseLearner::new(noise));
        let drifted = Arc::new(Mutex::new(HashSet::new()));
        let recorder = Arc::new(Recorder::new(RecorderParts {
            metrics: metrics.clone(),
            primary_name,
            shadow_name: shadow.name().to_string(),
            noise: Arc::clone(&noise),
            decode_limit: config.max_decoded,
            writer: recording.writer,
            redactor: recording.redactor,
            samples_per_group: recording.samples_per_group,
            ids: Arc::clone(&recording.ids),
            drifted: Arc::clone(&drifted),
            source: recording.source,
        }));
        let workers = Workers::spawn(
            config.workers,
            config.compare_priority,
            &from_proxy,
            &stopping,
            &recorder,
            &recheck_tx,
        )?;
        let mirror = Mirror {
            primary,
            shadow,
            primary_in_flight: Semaphore::new(config.max_in_flight),
            shadow_in_flight: Semaphore::new(config.max_in_flight),
            slots: Arc::new(Semaphore::new(config.queue)),
            budget: MemoryBudget::new(config.max_buffered),
            rate_limit: rate_limit.map(RateLimiter::new),
            config,
            metrics,
            to_workers,
            stopping,
            default_rules: Arc::new(CompareRules::new()),
            recorder: Arc::clone(&recorder),
            writes: AtomicU64::new(0),
            noise,
            ids: recording.ids,
            lanes: Lanes::new(),
            drifted,
            learning: Arc::new(AtomicUsize::new(0)),
            write_tries: recording.write_tries,
            pairs: Arc::new(SharedPairs {
                store: recording.store,
                misses: Mutex::new(HashMap::new()),
            }),
            instance: recording.instance,
            source: recording.source,
            run: format!("{:016x}", rand::random::<u64>()),
        };
        let mirror = Arc::new(mirror);
        tokio::spawn(recheck_loop(Arc::downgrade(&mirror), recorder, recheck_rx));
        // Opened now, not at the first miss: that lookup would wait for a
        // pool to open and the schema to be checked.
        let pairs = Arc::clone(&mirror.pairs);
        tokio::spawn(async move {
            pairs.store().await;
        });
        tokio::spawn(noise_loop(Arc::downgrade(&mirror)));
        Ok((mirror, workers))
    }

    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    pub fn max_body(&self) -> usize {
        self.config.max_body
    }

    /// The entities whose writes are held behind a drifted write (shared with replay).
    pub fn drifted(&self) -> Arc<Mutex<HashSet<String>>> {
        Arc::clone(&self.drifted)
    }

    /// The noise learned so far, for review.
    pub fn noise(&self) -> &NoiseLearner {
        &self.noise
    }

    /// Decides whether a request is mirrored; takes its place in the queue if so.
    pub fn plan(&self, route: Option<&Route>, method: &Method, headers: &HeaderMap, client_ip: IpAddr) -> Plan {
        let access = access(route, method);
        if access != Access::Read {
            self.writes.fetch_add(1, Ordering::AcqRel);
        }
        // A GraphQL request may be a mutation: on a dual-write route it is
        // planned as a write (never sampled out or rate-limited away), and
        // its body decides at dispatch.
        let dual_write = access != Access::Read && route.is_some_and(|route| route.mirror == MirrorPolicy::DualWrite);
        let policy_mirrors = match route {
            None => match self.config.unmatched {
                Unmatched::Reads => is_safe(method),
                Unmatched::Off => false,
            },
            Some(route) => route.mirror != MirrorPolicy::Off && (access != Access::Write || dual_write),
        };
        if !policy_mirrors {
            return Plan::Skip(SkipReason::MirrorOff);
        }
        // Writes are never sampled: a shadow that misses writes drifts away.
        if let Some(route) = route.filter(|_| !dual_write) {
            if !sampled_in(route, headers, client_ip) {
                return Plan::Skip(SkipReason::SampledOut);
            }
        }
        let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
            return Plan::Skip(SkipReason::QueueFull);
        };
        // Reads without a token are skipped; writes wait for theirs (in their own task).
        if let Some(limiter) = self.rate_limit.as_ref().filter(|_| !dual_write) {
            if !limiter.try_take() {
                return Plan::Skip(SkipReason::RateLimited);
            }
        }
        Plan::Mirror(Ticket::new(permit, &self.metrics))
    }

    /// An observer for a request that is not mirrored.
    pub fn direct_observer(&self, request: DirectRequest, reason: SkipReason) -> PrimaryObserver {
        PrimaryObserver {
            target: Some(ObserverTarget::Direct {
                recorder: Arc::clone(&self.recorder),
                request,
                reason,
            }),
        }
    }

    /// The entity a request is about (for ordering and racy reads).
    pub fn entity_of(&self, route: &Route, path_and_query: &str) -> Option<String> {
        let path = path_and_query.split('?').next().unwrap_or(path_and_query);
        route.entity(path, &|id| compare::IdLookup::canonical(&*self.ids, id).into_owned())
    }

    /// Hands over a mirrored request and returns the observer the proxy
    /// reports the primary's result to. A read goes to the shadow now (both
    /// sides at once); a write goes after the primary has answered, in the
    /// primary's order per entity. The exchange is compared once both are in.
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch(
        self: &Arc<Self>,
        ticket: Ticket,
        request_id: String,
        route_name: String,
        route: Option<&Route>,
        request: CapturedRequest,
        shadow_headers: HeaderMap,
        reservation: Reservation,
        serving: Side,
    ) -> PrimaryObserver {
        let (tx, primary_rx) = oneshot::channel();
        let rules = route.map_or_else(|| Arc::clone(&self.default_rules), |route| Arc::clone(&route.compare));
        let writes = route.map(|route| Arc::clone(&route.writes)).unwrap_or_default();
        let entity = route.and_then(|route| self.entity_of(route, &request.path_and_query));
        let job = Job {
            ticket,
            request_id,
            route: route_name,
            rules,
            writes,
            entity,
            request,
            shadow_headers,
            reservation,
            started_at: SystemTime::now(),
            serving,
        };
        if is_dual_write(route, &job.request.method, &job.request.body) {
            let pending = self.lanes.begin(job.entity.clone());
            let learning = (!job.writes.learn.is_empty()).then(|| LearningGuard::new(&self.learning));
            // Boxed: a task's future is moved several times on its way into
            // the runtime, and this one is kilobytes; a box moves as a pointer.
            tokio::spawn(Box::pin(Arc::clone(self).run_write(job, primary_rx, learning)));
            return PrimaryObserver {
                target: Some(ObserverTarget::Mirrored(tx, Some(pending))),
            };
        }
        // A GraphQL query planned as a possible write took no rate-limit
        // token: it waits for one, as writes do.
        let untokened = access(route, &job.request.method) == Access::ByBody
            && route.is_some_and(|route| route.mirror == MirrorPolicy::DualWrite);
        let wait = self.rate_limit.as_ref().filter(|_| untokened).map(RateLimiter::reserve);
        let mirror = Arc::clone(self);
        // Boxed, as a write's is: moved as a pointer, not as kilobytes.
        tokio::spawn(Box::pin(async move {
            if let Some(wait) = wait {
                tokio::time::sleep(wait).await;
            }
            mirror.run_read(job, primary_rx).await;
        }));
        PrimaryObserver {
            target: Some(ObserverTarget::Mirrored(tx, None)),
        }
    }

    /// The upstream of a side.
    fn upstream(&self, side: Side) -> &Upstream {
        match side {
            Side::Primary => &self.primary,
            Side::Shadow => &self.shadow,
        }
    }

    /// The ID map (the proxy translates what it sends to a serving candidate).
    pub fn ids(&self) -> &IdMap {
        &self.ids
    }

    /// Settles a mirrored exchange. Answers the same byte for byte (most
    /// answers of a healthy migration) are judged and counted here, in the
    /// task that joined them: the judgement is a comparison of the two
    /// bodies and a few header checks, cheaper than handing the exchange to
    /// another thread and waking it, and a match is then never shed for a
    /// busy comparison thread. Everything else (a divergence, bodies that
    /// differ, a route that learns noise, which parses) goes to the
    /// comparison threads.
    fn settle(&self, exchange: Exchange, ticket: Ticket) {
        if plainly_identical(&exchange) {
            let judgement = self.recorder.judge_equal_bodies(&exchange);
            if judgement.outcome != Outcome::Diverged {
                self.recorder.record(&exchange, judgement);
                drop(ticket);
                return;
            }
        }
        self.hand_to_workers(exchange, ticket);
    }

    fn hand_to_workers(&self, exchange: Exchange, ticket: Ticket) {
        // The ticket travels with the exchange and is dropped only after the
        // workers have recorded it, so the channel never holds more than `queue`.
        match self.to_workers.try_send((exchange, ticket)) {
            Ok(()) => {}
            Err(TrySendError::Full((exchange, _)) | TrySendError::Disconnected((exchange, _))) => {
                warn!(request_id = %exchange.request_id, "comparison workers unavailable; exchange not compared");
                self.metrics.record_outcome(
                    &exchange.route,
                    method_label(&exchange.request.method),
                    Outcome::Skipped(SkipReason::QueueFull),
                );
            }
        }
    }

    fn in_flight(&self, side: Side) -> &Semaphore {
        match side {
            Side::Primary => &self.primary_in_flight,
            Side::Shadow => &self.shadow_in_flight,
        }
    }

    /// Tells the comparison workers to stop once the queue is empty.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.flush_noise();
    }

    /// Hands the store a snapshot of the paths learned as noise (for the report).
    pub fn flush_noise(&self) {
        let millis = crate::clock::unix_ms;
        let learned: Vec<crate::store::NoiseRecord> = self
            .noise
            .learned()
            .into_iter()
            .filter(|noise| noise.active)
            .map(|noise| crate::store::NoiseRecord {
                route: noise.route,
                pattern: noise.pattern,
                side: format!("{:?}", noise.side).to_ascii_lowercase(),
                observations: i64::from(noise.observations),
                first_seen_ms: millis(noise.first_seen),
                last_seen_ms: millis(noise.last_seen),
            })
            .collect();
        self.recorder.writer().submit_noise(learned);
    }

    /// Waits until every mirrored exchange in flight has been recorded, at
    /// most `grace`. Returns how many were still in flight when it gave up.
    pub async fn drain(&self, grace: Duration) -> usize {
        let all = u32::try_from(self.config.queue).unwrap_or(u32::MAX);
        match tokio::time::timeout(grace, self.slots.acquire_many(all)).await {
            Ok(Ok(_all_slots)) => 0,
            _ => self.config.queue - self.slots.available_permits(),
        }
    }
}
