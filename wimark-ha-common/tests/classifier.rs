//! The shared classifier in userspace, over the catalogue of crafted frames:
//! every frame lands in its counter; no truncated or bit-flipped advert is
//! ever valid; nothing panics. (The same frames go through the real kernel
//! object in prog_test_run.rs.)

use std::net::{IpAddr, Ipv4Addr};

use wimark_ha::vrrp::ChecksumMode;
use wimark_ha_common::{
    abi::{Counter, IpBytes},
    classify::{classify, classify_with_tcp, ApClass, DecodeError, TcpFacts, Verdict},
};
use wimark_ha_frames::{self as frames, catalogue, AP_1, AP_2, SERVER_A};

#[test]
fn every_catalogue_frame_lands_in_its_counter() {
    let mut failures = Vec::new();
    for case in catalogue() {
        let verdict = classify(case.frame.as_slice());
        if verdict.counter() != case.expected {
            failures.push(format!(
                "{}: expected {:?}, got {:?}",
                case.name, case.expected, verdict
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "misclassified:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_invalid_reason_is_covered_by_the_catalogue() {
    let cases = catalogue();
    for reason in DecodeError::ALL {
        assert!(
            cases.iter().any(|c| c.expected == reason.counter()),
            "no catalogue frame for {reason:?}"
        );
    }
}

#[test]
fn truncated_frames_are_never_valid_adverts() {
    for case in catalogue() {
        for cut in 0..case.frame.len() {
            let verdict = classify(&case.frame[..cut]);
            assert!(
                !matches!(verdict, Verdict::Vrrp(_)),
                "{} cut to {cut} of {} bytes was judged a valid advert",
                case.name,
                case.frame.len()
            );
            if case.expected == Counter::VrrpValid && cut >= vrrp_offset(&case.frame) + 8 {
                // Past the headers the advert is still VRRP, just short.
                assert_eq!(
                    verdict.counter(),
                    Counter::VrrpInvalidLength,
                    "{} cut to {cut}",
                    case.name
                );
            }
        }
    }
}

/// Where the VRRP message starts in one of our crafted frames.
fn vrrp_offset(frame: &[u8]) -> usize {
    let mut offset = 12;
    while matches!(
        u16::from_be_bytes([frame[offset], frame[offset + 1]]),
        0x8100 | 0x88a8
    ) {
        offset += 4;
    }
    let ethertype = u16::from_be_bytes([frame[offset], frame[offset + 1]]);
    offset
        + 2
        + if ethertype == 0x86dd {
            40
        } else {
            usize::from(frame[offset + 2] & 0x0f) * 4
        }
}

#[test]
fn any_single_bit_flip_in_an_advert_makes_it_invalid() {
    let advert = frames::v3_advert(200, 10, vec![IpAddr::V4(Ipv4Addr::new(10, 10, 10, 3))]);
    for mode in [
        ChecksumMode::WithPseudoHeader,
        ChecksumMode::WithoutPseudoHeader,
    ] {
        let frame = frames::vrrp_v4_frame(&advert, SERVER_A, 255, mode, &[]);
        let vrrp_start = 14 + 20;
        for byte in vrrp_start..frame.len() {
            for bit in 0..8 {
                let mut flipped = frame.clone();
                flipped[byte] ^= 1 << bit;
                let verdict = classify(flipped.as_slice());
                assert!(
                    !matches!(verdict, Verdict::Vrrp(_)),
                    "{mode:?}: flipping bit {bit} of byte {byte} still gave a valid advert: {verdict:?}"
                );
            }
        }
    }
}

#[test]
fn advert_fields_are_reported_in_milliseconds() {
    let v2 = classify(
        frames::vrrp_v4_frame(
            &frames::vendor_v2_advert(),
            SERVER_A,
            255,
            ChecksumMode::WithoutPseudoHeader,
            &[],
        )
        .as_slice(),
    );
    let Verdict::Vrrp(v2) = v2 else {
        panic!("vendor advert not valid: {v2:?}")
    };
    assert_eq!(
        (
            v2.version,
            v2.vrid,
            v2.priority,
            v2.interval_ms,
            v2.auth_type
        ),
        (2, 67, 200, 1000, 1)
    );
    assert_eq!(v2.source, IpBytes::v4(SERVER_A.octets()));
    let frame = frames::vrrp_v4_frame(
        &frames::vendor_v2_advert(),
        SERVER_A,
        255,
        ChecksumMode::WithoutPseudoHeader,
        &[],
    );
    let at = wimark_ha_common::classify::untagged_destination_offset(v2.source.family);
    assert_eq!(
        frame[at..at + 4],
        [224, 0, 0, 18],
        "the daemon checks the destination is the group or one of its own"
    );

    let v3 = frames::v3_advert(0, 40950, vec![IpAddr::V4(Ipv4Addr::new(10, 10, 10, 3))]);
    let v3 = classify(
        frames::vrrp_v4_frame(&v3, SERVER_A, 255, ChecksumMode::WithPseudoHeader, &[]).as_slice(),
    );
    let Verdict::Vrrp(v3) = v3 else {
        panic!("v3 advert not valid: {v3:?}")
    };
    assert_eq!(
        (v3.version, v3.priority, v3.interval_ms, v3.address_count),
        (3, 0, 40950, 1)
    );
}

#[test]
fn ap_address_is_the_side_that_is_not_the_service_port() {
    let to_controller =
        classify(frames::udp_v4_frame(AP_1, frames::SERVER_B, 500, 500, &[0; 8]).as_slice());
    assert_eq!(
        to_controller,
        Verdict::Ap {
            class: ApClass::Ike,
            ap: IpBytes::v4(AP_1.octets()),
            ap_port: 500,
            session: false,
        }
    );
    // Behind a NAT the AP's NAT-T port is what the mapping made of 4500.
    let natted =
        classify(frames::udp_v4_frame(AP_1, frames::SERVER_B, 61234, 4500, &[0; 8]).as_slice());
    assert_eq!(
        natted,
        Verdict::Ap {
            class: ApClass::NatT,
            ap: IpBytes::v4(AP_1.octets()),
            ap_port: 61234,
            session: false,
        }
    );
    let from_controller =
        classify(frames::tcp_v4_frame(frames::SERVER_B, AP_2, 1883, 40000, &[]).as_slice());
    assert_eq!(
        from_controller,
        Verdict::Ap {
            class: ApClass::Mqtt,
            ap: IpBytes::v4(AP_2.octets()),
            ap_port: 40000,
            session: false,
        }
    );
    let mut tcp = TcpFacts::default();
    classify_with_tcp(
        frames::tcp_v4_frame(frames::SERVER_B, AP_2, 1883, 40000, &[1; 4]).as_slice(),
        &mut tcp,
    );
    assert_eq!(
        tcp,
        TcpFacts::default(),
        "what the controller sends says nothing of the AP's numbers"
    );
    // From the AP: its sequence numbers, flags and data length.
    let to_broker = classify_with_tcp(
        frames::tcp_v4_frame(AP_2, frames::SERVER_B, 40000, 8883, &[7; 9]).as_slice(),
        &mut tcp,
    );
    assert!(
        matches!(to_broker, Verdict::Ap { class: ApClass::MqttTls, ap_port: 40000, .. }),
        "{to_broker:?}"
    );
    assert_eq!(
        tcp,
        TcpFacts {
            sequence: 1,
            acknowledgement: 0,
            data_len: 9,
            flags: 0x18,
        }
    );
}

/// "The AP is back" is a session it opens, never any packet: IKE_AUTH (on
/// 500, or on 4500 behind the non-ESP marker) and a SYN to the broker
/// count; IKE_SA_INIT (behind a NAT it comes from another mapped port than
/// the same AP's IKE_AUTH, and would count one AP twice), ESP-in-UDP, an
/// INFORMATIONAL (DPD), a SYN-ACK or an ACK do not, nor anything the
/// controller sends.
#[test]
fn only_a_session_the_ap_opens_counts_as_back() {
    let session = |frame: Vec<u8>| match classify(frame.as_slice()) {
        Verdict::Ap { session, .. } => session,
        other => panic!("not AP traffic: {other:?}"),
    };
    let server = frames::SERVER_B;
    let ike = |exchange: u8| frames::ike_header(exchange);
    assert!(!session(frames::udp_v4_frame(
        AP_1,
        server,
        500,
        500,
        &ike(34)
    )));
    assert!(session(frames::udp_v4_frame(
        AP_1,
        server,
        500,
        500,
        &ike(35)
    )));
    let mut natted = vec![0, 0, 0, 0];
    natted.extend(ike(35));
    assert!(session(frames::udp_v4_frame(
        AP_1, server, 61234, 4500, &natted
    )));
    let mut dpd = vec![0, 0, 0, 0];
    dpd.extend(ike(37));
    assert!(!session(frames::udp_v4_frame(
        AP_1, server, 4500, 4500, &dpd
    )));
    let mut esp_in_udp = vec![0x12, 0x34, 0x56, 0x78];
    esp_in_udp.extend([0; 24]);
    assert!(!session(frames::udp_v4_frame(
        AP_1,
        server,
        4500,
        4500,
        &esp_in_udp
    )));
    // (With 500 on both ends direction cannot be told from the ports; the
    // monitor sees only what arrives, so that is the AP's.)
    assert!(
        !session(frames::udp_v4_frame(server, AP_1, 500, 61000, &ike(34))),
        "from the controller"
    );
    assert!(session(frames::tcp_v4_frame_with_flags(
        AP_2, server, 40000, 1883, 0x02
    )));
    assert!(session(frames::tcp_v4_frame_with_flags(
        AP_2, server, 40000, 8883, 0x02
    )));
    assert!(!session(frames::tcp_v4_frame_with_flags(
        AP_2, server, 40000, 1883, 0x12
    )));
    assert!(!session(frames::tcp_v4_frame_with_flags(
        AP_2, server, 40000, 1883, 0x10
    )));
    assert!(!session(frames::tcp_v4_frame_with_flags(
        server, AP_2, 1883, 40000, 0x02
    )));
    // A truncated IKE header is not a session (and not a panic).
    assert!(!session(frames::udp_v4_frame(
        AP_1,
        server,
        500,
        500,
        &ike(34)[..10]
    )));
}

#[test]
fn garbage_never_panics_and_is_never_a_valid_advert() {
    // A deterministic pseudo-random sweep (xorshift), frames forced to look
    // like IPv4/VRRP so the deep paths are exercised.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut rejected_as_vrrp = 0;
    for n in 0..200_000 {
        let len = (next() % 160) as usize;
        let mut frame: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if len > 34 {
            frame[12] = 0x08;
            frame[13] = 0x00;
            frame[14] = 0x45;
            frame[23] = 112;
        }
        match classify(frame.as_slice()) {
            // A valid verdict needs TTL 255, version and type, a consistent
            // length and both checksums: random bytes never have them all
            // (the sweep is deterministic, so a hit would reproduce).
            Verdict::Vrrp(advert) => {
                panic!("garbage frame {n} taken for a valid advert {advert:?}: {frame:02x?}")
            }
            Verdict::VrrpInvalid(_) => rejected_as_vrrp += 1,
            _ => {}
        }
    }
    // The sweep reached the VRRP checks, not only the Ethernet/IP ones.
    assert!(rejected_as_vrrp > 100_000, "{rejected_as_vrrp}");
}
