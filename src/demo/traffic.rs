//! The demo's client: a realistic mix of reads and writes sent through the
//! proxy at a fixed rate, like the iOS app and the dashboard would. It
//! starts with one scripted round that touches every route, so even a short
//! run exercises every seeded bug.
//!
//! Must never: talk to a backend directly (everything goes through cutover).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::watch;

/// What the client knows: the primary's task IDs (it never sees the candidate's).
pub struct Client {
    http: reqwest::Client,
    proxy: SocketAddr,
    ids: Mutex<Vec<String>>,
    done: Mutex<Vec<String>>,
    pub sent: AtomicU64,
    pub failed: AtomicU64,
}

const TITLES: [&str; 12] = [
    "Renew passport",
    "Call the bank about the card",
    "Draft Q3 plan",
    "Book dentist",
    "Water the plants",
    "Review pull request",
    "Pay electricity bill",
    "Plan the offsite",
    "Read the Postgres docs",
    "Fix the garden gate",
    "Send invoice to Acme",
    "Back up the laptop",
];

impl Client {
    pub fn new(proxy: SocketAddr, ids: Vec<String>) -> Result<Arc<Client>, reqwest::Error> {
        let http = crate::upstream::client_builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Arc::new(Client {
            http,
            proxy,
            ids: Mutex::new(ids),
            done: Mutex::new(Vec::new()),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }))
    }

    /// Sends traffic at `rps` until `duration` passes or `stop` turns true.
    pub async fn run(self: &Arc<Self>, rps: u32, duration: Duration, mut stop: watch::Receiver<bool>) {
        let started = Instant::now();
        self.scripted_round().await;
        let mut rng = StdRng::seed_from_u64(7);
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rps.max(1))));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut in_flight = tokio::task::JoinSet::new();
        while started.elapsed() < duration && !*stop.borrow() {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            let action = rng.random_range(0..100u32);
            let pick = rng.random_range(0..usize::MAX);
            let title = TITLES[rng.random_range(0..TITLES.len())];
            let client = Arc::clone(self);
            in_flight.spawn(async move { client.act(action, pick, title).await });
            while in_flight.try_join_next().is_some() {}
        }
        while in_flight.join_next().await.is_some() {}
    }

    /// One request of each kind, including the ones that expose the bugs.
    async fn scripted_round(&self) {
        self.get("/api/all-tasks").await;
        if let Some(id) = self.pick_id(0) {
            self.get(&format!("/api/task/{id}")).await;
            self.send(reqwest::Method::PATCH, &format!("/api/task/{id}/complete"), None)
                .await;
            self.send(reqwest::Method::PATCH, &format!("/api/task/{id}/complete"), None)
                .await;
        }
        self.create("Try cutover").await;
        self.send(
            reqwest::Method::POST,
            "/api/task/batch",
            Some(json!({"tasks": "Buy milk\nCall mum\nFile taxes"})),
        )
        .await;
        if let Some(id) = self.pick_id(1) {
            self.send(
                reqwest::Method::PATCH,
                &format!("/api/task/{id}"),
                Some(json!({"priority": "high", "status": "in_progress"})),
            )
            .await;
        }
        self.get("/api/all-tasks").await;
    }

    async fn act(&self, action: u32, pick: usize, title: &str) {
        match action {
            0..=39 => self.get("/api/all-tasks").await,
            40..=64 => {
                if let Some(id) = self.pick_id(pick) {
                    self.get(&format!("/api/task/{id}")).await;
                }
            }
            65..=76 => {
                if let Some(id) = self.pick_id(pick) {
                    let statuses = ["open", "in_progress", "waiting"];
                    let body = json!({"title": title, "status": statuses[pick % statuses.len()]});
                    self.send(reqwest::Method::PATCH, &format!("/api/task/{id}"), Some(body))
                        .await;
                }
            }
            77..=84 => self.create(title).await,
            85..=92 => {
                // Sometimes a task already done: the candidate's conflict (bug 5).
                let done = lock(&self.done).get(pick % 7).cloned();
                let id = if pick % 3 == 0 { done } else { None }.or_else(|| self.pick_id(pick));
                if let Some(id) = id {
                    self.send(reqwest::Method::PATCH, &format!("/api/task/{id}/complete"), None)
                        .await;
                }
            }
            _ => {
                let lines = ["Buy milk", "Call mum", "File taxes", "Walk the dog"];
                let count = 2 + pick % 3;
                let batch = lines
                    .iter()
                    .cycle()
                    .skip(pick % 4)
                    .take(count)
                    .copied()
                    .collect::<Vec<_>>()
                    .join("\n");
                self.send(reqwest::Method::POST, "/api/task/batch", Some(json!({"tasks": batch})))
                    .await;
            }
        }
    }

    fn pick_id(&self, pick: usize) -> Option<String> {
        let ids = lock(&self.ids);
        (!ids.is_empty()).then(|| ids[pick % ids.len()].clone())
    }

    async fn create(&self, title: &str) {
        let body = json!({"task": title, "priority": "normal", "tags": ["demo"], "context": "work"});
        if let Some(answer) = self.send(reqwest::Method::POST, "/api/task", Some(body)).await {
            if let Some(id) = answer["notionPageId"].as_str() {
                lock(&self.ids).push(id.to_string());
            }
        }
    }

    async fn get(&self, path: &str) {
        self.send(reqwest::Method::GET, path, None).await;
    }

    /// Sends one request through the proxy; returns the JSON answer.
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Option<Value> {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let completes = method == reqwest::Method::PATCH && path.ends_with("/complete");
        let mut request = self.http.request(method, format!("http://{}{path}", self.proxy));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        match request.send().await {
            Ok(response) => {
                let ok = response.status().is_success();
                let answer: Option<Value> = response
                    .bytes()
                    .await
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                if ok && completes {
                    if let Some(id) = answer.as_ref().and_then(|a| a["id"].as_str()) {
                        lock(&self.done).push(id.to_string());
                    }
                }
                answer
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
