//! A stateful task API for dual-write tests, shaped like TomOS's: list,
//! get, create, update, complete, batch create. Each side generates its
//! own IDs (`Scheme`), so the proxy has to translate them.
//!
//! Unlike the demo's task API (`cutover::demo::backend`), both sides here
//! behave alike but for their IDs, and the test steers them: down, slow
//! writes, gaps between writes, and the state read back directly.
//!
//! Must never: answer differently on the two sides except where a test
//! asks for it (IDs, down, delays): a test's divergence must be its own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use super::{backend, respond, Backend, Seen, TestBody};

/// How a side names new tasks and what its create answer calls the ID.
#[derive(Debug, Clone, Copy)]
pub enum Scheme {
    /// Notion-like: dashed UUID-shaped page IDs, `notionPageId` in the create answer.
    Legacy,
    /// Postgres-like: `t-<n>`, `taskId` in the create answer.
    Candidate,
}

/// A task as one side holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    pub title: String,
    pub status: String,
    pub parent: Option<String>,
}

/// The API's state, shared with the test.
#[derive(Clone)]
pub struct TaskApi {
    scheme: Scheme,
    tasks: Arc<Mutex<BTreeMap<String, Task>>>,
    next: Arc<AtomicU64>,
    /// Answer 503 to everything and apply nothing.
    pub down: Arc<AtomicBool>,
    /// Writes are applied one at a time, and the next one waits this long
    /// after an answer, so the order answers reach the proxy is the order applied.
    write_gap: Duration,
    /// Each write takes this long before it is applied (a slow shadow).
    write_delay: Duration,
    serial: Arc<tokio::sync::Mutex<()>>,
}

impl TaskApi {
    /// An empty API that names new tasks by `scheme`.
    pub fn new(scheme: Scheme) -> TaskApi {
        TaskApi {
            scheme,
            tasks: Arc::new(Mutex::new(BTreeMap::new())),
            next: Arc::new(AtomicU64::new(1)),
            down: Arc::new(AtomicBool::new(false)),
            write_gap: Duration::ZERO,
            write_delay: Duration::ZERO,
            serial: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Writes apply one at a time, `gap` apart.
    pub fn with_write_gap(mut self, gap: Duration) -> TaskApi {
        self.write_gap = gap;
        self
    }

    /// Each write waits `delay` before it applies.
    pub fn with_write_delay(mut self, delay: Duration) -> TaskApi {
        self.write_delay = delay;
        self
    }

    /// Serves the API on a loopback port of its own.
    pub async fn serve(&self) -> Backend {
        let api = self.clone();
        backend(move |seen| {
            let api = api.clone();
            async move { api.handle(seen).await }
        })
        .await
    }

    /// Every task, by ID.
    pub fn tasks(&self) -> BTreeMap<String, Task> {
        self.tasks.lock().unwrap().clone()
    }

    /// Adds a task directly (seeded data, as a data migration left it).
    pub fn seed(&self, id: &str, title: &str) {
        self.tasks.lock().unwrap().insert(
            id.to_string(),
            Task {
                id: id.to_string(),
                title: title.to_string(),
                status: "open".into(),
                parent: None,
            },
        );
    }

    fn new_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        match self.scheme {
            Scheme::Legacy => format!("0000{n:04x}-aaaa-4bbb-8ccc-{n:012x}"),
            Scheme::Candidate => format!("t-{n}"),
        }
    }

    fn id_key(&self) -> &'static str {
        match self.scheme {
            Scheme::Legacy => "notionPageId",
            Scheme::Candidate => "taskId",
        }
    }

    fn source(&self) -> &'static str {
        match self.scheme {
            Scheme::Legacy => "notion",
            Scheme::Candidate => "postgres",
        }
    }

    async fn handle(&self, seen: Seen) -> http::Response<TestBody> {
        if self.down.load(Ordering::SeqCst) {
            return answer(503, json!({"success": false, "error": "down"}));
        }
        let path = seen.path_and_query.split('?').next().unwrap_or_default().to_string();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let body: Value = serde_json::from_slice(&seen.body).unwrap_or(Value::Null);
        if seen.method == http::Method::GET {
            return match segments.as_slice() {
                ["api", "all-tasks"] => {
                    let tasks: Vec<Value> = self.tasks().values().map(view).collect();
                    answer(
                        200,
                        json!({"success": true, "count": tasks.len(), "source": self.source(), "tasks": tasks}),
                    )
                }
                ["api", "task", id] => match self.tasks().get(*id) {
                    Some(task) => answer(200, view(task)),
                    None => answer(404, json!({"success": false, "error": "no such task"})),
                },
                _ => answer(404, json!({"error": "no route"})),
            };
        }
        // Writes: one at a time.
        let guard = Arc::clone(&self.serial).lock_owned().await;
        tokio::time::sleep(self.write_delay).await;
        let response = self.write(&seen.method, &segments, &body);
        let gap = self.write_gap;
        tokio::spawn(async move {
            tokio::time::sleep(gap).await;
            drop(guard);
        });
        response
    }

    fn write(&self, method: &http::Method, segments: &[&str], body: &Value) -> http::Response<TestBody> {
        let mut tasks = self.tasks.lock().unwrap();
        match (method.as_str(), segments) {
            ("POST", ["api", "task", "batch"]) => {
                let lines = body["tasks"].as_str().unwrap_or_default();
                let created: Vec<Value> = lines
                    .lines()
                    .filter(|line| !line.trim().is_empty())
                    .map(|line| {
                        let task = Task {
                            id: self.new_id(),
                            title: line.trim().to_string(),
                            status: "open".into(),
                            parent: None,
                        };
                        tasks.insert(task.id.clone(), task.clone());
                        view(&task)
                    })
                    .collect();
                answer(200, json!({"success": true, "tasks": created}))
            }
            ("POST", ["api", "task"]) => {
                let Some(title) = body["task"].as_str() else {
                    return answer(400, json!({"success": false, "error": "task is required"}));
                };
                let task = Task {
                    id: self.new_id(),
                    title: title.to_string(),
                    status: "open".into(),
                    parent: None,
                };
                tasks.insert(task.id.clone(), task.clone());
                let mut created = json!({"success": true, "task": view(&task)});
                created[self.id_key()] = Value::from(task.id.clone());
                answer(201, created)
            }
            ("PATCH", ["api", "task", id, "complete"]) => match tasks.get_mut(*id) {
                Some(task) => {
                    task.status = "done".into();
                    answer(200, view(task))
                }
                None => answer(404, json!({"success": false, "error": "no such task"})),
            },
            ("PATCH", ["api", "task", id]) => match tasks.get_mut(*id) {
                Some(task) => {
                    if let Some(title) = body["title"].as_str() {
                        task.title = title.to_string();
                    }
                    if let Some(status) = body["status"].as_str() {
                        task.status = status.to_string();
                    }
                    if let Some(parent) = body["parent"].as_str() {
                        task.parent = Some(parent.to_string());
                    }
                    answer(200, view(task))
                }
                None => answer(404, json!({"success": false, "error": "no such task"})),
            },
            _ => answer(404, json!({"error": "no route"})),
        }
    }
}

fn view(task: &Task) -> Value {
    json!({"id": task.id, "title": task.title, "status": task.status, "parent": task.parent})
}

fn answer(status: u16, body: Value) -> http::Response<TestBody> {
    respond(
        status,
        &[("content-type".to_string(), "application/json".to_string())],
        Bytes::from(body.to_string()),
    )
}

/// The routes of the task API, as a cutover config would declare them.
pub const ROUTES: &str = r#"
[[route]]
name = "all-tasks"
match = "GET /api/all-tasks"
[route.compare]
ignore = ["/source"]
unordered = { "/tasks" = "id" }
ids = { "/tasks/*/id" = "tasks", "/tasks/*/parent" = "tasks" }

[[route]]
name = "get-task"
match = "GET /api/task/{id:tasks}"
[route.compare]
ids = { "/id" = "tasks", "/parent" = "tasks" }

[[route]]
name = "batch-create"
match = "POST /api/task/batch"
mirror = "dual-write"
learn_ids = [{ kind = "tasks", primary = "/tasks/*/id", shadow = "/tasks/*/id" }]
[route.compare]
ids = { "/tasks/*/id" = "tasks" }

[[route]]
name = "create-task"
match = "POST /api/task"
mirror = "dual-write"
learn_ids = [{ kind = "tasks", primary = "/notionPageId", shadow = "/taskId" }]
verify = "GET /api/task/{tasks}"
[route.compare]
ignore = ["/notionPageId", "/taskId"]
ids = { "/task/id" = "tasks" }

[[route]]
name = "complete-task"
match = "PATCH /api/task/{id:tasks}/complete"
mirror = "dual-write"
[route.compare]
ids = { "/id" = "tasks", "/parent" = "tasks" }

[[route]]
name = "update-task"
match = "PATCH /api/task/{id:tasks}"
mirror = "dual-write"
[route.translate]
body = { "/parent" = "tasks" }
[route.compare]
ids = { "/id" = "tasks", "/parent" = "tasks" }
"#;
