//! How long the readiness report takes over 1,000,000 recorded exchanges
//! (a day at ~12 req/s), on SQLite and, when CUTOVER_TEST_POSTGRES_URL is
//! set, on PostgreSQL. The rows are generated inside the database (a
//! recursive CTE on SQLite, generate_series on Postgres) so seeding is quick.
//!
//! `cargo bench --bench report` (EXCHANGES=N to change the size).

use std::time::{Duration, Instant};

use cutover::report::{Format, Readiness, Report, Span};
use cutover::store::{Store, StoreOptions};
use sqlx::any::AnyPoolOptions;
use sqlx::Executor;

const T0: i64 = 1_795_132_800_000;

fn main() {
    let exchanges: i64 = std::env::var("EXCHANGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
        run("sqlite", &sqlite, exchanges, Rows::Recursive).await;
        match std::env::var("CUTOVER_TEST_POSTGRES_URL") {
            Ok(admin_url) => {
                let url = fresh_postgres(&admin_url).await;
                run("postgres", &url, exchanges, Rows::Series).await;
            }
            Err(_) => println!("postgres: skipped (set CUTOVER_TEST_POSTGRES_URL)"),
        }
    });
}

/// How the database generates row numbers.
#[derive(Clone, Copy)]
enum Rows {
    Recursive,
    Series,
}

async fn run(name: &str, url: &str, exchanges: i64, rows: Rows) {
    let store = Store::open(url, &StoreOptions::default()).await.unwrap();
    let started = Instant::now();
    seed(url, exchanges, rows).await;
    println!("{name}: seeded {exchanges} exchanges in {:.1?}", started.elapsed());
    let span = Span {
        from_ms: T0,
        to_ms: T0 + 25 * 3_600_000,
    };
    let mut times: Vec<Duration> = Vec::new();
    let mut verdict = String::new();
    for _ in 0..5 {
        let started = Instant::now();
        let report = Report::build(&store, span, &Readiness::default(), T0 + 25 * 3_600_000)
            .await
            .unwrap();
        let html = report.render(Format::Html);
        times.push(started.elapsed());
        verdict = format!(
            "{} ({} routes, {} groups, {} KB of HTML)",
            report.verdict.label(),
            report.routes.len(),
            report.groups.len(),
            html.len() / 1024
        );
    }
    times.sort();
    println!(
        "{name}: report over {exchanges} exchanges: median {:.2?}, min {:.2?}, max {:.2?} (5 runs); {verdict}",
        times[2], times[0], times[4]
    );
    store.close().await;
}

async fn seed(url: &str, exchanges: i64, rows: Rows) {
    let pool = AnyPoolOptions::new().max_connections(1).connect(url).await.unwrap();
    let numbers = match rows {
        Rows::Recursive => format!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {}) ",
            exchanges - 1
        ),
        Rows::Series => format!("WITH n(i) AS (SELECT generate_series(0, {})) ", exchanges - 1),
    };
    let spacing = 24 * 3_600_000 / exchanges.max(1);
    let insert = format!(
        "{numbers}INSERT INTO exchanges (at_ms, request_id, route, method, path, source, primary_status, \
         shadow_status, primary_ms, shadow_ms, outcome, reason) \
         SELECT {T0} + i * {spacing}, 'r' || i, \
         CASE i % 4 WHEN 0 THEN 'all-tasks' WHEN 1 THEN 'create-task' WHEN 2 THEN 'update-task' ELSE 'get-task' END, \
         'GET', '/x', 'traffic', 200, 200, 1000.0 + (i % 500), 50.0 + (i % 97), \
         CASE WHEN i % 1000 = 0 THEN 'diverged' WHEN i % 333 = 0 THEN 'skipped' ELSE 'match' END, \
         CASE WHEN i % 333 = 0 AND i % 1000 <> 0 THEN 'queue_full' END FROM n"
    );
    pool.execute(sqlx::AssertSqlSafe(insert)).await.unwrap();
    for group in 0..20 {
        pool.execute(sqlx::AssertSqlSafe(format!(
            "INSERT INTO divergence_groups (group_key, route, method, location, pattern, kind, severity, summary, \
             first_seen_ms, last_seen_ms, count) VALUES ('g{group}', 'all-tasks', 'GET', 'body', '/tasks/*/f{group}', \
             'value_changed', '{}', 'value_changed at /tasks/*/f{group}', {T0}, {T0}, 0)",
            if group < 2 { "high" } else { "low" }
        )))
        .await
        .unwrap();
    }
    pool.execute(
        "INSERT INTO exchange_groups (exchange_id, group_key) \
         SELECT id, 'g' || ((id / 1000) % 20) FROM exchanges WHERE outcome = 'diverged'",
    )
    .await
    .unwrap();
    pool.close().await;
}

/// A database of its own on the Postgres server (dropped first if left over).
async fn fresh_postgres(admin_url: &str) -> String {
    sqlx::any::install_default_drivers();
    let admin = AnyPoolOptions::new()
        .max_connections(1)
        .connect(admin_url)
        .await
        .unwrap();
    admin
        .execute("DROP DATABASE IF EXISTS cutover_report_bench")
        .await
        .unwrap();
    admin.execute("CREATE DATABASE cutover_report_bench").await.unwrap();
    admin.close().await;
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    format!("{base}/cutover_report_bench")
}
