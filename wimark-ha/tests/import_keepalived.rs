//! `wimark-ha import-keepalived`: the vendor's two keepalived.conf files and
//! a hand-written one with every supported keyword (plus unsupported ones)
//! become configs that `check-config` accepts; what cannot be carried over is
//! listed, line by line. No root needed: these run in a plain `cargo test`
//! (the seed pair failing over in a lab is `tests/tests/import_keepalived.rs`).

use std::{path::PathBuf, process::Command};

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// (success, stdout, stderr) of `wimark-ha ARGS`.
fn wimark_ha(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wimark-ha"))
        .args(args)
        .output()
        .expect("running wimark-ha");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

fn import(conf: &str, env_dir: Option<&str>) -> String {
    let conf = fixture(conf);
    let env = env_dir.map(fixture);
    let mut args = vec![std::ffi::OsStr::new("import-keepalived"), conf.as_os_str()];
    if let Some(env) = &env {
        args.push("--env-dir".as_ref());
        args.push(env.as_os_str());
    }
    let (ok, stdout, stderr) = wimark_ha(&args);
    assert!(ok, "import failed: {stderr}");
    stdout
}

/// A directory of this test run, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(tag: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("wimark-ha-import-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    Scratch(dir)
}

/// `check-config` on `text`; its stdout.
fn check_config(text: &str, tag: &str) -> String {
    let dir = scratch(tag);
    let path = dir.0.join("wimark-ha.toml");
    std::fs::write(&path, text).expect("write config");
    let (ok, stdout, stderr) = wimark_ha(&[
        "check-config".as_ref(),
        "--config".as_ref(),
        path.as_os_str(),
    ]);
    assert!(
        ok,
        "check-config refused the imported config: {stderr}\n{text}"
    );
    stdout
}

#[test]
fn the_seed_configs_import_and_check() {
    let master = import("keepalived/seed-master.conf", None);
    for expected in [
        "name = \"WIM1\"",
        "interface = \"l2tpeth0\"",
        "vrid = 67",
        "priority = 200",
        "version = 2",
        "advert_interval = \"1s\"",
        "auth_pass = \"wimark123\"",
        "virtual_ips = [\"10.10.10.3/24\"]",
        "garp_master_delay = \"1s\"",
        "[notify]\nscript = \"/etc/wimark/master-backup.sh\"",
        "`state MASTER` is keepalived's initial state",
        "not carried over (line 3): `script_user root`",
    ] {
        assert!(
            master.contains(expected),
            "`{expected}` missing in:\n{master}"
        );
    }
    assert!(check_config(&master, "seed-m").contains("WIM1: l2tpeth0 VRID 67 priority 200 VRRPv2"));

    // With the vendor's .env files: peer, roles and the lock hook; the
    // notify script that switched containers is not called twice.
    let backup = import("keepalived/seed-backup.conf", Some("wimark-env"));
    for expected in [
        "name = \"WIM2\"",
        "[peer]\naddress = \"10.10.10.2\"\nssh_user = \"username\"",
        "[roles]\ninstance = \"WIM2\"\nmaster = { compose_project = \"master\" }\nbackup = { compose_project = \"backup\" }",
        "demote_delay = \"10s\"",
        "remove = \"/usr/share/wimark/volumes/mongo/*.lock\"",
        "not carried over (line 40): `notify /etc/wimark/master-backup.sh`",
        ".env VIP=10.10.10.3: the instance's virtual IP",
        ".env HOST_UUID=a73a766996734421994f2bfd4e00afd1",
        "priority must be lower than the other's",
        "\npeers = [\"10.10.10.2\"]   # .env SECOND_IP, the other server",
    ] {
        assert!(backup.contains(expected), "`{expected}` missing in:\n{backup}");
    }
    assert!(!backup.lines().any(|l| l == "[notify]"), "{backup}");
    check_config(&backup, "seed-b");
}

#[test]
fn every_supported_keyword_is_carried_and_the_rest_listed() {
    let text = import("keepalived/every-keyword.conf", None);
    // And on stderr, one line each, for when the output goes to a file.
    let conf = fixture("keepalived/every-keyword.conf");
    let (ok, _, stderr) = wimark_ha(&[std::ffi::OsStr::new("import-keepalived"), conf.as_os_str()]);
    assert!(ok, "{stderr}");
    let noted = text.matches("# not carried over (line ").count();
    assert!(noted > 0);
    assert_eq!(stderr.matches("not carried over (line ").count(), noted, "{stderr}");
    assert!(stderr.contains(&format!("{noted} statement(s) not carried over")), "{stderr}");
    for expected in [
        // vrrp_version 3 in global_defs is the default version.
        "name = \"WIM1\"\ninterface = \"eth1\"\nvrid = 67\npriority = 150\nversion = 3\nadvert_interval = \"10ms\"",
        "virtual_ips = [\"10.77.0.100/24\", \"10.77.0.101/32\", \"10.88.0.1/24\"]",
        "preempt = false",
        "unicast_peers = [\"10.77.0.2\"]",
        "garp_master_repeat = 3",
        "garp_master_delay = \"2s\"",
        "name = \"V2\"\ninterface = \"eth2\"\nvrid = 9\npriority = 100\nversion = 2\nadvert_interval = \"1s\"\nauth_pass = \"secret12\"",
        "[notify]\nscript = \"/etc/wimark-ha/notify.sh\"",
        // vrrp_script + track_script, keepalived's settings carried over.
        "[[instance.track]]   # vrrp_script chk_docker (line 11)\nname = \"chk_docker\"\ninterval = \"2s\"\ntimeout = \"1s\"\nfall = 3\nrise = 2\nscript = [\"/usr/bin/test\", \"-d\", \"/\"]\nweight = -30\n",
        // A shell-style script keeps its meaning through /bin/sh -c; the
        // reference's weight overrides the definition's.
        "name = \"chk_port\"\ninit_fail = true\nscript = [\"/bin/sh\", \"-c\", \"</dev/tcp/127.0.0.1/27017\"]\nweight = 20\n",
        "[[instance.track]]\ninterface = \"lo\"\nweight = -50\n",
        "[[instance.track]]   # vrrp_track_file prio_file (line 26)\nname = \"prio_file\"\nfile = \"/run/wimark-ha/prio\"\nweight = -10\n",
        // vrrp_sync_group: the two instances move together.
        "[[sync_group]]   # vrrp_sync_group G1 (line 93)\nname = \"G1\"\ninstances = [\"WIM1\", \"V2\"]\n",
        // vrrp_track_process + track_process: by name, quorum, delay.
        "[[instance.track]]   # vrrp_track_process mongod (line 31)\nname = \"mongod\"\nquorum = 2\ngrace = \"3s\"\nprocess = \"mongod\"\nweight = -40\n",
    ] {
        assert!(text.contains(expected), "`{expected}` missing in:\n{text}");
    }
    // V2's `lo` with keepalived's default weight 0 (FAULT while down).
    let v2 = &text[text.find("name = \"V2\"").expect("V2")..];
    let lo = v2.find("[[instance.track]]\ninterface = \"lo\"\n").expect("V2 tracks lo");
    assert!(!v2[lo..].lines().nth(2).unwrap_or("").starts_with("weight"), "{v2}");
    // Nothing dropped silently: every unsupported statement is named with
    // its line.
    let source =
        std::fs::read_to_string(fixture("keepalived/every-keyword.conf")).expect("fixture");
    for keyword in [
        "router_id",
        "enable_script_security",
        "vrrp_garp_master_refresh",
        "include",
        "user nobody",
        "chk_missing",
        "param_match",
        "unicast_src_ip",
        "10.88.0.1/24",
        "notify_master",
        "smtp_alert",
        "notify_master_rx_lower_pri",
        "virtual_server",
        "some_future_keyword",
    ] {
        let line = source
            .lines()
            .position(|l| l.trim_start().starts_with(keyword))
            .expect("keyword in fixture")
            + 1;
        assert!(
            text.contains(&format!("# not carried over (line {line}): `{keyword}")),
            "`{keyword}` (line {line}) not listed in:\n{text}"
        );
    }
    check_config(&text, "every");
}

#[test]
fn bad_input_is_refused_with_file_and_line() {
    let dir = scratch("bad");
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(&conf, "vrrp_instance X {\n  interface eth1\n").expect("write");
    let (ok, _, stderr) = wimark_ha(&["import-keepalived".as_ref(), conf.as_os_str()]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{}:1: this `{{` is never closed", conf.display())),
        "{stderr}"
    );
    // A config wimark-ha would refuse (no VRID) is not printed as if fine.
    std::fs::write(
        &conf,
        "vrrp_instance X {\n  interface eth1\n  priority 100\n}\n",
    )
    .expect("write");
    let (ok, stdout, stderr) = wimark_ha(&["import-keepalived".as_ref(), conf.as_os_str()]);
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("the imported config is not valid"),
        "{stderr}"
    );
    // --output never overwrites.
    let existing = dir.0.join("existing.toml");
    std::fs::write(&existing, "keep me").expect("write");
    let seed = fixture("keepalived/seed-master.conf");
    let (ok, _, stderr) = wimark_ha(&[
        "import-keepalived".as_ref(),
        seed.as_os_str(),
        "--output".as_ref(),
        existing.as_os_str(),
    ]);
    assert!(!ok, "{stderr}");
    assert_eq!(std::fs::read_to_string(&existing).expect("read"), "keep me");
    // A new file holds the seed's auth_pass: only its owner reads it,
    // whatever the umask.
    let written = dir.0.join("imported.toml");
    let (ok, _, stderr) = wimark_ha(&[
        "import-keepalived".as_ref(),
        seed.as_os_str(),
        "--output".as_ref(),
        written.as_os_str(),
    ]);
    assert!(ok, "{stderr}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&written).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode of the imported config");
    assert!(std::fs::read_to_string(&written).expect("read").contains("auth_pass"));
}
