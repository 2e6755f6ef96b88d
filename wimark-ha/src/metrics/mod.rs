//! The Prometheus endpoint (`[metrics] listen`, off when unset): keepalived
//! exporters' names where they fit, with our prefix, plus failover duration
//! histograms, XDP traffic per class and interface, active APs and the age
//! of the last advert.
//!
//! Owns: metric names, the histograms fed by the observer, and the HTTP
//! listener. Must not: hold state of its own beyond those histograms — every
//! other figure is read from the daemon's status at scrape time, so the
//! endpoint and `wimark-ha status` can never disagree.

use std::{collections::HashMap, sync::Mutex};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::{exponential_buckets, Histogram},
        MetricType,
    },
    registry::Registry,
};

mod collector;
pub mod server;

use collector::StatusCollector;
pub use server::serve;

use crate::{
    history::Entry,
    monitor::{InvalidCounts, TrafficTotals},
    records::{DaemonStatus, IgnoredReason, Snapshot, Stack, State},
};

type Labels = Vec<(String, String)>;

fn instance_labels(instance: &str) -> Labels {
    vec![("iname".to_string(), instance.to_string())]
}

/// Detection and the VIP: 0.1 ms .. ~3.3 s (the RFC timer at 1 s adverts
/// is ~3.1 s).
fn fast_bounds() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 16)
}

/// A container switch, a whole failover, APs back: 10 ms .. ~164 s (a stop
/// timeout, a database starting and the settle check take seconds to tens
/// of seconds; the APs-back watch gives up at 120 s).
fn slow_bounds() -> impl Iterator<Item = f64> {
    exponential_buckets(0.01, 2.0, 15)
}

fn fast_histogram() -> Histogram {
    Histogram::new(fast_bounds())
}

fn slow_histogram() -> Histogram {
    Histogram::new(slow_bounds())
}

/// The daemon's metrics.
pub struct Metrics {
    registry: Registry,
    detection: Family<Labels, Histogram>,
    vip: Family<Labels, Histogram>,
    containers: Family<Labels, Histogram>,
    total: Family<Labels, Histogram>,
    aps_back: Family<Labels, Histogram>,
    /// Per AP: from the takeover to its session with the new master.
    ap_back: Family<Labels, Histogram>,
    become_master: Family<Labels, Counter>,
    /// Per instance and session kind (`ike`, `mqtt`): sessions the APs had
    /// before a takeover, and those back after it.
    ap_sessions_expected: Family<Labels, Counter>,
    ap_sessions_back: Family<Labels, Counter>,
    false_takeovers: Family<Labels, Counter>,
    release_master: Family<Labels, Counter>,
    connections_refused: Counter,
    /// Per instance: the last takeover (unix ms, detection + VIP seconds),
    /// to add the container switch that follows it into `total`.
    last_takeover: Mutex<HashMap<String, (u64, f64)>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// `status` gives the daemon's status at scrape time.
    pub fn new(status: impl Fn() -> DaemonStatus + Send + Sync + 'static) -> Self {
        let mut registry = Registry::with_prefix("wimark_ha");
        let fast =
            || Family::<Labels, Histogram>::new_with_constructor(fast_histogram as fn() -> Histogram);
        let slow =
            || Family::<Labels, Histogram>::new_with_constructor(slow_histogram as fn() -> Histogram);
        let metrics = Self {
            detection: fast(),
            vip: fast(),
            containers: slow(),
            total: slow(),
            aps_back: slow(),
            ap_back: slow(),
            become_master: Family::default(),
            ap_sessions_expected: Family::default(),
            ap_sessions_back: Family::default(),
            false_takeovers: Family::default(),
            release_master: Family::default(),
            connections_refused: Counter::default(),
            last_takeover: Mutex::new(HashMap::new()),
            registry: Registry::default(),
        };
        registry.register(
            "failover_detection_seconds",
            "Takeovers: silence from the last advert heard to the decision",
            metrics.detection.clone(),
        );
        registry.register(
            "failover_vip_seconds",
            "Takeovers: from the decision to the VIPs on the interface",
            metrics.vip.clone(),
        );
        registry.register(
            "failover_containers_seconds",
            "Container switches to the master stack, hooks to settled",
            metrics.containers.clone(),
        );
        registry.register(
            "failover_total_seconds",
            "Takeovers: from the last advert heard to the master stack settled",
            metrics.total.clone(),
        );
        registry.register(
            "failover_aps_back_seconds",
            "Takeovers: from the decision until every expected AP opened a session with the new master",
            metrics.aps_back.clone(),
        );
        registry.register(
            "failover_ap_back_seconds",
            "Per AP and takeover: from the decision to the AP's session with the new master (IKE_AUTH or MQTT SYN)",
            metrics.ap_back.clone(),
        );
        registry.register(
            "become_master",
            "Transitions to MASTER (keepalived exporter's name)",
            metrics.become_master.clone(),
        );
        registry.register(
            "ap_sessions_expected",
            "AP sessions (kind: ike, mqtt) open before a takeover, summed over takeovers",
            metrics.ap_sessions_expected.clone(),
        );
        registry.register(
            "ap_sessions_back",
            "AP sessions (kind: ike, mqtt) reopened with the new master after a takeover, summed over takeovers",
            metrics.ap_sessions_back.clone(),
        );
        registry.register(
            "false_takeovers",
            "Fast takeovers whose master spoke again within Master_Down_Interval: late, not dead (the detection window was too tight)",
            metrics.false_takeovers.clone(),
        );
        registry.register(
            "release_master",
            "Transitions out of MASTER (keepalived exporter's name)",
            metrics.release_master.clone(),
        );
        registry.register(
            "metrics_connections_refused",
            "Metrics connections closed at once: the endpoint's connection cap was reached",
            metrics.connections_refused.clone(),
        );
        registry.register_collector(Box::new(StatusCollector(Box::new(status))));
        Self {
            registry,
            ..metrics
        }
    }

    /// Feeds the histograms and transition counters.
    pub fn observe(&self, entry: &Entry) {
        let labels = instance_labels(entry.instance());
        match entry {
            Entry::Transition { record, .. } => {
                if record.to == State::Master {
                    self.become_master.get_or_create(&labels).inc();
                    let detection = record.silence.map(|d| d.as_secs_f64());
                    let vip = record.vip_added.map(|d| d.as_secs_f64());
                    if let Some(seconds) = detection {
                        self.detection.get_or_create(&labels).observe(seconds);
                    }
                    if let Some(seconds) = vip {
                        self.vip.get_or_create(&labels).observe(seconds);
                    }
                    if let Ok(mut last) = self.last_takeover.lock() {
                        last.insert(
                            entry.instance().to_string(),
                            (
                                record.at_unix_ms,
                                detection.unwrap_or(0.0) + vip.unwrap_or(0.0),
                            ),
                        );
                    }
                } else if record.from == State::Master {
                    self.release_master.get_or_create(&labels).inc();
                }
            }
            Entry::Containers { record, .. } if record.to == Stack::Master && !record.cancelled => {
                let seconds = record.total.as_secs_f64();
                self.containers.get_or_create(&labels).observe(seconds);
                let takeover = self
                    .last_takeover
                    .lock()
                    .ok()
                    .and_then(|mut last| last.remove(entry.instance()));
                if let Some((at_unix_ms, fast_path)) = takeover {
                    // The switch starts once the fast path is done.
                    let waited = record.at_unix_ms.saturating_sub(at_unix_ms) as f64 / 1e3;
                    self.total
                        .get_or_create(&labels)
                        .observe(fast_path + waited + seconds);
                }
            }
            Entry::Containers { .. } => {}
            Entry::ApsBack {
                after_ms, per_ap, ..
            } => {
                // The failover is over when every expected AP is back.
                let all_back = per_ap
                    .as_ref()
                    .is_none_or(|d| d.back >= d.expected && d.back > 0);
                if all_back {
                    self.aps_back.get_or_create(&labels).observe(after_ms / 1e3);
                }
                for ms in per_ap.iter().flat_map(|d| d.back_ms.iter()) {
                    self.ap_back.get_or_create(&labels).observe(ms / 1e3);
                }
                if let Some(sessions) = per_ap.as_ref().and_then(|d| d.sessions) {
                    for (kind, expected, back) in [
                        ("ike", sessions.ike_expected, sessions.ike_back),
                        ("mqtt", sessions.mqtt_expected, sessions.mqtt_back),
                    ] {
                        let mut labels = labels.clone();
                        labels.push(("kind".to_string(), kind.to_string()));
                        self.ap_sessions_expected
                            .get_or_create(&labels)
                            .inc_by(expected as u64);
                        self.ap_sessions_back
                            .get_or_create(&labels)
                            .inc_by(back as u64);
                    }
                }
            }
            // Not exported yet: the per-AP recovery histogram comes with
            // the per-AP "back" detection (issue 11, item 1).
            Entry::ApRecovery { .. } => {}
            Entry::FalseTakeover { .. } => {
                self.false_takeovers.get_or_create(&labels).inc();
            }
            // Trackers are gauges read from the status at scrape time.
            Entry::Tracker { .. } => {}
        }
    }

    /// A metrics connection closed at once: the cap was reached.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// The exposition text (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!("encoding metrics: {e}");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{InstanceStatus, TransitionRecord};

    fn status() -> DaemonStatus {
        DaemonStatus {
            instances: vec![InstanceStatus {
                name: "WIM1".to_string(),
                interface: "eth1".to_string(),
                vrid: 67,
                version: 3,
                state: State::Master,
                priority: 200,
                advert_interval_ms: 10,
                primary_address: "10.77.0.1".parse().expect("ip"),
                master: None,
                last_advert_ms_ago: Some(3),
                last_advert_sent_ms_ago: Some(1),
                adverts_sent: 42,
                adverts_received: 7,
                priority_zero_sent: 1,
                priority_zero_received: 0,
                ignored: [(IgnoredReason::Auth, 5)].into_iter().collect(),
                virtual_ips: vec![],
                holds_virtual_ips: true,
                vips_restored: 2,
                fault: None,
                history: vec![],
                heartbeats: vec![],
                handed_over: false,
                detection: Some(crate::vrrp::WindowStatus {
                    multiplier: "auto".to_string(),
                    window: Some(std::time::Duration::from_micros(4200)),
                    basis: Some(crate::vrrp::WindowBasis::TailEstimate),
                    armed: true,
                    gaps: 1000,
                    p50: Some(std::time::Duration::from_micros(1000)),
                    p99: Some(std::time::Duration::from_micros(1250)),
                    p999: Some(std::time::Duration::from_micros(2000)),
                    max: Some(std::time::Duration::from_micros(2500)),
                    false_takeovers: 0,
                }),
                false_takeovers: 0,
                advert_sender_cpus: vec![0, 1],
                send_gaps: Some(crate::records::SendGapStatus {
                    gaps: 9000,
                    late: 3,
                    longest_us: 4500,
                }),
                effective_priority: Some(150),
                trackers: vec![crate::records::TrackerStatus {
                    name: "chk_mongo".to_string(),
                    kind: crate::records::TrackerKind::Script,
                    target: "/usr/local/bin/chk_mongo".to_string(),
                    health: crate::records::Health::Failed,
                    weight: -50,
                    weight_in_force: -50,
                    fault: false,
                    detail: "exit status 1".to_string(),
                    degraded: None,
                }],
            }],
            monitors: vec![Snapshot {
                interface: "eth1".to_string(),
                vrrp: crate::monitor::VrrpStats {
                    valid: 9,
                    valid_bytes: 360,
                    invalid: InvalidCounts {
                        ttl: 2,
                        checksum: 1,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                ap: crate::monitor::ApStats {
                    ike: TrafficTotals {
                        packets: 4,
                        bytes: 400,
                    },
                    active_aps: 3,
                    known_aps: 5,
                    evicted: 7,
                    capacity: 16384,
                    ..Default::default()
                },
                ..Default::default()
            }],
            roles: None,
            started_unix_ms: 0,
            ap_sync: None,
            aps_back: Vec::new(),
            journal: crate::records::JournalStatus {
                degraded: Some("read-only file system".to_string()),
                lost: 2,
                ..Default::default()
            },
            witness: Some(crate::records::WitnessStatus {
                key: "/wimark-ha/WIM1".to_string(),
                reachable: true,
                holds_lease: true,
                ..Default::default()
            }),
        }
    }

    /// Each histogram's buckets cover what it measures: sub-millisecond
    /// detection, and container switches and AP recovery of tens of seconds
    /// (every figure stopped at ~3.3 s before, so those all fell in +Inf).
    #[test]
    fn histograms_cover_the_range_of_what_they_measure() {
        let fast: Vec<f64> = fast_bounds().collect();
        let slow: Vec<f64> = slow_bounds().collect();
        assert!(fast[0] <= 0.0001 && *fast.last().expect("buckets") >= 3.0, "{fast:?}");
        assert!(slow[0] <= 0.01, "{slow:?}");
        // The APs-back watch's limit (APS_BACK_WAIT, daemon/observer.rs).
        let aps_back_wait = 120.0;
        assert!(
            *slow.last().expect("buckets") >= aps_back_wait,
            "the APs-back watch lasts {aps_back_wait} s: {slow:?}"
        );
        // A 45 s container switch lands in a finite bucket.
        assert!(slow.iter().any(|bound| (45.0..100.0).contains(bound)), "{slow:?}");
    }

    #[test]
    fn status_and_takeovers_become_metrics() {
        let metrics = Metrics::new(status);
        metrics.observe(&Entry::Transition {
            instance: "WIM1".to_string(),
            record: TransitionRecord {
                at_unix_ms: 1000,
                from: State::Backup,
                to: State::Master,
                reason: crate::records::Reason::FastDetect,
                silence: Some(std::time::Duration::from_micros(3000)),
                vip_added: Some(std::time::Duration::from_micros(50)),
                garp_sent: Some(std::time::Duration::from_micros(90)),
                cause: None,
            },
        });
        metrics.observe(&Entry::Containers {
            instance: "WIM1".to_string(),
            record: crate::records::SwitchRecord {
                at_unix_ms: 1001,
                to: Stack::Master,
                total: std::time::Duration::from_millis(500),
                ..Default::default()
            },
        });
        metrics.observe(&Entry::FalseTakeover {
            instance: "WIM1".to_string(),
            at_unix_ms: 1002,
            peer: "10.77.0.2".parse().expect("ip"),
            gap: Some(std::time::Duration::from_micros(5000)),
            window: Some(std::time::Duration::from_micros(3000)),
            window_after: Some(std::time::Duration::from_micros(7250)),
        });
        let text = metrics.encode();
        for expected in [
            "wimark_ha_false_takeovers_total{iname=\"WIM1\"} 1",
            "wimark_ha_advert_send_gap_longest_seconds{iname=\"WIM1\",intf=\"eth1\",vrid=\"67\"} 0.0045",
            "wimark_ha_advert_late_turns_total{iname=\"WIM1\",intf=\"eth1\",vrid=\"67\"} 3",
            "wimark_ha_detection_window_seconds{iname=\"WIM1\",intf=\"eth1\",vrid=\"67\",basis=\"tail_estimate\",armed=\"true\"} 0.0042",
            "wimark_ha_advert_gap_seconds{iname=\"WIM1\",intf=\"eth1\",vrid=\"67\",quantile=\"0.99\"} 0.00125",
            "wimark_ha_vrrp_state{iname=\"WIM1\",intf=\"eth1\",vrid=\"67\"} 2",
            "wimark_ha_effective_priority{iname=\"WIM1\",intf=\"eth1\",vrid=\"67\"} 150",
            "wimark_ha_tracker_healthy{iname=\"WIM1\",intf=\"eth1\",vrid=\"67\",tracker=\"chk_mongo\",kind=\"script\"} 0",
            "wimark_ha_tracker_weight_in_force{iname=\"WIM1\",intf=\"eth1\",vrid=\"67\",tracker=\"chk_mongo\",kind=\"script\"} -50",
            "wimark_ha_tracker_fault{iname=\"WIM1\",intf=\"eth1\",vrid=\"67\",tracker=\"chk_mongo\",kind=\"script\"} 0",
            "wimark_ha_advertisements_sent_total{iname=\"WIM1\",intf=\"eth1\",vrid=\"67\"} 42",
            "wimark_ha_authentication_failure_total{iname=\"WIM1\",intf=\"eth1\",vrid=\"67\"} 5",
            "wimark_ha_priority_zero_sent_total{iname=\"WIM1\",intf=\"eth1\",vrid=\"67\"} 1",
            "wimark_ha_vip_restored_total{iname=\"WIM1\",intf=\"eth1\",vrid=\"67\"} 2",
            "wimark_ha_ip_ttl_errors_total{interface=\"eth1\"} 2",
            "wimark_ha_xdp_packets_total{interface=\"eth1\",class=\"ike\"} 4",
            "wimark_ha_active_aps{interface=\"eth1\"} 3",
            "wimark_ha_ap_table_entries{interface=\"eth1\"} 5",
            "wimark_ha_ap_table_capacity{interface=\"eth1\"} 16384",
            "wimark_ha_ap_table_evictions_total{interface=\"eth1\"} 7",
            "wimark_ha_journal_degraded 1",
            "wimark_ha_witness_reachable{key=\"/wimark-ha/WIM1\"} 1",
            "wimark_ha_witness_holds_lease{key=\"/wimark-ha/WIM1\"} 1",
            "wimark_ha_witness_holds_key{key=\"/wimark-ha/WIM1\"} 0",
            "wimark_ha_journal_errors_total 2",
            "wimark_ha_become_master_total{iname=\"WIM1\"} 1",
            "wimark_ha_failover_detection_seconds_count{iname=\"WIM1\"} 1",
            "wimark_ha_failover_detection_seconds_sum{iname=\"WIM1\"} 0.003",
            "wimark_ha_failover_total_seconds_count{iname=\"WIM1\"} 1",
        ] {
            assert!(text.contains(expected), "`{expected}` missing in:\n{text}");
        }
        // detection 3 ms + VIP 0.05 ms + 1 ms wait + 500 ms containers.
        assert!(
            text.contains("wimark_ha_failover_total_seconds_sum{iname=\"WIM1\"} 0.50405"),
            "{text}"
        );
    }
}
