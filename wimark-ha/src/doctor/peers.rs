//! Whether each instance names its one peer (`peers`): a pair that does not
//! pays the fast rule's multi-node priority skew on every takeover (at
//! priority 100 at least 12.2 ms), and takes adverts from any source.
//!
//! Owns: that check, reading the running daemon's status (its XDP peer
//! table) when there is one. Must not: change anything.

use std::net::IpAddr;

use super::{bad, ok, Finding, Status};
use crate::{
    config::Config,
    control::{self, Request},
    records::Snapshot,
};

pub fn check(config: &Config) -> Vec<Finding> {
    let status = control::request(&config.daemon.control_socket, &Request::Status)
        .ok()
        .filter(|r| r.ok)
        .and_then(|r| r.status);
    config
        .instances
        .iter()
        .map(|instance| {
            let check = format!("peers {}", instance.name);
            if !instance.allowed_peers.is_empty() {
                let names: Vec<String> =
                    instance.allowed_peers.iter().map(|p| p.to_string()).collect();
                return ok(&check, format!("names its peer(s): {}", names.join(", ")));
            }
            let heard = status.as_ref().map(|s| {
                let own = s
                    .instances
                    .iter()
                    .find(|i| i.name == instance.name)
                    .map(|i| i.primary_address);
                other_routers(&s.monitors, own, &instance.interface, instance.vrid)
            });
            let skew = "every fast takeover waits the multi-node priority skew, and adverts from any source are obeyed";
            match heard.as_deref() {
                Some([one]) => bad(
                    Status::Warn,
                    &check,
                    format!("names no peers, and the XDP monitor has heard exactly one other router for VRID {}: {one}; {skew}", instance.vrid),
                    format!("add peers = [\"{one}\"] to [[instance]] {} (the other server's address on {})", instance.name, instance.interface),
                ),
                Some(many) if many.len() > 1 => ok(
                    &check,
                    format!(
                        "names no peers; {} other routers heard for VRID {}, so the multi-node skew is needed",
                        many.len(),
                        instance.vrid
                    ),
                ),
                _ => bad(
                    Status::Warn,
                    &check,
                    format!("names no peers (no other router heard for VRID {} yet, or the daemon is not running); {skew}", instance.vrid),
                    format!("in a pair, add peers = [\"<the other server's address on {}>\"] to [[instance]] {}", instance.interface, instance.name),
                ),
            }
        })
        .collect()
}

/// The sources of valid adverts for `vrid` on `interface` that the running
/// daemon's XDP monitors have heard, other than the instance itself (`own`).
fn other_routers(
    monitors: &[Snapshot],
    own: Option<IpAddr>,
    interface: &str,
    vrid: u8,
) -> Vec<IpAddr> {
    let mut sources: Vec<IpAddr> = monitors
        .iter()
        .filter(|m| m.interface == interface)
        .flat_map(|m| m.vrrp.peers.iter())
        .filter(|p| p.vrid == vrid && Some(p.source) != own)
        .map(|p| p.source)
        .collect();
    sources.sort();
    sources.dedup();
    sources
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_other_routers_are_the_instances_vrid_on_its_link_without_itself() {
        let peer = |vrid: u8, source: &str| crate::monitor::PeerStats {
            vrid,
            source: source.parse().expect("ip"),
            priority: 100,
            interval_ms: 10,
            adverts: 5,
            last_seen_ms_ago: 0,
            version: 3,
            address_count: 1,
            auth_type: 0,
            last_seen_ns: 0,
        };
        let mut monitor = Snapshot {
            interface: "eth1".to_string(),
            ..Default::default()
        };
        monitor.vrrp.peers = vec![peer(67, "10.77.0.2"), peer(68, "10.77.0.3"), peer(67, "10.77.0.1")];
        let monitors = [monitor];
        let own = Some("10.77.0.1".parse().expect("ip"));
        assert_eq!(
            other_routers(&monitors, own, "eth1", 67),
            ["10.77.0.2".parse::<IpAddr>().expect("ip")]
        );
        assert!(other_routers(&monitors, own, "eth0", 67).is_empty());
    }
}
