//! Comparison: judges one exchange into an outcome and, when the answers
//! differ, says exactly how: each difference has a place (status, a header,
//! or a JSON Pointer into the body), a kind, both values, a severity and a
//! group key. Groups are what people triage: the same bug on 500 records is
//! one group; two bugs in one response are two.
//!
//! Errors are classified first (no answer or a 5xx on either side), then
//! bodies that could not be captured, then the answers: status, the
//! allowlisted headers, and the decoded bodies (JSON structurally, text by
//! lines, binary by length and SHA-256).
//!
//! Must never: do I/O, await anything, or panic on any input; normalize
//! anything a rule did not ask for.

pub mod decode;
pub mod json;
pub mod noise;
pub mod pointer;
mod responses;
pub mod rules;

pub use responses::{compare_responses, LINE_DIFF_DEADLINE};

use http::Method;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use crate::exchange::Severity;
use crate::exchange::{CapturedResponse, Outcome, SideResult, SkipReason};
use decode::{decode, Body};
use json::UnmappedId;
use noise::NoiseFilter;
use rules::CompareRules;

/// Looks up the shadow's ID for a primary ID of a kind (the ID map).
pub trait IdLookup {
    fn shadow_id(&self, kind: &str, primary_id: &str) -> Option<String>;

    /// An ID in the form the map keeps (e.g. dashed lowercase UUIDs), so two
    /// spellings of one ID compare equal.
    fn canonical<'a>(&self, id: &'a str) -> std::borrow::Cow<'a, str> {
        std::borrow::Cow::Borrowed(id)
    }
}

/// No ID map: every ID the primary uses is unmapped unless both sides share it.
pub struct NoIds;

impl IdLookup for NoIds {
    fn shadow_id(&self, _kind: &str, _primary_id: &str) -> Option<String> {
        None
    }
}

/// What kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A value differs (same JSON type).
    ValueChanged,
    /// The JSON type differs (e.g. a number became a string).
    TypeChanged,
    /// The same number, written differently (`1` and `1.0`).
    NumberFormat,
    MissingInShadow,
    ExtraInShadow,
    /// Array lengths differ (arrays too long to align item by item).
    ArrayLength,
    /// Same items, different order (unordered arrays only).
    OrderOnly,
    /// A field the shadow spells differently (`dueDate` → `due_date`) with the same value.
    Renamed,
    StatusChanged,
    HeaderChanged,
    TextChanged,
    BinaryChanged,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::ValueChanged => "value_changed",
            Kind::TypeChanged => "type_changed",
            Kind::NumberFormat => "number_format",
            Kind::MissingInShadow => "missing_in_shadow",
            Kind::ExtraInShadow => "extra_in_shadow",
            Kind::ArrayLength => "array_length",
            Kind::OrderOnly => "order_only",
            Kind::Renamed => "renamed",
            Kind::StatusChanged => "status_changed",
            Kind::HeaderChanged => "header_changed",
            Kind::TextChanged => "text_changed",
            Kind::BinaryChanged => "binary_changed",
        }
    }
}

/// Where in the answer a difference is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    Status,
    Header,
    Body,
}

impl Location {
    pub fn label(&self) -> &'static str {
        match self {
            Location::Status => "status",
            Location::Header => "header",
            Location::Body => "body",
        }
    }
}

/// One difference between the primary's answer and the shadow's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub location: Location,
    /// For the body: a JSON Pointer into the primary's document ("" = the
    /// whole body). For a header: its name. For the status: "".
    pub path: String,
    /// The path with array positions as `*` (what the group key uses).
    pub pattern: String,
    pub kind: Kind,
    pub primary: Option<String>,
    pub shadow: Option<String>,
    /// For an item of an unordered array: its key, e.g. `id=a1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    pub severity: Severity,
    pub group_key: String,
}

impl Difference {
    /// One line for people: severity, kind, the place, and both values
    /// (primary first).
    pub fn line(&self) -> String {
        let place = match self.location {
            Location::Status => "(status)".to_string(),
            Location::Header => format!("(header {})", self.path),
            Location::Body if self.path.is_empty() => "(body)".to_string(),
            Location::Body => self.path.clone(),
        };
        let item = self
            .item
            .as_deref()
            .map(|item| format!(" [{item}]"))
            .unwrap_or_default();
        let value = |v: &Option<String>| v.clone().unwrap_or_else(|| "(absent)".to_string());
        format!(
            "{:<6} {:<17} {place}{item}: {} -> {}",
            self.severity.label(),
            self.kind.label(),
            value(&self.primary),
            value(&self.shadow),
        )
    }
}

/// A stable group key: the first 16 hex digits of SHA-256 over the route,
/// method, place and kind. Stable across builds and replicas.
pub fn group_key(route: &str, method: &str, location: &Location, pattern: &str, kind: Kind) -> String {
    let mut hasher = Sha256::new();
    for part in [route, method, location.label(), pattern, kind.label()] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    let digest = hasher.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The first 16 hex digits of the SHA-256 of some bytes.
pub fn short_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The full comparison of two answers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Comparison {
    pub differences: Vec<Difference>,
    /// Differences found but not kept (past the per-exchange limit).
    pub truncated: usize,
    /// IDs the primary used that the ID map does not know (never divergences).
    pub unmapped: Vec<UnmappedId>,
    /// RFC 6902 operations that turn the shadow's normalized JSON into the
    /// primary's (JSON bodies only; differences within a tolerance and
    /// tolerated extra fields are not in it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<Vec<Value>>,
    /// A unified line diff, for text bodies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_diff: Option<String>,
    /// Why the bodies could not be compared, if they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomparable: Option<String>,
    /// The primary's normalized JSON document (for noise learning; not shown).
    #[serde(skip)]
    pub primary_document: Option<Value>,
}

impl Comparison {
    pub fn is_match(&self) -> bool {
        self.differences.is_empty() && self.truncated == 0 && self.incomparable.is_none()
    }

    /// The human view: one line per difference, most severe first, then the
    /// text diff if there is one.
    pub fn to_text(&self) -> String {
        if let Some(reason) = &self.incomparable {
            return format!("incomparable: {reason}\n");
        }
        let mut out = String::new();
        if self.is_match() {
            out.push_str("match\n");
        } else {
            let groups: std::collections::HashSet<&str> =
                self.differences.iter().map(|d| d.group_key.as_str()).collect();
            out.push_str(&format!(
                "diverged: {} difference{} in {} group{}\n",
                self.differences.len() + self.truncated,
                if self.differences.len() + self.truncated == 1 {
                    ""
                } else {
                    "s"
                },
                groups.len(),
                if groups.len() == 1 { "" } else { "s" },
            ));
        }
        let mut sorted: Vec<&Difference> = self.differences.iter().collect();
        sorted.sort_by_key(|d| std::cmp::Reverse(d.severity));
        for d in sorted {
            out.push_str(&format!("  {}\n", d.line()));
        }
        if self.truncated > 0 {
            out.push_str(&format!("  ... and {} more\n", self.truncated));
        }
        for unmapped in &self.unmapped {
            out.push_str(&format!("  unmapped {} id {}\n", unmapped.kind, unmapped.primary_id));
        }
        if let Some(text) = &self.text_diff {
            out.push_str(text);
        }
        out
    }
}

/// What to compare: one route's context.
pub struct Context<'a> {
    pub route: &'a str,
    pub method: &'a Method,
    pub rules: &'a CompareRules,
    pub ids: &'a dyn IdLookup,
    /// Largest decoded body (a guard against decompression bombs).
    pub decode_limit: usize,
    /// Build the RFC 6902 patch (it copies values; the proxy's hot comparisons skip it).
    pub want_patch: bool,
    /// The caller has compared both bodies byte for byte and found them
    /// equal, so they are not compared again (a second look at two 64 KB
    /// bodies is 9K instructions). False unless the caller checked.
    pub bodies_equal: bool,
}

/// A complete answer's body as normalized JSON, if it is JSON.
pub fn normalized_json(response: &CapturedResponse, rules: &CompareRules, decode_limit: usize) -> Option<Value> {
    match decode(&response.headers, &response.body, decode_limit) {
        Ok(Body::Json(mut value)) => {
            json::normalize(&mut value, rules);
            Some(value)
        }
        _ => None,
    }
}

/// The judgement of one exchange.
#[derive(Debug, Clone)]
pub struct Judgement {
    pub outcome: Outcome,
    /// Present when both answers were complete and compared.
    pub comparison: Option<Comparison>,
    /// Differences set aside as learned noise (not counted; listed for review).
    pub noise: Vec<Difference>,
}

impl Judgement {
    fn of(outcome: Outcome) -> Judgement {
        Judgement {
            outcome,
            comparison: None,
            noise: Vec::new(),
        }
    }

    /// One line saying what differs (no body content beyond truncated values).
    pub fn summary(&self) -> Option<String> {
        let comparison = self.comparison.as_ref()?;
        if let Some(reason) = &comparison.incomparable {
            return Some(reason.clone());
        }
        let first = comparison.differences.first()?;
        let more = comparison.differences.len() + comparison.truncated - 1;
        let place = match first.location {
            Location::Status => "status".to_string(),
            Location::Header => format!("header {}", first.path),
            Location::Body if first.path.is_empty() => "body".to_string(),
            Location::Body => first.path.clone(),
        };
        let tail = if more > 0 {
            format!(" (+{more} more)")
        } else {
            String::new()
        };
        Some(format!("{} {place}{tail}", first.kind.label()))
    }
}

/// Judges an exchange: errors first, then what could not be captured, then
/// the two answers under the route's rules. Learned noise is set aside.
pub fn judge(primary: &SideResult, shadow: &SideResult, ctx: &Context<'_>, noise: &dyn NoiseFilter) -> Judgement {
    if matches!(primary, SideResult::Abandoned) {
        return Judgement::of(Outcome::Skipped(SkipReason::ClientDisconnected));
    }
    match (primary.is_error(), shadow.is_error()) {
        (true, true) => return Judgement::of(Outcome::BothError),
        (true, false) => return Judgement::of(Outcome::PrimaryError),
        (false, true) => return Judgement::of(Outcome::ShadowError),
        (false, false) => {}
    }
    let (primary, shadow) = match (primary, shadow) {
        (SideResult::Complete(p), SideResult::Complete(s)) => (p, s),
        (SideResult::Uncaptured { reason, .. }, _)
        | (_, SideResult::Uncaptured { reason, .. })
        | (_, SideResult::NotAsked(reason)) => return Judgement::of(Outcome::Skipped(*reason)),
        // Failed sides are errors and an abandoned primary is handled above;
        // an abandoned shadow only happens when its task was cut off.
        _ => return Judgement::of(Outcome::Skipped(SkipReason::ClientDisconnected)),
    };
    let mut comparison = compare_responses(ctx, primary, shadow);
    let (noise_found, kept): (Vec<Difference>, Vec<Difference>) = comparison
        .differences
        .drain(..)
        .partition(|difference| noise.is_noise(ctx.route, difference));
    comparison.differences = kept;
    let outcome = if comparison.incomparable.is_some() {
        Outcome::Skipped(SkipReason::Incomparable)
    } else if !comparison.differences.is_empty() || comparison.truncated > 0 {
        Outcome::Diverged
    } else if !comparison.unmapped.is_empty() {
        Outcome::Skipped(SkipReason::UnmappedId)
    } else {
        Outcome::Match
    };
    Judgement {
        outcome,
        comparison: Some(comparison),
        noise: noise_found,
    }
}
