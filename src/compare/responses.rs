//! Comparing two complete answers: the status first, then the headers the
//! route compares, then the bodies as what they decode to (JSON
//! structurally, text by lines, binary by bytes).
//!
//! Must never: compare bodies of different statuses (the status is the
//! finding), or parse a body that is byte-identical under plain framing.

use http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::decode::{decode, media_type, Body};
use super::json::{self, Differ};
use super::{group_key, Comparison, Context, Difference, Kind, Location, Severity};
use crate::exchange::CapturedResponse;

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
        // The same values in the same order are equal however they are read:
        // no text is made of them (most answers of a healthy migration).
        if primary
            .headers
            .get_all(name)
            .iter()
            .eq(shadow.headers.get_all(name).iter())
        {
            continue;
        }
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

/// Longest a line diff searches for the smallest diff; past it the diff is
/// coarser (bigger hunks), never missing a change. Shared by text bodies
/// and divergence samples: on a large answer that differs throughout, an
/// exact line diff would hold a comparison worker for minutes.
pub const LINE_DIFF_DEADLINE: std::time::Duration = std::time::Duration::from_millis(250);

/// Two different texts: a unified line diff, and the first lines that differ.
fn compare_text(found: &mut Findings<'_, '_>, p: &str, s: &str) {
    let diff = similar::TextDiff::configure()
        .timeout(LINE_DIFF_DEADLINE)
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
    let equal = ctx.bodies_equal || primary.body == shadow.body;
    // simdutf8 validates a 64 KB body in a third of std's instructions;
    // it says only whether the bytes are valid, which is all this asks.
    if ctx.want_patch || !equal || simdutf8::basic::from_utf8(&primary.body).is_err() {
        return false;
    }
    let content_type = primary.headers.get(http::header::CONTENT_TYPE);
    if content_type != shadow.headers.get(http::header::CONTENT_TYPE) {
        return false;
    }
    // One type on both sides, so one charset: read once.
    let charset = content_type
        .and_then(|value| value.to_str().ok())
        .and_then(|value| media_type(value).1);
    let coded = |headers: &http::HeaderMap| {
        headers.get_all(http::header::CONTENT_ENCODING).iter().any(|value| {
            value
                .to_str()
                .map_or(true, |value| !value.trim().eq_ignore_ascii_case("identity"))
        })
    };
    charset.is_none_or(|charset| charset == "utf-8") && !coded(&primary.headers) && !coded(&shadow.headers)
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
