//! Interoperability with Debian's keepalived, the vendor's VRRP daemon, in
//! both directions and both versions: whoever should be master is, the
//! other never holds the VIP meanwhile, and failovers and hand-overs cross
//! between the two implementations.

use std::{thread, time::Duration};
use wimark_ha::records::{Reason, State};

use wimark_ha_tests::{
    daemon::{config, has_address, wait_until, Daemon, FAST},
    keepalived::{Instance, Keepalived},
    lab::{two_servers, Lab},
};

const VIP: &str = "10.77.0.100";
const V2: &str = "version = 2\nadvert_interval = \"1s\"\nauth_pass = \"wimark12\"\nvirtual_ips = [\"10.77.0.100/24\"]";

fn lab() -> (Lab, String, String) {
    assert!(
        std::path::Path::new("/usr/sbin/keepalived").exists(),
        "keepalived is not installed (Debian package keepalived; `cargo xtask prereqs` installs it)"
    );
    two_servers(true).expect("two-server lab")
}

fn vendor(priority: u8, auth_pass: &str) -> Instance<'_> {
    Instance {
        version: 2,
        priority,
        advert_int: "1",
        auth_pass: Some(auth_pass),
        vrid: 67,
        vip: "10.77.0.100/24",
        nopreempt: false,
    }
}

/// For `period`, checks every 10 ms that `check` holds.
fn holds_for(period: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + period;
    while std::time::Instant::now() < end {
        assert!(check(), "{what} stopped holding");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn keepalived_v2_master_wimark_ha_backup_then_failover_and_preempt_back() {
    let (_lab, a, b) = lab();
    let mut keepalived = Keepalived::start(&a, "ka", &vendor(200, "wimark12")).expect("keepalived");
    wait_until(Duration::from_secs(8), "keepalived MASTER", || {
        keepalived.states().contains(&"MASTER".to_string())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", keepalived.log()));
    let daemon = Daemon::start(&b, "b", |s| config(s, 100, V2)).expect("wimark-ha");
    // 4 s: longer than its Master_Down_Interval (3.6 s at priority 100).
    holds_for(
        Duration::from_secs(4),
        "wimark-ha BACKUP without the VIP while keepalived is master",
        || daemon.state() == Some(State::Backup) && !has_address(&b, "eth1", VIP),
    );
    let status = daemon.instance().expect("status");
    assert_eq!(
        status.master.map(|m| m.to_string()).as_deref(),
        Some("10.77.0.1")
    );
    assert!(status.adverts_received >= 3, "{status:?}");

    keepalived.kill();
    wait_until(
        Duration::from_secs(6),
        "wimark-ha MASTER after keepalived died",
        || daemon.state() == Some(State::Master),
    )
    .expect("takeover within the RFC interval");
    assert!(has_address(&b, "eth1", VIP));
    assert_eq!(daemon.last_transition().reason, Reason::MasterDown);

    // keepalived comes back with the higher priority and preempts.
    keepalived.restart().expect("restart keepalived");
    wait_until(
        Duration::from_secs(10),
        "wimark-ha gives the VIP back",
        || daemon.state() == Some(State::Backup) && !has_address(&b, "eth1", VIP),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", keepalived.log()));
}

#[test]
fn wimark_ha_v2_master_keepalived_backup_and_switchover() {
    let (_lab, a, b) = lab();
    let daemon = Daemon::start(&a, "a", |s| config(s, 200, V2)).expect("wimark-ha");
    wait_until(Duration::from_secs(6), "wimark-ha MASTER", || {
        daemon.state() == Some(State::Master)
    })
    .expect("alone, it becomes master");
    let keepalived = Keepalived::start(&b, "kb", &vendor(100, "wimark12")).expect("keepalived");
    holds_for(Duration::from_secs(4), "keepalived BACKUP", || {
        !keepalived.states().contains(&"MASTER".to_string()) && !has_address(&b, "eth1", VIP)
    });
    assert!(
        keepalived.states().contains(&"BACKUP".to_string()),
        "{}",
        keepalived.log()
    );

    let response = wimark_ha::control::request(
        &daemon.socket,
        &wimark_ha::control::Request::Switchover {
            instance: None,
            back: false,
        },
    )
    .expect("switchover");
    assert!(response.ok, "{response:?}");
    // keepalived honours priority 0: master after its skew time (0.6 s).
    wait_until(Duration::from_secs(3), "keepalived MASTER", || {
        keepalived.states().last().map(String::as_str) == Some("MASTER")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", keepalived.log()));
    wait_until(Duration::from_secs(2), "VIP moved", || {
        has_address(&b, "eth1", VIP) && !has_address(&a, "eth1", VIP)
    })
    .expect("VIP on keepalived's side only");
}

#[test]
fn v3_10ms_both_directions_and_the_fast_rule_never_judges_keepalived() {
    let (_lab, a, b) = lab();
    let v3 = Instance::v3_10ms;
    // keepalived master at 10 ms; wimark-ha backup with fast detection on.
    let mut keepalived = Keepalived::start(&a, "ka", &v3(200)).expect("keepalived");
    wait_until(Duration::from_secs(3), "keepalived MASTER", || {
        keepalived.states().contains(&"MASTER".to_string())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", keepalived.log()));
    let mut daemon = Daemon::start(&b, "b", |s| config(s, 100, FAST)).expect("wimark-ha");
    holds_for(
        Duration::from_secs(2),
        "wimark-ha BACKUP (no fast-rule takeover of a 10 ms master)",
        || daemon.state() == Some(State::Backup) && !has_address(&b, "eth1", VIP),
    );
    keepalived.kill();
    wait_until(Duration::from_secs(2), "wimark-ha MASTER", || {
        daemon.state() == Some(State::Master)
    })
    .expect("takeover");
    assert_eq!(daemon.last_transition().reason, Reason::MasterDown);

    // Now the other way: wimark-ha master, keepalived (lower priority) backup.
    // The killed keepalived left its VIP on A (a daemon killed alone does);
    // clear it as a restart would.
    drop(keepalived);
    wimark_ha_tests::lab::ip(&["-n", &a, "addr", "del", "10.77.0.100/24", "dev", "eth1"])
        .expect("clear VIP");
    let keepalived = Keepalived::start(&a, "ka2", &v3(50)).expect("keepalived");
    // keepalived's own 38 ms Master_Down_Interval can fire on a stall of
    // its own (BRIEF §3 saw it idle): keep this window short but meaningful.
    holds_for(
        Duration::from_secs(1),
        "keepalived BACKUP under a wimark-ha master",
        || !keepalived.states().contains(&"MASTER".to_string()) && !has_address(&a, "eth1", VIP),
    );
    daemon.signal(libc::SIGKILL);
    daemon.wait();
    wait_until(
        Duration::from_secs(2),
        "keepalived MASTER after wimark-ha died",
        || keepalived.states().last().map(String::as_str) == Some("MASTER"),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", keepalived.log()));
}

#[test]
fn a_wrong_password_is_counted_and_never_obeyed() {
    let (_lab, a, b) = lab();
    let keepalived = Keepalived::start(&a, "ka", &vendor(250, "intruder")).expect("keepalived");
    wait_until(Duration::from_secs(8), "keepalived MASTER", || {
        keepalived.states().contains(&"MASTER".to_string())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", keepalived.log()));
    let daemon = Daemon::start(&b, "b", |s| config(s, 100, V2)).expect("wimark-ha");
    // Its adverts do not count: wimark-ha becomes master after its own timer.
    wait_until(
        Duration::from_secs(6),
        "wimark-ha MASTER despite a higher-priority forger",
        || daemon.state() == Some(State::Master),
    )
    .expect("never obeyed");
    let status = daemon.instance().expect("status");
    assert!(
        status.ignored.get(wimark_ha::records::IgnoredReason::Auth) >= 2,
        "{status:?}"
    );
    assert_eq!(status.adverts_received, 0);
    drop(keepalived);
}
