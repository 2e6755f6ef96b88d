//! What the master's IKE daemon knows about each AP: the port and the IKE
//! identity of every IKE_SA an AP holds with a VIP, read from charon over
//! vici (`list-sas`) and carried to the peer in the AP sync.
//!
//! The XDP monitor sees addresses and ports, never identities (they travel
//! encrypted in IKE_AUTH). Behind a NAT the AP's identity is not the
//! address the controller sees (it is the AP's private address, or a name),
//! and several APs may share that address, each with its own NAT-T port: a
//! new master needs both to send each AP an INITIAL_CONTACT for the right
//! identity, at the right port (issue 28).
//!
//! Owns: the reading of `list-sas` into [`IkePeer`]s per address.
//! Must not: change anything in charon (it only lists), or wait on charon
//! without a bound.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::Path,
    time::Duration,
};

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

/// IKE_SAs kept per AP address (several APs behind one NAT address); the
/// most recently established first, the rest counted.
pub const MAX_IKE_PEERS_PER_ADDRESS: usize = 8;
/// The longest identity carried (the sync spends one byte on its length);
/// a longer one is left out and counted.
pub const MAX_IKE_ID: usize = 255;
/// How often the master asks its IKE daemon (identities change when an AP
/// re-authenticates; a new AP's is known at most this late).
pub const READ_EVERY: Duration = Duration::from_secs(5);
/// One `list-sas` must finish within this: a bound for a charon that
/// hangs, not a speed target — at 5 000 IKE_SAs on a busy 2-vCPU lab
/// machine a listing took over 3 s, and a 3 s bound kept the sync on a
/// listing from when 4 867 were up.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The pause between listings is at least this many times the last
/// listing's duration, so that listing a large table never takes more than
/// a fifth of the IKE daemon's attention.
pub const READ_PAUSE_FACTOR: u32 = 4;

/// One IKE_SA of an AP, as the master's IKE daemon sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IkePeer {
    /// The AP's UDP port (500, 4500, or what a NAT mapped it to).
    pub port: u16,
    /// Its IKE identity, as it authenticated (`remote-id`).
    pub id: String,
}

/// One IKE_SA of `list-sas`, the fields we read (vici sends every value as
/// text).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ListedSa {
    #[serde(default)]
    pub state: String,
    #[serde(default, rename = "local-host")]
    pub local_host: String,
    #[serde(default, rename = "remote-host")]
    pub remote_host: String,
    #[serde(default, rename = "remote-port")]
    pub remote_port: String,
    #[serde(default, rename = "remote-id")]
    pub remote_id: String,
    /// Seconds since it was established.
    #[serde(default)]
    pub established: String,
}

/// Every AP's IKE peers, and what was left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IkePeers {
    pub by_address: BTreeMap<IpAddr, Vec<IkePeer>>,
    /// IKE_SAs beyond [`MAX_IKE_PEERS_PER_ADDRESS`] at one address.
    pub beyond_bound: usize,
    /// IKE_SAs whose identity is longer than [`MAX_IKE_ID`].
    pub id_too_long: usize,
}

/// The established IKE_SAs whose local address is one of `vips` (the
/// APs' peer), grouped by the AP's address. Sans-IO: `list-sas` events in.
pub fn peers(sas: impl IntoIterator<Item = ListedSa>, vips: &[IpAddr]) -> IkePeers {
    let mut found = IkePeers::default();
    let mut with_age: BTreeMap<IpAddr, Vec<(u64, IkePeer)>> = BTreeMap::new();
    for sa in sas {
        if sa.state != "ESTABLISHED" {
            continue;
        }
        let (Ok(local), Ok(remote), Ok(port)) = (
            sa.local_host.parse::<IpAddr>(),
            sa.remote_host.parse::<IpAddr>(),
            sa.remote_port.parse::<u16>(),
        ) else {
            continue;
        };
        if !vips.contains(&local) || sa.remote_id.is_empty() || sa.remote_id == "%any" {
            continue;
        }
        if sa.remote_id.len() > MAX_IKE_ID {
            found.id_too_long += 1;
            continue;
        }
        let age = sa.established.parse::<u64>().unwrap_or(u64::MAX);
        with_age.entry(remote).or_default().push((
            age,
            IkePeer {
                port,
                id: sa.remote_id,
            },
        ));
    }
    for (address, mut listed) in with_age {
        // Most recent first; one entry per (port, identity): a rekeyed
        // IKE_SA may be listed twice for a moment.
        listed.sort();
        let mut peers: Vec<IkePeer> = Vec::new();
        for (_, peer) in listed {
            if peers.contains(&peer) {
                continue;
            }
            if peers.len() == MAX_IKE_PEERS_PER_ADDRESS {
                found.beyond_bound += 1;
                continue;
            }
            peers.push(peer);
        }
        found.by_address.insert(address, peers);
    }
    found
}

/// Listings an address may be missing from before its IKE peers are
/// dropped: `list-sas` with `noblock` skips an IKE_SA that is busy at that
/// moment (at 5 000, one in a listing), and the AP has not gone for that.
pub const MISSES_KEPT: u8 = 3;

/// `new` with the peers of addresses that `previous` had and `new` lacks,
/// each carried over at most [`MISSES_KEPT`] listings in a row (`missed`
/// counts them; sans-IO).
pub fn carry_over(
    previous: Option<&IkePeers>,
    mut new: IkePeers,
    missed: &mut BTreeMap<IpAddr, u8>,
) -> IkePeers {
    missed.retain(|address, _| !new.by_address.contains_key(address));
    if let Some(previous) = previous {
        for (address, peers) in &previous.by_address {
            if new.by_address.contains_key(address) {
                continue;
            }
            let misses = missed.entry(*address).or_insert(0);
            *misses += 1;
            if *misses <= MISSES_KEPT {
                new.by_address.insert(*address, peers.clone());
            }
        }
    }
    missed.retain(|_, misses| *misses <= MISSES_KEPT);
    new
}

#[derive(Serialize)]
struct ListSas {
    /// Do not wait for IKE_SAs that are busy (charon answers with what it
    /// can list at once).
    noblock: &'static str,
}

/// Asks charon at `socket` for its IKE_SAs (bounded by [`READ_TIMEOUT`]).
/// Costs one vici connection and one event per IKE_SA (~1 KiB each).
pub async fn read(socket: &Path, vips: &[IpAddr]) -> Result<IkePeers, String> {
    let listing = async {
        let mut client = rsvici::unix::connect(socket)
            .await
            .map_err(|e| format!("vici {}: {e}", socket.display()))?;
        let mut events = Box::pin(client.stream_request::<_, HashMap<String, ListedSa>>(
            "list-sas",
            "list-sa",
            ListSas { noblock: "yes" },
        ));
        let mut sas = Vec::new();
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| format!("vici list-sas: {e}"))?;
            sas.extend(event.into_values());
        }
        Ok::<_, String>(sas)
    };
    match tokio::time::timeout(READ_TIMEOUT, listing).await {
        Ok(Ok(sas)) => Ok(peers(sas, vips)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "vici {}: no answer to list-sas within {READ_TIMEOUT:?}",
            socket.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(local: &str, remote: &str, port: &str, id: &str, age: &str) -> ListedSa {
        ListedSa {
            state: "ESTABLISHED".to_string(),
            local_host: local.to_string(),
            remote_host: remote.to_string(),
            remote_port: port.to_string(),
            remote_id: id.to_string(),
            established: age.to_string(),
        }
    }

    const VIP: &str = "10.77.0.100";

    #[test]
    fn two_aps_behind_one_address_are_two_peers_most_recent_first() {
        let vips = [VIP.parse().expect("ip")];
        let found = peers(
            [
                sa(VIP, "10.77.0.200", "41000", "192.168.77.11", "30"),
                sa(VIP, "10.77.0.200", "47000", "192.168.77.12", "5"),
                sa(VIP, "10.77.0.51", "500", "10.77.0.51", "100"),
                // Not on a VIP: another tunnel of the server.
                sa("10.77.0.1", "10.9.9.9", "500", "other", "1"),
                // Not established yet.
                ListedSa {
                    state: "CONNECTING".to_string(),
                    ..sa(VIP, "10.77.0.52", "500", "10.77.0.52", "0")
                },
                // No identity to use.
                sa(VIP, "10.77.0.53", "500", "%any", "0"),
                // Listed twice while it rekeys: one peer.
                sa(VIP, "10.77.0.51", "500", "10.77.0.51", "2"),
            ],
            &vips,
        );
        let behind_nat = &found.by_address[&"10.77.0.200".parse::<IpAddr>().expect("ip")];
        assert_eq!(
            behind_nat,
            &[
                IkePeer {
                    port: 47000,
                    id: "192.168.77.12".to_string()
                },
                IkePeer {
                    port: 41000,
                    id: "192.168.77.11".to_string()
                },
            ]
        );
        assert_eq!(found.by_address.len(), 2, "{found:?}");
        assert_eq!(
            found.by_address[&"10.77.0.51".parse::<IpAddr>().expect("ip")].len(),
            1
        );
    }

    #[test]
    fn peers_beyond_the_bound_and_overlong_identities_are_counted() {
        let vips = [VIP.parse().expect("ip")];
        let many = (0..MAX_IKE_PEERS_PER_ADDRESS + 3).map(|n| {
            sa(
                VIP,
                "10.77.0.200",
                &(40000 + n).to_string(),
                &format!("ap-{n}"),
                &n.to_string(),
            )
        });
        let long = sa(VIP, "10.77.0.60", "500", &"x".repeat(MAX_IKE_ID + 1), "1");
        let found = peers(many.chain([long]), &vips);
        let kept = &found.by_address[&"10.77.0.200".parse::<IpAddr>().expect("ip")];
        assert_eq!(kept.len(), MAX_IKE_PEERS_PER_ADDRESS);
        assert_eq!(kept[0].id, "ap-0", "the most recently established first");
        assert_eq!((found.beyond_bound, found.id_too_long), (3, 1));
        assert!(!found
            .by_address
            .contains_key(&"10.77.0.60".parse::<IpAddr>().expect("ip")));
    }

    #[test]
    fn an_address_missing_from_one_listing_keeps_its_peers_for_a_few() {
        let vips = [VIP.parse().expect("ip")];
        let both = peers(
            [
                sa(VIP, "10.77.1.1", "500", "10.77.1.1", "5"),
                sa(VIP, "10.77.1.2", "500", "10.77.1.2", "5"),
            ],
            &vips,
        );
        let one = || peers([sa(VIP, "10.77.1.1", "500", "10.77.1.1", "10")], &vips);
        let gone: IpAddr = "10.77.1.2".parse().expect("ip");
        let mut missed = BTreeMap::new();
        let mut current = carry_over(None, both, &mut missed);
        for listing in 1..=MISSES_KEPT {
            current = carry_over(Some(&current), one(), &mut missed);
            assert!(current.by_address.contains_key(&gone), "kept after {listing} miss(es)");
        }
        current = carry_over(Some(&current), one(), &mut missed);
        assert!(!current.by_address.contains_key(&gone), "dropped after {} misses", MISSES_KEPT + 1);
        assert!(missed.is_empty(), "{missed:?}");
        // Back in a listing: counted afresh.
        let back = peers([sa(VIP, "10.77.1.2", "500", "10.77.1.2", "1")], &vips);
        current = carry_over(Some(&current), back, &mut missed);
        assert!(current.by_address.contains_key(&gone));
    }

    #[tokio::test]
    async fn an_ike_daemon_that_is_not_there_is_an_error_naming_its_socket() {
        let e = read(Path::new("/nonexistent/charon.vici"), &[])
            .await
            .expect_err("no socket");
        assert!(e.contains("/nonexistent/charon.vici"), "{e}");
    }
}
