//! What happened, after it happened: every transition and container switch
//! goes into the journal (and the metrics), and after each takeover the
//! first AP packet the XDP monitor sees is timed ("APs back after N ms").
//!
//! After a takeover it also starts the AP recovery (`[ap_recovery]`): at
//! once, or once the master stack is up when `[roles]` follows the instance.
//!
//! Owns: the journal writer, the APs-back watchers, when the recovery
//! starts. Must not: run on the engine thread or delay it — the engine only
//! sends into a channel.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, WeakUnboundedSender};

use crate::{
    history::{Entry, Journal},
    metrics::Metrics,
    monitor::Monitor,
};

/// How long after a takeover AP traffic is waited for.
const APS_BACK_WAIT: Duration = Duration::from_secs(120);
/// How often the watcher reads the XDP program's stamp. Not the
/// resolution: the stamp is the packet's own receive time.
const APS_BACK_POLL: Duration = Duration::from_millis(100);

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

/// The AP recovery after a takeover, and when to start it.
pub struct Recovery {
    pub recovery: super::ap_recovery::ApRecovery,
    /// `[roles]` follows the instance: the IKE daemon is in the master
    /// stack, so the hook waits until the stack's switch is done.
    pub after_containers: bool,
}

/// Runs until every sender is gone.
pub async fn run(
    mut journal: Journal,
    metrics: Arc<Metrics>,
    monitors: Arc<Mutex<Vec<Monitor>>>,
    own: WeakUnboundedSender<Observed>,
    mut events: UnboundedReceiver<Observed>,
    recovery: Option<Recovery>,
) {
    // A takeover whose recovery waits for the master stack.
    let mut recovery_pending = false;
    let start_recovery = |recovery: &Recovery| {
        if let Some(report) = own.upgrade() {
            let recovery = recovery.recovery.clone();
            tokio::spawn(async move {
                let record = recovery.recover().await;
                let instance = recovery.config.instance.clone();
                match &record.ike {
                    Some(ike) if ike.error.is_some() || ike.failed > 0 => tracing::warn!(
                        %instance,
                        expected = record.expected,
                        synced = record.synced,
                        ok = ike.ok,
                        failed = ike.failed,
                        took_ms = ike.took_ms,
                        error = ike.error.as_deref().unwrap_or(""),
                        "AP recovery: IKE hook reported failures: {}",
                        ike.failures.join("; ")
                    ),
                    Some(ike) => tracing::info!(
                        %instance,
                        expected = record.expected,
                        synced = record.synced,
                        ok = ike.ok,
                        took_ms = ike.took_ms,
                        "AP recovery: IKE initiated to {} AP(s)",
                        ike.ok
                    ),
                    None => tracing::info!(
                        %instance,
                        expected = record.expected,
                        synced = record.synced,
                        "AP recovery: no IKE hook configured"
                    ),
                }
                let _ = report.send(Observed::Entry(Entry::ApRecovery {
                    instance,
                    at_unix_ms: crate::history::unix_ms(),
                    record,
                }));
            });
        }
    };
    // Watchers hold a strong sender only while they watch, so the loop ends
    // once the engine and the switcher have hung up and no watcher is left.
    while let Some(observed) = events.recv().await {
        match observed {
            Observed::Entry(entry) => {
                if let (Some(recovery), Entry::Containers { instance, record }) =
                    (&recovery, &entry)
                {
                    // The master stack's switch is over (done, held back or
                    // failed: the hook reports what it finds either way).
                    if recovery_pending
                        && *instance == recovery.recovery.config.instance
                        && record.to == "master"
                    {
                        recovery_pending = false;
                        start_recovery(recovery);
                    }
                }
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
                if let Some(recovery) = recovery
                    .as_ref()
                    .filter(|r| r.recovery.config.instance == instance)
                {
                    if recovery.after_containers {
                        recovery_pending = true;
                    } else {
                        start_recovery(recovery);
                    }
                }
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

/// Arms the monitor's AP watch and waits for the kernel's stamp of the
/// first AP packet after the takeover.
async fn watch_aps(
    instance: String,
    monitor: usize,
    decided_ns: u64,
    monitors: Arc<Mutex<Vec<Monitor>>>,
    report: UnboundedSender<Observed>,
) {
    let with_monitor =
        |f: &dyn Fn(&mut Monitor) -> Result<Option<u64>, crate::monitor::MonitorError>| {
            let mut monitors = monitors.lock().ok()?;
            f(monitors.get_mut(monitor)?).ok()
        };
    if with_monitor(&|m| m.arm_ap_watch().map(|()| None)).is_none() {
        tracing::warn!(%instance, "cannot arm the AP watch; APs back not measured");
        return;
    }
    let mut ticker = tokio::time::interval(APS_BACK_POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let deadline = tokio::time::Instant::now() + APS_BACK_WAIT;
    while tokio::time::Instant::now() < deadline {
        ticker.tick().await;
        // Another takeover may have re-armed the watch meanwhile; any stamp
        // after our decision answers ours too.
        let stamp = with_monitor(&|m| m.ap_watch_stamp()).flatten().unwrap_or(0);
        if stamp >= decided_ns {
            let after_ms = (stamp - decided_ns) as f64 / 1e6;
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

/// How often the peer table is scanned for rogue sources.
const ROGUE_SCAN: Duration = Duration::from_secs(2);
/// A rogue source is logged at most this often.
const ROGUE_LOG_EVERY: Duration = Duration::from_secs(60);

/// Logs adverts for allow-listed VRIDs from sources not on the list, once
/// per source per minute. The XDP program already kept them from the
/// engine; this only reads its peer table, so a flood costs one scan.
/// `allow[i]` is monitor i's VRID → allowed sources (only VRIDs that have
/// an allow-list).
pub async fn log_rogues(
    monitors: Arc<Mutex<Vec<Monitor>>>,
    allow: Vec<std::collections::BTreeMap<u8, Vec<std::net::IpAddr>>>,
) {
    if allow.iter().all(|a| a.is_empty()) {
        return;
    }
    // (monitor, vrid, source) → (adverts when last logged, when).
    let mut logged: std::collections::HashMap<
        (usize, u8, std::net::IpAddr),
        (u64, tokio::time::Instant),
    > = std::collections::HashMap::new();
    let mut ticker = tokio::time::interval(ROGUE_SCAN);
    loop {
        ticker.tick().await;
        let mut rogues = Vec::new();
        if let Ok(monitors) = monitors.lock() {
            for (index, monitor) in monitors.iter().enumerate() {
                let Some(allowed) = allow.get(index) else {
                    continue;
                };
                let Ok(peers) = crate::monitor::read_peers(monitor.ebpf()) else {
                    continue;
                };
                for (key, record) in peers {
                    let source = crate::monitor::ip_addr(&key.source);
                    if allowed
                        .get(&key.vrid)
                        .is_some_and(|list| !list.contains(&source))
                    {
                        rogues.push((
                            index,
                            monitor.interface().to_string(),
                            key.vrid,
                            source,
                            record.adverts,
                        ));
                    }
                }
            }
        }
        let now = tokio::time::Instant::now();
        for (index, interface, vrid, source, adverts) in rogues {
            let entry = logged.get(&(index, vrid, source)).copied();
            let due = match entry {
                None => true,
                Some((count, at)) => adverts > count && now.duration_since(at) >= ROGUE_LOG_EVERY,
            };
            if due {
                tracing::warn!(
                    %interface,
                    vrid,
                    %source,
                    adverts,
                    "rogue adverts: {source} is not an allowed peer of VRID {vrid}; counted and ignored"
                );
                logged.insert((index, vrid, source), (adverts, now));
            }
        }
    }
}
