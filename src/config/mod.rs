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

use std::path::Path;

use serde::Deserialize;

use crate::admin::AdminConfig;
use crate::compare::noise::NoiseConfig;
use crate::idmap::IdMapConfig;
use crate::mirror::{MirrorConfig, Sweep};
use crate::redact::Redactor;
use crate::route::RouteTable;
use crate::server::ListenConfig;
use crate::store::WriterConfig;
use crate::upstream::UpstreamConfig;

mod compare;
mod context;
mod listen;
mod mirror;
mod notify;
pub mod ranges;
mod readiness;
mod rollout;
mod routes;
mod store;
mod upstream;

use compare::{RawNoise, RawRedact};
use context::{parse_raw, Ctx};
use listen::{RawAdmin, RawListen};
use mirror::{RawMirror, RawSweep};
use readiness::{RawReadiness, RawRollback};
use routes::{RawIdMap, RawRoute};
use store::RawStore;
use upstream::RawUpstream;

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
    /// `[rollout]`: a ramp of every route at once onto the candidate.
    pub rollout: Option<crate::mode::Rollout>,
    /// `[route.rollout]`: a ramp of one route, by route name.
    pub route_rollouts: std::collections::BTreeMap<String, crate::mode::Rollout>,
    /// `[[sweep]]`: synthetic comparisons on a schedule.
    pub sweeps: Vec<Sweep>,
    /// `[[notify]]`: webhooks that hear of what the test finds.
    pub notify: Vec<crate::notify::Sink>,
    pub routes: RouteTable,
    /// The first 16 hex digits of the config text's SHA-256, so a report can
    /// say which configuration produced its evidence.
    pub fingerprint: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
/// The whole file as TOML gives it; each section's type and its
/// validation live in the file named after the section.
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
    rollout: Option<rollout::RawRollout>,
    #[serde(default, rename = "sweep")]
    sweeps: Vec<RawSweep>,
    #[serde(default)]
    notify: Vec<notify::RawNotify>,
    #[serde(default, rename = "route")]
    routes: Vec<RawRoute>,
}

impl Config {
    /// Every ramp: `[rollout]` (scope `None`, all routes) and each `[route.rollout]`.
    pub fn ramps(&self) -> Vec<(Option<String>, crate::mode::Rollout)> {
        self.rollout
            .iter()
            .map(|rollout| (None, rollout.clone()))
            .chain(
                self.route_rollouts
                    .iter()
                    .map(|(route, rollout)| (Some(route.clone()), rollout.clone())),
            )
            .collect()
    }

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
        let listen = ctx.listen(raw.listen)?;
        let mut missing = Vec::new();
        let (primary, shadow) = ctx.upstreams(raw.primary, raw.shadow, env, &mut missing)?;
        let notify = ctx.notify(raw.notify, env, &mut missing)?;
        ctx.all_set(&missing)?;
        let mirror = ctx.mirror(raw.mirror)?;
        let noise = ctx.noise(raw.noise)?;
        let store = ctx.store(raw.store, env(STORE_URL_ENV))?;
        let redact = ctx
            .redact(raw.redact, env)?
            .with_sent_secrets(&upstream::sent_headers(&primary, &shadow));
        let admin = ctx.admin(raw.admin, env)?;
        let mut raw_routes = raw.routes;
        let mut route_rollouts = std::collections::BTreeMap::new();
        for (name, rollout) in raw_routes.iter_mut().filter_map(routes::RawRoute::take_rollout) {
            let at = format!("route \"{name}\": rollout");
            route_rollouts.insert(name, ctx.rollout(&at, rollout)?);
        }
        let routes = ctx.routes(raw_routes)?.folding_case(listen.case_insensitive_paths);
        let rollout = raw.rollout.map(|raw| ctx.rollout("rollout", raw)).transpose()?;
        let idmap = ctx.idmap(raw.idmap)?;
        let readiness = ctx.readiness(raw.readiness)?;
        let rollback = raw.rollback.map(|raw| ctx.rollback(raw)).transpose()?;
        let sweeps = ctx.sweeps(raw.sweeps, &routes)?;
        Ok(Config {
            notify,
            idmap,
            readiness,
            rollback,
            rollout,
            route_rollouts,
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
