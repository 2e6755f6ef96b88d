//! Two `wimark-ha run` daemons in a netns lab: election, unplanned failover
//! (SIGKILL), restart after a crash, planned switchover and SIGTERM
//! hand-over. Where the VIP is, is read from the interfaces themselves.

use std::time::Duration;
use wimark_ha::records::{Reason, State};

use wimark_ha_tests::{
    daemon::{config, has_address, wait_until, Daemon, FAST},
    lab::{two_servers, Lab},
    require_root,
};

const VIP: &str = "10.77.0.100";

fn lab() -> (Lab, String, String) {
    two_servers(true).expect("two-server lab")
}

/// Whether an XDP program is attached to `eth1` in `namespace` (netlink).
fn xdp_attached(namespace: &str) -> bool {
    wimark_ha_tests::lab::in_netns(namespace, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(wimark_ha::monitor::attached_xdp_program("eth1"))
            .expect("netlink")
            .is_some()
    })
    .expect("netns")
}

#[test]
fn unplanned_failover_restart_and_planned_switchover() {
    let (_lab, a, b) = lab();
    let mut daemon_a = Daemon::start(&a, "a", |s| config(s, 200, FAST)).expect("start A");
    let daemon_b = Daemon::start(&b, "b", |s| config(s, 100, FAST)).expect("start B");
    let long = Duration::from_secs(5);

    // Election: A (priority 200) is master, the VIP only on A.
    wait_until(long, "A MASTER, B BACKUP", || {
        daemon_a.state() == Some(State::Master) && daemon_b.state() == Some(State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));
    assert!(has_address(&a, "eth1", VIP) && !has_address(&b, "eth1", VIP));
    let b_status = daemon_b.instance().expect("B status");
    assert_eq!(
        b_status.master.map(|m| m.to_string()).as_deref(),
        Some("10.77.0.1")
    );
    assert!(b_status.adverts_received > 0);

    // Unplanned: A's daemon is killed; B takes over by the fast rule.
    assert!(xdp_attached(&a), "the monitor is attached while A runs");
    daemon_b.wait_fast_rule_armed().expect("armed");
    daemon_a.signal(libc::SIGKILL);
    daemon_a.wait();
    wait_until(long, "B MASTER", || daemon_b.state() == Some(State::Master)).expect("failover");
    assert!(has_address(&b, "eth1", VIP));
    let takeover = daemon_b.last_transition();
    assert_eq!(takeover.reason, Reason::FastDetect);
    assert!(
        takeover.silence.is_some() && takeover.vip_added.is_some() && takeover.garp_sent.is_some()
    );

    // Restart after the crash: the VIP A left behind is removed at start, and
    // A (higher priority, preempt) takes mastership back.
    assert!(
        has_address(&a, "eth1", VIP),
        "a killed daemon leaves its VIP (why node loss is the real test)"
    );
    // The kernel detached the XDP program with the dead process's link.
    assert!(!xdp_attached(&a), "no XDP program left by the crash");
    daemon_a.restart().expect("restart A");
    wait_until(long, "A MASTER again", || {
        daemon_a.state() == Some(State::Master) && daemon_b.state() == Some(State::Backup)
    })
    .expect("preempt");
    assert!(has_address(&a, "eth1", VIP) && !has_address(&b, "eth1", VIP));
    assert!(
        daemon_a.log().contains("removed a VIP left on eth1"),
        "{}",
        daemon_a.log()
    );

    // Planned switchover: A resigns, B takes over, A does not preempt back.
    let response = wimark_ha::control::request(
        &daemon_a.socket,
        &wimark_ha::control::Request::Switchover {
            instance: None,
            back: false,
        },
    )
    .expect("switchover");
    assert!(response.ok, "{response:?}");
    wait_until(long, "B MASTER after switchover", || {
        daemon_b.state() == Some(State::Master)
    })
    .expect("switchover");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        (daemon_a.state(), daemon_b.state()),
        (Some(State::Backup), Some(State::Master))
    );
    assert!(has_address(&b, "eth1", VIP) && !has_address(&a, "eth1", VIP));
    let handover = daemon_b.last_transition();
    assert_eq!(handover.reason, Reason::PeerResigned);

    // A switchover on a node that is not master is refused, with the reason.
    let refused = wimark_ha::control::request(
        &daemon_a.socket,
        &wimark_ha::control::Request::Switchover {
            instance: None,
            back: false,
        },
    )
    .expect("request");
    assert!(
        !refused.ok
            && refused
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("master of no instance")
    );
    // No transition lost: the kill left no record of its own, the restart
    // starts over.
    daemon_a.expect_moves(&[
        "INIT->BACKUP",
        "BACKUP->MASTER",
        "INIT->BACKUP",
        "BACKUP->MASTER",
        "MASTER->BACKUP",
    ]);
    daemon_b.expect_moves(&[
        "INIT->BACKUP",
        "BACKUP->MASTER",
        "MASTER->BACKUP",
        "BACKUP->MASTER",
    ]);
    // The hand-over is a maintenance state that status shows, until the
    // operator ends it: then A's higher priority preempts again.
    assert!(daemon_a.instance().expect("status").handed_over);
    let text = wimark_ha_tests::daemon::status_text(&a, &daemon_a.socket);
    assert!(text.contains("HANDED OVER"), "{text}");
    // As MASTER, status shows the age of our own last advert (it said
    // "last advert never").
    let text = wimark_ha_tests::daemon::status_text(&b, &daemon_b.socket);
    assert!(text.contains("MASTER") && text.contains("last advert sent "), "{text}");
    let sent_ago = daemon_b.instance().expect("status").last_advert_sent_ms_ago;
    assert!(sent_ago.is_some_and(|ms| ms < 1_000), "{sent_ago:?}\n{text}");
    let back = wimark_ha::control::request(
        &daemon_a.socket,
        &wimark_ha::control::Request::Switchover {
            instance: None,
            back: true,
        },
    )
    .expect("switchover --back");
    assert!(back.ok, "{back:?}");
    wait_until(long, "A MASTER again", || {
        daemon_a.state() == Some(State::Master) && daemon_b.state() == Some(State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon_a.log()));
    assert!(!daemon_a.instance().expect("status").handed_over);
    let again = wimark_ha::control::request(
        &daemon_a.socket,
        &wimark_ha::control::Request::Switchover {
            instance: None,
            back: true,
        },
    )
    .expect("request");
    assert!(
        !again.ok
            && again
                .error
                .as_deref()
                .is_some_and(|e| e.contains("nothing to take back")),
        "{again:?}"
    );
}

#[test]
fn sigterm_on_the_master_hands_over_and_leaves_nothing_behind() {
    let (_lab, a, b) = lab();
    let mut daemon_a = Daemon::start(&a, "a", |s| config(s, 200, FAST)).expect("start A");
    let daemon_b = Daemon::start(&b, "b", |s| config(s, 100, FAST)).expect("start B");
    let long = Duration::from_secs(5);
    wait_until(long, "A MASTER", || {
        daemon_a.state() == Some(State::Master) && daemon_b.state() == Some(State::Backup)
    })
    .expect("election");
    daemon_a.signal(libc::SIGTERM);
    assert_eq!(daemon_a.wait(), Some(0), "clean exit: {}", daemon_a.log());
    wait_until(long, "B MASTER", || daemon_b.state() == Some(State::Master)).expect("hand-over");
    assert_eq!(daemon_b.last_transition().reason, Reason::PeerResigned);
    assert!(!has_address(&a, "eth1", VIP), "SIGTERM must remove the VIP");
    assert!(!daemon_a.socket.exists(), "control socket removed");
    let xdp = std::process::Command::new("ip")
        .args(["-n", &a, "link", "show", "eth1"])
        .output()
        .expect("ip");
    assert!(
        !String::from_utf8_lossy(&xdp.stdout).contains("xdp"),
        "XDP program left on A's eth1"
    );
    daemon_a.expect_moves(&["INIT->BACKUP", "BACKUP->MASTER", "MASTER->INIT"]);
    daemon_b.expect_moves(&["INIT->BACKUP", "BACKUP->MASTER"]);
}

#[test]
fn status_json_follows_the_contract() {
    let (_lab, a, _b) = lab();
    let daemon = Daemon::start(&a, "a", |s| config(s, 200, FAST)).expect("start");
    wait_until(Duration::from_secs(5), "MASTER", || {
        daemon.state() == Some(State::Master)
    })
    .expect("alone, it becomes master");
    let output = std::process::Command::new(wimark_ha_tests::wimark_ha_bin())
        .args(["status", "--json", "--socket"])
        .arg(&daemon.socket)
        .output()
        .expect("status");
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let instance = &json["instances"][0];
    assert_eq!(instance["name"], "WIM1");
    assert_eq!(instance["state"], "MASTER");
    assert_eq!(instance["priority"], 200);
    for field in ["master", "last_advert_ms_ago", "last_advert_sent_ms_ago", "history", "adverts_sent"] {
        assert!(
            instance.get(field).is_some(),
            "status JSON lacks {field}: {instance}"
        );
    }
    assert_eq!(instance["history"][1]["to"], "MASTER");
}

#[test]
fn ipv6_vip_fails_over_between_link_local_speakers() {
    require_root("the IPv6 failover test");
    let mut lab = Lab::new().expect("lab");
    let a = lab.namespace("a6", true).expect("a");
    let b = lab.namespace("b6", true).expect("b");
    lab.veth((&a, "eth1"), (&b, "eth1")).expect("veth");
    let v6 = "version = 3\nadvert_interval = \"10ms\"\nvirtual_ips = [\"fd00::100/64\"]\nfast_detect = { interval = \"1ms\", multiplier = 10 }";
    let long = Duration::from_secs(5);
    // Link-local addresses appear once the links are up.
    wait_until(long, "link-local addresses", || {
        let out = std::process::Command::new("ip")
            .args([
                "-n", &b, "-6", "addr", "show", "dev", "eth1", "scope", "link",
            ])
            .output()
            .expect("ip");
        String::from_utf8_lossy(&out.stdout).contains("fe80::")
    })
    .expect("link-local");
    let mut daemon_a = Daemon::start(&a, "a6", |s| config(s, 200, v6)).expect("start A");
    let daemon_b = Daemon::start(&b, "b6", |s| config(s, 100, v6)).expect("start B");
    // B is BACKUP from its start, before it hears A; who the master is
    // shows in B's status with its next publication (up to 50 ms later).
    wait_until(long, "A MASTER, B BACKUP knowing its master", || {
        daemon_a.state() == Some(State::Master)
            && daemon_b
                .instance()
                .is_ok_and(|i| i.state == State::Backup && i.master.is_some())
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));
    assert!(has_address(&a, "eth1", "fd00::100") && !has_address(&b, "eth1", "fd00::100"));
    let master = daemon_b
        .instance()
        .expect("B")
        .master
        .expect("B knows the master");
    assert!(
        master.to_string().starts_with("fe80::"),
        "IPv6 adverts come from the link-local address: {master}"
    );
    daemon_b.wait_fast_rule_armed().expect("armed");
    daemon_a.signal(libc::SIGKILL);
    daemon_a.wait();
    wait_until(long, "B MASTER", || daemon_b.state() == Some(State::Master))
        .expect("IPv6 failover");
    assert!(has_address(&b, "eth1", "fd00::100"));
    assert_eq!(daemon_b.last_transition().reason, Reason::FastDetect);
}

#[test]
fn forged_and_foreign_adverts_are_counted_and_never_obeyed() {
    use std::net::{IpAddr, Ipv4Addr};
    use wimark_ha::vrrp::ChecksumMode;
    use wimark_ha_tests::{frames, lab::in_netns, sockets::PacketSocket};

    let (_lab, a, b) = lab();
    let daemon = Daemon::start(&b, "b", |s| config(s, 100, FAST)).expect("start B");
    let vip = vec![IpAddr::V4(Ipv4Addr::new(10, 77, 0, 100))];
    let send = |advert: wimark_ha::vrrp::Advert, ttl: u8, count: usize, pace: Duration| {
        let frame = frames::vrrp_v4_frame(
            &advert,
            Ipv4Addr::new(10, 77, 0, 1),
            ttl,
            ChecksumMode::WithPseudoHeader,
            &[],
        );
        in_netns(&a, move || -> anyhow::Result<()> {
            let socket = PacketSocket::bind("eth1", false)?;
            for _ in 0..count {
                socket.send(&frame)?;
                std::thread::sleep(pace);
            }
            Ok(())
        })
        .expect("netns")
        .expect("send");
    };
    // A priority-250 master that crossed a router (TTL 64), and a valid
    // priority-250 master of another VRID: neither keeps B from taking over.
    let mut other_vrid = frames::v3_advert(250, 10, vip.clone());
    other_vrid.vrid = 68;
    send(frames::v3_advert(250, 10, vip.clone()), 64, 100, Duration::from_millis(2));
    send(other_vrid, 255, 50, Duration::from_millis(2));
    wait_until(Duration::from_secs(2), "B MASTER", || {
        daemon.state() == Some(State::Master)
    })
    .expect("B takes over regardless");
    let status = daemon.status().expect("status");
    assert_eq!(
        status.instances[0].adverts_received, 0,
        "nothing forged or foreign reached the state machine"
    );
    let monitor = &status.monitors[0];
    assert!(
        monitor.vrrp.invalid.ttl >= 100,
        "TTL≠255 counted: {monitor:?}"
    );
    let peers = &monitor.vrrp.peers;
    assert!(
        peers.iter().any(|p| p.vrid == 68),
        "the other VRID is seen and counted: {peers:?}"
    );
    // The control: a valid higher-priority advert for our VRID is obeyed.
    // Paced slower than twice the fast interval, so B never takes the
    // forger for a fast master, and read from the history, not from the
    // state: once the adverts stop, B is master again after
    // Master_Down_Interval, and a slow poll could miss the BACKUP between.
    send(frames::v3_advert(250, 10, vip), 255, 20, Duration::from_millis(5));
    wait_until(Duration::from_secs(2), "B BACKUP, preempted", || {
        daemon.instance().is_ok_and(|i| {
            i.history
                .iter()
                .any(|t| t.to == State::Backup && t.reason == Reason::PreemptedByPeer)
        })
    })
    .expect("a valid master is obeyed");
}

/// Issue 14 item 2: a valid priority-255 advert for our VRID demotes a
/// master only if it comes from the instance's own segment and host's
/// view: untagged, unfragmented, to the group or to us, with at least one
/// address, not from our own address. Each refusal is counted by its reason.
#[test]
fn only_adverts_of_our_own_segment_and_addressed_to_us_are_obeyed() {
    use std::net::{IpAddr, Ipv4Addr};
    use wimark_ha::{records::IgnoredReason, vrrp::ChecksumMode};
    use wimark_ha_common::classify::{ETHERTYPE_IPV4, ETHERTYPE_QINQ, ETHERTYPE_VLAN};
    use wimark_ha_tests::{frames, lab::in_netns, sockets::PacketSocket};

    const EACH: usize = 30;
    let (_lab, a, b) = lab();
    let b_mac = frames::MAC_B;
    wimark_ha_tests::lab::ip(&[
        "-n",
        &b,
        "link",
        "set",
        "eth1",
        "address",
        "02:00:00:00:00:0b",
    ])
    .expect("B's MAC");
    let daemon = Daemon::start(&b, "b", |s| config(s, 100, FAST)).expect("start B");
    wait_until(Duration::from_secs(5), "B MASTER", || {
        daemon.state() == Some(State::Master)
    })
    .expect("B alone is master");

    let peer = Ipv4Addr::new(10, 77, 0, 1);
    let group = frames::VRRP_V4_GROUP;
    let group_mac = [0x01, 0x00, 0x5e, 0, 0, 0x12];
    let other_host_mac = [0x02, 0, 0, 0, 0, 0x0c];
    let vip = vec![IpAddr::V4(Ipv4Addr::new(10, 77, 0, 100))];
    // A whole, valid priority-255 advert from `source` to `destination`, in
    // a frame to `mac` with `tags`, in an IPv4 packet with `fragment`.
    let advert = |source: Ipv4Addr,
                  destination: Ipv4Addr,
                  mac: [u8; 6],
                  tags: &[(u16, u16)],
                  fragment: u16,
                  change: &dyn Fn(&mut Vec<u8>)| {
        let mut message = frames::v3_advert(255, 10, vip.clone())
            .encode(
                IpAddr::V4(source),
                IpAddr::V4(destination),
                ChecksumMode::WithPseudoHeader,
            )
            .expect("encodable")
            .to_vec();
        change(&mut message);
        frames::fix_vrrp_checksum(
            &mut message,
            IpAddr::V4(source),
            IpAddr::V4(destination),
            true,
        );
        frames::ethernet(
            mac,
            frames::MAC_A,
            tags,
            ETHERTYPE_IPV4,
            &frames::ipv4_with(source, destination, 255, 112, &message, fragment, &[]),
        )
    };
    let keep = |_: &mut Vec<u8>| {};
    let no_addresses = |m: &mut Vec<u8>| {
        m[3] = 0;
        m.truncate(8);
    };
    let refused = vec![
        advert(peer, group, group_mac, &[(ETHERTYPE_VLAN, 10)], 0, &keep),
        advert(
            peer,
            group,
            group_mac,
            &[(ETHERTYPE_QINQ, 100), (ETHERTYPE_VLAN, 10)],
            0,
            &keep,
        ),
        advert(peer, group, group_mac, &[], 0x2000, &keep),
        advert(peer, group, group_mac, &[], 7, &keep),
        advert(peer, group, group_mac, &[], 0, &no_addresses),
        advert(peer, group, other_host_mac, &[], 0, &keep),
        advert(peer, Ipv4Addr::new(10, 77, 0, 3), b_mac, &[], 0, &keep),
        advert(Ipv4Addr::new(10, 77, 0, 2), group, group_mac, &[], 0, &keep),
    ];
    let send = |frames: Vec<Vec<u8>>, times: usize| {
        in_netns(&a, move || -> anyhow::Result<()> {
            let socket = PacketSocket::bind("eth1", false)?;
            for _ in 0..times {
                for frame in &frames {
                    socket.send(frame)?;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        })
        .expect("netns")
        .expect("send");
    };
    send(refused, EACH);
    let counted = |status: &wimark_ha::records::DaemonStatus| {
        let monitor = &status.monitors[0];
        let ignored = &status.instances[0].ignored;
        [
            monitor.vrrp.tagged,
            monitor.vrrp.invalid.fragment,
            monitor.vrrp.invalid.address_count,
            ignored.get(IgnoredReason::ForeignMac),
            ignored.get(IgnoredReason::ForeignAddress),
            ignored.get(IgnoredReason::OwnSource),
        ]
    };
    let expected = [2, 2, 1, 1, 1, 1].map(|n| n * EACH as u64);
    wait_until(Duration::from_secs(3), "every refusal counted", || {
        daemon
            .status()
            .is_ok_and(|s| counted(&s).iter().zip(&expected).all(|(n, e)| n >= e))
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", daemon.status().map(|s| counted(&s))));
    let status = daemon.status().expect("status");
    assert_eq!(
        counted(&status),
        expected,
        "[tagged, fragment, address_count, foreign_mac, foreign_address, own_source]"
    );
    assert_eq!(
        daemon.state(),
        Some(State::Master),
        "no refused advert demoted the master"
    );
    assert_eq!(status.instances[0].adverts_received, 0);
    assert_eq!(
        daemon.last_transition().to,
        State::Master,
        "and none moved it at all"
    );

    // The control: the same advert unicast to B's own MAC and address (as a
    // unicast peer sends it) is obeyed.
    send(
        vec![advert(
            peer,
            Ipv4Addr::new(10, 77, 0, 2),
            b_mac,
            &[],
            0,
            &keep,
        )],
        20,
    );
    wait_until(Duration::from_secs(2), "B BACKUP", || {
        daemon.state() == Some(State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
}

#[test]
fn a_second_daemon_on_the_same_node_refuses_to_start_and_touches_nothing() {
    let (_lab, a, _b) = lab();
    let daemon = Daemon::start(&a, "a", |s| config(s, 200, FAST)).expect("start");
    wait_until(Duration::from_secs(5), "MASTER", || {
        daemon.state() == Some(State::Master)
    })
    .expect("master");
    // Same control socket, same node: it must stop before touching the interface.
    let path = std::env::temp_dir().join(format!("wimark-ha-second-{}.toml", std::process::id()));
    std::fs::write(&path, config(&daemon.socket, 200, FAST)).expect("config");
    let binary = wimark_ha_tests::wimark_ha_bin();
    let run = path.clone();
    let output = wimark_ha_tests::lab::in_netns(&a, move || {
        std::process::Command::new(binary)
            .args(["run", "--config"])
            .arg(&run)
            .output()
    })
    .expect("netns")
    .expect("run");
    std::fs::remove_file(&path).ok();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another wimark-ha is running"), "{stderr}");
    assert!(
        has_address(&a, "eth1", VIP),
        "the running daemon's VIP was left alone"
    );
    assert_eq!(daemon.state(), Some(State::Master));
}

#[test]
fn link_loss_faults_the_master_and_the_peer_takes_over() {
    // Through a switch, so A losing its link leaves B's link up (on a direct
    // veth pair B would lose its carrier too, and rightly go FAULT as well).
    let (lab, a, b, _sw) = wimark_ha_tests::lab::two_servers_on_a_switch("eth1").expect("lab");
    lab.address(&a, "eth1", "10.77.0.1/24").expect("address a");
    lab.address(&b, "eth1", "10.77.0.2/24").expect("address b");
    let daemon_a = Daemon::start(&a, "a", |s| config(s, 200, FAST)).expect("start A");
    let daemon_b = Daemon::start(&b, "b", |s| config(s, 100, FAST)).expect("start B");
    let long = Duration::from_secs(5);
    wait_until(long, "A MASTER", || {
        daemon_a.state() == Some(State::Master) && daemon_b.state() == Some(State::Backup)
    })
    .expect("election");
    wimark_ha_tests::lab::ip(&["-n", &a, "link", "set", "eth1", "down"]).expect("link down");
    wait_until(long, "A FAULT, B MASTER", || {
        daemon_a.state() == Some(State::Fault) && daemon_b.state() == Some(State::Master)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}", daemon_a.log()));
    assert!(
        !has_address(&a, "eth1", VIP),
        "a faulted node gives its VIP up"
    );
    assert_eq!(daemon_a.last_transition().reason, Reason::InterfaceDown);
    wimark_ha_tests::lab::ip(&["-n", &a, "link", "set", "eth1", "up"]).expect("link up");
    // Back as backup, then (priority 200, preempt) master again.
    wait_until(long, "A MASTER again", || {
        daemon_a.state() == Some(State::Master) && daemon_b.state() == Some(State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}", daemon_a.log()));
    assert!(has_address(&a, "eth1", VIP) && !has_address(&b, "eth1", VIP));
    daemon_a.expect_moves(&[
        "INIT->BACKUP",
        "BACKUP->MASTER",
        "MASTER->FAULT",
        "FAULT->BACKUP",
        "BACKUP->MASTER",
    ]);
    daemon_b.expect_moves(&["INIT->BACKUP", "BACKUP->MASTER", "MASTER->BACKUP"]);
}

#[test]
fn rogue_sources_are_dropped_in_xdp_and_never_move_the_vip() {
    use std::net::{IpAddr, Ipv4Addr};
    use wimark_ha::vrrp::ChecksumMode;
    use wimark_ha_tests::{frames, lab::in_netns, sockets::PacketSocket};

    let (_lab, a, b) = lab();
    let allow = format!("{FAST}\npeers = [\"10.77.0.2\"]");
    let daemon = Daemon::start(&a, "rogue-a", |s| config(s, 100, &allow)).expect("start A");
    wait_until(Duration::from_secs(5), "A MASTER", || {
        daemon.state() == Some(State::Master)
    })
    .expect("A alone is master");
    let vip = vec![IpAddr::V4(Ipv4Addr::new(10, 77, 0, 100))];
    let send = |source: Ipv4Addr, count: usize, spacing: Duration| {
        let frame = frames::vrrp_v4_frame(
            &frames::v3_advert(255, 10, vip.clone()),
            source,
            255,
            ChecksumMode::WithPseudoHeader,
            &[],
        );
        in_netns(&b, move || -> anyhow::Result<()> {
            let socket = PacketSocket::bind("eth1", false)?;
            for _ in 0..count {
                socket.send(&frame)?;
                if !spacing.is_zero() {
                    std::thread::sleep(spacing);
                }
            }
            Ok(())
        })
        .expect("netns")
        .expect("send");
    };
    // A flood of valid priority-255 adverts from a source not on the list.
    const FLOOD: u64 = 20_000;
    send(Ipv4Addr::new(10, 77, 0, 66), FLOOD as usize, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(300));
    let status = daemon.status().expect("status");
    let instance = &status.instances[0];
    assert_eq!(
        instance.state,
        State::Master,
        "a rogue master does not preempt"
    );
    assert!(has_address(&a, "eth1", "10.77.0.100"));
    assert_eq!(instance.adverts_received, 0, "nothing reached the engine");
    assert!(
        instance
            .ignored
            .get(wimark_ha::records::IgnoredReason::Rogue)
            == 0,
        "the XDP program, not the engine, dropped them: {:?}",
        instance.ignored
    );
    assert_eq!(
        status.monitors[0].vrrp.rogue, FLOOD,
        "every rogue advert counted: {:?}",
        status.monitors[0]
    );
    // Logged once for that source, not once per advert.
    wait_until(Duration::from_secs(5), "the rogue source logged", || {
        daemon.log().contains("rogue adverts: 10.77.0.66")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    send(Ipv4Addr::new(10, 77, 0, 66), 100, Duration::ZERO);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        daemon.log().matches("rogue adverts: 10.77.0.66").count(),
        1,
        "{}",
        daemon.log()
    );
    // Spoofed sources, 600 of them, one advert each (5 188 log lines in a
    // minute before): at most four sources named a minute, the rest in one
    // summary line, and the first named source not named again.
    for host in 0..600u16 {
        let source = Ipv4Addr::new(10, 66, (host >> 8) as u8, (host & 0xff) as u8 + 1);
        send(source, 1, Duration::ZERO);
    }
    std::thread::sleep(Duration::from_secs(5));
    let log = daemon.log();
    let named = log.matches("rogue adverts: 10.66.").count();
    assert!(
        named <= 4,
        "{named} spoofed sources named in a minute (at most 4):\n{log}"
    );
    assert_eq!(log.matches("rogue adverts: 10.77.0.66").count(), 1, "{log}");
    assert_eq!(
        log.matches("more source(s) not allowed").count(),
        1,
        "one summary line for the rest:\n{log}"
    );
    // 1 500 peer changes (priority 254/255 alternating) from the rogue
    // source: the daemon reads no peer events, so none is queued and none
    // lost (the unread ring counted 2.3 M lost, hiding whether an advert
    // was); the advert ring's own losses stay visible, and 0.
    let frames: Vec<Vec<u8>> = [254u8, 255]
        .iter()
        .map(|priority| {
            frames::vrrp_v4_frame(
                &frames::v3_advert(*priority, 10, vip.clone()),
                Ipv4Addr::new(10, 77, 0, 66),
                255,
                ChecksumMode::WithPseudoHeader,
                &[],
            )
        })
        .collect();
    in_netns(&b, move || -> anyhow::Result<()> {
        let socket = PacketSocket::bind("eth1", false)?;
        for i in 0..1_500 {
            socket.send(&frames[i % 2])?;
        }
        Ok(())
    })
    .expect("netns")
    .expect("send");
    std::thread::sleep(Duration::from_millis(300));
    let monitor = &daemon.status().expect("status").monitors[0];
    assert_eq!(
        (monitor.peer_events_lost, monitor.advert_events_lost),
        (0, 0),
        "{monitor:?}"
    );
    // The control: the allowed peer's higher priority is obeyed (a master
    // advertising every 10 ms for half a second): A steps down.
    send(Ipv4Addr::new(10, 77, 0, 2), 50, Duration::from_millis(10));
    let history = daemon.instance().expect("instance").history;
    assert!(
        history
            .iter()
            .any(|t| t.from == State::Master && t.to == State::Backup),
        "the allowed peer is obeyed: {history:?}"
    );
}
