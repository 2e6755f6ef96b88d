//! `cargo xtask lab`: a real failover in throwaway network namespaces.
//!
//! Two wimark-ha daemons (VRRPv3 10 ms, fast detection 1 ms x 3) on server A
//! and server B, an AP sending a 1 kHz UDP probe stream to the VIP, and a
//! capture on the bridge between them. Server A is lost (its link cut and its
//! daemon killed at the same instant, as a power loss would), and the
//! timeline is printed as the wire and the AP saw it, and then the container
//! stacks as they followed the VIP (each server switches its own stacks; in
//! the lab both share this machine's dockerd). Then the same loss in front
//! of real AP clients (strongSwan and mosquitto), and when each was back.
//! Everything is removed at the end, whatever happens.

use std::time::Duration;

use anyhow::{Context as _, Result};
use wimark_ha::records::Stack as RunningStack;
use wimark_ha_tests::{
    daemon::wait_until,
    docker::{require_dockerd, Stack},
    failover_lab::{FailoverLab, Failure, Pair, Timeline, VIP},
    require_root,
};

/// Each server's two stacks: (master, backup), 3 and 2 containers.
struct Stacks {
    a: (Stack, Stack),
    b: (Stack, Stack),
}

impl Stacks {
    fn create() -> Result<Self> {
        let tag = format!("whlab{}", std::process::id());
        let pair = |server: &str| -> Result<(Stack, Stack)> {
            Ok((
                Stack::create(&format!("{tag}-{server}-master"), 3, None)?,
                Stack::create(&format!("{tag}-{server}-backup"), 2, None)?,
            ))
        };
        Ok(Self {
            a: pair("a")?,
            b: pair("b")?,
        })
    }

    /// The `[roles]` section of one server's daemon.
    fn roles(stacks: &(Stack, Stack)) -> String {
        format!(
            "[roles]\ninstance = \"WIM1\"\nmaster = {{ compose_project = \"{}\" }}\nbackup = {{ compose_project = \"{}\" }}\nstop_timeout = \"2s\"\ndemote_delay = \"1s\"\n",
            stacks.0.project, stacks.1.project
        )
    }

    fn print(&self) {
        for (server, (master, backup)) in [("server A", &self.a), ("server B", &self.b)] {
            println!(
                "lab: {server}: master stack {}/{} running, backup stack {}/{} running",
                master.running().len(),
                master.names.len(),
                backup.running().len(),
                backup.names.len()
            );
        }
    }
}

fn main() -> Result<()> {
    require_root("the lab");
    println!("lab: server A (10.77.0.1), server B (10.77.0.2) and an AP (10.77.0.101) behind a bridge, in network namespaces");
    println!("lab: wimark-ha on both servers: VRID 67, VIP {VIP}, VRRPv3 every 10 ms, fast detection 1 ms x 3; A has priority 200, B 100");
    require_dockerd();
    let stacks = Stacks::create().context("creating the container stacks")?;
    println!("lab: each server has a master stack (3 containers) and a backup stack (2), created and stopped");
    let mut lab = FailoverLab::with_extra(
        Pair::WimarkHaFast,
        [Stacks::roles(&stacks.a), Stacks::roles(&stacks.b)],
    )?;
    // A's promotion includes its container switch: wait for it to settle.
    let roles_stack = |lab: &FailoverLab, server| {
        lab.daemon(server)
            .and_then(|d| d.status().ok())
            .and_then(|s| s.roles)
            .map(|r| (r.stack, r.history.len()))
            .unwrap_or_default()
    };
    wait_until(Duration::from_secs(20), "server A's master stack", || {
        roles_stack(&lab, 0).0 == RunningStack::Master
            && roles_stack(&lab, 1).0 == RunningStack::Backup
    })?;
    for (name, state) in lab.states() {
        println!("lab: {name}: {state}");
    }
    stacks.print();
    println!("lab: the AP probes the VIP 1000 times a second; a capture watches the bridge");
    println!(
        "lab: now server A is lost: its link cut and its daemon SIGKILLed at the same instant\n"
    );
    let before = roles_stack(&lab, 1).1;
    let timeline = lab.fail(Failure::NodeLoss)?;
    wait_until(Duration::from_secs(20), "server B's master stack", || {
        let (stack, switches) = roles_stack(&lab, 1);
        stack == RunningStack::Master && switches > before
    })?;
    let switch = lab
        .daemon(1)
        .and_then(|d| d.status().ok())
        .and_then(|s| s.roles)
        .and_then(|r| r.history.last().cloned());
    print(&timeline, switch.as_ref());
    for (name, state) in lab.states() {
        println!("lab: {name}: {state}");
    }
    stacks.print();
    println!("lab: (server A's containers stay as they were: that server is lost, not demoted)");
    drop(lab);
    drop(stacks);
    real_aps()?;
    println!("lab: done; namespaces, daemons, IKE daemons, brokers and XDP programs removed");
    Ok(())
}

/// The same loss in front of real AP clients: the failover is over when
/// the APs are back, not when the VIP moved.
fn real_aps() -> Result<()> {
    use wimark_ha_tests::ap_clients::{ApFailover, ApIke, TunnelProbes};
    const APS: u8 = 5;
    println!("\nlab: part 2, real AP clients: {APS} APs, each a strongSwan charon (IKEv2, UDP-encapsulated ESP, at strongSwan's defaults: no DPD) and a mosquitto_sub (keepalive 60 s) to the VIP; charon and mosquitto on both servers; [ap_recovery] on both daemons (A shares its AP table with B; B's IKE hook is `wimark-ha ike-initiate`)");
    let mut failover = ApFailover::new(APS, ApIke::Defaults, true, Some(60), "lab-aps")
        .context("the real-AP lab")?;
    let probes = TunnelProbes::start(&failover.lab)?;
    println!("lab: every AP's tunnel and MQTT session work through server A; B knows all {APS} APs from A's sync");
    println!("lab: now server A is lost: link cut, daemon, charon and mosquitto killed\n");
    let loss = failover.lose_a()?;
    let tunnels = probes.wait_all_back(loss, Duration::from_secs(10));
    let mqtt = failover
        .mqtt
        .as_ref()
        .map(|m| m.wait_all_back(loss, Duration::from_secs(10)))
        .unwrap_or_default();
    let shown = |d: &Option<Duration>| {
        d.map_or("not back in 10 s".to_string(), |d| {
            format!("{:.0} ms", d.as_secs_f64() * 1e3)
        })
    };
    println!("  per AP (ms from the loss): tunnel back (first probe answered through it) / MQTT back (first message received)");
    for (n, (tunnel, mqtt)) in tunnels.iter().zip(&mqtt).enumerate() {
        println!(
            "    AP {}: tunnel {} / MQTT {}",
            n + 1,
            shown(tunnel),
            shown(mqtt)
        );
    }
    wait_until(Duration::from_secs(5), "server B's journal", || {
        wimark_ha::history::read(&failover.daemon_b.state_dir()).is_ok_and(|r| {
            r.entries
                .iter()
                .any(|e| matches!(e, wimark_ha::history::Entry::ApsBack { .. }))
        })
    })
    .ok();
    let history = std::process::Command::new(wimark_ha_tests::wimark_ha_bin())
        .args(["history", "--state-dir"])
        .arg(failover.daemon_b.state_dir())
        .output()
        .context("wimark-ha history")?;
    println!("  server B's `wimark-ha history`:");
    for line in String::from_utf8_lossy(&history.stdout).lines() {
        println!("    {line}");
    }
    println!("  (without [ap_recovery] these APs' tunnels never come back and MQTT waits for its 60 s keepalive: `cargo xtask bench aps`)\n");
    Ok(())
}

fn print(t: &Timeline, switch: Option<&wimark_ha::records::SwitchRecord>) {
    println!("  timeline (ms from the failure instant; wire events are kernel timestamps on the bridge):");
    let mut events = vec![(
        0.0,
        "failure: A's link cut (the `ip` command takes ~2 ms) and its daemon killed".to_string(),
    )];
    let wire = [
        (
            t.last_old_advert_ms,
            "last advert from server A on the wire".to_string(),
        ),
        (
            t.first_new_garp_ms,
            format!("first gratuitous ARP for {VIP} from server B"),
        ),
        (
            t.first_new_advert_ms,
            "first advert from server B as master".to_string(),
        ),
    ];
    for (at, what) in wire {
        match at {
            Some(ms) => events.push((ms, what)),
            None => println!("  (not seen) {what}"),
        }
    }
    if let Some(switch) = switch {
        // The switch starts right after the gratuitous ARP; its record has
        // ms wall-clock resolution, so only the steps after it are placed.
        let began = switch.at_unix_ms as f64 - t.failed_at_unix_ns as f64 / 1e6;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (hooks_ms, stop_ms, ready_ms, total_ms) = (
            ms(switch.hooks),
            ms(switch.stop),
            ms(switch.ready),
            ms(switch.total),
        );
        events.push((
            began + hooks_ms + stop_ms,
            format!("server B's backup stack stopped ({stop_ms:.0} ms)"),
        ));
        events.push((
            began + hooks_ms + stop_ms + ready_ms,
            format!("server B's master stack running ({ready_ms:.0} ms to start and be ready)"),
        ));
        events.push((
            began + total_ms,
            format!(
                "server B's switch done: settle check passed{}",
                if switch.problems.is_empty() {
                    String::new()
                } else {
                    format!(", problems: {}", switch.problems.join("; "))
                }
            ),
        ));
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (ms, what) in events {
        println!("  {ms:>+9.3} ms  {what}");
    }
    if let Some(takeover) = t.takeover_ms {
        println!("\n  takeover, last advert of A to B's first gratuitous ARP: {takeover:.3} ms");
    }
    if let Some(r) = &t.reported {
        let ms = |v: Option<Duration>| {
            v.map_or("-".to_string(), |d| {
                format!("{:.3} ms", d.as_micros() as f64 / 1000.0)
            })
        };
        println!(
            "  server B's own account: {} -> {} ({}), silence {}, VIP added {} and gratuitous ARP sent {} after deciding",
            r.from, r.to, r.reason, ms(r.silence), ms(r.vip_added), ms(r.garp_sent)
        );
    }
    println!(
        "  the AP's view: longest gap in the 1 kHz probe replies {:.1} ms, {} probes lost\n",
        t.probe_gap_ms, t.probes_lost
    );
}
