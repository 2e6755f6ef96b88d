//! `cargo xtask bench xdp`: what the XDP monitor costs and whether it counts
//! exactly, with a userspace AF_PACKET counter measured beside it.
//!
//! 1. Per-packet cost per class: BPF_PROG_TEST_RUN of the real object with a
//!    large repeat count (the kernel reports the mean time per run), minus the
//!    same for a pass-only program in the same object (the harness's own cost).
//! 2. A flood from one lab namespace into the monitored veth, counted by the
//!    XDP program and, on the same interface, by an AF_PACKET socket running
//!    the same classifier in userspace: sent, counted by each, per-class
//!    miscounts, pps, and the userspace counter's CPU time per packet.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};
use wimark_ha::monitor::{Monitor, MonitorOptions};
use wimark_ha_common::{
    abi::{Counter, BASELINE_PROGRAM_NAME},
    classify::classify,
};
use wimark_ha_tests::{
    frames::{catalogue, Case},
    kernel::{run_program, KernelMonitor, XDP_PASS},
    lab::{enter_netns, in_netns, netns_path, Lab},
    require_root,
    sockets::PacketSocket,
};

mod ap_load;
mod ap_trials;
mod aps;
mod fleet;
mod failover;
mod plot;
mod roles;
mod senders;
mod tracking;
mod vip;

#[derive(Parser)]
#[command(name = "wimark-ha-bench", about = "wimark-ha benchmarks")]
struct Cli {
    #[command(subcommand)]
    which: Which,
}

#[derive(Subcommand)]
enum Which {
    /// XDP per-packet cost and flood counting.
    Xdp {
        /// BPF_PROG_TEST_RUN repeats per measurement.
        #[arg(long, default_value_t = 2_000_000)]
        repeat: u32,
        /// Measurements per class (the median is reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Frames in the flood.
        #[arg(long, default_value_t = 1_000_000)]
        flood: u64,
        /// Another build of the kernel object (e.g. the previous commit's),
        /// measured in the same rounds beside the embedded one.
        #[arg(long)]
        compare_object: Option<std::path::PathBuf>,
    },
    /// A tracked check failing on the master, to the peer's first GARP:
    /// wimark-ha's `[[instance.track]]` beside keepalived's track_script.
    Tracking {
        /// Trials per pair.
        #[arg(long, default_value_t = 10)]
        trials: usize,
    },
    /// A VIP removed from the master by someone else, to the VIP back:
    /// wimark-ha beside keepalived.
    Vip {
        /// Removals per pair.
        #[arg(long, default_value_t = 20)]
        trials: usize,
    },
    /// A 5-container stack: wimark-ha's switch beside docker-compose's.
    Roles {
        /// Switches measured each way.
        #[arg(long, default_value_t = 10)]
        trials: usize,
    },
    /// Failover timelines of wimark-ha and keepalived, side by side.
    Failover {
        /// Trials per scenario (wimark-ha, keepalived at 10 ms).
        #[arg(long, default_value_t = 10)]
        trials: usize,
        /// Trials of keepalived with the vendor's 1 s config (slow).
        #[arg(long, default_value_t = 3)]
        vendor_trials: usize,
        /// Where to write the plot of every trial (SVG).
        #[arg(long, default_value = "target/bench/failover-timelines.svg")]
        svg: std::path::PathBuf,
        /// Skip the rows with real AP clients (`bench aps`, 20 APs,
        /// about 7 minutes).
        #[arg(long)]
        no_aps: bool,
        /// Seconds per row of the sender-side gap table (0 skips it).
        #[arg(long, default_value_t = 30)]
        sender_seconds: u64,
    },
    /// Real AP clients (strongSwan) after a node loss: tunnel back per AP,
    /// with and without the AP recovery.
    Aps {
        /// AP clients (each a charon in a namespace of its own).
        #[arg(long, default_value_t = 20)]
        aps: u8,
        /// Seconds to wait for the APs before a row says "> N s".
        #[arg(long, default_value_t = 20)]
        wait: u64,
        /// The AP subscribers' MQTT keepalive (seconds).
        #[arg(long, default_value_t = 5)]
        mqtt_keepalive: u16,
        /// Instead of the table: issue 28's trials through both daemons,
        /// this many per row (2 APs on the LAN and 2 behind one NAT
        /// address, three MQTT connections each; node loss and planned
        /// switchover; strongSwan defaults and DPD 1 s). About 15 s a trial.
        #[arg(long, default_value_t = 0)]
        trials: usize,
        /// Instead of the table: the fleet-size rows (issue 29), N APs 250
        /// to a namespace; repeat for several sizes (`--fleet 200 --fleet
        /// 1000`).
        #[arg(long)]
        fleet: Vec<usize>,
        /// With `--fleet`: both daemons' `mqtt_kick_rate` (default: the
        /// product's).
        #[arg(long)]
        kick_rate: Option<u32>,
        /// With `--fleet`: the same lab with neither daemon's
        /// `[ap_recovery]` (what the VIP's move alone brings back).
        #[arg(long)]
        no_recovery: bool,
        /// With `--fleet`: the IKE proposal of every charon in the lab and
        /// of the adapter (e.g. `aes128-sha256-ecp256`; default
        /// `aes128-sha256-modp2048`).
        #[arg(long)]
        ike_proposal: Option<String>,
        /// Instead of the table: the daemons' CPU, RSS and sync bytes with
        /// N APs sending `--pps` datagrams a second each, beside no AP
        /// traffic (no IKE daemon; issue 29's CPU target).
        #[arg(long)]
        load: Option<usize>,
        /// With `--load`: datagrams a second per AP.
        #[arg(long, default_value_t = 10)]
        pps: u32,
        /// With `--load`: seconds per phase.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Both pairs left running, idle and with every core saturated: false
    /// takeovers, RSS and CPU of each daemon, wimark-ha at 1 ms x 3 and x 10
    /// beside keepalived at 10 ms.
    Soak {
        /// Seconds per row.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Only these rows (repeatable): auto-idle, auto-saturated,
        /// auto-lossy (1 % loss on the lossy wire; auto is the packaged
        /// default), x3-idle, x3-saturated, x10-saturated, x20-saturated,
        /// keepalived-idle, keepalived-saturated.
        #[arg(long)]
        only: Vec<String>,
    },
}

/// The per-packet target of BRIEF §6.
const TARGET_NS: f64 = 30.0;

const CLASSES: &[&str] = &[
    "vrrp v3 ipv4 (pseudo-header checksum)",
    "vrrp v2 vendor config (auth PASS, 1 s)",
    "vrrp v3 ipv6",
    "vrrp v3 in 802.1ad+802.1Q (another VLAN's)",
    "vrrp bad checksum",
    "carp advertisement",
    "ike to the controller",
    "nat-t esp-in-udp",
    "esp",
    "mqtt to the broker",
    "mqtt over tls",
    "dns (other udp)",
    "arp",
];

fn main() -> Result<()> {
    let (repeat, rounds, flood, compare_object) = match Cli::parse().which {
        Which::Xdp {
            repeat,
            rounds,
            flood,
            compare_object,
        } => (repeat, rounds, flood, compare_object),
        Which::Tracking { trials } => {
            require_root("the tracking benchmark");
            return tracking::run(trials.max(1));
        }
        Which::Aps {
            aps,
            wait,
            mqtt_keepalive,
            trials,
            fleet,
            kick_rate,
            no_recovery,
            ike_proposal,
            load,
            pps,
            seconds,
        } => {
            require_root("the AP benchmark");
            if let Some(count) = load {
                return ap_load::run(count, pps, seconds);
            }
            if !fleet.is_empty() {
                let wait = std::time::Duration::from_secs(wait);
                if let Some(proposal) = &ike_proposal {
                    wimark_ha_tests::ap_clients::use_ike_proposal(proposal)?;
                }
                if no_recovery {
                    return fleet::run_without_recovery(&fleet, wait);
                }
                return fleet::run(&fleet, wait, kick_rate);
            }
            if trials > 0 {
                return ap_trials::run(trials, std::time::Duration::from_secs(wait));
            }
            return aps::run(aps, std::time::Duration::from_secs(wait), mqtt_keepalive);
        }
        Which::Vip { trials } => {
            require_root("the VIP benchmark");
            return vip::run(trials.max(1));
        }
        Which::Roles { trials } => {
            require_root("the roles benchmark");
            return roles::run(trials);
        }
        Which::Soak { seconds, only } => {
            require_root("the soak");
            println!("## Soak (`cargo xtask soak cpu --seconds {seconds}`)\n");
            println!("| pair | duration | load | adverts from the standby (false takeovers) | active: RSS (peak) / CPU of one core | standby: RSS (peak) / CPU |");
            println!("|---|---:|---|---:|---|---|");
            use wimark_ha::vrrp::Multiplier::{Auto, Fixed};
            use wimark_ha_tests::failover_lab::Pair;
            let rows = [
                ("auto-idle", Pair::WimarkHaFast, Auto, false),
                ("auto-saturated", Pair::WimarkHaFast, Auto, true),
                ("x3-idle", Pair::WimarkHaFast, Fixed(3), false),
                ("x3-saturated", Pair::WimarkHaFast, Fixed(3), true),
                ("x10-saturated", Pair::WimarkHaFast, Fixed(10), true),
                ("x20-saturated", Pair::WimarkHaFast, Fixed(20), true),
                ("keepalived-idle", Pair::KeepalivedV3Fast, Fixed(3), false),
                ("keepalived-saturated", Pair::KeepalivedV3Fast, Fixed(3), true),
            ];
            if let Some(unknown) = only
                .iter()
                .find(|o| !rows.iter().any(|r| r.0 == o.as_str()) && o.as_str() != "auto-lossy")
            {
                let mut names: Vec<&str> = rows.iter().map(|r| r.0).collect();
                names.push("auto-lossy");
                anyhow::bail!("--only {unknown}: not a row ({})", names.join(", "));
            }
            for (_, pair, multiplier, stressed) in rows
                .into_iter()
                .filter(|r| only.is_empty() || only.iter().any(|o| o == r.0))
            {
                let figures = wimark_ha_tests::soak::soak(
                    pair,
                    std::time::Duration::from_secs(seconds),
                    stressed,
                    multiplier,
                )?;
                println!("{}", wimark_ha_tests::soak::row(&figures));
                if let Some(window) = &figures.standby_window {
                    eprintln!("soak: the standby's detection window at the end: {window}");
                }
                if let Some(gaps) = &figures.active_send_gaps {
                    eprintln!("soak: the active node's own stream: {}", gaps.summary());
                }
                for transition in &figures.standby_transitions {
                    eprintln!("soak: standby transition: {transition}");
                }
            }
            if only.is_empty() || only.iter().any(|o| o == "auto-lossy") {
                let lossy = wimark_ha_tests::soak::lossy_soak(
                    0.01,
                    std::time::Duration::from_secs(seconds),
                    Auto,
                )?;
                println!(
                    "\n1 % loss on the lossy wire, packaged default (auto), {:.0} s: {} false takeover(s); the wire dropped {:.2} % of the frames; the standby's window at the end: {}",
                    lossy.seconds,
                    lossy.takeovers,
                    lossy.dropped * 100.0,
                    lossy.standby_window.as_deref().unwrap_or("-")
                );
            }
            return Ok(());
        }
        Which::Failover {
            trials,
            vendor_trials,
            svg,
            no_aps,
            sender_seconds,
        } => {
            require_root("the failover benchmark");
            // `--trials 0 --vendor-trials 0` runs the sender table alone.
            if trials > 0 || vendor_trials > 0 {
                failover::run(trials, vendor_trials, &svg)?;
            }
            if sender_seconds > 0 {
                senders::run(sender_seconds)?;
            }
            // A failover is over when the APs are back: the same losses
            // in front of real AP clients.
            if !no_aps {
                println!();
                aps::run(20, std::time::Duration::from_secs(20), 5)?;
            }
            return Ok(());
        }
    };
    require_root("the XDP benchmark");
    let cases = catalogue();
    let pick = |name: &str| -> Result<Case> {
        cases
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .with_context(|| format!("no catalogue case {name}"))
    };
    let selected: Vec<Case> = CLASSES.iter().map(|n| pick(n)).collect::<Result<_>>()?;
    per_packet_cost(&selected, repeat, rounds, compare_object.as_deref())?;
    flood_counts(&selected, flood)?;
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn per_packet_cost(
    cases: &[Case],
    repeat: u32,
    rounds: usize,
    compare_object: Option<&std::path::Path>,
) -> Result<()> {
    let mut monitor = KernelMonitor::load()?;
    let baseline: &mut aya::programs::Xdp = monitor
        .ebpf
        .program_mut(BASELINE_PROGRAM_NAME)
        .context("no baseline program in the object")?
        .try_into()?;
    baseline.load().context("loading the baseline program")?;
    let baseline: &aya::programs::Xdp = monitor
        .ebpf
        .program(BASELINE_PROGRAM_NAME)
        .context("baseline")?
        .try_into()?;
    // The other build runs in the same rounds, so the host's drift between
    // runs does not pass for a change of the program.
    let other = match compare_object {
        None => None,
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Some(
                wimark_ha::monitor::load_object(&bytes, None, None)
                    .with_context(|| format!("loading {}", path.display()))?,
            )
        }
    };
    let other_program: Option<&aya::programs::Xdp> = match &other {
        None => None,
        Some(ebpf) => Some(
            ebpf.program(wimark_ha_common::abi::PROGRAM_NAME)
                .context("no monitor program in the other object")?
                .try_into()?,
        ),
    };
    println!(
        "## XDP per-packet cost (BPF_PROG_TEST_RUN, {repeat} repeats x {rounds} rounds, median)\n"
    );
    // How close the program is to the verifier's budget: past it the kernel
    // refuses to load it (E2BIG), so a branch added must be paid for.
    let verified = |ebpf: &aya::Ebpf| -> Option<u32> {
        let program: &aya::programs::Xdp = ebpf.program(wimark_ha_common::abi::PROGRAM_NAME)?.try_into().ok()?;
        program.info().ok()?.verified_instruction_count()
    };
    let shown = |n: Option<u32>| n.map_or("unknown (kernel < 5.16)".to_string(), |n| format!("{n} of 1000000"));
    println!("verifier: instructions processed to load the monitor: {}", shown(verified(&monitor.ebpf)));
    if let Some(other) = &other {
        println!("verifier: the same for the other object: {}", shown(verified(other)));
    }
    println!();
    if let Some(path) = compare_object {
        println!("other object: {} (its cost is its monitor ns minus the same pass-only ns)\n", path.display());
        println!("| class | frame bytes | monitor ns/pkt | other object ns/pkt | pass-only ns/pkt | program cost (difference) | other object's cost | target ≤ {TARGET_NS} ns |");
        println!("|---|---:|---:|---:|---:|---:|---:|---|");
    } else {
        println!("| class | frame bytes | monitor ns/pkt | pass-only ns/pkt | program cost (difference) | target ≤ {TARGET_NS} ns |");
        println!("|---|---:|---:|---:|---:|---|");
    }
    let mut worst: f64 = 0.0;
    for case in cases {
        let mut ours = Vec::new();
        let mut base = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..rounds {
            let run = monitor.run(&case.frame, repeat)?;
            if run.return_value != XDP_PASS {
                bail!(
                    "{}: returned {} instead of XDP_PASS",
                    case.name,
                    run.return_value
                );
            }
            ours.push(run.duration_ns as f64);
            base.push(run_program(baseline, &case.frame, repeat)?.duration_ns as f64);
            if let Some(program) = other_program {
                theirs.push(run_program(program, &case.frame, repeat)?.duration_ns as f64);
            }
        }
        let (ours, base) = (median(ours), median(base));
        let cost = ours - base;
        worst = worst.max(cost);
        let verdict = if cost <= TARGET_NS { "met" } else { "missed" };
        if theirs.is_empty() {
            println!(
                "| {} | {} | {ours:.0} | {base:.0} | {cost:.0} | {verdict} |",
                case.name,
                case.frame.len(),
            );
        } else {
            let theirs = median(theirs);
            println!(
                "| {} | {} | {ours:.0} | {theirs:.0} | {base:.0} | {cost:.0} | {:.0} | {verdict} |",
                case.name,
                case.frame.len(),
                theirs - base,
            );
        }
    }
    println!(
        "\nworst class: {worst:.0} ns/packet for the program itself (target ≤ {TARGET_NS} ns)\n"
    );
    Ok(())
}

/// Counts per class by the AF_PACKET counter thread.
struct UserspaceCount {
    per_class: [u64; Counter::COUNT as usize],
    received: u64,
    kernel_drops: u64,
    cpu: Duration,
}

fn thread_cpu_time() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer; RUSAGE_THREAD is Linux-specific and supported.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn flood_counts(cases: &[Case], total: u64) -> Result<()> {
    let mut lab = Lab::new()?;
    let sender_ns = lab.namespace("flood", false)?;
    let monitored_ns = lab.namespace("mon", false)?;
    lab.veth((&sender_ns, "peer0"), (&monitored_ns, "eth1"))?;

    let mut expected = [0u64; Counter::COUNT as usize];
    for i in 0..total {
        expected[cases[(i % cases.len() as u64) as usize].expected as usize] += 1;
    }

    // The AF_PACKET counter, on the monitored interface.
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let counter = {
        let path = netns_path(&monitored_ns);
        let stop = stop.clone();
        thread::spawn(move || -> Result<UserspaceCount> {
            enter_netns(&path)?;
            let socket = PacketSocket::bind("eth1", true)?;
            socket.set_receive_buffer(64 << 20)?;
            socket.set_receive_timeout(Duration::from_millis(200))?;
            let _ = socket.statistics()?; // reset
            ready_tx.send(()).ok();
            let started = thread_cpu_time();
            let mut count = UserspaceCount {
                per_class: [0; Counter::COUNT as usize],
                received: 0,
                kernel_drops: 0,
                cpu: Duration::ZERO,
            };
            let mut buffer = vec![0u8; 2048];
            loop {
                match socket.receive(&mut buffer)? {
                    Some(n) => {
                        count.per_class
                            [classify(&buffer[..n.min(buffer.len())]).counter() as usize] += 1;
                        count.received += 1;
                    }
                    None if stop.load(Ordering::Relaxed) => break,
                    None => {}
                }
            }
            count.cpu = thread_cpu_time() - started;
            count.kernel_drops = u64::from(socket.statistics()?.1);
            Ok(count)
        })
    };
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("AF_PACKET counter did not start")?;

    // The XDP monitor, attached in the monitored namespace.
    let (attached_tx, attached_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let xdp = {
        let path = netns_path(&monitored_ns);
        thread::spawn(move || -> Result<[u64; Counter::COUNT as usize]> {
            enter_netns(&path)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let monitor = rt.block_on(Monitor::attach("eth1", MonitorOptions::default()))?;
            attached_tx.send(monitor.mode()).ok();
            done_rx.recv().ok();
            let counters = wimark_ha::monitor::read_counters(monitor.ebpf())?;
            Ok(counters.map(|c| c.packets))
        })
    };
    let mode = attached_rx
        .recv_timeout(Duration::from_secs(20))
        .context("XDP monitor did not attach")?;

    let frames: Vec<Vec<u8>> = cases.iter().map(|c| c.frame.clone()).collect();
    let elapsed = in_netns(&sender_ns, move || -> Result<Duration> {
        let socket = PacketSocket::bind("peer0", false)?;
        let started = Instant::now();
        for i in 0..total {
            socket.send(&frames[(i % frames.len() as u64) as usize])?;
        }
        Ok(started.elapsed())
    })??;
    // Let both counters drain, then stop them.
    thread::sleep(Duration::from_millis(500));
    done_tx.send(()).ok();
    stop.store(true, Ordering::Relaxed);
    let by_xdp = xdp
        .join()
        .map_err(|_| anyhow::anyhow!("XDP thread panicked"))??;
    let by_user = counter
        .join()
        .map_err(|_| anyhow::anyhow!("counter thread panicked"))??;
    drop(lab);

    let xdp_total: u64 = Counter::ALL
        .iter()
        .filter(|c| c.is_traffic())
        .map(|c| by_xdp[*c as usize])
        .sum();
    // Events lost are not a traffic class: the flood alternates two adverts
    // of one peer (v3 10 ms, v2 1 s), so every advert is an interval change;
    // with no reader none is queued. Reported on their own line.
    let miscount = |counts: &[u64; Counter::COUNT as usize]| -> u64 {
        Counter::ALL
            .iter()
            .filter(|c| c.is_traffic())
            .map(|c| counts[*c as usize].abs_diff(expected[*c as usize]))
            .sum()
    };
    let pps = total as f64 / elapsed.as_secs_f64();
    println!("## Flood: {total} frames of {} classes, one namespace into the monitored veth (XDP {mode} mode)\n", cases.len());
    println!("| counter | frames counted | per-class miscounts | kernel drops | CPU per frame |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| XDP program (in the veth's NAPI) | {xdp_total} | {} | 0 | see per-packet cost above |",
        miscount(&by_xdp)
    );
    println!(
        "| AF_PACKET socket + same classifier in userspace | {} | {} | {} | {:.0} ns |",
        by_user.received,
        miscount(&by_user.per_class),
        by_user.kernel_drops,
        by_user.cpu.as_nanos() as f64 / by_user.received.max(1) as f64
    );
    println!(
        "\nevents the kernel could not queue during the flood: adverts {}, peer changes {} (no reader: none queued)",
        by_xdp[Counter::AdvertEventsLost as usize],
        by_xdp[Counter::PeerEventsLost as usize]
    );
    println!(
        "sent {total} frames in {:.2} s: {pps:.0} frames/s from one sender thread",
        elapsed.as_secs_f64()
    );
    if miscount(&by_xdp) != 0 || miscount(&by_user.per_class) != 0 {
        for c in Counter::ALL {
            let i = c as usize;
            if c.is_traffic() && (by_xdp[i] != expected[i] || by_user.per_class[i] != expected[i]) {
                println!(
                    "{c:?}: expected {}, XDP {}, AF_PACKET {}",
                    expected[i], by_xdp[i], by_user.per_class[i]
                );
            }
        }
        bail!("a counter miscounted the flood");
    }
    Ok(())
}
