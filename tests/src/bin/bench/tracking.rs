//! `cargo xtask bench tracking`: a tracked check failing on the master, to
//! the peer's first gratuitous ARP — wimark-ha's `[[instance.track]]`
//! beside keepalived's `vrrp_script` + `track_script`, in the same lab.
//!
//! Measured on the wire (a capture on A's own link, kernel stamps): from
//! A's first advert carrying its lowered priority — the tracker's decision
//! made visible — to B's first gratuitous ARP for the VIP. The check's own
//! interval (how soon a tracker notices) is left out: it is the operator's
//! setting, 100 ms here for wimark-ha, keepalived's 1 s.

use std::{net::IpAddr, time::Duration};

use anyhow::{bail, Context as _, Result};
use wimark_ha_tests::{
    capture::{Capture, Seen},
    daemon::{config, has_address, wait_until, Daemon},
    flag::CheckFlag,
    keepalived::{Instance, Keepalived},
    lab::two_servers,
};

const VIP: &str = "10.77.0.100";
const A: &str = "10.77.0.1";

/// The packaged default's shape: fast detection auto, the one peer named.
fn packaged(peer: &str) -> String {
    format!(
        "version = 3\nadvert_interval = \"10ms\"\nvirtual_ips = [\"10.77.0.100/24\"]\npeers = [\"{peer}\"]\nfast_detect = {{ interval = \"1ms\", multiplier = \"auto\" }}\n"
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Pair {
    WimarkHa,
    Keepalived,
}

/// One trial: (lowered advert -> GARP) in ms.
fn trial(pair: Pair, tag: &str) -> Result<f64> {
    let (_lab, a, b) = two_servers(true)?;
    let flag = CheckFlag::new(tag);
    // Kept running for the trial, stopped when dropped.
    let _nodes: (Vec<Daemon>, Vec<Keepalived>) = match pair {
        Pair::WimarkHa => {
            let tracked = format!("{}\n{}", packaged("10.77.0.2"), flag.tracker());
            let node_a = Daemon::start(&a, "a", |s| config(s, 200, &tracked))?;
            wait_until(Duration::from_secs(5), "A to hold the VIP", || {
                has_address(&a, "eth1", VIP)
            })?;
            let node_b = Daemon::start(&b, "b", |s| config(s, 150, &packaged(A)))?;
            node_b.wait_fast_rule_settled()?;
            (vec![node_a, node_b], Vec::new())
        }
        Pair::Keepalived => {
            let (script, track) = flag.keepalived_blocks();
            let node_a =
                Keepalived::start_with_blocks(&a, "ta", &Instance::v3_10ms(200), &script, &track)?;
            wait_until(Duration::from_secs(5), "A to hold the VIP", || {
                has_address(&a, "eth1", VIP)
            })?;
            let node_b = Keepalived::start(&b, "tb", &Instance::v3_10ms(150))?;
            std::thread::sleep(Duration::from_secs(2));
            (Vec::new(), vec![node_a, node_b])
        }
    };
    if has_address(&b, "eth1", VIP) {
        bail!("B holds the VIP before the check failed");
    }
    let capture = Capture::start(&a, "eth1")?;
    flag.raise();
    wait_until(Duration::from_secs(10), "B to take the VIP", || {
        has_address(&b, "eth1", VIP)
    })?;
    std::thread::sleep(Duration::from_millis(50));
    let records = capture.records();
    let source: IpAddr = A.parse().expect("address");
    let lowered = records
        .iter()
        .find(|(_, seen)| matches!(seen, Seen::Advert { source: s, priority, .. } if *s == source && *priority < 200))
        .map(|(at, _)| *at)
        .context("no advert with the lowered priority captured")?;
    let garp = records
        .iter()
        .find(|(at, seen)| {
            *at >= lowered
                && matches!(seen, Seen::GratuitousArp { address, .. } if address.to_string() == VIP)
        })
        .map(|(at, _)| *at)
        .context("no gratuitous ARP after it")?;
    Ok((garp - lowered) as f64 / 1e6)
}

pub fn run(trials: usize) -> Result<()> {
    println!("## A tracked check fails on the master (`cargo xtask bench tracking -- --trials {trials}`)");
    println!();
    println!("From A's first advert with its lowered priority to B's first gratuitous ARP, on A's link (kernel stamps).");
    println!("A at 200 drops by 100 when the check fails; B at 150 preempts. wimark-ha: the packaged default (fast");
    println!("detection auto, `peers` naming the other server); keepalived 2.2.7: VRRPv3 10 ms, `vrrp_script` + `track_script`.");
    println!();
    println!("| pair | trials | lowered advert -> peer's GARP min / median / max (ms) |");
    println!("|---|---:|---|");
    let mut medians = Vec::new();
    for (pair, label) in [
        (
            Pair::WimarkHa,
            "wimark-ha -> wimark-ha (`[[instance.track]]`)",
        ),
        (
            Pair::Keepalived,
            "keepalived -> keepalived (`track_script`)",
        ),
    ] {
        let mut times = Vec::new();
        for n in 0..trials {
            let ms = trial(pair, &format!("bench-{n}"))?;
            eprintln!("bench tracking: {label} trial {}: {ms:.2} ms", n + 1);
            times.push(ms);
        }
        times.sort_by(|x, y| x.total_cmp(y));
        let median = times[times.len() / 2];
        medians.push(median);
        println!(
            "| {label} | {trials} | {:.2} / {median:.2} / {:.2} |",
            times[0],
            times[times.len() - 1]
        );
    }
    println!();
    println!(
        "keepalived / wimark-ha, median: {:.1}x",
        medians[1] / medians[0].max(1e-3)
    );
    Ok(())
}
