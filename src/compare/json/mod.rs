//! The structural JSON diff: normalization (only what rules ask for), then a
//! walk of both documents producing differences with JSON Pointer paths and
//! an RFC 6902 patch that turns the shadow's normalized document into the
//! primary's.
//!
//! Ordered arrays are aligned (Myers, over structural hashes of the items)
//! so a dropped record shows as one missing item, not a cascade of changed
//! values. Unordered arrays are matched by a key.
//!
//! Past [`MAX_DIFFERENCES`] the walk keeps only the first difference of
//! each group it has not seen yet (a pattern and a kind), so a large answer
//! loses examples, never a kind of difference; the rest are counted.
//!
//! Must never: treat a difference as equal unless a rule says so; panic on
//! any document; drop the only difference of a group while fewer than
//! [`MAX_GROUPS`] groups are kept; grow its output past
//! [`MAX_DIFFERENCES`] + [`MAX_GROUPS`].

use std::borrow::Cow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use serde_json::{Map, Value};

use super::pointer::{escape, Cursor};
use super::rules::{CompareRules, Rule};
use super::{IdLookup, Kind};

mod arrays;
mod scalars;

pub use scalars::{canonical_decimal, instant_nanos};

/// Differences kept per exchange as they come; past it only a group's
/// first difference is kept, the rest are counted.
pub const MAX_DIFFERENCES: usize = 500;
/// Groups (pattern and kind) one exchange keeps an example of; past it a
/// new group is counted, not kept (an answer with this many distinct
/// places that differ is one broken answer, not that many findings).
pub const MAX_GROUPS: usize = 1_000;
/// Longest array aligned item by item; longer ones compare by index.
const ALIGN_LIMIT: usize = 20_000;
/// Longest value shown in a difference.
const DISPLAY_LIMIT: usize = 160;

/// One segment of a concrete path. During the walk keys borrow from the
/// documents; a recorded difference owns its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment<'a> {
    Key(Cow<'a, str>),
    Index(usize),
}

impl Segment<'_> {
    fn to_owned_segment(&self) -> Segment<'static> {
        match self {
            Segment::Key(key) => Segment::Key(Cow::Owned(key.to_string())),
            Segment::Index(index) => Segment::Index(*index),
        }
    }
}

/// A difference as the walk finds it; `super` adds severity and grouping.
#[derive(Debug, Clone, PartialEq)]
pub struct RawDifference {
    pub path: Vec<Segment<'static>>,
    pub kind: Kind,
    pub primary: Option<String>,
    pub shadow: Option<String>,
    /// For items of unordered arrays: which item, by its key (`id="a1"`).
    pub item: Option<String>,
}

/// An ID the primary used that the ID map does not know.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnmappedId {
    pub kind: String,
    pub primary_id: String,
}

/// Applies the normalizing rules (ignore, trim, case-fold) in place.
/// Idempotent: normalizing twice changes nothing more.
pub fn normalize(value: &mut Value, rules: &CompareRules) {
    normalize_at(value, rules, &rules.root());
}

fn normalize_at(value: &mut Value, rules: &CompareRules, cursor: &Cursor) {
    if cursor.is_dead() {
        return;
    }
    for rule in rules.at(cursor) {
        match (rule, &mut *value) {
            // An ignored node becomes null on both sides: positions in arrays stay put.
            (Rule::Ignore, v) => *v = Value::Null,
            (Rule::Trim, Value::String(s)) => {
                let trimmed = s.trim();
                if trimmed.len() != s.len() {
                    *s = trimmed.to_string();
                }
            }
            (Rule::CaseFold, Value::String(s)) => *s = s.to_lowercase(),
            _ => {}
        }
    }
    match value {
        Value::Object(map) => {
            map.retain(|key, _| !rules.has(&rules.step(cursor, key), |r| matches!(r, Rule::Ignore)));
            for (key, child) in map.iter_mut() {
                normalize_at(child, rules, &rules.step(cursor, key));
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter_mut().enumerate() {
                normalize_at(child, rules, &rules.step(cursor, &index.to_string()));
            }
        }
        _ => {}
    }
}

/// The walk over two normalized documents.
pub struct Differ<'a> {
    rules: &'a CompareRules,
    ids: &'a dyn IdLookup,
    pub differences: Vec<RawDifference>,
    /// Differences found but not kept: past [`MAX_DIFFERENCES`], in a group
    /// that already has its example.
    pub truncated: usize,
    /// Every difference found, kept or not, including in a trial.
    found: usize,
    /// A trial walk (see `agree`) counts what it finds and keeps nothing.
    trial: bool,
    /// The groups the kept differences are in.
    groups: HashSet<(Kind, String)>,
    pub patch: Vec<Value>,
    pub unmapped: Vec<UnmappedId>,
    /// The key of the unordered item being walked, for the differences inside it.
    item: Option<String>,
    /// Whether to build the patch (it copies values; the proxy does not need it).
    want_patch: bool,
}

impl<'a> Differ<'a> {
    pub fn new(rules: &'a CompareRules, ids: &'a dyn IdLookup) -> Differ<'a> {
        Differ {
            rules,
            ids,
            differences: Vec::new(),
            truncated: 0,
            found: 0,
            trial: false,
            groups: HashSet::new(),
            patch: Vec::new(),
            unmapped: Vec::new(),
            item: None,
            want_patch: false,
        }
    }

    /// Also builds the RFC 6902 patch.
    pub fn with_patch(mut self) -> Differ<'a> {
        self.want_patch = true;
        self
    }

    /// Compares two normalized documents from their roots.
    pub fn run(&mut self, primary: &Value, shadow: &Value) {
        let mut path = Vec::new();
        self.diff(primary, shadow, &self.rules.root(), &mut path);
    }

    fn found(&mut self) -> usize {
        self.found
    }

    fn record(&mut self, path: &[Segment<'_>], kind: Kind, primary: Option<&Value>, shadow: Option<&Value>) {
        self.found += 1;
        if self.trial {
            return;
        }
        let group = (kind, pattern(path));
        let new_group = !self.groups.contains(&group);
        let keep = self.differences.len() < MAX_DIFFERENCES || (new_group && self.groups.len() < MAX_GROUPS);
        if !keep {
            self.truncated += 1;
            return;
        }
        if new_group {
            self.groups.insert(group);
        }
        self.differences.push(RawDifference {
            path: path.iter().map(Segment::to_owned_segment).collect(),
            kind,
            primary: primary.map(display),
            shadow: shadow.map(display),
            item: self.item.clone(),
        });
    }

    fn patch_op(&mut self, op: &str, path: &[Segment<'_>], value: Option<&Value>) {
        if !self.want_patch {
            return;
        }
        let mut entry = Map::new();
        entry.insert("op".into(), Value::from(op));
        entry.insert("path".into(), Value::from(pointer(path)));
        if let Some(value) = value {
            entry.insert("value".into(), value.clone());
        }
        self.patch.push(Value::Object(entry));
    }

    fn diff<'v>(&mut self, primary: &'v Value, shadow: &'v Value, cursor: &Cursor, path: &mut Vec<Segment<'v>>) {
        if primary == shadow {
            return;
        }
        if let Some(kind) = self.rules.id_kind(cursor) {
            if let (Some(p), Some(s)) = (scalar_text(primary), scalar_text(shadow)) {
                self.diff_id(kind, &p, &s, primary, shadow, path);
                return;
            }
        }
        match (primary, shadow) {
            (Value::Object(p), Value::Object(s)) => self.diff_objects(p, s, cursor, path),
            (Value::Array(p), Value::Array(s)) => {
                let unordered = self.rules.at(cursor).find_map(|rule| match rule {
                    Rule::Unordered(key) => Some(key.clone()),
                    _ => None,
                });
                match unordered {
                    Some(key) => self.diff_unordered(p, s, &key, cursor, path),
                    None => self.diff_ordered(p, s, cursor, path),
                }
            }
            (Value::Number(p), Value::Number(s)) => self.diff_numbers(p, s, primary, shadow, cursor, path),
            (Value::String(p), Value::String(s)) => {
                if !self.within_time_tolerance(p, s, cursor) {
                    self.changed(Kind::ValueChanged, primary, shadow, path);
                }
            }
            (Value::Null, _) | (_, Value::Null) => self.changed(Kind::ValueChanged, primary, shadow, path),
            (Value::Bool(_), Value::Bool(_)) => self.changed(Kind::ValueChanged, primary, shadow, path),
            _ => self.changed(Kind::TypeChanged, primary, shadow, path),
        }
    }

    fn changed(&mut self, kind: Kind, primary: &Value, shadow: &Value, path: &[Segment<'_>]) {
        self.record(path, kind, Some(primary), Some(shadow));
        self.patch_op("replace", path, Some(primary));
    }

    fn diff_id(&mut self, kind: &str, p: &str, s: &str, primary: &Value, shadow: &Value, path: &[Segment<'_>]) {
        match self.ids.shadow_id(kind, p) {
            Some(mapped) if mapped == self.ids.canonical(s) => {}
            Some(_) => self.changed(Kind::ValueChanged, primary, shadow, path),
            // Same text on both sides: the ID is shared, nothing to translate.
            None if self.ids.canonical(p) == self.ids.canonical(s) => {}
            None => {
                let unmapped = UnmappedId {
                    kind: kind.to_string(),
                    primary_id: p.to_string(),
                };
                if !self.unmapped.contains(&unmapped) {
                    self.unmapped.push(unmapped);
                }
            }
        }
    }

    /// Whether two values compare equal under the rules at `cursor` (a
    /// trial diff whose findings are taken back).
    fn agree<'v>(
        &mut self,
        primary: &'v Value,
        shadow: &'v Value,
        cursor: &Cursor,
        path: &mut Vec<Segment<'v>>,
    ) -> bool {
        let marks = (self.found, self.patch.len(), self.unmapped.len());
        let outer_trial = std::mem::replace(&mut self.trial, true);
        self.diff(primary, shadow, cursor, path);
        self.trial = outer_trial;
        let agreed = self.found == marks.0;
        self.found = marks.0;
        self.patch.truncate(marks.1);
        self.unmapped.truncate(marks.2);
        agreed
    }

    fn null_may_be_missing(&self, cursor: &Cursor) -> bool {
        self.rules.null_equals_missing_everywhere || self.rules.has(cursor, |r| matches!(r, Rule::NullEqualsMissing))
    }

    fn diff_objects<'v>(
        &mut self,
        p: &'v Map<String, Value>,
        s: &'v Map<String, Value>,
        cursor: &Cursor,
        path: &mut Vec<Segment<'v>>,
    ) {
        // A key only the primary has and a key only the shadow has, spelled
        // alike (case, '_' and '-' aside) and holding the same value, are one
        // renamed field, not a missing and an extra one.
        let mut renamed: Vec<&str> = Vec::new();
        for (key, p_value) in p {
            let child = self.rules.step(cursor, key);
            path.push(Segment::Key(Cow::Borrowed(key)));
            match s.get(key) {
                Some(s_value) => self.diff(p_value, s_value, &child, path),
                None if p_value.is_null() && self.null_may_be_missing(&child) => {}
                None => {
                    let twin = s
                        .iter()
                        .filter(|(s_key, _)| {
                            !p.contains_key(*s_key) && !renamed.contains(&s_key.as_str()) && spelled_alike(key, s_key)
                        })
                        .find(|(_, s_value)| self.agree(p_value, s_value, &child, path));
                    match twin {
                        Some((s_key, _)) => {
                            renamed.push(s_key);
                            self.record(
                                path,
                                Kind::Renamed,
                                Some(&Value::from(key.as_str())),
                                Some(&Value::from(s_key.as_str())),
                            );
                        }
                        None => self.record(path, Kind::MissingInShadow, Some(p_value), None),
                    }
                    self.patch_op("add", path, Some(p_value));
                }
            }
            path.pop();
        }
        for (key, s_value) in s {
            if p.contains_key(key) {
                continue;
            }
            if renamed.contains(&key.as_str()) {
                path.push(Segment::Key(Cow::Borrowed(key)));
                self.patch_op("remove", path, None);
                path.pop();
                continue;
            }
            path.push(Segment::Key(Cow::Borrowed(key)));
            let child = self.rules.step(cursor, key);
            let graphql_errors = self.rules.graphql && path.len() == 1 && key == "errors";
            let tolerated = (self.rules.allow_extra_fields && !graphql_errors)
                || (s_value.is_null() && self.null_may_be_missing(&child));
            if !tolerated {
                self.record(path, Kind::ExtraInShadow, None, Some(s_value));
                self.patch_op("remove", path, None);
            }
            path.pop();
        }
    }
}

/// A scalar's text: strings as themselves, numbers as written.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Compact JSON text; object keys are sorted, so equal values give equal text.
/// Whether two keys name the same field, case and `_`/`-` separators aside.
fn spelled_alike(a: &str, b: &str) -> bool {
    let letters = |key: &str| -> String {
        key.chars()
            .filter(|c| !matches!(c, '_' | '-'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    a != b && letters(a) == letters(b)
}

pub fn canonical(value: &Value) -> String {
    value.to_string()
}

fn display(value: &Value) -> String {
    truncate(&canonical(value))
}

pub fn truncate(text: &str) -> String {
    if text.len() <= DISPLAY_LIMIT {
        return text.to_string();
    }
    let mut end = DISPLAY_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The JSON Pointer of a concrete path.
pub fn pointer(path: &[Segment<'_>]) -> String {
    render(path, |index, out| out.push_str(&index.to_string()))
}

/// The path with array positions replaced by `*`: the same field of any
/// item is the same place, for grouping.
pub fn pattern(path: &[Segment<'_>]) -> String {
    render(path, |_, out| out.push('*'))
}

fn render(path: &[Segment<'_>], index: impl Fn(usize, &mut String)) -> String {
    let mut out = String::new();
    for segment in path {
        out.push('/');
        match segment {
            Segment::Key(key) => out.push_str(&escape(key)),
            Segment::Index(position) => index(*position, &mut out),
        }
    }
    out
}

/// The unescaped segments of a path, for rule lookups.
pub fn segments_text(path: &[Segment<'_>]) -> Vec<String> {
    path.iter()
        .map(|segment| match segment {
            Segment::Key(key) => key.to_string(),
            Segment::Index(index) => index.to_string(),
        })
        .collect()
}

fn structural_hash(value: &Value) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    hash_value(value, &mut hasher);
    hasher.finish()
}

fn hash_value(value: &Value, hasher: &mut impl Hasher) {
    match value {
        Value::Null => 0u8.hash(hasher),
        Value::Bool(b) => (1u8, b).hash(hasher),
        Value::Number(n) => (2u8, n.to_string()).hash(hasher),
        Value::String(s) => (3u8, s).hash(hasher),
        Value::Array(items) => {
            (4u8, items.len()).hash(hasher);
            for item in items {
                hash_value(item, hasher);
            }
        }
        Value::Object(map) => {
            (5u8, map.len()).hash(hasher);
            for (key, item) in map {
                key.hash(hasher);
                hash_value(item, hasher);
            }
        }
    }
}
