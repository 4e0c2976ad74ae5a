//! Drift replay of writes that carried secrets: the ledger never holds the
//! secret, and a replay never sends a `[redacted]` placeholder or a
//! Content-Length that does not match its body. With CUTOVER_REPLAY_KEY the
//! write is sealed and replayed exactly as the client sent it; without it
//! the write is kept as not replayable, with the reason, and nothing is sent.

mod common;

use cutover::ledger::LedgerState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use cutover::store::{Store, StoreOptions};

const KEY: &str = "4f1c2a9e8d7b6c5a4f3e2d1c0b9a8f7e6d5c4b3a29180716f5e4d3c2b1a09f8e";
const LOGIN_BODY: &str = r#"{"user": "ada", "password": "hunter2"}"#;

const ROUTES: &str = r#"
[redact]
json = ["**/password"]

[[route]]
name = "login"
match = "POST /login"
mirror = "dual-write"
"#;

/// A strict shadow: down until told otherwise, and once up it notes every
/// request that carries a placeholder or a length that is not its body's.
struct StrictShadow {
    backend: Backend,
    down: Arc<AtomicBool>,
    violations: Arc<Mutex<Vec<String>>>,
}

async fn strict_shadow() -> StrictShadow {
    let down = Arc::new(AtomicBool::new(true));
    let violations = Arc::new(Mutex::new(Vec::new()));
    let (is_down, noted) = (Arc::clone(&down), Arc::clone(&violations));
    let backend = backend(move |seen| {
        let (is_down, noted) = (Arc::clone(&is_down), Arc::clone(&noted));
        async move {
            if is_down.load(Ordering::SeqCst) {
                return respond(503, &[], Bytes::from_static(b"down"));
            }
            let text = format!("{} {}", seen.path_and_query, String::from_utf8_lossy(&seen.body));
            if text.contains("[redacted]") || text.contains("%5Bredacted%5D") {
                noted.lock().unwrap().push(format!("placeholder sent: {text}"));
            }
            if let Some(length) = seen.headers.get("content-length") {
                if length.to_str().unwrap() != seen.body.len().to_string() {
                    noted
                        .lock()
                        .unwrap()
                        .push(format!("content-length {length:?} on {} bytes", seen.body.len()));
                }
            }
            let json = [("content-type".to_string(), "application/json".to_string())];
            respond(201, &json, Bytes::from_static(br#"{"ok":true}"#))
        }
    })
    .await;
    StrictShadow {
        backend,
        down,
        violations,
    }
}

struct Run {
    proxy: cutover::app::Running,
    shadow: StrictShadow,
    store_url: String,
    _dir: tempfile::TempDir,
}

async fn drift_a_login(replay_key: Option<&str>) -> Run {
    let primary = fixed(201, &[("content-type", "application/json")], br#"{"ok":true}"#).await;
    let shadow = strict_shadow().await;
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let mut setup = ProxySetup::new(primary.url(), shadow.backend.url());
    setup.routes = ROUTES;
    setup.store = store_url.clone();
    setup.shadow_extra = "write_tries = 1";
    setup.env = vec![("CUTOVER_ADMIN_TOKEN", "t0ken".to_string())];
    if let Some(key) = replay_key {
        setup.env.push(("CUTOVER_REPLAY_KEY", key.to_string()));
    }
    let proxy = setup.start().await;
    let answer = client()
        .post(format!("http://{}/login?token=s3cret&x=1", proxy.proxy_addr))
        .header("content-type", "application/json")
        .body(LOGIN_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201, "the client gets the primary's answer");
    let store = Store::open(&store_url, &StoreOptions::default()).await.unwrap();
    eventually("the login drifted", || async {
        store.ledger_count(LedgerState::Drift).await.unwrap() == 1
    })
    .await;
    let kept = store.ledger(Some(LedgerState::Drift), 10).await.unwrap();
    let kept = format!("{kept:?} {:?}", kept[0].replay);
    for secret in ["hunter2", "s3cret"] {
        assert!(!kept.contains(secret), "the ledger holds {secret}: {kept}");
    }
    store.close().await;
    shadow.down.store(false, Ordering::SeqCst);
    Run {
        proxy,
        shadow,
        store_url,
        _dir: dir,
    }
}

#[tokio::test]
async fn with_a_replay_key_a_write_with_secrets_is_sealed_and_replayed_exactly() {
    let run = drift_a_login(Some(KEY)).await;
    let before = run.shadow.backend.requests().len();
    let replayed = replay_all_drift(run.proxy.admin_addr, "t0ken").await;
    assert_eq!(replayed["replayed"][0]["state"], "reconciled", "{replayed}");
    let seen = run.shadow.backend.requests();
    assert_eq!(seen.len(), before + 1, "one replay sent");
    let sent = seen.last().unwrap();
    assert_eq!(sent.path_and_query, "/login?token=s3cret&x=1");
    assert_eq!(
        sent.body,
        LOGIN_BODY.as_bytes(),
        "the body exactly as the client sent it"
    );
    assert_eq!(run.shadow.violations.lock().unwrap().clone(), Vec::<String>::new());
    let store = Store::open(&run.store_url, &StoreOptions::default()).await.unwrap();
    assert_eq!(store.ledger_count(LedgerState::Reconciled).await.unwrap(), 1);
    store.close().await;
    run.proxy.shutdown().await;
}

#[tokio::test]
async fn without_a_replay_key_a_write_with_secrets_is_kept_unreplayable_and_never_sent() {
    let run = drift_a_login(None).await;
    let drift = api_get(run.proxy.admin_addr, "/api/drift", "t0ken").await;
    let row = &drift["open"][0];
    assert_eq!(row["replayable"], false, "{drift}");
    let why = row["not_replayable"].as_str().unwrap_or_default();
    assert!(
        why.contains("a secret query value") && why.contains("CUTOVER_REPLAY_KEY"),
        "{why}"
    );
    let before = run.shadow.backend.requests().len();
    let replayed = replay_all_drift(run.proxy.admin_addr, "t0ken").await;
    assert_eq!(replayed["replayed"][0]["state"], "drift", "{replayed}");
    assert!(
        replayed["replayed"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not replayable"),
        "{replayed}"
    );
    assert_eq!(run.shadow.backend.requests().len(), before, "nothing sent");
    assert_eq!(run.shadow.violations.lock().unwrap().clone(), Vec::<String>::new());
    run.proxy.shutdown().await;
}

#[tokio::test]
async fn a_replay_key_that_is_not_32_bytes_is_refused_at_startup_naming_the_variable() {
    let setup = ProxySetup::new("http://127.0.0.1:1".into(), "http://127.0.0.1:2".into());
    let err = cutover::config::Config::parse(&setup.toml(), "test.toml", &|name| {
        (name == "CUTOVER_REPLAY_KEY").then(|| "short".to_string())
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("$CUTOVER_REPLAY_KEY") && err.contains("32 bytes"), "{err}");
}
