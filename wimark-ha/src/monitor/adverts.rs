//! Every valid advert of the VRIDs the daemon runs, as the XDP program saw
//! them, with kernel receive timestamps, decoded here into what the state
//! machine takes ([`Heard`]). Read from the daemon's engine thread, which
//! polls [`AdvertReader::fd`].
//!
//! Owns: the advert ring and its decoding. Must not: judge an advert (the
//! state machine does) or know instances.

use std::{
    net::IpAddr,
    os::fd::{AsFd as _, AsRawFd, RawFd},
    time::Duration,
};

use aya::{
    maps::{Array, HashMap, MapData, RingBuf},
    Ebpf,
};
use wimark_ha_common::abi::{
    AdvertEvent, IpBytes, PeerKey, MAP_ADVERTS, MAP_ALLOWED_PEERS, MAP_WATCHED_VRIDS,
    WATCH_ALLOWED_ONLY, WATCH_ANY_SOURCE,
};

use super::MonitorError;
use crate::vrrp::{Advert, Auth, Timestamp, Version};

/// One advert as the kernel heard it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heard {
    pub source: IpAddr,
    /// Where it was sent: the IP destination and the frame's destination
    /// MAC (XDP sees frames for other hosts too; the engine obeys only
    /// those addressed to the group or to itself).
    pub destination: IpAddr,
    pub destination_mac: [u8; 6],
    /// The kernel's receive time (`bpf_ktime_get_ns()`, CLOCK_MONOTONIC).
    pub at: Timestamp,
    /// The XDP program did the wire checks; the VIP addresses are not
    /// carried (the state machine does not need them).
    pub advert: Advert,
}

impl Heard {
    /// `None` for a version the XDP program should never have passed.
    pub fn decode(event: &AdvertEvent) -> Option<Self> {
        let version = match event.version {
            2 => Version::V2,
            3 => Version::V3,
            _ => return None,
        };
        let auth = match event.auth_type {
            0 => Auth::None,
            1 => Auth::Password(event.auth_data),
            other => Auth::Unsupported(other),
        };
        Some(Self {
            source: IpAddr::from(event.source),
            destination: IpAddr::from(event.destination),
            destination_mac: event.destination_mac,
            at: Timestamp(event.timestamp_ns),
            advert: Advert {
                version,
                vrid: event.vrid,
                priority: event.priority,
                interval: Duration::from_millis(u64::from(event.interval_ms)),
                auth,
                addresses: Vec::new(),
            },
        })
    }
}

pub struct AdvertReader {
    ring: RingBuf<MapData>,
}

impl AdvertReader {
    /// Marks each VRID of `watch` as watched — from any source when its
    /// allow-list is empty, else only from those sources (the kernel counts
    /// the others as rogue) — and takes the advert ring.
    pub(super) fn new(ebpf: &mut Ebpf, watch: &[(u8, Vec<IpAddr>)]) -> Result<Self, MonitorError> {
        let map_error = |map| move |source| MonitorError::Map { map, source };
        {
            let mut allowed: HashMap<_, PeerKey, u8> = HashMap::try_from(
                ebpf.map_mut(MAP_ALLOWED_PEERS)
                    .ok_or(MonitorError::ObjectMismatch {
                        what: "map",
                        name: MAP_ALLOWED_PEERS,
                    })?,
            )
            .map_err(map_error(MAP_ALLOWED_PEERS))?;
            for (vrid, peers) in watch {
                for peer in peers {
                    let key = PeerKey {
                        source: IpBytes::from(*peer),
                        vrid: *vrid,
                        _pad: [0; 3],
                    };
                    allowed
                        .insert(key, 1, 0)
                        .map_err(map_error(MAP_ALLOWED_PEERS))?;
                }
            }
        }
        let mut watched: Array<_, u32> = Array::try_from(ebpf.map_mut(MAP_WATCHED_VRIDS).ok_or(
            MonitorError::ObjectMismatch {
                what: "map",
                name: MAP_WATCHED_VRIDS,
            },
        )?)
        .map_err(map_error(MAP_WATCHED_VRIDS))?;
        for (vrid, peers) in watch {
            let mode = if peers.is_empty() {
                WATCH_ANY_SOURCE
            } else {
                WATCH_ALLOWED_ONLY
            };
            watched
                .set(u32::from(*vrid), mode, 0)
                .map_err(map_error(MAP_WATCHED_VRIDS))?;
        }
        let map = ebpf
            .take_map(MAP_ADVERTS)
            .ok_or(MonitorError::ObjectMismatch {
                what: "map",
                name: MAP_ADVERTS,
            })?;
        let ring = RingBuf::try_from(map).map_err(map_error(MAP_ADVERTS))?;
        Ok(Self { ring })
    }

    /// Readable (epoll) when adverts are queued.
    pub fn fd(&self) -> RawFd {
        self.ring.as_fd().as_raw_fd()
    }

    /// Hands every queued advert to `f`; returns how many. A record of the
    /// wrong size or version (binary and object out of step) is skipped,
    /// never trusted.
    pub fn drain(&mut self, mut f: impl FnMut(Heard)) -> usize {
        let mut n = 0;
        while let Some(record) = self.ring.next() {
            let heard = (record.len() == size_of::<AdvertEvent>())
                .then(|| {
                    // SAFETY: length checked; AdvertEvent is plain old data.
                    let event: AdvertEvent =
                        unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
                    Heard::decode(&event)
                })
                .flatten();
            match heard {
                Some(heard) => {
                    f(heard);
                    n += 1;
                }
                None => tracing::warn!(len = record.len(), "undecodable advert event skipped"),
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(version: u8, auth_type: u8) -> AdvertEvent {
        AdvertEvent {
            timestamp_ns: 7_000_123,
            source: IpBytes::from("10.77.0.1".parse::<IpAddr>().expect("ip")),
            destination: IpBytes::from("224.0.0.18".parse::<IpAddr>().expect("ip")),
            interval_ms: 1000,
            vrid: 67,
            priority: 200,
            version,
            address_count: 1,
            auth_type,
            destination_mac: [1, 0, 0x5e, 0, 0, 0x12],
            _pad: [0; 1],
            auth_data: *b"wimark12",
        }
    }

    #[test]
    fn a_kernel_record_becomes_what_the_state_machine_takes() {
        let heard = Heard::decode(&event(2, 1)).expect("v2");
        assert_eq!(heard.source, "10.77.0.1".parse::<IpAddr>().expect("ip"));
        assert_eq!(heard.at, Timestamp(7_000_123));
        assert_eq!(
            heard.destination,
            "224.0.0.18".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(heard.destination_mac, [1, 0, 0x5e, 0, 0, 0x12]);
        assert_eq!(heard.advert.version, Version::V2);
        assert_eq!(heard.advert.auth, Auth::Password(*b"wimark12"));
        assert_eq!(heard.advert.interval, Duration::from_secs(1));
        assert_eq!((heard.advert.vrid, heard.advert.priority), (67, 200));
        assert_eq!(
            Heard::decode(&event(3, 0)).expect("v3").advert.auth,
            Auth::None
        );
        assert_eq!(
            Heard::decode(&event(3, 9)).expect("v3").advert.auth,
            Auth::Unsupported(9)
        );
        assert_eq!(Heard::decode(&event(4, 0)), None, "no such version");
        let v6: IpAddr = "fe80::1".parse().expect("ip");
        assert_eq!(IpAddr::from(IpBytes::from(v6)), v6);
    }
}
