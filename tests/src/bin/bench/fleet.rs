//! `cargo xtask bench aps -- --fleet N`: the AP recovery at fleet size
//! (issue 29). N APs, 250 to a namespace with one charon each (real
//! strongSwan initiators, each AP its own address, identity and IKE_SA),
//! in front of two wimark-ha servers with `[ap_recovery]`; A is lost.
//!
//! Then, in the same lab with B master, the floor: a fresh charon on B
//! (every AP's SA unknown to it, as A's were at the takeover, the probes
//! running as then) sets up an IKE_SA and CHILD_SA to every AP again (the
//! adapter, `wimark-ha ike-initiate`, with windows of 16, 64, 256
//! and N initiations at once); the fastest of those is the rate the floor is
//! made of:
//! floor = the VIP on B + one AP's exchange alone + N / rate.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use wimark_ha::records::State;
use wimark_ha_tests::ap_clients::{
    ike_proposal,
    adapter_toml, fleet_address, responder_conf, ApFailover, ApIke, ApLab, Charon, MqttClients, TunnelProbes, VIP,
};

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn at(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One run of the adapter from B's charon to every AP.
struct Initiation {
    window: usize,
    took: Duration,
    ok: usize,
    timed_out: usize,
    failed: usize,
    /// The fastest single AP (its exchange, nothing queued before it).
    fastest: Duration,
}

fn initiate_all(
    failover: &mut ApFailover,
    probes: &TunnelProbes,
    count: usize,
    window: usize,
) -> Result<Initiation> {
    // A fresh charon on B for each run, as at a takeover (no IKE_SA of
    // its own yet); the APs drop the SAs of the previous run on
    // INITIAL_CONTACT as they drop A's at a takeover.
    let dir = failover.charon_b.dir.clone();
    failover.charon_b.kill();
    let _ = std::fs::remove_file(dir.join("charon.log"));
    failover.charon_b = Charon::start(&failover.lab.b, &dir)?;
    failover.charon_b.load(&responder_conf(VIP))?;
    // Every AP's SA is now unknown to B, as A's were at the takeover: the
    // probes go back to their fast rate until answered, the same load as
    // during the takeover.
    probes.arm(Instant::now());
    let retransmits_before: usize = failover.aps.iter().map(|c| c.log().matches("retransmit").count()).sum();
    let config = dir.join(format!("fleet-initiate-{window}.toml"));
    let toml = adapter_toml(&failover.charon_b.vici_uri()).replacen(
        "\n\n[connection]",
        &format!("\ntimeout = \"30s\"\nin_flight = {window}\n\n[connection]"),
        1,
    );
    anyhow::ensure!(toml.contains("in_flight"), "the adapter config has no [connection] to put the window before");
    std::fs::write(&config, toml)?;
    let list = serde_json::json!({
        "version": 2,
        "aps": (1..=count).map(|n| serde_json::json!({
            "address": fleet_address(n), "ike_port": 500, "ike_id": fleet_address(n)
        })).collect::<Vec<_>>(),
    });
    let started = Instant::now();
    let mut child = Command::new(wimark_ha_tests::wimark_ha_bin())
        .args(["ike-initiate", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("wimark-ha ike-initiate")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(list.to_string().as_bytes())?;
    let output = child.wait_with_output()?;
    let took = started.elapsed();
    let (mut ok, mut timed_out, mut failed) = (0, 0, 0);
    let mut fastest = Duration::MAX;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let outcome: serde_json::Value = serde_json::from_str(line)?;
        match outcome["result"].as_str() {
            Some("ok") => ok += 1,
            Some("timed_out") => timed_out += 1,
            _ => failed += 1,
        }
        if let Some(took) = outcome["took_ms"].as_f64() {
            fastest = fastest.min(Duration::from_secs_f64(took / 1e3));
        }
    }
    if let Ok(keep) = std::env::var("WIMARK_FLEET_KEEP_LOGS") {
        let _ = std::fs::write(format!("{keep}/b-{window}.log"), failover.charon_b.log());
        for (i, ap) in failover.aps.iter().enumerate() {
            let _ = std::fs::write(format!("{keep}/ap{i}-{window}.log"), ap.log());
        }
    }
    let retransmits_b = failover.charon_b.log().matches("retransmit").count();
    for line in failover.charon_b.log().lines().filter(|l| l.contains("retransmit")).take(3) {
        eprintln!("bench fleet:   B: {line}");
    }
    let retransmits_aps: usize = failover.aps.iter().map(|c| c.log().matches("retransmit").count()).sum::<usize>() - retransmits_before;
    eprintln!(
        "bench fleet: window {window}: {} (retransmissions: B {retransmits_b}, APs {retransmits_aps})",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(Initiation {
        window,
        took,
        ok,
        timed_out,
        failed,
        fastest,
    })
}

pub fn run(sizes: &[usize], wait: Duration, kick_rate: Option<u32>) -> Result<()> {
    let extra = kick_rate.map_or(String::new(), |rate| format!("mqtt_kick_rate = {rate}\n"));
    println!(
        "## APs back after node loss at fleet size (`cargo xtask bench aps -- {} --wait {}{}`)\n",
        sizes
            .iter()
            .map(|n| format!("--fleet {n}"))
            .collect::<Vec<_>>()
            .join(" "),
        wait.as_secs(),
        kick_rate.map_or(String::new(), |rate| format!(" --kick-rate {rate}"))
            + &if ike_proposal() == DEFAULT_PROPOSAL {
                String::new()
            } else {
                format!(" --ike-proposal {}", ike_proposal())
            }
    );
    println!("N APs, 250 to a namespace, one strongSwan 5.9 charon per namespace (each AP its own address, identity, IKE_SA and CHILD_SA; AP strongSwan defaults: no DPD), `{}`; A lost (link cut, daemon and charon SIGKILLed); B with `[ap_recovery]` and `wimark-ha ike-initiate`. \"Tunnel back\": the first probe answered through the AP's tunnel after the loss (resolution: each AP's probe interval). \"MQTT back\": one idle MQTT connection per AP to the VIP (keepalive {MQTT_KEEPALIVE_S} s, libmosquitto's 1 s reconnect), back at the new master broker's CONNACK. The floor: the VIP on B + one AP's exchange alone + N / the fastest rate B's charon set up all N again (windows below).\n", ike_proposal());
    println!("| APs | VIP on B after | tunnels back | p50 | p99 | max | probe every | hook (ok / failed / timed out) | floor | p99 / floor | MQTT back | p50 | p99 | max |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    let mut curves = Vec::new();
    for &count in sizes {
        let (mut failover, probes, loss) =
            lose_a_fleet(count, true, &format!("bench-fleet-{count}"), &extra)?;
        let back = probes.wait_all_back(loss, wait);
        let mqtt_back = failover
            .fleet_mqtt
            .as_ref()
            .context("the fleet's MQTT clients")?
            .wait_all_back(loss, wait);
        let vip = vip_on_b(&failover)?;
        let journal = wimark_ha::history::read(&failover.daemon_b.state_dir())?;
        let hook = journal
            .entries
            .iter()
            .rev()
            .find_map(|entry| match entry {
                wimark_ha::history::Entry::ApRecovery { record, .. } => record.ike.clone(),
                _ => None,
            });
        if let Ok(keep) = std::env::var("WIMARK_FLEET_KEEP_LOGS") {
            let _ = std::fs::write(format!("{keep}/b-takeover-{count}.log"), failover.charon_b.log());
            let _ = std::fs::write(format!("{keep}/daemon-b-{count}.log"), failover.daemon_b.log());
        }
        {
            let mut times: Vec<Duration> = back.iter().flatten().copied().collect();
            times.sort();
            eprintln!(
                "bench fleet: {count} APs, the takeover: VIP on B after {}, {}/{count} tunnels back, p50 {:?}, p99 {:?}, max {:?}; hook {:?}",
                ms(vip),
                times.len(),
                times.get(times.len() / 2),
                times.get((times.len() * 99).div_ceil(100).max(1) - 1),
                times.last(),
                hook.as_ref().map(|h| (h.ok, h.failed, h.timed_out, h.took_ms))
            );
        }
        eprintln!(
            "bench fleet: {count} APs, the takeover: retransmissions: B {}, APs {}",
            failover.charon_b.log().matches("retransmit").count(),
            failover.aps.iter().map(|c| c.log().matches("retransmit").count()).sum::<usize>()
        );
        // The takeover's IKE logs, before the floor's runs restart B's
        // charon (and remove its log).
        if let Ok(keep) = std::env::var("WIMARK_FLEET_KEEP_LOGS") {
            let _ = std::fs::write(format!("{keep}/b-takeover.log"), failover.charon_b.log());
            for (i, ap) in failover.aps.iter().enumerate() {
                let _ = std::fs::write(format!("{keep}/ap{i}-takeover.log"), ap.log());
            }
        }
        // The floor, in the same lab: B's charon to every AP again.
        let mut runs = Vec::new();
        let most = count.min(wimark_ha::recovery::vici::MAX_IN_FLIGHT);
        let mut windows: Vec<usize> = [16, 64, 256, most].into_iter().filter(|w| *w <= most).collect();
        windows.dedup();
        for window in windows {
            runs.push(initiate_all(&mut failover, &probes, count, window)?);
        }
        drop(probes);
        let best = runs
            .iter()
            .filter(|r| r.ok == count)
            .min_by_key(|r| r.took)
            .or_else(|| runs.iter().min_by_key(|r| r.took))
            .context("no initiation run")?;
        let rate = count as f64 / best.took.as_secs_f64();
        let alone = runs.iter().map(|r| r.fastest).min().unwrap_or_default();
        let floor = vip + alone + Duration::from_secs_f64(count as f64 / rate);
        let mut times: Vec<Duration> = back.iter().flatten().copied().collect();
        times.sort();
        let (p50, p99, max) = if times.len() == count {
            (ms(at(&times, 50.0)), ms(at(&times, 99.0)), ms(at(&times, 100.0)))
        } else {
            let over = format!("> {} s", wait.as_secs());
            (
                times.get(count / 2).map_or(over.clone(), |d| ms(*d)),
                over.clone(),
                over,
            )
        };
        let ratio = if times.len() == count {
            format!("{:.2}", at(&times, 99.0).as_secs_f64() / floor.as_secs_f64())
        } else {
            "-".to_string()
        };
        let mqtt = mqtt_cells(&mqtt_back, count, wait);
        let hook = hook.map_or("none recorded".to_string(), |h| {
            format!("{} / {} / {} in {:.0} ms", h.ok, h.failed, h.timed_out, h.took_ms)
        });
        println!(
            "| {count} | {} | {}/{count} | {p50} | {p99} | {max} | {} | {hook} | {} | {ratio} | {mqtt} |",
            ms(vip),
            times.len(),
            ms(probes_every(count)),
            ms(floor),
        );
        curves.push((count, runs, alone, rate));
    }
    println!("\nB's charon setting up every AP's IKE_SA and CHILD_SA again (`wimark-ha ike-initiate`, `in_flight` = window), B master, both sides on this machine:\n");
    println!("| APs | window | all done in | rate | ok / failed / timed out |");
    println!("|---:|---:|---:|---:|---|");
    for (count, runs, alone, rate) in curves {
        for run in runs {
            println!(
                "| {count} | {} | {} | {:.0} /s | {} / {} / {} |",
                run.window,
                ms(run.took),
                count as f64 / run.took.as_secs_f64(),
                run.ok,
                run.failed,
                run.timed_out
            );
        }
        println!("\n{count} APs: one AP's exchange alone {}; fastest rate {rate:.0} /s.\n", ms(alone));
    }
    Ok(())
}

/// The same lab without `[ap_recovery]` on either daemon: what the fleet
/// gets from the VIP's move alone (issue 29's "vs without it" rows).
pub fn run_without_recovery(sizes: &[usize], wait: Duration) -> Result<()> {
    println!(
        "## APs back after node loss at fleet size, without AP recovery (`cargo xtask bench aps -- {} --wait {} --no-recovery`)\n",
        sizes.iter().map(|n| format!("--fleet {n}")).collect::<Vec<_>>().join(" "),
        wait.as_secs()
    );
    println!("The lab of the rows with recovery (AP strongSwan defaults: no DPD; one idle MQTT connection per AP, keepalive {MQTT_KEEPALIVE_S} s), both daemons without `[ap_recovery]`.\n");
    println!("| APs | VIP on B after | tunnels back within {} s | MQTT back | p50 | p99 | max |", wait.as_secs());
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &count in sizes {
        let (failover, probes, loss) =
            lose_a_fleet(count, false, &format!("bench-fleet-bare-{count}"), "")?;
        let mqtt_back = failover
            .fleet_mqtt
            .as_ref()
            .context("the fleet's MQTT clients")?
            .wait_all_back(loss, wait);
        let tunnels = probes.back_after(loss).iter().flatten().count();
        let vip = vip_on_b(&failover)?;
        let mqtt = mqtt_cells(&mqtt_back, count, wait);
        println!("| {count} | {} | {tunnels}/{count} | {mqtt} |", ms(vip));
    }
    Ok(())
}

/// A fleet lab of `count` APs with an MQTT connection each (`recovery`:
/// both daemons with `[ap_recovery]` + `extra`), every AP answered once,
/// then A lost; the probes re-armed at the cut.
fn lose_a_fleet(
    count: usize,
    recovery: bool,
    tag: &str,
    extra: &str,
) -> Result<(ApFailover, TunnelProbes, wimark_ha_tests::ap_clients::Loss)> {
    let mut failover = ApFailover::in_lab_with(
        ApLab::fleet(count)?,
        ApIke::Defaults,
        recovery,
        Some(MqttClients::fleet(MQTT_KEEPALIVE_S)),
        tag,
        extra,
    )?;
    let probes = TunnelProbes::start(&failover.lab)?;
    // Every AP answered once, then quiet (an armed AP that is back probes
    // slowly) until the loss re-arms them all.
    probes.arm(std::time::Instant::now());
    std::thread::sleep(Duration::from_millis(300) + probes.every * 2);
    let loss = failover.lose_a()?;
    probes.arm(loss.cut);
    Ok((failover, probes, loss))
}

/// From A's loss to the VIP on B, as B's latest transition says.
fn vip_on_b(failover: &ApFailover) -> Result<Duration> {
    let transition = failover.daemon_b.last_transition();
    match (transition.silence, transition.vip_added) {
        (Some(silence), Some(vip)) if transition.to == State::Master => Ok(silence + vip),
        _ => bail!("B did not take over: {transition:?}"),
    }
}

/// The MQTT columns: back / p50 / p99 / max.
fn mqtt_cells(back: &[Option<Duration>], count: usize, wait: Duration) -> String {
    let mut times: Vec<Duration> = back.iter().flatten().copied().collect();
    times.sort();
    if times.len() == count {
        format!(
            "{count}/{count} | {} | {} | {}",
            ms(at(&times, 50.0)),
            ms(at(&times, 99.0)),
            ms(at(&times, 100.0))
        )
    } else {
        format!("{}/{count} | - | > {} s | > {} s", times.len(), wait.as_secs(), wait.as_secs())
    }
}

/// The lab's IKE proposal unless `--ike-proposal` chose another.
const DEFAULT_PROPOSAL: &str = "aes128-sha256-modp2048";

/// The fleet's MQTT connections: idle, as the subscriber that only the
/// daemon's kick brings back before its keepalive.
const MQTT_KEEPALIVE_S: u16 = 60;

fn probes_every(count: usize) -> Duration {
    wimark_ha_tests::ap_clients::probe_every(count)
}
