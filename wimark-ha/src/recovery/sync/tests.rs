//! The sync's wire format and tables, tested without sockets.

use super::wire::*;
use super::*;
use crate::recovery::mqtt::{TcpPosition, MAX_MQTT_PER_AP};
use std::net::{Ipv4Addr, Ipv6Addr};

const KEY: &[u8] = b"0123456789abcdef-both-nodes";

fn session(ap_port: u16, sequence: u32) -> MqttSession {
    MqttSession {
        ap_port,
        broker_port: 1883,
        position: Some(TcpPosition {
            ap_next_sequence: sequence,
            ap_acknowledgement: sequence.wrapping_mul(7),
        }),
    }
}

fn ap(last: u8, ike_port: u16) -> SyncedAp {
    SyncedAp {
        address: IpAddr::V4(Ipv4Addr::new(10, 77, 0, last)),
        ike_port,
        age_s: 1,
        mqtt: vec![session(40000 + u16::from(last), 1000)],
        mqtt_beyond_bound: 0,
        ike_peers: Vec::new(),
    }
}

/// The first datagram of `aps`, which must carry them all.
fn encode_all(key: &[u8], sequence: u64, aps: &[SyncedAp]) -> Vec<u8> {
    let (datagram, carried) = encode(key, sequence, aps);
    assert_eq!(carried, aps.len(), "a test datagram carries every AP");
    datagram
}

/// A version-1 peer's datagram, as the release before this one sent it.
fn encode_v1(key: &[u8], sequence: u64, aps: &[(IpAddr, u16, u16, u16)]) -> Vec<u8> {
    let mut out = MAGIC_V1.to_vec();
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(&(aps.len() as u16).to_be_bytes());
    for (address, ike_port, mqtt_port, age_s) in aps {
        push_address(&mut out, *address);
        for field in [ike_port, mqtt_port, age_s] {
            out.extend_from_slice(&field.to_be_bytes());
        }
    }
    sign(key, out)
}

#[test]
fn round_trip_v4_and_v6_with_every_connection() {
    let mut aps = vec![ap(51, 4500), ap(52, 61234)];
    aps[1].mqtt.push(MqttSession {
        ap_port: 40100,
        broker_port: 8883,
        position: None,
    });
    aps.push(SyncedAp {
        address: "fd00::7".parse().expect("v6"),
        ike_port: 500,
        age_s: 59,
        mqtt: Vec::new(),
        mqtt_beyond_bound: 0,
        ike_peers: Vec::new(),
    });
    let datagram = encode_all(KEY, 7, &aps);
    assert_eq!(&datagram[..4], MAGIC_V2, "no IKE peer: version 2");
    assert_eq!(decode(KEY, &datagram), Ok((7, aps)));
    // A full table goes out in datagrams under the size, each carrying
    // what fits, none lost.
    let full: Vec<SyncedAp> = (0..=255)
        .map(|n| {
            let mut ap = ap(n, 4500);
            ap.mqtt = (0..(n % 9) as u16).map(|i| session(41000 + i, 5)).collect();
            ap
        })
        .collect();
    let mut rest = &full[..];
    let mut decoded = Vec::new();
    while !rest.is_empty() {
        let (datagram, carried) = encode(KEY, 8, rest);
        assert!(datagram.len() <= MAX_DATAGRAM, "{}", datagram.len());
        assert!(carried > 0);
        decoded.extend(decode(KEY, &datagram).expect("decodes").1);
        rest = &rest[carried..];
    }
    assert_eq!(decoded, full);
}

fn peer(port: u16, id: &str) -> IkePeer {
    IkePeer {
        port,
        id: id.to_string(),
    }
}

#[test]
fn two_aps_behind_one_address_travel_with_their_ports_and_identities() {
    let mut shared = ap(200, 47000);
    shared.ike_peers = vec![peer(47000, "192.168.77.12"), peer(41000, "ap-11.example")];
    let aps = vec![shared, ap(51, 500)];
    let datagram = encode_all(KEY, 9, &aps);
    assert_eq!(&datagram[..4], MAGIC_V3, "IKE peers: version 3");
    assert_eq!(decode(KEY, &datagram), Ok((9, aps.clone())));
    // Bounded: the first peers within the bound, an identity longer
    // than its length byte left out.
    let mut crowded = ap(201, 4500);
    crowded.ike_peers = (0..12)
        .map(|n| peer(40000 + n, &format!("ap-{n}")))
        .collect();
    crowded.ike_peers.insert(0, peer(39999, &"x".repeat(300)));
    let (_, decoded) = decode(KEY, &encode_all(KEY, 10, &[crowded])).expect("decodes");
    assert_eq!(
        decoded[0].ike_peers.len(),
        crate::recovery::ike_sas::MAX_IKE_PEERS_PER_ADDRESS
    );
    assert_eq!(decoded[0].ike_peers[0], peer(40000, "ap-0"));
    // A full table with identities still fits under the size.
    let full: Vec<SyncedAp> = (0..=255)
        .map(|n| {
            let mut ap = ap(n, 4500);
            ap.ike_peers = (0..(n % 4) as u16)
                .map(|i| peer(40000 + i, &format!("ap-{n}-{i}.sites.example.org")))
                .collect();
            ap
        })
        .collect();
    let mut rest = &full[..];
    let mut decoded = Vec::new();
    while !rest.is_empty() {
        let (datagram, carried) = encode(KEY, 11, rest);
        assert!(datagram.len() <= MAX_DATAGRAM, "{}", datagram.len());
        decoded.extend(decode(KEY, &datagram).expect("decodes").1);
        rest = &rest[carried..];
    }
    assert_eq!(decoded, full);
    // A peer count beyond the bound or a cut identity is refused whole.
    let mut one = ap(52, 500);
    one.mqtt.clear();
    one.ike_peers = vec![peer(500, "ap")];
    let good = encode_all(KEY, 12, &[one]);
    let mut lying = good[..good.len() - TAG].to_vec();
    lying[HEADER + ENTRY_FIXED] = 9;
    assert_eq!(decode(KEY, &sign(KEY, lying)), Err(SyncError::Bound));
    let mut cut = good[..good.len() - TAG].to_vec();
    cut.pop();
    assert_eq!(decode(KEY, &sign(KEY, cut)), Err(SyncError::Length));
    let mut not_text = good[..good.len() - TAG].to_vec();
    *not_text.last_mut().expect("byte") = 0xff;
    assert_eq!(decode(KEY, &sign(KEY, not_text)), Err(SyncError::Identity));
}

#[test]
fn connections_beyond_the_bound_are_counted_not_carried() {
    let mut busy = ap(51, 4500);
    busy.mqtt = (0..11).map(|i| session(40000 + i, 9)).collect();
    busy.mqtt_beyond_bound = 2;
    let (_, aps) = decode(KEY, &encode_all(KEY, 1, &[busy])).expect("decodes");
    assert_eq!(aps[0].mqtt.len(), MAX_MQTT_PER_AP);
    assert_eq!(aps[0].mqtt_beyond_bound, 2 + 3);
    // A datagram claiming more than the bound is refused whole.
    let mut lying = encode_all(KEY, 2, &[ap(52, 4500)]);
    lying.truncate(lying.len() - TAG);
    lying[HEADER + ENTRY_FIXED - 1] = MAX_MQTT_PER_AP as u8 + 1;
    let lying = sign(KEY, lying);
    assert_eq!(decode(KEY, &lying), Err(SyncError::Bound));
}

#[test]
fn a_version_1_peer_is_still_read_and_a_newer_one_is_named() {
    let address: IpAddr = "10.77.0.51".parse().expect("ip");
    let old = encode_v1(KEY, 3, &[(address, 4500, 40051, 2), (address, 500, 0, 1)]);
    let (sequence, aps) = decode(KEY, &old).expect("version 1 decodes");
    assert_eq!(sequence, 3);
    assert_eq!(
        aps[0].mqtt,
        [MqttSession {
            ap_port: 40051,
            broker_port: 0,
            position: None
        }]
    );
    assert_eq!((aps[0].ike_port, aps[0].age_s), (4500, 2));
    assert!(aps[1].mqtt.is_empty());
    let mut newer = encode_all(KEY, 4, &[ap(51, 4500)]);
    newer[3] = b'4';
    assert_eq!(decode(KEY, &newer), Err(SyncError::Version));
}

#[test]
fn forged_replayed_and_malformed_datagrams_are_counted_and_ignored() {
    let peer: IpAddr = "10.77.0.2".parse().expect("ip");
    let now = Instant::now();
    let mut received = Received::new(peer);
    let good = encode_all(KEY, 10, &[ap(51, 4500)]);
    assert_eq!(received.accept(KEY, peer, &good, now), Ok(1));
    // Replayed, and an older one.
    assert_eq!(
        received.accept(KEY, peer, &good, now),
        Err(SyncError::Replay)
    );
    let older = encode_all(KEY, 9, &[ap(60, 4500)]);
    assert_eq!(
        received.accept(KEY, peer, &older, now),
        Err(SyncError::Replay)
    );
    // Another key, a flipped bit, a truncation, another sender.
    let forged = encode_all(b"someone else's key!!", 11, &[ap(61, 4500)]);
    assert_eq!(
        received.accept(KEY, peer, &forged, now),
        Err(SyncError::Mac)
    );
    let mut flipped = encode_all(KEY, 12, &[ap(62, 4500)]);
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
    let from_stranger = encode_all(KEY, 13, &[ap(63, 4500)]);
    assert_eq!(
        received.accept(KEY, stranger, &from_stranger, now),
        Err(SyncError::Source)
    );
    // An authenticated body whose count lies.
    let mut lying = encode_all(KEY, 14, &[ap(64, 4500)]);
    lying.truncate(lying.len() - TAG);
    lying[13] = 2;
    let lying = sign(KEY, lying);
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
            datagram[..4].copy_from_slice(MAGIC_V2);
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
        .accept(KEY, peer, &encode_all(KEY, 1, &[ap(51, 4500)]), start)
        .expect("accepted");
    received
        .accept(
            KEY,
            peer,
            &encode_all(KEY, 2, &[ap(52, 4500)]),
            start + FORGET_AFTER / 2,
        )
        .expect("accepted");
    let later = start + FORGET_AFTER + Duration::from_secs(1);
    let known: Vec<IpAddr> = received.aps(later).iter().map(|a| a.address).collect();
    assert_eq!(known, [ap(52, 0).address]);

    let mut sequence = 10;
    let per_datagram = (MAX_DATAGRAM - HEADER - TAG) / ENTRY_FIXED;
    for chunk in 0..(MAX_SYNCED_APS / per_datagram + 2) {
        let aps: Vec<SyncedAp> = (0..per_datagram)
            .map(|i| SyncedAp {
                address: IpAddr::V6(Ipv6Addr::from((chunk * per_datagram + i) as u128 + 1)),
                ike_port: 500,
                age_s: 0,
                mqtt: Vec::new(),
                mqtt_beyond_bound: 0,
                ike_peers: Vec::new(),
            })
            .collect();
        sequence += 1;
        received
            .accept(KEY, peer, &encode_all(KEY, sequence, &aps), later)
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
    // Connections: a new one goes out at once, a few bytes of MQTT do
    // not, a move beyond the slack does.
    let at = start + REFRESH + Duration::from_secs(2);
    let mut second = moved.clone();
    second[0].mqtt.push(session(40999, 1));
    assert_eq!(sender.due(&second, at), [second[0].clone()]);
    let mut chatted = second.clone();
    chatted[0].mqtt[0] = session(40051, 1000 + 300);
    assert!(sender.due(&chatted, at).is_empty(), "within the slack");
    let mut far = chatted.clone();
    far[0].mqtt[0] = session(40051, 1000 + POSITION_SLACK + 1);
    assert_eq!(sender.due(&far, at), [far[0].clone()], "beyond the slack");
}

#[test]
fn the_sync_leaves_from_the_servers_own_address_never_a_vip() {
    let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
    let peer = ip("10.77.0.2");
    let vips = [ip("10.77.0.100")];
    // The VIP's /24 is listed first and holds the peer too: a route lookup
    // would pick it; the sync must not.
    let addresses = [
        (ip("127.0.0.1"), ip("255.0.0.0")),
        (ip("10.77.0.100"), ip("255.255.255.0")),
        (ip("10.77.0.1"), ip("255.255.0.0")),
        (ip("fd00::1"), ip("ffff:ffff:ffff:ffff::")),
    ];
    assert_eq!(source_towards(addresses, peer, &vips), Some(ip("10.77.0.1")));
    // A peer behind a router: no address of ours holds it.
    assert_eq!(source_towards(addresses, ip("192.0.2.9"), &vips), None);
    assert_eq!(
        source_towards(addresses, ip("fd00::2"), &vips),
        Some(ip("fd00::1"))
    );
}

/// Issue 29 item 4: 10 000 APs (one MQTT connection each, 1 % taking a new
/// NAT-T port every second) stay bounded: no tick sends more than
/// [`MAX_PER_TICK`] entries, the standby holds the whole table within six
/// ticks (5 x 2 048 entries, some of them changes) and never loses an AP after, and the steady rate is a tick's share
/// of the table plus the changes — never the whole table at once.
#[test]
fn ten_thousand_aps_sync_in_bounded_ticks_and_are_never_forgotten() {
    const APS: usize = 10_000;
    const CHANGES_PER_TICK: usize = APS / 100;
    let start = Instant::now();
    let peer: IpAddr = "10.77.0.1".parse().expect("ip");
    let mut sender = Sender::default();
    let mut received = Received::new(peer);
    let mut table: Vec<SyncedAp> = (0..APS as u32)
        .map(|n| SyncedAp {
            address: IpAddr::V4(Ipv4Addr::from(0x0a4d_0001 + n)),
            ike_port: 4500,
            age_s: 0,
            mqtt: vec![session(40000 + (n % 20_000) as u16, 1000)],
            mqtt_beyond_bound: 0,
            ike_peers: Vec::new(),
        })
        .collect();
    let per_datagram = (MAX_DATAGRAM - HEADER - TAG) / (ENTRY_FIXED + CONNECTION);
    let ticks_per_refresh = (REFRESH.as_millis() / SEND_EVERY.as_millis()) as usize;
    let steady_entries = APS.div_ceil(ticks_per_refresh) + CHANGES_PER_TICK;
    let steady_bound = steady_entries.div_ceil(per_datagram) * MAX_DATAGRAM;
    let mut sequence = 1;
    let mut full_after = None;
    let (mut steady_bytes, mut steady_ticks, mut largest_tick) = (0, 0, 0);
    for tick in 0..60u32 {
        let now = start + SEND_EVERY * tick;
        for i in 0..CHANGES_PER_TICK {
            let index = (tick as usize * CHANGES_PER_TICK + i * 97) % APS;
            table[index].ike_port = 30_000 + tick as u16;
        }
        let due = sender.due(&table, now);
        assert!(due.len() <= MAX_PER_TICK, "tick {tick}: {} entries", due.len());
        let mut rest = &due[..];
        let mut bytes = 0;
        while !rest.is_empty() {
            sequence += 1;
            let (datagram, carried) = encode(KEY, sequence, rest);
            rest = &rest[carried..];
            bytes += datagram.len();
            received.accept(KEY, peer, &datagram, now).expect("accepted");
        }
        largest_tick = largest_tick.max(bytes);
        let held = received.aps(now).len();
        if full_after.is_none() && held == APS {
            full_after = Some(tick);
        }
        if let Some(full) = full_after {
            assert_eq!(held, APS, "an AP forgotten at tick {tick} (full at {full})");
        }
        // After the first full refresh period the table goes out in slices.
        if tick >= 2 * ticks_per_refresh as u32 {
            assert!(bytes <= steady_bound, "tick {tick}: {bytes} bytes > {steady_bound}");
            steady_bytes += bytes;
            steady_ticks += 1;
        }
    }
    let full_after = full_after.expect("the standby never held the whole table");
    assert!(full_after <= 5, "the whole table after {} ticks", full_after + 1);
    eprintln!(
        "sync at {APS} APs: the standby's table full after {} s, steady {} bytes/s (bound {steady_bound}), largest tick {largest_tick} bytes",
        full_after + 1,
        steady_bytes / steady_ticks,
    );
}
