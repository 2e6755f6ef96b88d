//! Which APs came back after a takeover, session by session. Sans-IO: the
//! daemon feeds in what the XDP tables show (each AP address and IKE port's
//! latest IKE session start, each MQTT connection it opened) and reads the
//! verdict.
//!
//! Owns: the rule "an AP is back when every session it had before the
//! failure is back" — its IKE_SA (when IKE was seen from it) and as many
//! MQTT connections as it had (the synced ones, at most
//! [`super::mqtt::MAX_MQTT_PER_AP`]). MQTT connections are counted, not
//! matched one to one: a reconnecting client comes from a new port.
//! Several APs behind one NAT address are one address with several IKE_SAs
//! (one per NAT-T port): each new IKE port there is one AP's IKE_SA back,
//! and since their MQTT connections cannot be told apart on the wire, each
//! MQTT connection still missing there may be a different AP's — the
//! address counts as many whole APs as are certainly whole.
//! Must not: read the kernel's tables, the clock or the journal.

use std::{collections::HashMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use super::{sync::SyncedAp, ApsBackDetail, MAX_MISSING_NAMED};

/// The sessions the APs at one address had before the takeover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectedAp {
    pub address: IpAddr,
    /// Its IKE_SAs: 0 when no IKE was seen from it, 1 for an AP of its own,
    /// more for APs behind one NAT address (as the old master's IKE daemon
    /// listed them).
    pub ike: usize,
    /// Its MQTT connections the old master saw in its term.
    pub mqtt: usize,
}

impl ExpectedAp {
    pub fn from_synced(ap: &SyncedAp) -> Self {
        Self {
            address: ap.address,
            ike: ap.ike_peers.len().max(usize::from(ap.ike_port != 0)),
            mqtt: ap.mqtt.len(),
        }
    }

    /// The APs this address stands for.
    fn aps(&self) -> usize {
        self.ike.max(1)
    }
}

/// Sessions expected and back, per kind, over one takeover's APs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsBack {
    pub ike_expected: usize,
    pub ike_back: usize,
    pub mqtt_expected: usize,
    pub mqtt_back: usize,
}

impl std::fmt::Display for SessionsBack {
    /// "sessions back: IKE 19 of 20, MQTT 37 of 40".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sessions back: IKE {} of {}, MQTT {} of {}",
            self.ike_back, self.ike_expected, self.mqtt_back, self.mqtt_expected
        )
    }
}

#[derive(Default)]
struct Progress {
    /// Per IKE port, the first IKE session start seen after the decision.
    ike_opened: HashMap<u16, u64>,
    /// MQTT connections opened after the decision: (AP port, broker port)
    /// → opening time.
    mqtt_opened: HashMap<(u16, u16), u64>,
}

impl Progress {
    /// The `n`th MQTT opening (1-based), in time order.
    fn nth_mqtt(&self, n: usize) -> Option<u64> {
        nth(self.mqtt_opened.values(), n)
    }

    /// The `n`th IKE port to open a session (1-based), in time order.
    fn nth_ike(&self, n: usize) -> Option<u64> {
        nth(self.ike_opened.values(), n)
    }

    fn first_any(&self) -> Option<u64> {
        self.ike_opened
            .values()
            .chain(self.mqtt_opened.values())
            .min()
            .copied()
    }
}

fn nth<'a>(times: impl Iterator<Item = &'a u64>, n: usize) -> Option<u64> {
    let mut times: Vec<u64> = times.copied().collect();
    times.sort_unstable();
    n.checked_sub(1).and_then(|i| times.get(i).copied())
}

/// One takeover's watch: who is expected, what came back.
pub struct BackWatch {
    decided_ns: u64,
    expected: Vec<ExpectedAp>,
    index: HashMap<IpAddr, usize>,
    progress: Vec<Progress>,
    /// With no AP expected (none known before): any AP that opens a
    /// session, and when.
    unexpected: HashMap<IpAddr, Progress>,
}

impl BackWatch {
    /// `expected` one entry per AP (a later entry for the same address
    /// wins); `decided_ns` the takeover decision (CLOCK_MONOTONIC).
    pub fn new(decided_ns: u64, expected: Vec<ExpectedAp>) -> Self {
        let mut index = HashMap::new();
        let mut unique: Vec<ExpectedAp> = Vec::with_capacity(expected.len());
        for ap in expected {
            match index.get(&ap.address) {
                Some(&i) => unique[i] = ap,
                None => {
                    index.insert(ap.address, unique.len());
                    unique.push(ap);
                }
            }
        }
        let progress = unique.iter().map(|_| Progress::default()).collect();
        Self {
            decided_ns,
            expected: unique,
            index,
            progress,
            unexpected: HashMap::new(),
        }
    }

    fn progress_of(&mut self, address: IpAddr) -> Option<&mut Progress> {
        if self.expected.is_empty() {
            return Some(self.unexpected.entry(address).or_default());
        }
        let i = *self.index.get(&address)?;
        self.progress.get_mut(i)
    }

    /// The latest IKE session start (IKE_SA_INIT / IKE_AUTH) from an AP
    /// address and IKE port. Stamps from before the decision are the old
    /// term's; the first after it counts, once per port.
    pub fn ike_session(&mut self, address: IpAddr, ike_port: u16, started_ns: u64) {
        if started_ns < self.decided_ns {
            return;
        }
        if let Some(progress) = self.progress_of(address) {
            let at = progress.ike_opened.entry(ike_port).or_insert(started_ns);
            *at = (*at).min(started_ns);
        }
    }

    /// An MQTT connection the AP opened (its SYN, `opened_ns`; 0 when the
    /// connection was entered mid-stream, so not opened after the decision).
    pub fn mqtt_opened(&mut self, address: IpAddr, ap_port: u16, broker_port: u16, opened_ns: u64) {
        if opened_ns == 0 || opened_ns < self.decided_ns {
            return;
        }
        if let Some(progress) = self.progress_of(address) {
            let at = progress
                .mqtt_opened
                .entry((ap_port, broker_port))
                .or_insert(opened_ns);
            *at = (*at).min(opened_ns);
        }
    }

    /// When each of the APs at address `i` was whole again (ascending; as
    /// many as are certainly whole). One AP: at its last expected session
    /// back; with nothing expected (only ESP or data seen), at its first
    /// session of any kind. Several behind one address: the `k`th at the
    /// `k`th IKE_SA back, once every MQTT connection there is back; with
    /// `m` connections missing, `m` of the IKE_SAs back are not counted
    /// (each missing connection may be another AP's).
    fn back_times(&self, i: usize) -> Vec<u64> {
        let (expected, progress) = (&self.expected[i], &self.progress[i]);
        if expected.ike == 0 && expected.mqtt == 0 {
            return progress.first_any().into_iter().collect();
        }
        let mqtt_back = progress.mqtt_opened.len().min(expected.mqtt);
        let mqtt_done = if expected.mqtt == 0 {
            Some(0)
        } else {
            progress.nth_mqtt(expected.mqtt)
        };
        if expected.ike == 0 {
            return mqtt_done.into_iter().collect();
        }
        let ike_back = progress.ike_opened.len().min(expected.ike);
        let whole = ike_back.saturating_sub(expected.mqtt - mqtt_back);
        (1..=whole)
            .filter_map(|k| {
                let ike = progress.nth_ike(k)?;
                // Until every connection is back, a whole AP is one whose
                // connections are all among those back: its time is when
                // the last of them came (none back: an AP without any).
                let mqtt = match mqtt_done {
                    Some(at) => at,
                    None if mqtt_back == 0 => 0,
                    None => progress.nth_mqtt(mqtt_back)?,
                };
                Some(ike.max(mqtt))
            })
            .collect()
    }

    /// Every expected AP is whole (or, with none expected, one came).
    pub fn done(&self) -> bool {
        if self.expected.is_empty() {
            return self.unexpected.values().any(|p| p.first_any().is_some());
        }
        (0..self.expected.len()).all(|i| self.back_times(i).len() == self.expected[i].aps())
    }

    /// When the last AP counted came back (ms after the decision).
    pub fn last_back_ms(&self) -> Option<f64> {
        self.detail(false).back_ms.last().copied()
    }

    /// The journal's record of this watch.
    pub fn detail(&self, superseded: bool) -> ApsBackDetail {
        let to_ms = |ns: u64| (ns - self.decided_ns) as f64 / 1e6;
        if self.expected.is_empty() {
            let mut back_ms: Vec<f64> = self
                .unexpected
                .values()
                .filter_map(Progress::first_any)
                .map(to_ms)
                .collect();
            back_ms.sort_by(f64::total_cmp);
            return ApsBackDetail {
                expected: 0,
                back: back_ms.len(),
                back_ms: super::bounded_times(back_ms),
                superseded,
                ..Default::default()
            };
        }
        let mut sessions = SessionsBack::default();
        let mut back_ms = Vec::new();
        let mut missing = Vec::new();
        for (i, (expected, progress)) in self.expected.iter().zip(&self.progress).enumerate() {
            sessions.ike_expected += expected.ike;
            sessions.ike_back += progress.ike_opened.len().min(expected.ike);
            sessions.mqtt_expected += expected.mqtt;
            sessions.mqtt_back += progress.mqtt_opened.len().min(expected.mqtt);
            let times = self.back_times(i);
            if times.len() < expected.aps() && missing.len() < MAX_MISSING_NAMED {
                missing.push(describe_missing(expected, progress));
            }
            back_ms.extend(times.into_iter().map(to_ms));
        }
        back_ms.sort_by(f64::total_cmp);
        ApsBackDetail {
            expected: self.expected.iter().map(ExpectedAp::aps).sum(),
            back: back_ms.len(),
            missing,
            back_ms: super::bounded_times(back_ms),
            superseded,
            sessions: Some(sessions),
        }
    }
}

/// "10.0.0.5 (IKE; MQTT 1 of 3)": the AP and what of it is not back;
/// behind a shared address "10.0.0.9 (IKE 1 of 2)".
fn describe_missing(expected: &ExpectedAp, progress: &Progress) -> String {
    let mut parts = Vec::new();
    if expected.ike == 0 && expected.mqtt == 0 {
        parts.push("no session".to_string());
    }
    let ike_back = progress.ike_opened.len().min(expected.ike);
    if expected.ike == 1 && ike_back == 0 {
        parts.push("IKE".to_string());
    } else if ike_back < expected.ike {
        parts.push(format!("IKE {ike_back} of {}", expected.ike));
    }
    if progress.mqtt_opened.len() < expected.mqtt {
        parts.push(format!(
            "MQTT {} of {}",
            progress.mqtt_opened.len(),
            expected.mqtt
        ));
    }
    format!("{} ({})", expected.address, parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECIDED: u64 = 1_000_000_000;

    fn ap(last: u8, ike: bool, mqtt: usize) -> ExpectedAp {
        ExpectedAp {
            address: IpAddr::from([10, 0, 0, last]),
            ike: usize::from(ike),
            mqtt,
        }
    }

    fn ms(n: u64) -> u64 {
        DECIDED + n * 1_000_000
    }

    #[test]
    fn an_ap_is_back_only_when_every_session_it_had_is_back() {
        let a = ap(1, true, 3);
        let mut watch = BackWatch::new(DECIDED, vec![a]);
        watch.ike_session(a.address, 4500, ms(80));
        // A later IKE session (a rekey) does not move its time back.
        watch.ike_session(a.address, 4500, ms(900));
        watch.mqtt_opened(a.address, 40001, 1883, ms(1100));
        watch.mqtt_opened(a.address, 40002, 8883, ms(1150));
        assert!(!watch.done(), "one MQTT connection is still missing");
        let detail = watch.detail(false);
        assert_eq!((detail.expected, detail.back), (1, 0));
        assert_eq!(detail.missing, ["10.0.0.1 (MQTT 2 of 3)"]);
        assert_eq!(
            detail.sessions,
            Some(SessionsBack {
                ike_expected: 1,
                ike_back: 1,
                mqtt_expected: 3,
                mqtt_back: 2
            })
        );
        // The same connection seen again does not count twice.
        watch.mqtt_opened(a.address, 40002, 8883, ms(1150));
        assert!(!watch.done());
        watch.mqtt_opened(a.address, 40003, 1883, ms(6000));
        assert!(watch.done());
        let detail = watch.detail(false);
        assert_eq!(detail.back_ms, [6000.0], "back with its last session");
        assert!(detail.missing.is_empty());
    }

    #[test]
    fn a_dead_tunnel_keeps_an_ap_out_whatever_its_mqtt_does() {
        let a = ap(2, true, 1);
        let mut watch = BackWatch::new(DECIDED, vec![a]);
        watch.mqtt_opened(a.address, 40001, 1883, ms(1100));
        // Its IKE session from the old term is not a new one.
        watch.ike_session(a.address, 4500, DECIDED - 1);
        assert!(!watch.done());
        assert_eq!(watch.detail(false).missing, ["10.0.0.2 (IKE)"]);
    }

    #[test]
    fn sessions_of_the_old_term_or_entered_mid_stream_do_not_count() {
        let a = ap(3, false, 1);
        let mut watch = BackWatch::new(DECIDED, vec![a]);
        watch.mqtt_opened(a.address, 40001, 1883, DECIDED - 5);
        watch.mqtt_opened(a.address, 40002, 1883, 0);
        assert!(!watch.done());
        watch.mqtt_opened(a.address, 40003, 1883, ms(900));
        assert!(watch.done());
    }

    #[test]
    fn an_ap_with_nothing_known_counts_at_its_first_session_and_strangers_never() {
        let quiet = ap(4, false, 0);
        let mut watch = BackWatch::new(DECIDED, vec![quiet]);
        watch.ike_session(IpAddr::from([10, 9, 9, 9]), 4500, ms(10));
        assert!(!watch.done(), "an AP nobody expected is not one of ours");
        watch.mqtt_opened(quiet.address, 40001, 1883, ms(50));
        assert!(watch.done());
        assert_eq!(watch.detail(false).back_ms, [50.0]);
    }

    #[test]
    fn with_no_ap_known_the_first_session_ends_the_watch() {
        let mut watch = BackWatch::new(DECIDED, Vec::new());
        assert!(!watch.done());
        watch.ike_session(IpAddr::from([10, 0, 0, 7]), 4500, ms(30));
        assert!(watch.done());
        let detail = watch.detail(true);
        assert_eq!(
            (detail.expected, detail.back, detail.superseded),
            (0, 1, true)
        );
        assert_eq!(detail.sessions, None);
    }

    #[test]
    fn aps_behind_one_nat_address_count_one_by_one_and_only_when_certainly_whole() {
        let nat = ExpectedAp {
            address: IpAddr::from([10, 77, 0, 200]),
            ike: 2,
            mqtt: 2,
        };
        let mut watch = BackWatch::new(DECIDED, vec![nat]);
        // The first AP answers our initiation from its mapped port; the
        // same port again (its IKE_AUTH retransmitted) is still one.
        watch.ike_session(nat.address, 41000, ms(40));
        watch.ike_session(nat.address, 41000, ms(45));
        watch.mqtt_opened(nat.address, 52000, 1883, ms(1000));
        let detail = watch.detail(false);
        assert_eq!((detail.expected, detail.back), (2, 0), "{detail:?}");
        assert_eq!(detail.missing, ["10.77.0.200 (IKE 1 of 2; MQTT 1 of 2)"]);
        // The second AP's IKE_SA: both IKE_SAs back, but one connection is
        // missing and may be either AP's: one AP certainly whole.
        watch.ike_session(nat.address, 47000, ms(60));
        let detail = watch.detail(false);
        assert_eq!((detail.expected, detail.back), (2, 1), "{detail:?}");
        assert_eq!(detail.back_ms, [1000.0]);
        assert!(!watch.done());
        watch.mqtt_opened(nat.address, 52001, 1883, ms(1100));
        assert!(watch.done());
        let detail = watch.detail(false);
        assert_eq!(detail.back_ms, [1100.0, 1100.0]);
        let sessions = detail.sessions.expect("per kind");
        assert_eq!(
            (sessions.ike_expected, sessions.ike_back, sessions.mqtt_expected, sessions.mqtt_back),
            (2, 2, 2, 2)
        );
        // Without MQTT, each IKE_SA back is an AP back, at its own time.
        let quiet = ExpectedAp { mqtt: 0, ..nat };
        let mut watch = BackWatch::new(DECIDED, vec![quiet]);
        watch.ike_session(quiet.address, 47000, ms(70));
        watch.ike_session(quiet.address, 41000, ms(30));
        assert!(watch.done());
        assert_eq!(watch.detail(false).back_ms, [30.0, 70.0]);
    }

    #[test]
    fn expected_ike_sessions_come_from_the_synced_identities() {
        let mut synced = SyncedAp {
            address: IpAddr::from([10, 77, 0, 200]),
            ike_port: 47000,
            age_s: 0,
            mqtt: Vec::new(),
            mqtt_beyond_bound: 0,
            ike_peers: Vec::new(),
        };
        assert_eq!(ExpectedAp::from_synced(&synced).ike, 1);
        synced.ike_peers = [41000, 47000]
            .map(|port| crate::recovery::ike_sas::IkePeer {
                port,
                id: format!("ap-{port}"),
            })
            .to_vec();
        assert_eq!(ExpectedAp::from_synced(&synced).ike, 2);
        synced.ike_port = 0;
        synced.ike_peers.clear();
        assert_eq!(ExpectedAp::from_synced(&synced).ike, 0);
    }

    #[test]
    fn whole_aps_are_counted_and_sessions_per_kind() {
        let (a, b, c) = (ap(1, true, 1), ap(2, true, 2), ap(3, true, 0));
        let mut watch = BackWatch::new(DECIDED, vec![a, b, c, a]);
        for x in [a, b, c] {
            watch.ike_session(x.address, 4500, ms(100));
        }
        watch.mqtt_opened(a.address, 1, 1883, ms(1000));
        watch.mqtt_opened(b.address, 2, 1883, ms(1000));
        let detail = watch.detail(false);
        assert_eq!(
            (detail.expected, detail.back),
            (3, 2),
            "a duplicate is one AP"
        );
        assert_eq!(detail.missing, ["10.0.0.2 (MQTT 1 of 2)"]);
        let sessions = detail.sessions.expect("per kind");
        assert_eq!((sessions.ike_expected, sessions.ike_back), (3, 3));
        assert_eq!((sessions.mqtt_expected, sessions.mqtt_back), (3, 2));
    }
}
