//! Reloading the configuration in force: routes and gates change live,
//! everything else is refused as needing a restart.
//!
//! Must never: apply half of a reload.

use std::sync::Arc;

use tracing::{info, warn};

use super::lifecycle::route_names;
use crate::admin::AdminState;
use crate::config::Config;
use crate::proxy::ProxyState;
use crate::store::SharedStore;

/// Why a reload was refused (the configuration in force stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{file}: {keys} changed; these take a restart to apply")]
    NeedsRestart { file: String, keys: String },
}

/// Re-reads the config file and puts what can change live in force: the
/// routes (with their compare, ID and write rules) and the report's gates.
/// Everything else (listeners, upstreams, mirror sizes, store, redaction,
/// admin, ID-map imports) takes a restart, and a reload that changes it is
/// refused rather than half applied.
pub struct Reloader {
    current: std::sync::Mutex<Config>,
    proxy: Arc<ProxyState>,
    store: SharedStore,
    admin: std::sync::OnceLock<std::sync::Weak<AdminState>>,
    instance: String,
}

impl crate::admin::Reload for Reloader {
    fn has_route(&self, name: &str) -> bool {
        Reloader::has_route(self, name)
    }

    fn route_names(&self) -> Vec<String> {
        Reloader::route_names(self)
    }

    fn reload(&self) -> crate::admin::ReloadFuture<'_> {
        Box::pin(async move { Reloader::reload(self).await.map_err(|err| err.to_string()) })
    }
}

impl Reloader {
    pub(super) fn new(config: Config, proxy: Arc<ProxyState>, store: SharedStore, instance: String) -> Reloader {
        Reloader {
            current: std::sync::Mutex::new(config),
            proxy,
            store,
            admin: std::sync::OnceLock::new(),
            instance,
        }
    }

    /// The admin API whose gates a reload replaces (set once, after both exist).
    pub(super) fn tell_admin(&self, admin: &Arc<AdminState>) {
        let _ = self.admin.set(Arc::downgrade(admin));
    }

    /// Whether the configuration in force has a route of this name.
    pub fn has_route(&self, name: &str) -> bool {
        self.lock().routes.iter().any(|route| route.name == name)
    }

    /// The names of the routes in force, for error messages.
    pub fn route_names(&self) -> Vec<String> {
        route_names(&self.lock())
    }

    pub async fn reload(&self) -> Result<crate::admin::ReloadSummary, ReloadError> {
        let path = self.lock().source.clone();
        let next = match Config::load(std::path::Path::new(&path)) {
            Ok(next) => next,
            Err(err) => {
                warn!(error = %err, "config reload refused; the old configuration stays");
                return Err(err.into());
            }
        };
        let changed = {
            let current = self.lock();
            let fixed = |config: &Config| {
                [
                    ("listen", format!("{:?}", config.listen)),
                    ("primary", format!("{:?}", config.primary)),
                    ("shadow", format!("{:?}", config.shadow)),
                    ("mirror", format!("{:?}", config.mirror)),
                    ("noise", format!("{:?}", config.noise)),
                    ("store", format!("{:?}", config.store)),
                    ("redact", format!("{:?}", config.redact)),
                    // The token itself was read from the environment at startup and stays.
                    ("admin", format!("{:?}", config.admin.token_env)),
                    ("idmap", format!("{:?}", config.idmap)),
                ]
            };
            fixed(&current)
                .into_iter()
                .zip(fixed(&next))
                .filter(|((_, before), (_, after))| before != after)
                .map(|((key, _), _)| format!("[{key}]"))
                .collect::<Vec<_>>()
        };
        if !changed.is_empty() {
            let err = ReloadError::NeedsRestart {
                file: path,
                keys: changed.join(", "),
            };
            warn!(error = %err, "config reload refused; the old configuration stays");
            return Err(err);
        }
        self.proxy.replace_routes(next.routes.clone());
        if let Some(admin) = self.admin.get().and_then(std::sync::Weak::upgrade) {
            *admin.readiness.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = next.readiness.clone();
        }
        let summary = crate::admin::ReloadSummary {
            fingerprint: next.fingerprint.clone(),
            routes: next.routes.len(),
        };
        *self.lock() = next;
        info!(config = %summary.fingerprint, routes = summary.routes, "configuration reloaded");
        let detail = serde_json::json!({
            "config": summary.fingerprint,
            "routes": summary.routes,
            "route_names": route_names(&self.lock()),
            "instance": self.instance,
        });
        match self.store.get().await {
            Ok(store) => {
                if let Err(err) = store.add_event("config_reload", &detail, crate::clock::now_ms()).await {
                    warn!(error = %err, "the reload is in force but could not be recorded in the store");
                }
            }
            Err(err) => warn!(error = %err, "the reload is in force but could not be recorded in the store"),
        }
        Ok(summary)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Config> {
        self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
