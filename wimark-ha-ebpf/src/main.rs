//! The XDP program: sees every frame on the peer interface at line rate,
//! classifies it with `wimark_ha_common::classify`, and counts it.
//!
//! Owns: the maps (`COUNTERS`, `VRRP_PEERS`, `AP_TABLE`, `PEER_EVENTS`) and the
//! kernel timestamps of adverts. Must not: drop, redirect or alter any frame —
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
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use wimark_ha_common::{
    abi::{
        peer_event, ApKey, ApRecord, Counter, PeerEvent, PeerKey, PeerRecord, TrafficCounter,
        AP_TABLE_SIZE, EVENT_RING_BYTES, PEER_TABLE_SIZE,
    },
    classify::{classify, AdvertSummary, Frame, Verdict},
};

#[map]
static COUNTERS: PerCpuArray<TrafficCounter> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map]
static VRRP_PEERS: LruHashMap<PeerKey, PeerRecord> =
    LruHashMap::with_max_entries(PEER_TABLE_SIZE, 0);

#[map]
static AP_TABLE: LruHashMap<ApKey, ApRecord> = LruHashMap::with_max_entries(AP_TABLE_SIZE, 0);

#[map]
static PEER_EVENTS: RingBuf = RingBuf::with_byte_size(EVENT_RING_BYTES, 0);

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
        let start = self.0.data() + offset;
        if start + N > self.0.data_end() {
            return None;
        }
        // SAFETY: [start, start + N) lies inside the packet, checked above.
        Some(unsafe { core::ptr::read_unaligned(start as *const [u8; N]) })
    }
}

#[xdp]
pub fn wimark_ha_monitor(ctx: XdpContext) -> u32 {
    let frame = XdpFrame(&ctx);
    let verdict = classify(&frame);
    let bytes = frame.frame_len() as u64;
    count(verdict.counter(), bytes);
    match verdict {
        Verdict::Vrrp(advert) => record_peer(&advert),
        Verdict::VrrpInvalid(reason) => {
            // Compiled in, but gated on AYA_LOG_LEVEL which userspace leaves
            // off unless `--log-level debug`: one load and a branch.
            debug!(&ctx, "VRRP packet rejected: reason {}", reason as u8);
        }
        Verdict::Ap { ap, .. } => record_ap(&ap, bytes),
        Verdict::Carp | Verdict::Other => {}
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
fn record_peer(advert: &AdvertSummary) {
    let now = unsafe { bpf_ktime_get_ns() };
    let key = PeerKey { source: advert.source, vrid: advert.vrid, _pad: [0; 3] };
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
    if kind == 0 {
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
        count(Counter::EventsLost, 0);
    }
}

#[inline(always)]
fn record_ap(ap: &ApKey, bytes: u64) {
    let now = unsafe { bpf_ktime_get_ns() };
    match AP_TABLE.get_ptr_mut(ap) {
        Some(record) => {
            // SAFETY: map value pointer; counts are atomic (several CPUs).
            unsafe {
                (*record).last_seen_ns = now;
                atomic_add(&raw mut (*record).packets, 1);
                atomic_add(&raw mut (*record).bytes, bytes);
            }
        }
        None => {
            let record = ApRecord { last_seen_ns: now, packets: 1, bytes };
            if AP_TABLE.insert(ap, &record, BPF_NOEXIST as u64).is_err() {
                // Another CPU inserted it first: add to theirs.
                if let Some(record) = AP_TABLE.get_ptr_mut(ap) {
                    unsafe {
                        atomic_add(&raw mut (*record).packets, 1);
                        atomic_add(&raw mut (*record).bytes, bytes);
                    }
                }
            }
        }
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
