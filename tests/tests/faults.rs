//! The fault matrix (issue 6), as far as it stands: where the VIP ends up,
//! and that every transition is in the history.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wimark_ha::records::{Reason, State};

use wimark_ha_tests::{
    daemon::{config, has_address, wait_until, Daemon, FAST},
    lab::two_servers,
};

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn transitions(daemon: &Daemon) -> Vec<(u64, State, State)> {
    daemon
        .instance()
        .map(|i| {
            i.history
                .iter()
                .map(|t| (t.at_unix_ms, t.from, t.to))
                .collect()
        })
        .unwrap_or_default()
}

/// A (priority 200) started first and MASTER, then B (100) as BACKUP: the
/// settled pair every fault here starts from. `tag` names their files.
fn settled_pair(
    (a, b): (&str, &str),
    tag: &str,
    config_a: impl Fn(&std::path::Path) -> String,
    config_b: impl Fn(&std::path::Path) -> String,
) -> (Daemon, Daemon) {
    let daemon_a = Daemon::start(a, &format!("{tag}-a"), config_a).expect("A");
    wait_until(Duration::from_secs(5), "A MASTER", || {
        daemon_a.state() == Some(State::Master)
    })
    .expect("A first");
    let daemon_b = Daemon::start(b, &format!("{tag}-b"), config_b).expect("B");
    wait_until(Duration::from_secs(5), "B BACKUP", || {
        daemon_b.state() == Some(State::Backup)
    })
    .expect("B backup");
    (daemon_a, daemon_b)
}

#[test]
fn a_master_stopped_for_two_seconds_does_not_keep_the_vip_beside_the_new_one() {
    let (_lab, a, b) = two_servers(true).expect("lab");
    let (mut daemon_a, daemon_b) = settled_pair(
        (&a, &b),
        "stop",
        |s| config(s, 200, FAST),
        |s| config(s, 100, FAST),
    );

    daemon_a.signal(libc::SIGSTOP);
    wait_until(Duration::from_secs(2), "B takes over", || {
        daemon_b.state() == Some(State::Master) && has_address(&b, "eth1", "10.77.0.100")
    })
    .expect("B master while A is stopped");
    std::thread::sleep(Duration::from_secs(2));
    let resumed = unix_ms();
    daemon_a.signal(libc::SIGCONT);

    // A (priority 200, preempt) is master again; B hands back at once.
    wait_until(Duration::from_secs(2), "exactly one holder", || {
        has_address(&a, "eth1", "10.77.0.100") != has_address(&b, "eth1", "10.77.0.100")
    })
    .expect("one holder");
    wait_until(Duration::from_secs(2), "B BACKUP again", || {
        daemon_b.state() == Some(State::Backup)
    })
    .expect("B backs off");
    assert!(has_address(&a, "eth1", "10.77.0.100") && !has_address(&b, "eth1", "10.77.0.100"));
    let b_history = transitions(&daemon_b);
    let back = b_history
        .iter()
        .rev()
        .find(|t| t.1 == State::Master && t.2 == State::Backup)
        .unwrap_or_else(|| panic!("B's hand-back is in its history: {b_history:?}"));
    // Both held the VIP from A's wake-up until B heard A's first advert:
    // at most one advert interval (10 ms), plus ms rounding and scheduling.
    let overlap = back.0.saturating_sub(resumed);
    assert!(overlap <= 25, "two holders for {overlap} ms after SIGCONT");
    // Nothing lost: B went BACKUP → MASTER → BACKUP; A never left MASTER.
    let kinds: Vec<(State, State)> = b_history.iter().map(|t| (t.1, t.2)).collect();
    assert!(
        kinds.ends_with(&[
            (State::Backup, State::Master),
            (State::Master, State::Backup)
        ]),
        "{kinds:?}"
    );
    let a_history = transitions(&daemon_a);
    assert_eq!(
        a_history.last().map(|t| t.2),
        Some(State::Master),
        "{a_history:?}"
    );
    assert!(
        a_history
            .iter()
            .all(|t| t.0 < resumed - 2000 || t.2 == State::Master),
        "A did not flap after waking: {a_history:?}"
    );
}

/// A and B joined through a lossy wire.
fn lossy_lab(
    impairment: wimark_ha_tests::wire::Impairment,
) -> (
    wimark_ha_tests::lab::Lab,
    String,
    String,
    wimark_ha_tests::wire::LossyWire,
) {
    wimark_ha_tests::wire::two_servers_on_a_lossy_wire(impairment).expect("lossy lab")
}

/// What one run over the lossy wire showed.
struct LossRun {
    /// B's takeovers while A lived.
    takeovers: usize,
    /// The share of frames the wire dropped.
    dropped: f64,
    /// Silences of A's stream at B of at least `multiplier` fast intervals
    /// that the loss did not make: fewer than half the adverts in them were
    /// dropped, so the frames were not there to drop — A's sender or the
    /// wire's copier stalled (this VM takes vCPUs away for up to ~20 ms).
    stalls: Vec<(f64, u64)>,
    /// Silences of that length the loss made (at least half their adverts
    /// dropped).
    loss_silences: usize,
}

/// Runs A (200) and B (100) over a wire with `impairment` and fast
/// detection `1ms × multiplier` for `seconds`, capturing what reaches B.
/// With `name_peers` each names the other in `peers` (as the packaged
/// config does): no priority skew, the window alone; without, B's fast rule
/// waits its skew too.
fn false_takeovers(
    loss: f64,
    jitter_ms: u64,
    multiplier: u32,
    seconds: u64,
    name_peers: bool,
) -> LossRun {
    let impairment = wimark_ha_tests::wire::Impairment {
        loss,
        jitter: Duration::from_millis(jitter_ms),
    };
    let (_lab, a, b, wire) = lossy_lab(impairment);
    let settings = |peer: &str| {
        let peers = if name_peers {
            format!("\npeers = [\"{peer}\"]")
        } else {
            String::new()
        };
        format!(
            "version = 3\nadvert_interval = \"10ms\"\nvirtual_ips = [\"10.77.0.100/24\"]\nfast_detect = {{ interval = \"1ms\", multiplier = {multiplier} }}{peers}"
        )
    };
    let (a_settings, b_settings) = (settings("10.77.0.2"), settings("10.77.0.1"));
    let (_daemon_a, daemon_b) = settled_pair(
        (&a, &b),
        "loss",
        |s| config(s, 200, &a_settings),
        |s| config(s, 100, &b_settings),
    );
    let before = transitions(&daemon_b).len();
    let capture = wimark_ha_tests::capture::Capture::start(&b, "eth1").expect("capture at B");
    std::thread::sleep(Duration::from_secs(seconds));
    let takeovers = transitions(&daemon_b)[before..]
        .iter()
        .filter(|t| t.2 == State::Master)
        .count();
    let dropped = wire.dropped.load(std::sync::atomic::Ordering::Relaxed) as f64;
    let forwarded = wire.forwarded.load(std::sync::atomic::Ordering::Relaxed) as f64;
    let a: std::net::IpAddr = "10.77.0.1".parse().expect("ip");
    let mut heard: Vec<u64> = capture
        .records()
        .into_iter()
        .filter_map(|(at, seen)| match seen {
            wimark_ha_tests::capture::Seen::Advert { source, .. } if source == a => Some(at),
            _ => None,
        })
        .collect();
    heard.sort_unstable();
    let drop_times = wire.drop_times.lock().map(|t| t.clone()).unwrap_or_default();
    let (mut stalls, mut loss_silences) = (Vec::new(), 0);
    for w in heard.windows(2) {
        let gap_ms = (w[1] - w[0]) as f64 / 1e6;
        if gap_ms < f64::from(multiplier) {
            continue;
        }
        let drops = drop_times.iter().filter(|&&t| t > w[0] && t < w[1]).count() as u64;
        if (drops as f64) < (gap_ms - 1.0) / 2.0 {
            stalls.push((gap_ms, drops));
        } else {
            loss_silences += 1;
        }
    }
    LossRun {
        takeovers,
        dropped: dropped / (dropped + forwarded).max(1.0),
        stalls,
        loss_silences,
    }
}

/// The documented `fast_detect.multiplier` per loss rate (operator's guide):
/// no false failover at those settings, and the wire really was that lossy.
/// The control: at 30 % loss the default multiplier 3 does flap.
#[test]
fn loss_and_jitter_on_the_peer_link_cause_no_false_failover_at_the_documented_settings() {
    for (loss, jitter_ms, multiplier) in [(0.01, 0, 8), (0.05, 0, 10), (0.30, 0, 25), (0.0, 20, 30)]
    {
        let run = false_takeovers(loss, jitter_ms, multiplier, 8, false);
        assert!(
            (run.dropped - loss).abs() <= loss * 0.3 + 0.002,
            "the wire dropped {:.3}, meant {loss}",
            run.dropped
        );
        // What is tested is loss: a takeover after a silence that no loss
        // made (the frames were never there, a stall) is the window doing
        // its job, and is printed, not failed; one more takeover than such
        // silences is loss taken for death.
        if !run.stalls.is_empty() {
            eprintln!(
                "{loss} loss, multiplier {multiplier}: {} takeover(s); silences no loss made, (ms, drops in them): {:?}",
                run.takeovers, run.stalls
            );
        }
        assert!(
            run.takeovers <= run.stalls.len(),
            "false failover at {loss} loss, 0–{jitter_ms} ms jitter, multiplier {multiplier}: {} takeover(s), {} silence(s) no loss made: {:?}",
            run.takeovers,
            run.stalls.len(),
            run.stalls
        );
    }
    // The control, with the window alone (peers named: no skew, which at
    // 20 ms x 156/256 would absorb what it is there to show): loss alone
    // takes a live master for dead.
    let run = false_takeovers(0.30, 0, 3, 3, true);
    assert!(
        run.takeovers > 0 && run.loss_silences > 0,
        "the control: 30 % loss with multiplier 3 must flap, on silences the loss made ({} takeover(s), {} such silence(s), stalls {:?})",
        run.takeovers,
        run.loss_silences,
        run.stalls
    );
}

#[test]
fn the_control_socket_refuses_other_users() {
    let (_lab, a, _b) = two_servers(true).expect("lab");
    let daemon = Daemon::start(&a, "ctl-a", |s| config(s, 200, FAST)).expect("A");
    wait_until(Duration::from_secs(5), "A MASTER", || {
        daemon.state() == Some(State::Master)
    })
    .expect("A master");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&daemon.socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "root only: {mode:o}");
    // Even with the directory open to it, nobody cannot ask for status or
    // a switchover.
    for command in [&["status"][..], &["switchover"][..]] {
        let output = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(wimark_ha_tests::wimark_ha_bin())
            .args(command)
            .arg("--socket")
            .arg(&daemon.socket)
            .output()
            .expect("setpriv");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{command:?} as nobody: {stderr}");
        assert!(
            stderr.to_lowercase().contains("permission denied"),
            "a clear refusal: {stderr}"
        );
    }
    assert_eq!(daemon.state(), Some(State::Master), "nothing changed");
}

/// The wimark-ha CLI against `daemon`'s control socket.
fn cli(daemon: &Daemon, args: &[&str]) -> std::process::Output {
    std::process::Command::new(wimark_ha_tests::wimark_ha_bin())
        .args(args)
        .arg("--socket")
        .arg(&daemon.socket)
        .output()
        .expect("wimark-ha CLI")
}

#[test]
fn a_restart_in_place_keeps_mastership_and_the_peer_waits() {
    let with_hold = |s: &std::path::Path| {
        config(s, 200, FAST).replacen("[daemon]\n", "[daemon]\nrestart_hold = \"3s\"\n", 1)
    };
    let (_lab, a, b) = two_servers(true).expect("lab");
    let (mut daemon_a, daemon_b) =
        settled_pair((&a, &b), "hold", with_hold, |s| config(s, 100, FAST));
    let pid = daemon_a.child.as_ref().map(|c| c.id()).expect("A's pid");

    // A config that would not load: refused, nothing happens.
    let good = std::fs::read_to_string(&daemon_a.config).expect("config");
    std::fs::write(
        &daemon_a.config,
        good.replace("priority = 200", "priority = 300"),
    )
    .expect("break config");
    let refused = cli(&daemon_a, &["restart"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "a broken config must refuse the restart"
    );
    assert!(
        stderr.contains("not restarting") && stderr.contains("priority"),
        "{stderr}"
    );
    assert_eq!(daemon_a.state(), Some(State::Master));
    std::fs::write(&daemon_a.config, &good).expect("restore config");

    // Watch the VIP on both servers through the restart.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (a, b, stop) = (a.clone(), b.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut a_without, mut b_with, mut looks) = (0, 0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                a_without += usize::from(!has_address(&a, "eth1", "10.77.0.100"));
                b_with += usize::from(has_address(&b, "eth1", "10.77.0.100"));
                looks += 1;
            }
            (a_without, b_with, looks)
        })
    };
    let asked = unix_ms();
    let restarted = cli(&daemon_a, &["restart"]);
    let stdout = String::from_utf8_lossy(&restarted.stdout);
    assert!(
        restarted.status.success(),
        "{stdout}{}\nlog: {}",
        String::from_utf8_lossy(&restarted.stderr),
        daemon_a.log()
    );
    assert!(stdout.contains("WIM1: MASTER"), "{stdout}");
    // Settle: B must not take over when its (fast) wait would have ended.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (a_without, b_with, looks) = watcher.join().expect("watcher");
    assert!(looks > 10, "the VIP watcher looked {looks} times");
    assert_eq!(
        (a_without, b_with),
        (0, 0),
        "the VIP moved during the restart ({looks} looks)"
    );

    // The same process (exec in place), a new start, mastership resumed.
    assert_eq!(
        daemon_a.child.as_mut().and_then(|c| c.try_wait().ok()),
        Some(None)
    );
    assert_eq!(daemon_a.child.as_ref().map(|c| c.id()), Some(pid));
    let status = daemon_a.status().expect("A status");
    assert!(
        status.started_unix_ms >= asked,
        "{}",
        status.started_unix_ms
    );
    let since: Vec<(State, State, Reason)> = status.instances[0]
        .history
        .iter()
        .filter(|t| t.at_unix_ms >= asked)
        .map(|t| (t.from, t.to, t.reason))
        .collect();
    assert_eq!(
        since,
        [(State::Initialize, State::Master, Reason::RestartHold)]
    );
    assert!(
        !daemon_a.state_dir().join("restart-hold.json").exists(),
        "the hold is used once"
    );
    // The journal agrees: A never left MASTER across the restart.
    daemon_a.expect_moves(&["INIT->BACKUP", "BACKUP->MASTER", "INIT->MASTER"]);
    // The peer never moved, and judges A by fast detection again: a kill
    // now is noticed within milliseconds.
    let b_moves: Vec<State> = transitions(&daemon_b).into_iter().map(|t| t.2).collect();
    assert_eq!(b_moves, [State::Backup], "B flapped during the restart");
    // A's resumed stream is a new one: B arms after its warm-up.
    daemon_b.wait_fast_rule_armed().expect("armed again");
    daemon_a.signal(libc::SIGKILL);
    wait_until(Duration::from_secs(2), "B MASTER", || {
        daemon_b.state() == Some(State::Master)
    })
    .expect("B takes over");
    let takeover = daemon_b.last_transition();
    assert_eq!(takeover.reason, Reason::FastDetect, "{takeover:?}");
}

#[test]
fn a_restart_whose_new_process_cannot_start_releases_the_held_vip() {
    // What a restart in place leaves (the VIP on the interface, the hold
    // file), and a config the new process cannot read: it must exit with
    // the reason and take the VIP down, or the VIP would outlive the hold
    // beside the peer's.
    let (_lab, a, _b) = two_servers(true).expect("lab");
    wimark_ha_tests::lab::ip(&["-n", &a, "addr", "add", "10.77.0.100/24", "dev", "eth1"])
        .expect("held VIP");
    let scratch = wimark_ha_tests::Scratch::new("hold-bad-config");
    let state = scratch.0.join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let hold = serde_json::json!([{
        "instance": "WIM1",
        "interface": "eth1",
        "vrid": 67,
        "virtual_ips": ["10.77.0.100"],
        "until_unix_ms": unix_ms() + 5_000,
    }]);
    std::fs::write(state.join("restart-hold.json"), hold.to_string()).expect("hold file");
    let bad = scratch.0.join("wimark-ha.toml");
    std::fs::write(
        &bad,
        config(&scratch.0.join("c.sock"), 200, FAST).replace("vrid = 67", "vrid = 0"),
    )
    .expect("config");
    let output = wimark_ha_tests::lab::in_netns(&a, {
        let (bad, state) = (bad.clone(), state.clone());
        move || {
            std::process::Command::new(wimark_ha_tests::wimark_ha_bin())
                .args(["run", "--config"])
                .arg(&bad)
                .arg("--state-dir")
                .arg(&state)
                .output()
        }
    })
    .expect("netns")
    .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a bad config must stop the start");
    assert!(stderr.contains("vrid"), "{stderr}");
    assert!(
        !has_address(&a, "eth1", "10.77.0.100"),
        "the held VIP outlived a failed start: {stderr}"
    );
    assert!(
        !state.join("restart-hold.json").exists(),
        "the hold is used once"
    );
}
