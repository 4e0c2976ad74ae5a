//! Comparison: judges one exchange into an outcome.
//!
//! Errors are classified first (no answer or a 5xx on either side), then
//! bodies that could not be captured, then the answers themselves: status
//! codes and body bytes.
//!
//! Must never: do I/O, await anything, or panic on any input.

use crate::exchange::{CapturedResponse, Exchange, Outcome, SideResult, SkipReason};

/// The judgement of one exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    /// For a divergence: what differs, in a line (no body content).
    pub detail: Option<String>,
}

impl Verdict {
    fn of(outcome: Outcome) -> Verdict {
        Verdict { outcome, detail: None }
    }
}

/// Judges an exchange: errors first, then what could not be captured, then
/// the two answers.
pub fn judge(exchange: &Exchange) -> Verdict {
    let (primary, shadow) = (&exchange.primary, &exchange.shadow);
    if matches!(primary, SideResult::Abandoned) {
        return Verdict::of(Outcome::Skipped(SkipReason::ClientDisconnected));
    }
    match (primary.is_error(), shadow.is_error()) {
        (true, true) => return Verdict::of(Outcome::BothError),
        (true, false) => return Verdict::of(Outcome::PrimaryError),
        (false, true) => return Verdict::of(Outcome::ShadowError),
        (false, false) => {}
    }
    match (primary, shadow) {
        (SideResult::Complete(primary), SideResult::Complete(shadow)) => compare_answers(primary, shadow),
        (SideResult::Uncaptured { reason, .. }, _) | (_, SideResult::Uncaptured { reason, .. }) => {
            Verdict::of(Outcome::Skipped(*reason))
        }
        // Failed sides are errors and Abandoned primaries are handled above;
        // an abandoned shadow only happens when its task was cut off.
        _ => Verdict::of(Outcome::Skipped(SkipReason::ClientDisconnected)),
    }
}

fn compare_answers(primary: &CapturedResponse, shadow: &CapturedResponse) -> Verdict {
    if primary.status != shadow.status {
        return Verdict {
            outcome: Outcome::Diverged,
            detail: Some(format!(
                "status {} on the primary, {} on the shadow",
                primary.status.as_u16(),
                shadow.status.as_u16()
            )),
        };
    }
    if primary.body != shadow.body {
        return Verdict {
            outcome: Outcome::Diverged,
            detail: Some(format!(
                "bodies differ ({} bytes on the primary, {} on the shadow)",
                primary.body.len(),
                shadow.body.len()
            )),
        };
    }
    Verdict::of(Outcome::Match)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;
    use http::{HeaderMap, Method, StatusCode};

    use super::*;
    use crate::exchange::{CapturedRequest, FailureKind};
    use crate::mirror::{MemoryBudget, Reservation};

    fn answer(status: u16, body: &'static str) -> SideResult {
        SideResult::Complete(CapturedResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
            elapsed: Duration::from_millis(1),
        })
    }

    fn failed() -> SideResult {
        SideResult::Failed {
            kind: FailureKind::Connect,
            message: "refused".into(),
            elapsed: Duration::ZERO,
        }
    }

    fn too_large() -> SideResult {
        SideResult::Uncaptured {
            status: StatusCode::OK,
            elapsed: Duration::ZERO,
            reason: SkipReason::BodyTooLarge,
        }
    }

    fn exchange(primary: SideResult, shadow: SideResult) -> Exchange {
        Exchange {
            request_id: "r".into(),
            route: "route".into(),
            started_at: SystemTime::now(),
            request: CapturedRequest {
                method: Method::GET,
                path_and_query: "/".into(),
                headers: HeaderMap::new(),
                body: Bytes::new(),
            },
            primary,
            shadow,
            reservation: Reservation::empty(&MemoryBudget::new(0)),
        }
    }

    #[test]
    fn outcomes_follow_the_vocabulary() {
        let cases = [
            (answer(200, "a"), answer(200, "a"), Outcome::Match),
            (answer(200, "a"), answer(200, "b"), Outcome::Diverged),
            (answer(200, "a"), answer(201, "a"), Outcome::Diverged),
            (answer(404, "{}"), answer(404, "{}"), Outcome::Match),
            (answer(200, "a"), answer(500, "a"), Outcome::ShadowError),
            (answer(200, "a"), failed(), Outcome::ShadowError),
            (answer(502, "a"), answer(200, "a"), Outcome::PrimaryError),
            (failed(), answer(200, "a"), Outcome::PrimaryError),
            (failed(), answer(503, ""), Outcome::BothError),
            (
                answer(200, "a"),
                too_large(),
                Outcome::Skipped(SkipReason::BodyTooLarge),
            ),
            (
                too_large(),
                answer(200, "a"),
                Outcome::Skipped(SkipReason::BodyTooLarge),
            ),
            (
                SideResult::Abandoned,
                answer(200, "a"),
                Outcome::Skipped(SkipReason::ClientDisconnected),
            ),
        ];
        for (index, (primary, shadow, expected)) in cases.into_iter().enumerate() {
            assert_eq!(judge(&exchange(primary, shadow)).outcome, expected, "case {index}");
        }
    }

    #[test]
    fn a_divergence_says_what_differs_without_body_content() {
        let verdict = judge(&exchange(answer(200, "secret-a"), answer(200, "secret-bb")));
        let detail = verdict.detail.unwrap();
        assert_eq!(detail, "bodies differ (8 bytes on the primary, 9 on the shadow)");
    }
}
