//! What the world does behind the daemon's back (issue 31): addresses
//! removed or added by another daemon or an operator.

use std::time::{Duration, Instant};
use wimark_ha::records::State;

use wimark_ha_tests::{
    daemon::{config, has_address, scrape_metrics, wait_until, Daemon, FAST},
    lab::{ip, two_servers},
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
