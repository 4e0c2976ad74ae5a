//! `[[route]]` and `[idmap]`: which requests are which, how each is
//! mirrored, and where ID pairs come from.
//!
//! Must never: accept two routes with one name, the reserved name
//! `unmatched`, or write rules on a route that does not dual-write.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::HeaderName;
use serde::Deserialize;

use super::compare::RawCompare;
use super::context::{id_kind, is_label_char, Ctx};
use super::ConfigError;
use crate::compare::rules::CompareRules;
use crate::idmap::IdMapConfig;
use crate::route::{MirrorPolicy, Route, RouteError, RouteTable, SampleKey};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    name: String,
    #[serde(rename = "match")]
    match_: String,
    #[serde(default = "default_route_mirror")]
    mirror: String,
    #[serde(default = "default_sample")]
    sample: f64,
    sample_key: Option<String>,
    #[serde(default)]
    compare: RawCompare,
    #[serde(default)]
    learn_ids: Vec<RawLearn>,
    #[serde(default)]
    translate: RawTranslate,
    verify: Option<String>,
    on_primary_error: Option<String>,
    rollout: Option<super::rollout::RawRollout>,
    /// Methods besides the safe ones whose requests are reads.
    #[serde(default)]
    reads: Vec<String>,
    #[serde(default)]
    graphql: bool,
}

impl RawRoute {
    /// The route's `[route.rollout]`, taken out (it belongs to the switch, not the route).
    pub(super) fn take_rollout(&mut self) -> Option<(String, super::rollout::RawRollout)> {
        self.rollout.take().map(|rollout| (self.name.clone(), rollout))
    }
}

/// One `learn_ids` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLearn {
    kind: String,
    primary: String,
    shadow: String,
}

/// `[route.translate]`: request IDs rewritten for the shadow, besides `{param:kind}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTranslate {
    #[serde(default)]
    query: BTreeMap<String, String>,
    #[serde(default)]
    body: BTreeMap<String, String>,
}

fn default_route_mirror() -> String {
    "compare".into()
}
fn default_sample() -> f64 {
    1.0
}

/// `[idmap]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdMap {
    #[serde(default)]
    import: Vec<PathBuf>,
    canonical: Option<String>,
}

impl Ctx<'_> {
    pub(super) fn routes(&self, raws: Vec<RawRoute>) -> Result<RouteTable, ConfigError> {
        let mut seen = HashSet::new();
        let mut routes = Vec::with_capacity(raws.len());
        for (index, mut raw) in raws.into_iter().enumerate() {
            if raw.name.is_empty() || !raw.name.chars().all(is_label_char) {
                return Err(self.invalid(
                    format!("route[{index}].name"),
                    format!(
                        "expected a name of letters, digits, '-', '_' or '.', got \"{}\"",
                        raw.name
                    ),
                ));
            }
            let key = |field: &str| format!("route \"{}\": {field}", raw.name);
            if raw.name == crate::route::UNMATCHED_ROUTE {
                return Err(self.invalid(key("name"), "\"unmatched\" is reserved for requests no route matches"));
            }
            if !seen.insert(raw.name.clone()) {
                return Err(self.invalid(key("name"), "another route has the same name"));
            }
            let mirror = match raw.mirror.as_str() {
                "compare" => MirrorPolicy::Compare,
                "dual-write" => MirrorPolicy::DualWrite,
                "off" => MirrorPolicy::Off,
                other => {
                    return Err(self.invalid(
                        key("mirror"),
                        format!("expected \"compare\", \"dual-write\" or \"off\", got \"{other}\""),
                    ))
                }
            };
            if !(0.0..=1.0).contains(&raw.sample) || raw.sample.is_nan() {
                return Err(self.invalid(
                    key("sample"),
                    format!("expected a fraction from 0.0 to 1.0, got {}", raw.sample),
                ));
            }
            let sample_key = match raw.sample_key.as_deref() {
                None => None,
                Some("client-ip") => Some(SampleKey::ClientIp),
                Some(text) => match text.strip_prefix("header:") {
                    Some(name) => Some(SampleKey::Header(HeaderName::from_bytes(name.as_bytes()).map_err(
                        |_| self.invalid(key("sample_key"), format!("not a valid header name: \"{name}\"")),
                    )?)),
                    None => {
                        return Err(self.invalid(
                            key("sample_key"),
                            format!("expected \"client-ip\" or \"header:NAME\", got \"{text}\""),
                        ))
                    }
                },
            };
            let mut route = Route::new(&raw.name, &raw.match_, mirror, raw.sample, sample_key)
                .map_err(|err: RouteError| self.invalid(key("match"), err.to_string()))?;
            let graphql_key = key("graphql");
            self.reads(&mut route, &raw)?;
            self.write_rules(&mut route, &mut raw)?;
            let mut compare = self.compare(&raw.name, raw.compare)?;
            if route.graphql {
                graphql_rules(&mut compare).map_err(|message| self.invalid(graphql_key, message))?;
            }
            route.compare = Arc::new(compare);
            routes.push(route);
        }
        // A read-back is compared under the route its request falls in.
        let table = RouteTable::new(routes.clone());
        for route in &mut routes {
            if let Some(verify) = &route.writes.verify {
                let probe = verify.path(&|_| Some("id".to_string())).unwrap_or_default();
                let (name, rules) = match table.find(&verify.method, &probe) {
                    Some(found) => (found.name.clone(), Arc::clone(&found.compare)),
                    None => (crate::route::UNMATCHED_ROUTE.to_string(), Arc::new(CompareRules::new())),
                };
                let writes = Arc::make_mut(&mut route.writes);
                if let Some(verify) = writes.verify.as_mut() {
                    verify.route = name;
                    verify.rules = rules;
                }
            }
        }
        Ok(RouteTable::new(routes))
    }

    /// `reads` and `graphql`: which methods besides the safe ones are reads
    /// (on a GraphQL route, by the operation in the body).
    fn reads(&self, route: &mut Route, raw: &RawRoute) -> Result<(), ConfigError> {
        let key = |field: &str| format!("route \"{}\": {field}", raw.name);
        for (index, text) in raw.reads.iter().enumerate() {
            let method = http::Method::from_bytes(text.as_bytes()).unwrap_or_default();
            let takes = [
                http::Method::POST,
                http::Method::PUT,
                http::Method::PATCH,
                http::Method::DELETE,
            ];
            if !takes.contains(&method) || method.as_str() != text {
                let why = if crate::route::is_safe(&method) && method.as_str() == text {
                    format!("{text} is always a read; list only methods that are otherwise writes")
                } else {
                    format!("expected POST, PUT, PATCH or DELETE, got \"{text}\"")
                };
                return Err(self.invalid(key(&format!("reads[{index}]")), why));
            }
            if !route.methods.accepts(&method) {
                return Err(self.invalid(
                    key(&format!("reads[{index}]")),
                    format!("the route's match \"{}\" never takes a {method}", route.match_text),
                ));
            }
            if !route.reads.contains(&method) {
                route.reads.push(method);
            }
        }
        route.graphql = raw.graphql;
        if raw.graphql && route.reads.is_empty() {
            if !route.methods.accepts(&http::Method::POST) {
                return Err(self.invalid(
                    key("graphql"),
                    format!(
                        "GraphQL operations come as POST, which \"{}\" never takes; list the method in reads",
                        route.match_text
                    ),
                ));
            }
            route.reads.push(http::Method::POST);
        }
        Ok(())
    }

    /// A route's ID and write rules: `learn_ids`, `translate`, `verify`, `on_primary_error`.
    fn write_rules(&self, route: &mut Route, raw: &mut RawRoute) -> Result<(), ConfigError> {
        let name = raw.name.clone();
        let invalid = |key: String, message: String| self.invalid(format!("route \"{name}\": {key}"), message);
        let check_kind = |key: &str, kind: &str| id_kind(kind).map_err(|message| invalid(key.to_string(), message));
        let mut rules = (*route.writes).clone();
        for (index, learn) in raw.learn_ids.iter().enumerate() {
            let key = format!("learn_ids[{index}]");
            check_kind(&format!("{key}.kind"), &learn.kind)?;
            rules.learn.push(
                crate::idmap::LearnRule::new(&learn.kind, &learn.primary, &learn.shadow)
                    .map_err(|err| invalid(key, err.to_string()))?,
            );
        }
        for (param, kind) in &raw.translate.query {
            check_kind(&format!("translate.query.\"{param}\""), kind)?;
            rules.translation.query.push((param.clone(), kind.clone()));
        }
        for (pointer, kind) in &raw.translate.body {
            let key = format!("translate.body.\"{pointer}\"");
            check_kind(&key, kind)?;
            let pattern =
                crate::compare::pointer::Pattern::parse(pointer).map_err(|err| invalid(key, err.to_string()))?;
            rules.translation.body.push(pattern, kind.clone());
        }
        rules.mirror_failed_writes = match raw.on_primary_error.as_deref() {
            None | Some("skip") => false,
            Some("mirror") => true,
            Some(other) => {
                return Err(invalid(
                    "on_primary_error".into(),
                    format!("expected \"skip\" or \"mirror\", got \"{other}\""),
                ))
            }
        };
        if let Some(text) = raw.verify.take() {
            let verify =
                crate::route::RequestTemplate::parse(&text).map_err(|err| invalid("verify".into(), err.to_string()))?;
            for placeholder in verify.placeholders() {
                let is_param = route.template.has_param(placeholder);
                let is_learned = rules.learn.iter().any(|learn| learn.kind == placeholder);
                if !is_param && !is_learned {
                    return Err(invalid(
                        "verify".into(),
                        format!(
                            "{{{placeholder}}} is neither a parameter of \"{}\" nor a learn_ids kind",
                            route.match_text
                        ),
                    ));
                }
            }
            rules.verify = Some(verify);
        }
        if raw.mirror != "dual-write" && (rules.verify.is_some() || !rules.learn.is_empty()) {
            return Err(invalid(
                "mirror".into(),
                "learn_ids and verify act on mirrored writes: set mirror = \"dual-write\"".into(),
            ));
        }
        route.writes = Arc::new(rules);
        Ok(())
    }

    pub(super) fn idmap(&self, raw: RawIdMap) -> Result<IdMapConfig, ConfigError> {
        let canonical = match raw.canonical.as_deref() {
            None | Some("as-is") => crate::idmap::Canonical::AsIs,
            Some("uuid") => crate::idmap::Canonical::Uuid,
            Some(other) => {
                return Err(self.invalid(
                    "idmap.canonical",
                    format!("expected \"uuid\" or \"as-is\", got \"{other}\""),
                ))
            }
        };
        let folder = Path::new(self.file).parent().unwrap_or(Path::new(""));
        let mut import = Vec::with_capacity(raw.import.len());
        for (index, path) in raw.import.into_iter().enumerate() {
            let resolved = if path.is_absolute() { path } else { folder.join(path) };
            if !resolved.is_file() {
                return Err(self.invalid(
                    format!("idmap.import[{index}]"),
                    format!("no such file: {}", resolved.display()),
                ));
            }
            import.push(resolved);
        }
        Ok(IdMapConfig { import, canonical })
    }
}

/// What a GraphQL route compares besides its own rules: a difference in
/// the top-level `errors` is high severity (after any severity the route
/// sets), never learned as noise, and never an extra field tolerated.
fn graphql_rules(rules: &mut CompareRules) -> Result<(), String> {
    let errors = "/errors/**";
    let added = rules
        .add(
            "graphql",
            errors,
            crate::compare::rules::Rule::Severity(crate::exchange::Severity::High),
        )
        .and_then(|()| rules.add_not_noise("graphql", errors));
    added.map_err(|err| err.to_string())?;
    rules.graphql = true;
    Ok(())
}
