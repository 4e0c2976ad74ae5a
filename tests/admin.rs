//! The admin API over its own socket: auth, readiness, and triage of real
//! divergence groups recorded by real traffic.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use cutover::metrics::{REQUESTS_TOTAL, STORE_PENDING};
use cutover::store::{Store, StoreOptions};
use serde_json::{json, Value};

const TOKEN: &str = "correct-horse-battery";

async fn get(url: String, token: Option<&str>) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = client().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null);
    (status, body, headers)
}

async fn post(url: String, body: Value) -> (u16, Value) {
    let response = client()
        .post(url)
        .bearer_auth(TOKEN)
        .json_body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null),
    )
}

trait JsonBody {
    fn json_body(self, body: Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, body: Value) -> Self {
        self.header("content-type", "application/json").body(body.to_string())
    }
}

#[tokio::test]
async fn the_api_needs_the_token_and_health_does_not() {
    let primary = fixed(200, &[], b"x").await;
    let shadow = fixed(200, &[], b"x").await;
    let without = ProxySetup::new(primary.url(), shadow.url()).start().await;
    let (status, body, _) = get(format!("http://{}/api/summary", without.admin_addr), Some(TOKEN)).await;
    assert_eq!(status, 403);
    assert_eq!(
        body["error"],
        "the admin API is off: set $CUTOVER_ADMIN_TOKEN to a secret token and send it as 'Authorization: Bearer <token>'"
    );

    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.env = vec![("CUTOVER_ADMIN_TOKEN", TOKEN.to_string())];
    let proxy = setup.start().await;
    let admin = proxy.admin_addr;
    let (status, body, headers) = get(format!("http://{admin}/api/summary"), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("missing or wrong bearer token"))
    );
    assert_eq!(headers["www-authenticate"], "Bearer");
    let (status, _, _) = get(format!("http://{admin}/api/summary"), Some("correct-horse-batterY")).await;
    assert_eq!(status, 401);
    let (status, body, _) = get(format!("http://{admin}/api/summary"), Some(TOKEN)).await;
    assert_eq!((status, body), (200, json!({"routes": []})));
    for open in ["/healthz", "/metrics", "/readyz"] {
        // Readiness also waits for the ID map to load from the store, which runs in the background.
        let mut answer = get(format!("http://{admin}{open}"), None).await;
        for _ in 0..100 {
            if answer.0 == 200 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            answer = get(format!("http://{admin}{open}"), None).await;
        }
        assert_eq!(answer.0, 200, "{open} needs no token: {}", answer.1);
    }
    // The API is not on the proxy port: the primary answers that path.
    let response = client()
        .get(format!("http://{}/api/summary", proxy.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.bytes().await.unwrap(), "x");
}

#[tokio::test]
async fn readiness_fails_when_the_primary_is_unreachable() {
    let shadow = fixed(200, &[], b"x").await;
    let proxy = ProxySetup::new(format!("http://{}", closed_port().await), shadow.url())
        .start()
        .await;
    let (status, body, _) = get(format!("http://{}/readyz", proxy.admin_addr), None).await;
    assert_eq!(status, 503);
    assert_eq!(body["store"], "ok");
    assert!(
        body["error"].as_str().unwrap().starts_with("not ready: primary: "),
        "{body}"
    );
}

#[tokio::test]
async fn divergence_groups_can_be_listed_filtered_paged_and_triaged() {
    let primary = backend(|seen: Seen| async move {
        let body = match seen.path_and_query.as_str() {
            "/a" => r#"{"title":"a","due":"x"}"#,
            _ => r#"{"status":"open"}"#,
        };
        respond(
            200,
            &[("content-type".into(), "application/json".into())],
            Bytes::from_static(body.as_bytes()),
        )
    })
    .await;
    let shadow = backend(|seen: Seen| async move {
        let body = match seen.path_and_query.as_str() {
            "/a" => r#"{"title":"A"}"#,
            _ => r#"{"status":"OPEN"}"#,
        };
        respond(
            200,
            &[("content-type".into(), "application/json".into())],
            Bytes::from_static(body.as_bytes()),
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("admin.db").display());
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.store = url.clone();
    setup.env = vec![("CUTOVER_ADMIN_TOKEN", TOKEN.to_string())];
    setup.routes = "[[route]]\nname = \"a\"\nmatch = \"GET /a\"\n\n[[route]]\nname = \"b\"\nmatch = \"GET /b\"\n";
    let proxy = setup.start().await;
    let client = client();
    for path in ["/a", "/a", "/b"] {
        client
            .get(format!("http://{}{path}", proxy.proxy_addr))
            .send()
            .await
            .unwrap();
    }
    wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[], 3.0).await;
    for _ in 0..200 {
        if metric(&metrics_text(proxy.admin_addr).await, STORE_PENDING, &[]) == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let api = format!("http://{}/api", proxy.admin_addr);

    let (_, summary, _) = get(format!("{api}/summary"), Some(TOKEN)).await;
    assert_eq!(
        summary["routes"],
        json!([
            {"route": "a", "requests": 2, "compared": 2, "outcomes": [["diverged", 2]], "open_groups": 2,
             "served": [{"served": "primary", "requests": 2, "compared": 2, "diverged": 2}]},
            {"route": "b", "requests": 1, "compared": 1, "outcomes": [["diverged", 1]], "open_groups": 1,
             "served": [{"served": "primary", "requests": 1, "compared": 1, "diverged": 1}]}
        ])
    );
    let (_, all, _) = get(format!("{api}/divergences"), Some(TOKEN)).await;
    assert_eq!(all["groups"].as_array().unwrap().len(), 3);
    let (_, high, _) = get(format!("{api}/divergences?route=a&severity=high"), Some(TOKEN)).await;
    let high = high["groups"].as_array().unwrap();
    assert_eq!(
        (high.len(), high[0]["pattern"].as_str(), high[0]["count"].as_i64()),
        (1, Some("/due"), Some(2))
    );
    let (_, searched, _) = get(format!("{api}/divergences?q=status"), Some(TOKEN)).await;
    assert_eq!(searched["groups"][0]["route"], "b");

    // Pages of one, following the cursor, visit every group exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = cursor
            .as_deref()
            .map_or("limit=1".to_string(), |c| format!("limit=1&cursor={c}"));
        let (status, page, _) = get(format!("{api}/divergences?{query}"), Some(TOKEN)).await;
        assert_eq!(status, 200, "{page}");
        for group in page["groups"].as_array().unwrap() {
            seen.push(group["key"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3);

    let key = high[0]["key"].as_str().unwrap().to_string();
    let (status, detail, _) = get(format!("{api}/divergences/{key}"), Some(TOKEN)).await;
    assert_eq!(
        (status, detail["summary"].as_str()),
        (200, Some("missing_in_shadow at /due"))
    );
    let (status, triaged) = post(
        format!("{api}/divergences/{key}/triage"),
        json!({"status": "accepted", "note": "due dates move in v2"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (triaged["group"]["status"].as_str(), triaged["note"].as_str()),
        (Some("accepted"), Some("due dates move in v2"))
    );
    let (_, open_a, _) = get(format!("{api}/divergences?route=a&status=open"), Some(TOKEN)).await;
    assert_eq!(
        open_a["groups"].as_array().unwrap().len(),
        1,
        "the accepted group left the open list"
    );

    let (status, body) = post(format!("{api}/divergences/{key}/triage"), json!({"status": "wontfix"})).await;
    assert_eq!(status, 400);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .starts_with("status must be one of open, accepted, bug, fixed"));
    let (status, _) = post(
        format!("{api}/divergences/0000000000000000/triage"),
        json!({"status": "bug"}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, body, _) = get(format!("{api}/divergences?limit=0"), Some(TOKEN)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("limit must be 1 to 500, got \"0\""))
    );

    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    let events = store.events("triage").await.unwrap();
    assert_eq!(events.len(), 1, "every triage is an events row");
    let detail: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(
        detail,
        json!({"group": key, "status": "accepted", "note": "due dates move in v2"})
    );
}

#[tokio::test]
async fn the_report_is_served_with_the_token() {
    let primary = fixed(200, &[("content-type", "application/json")], br#"{"a":1}"#).await;
    let shadow = fixed(200, &[("content-type", "application/json")], br#"{"a":1}"#).await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.env = vec![("CUTOVER_ADMIN_TOKEN", TOKEN.to_string())];
    let dir = tempfile::tempdir().unwrap();
    setup.store = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let proxy = setup.start().await;
    client()
        .get(format!("http://{}/x", proxy.proxy_addr))
        .send()
        .await
        .unwrap();
    let admin = proxy.admin_addr;
    wait_for_metric(admin, "cutover_requests_total", &[("outcome", "match")], 1.0).await;
    let (status, _, _) = get(format!("http://{admin}/report.json"), None).await;
    assert_eq!(status, 401);
    // The writer flushes every second: wait until the store has the exchange.
    let mut report = json!(null);
    for _ in 0..100 {
        let (status, body, _) = get(format!("http://{admin}/report.json?since=1h"), Some(TOKEN)).await;
        assert_eq!(status, 200);
        if body["routes"].as_array().is_some_and(|routes| !routes.is_empty()) {
            report = body;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(report["verdict"], "NOT YET", "one request is not enough: {report}");
    assert_eq!(report["routes"][0]["matched"], 1);
    let page = client()
        .get(format!("http://{admin}/report"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.text().await.unwrap().contains("Cutover readiness"));
    let (status, body, _) = get(format!("http://{admin}/report?sinse=1h"), Some(TOKEN)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unknown parameter \"sinse\"; try since=24h"))
    );
}

/// A browser logs in with the token (never in a URL), gets an HttpOnly,
/// SameSite=Strict cookie that opens the report and other reads, and
/// cannot change anything with it.
#[tokio::test]
async fn a_browser_logs_in_with_a_cookie_that_opens_reads_only() {
    let primary = fixed(200, &[], b"x").await;
    let shadow = fixed(200, &[], b"x").await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.env = vec![("CUTOVER_ADMIN_TOKEN", TOKEN.to_string())];
    let proxy = setup.start().await;
    let admin = proxy.admin_addr;
    // reqwest is built without a bundled crypto provider (see cutover::upstream).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let browser = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = browser.get(format!("http://{admin}/")).send().await.unwrap();
    assert_eq!(form.status(), 200);
    let page = form.text().await.unwrap();
    assert!(
        page.contains("action=\"/login\"") && page.contains("type=\"password\""),
        "{page}"
    );
    assert_eq!(
        browser
            .get(format!("http://{admin}/report?token={TOKEN}"))
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "a token in a URL is never accepted"
    );
    let wrong = browser
        .post(format!("http://{admin}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());

    let login = browser
        .post(format!("http://{admin}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    assert_eq!(login.headers()["location"], "/report");
    let set_cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains(TOKEN), "the cookie does not carry the token");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let with_cookie = |method: reqwest::Method, path: &str| {
        browser
            .request(method, format!("http://{admin}{path}"))
            .header("cookie", &cookie)
    };
    let root = with_cookie(reqwest::Method::GET, "/").send().await.unwrap();
    assert_eq!(
        (root.status().as_u16(), root.headers()["location"].to_str().unwrap()),
        (303, "/report")
    );
    let report = with_cookie(reqwest::Method::GET, "/report").send().await.unwrap();
    assert_eq!(report.status(), 200);
    assert!(report.text().await.unwrap().contains("Cutover readiness"));
    let summary = with_cookie(reqwest::Method::GET, "/api/summary").send().await.unwrap();
    assert_eq!(summary.status(), 200);
    // A cross-site form can carry a cookie (Strict stops it in browsers);
    // even so, nothing changes without the bearer header.
    let switch = with_cookie(reqwest::Method::POST, "/api/mode")
        .body(json!({"mode": "primary-only"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(switch.status(), 401);
    let forged = browser
        .get(format!("http://{admin}/report"))
        .header("cookie", "cutover_admin=0000")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let logout = with_cookie(reqwest::Method::POST, "/logout").send().await.unwrap();
    assert!(logout.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    proxy.shutdown().await;
}

/// `cutover health` is the container health check: 0 when /healthz answers.
#[tokio::test]
async fn the_health_command_checks_the_admin_listener() {
    let primary = fixed(200, &[], b"x").await;
    let proxy = ProxySetup::new(primary.url(), primary.url()).start().await;
    let healthy = run_cutover(&["health", "--admin", &proxy.admin_addr.to_string()]).await;
    assert_eq!(
        healthy.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    let down = run_cutover(&["health", "--admin", &closed_port().await.to_string()]).await;
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("does not answer"));
}
