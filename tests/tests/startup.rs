//! Start-up is part of the test (issue 13, item 6): with 1 ms × 10 a lab saw
//! false takeovers in 14 of 29 trials, most 0.3–0.9 s after the daemons
//! started — a master's start-up (BPF load, BTF parse) is when its sender is
//! least punctual. At the packaged default (auto) the standby must not take
//! over in the first seconds after either node starts or restarts.

use std::{thread, time::Duration};

use wimark_ha::records::State;
use wimark_ha_tests::{
    daemon::{config, wait_until, Daemon},
    lab::two_servers,
};

const TRIALS: usize = 10;
/// Watched after each start.
const WATCH: Duration = Duration::from_secs(3);

fn settings(peer: &str, multiplier: &str) -> String {
    format!(
        "version = 3\nadvert_interval = \"10ms\"\nvirtual_ips = [\"10.77.0.100/24\"]\npeers = [\"{peer}\"]\nfast_detect = {{ interval = \"1ms\", multiplier = {multiplier} }}"
    )
}

/// B's transitions to MASTER so far.
fn takeovers(daemon: &Daemon) -> Vec<String> {
    daemon
        .instance()
        .map(|i| {
            i.history
                .iter()
                .filter(|t| t.to == State::Master)
                .map(|t| format!("{} -> {} ({}), silence {:?}", t.from, t.to, t.reason, t.silence))
                .collect()
        })
        .unwrap_or_default()
}

fn starts_and_restarts(multiplier: &str) {
    let mut failures = Vec::new();
    for trial in 0..TRIALS {
        let (_lab, a, b) = two_servers(true).expect("lab");
        let a_config = settings("10.77.0.2", multiplier);
        let b_config = settings("10.77.0.1", multiplier);
        let mut daemon_a = Daemon::start(&a, "a", |s| config(s, 200, &a_config)).expect("A");
        wait_until(Duration::from_secs(5), "A MASTER", || {
            daemon_a.state() == Some(State::Master)
        })
        .expect("A master");
        // B starts beside a running master.
        let mut daemon_b = Daemon::start(&b, "b", |s| config(s, 100, &b_config)).expect("B");
        thread::sleep(WATCH);
        let mut seen = takeovers(&daemon_b);
        // B restarts (its learning starts over).
        daemon_b.signal(libc::SIGKILL);
        daemon_b.wait();
        let daemon_b = Daemon::start(&b, "b2", |s| config(s, 100, &b_config)).expect("B again");
        thread::sleep(WATCH);
        seen.extend(takeovers(&daemon_b));
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
        let daemon_a = Daemon::start(&a, "a2", |s| config(s, 200, &a_config)).expect("A again");
        wait_until(Duration::from_secs(5), "A MASTER again (preempt)", || {
            daemon_a.state() == Some(State::Master) && daemon_b.state() == Some(State::Backup)
        })
        .expect("A preempts back");
        thread::sleep(WATCH);
        seen.extend(takeovers(&daemon_b).into_iter().skip(before));
        if !seen.is_empty() {
            failures.push(format!("trial {trial}: {seen:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "false takeovers after a start at multiplier {multiplier}:\n{}",
        failures.join("\n")
    );
}

#[test]
fn no_false_takeover_in_the_first_seconds_after_either_node_starts_or_restarts() {
    starts_and_restarts("\"auto\"");
}

/// A fixed multiplier has no learning phase: the warm-up alone keeps the
/// start-ups quiet (× 10 is where the issue saw 14 of 29 trials fail).
#[test]
fn the_same_at_a_fixed_multiplier_of_10() {
    starts_and_restarts("10");
}
