//! `[route.compare]`, `[noise]` and `[redact]`: how answers are compared,
//! which fields are learnt to be noise, and what is replaced before
//! anything is kept.
//!
//! Must never: let a rule through that the compare engine would refuse
//! later, or a header that is different by nature into `compare.headers`.

use std::collections::BTreeMap;

use http::HeaderName;
use serde::Deserialize;

use super::context::{id_kind, Ctx};
use super::{ranges, ConfigError};
use crate::compare::noise::NoiseConfig;
use crate::compare::pointer::{Pattern, PatternSegment};
use crate::compare::rules::{CompareRules, ItemKey, Rule, RuleError, Tolerance};
use crate::exchange::Severity;
use crate::redact::Redactor;

/// `[route.compare]`: how a route's answers are compared.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCompare {
    #[serde(default)]
    ignore: Vec<String>,
    #[serde(default)]
    unordered: BTreeMap<String, String>,
    #[serde(default)]
    order_by: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    time_tolerance: BTreeMap<String, String>,
    #[serde(default)]
    dates_as_midnight_utc: bool,
    #[serde(default)]
    number_tolerance: BTreeMap<String, String>,
    null_equals_missing: Option<NullEqualsMissing>,
    #[serde(default)]
    ids: BTreeMap<String, String>,
    #[serde(default)]
    trim: Vec<String>,
    #[serde(default)]
    case_insensitive: Vec<String>,
    headers: Option<Vec<String>>,
    #[serde(default)]
    allow_extra_fields: bool,
    #[serde(default)]
    severity: BTreeMap<String, String>,
    #[serde(default)]
    not_noise: Vec<String>,
    #[serde(default = "default_true")]
    learn_noise: bool,
    recheck: Option<String>,
}

/// `null_equals_missing = true` (everywhere) or a list of paths.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum NullEqualsMissing {
    Everywhere(bool),
    Paths(Vec<String>),
}

fn default_true() -> bool {
    true
}

/// `[noise]`: learning which fields are volatile by nature.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNoise {
    #[serde(default = "default_noise_window")]
    window: String,
    #[serde(default = "default_min_observations")]
    min_observations: u32,
    #[serde(default = "default_noise_memory")]
    memory: String,
    #[serde(default)]
    active: bool,
    #[serde(default = "default_active_sample")]
    active_sample: f64,
}

impl Default for RawNoise {
    fn default() -> Self {
        RawNoise {
            window: default_noise_window(),
            min_observations: default_min_observations(),
            memory: default_noise_memory(),
            active: false,
            active_sample: default_active_sample(),
        }
    }
}

fn default_noise_window() -> String {
    "10m".into()
}
fn default_min_observations() -> u32 {
    3
}
fn default_noise_memory() -> String {
    "32MiB".into()
}
fn default_active_sample() -> f64 {
    0.05
}

/// `[redact]`: what is replaced before anything is kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedact {
    #[serde(default)]
    headers: Vec<String>,
    #[serde(default)]
    query: Vec<String>,
    #[serde(default)]
    json: Vec<String>,
}

/// Response headers that never matter for comparison: hop-by-hop, or different by nature.
const NEVER_COMPARED_HEADERS: [&str; 14] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "date",
    "server",
    "age",
    "via",
    "x-request-id",
    "x-vercel-id",
    "x-vercel-cache",
];

impl Ctx<'_> {
    /// The redactor, sealing replay data with the key from the environment when one is set.
    pub(super) fn redact(&self, raw: RawRedact, env: &dyn Fn(&str) -> Option<String>) -> Result<Redactor, ConfigError> {
        let seal = env(crate::seal::REPLAY_KEY_ENV)
            .filter(|text| !text.trim().is_empty())
            .map(|text| crate::seal::SealKey::parse(&text))
            .transpose()
            .map_err(|err| self.invalid(format!("${}", crate::seal::REPLAY_KEY_ENV), err.to_string()))?;
        let mut patterns = Vec::with_capacity(raw.json.len());
        for (index, path) in raw.json.iter().enumerate() {
            // DESIGN writes these as "**/password": a leading '/' is implied.
            let pointer = if path.starts_with('/') {
                path.clone()
            } else {
                format!("/{path}")
            };
            patterns.push(
                Pattern::parse(&pointer)
                    .map_err(|err| self.invalid(format!("redact.json[{index}]"), err.to_string()))?,
            );
        }
        for (index, name) in raw.headers.iter().enumerate() {
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                self.invalid(
                    format!("redact.headers[{index}]"),
                    format!("not a valid header name: \"{name}\""),
                )
            })?;
        }
        Ok(Redactor::new(&raw.headers, &raw.query, patterns).with_seal(seal))
    }

    pub(super) fn noise(&self, raw: RawNoise) -> Result<NoiseConfig, ConfigError> {
        if raw.min_observations == 0 {
            return Err(self.invalid("noise.min_observations", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&raw.active_sample) || raw.active_sample.is_nan() {
            return Err(self.invalid(
                "noise.active_sample",
                format!("expected a fraction from 0.0 to 1.0, got {}", raw.active_sample),
            ));
        }
        Ok(NoiseConfig {
            window: self.duration("noise.window", &raw.window, ranges::NOISE_WINDOW)?,
            min_observations: raw.min_observations,
            memory: self.size("noise.memory", &raw.memory, ranges::NOISE_MEMORY)?,
            active: raw.active,
            active_sample: raw.active_sample,
        })
    }

    /// Builds a route's compare rules; errors name `route "NAME": compare.KEY`.
    pub(super) fn compare(&self, route: &str, raw: RawCompare) -> Result<CompareRules, ConfigError> {
        let rule_error = |err: RuleError| self.invalid(format!("route \"{route}\": {}", err.key), err.message);
        let invalid = |key: String, message: String| self.invalid(format!("route \"{route}\": {key}"), message);
        // One rule for each path of a list key such as `compare.ignore`.
        let add_each = |rules: &mut CompareRules, list: &str, paths: &[String], rule: Rule| {
            paths.iter().enumerate().try_for_each(|(index, path)| {
                rules
                    .add(&format!("compare.{list}[{index}]"), path, rule.clone())
                    .map_err(rule_error)
            })
        };
        let mut rules = CompareRules::new();
        add_each(&mut rules, "ignore", &raw.ignore, Rule::Ignore)?;
        for (path, key) in &raw.unordered {
            let rule_key = format!("compare.unordered.\"{path}\"");
            let item_key = item_key(key).map_err(|message| invalid(rule_key.clone(), message))?;
            rules
                .add(&rule_key, path, Rule::Unordered(item_key))
                .map_err(rule_error)?;
        }
        for (path, fields) in &raw.order_by {
            let rule_key = format!("compare.order_by.\"{path}\"");
            let rule = order_by(fields, raw.unordered.contains_key(path))
                .map_err(|message| invalid(rule_key.clone(), message))?;
            rules.add(&rule_key, path, rule).map_err(rule_error)?;
        }
        for (path, text) in &raw.time_tolerance {
            let key = format!("compare.time_tolerance.\"{path}\"");
            let duration = ranges::duration_within(text, ranges::TIME_TOLERANCE)
                .map_err(|message| invalid(key.clone(), message))?;
            rules
                .add(&key, path, Rule::TimeTolerance(duration))
                .map_err(rule_error)?;
        }
        rules.dates_as_midnight_utc = raw.dates_as_midnight_utc;
        for (path, text) in &raw.number_tolerance {
            let key = format!("compare.number_tolerance.\"{path}\"");
            let tolerance = Tolerance::parse(text).map_err(|message| invalid(key.clone(), message))?;
            rules
                .add(&key, path, Rule::NumberTolerance(tolerance))
                .map_err(rule_error)?;
        }
        match raw.null_equals_missing {
            None | Some(NullEqualsMissing::Everywhere(false)) => {}
            Some(NullEqualsMissing::Everywhere(true)) => rules.null_equals_missing_everywhere = true,
            Some(NullEqualsMissing::Paths(paths)) => {
                add_each(&mut rules, "null_equals_missing", &paths, Rule::NullEqualsMissing)?
            }
        }
        for (path, kind) in &raw.ids {
            let key = format!("compare.ids.\"{path}\"");
            id_kind(kind).map_err(|message| invalid(key.clone(), message))?;
            rules.add(&key, path, Rule::Id(kind.clone())).map_err(rule_error)?;
        }
        add_each(&mut rules, "trim", &raw.trim, Rule::Trim)?;
        add_each(&mut rules, "case_insensitive", &raw.case_insensitive, Rule::CaseFold)?;
        if let Some(headers) = raw.headers {
            rules.headers = compared_headers(&headers).map_err(|(key, message)| invalid(key, message))?;
        }
        rules.allow_extra_fields = raw.allow_extra_fields;
        for (path, text) in &raw.severity {
            let key = format!("compare.severity.\"{path}\"");
            let severity = Severity::parse(text).ok_or_else(|| {
                invalid(
                    key.clone(),
                    format!("expected \"low\", \"medium\" or \"high\", got \"{text}\""),
                )
            })?;
            rules.add(&key, path, Rule::Severity(severity)).map_err(rule_error)?;
        }
        for (index, path) in raw.not_noise.iter().enumerate() {
            rules
                .add_not_noise(&format!("compare.not_noise[{index}]"), path)
                .map_err(rule_error)?;
        }
        rules.learn_noise = raw.learn_noise;
        if let Some(text) = raw.recheck {
            rules.recheck = Some(
                ranges::duration_within(&text, ranges::RECHECK)
                    .map_err(|message| invalid("compare.recheck".into(), message))?,
            );
        }
        Ok(rules)
    }
}

/// An `order_by` rule: one or more fields of the items (names or pointers
/// of plain keys), at a path that also has an `unordered` key to match the
/// items by.
fn order_by(fields: &[String], unordered_too: bool) -> Result<Rule, String> {
    if !unordered_too {
        return Err("needs an `unordered` key at the same path, to match the items by \
                    (for example unordered = { \"/tasks\" = \"id\" })"
            .into());
    }
    if fields.is_empty() {
        return Err("expected at least one field to sort by, e.g. [\"/priority\", \"/dueDate\"]".into());
    }
    let fields = fields
        .iter()
        .map(|field| match item_key(field)? {
            ItemKey::Field(segments) => Ok(segments),
            ItemKey::Whole => Err(format!("\"{field}\" is not a field of the items")),
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Rule::OrderBy(fields))
}

/// An `unordered` item key: the whole item (`""` or `"."`), a field name,
/// or a JSON Pointer of plain keys into the item.
fn item_key(key: &str) -> Result<ItemKey, String> {
    match key {
        "" | "." => Ok(ItemKey::Whole),
        pointer if pointer.starts_with('/') => {
            let pattern = Pattern::parse(pointer).map_err(|err| err.to_string())?;
            let segments = pattern
                .segments()
                .iter()
                .map(|segment| match segment {
                    PatternSegment::Key(key) => Ok(key.clone()),
                    _ => Err("an item key cannot contain '*' or '**'".to_string()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ItemKey::Field(segments))
        }
        field => Ok(ItemKey::Field(vec![field.to_string()])),
    }
}

/// `compare.headers`: lower-cased names, refusing the ones that differ by
/// nature. An error is the key and its message.
fn compared_headers(headers: &[String]) -> Result<Vec<HeaderName>, (String, String)> {
    let mut names = Vec::with_capacity(headers.len());
    for (index, header) in headers.iter().enumerate() {
        let key = format!("compare.headers[{index}]");
        let lower = header.to_ascii_lowercase();
        if NEVER_COMPARED_HEADERS.contains(&lower.as_str()) || lower.starts_with("x-vercel-") {
            return Err((
                key,
                format!("\"{header}\" never matters for comparison (hop-by-hop, or different by nature)"),
            ));
        }
        let name = HeaderName::from_bytes(lower.as_bytes())
            .map_err(|_| (key, format!("not a valid header name: \"{header}\"")))?;
        names.push(name);
    }
    Ok(names)
}
