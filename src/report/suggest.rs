//! The compare rule that would make an accepted group's difference a match
//! from now on, as `[route.compare]` text to paste: an ignore, a time or
//! number tolerance, `null_equals_missing`, `trim`, `case_insensitive` or
//! `allow_extra_fields`, read off the group's own differences.
//!
//! Must never: suggest a rule for a group nobody accepted (that would
//! normalize a bug away), or one looser than the differences it has seen.

use super::evidence::GroupEvidence;

/// The rule for an accepted group, when one is obvious.
pub fn rule(group: &GroupEvidence) -> Option<String> {
    if group.status != "accepted" || group.pattern.is_empty() || group.differences.is_empty() {
        return None;
    }
    let pattern = toml_string(&group.pattern);
    let values: Vec<(serde_json::Value, serde_json::Value)> = group
        .differences
        .iter()
        .map(|d| (json(&d.primary), json(&d.shadow)))
        .collect();
    match group.kind.as_str() {
        "missing_in_shadow" if values.iter().all(|(primary, _)| primary.is_null()) => {
            Some(format!("null_equals_missing = [{pattern}]"))
        }
        "extra_in_shadow" if !group.pattern.ends_with("/*") => Some("allow_extra_fields = true".to_string()),
        "value_changed" => Some(value_rule(&pattern, &values)),
        "missing_in_shadow" | "extra_in_shadow" | "type_changed" | "number_format" => {
            Some(format!("ignore = [{pattern}]"))
        }
        _ => None,
    }
}

/// For changed values: the narrowest rule that covers every one seen.
fn value_rule(pattern: &str, values: &[(serde_json::Value, serde_json::Value)]) -> String {
    let instants: Option<Vec<i64>> = values
        .iter()
        .map(|(a, b)| Some((instant(a)? - instant(b)?).abs()))
        .collect();
    if let Some(gaps) = instants {
        let widest = gaps.into_iter().max().unwrap_or(0);
        return format!("time_tolerance = {{ {pattern} = \"{}\" }}", duration(widest));
    }
    let numbers: Option<Vec<f64>> = values
        .iter()
        .map(|(a, b)| Some((a.as_f64()? - b.as_f64()?).abs()))
        .collect();
    if let Some(gaps) = numbers {
        let widest = gaps.into_iter().fold(0.0, f64::max);
        return format!("number_tolerance = {{ {pattern} = \"{}\" }}", number(widest));
    }
    let strings = |same: fn(&str, &str) -> bool| {
        values.iter().all(|(a, b)| match (a.as_str(), b.as_str()) {
            (Some(a), Some(b)) => same(a, b),
            _ => false,
        })
    };
    if strings(|a, b| a.trim() == b.trim()) {
        return format!("trim = [{pattern}]");
    }
    if strings(|a, b| a.to_lowercase() == b.to_lowercase()) {
        return format!("case_insensitive = [{pattern}]");
    }
    format!("ignore = [{pattern}]")
}

/// A stored value (JSON text) as JSON; `null` when absent or unreadable.
fn json(text: &Option<String>) -> serde_json::Value {
    text.as_deref()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// An RFC 3339 instant in milliseconds.
fn instant(value: &serde_json::Value) -> Option<i64> {
    Some(
        chrono::DateTime::parse_from_rfc3339(value.as_str()?)
            .ok()?
            .timestamp_millis(),
    )
}

/// A gap as a tolerance, rounded up: whole seconds from a second on.
fn duration(millis: i64) -> String {
    if millis >= 1000 {
        format!("{}s", (millis + 999) / 1000)
    } else {
        format!("{}ms", millis.max(1))
    }
}

/// A gap as a number tolerance, rounded up at its fourth significant digit.
fn number(gap: f64) -> String {
    if gap == 0.0 || !gap.is_finite() {
        return "0".to_string();
    }
    let scale = 10f64.powi(3 - gap.log10().floor() as i32);
    let rounded = (gap * scale).ceil() / scale;
    let text = format!("{rounded:.6}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::super::evidence::ShownDifference;
    use super::*;

    fn group(kind: &str, pattern: &str, status: &str, values: &[(&str, &str)]) -> GroupEvidence {
        GroupEvidence {
            key: "k".into(),
            route: "r".into(),
            method: "GET".into(),
            pattern: pattern.into(),
            kind: kind.into(),
            severity: "medium".into(),
            summary: String::new(),
            status: status.into(),
            note: None,
            count: 1,
            share: None,
            first_seen_ms: 0,
            last_seen_ms: 0,
            differences: values
                .iter()
                .map(|(primary, shadow)| ShownDifference {
                    path: pattern.replace('*', "0"),
                    item: None,
                    primary: (!primary.is_empty()).then(|| primary.to_string()),
                    shadow: (!shadow.is_empty()).then(|| shadow.to_string()),
                })
                .collect(),
            example: None,
            trace_ids: Vec::new(),
            suggested_rule: None,
        }
    }

    #[test]
    fn only_an_accepted_group_gets_a_rule() {
        let open = group("value_changed", "/source", "open", &[("\"notion\"", "\"postgres\"")]);
        assert_eq!(rule(&open), None);
        let accepted = GroupEvidence {
            status: "accepted".into(),
            ..open
        };
        assert_eq!(rule(&accepted).as_deref(), Some(r#"ignore = ["/source"]"#));
    }

    #[test]
    fn the_rule_is_the_narrowest_that_covers_what_was_seen() {
        let times = group(
            "value_changed",
            "/tasks/*/createdAt",
            "accepted",
            &[
                ("\"2026-12-03T17:28:53.343Z\"", "\"2026-12-03T17:28:53Z\""),
                ("\"2026-12-03T17:28:53Z\"", "\"2026-12-03T17:28:55.100Z\""),
            ],
        );
        assert_eq!(
            rule(&times).as_deref(),
            Some(r#"time_tolerance = { "/tasks/*/createdAt" = "3s" }"#)
        );
        let prices = group(
            "value_changed",
            "/price",
            "accepted",
            &[("10.0", "10.004"), ("3", "2.9999")],
        );
        assert_eq!(
            rule(&prices).as_deref(),
            Some(r#"number_tolerance = { "/price" = "0.004" }"#)
        );
        let titles = group("value_changed", "/title", "accepted", &[("\"a \"", "\"a\"")]);
        assert_eq!(rule(&titles).as_deref(), Some(r#"trim = ["/title"]"#));
        let statuses = group("value_changed", "/status", "accepted", &[("\"Done\"", "\"done\"")]);
        assert_eq!(rule(&statuses).as_deref(), Some(r#"case_insensitive = ["/status"]"#));
        let nulls = group("missing_in_shadow", "/context", "accepted", &[("null", "")]);
        assert_eq!(rule(&nulls).as_deref(), Some(r#"null_equals_missing = ["/context"]"#));
        let extra = group("extra_in_shadow", "/taskId", "accepted", &[("", "\"t-1\"")]);
        assert_eq!(rule(&extra).as_deref(), Some("allow_extra_fields = true"));
        let renamed = group("renamed", "/dueDate", "accepted", &[("\"dueDate\"", "\"due_date\"")]);
        assert_eq!(rule(&renamed), None, "no rule renames a key");
    }
}
