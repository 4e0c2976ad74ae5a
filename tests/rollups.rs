//! The store's rollups against a real SQLite file and, in CI, the real
//! PostgreSQL: one workload written by the store writer with
//! `keep_matches = "all"` and with `"0/s"` gives the same report, and the
//! figures of the workload itself (percentiles within the histogram's
//! error); a store recorded before rollups is rolled up once, by however
//! many instances open it at the same time; rollups outlive raw rows.

mod common;

use std::time::Duration;

use common::{drop_shared_store, shared_store};
use cutover::report::{Format, Readiness, Report, Span};
use cutover::store::{ExchangeRecord, GroupRef, KeepMatches, SampleRecord, Store, StoreOptions, Writer, WriterConfig};

/// 2026-11-20T00:00:00Z.
const T0: i64 = 1_795_132_800_000;
const MINUTE: i64 = 60_000;

/// Ten minutes of two routes at 20 requests a second: mostly matches, a
/// diverged share with a group, sampled-out skips, shadow errors, 429s and
/// cache statuses, and latencies spread over two orders of magnitude.
fn workload() -> Vec<ExchangeRecord> {
    workload_from(T0)
}

/// The same workload, starting at `t0`.
fn workload_from(t0: i64) -> Vec<ExchangeRecord> {
    let group = GroupRef {
        key: "00c0ffee00c0ffee".into(),
        route: "all-tasks".into(),
        method: "GET".into(),
        location: "body".into(),
        pattern: "/tasks/*/status".into(),
        kind: "value_changed".into(),
        severity: "medium".into(),
        summary: "value_changed at /tasks/*/status".into(),
    };
    (0..12_000i64)
        .map(|i| {
            let route = if i % 3 == 0 { "one-task" } else { "all-tasks" };
            let (outcome, reason) = match i % 50 {
                0 => ("diverged", None),
                1 | 2 => ("skipped", Some("sampled_out")),
                3 => ("shadow_error", None),
                _ => ("match", None),
            };
            let diverged = outcome == "diverged" && route == "all-tasks";
            let outcome = if outcome == "diverged" && !diverged {
                "match"
            } else {
                outcome
            };
            let mirrored = reason.is_none();
            ExchangeRecord {
                at_ms: t0 + i * 50,
                request_id: format!("r{i}"),
                route: route.into(),
                method: "GET".into(),
                path: format!("/{route}"),
                source: if i % 7 == 0 { "sweep" } else { "traffic" }.into(),
                primary_status: Some(if i % 97 == 0 { 429 } else { 200 }),
                shadow_status: mirrored.then_some(if outcome == "shadow_error" { 503 } else { 200 }),
                primary_ms: Some(2.0 + (i % 400) as f64 * 0.37),
                shadow_ms: mirrored.then_some(1.0 + (i * 7 % 1000) as f64 * 0.21),
                outcome: outcome.into(),
                reason: reason.map(str::to_string),
                primary_cache: Some(if i % 4 == 0 { "HIT" } else { "MISS" }.into()),
                groups: if diverged { vec![group.clone()] } else { Vec::new() },
                samples: if diverged && i < 500 {
                    vec![SampleRecord {
                        group_key: group.key.clone(),
                        differences: "[]".into(),
                        unified_diff: None,
                        request: "{}".into(),
                        primary_excerpt: None,
                        shadow_excerpt: None,
                        trace_id: None,
                    }]
                } else {
                    Vec::new()
                },
                ..ExchangeRecord::default()
            }
        })
        .collect()
}

/// Writes records through a real store writer, then stops it.
async fn write_through_the_writer(url: &str, keep_matches: KeepMatches, records: &[ExchangeRecord]) {
    let config = WriterConfig {
        url: url.to_string(),
        options: StoreOptions::default(),
        batch: 200,
        retention: Duration::from_secs(3650 * 86_400),
        rollup_retention: Duration::from_secs(3650 * 86_400),
        keep_matches,
        flush: Duration::from_millis(20),
        buffer: 100_000,
    };
    let (writer, task) = Writer::start(config, cutover::metrics::Metrics::new().unwrap());
    for record in records {
        writer.submit(record.clone());
    }
    writer.stop();
    let unwritten = task.await.unwrap();
    assert_eq!(unwritten.records, 0, "{unwritten:?}");
}

async fn report_of(store: &Store) -> Report {
    report_from(store, T0).await
}

/// The report over the hour from `t0`.
async fn report_from(store: &Store, t0: i64) -> Report {
    let span = Span {
        from_ms: t0,
        to_ms: t0 + 60 * MINUTE,
    };
    Report::build(store, span, &Readiness::default(), t0 + 60 * MINUTE)
        .await
        .unwrap()
}

/// The exact percentile of some latencies, as the old raw-row report read them.
fn exact_percentile(mut values: Vec<f64>, quantile: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((quantile * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

async fn keeping_all_or_no_matches_reports_the_same(all_url: &str, none_url: &str) {
    let records = workload();
    write_through_the_writer(all_url, KeepMatches::All, &records).await;
    write_through_the_writer(none_url, KeepMatches::PerSecond(0.0), &records).await;
    let (all, none) = (
        Store::open(all_url, &StoreOptions::default()).await.unwrap(),
        Store::open(none_url, &StoreOptions::default()).await.unwrap(),
    );
    let plain = records
        .iter()
        .filter(|r| r.groups.is_empty() && (r.outcome == "match" || r.reason.as_deref() == Some("sampled_out")))
        .count() as i64;
    assert_eq!(all.exchange_count().await.unwrap(), 12_000, "every row kept");
    assert_eq!(
        none.exchange_count().await.unwrap(),
        12_000 - plain,
        "only what is worth triaging"
    );
    let (report_all, report_none) = (report_of(&all).await, report_of(&none).await);
    assert_eq!(
        report_all.render(Format::Json),
        report_none.render(Format::Json),
        "the same figures whichever rows were kept"
    );
    let route = report_all.routes.iter().find(|r| r.route == "all-tasks").unwrap();
    let expected: Vec<&ExchangeRecord> = records.iter().filter(|r| r.route == "all-tasks").collect();
    assert_eq!(route.requests, expected.len() as u64);
    assert_eq!(
        route.diverged,
        expected.iter().filter(|r| r.outcome == "diverged").count() as u64
    );
    assert_eq!(
        route.skipped.get("sampled_out").copied(),
        Some(
            expected
                .iter()
                .filter(|r| r.reason.as_deref() == Some("sampled_out"))
                .count() as u64
        )
    );
    assert_eq!(
        route.primary_429,
        expected.iter().filter(|r| r.primary_status == Some(429)).count() as u64
    );
    assert_eq!(
        route.by_source.get("sweep").copied(),
        Some(expected.iter().filter(|r| r.source == "sweep").count() as u64)
    );
    let both: Vec<&&ExchangeRecord> = expected.iter().filter(|r| r.shadow_ms.is_some()).collect();
    for (quantile, primary, shadow) in [
        (0.5, route.primary.p50_ms, route.shadow.p50_ms),
        (0.95, route.primary.p95_ms, route.shadow.p95_ms),
        (0.99, route.primary.p99_ms, route.shadow.p99_ms),
    ] {
        for (shown, side) in [(primary, "primary"), (shadow, "shadow")] {
            let exact = exact_percentile(
                both.iter()
                    .map(|r| if side == "primary" { r.primary_ms } else { r.shadow_ms }.unwrap())
                    .collect(),
                quantile,
            );
            let shown = shown.unwrap();
            assert!(
                (shown - exact).abs() / exact <= 0.02,
                "{side} p{quantile}: {shown} ms against {exact} ms exactly"
            );
        }
    }
    let timeline_total: u64 = report_all.timeline.iter().map(|bucket| bucket.requests).sum();
    assert_eq!(timeline_total, 12_000);
    all.close().await;
    none.close().await;
}

#[tokio::test]
async fn sqlite_reports_the_same_figures_whichever_matches_keep_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let url = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
    keeping_all_or_no_matches_reports_the_same(&url("all.db"), &url("none.db")).await;
}

#[tokio::test]
async fn postgres_reports_the_same_figures_whichever_matches_keep_a_row() {
    if std::env::var("CUTOVER_TEST_POSTGRES_URL").is_err() {
        eprintln!("note: CUTOVER_TEST_POSTGRES_URL is not set; skipping the PostgreSQL rollup test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (all, none) = (shared_store(dir.path()).await, shared_store(dir.path()).await);
    keeping_all_or_no_matches_reports_the_same(&all, &none).await;
    drop_shared_store(&all).await;
    drop_shared_store(&none).await;
}

/// Applies only the migrations a store had before rollups (0001–0004),
/// from copies of this build's own files.
async fn open_as_before_rollups(url: &str) {
    let engine = if url.starts_with("sqlite") {
        "sqlite"
    } else {
        "postgres"
    };
    let old = tempfile::tempdir().unwrap();
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(engine);
    for entry in std::fs::read_dir(&folder).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.as_str() < "0005" {
            std::fs::copy(&path, old.path().join(&name)).unwrap();
        }
    }
    sqlx::any::install_default_drivers();
    let url = if engine == "sqlite" {
        format!("{url}?mode=rwc")
    } else {
        url.to_string()
    };
    let pool = sqlx::any::AnyPoolOptions::new().connect(&url).await.unwrap();
    let migrator = sqlx::migrate::Migrator::new(old.path()).await.unwrap();
    migrator.run(&pool).await.unwrap();
    // The old write path: one row per exchange, no rollups.
    for chunk in workload().chunks(500) {
        let mut sql = String::from(
            "INSERT INTO exchanges (at_ms, request_id, route, method, path, source, primary_status, \
             shadow_status, primary_ms, shadow_ms, outcome, reason, primary_cache, shadow_cache) VALUES ",
        );
        let mut values = Vec::new();
        for r in chunk {
            values.push(format!(
                "({}, '{}', '{}', 'GET', '/{}', '{}', {}, {}, {}, {}, '{}', {}, {}, NULL)",
                r.at_ms,
                r.request_id,
                r.route,
                r.route,
                r.source,
                r.primary_status.unwrap(),
                r.shadow_status.map_or("NULL".to_string(), |s| s.to_string()),
                r.primary_ms.unwrap(),
                r.shadow_ms.map_or("NULL".to_string(), |ms| ms.to_string()),
                r.outcome,
                r.reason
                    .as_ref()
                    .map_or("NULL".to_string(), |reason| format!("'{reason}'")),
                r.primary_cache
                    .as_ref()
                    .map_or("NULL".to_string(), |cache| format!("'{cache}'")),
            ));
        }
        sql.push_str(&values.join(", "));
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
    }
    pool.close().await;
}

/// A store recorded before rollups (12,000 exchanges, rolled up in chunks
/// that each opener claims in the chunk's transaction), opened three times
/// at once: every old exchange counts once, and the report is the one a
/// store recorded with rollups gives.
async fn an_old_store_is_rolled_up_once(old_url: &str, new_url: &str) {
    open_as_before_rollups(old_url).await;
    let opened = futures_util::future::join_all(
        (0..3).map(|_| async { Store::open_existing(old_url, &StoreOptions::default()).await.unwrap() }),
    )
    .await;
    let summary = opened[0].summary().await.unwrap();
    let requests: i64 = summary.iter().map(|route| route.requests).sum();
    assert_eq!(requests, 12_000, "{summary:?}");
    write_through_the_writer(new_url, KeepMatches::All, &workload()).await;
    let recorded = Store::open(new_url, &StoreOptions::default()).await.unwrap();
    let (migrated, fresh) = (report_of(&opened[1]).await, report_of(&recorded).await);
    assert_eq!(migrated.routes.len(), 2);
    for (old, new) in migrated.routes.iter().zip(&fresh.routes) {
        assert_eq!(
            (
                old.requests,
                old.diverged,
                &old.skipped,
                old.primary_429,
                old.primary.p95_ms
            ),
            (
                new.requests,
                new.diverged,
                &new.skipped,
                new.primary_429,
                new.primary.p95_ms
            ),
            "{}",
            old.route
        );
    }
    // Opened again, nothing is rolled up twice.
    let again = Store::open_existing(old_url, &StoreOptions::default()).await.unwrap();
    let requests: i64 = again.summary().await.unwrap().iter().map(|route| route.requests).sum();
    assert_eq!(requests, 12_000);
    for store in opened.iter().chain([&recorded, &again]) {
        store.close().await;
    }
}

#[tokio::test]
async fn sqlite_rolls_up_a_store_recorded_before_rollups_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
    an_old_store_is_rolled_up_once(&url("old.db"), &url("new.db")).await;
}

#[tokio::test]
async fn postgres_rolls_up_a_store_recorded_before_rollups_once() {
    if std::env::var("CUTOVER_TEST_POSTGRES_URL").is_err() {
        eprintln!("note: CUTOVER_TEST_POSTGRES_URL is not set; skipping the PostgreSQL rollup test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (shared_store(dir.path()).await, shared_store(dir.path()).await);
    an_old_store_is_rolled_up_once(&old, &new).await;
    drop_shared_store(&old).await;
    drop_shared_store(&new).await;
}

#[tokio::test]
async fn rollups_outlive_the_raw_rows_retention_prunes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("cutover.db").display());
    write_through_the_writer(&url, KeepMatches::All, &workload()).await;
    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    let (exchanges, _) = store.prune(T0 + 60 * MINUTE).await.unwrap();
    assert_eq!(exchanges, 12_000);
    let report = report_of(&store).await;
    let requests: u64 = report.routes.iter().map(|route| route.requests).sum();
    assert_eq!(requests, 12_000, "the counts stay after the rows went");
    assert!(report.routes.iter().all(|route| route.primary.p95_ms.is_some()));
    // The rollups go at their own retention, by whole minutes.
    assert!(store.prune_rollups(T0 + 5 * MINUTE).await.unwrap() > 0);
    let requests: u64 = report_of(&store).await.routes.iter().map(|route| route.requests).sum();
    assert_eq!(requests, 12_000 / 2, "the first five of ten minutes went");
    store.close().await;
}

/// The rows of `rollup_latency`, and the exchanges they count.
async fn latency_rows(url: &str) -> (i64, i64) {
    use sqlx::Row;
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap();
    let row = sqlx::query("SELECT COUNT(*), CAST(SUM(n) AS BIGINT) FROM rollup_latency")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    (row.get(0), row.get(1))
}

/// Latency buckets older than the cutoff fold into hours: fewer rows, the
/// same counts, the same percentiles over a window holding the hour.
///
/// The workload is the last whole hour but one, so the writer's own fold of
/// buckets older than two hours, which runs as it starts, never reaches it
/// first.
async fn folding_latency_into_hours_keeps_every_count(url: &str) {
    const HOUR: i64 = 60 * MINUTE;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t0 = now_ms / HOUR * HOUR - HOUR;
    write_through_the_writer(url, KeepMatches::All, &workload_from(t0)).await;
    let store = Store::open(url, &StoreOptions::default()).await.unwrap();
    let before = report_from(&store, t0).await;
    let (rows_before, n_before) = latency_rows(url).await;
    assert!(store.compact_latency(t0 + HOUR).await.unwrap() > 0);
    let (rows_after, n_after) = latency_rows(url).await;
    assert_eq!(n_after, n_before, "every count kept");
    assert!(
        rows_after * 5 < rows_before,
        "{rows_before} minute rows, {rows_after} hour rows"
    );
    let after = report_from(&store, t0).await;
    assert_eq!(after.render(Format::Json), before.render(Format::Json));
    assert_eq!(
        store.compact_latency(t0 + HOUR).await.unwrap(),
        0,
        "nothing left to fold"
    );
    store.close().await;
}

#[tokio::test]
async fn sqlite_folds_latency_into_hours_keeping_every_count() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("cutover.db").display());
    folding_latency_into_hours_keeps_every_count(&url).await;
}

#[tokio::test]
async fn postgres_folds_latency_into_hours_keeping_every_count() {
    if std::env::var("CUTOVER_TEST_POSTGRES_URL").is_err() {
        eprintln!("note: CUTOVER_TEST_POSTGRES_URL is not set; skipping the PostgreSQL rollup test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = shared_store(dir.path()).await;
    folding_latency_into_hours_keeps_every_count(&url).await;
    drop_shared_store(&url).await;
}
