//! JSON Pointer patterns (RFC 6901) with `*` for one segment and `**` for
//! any depth, compiled into a small automaton that the diff walks alongside
//! the document, so looking up the rules of a node costs a step, not a scan.
//!
//! Must never: allocate per document node when no pattern can match below
//! it (a dead cursor stays empty).

use std::fmt;

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternSegment {
    /// An object key or array index, unescaped (`~1` → `/`, `~0` → `~`).
    Key(String),
    /// `*`: any one segment.
    Any,
    /// `**`: any number of segments, including none.
    AnyDepth,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    #[error("\"{0}\" is not a JSON Pointer: it must be empty or start with '/'")]
    NotAbsolute(String),
    #[error("\"{0}\": '~' must be followed by 0 or 1 (RFC 6901)")]
    BadEscape(String),
}

/// A parsed pattern such as `/tasks/*/dueDate` or `/**/password`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    segments: Vec<PatternSegment>,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, PointerError> {
        if text.is_empty() {
            return Ok(Pattern {
                text: String::new(),
                segments: Vec::new(),
            });
        }
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| PointerError::NotAbsolute(text.to_string()))?;
        let mut segments = Vec::new();
        for raw in rest.split('/') {
            segments.push(match raw {
                "*" => PatternSegment::Any,
                "**" => PatternSegment::AnyDepth,
                _ => PatternSegment::Key(unescape(raw).ok_or_else(|| PointerError::BadEscape(text.to_string()))?),
            });
        }
        Ok(Pattern {
            text: text.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn segments(&self) -> &[PatternSegment] {
        &self.segments
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Decodes one RFC 6901 reference token; `None` on a bad `~` escape.
pub fn unescape(token: &str) -> Option<String> {
    if !token.contains('~') {
        return Some(token.to_string());
    }
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Encodes a key as an RFC 6901 reference token.
pub fn escape(key: &str) -> String {
    if key.contains(['~', '/']) {
        key.replace('~', "~0").replace('/', "~1")
    } else {
        key.to_string()
    }
}

/// Where a walk stands: the (pattern, position) pairs still alive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    states: Vec<(u32, u32)>,
}

impl Cursor {
    /// No pattern can match at or below this node.
    pub fn is_dead(&self) -> bool {
        self.states.is_empty()
    }
}

/// A set of patterns, each carrying a value (a rule).
#[derive(Debug, Clone)]
pub struct PatternSet<T> {
    entries: Vec<(Pattern, T)>,
}

impl<T> Default for PatternSet<T> {
    fn default() -> Self {
        PatternSet { entries: Vec::new() }
    }
}

impl<T> PatternSet<T> {
    pub fn push(&mut self, pattern: Pattern, value: T) {
        self.entries.push((pattern, value));
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &(Pattern, T)> {
        self.entries.iter()
    }

    /// The cursor at the document root.
    pub fn root(&self) -> Cursor {
        let mut cursor = Cursor::default();
        for index in 0..self.entries.len() {
            self.add_state(&mut cursor, index as u32, 0);
        }
        cursor
    }

    /// Adds a state and, where it stands on `**`, the state after it (`**` may match nothing).
    fn add_state(&self, cursor: &mut Cursor, pattern: u32, mut position: u32) {
        let segments = self.entries[pattern as usize].0.segments();
        loop {
            if !cursor.states.contains(&(pattern, position)) {
                cursor.states.push((pattern, position));
            }
            match segments.get(position as usize) {
                Some(PatternSegment::AnyDepth) => position += 1,
                _ => return,
            }
        }
    }

    /// The cursor one segment down (an object key, or an array index as text).
    pub fn step(&self, cursor: &Cursor, segment: &str) -> Cursor {
        let mut next = Cursor::default();
        for &(pattern, position) in &cursor.states {
            let segments = self.entries[pattern as usize].0.segments();
            match segments.get(position as usize) {
                Some(PatternSegment::Key(key)) if key == segment => self.add_state(&mut next, pattern, position + 1),
                Some(PatternSegment::Any) => self.add_state(&mut next, pattern, position + 1),
                Some(PatternSegment::AnyDepth) => self.add_state(&mut next, pattern, position),
                _ => {}
            }
        }
        next
    }

    /// The values of the patterns that match exactly at this node.
    pub fn matches<'s: 'c, 'c>(&'s self, cursor: &'c Cursor) -> impl Iterator<Item = &'s T> + 'c {
        cursor.states.iter().filter_map(move |&(pattern, position)| {
            let (pattern, value) = &self.entries[pattern as usize];
            (position as usize == pattern.segments().len()).then_some(value)
        })
    }

    /// Whether `path` (a list of unescaped segments) matches any pattern; returns the first value.
    pub fn lookup<'a, S: AsRef<str>>(&'a self, path: &[S]) -> Option<&'a T> {
        let mut cursor = self.root();
        for segment in path {
            cursor = self.step(&cursor, segment.as_ref());
            if cursor.is_dead() {
                return None;
            }
        }
        let found = self.matches(&cursor).next();
        found
    }
}

/// Calls `found` for every node of `value` that a pattern of `set` matches,
/// in document order (object keys sorted, array items by index).
pub fn for_each_match<'v, T>(
    set: &PatternSet<T>,
    value: &'v serde_json::Value,
    found: &mut dyn FnMut(&T, &'v serde_json::Value),
) {
    walk(set, &set.root(), value, found);
}

fn walk<'v, T>(
    set: &PatternSet<T>,
    cursor: &Cursor,
    value: &'v serde_json::Value,
    found: &mut dyn FnMut(&T, &'v serde_json::Value),
) {
    if cursor.is_dead() {
        return;
    }
    for matched in set.matches(cursor) {
        found(matched, value);
    }
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                walk(set, &set.step(cursor, key), child, found);
            }
        }
        serde_json::Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                walk(set, &set.step(cursor, &index.to_string()), child, found);
            }
        }
        _ => {}
    }
}

/// Like [`for_each_match`], with each matched node handed out for change.
pub fn for_each_match_mut<T>(
    set: &PatternSet<T>,
    value: &mut serde_json::Value,
    found: &mut dyn FnMut(&T, &mut serde_json::Value),
) {
    walk_mut(set, &set.root(), value, found);
}

fn walk_mut<T>(
    set: &PatternSet<T>,
    cursor: &Cursor,
    value: &mut serde_json::Value,
    found: &mut dyn FnMut(&T, &mut serde_json::Value),
) {
    if cursor.is_dead() {
        return;
    }
    for matched in set.matches(cursor) {
        found(matched, value);
    }
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                walk_mut(set, &set.step(cursor, key), child, found);
            }
        }
        serde_json::Value::Array(items) => {
            for (index, child) in items.iter_mut().enumerate() {
                walk_mut(set, &set.step(cursor, &index.to_string()), child, found);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(patterns: &[&str]) -> PatternSet<String> {
        let mut set = PatternSet::default();
        for p in patterns {
            set.push(Pattern::parse(p).unwrap(), p.to_string());
        }
        set
    }

    #[test]
    fn patterns_match_like_json_pointers_with_wildcards() {
        let cases: &[(&str, &[&str], bool)] = &[
            ("", &[], true),
            ("", &["a"], false),
            ("/tasks/*/dueDate", &["tasks", "3", "dueDate"], true),
            ("/tasks/*/dueDate", &["tasks", "dueDate"], false),
            ("/tasks/*/dueDate", &["tasks", "3", "x", "dueDate"], false),
            ("/**/password", &["password"], true),
            ("/**/password", &["user", "auth", "password"], true),
            ("/**/password", &["user", "password", "x"], false),
            ("/a/**", &["a"], true),
            ("/a/**", &["a", "b", "c"], true),
            ("/a/**/z", &["a", "z"], true),
            ("/a/**/z", &["a", "b", "z", "y", "z"], true),
            ("/a~1b/c~0d", &["a/b", "c~d"], true),
            ("/0", &["0"], true),
        ];
        for (pattern, path, expected) in cases {
            assert_eq!(
                set(&[pattern]).lookup(path).is_some(),
                *expected,
                "{pattern} vs {path:?}"
            );
        }
    }

    #[test]
    fn bad_pointers_are_rejected() {
        assert_eq!(
            Pattern::parse("tasks").unwrap_err(),
            PointerError::NotAbsolute("tasks".into())
        );
        assert_eq!(
            Pattern::parse("/a~2").unwrap_err(),
            PointerError::BadEscape("/a~2".into())
        );
    }

    #[test]
    fn a_cursor_dies_where_nothing_can_match() {
        let set = set(&["/tasks/*/id"]);
        let root = set.root();
        assert!(set.step(&root, "other").is_dead());
        assert!(!set.step(&root, "tasks").is_dead());
    }

    #[test]
    fn escape_round_trips() {
        for key in ["plain", "a/b", "~x", "~1"] {
            assert_eq!(unescape(&escape(key)).unwrap(), key);
        }
    }

    #[test]
    fn matches_are_visited_in_document_order_and_can_be_changed() {
        let set = set(&["/tasks/*/id", "/owner"]);
        let mut doc = serde_json::json!({"owner": "o", "tasks": [{"id": "a"}, {"id": "b"}, {"x": 1}]});
        let mut seen = Vec::new();
        for_each_match(&set, &doc, &mut |pattern, value| {
            seen.push(format!("{pattern}={value}"))
        });
        assert_eq!(seen, ["/owner=\"o\"", "/tasks/*/id=\"a\"", "/tasks/*/id=\"b\""]);
        for_each_match_mut(&set, &mut doc, &mut |_, value| *value = serde_json::json!("z"));
        assert_eq!(
            doc,
            serde_json::json!({"owner": "z", "tasks": [{"id": "z"}, {"id": "z"}, {"x": 1}]})
        );
    }
}
