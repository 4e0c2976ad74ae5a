//! One delivery attempt of a notice, and what follows it: delivered, tried
//! again after a backoff, or given up.
//!
//! Must never: put the sink's URL in an error, a row or a log line.

use std::time::Duration;

use rand::Rng;

use super::Sink;
use crate::store::Attempt;

/// The longest wait between two attempts, however many came before.
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// Sends notices to sinks over one HTTP client.
#[derive(Debug, Clone)]
pub struct Delivery {
    http: reqwest::Client,
}

impl Delivery {
    pub fn new() -> Result<Delivery, reqwest::Error> {
        let http = crate::upstream::client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Delivery { http })
    }

    /// POSTs `payload` to the sink once; `attempts` is how many came before.
    pub async fn attempt(&self, sink: &Sink, payload: &str, attempts: u32, now_ms: i64) -> Attempt {
        let sent = self
            .http
            .post(sink.url.expose())
            .timeout(sink.timeout)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, concat!("cutover/", env!("CARGO_PKG_VERSION")))
            .body(payload.to_string())
            .send()
            .await;
        let (status, error) = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                if response.status().is_success() {
                    return Attempt::Delivered { status };
                }
                (Some(status), format!("the receiver answered {status}"))
            }
            Err(err) => (None, err.without_url().to_string()),
        };
        classify(status, error, attempts + 1, sink, now_ms)
    }
}

/// What a failed attempt (the `tried`-th) leads to: another after the
/// backoff, or `failed` once retrying cannot help (a 4xx other than 408
/// and 429 says the request itself is refused) or the attempts are spent.
pub fn classify(status: Option<u16>, error: String, tried: u32, sink: &Sink, now_ms: i64) -> Attempt {
    let refused = status.is_some_and(|status| (400..500).contains(&status) && status != 408 && status != 429);
    if refused || tried >= sink.max_attempts {
        return Attempt::Failed { status, error };
    }
    let wait = backoff(sink.backoff, tried, rand::rng().random_range(0.5..=1.0));
    Attempt::Retry {
        status,
        error,
        next_attempt_ms: now_ms.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)),
    }
}

/// The wait after the `tried`-th attempt: `base` doubled per attempt
/// after the first, at most [`MAX_BACKOFF`], scaled by `jitter` (0.5 to 1,
/// so instances that failed together do not retry together).
pub fn backoff(base: Duration, tried: u32, jitter: f64) -> Duration {
    let doublings = tried.saturating_sub(1).min(30);
    let full = base.saturating_mul(1u32 << doublings).min(MAX_BACKOFF);
    full.mul_f64(jitter.clamp(0.5, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(max_attempts: u32) -> Sink {
        Sink {
            name: "ops".into(),
            url_env: "OPS_WEBHOOK".into(),
            url: crate::secret::Secret::new("http://127.0.0.1:9/hook".into()),
            on: super::super::Trigger::ALL.into_iter().collect(),
            timeout: Duration::from_secs(1),
            backoff: Duration::from_secs(2),
            max_attempts,
        }
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap_and_jitter_only_shortens_it() {
        let base = Duration::from_secs(2);
        assert_eq!(backoff(base, 1, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(base, 2, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(base, 4, 1.0), Duration::from_secs(16));
        assert_eq!(backoff(base, 4, 0.5), Duration::from_secs(8));
        assert_eq!(backoff(base, 40, 1.0), MAX_BACKOFF);
        assert_eq!(backoff(base, 3, 7.0), Duration::from_secs(8));
    }

    #[test]
    fn refusals_and_the_last_attempt_give_up_and_the_rest_retry() {
        let retried = |status| matches!(classify(status, "x".into(), 1, &sink(5), 0), Attempt::Retry { .. });
        assert!(retried(None));
        assert!(retried(Some(500)));
        assert!(retried(Some(429)));
        assert!(retried(Some(408)));
        assert!(!retried(Some(404)));
        assert!(!retried(Some(400)));
        assert!(matches!(
            classify(Some(503), "x".into(), 5, &sink(5), 0),
            Attempt::Failed { .. }
        ));
        match classify(None, "x".into(), 1, &sink(5), 1_000) {
            Attempt::Retry { next_attempt_ms, .. } => assert!((2_000..=3_000).contains(&next_attempt_ms)),
            other => panic!("expected a retry, got {other:?}"),
        }
    }
}
