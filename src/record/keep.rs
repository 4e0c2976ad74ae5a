//! What is kept of a judged exchange: its row with the divergence groups
//! its differences count in, and, for groups that still want one, a
//! redacted sample (differences, unified diff, body excerpts, request).
//!
//! Must never: keep a value at a secret place, a value cutover sent as a
//! secret (wherever a backend echoes it), or a body past its excerpt limit.

use http::HeaderMap;

use super::{cache_status, millis_of, skip_reason, status_of, Exchange, Recorder};
use crate::compare;
use crate::exchange::{method_label, Outcome, Side, SideResult};
use crate::store::{ExchangeRecord, GroupRef, SampleRecord};

/// Longest body excerpt kept in a sample.
const EXCERPT_LIMIT: usize = 4096;
/// Longest unified diff kept in a sample.
const DIFF_LIMIT: usize = 64 * 1024;

impl Recorder {
    /// Keeps an exchange: its row, and the groups its differences counted in.
    pub(super) fn keep(&self, exchange: &Exchange, judgement: &compare::Judgement) {
        let method = method_label(&exchange.request.method);
        let mut groups: Vec<GroupRef> = Vec::new();
        // Only a divergence counts in groups: the differences of a racy,
        // transient or unmapped exchange are timing or a missing pair, not evidence.
        let counted = judgement
            .comparison
            .iter()
            .filter(|_| judgement.outcome == Outcome::Diverged);
        for difference in counted.flat_map(|c| c.differences.iter()) {
            if groups.iter().any(|g| g.key == difference.group_key) {
                continue;
            }
            let place = if difference.pattern.is_empty() {
                difference.location.label().to_string()
            } else {
                difference.pattern.clone()
            };
            groups.push(GroupRef {
                key: difference.group_key.clone(),
                route: exchange.route.clone(),
                method: method.to_string(),
                location: difference.location.label().to_string(),
                pattern: difference.pattern.clone(),
                kind: difference.kind.label().to_string(),
                severity: difference.severity.label().to_string(),
                summary: format!("{} at {place}", difference.kind.label()),
            });
        }
        let samples = self.samples_for(exchange, judgement, &groups);
        self.writer.submit(ExchangeRecord {
            at_ms: crate::clock::unix_ms(exchange.started_at),
            request_id: exchange.request_id.clone(),
            route: exchange.route.clone(),
            method: method.to_string(),
            path: self.redactor.path(&exchange.request.path_and_query),
            source: exchange.source.label().into(),
            primary_status: status_of(&exchange.primary),
            shadow_status: status_of(&exchange.shadow),
            primary_ms: millis_of(&exchange.primary),
            shadow_ms: millis_of(&exchange.shadow),
            outcome: judgement.outcome.label().into(),
            reason: skip_reason(judgement.outcome),
            primary_cache: cache_status(&exchange.primary),
            shadow_cache: cache_status(&exchange.shadow),
            groups,
            samples,
            learned_ids: exchange.write.as_ref().map(|w| w.learned.clone()).unwrap_or_default(),
            ledger: exchange.write.as_ref().map(|w| w.ledger.clone()),
            served: exchange.served.map(Side::label).unwrap_or_default().into(),
        });
    }

    /// Samples for the groups that still want one: the exchange's
    /// differences, a unified diff and excerpts of both bodies, and the
    /// request, all redacted.
    fn samples_for(
        &self,
        exchange: &Exchange,
        judgement: &compare::Judgement,
        groups: &[GroupRef],
    ) -> Vec<SampleRecord> {
        let (Some(comparison), SideResult::Complete(primary), SideResult::Complete(shadow)) =
            (&judgement.comparison, &exchange.primary, &exchange.shadow)
        else {
            return Vec::new();
        };
        // A match counts in no group: no lock is taken for it.
        if groups.is_empty() {
            return Vec::new();
        }
        let wanted: Vec<&GroupRef> = {
            let mut sampled = self.sampled.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            groups
                .iter()
                .filter(|group| {
                    let taken = sampled.entry(group.key.clone()).or_insert(0);
                    let wants = *taken < self.samples_per_group;
                    *taken += u32::from(wants);
                    wants
                })
                .collect()
        };
        if wanted.is_empty() {
            return Vec::new();
        }
        let differences: Vec<compare::Difference> = comparison
            .differences
            .iter()
            .map(|difference| self.redactor.difference(difference))
            .collect();
        // A backend may echo what cutover set on its request: scrubbed
        // before the diff and the clipping, so no part of it survives.
        let differences = self
            .redactor
            .scrub(serde_json::to_string(&differences).unwrap_or_default());
        let primary_text = self.redactor.scrub(self.render(&primary.headers, &primary.body));
        let shadow_text = self.redactor.scrub(self.render(&shadow.headers, &shadow.body));
        let unified = similar::TextDiff::configure()
            .timeout(compare::LINE_DIFF_DEADLINE)
            .diff_lines(&primary_text, &shadow_text)
            .unified_diff()
            .context_radius(3)
            .header("primary", "shadow")
            .to_string();
        let trace_id = crate::trace::trace_id(&exchange.request.headers);
        let request_body = self
            .redactor
            .scrub(self.render(&exchange.request.headers, &exchange.request.body));
        let request = self.redactor.scrub(
            serde_json::json!({
                "method": exchange.request.method.as_str(),
                "path": self.redactor.path(&exchange.request.path_and_query),
                "headers": self.redactor.headers(&exchange.request.headers),
                "body": clip(&request_body, EXCERPT_LIMIT),
            })
            .to_string(),
        );
        wanted
            .into_iter()
            .map(|group| SampleRecord {
                group_key: group.key.clone(),
                differences: differences.clone(),
                unified_diff: Some(clip(&unified, DIFF_LIMIT)),
                request: request.clone(),
                primary_excerpt: Some(clip(&primary_text, EXCERPT_LIMIT)),
                shadow_excerpt: Some(clip(&shadow_text, EXCERPT_LIMIT)),
                trace_id: trace_id.clone(),
            })
            .collect()
    }

    /// A body as a person reads it, redacted: pretty JSON with secret fields
    /// replaced, form fields like query parameters, text as is.
    fn render(&self, headers: &HeaderMap, body: &bytes::Bytes) -> String {
        use compare::decode::{decode, media_type, Body};
        match decode(headers, body, self.decode_limit) {
            Ok(Body::Json(value)) => serde_json::to_string_pretty(&self.redactor.json(value)).unwrap_or_default(),
            Ok(Body::Text(text)) => {
                let content_type = headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("");
                if media_type(content_type).0 == "application/x-www-form-urlencoded" {
                    self.redactor.form(&text)
                } else {
                    text
                }
            }
            Ok(Body::Binary(bytes)) => format!("({} bytes, binary)", bytes.len()),
            Ok(Body::Empty) => String::new(),
            Err(err) => format!("(not decodable: {err})"),
        }
    }
}

fn clip(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n… ({} more bytes)", &text[..end], text.len() - end)
}
