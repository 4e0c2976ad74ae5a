//! `[[notify]]` webhooks: events out of the store, to Slack or anything
//! that takes a JSON POST. Every instance looks for occurrences (a new
//! high-severity group, a verdict change, a rollback, drift opened, a ramp
//! step) and adds a notice per sink to the store; whichever instance claims
//! a notice delivers it, retried with exponential backoff and jitter, and
//! every attempt is recorded in the `notifications` row.
//!
//! Must never: run on a request's path, put a secret in a body or a log
//! (the URL is one: Slack's webhook URLs are credentials), or drop a notice
//! without recording why.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::secret::Secret;

mod deliver;
mod follow;
mod sources;

pub use deliver::{backoff, classify, Delivery};
pub use follow::{follow, Notifier};

/// What a sink is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Trigger {
    /// A divergence group of severity `high` seen for the first time.
    Group,
    /// The report's verdict over the default window changed.
    Verdict,
    /// `[rollback]` switched a route back to `shadow`.
    Rollback,
    /// A dual-written write went into drift.
    Drift,
    /// A `[rollout]` ramp stepped (up, back, started, held off).
    Ramp,
}

impl Trigger {
    pub const ALL: [Trigger; 5] = [
        Trigger::Group,
        Trigger::Verdict,
        Trigger::Rollback,
        Trigger::Drift,
        Trigger::Ramp,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Trigger::Group => "group",
            Trigger::Verdict => "verdict",
            Trigger::Rollback => "rollback",
            Trigger::Drift => "drift",
            Trigger::Ramp => "ramp",
        }
    }

    pub fn parse(text: &str) -> Option<Trigger> {
        Trigger::ALL.into_iter().find(|trigger| trigger.label() == text)
    }
}

/// One `[[notify]]` sink.
#[derive(Debug, Clone)]
pub struct Sink {
    /// Names the sink in rows, metrics and logs (the URL never appears).
    pub name: String,
    /// The environment variable the URL came from, for messages.
    pub url_env: String,
    pub url: Secret,
    pub on: BTreeSet<Trigger>,
    /// One attempt's time limit.
    pub timeout: Duration,
    /// The wait before the first retry; it doubles on each retry after.
    pub backoff: Duration,
    /// Attempts before a notice is given up as `failed`.
    pub max_attempts: u32,
}

/// The body of a notice: Slack's `text`, and the same facts as fields
/// under `cutover` for anything that reads JSON.
pub fn payload(trigger: Trigger, subject: &str, at_ms: i64, text: &str, detail: Value) -> String {
    json!({
        "text": text,
        "cutover": {
            "event": trigger.label(),
            "subject": subject,
            "at": crate::clock::rfc3339(at_ms),
            "detail": detail,
        }
    })
    .to_string()
}
