//! What `status` shows of the engine: a snapshot built from the machines
//! and counters, published into the shared status.
//!
//! Owns: that snapshot. Must not: change engine state.

use super::*;

/// Failed fast-advert sends are reported at most this often, summed.
const SEND_FAILURE_REPORT: Duration = Duration::from_secs(1);

impl Engine {
    /// The senders' failed sends since the last report, as one WARN line per
    /// instance at most every [`SEND_FAILURE_REPORT`].
    pub(super) fn report_send_failures(&mut self, t: Timestamp) {
        for instance in &mut self.instances {
            let failed = instance
                .stream_counters
                .failed
                .load(std::sync::atomic::Ordering::Relaxed);
            let (reported, last) = instance.stream_failures_reported;
            if failed == reported || last.is_some_and(|l| t.saturating_since(l) < SEND_FAILURE_REPORT) {
                continue;
            }
            let errno = instance
                .stream_counters
                .last_errno
                .load(std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                instance = %instance.config.name,
                failed = failed - reported,
                "fast adverts failed to send since the last report (latest: {})",
                io::Error::from_raw_os_error(errno)
            );
            instance.stream_failures_reported = (failed, Some(t));
        }
    }

    /// Publishes, waiting for the status lock: for the end of a run, where
    /// a wait costs nothing.
    pub(super) fn publish(&self, t: Timestamp) {
        let instances = self.instance_statuses(t);
        if let Ok(mut status) = self.status.lock() {
            status.instances = instances;
        }
    }

    /// Publishes unless a reader holds the status lock; false then, and
    /// the caller tries again on its next wake-up. The readers (`status`,
    /// the metrics endpoint, AP sync) run at normal priority: waiting for
    /// one that the scheduler preempted would hand a saturated host's
    /// delays to this realtime thread, and through the senders' lease to
    /// every fast advert.
    pub(super) fn try_publish(&self, t: Timestamp) -> bool {
        let instances = self.instance_statuses(t);
        match self.status.try_lock() {
            Ok(mut status) => {
                status.instances = instances;
                true
            }
            Err(std::sync::TryLockError::Poisoned(poisoned)) => {
                poisoned.into_inner().instances = instances;
                true
            }
            Err(std::sync::TryLockError::WouldBlock) => false,
        }
    }

    fn instance_statuses(&self, t: Timestamp) -> Vec<InstanceStatus> {
        self.alive
            .store(t.0 / 1_000_000, std::sync::atomic::Ordering::Relaxed);
        self.instances
            .iter()
            .map(|i| InstanceStatus {
                name: i.config.name.clone(),
                interface: i.config.interface.clone(),
                vrid: i.config.vrid,
                version: i.config.version.number(),
                state: i.machine.state(),
                priority: i.config.priority,
                advert_interval_ms: i.config.advert_interval.as_millis() as u64,
                primary_address: i.primary,
                master: i.machine.master(),
                last_advert_ms_ago: i
                    .machine
                    .last_advert_at()
                    .map(|a| t.saturating_since(a).as_millis() as u64),
                last_advert_sent_ms_ago: {
                    // Ours: the engine's own sends or its senders' stream.
                    let streamed = i
                        .stream_counters
                        .last_sent_ns
                        .load(std::sync::atomic::Ordering::Relaxed);
                    let streamed = (streamed > 0).then_some(Timestamp(streamed));
                    i.last_advert_sent_at
                        .max(streamed)
                        .map(|a| t.saturating_since(a).as_millis() as u64)
                },
                adverts_sent: i.adverts_sent
                    + i.stream_counters
                        .sent
                        .load(std::sync::atomic::Ordering::Relaxed),
                adverts_received: i.adverts_received,
                priority_zero_sent: i.priority_zero_sent,
                priority_zero_received: i.priority_zero_received,
                ignored: i.ignored,
                virtual_ips: i.config.virtual_ips.iter().map(|v| v.to_string()).collect(),
                // Never a VIP the kernel does not hold: one someone else
                // removed is not held until it is back.
                holds_virtual_ips: i.holds_vips && i.vips_missing.is_empty(),
                vips_restored: i.vips_restored,
                fault: i.fault.clone(),
                history: i.history.iter().cloned().collect(),
                heartbeats: i
                    .heartbeats
                    .iter()
                    .map(|h| HeartbeatStatus {
                        interface: h.interface.name.clone(),
                        peer: h.peer,
                        link_up: h.link_up,
                        adverts_received: h.adverts_received,
                        last_advert_ms_ago: h
                            .last_advert_at
                            .map(|a| t.saturating_since(a).as_millis() as u64),
                    })
                    .collect(),
                handed_over: i.machine.handed_over(),
                detection: i.machine.detection(),
                false_takeovers: i.false_takeovers,
                advert_sender_cpus: match (&self.senders, i.config.fast_detect) {
                    (Some(senders), Some(_)) => senders.cpus().to_vec(),
                    _ => Vec::new(),
                },
                send_gaps: {
                    use std::sync::atomic::Ordering::Relaxed;
                    let c = &i.stream_counters;
                    let gaps = c.turn_gaps.load(Relaxed);
                    (gaps > 0).then(|| SendGapStatus {
                        gaps,
                        late: c.late_turns.load(Relaxed),
                        longest_us: c.longest_turn_gap_ns.load(Relaxed) / 1000,
                    })
                },
                effective_priority: Some(i.machine.priority()),
                trackers: i.trackers.iter().map(|t| t.status()).collect(),
            })
            .collect()
    }
}
