//! The `notifications` table: what each `[[notify]]` sink is owed, and how
//! each delivery went. Any instance may add a notice (the first one wins,
//! by `UNIQUE (sink, subject)`); one instance at a time holds a notice's
//! delivery, by a lease in `claimed_until_ms`.
//!
//! Must never: give one notice to two deliverers at once, or forget a
//! notice that was not delivered (it stays `pending` or ends `failed`).

use sqlx::Row;

use super::{Store, StoreError};

/// A notice to add: which occurrence, when it happened, and the body to send.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotice {
    /// What it is about, unique per sink: `group:KEY`, `drift:ID`, `event:ID`.
    pub subject: String,
    /// The trigger's name (`group`, `verdict`, `rollback`, `drift`, `ramp`).
    pub event: String,
    pub source_ms: i64,
    /// The JSON body, as sent.
    pub payload: String,
}

/// A notice as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NoticeRow {
    pub id: i64,
    pub sink: String,
    pub subject: String,
    pub event: String,
    pub source_ms: i64,
    #[serde(skip)]
    pub payload: String,
    pub state: String,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub settled_ms: Option<i64>,
}

/// How one delivery attempt went.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered {
        status: u16,
    },
    /// Tried again at `next_attempt_ms`.
    Retry {
        status: Option<u16>,
        error: String,
        next_attempt_ms: i64,
    },
    /// Given up: a refusal that retrying cannot change, or the last attempt.
    Failed {
        status: Option<u16>,
        error: String,
    },
}

/// The columns [`notice_row`] reads, in its order.
macro_rules! columns {
    () => {
        "id, sink, subject, event, source_ms, payload, state, attempts, last_status, last_error, created_ms, settled_ms"
    };
}

impl Store {
    /// Marks where a sink begins, once across every instance: occurrences
    /// from before it are not sent. Returns the baseline's time.
    pub async fn start_sink(&self, sink: &str, now_ms: i64) -> Result<i64, StoreError> {
        sqlx::query(
            "INSERT INTO notifications (sink, subject, event, source_ms, payload, state, next_attempt_ms, created_ms) \
             VALUES ($1, 'baseline', 'baseline', $2, '{}', 'baseline', 0, $2) ON CONFLICT (sink, subject) DO NOTHING",
        )
        .bind(sink)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT source_ms FROM notifications WHERE sink = $1 AND subject = 'baseline'")
            .bind(sink)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// The newest occurrence a sink was given a notice for, if any.
    pub async fn latest_notice(&self, sink: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT MAX(source_ms) FROM notifications WHERE sink = $1 AND state <> 'baseline'")
            .bind(sink)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Adds a notice for a sink unless it has one for that subject; true
    /// when this call added it.
    pub async fn add_notice(&self, sink: &str, notice: &NewNotice, now_ms: i64) -> Result<bool, StoreError> {
        let added = sqlx::query(
            "INSERT INTO notifications (sink, subject, event, source_ms, payload, state, next_attempt_ms, created_ms) \
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6) ON CONFLICT (sink, subject) DO NOTHING",
        )
        .bind(sink)
        .bind(&notice.subject)
        .bind(&notice.event)
        .bind(notice.source_ms)
        .bind(&notice.payload)
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(added == 1)
    }

    /// Takes the oldest due notice of a sink for `lease_ms`, so no other
    /// instance delivers it meanwhile; an expired lease (its deliverer
    /// died) is taken over.
    pub async fn claim_notice(
        &self,
        sink: &str,
        instance: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<NoticeRow>, StoreError> {
        // The conditions are repeated outside the subquery: on PostgreSQL a
        // claim that waited on another's row lock checks them again.
        let row = sqlx::query(concat!(
            "UPDATE notifications SET claimed_by = $1, claimed_until_ms = $2 \
             WHERE id = (SELECT id FROM notifications WHERE sink = $3 AND state = 'pending' \
                         AND next_attempt_ms <= $4 AND claimed_until_ms <= $4 ORDER BY id LIMIT 1) \
             AND state = 'pending' AND claimed_until_ms <= $4 RETURNING ",
            columns!()
        ))
        .bind(instance)
        .bind(now_ms.saturating_add(lease_ms))
        .bind(sink)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(notice_row).transpose()
    }

    /// Records a delivery attempt of a notice this instance claimed.
    pub async fn settle_notice(
        &self,
        id: i64,
        instance: &str,
        attempt: &Attempt,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (state, status, error, next, settled) = match attempt {
            Attempt::Delivered { status } => ("delivered", Some(*status), None, 0, Some(now_ms)),
            Attempt::Retry {
                status,
                error,
                next_attempt_ms,
            } => ("pending", *status, Some(error.as_str()), *next_attempt_ms, None),
            Attempt::Failed { status, error } => ("failed", *status, Some(error.as_str()), 0, Some(now_ms)),
        };
        sqlx::query(
            "UPDATE notifications SET state = $1, attempts = attempts + 1, last_status = $2, last_error = $3, \
             next_attempt_ms = $4, settled_ms = $5, claimed_until_ms = 0 WHERE id = $6 AND claimed_by = $7",
        )
        .bind(state)
        .bind(status.map(i64::from))
        .bind(error)
        .bind(next)
        .bind(settled)
        .bind(id)
        .bind(instance)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest notices of every sink, newest first (baselines left out).
    pub async fn notices(&self, limit: i64) -> Result<Vec<NoticeRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM notifications WHERE state <> 'baseline' ORDER BY id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(notice_row).collect()
    }
}

fn notice_row(row: &sqlx::any::AnyRow) -> Result<NoticeRow, StoreError> {
    Ok(NoticeRow {
        id: row.try_get(0)?,
        sink: row.try_get(1)?,
        subject: row.try_get(2)?,
        event: row.try_get(3)?,
        source_ms: row.try_get(4)?,
        payload: row.try_get(5)?,
        state: row.try_get(6)?,
        attempts: row.try_get(7)?,
        last_status: row.try_get(8)?,
        last_error: row.try_get(9)?,
        created_ms: row.try_get(10)?,
        settled_ms: row.try_get(11)?,
    })
}
