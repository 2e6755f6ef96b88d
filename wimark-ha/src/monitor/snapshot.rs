//! Reading the monitor's maps into plain values, and the JSON shape that
//! `wimark-ha stats --json` prints (a contract scripts rely on: add fields,
//! never rename or remove them).

use std::{net::IpAddr, time::Duration};

use aya::{
    maps::{HashMap, PerCpuArray},
    Ebpf,
};
use serde::{Deserialize, Serialize};
use wimark_ha_common::abi::{
    ApSet, Counter, IkeSessionKey, IpBytes, MqttConnection, MqttKey, PeerKey, PeerRecord,
    TrafficCounter, AP_SET_WAYS, AP_TABLE_MAX_APS, MAP_APS, MAP_COUNTERS, MAP_IKE_SESSIONS,
    MAP_MQTT, MAP_PEERS,
};

use super::MonitorError;
use crate::clock::monotonic_now_ns;

/// An AP counts as active if the monitor saw a packet of it this recently.
pub const ACTIVE_AP_WINDOW: Duration = Duration::from_secs(60);

fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> MonitorError {
    move |source| MonitorError::Map { map, source }
}

fn map<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a aya::maps::Map, MonitorError> {
    ebpf.map(name)
        .ok_or(MonitorError::ObjectMismatch { what: "map", name })
}

/// Every traffic counter, summed over CPUs, indexed by [`Counter`].
pub fn read_counters(
    ebpf: &Ebpf,
) -> Result<[TrafficCounter; Counter::COUNT as usize], MonitorError> {
    let array: PerCpuArray<_, TrafficCounter> =
        PerCpuArray::try_from(map(ebpf, MAP_COUNTERS)?).map_err(map_error(MAP_COUNTERS))?;
    let mut totals = [TrafficCounter::default(); Counter::COUNT as usize];
    for counter in Counter::ALL {
        let per_cpu = array
            .get(&(counter as u32), 0)
            .map_err(map_error(MAP_COUNTERS))?;
        let total = &mut totals[counter as usize];
        for value in per_cpu.iter() {
            total.packets += value.packets;
            total.bytes += value.bytes;
        }
    }
    Ok(totals)
}

pub fn read_peers(ebpf: &Ebpf) -> Result<Vec<(PeerKey, PeerRecord)>, MonitorError> {
    let table: HashMap<_, PeerKey, PeerRecord> =
        HashMap::try_from(map(ebpf, MAP_PEERS)?).map_err(map_error(MAP_PEERS))?;
    table
        .iter()
        .map(|entry| entry.map_err(map_error(MAP_PEERS)))
        .collect()
}

/// What the monitor saw of one AP address, all CPUs together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApSeen {
    pub address: IpBytes,
    /// Coarse CLOCK_MONOTONIC, ns.
    pub last_seen_ns: u64,
    pub packets: u64,
    pub bytes: u64,
    /// The AP's latest IKE / NAT-T source port (0: none seen).
    pub ike_port: u16,
}

/// The AP table with each AP's per-CPU slots merged: packets and bytes
/// summed, the latest "last seen". One lookup per set (all CPUs' copies at
/// once): the cost grows with the table's size, not with the APs in it.
pub fn read_aps(ebpf: &Ebpf) -> Result<Vec<ApSeen>, MonitorError> {
    let table: PerCpuArray<_, ApSet> =
        PerCpuArray::try_from(map(ebpf, MAP_APS)?).map_err(map_error(MAP_APS))?;
    let mut merged: std::collections::HashMap<IpBytes, ApSeen> = std::collections::HashMap::new();
    for index in 0..table.len() {
        let per_cpu = table.get(&index, 0).map_err(map_error(MAP_APS))?;
        let slots = per_cpu.iter().flat_map(|set| set.slots.iter());
        for slot in slots.filter(|s| s.address.family != 0) {
            let seen = merged.entry(slot.address).or_insert(ApSeen {
                address: slot.address,
                ..ApSeen::default()
            });
            // The port from the CPU that saw the AP last (a slot without
            // one leaves what another CPU saw).
            let latest = slot.last_seen_ns >= seen.last_seen_ns;
            if slot.ike_port != 0 && (latest || seen.ike_port == 0) {
                seen.ike_port = slot.ike_port;
            }
            seen.last_seen_ns = seen.last_seen_ns.max(slot.last_seen_ns);
            seen.packets += slot.packets;
            seen.bytes += slot.bytes;
        }
    }
    Ok(merged.into_values().collect())
}

/// How many APs the loaded AP table can hold at most (sets x ways; a set
/// that is full evicts before the table is).
pub fn ap_table_capacity(ebpf: &Ebpf) -> Result<u64, MonitorError> {
    let table: PerCpuArray<_, ApSet> =
        PerCpuArray::try_from(map(ebpf, MAP_APS)?).map_err(map_error(MAP_APS))?;
    Ok(u64::from(table.len()) * AP_SET_WAYS as u64)
}

/// A bound on a hash-table walk: the kernel restarts a walk whose entry
/// was removed under it, so a walk is cut at twice the largest table.
const WALK_BOUND: usize = 2 * 4 * AP_TABLE_MAX_APS as usize;

/// Every IKE session start in the monitor's table: (AP address and IKE
/// port, the latest IKE_SA_INIT / IKE_AUTH from it, precise
/// CLOCK_MONOTONIC ns). One lookup per entry (at most
/// `2 x max_aps`).
pub fn read_ike_sessions(ebpf: &Ebpf) -> Result<Vec<(IkeSessionKey, u64)>, MonitorError> {
    let table: HashMap<_, IkeSessionKey, u64> = HashMap::try_from(map(ebpf, MAP_IKE_SESSIONS)?)
        .map_err(map_error(MAP_IKE_SESSIONS))?;
    let unique: std::collections::HashMap<IkeSessionKey, u64> = table
        .iter()
        .take(WALK_BOUND)
        .filter_map(Result::ok)
        .collect();
    Ok(unique.into_iter().collect())
}

/// Every MQTT connection in the monitor's table. One lookup per entry: the
/// cost grows with the connections held (at most `4 x max_aps`).
pub fn read_mqtt(ebpf: &Ebpf) -> Result<Vec<(MqttKey, MqttConnection)>, MonitorError> {
    let table: HashMap<_, MqttKey, MqttConnection> =
        HashMap::try_from(map(ebpf, MAP_MQTT)?).map_err(map_error(MAP_MQTT))?;
    // An entry the program removes mid-walk is skipped; the kernel then
    // restarts the walk at the first key, so the walk is bounded and
    // deduplicated.
    let walk = table
        .iter()
        .take(WALK_BOUND)
        .filter_map(Result::ok);
    let unique: std::collections::HashMap<MqttKey, MqttConnection> = walk.collect();
    Ok(unique.into_iter().collect())
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficTotals {
    pub packets: u64,
    pub bytes: u64,
}

impl From<TrafficCounter> for TrafficTotals {
    fn from(c: TrafficCounter) -> Self {
        Self {
            packets: c.packets,
            bytes: c.bytes,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidCounts {
    pub ttl: u64,
    pub version: u64,
    pub r#type: u64,
    pub length: u64,
    pub checksum: u64,
    /// Address count 0 (RFC 5798 §5.2.5).
    #[serde(default)]
    pub address_count: u64,
    /// Carried in an IP fragment.
    #[serde(default)]
    pub fragment: u64,
}

impl InvalidCounts {
    /// Each reason's name (as `stats --json` spells it) and count, in one
    /// order for every place that prints them.
    pub fn by_reason(&self) -> [(&'static str, u64); 7] {
        [
            ("ttl", self.ttl),
            ("version", self.version),
            ("type", self.r#type),
            ("length", self.length),
            ("checksum", self.checksum),
            ("address_count", self.address_count),
            ("fragment", self.fragment),
        ]
    }

    pub fn total(&self) -> u64 {
        self.by_reason().iter().map(|(_, count)| count).sum()
    }
}

/// `ttl 0 version 0 …`: the reasons in one line.
impl std::fmt::Display for InvalidCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (index, (reason, count)) in self.by_reason().iter().enumerate() {
            let gap = if index == 0 { "" } else { " " };
            write!(f, "{gap}{reason} {count}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStats {
    pub vrid: u8,
    pub source: IpAddr,
    pub priority: u8,
    pub interval_ms: u32,
    pub adverts: u64,
    pub last_seen_ms_ago: u64,
    pub version: u8,
    pub address_count: u8,
    pub auth_type: u8,
    /// Kernel timestamp (CLOCK_MONOTONIC, ns) of the last advert.
    pub last_seen_ns: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpStats {
    pub valid: u64,
    pub valid_bytes: u64,
    /// Valid adverts for an allow-listed VRID from a source not on the
    /// list (included in `valid`; never handed to the daemon).
    pub rogue: u64,
    /// Valid adverts inside a VLAN tag: another VLAN's (not in `valid`;
    /// never handed to the daemon).
    #[serde(default)]
    pub tagged: u64,
    pub invalid: InvalidCounts,
    pub peers: Vec<PeerStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApStats {
    pub ike: TrafficTotals,
    pub nat_t: TrafficTotals,
    pub esp: TrafficTotals,
    pub mqtt: TrafficTotals,
    pub mqtt_tls: TrafficTotals,
    /// AP addresses seen within [`ACTIVE_AP_WINDOW`].
    pub active_aps: u64,
    /// AP addresses in the table (bounded, least recently seen evicted).
    pub known_aps: u64,
    /// Times an AP's entry was taken over by another AP (table pressure).
    pub evicted: u64,
    /// How many APs the table can hold (sets x ways; a set that is full
    /// evicts before the table is).
    #[serde(default)]
    pub capacity: u64,
}

/// Everything the monitor knows at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub interface: String,
    pub vrrp: VrrpStats,
    /// Protocol 112 that is CARP: not VRRP, so not "invalid VRRP".
    pub carp: TrafficTotals,
    pub ap: ApStats,
    pub other: TrafficTotals,
    /// Events the kernel could not queue, both rings (should stay 0).
    pub events_lost: u64,
    /// Of those, adverts the daemon's ring lost (its state machine never
    /// saw them).
    #[serde(default)]
    pub advert_events_lost: u64,
    /// Of those, peer changes lost while `stats` read them (without a
    /// reader none are queued).
    #[serde(default)]
    pub peer_events_lost: u64,
}

impl Snapshot {
    pub fn read(ebpf: &Ebpf, interface: &str) -> Result<Self, MonitorError> {
        let counters = read_counters(ebpf)?;
        let now_ns = monotonic_now_ns();
        let at = |c: Counter| counters[c as usize];
        let mut peers: Vec<PeerStats> = read_peers(ebpf)?
            .into_iter()
            .map(|(key, record)| PeerStats {
                vrid: key.vrid,
                source: IpAddr::from(key.source),
                priority: record.priority,
                interval_ms: record.interval_ms,
                adverts: record.adverts,
                last_seen_ms_ago: now_ns.saturating_sub(record.last_seen_ns) / 1_000_000,
                version: record.version,
                address_count: record.address_count,
                auth_type: record.auth_type,
                last_seen_ns: record.last_seen_ns,
            })
            .collect();
        peers.sort_by_key(|p| (p.vrid, p.source));
        let aps = read_aps(ebpf)?;
        let window_ns = ACTIVE_AP_WINDOW.as_nanos() as u64;
        let active_aps = aps
            .iter()
            .filter(|ap| now_ns.saturating_sub(ap.last_seen_ns) <= window_ns)
            .count();
        Ok(Self {
            interface: interface.to_string(),
            vrrp: VrrpStats {
                valid: at(Counter::VrrpValid).packets,
                valid_bytes: at(Counter::VrrpValid).bytes,
                rogue: at(Counter::VrrpRogue).packets,
                tagged: at(Counter::VrrpTagged).packets,
                invalid: InvalidCounts {
                    ttl: at(Counter::VrrpInvalidTtl).packets,
                    version: at(Counter::VrrpInvalidVersion).packets,
                    r#type: at(Counter::VrrpInvalidType).packets,
                    length: at(Counter::VrrpInvalidLength).packets,
                    checksum: at(Counter::VrrpInvalidChecksum).packets,
                    address_count: at(Counter::VrrpInvalidAddressCount).packets,
                    fragment: at(Counter::VrrpInvalidFragment).packets,
                },
                peers,
            },
            carp: at(Counter::Carp).into(),
            ap: ApStats {
                ike: at(Counter::Ike).into(),
                nat_t: at(Counter::NatT).into(),
                esp: at(Counter::Esp).into(),
                mqtt: at(Counter::Mqtt).into(),
                mqtt_tls: at(Counter::MqttTls).into(),
                active_aps: active_aps as u64,
                known_aps: aps.len() as u64,
                evicted: at(Counter::ApEvicted).packets,
                capacity: ap_table_capacity(ebpf)?,
            },
            other: at(Counter::Other).into(),
            events_lost: at(Counter::AdvertEventsLost).packets
                + at(Counter::PeerEventsLost).packets,
            advert_events_lost: at(Counter::AdvertEventsLost).packets,
            peer_events_lost: at(Counter::PeerEventsLost).packets,
        })
    }

    /// (name, totals) of every traffic class, in display order.
    pub fn classes(&self) -> [(&'static str, TrafficTotals); 9] {
        [
            (
                "vrrp",
                TrafficTotals {
                    packets: self.vrrp.valid,
                    bytes: self.vrrp.valid_bytes,
                },
            ),
            (
                "vrrp-invalid",
                TrafficTotals {
                    packets: self.vrrp.invalid.total(),
                    bytes: 0,
                },
            ),
            ("carp", self.carp),
            ("ike", self.ap.ike),
            ("nat-t", self.ap.nat_t),
            ("esp", self.ap.esp),
            ("mqtt", self.ap.mqtt),
            ("mqtt-tls", self.ap.mqtt_tls),
            ("other", self.other),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::InvalidCounts;

    #[test]
    fn invalid_counts_print_every_reason_once_and_sum_them() {
        let counts = InvalidCounts {
            ttl: 1,
            version: 2,
            r#type: 3,
            length: 4,
            checksum: 5,
            address_count: 6,
            fragment: 7,
        };
        assert_eq!(
            counts.to_string(),
            "ttl 1 version 2 type 3 length 4 checksum 5 address_count 6 fragment 7"
        );
        assert_eq!(counts.total(), 28);
    }
}
