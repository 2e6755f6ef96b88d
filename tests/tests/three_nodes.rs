//! More than two nodes on one segment (issue 13, item 4): the fast rule is
//! ordered by priority as Skew_Time orders the RFC timer, so after the
//! master's loss the second-highest backup takes over and the lowest sends
//! nothing — no advert, no gratuitous ARP — in every trial. Before the
//! order, both backups fired at the same instant in every trial and the
//! lowest one's gratuitous ARP was the last word about half of the time.
//!
//! ```text
//!  ns a (200) eth1 ── a-port ─┐
//!  ns b (150) eth1 ── b-port ─┼─ br0 (ns sw, captured)
//!  ns c (100) eth1 ── c-port ─┘
//! ```

use std::{net::IpAddr, thread, time::Duration};

use wimark_ha::records::State;
use wimark_ha_tests::{
    capture::{Capture, Seen},
    daemon::{config, has_address, wait_until, Daemon, FAST},
    keepalived::{Instance, Keepalived},
    lab::{ip, Lab},
};

const TRIALS: usize = 10;
const LOWEST: &str = "10.77.0.3";

/// eth1's MAC in `namespace` (`ip link`: sysfs shows the host's namespace).
fn mac(namespace: &str) -> [u8; 6] {
    let out = std::process::Command::new("ip")
        .args(["-n", namespace, "link", "show", "eth1"])
        .output()
        .expect("ip");
    let text = String::from_utf8_lossy(&out.stdout);
    let address = text
        .split("link/ether ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a MAC in `ip link`");
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(address.split(':')) {
        *byte = u8::from_str_radix(part, 16).expect("hex");
    }
    mac
}

/// One trial: A (200), B (150) wimark-ha, C (100) wimark-ha or keepalived;
/// A lost (link cut + SIGKILL); what C sent after the loss.
fn trial(lowest_is_keepalived: bool) -> (usize, usize, bool) {
    wimark_ha_tests::require_root("a three-node lab");
    let mut lab = Lab::new().expect("lab");
    let names = ["a", "b", "c"];
    let namespaces: Vec<String> = names
        .iter()
        .map(|n| lab.namespace(n, false).expect("namespace"))
        .collect();
    let sw = lab.namespace("sw", false).expect("switch");
    for (name, ns) in names.iter().zip(&namespaces) {
        lab.veth((ns, "eth1"), (&sw, &format!("{name}-port")))
            .expect("veth");
    }
    lab.bridge(&sw, "br0", &["a-port", "b-port", "c-port"])
        .expect("bridge");
    for (k, ns) in namespaces.iter().enumerate() {
        lab.address(ns, "eth1", &format!("10.77.0.{}/24", k + 1))
            .expect("address");
    }
    let capture = Capture::start(&sw, "br0").expect("capture");
    // Multicast and no `peers`: any node may be a competing backup.
    let mut a = Daemon::start(&namespaces[0], "a", |s| config(s, 200, FAST)).expect("A");
    wait_until(Duration::from_secs(5), "A MASTER", || {
        a.state() == Some(State::Master)
    })
    .expect("A master");
    let b = Daemon::start(&namespaces[1], "b", |s| config(s, 150, FAST)).expect("B");
    // The lowest backup, kept running until the trial's end.
    let (c_daemon, c_keepalived) = if lowest_is_keepalived {
        let keepalived = Keepalived::start(
                &namespaces[2],
                "c",
                &Instance {
                    version: 3,
                    priority: 100,
                    advert_int: "0.01",
                    auth_pass: None,
                    vrid: 67,
                    vip: "10.77.0.100/24",
                    nopreempt: false,
                },
            )
            .expect("keepalived C");
        (None, Some(keepalived))
    } else {
        let daemon = Daemon::start(&namespaces[2], "c", |s| config(s, 100, FAST)).expect("C");
        (Some(daemon), None)
    };
    b.wait_fast_rule_armed().expect("B armed");
    if let Some(c) = &c_daemon {
        c.wait_fast_rule_armed().expect("C armed");
    }
    let lowest: IpAddr = LOWEST.parse().expect("ip");
    let c_mac = mac(&namespaces[2]);
    let failed_at = wimark_ha_tests::capture::realtime_ns();
    ip(&["-n", &sw, "link", "set", "a-port", "down"]).expect("cut");
    a.signal(libc::SIGKILL);
    a.wait();
    wait_until(Duration::from_secs(2), "B MASTER", || {
        b.state() == Some(State::Master)
    })
    .unwrap_or_else(|e| panic!("{e}\nB: {}", b.log()));
    // Long past any of C's deadlines (its RFC timer too).
    thread::sleep(Duration::from_millis(300));
    let after: Vec<Seen> = capture
        .records()
        .into_iter()
        .filter(|(at, _)| *at >= failed_at)
        .map(|(_, seen)| seen)
        .collect();
    let adverts = after
        .iter()
        .filter(|s| matches!(s, Seen::Advert { source, priority, .. } if *source == lowest && *priority > 0))
        .count();
    let garps = after
        .iter()
        .filter(|s| matches!(s, Seen::GratuitousArp { mac, .. } if *mac == c_mac))
        .count();
    let b_holds = has_address(&namespaces[1], "eth1", "10.77.0.100");
    drop((c_daemon, c_keepalived));
    (adverts, garps, b_holds)
}

/// The two tests one after the other: the order rests on a margin of
/// `50/256` of max(window, 20 ms) between the 150 and the 100 (3.9 ms; it
/// was ~2 ms at 1 ms x 10, and a stalled 150 passed it in 1 of 20 trials with
/// two labs at once, 1 of 10 with one), and a second lab's load is not what
/// either test is about.
static ONE_LAB_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn trials(lowest_is_keepalived: bool) {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut failures = Vec::new();
    for n in 0..TRIALS {
        let (adverts, garps, b_holds) = trial(lowest_is_keepalived);
        if adverts > 0 || garps > 0 || !b_holds {
            failures.push(format!(
                "trial {n}: {adverts} advert(s) and {garps} gratuitous ARP(s) from the 100; the 150 holds the VIP: {b_holds}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn after_the_masters_loss_the_150_takes_over_and_the_100_sends_nothing() {
    trials(false);
}

#[test]
fn the_same_with_keepalived_as_the_lowest_backup() {
    trials(true);
}
