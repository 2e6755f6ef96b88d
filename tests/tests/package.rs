//! The service as an operator installs it: the Debian package built by
//! `cargo xtask deb` installed into a fresh Debian root (debootstrap), every
//! file where the unit expects it, `systemd-analyze verify` clean; the
//! daemon running with only the unit's capabilities (its vendor duties
//! included: mongo's lock, owned by the container's uid, removed before the
//! master stack starts); and the `Type=notify` contract (READY, WATCHDOG
//! while the engine turns, STOPPING).

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};
use wimark_ha::records::{Stack as RunningStack, State};

use wimark_ha_tests::{
    daemon::{config, has_address, roles_json, wait_until, Daemon, Launch, FAST},
    docker::{require_dockerd, Stack},
    lab::two_servers,
    require_root, Scratch,
};

const UNIT: &str = "wimark-ha.service";

fn unit_source() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../wimark-ha/packaging/wimark-ha.service"),
    )
    .expect("the unit in wimark-ha/packaging")
}

/// Values of `key=` lines in the unit.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// A throwaway root, removed on drop.
struct Root(PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_package_installs_into_a_fresh_debian_root_and_the_unit_verifies() {
    require_root("debootstrap and chroot");
    let deb = PathBuf::from(std::env::var_os("WIMARK_HA_DEB").expect(
        "WIMARK_HA_DEB is not set: run through `cargo xtask test`, which builds the package",
    ));
    assert!(deb.exists(), "{} missing", deb.display());
    let root = Root(std::env::temp_dir().join(format!("wimark-ha-debroot-{}", std::process::id())));
    let mirror = std::env::var("WIMARK_HA_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".to_string());
    let started = Instant::now();
    let output = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&root.0)
        .arg(&mirror)
        .output()
        .expect("debootstrap (Debian package debootstrap)");
    assert!(
        output.status.success(),
        "debootstrap of bookworm from {mirror} failed (network? set WIMARK_HA_DEBIAN_MIRROR): {}",
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("debootstrap took {:?}", started.elapsed());
    std::fs::copy(&deb, root.0.join("tmp/wimark-ha.deb")).expect("copy the package");
    run(Command::new("chroot").arg(&root.0).args([
        "sh",
        "-c",
        "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q /tmp/wimark-ha.deb",
    ]));

    // Every file the unit names is where it says, and works there.
    let unit_path = root.0.join("usr/lib/systemd/system").join(UNIT);
    let unit = std::fs::read_to_string(&unit_path).expect("the unit is installed");
    assert_eq!(
        unit,
        unit_source(),
        "the packaged unit is the one in the tree"
    );
    for key in ["ExecStart", "ExecStartPre"] {
        for command in unit_values(&unit, key) {
            let binary = command.split_whitespace().next().expect("a command");
            let inside = root.0.join(binary.trim_start_matches('/'));
            assert!(inside.is_file(), "{key} names {binary}, not installed");
            if let Some(config) = command.split("--config ").nth(1) {
                let config = config.split_whitespace().next().expect("a path");
                assert!(
                    root.0.join(config.trim_start_matches('/')).is_file(),
                    "{key} names {config}, not installed"
                );
            }
        }
    }
    let version = run(Command::new("chroot")
        .arg(&root.0)
        .args(["/usr/sbin/wimark-ha", "--version"]));
    assert!(version.starts_with("wimark-ha "), "{version}");
    // The shipped default config is one the daemon accepts.
    let checked = run(Command::new("chroot").arg(&root.0).args([
        "/usr/sbin/wimark-ha",
        "check-config",
        "--config",
        "/etc/wimark-ha/wimark-ha.toml",
    ]));
    assert!(checked.contains("OK, 1 instance(s)"), "{checked}");
    // It is a conffile (an upgrade never overwrites the operator's edits),
    // readable by root only (it may hold a v2 password).
    let conffiles = run(Command::new("chroot").arg(&root.0).args([
        "dpkg-query",
        "-W",
        "-f=${Conffiles}",
        "wimark-ha",
    ]));
    assert!(
        conffiles.contains("/etc/wimark-ha/wimark-ha.toml"),
        "{conffiles}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(root.0.join("etc/wimark-ha/wimark-ha.toml"))
        .expect("config")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o007,
        0,
        "the config is not world-readable: {mode:o}"
    );
    assert!(root
        .0
        .join("usr/share/doc/wimark-ha/operator-guide.md")
        .is_file());
    // The man page the unit's Documentation= names, and the completions,
    // generated from the binary's own command line.
    for file in [
        "usr/share/man/man8/wimark-ha.8.gz",
        "usr/share/bash-completion/completions/wimark-ha",
        "usr/share/zsh/vendor-completions/_wimark-ha",
        "usr/share/fish/vendor_completions.d/wimark-ha.fish",
    ] {
        let path = root.0.join(file);
        let size = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{file} is not installed: {e}"))
            .len();
        assert!(size > 200, "{file}: {size} bytes");
    }
    let page = run(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc {}",
        root.0.join("usr/share/man/man8/wimark-ha.8.gz").display()
    )))
    // roff writes a hyphen as `\-`.
    .replace("\\-", "-");
    for subcommand in ["run", "status", "switchover", "history", "import-keepalived", "doctor"] {
        assert!(page.contains(subcommand), "the man page lacks `{subcommand}`");
    }
    assert!(!page.contains("generate-docs"), "the hidden command is not documented");
    let bash = std::fs::read_to_string(root.0.join("usr/share/bash-completion/completions/wimark-ha"))
        .expect("bash completion");
    assert!(bash.contains("switchover") && bash.contains("--config"), "bash completion");
    // Installed, not enabled: the placeholder config must be edited first.
    assert!(!root
        .0
        .join("etc/systemd/system/multi-user.target.wants")
        .join(UNIT)
        .exists());

    // `--man=no`: systemd-analyze asks the host's `man`, not the root's;
    // the page Documentation= names is checked above and rendered here.
    let rendered = Command::new("man")
        .arg("-l")
        .arg(root.0.join("usr/share/man/man8/wimark-ha.8.gz"))
        .env("MANPAGER", "cat")
        .output()
        .expect("man (Debian package man-db)");
    assert!(
        rendered.status.success() && String::from_utf8_lossy(&rendered.stdout).contains("wimark-ha"),
        "man -l: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", root.0.display()))
        .arg(UNIT)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let complaints = String::from_utf8_lossy(&verify.stderr).to_string()
        + &String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify: {complaints}"
    );
    // The journal's directory is root's alone (issue 14, item 4).
    assert_eq!(
        unit_values(&unit_source(), "StateDirectoryMode"),
        vec!["0700".to_string()]
    );
    // Descriptors to spare (issue 14, item 3).
    assert_eq!(
        unit_values(&unit_source(), "LimitNOFILE"),
        vec!["16384".to_string()]
    );
}

/// The unit's `CapabilityBoundingSet` as setpriv's `-all,+bpf,…`.
fn unit_capabilities() -> String {
    let unit = unit_source();
    let caps = unit_values(&unit, "CapabilityBoundingSet");
    assert_eq!(caps.len(), 1, "one CapabilityBoundingSet line");
    let ambient = unit_values(&unit, "AmbientCapabilities");
    assert_eq!(caps, ambient, "the same capabilities bounded and ambient");
    let mut list = String::from("-all");
    for cap in caps[0].split_whitespace() {
        list.push_str(&format!(
            ",+{}",
            cap.trim_start_matches("CAP_").to_ascii_lowercase()
        ));
    }
    list
}

/// setpriv's arguments that give a process exactly the unit's
/// capabilities (bounding, inheritable and ambient), as systemd starts it.
fn as_the_unit_starts_it() -> Launch {
    let capabilities = unit_capabilities();
    Launch {
        wrapper: vec![
            "setpriv".to_string(),
            format!("--bounding-set={capabilities}"),
            format!("--inh-caps={capabilities}"),
            format!("--ambient-caps={capabilities}"),
            "--".to_string(),
        ],
        env: Vec::new(),
    }
}

/// The imported config's `remove = "/usr/share/wimark/volumes/mongo/*.lock"`
/// as the service runs it: mongo's container leaves its locks owned by its
/// uid 999 in a 0755 directory of uid 999. Root without CAP_DAC_OVERRIDE
/// gets EACCES there, the blocking hook fails and the master stack never
/// starts after a takeover.
#[test]
fn the_units_capabilities_remove_a_containers_lock_and_promote() {
    require_root("a lab, setpriv and chown");
    require_dockerd();
    let tag = format!("whcap{}", std::process::id());
    let master = Stack::create(&format!("{tag}-master"), 2, None).expect("master stack");
    let _backup = Stack::create(&format!("{tag}-backup"), 1, None).expect("backup stack");
    let scratch = Scratch::new("caps-lock");
    let mongo = scratch.0.join("volumes/mongo");
    std::fs::create_dir_all(&mongo).expect("mongo volume");
    for lock in ["mongod.lock", "WiredTiger.lock"] {
        std::fs::write(mongo.join(lock), "1").expect("lock");
        std::os::unix::fs::chown(mongo.join(lock), Some(999), Some(999)).expect("chown lock");
    }
    std::os::unix::fs::chown(&mongo, Some(999), Some(999)).expect("chown dir");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&mongo, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let body = format!(
        "{FAST}\n\n[roles]\ninstance = \"WIM1\"\nmaster = {{ compose_project = \"{tag}-master\" }}\nbackup = {{ compose_project = \"{tag}-backup\" }}\nstop_timeout = \"2s\"\n\n[[hooks.before_promote]]\nremove = \"{}/*.lock\"\n",
        mongo.display()
    );
    let (_lab, a, _b) = two_servers(true).expect("lab");
    let daemon = Daemon::start_with(
        &a,
        "caps-lock",
        |s| config(s, 200, &body),
        as_the_unit_starts_it(),
    )
    .expect("starts with only the unit's capabilities");
    wait_until(Duration::from_secs(20), "the master stack running", || {
        daemon.roles().stack == RunningStack::Master && master.running().len() == 2
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: the lock hook held the switch back?\nstatus: {}\nlog: {}",
            roles_json(&daemon),
            daemon.log()
        )
    });
    for lock in ["mongod.lock", "WiredTiger.lock"] {
        assert!(!mongo.join(lock).exists(), "{lock} removed by the hook");
    }
    let status = roles_json(&daemon);
    assert!(status["degraded"].is_null(), "{status}");
    assert!(
        !daemon.log().contains("Permission denied"),
        "{}",
        daemon.log()
    );
}

#[test]
fn the_daemon_needs_only_the_units_capabilities() {
    require_root("a lab and setpriv");
    let (_lab, a, _b) = two_servers(true).expect("lab");
    let unit = unit_source();
    assert_eq!(unit_values(&unit, "LimitMEMLOCK"), ["infinity"]);
    let launch = as_the_unit_starts_it();
    let fast = "version = 3\nadvert_interval = \"10ms\"\nvirtual_ips = [\"10.77.0.100/24\"]";
    let daemon = Daemon::start_with(&a, "caps-a", |s| config(s, 200, fast), launch)
        .expect("starts with only the unit's capabilities");
    wait_until(Duration::from_secs(5), "MASTER with the VIP", || {
        daemon.state() == Some(State::Master) && has_address(&a, "eth1", "10.77.0.100")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    let status = std::fs::read_to_string(format!(
        "/proc/{}/status",
        daemon.child.as_ref().expect("running").id()
    ))
    .expect("status");
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd");
    let expected: u64 = unit_values(&unit, "CapabilityBoundingSet")[0]
        .split_whitespace()
        .map(|cap| match cap {
            "CAP_DAC_OVERRIDE" => 1 << 1,
            "CAP_FOWNER" => 1 << 3,
            "CAP_NET_ADMIN" => 1 << 12,
            "CAP_NET_RAW" => 1 << 13,
            "CAP_SYS_NICE" => 1 << 23,
            "CAP_PERFMON" => 1 << 38,
            "CAP_BPF" => 1 << 39,
            other => panic!("add {other} to this table"),
        })
        .sum();
    assert_eq!(
        u64::from_str_radix(bounding.trim(), 16).expect("hex"),
        expected,
        "the daemon ran with exactly the unit's bounding set"
    );
    // LimitMEMLOCK=infinity cannot be reproduced where this test's own hard
    // limit is finite (a container without CAP_SYS_RESOURCE): then, and only
    // then, the engine's mlockall may be refused.
    let memlock_unlimited = std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Max locked memory") && l.contains("unlimited"));
    let log = daemon.log();
    let problems: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("not permitted"))
        .filter(|l| memlock_unlimited || !l.contains("mlockall"))
        .collect();
    assert!(
        problems.is_empty(),
        "something needed a capability it lacks:\n{log}"
    );
}

#[test]
fn systemd_hears_ready_watchdog_and_stopping() {
    require_root("a lab");
    let (_lab, a, _b) = two_servers(true).expect("lab");
    let scratch = wimark_ha_tests::Scratch::new("notify");
    let dir = scratch.0.clone();
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let launch = Launch {
        wrapper: Vec::new(),
        env: vec![
            (
                "NOTIFY_SOCKET".to_string(),
                socket_path.display().to_string(),
            ),
            // WatchdogSec=1: pings every 500 ms.
            ("WATCHDOG_USEC".to_string(), "1000000".to_string()),
        ],
    };
    let fast = "version = 3\nadvert_interval = \"10ms\"\nvirtual_ips = [\"10.77.0.100/24\"]";
    let mut daemon =
        Daemon::start_with(&a, "notify-a", |s| config(s, 200, fast), launch).expect("daemon");
    let mut heard = Vec::new();
    let listen = |until: Duration, heard: &mut Vec<String>| {
        let deadline = Instant::now() + until;
        let mut buffer = [0u8; 512];
        while Instant::now() < deadline {
            if let Ok(n) = socket.recv(&mut buffer) {
                heard.push(String::from_utf8_lossy(&buffer[..n]).trim().to_string());
            }
        }
    };
    listen(Duration::from_millis(2200), &mut heard);
    assert_eq!(
        heard.first().map(String::as_str),
        Some("READY=1"),
        "{heard:?}"
    );
    let pings = heard.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(
        (3..=6).contains(&pings),
        "a ping every 500 ms for 2 s: {heard:?}"
    );
    daemon.signal(libc::SIGTERM);
    listen(Duration::from_millis(500), &mut heard);
    assert!(heard.iter().any(|m| m == "STOPPING=1"), "{heard:?}");
    assert_eq!(daemon.wait(), Some(0));
}
