//! Bringing the APs back after a takeover. The VIP moving is not the end of
//! a failover: an AP keeps its stale IPsec SA (strongSwan at its defaults
//! until rekey, ~53 min; with DPD 1 s for 166 s) and its MQTT session until
//! the keepalive, unless the new master reaches out to it.
//!
//! Owns: the AP list handed to recovery hooks — the documented contract
//! ([`ApList`], JSON on the hook's stdin) — and the ready adapter for
//! strongSwan's vici ([`vici`]). Must not: touch the VIP, adverts or the
//! containers (a recovery failure never changes them), or retry without
//! bound.

pub mod back;
pub mod ike_sas;
pub mod mqtt;
pub mod plan;
pub mod sync;
pub mod vici;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What a recovery hook reads on stdin: the APs this controller had before
/// the takeover. `docs/operator-guide.md` documents the contract.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApList {
    /// The contract's version: 2 since `ike_id` (1, the first, had no
    /// version field). Fields are only ever added: a hook written for an
    /// older version reads a newer list.
    #[serde(default = "first_version")]
    pub version: u32,
    /// The instance that was promoted.
    #[serde(default)]
    pub instance: String,
    /// Its virtual addresses (the APs' IKE peer and MQTT broker address).
    #[serde(default)]
    pub virtual_ips: Vec<IpAddr>,
    pub aps: Vec<ApEntry>,
}

/// The version of [`ApList`] this release writes.
pub const AP_LIST_VERSION: u32 = 2;

fn first_version() -> u32 {
    1
}

/// One AP as the old master saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApEntry {
    /// The AP's address as the controller sees it (after any NAT). Kept as
    /// text so that one bad entry is reported on its own, not the whole list.
    pub address: String,
    /// The UDP source port of its IKE traffic: 500, or its NAT-T port
    /// (4500, or what a NAT mapped it to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ike_port: Option<u16>,
    /// The AP's IKE identity, when known (as the old master's IKE daemon
    /// saw it). A hook needs it to send INITIAL_CONTACT to the right
    /// identity; without it the ready adapter assumes the address, which is
    /// wrong behind a NAT (the AP's own identity is its private address, or
    /// a name) and ambiguous when several APs share one public address.
    /// Added in contract version 2; hooks that do not read it keep working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ike_id: Option<String>,
}

impl ApEntry {
    /// The hooks' entries for one synced AP address: one per IKE_SA the old
    /// master's IKE daemon listed there (several APs behind one NAT
    /// address are several APs, each with its port and identity), else one
    /// for the address with the port the XDP monitor saw.
    pub fn for_synced(ap: &sync::SyncedAp) -> Vec<ApEntry> {
        if ap.ike_peers.is_empty() {
            return vec![ApEntry {
                address: ap.address.to_string(),
                ike_port: (ap.ike_port != 0).then_some(ap.ike_port),
                ike_id: None,
            }];
        }
        ap.ike_peers
            .iter()
            .map(|peer| ApEntry {
                address: ap.address.to_string(),
                ike_port: Some(peer.port),
                ike_id: Some(peer.id.clone()),
            })
            .collect()
    }

    pub fn ip(&self) -> Result<IpAddr, String> {
        self.address
            .parse()
            .map_err(|_| format!("`{}` is not an IP address", self.address))
    }
}

/// What happened to one AP.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApOutcome {
    pub address: String,
    pub ok: bool,
    /// From the start of this AP's attempt to its end (ms).
    pub took_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Which way it ended, when the hook says (added with the adapter's
    /// event-driven initiation; a hook that leaves it out is read by `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ApResult>,
}

/// How one AP's initiation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApResult {
    /// Its CHILD_SA is up.
    Ok,
    /// Refused or torn down before its CHILD_SA came up (the error says how).
    Failed,
    /// Nothing decided within the adapter's per-AP deadline.
    TimedOut,
}

/// One takeover's reaching out, as the journal keeps it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecoveryRecord {
    /// APs handed to the hooks: synced from the peer, and our own.
    pub expected: usize,
    /// Of those, known from the peer's sync.
    pub synced: usize,
    /// The IKE hook's result, when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ike: Option<HookReport>,
    /// The stale MQTT connections kicked, when `mqtt_kick` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<mqtt::KickReport>,
}

/// Which APs came back after a takeover: an AP counts once every session it
/// had is back with the new master — a new IKE session (IKE_SA_INIT /
/// IKE_AUTH from it) when IKE was seen from it, and as many new MQTT
/// connections (SYNs) as it had, all stamped by the XDP program; not at its
/// first packet, which may be its stale SA's or connection's. The rule is
/// [`back::BackWatch`]'s.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApsBackDetail {
    /// APs active before the takeover (synced from the peer, and ours);
    /// 0 when none were known (then `back` counts whoever came).
    pub expected: usize,
    pub back: usize,
    /// Expected APs not back when the watch ended, each with what of it is
    /// missing: "10.0.0.5 (IKE; MQTT 1 of 3)" (the first 32).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// Per AP, from the takeover decision to its session, sorted (ms; at
    /// most [`MAX_BACK_TIMES`], evenly spaced ranks ending with the slowest
    /// when more came back: [`bounded_times`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub back_ms: Vec<f64>,
    /// The watch ended early: another takeover of the same instance.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub superseded: bool,
    /// Sessions expected and back per kind (none when no AP was known
    /// before the takeover; missing in entries written before 2026-12-07).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<back::SessionsBack>,
}

/// An instance's latest takeover as `status` shows it: when its APs came
/// back (the same as its journal entry).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LastApsBack {
    pub instance: String,
    pub at_unix_ms: u64,
    pub after_ms: f64,
    pub detail: ApsBackDetail,
}

/// Per-AP times kept in one journal entry.
pub const MAX_BACK_TIMES: usize = 4096;
/// Missing APs named in one journal entry.
pub const MAX_MISSING_NAMED: usize = 32;

impl ApsBackDetail {
    /// The `p`th percentile of the APs back (ms), the missing ones ranked
    /// last: None when the rank falls on a missing AP.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        let all = self.expected.max(self.back);
        if all == 0 {
            return None;
        }
        let rank = ((p / 100.0) * all as f64).ceil().max(1.0) as usize;
        if rank > self.back || self.back_ms.is_empty() {
            return None;
        }
        // `back_ms` holds every time, or evenly spaced ranks of them at
        // more than MAX_BACK_TIMES APs (see [`bounded_times`]).
        let kept = self.back_ms.len();
        let index = if kept >= self.back {
            rank - 1
        } else {
            (rank * kept).div_ceil(self.back).max(1) - 1
        };
        self.back_ms.get(index).copied()
    }
}

/// At most [`MAX_BACK_TIMES`] of `sorted`: all of them, or evenly spaced
/// ranks ending with the slowest, so that a journal entry for 10 000 APs
/// stays small and still says when the last one came back.
pub fn bounded_times(sorted: Vec<f64>) -> Vec<f64> {
    let all = sorted.len();
    if all <= MAX_BACK_TIMES {
        return sorted;
    }
    (1..=MAX_BACK_TIMES)
        .map(|i| sorted[(i * all).div_ceil(MAX_BACK_TIMES) - 1])
        .collect()
}

/// What a recovery hook reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HookReport {
    /// APs it reported as done, and as failed (its JSON lines).
    pub ok: usize,
    pub failed: usize,
    /// Of `failed`, those the hook reported as timed out.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timed_out: usize,
    pub took_ms: f64,
    /// The hook itself failed (would not start, timed out, exited non-zero
    /// without reporting every AP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The first few failures, "address: why".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_thousand_aps_back_keep_a_bounded_list_with_the_slowest_and_true_percentiles() {
        let all: Vec<f64> = (1..=10_000).map(f64::from).collect();
        let kept = bounded_times(all.clone());
        assert_eq!(kept.len(), MAX_BACK_TIMES);
        assert_eq!(kept.last(), Some(&10_000.0));
        let detail = ApsBackDetail {
            expected: 10_000,
            back: 10_000,
            back_ms: kept,
            ..ApsBackDetail::default()
        };
        for p in [1.0, 50.0, 99.0, 100.0] {
            let exact = all[((p / 100.0) * 10_000.0_f64).ceil() as usize - 1];
            let got = detail.percentile_ms(p).expect("all back");
            assert!((got - exact).abs() <= 3.0, "p{p}: {got} vs {exact}");
        }
        // Ten missing: the ranks past the APs back are not answered.
        let short = ApsBackDetail {
            expected: 10_010,
            ..detail
        };
        assert_eq!(short.percentile_ms(100.0), None);
        assert_eq!(bounded_times(vec![3.0, 1.0]), [3.0, 1.0], "short lists are kept whole");
    }

    #[test]
    fn each_ike_sa_at_a_shared_address_is_an_ap_of_its_own() {
        let mut ap = sync::SyncedAp {
            address: "10.77.0.200".parse().expect("ip"),
            ike_port: 47000,
            age_s: 0,
            mqtt: Vec::new(),
            mqtt_beyond_bound: 0,
            ike_peers: Vec::new(),
        };
        assert_eq!(
            ApEntry::for_synced(&ap),
            [ApEntry {
                address: "10.77.0.200".to_string(),
                ike_port: Some(47000),
                ike_id: None
            }],
            "no identities synced: the address and the port seen"
        );
        ap.ike_peers = vec![
            ike_sas::IkePeer {
                port: 47000,
                id: "192.168.77.12".to_string(),
            },
            ike_sas::IkePeer {
                port: 41000,
                id: "192.168.77.11".to_string(),
            },
        ];
        let entries = ApEntry::for_synced(&ap);
        assert_eq!(
            entries
                .iter()
                .map(|e| (e.ike_port, e.ike_id.as_deref()))
                .collect::<Vec<_>>(),
            [(Some(47000), Some("192.168.77.12")), (Some(41000), Some("192.168.77.11"))]
        );
        ap.ike_port = 0;
        ap.ike_peers.clear();
        assert_eq!(ApEntry::for_synced(&ap)[0].ike_port, None, "no IKE seen");
    }

    #[test]
    fn the_contract_reads_as_documented() {
        let text = r#"{"instance":"WIM1","virtual_ips":["10.10.10.3"],
            "aps":[{"address":"10.10.20.7","ike_port":4500},{"address":"fe80::1"},{"address":"ap-7"}]}"#;
        let list: ApList = serde_json::from_str(text).expect("parses");
        assert_eq!(list.instance, "WIM1");
        assert_eq!(list.aps.len(), 3);
        assert_eq!(list.aps[0].ike_port, Some(4500));
        assert_eq!(list.version, 1, "a list without a version is the first one");
        assert_eq!(list.aps[0].ike_id, None);
        let v2 = r#"{"version":2,"aps":[{"address":"10.77.0.200","ike_port":41234,"ike_id":"ap-7.example"}]}"#;
        let newer: ApList = serde_json::from_str(v2).expect("parses");
        assert_eq!(
            (newer.version, newer.aps[0].ike_id.as_deref()),
            (2, Some("ap-7.example"))
        );
        assert!(list.aps[1].ip().is_ok());
        let bad = list.aps[2].ip().expect_err("not an address");
        assert!(bad.contains("ap-7"), "{bad}");
        // Only `aps` is required.
        let minimal: ApList = serde_json::from_str(r#"{"aps":[]}"#).expect("parses");
        assert!(minimal.aps.is_empty());
    }
}
