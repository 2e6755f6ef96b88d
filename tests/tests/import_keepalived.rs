//! The vendor's seed pair, imported by `wimark-ha import-keepalived`'s
//! library, runs and fails over in a lab (the import itself, without root:
//! `wimark-ha/tests/import_keepalived.rs`).

use std::{path::PathBuf, time::Duration};

use wimark_ha::records::State;
use wimark_ha_tests::{
    daemon::{has_address, wait_until, Daemon},
    lab::two_servers,
};

/// The vendor's keepalived.conf as `import-keepalived` converts it.
fn import(conf: &str) -> String {
    import_changed(conf, |text| text.to_string())
}

/// The same, after `change` to the vendor's text.
fn import_changed(conf: &str, change: impl Fn(&str) -> String) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../wimark-ha/tests/fixtures")
        .join(conf);
    let text = change(&std::fs::read_to_string(&path).expect("fixture"));
    let statements = wimark_ha::import::parse_keepalived(&text, &path).expect("parses");
    wimark_ha::import::convert(&statements, &path, None)
}

fn with_socket(text: &str, socket: &std::path::Path) -> String {
    format!("[daemon]\ncontrol_socket = \"{}\"\n\n{text}", socket.display())
}

/// Issue 15: both seed files, each given a `vrrp_script` and a
/// `track_script` as a vendor's operator would add them, import and run; the
/// master's failing check lowers its priority (200 - 100) and the backup,
/// preempting as the seeds do, takes over.
#[test]
fn the_seed_pair_with_a_track_script_imports_runs_and_hands_over() {
    use wimark_ha_tests::flag::CheckFlag;
    let (_lab, a, b) = two_servers(true).expect("lab");
    let (flag_a, flag_b) = (CheckFlag::new("seed-a"), CheckFlag::new("seed-b"));
    let imported = |conf: &str, flag: &CheckFlag| {
        let (script, track) = flag.keepalived_blocks();
        let text = import_changed(conf, |vendor| {
            vendor
                .replacen("# VRRP instance name", &format!("{script}\n# VRRP instance name"), 1)
                .replacen("    notify /etc/wimark/", &format!("{track}    notify /etc/wimark/"), 1)
        });
        text.replace("interface = \"l2tpeth0\"", "interface = \"eth1\"")
    };
    let (master, backup) = (
        imported("keepalived/seed-master.conf", &flag_a),
        imported("keepalived/seed-backup.conf", &flag_b),
    );
    for text in [&master, &backup] {
        assert!(
            text.contains("[[instance.track]]   # vrrp_script chk_service")
                && text.contains("interval = \"1s\"")
                && text.contains("weight = -100"),
            "the track script carried over:\n{text}"
        );
    }
    let daemon_a = Daemon::start(&a, "seedtrack-a", |s| with_socket(&master, s)).expect("A");
    wait_until(Duration::from_secs(10), "A master", || daemon_a.state() == Some(State::Master))
        .unwrap_or_else(|e| panic!("{e}\nA: {}", daemon_a.log()));
    let daemon_b = Daemon::start(&b, "seedtrack-b", |s| with_socket(&backup, s)).expect("B");
    wait_until(Duration::from_secs(10), "B backup, both checks healthy", || {
        daemon_b.state() == Some(State::Backup)
            && [&daemon_a, &daemon_b].iter().all(|d| {
                d.instance().is_ok_and(|i| i.effective_priority == Some(200))
            })
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));
    // A's service fails: within a check (1 s) its priority is 100, and B
    // preempts after Master_Down_Interval (~3.2 s at the seeds' 1 s).
    flag_a.raise();
    wait_until(Duration::from_secs(12), "B MASTER, A BACKUP", || {
        daemon_b.state() == Some(State::Master) && daemon_a.state() == Some(State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", daemon_a.log(), daemon_b.log()));
    assert!(has_address(&b, "eth1", "10.10.10.3") && !has_address(&a, "eth1", "10.10.10.3"));
    assert_eq!(daemon_a.instance().expect("A").effective_priority, Some(100));
    let cause = daemon_a.last_transition().cause.unwrap_or_default();
    assert!(cause.contains("track script chk_service failed"), "{cause}");
    drop(flag_b);
}

#[test]
fn the_imported_seed_pair_runs_and_fails_over_in_a_lab() {
    let (_lab, a, b) = two_servers(true).expect("lab");
    // The vendor's files as imported; only what differs in the lab changes:
    // the interface name and a control socket per daemon.
    let imported =
        |conf: &str| import(conf).replace("interface = \"l2tpeth0\"", "interface = \"eth1\"");
    let (master, backup) = (
        imported("keepalived/seed-master.conf"),
        imported("keepalived/seed-backup.conf"),
    );
    let mut daemon_a = Daemon::start(&a, "import-a", |s| with_socket(&master, s)).expect("A");
    let daemon_b = Daemon::start(&b, "import-b", |s| with_socket(&backup, s)).expect("B");
    // Both have priority 200 (as the vendor ships them): the first one up
    // is master, and a backup does not preempt an equal priority.
    wait_until(Duration::from_secs(10), "one master", || {
        daemon_a.state() == Some(State::Master) && daemon_b.state() == Some(State::Backup)
    })
    .unwrap_or_else(|e| panic!("{e}\nA: {:?}\nB: {:?}", daemon_a.state(), daemon_b.state()));
    assert!(has_address(&a, "eth1", "10.10.10.3") && !has_address(&b, "eth1", "10.10.10.3"));
    // A is lost: B takes over after Master_Down_Interval (~3.2 s at 1 s).
    daemon_a.signal(libc::SIGKILL);
    daemon_a.wait();
    wait_until(Duration::from_secs(10), "B takes over", || {
        daemon_b.state() == Some(State::Master) && has_address(&b, "eth1", "10.10.10.3")
    })
    .unwrap_or_else(|e| panic!("{e}\nB: {}", daemon_b.log()));
    let mut daemon_b = daemon_b;
    daemon_b.signal(libc::SIGTERM);
    assert_eq!(daemon_b.wait(), Some(0));
}
