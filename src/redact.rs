//! Redaction: what is kept (stored or logged) never carries a secret.
//! Header values, query parameter values and JSON fields named by
//! `[redact]` (plus the defaults) become `"[redacted]"`. The comparison
//! itself sees the real values; only what is kept is redacted. The values
//! cutover itself puts on requests (`[primary.headers]`/`[shadow.headers]`
//! `set`, `replay_headers`) are scrubbed from kept text wherever a backend
//! echoes them.
//!
//! Must never: pass a value through because its name has unusual case or
//! encoding (names compare case-insensitively, query names percent-decoded).

use http::{HeaderMap, HeaderName};
use serde_json::{Map, Value};

use crate::compare::pointer::{Pattern, PatternSet};
use crate::secret::Secret;

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// Headers that are always redacted.
pub const DEFAULT_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

/// Query parameters that are always redacted.
pub const DEFAULT_QUERY: [&str; 9] = [
    "token",
    "access_token",
    "key",
    "api_key",
    "apikey",
    "secret",
    "password",
    "signature",
    "sig",
];

/// A secret value shorter than this is not scrubbed from kept text by
/// value (it would blot out ordinary words); it is still redacted by name.
pub const SHORTEST_SCRUBBED: usize = 8;

/// The redaction rules of one instance.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    headers: Vec<String>,
    query: Vec<String>,
    json: PatternSet<()>,
    /// Values cutover sends that must never be kept, however they come back.
    values: Vec<Secret>,
    /// Seals what a replay needs where redacting it would change the request.
    seal: Option<crate::seal::SealKey>,
}

impl Redactor {
    /// The defaults plus the configured names (any case) and JSON paths.
    pub fn new(headers: &[String], query: &[String], json: Vec<Pattern>) -> Redactor {
        let lower = |names: &mut dyn Iterator<Item = &str>| names.map(str::to_ascii_lowercase).collect::<Vec<_>>();
        let mut set = PatternSet::default();
        for pattern in json {
            set.push(pattern, ());
        }
        Redactor {
            headers: lower(
                &mut DEFAULT_HEADERS
                    .iter()
                    .copied()
                    .chain(headers.iter().map(String::as_str)),
            ),
            query: lower(&mut DEFAULT_QUERY.iter().copied().chain(query.iter().map(String::as_str))),
            json: set,
            values: Vec::new(),
            seal: None,
        }
    }

    /// The same rules, where the headers cutover sets on requests are
    /// secret too: by name in headers, by value in any text kept.
    pub fn with_sent_secrets(mut self, sent: &[(HeaderName, Secret)]) -> Redactor {
        for (name, value) in sent {
            if !self.is_secret_header(name.as_str()) {
                self.headers.push(name.as_str().to_string());
            }
            if value.expose().len() >= SHORTEST_SCRUBBED && !self.values.contains(value) {
                self.values.push(value.clone());
            }
        }
        self
    }

    /// Text about to be kept, with every sent secret value replaced, as
    /// written and as it reads inside a JSON string.
    pub fn scrub(&self, text: String) -> String {
        let mut text = text;
        for value in &self.values {
            let raw = value.expose();
            if text.contains(raw) {
                text = text.replace(raw, REDACTED);
            }
            let quoted = serde_json::to_string(raw).unwrap_or_default();
            let escaped = quoted.trim_matches('"');
            if escaped != raw && text.contains(escaped) {
                text = text.replace(escaped, REDACTED);
            }
        }
        text
    }

    /// The same rules, with a key that seals replay data (`CUTOVER_REPLAY_KEY`).
    pub fn with_seal(mut self, seal: Option<crate::seal::SealKey>) -> Redactor {
        self.seal = seal;
        self
    }

    /// The key that seals replay data, when one is set.
    pub fn seal(&self) -> Option<&crate::seal::SealKey> {
        self.seal.as_ref()
    }

    /// What in a request its kept form would have to redact: `None` when
    /// its path, query and body can be kept exactly as sent. A request that
    /// carries a secret is never kept redacted for replay: replaying the
    /// placeholder would write `[redacted]` into the other side.
    pub fn secret_in_request(&self, path_and_query: &str, headers: &HeaderMap, body: &[u8]) -> Option<&'static str> {
        if self.path(path_and_query) != path_and_query {
            return Some("a secret query value");
        }
        if body.is_empty() {
            return None;
        }
        if let Ok(document) = serde_json::from_slice::<Value>(body) {
            return (self.json(document.clone()) != document).then_some("a secret JSON field");
        }
        let is_form = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| crate::compare::decode::media_type(value).0 == "application/x-www-form-urlencoded");
        match std::str::from_utf8(body) {
            Ok(text) if is_form && self.form(text) != text => Some("a secret form field"),
            _ => None,
        }
    }

    /// A path with the values of secret query parameters replaced.
    pub fn path(&self, path_and_query: &str) -> String {
        let Some((path, query)) = path_and_query.split_once('?') else {
            return path_and_query.to_string();
        };
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                let decoded = decoded_name(name).to_ascii_lowercase();
                if !value.is_empty() && self.query.contains(&decoded) {
                    format!("{name}={REDACTED}")
                } else {
                    pair.to_string()
                }
            })
            .collect();
        format!("{path}?{}", pairs.join("&"))
    }

    /// Headers as a JSON object, secret values replaced (repeated headers joined by ", ").
    pub fn headers(&self, headers: &HeaderMap) -> Value {
        let mut out = Map::new();
        for name in headers.keys() {
            let value = if self.headers.iter().any(|secret| secret == name.as_str()) {
                REDACTED.to_string()
            } else {
                headers
                    .get_all(name)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.insert(name.to_string(), Value::from(value));
        }
        Value::Object(out)
    }

    /// A difference with its values hidden when they sit at a secret place.
    pub fn difference(&self, difference: &crate::compare::Difference) -> crate::compare::Difference {
        let secret = match difference.location {
            crate::compare::Location::Header => self.is_secret_header(&difference.path),
            crate::compare::Location::Body => self.is_secret_pointer(&difference.path),
            crate::compare::Location::Status => false,
        };
        let mut kept = difference.clone();
        if secret {
            let hide = |value: &mut Option<String>| {
                if value.is_some() {
                    *value = Some(REDACTED.to_string());
                }
            };
            hide(&mut kept.primary);
            hide(&mut kept.shadow);
        } else {
            // Each value is JSON text; once inside the differences' own JSON
            // a quote in a sent value would be escaped twice, past `scrub`.
            kept.primary = kept.primary.map(|value| self.scrub(value));
            kept.shadow = kept.shadow.map(|value| self.scrub(value));
        }
        kept
    }

    /// Whether a header's value is a secret.
    pub fn is_secret_header(&self, name: &str) -> bool {
        self.headers.iter().any(|secret| secret.eq_ignore_ascii_case(name))
    }

    /// Whether the value at a JSON Pointer (into a body) is a secret.
    pub fn is_secret_pointer(&self, pointer: &str) -> bool {
        let segments: Option<Vec<String>> = pointer
            .split('/')
            .skip(1)
            .map(crate::compare::pointer::unescape)
            .collect();
        let Some(segments) = segments else {
            return false;
        };
        // A secret field hides everything below it too.
        (0..=segments.len()).any(|end| self.json.lookup(&segments[..end]).is_some())
    }

    /// A form-encoded body with secret field values replaced (same names as the query).
    pub fn form(&self, body: &str) -> String {
        self.path(&format!("?{body}")).trim_start_matches('?').to_string()
    }

    /// A JSON document with the configured fields replaced.
    pub fn json(&self, mut value: Value) -> Value {
        if !self.json.is_empty() {
            self.json_at(&mut value, &self.json.root());
        }
        value
    }

    fn json_at(&self, value: &mut Value, cursor: &crate::compare::pointer::Cursor) {
        if cursor.is_dead() {
            return;
        }
        if self.json.matches(cursor).next().is_some() {
            *value = Value::from(REDACTED);
            return;
        }
        match value {
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    self.json_at(child, &self.json.step(cursor, key));
                }
            }
            Value::Array(items) => {
                for (index, child) in items.iter_mut().enumerate() {
                    self.json_at(child, &self.json.step(cursor, &index.to_string()));
                }
            }
            _ => {}
        }
    }
}

/// A query parameter's name as the server reads it (percent and `+` decoded).
fn decoded_name(name: &str) -> String {
    form_urlencoded::parse(name.as_bytes())
        .next()
        .map_or_else(String::new, |(decoded, _)| decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn redactor() -> Redactor {
        Redactor::new(
            &["X-Session".to_string()],
            &["otp".to_string()],
            vec![
                Pattern::parse("/**/password").unwrap(),
                Pattern::parse("/card/number").unwrap(),
            ],
        )
    }

    #[test]
    fn secret_query_values_are_replaced_whatever_their_case_or_encoding() {
        let r = redactor();
        assert_eq!(r.path("/a?token=abc&page=2"), "/a?token=[redacted]&page=2");
        assert_eq!(r.path("/a?TOKEN=abc&Otp=1"), "/a?TOKEN=[redacted]&Otp=[redacted]");
        assert_eq!(r.path("/a?%74oken=abc"), "/a?%74oken=[redacted]");
        assert_eq!(r.path("/a?flag&token="), "/a?flag&token=");
        assert_eq!(r.path("/plain"), "/plain");
    }

    #[test]
    fn secret_headers_are_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer hunter2".parse().unwrap());
        headers.insert("x-session", "s3cret".parse().unwrap());
        headers.append("accept", "a".parse().unwrap());
        headers.append("accept", "b".parse().unwrap());
        assert_eq!(
            redactor().headers(&headers),
            json!({"authorization": "[redacted]", "x-session": "[redacted]", "accept": "a, b"})
        );
    }

    #[test]
    fn configured_json_fields_are_replaced_at_any_depth() {
        let doc = json!({"user": {"password": "p", "name": "n"}, "password": "q", "card": {"number": "4111", "exp": "12/29"}});
        assert_eq!(
            redactor().json(doc),
            json!({"user": {"password": "[redacted]", "name": "n"}, "password": "[redacted]", "card": {"number": "[redacted]", "exp": "12/29"}})
        );
    }

    #[test]
    fn sent_secrets_are_redacted_by_name_and_scrubbed_by_value() {
        let token = Secret::new("bypass-\"token\"-0123".to_string());
        let short = Secret::new("abc".to_string());
        let name = HeaderName::from_static("x-bypass");
        let r = redactor().with_sent_secrets(&[(name.clone(), token.clone()), (name, short)]);
        let mut headers = HeaderMap::new();
        headers.insert("x-bypass", "anything".parse().unwrap());
        assert_eq!(r.headers(&headers), json!({"x-bypass": "[redacted]"}));
        let echoed = format!("got {} in a header", token.expose());
        assert_eq!(r.scrub(echoed), "got [redacted] in a header");
        let in_json = serde_json::to_string(&json!({"echo": token.expose()})).unwrap();
        assert_eq!(r.scrub(in_json), r#"{"echo":"[redacted]"}"#);
        assert_eq!(r.scrub("abc stays: too short".to_string()), "abc stays: too short");
        assert_eq!(redactor().scrub("untouched".to_string()), "untouched");
    }

    #[test]
    fn names_are_decoded_as_the_server_reads_them() {
        assert_eq!(decoded_name("a%2Fb%zz%"), "a/b%zz%");
        assert_eq!(decoded_name("api+key"), "api key");
    }
}
