//! The initiations in flight and how each ends, decided from charon's
//! events alone (sans-IO: what was started, the events and the time in;
//! the APs that are done out). The adapter's IO (`initiate.rs`) only
//! carries these in and out.
//!
//! An AP is done when, under its connection name:
//! - a `child-updown` event brings the adapter's CHILD_SA up: ok;
//! - an `ike-updown` down event closes an IKE_SA that was still connecting,
//!   or that came up in this attempt without its CHILD_SA (authentication
//!   refused, no proposal chosen, the CHILD_SA refused): failed;
//! - an `alert` event (strongSwan 6.0.3 and later) names its IKE_SA:
//!   failed, with the alert's type;
//! - its deadline passes first: timed out.
//!
//! A down event for an IKE_SA of the same name that was established before
//! this attempt (an AP this node recovered at an earlier takeover, its SA
//! now being replaced) is not this attempt's and is ignored.
//!
//! Owns: the per-AP bookkeeping of one adapter run. Must not: talk to
//! charon or read the clock.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use serde::Deserialize;

/// The part of an IKE_SA that the updown and alert events carry and that
/// the adapter reads (vici sends every value as text).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct EventSa {
    #[serde(default)]
    pub state: String,
    /// The CHILD_SAs of a `child-updown` event (only the affected one).
    #[serde(default, rename = "child-sas")]
    pub child_sas: HashMap<String, EventChild>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct EventChild {
    /// The CHILD_SA's config name (the section's key carries a unique id).
    #[serde(default)]
    pub name: String,
}

/// `ike-updown` and `child-updown`: `up = yes` when up, absent when down;
/// one section per IKE_SA, named after its connection.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Updown {
    #[serde(default)]
    pub up: Option<String>,
    #[serde(flatten)]
    pub sas: HashMap<String, EventSa>,
}

impl Updown {
    pub fn is_up(&self) -> bool {
        self.up.as_deref() == Some("yes")
    }
}

/// `alert`: its type, and the IKE_SA it concerns when there is one.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Alert {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default, rename = "ike-sa")]
    pub ike_sa: HashMap<String, EventSa>,
}

/// One event from charon's subscription.
#[derive(Clone, Debug)]
pub enum Event {
    IkeUpdown(Updown),
    ChildUpdown(Updown),
    Alert(Alert),
}

/// How one initiation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    Up,
    Failed(String),
    TimedOut(String),
}

/// An AP that is done: its index in the list, how it ended, when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Done {
    pub index: usize,
    /// The connection name (to unload).
    pub name: String,
    pub ending: Ending,
    pub took: Duration,
}

struct Pending {
    index: usize,
    started: Instant,
    deadline: Instant,
    /// This attempt's IKE_SA came up (an `ike-updown` up under the name).
    ike_up: bool,
}

/// The initiations of one run that have not ended yet.
pub struct Inflight {
    child: String,
    timeout: Duration,
    by_name: HashMap<String, Pending>,
    /// Deadlines in order, to find the expired ones without a scan.
    deadlines: BTreeMap<(Instant, usize), String>,
}

impl Inflight {
    /// `child`: the CHILD_SA whose coming up makes an AP done; `timeout`:
    /// each AP's deadline from its start.
    pub fn new(child: &str, timeout: Duration) -> Self {
        Self {
            child: child.to_string(),
            timeout,
            by_name: HashMap::new(),
            deadlines: BTreeMap::new(),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The AP at `index` is being initiated under `name` from `now` on.
    pub fn started(&mut self, index: usize, name: &str, now: Instant) {
        let deadline = now + self.timeout;
        self.deadlines.insert((deadline, index), name.to_string());
        self.by_name.insert(
            name.to_string(),
            Pending {
                index,
                started: now,
                deadline,
                ike_up: false,
            },
        );
    }

    /// charon refused the AP's `load-conn` or `initiate`.
    pub fn refused(&mut self, name: &str, why: String, now: Instant) -> Option<Done> {
        self.end(name, Ending::Failed(why), now)
    }

    /// The APs that `event` ends.
    pub fn on_event(&mut self, event: &Event, now: Instant) -> Vec<Done> {
        let mut done = Vec::new();
        match event {
            Event::ChildUpdown(updown) if updown.is_up() => {
                for (name, sa) in &updown.sas {
                    if sa.child_sas.values().any(|c| c.name == self.child) {
                        done.extend(self.end(name, Ending::Up, now));
                    }
                }
            }
            Event::ChildUpdown(_) => {}
            Event::IkeUpdown(updown) if updown.is_up() => {
                for name in updown.sas.keys() {
                    if let Some(pending) = self.by_name.get_mut(name) {
                        pending.ike_up = true;
                    }
                }
            }
            Event::IkeUpdown(updown) => {
                for (name, sa) in &updown.sas {
                    let Some(pending) = self.by_name.get(name) else {
                        continue;
                    };
                    let why = if sa.state == "CONNECTING" {
                        "the IKE_SA failed while connecting (proposal or authentication refused, or an invalid answer)".to_string()
                    } else if pending.ike_up {
                        format!(
                            "the IKE_SA was closed before CHILD_SA `{}` came up (refused by the AP?)",
                            self.child
                        )
                    } else {
                        // An earlier IKE_SA under the same name going away.
                        continue;
                    };
                    done.extend(self.end(name, Ending::Failed(why), now));
                }
            }
            Event::Alert(alert) => {
                for name in alert.ike_sa.keys() {
                    let why = format!("charon alert: {}", alert.kind);
                    done.extend(self.end(name, Ending::Failed(why), now));
                }
            }
        }
        done
    }

    /// When the next deadline passes, if any AP is in flight.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.keys().next().map(|(at, _)| *at)
    }

    /// The APs whose deadline has passed at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Done> {
        let mut done = Vec::new();
        while let Some(entry) = self.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let name = entry.remove();
            let why = format!(
                "CHILD_SA `{}` not up within {:?} (no answer, or charon is busy)",
                self.child, self.timeout
            );
            done.extend(self.end(&name, Ending::TimedOut(why), now));
        }
        done
    }

    /// Every AP still in flight ends with `why` (charon went away).
    pub fn fail_all(&mut self, why: &str, now: Instant) -> Vec<Done> {
        let names: Vec<String> = self.by_name.keys().cloned().collect();
        names
            .iter()
            .filter_map(|name| self.end(name, Ending::Failed(why.to_string()), now))
            .collect()
    }

    fn end(&mut self, name: &str, ending: Ending, now: Instant) -> Option<Done> {
        let pending = self.by_name.remove(name)?;
        self.deadlines.remove(&(pending.deadline, pending.index));
        Some(Done {
            index: pending.index,
            name: name.to_string(),
            ending,
            took: now.saturating_duration_since(pending.started),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHILD: &str = "tunnel";

    fn sa(state: &str, children: &[&str]) -> EventSa {
        EventSa {
            state: state.to_string(),
            child_sas: children
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    (
                        format!("{c}-{i}"),
                        EventChild {
                            name: c.to_string(),
                        },
                    )
                })
                .collect(),
        }
    }

    fn updown(up: bool, name: &str, sa: EventSa) -> Updown {
        Updown {
            up: up.then(|| "yes".to_string()),
            sas: [(name.to_string(), sa)].into_iter().collect(),
        }
    }

    #[test]
    fn a_child_sa_up_ends_its_ap_and_only_its_own_child_counts() {
        let t0 = Instant::now();
        let mut inflight = Inflight::new(CHILD, Duration::from_secs(3));
        inflight.started(0, "wimark-ap-a", t0);
        inflight.started(1, "wimark-ap-b", t0);
        let other_child = Event::ChildUpdown(updown(true, "wimark-ap-a", sa("ESTABLISHED", &["other"])));
        assert!(inflight.on_event(&other_child, t0).is_empty());
        let up = Event::ChildUpdown(updown(true, "wimark-ap-a", sa("ESTABLISHED", &[CHILD])));
        let done = inflight.on_event(&up, t0 + Duration::from_millis(40));
        assert_eq!(done.len(), 1);
        assert_eq!((done[0].index, &done[0].ending), (0, &Ending::Up));
        assert_eq!(done[0].took, Duration::from_millis(40));
        assert_eq!(inflight.len(), 1);
        // A second event for the same name changes nothing.
        assert!(inflight.on_event(&up, t0).is_empty());
    }

    #[test]
    fn a_down_event_fails_this_attempt_but_not_for_an_older_sa_of_the_same_name() {
        let t0 = Instant::now();
        let mut inflight = Inflight::new(CHILD, Duration::from_secs(3));
        inflight.started(0, "wimark-ap-a", t0);
        // The SA this node set up at an earlier takeover goes away.
        let old = Event::IkeUpdown(updown(false, "wimark-ap-a", sa("DELETING", &[])));
        assert!(inflight.on_event(&old, t0).is_empty());
        // This attempt's IKE_SA comes up, then is closed without its child.
        let up = Event::IkeUpdown(updown(true, "wimark-ap-a", sa("ESTABLISHED", &[])));
        assert!(inflight.on_event(&up, t0).is_empty());
        let down = Event::IkeUpdown(updown(false, "wimark-ap-a", sa("DELETING", &[])));
        let done = inflight.on_event(&down, t0);
        assert!(
            matches!(&done[..], [Done { index: 0, ending: Ending::Failed(why), .. }] if why.contains("before CHILD_SA `tunnel`")),
            "{done:?}"
        );
        // Refused while connecting (e.g. authentication).
        inflight.started(1, "wimark-ap-b", t0);
        let refused = Event::IkeUpdown(updown(false, "wimark-ap-b", sa("CONNECTING", &[])));
        let done = inflight.on_event(&refused, t0);
        assert!(matches!(&done[..], [Done { index: 1, ending: Ending::Failed(_), .. }]));
        assert!(inflight.is_empty());
    }

    #[test]
    fn deadlines_expire_in_order_and_an_alert_names_its_type() {
        let t0 = Instant::now();
        let mut inflight = Inflight::new(CHILD, Duration::from_secs(3));
        inflight.started(0, "wimark-ap-a", t0);
        inflight.started(1, "wimark-ap-b", t0 + Duration::from_secs(1));
        inflight.started(2, "wimark-ap-c", t0 + Duration::from_secs(2));
        assert_eq!(inflight.next_deadline(), Some(t0 + Duration::from_secs(3)));
        let alert = Event::Alert(Alert {
            kind: "peer-auth-failed".to_string(),
            ike_sa: [("wimark-ap-c".to_string(), EventSa::default())]
                .into_iter()
                .collect(),
        });
        let done = inflight.on_event(&alert, t0 + Duration::from_secs(2));
        assert_eq!(
            done[0].ending,
            Ending::Failed("charon alert: peer-auth-failed".to_string())
        );
        let done = inflight.expire(t0 + Duration::from_millis(3500));
        assert_eq!(done.len(), 1);
        assert!(matches!(done[0].ending, Ending::TimedOut(_)), "{done:?}");
        assert_eq!(done[0].took, Duration::from_millis(3500));
        assert_eq!(inflight.next_deadline(), Some(t0 + Duration::from_secs(4)));
        let done = inflight.fail_all("charon closed vici", t0 + Duration::from_secs(5));
        assert_eq!(done.len(), 1);
        assert_eq!(inflight.next_deadline(), None);
    }

    #[test]
    fn events_decode_from_vici_as_charon_sends_them() {
        #[derive(serde::Serialize)]
        struct Child {
            name: &'static str,
            state: &'static str,
        }
        #[derive(serde::Serialize)]
        struct Sa {
            uniqueid: &'static str,
            state: &'static str,
            #[serde(rename = "child-sas")]
            child_sas: HashMap<&'static str, Child>,
        }
        #[derive(serde::Serialize)]
        struct Message {
            up: &'static str,
            #[serde(rename = "wimark-ap-10-77-0-51")]
            sa: Sa,
        }
        let bytes = serde_vici::to_vec(&Message {
            up: "yes",
            sa: Sa {
                uniqueid: "7",
                state: "ESTABLISHED",
                child_sas: [(
                    "tunnel-9",
                    Child {
                        name: "tunnel",
                        state: "INSTALLED",
                    },
                )]
                .into_iter()
                .collect(),
            },
        })
        .expect("encodes");
        let decoded: Updown = serde_vici::from_slice(&bytes).expect("decodes");
        assert!(decoded.is_up());
        let sa = &decoded.sas["wimark-ap-10-77-0-51"];
        assert_eq!(sa.state, "ESTABLISHED");
        assert_eq!(sa.child_sas["tunnel-9"].name, "tunnel");
    }
}
