//! Soak run: the real `cutover serve` binary in front of a well-behaved
//! primary and a shadow that misbehaves on a schedule, at a fixed request
//! rate, for a bounded time. It checks what issue #10 asks of a long run:
//!
//! - every client answer is the primary's (status and body), none fails;
//! - resident memory at the end is within 10% of the memory after warm-up:
//!   the high-water mark of the last cycle against that of the first (a
//!   full cycle of misbehaviour), and the fewest file descriptors held while
//!   the shadow is healthy do not grow from the first cycle to the last;
//! - the outcomes cutover counted, and the exchanges its store's rollups count, add up to the
//!   requests sent;
//! - with `--idle N`, N connections are held open to the proxy sending
//!   nothing (each reopened as soon as the proxy closes it), and meanwhile
//!   the admin listener's `/healthz` and `/readyz` answer 200 within 2 s,
//!   every half second, throughout (issue #18).
//!
//! The shadow's schedule repeats: slow (answers after 800 ms), down
//! (connections refused, open ones dropped), errors (500), garbage (bytes
//! that are not HTTP), healthy. Memory and descriptors are sampled every
//! half second.
//!
//! Usage (scripts/soak.sh runs it):
//! `cargo run --release --example soak -- --binary target/release/cutover --duration 30m --rate 200`

use std::convert::Infallible;
use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Slow,
    Down,
    Errors,
    Garbage,
    Healthy,
}

const CYCLE: [Phase; 5] = [Phase::Slow, Phase::Down, Phase::Errors, Phase::Garbage, Phase::Healthy];
const SLOW_ANSWER: Duration = Duration::from_millis(800);

struct Options {
    binary: String,
    duration: Duration,
    phase: Duration,
    rate: u32,
    /// Connections held open to the proxy sending nothing, reopened as the
    /// proxy closes them: the clients that must not take it down.
    idle: usize,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        binary: "target/release/cutover".to_string(),
        duration: Duration::from_secs(30 * 60),
        phase: Duration::ZERO,
        rate: 200,
        idle: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--binary" => options.binary = value()?,
            "--duration" => options.duration = cutover::units::parse_duration(&value()?)?,
            "--phase" => options.phase = cutover::units::parse_duration(&value()?)?,
            "--rate" => options.rate = value()?.parse().map_err(|err| format!("--rate: {err}"))?,
            "--idle" => options.idle = value()?.parse().map_err(|err| format!("--idle: {err}"))?,
            other => {
                return Err(format!(
                    "unknown argument {other}; use --binary PATH --duration 30m --rate 200 [--phase 60s] [--idle 1000]"
                ))
            }
        }
    }
    if options.phase.is_zero() {
        // Six cycles of five phases, whatever the duration.
        options.phase = options.duration / 30;
    }
    if options.phase < Duration::from_secs(2) || options.rate == 0 {
        return Err("each phase needs at least 2s (--duration 1m or more) and --rate at least 1".into());
    }
    Ok(options)
}

fn task_list() -> Bytes {
    let tasks: Vec<_> = (0..8)
        .map(|index| serde_json::json!({"id": format!("task-{index}"), "title": format!("Task {index}"), "status": "open", "tags": ["work"]}))
        .collect();
    Bytes::from(serde_json::json!({ "success": true, "tasks": tasks }).to_string())
}

fn task(id: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "id": id, "title": format!("Task {id}"), "status": "open" }).to_string())
}

/// The answer both backends give when they behave.
fn answer(method: &http::Method, path: &str) -> (StatusCode, Bytes) {
    match (method.as_str(), path.strip_prefix("/api/")) {
        ("GET", Some("tasks")) => (StatusCode::OK, task_list()),
        ("GET", Some(rest)) if rest.starts_with("task/") => (StatusCode::OK, task(&rest["task/".len()..])),
        ("POST", Some("task")) => (StatusCode::CREATED, Bytes::from_static(br#"{"success":true}"#)),
        _ => (StatusCode::NOT_FOUND, Bytes::from_static(br#"{"error":"not found"}"#)),
    }
}

fn json(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", http::HeaderValue::from_static("application/json"));
    response
}

async fn serve_primary() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|request: Request<Incoming>| async move {
                    let (status, body) = answer(request.method(), request.uri().path());
                    Ok::<_, Infallible>(json(status, body))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The shadow: behaves as the phase says. A phase change drops every open
/// connection (as a restart would); `Down` closes the listener itself.
async fn serve_shadow(mut phase: watch::Receiver<Phase>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut listener = Some(listener);
        loop {
            let current = *phase.borrow_and_update();
            if current == Phase::Down {
                listener = None;
            } else if listener.is_none() {
                match TcpListener::bind(addr).await {
                    Ok(bound) => listener = Some(bound),
                    Err(err) => eprintln!("soak: shadow cannot listen again on {addr}: {err}"),
                }
            }
            let Some(open) = listener.as_ref() else {
                if phase.changed().await.is_err() {
                    return;
                }
                continue;
            };
            tokio::select! {
                changed = phase.changed() => if changed.is_err() { return },
                accepted = open.accept() => {
                    let Ok((mut stream, _)) = accepted else { continue };
                    let mut connection_phase = phase.clone();
                    tokio::spawn(async move {
                        if current == Phase::Garbage {
                            let _ = stream.write_all(b"\x16\x03\x01garbage, not HTTP\r\n\r\n").await;
                            return;
                        }
                        let service = service_fn(move |request: Request<Incoming>| async move {
                            if current == Phase::Errors {
                                return Ok::<_, Infallible>(json(
                                    StatusCode::INTERNAL_SERVER_ERROR,
                                    Bytes::from_static(br#"{"error":"database unavailable"}"#),
                                ));
                            }
                            if current == Phase::Slow {
                                tokio::time::sleep(SLOW_ANSWER).await;
                            }
                            let (status, body) = answer(request.method(), request.uri().path());
                            Ok(json(status, body))
                        });
                        let builder = auto::Builder::new(TokioExecutor::new());
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        tokio::select! {
                            _ = connection => {}
                            _ = connection_phase.changed() => {}
                        }
                    });
                }
            }
        }
    });
    Ok(addr)
}

fn config(primary: SocketAddr, shadow: SocketAddr, store: &std::path::Path) -> String {
    format!(
        r#"
[listen]
proxy = "127.0.0.1:0"
admin = "127.0.0.1:0"
shutdown_grace = "20s"

[primary]
name = "legacy"
url = "http://{primary}"
timeout = "5s"

[shadow]
name = "candidate"
url = "http://{shadow}"
timeout = "2s"
write_tries = 2

[store]
url = "sqlite://{store}"
max_connections = {STORE_MAX_CONNECTIONS}

[[route]]
name = "list-tasks"
match = "GET /api/tasks"

[[route]]
name = "get-task"
match = "GET /api/task/{{id}}"

[[route]]
name = "create-task"
match = "POST /api/task"
mirror = "dual-write"
"#,
        store = store.display()
    )
}

/// Open descriptors by kind.
#[derive(Clone, Copy, Default)]
struct Descriptors {
    sockets: usize,
    /// Connections to the store: one descriptor on its database file each
    /// (its WAL and shared-memory files come and go with them).
    store_connections: usize,
    /// The store's own files (database, WAL, shared memory).
    store_files: usize,
    /// Everything else: pipes, epoll, eventfd, /dev/null.
    others: usize,
}

/// What /proc says about the process: resident memory (KiB) and open
/// descriptors.
fn sample(pid: u32, store: &std::path::Path) -> (u64, Descriptors) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    let mut seen = Descriptors::default();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        if target.to_string_lossy().starts_with("socket:") {
            seen.sockets += 1;
        } else if target == store {
            seen.store_connections += 1;
            seen.store_files += 1;
        } else if target.to_string_lossy().starts_with(&*store.to_string_lossy()) {
            seen.store_files += 1;
        } else {
            seen.others += 1;
        }
    }
    (rss, seen)
}

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    answered_right: AtomicU64,
    answered_wrong: AtomicU64,
    failed: AtomicU64,
}

async fn one_request(client: reqwest::Client, proxy: SocketAddr, index: u64, tally: Arc<Tally>) {
    let (method, path) = match index % 10 {
        0 => (http::Method::POST, "/api/task".to_string()),
        1 | 2 => (http::Method::GET, format!("/api/task/{}", index % 50)),
        _ => (http::Method::GET, "/api/tasks".to_string()),
    };
    let expected = answer(&method, &path);
    let mut request = client.request(method, format!("http://{proxy}{path}"));
    if expected.0 == StatusCode::CREATED {
        request = request
            .header("content-type", "application/json")
            .body(format!(r#"{{"task":"soak {index}"}}"#));
    }
    let result = async {
        let response = request.send().await?;
        let status = response.status();
        Ok::<_, reqwest::Error>((status, response.bytes().await?))
    }
    .await;
    let counter = match result {
        Ok((status, body)) if status.as_u16() == expected.0.as_u16() && body == expected.1 => &tally.answered_right,
        Ok((status, _)) => {
            eprintln!("soak: {path}: the client got {status}, not the primary's answer");
            &tally.answered_wrong
        }
        Err(err) => {
            eprintln!("soak: {path}: {err}");
            &tally.failed
        }
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

async fn metric_sum(client: &reqwest::Client, admin: SocketAddr, name: &str) -> Result<f64, reqwest::Error> {
    let text = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = options()?;
    // Each idle connection is a descriptor here too.
    rlimit::increase_nofile_limit(u64::MAX)?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let work = tempfile::tempdir()?;
    let (phase_tx, phase_rx) = watch::channel(CYCLE[0]);
    let primary = serve_primary().await?;
    let shadow = serve_shadow(phase_rx).await?;
    let config_path = work.path().join("soak.toml");
    let store_path = work.path().join("soak.db");
    std::fs::write(&config_path, config(primary, shadow, &store_path))?;

    let mut child = std::process::Command::new(&options.binary)
        .args(["--log-format", "json", "serve", "-c"])
        .arg(&config_path)
        .env("RUST_LOG", "warn,cutover=info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot start {}: {err}", options.binary))?;
    let pid = child.id();
    let mut lines = std::io::BufReader::new(child.stderr.take().ok_or("no stderr")?).lines();
    let (proxy, admin): (SocketAddr, SocketAddr) = loop {
        let line = lines.next().ok_or("cutover exited before serving")??;
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if entry["message"] == "cutover is serving" {
            break (
                entry["proxy"].as_str().unwrap_or_default().parse()?,
                entry["admin"].as_str().unwrap_or_default().parse()?,
            );
        }
    };
    let warnings = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&warnings);
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains(r#""level":"WARN""#) || line.contains(r#""level":"ERROR""#) {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        }
    });

    let cycles = (options.duration.as_secs_f64() / (options.phase.as_secs_f64() * CYCLE.len() as f64))
        .floor()
        .max(2.0) as usize;
    println!(
        "soak: {} cycles of {:?} phases ({:?} in all) at {} req/s; shadow schedule {CYCLE:?}",
        cycles,
        options.phase,
        options.phase * (cycles * CYCLE.len()) as u32,
        options.rate
    );

    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(64)
        .build()?;
    let tally = Arc::new(Tally::default());
    let load = {
        let client = client.clone();
        let tally = Arc::clone(&tally);
        let rate = options.rate;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for index in 0u64.. {
                ticks.tick().await;
                // Counted here, not in the task: a task spawned just before
                // the load stops still runs, and must be in the count it ends.
                tally.sent.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(one_request(client.clone(), proxy, index, Arc::clone(&tally)));
            }
        })
    };

    let held = Arc::new(AtomicU64::new(0));
    for _ in 0..options.idle {
        tokio::spawn(hold_idle(proxy, Arc::clone(&held)));
    }
    let health = Arc::new(HealthTally {
        probes: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        started: std::time::Instant::now(),
    });
    let probes = tokio::spawn(probe_health(client.clone(), admin, Arc::clone(&health)));

    let began = Instant::now();
    // Memory and descriptors move with what is in flight (a slow shadow
    // holds captured bodies; pools grow and shrink), so each cycle is
    // summed up by its high-water marks, sampled every half second, and by
    // its last sample. A leak raises the marks cycle after cycle.
    let mut cycles_seen: Vec<CycleSample> = Vec::new();
    for cycle in 0..cycles {
        let mut seen = CycleSample::default();
        for phase in CYCLE {
            let _ = phase_tx.send(phase);
            let phase_ends = Instant::now() + options.phase;
            while Instant::now() + SAMPLE_EVERY < phase_ends {
                tokio::time::sleep(SAMPLE_EVERY).await;
                seen.observe(sample(pid, &store_path), phase == Phase::Healthy);
            }
            tokio::time::sleep_until(phase_ends.into()).await;
        }
        seen.observe(sample(pid, &store_path), true);
        println!(
            "soak: cycle {:>2} at {:>6.0}s: rss peak {:>7} KiB, last {:>7} KiB; fds peak {:>4}, fewest while healthy: {:>3} sockets, {:>3} others; store connections peak {:>2}; sent {}",
            cycle + 1,
            began.elapsed().as_secs_f64(),
            seen.peak_rss,
            seen.last_rss,
            seen.peak_fds,
            seen.healthy_sockets,
            seen.healthy_others,
            seen.peak_store_connections,
            tally.sent.load(Ordering::Relaxed)
        );
        cycles_seen.push(seen);
    }
    load.abort();
    probes.abort();

    // Every sent request is answered, then counted and stored.
    let sent = tally.sent.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    while tally.answered_right.load(Ordering::Relaxed)
        + tally.answered_wrong.load(Ordering::Relaxed)
        + tally.failed.load(Ordering::Relaxed)
        < sent
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut outcomes = 0.0;
    while Instant::now() < deadline {
        outcomes = metric_sum(&client, admin, cutover::metrics::REQUESTS_TOTAL).await?;
        if outcomes >= sent as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let lost = metric_sum(&client, admin, cutover::metrics::STORE_RECORDS_LOST_TOTAL).await?;
    let shed = metric_sum(&client, admin, cutover::metrics::MIRROR_DROPPED_TOTAL).await?;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let exit = child.wait()?;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", store_path.display())).await?;
    // Every exchange counts in the rollups; raw rows are kept only for a
    // sample of the matches (store.keep_matches).
    let stored: i64 = sqlx::query_scalar("SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) FROM rollups")
        .fetch_one(&pool)
        .await?;
    let by_outcome: Vec<(String, i64)> =
        sqlx::query_as("SELECT outcome, CAST(SUM(requests) AS BIGINT) FROM rollups GROUP BY outcome ORDER BY outcome")
            .fetch_all(&pool)
            .await?;
    pool.close().await;

    let warm = cycles_seen[0];
    let end = cycles_seen[cycles_seen.len() - 1];
    let growth = end.peak_rss as f64 / warm.peak_rss.max(1) as f64 - 1.0;
    let right = tally.answered_right.load(Ordering::Relaxed);
    let wrong = tally.answered_wrong.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    println!("soak: requests sent {sent}: primary's answer {right}, other answer {wrong}, failed {failed}");
    let (probed, unhealthy) = (
        health.probes.load(Ordering::Relaxed),
        health.failed.load(Ordering::Relaxed),
    );
    println!(
        "soak: {} idle connections held ({} opened in all); health checks {probed}, failed {unhealthy}",
        options.idle,
        held.load(Ordering::Relaxed)
    );
    println!("soak: outcomes counted {outcomes}, exchanges stored {stored} {by_outcome:?}, records lost {lost}, comparisons shed {shed}");
    println!(
        "soak: rss high-water mark of the warm-up cycle {} KiB, of the last cycle {} KiB ({:+.1}%); last sample {} KiB",
        warm.peak_rss,
        end.peak_rss,
        growth * 100.0,
        end.last_rss
    );
    println!(
        "soak: fds while the shadow is healthy, at fewest: {} sockets and {} others in the warm-up cycle, {} and {} in the last",
        warm.healthy_sockets, warm.healthy_others, end.healthy_sockets, end.healthy_others
    );
    println!(
        "soak: cutover exited with {exit}, logged {} warnings",
        warnings.load(Ordering::Relaxed)
    );

    let mut failures = Vec::new();
    if wrong > 0 || failed > 0 {
        failures.push(format!(
            "{} client requests did not get the primary's answer",
            wrong + failed
        ));
    }
    if growth > 0.10 {
        failures.push(format!("memory grew {:.1}% after warm-up (limit 10%)", growth * 100.0));
    }
    let store_connections = cycles_seen
        .iter()
        .map(|cycle| cycle.peak_store_connections)
        .max()
        .unwrap_or(0);
    if store_connections > STORE_POOLS * STORE_MAX_CONNECTIONS {
        failures.push(format!(
            "{store_connections} store connections were open at once: {STORE_POOLS} pools of {STORE_MAX_CONNECTIONS} hold {} at most",
            STORE_POOLS * STORE_MAX_CONNECTIONS
        ));
    }
    if end.healthy_others > warm.healthy_others + FILE_SLACK {
        failures.push(format!(
            "descriptors other than sockets and store files grew: at fewest {} while healthy in the last cycle, {} in the first",
            end.healthy_others, warm.healthy_others
        ));
    }
    // Idle connections come and go as the proxy closes them and they are reopened.
    if end.healthy_sockets > warm.healthy_sockets + SOCKET_SLACK + options.idle {
        failures.push(format!(
            "sockets grew: at fewest {} while healthy in the last cycle, {} in the first",
            end.healthy_sockets, warm.healthy_sockets
        ));
    }
    if outcomes != sent as f64 || stored != sent as i64 {
        failures.push(format!(
            "sent {sent}, but {outcomes} outcomes counted and {stored} stored"
        ));
    }
    if !exit.success() {
        failures.push(format!("cutover exited with {exit}"));
    }
    if unhealthy > 0 || probed == 0 {
        failures.push(format!(
            "{unhealthy} of {probed} health checks (/healthz, /readyz) failed"
        ));
    }
    if failures.is_empty() {
        println!("soak: PASS");
        Ok(())
    } else {
        for failure in &failures {
            println!("soak: FAIL: {failure}");
        }
        std::process::exit(1)
    }
}

/// Holds one connection to the proxy open, sending nothing; when the proxy
/// closes it (the first byte is late), opens another.
async fn hold_idle(proxy: SocketAddr, opened: Arc<AtomicU64>) {
    use tokio::io::AsyncReadExt;
    loop {
        match tokio::net::TcpStream::connect(proxy).await {
            Ok(mut stream) => {
                opened.fetch_add(1, Ordering::Relaxed);
                let mut byte = [0u8; 1];
                let _ = stream.read(&mut byte).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

struct HealthTally {
    probes: AtomicU64,
    failed: AtomicU64,
    started: std::time::Instant,
}

/// Asks the admin listener's `/healthz` and `/readyz` every half second;
/// each must answer 200 within two seconds, however many idle clients the
/// proxy holds. Counting starts once the instance is first ready (up to
/// 10 s): until the ID map has loaded from the store, `/readyz` answers 503
/// by design.
async fn probe_health(client: reqwest::Client, admin: SocketAddr, tally: Arc<HealthTally>) {
    for _ in 0..100 {
        let ready = client
            .get(format!("http://{admin}/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|response| response.status() == StatusCode::OK);
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        for path in ["/healthz", "/readyz"] {
            tally.probes.fetch_add(1, Ordering::Relaxed);
            let answer = client
                .get(format!("http://{admin}{path}"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            let failure = match answer {
                Ok(response) if response.status() == StatusCode::OK => None,
                Ok(response) => {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    Some(format!("{status}: {}", body.chars().take(300).collect::<String>()))
                }
                Err(err) if err.is_timeout() => Some("no answer within 2 s".to_string()),
                Err(err) => Some(format!("{err}")),
            };
            if let Some(failure) = failure {
                let seen = tally.failed.fetch_add(1, Ordering::Relaxed);
                // The first few, with what the listener said: a failed check must be diagnosable.
                if seen < 5 {
                    eprintln!(
                        "soak: health check {path} failed at {:.1}s: {failure}",
                        tally.started.elapsed().as_secs_f64()
                    );
                }
            }
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// A file opened or closed as the sample is taken is not growth. Store
/// files are judged apart: a pool opens connections as its callers
/// overlap (on CI, 14 connections in the first cycles and 16 from the
/// fourth, when every reader had its own pool), up to its size.
const FILE_SLACK: usize = 2;
/// The store pools of one instance: the writer's, its pruner's and the
/// readers' (admin, followers, reloader, the ID map's lookups).
const STORE_POOLS: usize = 3;
/// `store.max_connections` in the soak's config.
const STORE_MAX_CONNECTIONS: usize = 4;
/// Pooled connections (client keep-alive, both upstreams) outlive the
/// phase that opened them by chance: measured on a 2-minute soak, the
/// fewest sockets while healthy went 35, 45, 39, 38, 39, 39 over the
/// cycles with no trend. A leak of one per request is thousands.
const SOCKET_SLACK: usize = 16;
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// One cycle, as /proc saw it.
#[derive(Clone, Copy)]
struct CycleSample {
    peak_rss: u64,
    peak_fds: usize,
    last_rss: u64,
    /// The fewest sockets and other descriptors while the shadow was
    /// healthy: the baseline (listeners, warm pools; pipes) that a leak
    /// would raise.
    healthy_sockets: usize,
    healthy_others: usize,
    /// The most store connections open at once: the pools' sizes bound it.
    peak_store_connections: usize,
}

impl Default for CycleSample {
    fn default() -> CycleSample {
        CycleSample {
            peak_rss: 0,
            peak_fds: 0,
            last_rss: 0,
            healthy_sockets: usize::MAX,
            healthy_others: usize::MAX,
            peak_store_connections: 0,
        }
    }
}

impl CycleSample {
    fn observe(&mut self, (rss, seen): (u64, Descriptors), healthy: bool) {
        self.peak_rss = self.peak_rss.max(rss);
        self.peak_fds = self.peak_fds.max(seen.sockets + seen.store_files + seen.others);
        self.last_rss = rss;
        self.peak_store_connections = self.peak_store_connections.max(seen.store_connections);
        if healthy {
            self.healthy_sockets = self.healthy_sockets.min(seen.sockets);
            self.healthy_others = self.healthy_others.min(seen.others);
        }
    }
}
