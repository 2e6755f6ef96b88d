//! `cargo xtask bench vip`: a VIP taken off the master by someone else
//! (`ip addr del`, as NetworkManager or networkd reapplying a file does),
//! and how soon the master has it back — wimark-ha beside keepalived 2.2.7
//! (VRRPv3 10 ms), in the same lab.
//!
//! Measured from the kernel's own word: one netlink listener in A's
//! namespace (RTMGRP_IPV4_IFADDR) stamps the RTM_DELADDR and the next
//! RTM_NEWADDR of the VIP on arrival; the figure is the time between them.
//! Both arrive through the same socket, so its scheduling delay cancels out
//! but for its variation — provided the listener is not starved: the
//! daemon's engine runs SCHED_FIFO 50 and would otherwise run its whole
//! restore before the listener read the removal (a first run stamped both
//! 20 µs apart), so the listener runs SCHED_FIFO 99. B (the backup) is
//! watched for a flap.

use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use rtnetlink::{
    constants::RTMGRP_IPV4_IFADDR,
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{address::AddressAttribute, RouteNetlinkMessage},
    sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr},
};
use wimark_ha_tests::{
    daemon::{config, has_address, wait_until, Daemon},
    keepalived::{Instance, Keepalived},
    lab::{enter_netns, ip, netns_path, two_servers},
};

const VIP: &str = "10.77.0.100";

/// The packaged default's shape: fast detection auto, the one peer named.
fn packaged(peer: &str) -> String {
    format!(
        "version = 3\nadvert_interval = \"10ms\"\nvirtual_ips = [\"{VIP}/24\"]\npeers = [\"{peer}\"]\nfast_detect = {{ interval = \"1ms\", multiplier = \"auto\" }}\n"
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Pair {
    WimarkHa,
    Keepalived,
}

/// The VIP's address events in `namespace`, stamped on arrival:
/// (when, present).
fn listen(namespace: &str) -> Result<mpsc::Receiver<(Instant, bool)>> {
    let path = netns_path(namespace);
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready) = mpsc::channel();
    std::thread::spawn(move || {
        let socket = (|| -> Result<Socket> {
            enter_netns(&path)?;
            let param = libc::sched_param { sched_priority: 99 };
            // SAFETY: plain syscall on this thread with a valid parameter.
            if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
                bail!(
                    "SCHED_FIFO for the listener: {}",
                    std::io::Error::last_os_error()
                );
            }
            let mut socket = Socket::new(NETLINK_ROUTE)?;
            socket.bind(&SocketAddr::new(0, RTMGRP_IPV4_IFADDR))?;
            Ok(socket)
        })();
        let socket = match socket {
            Ok(socket) => {
                let _ = ready_tx.send(Ok(()));
                socket
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let vip: std::net::IpAddr = VIP.parse().expect("VIP");
        let mut buffer = Vec::with_capacity(16 * 1024);
        loop {
            buffer.clear();
            if socket.recv(&mut buffer, 0).is_err() {
                return;
            }
            let at = Instant::now();
            let mut datagram = &buffer[..];
            while let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(datagram) {
                let (address, present) = match &message.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a)) => (a, true),
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(a)) => (a, false),
                    _ => {
                        let length = message.header.length as usize;
                        if length == 0 || length >= datagram.len() {
                            break;
                        }
                        datagram = &datagram[length.next_multiple_of(4).min(datagram.len())..];
                        continue;
                    }
                };
                let ours = address
                    .attributes
                    .iter()
                    .any(|a| matches!(a, AddressAttribute::Address(x) if *x == vip));
                if ours && tx.send((at, present)).is_err() {
                    return;
                }
                let length = message.header.length as usize;
                if length == 0 || length >= datagram.len() {
                    break;
                }
                datagram = &datagram[length.next_multiple_of(4).min(datagram.len())..];
            }
        }
    });
    ready
        .recv()
        .context("the address listener thread")?
        .context("the address listener")?;
    Ok(rx)
}

/// One pair, `trials` removals on A: the time from the kernel's removal to
/// the VIP back (ms), each trial; `None` for a trial where it never came
/// back within a second. Also whether B ever held the VIP.
fn run_pair(pair: Pair, trials: usize) -> Result<(Vec<Option<f64>>, bool)> {
    let (_lab, a, b) = two_servers(true)?;
    let _nodes: (Vec<Daemon>, Vec<Keepalived>) = match pair {
        Pair::WimarkHa => {
            let node_a = Daemon::start(&a, "vip-a", |s| config(s, 200, &packaged("10.77.0.2")))?;
            wait_until(Duration::from_secs(5), "A to hold the VIP", || {
                has_address(&a, "eth1", VIP)
            })?;
            let node_b = Daemon::start(&b, "vip-b", |s| config(s, 100, &packaged("10.77.0.1")))?;
            node_b.wait_fast_rule_settled()?;
            (vec![node_a, node_b], Vec::new())
        }
        Pair::Keepalived => {
            let node_a = Keepalived::start(&a, "va", &Instance::v3_10ms(200))?;
            wait_until(Duration::from_secs(5), "A to hold the VIP", || {
                has_address(&a, "eth1", VIP)
            })?;
            let node_b = Keepalived::start(&b, "vb", &Instance::v3_10ms(100))?;
            std::thread::sleep(Duration::from_secs(2));
            (Vec::new(), vec![node_a, node_b])
        }
    };
    if has_address(&b, "eth1", VIP) {
        bail!("B holds the VIP before any trial");
    }
    let events = listen(&a)?;
    let mut times = Vec::new();
    let mut b_held = false;
    for _ in 0..trials {
        while events.try_recv().is_ok() {}
        ip(&["-n", &a, "addr", "del", &format!("{VIP}/24"), "dev", "eth1"])?;
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut removed = None;
        let mut back = None;
        while back.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok((at, present)) = events.recv_timeout(left) else {
                break;
            };
            match (present, removed) {
                (false, None) => removed = Some(at),
                (true, Some(gone)) => back = Some(at.duration_since(gone)),
                _ => {}
            }
        }
        times.push(back.map(|d| d.as_secs_f64() * 1e3));
        if back.is_none() {
            // Put it back by hand so that the next trial starts alike.
            let _ = ip(&["-n", &a, "addr", "add", &format!("{VIP}/24"), "dev", "eth1"]);
        }
        std::thread::sleep(Duration::from_millis(200));
        b_held |= has_address(&b, "eth1", VIP);
    }
    Ok((times, b_held))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn run(trials: usize) -> Result<()> {
    println!("## A VIP removed by someone else (`cargo xtask bench vip -- --trials {trials}`)");
    println!();
    println!("`ip addr del` of the VIP on the master A; from the kernel's RTM_DELADDR to its next RTM_NEWADDR (one");
    println!("netlink listener in A's namespace stamps both). B is the backup; \"B held it\" says whether it ever took the");
    println!("VIP. wimark-ha: the packaged default (auto, `peers`); keepalived 2.2.7: VRRPv3 10 ms.");
    println!();
    println!("| pair | trials | back | min / median / p99 / max (ms) | B held it |");
    println!("|---|---:|---:|---|---|");
    let mut medians = Vec::new();
    for (pair, label) in [
        (Pair::WimarkHa, "wimark-ha"),
        (Pair::Keepalived, "keepalived 2.2.7"),
    ] {
        let (times, b_held) = run_pair(pair, trials)?;
        for (n, t) in times.iter().enumerate() {
            eprintln!("bench vip: {label} trial {}: {t:?} ms", n + 1);
        }
        let mut back: Vec<f64> = times.iter().flatten().copied().collect();
        back.sort_by(|x, y| x.total_cmp(y));
        let figures = if back.is_empty() {
            "never".to_string()
        } else {
            medians.push(percentile(&back, 50.0));
            format!(
                "{:.2} / {:.2} / {:.2} / {:.2}",
                back[0],
                percentile(&back, 50.0),
                percentile(&back, 99.0),
                back[back.len() - 1]
            )
        };
        println!(
            "| {label} | {trials} | {}/{trials} | {figures} | {} |",
            back.len(),
            if b_held { "yes" } else { "no" }
        );
    }
    if let [ours, theirs] = medians[..] {
        println!();
        println!("keepalived / wimark-ha, median: {:.1}x", theirs / ours.max(1e-3));
    }
    Ok(())
}
