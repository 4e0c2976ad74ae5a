//! The write path: what the store writer hands the store (exchanges with
//! their groups and samples, write intents, learned noise) and the one
//! transaction a batch goes in.
//!
//! Must never: write a row that was not redacted first, or leave part of a
//! batch written when the transaction fails.

use sqlx::Row;

use super::ids::insert_pairs;
use super::{discard_if_failed, Engine, LedgerRecord, Store, StoreError};

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
#[derive(Debug, Clone, PartialEq, Default)]
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
    /// The side that served the client (`primary` or `shadow`), or empty
    /// for a request cutover sent itself.
    pub served: String,
}

impl ExchangeRecord {
    /// Whether the exchange is a row and nothing else: no groups, samples,
    /// learned IDs or ledger row need its id.
    pub(super) fn is_plain(&self) -> bool {
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
pub(super) const EXCHANGE_COLUMNS: [&str; 15] = [
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
    "served",
];

/// Rows per multi-row insert: 15 parameters each stays far below SQLite's
/// (32,766) and PostgreSQL's (65,535) limits.
const ROWS_PER_INSERT: usize = 100;

/// `INSERT INTO exchanges (…) VALUES (…), (…), …` for `rows` rows.
pub(super) fn multi_row_insert(rows: usize, engine: Engine) -> String {
    format!(
        "INSERT INTO exchanges ({}) VALUES {}",
        EXCHANGE_COLUMNS.join(", "),
        values_list(EXCHANGE_COLUMNS.len(), rows, engine)
    )
}

/// `(…), (…), …` for `rows` rows of `columns` values, with the engine's
/// placeholders: `$1, $2, …` for PostgreSQL, plain `?` for SQLite.
/// Numbered placeholders are named parameters to SQLite, and binding each
/// one looks its name up in a list as long as the statement: quadratic in
/// the row count (measured: a fifth of the machine's CPU at 10,000 rows/s
/// with 100-row statements). Anonymous ones bind in order.
pub(super) fn values_list(columns: usize, rows: usize, engine: Engine) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            match engine {
                Engine::Sqlite => sql.push('?'),
                Engine::Postgres => sql.push_str(&format!("${}", row * columns + column + 1)),
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

/// One open transaction of the write path.
pub(super) type Tx<'t> = sqlx::Transaction<'t, sqlx::Any>;

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// A statement that binds an optional float, planned afresh on PostgreSQL
/// each time it runs. sqlx's `Any` driver (0.9) declares a NULL `f64` as a
/// PostgreSQL `float4` parameter; a statement cached with that declaration
/// then fails on every later non-NULL `f64` ("incorrect binary data format"),
/// and the writer would retry that batch forever. SQLite keeps its cache.
fn binds_optional_floats(query: Query<'_>, engine: Engine) -> Query<'_> {
    query.persistent(engine == Engine::Sqlite)
}

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
        .bind(&exchange.served)
}

/// What the writer writes.
// Nearly every record is an exchange: boxing it would cost an allocation
// per request to save space only on the rare noise snapshot.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Exchange(ExchangeRecord),
    /// An exchange counted in the rollups whose raw row `store.keep_matches` leaves out.
    Counted(ExchangeRecord),
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
    async fn upsert(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>, engine: Engine) -> Result<(), StoreError> {
        let ledger = self.ledger;
        binds_optional_floats(sqlx::query(LEDGER_UPSERT), engine)
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
    /// The W3C trace id of the request (32 lowercase hex digits).
    pub trace_id: Option<String>,
}

impl Store {
    /// Writes a batch of exchanges in one transaction: each exchange, the
    /// groups it counted in (created, or counted once more), and the links.
    pub async fn record(&self, batch: &[ExchangeRecord]) -> Result<(), StoreError> {
        let records: Vec<Record> = batch.iter().cloned().map(Record::Exchange).collect();
        self.write(&records).await
    }

    /// Writes a batch of records in one transaction, with the rollups of
    /// its exchanges.
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

    async fn write_in(&self, tx: &mut Tx<'_>, batch: &[Record]) -> Result<(), StoreError> {
        // Most exchanges are a row and nothing else (a match): those go in
        // multi-row statements, one round trip for many rows instead of one
        // each. The rest need their row id for what hangs off them.
        let plain: Vec<&ExchangeRecord> = batch.iter().filter_map(Record::plain_exchange).collect();
        self.insert_plain(tx, &plain).await?;
        for record in batch.iter().filter(|record| record.plain_exchange().is_none()) {
            match record {
                Record::Exchange(exchange) => self.insert_exchange(tx, exchange).await?,
                Record::Intent(intent) => {
                    let row = LedgerInsert {
                        at_ms: intent.at_ms,
                        route: &intent.route,
                        method: &intent.method,
                        path: &intent.path,
                        ledger: &intent.ledger,
                        instance: Some(&intent.instance),
                    };
                    row.upsert(tx, self.engine).await?;
                    insert_pairs(tx, &intent.learned_ids, "learned", intent.at_ms).await?;
                }
                Record::Noise(noise) => insert_noise(tx, noise).await?,
                Record::Counted(_) => {}
            }
        }
        // Last, so the rows every replica adds into stay locked the shortest.
        super::rollups::Rollups::of(batch).upsert(tx, self.engine).await
    }

    /// Exchanges with nothing hanging off them, many rows per statement.
    async fn insert_plain(&self, tx: &mut Tx<'_>, plain: &[&ExchangeRecord]) -> Result<(), StoreError> {
        let inserts = ExchangeInserts::of(self.engine);
        for rows in plain.chunks(ROWS_PER_INSERT) {
            let sql: std::borrow::Cow<'static, str> = if rows.len() == ROWS_PER_INSERT {
                inserts.full.as_str().into()
            } else {
                multi_row_insert(rows.len(), self.engine).into()
            };
            let mut query = binds_optional_floats(sqlx::query(sqlx::AssertSqlSafe(sql)), self.engine);
            for exchange in rows {
                query = bind_exchange(query, exchange);
            }
            query.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// An exchange with what hangs off it: its groups (created, or counted
    /// once more), its ledger row, learned pairs and samples.
    async fn insert_exchange(&self, tx: &mut Tx<'_>, exchange: &ExchangeRecord) -> Result<(), StoreError> {
        let inserts = ExchangeInserts::of(self.engine);
        let insert = binds_optional_floats(sqlx::query(inserts.single.as_str()), self.engine);
        let row = bind_exchange(insert, exchange).fetch_one(&mut **tx).await?;
        let exchange_id: i64 = row.try_get(0)?;
        for group in &exchange.groups {
            // The upsert leaves the status alone (an indexed column: setting
            // it on every divergence costs the writer pages); it returns it,
            // and only a group marked fixed before this exchange is reopened.
            let row = sqlx::query(
                "INSERT INTO divergence_groups (group_key, route, method, location, pattern, kind, severity, \
                 summary, first_seen_ms, last_seen_ms, count) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, 1) \
                 ON CONFLICT (group_key) DO UPDATE SET count = divergence_groups.count + 1, \
                 first_seen_ms = CASE WHEN excluded.first_seen_ms < divergence_groups.first_seen_ms \
                 THEN excluded.first_seen_ms ELSE divergence_groups.first_seen_ms END, \
                 last_seen_ms = CASE WHEN excluded.last_seen_ms > divergence_groups.last_seen_ms \
                 THEN excluded.last_seen_ms ELSE divergence_groups.last_seen_ms END \
                 RETURNING status, fixed_ms",
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
            .fetch_one(&mut **tx)
            .await?;
            let status: String = row.try_get(0)?;
            let fixed_ms: Option<i64> = row.try_get(1)?;
            if status == "fixed" && fixed_ms.is_none_or(|fixed| fixed <= exchange.at_ms) {
                reopen(tx, group, exchange).await?;
            }
            sqlx::query("INSERT INTO exchange_groups (exchange_id, group_key) VALUES ($1, $2) ON CONFLICT DO NOTHING")
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
            row.upsert(tx, self.engine).await?;
        }
        insert_pairs(tx, &exchange.learned_ids, "learned", exchange.at_ms).await?;
        for sample in &exchange.samples {
            // The count guard holds across restarts and replicas.
            sqlx::query(
                "INSERT INTO divergence_samples (group_key, exchange_id, at_ms, differences, unified_diff, request, \
                 primary_excerpt, shadow_excerpt, trace_id) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $10 \
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
            .bind(&sample.trace_id)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}

/// A group marked `fixed` before this exchange was observed diverged
/// again: it goes back to `open`, and a `regression` event says when and
/// by which request. Of replicas writing such divergences at once, only
/// the one whose update changed the row adds the event.
async fn reopen(tx: &mut Tx<'_>, group: &GroupRef, exchange: &ExchangeRecord) -> Result<(), StoreError> {
    let reopened = sqlx::query(
        "UPDATE divergence_groups SET status = 'open', fixed_ms = NULL WHERE group_key = $1 AND status = 'fixed'",
    )
    .bind(&group.key)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if reopened == 0 {
        return Ok(());
    }
    let detail = serde_json::json!({
        "group": group.key,
        "route": group.route,
        "summary": group.summary,
        "request_id": exchange.request_id,
        "path": exchange.path,
        "source": exchange.source,
    });
    sqlx::query("INSERT INTO events (at_ms, kind, detail) VALUES ($1, 'regression', $2)")
        .bind(exchange.at_ms)
        .bind(detail.to_string())
        .execute(&mut **tx)
        .await?;
    tracing::warn!(group = %group.key, route = %group.route, "a group marked fixed diverges again: reopened");
    Ok(())
}

/// Learned noise: one row per route, pattern and side, updated in place.
async fn insert_noise(tx: &mut Tx<'_>, noise: &[NoiseRecord]) -> Result<(), StoreError> {
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
    Ok(())
}
