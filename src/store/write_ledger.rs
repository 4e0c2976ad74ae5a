//! The write ledger as stored: rows by state, claims for replay, settling,
//! and the entities that drifted.
//!
//! Must never: let two instances claim one row, or set a settled row back
//! to pending.

use sqlx::Row;

use super::{LedgerState, Store, StoreError};

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

impl Store {
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
        rows.iter().map(ledger_row).collect()
    }

    /// At most `limit` rows in drift last updated after `after` (updated,
    /// id), oldest first: what a `[[notify]]` sink hears of as drift
    /// opened, a page at a time.
    pub async fn drift_after(&self, after: (i64, i64), limit: i64) -> Result<Vec<LedgerRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at_ms, route, method, path, entity, primary_status, shadow_status, state, attempts, \
             replay, updated_ms FROM write_ledger WHERE state = $1 AND (updated_ms > $2 OR (updated_ms = $2 AND id > $3)) \
             ORDER BY updated_ms, id LIMIT $4",
        )
        .bind(LedgerState::Drift.label())
        .bind(after.0)
        .bind(after.1)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ledger_row).collect()
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
}

/// A `write_ledger` row in the column order the queries above select.
fn ledger_row(row: &sqlx::any::AnyRow) -> Result<LedgerRow, StoreError> {
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
}
