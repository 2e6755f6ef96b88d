//! The XDP program: sees every frame on the peer interface at line rate,
//! classifies it with `wimark_ha_common::classify`, and counts it.
//!
//! Owns: the maps (`COUNTERS`, `VRRP_PEERS`, `AP_TABLE`, `MQTT_CONNECTIONS`, `IKE_SESSIONS`, `PEER_EVENTS`,
//! `ADVERTS`, `WATCHED_VRIDS`, `ALLOWED_PEERS`, `AP_CLOCK`) and the kernel
//! timestamps of adverts; the peer allow-list is enforced here, so a flood of
//! rogue adverts costs userspace nothing. Must not: drop, redirect or alter any frame —
//! every path returns `XDP_PASS`, including every error path (fail open; a
//! monitor must never cost the host its traffic).
#![no_std]
#![no_main]
// Atomic adds on map values: core::sync::atomic has no RMW ops for the BPF
// target, the intrinsic lowers to BPF_ATOMIC_ADD (`lock *(u64 *)... +=`).
#![feature(core_intrinsics)]
#![allow(internal_features)]

use core::intrinsics::AtomicOrdering;

use aya_ebpf::{
    bindings::{xdp_action, BPF_NOEXIST},
    helpers::{bpf_csum_diff, bpf_ktime_get_ns},
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use wimark_ha_common::{
    abi::{
        ap_set, peer_event, AdvertEvent, ApSet, ApSlot, Counter, IkeSessionKey, IpBytes,
        MqttConnection, MqttKey, PeerEvent, PeerKey, PeerRecord, TrafficCounter,
        ADVERT_RING_BYTES, ALLOWED_PEERS_MAX, AP_IDLE_NS, AP_SET_WAYS, AP_TABLE_DEFAULT_SETS,
        EVENT_RING_BYTES, FAMILY_IPV4,
        IKE_SESSION_TABLE_SIZE, MQTT_TABLE_SIZE,
        PEER_TABLE_SIZE, WATCH_ALLOWED_ONLY, WATCH_NONE,
    },
    classify::{
        classify_with_tcp, untagged_destination_offset, AdvertSummary, ApClass, Frame, TcpFacts,
        Verdict, VRRP_MAX_LEN,
    },
};

#[map]
static COUNTERS: PerCpuArray<TrafficCounter> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map]
static VRRP_PEERS: LruHashMap<PeerKey, PeerRecord> =
    LruHashMap::with_max_entries(PEER_TABLE_SIZE, 0);

/// Per CPU, so the hot path (every AP packet) needs no atomic operations;
/// userspace merges the CPUs' slots by address. One element per set: the
/// loader sizes it (`max_entries`) together with `AP_SET_BITS`.
#[map]
static AP_TABLE: PerCpuArray<ApSet> = PerCpuArray::with_max_entries(AP_TABLE_DEFAULT_SETS, 0);

/// log2 of `AP_TABLE`'s sets, set by the loader. In .rodata, which the
/// loader freezes: the verifier and the JIT see a constant.
#[no_mangle]
static AP_SET_BITS: u32 = AP_TABLE_DEFAULT_SETS.trailing_zeros();

/// Every MQTT connection an AP holds to this server's broker, with where it
/// stands in sequence space: what a new master needs to reset each of them
/// through a NAT (synced to the peer).
#[map]
static MQTT_CONNECTIONS: LruHashMap<MqttKey, MqttConnection> =
    LruHashMap::with_max_entries(MQTT_TABLE_SIZE, 0);

/// When each AP (address and IKE port: APs behind one NAT address apart)
/// last opened an IKE session: what "its IKE_SA is back" is judged by after
/// a takeover.
#[map]
static IKE_SESSIONS: LruHashMap<IkeSessionKey, u64> =
    LruHashMap::with_max_entries(IKE_SESSION_TABLE_SIZE, 0);

/// CLOCK_MONOTONIC in ns, written by userspace every AP_CLOCK_TICK_MS. "AP
/// last seen" only feeds a 60-second activity window, and reading a clock
/// helper cost ~17 ns per packet here (a third of the AP path); an inlined
/// array load costs ~1 ns.
#[map]
static AP_CLOCK: Array<u64> = Array::with_max_entries(1, 0);

/// Every valid advert of a watched VRID, for the daemon's state machines.
#[map]
static ADVERTS: RingBuf = RingBuf::with_byte_size(ADVERT_RING_BYTES, 0);

/// Non-zero at index VRID: the daemon runs an instance for it.
#[map]
static WATCHED_VRIDS: Array<u32> = Array::with_max_entries(256, 0);

/// (source, VRID) pairs allowed for VRIDs watched with `WATCH_ALLOWED_ONLY`.
#[map]
static ALLOWED_PEERS: HashMap<PeerKey, u8> = HashMap::with_max_entries(ALLOWED_PEERS_MAX, 0);

#[map]
static PEER_EVENTS: RingBuf = RingBuf::with_byte_size(EVENT_RING_BYTES, 0);

/// Index 0 non-zero: a reader drains `PEER_EVENTS` (set by userspace).
#[map]
static PEER_EVENTS_READER: Array<u32> = Array::with_max_entries(1, 0);

/// Largest offset the classifier reads at (jumbo frames are 9 KB).
const MAX_FRAME_OFFSET: usize = 0x3fff;

/// The frame as the classifier sees it: every read is checked against
/// `data_end` right before the access, which is what the verifier needs.
struct XdpFrame<'a>(&'a XdpContext);

impl Frame for XdpFrame<'_> {
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.0.data_end() - self.0.data()
    }

    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        // The verifier only trusts a bounds check on a packet pointer whose
        // variable offset is provably small; no frame we parse is this long.
        if offset > MAX_FRAME_OFFSET {
            return None;
        }
        let start = self.0.data() + offset;
        if start + N > self.0.data_end() {
            return None;
        }
        // SAFETY: [start, start + N) lies inside the packet, checked above.
        Some(unsafe { core::ptr::read_unaligned(start as *const [u8; N]) })
    }

    /// The kernel's checksum (`bpf_csum_diff`, at most 512 bytes a call)
    /// over chunks of constant size, so that the verifier checks a handful
    /// of calls instead of a loop of up to 520 loads: 512, 512, then one
    /// chunk per set bit of what is left (256 down to 4).
    #[inline(always)]
    fn sum_words(&self, offset: usize, length: usize) -> Option<u32> {
        if offset > MAX_FRAME_OFFSET || length > VRRP_MAX_LEN {
            return None;
        }
        let mut chunks = Chunks {
            frame: self,
            at: offset,
            left: length,
            sum: 0,
        };
        chunks.whole::<512>()?;
        chunks.whole::<512>()?;
        chunks.bit::<256>()?;
        chunks.bit::<128>()?;
        chunks.bit::<64>()?;
        chunks.bit::<32>()?;
        chunks.bit::<16>()?;
        chunks.bit::<8>()?;
        chunks.bit::<4>()?;
        if chunks.left != 0 {
            return None;
        }
        // csum_partial sums the words as the CPU loads them (little-endian
        // here): folded and byte-swapped it is the big-endian sum, modulo
        // 0xffff, which is all the caller needs.
        let sum = chunks.sum;
        let sum = (sum & 0xffff) + (sum >> 16);
        let sum = (sum & 0xffff) + (sum >> 16);
        Some(u32::from((sum as u16).swap_bytes()))
    }
}

/// [`XdpFrame::sum_words`]'s walk over the message.
struct Chunks<'f, 'c> {
    frame: &'f XdpFrame<'c>,
    at: usize,
    left: usize,
    sum: u32,
}

impl Chunks<'_, '_> {
    /// Sums the next `N` bytes if at least `N` are left.
    #[inline(always)]
    fn whole<const N: usize>(&mut self) -> Option<()> {
        if self.left < N {
            return Some(());
        }
        self.take::<N>()
    }

    /// Sums the next `N` bytes if `N`'s bit is set in what is left.
    #[inline(always)]
    fn bit<const N: usize>(&mut self) -> Option<()> {
        if self.left & N == 0 {
            return Some(());
        }
        self.take::<N>()
    }

    #[inline(always)]
    fn take<const N: usize>(&mut self) -> Option<()> {
        let start = self.frame.0.data() + self.at;
        if start + N > self.frame.0.data_end() {
            return None;
        }
        // SAFETY: [start, start + N) lies inside the packet, checked above;
        // the helper only reads it.
        let sum = unsafe {
            bpf_csum_diff(
                core::ptr::null_mut(),
                0,
                start as *mut u32,
                N as u32,
                self.sum,
            )
        };
        if sum < 0 {
            return None;
        }
        self.sum = sum as u32;
        self.at += N;
        self.left -= N;
        Some(())
    }
}

#[xdp]
pub fn wimark_ha_monitor(ctx: XdpContext) -> u32 {
    let frame = XdpFrame(&ctx);
    let mut tcp = TcpFacts::default();
    let verdict = classify_with_tcp(&frame, &mut tcp);
    let bytes = frame.frame_len() as u64;
    count(verdict.counter(), bytes);
    match verdict {
        Verdict::Vrrp(advert) => record_peer(&frame, &advert, bytes),
        Verdict::VrrpInvalid(reason) => {
            // Compiled in, but gated on AYA_LOG_LEVEL which userspace leaves
            // off unless `--log-level debug`: one load and a branch.
            debug!(&ctx, "VRRP packet rejected: {}", reason.name());
        }
        Verdict::Ap {
            class,
            ap,
            ap_port,
            session,
        } => {
            record_ap(&ap, class, ap_port, session, bytes);
            if tcp.flags != 0 {
                record_mqtt(&ap, class, ap_port, &tcp);
            }
        }
        Verdict::VrrpTagged | Verdict::Carp | Verdict::Other => {}
    }
    xdp_action::XDP_PASS
}

/// Does nothing but pass: the benchmark runs it beside the monitor to
/// subtract what BPF_PROG_TEST_RUN itself costs per packet. Never attached.
#[xdp]
pub fn wimark_ha_baseline(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn count(counter: Counter, bytes: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot; XDP runs with preemption disabled on this CPU.
        unsafe {
            (*slot).packets += 1;
            (*slot).bytes += bytes;
        }
    }
}

#[inline(always)]
fn record_peer(frame: &XdpFrame, advert: &AdvertSummary, bytes: u64) {
    let now = unsafe { bpf_ktime_get_ns() };
    let key = PeerKey {
        source: advert.source,
        vrid: advert.vrid,
        _pad: [0; 3],
    };
    let watch = WATCHED_VRIDS
        .get(u32::from(advert.vrid))
        .copied()
        .unwrap_or(WATCH_NONE);
    // SAFETY: a lookup; the value is not kept.
    let rogue = watch == WATCH_ALLOWED_ONLY && unsafe { ALLOWED_PEERS.get(&key) }.is_none();
    if rogue {
        // Counted and still recorded in VRRP_PEERS (so it can be seen and
        // logged), never handed to the daemon: it can neither preempt nor
        // keep a dead master alive.
        count(Counter::VrrpRogue, bytes);
    } else if watch != WATCH_NONE {
        let event = AdvertEvent {
            timestamp_ns: now,
            source: advert.source,
            destination: destination(frame, advert),
            interval_ms: advert.interval_ms,
            vrid: advert.vrid,
            priority: advert.priority,
            version: advert.version,
            address_count: advert.address_count,
            auth_type: advert.auth_type,
            // The classifier read the Ethernet header, so this load holds.
            destination_mac: frame.load::<6>(0).unwrap_or([0; 6]),
            _pad: [0; 1],
            auth_data: if advert.version == 2 {
                frame.load::<8>(usize::from(advert.auth_offset)).unwrap_or([0; 8])
            } else {
                [0; 8]
            },
        };
        if ADVERTS.output::<AdvertEvent>(&event, 0).is_err() {
            count(Counter::AdvertEventsLost, 0);
        }
    }
    let mut kind = 0u32;
    let mut previous_priority = advert.priority;
    let mut previous_interval_ms = advert.interval_ms;
    match VRRP_PEERS.get_ptr_mut(&key) {
        Some(record) => {
            // SAFETY: the pointer is the map value for `key`; other CPUs may
            // update it concurrently, so the count is an atomic add and the
            // other fields are single stores of the latest advert.
            unsafe {
                atomic_add(&raw mut (*record).adverts, 1);
                previous_priority = (*record).priority;
                previous_interval_ms = (*record).interval_ms;
                (*record).last_seen_ns = now;
                (*record).priority = advert.priority;
                (*record).interval_ms = advert.interval_ms;
                (*record).version = advert.version;
                (*record).address_count = advert.address_count;
                (*record).auth_type = advert.auth_type;
            }
        }
        None => {
            let record = PeerRecord {
                adverts: 1,
                last_seen_ns: now,
                interval_ms: advert.interval_ms,
                priority: advert.priority,
                version: advert.version,
                address_count: advert.address_count,
                auth_type: advert.auth_type,
            };
            // NOEXIST: if two CPUs race on a new peer, exactly one reports it.
            if VRRP_PEERS.insert(&key, &record, BPF_NOEXIST as u64).is_ok() {
                kind |= peer_event::NEW_PEER;
            }
        }
    }
    if previous_priority != advert.priority {
        kind |= peer_event::PRIORITY_CHANGED;
    }
    if advert.priority == 0 {
        kind |= peer_event::PRIORITY_ZERO;
    }
    if previous_interval_ms != advert.interval_ms {
        kind |= peer_event::INTERVAL_CHANGED;
    }
    // Nobody drains the ring (the daemon does not; `stats` does): queueing
    // would only fill it and count every later change lost.
    if kind == 0 || PEER_EVENTS_READER.get(0).is_none_or(|reader| *reader == 0) {
        return;
    }
    let event = PeerEvent {
        timestamp_ns: now,
        key,
        kind,
        interval_ms: advert.interval_ms,
        previous_interval_ms,
        priority: advert.priority,
        previous_priority,
        version: advert.version,
        _pad: [0; 9],
    };
    if PEER_EVENTS.output::<PeerEvent>(&event, 0).is_err() {
        count(Counter::PeerEventsLost, 0);
    }
}

/// The advert's IP destination: the VRRP group, or a unicast address the
/// daemon checks is its own.
#[inline(always)]
fn destination(frame: &XdpFrame, advert: &AdvertSummary) -> IpBytes {
    let at = untagged_destination_offset(advert.source.family);
    if advert.source.family == FAMILY_IPV4 {
        frame.load::<4>(at).map_or(IpBytes::default(), IpBytes::v4)
    } else {
        frame.load::<16>(at).map_or(IpBytes::default(), IpBytes::v6)
    }
}

#[inline(always)]
fn same_address(a: &IpBytes, b: &IpBytes) -> bool {
    // Word compares: cheaper for the verifier and the JIT than a memcmp.
    let word = |x: &IpBytes, i: usize| {
        u32::from_ne_bytes([x.addr[i], x.addr[i + 1], x.addr[i + 2], x.addr[i + 3]])
    };
    a.family == b.family
        && word(a, 0) == word(b, 0)
        && word(a, 4) == word(b, 4)
        && word(a, 8) == word(b, 8)
        && word(a, 12) == word(b, 12)
}

#[inline(always)]
fn record_ap(ap: &IpBytes, class: ApClass, ap_port: u16, session: bool, bytes: u64) {
    // SAFETY: a plain read of a global the loader may have overridden.
    let set_bits = unsafe { core::ptr::read_volatile(&AP_SET_BITS) };
    let Some(set) = AP_TABLE.get_ptr_mut(ap_set(ap, set_bits)) else {
        return;
    };
    let now = AP_CLOCK.get(0).copied().unwrap_or(0);
    // SAFETY: this CPU's set of the array; nothing else writes it.
    unsafe {
        let slots = &mut (*set).slots;
        // The way holding this AP, else a free one (empty, or its AP idle
        // past the activity window: no eviction), else the hand's.
        let mut way = AP_SET_WAYS;
        for (i, slot) in slots.iter().enumerate() {
            if same_address(&slot.address, ap) {
                way = i;
                break;
            }
        }
        if way == AP_SET_WAYS {
            for (i, slot) in slots.iter().enumerate() {
                if slot.address.family == 0 || now.saturating_sub(slot.last_seen_ns) > AP_IDLE_NS {
                    way = i;
                    break;
                }
            }
            if way == AP_SET_WAYS {
                way = ((*set).hand as usize) % AP_SET_WAYS;
                (*set).hand = (*set).hand.wrapping_add(1);
                count(Counter::ApEvicted, 0);
            }
            let Some(free) = slots.get_mut(way) else {
                return;
            };
            *free = ApSlot {
                address: *ap,
                ike_port: 0,
                _pad: 0,
                last_seen_ns: 0,
                packets: 0,
                bytes: 0,
            };
        }
        let Some(slot) = slots.get_mut(way) else {
            return;
        };
        let slot: *mut ApSlot = slot;
        (*slot).last_seen_ns = now;
        (*slot).packets += 1;
        (*slot).bytes += bytes;
        // What the new master needs to reach this AP's sessions after a
        // takeover (synced to the peer): the latest ports win.
        if matches!(class, ApClass::Ike | ApClass::NatT) {
            (*slot).ike_port = ap_port;
            // Rare (an IKE session start): the precise clock and a hash
            // update are affordable here. An MQTT SYN stamps its
            // connection in the MQTT table.
            if session {
                let key = IkeSessionKey {
                    ap: *ap,
                    ap_port,
                    _pad: 0,
                };
                let _ = IKE_SESSIONS.insert(&key, &bpf_ktime_get_ns(), 0);
            }
        }
    }
}

/// One segment from an AP to the broker: its connection's entry follows
/// it. A connection is entered at its SYN or its first data (a bare ACK
/// does not create one: the answer an AP gives to a new master's reset
/// would enter a connection that is about to die), and leaves at the AP's
/// FIN or RST.
#[inline(always)]
fn record_mqtt(ap: &IpBytes, class: ApClass, ap_port: u16, tcp: &TcpFacts) {
    let broker_port = match class {
        ApClass::Mqtt => 1883,
        ApClass::MqttTls => 8883,
        _ => return,
    };
    let key = MqttKey {
        ap: *ap,
        ap_port,
        broker_port,
    };
    if tcp.flags & (TcpFacts::FIN | TcpFacts::RST) != 0 {
        let _ = MQTT_CONNECTIONS.remove(&key);
        return;
    }
    let syn = tcp.flags & TcpFacts::SYN != 0;
    let acknowledged = tcp.flags & TcpFacts::ACK != 0;
    let next = tcp
        .sequence
        .wrapping_add(u32::from(tcp.data_len))
        .wrapping_add(u32::from(syn));
    let now = AP_CLOCK.get(0).copied().unwrap_or(0);
    match MQTT_CONNECTIONS.get_ptr_mut(&key) {
        // SAFETY: the value of `key`; another CPU may write the same
        // connection at once (rare: one connection's segments arrive on one
        // queue), and a torn pair of numbers is still inside the window
        // the new master needs.
        Some(connection) => unsafe {
            (*connection).ap_next_sequence = next;
            if acknowledged {
                (*connection).ap_acknowledgement = tcp.acknowledgement;
                (*connection).acknowledged = 1;
            }
            (*connection).last_seen_ns = now;
            if syn {
                (*connection).opened_ns = bpf_ktime_get_ns();
            }
        },
        None if syn || tcp.data_len > 0 => {
            // SAFETY: a helper without arguments.
            let opened_ns = if syn { unsafe { bpf_ktime_get_ns() } } else { 0 };
            let entry = MqttConnection {
                ap_next_sequence: next,
                ap_acknowledgement: if acknowledged { tcp.acknowledgement } else { 0 },
                last_seen_ns: now,
                opened_ns,
                acknowledged: u8::from(acknowledged),
                _pad: [0; 7],
            };
            let _ = MQTT_CONNECTIONS.insert(&key, &entry, 0);
        }
        None => {}
    }
}

/// Adds `value` to a map value shared by all CPUs.
#[inline(always)]
unsafe fn atomic_add(counter: *mut u64, value: u64) {
    // SAFETY: the caller passes a pointer into a live map value.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, value);
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never called.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
