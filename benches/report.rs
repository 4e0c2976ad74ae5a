//! How long the readiness report takes over 100,000,000 requests (48 hours
//! at ~580 req/s over four routes), on SQLite and, when
//! CUTOVER_TEST_POSTGRES_URL is set, on PostgreSQL. The store holds what
//! cutover keeps of them: per-minute rollups with latency histograms, and
//! raw rows for what is worth triaging (0.1% diverged with their groups,
//! 0.3% skipped for a full queue) plus the default sample of matches
//! (`store.keep_matches = "10/s"` per route, 6.9 million rows), with the
//! latency buckets folded into hours as the writer does after two hours,
//! and, on PostgreSQL, the statistics autovacuum keeps. The rows are
//! generated inside the database (a recursive CTE on SQLite,
//! generate_series on Postgres) so seeding is quick.
//!
//! `cargo bench --bench report` (REQUESTS=N to change the size).

use std::time::{Duration, Instant};

use cutover::report::{Format, Readiness, Report, Span};
use cutover::store::{Store, StoreOptions};
use sqlx::any::AnyPoolOptions;
use sqlx::Executor;

const T0: i64 = 1_795_132_800_000;

fn main() {
    let exchanges: i64 = std::env::var("REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000_000);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        // REPORT_BENCH_SQLITE=PATH keeps the SQLite store there, to look into.
        let path = std::env::var("REPORT_BENCH_SQLITE").map_or_else(|_| dir.path().join("bench.db"), Into::into);
        let _ = std::fs::remove_file(&path);
        let sqlite = format!("sqlite://{}", path.display());
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
    println!("{name}: seeded {exchanges} requests in {:.1?}", started.elapsed());
    // What the writer's prune loop does every ten minutes: latency buckets
    // older than two hours folded into hours; and on PostgreSQL the
    // planner's statistics, which autovacuum keeps (SQLite has none here,
    // as in a store cutover wrote).
    let started = Instant::now();
    let hours = store.compact_latency(T0 + HOURS * 3_600_000).await.unwrap();
    println!(
        "{name}: folded latency into {hours} hour rows in {:.1?}",
        started.elapsed()
    );
    if matches!(rows, Rows::Series) {
        let pool = AnyPoolOptions::new().max_connections(1).connect(url).await.unwrap();
        pool.execute("ANALYZE").await.unwrap();
        pool.close().await;
    }
    let span = Span {
        from_ms: T0,
        to_ms: T0 + HOURS * 3_600_000 + 1,
    };
    let mut times: Vec<Duration> = Vec::new();
    let mut verdict = String::new();
    for _ in 0..5 {
        let started = Instant::now();
        let report = Report::build(&store, span, &Readiness::default(), span.to_ms)
            .await
            .unwrap();
        let html = report.render(Format::Html);
        times.push(started.elapsed());
        let requests: u64 = report.routes.iter().map(|route| route.requests).sum();
        assert_eq!(requests, exchanges as u64 / MINUTES as u64 / 4 * MINUTES as u64 * 4);
        verdict = format!(
            "{} ({} requests, {} routes, {} groups, {} KB of HTML)",
            report.verdict.label(),
            requests,
            report.routes.len(),
            report.groups.len(),
            html.len() / 1024
        );
    }
    times.sort();
    println!(
        "{name}: report over {exchanges} requests: median {:.2?}, min {:.2?}, max {:.2?} (5 runs); {verdict}",
        times[2], times[0], times[4]
    );
    store.close().await;
}

/// The test's length: the report's default window.
const HOURS: i64 = 48;
const MINUTES: i64 = HOURS * 60;
const ROUTES: &str =
    "CASE r WHEN 0 THEN 'all-tasks' WHEN 1 THEN 'create-task' WHEN 2 THEN 'update-task' ELSE 'get-task' END";

async fn seed(url: &str, requests: i64, rows: Rows) {
    let pool = AnyPoolOptions::new().max_connections(1).connect(url).await.unwrap();
    let numbers = |name: &str, count: i64| match rows {
        Rows::Recursive => format!(
            "{name}(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM {name} WHERE i < {})",
            count - 1
        ),
        Rows::Series => format!("{name}(i) AS (SELECT generate_series(0, {}))", count - 1),
    };
    let with = |parts: &[(&str, i64)]| {
        let recursive = if matches!(rows, Rows::Recursive) {
            "RECURSIVE "
        } else {
            ""
        };
        let parts: Vec<String> = parts.iter().map(|(name, count)| numbers(name, *count)).collect();
        format!("WITH {recursive}{} ", parts.join(", "))
    };
    // Per minute and route: matches, 0.1% diverged, 0.3% skipped (queue_full).
    let per_minute = requests / MINUTES / 4;
    let (diverged, skipped) = (per_minute / 1000, per_minute * 3 / 1000);
    let matches = per_minute - diverged - skipped;
    for (outcome, reason, count) in [
        ("match", "", matches),
        ("diverged", "", diverged),
        ("skipped", "queue_full", skipped),
    ] {
        let sql = format!(
            "{}INSERT INTO rollups (minute_ms, route, method, source, outcome, reason, requests, rows_left_out, \
             primary_429, shadow_429, primary_cache_hits, primary_cache_known, shadow_cache_hits, shadow_cache_known, \
             first_ms, last_ms) \
             SELECT {T0} + m.i * 60000, {ROUTES}, 'GET', 'traffic', '{outcome}', '{reason}', {count}, \
             {left_out}, 0, 0, 0, 0, 0, 0, {T0} + m.i * 60000, {T0} + m.i * 60000 + 59999 \
             FROM m, (SELECT i AS r FROM routes) AS routes",
            with(&[("m", MINUTES), ("routes", 4)]),
            left_out = if outcome == "match" { (count - 600).max(0) } else { 0 },
        );
        pool.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
    }
    // Both sides' latency: 100 buckets a minute each, around 1 s and 80 ms.
    let (primary, shadow) = (
        cutover::histogram::bucket_of(800.0),
        cutover::histogram::bucket_of(60.0),
    );
    let both = matches + diverged;
    let sql = format!(
        "{}INSERT INTO rollup_latency (minute_ms, route, side, bucket, n) \
         SELECT {T0} + m.i * 60000, {ROUTES}, CASE s.i WHEN 0 THEN 'primary' ELSE 'shadow' END, \
         CASE s.i WHEN 0 THEN {primary} ELSE {shadow} END + b.i, {n} \
         FROM m, (SELECT i AS r FROM routes) AS routes, s, b",
        with(&[("m", MINUTES), ("routes", 4), ("s", 2), ("b", 100)]),
        n = both / 100,
    );
    pool.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
    // Raw rows: the diverged and skipped, and the sample of matches.
    let raw = [
        ("diverged", "NULL", diverged * MINUTES * 4),
        ("skipped", "'queue_full'", skipped * MINUTES * 4),
        ("match", "NULL", 600 * MINUTES * 4),
    ];
    for (outcome, reason, count) in raw {
        let spacing = (HOURS * 3_600_000 / count.max(1)).max(1);
        let sql = format!(
            "{}INSERT INTO exchanges (at_ms, request_id, route, method, path, source, primary_status, \
             shadow_status, primary_ms, shadow_ms, outcome, reason) \
             SELECT {T0} + n.i * {spacing}, '{outcome}' || n.i, \
             CASE n.i % 4 WHEN 0 THEN 'all-tasks' WHEN 1 THEN 'create-task' WHEN 2 THEN 'update-task' ELSE 'get-task' END, \
             'GET', '/x', 'traffic', 200, 200, 1000.0 + (n.i % 500), 50.0 + (n.i % 97), '{outcome}', {reason} FROM n",
            with(&[("n", count)]),
        );
        pool.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
    }
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
    // Triage has accepted a few groups: their exchanges count as matches.
    pool.execute("UPDATE divergence_groups SET status = 'accepted' WHERE group_key IN ('g10', 'g11', 'g12')")
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
