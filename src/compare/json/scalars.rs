//! Scalars in the walk: numbers compared by value (and within a tolerance
//! when a rule gives one), timestamps as instants (within a tolerance).
//!
//! Must never: call two numbers equal that differ in value, unless a
//! tolerance rule covers them.

use serde_json::{Number, Value};

use crate::compare::pointer::Cursor;
use crate::compare::rules::Rule;
use crate::compare::Kind;

use super::*;

impl<'a> Differ<'a> {
    pub(super) fn diff_numbers(
        &mut self,
        p: &Number,
        s: &Number,
        primary: &Value,
        shadow: &Value,
        cursor: &Cursor,
        path: &[Segment<'_>],
    ) {
        let tolerance = self.rules.at(cursor).find_map(|rule| match rule {
            Rule::NumberTolerance(tolerance) => Some(*tolerance),
            _ => None,
        });
        if let (Some(tolerance), Some(a), Some(b)) = (tolerance, p.as_f64(), s.as_f64()) {
            if tolerance.accepts(a, b) {
                return;
            }
        }
        let kind = match (canonical_decimal(&p.to_string()), canonical_decimal(&s.to_string())) {
            (Some(a), Some(b)) if a == b => Kind::NumberFormat,
            _ => Kind::ValueChanged,
        };
        self.changed(kind, primary, shadow, path);
    }

    pub(super) fn within_time_tolerance(&self, p: &str, s: &str, cursor: &Cursor) -> bool {
        let Some(tolerance) = self.rules.at(cursor).find_map(|rule| match rule {
            Rule::TimeTolerance(duration) => Some(*duration),
            _ => None,
        }) else {
            return false;
        };
        let midnight = self.rules.dates_as_midnight_utc;
        match (instant_nanos(p, midnight), instant_nanos(s, midnight)) {
            (Some(a), Some(b)) => a.abs_diff(b) <= tolerance.as_nanos(),
            _ => false,
        }
    }
}

/// A JSON number's exact value as (negative, significant digits, exponent),
/// so `1`, `1.0` and `10e-1` are recognized as the same number written
/// differently. `None` if the text is not a JSON number.
pub fn canonical_decimal(text: &str) -> Option<(bool, String, i64)> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], rest[at + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (mantissa, ""),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = format!("{int}{frac}").trim_start_matches('0').to_string();
    let mut exponent = exponent.checked_sub(i64::try_from(frac.len()).ok()?)?;
    while digits.ends_with('0') {
        digits.pop();
        exponent = exponent.checked_add(1)?;
    }
    if digits.is_empty() {
        return Some((false, String::new(), 0));
    }
    Some((negative, digits, exponent))
}

/// Parses an RFC 3339 date-time (any offset, any precision) as nanoseconds
/// since the epoch; a date-only value counts as midnight UTC when allowed.
pub fn instant_nanos(text: &str, dates_as_midnight_utc: bool) -> Option<i128> {
    if let Ok(moment) = chrono::DateTime::parse_from_rfc3339(text) {
        let seconds = i128::from(moment.timestamp());
        return Some(seconds * 1_000_000_000 + i128::from(moment.timestamp_subsec_nanos()));
    }
    if dates_as_midnight_utc && text.len() == 10 {
        let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
        let seconds = i128::from(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp());
        return Some(seconds * 1_000_000_000);
    }
    None
}
