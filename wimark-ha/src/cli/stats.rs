//! `wimark-ha stats`: attach the monitor, print what it counts, detach.

use std::{io::Write as _, time::Duration};

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;
use tokio::{
    signal::unix::{signal, SignalKind},
    time::{sleep_until, Instant},
};

use super::{parse_positive_duration, LogLevel};
use crate::monitor::{
    AttachMode, Monitor, MonitorOptions, PeerChange, Snapshot, TrafficTotals, ACTIVE_AP_WINDOW,
};

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The interface to monitor (the peer interface).
    #[arg(long, value_name = "IFACE")]
    pub iface: String,
    /// Stop after this long (e.g. 5s, 2m). Without it, run until Ctrl-C.
    #[arg(long, value_parser = parse_positive_duration)]
    pub duration: Option<Duration>,
    /// How often to print the live table.
    #[arg(long, default_value = "1s", value_parser = parse_positive_duration)]
    pub interval: Duration,
    /// Print one JSON object at the end instead of live tables.
    #[arg(long)]
    pub json: bool,
    /// Replace an XDP program already attached to the interface.
    #[arg(long)]
    pub force: bool,
}

/// The `--json` output: the snapshot plus how it was taken.
#[derive(Serialize)]
struct JsonReport<'a> {
    #[serde(flatten)]
    snapshot: &'a Snapshot,
    mode: String,
    duration_ms: u64,
    active_ap_window_s: u64,
    /// The latest [`MAX_PEER_EVENTS`] peer changes, oldest first.
    peer_events: &'a [PeerChange],
    /// Older peer changes not kept (a long run of a flapping peer).
    peer_events_not_kept: u64,
}

/// Peer changes kept for `--json`: a run without `--duration` must not
/// grow without bound (it reached 127 MB). The live table prints each one
/// as it comes and keeps none.
pub const MAX_PEER_EVENTS: usize = 10_000;

/// The latest peer changes, bounded.
#[derive(Default)]
struct Kept {
    events: std::collections::VecDeque<PeerChange>,
    not_kept: u64,
}

impl Kept {
    fn push(&mut self, change: PeerChange) {
        if self.events.len() == MAX_PEER_EVENTS {
            self.events.pop_front();
            self.not_kept += 1;
        }
        self.events.push_back(change);
    }
}

pub async fn run(args: StatsArgs, log_level: LogLevel) -> anyhow::Result<()> {
    let options = MonitorOptions {
        force: args.force,
        kernel_log: log_level.kernel_log(),
        max_aps: None,
    };
    let mut monitor = Monitor::attach(&args.iface, options)
        .await
        .with_context(|| format!("cannot monitor `{}`", args.iface))?;
    let mut events = monitor.take_events()?;
    let mut kernel_log = monitor.take_kernel_logger().transpose()?;

    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    let mut ticker = tokio::time::interval_at(started + args.interval, args.interval);
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut previous = monitor.snapshot()?;
    let mut previous_at = started;
    let mut peer_events = Kept::default();

    loop {
        tokio::select! {
            _ = ticker.tick(), if !args.json => {
                let now = Instant::now();
                let snapshot = monitor.snapshot()?;
                print_table(&snapshot, Some((&previous, now - previous_at)), now - started, monitor.mode());
                previous = snapshot;
                previous_at = now;
            }
            batch = events.next_batch() => {
                for change in batch.context("reading peer events")? {
                    if args.json {
                        peer_events.push(change);
                    } else {
                        println!("{change}");
                    }
                }
            }
            ready = async { kernel_log.as_mut().expect("guarded by the if").readable_mut().await }, if kernel_log.is_some() => {
                let mut guard = ready.context("reading kernel log")?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            _ = async { sleep_until(deadline.expect("guarded by the if")).await }, if deadline.is_some() => break,
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }

    let elapsed = started.elapsed();
    for change in events.drain() {
        if args.json {
            peer_events.push(change);
        }
    }
    if let Some(kernel_log) = kernel_log.as_mut() {
        kernel_log.get_mut().flush(); // what the kernel logged since the last wake-up
    }
    let snapshot = monitor.snapshot()?;
    let mode = monitor.mode();
    drop(monitor); // detach before printing: nothing is left on the interface
    if args.json {
        let report = JsonReport {
            snapshot: &snapshot,
            mode: mode.to_string(),
            duration_ms: elapsed.as_millis() as u64,
            active_ap_window_s: ACTIVE_AP_WINDOW.as_secs(),
            peer_events: peer_events.events.make_contiguous(),
            peer_events_not_kept: peer_events.not_kept,
        };
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, &report).context("writing JSON")?;
        writeln!(out).context("writing JSON")?;
    } else {
        println!("--- final ---");
        print_table(&snapshot, None, elapsed, mode);
    }
    Ok(())
}

fn rate(now: u64, before: u64, over: Duration) -> f64 {
    now.saturating_sub(before) as f64 / over.as_secs_f64().max(1e-9)
}

fn print_table(
    snapshot: &Snapshot,
    previous: Option<(&Snapshot, Duration)>,
    elapsed: Duration,
    mode: AttachMode,
) {
    let mut out = String::new();
    out.push_str(&format!(
        "wimark-ha stats on {} (XDP {} mode), {:.1} s\n",
        snapshot.interface,
        mode,
        elapsed.as_secs_f64()
    ));
    out.push_str(&format!(
        "{:<13} {:>10} {:>12} {:>12} {:>14}\n",
        "class", "packets/s", "bytes/s", "packets", "bytes"
    ));
    let before = previous.map(|(p, over)| (p.classes(), over));
    for (i, (name, totals)) in snapshot.classes().into_iter().enumerate() {
        let (pps, bps) = match &before {
            Some((classes, over)) => {
                let TrafficTotals { packets, bytes } = classes[i].1;
                (
                    rate(totals.packets, packets, *over),
                    rate(totals.bytes, bytes, *over),
                )
            }
            None => (
                totals.packets as f64 / elapsed.as_secs_f64().max(1e-9),
                totals.bytes as f64 / elapsed.as_secs_f64().max(1e-9),
            ),
        };
        out.push_str(&format!(
            "{name:<13} {pps:>10.1} {bps:>12.1} {:>12} {:>14}\n",
            totals.packets, totals.bytes
        ));
    }
    out.push_str(&format!(
        "vrrp invalid by reason: {}\n",
        snapshot.vrrp.invalid
    ));
    out.push_str(&format!(
        "vrrp in a VLAN tag (another VLAN's, never obeyed): {}\n",
        snapshot.vrrp.tagged
    ));
    if snapshot.vrrp.peers.is_empty() {
        out.push_str("VRRP peers: none seen\n");
    } else {
        out.push_str(&format!(
            "VRRP peers:\n  {:>4} {:<28} {:>3} {:>4} {:>9} {:>9} {:>12}\n",
            "vrid", "source", "ver", "prio", "interval", "adverts", "last advert"
        ));
        for peer in &snapshot.vrrp.peers {
            out.push_str(&format!(
                "  {:>4} {:<28} {:>3} {:>4} {:>6} ms {:>9} {:>9} ms ago\n",
                peer.vrid,
                peer.source.to_string(),
                peer.version,
                peer.priority,
                peer.interval_ms,
                peer.adverts,
                peer.last_seen_ms_ago
            ));
        }
    }
    out.push_str(&format!(
        "active APs: {} (seen in the last {} s; {} known)\n",
        snapshot.ap.active_aps,
        ACTIVE_AP_WINDOW.as_secs(),
        snapshot.ap.known_aps
    ));
    if snapshot.events_lost > 0 {
        out.push_str(&format!(
            "events lost by the kernel: adverts {}, peer changes {}\n",
            snapshot.advert_events_lost, snapshot.peer_events_lost
        ));
    }
    print!("{out}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_changes_kept_for_json_are_bounded() {
        let change = |n: u64| PeerChange {
            timestamp_ns: n,
            vrid: 67,
            source: "10.77.0.2".parse().expect("ip"),
            new_peer: false,
            priority_changed: true,
            priority_zero: false,
            interval_changed: false,
            priority: 100,
            previous_priority: 101,
            interval_ms: 10,
            previous_interval_ms: 10,
            version: 3,
        };
        let mut kept = Kept::default();
        for n in 0..(MAX_PEER_EVENTS as u64 + 500) {
            kept.push(change(n));
        }
        assert_eq!(kept.events.len(), MAX_PEER_EVENTS);
        assert_eq!(kept.not_kept, 500);
        assert_eq!(kept.events.front().map(|c| c.timestamp_ns), Some(500), "the newest are kept");
    }
}
