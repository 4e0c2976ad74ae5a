//! Routes: `METHOD /path/{param}/*` templates, matched in order, and the
//! per-route mirroring policy.
//!
//! A route's name is the only route label anywhere (metrics, logs, store);
//! requests no route matches are labelled [`UNMATCHED_ROUTE`].
//!
//! Must never: hand a raw request path to anything as a label, or allocate
//! per request beyond what matching needs.

use std::fmt;
use std::sync::Arc;

use http::{HeaderName, Method};

use crate::compare::rules::CompareRules;

/// The route label of requests that no `[[route]]` matches.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The methods a route's `match` may name.
const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

/// How a route's requests are mirrored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorPolicy {
    /// Safe methods are sent to both sides and compared.
    Compare,
    /// Writes are mirrored too (see the mirror module for what is built so far).
    DualWrite,
    /// Never mirrored: the route has side effects the shadow must not repeat.
    Off,
}

/// What makes sampling sticky: requests with the same key are all in or all out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SampleKey {
    Header(HeaderName),
    ClientIp,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("expected \"METHOD /path\", got \"{0}\"")]
    Shape(String),
    #[error("unknown method \"{0}\"")]
    UnknownMethod(String),
    #[error("path must start with '/', got \"{0}\"")]
    NotAbsolute(String),
    #[error("segment \"{0}\": a parameter is written {{name}} or {{name:kind}} with letters, digits and '_'")]
    BadParam(String),
    #[error("segment \"{0}\": '*', '{{' and '}}' may only stand alone as a whole segment")]
    BadSegment(String),
    #[error("'**' may only be the last segment")]
    RestNotLast,
    #[error("parameter \"{0}\" appears twice")]
    DuplicateParam(String),
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Must equal the request's segment exactly.
    Literal(String),
    /// `{name}` or `{name:kind}`: any one segment; `kind` names an ID-map kind.
    Param { name: String, kind: Option<String> },
    /// `*`: any one segment.
    Any,
    /// `**`: any number of segments (only last).
    Rest,
}

/// A parsed `/path/{param}/*` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    segments: Vec<Segment>,
}

impl PathTemplate {
    pub fn parse(text: &str) -> Result<PathTemplate, RouteError> {
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| RouteError::NotAbsolute(text.to_string()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        let mut names: Vec<String> = Vec::new();
        for (index, part) in parts.iter().enumerate() {
            let segment = match *part {
                "*" => Segment::Any,
                "**" if index + 1 == parts.len() => Segment::Rest,
                "**" => return Err(RouteError::RestNotLast),
                p if p.starts_with('{') && p.ends_with('}') => {
                    let inner = &p[1..p.len() - 1];
                    let (name, kind) = match inner.split_once(':') {
                        Some((name, kind)) => (name, Some(kind)),
                        None => (inner, None),
                    };
                    if !is_identifier(name) || !kind.is_none_or(is_identifier) {
                        return Err(RouteError::BadParam(p.to_string()));
                    }
                    if names.iter().any(|n| n == name) {
                        return Err(RouteError::DuplicateParam(name.to_string()));
                    }
                    names.push(name.to_string());
                    Segment::Param {
                        name: name.to_string(),
                        kind: kind.map(str::to_string),
                    }
                }
                p if p.contains(['*', '{', '}']) => return Err(RouteError::BadSegment(p.to_string())),
                p => Segment::Literal(p.to_string()),
            };
            segments.push(segment);
        }
        Ok(PathTemplate { segments })
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether a request path (without its query) matches the template.
    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = rest.split('/');
        for segment in &self.segments {
            match segment {
                Segment::Rest => return true,
                Segment::Literal(literal) => match parts.next() {
                    Some(part) if part == literal => {}
                    _ => return false,
                },
                Segment::Param { .. } | Segment::Any => match parts.next() {
                    Some(part) if !part.is_empty() => {}
                    _ => return false,
                },
            }
        }
        parts.next().is_none()
    }
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Which methods a route accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodMatch {
    Any,
    OneOf(Vec<Method>),
}

impl MethodMatch {
    fn parse(text: &str) -> Result<MethodMatch, RouteError> {
        if text == "*" || text == "ANY" {
            return Ok(MethodMatch::Any);
        }
        let mut methods = Vec::new();
        for name in text.split('|') {
            if !KNOWN_METHODS.contains(&name) {
                return Err(RouteError::UnknownMethod(name.to_string()));
            }
            methods.push(Method::from_bytes(name.as_bytes()).map_err(|_| RouteError::UnknownMethod(name.to_string()))?);
        }
        Ok(MethodMatch::OneOf(methods))
    }

    fn accepts(&self, method: &Method) -> bool {
        match self {
            MethodMatch::Any => true,
            MethodMatch::OneOf(methods) => methods.contains(method),
        }
    }
}

/// One `[[route]]`: a name, what it matches and how it is mirrored.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    /// The `match` text as configured, for people reading config summaries.
    pub match_text: String,
    pub methods: MethodMatch,
    pub template: PathTemplate,
    pub mirror: MirrorPolicy,
    /// Fraction of this route's requests that are mirrored (0.0 to 1.0).
    pub sample: f64,
    pub sample_key: Option<SampleKey>,
    /// How this route's answers are compared (`[route.compare]`).
    pub compare: Arc<CompareRules>,
}

impl Route {
    /// Builds a route from its `match` text (`"METHOD /path"`).
    pub fn new(
        name: &str,
        match_text: &str,
        mirror: MirrorPolicy,
        sample: f64,
        sample_key: Option<SampleKey>,
    ) -> Result<Route, RouteError> {
        let (method, path) = match_text
            .split_once(' ')
            .filter(|(m, p)| !m.is_empty() && !p.is_empty() && !p.contains(' '))
            .ok_or_else(|| RouteError::Shape(match_text.to_string()))?;
        Ok(Route {
            name: name.to_string(),
            match_text: match_text.to_string(),
            methods: MethodMatch::parse(method)?,
            template: PathTemplate::parse(path)?,
            mirror,
            sample,
            sample_key,
            compare: Arc::new(CompareRules::new()),
        })
    }

    pub fn matches(&self, method: &Method, path: &str) -> bool {
        self.methods.accepts(method) && self.template.matches(path)
    }
}

/// Routes in configuration order; the first match wins.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> RouteTable {
        RouteTable { routes }
    }

    pub fn find(&self, method: &Method, path: &str) -> Option<&Route> {
        self.routes.iter().find(|route| route.matches(method, path))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

impl fmt::Display for MirrorPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MirrorPolicy::Compare => "compare",
            MirrorPolicy::DualWrite => "dual-write",
            MirrorPolicy::Off => "off",
        })
    }
}

/// Whether a method is safe (RFC 9110 §9.2.1): such requests may be sent to
/// the shadow without a write happening twice.
pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(text: &str) -> Route {
        Route::new("r", text, MirrorPolicy::Compare, 1.0, None).unwrap()
    }

    #[test]
    fn templates_match_segment_by_segment() {
        let cases = [
            ("GET /api/all-tasks", "GET", "/api/all-tasks", true),
            ("GET /api/all-tasks", "GET", "/api/all-tasks/", false),
            ("GET /api/all-tasks", "POST", "/api/all-tasks", false),
            ("PATCH /api/task/{id:tasks}", "PATCH", "/api/task/abc", true),
            ("PATCH /api/task/{id:tasks}", "PATCH", "/api/task/", false),
            ("PATCH /api/task/{id:tasks}", "PATCH", "/api/task/abc/complete", false),
            ("PATCH /api/task/{id}/complete", "PATCH", "/api/task/abc/complete", true),
            (
                "GET /api/notifications/*",
                "GET",
                "/api/notifications/eod-summary",
                true,
            ),
            ("GET /api/notifications/*", "GET", "/api/notifications/a/b", false),
            ("GET /static/**", "GET", "/static/a/b/c.js", true),
            ("GET /static/**", "GET", "/static", true),
            ("* /", "DELETE", "/", true),
            ("GET|HEAD /x", "HEAD", "/x", true),
            ("GET|HEAD /x", "PUT", "/x", false),
        ];
        for (template, method, path, expected) in cases {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(
                route(template).matches(&method, path),
                expected,
                "{template} vs {method} {path}"
            );
        }
    }

    #[test]
    fn bad_templates_are_rejected_with_a_reason() {
        let cases = [
            ("GETT /x", RouteError::UnknownMethod("GETT".into())),
            ("GET", RouteError::Shape("GET".into())),
            ("GET  /x", RouteError::Shape("GET  /x".into())),
            ("GET x", RouteError::NotAbsolute("x".into())),
            ("GET /a/{b c}", RouteError::Shape("GET /a/{b c}".into())),
            ("GET /a/{1b}", RouteError::BadParam("{1b}".into())),
            ("GET /a/x*", RouteError::BadSegment("x*".into())),
            ("GET /**/a", RouteError::RestNotLast),
            ("GET /{id}/{id}", RouteError::DuplicateParam("id".into())),
        ];
        for (text, expected) in cases {
            let err = Route::new("r", text, MirrorPolicy::Compare, 1.0, None).unwrap_err();
            assert_eq!(err, expected, "{text}");
        }
    }

    #[test]
    fn first_matching_route_wins() {
        let table = RouteTable::new(vec![
            Route::new(
                "complete",
                "PATCH /api/task/{id}/complete",
                MirrorPolicy::DualWrite,
                1.0,
                None,
            )
            .unwrap(),
            Route::new("any-task", "* /api/task/**", MirrorPolicy::Off, 1.0, None).unwrap(),
        ]);
        let found = table.find(&Method::PATCH, "/api/task/1/complete").unwrap();
        assert_eq!(found.name, "complete");
        assert_eq!(table.find(&Method::PATCH, "/api/task/1").unwrap().name, "any-task");
        assert!(table.find(&Method::GET, "/elsewhere").is_none());
    }

    #[test]
    fn params_keep_their_kind() {
        let template = PathTemplate::parse("/api/task/{id:tasks}").unwrap();
        assert_eq!(
            template.segments()[2],
            Segment::Param {
                name: "id".into(),
                kind: Some("tasks".into())
            }
        );
    }
}
