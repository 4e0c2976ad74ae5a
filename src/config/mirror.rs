//! `[mirror]` and `[[sweep]]`: how much is mirrored and buffered, and the
//! synthetic reads sent to both sides on a schedule.
//!
//! Must never: accept a limit that leaves no body comparable (a buffer
//! smaller than one body), or a sweep that writes.

use std::sync::Arc;

use serde::Deserialize;

use super::context::{id_kind, Ctx};
use super::{ranges, ConfigError};
use crate::mirror::{ComparePriority, MirrorConfig, Sweep, Unmatched};
use crate::route::RouteTable;
use crate::units::parse_rate;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMirror {
    #[serde(default = "default_queue")]
    queue: usize,
    #[serde(default = "default_max_body")]
    max_body: String,
    #[serde(default = "default_max_buffered")]
    max_buffered: String,
    #[serde(default = "default_max_decoded")]
    max_decoded: String,
    #[serde(default = "default_unmatched")]
    unmatched: String,
    #[serde(default = "default_workers")]
    workers: usize,
    #[serde(default = "default_compare_priority")]
    compare_priority: String,
    #[serde(default = "default_write_wait")]
    write_wait: String,
    #[serde(default = "default_max_in_flight")]
    max_in_flight: usize,
}

impl Default for RawMirror {
    fn default() -> Self {
        RawMirror {
            queue: default_queue(),
            max_body: default_max_body(),
            max_buffered: default_max_buffered(),
            max_decoded: default_max_decoded(),
            unmatched: default_unmatched(),
            workers: default_workers(),
            write_wait: default_write_wait(),
            compare_priority: default_compare_priority(),
            max_in_flight: default_max_in_flight(),
        }
    }
}

fn default_queue() -> usize {
    10_000
}
fn default_max_body() -> String {
    "1MiB".into()
}
fn default_max_buffered() -> String {
    "256MiB".into()
}
fn default_max_decoded() -> String {
    "16MiB".into()
}
fn default_unmatched() -> String {
    "reads".into()
}
fn default_write_wait() -> String {
    "2s".into()
}
fn default_workers() -> usize {
    1
}
fn default_max_in_flight() -> usize {
    256
}
fn default_compare_priority() -> String {
    "idle".into()
}

/// One `[[sweep]]`: synthetic reads sent to both sides on a schedule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSweep {
    name: Option<String>,
    request: String,
    every: Option<String>,
    ids: Option<String>,
    rate: Option<String>,
}

impl Ctx<'_> {
    pub(super) fn mirror(&self, raw: RawMirror) -> Result<MirrorConfig, ConfigError> {
        if raw.queue == 0 {
            return Err(self.invalid("mirror.queue", "must be at least 1"));
        }
        if raw.workers == 0 || raw.workers > 64 {
            return Err(self.invalid("mirror.workers", "expected 1 to 64 comparison threads"));
        }
        if raw.max_in_flight == 0 || raw.max_in_flight > 65_536 {
            return Err(self.invalid(
                "mirror.max_in_flight",
                "expected 1 to 65536 requests in flight to one upstream",
            ));
        }
        let max_body = self.size("mirror.max_body", &raw.max_body, ranges::BODY_SIZE)?;
        let max_buffered = self.size("mirror.max_buffered", &raw.max_buffered, ranges::BUFFERED_SIZE)?;
        let max_decoded = self.size("mirror.max_decoded", &raw.max_decoded, ranges::BODY_SIZE)?;
        if max_decoded < max_body {
            return Err(self.invalid(
                "mirror.max_decoded",
                format!("must be at least mirror.max_body ({})", raw.max_body),
            ));
        }
        if raw.queue > 1_000_000 {
            return Err(self.invalid("mirror.queue", "must be at most 1000000"));
        }
        if max_buffered < max_body {
            return Err(self.invalid(
                "mirror.max_buffered",
                format!(
                    "must be at least mirror.max_body ({}), or no body could ever be compared",
                    raw.max_body
                ),
            ));
        }
        let unmatched = match raw.unmatched.as_str() {
            "reads" => Unmatched::Reads,
            "off" => Unmatched::Off,
            other => {
                return Err(self.invalid(
                    "mirror.unmatched",
                    format!("expected \"reads\" or \"off\", got \"{other}\""),
                ))
            }
        };
        let compare_priority = match raw.compare_priority.as_str() {
            "idle" => ComparePriority::Idle,
            "normal" => ComparePriority::Normal,
            other => {
                return Err(self.invalid(
                    "mirror.compare_priority",
                    format!("expected \"idle\" or \"normal\", got \"{other}\""),
                ))
            }
        };
        Ok(MirrorConfig {
            compare_priority,
            queue: raw.queue,
            max_body,
            max_buffered,
            max_decoded,
            unmatched,
            workers: raw.workers,
            write_wait: self.duration("mirror.write_wait", &raw.write_wait, ranges::WRITE_WAIT)?,
            max_in_flight: raw.max_in_flight,
        })
    }

    pub(super) fn sweeps(&self, raws: Vec<RawSweep>, routes: &RouteTable) -> Result<Vec<Sweep>, ConfigError> {
        let mut sweeps: Vec<Sweep> = Vec::with_capacity(raws.len());
        for (index, raw) in raws.into_iter().enumerate() {
            let key = |field: &str| format!("sweep[{index}].{field}");
            let mut request = crate::route::RequestTemplate::parse(&raw.request)
                .map_err(|err| self.invalid(key("request"), err.to_string()))?;
            if !crate::route::is_safe(&request.method) {
                return Err(self.invalid(key("request"), "a sweep only reads: use GET or HEAD"));
            }
            let placeholders: Vec<String> = request.placeholders().map(str::to_string).collect();
            match (&raw.ids, placeholders.as_slice()) {
                (None, []) => {}
                (Some(kind), [_]) => id_kind(kind).map_err(|message| self.invalid(key("ids"), message))?,
                (None, _) => {
                    return Err(self.invalid(
                        key("request"),
                        "a {placeholder} needs `ids = \"kind\"` (the IDs to read one by one come from the ID map)",
                    ))
                }
                (Some(_), _) => {
                    return Err(self.invalid(key("request"), "with `ids`, the request has exactly one {placeholder}"))
                }
            }
            let probe = request.path(&|_| Some("id".to_string())).unwrap_or_default();
            if let Some(route) = routes.find(&request.method, &probe) {
                request.route = route.name.clone();
                request.rules = Arc::clone(&route.compare);
            }
            let name = raw.name.unwrap_or_else(|| raw.request.clone());
            if sweeps.iter().any(|sweep| sweep.name == name) {
                return Err(self.invalid(key("name"), format!("another sweep is named \"{name}\"")));
            }
            sweeps.push(Sweep {
                name,
                every: self.duration(
                    &key("every"),
                    raw.every.as_deref().unwrap_or("10m"),
                    ranges::SWEEP_EVERY,
                )?,
                rate: parse_rate(raw.rate.as_deref().unwrap_or("1/s"))
                    .map_err(|message| self.invalid(key("rate"), message))?,
                ids: raw.ids,
                request,
            });
        }
        Ok(sweeps)
    }
}
