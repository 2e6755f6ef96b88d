//! The sync's wire format: one authenticated datagram, version 3 written
//! (2 when it carries no IKE peer), versions 1 to 3 read (the layouts are drawn in the parent module).
//!
//! Owns: bytes in and out, the MAC. Must not: keep state (the receiver's
//! table and the sender's memory are the parent's).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hmac::{Mac as _, SimpleHmac};
use sha2::Sha256;

use super::{SyncError, SyncedAp, MAX_DATAGRAM};
use crate::recovery::{
    ike_sas::{IkePeer, MAX_IKE_ID, MAX_IKE_PEERS_PER_ADDRESS},
    mqtt::{MqttSession, TcpPosition, MAX_MQTT_PER_AP},
};

type HmacSha256 = SimpleHmac<Sha256>;

pub(super) const MAGIC_V1: &[u8; 4] = b"WHA1";
pub(super) const MAGIC_V2: &[u8; 4] = b"WHA2";
pub(super) const MAGIC_V3: &[u8; 4] = b"WHA3";
pub(super) const HEADER: usize = 4 + 8 + 2;
pub(super) const ENTRY_V1: usize = 1 + 16 + 2 + 2 + 2;
pub(super) const ENTRY_FIXED: usize = 1 + 16 + 2 + 2 + 1 + 1;
pub(super) const CONNECTION: usize = 2 + 2 + 1 + 4 + 4;
/// An IKE peer without its identity's bytes: port and length.
pub(super) const PEER_FIXED: usize = 2 + 1;
pub(super) const TAG: usize = 32;

pub(super) fn push_address(out: &mut Vec<u8>, address: IpAddr) {
    let mut bytes = [0u8; 16];
    let family = match address {
        IpAddr::V4(v4) => {
            bytes[..4].copy_from_slice(&v4.octets());
            4
        }
        IpAddr::V6(v6) => {
            bytes.copy_from_slice(&v6.octets());
            6
        }
    };
    out.push(family);
    out.extend_from_slice(&bytes);
}

fn read_address(family: u8, bytes: &[u8]) -> Result<IpAddr, SyncError> {
    let bytes: [u8; 16] = bytes.try_into().map_err(|_| SyncError::Length)?;
    match family {
        4 => Ok(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        6 => Ok(IpAddr::V6(Ipv6Addr::from(bytes))),
        _ => Err(SyncError::Family),
    }
}

/// The IKE peers an entry carries: within the bound, identities that fit
/// the length byte.
fn carried_peers(ap: &SyncedAp) -> impl Iterator<Item = &IkePeer> {
    ap.ike_peers
        .iter()
        .filter(|peer| peer.id.len() <= MAX_IKE_ID)
        .take(MAX_IKE_PEERS_PER_ADDRESS)
}

fn entry_len(ap: &SyncedAp, v3: bool) -> usize {
    let peers: usize = if v3 {
        1 + carried_peers(ap)
            .map(|peer| PEER_FIXED + peer.id.len())
            .sum::<usize>()
    } else {
        0
    };
    ENTRY_FIXED + CONNECTION * ap.mqtt.len().min(MAX_MQTT_PER_AP) + peers
}

pub(super) fn sign(key: &[u8], mut body: Vec<u8>) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&body);
    body.extend_from_slice(&mac.finalize().into_bytes());
    body
}

/// Builds one authenticated datagram from the first APs of `aps` that fit
/// (always at least one); returns it and how many APs it carries. Version
/// 3 when an AP of it has IKE peers, else version 2 (which a peer not yet
/// upgraded reads).
pub fn encode(key: &[u8], sequence: u64, aps: &[SyncedAp]) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    let v3 = aps.iter().any(|ap| !ap.ike_peers.is_empty());
    out.extend_from_slice(if v3 { MAGIC_V3 } else { MAGIC_V2 });
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    let mut count = 0usize;
    for ap in aps {
        if count > 0 && out.len() + entry_len(ap, v3) + TAG > MAX_DATAGRAM {
            break;
        }
        push_address(&mut out, ap.address);
        out.extend_from_slice(&ap.ike_port.to_be_bytes());
        out.extend_from_slice(&ap.age_s.to_be_bytes());
        let carried = &ap.mqtt[..ap.mqtt.len().min(MAX_MQTT_PER_AP)];
        let beyond = usize::from(ap.mqtt_beyond_bound) + (ap.mqtt.len() - carried.len());
        out.push(beyond.min(usize::from(u8::MAX)) as u8);
        out.push(carried.len() as u8);
        for session in carried {
            out.extend_from_slice(&session.ap_port.to_be_bytes());
            out.extend_from_slice(&session.broker_port.to_be_bytes());
            let position = session.position.unwrap_or(TcpPosition {
                ap_next_sequence: 0,
                ap_acknowledgement: 0,
            });
            out.push(u8::from(session.position.is_some()));
            out.extend_from_slice(&position.ap_next_sequence.to_be_bytes());
            out.extend_from_slice(&position.ap_acknowledgement.to_be_bytes());
        }
        if v3 {
            out.push(carried_peers(ap).count() as u8);
            for peer in carried_peers(ap) {
                out.extend_from_slice(&peer.port.to_be_bytes());
                out.push(peer.id.len() as u8);
                out.extend_from_slice(peer.id.as_bytes());
            }
        }
        count += 1;
    }
    out[12..14].copy_from_slice(&(count as u16).to_be_bytes());
    (sign(key, out), count)
}

/// Checks and reads one datagram (version 1, 2 or 3): (sequence, entries).
/// Nothing is read from the body before its MAC verifies.
pub fn decode(key: &[u8], datagram: &[u8]) -> Result<(u64, Vec<SyncedAp>), SyncError> {
    if datagram.len() < HEADER + TAG {
        return Err(SyncError::Short);
    }
    let magic = &datagram[..4];
    if magic != MAGIC_V1 && magic != MAGIC_V2 && magic != MAGIC_V3 {
        return Err(if magic[..3] == MAGIC_V2[..3] {
            SyncError::Version
        } else {
            SyncError::Magic
        });
    }
    let (body, tag) = datagram.split_at(datagram.len() - TAG);
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(tag).map_err(|_| SyncError::Mac)?;
    let sequence = u64::from_be_bytes(body[4..12].try_into().expect("8 bytes"));
    let count = usize::from(u16::from_be_bytes([body[12], body[13]]));
    let entries = &body[HEADER..];
    let aps = if magic == MAGIC_V1 {
        decode_v1(entries, count)?
    } else {
        decode_v2(entries, count, magic == MAGIC_V3)?
    };
    Ok((sequence, aps))
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn decode_v1(entries: &[u8], count: usize) -> Result<Vec<SyncedAp>, SyncError> {
    if entries.len() != count * ENTRY_V1 {
        return Err(SyncError::Length);
    }
    entries
        .chunks_exact(ENTRY_V1)
        .map(|entry| {
            let mqtt_port = be16(entry, 19);
            Ok(SyncedAp {
                address: read_address(entry[0], &entry[1..17])?,
                ike_port: be16(entry, 17),
                age_s: be16(entry, 21),
                // Version 1 knew one connection per AP, not its broker
                // port or numbers.
                mqtt: (mqtt_port != 0)
                    .then_some(MqttSession {
                        ap_port: mqtt_port,
                        broker_port: 0,
                        position: None,
                    })
                    .into_iter()
                    .collect(),
                mqtt_beyond_bound: 0,
                ike_peers: Vec::new(),
            })
        })
        .collect()
}

/// Version 2, and with `v3` the IKE peers after each entry's connections.
fn decode_v2(mut entries: &[u8], count: usize, v3: bool) -> Result<Vec<SyncedAp>, SyncError> {
    let mut aps = Vec::with_capacity(count.min(MAX_DATAGRAM / ENTRY_FIXED));
    for _ in 0..count {
        if entries.len() < ENTRY_FIXED {
            return Err(SyncError::Length);
        }
        let connections = usize::from(entries[ENTRY_FIXED - 1]);
        if connections > MAX_MQTT_PER_AP {
            return Err(SyncError::Bound);
        }
        let len = ENTRY_FIXED + connections * CONNECTION;
        if entries.len() < len {
            return Err(SyncError::Length);
        }
        let (entry, rest) = entries.split_at(len);
        entries = rest;
        let mqtt = entry[ENTRY_FIXED..]
            .chunks_exact(CONNECTION)
            .map(|c| MqttSession {
                ap_port: be16(c, 0),
                broker_port: be16(c, 2),
                // Other flag bits are a later version's: ignored.
                position: (c[4] & 1 != 0).then(|| TcpPosition {
                    ap_next_sequence: be32(c, 5),
                    ap_acknowledgement: be32(c, 9),
                }),
            })
            .collect();
        let ike_peers = if v3 {
            let (peers, rest) = decode_peers(entries)?;
            entries = rest;
            peers
        } else {
            Vec::new()
        };
        aps.push(SyncedAp {
            address: read_address(entry[0], &entry[1..17])?,
            ike_port: be16(entry, 17),
            age_s: be16(entry, 19),
            mqtt,
            mqtt_beyond_bound: entry[21],
            ike_peers,
        });
    }
    if !entries.is_empty() {
        return Err(SyncError::Length);
    }
    Ok(aps)
}

/// An entry's IKE peers (version 3), and what follows them.
fn decode_peers(mut bytes: &[u8]) -> Result<(Vec<IkePeer>, &[u8]), SyncError> {
    let (&count, rest) = bytes.split_first().ok_or(SyncError::Length)?;
    bytes = rest;
    if usize::from(count) > MAX_IKE_PEERS_PER_ADDRESS {
        return Err(SyncError::Bound);
    }
    let mut peers = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        if bytes.len() < PEER_FIXED {
            return Err(SyncError::Length);
        }
        let len = usize::from(bytes[2]);
        let end = PEER_FIXED + len;
        let id = bytes.get(PEER_FIXED..end).ok_or(SyncError::Length)?;
        peers.push(IkePeer {
            port: be16(bytes, 0),
            id: String::from_utf8(id.to_vec()).map_err(|_| SyncError::Identity)?,
        });
        bytes = &bytes[end..];
    }
    Ok((peers, bytes))
}
