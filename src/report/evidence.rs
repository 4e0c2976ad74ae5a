//! What the store holds about a time window, aggregated in the database
//! (SQLite and PostgreSQL alike): counts per route and outcome, latency
//! histograms and the timeline from the per-minute rollups (so a window's
//! figures do not depend on which raw rows were kept), divergence groups
//! from the raw rows of the diverged, the write ledger, the ID map.
//!
//! Must never: read rows one by one where the database can aggregate, or
//! write anything.

use std::collections::BTreeMap;

use sqlx::Row;

use crate::store::{LedgerState, Store, StoreError};

/// Rollup minutes that overlap `[$1, $2)`: a minute starting up to a
/// minute before the window's start has some of its exchanges in it.
const OVERLAPPING_MINUTES: &str = "minute_ms > $1 - 60000 AND minute_ms < $2";

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
    /// Exchanges counted whose raw row `store.keep_matches` left out.
    pub rows_left_out: u64,
}

impl RouteCounts {
    pub fn outcome(&self, label: &str) -> u64 {
        self.outcomes.get(label).copied().unwrap_or(0)
    }
}

/// A latency histogram: bucket ([`crate::histogram`]'s layout) → count.
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
    /// The W3C trace ids of the group's samples, to find them in the backends' traces.
    pub trace_ids: Vec<String>,
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
    /// Client requests per route and the side that served them
    /// (`primary`, `shadow`): a share on the candidate and the rest apart.
    pub served: BTreeMap<String, BTreeMap<String, RouteCounts>>,
    /// Both sides' latency per route and serving side.
    pub served_latency: BTreeMap<String, BTreeMap<String, (Histogram, Histogram)>>,
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

    /// Only what a ramp judges its share by: counts and latencies per
    /// route and serving side, with the accepted differences.
    pub async fn gather_served(store: &Store, from_ms: i64, to_ms: i64) -> Result<Evidence, StoreError> {
        let mut evidence = Evidence::default();
        evidence.route_counts(store, from_ms, to_ms).await?;
        evidence.accepted_differences(store, from_ms, to_ms).await?;
        evidence.latency(store, from_ms, to_ms).await?;
        Ok(evidence)
    }

    /// The evidence of the requests `served` served on `routes` (every
    /// route when empty), as if they were all there was.
    pub fn served_part(&self, served: &str, routes: &[String]) -> Evidence {
        let mut part = Evidence::default();
        for (route, parts) in &self.served {
            if !routes.is_empty() && !routes.contains(route) {
                continue;
            }
            if let Some(counts) = parts.get(served) {
                part.routes.insert(route.clone(), counts.clone());
            }
            if let Some((primary, shadow)) = self.served_latency.get(route).and_then(|sides| sides.get(served)) {
                part.primary_latency.insert(route.clone(), primary.clone());
                part.shadow_latency.insert(route.clone(), shadow.clone());
            }
        }
        part
    }

    /// Requests per route by source, outcome and skip reason; 429s and
    /// cache hits per side (from the rollups).
    async fn route_counts(&mut self, store: &Store, from_ms: i64, to_ms: i64) -> Result<(), StoreError> {
        let sql = format!(
            "SELECT route, source, outcome, reason, CAST(SUM(requests) AS BIGINT), MIN(first_ms), MAX(last_ms), \
             CAST(SUM(primary_429) AS BIGINT), CAST(SUM(shadow_429) AS BIGINT), \
             CAST(SUM(primary_cache_hits) AS BIGINT), CAST(SUM(primary_cache_known) AS BIGINT), \
             CAST(SUM(shadow_cache_hits) AS BIGINT), CAST(SUM(shadow_cache_known) AS BIGINT), \
             CAST(SUM(rows_left_out) AS BIGINT), served \
             FROM rollups WHERE {OVERLAPPING_MINUTES} GROUP BY route, source, outcome, reason, served"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(from_ms)
            .bind(to_ms)
            .fetch_all(store.pool())
            .await?;
        for row in &rows {
            let route: String = row.try_get(0)?;
            let source: String = row.try_get(1)?;
            let outcome: String = row.try_get(2)?;
            let reason: String = row.try_get(3)?;
            let served: String = row.try_get(14)?;
            // A minute that straddles an edge of the window counts whole;
            // its times are kept inside the window.
            let first = row.try_get::<i64, _>(5)?.clamp(from_ms, to_ms - 1);
            let last = row.try_get::<i64, _>(6)?.clamp(from_ms, to_ms - 1);
            let add = |counts: &mut RouteCounts| -> Result<(), StoreError> {
                let count = count_at(row, 4)?;
                counts.first_ms = if counts.requests == 0 {
                    first
                } else {
                    counts.first_ms.min(first)
                };
                counts.last_ms = counts.last_ms.max(last);
                counts.requests += count;
                *counts.outcomes.entry(outcome.clone()).or_default() += count;
                if outcome == "skipped" {
                    *counts.skipped.entry(reason.clone()).or_default() += count;
                }
                *counts.sources.entry(source.clone()).or_default() += count;
                counts.primary_429 += count_at(row, 7)?;
                counts.shadow_429 += count_at(row, 8)?;
                counts.primary_cache_hits += count_at(row, 9)?;
                counts.primary_cache_known += count_at(row, 10)?;
                counts.shadow_cache_hits += count_at(row, 11)?;
                counts.shadow_cache_known += count_at(row, 12)?;
                counts.rows_left_out += count_at(row, 13)?;
                Ok(())
            };
            add(self.routes.entry(route.clone()).or_default())?;
            if !served.is_empty() {
                add(self.served.entry(route).or_default().entry(served).or_default())?;
            }
        }
        Ok(())
    }

    /// Per route, the diverged exchanges whose every group was triaged
    /// `accepted` (Scientist's `ignore`): they count as matches.
    async fn accepted_differences(&mut self, store: &Store, from_ms: i64, to_ms: i64) -> Result<(), StoreError> {
        let rows = sqlx::query(
            // From the accepted groups' exchanges (usually none), not from
            // every divergence in the window.
            "SELECT e.route, e.served, COUNT(*) FROM exchanges e \
             WHERE e.id IN (SELECT eg.exchange_id FROM exchange_groups eg \
                 JOIN divergence_groups g ON g.group_key = eg.group_key WHERE g.status = 'accepted') \
             AND e.at_ms >= $1 AND e.at_ms < $2 AND e.outcome = 'diverged' \
             AND NOT EXISTS (SELECT 1 FROM exchange_groups eg \
                 JOIN divergence_groups g ON g.group_key = eg.group_key \
                 WHERE eg.exchange_id = e.id AND g.status <> 'accepted') \
             GROUP BY e.route, e.served",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(store.pool())
        .await?;
        for row in &rows {
            let route: String = row.try_get(0)?;
            let served: String = row.try_get(1)?;
            let accepted = count_at(row, 2)?;
            if let Some(counts) = self.routes.get_mut(&route) {
                counts.accepted += accepted;
            }
            if let Some(counts) = self.served.get_mut(&route).and_then(|parts| parts.get_mut(&served)) {
                counts.accepted += accepted;
            }
        }
        Ok(())
    }

    /// Latency per side and route, and the window in about 48 buckets of
    /// whole minutes (from the rollups).
    async fn latencies_and_timeline(&mut self, store: &Store, from_ms: i64, to_ms: i64) -> Result<(), StoreError> {
        self.latency(store, from_ms, to_ms).await?;
        let minute = crate::store::MINUTE_MS;
        let wanted = ((to_ms - from_ms) / 48).max(1);
        self.bucket_ms = (wanted + minute - 1) / minute * minute;
        let origin = crate::store::minute_of(from_ms);
        let sql = format!(
            "SELECT CAST((minute_ms - $3) / $4 AS BIGINT) AS bucket, CAST(SUM(requests) AS BIGINT), \
             CAST(SUM(CASE WHEN outcome IN ('match', 'diverged', 'transient') THEN requests ELSE 0 END) AS BIGINT), \
             CAST(SUM(CASE WHEN outcome = 'diverged' THEN requests ELSE 0 END) AS BIGINT) \
             FROM rollups WHERE {OVERLAPPING_MINUTES} GROUP BY bucket ORDER BY bucket"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(from_ms)
            .bind(to_ms)
            .bind(origin)
            .bind(self.bucket_ms)
            .fetch_all(store.pool())
            .await?;
        for row in &rows {
            let bucket: i64 = row.try_get(0)?;
            self.timeline.push(TimeBucket {
                start_ms: origin + bucket * self.bucket_ms,
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
        let sql = format!(
            "SELECT CAST(SUM(requests) AS BIGINT) FROM rollups WHERE {OVERLAPPING_MINUTES} AND reason = 'unmapped_id'"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
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

impl Evidence {
    /// The latency histograms of both sides, per route and per route and
    /// serving side, over the exchanges both sides answered (from the rollups).
    async fn latency(&mut self, store: &Store, from_ms: i64, to_ms: i64) -> Result<(), StoreError> {
        let sql = format!(
            "SELECT route, served, side, bucket, CAST(SUM(n) AS BIGINT) FROM rollup_latency \
             WHERE {OVERLAPPING_MINUTES} GROUP BY route, served, side, bucket"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(from_ms)
            .bind(to_ms)
            .fetch_all(store.pool())
            .await?;
        for row in &rows {
            let route: String = row.try_get(0)?;
            let served: String = row.try_get(1)?;
            let primary_side = row.try_get::<String, _>(2)? == "primary";
            let bucket: i64 = row.try_get(3)?;
            let n = count_at(row, 4)?;
            let all = if primary_side {
                &mut self.primary_latency
            } else {
                &mut self.shadow_latency
            };
            *all.entry(route.clone()).or_default().entry(bucket).or_default() += n;
            if !served.is_empty() {
                let (primary, shadow) = self.served_latency.entry(route).or_default().entry(served).or_default();
                let part = if primary_side { primary } else { shadow };
                *part.entry(bucket).or_default() += n;
            }
        }
        Ok(())
    }
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
            trace_ids: Vec::new(),
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
        for trace_id in samples.iter().filter_map(|sample| sample.trace_id.clone()) {
            if !group.trace_ids.contains(&trace_id) {
                group.trace_ids.push(trace_id);
            }
        }
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
            return Some(crate::histogram::value_of(*bucket));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_read_the_bucketed_histogram_within_its_error() {
        let mut histogram = Histogram::new();
        for ms in 1..=100 {
            *histogram.entry(crate::histogram::bucket_of(f64::from(ms))).or_default() += 1;
        }
        for (quantile, expected) in [(0.5, 50.0), (0.95, 95.0), (0.99, 99.0)] {
            let shown = percentile(&histogram, quantile).expect("a percentile");
            assert!(
                (shown - expected).abs() / expected <= crate::histogram::RELATIVE_ERROR,
                "p{quantile}: {shown}"
            );
        }
        assert_eq!(percentile(&Histogram::new(), 0.5), None);
    }
}
