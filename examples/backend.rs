//! A small, fast HTTP backend for trying cutover locally and for the proxy
//! benchmark. Serves fixed JSON documents:
//!
//! - `GET /json/1k` and `GET /json/64k`: task lists of about that size;
//! - `GET /api/all-tasks`: a task list in the TomOS shape;
//! - `GET /whoami`: the backend's `--name` (so two backends differ);
//! - anything else: `{"method": ..., "path": ...}`.
//!
//! Usage: `cargo run --release --example backend -- --listen 127.0.0.1:3001 --name legacy`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

fn task_list(approx_bytes: usize) -> Bytes {
    let mut tasks = Vec::new();
    let mut size = 0;
    let mut index = 0;
    while size < approx_bytes.saturating_sub(120) {
        let task = serde_json::json!({
            "id": format!("00000000-0000-4000-8000-{index:012}"),
            "title": format!("Task number {index}"),
            "status": "todo",
            "priority": "medium",
            "dueDate": "2026-01-20",
            "tags": ["work"],
        });
        size += task.to_string().len() + 1;
        tasks.push(task);
        index += 1;
    }
    let document = serde_json::json!({ "success": true, "count": tasks.len(), "tasks": tasks });
    Bytes::from(document.to_string())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen: SocketAddr = "127.0.0.1:3001".parse()?;
    let mut name = "backend".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs ADDR")?.parse()?,
            "--name" => name = args.next().ok_or("--name needs NAME")?,
            other => return Err(format!("unknown argument {other}; use --listen ADDR --name NAME").into()),
        }
    }
    let docs = Arc::new((task_list(1024), task_list(64 * 1024), task_list(8 * 1024), name));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("backend {} on http://{}", docs.3, listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let docs = Arc::clone(&docs);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let docs = Arc::clone(&docs);
                async move {
                    let body = match request.uri().path() {
                        "/json/1k" => docs.0.clone(),
                        "/json/64k" => docs.1.clone(),
                        "/api/all-tasks" => docs.2.clone(),
                        "/whoami" => Bytes::from(serde_json::json!({ "name": docs.3 }).to_string()),
                        path => Bytes::from(
                            serde_json::json!({ "method": request.method().as_str(), "path": path }).to_string(),
                        ),
                    };
                    let mut response = Response::new(Full::new(body));
                    response
                        .headers_mut()
                        .insert("content-type", "application/json".parse().expect("static header value"));
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
