//! The real kernel object over the frame catalogue, through BPF_PROG_TEST_RUN:
//! it passes every frame unaltered, counts each under exactly the counter the
//! shared classifier names, never counts a truncated advert as valid, keeps
//! the peer table, and reports peer changes over the ring buffer.

use aya::maps::{Array, RingBuf};
use std::net::{IpAddr, Ipv4Addr};
use wimark_ha::monitor::{read_peers, PeerChange};
use wimark_ha::vrrp::ChecksumMode;
use wimark_ha_common::{
    abi::{Counter, IpBytes, MAP_EVENTS, MAP_PEER_EVENTS_READER},
    classify::classify,
};
use wimark_ha_tests::{
    frames::{self, catalogue, SERVER_A},
    kernel::{KernelMonitor, XDP_PASS},
};

fn delta(
    before: &[wimark_ha_common::abi::TrafficCounter],
    after: &[wimark_ha_common::abi::TrafficCounter],
) -> Vec<(Counter, u64, u64)> {
    Counter::ALL
        .iter()
        .filter_map(|c| {
            let i = *c as usize;
            let packets = after[i].packets - before[i].packets;
            let bytes = after[i].bytes - before[i].bytes;
            (packets != 0 || bytes != 0).then_some((*c, packets, bytes))
        })
        .collect()
}

#[test]
fn kernel_counts_each_catalogue_frame_once_under_its_counter_and_passes_it_unaltered() {
    let monitor = KernelMonitor::load().expect("load");
    for case in catalogue() {
        let before = monitor.counters().expect("counters");
        let run = monitor.run(&case.frame, 1).expect("test run");
        let after = monitor.counters().expect("counters");
        assert_eq!(
            run.return_value, XDP_PASS,
            "{}: XDP must pass every frame",
            case.name
        );
        assert_eq!(
            run.data_out, case.frame,
            "{}: XDP must not alter the frame",
            case.name
        );
        assert_eq!(
            delta(&before, &after),
            vec![(case.expected, 1, case.frame.len() as u64)],
            "{}: kernel counters",
            case.name
        );
        assert_eq!(
            classify(case.frame.as_slice()).counter(),
            case.expected,
            "{}: userspace",
            case.name
        );
    }
}

#[test]
fn kernel_agrees_with_userspace_on_every_truncation() {
    let monitor = KernelMonitor::load().expect("load");
    let mut runs = 0u64;
    for case in catalogue() {
        // BPF_PROG_TEST_RUN refuses XDP input shorter than an Ethernet header.
        for cut in 14..case.frame.len() {
            let truncated = &case.frame[..cut];
            let before = monitor.counters().expect("counters");
            let run = monitor.run(truncated, 1).expect("test run");
            let after = monitor.counters().expect("counters");
            runs += 1;
            assert_eq!(run.return_value, XDP_PASS);
            let expected = classify(truncated).counter();
            assert_ne!(expected, Counter::VrrpValid, "{} cut to {cut}", case.name);
            assert_eq!(
                delta(&before, &after),
                vec![(expected, 1, cut as u64)],
                "{} cut to {cut}: kernel and userspace disagree",
                case.name
            );
        }
    }
    assert!(runs > 1000, "only {runs} truncations tried");
}

#[test]
fn kernel_keeps_the_peer_table_and_reports_changes() {
    let mut monitor = KernelMonitor::load().expect("load");
    let vip = IpAddr::V4(Ipv4Addr::new(10, 10, 10, 3));
    let send_from = |monitor: &KernelMonitor, source: Ipv4Addr, priority: u8, interval_ms: u64, times: u32| {
        let frame = frames::vrrp_v4_frame(
            &frames::v3_advert(priority, interval_ms, vec![vip]),
            source,
            255,
            ChecksumMode::WithPseudoHeader,
            &[],
        );
        for _ in 0..times {
            assert_eq!(monitor.run(&frame, 1).expect("run").return_value, XDP_PASS);
        }
    };
    let send = |monitor: &KernelMonitor, priority: u8, interval_ms: u64, times: u32| {
        send_from(monitor, SERVER_A, priority, interval_ms, times)
    };
    // No reader yet (as under the daemon): changes are kept in the peer
    // table but not queued, so an unread ring never fills and no loss is
    // counted.
    let unread = Ipv4Addr::new(10, 10, 10, 9);
    for priority in [100, 101, 100, 101] {
        send_from(&monitor, unread, priority, 10, 1);
    }
    {
        let mut reader: Array<_, u32> =
            Array::try_from(monitor.ebpf.map_mut(MAP_PEER_EVENTS_READER).expect("reader map"))
                .expect("array");
        reader.set(0, 1, 0).expect("reader on");
    }
    send(&monitor, 200, 10, 5); // new peer, then 4 unchanged adverts
    send(&monitor, 150, 10, 2); // priority change
    send(&monitor, 150, 100, 1); // interval change
    send(&monitor, 0, 100, 1); // resignation

    let peers = read_peers(&monitor.ebpf).expect("peers");
    assert_eq!(peers.len(), 2, "{peers:?}");
    let (key, record) = *peers
        .iter()
        .find(|(key, _)| key.source == IpBytes::v4(SERVER_A.octets()))
        .expect("server A's record");
    assert_eq!((key.vrid, key.source), (67, IpBytes::v4(SERVER_A.octets())));
    assert_eq!(
        (
            record.adverts,
            record.priority,
            record.interval_ms,
            record.version
        ),
        (9, 0, 100, 3)
    );
    assert!(record.last_seen_ns > 0);

    let map = monitor.ebpf.take_map(MAP_EVENTS).expect("events map");
    let mut ring = RingBuf::try_from(map).expect("ring buffer");
    let mut changes = Vec::new();
    while let Some(item) = ring.next() {
        changes.push(PeerChange::decode(&item).expect("decodable event"));
    }
    let kinds: Vec<_> = changes
        .iter()
        .map(|c| {
            (
                c.new_peer,
                c.priority_changed,
                c.priority_zero,
                c.interval_changed,
                c.priority,
                c.interval_ms,
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (true, false, false, false, 200, 10),
            (false, true, false, false, 150, 10),
            (false, false, false, true, 150, 100),
            (false, true, true, false, 0, 100),
        ],
        "one event per change, none for unchanged adverts, none before a reader"
    );
    let counters = monitor.counters().expect("counters");
    assert_eq!(counters[Counter::PeerEventsLost as usize].packets, 0);
    assert_eq!(changes[1].previous_priority, 200);
    assert_eq!(changes[2].previous_interval_ms, 10);
    assert!(changes
        .windows(2)
        .all(|w| w[0].timestamp_ns <= w[1].timestamp_ns));
}

/// "The AP is back" is stamped by the kernel, precisely, and only by a
/// packet that opens a session: an IKE_AUTH stamps the IKE session of the
/// AP's address and port (two APs behind one NAT address apart), an MQTT
/// SYN its connection's entry (not the IKE stamp); ESP, a DPD, an
/// IKE_SA_INIT or a data segment leave both alone.
#[test]
fn a_session_start_is_stamped_per_ap_and_nothing_else_is() {
    let monitor = KernelMonitor::load().expect("load");
    let ap = Ipv4Addr::new(10, 20, 0, 9);
    let sessions = |monitor: &KernelMonitor| -> Vec<(u16, u64)> {
        let mut found: Vec<(u16, u64)> = wimark_ha::monitor::read_ike_sessions(&monitor.ebpf)
            .expect("IKE session table")
            .into_iter()
            .filter(|(key, _)| key.ap == IpBytes::v4(ap.octets()))
            .map(|(key, ns)| (key.ap_port, ns))
            .collect();
        found.sort_unstable();
        found
    };
    let session_ns = |monitor: &KernelMonitor| -> Option<u64> {
        let found = sessions(monitor);
        assert!(found.len() <= 1, "one port so far: {found:?}");
        Some(found.first().map_or(0, |(_, ns)| *ns))
    };
    let mut esp_in_udp = vec![0x12, 0x34, 0x56, 0x78];
    esp_in_udp.extend([0; 24]);
    monitor
        .run(
            &frames::udp_v4_frame(ap, SERVER_A, 4500, 4500, &esp_in_udp),
            1,
        )
        .expect("ESP-in-UDP");
    let mut dpd = vec![0, 0, 0, 0];
    dpd.extend(frames::ike_header(37));
    monitor
        .run(&frames::udp_v4_frame(ap, SERVER_A, 4500, 4500, &dpd), 1)
        .expect("DPD");
    monitor
        .run(&frames::tcp_v4_frame(ap, SERVER_A, 40001, 1883, &[0x30]), 1)
        .expect("MQTT data");
    let mut ike_sa_init = vec![0, 0, 0, 0];
    ike_sa_init.extend(frames::ike_header(34));
    monitor
        .run(
            &frames::udp_v4_frame(ap, SERVER_A, 41000, 4500, &ike_sa_init),
            1,
        )
        .expect("IKE_SA_INIT");
    assert_eq!(session_ns(&monitor), Some(0), "no session opened yet");
    let before = wimark_ha::clock::monotonic_now_ns();
    let mut ike_auth = vec![0, 0, 0, 0];
    ike_auth.extend(frames::ike_header(35));
    monitor
        .run(
            &frames::udp_v4_frame(ap, SERVER_A, 4500, 4500, &ike_auth),
            1,
        )
        .expect("IKE_AUTH");
    let after = wimark_ha::clock::monotonic_now_ns();
    let stamp = session_ns(&monitor).expect("in the table");
    assert!(
        (before..=after).contains(&stamp),
        "{before} <= {stamp} <= {after}"
    );
    monitor
        .run(
            &frames::udp_v4_frame(ap, SERVER_A, 4500, 4500, &esp_in_udp),
            3,
        )
        .expect("ESP again");
    assert_eq!(session_ns(&monitor), Some(stamp), "ESP leaves it alone");
    monitor
        .run(
            &frames::tcp_v4_frame_with_flags(ap, SERVER_A, 40002, 1883, 0x02),
            1,
        )
        .expect("MQTT SYN");
    let after_syn = wimark_ha::clock::monotonic_now_ns();
    assert_eq!(
        session_ns(&monitor),
        Some(stamp),
        "an MQTT SYN is not an IKE session"
    );
    let opened: Vec<(u16, u64)> = wimark_ha::monitor::read_mqtt(&monitor.ebpf)
        .expect("MQTT table")
        .into_iter()
        .filter(|(key, _)| key.ap == IpBytes::v4(ap.octets()))
        .map(|(key, connection)| (key.ap_port, connection.opened_ns))
        .collect();
    assert!(
        opened
            .iter()
            .any(|(port, ns)| *port == 40002 && (after..=after_syn).contains(ns)),
        "the SYN stamps its connection: {opened:?}"
    );
    assert!(
        opened.iter().any(|(port, ns)| *port == 40001 && *ns == 0),
        "a connection entered mid-stream was not opened now: {opened:?}"
    );
    // A second AP behind the same NAT address, from its own mapped port:
    // an IKE session of its own.
    monitor
        .run(
            &frames::udp_v4_frame(ap, SERVER_A, 47000, 4500, &ike_auth),
            1,
        )
        .expect("the second AP's IKE_AUTH");
    let both = sessions(&monitor);
    assert_eq!(
        both.iter().map(|(port, _)| *port).collect::<Vec<_>>(),
        [4500, 47000],
        "{both:?}"
    );
    assert_eq!(both[0].1, stamp, "the first AP's stamp stays");
}

/// The AP table keeps what a new master needs to reach each AP's IKE: the
/// AP-side port of its IKE / NAT-T traffic (a NAT's mapping, not 4500), the
/// latest winning.
#[test]
fn the_ap_table_keeps_each_aps_ike_port() {
    let monitor = KernelMonitor::load().expect("load");
    let ap = Ipv4Addr::new(10, 20, 0, 7);
    monitor
        .run(&frames::udp_v4_frame(ap, SERVER_A, 500, 500, &[0; 8]), 1)
        .expect("IKE");
    monitor
        .run(&frames::udp_v4_frame(ap, SERVER_A, 61234, 4500, &[0; 8]), 1)
        .expect("NAT-T");
    let aps = wimark_ha::monitor::read_aps(&monitor.ebpf).expect("AP table");
    let seen = aps
        .iter()
        .find(|a| a.address == IpBytes::v4(ap.octets()))
        .unwrap_or_else(|| panic!("{ap} not in {aps:?}"));
    assert_eq!(seen.ike_port, 61234);
}

/// A TCP segment from `src:sport` to `dst:dport` with these numbers, flags
/// and data.
fn segment(
    src: Ipv4Addr,
    sport: u16,
    dport: u16,
    sequence: u32,
    acknowledgement: u32,
    flags: u8,
    data: &[u8],
) -> Vec<u8> {
    let mut frame = frames::tcp_v4_frame(src, SERVER_A, sport, dport, data);
    // Ethernet 14 + IPv4 20: the TCP header.
    frame[34 + 4..34 + 8].copy_from_slice(&sequence.to_be_bytes());
    frame[34 + 8..34 + 12].copy_from_slice(&acknowledgement.to_be_bytes());
    frame[34 + 13] = flags;
    frame
}

/// Every MQTT connection of an AP, on either broker port, with where it
/// stands: the AP's next sequence number (its data and SYN counted) and its
/// latest acknowledgement. A bare ACK does not enter a connection (the
/// answer to a new master's reset would); the AP's FIN or RST removes it;
/// what the controller sends is not the AP's.
#[test]
fn the_mqtt_table_keeps_every_connection_and_where_it_stands() {
    let monitor = KernelMonitor::load().expect("load");
    let ap = Ipv4Addr::new(10, 20, 0, 7);
    let run = |frame: Vec<u8>| monitor.run(&frame, 1).expect("run");
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const PSH_ACK: u8 = 0x18;
    // Subscriber: SYN, then the handshake's ACK, then 12 bytes of CONNECT.
    run(segment(ap, 40001, 1883, 1000, 0, SYN, &[]));
    run(segment(ap, 40001, 1883, 1001, 7001, ACK, &[]));
    run(segment(ap, 40001, 1883, 1001, 7001, PSH_ACK, &[0x10; 12]));
    // A publisher over TLS, seen mid-connection (opened before we looked).
    run(segment(ap, 40002, 8883, 50, 90, PSH_ACK, &[0x17; 30]));
    // A bare ACK of an unknown connection, then one closed by the AP.
    run(segment(ap, 40003, 1883, 5, 6, ACK, &[]));
    run(segment(ap, 40004, 1883, 8, 9, PSH_ACK, &[1; 2]));
    run(segment(ap, 40004, 1883, 10, 9, 0x11, &[]));
    // The controller's own segment to the AP.
    run(frames::tcp_v4_frame(SERVER_A, ap, 1883, 40005, &[1; 4]));
    let table = wimark_ha::monitor::read_mqtt(&monitor.ebpf).expect("MQTT table");
    let mut held: Vec<(u16, u16, u32, u32, u8, bool)> = table
        .iter()
        .map(|(key, c)| {
            assert_eq!(key.ap, IpBytes::v4(ap.octets()));
            (
                key.ap_port,
                key.broker_port,
                c.ap_next_sequence,
                c.ap_acknowledgement,
                c.acknowledged,
                c.opened_ns != 0,
            )
        })
        .collect();
    held.sort();
    assert_eq!(
        held,
        [
            (40001, 1883, 1013, 7001, 1, true),
            (40002, 8883, 80, 90, 1, false),
        ]
    );
}

/// The verifier walks every path through the program, up to a million
/// instructions; past that the kernel refuses to load it (E2BIG) and the
/// daemon cannot start. At 99.5 % of that budget (2026-12-07, before the
/// checksum went through the kernel's helper) any branch added tipped it
/// over, and an older kernel, which prunes less, might refuse it outright.
/// Keep a margin: a change that eats it must pay for itself elsewhere.
#[test]
fn the_monitor_keeps_a_margin_under_the_verifiers_budget() {
    const BUDGET: u32 = 1_000_000;
    const MARGIN_LIMIT: u32 = 600_000;
    let monitor = KernelMonitor::load().expect("load");
    let program: &aya::programs::Xdp = monitor
        .ebpf
        .program(wimark_ha_common::abi::PROGRAM_NAME)
        .expect("the monitor program")
        .try_into()
        .expect("an XDP program");
    let verified = program
        .info()
        .expect("program info")
        .verified_instruction_count()
        .expect("the kernel reports verified instructions since Linux 5.16; this one does not");
    println!("verifier: {verified} of {BUDGET} instructions");
    assert!(
        verified <= MARGIN_LIMIT,
        "the verifier processed {verified} of {BUDGET} instructions to load the monitor (keep it under {MARGIN_LIMIT})"
    );
}

/// The kernel sums a VRRP message with its checksum helper in chunks of
/// 512, 512, then 256 down to 4 bytes; userspace word by word. Every chunk
/// size, up to the longest message (255 IPv4 or 64 IPv6 addresses), valid
/// and with one bit flipped in the last address, over IPv4 with and without
/// the pseudo-header and over IPv6: the kernel counts what userspace does.
#[test]
fn kernel_checksums_every_message_length_as_userspace_does() {
    use wimark_ha_common::abi::TrafficCounter;
    let monitor = KernelMonitor::load().expect("load");
    let check = |frame: &[u8], what: &str, want: Counter| {
        let before: Vec<TrafficCounter> = monitor.counters().expect("counters").to_vec();
        monitor.run(frame, 1).expect("test run");
        let after: Vec<TrafficCounter> = monitor.counters().expect("counters").to_vec();
        assert_eq!(classify(frame).counter(), want, "{what}: userspace");
        assert_eq!(
            delta(&before, &after),
            vec![(want, 1, frame.len() as u64)],
            "{what}: kernel"
        );
    };
    let mut tried = 0;
    for count in [1u8, 2, 3, 5, 7, 13, 31, 63, 64, 127, 128, 191, 254, 255] {
        let addresses = (0..count)
            .map(|i| IpAddr::V4(Ipv4Addr::new(10, 10, i / 100, i)))
            .collect();
        let advert = frames::v3_advert(100, 1000, addresses);
        for mode in [ChecksumMode::WithPseudoHeader, ChecksumMode::WithoutPseudoHeader] {
            let mut frame = frames::vrrp_v4_frame(&advert, SERVER_A, 255, mode, &[]);
            check(&frame, &format!("IPv4, {count} addresses, {mode:?}"), Counter::VrrpValid);
            *frame.last_mut().expect("not empty") ^= 0x01;
            check(
                &frame,
                &format!("IPv4, {count} addresses, {mode:?}, a bit flipped"),
                Counter::VrrpInvalidChecksum,
            );
            tried += 2;
        }
    }
    for count in [1u8, 2, 3, 15, 16, 31, 32, 33, 63, 64] {
        let addresses = (0..count)
            .map(|i| IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 1, u16::from(i))))
            .collect();
        let advert = frames::v3_advert(100, 1000, addresses);
        let mut frame = frames::vrrp_v6_frame(&advert, "fe80::1".parse().expect("address"), 255);
        check(&frame, &format!("IPv6, {count} addresses"), Counter::VrrpValid);
        *frame.last_mut().expect("not empty") ^= 0x80;
        check(
            &frame,
            &format!("IPv6, {count} addresses, a bit flipped"),
            Counter::VrrpInvalidChecksum,
        );
        tried += 2;
    }
    assert_eq!(tried, 76);
}
