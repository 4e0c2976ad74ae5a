//! Importing the data migration's mapping file: JSON or CSV, every row
//! checked, each problem reported with its line.
//!
//! Must never: stop at a bad row (it is skipped and reported), or accept a
//! row without a kind and both IDs.

use serde_json::Value;

use super::{IdMapError, IdPair};

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
