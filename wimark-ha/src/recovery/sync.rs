//! The AP table, shared by the active node with the standby over the peer
//! link, so that a new master knows which APs to bring back — the APs talk
//! to the VIP, so the standby's own XDP monitor never sees them.
//!
//! One UDP datagram carries up to [`MAX_ENTRIES`] APs, authenticated with
//! HMAC-SHA256 under a key both nodes hold, numbered so a replay is refused.
//! The sender sends what changed since its last datagram plus a slice of
//! the rest, so the whole table is refreshed every [`REFRESH`] at a few
//! datagrams a second; the receiver forgets an AP not mentioned for
//! [`FORGET_AFTER`]. A datagram that fails any check is counted by reason
//! and ignored whole.
//!
//! Owns: the wire format and the receiver's table. Must not: trust a field
//! before the MAC is checked, or hold more than [`MAX_SYNCED_APS`].
//!
//! ```text
//!  0       4               12      14
//!  +-------+---------------+-------+---------------------------+----------+
//!  | "WHA1"| sequence (BE) | count | count x entry (23 bytes)  | HMAC-256 |
//!  +-------+---------------+-------+---------------------------+----------+
//!  entry: family (4|6) | address (16, v4 in the first 4) | ike_port | mqtt_port | age_s
//! ```

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use hmac::{Mac as _, SimpleHmac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = SimpleHmac<Sha256>;

const MAGIC: &[u8; 4] = b"WHA1";
const HEADER: usize = 4 + 8 + 2;
const ENTRY: usize = 1 + 16 + 2 + 2 + 2;
const TAG: usize = 32;
/// Entries per datagram: it stays under 1 400 bytes (no fragments).
pub const MAX_ENTRIES: usize = 58;
/// The receiver holds at most this many APs (the XDP table holds 8 192).
pub const MAX_SYNCED_APS: usize = 16_384;
/// Every AP is sent again at least this often.
pub const REFRESH: Duration = Duration::from_secs(10);
/// An AP the sender stopped mentioning is forgotten after this.
pub const FORGET_AFTER: Duration = Duration::from_secs(45);
/// The shortest key accepted.
pub const MIN_KEY: usize = 16;

/// One AP as the sync carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedAp {
    pub address: IpAddr,
    /// 0: no IKE / MQTT seen from it.
    pub ike_port: u16,
    pub mqtt_port: u16,
    /// Seconds since the sender last saw traffic from it.
    pub age_s: u16,
}

/// Why a datagram was ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncError {
    #[error("shorter than a header and a MAC")]
    Short,
    #[error("not an AP sync datagram (magic)")]
    Magic,
    #[error("MAC does not verify (forged, or another key)")]
    Mac,
    #[error("sequence not newer than the last accepted (replayed)")]
    Replay,
    #[error("length does not match the entry count")]
    Length,
    #[error("an entry's address family is neither 4 nor 6")]
    Family,
    #[error("from another address than the configured peer")]
    Source,
}

/// Builds one authenticated datagram.
pub fn encode(key: &[u8], sequence: u64, aps: &[SyncedAp]) -> Vec<u8> {
    let aps = &aps[..aps.len().min(MAX_ENTRIES)];
    let mut out = Vec::with_capacity(HEADER + aps.len() * ENTRY + TAG);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(&(aps.len() as u16).to_be_bytes());
    for ap in aps {
        let mut address = [0u8; 16];
        let family = match ap.address {
            IpAddr::V4(v4) => {
                address[..4].copy_from_slice(&v4.octets());
                4
            }
            IpAddr::V6(v6) => {
                address.copy_from_slice(&v6.octets());
                6
            }
        };
        out.push(family);
        out.extend_from_slice(&address);
        out.extend_from_slice(&ap.ike_port.to_be_bytes());
        out.extend_from_slice(&ap.mqtt_port.to_be_bytes());
        out.extend_from_slice(&ap.age_s.to_be_bytes());
    }
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    out
}

/// Checks and reads one datagram: (sequence, entries). Nothing is read
/// from the body before its MAC verifies.
pub fn decode(key: &[u8], datagram: &[u8]) -> Result<(u64, Vec<SyncedAp>), SyncError> {
    if datagram.len() < HEADER + TAG {
        return Err(SyncError::Short);
    }
    if &datagram[..4] != MAGIC {
        return Err(SyncError::Magic);
    }
    let (body, tag) = datagram.split_at(datagram.len() - TAG);
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(tag).map_err(|_| SyncError::Mac)?;
    let sequence = u64::from_be_bytes(body[4..12].try_into().expect("8 bytes"));
    let count = usize::from(u16::from_be_bytes([body[12], body[13]]));
    if count > MAX_ENTRIES || body.len() != HEADER + count * ENTRY {
        return Err(SyncError::Length);
    }
    let mut aps = Vec::with_capacity(count);
    for entry in body[HEADER..].chunks_exact(ENTRY) {
        let address: [u8; 16] = entry[1..17].try_into().expect("16 bytes");
        let address = match entry[0] {
            4 => IpAddr::V4(Ipv4Addr::new(
                address[0], address[1], address[2], address[3],
            )),
            6 => IpAddr::V6(Ipv6Addr::from(address)),
            _ => return Err(SyncError::Family),
        };
        let port = |i: usize| u16::from_be_bytes([entry[i], entry[i + 1]]);
        aps.push(SyncedAp {
            address,
            ike_port: port(17),
            mqtt_port: port(19),
            age_s: port(21),
        });
    }
    Ok((sequence, aps))
}

/// What the receiver has heard, for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    pub peer: Option<IpAddr>,
    /// APs known from the peer now.
    pub synced_aps: usize,
    /// Of those, with an MQTT connection known (its port).
    #[serde(default)]
    pub synced_mqtt: usize,
    pub datagrams_sent: u64,
    pub datagrams_accepted: u64,
    /// Ignored datagrams by reason (forged, replayed, malformed...).
    pub rejected: std::collections::BTreeMap<String, u64>,
    /// APs dropped because the table was full.
    pub overflow: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_accepted_ms_ago: Option<u64>,
}

/// The receiver: the peer's AP table as last heard.
pub struct Received {
    peer: IpAddr,
    last_sequence: Option<u64>,
    aps: HashMap<IpAddr, (SyncedAp, Instant)>,
    last_accepted: Option<Instant>,
    pub status: SyncStatus,
}

impl Received {
    pub fn new(peer: IpAddr) -> Self {
        Self {
            peer,
            last_sequence: None,
            aps: HashMap::new(),
            last_accepted: None,
            status: SyncStatus {
                peer: Some(peer),
                ..SyncStatus::default()
            },
        }
    }

    /// One datagram from `source`, received at `now`.
    pub fn accept(
        &mut self,
        key: &[u8],
        source: IpAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Result<usize, SyncError> {
        let result = self.check(key, source, datagram);
        let (sequence, aps) = match result {
            Ok(decoded) => decoded,
            Err(e) => {
                *self.status.rejected.entry(reason_name(e)).or_default() += 1;
                return Err(e);
            }
        };
        self.last_sequence = Some(sequence);
        self.last_accepted = Some(now);
        self.status.datagrams_accepted += 1;
        let count = aps.len();
        for ap in aps {
            if self.aps.len() >= MAX_SYNCED_APS && !self.aps.contains_key(&ap.address) {
                self.status.overflow += 1;
                continue;
            }
            self.aps.insert(ap.address, (ap, now));
        }
        self.expire(now);
        Ok(count)
    }

    fn check(
        &self,
        key: &[u8],
        source: IpAddr,
        datagram: &[u8],
    ) -> Result<(u64, Vec<SyncedAp>), SyncError> {
        if source != self.peer {
            return Err(SyncError::Source);
        }
        let (sequence, aps) = decode(key, datagram)?;
        if self.last_sequence.is_some_and(|last| sequence <= last) {
            return Err(SyncError::Replay);
        }
        Ok((sequence, aps))
    }

    fn expire(&mut self, now: Instant) {
        self.aps
            .retain(|_, (_, heard)| now.saturating_duration_since(*heard) < FORGET_AFTER);
        self.status.synced_aps = self.aps.len();
        self.status.synced_mqtt = self
            .aps
            .values()
            .filter(|(ap, _)| ap.mqtt_port != 0)
            .count();
    }

    /// The APs the peer had, as of `now`.
    pub fn aps(&mut self, now: Instant) -> Vec<SyncedAp> {
        self.expire(now);
        let mut aps: Vec<SyncedAp> = self.aps.values().map(|(ap, _)| *ap).collect();
        aps.sort_by_key(|ap| ap.address);
        aps
    }

    pub fn status(&mut self, now: Instant) -> SyncStatus {
        self.expire(now);
        let mut status = self.status.clone();
        status.last_accepted_ms_ago = self
            .last_accepted
            .map(|t| now.saturating_duration_since(t).as_millis() as u64);
        status
    }
}

fn reason_name(e: SyncError) -> String {
    serde_json::to_value(e)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The sender's memory: what went out when, so each tick sends only what
/// changed plus the oldest few.
#[derive(Default)]
pub struct Sender {
    sent: HashMap<IpAddr, (SyncedAp, Instant)>,
}

impl Sender {
    /// The entries to send now, from the current table `aps`: new or
    /// changed ports first, then those not sent for [`REFRESH`] (ages are
    /// not a change: they only matter once the AP stops talking).
    pub fn due(&mut self, aps: &[SyncedAp], now: Instant) -> Vec<SyncedAp> {
        let mut changed = Vec::new();
        let mut stale = Vec::new();
        for ap in aps {
            match self.sent.get(&ap.address) {
                Some((old, _)) if (old.ike_port, old.mqtt_port) != (ap.ike_port, ap.mqtt_port) => {
                    changed.push(*ap)
                }
                Some((_, at)) if now.saturating_duration_since(*at) >= REFRESH => stale.push(*ap),
                Some(_) => {}
                None => changed.push(*ap),
            }
        }
        let current: std::collections::HashSet<IpAddr> = aps.iter().map(|a| a.address).collect();
        self.sent.retain(|address, _| current.contains(address));
        changed.extend(stale);
        for ap in &changed {
            self.sent.insert(ap.address, (*ap, now));
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef-both-nodes";

    fn ap(last: u8, ike_port: u16) -> SyncedAp {
        SyncedAp {
            address: IpAddr::V4(Ipv4Addr::new(10, 77, 0, last)),
            ike_port,
            mqtt_port: 40000 + u16::from(last),
            age_s: 1,
        }
    }

    #[test]
    fn round_trip_v4_and_v6() {
        let mut aps = vec![ap(51, 4500), ap(52, 61234)];
        aps.push(SyncedAp {
            address: "fd00::7".parse().expect("v6"),
            ike_port: 500,
            mqtt_port: 0,
            age_s: 59,
        });
        let datagram = encode(KEY, 7, &aps);
        assert!(datagram.len() <= 1400);
        assert_eq!(decode(KEY, &datagram), Ok((7, aps)));
        let full: Vec<SyncedAp> = (0..=255).map(|n| ap(n, 4500)).collect();
        let datagram = encode(KEY, 8, &full);
        assert!(datagram.len() <= 1400, "{}", datagram.len());
        assert_eq!(
            decode(KEY, &datagram).map(|(_, a)| a.len()),
            Ok(MAX_ENTRIES)
        );
    }

    #[test]
    fn forged_replayed_and_malformed_datagrams_are_counted_and_ignored() {
        let peer: IpAddr = "10.77.0.2".parse().expect("ip");
        let now = Instant::now();
        let mut received = Received::new(peer);
        let good = encode(KEY, 10, &[ap(51, 4500)]);
        assert_eq!(received.accept(KEY, peer, &good, now), Ok(1));
        // Replayed, and an older one.
        assert_eq!(
            received.accept(KEY, peer, &good, now),
            Err(SyncError::Replay)
        );
        let older = encode(KEY, 9, &[ap(60, 4500)]);
        assert_eq!(
            received.accept(KEY, peer, &older, now),
            Err(SyncError::Replay)
        );
        // Another key, a flipped bit, a truncation, another sender.
        let forged = encode(b"someone else's key!!", 11, &[ap(61, 4500)]);
        assert_eq!(
            received.accept(KEY, peer, &forged, now),
            Err(SyncError::Mac)
        );
        let mut flipped = encode(KEY, 12, &[ap(62, 4500)]);
        flipped[20] ^= 1;
        assert_eq!(
            received.accept(KEY, peer, &flipped, now),
            Err(SyncError::Mac)
        );
        assert_eq!(
            received.accept(KEY, peer, &good[..10], now),
            Err(SyncError::Short)
        );
        let stranger: IpAddr = "10.77.0.9".parse().expect("ip");
        let from_stranger = encode(KEY, 13, &[ap(63, 4500)]);
        assert_eq!(
            received.accept(KEY, stranger, &from_stranger, now),
            Err(SyncError::Source)
        );
        // An authenticated body whose count lies.
        let mut lying = encode(KEY, 14, &[ap(64, 4500)])[..HEADER + ENTRY].to_vec();
        lying[13] = 2;
        let mut mac = HmacSha256::new_from_slice(KEY).expect("key");
        mac.update(&lying);
        lying.extend_from_slice(&mac.finalize().into_bytes());
        assert_eq!(
            received.accept(KEY, peer, &lying, now),
            Err(SyncError::Length)
        );
        // Only the good one's AP is known; every rejection is counted.
        let known: Vec<IpAddr> = received.aps(now).iter().map(|a| a.address).collect();
        assert_eq!(known, [ap(51, 0).address]);
        let status = received.status(now);
        assert_eq!(status.rejected.get("replay"), Some(&2));
        assert_eq!(status.rejected.get("mac"), Some(&2));
        assert_eq!(status.rejected.get("short"), Some(&1));
        assert_eq!(status.rejected.get("source"), Some(&1));
        assert_eq!(status.rejected.get("length"), Some(&1));
        assert_eq!(status.datagrams_accepted, 1);
    }

    #[test]
    fn garbage_never_panics_and_never_verifies() {
        let peer: IpAddr = "10.77.0.2".parse().expect("ip");
        let mut received = Received::new(peer);
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let now = Instant::now();
        for len in 0..600 {
            let mut datagram = Vec::with_capacity(len);
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                datagram.push(state as u8);
            }
            if len >= 4 {
                datagram[..4].copy_from_slice(MAGIC);
            }
            assert!(received.accept(KEY, peer, &datagram, now).is_err());
        }
        assert!(received.aps(now).is_empty());
    }

    #[test]
    fn aps_not_mentioned_are_forgotten_and_the_table_is_bounded() {
        let peer: IpAddr = "10.77.0.2".parse().expect("ip");
        let start = Instant::now();
        let mut received = Received::new(peer);
        received
            .accept(KEY, peer, &encode(KEY, 1, &[ap(51, 4500)]), start)
            .expect("accepted");
        received
            .accept(
                KEY,
                peer,
                &encode(KEY, 2, &[ap(52, 4500)]),
                start + FORGET_AFTER / 2,
            )
            .expect("accepted");
        let later = start + FORGET_AFTER + Duration::from_secs(1);
        let known: Vec<IpAddr> = received.aps(later).iter().map(|a| a.address).collect();
        assert_eq!(known, [ap(52, 0).address]);

        let mut sequence = 10;
        for chunk in 0..(MAX_SYNCED_APS / MAX_ENTRIES + 2) {
            let aps: Vec<SyncedAp> = (0..MAX_ENTRIES)
                .map(|i| SyncedAp {
                    address: IpAddr::V6(Ipv6Addr::from((chunk * MAX_ENTRIES + i) as u128 + 1)),
                    ike_port: 500,
                    mqtt_port: 0,
                    age_s: 0,
                })
                .collect();
            sequence += 1;
            received
                .accept(KEY, peer, &encode(KEY, sequence, &aps), later)
                .expect("accepted");
        }
        assert_eq!(received.aps(later).len(), MAX_SYNCED_APS);
        assert!(received.status(later).overflow > 0);
    }

    #[test]
    fn the_sender_sends_changes_at_once_and_the_rest_every_refresh() {
        let start = Instant::now();
        let mut sender = Sender::default();
        let table = vec![ap(51, 4500), ap(52, 4500)];
        assert_eq!(sender.due(&table, start).len(), 2, "all new");
        assert!(sender
            .due(&table, start + Duration::from_secs(1))
            .is_empty());
        let moved = vec![ap(51, 61000), ap(52, 4500)];
        assert_eq!(
            sender.due(&moved, start + Duration::from_secs(2)),
            [ap(51, 61000)],
            "a new NAT-T port goes out at once"
        );
        let due = sender.due(&moved, start + REFRESH + Duration::from_secs(1));
        assert_eq!(due, [ap(52, 4500)], "the one not sent for REFRESH");
    }
}
