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

use crate::compare::IdLookup;

mod import;
mod learn;
mod translate;

pub use import::{parse_import, ImportFormat, ImportProblem, ImportReport, ImportRow, ParsedImport};
pub use learn::LearnRule;
pub use translate::{encode_segment, Translated, Translation};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::pointer::{Pattern, PatternSet};
    use serde_json::Value;

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
