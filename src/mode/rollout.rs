//! A ramp (`[rollout]`): the candidate serves a growing sticky share of a
//! route (or of all routes), one step at a time. This is the plan and the
//! decision only: given where the ramp stands, how long it has held and
//! what the readiness gates said of the share's own traffic, whether to
//! hold, advance or step back, and the switch that does it. The driver
//! that reads the evidence and records the steps lives in `app`.
//!
//! Must never: advance on too little data or on a failing gate, or step
//! back to anything but the previous step or `shadow`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Mode, Share, ShareKey, Switch, SwitchError};

/// Where a breach sends the ramp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBreach {
    /// One step down (from the first step: `shadow`).
    Previous,
    /// Off the candidate altogether.
    Shadow,
}

/// `[rollout]` or `[route.rollout]`: the steps of a ramp and how each is held.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// Percents of the traffic, rising, in hundredths (10,000 is the whole route).
    pub steps: Vec<u64>,
    /// How long a step holds, with every gate passing, before the next.
    pub hold: Duration,
    pub key: ShareKey,
    /// `candidate` or `candidate-fallback`.
    pub mode: Mode,
    pub on_breach: OnBreach,
}

/// What the gates said of the share's traffic since the step began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    /// Every gate passes.
    Holds,
    /// Some gate lacks data; none fails.
    TooLittle,
    /// A gate fails.
    Breached,
}

/// What the ramp does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Hold,
    /// To step `to` (an index into `steps`).
    Advance {
        to: usize,
    },
    /// To step `to`, or off the candidate (`None`).
    StepBack {
        to: Option<usize>,
    },
}

impl Rollout {
    /// The decision at step `at`, held for `held` so far.
    pub fn decide(&self, at: usize, held: Duration, judged: Judged) -> Decision {
        match judged {
            Judged::Breached => Decision::StepBack {
                to: match self.on_breach {
                    OnBreach::Previous => at.checked_sub(1),
                    OnBreach::Shadow => None,
                },
            },
            Judged::Holds if held >= self.hold && at + 1 < self.steps.len() => Decision::Advance { to: at + 1 },
            Judged::Holds | Judged::TooLittle => Decision::Hold,
        }
    }

    /// The percent of step `at`.
    pub fn percent(&self, at: usize) -> f64 {
        self.steps.get(at).map_or(0.0, |hundredths| *hundredths as f64 / 100.0)
    }

    /// The switch that puts `route` (or every route) at step `at`, or back
    /// on `shadow` for `None`.
    pub fn switch_to(&self, route: Option<String>, at: Option<usize>, reason: String) -> Result<Switch, SwitchError> {
        let (mode, share) = match at {
            None => (Mode::Shadow, None),
            Some(at) => {
                let percent = self.percent(at);
                let share = if percent >= 100.0 {
                    None
                } else {
                    Some(Share::new(percent, self.key.clone())?)
                };
                (self.mode, share)
            }
        };
        let mut switch = Switch::new(mode, route, share)?;
        switch.reason = reason;
        Ok(switch)
    }

    /// The step the modes in force are at: the step whose share they serve,
    /// or `None` when they serve none of the ramp's steps (a manual switch
    /// or a rollback interrupted it).
    pub fn step_in_force(&self, mode: Mode, share: Option<&Share>) -> Option<usize> {
        if mode != self.mode {
            return None;
        }
        let hundredths = match share {
            Some(share) if share.key == self.key => share.hundredths(),
            Some(_) => return None,
            None => 10_000,
        };
        self.steps.iter().position(|step| *step == hundredths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(on_breach: OnBreach) -> Rollout {
        Rollout {
            steps: vec![100, 500, 2500, 10_000],
            hold: Duration::from_secs(1800),
            key: ShareKey::parse("header:x-user").unwrap(),
            mode: Mode::Candidate,
            on_breach,
        }
    }

    #[test]
    fn a_step_advances_only_after_its_hold_with_every_gate_passing() {
        let ramp = ramp(OnBreach::Previous);
        let half = Duration::from_secs(900);
        let held = Duration::from_secs(1800);
        assert_eq!(ramp.decide(0, half, Judged::Holds), Decision::Hold);
        assert_eq!(
            ramp.decide(0, held, Judged::TooLittle),
            Decision::Hold,
            "never on too little data"
        );
        assert_eq!(ramp.decide(0, held, Judged::Holds), Decision::Advance { to: 1 });
        assert_eq!(
            ramp.decide(3, held * 10, Judged::Holds),
            Decision::Hold,
            "the last step stays"
        );
    }

    #[test]
    fn a_breach_steps_back_to_the_previous_step_or_to_shadow() {
        let previous = ramp(OnBreach::Previous);
        assert_eq!(
            previous.decide(2, Duration::ZERO, Judged::Breached),
            Decision::StepBack { to: Some(1) }
        );
        assert_eq!(
            previous.decide(0, Duration::ZERO, Judged::Breached),
            Decision::StepBack { to: None }
        );
        let shadow = ramp(OnBreach::Shadow);
        assert_eq!(
            shadow.decide(2, Duration::ZERO, Judged::Breached),
            Decision::StepBack { to: None }
        );
    }

    #[test]
    fn each_step_is_a_switch_and_the_modes_say_which_step_is_in_force() {
        let ramp = ramp(OnBreach::Previous);
        let first = ramp.switch_to(Some("r".into()), Some(1), "rollout".into()).unwrap();
        assert_eq!(
            (first.mode, first.share.as_ref().map(Share::percent)),
            (Mode::Candidate, Some(5.0))
        );
        assert_eq!(ramp.step_in_force(first.mode, first.share.as_ref()), Some(1));
        let whole = ramp.switch_to(None, Some(3), "rollout".into()).unwrap();
        assert_eq!(
            (whole.share.as_ref(), ramp.step_in_force(whole.mode, None)),
            (None, Some(3))
        );
        let off = ramp.switch_to(Some("r".into()), None, "breach".into()).unwrap();
        assert_eq!((off.mode, off.reason.as_str()), (Mode::Shadow, "breach"));
        assert_eq!(ramp.step_in_force(Mode::Shadow, None), None, "off the ramp");
        let other_key = Share::new(5.0, ShareKey::ClientIp).unwrap();
        assert_eq!(ramp.step_in_force(Mode::Candidate, Some(&other_key)), None);
        assert_eq!(ramp.step_in_force(Mode::CandidateFallback, first.share.as_ref()), None);
    }
}
