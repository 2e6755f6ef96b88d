//! The rules, one bad value at a time: each names file, line and key.

use super::*;

const GOOD: &str = r#"
[daemon]
control_socket = "/run/wimark-ha/test.sock"

[[instance]]
name = "WIM1"
interface = "eth1"
vrid = 67
priority = 200
version = 3
advert_interval = "10ms"
virtual_ips = ["10.10.10.3/24"]
preempt = true
unicast_peers = []
fast_detect = { interval = "1ms", multiplier = 3 }
"#;

fn parse_str(text: &str) -> Result<Config, ConfigError> {
    parse(text, Path::new("/etc/wimark-ha/wimark-ha.toml"))
}

#[test]
fn the_documented_example_is_accepted() {
    let config = parse_str(GOOD).expect("valid");
    assert_eq!(
        config.daemon.control_socket,
        PathBuf::from("/run/wimark-ha/test.sock")
    );
    let instance = &config.instances[0];
    assert_eq!(
        (instance.vrid, instance.priority, instance.version),
        (67, 200, Version::V3)
    );
    assert_eq!(instance.advert_interval, Duration::from_millis(10));
    assert_eq!(
        instance.virtual_ips,
        vec![VirtualIp {
            address: "10.10.10.3".parse().expect("ip"),
            prefix_len: 24
        }]
    );
    assert_eq!(
        instance.fast_detect,
        Some(FastDetect {
            interval: Duration::from_millis(1),
            multiplier: Multiplier::Fixed(3)
        })
    );
    assert_eq!(config.daemon.advert_senders, AdvertSenders::Auto);
    let auto = parse_str(
        &GOOD
            .replace("multiplier = 3", "multiplier = \"auto\"")
            .replace("[daemon]\n", "[daemon]\nadvert_senders = 2\n"),
    )
    .expect("auto");
    assert_eq!(
        auto.instances[0].fast_detect.map(|f| f.multiplier),
        Some(Multiplier::Auto)
    );
    assert_eq!(auto.daemon.advert_senders, AdvertSenders::Count(2));
    assert_eq!(
        instance.garp,
        Garp {
            repeat: 5,
            delay: Duration::from_secs(5)
        }
    );
}

#[test]
fn the_vendors_v2_instance_is_accepted_with_a_warning_for_a_long_password() {
    let text = "[[instance]]\nname = \"WIM1\"\ninterface = \"eth1\"\nvrid = 67\npriority = 200\nversion = 2\nadvert_interval = \"1s\"\nauth_pass = \"wimark123\"\nvirtual_ips = [\"10.10.10.3/24\"]\n";
    let config = parse_str(text).expect("valid");
    assert_eq!(config.instances[0].auth, Auth::password("wimark12"));
    assert_eq!(config.warnings.len(), 1);
    assert_eq!(config.warnings[0].line, 8);
}

fn error_for(replace: &str, with: &str) -> ConfigError {
    let text = GOOD.replace(replace, with);
    assert_ne!(text, GOOD, "test must change the config");
    parse_str(&text).expect_err("must be refused")
}

#[test]
fn each_bad_value_names_file_line_key_and_what_is_allowed() {
    let cases = [
        (
            "priority = 200",
            "priority = 300",
            9,
            "priority",
            "allowed 1 to 255",
        ),
        ("vrid = 67", "vrid = 0", 8, "vrid", "allowed 1 to 255"),
        (
            "version = 3",
            "version = 4",
            10,
            "version",
            "2 (RFC 3768) or 3",
        ),
        (
            "advert_interval = \"10ms\"",
            "advert_interval = \"15ms\"",
            11,
            "advert_interval",
            "steps of 10ms",
        ),
        (
            "advert_interval = \"10ms\"",
            "advert_interval = \"soon\"",
            11,
            "advert_interval",
            "not a duration",
        ),
        (
            "\"10.10.10.3/24\"",
            "\"10.10.10.300/24\"",
            12,
            "virtual_ips",
            "not an IP address",
        ),
        (
            "\"10.10.10.3/24\"",
            "\"10.10.10.3/33\"",
            12,
            "virtual_ips",
            "bad prefix length",
        ),
        (
            "\"10.10.10.3/24\"",
            "\"10.10.10.3/24\", \"fd00::3/64\"",
            12,
            "virtual_ips",
            "mixes IPv4 and IPv6",
        ),
        (
            "virtual_ips = [\"10.10.10.3/24\"]",
            "virtual_ips = []",
            12,
            "virtual_ips",
            "at least one",
        ),
        (
            "unicast_peers = []",
            "unicast_peers = [\"peer-b\"]",
            14,
            "unicast_peers",
            "not an IP address",
        ),
        (
            "interval = \"1ms\"",
            "interval = \"20ms\"",
            15,
            "fast_detect.interval",
            "shorter than advert_interval",
        ),
        (
            "multiplier = 3",
            "multiplier = 1",
            15,
            "fast_detect.multiplier",
            "allowed 2 to 255",
        ),
        (
            "multiplier = 3",
            "multiplier = \"fast\"",
            15,
            "fast_detect.multiplier",
            "`fast` is not allowed; a whole number of intervals (2 to 255) or \"auto\"",
        ),
        (
            "multiplier = 3",
            "multiplier = 2.5",
            15,
            // A type error inside an inline table is toml's to name.
            "fast_detect",
            "a whole number or \"auto\"",
        ),
        (
            "control_socket = \"/run/wimark-ha/test.sock\"",
            "control_socket = \"/run/wimark-ha/test.sock\"\nadvert_senders = 0",
            4,
            "advert_senders",
            "allowed 1 to 16",
        ),
        (
            "preempt = true",
            "preempt = true\nauth_pass = \"x\"",
            14,
            "auth_pass",
            "VRRPv3 has no authentication",
        ),
        (
            "preempt = true",
            "preemt = true",
            13,
            "preemt",
            "unknown field",
        ),
        (
            "priority = 200",
            "priority = \"high\"",
            9,
            "priority",
            "invalid type",
        ),
        (
            "interface = \"eth1\"",
            "interface = \"a-very-long-interface\"",
            7,
            "interface",
            "1 to 15 characters",
        ),
    ];
    for (from, to, line, key, allowed) in cases {
        let error = error_for(from, to);
        assert_eq!(
            (error.line, error.key.as_str()),
            (line, key),
            "{to}: {error}"
        );
        assert!(error.message.contains(allowed), "{to}: {error}");
        assert!(
            error
                .to_string()
                .starts_with("/etc/wimark-ha/wimark-ha.toml:"),
            "{error}"
        );
    }
}

#[test]
fn v2_specific_rules() {
    let v2 = GOOD
        .replace("version = 3", "version = 2")
        .replace("fast_detect = { interval = \"1ms\", multiplier = 3 }\n", "");
    let error = parse_str(&v2).expect_err("10ms is not a v2 interval");
    assert_eq!(error.key, "advert_interval");
    assert!(error.message.contains("whole seconds"), "{error}");
    let v2_v6 = v2
        .replace("\"10ms\"", "\"1s\"")
        .replace("10.10.10.3/24", "fd00::3/64");
    let error = parse_str(&v2_v6).expect_err("v2 is IPv4 only");
    assert!(error.message.contains("IPv4 only"), "{error}");
}

#[test]
fn duplicates_and_missing_instances_are_refused() {
    let twice = format!(
        "{GOOD}\n{}",
        &GOOD[GOOD.find("[[instance]]").expect("instance")..]
    );
    let error = parse_str(&twice).expect_err("duplicate name");
    assert_eq!(error.key, "name");
    assert_eq!(error.line, 17);
    let renamed = twice.replacen("name = \"WIM1\"", "name = \"WIM2\"", 1);
    assert_eq!(parse_str(&renamed).expect_err("duplicate vrid").key, "vrid");
    assert_eq!(
        parse_str("[daemon]\n").expect_err("no instance").key,
        "instance"
    );
    assert_eq!(parse_str("[[instance]\nname=").expect_err("syntax").line, 1);
}

const HEARTBEAT: &str =
    "peers = [\"10.10.10.2\"]\n[[instance.heartbeat]]\ninterface = \"eth0\"\npeer = \"192.168.1.12\"\n";

#[test]
fn heartbeat_links_are_read_and_checked() {
    let config = parse_str(&format!("{GOOD}{HEARTBEAT}")).expect("valid");
    assert_eq!(
        config.instances[0].heartbeats,
        vec![HeartbeatLink {
            interface: "eth0".to_string(),
            peer: "192.168.1.12".parse().expect("ip"),
        }]
    );
    // (text, line, key, message)
    let cases = [
        (
            HEARTBEAT.replace("peers = [\"10.10.10.2\"]\n", ""),
            16,
            "heartbeat",
            "set `peers`",
        ),
        (
            HEARTBEAT.replace("\"eth0\"", "\"eth1\""),
            18,
            "heartbeat.interface",
            "already one of",
        ),
        (
            HEARTBEAT.replace("192.168.1.12", "fd00::2"),
            19,
            "heartbeat.peer",
            "family",
        ),
        (
            HEARTBEAT.replace("\"eth0\"", "\"eth0/x\""),
            18,
            "heartbeat.interface",
            "interface name",
        ),
    ];
    for (heartbeat, line, key, message) in cases {
        let error = parse_str(&format!("{GOOD}{heartbeat}")).expect_err("refused");
        assert_eq!((error.line, error.key.as_str()), (line, key), "{error}");
        assert!(error.message.contains(message), "{error}");
    }
    // Another instance with the same VRID on the heartbeat link.
    let other = format!(
        "{GOOD}{HEARTBEAT}\n{}",
        GOOD[GOOD.find("[[instance]]").expect("instance")..]
            .replace("WIM1", "WIM2")
            .replace("\"eth1\"", "\"eth0\"")
    );
    let error = parse_str(&other).expect_err("VRID twice on eth0");
    assert_eq!(error.key, "vrid");
    assert!(error.message.contains("heartbeat link"), "{error}");
}

#[test]
fn restart_hold_is_bounded_and_needs_vrrp_v3() {
    let with = |hold: &str| {
        GOOD.replace(
            "[daemon]\n",
            &format!("[daemon]\nrestart_hold = \"{hold}\"\n"),
        )
    };
    let config = parse_str(&with("5s")).expect("valid");
    assert_eq!(config.daemon.restart_hold, Some(Duration::from_secs(5)));
    for bad in ["10ms", "3m", "soon"] {
        let error = parse_str(&with(bad)).expect_err("refused");
        assert_eq!(
            (error.line, error.key.as_str()),
            (3, "restart_hold"),
            "{error}"
        );
    }
    let v2 = with("5s")
        .replace("version = 3", "version = 2")
        .replace("\"10ms\"", "\"1s\"")
        .replace("fast_detect = { interval = \"1ms\", multiplier = 3 }\n", "");
    let error = parse_str(&v2).expect_err("v2");
    assert!(error.message.contains("needs VRRPv3"), "{error}");
}

#[test]
fn fencing_needs_a_command_and_roles() {
    let roles = "[roles]\ninstance = \"WIM1\"\nmaster = { compose_project = \"m\" }\nbackup = { compose_project = \"b\" }\n";
    let fencing =
        "[fencing]\ncommand = [\"ssh\", \"root@10.10.10.2\", \"true\"]\ntimeout = \"3s\"\n";
    let config = parse_str(&format!("{GOOD}{roles}{fencing}")).expect("valid");
    assert_eq!(
        config.fencing,
        Some(FencingConfig {
            command: vec!["ssh".into(), "root@10.10.10.2".into(), "true".into()],
            timeout: Duration::from_secs(3),
        })
    );
    let error = parse_str(&format!("{GOOD}{fencing}")).expect_err("no roles");
    assert_eq!(error.key, "fencing");
    assert!(error.message.contains("[roles]"), "{error}");
    let error =
        parse_str(&format!("{GOOD}{roles}[fencing]\ncommand = []\n")).expect_err("empty command");
    assert_eq!(error.key, "fencing.command");
    let error = parse_str(&format!("{GOOD}{roles}{}", fencing.replace("3s", "soon")))
        .expect_err("bad timeout");
    assert_eq!(error.key, "fencing.timeout");
}

#[test]
fn the_witness_names_its_members_key_and_lease() {
    let roles = "[roles]\ninstance = \"WIM1\"\nmaster = { compose_project = \"m\" }\nbackup = { compose_project = \"b\" }\n";
    let witness = "[witness]\nendpoints = [\"http://10.0.0.9:2379\", \"http://10.0.0.10:2379\"]\nkey = \"/wimark-ha/WIM1\"\nnode = \"wim-a\"\n";
    let config = parse_str(&format!("{GOOD}{roles}{witness}")).expect("valid");
    assert_eq!(
        config.witness,
        Some(WitnessConfig {
            endpoints: vec!["http://10.0.0.9:2379".into(), "http://10.0.0.10:2379".into()],
            key: "/wimark-ha/WIM1".into(),
            lease_ttl: Duration::from_secs(2),
            node: "wim-a".into(),
            credentials: None,
            tls: None,
            on_isolation: OnIsolation::KeepVip,
        })
    );
    let full = format!(
        "{witness}lease_ttl = \"5s\"\nuser = \"ha\"\npassword = \"s3cret\"\non_isolation = \"release_vip\"\n"
    );
    let config = parse_str(&format!("{GOOD}{roles}{full}")).expect("valid");
    let w = config.witness.expect("witness");
    assert_eq!(w.lease_ttl, Duration::from_secs(5));
    assert_eq!(w.on_isolation, OnIsolation::ReleaseVip);
    assert!(!format!("{:?}", w.credentials).contains("s3cret"), "the password never shows");
    // Each bad value names its key (and the line, as every config error).
    for (text, key, says) in [
        (format!("{GOOD}{witness}"), "witness", "[roles]"),
        (format!("{GOOD}{roles}{}", witness.replace("\"http://10.0.0.9:2379\", \"http://10.0.0.10:2379\"", "")), "witness.endpoints", "at least one"),
        (format!("{GOOD}{roles}{}", witness.replace("http://10.0.0.9:2379", "10.0.0.9")), "witness.endpoints", "not an etcd client URL"),
        (format!("{GOOD}{roles}{}", witness.replace("http://10.0.0.9:2379", "https://10.0.0.9:2379")), "witness.endpoints", "needs `tls"),
        (format!("{GOOD}{roles}{}", witness.replace("/wimark-ha/WIM1", "wimark-ha")), "witness.key", "absolute"),
        (format!("{GOOD}{roles}{witness}lease_ttl = \"1500ms\"\n"), "witness.lease_ttl", "whole seconds"),
        (format!("{GOOD}{roles}{witness}lease_ttl = \"0s\"\n"), "witness.lease_ttl", "more than 0"),
        (format!("{GOOD}{roles}{witness}user = \"ha\"\n"), "witness.password", "both"),
        (format!("{GOOD}{roles}{witness}on_isolation = \"panic\"\n"), "witness.on_isolation", "keep_vip"),
        (format!("{GOOD}{roles}{}", witness.replace("wim-a", "wim a")), "witness.node", "plain name"),
        (format!("{GOOD}{roles}{witness}tls = {{ ca = \"ca.pem\" }}\n"), "witness.tls.ca", "absolute"),
    ] {
        let error = parse_str(&text).expect_err(key);
        assert_eq!(error.key, key, "{error}");
        assert!(error.message.contains(says), "{error}");
        assert!(error.line > 0, "{error}");
    }
}

/// Issue 14, item 5: addresses and paths that parse but cannot work.
#[test]
fn addresses_and_paths_that_cannot_work_are_refused() {
    let cases = [
        ("\"10.10.10.3/24\"", "\"0.0.0.0/24\"", 12, "virtual_ips", "unspecified"),
        ("\"10.10.10.3/24\"", "\"255.255.255.255\"", 12, "virtual_ips", "broadcast"),
        ("\"10.10.10.3/24\"", "\"224.0.0.18/24\"", 12, "virtual_ips", "multicast"),
        ("\"10.10.10.3/24\"", "\"127.0.0.5/8\"", 12, "virtual_ips", "loopback"),
        ("\"10.10.10.3/24\"", "\"10.10.10.3/0\"", 12, "virtual_ips", "prefix /0"),
        ("unicast_peers = []", "unicast_peers = [\"10.10.10.3\"]", 14, "unicast_peers", "one of this instance's virtual IPs"),
        ("unicast_peers = []", "unicast_peers = [\"224.0.0.18\"]", 14, "unicast_peers", "multicast"),
        ("unicast_peers = []", "unicast_peers = [\"0.0.0.0\"]", 14, "unicast_peers", "unspecified"),
        ("unicast_peers = []", "unicast_peers = [\"10.10.10.2\", \"10.10.10.2\"]", 14, "unicast_peers", "listed twice"),
        ("unicast_peers = []", "peers = [\"10.10.10.2\", \"10.10.10.2\"]", 14, "peers", "listed twice"),
        ("\"/run/wimark-ha/test.sock\"", "\"test.sock\"", 3, "control_socket", "not an absolute path"),
        ("\"/run/wimark-ha/test.sock\"", "\"\"", 3, "control_socket", "not an absolute path"),
        ("control_socket = \"/run/wimark-ha/test.sock\"", "state_dir = \"var/lib\"", 3, "state_dir", "not an absolute path"),
    ];
    for (from, to, line, key, why) in cases {
        let error = error_for(from, to);
        assert_eq!((error.line, error.key.as_str()), (line, key), "{to}: {error}");
        assert!(error.message.contains(why), "{to}: {error}");
    }
    // A v6 link-local VIP stays allowed (RFC 5798 §5.2.9 wants one first).
    let v6 = GOOD.replace("\"10.10.10.3/24\"", "\"fe80::3/64\"");
    parse_str(&v6).expect("link-local IPv6 VIP");
}

#[test]
fn a_vip_of_two_instances_is_refused() {
    let second = GOOD
        .split("[[instance]]")
        .nth(1)
        .expect("instance")
        .replace("WIM1", "WIM2")
        .replace("vrid = 67", "vrid = 68");
    let text = format!("{GOOD}\n[[instance]]{second}");
    let error = parse_str(&text).expect_err("a VIP held twice");
    assert_eq!(error.key, "virtual_ips", "{error}");
    assert!(
        error.message.contains("10.10.10.3 is already a virtual IP of instance WIM1"),
        "{error}"
    );
    assert!(error.line > 14, "points at the second instance: {error}");
    // Different addresses are fine.
    let other = text.replacen("10.10.10.3/24", "10.10.10.9/24", 2);
    let other = other.replacen("10.10.10.9/24", "10.10.10.3/24", 1);
    parse_str(&other).expect("two instances, two VIPs");
}

/// Issue 14, item 5: names, zero timeouts and sections that parse but
/// cannot work, and serde's type names.
#[test]
fn names_zero_timeouts_and_orphan_sections_are_refused_with_why() {
    let cases = [
        ("name = \"WIM1\"", "name = \"WIM1\\nWIM1: MASTER\"", 6, "name", "letters, digits"),
        ("name = \"WIM1\"", "name = \"..\"", 6, "name", "not starting with `.`"),
        ("name = \"WIM1\"", "name = \"a:b\"", 6, "name", "letters, digits"),
        ("interface = \"eth1\"", "interface = \"eth1:0\"", 7, "interface", "no `/`, `:`"),
        ("interface = \"eth1\"", "interface = \"..\"", 7, "interface", "not `.` or `..`"),
        ("interface = \"eth1\"", "interface = \"eth\\n1\"", 7, "interface", "control characters"),
        ("vrid = 67", "vrid = \"67\"", 8, "vrid", "expected a whole number (no quotes)"),
        ("preempt = true", "preempt = \"yes\"", 13, "preempt", "expected true or false"),
    ];
    for (from, to, line, key, why) in cases {
        let error = error_for(from, to);
        assert_eq!((error.line, error.key.as_str()), (line, key), "{to}: {error}");
        assert!(error.message.contains(why), "{to}: {error}");
        assert!(!error.message.contains("i64"), "{to}: {error}");
    }
    // fast_detect on VRRPv2, with why.
    let v2 = GOOD
        .replace("version = 3", "version = 2")
        .replace("advert_interval = \"10ms\"", "advert_interval = \"1s\"");
    let error = parse_str(&v2).expect_err("fast_detect on v2");
    assert_eq!((error.line, error.key.as_str()), (15, "fast_detect"), "{error}");
    assert!(error.message.contains("needs version = 3"), "{error}");

    let roles = "[roles]\ninstance = \"WIM1\"\nmaster = { compose_project = \"m\" }\nbackup = { compose_project = \"b\" }\n";
    let hook = "[[hooks.before_promote]]\nremove = \"/var/lib/x/*.lock\"\n";
    parse_str(&format!("{GOOD}{roles}{hook}")).expect("a hook with roles");
    let error = parse_str(&format!("{GOOD}{hook}")).expect_err("a hook without roles");
    assert_eq!(error.key, "hooks.before_promote", "{error}");
    assert!(error.message.contains("need a [roles] section"), "{error}");

    let zero = [
        (format!("{GOOD}{roles}stop_timeout = \"0s\"\n"), "roles.stop_timeout", "whole number of seconds"),
        (format!("{GOOD}{roles}stop_timeout = \"500ms\"\n"), "roles.stop_timeout", "whole number of seconds"),
        (format!("{GOOD}{roles}stop_timeout = \"1500ms\"\n"), "roles.stop_timeout", "whole number of seconds"),
        (format!("{GOOD}{roles}start_timeout = \"0s\"\n"), "roles.start_timeout", "more than 0"),
        (format!("{GOOD}{roles}{hook}timeout = \"0s\"\n"), "hooks.before_promote.timeout", "more than 0"),
        (format!("{GOOD}[notify]\nscript = \"/usr/local/bin/n\"\ntimeout = \"0s\"\n"), "notify.timeout", "more than 0"),
        (
            format!("{GOOD}{roles}[fencing]\ncommand = [\"/bin/true\"]\ntimeout = \"0s\"\n"),
            "fencing.timeout",
            "more than 0",
        ),
    ];
    for (text, key, why) in zero {
        let error = parse_str(&text).expect_err(key);
        assert_eq!(error.key, key, "{error}");
        assert!(error.message.contains(why), "{error}");
    }
    let config = parse_str(&format!("{GOOD}{roles}stop_timeout = \"2s\"\n")).expect("2s");
    assert_eq!(config.roles.expect("roles").stop_timeout, Duration::from_secs(2));
}

#[test]
fn trackers_take_keepalived_defaults_and_names() {
    let config = parse_str(&format!(
        "{GOOD}[[instance.track]]\nscript = [\"/usr/local/bin/chk_mongo\", \"--quick\"]\nweight = -50\nfall = 3\n\
         [[instance.track]]\ninterface = \"eth2\"\n\
         [[instance.track]]\nname = \"prio\"\nfile = \"/run/wimark-ha/prio\"\nweight = 5\n"
    ))
    .expect("valid");
    let trackers = &config.instances[0].trackers;
    assert_eq!(trackers.len(), 3);
    assert_eq!((trackers[0].name.as_str(), trackers[0].weight, trackers[0].line), ("chk_mongo", -50, 17));
    match &trackers[0].kind {
        TrackKind::Script(script) => {
            assert_eq!(script.argv, ["/usr/local/bin/chk_mongo", "--quick"]);
            assert_eq!((script.interval, script.timeout), (Duration::from_secs(1), Duration::from_secs(1)));
            assert_eq!((script.rise, script.fall, script.init_fail), (1, 3, false));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!((trackers[1].name.as_str(), trackers[1].weight), ("eth2", 0));
    assert_eq!(trackers[1].kind, TrackKind::Interface("eth2".to_string()));
    assert_eq!(trackers[2].kind, TrackKind::File(PathBuf::from("/run/wimark-ha/prio")));
}

#[test]
fn a_process_tracker_counts_a_name_to_a_quorum() {
    let config = parse_str(&format!(
        "{GOOD}[[instance.track]]\nprocess = \"mosquitto\"\nweight = -60\n\
         [[instance.track]]\nname = \"workers\"\nprocess = \"nginx\"\nquorum = 3\ngrace = \"2s\"\n"
    ))
    .expect("valid");
    let trackers = &config.instances[0].trackers;
    assert_eq!((trackers[0].name.as_str(), trackers[0].weight), ("mosquitto", -60));
    assert_eq!(
        trackers[0].kind,
        TrackKind::Process(ProcessTrack { name: "mosquitto".into(), quorum: 1, grace: Duration::ZERO })
    );
    assert_eq!(
        trackers[1].kind,
        TrackKind::Process(ProcessTrack { name: "nginx".into(), quorum: 3, grace: Duration::from_secs(2) })
    );
}

#[test]
fn container_trackers_judge_the_master_stack_and_ask_the_roles_docker() {
    let text = format!(
        "{GOOD}[[instance.track]]\ncontainer = \"/wimark-mongo\"\nweight = -100\n\
         [[instance.track]]\nname = \"stack\"\ncontainer_label = \"com.wimark.stack=master\"\ngrace = \"30s\"\nwhen = \"always\"\n"
    );
    let config = parse_str(&text).expect("valid");
    let trackers = &config.instances[0].trackers;
    assert_eq!(trackers[0].name, "wimark-mongo");
    assert_eq!(
        trackers[0].kind,
        TrackKind::Container(ContainerTrack {
            target: ContainerTarget::Name("wimark-mongo".into()),
            grace: Duration::from_secs(10),
            always: false,
            docker_socket: PathBuf::from("/var/run/docker.sock"),
        })
    );
    assert_eq!(
        trackers[1].kind,
        TrackKind::Container(ContainerTrack {
            target: ContainerTarget::Label("com.wimark.stack=master".into()),
            grace: Duration::from_secs(30),
            always: true,
            docker_socket: PathBuf::from("/var/run/docker.sock"),
        })
    );
    let roles = "[roles]\ninstance = \"WIM1\"\nmaster = { compose_project = \"m\" }\nbackup = { compose_project = \"b\" }\ndocker_socket = \"/run/docker-lab.sock\"\n";
    let config = parse_str(&format!("{text}{roles}")).expect("with roles");
    match &config.instances[0].trackers[0].kind {
        TrackKind::Container(track) => {
            assert_eq!(track.docker_socket, PathBuf::from("/run/docker-lab.sock"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_bad_tracker_names_its_line_and_key() {
    let cases: &[(&str, &str, &str)] = &[
        ("interface = \"eth2\"\nscript = [\"/bin/true\"]\n", "track", "exactly one of"),
        ("weight = 0\n", "track", "exactly one of"),
        ("script = [\"chk_mongo\"]\n", "track.script", "absolute path"),
        ("script = [\"/bin/true\"]\nweight = 300\n", "track.weight", "out of range"),
        ("script = [\"/bin/true\"]\ninterval = \"0s\"\n", "track.interval", "more than 0"),
        ("script = [\"/bin/true\"]\nfall = 0\n", "track.fall", "out of range"),
        ("interface = \"eth2\"\nrise = 2\n", "track.rise", "script tracker's setting"),
        ("file = \"prio\"\n", "track.file", "absolute path"),
        ("name = \"bad name\"\ninterface = \"eth2\"\n", "track.name", "letters, digits"),
        ("interface = \"eth2\"\n[[instance.track]]\nname = \"eth2\"\nfile = \"/run/x\"\n", "track.name", "names two trackers"),
        ("script = [\"/bin/true\"]\nsleep = 1\n", "sleep", "unknown field"),
        ("container = \"mongo\"\ncontainer_label = \"a=b\"\n", "track.container_label", "not both"),
        ("container = \"mongo db\"\n", "track.container", "container name"),
        ("container_label = \"a=b\"\n", "track.name", "needs a name"),
        ("container = \"mongo\"\nwhen = \"sometimes\"\n", "track.when", "not allowed"),
        ("container = \"mongo\"\nrise = 2\n", "track.rise", "script tracker's setting"),
        ("script = [\"/bin/true\"]\ngrace = \"1s\"\n", "track.grace", "container or process tracker's setting"),
        ("process = \"/usr/sbin/mosquitto\"\n", "track.process", "no path"),
        ("process = \"mosquitto\"\nquorum = 0\n", "track.quorum", "out of range"),
        ("interface = \"eth2\"\nquorum = 2\n", "track.quorum", "process tracker's setting"),
        ("process = \"mosquitto\"\ncontainer = \"mongo\"\n", "track", "exactly one of"),
        ("process = \"mosquitto\"\nfile = \"/run/x\"\n", "track", "exactly one of"),
        ("container = \"mongo\"\ninterface = \"eth2\"\n", "track", "exactly one of"),
    ];
    for (entry, key, words) in cases {
        let text = format!("{GOOD}[[instance.track]]\n{entry}");
        let error = parse_str(&text).expect_err(entry);
        assert_eq!(error.key, *key, "{entry}: {error}");
        assert!(error.message.contains(words), "{entry}: {error}");
        assert!(error.line >= 17, "{entry}: {error}");
    }
    // The address owner keeps its priority: weight 0 only.
    let owner = GOOD.replace("priority = 200", "priority = 255");
    let error = parse_str(&format!("{owner}[[instance.track]]\ninterface = \"eth2\"\nweight = -10\n")).expect_err("owner");
    assert_eq!((error.key.as_str(), error.line), ("track.weight", 18), "{error}");
    assert!(parse_str(&format!("{owner}[[instance.track]]\ninterface = \"eth2\"\n")).is_ok());
}

#[test]
fn sync_groups_name_existing_instances_once_and_roles_may_follow_one() {
    let two = format!(
        "{GOOD}\n[[instance]]\nname = \"WIM2\"\ninterface = \"eth1\"\nvrid = 68\npriority = 200\nvirtual_ips = [\"10.10.20.3/24\"]\n"
    );
    let roles = "[roles]\nsync_group = \"G1\"\nmaster = { compose_project = \"m\" }\nbackup = { compose_project = \"b\" }\n";
    let config = parse_str(&format!(
        "{two}[[sync_group]]\nname = \"G1\"\ninstances = [\"WIM1\", \"WIM2\"]\n{roles}"
    ))
    .expect("valid");
    assert_eq!(
        config.sync_groups,
        vec![SyncGroupConfig { name: "G1".into(), instances: vec!["WIM1".into(), "WIM2".into()] }]
    );
    assert_eq!(config.sync_group_of("WIM2").map(|g| g.name.as_str()), Some("G1"));
    // The roles follow the group's first member.
    assert_eq!(config.roles.expect("roles").instance, "WIM1");
    let cases: &[(&str, &str, &str)] = &[
        ("[[sync_group]]\nname = \"G1\"\ninstances = [\"WIM1\"]\n", "sync_group.instances", "at least two"),
        ("[[sync_group]]\nname = \"G1\"\ninstances = [\"WIM1\", \"WIM9\"]\n", "sync_group.instances", "no instance named `WIM9`"),
        ("[[sync_group]]\nname = \"G1\"\ninstances = [\"WIM1\", \"WIM1\"]\n", "sync_group.instances", "listed twice"),
        (
            "[[sync_group]]\nname = \"G1\"\ninstances = [\"WIM1\", \"WIM2\"]\n[[sync_group]]\nname = \"G2\"\ninstances = [\"WIM2\", \"WIM1\"]\n",
            "sync_group.instances",
            "already in sync group `G1`",
        ),
        ("[[sync_group]]\nname = \"bad name\"\ninstances = [\"WIM1\", \"WIM2\"]\n", "sync_group.name", "letters, digits"),
        (
            "[roles]\nsync_group = \"G9\"\nmaster = { compose_project = \"m\" }\nbackup = { compose_project = \"b\" }\n",
            "roles.sync_group",
            "no sync group named `G9`",
        ),
        (
            "[roles]\nmaster = { compose_project = \"m\" }\nbackup = { compose_project = \"b\" }\n",
            "roles.instance",
            "missing",
        ),
    ];
    for (extra, key, words) in cases {
        let error = parse_str(&format!("{two}{extra}")).expect_err(extra);
        assert_eq!(error.key, *key, "{extra}: {error}");
        assert!(error.message.contains(words), "{extra}: {error}");
        assert!(error.line > 0, "{extra}: {error}");
    }
}

#[test]
fn the_ike_daemons_socket_must_be_an_absolute_path() {
    let section = "\n[ap_recovery]\nsync_key_file = \"/etc/wimark-ha/ap-sync.key\"\nsync_peer = \"10.10.10.2\"\nike_vici = \"charon.vici\"\n";
    let e = parse_str(&format!("{GOOD}{section}")).expect_err("a relative socket");
    assert_eq!((e.line, e.key.as_str()), (20, "ap_recovery.ike_vici"), "{e}");
    assert!(e.message.contains("charon.vici"), "{e}");
    let good = section.replace("\"charon.vici\"", "\"unix:///run/charon.vici\"");
    let config = parse_str(&format!("{GOOD}{good}")).expect("valid");
    assert_eq!(
        config.ap_recovery.and_then(|r| r.ike_vici),
        Some(PathBuf::from("/run/charon.vici"))
    );
}

#[test]
fn the_mqtt_kick_rate_defaults_and_out_of_range_is_named() {
    let section = "\n[ap_recovery]\nsync_key_file = \"/etc/wimark-ha/ap-sync.key\"\nsync_peer = \"10.10.10.2\"\n";
    let config = parse_str(&format!("{GOOD}{section}")).expect("valid");
    assert_eq!(
        config.ap_recovery.map(|r| r.mqtt_kick_rate),
        Some(crate::recovery::mqtt::DEFAULT_KICKS_PER_SECOND)
    );
    for bad in ["0", "20001"] {
        let text = format!("{GOOD}{section}mqtt_kick_rate = {bad}\n");
        let e = parse_str(&text).expect_err(bad);
        assert_eq!((e.line, e.key.as_str()), (20, "ap_recovery.mqtt_kick_rate"), "{e}");
    }
    let config = parse_str(&format!("{GOOD}{section}mqtt_kick_rate = 500\n")).expect("valid");
    assert_eq!(config.ap_recovery.map(|r| r.mqtt_kick_rate), Some(500));
}
