//! `[listen]` and `[admin]`: the two listeners, how long a client may
//! take, and which environment variable holds the admin API's token.
//!
//! Must never: accept a listener address equal to the proxy's for the admin
//! API, or a token from the file.

use serde::Deserialize;

use super::context::Ctx;
use super::{ranges, ConfigError};
use crate::admin::AdminConfig;
use crate::secret::Secret;
use crate::server::ListenConfig;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
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

/// `[admin]`: which environment variable holds the admin API's token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
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

impl Ctx<'_> {
    pub(super) fn listen(&self, raw: RawListen) -> Result<ListenConfig, ConfigError> {
        let listen = ListenConfig {
            proxy: self.socket_addr("listen.proxy", &raw.proxy)?,
            admin: self.socket_addr("listen.admin", &raw.admin)?,
            shutdown_grace: self.duration("listen.shutdown_grace", &raw.shutdown_grace, ranges::SHUTDOWN_GRACE)?,
            header_read_timeout: self.duration(
                "listen.header_read_timeout",
                &raw.header_read_timeout,
                ranges::HEADER_READ_TIMEOUT,
            )?,
            body_read_timeout: self.duration(
                "listen.body_read_timeout",
                &raw.body_read_timeout,
                ranges::BODY_READ_TIMEOUT,
            )?,
            idle_timeout: self.duration("listen.idle_timeout", &raw.idle_timeout, ranges::IDLE_TIMEOUT)?,
            max_connections: raw.max_connections,
            case_insensitive_paths: raw.case_insensitive_paths,
        };
        if !(1..=1_000_000).contains(&listen.max_connections) {
            return Err(self.invalid(
                "listen.max_connections",
                format!("expected 1 to 1000000 connections, got {}", listen.max_connections),
            ));
        }
        if listen.proxy == listen.admin && listen.proxy.port() != 0 {
            return Err(self.invalid(
                "listen.admin",
                format!(
                    "must differ from listen.proxy ({}): the admin API is never served on the proxy port",
                    listen.proxy
                ),
            ));
        }
        Ok(listen)
    }

    /// The admin token is read from the variable `token_env` names, never from the file.
    pub(super) fn admin(
        &self,
        raw: RawAdmin,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AdminConfig, ConfigError> {
        let token_env = raw.token_env;
        if token_env.is_empty() || !token_env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(self.invalid(
                "admin.token_env",
                format!("expected the name of an environment variable, got \"{token_env}\""),
            ));
        }
        let token = env(&token_env).filter(|token| !token.is_empty()).map(Secret::new);
        Ok(AdminConfig { token_env, token })
    }
}
