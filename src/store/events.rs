//! The `events` table: switches, lifecycle, reloads, triage and sweep
//! claims, the record every instance on one store follows.
//!
//! Must never: give one sweep run (or one ramp decision) to two claimants.

use sqlx::Row;

use super::{discard_if_failed, Engine, Store, StoreError};

impl Store {
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

    /// Adds an `events` row of `kind` only when none of that kind came after
    /// `after_id`: of replicas deciding on the same state at once, one
    /// records its decision and the others see it next time. Returns the
    /// row's id, or `None` when another came first.
    pub async fn add_event_after(
        &self,
        kind: &str,
        detail: &serde_json::Value,
        after_id: i64,
        now_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let mut connection = self.pool.acquire().await?;
        let result = async {
            let mut tx = sqlx::Connection::begin(&mut *connection).await?;
            if self.engine == Engine::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))::text")
                    .bind(kind)
                    .fetch_one(&mut *tx)
                    .await?;
            }
            let row = sqlx::query(
                "INSERT INTO events (at_ms, kind, detail) SELECT $1, $2, $3 \
                 WHERE NOT EXISTS (SELECT 1 FROM events WHERE kind = $2 AND id > $4) RETURNING id",
            )
            .bind(now_ms)
            .bind(kind)
            .bind(detail.to_string())
            .bind(after_id)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            row.map(|row| row.try_get(0)).transpose().map_err(StoreError::from)
        }
        .await;
        discard_if_failed(connection, result).await
    }

    /// `events` rows of a kind after an id, oldest first: (id, at_ms, detail).
    pub async fn events_after(&self, kind: &str, after_id: i64) -> Result<Vec<(i64, i64, String)>, StoreError> {
        self.events_page(kind, i64::MIN, after_id, i64::MAX).await
    }

    /// At most `limit` `events` rows of a kind after an id and at or after
    /// `since_ms`, oldest first: (id, at_ms, detail).
    pub async fn events_page(
        &self,
        kind: &str,
        since_ms: i64,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<(i64, i64, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at_ms, detail FROM events WHERE kind = $1 AND id > $2 AND at_ms >= $3 ORDER BY id LIMIT $4",
        )
        .bind(kind)
        .bind(after_id)
        .bind(since_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect()
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
}
