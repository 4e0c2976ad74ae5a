//! Rollups: every exchange adds to one `rollups` row (its minute, route,
//! method, source, outcome, skip reason and the side that served) and,
//! when both sides answered, to one latency bucket per side (`rollup_latency`, in
//! [`crate::histogram`]'s layout). They are upserted in the transaction of
//! the batch the exchanges are in, so a batch counts once however often it
//! is retried, and replicas on one PostgreSQL add into the same rows.
//! Stores recorded before rollups existed are rolled up once, in chunks
//! that instances claim, so each old exchange counts once too.
//!
//! Must never: count an exchange twice or not at all, or lock rows in an
//! order another writer could take the other way round.

use std::collections::BTreeMap;

use sqlx::Row;

use super::records::{values_list, ExchangeRecord, Record, Tx};
use super::{discard_if_failed, Engine, Store, StoreError};

/// A minute, in milliseconds: the rollups' resolution.
pub const MINUTE_MS: i64 = 60_000;

/// The start of the minute `at_ms` falls in.
pub fn minute_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct RollupKey<'a> {
    minute_ms: i64,
    route: &'a str,
    method: &'a str,
    source: &'a str,
    outcome: &'a str,
    reason: &'a str,
    served: &'a str,
}

#[derive(Debug, Clone, Copy, Default)]
struct RollupCounts {
    requests: i64,
    rows_left_out: i64,
    primary_429: i64,
    shadow_429: i64,
    primary_cache_hits: i64,
    primary_cache_known: i64,
    shadow_cache_hits: i64,
    shadow_cache_known: i64,
    first_ms: i64,
    last_ms: i64,
}

/// The latency histograms of a minute, one per side: the buckets hang
/// below it, so an exchange finds its series once and then only compares
/// bucket numbers (a key per bucket compared four strings per step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct LatencySeries<'a> {
    minute_ms: i64,
    route: &'a str,
    served: &'a str,
}

/// The `side` values of a series' two histograms, in the table's key order.
const SIDES: [&str; 2] = ["primary", "shadow"];

/// The rollups of one batch, in key order: the order every writer locks
/// rows in, so two replicas' batches wait for each other instead of
/// deadlocking.
#[derive(Debug, Default)]
pub(super) struct Rollups<'a> {
    counts: BTreeMap<RollupKey<'a>, RollupCounts>,
    /// Per series, the primary's buckets and the shadow's (as [`SIDES`]).
    latency: BTreeMap<LatencySeries<'a>, [BTreeMap<i64, i64>; 2]>,
}

/// A cache status that says the answer came from a cache (`HIT`, `hit-stale`, …).
fn is_cache_hit(status: &str) -> bool {
    status.get(..3).is_some_and(|head| head.eq_ignore_ascii_case("hit"))
}

impl<'a> Rollups<'a> {
    /// The rollups of a batch's exchanges, kept as rows or not.
    pub(super) fn of(batch: &'a [Record]) -> Rollups<'a> {
        let mut rollups = Rollups::default();
        for record in batch {
            match record {
                Record::Exchange(exchange) => rollups.add(exchange, true),
                Record::Counted(exchange) => rollups.add(exchange, false),
                Record::Noise(_) | Record::Intent(_) => {}
            }
        }
        rollups
    }

    pub(super) fn add(&mut self, exchange: &'a ExchangeRecord, row_kept: bool) {
        let minute_ms = minute_of(exchange.at_ms);
        let key = RollupKey {
            minute_ms,
            route: &exchange.route,
            method: &exchange.method,
            source: &exchange.source,
            outcome: &exchange.outcome,
            reason: exchange.reason.as_deref().unwrap_or(""),
            served: &exchange.served,
        };
        let counts = self.counts.entry(key).or_insert(RollupCounts {
            first_ms: exchange.at_ms,
            last_ms: exchange.at_ms,
            ..RollupCounts::default()
        });
        let flag = |condition: bool| i64::from(condition);
        counts.requests += 1;
        counts.rows_left_out += flag(!row_kept);
        counts.primary_429 += flag(exchange.primary_status == Some(429));
        counts.shadow_429 += flag(exchange.shadow_status == Some(429));
        counts.primary_cache_hits += flag(exchange.primary_cache.as_deref().is_some_and(is_cache_hit));
        counts.primary_cache_known += flag(exchange.primary_cache.is_some());
        counts.shadow_cache_hits += flag(exchange.shadow_cache.as_deref().is_some_and(is_cache_hit));
        counts.shadow_cache_known += flag(exchange.shadow_cache.is_some());
        counts.first_ms = counts.first_ms.min(exchange.at_ms);
        counts.last_ms = counts.last_ms.max(exchange.at_ms);
        // Latency compares the sides on the same exchanges: both answered.
        if let (Some(primary_ms), Some(shadow_ms)) = (exchange.primary_ms, exchange.shadow_ms) {
            let series = LatencySeries {
                minute_ms,
                route: &exchange.route,
                served: &exchange.served,
            };
            let sides = self.latency.entry(series).or_default();
            for (buckets, ms) in sides.iter_mut().zip([primary_ms, shadow_ms]) {
                *buckets.entry(crate::histogram::bucket_of(ms)).or_default() += 1;
            }
        }
    }

    /// Adds the batch's rollups into the store's, in the batch's transaction.
    pub(super) async fn upsert(&self, tx: &mut Tx<'_>, engine: Engine) -> Result<(), StoreError> {
        let counts: Vec<_> = self.counts.iter().collect();
        for rows in counts.chunks(ROWS_PER_UPSERT) {
            let sql = format!(
                "INSERT INTO rollups ({}) VALUES {} {COUNTS_CONFLICT}",
                COUNT_COLUMNS.join(", "),
                values_list(COUNT_COLUMNS.len(), rows.len(), engine)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (key, counts) in rows {
                query = query
                    .bind(key.minute_ms)
                    .bind(key.route)
                    .bind(key.method)
                    .bind(key.source)
                    .bind(key.outcome)
                    .bind(key.reason)
                    .bind(key.served)
                    .bind(counts.requests)
                    .bind(counts.rows_left_out)
                    .bind(counts.primary_429)
                    .bind(counts.shadow_429)
                    .bind(counts.primary_cache_hits)
                    .bind(counts.primary_cache_known)
                    .bind(counts.shadow_cache_hits)
                    .bind(counts.shadow_cache_known)
                    .bind(counts.first_ms)
                    .bind(counts.last_ms);
            }
            query.execute(&mut **tx).await?;
        }
        // Series by series, side by side, bucket by bucket: the key order of the table.
        let latency: Vec<_> =
            self.latency
                .iter()
                .flat_map(|(series, sides)| {
                    SIDES.into_iter().zip(sides).flat_map(move |(side, buckets)| {
                        buckets.iter().map(move |(bucket, n)| (series, side, *bucket, *n))
                    })
                })
                .collect();
        for rows in latency.chunks(ROWS_PER_UPSERT) {
            let sql = format!(
                "INSERT INTO rollup_latency (minute_ms, route, served, side, bucket, n) VALUES {} \
                 ON CONFLICT (minute_ms, route, served, side, bucket) DO UPDATE SET n = rollup_latency.n + excluded.n",
                values_list(6, rows.len(), engine)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (series, side, bucket, n) in rows {
                query = query
                    .bind(series.minute_ms)
                    .bind(series.route)
                    .bind(series.served)
                    .bind(*side)
                    .bind(*bucket)
                    .bind(*n);
            }
            query.execute(&mut **tx).await?;
        }
        Ok(())
    }
}

/// The columns of a `rollups` row, in the order [`Rollups::upsert`] binds them.
const COUNT_COLUMNS: [&str; 17] = [
    "minute_ms",
    "route",
    "method",
    "source",
    "outcome",
    "reason",
    "served",
    "requests",
    "rows_left_out",
    "primary_429",
    "shadow_429",
    "primary_cache_hits",
    "primary_cache_known",
    "shadow_cache_hits",
    "shadow_cache_known",
    "first_ms",
    "last_ms",
];

const COUNTS_CONFLICT: &str = "ON CONFLICT (minute_ms, route, method, source, outcome, reason, served) DO UPDATE SET \
     requests = rollups.requests + excluded.requests, \
     rows_left_out = rollups.rows_left_out + excluded.rows_left_out, \
     primary_429 = rollups.primary_429 + excluded.primary_429, \
     shadow_429 = rollups.shadow_429 + excluded.shadow_429, \
     primary_cache_hits = rollups.primary_cache_hits + excluded.primary_cache_hits, \
     primary_cache_known = rollups.primary_cache_known + excluded.primary_cache_known, \
     shadow_cache_hits = rollups.shadow_cache_hits + excluded.shadow_cache_hits, \
     shadow_cache_known = rollups.shadow_cache_known + excluded.shadow_cache_known, \
     first_ms = CASE WHEN excluded.first_ms < rollups.first_ms THEN excluded.first_ms ELSE rollups.first_ms END, \
     last_ms = CASE WHEN excluded.last_ms > rollups.last_ms THEN excluded.last_ms ELSE rollups.last_ms END";

/// Rows per upsert statement: 17 parameters each stays far below both
/// databases' limits.
const ROWS_PER_UPSERT: usize = 100;

/// Old exchanges rolled up per transaction.
const BACKFILL_CHUNK: i64 = 20_000;

impl Store {
    /// Rolls up, once, the exchanges written before the store had rollups
    /// (migration 0005 noted the highest id of that time). Each chunk is
    /// claimed by moving `done_id` in the chunk's own transaction: an
    /// instance that finds it moved meanwhile leaves that chunk to whoever
    /// moved it. Returns how many exchanges this call rolled up.
    pub(super) async fn backfill_rollups(&self) -> Result<u64, StoreError> {
        let mut rolled_up = 0;
        loop {
            let Some(row) = sqlx::query("SELECT upto_id, done_id FROM rollup_backfill")
                .fetch_optional(&self.pool)
                .await?
            else {
                return Ok(rolled_up);
            };
            let (upto, done): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
            if done >= upto {
                return Ok(rolled_up);
            }
            let next = (done + BACKFILL_CHUNK).min(upto);
            let mut connection = self.pool.acquire().await?;
            let chunk = async {
                let mut tx = sqlx::Connection::begin(&mut *connection).await?;
                let claimed = sqlx::query("UPDATE rollup_backfill SET done_id = $1 WHERE done_id = $2")
                    .bind(next)
                    .bind(done)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if claimed == 0 {
                    tx.rollback().await?;
                    return Ok(0);
                }
                let old = old_exchanges(&mut tx, done, next).await?;
                let mut rollups = Rollups::default();
                for exchange in &old {
                    rollups.add(exchange, true);
                }
                rollups.upsert(&mut tx, self.engine).await?;
                tx.commit().await?;
                Ok(old.len() as u64)
            }
            .await;
            rolled_up += discard_if_failed(connection, chunk).await?;
        }
    }

    /// How many exchanges the rollups count, whenever they happened.
    pub async fn counted_exchanges(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) FROM rollups")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Folds the latency buckets of minutes before `cutoff_ms` into one row
    /// per hour (the hour's first minute), keeping every count: a window's
    /// percentiles then read at most ~60 times fewer rows, and only its
    /// edges, by then older than the cutoff, lose their minutes. Returns
    /// how many hour rows were written.
    pub async fn compact_latency(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let cutoff = minute_of(cutoff_ms);
        let written = match self.engine {
            // One statement: rows another writer adds meanwhile are either
            // in it or left for the next compaction, never lost.
            Engine::Postgres => sqlx::query(
                "WITH folded AS (DELETE FROM rollup_latency WHERE minute_ms < $1 AND minute_ms % 3600000 <> 0 \
                 RETURNING minute_ms, route, served, side, bucket, n) \
                 INSERT INTO rollup_latency (minute_ms, route, served, side, bucket, n) \
                 SELECT minute_ms - minute_ms % 3600000, route, served, side, bucket, SUM(n) FROM folded \
                 GROUP BY minute_ms - minute_ms % 3600000, route, served, side, bucket \
                 ON CONFLICT (minute_ms, route, served, side, bucket) DO UPDATE SET n = rollup_latency.n + excluded.n",
            )
            .bind(cutoff)
            .execute(&self.pool)
            .await?
            .rows_affected(),
            // SQLite has one writer at a time: both statements see the same rows.
            Engine::Sqlite => {
                let mut connection = self.pool.acquire().await?;
                let result = async {
                    let mut tx = sqlx::Connection::begin(&mut *connection).await?;
                    let folded = sqlx::query(
                        "INSERT INTO rollup_latency (minute_ms, route, served, side, bucket, n) \
                         SELECT minute_ms - minute_ms % 3600000, route, served, side, bucket, SUM(n) FROM rollup_latency \
                         WHERE minute_ms < $1 AND minute_ms % 3600000 <> 0 \
                         GROUP BY minute_ms - minute_ms % 3600000, route, served, side, bucket \
                         ON CONFLICT (minute_ms, route, served, side, bucket) DO UPDATE SET n = rollup_latency.n + excluded.n",
                    )
                    .bind(cutoff)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    sqlx::query("DELETE FROM rollup_latency WHERE minute_ms < $1 AND minute_ms % 3600000 <> 0")
                        .bind(cutoff)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(folded)
                }
                .await;
                discard_if_failed(connection, result).await?
            }
        };
        Ok(written)
    }

    /// Deletes rollups of minutes before `cutoff_ms`; returns how many rows went.
    pub async fn prune_rollups(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let mut gone = 0;
        for table in ["rollups", "rollup_latency"] {
            let sql = format!("DELETE FROM {table} WHERE minute_ms < $1");
            gone += sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(minute_of(cutoff_ms))
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(gone)
    }
}

/// The exchanges with ids in `(after, upto]`, with what a rollup needs.
async fn old_exchanges(tx: &mut Tx<'_>, after: i64, upto: i64) -> Result<Vec<ExchangeRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT at_ms, route, method, source, outcome, reason, primary_status, shadow_status, primary_ms, \
         shadow_ms, primary_cache, shadow_cache, served FROM exchanges WHERE id > $1 AND id <= $2",
    )
    .bind(after)
    .bind(upto)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ExchangeRecord {
                at_ms: row.try_get(0)?,
                route: row.try_get(1)?,
                method: row.try_get(2)?,
                source: row.try_get(3)?,
                outcome: row.try_get(4)?,
                reason: row.try_get(5)?,
                primary_status: row.try_get(6)?,
                shadow_status: row.try_get(7)?,
                primary_ms: row.try_get(8)?,
                shadow_ms: row.try_get(9)?,
                primary_cache: row.try_get(10)?,
                shadow_cache: row.try_get(11)?,
                served: row.try_get(12)?,
                ..ExchangeRecord::default()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(at_ms: i64, outcome: &str, ms: Option<(f64, f64)>) -> ExchangeRecord {
        ExchangeRecord {
            at_ms,
            route: "GET /tasks".into(),
            method: "GET".into(),
            source: "traffic".into(),
            outcome: outcome.into(),
            primary_status: Some(200),
            shadow_status: Some(if outcome == "diverged" { 429 } else { 200 }),
            primary_ms: ms.map(|(primary, _)| primary),
            shadow_ms: ms.map(|(_, shadow)| shadow),
            shadow_cache: Some("HIT".into()),
            ..ExchangeRecord::default()
        }
    }

    #[test]
    fn a_batch_rolls_up_per_minute_and_outcome_with_latency_only_where_both_answered() {
        let batch = [
            Record::Exchange(exchange(120_001, "match", Some((10.0, 12.0)))),
            Record::Counted(exchange(179_999, "match", Some((10.0, 30.0)))),
            Record::Exchange(exchange(180_000, "match", None)),
            Record::Exchange(exchange(150_000, "diverged", Some((5.0, 5.0)))),
        ];
        let rollups = Rollups::of(&batch);
        let minute = |minute_ms: i64, outcome: &str| {
            rollups
                .counts
                .iter()
                .find(|(key, _)| key.minute_ms == minute_ms && key.outcome == outcome)
                .map(|(_, counts)| *counts)
        };
        let matches = minute(120_000, "match").expect("the minute's matches");
        assert_eq!((matches.requests, matches.rows_left_out), (2, 1));
        assert_eq!((matches.first_ms, matches.last_ms), (120_001, 179_999));
        assert_eq!((matches.shadow_cache_hits, matches.shadow_cache_known), (2, 2));
        assert_eq!(minute(180_000, "match").map(|c| c.requests), Some(1));
        assert_eq!(minute(120_000, "diverged").map(|c| c.shadow_429), Some(1));
        let latency_total: i64 = rollups.latency.values().flatten().flat_map(BTreeMap::values).sum();
        let (primary, shadow) = rollups.latency.values().fold((0, 0), |(p, s), [primary, shadow]| {
            (p + primary.values().sum::<i64>(), s + shadow.values().sum::<i64>())
        });
        assert_eq!((primary, shadow), (3, 3));
        // Each side's time lands in its own histogram: only the shadow took 30 ms.
        let thirty = crate::histogram::bucket_of(30.0);
        assert!(rollups
            .latency
            .values()
            .all(|[primary, _]| !primary.contains_key(&thirty)));
        assert!(rollups.latency.values().any(|[_, shadow]| shadow.contains_key(&thirty)));
        assert_eq!(latency_total, 6, "three exchanges where both answered, two sides each");
        assert!(rollups.latency.keys().all(|series| series.minute_ms == 120_000));
    }

    #[test]
    fn minutes_start_on_the_minute_before_1970_too() {
        assert_eq!(minute_of(59_999), 0);
        assert_eq!(minute_of(60_000), 60_000);
        assert_eq!(minute_of(-1), -60_000);
        assert!(is_cache_hit("hit-stale") && is_cache_hit("HIT") && !is_cache_hit("MISS") && !is_cache_hit("h"));
    }
}
