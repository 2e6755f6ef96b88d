//! What happened, after it happened: every transition and container switch
//! goes into the journal (and the metrics), and after each takeover each
//! expected AP is timed until it opens a session with us ("APs back").
//!
//! After a takeover it also starts the AP recovery (`[ap_recovery]`),
//! planned at the decision ([`crate::recovery::plan`]): at once, or when
//! the role switcher says the master stack is up (`StackSwitched`) when
//! `[roles]` follows the instance.
//!
//! Owns: the journal writer, the APs-back watchers, when the recovery
//! starts. Must not: run on the engine thread or delay it — the engine only
//! sends into a channel.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, WeakUnboundedSender};

use crate::{
    history::{Entry, Journal},
    metrics::Metrics,
    monitor::Monitor,
    records::Stack,
    recovery::back::{BackWatch, ExpectedAp},
};

/// How long after a takeover AP traffic is waited for.
const APS_BACK_WAIT: Duration = Duration::from_secs(120);
/// How often the watcher reads the AP table: often while the APs are
/// expected (the first seconds), then seldom. Not the resolution — each
/// AP's stamp is its packet's kernel time — but one read is a per-CPU map
/// lookup per set of the AP table (2 048 at the default `max_aps`; 8 192
/// per-slot lookups took 3.5 ms of a core here, release build), a few % of
/// a core at ten a second: fine for seconds, not for the whole 120 s.
const APS_BACK_POLL: Duration = Duration::from_millis(100);
const APS_BACK_POLL_LATER: Duration = Duration::from_secs(1);
const APS_BACK_FAST_FOR: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub enum Observed {
    Entry(Entry),
    /// The role switcher finished a switch of the instance's stack (done,
    /// held back or failed): journaled, and the master stack's starts a
    /// recovery that waits for it.
    StackSwitched {
        instance: String,
        record: crate::records::SwitchRecord,
    },
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
    last_aps_back: Arc<Mutex<Vec<crate::recovery::LastApsBack>>>,
) {
    // A takeover's recovery, planned at its decision, waiting for the
    // master stack.
    let mut recovery_pending: Option<crate::recovery::plan::Plan> = None;
    // Per instance, the running APs-back watch of its latest takeover.
    let mut watchers: HashMap<String, tokio::sync::oneshot::Sender<()>> = HashMap::new();
    // The running recovery's stop: sent when the instance leaves MASTER.
    let mut recovery_stop: Option<tokio::sync::watch::Sender<bool>> = None;
    let start_recovery = |recovery: &Recovery,
                          plan: crate::recovery::plan::Plan,
                          stop: &mut Option<tokio::sync::watch::Sender<bool>>| {
        if let Some(report) = own.upgrade() {
            let recovery = recovery.recovery.clone();
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            *stop = Some(stop_tx);
            tokio::spawn(async move {
                let record = recovery.execute(plan, stop_rx).await;
                let instance = recovery.config.instance.clone();
                match &record.ike {
                    Some(ike) if ike.error.is_some() || ike.failed > 0 => tracing::warn!(
                        %instance,
                        expected = record.expected,
                        synced = record.synced,
                        ok = ike.ok,
                        failed = ike.failed,
                        timed_out = ike.timed_out,
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
                    at_unix_ms: crate::clock::unix_ms(),
                    record,
                }));
            });
        }
    };
    // Watchers hold a strong sender only while they watch, so the loop ends
    // once the engine and the switcher have hung up and no watcher is left.
    while let Some(observed) = events.recv().await {
        let entry = match observed {
            Observed::StackSwitched { instance, record } => {
                if let Some(recovery) = &recovery {
                    // The master stack's switch is over (done, held back or
                    // failed: the hook reports what it finds either way).
                    if instance == recovery.recovery.config.instance
                        && record.to == Stack::Master
                    {
                        if let Some(plan) = recovery_pending.take() {
                            start_recovery(recovery, plan, &mut recovery_stop);
                        }
                    }
                }
                Some(Entry::Containers { instance, record })
            }
            Observed::Entry(entry) => {
                // A master that steps down (a takeover that did not hold,
                // a switchover, FAULT) stops its recovery: the hook would
                // otherwise move the APs' SAs to a node that is no longer
                // master, and a pending one must not start later.
                if let (Some(recovery), Entry::Transition { instance, record }) =
                    (&recovery, &entry)
                {
                    if *instance == recovery.recovery.config.instance
                        && record.from == crate::records::State::Master
                        && record.to != crate::records::State::Master
                    {
                        recovery_pending = None;
                        if let Some(stop) = recovery_stop.take() {
                            if stop.send(true).is_ok() {
                                tracing::info!(
                                    %instance,
                                    "AP recovery stopped: the instance left MASTER"
                                );
                            }
                        }
                    }
                }
                Some(entry)
            }
            Observed::Takeover {
                instance,
                monitor,
                decided_ns,
            } => {
                let ours = recovery
                    .as_ref()
                    .filter(|r| r.recovery.config.instance == instance);
                // Whom to reach and to expect: the APs the old master had
                // (synced) and those we saw ourselves, as of the decision.
                let expected: Vec<ExpectedAp> = match ours {
                    Some(recovery) => {
                        let plan = recovery.recovery.plan();
                        let expected = plan.expected.clone();
                        if recovery.after_containers {
                            recovery_pending = Some(plan);
                        } else {
                            start_recovery(recovery, plan, &mut recovery_stop);
                        }
                        expected
                    }
                    None => super::ap_recovery::active_aps(&monitors, monitor, None)
                        .iter()
                        .map(ExpectedAp::from_synced)
                        .collect(),
                };
                // One journal entry per takeover: an older watch of this
                // instance ends now, with what it has.
                if let Some(older) = watchers.remove(&instance) {
                    let _ = older.send(());
                }
                if let Some(report) = own.upgrade() {
                    let (supersede, superseded) = tokio::sync::oneshot::channel();
                    watchers.insert(instance.clone(), supersede);
                    tokio::spawn(watch_aps(
                        instance,
                        monitor,
                        decided_ns,
                        expected,
                        monitors.clone(),
                        report,
                        superseded,
                    ));
                }
                None
            }
        };
        if let Some(entry) = entry {
            metrics.observe(&entry);
            if let Entry::ApsBack {
                instance,
                at_unix_ms,
                after_ms,
                per_ap: Some(detail),
            } = &entry
            {
                if let Ok(mut last) = last_aps_back.lock() {
                    last.retain(|l| &l.instance != instance);
                    last.push(crate::recovery::LastApsBack {
                        instance: instance.clone(),
                        at_unix_ms: *at_unix_ms,
                        after_ms: *after_ms,
                        detail: detail.clone(),
                    });
                }
                tracing::info!(
                    %instance,
                    after_ms,
                    expected = detail.expected,
                    back = detail.back,
                    p50_ms = detail.percentile_ms(50.0).unwrap_or(f64::NAN),
                    p99_ms = detail.percentile_ms(99.0).unwrap_or(f64::NAN),
                    "APs back: {} of {} after {after_ms:.1} ms",
                    detail.back,
                    detail.expected
                );
            }
            // The journal counts what it could not write (status and
            // metrics read it) and logs when it stops and starts working
            // again, not once per entry.
            let _ = journal.append(&entry);
        }
    }
}

/// Watches one takeover until every expected AP has every session back (the
/// XDP program stamps each AP address and IKE port's IKE_AUTH, and each MQTT
/// connection's SYN; [`BackWatch`] decides), [`APS_BACK_WAIT`] passes, or
/// the next takeover of the instance cuts it short; then writes its one
/// journal entry. With no AP expected (none known before), the first AP
/// that opens a session ends it. Each poll costs one IKE-session-table read
/// (a lookup per AP that opened an IKE session) and one
/// MQTT-table read (a lookup per connection held: an estimated ~30 ms at 15 000
/// connections), every 100 ms for 3 s, then every second.
async fn watch_aps(
    instance: String,
    monitor: usize,
    decided_ns: u64,
    expected: Vec<ExpectedAp>,
    monitors: Arc<Mutex<Vec<Monitor>>>,
    report: UnboundedSender<Observed>,
    mut superseded: tokio::sync::oneshot::Receiver<()>,
) {
    let expected_count = expected.len();
    let mut watch = BackWatch::new(decided_ns, expected);
    let started = tokio::time::Instant::now();
    let deadline = started + APS_BACK_WAIT;
    let mut cut_short = false;
    loop {
        let poll = if started.elapsed() < APS_BACK_FAST_FOR {
            APS_BACK_POLL
        } else {
            APS_BACK_POLL_LATER
        };
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = &mut superseded => cut_short = true,
        }
        let (ike_sessions, connections) = match monitors.lock() {
            Ok(monitors) => match monitors.get(monitor) {
                Some(m) => (
                    crate::monitor::read_ike_sessions(m.ebpf()).unwrap_or_default(),
                    crate::monitor::read_mqtt(m.ebpf()).unwrap_or_default(),
                ),
                None => Default::default(),
            },
            Err(_) => Default::default(),
        };
        for (key, started_ns) in ike_sessions {
            watch.ike_session(IpAddr::from(key.ap), key.ap_port, started_ns);
        }
        for (key, connection) in connections {
            watch.mqtt_opened(
                IpAddr::from(key.ap),
                key.ap_port,
                key.broker_port,
                connection.opened_ns,
            );
        }
        if watch.done() || cut_short || tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    let detail = watch.detail(cut_short);
    if !detail.missing.is_empty() {
        tracing::warn!(
            %instance,
            missing = expected_count - detail.back,
            "{} of {} expected AP(s) did not come back whole: {}",
            expected_count - detail.back,
            expected_count,
            detail.missing.join(", ")
        );
    }
    let after_ms = watch.last_back_ms().unwrap_or_else(|| {
        (crate::clock::monotonic_now_ns().saturating_sub(decided_ns)) as f64 / 1e6
    });
    let _ = report.send(Observed::Entry(Entry::ApsBack {
        instance,
        at_unix_ms: crate::clock::unix_ms(),
        after_ms,
        per_ap: Some(detail),
    }));
}

/// How often the peer table is scanned for rogue sources.
const ROGUE_SCAN: Duration = Duration::from_secs(2);
/// A rogue source is logged at most this often.
const ROGUE_LOG_EVERY: Duration = Duration::from_secs(60);
/// Sources named one line each per [`ROGUE_LOG_EVERY`]; past these (spoofed
/// sources: 5 188 lines in a minute before) one summary line per period.
const ROGUE_LINES_PER_PERIOD: usize = 4;

/// Logs adverts for allow-listed VRIDs from sources not on the list, once
/// per source per minute, at most [`ROGUE_LINES_PER_PERIOD`] sources a
/// minute, and the rest in a summary line (at once, then once a minute). The XDP program already kept them
/// from the engine; this only reads its peer table, so a flood costs one
/// scan.
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
    let mut period = RoguePeriod::starting(tokio::time::Instant::now());
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
                    let source = IpAddr::from(key.source);
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
        if now.duration_since(period.started) >= ROGUE_LOG_EVERY {
            period.started = now;
            period.named = 0;
        }
        // Forget sources the kernel's peer table no longer holds (it is an
        // LRU): spoofed sources must not grow this map.
        let present: std::collections::HashSet<_> =
            rogues.iter().map(|r| (r.0, r.2, r.3)).collect();
        logged.retain(|key, _| present.contains(key));
        for (index, interface, vrid, source, adverts) in rogues {
            let entry = logged.get(&(index, vrid, source)).copied();
            let due = match entry {
                None => true,
                Some((count, at)) => adverts > count && now.duration_since(at) >= ROGUE_LOG_EVERY,
            };
            if !due {
                continue;
            }
            if period.named < ROGUE_LINES_PER_PERIOD {
                period.named += 1;
                tracing::warn!(
                    %interface,
                    vrid,
                    %source,
                    adverts,
                    "rogue adverts: {source} is not an allowed peer of VRID {vrid}; counted and ignored"
                );
            } else {
                period.unnamed_sources += 1;
            }
            logged.insert((index, vrid, source), (adverts, now));
        }
        // The rest in one line: at once, then at most once a period.
        let summary_due = period
            .last_summary
            .is_none_or(|at| now.duration_since(at) >= ROGUE_LOG_EVERY);
        if period.unnamed_sources > 0 && summary_due {
            tracing::warn!(
                sources = period.unnamed_sources,
                "rogue adverts: {} more source(s) not allowed (spoofed?); counted and ignored, not named (at most {ROGUE_LINES_PER_PERIOD} a minute; `wimark-ha stats` counts them)",
                period.unnamed_sources
            );
            period.unnamed_sources = 0;
            period.last_summary = Some(now);
        }
    }
}

/// What the rogue log said in the current period.
struct RoguePeriod {
    started: tokio::time::Instant,
    /// Sources named in a line of their own this period.
    named: usize,
    /// Sources not named since the last summary line.
    unnamed_sources: u64,
    last_summary: Option<tokio::time::Instant>,
}

impl RoguePeriod {
    fn starting(now: tokio::time::Instant) -> Self {
        Self {
            started: now,
            named: 0,
            unnamed_sources: 0,
            last_summary: None,
        }
    }
}

/// How often the AP table's eviction counter is read (one per-CPU counter
/// lookup per monitor: cheap).
const EVICTION_SCAN: Duration = Duration::from_secs(10);
/// At most one WARN per monitor this often while evictions happen: a table
/// under pressure evicts all the time, and the journal must not fill with it.
const EVICTION_LOG_EVERY: Duration = Duration::from_secs(60);

/// When to say that the AP table evicts: the first eviction at once, then
/// a summary of the evictions since the last line, at most once per
/// [`EVICTION_LOG_EVERY`]; nothing while none happen. Pure, so it is
/// tested without a clock.
#[derive(Debug, Default)]
pub struct EvictionLog {
    /// Per monitor: the counter as last read, and when we last warned.
    seen: Vec<(u64, Option<tokio::time::Instant>)>,
    /// Per monitor: evictions counted since the last warning.
    pending: Vec<u64>,
}

impl EvictionLog {
    /// The counter of `monitor` read at `now`: the evictions to report now,
    /// if a line is due.
    pub fn observe(&mut self, monitor: usize, evicted: u64, now: tokio::time::Instant) -> Option<u64> {
        if self.seen.len() <= monitor {
            self.seen.resize(monitor + 1, (0, None));
            self.pending.resize(monitor + 1, 0);
        }
        let (last, warned) = &mut self.seen[monitor];
        // A counter that went backwards is a new program: count from it.
        let new = evicted.checked_sub(*last).unwrap_or(evicted);
        *last = evicted;
        self.pending[monitor] += new;
        if self.pending[monitor] == 0 {
            return None;
        }
        if warned.is_some_and(|at| now.duration_since(at) < EVICTION_LOG_EVERY) {
            return None;
        }
        *warned = Some(now);
        Some(std::mem::take(&mut self.pending[monitor]))
    }
}

/// WARNs while the XDP AP table evicts (more APs than it holds, or sets
/// full): an evicted AP is missing from the sync, so the standby will not
/// reach out to it after a takeover.
pub async fn log_evictions(monitors: Arc<Mutex<Vec<Monitor>>>) {
    let mut log = EvictionLog::default();
    let mut ticker = tokio::time::interval(EVICTION_SCAN);
    loop {
        ticker.tick().await;
        let now = tokio::time::Instant::now();
        let Ok(monitors) = monitors.lock() else {
            return;
        };
        for (index, monitor) in monitors.iter().enumerate() {
            let Ok(counters) = crate::monitor::read_counters(monitor.ebpf()) else {
                continue;
            };
            let evicted = counters[wimark_ha_common::abi::Counter::ApEvicted as usize].packets;
            if let Some(new) = log.observe(index, evicted, now) {
                let known = crate::monitor::read_aps(monitor.ebpf()).map_or(0, |aps| aps.len());
                tracing::warn!(
                    interface = monitor.interface(),
                    evicted = new,
                    evicted_total = evicted,
                    known_aps = known,
                    capacity = crate::monitor::ap_table_capacity(monitor.ebpf()).unwrap_or(0),
                    "AP table: {new} AP(s) evicted since the last report; evicted APs are missing from the AP sync and get no recovery after a takeover"
                );
            }
        }
    }
}

#[cfg(test)]
mod eviction_tests {
    use super::*;

    #[test]
    fn evictions_are_said_at_once_then_summed_at_most_once_a_minute() {
        let start = tokio::time::Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut log = EvictionLog::default();
        assert_eq!(log.observe(0, 0, at(0)), None, "nothing evicted, nothing said");
        assert_eq!(log.observe(0, 3, at(10)), Some(3), "the first at once");
        assert_eq!(log.observe(0, 10, at(20)), None);
        assert_eq!(log.observe(0, 12, at(60)), None);
        assert_eq!(log.observe(0, 15, at(70)), Some(12), "a summary a minute later");
        assert_eq!(log.observe(0, 15, at(200)), None, "quiet when it stops");
        // Monitors are apart; a restarted program's counter starts over.
        assert_eq!(log.observe(1, 4, at(200)), Some(4));
        assert_eq!(log.observe(1, 2, at(300)), Some(2));
    }
}
