//! Noise learning that adds no load to the primary.
//!
//! - Passive: when the same request (method, path, query, body) is seen
//!   again within the window, and no write went through the proxy in
//!   between, the fields that changed between the primary's two answers are
//!   volatile on the primary.
//! - Active (off by default, shadow only): a sampled safe request is sent to
//!   the shadow twice; fields that differ are volatile on the shadow.
//!
//! A path counts as noise only after it was seen volatile
//! `min_observations` times. Noise only ever sets aside `value_changed`
//! differences in the body: a missing key, a type change or a status change
//! is always reported. Learned noise is listed for a person to confirm, and
//! a route's `not_noise` paths are never learned.
//!
//! A remembered answer is charged what it holds: its bytes and an upper
//! estimate of its parsed document (every node, map entry and string
//! allocation), so answers that parse into far more than their size (long
//! arrays of `0`) cannot hold more than `memory`. The table of volatile
//! paths holds at most [`MAX_VOLATILE_PATHS`].
//!
//! Must never: learn from two answers a write may have changed, or hold
//! more than its memory budget of remembered answers.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::json::{self, Differ};
use super::rules::CompareRules;
use super::{Difference, Kind, Location, NoIds};
use crate::exchange::Side;

/// Decides whether a difference is learned noise.
pub trait NoiseFilter {
    fn is_noise(&self, route: &str, difference: &Difference) -> bool;
}

/// Nothing is noise (offline diffs, tests).
pub struct NoNoise;

impl NoiseFilter for NoNoise {
    fn is_noise(&self, _route: &str, _difference: &Difference) -> bool {
        false
    }
}

#[derive(Debug, Clone)]
pub struct NoiseConfig {
    /// How far apart two observations of the same request may be.
    pub window: Duration,
    /// Observations of a volatile path before it counts as noise.
    pub min_observations: u32,
    /// Bytes of remembered primary answers (oldest forgotten first).
    pub memory: usize,
    /// Send a sample of safe requests to the shadow twice.
    pub active: bool,
    /// The fraction of safe requests sent twice when `active`.
    pub active_sample: f64,
}

impl Default for NoiseConfig {
    fn default() -> Self {
        NoiseConfig {
            window: Duration::from_secs(600),
            min_observations: 3,
            memory: 32 << 20,
            active: false,
            active_sample: 0.05,
        }
    }
}

/// A path learned (or being learned) as noise, for review.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LearnedNoise {
    pub route: String,
    pub pattern: String,
    pub side: Side,
    pub observations: u32,
    /// Whether it has reached `min_observations` and is being set aside.
    pub active: bool,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
}

struct Remembered {
    at: Instant,
    write_epoch: u64,
    /// The answer's bytes (shared with the capture, not copied): an
    /// identical answer is recognized without parsing it.
    body: Bytes,
    doc: Value,
    bytes: usize,
    /// Which of the request's entries in `order` is this one's.
    generation: u64,
}

#[derive(Default)]
struct State {
    recent: HashMap<u64, Remembered>,
    /// Requests oldest first, as (request, generation). An answer replaced
    /// leaves its entry behind, stale, instead of being searched for (a
    /// scan of every remembered request per changed answer); eviction skips
    /// stale entries, and they are swept once they outnumber live ones.
    order: VecDeque<(u64, u64)>,
    generations: u64,
    bytes: usize,
    volatile: HashMap<(String, String, Side), (u32, SystemTime, SystemTime)>,
    /// Whether reaching [`MAX_VOLATILE_PATHS`] was logged.
    full_logged: bool,
}

/// Stale entries of `State::order` tolerated beyond one per live one.
const STALE_SLACK: usize = 64;

/// Volatile paths tracked at most; past it new paths are not learned (an
/// API whose keys are data, such as IDs as object keys, would otherwise
/// grow the table without end).
pub const MAX_VOLATILE_PATHS: usize = 10_000;

/// What one remembered answer costs besides its document: its slot in the
/// table, its entry in the order, and its bookkeeping.
const ENTRY_COST: usize = 512;
/// A node of a parsed document: its `Value` slot, with room for the growth
/// of the array or map that holds it.
const NODE_COST: usize = 2 * std::mem::size_of::<Value>();
/// A map entry beyond its value: the key's `String` and the tree's share.
const MAP_ENTRY_COST: usize = 4 * std::mem::size_of::<String>();
/// The smallest heap allocation (a short string or number's text).
const ALLOCATION_COST: usize = 32;

/// An upper estimate of the heap a parsed document holds, given the size of
/// its text (which bounds every string, key and number's own bytes).
pub fn held_bytes(text_len: usize, doc: &Value) -> usize {
    fn nodes(value: &Value) -> usize {
        match value {
            Value::Null | Value::Bool(_) => NODE_COST,
            Value::Number(_) | Value::String(_) => NODE_COST + ALLOCATION_COST,
            Value::Array(items) => NODE_COST + ALLOCATION_COST + items.iter().map(nodes).sum::<usize>(),
            Value::Object(map) => {
                NODE_COST
                    + map
                        .values()
                        .map(|child| MAP_ENTRY_COST + ALLOCATION_COST + nodes(child))
                        .sum::<usize>()
            }
        }
    }
    ENTRY_COST + 2 * text_len + nodes(doc)
}

/// The noise learner of one running instance.
pub struct NoiseLearner {
    config: NoiseConfig,
    state: Mutex<State>,
}

/// A request's identity for passive learning: method, path and query, body.
pub fn fingerprint(method: &str, path_and_query: &str, body: &[u8]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    (method, path_and_query, body).hash(&mut hasher);
    hasher.finish()
}

impl NoiseLearner {
    pub fn new(config: NoiseConfig) -> NoiseLearner {
        NoiseLearner {
            config,
            state: Mutex::new(State::default()),
        }
    }

    pub fn config(&self) -> &NoiseConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Notes the primary's answer to a request: its body, and `doc`, which
    /// gives its normalized JSON document (None: not JSON, nothing to
    /// learn). `write_epoch` counts the writes the proxy has seen: answers
    /// on either side of a write are never compared for noise.
    ///
    /// An answer with the same bytes as the one remembered for the request
    /// has no volatile field to show: it only refreshes the memory, and
    /// `doc` is not called (most answers repeat; parsing them is the cost).
    pub fn observe_primary(
        &self,
        route: &str,
        rules: &CompareRules,
        request: u64,
        write_epoch: u64,
        body: &Bytes,
        doc: impl FnOnce() -> Option<Value>,
    ) {
        let now = Instant::now();
        {
            let mut state = self.lock();
            if let Some(previous) = state.recent.get_mut(&request) {
                if previous.body == *body {
                    previous.at = now;
                    previous.write_epoch = write_epoch;
                    return;
                }
            }
        }
        let Some(doc) = doc() else {
            return;
        };
        // The body's bytes once (shared with the capture), its document's text again.
        let bytes = body.len() + held_bytes(body.len(), &doc);
        let mut state = self.lock();
        if let Some(previous) = state.recent.get(&request) {
            if now.duration_since(previous.at) <= self.config.window && previous.write_epoch == write_epoch {
                let patterns = volatile_patterns(rules, &previous.doc, &doc);
                self.count(&mut state, route, patterns, Side::Primary);
            }
        }
        if bytes > self.config.memory {
            return;
        }
        if let Some(old) = state.recent.remove(&request) {
            state.bytes -= old.bytes;
        }
        while state.bytes + bytes > self.config.memory {
            let Some((oldest, generation)) = state.order.pop_front() else {
                break;
            };
            if state
                .recent
                .get(&oldest)
                .is_some_and(|old| old.generation == generation)
            {
                if let Some(old) = state.recent.remove(&oldest) {
                    state.bytes -= old.bytes;
                }
            }
        }
        state.generations += 1;
        let generation = state.generations;
        state.bytes += bytes;
        state.order.push_back((request, generation));
        if state.order.len() > 2 * state.recent.len() + STALE_SLACK {
            let State { recent, order, .. } = &mut *state;
            order.retain(|(key, generation)| recent.get(key).is_some_and(|live| live.generation == *generation));
        }
        state.recent.insert(
            request,
            Remembered {
                at: now,
                write_epoch,
                body: body.clone(),
                doc,
                bytes,
                generation,
            },
        );
    }

    /// Notes two shadow answers to the same request (active learning).
    pub fn observe_shadow_pair(&self, route: &str, rules: &CompareRules, first: &Value, second: &Value) {
        let patterns = volatile_patterns(rules, first, second);
        let mut state = self.lock();
        self.count(&mut state, route, patterns, Side::Shadow);
    }

    fn count(&self, state: &mut State, route: &str, patterns: Vec<String>, side: Side) {
        let now = SystemTime::now();
        for pattern in patterns {
            let key = (route.to_string(), pattern, side);
            if state.volatile.len() >= MAX_VOLATILE_PATHS && !state.volatile.contains_key(&key) {
                if !state.full_logged {
                    state.full_logged = true;
                    tracing::warn!(
                        route,
                        pattern = %key.1,
                        limit = MAX_VOLATILE_PATHS,
                        "the noise learner tracks as many volatile paths as it may: new ones are not learned"
                    );
                }
                continue;
            }
            let pattern = key.1.clone();
            let entry = state.volatile.entry(key).or_insert((0, now, now));
            entry.0 += 1;
            entry.2 = now;
            if entry.0 == self.config.min_observations {
                tracing::info!(
                    route,
                    pattern = %pattern,
                    side = ?side,
                    observations = entry.0,
                    "learned as noise: value changes here are set aside (list them to confirm, or add the path to not_noise)"
                );
            }
        }
    }

    /// Every volatile path seen so far, most observed first.
    pub fn learned(&self) -> Vec<LearnedNoise> {
        let state = self.lock();
        let mut out: Vec<LearnedNoise> = state
            .volatile
            .iter()
            .map(|((route, pattern, side), (count, first, last))| LearnedNoise {
                route: route.clone(),
                pattern: pattern.clone(),
                side: *side,
                observations: *count,
                active: *count >= self.config.min_observations,
                first_seen: *first,
                last_seen: *last,
            })
            .collect();
        out.sort_by(|a, b| b.observations.cmp(&a.observations).then(a.pattern.cmp(&b.pattern)));
        out
    }
}

impl NoiseFilter for NoiseLearner {
    fn is_noise(&self, route: &str, difference: &Difference) -> bool {
        if difference.kind != Kind::ValueChanged || difference.location != Location::Body {
            return false;
        }
        let state = self.lock();
        [Side::Primary, Side::Shadow].into_iter().any(|side| {
            state
                .volatile
                .get(&(route.to_string(), difference.pattern.clone(), side))
                .is_some_and(|(count, _, _)| *count >= self.config.min_observations)
        })
    }
}

/// The patterns of values that changed between two answers (value changes
/// only; structure changes are never noise), minus the route's `not_noise`.
fn volatile_patterns(rules: &CompareRules, a: &Value, b: &Value) -> Vec<String> {
    let mut differ = Differ::new(rules, &NoIds);
    differ.run(a, b);
    let mut patterns: Vec<String> = differ
        .differences
        .iter()
        .filter(|d| d.kind == Kind::ValueChanged)
        .filter(|d| rules.not_noise.lookup(&json::segments_text(&d.path)).is_none())
        .map(|d| json::pattern(&d.path))
        .collect();
    patterns.sort();
    patterns.dedup();
    patterns
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn difference(pattern: &str, kind: Kind) -> Difference {
        Difference {
            location: Location::Body,
            path: pattern.replace('*', "0"),
            pattern: pattern.to_string(),
            kind,
            primary: None,
            shadow: None,
            item: None,
            severity: super::super::Severity::Medium,
            group_key: String::new(),
        }
    }

    /// The primary answered `doc` (as its JSON text) to `request`.
    fn observe(noise: &NoiseLearner, rules: &CompareRules, request: u64, epoch: u64, doc: Value) {
        let body = Bytes::from(doc.to_string());
        noise.observe_primary("r", rules, request, epoch, &body, || Some(doc));
    }

    fn learner() -> NoiseLearner {
        NoiseLearner::new(NoiseConfig {
            min_observations: 2,
            ..NoiseConfig::default()
        })
    }

    #[test]
    fn a_field_that_changes_between_identical_requests_becomes_noise_after_enough_observations() {
        let noise = learner();
        let rules = CompareRules::new();
        let request = fingerprint("GET", "/tasks", b"");
        let doc = |n: u32| json!({"tasks": [{"id": "a", "generatedAt": n, "title": "t"}]});
        observe(&noise, &rules, request, 0, doc(1));
        observe(&noise, &rules, request, 0, doc(2));
        assert!(!noise.is_noise("r", &difference("/tasks/*/generatedAt", Kind::ValueChanged)));
        observe(&noise, &rules, request, 0, doc(3));
        assert!(noise.is_noise("r", &difference("/tasks/*/generatedAt", Kind::ValueChanged)));
        assert!(!noise.is_noise("r", &difference("/tasks/*/title", Kind::ValueChanged)));
        assert!(!noise.is_noise("other-route", &difference("/tasks/*/generatedAt", Kind::ValueChanged)));
        assert!(
            !noise.is_noise("r", &difference("/tasks/*/generatedAt", Kind::MissingInShadow)),
            "a missing key is never noise"
        );
        let learned = noise.learned();
        assert_eq!(learned.len(), 1);
        assert_eq!(learned[0].pattern, "/tasks/*/generatedAt");
        assert!(learned[0].active);
    }

    #[test]
    fn answers_on_either_side_of_a_write_teach_nothing() {
        let noise = learner();
        let rules = CompareRules::new();
        let request = fingerprint("GET", "/tasks", b"");
        for epoch in 0..5 {
            observe(&noise, &rules, request, epoch, json!({"title": format!("v{epoch}")}));
        }
        assert!(noise.learned().is_empty());
    }

    #[test]
    fn the_table_of_volatile_paths_is_bounded() {
        let noise = learner();
        let rules = CompareRules::new();
        // Keys that are data: 11 requests of 1,000 keys each, all changing.
        let keyed = |request: usize, n: u64| {
            let map: serde_json::Map<String, Value> = (0..1_000)
                .map(|i| (format!("k{}", request * 1_000 + i), json!(n)))
                .collect();
            Value::Object(map)
        };
        for request in 0..11 {
            let fingerprint = fingerprint("GET", &format!("/keyed/{request}"), b"");
            observe(&noise, &rules, fingerprint, 0, keyed(request, 1));
            observe(&noise, &rules, fingerprint, 0, keyed(request, 2));
        }
        assert_eq!(noise.learned().len(), MAX_VOLATILE_PATHS);
    }

    #[test]
    fn not_noise_paths_are_never_learned() {
        let noise = learner();
        let mut rules = CompareRules::new();
        rules.add_not_noise("not_noise[0]", "/price").unwrap();
        let request = fingerprint("GET", "/p", b"");
        for n in 0..4 {
            observe(&noise, &rules, request, 0, json!({"price": n, "at": n}));
        }
        let patterns: Vec<_> = noise.learned().into_iter().map(|l| l.pattern).collect();
        assert_eq!(patterns, ["/at"]);
    }

    /// What remembering `doc`, sent as its JSON text, is charged.
    fn cost(doc: &Value) -> usize {
        let text = doc.to_string();
        text.len() + held_bytes(text.len(), doc)
    }

    #[test]
    fn remembered_answers_stay_within_the_memory_budget() {
        let budget = 2 * cost(&json!({"n": 0})) + 10;
        let noise = NoiseLearner::new(NoiseConfig {
            memory: budget,
            ..NoiseConfig::default()
        });
        let rules = CompareRules::new();
        for n in 0..10u64 {
            observe(&noise, &rules, n, 0, json!({"n": n}));
        }
        let state = noise.lock();
        assert_eq!(state.recent.len(), 2, "two answers fit");
        assert!(state.bytes <= budget);
    }

    #[test]
    fn the_oldest_request_is_forgotten_first_however_often_another_changes() {
        let noise = NoiseLearner::new(NoiseConfig {
            memory: 3 * cost(&json!({"n": 100})),
            ..NoiseConfig::default()
        });
        let rules = CompareRules::new();
        observe(&noise, &rules, 1, 0, json!({"n": 100}));
        observe(&noise, &rules, 2, 0, json!({"n": 200}));
        for n in 300..1000 {
            observe(&noise, &rules, 3, 0, json!({"n": n}));
        }
        observe(&noise, &rules, 4, 0, json!({"n": 400}));
        let state = noise.lock();
        let mut remembered: Vec<u64> = state.recent.keys().copied().collect();
        remembered.sort();
        assert_eq!(remembered, [2, 3, 4], "{{\"n\":NNN}} is 9 bytes: three fit");
        assert!(
            state.order.len() <= 2 * state.recent.len() + STALE_SLACK,
            "{}",
            state.order.len()
        );
    }

    #[test]
    fn a_repeated_answer_is_recognized_by_its_bytes_without_being_parsed() {
        let noise = learner();
        let rules = CompareRules::new();
        let request = fingerprint("GET", "/tasks", b"");
        observe(&noise, &rules, request, 0, json!({"at": 1}));
        let same = Bytes::from(json!({"at": 1}).to_string());
        for _ in 0..3 {
            noise.observe_primary("r", &rules, request, 0, &same, || {
                panic!("an identical answer was parsed")
            });
        }
        assert!(noise.learned().is_empty());
        // A change after the repeats is still seen, against what was remembered.
        observe(&noise, &rules, request, 0, json!({"at": 2}));
        observe(&noise, &rules, request, 0, json!({"at": 3}));
        assert!(noise.is_noise("r", &difference("/at", Kind::ValueChanged)));
    }

    #[test]
    fn shadow_pairs_teach_shadow_side_noise() {
        let noise = learner();
        let rules = CompareRules::new();
        for n in 0..2 {
            noise.observe_shadow_pair("r", &rules, &json!({"nonce": n}), &json!({"nonce": n + 100}));
        }
        assert!(noise.is_noise("r", &difference("/nonce", Kind::ValueChanged)));
        assert_eq!(noise.learned()[0].side, Side::Shadow);
    }
}
