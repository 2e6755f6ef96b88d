//! Static files follow the master: Debian's lsyncd, run by the daemon as a
//! role-bound program, mirrors a directory to the peer's rsync daemon, and the
//! direction reverses after a failover.

use std::time::Duration;
use wimark_ha::records::State;

use wimark_ha_tests::{
    daemon::{config, roles_json, wait_until, Daemon, FAST},
    docker::require_dockerd,
    lab::two_servers,
    Scratch,
};

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
            "use chroot = no\npid file = {}\nlog file = {}\ntransfer logging = yes\n[wimark]\npath = {}\nread only = no\nuid = root\ngid = root\n",
            scratch.join(format!("rsyncd-{tag}.pid")).display(),
            scratch.join(format!("rsyncd-{tag}.log")).display(),
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
    let scratch = Scratch::new("mirror-lsyncd");
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
        daemon_a.state() == Some(State::Master)
    })
    .expect("election");

    // B may have been master for an instant at start-up (its lsyncd then
    // pushed its empty copy to A, as a real master would): write once it is
    // a backup with no mirror running.
    let mirror_running = |daemon: &Daemon| daemon.roles().processes.iter().any(|p| p.running);
    wait_until(Duration::from_secs(5), "B BACKUP without a mirror", || {
        daemon_b.state() == Some(State::Backup) && !mirror_running(&daemon_b)
    })
    .unwrap_or_else(|e| panic!("{e}\nB roles: {}", roles_json(&daemon_b)));

    // A is master: its /usr/share/wimark stand-in is mirrored to B.
    std::fs::write(a_data.join("floor1.svg"), "map of floor 1").expect("write on A");
    wait_until(Duration::from_secs(20), "floor1.svg mirrored to B", || {
        b_data.join("floor1.svg").exists()
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nA roles: {}\nB roles: {}\nlsyncd log: {}\nrsyncd B log: {}\nA data: {:?}",
            roles_json(&daemon_a),
            roles_json(&daemon_b),
            std::fs::read_to_string(scratch.0.join("lsyncd-a.log")).unwrap_or_default(),
            std::fs::read_to_string(scratch.0.join("rsyncd-b.log")).unwrap_or_default(),
            std::fs::read_dir(&a_data)
                .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>()),
        )
    });
    assert!(
        !mirror_running(&daemon_b),
        "the backup runs no mirror: {}",
        roles_json(&daemon_b)
    );

    // A is lost; B takes over and the mirror reverses.
    daemon_a.signal(libc::SIGKILL);
    daemon_a.wait();
    wait_until(Duration::from_secs(5), "B MASTER", || {
        daemon_b.state() == Some(State::Master)
    })
    .expect("failover");
    wait_until(Duration::from_secs(10), "B's lsyncd running", || {
        mirror_running(&daemon_b)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", roles_json(&daemon_b)));
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
    // B stops as a service does (SIGTERM): its mirror is stopped and waited
    // for before the daemon exits, so nothing writes into the scratch
    // directory after it is removed (a SIGKILL left that to PDEATHSIG, which
    // raced the removal once).
    let mut daemon_b = daemon_b;
    daemon_b.signal(libc::SIGTERM);
    assert_eq!(daemon_b.wait(), Some(0), "{}", daemon_b.log());
    let b_mirror = std::process::Command::new("pgrep")
        .args(["-f", &scratch.0.join("lsyncd-b.lua").display().to_string()])
        .output()
        .expect("pgrep");
    assert!(
        b_mirror.stdout.is_empty(),
        "B's lsyncd outlived a clean stop: {}",
        String::from_utf8_lossy(&b_mirror.stdout)
    );
    drop(rsyncd);
}
