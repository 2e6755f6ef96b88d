//! Trackers (`[[instance.track]]`, keepalived's `track_*`): what an
//! instance's priority or FAULT follows — another link, a health script, a
//! number in a file.
//!
//! Owns: each tracker's state from its observations (rise/fall counting),
//! keepalived's weight rules, the verdict (effective priority, FAULT) and
//! the words that name the cause; and, in `script` and `file`, the tasks
//! that observe. Must not: touch VRRP state — the engine hands the verdict
//! to the state machine (`Instance::set_tracking`), which decides what it
//! means for mastership. Sans-IO here: observations in, verdict out.

pub mod container;
pub mod file;
pub mod process;
pub mod script;

use crate::{
    config::{TrackConfig, TrackKind},
    records::{Health, TrackerKind, TrackerStatus},
};

/// One observation of a tracker, as its watcher made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// A script run: exit 0 or not; `detail` says how it ended.
    Run { success: bool, detail: String },
    /// A tracked link is usable (up, with carrier) or not.
    Link { usable: bool },
    /// The number in a tracked file (0 when missing or not a number, as
    /// keepalived reads it); `detail` says which.
    Value { value: i64, detail: String },
    /// A watched service's verdict, its watcher's grace already spent (a
    /// container tracker's `Spell`).
    Service { healthy: bool, detail: String },
    /// The watcher cannot observe (`Some(why)`), or can again (`None`): the
    /// health stays as last known.
    Degraded { degraded: Option<String> },
}

/// A tracker of one instance with its state.
#[derive(Clone, Debug)]
pub struct Tracker {
    pub config: TrackConfig,
    health: Health,
    /// Successes (while failed) or failures (while healthy) in a row.
    streak: u32,
    /// A file tracker's number.
    value: i64,
    detail: String,
    degraded: Option<String>,
}

/// What a tracker adds now: keepalived's weight rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contribution {
    pub weight_in_force: i32,
    pub fault: bool,
}

/// The trackers' verdict for the state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub priority: u8,
    pub fault: bool,
}

impl Tracker {
    pub fn new(config: TrackConfig) -> Self {
        let health = match &config.kind {
            TrackKind::Script(script) if script.init_fail => Health::Failed,
            _ => Health::Healthy,
        };
        Self {
            config,
            health,
            streak: 0,
            value: 0,
            detail: "not observed yet".to_string(),
            degraded: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// Takes one observation; returns whether the tracker's contribution
    /// changed (what the verdict depends on).
    pub fn observe(&mut self, observation: Observation) -> bool {
        let before = self.contribution();
        match observation {
            Observation::Run { success, detail } => {
                self.detail = detail;
                let (rise, fall) = match &self.config.kind {
                    TrackKind::Script(script) => (script.rise, script.fall),
                    _ => (1, 1),
                };
                let toward_change = match self.health {
                    Health::Healthy => !success,
                    Health::Failed => success,
                };
                if !toward_change {
                    self.streak = 0;
                } else {
                    self.streak += 1;
                    let needed = if success { rise } else { fall };
                    if self.streak >= needed {
                        self.streak = 0;
                        self.health = if success {
                            Health::Healthy
                        } else {
                            Health::Failed
                        };
                    }
                }
            }
            Observation::Link { usable } => {
                self.detail = if usable { "link up" } else { "link down" }.to_string();
                self.health = if usable {
                    Health::Healthy
                } else {
                    Health::Failed
                };
            }
            Observation::Service { healthy, detail } => {
                self.detail = detail;
                self.health = if healthy {
                    Health::Healthy
                } else {
                    Health::Failed
                };
            }
            Observation::Degraded { degraded } => self.degraded = degraded,
            Observation::Value { value, detail } => {
                self.value = value;
                self.detail = detail;
                let contribution = self.contribution();
                self.health = if contribution.fault || contribution.weight_in_force < 0 {
                    Health::Failed
                } else {
                    Health::Healthy
                };
            }
        }
        self.contribution() != before
    }

    /// keepalived's rules: weight 0 is FAULT while failed; a negative weight
    /// counts while failed, a positive one while healthy; a file counts its
    /// number times the weight (weight 0: FAULT unless 0; a product at or
    /// below -254 is FAULT too).
    pub fn contribution(&self) -> Contribution {
        let weight = self.config.weight;
        let failed = self.health == Health::Failed;
        match &self.config.kind {
            TrackKind::File(_) => {
                if weight == 0 {
                    return Contribution {
                        weight_in_force: 0,
                        fault: self.value != 0,
                    };
                }
                let product = self
                    .value
                    .saturating_mul(i64::from(weight))
                    .clamp(-254, 254) as i32;
                Contribution {
                    weight_in_force: product,
                    fault: product <= -254,
                }
            }
            _ => Contribution {
                weight_in_force: match (weight, failed) {
                    (w, true) if w < 0 => w,
                    (w, false) if w > 0 => w,
                    _ => 0,
                },
                fault: weight == 0 && failed,
            },
        }
    }

    /// "track script chk_mongo failed 3 times", keepalived's words.
    pub fn describe(&self) -> String {
        let kind = self.config.kind.label();
        let name = &self.config.name;
        match (&self.config.kind, self.health) {
            (TrackKind::Script(script), Health::Failed) if script.fall > 1 => {
                format!(
                    "track {kind} {name} failed {} times ({})",
                    script.fall, self.detail
                )
            }
            (TrackKind::Script(_), Health::Failed) => {
                format!("track {kind} {name} failed ({})", self.detail)
            }
            (TrackKind::Interface(_), Health::Failed) => format!("track {kind} {name} down"),
            (TrackKind::Container(_) | TrackKind::Process(_), Health::Failed) => {
                format!("track {kind} {name} failed ({})", self.detail)
            }
            (TrackKind::File(_), _) => format!("track {kind} {name} holds {}", self.value),
            (_, Health::Healthy) => format!("track {kind} {name} healthy"),
        }
    }

    pub fn status(&self) -> TrackerStatus {
        let contribution = self.contribution();
        let (kind, target) = match &self.config.kind {
            TrackKind::Interface(interface) => (TrackerKind::Interface, interface.clone()),
            TrackKind::Script(script) => (TrackerKind::Script, script.argv.join(" ")),
            TrackKind::File(path) => (TrackerKind::File, path.display().to_string()),
            TrackKind::Process(track) => (
                TrackerKind::Process,
                format!("{} x{}", track.name, track.quorum),
            ),
            TrackKind::Container(track) => (
                TrackerKind::Container,
                match &track.target {
                    crate::config::ContainerTarget::Name(name) => name.clone(),
                    crate::config::ContainerTarget::Label(label) => format!("label {label}"),
                },
            ),
        };
        TrackerStatus {
            name: self.config.name.clone(),
            kind,
            target,
            health: self.health,
            weight: self.config.weight,
            weight_in_force: contribution.weight_in_force,
            fault: contribution.fault,
            detail: self.detail.clone(),
            degraded: self.degraded.clone(),
        }
    }
}

/// keepalived's effective priority: the configured one plus every weight in
/// force, within 1..=254; the address owner (255) keeps 255 (config allows
/// it no weights). FAULT while any tracker holds it there.
pub fn verdict(configured: u8, trackers: &[Tracker]) -> Verdict {
    let contributions: Vec<Contribution> = trackers.iter().map(Tracker::contribution).collect();
    let fault = contributions.iter().any(|c| c.fault);
    if configured == 255 {
        return Verdict {
            priority: 255,
            fault,
        };
    }
    let sum: i32 = contributions.iter().map(|c| c.weight_in_force).sum();
    Verdict {
        priority: (i32::from(configured) + sum).clamp(1, 254) as u8,
        fault,
    }
}

/// The trackers that hold the verdict where it is, in words: those holding
/// FAULT when `fault`, else those whose weight is in force. `None` when no
/// tracker counts.
pub fn cause(trackers: &[Tracker], fault: bool) -> Option<String> {
    let counted: Vec<String> = trackers
        .iter()
        .filter_map(|t| {
            let c = t.contribution();
            if fault {
                c.fault.then(|| t.describe())
            } else {
                (c.weight_in_force != 0)
                    .then(|| format!("{} ({:+})", t.describe(), c.weight_in_force))
            }
        })
        .collect();
    (!counted.is_empty()).then(|| counted.join("; "))
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, time::Duration};

    use super::*;
    use crate::config::ScriptTrack;

    fn script(name: &str, weight: i32, rise: u32, fall: u32) -> Tracker {
        Tracker::new(TrackConfig {
            name: name.to_string(),
            kind: TrackKind::Script(ScriptTrack {
                argv: vec!["/bin/true".to_string()],
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                rise,
                fall,
                init_fail: false,
            }),
            weight,
            line: 1,
        })
    }

    fn run(success: bool) -> Observation {
        Observation::Run {
            success,
            detail: if success {
                "exit status 0"
            } else {
                "exit status 1"
            }
            .to_string(),
        }
    }

    #[test]
    fn fall_failures_in_a_row_fail_it_and_rise_successes_heal_it() {
        let mut chk = script("chk_mongo", -50, 2, 3);
        // A flapping script (fail, ok, fail, ok) never reaches fall = 3.
        for success in [false, true, false, false, true, false] {
            assert!(!chk.observe(run(success)));
        }
        assert_eq!(chk.health(), Health::Healthy);
        assert!(!chk.observe(run(false)));
        assert!(
            chk.observe(run(false)),
            "the third failure in a row fails it"
        );
        assert_eq!(chk.health(), Health::Failed);
        assert_eq!(
            chk.describe(),
            "track script chk_mongo failed 3 times (exit status 1)"
        );
        assert!(!chk.observe(run(true)));
        assert!(!chk.observe(run(false)), "a failure resets the rise count");
        assert!(!chk.observe(run(true)));
        assert!(chk.observe(run(true)));
        assert_eq!(chk.health(), Health::Healthy);
    }

    #[test]
    fn weights_follow_keepalived() {
        let mut lower = script("lower", -50, 1, 1);
        let mut raise = script("raise", 20, 1, 1);
        let mut fault = script("fault", 0, 1, 1);
        assert_eq!(
            verdict(100, &[lower.clone(), raise.clone(), fault.clone()]),
            Verdict {
                priority: 120,
                fault: false
            }
        );
        lower.observe(run(false));
        raise.observe(run(false));
        assert_eq!(
            verdict(100, &[lower.clone(), raise.clone(), fault.clone()]),
            Verdict {
                priority: 50,
                fault: false
            }
        );
        assert_eq!(
            cause(&[lower.clone(), raise.clone()], false).as_deref(),
            Some("track script lower failed (exit status 1) (-50)")
        );
        fault.observe(run(false));
        let all = [lower, raise, fault];
        assert_eq!(
            verdict(100, &all),
            Verdict {
                priority: 50,
                fault: true
            }
        );
        assert_eq!(
            cause(&all, true).as_deref(),
            Some("track script fault failed (exit status 1)")
        );
        // Within 1..=254, whatever the sum; the owner keeps 255.
        assert_eq!(verdict(20, &all).priority, 1);
        let mut big = script("big", 200, 1, 1);
        big.observe(run(true));
        assert_eq!(verdict(200, &[big]).priority, 254);
        assert_eq!(verdict(255, &[]).priority, 255);
    }

    #[test]
    fn a_file_counts_its_number_times_the_weight() {
        let file = |weight| {
            Tracker::new(TrackConfig {
                name: "prio".to_string(),
                kind: TrackKind::File(PathBuf::from("/run/prio")),
                weight,
                line: 1,
            })
        };
        let value = |value| Observation::Value {
            value,
            detail: format!("value {value}"),
        };
        let mut weighted = file(-10);
        assert!(weighted.observe(value(3)));
        assert_eq!(
            weighted.contribution(),
            Contribution {
                weight_in_force: -30,
                fault: false
            }
        );
        assert_eq!(weighted.health(), Health::Failed);
        assert!(weighted.observe(value(30)));
        assert!(
            weighted.contribution().fault,
            "-300 is at or below -254: FAULT"
        );
        let mut plain = file(0);
        assert!(plain.observe(value(1)));
        assert!(plain.contribution().fault);
        assert!(plain.observe(value(0)));
        assert_eq!(
            verdict(100, &[plain]),
            Verdict {
                priority: 100,
                fault: false
            }
        );
    }

    #[test]
    fn a_link_is_down_at_once_and_up_at_once() {
        let mut link = Tracker::new(TrackConfig {
            name: "eth2".to_string(),
            kind: TrackKind::Interface("eth2".to_string()),
            weight: 0,
            line: 1,
        });
        assert!(link.observe(Observation::Link { usable: false }));
        assert_eq!(
            cause(std::slice::from_ref(&link), true).as_deref(),
            Some("track interface eth2 down")
        );
        assert!(!link.observe(Observation::Link { usable: false }));
        assert!(link.observe(Observation::Link { usable: true }));
    }
}
