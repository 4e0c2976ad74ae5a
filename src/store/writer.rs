//! The store writer: one task that takes records from an inbox that never
//! blocks, writes them in batches, and keeps them through a store outage,
//! retrying with backoff. It must never make a client request wait, never
//! lose a record without counting it, and never say the store is healthy
//! while its writes fail.

use std::time::Duration;

use super::keep::MatchSampler;
use super::{redact_url, ExchangeRecord, KeepMatches, NoiseRecord, Record, Store, StoreOptions};

/// How the writer batches and where it writes.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub url: String,
    pub options: StoreOptions,
    /// Records written per transaction at most.
    pub batch: usize,
    /// Exchanges and samples older than this are pruned (groups stay).
    pub retention: Duration,
    /// Rollups older than this are pruned (at least `retention`).
    pub rollup_retention: Duration,
    /// Which plain matches keep their raw row (all are counted in the rollups).
    pub keep_matches: KeepMatches,
    /// How long a record may wait for its batch to fill.
    pub flush: Duration,
    /// Records held while the database is slow or away; past it they are lost (and counted).
    pub buffer: usize,
}

/// The store writer's inbox: never blocks, never awaits.
pub struct Writer {
    inbox: tokio::sync::mpsc::Sender<Queued>,
    stop: tokio::sync::watch::Sender<Stop>,
    metrics: crate::metrics::Metrics,
    last_loss_log: std::sync::Mutex<Option<std::time::Instant>>,
    health: std::sync::Arc<Health>,
}

/// A record in the inbox, with whoever waits for it to be committed.
struct Queued {
    record: Record,
    committed: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Where the writer is in stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stop {
    Running,
    /// Write what is held, then stop.
    Draining,
    /// Stop retrying: what is still held is counted as unwritten.
    GiveUp,
}

/// Whether the writer's writes succeed, for `/readyz` and for those who
/// wait on a commit.
#[derive(Debug)]
struct Health {
    /// Since when, and with what error, every write has failed.
    failing: std::sync::Mutex<Option<(std::time::Instant, String)>>,
    /// Counts failed writes: a waiter stops waiting at the next one.
    failures: tokio::sync::watch::Sender<u64>,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            failing: std::sync::Mutex::new(None),
            failures: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Health {
    fn failed(&self, error: String) {
        let mut failing = self.failing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let since = failing
            .as_ref()
            .map_or_else(std::time::Instant::now, |(since, _)| *since);
        *failing = Some((since, error));
        self.failures.send_modify(|failures| *failures += 1);
    }

    fn succeeded(&self) {
        *self.failing.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }
}

/// How a wait for a commit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    Committed,
    /// The store is failing (the record waits in the buffer, or was lost
    /// and counted): writes are not held back for it.
    StoreFailing,
    /// Not committed within the wait.
    Late,
}

/// What the writer could not write before it stopped: counted in
/// `cutover_store_records_lost_total` and said at shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Unwritten {
    /// Records of every kind.
    pub records: u64,
    pub exchanges: u64,
    /// Write ledger rows (one per write, whichever records carried it).
    pub ledger_rows: u64,
    /// ID pairs those writes taught.
    pub id_pairs: u64,
    /// Snapshots of learned noise.
    pub noise_snapshots: u64,
    /// Dual-write ledger rows written ahead of their exchange (pending or
    /// settled); the same writes' exchanges carry them again.
    pub write_intents: u64,
}

/// Counts unwritten records; a write's ledger row and ID pairs travel in
/// up to three records (pending intent, settled intent, exchange) and
/// count once.
#[derive(Default)]
struct Tally {
    left: Unwritten,
    writes: std::collections::HashSet<String>,
    pairs: std::collections::HashSet<(String, String)>,
}

impl Tally {
    fn count(&mut self, record: &Record) {
        self.left.records += 1;
        let (ledger, learned) = match record {
            Record::Exchange(exchange) | Record::Counted(exchange) => {
                self.left.exchanges += 1;
                (exchange.ledger.as_ref(), &exchange.learned_ids)
            }
            Record::Intent(intent) => {
                self.left.write_intents += 1;
                (Some(&intent.ledger), &intent.learned_ids)
            }
            Record::Noise(_) => {
                self.left.noise_snapshots += 1;
                return;
            }
        };
        match ledger.map(|ledger| ledger.intent.as_ref()) {
            Some(Some(intent)) => {
                self.writes.insert(intent.clone());
            }
            Some(None) => self.left.ledger_rows += 1,
            None => {}
        }
        for pair in learned {
            self.pairs.insert((pair.kind.clone(), pair.primary_id.clone()));
        }
    }

    fn done(self) -> Unwritten {
        Unwritten {
            ledger_rows: self.left.ledger_rows + self.writes.len() as u64,
            id_pairs: self.pairs.len() as u64,
            ..self.left
        }
    }
}

impl Writer {
    /// Starts the writer task. It connects (and migrates) lazily, retrying,
    /// so an unreachable database never keeps the proxy from serving.
    pub fn start(
        config: WriterConfig,
        metrics: crate::metrics::Metrics,
    ) -> (std::sync::Arc<Writer>, tokio::task::JoinHandle<Unwritten>) {
        let (inbox, records) = tokio::sync::mpsc::channel(config.buffer.max(1));
        let (stop, stopping) = tokio::sync::watch::channel(Stop::Running);
        let health = std::sync::Arc::new(Health::default());
        tokio::spawn(prune_loop(config.clone(), stopping.clone()));
        let task = tokio::spawn(write_loop(
            config,
            records,
            stopping,
            metrics.clone(),
            std::sync::Arc::clone(&health),
        ));
        let writer = Writer {
            inbox,
            stop,
            metrics,
            last_loss_log: std::sync::Mutex::new(None),
            health,
        };
        (std::sync::Arc::new(writer), task)
    }

    /// Queues a record for writing; when the buffer is full the record is
    /// lost, counted in `cutover_store_records_lost_total`, and logged at
    /// most every ten seconds.
    pub fn submit(&self, record: ExchangeRecord) {
        self.submit_record(Record::Exchange(record));
    }

    /// Queues a snapshot of learned noise (same rules as [`Writer::submit`]).
    pub fn submit_noise(&self, noise: Vec<NoiseRecord>) {
        if !noise.is_empty() {
            self.submit_record(Record::Noise(noise));
        }
    }

    /// Queues a record and waits, at most `wait`, until it is committed.
    /// Its batch is written at once, not after `flush` (group commit of
    /// what has arrived). A store that is failing, or fails meanwhile,
    /// ends the wait: the record stays buffered (or is counted lost).
    pub async fn write_durably(&self, record: Record, wait: Duration) -> Commit {
        if self.is_failing() {
            self.submit_record(record);
            return Commit::StoreFailing;
        }
        let mut failures = self.health.failures.subscribe();
        let (committed, receiver) = tokio::sync::oneshot::channel();
        if !self.queue(record, Some(committed)) {
            return Commit::StoreFailing;
        }
        tokio::select! {
            written = receiver => match written {
                Ok(()) => Commit::Committed,
                Err(_) => Commit::StoreFailing,
            },
            _ = failures.changed() => Commit::StoreFailing,
            () = tokio::time::sleep(wait) => Commit::Late,
        }
    }

    fn submit_record(&self, record: Record) {
        self.queue(record, None);
    }

    fn queue(&self, record: Record, committed: Option<tokio::sync::oneshot::Sender<()>>) -> bool {
        match self.inbox.try_send(Queued { record, committed }) {
            Ok(()) => {
                self.metrics.store_pending().inc();
                true
            }
            Err(_) => {
                self.metrics.store_records_lost().inc();
                let mut last = self
                    .last_loss_log
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                    *last = Some(std::time::Instant::now());
                    tracing::warn!(
                        lost_so_far = self.metrics.store_records_lost().get(),
                        "store buffer full: records are being dropped (the database is down or too slow)"
                    );
                }
                false
            }
        }
    }

    /// Asks the writer to write what it holds and stop.
    pub fn stop(&self) {
        self.stop.send_if_modified(|stop| {
            let changed = *stop < Stop::Draining;
            *stop = (*stop).max(Stop::Draining);
            changed
        });
    }

    /// Tells a stopping writer to stop retrying: its task ends with what it
    /// could not write (see [`Unwritten`]).
    pub fn give_up(&self) {
        let _ = self.stop.send(Stop::GiveUp);
    }

    fn is_failing(&self) -> bool {
        self.health
            .failing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some()
    }

    /// Why writes are failing, while they are: for how long, the last
    /// error, and how many records wait.
    pub fn failing(&self) -> Option<String> {
        let failing = self
            .health
            .failing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        failing.as_ref().map(|(since, error)| {
            format!(
                "writes failing for {}s ({error}); {} records waiting",
                since.elapsed().as_secs(),
                self.metrics.store_pending().get()
            )
        })
    }
}

async fn write_loop(
    config: WriterConfig,
    mut records: tokio::sync::mpsc::Receiver<Queued>,
    mut stopping: tokio::sync::watch::Receiver<Stop>,
    metrics: crate::metrics::Metrics,
    health: std::sync::Arc<Health>,
) -> Unwritten {
    let mut connection = Connection {
        config: &config,
        store: None,
        answered_once: false,
        backoff: RETRY_MIN,
    };
    let mut batch = Batch {
        records: Vec::with_capacity(config.batch),
        waiting: Vec::new(),
        sampler: MatchSampler::new(config.keep_matches),
        rows_left_out: 0,
    };
    loop {
        if batch.records.is_empty() {
            tokio::select! {
                received = records.recv() => match received {
                    Some(queued) => batch.push(queued),
                    None => return Unwritten::default(),
                },
                _ = stopping.wait_for(|stop| *stop >= Stop::Draining) => {
                    // Take what is already queued, write it, and stop.
                    records.close();
                    while let Ok(queued) = records.try_recv() {
                        batch.push(queued);
                    }
                    if batch.records.is_empty() {
                        return Unwritten::default();
                    }
                }
            }
        }
        fill(&config, &mut batch, &mut records, &mut stopping).await;
        // Write the batch, retrying while the database is away; the inbox keeps buffering meanwhile.
        loop {
            match connection.write(&batch.records).await {
                Ok(()) => {
                    health.succeeded();
                    metrics.store_pending().sub(batch.records.len() as i64);
                    metrics.store_rows_left_out().inc_by(batch.rows_left_out);
                    batch.committed();
                    break;
                }
                Err(err) => {
                    metrics.store_write_failures().inc();
                    health.failed(err.to_string());
                    tracing::warn!(error = %err, retry_in = ?connection.backoff, pending = metrics.store_pending().get(), "store write failed");
                    if !connection.wait_to_retry(&mut stopping).await {
                        return unwritten(batch, records, &metrics);
                    }
                }
            }
        }
    }
}

/// Fills a batch by looking at the inbox every FILL_CHECK, not by waiting
/// on it: a waiting receiver is woken by every record, and the comparison
/// threads that send them are outside the runtime, so each wake-up is a
/// thread hand-off (measured: a fifth of the comparison threads' time went
/// to waking this task).
/// Someone waiting for a commit ends the filling at once: group commit
/// of what has arrived, not a wait for more.
async fn fill(
    config: &WriterConfig,
    batch: &mut Batch,
    records: &mut tokio::sync::mpsc::Receiver<Queued>,
    stopping: &mut tokio::sync::watch::Receiver<Stop>,
) {
    let deadline = tokio::time::Instant::now() + config.flush;
    loop {
        while !batch.is_full(config.batch) {
            match records.try_recv() {
                Ok(queued) => batch.push(queued),
                Err(_) => break,
            }
        }
        let now = tokio::time::Instant::now();
        let stopping_now = *stopping.borrow() >= Stop::Draining;
        let full = batch.is_full(config.batch) || !batch.waiting.is_empty();
        if full || now >= deadline || stopping_now || records.is_closed() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.min(now + FILL_CHECK)) => {}
            _ = stopping.wait_for(|stop| *stop >= Stop::Draining) => {}
        }
    }
}

/// The records of one transaction, and who waits for its commit.
struct Batch {
    records: Vec<Record>,
    waiting: Vec<tokio::sync::oneshot::Sender<()>>,
    /// Chooses the matches whose row is kept, once, as they arrive: a
    /// batch that is retried keeps the same rows.
    sampler: MatchSampler,
    /// Of `records`, those counted in the rollups only.
    rows_left_out: u64,
}

impl Batch {
    fn push(&mut self, queued: Queued) {
        let record = match queued.record {
            Record::Exchange(exchange) if !self.sampler.keeps(&exchange) => {
                self.rows_left_out += 1;
                Record::Counted(exchange)
            }
            record => record,
        };
        self.records.push(record);
        self.waiting.extend(queued.committed);
    }

    /// Whether the batch holds `rows` rows, or so many exchanges counted in
    /// the rollups only that it is written anyway. A matched exchange left
    /// out of the sample writes no row, so it does not make the batch full:
    /// at a few thousand requests a second, mostly matches, that is one
    /// transaction per `store.flush` instead of one per `store.batch`
    /// requests, and the counted ones stay bounded.
    fn is_full(&self, rows: usize) -> bool {
        let counted = usize::try_from(self.rows_left_out).unwrap_or(usize::MAX);
        self.records.len().saturating_sub(counted) >= rows || counted >= rows.saturating_mul(COUNTED_PER_ROW)
    }

    fn committed(&mut self) {
        self.rows_left_out = 0;
        self.records.clear();
        for waiter in self.waiting.drain(..) {
            let _ = waiter.send(());
        }
    }
}

/// The writer's store, opened (and migrated) lazily and opened afresh after
/// a failed write.
struct Connection<'a> {
    config: &'a WriterConfig,
    store: Option<Store>,
    /// Whether the store ever answered: if not, stopping does not wait for it.
    answered_once: bool,
    backoff: Duration,
}

impl Connection<'_> {
    async fn write(&mut self, batch: &[Record]) -> Result<(), super::StoreError> {
        let store = match self.store.take() {
            Some(store) => store,
            None => {
                let opened = Store::open(&self.config.url, &self.config.options).await?;
                tracing::info!(store = %redact_url(&self.config.url), "store connected");
                self.answered_once = true;
                opened
            }
        };
        match store.write(batch).await {
            Ok(()) => {
                if self.backoff != RETRY_MIN {
                    // Back from a failure (a full disk, above all): give the
                    // space the WAL grew into back before the next one.
                    store.reclaim_wal().await;
                }
                self.store = Some(store);
                self.backoff = RETRY_MIN;
                Ok(())
            }
            Err(err) => {
                // The failed connection is closed already (see
                // `discard_if_failed`); a store that failed is opened
                // afresh, so a pool left in a bad state is not kept.
                store.close().await;
                Err(err)
            }
        }
    }

    /// Waits out the backoff (doubling, with up to 50% jitter). False when
    /// the writer must stop instead: told to give up, or stopping with a
    /// store that never answered.
    async fn wait_to_retry(&mut self, stopping: &mut tokio::sync::watch::Receiver<Stop>) -> bool {
        let jitter = self.backoff.mul_f64(rand::random::<f64>() * 0.5);
        let pause = self.backoff + jitter;
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
        let answered_once = self.answered_once;
        let must_stop = move |stop: &Stop| *stop == Stop::GiveUp || (*stop == Stop::Draining && !answered_once);
        if must_stop(&stopping.borrow()) {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => true,
            _ = stopping.wait_for(must_stop) => false,
        }
    }
}

/// Counts what is left (the batch and the inbox) as lost.
fn unwritten(
    batch: Batch,
    mut records: tokio::sync::mpsc::Receiver<Queued>,
    metrics: &crate::metrics::Metrics,
) -> Unwritten {
    records.close();
    let mut tally = Tally::default();
    for record in &batch.records {
        tally.count(record);
    }
    while let Ok(queued) = records.try_recv() {
        tally.count(&queued.record);
    }
    let left = tally.done();
    let records = i64::try_from(left.records).unwrap_or(i64::MAX);
    metrics.store_pending().sub(records);
    metrics.store_records_lost().inc_by(left.records);
    left
}

/// Prunes exchanges and samples past the retention, and rollups past
/// theirs, now and every ten minutes, on a connection of its own so writes
/// never wait for it.
async fn prune_loop(config: WriterConfig, mut stopping: tokio::sync::watch::Receiver<Stop>) {
    let mut store: Option<Store> = None;
    loop {
        if store.is_none() {
            store = Store::open(&config.url, &config.options).await.ok();
        }
        if let Some(store) = &store {
            let cutoff = crate::clock::ms_ago(config.retention);
            match store.prune(cutoff).await {
                Ok((0, 0)) => {}
                Ok((exchanges, samples)) => tracing::info!(exchanges, samples, "pruned evidence past the retention"),
                Err(err) => tracing::warn!(error = %err, "pruning the store failed"),
            }
            match store.compact_latency(crate::clock::ms_ago(LATENCY_BY_MINUTE_FOR)).await {
                Ok(0) => {}
                Ok(rows) => tracing::debug!(rows, "folded latency buckets into hours"),
                Err(err) => tracing::warn!(error = %err, "folding latency buckets into hours failed"),
            }
            match store.prune_rollups(crate::clock::ms_ago(config.rollup_retention)).await {
                Ok(0) => {}
                Ok(rows) => tracing::info!(rows, "pruned rollups past store.rollup_retention"),
                Err(err) => tracing::warn!(error = %err, "pruning the rollups failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = stopping.wait_for(|stop| *stop >= Stop::Draining) => return,
        }
    }
}

const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// How long latency buckets stay per minute before they are folded into
/// hours (counts stay per minute).
const LATENCY_BY_MINUTE_FOR: Duration = Duration::from_secs(2 * 3600);

/// Retry delays of the writer (doubling, with up to 50% jitter).
const RETRY_MIN: Duration = Duration::from_millis(100);
/// How many exchanges counted in the rollups only a batch holds, per row
/// of `store.batch`, before it is written without waiting for its rows.
const COUNTED_PER_ROW: usize = 10;
/// How often a filling batch takes what arrived in the inbox.
const FILL_CHECK: Duration = Duration::from_millis(10);
/// Low enough that a store back from an outage (a full disk freed, a
/// database restarted) is written to within seconds, whatever the outage's
/// length: one attempt every 4–6 s costs a down store nothing.
const RETRY_MAX: Duration = Duration::from_secs(4);

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(outcome: &str) -> Queued {
        let exchange = ExchangeRecord {
            route: "tasks".into(),
            method: "GET".into(),
            source: "traffic".into(),
            outcome: outcome.into(),
            ..ExchangeRecord::default()
        };
        Queued {
            record: Record::Exchange(exchange),
            committed: None,
        }
    }

    fn batch() -> Batch {
        Batch {
            records: Vec::new(),
            waiting: Vec::new(),
            sampler: MatchSampler::new(KeepMatches::PerSecond(0.0)),
            rows_left_out: 0,
        }
    }

    #[test]
    fn matches_left_out_of_the_sample_do_not_fill_a_batch_of_rows() {
        let mut batch = batch();
        for _ in 0..1_999 {
            batch.push(queued("match"));
        }
        assert_eq!(batch.rows_left_out, 1_999);
        assert!(!batch.is_full(200), "1,999 counted exchanges and no row");
        batch.push(queued("match"));
        assert!(
            batch.is_full(200),
            "ten times the batch of counted exchanges is written anyway"
        );
    }

    #[test]
    fn rows_fill_a_batch_whatever_is_counted_beside_them() {
        let mut batch = batch();
        for _ in 0..500 {
            batch.push(queued("match"));
        }
        for _ in 0..199 {
            batch.push(queued("diverged"));
        }
        assert!(!batch.is_full(200));
        batch.push(queued("diverged"));
        assert!(batch.is_full(200), "200 rows");
    }
}
