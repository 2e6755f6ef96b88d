//! Every valid advert of the VRIDs the daemon runs, as the XDP program saw
//! them, with kernel receive timestamps. Read from the daemon's engine
//! thread, which polls [`AdvertReader::fd`].

use std::os::fd::{AsFd as _, AsRawFd, RawFd};

use aya::{
    maps::{Array, MapData, RingBuf},
    Ebpf,
};
use std::net::IpAddr;

use aya::maps::HashMap;
use wimark_ha_common::abi::{
    AdvertEvent, IpBytes, PeerKey, MAP_ADVERTS, MAP_ALLOWED_PEERS, MAP_WATCHED_VRIDS,
    WATCH_ALLOWED_ONLY, WATCH_ANY_SOURCE,
};

use super::MonitorError;

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
    /// wrong size (binary and object out of step) is skipped, never trusted.
    pub fn drain(&mut self, mut f: impl FnMut(AdvertEvent)) -> usize {
        let mut n = 0;
        while let Some(record) = self.ring.next() {
            if record.len() == size_of::<AdvertEvent>() {
                // SAFETY: length checked; AdvertEvent is plain old data.
                f(unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) });
                n += 1;
            } else {
                tracing::warn!(len = record.len(), "undecodable advert event skipped");
            }
        }
        n
    }
}
