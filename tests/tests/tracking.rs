//! Service-aware failover (issue 15): a master whose tracked service fails
//! hands over, and takes mastership back when it heals — between two
//! wimark-ha nodes and across keepalived in both directions (its
//! `vrrp_script` / `track_script` and our `[[instance.track]]`), and a
//! tracked AP-facing link going down puts the master in FAULT.

use std::time::Duration;

use wimark_ha::records::{Health, Reason, State};
use wimark_ha_tests::{
    daemon::{config, has_address, wait_until, Daemon, FAST},
    flag::CheckFlag,
    keepalived::{Instance, Keepalived},
    lab::{two_servers, Lab},
};

const VIP: &str = "10.77.0.100";
const LONG: Duration = Duration::from_secs(10);

/// A's `[[instance.track]]` (the flag's check, weight -100, fall 2, rise 2).
fn tracked(flag: &CheckFlag) -> String {
    format!("{FAST}\n{}", flag.tracker())
}

fn last_reason(daemon: &Daemon) -> Option<(Reason, Option<String>)> {
    daemon
        .instance()
        .ok()
        .and_then(|i| i.history.last().map(|r| (r.reason, r.cause.clone())))
}

#[test]
fn a_failing_script_on_the_master_hands_over_and_healing_takes_it_back() {
    let (_lab, a, b) = two_servers(true).expect("lab");
    let flag = CheckFlag::new("pair");
    let daemon_a = Daemon::start(&a, "a", |s| config(s, 200, &tracked(&flag))).expect("A");
    let daemon_b = Daemon::start(&b, "b", |s| config(s, 150, FAST)).expect("B");
    wait_until(LONG, "A MASTER, B BACKUP", || {
        daemon_a.state() == Some(State::Master) && daemon_b.state() == Some(State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));
    let status = daemon_a.instance().expect("A status");
    assert_eq!(status.effective_priority, Some(200));
    assert_eq!(status.trackers.len(), 1);
    assert_eq!(status.trackers[0].health, Health::Healthy);

    // The service fails: two failed runs later A's priority is 100, below
    // B's 150, and B preempts.
    flag.raise();
    wait_until(LONG, "B MASTER, A BACKUP", || {
        daemon_b.state() == Some(State::Master) && daemon_a.state() == Some(State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));
    assert!(has_address(&b, "eth1", VIP) && !has_address(&a, "eth1", VIP));
    let status = daemon_a.instance().expect("A status");
    assert_eq!(status.effective_priority, Some(100));
    assert_eq!(status.trackers[0].health, Health::Failed);
    assert_eq!(status.trackers[0].weight_in_force, -100);
    let (reason, cause) = last_reason(&daemon_a).expect("A's history");
    assert_eq!(reason, Reason::PreemptedByPeer);
    let cause = cause.expect("A's transition names its tracker");
    assert!(
        cause.contains("track script chk_service failed 2 times"),
        "{cause}"
    );
    assert_eq!(
        last_reason(&daemon_b).map(|r| r.0),
        Some(Reason::Preempting)
    );
    let text = wimark_ha_tests::daemon::status_text(&a, &daemon_a.socket);
    assert!(
        text.contains("priority 100 (configured 200)") && text.contains("track script chk_service"),
        "{text}"
    );
    let metrics_free = daemon_a.instance().expect("status").false_takeovers;
    assert_eq!(metrics_free, 0);
    assert_eq!(
        daemon_b.instance().expect("B").false_takeovers,
        0,
        "a preemption is no false takeover"
    );

    // Healthy again (rise 2): A's 200 goes out and A preempts back.
    flag.lower();
    wait_until(LONG, "A MASTER again", || {
        daemon_a.state() == Some(State::Master) && daemon_b.state() == Some(State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));
    assert!(has_address(&a, "eth1", VIP) && !has_address(&b, "eth1", VIP));
    assert_eq!(
        daemon_a.instance().expect("A").effective_priority,
        Some(200)
    );
    // The journal has each tracker change and the cause of the transition.
    let output = std::process::Command::new(wimark_ha_tests::wimark_ha_bin())
        .args(["history", "--state-dir"])
        .arg(daemon_a.state_dir())
        .output()
        .expect("wimark-ha history");
    let history = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "WIM1: track script chk_service FAILED (exit status 1): weight -100 in force; priority now 100",
        "WIM1: track script chk_service healthy (exit status 0): weight +0 in force; priority now 200",
        "MASTER -> BACKUP (preempted by a higher-priority peer: our priority 100: track script chk_service failed 2 times",
    ] {
        assert!(history.contains(expected), "`{expected}` missing in:\n{history}");
    }
    assert!(
        daemon_a.log().contains("track script failed"),
        "the failing runs are logged:\n{}",
        daemon_a.log()
    );
}

fn require_keepalived() {
    assert!(
        std::path::Path::new("/usr/sbin/keepalived").exists(),
        "keepalived is not installed (Debian package keepalived; `cargo xtask prereqs` installs it)"
    );
}

#[test]
fn a_keepalived_master_whose_track_script_fails_hands_over_to_wimark_ha() {
    require_keepalived();
    let (_lab, a, b) = two_servers(true).expect("lab");
    let flag = CheckFlag::new("ka-master");
    let (script, track) = flag.keepalived_blocks();
    let keepalived =
        Keepalived::start_with_blocks(&a, "ka-track", &Instance::v3_10ms(200), &script, &track)
            .expect("keepalived");
    wait_until(LONG, "keepalived MASTER", || has_address(&a, "eth1", VIP))
        .unwrap_or_else(|e| panic!("{e}\n{}", keepalived.log()));
    let daemon_b = Daemon::start(&b, "b", |s| config(s, 150, FAST)).expect("B");
    wait_until(LONG, "B BACKUP", || daemon_b.state() == Some(State::Backup)).expect("backup");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon_b.state(), Some(State::Backup), "{}", daemon_b.log());

    flag.raise();
    wait_until(
        LONG,
        "wimark-ha MASTER after keepalived's script failed",
        || daemon_b.state() == Some(State::Master) && !has_address(&a, "eth1", VIP),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nkeepalived: {}\nB: {}",
            keepalived.log(),
            daemon_b.log()
        )
    });
    // keepalived's next advert carries priority 100, and B preempts
    // (RFC 5798 §6.4.2: the lower advert is discarded, the timer fires).
    // Under load keepalived can fall silent while it runs the failing
    // script (a full suite saw it once): the timer then fires with no
    // lower advert heard, and B says so (MasterDown). Either hands over.
    let reason = last_reason(&daemon_b).map(|r| r.0);
    assert!(
        matches!(reason, Some(Reason::Preempting | Reason::MasterDown)),
        "B's takeover: {reason:?}\n{}",
        daemon_b.log()
    );

    flag.lower();
    wait_until(LONG, "keepalived MASTER again (it preempts)", || {
        daemon_b.state() == Some(State::Backup) && has_address(&a, "eth1", VIP)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nkeepalived: {}\nB: {}",
            keepalived.log(),
            daemon_b.log()
        )
    });
    assert!(!has_address(&b, "eth1", VIP));
}

#[test]
fn a_wimark_ha_master_whose_tracker_fails_hands_over_to_keepalived() {
    require_keepalived();
    let (_lab, a, b) = two_servers(true).expect("lab");
    let flag = CheckFlag::new("wha-master");
    let daemon_a = Daemon::start(&a, "a", |s| config(s, 200, &tracked(&flag))).expect("A");
    wait_until(LONG, "A MASTER", || daemon_a.state() == Some(State::Master)).expect("master");
    let keepalived =
        Keepalived::start(&b, "kb-track", &Instance::v3_10ms(150)).expect("keepalived");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!has_address(&b, "eth1", VIP), "{}", keepalived.log());

    flag.raise();
    wait_until(LONG, "keepalived MASTER after A's tracker failed", || {
        has_address(&b, "eth1", VIP) && daemon_a.state() == Some(State::Backup)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nA: {}\nkeepalived: {}",
            daemon_a.log(),
            keepalived.log()
        )
    });
    assert!(!has_address(&a, "eth1", VIP));

    flag.lower();
    wait_until(LONG, "A MASTER again", || {
        daemon_a.state() == Some(State::Master) && !has_address(&b, "eth1", VIP)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nA: {}\nkeepalived: {}",
            daemon_a.log(),
            keepalived.log()
        )
    });
}

/// The two servers, and an AP-facing link `eth2` on A (to a namespace of
/// its own).
fn lab_with_ap_link() -> (Lab, String, String, String) {
    let (mut lab, a, b) = two_servers(true).expect("lab");
    let ap = lab.namespace("ap", false).expect("ap namespace");
    lab.veth((&a, "eth2"), (&ap, "eth0")).expect("AP link");
    (lab, a, b, ap)
}

fn set_link(namespace: &str, interface: &str, up: bool) {
    let status = std::process::Command::new("ip")
        .args([
            "-n",
            namespace,
            "link",
            "set",
            interface,
            if up { "up" } else { "down" },
        ])
        .status()
        .expect("ip");
    assert!(status.success());
}

#[test]
fn the_master_s_ap_link_down_is_fault_and_the_backup_takes_over() {
    let (lab, a, b, ap) = lab_with_ap_link();
    let track = format!("{FAST}\n[[instance.track]]\ninterface = \"eth2\"\n");
    let daemon_a = Daemon::start(&a, "a", |s| config(s, 200, &track)).expect("A");
    let daemon_b = Daemon::start(&b, "b", |s| config(s, 100, FAST)).expect("B");
    wait_until(LONG, "A MASTER, B BACKUP", || {
        daemon_a.state() == Some(State::Master) && daemon_b.state() == Some(State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));
    daemon_b.wait_fast_rule_armed().expect("armed");

    // The peer link stays up; only the AP-facing one goes.
    set_link(&a, "eth2", false);
    wait_until(LONG, "A FAULT, B MASTER", || {
        daemon_a.state() == Some(State::Fault) && daemon_b.state() == Some(State::Master)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));
    assert!(has_address(&b, "eth1", VIP) && !has_address(&a, "eth1", VIP));
    let (reason, cause) = last_reason(&daemon_a).expect("A's history");
    assert_eq!(reason, Reason::TrackerFault);
    assert_eq!(cause.as_deref(), Some("track interface eth2 down"));
    // From A's fault to B's takeover: B's silence, as B measured it.
    let b_record = daemon_b
        .instance()
        .expect("B")
        .history
        .last()
        .cloned()
        .expect("B's history");
    eprintln!(
        "B took over: {} after a silence of {:?} (GARP {:?} after its decision)",
        b_record.reason, b_record.silence, b_record.garp_sent
    );
    // A resigned on entering FAULT (priority 0, as keepalived does): B took
    // over after its skew time, not after a detection window.
    assert_eq!(b_record.reason, Reason::PeerResigned, "{b_record:?}");

    set_link(&a, "eth2", true);
    wait_until(LONG, "A MASTER again", || {
        daemon_a.state() == Some(State::Master) && daemon_b.state() == Some(State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));
    assert!(daemon_a
        .instance()
        .expect("A")
        .history
        .iter()
        .any(|r| r.from == State::Fault && r.reason == Reason::TrackerRecovered));

    // The link deleted (FAULT) and created again under its name, with a new
    // index: found again by the name its notification carries.
    let status = std::process::Command::new("ip")
        .args(["-n", &a, "link", "del", "eth2"])
        .status()
        .expect("ip");
    assert!(status.success());
    wait_until(LONG, "A FAULT (link deleted)", || {
        daemon_a.state() == Some(State::Fault)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}", daemon_a.log()));
    lab.veth((&a, "eth2"), (&ap, "eth0"))
        .expect("AP link again");
    wait_until(LONG, "A MASTER (link created again)", || {
        daemon_a.state() == Some(State::Master) && daemon_b.state() == Some(State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));
}

#[test]
fn a_tracked_file_lowers_the_priority_by_its_number() {
    let (_lab, a, b) = two_servers(true).expect("lab");
    let path =
        std::env::temp_dir().join(format!("wimark-ha-track-file-lab-{}", std::process::id()));
    std::fs::write(&path, "0\n").expect("file");
    let track = format!(
        "{FAST}\n[[instance.track]]\nname = \"prio\"\nfile = \"{}\"\nweight = -10\n",
        path.display()
    );
    let daemon_a = Daemon::start(&a, "a", |s| config(s, 200, &track)).expect("A");
    let daemon_b = Daemon::start(&b, "b", |s| config(s, 150, FAST)).expect("B");
    wait_until(LONG, "A MASTER", || {
        daemon_a.state() == Some(State::Master) && daemon_b.state() == Some(State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}", daemon_a.log()));
    std::fs::write(&path, "8\n").expect("file");
    wait_until(LONG, "B MASTER (A at 200 - 80)", || {
        daemon_b.state() == Some(State::Master)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));
    assert_eq!(
        daemon_a.instance().expect("A").effective_priority,
        Some(120)
    );
    std::fs::write(&path, "2\n").expect("file");
    wait_until(LONG, "A MASTER (200 - 20)", || {
        daemon_a.state() == Some(State::Master)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));
    assert_eq!(
        daemon_a.instance().expect("A").effective_priority,
        Some(180)
    );
    let _ = std::fs::remove_file(&path);
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One node's `[roles]` (its own stacks `tag-master` / `tag-backup` on the
/// shared dockerd) and, for A, a container tracker on its master stack's
/// first container.
fn stack_node(tag: &str, tracker: &str) -> String {
    format!(
        "{FAST}\n{tracker}\n[roles]\ninstance = \"WIM1\"\nmaster = {{ compose_project = \"{tag}-master\" }}\nbackup = {{ compose_project = \"{tag}-backup\" }}\nstop_timeout = \"2s\"\ndemote_delay = \"200ms\"\n"
    )
}

fn container_tracker(container: &str) -> String {
    format!(
        "[[instance.track]]\nname = \"master_stack\"\ncontainer = \"{container}\"\nweight = -150\ngrace = \"1s\"\n"
    )
}

/// A with its master stack tracked, B plain; A master with its stack up.
struct StackPair {
    _lab: Lab,
    a: String,
    b: String,
    daemon_a: Daemon,
    daemon_b: Daemon,
    a_master: wimark_ha_tests::docker::Stack,
    _stacks: Vec<wimark_ha_tests::docker::Stack>,
}

fn stack_pair(tag: &str) -> StackPair {
    use wimark_ha_tests::docker::{require_dockerd, Stack};
    require_dockerd();
    let a_master = Stack::create_healthchecked(&format!("{tag}a-master"), 2).expect("A's master stack");
    let stacks = vec![
        Stack::create(&format!("{tag}a-backup"), 1, None).expect("A's backup stack"),
        Stack::create(&format!("{tag}b-master"), 1, None).expect("B's master stack"),
        Stack::create(&format!("{tag}b-backup"), 1, None).expect("B's backup stack"),
    ];
    let (lab, a, b) = two_servers(true).expect("lab");
    let watched = a_master.names[0].clone();
    let daemon_a = Daemon::start(&a, "a", |s| {
        config(s, 200, &stack_node(&format!("{tag}a"), &container_tracker(&watched)))
    })
    .expect("A");
    wait_until(Duration::from_secs(20), "A MASTER with its master stack healthy", || {
        daemon_a.state() == Some(State::Master)
            && daemon_a.roles().stack == wimark_ha::records::Stack::Master
            && a_master.running().len() == 2
            && daemon_a
                .instance()
                .is_ok_and(|i| i.trackers.first().is_some_and(|t| t.health == Health::Healthy))
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}", daemon_a.log()));
    let daemon_b =
        Daemon::start(&b, "b", |s| config(s, 100, &stack_node(&format!("{tag}b"), ""))).expect("B");
    wait_until(LONG, "B BACKUP", || daemon_b.state() == Some(State::Backup))
        .unwrap_or_else(|e| panic!("{e}\nB: {}", daemon_b.log()));
    StackPair {
        _lab: lab,
        a,
        b,
        daemon_a,
        daemon_b,
        a_master,
        _stacks: stacks,
    }
}

/// After the master's stack failed: B took over, A gave way, stopped its
/// master stack and stays below B (no preempting back into a dead service).
fn handed_over_for_good(pair: &StackPair) {
    let (daemon_a, daemon_b) = (&pair.daemon_a, &pair.daemon_b);
    wait_until(LONG, "B MASTER, A BACKUP", || {
        daemon_b.state() == Some(State::Master) && daemon_a.state() == Some(State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));
    assert!(has_address(&pair.b, "eth1", VIP) && !has_address(&pair.a, "eth1", VIP));
    let (reason, cause) = last_reason(daemon_a).expect("A's history");
    assert_eq!(reason, Reason::PreemptedByPeer);
    let cause = cause.unwrap_or_default();
    assert!(
        cause.contains("track container master_stack failed"),
        "the transition names the tracker: {cause}"
    );
    wait_until(LONG, "A's master stack stopped", || pair.a_master.running().is_empty())
        .unwrap_or_else(|e| panic!("{e}\nA: {}", daemon_a.log()));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(daemon_b.state(), Some(State::Master), "A did not take back");
    let status = daemon_a.instance().expect("A status");
    assert_eq!(status.effective_priority, Some(50), "{status:?}");
    assert_eq!(status.trackers[0].health, Health::Failed);
}

#[test]
fn a_master_stack_container_whose_healthcheck_fails_hands_over() {
    let pair = stack_pair(&format!("wth{}", std::process::id()));
    let broke = unix_ms();
    pair.a_master.break_health().expect("break the healthcheck");
    handed_over_for_good(&pair);
    // Not before the grace (1 s after Docker saw it unhealthy).
    let gave_way = pair.daemon_a.last_transition().at_unix_ms;
    assert!(gave_way >= broke + 1000, "gave way {} ms after", gave_way - broke);
    let detail = &pair.daemon_a.instance().expect("A").trackers[0].detail;
    assert!(detail.contains("unhealthy"), "{detail}");
}

#[test]
fn a_master_stack_container_killed_for_good_hands_over_after_the_grace() {
    let pair = stack_pair(&format!("wtk{}", std::process::id()));
    let killed = unix_ms();
    wimark_ha_tests::docker::docker_on(None)
        .args(["kill", &pair.a_master.names[0]])
        .output()
        .expect("docker kill");
    // Within the grace the tracker holds (nothing moves).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pair.daemon_a.state(), Some(State::Master), "moved before the grace");
    handed_over_for_good(&pair);
    let gave_way = pair.daemon_a.last_transition().at_unix_ms;
    assert!(gave_way >= killed + 1000, "gave way {} ms after", gave_way - killed);
    let detail = &pair.daemon_a.instance().expect("A").trackers[0].detail;
    assert!(detail.contains("not running (exit code 137)"), "{detail}");
}

#[test]
fn a_docker_that_does_not_answer_degrades_the_container_tracker_and_moves_nothing() {
    let (_lab, a, _b) = two_servers(true).expect("lab");
    let scratch = wimark_ha_tests::Scratch::new("track-nodocker");
    let toml = stack_node("wtu", &container_tracker("wtu-master-svc0")).replace(
        "[roles]\n",
        &format!(
            "[roles]\ndocker_socket = \"{}\"\n",
            scratch.0.join("no-docker.sock").display()
        ),
    );
    let daemon = Daemon::start(&a, "a", |s| config(s, 200, &toml)).expect("A");
    wait_until(LONG, "the tracker degraded", || {
        daemon.instance().is_ok_and(|i| {
            i.trackers
                .first()
                .is_some_and(|t| t.degraded.as_deref().is_some_and(|d| d.contains("no-docker.sock")))
        })
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    std::thread::sleep(Duration::from_secs(2));
    let status = daemon.instance().expect("status");
    assert_eq!(status.state, State::Master, "{status:?}");
    assert_eq!(status.effective_priority, Some(200), "nothing moves on Docker's absence");
    assert_eq!(status.trackers[0].health, Health::Healthy);
    let human = wimark_ha_tests::daemon::status_text(&a, &daemon.socket);
    assert!(human.contains("[degraded: "), "{human}");
}

#[test]
fn check_config_refuses_a_container_tracker_naming_no_container() {
    wimark_ha_tests::docker::require_dockerd();
    let scratch = wimark_ha_tests::Scratch::new("track-check");
    let path = scratch.0.join("wimark-ha.toml");
    let toml = format!(
        "[[instance]]\nname = \"WIM1\"\ninterface = \"lo\"\nvrid = 67\npriority = 100\nvirtual_ips = [\"10.77.0.100/24\"]\n\n{}",
        container_tracker(&format!("wt-missing-{}", std::process::id()))
    );
    std::fs::write(&path, &toml).expect("config");
    let output = std::process::Command::new(wimark_ha_tests::wimark_ha_bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("check-config");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("track.container") && stderr.contains(":9") && stderr.contains("no container `wt-missing-"),
        "{stderr}"
    );
}

#[test]
fn a_tracked_process_killed_hands_over_and_started_again_takes_back() {
    // A program of its own name (its comm), run by the test.
    let scratch = wimark_ha_tests::Scratch::new("track-process");
    let name = format!("whp{}", std::process::id() % 1_000_000);
    let program = scratch.0.join(&name);
    std::fs::copy("/bin/sleep", &program).expect("copy sleep");
    let start = || {
        std::process::Command::new(&program)
            .arg("1000")
            .spawn()
            .expect("start the tracked process")
    };
    let mut service = start();
    let (_lab, a, b) = two_servers(true).expect("lab");
    let tracker = format!("[[instance.track]]\nprocess = \"{name}\"\nweight = -150\n");
    let daemon_a = Daemon::start(&a, "a", |s| config(s, 200, &format!("{FAST}\n{tracker}"))).expect("A");
    let daemon_b = Daemon::start(&b, "b", |s| config(s, 100, FAST)).expect("B");
    wait_until(LONG, "A MASTER, B BACKUP, the process counted", || {
        daemon_a.state() == Some(State::Master)
            && daemon_b.state() == Some(State::Backup)
            && daemon_a.instance().is_ok_and(|i| {
                i.trackers.first().is_some_and(|t| t.health == Health::Healthy && t.degraded.is_none())
            })
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));

    service.kill().expect("kill");
    service.wait().expect("reaped");
    wait_until(LONG, "B MASTER, A BACKUP", || {
        daemon_b.state() == Some(State::Master) && daemon_a.state() == Some(State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));
    let status = daemon_a.instance().expect("A");
    assert_eq!(status.effective_priority, Some(50));
    let (reason, cause) = last_reason(&daemon_a).expect("A's history");
    assert_eq!(reason, Reason::PreemptedByPeer);
    assert!(
        cause.as_deref().is_some_and(|c| c.contains(&format!("track process {name} failed"))),
        "{cause:?}"
    );

    // Started again (a new pid, seen by its exec): A heals and takes back.
    let mut service = start();
    wait_until(LONG, "A MASTER again", || {
        daemon_a.state() == Some(State::Master) && daemon_b.state() == Some(State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));
    assert_eq!(daemon_a.instance().expect("A").effective_priority, Some(200));
    let _ = service.kill();
    let _ = service.wait();
}

/// Both instances' states, WIM1 then WIM2.
fn states(daemon: &Daemon) -> Vec<State> {
    daemon
        .status()
        .map(|s| s.instances.iter().map(|i| i.state).collect())
        .unwrap_or_default()
}

#[test]
fn a_sync_group_moves_together_and_notifies_once() {
    let (_lab, a, b) = two_servers(true).expect("lab");
    let flag = CheckFlag::new("sync");
    let scratch = wimark_ha_tests::Scratch::new("sync-notify");
    let notify = scratch.0.join("notify.sh");
    let notified = scratch.0.join("notified");
    std::fs::write(&notify, format!("#!/bin/sh\necho \"$@\" >> {}\n", notified.display())).expect("notify");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&notify, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // WIM1 (VRID 67) and WIM2 (VRID 68) on one link, in one group; A's
    // WIM1 tracks a check, WIM2 nothing.
    let node = |priority: u8, tracker: &str, notify: &str| {
        format!(
            "{FAST}\n{tracker}\n[[instance]]\nname = \"WIM2\"\ninterface = \"eth1\"\nvrid = 68\npriority = {priority}\nversion = 3\nadvert_interval = \"10ms\"\nvirtual_ips = [\"10.77.0.101/24\"]\n\n[[sync_group]]\nname = \"G1\"\ninstances = [\"WIM1\", \"WIM2\"]\n{notify}"
        )
    };
    let a_notify = format!("\n[notify]\nscript = \"{}\"\n", notify.display());
    let daemon_a =
        Daemon::start(&a, "a", |s| config(s, 200, &node(200, &flag.tracker(), &a_notify))).expect("A");
    let daemon_b = Daemon::start(&b, "b", |s| config(s, 150, &node(150, "", ""))).expect("B");
    let both = |daemon: &Daemon, state: State| states(daemon) == vec![state, state];
    wait_until(LONG, "A master of both, B backup of both", || {
        both(&daemon_a, State::Master) && both(&daemon_b, State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));

    // A's WIM1 check fails. In a sync group a failed tracker is FAULT
    // (keepalived's rule: weights would let one member's priority hold the
    // group against a peer whose other members are lower), and A's WIM2
    // (healthy, 200) follows WIM1 into FAULT: B takes both.
    flag.raise();
    wait_until(LONG, "B master of both, A in FAULT with both", || {
        both(&daemon_b, State::Master) && both(&daemon_a, State::Fault)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));
    assert!(has_address(&b, "eth1", "10.77.0.101") && !has_address(&a, "eth1", "10.77.0.101"));
    let a_status = daemon_a.status().expect("A");
    let wim1 = a_status.instances[0].history.last().expect("WIM1's history");
    assert_eq!(wim1.reason, Reason::TrackerFault, "{wim1:?}");
    assert!(
        wim1.cause.as_deref().is_some_and(|c| c.contains("track script chk_service failed") && c.contains("sync group")),
        "{wim1:?}"
    );
    let wim2 = a_status.instances[1].history.last().expect("WIM2's history");
    assert_eq!((wim2.reason, wim2.to), (Reason::SyncGroup, State::Fault), "{wim2:?}");
    assert!(
        wim2.cause.as_deref().is_some_and(|c| c.contains("sync group G1: WIM1 FAULT")),
        "{wim2:?}"
    );

    // Healthy again: the group leaves FAULT, both of A's members would
    // preempt B's lower ones, and take over together.
    flag.lower();
    wait_until(LONG, "A master of both again", || {
        both(&daemon_a, State::Master) && both(&daemon_b, State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));
    // One notify per group transition, keepalived's GROUP form.
    wait_until(Duration::from_secs(5), "the group's notify", || {
        std::fs::read_to_string(&notified).is_ok_and(|n| n.lines().filter(|l| l.starts_with("GROUP G1 MASTER")).count() >= 2)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", std::fs::read_to_string(&notified).unwrap_or_default()));
    let lines = std::fs::read_to_string(&notified).unwrap_or_default();
    assert!(lines.contains("GROUP G1 FAULT"), "{lines}");
    assert!(!lines.contains("INSTANCE"), "members are not notified one by one:\n{lines}");
}
