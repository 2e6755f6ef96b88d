//! Split brain: heartbeats on two links, fencing, and a split that heals.
//!
//! ```text
//!  ns a (server A) eth0 ── a-port ─┐
//!                                  ├─ br0 (ns sw): the AP-facing link, VIP here
//!  ns b (server B) eth0 ── b-port ─┘
//!  ns a eth1 ──────────────── ns b eth1: the peer link
//! ```
//!
//! Cutting the AP-facing link is done in the switch (`a-port` leaves the
//! bridge: no frames, carrier stays up, as a broken switch would do);
//! cutting the peer link takes its carrier down, as a pulled cable would.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wimark_ha::records::{Reason, Stack as RunningStack, State};

use wimark_ha_tests::{
    daemon::{has_address, roles_json, wait_until, Daemon},
    docker::{require_dockerd, Stack},
    lab::{ip, two_servers_on_a_switch},
    Scratch,
};

const VIP: &str = "10.78.0.100";
/// One advert interval of the pair: the bound for a healed split.
const ADVERT_INTERVAL_MS: u64 = 10;

fn node_config(
    socket: &std::path::Path,
    priority: u8,
    peer_eth0: &str,
    peer_eth1: &str,
    project: &str,
    fence_ok: &std::path::Path,
) -> String {
    format!(
        r#"[daemon]
control_socket = "{socket}"

[[instance]]
name = "WIM1"
interface = "eth0"
vrid = 67
priority = {priority}
version = 3
advert_interval = "{ADVERT_INTERVAL_MS}ms"
virtual_ips = ["{VIP}/24"]
fast_detect = {{ interval = "1ms", multiplier = 10 }}
peers = ["{peer_eth0}"]

[[instance.heartbeat]]
interface = "eth1"
peer = "{peer_eth1}"

[roles]
instance = "WIM1"
master = {{ compose_project = "{project}-master" }}
backup = {{ compose_project = "{project}-backup" }}
stop_timeout = "2s"
demote_delay = "200ms"

[fencing]
command = ["/bin/sh", "-c", "test -e {fence_ok}"]
timeout = "2s"
"#,
        socket = socket.display(),
        fence_ok = fence_ok.display(),
    )
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Nothing may change for `how_long`: B stays BACKUP without the VIP.
fn hold_still(a: &Daemon, b: &Daemon, (ns_a, ns_b): (&str, &str), how_long: Duration) {
    let until = std::time::Instant::now() + how_long;
    while std::time::Instant::now() < until {
        assert_eq!(b.state(), Some(State::Backup), "B took over: {}", b.log());
        assert_eq!(a.state(), Some(State::Master), "A gave up: {}", a.log());
        assert!(!has_address(ns_b, "eth0", VIP), "second VIP holder");
        assert!(has_address(ns_a, "eth0", VIP), "A lost the VIP");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Joins the AP-facing link again and returns the wall clock just after.
fn heal_ap_link(sw: &str) -> u64 {
    ip(&["-n", sw, "link", "set", "a-port", "master", "br0"]).expect("a-port back");
    unix_ms()
}

/// B's last transition must be MASTER → BACKUP within one advert interval
/// of the heal, A never having left MASTER.
fn check_healed(a: &Daemon, b: &Daemon, (ns_a, ns_b): (&str, &str), healed_at: u64) {
    wait_until(Duration::from_secs(5), "B back to BACKUP", || {
        b.state() == Some(State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\nB: {}", b.log()));
    let back = b.last_transition();
    assert_eq!(
        (back.from, back.to, back.reason),
        (State::Master, State::Backup, Reason::PreemptedByPeer)
    );
    eprintln!(
        "healed: B stepped down {} ms after the AP link came back",
        back.at_unix_ms as i64 - healed_at as i64
    );
    assert!(
        back.at_unix_ms <= healed_at + ADVERT_INTERVAL_MS,
        "B stepped down {} ms after the heal; one advert interval is {ADVERT_INTERVAL_MS} ms",
        back.at_unix_ms.saturating_sub(healed_at)
    );
    assert_eq!(a.state(), Some(State::Master));
    assert!(has_address(ns_a, "eth0", VIP));
    assert!(!has_address(ns_b, "eth0", VIP), "B kept the VIP");
}

#[test]
fn heartbeats_on_two_links_fencing_and_a_healed_split() {
    require_dockerd();
    let tag = format!("whs{}", std::process::id());
    let a_master = Stack::create(&format!("{tag}-a-master"), 2, None).expect("stack");
    let _a_backup = Stack::create(&format!("{tag}-a-backup"), 1, None).expect("stack");
    let b_master = Stack::create(&format!("{tag}-b-master"), 2, None).expect("stack");
    let b_backup = Stack::create(&format!("{tag}-b-backup"), 1, None).expect("stack");
    let scratch = Scratch::new("split-brain");
    // Each node's fencing succeeds while its file exists. A fences too when
    // it starts alone (a silent peer may be a cut one); it may.
    let a_fence_ok = scratch.0.join("a-fence-ok");
    let fence_ok = scratch.0.join("b-fence-ok");
    std::fs::write(&a_fence_ok, "").expect("a-fence-ok");

    let (lab, ns_a, ns_b, sw) = two_servers_on_a_switch("eth0").expect("lab");
    lab.veth((&ns_a, "eth1"), (&ns_b, "eth1")).expect("veth");
    for (ns, eth0, eth1) in [
        (&ns_a, "10.78.0.1/24", "10.77.0.1/24"),
        (&ns_b, "10.78.0.2/24", "10.77.0.2/24"),
    ] {
        lab.address(ns, "eth0", eth0).expect("address");
        lab.address(ns, "eth1", eth1).expect("address");
    }
    let nodes = (ns_a.as_str(), ns_b.as_str());

    let a = Daemon::start(&ns_a, "split-a", |s| {
        node_config(
            s,
            200,
            "10.78.0.2",
            "10.77.0.2",
            &format!("{tag}-a"),
            &a_fence_ok,
        )
    })
    .expect("daemon A");
    wait_until(Duration::from_secs(10), "A master", || {
        a.state() == Some(State::Master)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", a.log()));
    let b = Daemon::start(&ns_b, "split-b", |s| {
        node_config(
            s,
            100,
            "10.78.0.1",
            "10.77.0.1",
            &format!("{tag}-b"),
            &fence_ok,
        )
    })
    .expect("daemon B");
    wait_until(
        Duration::from_secs(20),
        "A's master and B's backup stack",
        || a_master.running().len() == 2 && b_backup.running().len() == 1,
    )
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", roles_json(&a), roles_json(&b)));
    // An XDP monitor on each link, and the peer heard on both.
    let status = b.status().expect("B status");
    let mut monitored: Vec<String> = status
        .monitors
        .iter()
        .map(|m| m.interface.clone())
        .collect();
    monitored.sort();
    assert_eq!(monitored, ["eth0", "eth1"]);
    let heartbeat = &status.instances[0].heartbeats[0];
    assert!(
        heartbeat.link_up && heartbeat.adverts_received > 0,
        "{heartbeat:?}"
    );

    // The peer link alone cut: the adverts still arrive on eth0.
    ip(&["-n", &ns_a, "link", "set", "eth1", "down"]).expect("cut eth1");
    hold_still(&a, &b, nodes, Duration::from_millis(1500));
    let heartbeat = b.instance().expect("B").heartbeats[0].clone();
    assert!(
        !heartbeat.link_up,
        "B must see its heartbeat link down: {heartbeat:?}"
    );
    ip(&["-n", &ns_a, "link", "set", "eth1", "up"]).expect("eth1 back");
    wait_until(Duration::from_secs(5), "heartbeats on eth1 again", || {
        b.instance().is_ok_and(|i| {
            i.heartbeats[0].link_up && i.heartbeats[0].last_advert_ms_ago.is_some_and(|ms| ms < 5)
        })
    })
    .unwrap_or_else(|e| panic!("{e}\n{:?}", b.instance()));

    // The AP-facing link alone cut (in the switch, carrier up): the adverts
    // still arrive on the peer link.
    ip(&["-n", &sw, "link", "set", "a-port", "nomaster"]).expect("cut AP link");
    hold_still(&a, &b, nodes, Duration::from_millis(1500));

    // Both cut: nothing can tell a dead peer from a split, so B takes over,
    // but fencing fails (no fence-ok): its master stack is not started.
    ip(&["-n", &ns_a, "link", "set", "eth1", "down"]).expect("cut eth1");
    wait_until(
        Duration::from_secs(5),
        "B master after both links cut",
        || b.state() == Some(State::Master),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", b.log()));
    wait_until(Duration::from_secs(10), "fencing refused recorded", || {
        b.roles().history.last().is_some_and(|r| r.held_back)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", roles_json(&b)));
    let roles = b.roles();
    assert!(
        roles
            .degraded
            .as_deref()
            .is_some_and(|d| d.contains("fencing")),
        "{roles:?}"
    );
    assert_eq!(
        roles.stack,
        RunningStack::Backup,
        "a refused promotion changes no stack: {roles:?}"
    );
    assert!(
        b_master.running().is_empty(),
        "fencing failed, yet B's master stack runs"
    );
    assert!(
        has_address(&ns_b, "eth0", VIP),
        "VRRP still gives B the VIP"
    );

    // The AP link heals: one master within one advert interval.
    let healed_at = heal_ap_link(&sw);
    check_healed(&a, &b, nodes, healed_at);

    // Again with fencing succeeding: B's master stack starts, and after the
    // heal it is stopped and B's backup stack runs again.
    std::fs::write(&fence_ok, "").expect("fence-ok");
    ip(&["-n", &sw, "link", "set", "a-port", "nomaster"]).expect("cut AP link");
    wait_until(
        Duration::from_secs(20),
        "B master with its master stack",
        || {
            b.state() == Some(State::Master)
                && b_master.running().len() == 2
                && b_backup.running().is_empty()
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", roles_json(&b), b.log()));
    let healed_at = heal_ap_link(&sw);
    check_healed(&a, &b, nodes, healed_at);
    wait_until(Duration::from_secs(20), "B's master stack stopped", || {
        b_master.running().is_empty() && b_backup.running().len() == 1
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", roles_json(&b)));
    assert_eq!(
        a_master.running().len(),
        2,
        "A's master stack must be untouched"
    );

    // No transition lost: A never left MASTER; B moved exactly as above.
    a.expect_moves(&["INIT->BACKUP", "BACKUP->MASTER"]);
    b.expect_moves(&[
        "INIT->BACKUP",
        "BACKUP->MASTER",
        "MASTER->BACKUP",
        "BACKUP->MASTER",
        "MASTER->BACKUP",
    ]);
}
