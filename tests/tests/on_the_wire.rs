//! What the world does behind the daemon's back (issue 31): addresses
//! removed or added by another daemon or an operator.

use std::time::{Duration, Instant};
use wimark_ha::records::State;

use wimark_ha_tests::{
    capture::{realtime_ns, Capture, Seen},
    daemon::{config, has_address, scrape_metrics, wait_until, Daemon, FAST},
    lab::{ip, two_servers, two_servers_on_a_switch},
    require_root,
};

const VIP: &str = "10.77.0.100";
const METRICS: &str = "127.0.0.1:9650";

/// Transitions into MASTER in a daemon's history.
fn takeovers(daemon: &Daemon) -> usize {
    daemon
        .instance()
        .map(|i| i.history.iter().filter(|t| t.to == State::Master).count())
        .unwrap_or(0)
}

/// NetworkManager, networkd reapplying a `.network` file, or an operator's
/// `ip addr del` takes the VIP off the master: the master puts it back at
/// once and announces it, counts and says it, and the peer never takes
/// over; a VIP someone adds on the backup is removed.
#[test]
fn a_vip_removed_by_someone_else_is_put_back_and_one_added_on_the_backup_removed() {
    require_root("a lab with two daemons");
    let (_lab, a, b) = two_servers(true).expect("lab");
    let with_metrics = format!("{FAST}\n\n[metrics]\nlisten = \"{METRICS}\"\n");
    let daemon_a = Daemon::start(&a, "wire-vip-a", |s| config(s, 200, &with_metrics)).expect("A");
    wait_until(Duration::from_secs(5), "A MASTER with the VIP", || {
        daemon_a.state() == Some(State::Master) && has_address(&a, "eth1", VIP)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon_a.log()));
    let daemon_b = Daemon::start(&b, "wire-vip-b", |s| config(s, 100, FAST)).expect("B");
    wait_until(Duration::from_secs(5), "B BACKUP", || {
        daemon_b.state() == Some(State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon_b.log()));
    let (a_before, b_before) = (takeovers(&daemon_a), takeovers(&daemon_b));

    const TRIALS: u64 = 5;
    let mut back_after = Vec::new();
    for trial in 1..=TRIALS {
        let removed = Instant::now();
        ip(&["-n", &a, "addr", "del", &format!("{VIP}/24"), "dev", "eth1"]).expect("del");
        wait_until(Duration::from_secs(2), "the VIP back on A", || {
            has_address(&a, "eth1", VIP)
        })
        .unwrap_or_else(|e| panic!("trial {trial}: {e}\n{}", daemon_a.log()));
        back_after.push(removed.elapsed());
        wait_until(Duration::from_secs(2), "A's status counts it", || {
            daemon_a
                .instance()
                .is_ok_and(|i| i.vips_restored == trial && i.holds_virtual_ips)
        })
        .unwrap_or_else(|e| panic!("trial {trial}: {e}\n{:?}", daemon_a.instance()));
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("VIP back on A after (as the test saw it, polling `ip`): {back_after:?}");
    assert_eq!(daemon_a.state(), Some(State::Master), "{}", daemon_a.log());
    assert_eq!(daemon_b.state(), Some(State::Backup), "{}", daemon_b.log());
    assert_eq!(
        (takeovers(&daemon_a), takeovers(&daemon_b)),
        (a_before, b_before),
        "no flap to the peer\nA: {}\nB: {}",
        daemon_a.log(),
        daemon_b.log()
    );
    assert!(!has_address(&b, "eth1", VIP));
    let log = daemon_a.log();
    assert_eq!(
        log.matches("VIP removed by someone else: put back and announced")
            .count(),
        TRIALS as usize,
        "one line per restore\n{log}"
    );

    // Someone adds the VIP on the backup: removed, and said.
    ip(&["-n", &b, "addr", "add", &format!("{VIP}/24"), "dev", "eth1"]).expect("add on B");
    wait_until(Duration::from_secs(2), "the VIP gone from B", || {
        !has_address(&b, "eth1", VIP)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon_b.log()));
    wait_until(Duration::from_secs(2), "B says so", || {
        daemon_b
            .log()
            .contains("VIP added by someone else while this node must not hold it: removed")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon_b.log()));
    assert!(has_address(&a, "eth1", VIP));
    assert_eq!(daemon_b.state(), Some(State::Backup));

    // The metric.
    let metrics = scrape_metrics(&a, METRICS).expect("scrape A");
    assert!(
        metrics.contains(&format!(
            "wimark_ha_vip_restored_total{{iname=\"WIM1\",intf=\"eth1\",vrid=\"67\"}} {TRIALS}"
        )),
        "{metrics}"
    );
}

/// One trial of issue 31 item 2: the master's link cut (its switch port
/// down: the carrier goes, the route stays), its daemon SIGKILLed 5 ms
/// later, the link back 1 s later with no daemon running. Returns the
/// adverts from A that reached the switch after the link came back: a dead
/// master's adverts, held by the kernel (a unicast peer's neighbour entry
/// could not resolve without carrier) and sent late.
fn adverts_from_a_dead_master(unicast: bool, tag: &str) -> Vec<u8> {
    let (lab, a, b, sw) = two_servers_on_a_switch("eth1").expect("lab");
    lab.address(&a, "eth1", "10.77.0.1/24").expect("A");
    lab.address(&b, "eth1", "10.77.0.2/24").expect("B");
    let body = |peer: &str| {
        let peers = if unicast { "unicast_peers" } else { "peers" };
        format!("{FAST}\n{peers} = [\"{peer}\"]")
    };
    let mut daemon_a =
        Daemon::start(&a, &format!("{tag}-a"), |s| config(s, 200, &body("10.77.0.2"))).expect("A");
    wait_until(Duration::from_secs(5), "A MASTER", || {
        daemon_a.state() == Some(State::Master)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon_a.log()));
    let daemon_b =
        Daemon::start(&b, &format!("{tag}-b"), |s| config(s, 100, &body("10.77.0.1"))).expect("B");
    wait_until(Duration::from_secs(5), "B BACKUP", || {
        daemon_b.state() == Some(State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon_b.log()));
    // On B's link: the switch forwards unicast to B's port only, so its own
    // bridge interface would see only the multicast pair's adverts.
    let capture = Capture::start(&b, "eth1").expect("capture");
    std::thread::sleep(Duration::from_millis(200));
    ip(&["-n", &sw, "link", "set", "a-port", "down"]).expect("cut A");
    std::thread::sleep(Duration::from_millis(5));
    daemon_a.signal(libc::SIGKILL);
    std::thread::sleep(Duration::from_secs(1));
    let link_back = realtime_ns();
    ip(&["-n", &sw, "link", "set", "a-port", "up"]).expect("A's link back");
    // The kernel sent what it held as soon as B's ARP reached A (7-16 ms
    // in the trials); its own probes would have within a second.
    std::thread::sleep(Duration::from_millis(1200));
    let a_address: std::net::IpAddr = "10.77.0.1".parse().expect("ip");
    capture
        .records()
        .into_iter()
        .filter_map(|(at, seen)| match seen {
            Seen::Advert {
                source, priority, ..
            } if at >= link_back && source == a_address => Some(priority),
            _ => None,
        })
        .collect()
}

/// An advert that cannot leave now must never leave later (issue 31 item
/// 2): a dead master's resignation, queued by the kernel while its link had
/// no carrier, reached the wire after the link came back — 5 of 5 trials
/// with `unicast_peers` — and set a keepalived peer, master by then, off.
#[test]
fn a_dead_masters_adverts_never_reach_the_wire_after_its_link_returns() {
    require_root("a lab with two daemons");
    const TRIALS: usize = 5;
    let mut late = Vec::new();
    for unicast in [true, false] {
        for trial in 0..TRIALS {
            let kind = if unicast { "unicast" } else { "multicast" };
            let seen = adverts_from_a_dead_master(unicast, &format!("dead-{kind}-{trial}"));
            if !seen.is_empty() {
                late.push(format!("{kind} trial {trial}: priorities {seen:?}"));
            }
        }
    }
    assert!(
        late.is_empty(),
        "adverts of a dead master reached the wire after its link came back:\n{}",
        late.join("\n")
    );
}

/// The address the master's adverts are sent from removed (issue 31 item
/// 1, "the same for the source address"): the master cannot speak as
/// itself, so it goes to FAULT and the backup takes over; the address back,
/// it starts over and preempts back.
#[test]
fn a_master_whose_advert_source_address_is_removed_hands_over_until_it_is_back() {
    require_root("a lab with two daemons");
    let (_lab, a, b) = two_servers(true).expect("lab");
    let daemon_a = Daemon::start(&a, "wire-src-a", |s| config(s, 200, FAST)).expect("A");
    wait_until(Duration::from_secs(5), "A MASTER", || {
        daemon_a.state() == Some(State::Master)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon_a.log()));
    let daemon_b = Daemon::start(&b, "wire-src-b", |s| config(s, 100, FAST)).expect("B");
    wait_until(Duration::from_secs(5), "B BACKUP", || {
        daemon_b.state() == Some(State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon_b.log()));
    ip(&["-n", &a, "addr", "del", "10.77.0.1/24", "dev", "eth1"]).expect("del A's address");
    wait_until(Duration::from_secs(2), "A FAULT, B MASTER with the VIP", || {
        daemon_a.state() == Some(State::Fault)
            && daemon_b.state() == Some(State::Master)
            && has_address(&b, "eth1", VIP)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));
    assert!(!has_address(&a, "eth1", VIP));
    // Linux took the VIP (same subnet) with A's address: no restore of a
    // VIP about to be given up anyway.
    assert_eq!(
        daemon_a.instance().map(|i| i.vips_restored).ok(),
        Some(0),
        "{}",
        daemon_a.log()
    );
    assert!(
        daemon_a
            .log()
            .contains("the address the adverts are sent from was removed from the interface"),
        "{}",
        daemon_a.log()
    );
    ip(&["-n", &a, "addr", "add", "10.77.0.1/24", "dev", "eth1"]).expect("A's address back");
    wait_until(Duration::from_secs(3), "A MASTER again, B BACKUP", || {
        daemon_a.state() == Some(State::Master)
            && daemon_b.state() == Some(State::Backup)
            && has_address(&a, "eth1", VIP)
            && !has_address(&b, "eth1", VIP)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));
}

/// A pair without `peers` pays the multi-node skew on every fast takeover
/// (issue 31 item 4): `doctor` says so, naming the one other router the
/// XDP monitor heard for the VRID; with `peers` it is OK.
#[test]
fn doctor_names_the_one_peer_heard_when_an_instance_names_none() {
    require_root("a lab with two daemons");
    let (_lab, a, b) = two_servers(true).expect("lab");
    let daemon_a = Daemon::start(&a, "wire-peers-a", |s| config(s, 200, FAST)).expect("A");
    wait_until(Duration::from_secs(5), "A MASTER", || {
        daemon_a.state() == Some(State::Master)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon_a.log()));
    let named = format!("{FAST}\npeers = [\"10.77.0.1\"]");
    let daemon_b = Daemon::start(&b, "wire-peers-b", |s| config(s, 100, &named)).expect("B");
    wait_until(Duration::from_secs(5), "B BACKUP", || {
        daemon_b.state() == Some(State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon_b.log()));
    let finding = |daemon: &Daemon| -> serde_json::Value {
        let findings = daemon.doctor_json();
        findings
            .iter()
            .find(|f| f["check"] == "peers WIM1")
            .cloned()
            .unwrap_or_else(|| panic!("no peers finding: {findings:#?}"))
    };
    // A hears B's adverts? A is master: B sends none. B hears A's.
    let on_a = finding(&daemon_a);
    assert_eq!(on_a["status"], "WARN", "{on_a}");
    let on_b = finding(&daemon_b);
    assert_eq!(on_b["status"], "OK", "{on_b}");
    // Swap roles so that A hears B: B's adverts name it.
    drop(daemon_a);
    let daemon_a = Daemon::start(&a, "wire-peers-a2", |s| config(s, 50, FAST)).expect("A again");
    wait_until(Duration::from_secs(5), "A BACKUP under B", || {
        daemon_a.state() == Some(State::Backup) && daemon_b.state() == Some(State::Master)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));
    let on_a = finding(&daemon_a);
    assert_eq!(on_a["status"], "WARN", "{on_a}");
    assert!(
        on_a["detail"]
            .as_str()
            .is_some_and(|d| d.contains("exactly one other router for VRID 67: 10.77.0.2")),
        "{on_a}"
    );
    assert!(
        on_a["fix"]
            .as_str()
            .is_some_and(|f| f.contains("peers = [\"10.77.0.2\"]")),
        "{on_a}"
    );
}
