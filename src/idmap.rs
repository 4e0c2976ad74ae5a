//! The ID map: which shadow ID stands for which primary ID, per kind of
//! entity. Pairs come from the data migration's mapping file (import) or
//! are learned from the two answers to one create (`learn_ids`); each ID is
//! paired at most once on each side. The map translates what the shadow is
//! sent (path parameters, query parameters, JSON body fields) and lets the
//! comparison see two different IDs as the same record.
//!
//! Must never: do I/O except through the store (the proxy persists learned
//! pairs with the exchange that taught them), pair one ID twice on either
//! side, or guess: an ID with no pair is forwarded unchanged and reported.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;

use serde_json::Value;

use crate::compare::pointer::{for_each_match, for_each_match_mut, Pattern, PatternSet};
use crate::compare::IdLookup;

/// How IDs are written before they are stored and looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Canonical {
    /// As they come.
    #[default]
    AsIs,
    /// UUIDs: the 32-hex and dashed forms are the same ID, kept dashed and lowercase.
    Uuid,
}

impl Canonical {
    /// The canonical form of an ID, or `None` when it is not valid in this form.
    pub fn apply<'a>(&self, id: &'a str) -> Option<Cow<'a, str>> {
        match self {
            Canonical::AsIs => (!id.is_empty()).then_some(Cow::Borrowed(id)),
            Canonical::Uuid => {
                if id.len() != 32 && id.len() != 36 {
                    return None;
                }
                let parsed = uuid::Uuid::try_parse(id).ok()?;
                let dashed = parsed.hyphenated().to_string();
                Some(if dashed == id {
                    Cow::Borrowed(id)
                } else {
                    Cow::Owned(dashed)
                })
            }
        }
    }
}

pub use crate::exchange::{IdPair, Side};

/// `[idmap]`: where ID pairs come from and how IDs are spelled.
#[derive(Debug, Clone, Default)]
pub struct IdMapConfig {
    /// Mapping files imported at startup (JSON or CSV), resolved against the config's folder.
    pub import: Vec<PathBuf>,
    pub canonical: Canonical,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdMapError {
    #[error("{kind} \"{id}\" is not a valid ID here (canonical form \"uuid\": 32 hex digits, or dashed)")]
    InvalidId { kind: String, id: String },
    #[error("{kind}: primary \"{primary_id}\" is already paired with shadow \"{existing}\", not \"{shadow_id}\"")]
    PrimaryTaken {
        kind: String,
        primary_id: String,
        shadow_id: String,
        existing: String,
    },
    #[error("{kind}: shadow \"{shadow_id}\" is already paired with primary \"{existing}\", not \"{primary_id}\"")]
    ShadowTaken {
        kind: String,
        primary_id: String,
        shadow_id: String,
        existing: String,
    },
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
}

#[derive(Debug, Default)]
struct Sides {
    forward: HashMap<String, String>,
    backward: HashMap<String, String>,
}

/// The pairs in memory, shared by every request.
#[derive(Debug)]
pub struct IdMap {
    canonical: Canonical,
    kinds: RwLock<HashMap<String, Sides>>,
    /// Bumped on every new pair, so a translation can wait for a create's pair.
    version: tokio::sync::watch::Sender<u64>,
}

impl IdMap {
    pub fn new(canonical: Canonical) -> IdMap {
        IdMap {
            canonical,
            kinds: RwLock::new(HashMap::new()),
            version: tokio::sync::watch::Sender::new(0),
        }
    }

    pub fn canonical(&self) -> Canonical {
        self.canonical
    }

    /// Adds a pair. `Ok(true)` if it is new, `Ok(false)` if it was already
    /// known; an error if either ID is invalid or already paired otherwise.
    pub fn insert(&self, pair: &IdPair) -> Result<bool, IdMapError> {
        let invalid = |id: &str| IdMapError::InvalidId {
            kind: pair.kind.clone(),
            id: id.to_string(),
        };
        let primary = self
            .canonical
            .apply(&pair.primary_id)
            .ok_or_else(|| invalid(&pair.primary_id))?;
        let shadow = self
            .canonical
            .apply(&pair.shadow_id)
            .ok_or_else(|| invalid(&pair.shadow_id))?;
        let mut kinds = self.kinds.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let sides = kinds.entry(pair.kind.clone()).or_default();
        match (sides.forward.get(primary.as_ref()), sides.backward.get(shadow.as_ref())) {
            (Some(existing), _) if existing == shadow.as_ref() => return Ok(false),
            (Some(existing), _) => {
                return Err(IdMapError::PrimaryTaken {
                    kind: pair.kind.clone(),
                    primary_id: primary.into_owned(),
                    shadow_id: shadow.into_owned(),
                    existing: existing.clone(),
                })
            }
            (None, Some(existing)) => {
                return Err(IdMapError::ShadowTaken {
                    kind: pair.kind.clone(),
                    primary_id: primary.into_owned(),
                    shadow_id: shadow.into_owned(),
                    existing: existing.clone(),
                })
            }
            (None, None) => {}
        }
        sides.forward.insert(primary.to_string(), shadow.to_string());
        sides.backward.insert(shadow.into_owned(), primary.into_owned());
        drop(kinds);
        self.version.send_modify(|version| *version += 1);
        Ok(true)
    }

    /// The primary's ID for a shadow ID, in canonical form.
    pub fn lookup_primary(&self, kind: &str, shadow_id: &str) -> Option<String> {
        let shadow = self.canonical.apply(shadow_id)?;
        let kinds = self.kinds.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        kinds.get(kind)?.backward.get(shadow.as_ref()).cloned()
    }

    /// An ID in the space of `side`: translated if it is the other side's,
    /// kept if it already is this side's, `Err(())` if the map knows it on neither.
    fn to_side(&self, side: Side, kind: &str, id: &str) -> Result<Option<String>, ()> {
        let (this, other) = match side {
            Side::Shadow => (self.lookup(kind, id), self.lookup_primary(kind, id)),
            Side::Primary => (self.lookup_primary(kind, id), self.lookup(kind, id)),
        };
        match (this, other) {
            (Some(mapped), _) => Ok(Some(mapped)),
            (None, Some(_)) => Ok(None),
            (None, None) => Err(()),
        }
    }

    /// The shadow's ID for a primary ID, in canonical form.
    pub fn lookup(&self, kind: &str, primary_id: &str) -> Option<String> {
        let primary = self.canonical.apply(primary_id)?;
        let kinds = self.kinds.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        kinds.get(kind)?.forward.get(primary.as_ref()).cloned()
    }

    /// Every primary ID of a kind, sorted.
    pub fn primary_ids_of(&self, kind: &str) -> Vec<String> {
        let kinds = self.kinds.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut ids: Vec<String> = kinds
            .get(kind)
            .map(|sides| sides.forward.keys().cloned().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// How many pairs each kind holds, sorted by kind.
    pub fn counts(&self) -> Vec<(String, usize)> {
        let kinds = self.kinds.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut counts: Vec<(String, usize)> = kinds.iter().map(|(k, s)| (k.clone(), s.forward.len())).collect();
        counts.sort();
        counts
    }

    /// A receiver that sees a change whenever a pair is added.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Adds what an import file holds; bad and conflicting rows are reported
    /// with their line and skipped, the rest is added.
    pub fn import(&self, parsed: ParsedImport) -> ImportReport {
        let mut report = ImportReport {
            problems: parsed.problems,
            ..ImportReport::default()
        };
        for row in parsed.rows {
            match self.insert(&row.pair) {
                Ok(true) => report.added.push(row.pair),
                Ok(false) => report.known += 1,
                Err(err) => report.problems.push(ImportProblem {
                    line: row.line,
                    message: err.to_string(),
                }),
            }
        }
        report.problems.sort_by_key(|problem| problem.line);
        report
    }
}

impl IdLookup for IdMap {
    fn shadow_id(&self, kind: &str, primary_id: &str) -> Option<String> {
        self.lookup(kind, primary_id)
    }

    fn canonical<'a>(&self, id: &'a str) -> Cow<'a, str> {
        self.canonical.apply(id).unwrap_or(Cow::Borrowed(id))
    }
}

/// One row of an import file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRow {
    /// 1-based line in the file (0 when it cannot be told).
    pub line: usize,
    pub pair: IdPair,
}

/// A row that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportProblem {
    pub line: usize,
    pub message: String,
}

/// What an import file holds, before it meets the map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedImport {
    pub rows: Vec<ImportRow>,
    pub problems: Vec<ImportProblem>,
}

/// What importing did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// New pairs, to be persisted.
    pub added: Vec<IdPair>,
    /// Rows the map already held.
    pub known: usize,
    pub problems: Vec<ImportProblem>,
}

/// The two import formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    /// `{"kind": {"primary-id": "shadow-id", ...}, ...}`
    Json,
    /// `kind,primary_id,shadow_id` per line, an optional header line of those names.
    Csv,
}

impl ImportFormat {
    /// By extension (`.json`, `.csv`), else by content (JSON starts with `{`).
    pub fn detect(path: &str, text: &str) -> ImportFormat {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".json") {
            ImportFormat::Json
        } else if lower.ends_with(".csv") {
            ImportFormat::Csv
        } else if text.trim_start().starts_with('{') {
            ImportFormat::Json
        } else {
            ImportFormat::Csv
        }
    }
}

/// Reads an import file. A file that is not valid JSON (or CSV) as a whole
/// is an error naming the line; rows that are well-formed but wrong
/// (an ID that is not a string, an empty ID) are problems, and the rest is kept.
pub fn parse_import(text: &str, format: ImportFormat) -> Result<ParsedImport, IdMapError> {
    match format {
        ImportFormat::Json => parse_json(text),
        ImportFormat::Csv => parse_csv(text),
    }
}

fn parse_json(text: &str) -> Result<ParsedImport, IdMapError> {
    let document: Value = serde_json::from_str(text).map_err(|err| IdMapError::Syntax {
        line: err.line(),
        column: err.column(),
        message: err.to_string(),
    })?;
    let Value::Object(kinds) = document else {
        return Err(IdMapError::Syntax {
            line: 1,
            column: 1,
            message: "expected an object of kinds: {\"kind\": {\"primary-id\": \"shadow-id\"}}".into(),
        });
    };
    let lines = LineFinder::new(text);
    let mut parsed = ParsedImport::default();
    for (kind, pairs) in kinds {
        let kind_line = lines.find(&kind, 0);
        let Value::Object(pairs) = pairs else {
            parsed.problems.push(ImportProblem {
                line: kind_line,
                message: format!("kind \"{kind}\": expected an object of \"primary-id\": \"shadow-id\" pairs"),
            });
            continue;
        };
        let kind_offset = lines.offset_of_line(kind_line);
        for (primary_id, shadow_id) in pairs {
            let line = lines.find(&primary_id, kind_offset);
            match shadow_id {
                Value::String(shadow_id) if !shadow_id.is_empty() && !primary_id.is_empty() => {
                    parsed.rows.push(ImportRow {
                        line,
                        pair: IdPair {
                            kind: kind.clone(),
                            primary_id,
                            shadow_id,
                        },
                    })
                }
                other => parsed.problems.push(ImportProblem {
                    line,
                    message: format!(
                        "{kind} \"{primary_id}\": expected a non-empty shadow ID string, got {}",
                        crate::compare::json::truncate(&crate::compare::json::canonical(&other))
                    ),
                }),
            }
        }
    }
    parsed.rows.sort_by_key(|row| row.line);
    Ok(parsed)
}

/// Finds the line of a JSON key in the file text (the parsed document has
/// no positions); 0 when the key is written with escapes and cannot be found.
struct LineFinder<'t> {
    text: &'t str,
    line_starts: Vec<usize>,
}

impl<'t> LineFinder<'t> {
    fn new(text: &'t str) -> LineFinder<'t> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(at, _)| at + 1));
        LineFinder { text, line_starts }
    }

    fn find(&self, key: &str, from: usize) -> usize {
        let needle = format!("\"{key}\"");
        match self.text.get(from..).and_then(|rest| rest.find(&needle)) {
            Some(at) => self.line_starts.partition_point(|&start| start <= from + at),
            None => 0,
        }
    }

    fn offset_of_line(&self, line: usize) -> usize {
        line.checked_sub(1)
            .and_then(|index| self.line_starts.get(index))
            .copied()
            .unwrap_or(0)
    }
}

fn parse_csv(text: &str) -> Result<ParsedImport, IdMapError> {
    let mut parsed = ParsedImport::default();
    // Line by line (an ID never holds a line break), so every row keeps its
    // real line number; the csv reader handles quoting within the line.
    for (index, raw_line) in text.lines().enumerate() {
        let line = index + 1;
        if raw_line.trim().is_empty() {
            continue;
        }
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(raw_line.as_bytes());
        let record = match reader.records().next() {
            Some(Ok(record)) => record,
            Some(Err(err)) => {
                return Err(IdMapError::Syntax {
                    line,
                    column: 0,
                    message: err.to_string(),
                })
            }
            None => continue,
        };
        let fields: Vec<&str> = record.iter().collect();
        if parsed.rows.is_empty() && parsed.problems.is_empty() && fields == ["kind", "primary_id", "shadow_id"] {
            continue;
        }
        match fields.as_slice() {
            [kind, primary_id, shadow_id] if !kind.is_empty() && !primary_id.is_empty() && !shadow_id.is_empty() => {
                parsed.rows.push(ImportRow {
                    line,
                    pair: IdPair {
                        kind: kind.to_string(),
                        primary_id: primary_id.to_string(),
                        shadow_id: shadow_id.to_string(),
                    },
                })
            }
            _ => parsed.problems.push(ImportProblem {
                line,
                message: format!(
                    "expected kind,primary_id,shadow_id (three non-empty fields), got {} field(s)",
                    fields.len()
                ),
            }),
        }
    }
    Ok(parsed)
}

/// `learn_ids`: the new ID at a pointer in each side's answer to one create.
#[derive(Debug, Clone)]
pub struct LearnRule {
    pub kind: String,
    pub primary: PatternSet<()>,
    pub shadow: PatternSet<()>,
    /// The pointers as configured, for messages.
    pub primary_text: String,
    pub shadow_text: String,
}

impl LearnRule {
    pub fn new(kind: &str, primary: &str, shadow: &str) -> Result<LearnRule, crate::compare::pointer::PointerError> {
        let set = |text: &str| -> Result<PatternSet<()>, _> {
            let mut set = PatternSet::default();
            set.push(Pattern::parse(text)?, ());
            Ok(set)
        };
        Ok(LearnRule {
            kind: kind.to_string(),
            primary: set(primary)?,
            shadow: set(shadow)?,
            primary_text: primary.to_string(),
            shadow_text: shadow.to_string(),
        })
    }

    /// The IDs at this rule's primary pointer, in document order.
    pub fn primary_ids(&self, document: &Value) -> Vec<String> {
        ids_at(&self.primary, document)
    }

    /// The IDs at this rule's pointer for `side`, in document order.
    pub fn ids_of(&self, side: Side, document: &Value) -> Vec<String> {
        match side {
            Side::Primary => ids_at(&self.primary, document),
            Side::Shadow => ids_at(&self.shadow, document),
        }
    }

    /// Pairs the IDs of both answers by position (one each for a single
    /// create, one per item for a batch). Different counts pair nothing:
    /// pairing by position would then be a guess.
    pub fn pair(&self, primary_ids: &[String], shadow: &Value) -> Result<Vec<IdPair>, String> {
        self.pair_ids(primary_ids, ids_at(&self.shadow, shadow))
    }

    /// Pairs two lists of IDs by position.
    pub fn pair_ids(&self, primary_ids: &[String], shadow_ids: Vec<String>) -> Result<Vec<IdPair>, String> {
        if primary_ids.len() != shadow_ids.len() {
            return Err(format!(
                "learn_ids {}: the primary answered {} ID(s) at {}, the shadow {} at {}; nothing paired",
                self.kind,
                primary_ids.len(),
                self.primary_text,
                shadow_ids.len(),
                self.shadow_text
            ));
        }
        Ok(primary_ids
            .iter()
            .zip(shadow_ids)
            .map(|(primary_id, shadow_id)| IdPair {
                kind: self.kind.clone(),
                primary_id: primary_id.clone(),
                shadow_id,
            })
            .collect())
    }
}

fn ids_at(set: &PatternSet<()>, document: &Value) -> Vec<String> {
    let mut ids = Vec::new();
    for_each_match(set, document, &mut |(), value| {
        if let Some(id) = id_text(value) {
            ids.push(id);
        }
    });
    ids
}

/// An ID's text: strings as they are, integers in decimal.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) if number.is_i64() || number.is_u64() => Some(number.to_string()),
        _ => None,
    }
}

/// What a route translates before its request goes to the shadow.
#[derive(Debug, Clone, Default)]
pub struct Translation {
    /// Path segments (by index) holding an ID of a kind (`{param:kind}`).
    pub path: Vec<(usize, String)>,
    /// Query parameters holding an ID of a kind.
    pub query: Vec<(String, String)>,
    /// JSON body fields holding an ID of a kind.
    pub body: PatternSet<String>,
}

/// A request as the shadow gets it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Translated {
    pub path_and_query: Option<String>,
    /// The rewritten JSON body, when a body ID changed.
    pub body: Option<Vec<u8>>,
    /// IDs with no pair (forwarded unchanged): (kind, primary ID).
    pub unmapped: Vec<(String, String)>,
}

impl Translation {
    pub fn is_empty(&self) -> bool {
        self.path.is_empty() && self.query.is_empty() && self.body.is_empty()
    }

    /// Rewrites primary IDs into shadow IDs (see [`Translation::to_side`]).
    pub fn apply(&self, ids: &IdMap, path_and_query: &str, body: &[u8]) -> Translated {
        self.to_side(ids, Side::Shadow, path_and_query, body)
    }

    /// Rewrites the request's IDs into the space of `side`: the other
    /// side's IDs are translated, this side's own are kept (clients that
    /// saw both sides serve hold both kinds). Only what changed is returned;
    /// everything else (other query parameters, their encoding) is left as
    /// it was. IDs the map knows on neither side are reported as unmapped.
    pub fn to_side(&self, ids: &IdMap, side: Side, path_and_query: &str, body: &[u8]) -> Translated {
        let mut out = Translated::default();
        if self.is_empty() {
            return out;
        }
        let mut translate = |kind: &str, id: &str| -> Option<String> {
            match ids.to_side(side, kind, id) {
                Ok(mapped) => mapped,
                Err(()) => {
                    let unmapped = (kind.to_string(), id.to_string());
                    if !out.unmapped.contains(&unmapped) {
                        out.unmapped.push(unmapped);
                    }
                    None
                }
            }
        };
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let mut changed = false;
        let mut segments: Vec<Cow<'_, str>> = path.split('/').map(Cow::Borrowed).collect();
        for (index, kind) in &self.path {
            // Segment 0 is the empty text before the leading '/'.
            if let Some(segment) = segments.get_mut(index + 1) {
                let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
                if let Some(mapped) = translate(kind, &decoded) {
                    *segment = Cow::Owned(encode_segment(&mapped));
                    changed = true;
                }
            }
        }
        let mut pieces: Vec<Cow<'_, str>> = query
            .map(|q| q.split('&').map(Cow::Borrowed).collect())
            .unwrap_or_default();
        for piece in pieces.iter_mut() {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            let name = decode_form(name);
            let Some((_, kind)) = self.query.iter().find(|(query_name, _)| *query_name == name) else {
                continue;
            };
            if let Some(mapped) = translate(kind, &decode_form(value)) {
                let encoded: String = form_urlencoded::byte_serialize(mapped.as_bytes()).collect();
                let raw_name = piece.split_once('=').map_or(piece.as_ref(), |(raw, _)| raw).to_string();
                *piece = Cow::Owned(format!("{raw_name}={encoded}"));
                changed = true;
            }
        }
        if changed {
            let mut rebuilt = segments.join("/");
            if query.is_some() {
                rebuilt.push('?');
                rebuilt.push_str(&pieces.join("&"));
            }
            out.path_and_query = Some(rebuilt);
        }
        if !self.body.is_empty() && !body.is_empty() {
            if let Ok(mut document) = serde_json::from_slice::<Value>(body) {
                let mut body_changed = false;
                for_each_match_mut(&self.body, &mut document, &mut |kind, value| {
                    if let Some(id) = id_text(value) {
                        if let Some(mapped) = translate(kind, &id) {
                            *value = Value::String(mapped);
                            body_changed = true;
                        }
                    }
                });
                if body_changed {
                    out.body = serde_json::to_vec(&document).ok();
                }
            }
        }
        out
    }
}

fn decode_form(text: &str) -> String {
    form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

/// Characters a path segment cannot hold as they are (RFC 3986 §3.3).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// A value as one path segment.
pub fn encode_segment(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(kind: &str, primary: &str, shadow: &str) -> IdPair {
        IdPair {
            kind: kind.into(),
            primary_id: primary.into(),
            shadow_id: shadow.into(),
        }
    }

    const P1: &str = "0a1b2c3d-0000-4000-8000-000000000001";
    const S1: &str = "5f000000-0000-4000-8000-0000000000aa";

    #[test]
    fn uuid_canonical_form_accepts_both_spellings_and_stores_dashed_lowercase() {
        let uuid = Canonical::Uuid;
        assert_eq!(uuid.apply("0A1B2C3D00004000800000000000000 1".trim()), None);
        assert_eq!(uuid.apply("0A1B2C3D000040008000000000000001").unwrap(), P1);
        assert_eq!(uuid.apply("0A1B2C3D-0000-4000-8000-000000000001").unwrap(), P1);
        assert!(matches!(uuid.apply(P1).unwrap(), Cow::Borrowed(_)));
        assert_eq!(
            uuid.apply("{0a1b2c3d-0000-4000-8000-000000000001}"),
            None,
            "braced is not accepted"
        );
        assert_eq!(uuid.apply("task-17"), None);
        assert_eq!(Canonical::AsIs.apply("task-17").unwrap(), "task-17");
    }

    #[test]
    fn each_id_is_paired_once_on_each_side() {
        let map = IdMap::new(Canonical::Uuid);
        assert_eq!(map.insert(&pair("tasks", P1, S1)), Ok(true));
        assert_eq!(map.insert(&pair("tasks", &P1.replace('-', ""), S1)), Ok(false));
        assert_eq!(map.lookup("tasks", &P1.to_uppercase()).as_deref(), Some(S1));
        assert!(matches!(
            map.insert(&pair("tasks", P1, "5f000000-0000-4000-8000-0000000000bb")),
            Err(IdMapError::PrimaryTaken { .. })
        ));
        assert!(matches!(
            map.insert(&pair("tasks", "0a1b2c3d-0000-4000-8000-000000000002", S1)),
            Err(IdMapError::ShadowTaken { .. })
        ));
        assert_eq!(map.insert(&pair("tags", P1, S1)), Ok(true), "kinds are separate");
        assert_eq!(map.counts(), vec![("tags".to_string(), 1), ("tasks".to_string(), 1)]);
        assert!(matches!(
            map.insert(&pair("tasks", "nope", S1)),
            Err(IdMapError::InvalidId { .. })
        ));
    }

    #[test]
    fn json_import_reports_bad_rows_with_their_line_and_keeps_the_rest() {
        let text = "{\n  \"tasks\": {\n    \"a\": \"x\",\n    \"b\": 7,\n    \"c\": \"y\"\n  },\n  \"tags\": [1]\n}\n";
        let parsed = parse_import(text, ImportFormat::Json).unwrap();
        assert_eq!(
            parsed
                .rows
                .iter()
                .map(|r| (r.line, r.pair.primary_id.as_str()))
                .collect::<Vec<_>>(),
            [(3, "a"), (5, "c")]
        );
        let lines: Vec<usize> = parsed.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [7, 4]);
        let map = IdMap::new(Canonical::AsIs);
        map.insert(&pair("tasks", "c", "z")).unwrap();
        let report = map.import(parsed);
        assert_eq!(report.added, vec![pair("tasks", "a", "x")]);
        assert_eq!(report.problems.iter().map(|p| p.line).collect::<Vec<_>>(), [4, 5, 7]);
        assert!(
            report.problems[1].message.contains("already paired"),
            "{:?}",
            report.problems[1]
        );
    }

    #[test]
    fn broken_json_is_an_error_with_its_position() {
        let err = parse_import("{\n \"tasks\": {\"a\": \"x\",}\n}", ImportFormat::Json).unwrap_err();
        assert!(matches!(err, IdMapError::Syntax { line: 2, .. }), "{err}");
    }

    #[test]
    fn csv_import_skips_a_header_and_reports_short_rows() {
        let text = "kind,primary_id,shadow_id\ntasks,a,x\ntasks,b\n\n\ntags,\"context:Work, Home\",t1\n";
        let parsed = parse_import(text, ImportFormat::Csv).unwrap();
        assert_eq!(
            parsed.rows,
            vec![
                ImportRow {
                    line: 2,
                    pair: pair("tasks", "a", "x")
                },
                ImportRow {
                    line: 6,
                    pair: pair("tags", "context:Work, Home", "t1")
                },
            ]
        );
        assert_eq!(parsed.problems.len(), 1);
        assert_eq!(parsed.problems[0].line, 3);
    }

    #[test]
    fn learned_ids_pair_by_position_and_refuse_to_guess() {
        let rule = LearnRule::new("tasks", "/tasks/*/notionPageId", "/tasks/*/taskId").unwrap();
        let primary = serde_json::json!({"tasks": [{"notionPageId": "p1"}, {"notionPageId": "p2"}]});
        let shadow = serde_json::json!({"tasks": [{"taskId": "s1"}, {"taskId": "s2"}]});
        let ids = rule.primary_ids(&primary);
        assert_eq!(
            rule.pair(&ids, &shadow).unwrap(),
            vec![pair("tasks", "p1", "s1"), pair("tasks", "p2", "s2")]
        );
        let short = serde_json::json!({"tasks": [{"taskId": "s1"}]});
        assert!(rule.pair(&ids, &short).unwrap_err().contains("nothing paired"));
    }

    #[test]
    fn translation_rewrites_path_query_and_body_and_reports_what_it_cannot() {
        let map = IdMap::new(Canonical::AsIs);
        map.insert(&pair("tasks", "p1", "s1")).unwrap();
        map.insert(&pair("tags", "work", "t/9")).unwrap();
        let mut body = PatternSet::default();
        body.push(Pattern::parse("/parent").unwrap(), "tasks".to_string());
        body.push(Pattern::parse("/tags/*").unwrap(), "tags".to_string());
        let translation = Translation {
            path: vec![(2, "tasks".into())],
            query: vec![("tag".into(), "tags".into())],
            body,
        };
        let out = translation.apply(
            &map,
            "/api/task/p1/complete?x=a%20b&tag=work",
            br#"{"parent":"p1","tags":["work","home"],"title":"t"}"#,
        );
        assert_eq!(
            out.path_and_query.as_deref(),
            Some("/api/task/s1/complete?x=a%20b&tag=t%2F9")
        );
        let body: Value = serde_json::from_slice(out.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"parent": "s1", "tags": ["t/9", "home"], "title": "t"})
        );
        assert_eq!(out.unmapped, vec![("tags".to_string(), "home".to_string())]);

        let untouched = translation.apply(&map, "/api/task/p9/complete", b"");
        assert_eq!(untouched.path_and_query, None, "an unmapped ID is forwarded unchanged");
        assert_eq!(untouched.unmapped, vec![("tasks".to_string(), "p9".to_string())]);

        // Towards the primary, the shadow's IDs are translated back and its own kept.
        let back = translation.to_side(&map, Side::Primary, "/api/task/s1/complete?tag=work", b"");
        assert_eq!(back.path_and_query.as_deref(), Some("/api/task/p1/complete?tag=work"));
        assert!(back.unmapped.is_empty(), "{:?}", back.unmapped);
        let own = translation.apply(&map, "/api/task/s1/complete", b"");
        assert_eq!(
            (own.path_and_query, own.unmapped),
            (None, Vec::new()),
            "a shadow ID is already the shadow's"
        );
    }
}
