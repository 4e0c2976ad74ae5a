//! A route's compare rules, validated and compiled: which paths never
//! count, which arrays are sets, which values compare with a tolerance or
//! through the ID map, which strings are normalized, and severity overrides.
//!
//! Nothing is normalized unless a rule asks for it.
//!
//! Must never: hold anything a request can change (rules come from config only).

use std::time::Duration;

use http::HeaderName;

use super::pointer::{Cursor, Pattern, PatternSet, PointerError};
use super::Severity;

/// How close two numbers must be to count as equal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    Absolute(f64),
    /// A fraction of the larger magnitude (`"0.5%"` is 0.005).
    Relative(f64),
}

impl Tolerance {
    /// Parses `"0.01"` (absolute) or `"0.5%"` (relative).
    pub fn parse(text: &str) -> Result<Tolerance, String> {
        let text = text.trim();
        let bad =
            || format!("expected an absolute tolerance like \"0.01\" or a relative one like \"0.5%\", got \"{text}\"");
        let (number, relative) = match text.strip_suffix('%') {
            Some(number) => (number.trim(), true),
            None => (text, false),
        };
        let value: f64 = number.parse().map_err(|_| bad())?;
        if !value.is_finite() || value < 0.0 {
            return Err(bad());
        }
        Ok(if relative {
            Tolerance::Relative(value / 100.0)
        } else {
            Tolerance::Absolute(value)
        })
    }

    pub fn accepts(self, a: f64, b: f64) -> bool {
        let gap = (a - b).abs();
        match self {
            Tolerance::Absolute(max) => gap <= max,
            Tolerance::Relative(fraction) => gap <= fraction * a.abs().max(b.abs()),
        }
    }
}

/// What an array's items are matched by when the array is unordered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemKey {
    /// The whole item (arrays of scalars, or items with no identity field).
    Whole,
    /// A field of the item (`"id"`) or a pointer into it (`"/meta/id"`).
    Field(Vec<String>),
}

/// One rule attached to a pattern.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    Ignore,
    Unordered(ItemKey),
    /// The sort an array's answer promises, by these fields of its items
    /// (each a path of keys into the item); only with `Unordered` at the
    /// same place, whose key matches the items.
    OrderBy(Vec<Vec<String>>),
    TimeTolerance(Duration),
    NumberTolerance(Tolerance),
    NullEqualsMissing,
    /// Values are IDs of this kind: compared through the ID map.
    Id(String),
    Trim,
    CaseFold,
    Severity(Severity),
}

/// A route's compiled compare rules.
#[derive(Debug, Clone, Default)]
pub struct CompareRules {
    rules: PatternSet<Rule>,
    /// Response headers that are compared (lowercase); default `content-type`.
    pub headers: Vec<HeaderName>,
    /// Keys only the shadow has are not differences (a subset comparison).
    pub allow_extra_fields: bool,
    /// A key that is null on one side and absent on the other is no difference, anywhere.
    pub null_equals_missing_everywhere: bool,
    /// With a time tolerance, a date-only value equals midnight UTC of that date.
    pub dates_as_midnight_utc: bool,
    /// Paths never learned as noise, whatever is observed.
    pub not_noise: PatternSet<()>,
    /// Re-ask both sides after this delay when a safe request diverged.
    pub recheck: Option<Duration>,
    /// Learn volatile fields of this route as noise.
    pub learn_noise: bool,
    /// A GraphQL route: a top-level `errors` only one side has is always a
    /// difference (never an extra field tolerated).
    pub graphql: bool,
}

/// An error building rules: which rule key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct RuleError {
    pub key: String,
    pub message: String,
}

impl CompareRules {
    /// The default rules: compare everything, headers `content-type` only.
    pub fn new() -> CompareRules {
        CompareRules {
            headers: vec![http::header::CONTENT_TYPE],
            learn_noise: true,
            ..CompareRules::default()
        }
    }

    /// Adds a rule at `path` (a pattern); `key` names the config key in errors.
    pub fn add(&mut self, key: &str, path: &str, rule: Rule) -> Result<(), RuleError> {
        let pattern = Pattern::parse(path).map_err(|err: PointerError| RuleError {
            key: key.to_string(),
            message: err.to_string(),
        })?;
        self.rules.push(pattern, rule);
        Ok(())
    }

    pub fn add_not_noise(&mut self, key: &str, path: &str) -> Result<(), RuleError> {
        let pattern = Pattern::parse(path).map_err(|err| RuleError {
            key: key.to_string(),
            message: err.to_string(),
        })?;
        self.not_noise.push(pattern, ());
        Ok(())
    }

    pub fn root(&self) -> Cursor {
        self.rules.root()
    }

    pub fn step(&self, cursor: &Cursor, segment: &str) -> Cursor {
        if cursor.is_dead() {
            return Cursor::default();
        }
        self.rules.step(cursor, segment)
    }

    /// The rules that apply exactly at the cursor's node.
    pub fn at<'s: 'c, 'c>(&'s self, cursor: &'c Cursor) -> impl Iterator<Item = &'s Rule> + 'c {
        self.rules.matches(cursor)
    }

    pub fn has(&self, cursor: &Cursor, wanted: impl Fn(&Rule) -> bool) -> bool {
        self.at(cursor).any(wanted)
    }

    /// Every rule with its pattern (for showing what a route does).
    pub fn iter(&self) -> impl Iterator<Item = &(Pattern, Rule)> {
        self.rules.iter()
    }

    /// The ID kind of a node, if it is compared through the ID map.
    pub fn id_kind<'s>(&'s self, cursor: &Cursor) -> Option<&'s str> {
        self.at(cursor).find_map(|rule| match rule {
            Rule::Id(kind) => Some(kind.as_str()),
            _ => None,
        })
    }

    /// A severity override for a difference at `segments`.
    pub fn severity_at<S: AsRef<str>>(&self, segments: &[S]) -> Option<Severity> {
        let mut cursor = self.rules.root();
        for segment in segments {
            cursor = self.rules.step(&cursor, segment.as_ref());
            if cursor.is_dead() {
                return None;
            }
        }
        let severity = self.rules.matches(&cursor).find_map(|rule| match rule {
            Rule::Severity(severity) => Some(*severity),
            _ => None,
        });
        severity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerances_parse_and_apply() {
        assert_eq!(Tolerance::parse("0.01").unwrap(), Tolerance::Absolute(0.01));
        assert_eq!(Tolerance::parse("0.5%").unwrap(), Tolerance::Relative(0.005));
        assert!(Tolerance::parse("-1").is_err());
        assert!(Tolerance::parse("lots").is_err());
        assert!(Tolerance::Absolute(0.01).accepts(1.0, 1.009));
        assert!(!Tolerance::Absolute(0.01).accepts(1.0, 1.02));
        assert!(Tolerance::Relative(0.01).accepts(1000.0, 1009.0));
        assert!(!Tolerance::Relative(0.01).accepts(1000.0, 1011.0));
    }

    #[test]
    fn rules_are_found_at_their_paths() {
        let mut rules = CompareRules::new();
        rules.add("ids", "/tasks/*/id", Rule::Id("tasks".into())).unwrap();
        rules
            .add("severity", "/tasks/*/priority", Rule::Severity(Severity::Low))
            .unwrap();
        let cursor = rules.step(&rules.step(&rules.step(&rules.root(), "tasks"), "7"), "id");
        assert_eq!(rules.id_kind(&cursor), Some("tasks"));
        assert_eq!(rules.severity_at(&["tasks", "0", "priority"]), Some(Severity::Low));
        assert_eq!(rules.severity_at(&["tasks", "0", "title"]), None);
        let err = rules.add("compare.ignore[0]", "source", Rule::Ignore).unwrap_err();
        assert_eq!(
            err.to_string(),
            "compare.ignore[0]: \"source\" is not a JSON Pointer: it must be empty or start with '/'"
        );
    }
}
