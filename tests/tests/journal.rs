//! The journal never stops a failover (issue 14, item 4): a state directory
//! that is not a directory, is read-only or is full used to make `run`
//! refuse to start — no failover at all. Now the standby starts, takes
//! over when the master is lost, and says in `status` why the journal is
//! not written.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use wimark_ha::records::State;
use wimark_ha_tests::{
    daemon::{config, wait_until, Daemon, FAST},
    lab::two_servers,
};

#[derive(Clone, Copy, Debug)]
enum Broken {
    NotADirectory,
    ReadOnly,
    Full,
}

/// A tmpfs mounted for the test, unmounted on every exit path.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path, options: &str) -> Mounted {
    std::fs::create_dir_all(dir).expect("mount point");
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", options, "tmpfs"])
        .arg(dir)
        .status()
        .expect("running mount");
    assert!(status.success(), "mount -t tmpfs -o {options} {}", dir.display());
    Mounted(dir.to_path_buf())
}

/// Breaks `dir` (the daemon's state directory) as `kind` says.
fn break_state_dir(kind: Broken, dir: &Path) -> Option<Mounted> {
    let _ = std::fs::remove_dir_all(dir);
    match kind {
        Broken::NotADirectory => {
            std::fs::write(dir, b"a file where the state directory should be").expect("file");
            None
        }
        Broken::ReadOnly => Some(mount_tmpfs(dir, "ro,size=64k")),
        Broken::Full => {
            let mounted = mount_tmpfs(dir, "size=64k,mode=0700");
            // Fill it: the journal can be created, not written.
            let filler = vec![0u8; 4096];
            let mut file = std::fs::File::create(dir.join("filler")).expect("filler");
            use std::io::Write as _;
            while file.write_all(&filler).is_ok() {}
            Some(mounted)
        }
    }
}

#[test]
fn a_state_dir_that_cannot_be_written_never_stops_a_failover() {
    wimark_ha_tests::require_root("the journal lab (tmpfs mounts, netns)");
    for kind in [Broken::NotADirectory, Broken::ReadOnly, Broken::Full] {
        let (_lab, a, b) = two_servers(true).expect("lab");
        let mut daemon_a = Daemon::start(&a, "a", |s| config(s, 200, FAST)).expect("A");
        wait_until(Duration::from_secs(5), "A MASTER", || {
            daemon_a.state() == Some(State::Master)
        })
        .expect("A master");
        let mut daemon_b = Daemon::start(&b, "b", |s| config(s, 100, FAST)).expect("B");
        daemon_b.signal(libc::SIGKILL);
        daemon_b.wait();
        let state_dir = daemon_b.state_dir();
        let mounted = break_state_dir(kind, &state_dir);
        daemon_b
            .restart()
            .unwrap_or_else(|e| panic!("{kind:?}: B refused to start: {e:#}"));
        wait_until(Duration::from_secs(5), "B BACKUP", || {
            daemon_b.state() == Some(State::Backup)
        })
        .unwrap_or_else(|e| panic!("{kind:?}: {e}\n{}", daemon_b.log()));
        // The master is lost: B takes over, journal or not.
        daemon_a.signal(libc::SIGKILL);
        daemon_a.wait();
        wait_until(Duration::from_secs(2), "B MASTER", || {
            daemon_b.state() == Some(State::Master)
        })
        .unwrap_or_else(|e| panic!("{kind:?}: {e}\n{}", daemon_b.log()));
        let status = daemon_b.status().expect("status");
        let reason = status.journal.degraded.clone().unwrap_or_else(|| {
            panic!("{kind:?}: status shows the journal healthy: {:?}", status.journal)
        });
        assert!(
            reason.contains(&state_dir.display().to_string()),
            "{kind:?}: the reason names the path: {reason}"
        );
        assert!(
            status.journal.lost >= 1 && status.journal.written == 0,
            "{kind:?}: {:?}",
            status.journal
        );
        // `status` still shows the takeover (kept in memory).
        let history = &daemon_b.instance().expect("instance").history;
        assert!(
            history.iter().any(|t| t.to == State::Master),
            "{kind:?}: {history:?}"
        );
        // Logged once when it stopped working, not once per entry.
        let log = daemon_b.log();
        let lines = log.matches("running without it").count();
        assert_eq!(lines, 1, "{kind:?}: the log says it once:\n{log}");
        // Stopped before the mount goes, unmounted before its directory is.
        daemon_b.signal(libc::SIGKILL);
        daemon_b.wait();
        drop(mounted);
        drop(daemon_b);
    }
}

/// VmHWM of `daemon`'s process, KiB.
fn peak_rss_kib(daemon: &Daemon) -> u64 {
    let pid = daemon.child.as_ref().map(|c| c.id()).expect("running");
    wimark_ha_tests::soak::process_use(pid).peak_rss_kib
}

/// A 100 MB journal found at start (another release's, or copied in) is
/// read from its tail: the daemon's peak memory is its usual one (it was
/// 154 MB), and the journal is cut back to its documented bound.
#[test]
fn a_100_mb_journal_is_read_from_its_tail_with_bounded_memory() {
    wimark_ha_tests::require_root("the journal lab (netns)");
    let (_lab, _a, b) = two_servers(true).expect("lab");
    let mut daemon = Daemon::start(&b, "b", |s| config(s, 100, FAST)).expect("B");
    // B is alone: BACKUP at start, MASTER one Master_Down_Interval
    // (~36 ms) later. Either shows it running; the first start without a
    // journal to read was quick enough to be seen in BACKUP, the second
    // (100 MB to skip) was not, once in a full suite.
    let running = |daemon: &Daemon| {
        wait_until(Duration::from_secs(5), "B running (BACKUP or MASTER)", || {
            matches!(daemon.state(), Some(State::Backup | State::Master))
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()))
    };
    running(&daemon);
    let usual = peak_rss_kib(&daemon);
    daemon.signal(libc::SIGKILL);
    daemon.wait();

    let entry = |at: u64| wimark_ha::history::Entry::Transition {
        instance: "WIM1".to_string(),
        record: wimark_ha::records::TransitionRecord {
            at_unix_ms: at,
            from: State::Backup,
            to: State::Master,
            reason: wimark_ha::records::Reason::FastDetect,
            silence: Some(Duration::from_micros(3000)),
            vip_added: None,
            garp_sent: None,
            cause: None,
        },
    };
    let mut text = Vec::with_capacity(101 << 20);
    let mut at = 0;
    while text.len() < 100 << 20 {
        text.extend(serde_json::to_vec(&entry(at)).expect("json"));
        text.push(b'\n');
        at += 1;
    }
    let journal = daemon.state_dir().join("history.jsonl");
    std::fs::write(&journal, &text).expect("a 100 MB journal");
    drop(text);

    daemon.restart().expect("B restarted");
    running(&daemon);
    let with_journal = peak_rss_kib(&daemon);
    println!("peak RSS: {usual} KiB usually, {with_journal} KiB with a 100 MB journal");
    assert!(
        with_journal <= usual + 16 * 1024,
        "peak RSS {with_journal} KiB with a 100 MB journal vs {usual} KiB without"
    );
    // The newest entry is in the history `status` shows (the tail was read).
    let history = daemon.instance().expect("instance").history;
    assert!(
        history.iter().any(|t| t.at_unix_ms == at - 1),
        "the newest journal entry is shown: {:?}",
        history.last()
    );
    // And the journal is back within its bound.
    let total: u64 = ["history.jsonl", "history.jsonl.1"]
        .iter()
        .map(|f| std::fs::metadata(daemon.state_dir().join(f)).map_or(0, |m| m.len()))
        .sum();
    assert!(
        total <= 2 * wimark_ha::history::MAX_BYTES + (64 << 10),
        "journal {total} bytes after the start"
    );
}
