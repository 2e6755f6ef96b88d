//! Crafted Ethernet frames, and a catalogue of labelled ones: each frame with
//! the counter the classifier must put it under. The same catalogue drives
//! the userspace classifier tests, the BPF_PROG_TEST_RUN tests of the real
//! kernel object, the netns count test and the benchmarks.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use wimark_ha::vrrp::{Advert, Auth, ChecksumMode, Version};
use wimark_ha_common::{
    abi::{Counter, IpBytes},
    classify::{
        internet_checksum, IpContext, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ,
        ETHERTYPE_VLAN,
    },
};

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
pub const VRRP_V4_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
pub const VRRP_V6_GROUP: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
pub const SERVER_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const SERVER_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const AP_1: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 101);
pub const AP_2: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 102);
pub const SERVER_A6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xa);
pub const AP_6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x101);
pub const SERVER_B6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x2);

/// An Ethernet frame with optional VLAN tags `(tpid, vid)`, outermost first.
pub fn ethernet(
    dst: [u8; 6],
    src: [u8; 6],
    tags: &[(u16, u16)],
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut frame = Vec::with_capacity(18 + 4 * tags.len() + payload.len());
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    for (tpid, vid) in tags {
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&vid.to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An IPv4 packet (20-byte header, correct header checksum).
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, protocol: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_with(src, dst, ttl, protocol, payload, 0, &[])
}

/// An IPv4 packet with a fragment field (`flags << 13 | offset`) and options.
pub fn ipv4_with(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    protocol: u8,
    payload: &[u8],
    fragment: u16,
    options: &[u8],
) -> Vec<u8> {
    assert!(options.len().is_multiple_of(4) && options.len() <= 40);
    let header_len = 20 + options.len();
    let total = (header_len + payload.len()) as u16;
    let mut p = Vec::with_capacity(total as usize);
    p.push(0x40 | (header_len / 4) as u8);
    p.push(0);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&fragment.to_be_bytes());
    p.push(ttl);
    p.push(protocol);
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(options);
    let checksum = internet_checksum(&p, None);
    p[10..12].copy_from_slice(&checksum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An IPv6 packet; `extensions` are `(type, bytes)` headers placed before the
/// payload, each `bytes` starting with its own next-header slot (filled in).
pub fn ipv6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    next_header: u8,
    payload: &[u8],
    extensions: &[(u8, Vec<u8>)],
) -> Vec<u8> {
    let mut chain = Vec::new();
    for (i, (_, bytes)) in extensions.iter().enumerate() {
        let mut bytes = bytes.clone();
        bytes[0] = extensions.get(i + 1).map_or(next_header, |(kind, _)| *kind);
        chain.extend_from_slice(&bytes);
    }
    let first = extensions.first().map_or(next_header, |(kind, _)| *kind);
    let length = (chain.len() + payload.len()) as u16;
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&length.to_be_bytes());
    p.push(first);
    p.push(hop_limit);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&chain);
    p.extend_from_slice(payload);
    p
}

pub fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + payload.len());
    p.extend_from_slice(&src_port.to_be_bytes());
    p.extend_from_slice(&dst_port.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]); // no checksum: the monitor does not check it
    p.extend_from_slice(payload);
    p
}

pub fn tcp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(20 + payload.len());
    p.extend_from_slice(&src_port.to_be_bytes());
    p.extend_from_slice(&dst_port.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]); // seq, ack
    p.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]); // len 20, PSH|ACK
    p.extend_from_slice(payload);
    p
}

fn ip_bytes(address: IpAddr) -> IpBytes {
    match address {
        IpAddr::V4(a) => IpBytes::v4(a.octets()),
        IpAddr::V6(a) => IpBytes::v6(a.octets()),
    }
}

/// Recomputes a VRRP message's checksum after a test changed its bytes.
pub fn fix_vrrp_checksum(message: &mut [u8], src: IpAddr, dst: IpAddr, pseudo_header: bool) {
    message[6] = 0;
    message[7] = 0;
    let ip = IpContext {
        source: ip_bytes(src),
        destination: ip_bytes(dst),
        ttl: 255,
    };
    let sum = internet_checksum(message, pseudo_header.then_some(&ip));
    message[6..8].copy_from_slice(&sum.to_be_bytes());
}

/// The vendor's instance: VRID 67, priority 200, `auth_pass`, 1 s, VIP 10.10.10.3.
pub fn vendor_v2_advert() -> Advert {
    Advert {
        version: Version::V2,
        vrid: 67,
        priority: 200,
        interval: Duration::from_secs(1),
        auth: Auth::password("wimark12"),
        addresses: vec![IpAddr::V4(Ipv4Addr::new(10, 10, 10, 3))],
    }
}

pub fn v3_advert(priority: u8, interval_ms: u64, addresses: Vec<IpAddr>) -> Advert {
    Advert {
        version: Version::V3,
        vrid: 67,
        priority,
        interval: Duration::from_millis(interval_ms),
        auth: Auth::None,
        addresses,
    }
}

/// A whole VRRP-over-IPv4 frame as a router would send it.
pub fn vrrp_v4_frame(
    advert: &Advert,
    src: Ipv4Addr,
    ttl: u8,
    mode: ChecksumMode,
    tags: &[(u16, u16)],
) -> Vec<u8> {
    let message = advert
        .encode(IpAddr::V4(src), IpAddr::V4(VRRP_V4_GROUP), mode)
        .expect("test adverts are encodable");
    vrrp_v4_frame_from(&message, src, ttl, tags)
}

pub fn vrrp_v4_frame_from(message: &[u8], src: Ipv4Addr, ttl: u8, tags: &[(u16, u16)]) -> Vec<u8> {
    let vmac = [0x00, 0x00, 0x5e, 0x00, 0x01, 67];
    ethernet(
        [0x01, 0x00, 0x5e, 0, 0, 0x12],
        vmac,
        tags,
        ETHERTYPE_IPV4,
        &ipv4(src, VRRP_V4_GROUP, ttl, 112, message),
    )
}

/// A whole, valid VRRPv3 advert from [`SERVER_A`] in an IPv4 packet whose
/// fragment field (`flags << 13 | offset`) is `fragment`.
pub fn vrrp_v4_fragment(advert: &Advert, fragment: u16) -> Vec<u8> {
    let message = advert
        .encode(
            IpAddr::V4(SERVER_A),
            IpAddr::V4(VRRP_V4_GROUP),
            ChecksumMode::WithPseudoHeader,
        )
        .expect("test adverts are encodable");
    ethernet(
        [0x01, 0x00, 0x5e, 0, 0, 0x12],
        MAC_A,
        &[],
        ETHERTYPE_IPV4,
        &ipv4_with(SERVER_A, VRRP_V4_GROUP, 255, 112, &message, fragment, &[]),
    )
}

pub fn vrrp_v6_frame(advert: &Advert, src: Ipv6Addr, hop_limit: u8) -> Vec<u8> {
    let message = advert
        .encode(
            IpAddr::V6(src),
            IpAddr::V6(VRRP_V6_GROUP),
            ChecksumMode::WithPseudoHeader,
        )
        .expect("test adverts are encodable");
    vrrp_v6_frame_from(&message, src, hop_limit)
}

pub fn vrrp_v6_frame_from(message: &[u8], src: Ipv6Addr, hop_limit: u8) -> Vec<u8> {
    let vmac = [0x00, 0x00, 0x5e, 0x00, 0x02, 67];
    ethernet(
        [0x33, 0x33, 0, 0, 0, 0x12],
        vmac,
        &[],
        ETHERTYPE_IPV6,
        &ipv6(src, VRRP_V6_GROUP, hop_limit, 112, message, &[]),
    )
}

pub fn udp_v4_frame(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    ipv4_frame(src, dst, 17, &udp(sport, dport, payload))
}

pub fn tcp_v4_frame(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    ipv4_frame(src, dst, 6, &tcp(sport, dport, payload))
}

/// An IKEv2 header (RFC 7296 §3.1) of `exchange` (34 IKE_SA_INIT, 35
/// IKE_AUTH, 37 INFORMATIONAL), no payloads.
pub fn ike_header(exchange: u8) -> Vec<u8> {
    let mut header = vec![0x11; 8]; // SPIi
    header.extend_from_slice(&[0; 8]); // SPIr (0 in a first IKE_SA_INIT)
    header.extend_from_slice(&[33, 0x20, exchange, 0x08]); // SA, v2.0, initiator
    header.extend_from_slice(&[0, 0, 0, 0]); // message ID
    header.extend_from_slice(&28u32.to_be_bytes());
    header
}

/// A TCP segment over IPv4 with `flags` (0x02 SYN, 0x12 SYN-ACK, 0x10 ACK).
pub fn tcp_v4_frame_with_flags(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    flags: u8,
) -> Vec<u8> {
    let mut segment = tcp(sport, dport, &[]);
    segment[13] = flags;
    ipv4_frame(src, dst, 6, &segment)
}

/// AP -> controller over IPv6, hop limit 64, with extension headers.
fn ap6_frame(next_header: u8, payload: &[u8], extensions: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let packet = ipv6(AP_6, SERVER_B6, 64, next_header, payload, extensions);
    ethernet(MAC_B, MAC_A, &[], ETHERTYPE_IPV6, &packet)
}

/// Unicast A -> B, TTL 64, untagged.
fn ipv4_frame(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    ethernet(
        MAC_B,
        MAC_A,
        &[],
        ETHERTYPE_IPV4,
        &ipv4(src, dst, 64, protocol, payload),
    )
}

/// An ESP packet (SPI, sequence, some ciphertext).
pub fn esp_v4_frame(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let esp = [
        0, 0, 0x10, 0x01, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0,
    ];
    ipv4_frame(src, dst, 50, &esp)
}

/// An OpenBSD CARP advertisement (36 bytes, authlen 7), protocol 112.
pub fn carp_frame(src: Ipv4Addr) -> Vec<u8> {
    let mut carp = vec![0u8; 36];
    carp[0] = 0x21; // version 2, type 1: the same nibbles as VRRPv2
    carp[1] = 67; // vhid
    carp[2] = 0; // advskew
    carp[3] = 7; // authlen
    carp[5] = 1; // advbase
    let sum = internet_checksum(&carp, None);
    carp[6..8].copy_from_slice(&sum.to_be_bytes());
    ethernet(
        [0x01, 0x00, 0x5e, 0, 0, 0x12],
        MAC_A,
        &[],
        ETHERTYPE_IPV4,
        &ipv4(src, VRRP_V4_GROUP, 255, 112, &carp),
    )
}

pub fn arp_frame() -> Vec<u8> {
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&MAC_A);
    arp.extend_from_slice(&SERVER_A.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&SERVER_B.octets());
    ethernet([0xff; 6], MAC_A, &[], 0x0806, &arp)
}

/// A frame and the counter it must land in.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: &'static str,
    pub frame: Vec<u8>,
    pub expected: Counter,
}

fn case(name: &'static str, frame: Vec<u8>, expected: Counter) -> Case {
    Case {
        name,
        frame,
        expected,
    }
}

/// The VRRP message of `advert` (RFC checksum, with the pseudo-header for v3).
fn encoded(advert: &Advert, src: IpAddr, dst: IpAddr) -> Vec<u8> {
    advert
        .encode(src, dst, ChecksumMode::WithPseudoHeader)
        .expect("test adverts are encodable")
        .to_vec()
}

/// A VRRPv3/IPv4 message with one field broken and the checksum made right
/// again, so only that field is wrong.
fn broken_v3(change: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let advert = v3_advert(100, 1000, vec![IpAddr::V4(Ipv4Addr::new(10, 10, 10, 3))]);
    let mut message = encoded(&advert, IpAddr::V4(SERVER_A), IpAddr::V4(VRRP_V4_GROUP));
    change(&mut message);
    fix_vrrp_checksum(
        &mut message,
        IpAddr::V4(SERVER_A),
        IpAddr::V4(VRRP_V4_GROUP),
        true,
    );
    message
}

/// Every kind of frame the monitor must tell apart.
pub fn catalogue() -> Vec<Case> {
    use Counter::*;
    let vip = IpAddr::V4(Ipv4Addr::new(10, 10, 10, 3));
    let vip6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3));
    let v3 = v3_advert(200, 10, vec![vip]);
    let dot1q = [(ETHERTYPE_VLAN, 10)];
    let qinq = [(ETHERTYPE_QINQ, 100), (ETHERTYPE_VLAN, 10)];
    let hop_by_hop = vec![0u8, 0, 1, 4, 0, 0, 0, 0]; // PadN, 8 bytes
    let fragment_first = vec![0u8, 0, 0, 1, 0, 0, 0, 42]; // offset 0, M=1
    let fragment_later = vec![0u8, 0, 0, 0x10, 0, 0, 0, 42]; // offset 2 (16 bytes)
    let mut bad_checksum = encoded(&v3, IpAddr::V4(SERVER_A), IpAddr::V4(VRRP_V4_GROUP));
    bad_checksum[7] ^= 0x5a;
    let (a6, group6) = (IpAddr::V6(SERVER_A6), IpAddr::V6(VRRP_V6_GROUP));
    let mut v6_no_pseudo = encoded(&v3_advert(100, 1000, vec![vip6]), a6, group6);
    fix_vrrp_checksum(&mut v6_no_pseudo, a6, group6, false);
    let v2_over_v6 = {
        // A VRRPv2 header carried over IPv6 (v2 is IPv4-only).
        let mut m = encoded(&v3_advert(100, 1000, vec![vip6]), a6, group6);
        m[0] = 0x21;
        fix_vrrp_checksum(&mut m, a6, group6, true);
        m
    };
    vec![
        case(
            "vrrp v3 ipv4 (pseudo-header checksum)",
            vrrp_v4_frame(&v3, SERVER_A, 255, ChecksumMode::WithPseudoHeader, &[]),
            VrrpValid,
        ),
        case(
            "vrrp v3 ipv4 (checksum without pseudo-header)",
            vrrp_v4_frame(&v3, SERVER_A, 255, ChecksumMode::WithoutPseudoHeader, &[]),
            VrrpValid,
        ),
        case(
            "vrrp v2 vendor config (auth PASS, 1 s)",
            vrrp_v4_frame(
                &vendor_v2_advert(),
                SERVER_A,
                255,
                ChecksumMode::WithoutPseudoHeader,
                &[],
            ),
            VrrpValid,
        ),
        case(
            "vrrp v3 ipv6",
            vrrp_v6_frame(&v3_advert(150, 100, vec![vip6]), SERVER_A6, 255),
            VrrpValid,
        ),
        case(
            "vrrp v3 in 802.1Q (another VLAN's)",
            vrrp_v4_frame(&v3, SERVER_A, 255, ChecksumMode::WithPseudoHeader, &dot1q),
            VrrpTagged,
        ),
        case(
            "vrrp v3 in 802.1ad+802.1Q (another VLAN's)",
            vrrp_v4_frame(&v3, SERVER_A, 255, ChecksumMode::WithPseudoHeader, &qinq),
            VrrpTagged,
        ),
        case(
            "vrrp v3 ipv4 first fragment carrying a whole advert (MF)",
            vrrp_v4_fragment(&v3, 0x2000),
            VrrpInvalidFragment,
        ),
        case(
            "vrrp v3 ipv4 later fragment carrying a whole advert",
            vrrp_v4_fragment(&v3, 3),
            VrrpInvalidFragment,
        ),
        case(
            "vrrp v3 ipv6 atomic fragment carrying a whole advert",
            ethernet(
                [0x33, 0x33, 0, 0, 0, 0x12],
                MAC_A,
                &[],
                ETHERTYPE_IPV6,
                &ipv6(
                    SERVER_A6,
                    VRRP_V6_GROUP,
                    255,
                    112,
                    &encoded(&v3_advert(150, 100, vec![vip6]), a6, group6),
                    &[(44, vec![0u8, 0, 0, 0, 0, 0, 0, 7])],
                ),
            ),
            VrrpInvalidFragment,
        ),
        case(
            "vrrp v3 priority 0 (resign)",
            vrrp_v4_frame(
                &v3_advert(0, 10, vec![vip]),
                SERVER_A,
                255,
                ChecksumMode::WithPseudoHeader,
                &[],
            ),
            VrrpValid,
        ),
        case(
            "vrrp v3 three addresses",
            vrrp_v4_frame(
                &v3_advert(
                    200,
                    10,
                    vec![
                        vip,
                        IpAddr::V4(Ipv4Addr::new(10, 10, 10, 4)),
                        IpAddr::V4(Ipv4Addr::new(10, 10, 10, 5)),
                    ],
                ),
                SERVER_A,
                255,
                ChecksumMode::WithPseudoHeader,
                &[],
            ),
            VrrpValid,
        ),
        case(
            "vrrp ttl 64",
            vrrp_v4_frame(&v3, SERVER_A, 64, ChecksumMode::WithPseudoHeader, &[]),
            VrrpInvalidTtl,
        ),
        case(
            "vrrp ipv6 hop limit 1",
            vrrp_v6_frame(&v3_advert(150, 100, vec![vip6]), SERVER_A6, 1),
            VrrpInvalidTtl,
        ),
        case(
            "vrrp version 4",
            vrrp_v4_frame_from(&broken_v3(|m| m[0] = 0x41), SERVER_A, 255, &[]),
            VrrpInvalidVersion,
        ),
        case(
            "vrrp version 1",
            vrrp_v4_frame_from(&broken_v3(|m| m[0] = 0x11), SERVER_A, 255, &[]),
            VrrpInvalidVersion,
        ),
        case(
            "vrrp v2 over ipv6",
            vrrp_v6_frame_from(&v2_over_v6, SERVER_A6, 255),
            VrrpInvalidVersion,
        ),
        case(
            "vrrp type 2",
            vrrp_v4_frame_from(&broken_v3(|m| m[0] = 0x32), SERVER_A, 255, &[]),
            VrrpInvalidType,
        ),
        case(
            "vrrp count 3 with one address",
            vrrp_v4_frame_from(&broken_v3(|m| m[3] = 3), SERVER_A, 255, &[]),
            VrrpInvalidLength,
        ),
        case(
            "vrrp count 0 with one address",
            vrrp_v4_frame_from(&broken_v3(|m| m[3] = 0), SERVER_A, 255, &[]),
            VrrpInvalidLength,
        ),
        case(
            "vrrp count 0 and no address (RFC 5798 5.2.5: at least 1)",
            vrrp_v4_frame_from(
                &broken_v3(|m| {
                    m[3] = 0;
                    m.truncate(8);
                }),
                SERVER_A,
                255,
                &[],
            ),
            VrrpInvalidAddressCount,
        ),
        case(
            "vrrp shorter than a header",
            vrrp_v4_frame_from(&[0x31, 67, 100, 0, 0, 100], SERVER_A, 255, &[]),
            VrrpInvalidLength,
        ),
        case(
            "vrrp trailing garbage in the IP payload",
            vrrp_v4_frame_from(
                &broken_v3(|m| m.extend_from_slice(&[0, 0, 0, 0])),
                SERVER_A,
                255,
                &[],
            ),
            VrrpInvalidLength,
        ),
        case(
            "vrrp bad checksum",
            vrrp_v4_frame_from(&bad_checksum, SERVER_A, 255, &[]),
            VrrpInvalidChecksum,
        ),
        case(
            "vrrp v3 ipv6 without pseudo-header",
            vrrp_v6_frame_from(&v6_no_pseudo, SERVER_A6, 255),
            VrrpInvalidChecksum,
        ),
        case("carp advertisement", carp_frame(SERVER_A), Carp),
        case(
            "ike to the controller",
            udp_v4_frame(AP_1, SERVER_B, 500, 500, &[0u8; 60]),
            Ike,
        ),
        case(
            "ike from the controller",
            udp_v4_frame(SERVER_B, AP_2, 500, 33000, &[0u8; 40]),
            Ike,
        ),
        case(
            "nat-t esp-in-udp",
            udp_v4_frame(
                AP_1,
                SERVER_B,
                40000,
                4500,
                &[0, 0, 0x10, 1, 0, 0, 0, 9, 1, 2, 3, 4],
            ),
            NatT,
        ),
        case(
            "nat-t ike (non-esp marker)",
            udp_v4_frame(AP_2, SERVER_B, 4500, 4500, &[0, 0, 0, 0, 1, 2, 3, 4]),
            NatT,
        ),
        case(
            "nat-t in 802.1Q",
            ethernet(
                MAC_B,
                MAC_A,
                &dot1q,
                ETHERTYPE_IPV4,
                &ipv4(AP_1, SERVER_B, 64, 17, &udp(4500, 4500, &[1; 20])),
            ),
            NatT,
        ),
        case("esp", esp_v4_frame(AP_1, SERVER_B), Esp),
        case(
            "mqtt to the broker",
            tcp_v4_frame(AP_1, SERVER_B, 50000, 1883, b"\x10\x0c\x00\x04MQTT"),
            Mqtt,
        ),
        case(
            "mqtt from the broker",
            tcp_v4_frame(SERVER_B, AP_1, 1883, 50000, b"\x20\x02\x00\x00"),
            Mqtt,
        ),
        case(
            "mqtt over tls",
            tcp_v4_frame(
                AP_2,
                SERVER_B,
                50001,
                8883,
                &[0x16, 3, 1, 0, 5, 1, 2, 3, 4, 5],
            ),
            MqttTls,
        ),
        case(
            "ike over ipv6",
            ap6_frame(17, &udp(500, 500, &[0; 28]), &[]),
            Ike,
        ),
        case(
            "nat-t over ipv6 with hop-by-hop options",
            ap6_frame(17, &udp(4500, 4500, &[0; 28]), &[(0, hop_by_hop.clone())]),
            NatT,
        ),
        case(
            "mqtt over ipv6, first fragment",
            ap6_frame(6, &tcp(50000, 1883, &[0; 8]), &[(44, fragment_first)]),
            Mqtt,
        ),
        case(
            "ipv6 later fragment (no ports)",
            ap6_frame(17, &[0; 24], &[(44, fragment_later)]),
            Other,
        ),
        case(
            "ipv6 five extension headers",
            ap6_frame(
                17,
                &udp(500, 500, &[0; 8]),
                &[
                    (0, hop_by_hop.clone()),
                    (60, hop_by_hop.clone()),
                    (60, hop_by_hop.clone()),
                    (60, hop_by_hop.clone()),
                    (60, hop_by_hop),
                ],
            ),
            Other,
        ),
        case(
            "ipv4 with options, ike",
            ethernet(
                MAC_B,
                MAC_A,
                &[],
                ETHERTYPE_IPV4,
                &ipv4_with(
                    AP_1,
                    SERVER_B,
                    64,
                    17,
                    &udp(500, 500, &[0; 16]),
                    0,
                    &[1, 1, 1, 0],
                ),
            ),
            Ike,
        ),
        case(
            "ipv4 later fragment of udp 500",
            ethernet(
                MAC_B,
                MAC_A,
                &[],
                ETHERTYPE_IPV4,
                &ipv4_with(AP_1, SERVER_B, 64, 17, &[0; 16], 0x2000 | 185, &[]),
            ),
            Other,
        ),
        case(
            "dns (other udp)",
            udp_v4_frame(AP_1, SERVER_B, 53000, 53, &[0; 30]),
            Other,
        ),
        case(
            "ssh (other tcp)",
            tcp_v4_frame(AP_1, SERVER_B, 50000, 22, &[0; 30]),
            Other,
        ),
        case("arp", arp_frame(), Other),
        case(
            "three vlan tags",
            ethernet(
                MAC_B,
                MAC_A,
                &[
                    (ETHERTYPE_QINQ, 1),
                    (ETHERTYPE_VLAN, 2),
                    (ETHERTYPE_VLAN, 3),
                ],
                ETHERTYPE_IPV4,
                &ipv4(AP_1, SERVER_B, 64, 17, &udp(500, 500, &[0; 8])),
            ),
            Other,
        ),
    ]
}
