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
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../wimark-ha/tests/fixtures")
        .join(conf);
    let text = std::fs::read_to_string(&path).expect("fixture");
    let statements = wimark_ha::import::parse_keepalived(&text, &path).expect("parses");
    wimark_ha::import::convert(&statements, &path, None)
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
    let with_socket = |text: &str, socket: &std::path::Path| {
        format!(
            "[daemon]\ncontrol_socket = \"{}\"\n\n{text}",
            socket.display()
        )
    };
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
