//! Every MQTT connection of every AP back after a takeover, through a NAT
//! that tracks TCP windows: real mosquitto clients behind a Linux NAT
//! namespace (masquerade, ports rewritten), brokers on both servers, the
//! XDP monitor on each server as the daemon attaches it, and the new
//! master's kick (`wimark_ha::recovery::mqtt::kick`) with what the old
//! master's monitor saw, as the AP sync carries it.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use wimark_ha::{
    clock::monotonic_now_ns,
    monitor::{read_mqtt, Monitor, MonitorOptions},
    recovery::mqtt::{kick, sessions_by_ap, KickReport, MqttSession, DEFAULT_KICKS_PER_SECOND},
};
use wimark_ha_tests::{
    ap_clients::{ApLab, Loss, Mqtt, NAT_PUBLIC, VIP},
    daemon::wait_until,
    lab::{in_netns, ip},
    require_root, Scratch,
};

/// The XDP monitor attached to `eth1` of `namespace`, as the daemon does.
fn attach(namespace: &str) -> Monitor {
    in_netns(namespace, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(Monitor::attach("eth1", MonitorOptions::default()))
    })
    .expect("netns thread")
    .unwrap_or_else(|e| panic!("the XDP monitor on {namespace}: {e:#}"))
}

/// What the AP sync would carry from `monitor` as the daemon builds it:
/// the MQTT connections seen since `since_ns` (the holder's term), with
/// their numbers.
fn connections(monitor: &Monitor, since_ns: u64) -> Vec<(IpAddr, MqttSession)> {
    let table = read_mqtt(monitor.ebpf()).expect("MQTT table");
    sessions_by_ap(table, since_ns, monotonic_now_ns())
        .into_iter()
        .flat_map(|(ap, (sessions, beyond))| {
            assert_eq!(beyond, 0);
            sessions.into_iter().map(move |s| (ap, s))
        })
        .collect()
}

/// The kick from `namespace`, which holds the VIP.
fn kick_from(namespace: &str, sessions: Vec<(IpAddr, MqttSession)>) -> KickReport {
    in_netns(namespace, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(kick(VIP.parse().expect("VIP"), &sessions, DEFAULT_KICKS_PER_SECOND))
    })
    .expect("netns thread")
}

/// Moves the VIP from `old` (whose link is cut, as a lost node's) to `new`,
/// which announces it.
fn move_vip(old: &str, new: &str) {
    ip(&["-n", old, "link", "set", "eth1", "down"]).expect("cut the old holder");
    ip(&[
        "-n",
        old,
        "addr",
        "del",
        &format!("{VIP}/24"),
        "dev",
        "eth1",
    ])
    .expect("VIP off");
    ip(&[
        "-n",
        new,
        "addr",
        "add",
        &format!("{VIP}/24"),
        "dev",
        "eth1",
    ])
    .expect("VIP on");
    let garp = std::process::Command::new("ip")
        .args([
            "netns", "exec", new, "busybox", "arping", "-U", "-c", "1", "-I", "eth1", VIP,
        ])
        .output()
        .expect("arping");
    assert!(garp.status.success(), "{garp:?}");
}

/// Two APs behind one NAT address, each with two MQTT connections (keepalive
/// 5 s and 60 s): four connections from one public address, told apart by
/// their mapped ports. The VIP moves between A and B thirty times; the new
/// holder kicks what the old holder's monitor saw — two trials in three with
/// the connections' own sequence numbers (the sync's numbers), one in three
/// with a guessed number (the kick before this release) — side by side in
/// one run. With the numbers, every connection must be back within 1.5 s in
/// every trial; the guessed kick's count is printed, not asserted.
#[test]
fn every_mqtt_connection_behind_a_nat_comes_back_with_its_own_numbers() {
    require_root("an AP lab behind a NAT router with MQTT clients and the XDP monitor");
    const KEEPALIVES: [u16; 2] = [5, 60];
    const TRIALS: usize = 30;
    const LIMIT: Duration = Duration::from_millis(1500);
    let lab = ApLab::behind_nat(2).expect("lab");
    let scratch = Scratch::new("mqtt-nat");
    lab.vip_on_a().expect("VIP on A");
    // The monitors see every connection from its SYN.
    let monitors = [attach(&lab.a), attach(&lab.b)];
    let mqtt = Mqtt::start_clients(&lab, &scratch.0.join("mqtt"), &KEEPALIVES)
        .unwrap_or_else(|e| panic!("MQTT clients through the NAT: {e:#}"));
    let clients = mqtt.clients();
    assert_eq!(clients, 4);
    let servers = [lab.a.clone(), lab.b.clone()];
    // When each server's term as the VIP's holder began.
    let mut term_started = [0u64, 0];
    let mut holder = 0;
    let mut informed_back = Vec::new();
    let mut guessed_back = Vec::new();
    for trial in 0..TRIALS {
        let (old, new) = (holder, 1 - holder);
        // Every client connected through the holder, and its numbers fresh
        // (each receives a message every 100 ms and acknowledges it).
        let since = term_started[old];
        wait_until(Duration::from_secs(10), "all four connections seen", || {
            connections(&monitors[old], since).len() == clients
        })
        .unwrap_or_else(|e| {
            panic!(
                "trial {trial}: {e}: {:?}",
                connections(&monitors[old], since)
            )
        });
        let seen = connections(&monitors[old], since);
        assert!(
            seen.iter()
                .all(|(ap, s)| ap.to_string() == NAT_PUBLIC && s.position.is_some()),
            "one public address, every connection's numbers known: {seen:?}"
        );
        let mut ports: Vec<u16> = seen.iter().map(|(_, s)| s.ap_port).collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), clients, "told apart by their mapped ports");
        let informed = trial % 3 != 2;
        let sessions: Vec<(IpAddr, MqttSession)> = seen
            .into_iter()
            .map(|(ap, s)| {
                let position = if informed { s.position } else { None };
                (ap, MqttSession { position, ..s })
            })
            .collect();
        let started = Instant::now();
        term_started[new] = monotonic_now_ns();
        move_vip(&servers[old], &servers[new]);
        let loss = Loss {
            started,
            cut: Instant::now(),
        };
        let report = kick_from(&servers[new], sessions.clone());
        assert!(report.errors.is_empty(), "{report:?}");
        assert_eq!(report.connections, clients, "{report:?}");
        let back = mqtt.wait_all_back(loss, Duration::from_secs(3));
        if informed {
            informed_back.push(back.clone());
        } else {
            guessed_back.push(back.clone());
            if back.iter().any(Option::is_none) {
                // Left stale, the clients would wait for their keepalive:
                // the informed kick cleans up before the next trial.
                kick_from(&servers[new], connections(&monitors[old], since));
                mqtt.wait_all_back(loss, Duration::from_secs(6));
            }
        }
        ip(&["-n", &servers[old], "link", "set", "eth1", "up"]).expect("the old holder back");
        holder = new;
    }
    let within = |trials: &[Vec<Option<Duration>>]| {
        trials
            .iter()
            .filter(|back| back.iter().all(|b| b.is_some_and(|t| t <= LIMIT)))
            .count()
    };
    let slowest = informed_back
        .iter()
        .flatten()
        .filter_map(|b| *b)
        .max()
        .unwrap_or_default();
    eprintln!(
        "MQTT through a NAT, every connection back within {LIMIT:?}: with their own numbers {} of {} trials (slowest {slowest:?}); with a guessed number {} of {}",
        within(&informed_back),
        informed_back.len(),
        within(&guessed_back),
        guessed_back.len(),
    );
    assert_eq!(
        within(&informed_back),
        informed_back.len(),
        "every connection back within {LIMIT:?} in every trial: {informed_back:?}"
    );
}
