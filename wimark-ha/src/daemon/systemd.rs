//! systemd integration (`Type=notify`): READY once the engine runs,
//! watchdog pings while the engine's loop turns, STOPPING on shutdown. All of
//! it is a no-op when not started by systemd (`NOTIFY_SOCKET` unset).
//!
//! Owns: the sd_notify calls. Must not: decide anything about the engine
//! beyond reading its liveness stamp.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use sd_notify::NotifyState;

use crate::clock::monotonic_now_ns;

/// Tells systemd the daemon is ready and, when `WatchdogSec` is set, pings
/// it at half that period for as long as the engine loop is seen turning.
pub fn ready_and_watchdog(engine_alive: Arc<AtomicU64>) -> Option<tokio::task::JoinHandle<()>> {
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready]) {
        tracing::warn!("telling systemd we are ready: {e}");
    }
    let period = sd_notify::watchdog_enabled().filter(|p| !p.is_zero())?;
    Some(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period / 2);
        loop {
            ticker.tick().await;
            let now_ms = monotonic_now_ns() / 1_000_000;
            let idle_ms = now_ms.saturating_sub(engine_alive.load(Ordering::Relaxed));
            // The engine turns at least once a second; a longer silence
            // means it is stuck, and systemd should restart us.
            if Duration::from_millis(idle_ms) < period / 2 {
                if let Err(e) = sd_notify::notify(&[NotifyState::Watchdog]) {
                    tracing::warn!("watchdog ping: {e}");
                }
            } else {
                tracing::error!(
                    idle_ms,
                    "the engine loop has not turned: not pinging the watchdog"
                );
            }
        }
    }))
}

/// Before a restart in place: the new process sends READY again.
pub fn reloading() {
    let _ = sd_notify::notify(&[NotifyState::Reloading]);
}

pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}
