//! Start-up is part of the test (issue 13, item 6): with 1 ms × 10 a lab saw
//! false takeovers in 14 of 29 trials, most 0.3–0.9 s after the daemons
//! started — a master's start-up (BPF load, BTF parse) is when its sender is
//! least punctual. At the packaged default (auto) the standby must not take
//! over in the first seconds after either node starts or restarts.
//!
//! The two tests run one after the other (a lock): two labs at once load
//! both vCPUs, and the second lab's load is not what either test is about.

use std::{
    sync::Mutex,
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use wimark_ha::records::State;
use wimark_ha_tests::{
    daemon::{config, wait_until, Daemon},
    lab::two_servers,
};

const TRIALS: usize = 10;
/// Watched after each start.
const WATCH: Duration = Duration::from_secs(3);
/// Where the issue saw the start-up takeovers (0.3–0.9 s after the start),
/// with a margin: a fixed multiplier is judged on this part of the watch.
const START_UP: Duration = Duration::from_millis(1500);

/// One lab at a time (see the module comment).
static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What a trial saw: takeovers within [`START_UP`] of a start, and later.
#[derive(Default)]
struct Seen {
    start_up: Vec<String>,
    later: Vec<String>,
    /// The daemons' warnings, when a trial saw a takeover: what a failure
    /// on CI has to go on (a stalled sender, a lease run out).
    warnings: Vec<String>,
}

impl Seen {
    /// Sorts B's takeovers (skipping the first `skip`) by their time since
    /// the start at `started_ms`.
    fn add(&mut self, daemon: &Daemon, skip: usize, started_ms: u64) {
        for (at_ms, line) in takeovers(daemon).into_iter().skip(skip) {
            let since = Duration::from_millis(at_ms.saturating_sub(started_ms));
            let line = format!("{line}, {since:?} after the start");
            if since < START_UP {
                self.start_up.push(line);
            } else {
                self.later.push(line);
            }
        }
    }
}

fn settings(peer: &str, multiplier: &str) -> String {
    format!(
        "version = 3\nadvert_interval = \"10ms\"\nvirtual_ips = [\"10.77.0.100/24\"]\npeers = [\"{peer}\"]\nfast_detect = {{ interval = \"1ms\", multiplier = {multiplier} }}"
    )
}

/// B's transitions to MASTER so far, with their time (unix ms).
fn takeovers(daemon: &Daemon) -> Vec<(u64, String)> {
    daemon
        .instance()
        .map(|i| {
            i.history
                .iter()
                .filter(|t| t.to == State::Master)
                .map(|t| {
                    let line = format!(
                        "{} -> {} ({}), silence {:?}",
                        t.from, t.to, t.reason, t.silence
                    );
                    (t.at_unix_ms, line)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Runs [`TRIALS`] trials; returns, per trial that saw any, its takeovers.
fn starts_and_restarts(multiplier: &str) -> Vec<(usize, Seen)> {
    let _one_lab = ONE_LAB_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut trials = Vec::new();
    for trial in 0..TRIALS {
        let (_lab, a, b) = two_servers(true).expect("lab");
        let a_config = settings("10.77.0.2", multiplier);
        let b_config = settings("10.77.0.1", multiplier);
        let mut daemon_a = Daemon::start(&a, "a", |s| config(s, 200, &a_config)).expect("A");
        wait_until(Duration::from_secs(5), "A MASTER", || {
            daemon_a.state() == Some(State::Master)
        })
        .expect("A master");
        let mut seen = Seen::default();
        // B starts beside a running master.
        let started_ms = unix_ms_now();
        let mut daemon_b = Daemon::start(&b, "b", |s| config(s, 100, &b_config)).expect("B");
        thread::sleep(WATCH);
        seen.add(&daemon_b, 0, started_ms);
        // B restarts (its learning starts over).
        daemon_b.signal(libc::SIGKILL);
        daemon_b.wait();
        let started_ms = unix_ms_now();
        let daemon_b = Daemon::start(&b, "b2", |s| config(s, 100, &b_config)).expect("B again");
        thread::sleep(WATCH);
        seen.add(&daemon_b, 0, started_ms);
        // A restarts: SIGKILL is a real loss (B takes over, rightly); once A
        // is back and master again, B must stay backup beside A's new,
        // start-up stream.
        daemon_a.signal(libc::SIGKILL);
        daemon_a.wait();
        wait_until(Duration::from_secs(2), "B MASTER", || {
            daemon_b.state() == Some(State::Master)
        })
        .expect("B takes over from the killed A");
        let before = takeovers(&daemon_b).len();
        let started_ms = unix_ms_now();
        let daemon_a = Daemon::start(&a, "a2", |s| config(s, 200, &a_config)).expect("A again");
        wait_until(Duration::from_secs(5), "A MASTER again (preempt)", || {
            daemon_a.state() == Some(State::Master) && daemon_b.state() == Some(State::Backup)
        })
        .expect("A preempts back");
        thread::sleep(WATCH);
        seen.add(&daemon_b, before, started_ms);
        if !seen.start_up.is_empty() || !seen.later.is_empty() {
            seen.warnings = daemon_a.warnings("A");
            seen.warnings.extend(daemon_b.warnings("B"));
            trials.push((trial, seen));
        }
    }
    trials
}

/// One line per trial that saw any of `lines`; empty if none did.
fn report(trials: &[(usize, Seen)], lines: impl Fn(&Seen) -> Vec<String>) -> String {
    trials
        .iter()
        .map(|(trial, seen)| (trial, lines(seen), &seen.warnings))
        .filter(|(_, lines, _)| !lines.is_empty())
        .map(|(trial, lines, warnings)| format!("trial {trial}: {lines:?}\n  {}", warnings.join("\n  ")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Auto learns the master's gaps before it arms: nothing in the whole watch.
#[test]
fn no_false_takeover_in_the_first_seconds_after_either_node_starts_or_restarts() {
    let trials = starts_and_restarts("\"auto\"");
    assert!(
        trials.is_empty(),
        "false takeovers after a start at multiplier auto:\n{}",
        report(&trials, |s| s
            .start_up
            .iter()
            .chain(&s.later)
            .cloned()
            .collect())
    );
}

/// A fixed multiplier has no learning phase: the warm-up alone keeps the
/// start-ups quiet (× 10 is where the issue saw 14 of 29 trials fail, most
/// 0.3–0.9 s after the start). Past the warm-up a fixed 10 ms window meets
/// this VM's whole-VM stalls (up to ~10 ms) as it does at any time — the
/// reason auto is the default (`cargo xtask soak cpu` counts those) — so
/// only the start-up part of the watch is judged here; the rest is printed.
#[test]
fn the_same_at_a_fixed_multiplier_of_10() {
    let trials = starts_and_restarts("10");
    let later = report(&trials, |s| s.later.clone());
    if !later.is_empty() {
        println!("takeovers past the start-up at a fixed × 10 (steady-state stalls):\n{later}");
    }
    let start_up = report(&trials, |s| s.start_up.clone());
    assert!(
        start_up.is_empty(),
        "false takeovers within {START_UP:?} of a start at multiplier 10:\n{start_up}"
    );
}
