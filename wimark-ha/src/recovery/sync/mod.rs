//! The AP table, shared by the active node with the standby over the peer
//! link, so that a new master knows which APs to bring back — the APs talk
//! to the VIP, so the standby's own XDP monitor never sees them.
//!
//! One UDP datagram carries as many APs as fit in [`MAX_DATAGRAM`] bytes,
//! authenticated with HMAC-SHA256 under a key both nodes hold, numbered so
//! a replay is refused. The sender sends what changed since its last
//! datagram plus a slice of the rest, so the whole table is refreshed every
//! [`REFRESH`] at a few datagrams a second; the receiver forgets an AP not
//! mentioned for [`FORGET_AFTER`]. A datagram that fails any check is
//! counted by reason and ignored whole.
//!
//! Owns: the wire format and the receiver's table. Must not: trust a field
//! before the MAC is checked, or hold more than [`MAX_SYNCED_APS`].
//!
//! ```text
//!  0       4               12      14
//!  +-------+---------------+-------+---------------------------+----------+
//!  | "WHA3"| sequence (BE) | count | count x entry             | HMAC-256 |
//!  +-------+---------------+-------+---------------------------+----------+
//!  entry: family (4|6) | address (16, v4 in the first 4)
//!        | ike_port | age_s | beyond_bound (u8) | n (u8, <= 8)
//!        | n x [ap_port | broker_port | flags (bit 0: numbers known)
//!               | ap_next_sequence (u32) | ap_acknowledgement (u32)]
//!        | p (u8, <= 8) | p x [ike_port | id_len (u8) | id (id_len bytes)]
//! ```
//!
//! Version 2 ("WHA2") is the same without the IKE peers (`p` and what
//! follows); the sender writes it whenever a datagram carries no IKE peer
//! (no `ike_vici` configured), so a peer of version 2 keeps reading the
//! table until identities are synced. Version 1 ("WHA1": one fixed 23-byte
//! entry per AP, `family | address | ike_port | mqtt_port | age_s`) is still
//! read, so an upgraded node keeps the table of a peer not yet upgraded. A
//! node counts a newer version's datagrams as `version` ("upgrade it").

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{ike_sas::IkePeer, mqtt::MqttSession};

mod wire;

pub use wire::{decode, encode};

/// A datagram stays under this (no fragments on any sane link).
pub const MAX_DATAGRAM: usize = 1400;
/// The receiver holds at most this many APs: twice what the XDP table may
/// be sized for (`max_aps`), for APs sharing a NAT address with IKE peers.
pub const MAX_SYNCED_APS: usize = 2 * wimark_ha_common::abi::AP_TABLE_MAX_APS as usize;
/// Every AP is sent again about this often (a tenth of the table per
/// tick once it is all out: never all at once).
pub const REFRESH: Duration = Duration::from_secs(10);
/// The sender's tick.
pub const SEND_EVERY: Duration = Duration::from_secs(1);
/// The most entries one tick sends (~36 datagrams, ~50 KiB with one MQTT
/// connection per AP): a table of 10 000 is out in five ticks, and no
/// burst can overrun the receiver's socket buffer (~208 KiB by default).
pub const MAX_PER_TICK: usize = 2048;
/// An AP the sender stopped mentioning is forgotten after this.
pub const FORGET_AFTER: Duration = Duration::from_secs(45);
/// The shortest key accepted.
pub const MIN_KEY: usize = 16;
/// A connection whose numbers moved further than this since they were
/// last sent goes out at once; smaller moves wait for the refresh. A NAT's
/// window reaches back at least the AP's receive window (64 KiB and more),
/// so numbers up to a refresh old still pass it.
pub const POSITION_SLACK: u32 = 16 * 1024;

/// One AP as the sync carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedAp {
    pub address: IpAddr,
    /// 0: no IKE seen from it.
    pub ike_port: u16,
    /// Seconds since the sender last saw traffic from it.
    pub age_s: u16,
    /// Its MQTT connections, most recently used first (at most
    /// [`MAX_MQTT_PER_AP`]).
    pub mqtt: Vec<MqttSession>,
    /// Connections the sender saw beyond the bound (not carried).
    pub mqtt_beyond_bound: u8,
    /// Its IKE_SAs as the sender's IKE daemon lists them (port and
    /// identity; several when APs share the address behind a NAT); empty
    /// when the sender does not read its IKE daemon (`ike_vici`) or sync
    /// version < 3.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ike_peers: Vec<IkePeer>,
}

/// Why a datagram was ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncError {
    #[error("shorter than a header and a MAC")]
    Short,
    #[error("not an AP sync datagram (magic)")]
    Magic,
    #[error("a newer sync version than this node reads: upgrade it")]
    Version,
    #[error("MAC does not verify (forged, or another key)")]
    Mac,
    #[error("sequence not newer than the last accepted (replayed)")]
    Replay,
    #[error("length does not match the entries")]
    Length,
    #[error("an entry's address family is neither 4 nor 6")]
    Family,
    #[error("an AP with more MQTT connections or IKE peers than the bound")]
    Bound,
    #[error("an IKE identity that is not UTF-8")]
    Identity,
    #[error("from another address than the configured peer")]
    Source,
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
    /// Their MQTT connections.
    #[serde(default)]
    pub synced_mqtt_connections: usize,
    /// Their IKE_SAs with port and identity, as the peer's IKE daemon
    /// listed them (`ike_vici`).
    #[serde(default)]
    pub synced_ike_peers: usize,
    /// This node's own IKE daemon (`ike_vici`): IKE_SAs on a VIP at its
    /// latest reading, and why the latest reading failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_ike_peers: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ike_vici_error: Option<String>,
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
            .filter(|(ap, _)| !ap.mqtt.is_empty())
            .count();
        self.status.synced_mqtt_connections =
            self.aps.values().map(|(ap, _)| ap.mqtt.len()).sum();
        self.status.synced_ike_peers = self.aps.values().map(|(ap, _)| ap.ike_peers.len()).sum();
    }

    /// The APs the peer had, as of `now`.
    pub fn aps(&mut self, now: Instant) -> Vec<SyncedAp> {
        self.expire(now);
        let mut aps: Vec<SyncedAp> = self.aps.values().map(|(ap, _)| ap.clone()).collect();
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

/// Whether `now` differs from what was sent (`sent`) enough to go out at
/// once: another IKE port or IKE peers, another set of connections, numbers
/// that appeared or moved more than [`POSITION_SLACK`].
fn moved(sent: &SyncedAp, now: &SyncedAp) -> bool {
    let far = |a: u32, b: u32| a.wrapping_sub(b).min(b.wrapping_sub(a)) > POSITION_SLACK;
    sent.ike_port != now.ike_port
        || sent.ike_peers != now.ike_peers
        || sent.mqtt_beyond_bound != now.mqtt_beyond_bound
        || sent.mqtt.len() != now.mqtt.len()
        || now.mqtt.iter().any(|connection| {
            let Some(old) = sent
                .mqtt
                .iter()
                .find(|o| (o.ap_port, o.broker_port) == (connection.ap_port, connection.broker_port))
            else {
                return true;
            };
            match (old.position, connection.position) {
                (Some(a), Some(b)) => {
                    far(a.ap_next_sequence, b.ap_next_sequence)
                        || far(a.ap_acknowledgement, b.ap_acknowledgement)
                }
                (None, None) => false,
                _ => true,
            }
        })
}

/// The sender's memory: what went out when, so each tick sends only what
/// changed plus a slice of the rest.
#[derive(Default)]
pub struct Sender {
    sent: HashMap<IpAddr, (SyncedAp, Instant)>,
}

impl Sender {
    /// The entries to send now (one tick of [`SEND_EVERY`]), from the
    /// current table `aps`: new or changed ports first, then those not sent
    /// for [`REFRESH`], the longest unsent first (ages are not a change:
    /// they only matter once the AP stops talking). At most
    /// [`MAX_PER_TICK`], and of the refreshes at most a tick's share of the
    /// table, so a table sent at once is refreshed over a whole period, not
    /// in one burst; what does not fit waits for the next tick.
    pub fn due(&mut self, aps: &[SyncedAp], now: Instant) -> Vec<SyncedAp> {
        let mut changed = Vec::new();
        let mut stale = Vec::new();
        for ap in aps {
            match self.sent.get(&ap.address) {
                Some((old, _)) if moved(old, ap) => changed.push(ap),
                Some((_, at)) if now.saturating_duration_since(*at) >= REFRESH => {
                    stale.push((*at, ap))
                }
                Some(_) => {}
                None => changed.push(ap),
            }
        }
        let current: std::collections::HashSet<IpAddr> = aps.iter().map(|a| a.address).collect();
        self.sent.retain(|address, _| current.contains(address));
        let ticks_per_refresh = (REFRESH.as_millis() / SEND_EVERY.as_millis()).max(1) as usize;
        let refresh_share = aps.len().div_ceil(ticks_per_refresh);
        changed.truncate(MAX_PER_TICK);
        stale.sort_by_key(|(at, _)| *at);
        let room = (MAX_PER_TICK - changed.len()).min(refresh_share);
        let due: Vec<SyncedAp> = changed
            .into_iter()
            .chain(stale.into_iter().take(room).map(|(_, ap)| ap))
            .cloned()
            .collect();
        for ap in &due {
            self.sent.insert(ap.address, (ap.clone(), now));
        }
        due
    }
}

/// Of the interface addresses `(address, netmask)`, the first whose
/// prefix holds `peer` and that is not one of `vips`: the source the peer
/// knows this server by (sans-IO; the daemon reads the addresses).
pub fn source_towards(
    addresses: impl IntoIterator<Item = (IpAddr, IpAddr)>,
    peer: IpAddr,
    vips: &[IpAddr],
) -> Option<IpAddr> {
    let masked = |address: IpAddr, mask: IpAddr| -> Option<u128> {
        match (address, mask) {
            (IpAddr::V4(a), IpAddr::V4(m)) => Some(u128::from(u32::from(a) & u32::from(m))),
            (IpAddr::V6(a), IpAddr::V6(m)) => Some(u128::from(a) & u128::from(m)),
            _ => None,
        }
    };
    addresses.into_iter().find_map(|(address, mask)| {
        let same_prefix = masked(address, mask).is_some() && masked(address, mask) == masked(peer, mask);
        (same_prefix && !vips.contains(&address) && address != peer).then_some(address)
    })
}

#[cfg(test)]
mod tests;
