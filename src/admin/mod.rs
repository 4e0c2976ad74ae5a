//! The admin listener, on its own port (`[listen] admin`):
//!
//! - `GET /healthz` (alive), `GET /readyz` (store answers, primary accepts a
//!   TCP connection), `GET /metrics`: no token;
//! - everything under `/api/` needs `Authorization: Bearer <token>`, the
//!   token coming from the environment variable `[admin] token_env` names,
//!   compared in constant time; with no token configured those endpoints
//!   answer 403 saying how to set one:
//!   `GET /api/summary`, `GET /api/divergences?route=&status=&severity=&q=&since=&cursor=&limit=`,
//!   `GET /api/divergences/{group}`, `POST /api/divergences/{group}/triage`,
//!   `POST /api/divergences/{group}/recheck` (`{"mark_fixed": true}` to
//!   record `fixed` when the group's difference is gone from its samples),
//!   `GET /api/drift` (open drifted writes), `POST /api/drift/replay`
//!   (`{"all": true}` or `{"id": N}`), `GET /api/notifications` (the
//!   newest `[[notify]]` notices and how each delivery went);
//! - `GET /api/mode`, `POST /api/mode` (`{"mode": "candidate", "route"?: "name"}`) switch who serves;
//! - `POST /api/reload` re-reads the config file (validated first; on error the old one stays);
//! - `GET /report` (HTML) and `GET /report.json` (`?since=48h`) need the token too;
//! - `GET /` leads a browser to the report: a login form that posts the
//!   token to `POST /login`, which sets an HttpOnly, SameSite=Strict cookie
//!   good for reads (`GET`) only; `POST /logout` ends it.
//!
//! Every non-2xx answer is JSON with an `error` message.
//!
//! Must never: be reachable on the proxy port, answer `/api/` without the
//! token, or send the primary an HTTP request (readiness only connects).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::metrics::Metrics;
use crate::proxy::json_error;
use crate::secret::Secret;
use crate::server::ResponseBody;
use crate::store::{SharedStore, Store};

mod api;
mod session;

use api::{api_route, report};

/// A refused or failed API call: turned into a JSON answer at the edge.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn into_response(self) -> Response<ResponseBody> {
        let mut response = json_error(self.status, &self.message, None, "");
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// `[admin]`: access to the admin API.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// The environment variable holding the bearer token.
    pub token_env: String,
    /// The token, read from that variable at startup; `None` turns `/api/` off.
    pub token: Option<Secret>,
}

/// What the admin listener serves from.
pub struct AdminState {
    pub metrics: Metrics,
    /// The bearer token; `None` disables the `/api/` endpoints.
    pub token: Option<Secret>,
    /// The variable the token is read from (named in the 403 message).
    pub token_env: String,
    /// Host and port of the primary, for readiness.
    pub primary: (String, u16),
    /// The report's gates (replaced by a config reload).
    pub readiness: std::sync::RwLock<crate::report::Readiness>,
    /// Reloads the configuration (`POST /api/reload`).
    pub reloader: Option<Arc<dyn Reload>>,
    /// What replaying drifted writes needs (absent: the endpoints answer 503).
    pub drift: Option<DriftControl>,
    /// What rechecking a group needs (absent: the endpoint answers 503).
    pub recheck: Option<RecheckControl>,
    /// The modes in force (`GET|POST /api/mode`).
    pub modes: Option<Arc<crate::mode::ModeTable>>,
    /// Set once the ID map and ledger are loaded from the store; readiness waits for it.
    pub loaded: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// The store writer: readiness reports its writes failing, which a
    /// ping (a read) does not see.
    pub writer: Option<Arc<crate::store::Writer>>,
    /// How the report's next steps reach this instance's store and config.
    pub commands: crate::report::Commands,
    /// The instance's readers' pool, opened on first use.
    store: SharedStore,
}

/// What a reload put in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    pub fingerprint: String,
    pub routes: usize,
}

/// A reload's answer, boxed: [`Reload`] is used as a trait object.
pub type ReloadFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<ReloadSummary, String>> + Send + 'a>>;

/// What the admin API needs of the running instance to reload its config
/// and check route names; app implements it, so admin never imports app.
pub trait Reload: Send + Sync {
    fn has_route(&self, name: &str) -> bool;
    fn route_names(&self) -> Vec<String>;
    /// Re-reads the config; an error says why the old one stays.
    fn reload(&self) -> ReloadFuture<'_>;
}

/// Applies one recorded switch (once) and logs it.
pub fn apply_switch(modes: &crate::mode::ModeTable, metrics: &Metrics, id: i64, detail: &str) {
    let Ok(switch) = serde_json::from_str::<crate::mode::Switch>(detail) else {
        tracing::warn!(event = id, "a mode_switch event this build cannot read was skipped");
        return;
    };
    if let Some(before) = modes.apply_event(id, &switch) {
        metrics.set_mode(modes.current().global);
        tracing::info!(
            route = switch.route.as_deref().unwrap_or("(all)"),
            from = %before,
            to = %switch.mode,
            reason = %switch.reason,
            "mode switched"
        );
    }
}

/// The running instance's side of a replay.
pub struct DriftControl {
    pub shadow: crate::upstream::Upstream,
    pub primary: crate::upstream::Upstream,
    pub ids: Arc<crate::idmap::IdMap>,
    pub routes: crate::route::RouteTable,
    pub replay_headers: Vec<(http::HeaderName, Secret)>,
    /// Opens sealed replay requests (`CUTOVER_REPLAY_KEY`).
    pub seal: Option<crate::seal::SealKey>,
    /// Entities whose writes the mirror holds behind drift; released when reconciled.
    pub drifted: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// One replay at a time.
    pub replaying: tokio::sync::Mutex<()>,
}

/// The running instance's side of a recheck.
pub struct RecheckControl {
    pub rechecker: crate::recheck::Rechecker,
    /// One recheck at a time: each sends every sample of a group to both sides.
    pub running: tokio::sync::Mutex<()>,
}

impl AdminState {
    pub fn new(
        metrics: Metrics,
        token: Option<Secret>,
        token_env: String,
        store: SharedStore,
        primary: (String, u16),
    ) -> AdminState {
        AdminState {
            metrics,
            token,
            token_env,
            primary,
            readiness: std::sync::RwLock::new(crate::report::Readiness::default()),
            reloader: None,
            drift: None,
            recheck: None,
            modes: None,
            loaded: None,
            writer: None,
            commands: crate::report::Commands::default(),
            store,
        }
    }

    /// The gates in force (a reload replaces them).
    fn readiness(&self) -> crate::report::Readiness {
        self.readiness
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    async fn store(&self) -> Result<&Store, ApiError> {
        self.store.get().await.map_err(store_failed)
    }
}

/// How often an instance judges the report for `cutover_verdict`.
const VERDICT_EVERY: Duration = Duration::from_secs(60);

/// Sets `cutover_verdict` from the report over the default window, now and
/// every [`VERDICT_EVERY`] until shutdown, with the gates in force (a
/// reload's included). A store that cannot answer leaves the last verdict.
pub async fn follow_verdict(state: Arc<AdminState>, mut stopping: tokio::sync::watch::Receiver<bool>) {
    loop {
        match state.store().await {
            Ok(store) => match api::last_report(&state, store).await {
                Ok(report) => state.metrics.set_verdict(report.verdict.label()),
                Err(err) => tracing::warn!(error = %err.message, "cannot judge the report for cutover_verdict"),
            },
            Err(err) => tracing::warn!(error = %err.message, "cannot open the store for cutover_verdict"),
        }
        tokio::select! {
            _ = tokio::time::sleep(VERDICT_EVERY) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}

/// Serves one admin request.
pub async fn handle(state: Arc<AdminState>, _peer: SocketAddr, request: Request<Incoming>) -> Response<ResponseBody> {
    let path = request.uri().path().to_string();
    match (request.method().clone(), path.as_str()) {
        (Method::GET, "/healthz") => json_response(StatusCode::OK, &json!({"status": "ok"})),
        (Method::GET, "/metrics") => text(StatusCode::OK, "text/plain; version=0.0.4", state.metrics.encode()),
        (Method::GET, "/readyz") => ready(&state).await,
        (_, "/healthz" | "/metrics" | "/readyz") => {
            json_error(StatusCode::METHOD_NOT_ALLOWED, "only GET is allowed here", None, "")
        }
        (Method::GET, "/") => session::root(&state, &request),
        (Method::POST, "/login") => session::login(&state, request).await,
        (Method::POST, "/logout") => session::logout(),
        (Method::GET, "/report" | "/report.json") => {
            let answer = match authorize(&state, &request) {
                Ok(()) => report(&state, &request).await,
                Err(refused) => Err(refused),
            };
            answer.unwrap_or_else(ApiError::into_response)
        }
        (_, api) if api.starts_with("/api/") => {
            let answer = match authorize(&state, &request) {
                Ok(()) => api_route(&state, request, api).await,
                Err(refused) => Err(refused),
            };
            answer.unwrap_or_else(ApiError::into_response)
        }
        (_, other) => json_error(
            StatusCode::NOT_FOUND,
            &format!("no admin endpoint at {other}; try /, /healthz, /readyz, /metrics or /api/summary"),
            None,
            "",
        ),
    }
}

fn authorize<B>(state: &AdminState, request: &Request<B>) -> Result<(), ApiError> {
    let Some(token) = &state.token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "the admin API is off: set ${} to a secret token and send it as 'Authorization: Bearer <token>'",
                state.token_env
            ),
        ));
    };
    if session::cookie_allows(token, request) {
        return Ok(());
    }
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes())) {
        return Ok(());
    }
    Err(ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"))
}

async fn ready(state: &AdminState) -> Response<ResponseBody> {
    let store = match state.store().await {
        Ok(store) => store.ping().await.map_err(|err| err.to_string()),
        Err(_) => Err("cannot connect".to_string()),
    }
    .and_then(|()| match state.writer.as_ref().and_then(|writer| writer.failing()) {
        Some(failing) => Err(failing),
        None => Ok(()),
    });
    let (host, port) = &state.primary;
    let primary = match tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect((host.as_str(), *port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("no connection within 2s".to_string()),
    };
    let loaded = match &state.loaded {
        Some(flag) if !flag.load(std::sync::atomic::Ordering::Acquire) => {
            Err("the ID map and ledger are still loading from the store".to_string())
        }
        _ => Ok(()),
    };
    let verdict = |result: &Result<(), String>| match result {
        Ok(()) => Value::from("ok"),
        Err(reason) => Value::from(reason.clone()),
    };
    let body = json!({"store": verdict(&store), "primary": verdict(&primary), "idmap": verdict(&loaded)});
    let status = if store.is_ok() && primary.is_ok() && loaded.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = json_response(status, &body);
    if status != StatusCode::OK {
        let reasons = [("store", &store), ("primary", &primary), ("idmap", &loaded)]
            .iter()
            .filter_map(|(what, result)| result.as_ref().err().map(|reason| format!("{what}: {reason}")))
            .collect::<Vec<_>>()
            .join("; ");
        response = json_response(
            status,
            &json!({
                "error": format!("not ready: {reasons}"),
                "store": body["store"],
                "primary": body["primary"],
                "idmap": body["idmap"],
            }),
        );
    }
    response
}

/// A request's JSON body (at most 64 KiB).
async fn json_body(request: Request<Incoming>) -> Result<Value, ApiError> {
    let body = body_of(request).await?;
    serde_json::from_slice(&body).map_err(|err| bad_request(&format!("expected JSON: {err}")))
}

/// A JSON body that may be left out: `null` then.
async fn json_body_or_none(request: Request<Incoming>) -> Result<Value, ApiError> {
    let body = body_of(request).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&body).map_err(|err| bad_request(&format!("expected JSON: {err}")))
}

async fn body_of(request: Request<Incoming>) -> Result<Bytes, ApiError> {
    Ok(Limited::new(request.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|err| bad_request(&format!("cannot read the body: {err}")))?
        .to_bytes())
}

/// A part of the running instance this admin listener was not given.
fn unavailable(what: &str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("{what} is not available here"))
}

fn store_failed(err: crate::store::StoreError) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("store unavailable: {err}"))
}

fn no_group(key: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no divergence group {key}"))
}

fn bad_request(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

fn json_response(status: StatusCode, value: &Value) -> Response<ResponseBody> {
    text(status, "application/json", value.to_string())
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
