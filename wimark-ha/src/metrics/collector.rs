//! Every figure read from the daemon's status at scrape time (VRRP state
//! and counters per instance, the XDP monitors, roles, AP recovery):
//! nothing cached, so `/metrics` and `wimark-ha status` cannot disagree.

use super::*;

/// Everything read from the daemon's status at scrape time.
pub(super) struct StatusCollector(pub(super) Box<dyn Fn() -> DaemonStatus + Send + Sync>);

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
        family(
            &mut encoder,
            "effective_priority",
            "The priority in force: the configured one plus the weights of the trackers in force (what the adverts carry)",
            MetricType::Gauge,
            status.instances.iter().map(|i| {
                let priority = i.effective_priority.unwrap_or(i.priority);
                (labels(i), ConstGauge::new(i64::from(priority)))
            }),
        )?;
        let per_tracker = |value: fn(&crate::records::TrackerStatus) -> i64| {
            status
                .instances
                .iter()
                .flat_map(|i| {
                    i.trackers.iter().map(move |t| {
                        let mut l = labels(i);
                        l.push(("tracker".to_string(), t.name.clone()));
                        l.push(("kind".to_string(), t.kind.to_string()));
                        (l, ConstGauge::new(value(t)))
                    })
                })
                .collect::<Vec<_>>()
        };
        family(
            &mut encoder,
            "tracker_healthy",
            "1 while a tracker ([[instance.track]]) is healthy, 0 while it has failed",
            MetricType::Gauge,
            per_tracker(|t| i64::from(t.health == crate::records::Health::Healthy)),
        )?;
        family(
            &mut encoder,
            "tracker_weight_in_force",
            "What a tracker adds to the priority now (keepalived's weight rules)",
            MetricType::Gauge,
            per_tracker(|t| i64::from(t.weight_in_force)),
        )?;
        family(
            &mut encoder,
            "tracker_fault",
            "1 while a tracker of weight 0 holds its instance in FAULT",
            MetricType::Gauge,
            per_tracker(|t| i64::from(t.fault)),
        )?;
        family(
            &mut encoder,
            "tracker_degraded",
            "1 while a tracker cannot observe (a container tracker whose Docker does not answer): its health is the last known",
            MetricType::Gauge,
            per_tracker(|t| i64::from(t.degraded.is_some())),
        )?;
        family(
            &mut encoder,
            "detection_window_seconds",
            "The fast rule's detection window in force (with the basis it rests on: fixed, learning, floor, tail_estimate, worst_gap, false_takeover, ceiling)",
            MetricType::Gauge,
            status.instances.iter().filter_map(|i| {
                let detection = i.detection.as_ref()?;
                let mut l = labels(i);
                let basis = detection.basis.map_or("none", |b| b.name());
                l.push(("basis".to_string(), basis.to_string()));
                l.push(("armed".to_string(), detection.armed.to_string()));
                Some((l, ConstGauge::new(detection.window?.as_secs_f64())))
            }),
        )?;
        family(
            &mut encoder,
            "advert_gap_seconds",
            "Gaps between the master's fast adverts as this backup learned them (faded over an hour), by quantile; quantile=\"1\" is the longest remembered",
            MetricType::Gauge,
            status.instances.iter().flat_map(|i| {
                let d = i.detection.clone().unwrap_or_default();
                [("0.5", d.p50), ("0.99", d.p99), ("0.999", d.p999), ("1", d.max)]
                    .into_iter()
                    .filter_map(move |(q, v)| {
                        let mut l = labels(i);
                        l.push(("quantile".to_string(), q.to_string()));
                        Some((l, ConstGauge::new(v?.as_secs_f64())))
                    })
            }),
        )?;
        family(
            &mut encoder,
            "advert_send_gap_longest_seconds",
            "The longest gap between two turns of this node's fast advert stream, as its senders measured it (its own stalls)",
            MetricType::Gauge,
            status.instances.iter().filter_map(|i| {
                let gaps = i.send_gaps.as_ref()?;
                Some((labels(i), ConstGauge::new(gaps.longest_us as f64 / 1e6)))
            }),
        )?;
        family(
            &mut encoder,
            "advert_late_turns",
            "Turns of this node's fast advert stream more than two fast intervals after the one before",
            MetricType::Counter,
            status.instances.iter().filter_map(|i| {
                let gaps = i.send_gaps.as_ref()?;
                Some((labels(i), ConstCounter::new(gaps.late)))
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
                "vip_restored",
                "VIPs someone else removed while this node held them, put back",
                |i| i.vips_restored,
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
            (
                "address_count_errors",
                "VRRP packets with address count 0 (RFC 5798 5.2.5), dropped in XDP",
                |c| c.address_count,
            ),
            (
                "fragment_errors",
                "VRRP packets in IP fragments, dropped in XDP",
                |c| c.fragment,
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
            "tagged_adverts",
            "Valid adverts inside a VLAN tag (another VLAN's), dropped in XDP before the daemon",
            MetricType::Counter,
            status
                .monitors
                .iter()
                .map(|m| (interface(m), ConstCounter::new(m.vrrp.tagged))),
        )?;
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
        family(
            &mut encoder,
            "ap_table_entries",
            "APs in the XDP AP table (what the AP sync can share)",
            MetricType::Gauge,
            status
                .monitors
                .iter()
                .map(|m| (interface(m), ConstGauge::new(m.ap.known_aps as i64))),
        )?;
        family(
            &mut encoder,
            "ap_table_capacity",
            "APs the XDP AP table can hold at most",
            MetricType::Gauge,
            status
                .monitors
                .iter()
                .map(|m| (interface(m), ConstGauge::new(m.ap.capacity as i64))),
        )?;
        family(
            &mut encoder,
            "ap_table_evictions",
            "AP table entries taken over by another AP (the evicted AP is missing from the AP sync)",
            MetricType::Counter,
            status
                .monitors
                .iter()
                .map(|m| (interface(m), ConstCounter::new(m.ap.evicted))),
        )?;
        family(
            &mut encoder,
            "journal_degraded",
            "1 while the failover journal cannot be written (the daemon runs without it)",
            MetricType::Gauge,
            [(Labels::new(), ConstGauge::new(i64::from(status.journal.degraded.is_some())))],
        )?;
        family(
            &mut encoder,
            "journal_errors",
            "Failover journal entries not written (see the log and status)",
            MetricType::Counter,
            [(Labels::new(), ConstCounter::new(status.journal.lost))],
        )?;
        if let Some(witness) = &status.witness {
            for (name, help, value) in [
                ("witness_reachable", "1 while etcd (the quorum witness) answers", witness.reachable),
                ("witness_holds_lease", "1 while this node holds a lease it renewed within its TTL", witness.holds_lease),
                ("witness_holds_key", "1 while the witness key is ours: the master stack may run here", witness.holds_key),
                ("witness_waiting", "1 while a promotion waits for the witness key", witness.waiting_since_unix_ms.is_some()),
            ] {
                family(
                    &mut encoder,
                    name,
                    help,
                    MetricType::Gauge,
                    [(
                        vec![("key".to_string(), witness.key.clone())],
                        ConstGauge::new(i64::from(value)),
                    )],
                )?;
            }
        }
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
