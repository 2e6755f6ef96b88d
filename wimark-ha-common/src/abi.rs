//! Map names, keys, values and events shared with the XDP program.
//!
//! Every type is `#[repr(C)]`, `Copy`, and laid out with explicit padding so
//! that no byte is left uninitialised in a map key (a hash key with garbage
//! padding would never match).

/// Map names as they appear in the kernel object.
pub const MAP_COUNTERS: &str = "COUNTERS";
pub const MAP_PEERS: &str = "VRRP_PEERS";
pub const MAP_APS: &str = "AP_TABLE";
pub const MAP_MQTT: &str = "MQTT_CONNECTIONS";
pub const MAP_IKE_SESSIONS: &str = "IKE_SESSIONS";
pub const MAP_EVENTS: &str = "PEER_EVENTS";
pub const MAP_AP_CLOCK: &str = "AP_CLOCK";
pub const MAP_ADVERTS: &str = "ADVERTS";
pub const MAP_WATCHED_VRIDS: &str = "WATCHED_VRIDS";
pub const MAP_ALLOWED_PEERS: &str = "ALLOWED_PEERS";
/// Index 0 non-zero while something drains `PEER_EVENTS` (`wimark-ha
/// stats`): without a reader no peer event is queued.
pub const MAP_PEER_EVENTS_READER: &str = "PEER_EVENTS_READER";
/// `WATCHED_VRIDS` values: not watched, every source's adverts go to the
/// daemon, or only those of the sources in `ALLOWED_PEERS` (the others are
/// counted as rogue and go nowhere).
pub const WATCH_NONE: u32 = 0;
pub const WATCH_ANY_SOURCE: u32 = 1;
pub const WATCH_ALLOWED_ONLY: u32 = 2;
/// Entries of `ALLOWED_PEERS` ((source, VRID) pairs).
pub const ALLOWED_PEERS_MAX: u32 = 64;
/// Ring buffer size for per-advert events, in bytes (a power of two): at
/// 72 bytes plus an 8-byte header, 3 276 adverts — seconds of slack at the
/// fastest heartbeat.
pub const ADVERT_RING_BYTES: u32 = 256 * 1024;
/// How often userspace refreshes `AP_CLOCK` (see there).
pub const AP_CLOCK_TICK_MS: u64 = 100;
/// The XDP program's function name in the object.
pub const PROGRAM_NAME: &str = "wimark_ha_monitor";
/// A pass-only program in the same object, for benchmarks' baseline.
pub const BASELINE_PROGRAM_NAME: &str = "wimark_ha_baseline";

/// Capacity of the VRRP peer table (LRU: a flood of forged sources evicts the
/// oldest entries instead of failing inserts).
pub const PEER_TABLE_SIZE: u32 = 256;
/// The AP table is a per-CPU array of 8-way sets ([`ApSet`]): an address
/// hashes to one set ([`ap_set`]) and takes the way holding it, else an
/// empty way or one not seen for [`AP_IDLE_NS`], else (the set is full of
/// active APs: an eviction) the way the set's hand points at. A hash map
/// lookup cost ~65 ns per packet here, the array ~5 ns, and AP traffic is
/// the bulk of what the monitor sees.
///
/// Sized at load time (`[ap_recovery] max_aps`, [`ap_table_sets`]): the
/// object's default is [`AP_TABLE_DEFAULT_SETS`] sets, and the program reads
/// the set count's bits from a global the loader may override.
pub const AP_SET_WAYS: usize = 8;
/// [`ap_table_sets`] of [`AP_TABLE_DEFAULT_APS`].
pub const AP_TABLE_DEFAULT_SETS: u32 = 2048;
/// How many APs the table is sized for unless configured.
pub const AP_TABLE_DEFAULT_APS: u32 = 2048;
/// The most APs the table may be sized for (16 384 sets: 6 MiB per CPU).
pub const AP_TABLE_MAX_APS: u32 = 20_000;
/// A way whose AP sent nothing for this long is free for another AP (no
/// eviction): the activity window the AP sync uses.
pub const AP_IDLE_NS: u64 = 60_000_000_000;
/// Name of the global holding log2 of the set count.
pub const GLOBAL_AP_SET_BITS: &str = "AP_SET_BITS";

/// The sets for a table that must hold `aps` APs without evicting one: at
/// most 1.25 APs per set on average (a power of two), so that with 8 ways a
/// set overflows with odds of ~5e-6 — ~0.05 sets of 8 192 for 10 000 APs of
/// random addresses (Poisson, λ = 1.22: P(X ≥ 9)).
pub const fn ap_table_sets(aps: u32) -> u32 {
    let aps = if aps < 16 { 16 } else { aps };
    let aps = if aps > AP_TABLE_MAX_APS { AP_TABLE_MAX_APS } else { aps };
    // ceil(aps / 1.25), rounded up to a power of two.
    ((aps * 4 + 4) / 5).next_power_of_two()
}

/// Capacity of the MQTT connection table (LRU: the least recently used
/// connection makes room). Four per AP slot: an AP typically holds one to
/// three (subscriber, publisher). Only MQTT segments to the broker touch it,
/// so the hash lookup stays off the bulk of AP traffic (ESP).
pub const MQTT_TABLE_SIZE: u32 = 4 * AP_TABLE_DEFAULT_APS;
/// Capacity of the IKE session table (LRU): one entry per AP address and
/// IKE port — two APs behind one NAT address are two entries. Only a
/// packet that opens an IKE session (IKE_SA_INIT / IKE_AUTH) touches it.
pub const IKE_SESSION_TABLE_SIZE: u32 = 2 * AP_TABLE_DEFAULT_APS;
/// Ring buffer size for peer change events, in bytes (a power of two).
pub const EVENT_RING_BYTES: u32 = 64 * 1024;

pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

/// Index of each traffic counter in the per-CPU `COUNTERS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    VrrpValid = 0,
    VrrpInvalidTtl = 1,
    VrrpInvalidVersion = 2,
    VrrpInvalidType = 3,
    VrrpInvalidLength = 4,
    VrrpInvalidChecksum = 5,
    /// IP protocol 112 that is CARP, not VRRP.
    Carp = 6,
    Ike = 7,
    NatT = 8,
    Esp = 9,
    Mqtt = 10,
    MqttTls = 11,
    Other = 12,
    /// Adverts the `ADVERTS` ring could not queue (the daemon too slow: an
    /// advert its state machine never saw). `packets` counts lost events;
    /// `bytes` stays 0.
    AdvertEventsLost = 13,
    /// AP table entries replaced by another AP hashing to a full set.
    /// `packets` counts evictions; `bytes` stays 0.
    ApEvicted = 14,
    /// Valid adverts for an allow-listed VRID from a source not on its
    /// list: also counted in `VrrpValid`, never passed to the daemon.
    VrrpRogue = 15,
    /// Valid adverts inside a VLAN tag: another VLAN's (never obeyed).
    VrrpTagged = 16,
    VrrpInvalidAddressCount = 17,
    VrrpInvalidFragment = 18,
    /// Peer changes the `PEER_EVENTS` ring could not queue while a reader
    /// was attached (`packets`; `bytes` stays 0).
    PeerEventsLost = 19,
}

impl Counter {
    /// Number of slots in the `COUNTERS` array.
    pub const COUNT: u32 = 20;
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::VrrpValid,
        Counter::VrrpInvalidTtl,
        Counter::VrrpInvalidVersion,
        Counter::VrrpInvalidType,
        Counter::VrrpInvalidLength,
        Counter::VrrpInvalidChecksum,
        Counter::Carp,
        Counter::Ike,
        Counter::NatT,
        Counter::Esp,
        Counter::Mqtt,
        Counter::MqttTls,
        Counter::Other,
        Counter::AdvertEventsLost,
        Counter::ApEvicted,
        Counter::VrrpRogue,
        Counter::VrrpTagged,
        Counter::VrrpInvalidAddressCount,
        Counter::VrrpInvalidFragment,
        Counter::PeerEventsLost,
    ];

    /// Diagnostics rather than traffic classes: not packets on the wire
    /// (or, for rogue adverts, packets already counted as valid VRRP).
    pub const fn is_traffic(self) -> bool {
        !matches!(
            self,
            Counter::AdvertEventsLost
                | Counter::PeerEventsLost
                | Counter::ApEvicted
                | Counter::VrrpRogue
        )
    }
}

/// Packets and bytes (whole L2 frame) of one traffic class, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficCounter {
    pub packets: u64,
    pub bytes: u64,
}

/// An IPv4 address is stored in the first 4 bytes, the rest zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpBytes {
    pub addr: [u8; 16],
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    pub _pad: [u8; 3],
}

impl From<core::net::IpAddr> for IpBytes {
    fn from(address: core::net::IpAddr) -> Self {
        match address {
            core::net::IpAddr::V4(a) => Self::v4(a.octets()),
            core::net::IpAddr::V6(a) => Self::v6(a.octets()),
        }
    }
}

impl From<IpBytes> for core::net::IpAddr {
    /// Anything but [`FAMILY_IPV4`] reads as IPv6 (the kernel side writes
    /// only the two).
    fn from(bytes: IpBytes) -> Self {
        if bytes.family == FAMILY_IPV4 {
            let a = bytes.addr;
            core::net::IpAddr::V4(core::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]))
        } else {
            core::net::IpAddr::V6(core::net::Ipv6Addr::from(bytes.addr))
        }
    }
}

impl IpBytes {
    #[inline(always)]
    pub const fn v4(a: [u8; 4]) -> Self {
        Self {
            addr: [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            family: FAMILY_IPV4,
            _pad: [0; 3],
        }
    }
    #[inline(always)]
    pub const fn v6(addr: [u8; 16]) -> Self {
        Self {
            addr,
            family: FAMILY_IPV6,
            _pad: [0; 3],
        }
    }
}

/// Key of the VRRP peer table: one entry per (VRID, source address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerKey {
    pub source: IpBytes,
    pub vrid: u8,
    pub _pad: [u8; 3],
}

/// What the kernel last saw from one VRRP peer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerRecord {
    /// Valid adverts seen.
    pub adverts: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the latest valid advert.
    pub last_seen_ns: u64,
    /// Advertised interval in milliseconds (v2 seconds and v3 centiseconds,
    /// both converted, so nobody downstream has to know the unit).
    pub interval_ms: u32,
    pub priority: u8,
    /// VRRP version, 2 or 3.
    pub version: u8,
    pub address_count: u8,
    /// VRRPv2 auth type (0 none, 1 simple password); 0 for v3.
    pub auth_type: u8,
}

/// Bits of [`PeerEvent::kind`].
pub mod peer_event {
    pub const NEW_PEER: u32 = 1;
    pub const PRIORITY_CHANGED: u32 = 2;
    /// The peer is resigning (priority 0, RFC 5798 §6.4.3 / §6.6).
    pub const PRIORITY_ZERO: u32 = 4;
    pub const INTERVAL_CHANGED: u32 = 8;
}

/// Sent over the ring buffer when something about a peer changes, so userspace
/// never polls for it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerEvent {
    pub timestamp_ns: u64,
    pub key: PeerKey,
    /// A set of [`peer_event`] bits.
    pub kind: u32,
    pub interval_ms: u32,
    pub previous_interval_ms: u32,
    pub priority: u8,
    pub previous_priority: u8,
    pub version: u8,
    pub _pad: [u8; 9],
}

/// Every valid advert for a VRID the daemon watches (`WATCHED_VRIDS`), with
/// the kernel's receive time: the daemon's only source of adverts, so its
/// detection never depends on when userspace got scheduled.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdvertEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at receive.
    pub timestamp_ns: u64,
    pub source: IpBytes,
    /// The IP destination and the frame's destination MAC: the daemon obeys
    /// only adverts addressed to the VRRP group or to itself, as the kernel
    /// would deliver them (XDP sees frames for other hosts too).
    pub destination: IpBytes,
    pub interval_ms: u32,
    pub vrid: u8,
    pub priority: u8,
    pub version: u8,
    pub address_count: u8,
    pub auth_type: u8,
    pub destination_mac: [u8; 6],
    pub _pad: [u8; 1],
    /// VRRPv2 authentication data; zero for v3.
    pub auth_data: [u8; 8],
}

/// One way of an AP table set: which AP, and what this CPU saw of it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApSlot {
    /// `family == 0`: the slot is empty.
    pub address: IpBytes,
    /// The AP's UDP port of its latest IKE or NAT-T packet (0: none seen):
    /// 500, 4500, or what a NAT mapped it to.
    pub ike_port: u16,
    pub _pad: u16,
    /// `AP_CLOCK` (CLOCK_MONOTONIC ns, refreshed by userspace every
    /// [`AP_CLOCK_TICK_MS`]) at the latest packet.
    pub last_seen_ns: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// Key of the IKE session table: an AP address and the UDP port its IKE
/// comes from (500, 4500, or what a NAT mapped it to). Its value is the
/// CLOCK_MONOTONIC (precise) of the latest packet with which that AP
/// (re)opened an IKE session: IKE_SA_INIT / IKE_AUTH from it. (An MQTT
/// connection's opening is its entry's `opened_ns` in the MQTT table.)
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IkeSessionKey {
    pub ap: IpBytes,
    pub ap_port: u16,
    pub _pad: u16,
}

/// Key of the MQTT connection table: one connection an AP opened to a
/// broker port (1883 or 8883) of this server.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MqttKey {
    pub ap: IpBytes,
    pub ap_port: u16,
    pub broker_port: u16,
}

/// What the monitor saw the AP send on one MQTT connection: where the
/// connection stands in sequence space, so that a new master can send the
/// AP a segment a NAT's connection tracking finds in its window (and
/// forwards) while the AP finds it old (and answers with its exact numbers,
/// which draws our RST). See `recovery::mqtt` in the daemon.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MqttConnection {
    /// The AP's next sequence number: its latest segment's sequence plus
    /// its data (plus one for a SYN).
    pub ap_next_sequence: u32,
    /// The AP's latest acknowledgement: the broker's next sequence number
    /// as the AP has it. Valid when `acknowledged` is non-zero.
    pub ap_acknowledgement: u32,
    /// `AP_CLOCK` at the AP's latest segment on it.
    pub last_seen_ns: u64,
    /// CLOCK_MONOTONIC (precise) of the AP's SYN; 0: opened before the
    /// monitor saw it.
    pub opened_ns: u64,
    /// Non-zero once a segment with ACK set was seen.
    pub acknowledged: u8,
    pub _pad: [u8; 7],
}

/// One set of the AP table: [`AP_SET_WAYS`] slots and the way the next
/// eviction takes (round robin: finding the least recently seen of eight
/// would cost the verifier a path per way combination).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApSet {
    pub slots: [ApSlot; AP_SET_WAYS],
    pub hand: u32,
    pub _pad: u32,
}

/// The set an AP address belongs to in a table of `1 << set_bits` sets: a
/// multiplicative hash of its words, cheap enough for the per-packet path
/// and shared with userspace tests.
#[inline(always)]
pub fn ap_set(address: &IpBytes, set_bits: u32) -> u32 {
    let a = &address.addr;
    let mut folded: u32 = 0;
    let mut i = 0;
    while i < 16 {
        folded ^= u32::from_le_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
        i += 4;
    }
    // `set_bits` 0 (one set): no shift by 32, set 0.
    folded
        .wrapping_mul(0x9e37_79b1)
        .checked_shr(32 - set_bits)
        .unwrap_or(0)
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], Copy, contain only integers and
    // byte arrays, and have no implicit padding (checked by the size asserts).
    unsafe impl aya::Pod for super::TrafficCounter {}
    unsafe impl aya::Pod for super::IpBytes {}
    unsafe impl aya::Pod for super::PeerKey {}
    unsafe impl aya::Pod for super::PeerRecord {}
    unsafe impl aya::Pod for super::PeerEvent {}
    unsafe impl aya::Pod for super::ApSlot {}
    unsafe impl aya::Pod for super::ApSet {}
    unsafe impl aya::Pod for super::MqttKey {}
    unsafe impl aya::Pod for super::IkeSessionKey {}
    unsafe impl aya::Pod for super::MqttConnection {}
    unsafe impl aya::Pod for super::AdvertEvent {}
}

// No implicit padding anywhere: sizes equal the sum of the fields.
const _: () = assert!(core::mem::size_of::<IpBytes>() == 20);
const _: () = assert!(core::mem::size_of::<PeerKey>() == 24);
const _: () = assert!(core::mem::size_of::<PeerRecord>() == 24);
const _: () = assert!(core::mem::size_of::<PeerEvent>() == 8 + 24 + 12 + 3 + 9);
const _: () = assert!(core::mem::size_of::<ApSlot>() == 48);
const _: () = assert!(core::mem::size_of::<ApSet>() == 48 * AP_SET_WAYS + 8);
const _: () = assert!(core::mem::size_of::<IkeSessionKey>() == 24);
const _: () = assert!(core::mem::size_of::<AdvertEvent>() == 72);
const _: () = assert!(core::mem::size_of::<MqttKey>() == 24);
const _: () = assert!(core::mem::size_of::<MqttConnection>() == 32);
const _: () = assert!(ap_table_sets(AP_TABLE_DEFAULT_APS) == AP_TABLE_DEFAULT_SETS);
const _: () = assert!(core::mem::size_of::<TrafficCounter>() == 16);
