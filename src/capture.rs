//! Captures: what cutover kept of requests, written as HAR 1.2 (what
//! browsers, proxies and load tools read) or JSON Lines, one entry per
//! request, for `cutover export`.
//!
//! Must never: do I/O, or put anything in an entry that was not already
//! redacted where it was kept.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

/// One request as kept: a divergence sample (headers, body excerpt, both
/// answers' excerpts) or a recorded exchange (method, path, statuses).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    pub at_ms: i64,
    pub method: String,
    /// Path and query, as kept (redacted).
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub status: Option<u16>,
    /// The primary's answer as kept (an excerpt, redacted).
    pub response_text: Option<String>,
    pub elapsed_ms: Option<f64>,
    /// cutover's own view: route, outcome, group, differences, the shadow's side.
    pub cutover: Value,
}

/// A HAR 1.2 document of `entries`; each URL is `base` (the primary's
/// origin) joined with the entry's path.
pub fn har(entries: &[Entry], base: &str, creator_version: &str) -> Value {
    let base = base.trim_end_matches('/');
    let entries: Vec<Value> = entries.iter().map(|entry| har_entry(entry, base)).collect();
    json!({
        "log": {
            "version": "1.2",
            "creator": {"name": "cutover", "version": creator_version},
            "entries": entries,
        }
    })
}

fn har_entry(entry: &Entry, base: &str) -> Value {
    let pairs = |pairs: &[(String, String)]| -> Vec<Value> {
        pairs
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect()
    };
    let query: Vec<(String, String)> = entry
        .path
        .split_once('?')
        .map(|(_, query)| {
            query
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (name.to_string(), value.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut request = json!({
        "method": entry.method,
        "url": format!("{base}{}", entry.path),
        "httpVersion": "HTTP/1.1",
        "cookies": [],
        "headers": pairs(&entry.headers),
        "queryString": pairs(&query),
        "headersSize": -1,
        "bodySize": entry.body.as_ref().map_or(0, String::len),
    });
    if let Some(body) = &entry.body {
        let mime = header(entry, "content-type").unwrap_or("application/octet-stream");
        request["postData"] = json!({"mimeType": mime, "text": body});
    }
    let text = entry.response_text.clone().unwrap_or_default();
    let elapsed = entry.elapsed_ms.unwrap_or(-1.0);
    json!({
        "startedDateTime": rfc3339(entry.at_ms),
        "time": elapsed.max(0.0),
        "request": request,
        "response": {
            "status": entry.status.unwrap_or(0),
            "statusText": "",
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": [],
            "content": {"size": text.len(), "mimeType": "", "text": text},
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": -1,
        },
        "cache": {},
        "timings": {"send": 0, "wait": elapsed, "receive": 0},
        "_cutover": entry.cutover,
    })
}

/// One JSON Lines record of an entry (no newline).
pub fn jsonl(entry: &Entry) -> String {
    let headers: serde_json::Map<String, Value> = entry
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), Value::from(value.as_str())))
        .collect();
    json!({
        "at": rfc3339(entry.at_ms),
        "method": entry.method,
        "path": entry.path,
        "headers": headers,
        "body": entry.body,
        "status": entry.status,
        "elapsed_ms": entry.elapsed_ms,
        "response": entry.response_text,
        "cutover": entry.cutover,
    })
    .to_string()
}

fn header<'a>(entry: &'a Entry, name: &str) -> Option<&'a str> {
    entry
        .headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

fn rfc3339(at_ms: i64) -> String {
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(at_ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        Entry {
            at_ms: 1_764_000_000_123,
            method: "POST".into(),
            path: "/search?q=milk&token=[redacted]".into(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("authorization".into(), "[redacted]".into()),
            ],
            body: Some("{\"q\": \"milk\"}".into()),
            status: Some(200),
            response_text: Some("{\"hits\": []}".into()),
            elapsed_ms: Some(12.5),
            cutover: json!({"route": "search", "group": "0123456789abcdef"}),
        }
    }

    #[test]
    fn a_har_has_what_har_1_2_requires_and_the_entry_as_kept() {
        let document = har(&[sample()], "https://legacy.example/", "1.0.0");
        assert_eq!(document["log"]["version"], "1.2");
        let entry = &document["log"]["entries"][0];
        assert_eq!(entry["startedDateTime"], "2025-11-24T16:00:00.123Z");
        let request = &entry["request"];
        assert_eq!(request["url"], "https://legacy.example/search?q=milk&token=[redacted]");
        assert_eq!(
            request["queryString"][1],
            json!({"name": "token", "value": "[redacted]"})
        );
        assert_eq!(
            request["headers"][1],
            json!({"name": "authorization", "value": "[redacted]"})
        );
        assert_eq!(request["postData"]["mimeType"], "application/json");
        assert_eq!(entry["response"]["status"], 200);
        assert_eq!(entry["response"]["content"]["text"], "{\"hits\": []}");
        assert_eq!(entry["time"], 12.5);
        assert_eq!(entry["_cutover"]["group"], "0123456789abcdef");
        for key in ["cookies", "headersSize", "bodySize", "httpVersion"] {
            assert!(!request[key].is_null(), "request.{key}");
        }
    }

    #[test]
    fn a_jsonl_record_is_one_line_of_the_entry() {
        let line = jsonl(&sample());
        assert!(!line.contains('\n'));
        let record: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(record["method"], "POST");
        assert_eq!(record["headers"]["authorization"], "[redacted]");
        assert_eq!(record["cutover"]["route"], "search");
    }
}
