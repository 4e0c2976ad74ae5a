//! The hot path: forwards every client request to the primary and streams
//! the primary's answer back, capturing what the comparison needs on the way
//! and handing mirrored requests to the mirror.
//!
//! The client's response is the primary's: status, headers and body byte for
//! byte, minus hop-by-hop fields (RFC 9110 §7.6.1). Both upstream requests
//! carry `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and an
//! `x-request-id` (the client's own when it sent one).
//!
//! Must never: await the shadow, the store or a diff; change what the
//! primary answered; or send a request anywhere but the configured upstreams
//! (the request's own authority is ignored).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION};
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::{debug_span, warn, Instrument};

use crate::exchange::method_label;
use crate::exchange::{CapturedRequest, SideResult, SkipReason};
use crate::headers::SHADOW_MARKER_NAME;
use crate::idmap::Side;
use crate::mirror::{CaptureBuf, Mirror, Plan, PrimaryObserver};
use crate::mode::{Mode, ModeTable, ServingHealth};
use crate::record::{DirectRequest, LostWrite};
use crate::route::{access, is_read, is_safe, Access, MirrorPolicy, Route, RouteTable, UNMATCHED_ROUTE};
use crate::server::{BoxError, ResponseBody};
use crate::upstream::{Failure, OutgoingBody, Upstream, UpstreamBody};

mod body;
mod forwarding;
mod protocols;

use body::{read_bounded, BodyReadError, ObservedBody, Pending};
use forwarding::{forwarded_headers, pass_through, reframe, refuse_ambiguous, request_id_of, upstream_error};
pub use forwarding::{json_error, strip_hop_by_hop};

/// Everything the proxy needs per request, shared by all connections.
pub struct ProxyState {
    /// Swapped whole by a config reload; each request uses the table it started with.
    routes: std::sync::RwLock<Arc<RouteTable>>,
    pub primary: Upstream,
    /// Serves clients while the mode says the candidate does.
    pub shadow: Upstream,
    pub mirror: Arc<Mirror>,
    pub modes: Arc<ModeTable>,
    /// How long a client may pause while sending a body that is read before forwarding.
    pub body_read_timeout: std::time::Duration,
    /// What the candidate does while it serves (for `[rollback]`).
    pub health: Arc<ServingHealth>,
    metrics: crate::metrics::Metrics,
}

impl ProxyState {
    pub fn new(
        routes: RouteTable,
        primary: Upstream,
        shadow: Upstream,
        mirror: Arc<Mirror>,
        modes: Arc<ModeTable>,
        metrics: crate::metrics::Metrics,
    ) -> ProxyState {
        ProxyState {
            routes: std::sync::RwLock::new(Arc::new(routes)),
            primary,
            shadow,
            mirror,
            modes,
            body_read_timeout: std::time::Duration::from_secs(30),
            health: Arc::new(ServingHealth::default()),
            metrics,
        }
    }

    /// How long a client may pause while sending a body that is read before forwarding.
    pub fn with_body_read_timeout(mut self, timeout: std::time::Duration) -> ProxyState {
        self.body_read_timeout = timeout;
        self
    }

    /// The routes in force.
    pub fn routes(&self) -> Arc<RouteTable> {
        Arc::clone(&self.routes.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// The upstream of a side.
    fn serving(&self, side: Side) -> &Upstream {
        match side {
            Side::Primary => &self.primary,
            Side::Shadow => &self.shadow,
        }
    }

    /// Puts new routes in force for the next request.
    pub fn replace_routes(&self, routes: RouteTable) {
        *self.routes.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(routes);
    }
}

/// Serves one client request.
pub async fn handle(state: Arc<ProxyState>, client: SocketAddr, request: Request<Incoming>) -> Response<ResponseBody> {
    let request_id = request_id_of(request.headers());
    let routes = state.routes();
    let route = routes.find(request.method(), request.uri().path());
    let route_name = route.map_or(UNMATCHED_ROUTE, |route| route.name.as_str()).to_string();
    // A debug span: at the default level it is never built, which saves
    // more per request than all of the header handling. cutover's own
    // warnings about a request name its id and route themselves.
    let span = debug_span!("request", request_id = %request_id, route = %route_name, method = %request.method());
    forward(state, route, client, request, request_id, route_name)
        .instrument(span)
        .await
}

/// One request on its way through the phases of [`forward`]: what was
/// decided about it before anything is sent.
struct InFlight<'a> {
    state: &'a ProxyState,
    route: Option<&'a Route>,
    route_name: String,
    request_id: String,
    parts: http::request::Parts,
    path_and_query: String,
    /// What both upstreams get: hop-by-hop fields out, forwarding fields in.
    headers: HeaderMap,
    started_at: SystemTime,
    /// Read once: a switch never changes a request in flight.
    mode: Mode,
    serving: Side,
}

/// The request body as it goes to the serving side, and what watches its answer.
struct Prepared {
    body: OutgoingBody,
    observer: PrimaryObserver,
    /// Where the answer's body is copied to for comparison, when the request is mirrored.
    capture: Option<CaptureBuf>,
    /// The request body, when it was read before forwarding.
    body_copy: Option<Bytes>,
}

/// The phases of one request: admit it and choose who serves, plan the
/// mirror, read the body, send, fall back, respond. Each phase is a
/// function below; a refusal ends the request with its own answer.
async fn forward(
    state: Arc<ProxyState>,
    route: Option<&Route>,
    client: SocketAddr,
    request: Request<Incoming>,
    request_id: String,
    route_name: String,
) -> Response<ResponseBody> {
    let (parts, body) = request.into_parts();
    let mut flight = match admit(&state, route, client, parts, request_id, route_name) {
        Ok(flight) => flight,
        Err((refusal, request_id)) => return json_error(StatusCode::BAD_REQUEST, refusal, None, &request_id),
    };
    if let Some(protocol) = protocols::upgrade_requested(flight.parts.version, &flight.parts.headers) {
        if let Some(client_side) = flight.parts.extensions.remove::<hyper::upgrade::OnUpgrade>() {
            return tunnel(&mut flight, protocol, client_side, body).await;
        }
    }
    let plan = plan_mirror(&flight, client);
    let prepared = match read_body(&mut flight, plan, body).await {
        Ok(prepared) => prepared,
        Err(refusal) => return refusal,
    };
    let started = Instant::now();
    let resend = (flight.mode == Mode::CandidateFallback).then(|| (flight.headers.clone(), prepared.body_copy.clone()));
    let answer = send(&mut flight, prepared.body, prepared.body_copy.as_deref(), started).await;
    if let Some((headers, body)) = resend {
        // The body must be at hand to send again: captured, or none at all.
        let resendable = body.is_some() || is_safe(&flight.parts.method);
        if resendable && candidate_failed(&answer) {
            return fall_back(&flight, &answer, prepared.observer, started, headers, body).await;
        }
    }
    respond(&flight, answer, prepared.observer, prepared.capture, started)
}

/// Refuses what an upstream could read otherwise than the client meant
/// (the error says why, for a 400, and gives the request ID back), and
/// decides who serves.
fn admit<'a>(
    state: &'a ProxyState,
    route: Option<&'a Route>,
    client: SocketAddr,
    parts: http::request::Parts,
    request_id: String,
    route_name: String,
) -> Result<InFlight<'a>, (&'static str, String)> {
    if let Some(refusal) = refuse_ambiguous(&parts) {
        return Err((refusal, request_id));
    }
    let Some(path_and_query) = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .filter(|pq| pq.starts_with('/'))
    else {
        return Err(("request target must be an absolute path", request_id));
    };
    let headers = forwarded_headers(
        &parts.headers,
        parts.uri.authority().map(|a| a.as_str()),
        client,
        &request_id,
    );
    // A share is chosen by the client's own key, so every replica agrees.
    let mode = state.modes.for_request(&route_name, &parts.headers, client.ip()).mode;
    let serving = if mode.candidate_serves() {
        Side::Shadow
    } else {
        Side::Primary
    };
    Ok(InFlight {
        state,
        route,
        route_name,
        request_id,
        parts,
        path_and_query,
        headers,
        started_at: SystemTime::now(),
        mode,
        serving,
    })
}

/// An `Upgrade` goes to the side that serves as it came (body and all) and
/// is never mirrored: its `101` joins the two connections into a tunnel.
/// Any other answer (a refusal, a 426) is passed back as usual.
async fn tunnel(
    flight: &mut InFlight<'_>,
    protocol: HeaderValue,
    client_side: hyper::upgrade::OnUpgrade,
    body: Incoming,
) -> Response<ResponseBody> {
    let observer = flight
        .state
        .mirror
        .direct_observer(flight.direct(), SkipReason::Upgrade);
    let started = Instant::now();
    let mut headers = std::mem::take(&mut flight.headers);
    protocols::ask_to_upgrade(&mut headers, protocol);
    let upstream = flight.state.serving(flight.serving);
    let method = flight.parts.method.clone();
    let answer = upstream
        .send(method, &flight.path_and_query, headers, OutgoingBody::streaming(body))
        .await;
    match answer {
        Ok(response) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let elapsed = started.elapsed();
            let status = response.status();
            observer.finish(
                SideResult::Uncaptured {
                    status,
                    elapsed,
                    reason: SkipReason::Upgrade,
                },
                None,
            );
            protocols::switch_protocols(client_side, response, upstream.name().to_string())
        }
        other => respond(flight, other, observer, None, started),
    }
}

/// Whether, and how, the request is mirrored.
fn plan_mirror(flight: &InFlight<'_>, client: SocketAddr) -> Plan {
    if protocols::wants_event_stream(&flight.parts.headers) && is_safe(&flight.parts.method) {
        return Plan::Skip(SkipReason::Streaming);
    }
    if flight.mode.mirrors() {
        let parts = &flight.parts;
        flight
            .state
            .mirror
            .plan(flight.route, &parts.method, &parts.headers, client.ip())
    } else {
        Plan::Skip(SkipReason::MirrorOff)
    }
}

impl InFlight<'_> {
    /// Whether a request planned before its body was read (a GraphQL
    /// operation) turns out to be a write its route does not mirror.
    fn is_unmirrored_write(&self, body: &[u8]) -> bool {
        let method = &self.parts.method;
        access(self.route, method) == Access::ByBody
            && self.route.is_some_and(|route| route.mirror != MirrorPolicy::DualWrite)
            && !is_read(self.route, method, body)
    }

    /// The request as recorded when it is not mirrored. A GraphQL request
    /// whose body was not read counts as the write it may be.
    fn direct(&self) -> DirectRequest {
        let dual_write = self.route.filter(|route| {
            route.mirror == MirrorPolicy::DualWrite && access(Some(route), &self.parts.method) != Access::Read
        });
        DirectRequest {
            request_id: self.request_id.clone(),
            route: self.route_name.clone(),
            method: method_label(&self.parts.method),
            path_and_query: self.path_and_query.clone(),
            started_at: self.started_at,
            lost_write: dual_write.filter(|_| self.mode.mirrors()).map(|route| LostWrite {
                entity: self.state.mirror.entity_of(route, &self.path_and_query),
            }),
            serving: self.serving,
        }
    }
}

/// A mirrored request's body is read (bounded in size and time) so the
/// shadow gets the same bytes; any other body streams through untouched.
async fn read_body(flight: &mut InFlight<'_>, plan: Plan, body: Incoming) -> Result<Prepared, Response<ResponseBody>> {
    let mirror = &flight.state.mirror;
    let ticket = match plan {
        Plan::Skip(reason) => {
            return Ok(Prepared {
                body: OutgoingBody::streaming(body),
                observer: mirror.direct_observer(flight.direct(), reason),
                capture: None,
                body_copy: None,
            })
        }
        Plan::Mirror(ticket) => ticket,
    };
    let mut request_capture = CaptureBuf::new(mirror.max_body(), mirror.budget());
    let read = read_bounded(body, &mut request_capture, flight.state.body_read_timeout).await;
    match (read, request_capture.finish()) {
        (Err(err), _) => {
            warn!(request_id = %flight.request_id, route = %flight.route_name, error = %err, "could not read the request body");
            drop(ticket);
            // Dropped unfinished, the observer records the request as abandoned.
            drop(mirror.direct_observer(flight.direct(), SkipReason::ClientDisconnected));
            Err(unreadable_body(&err, &flight.request_id))
        }
        (Ok(rest), Err(reason)) => {
            drop(ticket);
            Ok(Prepared {
                body: OutgoingBody::streaming(rest),
                observer: mirror.direct_observer(flight.direct(), reason),
                capture: None,
                body_copy: None,
            })
        }
        (Ok(rest), Ok((bytes, _))) if flight.is_unmirrored_write(&bytes) => {
            // A GraphQL mutation on a route that mirrors reads only.
            drop(ticket);
            Ok(Prepared {
                body: OutgoingBody::streaming(rest),
                observer: mirror.direct_observer(flight.direct(), SkipReason::MirrorOff),
                capture: None,
                body_copy: None,
            })
        }
        (Ok(rest), Ok((bytes, reservation))) => {
            // Marked in the primary's map, which was built with room, just
            // for the copy: a clone has no room, and the marker grew it (a
            // copy of every entry). The marker is the last entry, so taking
            // it out again moves nothing.
            flight
                .headers
                .insert(SHADOW_MARKER_NAME.clone(), HeaderValue::from_static("1"));
            let shadow_headers = flight.headers.clone();
            flight.headers.remove(&SHADOW_MARKER_NAME);
            let captured = CapturedRequest {
                method: flight.parts.method.clone(),
                path_and_query: flight.path_and_query.clone(),
                headers: flight.headers.clone(),
                body: bytes.clone(),
            };
            let observer = mirror.dispatch(
                ticket,
                flight.request_id.clone(),
                flight.route_name.clone(),
                flight.route,
                captured,
                shadow_headers,
                reservation,
                flight.serving,
            );
            Ok(Prepared {
                body: OutgoingBody::streaming(rest),
                observer,
                capture: Some(CaptureBuf::new(mirror.max_body(), mirror.budget())),
                body_copy: Some(bytes),
            })
        }
    }
}

/// The answer to a body that could not be read: too slow, or broken.
fn unreadable_body(err: &BodyReadError, request_id: &str) -> Response<ResponseBody> {
    let status = match err {
        BodyReadError::TooSlow(_) => StatusCode::REQUEST_TIMEOUT,
        BodyReadError::Broken(_) => StatusCode::BAD_REQUEST,
    };
    let mut refused = json_error(
        status,
        &format!("could not read the request body: {err}"),
        None,
        request_id,
    );
    refused
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    refused
}

/// Sends the request to the side that serves, with IDs in that side's
/// space (clients hold IDs from whichever side served them).
async fn send(
    flight: &mut InFlight<'_>,
    streaming: OutgoingBody,
    body_copy: Option<&[u8]>,
    started: Instant,
) -> Result<Response<UpstreamBody>, Failure> {
    let state = flight.state;
    let upstream = state.serving(flight.serving);
    let mut translated = flight
        .route
        .map(|route| {
            route.writes.translation.to_side(
                state.mirror.ids(),
                flight.serving,
                &flight.path_and_query,
                body_copy.unwrap_or_default(),
            )
        })
        .unwrap_or_default();
    // While the candidate serves, an ID it has no pair for is most likely
    // the legacy's ID of an entity whose create is still being mirrored (or
    // was learned by another instance): wait for its pair, bounded, rather
    // than send the candidate an ID it cannot know. The primary is never
    // kept waiting: its clients' IDs are its own.
    if let (Some(route), false, Side::Shadow) = (flight.route, translated.unmapped.is_empty(), flight.serving) {
        translated = state
            .mirror
            .translate_ids(
                &route.writes.translation,
                &flight.parts.method,
                &flight.path_and_query,
                body_copy.unwrap_or_default(),
                flight.serving,
            )
            .await;
    }
    // Borrowed: the untranslated path costs no copy on the hot path.
    let send_path = translated.path_and_query.as_deref().unwrap_or(&flight.path_and_query);
    let mut headers = std::mem::take(&mut flight.headers);
    let body = match translated.body {
        Some(body) => {
            headers.remove(http::header::CONTENT_LENGTH);
            OutgoingBody::from(Bytes::from(body))
        }
        None => streaming,
    };
    let answer = upstream
        .send(flight.parts.method.clone(), send_path, headers, body)
        .await;
    if flight.serving == Side::Shadow {
        let failed = answer
            .as_ref()
            .map_or(true, |response| response.status().is_server_error());
        state.health.record(&flight.route_name, failed, started.elapsed());
    }
    answer
}

/// No answer, or a 5xx: what `candidate-fallback` replaces with the primary's.
fn candidate_failed(answer: &Result<Response<UpstreamBody>, Failure>) -> bool {
    match answer {
        Err(_) => true,
        Ok(response) => response.status().is_server_error(),
    }
}

/// `candidate-fallback`: the candidate failed, so the primary answers. The
/// candidate's result is what the observer records.
async fn fall_back(
    flight: &InFlight<'_>,
    answer: &Result<Response<UpstreamBody>, Failure>,
    observer: PrimaryObserver,
    started: Instant,
    headers: HeaderMap,
    body: Option<Bytes>,
) -> Response<ResponseBody> {
    let state = flight.state;
    let served = match answer {
        Err(failure) => SideResult::Failed {
            kind: failure.kind,
            message: failure.message.clone(),
            elapsed: started.elapsed(),
        },
        Ok(response) => SideResult::Uncaptured {
            status: response.status(),
            elapsed: started.elapsed(),
            reason: SkipReason::MirrorOff,
        },
    };
    warn!(
        request_id = %flight.request_id,
        route = %flight.route_name,
        upstream = state.serving(flight.serving).name(),
        "the candidate failed; the primary answers instead"
    );
    state.metrics.record_fallback(&flight.route_name);
    observer.finish(served, None);
    let body = OutgoingBody::from(body.unwrap_or_default());
    let method = flight.parts.method.clone();
    match state.primary.send(method, &flight.path_and_query, headers, body).await {
        Err(failure) => upstream_error(state.primary.name(), &failure, &flight.request_id),
        Ok(response) => pass_through(response),
    }
}

/// The serving side's answer goes back as it came, its body copied on the
/// way when the exchange is compared; the observer learns how it ended.
fn respond(
    flight: &InFlight<'_>,
    answer: Result<Response<UpstreamBody>, Failure>,
    observer: PrimaryObserver,
    mut capture: Option<CaptureBuf>,
    started: Instant,
) -> Response<ResponseBody> {
    let response = match answer {
        Ok(response) => response,
        Err(failure) => {
            let upstream = flight.state.serving(flight.serving).name();
            warn!(
                request_id = %flight.request_id,
                route = %flight.route_name,
                upstream,
                kind = failure.kind.label(),
                error = %failure.message,
                "serving upstream failed"
            );
            observer.finish(
                SideResult::Failed {
                    kind: failure.kind,
                    message: failure.message.clone(),
                    elapsed: started.elapsed(),
                },
                None,
            );
            return upstream_error(upstream, &failure, &flight.request_id);
        }
    };
    let (mut head, body) = response.into_parts();
    reframe(&mut head.headers);
    strip_hop_by_hop(&mut head.headers);
    // hyper speaks the client's protocol; the upstream's version is not ours to copy.
    head.version = Version::HTTP_11;
    if protocols::is_event_stream(&head.headers) {
        // An event stream has no end to wait for: what is known is known
        // now, and the events flow on unobserved.
        observer.finish(
            SideResult::Uncaptured {
                status: head.status,
                elapsed: started.elapsed(),
                reason: SkipReason::Streaming,
            },
            None,
        );
        let events = body.without_idle_timeout().map_err(BoxError::from);
        return Response::from_parts(head, events.boxed_unsync());
    }
    let captured_headers = match capture.as_mut() {
        Some(capture) => {
            capture.expect(&head.headers);
            head.headers.clone()
        }
        None => HeaderMap::new(),
    };
    let observed = ObservedBody {
        inner: body,
        capture,
        pending: Some(Pending {
            observer,
            status: head.status,
            headers: captured_headers,
            started,
        }),
    };
    Response::from_parts(head, observed.boxed_unsync())
}
