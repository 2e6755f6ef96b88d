//! The AP recovery's decisions after a takeover, sans-IO: which APs the
//! new master reaches out to, in what order, from which VIP, and whom it
//! expects back. The daemon gathers the inputs (the synced table, its own
//! XDP table), asks [`plan`] once at the takeover decision, and carries the
//! plan out (the MQTT kicks, then the IKE hook) when the recovery starts.
//!
//! Owns: the rules — the peer's view of an AP wins over ours (the APs were
//! talking to it); our own MQTT connections are from an earlier term and
//! never kicked; the hook's list has one entry per IKE_SA (several APs
//! behind one NAT address are several entries), the APs most recently
//! heard first; an address family's kicks go out from its first VIP, and
//! an AP of a family without a VIP is counted, not kicked. Must not: read
//! tables, sockets or the clock.

use std::{collections::BTreeMap, net::IpAddr};

use super::{back::ExpectedAp, mqtt::MqttSession, sync::SyncedAp, ApEntry, ApList};

/// The MQTT kicks of one address family: from which VIP, to which
/// connections (AP address, connection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyKicks {
    pub vip: IpAddr,
    pub connections: Vec<(IpAddr, MqttSession)>,
}

/// One takeover's recovery, decided.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The IKE hook's input, in the order the hook should go.
    pub list: ApList,
    /// Of the list's entries, those known from the peer's sync.
    pub synced: usize,
    /// Empty when `mqtt_kick` is off.
    pub kicks: Vec<FamilyKicks>,
    /// Connections not kicked: beyond the per-AP bound at the old master,
    /// or of an address family the instance has no VIP of.
    pub kicks_beyond_bound: usize,
    pub kicks_without_vip: usize,
    /// Whom the APs-back watch waits for.
    pub expected: Vec<ExpectedAp>,
}

/// The inputs: the instance, its VIPs, the APs our own monitor saw (their
/// connections are not read: they are an earlier term's), the peer's
/// synced table, and whether to kick MQTT connections.
pub fn plan(
    instance: &str,
    virtual_ips: &[IpAddr],
    own: Vec<SyncedAp>,
    synced: Vec<SyncedAp>,
    mqtt_kick: bool,
) -> Plan {
    let synced_addresses: std::collections::BTreeSet<IpAddr> =
        synced.iter().map(|ap| ap.address).collect();
    let mut all: BTreeMap<IpAddr, SyncedAp> = own
        .into_iter()
        .map(|mut ap| {
            // Our own connections are from an earlier term (the APs have
            // moved them to the peer since): dead, never kicked or waited
            // for.
            ap.mqtt.clear();
            ap.mqtt_beyond_bound = 0;
            (ap.address, ap)
        })
        .collect();
    all.extend(synced.into_iter().map(|ap| (ap.address, ap)));
    // Most recently heard first: with the hook working a few APs at a
    // time, the APs that were busy just before the takeover go first.
    let mut ordered: Vec<SyncedAp> = all.into_values().collect();
    ordered.sort_by_key(|ap| (ap.age_s, ap.address));
    let list = ApList {
        version: super::AP_LIST_VERSION,
        instance: instance.to_string(),
        virtual_ips: virtual_ips.to_vec(),
        aps: ordered.iter().flat_map(ApEntry::for_synced).collect(),
    };
    let synced_count = ordered
        .iter()
        .filter(|ap| synced_addresses.contains(&ap.address))
        .map(|ap| ap.ike_peers.len().max(1))
        .sum();
    let mut plan = Plan {
        list,
        synced: synced_count,
        expected: ordered.iter().map(ExpectedAp::from_synced).collect(),
        ..Plan::default()
    };
    if mqtt_kick {
        plan.kicks_beyond_bound = ordered
            .iter()
            .map(|ap| usize::from(ap.mqtt_beyond_bound))
            .sum();
        for ipv4 in [true, false] {
            let connections: Vec<(IpAddr, MqttSession)> = ordered
                .iter()
                .filter(|ap| ap.address.is_ipv4() == ipv4)
                .flat_map(|ap| ap.mqtt.iter().map(|session| (ap.address, *session)))
                .collect();
            if connections.is_empty() {
                continue;
            }
            // The APs' broker address is the instance's first VIP of
            // their family.
            match virtual_ips.iter().find(|v| v.is_ipv4() == ipv4) {
                Some(vip) => plan.kicks.push(FamilyKicks {
                    vip: *vip,
                    connections,
                }),
                None => plan.kicks_without_vip += connections.len(),
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::ike_sas::IkePeer;

    fn ap(address: &str, age_s: u16, connections: &[u16]) -> SyncedAp {
        SyncedAp {
            address: address.parse().expect("ip"),
            ike_port: 4500,
            age_s,
            mqtt: connections
                .iter()
                .map(|port| MqttSession {
                    ap_port: *port,
                    broker_port: 1883,
                    position: None,
                })
                .collect(),
            mqtt_beyond_bound: 0,
            ike_peers: Vec::new(),
        }
    }

    fn vips() -> Vec<IpAddr> {
        vec![
            "10.10.10.3".parse().expect("ip"),
            "fd00::3".parse().expect("ip"),
        ]
    }

    #[test]
    fn the_peers_view_wins_and_our_own_connections_are_never_kicked() {
        let mine = ap("10.0.0.1", 0, &[40001]);
        let mut theirs = ap("10.0.0.1", 3, &[40002]);
        theirs.ike_port = 47000;
        let only_mine = ap("10.0.0.2", 1, &[40003]);
        let plan = plan(
            "WIM1",
            &vips(),
            vec![mine, only_mine],
            vec![theirs.clone()],
            true,
        );
        assert_eq!(plan.list.aps.len(), 2);
        let first = &plan.list.aps[0];
        assert_eq!(
            (first.address.as_str(), first.ike_port),
            ("10.0.0.2", Some(4500)),
            "most recently heard first"
        );
        assert_eq!(plan.list.aps[1].ike_port, Some(47000), "the peer's port");
        assert_eq!(plan.synced, 1);
        assert_eq!(
            plan.kicks,
            [FamilyKicks {
                vip: vips()[0],
                connections: vec![("10.0.0.1".parse().expect("ip"), theirs.mqtt[0])],
            }],
            "only the peer's connection is this term's"
        );
        assert_eq!(
            plan.expected
                .iter()
                .map(|e| (e.address.to_string(), e.ike, e.mqtt))
                .collect::<Vec<_>>(),
            [
                ("10.0.0.2".to_string(), 1, 0),
                ("10.0.0.1".to_string(), 1, 1)
            ]
        );
    }

    #[test]
    fn each_family_is_kicked_from_its_own_vip_and_a_family_without_one_is_counted() {
        let v4 = ap("10.0.0.1", 0, &[40001, 40002]);
        let v6 = ap("fd00::9", 0, &[40003]);
        let mut bounded = ap("10.0.0.3", 0, &[40004]);
        bounded.mqtt_beyond_bound = 4;
        let synced = vec![v4, v6, bounded];
        let both = plan("WIM1", &vips(), Vec::new(), synced.clone(), true);
        assert_eq!(
            both.kicks
                .iter()
                .map(|k| (k.vip, k.connections.len()))
                .collect::<Vec<_>>(),
            [(vips()[0], 3), (vips()[1], 1)]
        );
        assert_eq!((both.kicks_beyond_bound, both.kicks_without_vip), (4, 0));
        let v4_only = plan("WIM1", &vips()[..1], Vec::new(), synced.clone(), true);
        assert_eq!(v4_only.kicks.len(), 1);
        assert_eq!(v4_only.kicks_without_vip, 1);
        let off = plan("WIM1", &vips(), Vec::new(), synced, false);
        assert!(off.kicks.is_empty());
        assert_eq!(off.list.aps.len(), 3, "the hook still gets every AP");
    }

    #[test]
    fn aps_behind_one_nat_address_are_one_entry_each_and_expected_as_many() {
        let mut nat = ap("10.77.0.200", 0, &[52000, 52001]);
        nat.ike_peers = vec![
            IkePeer {
                port: 41000,
                id: "192.168.77.11".to_string(),
            },
            IkePeer {
                port: 47000,
                id: "192.168.77.12".to_string(),
            },
        ];
        let plan = plan("WIM1", &vips(), Vec::new(), vec![nat], true);
        assert_eq!(
            plan.list
                .aps
                .iter()
                .map(|e| (e.ike_port, e.ike_id.as_deref()))
                .collect::<Vec<_>>(),
            [
                (Some(41000), Some("192.168.77.11")),
                (Some(47000), Some("192.168.77.12"))
            ]
        );
        assert_eq!(plan.synced, 2);
        assert_eq!((plan.expected[0].ike, plan.expected[0].mqtt), (2, 2));
    }
}
