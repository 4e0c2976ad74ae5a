//! Faults, injected for real: upstreams that die mid-answer or reset the
//! connection, the proxy killed with SIGKILL and restarted, a full disk
//! under SQLite (a file-size limit on the running process) and a Postgres
//! store that disappears and comes back (a TCP relay that is cut). In each
//! one the client keeps being served and every request ends with an
//! outcome, or the loss is recorded.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::tasks::{Flavor, Host, TaskApi, ROUTES};
use common::*;
use cutover::metrics::{REQUESTS_TOTAL, STORE_PENDING, STORE_RECORDS_LOST_TOTAL, STORE_WRITE_FAILURES_TOTAL};
use cutover::store::{Store, StoreOptions};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PRIMARY_BODY: &[u8] = br#"{"tasks":[{"id":"a","title":"write tests"}]}"#;

/// Reads one request head (these tests send no bodies to raw servers).
async fn read_head(stream: &mut TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

/// How a raw upstream misbehaves after reading the request.
#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    /// Promises 100 bytes, sends a few, closes.
    TruncatedBody,
    /// Resets the connection (RST) before answering.
    ResetBeforeAnswer,
    /// Starts a chunked answer, then resets mid-body: killed mid-response.
    ResetMidBody,
    /// Starts a chunked answer, then sends nothing more, holding the connection open.
    StallMidBody,
}

async fn misbehaving_server(how: Misbehaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                read_head(&mut stream).await;
                match how {
                    Misbehaviour::TruncatedBody => {
                        let _ = stream
                            .write_all(
                                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"tasks\":[",
                            )
                            .await;
                        let _ = stream.shutdown().await;
                    }
                    Misbehaviour::ResetBeforeAnswer => {
                        let _ = stream.set_zero_linger();
                    }
                    Misbehaviour::ResetMidBody | Misbehaviour::StallMidBody => {
                        let _ = stream
                            .write_all(
                                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"tas\r\n",
                            )
                            .await;
                        if let Misbehaviour::StallMidBody = how {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let _ = stream.set_zero_linger();
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_shadow_that_dies_mid_answer_or_resets_changes_nothing_the_client_sees() {
    let primary = fixed(200, &[("content-type", "application/json")], PRIMARY_BODY).await;
    for how in [
        Misbehaviour::TruncatedBody,
        Misbehaviour::ResetBeforeAnswer,
        Misbehaviour::ResetMidBody,
    ] {
        let shadow = misbehaving_server(how).await;
        let proxy = ProxySetup::new(primary.url(), format!("http://{shadow}")).start().await;
        for _ in 0..5 {
            let response = client()
                .get(format!("http://{}/api/tasks", proxy.proxy_addr))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{how:?}");
            assert_eq!(&response.bytes().await.unwrap()[..], PRIMARY_BODY, "{how:?}");
        }
        let errors = wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[("outcome", "shadow_error")], 5.0).await;
        assert_eq!(errors, 5.0, "{how:?}: every exchange is a shadow_error");
        assert_eq!(
            metric(&metrics_text(proxy.admin_addr).await, REQUESTS_TOTAL, &[]),
            5.0,
            "{how:?}: one outcome per request"
        );
        proxy.shutdown().await;
    }
}

/// A shadow that holds every request until opened, counting how many it
/// holds at once.
struct StalledShadow {
    held: AtomicUsize,
    most_held: AtomicUsize,
    open: tokio::sync::Semaphore,
}

#[tokio::test]
async fn a_stalled_shadow_holds_at_most_max_in_flight_reads_and_the_rest_are_skipped_at_once() {
    let primary = fixed(200, &[("content-type", "application/json")], PRIMARY_BODY).await;
    let stall = Arc::new(StalledShadow {
        held: AtomicUsize::new(0),
        most_held: AtomicUsize::new(0),
        open: tokio::sync::Semaphore::new(0),
    });
    let held_by_shadow = Arc::clone(&stall);
    let shadow = backend(move |_| {
        let stall = Arc::clone(&held_by_shadow);
        async move {
            let now = stall.held.fetch_add(1, Ordering::SeqCst) + 1;
            stall.most_held.fetch_max(now, Ordering::SeqCst);
            drop(stall.open.acquire().await.unwrap());
            stall.held.fetch_sub(1, Ordering::SeqCst);
            let json = [("content-type".to_string(), "application/json".to_string())];
            respond(200, &json, bytes::Bytes::from_static(PRIMARY_BODY))
        }
    })
    .await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.shadow_timeout = "60s";
    setup.mirror = "max_in_flight = 2";
    let proxy = setup.start().await;
    get_expecting(proxy.proxy_addr, "/api/tasks", 6, PRIMARY_BODY).await;
    let admin = proxy.admin_addr;
    // Two reads hold both slots; the other four do not queue behind them.
    let skipped = wait_for_metric(
        admin,
        "cutover_mirror_dropped_total",
        &[("reason", "in_flight_full")],
        4.0,
    )
    .await;
    assert_eq!(skipped, 4.0);
    eventually("the two admitted reads reach the shadow", || async {
        stall.held.load(Ordering::SeqCst) == 2
    })
    .await;
    stall.open.add_permits(1_000);
    assert_eq!(
        wait_for_metric(admin, REQUESTS_TOTAL, &[("outcome", "match")], 2.0).await,
        2.0
    );
    // The slots are given back: the next read is mirrored again.
    get_expecting(proxy.proxy_addr, "/api/tasks", 1, PRIMARY_BODY).await;
    assert_eq!(
        wait_for_metric(admin, REQUESTS_TOTAL, &[("outcome", "match")], 3.0).await,
        3.0
    );
    let text = metrics_text(admin).await;
    assert_eq!(metric(&text, REQUESTS_TOTAL, &[("outcome", "skipped")]), 4.0, "{text}");
    assert_eq!(
        stall.most_held.load(Ordering::SeqCst),
        2,
        "never more than max_in_flight at the shadow"
    );
    assert_eq!(shadow.requests().len(), 3);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_primary_that_dies_mid_answer_is_cut_off_for_the_client_as_it_would_be_directly() {
    let shadow = fixed(200, &[("content-type", "application/json")], PRIMARY_BODY).await;
    for how in [
        Misbehaviour::TruncatedBody,
        Misbehaviour::ResetMidBody,
        Misbehaviour::ResetBeforeAnswer,
        Misbehaviour::StallMidBody,
    ] {
        let primary = misbehaving_server(how).await;
        let mut setup = ProxySetup::new(format!("http://{primary}"), shadow.url());
        // A stalled body is cut once the primary has sent nothing for its timeout.
        setup.primary_timeout = "300ms";
        let proxy = setup.start().await;
        let response = client()
            .get(format!("http://{}/api/tasks", proxy.proxy_addr))
            .send()
            .await
            .unwrap();
        if let Misbehaviour::ResetBeforeAnswer = how {
            assert_eq!(response.status(), 502, "a reset before the head is a bad gateway");
            let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
            assert_eq!(body["upstream"], "legacy");
        } else {
            // The head was already on its way: the client gets it, then a
            // body that ends early, never a body that looks complete.
            assert_eq!(response.status(), 200, "{how:?}");
            // Bounded so a body that is never cut fails the test instead of hanging it.
            let rest = tokio::time::timeout(Duration::from_secs(30), response.bytes()).await;
            assert!(rest.is_ok_and(|body| body.is_err()), "{how:?}: the client sees the cut");
        }
        let errors = wait_for_metric(proxy.admin_addr, REQUESTS_TOTAL, &[("outcome", "primary_error")], 1.0).await;
        assert_eq!(errors, 1.0, "{how:?}: recorded as primary_error");
        proxy.shutdown().await;
    }
}

async fn integrity(store_url: &str) -> String {
    let pool = sqlx::SqlitePool::connect(store_url).await.unwrap();
    let verdict: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    verdict
}

async fn open(store_url: &str) -> Store {
    Store::open(store_url, &StoreOptions::default()).await.unwrap()
}

#[tokio::test]
async fn kill_9_mid_traffic_leaves_a_sound_store_and_the_restart_is_an_event() {
    let primary_api = TaskApi::new(Flavor::Legacy);
    let shadow_api = TaskApi::new(Flavor::Candidate);
    let primary = primary_api.serve().await;
    let shadow = shadow_api.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.routes = ROUTES;
    setup.store = store_url.clone();
    setup.mirror = "write_wait = \"2s\"";
    let config = dir.path().join("cutover.toml");
    std::fs::write(&config, setup.toml()).unwrap();

    let first = Supervised::start(&config, &[]);
    first.until_ready().await;
    let mut created = Vec::new();
    for index in 0..10 {
        let (status, body) = send_json(
            &first.proxy,
            "POST",
            "/api/task",
            Some(json!({"task": format!("before {index}")})),
        )
        .await
        .unwrap();
        assert_eq!(status, 201);
        created.push(body["notionPageId"].as_str().unwrap().to_string());
    }
    let store = open(&store_url).await;
    eventually("the ten pairs and ledger rows are stored", || async {
        store.id_pairs().await.unwrap().len() == 10 && store.ledger(None, 100).await.unwrap().len() == 10
    })
    .await;
    let ledger_before = store.ledger(None, 100).await.unwrap();
    store.close().await;

    // Writes and reads in flight when the process is killed.
    let proxy = first.proxy.clone();
    let flood = tokio::spawn(async move {
        let mut served = 0;
        for index in 0.. {
            let create = send_json(
                &proxy,
                "POST",
                "/api/task",
                Some(json!({"task": format!("flood {index}")})),
            );
            let list = send_json(&proxy, "GET", "/api/all-tasks", None);
            match tokio::join!(create, list) {
                (Ok(_), Ok(_)) => served += 2,
                _ => return served,
            }
        }
        served
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let code = first.kill("-KILL");
    assert_eq!(code, None, "killed by a signal");
    let served = flood.await.unwrap();
    assert!(served > 0, "traffic was flowing when the process was killed");

    assert_eq!(integrity(&store_url).await, "ok", "the store is not corrupt");
    let store = open(&store_url).await;
    let pairs = store.id_pairs().await.unwrap();
    for id in &created {
        assert!(
            pairs.iter().any(|(pair, _)| &pair.primary_id == id),
            "pair of {id} survived"
        );
    }
    let ledger_after = store.ledger(None, 10_000).await.unwrap();
    for row in &ledger_before {
        let kept = ledger_after
            .iter()
            .find(|after| after.id == row.id)
            .expect("ledger row kept");
        assert_eq!(kept.state, row.state, "ledger row {} unchanged", row.id);
    }
    store.close().await;

    let second = Supervised::start(&config, &[]);
    second.until_ready().await;
    let store = open(&store_url).await;
    assert_eq!(store.events("start").await.unwrap().len(), 2);
    let restarts = store.events("unclean_restart").await.unwrap();
    assert_eq!(restarts.len(), 1, "the restart after the kill is an event");
    assert!(second.logged("ended without a clean stop").await);
    store.close().await;

    // The restarted instance translates through the pairs learned before the kill.
    let target = &created[3];
    let (status, _) = send_json(
        &second.proxy,
        "PATCH",
        &format!("/api/task/{target}"),
        Some(json!({"title": "after the restart"})),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    eventually("the update is compared", || async {
        second.metric(REQUESTS_TOTAL, &[("route", "update-task")]).await >= 1.0
    })
    .await;
    assert_eq!(
        second
            .metric(REQUESTS_TOTAL, &[("route", "update-task"), ("outcome", "match")])
            .await,
        1.0
    );
    let shadow_id = pairs
        .iter()
        .find(|(pair, _)| &pair.primary_id == target)
        .map(|(pair, _)| pair.shadow_id.clone())
        .unwrap();
    assert_eq!(shadow_api.tasks()[&shadow_id].title, "after the restart");

    assert_eq!(second.kill("-TERM"), Some(0));
    let store = open(&store_url).await;
    assert_eq!(store.events("stop").await.unwrap().len(), 1, "a clean stop is recorded");
    store.close().await;
    let third = Supervised::start(&config, &[]);
    third.until_ready().await;
    let store = open(&store_url).await;
    assert_eq!(
        store.events("unclean_restart").await.unwrap().len(),
        1,
        "a start after a clean stop is not an unclean restart"
    );
    store.close().await;
    assert_eq!(third.kill("-TERM"), Some(0));
}

fn prlimit(pid: &str, fsize: &str) {
    let status = std::process::Command::new("prlimit")
        .args(["--pid", pid, &format!("--fsize={fsize}")])
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(status.success(), "prlimit --fsize={fsize}");
}

#[tokio::test]
async fn a_full_disk_under_sqlite_keeps_serving_buffers_and_catches_up() {
    let primary = fixed(200, &[("content-type", "application/json")], PRIMARY_BODY).await;
    let shadow = fixed(200, &[("content-type", "application/json")], PRIMARY_BODY).await;
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.store = store_url.clone();
    let config = dir.path().join("cutover.toml");
    std::fs::write(
        &config,
        setup.toml().replace("[store]\n", "[store]\nflush = \"50ms\"\n"),
    )
    .unwrap();
    // A file-size limit on the running process is a full disk to it: every
    // write past the limit fails with EFBIG, and the SIGXFSZ that comes with
    // it must not end the process (the binary handles it itself; nothing
    // here wraps it).
    let instance = Supervised::start(&config, &[]);
    instance.until_ready().await;
    let get = |count: usize| get_expecting(&instance.proxy, "/api/tasks", count, PRIMARY_BODY);
    get(10).await;
    let store = open(&store_url).await;
    eventually("the first ten are stored", || async {
        store.counted_exchanges().await.unwrap() == 10
    })
    .await;

    prlimit(&instance.pid(), "0:unlimited");
    get(30).await;
    eventually("writes fail on the full disk", || async {
        instance.metric(STORE_WRITE_FAILURES_TOTAL, &[]).await >= 1.0
    })
    .await;
    assert!(
        instance.metric(STORE_PENDING, &[]).await > 0.0,
        "records wait in the buffer"
    );
    assert_eq!(store.counted_exchanges().await.unwrap(), 10, "nothing half-written");

    prlimit(&instance.pid(), "unlimited:unlimited");
    eventually("the buffer drains once there is room", || async {
        instance.metric(STORE_PENDING, &[]).await == 0.0
    })
    .await;
    assert_eq!(instance.metric(STORE_RECORDS_LOST_TOTAL, &[]).await, 0.0);
    assert_eq!(instance.metric(REQUESTS_TOTAL, &[]).await, 40.0);
    assert_eq!(
        store.counted_exchanges().await.unwrap(),
        40,
        "every exchange is counted"
    );
    store.close().await;
    assert!(instance.logged("store write failed").await);
    assert_eq!(instance.kill("-TERM"), Some(0));
    assert_eq!(integrity(&store_url).await, "ok");
}

/// A TCP relay to the real Postgres that can be cut (the store disappears:
/// listener closed, every connection dropped) and restored on the same port.
struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Relay {
            addr: listener.local_addr().unwrap(),
            target,
            tasks: Arc::default(),
        };
        relay.serve(listener);
        relay
    }

    fn serve(&self, listener: TcpListener) {
        let tasks = Arc::clone(&self.tasks);
        let target = self.target;
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let connection = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(connection);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    async fn restore(&self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

#[tokio::test]
async fn a_postgres_store_that_disappears_and_returns_loses_nothing() {
    if std::env::var("CUTOVER_TEST_POSTGRES_URL").is_err() {
        eprintln!("skipped: set CUTOVER_TEST_POSTGRES_URL to cut a real Postgres store away and back");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let direct = shared_store(dir.path()).await;
    let mut url = reqwest::Url::parse(&direct).unwrap();
    let target = SocketAddr::new(url.host_str().unwrap().parse().unwrap(), url.port().unwrap_or(5432));
    let relay = Relay::start(target).await;
    url.set_port(Some(relay.addr.port())).unwrap();

    let primary = fixed(200, &[("content-type", "application/json")], PRIMARY_BODY).await;
    let shadow = fixed(200, &[("content-type", "application/json")], PRIMARY_BODY).await;
    let mut setup = ProxySetup::new(primary.url(), shadow.url());
    setup.store = url.to_string();
    let text = setup.toml().replace("[store]\n", "[store]\nflush = \"50ms\"\n");
    let config = cutover::config::Config::parse(&text, "relay.toml", &|_| None).unwrap();
    let proxy = cutover::app::start(config).await.unwrap();
    let ready = format!("http://{}/readyz", proxy.admin_addr);
    let readiness = || async { client().get(&ready).send().await.unwrap().status().as_u16() };
    eventually("ready", || async { readiness().await == 200 }).await;

    // Served whatever the store does.
    let get = |count: usize| get_expecting(proxy.proxy_addr, "/api/tasks", count, PRIMARY_BODY);
    get(10).await;
    let store = open(&direct).await;
    eventually("the first ten are stored", || async {
        store.counted_exchanges().await.unwrap() == 10
    })
    .await;

    relay.cut();
    get(20).await;
    eventually("writes fail while the store is away", || async {
        metric(&metrics_text(proxy.admin_addr).await, STORE_WRITE_FAILURES_TOTAL, &[]) >= 1.0
    })
    .await;
    eventually("readiness says the store is away", || async {
        readiness().await == 503
    })
    .await;
    assert_eq!(store.counted_exchanges().await.unwrap(), 10);

    relay.restore().await;
    eventually("the buffer drains when the store is back", || async {
        metric(&metrics_text(proxy.admin_addr).await, STORE_PENDING, &[]) == 0.0
    })
    .await;
    let text = metrics_text(proxy.admin_addr).await;
    assert_eq!(metric(&text, STORE_RECORDS_LOST_TOTAL, &[]), 0.0);
    assert_eq!(metric(&text, REQUESTS_TOTAL, &[]), 30.0);
    assert_eq!(
        store.counted_exchanges().await.unwrap(),
        30,
        "every exchange is counted once"
    );
    eventually("ready again", || async { readiness().await == 200 }).await;
    store.close().await;
    proxy.shutdown().await;
    drop_shared_store(&direct).await;
}
