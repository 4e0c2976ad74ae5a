//! `[[notify]]`: webhooks that hear of new high-severity groups, verdict
//! changes, rollbacks, drift and ramp steps.
//!
//! Must never: take a URL from the file (a webhook URL is a credential:
//! it comes from the environment variable `url_env` names), or accept a
//! trigger, a name or a bound it does not know.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::context::{is_label_char, Ctx, Missing};
use super::{ranges, ConfigError};
use crate::notify::{Sink, Trigger};
use crate::secret::Secret;

/// One `[[notify]]`, as the file gives it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    name: String,
    url_env: String,
    /// Refused with a pointer to `url_env`: a webhook URL is a credential.
    url: Option<toml::Value>,
    on: Option<Vec<String>>,
    timeout: Option<String>,
    backoff: Option<String>,
    max_attempts: Option<u32>,
}

impl Ctx<'_> {
    pub(super) fn notify(
        &self,
        raw: Vec<RawNotify>,
        env: &dyn Fn(&str) -> Option<String>,
        missing: &mut Vec<Missing>,
    ) -> Result<Vec<Sink>, ConfigError> {
        let mut sinks: Vec<Sink> = Vec::with_capacity(raw.len());
        for (index, raw) in raw.into_iter().enumerate() {
            let key = |field: &str| format!("notify[{index}].{field}");
            if raw.name.is_empty() || !raw.name.chars().all(is_label_char) {
                return Err(self.invalid(key("name"), "expected letters, digits, '-', '_' or '.'"));
            }
            if sinks.iter().any(|sink| sink.name == raw.name) {
                return Err(self.invalid(key("name"), format!("\"{}\" names two sinks", raw.name)));
            }
            if raw.url.is_some() {
                return Err(self.invalid(
                    key("url"),
                    "a webhook URL is a credential and never goes in the file: put it in an environment variable and name that in url_env",
                ));
            }
            let url = self.sink_url(&key("url_env"), raw.url_env.clone(), env, missing)?;
            let on = match raw.on {
                None => Trigger::ALL.into_iter().collect(),
                Some(names) => self.triggers(&key("on"), &names)?,
            };
            let max_attempts = raw.max_attempts.unwrap_or(10);
            if !(1..=100).contains(&max_attempts) {
                return Err(self.invalid(key("max_attempts"), format!("expected 1 to 100, got {max_attempts}")));
            }
            sinks.push(Sink {
                name: raw.name,
                url_env: raw.url_env,
                url,
                on,
                timeout: self.duration(
                    &key("timeout"),
                    raw.timeout.as_deref().unwrap_or("10s"),
                    ranges::NOTIFY_TIMEOUT,
                )?,
                backoff: self.duration(
                    &key("backoff"),
                    raw.backoff.as_deref().unwrap_or("2s"),
                    ranges::NOTIFY_BACKOFF,
                )?,
                max_attempts,
            });
        }
        Ok(sinks)
    }

    /// The URL from the environment variable `variable`: http or https;
    /// an empty one (noted in `missing`) when it is not set, so one error
    /// can name every variable that is missing.
    fn sink_url(
        &self,
        key: &str,
        variable: String,
        env: &dyn Fn(&str) -> Option<String>,
        missing: &mut Vec<Missing>,
    ) -> Result<Secret, ConfigError> {
        let Some(text) = self.env_value(key, &variable, env, missing)? else {
            return Ok(Secret::new(String::new()));
        };
        // The URL is a credential: errors name the variable, never the value.
        match reqwest::Url::parse(&text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => Ok(Secret::new(text)),
            _ => Err(self.invalid(key, format!("${variable} does not hold an http:// or https:// URL"))),
        }
    }

    fn triggers(&self, key: &str, names: &[String]) -> Result<BTreeSet<Trigger>, ConfigError> {
        if names.is_empty() {
            return Err(self.invalid(
                key,
                "give at least one of group, verdict, rollback, drift, ramp (or leave `on` out for all)",
            ));
        }
        names
            .iter()
            .map(|name| {
                Trigger::parse(name).ok_or_else(|| {
                    self.invalid(
                        key,
                        format!("unknown trigger \"{name}\": expected group, verdict, rollback, drift or ramp"),
                    )
                })
            })
            .collect()
    }
}
