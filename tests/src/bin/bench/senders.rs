//! The sender-side gaps of the fast advert stream (issue 13, item 1): a
//! capture on the active node's own link stamps every advert as it leaves,
//! so the gaps are the sender's alone — one sender thread against one per
//! CPU, idle and with both cores saturated, side by side in one run — and
//! beside them the detection window the backup's `multiplier = "auto"`
//! chose from the same stream.

use std::{thread, time::Duration};

use anyhow::Result;
use wimark_ha::vrrp::Multiplier;
use wimark_ha_tests::{
    capture::{Capture, Seen},
    failover_lab::{describe_window, FailoverLab, Pair, SERVER_A},
};

struct Row {
    senders: &'static str,
    stressed: bool,
    gaps_ms: Vec<f64>,
    window: String,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn measure(senders: &'static str, stressed: bool, seconds: u64) -> Result<Row> {
    let daemon = format!("advert_senders = {senders}");
    let mut lab = FailoverLab::with_daemon(
        Pair::WimarkHaFast,
        Default::default(),
        Multiplier::Auto,
        &daemon,
    )?;
    if stressed {
        lab.saturate()?;
    }
    let capture = Capture::start(&lab.a, "eth1")?;
    thread::sleep(Duration::from_secs(seconds));
    let source = std::net::IpAddr::V4(SERVER_A);
    let stamps: Vec<u64> = capture
        .records()
        .into_iter()
        .filter_map(|(at, seen)| match seen {
            Seen::Advert { source: s, .. } if s == source => Some(at),
            _ => None,
        })
        .collect();
    let mut gaps_ms: Vec<f64> = stamps
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]) as f64 / 1e6)
        .collect();
    gaps_ms.sort_by(|a, b| a.total_cmp(b));
    // What the daemons said meanwhile (a lease that ran out, a false
    // takeover), for the reader of the bench's stderr.
    for (server, name) in [(0, "active"), (1, "standby")] {
        if let Some(daemon) = lab.daemon(server) {
            for line in daemon.log().lines().filter(|l| l.contains("WARN") || l.contains("false takeover")) {
                eprintln!("bench senders {senders} {}: {name}: {line}", if stressed { "saturated" } else { "idle" });
            }
        }
    }
    let window = lab
        .daemon(1)
        .and_then(|d| d.instance().ok())
        .and_then(|i| i.detection)
        .map(|d| describe_window(&d))
        .unwrap_or_else(|| "-".to_string());
    Ok(Row {
        senders,
        stressed,
        gaps_ms,
        window,
    })
}

pub fn run(seconds: u64) -> Result<()> {
    let mut rows = Vec::new();
    for stressed in [false, true] {
        for senders in ["1", "\"auto\""] {
            rows.push(measure(senders, stressed, seconds)?);
        }
    }
    println!("## Sender-side gaps of the fast stream ({seconds} s per row, captured on the active node's own link)\n");
    println!("| `advert_senders` | load | adverts | gap p50 / p99 / p99.9 / max (ms) | gaps > 2 ms | > 3 ms | > 5 ms | the backup's auto window at the end |");
    println!("|---|---|---:|---|---:|---:|---:|---|");
    for row in &rows {
        let g = &row.gaps_ms;
        let over = |ms: f64| g.iter().filter(|v| **v > ms).count();
        println!(
            "| {} | {} | {} | {:.2} / {:.2} / {:.2} / {:.2} | {} | {} | {} | {} |",
            row.senders,
            if row.stressed { "both cores saturated" } else { "idle" },
            g.len() + 1,
            quantile(g, 0.5),
            quantile(g, 0.99),
            quantile(g, 0.999),
            g.last().copied().unwrap_or(f64::NAN),
            over(2.0),
            over(3.0),
            over(5.0),
            row.window
        );
    }
    println!();
    Ok(())
}
