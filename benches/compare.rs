//! The comparison engine's cost against the floor: parsing both bodies.
//!
//! `cargo bench --bench compare` prints, per document size, the time of a
//! full compare (decode + parse both + normalize + diff, with realistic
//! rules) and of `serde_json::from_slice` on both bodies alone; criterion
//! reports both as MB/s of input. The last case is an answer with 10,000
//! differences, past the examples the engine keeps.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use cutover::compare::rules::{CompareRules, ItemKey, Rule};
use cutover::compare::{compare_responses, Context, NoIds};
use cutover::exchange::CapturedResponse;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};

const PRIORITIES: [&str; 3] = ["low", "medium", "high"];

fn task(i: usize, title: &str) -> Value {
    json!({
        "id": format!("0f8fad5b-d9cb-469f-a165-{i:012}"),
        "title": title,
        "status": if i % 3 == 0 { "done" } else { "todo" },
        "priority": PRIORITIES[i % 3],
        "context": if i % 2 == 0 { Value::Null } else { Value::from("Work") },
        "dueDate": format!("2026-01-{:02}T09:00:00.000+11:00", 1 + i % 28),
        "createdAt": "2025-12-01T08:30:00.000Z",
        "tags": ["errand", "home"],
        "notes": "Pick up on the way back from the office; check opening hours first.",
    })
}

/// A task list of about `bytes`, as both sides would send it: the shadow
/// lists the same tasks in another order, with its own `source`, one title
/// changed and timestamps in UTC.
fn pair(bytes: usize) -> (Bytes, Bytes) {
    let per_task = task(0, "Task").to_string().len() + 1;
    let count = (bytes / per_task).max(1);
    let primary: Vec<Value> = (0..count).map(|i| task(i, &format!("Task {i}"))).collect();
    let mut shadow: Vec<Value> = primary.clone();
    shadow.reverse();
    if let Some(first) = shadow.first_mut() {
        first["title"] = json!("Renamed");
    }
    for item in &mut shadow {
        let due = item["dueDate"]
            .as_str()
            .unwrap()
            .replace("T09:00:00.000+11:00", "T09:00:00+11:00");
        item["dueDate"] = Value::from(due);
    }
    let doc = |tasks: Vec<Value>, source: &str| json!({"success": true, "count": tasks.len(), "source": source, "tasks": tasks});
    (
        Bytes::from(doc(primary, "notion").to_string()),
        Bytes::from(doc(shadow, "postgres").to_string()),
    )
}

fn small_object() -> (Bytes, Bytes) {
    let primary = json!({"success": true, "task": task(1, "Buy milk"), "source": "notion"});
    let mut shadow = primary.clone();
    shadow["source"] = json!("postgres");
    shadow["task"]["priority"] = json!("urgent");
    (Bytes::from(primary.to_string()), Bytes::from(shadow.to_string()))
}

/// 10,000 differences in one answer: 3,334 tasks, each with its title,
/// priority and status changed, the last one missing and two swapped. Past
/// the kept examples the engine still looks for groups it has not seen.
fn ten_thousand_differences() -> (Bytes, Bytes) {
    let primary: Vec<Value> = (0..3_334).map(|i| task(i, "Task")).collect();
    let mut shadow: Vec<Value> = primary[..3_333]
        .iter()
        .map(|item| {
            let mut item = item.clone();
            item["title"] = json!("task");
            item["priority"] = json!("urgent");
            item["status"] = json!(7);
            item
        })
        .collect();
    shadow.swap(0, 1);
    let body = |tasks: Vec<Value>| Bytes::from(json!({ "tasks": tasks }).to_string());
    (body(primary), body(shadow))
}

fn response(body: &Bytes) -> CapturedResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    CapturedResponse {
        status: StatusCode::OK,
        headers,
        body: body.clone(),
        elapsed: Duration::ZERO,
    }
}

fn rules() -> CompareRules {
    let mut rules = CompareRules::new();
    rules.add("ignore", "/source", Rule::Ignore).unwrap();
    rules
        .add(
            "unordered",
            "/tasks",
            Rule::Unordered(ItemKey::Field(vec!["id".into()])),
        )
        .unwrap();
    rules
        .add("time", "/tasks/*/dueDate", Rule::TimeTolerance(Duration::from_secs(1)))
        .unwrap();
    rules
}

fn bench(c: &mut Criterion) {
    let rules = rules();
    let cases = [
        ("1KB object", small_object()),
        ("64KB, 200 tasks", pair(64 * 1024)),
        ("1MB task list", pair(1 << 20)),
        ("10,000 differences", ten_thousand_differences()),
    ];
    for (name, (primary, shadow)) in cases {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes((primary.len() + shadow.len()) as u64));
        group.sample_size(if primary.len() > 500_000 { 20 } else { 60 });
        group.bench_function("parse both (serde_json)", |b| {
            b.iter(|| {
                let p: Value = serde_json::from_slice(black_box(&primary)).unwrap();
                let s: Value = serde_json::from_slice(black_box(&shadow)).unwrap();
                (p, s)
            })
        });
        let (p, s) = (response(&primary), response(&shadow));
        group.bench_function("full compare", |b| {
            b.iter(|| {
                let ctx = Context {
                    route: "all-tasks",
                    method: &Method::GET,
                    rules: &rules,
                    ids: &NoIds,
                    decode_limit: 16 << 20,
                    want_patch: false,
                    bodies_equal: false,
                };
                compare_responses(&ctx, black_box(&p), black_box(&s))
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
