//! What happened, after it happened: every transition and container switch
//! goes into the journal (and the metrics), and after each takeover the
//! first AP packet the XDP monitor sees is timed ("APs back after N ms").
//!
//! Owns: the journal writer and the APs-back watchers. Must not: run on the
//! engine thread or delay it — the engine only sends into a channel.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, WeakUnboundedSender};

use crate::{
    history::{Entry, Journal},
    metrics::Metrics,
    monitor::{monotonic_now_ns, Monitor},
};

/// How long after a takeover AP traffic is waited for.
const APS_BACK_WAIT: Duration = Duration::from_secs(120);
/// The watcher's poll period: the resolution of "APs back".
const APS_BACK_POLL: Duration = Duration::from_millis(1);

#[derive(Debug)]
pub enum Observed {
    Entry(Entry),
    /// The instance became MASTER: watch `monitor` for AP traffic.
    Takeover {
        instance: String,
        monitor: usize,
        /// CLOCK_MONOTONIC of the decision.
        decided_ns: u64,
    },
}

/// Runs until every sender is gone.
pub async fn run(
    mut journal: Journal,
    metrics: Arc<Metrics>,
    monitors: Arc<Mutex<Vec<Monitor>>>,
    own: WeakUnboundedSender<Observed>,
    mut events: UnboundedReceiver<Observed>,
) {
    // Watchers hold a strong sender only while they watch, so the loop ends
    // once the engine and the switcher have hung up and no watcher is left.
    while let Some(observed) = events.recv().await {
        match observed {
            Observed::Entry(entry) => {
                metrics.observe(&entry);
                if let Entry::ApsBack {
                    instance, after_ms, ..
                } = &entry
                {
                    tracing::info!(%instance, after_ms, "APs back after {after_ms:.1} ms");
                }
                if let Err(e) = journal.append(&entry) {
                    metrics.journal_error();
                    tracing::error!("failover journal: {e}");
                }
            }
            Observed::Takeover {
                instance,
                monitor,
                decided_ns,
            } => {
                if let Some(report) = own.upgrade() {
                    tokio::spawn(watch_aps(
                        instance,
                        monitor,
                        decided_ns,
                        monitors.clone(),
                        report,
                    ));
                }
            }
        }
    }
}

/// Polls the monitor's AP counters until they move after the takeover.
async fn watch_aps(
    instance: String,
    monitor: usize,
    decided_ns: u64,
    monitors: Arc<Mutex<Vec<Monitor>>>,
    report: UnboundedSender<Observed>,
) {
    let read = || -> Option<u64> {
        let monitors = monitors.lock().ok()?;
        monitors.get(monitor)?.ap_packets().ok()
    };
    let Some(before) = read() else { return };
    let mut ticker = tokio::time::interval(APS_BACK_POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let deadline = tokio::time::Instant::now() + APS_BACK_WAIT;
    while tokio::time::Instant::now() < deadline {
        ticker.tick().await;
        if read().is_some_and(|now| now > before) {
            let after_ms = monotonic_now_ns().saturating_sub(decided_ns) as f64 / 1e6;
            let _ = report.send(Observed::Entry(Entry::ApsBack {
                instance,
                at_unix_ms: crate::history::unix_ms(),
                after_ms,
            }));
            return;
        }
    }
    tracing::warn!(%instance, "no AP traffic seen within {APS_BACK_WAIT:?} of the takeover");
}
