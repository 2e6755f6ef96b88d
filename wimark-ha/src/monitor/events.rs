//! Peer-change events from the kernel's ring buffer: a new VRRP peer, a
//! priority change, priority 0 (resignation), an interval change. Delivered
//! as they happen, so nobody polls the peer table for them.

use std::{fmt, io, net::IpAddr};

use aya::{
    maps::{MapData, RingBuf},
    Ebpf,
};
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use wimark_ha_common::abi::{peer_event, PeerEvent, MAP_EVENTS, MAP_PEER_EVENTS_READER};

use super::MonitorError;

/// One decoded [`PeerEvent`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerChange {
    /// Kernel timestamp (CLOCK_MONOTONIC, ns) of the advert that caused it.
    pub timestamp_ns: u64,
    pub vrid: u8,
    pub source: IpAddr,
    pub new_peer: bool,
    pub priority_changed: bool,
    pub priority_zero: bool,
    pub interval_changed: bool,
    pub priority: u8,
    pub previous_priority: u8,
    pub interval_ms: u32,
    pub previous_interval_ms: u32,
    pub version: u8,
}

impl PeerChange {
    /// Decodes one ring-buffer record; `None` if it is not a `PeerEvent`
    /// (wrong size: kernel object and binary out of step).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != size_of::<PeerEvent>() {
            return None;
        }
        // SAFETY: length checked; PeerEvent is plain old data.
        let event: PeerEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        Some(Self {
            timestamp_ns: event.timestamp_ns,
            vrid: event.key.vrid,
            source: IpAddr::from(event.key.source),
            new_peer: event.kind & peer_event::NEW_PEER != 0,
            priority_changed: event.kind & peer_event::PRIORITY_CHANGED != 0,
            priority_zero: event.kind & peer_event::PRIORITY_ZERO != 0,
            interval_changed: event.kind & peer_event::INTERVAL_CHANGED != 0,
            priority: event.priority,
            previous_priority: event.previous_priority,
            interval_ms: event.interval_ms,
            previous_interval_ms: event.previous_interval_ms,
            version: event.version,
        })
    }
}

impl fmt::Display for PeerChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VRRP peer {} vrid {}:", self.source, self.vrid)?;
        if self.new_peer {
            write!(
                f,
                " new (VRRPv{}, priority {}, interval {} ms)",
                self.version, self.priority, self.interval_ms
            )?;
        }
        if self.priority_changed {
            write!(
                f,
                " priority {} -> {}",
                self.previous_priority, self.priority
            )?;
        }
        if self.priority_zero {
            f.write_str(" resigning (priority 0)")?;
        }
        if self.interval_changed {
            write!(
                f,
                " interval {} -> {} ms",
                self.previous_interval_ms, self.interval_ms
            )?;
        }
        Ok(())
    }
}

/// The ring buffer, readable from tokio.
pub struct EventStream {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl EventStream {
    pub(super) fn new(ebpf: &mut Ebpf) -> Result<Self, MonitorError> {
        let map = ebpf
            .take_map(MAP_EVENTS)
            .ok_or(MonitorError::ObjectMismatch {
                what: "map",
                name: MAP_EVENTS,
            })?;
        let ring = RingBuf::try_from(map).map_err(|source| MonitorError::Map {
            map: MAP_EVENTS,
            source,
        })?;
        // From now on the program queues peer changes: we drain them.
        let mut reader: aya::maps::Array<_, u32> = aya::maps::Array::try_from(
            ebpf.map_mut(MAP_PEER_EVENTS_READER)
                .ok_or(MonitorError::ObjectMismatch {
                    what: "map",
                    name: MAP_PEER_EVENTS_READER,
                })?,
        )
        .map_err(|source| MonitorError::Map {
            map: MAP_PEER_EVENTS_READER,
            source,
        })?;
        reader
            .set(0, 1, 0)
            .map_err(|source| MonitorError::Map {
                map: MAP_PEER_EVENTS_READER,
                source,
            })?;
        Ok(Self {
            ring: super::register_readable(ring)?,
        })
    }

    /// Waits for the next batch of events. Undecodable records are counted
    /// in the log and skipped, never trusted.
    pub async fn next_batch(&mut self) -> io::Result<Vec<PeerChange>> {
        loop {
            let mut guard = self.ring.readable_mut().await?;
            let ring = guard.get_inner_mut();
            let mut batch = Vec::new();
            while let Some(record) = ring.next() {
                match PeerChange::decode(&record) {
                    Some(change) => batch.push(change),
                    None => tracing::warn!(len = record.len(), "undecodable peer event skipped"),
                }
            }
            guard.clear_ready();
            if !batch.is_empty() {
                return Ok(batch);
            }
        }
    }

    /// Events already queued, without waiting.
    pub fn drain(&mut self) -> Vec<PeerChange> {
        let ring = self.ring.get_mut();
        let mut batch = Vec::new();
        while let Some(record) = ring.next() {
            if let Some(change) = PeerChange::decode(&record) {
                batch.push(change);
            }
        }
        batch
    }
}
