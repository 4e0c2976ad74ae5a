//! What the store holds about a time window, aggregated in the database
//! (SQLite and PostgreSQL alike): counts per route and outcome, latency
//! histograms, a timeline, divergence groups, the write ledger, the ID map.
//!
//! Must never: read rows one by one where the database can aggregate, or
//! write anything.

use std::collections::BTreeMap;

use sqlx::Row;

use crate::store::{LedgerState, Store, StoreError};

/// Latency samples are bucketed in the database: tenths of a millisecond
/// below 100 ms, whole milliseconds above. The key is in tenths.
const LATENCY_BUCKET_SQL: &str = "CASE WHEN {col} < 100 THEN CAST({col} * 10 AS BIGINT) \
                                  ELSE CAST({col} AS BIGINT) * 10 END";

/// Counts of one route (and source) by outcome and reason.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteCounts {
    pub requests: u64,
    /// outcome label → count (skipped is split by reason below).
    pub outcomes: BTreeMap<String, u64>,
    pub skipped: BTreeMap<String, u64>,
    pub sources: BTreeMap<String, u64>,
    pub primary_429: u64,
    pub shadow_429: u64,
    pub primary_cache_hits: u64,
    pub primary_cache_known: u64,
    pub shadow_cache_hits: u64,
    pub shadow_cache_known: u64,
    pub first_ms: i64,
    pub last_ms: i64,
    /// Of the diverged, those whose every difference is in an `accepted`
    /// group: matches, with accepted differences.
    pub accepted: u64,
}

impl RouteCounts {
    pub fn outcome(&self, label: &str) -> u64 {
        self.outcomes.get(label).copied().unwrap_or(0)
    }
}

/// A latency histogram: bucket key (tenths of a ms) → count.
pub type Histogram = BTreeMap<i64, u64>;

/// A time bucket of the timeline.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TimeBucket {
    pub start_ms: i64,
    pub requests: u64,
    pub compared: u64,
    pub diverged: u64,
}

/// A divergence group as the report shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GroupEvidence {
    pub key: String,
    pub route: String,
    pub method: String,
    pub pattern: String,
    pub kind: String,
    pub severity: String,
    pub summary: String,
    pub status: String,
    pub note: Option<String>,
    /// Exchanges in the window that counted in it.
    pub count: u64,
    /// `count` over the route's compared requests in the window.
    pub share: Option<f64>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// The group's differences in its stored samples, field by field.
    pub differences: Vec<ShownDifference>,
    /// One sample's unified diff, trimmed to the lines about this group.
    pub example: Option<String>,
    /// For an accepted group: the compare rule that makes it a match.
    pub suggested_rule: Option<String>,
}

/// One difference of a group as the report shows it: where, and both values.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShownDifference {
    pub path: String,
    pub item: Option<String>,
    pub primary: Option<String>,
    pub shadow: Option<String>,
}

/// Everything the report is made from.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    pub routes: BTreeMap<String, RouteCounts>,
    pub primary_latency: BTreeMap<String, Histogram>,
    pub shadow_latency: BTreeMap<String, Histogram>,
    pub timeline: Vec<TimeBucket>,
    pub bucket_ms: i64,
    pub groups: Vec<GroupEvidence>,
    pub ledger: BTreeMap<String, u64>,
    pub ledger_routes: BTreeMap<String, BTreeMap<String, u64>>,
    pub open_drift: u64,
    pub idmap: BTreeMap<String, BTreeMap<String, u64>>,
    pub unmapped_recent: u64,
    pub noise: Vec<(String, String, u64)>,
    pub events: Vec<(i64, String, String)>,
}

impl Evidence {
    /// Reads the evidence of `[from_ms, to_ms)`; `recent_from_ms` starts the
    /// part of the window where unmapped IDs count against the verdict.
    pub async fn gather(store: &Store, from_ms: i64, to_ms: i64, recent_from_ms: i64) -> Result<Evidence, StoreError> {
        let mut evidence = Evidence::default();
        evidence.route_counts(store, from_ms, to_ms).await?;
        evidence.accepted_differences(store, from_ms, to_ms).await?;
        evidence.latencies_and_timeline(store, from_ms, to_ms).await?;
        evidence.groups = groups(store, from_ms, to_ms).await?;
        evidence.ledger_counts(store, from_ms, to_ms).await?;
        evidence.id_counts(store, recent_from_ms, to_ms).await?;
        evidence.noise_and_events(store, from_ms, to_ms).await?;
        Ok(evidence)
    }

    /// Requests per route by source, outcome and skip reason; 429s and cache hits per side.
    async fn route_counts(&mut self, store: &Store, from_ms: i64, to_ms: i64) -> Result<(), StoreError> {
        let pool = store.pool();
        let rows = sqlx::query(
            "SELECT route, source, outcome, COALESCE(reason, ''), COUNT(*), MIN(at_ms), MAX(at_ms), \
             SUM(CASE WHEN primary_status = 429 THEN 1 ELSE 0 END), \
             SUM(CASE WHEN shadow_status = 429 THEN 1 ELSE 0 END), \
             SUM(CASE WHEN LOWER(primary_cache) LIKE 'hit%' THEN 1 ELSE 0 END), \
             SUM(CASE WHEN primary_cache IS NOT NULL THEN 1 ELSE 0 END), \
             SUM(CASE WHEN LOWER(shadow_cache) LIKE 'hit%' THEN 1 ELSE 0 END), \
             SUM(CASE WHEN shadow_cache IS NOT NULL THEN 1 ELSE 0 END) \
             FROM exchanges WHERE at_ms >= $1 AND at_ms < $2 GROUP BY route, source, outcome, reason",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(pool)
        .await?;
        for row in &rows {
            let route: String = row.try_get(0)?;
            let source: String = row.try_get(1)?;
            let outcome: String = row.try_get(2)?;
            let reason: String = row.try_get(3)?;
            let count = count_at(row, 4)?;
            let counts = self.routes.entry(route).or_default();
            let (first, last): (i64, i64) = (row.try_get(5)?, row.try_get(6)?);
            counts.first_ms = if counts.requests == 0 {
                first
            } else {
                counts.first_ms.min(first)
            };
            counts.last_ms = counts.last_ms.max(last);
            counts.requests += count;
            *counts.outcomes.entry(outcome.clone()).or_default() += count;
            if outcome == "skipped" {
                *counts.skipped.entry(reason).or_default() += count;
            }
            *counts.sources.entry(source).or_default() += count;
            counts.primary_429 += count_at(row, 7)?;
            counts.shadow_429 += count_at(row, 8)?;
            counts.primary_cache_hits += count_at(row, 9)?;
            counts.primary_cache_known += count_at(row, 10)?;
            counts.shadow_cache_hits += count_at(row, 11)?;
            counts.shadow_cache_known += count_at(row, 12)?;
        }
        Ok(())
    }

    /// Per route, the diverged exchanges whose every group was triaged
    /// `accepted` (Scientist's `ignore`): they count as matches.
    async fn accepted_differences(&mut self, store: &Store, from_ms: i64, to_ms: i64) -> Result<(), StoreError> {
        let rows = sqlx::query(
            "SELECT e.route, COUNT(*) FROM exchanges e \
             WHERE e.at_ms >= $1 AND e.at_ms < $2 AND e.outcome = 'diverged' \
             AND EXISTS (SELECT 1 FROM exchange_groups eg WHERE eg.exchange_id = e.id) \
             AND NOT EXISTS (SELECT 1 FROM exchange_groups eg \
                 JOIN divergence_groups g ON g.group_key = eg.group_key \
                 WHERE eg.exchange_id = e.id AND g.status <> 'accepted') \
             GROUP BY e.route",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(store.pool())
        .await?;
        for row in &rows {
            let route: String = row.try_get(0)?;
            if let Some(counts) = self.routes.get_mut(&route) {
                counts.accepted = count_at(row, 1)?;
            }
        }
        Ok(())
    }

    /// Latency samples per side and route, and the window in 48 buckets.
    async fn latencies_and_timeline(&mut self, store: &Store, from_ms: i64, to_ms: i64) -> Result<(), StoreError> {
        let pool = store.pool();
        for (column, into) in [
            ("primary_ms", &mut self.primary_latency),
            ("shadow_ms", &mut self.shadow_latency),
        ] {
            *into = latency(store, column, from_ms, to_ms).await?;
        }
        self.bucket_ms = ((to_ms - from_ms) / 48).max(1000);
        let rows = sqlx::query(
            "SELECT CAST((at_ms - $1) / $3 AS BIGINT) AS bucket, COUNT(*), \
             SUM(CASE WHEN outcome IN ('match', 'diverged', 'transient') THEN 1 ELSE 0 END), \
             SUM(CASE WHEN outcome = 'diverged' THEN 1 ELSE 0 END) \
             FROM exchanges WHERE at_ms >= $1 AND at_ms < $2 GROUP BY bucket ORDER BY bucket",
        )
        .bind(from_ms)
        .bind(to_ms)
        .bind(self.bucket_ms)
        .fetch_all(pool)
        .await?;
        for row in &rows {
            let bucket: i64 = row.try_get(0)?;
            self.timeline.push(TimeBucket {
                start_ms: from_ms + bucket * self.bucket_ms,
                requests: count_at(row, 1)?,
                compared: count_at(row, 2)?,
                diverged: count_at(row, 3)?,
            });
        }
        Ok(())
    }

    /// The write ledger by route and state, and the drift still open (whenever it happened).
    async fn ledger_counts(&mut self, store: &Store, from_ms: i64, to_ms: i64) -> Result<(), StoreError> {
        let pool = store.pool();
        let rows = sqlx::query(
            "SELECT route, state, COUNT(*) FROM write_ledger WHERE at_ms >= $1 AND at_ms < $2 GROUP BY route, state",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(pool)
        .await?;
        for row in &rows {
            let (route, state): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            let count = count_at(row, 2)?;
            *self.ledger.entry(state.clone()).or_default() += count;
            *self.ledger_routes.entry(route).or_default().entry(state).or_default() += count;
        }
        // Open drift counts whenever it happened: it is still open.
        self.open_drift = u64::try_from(store.ledger_count(LedgerState::Drift).await?).unwrap_or(0);
        Ok(())
    }

    /// ID pairs by kind and origin, and unmapped IDs since `recent_from_ms`.
    async fn id_counts(&mut self, store: &Store, recent_from_ms: i64, to_ms: i64) -> Result<(), StoreError> {
        let pool = store.pool();
        let rows = sqlx::query("SELECT kind, origin, COUNT(*) FROM id_map GROUP BY kind, origin")
            .fetch_all(pool)
            .await?;
        for row in &rows {
            let (kind, origin): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            self.idmap.entry(kind).or_default().insert(origin, count_at(row, 2)?);
        }
        let row =
            sqlx::query("SELECT COUNT(*) FROM exchanges WHERE at_ms >= $1 AND at_ms < $2 AND reason = 'unmapped_id'")
                .bind(recent_from_ms)
                .bind(to_ms)
                .fetch_one(pool)
                .await?;
        self.unmapped_recent = count_at(&row, 0)?;
        Ok(())
    }

    /// Learned noise seen in the window, and the events in it (triage aside).
    async fn noise_and_events(&mut self, store: &Store, from_ms: i64, to_ms: i64) -> Result<(), StoreError> {
        let pool = store.pool();
        let rows = sqlx::query(
            "SELECT route, pattern, observations FROM learned_noise WHERE last_seen_ms >= $1 \
             ORDER BY observations DESC, route, pattern LIMIT 50",
        )
        .bind(from_ms)
        .fetch_all(pool)
        .await?;
        for row in &rows {
            self.noise.push((row.try_get(0)?, row.try_get(1)?, count_at(row, 2)?));
        }
        let rows = sqlx::query(
            "SELECT at_ms, kind, detail FROM events WHERE at_ms >= $1 AND at_ms < $2 AND kind <> 'triage' \
             ORDER BY at_ms, id",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(pool)
        .await?;
        for row in &rows {
            self.events.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
        }
        Ok(())
    }

    /// The time of the first and last exchange in the window.
    pub fn observed(&self) -> Option<(i64, i64)> {
        let first = self.routes.values().map(|r| r.first_ms).min()?;
        let last = self.routes.values().map(|r| r.last_ms).max()?;
        Some((first, last))
    }
}

/// A COUNT/SUM column as an unsigned count (SUM over no rows is NULL).
fn count_at(row: &sqlx::any::AnyRow, index: usize) -> Result<u64, StoreError> {
    let value: Option<i64> = row.try_get(index)?;
    Ok(u64::try_from(value.unwrap_or(0)).unwrap_or(0))
}

/// The latency histogram of one side, per route, over exchanges both sides answered.
async fn latency(
    store: &Store,
    column: &'static str,
    from_ms: i64,
    to_ms: i64,
) -> Result<BTreeMap<String, Histogram>, StoreError> {
    let bucket = LATENCY_BUCKET_SQL.replace("{col}", column);
    // Column names come from the two constants above, never from input.
    let sql = format!(
        "SELECT route, {bucket} AS bucket, COUNT(*) FROM exchanges \
         WHERE at_ms >= $1 AND at_ms < $2 AND primary_ms IS NOT NULL AND shadow_ms IS NOT NULL \
         GROUP BY route, bucket"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(store.pool())
        .await?;
    let mut histograms: BTreeMap<String, Histogram> = BTreeMap::new();
    for row in &rows {
        let route: String = row.try_get(0)?;
        let bucket: i64 = row.try_get(1)?;
        *histograms.entry(route).or_default().entry(bucket).or_default() += count_at(row, 2)?;
    }
    Ok(histograms)
}

async fn groups(store: &Store, from_ms: i64, to_ms: i64) -> Result<Vec<GroupEvidence>, StoreError> {
    let rows = sqlx::query(
        "SELECT g.group_key, g.route, g.method, g.pattern, g.kind, g.severity, g.summary, g.status, g.note, \
         COUNT(*), MIN(e.at_ms), MAX(e.at_ms) \
         FROM divergence_groups g \
         JOIN exchange_groups eg ON eg.group_key = g.group_key \
         JOIN exchanges e ON e.id = eg.exchange_id \
         WHERE e.at_ms >= $1 AND e.at_ms < $2 \
         GROUP BY g.group_key, g.route, g.method, g.pattern, g.kind, g.severity, g.summary, g.status, g.note",
    )
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(store.pool())
    .await?;
    let mut groups = Vec::with_capacity(rows.len());
    for row in &rows {
        groups.push(GroupEvidence {
            key: row.try_get(0)?,
            route: row.try_get(1)?,
            method: row.try_get(2)?,
            pattern: row.try_get(3)?,
            kind: row.try_get(4)?,
            severity: row.try_get(5)?,
            summary: row.try_get(6)?,
            status: row.try_get(7)?,
            note: row.try_get(8)?,
            count: count_at(row, 9)?,
            share: None,
            first_seen_ms: row.try_get(10)?,
            last_seen_ms: row.try_get(11)?,
            differences: Vec::new(),
            example: None,
            suggested_rule: None,
        });
    }
    let rank = |severity: &str| match severity {
        "high" => 0,
        "medium" => 1,
        _ => 2,
    };
    groups.sort_by(|a, b| {
        rank(&a.severity)
            .cmp(&rank(&b.severity))
            .then(b.count.cmp(&a.count))
            .then(a.key.cmp(&b.key))
    });
    for group in groups.iter_mut().take(TOP_GROUPS) {
        let samples = store.samples(&group.key).await?;
        group.differences = super::example::differences(&group.key, &samples);
        group.example = samples.iter().find_map(|sample| {
            let diff = sample.unified_diff.as_deref()?;
            Some(super::example::trim(diff, &group.differences))
        });
    }
    Ok(groups)
}

/// Groups shown with their differences and an example.
pub const TOP_GROUPS: usize = 10;

/// A percentile of a histogram, in milliseconds.
pub fn percentile(histogram: &Histogram, quantile: f64) -> Option<f64> {
    let total: u64 = histogram.values().sum();
    if total == 0 {
        return None;
    }
    let rank = ((quantile * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (bucket, count) in histogram {
        seen += count;
        if seen >= rank {
            return Some(*bucket as f64 / 10.0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_read_the_bucketed_histogram() {
        let histogram: Histogram = (1..=100).map(|ms| (ms * 10, 1)).collect();
        assert_eq!(percentile(&histogram, 0.5), Some(50.0));
        assert_eq!(percentile(&histogram, 0.95), Some(95.0));
        assert_eq!(percentile(&histogram, 0.99), Some(99.0));
        assert_eq!(percentile(&Histogram::new(), 0.5), None);
    }
}
