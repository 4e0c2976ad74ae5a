//! The task API of `cutover::demo::tasks`, hosted on a recording test
//! server, with the routes a cutover config declares for it. Tests build
//! the API with bugs and timestamps off, so both sides answer alike but for
//! their IDs (`Flavor::Legacy`: UUIDs and `notionPageId`;
//! `Flavor::Candidate`: `t-<n>` and `taskId`), and steer it: down, paced or
//! slow writes, seeded tasks, the state read back directly.
//!
//! Must never: implement any of the API itself: a second copy would drift
//! from the demo's, and a test's divergence must be the API's own.

use bytes::Bytes;
#[allow(unused_imports)] // each test binary uses a different part of the harness
pub use cutover::demo::tasks::{Flavor, Ids, Task, TaskApi};

use super::{backend, respond, Backend};

/// Hosts a [`TaskApi`] on a test server, so the test also sees every request.
pub trait Host {
    /// Serves the API on a loopback port of its own.
    fn serve(&self) -> impl std::future::Future<Output = Backend> + Send;
}

impl Host for TaskApi {
    async fn serve(&self) -> Backend {
        let api = self.clone();
        backend(move |seen| {
            let api = api.clone();
            async move {
                let path = seen.path_and_query.split('?').next().unwrap_or_default().to_string();
                let (status, body) = api.answer(&seen.method, &path, &seen.body).await;
                respond(
                    status.as_u16(),
                    &[("content-type".to_string(), "application/json".to_string())],
                    Bytes::from(body.to_string()),
                )
            }
        })
        .await
    }
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
