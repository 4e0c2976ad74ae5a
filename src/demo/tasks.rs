//! One small task API, shaped like TomOS's (list, get, create, batch
//! create, update, complete), in two flavors: "legacy" (today's production,
//! Notion-like) and "candidate" (its replacement, Postgres-like). The demo
//! runs both; the integration tests host the same API on their own test
//! servers and steer it.
//!
//! The flavors differ the way real migrations differ, in noise cutover's
//! rules filter: their own IDs, the key of the create answer's ID
//! (`notionPageId` or `taskId`), a `source` field, timestamp precision and
//! date formats. Switches add the rest:
//!
//! - [`TaskApi::with_timestamps`] stamps `createdAt`, `updatedAt` and a
//!   per-response `generatedAt`, each side at its own precision. Without it
//!   the clock stands still and no stamp is shown, so two sides answer alike
//!   but for their IDs.
//! - [`TaskApi::with_bugs`] adds five genuine bugs, each confined to one route:
//!   1. `GET /api/task/{id}` spells `dueDate` as `due_date` (a renamed field);
//!   2. `GET /api/all-tasks` maps the status `waiting` to `open` (a lossy enum);
//!   3. `GET /api/all-tasks` sorts by title, not newest first (a changed order);
//!   4. `GET /api/all-tasks` drops `context` from tasks that have tags (a dropped field);
//!   5. `PATCH /api/task/{id}/complete` on a task already done answers 409
//!      where the legacy answers 200 (a write the candidate rejects).
//! - [`TaskApi::down`] answers 503 to everything; [`TaskApi::with_write_gap`]
//!   and [`TaskApi::with_write_delay`] pace writes, which are applied one at
//!   a time.
//!
//! Must never: be used outside the demo and the tests (it keeps everything
//! in memory), or answer differently on two sides except where a flavor or
//! a switch says so: a divergence must be one someone asked for.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::server::{self, ResponseBody};

/// Which implementation: its IDs, its field names, its formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Legacy,
    Candidate,
}

/// How a side names new tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ids {
    /// Random dashed UUIDs, as Notion's page IDs.
    Uuid,
    /// Dashed UUIDs that count up, `00000001-aaaa-4bbb-8ccc-000000000001`:
    /// Notion-shaped and predictable (the legacy's default).
    NumberedUuid,
    /// `t-1`, `t-2`, … as a serial column (the candidate's default).
    Serial,
}

/// A task as one side holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    pub title: String,
    pub status: String,
    pub priority: String,
    pub due: Option<String>,
    pub tags: Vec<String>,
    pub context: Option<String>,
    pub parent: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A seeded task, the same on both sides but for the ID.
#[derive(Debug, Clone)]
pub struct Seed {
    pub title: String,
    pub status: &'static str,
    pub priority: &'static str,
    pub due: Option<String>,
    pub tags: Vec<String>,
    pub context: Option<String>,
    pub created_ms: i64,
}

/// One side's API: its state, shared by every clone, and its switches.
#[derive(Clone)]
pub struct TaskApi {
    flavor: Flavor,
    ids: Ids,
    timestamps: bool,
    bugs: bool,
    tasks: Arc<Mutex<BTreeMap<String, Task>>>,
    next: Arc<AtomicU64>,
    /// Answer 503 to everything and apply nothing.
    pub down: Arc<AtomicBool>,
    write_gap: Duration,
    write_delay: Duration,
    writes: Arc<tokio::sync::Mutex<()>>,
}

/// An API serving on a loopback port; it stops when this is dropped.
pub struct Listening {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Listening {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// What an answer is: a status and a JSON body.
pub type Answer = (StatusCode, Value);

impl TaskApi {
    /// An empty API of `flavor`, without timestamps or bugs.
    pub fn new(flavor: Flavor) -> TaskApi {
        TaskApi {
            flavor,
            ids: match flavor {
                Flavor::Legacy => Ids::NumberedUuid,
                Flavor::Candidate => Ids::Serial,
            },
            timestamps: false,
            bugs: false,
            tasks: Arc::new(Mutex::new(BTreeMap::new())),
            next: Arc::new(AtomicU64::new(1)),
            down: Arc::new(AtomicBool::new(false)),
            write_gap: Duration::ZERO,
            write_delay: Duration::ZERO,
            writes: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// New tasks are named by `ids` rather than the flavor's default.
    pub fn with_ids(mut self, ids: Ids) -> TaskApi {
        self.ids = ids;
        self
    }

    /// Tasks and lists carry timestamps at the flavor's precision.
    pub fn with_timestamps(mut self) -> TaskApi {
        self.timestamps = true;
        self
    }

    /// The five bugs of the module's doc.
    pub fn with_bugs(mut self) -> TaskApi {
        self.bugs = true;
        self
    }

    /// Writes apply one at a time, and the next waits `gap` after an answer,
    /// so the order answers reach the proxy is the order they were applied.
    pub fn with_write_gap(mut self, gap: Duration) -> TaskApi {
        self.write_gap = gap;
        self
    }

    /// Each write waits `delay` before it applies (a slow side).
    pub fn with_write_delay(mut self, delay: Duration) -> TaskApi {
        self.write_delay = delay;
        self
    }

    /// Every task, by ID.
    pub fn tasks(&self) -> BTreeMap<String, Task> {
        lock(&self.tasks).clone()
    }

    /// Adds seeded tasks, as the data migration copied them; returns their IDs here.
    pub fn seed(&self, seeds: &[Seed]) -> Vec<String> {
        seeds
            .iter()
            .map(|seed| {
                let id = self.new_id();
                let task = Task {
                    id: id.clone(),
                    title: seed.title.clone(),
                    status: seed.status.to_string(),
                    priority: seed.priority.to_string(),
                    due: seed.due.clone(),
                    tags: seed.tags.clone(),
                    context: seed.context.clone(),
                    parent: None,
                    created_ms: seed.created_ms,
                    updated_ms: seed.created_ms,
                };
                lock(&self.tasks).insert(id.clone(), task);
                id
            })
            .collect()
    }

    /// Adds one open task under a given ID (data from before the migration).
    pub fn seed_as(&self, id: &str, title: &str) {
        let task = new_task(id.to_string(), title, &Value::Null, 0);
        lock(&self.tasks).insert(id.to_string(), task);
    }

    /// Serves the API on a loopback port of its own.
    pub async fn start(&self) -> std::io::Result<Listening> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopping) = watch::channel(false);
        let api = self.clone();
        tokio::spawn(server::serve(
            listener,
            move |_, request| serve_one(api.clone(), request),
            stopping,
            server::ConnectionLimits {
                listener: "demo",
                header_read_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(60),
                max_connections: 1024,
            },
            Duration::from_secs(2),
            None,
        ));
        Ok(Listening { addr, stop })
    }

    /// The answer to one request: `path` without its query, `body` as sent.
    pub async fn answer(&self, method: &Method, path: &str, body: &[u8]) -> Answer {
        if self.down.load(Ordering::SeqCst) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"success": false, "error": "down"}),
            );
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        if method == Method::GET {
            return self.read(&segments);
        }
        let input: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let turn = Arc::clone(&self.writes).lock_owned().await;
        if !self.write_delay.is_zero() {
            tokio::time::sleep(self.write_delay).await;
        }
        let answer = self.write(method, &segments, &input);
        if self.write_gap.is_zero() {
            drop(turn);
        } else {
            let gap = self.write_gap;
            tokio::spawn(async move {
                tokio::time::sleep(gap).await;
                drop(turn);
            });
        }
        answer
    }

    fn read(&self, segments: &[&str]) -> Answer {
        let tasks = lock(&self.tasks);
        match segments {
            ["api", "all-tasks"] => {
                let mut list: Vec<&Task> = tasks.values().collect();
                if self.bugs {
                    // Bug 3: sorted by title.
                    list.sort_by(|a, b| a.title.cmp(&b.title).then(a.id.cmp(&b.id)));
                } else {
                    list.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.id.cmp(&b.id)));
                }
                let views: Vec<Value> = list.iter().map(|task| self.list_view(task)).collect();
                let mut body = json!({
                    "success": true,
                    "count": views.len(),
                    "source": self.source(),
                    "tasks": views,
                });
                if self.timestamps {
                    body["generatedAt"] = Value::from(self.stamp(crate::clock::now_ms()));
                }
                (StatusCode::OK, body)
            }
            ["api", "task", id] => match tasks.get(*id) {
                Some(task) => {
                    let mut view = self.view(task);
                    if self.bugs {
                        // Bug 1: the single-task serializer spells the field differently.
                        if let Some(due) = view.as_object_mut().and_then(|v| v.remove("dueDate")) {
                            view["due_date"] = due;
                        }
                    }
                    (StatusCode::OK, view)
                }
                None => not_found(),
            },
            _ => no_such_endpoint(),
        }
    }

    fn write(&self, method: &Method, segments: &[&str], input: &Value) -> Answer {
        let now = self.now();
        match (method.as_str(), segments) {
            ("POST", ["api", "task", "batch"]) => self.create_batch(input, now),
            ("POST", ["api", "task"]) => self.create(input, now),
            ("PATCH", ["api", "task", id, "complete"]) => self.complete(id, now),
            ("PATCH", ["api", "task", id]) => self.update(id, input, now),
            _ => no_such_endpoint(),
        }
    }

    fn create_batch(&self, input: &Value, now: i64) -> Answer {
        let titles: Vec<&str> = input["tasks"]
            .as_str()
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect();
        if titles.is_empty() {
            return bad_request("tasks is required");
        }
        let mut tasks = lock(&self.tasks);
        let created: Vec<Value> = titles
            .into_iter()
            .map(|title| {
                let task = new_task(self.new_id(), title, input, now);
                let view = self.view(&task);
                tasks.insert(task.id.clone(), task);
                view
            })
            .collect();
        (
            StatusCode::OK,
            json!({"success": true, "created": created.len(), "tasks": created}),
        )
    }

    fn create(&self, input: &Value, now: i64) -> Answer {
        let Some(title) = input["task"].as_str().filter(|t| !t.trim().is_empty()) else {
            return bad_request("task is required");
        };
        let task = new_task(self.new_id(), title, input, now);
        let mut created = json!({"success": true, "task": self.view(&task)});
        let key = match self.flavor {
            Flavor::Legacy => "notionPageId",
            Flavor::Candidate => "taskId",
        };
        created[key] = Value::from(task.id.clone());
        lock(&self.tasks).insert(task.id.clone(), task);
        (StatusCode::CREATED, created)
    }

    fn complete(&self, id: &str, now: i64) -> Answer {
        let mut tasks = lock(&self.tasks);
        match tasks.get_mut(id) {
            // Bug 5: completing a completed task is a conflict.
            Some(task) if task.status == "done" && self.bugs => (
                StatusCode::CONFLICT,
                json!({"success": false, "error": "task is already done"}),
            ),
            Some(task) => {
                // Completing a completed task changes nothing (not even updatedAt).
                if task.status != "done" {
                    task.status = "done".into();
                    task.updated_ms = now;
                }
                (StatusCode::OK, self.view(task))
            }
            None => not_found(),
        }
    }

    fn update(&self, id: &str, input: &Value, now: i64) -> Answer {
        let mut tasks = lock(&self.tasks);
        let Some(task) = tasks.get_mut(id) else {
            return not_found();
        };
        for (field, slot) in [
            ("title", &mut task.title),
            ("status", &mut task.status),
            ("priority", &mut task.priority),
        ] {
            if let Some(value) = input[field].as_str() {
                *slot = value.to_string();
            }
        }
        for (field, slot) in [("dueDate", &mut task.due), ("parent", &mut task.parent)] {
            if let Some(value) = input[field].as_str() {
                *slot = Some(value.to_string());
            }
        }
        task.updated_ms = now;
        (StatusCode::OK, self.view(task))
    }

    fn new_id(&self) -> String {
        match self.ids {
            Ids::Uuid => uuid::Uuid::new_v4().to_string(),
            Ids::NumberedUuid => {
                let n = self.next.fetch_add(1, Ordering::SeqCst);
                format!("{n:08x}-aaaa-4bbb-8ccc-{n:012x}")
            }
            Ids::Serial => format!("t-{}", self.next.fetch_add(1, Ordering::SeqCst)),
        }
    }

    /// The time a write is stamped with; it stands still without timestamps.
    fn now(&self) -> i64 {
        if self.timestamps {
            crate::clock::now_ms()
        } else {
            0
        }
    }

    fn source(&self) -> &'static str {
        match self.flavor {
            Flavor::Legacy => "notion",
            Flavor::Candidate => "postgres",
        }
    }

    /// Legacy keeps milliseconds; the candidate's column keeps whole seconds.
    fn stamp(&self, millis: i64) -> String {
        let at = chrono::DateTime::from_timestamp_millis(millis).unwrap_or_default();
        match self.flavor {
            Flavor::Legacy => at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            Flavor::Candidate => at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }
    }

    fn view(&self, task: &Task) -> Value {
        let mut view = json!({
            "id": task.id,
            "title": task.title,
            "status": task.status,
            "priority": task.priority,
            // Legacy stores a date; the candidate a timestamp at midnight UTC.
            "dueDate": task.due.as_ref().map(|due| match self.flavor {
                Flavor::Legacy => due.clone(),
                Flavor::Candidate => format!("{due}T00:00:00Z"),
            }),
            "tags": task.tags,
            "context": task.context,
            "parent": task.parent,
        });
        if self.timestamps {
            view["createdAt"] = Value::from(self.stamp(task.created_ms));
            view["updatedAt"] = Value::from(self.stamp(task.updated_ms));
        }
        view
    }

    fn list_view(&self, task: &Task) -> Value {
        let mut view = self.view(task);
        if self.bugs {
            // Bug 2: the list query maps a status it does not know.
            if task.status == "waiting" {
                view["status"] = Value::from("open");
            }
            // Bug 4: the join that loads tags loses the context.
            if !task.tags.is_empty() {
                if let Some(object) = view.as_object_mut() {
                    object.remove("context");
                }
            }
        }
        view
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn new_task(id: String, title: &str, input: &Value, now: i64) -> Task {
    Task {
        id,
        title: title.to_string(),
        status: "open".into(),
        priority: input["priority"].as_str().unwrap_or("normal").to_string(),
        due: input["dueDate"].as_str().map(str::to_string),
        tags: input["tags"]
            .as_array()
            .map(|tags| tags.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
        context: input["context"].as_str().map(str::to_string),
        parent: None,
        created_ms: now,
        updated_ms: now,
    }
}

fn not_found() -> Answer {
    (
        StatusCode::NOT_FOUND,
        json!({"success": false, "error": "no such task"}),
    )
}

fn no_such_endpoint() -> Answer {
    (
        StatusCode::NOT_FOUND,
        json!({"success": false, "error": "no such endpoint"}),
    )
}

fn bad_request(error: &str) -> Answer {
    (StatusCode::BAD_REQUEST, json!({"success": false, "error": error}))
}

/// One request on the demo's own server: a bounded body, then the answer.
async fn serve_one(api: TaskApi, request: Request<Incoming>) -> Response<ResponseBody> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let (status, body) = match Limited::new(request.into_body(), 64 * 1024).collect().await {
        Ok(body) => api.answer(&method, &path, &body.to_bytes()).await,
        Err(_) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"success": false, "error": "too large"}),
        ),
    };
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn call(api: &TaskApi, method: Method, path: &str, body: Value) -> Answer {
        api.answer(&method, path, body.to_string().as_bytes()).await
    }

    #[tokio::test]
    async fn two_sides_without_switches_answer_alike_but_for_their_ids() {
        let legacy = TaskApi::new(Flavor::Legacy);
        let candidate = TaskApi::new(Flavor::Candidate);
        let body = json!({"task": "write the report"});
        let (ls, lb) = call(&legacy, Method::POST, "/api/task", body.clone()).await;
        let (cs, cb) = call(&candidate, Method::POST, "/api/task", body).await;
        assert_eq!((ls, cs), (StatusCode::CREATED, StatusCode::CREATED));
        assert_eq!(cb["taskId"], "t-1");
        assert_eq!(lb["notionPageId"], "00000001-aaaa-4bbb-8ccc-000000000001");
        let strip = |mut task: Value| {
            task["id"] = Value::Null;
            task
        };
        assert_eq!(strip(lb["task"].clone()), strip(cb["task"].clone()));
        assert!(lb["task"].get("createdAt").is_none());
    }

    #[tokio::test]
    async fn bugs_show_only_when_switched_on() {
        for bugs in [false, true] {
            let mut api = TaskApi::new(Flavor::Candidate);
            if bugs {
                api = api.with_bugs();
            }
            api.seed_as("t-9", "done twice");
            let first = call(&api, Method::PATCH, "/api/task/t-9/complete", Value::Null).await;
            let second = call(&api, Method::PATCH, "/api/task/t-9/complete", Value::Null).await;
            assert_eq!(first.0, StatusCode::OK);
            let expected = if bugs { StatusCode::CONFLICT } else { StatusCode::OK };
            assert_eq!(second.0, expected, "bugs {bugs}");
        }
    }

    #[tokio::test]
    async fn timestamps_follow_the_flavor_precision_and_down_answers_503() {
        let legacy = TaskApi::new(Flavor::Legacy).with_timestamps();
        let candidate = TaskApi::new(Flavor::Candidate).with_timestamps();
        let (_, list) = call(&legacy, Method::GET, "/api/all-tasks", Value::Null).await;
        assert_eq!(list["generatedAt"].as_str().map(str::len), Some(24));
        let (_, list) = call(&candidate, Method::GET, "/api/all-tasks", Value::Null).await;
        assert_eq!(list["generatedAt"].as_str().map(str::len), Some(20));
        candidate.down.store(true, Ordering::SeqCst);
        let (status, _) = call(&candidate, Method::GET, "/api/all-tasks", Value::Null).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(candidate.tasks().is_empty());
    }
}
