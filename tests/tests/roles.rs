//! The container role switch against a real dockerd: stacks of FROM-scratch
//! containers labelled as docker-compose labels them, switched by the daemon
//! as its instance changes state — hooks and the notify script included.

use std::time::Duration;
use wimark_ha::records::{Stack as RunningStack, State};

use wimark_ha_tests::{
    daemon::{config, has_address, roles_json, wait_until, Daemon, FAST},
    docker::{require_dockerd, Stack},
    lab::two_servers,
    Scratch,
};

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

#[test]
fn promotion_runs_hooks_switches_stacks_and_notifies() {
    require_dockerd();
    let tag = format!("whp{}", std::process::id());
    let master = Stack::create(&format!("{tag}-master"), 3, None).expect("master stack");
    let backup = Stack::create(&format!("{tag}-backup"), 2, None).expect("backup stack");
    let scratch = Scratch::new("roles-promote");
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
        daemon.roles().stack == RunningStack::Master && master.running().len() == 3
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nstatus: {}\nlog: {}",
            roles_json(&daemon),
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
    let status = roles_json(&daemon);
    assert_eq!(status["stack"], "master", "{status}");
    assert!(status["degraded"].is_null(), "{status}");
    let last = status["history"]
        .as_array()
        .and_then(|h| h.last().cloned())
        .expect("history");
    for field in ["hooks_ms", "stop_ms", "start_ms", "ready_ms", "total_ms"] {
        assert!(last[field].as_f64().is_some(), "{field} in {last}");
    }

    // Stopped: the last notify (keepalived's STOP) is run before it exits.
    let mut daemon = daemon;
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait(), Some(0), "{}", daemon.log());
    let notified = std::fs::read_to_string(scratch.0.join("notified")).unwrap_or_default();
    assert!(
        notified.lines().last() == Some("INSTANCE WIM1 STOP 200"),
        "{notified}"
    );
}

#[test]
fn demotion_waits_demote_delay_and_a_flap_cancels_it() {
    require_dockerd();
    let tag = format!("whd{}", std::process::id());
    let master = Stack::create(&format!("{tag}-master"), 2, None).expect("master stack");
    let backup = Stack::create(&format!("{tag}-backup"), 2, None).expect("backup stack");
    let scratch = Scratch::new("roles-demote");
    let toml = roles_toml(&tag, &scratch.0, "1500ms", "");
    let (_lab, a, b) = two_servers(true).expect("lab");
    let daemon = Daemon::start(&a, "roles-d", |s| config(s, 100, &toml)).expect("daemon");
    wait_until(Duration::from_secs(20), "master stack running", || {
        daemon.roles().stack == RunningStack::Master && master.running().len() == 2
    })
    .expect("promotion");

    // A higher-priority peer appears: A becomes backup, but the stacks wait.
    let mut peer = Daemon::start(&b, "peer-d", |s| config(s, 200, FAST)).expect("peer");
    wait_until(Duration::from_secs(5), "A BACKUP", || {
        daemon.state() == Some(State::Backup)
    })
    .expect("preempted");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(master.running().len(), 2, "still within demote_delay");
    // The peer dies: A is master again before demote_delay ends: cancelled.
    peer.signal(libc::SIGKILL);
    peer.wait();
    wait_until(Duration::from_secs(5), "A MASTER again", || {
        daemon.state() == Some(State::Master)
    })
    .expect("flap back");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(master.running().len(), 2, "the flap cancelled the demotion");
    assert!(backup.running().is_empty());
    let status = roles_json(&daemon);
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
            daemon.roles().stack == RunningStack::Backup
                && backup.running().len() == 2
                && master.running().is_empty()
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", roles_json(&daemon)));
}

#[test]
fn a_failing_container_is_reported_and_the_rest_still_start() {
    require_dockerd();
    let tag = format!("whf{}", std::process::id());
    let master =
        Stack::create(&format!("{tag}-master"), 3, Some(&["false"])).expect("master stack");
    let _backup = Stack::create(&format!("{tag}-backup"), 1, None).expect("backup stack");
    let scratch = Scratch::new("roles-fail");
    let toml = roles_toml(&tag, &scratch.0, "300ms", "");
    let (_lab, a, _b) = two_servers(true).expect("lab");
    let daemon = Daemon::start(&a, "roles-f", |s| config(s, 200, &toml)).expect("daemon");
    wait_until(Duration::from_secs(30), "switch reported", || {
        daemon
            .roles()
            .history
            .iter()
            .any(|r| r.to == RunningStack::Master)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    let running = master.running();
    assert_eq!(running.len(), 2, "the two good services run: {running:?}");
    let degraded = daemon.roles().degraded.unwrap_or_default();
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
    let scratch = Scratch::new("roles-hook");
    let hooks = "[[hooks.before_promote]]\nrun = [\"/bin/sleep\", \"5\"]\ntimeout = \"200ms\"\nblocking = true\n";
    let toml = roles_toml(&tag, &scratch.0, "300ms", hooks);
    let (_lab, a, _b) = two_servers(true).expect("lab");
    let daemon = Daemon::start(&a, "roles-h", |s| config(s, 200, &toml)).expect("daemon");
    wait_until(Duration::from_secs(20), "switch reported", || {
        daemon
            .roles()
            .degraded
            .is_some_and(|d| d.contains("timed out"))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", roles_json(&daemon)));
    assert!(
        master.running().is_empty(),
        "a blocking hook failure keeps the containers as they were"
    );
    assert_eq!(
        daemon.state(),
        Some(State::Master),
        "the VIP side is not held back by the hook"
    );
    assert!(has_address(&a, "eth1", "10.77.0.100"));
}

#[test]
fn dockerd_unreachable_still_takes_the_vip_and_reports_degraded() {
    let tag = format!("whu{}", std::process::id());
    let scratch = Scratch::new("roles-nodocker");
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
        daemon.state() == Some(State::Master)
    })
    .expect("VIP first, containers after");
    assert!(has_address(&a, "eth1", "10.77.0.100"));
    wait_until(Duration::from_secs(5), "degraded with the reason", || {
        daemon
            .roles()
            .degraded
            .is_some_and(|d| d.contains("no-docker.sock") && d.contains("retrying"))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", roles_json(&daemon)));
    // The instance that drives the switch says so, and so does `status`.
    let instance = daemon.instance().expect("instance status");
    assert!(
        instance
            .fault
            .as_deref()
            .is_some_and(|f| f.starts_with("containers:")),
        "{instance:?}"
    );
    let human = wimark_ha_tests::daemon::status_text(&a, &daemon.socket);
    assert!(
        human.contains("DEGRADED: containers: switching to master")
            && human.contains("monitor on eth1: VRRP valid"),
        "{human}"
    );
}

#[test]
fn role_bound_programs_run_only_while_master_and_are_supervised() {
    require_dockerd();
    let scratch = Scratch::new("roles-procs");
    let pids = scratch.0.join("pids");
    let tag = format!("whp2{}", std::process::id());
    let script = format!("echo $$ >> {}; exec /bin/sleep 1000", pids.display());
    let toml = format!(
        "{FAST}\n\n[roles]\ninstance = \"WIM1\"\nmaster = {{ compose_project = \"{tag}-none-m\" }}\nbackup = {{ compose_project = \"{tag}-none-b\" }}\ndemote_delay = \"200ms\"\n[[roles.master_process]]\nrun = [\"/bin/sh\", \"-c\", \"{script}\"]\n"
    );
    let started = |path: &std::path::Path| -> Vec<i32> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    let alive = |pid: i32| {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
    };
    let (_lab, a, b) = two_servers(true).expect("lab");
    let mut daemon = Daemon::start(&a, "procs-a", |s| config(s, 150, &toml)).expect("daemon");
    wait_until(
        Duration::from_secs(10),
        "the program runs on the master",
        || started(&pids).len() == 1,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", roles_json(&daemon)));
    let first = started(&pids)[0];

    // It dies: it is started again.
    unsafe { libc::kill(first, libc::SIGKILL) };
    wait_until(Duration::from_secs(10), "restarted", || {
        started(&pids).len() == 2
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", roles_json(&daemon)));
    assert!(daemon.roles().processes.first().map_or(0, |p| p.restarts) >= 1);
    let second = started(&pids)[1];

    // A higher-priority peer takes over: after demote_delay the program stops.
    let mut peer = Daemon::start(&b, "procs-b", |s| config(s, 250, FAST)).expect("peer");
    wait_until(Duration::from_secs(10), "stopped on demotion", || {
        daemon.state() == Some(State::Backup) && !alive(second)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", roles_json(&daemon)));

    // Mastership back, then the daemon is SIGKILLed: the program dies with it.
    peer.signal(libc::SIGKILL);
    peer.wait();
    wait_until(Duration::from_secs(10), "running again as master", || {
        started(&pids).len() == 3
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", roles_json(&daemon)));
    let third = started(&pids)[2];
    daemon.signal(libc::SIGKILL);
    daemon.wait();
    wait_until(Duration::from_secs(5), "gone with its daemon", || {
        !alive(third)
    })
    .expect("PR_SET_PDEATHSIG stops a role-bound program when the daemon dies");
}

#[test]
fn dockerd_killed_mid_promotion_is_retried_until_it_answers() {
    require_dockerd();
    let scratch = Scratch::new("roles-middocker");
    // A dockerd of this test's own, so stopping it disturbs no other test.
    let own = wimark_ha_tests::docker::OwnDockerd::start(&scratch.0).expect("own dockerd");
    let host = own.host();
    let tag = format!("whm{}", std::process::id());
    let master =
        Stack::create_on(Some(&host), &format!("{tag}-master"), 2, None).expect("master stack");
    let _backup =
        Stack::create_on(Some(&host), &format!("{tag}-backup"), 1, None).expect("backup stack");
    // A one-second hook holds the switch open while dockerd goes away; it
    // says when it started.
    let in_hook = scratch.0.join("in-hook");
    let hooks = format!(
        "[[hooks.before_promote]]\nrun = [\"/bin/sh\", \"-c\", \"touch {} && exec sleep 1\"]\ntimeout = \"5s\"\n",
        in_hook.display()
    );
    let toml = roles_toml(&tag, &scratch.0, "300ms", &hooks).replace(
        "[roles]\n",
        &format!("[roles]\ndocker_socket = \"{}\"\n", own.socket().display()),
    );
    let (_lab, a, _b) = two_servers(true).expect("lab");
    let daemon = Daemon::start(&a, "roles-m", |s| config(s, 200, &toml)).expect("daemon");
    wait_until(Duration::from_secs(5), "MASTER", || {
        daemon.state() == Some(State::Master)
    })
    .expect("master");
    wait_until(Duration::from_secs(5), "inside the hook", || {
        in_hook.exists()
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    own.kill();
    wait_until(Duration::from_secs(10), "degraded, retrying", || {
        daemon
            .roles()
            .degraded
            .is_some_and(|d| d.contains("retrying"))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", roles_json(&daemon)));
    assert!(
        has_address(&a, "eth1", "10.77.0.100"),
        "the VIP never waits for Docker"
    );
    own.up().expect("dockerd back");
    wait_until(
        Duration::from_secs(30),
        "the switch completes once dockerd answers",
        || daemon.roles().stack == RunningStack::Master && master.running().len() == 2,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", roles_json(&daemon)));
    assert!(daemon.roles().degraded.is_none(), "{}", roles_json(&daemon));
}

/// Parses docker's RFC 3339 timestamps (nanoseconds, UTC) for ordering.
fn docker_time(text: &str) -> String {
    // Same-length UTC stamps compare as strings once padded to nanoseconds.
    let (seconds, fraction) = text
        .trim()
        .trim_end_matches('Z')
        .split_once('.')
        .unwrap_or((text, "0"));
    format!("{seconds}.{fraction:0<9}")
}

#[test]
fn compose_depends_on_orders_start_and_stop() {
    require_dockerd();
    let image = wimark_ha_tests::docker::image();
    let scratch = Scratch::new("roles-depends");
    let tag = format!("whdo{}", std::process::id());
    // mongo takes a second to become healthy; broker waits for that, api for
    // broker: the order compose itself would follow.
    let yaml = format!(
        "version: \"2.4\"\nservices:\n  api:\n    image: {image}\n    network_mode: none\n    depends_on: [broker]\n  broker:\n    image: {image}\n    network_mode: none\n    depends_on:\n      mongo: {{condition: service_healthy}}\n  mongo:\n    image: {image}\n    network_mode: none\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 1; : > /ready; while true; do sleep 0.05; done\"]\n    healthcheck:\n      test: [\"CMD\", \"/bin/busybox\", \"test\", \"-f\", \"/ready\"]\n      interval: 100ms\n      retries: 100\n"
    );
    let master = wimark_ha_tests::docker::ComposeProject::create(
        &scratch.0.join("master"),
        &format!("{tag}m"),
        &yaml,
    )
    .expect("docker-compose up --no-start (master)");
    let backup = wimark_ha_tests::docker::ComposeProject::create(
        &scratch.0.join("backup"),
        &format!("{tag}b"),
        &yaml,
    )
    .expect("docker-compose up --no-start (backup)");
    let toml = format!(
        "{FAST}\n\n[roles]\ninstance = \"WIM1\"\nmaster = {{ compose_project = \"{}\" }}\nbackup = {{ compose_project = \"{}\" }}\ndemote_delay = \"100ms\"\n",
        master.project, backup.project
    );
    let (_lab, a, b) = two_servers(true).expect("lab");
    let daemon = Daemon::start(&a, "depends-a", |s| config(s, 100, &toml)).expect("daemon");
    let running = |project: &wimark_ha_tests::docker::ComposeProject| {
        ["api", "broker", "mongo"]
            .iter()
            .filter(|s| {
                project
                    .inspect(s, "{{.State.Running}}")
                    .is_ok_and(|r| r == "true")
            })
            .count()
    };
    wait_until(Duration::from_secs(20), "master stack running", || {
        daemon.roles().stack == RunningStack::Master && running(&master) == 3
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", roles_json(&daemon)));
    let status = roles_json(&daemon);
    assert!(status["degraded"].is_null(), "{status}");
    let started = |service| {
        docker_time(
            &master
                .inspect(service, "{{.State.StartedAt}}")
                .expect("inspect"),
        )
    };
    let (mongo, broker, api) = (started("mongo"), started("broker"), started("api"));
    assert!(
        mongo < broker && broker < api,
        "start order mongo {mongo} < broker {broker} < api {api}"
    );
    let seconds = |stamp: &str| -> f64 {
        let (hms, fraction) = stamp.rsplit_once('.').expect("fraction");
        let seconds: f64 = hms
            .rsplit(':')
            .next()
            .and_then(|s| s.parse().ok())
            .expect("seconds");
        seconds + format!("0.{fraction}").parse::<f64>().expect("fraction")
    };
    let waited = (seconds(&broker) - seconds(&mongo)).rem_euclid(60.0);
    assert!(
        waited >= 0.9,
        "broker waited for mongo to be healthy: {waited:.3} s"
    );

    // A higher-priority peer: the master stack stops in reverse order.
    let _peer = Daemon::start(&b, "depends-b", |s| config(s, 200, FAST)).expect("peer");
    wait_until(Duration::from_secs(20), "backup stack running", || {
        daemon.roles().stack == RunningStack::Backup
            && running(&backup) == 3
            && running(&master) == 0
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", roles_json(&daemon)));
    let finished = |service| {
        docker_time(
            &master
                .inspect(service, "{{.State.FinishedAt}}")
                .expect("inspect"),
        )
    };
    let (mongo, broker, api) = (finished("mongo"), finished("broker"), finished("api"));
    assert!(
        api <= broker && broker <= mongo,
        "stop order api {api} ≤ broker {broker} ≤ mongo {mongo}"
    );
}
