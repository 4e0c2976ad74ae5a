//! Routes: `METHOD /path/{param}/*` templates, matched in order, and the
//! per-route mirroring policy.
//!
//! A route's name is the only route label anywhere (metrics, logs, store);
//! requests no route matches are labelled [`UNMATCHED_ROUTE`].
//!
//! Must never: hand a raw request path to anything as a label, or allocate
//! per request beyond what matching needs (and, on a GraphQL route, reading
//! the operation from a body already captured, once).

use std::fmt;
use std::sync::Arc;

use http::{HeaderName, Method};

use crate::compare::rules::CompareRules;
use crate::idmap::{LearnRule, Translation};

pub mod access;
pub mod normalize;

pub use access::{access, is_read, Access};

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

    /// Whether the template has a parameter of this name.
    pub fn has_param(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|segment| matches!(segment, Segment::Param { name: param, .. } if param == name))
    }

    /// The segments holding an ID of a kind: (segment index, kind).
    pub fn id_segments(&self) -> Vec<(usize, String)> {
        self.segments
            .iter()
            .enumerate()
            .filter_map(|(index, segment)| match segment {
                Segment::Param { kind: Some(kind), .. } => Some((index, kind.clone())),
                _ => None,
            })
            .collect()
    }

    /// The parameters of a matching path: (name, kind, value as sent).
    pub fn params<'t, 'p>(&'t self, path: &'p str) -> Vec<(&'t str, Option<&'t str>, &'p str)> {
        let parts = path.strip_prefix('/').unwrap_or(path).split('/');
        self.segments
            .iter()
            .zip(parts)
            .filter_map(|(segment, part)| match segment {
                Segment::Param { name, kind } => Some((name.as_str(), kind.as_deref(), part)),
                _ => None,
            })
            .collect()
    }

    /// Whether a request path (without its query) matches the template.
    pub fn matches(&self, path: &str) -> bool {
        self.matches_folding(path, false)
    }

    /// As [`PathTemplate::matches`], with literal segments compared
    /// regardless of ASCII case when `fold_case` is set.
    pub fn matches_folding(&self, path: &str, fold_case: bool) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = rest.split('/');
        for segment in &self.segments {
            match segment {
                Segment::Rest => return true,
                Segment::Literal(literal) => match parts.next() {
                    Some(part) if part == literal || (fold_case && part.eq_ignore_ascii_case(literal)) => {}
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

    /// Whether every path this template matches is matched by `self` too.
    fn covers(&self, other: &PathTemplate, fold_case: bool) -> bool {
        let mut theirs = other.segments.iter();
        for segment in &self.segments {
            if *segment == Segment::Rest {
                return true;
            }
            let Some(their) = theirs.next() else {
                return false;
            };
            let covered = match (segment, their) {
                (_, Segment::Rest) => false,
                (Segment::Literal(mine), Segment::Literal(their)) => {
                    mine == their || (fold_case && mine.eq_ignore_ascii_case(their))
                }
                (Segment::Literal(_), _) => false,
                (_, Segment::Literal(their)) => !their.is_empty(),
                _ => true,
            };
            if !covered {
                return false;
            }
        }
        theirs.next().is_none()
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

    pub fn accepts(&self, method: &Method) -> bool {
        match self {
            MethodMatch::Any => true,
            MethodMatch::OneOf(methods) => methods.contains(method),
        }
    }

    /// Whether every method `other` accepts is accepted here too.
    fn covers(&self, other: &MethodMatch) -> bool {
        match (self, other) {
            (MethodMatch::Any, _) => true,
            (MethodMatch::OneOf(_), MethodMatch::Any) => false,
            (MethodMatch::OneOf(mine), MethodMatch::OneOf(theirs)) => theirs.iter().all(|m| mine.contains(m)),
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
    /// IDs and writes: translation for the shadow, learning, read-back.
    pub writes: Arc<WriteRules>,
    /// Methods besides the safe ones whose requests are reads (`reads`).
    pub reads: Vec<Method>,
    /// `graphql = true`: a request of a `reads` method is a read when its
    /// operation is a query (see [`access`]).
    pub graphql: bool,
}

/// What a route does about IDs and mirrored writes.
#[derive(Debug, Clone, Default)]
pub struct WriteRules {
    /// What is rewritten primary → shadow (`{param:kind}`, `translate`).
    pub translation: Translation,
    /// `learn_ids`: pairs from the two answers to one create.
    pub learn: Vec<LearnRule>,
    /// `verify`: both sides are read back after the write.
    pub verify: Option<RequestTemplate>,
    /// `on_primary_error = "mirror"`: a write the primary failed is still sent to the shadow.
    pub mirror_failed_writes: bool,
    /// The path template's parameters: (segment index, name, kind).
    pub params: Vec<(usize, String, Option<String>)>,
}

/// A request to build, e.g. `GET /api/task/{id}`: a write's read-back
/// (`[route.verify]`, where each `{name}` is the write's path parameter of
/// that name, or the ID it created of that kind) or a sweep's request.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    pub method: Method,
    pub text: String,
    pub segments: Vec<TemplateSegment>,
    /// The route the read-back falls under (its name and compare rules).
    pub route: String,
    pub rules: Arc<CompareRules>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSegment {
    Literal(String),
    Placeholder(String),
}

impl RequestTemplate {
    /// Parses `METHOD /path/{name}`; placeholders are resolved by the caller.
    pub fn parse(text: &str) -> Result<RequestTemplate, RouteError> {
        let (method, path) = text
            .split_once(' ')
            .filter(|(m, p)| !m.is_empty() && !p.is_empty() && !p.contains(' '))
            .ok_or_else(|| RouteError::Shape(text.to_string()))?;
        if !KNOWN_METHODS.contains(&method) {
            return Err(RouteError::UnknownMethod(method.to_string()));
        }
        let method =
            Method::from_bytes(method.as_bytes()).map_err(|_| RouteError::UnknownMethod(method.to_string()))?;
        let rest = path
            .strip_prefix('/')
            .ok_or_else(|| RouteError::NotAbsolute(path.to_string()))?;
        let mut segments = Vec::new();
        for part in rest.split('/') {
            segments.push(match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) if is_identifier(name) => TemplateSegment::Placeholder(name.to_string()),
                Some(_) => return Err(RouteError::BadParam(part.to_string())),
                None if part.contains(['*', '{', '}']) => return Err(RouteError::BadSegment(part.to_string())),
                None => TemplateSegment::Literal(part.to_string()),
            });
        }
        Ok(RequestTemplate {
            method,
            text: text.to_string(),
            segments,
            route: UNMATCHED_ROUTE.to_string(),
            rules: Arc::new(CompareRules::new()),
        })
    }

    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|segment| match segment {
            TemplateSegment::Placeholder(name) => Some(name.as_str()),
            TemplateSegment::Literal(_) => None,
        })
    }

    /// The path with each placeholder filled in; `None` if one has no value.
    pub fn path(&self, value_of: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        let mut path = String::new();
        for segment in &self.segments {
            path.push('/');
            match segment {
                TemplateSegment::Literal(text) => path.push_str(text),
                TemplateSegment::Placeholder(name) => {
                    path.push_str(&crate::idmap::encode_segment(&value_of(name)?));
                }
            }
        }
        Some(path)
    }
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
        let template = PathTemplate::parse(path)?;
        let translation = Translation {
            path: template.id_segments(),
            ..Translation::default()
        };
        let params = template
            .segments()
            .iter()
            .enumerate()
            .filter_map(|(index, segment)| match segment {
                Segment::Param { name, kind } => Some((index, name.clone(), kind.clone())),
                _ => None,
            })
            .collect();
        Ok(Route {
            name: name.to_string(),
            match_text: match_text.to_string(),
            methods: MethodMatch::parse(method)?,
            template,
            mirror,
            sample,
            sample_key,
            compare: Arc::new(CompareRules::new()),
            writes: Arc::new(WriteRules {
                translation,
                params,
                ..WriteRules::default()
            }),
            reads: Vec::new(),
            graphql: false,
        })
    }

    /// The entity a request is about, for ordering writes: the first
    /// `{param:kind}` as `kind:ID`, else the first `{param}` as `param:value`.
    /// `canonical` spells IDs the way the ID map keeps them.
    pub fn entity(&self, path: &str, canonical: &dyn Fn(&str) -> String) -> Option<String> {
        let params = self.template.params(path);
        if let Some((_, kind, value)) = params.iter().find(|(_, kind, _)| kind.is_some()) {
            return Some(format!("{}:{}", kind.unwrap_or_default(), canonical(value)));
        }
        params.first().map(|(name, _, value)| format!("{name}:{value}"))
    }

    pub fn matches(&self, method: &Method, path: &str) -> bool {
        self.methods.accepts(method) && self.template.matches(path)
    }
}

/// Routes in configuration order; the first match wins.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// `listen.case_insensitive_paths`: literal segments match in any ASCII case.
    fold_case: bool,
}

/// A route no request can reach, because an earlier one takes all its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    pub route: String,
    pub covered_by: String,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> RouteTable {
        RouteTable {
            routes,
            fold_case: false,
        }
    }

    /// Literal path segments match regardless of ASCII case.
    pub fn folding_case(mut self, fold_case: bool) -> RouteTable {
        self.fold_case = fold_case;
        self
    }

    /// The first route matching the request, judged on the path's canonical
    /// spelling ([`normalize::route_path`]), never on the raw one: a route
    /// cannot be stepped around by `//`, `/./`, `%63` or a trailing slash.
    pub fn find(&self, method: &Method, path: &str) -> Option<&Route> {
        let path = normalize::route_path(path, self.fold_case);
        self.routes
            .iter()
            .find(|route| route.methods.accepts(method) && route.template.matches_folding(&path, self.fold_case))
    }

    /// Routes that can never match: an earlier route accepts every method
    /// and every path they do.
    pub fn unreachable(&self) -> Vec<Unreachable> {
        let mut found = Vec::new();
        for (index, route) in self.routes.iter().enumerate() {
            let earlier = self.routes[..index].iter().find(|earlier| {
                earlier.methods.covers(&route.methods) && earlier.template.covers(&route.template, self.fold_case)
            });
            if let Some(earlier) = earlier {
                found.push(Unreachable {
                    route: route.name.clone(),
                    covered_by: earlier.name.clone(),
                });
            }
        }
        found
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
    fn path_variants_fall_in_the_route_their_canonical_path_does() {
        let table = RouteTable::new(vec![
            Route::new("charge", "POST /q/charge", MirrorPolicy::Off, 1.0, None).unwrap(),
            Route::new("rest", "* /**", MirrorPolicy::DualWrite, 1.0, None).unwrap(),
        ]);
        for variant in [
            "/q/charge/",
            "//q/charge",
            "/q/./charge",
            "/q/%63harge",
            "/q/x/../charge",
        ] {
            assert_eq!(table.find(&Method::POST, variant).unwrap().name, "charge", "{variant}");
        }
        assert_eq!(table.find(&Method::POST, "/Q/charge").unwrap().name, "rest");
        let folding = table.folding_case(true);
        assert_eq!(folding.find(&Method::POST, "/Q/Charge").unwrap().name, "charge");
    }

    #[test]
    fn a_route_behind_one_that_takes_all_its_requests_is_unreachable() {
        let table = RouteTable::new(vec![
            Route::new("task", "GET /api/task/{id}", MirrorPolicy::Compare, 1.0, None).unwrap(),
            Route::new("everything", "* /api/**", MirrorPolicy::Compare, 1.0, None).unwrap(),
            Route::new("one-task", "GET|HEAD /api/task/today", MirrorPolicy::Compare, 1.0, None).unwrap(),
            Route::new("task-get", "GET /api/task/today", MirrorPolicy::Compare, 1.0, None).unwrap(),
            Route::new("outside", "GET /health", MirrorPolicy::Compare, 1.0, None).unwrap(),
        ]);
        assert_eq!(
            table.unreachable(),
            [
                Unreachable {
                    route: "one-task".into(),
                    covered_by: "everything".into()
                },
                Unreachable {
                    route: "task-get".into(),
                    covered_by: "task".into()
                },
            ]
        );
    }

    #[test]
    fn a_request_names_its_entity_by_kind_first() {
        let same = |id: &str| id.to_ascii_lowercase();
        assert_eq!(
            route("PATCH /api/{list}/task/{id:tasks}/complete").entity("/api/l1/task/AB/complete", &same),
            Some("tasks:ab".into())
        );
        assert_eq!(
            route("PATCH /api/item/{sku}").entity("/api/item/S-1", &same),
            Some("sku:S-1".into())
        );
        assert_eq!(route("POST /api/task").entity("/api/task", &same), None);
    }

    #[test]
    fn verify_fills_placeholders_and_rejects_bad_shapes() {
        let verify = RequestTemplate::parse("GET /api/task/{id}").unwrap();
        assert_eq!(verify.placeholders().collect::<Vec<_>>(), ["id"]);
        assert_eq!(
            verify
                .path(&|name| (name == "id").then(|| "a b".to_string()))
                .as_deref(),
            Some("/api/task/a%20b")
        );
        assert_eq!(verify.path(&|_| None), None);
        assert_eq!(
            RequestTemplate::parse("GET /api/{1}").unwrap_err(),
            RouteError::BadParam("{1}".into())
        );
        assert_eq!(
            RequestTemplate::parse("FETCH /x").unwrap_err(),
            RouteError::UnknownMethod("FETCH".into())
        );
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
