//! Which side serves: the cutover switch, global or per route.
//!
//! - `shadow`: the primary serves; the shadow is mirrored and compared.
//! - `candidate`: the shadow serves; the old primary is mirrored and compared,
//!   and writes keep going to both, so a rollback loses nothing.
//! - `candidate-fallback`: the shadow serves; when it fails (no answer, or
//!   5xx) the client gets the primary's answer instead, counted.
//! - `primary-only`: the primary serves; nothing is mirrored.
//!
//! A switch to `candidate` or `candidate-fallback` may be for a sticky
//! share of the traffic ([`share::Share`]): the requests in the share are
//! served as the mode says, the rest as in `shadow`, and both parts keep
//! being mirrored and compared, each the other way round. A ramp
//! ([`rollout::Rollout`]) is a plan of such shares, one step after another.
//!
//! A switch is an `events` row (`mode_switch`); every instance applies the
//! rows in order (its own at once, the others' within a second by polling
//! the store), so a switch reaches every replica and survives restarts.
//!
//! Must never: change the mode of a request already in flight (each request
//! reads the mode once, when it arrives).

pub mod rollout;
pub mod share;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use http::HeaderMap;
use serde::{Deserialize, Serialize};

pub use rollout::{Decision, Judged, OnBreach, Rollout};
pub use share::{Share, ShareError, ShareKey};

/// Who serves a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Shadow,
    Candidate,
    CandidateFallback,
    PrimaryOnly,
}

impl Mode {
    pub const ALL: [Mode; 4] = [
        Mode::Shadow,
        Mode::Candidate,
        Mode::CandidateFallback,
        Mode::PrimaryOnly,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Mode::Shadow => "shadow",
            Mode::Candidate => "candidate",
            Mode::CandidateFallback => "candidate-fallback",
            Mode::PrimaryOnly => "primary-only",
        }
    }

    pub fn parse(text: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|mode| mode.label() == text)
    }

    /// Whether the candidate (the configured shadow) serves clients.
    pub fn candidate_serves(self) -> bool {
        matches!(self, Mode::Candidate | Mode::CandidateFallback)
    }

    /// Whether the other side is sent the request too.
    pub fn mirrors(self) -> bool {
        self != Mode::PrimaryOnly
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One switch, as the `events` row keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switch {
    pub mode: Mode,
    /// `None` switches the global mode (and clears every per-route mode).
    #[serde(default)]
    pub route: Option<String>,
    /// Why: `manual`, or the rollback rule that fired.
    #[serde(default)]
    pub reason: String,
    /// Asked for with `force` while the report said NO-GO.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    /// Only this share of the traffic is switched (candidate modes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<Share>,
}

/// Why a switch cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SwitchError {
    #[error(
        "a share is a part of the traffic the candidate serves: it needs mode candidate or candidate-fallback, not {0}"
    )]
    ShareWithoutCandidate(Mode),
    #[error(transparent)]
    Share(#[from] ShareError),
}

impl Switch {
    /// A switch, checked: a share goes only with a mode the candidate serves in.
    pub fn new(mode: Mode, route: Option<String>, share: Option<Share>) -> Result<Switch, SwitchError> {
        if share.is_some() && !mode.candidate_serves() {
            return Err(SwitchError::ShareWithoutCandidate(mode));
        }
        Ok(Switch {
            mode,
            route,
            reason: "manual".into(),
            forced: false,
            share,
        })
    }
}

/// The modes in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Modes {
    pub global: Mode,
    pub routes: BTreeMap<String, Mode>,
    /// The share of the global switch, if it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_share: Option<Share>,
    /// The shares of routes switched on their own.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub shares: BTreeMap<String, Share>,
}

/// Who serves one request, and whether a share decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serving {
    pub mode: Mode,
    /// `Some(true)` in a share, `Some(false)` outside it, `None` when the
    /// route is switched whole.
    pub in_share: Option<bool>,
}

impl Modes {
    pub fn for_route(&self, route: &str) -> Mode {
        self.routes.get(route).copied().unwrap_or(self.global)
    }

    /// The route's share, if it is switched in part.
    pub fn share_of(&self, route: &str) -> Option<&Share> {
        if self.routes.contains_key(route) {
            self.shares.get(route)
        } else {
            self.global_share.as_ref()
        }
    }

    /// Who serves a request to `route` with these headers from `client`.
    pub fn for_request(&self, route: &str, headers: &HeaderMap, client: IpAddr) -> Serving {
        let mode = self.for_route(route);
        match self.share_of(route) {
            Some(share) if mode.candidate_serves() => {
                let in_share = share.includes(headers, client);
                Serving {
                    mode: if in_share { mode } else { Mode::Shadow },
                    in_share: Some(in_share),
                }
            }
            _ => Serving { mode, in_share: None },
        }
    }

    /// Applies a switch; returns the mode it replaced.
    pub fn apply(&mut self, switch: &Switch) -> Mode {
        match &switch.route {
            Some(route) => {
                let before = self.for_route(route);
                if switch.mode == self.global && switch.share == self.global_share {
                    self.routes.remove(route);
                    self.shares.remove(route);
                } else {
                    self.routes.insert(route.clone(), switch.mode);
                    match &switch.share {
                        Some(share) => self.shares.insert(route.clone(), share.clone()),
                        None => self.shares.remove(route),
                    };
                }
                before
            }
            None => {
                let before = self.global;
                self.global = switch.mode;
                self.global_share = switch.share.clone();
                self.routes.clear();
                self.shares.clear();
                before
            }
        }
    }
}

/// The modes shared by the proxy, the admin API and the store poller.
#[derive(Debug, Default)]
pub struct ModeTable {
    modes: RwLock<Modes>,
    /// The last `mode_switch` event applied.
    applied: RwLock<i64>,
}

impl ModeTable {
    pub fn new() -> Arc<ModeTable> {
        Arc::new(ModeTable::default())
    }

    pub fn current(&self) -> Modes {
        self.modes
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn for_route(&self, route: &str) -> Mode {
        self.modes
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .for_route(route)
    }

    /// Who serves this request (read once, when it arrives).
    pub fn for_request(&self, route: &str, headers: &HeaderMap, client: IpAddr) -> Serving {
        self.modes
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .for_request(route, headers, client)
    }

    /// Applies the switch recorded as event `id`, once, in order.
    pub fn apply_event(&self, id: i64, switch: &Switch) -> Option<Mode> {
        let mut applied = self.applied.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if id <= *applied {
            return None;
        }
        *applied = id;
        Some(
            self.modes
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .apply(switch),
        )
    }

    pub fn last_applied(&self) -> i64 {
        *self.applied.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `[rollback]`: when the candidate serves and, over `window`, at least
/// `min_requests` were served and the serving side's error rate exceeds
/// `error_rate` or its p95 exceeds `p95`, switch back.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackRule {
    pub error_rate: Option<f64>,
    pub p95: Option<std::time::Duration>,
    pub window: std::time::Duration,
    pub min_requests: u64,
}

/// What the candidate did while it served, per route, for the rollback rule.
#[derive(Debug, Default)]
pub struct ServingHealth {
    samples: std::sync::Mutex<std::collections::VecDeque<Sample>>,
}

#[derive(Debug)]
struct Sample {
    at: std::time::Instant,
    route: Arc<str>,
    failed: bool,
    millis: f64,
}

/// Samples kept at most (older ones are dropped first): bounded memory.
const HEALTH_SAMPLES: usize = 100_000;

impl ServingHealth {
    /// Notes one answer of the serving candidate (or its failure).
    pub fn record(&self, route: &str, failed: bool, elapsed: std::time::Duration) {
        let mut samples = self.samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if samples.len() >= HEALTH_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(Sample {
            at: std::time::Instant::now(),
            route: Arc::from(route),
            failed,
            millis: elapsed.as_secs_f64() * 1000.0,
        });
    }

    /// The routes that break the rule, each with why.
    pub fn breaches(&self, rule: &RollbackRule) -> Vec<(String, String)> {
        let mut samples = self.samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = std::time::Instant::now();
        while samples.front().is_some_and(|s| now.duration_since(s.at) > rule.window) {
            samples.pop_front();
        }
        let mut by_route: BTreeMap<&str, (u64, u64, Vec<f64>)> = BTreeMap::new();
        for sample in samples.iter() {
            let entry = by_route.entry(&sample.route).or_default();
            entry.0 += 1;
            entry.1 += u64::from(sample.failed);
            entry.2.push(sample.millis);
        }
        let window = humantime::format_duration(rule.window);
        let mut out = Vec::new();
        for (route, (served, failed, mut millis)) in by_route {
            if served < rule.min_requests {
                continue;
            }
            let rate = failed as f64 / served as f64;
            if let Some(limit) = rule.error_rate.filter(|limit| rate > *limit) {
                out.push((
                    route.to_string(),
                    format!(
                        "error rate {:.1}% over {window} ({failed} of {served}) > {:.1}%",
                        rate * 100.0,
                        limit * 100.0
                    ),
                ));
                continue;
            }
            if let Some(limit) = rule.p95 {
                millis.sort_by(f64::total_cmp);
                let index = ((millis.len() as f64 * 0.95).ceil() as usize).clamp(1, millis.len()) - 1;
                let p95 = millis[index];
                if p95 > limit.as_secs_f64() * 1000.0 {
                    out.push((
                        route.to_string(),
                        format!("p95 {p95:.0} ms over {window} > {}", humantime::format_duration(limit)),
                    ));
                }
            }
        }
        out
    }

    /// Forgets what was seen (after a rollback, the candidate starts afresh).
    pub fn clear(&self) {
        self.samples
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }
}

impl Modes {
    /// The switch that rolls `route` back: to shadow, for the route alone
    /// if it has its own mode, else for all routes.
    pub fn rollback_for(&self, route: &str, reason: String) -> Option<Switch> {
        if !self.for_route(route).candidate_serves() {
            return None;
        }
        Some(Switch {
            mode: Mode::Shadow,
            route: self.routes.contains_key(route).then(|| route.to_string()),
            reason,
            forced: false,
            share: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rollback_rule_needs_enough_requests_and_a_breach() {
        let rule = RollbackRule {
            error_rate: Some(0.1),
            p95: Some(std::time::Duration::from_millis(500)),
            window: std::time::Duration::from_secs(60),
            min_requests: 10,
        };
        let health = ServingHealth::default();
        for n in 0..9 {
            health.record("a", n < 5, std::time::Duration::from_millis(10));
        }
        assert!(health.breaches(&rule).is_empty(), "9 requests are too few to judge");
        health.record("a", false, std::time::Duration::from_millis(10));
        let breaches = health.breaches(&rule);
        assert_eq!(breaches.len(), 1);
        assert!(breaches[0].1.starts_with("error rate 50.0%"), "{breaches:?}");
        let slow = ServingHealth::default();
        for _ in 0..20 {
            slow.record("b", false, std::time::Duration::from_secs(2));
        }
        assert!(slow.breaches(&rule)[0].1.starts_with("p95 2000 ms"));
        let healthy = ServingHealth::default();
        for _ in 0..50 {
            healthy.record("c", false, std::time::Duration::from_millis(20));
        }
        assert!(healthy.breaches(&rule).is_empty());
    }

    #[test]
    fn a_rollback_goes_back_to_shadow_where_the_candidate_serves() {
        let mut modes = Modes::default();
        assert_eq!(modes.rollback_for("a", "r".into()), None, "nothing to roll back");
        modes.apply(&switch(Mode::Candidate, Some("a")));
        assert_eq!(modes.rollback_for("a", "r".into()).unwrap().route.as_deref(), Some("a"));
        modes.apply(&switch(Mode::CandidateFallback, None));
        assert_eq!(modes.rollback_for("b", "r".into()).unwrap().route, None);
    }

    fn switch(mode: Mode, route: Option<&str>) -> Switch {
        Switch::new(mode, route.map(str::to_string), None).unwrap()
    }

    fn user(name: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", http::HeaderValue::from_str(name).unwrap());
        headers
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn a_share_serves_its_part_from_the_candidate_and_the_rest_as_shadow() {
        let half = Share::new(50.0, ShareKey::parse("header:x-user").unwrap()).unwrap();
        let mut modes = Modes::default();
        modes.apply(&Switch::new(Mode::Candidate, Some("tasks".into()), Some(half.clone())).unwrap());
        let served: Vec<Serving> = (0..200)
            .map(|n| modes.for_request("tasks", &user(&format!("u{n}")), CLIENT))
            .collect();
        let in_share = served.iter().filter(|s| s.in_share == Some(true)).count();
        assert!((60..140).contains(&in_share), "{in_share} of 200 in a 50% share");
        for serving in &served {
            let expected = if serving.in_share == Some(true) {
                Mode::Candidate
            } else {
                Mode::Shadow
            };
            assert_eq!(serving.mode, expected);
        }
        let keyless = modes.for_request("tasks", &HeaderMap::new(), CLIENT);
        assert_eq!(
            keyless,
            Serving {
                mode: Mode::Shadow,
                in_share: Some(false)
            }
        );
        assert_eq!(modes.for_request("other", &user("u1"), CLIENT).in_share, None);
        // The whole route switched: the share is gone.
        modes.apply(&switch(Mode::Candidate, Some("tasks")));
        assert_eq!(modes.share_of("tasks"), None);
        assert_eq!(
            modes.for_request("tasks", &HeaderMap::new(), CLIENT).mode,
            Mode::Candidate
        );
        // A global share reaches every route without its own mode.
        modes.apply(&Switch::new(Mode::CandidateFallback, None, Some(half)).unwrap());
        assert!(modes.routes.is_empty() && modes.share_of("tasks").is_some());
    }

    #[test]
    fn a_share_needs_a_mode_the_candidate_serves_in() {
        let share = Share::new(5.0, ShareKey::ClientIp).unwrap();
        assert_eq!(
            Switch::new(Mode::PrimaryOnly, None, Some(share)),
            Err(SwitchError::ShareWithoutCandidate(Mode::PrimaryOnly))
        );
    }

    #[test]
    fn switch_rows_written_before_shares_still_read() {
        let old = serde_json::json!({"mode": "candidate", "route": "tasks", "reason": "manual"});
        let switch: Switch = serde_json::from_value(old).unwrap();
        assert_eq!(switch.share, None);
        let shared = Switch::new(
            Mode::Candidate,
            None,
            Some(Share::new(5.0, ShareKey::ClientIp).unwrap()),
        )
        .unwrap();
        let json = serde_json::to_value(&shared).unwrap();
        assert_eq!(json["share"], serde_json::json!({"percent": 5.0, "key": "client-ip"}));
        assert_eq!(serde_json::from_value::<Switch>(json).unwrap(), shared);
    }

    #[test]
    fn per_route_modes_override_the_global_one_until_it_switches() {
        let mut modes = Modes::default();
        assert_eq!(modes.apply(&switch(Mode::Candidate, Some("all-tasks"))), Mode::Shadow);
        assert_eq!(modes.for_route("all-tasks"), Mode::Candidate);
        assert_eq!(modes.for_route("other"), Mode::Shadow);
        assert_eq!(modes.apply(&switch(Mode::PrimaryOnly, None)), Mode::Shadow);
        assert_eq!(
            modes.for_route("all-tasks"),
            Mode::PrimaryOnly,
            "a global switch clears route modes"
        );
    }

    #[test]
    fn events_apply_once_and_in_order() {
        let table = ModeTable::new();
        assert_eq!(table.apply_event(3, &switch(Mode::Candidate, None)), Some(Mode::Shadow));
        assert_eq!(table.apply_event(3, &switch(Mode::PrimaryOnly, None)), None);
        assert_eq!(table.apply_event(2, &switch(Mode::PrimaryOnly, None)), None);
        assert_eq!(table.for_route("x"), Mode::Candidate);
        assert_eq!(table.last_applied(), 3);
    }

    #[test]
    fn labels_round_trip_and_serde_uses_them() {
        for mode in Mode::ALL {
            assert_eq!(Mode::parse(mode.label()), Some(mode));
            assert_eq!(serde_json::to_value(mode).unwrap(), mode.label());
        }
        assert_eq!(Mode::parse("candidate_fallback"), None);
    }
}
