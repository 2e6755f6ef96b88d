//! The MQTT side of bringing APs back: after a takeover every AP's MQTT
//! connection to the VIP is stale (its broker is gone with the old master),
//! but the AP's client only notices at its next keepalive — up to a minute
//! of silence. The new master sends each known connection one ACK from the
//! VIP's broker port whose sequence number lies just before what the AP
//! last acknowledged: old data to the AP, which answers with an ACK
//! carrying its exact sequence numbers (RFC 793 §3.9, RFC 5961 §4); our
//! kernel, having no such connection, answers that with a RST the AP
//! accepts. The client reconnects at once (after libmosquitto's fixed ~1 s
//! delay) instead of after its keepalive.
//!
//! The numbers come from the old master's XDP monitor (synced): a NAT with
//! connection tracking (Linux's conntrack, most routers) forwards only a
//! segment inside the connection's window, and a guessed number is not —
//! it then answers the kick itself with a RST from its own address, and
//! the AP waits for its keepalive. One byte before the AP's last
//! acknowledgement is inside the NAT's window (which reaches back the AP's
//! receive window) and outside the AP's. Without synced numbers (an older
//! peer) the kick falls back to a number no connection expects, which
//! works when no NAT tracks the connection.
//!
//! Owns: the connection records the sync carries, building that segment and
//! sending it, paced. Must not: send to an address that is not an AP of the
//! synced table (the caller passes only those), or carry data.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// MQTT and MQTT over TLS: a port the AP table recorded may belong to
/// either; an ACK to the wrong one costs the AP one RST back, nothing else.
pub const BROKER_PORTS: [u16; 2] = [1883, 8883];
/// Connections kicked per second unless `mqtt_kick_rate` says otherwise.
/// Every kicked client reconnects one reconnect delay later (libmosquitto:
/// 1 s), so the kicks' rate is the rate at which the new master's broker
/// must accept connections; mosquitto listens with a queue of 100, and at
/// 20 000 a second a 300-AP lab overflowed it (TcpExtListenOverflows) and
/// those APs waited for a SYN retransmission (2.1 s instead of 1.2 s). At
/// 1 000 APs, with the takeover's IKE holding the CPU, 4 000 a second still
/// overflowed it (MQTT p99 2.27 s), 2 000 did not (1.54 s) and 1 000 spread
/// the reconnects over a second (2.02 s): docs/benchmarks.md. At 2 000 the
/// broker may stall 50 ms without a loss; 5 000 APs are kicked in 2.5 s.
pub const DEFAULT_KICKS_PER_SECOND: u32 = 2_000;
/// The highest `mqtt_kick_rate` accepted.
pub const MAX_KICKS_PER_SECOND: u32 = 20_000;
/// The most MQTT connections of one AP that are synced and reset; more
/// are counted ([`KickReport::beyond_bound`]).
pub const MAX_MQTT_PER_AP: usize = 8;
/// A connection the AP has not sent on for this long is not synced: MQTT
/// clients send at least a PINGREQ per keepalive (60 s is the usual), and a
/// broker gives up after 1.5 keepalives.
pub const MQTT_CONNECTION_WINDOW: Duration = Duration::from_secs(180);

/// Where an AP's MQTT connection stands, from the AP's latest segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpPosition {
    /// The AP's next sequence number.
    pub ap_next_sequence: u32,
    /// The broker's next sequence number, as the AP acknowledged it.
    pub ap_acknowledgement: u32,
}

impl TcpPosition {
    /// The kick's (sequence, acknowledgement): one byte before what the AP
    /// acknowledged — old to the AP (it answers), and within the window a
    /// NAT tracks (it forwards); the acknowledgement the AP's own next
    /// sequence, which the NAT's window check wants acknowledged.
    pub fn kick_numbers(self) -> (u32, u32) {
        (
            self.ap_acknowledgement.wrapping_sub(1),
            self.ap_next_sequence,
        )
    }
}

/// One MQTT connection of an AP, as the sync carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttSession {
    /// The AP's port (after any NAT).
    pub ap_port: u16,
    /// 1883 or 8883; 0: not known (a peer of sync version 1).
    pub broker_port: u16,
    /// None: not known (a version-1 peer, or only the SYN seen).
    pub position: Option<TcpPosition>,
}

const TCP_HEADER: usize = 20;
const FLAG_ACK: u8 = 0x10;

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
    // The pseudo-header (addresses, protocol, length) and the segment: the
    // IPv6 form (RFC 8200 §8.1) sums to the same words as the IPv4 one.
    let mut summed: Vec<u8> = Vec::with_capacity(2 * 16 + 4 + TCP_HEADER);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            summed.extend(s.octets());
            summed.extend(d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            summed.extend(s.octets());
            summed.extend(d.octets());
        }
        _ => return None,
    }
    summed.extend([0, libc::IPPROTO_TCP as u8, 0, TCP_HEADER as u8]);
    summed.extend(segment);
    let checksum = wimark_ha_common::classify::internet_checksum(&summed, None);
    segment[16..18].copy_from_slice(&checksum.to_be_bytes());
    Some(segment)
}

/// The monitor's MQTT connections grouped by AP address: those seen since
/// `since_ns` and within [`MQTT_CONNECTION_WINDOW`], the most recent
/// [`MAX_MQTT_PER_AP`] of each AP, and how many more it had.
pub fn sessions_by_ap(
    table: Vec<(
        wimark_ha_common::abi::MqttKey,
        wimark_ha_common::abi::MqttConnection,
    )>,
    since_ns: u64,
    now_ns: u64,
) -> std::collections::HashMap<IpAddr, (Vec<MqttSession>, usize)> {
    let window_ns = MQTT_CONNECTION_WINDOW.as_nanos() as u64;
    let mut by_ap: std::collections::HashMap<IpAddr, Vec<_>> = std::collections::HashMap::new();
    for (key, connection) in table {
        if connection.last_seen_ns < since_ns
            || now_ns.saturating_sub(connection.last_seen_ns) > window_ns
        {
            continue;
        }
        by_ap
            .entry(IpAddr::from(key.ap))
            .or_default()
            .push((key, connection));
    }
    by_ap
        .into_iter()
        .map(|(address, mut held)| {
            held.sort_by_key(|(_, c)| std::cmp::Reverse(c.last_seen_ns));
            let beyond = held.len().saturating_sub(MAX_MQTT_PER_AP);
            let sessions = held
                .into_iter()
                .take(MAX_MQTT_PER_AP)
                .map(|(key, c)| MqttSession {
                    ap_port: key.ap_port,
                    broker_port: key.broker_port,
                    position: (c.acknowledged != 0).then_some(TcpPosition {
                        ap_next_sequence: c.ap_next_sequence,
                        ap_acknowledgement: c.ap_acknowledgement,
                    }),
                })
                .collect();
            (address, (sessions, beyond))
        })
        .collect()
}

/// What the kick did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KickReport {
    /// AP connections (address, port) kicked.
    pub connections: usize,
    pub segments_sent: usize,
    /// Of the connections, those kicked with their own sequence numbers
    /// (the others with a guessed number, which a NAT may not forward).
    #[serde(default)]
    pub informed: usize,
    /// Connections the old master saw beyond [`MAX_MQTT_PER_AP`] per AP:
    /// not synced, not kicked (they come back at their keepalive).
    #[serde(default)]
    pub beyond_bound: usize,
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

/// Sends the challenge-provoking ACK from `vip` to each AP connection (on
/// its broker port, or on both when that is not known), `per_second`
/// connections a second. Needs CAP_NET_RAW and `vip` on a local interface
/// (it is, right after the takeover).
pub async fn kick(
    vip: IpAddr,
    connections: &[(IpAddr, MqttSession)],
    per_second: u32,
) -> KickReport {
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
    let gap = Duration::from_secs(1) / per_second.max(1);
    let started = Instant::now();
    let mut kicked = 0u32;
    let guessed = unexpected_sequence();
    for (ap, session) in connections {
        if ap.is_ipv4() != vip.is_ipv4() || session.ap_port == 0 {
            continue;
        }
        let (sequence, acknowledgement) = match session.position {
            Some(position) => {
                report.informed += 1;
                position.kick_numbers()
            }
            None => (guessed, guessed.wrapping_add(0x4000_0000)),
        };
        let brokers = match session.broker_port {
            0 => &BROKER_PORTS[..],
            known => &[known][..],
        };
        for &broker in brokers {
            let Some(segment) = ack_segment(
                SocketAddr::new(vip, broker),
                SocketAddr::new(*ap, session.ap_port),
                sequence,
                acknowledgement,
            ) else {
                continue;
            };
            // A raw socket takes the destination port from the header; the
            // address's port must be 0 for IPv6 raw sockets.
            match socket.send_to(&segment, &SocketAddr::new(*ap, 0).into()) {
                Ok(_) => report.segments_sent += 1,
                Err(e) if report.errors.len() < 10 => {
                    report.errors.push(format!("{ap}:{}: {e}", session.ap_port))
                }
                Err(_) => {}
            }
        }
        kicked += 1;
        let due = started + gap * kicked;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            if wait >= Duration::from_millis(1) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    // A receiver's check written apart from the sender's sum, so that
    // one mistake made twice does not pass.
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

    #[test]
    fn sessions_are_grouped_per_ap_bounded_and_of_this_term_only() {
        use wimark_ha_common::abi::{IpBytes, MqttConnection, MqttKey};
        const S: u64 = 1_000_000_000;
        let now = 1000 * S;
        let entry = |ap: u8, port: u16, last_seen_s: u64, acknowledged: u8| {
            (
                MqttKey {
                    ap: IpBytes::v4([10, 77, 0, ap]),
                    ap_port: port,
                    broker_port: 1883,
                },
                MqttConnection {
                    ap_next_sequence: u32::from(port),
                    ap_acknowledgement: 7,
                    last_seen_ns: last_seen_s * S,
                    acknowledged,
                    ..MqttConnection::default()
                },
            )
        };
        let mut table: Vec<_> = (0..11).map(|i| entry(51, 40000 + i, 990 + u64::from(i), 1)).collect();
        table.push(entry(52, 41000, 995, 0));
        table.push(entry(53, 42000, 500, 1)); // before this term
        table.push(entry(52, 41001, 1000 - 181, 1)); // beyond the window
        let by_ap = sessions_by_ap(table, 600 * S, now);
        let busy = &by_ap[&"10.77.0.51".parse::<IpAddr>().expect("ip")];
        assert_eq!(busy.0.len(), MAX_MQTT_PER_AP);
        assert_eq!(busy.1, 3, "the three least recently used counted");
        assert_eq!(busy.0[0].ap_port, 40010, "most recent first");
        let quiet = &by_ap[&"10.77.0.52".parse::<IpAddr>().expect("ip")];
        assert_eq!(quiet.0.len(), 1);
        assert_eq!(quiet.0[0].position, None, "only a SYN seen: no numbers");
        assert!(!by_ap.contains_key(&"10.77.0.53".parse::<IpAddr>().expect("ip")));
    }

    #[test]
    fn the_kick_lies_just_before_what_the_ap_acknowledged() {
        let position = TcpPosition {
            ap_next_sequence: 5000,
            ap_acknowledgement: 9000,
        };
        assert_eq!(position.kick_numbers(), (8999, 5000));
        let wrapped = TcpPosition {
            ap_next_sequence: 0,
            ap_acknowledgement: 0,
        };
        assert_eq!(wrapped.kick_numbers(), (u32::MAX, 0), "sequence space wraps");
    }
}
