//! `bench aps -- --load N`: what a fleet's traffic costs the daemons
//! (issue 29). N AP addresses, 250 to a namespace one routed hop away (the
//! fleet lab's), each sending `pps` ESP-in-UDP datagrams a second to the
//! VIP's NAT-T port, as its tunnel's traffic reaches the master's XDP
//! monitor; beside the same pair with no AP traffic, measured in the same
//! run. Per phase: CPU (% of one core, from each thread's schedstat) and
//! RSS of both daemons, and the AP table sync's bytes a second as the
//! standby's link receives them (its bytes minus the idle phase's, which
//! are the adverts). No IKE daemon: nothing here answers the datagrams, so
//! what is measured is the monitor's and the sync's share, not ESP's.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use wimark_ha::records::State;
use wimark_ha_tests::{
    ap_clients::{spawn_in_netns, write_sync_key, ApLab, VIP},
    daemon::{config, wait_until, Daemon, FAST},
    soak::{process_use, ProcessUse},
};

/// One phase's figures.
struct Phase {
    name: String,
    sent_per_second: f64,
    active: (f64, ProcessUse),
    standby: (f64, ProcessUse),
    standby_rx_per_second: f64,
    synced_aps: usize,
}

fn rx_bytes(namespace: &str) -> Result<u64> {
    let out = std::process::Command::new("ip")
        .args(["-n", namespace, "-j", "-s", "link", "show", "eth1"])
        .output()?;
    let links: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    links[0]["stats64"]["rx"]["bytes"]
        .as_u64()
        .context("no rx bytes in `ip -j -s link`")
}

fn pid(daemon: &Daemon) -> Result<u32> {
    daemon.pid().context("daemon not running")
}

/// Measures both daemons over `seconds` while `sent` counts datagrams.
fn measure(
    name: &str,
    a: &Daemon,
    b: &Daemon,
    lab: &ApLab,
    sent: &AtomicU64,
    seconds: u64,
) -> Result<Phase> {
    let (pid_a, pid_b) = (pid(a)?, pid(b)?);
    let (use_a, use_b) = (process_use(pid_a), process_use(pid_b));
    let rx = rx_bytes(&lab.b)?;
    let sent_before = sent.load(Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let took = started.elapsed().as_secs_f64();
    let (after_a, after_b) = (process_use(pid_a), process_use(pid_b));
    let rx_after = rx_bytes(&lab.b)?;
    let synced_aps = b
        .status()
        .ok()
        .and_then(|s| s.ap_sync)
        .map_or(0, |sync| sync.synced_aps);
    Ok(Phase {
        name: name.to_string(),
        sent_per_second: (sent.load(Ordering::Relaxed) - sent_before) as f64 / took,
        active: (100.0 * after_a.cpu_since(&use_a) / took, after_a),
        standby: (100.0 * after_b.cpu_since(&use_b) / took, after_b),
        standby_rx_per_second: (rx_after - rx) as f64 / took,
        synced_aps,
    })
}

/// Every AP of the lab sends `pps` datagrams a second to VIP:4500 from its
/// own address and port 4500, one thread per namespace, until `stop`.
fn start_traffic(
    lab: &ApLab,
    pps: u32,
    stop: &Arc<AtomicBool>,
    sent: &Arc<AtomicU64>,
) -> Result<Vec<std::thread::JoinHandle<()>>> {
    let vip: Ipv4Addr = VIP.parse()?;
    let mut threads = Vec::new();
    for (namespace, aps) in lab.by_namespace() {
        let sources: Vec<Ipv4Addr> = aps
            .iter()
            .map(|n| lab.own[n - 1].parse())
            .collect::<std::result::Result<_, _>>()?;
        let sent = sent.clone();
        threads.push(spawn_in_netns(namespace, stop.clone(), move |stop| {
            let sockets: Vec<(u32, UdpSocket)> = sources
                .iter()
                .enumerate()
                .filter_map(|(i, source)| {
                    let socket = UdpSocket::bind(SocketAddr::from((*source, 4500))).ok()?;
                    Some((0x1000 + i as u32, socket))
                })
                .collect();
            // An ESP packet's size on the wire as an AP's keepalive-sized
            // data: SPI, sequence number, 100 bytes.
            let mut datagram = [0u8; 108];
            let round = Duration::from_secs(1) / pps.max(1);
            let started = Instant::now();
            let mut rounds = 0u32;
            let mut sequence = 0u32;
            while !stop.load(Ordering::Relaxed) {
                sequence = sequence.wrapping_add(1);
                for (spi, socket) in &sockets {
                    datagram[..4].copy_from_slice(&spi.to_be_bytes());
                    datagram[4..8].copy_from_slice(&sequence.to_be_bytes());
                    if socket.send_to(&datagram, (vip, 4500)).is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                rounds += 1;
                if let Some(wait) =
                    (started + round * rounds).checked_duration_since(Instant::now())
                {
                    std::thread::sleep(wait);
                }
            }
        })?);
    }
    Ok(threads)
}

pub fn run(count: usize, pps: u32, seconds: u64) -> Result<()> {
    let lab = ApLab::fleet(count)?;
    let scratch = wimark_ha_tests::Scratch::new("bench-load");
    let key = write_sync_key(&scratch.0)?;
    let body = |peer: &str| {
        format!(
            "{FAST}\n\n[ap_recovery]\nsync_key_file = \"{}\"\nsync_peer = \"{peer}\"\nmax_aps = {}\n",
            key.display(),
            count.max(wimark_ha_common::abi::AP_TABLE_DEFAULT_APS as usize)
        )
    };
    let (body_a, body_b) = (body("10.77.0.2"), body("10.77.0.1"));
    let a = Daemon::start(&lab.a, "load-a", |s| config(s, 200, &body_a))?;
    wait_until(Duration::from_secs(5), "A MASTER", || {
        a.state() == Some(State::Master)
    })
    .with_context(|| a.log())?;
    let b = Daemon::start(&lab.b, "load-b", |s| config(s, 100, &body_b))?;
    wait_until(Duration::from_secs(5), "B BACKUP", || {
        b.state() == Some(State::Backup)
    })
    .with_context(|| b.log())?;
    // The start-up peak behind us before anything is measured.
    std::thread::sleep(Duration::from_secs(3));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let idle = measure("no AP traffic", &a, &b, &lab, &sent, seconds)?;
    let threads = start_traffic(&lab, pps, &stop, &sent)?;
    // The table fills and the standby has every AP before measuring.
    let filled = wait_until(
        Duration::from_secs(30) + Duration::from_millis(5) * count as u32,
        "B has every AP",
        || {
            b.status()
                .ok()
                .and_then(|s| s.ap_sync)
                .is_some_and(|sync| sync.synced_aps == count)
        },
    );
    let loaded = filled.and_then(|()| {
        measure(
            &format!("{count} APs x {pps} datagrams/s"),
            &a,
            &b,
            &lab,
            &sent,
            seconds,
        )
    });
    // `status` with a full table, as an operator reads it (issue 29,
    // item 5: readable at 5 000).
    let status_started = Instant::now();
    let status_a = wimark_ha_tests::daemon::status_text(&lab.a, &a.socket);
    let status_b = wimark_ha_tests::daemon::status_text(&lab.b, &b.socket);
    let status_took = status_started.elapsed() / 2;
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    let loaded = loaded.with_context(|| format!("B: {:?}", b.status().map(|s| s.ap_sync)))?;
    if loaded.sent_per_second < 0.9 * (count as f64 * f64::from(pps)) {
        eprintln!(
            "bench load: the generator reached {:.0} datagrams/s of {} asked",
            loaded.sent_per_second,
            count as u32 * pps
        );
    }
    println!("## The daemons' cost with a fleet's traffic (`cargo xtask bench aps -- --load {count} --pps {pps} --seconds {seconds}`)\n");
    println!("{count} AP addresses one routed hop from the servers, 250 to a namespace, each sending {pps} ESP-in-UDP datagrams (108 bytes) a second to VIP:4500; two daemons with `[ap_recovery]` (max_aps {count}), the packaged fast detection; {seconds} s per phase, the same run. CPU: % of one core (schedstat, every thread); sync: the standby link's received bytes a second beyond the idle phase's (adverts).\n");
    println!("| phase | datagrams/s | active CPU | active RSS | standby CPU | standby RSS | standby link rx | APs synced |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for phase in [&idle, &loaded] {
        println!(
            "| {} | {:.0} | {:.2} % | {:.1} MiB | {:.2} % | {:.1} MiB | {:.0} B/s | {} |",
            phase.name,
            phase.sent_per_second,
            phase.active.0,
            phase.active.1.rss_kib as f64 / 1024.0,
            phase.standby.0,
            phase.standby.1.rss_kib as f64 / 1024.0,
            phase.standby_rx_per_second,
            phase.synced_aps,
        );
    }
    let delta = loaded.active.0 - idle.active.0;
    println!(
        "\nThe active daemon with the fleet's traffic: {delta:+.2} % of a core beside its idle figure (target: within 1 %); the sync: {:.0} B/s.",
        loaded.standby_rx_per_second - idle.standby_rx_per_second
    );
    println!(
        "`wimark-ha status` with {count} APs: the active's {} lines ({} bytes), the standby's {} lines ({} bytes), ~{} ms each.",
        status_a.lines().count(),
        status_a.len(),
        status_b.lines().count(),
        status_b.len(),
        status_took.as_millis()
    );
    for line in status_b.lines().filter(|l| l.contains("AP")).take(6) {
        println!("    {line}");
    }
    if loaded.synced_aps != count {
        bail!("B had {} of {count} APs at the end", loaded.synced_aps);
    }
    Ok(())
}
