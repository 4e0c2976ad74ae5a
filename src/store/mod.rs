//! The divergence store: SQLite (the embedded default, a file created if
//! missing, WAL mode) or PostgreSQL, chosen by the URL's scheme. Runtime
//! queries through sqlx's `Any` driver: one code path for both databases,
//! with migrations per database under `migrations/`.
//!
//! Must never: be awaited on the proxy's hot path, or store anything that
//! was not redacted first.

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

mod writer;

pub use crate::ledger::{LedgerRecord, LedgerState};

pub use writer::{Commit, Unwritten, Writer, WriterConfig};

/// Where the store lives when neither `--store` nor the config says.
pub const DEFAULT_URL: &str = "sqlite://cutover.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store URL \"{0}\": expected sqlite://PATH or postgres://…")]
    Scheme(String),
    #[error("store {url}: cannot connect: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("store: migrating the schema failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store: {0}")]
    Query(#[from] sqlx::Error),
    #[error("store: write_ledger row {id} has state \"{state}\", which this version does not know")]
    UnknownLedgerState { id: i64, state: String },
}

/// Which database a store URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    pub fn of(url: &str) -> Option<Engine> {
        if url.starts_with("sqlite:") {
            Some(Engine::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Engine::Postgres)
        } else {
            None
        }
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    /// How long to wait for a connection (also bounds connecting).
    pub acquire_timeout: Duration,
    /// Samples kept per divergence group.
    pub samples_per_group: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 5,
            acquire_timeout: Duration::from_secs(5),
            samples_per_group: 5,
        }
    }
}

/// One divergence group an exchange counted in.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRef {
    pub key: String,
    pub route: String,
    pub method: String,
    pub location: String,
    pub pattern: String,
    pub kind: String,
    pub severity: String,
    pub summary: String,
}

/// One observed request, as kept (already redacted).
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeRecord {
    pub at_ms: i64,
    pub request_id: String,
    pub route: String,
    pub method: String,
    pub path: String,
    pub source: String,
    pub primary_status: Option<i64>,
    pub shadow_status: Option<i64>,
    pub primary_ms: Option<f64>,
    pub shadow_ms: Option<f64>,
    pub outcome: String,
    pub reason: Option<String>,
    pub groups: Vec<GroupRef>,
    /// Samples for some of those groups (the store keeps at most `samples_per_group`).
    pub samples: Vec<SampleRecord>,
    /// What each side's cache said (`x-vercel-cache`, `cf-cache-status`, `x-cache`), lowercase.
    pub primary_cache: Option<String>,
    pub shadow_cache: Option<String>,
    /// ID pairs this exchange taught (`learn_ids`), kept with it.
    pub learned_ids: Vec<crate::exchange::IdPair>,
    /// The write ledger row, for a mirrored write.
    pub ledger: Option<LedgerRecord>,
}

impl ExchangeRecord {
    /// Whether the exchange is a row and nothing else: no groups, samples,
    /// learned IDs or ledger row need its id.
    fn is_plain(&self) -> bool {
        self.groups.is_empty() && self.samples.is_empty() && self.learned_ids.is_empty() && self.ledger.is_none()
    }
}

impl Record {
    /// The exchange, when it is a row and nothing else.
    fn plain_exchange(&self) -> Option<&ExchangeRecord> {
        match self {
            Record::Exchange(exchange) if exchange.is_plain() => Some(exchange),
            _ => None,
        }
    }
}

/// The columns of an `exchanges` row, in the order [`bind_exchange`] binds them.
const EXCHANGE_COLUMNS: [&str; 14] = [
    "at_ms",
    "request_id",
    "route",
    "method",
    "path",
    "source",
    "primary_status",
    "shadow_status",
    "primary_ms",
    "shadow_ms",
    "outcome",
    "reason",
    "primary_cache",
    "shadow_cache",
];

/// Rows per multi-row insert: 14 parameters each stays far below SQLite's
/// (32,766) and PostgreSQL's (65,535) limits.
const ROWS_PER_INSERT: usize = 100;

/// `INSERT INTO exchanges (…) VALUES (…), (…), …` for `rows` rows, with
/// the engine's placeholders: `$1, $2, …` for PostgreSQL, plain `?` for
/// SQLite. Numbered placeholders are named parameters to SQLite, and
/// binding each one looks its name up in a list as long as the statement:
/// quadratic in the row count (measured: a fifth of the machine's CPU at
/// 10,000 rows/s with 100-row statements). Anonymous ones bind in order.
fn multi_row_insert(rows: usize, engine: Engine) -> String {
    let mut sql = format!("INSERT INTO exchanges ({}) VALUES ", EXCHANGE_COLUMNS.join(", "));
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..EXCHANGE_COLUMNS.len() {
            if column > 0 {
                sql.push_str(", ");
            }
            match engine {
                Engine::Sqlite => sql.push('?'),
                Engine::Postgres => sql.push_str(&format!("${}", row * EXCHANGE_COLUMNS.len() + column + 1)),
            }
        }
        sql.push(')');
    }
    sql
}

/// The statements every batch uses, built once per engine.
struct ExchangeInserts {
    full: String,
    single: String,
}

impl ExchangeInserts {
    fn of(engine: Engine) -> &'static ExchangeInserts {
        static SQLITE: std::sync::LazyLock<ExchangeInserts> =
            std::sync::LazyLock::new(|| ExchangeInserts::build(Engine::Sqlite));
        static POSTGRES: std::sync::LazyLock<ExchangeInserts> =
            std::sync::LazyLock::new(|| ExchangeInserts::build(Engine::Postgres));
        match engine {
            Engine::Sqlite => &SQLITE,
            Engine::Postgres => &POSTGRES,
        }
    }

    fn build(engine: Engine) -> ExchangeInserts {
        ExchangeInserts {
            full: multi_row_insert(ROWS_PER_INSERT, engine),
            single: format!("{} RETURNING id", multi_row_insert(1, engine)),
        }
    }
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

fn bind_exchange<'q>(query: Query<'q>, exchange: &'q ExchangeRecord) -> Query<'q> {
    query
        .bind(exchange.at_ms)
        .bind(&exchange.request_id)
        .bind(&exchange.route)
        .bind(&exchange.method)
        .bind(&exchange.path)
        .bind(&exchange.source)
        .bind(exchange.primary_status)
        .bind(exchange.shadow_status)
        .bind(exchange.primary_ms)
        .bind(exchange.shadow_ms)
        .bind(&exchange.outcome)
        .bind(&exchange.reason)
        .bind(&exchange.primary_cache)
        .bind(&exchange.shadow_cache)
}

/// What the writer writes.
// Nearly every record is an exchange: boxing it would cost an allocation
// per request to save space only on the rare noise snapshot.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Exchange(ExchangeRecord),
    /// A snapshot of the paths learned as noise.
    Noise(Vec<NoiseRecord>),
    /// A dual-write's ledger row, by its intent (see [`IntentRecord`]).
    Intent(IntentRecord),
}

/// A dual-write's ledger row, keyed by its intent: written `pending` before
/// the write is sent to the other side, then settled with the answer and
/// the ID pairs it taught before the entity's next write is translated.
/// The exchange's own record later settles it too, unless it is settled.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentRecord {
    /// The instance that sent the write; its next start settles what it left pending.
    pub instance: String,
    pub at_ms: i64,
    pub route: String,
    pub method: String,
    pub path: String,
    /// With `intent` set; state `pending` until the answer is known.
    pub ledger: LedgerRecord,
    pub learned_ids: Vec<crate::exchange::IdPair>,
}

/// Inserts a ledger row, or settles the row of the same intent; a settled
/// row is never set back to pending, and a row without an intent (NULL is
/// never a conflict) is always inserted.
const LEDGER_UPSERT: &str = "INSERT INTO write_ledger (at_ms, route, method, path, entity, primary_status, \
     shadow_status, primary_ms, shadow_ms, state, attempts, replay, updated_ms, seq, intent, instance) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
     ON CONFLICT (intent) DO UPDATE SET primary_status = excluded.primary_status, \
     shadow_status = excluded.shadow_status, primary_ms = excluded.primary_ms, shadow_ms = excluded.shadow_ms, \
     state = excluded.state, attempts = excluded.attempts, replay = excluded.replay, updated_ms = excluded.updated_ms \
     WHERE write_ledger.state = 'pending'";

/// One `write_ledger` row to insert.
struct LedgerInsert<'a> {
    at_ms: i64,
    route: &'a str,
    method: &'a str,
    path: &'a str,
    ledger: &'a LedgerRecord,
    instance: Option<&'a str>,
}

impl LedgerInsert<'_> {
    async fn upsert(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<(), StoreError> {
        let ledger = self.ledger;
        sqlx::query(LEDGER_UPSERT)
            .bind(self.at_ms)
            .bind(self.route)
            .bind(self.method)
            .bind(self.path)
            .bind(&ledger.entity)
            .bind(ledger.primary_status)
            .bind(ledger.shadow_status)
            .bind(ledger.primary_ms)
            .bind(ledger.shadow_ms)
            .bind(ledger.state.label())
            .bind(ledger.attempts)
            .bind(&ledger.replay)
            .bind(crate::clock::now_ms().max(self.at_ms))
            .bind(ledger.seq)
            .bind(&ledger.intent)
            .bind(self.instance)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// A path learned as noise.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseRecord {
    pub route: String,
    pub pattern: String,
    pub side: String,
    pub observations: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

/// A write ledger row as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LedgerRow {
    pub id: i64,
    pub at_ms: i64,
    pub route: String,
    pub method: String,
    pub path: String,
    pub entity: Option<String>,
    pub primary_status: Option<i64>,
    pub shadow_status: Option<i64>,
    pub state: LedgerState,
    pub attempts: i64,
    #[serde(skip)]
    pub replay: Option<String>,
    pub updated_ms: i64,
}

/// One example of a divergence group, already redacted.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRecord {
    pub group_key: String,
    /// JSON: the exchange's structured differences.
    pub differences: String,
    pub unified_diff: Option<String>,
    /// JSON: method, path, headers and body excerpt of the request.
    pub request: String,
    pub primary_excerpt: Option<String>,
    pub shadow_excerpt: Option<String>,
}

/// A stored sample, for the admin API.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SampleRow {
    pub at_ms: i64,
    pub differences: serde_json::Value,
    pub unified_diff: Option<String>,
    pub request: serde_json::Value,
    pub primary_excerpt: Option<String>,
    pub shadow_excerpt: Option<String>,
}

/// One route's counts, for the admin summary.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RouteSummary {
    pub route: String,
    pub requests: i64,
    /// Exchanges that were compared (match, diverged or transient).
    pub compared: i64,
    pub outcomes: Vec<(String, i64)>,
    /// Groups still open (or marked bug).
    pub open_groups: i64,
}

/// Which divergence groups to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupFilter {
    pub route: Option<String>,
    pub status: Option<String>,
    pub severity: Option<String>,
    /// Text searched in the group's summary and path pattern.
    pub q: Option<String>,
    pub since_ms: Option<i64>,
    /// Where the previous page ended.
    pub cursor: Option<String>,
}

enum Bind {
    Text(String),
    Int(i64),
}

/// A divergence group as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GroupRow {
    pub key: String,
    pub route: String,
    pub pattern: String,
    pub kind: String,
    pub severity: String,
    pub count: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub status: String,
}

/// A connected store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
    samples_per_group: u32,
}

impl Store {
    /// Connects (creating a SQLite file if missing) without migrating.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        let engine = Engine::of(url).ok_or_else(|| StoreError::Scheme(url.to_string()))?;
        sqlx::any::install_default_drivers();
        let in_memory = url.contains(":memory:");
        let url_to_open = match engine {
            Engine::Sqlite if !url.contains("mode=") && !in_memory => {
                let separator = if url.contains('?') { '&' } else { '?' };
                format!("{url}{separator}mode=rwc")
            }
            _ => url.to_string(),
        };
        // Every connection to an in-memory SQLite database has its own database.
        let max_connections = if in_memory { 1 } else { options.max_connections };
        let mut pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(options.acquire_timeout);
        if engine == Engine::Sqlite {
            pool = pool.after_connect(|connection, _| {
                Box::pin(async move {
                    // WAL lets readers (reports) run while the writer writes.
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *connection)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout = 5000")
                        .execute(&mut *connection)
                        .await?;
                    sqlx::query("PRAGMA foreign_keys = ON")
                        .execute(&mut *connection)
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = pool.connect(&url_to_open).await.map_err(|source| StoreError::Connect {
            url: redact_url(url),
            source,
        })?;
        Ok(Store {
            pool,
            engine,
            samples_per_group: options.samples_per_group,
        })
    }

    /// Connects and brings the schema up to date.
    pub async fn open(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        let store = Store::connect(url, options).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// The pool, for aggregate queries of other modules (the report).
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Applies the migrations this build carries that the database lacks.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        // Several parts of one instance open the store at startup; SQLite has
        // no migration lock of its own (Postgres takes an advisory lock), so
        // migrations run one at a time here, and a race with another process
        // is retried once (the second run finds the work done).
        static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _turn = ONE_AT_A_TIME.lock().await;
        match self.run_migrations().await {
            Err(StoreError::Migrate(_)) if self.engine == Engine::Sqlite => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                self.run_migrations().await
            }
            other => other,
        }
    }

    async fn run_migrations(&self) -> Result<(), StoreError> {
        match self.engine {
            Engine::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Engine::Postgres => sqlx::migrate!("migrations/postgres").run(&self.pool).await?,
        }
        Ok(())
    }

    /// Writes a batch of exchanges in one transaction: each exchange, the
    /// groups it counted in (created, or counted once more), and the links.
    pub async fn record(&self, batch: &[ExchangeRecord]) -> Result<(), StoreError> {
        let records: Vec<Record> = batch.iter().cloned().map(Record::Exchange).collect();
        self.write(&records).await
    }

    /// Writes a batch of records in one transaction.
    pub async fn write(&self, batch: &[Record]) -> Result<(), StoreError> {
        let mut connection = self.pool.acquire().await?;
        let written = async {
            let mut tx = sqlx::Connection::begin(&mut *connection).await?;
            self.write_in(&mut tx, batch).await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        discard_if_failed(connection, written).await
    }

    async fn write_in(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>, batch: &[Record]) -> Result<(), StoreError> {
        // Most exchanges are a row and nothing else (a match): those go in
        // multi-row statements, one round trip for many rows instead of one
        // each. The rest need their row id for what hangs off them.
        let plain: Vec<&ExchangeRecord> = batch.iter().filter_map(Record::plain_exchange).collect();
        let inserts = ExchangeInserts::of(self.engine);
        for rows in plain.chunks(ROWS_PER_INSERT) {
            let sql: std::borrow::Cow<'static, str> = if rows.len() == ROWS_PER_INSERT {
                inserts.full.as_str().into()
            } else {
                multi_row_insert(rows.len(), self.engine).into()
            };
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for exchange in rows {
                query = bind_exchange(query, exchange);
            }
            query.execute(&mut **tx).await?;
        }
        for record in batch.iter().filter(|record| record.plain_exchange().is_none()) {
            let exchange = match record {
                Record::Exchange(exchange) => exchange,
                Record::Intent(intent) => {
                    let row = LedgerInsert {
                        at_ms: intent.at_ms,
                        route: &intent.route,
                        method: &intent.method,
                        path: &intent.path,
                        ledger: &intent.ledger,
                        instance: Some(&intent.instance),
                    };
                    row.upsert(tx).await?;
                    insert_pairs(tx, &intent.learned_ids, "learned", intent.at_ms).await?;
                    continue;
                }
                Record::Noise(noise) => {
                    for learned in noise {
                        sqlx::query(
                            "INSERT INTO learned_noise (route, pattern, side, observations, first_seen_ms, last_seen_ms) \
                             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (route, pattern, side) DO UPDATE SET \
                             observations = excluded.observations, last_seen_ms = excluded.last_seen_ms",
                        )
                        .bind(&learned.route)
                        .bind(&learned.pattern)
                        .bind(&learned.side)
                        .bind(learned.observations)
                        .bind(learned.first_seen_ms)
                        .bind(learned.last_seen_ms)
                        .execute(&mut **tx)
                        .await?;
                    }
                    continue;
                }
            };
            let row = bind_exchange(sqlx::query(inserts.single.as_str()), exchange)
                .fetch_one(&mut **tx)
                .await?;
            let exchange_id: i64 = row.try_get(0)?;
            for group in &exchange.groups {
                sqlx::query(
                    "INSERT INTO divergence_groups (group_key, route, method, location, pattern, kind, severity, \
                     summary, first_seen_ms, last_seen_ms, count) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, 1) \
                     ON CONFLICT (group_key) DO UPDATE SET count = divergence_groups.count + 1, \
                     first_seen_ms = CASE WHEN excluded.first_seen_ms < divergence_groups.first_seen_ms \
                     THEN excluded.first_seen_ms ELSE divergence_groups.first_seen_ms END, \
                     last_seen_ms = CASE WHEN excluded.last_seen_ms > divergence_groups.last_seen_ms \
                     THEN excluded.last_seen_ms ELSE divergence_groups.last_seen_ms END",
                )
                .bind(&group.key)
                .bind(&group.route)
                .bind(&group.method)
                .bind(&group.location)
                .bind(&group.pattern)
                .bind(&group.kind)
                .bind(&group.severity)
                .bind(&group.summary)
                .bind(exchange.at_ms)
                .execute(&mut **tx)
                .await?;
                sqlx::query(
                    "INSERT INTO exchange_groups (exchange_id, group_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(exchange_id)
                .bind(&group.key)
                .execute(&mut **tx)
                .await?;
            }
            if let Some(ledger) = &exchange.ledger {
                let row = LedgerInsert {
                    at_ms: exchange.at_ms,
                    route: &exchange.route,
                    method: &exchange.method,
                    path: &exchange.path,
                    ledger,
                    instance: None,
                };
                row.upsert(tx).await?;
            }
            insert_pairs(tx, &exchange.learned_ids, "learned", exchange.at_ms).await?;
            for sample in &exchange.samples {
                // The count guard holds across restarts and replicas.
                sqlx::query(
                    "INSERT INTO divergence_samples (group_key, exchange_id, at_ms, differences, unified_diff, request, \
                     primary_excerpt, shadow_excerpt) \
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
                     WHERE (SELECT COUNT(*) FROM divergence_samples WHERE group_key = $1) < $9",
                )
                .bind(&sample.group_key)
                .bind(exchange_id)
                .bind(exchange.at_ms)
                .bind(&sample.differences)
                .bind(&sample.unified_diff)
                .bind(&sample.request)
                .bind(&sample.primary_excerpt)
                .bind(&sample.shadow_excerpt)
                .bind(i64::from(self.samples_per_group))
                .execute(&mut **tx)
                .await?;
            }
        }
        Ok(())
    }

    /// Adds ID pairs; pairs whose primary or shadow ID is already paired
    /// are left out (the first pair wins, on every replica). Returns how many were added.
    pub async fn insert_id_pairs(
        &self,
        pairs: &[crate::exchange::IdPair],
        origin: &str,
        at_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut connection = self.pool.acquire().await?;
        let added = async {
            let mut tx = sqlx::Connection::begin(&mut *connection).await?;
            let added = insert_pairs(&mut tx, pairs, origin, at_ms).await?;
            tx.commit().await?;
            Ok(added)
        }
        .await;
        discard_if_failed(connection, added).await
    }

    /// The pair holding `id` on side `known` (the primary's or the shadow's ID).
    pub async fn id_pair_of(
        &self,
        kind: &str,
        id: &str,
        known: crate::exchange::Side,
    ) -> Result<Option<crate::exchange::IdPair>, StoreError> {
        let query = match known {
            crate::exchange::Side::Primary => {
                "SELECT primary_id, shadow_id FROM id_map WHERE kind = $1 AND primary_id = $2"
            }
            crate::exchange::Side::Shadow => {
                "SELECT primary_id, shadow_id FROM id_map WHERE kind = $1 AND shadow_id = $2"
            }
        };
        let row = sqlx::query(query)
            .bind(kind)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(crate::exchange::IdPair {
                kind: kind.to_string(),
                primary_id: row.try_get(0)?,
                shadow_id: row.try_get(1)?,
            })
        })
        .transpose()
    }

    /// ID pairs created at or after a time (other instances' learning).
    pub async fn id_pairs_since(&self, created_ms: i64) -> Result<Vec<(crate::exchange::IdPair, i64)>, StoreError> {
        let rows = sqlx::query("SELECT kind, primary_id, shadow_id, created_ms FROM id_map WHERE created_ms >= $1")
            .bind(created_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(pair_row).collect()
    }

    /// Every ID pair, oldest first.
    pub async fn id_pairs(&self) -> Result<Vec<(crate::exchange::IdPair, String)>, StoreError> {
        let rows =
            sqlx::query("SELECT kind, primary_id, shadow_id, origin FROM id_map ORDER BY created_ms, kind, primary_id")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(pair_row).collect()
    }

    /// Write ledger rows in a state (`drift`, …), in the order they reached
    /// the shadow (or would have); all states when `None`.
    pub async fn ledger(&self, state: Option<LedgerState>, limit: i64) -> Result<Vec<LedgerRow>, StoreError> {
        let rows =
            match state {
                Some(state) => sqlx::query(
                    "SELECT id, at_ms, route, method, path, entity, primary_status, shadow_status, state, attempts, \
                     replay, updated_ms FROM write_ledger WHERE state = $1 ORDER BY seq, id LIMIT $2",
                )
                .bind(state.label())
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
                None => sqlx::query(
                    "SELECT id, at_ms, route, method, path, entity, primary_status, shadow_status, state, attempts, \
                     replay, updated_ms FROM write_ledger ORDER BY seq, id LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
            };
        rows.iter()
            .map(|row| {
                let id = row.try_get(0)?;
                let state: String = row.try_get(8)?;
                Ok(LedgerRow {
                    id,
                    at_ms: row.try_get(1)?,
                    route: row.try_get(2)?,
                    method: row.try_get(3)?,
                    path: row.try_get(4)?,
                    entity: row.try_get(5)?,
                    primary_status: row.try_get(6)?,
                    shadow_status: row.try_get(7)?,
                    state: LedgerState::parse(&state).ok_or(StoreError::UnknownLedgerState { id, state })?,
                    attempts: row.try_get(9)?,
                    replay: row.try_get(10)?,
                    updated_ms: row.try_get(11)?,
                })
            })
            .collect()
    }

    /// Takes a drifted row for replay, so no other instance replays it too;
    /// a claim older than `stale_ms` (its replayer died) can be taken over.
    pub async fn claim_replay(&self, id: i64, now_ms: i64, stale_ms: i64) -> Result<bool, StoreError> {
        let claimed = sqlx::query(
            "UPDATE write_ledger SET state = 'replaying', updated_ms = $2 \
             WHERE id = $1 AND (state = 'drift' OR (state = 'replaying' AND updated_ms < $3))",
        )
        .bind(id)
        .bind(now_ms)
        .bind(now_ms - stale_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(claimed == 1)
    }

    /// Records a replay's result on a ledger row.
    pub async fn settle_ledger(
        &self,
        id: i64,
        state: LedgerState,
        shadow_status: Option<i64>,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE write_ledger SET state = $1, shadow_status = COALESCE($2, shadow_status), attempts = attempts + 1, \
             updated_ms = $3 \
             WHERE id = $4",
        )
        .bind(state.label())
        .bind(shadow_status)
        .bind(at_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Turns the writes `instance` left pending before `before_ms` (sent or
    /// about to be, answer unknown: the run ended while they were in
    /// flight) into drift. Returns how many.
    pub async fn settle_in_doubt(&self, instance: &str, before_ms: i64, at_ms: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE write_ledger SET state = 'drift', updated_ms = $1 \
             WHERE state = 'pending' AND instance = $2 AND at_ms < $3",
        )
        .bind(at_ms)
        .bind(instance)
        .bind(before_ms)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// How many ledger rows are in a state.
    pub async fn ledger_count(&self, state: LedgerState) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM write_ledger WHERE state = $1")
            .bind(state.label())
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Entities whose later writes wait behind a drifted write a replay may
    /// still apply: one a side never answered, or answered with a 5xx. A
    /// write both sides answered (say 200 and 409) is a difference in
    /// behaviour, not held, as the mirror decides when it records it; the
    /// two must agree, or a start that loads the ledger while such a row is
    /// new would hold an entity the running mirror lets through.
    pub async fn drifted_entities(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT entity FROM write_ledger WHERE state = 'drift' AND entity IS NOT NULL \
             AND (primary_status IS NULL OR primary_status >= 500 OR shadow_status IS NULL OR shadow_status >= 500)",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
    }

    /// Adds an `events` row; returns its id.
    pub async fn add_event(&self, kind: &str, detail: &serde_json::Value, at_ms: i64) -> Result<i64, StoreError> {
        let row = sqlx::query("INSERT INTO events (at_ms, kind, detail) VALUES ($1, $2, $3) RETURNING id")
            .bind(at_ms)
            .bind(kind)
            .bind(detail.to_string())
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// The latest `start` or `stop` event of one instance (its detail's
    /// `instance`), newest first among the last `scan` lifecycle events.
    pub async fn last_lifecycle_event(&self, instance: &str, scan: i64) -> Result<Option<(i64, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms, kind, detail FROM events WHERE kind IN ('start', 'stop') ORDER BY id DESC LIMIT $1",
        )
        .bind(scan)
        .fetch_all(&self.pool)
        .await?;
        for row in &rows {
            let detail: String = row.try_get(2)?;
            let of_instance = serde_json::from_str::<serde_json::Value>(&detail)
                .is_ok_and(|detail| detail["instance"].as_str() == Some(instance));
            if of_instance {
                return Ok(Some((row.try_get(0)?, row.try_get(1)?)));
            }
        }
        Ok(None)
    }

    /// The route names the instances on this store last announced (in their
    /// `start` and `config_reload` events): the newest announcement of each
    /// instance, united. `None` when no instance has announced any.
    pub async fn announced_routes(&self, scan: i64) -> Result<Option<Vec<String>>, StoreError> {
        let rows =
            sqlx::query("SELECT detail FROM events WHERE kind IN ('start', 'config_reload') ORDER BY id DESC LIMIT $1")
                .bind(scan)
                .fetch_all(&self.pool)
                .await?;
        let mut seen_instances = std::collections::HashSet::new();
        let mut names = std::collections::BTreeSet::new();
        let mut announced = false;
        for row in &rows {
            let detail: String = row.try_get(0)?;
            let Ok(detail) = serde_json::from_str::<serde_json::Value>(&detail) else {
                continue;
            };
            let Some(routes) = detail["route_names"].as_array() else {
                continue;
            };
            let instance = detail["instance"].as_str().unwrap_or_default().to_string();
            if !seen_instances.insert(instance) {
                continue;
            }
            announced = true;
            names.extend(routes.iter().filter_map(|name| name.as_str().map(str::to_string)));
        }
        Ok(announced.then(|| names.into_iter().collect()))
    }

    /// Claims a sweep's run: true for exactly one claimant per `every`,
    /// across every instance on this store (the claim is a `sweep` event).
    pub async fn claim_sweep(&self, name: &str, every_ms: i64, now_ms: i64) -> Result<bool, StoreError> {
        let detail = serde_json::json!({ "sweep": name }).to_string();
        let mut connection = self.pool.acquire().await?;
        let result = async {
            let mut tx = sqlx::Connection::begin(&mut *connection).await?;
            if self.engine == Engine::Postgres {
                // Two claims at once would both see none: take turns per sweep.
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))::text")
                    .bind(&detail)
                    .fetch_one(&mut *tx)
                    .await?;
            }
            // One statement: SQLite runs it under its write lock.
            let claimed = sqlx::query(
                "INSERT INTO events (at_ms, kind, detail) SELECT $1, 'sweep', $2 \
             WHERE NOT EXISTS (SELECT 1 FROM events WHERE kind = 'sweep' AND detail = $2 AND at_ms > $3)",
            )
            .bind(now_ms)
            .bind(&detail)
            .bind(now_ms - every_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(claimed == 1)
        }
        .await;
        discard_if_failed(connection, result).await
    }

    /// `events` rows of a kind after an id, oldest first: (id, at_ms, detail).
    pub async fn events_after(&self, kind: &str, after_id: i64) -> Result<Vec<(i64, i64, String)>, StoreError> {
        let rows = sqlx::query("SELECT id, at_ms, detail FROM events WHERE kind = $1 AND id > $2 ORDER BY id")
            .bind(kind)
            .bind(after_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect()
    }

    /// The samples of a group, oldest first.
    pub async fn samples(&self, key: &str) -> Result<Vec<SampleRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms, differences, unified_diff, request, primary_excerpt, shadow_excerpt \
             FROM divergence_samples WHERE group_key = $1 ORDER BY id",
        )
        .bind(key)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let json = |column: &str| -> Result<serde_json::Value, StoreError> {
                    let text: String = row.try_get(column)?;
                    Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
                };
                Ok(SampleRow {
                    at_ms: row.try_get("at_ms")?,
                    differences: json("differences")?,
                    unified_diff: row.try_get("unified_diff")?,
                    request: json("request")?,
                    primary_excerpt: row.try_get("primary_excerpt")?,
                    shadow_excerpt: row.try_get("shadow_excerpt")?,
                })
            })
            .collect()
    }

    /// Deletes exchanges and samples from before `cutoff_ms` (groups and
    /// their counts stay). Returns how many exchanges and samples went.
    pub async fn prune(&self, cutoff_ms: i64) -> Result<(u64, u64), StoreError> {
        let mut connection = self.pool.acquire().await?;
        let result = async {
            let mut tx = sqlx::Connection::begin(&mut *connection).await?;
            let samples = sqlx::query("DELETE FROM divergence_samples WHERE at_ms < $1")
                .bind(cutoff_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM exchange_groups WHERE exchange_id IN (SELECT id FROM exchanges WHERE at_ms < $1)")
                .bind(cutoff_ms)
                .execute(&mut *tx)
                .await?;
            let exchanges = sqlx::query("DELETE FROM exchanges WHERE at_ms < $1")
                .bind(cutoff_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok((exchanges, samples))
        }
        .await;
        discard_if_failed(connection, result).await
    }

    /// How many exchanges are stored.
    pub async fn exchange_count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM exchanges")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Every divergence group, most counted first.
    pub async fn groups(&self) -> Result<Vec<GroupRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT group_key, route, pattern, kind, severity, count, first_seen_ms, last_seen_ms, status \
             FROM divergence_groups ORDER BY count DESC, group_key",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(group_row).collect()
    }

    /// The group keys an exchange (by request id) counted in.
    pub async fn groups_of(&self, request_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT g.group_key FROM exchange_groups g JOIN exchanges e ON e.id = g.exchange_id \
             WHERE e.request_id = $1 ORDER BY g.group_key",
        )
        .bind(request_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
    }

    /// Per route: requests by outcome, and open divergence groups.
    pub async fn summary(&self) -> Result<Vec<RouteSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT route, outcome, COUNT(*) AS n FROM exchanges GROUP BY route, outcome ORDER BY route, outcome",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut routes: Vec<RouteSummary> = Vec::new();
        for row in rows {
            let route: String = row.try_get("route")?;
            let outcome: String = row.try_get("outcome")?;
            let count: i64 = row.try_get("n")?;
            if routes.last().is_none_or(|last| last.route != route) {
                routes.push(RouteSummary {
                    route: route.clone(),
                    ..RouteSummary::default()
                });
            }
            let entry = routes.last_mut().ok_or(sqlx::Error::RowNotFound)?;
            entry.requests += count;
            if matches!(outcome.as_str(), "match" | "diverged" | "transient") {
                entry.compared += count;
            }
            entry.outcomes.push((outcome, count));
        }
        let open = sqlx::query(
            "SELECT route, COUNT(*) AS n FROM divergence_groups WHERE status IN ('open', 'bug') GROUP BY route",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in open {
            let route: String = row.try_get("route")?;
            let count: i64 = row.try_get("n")?;
            match routes.iter_mut().find(|r| r.route == route) {
                Some(entry) => entry.open_groups = count,
                None => routes.push(RouteSummary {
                    route,
                    open_groups: count,
                    ..RouteSummary::default()
                }),
            }
        }
        Ok(routes)
    }

    /// Divergence groups matching a filter, most recently seen first, a page
    /// at a time (keyset pagination: pass the returned cursor back).
    pub async fn divergences(
        &self,
        filter: &GroupFilter,
        limit: u32,
    ) -> Result<(Vec<GroupRow>, Option<String>), StoreError> {
        let mut sql = String::from(
            "SELECT group_key, route, pattern, kind, severity, count, first_seen_ms, last_seen_ms, status \
             FROM divergence_groups WHERE 1 = 1",
        );
        let mut binds: Vec<Bind> = Vec::new();
        let mut condition = |sql: &mut String, clause: &str, value: Bind| {
            binds.push(value);
            sql.push_str(&clause.replace('?', &format!("${}", binds.len())));
        };
        if let Some(route) = &filter.route {
            condition(&mut sql, " AND route = ?", Bind::Text(route.clone()));
        }
        if let Some(status) = &filter.status {
            condition(&mut sql, " AND status = ?", Bind::Text(status.clone()));
        }
        if let Some(severity) = &filter.severity {
            condition(&mut sql, " AND severity = ?", Bind::Text(severity.clone()));
        }
        if let Some(since) = filter.since_ms {
            condition(&mut sql, " AND last_seen_ms >= ?", Bind::Int(since));
        }
        if let Some(q) = &filter.q {
            let like = format!("%{}%", q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
            condition(&mut sql, " AND (summary LIKE ? ESCAPE '\\'", Bind::Text(like.clone()));
            condition(&mut sql, " OR pattern LIKE ? ESCAPE '\\')", Bind::Text(like));
        }
        if let Some((seen, key)) = filter.cursor.as_deref().and_then(|c| c.split_once(':')) {
            if let Ok(seen) = seen.parse::<i64>() {
                condition(&mut sql, " AND (last_seen_ms < ?", Bind::Int(seen));
                condition(&mut sql, " OR (last_seen_ms = ?", Bind::Int(seen));
                condition(&mut sql, " AND group_key > ?))", Bind::Text(key.to_string()));
            }
        }
        binds.push(Bind::Int(i64::from(limit) + 1));
        sql.push_str(&format!(
            " ORDER BY last_seen_ms DESC, group_key LIMIT ${}",
            binds.len()
        ));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for bind in binds {
            query = match bind {
                Bind::Text(text) => query.bind(text),
                Bind::Int(number) => query.bind(number),
            };
        }
        let rows = query.fetch_all(&self.pool).await?;
        let mut groups: Vec<GroupRow> = rows.iter().map(group_row).collect::<Result<_, _>>()?;
        let next = if groups.len() > limit as usize {
            groups.truncate(limit as usize);
            groups.last().map(|g| format!("{}:{}", g.last_seen_ms, g.key))
        } else {
            None
        };
        Ok((groups, next))
    }

    /// One divergence group with its summary and note.
    pub async fn group(&self, key: &str) -> Result<Option<(GroupRow, String, Option<String>)>, StoreError> {
        let row = sqlx::query(
            "SELECT group_key, route, pattern, kind, severity, count, first_seen_ms, last_seen_ms, status, summary, note \
             FROM divergence_groups WHERE group_key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => Ok(None),
            Some(row) => Ok(Some((group_row(&row)?, row.try_get("summary")?, row.try_get("note")?))),
        }
    }

    /// Sets a group's triage status and note, and records the triage as an event.
    /// Returns false when no such group exists.
    pub async fn triage(&self, key: &str, status: &str, note: Option<&str>, at_ms: i64) -> Result<bool, StoreError> {
        let mut connection = self.pool.acquire().await?;
        let result = async {
            let mut tx = sqlx::Connection::begin(&mut *connection).await?;
            let updated = sqlx::query("UPDATE divergence_groups SET status = $1, note = $2 WHERE group_key = $3")
                .bind(status)
                .bind(note)
                .bind(key)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if updated == 0 {
                return Ok(false);
            }
            let detail = serde_json::json!({"group": key, "status": status, "note": note}).to_string();
            sqlx::query("INSERT INTO events (at_ms, kind, detail) VALUES ($1, 'triage', $2)")
                .bind(at_ms)
                .bind(detail)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        }
        .await;
        discard_if_failed(connection, result).await
    }

    /// Events of a kind, oldest first (detail as JSON text).
    pub async fn events(&self, kind: &str) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = sqlx::query("SELECT at_ms, detail FROM events WHERE kind = $1 ORDER BY id")
            .bind(kind)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("at_ms")?, row.try_get("detail")?)))
            .collect()
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Returns a connection to the pool only when its work succeeded. After an
/// error inside a transaction (a full disk at COMMIT, above all) SQLite may
/// have ended the transaction itself or kept it, with its write lock, and
/// sqlx's count of open transactions can then be wrong either way: put back
/// in the pool, such a connection made every other writer fail with
/// "database is locked" until the process ended. Closing it releases
/// whatever it held, and the pool opens a fresh one when needed.
async fn discard_if_failed<T>(
    connection: sqlx::pool::PoolConnection<sqlx::Any>,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    if result.is_err() {
        if let Err(err) = connection.close().await {
            tracing::debug!(error = %err, "closing a store connection after a failed write");
        }
    }
    result
}

async fn insert_pairs(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    pairs: &[crate::exchange::IdPair],
    origin: &str,
    at_ms: i64,
) -> Result<u64, StoreError> {
    let mut added = 0;
    for pair in pairs {
        added += sqlx::query(
            "INSERT INTO id_map (kind, primary_id, shadow_id, origin, created_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&pair.kind)
        .bind(&pair.primary_id)
        .bind(&pair.shadow_id)
        .bind(origin)
        .bind(at_ms)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    }
    Ok(added)
}

/// (pair, fourth column) from `kind, primary_id, shadow_id, …`.
fn pair_row<T>(row: &AnyRow) -> Result<(crate::exchange::IdPair, T), StoreError>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    Ok((
        crate::exchange::IdPair {
            kind: row.try_get(0)?,
            primary_id: row.try_get(1)?,
            shadow_id: row.try_get(2)?,
        },
        row.try_get(3)?,
    ))
}

fn group_row(row: &AnyRow) -> Result<GroupRow, StoreError> {
    Ok(GroupRow {
        key: row.try_get("group_key")?,
        route: row.try_get("route")?,
        pattern: row.try_get("pattern")?,
        kind: row.try_get("kind")?,
        severity: row.try_get("severity")?,
        count: row.try_get("count")?,
        first_seen_ms: row.try_get("first_seen_ms")?,
        last_seen_ms: row.try_get("last_seen_ms")?,
        status: row.try_get("status")?,
    })
}

/// A store URL for messages: any password replaced.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("[redacted]"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_come_from_the_scheme_and_passwords_stay_out_of_messages() {
        assert_eq!(Engine::of("sqlite://cutover.db"), Some(Engine::Sqlite));
        assert_eq!(Engine::of("postgres://u@h/db"), Some(Engine::Postgres));
        assert_eq!(Engine::of("mysql://h/db"), None);
        assert_eq!(
            redact_url("postgres://cutover:s3cret@db.internal:5432/cutover?sslmode=require"),
            "postgres://cutover:%5Bredacted%5D@db.internal:5432/cutover?sslmode=require"
        );
    }

    #[test]
    fn multi_row_inserts_number_placeholders_for_postgres_only() {
        let columns = EXCHANGE_COLUMNS.len();
        let sqlite = multi_row_insert(3, Engine::Sqlite);
        assert_eq!(sqlite.matches('?').count(), 3 * columns);
        assert!(!sqlite.contains('$'), "{sqlite}");
        let postgres = multi_row_insert(3, Engine::Postgres);
        assert!(!postgres.contains('?'), "{postgres}");
        let last = format!("${})", 3 * columns);
        assert!(postgres.ends_with(&last), "{postgres}");
        assert!(
            postgres.contains(&format!("${}), (${}", columns, columns + 1)),
            "{postgres}"
        );
    }
}
