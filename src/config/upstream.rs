//! `[primary]` and `[shadow]`: where each side is and how it is reached.
//!
//! Must never: let a credential through in the file (it comes from the
//! environment), or rate-limit the primary.

use std::collections::BTreeMap;
use std::path::PathBuf;

use http::HeaderName;
use serde::Deserialize;

use super::context::{is_label_char, Ctx, Missing};
use super::{ranges, ConfigError, PRIMARY_URL_ENV, SHADOW_URL_ENV};
use crate::secret::Secret;
use crate::units::parse_rate;
use crate::upstream::{SetHeader, SideHeaders, UpstreamConfig};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    name: String,
    url: String,
    timeout: Option<String>,
    connect_timeout: Option<String>,
    host: Option<String>,
    rate_limit: Option<String>,
    ca_file: Option<PathBuf>,
    write_tries: Option<u32>,
    #[serde(default)]
    replay_headers: BTreeMap<String, String>,
    #[serde(default)]
    headers: RawSideHeaders,
}

/// `[primary.headers]` / `[shadow.headers]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSideHeaders {
    /// Header name → the environment variable its value is read from.
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// Headers a side's `set` or `remove` may not touch besides the hop-by-hop
/// ones: Host has its own key, and the rest frame the message, which cutover owns.
const MESSAGE_HEADERS: [&str; 4] = ["host", "content-length", "expect", "trailer"];

/// The headers cutover itself sets on requests to either side, with their
/// values, which no kept text may carry.
pub(super) fn sent_headers(primary: &UpstreamConfig, shadow: &UpstreamConfig) -> Vec<(HeaderName, Secret)> {
    [primary, shadow]
        .into_iter()
        .flat_map(|side| {
            let set = side
                .headers
                .set
                .iter()
                .map(|header| (header.name.clone(), header.value.clone()));
            set.chain(side.replay_headers.iter().cloned())
        })
        .collect()
}

impl Ctx<'_> {
    /// Both sides, with the rules that hold between them: only the shadow
    /// is rate-limited, and the names differ.
    pub(super) fn upstreams(
        &self,
        primary: RawUpstream,
        shadow: RawUpstream,
        env: &dyn Fn(&str) -> Option<String>,
        missing: &mut Vec<Missing>,
    ) -> Result<(UpstreamConfig, UpstreamConfig), ConfigError> {
        let primary = self.upstream("primary", primary, PRIMARY_URL_ENV, "30s", env, missing)?;
        let shadow = self.upstream("shadow", shadow, SHADOW_URL_ENV, "10s", env, missing)?;
        for (section, side) in [("primary", &primary), ("shadow", &shadow)] {
            for (name, _) in &side.replay_headers {
                let conflict = if side.headers.set.iter().any(|set| set.name == name) {
                    Some("set")
                } else if side.headers.remove.contains(name) {
                    Some("remove")
                } else {
                    None
                };
                if let Some(list) = conflict {
                    return Err(self.invalid(
                        format!("{section}.replay_headers.\"{name}\""),
                        format!(
                            "\"{name}\" is also in {section}.headers.{list}, which applies to every request to the {section}, replays and rechecks included; keep it in one place"
                        ),
                    ));
                }
            }
        }
        if primary.rate_limit.is_some() {
            return Err(self.invalid(
                "primary.rate_limit",
                "the primary is never rate-limited by cutover; set rate_limit on [shadow]",
            ));
        }
        if primary.name == shadow.name {
            return Err(self.invalid(
                "shadow.name",
                format!("must differ from primary.name (both are \"{}\")", shadow.name),
            ));
        }
        Ok((primary, shadow))
    }

    fn upstream(
        &self,
        section: &str,
        raw: RawUpstream,
        url_env: &str,
        default_timeout: &str,
        env: &dyn Fn(&str) -> Option<String>,
        missing: &mut Vec<Missing>,
    ) -> Result<UpstreamConfig, ConfigError> {
        let key = |field: &str| format!("{section}.{field}");
        if raw.name.trim().is_empty() || !raw.name.chars().all(is_label_char) {
            return Err(self.invalid(
                key("name"),
                format!(
                    "expected a short name of letters, digits, '-', '_' or '.', got \"{}\"",
                    raw.name
                ),
            ));
        }
        let url = self.upstream_url(section, raw.url, url_env, env)?;
        let timeout = self.duration(
            &key("timeout"),
            raw.timeout.as_deref().unwrap_or(default_timeout),
            ranges::UPSTREAM_TIMEOUT,
        )?;
        let connect_timeout = self.duration(
            &key("connect_timeout"),
            raw.connect_timeout.as_deref().unwrap_or("5s"),
            ranges::CONNECT_TIMEOUT,
        )?;
        let host = match raw.host {
            None => None,
            Some(host) => Some(
                http::HeaderValue::from_str(&host)
                    .map_err(|_| self.invalid(key("host"), format!("not a valid Host header value: \"{host}\"")))?,
            ),
        };
        let rate_limit = match raw.rate_limit {
            None => None,
            Some(text) => Some(parse_rate(&text).map_err(|message| self.invalid(key("rate_limit"), message))?),
        };
        if let Some(ca) = &raw.ca_file {
            if !ca.is_file() {
                return Err(self.invalid(key("ca_file"), format!("no such file: {}", ca.display())));
            }
        }
        let write_tries = raw.write_tries.unwrap_or(3);
        if !(1..=10).contains(&write_tries) {
            return Err(self.invalid(key("write_tries"), format!("expected 1 to 10 tries, got {write_tries}")));
        }
        let replay_headers = self.replay_headers(section, raw.replay_headers, env, missing)?;
        let headers = self.side_headers(section, raw.headers, env, missing)?;
        Ok(UpstreamConfig {
            headers,
            name: raw.name,
            write_tries,
            replay_headers,
            url,
            timeout,
            connect_timeout,
            host,
            rate_limit,
            ca_file: raw.ca_file,
        })
    }

    /// The URL from the environment variable `url_env` when it is set, else
    /// from the file, where it must not carry credentials.
    fn upstream_url(
        &self,
        section: &str,
        file_url: String,
        url_env: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<reqwest::Url, ConfigError> {
        let url_override = env(url_env);
        let from_env = url_override.is_some();
        let url_text = url_override.unwrap_or(file_url);
        let url_key = if from_env {
            format!("{section}.url (from ${url_env})")
        } else {
            format!("{section}.url")
        };
        let url = reqwest::Url::parse(&url_text).map_err(|err| self.invalid(&url_key, format!("not a URL: {err}")))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(self.invalid(
                &url_key,
                format!("expected an http:// or https:// URL, got scheme \"{}\"", url.scheme()),
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(self.invalid(&url_key, "the URL has no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(self.invalid(&url_key, "the URL must not have a query or fragment"));
        }
        if !from_env && (!url.username().is_empty() || url.password().is_some()) {
            return Err(self.invalid(
                &url_key,
                format!("contains credentials; secrets never go in the file: set ${url_env} instead"),
            ));
        }
        Ok(url)
    }

    /// `replay_headers`: each value is read from the environment variable it names.
    fn replay_headers(
        &self,
        section: &str,
        raw: BTreeMap<String, String>,
        env: &dyn Fn(&str) -> Option<String>,
        missing: &mut Vec<Missing>,
    ) -> Result<Vec<(HeaderName, Secret)>, ConfigError> {
        let mut replay_headers = Vec::new();
        for (name, variable) in raw {
            let header_key = format!("{section}.replay_headers.\"{name}\"");
            let header = self.header_name(&header_key, &name)?;
            if let Some(value) = self.header_value(&header_key, variable, env, missing)? {
                replay_headers.push((header, value));
            }
        }
        Ok(replay_headers)
    }

    /// `[section.headers]`: `remove` then `set`, neither touching the headers
    /// that frame the message, and no name in both.
    fn side_headers(
        &self,
        section: &str,
        raw: RawSideHeaders,
        env: &dyn Fn(&str) -> Option<String>,
        missing: &mut Vec<Missing>,
    ) -> Result<SideHeaders, ConfigError> {
        let framing = |key: &str, header: &HeaderName| {
            let name = header.as_str();
            if MESSAGE_HEADERS.contains(&name) || crate::headers::HOP_BY_HOP.contains(&name) {
                let hint = if header == http::header::HOST {
                    format!("set {section}.host instead")
                } else {
                    "cutover frames every message and connection itself".to_string()
                };
                return Err(self.invalid(key, format!("\"{header}\" cannot be changed per side: {hint}")));
            }
            Ok(())
        };
        let mut headers = SideHeaders::default();
        for (index, name) in raw.remove.iter().enumerate() {
            let key = format!("{section}.headers.remove[{index}]");
            let header = self.header_name(&key, name)?;
            framing(&key, &header)?;
            if !headers.remove.contains(&header) {
                headers.remove.push(header);
            }
        }
        for (name, variable) in raw.set {
            let key = format!("{section}.headers.set.\"{name}\"");
            let header = self.header_name(&key, &name)?;
            framing(&key, &header)?;
            if headers.remove.contains(&header) {
                return Err(self.invalid(
                    &key,
                    format!(
                        "\"{header}\" is also in {section}.headers.remove; set already replaces the client's value"
                    ),
                ));
            }
            if let Some(value) = self.header_value(&key, variable.clone(), env, missing)? {
                headers.set.push(SetHeader {
                    name: header,
                    variable,
                    value,
                });
            }
        }
        Ok(headers)
    }

    fn header_name(&self, key: &str, name: &str) -> Result<HeaderName, ConfigError> {
        HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|_| self.invalid(key, format!("not a valid header name: \"{name}\"")))
    }

    /// The value of the environment variable `variable`, checked as a header
    /// value; `None` (noted in `missing`) when it is not set or empty, so
    /// one error can name every variable that is missing.
    fn header_value(
        &self,
        key: &str,
        variable: String,
        env: &dyn Fn(&str) -> Option<String>,
        missing: &mut Vec<Missing>,
    ) -> Result<Option<Secret>, ConfigError> {
        let Some(value) = self.env_value(key, &variable, env, missing)? else {
            return Ok(None);
        };
        if http::HeaderValue::from_str(&value).is_err() {
            return Err(self.invalid(
                key,
                format!("the value of ${variable} is not a valid header value (control characters or non-ASCII)"),
            ));
        }
        Ok(Some(Secret::new(value)))
    }
}
