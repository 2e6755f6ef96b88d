//! Every valid advert of the VRIDs the daemon runs, as the XDP program saw
//! them, with kernel receive timestamps. Read from the daemon's engine
//! thread, which polls [`AdvertReader::fd`].

use std::os::fd::{AsFd as _, AsRawFd, RawFd};

use aya::{
    maps::{Array, MapData, RingBuf},
    Ebpf,
};
use wimark_ha_common::abi::{AdvertEvent, MAP_ADVERTS, MAP_WATCHED_VRIDS};

use super::MonitorError;

pub struct AdvertReader {
    ring: RingBuf<MapData>,
}

impl AdvertReader {
    /// Marks `vrids` as watched and takes the advert ring.
    pub(super) fn new(ebpf: &mut Ebpf, vrids: &[u8]) -> Result<Self, MonitorError> {
        let map_error = |map| move |source| MonitorError::Map { map, source };
        let mut watched: Array<_, u32> = Array::try_from(ebpf.map_mut(MAP_WATCHED_VRIDS).ok_or(
            MonitorError::ObjectMismatch {
                what: "map",
                name: MAP_WATCHED_VRIDS,
            },
        )?)
        .map_err(map_error(MAP_WATCHED_VRIDS))?;
        for vrid in vrids {
            watched
                .set(u32::from(*vrid), 1, 0)
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
