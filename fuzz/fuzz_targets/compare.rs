//! Two arbitrary answers and arbitrary rules: the engine never panics, and
//! an answer never differs from itself.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use bytes::Bytes;
use cutover::compare::rules::{CompareRules, ItemKey, Rule, Tolerance};
use cutover::compare::{compare_responses, Context, NoIds, Severity};
use cutover::exchange::CapturedResponse;
use http::{HeaderMap, Method, StatusCode};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Answer {
    status: u16,
    content_type: u8,
    encoding: u8,
    body: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
struct FuzzRule {
    path: String,
    kind: u8,
    parameter: String,
}

#[derive(Debug, Arbitrary)]
struct Input {
    primary: Answer,
    shadow: Answer,
    rules: Vec<FuzzRule>,
    allow_extra_fields: bool,
    null_equals_missing_everywhere: bool,
    dates_as_midnight_utc: bool,
}

const CONTENT_TYPES: [&str; 6] = ["application/json", "text/plain; charset=latin1", "", "application/octet-stream", "application/problem+json; charset=utf-16", "text/html"];
const ENCODINGS: [&str; 6] = ["", "gzip", "deflate", "br", "zstd", "gzip, br"];

fn answer(a: &Answer) -> CapturedResponse {
    let mut headers = HeaderMap::new();
    let content_type = CONTENT_TYPES[usize::from(a.content_type) % CONTENT_TYPES.len()];
    if !content_type.is_empty() {
        headers.insert("content-type", content_type.parse().unwrap());
    }
    let encoding = ENCODINGS[usize::from(a.encoding) % ENCODINGS.len()];
    if !encoding.is_empty() {
        headers.insert("content-encoding", encoding.parse().unwrap());
    }
    CapturedResponse {
        status: StatusCode::from_u16(100 + a.status % 500).unwrap(),
        headers,
        body: Bytes::from(a.body.clone()),
        elapsed: Duration::ZERO,
    }
}

fuzz_target!(|input: Input| {
    let mut rules = CompareRules::new();
    rules.allow_extra_fields = input.allow_extra_fields;
    rules.null_equals_missing_everywhere = input.null_equals_missing_everywhere;
    rules.dates_as_midnight_utc = input.dates_as_midnight_utc;
    for rule in input.rules.iter().take(8) {
        let parsed = match rule.kind % 9 {
            0 => Rule::Ignore,
            1 if rule.parameter.is_empty() => Rule::Unordered(ItemKey::Whole),
            1 => Rule::Unordered(ItemKey::Field(rule.parameter.split('/').map(str::to_string).collect())),
            2 => Rule::TimeTolerance(Duration::from_millis(rule.parameter.len() as u64 * 100)),
            3 => match Tolerance::parse(&rule.parameter) {
                Ok(tolerance) => Rule::NumberTolerance(tolerance),
                Err(_) => continue,
            },
            4 => Rule::NullEqualsMissing,
            5 => Rule::Id(rule.parameter.clone()),
            6 => Rule::Trim,
            7 => Rule::CaseFold,
            _ => Rule::Severity(Severity::Low),
        };
        // Invalid patterns are config errors, not engine input.
        let _ = rules.add("fuzz", &rule.path, parsed);
    }
    let (primary, shadow) = (answer(&input.primary), answer(&input.shadow));
    let ctx = Context {
        route: "fuzz",
        method: &Method::GET,
        rules: &rules,
        ids: &NoIds,
        decode_limit: 1 << 20,
        want_patch: true,
        bodies_equal: false,
    };
    let _ = compare_responses(&ctx, &primary, &shadow);
    let same = compare_responses(&ctx, &primary, &primary);
    assert!(same.is_match() || same.incomparable.is_some(), "an answer differs from itself: {:?}", same.differences);
});
