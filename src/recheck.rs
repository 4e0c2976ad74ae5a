//! Recheck: a divergence group's stored sample requests that are reads,
//! sent to both sides again now and compared under the route's current
//! rules, so a fix can be shown without waiting for the same traffic to
//! come back (`cutover recheck`, `POST /api/divergences/{group}/recheck`).
//! When the group's difference is gone from every sample that could be
//! sent, the group can be marked `fixed`; one that diverges again later is
//! reopened by the store as a `regression`.
//!
//! A sample was stored redacted: a header whose value was redacted is not
//! sent (credentials come from each side's `replay_headers` and
//! `headers.set`), and a sample whose path or body lost a value to
//! redaction or clipping is not sent at all: what it would ask is not
//! what the client asked.
//!
//! Must never: send a write, mark a group fixed on a sample that diverges
//! or was not compared, or return a value that is not redacted.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Serialize;

use crate::compare::rules::CompareRules;
use crate::compare::{compare_responses, Context as CompareContext, Difference};
use crate::exchange::CapturedResponse;
use crate::headers::{HOP_BY_HOP, MARKERS, RECHECK_MARKER, REQUEST_ID, SHADOW_MARKER};
use crate::idmap::{IdMap, Side};
use crate::redact::{Redactor, REDACTED};
use crate::route::{is_safe, RouteTable};
use crate::secret::Secret;
use crate::store::{SampleRow, Store, StoreError};
use crate::upstream::{OutgoingBody, Upstream};

/// Request headers a recheck never copies from a sample: cutover frames
/// the request and names it afresh.
const NOT_RESENT: [&str; 5] = ["host", "content-length", "traceparent", "tracestate", REQUEST_ID];

#[derive(Debug, thiserror::Error)]
pub enum RecheckError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no divergence group {0} in the store (keys are in the report, `cutover diff` and GET /api/divergences)")]
    NoGroup(String),
    #[error(
        "group {0} has no stored samples (they are pruned after store.retention), so there is nothing to send again"
    )]
    NoSamples(String),
}

/// What one sample showed when asked again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleVerdict {
    /// Both sides answered alike.
    Match,
    /// The group's difference is gone; others (other groups) remain.
    OtherDifferences,
    /// The group's difference is still there.
    Diverges,
    /// Both answered but the bodies could not be compared.
    Incomparable,
    /// A side gave no complete answer.
    Failed,
    /// The sample cannot be sent again faithfully (a write, a redacted value, an unpaired ID).
    NotSent,
}

impl SampleVerdict {
    pub fn label(self) -> &'static str {
        match self {
            SampleVerdict::Match => "match",
            SampleVerdict::OtherDifferences => "other_differences",
            SampleVerdict::Diverges => "diverges",
            SampleVerdict::Incomparable => "incomparable",
            SampleVerdict::Failed => "failed",
            SampleVerdict::NotSent => "not_sent",
        }
    }

    /// Whether the group's difference was looked for and not found.
    fn clears_group(self) -> bool {
        matches!(self, SampleVerdict::Match | SampleVerdict::OtherDifferences)
    }

    /// Whether the sample stands in the way of calling the group fixed.
    fn blocks_fix(self) -> bool {
        matches!(
            self,
            SampleVerdict::Diverges | SampleVerdict::Incomparable | SampleVerdict::Failed
        )
    }
}

/// One sample, asked again.
#[derive(Debug, Clone, Serialize)]
pub struct SampleCheck {
    /// When the sample was first recorded.
    pub recorded_ms: i64,
    pub method: String,
    /// As stored (redacted).
    pub path: String,
    pub verdict: SampleVerdict,
    pub primary_status: Option<u16>,
    pub shadow_status: Option<u16>,
    /// What differs now, redacted.
    pub differences: Vec<Difference>,
    /// Why, for people: what differs, failed, or kept it from being sent.
    pub message: String,
}

/// A group's recheck.
#[derive(Debug, Clone, Serialize)]
pub struct RecheckReport {
    pub group: String,
    pub route: String,
    pub summary: String,
    /// The group's status after the recheck.
    pub status: String,
    pub samples: Vec<SampleCheck>,
    /// The group's difference is gone from every sample sent, and at
    /// least one was: it may be marked `fixed`.
    pub fixable: bool,
    pub marked_fixed: bool,
}

impl RecheckReport {
    /// How many samples had each verdict, in the order of [`SampleVerdict`].
    pub fn counts(&self) -> Vec<(&'static str, usize)> {
        let all = [
            SampleVerdict::Match,
            SampleVerdict::OtherDifferences,
            SampleVerdict::Diverges,
            SampleVerdict::Incomparable,
            SampleVerdict::Failed,
            SampleVerdict::NotSent,
        ];
        all.into_iter()
            .map(|verdict| {
                let n = self.samples.iter().filter(|s| s.verdict == verdict).count();
                (verdict.label(), n)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// The routes in force when a recheck runs (a reload may have changed them).
pub type RoutesNow = Arc<dyn Fn() -> Arc<RouteTable> + Send + Sync>;

/// What a recheck sends with and compares under.
pub struct Rechecker {
    pub primary: Upstream,
    pub shadow: Upstream,
    pub ids: Arc<IdMap>,
    pub routes: RoutesNow,
    /// `[primary] replay_headers`: credentials for requests cutover sends itself.
    pub primary_headers: Vec<(HeaderName, Secret)>,
    /// `[shadow] replay_headers`.
    pub shadow_headers: Vec<(HeaderName, Secret)>,
    pub redactor: Redactor,
    /// The most of an answer read (`mirror.max_body`).
    pub max_body: usize,
    /// `mirror.max_decoded`.
    pub decode_limit: usize,
}

/// A sample's request as it will be sent, in the serving side's IDs.
struct Resend {
    method: Method,
    path: String,
    headers: HeaderMap,
    served: Side,
}

impl Rechecker {
    /// Rechecks a group's samples; with `mark_fixed`, a fixable group is
    /// marked `fixed` (a triage event). A `recheck` event records the outcome.
    pub async fn recheck(
        &self,
        store: &Store,
        group: &str,
        mark_fixed: bool,
        now_ms: i64,
    ) -> Result<RecheckReport, RecheckError> {
        let (row, summary, _) = store
            .group(group)
            .await?
            .ok_or_else(|| RecheckError::NoGroup(group.to_string()))?;
        let samples = store.samples(group).await?;
        if samples.is_empty() {
            return Err(RecheckError::NoSamples(group.to_string()));
        }
        let mut checks = Vec::with_capacity(samples.len());
        for sample in &samples {
            checks.push(self.check(sample, group, &row.route).await);
        }
        let fixable = checks.iter().any(|c| c.verdict.clears_group()) && !checks.iter().any(|c| c.verdict.blocks_fix());
        let mut report = RecheckReport {
            group: group.to_string(),
            route: row.route,
            summary,
            status: row.status,
            samples: checks,
            fixable,
            marked_fixed: false,
        };
        if mark_fixed && fixable {
            let note = format!(
                "recheck: the difference is gone from {} of {} samples",
                report.samples.iter().filter(|c| c.verdict.clears_group()).count(),
                report.samples.len()
            );
            if store.triage(group, "fixed", Some(&note), now_ms).await? {
                report.marked_fixed = true;
                report.status = "fixed".to_string();
            }
        }
        let counts: serde_json::Map<String, serde_json::Value> = report
            .counts()
            .into_iter()
            .map(|(label, n)| (label.to_string(), n.into()))
            .collect();
        let detail = serde_json::json!({
            "group": group,
            "route": report.route,
            "samples": counts,
            "fixable": fixable,
            "marked_fixed": report.marked_fixed,
        });
        store.add_event("recheck", &detail, now_ms).await?;
        Ok(report)
    }

    /// One sample: rebuilt, sent to both sides, compared.
    async fn check(&self, sample: &SampleRow, group: &str, route_name: &str) -> SampleCheck {
        let method = sample.request["method"].as_str().unwrap_or_default().to_string();
        let path = sample.request["path"].as_str().unwrap_or_default().to_string();
        let mut check = SampleCheck {
            recorded_ms: sample.at_ms,
            method,
            path,
            verdict: SampleVerdict::NotSent,
            primary_status: None,
            shadow_status: None,
            differences: Vec::new(),
            message: String::new(),
        };
        let resend = match rebuild(sample) {
            Ok(resend) => resend,
            Err(why) => {
                check.message = why;
                return check;
            }
        };
        let routes = (self.routes)();
        let route = routes.find(&resend.method, &resend.path);
        let rules = route.map_or_else(|| Arc::new(CompareRules::new()), |route| Arc::clone(&route.compare));
        let to = resend.served.other();
        let translated = route.map(|route| route.writes.translation.to_side(&self.ids, to, &resend.path, &[]));
        let translated = translated.unwrap_or_default();
        if let Some((kind, id)) = translated.unmapped.first() {
            check.message = format!("{kind} ID {id} has no pair in the ID map, so the other side cannot be asked");
            return check;
        }
        let other_path = translated.path_and_query.unwrap_or_else(|| resend.path.clone());
        let (primary_path, shadow_path) = match resend.served {
            Side::Primary => (resend.path.clone(), other_path),
            Side::Shadow => (other_path, resend.path.clone()),
        };
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut headers = resend.headers;
        headers.insert(RECHECK_MARKER, HeaderValue::from_static("1"));
        if let Ok(id) = HeaderValue::from_str(&request_id) {
            headers.insert(REQUEST_ID, id);
        }
        let mut shadow_headers = headers.clone();
        shadow_headers.insert(SHADOW_MARKER, HeaderValue::from_static("1"));
        let mut primary_headers = headers;
        for (name, value) in &self.primary_headers {
            set_secret(&mut primary_headers, name, value);
        }
        for (name, value) in &self.shadow_headers {
            set_secret(&mut shadow_headers, name, value);
        }
        let (primary, shadow) = tokio::join!(
            self.ask(&self.primary, &resend.method, &primary_path, primary_headers),
            self.ask(&self.shadow, &resend.method, &shadow_path, shadow_headers),
        );
        check.primary_status = primary.as_ref().ok().map(|answer| answer.status.as_u16());
        check.shadow_status = shadow.as_ref().ok().map(|answer| answer.status.as_u16());
        let (primary, shadow) = match (primary, shadow) {
            (Ok(primary), Ok(shadow)) => (primary, shadow),
            (primary, shadow) => {
                let failures: Vec<String> = [primary.err(), shadow.err()].into_iter().flatten().collect();
                check.verdict = SampleVerdict::Failed;
                check.message = self.redactor.scrub(failures.join("; "));
                return check;
            }
        };
        let route_label = route.map_or(route_name, |route| route.name.as_str());
        let ctx = CompareContext {
            route: route_label,
            method: &resend.method,
            rules: &rules,
            ids: &*self.ids,
            decode_limit: self.decode_limit,
            want_patch: false,
            bodies_equal: false,
        };
        let comparison = compare_responses(&ctx, &primary, &shadow);
        check.differences = comparison
            .differences
            .iter()
            .map(|difference| self.redactor.difference(difference))
            .collect();
        let in_group = comparison.differences.iter().any(|d| d.group_key == group);
        (check.verdict, check.message) = if let Some(reason) = &comparison.incomparable {
            (
                SampleVerdict::Incomparable,
                format!("the bodies cannot be compared: {reason}"),
            )
        } else if in_group {
            (
                SampleVerdict::Diverges,
                "the group's difference is still there".to_string(),
            )
        } else if comparison.is_match() {
            (SampleVerdict::Match, "both sides answer alike".to_string())
        } else {
            (
                SampleVerdict::OtherDifferences,
                format!(
                    "the group's difference is gone; {} other difference(s) remain",
                    comparison.differences.len() + comparison.truncated
                ),
            )
        };
        check
    }

    /// Sends a read to one side and reads its answer whole (up to `max_body`).
    async fn ask(
        &self,
        upstream: &Upstream,
        method: &Method,
        path: &str,
        headers: HeaderMap,
    ) -> Result<CapturedResponse, String> {
        let started = Instant::now();
        let name = upstream.name();
        let response = upstream
            .send(method.clone(), path, headers, OutgoingBody::from(Bytes::new()))
            .await
            .map_err(|failure| format!("{name}: {}", failure.message))?;
        let (head, body) = response.into_parts();
        match body.collect_up_to(self.max_body).await {
            Ok((body, false)) => Ok(CapturedResponse {
                status: head.status,
                headers: head.headers,
                body,
                elapsed: started.elapsed(),
            }),
            Ok((_, true)) => Err(format!("{name}: the answer is larger than mirror.max_body")),
            Err(failure) => Err(format!("{name}: {}", failure.message)),
        }
    }
}

fn set_secret(headers: &mut HeaderMap, name: &HeaderName, value: &Secret) {
    if let Ok(mut value) = HeaderValue::from_str(value.expose()) {
        value.set_sensitive(true);
        headers.insert(name.clone(), value);
    }
}

/// A sample's request as it can be sent again, or why it cannot.
fn rebuild(sample: &SampleRow) -> Result<Resend, String> {
    let request = &sample.request;
    let method = request["method"]
        .as_str()
        .and_then(|method| Method::from_bytes(method.as_bytes()).ok())
        .ok_or("the sample's request has no readable method")?;
    if !is_safe(&method) {
        return Err(format!("a {method} is a write: a recheck sends reads only"));
    }
    let path = request["path"].as_str().ok_or("the sample's request has no path")?;
    if path.contains(REDACTED) {
        return Err("its path held a secret, which was redacted when it was kept".to_string());
    }
    if !request["body"].as_str().unwrap_or_default().is_empty() {
        return Err("its body was kept only as a redacted excerpt".to_string());
    }
    let mut headers = HeaderMap::new();
    if let Some(kept) = request["headers"].as_object() {
        for (name, value) in kept {
            let Some(value) = value.as_str() else { continue };
            let lower = name.to_ascii_lowercase();
            let skipped = value == REDACTED
                || HOP_BY_HOP.contains(&lower.as_str())
                || MARKERS.contains(&lower.as_str())
                || NOT_RESENT.contains(&lower.as_str());
            if skipped {
                continue;
            }
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                headers.insert(name, value);
            }
        }
    }
    let served = match sample.served.as_deref() {
        Some("shadow") => Side::Shadow,
        _ => Side::Primary,
    };
    Ok(Resend {
        method,
        path: path.to_string(),
        headers,
        served,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(request: serde_json::Value, served: Option<&str>) -> SampleRow {
        SampleRow {
            at_ms: 1,
            differences: serde_json::Value::Null,
            unified_diff: None,
            request,
            primary_excerpt: None,
            shadow_excerpt: None,
            trace_id: None,
            served: served.map(str::to_string),
        }
    }

    #[test]
    fn a_read_is_rebuilt_without_redacted_framing_or_marker_headers() {
        let kept = sample(
            serde_json::json!({
                "method": "GET",
                "path": "/tasks/7?view=full",
                "headers": {
                    "accept": "application/json",
                    "authorization": REDACTED,
                    "host": "api.example",
                    "connection": "keep-alive",
                    "x-cutover-shadow": "1",
                    "x-request-id": "old",
                    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                },
                "body": ""
            }),
            Some("shadow"),
        );
        let resend = rebuild(&kept).unwrap();
        assert_eq!(resend.method, Method::GET);
        assert_eq!(resend.path, "/tasks/7?view=full");
        assert_eq!(resend.served, Side::Shadow);
        let names: Vec<&str> = resend.headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept"]);
    }

    #[test]
    fn writes_redacted_paths_and_kept_bodies_are_not_sent() {
        let refused = |request: serde_json::Value| rebuild(&sample(request, None)).err().unwrap();
        assert!(refused(serde_json::json!({"method": "POST", "path": "/tasks", "body": ""})).contains("write"));
        let redacted = format!("/tasks?token={REDACTED}");
        assert!(refused(serde_json::json!({"method": "GET", "path": redacted, "body": ""})).contains("redacted"));
        assert!(refused(serde_json::json!({"method": "GET", "path": "/q", "body": "{\"a\":1}"})).contains("body"));
        assert!(refused(serde_json::json!({"path": "/q"})).contains("method"));
    }

    #[test]
    fn a_sample_without_its_exchange_was_served_by_the_primary() {
        let resend = rebuild(&sample(serde_json::json!({"method": "GET", "path": "/a"}), None)).unwrap();
        assert_eq!(resend.served, Side::Primary);
    }

    #[test]
    fn only_a_group_cleared_and_never_contradicted_is_fixable() {
        assert!(SampleVerdict::Match.clears_group() && SampleVerdict::OtherDifferences.clears_group());
        for blocking in [
            SampleVerdict::Diverges,
            SampleVerdict::Incomparable,
            SampleVerdict::Failed,
        ] {
            assert!(blocking.blocks_fix() && !blocking.clears_group());
        }
        assert!(!SampleVerdict::NotSent.blocks_fix() && !SampleVerdict::NotSent.clears_group());
    }
}
