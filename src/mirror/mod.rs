//! Mirroring: decides which requests go to the shadow, sends them, joins
//! both answers into an [`Exchange`] and hands it to comparison workers.
//!
//! The "queue" is the set of mirrored exchanges in flight, from the moment a
//! request is chosen for mirroring until its comparison is recorded. It is
//! bounded twice: by count (`[mirror] queue`) and by captured bytes
//! (`[mirror] max_buffered`). When either is full the newest request is not
//! mirrored and is counted as skipped with reason `queue_full`; the client is
//! served as always. Comparison runs on its own threads so CPU-heavy diffs
//! never sit on the runtime that serves clients.
//!
//! Must never: block or delay the proxy (everything here is `try_`, spawned,
//! or runs after the client's answer), or let memory grow with load.

mod config;
mod lanes;
mod sweep;
mod writes;

pub use config::{ComparePriority, MirrorConfig, Unmatched};
pub use lanes::{Lanes, PendingWrite, Scope};
pub use sweep::{Sweep, SweepRun};

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use crate::compare::noise::{fingerprint, NoiseConfig, NoiseLearner};
use crate::compare::rules::CompareRules;
use crate::compare::{self, Context};
use crate::exchange::{method_label, CapturedRequest, CapturedResponse, Outcome, SideResult, SkipReason};
use crate::idmap::{IdMap, Side};
use crate::ledger::WriteFacts;
use crate::metrics::{shadow_error_kind, Metrics};
use crate::redact::Redactor;
use crate::route::{is_safe, MirrorPolicy, Route, SampleKey, WriteRules};
use crate::store::{ExchangeRecord, GroupRef, LedgerRecord, SampleRecord, Writer};
use crate::units::RateLimit;

/// Where the evidence goes, and what is kept of it.
pub struct Evidence {
    pub writer: Arc<Writer>,
    pub redactor: Redactor,
    /// Samples kept per divergence group.
    pub samples_per_group: u32,
    /// The ID map: translation for the shadow, and IDs compared through it.
    pub ids: Arc<IdMap>,
    /// Tries per mirrored write (`[shadow] write_tries`).
    pub write_tries: u32,
    /// The store the ID map is shared through (read-through on a miss).
    pub store: crate::store::WriterConfig,
    /// Who this instance is across restarts: its pending writes carry it.
    pub instance: String,
}

/// Longest body excerpt kept in a sample.
const EXCERPT_LIMIT: usize = 4096;
/// Longest unified diff kept in a sample.
const DIFF_LIMIT: usize = 64 * 1024;
pub use crate::budget::{MemoryBudget, Reservation};
use crate::upstream::{OutgoingBody, Upstream};

/// A body being captured, bounded by `max_body` and by the shared budget.
#[derive(Debug)]
pub struct CaptureBuf {
    buf: BytesMut,
    limit: usize,
    reservation: Reservation,
    overflow: Option<SkipReason>,
}

impl CaptureBuf {
    pub fn new(limit: usize, budget: &Arc<MemoryBudget>) -> CaptureBuf {
        CaptureBuf {
            buf: BytesMut::new(),
            limit,
            reservation: Reservation::empty(budget),
            overflow: None,
        }
    }

    /// Appends a chunk; returns false once the capture has been given up.
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        if self.overflow.is_some() {
            return false;
        }
        if self.buf.len() + chunk.len() > self.limit {
            return self.give_up(SkipReason::BodyTooLarge);
        }
        if !self.reservation.grow(chunk.len()) {
            return self.give_up(SkipReason::QueueFull);
        }
        self.buf.extend_from_slice(chunk);
        true
    }

    fn give_up(&mut self, reason: SkipReason) -> bool {
        self.overflow = Some(reason);
        self.buf = BytesMut::new();
        self.reservation.release();
        false
    }

    /// Why the capture was given up, if it was.
    pub fn overflow(&self) -> Option<SkipReason> {
        self.overflow
    }

    /// The captured bytes and what they hold of the budget, or the reason the capture was given up.
    pub fn finish(self) -> Result<(Bytes, Reservation), SkipReason> {
        match self.overflow {
            Some(reason) => Err(reason),
            None => Ok((self.buf.freeze(), self.reservation)),
        }
    }
}

/// A token bucket: `per_second` tokens a second, bursts up to one second's worth.
#[derive(Debug)]
struct RateLimiter {
    per_second: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    fn new(limit: RateLimit) -> RateLimiter {
        let burst = limit.per_second.max(1.0);
        RateLimiter {
            per_second: limit.per_second,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a token now, going into debt if there is none; returns how long
    /// to wait until that token would have been there. Writes queue this way
    /// (a write is never dropped for the rate), and reads see no token until
    /// the debt is paid.
    fn reserve(&self) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let refilled = (tokens + now.duration_since(last).as_secs_f64() * self.per_second).min(self.burst);
        let left = refilled - 1.0;
        *state = (left, now);
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-left / self.per_second)
        }
    }

    fn try_take(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let refilled = (tokens + now.duration_since(last).as_secs_f64() * self.per_second).min(self.burst);
        if refilled >= 1.0 {
            *state = (refilled - 1.0, now);
            true
        } else {
            *state = (refilled, now);
            false
        }
    }
}

/// Whether a request falls inside a route's sample. With a sample key the
/// choice is sticky: the same key is always in or always out.
fn sampled_in(route: &Route, headers: &HeaderMap, client_ip: IpAddr) -> bool {
    if route.sample >= 1.0 {
        return true;
    }
    if route.sample <= 0.0 {
        return false;
    }
    let key_hash = match &route.sample_key {
        Some(SampleKey::ClientIp) => Some(hash_of(&(route.name.as_str(), client_ip))),
        Some(SampleKey::Header(name)) => headers
            .get(name)
            .map(|value| hash_of(&(route.name.as_str(), value.as_bytes()))),
        None => None,
    };
    let point = match key_hash {
        // The top 53 bits as a fraction in [0, 1).
        Some(hash) => (hash >> 11) as f64 / (1u64 << 53) as f64,
        // No key (or the key header is absent): an independent draw.
        None => rand::random::<f64>(),
    };
    point < route.sample
}

fn hash_of(value: &impl Hash) -> u64 {
    // DefaultHasher::new() uses fixed keys, so the same key hashes the same
    // way for the life of the process (and across replicas of one build).
    let mut hasher = std::hash::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// A place in the mirror queue; the exchange holding it is in flight.
#[derive(Debug)]
pub struct Ticket {
    _permit: OwnedSemaphorePermit,
    metrics: Metrics,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.metrics.queue_depth().dec();
    }
}

/// What to do with a request, decided before anything is sent.
#[derive(Debug)]
pub enum Plan {
    Mirror(Ticket),
    Skip(SkipReason),
}

/// Receives the primary's result for one request and makes sure it is
/// recorded exactly once: dropped unfinished, it records `Abandoned`.
#[derive(Debug)]
pub struct PrimaryObserver {
    target: Option<ObserverTarget>,
}

#[derive(Debug)]
enum ObserverTarget {
    /// A mirrored request: the primary's result joins the shadow's. A write
    /// takes its turn in its entity's lane the moment the primary is done.
    Mirrored(oneshot::Sender<PrimaryDone>, Option<PendingWrite>),
    /// Not mirrored: the outcome is recorded as soon as the primary is done.
    Direct {
        recorder: Arc<Recorder>,
        request: DirectRequest,
        reason: SkipReason,
    },
}

impl PrimaryObserver {
    /// Reports the primary's result, with the budget its captured body holds.
    pub fn finish(mut self, result: SideResult, held: Option<Reservation>) {
        self.deliver(result, held);
    }

    fn deliver(&mut self, result: SideResult, held: Option<Reservation>) {
        match self.target.take() {
            Some(ObserverTarget::Mirrored(tx, mut pending)) => {
                if let Some(pending) = pending.as_mut() {
                    pending.take_turn();
                }
                // The receiving task only goes away at shutdown past the grace period.
                let _ = tx.send((result, held, pending));
            }
            Some(ObserverTarget::Direct {
                recorder,
                request,
                reason,
            }) => recorder.record_direct(&request, &result, reason),
            None => {}
        }
    }
}

impl Drop for PrimaryObserver {
    fn drop(&mut self) {
        self.deliver(SideResult::Abandoned, None);
    }
}

/// The primary's result, the budget its body holds, and (for a write) its pending place.
type PrimaryDone = (SideResult, Option<Reservation>, Option<PendingWrite>);

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
}

/// The store side of the ID map: pairs this instance learns are written at
/// once (another instance may need them for the next request), and a miss
/// is looked up there before an ID is called unmapped.
struct SharedPairs {
    config: crate::store::WriterConfig,
    store: tokio::sync::OnceCell<crate::store::Store>,
    /// Recent misses, not asked again for a while (an unmapped ID is usually asked for repeatedly).
    misses: Mutex<HashMap<(String, String), Instant>>,
}

/// How long a miss in the store is believed.
const MISS_TTL: Duration = Duration::from_secs(5);

impl SharedPairs {
    async fn store(&self) -> Option<&crate::store::Store> {
        self.store
            .get_or_try_init(|| crate::store::Store::open(&self.config.url, &self.config.options))
            .await
            .ok()
    }

    /// Looks an ID up in the store; a pair found is added to `ids`.
    async fn find(&self, ids: &IdMap, kind: &str, id: &str, known: Side) -> bool {
        let key = (kind.to_string(), id.to_string());
        {
            let mut misses = self.misses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            misses.retain(|_, at| at.elapsed() < MISS_TTL);
            if misses.contains_key(&key) {
                return false;
            }
        }
        let Some(store) = self.store().await else { return false };
        match store.id_pair_of(kind, id, known).await {
            Ok(Some(pair)) => ids.insert(&pair).is_ok(),
            _ => {
                let mut misses = self.misses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if misses.len() < 100_000 {
                    misses.insert(key, Instant::now());
                }
                false
            }
        }
    }
}

/// What a comparison thread needs to judge, count and keep an exchange.
struct Recorder {
    metrics: Metrics,
    primary_name: String,
    shadow_name: String,
    noise: Arc<NoiseLearner>,
    decode_limit: usize,
    /// Divergences to ask both sides about again (routes with `recheck`).
    rechecks: mpsc::UnboundedSender<Recheck>,
    writer: Arc<Writer>,
    redactor: Redactor,
    samples_per_group: u32,
    /// Samples built per group so far (the store enforces the cap too).
    sampled: Mutex<HashMap<String, u32>>,
    ids: Arc<IdMap>,
    drifted: Arc<Mutex<HashSet<String>>>,
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
    /// `traffic` (a client's request) or `verify` (a read-back after a write).
    pub source: &'static str,
    /// IDs in the request with no pair (sent to the shadow unchanged): (kind, primary ID).
    pub unmapped: Vec<(String, String)>,
    /// A read that overlapped a pending shadow write: a divergence is `racy`.
    pub racy: bool,
    /// For a mirrored write: its ledger row and the ID pairs it taught.
    pub write: Option<WriteFacts>,
}

/// A dual-write the shadow will not get.
#[derive(Debug)]
pub struct LostWrite {
    pub entity: Option<String>,
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

/// Whether a request is a write on a dual-write route.
fn is_dual_write(route: Option<&Route>, method: &Method) -> bool {
    !is_safe(method) && route.is_some_and(|route| route.mirror == MirrorPolicy::DualWrite)
}

/// A divergence waiting to be asked again; it keeps its place in the queue.
struct Recheck {
    exchange: Exchange,
    judgement: compare::Judgement,
    ticket: Ticket,
    delay: Duration,
}

/// The comparison threads; joined at shutdown.
pub struct Workers {
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Waits for the workers to finish what they hold. Call after every
    /// [`Mirror`] handle is dropped, or this waits forever.
    pub fn join(self) {
        for thread in self.threads {
            if thread.join().is_err() {
                warn!("a comparison worker panicked");
            }
        }
    }
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
        evidence: Evidence,
    ) -> Result<(Arc<Mirror>, Workers), MirrorError> {
        let primary_name = primary.name().to_string();
        let (recheck_tx, recheck_rx) = mpsc::unbounded_channel();
        let (to_workers, from_proxy) = std::sync::mpsc::sync_channel(config.queue);
        let from_proxy = Arc::new(Mutex::new(from_proxy));
        let stopping = Arc::new(AtomicBool::new(false));
        let noise = Arc::new(NoiseLearner::new(noise));
        let drifted = Arc::new(Mutex::new(HashSet::new()));
        let recorder = Arc::new(Recorder {
            metrics: metrics.clone(),
            primary_name,
            shadow_name: shadow.name().to_string(),
            noise: Arc::clone(&noise),
            decode_limit: config.max_decoded,
            rechecks: recheck_tx,
            writer: evidence.writer,
            redactor: evidence.redactor,
            samples_per_group: evidence.samples_per_group,
            sampled: Mutex::new(HashMap::new()),
            ids: Arc::clone(&evidence.ids),
            drifted: Arc::clone(&drifted),
        });
        let mut threads = Vec::with_capacity(config.workers);
        for index in 0..config.workers {
            let from_proxy = Arc::clone(&from_proxy);
            let recorder = Arc::clone(&recorder);
            let stopping = Arc::clone(&stopping);
            let priority = config.compare_priority;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("cutover-compare-{index}"))
                    .spawn(move || {
                        if priority == ComparePriority::Idle {
                            run_on_spare_cpu_only();
                        }
                        compare_loop(&from_proxy, &stopping, &recorder)
                    })?,
            );
        }
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
            ids: evidence.ids,
            lanes: Lanes::new(),
            drifted,
            learning: Arc::new(AtomicUsize::new(0)),
            write_tries: evidence.write_tries,
            pairs: Arc::new(SharedPairs {
                config: evidence.store,
                store: tokio::sync::OnceCell::new(),
                misses: Mutex::new(HashMap::new()),
            }),
            instance: evidence.instance,
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
        Ok((mirror, Workers { threads }))
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
        if !is_safe(method) {
            self.writes.fetch_add(1, Ordering::AcqRel);
        }
        let dual_write = is_dual_write(route, method);
        let policy_mirrors = match route {
            None => self.config.unmatched == Unmatched::Reads && is_safe(method),
            Some(route) => route.mirror != MirrorPolicy::Off && (is_safe(method) || dual_write),
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
        self.metrics.queue_depth().inc();
        Plan::Mirror(Ticket {
            _permit: permit,
            metrics: self.metrics.clone(),
        })
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
        if is_dual_write(route, &job.request.method) {
            let pending = self.lanes.begin(job.entity.clone());
            let learning = (!job.writes.learn.is_empty()).then(|| LearningGuard::new(&self.learning));
            tokio::spawn(Arc::clone(self).run_write(job, primary_rx, learning));
            return PrimaryObserver {
                target: Some(ObserverTarget::Mirrored(tx, Some(pending))),
            };
        }
        tokio::spawn(Arc::clone(self).run_read(job, primary_rx));
        PrimaryObserver {
            target: Some(ObserverTarget::Mirrored(tx, None)),
        }
    }

    /// A mirrored read: waits (bounded) for pending shadow writes to what it
    /// reads, translates its IDs, asks the shadow, joins the primary's answer.
    async fn run_read(self: Arc<Self>, job: Job, primary_rx: oneshot::Receiver<PrimaryDone>) {
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
            source: "traffic",
            unmapped,
            racy,
            write: None,
        };
        self.hand_to_workers(exchange, ticket);
    }

    /// The request as the shadow gets it: IDs translated through the map
    /// (waiting, bounded, for a pair a create still on its way will teach),
    /// and the IDs that had no pair.
    async fn translate(
        &self,
        writes: &WriteRules,
        request: &CapturedRequest,
        mut headers: HeaderMap,
        to: Side,
    ) -> ((CapturedRequest, HeaderMap), Vec<(String, String)>) {
        let translation = &writes.translation;
        let apply = || translation.to_side(&self.ids, to, &request.path_and_query, &request.body);
        let mut translated = apply();
        // Another instance may have learned the pair: ask the store. A write
        // keeps asking (bounded): the create it follows may still be on its
        // way through another instance.
        if !translated.unmapped.is_empty() {
            let patient = !is_safe(&request.method);
            let deadline = Instant::now() + self.config.write_wait;
            loop {
                let mut found = false;
                for (kind, id) in &translated.unmapped {
                    found |= self.pairs.find(&self.ids, kind, id, to.other()).await;
                }
                if found {
                    translated = apply();
                }
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

    /// Sends the captured request to a side once fewer than `max_in_flight`
    /// requests are outstanding to it (writes, rechecks, sweeps: they wait).
    async fn call(&self, to: Side, request: &CapturedRequest, headers: HeaderMap) -> (SideResult, Reservation) {
        // Never closed; a closed semaphore would only mean no bound.
        let _slot = self.in_flight(to).acquire().await.ok();
        self.exchange_with(self.upstream(to), request, headers).await
    }

    /// Sends the captured request to a side only if a slot under
    /// `max_in_flight` is free now; a read does not wait for a slow shadow,
    /// it is skipped (`in_flight_full`).
    async fn call_if_free(&self, to: Side, request: &CapturedRequest, headers: HeaderMap) -> (SideResult, Reservation) {
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
    async fn exchange_with(
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
                .send(
                    request.method.clone(),
                    &request.path_and_query,
                    headers,
                    OutgoingBody::from(request.body.clone()),
                )
                .await
                .map_err(|failure| (failure.kind, failure.message))?;
            let (head, mut body) = response.into_parts();
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
        self.recorder.writer.submit_noise(learned);
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

/// Persists learned noise every 30 seconds while the mirror lives.
async fn noise_loop(mirror: std::sync::Weak<Mirror>) {
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let Some(mirror) = mirror.upgrade() else { return };
        mirror.flush_noise();
    }
}

/// Asks both sides again about divergences on routes with `recheck`: if
/// they now agree, the exchange is `transient`, else it stays `diverged`.
async fn recheck_loop(
    mirror: std::sync::Weak<Mirror>,
    recorder: Arc<Recorder>,
    mut rechecks: mpsc::UnboundedReceiver<Recheck>,
) {
    while let Some(Recheck {
        exchange,
        mut judgement,
        ticket,
        delay,
    }) = rechecks.recv().await
    {
        let Some(mirror) = mirror.upgrade() else { return };
        let recorder = Arc::clone(&recorder);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let request = &exchange.request;
            let mut shadow_headers = request.headers.clone();
            shadow_headers.insert(crate::headers::SHADOW_MARKER, http::HeaderValue::from_static("1"));
            let ((primary, held_p), (shadow, held_s)) = tokio::join!(
                mirror.call(Side::Primary, request, request.headers.clone()),
                mirror.call(Side::Shadow, request, shadow_headers),
            );
            let mut reservation = Reservation::empty(&mirror.budget);
            reservation.absorb(held_p);
            reservation.absorb(held_s);
            let again = Exchange {
                request_id: exchange.request_id.clone(),
                route: exchange.route.clone(),
                started_at: SystemTime::now(),
                request: CapturedRequest {
                    method: request.method.clone(),
                    path_and_query: request.path_and_query.clone(),
                    headers: request.headers.clone(),
                    body: request.body.clone(),
                },
                primary,
                shadow,
                shadow_repeat: None,
                rules: Arc::clone(&exchange.rules),
                write_epoch: exchange.write_epoch,
                reservation,
                source: exchange.source,
                unmapped: exchange.unmapped.clone(),
                racy: false,
                write: None,
            };
            if recorder.judge_once(&again).outcome == Outcome::Match {
                judgement.outcome = Outcome::Transient;
            }
            recorder.record(&exchange, judgement);
            drop(ticket);
        });
    }
}

fn clip(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n… ({} more bytes)", &text[..end], text.len() - end)
}

fn status_of(side: &SideResult) -> Option<i64> {
    match side {
        SideResult::Complete(response) => Some(i64::from(response.status.as_u16())),
        SideResult::Uncaptured { status, .. } => Some(i64::from(status.as_u16())),
        SideResult::Failed { .. } | SideResult::Abandoned | SideResult::NotAsked(_) => None,
    }
}

/// What a side's cache said about its answer, from the headers CDNs and
/// Vercel use; a latency comparison must not mix cache hits with origin work.
fn cache_status(side: &SideResult) -> Option<String> {
    let SideResult::Complete(response) = side else {
        return None;
    };
    ["x-vercel-cache", "cf-cache-status", "x-cache"]
        .iter()
        .find_map(|name| {
            let value = response.headers.get(*name)?.to_str().ok()?;
            let value: String = value.trim().to_ascii_lowercase().chars().take(24).collect();
            (!value.is_empty()).then_some(value)
        })
}

fn millis_of(side: &SideResult) -> Option<f64> {
    side.elapsed().map(|elapsed| elapsed.as_secs_f64() * 1000.0)
}

fn skip_reason(outcome: Outcome) -> Option<String> {
    match outcome {
        Outcome::Skipped(reason) => Some(reason.label().to_string()),
        _ => None,
    }
}

/// How long an idle comparison thread sleeps between looks at the queue.
const POLL_MIN: Duration = Duration::from_micros(500);
const POLL_MAX: Duration = Duration::from_millis(20);

/// Moves the calling thread to `SCHED_IDLE`: it runs only when no other
/// thread wants the CPU, so comparisons can never slow the proxy down.
/// Measured: with a 64 KB body at 2,000 req/s on two cores, p99 client
/// latency went from 86 ms to 2.7 ms (scripts/bench-proxy.sh).
fn run_on_spare_cpu_only() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadPriority,
            ThreadSchedulePolicy,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if let Err(err) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
            warn!(error = ?err, "cannot lower the comparison thread's priority; comparisons compete with the proxy for CPU");
        }
    }
}

fn compare_loop(from_proxy: &Mutex<Receiver<(Exchange, Ticket)>>, stopping: &AtomicBool, recorder: &Recorder) {
    // The thread polls instead of blocking in `recv`: a blocked receiver
    // makes every `try_send` on the hot path take the channel's waker lock,
    // and a low-priority thread preempted while holding that lock would
    // stall the proxy (priority inversion). Polling keeps the hot path
    // lock-free; the backoff keeps an idle instance quiet.
    let mut backoff = POLL_MIN;
    loop {
        let next = {
            let receiver = from_proxy.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            receiver.try_recv()
        };
        match next {
            Ok((exchange, ticket)) => {
                recorder.judge(exchange, ticket);
                backoff = POLL_MIN;
            }
            Err(TryRecvError::Empty) if stopping.load(Ordering::Acquire) => return,
            Err(TryRecvError::Empty) => {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(POLL_MAX);
            }
            Err(TryRecvError::Disconnected) => return,
        }
    }
}

impl Recorder {
    fn judge_once(&self, exchange: &Exchange) -> compare::Judgement {
        let ctx = Context {
            route: &exchange.route,
            method: &exchange.request.method,
            rules: &exchange.rules,
            ids: &*self.ids,
            decode_limit: self.decode_limit,
            want_patch: false,
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

    /// Judges an exchange; a divergence on a route with `recheck` is asked
    /// again before it counts, anything else is counted now. The ticket is
    /// released only once the exchange is counted.
    fn judge(&self, exchange: Exchange, ticket: Ticket) {
        let judgement = self.judge_once(&exchange);
        if let (Outcome::Diverged, Some(delay)) = (judgement.outcome, exchange.rules.recheck) {
            if is_safe(&exchange.request.method) {
                let recheck = Recheck {
                    exchange,
                    judgement,
                    ticket,
                    delay,
                };
                if let Err(mpsc::error::SendError(recheck)) = self.rechecks.send(recheck) {
                    // The recheck task is gone (shutting down): count what we know.
                    self.record(&recheck.exchange, recheck.judgement);
                }
                return;
            }
        }
        self.record(&exchange, judgement);
        drop(ticket);
    }

    /// Counts and keeps the outcome of a request that was not mirrored.
    fn record_direct(&self, request: &DirectRequest, result: &SideResult, reason: SkipReason) {
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
                state: if applied { "drift" } else { "ok" }.into(),
                attempts: 0,
                seq: i64::try_from(lanes::next_order()).unwrap_or(i64::MAX),
                replay: applied.then(|| serde_json::to_string(&detail).unwrap_or_default()),
                intent: None,
            }
        });
        if let Some(ledger) = ledger.as_ref().filter(|ledger| ledger.state == "drift") {
            self.metrics.record_drift(&request.route);
            warn!(request_id = %request.request_id, route = %request.route, reason = reason.label(), "a dual-write was not mirrored: drift");
            if let Some(entity) = &ledger.entity {
                self.hold(entity);
            }
        }
        self.record_unmirrored(request, result, outcome, ledger);
    }

    /// Marks an entity as drifted: its later writes are held for replay.
    fn hold(&self, entity: &str) {
        self.drifted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(entity.to_string());
    }

    /// Counts and keeps a request whose outcome was decided without a comparison.
    fn record_unmirrored(
        &self,
        request: &DirectRequest,
        result: &SideResult,
        outcome: Outcome,
        ledger: Option<LedgerRecord>,
    ) {
        if let Some(elapsed) = result.elapsed() {
            let backend = match request.serving {
                Side::Primary => &self.primary_name,
                Side::Shadow => &self.shadow_name,
            };
            self.metrics
                .observe_upstream(backend, &request.route, elapsed.as_secs_f64());
        }
        self.metrics.record_outcome(&request.route, request.method, outcome);
        let (primary, shadow) = request.serving.arrange(Some(result), None);
        self.writer.submit(ExchangeRecord {
            at_ms: crate::clock::unix_ms(request.started_at),
            request_id: request.request_id.clone(),
            route: request.route.clone(),
            method: request.method.to_string(),
            path: self.redactor.path(&request.path_and_query),
            source: "traffic".into(),
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
        });
    }

    /// Keeps an exchange: its row, and the groups its differences counted in.
    fn keep(&self, exchange: &Exchange, judgement: &compare::Judgement) {
        let method = method_label(&exchange.request.method);
        let mut groups: Vec<GroupRef> = Vec::new();
        // Only a divergence counts in groups: the differences of a racy,
        // transient or unmapped exchange are timing or a missing pair, not evidence.
        let counted = judgement
            .comparison
            .iter()
            .filter(|_| judgement.outcome == Outcome::Diverged);
        for difference in counted.flat_map(|c| c.differences.iter()) {
            if groups.iter().any(|g| g.key == difference.group_key) {
                continue;
            }
            let place = if difference.pattern.is_empty() {
                difference.location.label().to_string()
            } else {
                difference.pattern.clone()
            };
            groups.push(GroupRef {
                key: difference.group_key.clone(),
                route: exchange.route.clone(),
                method: method.to_string(),
                location: difference.location.label().to_string(),
                pattern: difference.pattern.clone(),
                kind: difference.kind.label().to_string(),
                severity: difference.severity.label().to_string(),
                summary: format!("{} at {place}", difference.kind.label()),
            });
        }
        let samples = self.samples_for(exchange, judgement, &groups);
        self.writer.submit(ExchangeRecord {
            at_ms: crate::clock::unix_ms(exchange.started_at),
            request_id: exchange.request_id.clone(),
            route: exchange.route.clone(),
            method: method.to_string(),
            path: self.redactor.path(&exchange.request.path_and_query),
            source: exchange.source.into(),
            primary_status: status_of(&exchange.primary),
            shadow_status: status_of(&exchange.shadow),
            primary_ms: millis_of(&exchange.primary),
            shadow_ms: millis_of(&exchange.shadow),
            outcome: judgement.outcome.label().into(),
            reason: skip_reason(judgement.outcome),
            primary_cache: cache_status(&exchange.primary),
            shadow_cache: cache_status(&exchange.shadow),
            groups,
            samples,
            learned_ids: exchange.write.as_ref().map(|w| w.learned.clone()).unwrap_or_default(),
            ledger: exchange.write.as_ref().map(|w| w.ledger.clone()),
        });
    }

    /// Samples for the groups that still want one: the exchange's
    /// differences, a unified diff and excerpts of both bodies, and the
    /// request, all redacted.
    fn samples_for(
        &self,
        exchange: &Exchange,
        judgement: &compare::Judgement,
        groups: &[GroupRef],
    ) -> Vec<SampleRecord> {
        let (Some(comparison), SideResult::Complete(primary), SideResult::Complete(shadow)) =
            (&judgement.comparison, &exchange.primary, &exchange.shadow)
        else {
            return Vec::new();
        };
        let wanted: Vec<&GroupRef> = {
            let mut sampled = self.sampled.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            groups
                .iter()
                .filter(|group| {
                    let taken = sampled.entry(group.key.clone()).or_insert(0);
                    let wants = *taken < self.samples_per_group;
                    *taken += u32::from(wants);
                    wants
                })
                .collect()
        };
        if wanted.is_empty() {
            return Vec::new();
        }
        let differences: Vec<compare::Difference> = comparison
            .differences
            .iter()
            .map(|difference| self.redact_difference(difference))
            .collect();
        let differences = serde_json::to_string(&differences).unwrap_or_default();
        let primary_text = self.render(&primary.headers, &primary.body);
        let shadow_text = self.render(&shadow.headers, &shadow.body);
        let unified = similar::TextDiff::from_lines(&primary_text, &shadow_text)
            .unified_diff()
            .context_radius(3)
            .header("primary", "shadow")
            .to_string();
        let request = serde_json::json!({
            "method": exchange.request.method.as_str(),
            "path": self.redactor.path(&exchange.request.path_and_query),
            "headers": self.redactor.headers(&exchange.request.headers),
            "body": clip(&self.render(&exchange.request.headers, &exchange.request.body), EXCERPT_LIMIT),
        })
        .to_string();
        wanted
            .into_iter()
            .map(|group| SampleRecord {
                group_key: group.key.clone(),
                differences: differences.clone(),
                unified_diff: Some(clip(&unified, DIFF_LIMIT)),
                request: request.clone(),
                primary_excerpt: Some(clip(&primary_text, EXCERPT_LIMIT)),
                shadow_excerpt: Some(clip(&shadow_text, EXCERPT_LIMIT)),
            })
            .collect()
    }

    /// A body as a person reads it, redacted: pretty JSON with secret fields
    /// replaced, form fields like query parameters, text as is.
    fn render(&self, headers: &HeaderMap, body: &bytes::Bytes) -> String {
        use compare::decode::{decode, media_type, Body};
        match decode(headers, body, self.decode_limit) {
            Ok(Body::Json(value)) => serde_json::to_string_pretty(&self.redactor.json(value)).unwrap_or_default(),
            Ok(Body::Text(text)) => {
                let content_type = headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("");
                if media_type(content_type).0 == "application/x-www-form-urlencoded" {
                    self.redactor.form(&text)
                } else {
                    text
                }
            }
            Ok(Body::Binary(bytes)) => format!("({} bytes, binary)", bytes.len()),
            Ok(Body::Empty) => String::new(),
            Err(err) => format!("(not decodable: {err})"),
        }
    }

    /// A difference with its values hidden when they sit at a secret place.
    fn redact_difference(&self, difference: &compare::Difference) -> compare::Difference {
        let secret = match difference.location {
            compare::Location::Header => self.redactor.is_secret_header(&difference.path),
            compare::Location::Body => self.redactor.is_secret_pointer(&difference.path),
            compare::Location::Status => false,
        };
        let mut kept = difference.clone();
        if secret {
            let hide = |value: &mut Option<String>| {
                if value.is_some() {
                    *value = Some(crate::redact::REDACTED.to_string());
                }
            };
            hide(&mut kept.primary);
            hide(&mut kept.shadow);
        }
        kept
    }

    /// Counts an exchange's outcome, keeps it, and lets the noise learner see it.
    fn record(&self, exchange: &Exchange, judgement: compare::Judgement) {
        self.keep(exchange, &judgement);
        let metrics = &self.metrics;
        let method = method_label(&exchange.request.method);
        if exchange.source == "sweep" {
            // Synthetic: counted apart, so traffic figures stay the clients'.
            metrics.record_sweep(&exchange.route, judgement.outcome);
        } else {
            metrics.record_outcome(&exchange.route, method, judgement.outcome);
        }
        if let Some(elapsed) = exchange.primary.elapsed() {
            metrics.observe_upstream(&self.primary_name, &exchange.route, elapsed.as_secs_f64());
        }
        if let Some(elapsed) = exchange.shadow.elapsed() {
            metrics.observe_upstream(&self.shadow_name, &exchange.route, elapsed.as_secs_f64());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_stops_at_max_body_and_gives_its_bytes_back() {
        let budget = MemoryBudget::new(1000);
        let mut capture = CaptureBuf::new(10, &budget);
        assert!(capture.push(b"12345"));
        assert_eq!(budget.used(), 5);
        assert!(!capture.push(b"678901"));
        assert_eq!(budget.used(), 0, "a given-up capture holds nothing");
        assert!(!capture.push(b"1"));
        assert_eq!(capture.finish().unwrap_err(), SkipReason::BodyTooLarge);
    }

    #[test]
    fn the_shared_budget_bounds_all_captures_together() {
        let budget = MemoryBudget::new(8);
        let mut first = CaptureBuf::new(100, &budget);
        let mut second = CaptureBuf::new(100, &budget);
        assert!(first.push(b"123456"));
        assert!(!second.push(b"123"), "only 2 bytes are left in the budget");
        assert_eq!(second.finish().unwrap_err(), SkipReason::QueueFull);
        let (bytes, reservation) = first.finish().unwrap();
        assert_eq!(bytes, "123456");
        assert_eq!(budget.used(), 6);
        let mut held = Reservation::empty(&budget);
        held.absorb(reservation);
        assert_eq!(budget.used(), 6, "absorbing moves bytes, it does not count them twice");
        drop(held);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn the_rate_limiter_allows_a_burst_of_one_second_then_refuses() {
        let limiter = RateLimiter::new(RateLimit { per_second: 5.0 });
        let allowed = (0..20).filter(|_| limiter.try_take()).count();
        assert_eq!(allowed, 5);
        let slow = RateLimiter::new(RateLimit { per_second: 0.1 });
        assert!(slow.try_take(), "a rate below 1/s still allows one request");
        assert!(!slow.try_take());
    }

    #[test]
    fn sampling_by_key_is_deterministic_and_close_to_the_fraction() {
        let route = Route::new(
            "r",
            "GET /x",
            MirrorPolicy::Compare,
            0.25,
            Some(SampleKey::Header(http::HeaderName::from_static("x-user"))),
        )
        .unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut sampled = 0;
        for user in 0..4000 {
            let mut headers = HeaderMap::new();
            headers.insert("x-user", user.to_string().parse().unwrap());
            let first = sampled_in(&route, &headers, ip);
            assert_eq!(first, sampled_in(&route, &headers, ip), "user {user}");
            sampled += usize::from(first);
        }
        assert!((800..1200).contains(&sampled), "{sampled} of 4000 at 0.25");
    }
}
