//! The divergence store: SQLite (the embedded default, a file created if
//! missing, WAL mode) or PostgreSQL, chosen by the URL's scheme. Runtime
//! queries through sqlx's `Any` driver: one code path for both databases,
//! with migrations per database under `migrations/`. Every exchange counts
//! in the per-minute rollups (`rollups`); raw rows are kept for what is
//! worth triaging and a sample of matches (`keep`).
//!
//! Must never: be awaited on the proxy's hot path, or store anything that
//! was not redacted first.

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

mod backup;
mod events;
mod groups;
mod ids;
mod keep;
mod notices;
mod records;
mod rollups;
mod shared;
mod write_ledger;
mod writer;

pub use crate::ledger::{LedgerRecord, LedgerState};

pub use groups::{GroupFilter, GroupRow, RouteSummary, SampleRow, ServedSummary, TRIAGE_STATES};
pub use keep::KeepMatches;
pub use notices::{Attempt, NewNotice, NoticeRow};
pub use records::{ExchangeRecord, GroupRef, IntentRecord, NoiseRecord, Record, SampleRecord};
pub use rollups::{minute_of, MINUTE_MS};
pub use shared::SharedStore;
pub use write_ledger::LedgerRow;
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
    #[error(
        "store {url} does not exist (or holds no cutover schema): point --store or -c at the proxy's store, \
         or pass --create to start an empty one"
    )]
    Missing { url: String },
    #[error("store: write_ledger row {id} has state \"{state}\", which this version does not know")]
    UnknownLedgerState { id: i64, state: String },
    #[error(
        "cutover backup copies a SQLite store; back a PostgreSQL store up with pg_dump \
         (README, \"Keeping the evidence\")"
    )]
    BackupNeedsSqlite,
    #[error("backup: {path} already exists; name a new file (nothing was overwritten)")]
    BackupExists { path: String },
    #[error("backup: {path}: {source}")]
    BackupFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Whether an error says the database, file or table is not there:
/// SQLite's "unable to open" (14) or "no such table", PostgreSQL's
/// undefined table (42P01) or database (3D000).
fn is_absent(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(database) => {
            matches!(database.code().as_deref(), Some("14" | "42P01" | "3D000"))
                || database.message().starts_with("no such table")
        }
        _ => false,
    }
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
        Store::connect_with(url, options, true).await
    }

    /// Opens a store that must already exist (a SQLite file, or a database
    /// holding cutover's schema), bringing its schema up to date; a typo in
    /// a URL is then an error instead of a new, empty store.
    pub async fn open_existing(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        let missing = || StoreError::Missing { url: redact_url(url) };
        let store = match Store::connect_with(url, options, false).await {
            Err(StoreError::Connect { source, .. }) if is_absent(&source) => return Err(missing()),
            other => other?,
        };
        // Only an absent table means "no schema"; a busy or failing database
        // is reported as what it is, not as a store that does not exist.
        match sqlx::query("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(&store.pool)
            .await
        {
            Ok(_) => {}
            Err(error) if is_absent(&error) => {
                store.close().await;
                return Err(missing());
            }
            Err(error) => {
                store.close().await;
                return Err(StoreError::Query(error));
            }
        }
        store.migrate().await?;
        Ok(store)
    }

    async fn connect_with(url: &str, options: &StoreOptions, create: bool) -> Result<Store, StoreError> {
        let engine = Engine::of(url).ok_or_else(|| StoreError::Scheme(url.to_string()))?;
        sqlx::any::install_default_drivers();
        let in_memory = url.contains(":memory:");
        let url_to_open = match engine {
            Engine::Sqlite if !url.contains("mode=") && !in_memory => {
                let separator = if url.contains('?') { '&' } else { '?' };
                let mode = if create { "rwc" } else { "rw" };
                format!("{url}{separator}mode={mode}")
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
        let rolled_up = self.backfill_rollups().await?;
        if rolled_up > 0 {
            tracing::info!(exchanges = rolled_up, "rolled up the exchanges recorded before rollups");
        }
        Ok(())
    }

    /// On SQLite, moves what the write-ahead log holds into the database
    /// and truncates the log to nothing. The log only grows until a
    /// checkpoint (SQLite's automatic one waits for about 4 MB of it), so
    /// after a full disk it holds the space the next writes need. A
    /// checkpoint that cannot run now (a reader in the way, still no
    /// space) is left for the next recovery. Nothing on PostgreSQL.
    pub(crate) async fn reclaim_wal(&self) {
        if self.engine != Engine::Sqlite {
            return;
        }
        if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&self.pool).await {
            tracing::debug!(error = %err, "the store's write-ahead log could not be truncated now");
        }
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
    use super::records::{multi_row_insert, EXCHANGE_COLUMNS};
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
