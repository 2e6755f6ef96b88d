//! Soak runs: a pair left running (optionally with every core saturated by
//! stress-ng in both servers' namespaces) while the capture on the bridge
//! watches for a false takeover, and the daemons' RSS and CPU are measured.
//! Used by the short CI test and by `cargo xtask soak cpu`.

use std::time::{Duration, Instant};

use anyhow::Result;
use wimark_ha::{records::Reason, vrrp::Multiplier};

use crate::{
    daemon::{config, wait_until, Daemon},
    failover_lab::{FailoverLab, Pair, SERVER_B},
};

/// Memory and CPU time of a process and its direct children.
#[derive(Clone, Debug, Default)]
pub struct ProcessUse {
    /// VmRSS now: what it holds in its steady state.
    pub rss_kib: u64,
    /// VmHWM: the most it ever held (wimark-ha peaks at start-up, while
    /// aya's loader parses the kernel's BTF).
    pub peak_rss_kib: u64,
    /// Time on a CPU, from each thread's schedstat (nanosecond accounting:
    /// utime/stime are sampled at the tick and miss a thread that wakes
    /// briefly a thousand times a second, in either direction).
    pub cpu_seconds: f64,
    /// Each thread's share of it (ns), by `(pid, tid)`: a thread that
    /// exits takes its time with it, so use over a run is summed thread
    /// by thread ([`ProcessUse::cpu_since`]), not as the difference of two
    /// totals (which went negative when a start-up thread exited).
    threads: std::collections::BTreeMap<(u32, u32), u64>,
}

impl ProcessUse {
    /// CPU seconds used since `before`, by the threads alive now.
    pub fn cpu_since(&self, before: &ProcessUse) -> f64 {
        self.threads
            .iter()
            .map(|(tid, ns)| ns.saturating_sub(before.threads.get(tid).copied().unwrap_or(0)))
            .sum::<u64>() as f64
            / 1e9
    }
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|candidate| {
            std::fs::read_to_string(format!("/proc/{candidate}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(')')?.1;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

fn one(pid: u32) -> ProcessUse {
    // The first field of schedstat: ns on a CPU, per thread (threads that
    // already exited are not counted; the daemons' long-lived ones are).
    let threads: std::collections::BTreeMap<(u32, u32), u64> =
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|task| {
                let tid = task.file_name().to_str()?.parse::<u32>().ok()?;
                let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
                Some(((pid, tid), stat.split_whitespace().next()?.parse::<u64>().ok()?))
            })
            .collect();
    let cpu_ns: u64 = threads.values().sum();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    ProcessUse {
        rss_kib: kib("VmRSS:"),
        peak_rss_kib: kib("VmHWM:"),
        cpu_seconds: cpu_ns as f64 / 1e9,
        threads,
    }
}

/// `pid` and its children, summed.
pub fn process_use(pid: u32) -> ProcessUse {
    let mut total = one(pid);
    for child in children(pid) {
        let c = one(child);
        total.rss_kib += c.rss_kib;
        total.peak_rss_kib += c.peak_rss_kib;
        total.cpu_seconds += c.cpu_seconds;
        total.threads.extend(c.threads);
    }
    total
}

/// What one soak showed.
#[derive(Debug)]
pub struct SoakFigures {
    pub pair: &'static str,
    pub multiplier: Multiplier,
    pub seconds: f64,
    pub stressed: bool,
    /// Adverts the standby (B) sent: any means it took over falsely.
    pub standby_adverts: usize,
    /// Memory at the end and % of one core, of the active and the standby
    /// daemon.
    pub active: (ProcessUse, f64),
    pub standby: (ProcessUse, f64),
    /// The standby's own account of any transition (wimark-ha only).
    pub standby_transitions: Vec<String>,
    /// The standby's detection window at the end and what it rests on.
    pub standby_window: Option<String>,
    /// The active node's own stream, as its senders measured it: a false
    /// takeover whose silence it matches was the active node's stall.
    pub active_send_gaps: Option<wimark_ha::records::SendGapStatus>,
    /// Both daemons' warnings (wimark-ha only).
    pub warnings: Vec<String>,
}

/// Runs `pair` for `duration` (with stress-ng on both servers if
/// `stressed`); `multiplier` is wimark-ha's fast-detection multiplier.
pub fn soak(
    pair: Pair,
    duration: Duration,
    stressed: bool,
    multiplier: Multiplier,
) -> Result<SoakFigures> {
    let lab = FailoverLab::with_options(pair, Default::default(), multiplier)?;
    let pids = lab.pids();
    let (Some(active), Some(standby)) = (pids[0], pids[1]) else {
        anyhow::bail!("the pair's processes are not running");
    };
    let before = (process_use(active), process_use(standby));
    let b_adverts_before = lab.adverts_from(SERVER_B);
    let load = if stressed {
        vec![crate::lab::stress(&lab.a)?, crate::lab::stress(&lab.b)?]
    } else {
        Vec::new()
    };
    let started = Instant::now();
    std::thread::sleep(duration);
    let seconds = started.elapsed().as_secs_f64();
    drop(load);
    let history_len = |lab: &FailoverLab| {
        lab.daemon(1)
            .and_then(|d| d.instance().ok())
            .map(|i| i.history)
            .unwrap_or_default()
    };
    let standby_transitions = history_len(&lab)
        .iter()
        .filter(|t| t.reason != Reason::Startup)
        .map(|t| {
            format!(
                "{} -> {} ({}), silence {:?}",
                t.from, t.to, t.reason, t.silence
            )
        })
        .collect();
    let standby_window = lab
        .daemon(1)
        .and_then(|d| d.instance().ok())
        .and_then(|i| i.detection)
        .map(|d| crate::failover_lab::describe_window(&d));
    let active_send_gaps = lab
        .daemon(0)
        .and_then(|d| d.instance().ok())
        .and_then(|i| i.send_gaps);
    let warnings = [(0, "active"), (1, "standby")]
        .into_iter()
        .filter_map(|(server, name)| Some(lab.daemon(server)?.warnings(name)))
        .flatten()
        .collect();
    let after = (process_use(active), process_use(standby));
    let share = |b: &ProcessUse, a: &ProcessUse| 100.0 * a.cpu_since(b) / seconds;
    Ok(SoakFigures {
        pair: pair.name(),
        multiplier,
        seconds,
        stressed,
        standby_adverts: lab.adverts_from(SERVER_B) - b_adverts_before,
        active: (after.0.clone(), share(&before.0, &after.0)),
        standby: (after.1.clone(), share(&before.1, &after.1)),
        standby_transitions,
        standby_window,
        active_send_gaps,
        warnings,
    })
}

/// The table row of a soak.
pub fn row(f: &SoakFigures) -> String {
    let pair = if f.pair.starts_with("wimark-ha") {
        format!(
            "wimark-ha (VRRPv3 10 ms, fast detection 1 ms {})",
            f.multiplier
        )
    } else {
        f.pair.to_string()
    };
    let side = |(memory, cpu): &(ProcessUse, f64)| {
        format!(
            "{:.1} MiB ({:.1}) / {:.2} %",
            memory.rss_kib as f64 / 1024.0,
            memory.peak_rss_kib as f64 / 1024.0,
            cpu
        )
    };
    format!(
        "| {} | {:.0} s | {} | {} | {} | {} |",
        pair,
        f.seconds,
        if f.stressed {
            "both cores saturated"
        } else {
            "idle"
        },
        f.standby_adverts,
        side(&f.active),
        side(&f.standby),
    )
}

/// What a soak over the lossy wire showed.
#[derive(Debug)]
pub struct LossySoak {
    pub loss: f64,
    pub seconds: f64,
    /// B's takeovers: every one is false (A never failed).
    pub takeovers: usize,
    /// The share of frames the wire dropped.
    pub dropped: f64,
    pub standby_window: Option<String>,
}

/// A (200) and B (100) over a wire dropping `loss` of the frames for
/// `duration`, at `multiplier`; B's takeovers.
pub fn lossy_soak(loss: f64, duration: Duration, multiplier: Multiplier) -> Result<LossySoak> {
    use std::sync::atomic::Ordering::Relaxed;
    let impairment = crate::wire::Impairment {
        loss,
        jitter: Duration::ZERO,
    };
    let (_lab, a, b, wire) = crate::wire::two_servers_on_a_lossy_wire(impairment)?;
    let settings = |peer: &str| {
        format!(
            "version = 3\nadvert_interval = \"10ms\"\nvirtual_ips = [\"10.77.0.100/24\"]\npeers = [\"{peer}\"]\nfast_detect = {{ interval = \"1ms\", multiplier = {} }}",
            crate::failover_lab::multiplier_toml(multiplier)
        )
    };
    let daemon_a = Daemon::start(&a, "lossy-a", |s| config(s, 200, &settings("10.77.0.2")))?;
    wait_until(Duration::from_secs(5), "A MASTER", || {
        daemon_a.state() == Some(wimark_ha::records::State::Master)
    })?;
    let daemon_b = Daemon::start(&b, "lossy-b", |s| config(s, 100, &settings("10.77.0.1")))?;
    daemon_b.wait_fast_rule_armed()?;
    let masters = |d: &Daemon| {
        d.instance()
            .map(|i| {
                i.history
                    .iter()
                    .filter(|t| t.to == wimark_ha::records::State::Master)
                    .count()
            })
            .unwrap_or(0)
    };
    let before = masters(&daemon_b);
    let started = Instant::now();
    std::thread::sleep(duration);
    let dropped = wire.dropped.load(Relaxed) as f64;
    let forwarded = wire.forwarded.load(Relaxed) as f64;
    Ok(LossySoak {
        loss,
        seconds: started.elapsed().as_secs_f64(),
        takeovers: masters(&daemon_b) - before,
        dropped: dropped / (dropped + forwarded).max(1.0),
        standby_window: daemon_b
            .instance()
            .ok()
            .and_then(|i| i.detection)
            .map(|d| crate::failover_lab::describe_window(&d)),
    })
}
