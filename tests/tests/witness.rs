//! The quorum witness against a real etcd: the VIP moves as before, the
//! master stack only on the node that holds the key.
//!
//! ```text
//!  ns a (server A) eth0 ── a-port ─┐
//!  ns b (server B) eth0 ── b-port ─┼─ br0 (ns sw): the LAN, etcd on ns w
//!  ns w (witness)  eth0 ── w-port ─┘    (or ns w1, w2, w3: a 3-member etcd)
//!  ns a eth1 ── a-peer ─┬─ br1 (ns sw): the peer link (VRRP, the VIP)
//!  ns b eth1 ── b-peer ─┘
//! ```
//!
//! A link is cut in the switch (its port leaves the bridge), so the other
//! side keeps its carrier, as behind a real switch.

use std::time::{Duration, Instant};
use wimark_ha::records::{Stack as RunningStack, State, WitnessStatus};

use wimark_ha_tests::{
    daemon::{has_address, roles_json, wait_until, Daemon},
    docker::{require_dockerd, Stack},
    etcd::{Etcd, EtcdTls},
    lab::{ip, two_servers_on_a_switch, Lab},
};

const KEY: &str = "/wimark-ha/WIM1";
const LEASE_TTL: Duration = Duration::from_secs(2);
/// The labs' `demote_delay`: short, so that a healed split settles fast.
const DEMOTE_DELAY: &str = "200ms";

/// `endpoints`: the TOML list's items (`Etcd::endpoints_toml`).
fn node_config(
    socket: &std::path::Path,
    priority: u8,
    node: &str,
    project: &str,
    endpoints: &str,
    extra: &str,
) -> String {
    node_config_with(socket, priority, node, project, endpoints, extra, DEMOTE_DELAY)
}

fn node_config_with(
    socket: &std::path::Path,
    priority: u8,
    node: &str,
    project: &str,
    endpoints: &str,
    extra: &str,
    demote_delay: &str,
) -> String {
    format!(
        r#"[daemon]
control_socket = "{socket}"

[[instance]]
name = "WIM1"
interface = "eth1"
vrid = 67
priority = {priority}
version = 3
advert_interval = "10ms"
virtual_ips = ["10.77.0.100/24"]
fast_detect = {{ interval = "1ms", multiplier = 10 }}

[roles]
instance = "WIM1"
master = {{ compose_project = "{project}-master" }}
backup = {{ compose_project = "{project}-backup" }}
stop_timeout = "2s"
demote_delay = "{demote_delay}"

[peer]
address = "{peer}"

[witness]
endpoints = [{endpoints}]
key = "{KEY}"
lease_ttl = "{ttl}s"
node = "{node}"
{extra}
"#,
        socket = socket.display(),
        ttl = LEASE_TTL.as_secs(),
        // The other server on the peer link, which the isolation rule probes.
        peer = if node == "wim-a" {
            "10.77.0.2"
        } else {
            "10.77.0.1"
        },
    )
}

struct WitnessLab {
    _lab: Lab,
    ns_a: String,
    ns_b: String,
    sw: String,
    etcd: Etcd,
    a: Daemon,
    b: Daemon,
    a_master: Stack,
    b_master: Stack,
    _stacks: Vec<Stack>,
}

fn witness(daemon: &Daemon) -> WitnessStatus {
    daemon
        .status()
        .ok()
        .and_then(|s| s.witness)
        .unwrap_or_default()
}

/// The namespaces, links and etcd of the witness labs (no daemon yet):
/// one etcd member on ns w (10.78.0.9), or `members` of them on ns w1, w2,
/// …; with `tls`, etcd's clients speak TLS with certificates of its CA.
fn network(members: usize, tls: Option<&EtcdTls>) -> (Lab, String, String, String, Etcd) {
    let (mut lab, ns_a, ns_b, sw) = two_servers_on_a_switch("eth0").expect("lab");
    lab.veth((&ns_a, "eth1"), (&sw, "a-peer")).expect("veth");
    lab.veth((&ns_b, "eth1"), (&sw, "b-peer")).expect("veth");
    lab.bridge(&sw, "br1", &["a-peer", "b-peer"])
        .expect("bridge");
    for (ns, eth0, eth1) in [
        (&ns_a, "10.78.0.1/24", "10.77.0.1/24"),
        (&ns_b, "10.78.0.2/24", "10.77.0.2/24"),
    ] {
        lab.address(ns, "eth0", eth0).expect("address");
        lab.address(ns, "eth1", eth1).expect("address");
    }
    let mut witnesses = Vec::new();
    for index in 0..members {
        let name = if members == 1 {
            "w".to_string()
        } else {
            format!("w{}", index + 1)
        };
        let ns = lab.namespace(&name, false).expect("witness namespace");
        let port = format!("{name}-port");
        lab.veth((&ns, "eth0"), (&sw, &port)).expect("veth");
        ip(&["-n", &sw, "link", "set", &port, "master", "br0"]).expect("bridge");
        let address = format!("10.78.0.{}", 9 + index);
        lab.address(&ns, "eth0", &format!("{address}/24"))
            .expect("address");
        witnesses.push((ns, name, address));
    }
    let members: Vec<(&str, &str, &str)> = witnesses
        .iter()
        .map(|(ns, name, address)| (ns.as_str(), name.as_str(), address.as_str()))
        .collect();
    let etcd = Etcd::cluster(&members, tls).expect("etcd");
    (lab, ns_a, ns_b, sw, etcd)
}

/// A master with its stack and the key, B backup; etcd on ns w.
fn witness_lab(tag: &str) -> WitnessLab {
    witness_lab_with(tag, 1, DEMOTE_DELAY, "")
}

/// The same with `members` etcd members, the nodes' `demote_delay` and
/// `extra` lines in both nodes' `[witness]`.
fn witness_lab_with(tag: &str, members: usize, demote_delay: &str, extra: &str) -> WitnessLab {
    require_dockerd();
    let a_master = Stack::create(&format!("{tag}-a-master"), 1, None).expect("stack");
    let b_master = Stack::create(&format!("{tag}-b-master"), 1, None).expect("stack");
    let stacks = vec![
        Stack::create(&format!("{tag}-a-backup"), 1, None).expect("stack"),
        Stack::create(&format!("{tag}-b-backup"), 1, None).expect("stack"),
    ];
    let (lab, ns_a, ns_b, sw, etcd) = network(members, None);
    let endpoints = etcd.endpoints_toml();
    let a = Daemon::start(&ns_a, &format!("{tag}-a"), |s| {
        node_config_with(s, 200, "wim-a", &format!("{tag}-a"), &endpoints, extra, demote_delay)
    })
    .expect("daemon A");
    wait_until(
        Duration::from_secs(20),
        "A's master stack, A holding the key",
        || a_master.running().len() == 1 && witness(&a).holds_key,
    )
    .unwrap_or_else(|e| panic!("{e}\nA: {}\n{}", roles_json(&a), a.log()));
    let b = Daemon::start(&ns_b, &format!("{tag}-b"), |s| {
        node_config_with(s, 100, "wim-b", &format!("{tag}-b"), &endpoints, extra, demote_delay)
    })
    .expect("daemon B");
    wait_until(Duration::from_secs(20), "B backup with a lease", || {
        b.state() == Some(State::Backup) && witness(&b).holds_lease
    })
    .unwrap_or_else(|e| panic!("{e}\nB: {:?}\n{}", witness(&b), b.log()));
    let value = etcd.get(KEY).expect("etcdctl get");
    assert!(
        value.contains("\"node\":\"wim-a\""),
        "the key names A: {value}"
    );
    WitnessLab {
        _lab: lab,
        ns_a,
        ns_b,
        sw,
        etcd,
        a,
        b,
        a_master,
        b_master,
        _stacks: stacks,
    }
}

impl WitnessLab {
    /// Waits until B's master stack runs and its switch is recorded.
    fn wait_for_b_master_stack(&self, within: Duration, what: &str) {
        wait_until(within, what, || {
            self.b.roles().stack == RunningStack::Master && self.b_master.running().len() == 1
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nB: {}\n{:?}\n{}",
                roles_json(&self.b),
                witness(&self.b),
                self.b.log()
            )
        });
    }

    /// After a heal: A's master stack runs again with the key, B's is
    /// stopped, and `also` holds; within 15 s.
    fn wait_for_a_master_stack_again(&self, what: &str, also: impl Fn() -> bool) {
        wait_until(Duration::from_secs(15), what, || {
            self.a_master.running().len() == 1
                && self.b_master.running().is_empty()
                && witness(&self.a).holds_key
                && also()
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nA: {:?}\n{}\nB: {:?}",
                witness(&self.a),
                self.a.log(),
                witness(&self.b)
            )
        });
    }

    /// A alive but cut in the switch from both its LAN (the witness) and
    /// the peer link.
    fn cut_a(&self) {
        ip(&["-n", &self.sw, "link", "set", "a-port", "nomaster"]).expect("cut A's LAN");
        ip(&["-n", &self.sw, "link", "set", "a-peer", "nomaster"]).expect("cut the peer link");
    }

    fn heal_a(&self) {
        ip(&["-n", &self.sw, "link", "set", "a-port", "master", "br0"]).expect("heal LAN");
        ip(&["-n", &self.sw, "link", "set", "a-peer", "master", "br1"]).expect("heal peer link");
    }

    /// Server A lost: its links cut in the switch (peer link and LAN) and
    /// its daemon SIGKILLed; its containers are left as they are.
    fn lose_a(&mut self) {
        self.cut_a();
        self.a.signal(libc::SIGKILL);
        let _ = self.a.wait();
    }
}

#[test]
fn a_lost_master_hands_the_key_over_when_its_lease_expires() {
    let tag = format!("whw{}", std::process::id());
    let mut lab = witness_lab(&tag);
    // doctor on B, the pair healthy: etcd answers, the key is A's.
    let findings = doctor_witness(&lab.b);
    assert_finding(&findings, "witness http://10.78.0.9:2379", "OK", "the leader");
    assert_finding(&findings, "witness key", "OK", "held by wim-a (the peer)");
    lab.lose_a();
    let lost = Instant::now();
    // The fast path is unchanged: the VIP moves at once.
    wait_until(Duration::from_secs(2), "B takes the VIP", || {
        has_address(&lab.ns_b, "eth1", "10.77.0.100")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.b.log()));
    let vip_after = lost.elapsed();
    // The stack waits for A's lease: within its TTL and one renewal.
    lab.wait_for_b_master_stack(Duration::from_secs(10), "B's master stack");
    let status = witness(&lab.b);
    assert!(
        status.holds_key && status.waiting_since_unix_ms.is_none(),
        "{status:?}"
    );
    let value = lab.etcd.get(KEY).expect("etcdctl get");
    assert!(
        value.contains("\"node\":\"wim-b\""),
        "the key names B now: {value}"
    );
    let roles = lab.b.roles();
    let promotion = roles
        .history
        .iter()
        .rev()
        .find(|r| r.to == RunningStack::Master)
        .cloned()
        .unwrap_or_else(|| panic!("no promotion in {}", roles_json(&lab.b)));
    let renewal = LEASE_TTL / 3;
    assert!(
        !promotion.witness.is_zero() && promotion.witness <= LEASE_TTL + renewal,
        "the wait for the key ({:?}) must be within the lease TTL + one renewal ({:?}); VIP after {vip_after:?}",
        promotion.witness,
        LEASE_TTL + renewal
    );
    assert!(
        promotion.summary().contains("witness key after"),
        "{}",
        promotion.summary()
    );
    eprintln!(
        "VIP on B {vip_after:?} after the loss; the key {:?} after B's takeover; master stack at {:?}",
        promotion.witness,
        lost.elapsed()
    );
}

#[test]
fn an_unreachable_witness_moves_nothing_and_holds_a_promotion_back() {
    let tag = format!("whx{}", std::process::id());
    let mut lab = witness_lab(&tag);
    let a_history = lab.a.instance().expect("A").history.len();
    let b_history = lab.b.instance().expect("B").history.len();
    // Witness down, pair healthy: nothing moves; both say so.
    lab.etcd.pause();
    wait_until(
        Duration::from_secs(10),
        "both see the witness unreachable",
        || !witness(&lab.a).reachable && !witness(&lab.b).reachable,
    )
    .unwrap_or_else(|e| panic!("{e}\nA: {:?}\nB: {:?}", witness(&lab.a), witness(&lab.b)));
    std::thread::sleep(LEASE_TTL + Duration::from_secs(1));
    assert_eq!(
        lab.a.instance().expect("A").history.len(),
        a_history,
        "A moved"
    );
    assert_eq!(
        lab.b.instance().expect("B").history.len(),
        b_history,
        "B moved"
    );
    assert_eq!(
        lab.a_master.running().len(),
        1,
        "A's master stack still runs"
    );
    assert!(lab.b_master.running().is_empty());
    let findings = doctor_witness(&lab.b);
    assert_finding(&findings, "witness http://10.78.0.9:2379", "FAIL", "unreachable");
    assert_finding(&findings, "witness key", "FAIL", "no etcd member answers");
    let json = lab.b.status().expect("status");
    let w = json.witness.expect("witness in status");
    assert!(
        !w.reachable
            && w.problem
                .as_deref()
                .is_some_and(|p| p.contains("unreachable")),
        "{w:?}"
    );
    let w = witness(&lab.a);
    assert!(
        !w.holds_lease && !w.holds_key,
        "A's lease ran out locally: {w:?}"
    );
    // The witness back: A, whose stack ran on, claims the key back.
    lab.etcd.resume();
    wait_until(Duration::from_secs(10), "A holds the key again", || {
        witness(&lab.a).holds_key
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {:?}\n{}", witness(&lab.a), lab.a.log()));
    assert_eq!(lab.a_master.running().len(), 1, "A's master stack ran on");
    assert!(lab
        .etcd
        .get(KEY)
        .expect("get")
        .contains("\"node\":\"wim-a\""));
    lab.etcd.pause();
    wait_until(
        Duration::from_secs(10),
        "B sees the witness unreachable again",
        || !witness(&lab.b).reachable,
    )
    .unwrap_or_else(|e| panic!("{e}\nB: {:?}", witness(&lab.b)));

    // Witness still down, then A lost: B takes the VIP but not the stack,
    // and says why.
    lab.lose_a();
    wait_until(Duration::from_secs(2), "B takes the VIP", || {
        has_address(&lab.ns_b, "eth1", "10.77.0.100")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.b.log()));
    std::thread::sleep(LEASE_TTL * 2);
    assert!(
        lab.b_master.running().is_empty(),
        "B promoted without the key: {}",
        roles_json(&lab.b)
    );
    let w = witness(&lab.b);
    assert!(w.waiting_since_unix_ms.is_some() && !w.holds_key, "{w:?}");
    assert!(
        lab.b.log().contains("master stack held back"),
        "B must say why: {}",
        lab.b.log()
    );
    // The witness back: A's lease runs out there, B gets the key and
    // promotes.
    lab.etcd.resume();
    lab.wait_for_b_master_stack(
        Duration::from_secs(15),
        "B's master stack once the key is free",
    );
    assert!(witness(&lab.b).holds_key);
}

#[test]
fn a_cut_peer_link_leaves_exactly_one_master_stack() {
    let tag = format!("why{}", std::process::id());
    let lab = witness_lab(&tag);
    // The peer link alone cut: both are VRRP masters, both still reach etcd.
    ip(&["-n", &lab.sw, "link", "set", "a-peer", "nomaster"]).expect("cut the peer link");
    wait_until(Duration::from_secs(2), "B master too", || {
        lab.b.state() == Some(State::Master)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.b.log()));
    std::thread::sleep(LEASE_TTL * 2 + Duration::from_secs(1));
    assert_eq!(lab.a_master.running().len(), 1, "A's master stack runs on");
    assert!(
        lab.b_master.running().is_empty(),
        "two master stacks: {}",
        roles_json(&lab.b)
    );
    let w = witness(&lab.b);
    assert!(
        w.waiting_since_unix_ms.is_some() && w.holder.as_deref() == Some("wim-a"),
        "B waits for A's key: {w:?}"
    );
    assert!(witness(&lab.a).holds_key);
    // Healed: B is backup again and stops waiting; A keeps everything.
    ip(&["-n", &lab.sw, "link", "set", "a-peer", "master", "br1"]).expect("heal");
    wait_until(Duration::from_secs(5), "B backup, not waiting", || {
        lab.b.state() == Some(State::Backup) && witness(&lab.b).waiting_since_unix_ms.is_none()
    })
    .unwrap_or_else(|e| panic!("{e}\nB: {:?}\n{}", witness(&lab.b), lab.b.log()));
    assert_eq!(lab.a_master.running().len(), 1);
    assert!(lab.b_master.running().is_empty());
}

/// A lone server whose witness cannot give it the key: it takes the VIP,
/// leaves its containers and says why.
fn held_back(
    ns: &str,
    name: &str,
    config: impl Fn(&std::path::Path) -> String,
    master: &Stack,
    says: &str,
) -> Daemon {
    let daemon = Daemon::start(ns, name, config).expect("daemon");
    wait_until(Duration::from_secs(10), "MASTER with the VIP", || {
        daemon.state() == Some(State::Master) && has_address(ns, "eth1", "10.77.0.100")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    std::thread::sleep(LEASE_TTL * 2);
    assert!(
        master.running().is_empty(),
        "promoted: {}",
        roles_json(&daemon)
    );
    let w = witness(&daemon);
    assert!(
        !w.holds_key && w.problem.as_deref().is_some_and(|p| p.contains(says)),
        "the witness status must say `{says}`: {w:?}"
    );
    assert!(
        daemon.log().contains("master stack held back") && daemon.log().contains(says),
        "the log must say why: {}",
        daemon.log()
    );
    daemon
}

#[test]
fn bad_witness_input_holds_the_promotion_back_and_says_why() {
    require_dockerd();
    let tag = format!("whz{}", std::process::id());
    let master = Stack::create(&format!("{tag}-master"), 1, None).expect("stack");
    let _backup = Stack::create(&format!("{tag}-backup"), 1, None).expect("stack");
    let (_lab, ns_a, _ns_b, _sw, etcd) = network(1, None);
    let stop = |mut daemon: Daemon| {
        daemon.signal(libc::SIGTERM);
        assert_eq!(daemon.wait(), Some(0), "{}", daemon.log());
    };
    // Nothing listens at the endpoint.
    let daemon = held_back(
        &ns_a,
        &format!("{tag}-unreachable"),
        |s| node_config(s, 200, "wim-a", &tag, "\"http://10.78.0.9:2399\"", ""),
        &master,
        "unreachable",
    );
    assert_finding(&doctor_witness(&daemon), "witness http://10.78.0.9:2399", "FAIL", "unreachable");
    stop(daemon);
    // Wrong credentials (etcd's authentication on).
    etcd.etcdctl(&["user", "add", "root:rootpw"])
        .expect("user add");
    etcd.etcdctl(&["user", "add", "ha:right"])
        .expect("user add");
    etcd.etcdctl(&["auth", "enable"]).expect("auth enable");
    let daemon = held_back(
        &ns_a,
        &format!("{tag}-credentials"),
        |s| {
            node_config(
                s,
                200,
                "wim-a",
                &tag,
                &etcd.endpoints_toml(),
                "user = \"ha\"\npassword = \"wrong\"",
            )
        },
        &master,
        "refused our credentials",
    );
    assert_finding(&doctor_witness(&daemon), "witness http://10.78.0.9:2379", "FAIL", "refused our credentials");
    stop(daemon);
    etcd.etcdctl(&["--user", "root:rootpw", "auth", "disable"])
        .expect("auth disable");
    // A key someone else wrote, without a lease: never taken over.
    etcd.etcdctl(&["put", KEY, "someone-else"]).expect("put");
    let daemon = held_back(
        &ns_a,
        &format!("{tag}-foreign"),
        |s| node_config(s, 200, "wim-a", &tag, &etcd.endpoints_toml(), ""),
        &master,
        "foreign writer",
    );
    assert_finding(&doctor_witness(&daemon), "witness key", "FAIL", "foreign writer");
    assert_eq!(
        etcd.get(KEY).expect("get"),
        "someone-else",
        "nothing lost: the foreign key stands (doctor read it, no more)"
    );
    // Removed by the operator: the promotion goes ahead.
    etcd.etcdctl(&["del", KEY]).expect("del");
    wait_until(
        Duration::from_secs(5),
        "the master stack once the key is free",
        || daemon.roles().stack == RunningStack::Master && master.running().len() == 1,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", roles_json(&daemon), daemon.log()));
    assert!(witness(&daemon).holds_key);
}

#[test]
fn a_master_cut_from_its_peer_and_the_witness_stops_its_stack_before_the_peer_starts() {
    let tag = format!("whv{}", std::process::id());
    let lab = witness_lab(&tag);
    // A alive but cut from both: its LAN (the witness) and the peer link.
    lab.cut_a();
    let cut = Instant::now();
    // Never both stacks at once; A's stops, then B's starts.
    let (mut a_stopped, mut b_started) = (None, None);
    while cut.elapsed() < Duration::from_secs(15) && b_started.is_none() {
        let (a, b) = (lab.a_master.running().len(), lab.b_master.running().len());
        assert!(
            a == 0 || b == 0,
            "both master stacks run {:?} after the cut",
            cut.elapsed()
        );
        if a == 0 && a_stopped.is_none() {
            a_stopped = Some(cut.elapsed());
        }
        if b == 1 {
            b_started = Some(cut.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (Some(a_stopped), Some(b_started)) = (a_stopped, b_started) else {
        panic!(
            "A stopped {a_stopped:?}, B started {b_started:?}\nA: {:?}\n{}\nB: {:?}\n{}",
            witness(&lab.a),
            lab.a.log(),
            witness(&lab.b),
            lab.b.log()
        );
    };
    let w = witness(&lab.a);
    assert!(w.isolated_since_unix_ms.is_some() && !w.holds_key, "{w:?}\n{}", lab.a.log());
    assert!(lab.a.log().contains("isolated"), "{}", lab.a.log());
    assert_eq!(
        lab.a.state(),
        Some(State::Master),
        "the VIP is not the witness's business (keep_vip)"
    );
    eprintln!(
        "A's master stack stopped {a_stopped:?} after the cut, B's started {b_started:?} after it"
    );
    // Healed: A (priority 200) stays master, B steps down and releases the
    // key, A takes it and starts its stack again.
    lab.heal_a();
    lab.wait_for_a_master_stack_again("A's stack back, B's stopped", || true);
    assert!(witness(&lab.a).isolated_since_unix_ms.is_none());
}

#[test]
fn an_isolated_master_with_release_vip_gives_the_vip_up_and_returns_as_backup() {
    let tag = format!("whr{}", std::process::id());
    let lab = witness_lab_with(&tag, 1, DEMOTE_DELAY, "on_isolation = \"release_vip\"");
    const VIP: &str = "10.77.0.100";
    assert!(has_address(&lab.ns_a, "eth1", VIP), "A holds the VIP first");
    lab.cut_a();
    let cut = Instant::now();
    // A's stack stops before B's starts, as with keep_vip; then A is in
    // FAULT without the VIP, which B holds.
    let b_started = never_both_until_b_starts(&lab, cut, Duration::from_secs(15));
    wait_until(
        Duration::from_secs(5),
        "A in FAULT without the VIP",
        || lab.a.state() == Some(State::Fault) && !has_address(&lab.ns_a, "eth1", VIP),
    )
    .unwrap_or_else(|e| panic!("{e}\nA: {:?}\n{}", witness(&lab.a), lab.a.log()));
    let gave_up = cut.elapsed();
    assert!(has_address(&lab.ns_b, "eth1", VIP), "B holds the VIP");
    let a = lab.a.instance().expect("A's status");
    assert!(!a.holds_virtual_ips, "{a:?}");
    assert_eq!(
        a.history.last().map(|t| (t.from, t.to, t.reason)),
        Some((State::Master, State::Fault, wimark_ha::vrrp::Reason::WitnessIsolated)),
        "{:?}",
        a.history
    );
    let w = witness(&lab.a);
    assert!(w.isolated_since_unix_ms.is_some() && !w.holds_key, "{w:?}");
    assert!(lab.a.log().contains("giving the VIPs up"), "{}", lab.a.log());
    // It stays so: nothing brings the VIP back while A is cut off.
    std::thread::sleep(2 * LEASE_TTL);
    assert_eq!(lab.a.state(), Some(State::Fault), "{}", lab.a.log());
    assert!(!has_address(&lab.ns_a, "eth1", VIP));
    assert!(lab.a_master.running().is_empty());
    eprintln!(
        "release_vip: B's master stack {b_started:?} after the cut, A without the VIP {gave_up:?} after it"
    );
    // Healed: the peer answers, A's isolation ends, A starts over as BACKUP
    // and (priority 200, preempting) takes mastership back; B steps down
    // and releases the key, A takes it and starts its stack again.
    lab.heal_a();
    lab.wait_for_a_master_stack_again("A master with the VIP and its stack, B's stopped", || {
        lab.a.state() == Some(State::Master)
            && has_address(&lab.ns_a, "eth1", VIP)
            && !has_address(&lab.ns_b, "eth1", VIP)
    });
    let a = lab.a.instance().expect("A's status");
    assert!(
        a.history.iter().any(|t| t.from == State::Fault
            && t.to == State::Backup
            && t.reason == wimark_ha::vrrp::Reason::WitnessRegained),
        "A came back through BACKUP: {:?}",
        a.history
    );
    assert!(witness(&lab.a).isolated_since_unix_ms.is_none());
}

#[test]
fn the_witness_over_tls_trusts_only_its_ca_and_shows_a_client_certificate() {
    require_dockerd();
    let tag = format!("wht{}", std::process::id());
    let master = Stack::create(&format!("{tag}-master"), 1, None).expect("stack");
    let _backup = Stack::create(&format!("{tag}-backup"), 1, None).expect("stack");
    let tls = EtcdTls::generate(&tag, "10.78.0.9").expect("the lab's certificates");
    let stranger =
        EtcdTls::generate(&format!("{tag}-other"), "10.78.0.9").expect("another CA's certificates");
    let (_lab, ns_a, _ns_b, _sw, etcd) = network(1, Some(&tls));
    let endpoint = "witness https://10.78.0.9:2379";
    let stop = |mut daemon: Daemon| {
        daemon.signal(libc::SIGTERM);
        assert_eq!(daemon.wait(), Some(0), "{}", daemon.log());
    };
    // A CA that did not sign etcd's certificate: etcd is not trusted.
    let daemon = held_back(
        &ns_a,
        &format!("{tag}-wrong-ca"),
        |s| {
            node_config(
                s,
                200,
                "wim-a",
                &tag,
                &etcd.endpoints_toml(),
                &format!(
                    "tls = {{ ca = \"{}\", cert = \"{}\", key = \"{}\" }}",
                    stranger.ca.display(),
                    tls.client_cert.display(),
                    tls.client_key.display()
                ),
            )
        },
        &master,
        "not signed by witness.tls.ca",
    );
    assert_finding(&doctor_witness(&daemon), endpoint, "FAIL", "not signed by witness.tls.ca");
    assert!(witness(&daemon).reachable, "etcd answered the handshake");
    stop(daemon);
    // Our CA, no client certificate: etcd wants one.
    let daemon = held_back(
        &ns_a,
        &format!("{tag}-no-cert"),
        |s| {
            node_config(
                s,
                200,
                "wim-a",
                &tag,
                &etcd.endpoints_toml(),
                &format!("tls = {{ ca = \"{}\" }}", tls.ca.display()),
            )
        },
        &master,
        "witness.tls has no cert and key",
    );
    assert_finding(&doctor_witness(&daemon), endpoint, "FAIL", "witness.tls has no cert and key");
    stop(daemon);
    assert_eq!(etcd.get(KEY).expect("get"), "", "nothing written meanwhile");
    // Our CA and its client certificate: the key, then the master stack.
    let daemon = Daemon::start(&ns_a, &format!("{tag}-right"), |s| {
        node_config(s, 200, "wim-a", &tag, &etcd.endpoints_toml(), &tls.config_line())
    })
    .expect("daemon");
    wait_until(Duration::from_secs(20), "the master stack with the key", || {
        daemon.roles().stack == RunningStack::Master
            && master.running().len() == 1
            && witness(&daemon).holds_key
    })
    .unwrap_or_else(|e| panic!("{e}\n{:?}\n{}", witness(&daemon), daemon.log()));
    let value = etcd.get(KEY).expect("etcdctl get over TLS");
    assert!(value.contains("\"node\":\"wim-a\""), "{value}");
    assert_finding(&doctor_witness(&daemon), endpoint, "OK", "");
    assert_finding(&doctor_witness(&daemon), "witness key", "OK", "");
}

#[test]
fn a_promotion_held_back_by_a_blocking_hook_gives_the_key_up() {
    require_dockerd();
    let tag = format!("whk{}", std::process::id());
    let stacks: Vec<Stack> = ["a-master", "a-backup", "b-master", "b-backup"]
        .iter()
        .map(|name| Stack::create(&format!("{tag}-{name}"), 1, None).expect("stack"))
        .collect();
    let (a_master, b_master) = (&stacks[0], &stacks[2]);
    let (_lab, ns_a, ns_b, sw, etcd) = network(1, None);
    let endpoints = etcd.endpoints_toml();
    // A's blocking hook fails: MASTER with the VIP, no master stack.
    let a = Daemon::start(&ns_a, &format!("{tag}-a"), |s| {
        node_config(
            s,
            200,
            "wim-a",
            &format!("{tag}-a"),
            &endpoints,
            "\n[[hooks.before_promote]]\nrun = [\"/bin/false\"]\n",
        )
    })
    .expect("daemon A");
    wait_until(Duration::from_secs(20), "A's promotion held back", || {
        a.roles().history.last().is_some_and(|r| r.held_back)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", roles_json(&a), a.log()));
    assert!(a_master.running().is_empty());
    wait_until(Duration::from_secs(5), "the key given up", || {
        !witness(&a).holds_key && etcd.get(KEY).is_ok_and(|v| v.is_empty())
    })
    .unwrap_or_else(|e| panic!("{e}\n{:?}\n{}", witness(&a), a.log()));
    let b = Daemon::start(&ns_b, &format!("{tag}-b"), |s| {
        node_config(s, 100, "wim-b", &format!("{tag}-b"), &endpoints, "")
    })
    .expect("daemon B");
    wait_until(Duration::from_secs(20), "B backup with a lease", || {
        b.state() == Some(State::Backup) && witness(&b).holds_lease
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", b.log()));
    // The peer link cut: both MASTER. B's stack may run, since A's does
    // not; a key kept by A would hold it back for as long as A renews.
    ip(&["-n", &sw, "link", "set", "a-peer", "nomaster"]).expect("cut the peer link");
    wait_until(Duration::from_secs(10), "B's master stack with the key", || {
        b.roles().stack == RunningStack::Master
            && b_master.running().len() == 1
            && witness(&b).holds_key
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nB: {:?}\n{}\nA: {:?}",
            witness(&b),
            b.log(),
            witness(&a)
        )
    });
    assert!(a_master.running().is_empty(), "A's stack never started");
}

#[test]
fn the_isolation_rule_pings_the_peer_over_ipv4_and_ipv6() {
    let mut lab = Lab::new().expect("lab");
    let a = lab.namespace("pa", true).expect("namespace");
    let b = lab.namespace("pb", true).expect("namespace");
    lab.veth((&a, "eth0"), (&b, "eth0")).expect("veth");
    for (ns, v4, v6) in [(&a, "10.79.0.1/24", "fd79::1/64"), (&b, "10.79.0.2/24", "fd79::2/64")] {
        lab.address(ns, "eth0", v4).expect("address");
        lab.address(ns, "eth0", v6).expect("address");
    }
    let probe = |peers: &[&str]| {
        let peers: Vec<std::net::IpAddr> = peers.iter().map(|p| p.parse().expect("address")).collect();
        wimark_ha_tests::lab::in_netns(&a, move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(wimark_ha::witness::probe::peer_answers(
                    peers,
                    Duration::from_millis(300),
                ))
        })
        .expect("in netns")
    };
    assert_eq!(probe(&["fd79::2"]), Some(true), "IPv6 peer");
    assert_eq!(probe(&["10.79.0.2"]), Some(true), "IPv4 peer");
    assert_eq!(probe(&["fd79::3"]), Some(false), "nobody there (IPv6)");
    assert_eq!(probe(&["10.79.0.3"]), Some(false), "nobody there (IPv4)");
    assert_eq!(probe(&["10.79.0.3", "fd79::2"]), Some(true), "one family answers");
    assert_eq!(probe(&["fe80::2"]), None, "link-local: no interface to send on");
    assert_eq!(probe(&[]), None, "no peer known");
    // The peer's link down: no answer on either family.
    ip(&["-n", &b, "link", "set", "eth0", "down"]).expect("link down");
    assert_eq!(probe(&["10.79.0.2", "fd79::2"]), Some(false));
}

/// `wimark-ha doctor --json` with `daemon`'s config, from its namespace:
/// the witness findings, check → (status, detail).
fn doctor_witness(daemon: &Daemon) -> std::collections::BTreeMap<String, (String, String)> {
    daemon
        .doctor_json()
        .iter()
        .filter_map(|f| {
            let check = f["check"].as_str()?;
            check.starts_with("witness").then(|| {
                (
                    check.to_string(),
                    (
                        f["status"].as_str().unwrap_or("").to_string(),
                        f["detail"].as_str().unwrap_or("").to_string(),
                    ),
                )
            })
        })
        .collect()
}

/// The finding `check` says `status` and its detail contains `says`.
fn assert_finding(
    findings: &std::collections::BTreeMap<String, (String, String)>,
    check: &str,
    status: &str,
    says: &str,
) {
    let found = findings.get(check);
    assert!(
        found.is_some_and(|(s, detail)| s == status && detail.contains(says)),
        "doctor's `{check}` must be {status} saying `{says}`: {findings:?}"
    );
}

/// B's promotions to the master stack that were carried out.
fn promotions(daemon: &Daemon) -> Vec<wimark_ha::records::SwitchRecord> {
    daemon
        .roles()
        .history
        .into_iter()
        .filter(|r| r.to == RunningStack::Master && !r.held_back && !r.cancelled)
        .collect()
}

/// Polls both master stacks every 20 ms until B's runs, failing at once if
/// both run together; returns when B's started, from `since`. A's stack
/// only stops and B's only starts here, so B is read first: A still
/// running after B was seen running is a real overlap, whatever the time
/// between the two reads.
fn never_both_until_b_starts(lab: &WitnessLab, since: Instant, within: Duration) -> Duration {
    loop {
        let b = lab.b_master.running().len();
        let a = lab.a_master.running().len();
        assert!(
            a == 0 || b == 0,
            "both master stacks run {:?} in\nA: {}\nB: {}",
            since.elapsed(),
            roles_json(&lab.a),
            roles_json(&lab.b)
        );
        if b == 1 {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < within,
            "B's master stack not started within {within:?}\nA: {:?}\n{}\nB: {:?}\n{}",
            witness(&lab.a),
            lab.a.log(),
            witness(&lab.b),
            lab.b.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_planned_switchover_hands_the_key_over_without_waiting_out_lease_or_delay() {
    let tag = format!("whs{}", std::process::id());
    // A demote_delay far above the lease: a switchover that waited for it,
    // or for the TTL, would show in B's wait for the key.
    let lab = witness_lab_with(&tag, 1, "5s", "");
    let asked = Instant::now();
    let response = wimark_ha::control::request(
        &lab.a.socket,
        &wimark_ha::control::Request::Switchover {
            instance: None,
            back: false,
        },
    )
    .expect("switchover");
    assert!(response.ok, "{response:?}");
    let b_started = never_both_until_b_starts(&lab, asked, Duration::from_secs(10));
    lab.wait_for_b_master_stack(Duration::from_secs(5), "B's promotion recorded");
    let promotion = promotions(&lab.b)
        .pop()
        .unwrap_or_else(|| panic!("no promotion in {}", roles_json(&lab.b)));
    // What B waited for is A's stop (one container, stopped on SIGTERM) and
    // the release: well under the TTL, and nothing of the 5 s delay.
    assert!(
        promotion.witness < LEASE_TTL / 2,
        "B waited {:?} for the key after a planned switchover (TTL {LEASE_TTL:?})\nA: {}\n{}",
        promotion.witness,
        roles_json(&lab.a),
        lab.a.log()
    );
    // A releases the key once its master stack is stopped and records its
    // switch just after: B may be told before A's record is written.
    // (A's history also holds the start-up BACKUP's demotion, cancelled by
    // its first MASTER within the 5 s delay: only a record made after the
    // request is the switchover's.)
    let asked_unix_ms = wimark_ha::clock::unix_ms() - asked.elapsed().as_millis() as u64;
    let mut demotion = None;
    wait_until(Duration::from_secs(5), "A's demotion recorded", || {
        demotion = lab
            .a
            .roles()
            .history
            .into_iter()
            .find(|r| r.to == RunningStack::Backup && r.at_unix_ms >= asked_unix_ms);
        demotion.is_some()
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\n{}", roles_json(&lab.a), lab.a.log()));
    let demotion = demotion.expect("found");
    assert!(
        !demotion.cancelled && demotion.problems.is_empty(),
        "{demotion:?}\nA: {}\n{}",
        roles_json(&lab.a),
        lab.a.log()
    );
    assert!(
        lab.etcd
            .get(KEY)
            .expect("get")
            .contains("\"node\":\"wim-b\""),
        "the key names B"
    );
    assert!(witness(&lab.b).holds_key && !witness(&lab.a).holds_key);
    eprintln!(
        "switchover: B's master stack {b_started:?} after the request; B waited {:?} for the key",
        promotion.witness
    );
}

#[test]
fn an_etcd_leader_change_during_a_failover_promotes_once() {
    let tag = format!("whl{}", std::process::id());
    let mut lab = witness_lab_with(&tag, 3, DEMOTE_DELAY, "");
    lab.lose_a();
    let lost = Instant::now();
    wait_until(
        Duration::from_secs(2),
        "B MASTER, waiting for A's key",
        || {
            lab.b.state() == Some(State::Master) && witness(&lab.b).waiting_since_unix_ms.is_some()
        },
    )
    .unwrap_or_else(|e| panic!("{e}\nB: {:?}\n{}", witness(&lab.b), lab.b.log()));
    // The leader lost while B waits for A's lease to expire: the new leader
    // restarts every lease's TTL, so the wait is longer, never shorter.
    let leader = lab.etcd.kill_leader().expect("kill the leader");
    let killed = lost.elapsed();
    // (A's containers are left running by the lab's "loss": its daemon is
    // gone, not its dockerd; only B's are watched.)
    lab.wait_for_b_master_stack(Duration::from_secs(20), "B's master stack");
    let b_started = lost.elapsed();
    // Long enough for a second claim or a lease lost to the election to
    // show: one promotion, the key B's throughout.
    std::thread::sleep(LEASE_TTL * 2);
    let promoted = promotions(&lab.b);
    assert_eq!(
        promoted.len(),
        1,
        "one promotion, no double one: {}",
        roles_json(&lab.b)
    );
    let w = witness(&lab.b);
    assert!(w.holds_key && w.holds_lease && w.isolated_since_unix_ms.is_none(), "{w:?}");
    assert_eq!(lab.b.roles().stack, RunningStack::Master);
    assert_eq!(lab.b_master.running().len(), 1);
    let findings = doctor_witness(&lab.b);
    let down: Vec<_> = findings
        .iter()
        .filter(|(check, (status, _))| check.starts_with("witness http") && status == "WARN")
        .collect();
    assert_eq!(down.len(), 1, "one member down, a WARN (the others are a quorum): {findings:?}");
    assert_finding(&findings, "witness key", "OK", "held by wim-b (this server)");
    let value = lab.etcd.get(KEY).expect("get from the surviving members");
    assert!(value.contains("\"node\":\"wim-b\""), "the key names B: {value}");
    eprintln!(
        "leader {leader} killed {killed:?} after A's loss; B's master stack at {b_started:?}, after {:?} waiting for the key",
        promoted[0].witness
    );
}
