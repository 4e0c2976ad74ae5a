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
use crate::compare::rules::ItemKey;
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
        self.record_order(&p_keys, &s_keys, &shadow_order, path);
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

fn item_label(key: &ItemKey, value: Option<&str>, index: usize) -> String {
    match (key, value) {
        (ItemKey::Field(segments), Some(value)) => format!("{}={value}", segments.join("/")),
        (ItemKey::Whole, Some(value)) => truncate(value),
        (_, None) => format!("#{index} (no key)"),
    }
}
