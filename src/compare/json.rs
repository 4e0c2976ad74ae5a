//! The structural JSON diff: normalization (only what rules ask for), then a
//! walk of both documents producing differences with JSON Pointer paths and
//! an RFC 6902 patch that turns the shadow's normalized document into the
//! primary's.
//!
//! Ordered arrays are aligned (Myers, over structural hashes of the items)
//! so a dropped record shows as one missing item, not a cascade of changed
//! values. Unordered arrays are matched by a key.
//!
//! Must never: treat a difference as equal unless a rule says so; panic on
//! any document; grow its output past [`MAX_DIFFERENCES`].

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use serde_json::{Map, Number, Value};
use similar::{Algorithm, DiffOp};

use super::pointer::{escape, Cursor};
use super::rules::{CompareRules, ItemKey, Rule};
use super::{IdLookup, Kind};

/// Differences kept per exchange; past it they are counted, not kept.
pub const MAX_DIFFERENCES: usize = 500;
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
    /// Differences found past [`MAX_DIFFERENCES`].
    pub truncated: usize,
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
        self.differences.len() + self.truncated
    }

    fn record(&mut self, path: &[Segment<'_>], kind: Kind, primary: Option<&Value>, shadow: Option<&Value>) {
        if self.differences.len() >= MAX_DIFFERENCES {
            self.truncated += 1;
            return;
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
        let marks = (
            self.differences.len(),
            self.truncated,
            self.patch.len(),
            self.unmapped.len(),
        );
        self.diff(primary, shadow, cursor, path);
        let agreed = self.differences.len() == marks.0 && self.truncated == marks.1;
        self.differences.truncate(marks.0);
        self.truncated = marks.1;
        self.patch.truncate(marks.2);
        self.unmapped.truncate(marks.3);
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
            let tolerated = self.rules.allow_extra_fields || (s_value.is_null() && self.null_may_be_missing(&child));
            if !tolerated {
                self.record(path, Kind::ExtraInShadow, None, Some(s_value));
                self.patch_op("remove", path, None);
            }
            path.pop();
        }
    }

    fn diff_ordered<'v>(&mut self, p: &'v [Value], s: &'v [Value], cursor: &Cursor, path: &mut Vec<Segment<'v>>) {
        let patch_mark = self.patch.len();
        if p.len().max(s.len()) > ALIGN_LIMIT {
            // Too long to align: compare by index and summarize the length.
            for (index, (pv, sv)) in p.iter().zip(s).enumerate() {
                path.push(Segment::Index(index));
                self.diff(pv, sv, &self.rules.step(cursor, &index.to_string()), path);
                path.pop();
            }
            if p.len() != s.len() {
                self.record(
                    path,
                    Kind::ArrayLength,
                    Some(&Value::from(format!("{} items", p.len()))),
                    Some(&Value::from(format!("{} items", s.len()))),
                );
                self.replace_array(patch_mark, path, p);
            }
            return;
        }
        let p_hashes: Vec<u64> = p.iter().map(structural_hash).collect();
        let s_hashes: Vec<u64> = s.iter().map(structural_hash).collect();
        let ops = similar::capture_diff_slices(Algorithm::Myers, &p_hashes, &s_hashes);
        let mut in_place = true;
        for op in ops {
            match op {
                DiffOp::Equal {
                    old_index,
                    new_index,
                    len,
                } => {
                    in_place &= old_index == new_index;
                    // Equal hashes; check the values so a collision cannot hide a difference.
                    for offset in 0..len {
                        self.diff_item(p, s, old_index + offset, new_index + offset, cursor, path);
                    }
                }
                DiffOp::Delete { old_index, old_len, .. } => {
                    in_place = false;
                    self.unmatched_items(p, old_index..old_index + old_len, Kind::MissingInShadow, path);
                }
                DiffOp::Insert { new_index, new_len, .. } => {
                    in_place = false;
                    self.unmatched_items(s, new_index..new_index + new_len, Kind::ExtraInShadow, path);
                }
                DiffOp::Replace {
                    old_index,
                    old_len,
                    new_index,
                    new_len,
                } => {
                    in_place &= old_index == new_index && old_len == new_len;
                    let paired = old_len.min(new_len);
                    for offset in 0..paired {
                        self.diff_item(p, s, old_index + offset, new_index + offset, cursor, path);
                    }
                    self.unmatched_items(p, old_index + paired..old_index + old_len, Kind::MissingInShadow, path);
                    self.unmatched_items(s, new_index + paired..new_index + new_len, Kind::ExtraInShadow, path);
                }
            }
        }
        if !in_place {
            // Items moved: element-wise patch paths would point at the wrong items.
            self.replace_array(patch_mark, path, p);
        }
    }

    /// Replaces the patch operations inside an array (from `mark` on) with
    /// one `replace` of the whole array.
    fn replace_array(&mut self, mark: usize, path: &[Segment<'_>], primary: &[Value]) {
        if self.want_patch {
            self.patch.truncate(mark);
            self.patch_op("replace", path, Some(&Value::Array(primary.to_vec())));
        }
    }

    /// Records items only one side has: `MissingInShadow` items come from
    /// the primary's array, `ExtraInShadow` items from the shadow's.
    fn unmatched_items<'v>(
        &mut self,
        items: &'v [Value],
        range: std::ops::Range<usize>,
        kind: Kind,
        path: &mut Vec<Segment<'v>>,
    ) {
        for (index, item) in items.iter().enumerate().skip(range.start).take(range.len()) {
            path.push(Segment::Index(index));
            match kind {
                Kind::MissingInShadow => self.record(path, kind, Some(item), None),
                _ => self.record(path, kind, None, Some(item)),
            }
            path.pop();
        }
    }

    fn diff_item<'v>(
        &mut self,
        p: &'v [Value],
        s: &'v [Value],
        pi: usize,
        si: usize,
        cursor: &Cursor,
        path: &mut Vec<Segment<'v>>,
    ) {
        path.push(Segment::Index(pi));
        self.diff(&p[pi], &s[si], &self.rules.step(cursor, &pi.to_string()), path);
        path.pop();
    }

    fn diff_unordered<'v>(
        &mut self,
        p: &'v [Value],
        s: &'v [Value],
        key: &ItemKey,
        cursor: &Cursor,
        path: &mut Vec<Segment<'v>>,
    ) {
        let patch_mark = self.patch.len();
        let found_before = self.found();
        let p_keys: Vec<Option<String>> = p
            .iter()
            .enumerate()
            .map(|(i, item)| self.item_key(item, key, &self.rules.step(cursor, &i.to_string()), true))
            .collect();
        let s_keys: Vec<Option<String>> = s
            .iter()
            .enumerate()
            .map(|(i, item)| self.item_key(item, key, &self.rules.step(cursor, &i.to_string()), false))
            .collect();
        let mut by_key: HashMap<&str, VecDeque<usize>> = HashMap::new();
        let mut keyless: VecDeque<usize> = VecDeque::new();
        for (index, k) in s_keys.iter().enumerate() {
            match k {
                Some(k) => by_key.entry(k.as_str()).or_default().push_back(index),
                None => keyless.push_back(index),
            }
        }
        let mut matched_shadow = vec![false; s.len()];
        let mut shadow_order = Vec::with_capacity(p.len());
        let outer_item = self.item.take();
        for (pi, k) in p_keys.iter().enumerate() {
            let partner = match k {
                Some(k) => by_key.get_mut(k.as_str()).and_then(VecDeque::pop_front),
                None => keyless.pop_front(),
            };
            self.item = Some(item_label(key, k.as_deref(), pi));
            path.push(Segment::Index(pi));
            match partner {
                Some(si) => {
                    matched_shadow[si] = true;
                    shadow_order.push(si);
                    self.diff(&p[pi], &s[si], &self.rules.step(cursor, &pi.to_string()), path);
                }
                None => self.record(path, Kind::MissingInShadow, Some(&p[pi]), None),
            }
            path.pop();
        }
        for (si, matched) in matched_shadow.iter().enumerate() {
            if !matched {
                self.item = Some(item_label(key, s_keys[si].as_deref(), si));
                path.push(Segment::Index(si));
                self.record(path, Kind::ExtraInShadow, None, Some(&s[si]));
                path.pop();
            }
        }
        self.item = outer_item;
        if shadow_order.windows(2).any(|pair| pair[0] > pair[1]) {
            let shown = |keys: &[Option<String>], order: &mut dyn Iterator<Item = usize>| {
                Value::from(
                    order
                        .map(|i| keys[i].clone().unwrap_or_else(|| format!("#{i}")))
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            };
            let primary_order = shown(&p_keys, &mut (0..p.len()));
            let mut sorted = shadow_order.clone();
            sorted.sort_unstable();
            let shadow_keys_in_shadow_order = shown(&s_keys, &mut sorted.into_iter());
            self.record(
                path,
                Kind::OrderOnly,
                Some(&primary_order),
                Some(&shadow_keys_in_shadow_order),
            );
        }
        if self.found() != found_before {
            self.replace_array(patch_mark, path, p);
        } else {
            self.patch.truncate(patch_mark);
        }
    }

    /// An item's key, as text; the primary's key goes through the ID map when
    /// the key's path is an ID.
    fn item_key(&self, item: &Value, key: &ItemKey, item_cursor: &Cursor, primary_side: bool) -> Option<String> {
        match key {
            ItemKey::Whole => Some(canonical(item)),
            ItemKey::Field(segments) => {
                let mut value = item;
                let mut cursor = item_cursor.clone();
                for segment in segments {
                    value = match value {
                        Value::Object(map) => map.get(segment)?,
                        Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
                        _ => return None,
                    };
                    cursor = self.rules.step(&cursor, segment);
                }
                let text = scalar_text(value).unwrap_or_else(|| canonical(value));
                if let Some(kind) = self.rules.id_kind(&cursor) {
                    if primary_side {
                        if let Some(mapped) = self.ids.shadow_id(kind, &text) {
                            return Some(mapped);
                        }
                    }
                    return Some(self.ids.canonical(&text).into_owned());
                }
                Some(text)
            }
        }
    }

    fn diff_numbers(
        &mut self,
        p: &Number,
        s: &Number,
        primary: &Value,
        shadow: &Value,
        cursor: &Cursor,
        path: &[Segment<'_>],
    ) {
        let tolerance = self.rules.at(cursor).find_map(|rule| match rule {
            Rule::NumberTolerance(tolerance) => Some(*tolerance),
            _ => None,
        });
        if let (Some(tolerance), Some(a), Some(b)) = (tolerance, p.as_f64(), s.as_f64()) {
            if tolerance.accepts(a, b) {
                return;
            }
        }
        let kind = match (canonical_decimal(&p.to_string()), canonical_decimal(&s.to_string())) {
            (Some(a), Some(b)) if a == b => Kind::NumberFormat,
            _ => Kind::ValueChanged,
        };
        self.changed(kind, primary, shadow, path);
    }

    fn within_time_tolerance(&self, p: &str, s: &str, cursor: &Cursor) -> bool {
        let Some(tolerance) = self.rules.at(cursor).find_map(|rule| match rule {
            Rule::TimeTolerance(duration) => Some(*duration),
            _ => None,
        }) else {
            return false;
        };
        let midnight = self.rules.dates_as_midnight_utc;
        match (instant_nanos(p, midnight), instant_nanos(s, midnight)) {
            (Some(a), Some(b)) => a.abs_diff(b) <= tolerance.as_nanos(),
            _ => false,
        }
    }
}

fn item_label(key: &ItemKey, value: Option<&str>, index: usize) -> String {
    match (key, value) {
        (ItemKey::Field(segments), Some(value)) => format!("{}={value}", segments.join("/")),
        (ItemKey::Whole, Some(value)) => truncate(value),
        (_, None) => format!("#{index} (no key)"),
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

/// A JSON number's exact value as (negative, significant digits, exponent),
/// so `1`, `1.0` and `10e-1` are recognized as the same number written
/// differently. `None` if the text is not a JSON number.
pub fn canonical_decimal(text: &str) -> Option<(bool, String, i64)> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], rest[at + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (mantissa, ""),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = format!("{int}{frac}").trim_start_matches('0').to_string();
    let mut exponent = exponent.checked_sub(i64::try_from(frac.len()).ok()?)?;
    while digits.ends_with('0') {
        digits.pop();
        exponent = exponent.checked_add(1)?;
    }
    if digits.is_empty() {
        return Some((false, String::new(), 0));
    }
    Some((negative, digits, exponent))
}

/// Parses an RFC 3339 date-time (any offset, any precision) as nanoseconds
/// since the epoch; a date-only value counts as midnight UTC when allowed.
pub fn instant_nanos(text: &str, dates_as_midnight_utc: bool) -> Option<i128> {
    if let Ok(moment) = chrono::DateTime::parse_from_rfc3339(text) {
        let seconds = i128::from(moment.timestamp());
        return Some(seconds * 1_000_000_000 + i128::from(moment.timestamp_subsec_nanos()));
    }
    if dates_as_midnight_utc && text.len() == 10 {
        let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
        let seconds = i128::from(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp());
        return Some(seconds * 1_000_000_000);
    }
    None
}
