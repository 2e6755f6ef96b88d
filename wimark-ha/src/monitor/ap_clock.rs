//! The clock the XDP program stamps AP packets with. Reading a clock helper
//! per packet cost a third of the AP path, so userspace writes
//! CLOCK_MONOTONIC into a one-slot array every `AP_CLOCK_TICK_MS` and the
//! kernel side just loads it. Precise VRRP timestamps do not use this.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use aya::{
    maps::{Array, MapData},
    Ebpf,
};
use wimark_ha_common::abi::{AP_CLOCK_TICK_MS, MAP_AP_CLOCK};

use super::MonitorError;
use crate::clock::monotonic_now_ns;

/// Keeps `AP_CLOCK` current until dropped.
pub struct ApClock {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ApClock {
    /// Sets the clock now and keeps it ticking on a thread of its own.
    pub fn start(ebpf: &mut Ebpf) -> Result<Self, MonitorError> {
        let map = ebpf
            .take_map(MAP_AP_CLOCK)
            .ok_or(MonitorError::ObjectMismatch {
                what: "map",
                name: MAP_AP_CLOCK,
            })?;
        let mut clock: Array<MapData, u64> =
            Array::try_from(map).map_err(|source| MonitorError::Map {
                map: MAP_AP_CLOCK,
                source,
            })?;
        clock
            .set(0, monotonic_now_ns(), 0)
            .map_err(|source| MonitorError::Map {
                map: MAP_AP_CLOCK,
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::Builder::new()
            .name("wimark-ha ap clock".to_string())
            .spawn({
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        thread::sleep(Duration::from_millis(AP_CLOCK_TICK_MS));
                        if let Err(e) = clock.set(0, monotonic_now_ns(), 0) {
                            tracing::warn!("AP clock update failed: {e}");
                        }
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ApClock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
