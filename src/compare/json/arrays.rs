//! Arrays in the walk: ordered arrays aligned (Myers, over structural
//! hashes of the items) so a dropped record is one missing item, unordered
//! arrays matched by a key.
//!
//! Must never: report an order difference where the rules say order does
//! not matter, or a cascade of changes for one missing item.

use std::collections::{HashMap, VecDeque};

use serde_json::Value;
use similar::{Algorithm, DiffOp};

use crate::compare::pointer::Cursor;
use crate::compare::rules::{ItemKey, Rule};
use crate::compare::Kind;

use super::*;

impl<'a> Differ<'a> {
    pub(super) fn diff_ordered<'v>(
        &mut self,
        p: &'v [Value],
        s: &'v [Value],
        cursor: &Cursor,
        path: &mut Vec<Segment<'v>>,
    ) {
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

    pub(super) fn diff_unordered<'v>(
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
        let mut matched = Vec::with_capacity(p.len());
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
                    matched.push((pi, si));
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
        let promised = self.rules.at(cursor).find_map(|rule| match rule {
            Rule::OrderBy(fields) => Some(fields),
            _ => None,
        });
        match promised {
            Some(fields) => {
                let keys = MatchedKeys {
                    key,
                    primary: &p_keys,
                    shadow: &s_keys,
                };
                self.record_broken_sort(p, s, &keys, &matched, fields, path);
            }
            None => {
                let shadow_order: Vec<usize> = matched.iter().map(|&(_, si)| si).collect();
                self.record_order(&p_keys, &s_keys, &shadow_order, path);
            }
        }
        if self.found() != found_before {
            self.replace_array(patch_mark, path, p);
        } else {
            self.patch.truncate(patch_mark);
        }
    }

    /// Records `order_only` when the matched shadow items, taken in the
    /// primary's order, are not in the shadow's own order.
    fn record_order<'v>(
        &mut self,
        p_keys: &[Option<String>],
        s_keys: &[Option<String>],
        shadow_order: &[usize],
        path: &mut Vec<Segment<'v>>,
    ) {
        if !shadow_order.windows(2).any(|pair| pair[0] > pair[1]) {
            return;
        }
        let shown = |keys: &[Option<String>], order: &mut dyn Iterator<Item = usize>| {
            Value::from(
                order
                    .map(|i| keys[i].clone().unwrap_or_else(|| format!("#{i}")))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        };
        let primary_order = shown(p_keys, &mut (0..p_keys.len()));
        let mut sorted = shadow_order.to_vec();
        sorted.sort_unstable();
        let shadow_keys_in_shadow_order = shown(s_keys, &mut sorted.into_iter());
        self.record(
            path,
            Kind::OrderOnly,
            Some(&primary_order),
            Some(&shadow_keys_in_shadow_order),
        );
    }

    /// Records `order_only` when the shadow breaks the promised sort: an
    /// item the primary lists before another is listed after it, and the
    /// two are not tied (ties are neighbours in the primary's answer with
    /// equal sort values; they may come in any order). The example is the
    /// first pair out of order, with their sort values on each side.
    fn record_broken_sort<'v>(
        &mut self,
        p: &'v [Value],
        s: &'v [Value],
        keys: &MatchedKeys<'_>,
        matched: &[(usize, usize)],
        fields: &[Vec<String>],
        path: &mut Vec<Segment<'v>>,
    ) {
        // The item of the earlier tie groups furthest down the shadow's list,
        // and the same within the current group.
        let mut earlier: Option<(usize, usize)> = None;
        let mut current: Option<(usize, usize)> = None;
        let furthest = |a: Option<(usize, usize)>, b: Option<(usize, usize)>| match (a, b) {
            (Some(a), Some(b)) => Some(if b.1 > a.1 { b } else { a }),
            (a, b) => a.or(b),
        };
        for (index, &(pi, si)) in matched.iter().enumerate() {
            if index > 0 && sort_values(&p[pi], fields) != sort_values(&p[matched[index - 1].0], fields) {
                earlier = furthest(earlier, current.take());
            }
            if let Some((first_p, first_s)) = earlier.filter(|&(_, earlier_si)| earlier_si > si) {
                let shown = |item: &Value, label: String| format!("{label} ({})", sort_text(item, fields));
                let primary = format!(
                    "{} before {}",
                    shown(
                        &p[first_p],
                        item_label(keys.key, keys.primary[first_p].as_deref(), first_p)
                    ),
                    shown(&p[pi], item_label(keys.key, keys.primary[pi].as_deref(), pi)),
                );
                let shadow = format!(
                    "{} before {}",
                    shown(&s[si], item_label(keys.key, keys.shadow[si].as_deref(), si)),
                    shown(
                        &s[first_s],
                        item_label(keys.key, keys.shadow[first_s].as_deref(), first_s)
                    ),
                );
                self.record(
                    path,
                    Kind::OrderOnly,
                    Some(&Value::from(primary)),
                    Some(&Value::from(shadow)),
                );
                return;
            }
            current = furthest(current, Some((pi, si)));
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
}

/// The item keys of an unordered array's two sides, for labels.
struct MatchedKeys<'k> {
    key: &'k ItemKey,
    primary: &'k [Option<String>],
    shadow: &'k [Option<String>],
}

/// An item's values at the sort fields (null where it has none).
fn sort_values<'v>(item: &'v Value, fields: &[Vec<String>]) -> Vec<&'v Value> {
    fields
        .iter()
        .map(|field| {
            field
                .iter()
                .try_fold(item, |value, segment| value.get(segment.as_str()))
                .unwrap_or(&Value::Null)
        })
        .collect()
}

/// `/priority=1, /dueDate="2026-01-02"`: an item's sort values, for an example.
fn sort_text(item: &Value, fields: &[Vec<String>]) -> String {
    fields
        .iter()
        .zip(sort_values(item, fields))
        .map(|(field, value)| format!("/{}={value}", field.join("/")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn item_label(key: &ItemKey, value: Option<&str>, index: usize) -> String {
    match (key, value) {
        (ItemKey::Field(segments), Some(value)) => format!("{}={value}", segments.join("/")),
        (ItemKey::Whole, Some(value)) => truncate(value),
        (_, None) => format!("#{index} (no key)"),
    }
}
