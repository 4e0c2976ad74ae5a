//! `export`: the divergence samples, and with `--exchanges` every recorded
//! request of the window, as HAR 1.2 or JSON Lines, from the store alone.
//!
//! Must never: write anything the store did not already hold redacted, or
//! overwrite a file.

use std::io::Write;

use anyhow::Context;
use serde_json::json;

use crate::capture::Entry;
use crate::store::{ExchangeRecord, SampleRow, Store};

use super::{runtime, StoreArgs};

/// How many exchanges are read from the store at a time.
const PAGE: i64 = 5_000;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(super) enum CaptureFormat {
    Har,
    Jsonl,
}

/// What `export` was asked for.
pub(super) struct ExportRequest<'a> {
    pub format: CaptureFormat,
    pub out: Option<&'a std::path::Path>,
    pub exchanges: bool,
    pub since: std::time::Duration,
}

pub(super) fn export(request: &ExportRequest<'_>, at: &StoreArgs) -> anyhow::Result<()> {
    let config = at.config()?;
    let base = config.as_ref().map_or_else(
        || "http://primary.invalid".to_string(),
        |config| origin(&config.primary.url),
    );
    let entries = runtime()?.block_on(async {
        let store = at.open(config.as_ref()).await?;
        let entries = entries(&store, request).await;
        store.close().await;
        entries
    })?;
    let mut text = match request.format {
        CaptureFormat::Har => {
            serde_json::to_string_pretty(&crate::capture::har(&entries, &base, env!("CARGO_PKG_VERSION")))?
        }
        CaptureFormat::Jsonl => entries.iter().map(crate::capture::jsonl).collect::<Vec<_>>().join("\n"),
    };
    text.push('\n');
    match request.out {
        None => crate::cli::write_stdout(&text, false)?,
        Some(path) => {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| {
                    format!(
                        "cannot create {} (an existing file is never overwritten)",
                        path.display()
                    )
                })?;
            file.write_all(text.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("{} entries written to {}", entries.len(), path.display());
        }
    }
    Ok(())
}

/// The primary's scheme, host and port (its base path is part of what it serves).
fn origin(url: &reqwest::Url) -> String {
    let mut origin = url.origin().ascii_serialization();
    origin.push_str(url.path().trim_end_matches('/'));
    origin
}

async fn entries(store: &Store, request: &ExportRequest<'_>) -> anyhow::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for group in store.groups().await? {
        for sample in store.samples(&group.key).await? {
            entries.push(sample_entry(&group, &sample));
        }
    }
    if request.exchanges {
        let now = crate::clock::now_ms();
        let from = now.saturating_sub(i64::try_from(request.since.as_millis()).unwrap_or(i64::MAX));
        let mut after = 0;
        loop {
            let page = store.exchanges_between((from, now + 1), after, PAGE).await?;
            let Some((last, _)) = page.last() else { break };
            after = *last;
            entries.extend(page.into_iter().map(|(_, exchange)| exchange_entry(&exchange)));
        }
    }
    entries.sort_by_key(|entry| entry.at_ms);
    Ok(entries)
}

fn sample_entry(group: &crate::store::GroupRow, sample: &SampleRow) -> Entry {
    let request = &sample.request;
    let text = |key: &str| request[key].as_str().unwrap_or_default().to_string();
    let headers = request["headers"]
        .as_object()
        .map(|headers| {
            headers
                .iter()
                .map(|(name, value)| (name.clone(), value.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let body = Some(text("body")).filter(|body| !body.is_empty());
    Entry {
        at_ms: sample.at_ms,
        method: text("method"),
        path: text("path"),
        headers,
        body,
        status: None,
        response_text: sample.primary_excerpt.clone(),
        elapsed_ms: None,
        cutover: json!({
            "kind": "divergence_sample",
            "group": group.key,
            "route": group.route,
            "severity": group.severity,
            "status": group.status,
            "differences": sample.differences,
            "shadow_excerpt": sample.shadow_excerpt,
            "trace_id": sample.trace_id,
            "served": sample.served,
        }),
    }
}

fn exchange_entry(exchange: &ExchangeRecord) -> Entry {
    Entry {
        at_ms: exchange.at_ms,
        method: exchange.method.clone(),
        path: exchange.path.clone(),
        status: exchange.primary_status.and_then(|status| u16::try_from(status).ok()),
        elapsed_ms: exchange.primary_ms,
        cutover: json!({
            "kind": "exchange",
            "request_id": exchange.request_id,
            "route": exchange.route,
            "source": exchange.source,
            "outcome": exchange.outcome,
            "reason": exchange.reason,
            "shadow_status": exchange.shadow_status,
            "shadow_ms": exchange.shadow_ms,
            "served": exchange.served,
        }),
        ..Entry::default()
    }
}
