//! The readiness report from fixtures recorded through the store API into a
//! real SQLite file: one verdict per gate edge case, snapshots of the
//! Markdown and JSON, and the HTML rendered by a real headless Chromium.

mod common;

use cutover::ledger::LedgerState;
use cutover::report::{Format, Readiness, Report, Span, Status, Verdict};
use cutover::store::{ExchangeRecord, GroupRef, LedgerRecord, SampleRecord, Store, StoreOptions};

/// 2026-11-20T00:00:00Z: fixtures are placed relative to it, so snapshots are stable.
const T0: i64 = 1_795_132_800_000;
const HOUR: i64 = 3_600_000;

async fn fresh_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("report.db").display());
    (Store::open(&url, &StoreOptions::default()).await.unwrap(), dir)
}

/// One exchange of a route at `at_ms` with an outcome (reason for skipped).
fn exchange(route: &str, at_ms: i64, outcome: &str, primary_ms: f64, shadow_ms: f64) -> ExchangeRecord {
    let (outcome, reason) = match outcome.split_once(':') {
        Some((outcome, reason)) => (outcome, Some(reason.to_string())),
        None => (outcome, None),
    };
    let mirrored = outcome != "skipped" || reason.as_deref() != Some("mirror_off");
    ExchangeRecord {
        at_ms,
        request_id: format!("{route}-{at_ms}"),
        route: route.into(),
        method: "GET".into(),
        path: format!("/{route}"),
        source: "traffic".into(),
        primary_status: Some(200),
        shadow_status: mirrored.then_some(if outcome == "shadow_error" { 503 } else { 200 }),
        primary_ms: Some(primary_ms),
        shadow_ms: mirrored.then_some(shadow_ms),
        outcome: outcome.into(),
        reason,
        primary_cache: Some(if at_ms % 2 == 0 { "hit" } else { "miss" }.into()),
        shadow_cache: None,
        groups: Vec::new(),
        samples: Vec::new(),
        learned_ids: Vec::new(),
        ledger: None,
        served: "primary".into(),
    }
}

/// `count` exchanges spread evenly over `[from, from + span)`.
fn spread(route: &str, count: i64, from: i64, span: i64, outcome: &str) -> Vec<ExchangeRecord> {
    (0..count)
        .map(|i| {
            let at = from + span * i / count.max(1);
            let mut record = exchange(
                route,
                at,
                outcome,
                1200.0 + (i % 50) as f64 * 10.0,
                80.0 + (i % 20) as f64,
            );
            record.primary_cache = Some(if i % 2 == 0 { "HIT" } else { "MISS" }.into());
            record
        })
        .collect()
}

fn high_group() -> GroupRef {
    GroupRef {
        key: "0123456789abcdef".into(),
        route: "all-tasks".into(),
        method: "GET".into(),
        location: "body".into(),
        pattern: "/tasks/*/status".into(),
        kind: "value_changed".into(),
        severity: "high".into(),
        summary: "value_changed at /tasks/*/status".into(),
    }
}

/// The W3C trace id of the diverged sample's request.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn diverged_with_group(at_ms: i64) -> ExchangeRecord {
    let mut record = exchange("all-tasks", at_ms, "diverged", 1500.0, 90.0);
    record.groups = vec![high_group()];
    record.samples = vec![SampleRecord {
        group_key: high_group().key,
        differences: serde_json::json!([{
            "location": "body", "path": "/tasks/0/status", "pattern": "/tasks/*/status",
            "kind": "value_changed", "primary": "\"done\"", "shadow": "\"Done\"", "item": "id=t1",
            "severity": "high", "group_key": high_group().key,
        }])
        .to_string(),
        unified_diff: Some(
            "--- primary\n+++ shadow\n@@ -1,3 +1,3 @@\n {\n-  \"status\": \"done\"\n+  \"status\": \"Done\"\n }".into(),
        ),
        request: "{}".into(),
        primary_excerpt: None,
        shadow_excerpt: None,
        trace_id: Some(TRACE_ID.into()),
    }];
    record
}

async fn report(store: &Store, readiness: &Readiness) -> Report {
    let span = Span {
        from_ms: T0,
        to_ms: T0 + 30 * HOUR,
    };
    Report::build(store, span, readiness, T0 + 30 * HOUR).await.unwrap()
}

fn gate<'r>(report: &'r Report, name: &str, route: Option<&str>) -> &'r cutover::report::Gate {
    report
        .gates
        .iter()
        .find(|g| g.gate == name && g.route.as_deref() == route)
        .unwrap_or_else(|| panic!("no gate {name} {route:?} in {:#?}", report.gates))
}

/// A healthy day: 1000 matches on all-tasks over 25 hours, fast shadow.
async fn healthy(store: &Store) {
    store
        .record(&spread("all-tasks", 1000, T0, 25 * HOUR, "match"))
        .await
        .unwrap();
}

#[tokio::test]
async fn no_traffic_is_not_yet_and_says_so() {
    let (store, _dir) = fresh_store().await;
    let report = report(&store, &Readiness::default()).await;
    assert_eq!(report.verdict, Verdict::NotYet);
    let window = gate(&report, "observation_window", None);
    assert_eq!(window.status, Status::NotEnoughData);
    assert!(
        report.next_steps[0].starts_with("no traffic recorded"),
        "{:?}",
        report.next_steps
    );
}

#[tokio::test]
async fn a_healthy_window_is_go() {
    let (store, _dir) = fresh_store().await;
    healthy(&store).await;
    store
        .record(&spread("notifications", 5, T0, HOUR, "skipped:mirror_off"))
        .await
        .unwrap();
    let report = report(&store, &Readiness::default()).await;
    assert_eq!(report.verdict, Verdict::Go, "{:#?}", report.gates);
    assert_eq!(
        report.not_covered,
        ["notifications"],
        "mirror-off routes are listed, not failed"
    );
    let route = &report.routes[0];
    assert_eq!((route.requests, route.compared, route.matched), (1000, 1000, 1000));
    assert_eq!(route.primary_cache_hit_share, Some(0.5));
    assert!(route.speedup.unwrap() > 10.0, "{route:?}");
}

#[tokio::test]
async fn one_route_without_enough_data_holds_the_verdict() {
    let (store, _dir) = fresh_store().await;
    healthy(&store).await;
    store
        .record(&spread("create-task", 10, T0, HOUR, "match"))
        .await
        .unwrap();
    let report = report(&store, &Readiness::default()).await;
    assert_eq!(report.verdict, Verdict::NotYet);
    let thin = gate(&report, "match_rate", Some("create-task"));
    assert_eq!(thin.status, Status::NotEnoughData);
    assert!(report
        .next_steps
        .contains(&"route create-task needs 20 more compared requests".to_string()));
}

#[tokio::test]
async fn all_matched_but_too_few_is_not_yet_with_how_many_more() {
    let (store, _dir) = fresh_store().await;
    store
        .record(&spread("all-tasks", 30, T0, 25 * HOUR, "match"))
        .await
        .unwrap();
    let report = report(&store, &Readiness::default()).await;
    assert_eq!(report.verdict, Verdict::NotYet);
    let rate = gate(&report, "match_rate", Some("all-tasks"));
    assert_eq!(rate.status, Status::NotEnoughData);
    assert_eq!(rate.measured, "30/30 = 100.0% (95% CI 88.6%–100.0%)");
    assert!(
        rate.next_step.as_deref().unwrap().contains("needs 351 more matches"),
        "{rate:?}"
    );
}

#[tokio::test]
async fn an_open_high_severity_group_is_no_go_until_it_is_accepted() {
    let (store, _dir) = fresh_store().await;
    healthy(&store).await;
    store.record(&[diverged_with_group(T0 + 2 * HOUR)]).await.unwrap();
    let before = report(&store, &Readiness::default()).await;
    assert_eq!(before.verdict, Verdict::NoGo);
    assert_eq!(gate(&before, "high_severity_groups", None).status, Status::Fail);
    assert!(before.groups[0]
        .example
        .as_deref()
        .unwrap()
        .contains("+  \"status\": \"Done\""));
    assert_eq!(before.groups[0].trace_ids, vec![TRACE_ID.to_string()]);
    let html = before.render(Format::Html);
    assert!(
        html.contains(&format!("In the backends' traces: <code>{TRACE_ID}</code>")),
        "the group shows its trace"
    );
    store
        .triage("0123456789abcdef", "accepted", Some("case only"), T0)
        .await
        .unwrap();
    let after = report(&store, &Readiness::default()).await;
    assert_eq!(gate(&after, "high_severity_groups", None).status, Status::Pass);
    assert_eq!(
        after.verdict,
        Verdict::Go,
        "1000 of 1001 still clears 99%: {:#?}",
        after.gates
    );
    store.triage("0123456789abcdef", "bug", None, T0).await.unwrap();
    assert_eq!(
        report(&store, &Readiness::default()).await.verdict,
        Verdict::NoGo,
        "bug groups count"
    );
}

#[tokio::test]
async fn open_drift_unmapped_ids_slow_or_failing_shadows_are_each_no_go() {
    // Drift.
    let (store, _dir) = fresh_store().await;
    healthy(&store).await;
    let mut write = exchange("update-task", T0 + HOUR, "match", 100.0, 10.0);
    write.ledger = Some(LedgerRecord {
        entity: Some("tasks:1".into()),
        primary_status: Some(200),
        shadow_status: None,
        primary_ms: Some(100.0),
        shadow_ms: None,
        state: LedgerState::Drift,
        attempts: 3,
        replay: None,
        seq: 1,
        intent: None,
    });
    store.record(&[write]).await.unwrap();
    let drifted = report(&store, &Readiness::default()).await;
    assert_eq!(gate(&drifted, "write_drift", None).status, Status::Fail);
    assert_eq!(drifted.verdict, Verdict::NoGo);
    assert_eq!(drifted.writes.open_drift, 1);

    // Unmapped IDs late in the window; early ones do not count.
    let (store, _dir) = fresh_store().await;
    healthy(&store).await;
    store
        .record(&[exchange("all-tasks", T0 + HOUR, "skipped:unmapped_id", 1.0, 1.0)])
        .await
        .unwrap();
    assert_eq!(
        gate(&report(&store, &Readiness::default()).await, "unmapped_ids", None).status,
        Status::Pass
    );
    store
        .record(&[exchange(
            "all-tasks",
            T0 + 29 * HOUR + 1,
            "skipped:unmapped_id",
            1.0,
            1.0,
        )])
        .await
        .unwrap();
    assert_eq!(
        gate(&report(&store, &Readiness::default()).await, "unmapped_ids", None).status,
        Status::Fail
    );

    // A slow shadow.
    let (store, _dir) = fresh_store().await;
    healthy(&store).await;
    let strict = Readiness {
        shadow_p95_max: std::time::Duration::from_millis(50),
        ..Readiness::default()
    };
    let slow = report(&store, &strict).await;
    assert_eq!(gate(&slow, "shadow_p95", Some("all-tasks")).status, Status::Fail);
    assert_eq!(slow.verdict, Verdict::NoGo);

    // A failing shadow, and a route where nothing could be compared.
    let (store, _dir) = fresh_store().await;
    healthy(&store).await;
    store
        .record(&spread("all-tasks", 20, T0, HOUR, "shadow_error"))
        .await
        .unwrap();
    store
        .record(&spread("get-task", 5, T0, HOUR, "shadow_error"))
        .await
        .unwrap();
    let failing = report(&store, &Readiness::default()).await;
    assert_eq!(gate(&failing, "shadow_error_rate", None).status, Status::Fail);
    assert_eq!(gate(&failing, "coverage", Some("get-task")).status, Status::Fail);
}

/// Triage moves the verdict: an exchange whose every difference is in an
/// accepted group counts as a match (shown apart); bug and fixed keep
/// counting; one open group among accepted ones keeps the exchange diverged.
#[tokio::test]
async fn accepted_differences_count_as_matches_and_the_triage_command_sets_them() {
    let (store, dir) = fresh_store().await;
    healthy(&store).await;
    let medium = GroupRef {
        key: "medium0000000001".into(),
        severity: "medium".into(),
        pattern: "/tasks/*/context".into(),
        kind: "missing_in_shadow".into(),
        ..high_group()
    };
    let other = GroupRef {
        key: "medium0000000002".into(),
        pattern: "/tasks/*/tags".into(),
        ..medium.clone()
    };
    let diverged = |at: i64, groups: Vec<GroupRef>| {
        let mut record = exchange("all-tasks", at, "diverged", 1500.0, 90.0);
        record.groups = groups;
        record
    };
    let mut records: Vec<ExchangeRecord> = (0..40).map(|i| diverged(T0 + i * 1000, vec![medium.clone()])).collect();
    records.push(diverged(T0 + 50_000, vec![medium.clone(), other.clone()]));
    store.record(&records).await.unwrap();
    let url = format!("sqlite://{}", dir.path().join("report.db").display());
    let triage = |status: &'static str, key: &'static str| {
        let url = url.clone();
        async move {
            let run = common::run_cutover(&[
                "triage",
                key,
                status,
                "--note",
                "Notion has no context",
                "--store",
                &url,
            ])
            .await;
            assert!(run.status.success(), "{run:?}");
        }
    };
    let route_of = |report: &Report| report.routes.iter().find(|r| r.route == "all-tasks").unwrap().clone();

    let open = report(&store, &Readiness::default()).await;
    assert_eq!(gate(&open, "match_rate", Some("all-tasks")).status, Status::Fail);
    assert_eq!((route_of(&open).accepted, route_of(&open).diverged), (0, 41));

    triage("accepted", "medium0000000001").await;
    let accepted = report(&store, &Readiness::default()).await;
    let route = route_of(&accepted);
    assert_eq!((route.matched, route.accepted, route.diverged), (1000, 40, 1));
    assert!(
        gate(&accepted, "match_rate", Some("all-tasks"))
            .measured
            .starts_with("1040/1041"),
        "{:?}",
        gate(&accepted, "match_rate", Some("all-tasks"))
    );
    assert!(accepted.render(Format::Markdown).contains("| 1000 + 40 accepted |"));

    triage("accepted", "medium0000000002").await;
    assert_eq!(route_of(&report(&store, &Readiness::default()).await).accepted, 41);
    for still_counts in ["bug", "fixed", "open"] {
        triage(still_counts, "medium0000000001").await;
        let route = route_of(&report(&store, &Readiness::default()).await);
        assert_eq!((route.accepted, route.diverged), (0, 41), "{still_counts}");
    }
    let unknown = common::run_cutover(&["triage", "nosuchgroup", "accepted", "--store", &url]).await;
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no divergence group nosuchgroup"));
    let bad = common::run_cutover(&["triage", "medium0000000001", "acepted", "--store", &url]).await;
    assert_eq!(bad.status.code(), Some(cutover::cli::EXIT_USAGE.into()));
}

/// Each group shows its differences field by field (a status difference
/// its two statuses) and its share of the route; however many groups and
/// however large their samples, report.md fits a pull-request comment.
#[tokio::test]
async fn groups_show_their_differences_and_markdown_stays_under_the_comment_limit() {
    let (store, _dir) = fresh_store().await;
    healthy(&store).await;
    let status = GroupRef {
        key: "5747005c4a46ed00".into(),
        route: "complete-task".into(),
        method: "PATCH".into(),
        location: "status".into(),
        pattern: String::new(),
        kind: "status_changed".into(),
        severity: "high".into(),
        summary: "status_changed".into(),
    };
    let huge_diff: String = std::iter::once("--- primary\n+++ shadow\n".to_string())
        .chain((0..5000).map(|n| format!("-  \"title\": \"task {n}\",\n+  \"title\": \"Task {n}\",\n")))
        .collect();
    let mut records = Vec::new();
    for n in 0..60 {
        let group = GroupRef {
            key: format!("{n:016x}"),
            pattern: format!("/tasks/*/field{n}"),
            kind: "value_changed".into(),
            severity: "medium".into(),
            ..high_group()
        };
        let mut record = exchange("all-tasks", T0 + n * 1000, "diverged", 1500.0, 90.0);
        record.groups = vec![group.clone()];
        record.samples = vec![SampleRecord {
            group_key: group.key.clone(),
            differences: serde_json::json!([{"location": "body", "path": format!("/tasks/0/field{n}"),
                "pattern": group.pattern, "kind": "value_changed", "primary": "1", "shadow": "2",
                "severity": "medium", "group_key": group.key}])
            .to_string(),
            unified_diff: Some(huge_diff.clone()),
            request: "{}".into(),
            primary_excerpt: None,
            shadow_excerpt: None,
            trace_id: None,
        }];
        records.push(record);
    }
    let mut refused = exchange("complete-task", T0 + 99_000, "diverged", 10.0, 10.0);
    refused.groups = vec![status.clone()];
    refused.samples = vec![SampleRecord {
        group_key: status.key.clone(),
        differences: serde_json::json!([{"location": "status", "path": "", "pattern": "", "kind": "status_changed",
            "primary": "200", "shadow": "409", "severity": "high", "group_key": status.key}])
        .to_string(),
        unified_diff: None,
        request: "{}".into(),
        primary_excerpt: None,
        shadow_excerpt: None,
        trace_id: None,
    }];
    records.push(refused);
    store.record(&records).await.unwrap();
    let report = report(&store, &Readiness::default()).await;

    let refusal = report.groups.iter().find(|g| g.key == status.key).unwrap();
    assert_eq!(refusal.differences[0].primary.as_deref(), Some("200"));
    assert_eq!(refusal.differences[0].shadow.as_deref(), Some("409"));
    assert_eq!(refusal.share, Some(1.0), "one of one compared complete-task requests");
    let markdown = report.render(Format::Markdown);
    assert!(markdown.contains("- status: `200` → `409`"), "{}", &markdown[..3000]);
    let html = report.render(Format::Html);
    assert!(html.contains("<td class=\"grow\">status</td><td><code>200</code></td><td><code>409</code></td>"));
    assert!(html.contains(&format!("id=\"group-{}\"", status.key)));
    assert!(
        html.contains(&format!("<a href=\"#group-{0}\">{0}</a>", status.key)),
        "next steps link to it"
    );

    assert!(
        markdown.len() < cutover::report::MARKDOWN_LIMIT,
        "{} characters",
        markdown.len()
    );
    assert!(
        markdown.contains("51 more groups: `cutover report --format html`"),
        "it points to the rest"
    );
    let shown_example = report.groups.iter().find_map(|g| g.example.as_deref()).unwrap();
    assert!(shown_example.lines().count() <= 45, "{shown_example}");
    assert!(html.len() < 400_000, "{} bytes", html.len());
}

/// Sub-millisecond jitter never fails the latency gate; a shadow slower
/// than the primary by more than `shadow_p95_slack` does.
#[tokio::test]
async fn the_latency_gate_has_an_absolute_slack() {
    let latencies = |primary_ms: f64, shadow_ms: f64| {
        (0..100)
            .map(|i| exchange("all-tasks", T0 + i * 60_000, "match", primary_ms, shadow_ms))
            .collect::<Vec<_>>()
    };
    let (store, _dir) = fresh_store().await;
    store.record(&latencies(0.3, 0.6)).await.unwrap();
    let jitter = report(&store, &Readiness::default()).await;
    let gate_of = |report: &Report| gate(report, "shadow_p95", Some("all-tasks")).clone();
    assert_eq!(gate_of(&jitter).status, Status::Pass, "{:?}", gate_of(&jitter));
    assert_eq!(gate_of(&jitter).threshold, "≤ 200.0 ms and ≤ the primary's + 5.0 ms");
    let no_slack = Readiness {
        shadow_p95_slack: std::time::Duration::ZERO,
        ..Readiness::default()
    };
    assert_eq!(gate_of(&report(&store, &no_slack).await).status, Status::Fail);

    let (store, _dir) = fresh_store().await;
    store.record(&latencies(1.0, 12.0)).await.unwrap();
    let slower = gate_of(&report(&store, &Readiness::default()).await);
    assert_eq!(slower.status, Status::Fail);
    assert!(
        slower
            .next_step
            .as_deref()
            .unwrap()
            .contains("is above the primary's (1.0 ms) + 5.0 ms"),
        "{slower:?}"
    );
}

/// The fixture the snapshots are taken of: two routes, a group, drift, ID pairs.
async fn snapshot_fixture(store: &Store) {
    healthy(store).await;
    store
        .record(&spread("create-task", 12, T0 + HOUR, 2 * HOUR, "match"))
        .await
        .unwrap();
    store.record(&[diverged_with_group(T0 + 3 * HOUR)]).await.unwrap();
    store
        .insert_id_pairs(
            &[cutover::idmap::IdPair {
                kind: "tasks".into(),
                primary_id: "p1".into(),
                shadow_id: "s1".into(),
            }],
            "import",
            T0,
        )
        .await
        .unwrap();
    store
        .write(&[cutover::store::Record::Noise(vec![cutover::store::NoiseRecord {
            route: "all-tasks".into(),
            pattern: "/generatedAt".into(),
            side: "primary".into(),
            observations: 7,
            first_seen_ms: T0,
            last_seen_ms: T0 + HOUR,
        }])])
        .await
        .unwrap();
    store
        .add_event(
            "start",
            &serde_json::json!({"version": "test", "config": "5eed5eed5eed5eed"}),
            T0,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn markdown_and_json_snapshots() {
    let (store, _dir) = fresh_store().await;
    snapshot_fixture(&store).await;
    let report = report(&store, &Readiness::default()).await;
    insta::assert_snapshot!("report_markdown", report.render(Format::Markdown));
    insta::assert_snapshot!("report_json", report.render(Format::Json));
}

#[tokio::test]
async fn the_html_report_renders_in_a_real_browser() {
    let Some(chromium) = common::chromium() else {
        return;
    };
    let (store, dir) = fresh_store().await;
    snapshot_fixture(&store).await;
    let report = report(&store, &Readiness::default()).await;
    let page = dir.path().join("report.html");
    std::fs::write(&page, report.render(Format::Html)).unwrap();
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    let _ = std::fs::remove_file(&screenshot);
    let output = tokio::task::spawn_blocking({
        let (page, screenshot) = (page.clone(), screenshot.clone());
        move || {
            std::process::Command::new(chromium)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                    "--enable-logging=stderr",
                    "--v=0",
                    "--window-size=1280,2200",
                    &format!("--screenshot={}", screenshot.display()),
                    &format!("file://{}", page.display()),
                ])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "chromium failed: {log}");
    let console: Vec<&str> = log.lines().filter(|line| line.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "the page logged to the console: {console:#?}");
    println!("report screenshot (CI artifact): {}", screenshot.display());
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&screenshot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = info.color_type.samples();
    let inked = pixels[..info.buffer_size()]
        .chunks(channels)
        .filter(|pixel| pixel.iter().take(3).any(|&value| value < 200))
        .count();
    let total = (info.width * info.height) as usize;
    assert!(
        inked * 100 > total,
        "the page looks blank: {inked} of {total} pixels have ink"
    );
    let colored = pixels[..info.buffer_size()]
        .chunks(channels)
        .filter(|pixel| pixel[0].abs_diff(pixel[1]) > 60 || pixel[1].abs_diff(pixel[2]) > 60)
        .count();
    assert!(
        colored > 500,
        "the verdict badge and the charts are in color: {colored} colored pixels"
    );
}

/// docs/report-schema.json names every field the JSON has, and only those.
#[tokio::test]
async fn the_documented_schema_matches_the_json() {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../docs/report-schema.json")).expect("the schema is valid JSON");
    let (store, _dir) = fresh_store().await;
    snapshot_fixture(&store).await;
    let json: serde_json::Value =
        serde_json::from_str(&report(&store, &Readiness::default()).await.render(Format::Json)).unwrap();
    let keys = |value: &serde_json::Value| -> Vec<String> {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    let required = |schema: &serde_json::Value| -> Vec<String> {
        let mut keys: Vec<String> = serde_json::from_value(schema["required"].clone()).unwrap();
        keys.sort();
        keys
    };
    assert_eq!(keys(&json), required(&schema));
    assert_eq!(json["schema_version"], schema["properties"]["schema_version"]["const"]);
    let properties = &schema["properties"];
    for (field, sample) in [
        ("window", &json["window"]),
        ("writes", &json["writes"]),
        ("idmap", &json["idmap"]),
        ("routes", &json["routes"][0]),
        ("gates", &json["gates"][0]),
        ("groups", &json["groups"][0]),
        ("timeline", &json["timeline"][0]),
    ] {
        let object = if properties[field]["type"] == "array" {
            &properties[field]["items"]
        } else {
            &properties[field]
        };
        assert_eq!(keys(sample), required(object), "{field}");
    }
    let gate_names: Vec<String> =
        serde_json::from_value(properties["gates"]["items"]["properties"]["gate"]["enum"].clone()).unwrap();
    for gate in json["gates"].as_array().unwrap() {
        assert!(
            gate_names.contains(&gate["gate"].as_str().unwrap().to_string()),
            "{gate}"
        );
    }
}

/// `cutover report --check` gates a pipeline: 0 GO, 1 NO-GO, 2 NOT YET.
#[tokio::test]
async fn the_command_writes_the_report_and_its_exit_code_is_the_verdict() {
    let (store, dir) = fresh_store().await;
    let url = format!("sqlite://{}", dir.path().join("report.db").display());
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
                .args(args)
                .output()
                .unwrap()
        })
    };
    let window = |out: &std::path::Path, format: &str| -> Vec<String> {
        [
            "report",
            "--from",
            "2026-11-20T00:00:00Z",
            "--to",
            "2026-11-21T06:00:00Z",
            "--format",
            format,
            "--check",
            "--store",
            &url,
            "--out",
            out.to_str().unwrap(),
        ]
        .map(str::to_string)
        .to_vec()
    };
    let md = dir.path().join("report.md");
    let empty = run(window(&md, "md")).await.unwrap();
    assert_eq!(empty.status.code(), Some(2), "no traffic is NOT YET");
    healthy(&store).await;
    let go = run(window(&md, "md")).await.unwrap();
    assert_eq!(go.status.code(), Some(0), "{}", String::from_utf8_lossy(&go.stderr));
    assert!(std::fs::read_to_string(&md)
        .unwrap()
        .starts_with("# Cutover readiness: **GO**"));
    store.record(&[diverged_with_group(T0 + HOUR)]).await.unwrap();
    let html = dir.path().join("report.html");
    let no_go = run(window(&html, "html")).await.unwrap();
    assert_eq!(no_go.status.code(), Some(1));
    assert!(std::fs::read_to_string(&html)
        .unwrap()
        .contains("<span class=\"verdict nogo\">NO-GO</span>"));
    let bad = run(vec![
        "report".into(),
        "--since".into(),
        "soon".into(),
        "--check".into(),
        "--store".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(cutover::cli::EXIT_USAGE.into()),
        "a usage error is not a verdict"
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--since"));
    let missing = run(vec![
        "report".into(),
        "--check".into(),
        "--store".into(),
        format!("sqlite://{}", dir.path().join("missing.db").display()),
    ])
    .await
    .unwrap();
    assert_eq!(
        missing.status.code(),
        Some(3),
        "a report that cannot be made is not a verdict"
    );
}

/// A share on the candidate and the rest on the primary are figured apart
/// (requests, match rate, errors, p95 on each side), and the whole route
/// still counts both; while only the primary serves, nothing is split.
#[tokio::test]
async fn a_share_on_the_candidate_and_the_rest_are_figured_apart() {
    let (store, _dir) = fresh_store().await;
    let served = |side: &str, count: i64, outcome: &str, primary_ms: f64, shadow_ms: f64| {
        (0..count)
            .map(|i| {
                let mut record = exchange("all-tasks", T0 + i * 1000, outcome, primary_ms, shadow_ms);
                record.served = side.into();
                record
            })
            .collect::<Vec<_>>()
    };
    store.record(&served("primary", 90, "match", 40.0, 20.0)).await.unwrap();
    let only_primary = report(&store, &Readiness::default()).await;
    assert!(only_primary.routes[0].served_by.is_empty());

    store.record(&served("shadow", 8, "match", 41.0, 9.0)).await.unwrap();
    store.record(&served("shadow", 2, "diverged", 41.0, 9.0)).await.unwrap();
    store.record(&served("", 5, "match", 1.0, 1.0)).await.unwrap();
    let report = report(&store, &Readiness::default()).await;
    let route = &report.routes[0];
    assert_eq!(
        route.requests, 105,
        "the whole route counts every part, sweeps included"
    );
    let parts: Vec<(&str, u64, u64, u64)> = route
        .served_by
        .iter()
        .map(|part| (part.served.as_str(), part.requests, part.matched, part.diverged))
        .collect();
    assert_eq!(parts, [("primary", 90, 90, 0), ("shadow", 10, 8, 2)]);
    let share = &route.served_by[1];
    assert_eq!(share.match_rate, Some(0.8));
    assert!(share.match_rate_low < 0.8);
    let p95 = |latency: &cutover::report::Latency| latency.p95_ms.unwrap();
    assert!((p95(&share.shadow) - 9.0).abs() < 0.2, "{:?}", share.shadow);
    assert!((p95(&route.served_by[0].shadow) - 20.0).abs() < 0.4);

    let markdown = report.render(Format::Markdown);
    assert!(
        markdown.contains("served by the candidate (shadow) 10 requests, 10 compared: match rate 80.0% (at least"),
        "{markdown}"
    );
    assert!(markdown.contains("served by the primary 90 requests"), "{markdown}");
    let json: serde_json::Value = serde_json::from_str(&report.render(Format::Json)).unwrap();
    assert_eq!(json["routes"][0]["served_by"][1]["served"], "shadow");
}
