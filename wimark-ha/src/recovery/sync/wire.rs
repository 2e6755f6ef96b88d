//! The sync's wire format: one authenticated datagram, version 2 written,
//! versions 1 and 2 read (the layouts are drawn in the parent module).
//!
//! Owns: bytes in and out, the MAC. Must not: keep state (the receiver's
//! table and the sender's memory are the parent's).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hmac::{Mac as _, SimpleHmac};
use sha2::Sha256;

use super::{SyncError, SyncedAp, MAX_DATAGRAM};
use crate::recovery::mqtt::{MqttSession, TcpPosition, MAX_MQTT_PER_AP};

type HmacSha256 = SimpleHmac<Sha256>;

pub(super) const MAGIC_V1: &[u8; 4] = b"WHA1";
pub(super) const MAGIC_V2: &[u8; 4] = b"WHA2";
pub(super) const HEADER: usize = 4 + 8 + 2;
pub(super) const ENTRY_V1: usize = 1 + 16 + 2 + 2 + 2;
pub(super) const ENTRY_FIXED: usize = 1 + 16 + 2 + 2 + 1 + 1;
pub(super) const CONNECTION: usize = 2 + 2 + 1 + 4 + 4;
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

fn entry_len(ap: &SyncedAp) -> usize {
    ENTRY_FIXED + CONNECTION * ap.mqtt.len().min(MAX_MQTT_PER_AP)
}

pub(super) fn sign(key: &[u8], mut body: Vec<u8>) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&body);
    body.extend_from_slice(&mac.finalize().into_bytes());
    body
}

/// Builds one authenticated datagram from the first APs of `aps` that fit
/// (always at least one); returns it and how many APs it carries.
pub fn encode(key: &[u8], sequence: u64, aps: &[SyncedAp]) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    out.extend_from_slice(MAGIC_V2);
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    let mut count = 0usize;
    for ap in aps {
        if count > 0 && out.len() + entry_len(ap) + TAG > MAX_DATAGRAM {
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
        count += 1;
    }
    out[12..14].copy_from_slice(&(count as u16).to_be_bytes());
    (sign(key, out), count)
}

/// Checks and reads one datagram (version 1 or 2): (sequence, entries).
/// Nothing is read from the body before its MAC verifies.
pub fn decode(key: &[u8], datagram: &[u8]) -> Result<(u64, Vec<SyncedAp>), SyncError> {
    if datagram.len() < HEADER + TAG {
        return Err(SyncError::Short);
    }
    let magic = &datagram[..4];
    if magic != MAGIC_V1 && magic != MAGIC_V2 {
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
        decode_v2(entries, count)?
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
            })
        })
        .collect()
}

fn decode_v2(mut entries: &[u8], count: usize) -> Result<Vec<SyncedAp>, SyncError> {
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
        aps.push(SyncedAp {
            address: read_address(entry[0], &entry[1..17])?,
            ike_port: be16(entry, 17),
            age_s: be16(entry, 19),
            mqtt,
            mqtt_beyond_bound: entry[21],
        });
    }
    if !entries.is_empty() {
        return Err(SyncError::Length);
    }
    Ok(aps)
}
