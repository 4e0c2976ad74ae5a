//! The demo's two implementations of one small task API: "legacy" (today's
//! production, Notion-like) and "candidate" (its replacement,
//! Postgres-like). They differ the way real migrations differ: in noise
//! that cutover's rules filter (their own IDs, timestamp precision, date
//! formats, a `source` field, a per-response `generatedAt`), and in five
//! genuine bugs of the candidate, each confined to one route:
//!
//! 1. `GET /api/task/{id}` spells `dueDate` as `due_date` (a renamed field);
//! 2. `GET /api/all-tasks` maps the status `waiting` to `open` (a lossy enum);
//! 3. `GET /api/all-tasks` sorts by title, not newest first (a changed order);
//! 4. `GET /api/all-tasks` drops `context` from tasks that have tags (a dropped field);
//! 5. `PATCH /api/task/{id}/complete` on a task already done answers 409
//!    where the legacy answers 200 (a write the candidate rejects).
//!
//! Must never: be used outside the demo (it keeps everything in memory).

use std::collections::BTreeMap;
use std::net::SocketAddr;
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

/// Which implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Legacy,
    Candidate,
}

#[derive(Debug, Clone)]
struct Task {
    id: String,
    title: String,
    status: String,
    priority: String,
    due: Option<String>,
    tags: Vec<String>,
    context: Option<String>,
    created_ms: i64,
    updated_ms: i64,
}

/// One running implementation.
pub struct TaskApi {
    pub addr: SocketAddr,
    tasks: Arc<Mutex<BTreeMap<String, Task>>>,
    stop: watch::Sender<bool>,
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

impl TaskApi {
    /// Starts the API on a loopback port of its own.
    pub async fn start(flavor: Flavor) -> std::io::Result<TaskApi> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let tasks = Arc::new(Mutex::new(BTreeMap::new()));
        let (stop, stopping) = watch::channel(false);
        let shared = Arc::clone(&tasks);
        tokio::spawn(server::serve(
            listener,
            move |_, request| handle(flavor, Arc::clone(&shared), request),
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
        Ok(TaskApi { addr, tasks, stop })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds seeded tasks, as the data migration copied them; returns their IDs here.
    pub fn seed(&self, seeds: &[Seed]) -> Vec<String> {
        let mut tasks = lock(&self.tasks);
        seeds
            .iter()
            .map(|seed| {
                let id = uuid::Uuid::new_v4().to_string();
                tasks.insert(
                    id.clone(),
                    Task {
                        id: id.clone(),
                        title: seed.title.clone(),
                        status: seed.status.to_string(),
                        priority: seed.priority.to_string(),
                        due: seed.due.clone(),
                        tags: seed.tags.clone(),
                        context: seed.context.clone(),
                        created_ms: seed.created_ms,
                        updated_ms: seed.created_ms,
                    },
                );
                id
            })
            .collect()
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn handle(
    flavor: Flavor,
    tasks: Arc<Mutex<BTreeMap<String, Task>>>,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let body = match Limited::new(request.into_body(), 64 * 1024).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"success": false, "error": "too large"}),
            )
        }
    };
    let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let now = crate::clock::now_ms();
    let mut tasks = lock(&tasks);
    match (method, segments.as_slice()) {
        (Method::GET, ["api", "all-tasks"]) => {
            let mut list: Vec<&Task> = tasks.values().collect();
            match flavor {
                Flavor::Legacy => list.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.id.cmp(&b.id))),
                // Bug 3: sorted by title.
                Flavor::Candidate => list.sort_by(|a, b| a.title.cmp(&b.title).then(a.id.cmp(&b.id))),
            }
            let views: Vec<Value> = list.iter().map(|task| list_view(flavor, task)).collect();
            answer(
                StatusCode::OK,
                json!({
                    "success": true,
                    "count": views.len(),
                    "source": source(flavor),
                    "generatedAt": timestamp(flavor, now),
                    "tasks": views,
                }),
            )
        }
        (Method::GET, ["api", "task", id]) => match tasks.get(*id) {
            Some(task) => {
                let mut view = view(flavor, task);
                if flavor == Flavor::Candidate {
                    // Bug 1: the single-task serializer spells the field differently.
                    if let Some(due) = view.as_object_mut().and_then(|v| v.remove("dueDate")) {
                        view["due_date"] = due;
                    }
                }
                answer(StatusCode::OK, view)
            }
            None => not_found(),
        },
        (Method::POST, ["api", "task", "batch"]) => {
            let lines: Vec<String> = input["tasks"]
                .as_str()
                .unwrap_or_default()
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(str::to_string)
                .collect();
            if lines.is_empty() {
                return answer(
                    StatusCode::BAD_REQUEST,
                    json!({"success": false, "error": "tasks is required"}),
                );
            }
            let created: Vec<Value> = lines
                .into_iter()
                .map(|title| {
                    let task = new_task(&title, &input, now);
                    let view = view(flavor, &task);
                    tasks.insert(task.id.clone(), task);
                    view
                })
                .collect();
            answer(
                StatusCode::OK,
                json!({"success": true, "created": created.len(), "tasks": created}),
            )
        }
        (Method::POST, ["api", "task"]) => {
            let Some(title) = input["task"].as_str().filter(|t| !t.trim().is_empty()) else {
                return answer(
                    StatusCode::BAD_REQUEST,
                    json!({"success": false, "error": "task is required"}),
                );
            };
            let task = new_task(title, &input, now);
            let mut created = json!({"success": true, "task": view(flavor, &task)});
            let key = match flavor {
                Flavor::Legacy => "notionPageId",
                Flavor::Candidate => "taskId",
            };
            created[key] = Value::from(task.id.clone());
            tasks.insert(task.id.clone(), task);
            answer(StatusCode::CREATED, created)
        }
        (Method::PATCH, ["api", "task", id, "complete"]) => match tasks.get_mut(*id) {
            // Bug 5: completing a completed task is a conflict for the candidate.
            Some(task) if task.status == "done" && flavor == Flavor::Candidate => answer(
                StatusCode::CONFLICT,
                json!({"success": false, "error": "task is already done"}),
            ),
            Some(task) => {
                // Completing a completed task changes nothing (not even updatedAt).
                if task.status != "done" {
                    task.status = "done".into();
                    task.updated_ms = now;
                }
                answer(StatusCode::OK, view(flavor, task))
            }
            None => not_found(),
        },
        (Method::PATCH, ["api", "task", id]) => match tasks.get_mut(*id) {
            Some(task) => {
                if let Some(title) = input["title"].as_str() {
                    task.title = title.to_string();
                }
                for (field, slot) in [("status", &mut task.status), ("priority", &mut task.priority)] {
                    if let Some(value) = input[field].as_str() {
                        *slot = value.to_string();
                    }
                }
                if let Some(due) = input["dueDate"].as_str() {
                    task.due = Some(due.to_string());
                }
                task.updated_ms = now;
                answer(StatusCode::OK, view(flavor, task))
            }
            None => not_found(),
        },
        _ => answer(
            StatusCode::NOT_FOUND,
            json!({"success": false, "error": "no such endpoint"}),
        ),
    }
}

fn new_task(title: &str, input: &Value, now: i64) -> Task {
    Task {
        id: uuid::Uuid::new_v4().to_string(),
        title: title.to_string(),
        status: "open".into(),
        priority: input["priority"].as_str().unwrap_or("normal").to_string(),
        due: input["dueDate"].as_str().map(str::to_string),
        tags: input["tags"]
            .as_array()
            .map(|tags| tags.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
        context: input["context"].as_str().map(str::to_string),
        created_ms: now,
        updated_ms: now,
    }
}

fn source(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::Legacy => "notion",
        Flavor::Candidate => "postgres",
    }
}

/// Legacy keeps milliseconds; the candidate's column keeps whole seconds.
fn timestamp(flavor: Flavor, millis: i64) -> String {
    let at = chrono::DateTime::from_timestamp_millis(millis).unwrap_or_default();
    match flavor {
        Flavor::Legacy => at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Flavor::Candidate => at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    }
}

fn view(flavor: Flavor, task: &Task) -> Value {
    json!({
        "id": task.id,
        "title": task.title,
        "status": task.status,
        "priority": task.priority,
        // Legacy stores a date; the candidate a timestamp at midnight UTC.
        "dueDate": task.due.as_ref().map(|due| match flavor {
            Flavor::Legacy => due.clone(),
            Flavor::Candidate => format!("{due}T00:00:00Z"),
        }),
        "tags": task.tags,
        "context": task.context,
        "createdAt": timestamp(flavor, task.created_ms),
        "updatedAt": timestamp(flavor, task.updated_ms),
    })
}

fn list_view(flavor: Flavor, task: &Task) -> Value {
    let mut view = view(flavor, task);
    if flavor == Flavor::Candidate {
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

fn not_found() -> Response<ResponseBody> {
    answer(
        StatusCode::NOT_FOUND,
        json!({"success": false, "error": "no such task"}),
    )
}

fn answer(status: StatusCode, body: Value) -> Response<ResponseBody> {
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
