//! Judging one Ethernet frame: a VRRP advert (valid, or the reason it is not),
//! CARP, AP traffic (IKE, NAT-T, ESP, MQTT, MQTT/TLS), or other.
//!
//! Written once for two worlds. In the XDP program every read goes through
//! [`Frame::load`], which the kernel side implements as a bounds check against
//! `data_end`; every loop has a constant bound. In userspace `[u8]` implements
//! [`Frame`], so tests and the AF_PACKET comparison counter use this very code.
//!
//! The receive checks follow RFC 5798 §7.1 (VRRPv3) and RFC 3768 §7.1 (VRRPv2):
//! TTL/hop limit 255, version, type, length against the address count, and the
//! checksum, plus what keeps an advert to its own segment: one in a VLAN tag
//! or an IP fragment is never valid (counted by its own reason). VRID,
//! authentication, interval and destination matching are the daemon's job,
//! not the monitor's: the monitor reports what is on the wire.

use crate::abi::{Counter, IpBytes, FAMILY_IPV4, FAMILY_IPV6};

pub const ETH_HEADER_LEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
/// 802.1ad outer tag plus 802.1Q inner tag; a third tag is "other".
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked before giving up on finding the transport.
pub const MAX_IPV6_EXTENSION_HEADERS: usize = 4;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_ESP: u8 = 50;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_DSTOPTS: u8 = 60;
pub const IPPROTO_VRRP: u8 = 112;

pub const PORT_IKE: u16 = 500;
pub const PORT_NAT_T: u16 = 4500;
pub const PORT_MQTT: u16 = 1883;
pub const PORT_MQTT_TLS: u16 = 8883;

/// RFC 5798 §5.1.1.3 / RFC 3768 §5.2.3: adverts are sent with TTL 255, so a
/// lower value means the packet crossed a router.
pub const VRRP_TTL: u8 = 255;
pub const VRRP_HEADER_LEN: usize = 8;
/// VRRPv2 carries 8 bytes of authentication data after the addresses.
pub const VRRP_V2_AUTH_LEN: usize = 8;
pub const VRRP_TYPE_ADVERTISEMENT: u8 = 1;
/// Longest VRRP message the classifier checksums: enough for 255 IPv4
/// addresses in either version (v2: 1036 bytes) or 64 IPv6 addresses. Longer
/// messages are counted as a length error.
pub const VRRP_MAX_LEN: usize = 1040;
/// CARP (OpenBSD) shares IP protocol 112 and version 2; its advertisement is
/// 36 bytes with an authlen of 7 (32-bit words) where VRRPv2 has the address
/// count. A VRRPv2 message with 7 addresses would be 44 bytes long.
pub const CARP_LEN: usize = 36;
pub const CARP_AUTHLEN: u8 = 7;

/// A frame the classifier can read from.
pub trait Frame {
    /// Length of the whole frame in bytes.
    fn frame_len(&self) -> usize;
    /// `N` bytes starting at `offset`, or `None` if the frame is shorter.
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;

    /// One's-complement sum of the big-endian 16-bit words of the `length`
    /// bytes at `offset` (`length` a multiple of 4, at most
    /// [`VRRP_MAX_LEN`]); any value congruent modulo 0xffff will do, the
    /// caller folds it. `None` if the frame ends first. The XDP program
    /// overrides it with the kernel's checksum helper: a word-by-word loop
    /// is up to 520 iterations the verifier walks once for every way into
    /// it (VLAN tags, IPv6 extension headers), which took most of its
    /// million-instruction budget.
    #[inline(always)]
    fn sum_words(&self, offset: usize, length: usize) -> Option<u32> {
        let mut sum: u32 = 0;
        let mut i = 0;
        while i < VRRP_MAX_LEN {
            if i >= length {
                break;
            }
            sum += u32::from(be16(self.load::<2>(offset + i)?));
            i += 2;
        }
        Some(sum)
    }
}

impl Frame for [u8] {
    #[inline]
    fn frame_len(&self) -> usize {
        self.len()
    }

    #[inline]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        self.get(offset..end)?.try_into().ok()
    }
}

/// Why a packet with IP protocol 112 is not a valid VRRP advert.
///
/// Shared by the XDP program (which counts each reason), the daemon, the unit
/// tests and the fuzz target.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// TTL (IPv4) or hop limit (IPv6) is not 255.
    Ttl = 1,
    /// Version is not 2 or 3, or VRRPv2 over IPv6.
    Version = 2,
    /// Type is not 1 (advertisement).
    Type = 3,
    /// Shorter than a header, address count inconsistent with the length, or
    /// the frame ends before the IP header says it does.
    Length = 4,
    /// Checksum wrong (for VRRPv3 over IPv4, with and without the
    /// pseudo-header are both accepted).
    Checksum = 5,
    /// Address count 0: RFC 5798 §5.2.5 sets the minimum at 1, and no
    /// VRRPv2 router advertises a virtual router without an address.
    AddressCount = 6,
    /// Carried in an IP fragment (IPv4 MF flag or offset, any IPv6 fragment
    /// header): an advert is a few dozen bytes on one link, no sender
    /// fragments it, and a fragment cannot be checked whole.
    Fragment = 7,
}

impl DecodeError {
    pub const ALL: [DecodeError; 7] = [
        DecodeError::Ttl,
        DecodeError::Version,
        DecodeError::Type,
        DecodeError::Length,
        DecodeError::Checksum,
        DecodeError::AddressCount,
        DecodeError::Fragment,
    ];

    #[inline(always)]
    pub const fn counter(self) -> Counter {
        match self {
            DecodeError::Ttl => Counter::VrrpInvalidTtl,
            DecodeError::Version => Counter::VrrpInvalidVersion,
            DecodeError::Type => Counter::VrrpInvalidType,
            DecodeError::Length => Counter::VrrpInvalidLength,
            DecodeError::Checksum => Counter::VrrpInvalidChecksum,
            DecodeError::AddressCount => Counter::VrrpInvalidAddressCount,
            DecodeError::Fragment => Counter::VrrpInvalidFragment,
        }
    }

    /// The name used in the JSON contract and in logs.
    pub const fn name(self) -> &'static str {
        match self {
            DecodeError::Ttl => "ttl",
            DecodeError::Version => "version",
            DecodeError::Type => "type",
            DecodeError::Length => "length",
            DecodeError::Checksum => "checksum",
            DecodeError::AddressCount => "address_count",
            DecodeError::Fragment => "fragment",
        }
    }
}

/// The facts of a valid advert that the monitor records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdvertSummary {
    pub source: IpBytes,
    pub version: u8,
    pub vrid: u8,
    pub priority: u8,
    pub address_count: u8,
    /// VRRPv2 auth type; 0 for v3.
    pub auth_type: u8,
    /// Advertised interval in milliseconds.
    pub interval_ms: u32,
    /// Where the VRRPv2 authentication data (8 bytes) starts in the frame;
    /// 0 for v3. An offset rather than the bytes keeps the verdict small,
    /// which keeps the verifier's view of it simple.
    pub auth_offset: u16,
}

/// AP traffic classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApClass {
    Ike,
    /// UDP 4500: ESP-in-UDP and IKE-in-UDP together.
    NatT,
    Esp,
    Mqtt,
    MqttTls,
}

impl ApClass {
    #[inline(always)]
    pub const fn counter(self) -> Counter {
        match self {
            ApClass::Ike => Counter::Ike,
            ApClass::NatT => Counter::NatT,
            ApClass::Esp => Counter::Esp,
            ApClass::Mqtt => Counter::Mqtt,
            ApClass::MqttTls => Counter::MqttTls,
        }
    }
}

/// What a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A valid advert on the untagged segment the program is attached to.
    Vrrp(AdvertSummary),
    VrrpInvalid(DecodeError),
    /// A valid advert inside an 802.1Q or 802.1ad tag: another VLAN's
    /// router pair (an instance on a VLAN sub-interface sees its own VLAN's
    /// frames untagged). Counted, never handed to the daemon: the same VRID
    /// on another VLAN must not demote our master.
    VrrpTagged,
    Carp,
    /// `ap` is the address on the AP's side: the end whose port is not the
    /// service port (for ESP, which has no ports, the source); `ap_port` is
    /// its port (0 for ESP): the NAT-T mapping an IKE initiation must reach,
    /// the MQTT connection's 4-tuple. `session`: the AP is (re)opening a
    /// session — an IKE_AUTH message from it, or a TCP SYN to
    /// the broker — which is what "the AP is back" means after a takeover
    /// (any other packet may be a stale SA's or connection's).
    Ap {
        class: ApClass,
        ap: IpBytes,
        ap_port: u16,
        session: bool,
    },
    Other,
}

/// What an AP's TCP segment to the broker says of its connection. Written
/// through [`classify_with_tcp`]'s out-parameter rather than carried in
/// [`Verdict`]: a verdict variant with more fields made LLVM merge paths
/// through registers the verifier sees as uninitialised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFacts {
    pub sequence: u32,
    pub acknowledgement: u32,
    /// Bytes of data after the header (0 when the header claims more than
    /// the IP length holds).
    pub data_len: u16,
    /// The flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10); 0: not a
    /// segment to the broker.
    pub flags: u8,
}

impl TcpFacts {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

impl Verdict {
    #[inline(always)]
    pub const fn counter(&self) -> Counter {
        match self {
            Verdict::Vrrp(_) => Counter::VrrpValid,
            Verdict::VrrpInvalid(e) => e.counter(),
            Verdict::VrrpTagged => Counter::VrrpTagged,
            Verdict::Carp => Counter::Carp,
            Verdict::Ap { class, .. } => class.counter(),
            Verdict::Other => Counter::Other,
        }
    }
}

/// The IP-layer facts the VRRP checks need.
#[derive(Clone, Copy, Debug)]
pub struct IpContext {
    pub source: IpBytes,
    pub destination: IpBytes,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
}

/// Where an untagged frame's IP destination address starts, by the
/// advert's family ([`FAMILY_IPV4`] or not). Only untagged adverts reach
/// the daemon ([`Verdict::VrrpTagged`]), so the XDP program reads the
/// destination at a fixed offset; carrying the offset in the verdict made
/// the verifier reject the program (an uninitialised register on a merged
/// path).
#[inline(always)]
pub const fn untagged_destination_offset(family: u8) -> usize {
    if family == FAMILY_IPV4 {
        ETH_HEADER_LEN + 16
    } else {
        ETH_HEADER_LEN + 24
    }
}

/// How the IP packet sits in the frame: the facts around it that decide
/// whether a VRRP message in it may be obeyed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Carriage {
    /// The frame had at least one VLAN tag.
    pub tagged: bool,
    /// Any fragment: IPv4 MF or a non-zero offset, or an IPv6 fragment
    /// header.
    pub fragment: bool,
    /// A fragment other than the first: no transport header in it.
    pub later_fragment: bool,
}

/// Classify one Ethernet frame. Never panics; anything it cannot parse is
/// [`Verdict::Other`].
#[inline(always)]
pub fn classify<F: Frame + ?Sized>(frame: &F) -> Verdict {
    let mut tcp = TcpFacts::default();
    classify_with_tcp(frame, &mut tcp)
}

/// [`classify`], and for a TCP segment from an AP to the broker its
/// [`TcpFacts`] in `tcp` (left alone for anything else).
#[inline(always)]
pub fn classify_with_tcp<F: Frame + ?Sized>(frame: &F, tcp: &mut TcpFacts) -> Verdict {
    match classify_ethernet(frame, tcp) {
        Some(verdict) => verdict,
        None => Verdict::Other,
    }
}

#[inline(always)]
fn be16(bytes: [u8; 2]) -> u16 {
    u16::from_be_bytes(bytes)
}

#[inline(always)]
fn classify_ethernet<F: Frame + ?Sized>(frame: &F, tcp: &mut TcpFacts) -> Option<Verdict> {
    let eth = frame.load::<ETH_HEADER_LEN>(0)?;
    let mut ethertype = be16([eth[12], eth[13]]);
    let mut offset = ETH_HEADER_LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        let tag = frame.load::<4>(offset)?;
        ethertype = be16([tag[2], tag[3]]);
        offset += 4;
    }
    let tagged = offset != ETH_HEADER_LEN;
    match ethertype {
        ETHERTYPE_IPV4 => classify_ipv4(frame, offset, tagged, tcp),
        ETHERTYPE_IPV6 => classify_ipv6(frame, offset, tagged, tcp),
        _ => Some(Verdict::Other),
    }
}

#[inline(always)]
fn classify_ipv4<F: Frame + ?Sized>(
    frame: &F,
    offset: usize,
    tagged: bool,
    tcp: &mut TcpFacts,
) -> Option<Verdict> {
    let h = frame.load::<20>(offset)?;
    if h[0] >> 4 != 4 {
        return Some(Verdict::Other);
    }
    let header_len = usize::from(h[0] & 0x0f) * 4;
    let total_len = usize::from(be16([h[2], h[3]]));
    if header_len < 20 || total_len < header_len {
        return Some(Verdict::Other);
    }
    // Flags and offset: MF is 0x2000, the offset the low 13 bits.
    let fragment_field = be16([h[6], h[7]]);
    let carriage = Carriage {
        tagged,
        fragment: fragment_field & 0x3fff != 0,
        later_fragment: fragment_field & 0x1fff != 0,
    };
    let ip = IpContext {
        source: IpBytes::v4([h[12], h[13], h[14], h[15]]),
        destination: IpBytes::v4([h[16], h[17], h[18], h[19]]),
        ttl: h[8],
    };
    Some(classify_transport(
        frame,
        h[9],
        offset + header_len,
        total_len - header_len,
        carriage,
        &ip,
        tcp,
    ))
}

#[inline(always)]
fn classify_ipv6<F: Frame + ?Sized>(
    frame: &F,
    offset: usize,
    tagged: bool,
    tcp: &mut TcpFacts,
) -> Option<Verdict> {
    let h = frame.load::<8>(offset)?;
    if h[0] >> 4 != 6 {
        return Some(Verdict::Other);
    }
    let ip = IpContext {
        source: IpBytes::v6(frame.load::<16>(offset + 8)?),
        destination: IpBytes::v6(frame.load::<16>(offset + 24)?),
        ttl: h[7],
    };
    let mut next_header = h[6];
    let mut remaining = usize::from(be16([h[4], h[5]]));
    let mut transport = offset + 40;
    let mut carriage = Carriage {
        tagged,
        ..Carriage::default()
    };
    // Bounded walk: a chain longer than this is "other", never a verifier
    // surprise.
    for _ in 0..MAX_IPV6_EXTENSION_HEADERS {
        let header_len = match next_header {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let e = frame.load::<2>(transport)?;
                next_header = e[0];
                (usize::from(e[1]) + 1) * 8
            }
            IPPROTO_AH => {
                let e = frame.load::<2>(transport)?;
                next_header = e[0];
                (usize::from(e[1]) + 2) * 4
            }
            IPPROTO_FRAGMENT => {
                let e = frame.load::<4>(transport)?;
                next_header = e[0];
                carriage.fragment = true;
                if be16([e[2], e[3]]) & 0xfff8 != 0 {
                    carriage.later_fragment = true;
                }
                8
            }
            _ => break,
        };
        if header_len > remaining {
            return Some(Verdict::Other);
        }
        remaining -= header_len;
        transport += header_len;
    }
    if matches!(
        next_header,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT
    ) {
        return Some(Verdict::Other);
    }
    Some(classify_transport(
        frame,
        next_header,
        transport,
        remaining,
        carriage,
        &ip,
        tcp,
    ))
}

#[inline(always)]
fn classify_transport<F: Frame + ?Sized>(
    frame: &F,
    protocol: u8,
    offset: usize,
    length: usize,
    carriage: Carriage,
    ip: &IpContext,
    tcp: &mut TcpFacts,
) -> Verdict {
    match protocol {
        // Checked before the message: a fragment cannot be checked whole.
        IPPROTO_VRRP if carriage.fragment => Verdict::VrrpInvalid(DecodeError::Fragment),
        IPPROTO_VRRP => match check_vrrp(frame, offset, length, ip) {
            Ok(_) if carriage.tagged => Verdict::VrrpTagged,
            Ok(advert) => Verdict::Vrrp(advert),
            Err(VrrpRejection::Carp) => Verdict::Carp,
            Err(VrrpRejection::Invalid(e)) => Verdict::VrrpInvalid(e),
        },
        IPPROTO_ESP => Verdict::Ap {
            class: ApClass::Esp,
            ap: ip.source,
            ap_port: 0,
            session: false,
        },
        IPPROTO_UDP | IPPROTO_TCP if !carriage.later_fragment => {
            let Some(ports) = frame.load::<4>(offset) else {
                return Verdict::Other;
            };
            let source_port = be16([ports[0], ports[1]]);
            let destination_port = be16([ports[2], ports[3]]);
            let (first, second) = if protocol == IPPROTO_UDP {
                ((PORT_NAT_T, ApClass::NatT), (PORT_IKE, ApClass::Ike))
            } else {
                (
                    (PORT_MQTT, ApClass::Mqtt),
                    (PORT_MQTT_TLS, ApClass::MqttTls),
                )
            };
            for (port, class) in [first, second] {
                if destination_port == port {
                    if protocol == IPPROTO_TCP {
                        *tcp = tcp_facts(frame, offset, length);
                    }
                    return Verdict::Ap {
                        class,
                        ap: ip.source,
                        ap_port: source_port,
                        session: opens_session(frame, class, offset),
                    };
                }
                if source_port == port {
                    return Verdict::Ap {
                        class,
                        ap: ip.destination,
                        ap_port: destination_port,
                        session: false,
                    };
                }
            }
            Verdict::Other
        }
        _ => Verdict::Other,
    }
}

/// The sequence numbers, data length and flags of a TCP segment whose
/// header starts at `offset` and which is `length` bytes with its header.
#[inline(always)]
fn tcp_facts<F: Frame + ?Sized>(frame: &F, offset: usize, length: usize) -> TcpFacts {
    let Some(h) = frame.load::<14>(offset) else {
        return TcpFacts::default();
    };
    let header_len = usize::from(h[12] >> 4) * 4;
    TcpFacts {
        sequence: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        acknowledgement: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        data_len: length.saturating_sub(header_len).min(usize::from(u16::MAX)) as u16,
        flags: h[13],
    }
}

/// The IKEv2 exchange that authenticates a new IKE SA (RFC 7296 §1.2, §3.1).
const IKE_AUTH: u8 = 35;
/// The exchange type's offset in the IKE header (after both SPIs, the next
/// payload and the version).
const IKE_EXCHANGE_TYPE: usize = 18;
const UDP_HEADER: usize = 8;
/// NAT-T carries IKE behind four zero bytes (RFC 3948 §2.2, the non-ESP
/// marker); anything else on 4500 is ESP.
const NON_ESP_MARKER: usize = 4;
const TCP_FLAGS: usize = 13;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// Whether a packet from the AP to a service port opens a session: an
/// IKE_AUTH message (either role: answering our initiation counts), or a
/// SYN to the broker. Not IKE_SA_INIT: an AP behind a NAT that initiates
/// sends it from its port 500, which the NAT maps to another public port
/// than its IKE_AUTH from 4500 — counting both would make one AP two.
#[inline(always)]
fn opens_session<F: Frame + ?Sized>(frame: &F, class: ApClass, offset: usize) -> bool {
    let ike_at = match class {
        ApClass::Ike => offset + UDP_HEADER,
        ApClass::NatT => match frame.load::<4>(offset + UDP_HEADER) {
            Some([0, 0, 0, 0]) => offset + UDP_HEADER + NON_ESP_MARKER,
            _ => return false,
        },
        ApClass::Mqtt | ApClass::MqttTls => {
            return frame
                .load::<1>(offset + TCP_FLAGS)
                .is_some_and(|[flags]| flags & (TCP_SYN | TCP_ACK) == TCP_SYN)
        }
        ApClass::Esp => return false,
    };
    matches!(
        frame.load::<1>(ike_at + IKE_EXCHANGE_TYPE),
        Some([IKE_AUTH])
    )
}

/// Why [`check_vrrp`] did not accept a protocol-112 message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VrrpRejection {
    /// It is CARP: not VRRP at all.
    Carp,
    Invalid(DecodeError),
}

impl From<DecodeError> for VrrpRejection {
    #[inline(always)]
    fn from(e: DecodeError) -> Self {
        VrrpRejection::Invalid(e)
    }
}

/// The receive checks of RFC 5798 §7.1 / RFC 3768 §7.1 that do not need the
/// instance's configuration. `offset` is where the VRRP message starts in
/// `frame`, `length` its length according to the IP header.
#[inline(always)]
pub fn check_vrrp<F: Frame + ?Sized>(
    frame: &F,
    offset: usize,
    length: usize,
    ip: &IpContext,
) -> Result<AdvertSummary, VrrpRejection> {
    if length < VRRP_HEADER_LEN {
        return Err(DecodeError::Length.into());
    }
    let Some(h) = frame.load::<VRRP_HEADER_LEN>(offset) else {
        return Err(DecodeError::Length.into());
    };
    let version = h[0] >> 4;
    let kind = h[0] & 0x0f;
    let family = ip.source.family;
    if family == FAMILY_IPV4 && version == 2 && length == CARP_LEN && h[3] == CARP_AUTHLEN {
        return Err(VrrpRejection::Carp);
    }
    // RFC 5798 §7.1 / RFC 3768 §7.1: "MUST verify that the IP TTL is 255".
    if ip.ttl != VRRP_TTL {
        return Err(DecodeError::Ttl.into());
    }
    // Version 2 exists only for IPv4 (RFC 3768); RFC 5798 §5.2.1 is version 3.
    let expected_len = match (version, family) {
        (2, FAMILY_IPV4) => VRRP_HEADER_LEN + 4 * usize::from(h[3]) + VRRP_V2_AUTH_LEN,
        (3, FAMILY_IPV4) => VRRP_HEADER_LEN + 4 * usize::from(h[3]),
        (3, FAMILY_IPV6) => VRRP_HEADER_LEN + 16 * usize::from(h[3]),
        _ => return Err(DecodeError::Version.into()),
    };
    if kind != VRRP_TYPE_ADVERTISEMENT {
        return Err(DecodeError::Type.into());
    }
    if length != expected_len || length > VRRP_MAX_LEN {
        return Err(DecodeError::Length.into());
    }
    // RFC 5798 §5.2.5: "Count IPvX Addr ... Its minimum value is 1". After
    // the length check, so a count of 0 on a message that carries addresses
    // stays a length error.
    if h[3] == 0 {
        return Err(DecodeError::AddressCount.into());
    }
    let Some(sum) = frame.sum_words(offset, length) else {
        // The frame ends before the IP header says the message does.
        return Err(DecodeError::Length.into());
    };
    let plain_ok = fold(sum) == 0xffff;
    let checksum_ok = match (version, family) {
        // RFC 3768 §5.3.8: the VRRP message only.
        (2, _) => plain_ok,
        // RFC 5798 §5.2.8 includes the pseudo-header; some implementations
        // leave it out over IPv4 (keepalived's vrrp_strict off, other vendors):
        // accept both there.
        (_, FAMILY_IPV4) => plain_ok || fold(sum + pseudo_header_sum(ip, length)) == 0xffff,
        // Over IPv6 the pseudo-header is mandatory (RFC 8200 §8.1).
        _ => fold(sum + pseudo_header_sum(ip, length)) == 0xffff,
    };
    if !checksum_ok {
        return Err(DecodeError::Checksum.into());
    }
    let (interval_ms, auth_type, auth_offset) = if version == 2 {
        // RFC 3768 §5.3.7: Adver Int in seconds; the last 8 bytes are the
        // authentication data (checksummed above, so they are in the frame).
        (
            u32::from(h[5]) * 1000,
            h[4],
            (offset + length - VRRP_V2_AUTH_LEN) as u16,
        )
    } else {
        // RFC 5798 §5.2.7: 12-bit Max Adver Int in centiseconds.
        (u32::from(be16([h[4], h[5]]) & 0x0fff) * 10, 0, 0)
    };
    Ok(AdvertSummary {
        source: ip.source,
        version,
        vrid: h[1],
        priority: h[2],
        address_count: h[3],
        auth_type,
        interval_ms,
        auth_offset,
    })
}

#[inline(always)]
fn sum_address(address: &IpBytes) -> u32 {
    let a = &address.addr;
    let words = if address.family == FAMILY_IPV4 { 2 } else { 8 };
    let mut sum = 0u32;
    let mut i = 0;
    while i < 8 {
        if i >= words {
            break;
        }
        sum += u32::from(be16([a[2 * i], a[2 * i + 1]]));
        i += 1;
    }
    sum
}

/// Sum of the IPv4 or IPv6 pseudo-header for a VRRP message of `length` bytes.
#[inline(always)]
fn pseudo_header_sum(ip: &IpContext, length: usize) -> u32 {
    sum_address(&ip.source)
        + sum_address(&ip.destination)
        + u32::from(IPPROTO_VRRP)
        + (length as u32 & 0xffff)
        + (length as u32 >> 16)
}

/// Fold a 32-bit sum to 16 bits; two rounds always suffice.
#[inline(always)]
fn fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The Internet checksum of `data` followed by the pseudo-header implied by
/// `ip` (if given). Used by encoders; the classifier itself never allocates.
pub fn internet_checksum(data: &[u8], pseudo: Option<&IpContext>) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(be16([pair[0], pair[1]]));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    if let Some(ip) = pseudo {
        sum = (sum & 0xffff) + (sum >> 16) + pseudo_header_sum(ip, data.len());
    }
    !fold(sum)
}
