//! Read-back after a write: a route's `verify` template, filled from the
//! write's values, is sent to both sides (the shadow's IDs through the ID
//! map) and compared as an exchange with source `verify`.
//!
//! Must never: send a read-back the ID map cannot translate (it is counted
//! as `unmapped_id` instead), or run it before the lanes of writes in
//! flight are clear (a difference that overlapped a write is racy).

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue};

use super::Mirror;
use crate::exchange::{method_label, CapturedRequest, Outcome, SkipReason, Source};
use crate::idmap::Side;
use crate::record::{Exchange, Resend};
use crate::route::{RequestTemplate, WriteRules};

impl Mirror {
    /// The values a read-back's placeholders stand for: (name, kind, primary value).
    pub(super) fn verify_values(
        &self,
        writes: &WriteRules,
        request: &CapturedRequest,
        created: &[(String, Vec<String>)],
    ) -> Vec<(String, Option<String>, String)> {
        let Some(verify) = &writes.verify else {
            return Vec::new();
        };
        let path = request.path_and_query.split('?').next().unwrap_or_default();
        let mut values = Vec::new();
        for name in verify.placeholders() {
            let from_path = writes
                .params
                .iter()
                .find(|(_, param, _)| param == name)
                .and_then(|(index, _, kind)| {
                    let raw = path.split('/').nth(index + 1)?;
                    let value = percent_encoding::percent_decode_str(raw)
                        .decode_utf8_lossy()
                        .into_owned();
                    Some((kind.clone(), value))
                });
            let from_created = created
                .iter()
                .find(|(kind, _)| kind == name)
                .and_then(|(kind, ids)| Some((Some(kind.clone()), ids.first()?.clone())));
            if let Some((kind, value)) = from_path.or(from_created) {
                values.push((name.to_string(), kind, value));
            }
        }
        values
    }

    /// Reads both sides back after a write and compares them as an exchange with source `verify`.
    pub(super) async fn verify(
        self: Arc<Self>,
        verify: RequestTemplate,
        values: Vec<(String, Option<String>, String)>,
        request_id: String,
    ) {
        let Some((primary_path, shadow_path)) = self.verify_paths(&verify, &values) else {
            return;
        };
        let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
            self.skip_verify(&verify, SkipReason::QueueFull);
            return;
        };
        let ticket = super::Ticket::new(permit, &self.metrics);
        let mut headers = HeaderMap::new();
        if let Ok(id) = HeaderValue::from_str(&request_id) {
            headers.insert(crate::headers::REQUEST_ID, id);
        }
        let request = |path: String| CapturedRequest {
            method: verify.method.clone(),
            path_and_query: path,
            headers: headers.clone(),
            body: bytes::Bytes::new(),
        };
        let mut shadow_headers = headers.clone();
        shadow_headers.insert(crate::headers::SHADOW_MARKER, HeaderValue::from_static("1"));
        // A read-back is a read: it waits for the writes in flight (the
        // client may already be updating what it created) and a difference
        // that overlapped a write is racy, as for any mirrored read.
        let scope = super::lanes::Scope::Everything;
        let clear = self.lanes.pending(&scope) == 0 || self.lanes.wait_clear(&scope, self.config.write_wait).await;
        let writes_started = self.lanes.started();
        let started_at = SystemTime::now();
        let primary_request = request(primary_path);
        let shadow_request = request(shadow_path);
        let resend = Resend::if_rechecked(
            &verify.rules,
            (&primary_request, &headers),
            (&shadow_request, &shadow_headers),
        );
        let ((primary, held_p), (shadow, held_s)) = tokio::join!(
            self.call(Side::Primary, &primary_request, headers.clone()),
            self.call(Side::Shadow, &shadow_request, shadow_headers),
        );
        let mut reservation = held_p;
        reservation.absorb(held_s);
        let exchange = Exchange {
            request_id,
            route: verify.route.clone(),
            started_at,
            request: primary_request,
            primary,
            shadow,
            shadow_repeat: None,
            rules: Arc::clone(&verify.rules),
            write_epoch: 0,
            reservation,
            source: Source::Verify,
            unmapped: Vec::new(),
            racy: !clear || self.lanes.started() != writes_started,
            write: None,
            served: None,
            resend,
        };
        self.hand_to_workers(exchange, ticket);
    }

    /// The read-back's path on each side: the primary's from the values the
    /// write produced, the shadow's through the ID map. `None` when a value
    /// is missing, or (counted as `unmapped_id`) has no shadow ID.
    fn verify_paths(
        &self,
        verify: &RequestTemplate,
        values: &[(String, Option<String>, String)],
    ) -> Option<(String, String)> {
        let value = |name: &str| values.iter().find(|(n, _, _)| n == name);
        let primary_path = verify.path(&|name| value(name).map(|(_, _, v)| v.clone()))?;
        let shadow_path = verify.path(&|name| {
            let (_, kind, primary) = value(name)?;
            match kind {
                Some(kind) => self.ids.lookup(kind, primary),
                None => Some(primary.clone()),
            }
        });
        match shadow_path {
            Some(shadow_path) => Some((primary_path, shadow_path)),
            None => {
                self.skip_verify(verify, SkipReason::UnmappedId);
                None
            }
        }
    }

    fn skip_verify(&self, verify: &RequestTemplate, reason: SkipReason) {
        self.metrics
            .record_outcome(&verify.route, method_label(&verify.method), Outcome::Skipped(reason));
    }
}
