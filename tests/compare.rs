//! The comparison engine, table-driven: every rule and kind, and the cases
//! that trip up naive diffs.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use cutover::compare::json::{MAX_DIFFERENCES, MAX_GROUPS};
use cutover::compare::rules::{CompareRules, ItemKey, Rule, Tolerance};
use cutover::compare::{compare_responses, Comparison, Context, IdLookup, Kind, Location, NoIds, Severity};
use cutover::exchange::CapturedResponse;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};

fn response(status: u16, headers: &[(&'static str, &'static str)], body: impl Into<Bytes>) -> CapturedResponse {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(*name, value.parse().unwrap());
    }
    CapturedResponse {
        status: StatusCode::from_u16(status).unwrap(),
        headers: map,
        body: body.into(),
        elapsed: Duration::from_millis(1),
    }
}

fn json_response(value: &Value) -> CapturedResponse {
    response(200, &[("content-type", "application/json")], value.to_string())
}

/// The full comparison, with a patch (which always parses both bodies).
fn compare_with(
    rules: &CompareRules,
    ids: &dyn IdLookup,
    primary: &CapturedResponse,
    shadow: &CapturedResponse,
) -> Comparison {
    compare_for(rules, ids, true, primary, shadow)
}

/// The comparison with or without a patch (the proxy asks for none).
fn compare_for(
    rules: &CompareRules,
    ids: &dyn IdLookup,
    want_patch: bool,
    primary: &CapturedResponse,
    shadow: &CapturedResponse,
) -> Comparison {
    compare_as(rules, ids, (want_patch, false), primary, shadow)
}

/// The comparison with the caller's knowledge: (patch wanted, bodies already found equal).
fn compare_as(
    rules: &CompareRules,
    ids: &dyn IdLookup,
    (want_patch, bodies_equal): (bool, bool),
    primary: &CapturedResponse,
    shadow: &CapturedResponse,
) -> Comparison {
    let ctx = Context {
        route: "tasks",
        method: &Method::GET,
        rules,
        ids,
        decode_limit: 1 << 20,
        want_patch,
        bodies_equal,
    };
    compare_responses(&ctx, primary, shadow)
}

fn compare_json(rules: &CompareRules, primary: Value, shadow: Value) -> Comparison {
    compare_with(rules, &NoIds, &json_response(&primary), &json_response(&shadow))
}

/// (path, kind, severity) of every difference.
fn found(comparison: &Comparison) -> Vec<(String, Kind, Severity)> {
    comparison
        .differences
        .iter()
        .map(|d| (d.path.clone(), d.kind, d.severity))
        .collect()
}

fn rules(build: impl FnOnce(&mut CompareRules)) -> CompareRules {
    let mut rules = CompareRules::new();
    build(&mut rules);
    rules
}

/// (case name, primary, shadow, expected (path, kind, severity) list)
type Case = (&'static str, Value, Value, Vec<(&'static str, Kind, Severity)>);

#[test]
fn json_differences_have_a_path_a_kind_and_a_severity() {
    let none = CompareRules::new();
    let cases: Vec<Case> = vec![
        ("equal", json!({"a": 1}), json!({"a": 1}), vec![]),
        (
            "value",
            json!({"a": "x"}),
            json!({"a": "y"}),
            vec![("/a", Kind::ValueChanged, Severity::Medium)],
        ),
        (
            "type",
            json!({"a": 1}),
            json!({"a": "1"}),
            vec![("/a", Kind::TypeChanged, Severity::High)],
        ),
        (
            "missing",
            json!({"a": 1, "b": 2}),
            json!({"a": 1}),
            vec![("/b", Kind::MissingInShadow, Severity::High)],
        ),
        (
            "extra",
            json!({"a": 1}),
            json!({"a": 1, "c": 3}),
            vec![("/c", Kind::ExtraInShadow, Severity::Medium)],
        ),
        (
            "renamed key is one high difference, never normalized away",
            json!({"dueDate": "2026-01-20"}),
            json!({"due_date": "2026-01-20"}),
            vec![("/dueDate", Kind::Renamed, Severity::High)],
        ),
        (
            "renamed key with another value is missing + extra",
            json!({"dueDate": "2026-01-20"}),
            json!({"due_date": "2026-01-21"}),
            vec![
                ("/dueDate", Kind::MissingInShadow, Severity::High),
                ("/due_date", Kind::ExtraInShadow, Severity::Medium),
            ],
        ),
        (
            "enum spelling is a change",
            json!({"status": "In Progress"}),
            json!({"status": "in_progress"}),
            vec![("/status", Kind::ValueChanged, Severity::Medium)],
        ),
        (
            "null vs absent",
            json!({"a": null}),
            json!({}),
            vec![("/a", Kind::MissingInShadow, Severity::High)],
        ),
        (
            "null vs value",
            json!({"a": null}),
            json!({"a": 5}),
            vec![("/a", Kind::ValueChanged, Severity::Medium)],
        ),
        (
            "1 vs 1.0",
            json!({"n": 1}),
            serde_json::from_str(r#"{"n": 1.0}"#).unwrap(),
            vec![("/n", Kind::NumberFormat, Severity::Low)],
        ),
        (
            "huge integers that differ in the last digit",
            serde_json::from_str(r#"{"n": 123456789012345678901234567890}"#).unwrap(),
            serde_json::from_str(r#"{"n": 123456789012345678901234567891}"#).unwrap(),
            vec![("/n", Kind::ValueChanged, Severity::Medium)],
        ),
        (
            "unicode normalization is left alone",
            json!({"name": "caf\u{e9}"}),
            json!({"name": "cafe\u{301}"}),
            vec![("/name", Kind::ValueChanged, Severity::Medium)],
        ),
        (
            "nested",
            json!({"a": {"b": {"c": [1, 2]}}}),
            json!({"a": {"b": {"c": [1, 3]}}}),
            vec![("/a/b/c/1", Kind::ValueChanged, Severity::Medium)],
        ),
        (
            "a record dropped mid-list is one missing item",
            json!([{"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}]),
            json!([{"id": 1}, {"id": 3}, {"id": 4}]),
            vec![("/1", Kind::MissingInShadow, Severity::High)],
        ),
        (
            "an extra record is one extra item",
            json!(["a", "b"]),
            json!(["a", "x", "b"]),
            vec![("/1", Kind::ExtraInShadow, Severity::Medium)],
        ),
        (
            "keys with / and ~ are escaped",
            json!({"a/b": {"c~d": 1}}),
            json!({"a/b": {"c~d": 2}}),
            vec![("/a~1b/c~0d", Kind::ValueChanged, Severity::Medium)],
        ),
        (
            "root type change",
            json!([1]),
            json!({"a": 1}),
            vec![("", Kind::TypeChanged, Severity::High)],
        ),
    ];
    for (name, primary, shadow, expected) in cases {
        let expected: Vec<(String, Kind, Severity)> =
            expected.into_iter().map(|(p, k, s)| (p.to_string(), k, s)).collect();
        assert_eq!(found(&compare_json(&none, primary, shadow)), expected, "{name}");
    }
}

#[test]
fn unordered_arrays_match_items_by_key() {
    let by_id = rules(|r| {
        r.add("u", "/tasks", Rule::Unordered(ItemKey::Field(vec!["id".into()])))
            .unwrap()
    });
    let reordered = compare_json(
        &by_id,
        json!({"tasks": [{"id": "a", "t": 1}, {"id": "b", "t": 2}]}),
        json!({"tasks": [{"id": "b", "t": 2}, {"id": "a", "t": 1}]}),
    );
    assert_eq!(
        found(&reordered),
        vec![("/tasks".into(), Kind::OrderOnly, Severity::Low)]
    );
    assert_eq!(reordered.differences[0].primary.as_deref(), Some("\"a, b\""));
    assert_eq!(reordered.differences[0].shadow.as_deref(), Some("\"b, a\""));

    let changed = compare_json(
        &by_id,
        json!({"tasks": [{"id": "a", "t": 1}, {"id": "b", "t": 2}, {"id": "c"}]}),
        json!({"tasks": [{"id": "b", "t": 20}, {"id": "a", "t": 1}, {"id": "d"}]}),
    );
    let summary: Vec<(String, Kind, Option<String>)> = changed
        .differences
        .iter()
        .map(|d| (d.path.clone(), d.kind, d.item.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("/tasks/1/t".into(), Kind::ValueChanged, Some("id=b".into())),
            ("/tasks/2".into(), Kind::MissingInShadow, Some("id=c".into())),
            ("/tasks/2".into(), Kind::ExtraInShadow, Some("id=d".into())),
            ("/tasks".into(), Kind::OrderOnly, None),
        ]
    );
}

#[test]
fn duplicate_keys_pair_in_order_and_extras_are_reported() {
    let by_id = rules(|r| {
        r.add("u", "", Rule::Unordered(ItemKey::Field(vec!["id".into()])))
            .unwrap()
    });
    let comparison = compare_json(
        &by_id,
        json!([{"id": 1, "v": "x"}, {"id": 1, "v": "y"}, {"id": 1, "v": "z"}]),
        json!([{"id": 1, "v": "x"}, {"id": 1, "v": "y"}]),
    );
    assert_eq!(
        found(&comparison),
        vec![("/2".into(), Kind::MissingInShadow, Severity::High)]
    );
    assert_eq!(comparison.differences[0].item.as_deref(), Some("id=1"));
}

#[test]
fn nested_unordered_arrays_and_scalar_sets() {
    let nested = rules(|r| {
        r.add("u", "/projects", Rule::Unordered(ItemKey::Field(vec!["name".into()])))
            .unwrap();
        r.add("u", "/projects/*/tags", Rule::Unordered(ItemKey::Whole)).unwrap();
    });
    let same = compare_json(
        &nested,
        json!({"projects": [{"name": "p1", "tags": ["a", "b"]}, {"name": "p2", "tags": []}]}),
        json!({"projects": [{"name": "p2", "tags": []}, {"name": "p1", "tags": ["b", "a"]}]}),
    );
    let kinds: Vec<Kind> = same.differences.iter().map(|d| d.kind).collect();
    assert_eq!(
        kinds,
        vec![Kind::OrderOnly, Kind::OrderOnly],
        "two reorderings, nothing else"
    );
    let tag_lost = compare_json(
        &nested,
        json!({"projects": [{"name": "p1", "tags": ["a", "b"]}]}),
        json!({"projects": [{"name": "p1", "tags": ["b"]}]}),
    );
    assert_eq!(
        found(&tag_lost),
        vec![("/projects/0/tags/0".into(), Kind::MissingInShadow, Severity::High)]
    );
}

#[test]
fn time_tolerance_compares_instants_whatever_the_offset_and_precision() {
    let tolerant = rules(|r| {
        r.add("t", "/tasks/*/due", Rule::TimeTolerance(Duration::from_secs(1)))
            .unwrap();
        r.dates_as_midnight_utc = true;
    });
    let cases = [
        ("2026-01-20T09:00:00.000+11:00", "2026-01-19T22:00:00Z", true),
        ("2026-01-19T22:00:00.999Z", "2026-01-19T22:00:00Z", true),
        ("2026-01-19T22:00:02Z", "2026-01-19T22:00:00Z", false),
        ("2026-01-20", "2026-01-20T00:00:00Z", true),
        ("2026-01-20", "2026-01-20T00:00:00+01:00", false),
        ("not a time", "2026-01-20T00:00:00Z", false),
    ];
    for (p, s, equal) in cases {
        let comparison = compare_json(
            &tolerant,
            json!({"tasks": [{"due": p}]}),
            json!({"tasks": [{"due": s}]}),
        );
        assert_eq!(comparison.differences.is_empty(), equal, "{p} vs {s}");
    }
    // Outside the rule's path, the same values differ.
    let elsewhere = compare_json(
        &tolerant,
        json!({"created": "2026-01-19T22:00:00Z"}),
        json!({"created": "2026-01-19T22:00:00.000Z"}),
    );
    assert_eq!(elsewhere.differences.len(), 1);
    // Date-only equals midnight only when the rule says so.
    let strict = rules(|r| r.add("t", "/d", Rule::TimeTolerance(Duration::ZERO)).unwrap());
    assert_eq!(
        compare_json(
            &strict,
            json!({"d": "2026-01-20"}),
            json!({"d": "2026-01-20T00:00:00Z"})
        )
        .differences
        .len(),
        1
    );
}

#[test]
fn number_tolerance_is_absolute_or_relative() {
    let tolerant = rules(|r| {
        r.add("n", "/price", Rule::NumberTolerance(Tolerance::Absolute(0.01)))
            .unwrap();
        r.add("n", "/score", Rule::NumberTolerance(Tolerance::Relative(0.01)))
            .unwrap();
    });
    assert!(compare_json(
        &tolerant,
        json!({"price": 9.99, "score": 1000}),
        json!({"price": 9.995, "score": 1009})
    )
    .is_match());
    let beyond = compare_json(
        &tolerant,
        json!({"price": 9.99, "score": 1000}),
        json!({"price": 10.01, "score": 1020}),
    );
    assert_eq!(beyond.differences.len(), 2);
}

#[test]
fn null_equals_missing_only_where_asked() {
    let at_context = rules(|r| r.add("n", "/tasks/*/context", Rule::NullEqualsMissing).unwrap());
    let p = json!({"tasks": [{"context": null, "note": null}]});
    let s = json!({"tasks": [{}]});
    assert_eq!(
        found(&compare_json(&at_context, p.clone(), s.clone())),
        vec![("/tasks/0/note".into(), Kind::MissingInShadow, Severity::High)]
    );
    let everywhere = rules(|r| r.null_equals_missing_everywhere = true);
    assert!(compare_json(&everywhere, p, s).is_match());
    // A null is not equal to a value, whatever the rule.
    assert!(!compare_json(&everywhere, json!({"a": null}), json!({"a": 0})).is_match());
}

struct Map(HashMap<(String, String), String>);

impl IdLookup for Map {
    fn shadow_id(&self, kind: &str, primary_id: &str) -> Option<String> {
        self.0.get(&(kind.to_string(), primary_id.to_string())).cloned()
    }
}

#[test]
fn ids_compare_through_the_map_and_unmapped_ids_are_not_divergences() {
    let id_map = Map(HashMap::from([(
        ("tasks".to_string(), "notion-1".to_string()),
        "pg-1".to_string(),
    )]));
    let with_ids = rules(|r| {
        r.add("i", "/tasks/*/id", Rule::Id("tasks".into())).unwrap();
        r.add("u", "/tasks", Rule::Unordered(ItemKey::Field(vec!["id".into()])))
            .unwrap();
    });
    let compare = |p: Value, s: Value| compare_with(&with_ids, &id_map, &json_response(&p), &json_response(&s));
    let mapped = compare(
        json!({"tasks": [{"id": "notion-1", "t": "x"}]}),
        json!({"tasks": [{"id": "pg-1", "t": "x"}]}),
    );
    assert!(mapped.is_match(), "{:?}", mapped.differences);
    let wrong = compare(
        json!({"tasks": [{"id": "notion-1"}]}),
        json!({"tasks": [{"id": "pg-2"}]}),
    );
    assert_eq!(
        wrong.differences.len(),
        2,
        "the mapped item is missing and another is extra"
    );
    let unmapped = compare_with(
        &rules(|r| r.add("i", "/owner", Rule::Id("users".into())).unwrap()),
        &id_map,
        &json_response(&json!({"owner": "u-9"})),
        &json_response(&json!({"owner": "u-77"})),
    );
    assert!(unmapped.differences.is_empty());
    assert_eq!(unmapped.unmapped.len(), 1);
    assert_eq!(unmapped.unmapped[0].primary_id, "u-9");
}

#[test]
fn string_normalization_happens_only_where_a_rule_asks() {
    let p = json!({"title": " Buy milk ", "status": "Done", "other": "Done"});
    let s = json!({"title": "Buy milk", "status": "done", "other": "done"});
    assert_eq!(
        compare_json(&CompareRules::new(), p.clone(), s.clone())
            .differences
            .len(),
        3
    );
    let normalizing = rules(|r| {
        r.add("t", "/title", Rule::Trim).unwrap();
        r.add("c", "/status", Rule::CaseFold).unwrap();
    });
    assert_eq!(
        found(&compare_json(&normalizing, p, s)),
        vec![("/other".into(), Kind::ValueChanged, Severity::Medium)]
    );
}

#[test]
fn ignore_extra_fields_and_severity_overrides() {
    let tuned = rules(|r| {
        r.add("i", "/source", Rule::Ignore).unwrap();
        r.add("i", "/tasks/*/updatedAt", Rule::Ignore).unwrap();
        r.add("s", "/tasks/*/priority", Rule::Severity(Severity::Low)).unwrap();
        r.allow_extra_fields = true;
    });
    let comparison = compare_json(
        &tuned,
        json!({"source": "notion", "tasks": [{"updatedAt": 1, "priority": "high"}]}),
        json!({"source": "postgres", "tasks": [{"updatedAt": 2, "priority": "low", "new": true}]}),
    );
    assert_eq!(
        found(&comparison),
        vec![("/tasks/0/priority".into(), Kind::ValueChanged, Severity::Low)]
    );
}

#[test]
fn status_headers_and_body_kinds() {
    let rules = CompareRules::new();
    let json = [("content-type", "application/json")];
    let status = compare_with(&rules, &NoIds, &response(200, &json, "{}"), &response(404, &json, "{}"));
    assert_eq!(found(&status), vec![("".into(), Kind::StatusChanged, Severity::High)]);
    let same_class = compare_with(&rules, &NoIds, &response(200, &json, "{}"), &response(201, &json, "{}"));
    assert_eq!(same_class.differences[0].severity, Severity::Medium);

    let charset = compare_with(
        &rules,
        &NoIds,
        &response(
            200,
            &[
                ("content-type", "application/json; charset=utf-8"),
                ("x-vercel-id", "a"),
            ],
            "{}",
        ),
        &response(200, &[("content-type", "Application/JSON"), ("x-vercel-id", "b")], "{}"),
    );
    assert!(
        charset.is_match(),
        "charset and x-vercel-* never matter: {:?}",
        charset.differences
    );
    let html = compare_with(
        &rules,
        &NoIds,
        &response(200, &json, "{}"),
        &response(200, &[("content-type", "text/html")], "{}"),
    );
    assert_eq!(html.differences[0].location, Location::Header);
    assert_eq!(html.differences[0].severity, Severity::High);

    let empty = compare_with(&rules, &NoIds, &response(200, &json, ""), &response(200, &json, "{}"));
    assert_eq!(found(&empty), vec![("".into(), Kind::TypeChanged, Severity::High)]);
    assert_eq!(empty.differences[0].primary.as_deref(), Some("empty body"));

    let text = [("content-type", "text/plain")];
    let lines = compare_with(
        &rules,
        &NoIds,
        &response(200, &text, "a\nb\nc\n"),
        &response(200, &text, "a\nB\nc\n"),
    );
    assert_eq!(lines.differences[0].kind, Kind::TextChanged);
    assert_eq!(lines.differences[0].primary.as_deref(), Some("b"));
    let unified = lines.text_diff.unwrap();
    assert!(
        unified.contains("--- primary\n+++ shadow\n") && unified.contains("-b\n+B\n"),
        "{unified}"
    );

    let binary = [("content-type", "application/octet-stream")];
    let bytes = compare_with(
        &rules,
        &NoIds,
        &response(200, &binary, vec![1u8, 2, 3]),
        &response(200, &binary, vec![1u8, 2, 4]),
    );
    assert_eq!(bytes.differences[0].kind, Kind::BinaryChanged);
    assert!(bytes.differences[0]
        .primary
        .as_deref()
        .unwrap()
        .starts_with("3 bytes, sha256 "));
}

#[test]
fn a_body_that_does_not_decode_is_a_reason() {
    let comparison = compare_with(
        &CompareRules::new(),
        &NoIds,
        &response(200, &[("content-encoding", "gzip")], "not gzip"),
        &response(200, &[], "x"),
    );
    assert!(comparison
        .incomparable
        .unwrap()
        .starts_with("primary body: gzip body does not decode"));
}

#[test]
fn group_keys_name_the_place_not_the_record() {
    let none = CompareRules::new();
    let first = compare_json(
        &none,
        json!({"tasks": [{"t": 1}, {"t": 2}]}),
        json!({"tasks": [{"t": 9}, {"t": 2}]}),
    );
    let second = compare_json(
        &none,
        json!({"tasks": [{"t": 1}, {"t": 2}]}),
        json!({"tasks": [{"t": 1}, {"t": 9}]}),
    );
    assert_eq!(first.differences[0].pattern, "/tasks/*/t");
    assert_eq!(first.differences[0].group_key, second.differences[0].group_key);
    let two_bugs = compare_json(&none, json!({"a": 1, "b": 1}), json!({"a": 2, "b": 2}));
    assert_ne!(two_bugs.differences[0].group_key, two_bugs.differences[1].group_key);
    assert_eq!(first.differences[0].group_key.len(), 16);
}

#[test]
fn the_patch_turns_the_shadow_into_the_primary() {
    let none = CompareRules::new();
    let primary = json!({"a": 1, "list": [1, 2, 3], "obj": {"x": [true]}, "gone": "y"});
    let shadow = json!({"a": 2, "list": [1, 3], "obj": {"x": [false]}, "new": null});
    let comparison = compare_json(&none, primary.clone(), shadow.clone());
    let mut patched = shadow;
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(comparison.patch.unwrap())).unwrap();
    json_patch::patch(&mut patched, &patch).unwrap();
    assert_eq!(patched, primary);
}

#[test]
fn a_field_spelled_differently_with_the_same_value_is_one_rename() {
    let rules = CompareRules::new();
    let renamed = compare_json(
        &rules,
        json!({"tasks": [{"id": 1, "dueDate": "2026-11-21", "title": "a"}]}),
        json!({"tasks": [{"id": 1, "due_date": "2026-11-21", "title": "a"}]}),
    );
    assert_eq!(
        found(&renamed),
        [("/tasks/0/dueDate".to_string(), Kind::Renamed, Severity::High)]
    );
    assert_eq!(renamed.differences[0].shadow.as_deref(), Some("\"due_date\""));
    // Equal under the field's rules is equal: a date and midnight UTC, with a time tolerance.
    let mut tolerant = CompareRules::new();
    tolerant
        .add("t", "/dueDate", Rule::TimeTolerance(Duration::from_secs(1)))
        .unwrap();
    tolerant.dates_as_midnight_utc = true;
    let renamed = compare_json(
        &tolerant,
        json!({"dueDate": "2026-11-25"}),
        json!({"due_date": "2026-11-25T00:00:00Z"}),
    );
    assert_eq!(
        found(&renamed),
        [("/dueDate".to_string(), Kind::Renamed, Severity::High)]
    );
    // Spelled alike but holding another value: a missing field and an extra one.
    let changed = compare_json(&rules, json!({"dueDate": "a"}), json!({"due_date": "b"}));
    let kinds: Vec<Kind> = changed.differences.iter().map(|d| d.kind).collect();
    assert_eq!(kinds, [Kind::MissingInShadow, Kind::ExtraInShadow]);
    // The same value under an unrelated name is not a rename.
    let unrelated = compare_json(&rules, json!({"done": true}), json!({"archived": true}));
    let kinds: Vec<Kind> = unrelated.differences.iter().map(|d| d.kind).collect();
    assert_eq!(kinds, [Kind::MissingInShadow, Kind::ExtraInShadow]);
}

/// What a judgement rests on: each difference's place and kind, whether the
/// bodies were incomparable, and the IDs the map did not know.
fn verdict(comparison: &Comparison) -> (Vec<(String, Kind)>, bool, usize) {
    let places = comparison
        .differences
        .iter()
        .map(|d| (d.path.clone(), d.kind))
        .collect();
    (places, comparison.incomparable.is_some(), comparison.unmapped.len())
}

#[test]
fn identical_answers_get_the_verdict_the_full_comparison_gives() {
    // Byte-identical answers skip parsing on the hot path (no patch asked
    // for): the verdict must be the one the full comparison (with a patch,
    // which always parses) reaches, including where equal bytes are not a
    // match (bytes that do not decode).
    let id_map = Map(HashMap::from([(
        ("users".to_string(), "u-1".to_string()),
        "pg-1".to_string(),
    )]));
    let no_rules = CompareRules::new();
    let owner_is_an_id = rules(|r| r.add("i", "/owner", Rule::Id("users".into())).unwrap());
    let json_type = [("content-type", "application/json")];
    let gzip = {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(br#"{"a": 1}"#).unwrap();
        encoder.finish().unwrap()
    };
    let cases: Vec<(&str, &CompareRules, CapturedResponse, bool)> = vec![
        (
            "plain JSON",
            &no_rules,
            json_response(&json!({"a": [1, 2], "b": "x"})),
            true,
        ),
        // Through the map, or as the same value: either is the same entity.
        (
            "a mapped ID",
            &owner_is_an_id,
            json_response(&json!({"owner": "u-1"})),
            true,
        ),
        // An ID the map does not know, but the same on both sides.
        (
            "an unmapped ID",
            &owner_is_an_id,
            json_response(&json!({"owner": "u-9"})),
            true,
        ),
        (
            "invalid UTF-8 declared as JSON",
            &no_rules,
            response(200, &json_type, &b"{\"a\": \"\xff\"}"[..]),
            false,
        ),
        (
            "a gzip-coded body",
            &no_rules,
            response(
                200,
                &[("content-type", "application/json"), ("content-encoding", "gzip")],
                gzip,
            ),
            true,
        ),
        (
            "text",
            &no_rules,
            response(200, &[("content-type", "text/plain")], "hello"),
            true,
        ),
        ("empty", &no_rules, response(204, &[], ""), true),
    ];
    for (case, rules, answer, matches) in cases {
        let full = compare_with(rules, &id_map, &answer, &answer);
        let hot = compare_for(rules, &id_map, false, &answer, &answer);
        assert_eq!(verdict(&hot), verdict(&full), "{case}");
        // As the mirror asks when it has found the bodies equal itself.
        let known_equal = compare_as(rules, &id_map, (false, true), &answer, &answer);
        assert_eq!(verdict(&known_equal), verdict(&full), "{case}, bodies known equal");
        assert_eq!(
            hot.is_match() && hot.unmapped.is_empty(),
            matches,
            "{case}: {:?}",
            verdict(&hot)
        );
    }
}

#[test]
fn a_large_answer_keeps_every_group_and_counts_the_rest() {
    let (primary, shadow) = common::large_divergent_lists(10_000);
    let by_id = rules(|r| {
        r.add("u", "/tasks", Rule::Unordered(ItemKey::Field(vec!["id".into()])))
            .unwrap()
    });
    let comparison = compare_json(&by_id, primary.clone(), shadow.clone());
    let groups: std::collections::BTreeSet<(String, String)> = comparison
        .differences
        .iter()
        .map(|d| (d.pattern.clone(), d.kind.label().to_string()))
        .collect();
    let expected = common::LARGE_LIST_GROUPS
        .iter()
        .map(|(pattern, kind)| (pattern.to_string(), kind.to_string()))
        .collect();
    assert_eq!(groups, expected, "every kind of difference is kept");
    assert_eq!(comparison.differences.len() + comparison.truncated, 3 * 10_000 - 1);
    assert!(comparison.truncated > 0, "the count past the cap stays visible");
    assert!(comparison.differences.len() <= MAX_DIFFERENCES + MAX_GROUPS);
    let again = compare_json(&by_id, primary, shadow);
    assert_eq!(
        again.differences.iter().map(|d| &d.path).collect::<Vec<_>>(),
        comparison.differences.iter().map(|d| &d.path).collect::<Vec<_>>(),
        "the same answers keep the same examples"
    );
}

#[test]
fn past_the_group_cap_new_groups_are_counted_not_kept() {
    let primary: serde_json::Map<String, Value> = (0..3_000).map(|i| (format!("f{i}"), json!(i))).collect();
    let shadow: serde_json::Map<String, Value> = (0..3_000).map(|i| (format!("f{i}"), json!(i + 1))).collect();
    let comparison = compare_json(&CompareRules::new(), Value::Object(primary), Value::Object(shadow));
    // The first groups fill the kept differences; past them, each new group
    // keeps its example until there are MAX_GROUPS.
    assert_eq!(comparison.differences.len(), MAX_GROUPS);
    assert_eq!(comparison.differences.len() + comparison.truncated, 3_000);
}

#[test]
fn a_promised_sort_accepts_ties_in_any_order_and_names_the_first_pair_that_breaks_it() {
    let sorted = rules(|r| {
        r.add("u", "/tasks", Rule::Unordered(ItemKey::Field(vec!["id".into()])))
            .unwrap();
        r.add(
            "o",
            "/tasks",
            Rule::OrderBy(vec![vec!["priority".into()], vec!["due".into()]]),
        )
        .unwrap();
    });
    let primary = json!({"tasks": [
        {"id": "a", "priority": 1, "due": "2026-01-01"},
        {"id": "b", "priority": 1, "due": "2026-01-01"},
        {"id": "c", "priority": 2, "due": "2026-01-01"},
    ]});
    let ties_swapped = json!({"tasks": [
        {"id": "b", "priority": 1, "due": "2026-01-01"},
        {"id": "a", "priority": 1, "due": "2026-01-01"},
        {"id": "c", "priority": 2, "due": "2026-01-01"},
    ]});
    assert!(compare_json(&sorted, primary.clone(), ties_swapped.clone()).is_match());
    let without_the_promise = rules(|r| {
        r.add("u", "/tasks", Rule::Unordered(ItemKey::Field(vec!["id".into()])))
            .unwrap()
    });
    assert_eq!(
        found(&compare_json(&without_the_promise, primary.clone(), ties_swapped)),
        vec![("/tasks".into(), Kind::OrderOnly, Severity::Low)]
    );

    let broken = json!({"tasks": [
        {"id": "c", "priority": 2, "due": "2026-01-01"},
        {"id": "a", "priority": 1, "due": "2026-01-01"},
        {"id": "b", "priority": 1, "due": "2026-01-01"},
    ]});
    let comparison = compare_json(&sorted, primary, broken);
    assert_eq!(
        found(&comparison),
        vec![("/tasks".into(), Kind::OrderOnly, Severity::Low)]
    );
    assert_eq!(
        comparison.differences[0].primary.as_deref(),
        Some(r#""id=b (/priority=1, /due=\"2026-01-01\") before id=c (/priority=2, /due=\"2026-01-01\")""#)
    );
    assert_eq!(
        comparison.differences[0].shadow.as_deref(),
        Some(r#""id=c (/priority=2, /due=\"2026-01-01\") before id=b (/priority=1, /due=\"2026-01-01\")""#)
    );
}

#[test]
fn a_promised_sort_matches_items_through_the_id_map() {
    let sorted = rules(|r| {
        r.add("u", "/tasks", Rule::Unordered(ItemKey::Field(vec!["id".into()])))
            .unwrap();
        r.add("i", "/tasks/*/id", Rule::Id("tasks".into())).unwrap();
        r.add("o", "/tasks", Rule::OrderBy(vec![vec!["priority".into()]]))
            .unwrap();
    });
    let ids = Map(["p-1", "p-2", "p-3"]
        .into_iter()
        .map(|p| (("tasks".to_string(), p.to_string()), p.replace('p', "s")))
        .collect());
    let primary =
        json!({"tasks": [{"id": "p-1", "priority": 1}, {"id": "p-2", "priority": 1}, {"id": "p-3", "priority": 2}]});
    let tied =
        json!({"tasks": [{"id": "s-2", "priority": 1}, {"id": "s-1", "priority": 1}, {"id": "s-3", "priority": 2}]});
    let broken =
        json!({"tasks": [{"id": "s-3", "priority": 2}, {"id": "s-1", "priority": 1}, {"id": "s-2", "priority": 1}]});
    let compare = |shadow: &Value| compare_with(&sorted, &ids, &json_response(&primary), &json_response(shadow));
    assert!(compare(&tied).is_match(), "{:?}", compare(&tied).differences);
    assert_eq!(
        found(&compare(&broken)),
        vec![("/tasks".into(), Kind::OrderOnly, Severity::Low)]
    );
}
