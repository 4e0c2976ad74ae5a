//! Properties of the comparison engine over generated documents.

use std::time::Duration;

use bytes::Bytes;
use cutover::compare::json::normalize;
use cutover::compare::rules::{CompareRules, ItemKey, Rule};
use cutover::compare::{compare_responses, Comparison, Context, Kind, NoIds};
use cutover::exchange::CapturedResponse;
use http::{HeaderMap, Method, StatusCode};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn respond(value: &Value) -> CapturedResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    CapturedResponse {
        status: StatusCode::OK,
        headers,
        body: Bytes::from(value.to_string()),
        elapsed: Duration::ZERO,
    }
}

fn compare(rules: &CompareRules, primary: &Value, shadow: &Value) -> Comparison {
    let ctx = Context {
        route: "r",
        method: &Method::GET,
        rules,
        ids: &NoIds,
        decode_limit: 1 << 22,
        want_patch: true,
        bodies_equal: false,
    };
    compare_responses(&ctx, &respond(primary), &respond(shadow))
}

/// Documents with few distinct keys and values, so two documents overlap.
fn document() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..4).prop_map(Value::from),
        prop_oneof![Just(0.5), Just(-1.25), Just(1e21)].prop_map(|f: f64| json!(f)),
        "[ a-c]{0,3}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-d]", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn normalizing_rules() -> CompareRules {
    let mut rules = CompareRules::new();
    rules.add("i", "/**/b", Rule::Ignore).unwrap();
    rules.add("t", "/**/c", Rule::Trim).unwrap();
    rules.add("c", "/**/a", Rule::CaseFold).unwrap();
    rules.add("i", "/1", Rule::Ignore).unwrap();
    rules
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_document_never_differs_from_itself(doc in document()) {
        let comparison = compare(&CompareRules::new(), &doc, &doc);
        prop_assert!(comparison.is_match(), "{:?}", comparison.differences);
        let comparison = compare(&normalizing_rules(), &doc, &doc);
        prop_assert!(comparison.is_match());
    }

    #[test]
    fn the_patch_turns_the_shadow_into_the_primary(primary in document(), shadow in document()) {
        let comparison = compare(&CompareRules::new(), &primary, &shadow);
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(comparison.patch.clone().unwrap())).unwrap();
        let mut patched = shadow.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        prop_assert_eq!(&patched, &primary);
        prop_assert_eq!(comparison.is_match(), primary == shadow);
    }

    #[test]
    fn the_patch_works_on_normalized_documents_too(primary in document(), shadow in document()) {
        let rules = normalizing_rules();
        let comparison = compare(&rules, &primary, &shadow);
        let (mut p, mut s) = (primary, shadow);
        normalize(&mut p, &rules);
        normalize(&mut s, &rules);
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(comparison.patch.unwrap())).unwrap();
        json_patch::patch(&mut s, &patch).unwrap();
        prop_assert_eq!(s, p);
    }

    #[test]
    fn normalization_is_idempotent(doc in document()) {
        let rules = normalizing_rules();
        let mut once = doc;
        normalize(&mut once, &rules);
        let mut twice = once.clone();
        normalize(&mut twice, &rules);
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn group_keys_do_not_depend_on_order_or_on_which_item_differs(
        count in 2usize..12,
        changed in any::<prop::sample::Index>(),
        other in any::<prop::sample::Index>(),
        shuffle in any::<prop::sample::Index>(),
    ) {
        let tasks: Vec<Value> = (0..count).map(|i| json!({"id": format!("t{i}"), "title": format!("task {i}"), "done": false})).collect();
        let with_change = |index: usize| {
            let mut copy = tasks.clone();
            copy[index]["title"] = json!("renamed");
            json!({"tasks": copy})
        };
        let primary = json!({"tasks": tasks});
        let mut unordered = CompareRules::new();
        unordered.add("u", "/tasks", Rule::Unordered(ItemKey::Field(vec!["id".into()]))).unwrap();
        let keys = |rules: &CompareRules, shadow: &Value| -> Vec<(Kind, String)> {
            compare(rules, &primary, shadow).differences.iter().filter(|d| d.kind != Kind::OrderOnly).map(|d| (d.kind, d.group_key.clone())).collect()
        };
        let a = keys(&CompareRules::new(), &with_change(changed.index(count)));
        let b = keys(&CompareRules::new(), &with_change(other.index(count)));
        prop_assert_eq!(a.len(), 1);
        prop_assert_eq!(&a, &b);

        let mut rotated = with_change(changed.index(count));
        rotated["tasks"].as_array_mut().unwrap().rotate_left(shuffle.index(count));
        prop_assert_eq!(keys(&unordered, &rotated), keys(&unordered, &with_change(changed.index(count))));
    }

    #[test]
    fn object_key_order_does_not_matter(doc in document()) {
        // Re-serialize with keys in reverse order: the same document.
        fn reversed(value: &Value) -> String {
            match value {
                Value::Object(map) => {
                    let fields: Vec<String> = map.iter().rev().map(|(k, v)| format!("{}:{}", Value::from(k.clone()), reversed(v))).collect();
                    format!("{{{}}}", fields.join(","))
                }
                Value::Array(items) => format!("[{}]", items.iter().map(reversed).collect::<Vec<_>>().join(",")),
                other => other.to_string(),
            }
        }
        let reordered: Value = serde_json::from_str(&reversed(&doc)).unwrap();
        prop_assert!(compare(&CompareRules::new(), &doc, &reordered).is_match());
    }
}
