//! The noise learner's `memory` bounds the heap it holds, measured with a
//! heap profiler as the allocator, on answers that parse into far more
//! than their size: counting body bytes alone would hold dozens of times
//! the budget.
//!
//! `cargo test --test noise_memory -- --nocapture` prints the figures.

use bytes::Bytes;
use cutover::compare::noise::{fingerprint, NoiseConfig, NoiseLearner};
use cutover::compare::rules::CompareRules;
use serde_json::Value;

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// About 8 KiB of JSON whose parsed form is much larger: long arrays of a
/// one-digit number, of empty objects, of empty arrays, or an object of
/// short keys, in turn.
fn answer(n: usize) -> Bytes {
    let items = 4_000;
    let text = match n % 4 {
        0 => format!("[{}]", vec!["0"; items].join(",")),
        1 => format!("[{}]", vec!["{}"; items * 2 / 3].join(",")),
        2 => format!("{{\"a\":[{}]}}", vec!["[]"; items * 2 / 3].join(",")),
        _ => {
            let fields: Vec<String> = (0..items / 5).map(|i| format!("\"{i:x}\":1")).collect();
            format!("{{{}}}", fields.join(","))
        }
    };
    Bytes::from(text)
}

#[test]
fn the_noise_learner_holds_no_more_than_its_memory_budget() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let budget = 4 << 20;
    let learner = NoiseLearner::new(NoiseConfig {
        memory: budget,
        ..NoiseConfig::default()
    });
    let rules = CompareRules::new();
    let before = dhat::HeapStats::get().curr_bytes;
    let mut text = 0;
    let answers = 200;
    for n in 0..answers {
        let body = answer(n);
        text += body.len();
        let request = fingerprint("GET", &format!("/answer/{n}"), b"");
        learner.observe_primary("r", &rules, request, 0, &body, || {
            serde_json::from_slice::<Value>(&body).ok()
        });
    }
    let held = dhat::HeapStats::get().curr_bytes.saturating_sub(before);
    println!(
        "noise.memory {budget} bytes: {answers} answers of {} bytes of JSON on average seen; \
         the learner holds {held} bytes of heap ({:.0}% of the budget)",
        text / answers,
        100.0 * held as f64 / budget as f64
    );
    assert!(held <= budget, "held {held} bytes of heap for a budget of {budget}");
    assert!(held >= budget / 4, "the budget is used, not wasted: {held} of {budget}");
}
