//! The MQTT side of bringing APs back: after a takeover every AP's MQTT
//! connection to the VIP is stale (its broker is gone with the old master),
//! but the AP's client only notices at its next keepalive — up to a minute
//! of silence. The new master sends each known connection one ACK from the
//! VIP's MQTT port with a sequence number the AP cannot expect; the AP's
//! kernel answers with a challenge ACK carrying its exact sequence numbers
//! (RFC 5961 §4), which our kernel, having no such connection, answers with
//! a RST the AP accepts. The client reconnects at once (after libmosquitto's
//! fixed ~1 s delay) instead of after its keepalive.
//!
//! Owns: building that segment and sending it, paced. Must not: send to an
//! address that is not an AP of the synced table (the caller passes only
//! those), or carry data.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// MQTT and MQTT over TLS: a port the AP table recorded may belong to
/// either; an ACK to the wrong one costs the AP one RST back, nothing else.
pub const BROKER_PORTS: [u16; 2] = [1883, 8883];
/// At most this many segments a second (thousands of APs, one burst).
pub const SEGMENTS_PER_SECOND: u32 = 20_000;

const TCP_HEADER: usize = 20;
const FLAG_ACK: u8 = 0x10;

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn add_words(sum: &mut u32, bytes: &[u8]) {
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        *sum += u32::from(word);
    }
}

/// The TCP header (no options, no data) of a bare ACK from `source` to
/// `destination`, its checksum over the pseudo-header included. `None` when
/// the two are of different families.
pub fn ack_segment(
    source: SocketAddr,
    destination: SocketAddr,
    sequence: u32,
    acknowledgement: u32,
) -> Option<[u8; TCP_HEADER]> {
    let mut segment = [0u8; TCP_HEADER];
    segment[0..2].copy_from_slice(&source.port().to_be_bytes());
    segment[2..4].copy_from_slice(&destination.port().to_be_bytes());
    segment[4..8].copy_from_slice(&sequence.to_be_bytes());
    segment[8..12].copy_from_slice(&acknowledgement.to_be_bytes());
    segment[12] = (TCP_HEADER as u8 / 4) << 4;
    segment[13] = FLAG_ACK;
    segment[14..16].copy_from_slice(&1024u16.to_be_bytes());
    let mut sum = 0u32;
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            add_words(&mut sum, &s.octets());
            add_words(&mut sum, &d.octets());
            sum += u32::from(libc::IPPROTO_TCP as u16);
            sum += TCP_HEADER as u32;
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            add_words(&mut sum, &s.octets());
            add_words(&mut sum, &d.octets());
            sum += TCP_HEADER as u32;
            sum += u32::from(libc::IPPROTO_TCP as u16);
        }
        _ => return None,
    }
    add_words(&mut sum, &segment);
    segment[16..18].copy_from_slice(&fold(sum).to_be_bytes());
    Some(segment)
}

/// What the kick did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KickReport {
    /// AP connections (address, port) kicked.
    pub connections: usize,
    pub segments_sent: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// A sequence number no connection expects: our own, random per kick
/// (an AP's window cannot contain it but by a 2^-16-ish chance, and then
/// the segment is a harmless duplicate ACK).
fn unexpected_sequence() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x5eed, |d| d.subsec_nanos());
    nanos.wrapping_mul(0x9e37_79b9) ^ 0xa5a5_5a5a
}

/// Sends the challenge-provoking ACK from `vip` to each `(ap, port)`, on
/// every broker port, paced at [`SEGMENTS_PER_SECOND`]. Needs CAP_NET_RAW
/// and `vip` on a local interface (it is, right after the takeover).
pub async fn kick(vip: IpAddr, connections: &[(IpAddr, u16)]) -> KickReport {
    let mut report = KickReport {
        connections: connections.len(),
        ..KickReport::default()
    };
    let domain = if vip.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket =
        match socket2::Socket::new(domain, socket2::Type::RAW, Some(socket2::Protocol::TCP)) {
            Ok(socket) => socket,
            Err(e) => {
                report.errors.push(format!("raw TCP socket: {e}"));
                return report;
            }
        };
    if let Err(e) = socket.bind(&SocketAddr::new(vip, 0).into()) {
        report.errors.push(format!("binding the VIP {vip}: {e}"));
        return report;
    }
    let gap = Duration::from_secs(1) / SEGMENTS_PER_SECOND;
    let started = Instant::now();
    let sequence = unexpected_sequence();
    for (ap, port) in connections {
        if ap.is_ipv4() != vip.is_ipv4() || *port == 0 {
            continue;
        }
        for broker in BROKER_PORTS {
            let Some(segment) = ack_segment(
                SocketAddr::new(vip, broker),
                SocketAddr::new(*ap, *port),
                sequence,
                sequence.wrapping_add(0x4000_0000),
            ) else {
                continue;
            };
            // A raw socket takes the destination port from the header; the
            // address's port must be 0 for IPv6 raw sockets.
            match socket.send_to(&segment, &SocketAddr::new(*ap, 0).into()) {
                Ok(_) => report.segments_sent += 1,
                Err(e) if report.errors.len() < 10 => {
                    report.errors.push(format!("{ap}:{port}: {e}"))
                }
                Err(_) => {}
            }
            let due = started + gap * report.segments_sent as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                if wait >= Duration::from_millis(1) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 1071 sum over the pseudo-header and the segment, as a
    /// receiver checks it: all ones.
    fn verifies(source: SocketAddr, destination: SocketAddr, segment: &[u8]) -> bool {
        let mut sum = 0u32;
        match (source.ip(), destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                add_words(&mut sum, &s.octets());
                add_words(&mut sum, &d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                add_words(&mut sum, &s.octets());
                add_words(&mut sum, &d.octets());
            }
            _ => return false,
        }
        sum += 6 + segment.len() as u32;
        add_words(&mut sum, segment);
        fold(sum) == 0
    }

    #[test]
    fn a_bare_ack_with_a_valid_checksum() {
        let source: SocketAddr = "10.77.0.100:1883".parse().expect("addr");
        let destination: SocketAddr = "10.77.0.51:40123".parse().expect("addr");
        let segment = ack_segment(source, destination, 7, 9).expect("v4");
        assert_eq!(u16::from_be_bytes([segment[0], segment[1]]), 1883);
        assert_eq!(u16::from_be_bytes([segment[2], segment[3]]), 40123);
        assert_eq!(u32::from_be_bytes(segment[4..8].try_into().expect("4")), 7);
        assert_eq!(u32::from_be_bytes(segment[8..12].try_into().expect("4")), 9);
        assert_eq!(segment[12] >> 4, 5, "header length in words");
        assert_eq!(segment[13], FLAG_ACK, "ACK only: no SYN, RST, FIN, data");
        assert!(verifies(source, destination, &segment));
        let v6s: SocketAddr = "[fd00::100]:1883".parse().expect("addr");
        let v6d: SocketAddr = "[fd00::51]:40123".parse().expect("addr");
        let segment = ack_segment(v6s, v6d, 1, 2).expect("v6");
        assert!(verifies(v6s, v6d, &segment));
        assert!(ack_segment(source, v6d, 1, 2).is_none(), "mixed families");
    }
}
