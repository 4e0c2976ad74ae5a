//! Captures: what cutover kept of requests, written as HAR 1.2 (what
//! browsers, proxies and load tools read) or JSON Lines, one entry per
//! request, for `cutover export`; and captures read back, from cutover or
//! a browser or another proxy, into the requests `cutover replay` sends.
//!
//! Must never: do I/O, put anything in an entry that was not already
//! redacted where it was kept, or replay a value that was redacted.

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

/// A request read from a capture, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayable {
    pub method: http::Method,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

/// An entry of a capture that cannot be sent, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// `entry 3` (HAR) or `line 3` (JSON Lines).
    pub place: String,
    pub why: String,
}

/// Why a capture cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("not a HAR file (it has no log.entries array)")]
    NotHar,
    #[error("not JSON: {0}")]
    NotJson(String),
}

/// Request headers a replay never sends as captured: HTTP/2 pseudo-headers,
/// the hop-by-hop fields and what frames the message (cutover does).
const NOT_REPLAYED: [&str; 2] = ["host", "content-length"];

/// The requests of a HAR document (one that starts with `{` and has
/// `log`) or of JSON Lines (one object per line with `method`, `path` or
/// `url`, `headers` as an object or a HAR list, and `body`), in order, and
/// the entries that cannot be sent.
pub fn parse(text: &str) -> Result<(Vec<Replayable>, Vec<Unreadable>), CaptureError> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    let whole: Option<Value> = trimmed
        .starts_with('{')
        .then(|| serde_json::from_str(trimmed).ok())
        .flatten();
    let records: Vec<(String, Value)> = match whole {
        Some(document) if document.get("log").is_some() => document["log"]["entries"]
            .as_array()
            .ok_or(CaptureError::NotHar)?
            .iter()
            .enumerate()
            .map(|(index, entry)| (format!("entry {}", index + 1), entry["request"].clone()))
            .collect(),
        _ => {
            let mut records = Vec::new();
            for (index, line) in trimmed.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
                let record = serde_json::from_str(line)
                    .map_err(|err| CaptureError::NotJson(format!("line {}: {err}", index + 1)))?;
                records.push((format!("line {}", index + 1), record));
            }
            records
        }
    };
    let mut requests = Vec::new();
    let mut unreadable = Vec::new();
    for (place, record) in records {
        match replayable(&record) {
            Ok(request) => requests.push(request),
            Err(why) => unreadable.push(Unreadable { place, why }),
        }
    }
    Ok((requests, unreadable))
}

fn replayable(record: &Value) -> Result<Replayable, String> {
    let method = record["method"]
        .as_str()
        .and_then(|method| http::Method::from_bytes(method.as_bytes()).ok())
        .ok_or("no readable method")?;
    let path = match (record["path"].as_str(), record["url"].as_str()) {
        (Some(path), _) if path.starts_with('/') => path.to_string(),
        (_, Some(url)) => {
            let url = reqwest::Url::parse(url).map_err(|err| format!("the URL does not parse: {err}"))?;
            match url.query() {
                Some(query) => format!("{}?{query}", url.path()),
                None => url.path().to_string(),
            }
        }
        _ => return Err("no path or url".to_string()),
    };
    if path.contains(crate::redact::REDACTED) {
        return Err("its path held a value that was redacted when it was kept".to_string());
    }
    let mut headers = http::HeaderMap::new();
    let pairs: Vec<(String, String)> = match &record["headers"] {
        Value::Array(list) => list
            .iter()
            .filter_map(|pair| Some((pair["name"].as_str()?.to_string(), pair["value"].as_str()?.to_string())))
            .collect(),
        Value::Object(map) => map
            .iter()
            .filter_map(|(name, value)| Some((name.clone(), value.as_str()?.to_string())))
            .collect(),
        _ => Vec::new(),
    };
    for (name, value) in pairs {
        let lower = name.to_ascii_lowercase();
        let dropped = lower.starts_with(':')
            || value == crate::redact::REDACTED
            || crate::headers::HOP_BY_HOP.contains(&lower.as_str())
            || crate::headers::MARKERS.contains(&lower.as_str())
            || NOT_REPLAYED.contains(&lower.as_str());
        if dropped {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(lower.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            headers.append(name, value);
        }
    }
    let body = record["postData"]["text"]
        .as_str()
        .or_else(|| record["body"].as_str())
        .unwrap_or_default();
    if body.contains(crate::redact::REDACTED) {
        return Err("its body held a value that was redacted when it was kept".to_string());
    }
    Ok(Replayable {
        method,
        path,
        headers,
        body: bytes::Bytes::from(body.to_string()),
    })
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
    #[test]
    fn har_and_jsonl_captures_read_back_without_redacted_or_framing_headers() {
        let har_text = har(
            &[
                sample(),
                Entry {
                    path: "/tasks/1?view=full".into(),
                    method: "GET".into(),
                    body: None,
                    ..sample()
                },
            ],
            "https://legacy.example",
            "1",
        )
        .to_string();
        let (requests, unreadable) = parse(&har_text).unwrap();
        assert_eq!(requests.len(), 1, "the redacted query is not sent");
        assert_eq!(
            unreadable,
            [Unreadable {
                place: "entry 1".into(),
                why: "its path held a value that was redacted when it was kept".into(),
            }]
        );
        assert_eq!(requests[0].path, "/tasks/1?view=full");
        let names: Vec<&str> = requests[0].headers.keys().map(http::HeaderName::as_str).collect();
        assert_eq!(names, ["content-type"]);
        let lines = format!(
            "{}\n\n{}\n",
            r#"{"method": "POST", "url": "http://x.example/search", "headers": [{"name": ":authority", "value": "x"}, {"name": "Accept", "value": "*/*"}], "postData": {"text": "{\"q\": 1}"}}"#,
            r#"{"method": "GET", "path": "/a", "headers": {"connection": "close"}}"#
        );
        let (requests, unreadable) = parse(&lines).unwrap();
        assert!(unreadable.is_empty());
        assert_eq!(requests[0].method, http::Method::POST);
        assert_eq!(requests[0].path, "/search");
        assert_eq!(&requests[0].body[..], b"{\"q\": 1}");
        assert_eq!(requests[0].headers.len(), 1);
        assert!(requests[1].headers.is_empty());
        assert!(matches!(parse("{\"log\": {}}"), Err(CaptureError::NotHar)));
        assert!(
            matches!(parse("GET / HTTP/1.1"), Err(CaptureError::NotJson(message)) if message.starts_with("line 1"))
        );
        let (_, unreadable) = parse(r#"{"method": "GET"}"#).unwrap();
        assert_eq!(unreadable[0].why, "no path or url");
    }
}
