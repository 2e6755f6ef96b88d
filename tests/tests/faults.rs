//! The fault matrix (issue 6), as far as it stands: where the VIP ends up,
//! and that every transition is in the history.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wimark_ha_tests::{
    daemon::{config, has_address, wait_until, Daemon},
    lab::two_servers,
};

const FAST: &str = "version = 3\nadvert_interval = \"10ms\"\nvirtual_ips = [\"10.77.0.100/24\"]\nfast_detect = { interval = \"1ms\", multiplier = 3 }";

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn transitions(daemon: &Daemon) -> Vec<(u64, String, String)> {
    daemon
        .instance()
        .map(|i| {
            i.history
                .iter()
                .map(|t| (t.at_unix_ms, t.from.clone(), t.to.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_master_stopped_for_two_seconds_does_not_keep_the_vip_beside_the_new_one() {
    let (_lab, a, b) = two_servers(true).expect("lab");
    let mut daemon_a = Daemon::start(&a, "stop-a", |s| config(s, 200, FAST)).expect("A");
    wait_until(Duration::from_secs(5), "A MASTER", || {
        daemon_a.state() == "MASTER"
    })
    .expect("A first");
    let daemon_b = Daemon::start(&b, "stop-b", |s| config(s, 100, FAST)).expect("B");
    wait_until(Duration::from_secs(5), "B BACKUP", || {
        daemon_b.state() == "BACKUP"
    })
    .expect("B backup");

    daemon_a.signal(libc::SIGSTOP);
    wait_until(Duration::from_secs(2), "B takes over", || {
        daemon_b.state() == "MASTER" && has_address(&b, "eth1", "10.77.0.100")
    })
    .expect("B master while A is stopped");
    std::thread::sleep(Duration::from_secs(2));
    let resumed = unix_ms();
    daemon_a.signal(libc::SIGCONT);

    // A (priority 200, preempt) is master again; B hands back at once.
    wait_until(Duration::from_secs(2), "exactly one holder", || {
        has_address(&a, "eth1", "10.77.0.100") != has_address(&b, "eth1", "10.77.0.100")
    })
    .expect("one holder");
    wait_until(Duration::from_secs(2), "B BACKUP again", || {
        daemon_b.state() == "BACKUP"
    })
    .expect("B backs off");
    assert!(has_address(&a, "eth1", "10.77.0.100") && !has_address(&b, "eth1", "10.77.0.100"));
    let b_history = transitions(&daemon_b);
    let back = b_history
        .iter()
        .rev()
        .find(|t| t.1 == "MASTER" && t.2 == "BACKUP")
        .unwrap_or_else(|| panic!("B's hand-back is in its history: {b_history:?}"));
    // Both held the VIP from A's wake-up until B heard A's first advert:
    // at most one advert interval (10 ms), plus ms rounding and scheduling.
    let overlap = back.0.saturating_sub(resumed);
    assert!(overlap <= 25, "two holders for {overlap} ms after SIGCONT");
    // Nothing lost: B went BACKUP → MASTER → BACKUP; A never left MASTER.
    let kinds: Vec<(String, String)> = b_history
        .iter()
        .map(|t| (t.1.clone(), t.2.clone()))
        .collect();
    assert!(
        kinds.ends_with(&[
            ("BACKUP".to_string(), "MASTER".to_string()),
            ("MASTER".to_string(), "BACKUP".to_string())
        ]),
        "{kinds:?}"
    );
    let a_history = transitions(&daemon_a);
    assert_eq!(
        a_history.last().map(|t| t.2.as_str()),
        Some("MASTER"),
        "{a_history:?}"
    );
    assert!(
        a_history
            .iter()
            .all(|t| t.0 < resumed - 2000 || t.2 == "MASTER"),
        "A did not flap after waking: {a_history:?}"
    );
}
