//! `[store]`: where evidence is kept and how it is written.
//!
//! Must never: accept a password in the file (it comes from
//! `CUTOVER_STORE_URL`).

use serde::Deserialize;

use super::context::Ctx;
use super::{ranges, ConfigError, STORE_URL_ENV};
use crate::store::{KeepMatches, StoreOptions, WriterConfig};

/// `[store]`: where evidence is kept and how it is written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    #[serde(default = "default_store_url")]
    url: String,
    #[serde(default = "default_store_batch")]
    batch: usize,
    #[serde(default = "default_store_flush")]
    flush: String,
    #[serde(default = "default_store_buffer")]
    buffer: usize,
    #[serde(default = "default_store_connections")]
    max_connections: u32,
    #[serde(default = "default_acquire_timeout")]
    acquire_timeout: String,
    #[serde(default = "default_samples_per_group")]
    samples_per_group: u32,
    #[serde(default = "default_retention")]
    retention: String,
    #[serde(default = "default_rollup_retention")]
    rollup_retention: String,
    #[serde(default = "default_keep_matches")]
    keep_matches: String,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            url: default_store_url(),
            batch: default_store_batch(),
            flush: default_store_flush(),
            buffer: default_store_buffer(),
            max_connections: default_store_connections(),
            acquire_timeout: default_acquire_timeout(),
            samples_per_group: default_samples_per_group(),
            retention: default_retention(),
            rollup_retention: default_rollup_retention(),
            keep_matches: default_keep_matches(),
        }
    }
}

fn default_store_url() -> String {
    crate::store::DEFAULT_URL.into()
}
fn default_store_batch() -> usize {
    200
}
fn default_store_flush() -> String {
    "1s".into()
}
fn default_store_buffer() -> usize {
    50_000
}
fn default_store_connections() -> u32 {
    5
}
fn default_acquire_timeout() -> String {
    "5s".into()
}
fn default_samples_per_group() -> u32 {
    5
}
fn default_retention() -> String {
    "14d".into()
}
fn default_rollup_retention() -> String {
    "90d".into()
}
fn default_keep_matches() -> String {
    "10/s".into()
}

impl Ctx<'_> {
    pub(super) fn store(&self, raw: RawStore, url_override: Option<String>) -> Result<WriterConfig, ConfigError> {
        let from_env = url_override.is_some();
        let url = url_override.unwrap_or(raw.url);
        let key = if from_env {
            format!("store.url (from ${STORE_URL_ENV})")
        } else {
            "store.url".to_string()
        };
        if crate::store::Engine::of(&url).is_none() {
            return Err(self.invalid(key, format!("expected sqlite://PATH or postgres://…, got \"{url}\"")));
        }
        if !from_env && reqwest::Url::parse(&url).is_ok_and(|parsed| parsed.password().is_some()) {
            return Err(self.invalid(
                key,
                format!("contains a password; secrets never go in the file: set ${STORE_URL_ENV} instead"),
            ));
        }
        if raw.batch == 0 || raw.buffer == 0 || raw.max_connections == 0 {
            return Err(self.invalid("store", "batch, buffer and max_connections must be at least 1"));
        }
        let retention = self.duration("store.retention", &raw.retention, ranges::RETENTION)?;
        let rollup_retention = self.duration("store.rollup_retention", &raw.rollup_retention, ranges::RETENTION)?;
        if rollup_retention < retention {
            return Err(self.invalid(
                "store.rollup_retention",
                format!(
                    "\"{}\" is shorter than store.retention (\"{}\"): the counts would go before the rows they count",
                    raw.rollup_retention, raw.retention
                ),
            ));
        }
        let keep_matches =
            KeepMatches::parse(&raw.keep_matches).map_err(|message| self.invalid("store.keep_matches", message))?;
        Ok(WriterConfig {
            url,
            options: StoreOptions {
                max_connections: raw.max_connections,
                acquire_timeout: self.duration(
                    "store.acquire_timeout",
                    &raw.acquire_timeout,
                    ranges::ACQUIRE_TIMEOUT,
                )?,
                samples_per_group: raw.samples_per_group,
            },
            retention,
            rollup_retention,
            keep_matches,
            batch: raw.batch,
            flush: self.duration("store.flush", &raw.flush, ranges::FLUSH)?,
            buffer: raw.buffer,
        })
    }
}
