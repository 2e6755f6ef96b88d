//! `cargo xtask bench aps -- --trials N`: issue 28's acceptance trials
//! through both daemons. Two APs on the servers' LAN, or two behind one
//! port-rewriting NAT address; each AP a real charon (strongSwan defaults,
//! or DPD 1 s) and three MQTT connections (subscribers with keepalive 5 s
//! and 60 s, a publisher); node loss of A, or a planned switchover. Per
//! trial: each tunnel's and each MQTT connection's time back, and whether
//! B's journal says the truth about every AP (its "APs back" line against
//! what the clients saw).
//!
//! After a node loss "back" is the first answer (tunnel) or message (MQTT)
//! after the loss; after a switchover, where the old path keeps working
//! until the VIP moves, it is the longest silence from the switchover on.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use wimark_ha_tests::ap_clients::{ApFailover, ApIke, ApLab, Loss, MqttClients, TunnelProbes};

/// The targets.
const TUNNEL_TARGET: Duration = Duration::from_millis(200);
const MQTT_TARGET: Duration = Duration::from_millis(1500);
const APS: usize = 2;
/// Per AP: subscribers (keepalive 5 s, 60 s), then the publisher.
const KEEPALIVES: [u16; 2] = [5, 60];
const CLIENT_KINDS: [&str; 3] = ["sub 5 s", "sub 60 s", "publisher"];

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Lan,
    Nat,
}

#[derive(Clone, Copy, PartialEq)]
enum Event {
    NodeLoss,
    Switchover,
}

/// One trial: per AP the tunnel's time, per client the MQTT time (None:
/// not back within the wait), and the journal's count against the truth.
struct Trial {
    tunnels: Vec<Option<Duration>>,
    mqtt: Vec<Option<Duration>>,
    journal_right: bool,
    journal: String,
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// Per stream, its time back: after a loss the first arrival; after a
/// switchover the longest silence from it to `wait` after it (a stream
/// that never came back shows the whole window, counted as not back).
fn times_back(
    event: Event,
    loss: Loss,
    wait: Duration,
    first: impl Fn(Loss, Duration) -> Vec<Option<Duration>>,
    gaps: impl Fn(Instant, Instant) -> Vec<Duration>,
) -> Vec<Option<Duration>> {
    match event {
        Event::NodeLoss => first(loss, wait),
        Event::Switchover => {
            std::thread::sleep(wait.saturating_sub(loss.started.elapsed()));
            gaps(loss.started, loss.started + wait)
                .into_iter()
                .map(|gap| (gap < wait).then_some(gap))
                .collect()
        }
    }
}

fn one_trial(shape: Shape, ike: ApIke, event: Event, wait: Duration, tag: &str) -> Result<Trial> {
    let lab = match shape {
        Shape::Lan => ApLab::new(APS as u8)?,
        Shape::Nat => ApLab::behind_nat(APS as u8)?,
    };
    let clients = MqttClients {
        keepalives_s: KEEPALIVES.to_vec(),
        publisher: true,
        fleet: false,
    };
    let mut failover = ApFailover::in_lab(lab, ike, true, Some(clients), tag)?;
    let probes = TunnelProbes::start(&failover.lab)?;
    std::thread::sleep(Duration::from_millis(300));
    let loss = match event {
        Event::NodeLoss => failover.lose_a()?,
        Event::Switchover => {
            let asked = failover.switch_over()?;
            Loss {
                started: asked,
                cut: asked,
            }
        }
    };
    let tunnels = times_back(
        event,
        loss,
        wait,
        |l, w| probes.wait_all_back(l, w),
        |from, until| probes.longest_gap(from, until),
    );
    let mqtt_clients = failover.mqtt.as_ref().context("MQTT clients")?;
    let mqtt = times_back(
        event,
        loss,
        wait,
        |l, w| mqtt_clients.wait_all_back(l, w),
        |from, until| mqtt_clients.longest_gap(from, until),
    );
    // The truth: APs whose tunnel and every connection came back.
    let per_ap = CLIENT_KINDS.len();
    // A publisher slower than the target: what its client did (PUBLISH
    // runs summarised).
    for i in 0..APS {
        if mqtt[i * per_ap + per_ap - 1].is_none_or(|t| t > MQTT_TARGET) {
            eprintln!(
                "bench aps trials: AP {}'s publisher took {:?}; its log: {}",
                i + 1,
                mqtt[i * per_ap + per_ap - 1],
                summarise_publisher_log(&mqtt_clients.ap_publisher_log(i + 1))
            );
        }
    }
    let whole = (0..APS)
        .filter(|&i| {
            tunnels[i].is_some()
                && mqtt[i * per_ap..(i + 1) * per_ap]
                    .iter()
                    .all(Option::is_some)
        })
        .count();
    // B's journal: its "APs back" entry for this takeover (the watch ends
    // when every AP is whole, else at 120 s: give it the wait).
    let deadline = Instant::now() + wait;
    let entry = loop {
        let found = wimark_ha::history::read(&failover.daemon_b.state_dir())
            .ok()
            .and_then(|read| {
                read.entries
                    .into_iter()
                    .rev()
                    .find_map(|entry| match entry {
                        wimark_ha::history::Entry::ApsBack { per_ap, .. } => per_ap,
                        _ => None,
                    })
            });
        if found.is_some() || Instant::now() >= deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (journal_right, journal) = match entry {
        Some(detail) => {
            let sessions = detail.sessions.unwrap_or_default();
            let all_back = whole == APS;
            let right = detail.expected == APS
                && detail.back == whole
                && sessions.ike_expected == APS
                && sessions.mqtt_expected == APS * per_ap
                && (!all_back || (sessions.ike_back == APS && sessions.mqtt_back == APS * per_ap));
            (
                right,
                format!(
                    "{} of {} back; {}{}",
                    detail.back,
                    detail.expected,
                    sessions,
                    if detail.missing.is_empty() {
                        String::new()
                    } else {
                        format!("; missing {}", detail.missing.join(", "))
                    }
                ),
            )
        }
        None => (false, "no APs-back entry".to_string()),
    };
    Ok(Trial {
        tunnels,
        mqtt,
        journal_right,
        journal,
    })
}

/// A publisher's `-d` log without its runs of PUBLISH lines (counted).
fn summarise_publisher_log(log: &str) -> String {
    let mut out = Vec::new();
    let mut publishes = 0;
    for line in log.lines() {
        if line.contains("sending PUBLISH") {
            publishes += 1;
            continue;
        }
        if publishes > 0 {
            out.push(format!("({publishes} PUBLISH)"));
            publishes = 0;
        }
        out.push(line.to_string());
    }
    if publishes > 0 {
        out.push(format!("({publishes} PUBLISH)"));
    }
    out.join(" | ")
}

pub fn run(trials: usize, wait: Duration) -> Result<()> {
    println!(
        "## Every AP and every session back, trial by trial (`cargo xtask bench aps -- --trials {trials} --wait {}`)\n",
        wait.as_secs()
    );
    println!("Two daemons with `[ap_recovery]` (`ike_vici`, the MQTT kick, `wimark-ha ike-initiate`); {APS} APs, each a real charon and three MQTT connections (mosquitto_sub keepalive 5 s and 60 s, mosquitto_pub every 100 ms). Targets: every tunnel within {}, every MQTT connection within {}; \"journal right\": B's APs-back entry counts exactly the APs whose tunnel and connections all came back, with every session accounted for.\n", ms(TUNNEL_TARGET), ms(MQTT_TARGET));
    println!("| APs | AP IKE settings | event | trials | tunnels within target | slowest tunnel | MQTT within target | slowest: sub 5 s / sub 60 s / publisher | journal right |");
    println!("|---|---|---|---:|---:|---:|---:|---|---:|");
    let shapes = [
        (Shape::Nat, "2 behind one NAT address"),
        (Shape::Lan, "2 on the LAN"),
    ];
    let ikes = [
        (ApIke::Defaults, "strongSwan defaults"),
        (ApIke::Dpd1s, "DPD 1 s, restart"),
    ];
    let events = [
        (Event::NodeLoss, "node loss"),
        (Event::Switchover, "planned switchover"),
    ];
    for (shape, shape_name) in shapes {
        for (ike, ike_name) in ikes {
            for (event, event_name) in events {
                let mut tunnels_ok = 0;
                let mut mqtt_ok = 0;
                let mut journal_ok = 0;
                let mut slowest_tunnel: Option<Duration> = Some(Duration::ZERO);
                let mut slowest_kind: [Option<Duration>; 3] = [Some(Duration::ZERO); 3];
                for n in 0..trials {
                    let trial =
                        one_trial(shape, ike, event, wait, "bench-trials").with_context(|| {
                            format!("{shape_name}, {ike_name}, {event_name}, trial {}", n + 1)
                        })?;
                    let within = |times: &[Option<Duration>], target: Duration| {
                        times.iter().all(|t| t.is_some_and(|t| t <= target))
                    };
                    tunnels_ok += usize::from(within(&trial.tunnels, TUNNEL_TARGET));
                    mqtt_ok += usize::from(within(&trial.mqtt, MQTT_TARGET));
                    journal_ok += usize::from(trial.journal_right);
                    let worst = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    };
                    for t in &trial.tunnels {
                        slowest_tunnel = worst(slowest_tunnel, *t);
                    }
                    for (i, t) in trial.mqtt.iter().enumerate() {
                        let kind = i % CLIENT_KINDS.len();
                        slowest_kind[kind] = worst(slowest_kind[kind], *t);
                    }
                    eprintln!(
                        "bench aps trials: {shape_name}, {ike_name}, {event_name} #{}: tunnels {:?}, MQTT {:?}; journal: {} ({})",
                        n + 1,
                        trial.tunnels,
                        trial.mqtt,
                        trial.journal,
                        if trial.journal_right { "right" } else { "WRONG" }
                    );
                }
                let show = |t: Option<Duration>| t.map_or(format!("> {} s", wait.as_secs()), ms);
                println!(
                    "| {shape_name} | {ike_name} | {event_name} | {trials} | {tunnels_ok}/{trials} | {} | {mqtt_ok}/{trials} | {} | {journal_ok}/{trials} |",
                    show(slowest_tunnel),
                    slowest_kind.map(show).join(" / "),
                );
            }
        }
    }
    Ok(())
}
