//! `[readiness]` and `[rollback]`: the report's gates, and when a serving
//! candidate is switched back by itself.
//!
//! Must never: accept a fraction outside 0 to 1, or a rollback with nothing
//! that makes the candidate fail.

use std::time::Duration;

use serde::Deserialize;

use super::context::Ctx;
use super::{ranges, ConfigError};
use crate::mode::RollbackRule;
use crate::report::Readiness;

/// `[readiness]`: the report's gates.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReadiness {
    min_duration: Option<String>,
    min_compared_per_route: Option<u64>,
    min_match_rate: Option<f64>,
    max_shadow_error_rate: Option<f64>,
    shadow_p95_max: Option<String>,
    shadow_p95_slack: Option<String>,
    unmapped_window: Option<String>,
}

/// `[rollback]`: switch back when the serving candidate misbehaves.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRollback {
    error_rate: Option<f64>,
    p95: Option<String>,
    window: Option<String>,
    min_requests: Option<u64>,
}

impl Ctx<'_> {
    pub(super) fn readiness(&self, raw: RawReadiness) -> Result<Readiness, ConfigError> {
        let defaults = Readiness::default();
        let fraction = |key: &str, value: Option<f64>, default: f64| match value {
            None => Ok(default),
            Some(value) if (0.0..=1.0).contains(&value) => Ok(value),
            Some(value) => Err(self.invalid(key, format!("expected a fraction from 0.0 to 1.0, got {value}"))),
        };
        let duration = |key: &str, value: Option<String>, default: Duration, bounds| match value {
            None => Ok(default),
            Some(text) => self.duration(key, &text, bounds),
        };
        Ok(Readiness {
            min_duration: duration(
                "readiness.min_duration",
                raw.min_duration,
                defaults.min_duration,
                ranges::READINESS_WINDOW,
            )?,
            min_compared_per_route: raw.min_compared_per_route.unwrap_or(defaults.min_compared_per_route),
            min_match_rate: fraction("readiness.min_match_rate", raw.min_match_rate, defaults.min_match_rate)?,
            max_shadow_error_rate: fraction(
                "readiness.max_shadow_error_rate",
                raw.max_shadow_error_rate,
                defaults.max_shadow_error_rate,
            )?,
            shadow_p95_max: duration(
                "readiness.shadow_p95_max",
                raw.shadow_p95_max,
                defaults.shadow_p95_max,
                ranges::LATENCY_LIMIT,
            )?,
            shadow_p95_slack: duration(
                "readiness.shadow_p95_slack",
                raw.shadow_p95_slack,
                defaults.shadow_p95_slack,
                ranges::LATENCY_LIMIT,
            )?,
            unmapped_window: duration(
                "readiness.unmapped_window",
                raw.unmapped_window,
                defaults.unmapped_window,
                ranges::READINESS_WINDOW,
            )?,
        })
    }

    pub(super) fn rollback(&self, raw: RawRollback) -> Result<RollbackRule, ConfigError> {
        if raw.error_rate.is_none() && raw.p95.is_none() {
            return Err(self.invalid(
                "rollback",
                "give error_rate (a fraction) and/or p95 (a duration): what makes the candidate fail",
            ));
        }
        if let Some(rate) = raw.error_rate.filter(|rate| !(0.0..=1.0).contains(rate)) {
            return Err(self.invalid(
                "rollback.error_rate",
                format!("expected a fraction from 0.0 to 1.0, got {rate}"),
            ));
        }
        Ok(RollbackRule {
            error_rate: raw.error_rate,
            p95: raw
                .p95
                .map(|text| self.duration("rollback.p95", &text, ranges::LATENCY_LIMIT))
                .transpose()?,
            window: self.duration(
                "rollback.window",
                raw.window.as_deref().unwrap_or("5m"),
                ranges::ROLLBACK_WINDOW,
            )?,
            min_requests: raw.min_requests.unwrap_or(20),
        })
    }
}
