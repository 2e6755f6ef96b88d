//! `cargo xtask bench aps`: when real AP clients are back after a node
//! loss — strongSwan initiators (at their defaults and with DPD 1 s) and
//! mosquitto subscribers in front of two wimark-ha servers, with and
//! without the AP recovery (synced AP table, `wimark-ha ike-initiate`, the
//! MQTT kick), and in front of keepalived with the vendor's config; then
//! a planned switchover. "Tunnel back" is the first UDP probe answered through the
//! AP's tunnel after the loss (each AP probes every 10 ms); "MQTT back" the
//! first message its subscriber receives (a message every 100 ms).

use std::time::Duration;
use wimark_ha::records::State;

use anyhow::Result;
use wimark_ha_tests::ap_clients::{ApFailover, ApIke, TunnelProbes};

/// Per AP, when it was back (None: not within the wait).
type PerAp = Vec<Option<Duration>>;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// "n/N | p50 | p99 | max", an AP not back counting as "> wait".
fn summary(back: &[Option<Duration>], wait: Duration) -> String {
    let mut times: Vec<Duration> = back.iter().flatten().copied().collect();
    times.sort();
    let over = format!("> {} s", wait.as_secs());
    // Ranks over all APs: the missing ones sort last, as "> wait".
    let at = |p: f64| {
        let rank = ((p / 100.0) * back.len() as f64).ceil() as usize;
        times
            .get(rank.clamp(1, back.len().max(1)) - 1)
            .map_or(over.clone(), |d| ms(*d))
    };
    let max = if times.len() == back.len() && !times.is_empty() {
        ms(percentile(&times, 100.0))
    } else {
        over.clone()
    };
    format!(
        "{}/{} | {} | {} | {max}",
        times.len(),
        back.len(),
        at(50.0),
        at(99.0)
    )
}

pub fn run(aps: u8, wait: Duration, mqtt_keepalive: u16) -> Result<()> {
    println!(
        "## APs back after node loss (`cargo xtask bench aps -- --aps {aps} --wait {} --mqtt-keepalive {mqtt_keepalive}`)\n",
        wait.as_secs()
    );
    println!("{aps} APs, each a real strongSwan 5.9 charon (IKEv2, PSK, UDP-encapsulated ESP) to the VIP and a mosquitto_sub (keepalive {mqtt_keepalive} s) to the VIP's broker; A lost (link cut, daemon, charon and mosquitto SIGKILLed).\n");
    println!("| servers | AP IKE settings | VIP on B after | tunnels back | tunnel p50 | p99 | max | MQTT back | MQTT p50 | p99 | max |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
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
        let mut failover = ApFailover::new(
            aps,
            ike,
            recovery,
            Some(mqtt_keepalive),
            &format!("bench-aps-{}", recovery as u8),
        )?;
        let probes = TunnelProbes::start(&failover.lab)?;
        std::thread::sleep(Duration::from_millis(300));
        let loss = failover.lose_a()?;
        let tunnels = probes.wait_all_back(loss, wait);
        let mqtt = failover
            .mqtt
            .as_ref()
            .map(|m| m.wait_all_back(loss, wait))
            .unwrap_or_default();
        if recovery {
            let journal = wimark_ha::history::read(&failover.daemon_b.state_dir())?;
            for entry in journal.entries {
                if let wimark_ha::history::Entry::ApRecovery { record, .. } = entry {
                    eprintln!("bench aps: B's recovery: {record:?}");
                }
            }
        }
        let transition = failover.daemon_b.last_transition();
        let vip = match (transition.silence, transition.vip_added) {
            (Some(silence), Some(vip)) if transition.to == State::Master => {
                format!("{:.1} ms", (silence + vip).as_micros() as f64 / 1e3)
            }
            _ => "-".to_string(),
        };
        println!(
            "| {name} | {ike_name} | {vip} | {} | {} |",
            summary(&tunnels, wait),
            summary(&mqtt, wait)
        );
    }
    for (ike, ike_name) in [
        (ApIke::Defaults, "strongSwan defaults (no DPD)"),
        (ApIke::Dpd1s, "DPD 1 s, restart"),
    ] {
        let Row::Loss(vip, tunnels, mqtt) = keepalived_row(aps, ike, wait, mqtt_keepalive, false)?
        else {
            unreachable!("a node loss row");
        };
        println!(
            "| keepalived, the vendor's VRRPv2 1 s config | {ike_name} | {vip} | {} | {} |",
            summary(&tunnels, wait),
            summary(&mqtt, wait)
        );
    }
    println!("\nPlanned switchover (`wimark-ha switchover` on A, or keepalived stopped on A; both servers stay up): the longest silence each AP saw, from the switchover until {} s after it (an AP whose tunnel never came back shows the whole window).\n", wait.as_secs());
    println!("| servers | AP IKE settings | tunnel: longest silence p50 | p99 | max | MQTT: longest silence p50 | p99 | max |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let gaps = |mut gaps: Vec<Duration>| {
        gaps.sort();
        if gaps.is_empty() {
            return "- | - | -".to_string();
        }
        format!(
            "{} | {} | {}",
            ms(percentile(&gaps, 50.0)),
            ms(percentile(&gaps, 99.0)),
            ms(gaps[gaps.len() - 1])
        )
    };
    for (ike, ike_name) in [
        (ApIke::Defaults, "strongSwan defaults (no DPD)"),
        (ApIke::Dpd1s, "DPD 1 s, restart"),
    ] {
        for (name, recovery) in [
            ("wimark-ha + AP recovery", true),
            ("wimark-ha, no AP recovery", false),
        ] {
            let failover = ApFailover::new(
                aps,
                ike,
                recovery,
                Some(mqtt_keepalive),
                &format!("bench-aps-so-{}", recovery as u8),
            )?;
            let probes = TunnelProbes::start(&failover.lab)?;
            std::thread::sleep(Duration::from_millis(300));
            let asked = failover.switch_over()?;
            std::thread::sleep(wait);
            let until = asked + wait;
            let tunnel = gaps(probes.longest_gap(asked, until));
            let mqtt = gaps(
                failover
                    .mqtt
                    .as_ref()
                    .map(|m| m.longest_gap(asked, until))
                    .unwrap_or_default(),
            );
            println!("| {name} | {ike_name} | {tunnel} | {mqtt} |");
        }
        let Row::Switchover(tunnel, mqtt) = keepalived_row(aps, ike, wait, mqtt_keepalive, true)?
        else {
            unreachable!("a switchover row");
        };
        println!(
            "| keepalived, the vendor's config (SIGTERM on A: priority 0) | {ike_name} | {} | {} |",
            gaps(tunnel),
            gaps(mqtt)
        );
    }
    Ok(())
}

/// One keepalived row: after a node loss (VIP time, tunnels and MQTT
/// back), or after a planned hand-over (each AP's longest silence).
enum Row {
    Loss(String, PerAp, PerAp),
    Switchover(Vec<Duration>, Vec<Duration>),
}

/// The seed's setup: keepalived (VRRPv2, advert_int 1, auth PASS) on both
/// servers in front of the same AP clients; A lost the same way, or (with
/// `planned`) stopped cleanly, as the vendor hands over: SIGTERM, a
/// priority-0 advert.
fn keepalived_row(
    aps: u8,
    ike: ApIke,
    wait: Duration,
    mqtt_keepalive: u16,
    planned: bool,
) -> Result<Row> {
    use wimark_ha_tests::{
        ap_clients::{ApLab, Loss, Mqtt, VIP},
        daemon::{has_address, wait_until},
        keepalived::{Instance, Keepalived},
    };
    let lab = ApLab::new(aps)?;
    let scratch = wimark_ha_tests::Scratch::new("bench-aps-keepalived");
    let (mut charon_a, _charon_b) = lab.responders(&scratch.0)?;
    let mut keepalived_a = Keepalived::start(&lab.a, "bench-aps-a", &Instance::vendor(200))?;
    wait_until(
        Duration::from_secs(10),
        "keepalived A holds the VIP",
        || has_address(&lab.a, "eth1", VIP),
    )?;
    let _keepalived_b = Keepalived::start(&lab.b, "bench-aps-b", &Instance::vendor(100))?;
    std::thread::sleep(Duration::from_secs(2));
    let _ap_charons = lab.start_aps(&scratch.0, ike)?;
    let mut mqtt = Mqtt::start(&lab, &scratch.0.join("mqtt"), mqtt_keepalive)?;
    let probes = TunnelProbes::start(&lab)?;
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    if planned {
        keepalived_a.signal(libc::SIGTERM);
        std::thread::sleep(wait);
        let until = started + wait;
        return Ok(Row::Switchover(
            probes.longest_gap(started, until),
            mqtt.longest_gap(started, until),
        ));
    }
    keepalived_a.kill();
    wimark_ha_tests::lab::ip(&["-n", &lab.a, "link", "set", "eth1", "down"])?;
    let loss = Loss {
        started,
        cut: std::time::Instant::now(),
    };
    charon_a.kill();
    mqtt.lose_a();
    let vip = match wait_until(wait, "the VIP on B", || has_address(&lab.b, "eth1", VIP)) {
        Ok(()) => ms(started.elapsed()),
        Err(_) => format!("> {} s", wait.as_secs()),
    };
    let tunnels = probes.wait_all_back(loss, wait);
    let mqtt_back = mqtt.wait_all_back(loss, wait);
    Ok(Row::Loss(vip, tunnels, mqtt_back))
}
