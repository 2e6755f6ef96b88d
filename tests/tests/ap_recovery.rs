//! Bringing real AP clients back after a takeover: strongSwan charon
//! initiators on the APs (at their defaults: no DPD), charon responders on
//! both servers, and the new master's `wimark-ha ike-initiate` adapter.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};
use wimark_ha::records::State;

use wimark_ha_tests::{
    ap_clients::{
        adapter_toml, ap_address, tunnel_works, ApFailover, ApIke, ApLab, MqttClients,
        TunnelProbes, NAT_PUBLIC, VIP,
    },
    daemon::wait_until,
    lab::ip,
    require_root, wimark_ha_bin, Scratch,
};

/// Runs the adapter in `namespace` with `input` on stdin: (exit code,
/// stdout lines as JSON).
fn ike_initiate(
    namespace: &str,
    config: &std::path::Path,
    input: &str,
) -> (i32, Vec<serde_json::Value>, String) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", namespace])
        .arg(wimark_ha_bin())
        .args(["ike-initiate", "--config"])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wimark-ha ike-initiate");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("AP list");
    let output = child.wait_with_output().expect("adapter output");
    let lines = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (
        output.status.code().unwrap_or(-1),
        lines,
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn the_new_masters_ike_initiation_brings_stale_ap_tunnels_back() {
    require_root("an AP lab with strongSwan");
    const APS: u8 = 3;
    let lab = ApLab::new(APS).expect("lab");
    let scratch = Scratch::new("ike-recovery");
    lab.vip_on_a().expect("VIP on A");
    let (mut charon_a, charon_b) = lab.responders(&scratch.0).expect("responders");
    let ap_charons = lab
        .start_aps(&scratch.0, ApIke::Defaults)
        .unwrap_or_else(|e| panic!("the APs' tunnels to A: {e:#}"));

    // Node loss of A; the VIP moves to B and is announced, as a takeover does.
    charon_a.kill();
    ip(&["-n", &lab.a, "link", "set", "eth1", "down"]).expect("cut A");
    ip(&[
        "-n",
        &lab.b,
        "addr",
        "add",
        &format!("{VIP}/24"),
        "dev",
        "eth1",
    ])
    .expect("VIP on B");
    let garp = Command::new("ip")
        .args([
            "netns", "exec", &lab.b, "busybox", "arping", "-U", "-c", "1", "-I", "eth1", VIP,
        ])
        .output()
        .expect("arping");
    assert!(garp.status.success(), "{garp:?}");
    // At their defaults the APs keep the stale SA: ESP into the void.
    for n in 1..=APS {
        assert!(
            !tunnel_works(&lab.aps[usize::from(n) - 1], n.into(), Duration::from_secs(1)),
            "AP {n}'s tunnel works without any recovery: the lab does not show the problem"
        );
    }

    let config = scratch.0.join("ike-initiate.toml");
    std::fs::write(&config, adapter_toml(&charon_b.vici_uri())).expect("adapter config");
    let mut input = serde_json::json!({
        "instance": "WIM1",
        "virtual_ips": [VIP],
        "aps": (1..=APS).map(|n| serde_json::json!({"address": ap_address(n), "ike_port": 4500})).collect::<Vec<_>>(),
    });
    let aps = input["aps"].as_array_mut().expect("aps");
    aps.push(serde_json::json!({"address": "not-an-ap"}));
    // An address where no AP answers: its own deadline, not the others'.
    aps.push(serde_json::json!({"address": "10.77.0.99"}));
    let started = Instant::now();
    let (code, outcomes, stderr) = ike_initiate(&lab.b, &config, &input.to_string());
    let took = started.elapsed();
    assert_eq!(code, 1, "two bad entries: exit 1\n{outcomes:?}\n{stderr}");
    assert_eq!(outcomes.len(), usize::from(APS) + 2, "{outcomes:?}");
    for (n, outcome) in (1..=APS).zip(&outcomes) {
        assert_eq!(outcome["address"], ap_address(n).as_str());
        assert_eq!(outcome["ok"], true, "AP {n}: {outcome}\n{}", charon_b.log());
        assert_eq!(outcome["result"], "ok", "{outcome}");
        // Event-driven: each AP ends when its CHILD_SA is up, not at a
        // shared deadline.
        assert!(outcome["took_ms"].as_f64().is_some_and(|t| t < 1000.0), "{outcome}");
    }
    let bad = &outcomes[usize::from(APS)];
    assert_eq!((&bad["ok"], &bad["result"]), (&false.into(), &"failed".into()), "{bad}");
    assert!(
        bad["error"]
            .as_str()
            .is_some_and(|e| e.contains("not an IP address")),
        "{bad}"
    );
    let silent = &outcomes[usize::from(APS) + 1];
    assert_eq!(silent["result"], "timed_out", "{silent}");
    assert!(
        silent["error"].as_str().is_some_and(|e| e.contains("not up within 6s")),
        "{silent}"
    );
    assert!(stderr.contains("1 of them timed out"), "{stderr}");
    for n in 1..=APS {
        let namespace = &lab.aps[usize::from(n) - 1];
        assert!(
            tunnel_works(namespace, n.into(), Duration::from_secs(1)),
            "AP {n}'s tunnel after the new master initiated:\n{}",
            ap_charons[usize::from(n) - 1].log()
        );
        let log = ap_charons[usize::from(n) - 1].log();
        assert!(
            log.contains("destroying duplicate IKE_SA"),
            "AP {n} dropped its stale SA on INITIAL_CONTACT:\n{}",
            &log[log.len().saturating_sub(4000)..]
        );
    }
    eprintln!("ike-initiate for {APS} APs took {took:?}");
    // No per-AP connection is left loaded on the new master.
    let conns = charon_b.swanctl(&["--list-conns"]).expect("list-conns");
    assert!(!conns.contains("wimark-ap-"), "{conns}");
}

/// The identity and port of `public`'s IKE_SA as the server's charon sees
/// it (`remote 'ID' @ ADDRESS[PORT]` in `swanctl --list-sas`).
fn remote_of(charon: &wimark_ha_tests::ap_clients::Charon, public: &str) -> (String, u16) {
    let sas = charon.swanctl(&["--list-sas"]).expect("list-sas");
    let marker = format!("' @ {public}[");
    sas.lines()
        .find_map(|line| {
            let (before, after) = line.split_once(&marker)?;
            let id = before.rsplit_once('\'')?.1.to_string();
            let port = after.split(']').next()?.parse().ok()?;
            Some((id, port))
        })
        .unwrap_or_else(|| panic!("no IKE_SA from {public} on the server:\n{sas}"))
}

/// An AP behind a NAT router that rewrites ports (issue 28): the new
/// master must initiate from its NAT-T port 4500, the only one the NAT's
/// mapping forwards back; from port 500 nothing reaches the AP.
#[test]
fn an_ap_behind_a_nat_gets_its_tunnel_back_from_the_new_masters_nat_t_port() {
    require_root("an AP lab with strongSwan behind a NAT router");
    let lab = ApLab::behind_nat(1).expect("lab");
    let scratch = Scratch::new("ike-nat");
    lab.vip_on_a().expect("VIP on A");
    let (mut charon_a, charon_b) = lab.responders(&scratch.0).expect("responders");
    let ap_charons = lab
        .start_aps(&scratch.0, ApIke::Defaults)
        .unwrap_or_else(|e| panic!("the AP's tunnel to A through the NAT: {e:#}"));
    let (ap_id, nat_port) = remote_of(&charon_a, NAT_PUBLIC);
    assert_eq!(ap_id, "192.168.77.11", "the AP's own identity is its private address");
    assert!(
        (40000..50000).contains(&nat_port),
        "the NAT rewrote the AP's NAT-T port: {nat_port}"
    );

    charon_a.kill();
    ip(&["-n", &lab.a, "link", "set", "eth1", "down"]).expect("cut A");
    ip(&["-n", &lab.b, "addr", "add", &format!("{VIP}/24"), "dev", "eth1"]).expect("VIP on B");
    let garp = Command::new("ip")
        .args(["netns", "exec", &lab.b, "busybox", "arping", "-U", "-c", "1", "-I", "eth1", VIP])
        .output()
        .expect("arping");
    assert!(garp.status.success(), "{garp:?}");
    assert!(
        !tunnel_works(&lab.aps[0], 1, Duration::from_secs(1)),
        "the AP's tunnel works without any recovery: the lab does not show the problem"
    );

    let config = scratch.0.join("ike-initiate.toml");
    std::fs::write(&config, adapter_toml(&charon_b.vici_uri())).expect("adapter config");
    let input = serde_json::json!({
        "instance": "WIM1",
        "virtual_ips": [VIP],
        // The identity as the old master's IKE daemon saw it (contract
        // version 2): the NAT's address is not the AP's identity.
        "version": 2,
        "aps": [{"address": NAT_PUBLIC, "ike_port": nat_port, "ike_id": ap_id}],
    });
    let (code, outcomes, stderr) = ike_initiate(&lab.b, &config, &input.to_string());
    assert_eq!(
        code,
        0,
        "{outcomes:?}\n{stderr}\nB's charon:\n{}",
        charon_b.log()
    );
    let log = charon_b.log();
    assert!(
        log.contains(&format!("[4500] to {NAT_PUBLIC}[{nat_port}]")),
        "IKE_SA_INIT went out from port 4500:\n{log}"
    );
    assert!(
        tunnel_works(&lab.aps[0], 1, Duration::from_secs(1)),
        "the AP's tunnel after the new master initiated:\n{}",
        ap_charons[0].log()
    );
    // INITIAL_CONTACT to the AP's real identity: its stale SA is gone.
    let ap_log = ap_charons[0].log();
    assert!(
        ap_log.contains("destroying duplicate IKE_SA"),
        "the AP dropped its stale SA on INITIAL_CONTACT:\n{}",
        &ap_log[ap_log.len().saturating_sub(4000)..]
    );
}

#[test]
fn an_ike_daemon_that_is_down_is_reported_per_ap_and_quickly() {
    require_root("a lab namespace");
    let lab = ApLab::new(0).expect("lab");
    let scratch = Scratch::new("ike-down");
    let config = scratch.0.join("ike-initiate.toml");
    std::fs::write(
        &config,
        adapter_toml(&format!("unix://{}/no-charon.vici", scratch.0.display())),
    )
    .expect("config");
    let started = Instant::now();
    let (code, outcomes, _) = ike_initiate(
        &lab.b,
        &config,
        r#"{"aps":[{"address":"10.77.0.51"},{"address":"10.77.0.52"}]}"#,
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(code, 1);
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(|o| o["ok"] == false
        && o["error"]
            .as_str()
            .is_some_and(|e| e.contains("no-charon.vici"))));
    let (code, outcomes, stderr) = ike_initiate(&lab.b, &config, "not json");
    assert_eq!(code, 2, "{stderr}");
    assert!(outcomes.is_empty());
    assert!(stderr.contains("not the documented JSON"), "{stderr}");
}

/// The AP recovery records in `daemon`'s journal.
fn recovery_records(
    daemon: &wimark_ha_tests::daemon::Daemon,
) -> Vec<wimark_ha::recovery::RecoveryRecord> {
    journal(daemon, |entry| match entry {
        wimark_ha::history::Entry::ApRecovery { record, .. } => Some(record),
        _ => None,
    })
}

/// The APs-back records in `daemon`'s journal.
fn aps_back_records(
    daemon: &wimark_ha_tests::daemon::Daemon,
) -> Vec<wimark_ha::recovery::ApsBackDetail> {
    journal(daemon, |entry| match entry {
        wimark_ha::history::Entry::ApsBack { per_ap, .. } => per_ap,
        _ => None,
    })
}

/// Waits until `read` finds a record of `what` in `daemon`'s journal.
fn wait_for_records<T>(
    daemon: &wimark_ha_tests::daemon::Daemon,
    wait: Duration,
    what: &str,
    read: impl Fn() -> Vec<T>,
) {
    wait_until(wait, &format!("{what} in the journal"), || !read().is_empty())
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
}

/// What `pick` takes from each entry of the daemon's failover journal.
fn journal<T>(
    daemon: &wimark_ha_tests::daemon::Daemon,
    pick: impl Fn(wimark_ha::history::Entry) -> Option<T>,
) -> Vec<T> {
    wimark_ha::history::read(&daemon.state_dir())
        .map(|read| read.entries.into_iter().filter_map(&pick).collect())
        .unwrap_or_default()
}

/// The whole path with two daemons: A (master) shares its AP table with B;
/// A is lost (link cut, daemon and IKE daemon killed); B takes the VIP,
/// runs its IKE hook with the synced list, and every AP's tunnel works
/// again — the APs at strongSwan's defaults, which alone would never come
/// back.
#[test]
fn node_loss_brings_real_ap_tunnels_back_through_the_synced_table() {
    require_root("an AP lab with strongSwan and two daemons");
    const APS: u8 = 3;
    let mut failover = ApFailover::new(APS, ApIke::Defaults, true, Some(60), "apr-e2e")
        .unwrap_or_else(|e| panic!("{e:#}"));
    // doctor reads the swanctl.conf B's charon really loaded: the AP
    // connection on the VIP keeps MOBIKE off.
    let doctor = Command::new("ip")
        .args(["netns", "exec", &failover.lab.b])
        .arg(wimark_ha_tests::wimark_ha_bin())
        .args(["doctor", "--json", "--config"])
        .arg(&failover.daemon_b.config)
        .output()
        .expect("doctor");
    let findings: serde_json::Value = serde_json::from_slice(&doctor.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}\n{doctor:?}"));
    let ap_findings: Vec<_> = findings
        .as_array()
        .expect("array")
        .iter()
        .filter(|f| f["check"] == "ap recovery")
        .collect();
    assert_eq!(ap_findings.len(), 4, "{findings:#}");
    assert!(
        ap_findings.iter().all(|f| f["status"] == "OK"),
        "{ap_findings:#?}"
    );
    assert!(
        ap_findings[1]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("1 connection(s) on the VIP keep MOBIKE off")),
        "{ap_findings:#?}"
    );
    let probes = TunnelProbes::start(&failover.lab).expect("probes");
    let lost = failover.lose_a().expect("node loss");
    let back = probes.wait_all_back(lost, Duration::from_secs(10));
    let daemon_b = &failover.daemon_b;
    assert!(
        back.iter().all(Option::is_some),
        "every AP's tunnel back: {back:?}\nB: {}\nB's charon: {}",
        daemon_b.log(),
        failover.charon_b.log()
    );
    eprintln!("AP tunnels back after node loss: {back:?}");
    // MQTT (keepalive 60 s): kicked, every subscriber receives again long
    // before its keepalive would have noticed.
    let mqtt = failover
        .mqtt
        .as_ref()
        .expect("mqtt")
        .wait_all_back(lost, Duration::from_secs(10));
    assert!(
        mqtt.iter()
            .all(|b| b.is_some_and(|t| t < Duration::from_secs(5))),
        "every AP's MQTT back within 5 s (keepalive 60 s): {mqtt:?}\nB: {}",
        daemon_b.log()
    );
    eprintln!("AP MQTT back after node loss: {mqtt:?}");
    assert!(
        daemon_b.state() == Some(State::Master),
        "{}",
        daemon_b.log()
    );
    // One journal entry for the takeover's recovery, every AP accounted for.
    let recoveries = || recovery_records(daemon_b);
    wait_for_records(daemon_b, Duration::from_secs(5), "the recovery", &recoveries);
    let records = recoveries();
    assert_eq!(
        records.len(),
        1,
        "{records:?}\nB's status: {}\nB: {}",
        wimark_ha_tests::daemon::status_text(&failover.lab.b, &daemon_b.socket),
        daemon_b.log()
    );
    let record = &records[0];
    assert_eq!(record.expected, usize::from(APS), "{record:?}");
    assert_eq!(record.synced, usize::from(APS), "{record:?}");
    let ike = record.ike.as_ref().expect("the IKE hook ran");
    assert_eq!((ike.ok, ike.failed), (usize::from(APS), 0), "{ike:?}");
    assert!(ike.error.is_none(), "{ike:?}");
    // Every AP came back, by its own new session, in one entry.
    let aps_back = || aps_back_records(daemon_b);
    wait_for_records(daemon_b, Duration::from_secs(5), "APs back", &aps_back);
    let back = aps_back();
    assert_eq!(back.len(), 1, "one entry per takeover: {back:?}");
    assert_eq!(
        (back[0].expected, back[0].back),
        (usize::from(APS), usize::from(APS)),
        "{back:?}"
    );
    assert!(back[0].missing.is_empty(), "{back:?}");
    // Whole APs: each one's IKE session and its MQTT subscriber are back.
    let sessions = back[0].sessions.expect("sessions per kind");
    assert_eq!(
        (
            sessions.ike_expected,
            sessions.ike_back,
            sessions.mqtt_expected,
            sessions.mqtt_back
        ),
        (
            usize::from(APS),
            usize::from(APS),
            usize::from(APS),
            usize::from(APS)
        ),
        "{back:?}"
    );
    assert!(
        back[0].back_ms.iter().all(|ms| *ms > 0.0 && *ms < 2000.0),
        "{back:?}"
    );
    // `status` shows the same.
    let shown = daemon_b.status().expect("status").aps_back;
    assert_eq!(
        shown
            .iter()
            .map(|b| (b.instance.as_str(), b.detail.back))
            .collect::<Vec<_>>(),
        [("WIM1", usize::from(APS))],
        "{shown:?}"
    );
    let kicked = record.mqtt.as_ref().expect("the MQTT kick ran");
    assert_eq!(kicked.connections, usize::from(APS), "{kicked:?}");
    assert!(kicked.errors.is_empty(), "{kicked:?}");
    // `history` says it in words.
    let history = Command::new(wimark_ha_bin())
        .args(["history", "--state-dir"])
        .arg(daemon_b.state_dir())
        .output()
        .expect("wimark-ha history");
    let text = String::from_utf8_lossy(&history.stdout);
    assert!(
        text.contains(&format!("AP recovery: {APS} AP(s) expected ({APS} synced from the peer); IKE initiated to {APS} AP(s), 0 failed")),
        "{text}"
    );
}

/// Two APs behind one NAT address (issue 28), through both daemons: A's
/// charon lists each AP's IKE_SA (its NAT-T port, its own identity — its
/// private address), the sync carries both, and after node loss B's IKE
/// hook initiates to each at its port and identity: both tunnels back, and
/// each AP drops its stale SA on INITIAL_CONTACT.
#[test]
fn two_aps_behind_one_nat_address_are_two_aps_through_the_daemons() {
    require_root("an AP lab with strongSwan behind a NAT router and two daemons");
    let lab = ApLab::behind_nat(2).expect("lab");
    // Each AP with three MQTT connections: subscribers with keepalive 5 s
    // and 60 s, and a publisher.
    let clients = MqttClients {
        keepalives_s: vec![5, 60],
        publisher: true,
        fleet: false,
    };
    let mut failover = ApFailover::in_lab(lab, ApIke::Defaults, true, Some(clients), "apr-nat2")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let sync = failover
        .daemon_b
        .status()
        .expect("status")
        .ap_sync
        .expect("ap_sync");
    assert_eq!(
        (sync.synced_aps, sync.synced_ike_peers),
        (1, 2),
        "one address, two IKE_SAs: {sync:?}"
    );
    let shown = Command::new(wimark_ha_bin())
        .args(["status", "--socket"])
        .arg(&failover.daemon_b.socket)
        .output()
        .expect("wimark-ha status");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("from the peer: 2 IKE_SA(s) with port and identity"),
        "{text}"
    );
    let probes = TunnelProbes::start(&failover.lab).expect("probes");
    let lost = failover.lose_a().expect("node loss");
    let back = probes.wait_all_back(lost, Duration::from_secs(10));
    let daemon_b = &failover.daemon_b;
    assert!(
        back.iter()
            .all(|b| b.is_some_and(|t| t < Duration::from_secs(1))),
        "both APs' tunnels back within 1 s: {back:?}\nB: {}\nB's charon: {}",
        daemon_b.log(),
        failover.charon_b.log()
    );
    eprintln!("tunnels of two APs behind one NAT address back after node loss: {back:?}");
    let mqtt = failover
        .mqtt
        .as_ref()
        .expect("mqtt")
        .wait_all_back(lost, Duration::from_secs(10));
    assert!(
        mqtt.iter()
            .all(|b| b.is_some_and(|t| t < Duration::from_secs(5))),
        "all six MQTT connections back within 5 s (keepalives 5 s and 60 s, publishers): {mqtt:?}\nB: {}",
        daemon_b.log()
    );
    let recoveries = || recovery_records(daemon_b);
    wait_for_records(daemon_b, Duration::from_secs(5), "the recovery", &recoveries);
    let record = &recoveries()[0];
    assert_eq!((record.expected, record.synced), (2, 2), "{record:?}");
    let ike = record.ike.as_ref().expect("the IKE hook ran");
    assert_eq!((ike.ok, ike.failed), (2, 0), "{ike:?}");
    // Each AP got INITIAL_CONTACT for its own identity: its stale SA went.
    for (n, charon) in failover.aps.iter().enumerate() {
        let log = charon.log();
        assert!(
            log.contains("destroying duplicate IKE_SA"),
            "AP {} dropped its stale SA:\n{}",
            n + 1,
            &log[log.len().saturating_sub(4000)..]
        );
    }
    // The journal counts two APs, each whole: two IKE_SAs at one address
    // (told apart by their NAT-T ports) and all six MQTT connections.
    let aps_back = || aps_back_records(daemon_b);
    wait_for_records(daemon_b, Duration::from_secs(5), "APs back", &aps_back);
    let back = &aps_back()[0];
    assert_eq!((back.expected, back.back), (2, 2), "{back:?}");
    let sessions = back.sessions.expect("sessions per kind");
    assert_eq!(
        (
            sessions.ike_expected,
            sessions.ike_back,
            sessions.mqtt_expected,
            sessions.mqtt_back
        ),
        (2, 2, 6, 6),
        "{back:?}"
    );
}

/// Bad input through both daemons: a NAT that drops the new master's
/// initiation to one AP (its mapping gone), and more MQTT connections at an
/// address than the sync's bound. Each is a line in the recovery record;
/// nothing is retried; the VIP stays with the new master.
#[test]
fn a_nat_dropping_the_initiation_and_connections_beyond_the_bound_are_recorded_not_retried() {
    require_root("an AP lab with strongSwan behind a NAT router and two daemons");
    let lab = ApLab::behind_nat(2).expect("lab");
    let clients = MqttClients {
        keepalives_s: vec![60; 5],
        publisher: false,
        fleet: false,
    };
    let mut failover = ApFailover::in_lab(lab, ApIke::Defaults, true, Some(clients), "apr-bad")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let nat = failover.lab.nat.clone().expect("the NAT namespace");
    // AP 1's mapping is gone: the NAT drops whatever comes for it.
    let drop = Command::new("ip")
        .args(["netns", "exec", &nat, "iptables", "-I", "FORWARD"])
        .args(["-d", &failover.lab.own[0], "-j", "DROP"])
        .status()
        .expect("iptables");
    assert!(drop.success());
    let probes = TunnelProbes::start(&failover.lab).expect("probes");
    let lost = failover.lose_a().expect("node loss");
    let back = probes.wait_all_back(lost, Duration::from_secs(5));
    let daemon_b = &failover.daemon_b;
    assert!(
        back[0].is_none() && back[1].is_some(),
        "only AP 2's tunnel comes back: {back:?}\nB: {}",
        daemon_b.log()
    );
    let recoveries = || recovery_records(daemon_b);
    wait_for_records(daemon_b, Duration::from_secs(15), "the recovery", &recoveries);
    let record = &recoveries()[0];
    let ike = record.ike.as_ref().expect("the IKE hook ran");
    // The NAT drops the initiation: nothing comes back, and the adapter's
    // per-AP deadline ends it (the other AP's success ended at its event).
    assert_eq!((ike.ok, ike.failed, ike.timed_out), (1, 1, 1), "{record:?}");
    assert!(
        ike.failures.len() == 1
            && ike.failures[0].starts_with(&format!("{NAT_PUBLIC}: CHILD_SA `tunnel` not up within 6s")),
        "{ike:?}"
    );
    let kicked = record.mqtt.as_ref().expect("the MQTT kick ran");
    assert_eq!(
        (kicked.connections, kicked.beyond_bound),
        (wimark_ha::recovery::mqtt::MAX_MQTT_PER_AP, 10 - wimark_ha::recovery::mqtt::MAX_MQTT_PER_AP),
        "{kicked:?}"
    );
    let history = Command::new(wimark_ha_bin())
        .args(["history", "--state-dir"])
        .arg(daemon_b.state_dir())
        .output()
        .expect("wimark-ha history");
    let text = String::from_utf8_lossy(&history.stdout);
    assert!(text.contains("1 failed (1 timed out)"), "{text}");
    assert!(text.contains("beyond 8 per AP not kicked"), "{text}");
    // Not retried: still one recovery a while later; B keeps the VIP.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(recoveries().len(), 1);
    assert_eq!(daemon_b.state(), Some(State::Master), "{}", daemon_b.log());
    assert!(wimark_ha_tests::daemon::has_address(&failover.lab.b, "eth1", VIP));
}

/// A forged AP sync (another key) and garbage are counted, never obeyed.
#[test]
fn a_forged_ap_sync_is_counted_and_ignored() {
    require_root("a lab and a daemon");
    use wimark_ha_tests::daemon::{config, Daemon, FAST};
    let lab = ApLab::new(0).expect("lab");
    let scratch = Scratch::new("ap-sync-forged");
    let key = wimark_ha_tests::ap_clients::write_sync_key(&scratch.0).expect("key");
    let body = format!(
        "{FAST}\n\n[ap_recovery]\nsync_key_file = \"{}\"\nsync_peer = \"10.77.0.1\"\n",
        key.display()
    );
    let daemon_b = Daemon::start(&lab.b, "apsync-b", |s| config(s, 100, &body)).expect("B");
    // From the configured peer's address (A's namespace), with the wrong
    // key, then with no MAC at all.
    let (forged, _) = wimark_ha::recovery::sync::encode(
        b"not the key of this pair",
        u64::MAX - 1,
        &[wimark_ha::recovery::sync::SyncedAp {
            address: "10.77.0.200".parse().expect("ip"),
            ike_port: 4500,
            age_s: 0,
            mqtt: Vec::new(),
            mqtt_beyond_bound: 0,
            ike_peers: Vec::new(),
        }],
    );
    let send = move |payload: Vec<u8>| {
        wimark_ha_tests::lab::in_netns(&lab.a, move || {
            let socket = std::net::UdpSocket::bind("10.77.0.1:0").expect("bind");
            socket.send_to(&payload, "10.77.0.2:9651").expect("send");
        })
        .expect("in A");
    };
    send(forged);
    send(b"WHA2 garbage".to_vec());
    wait_until(Duration::from_secs(3), "both counted", || {
        daemon_b
            .status()
            .ok()
            .and_then(|s| s.ap_sync)
            .is_some_and(|sync| sync.rejected.values().sum::<u64>() == 2)
    })
    .unwrap_or_else(|e| panic!("{e}\n{:?}", daemon_b.status().map(|s| s.ap_sync)));
    let sync = daemon_b.status().expect("status").ap_sync.expect("ap_sync");
    assert_eq!(sync.synced_aps, 0, "{sync:?}");
    assert_eq!(sync.datagrams_accepted, 0, "{sync:?}");
    assert_eq!(sync.rejected.get("mac"), Some(&1), "{sync:?}");
    assert_eq!(sync.rejected.get("short"), Some(&1), "{sync:?}");
}
