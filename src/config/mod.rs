//! Configuration: TOML → raw serde structs (unknown keys rejected) → a
//! validated, typed [`Config`].
//!
//! Every error names the file, the key and what was expected, e.g.
//! `config/tomos.toml: route "update-task": match: unknown method "PATHC"`.
//! Secrets never live in the file: an upstream URL with credentials in it is
//! rejected, and `CUTOVER_PRIMARY_URL` / `CUTOVER_SHADOW_URL` override the
//! URLs from the environment.
//!
//! Must never: be read anywhere but at startup (or an explicit reload), or
//! let a value through that the rest of the program would have to re-check.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use ranges::Bounds;
use serde::Deserialize;

use crate::compare::noise::NoiseConfig;
use crate::compare::rules::{CompareRules, ItemKey, Rule, RuleError, Tolerance};
use crate::exchange::Severity;
use crate::mirror::{ComparePriority, MirrorConfig, Sweep, Unmatched};
use crate::redact::Redactor;
use crate::route::{MirrorPolicy, Route, RouteError, RouteTable, SampleKey};
use crate::secret::Secret;
use crate::store::{StoreOptions, WriterConfig};
use crate::units::{parse_duration, parse_rate, parse_size};
use crate::upstream::UpstreamConfig;

pub mod ranges;

/// Environment variables that override an upstream's `url` (for URLs that
/// carry credentials, which the file must not).
pub const PRIMARY_URL_ENV: &str = "CUTOVER_PRIMARY_URL";
pub const SHADOW_URL_ENV: &str = "CUTOVER_SHADOW_URL";
/// Overrides `[store] url` (a database URL may carry a password).
pub const STORE_URL_ENV: &str = "CUTOVER_STORE_URL";

/// A configuration error, pointing at the file and key that caused it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {key}: {message}")]
    Invalid { file: String, key: String, message: String },
}

/// The validated configuration of one cutover instance.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from (a path, or a name for inline text).
    pub source: String,
    pub listen: ListenConfig,
    pub primary: UpstreamConfig,
    pub shadow: UpstreamConfig,
    pub mirror: MirrorConfig,
    pub noise: NoiseConfig,
    pub store: WriterConfig,
    pub redact: Redactor,
    pub admin: AdminConfig,
    pub idmap: IdMapConfig,
    pub readiness: crate::report::Readiness,
    /// `[rollback]`: when the serving candidate is switched back automatically.
    pub rollback: Option<crate::mode::RollbackRule>,
    /// `[[sweep]]`: synthetic comparisons on a schedule.
    pub sweeps: Vec<Sweep>,
    pub routes: RouteTable,
    /// The first 16 hex digits of the config text's SHA-256, so a report can
    /// say which configuration produced its evidence.
    pub fingerprint: String,
}

/// `[idmap]`: where ID pairs come from and how IDs are spelled.
#[derive(Debug, Clone, Default)]
pub struct IdMapConfig {
    /// Mapping files imported at startup (JSON or CSV), resolved against the config's folder.
    pub import: Vec<PathBuf>,
    pub canonical: crate::idmap::Canonical,
}

/// `[admin]`: access to the admin API.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// The environment variable holding the bearer token.
    pub token_env: String,
    /// The token, read from that variable at startup; `None` turns `/api/` off.
    pub token: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// How long shutdown waits for in-flight requests and queued comparisons.
    pub shutdown_grace: Duration,
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// How long a client may pause while sending a request body that is read before forwarding.
    pub body_read_timeout: Duration,
    /// How long a connection may send and receive nothing before it is closed.
    pub idle_timeout: Duration,
    /// Client connections open at once on the proxy port; more are closed at once.
    pub max_connections: u32,
    /// Route `match` paths compare letters regardless of ASCII case.
    pub case_insensitive_paths: bool,
}

// ---------------------------------------------------------------- raw layer

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: RawListen,
    primary: RawUpstream,
    shadow: RawUpstream,
    #[serde(default)]
    mirror: RawMirror,
    #[serde(default)]
    noise: RawNoise,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    redact: RawRedact,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    idmap: RawIdMap,
    #[serde(default)]
    readiness: RawReadiness,
    rollback: Option<RawRollback>,
    #[serde(default, rename = "sweep")]
    sweeps: Vec<RawSweep>,
    #[serde(default, rename = "route")]
    routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    #[serde(default = "default_proxy_addr")]
    proxy: String,
    #[serde(default = "default_admin_addr")]
    admin: String,
    #[serde(default = "default_shutdown_grace")]
    shutdown_grace: String,
    #[serde(default = "default_header_read_timeout")]
    header_read_timeout: String,
    #[serde(default = "default_body_read_timeout")]
    body_read_timeout: String,
    #[serde(default = "default_idle_timeout")]
    idle_timeout: String,
    #[serde(default = "default_max_connections")]
    max_connections: u32,
    #[serde(default)]
    case_insensitive_paths: bool,
}

impl Default for RawListen {
    fn default() -> Self {
        RawListen {
            proxy: default_proxy_addr(),
            admin: default_admin_addr(),
            shutdown_grace: default_shutdown_grace(),
            header_read_timeout: default_header_read_timeout(),
            body_read_timeout: default_body_read_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            case_insensitive_paths: false,
        }
    }
}

fn default_proxy_addr() -> String {
    "0.0.0.0:8080".into()
}
fn default_admin_addr() -> String {
    "127.0.0.1:9901".into()
}
fn default_shutdown_grace() -> String {
    "10s".into()
}
fn default_body_read_timeout() -> String {
    "30s".into()
}
fn default_idle_timeout() -> String {
    "60s".into()
}
fn default_max_connections() -> u32 {
    10_000
}
fn default_header_read_timeout() -> String {
    "10s".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
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
}

/// One `[[sweep]]`: synthetic reads sent to both sides on a schedule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    name: Option<String>,
    request: String,
    every: Option<String>,
    ids: Option<String>,
    rate: Option<String>,
}

/// `[rollback]`: switch back when the serving candidate misbehaves.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRollback {
    error_rate: Option<f64>,
    p95: Option<String>,
    window: Option<String>,
    min_requests: Option<u64>,
}

/// `[readiness]`: the report's gates.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReadiness {
    min_duration: Option<String>,
    min_compared_per_route: Option<u64>,
    min_match_rate: Option<f64>,
    max_shadow_error_rate: Option<f64>,
    shadow_p95_max: Option<String>,
    unmapped_window: Option<String>,
}

/// `[idmap]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdMap {
    #[serde(default)]
    import: Vec<PathBuf>,
    canonical: Option<String>,
}

/// One `learn_ids` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLearn {
    kind: String,
    primary: String,
    shadow: String,
}

/// `[route.translate]`: request IDs rewritten for the shadow, besides `{param:kind}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTranslate {
    #[serde(default)]
    query: BTreeMap<String, String>,
    #[serde(default)]
    body: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMirror {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    #[serde(rename = "match")]
    match_: String,
    #[serde(default = "default_route_mirror")]
    mirror: String,
    #[serde(default = "default_sample")]
    sample: f64,
    sample_key: Option<String>,
    #[serde(default)]
    compare: RawCompare,
    #[serde(default)]
    learn_ids: Vec<RawLearn>,
    #[serde(default)]
    translate: RawTranslate,
    verify: Option<String>,
    on_primary_error: Option<String>,
}

/// `[route.compare]`: how a route's answers are compared.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompare {
    #[serde(default)]
    ignore: Vec<String>,
    #[serde(default)]
    unordered: BTreeMap<String, String>,
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
enum NullEqualsMissing {
    Everywhere(bool),
    Paths(Vec<String>),
}

fn default_true() -> bool {
    true
}

/// `[noise]`: learning which fields are volatile by nature.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNoise {
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

/// `[store]`: where evidence is kept and how it is written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
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

/// `[admin]`: which environment variable holds the admin API's token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default = "default_token_env")]
    token_env: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            token_env: default_token_env(),
        }
    }
}

fn default_token_env() -> String {
    "CUTOVER_ADMIN_TOKEN".into()
}

/// `[redact]`: what is replaced before anything is kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedact {
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

fn default_route_mirror() -> String {
    "compare".into()
}
fn default_sample() -> f64 {
    1.0
}

// ------------------------------------------------------------ entry points

impl Config {
    /// Reads and validates a config file, applying environment overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Config::parse(&text, &file, &|name| std::env::var(name).ok())
    }

    /// Validates config text. `source` names it in errors; `env` looks up
    /// environment overrides (injected so tests need not touch the process env).
    pub fn parse(text: &str, source: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let raw = parse_raw(text, source)?;
        let ctx = Ctx { file: source };
        let listen = ListenConfig {
            proxy: ctx.socket_addr("listen.proxy", &raw.listen.proxy)?,
            admin: ctx.socket_addr("listen.admin", &raw.listen.admin)?,
            shutdown_grace: ctx.duration(
                "listen.shutdown_grace",
                &raw.listen.shutdown_grace,
                ranges::SHUTDOWN_GRACE,
            )?,
            header_read_timeout: ctx.duration(
                "listen.header_read_timeout",
                &raw.listen.header_read_timeout,
                ranges::HEADER_READ_TIMEOUT,
            )?,
            body_read_timeout: ctx.duration(
                "listen.body_read_timeout",
                &raw.listen.body_read_timeout,
                ranges::BODY_READ_TIMEOUT,
            )?,
            idle_timeout: ctx.duration("listen.idle_timeout", &raw.listen.idle_timeout, ranges::IDLE_TIMEOUT)?,
            max_connections: raw.listen.max_connections,
            case_insensitive_paths: raw.listen.case_insensitive_paths,
        };
        if !(1..=1_000_000).contains(&listen.max_connections) {
            return Err(ctx.invalid(
                "listen.max_connections",
                format!("expected 1 to 1000000 connections, got {}", listen.max_connections),
            ));
        }
        if listen.proxy == listen.admin && listen.proxy.port() != 0 {
            return Err(ctx.invalid(
                "listen.admin",
                format!(
                    "must differ from listen.proxy ({}): the admin API is never served on the proxy port",
                    listen.proxy
                ),
            ));
        }
        let primary = ctx.upstream("primary", raw.primary, env(PRIMARY_URL_ENV), "30s", env)?;
        let shadow = ctx.upstream("shadow", raw.shadow, env(SHADOW_URL_ENV), "10s", env)?;
        if !primary.replay_headers.is_empty() {
            return Err(ctx.invalid(
                "primary.replay_headers",
                "only writes to the shadow are replayed; set replay_headers on [shadow]",
            ));
        }
        if primary.rate_limit.is_some() {
            return Err(ctx.invalid(
                "primary.rate_limit",
                "the primary is never rate-limited by cutover; set rate_limit on [shadow]",
            ));
        }
        if primary.name == shadow.name {
            return Err(ctx.invalid(
                "shadow.name",
                format!("must differ from primary.name (both are \"{}\")", shadow.name),
            ));
        }
        let mirror = ctx.mirror(raw.mirror)?;
        let noise = ctx.noise(raw.noise)?;
        let store = ctx.store(raw.store, env(STORE_URL_ENV))?;
        let seal = env(crate::seal::REPLAY_KEY_ENV)
            .filter(|text| !text.trim().is_empty())
            .map(|text| crate::seal::SealKey::parse(&text))
            .transpose()
            .map_err(|err| ctx.invalid(format!("${}", crate::seal::REPLAY_KEY_ENV), err.to_string()))?;
        let redact = ctx.redact(raw.redact)?.with_seal(seal);
        let token_env = raw.admin.token_env;
        if token_env.is_empty() || !token_env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ctx.invalid(
                "admin.token_env",
                format!("expected the name of an environment variable, got \"{token_env}\""),
            ));
        }
        let token = env(&token_env).filter(|token| !token.is_empty()).map(Secret::new);
        let admin = AdminConfig { token_env, token };
        let routes = ctx.routes(raw.routes)?.folding_case(listen.case_insensitive_paths);
        let idmap = ctx.idmap(raw.idmap)?;
        let readiness = ctx.readiness(raw.readiness)?;
        let rollback = raw.rollback.map(|raw| ctx.rollback(raw)).transpose()?;
        let sweeps = ctx.sweeps(raw.sweeps, &routes)?;
        Ok(Config {
            idmap,
            readiness,
            rollback,
            sweeps,
            fingerprint: crate::compare::short_hash(text.as_bytes()),
            source: source.to_string(),
            listen,
            primary,
            shadow,
            mirror,
            noise,
            store,
            redact,
            admin,
            routes,
        })
    }
}

fn parse_raw(text: &str, file: &str) -> Result<RawConfig, ConfigError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|err| toml_error(file, text, "", &err))?;
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        toml_error(file, text, &path, err.inner())
    })
}

fn toml_error(file: &str, text: &str, path: &str, err: &toml::de::Error) -> ConfigError {
    let mut message = err.message().trim().to_string();
    if let Some(span) = err.span() {
        let (line, column) = line_column(text, span.start);
        message.push_str(&format!(" (line {line}, column {column})"));
    }
    let key = if path.is_empty() || path == "." {
        "(document)".to_string()
    } else {
        path.to_string()
    };
    ConfigError::Invalid {
        file: file.to_string(),
        key,
        message,
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
    (line, column)
}

/// Validation context: knows the file name so every error can point at it.
struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_string(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn socket_addr(&self, key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
        value.parse().map_err(|_| {
            self.invalid(
                key,
                format!("expected an IP address and port like \"127.0.0.1:8080\", got \"{value}\""),
            )
        })
    }

    fn duration(&self, key: &str, value: &str, bounds: Bounds<Duration>) -> Result<Duration, ConfigError> {
        ranges::duration_within(value, bounds).map_err(|message| self.invalid(key, message))
    }

    fn size(&self, key: &str, value: &str, bounds: Bounds<usize>) -> Result<usize, ConfigError> {
        ranges::size_within(value, bounds).map_err(|message| self.invalid(key, message))
    }

    fn upstream(
        &self,
        section: &str,
        raw: RawUpstream,
        url_override: Option<String>,
        default_timeout: &str,
        env: &dyn Fn(&str) -> Option<String>,
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
        let from_env = url_override.is_some();
        let url_text = url_override.unwrap_or(raw.url);
        let url_key = if from_env {
            let var = if section == "primary" {
                PRIMARY_URL_ENV
            } else {
                SHADOW_URL_ENV
            };
            format!("{} (from ${var})", key("url"))
        } else {
            key("url")
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
            let var = if section == "primary" {
                PRIMARY_URL_ENV
            } else {
                SHADOW_URL_ENV
            };
            return Err(self.invalid(
                &url_key,
                format!("contains credentials; secrets never go in the file: set ${var} instead"),
            ));
        }
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
        let mut replay_headers = Vec::new();
        for (name, var) in raw.replay_headers {
            let header_key = key(&format!("replay_headers.\"{name}\""));
            let header = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| self.invalid(&header_key, format!("not a valid header name: \"{name}\"")))?;
            let value = env(&var).filter(|value| !value.is_empty()).ok_or_else(|| {
                self.invalid(
                    &header_key,
                    format!("environment variable ${var} is not set (the value is read from it, never from the file)"),
                )
            })?;
            replay_headers.push((header, Secret::new(value)));
        }
        Ok(UpstreamConfig {
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

    fn mirror(&self, raw: RawMirror) -> Result<MirrorConfig, ConfigError> {
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

    fn store(&self, raw: RawStore, url_override: Option<String>) -> Result<WriterConfig, ConfigError> {
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
            retention: self.duration("store.retention", &raw.retention, ranges::RETENTION)?,
            batch: raw.batch,
            flush: self.duration("store.flush", &raw.flush, ranges::FLUSH)?,
            buffer: raw.buffer,
        })
    }

    fn redact(&self, raw: RawRedact) -> Result<Redactor, ConfigError> {
        let mut patterns = Vec::with_capacity(raw.json.len());
        for (index, path) in raw.json.iter().enumerate() {
            // DESIGN writes these as "**/password": a leading '/' is implied.
            let pointer = if path.starts_with('/') {
                path.clone()
            } else {
                format!("/{path}")
            };
            patterns.push(
                crate::compare::pointer::Pattern::parse(&pointer)
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
        Ok(Redactor::new(&raw.headers, &raw.query, patterns))
    }

    fn noise(&self, raw: RawNoise) -> Result<NoiseConfig, ConfigError> {
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
    fn compare(&self, route: &str, raw: RawCompare) -> Result<CompareRules, ConfigError> {
        let rule_error = |err: RuleError| self.invalid(format!("route \"{route}\": {}", err.key), err.message);
        let invalid = |key: String, message: String| self.invalid(format!("route \"{route}\": {key}"), message);
        let mut rules = CompareRules::new();
        for (index, path) in raw.ignore.iter().enumerate() {
            rules
                .add(&format!("compare.ignore[{index}]"), path, Rule::Ignore)
                .map_err(rule_error)?;
        }
        for (path, key) in &raw.unordered {
            let item_key = match key.as_str() {
                "" | "." => ItemKey::Whole,
                pointer if pointer.starts_with('/') => {
                    let segments = crate::compare::pointer::Pattern::parse(pointer)
                        .map_err(|err| invalid(format!("compare.unordered.\"{path}\""), err.to_string()))?
                        .segments()
                        .iter()
                        .map(|segment| match segment {
                            crate::compare::pointer::PatternSegment::Key(key) => Ok(key.clone()),
                            _ => Err(invalid(
                                format!("compare.unordered.\"{path}\""),
                                "an item key cannot contain '*' or '**'".to_string(),
                            )),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    ItemKey::Field(segments)
                }
                field => ItemKey::Field(vec![field.to_string()]),
            };
            rules
                .add(
                    &format!("compare.unordered.\"{path}\""),
                    path,
                    Rule::Unordered(item_key),
                )
                .map_err(rule_error)?;
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
                for (index, path) in paths.iter().enumerate() {
                    rules
                        .add(
                            &format!("compare.null_equals_missing[{index}]"),
                            path,
                            Rule::NullEqualsMissing,
                        )
                        .map_err(rule_error)?;
                }
            }
        }
        for (path, kind) in &raw.ids {
            let key = format!("compare.ids.\"{path}\"");
            if kind.is_empty() || !kind.chars().all(is_label_char) {
                return Err(invalid(
                    key,
                    format!("expected an ID kind like \"tasks\", got \"{kind}\""),
                ));
            }
            rules.add(&key, path, Rule::Id(kind.clone())).map_err(rule_error)?;
        }
        for (index, path) in raw.trim.iter().enumerate() {
            rules
                .add(&format!("compare.trim[{index}]"), path, Rule::Trim)
                .map_err(rule_error)?;
        }
        for (index, path) in raw.case_insensitive.iter().enumerate() {
            rules
                .add(&format!("compare.case_insensitive[{index}]"), path, Rule::CaseFold)
                .map_err(rule_error)?;
        }
        if let Some(headers) = raw.headers {
            let mut names = Vec::with_capacity(headers.len());
            for (index, header) in headers.iter().enumerate() {
                let key = format!("compare.headers[{index}]");
                let lower = header.to_ascii_lowercase();
                if NEVER_COMPARED_HEADERS.contains(&lower.as_str()) || lower.starts_with("x-vercel-") {
                    return Err(invalid(
                        key,
                        format!("\"{header}\" never matters for comparison (hop-by-hop, or different by nature)"),
                    ));
                }
                names.push(
                    HeaderName::from_bytes(lower.as_bytes())
                        .map_err(|_| invalid(key, format!("not a valid header name: \"{header}\"")))?,
                );
            }
            rules.headers = names;
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

    fn sweeps(&self, raws: Vec<RawSweep>, routes: &RouteTable) -> Result<Vec<Sweep>, ConfigError> {
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
                (Some(kind), [_]) if !kind.is_empty() && kind.chars().all(is_label_char) => {}
                (Some(kind), [_]) => {
                    return Err(self.invalid(
                        key("ids"),
                        format!("expected an ID kind like \"tasks\", got \"{kind}\""),
                    ))
                }
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

    fn rollback(&self, raw: RawRollback) -> Result<crate::mode::RollbackRule, ConfigError> {
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
        Ok(crate::mode::RollbackRule {
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

    fn readiness(&self, raw: RawReadiness) -> Result<crate::report::Readiness, ConfigError> {
        let defaults = crate::report::Readiness::default();
        let fraction = |key: &str, value: Option<f64>, default: f64| match value {
            None => Ok(default),
            Some(value) if (0.0..=1.0).contains(&value) => Ok(value),
            Some(value) => Err(self.invalid(key, format!("expected a fraction from 0.0 to 1.0, got {value}"))),
        };
        let duration = |key: &str, value: Option<String>, default: Duration, bounds| match value {
            None => Ok(default),
            Some(text) => self.duration(key, &text, bounds),
        };
        Ok(crate::report::Readiness {
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
            unmapped_window: duration(
                "readiness.unmapped_window",
                raw.unmapped_window,
                defaults.unmapped_window,
                ranges::READINESS_WINDOW,
            )?,
        })
    }

    fn idmap(&self, raw: RawIdMap) -> Result<IdMapConfig, ConfigError> {
        let canonical = match raw.canonical.as_deref() {
            None | Some("as-is") => crate::idmap::Canonical::AsIs,
            Some("uuid") => crate::idmap::Canonical::Uuid,
            Some(other) => {
                return Err(self.invalid(
                    "idmap.canonical",
                    format!("expected \"uuid\" or \"as-is\", got \"{other}\""),
                ))
            }
        };
        let folder = Path::new(self.file).parent().unwrap_or(Path::new(""));
        let mut import = Vec::with_capacity(raw.import.len());
        for (index, path) in raw.import.into_iter().enumerate() {
            let resolved = if path.is_absolute() { path } else { folder.join(path) };
            if !resolved.is_file() {
                return Err(self.invalid(
                    format!("idmap.import[{index}]"),
                    format!("no such file: {}", resolved.display()),
                ));
            }
            import.push(resolved);
        }
        Ok(IdMapConfig { import, canonical })
    }

    /// A route's ID and write rules: `learn_ids`, `translate`, `verify`, `on_primary_error`.
    fn write_rules(&self, route: &mut Route, raw: &mut RawRoute) -> Result<(), ConfigError> {
        let name = raw.name.clone();
        let invalid = |key: String, message: String| self.invalid(format!("route \"{name}\": {key}"), message);
        let check_kind = |key: &str, kind: &str| {
            if kind.is_empty() || !kind.chars().all(is_label_char) {
                Err(invalid(
                    key.to_string(),
                    format!("expected an ID kind like \"tasks\", got \"{kind}\""),
                ))
            } else {
                Ok(())
            }
        };
        let mut rules = (*route.writes).clone();
        for (index, learn) in raw.learn_ids.iter().enumerate() {
            let key = format!("learn_ids[{index}]");
            check_kind(&format!("{key}.kind"), &learn.kind)?;
            rules.learn.push(
                crate::idmap::LearnRule::new(&learn.kind, &learn.primary, &learn.shadow)
                    .map_err(|err| invalid(key, err.to_string()))?,
            );
        }
        for (param, kind) in &raw.translate.query {
            check_kind(&format!("translate.query.\"{param}\""), kind)?;
            rules.translation.query.push((param.clone(), kind.clone()));
        }
        for (pointer, kind) in &raw.translate.body {
            let key = format!("translate.body.\"{pointer}\"");
            check_kind(&key, kind)?;
            let pattern =
                crate::compare::pointer::Pattern::parse(pointer).map_err(|err| invalid(key, err.to_string()))?;
            rules.translation.body.push(pattern, kind.clone());
        }
        rules.mirror_failed_writes = match raw.on_primary_error.as_deref() {
            None | Some("skip") => false,
            Some("mirror") => true,
            Some(other) => {
                return Err(invalid(
                    "on_primary_error".into(),
                    format!("expected \"skip\" or \"mirror\", got \"{other}\""),
                ))
            }
        };
        if let Some(text) = raw.verify.take() {
            let verify =
                crate::route::RequestTemplate::parse(&text).map_err(|err| invalid("verify".into(), err.to_string()))?;
            for placeholder in verify.placeholders() {
                let is_param = route.template.has_param(placeholder);
                let is_learned = rules.learn.iter().any(|learn| learn.kind == placeholder);
                if !is_param && !is_learned {
                    return Err(invalid(
                        "verify".into(),
                        format!(
                            "{{{placeholder}}} is neither a parameter of \"{}\" nor a learn_ids kind",
                            route.match_text
                        ),
                    ));
                }
            }
            rules.verify = Some(verify);
        }
        if raw.mirror != "dual-write" && (rules.verify.is_some() || !rules.learn.is_empty()) {
            return Err(invalid(
                "mirror".into(),
                "learn_ids and verify act on mirrored writes: set mirror = \"dual-write\"".into(),
            ));
        }
        route.writes = Arc::new(rules);
        Ok(())
    }

    fn routes(&self, raws: Vec<RawRoute>) -> Result<RouteTable, ConfigError> {
        let mut seen = HashSet::new();
        let mut routes = Vec::with_capacity(raws.len());
        for (index, mut raw) in raws.into_iter().enumerate() {
            if raw.name.is_empty() || !raw.name.chars().all(is_label_char) {
                return Err(self.invalid(
                    format!("route[{index}].name"),
                    format!(
                        "expected a name of letters, digits, '-', '_' or '.', got \"{}\"",
                        raw.name
                    ),
                ));
            }
            let key = |field: &str| format!("route \"{}\": {field}", raw.name);
            if raw.name == crate::route::UNMATCHED_ROUTE {
                return Err(self.invalid(key("name"), "\"unmatched\" is reserved for requests no route matches"));
            }
            if !seen.insert(raw.name.clone()) {
                return Err(self.invalid(key("name"), "another route has the same name"));
            }
            let mirror = match raw.mirror.as_str() {
                "compare" => MirrorPolicy::Compare,
                "dual-write" => MirrorPolicy::DualWrite,
                "off" => MirrorPolicy::Off,
                other => {
                    return Err(self.invalid(
                        key("mirror"),
                        format!("expected \"compare\", \"dual-write\" or \"off\", got \"{other}\""),
                    ))
                }
            };
            if !(0.0..=1.0).contains(&raw.sample) || raw.sample.is_nan() {
                return Err(self.invalid(
                    key("sample"),
                    format!("expected a fraction from 0.0 to 1.0, got {}", raw.sample),
                ));
            }
            let sample_key = match raw.sample_key.as_deref() {
                None => None,
                Some("client-ip") => Some(SampleKey::ClientIp),
                Some(text) => match text.strip_prefix("header:") {
                    Some(name) => Some(SampleKey::Header(HeaderName::from_bytes(name.as_bytes()).map_err(
                        |_| self.invalid(key("sample_key"), format!("not a valid header name: \"{name}\"")),
                    )?)),
                    None => {
                        return Err(self.invalid(
                            key("sample_key"),
                            format!("expected \"client-ip\" or \"header:NAME\", got \"{text}\""),
                        ))
                    }
                },
            };
            let mut route = Route::new(&raw.name, &raw.match_, mirror, raw.sample, sample_key)
                .map_err(|err: RouteError| self.invalid(key("match"), err.to_string()))?;
            self.write_rules(&mut route, &mut raw)?;
            route.compare = Arc::new(self.compare(&raw.name, raw.compare)?);
            routes.push(route);
        }
        // A read-back is compared under the route its request falls in.
        let table = RouteTable::new(routes.clone());
        for route in &mut routes {
            if let Some(verify) = &route.writes.verify {
                let probe = verify.path(&|_| Some("id".to_string())).unwrap_or_default();
                let (name, rules) = match table.find(&verify.method, &probe) {
                    Some(found) => (found.name.clone(), Arc::clone(&found.compare)),
                    None => (crate::route::UNMATCHED_ROUTE.to_string(), Arc::new(CompareRules::new())),
                };
                let writes = Arc::make_mut(&mut route.writes);
                if let Some(verify) = writes.verify.as_mut() {
                    verify.route = name;
                    verify.rules = rules;
                }
            }
        }
        Ok(RouteTable::new(routes))
    }
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}
