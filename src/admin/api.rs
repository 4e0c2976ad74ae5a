//! The token-protected API over the store (`/api/…`) and the report
//! pages: one function per endpoint, chosen by one match on method and path.
//!
//! Must never: answer without the token (the caller checks it first), or
//! change the store but through its own calls.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::server::ResponseBody;
use crate::store::{GroupFilter, LedgerState, TRIAGE_STATES};

use super::*;

/// `/api/…`: one function per endpoint.
pub(super) async fn api_route(
    state: &AdminState,
    request: Request<Incoming>,
    path: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    let method = request.method().clone();
    let segments: Vec<&str> = path.trim_start_matches("/api/").split('/').collect();
    match (method, segments.as_slice()) {
        (Method::GET, ["summary"]) => summary(state).await,
        (Method::GET, ["divergences"]) => divergences(state, request.uri().query().unwrap_or("")).await,
        (Method::GET, ["divergences", key]) => divergence(state, key).await,
        (Method::POST, ["divergences", key, "triage"]) => triage(state, key, json_body(request).await?).await,
        (Method::POST, ["divergences", key, "recheck"]) => recheck(state, key, json_body_or_none(request).await?).await,
        (Method::GET, ["mode"]) => mode(state),
        (Method::POST, ["mode"]) => switch_mode(state, json_body(request).await?).await,
        (Method::POST, ["reload"]) => reload(state).await,
        (Method::GET, ["drift"]) => open_drift(state).await,
        (Method::GET, ["notifications"]) => notifications(state).await,
        (Method::POST, ["drift", "replay"]) => drift_replay(state, json_body(request).await?).await,
        (_, _) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no admin API endpoint at {path}"),
        )),
    }
}

type ApiAnswer = Result<Response<ResponseBody>, ApiError>;

/// `GET /api/summary`: counts per route.
async fn summary(state: &AdminState) -> ApiAnswer {
    let summary = state.store().await?.summary().await.map_err(store_failed)?;
    Ok(json_response(StatusCode::OK, &json!({ "routes": summary })))
}

/// `GET /api/divergences`: groups matching the query's filters, a page at a time.
async fn divergences(state: &AdminState, query: &str) -> ApiAnswer {
    let (filter, limit) = group_filter(query)?;
    let (groups, next) = state
        .store()
        .await?
        .divergences(&filter, limit)
        .await
        .map_err(store_failed)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "groups": groups, "next_cursor": next }),
    ))
}

/// `GET /api/divergences/{group}`: one group with its samples.
async fn divergence(state: &AdminState, key: &str) -> ApiAnswer {
    let store = state.store().await?;
    let found = store.group(key).await.map_err(store_failed)?;
    let (group, summary, note) = found.ok_or_else(|| no_group(key))?;
    let samples = store.samples(key).await.map_err(store_failed)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "group": group, "summary": summary, "note": note, "samples": samples }),
    ))
}

/// `POST /api/divergences/{group}/triage`: `{"status": …, "note": …}`.
async fn triage(state: &AdminState, key: &str, triage: Value) -> ApiAnswer {
    let status = triage["status"].as_str().unwrap_or_default();
    if !TRIAGE_STATES.contains(&status) {
        return Err(bad_request(&format!(
            "status must be one of {}, got {:?}",
            TRIAGE_STATES.join(", "),
            triage["status"]
        )));
    }
    let note = triage["note"].as_str();
    let at_ms = crate::clock::now_ms();
    let store = state.store().await?;
    if !store.triage(key, status, note, at_ms).await.map_err(store_failed)? {
        return Err(no_group(key));
    }
    let (group, summary, note) = store
        .group(key)
        .await
        .map_err(store_failed)?
        .ok_or_else(|| no_group(key))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "group": group, "summary": summary, "note": note }),
    ))
}

/// `POST /api/divergences/{group}/recheck`: the group's sampled reads sent
/// to both sides again; `{"mark_fixed": true}` records `fixed` when the
/// group's difference is gone from them. 409 while another recheck runs.
async fn recheck(state: &AdminState, key: &str, asked: Value) -> ApiAnswer {
    let mark_fixed = match &asked["mark_fixed"] {
        Value::Null => false,
        Value::Bool(mark) => *mark,
        other => return Err(bad_request(&format!("mark_fixed must be true or false, got {other}"))),
    };
    let control = state.recheck.as_ref().ok_or_else(|| unavailable("recheck"))?;
    let Ok(_one_at_a_time) = control.running.try_lock() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "a recheck is already running on this instance; try again when it is done",
        ));
    };
    let store = state.store().await?;
    let report = control
        .rechecker
        .recheck(store, key, mark_fixed, crate::clock::now_ms())
        .await
        .map_err(|err| match err {
            crate::recheck::RecheckError::Store(err) => store_failed(err),
            crate::recheck::RecheckError::NoGroup(_) => no_group(key),
            other => ApiError::new(StatusCode::CONFLICT, other.to_string()),
        })?;
    Ok(json_response(StatusCode::OK, &json!(report)))
}

/// `GET /api/mode`: who serves, global and per route.
fn mode(state: &AdminState) -> ApiAnswer {
    let modes = state.modes.as_ref().ok_or_else(|| unavailable("switching modes"))?;
    Ok(json_response(StatusCode::OK, &json!(modes.current())))
}

/// `POST /api/mode`: `{"mode": …, "route": …, "percent": …, "key": …,
/// "reason": …}`, recorded in the
/// store first (every replica, and a restart, learns of it there).
async fn switch_mode(state: &AdminState, asked: Value) -> ApiAnswer {
    let modes = state.modes.as_ref().ok_or_else(|| unavailable("switching modes"))?;
    let mode = asked["mode"]
        .as_str()
        .and_then(crate::mode::Mode::parse)
        .ok_or_else(|| {
            bad_request(&format!(
                "mode must be one of shadow, candidate, candidate-fallback, primary-only; got {}",
                asked["mode"]
            ))
        })?;
    let route = match &asked["route"] {
        Value::Null => None,
        Value::String(name) => Some(name.clone()),
        other => return Err(bad_request(&format!("route must be a route's name, got {other}"))),
    };
    if let (Some(name), Some(reloader)) = (&route, &state.reloader) {
        if !reloader.has_route(name) {
            return Err(bad_request(&format!(
                "no route named \"{name}\"; the routes are: {}",
                reloader.route_names().join(", ")
            )));
        }
    }
    let percent = match &asked["percent"] {
        Value::Null => None,
        Value::Number(percent) => percent.as_f64(),
        other => return Err(bad_request(&format!("percent must be a number, got {other}"))),
    };
    let key = match &asked["key"] {
        Value::Null => None,
        Value::String(key) => Some(key.as_str()),
        other => {
            return Err(bad_request(&format!(
                "key must be header:NAME, cookie:NAME or client-ip, got {other}"
            )))
        }
    };
    let share = crate::mode::Share::asked(percent, key).map_err(|err| bad_request(&err.to_string()))?;
    let mut switch = crate::mode::Switch::new(mode, route, share).map_err(|err| bad_request(&err.to_string()))?;
    let force = match &asked["force"] {
        Value::Null => false,
        Value::Bool(force) => *force,
        other => return Err(bad_request(&format!("force must be true or false, got {other}"))),
    };
    let store = state.store().await?;
    let against = if mode.candidate_serves() {
        last_report(state, store).await?.against_switching()
    } else {
        None
    };
    if let (Some(against), false) = (&against, force) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{against}; send \"force\": true to switch to {mode} anyway"),
        ));
    }
    switch.reason = asked["reason"].as_str().unwrap_or("manual").to_string();
    switch.forced = against.is_some();
    let detail = serde_json::to_value(&switch).unwrap_or_default();
    // Recorded first: the store is how every replica (and a restart) learns of it.
    let id = store
        .add_event("mode_switch", &detail, crate::clock::now_ms())
        .await
        .map_err(store_failed)?;
    apply_switch(modes, &state.metrics, id, &detail.to_string());
    Ok(json_response(StatusCode::OK, &json!(modes.current())))
}

/// `POST /api/reload`: re-reads the config file.
async fn reload(state: &AdminState) -> ApiAnswer {
    let reloader = state.reloader.as_ref().ok_or_else(|| unavailable("reload"))?;
    match reloader.reload().await {
        Ok(summary) => Ok(json_response(
            StatusCode::OK,
            &json!({"reloaded": true, "config": summary.fingerprint, "routes": summary.routes}),
        )),
        Err(err) => Err(bad_request(&format!(
            "reload refused, the old configuration stays: {err}"
        ))),
    }
}

/// `GET /api/drift`: the open drift.
async fn open_drift(state: &AdminState) -> ApiAnswer {
    let rows = state
        .store()
        .await?
        .ledger(Some(LedgerState::Drift), 1000)
        .await
        .map_err(store_failed)?;
    let open = rows.iter().map(drift_json).collect::<Vec<_>>();
    Ok(json_response(StatusCode::OK, &json!({ "open": open })))
}

/// `GET /api/notifications`: the newest 200 `[[notify]]` notices with how
/// their delivery went (the bodies stay in the store).
async fn notifications(state: &AdminState) -> ApiAnswer {
    let rows = state.store().await?.notices(200).await.map_err(store_failed)?;
    Ok(json_response(StatusCode::OK, &json!({ "notifications": rows })))
}

/// `POST /api/drift/replay`: `{"all": true}` or `{"id": N}`.
async fn drift_replay(state: &AdminState, asked: Value) -> ApiAnswer {
    let selection = match (asked["all"].as_bool(), asked["id"].as_i64()) {
        (Some(true), None) => crate::drift::Selection::All,
        (None | Some(false), Some(id)) => crate::drift::Selection::One(id),
        _ => return Err(bad_request("expected {\"all\": true} or {\"id\": N}")),
    };
    let replayed = replay(state, selection).await?;
    Ok(json_response(StatusCode::OK, &json!({ "replayed": replayed })))
}

/// `GET /report` (HTML) and `GET /report.json`, over `?since=48h` (default).
/// The report over the default window, judged by the gates in force.
pub(super) async fn last_report(
    state: &AdminState,
    store: &crate::store::Store,
) -> Result<crate::report::Report, ApiError> {
    let now = crate::clock::now_ms();
    let span = crate::report::Span::since(crate::report::DEFAULT_WINDOW, now);
    crate::report::Report::build(store, span, &state.readiness(), now)
        .await
        .map_err(store_failed)
}

pub(super) async fn report<B>(state: &AdminState, request: &Request<B>) -> Result<Response<ResponseBody>, ApiError> {
    let mut since = crate::report::DEFAULT_WINDOW;
    for (name, value) in form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "since" => {
                since =
                    crate::units::parse_duration(&value).map_err(|message| bad_request(&format!("since: {message}")))?
            }
            other => return Err(bad_request(&format!("unknown parameter \"{other}\"; try since=24h"))),
        }
    }
    let now = crate::clock::now_ms();
    let store = state.store().await?;
    let report = crate::report::Report::build(store, crate::report::Span::since(since, now), &state.readiness(), now)
        .await
        .map_err(store_failed)?
        .with_commands(&state.commands);
    Ok(if request.uri().path() == "/report.json" {
        text(
            StatusCode::OK,
            "application/json",
            report.render(crate::report::Format::Json),
        )
    } else {
        text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            report.render(crate::report::Format::Html),
        )
    })
}

/// Replays drifted writes, then lets the mirror send writes to entities
/// that no longer have open drift.
async fn replay(
    state: &AdminState,
    selection: crate::drift::Selection,
) -> Result<Vec<crate::drift::Replayed>, ApiError> {
    let control = state.drift.as_ref().ok_or_else(|| unavailable("replay"))?;
    let _one_at_a_time = control.replaying.lock().await;
    let store = state.store().await?.clone();
    let replayer = crate::drift::Replayer {
        shadow: control.shadow.clone(),
        primary: control.primary.clone(),
        ids: Arc::clone(&control.ids),
        routes: control.routes.clone(),
        replay_headers: control.replay_headers.clone(),
        store: store.clone(),
        seal: control.seal.clone(),
    };
    let replayed = replayer.replay(selection).await.map_err(|err| match err {
        crate::drift::DriftError::Store(err) => store_failed(err),
        other => ApiError::new(StatusCode::CONFLICT, other.to_string()),
    })?;
    let still: std::collections::HashSet<String> = store
        .drifted_entities()
        .await
        .map_err(store_failed)?
        .into_iter()
        .collect();
    {
        let mut held = control.drifted.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for entity in replayed.iter().filter_map(|r| r.entity.as_ref()) {
            if !still.contains(entity) {
                held.remove(entity);
            }
        }
    }
    state
        .metrics
        .drift_open()
        .set(store.ledger_count(LedgerState::Drift).await.map_err(store_failed)?);
    state.metrics.set_idmap_entries(&control.ids.counts());
    Ok(replayed)
}

fn drift_json(row: &crate::store::LedgerRow) -> Value {
    let detail: Option<crate::ledger::DriftDetail> = row.replay.as_deref().and_then(|t| serde_json::from_str(t).ok());
    json!({
        "id": row.id,
        "at_ms": row.at_ms,
        "route": row.route,
        "method": row.method,
        "path": row.path,
        "entity": row.entity,
        "primary_status": row.primary_status,
        "shadow_status": row.shadow_status,
        "attempts": row.attempts,
        "reason": detail.as_ref().map(|d| d.reason.clone()),
        "replayable": detail.as_ref().is_some_and(|d| d.request.is_some()),
        "not_replayable": detail.as_ref().and_then(|d| d.not_replayable.clone()),
    })
}

/// Reads the `/api/divergences` query: filters, `cursor`, `limit` (1 to 500, default 50).
fn group_filter(query: &str) -> Result<(GroupFilter, u32), ApiError> {
    let mut filter = GroupFilter::default();
    let mut limit = 50;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        match name.as_ref() {
            "route" => filter.route = Some(value),
            "status" => filter.status = Some(value),
            "severity" => filter.severity = Some(value),
            "q" => filter.q = Some(value),
            "cursor" => filter.cursor = Some(value),
            "since" => {
                let window = crate::units::parse_duration(&value)
                    .map_err(|message| bad_request(&format!("since: {message}")))?;
                filter.since_ms = Some(crate::clock::ms_ago(window));
            }
            "limit" => {
                limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=500).contains(n))
                    .ok_or_else(|| bad_request(&format!("limit must be 1 to 500, got \"{value}\"")))?;
            }
            other => return Err(bad_request(&format!("unknown filter \"{other}\""))),
        }
    }
    Ok((filter, limit))
}
