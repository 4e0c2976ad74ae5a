//! A browser's way in: `GET /` leads to the report, through a login form
//! when needed; `POST /login` with the token sets an HttpOnly,
//! SameSite=Strict cookie, so the token never travels in a URL (which
//! proxies and histories log). The cookie only opens reads (`GET`): every
//! state-changing endpoint still needs the bearer header, which a
//! cross-site form or image cannot send.
//!
//! Must never: put the token (or anything it can be recovered from) in a
//! URL or a page, or accept the cookie for anything but a read.

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;
use crate::server::ResponseBody;

use super::AdminState;

/// The cookie's name.
const COOKIE_NAME: &str = "cutover_admin";

/// How long a login lasts, in seconds (a working day).
const LOGIN_SECONDS: u32 = 12 * 3600;

/// What the cookie holds: a digest of the token, so every replica with the
/// same token accepts it and the cookie never reveals the token.
fn session_value(token: &Secret) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"cutover admin session v1\0");
    hasher.update(token.expose().as_bytes());
    hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Whether the request carries the login cookie and is a read.
pub(super) fn cookie_allows<B>(token: &Secret, request: &Request<B>) -> bool {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return false;
    }
    let expected = session_value(token);
    request
        .headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == COOKIE_NAME && bool::from(value.as_bytes().ct_eq(expected.as_bytes())))
}

/// `GET /`: the report for a logged-in browser, else the login form.
pub(super) fn root(state: &AdminState, request: &Request<Incoming>) -> Response<ResponseBody> {
    match &state.token {
        Some(token) if cookie_allows(token, request) => redirect("/report", None),
        Some(_) => page(StatusCode::OK, None),
        None => page(
            StatusCode::FORBIDDEN,
            Some(&format!(
                "The admin API is off: set ${} to a secret token and restart.",
                state.token_env
            )),
        ),
    }
}

/// `POST /login` (a form with `token`): the cookie, then the report.
pub(super) async fn login(state: &AdminState, request: Request<Incoming>) -> Response<ResponseBody> {
    let Some(token) = &state.token else {
        return root_off(state);
    };
    let body = match Limited::new(request.into_body(), 4096).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return page(StatusCode::PAYLOAD_TOO_LARGE, Some("The form was too large.")),
    };
    let given = form_urlencoded::parse(&body)
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    if !bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
        return page(StatusCode::UNAUTHORIZED, Some("That is not the token."));
    }
    let cookie = format!(
        "{COOKIE_NAME}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={LOGIN_SECONDS}",
        session_value(token)
    );
    redirect("/report", Some(cookie))
}

/// `POST /logout`: the cookie, expired.
pub(super) fn logout() -> Response<ResponseBody> {
    redirect(
        "/",
        Some(format!("{COOKIE_NAME}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")),
    )
}

fn root_off(state: &AdminState) -> Response<ResponseBody> {
    page(
        StatusCode::FORBIDDEN,
        Some(&format!(
            "The admin API is off: set ${} to a secret token.",
            state.token_env
        )),
    )
}

/// 303 to `to` (the browser follows with a GET), setting `cookie` if given.
fn redirect(to: &'static str, cookie: Option<String>) -> Response<ResponseBody> {
    let mut response = html(StatusCode::SEE_OTHER, String::new());
    response.headers_mut().insert(LOCATION, HeaderValue::from_static(to));
    if let Some(value) = cookie.and_then(|cookie| HeaderValue::from_str(&cookie).ok()) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}

/// The login form, with a message when there is one (never the token).
fn page(status: StatusCode, message: Option<&str>) -> Response<ResponseBody> {
    let message = message
        .map(|text| format!("<p class=\"msg\">{}</p>", crate::report::escape_html(text)))
        .unwrap_or_default();
    html(
        status,
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>cutover admin</title>\
             <style>body{{font:15px system-ui,sans-serif;max-width:420px;margin:64px auto;padding:0 16px}}\
             input{{font:inherit;padding:6px;width:100%;box-sizing:border-box;margin:8px 0}}.msg{{color:#cf222e}}</style></head>\
             <body><h1>cutover admin</h1>{message}<form method=\"post\" action=\"/login\">\
             <label for=\"token\">Admin token</label><input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required>\
             <input type=\"submit\" value=\"Open the report\"></form></body></html>\n"
        ),
    )
}

fn html(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(
        Full::new(bytes::Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
