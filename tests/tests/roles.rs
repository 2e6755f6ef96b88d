//! The container role switch against a real dockerd: stacks of FROM-scratch
//! containers labelled as docker-compose labels them, switched by the daemon
//! as its instance changes state — hooks and the notify script included.

use std::{path::PathBuf, time::Duration};

use wimark_ha_tests::{
    daemon::{config, has_address, wait_until, Daemon},
    docker::{require_dockerd, Stack},
    lab::two_servers,
};

const FAST: &str = "version = 3\nadvert_interval = \"10ms\"\nvirtual_ips = [\"10.77.0.100/24\"]\nfast_detect = { interval = \"1ms\", multiplier = 3 }";

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("wimark-ha-roles-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// The [roles], hooks and notify sections for stacks named `tag-master` and
/// `tag-backup`; `hooks` is extra TOML.
fn roles_toml(tag: &str, dir: &std::path::Path, demote_delay: &str, hooks: &str) -> String {
    let notify = dir.join("notify.sh");
    std::fs::write(
        &notify,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\n",
            dir.join("notified").display()
        ),
    )
    .expect("notify");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&notify, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    format!(
        "{FAST}\n\n[roles]\ninstance = \"WIM1\"\nmaster = {{ compose_project = \"{tag}-master\" }}\nbackup = {{ compose_project = \"{tag}-backup\" }}\nstop_timeout = \"2s\"\ndemote_delay = \"{demote_delay}\"\n\n{hooks}\n[notify]\nscript = \"{}\"\n",
        notify.display()
    )
}

fn roles_status(daemon: &Daemon) -> serde_json::Value {
    daemon
        .status()
        .ok()
        .and_then(|s| serde_json::to_value(s.roles).ok())
        .unwrap_or_default()
}

#[test]
fn promotion_runs_hooks_switches_stacks_and_notifies() {
    require_dockerd();
    let tag = format!("whp{}", std::process::id());
    let master = Stack::create(&format!("{tag}-master"), 3, None).expect("master stack");
    let backup = Stack::create(&format!("{tag}-backup"), 2, None).expect("backup stack");
    let scratch = Scratch::new("promote");
    for lock in ["mongod.lock", "WiredTiger.lock"] {
        std::fs::write(scratch.0.join(lock), "").expect("lock");
    }
    let hooks = format!(
        "[[hooks.before_promote]]\nremove = \"{}/*.lock\"\n[[hooks.before_promote]]\nrun = [\"/usr/bin/touch\", \"{}\"]\n",
        scratch.0.display(),
        scratch.0.join("hook-ran").display()
    );
    let toml = roles_toml(&tag, &scratch.0, "300ms", &hooks);
    let (_lab, a, _b) = two_servers(true).expect("lab");
    let daemon = Daemon::start(&a, "roles-a", |s| config(s, 200, &toml)).expect("daemon");
    // Alone, it becomes master; the switch follows.
    wait_until(Duration::from_secs(20), "master stack running", || {
        roles_status(&daemon)["stack"] == "master" && master.running().len() == 3
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nstatus: {}\nlog: {}",
            roles_status(&daemon),
            daemon.log()
        )
    });
    assert!(has_address(&a, "eth1", "10.77.0.100"));
    assert!(backup.running().is_empty());
    assert!(
        !scratch.0.join("mongod.lock").exists() && !scratch.0.join("WiredTiger.lock").exists(),
        "lock clean-up hook"
    );
    assert!(scratch.0.join("hook-ran").exists(), "run hook");
    wait_until(Duration::from_secs(5), "notify MASTER", || {
        std::fs::read_to_string(scratch.0.join("notified"))
            .unwrap_or_default()
            .contains("INSTANCE WIM1 MASTER 200")
    })
    .expect("notify script called with keepalived's arguments");
    let status = roles_status(&daemon);
    assert_eq!(status["stack"], "master", "{status}");
    assert!(status["degraded"].is_null(), "{status}");
    let last = status["history"]
        .as_array()
        .and_then(|h| h.last().cloned())
        .expect("history");
    for field in ["hooks_ms", "stop_ms", "start_ms", "ready_ms", "total_ms"] {
        assert!(last[field].as_f64().is_some(), "{field} in {last}");
    }
}

#[test]
fn demotion_waits_demote_delay_and_a_flap_cancels_it() {
    require_dockerd();
    let tag = format!("whd{}", std::process::id());
    let master = Stack::create(&format!("{tag}-master"), 2, None).expect("master stack");
    let backup = Stack::create(&format!("{tag}-backup"), 2, None).expect("backup stack");
    let scratch = Scratch::new("demote");
    let toml = roles_toml(&tag, &scratch.0, "1500ms", "");
    let (_lab, a, b) = two_servers(true).expect("lab");
    let daemon = Daemon::start(&a, "roles-d", |s| config(s, 100, &toml)).expect("daemon");
    wait_until(Duration::from_secs(20), "master stack running", || {
        roles_status(&daemon)["stack"] == "master" && master.running().len() == 2
    })
    .expect("promotion");

    // A higher-priority peer appears: A becomes backup, but the stacks wait.
    let mut peer = Daemon::start(&b, "peer-d", |s| config(s, 200, FAST)).expect("peer");
    wait_until(Duration::from_secs(5), "A BACKUP", || {
        daemon.state() == "BACKUP"
    })
    .expect("preempted");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(master.running().len(), 2, "still within demote_delay");
    // The peer dies: A is master again before demote_delay ends: cancelled.
    peer.signal(libc::SIGKILL);
    peer.wait();
    wait_until(Duration::from_secs(5), "A MASTER again", || {
        daemon.state() == "MASTER"
    })
    .expect("flap back");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(master.running().len(), 2, "the flap cancelled the demotion");
    assert!(backup.running().is_empty());
    let status = roles_status(&daemon);
    assert!(
        status["history"]
            .as_array()
            .is_some_and(|h| h.iter().any(|r| r["cancelled"] == true)),
        "cancelled demotion recorded: {status}"
    );

    // The peer returns for good: after demote_delay the stacks swap.
    peer.restart().expect("peer again");
    wait_until(
        Duration::from_secs(10),
        "backup stack running, master stopped",
        || {
            // The switch is recorded once its settle check is done.
            roles_status(&daemon)["stack"] == "backup"
                && backup.running().len() == 2
                && master.running().is_empty()
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", roles_status(&daemon)));
}

#[test]
fn a_failing_container_is_reported_and_the_rest_still_start() {
    require_dockerd();
    let tag = format!("whf{}", std::process::id());
    let master =
        Stack::create(&format!("{tag}-master"), 3, Some(&["false"])).expect("master stack");
    let _backup = Stack::create(&format!("{tag}-backup"), 1, None).expect("backup stack");
    let scratch = Scratch::new("fail");
    let toml = roles_toml(&tag, &scratch.0, "300ms", "");
    let (_lab, a, _b) = two_servers(true).expect("lab");
    let daemon = Daemon::start(&a, "roles-f", |s| config(s, 200, &toml)).expect("daemon");
    wait_until(Duration::from_secs(30), "switch reported", || {
        roles_status(&daemon)["history"]
            .as_array()
            .is_some_and(|h| h.iter().any(|r| r["to"] == "master"))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    let running = master.running();
    assert_eq!(running.len(), 2, "the two good services run: {running:?}");
    let degraded = roles_status(&daemon)["degraded"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        degraded.contains(&format!("{tag}-master-svc0")) && degraded.contains("exited"),
        "{degraded}"
    );
}

#[test]
fn a_blocking_hook_that_times_out_leaves_the_containers_and_says_so() {
    require_dockerd();
    let tag = format!("whh{}", std::process::id());
    let master = Stack::create(&format!("{tag}-master"), 2, None).expect("master stack");
    let _backup = Stack::create(&format!("{tag}-backup"), 1, None).expect("backup stack");
    let scratch = Scratch::new("hook");
    let hooks = "[[hooks.before_promote]]\nrun = [\"/bin/sleep\", \"5\"]\ntimeout = \"200ms\"\nblocking = true\n";
    let toml = roles_toml(&tag, &scratch.0, "300ms", hooks);
    let (_lab, a, _b) = two_servers(true).expect("lab");
    let daemon = Daemon::start(&a, "roles-h", |s| config(s, 200, &toml)).expect("daemon");
    wait_until(Duration::from_secs(20), "switch reported", || {
        roles_status(&daemon)["degraded"]
            .as_str()
            .is_some_and(|d| d.contains("timed out"))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", roles_status(&daemon)));
    assert!(
        master.running().is_empty(),
        "a blocking hook failure keeps the containers as they were"
    );
    assert_eq!(
        daemon.state(),
        "MASTER",
        "the VIP side is not held back by the hook"
    );
    assert!(has_address(&a, "eth1", "10.77.0.100"));
}

#[test]
fn dockerd_unreachable_still_takes_the_vip_and_reports_degraded() {
    let tag = format!("whu{}", std::process::id());
    let scratch = Scratch::new("nodocker");
    let toml = roles_toml(&tag, &scratch.0, "300ms", "").replace(
        "[roles]\n",
        &format!(
            "[roles]\ndocker_socket = \"{}\"\n",
            scratch.0.join("no-docker.sock").display()
        ),
    );
    let (_lab, a, _b) = two_servers(true).expect("lab");
    let daemon = Daemon::start(&a, "roles-u", |s| config(s, 200, &toml)).expect("daemon");
    wait_until(Duration::from_secs(5), "MASTER", || {
        daemon.state() == "MASTER"
    })
    .expect("VIP first, containers after");
    assert!(has_address(&a, "eth1", "10.77.0.100"));
    wait_until(Duration::from_secs(5), "degraded with the reason", || {
        roles_status(&daemon)["degraded"]
            .as_str()
            .is_some_and(|d| d.contains("no-docker.sock") && d.contains("retrying"))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", roles_status(&daemon)));
}

/// An rsync daemon in `namespace` exporting `dir` as module `wimark`.
/// A child process killed when dropped (also when a test panics).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rsync_daemon(
    namespace: &str,
    address: &str,
    dir: &std::path::Path,
    scratch: &std::path::Path,
    tag: &str,
) -> Reaped {
    let config = scratch.join(format!("rsyncd-{tag}.conf"));
    std::fs::write(
        &config,
        format!(
            "use chroot = no\npid file = {}\n[wimark]\npath = {}\nread only = no\nuid = root\ngid = root\n",
            scratch.join(format!("rsyncd-{tag}.pid")).display(),
            dir.display()
        ),
    )
    .expect("rsyncd.conf");
    let address = address.to_string();
    wimark_ha_tests::lab::in_netns(namespace, move || {
        std::process::Command::new("/usr/bin/rsync")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .args(["--daemon", "--no-detach", "--port=873"])
            .arg(format!("--address={address}"))
            .arg(format!("--config={}", config.display()))
            .spawn()
    })
    .expect("netns")
    .map(Reaped)
    .expect("rsync --daemon (Debian package rsync)")
}

/// An lsyncd config mirroring `source` to the rsync module at `peer`.
fn lsyncd_config(
    scratch: &std::path::Path,
    tag: &str,
    source: &std::path::Path,
    peer: &str,
) -> std::path::PathBuf {
    let path = scratch.join(format!("lsyncd-{tag}.lua"));
    std::fs::write(
        &path,
        format!(
            "settings {{ nodaemon = true, logfile = \"{log}\", statusFile = \"{status}\" }}\nsync {{ default.rsync, source = \"{source}/\", target = \"{peer}::wimark/\", delay = 1 }}\n",
            log = scratch.join(format!("lsyncd-{tag}.log")).display(),
            status = scratch.join(format!("lsyncd-{tag}.status")).display(),
            source = source.display(),
        ),
    )
    .expect("lsyncd config");
    path
}

#[test]
fn static_files_follow_the_master_with_lsyncd() {
    require_dockerd();
    assert!(
        std::path::Path::new("/usr/bin/lsyncd").exists(),
        "lsyncd is not installed (Debian package lsyncd)"
    );
    let scratch = Scratch::new("lsyncd");
    let (a_data, b_data) = (scratch.0.join("a-data"), scratch.0.join("b-data"));
    std::fs::create_dir_all(&a_data).expect("a-data");
    std::fs::create_dir_all(&b_data).expect("b-data");
    let (_lab, a, b) = two_servers(true).expect("lab");
    let rsyncd = vec![
        rsync_daemon(&a, "10.77.0.1", &a_data, &scratch.0, "a"),
        rsync_daemon(&b, "10.77.0.2", &b_data, &scratch.0, "b"),
    ];
    let tag = format!("whl{}", std::process::id());
    let section = |config: &std::path::Path| {
        format!(
            "{FAST}\n\n[roles]\ninstance = \"WIM1\"\nmaster = {{ compose_project = \"{tag}-none-m\" }}\nbackup = {{ compose_project = \"{tag}-none-b\" }}\ndemote_delay = \"200ms\"\n[[roles.master_process]]\nrun = [\"/usr/bin/lsyncd\", \"-nodaemon\", \"{}\"]\n",
            config.display()
        )
    };
    let a_toml = section(&lsyncd_config(&scratch.0, "a", &a_data, "10.77.0.2"));
    let b_toml = section(&lsyncd_config(&scratch.0, "b", &b_data, "10.77.0.1"));
    let mut daemon_a = Daemon::start(&a, "lsyncd-a", |s| config(s, 200, &a_toml)).expect("A");
    let daemon_b = Daemon::start(&b, "lsyncd-b", |s| config(s, 100, &b_toml)).expect("B");
    wait_until(Duration::from_secs(5), "A MASTER", || {
        daemon_a.state() == "MASTER"
    })
    .expect("election");

    // A is master: its /usr/share/wimark stand-in is mirrored to B.
    std::fs::write(a_data.join("floor1.svg"), "map of floor 1").expect("write on A");
    wait_until(Duration::from_secs(20), "floor1.svg mirrored to B", || {
        b_data.join("floor1.svg").exists()
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nA roles: {}\nlsyncd log: {}",
            roles_status(&daemon_a),
            std::fs::read_to_string(scratch.0.join("lsyncd-a.log")).unwrap_or_default()
        )
    });
    let b_processes = roles_status(&daemon_b)["processes"].clone();
    assert!(
        b_processes
            .as_array()
            .is_none_or(|p| p.iter().all(|p| p["running"] == false)),
        "the backup runs no mirror: {b_processes}"
    );

    // A is lost; B takes over and the mirror reverses.
    daemon_a.signal(libc::SIGKILL);
    daemon_a.wait();
    wait_until(Duration::from_secs(5), "B MASTER", || {
        daemon_b.state() == "MASTER"
    })
    .expect("failover");
    wait_until(Duration::from_secs(10), "B's lsyncd running", || {
        roles_status(&daemon_b)["processes"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["running"] == true))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", roles_status(&daemon_b)));
    std::fs::write(b_data.join("floor2.svg"), "map of floor 2").expect("write on B");
    wait_until(
        Duration::from_secs(20),
        "floor2.svg mirrored back to A",
        || a_data.join("floor2.svg").exists(),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nlsyncd log: {}",
            std::fs::read_to_string(scratch.0.join("lsyncd-b.log")).unwrap_or_default()
        )
    });
    // A's mirror died with its daemon (PR_SET_PDEATHSIG): no stale lsyncd.
    let stale = std::process::Command::new("pgrep")
        .args(["-f", &scratch.0.join("lsyncd-a.lua").display().to_string()])
        .output()
        .expect("pgrep");
    assert!(
        stale.stdout.is_empty(),
        "A's lsyncd outlived its daemon: {}",
        String::from_utf8_lossy(&stale.stdout)
    );
    drop(rsyncd);
}

#[test]
fn dockerd_stopped_mid_switch_is_retried_until_it_answers() {
    require_dockerd();
    let scratch = Scratch::new("middocker");
    // A dockerd of this test's own, so stopping it disturbs no other test.
    let own = wimark_ha_tests::docker::OwnDockerd::start(&scratch.0).expect("own dockerd");
    let host = own.host();
    let tag = format!("whm{}", std::process::id());
    let master =
        Stack::create_on(Some(&host), &format!("{tag}-master"), 2, None).expect("master stack");
    let _backup =
        Stack::create_on(Some(&host), &format!("{tag}-backup"), 1, None).expect("backup stack");
    // A one-second hook holds the switch open while dockerd goes away.
    let hooks = "[[hooks.before_promote]]\nrun = [\"/bin/sleep\", \"1\"]\ntimeout = \"5s\"\n";
    let toml = roles_toml(&tag, &scratch.0, "300ms", hooks).replace(
        "[roles]\n",
        &format!("[roles]\ndocker_socket = \"{}\"\n", own.socket().display()),
    );
    let (_lab, a, _b) = two_servers(true).expect("lab");
    let daemon = Daemon::start(&a, "roles-m", |s| config(s, 200, &toml)).expect("daemon");
    wait_until(Duration::from_secs(5), "MASTER", || {
        daemon.state() == "MASTER"
    })
    .expect("master");
    std::thread::sleep(Duration::from_millis(300)); // inside the hook now
    own.down();
    wait_until(Duration::from_secs(10), "degraded, retrying", || {
        roles_status(&daemon)["degraded"]
            .as_str()
            .is_some_and(|d| d.contains("retrying"))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", roles_status(&daemon)));
    assert!(
        has_address(&a, "eth1", "10.77.0.100"),
        "the VIP never waits for Docker"
    );
    own.up().expect("dockerd back");
    wait_until(
        Duration::from_secs(30),
        "the switch completes once dockerd answers",
        || roles_status(&daemon)["stack"] == "master" && master.running().len() == 2,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", roles_status(&daemon)));
    assert!(
        roles_status(&daemon)["degraded"].is_null(),
        "{}",
        roles_status(&daemon)
    );
}
