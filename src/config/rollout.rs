//! `[rollout]` and `[route.rollout]`: the steps of a ramp onto the
//! candidate, for all routes or for one.
//!
//! Must never: accept steps that do not rise, a percent outside 0.01 to
//! 100, or a mode the candidate does not serve in.

use serde::Deserialize;

use super::context::Ctx;
use super::{ranges, ConfigError};
use crate::mode::{Mode, OnBreach, Rollout, ShareKey};

/// `[rollout]`, as the file gives it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRollout {
    steps: Vec<String>,
    hold: String,
    key: Option<String>,
    mode: Option<String>,
    on_breach: Option<String>,
}

impl Ctx<'_> {
    /// A ramp; `at` is its section (`rollout`, or `route "NAME": rollout`).
    pub(super) fn rollout(&self, at: &str, raw: RawRollout) -> Result<Rollout, ConfigError> {
        let key = |field: &str| format!("{at}.{field}");
        if raw.steps.is_empty() {
            return Err(self.invalid(key("steps"), "give the steps, e.g. [\"1%\", \"5%\", \"25%\", \"100%\"]"));
        }
        let mut steps = Vec::with_capacity(raw.steps.len());
        for text in &raw.steps {
            let hundredths = parse_percent(text).ok_or_else(|| {
                self.invalid(
                    key("steps"),
                    format!("expected a percent from 0.01% to 100%, got \"{text}\""),
                )
            })?;
            if steps.last().is_some_and(|last| *last >= hundredths) {
                return Err(self.invalid(
                    key("steps"),
                    format!("each step must be above the one before; \"{text}\" is not"),
                ));
            }
            steps.push(hundredths);
        }
        let mode = match raw.mode.as_deref().unwrap_or("candidate") {
            "candidate" => Mode::Candidate,
            "candidate-fallback" => Mode::CandidateFallback,
            other => {
                return Err(self.invalid(
                    key("mode"),
                    format!("expected \"candidate\" or \"candidate-fallback\", got \"{other}\""),
                ))
            }
        };
        let on_breach = match raw.on_breach.as_deref().unwrap_or("previous") {
            "previous" => OnBreach::Previous,
            "shadow" => OnBreach::Shadow,
            other => {
                return Err(self.invalid(
                    key("on_breach"),
                    format!("expected \"previous\" or \"shadow\", got \"{other}\""),
                ))
            }
        };
        Ok(Rollout {
            steps,
            hold: self.duration(&key("hold"), &raw.hold, ranges::ROLLOUT_HOLD)?,
            key: ShareKey::parse(raw.key.as_deref().unwrap_or("client-ip"))
                .map_err(|err| self.invalid(key("key"), err.to_string()))?,
            mode,
            on_breach,
        })
    }
}

/// `"5%"` or `"0.5%"` in hundredths of a percent (1..=10,000).
fn parse_percent(text: &str) -> Option<u64> {
    let number = text.trim().strip_suffix('%')?.trim();
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || fraction.len() > 2 {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let fraction: u64 = format!("{fraction:0<2}").parse().ok()?;
    let hundredths = whole.checked_mul(100)?.checked_add(fraction)?;
    (1..=10_000).contains(&hundredths).then_some(hundredths)
}

#[cfg(test)]
mod tests {
    use super::parse_percent;

    #[test]
    fn percents_are_read_in_hundredths() {
        assert_eq!(parse_percent("1%"), Some(100));
        assert_eq!(parse_percent("0.5%"), Some(50));
        assert_eq!(parse_percent(" 25.25% "), Some(2525));
        assert_eq!(parse_percent("100%"), Some(10_000));
        for bad in [
            "0%",
            "100.01%",
            "5",
            "%",
            "1.005%",
            "-1%",
            "1e2%",
            "five%",
            ".5%",
            "99999999999999999999%",
        ] {
            assert_eq!(parse_percent(bad), None, "{bad}");
        }
    }
}
