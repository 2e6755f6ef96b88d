//! The AP recovery at a CI-sized fleet (issue 29): 300 real strongSwan
//! APs, 250 to a namespace (each its own address, identity and IKE_SA),
//! and an idle MQTT connection each, behind two daemons with
//! `[ap_recovery]`; A is lost and every AP's tunnel and MQTT session must
//! come back through B, every AP accounted for in B's journal.
//! The bench rows at 1 000 and 5 000 are `cargo xtask bench aps -- --fleet N`.

use std::time::Duration;

use wimark_ha::{history::Entry, records::State};
use wimark_ha_tests::{
    ap_clients::{ApFailover, ApIke, ApLab, MqttClients, TunnelProbes},
    daemon::wait_until,
    require_root,
};

const APS: usize = 300;

#[test]
fn a_fleet_of_300_aps_in_two_namespaces_is_back_and_accounted_for_after_a_node_loss() {
    require_root("a 300-AP lab with strongSwan");
    let mut failover = ApFailover::in_lab(
        ApLab::fleet(APS).expect("lab"),
        ApIke::Defaults,
        true,
        // Idle (keepalive 60 s): only the daemon's kick brings it back
        // within the test's bound.
        Some(MqttClients::fleet(60)),
        "fleet",
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(failover.aps.len(), 2, "300 APs are two namespaces, one charon each");
    let probes = TunnelProbes::start(&failover.lab).expect("probes");
    std::thread::sleep(probes.every * 3);
    let lost = failover.lose_a().expect("node loss");
    probes.arm(lost.cut);
    let back = probes.wait_all_back(lost, Duration::from_secs(20));
    let daemon_b = &failover.daemon_b;
    let missing: Vec<usize> = back
        .iter()
        .enumerate()
        .filter(|(_, b)| b.is_none())
        .map(|(i, _)| i + 1)
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {APS} APs' tunnels not back within 20 s (first: {:?})\nB: {}",
        missing.len(),
        &missing[..missing.len().min(10)],
        daemon_b.log()
    );
    let mut times: Vec<Duration> = back.iter().flatten().copied().collect();
    times.sort();
    eprintln!(
        "fleet: {APS} tunnels back, p50 {:?}, p99 {:?}, max {:?} (probe every {:?})",
        times[APS / 2],
        times[APS * 99 / 100 - 1],
        times[APS - 1],
        probes.every
    );
    let mqtt = failover.fleet_mqtt.as_ref().expect("the fleet's MQTT");
    let mqtt_back = mqtt.wait_all_back(lost, Duration::from_secs(20));
    let mut mqtt_times: Vec<Duration> = mqtt_back.iter().flatten().copied().collect();
    assert_eq!(
        mqtt_times.len(),
        APS,
        "MQTT sessions back within 20 s (keepalive 60 s: the kick's)\nB: {}",
        daemon_b.log()
    );
    mqtt_times.sort();
    eprintln!(
        "fleet: {APS} MQTT sessions back, p50 {:?}, p99 {:?}, max {:?}",
        mqtt_times[APS / 2],
        mqtt_times[APS * 99 / 100 - 1],
        mqtt_times[APS - 1]
    );
    assert_eq!(daemon_b.state(), Some(State::Master), "{}", daemon_b.log());
    // The hook reported every AP up, and the APs-back watch counted each.
    let read = |pick: &dyn Fn(Entry) -> Option<String>| -> Vec<String> {
        wimark_ha::history::read(&daemon_b.state_dir())
            .map(|j| j.entries.into_iter().filter_map(pick).collect())
            .unwrap_or_default()
    };
    let recovery = |entry: Entry| match entry {
        Entry::ApRecovery { record, .. } => record.ike.map(|hook| {
            format!("{} {} {}", hook.ok, hook.failed, hook.timed_out)
        }),
        _ => None,
    };
    let kicked = |entry: Entry| match entry {
        Entry::ApRecovery { record, .. } => record.mqtt.map(|kick| kick.connections.to_string()),
        _ => None,
    };
    let aps_back = |entry: Entry| match entry {
        Entry::ApsBack { per_ap, .. } => per_ap.map(|d| format!("{} {}", d.back, d.expected)),
        _ => None,
    };
    wait_until(Duration::from_secs(30), "B's recovery and APs-back records", || {
        !read(&recovery).is_empty() && !read(&aps_back).is_empty()
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon_b.log()));
    let failures = |entry: Entry| match entry {
        Entry::ApRecovery { record, .. } => record.ike.map(|hook| hook.failures.join("\n")),
        _ => None,
    };
    assert_eq!(
        read(&recovery),
        [format!("{APS} 0 0")],
        "hook: ok failed timed_out\n{:?}\nB's charon retransmitted {} times",
        read(&failures),
        failover.charon_b.log().matches("retransmit").count()
    );
    assert_eq!(read(&kicked), [APS.to_string()], "MQTT connections kicked");
    assert_eq!(read(&aps_back), [format!("{APS} {APS}")], "APs back: back expected");
}
