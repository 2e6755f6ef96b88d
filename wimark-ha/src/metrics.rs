//! The Prometheus endpoint (`[metrics] listen`, off when unset): keepalived
//! exporters' names where they fit, with our prefix, plus failover duration
//! histograms, XDP traffic per class and interface, active APs and the age
//! of the last advert.
//!
//! Owns: metric names, the histograms fed by the observer, and the HTTP
//! listener. Must not: hold state of its own beyond those histograms — every
//! other figure is read from the daemon's status at scrape time, so the
//! endpoint and `wimark-ha status` can never disagree.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

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

use crate::{
    history::Entry,
    monitor::{InvalidCounts, TrafficTotals},
    records::{DaemonStatus, IgnoredReason, Snapshot, Stack, State},
};

type Labels = Vec<(String, String)>;

fn instance_labels(instance: &str) -> Labels {
    vec![("iname".to_string(), instance.to_string())]
}

fn histogram() -> Histogram {
    // 0.1 ms .. ~3.3 s: fast detection to a slow container start.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
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
    release_master: Family<Labels, Counter>,
    journal_errors: Counter,
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
        let histograms =
            || Family::<Labels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        let metrics = Self {
            detection: histograms(),
            vip: histograms(),
            containers: histograms(),
            total: histograms(),
            aps_back: histograms(),
            ap_back: histograms(),
            become_master: Family::default(),
            release_master: Family::default(),
            journal_errors: Counter::default(),
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
            "Per AP and takeover: from the decision to the AP's session with the new master (IKE_SA_INIT/IKE_AUTH or MQTT SYN)",
            metrics.ap_back.clone(),
        );
        registry.register(
            "become_master",
            "Transitions to MASTER (keepalived exporter's name)",
            metrics.become_master.clone(),
        );
        registry.register(
            "release_master",
            "Transitions out of MASTER (keepalived exporter's name)",
            metrics.release_master.clone(),
        );
        registry.register(
            "journal_errors",
            "Failover journal writes that failed (see the log)",
            metrics.journal_errors.clone(),
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
                    let detection = record.silence_us.map(|us| us as f64 / 1e6);
                    let vip = record.vip_added_us.map(|us| us as f64 / 1e6);
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
                let seconds = record.total_ms / 1e3;
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
            }
            // Not exported yet: the per-AP recovery histogram comes with
            // the per-AP "back" detection (issue 11, item 1).
            Entry::ApRecovery { .. } => {}
        }
    }

    pub fn journal_error(&self) {
        self.journal_errors.inc();
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

/// Everything read from the daemon's status at scrape time.
struct StatusCollector(Box<dyn Fn() -> DaemonStatus + Send + Sync>);

impl std::fmt::Debug for StatusCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusCollector")
    }
}

/// One metric with a value per label set.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    values: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in values {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn state_code(state: State) -> i64 {
    // keepalived exporter's encoding.
    match state {
        State::Initialize => 0,
        State::Backup => 1,
        State::Master => 2,
        State::Fault => 3,
    }
}

impl Collector for StatusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = (self.0)();
        let labels = |i: &crate::records::InstanceStatus| -> Labels {
            vec![
                ("iname".to_string(), i.name.clone()),
                ("intf".to_string(), i.interface.clone()),
                ("vrid".to_string(), i.vrid.to_string()),
            ]
        };
        let per_instance = |value: fn(&crate::records::InstanceStatus) -> u64| {
            status
                .instances
                .iter()
                .map(|i| (labels(i), ConstCounter::new(value(i))))
                .collect::<Vec<_>>()
        };
        family(
            &mut encoder,
            "vrrp_state",
            "VRRP state: 0 INIT, 1 BACKUP, 2 MASTER, 3 FAULT (keepalived exporter's encoding)",
            MetricType::Gauge,
            status
                .instances
                .iter()
                .map(|i| (labels(i), ConstGauge::new(state_code(i.state)))),
        )?;
        family(
            &mut encoder,
            "vips_held",
            "1 while this node holds the instance's virtual IPs",
            MetricType::Gauge,
            status
                .instances
                .iter()
                .map(|i| (labels(i), ConstGauge::new(i64::from(i.holds_virtual_ips)))),
        )?;
        family(
            &mut encoder,
            "last_advert_age_seconds",
            "Age of the last valid advert heard (or sent, as MASTER)",
            MetricType::Gauge,
            status.instances.iter().filter_map(|i| {
                i.last_advert_ms_ago
                    .map(|ms| (labels(i), ConstGauge::new(ms as f64 / 1e3)))
            }),
        )?;
        for (name, help, value) in [
            (
                "advertisements_sent",
                "Adverts sent",
                (|i: &crate::records::InstanceStatus| i.adverts_sent)
                    as fn(&crate::records::InstanceStatus) -> u64,
            ),
            (
                "advertisements_received",
                "Valid adverts received and acted on",
                |i| i.adverts_received,
            ),
            (
                "priority_zero_sent",
                "Priority-0 adverts sent (resignations)",
                |i| i.priority_zero_sent,
            ),
            (
                "priority_zero_received",
                "Priority-0 adverts received from the master",
                |i| i.priority_zero_received,
            ),
            (
                "authentication_failure",
                "Adverts with a wrong password (never obeyed)",
                |i| i.ignored.get(IgnoredReason::Auth),
            ),
            (
                "advertisements_interval_errors",
                "Adverts with an interval other than ours (VRRPv2, never obeyed)",
                |i| i.ignored.get(IgnoredReason::Interval),
            ),
        ] {
            family(
                &mut encoder,
                name,
                help,
                MetricType::Counter,
                per_instance(value),
            )?;
        }
        family(
            &mut encoder,
            "advertisements_ignored",
            "Adverts for our VRID not acted on, by reason",
            MetricType::Counter,
            status.instances.iter().flat_map(|i| {
                i.ignored.iter().map(move |(reason, count)| {
                    let mut l = labels(i);
                    l.push(("reason".to_string(), reason.name().to_string()));
                    (l, ConstCounter::new(count))
                })
            }),
        )?;

        // The XDP monitors, as `stats --json` also prints them.
        let interface =
            |m: &Snapshot| -> Labels { vec![("interface".to_string(), m.interface.clone())] };
        type InvalidField = fn(&InvalidCounts) -> u64;
        for (name, help, invalid) in [
            (
                "ip_ttl_errors",
                "VRRP packets with TTL other than 255, dropped in XDP",
                (|c| c.ttl) as InvalidField,
            ),
            (
                "version_errors",
                "VRRP packets of an unknown version, dropped in XDP",
                |c| c.version,
            ),
            (
                "invalid_type_received",
                "VRRP packets of a type other than advert, dropped in XDP",
                |c| c.r#type,
            ),
            (
                "packet_length_errors",
                "VRRP packets too short or inconsistent, dropped in XDP",
                |c| c.length,
            ),
            (
                "checksum_errors",
                "VRRP packets with a bad checksum, dropped in XDP",
                |c| c.checksum,
            ),
        ] {
            family(
                &mut encoder,
                name,
                help,
                MetricType::Counter,
                status
                    .monitors
                    .iter()
                    .map(|m| (interface(m), ConstCounter::new(invalid(&m.vrrp.invalid)))),
            )?;
        }
        let classes = |m: &Snapshot| -> [(&'static str, TrafficTotals); 8] {
            [
                (
                    "vrrp",
                    TrafficTotals {
                        packets: m.vrrp.valid,
                        bytes: m.vrrp.valid_bytes,
                    },
                ),
                ("carp", m.carp),
                ("ike", m.ap.ike),
                ("nat_t", m.ap.nat_t),
                ("esp", m.ap.esp),
                ("mqtt", m.ap.mqtt),
                ("mqtt_tls", m.ap.mqtt_tls),
                ("other", m.other),
            ]
        };
        type TotalsField = fn(&TrafficTotals) -> u64;
        for (name, help, field) in [
            (
                "xdp_packets",
                "Packets seen by the XDP monitor, by class",
                (|t| t.packets) as TotalsField,
            ),
            (
                "xdp_bytes",
                "Bytes seen by the XDP monitor, by class",
                |t| t.bytes,
            ),
        ] {
            family(
                &mut encoder,
                name,
                help,
                MetricType::Counter,
                status.monitors.iter().flat_map(|m| {
                    classes(m).into_iter().map(move |(class, totals)| {
                        let mut l = interface(m);
                        l.push(("class".to_string(), class.to_string()));
                        (l, ConstCounter::new(field(&totals)))
                    })
                }),
            )?;
        }
        family(
            &mut encoder,
            "rogue_adverts",
            "Adverts for an allow-listed VRID from other sources, dropped in XDP before the daemon",
            MetricType::Counter,
            status
                .monitors
                .iter()
                .map(|m| (interface(m), ConstCounter::new(m.vrrp.rogue))),
        )?;
        family(
            &mut encoder,
            "active_aps",
            "APs seen by the XDP monitor within the active window",
            MetricType::Gauge,
            status
                .monitors
                .iter()
                .map(|m| (interface(m), ConstGauge::new(m.ap.active_aps as i64))),
        )?;
        if let Some(roles) = &status.roles {
            family(
                &mut encoder,
                "containers_degraded",
                "1 while the last container switch did not complete",
                MetricType::Gauge,
                [(
                    vec![("stack".to_string(), roles.stack.to_string())],
                    ConstGauge::new(i64::from(roles.degraded.is_some())),
                )],
            )?;
        }
        Ok(())
    }
}

/// Serves `GET /metrics` on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    use http_body_util::Full;
    use hyper::{body::Bytes, server::conn::http1, service::service_fn, Response, StatusCode};

    if let Ok(listen) = listener.local_addr() {
        tracing::info!(%listen, "metrics endpoint listening");
    }
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and the like: do not spin, try again shortly.
                tracing::warn!("metrics endpoint: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let response = if request.uri().path() == "/metrics" {
                        Response::builder()
                            .header(
                                "content-type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .body(Full::new(Bytes::from(metrics.encode())))
                    } else {
                        Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from_static(b"see /metrics\n")))
                    };
                    response
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = http1::Builder::new().serve_connection(io, service).await {
                tracing::debug!("metrics endpoint connection: {e}");
            }
        });
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
                adverts_sent: 42,
                adverts_received: 7,
                priority_zero_sent: 1,
                priority_zero_received: 0,
                ignored: [(IgnoredReason::Auth, 5)].into_iter().collect(),
                virtual_ips: vec![],
                holds_virtual_ips: true,
                fault: None,
                history: vec![],
                heartbeats: vec![],
                handed_over: false,
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
                    ..Default::default()
                },
                ..Default::default()
            }],
            roles: None,
            started_unix_ms: 0,
            ap_sync: None,
            aps_back: Vec::new(),
        }
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
                silence_us: Some(3000),
                vip_added_us: Some(50),
                garp_sent_us: Some(90),
            },
        });
        metrics.observe(&Entry::Containers {
            instance: "WIM1".to_string(),
            record: crate::records::SwitchRecord {
                at_unix_ms: 1001,
                to: Stack::Master,
                total_ms: 500.0,
                ..Default::default()
            },
        });
        let text = metrics.encode();
        for expected in [
            "wimark_ha_vrrp_state{iname=\"WIM1\",intf=\"eth1\",vrid=\"67\"} 2",
            "wimark_ha_advertisements_sent_total{iname=\"WIM1\",intf=\"eth1\",vrid=\"67\"} 42",
            "wimark_ha_authentication_failure_total{iname=\"WIM1\",intf=\"eth1\",vrid=\"67\"} 5",
            "wimark_ha_priority_zero_sent_total{iname=\"WIM1\",intf=\"eth1\",vrid=\"67\"} 1",
            "wimark_ha_ip_ttl_errors_total{interface=\"eth1\"} 2",
            "wimark_ha_xdp_packets_total{interface=\"eth1\",class=\"ike\"} 4",
            "wimark_ha_active_aps{interface=\"eth1\"} 3",
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
