//! Reading the evidence for triage: divergence groups, their samples, the
//! per-route summary, triage itself, and retention.
//!
//! Must never: return a value that was not redacted when it was written.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{discard_if_failed, Store, StoreError};

/// A stored sample, for the admin API.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SampleRow {
    pub at_ms: i64,
    pub differences: serde_json::Value,
    pub unified_diff: Option<String>,
    pub request: serde_json::Value,
    pub primary_excerpt: Option<String>,
    pub shadow_excerpt: Option<String>,
    /// The W3C trace id of the request, when it carried a valid `traceparent`.
    pub trace_id: Option<String>,
    /// The side that served the sampled request (`primary`, `shadow`),
    /// while its exchange is kept: its path is in that side's IDs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served: Option<String>,
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
    /// Client requests by the side that served them (`primary`, `shadow`).
    pub served: Vec<ServedSummary>,
}

/// The client requests of a route one side served.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ServedSummary {
    pub served: String,
    pub requests: i64,
    pub compared: i64,
    pub diverged: i64,
}

/// Triage states a group can be given: `accepted` differences count as
/// matches in the report; `bug` and `fixed` groups keep counting.
pub const TRIAGE_STATES: [&str; 4] = ["open", "accepted", "bug", "fixed"];

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

impl Store {
    /// The samples of a group, oldest first.
    pub async fn samples(&self, key: &str) -> Result<Vec<SampleRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.at_ms, s.differences, s.unified_diff, s.request, s.primary_excerpt, s.shadow_excerpt, \
             s.trace_id, e.served FROM divergence_samples s LEFT JOIN exchanges e ON e.id = s.exchange_id \
             WHERE s.group_key = $1 ORDER BY s.id",
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
                    trace_id: row.try_get("trace_id")?,
                    served: row
                        .try_get::<Option<String>, _>("served")?
                        .filter(|served| !served.is_empty()),
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

    /// At most `limit` exchanges observed in `[from_ms, to_ms)` with ids
    /// after `after_id`, oldest first: (id, the exchange as kept).
    pub async fn exchanges_between(
        &self,
        (from_ms, to_ms): (i64, i64),
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<(i64, super::ExchangeRecord)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at_ms, request_id, route, method, path, source, outcome, reason, primary_status, \
             shadow_status, primary_ms, shadow_ms, served FROM exchanges \
             WHERE at_ms >= $1 AND at_ms < $2 AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(from_ms)
        .bind(to_ms)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let exchange = super::ExchangeRecord {
                    at_ms: row.try_get("at_ms")?,
                    request_id: row.try_get("request_id")?,
                    route: row.try_get("route")?,
                    method: row.try_get("method")?,
                    path: row.try_get("path")?,
                    source: row.try_get("source")?,
                    outcome: row.try_get("outcome")?,
                    reason: row.try_get("reason")?,
                    primary_status: row.try_get("primary_status")?,
                    shadow_status: row.try_get("shadow_status")?,
                    primary_ms: row.try_get("primary_ms")?,
                    shadow_ms: row.try_get("shadow_ms")?,
                    served: row.try_get::<Option<String>, _>("served")?.unwrap_or_default(),
                    ..super::ExchangeRecord::default()
                };
                Ok((row.try_get("id")?, exchange))
            })
            .collect()
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

    /// At most `limit` groups of a severity first seen after `after`
    /// (first seen, group key), oldest first: what a `[[notify]]` sink
    /// hears of as a new high-severity group, a page at a time.
    pub async fn groups_seen_after(
        &self,
        severity: &str,
        after: (i64, &str),
        limit: i64,
    ) -> Result<Vec<GroupRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT group_key, route, pattern, kind, severity, count, first_seen_ms, last_seen_ms, status \
             FROM divergence_groups WHERE severity = $1 AND (first_seen_ms > $2 OR (first_seen_ms = $2 AND group_key > $3)) \
             ORDER BY first_seen_ms, group_key LIMIT $4",
        )
        .bind(severity)
        .bind(after.0)
        .bind(after.1)
        .bind(limit)
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

    /// Per route: requests by outcome and by the side that served them, and open divergence groups.
    pub async fn summary(&self) -> Result<Vec<RouteSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT route, outcome, CAST(SUM(requests) AS BIGINT) AS n FROM rollups \
             GROUP BY route, outcome ORDER BY route, outcome",
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
        let parts = sqlx::query(
            "SELECT route, served, CAST(SUM(requests) AS BIGINT) AS requests, \
             CAST(SUM(CASE WHEN outcome IN ('match', 'diverged', 'transient') THEN requests ELSE 0 END) AS BIGINT) AS compared, \
             CAST(SUM(CASE WHEN outcome = 'diverged' THEN requests ELSE 0 END) AS BIGINT) AS diverged \
             FROM rollups WHERE served <> '' GROUP BY route, served ORDER BY route, served",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in parts {
            let route: String = row.try_get("route")?;
            if let Some(entry) = routes.iter_mut().find(|entry| entry.route == route) {
                entry.served.push(ServedSummary {
                    served: row.try_get("served")?,
                    requests: row.try_get("requests")?,
                    compared: row.try_get("compared")?,
                    diverged: row.try_get("diverged")?,
                });
            }
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

    /// Sets a group's triage status (one of [`TRIAGE_STATES`]) and note, and records the triage as an event.
    /// Returns false when no such group exists.
    pub async fn triage(&self, key: &str, status: &str, note: Option<&str>, at_ms: i64) -> Result<bool, StoreError> {
        let mut connection = self.pool.acquire().await?;
        let result = async {
            let mut tx = sqlx::Connection::begin(&mut *connection).await?;
            let fixed_ms = (status == "fixed").then_some(at_ms);
            let updated =
                sqlx::query("UPDATE divergence_groups SET status = $1, note = $2, fixed_ms = $3 WHERE group_key = $4")
                    .bind(status)
                    .bind(note)
                    .bind(fixed_ms)
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
