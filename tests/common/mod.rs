//! Test harness: real HTTP backends and a real proxy on port 0, talking over
//! sockets, the way zero-to-production's `spawn_app` does. What is here:
//! backends (a handler, a fixed answer, raw bytes, garbage, a closed port),
//! [`ProxySetup`] for an in-process proxy, [`ServeProcess`] and
//! [`Supervised`] for the real `cutover serve` binary, a client that talks
//! to exactly the address it is given, metrics readers, and [`eventually`]
//! for what lands after the client's answer. [`tasks`] is a stateful task
//! API for dual-write tests.
//!
//! Must never: bind anything but loopback port 0, wait on a fixed sleep
//! where a condition can be polled, or share state between tests (each
//! test builds its own backends, proxy and store).
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cutover::app::Running;
use cutover::config::Config;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub mod tasks;

/// The body of every answer a test backend gives.
pub type TestBody = UnsyncBoxBody<Bytes, Infallible>;

/// A request as a test backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A test backend: a real HTTP server on a loopback port.
pub struct Backend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Backend {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Starts a backend answering every request with `handler`.
pub async fn backend<F, Fut>(handler: F) -> Backend
where
    F: Fn(Seen) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let handler = handler.clone();
                    let log = Arc::clone(&log);
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let seen = Seen {
                            method: parts.method,
                            path_and_query: parts.uri.path_and_query().map(|pq| pq.to_string()).unwrap_or_default(),
                            headers: parts.headers,
                            body,
                        };
                        log.lock().unwrap().push(seen.clone());
                        Ok::<_, Infallible>(handler(seen).await)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Backend { addr, seen }
}

/// A backend that always gives the same answer.
pub async fn fixed(status: u16, headers: &[(&str, &str)], body: &'static [u8]) -> Backend {
    let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    backend(move |_| {
        let headers = headers.clone();
        async move { respond(status, &headers, Bytes::from_static(body)) }
    })
    .await
}

/// An answer with this status, these headers (in order, repeats kept) and body.
pub fn respond(status: u16, headers: &[(String, String)], body: Bytes) -> Response<TestBody> {
    let mut response = Response::new(Full::new(body).boxed_unsync());
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        response.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    response
}

/// A server that answers any request with exactly `answer`, then closes.
pub async fn raw_server(answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(answer).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// A server that answers anything with bytes that are not HTTP.
pub async fn garbage_server() -> SocketAddr {
    raw_server(b"\x00\x13garbage, not HTTP at all\r\n\r\n\xff\xfe").await
}

/// A loopback port free at the moment, for another process to bind (it
/// is released on return, so it is not [`closed_port`]'s).
pub async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// Sockets bound by [`closed_port`], held for the test process's life.
static HELD_PORTS: Mutex<Vec<tokio::net::TcpSocket>> = Mutex::new(Vec::new());

/// A loopback address nothing listens on, and nothing will: the port stays
/// bound (without `listen`) for the rest of the test process, so a server
/// another test starts on port 0 can never be given it. A connection to it
/// is refused at once.
pub async fn closed_port() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    HELD_PORTS.lock().unwrap().push(socket);
    addr
}

/// The config a test proxy starts from; tests adjust fields, then `start`.
pub struct ProxySetup {
    pub primary: String,
    pub shadow: String,
    pub primary_timeout: &'static str,
    pub shadow_timeout: &'static str,
    /// More keys of `[primary]`.
    pub primary_extra: &'static str,
    pub shadow_extra: &'static str,
    pub mirror: &'static str,
    pub routes: &'static str,
    pub grace: &'static str,
    /// `sqlite::memory:` unless a test looks at the store.
    pub store: String,
    /// More keys of `[store]`.
    pub store_extra: &'static str,
    /// Environment variables the config sees (e.g. the admin token).
    pub env: Vec<(&'static str, String)>,
}

impl ProxySetup {
    pub fn new(primary: String, shadow: String) -> ProxySetup {
        ProxySetup {
            primary,
            shadow,
            primary_timeout: "5s",
            shadow_timeout: "5s",
            primary_extra: "",
            shadow_extra: "",
            mirror: "",
            routes: "",
            grace: "5s",
            store: "sqlite::memory:".to_string(),
            store_extra: "",
            env: Vec::new(),
        }
    }

    pub fn toml(&self) -> String {
        format!(
            r#"
[listen]
proxy = "127.0.0.1:0"
admin = "127.0.0.1:0"
shutdown_grace = "{grace}"

[primary]
name = "legacy"
url = "{primary}"
timeout = "{primary_timeout}"
{primary_extra}

[shadow]
name = "candidate"
url = "{shadow}"
timeout = "{shadow_timeout}"
{shadow_extra}

[mirror]
# Tests share the CPU with each other: comparison threads at idle priority
# could starve for seconds while other tests run.
compare_priority = "normal"
{mirror}

[store]
url = "{store}"
{store_extra}

{routes}
"#,
            grace = self.grace,
            store = self.store,
            store_extra = self.store_extra,
            primary = self.primary,
            primary_timeout = self.primary_timeout,
            primary_extra = self.primary_extra,
            shadow = self.shadow,
            shadow_timeout = self.shadow_timeout,
            shadow_extra = self.shadow_extra,
            mirror = self.mirror,
            routes = self.routes,
        )
    }

    pub async fn start(&self) -> Running {
        let env = |name: &str| self.env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
        let config = Config::parse(&self.toml(), "test.toml", &env).expect("test config is valid");
        cutover::app::start(config).await.expect("proxy starts")
    }
}

/// A client that talks to exactly the address it is given, and never
/// decompresses or follows redirects.
pub fn client() -> reqwest::Client {
    // reqwest is built without a bundled crypto provider (see cutover::upstream).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The sum of a metric's samples whose labels include all of `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| series_labels.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Waits until the instance's `/readyz` says 200: its store is open (so a
/// CLI command pointed at it finds the schema) and its primary accepts.
pub async fn until_ready(admin: SocketAddr) {
    let url = format!("http://{admin}/readyz");
    eventually("the instance is ready", || async {
        matches!(client().get(&url).send().await, Ok(response) if response.status() == 200)
    })
    .await;
}

/// The admin listener's `/metrics` page, as text.
pub async fn metrics_text(admin: SocketAddr) -> String {
    client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Polls `/metrics` until the metric reaches `expected` (outcomes are
/// recorded after the client's answer), and returns the last value seen.
pub async fn wait_for_metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)], expected: f64) -> f64 {
    let mut value = 0.0;
    for _ in 0..500 {
        value = metric(&metrics_text(admin).await, name, labels);
        if value >= expected {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    value
}

/// The real `cutover serve` binary, started with JSON logs on stderr.
pub struct ServeProcess {
    pub child: std::process::Child,
    /// The proxy's address, read from the "cutover is serving" log line.
    pub proxy: String,
    /// The admin listener's address, from the same line.
    pub admin: String,
    /// The log lines still to come.
    pub logs: std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
    /// The log lines before "cutover is serving" (startup runs on).
    pub before_serving: Vec<String>,
}

impl ServeProcess {
    /// Writes `setup`'s config to `dir` and runs `cutover serve` on it.
    pub fn start(setup: &ProxySetup, dir: &std::path::Path, rust_log: &str) -> ServeProcess {
        let config = dir.join(format!("cutover-{}.toml", uuid::Uuid::new_v4().simple()));
        std::fs::write(&config, setup.toml()).unwrap();
        ServeProcess::run(&config, rust_log, &[])
    }

    /// Runs `cutover serve -c config`, behind `wrapper` (a command that
    /// execs its arguments) when it is not empty.
    pub fn run(config: &std::path::Path, rust_log: &str, wrapper: &[&str]) -> ServeProcess {
        use std::io::BufRead;
        let binary = env!("CARGO_BIN_EXE_cutover");
        let args = ["--log-format", "json", "serve", "-c", config.to_str().unwrap()];
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = std::process::Command::new(program);
                command.args(rest).arg(binary).args(args);
                command
            }
            None => {
                let mut command = std::process::Command::new(binary);
                command.args(args);
                command
            }
        };
        let mut child = command
            .env("RUST_LOG", rust_log)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut logs = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        // Port 0 picks a free port; the first info line says which.
        let mut before_serving = Vec::new();
        let (proxy, admin) = loop {
            let line = logs.next().expect("cutover logged nothing").unwrap();
            let entry: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if entry["message"] == "cutover is serving" {
                break (
                    entry["proxy"].as_str().unwrap().to_string(),
                    entry["admin"].as_str().unwrap().to_string(),
                );
            }
            before_serving.push(line);
        };
        ServeProcess {
            child,
            proxy,
            admin,
            logs,
            before_serving,
        }
    }

    /// Sends SIGTERM; returns the exit code and the remaining log lines.
    pub fn terminate(mut self) -> (Option<i32>, Vec<String>) {
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let rest: Vec<String> = self.logs.map_while(Result::ok).collect();
        (self.child.wait().unwrap().code(), rest)
    }
}

/// A store both instances share: a fresh Postgres database, or a SQLite file.
pub async fn shared_store(dir: &std::path::Path) -> String {
    match std::env::var("CUTOVER_TEST_POSTGRES_URL") {
        Ok(admin_url) => {
            let name = format!("cutover_replicas_{}", uuid::Uuid::new_v4().simple());
            let admin = sqlx::PgPool::connect(&admin_url).await.expect("CI's Postgres answers");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&admin)
                .await
                .unwrap();
            let (base, _) = admin_url.rsplit_once('/').unwrap();
            format!("{base}/{name}")
        }
        Err(_) => format!("sqlite://{}", dir.join("cutover.db").display()),
    }
}

/// Drops the Postgres database `shared_store` made (a SQLite file goes with its directory).
pub async fn drop_shared_store(store: &str) {
    let (Ok(admin_url), true) = (
        std::env::var("CUTOVER_TEST_POSTGRES_URL"),
        store.starts_with("postgres"),
    ) else {
        return;
    };
    let name = store.rsplit('/').next().unwrap_or_default();
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)")))
        .execute(&admin)
        .await
        .unwrap();
}

/// Runs the real `cutover` binary off the runtime (the test backends it
/// talks to are served by this test's runtime).
pub async fn run_cutover(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// `POST /api/mode` with a body; the status and the JSON answer.
pub async fn post_mode(admin: SocketAddr, token: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let answer = client()
        .post(format!("http://{admin}/api/mode"))
        .bearer_auth(token)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (status, serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap())
}

/// Asks the admin API to replay every drifted write; its answer as JSON.
pub async fn replay_all_drift(admin: SocketAddr, token: &str) -> serde_json::Value {
    let answer = client()
        .post(format!("http://{admin}/api/drift/replay"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(serde_json::json!({"all": true}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap()
}

/// Sends a request with an optional JSON body through `proxy`; returns the
/// status and the body as JSON (Null when it is not JSON).
pub async fn send_json(
    proxy: impl std::fmt::Display,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<(u16, serde_json::Value), reqwest::Error> {
    let mut request = client().request(
        Method::from_bytes(method.as_bytes()).unwrap(),
        format!("http://{proxy}{path}"),
    );
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let body = response.bytes().await?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null)))
}

/// GETs `path` through `proxy` `count` times; each answer must be 200 with `body`.
pub async fn get_expecting(proxy: impl std::fmt::Display, path: &str, count: usize, body: &[u8]) {
    for _ in 0..count {
        let response = client().get(format!("http://{proxy}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(&response.bytes().await.unwrap()[..], body, "{path}");
    }
}

/// Sends raw bytes (no client library adds a header of its own) and returns
/// what came back until the connection closed or went quiet.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Polls `check` until it holds; panics with `what` after about 20 s
/// (outcomes and store rows land after the client's answer).
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..400 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A `cutover serve` process whose logs are read as they come (a full
/// stderr pipe would stall it).
pub struct Supervised {
    pub child: std::process::Child,
    pub proxy: String,
    pub admin: String,
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Supervised {
    pub fn start(config: &std::path::Path, wrapper: &[&str]) -> Supervised {
        let process = ServeProcess::run(config, "info", wrapper);
        let logs = std::sync::Arc::new(std::sync::Mutex::new(process.before_serving));
        let sink = std::sync::Arc::clone(&logs);
        let lines = process.logs;
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Supervised {
            child: process.child,
            proxy: process.proxy,
            admin: process.admin,
            logs,
        }
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub async fn until_ready(&self) {
        until_ready(self.admin.parse().unwrap()).await;
    }

    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&metrics_text(self.admin.parse().unwrap()).await, name, labels)
    }

    pub fn kill(mut self, signal: &str) -> Option<i32> {
        let sent = std::process::Command::new("kill")
            .args([signal, &self.pid()])
            .status()
            .unwrap();
        assert!(sent.success());
        self.child.wait().unwrap().code()
    }

    /// Whether a log line containing `message` arrives within a few seconds.
    pub async fn logged(&self, message: &str) -> bool {
        for _ in 0..100 {
            if self.logs.lock().unwrap().iter().any(|line| line.contains(message)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Drop for Supervised {
    /// A failed assertion must not leave the process behind (it would hold
    /// the test's output pipe open).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET` an admin API path with the bearer token; the answer's JSON.
pub async fn api_get(admin: impl std::fmt::Display, path: &str, token: &str) -> serde_json::Value {
    let body = client()
        .get(format!("http://{admin}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// The five groups of [`large_divergent_lists`], as (pattern, kind).
pub const LARGE_LIST_GROUPS: [(&str, &str); 5] = [
    ("/tasks", "order_only"),
    ("/tasks/*", "missing_in_shadow"),
    ("/tasks/*/n", "type_changed"),
    ("/tasks/*/note", "extra_in_shadow"),
    ("/tasks/*/title", "value_changed"),
];

/// The route rules [`large_divergent_lists`] are compared under.
pub const LARGE_LIST_ROUTE: &str =
    "[[route]]\nname = \"list\"\nmatch = \"GET /tasks\"\n[route.compare]\nunordered = { \"/tasks\" = \"id\" }\n";

/// A primary's task list of `n` items and a shadow's answer to the same
/// request where every item differs in three fields (a changed title, a
/// number sent as a string, an extra field), the last item is missing and
/// the first two are swapped: `3n - 1` differences in five groups, the
/// order and the missing item found last.
pub fn large_divergent_lists(n: usize) -> (serde_json::Value, serde_json::Value) {
    use serde_json::json;
    let primary: Vec<serde_json::Value> = (0..n)
        .map(|i| json!({"id": format!("t{i}"), "title": format!("Task {i}"), "n": i}))
        .collect();
    let mut shadow: Vec<serde_json::Value> = (0..n - 1)
        .map(|i| json!({"id": format!("t{i}"), "title": format!("task {i}"), "n": i.to_string(), "note": ""}))
        .collect();
    shadow.swap(0, 1);
    (json!({ "tasks": primary }), json!({ "tasks": shadow }))
}

/// Every divergence group in the store at `url`, as (route, pattern, kind,
/// count), sorted.
pub async fn stored_groups(url: &str) -> Vec<(String, String, String, i64)> {
    let store = cutover::store::Store::open(url, &Default::default()).await.unwrap();
    let mut groups: Vec<(String, String, String, i64)> = store
        .groups()
        .await
        .unwrap()
        .into_iter()
        .map(|g| (g.route, g.pattern, g.kind, g.count))
        .collect();
    store.close().await;
    groups.sort();
    groups
}

/// Debian's Chromium, for the report's browser tests; `None` (with a
/// printed note) where it is not installed, unless CI requires it.
pub fn chromium() -> Option<&'static std::path::Path> {
    let chromium = std::path::Path::new("/usr/bin/chromium");
    if chromium.exists() {
        return Some(chromium);
    }
    assert!(
        std::env::var_os("CUTOVER_TEST_REQUIRE_CHROMIUM").is_none(),
        "CUTOVER_TEST_REQUIRE_CHROMIUM is set but /usr/bin/chromium is missing"
    );
    eprintln!("note: /usr/bin/chromium is not installed; the browser test is skipped (CI installs it)");
    None
}
