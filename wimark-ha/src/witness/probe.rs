//! Does the peer answer? An ICMP echo to each of its addresses, for the
//! isolation rule: a master that can neither renew its witness lease nor
//! reach its peer is the cut-off side and stops its master stack; one that
//! still reaches its peer only lost the witness, and nothing moves.
//!
//! Owns: the raw ICMP socket of one probe. Must not: decide anything.

use std::{
    mem::MaybeUninit,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};

/// Whether any of `peers` answered an ICMP or ICMPv6 echo within
/// `timeout` (both families at once). `None` when it cannot be told (no
/// peer, or no probe could be sent): the caller must not demote on it.
/// A link-local IPv6 peer needs its interface, which an address alone
/// does not name: it is not probed.
pub async fn peer_answers(peers: Vec<IpAddr>, timeout: Duration) -> Option<bool> {
    let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = peers
        .into_iter()
        .filter(|peer| !matches!(peer, IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .partition(IpAddr::is_ipv4);
    let probes: Vec<_> = [v4, v6]
        .into_iter()
        .filter(|family| !family.is_empty())
        .map(|family| tokio::task::spawn_blocking(move || echo(&family, timeout)))
        .collect();
    let mut answer = None;
    for probe in probes {
        match probe.await.ok().and_then(|answered| answered.ok()) {
            Some(true) => return Some(true),
            Some(false) => answer = Some(false),
            None => {}
        }
    }
    answer
}

fn checksum(bytes: &[u8]) -> u16 {
    wimark_ha_common::classify::internet_checksum(bytes, None)
}

/// Echo types: request and reply, ICMP (RFC 792) and ICMPv6 (RFC 4443).
const ECHO_V4: (u8, u8) = (8, 0);
const ECHO_V6: (u8, u8) = (128, 129);

/// One family's probe: `peers` are all IPv4 or all IPv6.
fn echo(peers: &[IpAddr], timeout: Duration) -> std::io::Result<bool> {
    let v6 = peers.first().is_some_and(IpAddr::is_ipv6);
    let (socket, (request_type, reply_type)) = if v6 {
        (
            Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?,
            ECHO_V6,
        )
    } else {
        (
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?,
            ECHO_V4,
        )
    };
    let id = (std::process::id() & 0xffff) as u16;
    for (seq, peer) in peers.iter().enumerate() {
        let mut request = [request_type, 0, 0, 0, 0, 0, 0, 0];
        request[4..6].copy_from_slice(&id.to_be_bytes());
        request[6..8].copy_from_slice(&(seq as u16).to_be_bytes());
        // ICMPv6's checksum covers a pseudo-header with our source
        // address: the kernel fills it in on raw ICMPv6 sockets (RFC 3542
        // §3.1).
        if !v6 {
            let sum = checksum(&request);
            request[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        socket.send_to(&request, &SocketAddr::new(*peer, 0).into())?;
    }
    let deadline = Instant::now() + timeout;
    let mut buffer = [MaybeUninit::<u8>::uninit(); 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        socket.set_read_timeout(Some(left))?;
        let (length, from) = match socket.recv_from(&mut buffer) {
            Ok(received) => received,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(false)
            }
            Err(e) => return Err(e),
        };
        // SAFETY: recv_from initialised the first `length` bytes.
        let packet: Vec<u8> = buffer[..length]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        // A raw IPv4 socket hands over the IP header too; IPv6 does not.
        let header = if v6 {
            0
        } else {
            usize::from(packet.first().map_or(0, |b| b & 0x0f)) * 4
        };
        let Some(icmp) = packet.get(header..header + 8) else {
            continue;
        };
        let from = from.as_socket().map(|s| s.ip());
        if icmp[0] == reply_type
            && icmp[4..6] == id.to_be_bytes()
            && from.is_some_and(|f| peers.contains(&f))
        {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_echo_checksum_is_the_internet_checksum() {
        // Type 8, code 0, id 0x1234, seq 1: the sum of the words is
        // 0x0800 + 0x1234 + 0x0001 = 0x1a35, its complement 0xe5ca.
        let request = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
        assert_eq!(checksum(&request), 0xe5ca);
    }
}
