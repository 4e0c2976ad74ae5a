//! Which side serves: the cutover switch, global or per route.
//!
//! - `shadow`: the primary serves; the shadow is mirrored and compared.
//! - `candidate`: the shadow serves; the old primary is mirrored and compared,
//!   and writes keep going to both, so a rollback loses nothing.
//! - `candidate-fallback`: the shadow serves; when it fails (no answer, or
//!   5xx) the client gets the primary's answer instead, counted.
//! - `primary-only`: the primary serves; nothing is mirrored.
//!
//! A switch is an `events` row (`mode_switch`); every instance applies the
//! rows in order (its own at once, the others' within a second by polling
//! the store), so a switch reaches every replica and survives restarts.
//!
//! Must never: change the mode of a request already in flight (each request
//! reads the mode once, when it arrives).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

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
}

/// The modes in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Modes {
    pub global: Mode,
    pub routes: BTreeMap<String, Mode>,
}

impl Modes {
    pub fn for_route(&self, route: &str) -> Mode {
        self.routes.get(route).copied().unwrap_or(self.global)
    }

    /// Applies a switch; returns the mode it replaced.
    pub fn apply(&mut self, switch: &Switch) -> Mode {
        match &switch.route {
            Some(route) => {
                let before = self.for_route(route);
                if switch.mode == self.global {
                    self.routes.remove(route);
                } else {
                    self.routes.insert(route.clone(), switch.mode);
                }
                before
            }
            None => {
                let before = self.global;
                self.global = switch.mode;
                self.routes.clear();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(mode: Mode, route: Option<&str>) -> Switch {
        Switch {
            mode,
            route: route.map(str::to_string),
            reason: "manual".into(),
        }
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
