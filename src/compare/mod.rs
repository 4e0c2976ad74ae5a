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
pub mod rules;

use http::{HeaderMap, Method};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use crate::exchange::Severity;
use crate::exchange::{CapturedResponse, Outcome, SideResult, SkipReason};
use decode::{decode, media_type, Body};
use json::{Differ, UnmappedId};
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
            let place = match d.location {
                Location::Status => "(status)".to_string(),
                Location::Header => format!("(header {})", d.path),
                Location::Body if d.path.is_empty() => "(body)".to_string(),
                Location::Body => d.path.clone(),
            };
            let item = d.item.as_deref().map(|item| format!(" [{item}]")).unwrap_or_default();
            let value = |v: &Option<String>| v.clone().unwrap_or_else(|| "(absent)".to_string());
            out.push_str(&format!(
                "  {:<6} {:<17} {place}{item}: {} -> {}\n",
                d.severity.label(),
                d.kind.label(),
                value(&d.primary),
                value(&d.shadow),
            ));
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
}

/// Compares two complete answers under a route's rules: the status first
/// (bodies of different statuses differ by nature), then the compared
/// headers, then the bodies as what they decode to.
pub fn compare_responses(ctx: &Context<'_>, primary: &CapturedResponse, shadow: &CapturedResponse) -> Comparison {
    let mut found = Findings {
        ctx,
        method: crate::exchange::method_label(ctx.method),
        out: Comparison::default(),
    };
    if primary.status != shadow.status {
        let class_changed = primary.status.as_u16() / 100 != shadow.status.as_u16() / 100;
        found.push(Finding {
            location: Location::Status,
            path: String::new(),
            pattern: String::new(),
            kind: Kind::StatusChanged,
            primary: Some(primary.status.as_u16().to_string()),
            shadow: Some(shadow.status.as_u16().to_string()),
            item: None,
            severity: if class_changed {
                Severity::High
            } else {
                Severity::Medium
            },
        });
        return found.out;
    }
    compare_headers(&mut found, primary, shadow);
    if identical_as_decoded(ctx, primary, shadow) {
        return found.out;
    }
    let decoded = (
        decode(&primary.headers, &primary.body, ctx.decode_limit),
        decode(&shadow.headers, &shadow.body, ctx.decode_limit),
    );
    match decoded {
        (Ok(p), Ok(s)) => compare_bodies(&mut found, p, s),
        (Err(err), _) => found.out.incomparable = Some(format!("primary body: {err}")),
        (_, Err(err)) => found.out.incomparable = Some(format!("shadow body: {err}")),
    }
    found.out
}

/// A difference before its group key is known.
struct Finding {
    location: Location,
    path: String,
    pattern: String,
    kind: Kind,
    primary: Option<String>,
    shadow: Option<String>,
    item: Option<String>,
    severity: Severity,
}

impl Finding {
    /// A difference of the whole body.
    fn whole_body(kind: Kind, primary: Option<String>, shadow: Option<String>, severity: Severity) -> Finding {
        Finding {
            location: Location::Body,
            path: String::new(),
            pattern: String::new(),
            kind,
            primary,
            shadow,
            item: None,
            severity,
        }
    }
}

/// The comparison being built, with what every difference's group key needs.
struct Findings<'c, 'a> {
    ctx: &'c Context<'a>,
    method: &'static str,
    out: Comparison,
}

impl Findings<'_, '_> {
    fn push(&mut self, finding: Finding) {
        let group_key = group_key(
            self.ctx.route,
            self.method,
            &finding.location,
            &finding.pattern,
            finding.kind,
        );
        self.out.differences.push(Difference {
            location: finding.location,
            path: finding.path,
            pattern: finding.pattern,
            kind: finding.kind,
            primary: finding.primary,
            shadow: finding.shadow,
            item: finding.item,
            severity: finding.severity,
            group_key,
        });
    }
}

/// The headers the route compares; Content-Type by its media type alone.
fn compare_headers(found: &mut Findings<'_, '_>, primary: &CapturedResponse, shadow: &CapturedResponse) {
    for name in &found.ctx.rules.headers {
        let p = header_text(&primary.headers, name);
        let s = header_text(&shadow.headers, name);
        let (equal, severity) = if name == http::header::CONTENT_TYPE {
            let essence = |v: &Option<String>| v.as_deref().map(|v| media_type(v).0);
            (essence(&p) == essence(&s), Severity::High)
        } else {
            (p == s, Severity::Medium)
        };
        if !equal {
            found.push(Finding {
                location: Location::Header,
                path: name.to_string(),
                pattern: name.to_string(),
                kind: Kind::HeaderChanged,
                primary: p,
                shadow: s,
                item: None,
                severity,
            });
        }
    }
}

/// Two decoded bodies: JSON structurally, text by lines, binary by bytes;
/// bodies of different kinds are a type change.
fn compare_bodies(found: &mut Findings<'_, '_>, primary: Body, shadow: Body) {
    match (primary, shadow) {
        (Body::Json(p), Body::Json(s)) => compare_json(found, p, s),
        (Body::Text(p), Body::Text(s)) => {
            if p != s {
                compare_text(found, &p, &s);
            }
        }
        (Body::Binary(p), Body::Binary(s)) => {
            if p != s {
                found.push(Finding::whole_body(
                    Kind::BinaryChanged,
                    Some(binary_summary(&p)),
                    Some(binary_summary(&s)),
                    Severity::Medium,
                ));
            }
        }
        (Body::Empty, Body::Empty) => {}
        (p, s) => found.push(Finding::whole_body(
            Kind::TypeChanged,
            Some(p.kind_name().to_string()),
            Some(s.kind_name().to_string()),
            Severity::High,
        )),
    }
}

/// Two JSON documents, normalized under the rules, then diffed.
fn compare_json(found: &mut Findings<'_, '_>, mut p: Value, mut s: Value) {
    let ctx = found.ctx;
    json::normalize(&mut p, ctx.rules);
    json::normalize(&mut s, ctx.rules);
    let mut differ = Differ::new(ctx.rules, ctx.ids);
    if ctx.want_patch {
        differ = differ.with_patch();
    }
    differ.run(&p, &s);
    for raw in differ.differences {
        let severity = ctx
            .rules
            .severity_at(&json::segments_text(&raw.path))
            .unwrap_or_else(|| default_severity(raw.kind));
        found.push(Finding {
            location: Location::Body,
            path: json::pointer(&raw.path),
            pattern: json::pattern(&raw.path),
            kind: raw.kind,
            primary: raw.primary,
            shadow: raw.shadow,
            item: raw.item,
            severity,
        });
    }
    found.out.truncated = differ.truncated;
    found.out.unmapped = differ.unmapped;
    found.out.patch = ctx.want_patch.then_some(differ.patch);
    found.out.primary_document = Some(p);
}

/// Two different texts: a unified line diff, and the first lines that differ.
fn compare_text(found: &mut Findings<'_, '_>, p: &str, s: &str) {
    let diff = similar::TextDiff::configure()
        .timeout(std::time::Duration::from_millis(250))
        .diff_lines(p, s);
    let first = diff
        .ops()
        .iter()
        .find(|op| op.tag() != similar::DiffTag::Equal)
        .map(|op| {
            let old = op.old_range();
            let new = op.new_range();
            let line = |text: &str, index: usize| text.lines().nth(index).map(str::to_string);
            (line(p, old.start), line(s, new.start))
        })
        .unwrap_or((None, None));
    found.out.text_diff = Some(
        diff.unified_diff()
            .context_radius(3)
            .header("primary", "shadow")
            .to_string(),
    );
    found.push(Finding::whole_body(
        Kind::TextChanged,
        first.0,
        first.1,
        Severity::Medium,
    ));
}

/// Whether both bodies are the same UTF-8 bytes under the same plain framing
/// (no content coding, the same Content-Type, UTF-8 or no charset), so
/// decoding and normalizing them would give the same document and no
/// difference: every rule is an equivalence, and equal values are equal
/// through the ID map too. Such answers (most answers of a healthy
/// migration) are judged without parsing; the noise learner parses the
/// primary's only if it needs it.
fn identical_as_decoded(ctx: &Context<'_>, primary: &CapturedResponse, shadow: &CapturedResponse) -> bool {
    // Invalid UTF-8 under a text or JSON type is incomparable, not equal: the full path says so.
    if ctx.want_patch || primary.body != shadow.body || std::str::from_utf8(&primary.body).is_err() {
        return false;
    }
    let plain = |headers: &http::HeaderMap| {
        let coded = headers.get_all(http::header::CONTENT_ENCODING).iter().any(|value| {
            value
                .to_str()
                .map_or(true, |value| !value.trim().eq_ignore_ascii_case("identity"))
        });
        let charset = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| media_type(value).1);
        !coded && charset.is_none_or(|charset| charset == "utf-8")
    };
    let content_type = http::header::CONTENT_TYPE;
    primary.headers.get(&content_type) == shadow.headers.get(&content_type)
        && plain(&primary.headers)
        && plain(&shadow.headers)
}

fn default_severity(kind: Kind) -> Severity {
    match kind {
        Kind::TypeChanged | Kind::MissingInShadow | Kind::ArrayLength | Kind::Renamed => Severity::High,
        Kind::ValueChanged | Kind::ExtraInShadow | Kind::HeaderChanged | Kind::TextChanged | Kind::BinaryChanged => {
            Severity::Medium
        }
        Kind::StatusChanged => Severity::High,
        Kind::NumberFormat | Kind::OrderOnly => Severity::Low,
    }
}

fn header_text(headers: &HeaderMap, name: &http::HeaderName) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

fn binary_summary(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{} bytes, sha256 {hex}…", bytes.len())
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
