//! What an operator sees of a failover: the Prometheus endpoint (scraped
//! before and after, the histograms move), the failover journal (`history`,
//! including "APs back" once the AP opens a session with the new master),
//! and the history still shown by `status` after the daemon restarts.

use std::time::Duration;
use wimark_ha::records::State;

use wimark_ha_tests::{
    daemon::wait_until,
    failover_lab::{FailoverLab, Failure, Pair},
    wimark_ha_bin,
};

const METRICS: &str = "127.0.0.1:9650";

/// `GET /metrics` from inside `namespace` (the endpoint binds its loopback).
fn scrape(namespace: &str) -> String {
    wimark_ha_tests::daemon::scrape_metrics(namespace, METRICS)
        .unwrap_or_else(|e| panic!("scraping {METRICS} in {namespace}: {e}"))
}

/// The value of the sample line starting with `series`, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_history_and_aps_back_after_a_failover() {
    wimark_ha_tests::require_root("the observability lab");
    let metrics = format!("[metrics]\nlisten = \"{METRICS}\"\n");
    // The packaged default (auto window): a fixed 1 ms × 10 false-fails on
    // a loaded host, and this test counts the takeovers.
    let mut lab = FailoverLab::with_extra(Pair::WimarkHaFast, [metrics.clone(), metrics]).expect("lab");
    let b = lab.b.clone();

    let before = scrape(&b);
    assert!(before.starts_with("HTTP/1.1 200"), "{before}");
    assert!(
        before.contains("content-type: application/openmetrics-text"),
        "{before}"
    );
    let state = "wimark_ha_vrrp_state{iname=\"WIM1\",intf=\"eth1\",vrid=\"67\"}";
    assert_eq!(sample(&before, state), Some(1.0), "B is BACKUP:\n{before}");
    let detections = "wimark_ha_failover_detection_seconds_count{iname=\"WIM1\"}";
    assert_eq!(sample(&before, detections).unwrap_or(0.0), 0.0, "{before}");
    let received =
        "wimark_ha_advertisements_received_total{iname=\"WIM1\",intf=\"eth1\",vrid=\"67\"}";
    assert!(sample(&before, received).unwrap_or(0.0) > 0.0, "{before}");
    assert!(
        sample(
            &before,
            "wimark_ha_xdp_packets_total{interface=\"eth1\",class=\"vrrp\"}"
        )
        .unwrap_or(0.0)
            > 0.0,
        "{before}"
    );

    lab.fail(Failure::NodeLoss).expect("failover");
    let daemon_b = lab.daemon(1).expect("wimark-ha on B");
    let state_dir = daemon_b.state_dir();
    let history = || -> serde_json::Value {
        let output = std::process::Command::new(wimark_ha_bin())
            .args(["history", "--json", "--state-dir"])
            .arg(&state_dir)
            .output()
            .expect("wimark-ha history");
        assert!(output.status.success(), "{output:?}");
        serde_json::from_slice(&output.stdout).expect("history JSON")
    };
    // The probe stream (NAT-T data of an existing session) is not an AP
    // coming back; the AP opening an IKE session with the new master is.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !history()
            .as_array()
            .is_some_and(|h| h.iter().any(|e| e["kind"] == "aps_back")),
        "stale-session traffic counted as an AP back: {}",
        history()
    );
    lab.ap_opens_session().expect("IKE_AUTH from the AP");
    wait_until(Duration::from_secs(5), "APs back recorded", || {
        history()
            .as_array()
            .is_some_and(|h| h.iter().any(|e| e["kind"] == "aps_back"))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", history(), daemon_b.log()));
    let entries = history();
    let entries = entries.as_array().expect("array");
    let takeover = entries
        .iter()
        .find(|e| e["kind"] == "transition" && e["record"]["to"] == "MASTER")
        .expect("the takeover is journaled");
    assert!(
        takeover["record"]["silence_us"].as_u64().is_some(),
        "{takeover}"
    );
    let aps_back_entry = entries
        .iter()
        .find(|e| e["kind"] == "aps_back")
        .expect("aps_back");
    let aps_back = aps_back_entry["after_ms"].as_f64().expect("after_ms");
    assert!(
        aps_back > 300.0 && aps_back < 2000.0,
        "APs back after {aps_back} ms: the session, not the probes"
    );
    // Without [ap_recovery] B expects only what its own monitor saw (the
    // lab's one AP, flooded before the switch learned A's port, or none).
    assert_eq!(aps_back_entry["per_ap"]["back"], 1, "{aps_back_entry}");
    assert!(
        aps_back_entry["per_ap"]["expected"].as_u64() <= Some(1)
            && aps_back_entry["per_ap"]["missing"].is_null(),
        "{aps_back_entry}"
    );

    let after = scrape(&b);
    assert_eq!(sample(&after, state), Some(2.0), "B is MASTER:\n{after}");
    assert_eq!(sample(&after, detections), Some(1.0), "{after}");
    let detection_sum = sample(
        &after,
        "wimark_ha_failover_detection_seconds_sum{iname=\"WIM1\"}",
    )
    .expect("sum");
    assert!(
        detection_sum > 0.0 && detection_sum < 0.1,
        "{detection_sum}"
    );
    assert_eq!(
        sample(&after, "wimark_ha_become_master_total{iname=\"WIM1\"}"),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            "wimark_ha_failover_aps_back_seconds_count{iname=\"WIM1\"}"
        ),
        Some(1.0),
        "{after}"
    );
    assert!(
        sample(&after, "wimark_ha_active_aps{interface=\"eth1\"}").unwrap_or(0.0) >= 1.0,
        "{after}"
    );
    // Per session kind: the AP B expected (its NAT-T seen, so its IKE
    // session) came back by the IKE_SA_INIT it opened.
    if aps_back_entry["per_ap"]["expected"] == 1 {
        assert_eq!(
            aps_back_entry["per_ap"]["sessions"]["ike_back"], 1,
            "{aps_back_entry}"
        );
        for series in ["expected", "back"] {
            assert_eq!(
                sample(
                    &after,
                    &format!("wimark_ha_ap_sessions_{series}_total{{iname=\"WIM1\",kind=\"ike\"}}")
                ),
                Some(1.0),
                "{after}"
            );
        }
    }

    // The human form says the same.
    let output = std::process::Command::new(wimark_ha_bin())
        .args(["history", "--state-dir"])
        .arg(&state_dir)
        .output()
        .expect("wimark-ha history");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("WIM1: BACKUP -> MASTER") && text.contains("WIM1: APs back: "),
        "{text}"
    );
}

#[test]
fn history_survives_a_restart_and_status_shows_it() {
    wimark_ha_tests::require_root("the observability lab");
    // The packaged default (auto window): a fixed 1 ms × 10 false-fails on
    // a loaded host (CI saw a second takeover), and this test counts them.
    let mut lab = FailoverLab::new(Pair::WimarkHaFast).expect("lab");
    lab.fail(Failure::NodeLoss).expect("failover");
    // Both daemons' adverts (A's before the loss, B's after) are marked
    // internetwork control, as keepalived's are, for QoS queues.
    assert_eq!(lab.advert_tos_seen(), vec![0xc0], "TOS of the adverts seen");
    // Its gratuitous ARPs are keepalived's, field for field (below).
    assert_eq!(lab.garp_fields_seen(), vec![(1, [0xff; 6])], "wimark-ha's GARPs");
    let takeovers = |lab: &FailoverLab| {
        lab.daemon(1)
            .and_then(|d| d.instance().ok())
            .map(|i| i.history.iter().filter(|t| t.to == State::Master).count())
            .unwrap_or(0)
    };
    assert_eq!(takeovers(&lab), 1);
    lab.restart_b().expect("B restarted");
    // The new process shows the takeover of the old one, and its own start.
    wait_until(Duration::from_secs(5), "B MASTER again", || {
        lab.daemon(1)
            .is_some_and(|d| d.state() == Some(State::Master))
    })
    .expect("B back");
    assert!(
        takeovers(&lab) >= 2,
        "{:?}",
        lab.daemon(1).map(|d| d.instance())
    );
}

#[test]
fn a_v2_password_never_shows_in_logs_status_history_or_metrics() {
    wimark_ha_tests::require_root("a lab");
    const PASSWORD: &str = "s3cr3tpw";
    let (_lab, a, b) = wimark_ha_tests::lab::two_servers(true).expect("lab");
    let extra = format!(
        "version = 2\nadvert_interval = \"1s\"\nauth_pass = \"{PASSWORD}\"\nvirtual_ips = [\"10.77.0.100/24\"]\n\n[metrics]\nlisten = \"{METRICS}\"\n"
    );
    let launch = wimark_ha_tests::daemon::Launch {
        wrapper: Vec::new(),
        // Everything the daemon can log.
        env: vec![("RUST_LOG".to_string(), "trace".to_string())],
    };
    let config =
        |s: &std::path::Path, priority| wimark_ha_tests::daemon::config(s, priority, &extra);
    let daemon_a = wimark_ha_tests::daemon::Daemon::start_with(
        &a,
        "secret-a",
        |s| config(s, 200),
        launch.clone(),
    )
    .expect("A");
    // A peer with the wrong password: its adverts are refused and logged.
    let wrong = extra.replace(PASSWORD, "wrongpw1");
    let _daemon_b = wimark_ha_tests::daemon::Daemon::start_with(
        &b,
        "secret-b",
        |s| wimark_ha_tests::daemon::config(s, 100, &wrong),
        launch,
    )
    .expect("B");
    wait_until(
        Duration::from_secs(10),
        "A MASTER, B's adverts refused",
        || {
            daemon_a.state() == Some(State::Master)
                && daemon_a
                    .instance()
                    .is_ok_and(|i| i.ignored.get(wimark_ha::records::IgnoredReason::Auth) > 0)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon_a.log()));
    let status = serde_json::to_string(&daemon_a.status().expect("status")).expect("json");
    let metrics = scrape(&a);
    let history = std::process::Command::new(wimark_ha_bin())
        .args(["history", "--json", "--state-dir"])
        .arg(daemon_a.state_dir())
        .output()
        .expect("history");
    let check = std::process::Command::new(wimark_ha_bin())
        .args(["check-config", "--config"])
        .arg(&daemon_a.config)
        .output()
        .expect("check-config");
    for (what, text) in [
        ("log", daemon_a.log()),
        ("status", status),
        ("metrics", metrics),
        (
            "history",
            String::from_utf8_lossy(&history.stdout).to_string(),
        ),
        (
            "check-config",
            String::from_utf8_lossy(&check.stdout).to_string()
                + &String::from_utf8_lossy(&check.stderr),
        ),
    ] {
        assert!(!text.is_empty(), "{what} is empty");
        assert!(
            !text.contains(PASSWORD),
            "the password shows in the {what}:\n{text}"
        );
        // Nor as the bytes a derived Debug would print.
        let bytes = PASSWORD
            .bytes()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        assert!(
            !text.contains(&bytes),
            "the password's bytes show in the {what}:\n{text}"
        );
    }
}

/// keepalived's gratuitous ARP, captured in the same lab: a request with the
/// target hardware address all ones — what switches and AP firmware of
/// keepalived pairs learn from (wimark-ha's sent zeros, RFC 5227's form).
#[test]
fn keepalived_sends_the_gratuitous_arp_wimark_ha_sends() {
    wimark_ha_tests::require_root("the observability lab (keepalived)");
    let mut lab = FailoverLab::new(Pair::KeepalivedV3Fast).expect("keepalived lab");
    lab.fail(Failure::NodeLoss).expect("failover");
    assert_eq!(lab.garp_fields_seen(), vec![(1, [0xff; 6])], "keepalived's GARPs");
}

/// The table the eviction test sizes (`[ap_recovery] max_aps`): 16 sets
/// of eight ways.
const SMALL_TABLE_APS: u32 = 16;

/// One AP address more than a set has ways, all falling into one set of a
/// table of `sets` sets, from 10.77.128.0/17: the last evicts one.
fn colliding_aps(sets: u32) -> Vec<std::net::Ipv4Addr> {
    use wimark_ha_common::abi::{ap_set, IpBytes, AP_SET_WAYS};
    let bits = sets.trailing_zeros();
    let set_of = |a: std::net::Ipv4Addr| ap_set(&IpBytes::from(std::net::IpAddr::V4(a)), bits);
    let first = std::net::Ipv4Addr::new(10, 77, 128, 1);
    let mut found = vec![first];
    for n in 2..32767u32 {
        let candidate = std::net::Ipv4Addr::from(u32::from(first) - 1 + n);
        if set_of(candidate) == set_of(first) {
            found.push(candidate);
            if found.len() == AP_SET_WAYS + 1 {
                return found;
            }
        }
    }
    panic!("no {} colliding addresses in 10.77.128.0/17: {found:?}", AP_SET_WAYS + 1);
}

/// More APs in one set than it has ways (issue 28 item 4): the table
/// evicts, and the operator sees it — the metric, a WARN line, and
/// `status` saying how full the table is. The table is the size
/// `[ap_recovery] max_aps` asked for (issue 29 item 4).
#[test]
fn ap_table_evictions_are_counted_warned_and_shown() {
    use wimark_ha_common::abi::{ap_table_sets, AP_SET_WAYS};
    wimark_ha_tests::require_root("a lab with a daemon and AP traffic");
    let (_lab, a, b) = wimark_ha_tests::lab::two_servers(true).expect("lab");
    let scratch = wimark_ha_tests::Scratch::new("ap-table-small");
    let key = wimark_ha_tests::ap_clients::write_sync_key(&scratch.0).expect("key");
    let body = format!(
        "{}\n\n[metrics]\nlisten = \"{METRICS}\"\n\n[ap_recovery]\nsync_key_file = \"{}\"\nsync_peer = \"10.77.0.2\"\nmax_aps = {SMALL_TABLE_APS}\n",
        wimark_ha_tests::daemon::FAST,
        key.display()
    );
    let daemon = wimark_ha_tests::daemon::Daemon::start(&a, "evict", |s| {
        wimark_ha_tests::daemon::config(s, 200, &body)
    })
    .expect("daemon");
    wait_until(Duration::from_secs(5), "A MASTER", || {
        daemon.state() == Some(State::Master)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    let sets = ap_table_sets(SMALL_TABLE_APS);
    let capacity = sets as usize * AP_SET_WAYS;
    let aps = colliding_aps(sets);
    for ap in &aps {
        wimark_ha_tests::lab::ip(&["-n", &b, "addr", "add", &format!("{ap}/32"), "dev", "eth1"])
            .expect("AP address");
    }
    // IKE from each AP in turn, twice: the ninth takes a way in turn, the
    // AP it took comes back and takes the next, and so on. The table is
    // per CPU and a veth runs XDP on the sender's CPU: one CPU, so that
    // all of them meet in one table.
    let sources = aps.clone();
    wimark_ha_tests::lab::in_netns(&b, move || {
        // SAFETY: a zeroed cpu_set_t with CPU 0 set, for this thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            assert_eq!(
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
                0,
                "pinning the AP sender to CPU 0"
            );
        }
        for _ in 0..2 {
            for ap in &sources {
                let socket = std::net::UdpSocket::bind((*ap, 0)).expect("bind");
                socket
                    .send_to(&[0u8; 40], ("10.77.0.1", 500))
                    .expect("IKE");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    })
    .expect("AP traffic");
    let evictions = "wimark_ha_ap_table_evictions_total{interface=\"eth1\"}";
    wait_until(Duration::from_secs(5), "evictions in the metrics", || {
        sample(&scrape(&a), evictions).unwrap_or(0.0) >= 1.0
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", scrape(&a)));
    let text = scrape(&a);
    assert_eq!(
        sample(&text, "wimark_ha_ap_table_capacity{interface=\"eth1\"}"),
        Some(capacity as f64),
        "{sets} sets of {AP_SET_WAYS} for max_aps = {SMALL_TABLE_APS}: {text}"
    );
    assert_eq!(
        sample(&text, "wimark_ha_ap_table_entries{interface=\"eth1\"}"),
        Some(AP_SET_WAYS as f64),
        "{AP_SET_WAYS} ways hold {AP_SET_WAYS} of the {}: {text}",
        aps.len()
    );
    // The eviction logger reads every 10 s and says the first at once.
    wait_until(Duration::from_secs(15), "the WARN", || {
        daemon.log().contains("AP table: ")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    let log = daemon.log();
    assert_eq!(
        log.matches("AP(s) evicted since the last report").count(),
        1,
        "one line, not one per eviction:\n{log}"
    );
    let status = wimark_ha_tests::daemon::status_text(&a, &daemon.socket);
    let fill = 100 * AP_SET_WAYS / capacity;
    assert!(
        status.contains(&format!(
            "known {AP_SET_WAYS} of {capacity} ({fill} % of the AP table), evicted"
        )),
        "{status}"
    );
}
