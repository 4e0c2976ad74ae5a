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
}

/// Which database a store URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 5,
            acquire_timeout: Duration::from_secs(5),
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
}

/// A divergence group as stored.
#[derive(Debug, Clone, PartialEq)]
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
    backend: Backend,
}

impl Store {
    /// Connects (creating a SQLite file if missing) without migrating.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        let backend = Backend::of(url).ok_or_else(|| StoreError::Scheme(url.to_string()))?;
        sqlx::any::install_default_drivers();
        let url_to_open = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let separator = if url.contains('?') { '&' } else { '?' };
                format!("{url}{separator}mode=rwc")
            }
            _ => url.to_string(),
        };
        let mut pool = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout);
        if backend == Backend::Sqlite {
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
        Ok(Store { pool, backend })
    }

    /// Connects and brings the schema up to date.
    pub async fn open(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        let store = Store::connect(url, options).await?;
        store.migrate().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the migrations this build carries that the database lacks.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&self.pool).await?,
        }
        Ok(())
    }

    /// Writes a batch of exchanges in one transaction: each exchange, the
    /// groups it counted in (created, or counted once more), and the links.
    pub async fn record(&self, batch: &[ExchangeRecord]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for exchange in batch {
            let row = sqlx::query(
                "INSERT INTO exchanges (at_ms, request_id, route, method, path, source, primary_status, \
                 shadow_status, primary_ms, shadow_ms, outcome, reason) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
            )
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
            .fetch_one(&mut *tx)
            .await?;
            let exchange_id: i64 = row.try_get(0)?;
            for group in &exchange.groups {
                sqlx::query(
                    "INSERT INTO divergence_groups (group_key, route, method, location, pattern, kind, severity, \
                     summary, first_seen_ms, last_seen_ms, count) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, 1) \
                     ON CONFLICT (group_key) DO UPDATE SET count = divergence_groups.count + 1, \
                     last_seen_ms = excluded.last_seen_ms",
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
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO exchange_groups (exchange_id, group_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(exchange_id)
                .bind(&group.key)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
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

    pub async fn close(&self) {
        self.pool.close().await;
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
        assert_eq!(Backend::of("sqlite://cutover.db"), Some(Backend::Sqlite));
        assert_eq!(Backend::of("postgres://u@h/db"), Some(Backend::Postgres));
        assert_eq!(Backend::of("mysql://h/db"), None);
        assert_eq!(
            redact_url("postgres://cutover:s3cret@db.internal:5432/cutover?sslmode=require"),
            "postgres://cutover:%5Bredacted%5D@db.internal:5432/cutover?sslmode=require"
        );
    }
}
