//! `cargo xtask bench aps`: when real AP clients are back after a node
//! loss — strongSwan initiators (at their defaults and with DPD 1 s) in
//! front of two wimark-ha servers, with and without the AP recovery
//! (synced AP table + `wimark-ha ike-initiate`). "Back" is the first UDP
//! probe answered through the AP's tunnel after the loss (each AP probes
//! every 10 ms).

use std::time::Duration;

use anyhow::Result;
use wimark_ha_tests::ap_clients::{ApFailover, ApIke, TunnelProbes};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

pub fn run(aps: u8, wait: Duration) -> Result<()> {
    println!(
        "## APs back after node loss (`cargo xtask bench aps -- --aps {aps} --wait {}s`)\n",
        wait.as_secs()
    );
    println!("{aps} APs, each a real strongSwan 5.9 charon (IKEv2, PSK, UDP-encapsulated ESP) to the VIP; A lost (link cut, daemon and IKE daemon SIGKILLed). Tunnel back = first probe answered through it.\n");
    println!(
        "| servers | AP IKE settings | VIP on B after | APs back | tunnel back p50 | p99 | max |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    let rows = [
        (
            "wimark-ha + AP recovery",
            true,
            ApIke::Defaults,
            "strongSwan defaults (no DPD)",
        ),
        (
            "wimark-ha + AP recovery",
            true,
            ApIke::Dpd1s,
            "DPD 1 s, restart",
        ),
        (
            "wimark-ha, no AP recovery",
            false,
            ApIke::Defaults,
            "strongSwan defaults (no DPD)",
        ),
        (
            "wimark-ha, no AP recovery",
            false,
            ApIke::Dpd1s,
            "DPD 1 s, restart",
        ),
    ];
    for (name, recovery, ike, ike_name) in rows {
        let mut failover =
            ApFailover::new(aps, ike, recovery, &format!("bench-aps-{}", recovery as u8))?;
        let probes = TunnelProbes::start(&failover.lab)?;
        std::thread::sleep(Duration::from_millis(300));
        let lost = failover.lose_a()?;
        let back = probes.wait_all_back(lost, wait);
        let transition = failover.daemon_b.last_transition();
        let vip = match (transition.silence_us, transition.vip_added_us) {
            (Some(silence), Some(vip)) if transition.to == "MASTER" => {
                format!("{:.1} ms", (silence + vip) as f64 / 1e3)
            }
            _ => "-".to_string(),
        };
        if recovery {
            let journal = wimark_ha::history::read(&failover.daemon_b.state_dir())?;
            for entry in journal.entries {
                if let wimark_ha::history::Entry::ApRecovery { record, .. } = entry {
                    eprintln!("bench aps: B's recovery: {record:?}");
                }
            }
        }
        let mut times: Vec<Duration> = back.iter().flatten().copied().collect();
        times.sort();
        let count = times.len();
        let over = format!("> {} s", wait.as_secs());
        let (p50, p99, max) = if count == back.len() {
            (
                ms(percentile(&times, 50.0)),
                ms(percentile(&times, 99.0)),
                ms(times[count - 1]),
            )
        } else if count * 2 >= back.len() {
            (
                ms(percentile(&times, 50.0 * back.len() as f64 / count as f64)),
                over.clone(),
                over,
            )
        } else {
            (over.clone(), over.clone(), over)
        };
        println!(
            "| {name} | {ike_name} | {vip} | {count}/{} | {p50} | {p99} | {max} |",
            back.len()
        );
    }
    Ok(())
}
